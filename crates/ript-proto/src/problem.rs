use serde::{Deserialize, Serialize};

/// Prefix of every problem `type` this implementation emits; the profile fixes only the
/// last path segment (ript-profile §9), recorded in docs/protocol.md.
pub const TYPE_PREFIX: &str = "urn:ript:problem:";

/// RFC 9457 problem details, as every RIPT error body carries (ript-profile §1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Problem {
    pub fn new(status: u16, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("{TYPE_PREFIX}{kind}"),
            title: title.to_owned(),
            status,
            detail: detail.into(),
        }
    }

    /// The last segment of `type`, as the profile names it (`unknown-handler`, ...).
    pub fn short_type(&self) -> &str {
        self.kind.rsplit([':', '/']).next().unwrap_or(&self.kind)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

pub const CONTENT_TYPE: &str = "application/problem+json";
