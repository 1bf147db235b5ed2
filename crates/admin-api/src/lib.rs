//! The operator REST API: configuration CRUD over [`store`], live calls, CDR queries,
//! health, readiness, Prometheus metrics and the OpenAPI document describing all of it.
//!
//! # Shape
//! - `GET /healthz` (no auth), `GET /readyz` (no auth; database + [`ReadinessProbe`]),
//!   `GET /metrics` (admin token).
//! - `/api/v1/…` (admin token): CRUD of `sip-peers`, `upstreams`, `hosted-tgs`, `numbers`,
//!   `routes` (paged, `?limit=&offset=`); customer credentials (`POST
//!   /hosted-tgs/{id}/credentials` shows the secret once; `customer-credentials` lists and
//!   revokes); `admin-tokens` likewise; live `calls` (hang-up through [`CallControl`]);
//!   `cdrs` by time, number, endpoint and cause; `openapi.json`.
//! - Every error is an RFC 9457 problem document (`application/problem+json`) with a `field`
//!   member naming the input at fault; a last middleware turns any other error response
//!   (axum's 405, a path rejection, …) into one too, so plain-text errors never leave.
//! - Secrets are write-only: responses show `"***"`, and `"***"` in an update keeps the
//!   stored secret.

mod auth;
pub mod calls;
pub mod cdrs;
mod common;
mod crud;
mod error;
mod extract;
mod health;
pub mod hosted;
mod metrics;
pub mod numbers;
mod openapi;
pub mod peers;
pub mod routes;
mod secret;
pub mod tokens;
pub mod upstreams;

pub use auth::{AdminAuth, MIN_STATIC_TOKEN_LEN};
pub use calls::{CallControl, HangUp, NoCallControl};
pub use common::{Endpoint, List, Paging};
pub use error::{Error, PROBLEM_JSON, Problem, Result};
pub use health::{AlwaysReady, ReadinessProbe, Status};
pub use metrics::{Direction, Flow, MediaLeg, Metrics};
pub use secret::{MASK, SecretValue};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    store: store::Store,
    auth: AdminAuth,
    readiness: Arc<dyn ReadinessProbe>,
    calls: Arc<dyn CallControl>,
    /// This gateway instance's id: the default of `GET /calls`.
    instance_id: Option<String>,
    metrics: Metrics,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("store", &self.store)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// A state that is ready whenever the database is, and whose call hang-ups are refused
    /// until the gateway plugs in its call control.
    pub fn new(store: store::Store, auth: AdminAuth, metrics: Metrics) -> Self {
        AdminState {
            store,
            auth,
            readiness: Arc::new(AlwaysReady),
            calls: Arc::new(NoCallControl),
            instance_id: None,
            metrics,
        }
    }

    /// Plugs in the gateway's call control (hang-ups are refused with 503 until then).
    pub fn with_call_control(mut self, calls: Arc<dyn CallControl>) -> Self {
        self.calls = calls;
        self
    }

    /// Names this gateway instance (the instance whose calls `GET /calls` lists by default).
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Replaces the readiness probe (the gateway reports its listeners through it).
    pub fn with_readiness(mut self, probe: Arc<dyn ReadinessProbe>) -> Self {
        self.readiness = probe;
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Every route with its OpenAPI description, state not yet applied.
fn routes() -> OpenApiRouter<AdminState> {
    // The auth middleware finds the state in an extension (added in `router`), so the routes
    // and their document can be built without a store.
    let admin = || middleware::from_fn(auth::require_admin);
    let api = OpenApiRouter::new()
        .routes(routes!(health::openapi_json))
        .routes(routes!(peers::list, peers::create))
        .routes(routes!(peers::get, peers::update, peers::delete))
        .routes(routes!(upstreams::list, upstreams::create))
        .routes(routes!(
            upstreams::get,
            upstreams::update,
            upstreams::delete
        ))
        .routes(routes!(hosted::list, hosted::create))
        .routes(routes!(hosted::get, hosted::update, hosted::delete))
        .routes(routes!(hosted::issue_credential))
        .routes(routes!(hosted::list_credentials))
        .routes(routes!(hosted::revoke_credential))
        .routes(routes!(numbers::list, numbers::create))
        .routes(routes!(numbers::get, numbers::update, numbers::delete))
        .routes(routes!(routes::list, routes::create))
        .routes(routes!(routes::get, routes::update, routes::delete))
        .routes(routes!(calls::list))
        .routes(routes!(calls::get, calls::hang_up))
        .routes(routes!(cdrs::list))
        .routes(routes!(cdrs::get))
        .routes(routes!(tokens::issue, tokens::list))
        .routes(routes!(tokens::revoke))
        .fallback(no_route)
        .layer(admin());
    let metrics = OpenApiRouter::new()
        .routes(routes!(health::metrics))
        .layer(admin());
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .merge(metrics)
        .nest("/api/v1", api)
}

/// The OpenAPI document of [`router`], as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().into_openapi();
    openapi::add_problem_responses(&mut doc);
    doc
}

/// The admin API over `state`.
pub fn router(state: AdminState) -> Router {
    let (router, mut doc) = routes().split_for_parts();
    openapi::add_problem_responses(&mut doc);
    let json = doc.to_json().unwrap_or_default();
    router
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::Extension(health::OpenApiJson(Arc::new(json))))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(axum::Extension(state.clone()))
        .layer(middleware::from_fn(problems_only))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serves `router` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in flight
/// finish.
pub async fn serve_with_shutdown(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn no_route() -> Error {
    Error::NotFound { kind: "route" }
}

async fn wrong_method() -> Error {
    Error::MethodNotAllowed
}

/// Counts and times each request by its matched route (never the raw path, which holds ids
/// and, for CDR queries, phone numbers).
async fn track(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16();
    s.metrics
        .http_request(&route, &method, status, start.elapsed().as_secs_f64());
    tracing::debug!(%method, %route, status, "admin request");
    res
}

/// The last line of defence: an error response that is not already a problem document (an
/// axum rejection or default) is replaced by one with the same status and headers.
async fn problems_only(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if is_problem {
        return res;
    }
    let (mut parts, _body) = res.into_parts();
    let problem = Problem {
        type_: format!("urn:ript-gateway:problem:http-{}", status.as_u16()),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: None,
        field: None,
    };
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    Response::from_parts(parts, Body::from(body)).into_response()
}
