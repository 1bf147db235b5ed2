//! Field checks shared by the resources (`Error::Invalid { field, reason }`).

use crate::error::{Error, Result};
use std::net::IpAddr;
use std::str::FromStr;

pub(crate) fn name(field: &'static str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if s.chars().count() > 200 {
        return Err(Error::invalid(field, "longer than 200 characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(())
}

pub(crate) fn e164(field: &'static str, s: &str) -> Result<()> {
    if ript_proto::pattern::is_e164(s) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "not an E.164 number (+ and 1-15 digits)",
        ))
    }
}

/// A RIPT number pattern (ript-profile §3), e.g. `+1408*,!+14085551212`.
pub(crate) fn pattern(field: &'static str, s: &str) -> Result<()> {
    ript_proto::pattern::NumberPattern::from_str(s)
        .map(|_| ())
        .map_err(|e| Error::invalid(field, e.to_string()))
}

/// An absolute `https://` URL with a host (RIPT runs over HTTP/3, so only https).
pub(crate) fn https_url(field: &'static str, s: &str) -> Result<()> {
    let uri = http::Uri::from_str(s).map_err(|e| Error::invalid(field, e.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(Error::invalid(field, "scheme must be https"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(Error::invalid(field, "missing host"));
    }
    Ok(())
}

/// An IP address or CIDR block (`192.0.2.0/24`, `2001:db8::/32`).
pub(crate) fn cidr(field: &'static str, s: &str) -> Result<()> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip = IpAddr::from_str(addr)
        .map_err(|_| Error::invalid(field, format!("{s:?} is not an IP address or CIDR")))?;
    if let Some(l) = len {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match l.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => {
                return Err(Error::invalid(
                    field,
                    format!("{s:?} has a bad prefix length"),
                ));
            }
        }
    }
    Ok(())
}

/// `host`, `host:port`, `[v6]:port`: no spaces, no scheme, port in range.
pub(crate) fn host_port(field: &'static str, s: &str) -> Result<()> {
    let bad = || Error::invalid(field, format!("{s:?} is not host or host:port"));
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return Err(bad());
    }
    let port = if let Some(rest) = s.strip_prefix('[') {
        let (_, after) = rest.split_once(']').ok_or_else(bad)?;
        after.strip_prefix(':')
    } else if s.matches(':').count() == 1 {
        s.split_once(':').map(|(_, p)| p)
    } else if s.contains(':') {
        // A bare IPv6 address.
        IpAddr::from_str(s).map_err(|_| bad())?;
        None
    } else {
        None
    };
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(bad()),
        }
    }
    Ok(())
}

pub(crate) fn pem(field: &'static str, s: &str) -> Result<()> {
    if s.contains("-----BEGIN ") && s.contains("-----END ") {
        Ok(())
    } else {
        Err(Error::invalid(field, "not PEM"))
    }
}

/// A positive cap stored as BIGINT.
pub(crate) fn cap(field: &'static str, v: Option<u32>) -> Result<()> {
    match v {
        Some(0) => Err(Error::invalid(
            field,
            "must be at least 1 (omit it for no limit)",
        )),
        _ => Ok(()),
    }
}

/// A token of RFC 3261 / SDP-safe characters (codec names, usernames).
pub(crate) fn token(field: &'static str, s: &str) -> Result<()> {
    if !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!%*+`'~@".contains(&b))
    {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{s:?} has characters outside a SIP token"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        assert!(e164("n", "+14085551212").is_ok());
        assert!(e164("n", "14085551212").is_err());
        assert!(pattern("p", "+1408*,!+14085551212").is_ok());
        assert!(pattern("p", "+1408x").is_err());
        assert!(https_url("u", "https://ript.example/tg").is_ok());
        assert!(https_url("u", "http://ript.example/tg").is_err());
        assert!(https_url("u", "not a url").is_err());
        assert!(cidr("c", "192.0.2.0/24").is_ok());
        assert!(cidr("c", "2001:db8::/129").is_err());
        assert!(host_port("a", "pbx.example:5060").is_ok());
        assert!(host_port("a", "[2001:db8::1]:5061").is_ok());
        assert!(host_port("a", "2001:db8::1").is_ok());
        assert!(host_port("a", "pbx.example:0").is_err());
        assert!(host_port("a", "sip:pbx").is_err());
    }
}
