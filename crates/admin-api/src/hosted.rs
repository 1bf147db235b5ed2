//! `/api/v1/hosted-tgs`: trunk groups we host for customers, and the customers' credentials
//! (`POST /hosted-tgs/{id}/credentials` returns the secret once; it is stored hashed).

use crate::AdminState;
use crate::common::{List, Paging, created, string_enum, yes};
use crate::crud::{Document, crud_handlers};
use crate::error::Error;
use crate::extract::{Id, Json, Query};
use crate::secret::{Mode, SecretValue};
use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use store::Scope;
use store::hosted::{self as model, CredentialKind};
use utoipa::ToSchema;

/// A TG the customer registered with us, to which we deliver its inbound calls.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerTg {
    /// Unique within the hosted TG (an update keeps the token of the same-named entry).
    pub name: String,
    /// The customer's RIPT TG URL (`https://…`).
    pub url: String,
    /// Write-only bearer token we present to it.
    pub token: Option<SecretValue>,
}

/// A hosted TG (request and response document; `id` and the timestamps are read-only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostedTg {
    #[serde(default)]
    #[schema(read_only)]
    pub id: String,
    /// The customer owning this TG; names are unique per tenant.
    pub tenant: String,
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Number patterns the customer may use as caller ID (we vouch for them).
    pub vouched_numbers: Vec<String>,
    /// Refuse the customer's call creations without a valid PASSporT (`403`); a passport
    /// that is present is verified either way. Default `false`.
    #[serde(default)]
    pub require_passport: bool,
    /// Destinations the customer may call (RIPT number pattern).
    pub destination_pattern: String,
    /// The advertisement document served for this TG (a JSON object).
    #[schema(value_type = Object)]
    pub advertisement: serde_json::Value,
    #[serde(default)]
    pub customer_tgs: Vec<CustomerTg>,
    /// PEM certificates trusted when we call the customer TGs registered with this TG (the
    /// customer's RIPT server), instead of the system roots.
    #[serde(default)]
    pub customer_tg_trust_anchors_pem: Option<String>,
    pub max_cps: Option<u32>,
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    #[schema(read_only)]
    pub created_at: i64,
    #[serde(default)]
    #[schema(read_only)]
    pub updated_at: i64,
}

impl Document for HostedTg {
    type Model = model::HostedTg;
    const COLLECTION: &'static str = "hosted-tgs";

    fn repo(store: &store::Store) -> store::Repo<'_, Self::Model> {
        store.hosted_tgs()
    }

    fn from_model(t: Self::Model) -> Self {
        HostedTg {
            customer_tgs: t
                .customer_tgs
                .into_iter()
                .map(|c| CustomerTg {
                    token: c.token.map(|_| SecretValue::masked()),
                    name: c.name,
                    url: c.url,
                })
                .collect(),
            id: t.id,
            tenant: t.tenant,
            name: t.name,
            enabled: t.enabled,
            vouched_numbers: t.vouched_numbers,
            require_passport: t.require_passport,
            destination_pattern: t.destination_pattern,
            advertisement: t.advertisement,
            customer_tg_trust_anchors_pem: t.customer_tg_trust_anchors_pem,
            max_cps: t.max_cps,
            max_concurrent: t.max_concurrent,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }

    fn keeps_a_secret(&self) -> bool {
        self.customer_tgs
            .iter()
            .any(|c| c.token.as_ref().is_some_and(SecretValue::is_keep))
    }

    fn into_model(self, mode: Mode<'_, Self::Model>) -> Result<Self::Model, Error> {
        let customer_tgs = self
            .customer_tgs
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let field = format!("customer_tgs[{i}].token");
                let name = c.name.clone();
                let token = c
                    .token
                    .map(|t| {
                        mode.secret(&t, &field, |m: &model::HostedTg| {
                            m.customer_tgs
                                .iter()
                                .find(|old| old.name == name)
                                .and_then(|old| old.token.as_ref())
                        })
                    })
                    .transpose()?;
                Ok(model::CustomerTg {
                    name: c.name,
                    url: c.url,
                    token,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(model::HostedTg {
            customer_tgs,
            id: String::new(),
            tenant: self.tenant,
            name: self.name,
            enabled: self.enabled,
            vouched_numbers: self.vouched_numbers,
            require_passport: self.require_passport,
            destination_pattern: self.destination_pattern,
            advertisement: self.advertisement,
            customer_tg_trust_anchors_pem: self.customer_tg_trust_anchors_pem,
            max_cps: self.max_cps,
            max_concurrent: self.max_concurrent,
            created_at: 0,
            updated_at: 0,
        })
    }
}

/// List hosted TGs in creation order.
#[utoipa::path(get, path = "/hosted-tgs", tag = "hosted-tgs", params(Paging),
    responses((status = 200, description = "A page of hosted TGs", body = List<HostedTg>)))]
