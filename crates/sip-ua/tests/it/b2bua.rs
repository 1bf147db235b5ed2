//! A SIP ⇄ SIP back-to-back call through the user agent and the media relay, with SIPp as a PBX
//! that speaks PCMA and signals digits only by SIP INFO, and our own UA with an RTP probe as a
//! far phone that speaks PCMU and RFC 4733: the relay converts A-law ⇄ µ-law, turns SIPp's
//! INFO into RFC 4733 toward the phone and the phone's RFC 4733 into an INFO toward SIPp.
use super::*;

use bytes::Bytes;
use media_proto::dtmf::{TelephoneEvent, char_of, dtmf_relay_body, parse_info};
use media_relay::{
    Bridge, BridgeEvent, Codec, DtmfMode, Latch, LegConfig, LegMedia, PortAllocator, PortRange,
};
use sip_proto::sdp::{self, Direction, Local, Sdp, SrtpMode};
use sip_transport::{Target, Transport};
use sip_ua::{CallOptions, OfferKind, SessionEvent, UaConfig, UaEvent};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// What the far phone heard.
#[derive(Debug, Default, Clone)]
struct Heard {
    pcmu: usize,
    other: usize,
    digits: Vec<char>,
    last_event_ts: Option<u32>,
}

/// The far phone's RTP socket: counts audio by payload type, decodes RFC 4733, and can send.
struct Phone {
    sock: Arc<UdpSocket>,
    heard: watch::Receiver<Heard>,
    task: tokio::task::JoinHandle<()>,
}

