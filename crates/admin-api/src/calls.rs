//! `/api/v1/calls`: live calls from the store's snapshots, and hang-up through the gateway.

use crate::AdminState;
use crate::common::{List, Paging};
use crate::error::Error;
use crate::extract::{Id, Json, Query};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use utoipa::{IntoParams, ToSchema};

/// What became of a hang-up request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangUp {
    /// The call is being torn down (BYE / RIPT end sent).
    Ending,
    /// This instance drives no such call.
    NotFound,
    /// The call lives on another instance (its snapshot names which).
    OtherInstance,
    /// Call control is not available on this instance.
    Unavailable,
}

/// How the API ends a live call; the gateway implements it over its call tasks.
pub trait CallControl: Send + Sync + 'static {
    fn hang_up<'a>(&'a self, call_id: &'a str)
    -> Pin<Box<dyn Future<Output = HangUp> + Send + 'a>>;
}

/// Call control for a process without calls: every hang-up is refused as unavailable (it
/// cannot honestly claim to have ended anything).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCallControl;

impl CallControl for NoCallControl {
    fn hang_up<'a>(&'a self, _: &'a str) -> Pin<Box<dyn Future<Output = HangUp> + Send + 'a>> {
        Box::pin(std::future::ready(HangUp::Unavailable))
    }
}

/// A live call. Only identifying and state fields: the legs' internals and the RIPT cookies
/// (session credentials) stay in the store.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Call {
    pub id: String,
    /// The gateway instance driving the call.
    pub instance_id: String,
    pub state: String,
    pub sip_call_id: Option<String>,
    pub ript_call_id: Option<String>,
    pub revision: i64,
    /// Epoch milliseconds.
    pub started_at: i64,
    pub updated_at: i64,
}

impl From<store::calls::CallSnapshot> for Call {
    fn from(c: store::calls::CallSnapshot) -> Self {
        Call {
            id: c.id,
            instance_id: c.instance_id,
            state: c.state,
            sip_call_id: c.sip_call_id,
            ript_call_id: c.ript_call_id,
            revision: c.revision,
            started_at: c.started_at,
            updated_at: c.updated_at,
        }
    }
}

/// `GET /calls` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CallQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u64>,
    /// The instance whose calls to list; defaults to this instance.
    pub instance_id: Option<String>,
}

/// List the live calls of one gateway instance (this one by default).
#[utoipa::path(get, path = "/calls", tag = "calls", params(CallQuery),
    responses((status = 200, description = "A page of live calls", body = List<Call>)))]
pub(crate) async fn list(
    State(s): State<AdminState>,
    Query(q): Query<CallQuery>,
) -> Result<Json<List<Call>>, Error> {
    let paging = Paging {
        limit: q.limit,
        offset: q.offset,
    };
    let page = paging.page()?;
    let Some(instance) = q.instance_id.or_else(|| s.instance_id.clone()) else {
        return Err(Error::BadRequest {
            field: Some("instance_id".to_owned()),
            reason: "this process has no instance id; name one".to_owned(),
        });
    };
    // The store lists one instance's calls whole; paging is applied here.
    let calls = s
        .metrics
        .time_db(
            "calls.list_by_instance",
            s.store.calls().list_by_instance(&instance),
        )
        .await?;
    let skip = usize::try_from(page.offset).unwrap_or(usize::MAX);
    let take = usize::try_from(page.limit).unwrap_or(usize::MAX);
    let items = calls
        .into_iter()
        .skip(skip)
        .take(take)
        .map(Call::from)
        .collect();
    Ok(Json(paging.list(items)?))
}

/// Read one live call.
#[utoipa::path(get, path = "/calls/{id}", tag = "calls", params(("id" = String, Path)),
    responses((status = 200, description = "The call", body = Call)))]
pub(crate) async fn get(State(s): State<AdminState>, Id(id): Id) -> Result<Json<Call>, Error> {
    let c = s
        .metrics
        .time_db("calls.get", s.store.calls().get(&id))
        .await?;
    Ok(Json(c.into()))
}

/// Hang up a live call.
#[utoipa::path(delete, path = "/calls/{id}", tag = "calls", params(("id" = String, Path)),
    responses(
        (status = 202, description = "The call is being ended"),
        (status = 409, description = "Another instance drives the call; send the request to it",
         body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn hang_up(State(s): State<AdminState>, Id(id): Id) -> Result<StatusCode, Error> {
    let call = s
        .metrics
        .time_db("calls.get", s.store.calls().get(&id))
        .await?;
    match s.calls.hang_up(&call.id).await {
        HangUp::Ending => Ok(StatusCode::ACCEPTED),
        HangUp::NotFound => Err(Error::NotFound { kind: "call" }),
        HangUp::OtherInstance => Err(Error::Conflict {
            field: "instance_id".to_owned(),
        }),
        HangUp::Unavailable => Err(Error::Unavailable {
            what: "call control",
        }),
    }
}
