//! Types shared by several resources.

use serde::{Deserialize, Serialize};

/// What kind of thing an [`Endpoint`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    SipPeer,
    Upstream,
    HostedTg,
}

/// A call source or target: a SIP peer, a RIPT upstream or a hosted TG, by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub kind: EndpointKind,
    pub id: String,
}
