//! Listener specs (`udp:127.0.0.1:5060`, `tcp:[::1]:5060`, `tls:127.0.0.1:5061`) and targets.

use crate::Error;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The Via transport token (RFC 3261 §20.42).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// Whether messages travel on a connection (framed by Content-Length, RFC 3261 §18.3).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// RFC 3261 §19.1.2: 5060 for UDP and TCP, 5061 for TLS.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Udp | Transport::Tcp => 5060,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl std::str::FromStr for Listen {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (t, addr) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| Error::ListenSpec(s.to_owned()))?;
        let transport = match t.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => return Err(Error::ListenSpec(s.to_owned())),
        };
        let addr = addr.parse().map_err(|_| Error::ListenSpec(s.to_owned()))?;
        Ok(Listen { transport, addr })
    }
}

impl Listen {
    /// A comma-separated list (`RIPT_SIP_LISTEN`).
    pub fn parse_list(s: &str) -> Result<Vec<Listen>, Error> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect()
    }
}

/// Where an outgoing request or ACK goes. The caller resolves names (RFC 3263) itself: the
/// endpoint never looks up a host taken from a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// TLS only: the name the server's certificate must carry (and the SNI); without one the
    /// certificate must carry `addr`'s IP address.
    pub server_name: Option<String>,
}

impl Target {
    pub fn new(transport: Transport, addr: SocketAddr) -> Self {
        Target {
            transport,
            addr,
            server_name: None,
        }
    }

    #[must_use]
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_transport_and_ipv6() {
        let l =
            Listen::parse_list("udp:127.0.0.1:5060, tcp:[::1]:5060,TLS:127.0.0.1:5061").unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].transport, Transport::Udp);
        assert_eq!(l[1].transport, Transport::Tcp);
        assert_eq!(l[1].addr, "[::1]:5060".parse().unwrap());
        assert_eq!(l[2].transport, Transport::Tls);
        assert_eq!(l[2].addr.port(), 5061);
    }

    #[test]
    fn rejects_unknown_transport_and_bad_address() {
        assert!("sctp:127.0.0.1:5060".parse::<Listen>().is_err());
        assert!("tls:localhost:5061".parse::<Listen>().is_err());
        assert!("tls".parse::<Listen>().is_err());
    }
}
