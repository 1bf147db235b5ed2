//! The relay on real loopback UDP sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use media_relay::{Bridge, Latch, LegConfig, PortAllocator, PortRange};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn rtp(seq: u16, ts: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend(seq.to_be_bytes());
    p.extend(ts.to_be_bytes());
    p.extend(0x1234_5678u32.to_be_bytes());
    p.extend([0xffu8; 160]);
    p
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("timed out")
}

/// A port range of `pairs` pairs for one test (`slot` keeps concurrent tests apart; the pid
/// keeps concurrent test runs apart).
fn range(slot: u16, pairs: u16) -> PortRange {
    let base = 20000 + (std::process::id() % 1000) as u16 * 20 + slot * 8;
    PortRange::new(base, base + 2 * pairs - 1).unwrap()
}

#[tokio::test]
async fn ports_are_even_pairs_released_on_drop_and_exhaust_cleanly() {
    let r = PortRange::new(31000, 31005).unwrap();
    let alloc = PortAllocator::new(LO, r);
    let p1 = alloc.allocate().unwrap();
    assert_eq!(p1.port % 2, 0);
    assert_eq!(p1.rtcp.local_addr().unwrap().port(), p1.port + 1);
    let p2 = alloc.allocate().unwrap();
    let p3 = alloc.allocate().unwrap();
    assert!(matches!(
        alloc.allocate(),
        Err(media_relay::Error::Exhausted { .. })
    ));
    assert_eq!(alloc.in_use(), 3);
    let freed = p2.port;
    drop(p2);
    assert_eq!(alloc.allocate().unwrap().port, freed);
    drop((p1, p3));
    assert!(PortRange::new(31001, 31010).is_err(), "odd start");
    assert!(PortRange::new(31000, 31000).is_err(), "no pair");
}

#[tokio::test]
async fn a_port_taken_by_another_process_is_skipped() {
    let r = PortRange::new(31100, 31103).unwrap();
    let _squatter = std::net::UdpSocket::bind((LO, 31100)).unwrap();
    let alloc = PortAllocator::new(LO, r);
    assert_eq!(alloc.allocate().unwrap().port, 31102);
}

