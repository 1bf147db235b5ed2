//! `/api/v1/cdrs`: call detail records by time, number, endpoint and cause.

use crate::AdminState;
use crate::common::{Endpoint, List, Paging};
use crate::error::Error;
use crate::extract::{Id, Json, Query};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Media counters of a call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MediaCounters {
    pub rtp_packets_in: u64,
    pub rtp_packets_out: u64,
    pub ript_chunks_in: u64,
    pub ript_chunks_out: u64,
    pub packets_lost: u64,
}

/// One finished call. Times are epoch milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Cdr {
    pub id: String,
    pub call_id: String,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    /// Answered time (0 when not answered).
    pub duration_ms: i64,
    pub caller: String,
    pub callee: String,
    pub source: Endpoint,
    pub target: Option<Endpoint>,
    pub route_id: Option<String>,
    pub sip_call_id: Option<String>,
    pub ript_call_id: Option<String>,
    pub sip_codec: Option<String>,
    pub ript_codec: Option<String>,
    /// Final SIP status (the cause on the SIP side).
    pub sip_status: Option<u16>,
    /// RIPT end reason (the cause on the RIPT side).
    pub ript_reason: Option<String>,
    pub media: MediaCounters,
}

impl From<store::cdr::Cdr> for Cdr {
    fn from(c: store::cdr::Cdr) -> Self {
        Cdr {
            duration_ms: c.duration_ms(),
            id: c.id,
            call_id: c.call_id,
            started_at: c.started_at,
            answered_at: c.answered_at,
            ended_at: c.ended_at,
            caller: c.caller,
            callee: c.callee,
            source: c.source.into(),
            target: c.target.map(Into::into),
            route_id: c.route_id,
            sip_call_id: c.sip_call_id,
            ript_call_id: c.ript_call_id,
            sip_codec: c.sip_codec,
            ript_codec: c.ript_codec,
            sip_status: c.sip_status,
            ript_reason: c.ript_reason,
            media: MediaCounters {
                rtp_packets_in: c.media.rtp_packets_in,
                rtp_packets_out: c.media.rtp_packets_out,
                ript_chunks_in: c.media.ript_chunks_in,
                ript_chunks_out: c.media.ript_chunks_out,
                packets_lost: c.media.packets_lost,
            },
        }
    }
}

/// `GET /cdrs` filters (all optional, combined with AND) and paging. Newest first.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CdrQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u64>,
    /// Calls started at or after this time (epoch ms).
    pub from: Option<i64>,
    /// Calls started before this time (epoch ms).
    pub to: Option<i64>,
    /// Calls from or to this number.
    pub number: Option<String>,
    /// Calls whose source or target is this peer, upstream or hosted TG id.
    pub peer: Option<String>,
    /// Calls that ended with this SIP status.
    #[param(minimum = 100, maximum = 699)]
    pub sip_status: Option<u16>,
    /// Calls that ended with this RIPT reason.
    pub ript_reason: Option<String>,
}

/// Query CDRs, newest first.
#[utoipa::path(get, path = "/cdrs", tag = "cdrs", params(CdrQuery),
    responses((status = 200, description = "A page of CDRs", body = List<Cdr>)))]
pub(crate) async fn list(
    State(s): State<AdminState>,
    Query(q): Query<CdrQuery>,
) -> Result<Json<List<Cdr>>, Error> {
    let paging = Paging {
        limit: q.limit,
        offset: q.offset,
    };
    let page = paging.page()?;
    if let (Some(from), Some(to)) = (q.from, q.to)
        && to < from
    {
        return Err(Error::BadRequest {
            field: Some("to".to_owned()),
            reason: "before from".to_owned(),
        });
    }
    let filter = store::cdr::CdrFilter {
        from: q.from,
        to: q.to,
        number: q.number,
        endpoint_id: q.peer,
        sip_status: q.sip_status,
        ript_reason: q.ript_reason,
    };
    let items = s
        .metrics
        .time_db("cdrs.query", s.store.cdrs().query(&filter, page))
        .await?;
    Ok(Json(
        paging.list(items.into_iter().map(Cdr::from).collect())?,
    ))
}

/// Read one CDR.
#[utoipa::path(get, path = "/cdrs/{id}", tag = "cdrs", params(("id" = String, Path)),
    responses((status = 200, description = "The CDR", body = Cdr)))]
pub(crate) async fn get(State(s): State<AdminState>, Id(id): Id) -> Result<Json<Cdr>, Error> {
    let c = s
        .metrics
        .time_db("cdrs.get", s.store.cdrs().get(&id))
        .await?;
    Ok(Json(c.into()))
}
