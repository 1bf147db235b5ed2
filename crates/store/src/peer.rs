//! SIP peers: a PBX or a SIP core we exchange calls with.

use crate::crypto::{Secret, SecretKey};
use crate::error::{Error, Result};
use crate::repo::{Repo, Resource};
use crate::row::{Row, Val, enum_name};
use crate::{Page, Scope, Store, validate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SipTransport {
    Udp,
    Tcp,
    Tls,
}

/// Who registers to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// Static addresses, no REGISTER.
    None,
    /// The peer registers to us (its contact address is learned).
    Inbound,
    /// We register to the peer with the outbound credentials.
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DtmfMode {
    Rfc4733,
    Info,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SrtpMode {
    Off,
    Optional,
    Required,
}

/// What to do with a leading '+' toward the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlusHandling {
    /// Send E.164 with '+'.
    Keep,
    /// Send E.164 digits without '+'.
    Strip,
}

/// How the peer's numbers map to and from E.164.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberRules {
    /// Country code (digits) prefixed to national numbers from the peer, e.g. "1" or "44".
    pub country_code: Option<String>,
    /// National trunk prefix stripped before adding the country code, e.g. "0".
    pub national_prefix: Option<String>,
    pub plus: PlusHandling,
    /// Technical prefix the peer puts before (and expects before) numbers, e.g. "9#".
    pub tech_prefix: Option<String>,
}

impl Default for NumberRules {
    fn default() -> Self {
        NumberRules {
            country_code: None,
            national_prefix: None,
            plus: PlusHandling::Keep,
            tech_prefix: None,
        }
    }
}

/// Digest credentials; the password is encrypted at rest and never serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestCredentials {
    pub username: String,
    #[serde(skip_serializing)]
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipPeer {
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
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
    pub registration: RegistrationMode,
    pub dtmf: DtmfMode,
    /// Codec names in preference order (`PCMU`, `PCMA`, `opus`, …).
    pub codecs: Vec<String>,
    pub srtp: SrtpMode,
    #[serde(default)]
    pub number_rules: NumberRules,
    pub max_cps: Option<u32>,
    pub max_concurrent: Option<u32>,
    /// OPTIONS keep-alive period in seconds; `None` disables the health check.
    pub options_interval_s: Option<u32>,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

pub(crate) fn yes() -> bool {
    true
}

fn digits(field: &'static str, s: &Option<String>, extra: &[u8]) -> Result<()> {
    match s {
        Some(v) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || extra.contains(&b)) => {
            Err(Error::invalid(field, "only digits allowed"))
        }
        _ => Ok(()),
    }
}

