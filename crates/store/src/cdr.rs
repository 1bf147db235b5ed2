//! Call detail records: one per call, written at its end whether or not it was answered.

use crate::error::{Error, Result};
use crate::model::Endpoint;
use crate::row::{Row, Val, bind, enum_name};
use crate::{Page, Store, new_id, validate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaCounters {
    pub rtp_packets_in: u64,
    pub rtp_packets_out: u64,
    pub ript_chunks_in: u64,
    pub ript_chunks_out: u64,
    pub packets_lost: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cdr {
    #[serde(default)]
    pub id: String,
    pub call_id: String,
    /// Epoch milliseconds (from the caller's clock).
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    pub caller: String,
    pub callee: String,
    pub source: Endpoint,
    /// The target the call was finally sent to (none if routing failed).
    pub target: Option<Endpoint>,
    pub route_id: Option<String>,
    pub sip_call_id: Option<String>,
    pub ript_call_id: Option<String>,
    pub sip_codec: Option<String>,
    pub ript_codec: Option<String>,
    /// Final SIP status (200, 486, 503, …).
    pub sip_status: Option<u16>,
    /// RIPT end reason.
    pub ript_reason: Option<String>,
    #[serde(default)]
    pub media: MediaCounters,
}

impl Cdr {
    /// Billable duration: answer to end, zero when never answered.
    pub fn duration_ms(&self) -> i64 {
        self.answered_at
            .map_or(0, |a| self.ended_at.saturating_sub(a).max(0))
    }
}

/// Query filter; all given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrFilter {
    /// `started_at >= from`.
    pub from: Option<i64>,
    /// `started_at < to`.
    pub to: Option<i64>,
    /// Caller or callee equals this number.
    pub number: Option<String>,
    /// Source or target is this endpoint id (a peer, upstream or hosted TG).
    pub endpoint_id: Option<String>,
    pub sip_status: Option<u16>,
    pub ript_reason: Option<String>,
}

#[derive(Debug)]
pub struct Cdrs<'s> {
    store: &'s Store,
}

impl Store {
    pub fn cdrs(&self) -> Cdrs<'_> {
        Cdrs { store: self }
    }
}

fn cdr(row: &Row<'_>) -> Result<Cdr> {
    let target = match (row.opt_text("target_kind")?, row.opt_text("target_id")?) {
        (Some(k), Some(id)) => Some(Endpoint {
            kind: serde_json::from_value(serde_json::Value::String(k)).map_err(|_| {
                Error::Corrupt {
                    column: "target_kind",
                }
            })?,
            id,
        }),
        _ => None,
    };
    Ok(Cdr {
        id: row.text("id")?,
        call_id: row.text("call_id")?,
        started_at: row.int("started_at")?,
        answered_at: row.opt_int("answered_at")?,
        ended_at: row.int("ended_at")?,
        caller: row.text("caller")?,
        callee: row.text("callee")?,
        source: Endpoint {
            kind: row.enum_text("source_kind")?,
            id: row.text("source_id")?,
        },
        target,
        route_id: row.opt_text("route_id")?,
        sip_call_id: row.opt_text("sip_call_id")?,
        ript_call_id: row.opt_text("ript_call_id")?,
        sip_codec: row.opt_text("sip_codec")?,
        ript_codec: row.opt_text("ript_codec")?,
        sip_status: row
            .opt_int("sip_status")?
            .map(|s| {
                u16::try_from(s).map_err(|_| Error::Corrupt {
                    column: "sip_status",
                })
            })
            .transpose()?,
        ript_reason: row.opt_text("ript_reason")?,
        media: row.json("media")?,
    })
}

