//! `/api/v1/upstreams`: RIPT trunk groups we call as a client.

use crate::AdminState;
use crate::common::{List, Paging, string_enum, yes};
use crate::crud::{Document, crud_handlers};
use crate::error::Error;
use crate::extract::{Json, Query};
use crate::secret::{Mode, SecretValue};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use store::upstream::{self as model, MediaMode};
use utoipa::ToSchema;

fn media_mode_schema() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    string_enum(&["auto", "datagrams", "byways"])
}

/// How we authenticate to the upstream. Secrets are write-only.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpstreamAuth {
    None,
    /// A static bearer token.
    Token {
        token: SecretValue,
    },
    /// OAuth 2.0 client credentials grant.
    OauthClient {
        token_url: String,
        client_id: String,
        client_secret: SecretValue,
        scope: Option<String>,
    },
}

/// Our own customer TG, registered with the upstream on start-up and after every change
/// (`POST {root}/customertgs`, ript-inbound) so that the upstream can call us on it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamCustomerTg {
    /// The hosted TG (id) of this gateway the upstream's calls arrive on; its URL is
    /// registered.
    pub hosted_tg_id: String,
    /// Write-only token the upstream presents on that TG: issue it with
    /// `POST /hosted-tgs/{id}/credentials`.
    pub token: SecretValue,
    /// Destinations we take calls for (RIPT number pattern); `*` when absent.
    #[serde(default = "any_destination")]
    pub destinations: String,
}

fn any_destination() -> String {
    "*".to_owned()
}

/// A RIPT upstream (request and response document; `id` and the timestamps are read-only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    #[serde(default)]
    #[schema(read_only)]
    pub id: String,
    /// Unique name.
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The RIPT root (`https://…`).
    pub root_url: String,
    /// The trunk group selected under that root.
    pub trunk_group: String,
    pub auth: UpstreamAuth,
    /// PEM certificates trusted for this upstream instead of the system roots.
    pub trust_anchors_pem: Option<String>,
    /// Client certificate (PEM) for mutual TLS, with its key.
    pub client_cert_pem: Option<String>,
    /// Write-only PEM private key of `client_cert_pem`.
    pub client_key_pem: Option<SecretValue>,
    #[schema(schema_with = media_mode_schema)]
    pub media_mode: MediaMode,
    /// Write-only end-to-end media key (base64).
    pub media_key: Option<SecretValue>,
    pub max_cps: Option<u32>,
    pub max_concurrent: Option<u32>,
    /// Our customer TG to register with the upstream, when it may call us.
    #[serde(default)]
    pub customer_tg: Option<UpstreamCustomerTg>,
    #[serde(default)]
    #[schema(read_only)]
    pub created_at: i64,
    #[serde(default)]
    #[schema(read_only)]
    pub updated_at: i64,
}

fn masked<T>(v: &Option<T>) -> Option<SecretValue> {
    v.as_ref().map(|_| SecretValue::masked())
}

/// The stored secret of the upstream's auth, if it has one.
fn stored_auth(m: &model::RiptUpstream) -> Option<&store::Secret> {
    match &m.auth {
        model::UpstreamAuth::Token { token } => Some(token),
        model::UpstreamAuth::OauthClient { client_secret, .. } => Some(client_secret),
        model::UpstreamAuth::None => None,
    }
}

impl Document for Upstream {
    type Model = model::RiptUpstream;
    const COLLECTION: &'static str = "upstreams";