pub(crate) async fn list(
    State(s): State<AdminState>,
    Query(paging): Query<Paging>,
) -> Result<Json<List<HostedTg>>, Error> {
    crate::crud::list(&s, "hosted_tgs.list", paging).await
}

crud_handlers!(
    HostedTg,
    "hosted-tgs",
    "/hosted-tgs",
    "/hosted-tgs/{id}",
    "hosted_tgs"
);

fn credential_kind_schema() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>> {
    string_enum(&["token", "oauth_client"])
}

/// What to issue.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    /// Unique per tenant.
    pub name: String,
    /// A bearer token, or an OAuth client (client credentials grant) with a generated
    /// `client_id`.
    #[schema(schema_with = credential_kind_schema)]
    pub kind: CredentialKind,
}

/// A customer credential as listed; the secret is never shown again after issuing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CustomerCredential {
    pub id: String,
    pub tenant: String,
    pub hosted_tg_id: String,
    pub name: String,
    #[schema(schema_with = credential_kind_schema)]
    pub kind: CredentialKind,
    pub client_id: Option<String>,
    pub created_at: i64,
}

impl From<model::CustomerCredential> for CustomerCredential {
    fn from(c: model::CustomerCredential) -> Self {
        CustomerCredential {
            id: c.id,
            tenant: c.tenant,
            hosted_tg_id: c.hosted_tg_id,
            name: c.name,
            kind: c.kind,
            client_id: c.client_id,
            created_at: c.created_at,
        }
    }
}

/// A freshly issued credential with its secret: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedCredential {
    #[serde(flatten)]
    pub credential: CustomerCredential,
    /// The bearer token or OAuth client secret. Store it now: it cannot be read again.
    pub secret: String,
}

/// Issue a customer token or OAuth client for a hosted TG.
#[utoipa::path(post, path = "/hosted-tgs/{id}/credentials", tag = "hosted-tgs",
    params(("id" = String, Path, description = "The hosted TG")),
    request_body = NewCredential,
    responses(
        (status = 201, description = "Issued; the secret is in this response only", body = IssuedCredential),
        (status = 409, description = "The name is taken", body = crate::error::Problem,
         content_type = "application/problem+json"),
    ))]
pub(crate) async fn issue_credential(
    State(s): State<AdminState>,
    Id(tg): Id,
    Json(new): Json<NewCredential>,
) -> Result<impl IntoResponse, Error> {
    let (credential, secret) = s
        .metrics
        .time_db(
            "customer_credentials.issue",
            s.store
                .customer_credentials()
                .issue(&Scope::Admin, &tg, &new.name, new.kind),
        )
        .await?;
    let id = credential.id.clone();
    Ok(created(
        "customer-credentials",
        &id,
        Json(IssuedCredential {
            credential: credential.into(),
            secret: secret.expose().to_owned(),
        }),
    ))
}

/// List customer credentials (without secrets) in creation order.
#[utoipa::path(get, path = "/customer-credentials", tag = "hosted-tgs", params(Paging),
    responses((status = 200, description = "A page of credentials", body = List<CustomerCredential>)))]
pub(crate) async fn list_credentials(
    State(s): State<AdminState>,
    Query(paging): Query<Paging>,
) -> Result<Json<List<CustomerCredential>>, Error> {
    let page = paging.page()?;
    let items = s
        .metrics
        .time_db(
            "customer_credentials.list",
            s.store.customer_credentials().list(&Scope::Admin, page),
        )
        .await?;
    Ok(Json(
        paging.list(items.into_iter().map(Into::into).collect())?,
    ))
}

/// Revoke a customer credential.
#[utoipa::path(delete, path = "/customer-credentials/{id}", tag = "hosted-tgs",
    params(("id" = String, Path)), responses((status = 204, description = "Revoked")))]
pub(crate) async fn revoke_credential(
    State(s): State<AdminState>,
    Id(id): Id,
) -> Result<axum::http::StatusCode, Error> {
    crate::crud::delete(
        &s,
        "customer_credentials.revoke",
        s.store.customer_credentials().revoke(&Scope::Admin, &id),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_schema_matches_the_store() {
        for v in ["token", "oauth_client"] {
            assert!(
                serde_json::from_value::<CredentialKind>(v.into()).is_ok(),
                "{v}"
            );
        }
    }
}
