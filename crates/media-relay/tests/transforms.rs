//! The bridge's per-leg media transforms on real loopback UDP sockets: payload type mapping,
//! G.711 law conversion, RFC 4733 ⇄ SIP INFO, comfort noise, and the outbound streams' own
//! SSRC and continuous sequence numbers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use media_proto::dtmf::{
    DtmfEvent, DtmfPacket, DtmfReceiver, DtmfSender, EndCause, ReceiverConfig, SenderConfig,
};
use media_proto::g711;
use media_relay::{
    Bridge, BridgeEvent, BridgeStats, Codec, DtmfMode, Latch, LegConfig, LegMedia, PortAllocator,
    PortRange,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::error::TryRecvError;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("timed out")
}

/// Eight relay pairs per test (`slot` keeps this binary's tests apart, the pid concurrent
/// runs); the allocator skips ports someone else holds.
fn range(slot: u16) -> PortRange {
    let base = 47000 + (std::process::id() % 150) as u16 * 120 + slot * 16;
    PortRange::new(base, base + 15).unwrap()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rtp {
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

impl Rtp {
    fn new(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Self {
        Rtp {
            marker: false,
            pt,
            seq,
            ts,
            ssrc: 0x1234_5678,
            payload: payload.to_vec(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut p = vec![0x80, (u8::from(self.marker) << 7) | self.pt];
        p.extend(self.seq.to_be_bytes());
        p.extend(self.ts.to_be_bytes());
        p.extend(self.ssrc.to_be_bytes());
        p.extend(&self.payload);
        p
    }

    fn decode(b: &[u8]) -> Self {
        assert!(b.len() >= 12 && b[0] == 0x80, "plain RTP header: {b:?}");
        Rtp {
            marker: b[1] & 0x80 != 0,
            pt: b[1] & 0x7f,
            seq: u16::from_be_bytes([b[2], b[3]]),
            ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            payload: b[12..].to_vec(),
        }
    }
}

/// A bridge between two peer sockets; the relay sends to each peer's address (no latching).
struct Setup {
    bridge: Bridge,
    peer_a: UdpSocket,
    peer_b: UdpSocket,
    to_a: SocketAddr,
    to_b: SocketAddr,
}

impl Setup {
    async fn new(slot: u16, a: LegMedia, b: LegMedia) -> Setup {
        let alloc = PortAllocator::new(LO, range(slot));
        let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
        let (to_a, to_b) = (
            SocketAddr::new(LO, leg_a.port),
            SocketAddr::new(LO, leg_b.port),
        );
        let peer_a = UdpSocket::bind((LO, 0)).await.unwrap();
        let peer_b = UdpSocket::bind((LO, 0)).await.unwrap();
        let cfg = |peer: &UdpSocket, media| LegConfig {
            remote: Some(peer.local_addr().unwrap()),
            latch: Latch::Fixed,
            media: Some(media),
            ..LegConfig::default()
        };
        let bridge = Bridge::start_seeded(
            leg_a,
            cfg(&peer_a, a),
            leg_b,
            cfg(&peer_b, b),
            Duration::from_secs(30),
            u64::from(slot),
        )
        .unwrap();
        Setup {
            bridge,
            peer_a,
            peer_b,
            to_a,
            to_b,
        }
    }

    async fn a_sends(&self, p: &Rtp) {
        self.peer_a.send_to(&p.encode(), self.to_a).await.unwrap();
    }

    async fn b_sends(&self, p: &Rtp) {
        self.peer_b.send_to(&p.encode(), self.to_b).await.unwrap();
    }

    async fn stats_when(&self, done: impl Fn(&BridgeStats) -> bool) -> BridgeStats {
        within(async {
            loop {
                let s = self.bridge.stats().await.unwrap();
                if done(&s) {
                    return s;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
    }
}

async fn recv(sock: &UdpSocket) -> Rtp {
    let mut buf = [0u8; 2048];
    let (n, _) = within(sock.recv_from(&mut buf)).await.unwrap();
    Rtp::decode(&buf[..n])
}

fn media(pt: u8, codec: Codec, dtmf: DtmfMode, cn: Option<u8>) -> LegMedia {
    LegMedia {
        cn,
        ..LegMedia::new(pt, codec, dtmf)
    }
}

/// Every packet one SSRC, not the inbound one, and each seq one more than the last.
fn assert_one_continuous_stream(got: &[Rtp]) {
    let ssrc = got[0].ssrc;
    assert_ne!(ssrc, 0x1234_5678, "the outbound stream has its own SSRC");
    for w in got.windows(2) {
        assert_eq!(w[1].ssrc, ssrc);
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "no gap or duplicate: {:?}",
            got.iter().map(|p| (p.pt, p.seq)).collect::<Vec<_>>()
        );
    }
}

/// 160 bytes running through every code value.
fn speech(i: u16) -> Vec<u8> {
    (0..160u16).map(|k| (k * 7 + i * 13) as u8).collect()
}

#[tokio::test]
async fn pcmu_to_pcma_is_converted_in_place_and_remapped_both_ways() {
    let s = Setup::new(
        0,
        media(0, Codec::PCMU, DtmfMode::Info, None),
        media(8, Codec::PCMA, DtmfMode::Info, None),
    )
    .await;
    let mut got = Vec::new();
    for i in 0..10u16 {
        let sent = Rtp::new(0, 1000 + i, 50_000 + 160 * u32::from(i), &speech(i));
        s.a_sends(&sent).await;
        let p = recv(&s.peer_b).await;
        let mut want = sent.payload.clone();
        g711::ulaw_to_alaw_in_place(&mut want);
        assert_eq!(p.pt, 8, "PCMA's payload type toward B");
        assert_eq!(p.payload, want, "payload converted µ-law → A-law");
        got.push(p);
    }
    assert_one_continuous_stream(&got);
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.ts.wrapping_sub(got[0].ts), 160 * i as u32, "timing kept");
    }
    let mut back = Vec::new();
    for i in 0..5u16 {
        let sent = Rtp::new(8, 7 + i, 160 * u32::from(i), &speech(i + 50));
        s.b_sends(&sent).await;
        let p = recv(&s.peer_a).await;
        let mut want = sent.payload.clone();
        g711::alaw_to_ulaw_in_place(&mut want);
        assert_eq!((p.pt, &p.payload), (0, &want), "A-law → µ-law toward A");
        back.push(p);
    }
    assert_one_continuous_stream(&back);
    assert_ne!(back[0].ssrc, got[0].ssrc, "one SSRC per direction");
    let st = s
        .stats_when(|st| st.a.converted == 10 && st.b.converted == 5)
        .await;
    assert_eq!((st.a.dropped, st.b.dropped), (0, 0));
}

#[tokio::test]
async fn telephone_event_payload_type_is_remapped_between_rfc4733_legs() {
    let s = Setup::new(
        1,
        media(0, Codec::PCMU, DtmfMode::Rfc4733 { pt: 101 }, None),
        media(0, Codec::PCMU, DtmfMode::Rfc4733 { pt: 96 }, None),
    )
    .await;
    let audio = Rtp::new(0, 10, 8000, &[0xff; 160]);
    let mut events: Vec<Rtp> = [
        (true, 160u16, false),
        (false, 320, false),
        (false, 480, true),
    ]
    .iter()
    .enumerate()
    .map(|(k, &(marker, duration, end))| {
        let payload = media_proto::dtmf::TelephoneEvent {
            event: 4,
            end,
            volume: 10,
            duration,
        }
        .encode();
        Rtp {
            marker,
            ..Rtp::new(101, 11 + k as u16, 8160, &payload)
        }
    })
    .collect();
    events.push(Rtp::new(0, 14, 8640, &[0xff; 160]));
    s.a_sends(&audio).await;
    let mut got = vec![recv(&s.peer_b).await];
    for e in &events {
        s.a_sends(e).await;
        got.push(recv(&s.peer_b).await);
    }
    assert_one_continuous_stream(&got);
    for (sent, p) in events.iter().zip(&got[1..]) {
        if sent.pt == 101 {
            assert_eq!(p.pt, 96, "B's telephone-event payload type");
            assert_eq!(p.payload, sent.payload, "event payload untouched");
            assert_eq!(p.marker, sent.marker);
        }
        assert_eq!(
            p.ts.wrapping_sub(got[0].ts),
            sent.ts - audio.ts,
            "events stay on the audio's timeline"
        );
    }
    let st = s.bridge.stats().await.unwrap();
    assert_eq!((st.a.dropped_events, st.a.digits_in), (0, 0));
}

/// The RFC 4733 packets of one digit as a sender plays it (20 ms updates, three ends).
fn digit_packets(event: u8, ms: u64, ts: u32) -> Vec<DtmfPacket> {
    let t0 = std::time::Instant::now();
    let cfg = SenderConfig {
        interval: Duration::from_millis(20),
        ..SenderConfig::new(8000)
    };
    let mut s = DtmfSender::new(cfg, t0, ts);
    s.handle_digit(t0, event, Duration::from_millis(ms))
        .unwrap();
    let mut out = Vec::new();
    while let Some(t) = s.poll_timeout() {
        while let Some(p) = s.poll_transmit(t) {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn rfc4733_toward_an_info_leg_is_one_digit_event_each_and_no_packet() {
    let mut s = Setup::new(
        2,
        media(0, Codec::PCMU, DtmfMode::Rfc4733 { pt: 101 }, None),
        media(8, Codec::PCMA, DtmfMode::Info, None),
    )
    .await;
    let mut events = s.bridge.take_events().unwrap();
    assert!(s.bridge.take_events().is_none(), "handed out once");
    let mut seq = 0u16;
    let mut next = |pt, ts, marker, payload: &[u8]| {
        seq += 1;
        Rtp {
            marker,
            ..Rtp::new(pt, seq, ts, payload)
        }
    };
    let mut audio_sent = 0;
    let mut te_sent = 0;
    for (event, ms, ts) in [(5u8, 120u64, 8000u32), (11, 200, 16000)] {
        s.a_sends(&next(0, ts - 160, false, &[0xff; 160])).await;
        audio_sent += 1;
        for p in digit_packets(event, ms, ts) {
            s.a_sends(&next(101, p.timestamp, p.marker, &p.payload.encode()))
                .await;
            te_sent += 1;
        }
    }
    // The last packet proves every one before it was processed (one task, in order).
    let last = next(0, 24000, false, &[0x55; 160]);
    s.a_sends(&last).await;
    audio_sent += 1;
    let mut got = Vec::new();
    loop {
        let p = recv(&s.peer_b).await;
        assert_eq!(p.pt, 8, "only audio reaches the INFO leg: {p:?}");
        got.push(p);
        if got.len() == audio_sent {
            break;
        }
    }
    assert_one_continuous_stream(&got);
    let mut want = vec![0x55; 160];
    g711::ulaw_to_alaw_in_place(&mut want);
    assert_eq!(got.last().unwrap().payload, want);
    let e1 = within(events.recv()).await.unwrap();
    let e2 = within(events.recv()).await.unwrap();
    assert_eq!(
        (e1, e2),
        (
            BridgeEvent::Digit {
                from_leg_b: false,
                digit: '5',
                duration_ms: 120
            },
            BridgeEvent::Digit {
                from_leg_b: false,
                digit: '#',
                duration_ms: 200
            }
        )
    );
    assert_eq!(
        events.try_recv(),
        Err(TryRecvError::Empty),
        "one event per digit despite repeated end packets"
    );
    let st = s.bridge.stats().await.unwrap();
    assert_eq!(st.a.digits_in, 2);
    assert_eq!(st.a.dropped_events, te_sent);
    assert_eq!(st.a.converted, audio_sent as u64);
}

#[tokio::test]
async fn send_digit_into_an_rfc4733_leg_interleaves_with_continuous_audio() {
    // A speaks RFC 4733; B (which sends the audio) wants SIP INFO, so its digits arrive at
    // the call task as INFO and go into A's stream through send_digit.
    let s = Setup::new(
        3,
        media(0, Codec::PCMU, DtmfMode::Rfc4733 { pt: 101 }, None),
        media(0, Codec::PCMU, DtmfMode::Info, None),
    )
    .await;
    const PACKETS: u16 = 40;
    let peer_b = &s.peer_b;
    let to_b = s.to_b;
    // B's peer talks in real time: the injected event runs on the bridge's own timers. The
    // interval paces the source; nothing waits on it for synchronisation.
    let talk = async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..PACKETS {
            tick.tick().await;
            let p = Rtp::new(0, 300 + i, 160 * u32::from(i), &[i as u8; 160]);
            peer_b.send_to(&p.encode(), to_b).await.unwrap();
        }
    };
    let listen = async {
        let mut got = Vec::new();
        let mut injected = false;
        loop {
            let p = recv(&s.peer_a).await;
            let id = (p.pt == 0).then(|| p.payload[0]);
            got.push(p);
            if id == Some(5) && !injected {
                s.bridge.send_digit(false, '7', Some(100)).await.unwrap();
                injected = true;
            }
            if id == Some(PACKETS as u8 - 1) {
                return got;
            }
        }
    };
    let ((), got) = tokio::join!(talk, listen);
    assert_one_continuous_stream(&got);

    let te: Vec<&Rtp> = got.iter().filter(|p| p.pt == 101).collect();
    let mut r = DtmfReceiver::new(ReceiverConfig::new(8000));
    let now = std::time::Instant::now();
    let mut decoded = Vec::new();
    for p in &te {
        r.handle_packet(now, p.ts, p.marker, &p.payload).unwrap();
        decoded.extend(std::iter::from_fn(|| r.poll_event()));
    }
    let start = te[0].ts;
    assert_eq!(
        decoded,
        vec![
            DtmfEvent::Began {
                event: 7,
                timestamp: start
            },
            DtmfEvent::Ended {
                event: 7,
                timestamp: start,
                duration: 800,
                duration_ms: 100,
                cause: EndCause::EndBit
            }
        ]
    );
    assert!(te[0].marker && te.iter().skip(1).all(|p| !p.marker));
    assert_eq!(te.iter().filter(|p| p.payload[1] & 0x80 != 0).count(), 3);

    // Audio before and after the event, none while it plays (RFC 4733 §2.5.1.2: held back
    // from the first event packet until the event's end; audio arriving at the end may beat
    // the end packet out), and one timeline: outbound minus inbound ts is the same for every
    // audio packet.
    let pos = |f: &dyn Fn(&Rtp) -> bool| got.iter().position(f).unwrap();
    let first_te = pos(&|p| p.pt == 101);
    let last_update = got
        .iter()
        .rposition(|p| p.pt == 101 && p.payload[1] & 0x80 == 0)
        .unwrap();
    assert!(got[..first_te].iter().any(|p| p.pt == 0));
    assert!(got[last_update..].iter().any(|p| p.pt == 0));
    assert!(
        got[first_te..=last_update].iter().all(|p| p.pt == 101),
        "audio suppressed while the event plays"
    );
    let audio: Vec<&Rtp> = got.iter().filter(|p| p.pt == 0).collect();
    let offset = audio[0]
        .ts
        .wrapping_sub(160 * u32::from(audio[0].payload[0]));
    for p in &audio {
        assert_eq!(p.ts.wrapping_sub(160 * u32::from(p.payload[0])), offset);
    }
    // The event starts on the audio clock, after the last audio A received before it.
    let before = got[..first_te].iter().rev().find(|p| p.pt == 0).unwrap();
    let gap = start.wrapping_sub(before.ts);
    assert!(gap <= 8 * 200, "{gap} units after the last audio");

    let st = s
        .stats_when(|st| st.b.packets + st.b.unvalidated == u64::from(PACKETS))
        .await;
    assert_eq!(st.a.digits_out, 1);
    assert_eq!(
        st.b.suppressed as usize + audio.len(),
        PACKETS as usize,
        "every audio packet of B forwarded or suppressed"
    );
    assert!(st.b.suppressed >= 1, "{}", st.b.suppressed);
}

#[tokio::test]
async fn comfort_noise_passes_remapped_to_a_cn_leg_and_is_dropped_toward_one_without() {
    // A: CN on 13; B: CN on 19 (an unusual dynamic number, to see the remap).
    let s = Setup::new(
        4,
        media(0, Codec::PCMU, DtmfMode::Info, Some(13)),
        media(0, Codec::PCMU, DtmfMode::Info, Some(19)),
    )
    .await;
    s.a_sends(&Rtp::new(0, 1, 0, &[0xff; 160])).await;
    s.a_sends(&Rtp::new(13, 2, 160, &[40])).await;
    s.a_sends(&Rtp::new(0, 3, 1600, &[0xff; 160])).await;
    let got = vec![
        recv(&s.peer_b).await,
        recv(&s.peer_b).await,
        recv(&s.peer_b).await,
    ];
    assert_one_continuous_stream(&got);
    assert_eq!(
        (got[1].pt, &got[1].payload[..]),
        (19, &[40u8][..]),
        "CN remapped, level kept"
    );

    // A: CN on 13; B: none. A's CN is dropped and leaves no gap in B's sequence numbers.
    let s = Setup::new(
        5,
        media(0, Codec::PCMU, DtmfMode::Info, Some(13)),
        media(0, Codec::PCMU, DtmfMode::Info, None),
    )
    .await;
    s.a_sends(&Rtp::new(0, 1, 0, &[0xff; 160])).await;
    s.a_sends(&Rtp::new(13, 2, 160, &[40])).await;
    s.a_sends(&Rtp::new(13, 3, 800, &[42])).await;
    s.a_sends(&Rtp::new(0, 4, 1600, &[0xff; 160])).await;
    let got = vec![recv(&s.peer_b).await, recv(&s.peer_b).await];
    assert_one_continuous_stream(&got);
    assert!(got.iter().all(|p| p.pt == 0));
    assert_eq!(
        got[1].ts.wrapping_sub(got[0].ts),
        1600,
        "silence, not a jump"
    );
    // B sends PT 13 though it negotiated no CN: not forwarded either.
    s.b_sends(&Rtp::new(0, 1, 0, &[0xff; 160])).await;
    s.b_sends(&Rtp::new(13, 2, 160, &[40])).await;
    s.b_sends(&Rtp::new(0, 3, 320, &[0xff; 160])).await;
    let back = vec![recv(&s.peer_a).await, recv(&s.peer_a).await];
    assert_one_continuous_stream(&back);
    let st = s.stats_when(|st| st.a.dropped_cn == 2).await;
    assert_eq!(st.b.dropped, 1, "an unnegotiated payload type");
    assert_eq!(st.b.dropped_cn, 0);
}

#[tokio::test]
async fn unsupported_pairs_and_misuse_are_refused_at_start_and_per_call() {
    let alloc = PortAllocator::new(LO, range(6));
    let cfg = |m| LegConfig {
        media: m,
        ..LegConfig::default()
    };
    let pcmu = media(0, Codec::PCMU, DtmfMode::Rfc4733 { pt: 101 }, None);
    // Opus at a clock other than RFC 7587's 48 kHz is not Opus as RTP carries it.
    let opus16 = Codec::new("opus", 16000).unwrap();
    let opus_leg = media(111, opus16, DtmfMode::Rfc4733 { pt: 101 }, None);
    let err = Bridge::start(
        alloc.allocate().unwrap(),
        cfg(Some(pcmu)),
        alloc.allocate().unwrap(),
        cfg(Some(opus_leg)),
        Duration::from_secs(30),
    )
    .unwrap_err();
    assert!(
        matches!(err, media_relay::Error::UnsupportedCodecs { a, b } if a == Codec::PCMU && b == opus16)
    );
    assert_eq!(
        err.to_string(),
        "cannot bridge PCMU/8000 to OPUS/16000: only pcmu, pcma and opus/48000 are converted"
    );
    assert_eq!(Codec::new("opus", 48000).unwrap(), Codec::OPUS);
    let err = Bridge::start(
        alloc.allocate().unwrap(),
        cfg(Some(pcmu)),
        alloc.allocate().unwrap(),
        cfg(None),
        Duration::from_secs(30),
    )
    .unwrap_err();
    assert!(matches!(err, media_relay::Error::Misuse(_)), "{err}");

    // A transparent bridge has no payload type to send digits with.
    let plain = Bridge::start(
        alloc.allocate().unwrap(),
        cfg(None),
        alloc.allocate().unwrap(),
        cfg(None),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(matches!(
        plain.send_digit(true, '1', None).await,
        Err(media_relay::Error::Misuse(_))
    ));
    drop(plain);
    // Into an INFO leg, or not a digit: refused; into the RFC 4733 leg: accepted.
    let info = media(8, Codec::PCMA, DtmfMode::Info, None);
    let b = Bridge::start(
        alloc.allocate().unwrap(),
        cfg(Some(pcmu)),
        alloc.allocate().unwrap(),
        cfg(Some(info)),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(matches!(
        b.send_digit(true, '1', None).await,
        Err(media_relay::Error::Misuse(_))
    ));
    assert!(matches!(
        b.send_digit(false, 'x', None).await,
        Err(media_relay::Error::Misuse(_))
    ));
    b.send_digit(false, '1', None).await.unwrap();
    assert_eq!(b.stats().await.unwrap().a.digits_out, 1);
}

/// Share of the energy of 8 kHz `x` at `hz` (Goertzel over the whole slice; a pure tone's
/// power is energy · N / 2).
fn tone_share(x: &[i16], hz: f64) -> f64 {
    let c = 2.0 * (2.0 * std::f64::consts::PI * hz / 8000.0).cos();
    let (mut s1, mut s2, mut energy) = (0f64, 0f64, 0f64);
    for &v in x {
        let v = f64::from(v);
        energy += v * v;
        let s0 = v + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    2.0 * (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64 * energy).max(1.0)
}

fn sine(hz: f64, rate: f64, from: usize, n: usize) -> impl Iterator<Item = i16> {
    (from..from + n)
        .map(move |i| (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate).sin()) as i16)
}

/// G.711 leg A ⇄ Opus leg B. A's 1 kHz PCMU tone reaches B as Opus on B's own 48 kHz
/// timeline, which libopus decodes back to the tone; B's Opus, from a fullband 48 kHz encoder
/// like a browser's, reaches A as 20 ms PCMU packets of the tone; a corrupt Opus packet is
/// counted, concealed and does not stop the stream.
#[tokio::test]
async fn pcmu_and_opus_are_transcoded_both_ways() {
    let s = Setup::new(
        7,
        media(0, Codec::PCMU, DtmfMode::Info, None),
        media(111, Codec::OPUS, DtmfMode::Info, None),
    )
    .await;
    let mut decoder = media_codec::OpusToG711::new(media_codec::G711Law::Ulaw, 0).unwrap();
    let mut heard_b = Vec::new();
    let mut got = Vec::new();
    for i in 0..50u16 {
        let pcm: Vec<u8> = sine(1000.0, 8000.0, 160 * usize::from(i), 160)
            .map(g711::linear_to_ulaw)
            .collect();
        s.a_sends(&Rtp::new(0, 300 + i, 160 * u32::from(i), &pcm))
            .await;
        let p = recv(&s.peer_b).await;
        assert_eq!(p.pt, 111, "opus's payload type toward B");
        let out = decoder.transcode(p.ts, &p.payload).unwrap();
        heard_b.extend(out.payload.iter().map(|&u| g711::ulaw_to_linear(u)));
        got.push(p);
    }
    assert_one_continuous_stream(&got);
    for (i, p) in got.iter().enumerate() {
        assert_eq!(
            p.ts.wrapping_sub(got[0].ts),
            960 * i as u32,
            "20 ms at 48 kHz"
        );
    }
    // The first 200 ms are the codec settling in.
    let share = tone_share(&heard_b[1600..], 1000.0);
    assert!(share > 0.8, "1 kHz holds {share:.2} of what B decoded");

    let encoder = audiopus::coder::Encoder::new(
        audiopus::SampleRate::Hz48000,
        audiopus::Channels::Mono,
        audiopus::Application::Voip,
    )
    .unwrap();
    let mut heard_a = Vec::new();
    let mut back = Vec::new();
    let mut buf = [0u8; 1500];
    for i in 0..50u16 {
        let pcm: Vec<i16> = sine(1000.0, 48_000.0, 960 * usize::from(i), 960).collect();
        let n = encoder.encode(&pcm, &mut buf).unwrap();
        // Packet 25 is mangled on the way: a code 3 TOC without its frame count byte.
        let payload: &[u8] = if i == 25 { &[0x03] } else { &buf[..n] };
        s.b_sends(&Rtp::new(
            111,
            7 + i,
            48_000 * 5 + 960 * u32::from(i),
            payload,
        ))
        .await;
        // Nothing for the corrupt packet; its 20 ms are concealed when the next one comes.
        let expect = match i {
            25 => 0,
            26 => 2,
            _ => 1,
        };
        for _ in 0..expect {
            let p = recv(&s.peer_a).await;
            assert_eq!((p.pt, p.payload.len()), (0, 160), "20 ms of PCMU toward A");
            heard_a.extend(p.payload.iter().map(|&u| g711::ulaw_to_linear(u)));
            back.push(p);
        }
    }
    assert_one_continuous_stream(&back);
    for (i, p) in back.iter().enumerate() {
        assert_eq!(
            p.ts.wrapping_sub(back[0].ts),
            160 * i as u32,
            "20 ms at 8 kHz"
        );
    }
    let share = tone_share(&heard_a[1600..], 1000.0);
    assert!(share > 0.8, "1 kHz holds {share:.2} of what A heard");
    let st = s
        .stats_when(|st| st.a.transcoded == 50 && st.b.transcoded == 49)
        .await;
    assert_eq!((st.b.codec_errors, st.b.concealed), (1, 1), "{st:?}");
    assert_eq!((st.a.codec_errors, st.a.dropped, st.b.dropped), (0, 0, 0));
}

#[tokio::test]
async fn media_changed_by_reinvite_keeps_the_outbound_stream_going() {
    let s = Setup::new(
        8,
        media(0, Codec::PCMU, DtmfMode::Info, None),
        media(0, Codec::PCMU, DtmfMode::Info, None),
    )
    .await;
    let mut got = Vec::new();
    for i in 0..3u16 {
        s.a_sends(&Rtp::new(0, 10 + i, 160 * u32::from(i), &speech(i)))
            .await;
        got.push(recv(&s.peer_b).await);
    }
    // A's peer switches to A-law on payload type 8 (a new SSRC and seq with it): B still
    // wants µ-law, so the bridge now converts, on the same outbound stream.
    let moved = LegConfig {
        remote: Some(s.peer_a.local_addr().unwrap()),
        latch: Latch::Fixed,
        media: Some(media(8, Codec::PCMA, DtmfMode::Info, None)),
        ..LegConfig::default()
    };
    s.bridge.update(false, moved).await.unwrap();
    for i in 0..3u16 {
        let mut sent = Rtp::new(8, 5000 + i, 90_000 + 160 * u32::from(i), &speech(i));
        sent.ssrc = 0xabcd;
        s.a_sends(&sent).await;
        let p = recv(&s.peer_b).await;
        let mut want = sent.payload.clone();
        g711::alaw_to_ulaw_in_place(&mut want);
        assert_eq!((p.pt, &p.payload), (0, &want));
        got.push(p);
    }
    assert_one_continuous_stream(&got);
    // An untranslated pair is refused and changes nothing.
    let bad = LegConfig {
        media: Some(media(
            9,
            Codec::new("G722", 8000).unwrap(),
            DtmfMode::Info,
            None,
        )),
        ..moved
    };
    assert!(matches!(
        s.bridge.update(false, bad).await,
        Err(media_relay::Error::UnsupportedCodecs { .. })
    ));
    let mut sent = Rtp::new(8, 5003, 90_480, &speech(3));
    sent.ssrc = 0xabcd;
    s.a_sends(&sent).await;
    got.push(recv(&s.peer_b).await);
    assert_one_continuous_stream(&got);
    let st = s.stats_when(|st| st.a.converted == 4).await;
    assert_eq!(st.a.dropped, 0);
}

/// A channel leg (an application in the process, e.g. a RIPT call) hands leg A's µ-law as
/// A-law to the application's sink, and the application's A-law reaches A's peer as µ-law,
/// clear RTP both ways, with the same transforms as a socket leg; dropping the application's
/// sender stops the bridge.
#[tokio::test]
async fn a_channel_leg_gets_the_same_transforms_and_its_end_stops_the_bridge() {
    let alloc = PortAllocator::new(LO, range(6));
    let leg_a = alloc.allocate().unwrap();
    let to_a = SocketAddr::new(LO, leg_a.port);
    let peer_a = UdpSocket::bind((LO, 0)).await.unwrap();
    let a_cfg = LegConfig {
        remote: Some(peer_a.local_addr().unwrap()),
        latch: Latch::Fixed,
        media: Some(media(0, Codec::PCMU, DtmfMode::Info, None)),
        ..LegConfig::default()
    };
    let b_cfg = LegConfig {
        media: Some(media(8, Codec::PCMA, DtmfMode::Rfc4733 { pt: 101 }, None)),
        ..LegConfig::default()
    };
    // The sink runs on the bridge's task; the test reads what it was handed.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let (mut bridge, to_bridge) = Bridge::start_with_sink(
        leg_a,
        a_cfg,
        b_cfg,
        Duration::from_secs(30),
        Box::new(move |p| {
            let _ = seen_tx.send(p.to_vec());
        }),
    )
    .unwrap();
    let mut got = Vec::new();
    for i in 0..10u16 {
        let sent = Rtp::new(0, 100 + i, 160 * u32::from(i), &speech(i));
        peer_a.send_to(&sent.encode(), to_a).await.unwrap();
        let p = Rtp::decode(&within(seen.recv()).await.unwrap());
        let mut want = sent.payload.clone();
        g711::ulaw_to_alaw_in_place(&mut want);
        assert_eq!(
            (p.pt, &p.payload),
            (8, &want),
            "µ-law → A-law into the channel"
        );
        got.push(p);
    }
    assert_one_continuous_stream(&got);
    for i in 0..5u16 {
        let sent = Rtp::new(8, 7 + i, 160 * u32::from(i), &speech(i + 50));
        to_bridge.send(sent.encode().into()).await.unwrap();
        let p = recv(&peer_a).await;
        let mut want = sent.payload.clone();
        g711::alaw_to_ulaw_in_place(&mut want);
        assert_eq!(
            (p.pt, &p.payload),
            (0, &want),
            "A-law from the channel → µ-law"
        );
    }
    // A digit from the channel's telephone-events toward an INFO leg is reported once.
    let mut events = bridge.take_events().unwrap();
    for (k, pkt) in digit_packets(5, 100, 90_000).into_iter().enumerate() {
        let ev = Rtp {
            marker: pkt.marker,
            ..Rtp::new(101, 20 + k as u16, pkt.timestamp, &pkt.payload.encode())
        };
        to_bridge.send(ev.encode().into()).await.unwrap();
    }
    match within(events.recv()).await {
        Some(BridgeEvent::Digit {
            from_leg_b: true,
            digit: '5',
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    drop(to_bridge);
    assert_eq!(
        within(bridge.ended()).await,
        media_relay::BridgeEnd::Io,
        "the application left"
    );
}
