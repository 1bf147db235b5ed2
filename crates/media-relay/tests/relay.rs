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
    };
    let cfg_b = LegConfig {
        remote: Some(peer_b.local_addr().unwrap()),
        latch: Latch::Fixed,
        clock_rate: 8000,
    };
    let bridge = Bridge::start(leg_a, cfg_a, leg_b, cfg_b, Duration::from_secs(30));
    let to_a = SocketAddr::new(LO, port_a);
    let to_b = SocketAddr::new(LO, port_b);
    let mut buf = [0u8; 2048];
    // 10 packets A → B with seq 3 and 4 missing.
    for seq in (0..12u16).filter(|s| *s != 3 && *s != 4) {
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
    peer_a.send_to(&rtp(12, 12 * 160), to_a).await.unwrap();
    let (n, _) = within(peer_b.recv_from(&mut buf)).await.unwrap();
    assert_eq!(
        &buf[2..4],
        &12u16.to_be_bytes()[..],
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
    assert_eq!(s.a.dropped, 2, "the intruder's packet and the garbage");
    assert_eq!(
        s.a.unvalidated, 1,
        "the first packet was forwarded while on probation"
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
    };
    let mut bridge = Bridge::start(leg_a, cfg, leg_b, cfg, Duration::from_millis(200));
    let end = within(bridge.ended()).await;
    assert!(
        matches!(end, media_relay::BridgeEnd::Timeout { .. }),
        "{end:?}"
    );
}
