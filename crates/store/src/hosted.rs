//! Hosted TGs (we are the RIPT server for a customer) and the customer's credentials.

use crate::crypto::{IssuedSecret, Secret, SecretKey, constant_time_eq, hash_token};
use crate::error::{Error, Result, db};
use crate::peer::yes;
use crate::repo::{Repo, Resource};
use crate::row::{Row, Val};
use crate::{Page, Scope, Store, bump_config_version, new_id, now_ms, validate};
use serde::{Deserialize, Serialize};
use sqlx::Acquire as _;

/// A TG the customer registered with us, to which we deliver its inbound calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerTg {
    pub name: String,
    /// The customer's RIPT TG URL (`https://…`).
    pub url: String,
    /// Bearer token we present to it; encrypted at rest, never serialized.
    #[serde(skip_serializing, default)]
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedTg {
    #[serde(default)]
    pub id: String,
    /// The customer owning this TG; names are unique per tenant.
    pub tenant: String,
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Number patterns the customer may use as caller ID (we vouch for them).
    pub vouched_numbers: Vec<String>,
    /// Refuse call creations without a valid PASSporT (`403`, ript-profile §8); a passport
    /// that is present is always verified.
    #[serde(default)]
    pub require_passport: bool,
    /// Destinations the customer may call (RIPT number pattern).
    pub destination_pattern: String,
    /// The advertisement document served for this TG.
    pub advertisement: serde_json::Value,
    #[serde(default)]
    pub customer_tgs: Vec<CustomerTg>,
    /// PEM certificates trusted when we call the customer TGs above (the customer's RIPT
    /// server), instead of the system roots.
    #[serde(default)]
    pub customer_tg_trust_anchors_pem: Option<String>,
    pub max_cps: Option<u32>,
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

impl Resource for HostedTg {
    const TABLE: &'static str = "hosted_tgs";
    const KIND: &'static str = "hosted tg";
    const UNIQUE: &'static str = "name";
    const TENANT_SCOPED: bool = true;
    const COLUMNS: &'static [&'static str] = &[
        "tenant",
        "name",
        "enabled",
        "vouched_numbers",
        "destination_pattern",
        "advertisement",
        "customer_tgs",
        "customer_tg_tokens",
        "max_cps",
        "max_concurrent",
        "require_passport",
        "customer_tg_trust_anchors_pem",
    ];

    fn id(&self) -> &str {
        &self.id
    }

    fn tenant(&self) -> Option<&str> {
        Some(&self.tenant)
    }

    fn set_meta(&mut self, id: String, created_at: i64, updated_at: i64) {
        self.id = id;
        self.created_at = created_at;
        self.updated_at = updated_at;
    }

    fn validate(&self) -> Result<()> {
        validate::name("tenant", &self.tenant)?;
        validate::name("name", &self.name)?;
        for p in &self.vouched_numbers {
            validate::pattern("vouched_numbers", p)?;
        }
        validate::pattern("destination_pattern", &self.destination_pattern)?;
        if !self.advertisement.is_object() {
            return Err(Error::invalid("advertisement", "must be a JSON object"));
        }
        for t in &self.customer_tgs {
            validate::name("customer_tgs.name", &t.name)?;
            validate::https_url("customer_tgs.url", &t.url)?;
        }
        if let Some(p) = &self.customer_tg_trust_anchors_pem {
            validate::pem("customer_tg_trust_anchors_pem", p)?;
        }
        validate::cap("max_cps", self.max_cps)?;
        validate::cap("max_concurrent", self.max_concurrent)?;
        Ok(())
    }

    fn values(&self, key: &SecretKey, id: &str) -> Result<Vec<Val>> {
        // The tokens of the customer TGs are sealed together, in list order, in one column.
        let tokens: Vec<Option<&str>> = self
            .customer_tgs
            .iter()
            .map(|t| t.token.as_ref().map(Secret::expose))
            .collect();
        let sealed = if tokens.iter().any(Option::is_some) {
            let json = serde_json::to_vec(&tokens)
                .map_err(|e| Error::invalid("customer_tgs", e.to_string()))?;
            Some(key.seal(&format!("hosted_tgs.customer_tg_tokens:{id}"), &json)?)
        } else {
            None
        };
        Ok(vec![
            Val::text(&self.tenant),
            Val::text(&self.name),
            Val::flag(self.enabled),
            Val::json(&self.vouched_numbers)?,
            Val::text(&self.destination_pattern),
            Val::json(&self.advertisement)?,
            Val::json(&self.customer_tgs)?,
            Val::Blob(sealed),
            Val::Int(self.max_cps.map(i64::from)),
            Val::Int(self.max_concurrent.map(i64::from)),
            Val::flag(self.require_passport),
            Val::Text(self.customer_tg_trust_anchors_pem.clone()),
        ])
    }

    fn from_row(row: &Row<'_>, key: &SecretKey) -> Result<Self> {
        let id = row.text("id")?;
        let mut customer_tgs: Vec<CustomerTg> = row.json("customer_tgs")?;
        if let Some(sealed) = row.opt_blob("customer_tg_tokens")? {
            let col = "customer_tg_tokens";
            let plain = key.open(col, &format!("hosted_tgs.{col}:{id}"), &sealed)?;
            let tokens: Vec<Option<String>> =
                serde_json::from_slice(&plain).map_err(|_| Error::Corrupt { column: col })?;
            if tokens.len() != customer_tgs.len() {
                return Err(Error::Corrupt { column: col });
            }
            for (t, tok) in customer_tgs.iter_mut().zip(tokens) {
                t.token = tok.map(Secret::new);
            }
        }
        Ok(HostedTg {
            tenant: row.text("tenant")?,
            name: row.text("name")?,
            enabled: row.flag("enabled")?,
            vouched_numbers: row.json("vouched_numbers")?,
            require_passport: row.flag("require_passport")?,
            destination_pattern: row.text("destination_pattern")?,
            advertisement: row.json("advertisement")?,
            customer_tgs,
            customer_tg_trust_anchors_pem: row.opt_text("customer_tg_trust_anchors_pem")?,
            max_cps: row.opt_u32("max_cps")?,
            max_concurrent: row.opt_u32("max_concurrent")?,
            created_at: row.int("created_at")?,
            updated_at: row.int("updated_at")?,
            id,
        })
    }
}