    fn repo(store: &store::Store) -> store::Repo<'_, Self::Model> {
        store.ript_upstreams()
    }

    fn from_model(u: Self::Model) -> Self {
        Upstream {
            auth: match &u.auth {
                model::UpstreamAuth::None => UpstreamAuth::None,
                model::UpstreamAuth::Token { .. } => UpstreamAuth::Token {
                    token: SecretValue::masked(),
                },
                model::UpstreamAuth::OauthClient {
                    token_url,
                    client_id,
                    scope,
                    ..
                } => UpstreamAuth::OauthClient {
                    token_url: token_url.clone(),
                    client_id: client_id.clone(),
                    client_secret: SecretValue::masked(),
                    scope: scope.clone(),
                },
            },
            client_key_pem: masked(&u.client_key_pem),
            media_key: masked(&u.media_key),
            id: u.id,
            name: u.name,
            enabled: u.enabled,
            root_url: u.root_url,
            trunk_group: u.trunk_group,
            trust_anchors_pem: u.trust_anchors_pem,
            client_cert_pem: u.client_cert_pem,
            media_mode: u.media_mode,
            max_cps: u.max_cps,
            max_concurrent: u.max_concurrent,
            customer_tg: u.customer_tg.map(|c| UpstreamCustomerTg {
                hosted_tg_id: c.hosted_tg_id,
                token: SecretValue::masked(),
                destinations: c.destinations,
            }),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }

    fn keeps_a_secret(&self) -> bool {
        let auth = match &self.auth {
            UpstreamAuth::None => false,
            UpstreamAuth::Token { token } => token.is_keep(),
            UpstreamAuth::OauthClient { client_secret, .. } => client_secret.is_keep(),
        };
        let customer_tg = self.customer_tg.as_ref().is_some_and(|c| c.token.is_keep());
        auth || customer_tg
            || [&self.client_key_pem, &self.media_key]
                .iter()
                .any(|s| s.as_ref().is_some_and(SecretValue::is_keep))
    }

    fn into_model(self, mode: Mode<'_, Self::Model>) -> Result<Self::Model, Error> {
        let auth = match self.auth {
            UpstreamAuth::None => model::UpstreamAuth::None,
            UpstreamAuth::Token { token } => model::UpstreamAuth::Token {
                token: mode.secret(&token, "auth.token", stored_auth)?,
            },
            UpstreamAuth::OauthClient {
                token_url,
                client_id,
                client_secret,
                scope,
            } => model::UpstreamAuth::OauthClient {
                client_secret: mode.secret(&client_secret, "auth.client_secret", stored_auth)?,
                token_url,
                client_id,
                scope,
            },
        };
        Ok(model::RiptUpstream {
            auth,
            client_key_pem: self
                .client_key_pem
                .map(|k| mode.secret(&k, "client_key_pem", |m| m.client_key_pem.as_ref()))
                .transpose()?,
            media_key: self
                .media_key
                .map(|k| mode.secret(&k, "media_key", |m| m.media_key.as_ref()))
                .transpose()?,
            id: String::new(),
            name: self.name,
            enabled: self.enabled,
            root_url: self.root_url,
            trunk_group: self.trunk_group,
            trust_anchors_pem: self.trust_anchors_pem,
            client_cert_pem: self.client_cert_pem,
            media_mode: self.media_mode,
            max_cps: self.max_cps,
            max_concurrent: self.max_concurrent,
            customer_tg: self
                .customer_tg
                .map(|c| {
                    Ok::<_, Error>(model::UpstreamCustomerTg {
                        token: mode.secret(&c.token, "customer_tg.token", |m| {
                            m.customer_tg.as_ref().map(|c| &c.token)
                        })?,
                        hosted_tg_id: c.hosted_tg_id,
                        destinations: c.destinations,
                    })
                })
                .transpose()?,
            created_at: 0,
            updated_at: 0,
        })
    }
}

/// List RIPT upstreams in creation order.
#[utoipa::path(get, path = "/upstreams", tag = "upstreams", params(Paging),
    responses((status = 200, description = "A page of upstreams", body = List<Upstream>)))]
pub(crate) async fn list(
    State(s): State<AdminState>,
    Query(paging): Query<Paging>,
) -> Result<Json<List<Upstream>>, Error> {
    crate::crud::list(&s, "upstreams.list", paging).await
}

crud_handlers!(
    Upstream,
    "upstreams",
    "/upstreams",
    "/upstreams/{id}",
    "upstreams"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_schema_matches_the_store() {
        for v in ["auto", "datagrams", "byways"] {
            assert!(serde_json::from_value::<MediaMode>(v.into()).is_ok(), "{v}");
        }
    }
}
