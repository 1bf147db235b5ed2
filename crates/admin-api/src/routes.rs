//! `/api/v1/routes`: which calls from a source go to which targets.

use crate::AdminState;
use crate::common::{Endpoint, List, Paging, string_enum, yes};
use crate::crud::{Document, crud_handlers};
use crate::error::Error;
use crate::extract::{Json, Query};
use crate::secret::Mode;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use store::Scope;
use store::model::EndpointKind;
use store::route as model;
use utoipa::{IntoParams, ToSchema};

/// One target; lower `priority` is tried first, `weight` splits load within a priority.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    pub endpoint: Endpoint,
    pub priority: u32,
    pub weight: u32,
}

/// A route (request and response document; `id` and the timestamps are read-only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    #[schema(read_only)]
    pub id: String,
    /// Unique name.
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Among routes matching a call, the lowest value wins.
    pub priority: u32,
    pub source: Endpoint,
    /// RIPT number pattern (`+1408*,!+14085551212`).
    pub destination_pattern: String,
    pub caller_pattern: Option<String>,
    pub targets: Vec<RouteTarget>,
    #[serde(default)]
    #[schema(read_only)]
    pub created_at: i64,
    #[serde(default)]
    #[schema(read_only)]
    pub updated_at: i64,
}

impl Document for Route {
    type Model = model::Route;
    const COLLECTION: &'static str = "routes";

    fn repo(store: &store::Store) -> store::Repo<'_, Self::Model> {
        store.routes()
    }

    fn from_model(r: Self::Model) -> Self {
        Route {
            id: r.id,
            name: r.name,
            enabled: r.enabled,
            priority: r.priority,
            source: r.source.into(),
            destination_pattern: r.destination_pattern,
            caller_pattern: r.caller_pattern,
            targets: r
                .targets
                .into_iter()
                .map(|t| RouteTarget {
                    endpoint: t.endpoint.into(),
                    priority: t.priority,
                    weight: t.weight,
                })
                .collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }

    fn into_model(self, _: Mode<'_, Self::Model>) -> Result<Self::Model, Error> {
        Ok(model::Route {
            id: String::new(),
            name: self.name,
            enabled: self.enabled,
            priority: self.priority,
            source: self.source.into(),
            destination_pattern: self.destination_pattern,
            caller_pattern: self.caller_pattern,
            targets: self
                .targets
                .into_iter()
                .map(|t| model::RouteTarget {
                    endpoint: t.endpoint.into(),
                    priority: t.priority,
                    weight: t.weight,
                })
                .collect(),
            created_at: 0,
            updated_at: 0,
        })
    }
}

fn source_kind_schema() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    string_enum(&["sip_peer", "upstream", "hosted_tg"])
}

/// Paging and the source filter of `GET /routes` (`source_kind` and `source_id` together).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RouteQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u64>,
    /// Only routes from sources of this kind (needs `source_id`).
    #[param(schema_with = source_kind_schema)]
    pub source_kind: Option<EndpointKind>,
    /// Only routes from this source (needs `source_kind`).
    pub source_id: Option<String>,
}

/// List routes in creation order, optionally only those of one source.
#[utoipa::path(get, path = "/routes", tag = "routes", params(RouteQuery),
    responses((status = 200, description = "A page of routes", body = List<Route>)))]
pub(crate) async fn list(
    State(s): State<AdminState>,
    Query(q): Query<RouteQuery>,
) -> Result<Json<List<Route>>, Error> {
    let paging = Paging {
        limit: q.limit,
        offset: q.offset,
    };
    let page = paging.page()?;
    let repo = s.store.routes();
    let items = match (q.source_kind, q.source_id) {
        (Some(kind), Some(id)) => {
            let source = store::model::Endpoint { kind, id };
            s.metrics
                .time_db(
                    "routes.list_for_source",
                    repo.list_for_source(&source, page),
                )
                .await?
        }
        (None, None) => {
            s.metrics
                .time_db("routes.list", repo.list(&Scope::Admin, page))
                .await?
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::BadRequest {
                field: Some("source_id".to_owned()),
                reason: "source_kind and source_id go together".to_owned(),
            });
        }
    };
    Ok(Json(paging.list(
        items.into_iter().map(Route::from_model).collect(),
    )?))
}

crud_handlers!(Route, "routes", "/routes", "/routes/{id}", "routes");
