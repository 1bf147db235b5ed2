//! SIPp (Debian `sip-tester`, installed by `scripts/test`) against the user agent on loopback,
//! in both roles: SIPp calls us (early media with PRACK, hold/resume, RFC 4733 DTMF and RTP
//! from pcaps, UPDATE, CANCEL, a session timer we refresh) and we call SIPp (a digest
//! challenge to our INVITE, a reliable 183, hold/resume re-INVITEs from the callee, CANCEL,
//! a session timer we refresh), plus a registration kept with SIPp as the registrar.

use super::*;

use bytes::Bytes;
use media_proto::dtmf::{TelephoneEvent, char_of};
use sip_proto::register::RegistrationConfig;
use sip_proto::sdp::{self, Direction, Local, Sdp, SrtpMode};
use sip_transport::{Target, Transport};
use sip_ua::{
    Call, CallOptions, EndReason, IncomingCall, OfferKind, RegState, SessionEvent, UaConfig,
    UaEvent, UserAgent,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Our session timers made short enough to watch refreshes (RFC 4028 says Min-SE ≥ 90).
fn short_timers() -> UaConfig {
    UaConfig {
        session_expires: Some(4),
        min_se: 2,
        ..UaConfig::default()
    }
}

/// What arrived on our RTP port.
#[derive(Debug, Default, Clone)]
struct Heard {
    audio: usize,
    digits: Vec<char>,
    last_event_ts: Option<u32>,
}

/// A UDP port that counts RTP audio and decodes RFC 4733 digits (each once, at its end).
struct MediaProbe {
    port: u16,
    heard: watch::Receiver<Heard>,
    task: tokio::task::JoinHandle<()>,
}

impl MediaProbe {
    async fn bind() -> MediaProbe {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let port = sock.local_addr().unwrap().port();
        let (tx, heard) = watch::channel(Heard::default());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, _)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(p) = media_proto::rtp::parse(Bytes::copy_from_slice(&buf[..n])) else {
                    continue;
                };
                tx.send_modify(|h| {
                    if p.header.payload_type == 101 {
                        if let Ok(e) = TelephoneEvent::decode(&p.payload)
                            && e.end
                            && h.last_event_ts != Some(p.header.timestamp)
                        {
                            h.last_event_ts = Some(p.header.timestamp);
                            h.digits.extend(char_of(e.event));
                        }
                    } else {
                        h.audio += 1;
                    }
                });
            }
        });
        MediaProbe { port, heard, task }
    }

    fn heard(&self) -> Heard {
        self.heard.borrow().clone()
    }

    async fn wait_for(&mut self, what: impl Fn(&Heard) -> bool) -> Heard {
        let got = tokio::time::timeout(WAIT, self.heard.wait_for(|h| what(h)))
            .await
            .map(|r| r.unwrap().clone());
        got.unwrap_or_else(|_| panic!("media never arrived: {:?}", self.heard()))
    }
}

impl Drop for MediaProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer_for(offer: &[u8], port: u16, version: u64) -> Vec<u8> {
    let offer = Sdp::parse(offer).unwrap();
    let local = Local {
        address: "127.0.0.1".into(),
        audio_port: port,
        codecs: vec!["PCMA".into(), "PCMU".into()],
        srtp: SrtpMode::Off,
        keys: vec![],
        want: Direction::SendRecv,
        session_id: 7,
        session_version: version,
    };
    sdp::answer(&offer, &local)
        .unwrap()
        .0
        .to_text()
        .into_bytes()
}