#[tokio::test]
async fn relays_both_ways_latches_refuses_hijack_and_counts_loss() {
    let alloc = PortAllocator::new(LO, range(0, 2));
    let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
    let (port_a, port_b) = (leg_a.port, leg_b.port);
    // Peer A is "behind NAT": its SDP address is wrong, we latch to where it sends from.
    let peer_a = UdpSocket::bind((LO, 0)).await.unwrap();
    let peer_b = UdpSocket::bind((LO, 0)).await.unwrap();
    let cfg_a = LegConfig {
        remote: Some("127.0.0.1:9".parse().unwrap()),
        latch: Latch::FirstSource,
        clock_rate: 8000,
        srtp: None,
        media: None,
        hold: false,
    };
    let cfg_b = LegConfig {
        remote: Some(peer_b.local_addr().unwrap()),
        latch: Latch::Fixed,
        clock_rate: 8000,
        srtp: None,
        media: None,
        hold: false,
    };
    let bridge = Bridge::start(leg_a, cfg_a, leg_b, cfg_b, Duration::from_secs(30)).unwrap();
    let to_a = SocketAddr::new(LO, port_a);
    let to_b = SocketAddr::new(LO, port_b);
    let mut buf = [0u8; 2048];
    // A's source is not its SDP address: it latches once it has sent four consecutive
    // sequence numbers, the first three dropped meanwhile.
    for seq in 0..3u16 {
        peer_a
            .send_to(&rtp(seq, u32::from(seq) * 160), to_a)
            .await
            .unwrap();
    }
    // 10 packets A → B with seq 6 and 7 missing.
    for seq in (3..15u16).filter(|s| *s != 6 && *s != 7) {
        peer_a
            .send_to(&rtp(seq, u32::from(seq) * 160), to_a)
            .await
            .unwrap();
        let (n, _) = within(peer_b.recv_from(&mut buf)).await.unwrap();
        assert_eq!(
            &buf[..n],
            &rtp(seq, u32::from(seq) * 160)[..],
            "forwarded unchanged"
        );
    }
    // B → A goes to A's latched source, not to its SDP address.
    peer_b.send_to(&rtp(100, 0), to_b).await.unwrap();
    let (n, _) = within(peer_a.recv_from(&mut buf)).await.unwrap();
    assert_eq!(n, 172);
    // A third party sending to leg A after the latch is dropped, not forwarded.
    let intruder = UdpSocket::bind((LO, 0)).await.unwrap();
    intruder.send_to(&rtp(50, 0), to_a).await.unwrap();
    // Non-RTP garbage too.
    peer_a.send_to(b"hello", to_a).await.unwrap();
    // RTCP goes to the next port of the latched peer... here we only count it.
    peer_a
        .send_to(
            &[0x81, 200, 0, 1, 0, 0, 0, 0],
            SocketAddr::new(LO, port_a + 1),
        )
        .await
        .unwrap();
    // A marker packet proves ordering: when B has it, everything before was processed.
    peer_a.send_to(&rtp(15, 15 * 160), to_a).await.unwrap();
    let (n, _) = within(peer_b.recv_from(&mut buf)).await.unwrap();
    assert_eq!(
        &buf[2..4],
        &15u16.to_be_bytes()[..],
        "the intruder's packet never reached B ({n} bytes)"
    );
    let s = within(async {
        loop {
            let s = bridge.stats().await.unwrap();
            if s.a.rtcp == 1 {
                return s;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(s.a.latched, Some(peer_a.local_addr().unwrap()));
    assert_eq!(s.a.lost, 2, "RFC 3550 cumulative loss");
    assert_eq!(
        s.a.dropped, 5,
        "three while learning, the intruder's packet and the garbage"
    );
    assert_eq!(
        s.a.unvalidated, 1,
        "the first packet forwarded was on RFC 3550 probation"
    );
    assert_eq!(
        s.a.packets + s.a.unvalidated,
        11,
        "every packet from A was forwarded"
    );
    assert_eq!(s.b.packets, 0, "leg B's first packet is still on probation");
}

#[tokio::test]
async fn rtp_timeout_ends_the_bridge() {
    let alloc = PortAllocator::new(LO, range(1, 2));
    let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
    let cfg = LegConfig {
        remote: None,
        latch: Latch::FirstSource,
        clock_rate: 8000,
        srtp: None,
        media: None,
        hold: false,
    };
    let mut bridge = Bridge::start(leg_a, cfg, leg_b, cfg, Duration::from_millis(200)).unwrap();
    let end = within(bridge.ended()).await;
    assert!(
        matches!(end, media_relay::BridgeEnd::Timeout { .. }),
        "{end:?}"
    );
}

mod srtp {
    use super::*;
    use media_proto::srtp::{MasterKey, SessionKeys, SrtpSession, Suite};

    /// Four pairs per test, away from the plain tests' ranges.
    fn range(slot: u16) -> PortRange {
        let base = 42000 + (std::process::id() % 1000) as u16 * 16 + slot * 8;
        PortRange::new(base, base + 7).unwrap()
    }

    /// The relay's keys for its SRTP leg and the peer's mirror image of them.
    fn keys(suite: Suite) -> (SessionKeys, SrtpSession) {
        let peer = MasterKey::new(suite, &vec![0x11; suite.key_salt_len()]).unwrap();
        let relay = MasterKey::new(suite, &vec![0x22; suite.key_salt_len()]).unwrap();
        let leg = SessionKeys {
            inbound: peer,
            outbound: relay,
        };
        let peer_session = SrtpSession::new(&SessionKeys {
            inbound: relay,
            outbound: peer,
        })
        .unwrap();
        (leg, peer_session)
    }

    fn rr(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 201, 0, 1];
        p.extend(ssrc.to_be_bytes());
        p
    }

    async fn stats_when(
        bridge: &Bridge,
        done: impl Fn(&media_relay::BridgeStats) -> bool,
    ) -> media_relay::BridgeStats {
        within(async {
            loop {
                let s = bridge.stats().await.unwrap();
                if done(&s) {
                    return s;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
    }

    #[tokio::test]
    async fn bridges_srtp_to_plain_rtp_and_srtcp_to_rtcp_both_ways() {
        for (slot, suite) in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm]
            .into_iter()
            .enumerate()
        {
            let alloc = PortAllocator::new(LO, range(slot as u16));
            let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
            // The peers need RTCP on the next port too: give them pairs of their own.
            let (peer_a, peer_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
            let (leg_keys, mut peer_srtp) = keys(suite);
            let cfg_a = LegConfig {
                remote: Some(peer_a.rtp.local_addr().unwrap()),
                latch: Latch::FirstSource,
                clock_rate: 8000,
                srtp: Some(leg_keys),
                media: None,
                hold: false,
            };
            let cfg_b = LegConfig {
                remote: Some(peer_b.rtp.local_addr().unwrap()),
                latch: Latch::Fixed,
                clock_rate: 8000,
                srtp: None,
                media: None,
                hold: false,
            };
            let (to_a, to_b) = (
                SocketAddr::new(LO, leg_a.port),
                SocketAddr::new(LO, leg_b.port),
            );
            let bridge =
                Bridge::start(leg_a, cfg_a, leg_b, cfg_b, Duration::from_secs(30)).unwrap();
            let mut buf = [0u8; 2048];
            for seq in 0..5u16 {
                let clear = rtp(seq, u32::from(seq) * 160);
                let wire = peer_srtp.protect_rtp(&clear).unwrap();
                assert_ne!(wire[..], clear[..]);
                peer_a.rtp.send_to(&wire, to_a).await.unwrap();
                let (n, _) = within(peer_b.rtp.recv_from(&mut buf)).await.unwrap();
                assert_eq!(&buf[..n], &clear[..], "{suite}: B gets plain RTP");
                let back = rtp(1000 + seq, 0);
                peer_b.rtp.send_to(&back, to_b).await.unwrap();
                let (n, _) = within(peer_a.rtp.recv_from(&mut buf)).await.unwrap();
                assert_eq!(
                    &peer_srtp.unprotect_rtp(&buf[..n]).unwrap()[..],
                    &back[..],
                    "{suite}: A gets SRTP"
                );
            }
            let srtcp = peer_srtp.protect_rtcp(&rr(7)).unwrap();
            peer_a
                .rtcp
                .send_to(&srtcp, SocketAddr::new(LO, to_a.port() + 1))
                .await
                .unwrap();
            let (n, _) = within(peer_b.rtcp.recv_from(&mut buf)).await.unwrap();
            assert_eq!(&buf[..n], &rr(7)[..], "{suite}: B gets plain RTCP");
            peer_b
                .rtcp
                .send_to(&rr(8), SocketAddr::new(LO, to_b.port() + 1))
                .await
                .unwrap();
            let (n, _) = within(peer_a.rtcp.recv_from(&mut buf)).await.unwrap();
            assert_eq!(
                &peer_srtp.unprotect_rtcp(&buf[..n]).unwrap()[..],
                &rr(8)[..]
            );
            let s = stats_when(&bridge, |s| s.a.rtcp == 1 && s.b.rtcp == 1).await;
            assert_eq!(s.a.packets + s.a.unvalidated, 5);
            assert_eq!(
                s.a.bytes,
                s.a.packets * 160,
                "payload bytes counted in the clear"
            );
            assert_eq!((s.a.srtp_failed, s.a.srtcp_failed, s.a.dropped), (0, 0, 0));
        }
    }

    #[tokio::test]
    async fn forged_and_replayed_srtp_is_counted_dropped_and_never_latches() {
        let suite = Suite::AesCm128HmacSha1_32;
        let alloc = PortAllocator::new(LO, range(2));
        let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
        let (peer_a, peer_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
        let (leg_keys, mut peer_srtp) = keys(suite);
        // The intruder knows the suite but not the key.
        let wrong = MasterKey::new(suite, &vec![0x33; suite.key_salt_len()]).unwrap();
        let mut intruder_srtp = SrtpSession::new(&SessionKeys {
            inbound: wrong,
            outbound: wrong,
        })
        .unwrap();
        let cfg_a = LegConfig {
            remote: None,
            latch: Latch::FirstSource,
            clock_rate: 8000,
            srtp: Some(leg_keys),
            media: None,
            hold: false,
        };
        let cfg_b = LegConfig {
            remote: Some(peer_b.rtp.local_addr().unwrap()),
            latch: Latch::Fixed,
            clock_rate: 8000,
            srtp: None,
            media: None,
            hold: false,
        };
        let to_a = SocketAddr::new(LO, leg_a.port);
        let bridge = Bridge::start(leg_a, cfg_a, leg_b, cfg_b, Duration::from_secs(30)).unwrap();
        let intruder = UdpSocket::bind((LO, 0)).await.unwrap();
        // First to arrive, but forged: no latch, nothing forwarded.
        let forged = intruder_srtp.protect_rtp(&rtp(1, 160)).unwrap();
        intruder.send_to(&forged, to_a).await.unwrap();
        // A genuine packet's tag cut short.
        let genuine = peer_srtp.protect_rtp(&rtp(2, 320)).unwrap();
        intruder
            .send_to(&genuine[..genuine.len() - 1], to_a)
            .await
            .unwrap();
        let s = stats_when(&bridge, |s| s.a.srtp_failed == 2).await;
        assert_eq!(s.a.latched, None, "a forged packet must not latch the leg");
        // The genuine packet latches to its sender and is forwarded in the clear.
        peer_a.rtp.send_to(&genuine, to_a).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = within(peer_b.rtp.recv_from(&mut buf)).await.unwrap();
        assert_eq!(&buf[..n], &rtp(2, 320)[..]);
        // Replayed by its own sender: refused.
        peer_a.rtp.send_to(&genuine, to_a).await.unwrap();
        // Forged SRTCP on the RTCP port.
        let forged_rtcp = intruder_srtp.protect_rtcp(&rr(1)).unwrap();
        peer_a
            .rtcp
            .send_to(&forged_rtcp, SocketAddr::new(LO, to_a.port() + 1))
            .await
            .unwrap();
        // The next genuine packet proves the ones before were processed (one task, in order
        // per socket) and that the refusals did not disturb the stream.
        let next = peer_srtp.protect_rtp(&rtp(3, 480)).unwrap();
        peer_a.rtp.send_to(&next, to_a).await.unwrap();
        let (n, _) = within(peer_b.rtp.recv_from(&mut buf)).await.unwrap();
        assert_eq!(&buf[..n], &rtp(3, 480)[..], "the replay was not forwarded");
        let s = stats_when(&bridge, |s| s.a.srtcp_failed == 1).await;
        assert_eq!(s.a.srtp_failed, 3, "forged, truncated, replayed");
        assert_eq!(s.a.latched, Some(peer_a.rtp.local_addr().unwrap()));
        assert_eq!((s.a.rtcp, s.a.dropped), (0, 0));
    }
}

mod update {
    use super::*;
    use media_proto::srtp::{MasterKey, SessionKeys, SrtpSession, Suite};

    fn range(slot: u16) -> PortRange {
        let base = 44000 + (std::process::id() % 1000) as u16 * 16 + slot * 8;
        PortRange::new(base, base + 7).unwrap()
    }

    async fn recv(sock: &UdpSocket) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let (n, _) = within(sock.recv_from(&mut buf)).await.unwrap();
        buf[..n].to_vec()
    }

    /// SRTP keys for the relay's leg (`fill` tells key sets apart) and the peer's session.
    fn keys(fill: u8) -> (SessionKeys, SrtpSession) {
        let suite = Suite::AesCm128HmacSha1_80;
        let peer = MasterKey::new(suite, &vec![fill; suite.key_salt_len()]).unwrap();
        let relay = MasterKey::new(suite, &vec![fill + 1; suite.key_salt_len()]).unwrap();
        let peer_session = SrtpSession::new(&SessionKeys {
            inbound: relay,
            outbound: peer,
        })
        .unwrap();
        (
            SessionKeys {
                inbound: peer,
                outbound: relay,
            },
            peer_session,
        )
    }

    #[tokio::test]
    async fn a_leg_moved_by_reinvite_follows_its_new_address_and_keys() {
        let alloc = PortAllocator::new(LO, range(0));
        let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
        let (to_a, to_b) = (
            SocketAddr::new(LO, leg_a.port),
            SocketAddr::new(LO, leg_b.port),
        );
        let (old_a, new_a) = (
            UdpSocket::bind((LO, 0)).await.unwrap(),
            UdpSocket::bind((LO, 0)).await.unwrap(),
        );
        let peer_b = UdpSocket::bind((LO, 0)).await.unwrap();
        let (keys1, mut srtp1) = keys(0x10);
        let (keys2, mut srtp2) = keys(0x20);
        let cfg_a = LegConfig {
            remote: Some(old_a.local_addr().unwrap()),
            latch: Latch::Fixed,
            srtp: Some(keys1),
            ..LegConfig::default()
        };
        let cfg_b = LegConfig {
            remote: Some(peer_b.local_addr().unwrap()),
            latch: Latch::Fixed,
            ..LegConfig::default()
        };
        let bridge = Bridge::start(leg_a, cfg_a, leg_b, cfg_b, Duration::from_secs(30)).unwrap();
        for seq in 0..3u16 {
            old_a
                .send_to(&srtp1.protect_rtp(&rtp(seq, 0)).unwrap(), to_a)
                .await
                .unwrap();
            assert_eq!(recv(&peer_b).await, rtp(seq, 0));
        }
        // The re-INVITE moves A's media to another socket with new keys.
        let moved = LegConfig {
            remote: Some(new_a.local_addr().unwrap()),
            srtp: Some(keys2),
            ..cfg_a
        };
        bridge.update(false, moved).await.unwrap();
        // The old address, even with the old keys, is no longer heard; the new one is.
        old_a
            .send_to(&srtp1.protect_rtp(&rtp(3, 0)).unwrap(), to_a)
            .await
            .unwrap();
        // Right address, old keys: refused by authentication.
        new_a
            .send_to(&srtp1.protect_rtp(&rtp(4, 0)).unwrap(), to_a)
            .await
            .unwrap();
        for seq in 5..8u16 {
            new_a
                .send_to(&srtp2.protect_rtp(&rtp(seq, 0)).unwrap(), to_a)
                .await
                .unwrap();
            assert_eq!(recv(&peer_b).await, rtp(seq, 0), "in order, nothing before");
        }
        // B → A goes to the new socket under the new keys.
        peer_b.send_to(&rtp(100, 0), to_b).await.unwrap();
        let got = recv(&new_a).await;
        assert_eq!(srtp2.unprotect_rtp(&got).unwrap()[..], rtp(100, 0)[..]);
        let s = bridge.stats().await.unwrap();
        assert_eq!((s.a.dropped, s.a.srtp_failed), (1, 1));
        // A refused update leaves the leg as it was.
        let half = LegConfig {
            media: Some(media_relay::LegMedia::new(
                0,
                media_relay::Codec::PCMU,
                media_relay::DtmfMode::Info,
            )),
            ..moved
        };
        assert!(matches!(
            bridge.update(false, half).await,
            Err(media_relay::Error::Misuse(_))
        ));
        new_a
            .send_to(&srtp2.protect_rtp(&rtp(8, 0)).unwrap(), to_a)
            .await
            .unwrap();
        assert_eq!(recv(&peer_b).await, rtp(8, 0));
    }
}

mod learning {
    use super::*;

    fn range(slot: u16) -> PortRange {
        let base = 46000 + (std::process::id() % 1000) as u16 * 16 + slot * 8;
        PortRange::new(base, base + 7).unwrap()
    }

    async fn recv(sock: &UdpSocket) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let (n, _) = within(sock.recv_from(&mut buf)).await.unwrap();
        buf[..n].to_vec()
    }

    /// Leg A latches to its first source (its SDP address useless, as behind NAT); B is
    /// fixed to `peer_b`.
    async fn setup(slot: u16) -> (Bridge, UdpSocket, SocketAddr, SocketAddr) {
        let alloc = PortAllocator::new(LO, range(slot));
        let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
        let (to_a, to_b) = (
            SocketAddr::new(LO, leg_a.port),
            SocketAddr::new(LO, leg_b.port),
        );
        let peer_b = UdpSocket::bind((LO, 0)).await.unwrap();
        let cfg_a = LegConfig {
            remote: Some("127.0.0.1:9".parse().unwrap()),
            ..LegConfig::default()
        };
        let cfg_b = LegConfig {
            remote: Some(peer_b.local_addr().unwrap()),
            latch: Latch::Fixed,
            ..LegConfig::default()
        };
        let bridge = Bridge::start(leg_a, cfg_a, leg_b, cfg_b, Duration::from_secs(30)).unwrap();
        (bridge, peer_b, to_a, to_b)
    }

    #[tokio::test]
    async fn a_stray_packet_does_not_take_the_latch() {
        let (bridge, peer_b, to_a, to_b) = setup(0).await;
        let stray = UdpSocket::bind((LO, 0)).await.unwrap();
        let peer_a = UdpSocket::bind((LO, 0)).await.unwrap();
        // First to arrive, but one packet proves nothing.
        stray.send_to(&rtp(900, 0), to_a).await.unwrap();
        for seq in 0..6u16 {
            peer_a.send_to(&rtp(seq, 0), to_a).await.unwrap();
            if seq == 4 {
                // Mid-stream, the stray again: dropped, the stream goes on.
                stray.send_to(&rtp(901, 0), to_a).await.unwrap();
            }
        }
        // Peer A's fourth consecutive packet latched it; B sees its stream from there on.
        for seq in 3..6u16 {
            assert_eq!(recv(&peer_b).await, rtp(seq, 0));
        }
        peer_b.send_to(&rtp(100, 0), to_b).await.unwrap();
        assert_eq!(recv(&peer_a).await, rtp(100, 0), "B → A goes to A's source");
        let s = bridge.stats().await.unwrap();
        assert_eq!(s.a.latched, Some(peer_a.local_addr().unwrap()));
        assert_eq!(s.a.dropped, 5, "two strays, three while learning");
    }

    #[tokio::test]
    async fn a_nat_rebinding_is_followed_after_silence() {
        let (bridge, peer_b, to_a, to_b) = setup(1).await;
        let before = UdpSocket::bind((LO, 0)).await.unwrap();
        for seq in 0..4u16 {
            before.send_to(&rtp(seq, 0), to_a).await.unwrap();
        }
        assert_eq!(recv(&peer_b).await, rtp(3, 0));
        // The NAT gives the peer a new port: while the old one still talks, the new source
        // is not learned...
        let after = UdpSocket::bind((LO, 0)).await.unwrap();
        for seq in 4..8u16 {
            after.send_to(&rtp(seq, 0), to_a).await.unwrap();
        }
        before.send_to(&rtp(8, 0), to_a).await.unwrap();
        assert_eq!(
            recv(&peer_b).await,
            rtp(8, 0),
            "the old source keeps the leg"
        );
        // ...but once the old port has been silent for RELATCH_SILENCE (waiting out the
        // protocol's timer, not synchronizing), it is, by the same learning rule.
        tokio::time::sleep(media_relay::RELATCH_SILENCE + Duration::from_millis(100)).await;
        for seq in 9..13u16 {
            after.send_to(&rtp(seq, 0), to_a).await.unwrap();
        }
        assert_eq!(recv(&peer_b).await, rtp(12, 0));
        peer_b.send_to(&rtp(100, 0), to_b).await.unwrap();
        assert_eq!(
            recv(&after).await,
            rtp(100, 0),
            "B → A follows the new port"
        );
        let s = bridge.stats().await.unwrap();
        assert_eq!(s.a.latched, Some(after.local_addr().unwrap()));
        assert_eq!(s.a.dropped, 3 + 4 + 3);
    }
}

mod rtcp {
    use super::*;

    fn range(slot: u16) -> PortRange {
        let base = 48000 + (std::process::id() % 1000) as u16 * 16 + slot * 8;
        PortRange::new(base, base + 7).unwrap()
    }

    #[tokio::test]
    async fn rtcp_is_latched_apart_from_rtp_and_refused_from_elsewhere() {
        let alloc = PortAllocator::new(LO, range(0));
        let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
        let (peer_a, peer_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
        let to_a = SocketAddr::new(LO, leg_a.port);
        let (rtcp_a, rtcp_b) = (
            SocketAddr::new(LO, leg_a.port + 1),
            SocketAddr::new(LO, leg_b.port + 1),
        );
        let cfg_a = LegConfig {
            remote: Some(peer_a.rtp.local_addr().unwrap()),
            ..LegConfig::default()
        };
        let cfg_b = LegConfig {
            remote: Some(peer_b.rtp.local_addr().unwrap()),
            latch: Latch::Fixed,
            ..LegConfig::default()
        };
        let bridge = Bridge::start(leg_a, cfg_a, leg_b, cfg_b, Duration::from_secs(30)).unwrap();
        let mut buf = [0u8; 2048];
        // Another host (all of 127/8 is loopback on Linux), before anything is latched.
        let other_host = UdpSocket::bind(("127.0.0.2", 0)).await.unwrap();
        other_host.send_to(&rr(1), rtcp_a).await.unwrap();
        peer_a.rtp.send_to(&rtp(0, 0), to_a).await.unwrap();
        within(peer_b.rtp.recv_from(&mut buf)).await.unwrap();
        // A's NAT maps its RTCP to a port that is not its RTP port + 1: latched there.
        let nat_rtcp = UdpSocket::bind((LO, 0)).await.unwrap();
        nat_rtcp.send_to(&rr(2), rtcp_a).await.unwrap();
        let (n, _) = within(peer_b.rtcp.recv_from(&mut buf)).await.unwrap();
        assert_eq!(&buf[..n], &rr(2)[..]);
        peer_b.rtcp.send_to(&rr(3), rtcp_b).await.unwrap();
        let (n, _) = within(nat_rtcp.recv_from(&mut buf)).await.unwrap();
        assert_eq!(
            &buf[..n],
            &rr(3)[..],
            "B's RTCP goes to A's latched RTCP source"
        );
        // Another port of the peer's host, and another host: both refused.
        let other_port = UdpSocket::bind((LO, 0)).await.unwrap();
        other_port.send_to(&rr(4), rtcp_a).await.unwrap();
        other_host.send_to(&rr(5), rtcp_a).await.unwrap();
        nat_rtcp.send_to(&rr(6), rtcp_a).await.unwrap();
        let (n, _) = within(peer_b.rtcp.recv_from(&mut buf)).await.unwrap();
        assert_eq!(
            &buf[..n],
            &rr(6)[..],
            "nothing from elsewhere was forwarded"
        );
        let s = bridge.stats().await.unwrap();
        assert_eq!((s.a.rtcp, s.a.dropped), (2, 3));
    }

    fn rr(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 201, 0, 1];
        p.extend(ssrc.to_be_bytes());
        p
    }
}

mod hold {
    use super::*;

    fn range(slot: u16) -> PortRange {
        let base = 50000 + (std::process::id() % 1000) as u16 * 8 + slot * 8;
        PortRange::new(base, base + 7).unwrap()
    }

    fn rr(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 201, 0, 1];
        p.extend(ssrc.to_be_bytes());
        p
    }

    /// In real time, with a timeout of 300 ms and packets paced every 50 ms: a silent leg on
    /// hold, then a leg sending only RTCP, keep the bridge up; the other leg falling silent
    /// ends it.
    #[tokio::test]
    async fn a_held_leg_and_rtcp_keep_the_bridge_up_and_silence_ends_it() {
        let alloc = PortAllocator::new(LO, range(0));
        let (leg_a, leg_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
        let (peer_a, peer_b) = (alloc.allocate().unwrap(), alloc.allocate().unwrap());
        let (to_b, rtcp_a) = (
            SocketAddr::new(LO, leg_b.port),
            SocketAddr::new(LO, leg_a.port + 1),
        );
        let held = LegConfig {
            remote: Some(peer_a.rtp.local_addr().unwrap()),
            latch: Latch::Fixed,
            hold: true,
            ..LegConfig::default()
        };
        let cfg_b = LegConfig {
            remote: Some(peer_b.rtp.local_addr().unwrap()),
            latch: Latch::Fixed,
            ..LegConfig::default()
        };
        let mut bridge =
            Bridge::start(leg_a, held, leg_b, cfg_b, Duration::from_millis(300)).unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut buf = [0u8; 2048];
        // 700 ms of A silent on hold: B's packets keep arriving.
        for seq in 0..14u16 {
            tick.tick().await;
            peer_b.rtp.send_to(&rtp(seq, 0), to_b).await.unwrap();
            let (n, _) = within(peer_a.rtp.recv_from(&mut buf)).await.unwrap();
            assert_eq!(&buf[..n], &rtp(seq, 0)[..], "the bridge is up");
        }
        // Off hold, A sends only RTCP: that is liveness too.
        let resumed = LegConfig {
            hold: false,
            ..held
        };
        bridge.update(false, resumed).await.unwrap();
        for seq in 14..28u16 {
            tick.tick().await;
            peer_a.rtcp.send_to(&rr(1), rtcp_a).await.unwrap();
            peer_b.rtp.send_to(&rtp(seq, 0), to_b).await.unwrap();
            let (n, _) = within(peer_a.rtp.recv_from(&mut buf)).await.unwrap();
            assert_eq!(&buf[..n], &rtp(seq, 0)[..], "the bridge is up");
        }
        // B falls silent, not on hold: the bridge ends for B's silence, A's RTCP or not.
        let end = within(async {
            loop {
                tokio::select! {
                    end = bridge.ended() => return end,
                    _ = tick.tick() => peer_a.rtcp.send_to(&rr(1), rtcp_a).await.unwrap(),
                };
            }
        })
        .await;
        assert_eq!(end, media_relay::BridgeEnd::Timeout { leg_b: true });
    }
}
