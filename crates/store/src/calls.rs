//! Live calls: a snapshot per call, upserted by its owning instance on every state change so
//! another instance can take the call over (for example when the owner dies).

use crate::error::{Error, Result};
use crate::row::Row;
use crate::{Store, now_ms, validate};
use serde::{Deserialize, Serialize};

/// One call's state. The leg shapes belong to the call machine, so they are kept as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSnapshot {
    /// The gateway's call id.
    pub id: String,
    /// The instance currently driving the call.
    pub instance_id: String,
    pub state: String,
    pub sip_call_id: Option<String>,
    pub ript_call_id: Option<String>,
    /// Cookies the RIPT server set for this call (sent back on every request of the call).
    pub cookies: Vec<String>,
    pub sip_leg: serde_json::Value,
    pub ript_leg: serde_json::Value,
    /// Incremented by the store on every write.
    #[serde(default)]
    pub revision: i64,
    pub started_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

#[derive(Debug)]
pub struct Calls<'s> {
    store: &'s Store,
}

impl Store {
    pub fn calls(&self) -> Calls<'_> {
        Calls { store: self }
    }
}

fn snapshot(row: &Row<'_>) -> Result<CallSnapshot> {
    Ok(CallSnapshot {
        id: row.text("id")?,
        instance_id: row.text("instance_id")?,
        state: row.text("state")?,
        sip_call_id: row.opt_text("sip_call_id")?,
        ript_call_id: row.opt_text("ript_call_id")?,
        cookies: row.json("cookies")?,
        sip_leg: row.json("sip_leg")?,
        ript_leg: row.json("ript_leg")?,
        revision: row.int("revision")?,
        started_at: row.int("started_at")?,
        updated_at: row.int("updated_at")?,
    })
}

impl Calls<'_> {
    /// Inserts or replaces the snapshot. A row owned by another instance is not overwritten
    /// (`Error::Conflict { field: "instance_id" }`): after a takeover the old owner's late
    /// writes must not win.
    pub async fn upsert(&self, c: &CallSnapshot) -> Result<CallSnapshot> {
        validate::name("id", &c.id)?;
        validate::name("instance_id", &c.instance_id)?;
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO calls (id, instance_id, state, sip_call_id, ript_call_id, cookies, \
             sip_leg, ript_leg, revision, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
             sip_call_id = excluded.sip_call_id, ript_call_id = excluded.ript_call_id, \
             cookies = excluded.cookies, sip_leg = excluded.sip_leg, \
             ript_leg = excluded.ript_leg, revision = calls.revision + 1, \
             updated_at = excluded.updated_at \
             WHERE calls.instance_id = excluded.instance_id \
             RETURNING *",
        )
        .bind(c.id.clone())
        .bind(c.instance_id.clone())
        .bind(c.state.clone())
        .bind(c.sip_call_id.clone())
        .bind(c.ript_call_id.clone())
        .bind(json(&c.cookies)?)
        .bind(json(&c.sip_leg)?)
        .bind(json(&c.ript_leg)?)
        .bind(c.started_at)
        .bind(now)
        .fetch_optional(self.store.pool())
        .await?
        .ok_or(Error::Conflict {
            field: "instance_id",
        })?;
        snapshot(&Row(&row))
    }

    pub async fn get(&self, id: &str) -> Result<CallSnapshot> {
        let row = sqlx::query("SELECT * FROM calls WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(self.store.pool())
            .await?
            .ok_or(Error::NotFound { kind: "call" })?;
        snapshot(&Row(&row))
    }

    /// The calls owned by `instance_id` (for takeover after that instance died).
    pub async fn list_by_instance(&self, instance_id: &str) -> Result<Vec<CallSnapshot>> {
        let rows =
            sqlx::query("SELECT * FROM calls WHERE instance_id = $1 ORDER BY started_at, id")
                .bind(instance_id.to_owned())
                .fetch_all(self.store.pool())
                .await?;
        rows.iter().map(|r| snapshot(&Row(r))).collect()
    }

    /// Atomically moves call `id` from instance `from` to `to`. Returns false if `from` no
    /// longer owns it (someone else took it over first).
    pub async fn take_over(&self, id: &str, from: &str, to: &str) -> Result<bool> {
        validate::name("instance_id", to)?;
        let done = sqlx::query(
            "UPDATE calls SET instance_id = $1, revision = revision + 1, updated_at = $2 \
             WHERE id = $3 AND instance_id = $4",
        )
        .bind(to.to_owned())
        .bind(now_ms())
        .bind(id.to_owned())
        .bind(from.to_owned())
        .execute(self.store.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a finished call.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM calls WHERE id = $1")
            .bind(id.to_owned())
            .execute(self.store.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { kind: "call" });
        }
        Ok(())
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::invalid("body", e.to_string()))
}
