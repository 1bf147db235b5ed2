//! Interop: G.711 ⇄ Opus transcoding in the bridge against baresip 1.0, whose Opus is its own
//! use of libopus (48 kHz stereo, its own encoder settings, its own RTP packetisation), so
//! the relay's Opus is judged by an independent implementation. baresip (headless, Debian
//! package) auto-answers an INVITE offering only `opus/48000/2` (RFC 7587); its `ausine`
//! module is the microphone, a 440 Hz sine. The relay's leg facing baresip speaks Opus, the
//! other leg PCMU to this test. Both directions are proven:
//! - baresip → us: its Opus, decoded by the relay, arrives as PCMU carrying its 440 Hz tone;
//! - us → baresip: our 1 kHz PCMU, encoded by the relay, is what baresip decoded (its
//!   sndfile dump of decoded audio holds our tone).
//!
//! `scripts/test` installs baresip; without it this test fails rather than skips.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use media_relay::{
    Bridge, BridgeStats, Codec, DtmfMode, Latch, LegConfig, LegMedia, PortAllocator, PortRange,
    RtpPair,
};
use sip_proto::msg::Method;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

mod common;
use common::{Baresip, LO, Sip, free_port, tone_share, within};
/// baresip's microphone (ausine).
const TONE_HZ: f64 = 440.0;
/// What we send: 3 s of a 1 kHz tone.
const OUR_HZ: f64 = 1000.0;
const OUR_PACKETS: u32 = 150;
/// The dynamic payload type we offer Opus on.
const OPUS_PT: u8 = 111;

