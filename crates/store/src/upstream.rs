//! RIPT upstreams: trunk groups we call as a client.

use crate::crypto::{Secret, SecretKey};
use crate::error::{Error, Result};
use crate::peer::yes;
use crate::repo::{Repo, Resource};
use crate::row::{Row, Val, enum_name};
use crate::{Store, validate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaMode {
    Auto,
    Datagrams,
    Byways,
}

/// How we authenticate to the upstream; secrets are encrypted at rest, never serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UpstreamAuth {
    None,
    /// A static bearer token.
    Token {
        #[serde(skip_serializing)]
        token: Secret,
    },
    /// OAuth 2.0 client credentials grant.
    OauthClient {
        token_url: String,
        client_id: String,
        #[serde(skip_serializing)]
        client_secret: Secret,
        scope: Option<String>,
    },
}

/// Our own customer TG, registered with the upstream (`POST {root}/customertgs`,
/// ript-inbound) so that the upstream can send calls to us: a hosted TG of this gateway and the
/// bearer token the upstream presents on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamCustomerTg {
    /// The hosted TG (id) of this gateway the upstream's calls arrive on; its URL is what we
    /// register.
    pub hosted_tg_id: String,
    /// The token the upstream presents to us: a customer credential issued for that hosted TG.
    /// Encrypted at rest, never serialized.
    #[serde(skip_serializing)]
    pub token: Secret,
    /// The destinations we take calls for (the registration's `outbound.destinations`).
    #[serde(default = "any_destination")]
    pub destinations: String,
}

fn any_destination() -> String {
    "*".to_owned()
}

/// The non-secret part of [`UpstreamCustomerTg`], stored as JSON.
#[derive(Serialize, Deserialize)]
struct CustomerTgParams {
    hosted_tg_id: String,
    destinations: String,
}

