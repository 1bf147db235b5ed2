//! `/healthz`, `/readyz`, `/metrics` and `/api/v1/openapi.json`.

use crate::AdminState;
use crate::error::{Error, Problem};
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// What the process knows about its own readiness beyond the database: listeners bound, not
/// draining for shutdown, … The gateway implements it; the default is always ready.
pub trait ReadinessProbe: Send + Sync + 'static {
    /// Short names of the components that are not ready (e.g. `"sip-listener"`); empty when
    /// everything is. Called on every `/readyz`, so it must be cheap and must not block.
    fn not_ready(&self) -> Vec<&'static str>;
}

/// A probe for a process with no listeners of its own to report.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysReady;

impl ReadinessProbe for AlwaysReady {
    fn not_ready(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// Body of a successful health or readiness check.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: String,
}

/// Liveness: the process serves HTTP. No authentication, no database.
#[utoipa::path(get, path = "/healthz", tag = "health", security(),
    responses((status = 200, description = "The process is up", body = Status)))]
pub(crate) async fn healthz() -> crate::extract::Json<Status> {
    crate::extract::Json(Status {
        status: "ok".to_owned(),
    })
}

/// Readiness: the database answers and the gateway's listeners are up. No authentication.
#[utoipa::path(get, path = "/readyz", tag = "health", security(),
    responses(
        (status = 200, description = "Ready for traffic", body = Status),
        (status = 503, description = "Not ready; `detail` names what is missing", body = Problem,
         content_type = "application/problem+json"),
    ))]
pub(crate) async fn readyz(
    State(s): State<AdminState>,
) -> Result<crate::extract::Json<Status>, Error> {
    s.metrics
        .time_db("config_version", s.store.config_version())
        .await?;
    let missing = s.readiness.not_ready();
    if let Some(first) = missing.first() {
        return Err(Error::Unavailable { what: first });
    }
    Ok(crate::extract::Json(Status {
        status: "ready".to_owned(),
    }))
}

/// Prometheus metrics in the text exposition format. Needs the admin token.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String,
        content_type = "text/plain; version=0.0.4")))]
pub(crate) async fn metrics(State(s): State<AdminState>) -> Response {
    let mut res = s.metrics.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// The served OpenAPI document, rendered once when the router was built.
#[derive(Debug, Clone)]
pub(crate) struct OpenApiJson(pub Arc<String>);

/// This API's OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub(crate) async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> Response {
    let mut res = doc.0.as_str().to_owned().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