impl Cdrs<'_> {
    /// Appends a record and returns it with its id. CDRs are not configuration: no version bump.
    pub async fn insert(&self, mut c: Cdr) -> Result<Cdr> {
        validate::name("call_id", &c.call_id)?;
        if c.ended_at < c.started_at {
            return Err(Error::invalid("ended_at", "before started_at"));
        }
        if c.answered_at
            .is_some_and(|a| a < c.started_at || a > c.ended_at)
        {
            return Err(Error::invalid("answered_at", "outside the call"));
        }
        c.id = new_id()?;
        let (tk, ti) = match &c.target {
            Some(t) => (enum_name(&t.kind)?, Val::text(&t.id)),
            None => (Val::Text(None), Val::Text(None)),
        };
        let vals = vec![
            Val::text(&c.id),
            Val::text(&c.call_id),
            Val::Int(Some(c.started_at)),
            Val::Int(c.answered_at),
            Val::Int(Some(c.ended_at)),
            Val::Int(Some(c.duration_ms())),
            Val::text(&c.caller),
            Val::text(&c.callee),
            enum_name(&c.source.kind)?,
            Val::text(&c.source.id),
            tk,
            ti,
            Val::Text(c.route_id.clone()),
            Val::Text(c.sip_call_id.clone()),
            Val::Text(c.ript_call_id.clone()),
            Val::Text(c.sip_codec.clone()),
            Val::Text(c.ript_codec.clone()),
            Val::Int(c.sip_status.map(i64::from)),
            Val::Text(c.ript_reason.clone()),
            Val::json(&c.media)?,
        ];
        let mut q = sqlx::query(
            "INSERT INTO cdrs (id, call_id, started_at, answered_at, ended_at, duration_ms, \
             caller, callee, source_kind, source_id, target_kind, target_id, route_id, \
             sip_call_id, ript_call_id, sip_codec, ript_codec, sip_status, ript_reason, media) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20)",
        );
        for v in vals {
            q = bind(q, v);
        }
        q.execute(self.store.pool())
            .await
            .map_err(crate::error::db("id"))?;
        Ok(c)
    }

    pub async fn get(&self, id: &str) -> Result<Cdr> {
        let row = sqlx::query("SELECT * FROM cdrs WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(self.store.pool())
            .await?
            .ok_or(Error::NotFound { kind: "cdr" })?;
        cdr(&Row(&row))
    }

    /// Records matching `filter`, newest first (ties broken by id, so pages are stable).
    pub async fn query(&self, filter: &CdrFilter, page: Page) -> Result<Vec<Cdr>> {
        let mut conds: Vec<String> = Vec::new();
        let mut vals: Vec<Val> = Vec::new();
        let next = |vals: &mut Vec<Val>, v: Val| {
            vals.push(v);
            format!("${}", vals.len())
        };
        if let Some(f) = filter.from {
            let p = next(&mut vals, Val::Int(Some(f)));
            conds.push(format!("started_at >= {p}"));
        }
        if let Some(t) = filter.to {
            let p = next(&mut vals, Val::Int(Some(t)));
            conds.push(format!("started_at < {p}"));
        }
        if let Some(n) = &filter.number {
            let a = next(&mut vals, Val::text(n));
            let b = next(&mut vals, Val::text(n));
            conds.push(format!("(caller = {a} OR callee = {b})"));
        }
        if let Some(e) = &filter.endpoint_id {
            let a = next(&mut vals, Val::text(e));
            let b = next(&mut vals, Val::text(e));
            conds.push(format!("(source_id = {a} OR target_id = {b})"));
        }
        if let Some(s) = filter.sip_status {
            let p = next(&mut vals, Val::Int(Some(i64::from(s))));
            conds.push(format!("sip_status = {p}"));
        }
        if let Some(r) = &filter.ript_reason {
            let p = next(&mut vals, Val::text(r));
            conds.push(format!("ript_reason = {p}"));
        }
        let mut sql = "SELECT * FROM cdrs".to_owned();
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        let lim = next(&mut vals, Val::Int(Some(page.sql_limit())));
        let off = next(&mut vals, Val::Int(Some(page.sql_offset()?)));
        sql.push_str(&format!(
            " ORDER BY started_at DESC, id DESC LIMIT {lim} OFFSET {off}"
        ));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in vals {
            q = bind(q, v);
        }
        let rows = q.fetch_all(self.store.pool()).await?;
        rows.iter().map(|r| cdr(&Row(r))).collect()
    }
}