/// The non-secret part of [`UpstreamAuth`], stored as JSON.
#[derive(Serialize, Deserialize)]
struct AuthParams {
    token_url: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiptUpstream {
    #[serde(default)]
    pub id: String,
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
    /// Client certificate (PEM) for mutual TLS, with its key below.
    pub client_cert_pem: Option<String>,
    #[serde(skip_serializing)]
    pub client_key_pem: Option<Secret>,
    pub media_mode: MediaMode,
    /// Optional end-to-end media key (base64), encrypted at rest.
    #[serde(skip_serializing)]
    pub media_key: Option<Secret>,
    pub max_cps: Option<u32>,
    pub max_concurrent: Option<u32>,
    /// Our customer TG to register with the upstream, if it may call us.
    #[serde(default)]
    pub customer_tg: Option<UpstreamCustomerTg>,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

impl Resource for RiptUpstream {
    const TABLE: &'static str = "ript_upstreams";
    const KIND: &'static str = "ript upstream";
    const UNIQUE: &'static str = "name";
    const TENANT_SCOPED: bool = false;
    const COLUMNS: &'static [&'static str] = &[
        "name",
        "enabled",
        "root_url",
        "trunk_group",
        "auth_kind",
        "auth_params",
        "auth_secret",
        "trust_anchors_pem",
        "client_cert_pem",
        "client_key_pem",
        "media_mode",
        "media_key",
        "max_cps",
        "max_concurrent",
        "customer_tg",
        "customer_tg_token",
    ];

    fn id(&self) -> &str {
        &self.id
    }

    fn set_meta(&mut self, id: String, created_at: i64, updated_at: i64) {
        self.id = id;
        self.created_at = created_at;
        self.updated_at = updated_at;
    }

    fn validate(&self) -> Result<()> {
        validate::name("name", &self.name)?;
        validate::https_url("root_url", &self.root_url)?;
        validate::name("trunk_group", &self.trunk_group)?;
        match &self.auth {
            UpstreamAuth::None => {}
            UpstreamAuth::Token { token } => {
                if token.expose().is_empty() {
                    return Err(Error::invalid("auth.token", "empty"));
                }
            }
            UpstreamAuth::OauthClient {
                token_url,
                client_id,
                client_secret,
                ..
            } => {
                validate::https_url("auth.token_url", token_url)?;
                validate::name("auth.client_id", client_id)?;
                if client_secret.expose().is_empty() {
                    return Err(Error::invalid("auth.client_secret", "empty"));
                }
            }
        }
        if let Some(p) = &self.trust_anchors_pem {
            validate::pem("trust_anchors_pem", p)?;
        }
        match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(c), Some(k)) => {
                validate::pem("client_cert_pem", c)?;
                validate::pem("client_key_pem", k.expose())?;
            }
            (None, None) => {}
            _ => {
                return Err(Error::invalid(
                    "client_key_pem",
                    "client certificate and key go together",
                ));
            }
        }
        validate::cap("max_cps", self.max_cps)?;
        validate::cap("max_concurrent", self.max_concurrent)?;
        if let Some(c) = &self.customer_tg {
            validate::name("customer_tg.hosted_tg_id", &c.hosted_tg_id)?;
            if c.token.expose().is_empty() {
                return Err(Error::invalid("customer_tg.token", "empty"));
            }
            validate::pattern("customer_tg.destinations", &c.destinations)?;
        }
        Ok(())
    }

    fn values(&self, key: &SecretKey, id: &str) -> Result<Vec<Val>> {
        let seal = |col: &str, s: Option<&Secret>| -> Result<Val> {
            s.map(|s| key.seal_str(&format!("ript_upstreams.{col}:{id}"), s))
                .transpose()
                .map(Val::Blob)
        };
        let (kind, params, secret) = match &self.auth {
            UpstreamAuth::None => (
                "none",
                AuthParams {
                    token_url: None,
                    client_id: None,
                    scope: None,
                },
                None,
            ),
            UpstreamAuth::Token { token } => (
                "token",
                AuthParams {
                    token_url: None,
                    client_id: None,
                    scope: None,
                },
                Some(token),
            ),
            UpstreamAuth::OauthClient {
                token_url,
                client_id,
                client_secret,
                scope,
            } => (
                "oauth_client",
                AuthParams {
                    token_url: Some(token_url.clone()),
                    client_id: Some(client_id.clone()),
                    scope: scope.clone(),
                },
                Some(client_secret),
            ),
        };
        Ok(vec![
            Val::text(&self.name),
            Val::flag(self.enabled),
            Val::text(&self.root_url),
            Val::text(&self.trunk_group),
            Val::text(kind),
            Val::json(&params)?,
            seal("auth_secret", secret)?,
            Val::Text(self.trust_anchors_pem.clone()),
            Val::Text(self.client_cert_pem.clone()),
            seal("client_key_pem", self.client_key_pem.as_ref())?,
            enum_name(&self.media_mode)?,
            seal("media_key", self.media_key.as_ref())?,
            Val::Int(self.max_cps.map(i64::from)),
            Val::Int(self.max_concurrent.map(i64::from)),
            match &self.customer_tg {
                Some(c) => Val::json(&CustomerTgParams {
                    hosted_tg_id: c.hosted_tg_id.clone(),
                    destinations: c.destinations.clone(),
                })?,
                None => Val::Text(None),
            },
            seal(
                "customer_tg_token",
                self.customer_tg.as_ref().map(|c| &c.token),
            )?,
        ])
    }

    fn from_row(row: &Row<'_>, key: &SecretKey) -> Result<Self> {
        let id = row.text("id")?;
        let open = |col: &'static str| -> Result<Option<Secret>> {
            row.opt_blob(col)?
                .map(|b| key.open_str(col, &format!("ript_upstreams.{col}:{id}"), &b))
                .transpose()
        };
        let params: AuthParams = row.json("auth_params")?;
        let secret = open("auth_secret")?;
        let corrupt = || Error::Corrupt {
            column: "auth_params",
        };
        let auth = match row.text("auth_kind")?.as_str() {
            "none" => UpstreamAuth::None,
            "token" => UpstreamAuth::Token {
                token: secret.ok_or_else(corrupt)?,
            },
            "oauth_client" => UpstreamAuth::OauthClient {
                token_url: params.token_url.ok_or_else(corrupt)?,
                client_id: params.client_id.ok_or_else(corrupt)?,
                client_secret: secret.ok_or_else(corrupt)?,
                scope: params.scope,
            },
            _ => {
                return Err(Error::Corrupt {
                    column: "auth_kind",
                });
            }
        };
        Ok(RiptUpstream {
            name: row.text("name")?,
            enabled: row.flag("enabled")?,
            root_url: row.text("root_url")?,
            trunk_group: row.text("trunk_group")?,
            auth,
            trust_anchors_pem: row.opt_text("trust_anchors_pem")?,
            client_cert_pem: row.opt_text("client_cert_pem")?,
            client_key_pem: open("client_key_pem")?,
            media_mode: row.enum_text("media_mode")?,
            media_key: open("media_key")?,
            max_cps: row.opt_u32("max_cps")?,
            max_concurrent: row.opt_u32("max_concurrent")?,
            customer_tg: match row.opt_text("customer_tg")? {
                Some(json) => {
                    let corrupt = || Error::Corrupt {
                        column: "customer_tg",
                    };
                    let p: CustomerTgParams = serde_json::from_str(&json).map_err(|_| corrupt())?;
                    Some(UpstreamCustomerTg {
                        hosted_tg_id: p.hosted_tg_id,
                        token: open("customer_tg_token")?.ok_or_else(corrupt)?,
                        destinations: p.destinations,
                    })
                }
                None => None,
            },
            created_at: row.int("created_at")?,
            updated_at: row.int("updated_at")?,
            id,
        })
    }
}

impl Store {
    pub fn ript_upstreams(&self) -> Repo<'_, RiptUpstream> {
        Repo::new(self)
    }

    /// The URI of our customer TG registration with upstream `upstream_id`, as last recorded by
    /// [`Store::set_customer_tg_registration`] (`None` also for an unknown upstream).
    pub async fn customer_tg_registration(&self, upstream_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT customer_tg_registration FROM ript_upstreams WHERE id = $1")
            .bind(upstream_id.to_owned())
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(r) => Row(&r).opt_text("customer_tg_registration"),
            None => Ok(None),
        }
    }

    /// Records where our customer TG registration with upstream `upstream_id` lives (`None`:
    /// nowhere). Runtime state, not configuration: neither `updated_at` nor the configuration
    /// version moves, so recording it does not make every instance reload (and re-register).
    pub async fn set_customer_tg_registration(
        &self,
        upstream_id: &str,
        uri: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE ript_upstreams SET customer_tg_registration = $1 WHERE id = $2")
            .bind(uri.map(str::to_owned))
            .bind(upstream_id.to_owned())
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
