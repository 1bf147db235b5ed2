//! The JSON objects of ript-profile §3; field names are exact.

use crate::Error;
use crate::pattern::NumberPattern;
use serde::{Deserialize, Serialize};

/// Default of `retry-backoff` in ms, also its floor (ript-profile §3, §9).
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 2000;
pub const DEFAULT_MEDIA_TIMEOUT_MS: u64 = 5000;
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 1000;

/// One TG in `GET {root}/providertgs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TgSummary {
    pub uri: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderTgs {
    pub providertgs: Vec<TgSummary>,
}

/// `outbound` / `inbound` policy of a TG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// PEM of the server's RFC 8226 certificate, when it vouches for callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origins: Option<String>,
    pub destinations: NumberPattern,
}

/// A trunk group description (ript-profile §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tg {
    pub uri: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub outbound: Policy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Policy>,
    pub advertisement: String,
    #[serde(
        rename = "retry-backoff",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_backoff: Option<u64>,
    #[serde(
        rename = "media-timeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub media_timeout: Option<u64>,
    #[serde(
        rename = "ack-timeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ack_timeout: Option<u64>,
}

impl Tg {
    pub fn timers(&self) -> CallTimers {
        CallTimers {
            retry_backoff_ms: self
                .retry_backoff
                .unwrap_or(DEFAULT_RETRY_BACKOFF_MS)
                .max(DEFAULT_RETRY_BACKOFF_MS),
            media_timeout_ms: self
                .media_timeout
                .unwrap_or(DEFAULT_MEDIA_TIMEOUT_MS)
                .max(1),
            ack_timeout_ms: self.ack_timeout.unwrap_or(DEFAULT_ACK_TIMEOUT_MS).max(1),
        }
    }
}

/// The per-TG timer values after defaults and floors (ript-profile §3, §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimers {
    pub retry_backoff_ms: u64,
    pub media_timeout_ms: u64,
    pub ack_timeout_ms: u64,
}

impl Default for CallTimers {
    fn default() -> Self {
        CallTimers {
            retry_backoff_ms: DEFAULT_RETRY_BACKOFF_MS,
            media_timeout_ms: DEFAULT_MEDIA_TIMEOUT_MS,
            ack_timeout_ms: DEFAULT_ACK_TIMEOUT_MS,
        }
    }
}

/// A handler registration; `uri` is added by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handler {
    #[serde(rename = "handler-id")]
    pub handler_id: String,
    pub advertisement: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationPolicy {
    pub destinations: NumberPattern,
}

/// A customer's own TG registered for inbound calls (ript-inbound).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerTg {
    pub tg: String,
    pub token: String,
    pub outbound: DestinationPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// Body of `POST {tg}/calls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCreate {
    pub handler: String,
    pub destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passport: Option<String>,
}

/// Body of `POST {call}`: empty asks for a new directive, `handler` changes the handler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallDirection {
    Outbound,
    Inbound,
}

/// `GET {call}` and the answer to call creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallDescription {
    pub uri: String,
    pub handler: String,
    pub direction: CallDirection,
    pub from: String,
    pub to: String,
    pub state: String,
    #[serde(rename = "clientDirectives")]
    pub client_directives: String,
    #[serde(rename = "serverDirectives")]
    pub server_directives: String,
    /// Present once the call is in a final state (ript-profile §9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// Diagnostic cause of a final state (ript-profile §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Reason {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Reason {
    pub fn sip(code: u16, text: &str) -> Self {
        Reason {
            sip: Some(code),
            text: Some(text.to_owned()),
        }
    }
}

/// Parses a JSON request body with the profile's 64 KiB cap.
pub fn parse_json_body<T: serde::de::DeserializeOwned>(
    what: &'static str,
    body: &[u8],
) -> Result<T, Error> {
    if body.len() > crate::limits::JSON_BODY {
        return Err(Error::TooLarge {
            what,
            limit: crate::limits::JSON_BODY,
        });
    }
    serde_json::from_slice(body).map_err(|source| Error::Json { what, source })
}

impl CallCreate {
    /// Shape checks beyond JSON: the destination is E.164 or `number@domain`.
    pub fn validate(&self) -> Result<(), Error> {
        if !(crate::pattern::is_e164(&self.destination)
            || crate::pattern::is_number_at_domain(&self.destination))
        {
            return Err(Error::Invalid {
                what: "destination",
                reason: "not an E.164 number or number@domain",
            });
        }
        if self.handler.is_empty() {
            return Err(Error::Invalid {
                what: "handler",
                reason: "empty",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tg_field_names_are_exact_and_defaults_apply() {
        let json = r#"{"uri":"https://a/tg","name":"t","description":"d",
            "outbound":{"destinations":"*,!+1900*"},
            "advertisement":"1 in: PCMU;","retry-backoff":500}"#;
        let tg: Tg = serde_json::from_str(json).unwrap();
        let t = tg.timers();
        assert_eq!(t.retry_backoff_ms, 2000, "floor of 2000 ms");
        assert_eq!(t.media_timeout_ms, 5000);
        assert_eq!(t.ack_timeout_ms, 1000);
        let back = serde_json::to_value(&tg).unwrap();
        assert_eq!(back["retry-backoff"], 500);
        assert_eq!(back["outbound"]["destinations"], "*,!+1900*");
    }

    #[test]
    fn call_description_uses_camel_case_directives() {
        let d = CallDescription {
            uri: "u".into(),
            handler: "h".into(),
            direction: CallDirection::Outbound,
            from: "+1".into(),
            to: "+2".into(),
            state: "proceeding".into(),
            client_directives: "1 to 1: PCMU;".into(),
            server_directives: String::new(),
            reason: None,
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["clientDirectives"], "1 to 1: PCMU;");
        assert_eq!(v["direction"], "outbound");
        assert!(v.get("reason").is_none());
    }

    #[test]
    fn oversized_and_malformed_bodies_are_typed_errors() {
        let big = vec![b' '; crate::limits::JSON_BODY + 1];
        assert!(matches!(
            parse_json_body::<CallCreate>("call", &big),
            Err(Error::TooLarge { .. })
        ));
        let e = parse_json_body::<CallCreate>("call", b"{\"handler\":1}").unwrap_err();
        assert_eq!(e.problem().status, 400);
        let c = CallCreate {
            handler: "h".into(),
            destination: "nope".into(),
            passport: None,
        };
        assert!(c.validate().is_err());
    }
}