impl Phone {
    async fn bind() -> Phone {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (tx, heard) = watch::channel(Heard::default());
        let rx = sock.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, _)) = rx.recv_from(&mut buf).await {
                let Ok(p) = media_proto::rtp::parse(Bytes::copy_from_slice(&buf[..n])) else {
                    continue;
                };
                tx.send_modify(|h| match p.header.payload_type {
                    101 => {
                        if let Ok(e) = TelephoneEvent::decode(&p.payload)
                            && e.end
                            && h.last_event_ts != Some(p.header.timestamp)
                        {
                            h.last_event_ts = Some(p.header.timestamp);
                            h.digits.extend(char_of(e.event));
                        }
                    }
                    0 => h.pcmu += 1,
                    _ => h.other += 1,
                });
            }
        });
        Phone { sock, heard, task }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    async fn wait_for(&mut self, what: impl Fn(&Heard) -> bool) -> Heard {
        let r = tokio::time::timeout(WAIT, self.heard.wait_for(|h| what(h)))
            .await
            .map(|h| h.unwrap().clone());
        r.unwrap_or_else(|_| panic!("the phone never heard it: {:?}", self.heard.borrow()))
    }

    /// Presses `digit` for 100 ms as RFC 4733 (payload type 101) toward `to`, paced at 20 ms
    /// as a phone sends it.
    async fn press(&self, digit: u8, to: SocketAddr) {
        let ssrc = 0x0bad_cafe_u32;
        let ts = 160_000u32;
        let mut seq = 1000u16;
        let mut send = |dur: u16, end: bool, marker: bool| {
            let ev = TelephoneEvent {
                event: digit,
                end,
                volume: 10,
                duration: dur,
            };
            let mut pkt = vec![0x80, (u8::from(marker) << 7) | 101];
            pkt.extend_from_slice(&seq.to_be_bytes());
            pkt.extend_from_slice(&ts.to_be_bytes());
            pkt.extend_from_slice(&ssrc.to_be_bytes());
            pkt.extend_from_slice(&ev.encode());
            seq = seq.wrapping_add(1);
            pkt
        };
        let mut packets = vec![
            send(160, false, true),
            send(320, false, false),
            send(480, false, false),
            send(640, false, false),
        ];
        for _ in 0..3 {
            packets.push(send(800, true, false));
        }
        for p in packets {
            self.sock.send_to(&p, to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await; // RTP pacing, not synchronisation
        }
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn local(port: u16, codecs: &[&str], version: u64) -> Local {
    Local {
        address: "127.0.0.1".into(),
        audio_port: port,
        codecs: codecs.iter().map(|c| (*c).to_owned()).collect(),
        srtp: SrtpMode::Off,
        keys: vec![],
        want: Direction::SendRecv,
        session_id: 9,
        session_version: version,
    }
}

/// The media address of an SDP's first audio stream.
fn media_addr(body: &[u8]) -> SocketAddr {
    let s = Sdp::parse(body).unwrap();
    let ip = s.media_address(0).unwrap().parse().unwrap();
    SocketAddr::new(ip, s.media[0].port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_and_rfc4733_cross_a_b2bua_with_law_conversion() {
    let (mut gw, gw_udp, _) = agent(UaConfig::default()).await;
    let (mut far, far_udp, _) = agent(UaConfig::default()).await;
    let ports = PortAllocator::new(
        "127.0.0.1".parse().unwrap(),
        PortRange::new(32100, 32199).unwrap(),
    );
    let mut sipp_run = tokio::spawn(sipp(
        "uac_info_dtmf",
        vec![
            gw_udp.to_string(),
            "-t".into(),
            "u1".into(),
            "-p".into(),
            free_port().to_string(),
        ],
    ));

    // The far phone: answers PCMU with telephone-event, then presses 7 once it heard 5.
    let mut phone = Phone::bind().await;
    let phone_port = phone.port();
    let far_side = tokio::spawn(async move {
        let inc = match tokio::time::timeout(WAIT, far.next_event()).await {
            Ok(Some(UaEvent::Call(c))) => c,
            other => panic!("the phone got no call: {other:?}"),
        };
        let mut call = inc.call;
        let offer = match call.next_event().await {
            Some(SessionEvent::RemoteOffer {
                body,
                kind: OfferKind::Invite,
            }) => body,
            other => panic!("{other:?}"),
        };
        let relay_b = media_addr(&offer);
        let (ans, _) = sdp::answer(
            &Sdp::parse(&offer).unwrap(),
            &local(phone_port, &["PCMU"], 1),
        )
        .unwrap();
        call.accept(Some(ans.to_text().into_bytes())).await.unwrap();
        let heard = phone
            .wait_for(|h| h.digits.contains(&'5') && h.pcmu >= 20)
            .await;
        phone.press(7, relay_b).await;
        // Hold the call until the gateway hangs up.
        while let Some(ev) = call.next_event().await {
            if let SessionEvent::Terminated { .. } = ev {
                break;
            }
        }
        (heard, phone.heard.borrow().clone())
    });

    // The B2BUA.
    let inc = match tokio::time::timeout(WAIT, gw.next_event()).await {
        Ok(Some(UaEvent::Call(c))) => c,
        other => panic!("no call from SIPp: {other:?} {:?}", (&mut sipp_run).await),
    };
    let mut a = inc.call;
    let offer_a = match a.next_event().await {
        Some(SessionEvent::RemoteOffer {
            body,
            kind: OfferKind::Invite,
        }) => body,
        other => panic!("{other:?}"),
    };
    let pair_a = ports.allocate().unwrap();
    let pair_b = ports.allocate().unwrap();
    let offer_b = format!(
        "v=0\r\no=- 9 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\na=sendrecv\r\n",
        pair_b.port
    );
    let mut b = gw
        .call(CallOptions {
            uri: format!("sip:far@{far_udp}"),
            from: "<sip:pbx@127.0.0.1>".into(),
            to: format!("<sip:far@{far_udp}>"),
            target: Target::new(Transport::Udp, far_udp),
            offer: Some(offer_b.into_bytes()),
            credentials: None,
            headers: vec![],
        })
        .await
        .unwrap();
    let answer_b = loop {
        match tokio::time::timeout(WAIT, b.next_event()).await.unwrap() {
            Some(SessionEvent::RemoteAnswer { body }) => break body,
            Some(SessionEvent::Terminated { .. }) | None => panic!("the phone did not answer"),
            Some(_) => {}
        }
    };
    let (ans_a, _) = sdp::answer(
        &Sdp::parse(&offer_a).unwrap(),
        &local(pair_a.port, &["PCMA"], 1),
    )
    .unwrap();
    a.accept(Some(ans_a.to_text().into_bytes())).await.unwrap();
    let leg = |remote, media| LegConfig {
        remote: Some(remote),
        latch: Latch::FirstSource,
        media: Some(media),
        ..LegConfig::default()
    };
    let mut bridge = Bridge::start(
        pair_a,
        leg(
            media_addr(&offer_a),
            LegMedia::new(8, Codec::PCMA, DtmfMode::Info),
        ),
        pair_b,
        leg(
            media_addr(&answer_b),
            LegMedia::new(0, Codec::PCMU, DtmfMode::Rfc4733 { pt: 101 }),
        ),
        Duration::from_secs(30),
    )
    .unwrap();
    let mut digits = bridge.take_events().unwrap();
    let mut infos_in = 0;
    loop {
        tokio::select! {
            ev = a.next_event() => match ev {
                Some(SessionEvent::Info(req)) => {
                    let ct = req.headers().content_type().unwrap_or_default().to_owned();
                    let d = parse_info(&ct, req.body()).unwrap();
                    infos_in += 1;
                    bridge.send_digit(true, d.digit, d.duration_ms).await.unwrap();
                }
                Some(SessionEvent::Terminated { .. }) | None => break,
                Some(_) => {}
            },
            ev = digits.recv() => {
                if let Some(BridgeEvent::Digit { from_leg_b: true, digit, duration_ms }) = ev {
                    a.info("application/dtmf-relay", dtmf_relay_body(digit, duration_ms).into_bytes())
                        .await
                        .unwrap();
                }
            }
        }
    }
    b.bye().await.unwrap();
    let (at_digit, total) = far_side.await.unwrap();
    sipp_run.await.unwrap().unwrap();
    assert_eq!(infos_in, 1);
    assert_eq!(at_digit.digits, vec!['5']);
    assert_eq!(
        total.other, 0,
        "only PCMU and telephone-events reach the phone: {total:?}"
    );
    assert!(total.pcmu >= 20, "{total:?}");
    let stats = bridge.stats().await;
    if let Some(s) = stats {
        assert!(s.a.converted > 0 || s.b.converted > 0, "{s:?}");
    }
}
