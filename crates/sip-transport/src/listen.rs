//! Listener specs (`udp:127.0.0.1:5060`, `tcp:[::1]:5060`).

use crate::Error;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
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