impl Baresip {
    fn start(sip_port: u16) -> Baresip {
        let dir = std::env::temp_dir().join(format!("baresip-opus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // opus only, so nothing else can be negotiated; ausine (48 kHz stereo only, which is
        // Opus's rate) is the source; aubridge is a player that needs no sound device;
        // sndfile dumps what baresip decoded.
        Baresip::launch(
            dir.clone(),
            sip_port,
            "<sip:bob@127.0.0.1>;regint=0;answermode=auto\n",
            &format!(
                "module opus.so\nmodule ausine.so\n\
                 module aubridge.so\nmodule_app account.so\nmodule_app menu.so\n\
                 audio_player aubridge,nil\naudio_source ausine,{}\n\
                 rtcp_mux no\nmodule sndfile.so\nsnd_path {}\n",
                TONE_HZ as u32,
                dir.display()
            ),
        )
    }
}

fn ports() -> PortRange {
    let base = 26000 + (std::process::id() % 300) as u16 * 12;
    PortRange::new(base, base + 11).unwrap()
}

/// G.711 µ-law of a 1 kHz tone, samples `from..from + n`.
fn our_tone(from: u32, n: u32) -> Vec<u8> {
    (from..from + n)
        .map(|k| {
            let t = f64::from(k) / 8000.0;
            let x = 6000.0 * (2.0 * std::f64::consts::PI * OUR_HZ * t).sin();
            media_proto::g711::linear_to_ulaw(x as i16)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_opus_is_transcoded_to_pcmu_and_back() {
    let alloc = PortAllocator::new(LO, ports());
    let leg_a = alloc.allocate().unwrap(); // faces baresip: Opus
    let leg_b = alloc.allocate().unwrap(); // faces this test: PCMU
    let ua: RtpPair = alloc.allocate().unwrap();
    let (port_a, port_b) = (leg_a.port, leg_b.port);
    let mut baresip = Baresip::start(free_port());
    let sip = Sip {
        sock: UdpSocket::bind((LO, 0)).await.unwrap(),
        baresip: baresip.sip,
        call_id: format!("opus{}", std::process::id()),
    };

    // RFC 7587 §7: the rtpmap names 48000 Hz and 2 channels whatever is sent.
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port_a} RTP/AVP {OPUS_PT}\r\na=rtpmap:{OPUS_PT} opus/48000/2\r\n\
         a=ptime:20\r\na=sendrecv\r\n"
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

    let body = String::from_utf8(ok.body().to_vec()).unwrap();
    let answer = sip_proto::sdp::Sdp::parse(ok.body()).unwrap();
    let audio = &answer.media[0];
    assert_eq!(answer.media_address(0), Some("127.0.0.1"), "{body}");
    assert!(
        body.contains(&format!("a=rtpmap:{OPUS_PT} opus/48000/2")),
        "baresip answers opus on our payload type: {body}"
    );

    let mut bridge = Bridge::start(
        leg_a,
        LegConfig {
            remote: Some(SocketAddr::new(LO, audio.port)),
            latch: Latch::FirstSource,
            clock_rate: 48_000,
            srtp: None,
            media: Some(LegMedia::new(OPUS_PT, Codec::OPUS, DtmfMode::Info)),
            hold: false,
        },
        leg_b,
        LegConfig {
            remote: Some(ua.rtp.local_addr().unwrap()),
            latch: Latch::Fixed,
            clock_rate: 8000,
            srtp: None,
            media: Some(LegMedia::new(0, Codec::PCMU, DtmfMode::Info)),
            hold: false,
        },
        Duration::from_secs(30),
    )
    .unwrap();
    let _events = bridge.take_events();

    // Our stream: OUR_PACKETS 20 ms PCMU frames of a 1 kHz tone into leg B. The interval
    // paces the stream; `sent` tells how far it got.
    let ua = std::sync::Arc::new(ua);
    let (count, mut sent) = tokio::sync::watch::channel(0u32);
    let sender = tokio::spawn({
        let ua = ua.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for i in 0..OUR_PACKETS {
                tick.tick().await;
                let mut p = vec![0x80, 0x00];
                p.extend((1000u16).wrapping_add(i as u16).to_be_bytes());
                p.extend((i * 160).to_be_bytes());
                p.extend(0x0b05_0001u32.to_be_bytes());
                p.extend(our_tone(i * 160, 160));
                ua.rtp
                    .send_to(&p, SocketAddr::new(LO, port_b))
                    .await
                    .unwrap();
                count.send_replace(i + 1);
            }
        }
    });

    // baresip → us: 1.2 s of its tone, transcoded by the relay into 20 ms PCMU packets on
    // one continuous timeline.
    let mut audio_in = Vec::new();
    let mut last: Option<(u16, u32)> = None;
    let mut buf = [0u8; 2048];
    within(Duration::from_secs(10), async {
        while audio_in.len() < 9600 {
            let (n, _) = ua.rtp.recv_from(&mut buf).await.unwrap();
            let p = media_proto::rtp::parse(bytes::Bytes::copy_from_slice(&buf[..n])).unwrap();
            assert_eq!(p.header.payload_type, 0, "PCMU");
            assert_eq!(p.payload.len(), 160, "20 ms of PCMU");
            let (seq, ts) = (p.header.sequence_number, p.header.timestamp);
            if let Some((s, t)) = last {
                assert_eq!(seq, s.wrapping_add(1), "seq continuous");
                assert_eq!(ts.wrapping_sub(t), 160, "20 ms at 8 kHz");
            }
            last = Some((seq, ts));
            audio_in.extend(
                p.payload
                    .iter()
                    .map(|&u| media_proto::g711::ulaw_to_linear(u)),
            );
        }
    })
    .await;
    // The first 200 ms are the codecs settling in.
    let share = tone_share(&audio_in[1600..], TONE_HZ, 8000.0);
    assert!(
        share > 0.8,
        "baresip's 440 Hz tone holds {share:.2} of the energy"
    );

    within(
        Duration::from_secs(10),
        sent.wait_for(|n| *n >= OUR_PACKETS),
    )
    .await
    .unwrap();
    sender.await.unwrap();
    // The relay has taken our last packet when its counter says so.
    let s: BridgeStats = within(Duration::from_secs(5), async {
        loop {
            let s = bridge.stats().await.unwrap();
            if s.b.transcoded == u64::from(OUR_PACKETS) {
                return s;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(s.a.transcoded > 100, "{s:?}");
    assert_eq!((s.a.codec_errors, s.b.codec_errors), (0, 0), "{s:?}");
    assert_eq!((s.a.dropped, s.b.dropped), (0, 0), "{s:?}");

    sip.send(&sip.request(Method::Bye, &contact, 2, &to)).await;
    assert_eq!(sip.final_response(Method::Bye).await.status(), 200);
    // us → baresip: what baresip decoded (its sndfile dump) is our 1 kHz tone. The dump is
    // complete once the call is gone.
    baresip.wait_for("session closed", Duration::from_secs(5));
    let dump = std::fs::read_dir(&baresip.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("no sndfile dump:\n{}", baresip.log_so_far()));
    let (rate, decoded) = wav_first_channel(&std::fs::read(dump).unwrap());
    let voiced = decoded.iter().filter(|s| s.unsigned_abs() > 1000).count();
    assert!(
        voiced > rate as usize,
        "baresip decoded {voiced} loud samples of ours at {rate} Hz"
    );
    let share = tone_share(&decoded, OUR_HZ, f64::from(rate));
    assert!(
        share > 0.8,
        "our 1 kHz tone holds {share:.2} of what baresip decoded"
    );
}

/// The sample rate and the first channel's samples of a 16-bit PCM WAV. The data chunk is
/// read to the end of the file whatever its header says: libsndfile fills the sizes in only
/// when it closes the file.
fn wav_first_channel(w: &[u8]) -> (u32, Vec<i16>) {
    assert_eq!(&w[..4], b"RIFF");
    let mut at = 12;
    let mut format = None;
    loop {
        let id = &w[at..at + 4];
        let len = u32::from_le_bytes(w[at + 4..at + 8].try_into().unwrap()) as usize;
        if id == b"fmt " {
            let f = &w[at + 8..];
            assert_eq!(u16::from_le_bytes([f[14], f[15]]), 16, "16-bit");
            let channels = usize::from(u16::from_le_bytes([f[2], f[3]]));
            let rate = u32::from_le_bytes(f[4..8].try_into().unwrap());
            format = Some((channels, rate));
        }
        if id == b"data" {
            let (channels, rate) = format.expect("fmt before data");
            let samples = w[at + 8..]
                .chunks_exact(2 * channels)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            return (rate, samples);
        }
        at += 8 + len + (len & 1);
    }
}
