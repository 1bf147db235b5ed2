//! Admin API tokens: generated here, shown once, stored as SHA-256 hashes (see
//! [`crate::crypto`] for why that is adequate for 256-bit random tokens).

use crate::crypto::{IssuedSecret, constant_time_eq, hash_token};
use crate::error::{Error, Result, db};
use crate::row::Row;
use crate::{Page, Store, bump_config_version, new_id, now_ms, validate};
use serde::{Deserialize, Serialize};
use sqlx::Acquire as _;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug)]
pub struct AdminTokens<'s> {
    store: &'s Store,
}

impl Store {
    pub fn admin_tokens(&self) -> AdminTokens<'_> {
        AdminTokens { store: self }
    }
}

fn token(row: &Row<'_>) -> Result<AdminToken> {
    Ok(AdminToken {
        id: row.text("id")?,
        name: row.text("name")?,
        created_at: row.int("created_at")?,
    })
}

impl AdminTokens<'_> {
    /// Creates a token named `name` (unique) and returns it with its secret, shown only now.
    pub async fn issue(&self, name: &str) -> Result<(AdminToken, IssuedSecret)> {
        validate::name("name", name)?;
        let secret = IssuedSecret::generate()?;
        let id = new_id()?;
        let now = now_ms();
        let mut conn = self.store.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO admin_tokens (id, name, token_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.clone())
        .bind(name.to_owned())
        .bind(hash_token(secret.expose()))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db("name"))?;
        bump_config_version(&mut tx).await?;
        tx.commit().await?;
        Ok((
            AdminToken {
                id,
                name: name.to_owned(),
                created_at: now,
            },
            secret,
        ))
    }

    /// The token record if `presented` is a valid admin token.
    pub async fn verify(&self, presented: &str) -> Result<Option<AdminToken>> {
        let hash = hash_token(presented);
        let row = sqlx::query("SELECT * FROM admin_tokens WHERE token_hash = $1")
            .bind(hash.clone())
            .fetch_optional(self.store.pool())
            .await?;
        let Some(r) = row else { return Ok(None) };
        // The lookup already matched on the hash; the constant-time compare keeps the check
        // independent of how the database compares bytes.
        let stored = Row(&r).opt_blob("token_hash")?.unwrap_or_default();
        if constant_time_eq(&stored, &hash) {
            token(&Row(&r)).map(Some)
        } else {
            Ok(None)
        }
    }

    pub async fn list(&self, page: Page) -> Result<Vec<AdminToken>> {
        let rows =
            sqlx::query("SELECT * FROM admin_tokens ORDER BY created_at, id LIMIT $1 OFFSET $2")
                .bind(page.sql_limit())
                .bind(page.sql_offset()?)
                .fetch_all(self.store.pool())
                .await?;
        rows.iter().map(|r| token(&Row(r))).collect()
    }

    pub async fn revoke(&self, id: &str) -> Result<()> {
        let mut conn = self.store.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        let done = sqlx::query("DELETE FROM admin_tokens WHERE id = $1")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                kind: "admin token",
            });
        }
        bump_config_version(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
