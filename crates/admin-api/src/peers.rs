//! `/api/v1/sip-peers`: PBXs and SIP cores we exchange calls with.

use crate::AdminState;
use crate::common::{List, Paging, string_enum, yes};
use crate::crud::{Document, crud_handlers};
use crate::error::Error;
use crate::extract::{Json, Query};
use crate::secret::{Mode, SecretValue};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use store::Scope;
use store::peer::{
    self as model, DtmfMode, PlusHandling, RegistrationMode, SipTransport, SrtpMode,
};
use utoipa::{IntoParams, ToSchema};

pub(crate) const TAG: &str = "sip-peers";

fn transport_schema() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    string_enum(&["udp", "tcp", "tls"])
}
fn registration_schema() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    string_enum(&["none", "inbound", "outbound"])
}
fn dtmf_schema() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    string_enum(&["rfc4733", "info"])
}
fn srtp_schema() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    string_enum(&["off", "optional", "required"])
}
fn plus_schema() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    string_enum(&["keep", "strip"])
}

/// SIP digest credentials.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DigestCredentials {
    pub username: String,
    /// Write-only: responses show `"***"`; `"***"` in an update keeps the stored password.
    pub password: SecretValue,
}

/// How the peer's numbers map to and from E.164.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberRules {
    /// Country code (digits) prefixed to national numbers from the peer, e.g. "1" or "44".
    pub country_code: Option<String>,
    /// National trunk prefix stripped before adding the country code, e.g. "0".
    pub national_prefix: Option<String>,
    /// What to do with a leading '+' toward the peer.
    #[schema(schema_with = plus_schema)]
    pub plus: PlusHandling,
    /// Technical prefix the peer puts before (and expects before) numbers, e.g. "9#".
    pub tech_prefix: Option<String>,
}

impl Default for NumberRules {
    fn default() -> Self {
        NumberRules::from(model::NumberRules::default())
    }
}

impl From<model::NumberRules> for NumberRules {
    fn from(r: model::NumberRules) -> Self {
        NumberRules {
            country_code: r.country_code,
            national_prefix: r.national_prefix,
            plus: r.plus,
            tech_prefix: r.tech_prefix,
        }
    }
}

impl From<NumberRules> for model::NumberRules {
    fn from(r: NumberRules) -> Self {
        model::NumberRules {
            country_code: r.country_code,
            national_prefix: r.national_prefix,
            plus: r.plus,
            tech_prefix: r.tech_prefix,
        }
    }
}

/// A SIP peer (request and response document; `id` and the timestamps are read-only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SipPeer {
    #[serde(default)]
    #[schema(read_only)]
    pub id: String,
    /// Unique name.
    #[schema(example = "pbx-berlin")]
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[schema(schema_with = transport_schema)]
    pub transport: SipTransport,
    /// Where to send requests: `host`, `host:port` or `[v6]:port`; tried in order.
    pub addresses: Vec<String>,
    /// Source addresses (IP or CIDR) accepted from this peer; empty means `addresses` only.
    #[serde(default)]
    pub allow_list: Vec<String>,
    /// Credentials the peer must answer our challenges with.
    pub inbound_auth: Option<DigestCredentials>,
    /// Credentials we answer the peer's challenges (and register) with.
    pub outbound_auth: Option<DigestCredentials>,
    #[schema(schema_with = registration_schema)]
    pub registration: RegistrationMode,
    #[schema(schema_with = dtmf_schema)]
    pub dtmf: DtmfMode,
    /// Codec names in preference order (`PCMU`, `PCMA`, `opus`, …).
    pub codecs: Vec<String>,
    #[schema(schema_with = srtp_schema)]
    pub srtp: SrtpMode,
    #[serde(default)]
    pub number_rules: NumberRules,
    pub max_cps: Option<u32>,
    pub max_concurrent: Option<u32>,
    /// OPTIONS keep-alive period in seconds; absent disables the health check.
    pub options_interval_s: Option<u32>,
    /// Creation time, epoch milliseconds.
    #[serde(default)]
    #[schema(read_only)]
    pub created_at: i64,
    /// Last change, epoch milliseconds.
    #[serde(default)]
    #[schema(read_only)]
    pub updated_at: i64,
}

fn creds_view(c: Option<model::DigestCredentials>) -> Option<DigestCredentials> {
    c.map(|c| DigestCredentials {
        username: c.username,
        password: SecretValue::masked(),
    })
}