impl Store {
    pub fn hosted_tgs(&self) -> Repo<'_, HostedTg> {
        Repo::new(self)
    }

    pub fn customer_credentials(&self) -> CustomerCredentials<'_> {
        CustomerCredentials { store: self }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A bearer token presented as-is.
    Token,
    /// An OAuth client (client credentials grant) identified by `client_id`.
    OauthClient,
}

/// A customer's token or OAuth client, as listed (the secret itself is only in the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerCredential {
    pub id: String,
    pub tenant: String,
    pub hosted_tg_id: String,
    pub name: String,
    pub kind: CredentialKind,
    pub client_id: Option<String>,
    pub created_at: i64,
}

/// Customer tokens and OAuth clients; secrets are generated here, returned once and stored
/// as SHA-256 hashes (see [`crate::crypto`]).
#[derive(Debug)]
pub struct CustomerCredentials<'s> {
    store: &'s Store,
}

fn credential(row: &Row<'_>) -> Result<CustomerCredential> {
    Ok(CustomerCredential {
        id: row.text("id")?,
        tenant: row.text("tenant")?,
        hosted_tg_id: row.text("hosted_tg_id")?,
        name: row.text("name")?,
        kind: row.enum_text("kind")?,
        client_id: row.opt_text("client_id")?,
        created_at: row.int("created_at")?,
    })
}