impl Resource for SipPeer {
    const TABLE: &'static str = "sip_peers";
    const KIND: &'static str = "sip peer";
    const UNIQUE: &'static str = "name";
    const TENANT_SCOPED: bool = false;
    const COLUMNS: &'static [&'static str] = &[
        "name",
        "enabled",
        "transport",
        "addresses",
        "allow_list",
        "inbound_username",
        "inbound_password",
        "outbound_username",
        "outbound_password",
        "registration",
        "dtmf_mode",
        "codecs",
        "srtp",
        "number_rules",
        "max_cps",
        "max_concurrent",
        "options_interval_s",
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
        if self.addresses.is_empty() && self.registration != RegistrationMode::Inbound {
            return Err(Error::invalid(
                "addresses",
                "needed unless the peer registers to us",
            ));
        }
        for a in &self.addresses {
            validate::host_port("addresses", a)?;
        }
        for a in &self.allow_list {
            validate::cidr("allow_list", a)?;
        }
        for (field, auth) in [
            ("inbound_auth", &self.inbound_auth),
            ("outbound_auth", &self.outbound_auth),
        ] {
            if let Some(a) = auth {
                validate::token(field, &a.username)?;
                if a.password.expose().is_empty() {
                    return Err(Error::invalid(field, "empty password"));
                }
            }
        }
        if self.registration == RegistrationMode::Outbound && self.outbound_auth.is_none() {
            return Err(Error::invalid(
                "outbound_auth",
                "needed to register to the peer",
            ));
        }
        if self.registration == RegistrationMode::Inbound && self.inbound_auth.is_none() {
            return Err(Error::invalid(
                "inbound_auth",
                "needed when the peer registers to us",
            ));
        }
        if self.codecs.is_empty() {
            return Err(Error::invalid("codecs", "at least one codec"));
        }
        for c in &self.codecs {
            validate::token("codecs", c)?;
        }
        let r = &self.number_rules;
        digits("number_rules.country_code", &r.country_code, b"")?;
        if r.country_code.as_ref().is_some_and(|c| c.len() > 3) {
            return Err(Error::invalid("number_rules.country_code", "1-3 digits"));
        }
        digits("number_rules.national_prefix", &r.national_prefix, b"")?;
        digits("number_rules.tech_prefix", &r.tech_prefix, b"#*")?;
        validate::cap("max_cps", self.max_cps)?;
        validate::cap("max_concurrent", self.max_concurrent)?;
        validate::cap("options_interval_s", self.options_interval_s)?;
        Ok(())
    }

    fn values(&self, key: &SecretKey, id: &str) -> Result<Vec<Val>> {
        let seal = |col: &str, a: &Option<DigestCredentials>| -> Result<Val> {
            a.as_ref()
                .map(|a| key.seal_str(&format!("sip_peers.{col}:{id}"), &a.password))
                .transpose()
                .map(Val::Blob)
        };
        Ok(vec![
            Val::text(&self.name),
            Val::flag(self.enabled),
            enum_name(&self.transport)?,
            Val::json(&self.addresses)?,
            Val::json(&self.allow_list)?,
            Val::Text(self.inbound_auth.as_ref().map(|a| a.username.clone())),
            seal("inbound_password", &self.inbound_auth)?,
            Val::Text(self.outbound_auth.as_ref().map(|a| a.username.clone())),
            seal("outbound_password", &self.outbound_auth)?,
            enum_name(&self.registration)?,
            enum_name(&self.dtmf)?,
            Val::json(&self.codecs)?,
            enum_name(&self.srtp)?,
            Val::json(&self.number_rules)?,
            Val::Int(self.max_cps.map(i64::from)),
            Val::Int(self.max_concurrent.map(i64::from)),
            Val::Int(self.options_interval_s.map(i64::from)),
        ])
    }

    fn from_row(row: &Row<'_>, key: &SecretKey) -> Result<Self> {
        let id = row.text("id")?;
        let creds = |user: &'static str, pass: &'static str| -> Result<Option<DigestCredentials>> {
            match (row.opt_text(user)?, row.opt_blob(pass)?) {
                (Some(username), Some(sealed)) => Ok(Some(DigestCredentials {
                    username,
                    password: key.open_str(pass, &format!("sip_peers.{pass}:{id}"), &sealed)?,
                })),
                (None, None) => Ok(None),
                _ => Err(Error::Corrupt { column: pass }),
            }
        };
        Ok(SipPeer {
            inbound_auth: creds("inbound_username", "inbound_password")?,
            outbound_auth: creds("outbound_username", "outbound_password")?,
            name: row.text("name")?,
            enabled: row.flag("enabled")?,
            transport: row.enum_text("transport")?,
            addresses: row.json("addresses")?,
            allow_list: row.json("allow_list")?,
            registration: row.enum_text("registration")?,
            dtmf: row.enum_text("dtmf_mode")?,
            codecs: row.json("codecs")?,
            srtp: row.enum_text("srtp")?,
            number_rules: row.json("number_rules")?,
            max_cps: row.opt_u32("max_cps")?,
            max_concurrent: row.opt_u32("max_concurrent")?,
            options_interval_s: row.opt_u32("options_interval_s")?,
            created_at: row.int("created_at")?,
            updated_at: row.int("updated_at")?,
            id,
        })
    }
}

impl Store {
    pub fn sip_peers(&self) -> Repo<'_, SipPeer> {
        Repo::new(self)
    }
}

impl Repo<'_, SipPeer> {
    /// The peer named `name`, if any (names are unique).
    pub async fn find_by_name(&self, name: &str) -> Result<Option<SipPeer>> {
        Ok(self
            .list_where(&Scope::Admin, &[("name", name.to_owned())], Page::first(1))
            .await?
            .into_iter()
            .next())
    }
}