impl From<model::SipPeer> for SipPeer {
    fn from(p: model::SipPeer) -> Self {
        SipPeer {
            id: p.id,
            name: p.name,
            enabled: p.enabled,
            transport: p.transport,
            addresses: p.addresses,
            allow_list: p.allow_list,
            inbound_auth: creds_view(p.inbound_auth),
            outbound_auth: creds_view(p.outbound_auth),
            registration: p.registration,
            dtmf: p.dtmf,
            codecs: p.codecs,
            srtp: p.srtp,
            number_rules: p.number_rules.into(),
            max_cps: p.max_cps,
            max_concurrent: p.max_concurrent,
            options_interval_s: p.options_interval_s,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

impl Document for SipPeer {
    type Model = model::SipPeer;
    const COLLECTION: &'static str = "sip-peers";

    fn repo(store: &store::Store) -> store::Repo<'_, model::SipPeer> {
        store.sip_peers()
    }

    fn from_model(m: model::SipPeer) -> Self {
        m.into()
    }

    fn keeps_a_secret(&self) -> bool {
        [&self.inbound_auth, &self.outbound_auth]
            .iter()
            .any(|a| a.as_ref().is_some_and(|a| a.password.is_keep()))
    }

    fn into_model(self, mode: Mode<'_, model::SipPeer>) -> Result<model::SipPeer, Error> {
        let creds = |field: &str,
                     c: Option<DigestCredentials>,
                     stored: fn(&model::SipPeer) -> Option<&store::Secret>|
         -> Result<Option<model::DigestCredentials>, Error> {
            c.map(|c| {
                Ok(model::DigestCredentials {
                    password: mode.secret(&c.password, &format!("{field}.password"), stored)?,
                    username: c.username,
                })
            })
            .transpose()
        };
        Ok(model::SipPeer {
            inbound_auth: creds("inbound_auth", self.inbound_auth, |p| {
                p.inbound_auth.as_ref().map(|a| &a.password)
            })?,
            outbound_auth: creds("outbound_auth", self.outbound_auth, |p| {
                p.outbound_auth.as_ref().map(|a| &a.password)
            })?,
            id: String::new(),
            name: self.name,
            enabled: self.enabled,
            transport: self.transport,
            addresses: self.addresses,
            allow_list: self.allow_list,
            registration: self.registration,
            dtmf: self.dtmf,
            codecs: self.codecs,
            srtp: self.srtp,
            number_rules: self.number_rules.into(),
            max_cps: self.max_cps,
            max_concurrent: self.max_concurrent,
            options_interval_s: self.options_interval_s,
            created_at: 0,
            updated_at: 0,
        })
    }
}

/// Paging and filters of `GET /sip-peers`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PeerQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u64>,
    /// Only the peer with this exact name.
    pub name: Option<String>,
}

/// List SIP peers in creation order.
#[utoipa::path(get, path = "/sip-peers", tag = TAG, params(PeerQuery),
    responses((status = 200, description = "A page of peers", body = List<SipPeer>)))]
pub(crate) async fn list(
    State(s): State<AdminState>,
    Query(q): Query<PeerQuery>,
) -> Result<Json<List<SipPeer>>, Error> {
    let paging = Paging {
        limit: q.limit,
        offset: q.offset,
    };
    let page = paging.page()?;
    let repo = s.store.sip_peers();
    let items = match q.name {
        Some(name) => s
            .metrics
            .time_db("sip_peers.find_by_name", repo.find_by_name(&name))
            .await?
            .into_iter()
            .filter(|_| page.offset == 0)
            .collect(),
        None => {
            s.metrics
                .time_db("sip_peers.list", repo.list(&Scope::Admin, page))
                .await?
        }
    };
    Ok(Json(
        paging.list(items.into_iter().map(SipPeer::from).collect())?,
    ))
}

crud_handlers!(
    SipPeer,
    "sip-peers",
    "/sip-peers",
    "/sip-peers/{id}",
    "sip_peers"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_schemas_match_the_store() {
        let check = |json: &str| serde_json::from_str::<serde_json::Value>(json).is_ok();
        for v in ["udp", "tcp", "tls"] {
            assert!(
                serde_json::from_value::<SipTransport>(v.into()).is_ok(),
                "{v}"
            );
        }
        for v in ["none", "inbound", "outbound"] {
            assert!(
                serde_json::from_value::<RegistrationMode>(v.into()).is_ok(),
                "{v}"
            );
        }
        for v in ["rfc4733", "info"] {
            assert!(serde_json::from_value::<DtmfMode>(v.into()).is_ok(), "{v}");
        }
        for v in ["off", "optional", "required"] {
            assert!(serde_json::from_value::<SrtpMode>(v.into()).is_ok(), "{v}");
        }
        for v in ["keep", "strip"] {
            assert!(
                serde_json::from_value::<PlusHandling>(v.into()).is_ok(),
                "{v}"
            );
        }
        assert!(check("{}"));
    }
}
