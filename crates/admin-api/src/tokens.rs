//! `/api/v1/admin-tokens`: tokens for this API, issued into the store (the secret is shown
//! once, stored hashed).

use crate::AdminState;
use crate::common::{List, Paging, created};
use crate::error::Error;
use crate::extract::{Id, Json, Query};
use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What to issue.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdminToken {
    /// Unique name (who or what uses the token).
    pub name: String,
}

/// An admin token as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

impl From<store::admin_token::AdminToken> for AdminToken {
    fn from(t: store::admin_token::AdminToken) -> Self {
        AdminToken {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
        }
    }
}

/// A freshly issued admin token with its secret: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedAdminToken {
    #[serde(flatten)]
    pub token: AdminToken,
    /// The bearer token. Store it now: it cannot be read again.
    pub secret: String,
}

/// Issue an admin token (accepted when the API verifies store tokens).
#[utoipa::path(post, path = "/admin-tokens", tag = "admin-tokens", request_body = NewAdminToken,
    responses(
        (status = 201, description = "Issued; the secret is in this response only", body = IssuedAdminToken),
        (status = 409, description = "The name is taken", body = crate::error::Problem,
         content_type = "application/problem+json"),
    ))]
pub(crate) async fn issue(
    State(s): State<AdminState>,
    Json(new): Json<NewAdminToken>,
) -> Result<impl IntoResponse, Error> {
    let (token, secret) = s
        .metrics
        .time_db(
            "admin_tokens.issue",
            s.store.admin_tokens().issue(&new.name),
        )
        .await?;
    let id = token.id.clone();
    Ok(created(
        "admin-tokens",
        &id,
        Json(IssuedAdminToken {
            token: token.into(),
            secret: secret.expose().to_owned(),
        }),
    ))
}

/// List admin tokens (without secrets).
#[utoipa::path(get, path = "/admin-tokens", tag = "admin-tokens", params(Paging),
    responses((status = 200, description = "A page of tokens", body = List<AdminToken>)))]
pub(crate) async fn list(
    State(s): State<AdminState>,
    Query(paging): Query<Paging>,
) -> Result<Json<List<AdminToken>>, Error> {
    let page = paging.page()?;
    let items = s
        .metrics
        .time_db("admin_tokens.list", s.store.admin_tokens().list(page))
        .await?;
    Ok(Json(
        paging.list(items.into_iter().map(Into::into).collect())?,
    ))
}

/// Revoke an admin token.
#[utoipa::path(delete, path = "/admin-tokens/{id}", tag = "admin-tokens",
    params(("id" = String, Path)), responses((status = 204, description = "Revoked")))]
pub(crate) async fn revoke(
    State(s): State<AdminState>,
    Id(id): Id,
) -> Result<axum::http::StatusCode, Error> {
    crate::crud::delete(
        &s,
        "admin_tokens.revoke",
        s.store.admin_tokens().revoke(&id),
    )
    .await
}
