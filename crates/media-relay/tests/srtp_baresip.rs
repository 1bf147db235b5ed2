//! Interop: SDES-keyed SRTP (RFC 4568) against baresip 1.0, whose SRTP is libre's own
//! implementation, through the relay, for AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32
//! and AEAD_AES_128_GCM. baresip (headless, Debian package) auto-answers an INVITE offering
//! PCMU over RTP/SAVP with one `a=crypto`; the relay leg facing it speaks SRTP, the other
//! leg plain RTP to this test. Both directions are proven:
//! - baresip → us: its SRTP decrypts into PCMU RTP that carries its 440 Hz tone;
//! - us → baresip (we send plain RTP into the relay, which encrypts it): baresip's sndfile
//!   dump of what it decoded holds our 1 kHz tone, and (except SHA1_32, see below) its
//!   SRTCP reports, decrypted by the relay, count our packets.
//!
//! libre also sends one unprotected RTCP APP "PING" when the stream starts; the relay
//! refuses it like any unauthenticated packet (`srtcp_failed`).
//!
//! `scripts/test` installs baresip; without it these tests fail rather than skip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use media_proto::srtp::{CryptoAttr, MasterKey, SessionKeys, Suite};
use media_relay::{Bridge, BridgeStats, Latch, LegConfig, PortAllocator, PortRange, RtpPair};
use sip_proto::msg::Method;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