impl CustomerCredentials<'_> {
    /// Issues a credential for hosted TG `hosted_tg_id` (which must be visible in `scope`).
    /// Returns the record and the secret, which is not retrievable later.
    pub async fn issue(
        &self,
        scope: &Scope,
        hosted_tg_id: &str,
        name: &str,
        kind: CredentialKind,
    ) -> Result<(CustomerCredential, IssuedSecret)> {
        validate::name("name", name)?;
        let tg = self.store.hosted_tgs().get(scope, hosted_tg_id).await?;
        let secret = IssuedSecret::generate()?;
        let id = new_id()?;
        let client_id = match kind {
            CredentialKind::Token => None,
            CredentialKind::OauthClient => Some(new_id()?),
        };
        let now = now_ms();
        let mut conn = self.store.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO customer_credentials (id, tenant, hosted_tg_id, name, kind, client_id, \
             secret_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id.clone())
        .bind(tg.tenant.clone())
        .bind(tg.id.clone())
        .bind(name.to_owned())
        .bind(match kind {
            CredentialKind::Token => "token",
            CredentialKind::OauthClient => "oauth_client",
        })
        .bind(client_id.clone())
        .bind(hash_token(secret.expose()))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db("name"))?;
        bump_config_version(&mut tx).await?;
        tx.commit().await?;
        Ok((
            CustomerCredential {
                id,
                tenant: tg.tenant,
                hosted_tg_id: tg.id,
                name: name.to_owned(),
                kind,
                client_id,
                created_at: now,
            },
            secret,
        ))
    }

    pub async fn list(&self, scope: &Scope, page: Page) -> Result<Vec<CustomerCredential>> {
        let mut sql = "SELECT * FROM customer_credentials".to_owned();
        let tenant = scope.tenant();
        if tenant.is_some() {
            sql.push_str(" WHERE tenant = $3");
        }
        sql.push_str(" ORDER BY created_at, id LIMIT $1 OFFSET $2");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(page.sql_limit())
            .bind(page.sql_offset()?);
        if let Some(t) = tenant {
            q = q.bind(t.to_owned());
        }
        let rows = q.fetch_all(self.store.pool()).await?;
        rows.iter().map(|r| credential(&Row(r))).collect()
    }

    pub async fn revoke(&self, scope: &Scope, id: &str) -> Result<()> {
        let mut sql = "DELETE FROM customer_credentials WHERE id = $1".to_owned();
        if scope.tenant().is_some() {
            sql.push_str(" AND tenant = $2");
        }
        let mut conn = self.store.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_owned());
        if let Some(t) = scope.tenant() {
            q = q.bind(t.to_owned());
        }
        if q.execute(&mut *tx).await?.rows_affected() == 0 {
            return Err(Error::NotFound {
                kind: "customer credential",
            });
        }
        bump_config_version(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The token credential a bearer `token` belongs to, if any.
    pub async fn verify_token(&self, token: &str) -> Result<Option<CustomerCredential>> {
        let hash = hash_token(token);
        let row = sqlx::query(
            "SELECT * FROM customer_credentials WHERE secret_hash = $1 AND kind = 'token'",
        )
        .bind(hash.clone())
        .fetch_optional(self.store.pool())
        .await?;
        match row {
            Some(r)
                if constant_time_eq(
                    &Row(&r).opt_blob("secret_hash")?.unwrap_or_default(),
                    &hash,
                ) =>
            {
                credential(&Row(&r)).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The OAuth client `client_id` if `secret` is its secret.
    pub async fn verify_client(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Option<CustomerCredential>> {
        let row = sqlx::query("SELECT * FROM customer_credentials WHERE client_id = $1")
            .bind(client_id.to_owned())
            .fetch_optional(self.store.pool())
            .await?;
        let Some(r) = row else { return Ok(None) };
        let stored = Row(&r).opt_blob("secret_hash")?.unwrap_or_default();
        if constant_time_eq(&stored, &hash_token(secret)) {
            credential(&Row(&r)).map(Some)
        } else {
            Ok(None)
        }
    }
}