fn offer_for(port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// What our answering side saw of one call.
#[derive(Debug, Default)]
struct Report {
    offers: Vec<OfferKind>,
    directions: Vec<String>,
    refreshes: usize,
    end: Option<(EndReason, Option<u16>)>,
    heard: Heard,
}

/// The answering application: `early` answers with a reliable 183 then 200, `ring` rings
/// until cancelled, anything else rings and answers. Re-offers are answered (hold gets
/// recvonly through RFC 3264's rules).
async fn answer_incoming(inc: IncomingCall) -> Report {
    let user = inc
        .request
        .uri()
        .trim_start_matches("sip:")
        .split('@')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut call = inc.call;
    let probe = MediaProbe::bind().await;
    let mut report = Report::default();
    let mut version = 1;
    let offer = match call.next_event().await {
        Some(SessionEvent::RemoteOffer {
            body,
            kind: OfferKind::Invite,
        }) => body,
        other => panic!("expected the INVITE's offer, got {other:?}"),
    };
    let answer = answer_for(&offer, probe.port, version);
    match user.as_str() {
        "early" => {
            call.provisional(183, Some(answer)).await.unwrap();
            call.accept(None).await.unwrap();
        }
        "ring" => call.provisional(180, None).await.unwrap(),
        _ => {
            call.provisional(180, None).await.unwrap();
            call.accept(Some(answer)).await.unwrap();
        }
    }
    report.end = drive(&mut call, &probe, &mut report, &mut version).await;
    report.heard = probe.heard();
    report
}

/// Answers re-offers until the call ends; returns how it ended.
async fn drive(
    call: &mut Call,
    probe: &MediaProbe,
    report: &mut Report,
    version: &mut u64,
) -> Option<(EndReason, Option<u16>)> {
    while let Some(ev) = tokio::time::timeout(WAIT, call.next_event())
        .await
        .expect("the call went quiet")
    {
        match ev {
            SessionEvent::RemoteOffer { body, kind } => {
                report.offers.push(kind);
                *version += 1;
                let a = answer_for(&body, probe.port, *version);
                let text = String::from_utf8_lossy(&a).into_owned();
                report.directions.extend(
                    ["sendrecv", "sendonly", "recvonly", "inactive"]
                        .iter()
                        .find(|d| text.contains(&format!("a={d}")))
                        .map(|d| (*d).to_owned()),
                );
                call.answer(a).await.unwrap();
            }
            SessionEvent::RefreshDone => report.refreshes += 1,
            SessionEvent::Terminated { reason, status } => return Some((reason, status)),
            _ => {}
        }
    }
    None
}

async fn next_call(ua: &mut UserAgent) -> IncomingCall {
    match tokio::time::timeout(WAIT, ua.next_event()).await {
        Ok(Some(UaEvent::Call(c))) => c,
        other => panic!("expected a call, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_us_early_media_prack_hold_resume_dtmf_update_over_udp_and_tcp() {
    for (t, flag) in [(Transport::Udp, "u1"), (Transport::Tcp, "t1")] {
        let (mut ua, udp, tcp) = agent(UaConfig::default()).await;
        let target = if t == Transport::Udp { udp } else { tcp };
        let run = sipp(
            "uac_early_prack_hold",
            vec![
                target.to_string(),
                "-t".into(),
                flag.into(),
                "-p".into(),
                free_port().to_string(),
            ],
        );
        let serve = async {
            let c = next_call(&mut ua).await;
            answer_incoming(c).await
        };
        let report = against_sipp(run, serve).await;
        assert_eq!(
            report.offers,
            vec![OfferKind::Reinvite, OfferKind::Reinvite],
            "{t:?}"
        );
        assert_eq!(report.directions, vec!["recvonly", "sendrecv"], "{t:?}");
        assert_eq!(report.end, Some((EndReason::RemoteBye, None)), "{t:?}");
        // SIPp stops a pcap when the next one (the digit) starts: about 2 s of audio.
        assert!(report.heard.audio >= 50, "{t:?}: {:?}", report.heard);
        assert_eq!(report.heard.digits, vec!['1'], "{t:?}");
        assert_eq!(ua.active_calls(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_cancels_while_we_ring() {
    let (mut ua, udp, _) = agent(UaConfig::default()).await;
    let run = sipp(
        "uac_cancel",
        vec![
            udp.to_string(),
            "-t".into(),
            "u1".into(),
            "-p".into(),
            free_port().to_string(),
        ],
    );
    let serve = async { answer_incoming(next_call(&mut ua).await).await };
    let report = against_sipp(run, serve).await;
    assert_eq!(report.end.map(|e| e.0), Some(EndReason::Cancelled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_refresh_the_session_sipp_asked_us_to_refresh() {
    let (mut ua, udp, _) = agent(short_timers()).await;
    let run = sipp(
        "uac_refresh",
        vec![
            udp.to_string(),
            "-t".into(),
            "u1".into(),
            "-p".into(),
            free_port().to_string(),
        ],
    );
    let serve = async { answer_incoming(next_call(&mut ua).await).await };
    let report = against_sipp(run, serve).await;
    assert_eq!(report.refreshes, 2);
    assert_eq!(report.end, Some((EndReason::RemoteBye, None)));
}

/// SIPp as the UAS on its own port; our INVITE retransmits over UDP until it listens.
fn uas_args() -> (u16, Vec<String>) {
    let p = free_port();
    (
        p,
        vec!["-t".into(), "u1".into(), "-p".into(), p.to_string()],
    )
}

fn options_to(port: u16, probe: &MediaProbe, user: &str) -> CallOptions {
    CallOptions {
        uri: format!("sip:{user}@127.0.0.1:{port}"),
        from: "<sip:+14085551000@127.0.0.1>".into(),
        to: format!("<sip:{user}@127.0.0.1:{port}>"),
        target: Target::new(Transport::Udp, SocketAddr::from(([127, 0, 0, 1], port))),
        offer: Some(offer_for(probe.port)),
        credentials: None,
        headers: vec![],
    }
}

/// SIPp runs `scenario` as the called side and we call it: the agent, the call, our RTP
/// probe and SIPp's run. The agent must outlive the call.
async fn call_sipp(
    cfg: UaConfig,
    scenario: &'static str,
    credentials: Option<(String, String)>,
) -> (
    UserAgent,
    Call,
    MediaProbe,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let (ua, _, _) = agent(cfg).await;
    let (port, args) = uas_args();
    let run = tokio::spawn(sipp(scenario, args));
    let probe = MediaProbe::bind().await;
    let mut opts = options_to(port, &probe, "core");
    opts.credentials = credentials;
    let call = ua.call(opts).await.unwrap();
    (ua, call, probe, run)
}

/// Reads the call's events to the end; how it ended.
async fn end_of(call: &mut Call) -> Option<(EndReason, Option<u16>)> {
    let mut end = None;
    while let Some(ev) = tokio::time::timeout(WAIT, call.next_event()).await.unwrap() {
        if let SessionEvent::Terminated { reason, status } = ev {
            end = Some((reason, status));
        }
    }
    end
}

/// Waits for the 2xx and its ACK.
async fn until_confirmed(call: &mut Call) -> Vec<SessionEvent> {
    let mut seen = vec![];
    loop {
        let ev = tokio::time::timeout(WAIT, call.next_event())
            .await
            .expect("no answer")
            .expect("call ended before it was confirmed");
        let done = matches!(ev, SessionEvent::Confirmed);
        if let SessionEvent::Terminated { .. } = ev {
            panic!("call ended: {ev:?} after {seen:?}");
        }
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_call_sipp_answer_its_challenge_hear_rtp_and_dtmf_and_hang_up() {
    let (_ua, mut call, mut probe, run) = call_sipp(
        UaConfig::default(),
        "uas_answer_media",
        Some(("gw".into(), "secret".into())),
    )
    .await;
    let seen = until_confirmed(&mut call).await;
    assert!(
        seen.contains(&SessionEvent::Progress { status: 180 }),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, SessionEvent::RemoteAnswer { .. })),
        "{seen:?}"
    );
    let heard = probe
        .wait_for(|h| h.audio >= 50 && h.digits.contains(&'5'))
        .await;
    assert_eq!(heard.digits, vec!['5']);
    call.bye().await.unwrap();
    assert_eq!(
        end_of(&mut call).await.map(|e| e.0),
        Some(EndReason::LocalBye)
    );
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_call_sipp_prack_its_183_and_follow_its_hold_and_resume() {
    let (_ua, mut call, probe, run) =
        call_sipp(UaConfig::default(), "uas_prack_reinvite", None).await;
    let seen = until_confirmed(&mut call).await;
    assert!(
        seen.contains(&SessionEvent::Progress { status: 183 }),
        "{seen:?}"
    );
    let mut report = Report::default();
    let mut version = 1;
    report.end = drive(&mut call, &probe, &mut report, &mut version).await;
    assert_eq!(
        report.offers,
        vec![OfferKind::Reinvite, OfferKind::Reinvite]
    );
    assert_eq!(report.directions, vec!["recvonly", "sendrecv"]);
    assert_eq!(report.end, Some((EndReason::RemoteBye, None)));
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_cancel_a_ringing_call_to_sipp() {
    let (_ua, mut call, _probe, run) = call_sipp(UaConfig::default(), "uas_cancel", None).await;
    loop {
        match tokio::time::timeout(WAIT, call.next_event()).await.unwrap() {
            Some(SessionEvent::Progress { status: 180 }) => break,
            Some(SessionEvent::Terminated { .. }) | None => panic!("ended before ringing"),
            Some(_) => {}
        }
    }
    call.cancel().await.unwrap();
    assert_eq!(
        end_of(&mut call).await,
        Some((EndReason::Cancelled, Some(487)))
    );
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_refresh_the_session_sipp_made_us_refresh() {
    let (_ua, mut call, probe, run) = call_sipp(short_timers(), "uas_refresh", None).await;
    until_confirmed(&mut call).await;
    let mut report = Report::default();
    let mut version = 1;
    report.end = drive(&mut call, &probe, &mut report, &mut version).await;
    assert_eq!(report.refreshes, 2);
    assert_eq!(report.end, Some((EndReason::RemoteBye, None)));
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_keep_a_registration_with_sipp_as_registrar() {
    let (ua, udp, _) = agent(UaConfig::default()).await;
    let (port, args) = uas_args();
    let run = tokio::spawn(sipp("registrar", args));
    let mut cfg = RegistrationConfig::new(
        "sip:gw@127.0.0.1",
        format!("sip:127.0.0.1:{port}"),
        format!("sip:gw@{udp}"),
        "gw",
        sip_proto::digest::Secret::Password("secret".into()),
    );
    cfg.expires = 2;
    let mut reg = ua
        .register(
            cfg,
            Target::new(Transport::Udp, SocketAddr::from(([127, 0, 0, 1], port))),
        )
        .unwrap();
    let mut registered = 0;
    while registered < 2 {
        match tokio::time::timeout(WAIT, reg.changed()).await.unwrap() {
            Some(RegState::Registered { expires, .. }) => {
                assert_eq!(expires, 2);
                registered += 1;
            }
            Some(RegState::Pending) => {}
            other => panic!("registration: {other:?}"),
        }
    }
    reg.unregister().await;
    assert_eq!(
        tokio::time::timeout(WAIT, reg.changed()).await.unwrap(),
        Some(RegState::Unregistered)
    );
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_call_is_cancelled_after_the_no_answer_timeout() {
    let cfg = UaConfig {
        no_answer_timeout: Duration::from_secs(1),
        ..UaConfig::default()
    };
    let (_ua, mut call, _probe, run) = call_sipp(cfg, "uas_cancel", None).await;
    let mut seen = vec![];
    while let Some(ev) = tokio::time::timeout(WAIT, call.next_event()).await.unwrap() {
        seen.push(ev);
    }
    assert_eq!(
        seen,
        vec![
            SessionEvent::Progress { status: 180 },
            SessionEvent::Terminated {
                reason: EndReason::Cancelled,
                status: Some(487)
            }
        ]
    );
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_application_never_decides_ends_with_480() {
    let (mut ua, udp, _) = agent(UaConfig {
        no_answer_timeout: Duration::from_secs(1),
        ..UaConfig::default()
    })
    .await;
    let run = sipp(
        "uac_unanswered",
        vec![
            udp.to_string(),
            "-t".into(),
            "u1".into(),
            "-p".into(),
            free_port().to_string(),
        ],
    );
    let serve = async {
        let mut call = next_call(&mut ua).await.call;
        // The application holds the call and does nothing.
        end_of(&mut call).await
    };
    let end = against_sipp(run, serve).await;
    assert_eq!(end.map(|e| e.1), Some(Some(480)));
}