mod common;
use common::{Baresip, LO, Sip, free_port, tone_share, within};
/// The SSRC of the stream this test sends; baresip's reports name it.
const OUR_SSRC: u32 = 0x5EC0_0001;
const FIRST_SEQ: u16 = 1000;
const TONE_HZ: f64 = 440.0;
/// What we send: 3 s of a 1 kHz tone.
const OUR_HZ: f64 = 1000.0;
const OUR_PACKETS: u32 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_aes_cm_128_hmac_sha1_80() {
    call(Suite::AesCm128HmacSha1_80, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_aes_cm_128_hmac_sha1_32() {
    call(Suite::AesCm128HmacSha1_32, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_aead_aes_128_gcm() {
    call(Suite::AeadAes128Gcm, 2).await;
}

impl Baresip {
    fn start(name: &str, sip_port: u16) -> Baresip {
        let dir = std::env::temp_dir().join(format!("baresip-srtp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tone = dir.join("tone.wav");
        std::fs::write(&tone, wav_tone(TONE_HZ, 30)).unwrap();
        // srtp-mand: RTP/SAVP with a=crypto only. aufile plays the tone (it needs the codec's
        // 8 kHz mono); aubridge is a player that needs no sound device.
        Baresip::launch(
            dir.clone(),
            sip_port,
            "<sip:bob@127.0.0.1>;regint=0;answermode=auto;mediaenc=srtp-mand\n",
            &format!(
                "module g711.so\nmodule aufile.so\n\
                 module aubridge.so\nmodule srtp.so\nmodule_app account.so\n\
                 module_app menu.so\naudio_player aubridge,nil\naudio_source aufile,{}\n\
                 rtcp_mux no\nmodule sndfile.so\nsnd_path {}\n",
                tone.display(),
                dir.display()
            ),
        )
    }
}

/// 16-bit mono 8 kHz WAV (what aufile feeds PCMU without resampling).
fn wav_tone(hz: f64, secs: u32) -> Vec<u8> {
    let n = 8000 * secs;
    let mut w = Vec::with_capacity(44 + 2 * n as usize);
    w.extend(b"RIFF");
    w.extend((36 + 2 * n).to_le_bytes());
    w.extend(b"WAVEfmt ");
    w.extend(16u32.to_le_bytes());
    w.extend(1u16.to_le_bytes()); // PCM
    w.extend(1u16.to_le_bytes()); // mono
    w.extend(8000u32.to_le_bytes());
    w.extend(16000u32.to_le_bytes());
    w.extend(2u16.to_le_bytes());
    w.extend(16u16.to_le_bytes());
    w.extend(b"data");
    w.extend((2 * n).to_le_bytes());
    for i in 0..n {
        let s = (8000.0 * (2.0 * std::f64::consts::PI * hz * f64::from(i) / 8000.0).sin()) as i16;
        w.extend(s.to_le_bytes());
    }
    w
}

/// G.711 µ-law encoder (ITU-T G.711, the classic biased segment search).
fn linear_to_ulaw(s: i16) -> u8 {
    let mut x = i32::from(s);
    let sign = if x < 0 {
        x = -x;
        0x80
    } else {
        0
    };
    x = x.min(32635) + 0x84;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && x & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (x >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(out.len());
        out.extend(h.finish().to_le_bytes());
    }
    out.truncate(n);
    out
}

/// RFC 3550 §6.4: the report block about `ssrc` in a compound RTCP packet, as (cumulative
/// lost, extended highest sequence number).
fn report_about(ssrc: u32, mut p: &[u8]) -> Option<(u32, u32)> {
    while p.len() >= 8 {
        let count = usize::from(p[0] & 0x1f);
        let pt = p[1];
        let len = (usize::from(u16::from_be_bytes([p[2], p[3]])) + 1) * 4;
        let pkt = p.get(..len)?;
        let blocks = match pt {
            200 => pkt.get(28..),
            201 => pkt.get(8..),
            _ => None,
        };
        for b in blocks.unwrap_or_default().chunks_exact(24).take(count) {
            if u32::from_be_bytes([b[0], b[1], b[2], b[3]]) == ssrc {
                let lost = u32::from_be_bytes([0, b[5], b[6], b[7]]);
                let ext = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
                return Some((lost, ext));
            }
        }
        p = &p[len..];
    }
    None
}

fn ports(slot: u16) -> PortRange {
    let base = 30000 + (std::process::id() % 500) as u16 * 40 + slot * 12;
    PortRange::new(base, base + 11).unwrap()
}

async fn call(suite: Suite, slot: u16) {
    let alloc = PortAllocator::new(LO, ports(slot));
    let leg_a = alloc.allocate().unwrap(); // faces baresip: SRTP
    let leg_b = alloc.allocate().unwrap(); // faces this test: plain RTP
    let ua: RtpPair = alloc.allocate().unwrap();
    let (port_a, port_b) = (leg_a.port, leg_b.port);
    let mut baresip = Baresip::start(suite.name(), free_port());
    let sip = Sip {
        sock: UdpSocket::bind((LO, 0)).await.unwrap(),
        baresip: baresip.sip,
        call_id: format!("srtp{slot}x{}", std::process::id()),
    };

    // RFC 4568 §6.1: the offer carries the key we encrypt with.
    let ours = MasterKey::new(suite, &random_bytes(suite.key_salt_len())).unwrap();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port_a} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n\
         a=crypto:{}\r\na=sendrecv\r\n",
        CryptoAttr::new(1, ours)
    );
    let uri = format!("sip:bob@{}", sip.baresip);
    let mut invite = sip.request(Method::Invite, &uri, 1, "<sip:bob@127.0.0.1>");
    invite
        .headers_mut()
        .push("Content-Type", "application/sdp")
        .unwrap();
    invite.set_body(sdp.into_bytes());
    sip.send(&invite).await;
    let ok = sip.final_response(Method::Invite).await;
    assert_eq!(ok.status(), 200, "{}", baresip.log_so_far());
    let to = ok.headers().get("To").unwrap().to_owned();
    let contact = match ok.headers().contacts().unwrap() {
        sip_proto::msg::Contacts::Addrs(a) => a[0].uri.clone(),
        other => panic!("contact {other:?}"),
    };
    sip.send(&sip.request(Method::Ack, &contact, 1, &to)).await;

    // baresip's key, from its answer: same tag and suite as our offer (RFC 4568 §7.1.2).
    let body = String::from_utf8(ok.body().to_vec()).unwrap();
    let answer = sip_proto::sdp::Sdp::parse(ok.body()).unwrap();
    let audio = &answer.media[0];
    assert_eq!(audio.proto, "RTP/SAVP", "{body}");
    assert_eq!(answer.media_address(0), Some("127.0.0.1"), "{body}");
    let theirs: Vec<CryptoAttr> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=crypto:"))
        .map(|v| CryptoAttr::parse(v).unwrap())
        .collect();
    assert_eq!(theirs.len(), 1, "{body}");
    assert_eq!((theirs[0].tag, theirs[0].key.suite()), (1, suite), "{body}");
    assert_ne!(theirs[0].key, ours, "baresip keys its own direction");

    let bridge = Bridge::start(
        leg_a,
        LegConfig {
            remote: Some(SocketAddr::new(LO, audio.port)),
            latch: Latch::FirstSource,
            clock_rate: 8000,
            srtp: Some(SessionKeys {
                inbound: theirs[0].key,
                outbound: ours,
            }),
            media: None,
            hold: false,
        },
        leg_b,
        LegConfig {
            remote: Some(ua.rtp.local_addr().unwrap()),
            latch: Latch::Fixed,
            clock_rate: 8000,
            srtp: None,
            media: None,
            hold: false,
        },
        Duration::from_secs(30),
    )
    .unwrap();

    // Our stream: OUR_PACKETS 20 ms PCMU frames of a 1 kHz tone, plain RTP into leg B. The
    // interval paces the stream; `sent` tells how far it got.
    let ua = std::sync::Arc::new(ua);
    let (count, mut sent) = tokio::sync::watch::channel(0u32);
    let sender = tokio::spawn({
        let ua = ua.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for i in 0..OUR_PACKETS {
                tick.tick().await;
                let mut p = vec![0x80, 0x00];
                p.extend(FIRST_SEQ.wrapping_add(i as u16).to_be_bytes());
                p.extend((i * 160).to_be_bytes());
                p.extend(OUR_SSRC.to_be_bytes());
                p.extend((0..160).map(|k| {
                    let t = f64::from(i * 160 + k) / 8000.0;
                    let x = 6000.0 * (2.0 * std::f64::consts::PI * OUR_HZ * t).sin();
                    linear_to_ulaw(x as i16)
                }));
                ua.rtp
                    .send_to(&p, SocketAddr::new(LO, port_b))
                    .await
                    .unwrap();
                count.send_replace(i + 1);
            }
        }
    });

    // baresip → us: one second of its PCMU, decrypted by the relay.
    let mut audio_in = Vec::new();
    let mut buf = [0u8; 2048];
    within(Duration::from_secs(10), async {
        while audio_in.len() < 8000 {
            let (n, _) = ua.rtp.recv_from(&mut buf).await.unwrap();
            let p = media_proto::rtp::parse(bytes::Bytes::copy_from_slice(&buf[..n])).unwrap();
            assert_eq!(p.header.payload_type, 0, "PCMU");
            assert_eq!(p.payload.len(), 160, "20 ms of PCMU");
            audio_in.extend(
                p.payload
                    .iter()
                    .map(|&u| media_proto::g711::ulaw_to_linear(u)),
            );
        }
    })
    .await;
    let share = tone_share(&audio_in, TONE_HZ, 8000.0);
    assert!(
        share > 0.8,
        "{suite}: baresip's 440 Hz tone holds {share:.2} of the energy"
    );

    // us → baresip, first witness: its reports (SRTCP, decrypted by the relay) acknowledge
    // our stream. libre sends them every few seconds; the first may predate our stream.
    // Not for AES_CM_128_HMAC_SHA1_32: libre tags SRTCP with the suite's 32-bit SRTP tag
    // (re's srtp_alloc uses one tag length for both) where RFC 4568 §6.2.2 keeps 80 bits,
    // so an RFC-conforming receiver such as ours refuses every one (`srtcp_failed`).
    if suite != Suite::AesCm128HmacSha1_32 {
        let report = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let (n, _) = ua.rtcp.recv_from(&mut buf).await.unwrap();
                if let Some((lost, ext)) = report_about(OUR_SSRC, &buf[..n])
                    && ext > u32::from(FIRST_SEQ) + 10
                {
                    return (lost, ext);
                }
            }
        })
        .await;
        let Ok((lost, ext)) = report else {
            panic!(
                "{suite}: no report about our stream; relay {:?}\n{}",
                bridge.stats().await,
                baresip.log_so_far()
            );
        };
        let received = ext - u32::from(FIRST_SEQ) + 1 - lost.min(ext);
        assert!(
            received > 10,
            "{suite}: baresip received {received} of our packets"
        );
    }
    within(
        Duration::from_secs(10),
        sent.wait_for(|n| *n >= OUR_PACKETS),
    )
    .await
    .unwrap();

    let s: BridgeStats = bridge.stats().await.unwrap();
    assert_eq!(
        s.a.srtp_failed, 0,
        "{suite}: every SRTP packet from baresip authenticated"
    );
    assert!(s.a.packets > 40, "{suite}: {s:?}");
    if suite != Suite::AesCm128HmacSha1_32 {
        assert!(s.a.rtcp >= 1, "{suite}: {s:?}");
    }
    assert_eq!(
        s.b.dropped, 0,
        "{suite}: everything we sent was encrypted and sent"
    );

    sender.await.unwrap();
    sip.send(&sip.request(Method::Bye, &contact, 2, &to)).await;
    assert_eq!(sip.final_response(Method::Bye).await.status(), 200);
    // us → baresip, second witness: what baresip decoded (its sndfile dump) is our 1 kHz
    // tone, so it decrypted our SRTP. The dump is complete once the call is gone.
    baresip.wait_for("session closed", Duration::from_secs(5));
    let dump = std::fs::read_dir(&baresip.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("no sndfile dump:\n{}", baresip.log_so_far()));
    let decoded = wav_samples(&std::fs::read(dump).unwrap());
    let voiced = decoded.iter().filter(|s| s.unsigned_abs() > 1000).count();
    assert!(
        voiced > 4000,
        "{suite}: baresip decoded {voiced} loud samples of ours"
    );
    let share = tone_share(&decoded, OUR_HZ, 8000.0);
    assert!(
        share > 0.5,
        "{suite}: our 1 kHz tone holds {share:.2} of what baresip decoded"
    );
}

/// The samples of a 16-bit mono 8 kHz WAV. The data chunk is read to the end of the file
/// whatever its header says: libsndfile fills the sizes in only when it closes the file.
fn wav_samples(w: &[u8]) -> Vec<i16> {
    assert_eq!(&w[..4], b"RIFF");
    let mut at = 12;
    loop {
        let id = &w[at..at + 4];
        let len = u32::from_le_bytes(w[at + 4..at + 8].try_into().unwrap()) as usize;
        if id == b"fmt " {
            let f = &w[at + 8..];
            assert_eq!(u16::from_le_bytes([f[2], f[3]]), 1, "mono");
            assert_eq!(
                u32::from_le_bytes(f[4..8].try_into().unwrap()),
                8000,
                "8 kHz"
            );
            assert_eq!(u16::from_le_bytes([f[14], f[15]]), 16, "16-bit");
        }
        if id == b"data" {
            return w[at + 8..]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
        }
        at += 8 + len + (len & 1);
    }
}
