//! RTP/RTCP port pairs (RFC 3550 §11: RTP on an even port, RTCP on the next odd one).

use crate::Error;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn new(start: u16, end: u16) -> Result<Self, Error> {
        if !start.is_multiple_of(2) || end <= start || start == 0 {
            return Err(Error::BadRange { start, end });
        }
        Ok(PortRange { start, end })
    }

    fn pairs(&self) -> u32 {
        (u32::from(self.end) - u32::from(self.start)).div_ceil(2)
    }
}

/// Hands out port pairs round-robin (a port just freed is not reused at once, so late
/// packets of an old call do not reach a new one).
#[derive(Debug, Clone)]
pub struct PortAllocator {
    inner: Arc<Mutex<Inner>>,
    ip: IpAddr,
    range: PortRange,
}

#[derive(Debug)]
struct Inner {
    next: u16,
    in_use: HashSet<u16>,
}

/// One allocated pair; the ports return to the pool when it is dropped.
#[derive(Debug)]
pub struct RtpPair {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub port: u16,
    pool: Arc<Mutex<Inner>>,
}

impl Drop for RtpPair {
    fn drop(&mut self) {
        lock(&self.pool).in_use.remove(&self.port);
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A UDP socket with 4 MiB buffers (best effort) for the media path.
pub(crate) fn udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

impl PortAllocator {
    pub fn new(ip: IpAddr, range: PortRange) -> Self {
        PortAllocator {
            inner: Arc::new(Mutex::new(Inner {
                next: range.start,
                in_use: HashSet::new(),
            })),
            ip,
            range,
        }
    }

    pub fn in_use(&self) -> usize {
        lock(&self.inner).in_use.len()
    }

    /// Binds the next free pair; ports taken by other processes are skipped.
    pub fn allocate(&self) -> Result<RtpPair, Error> {
        for _ in 0..self.range.pairs() {
            let port = {
                let mut g = lock(&self.inner);
                let p = g.next;
                g.next = if p.saturating_add(2) > self.range.end.saturating_sub(1) {
                    self.range.start
                } else {
                    p + 2
                };
                if g.in_use.contains(&p) {
                    continue;
                }
                g.in_use.insert(p);
                p
            };
            let rtp = udp(SocketAddr::new(self.ip, port));
            let rtcp = udp(SocketAddr::new(self.ip, port + 1));
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => {
                    return Ok(RtpPair {
                        rtp,
                        rtcp,
                        port,
                        pool: self.inner.clone(),
                    });
                }
                _ => {
                    lock(&self.inner).in_use.remove(&port);
                }
            }
        }
        Err(Error::Exhausted {
            start: self.range.start,
            end: self.range.end,
        })
    }
}
