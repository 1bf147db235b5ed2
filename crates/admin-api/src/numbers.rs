//! `/api/v1/numbers`: E.164 numbers or ranges and who owns them.

use crate::AdminState;
use crate::common::{Endpoint, List, Paging};
use crate::crud::{Document, crud_handlers};
use crate::error::Error;
use crate::extract::{Json, Query};
use crate::secret::Mode;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use store::number as model;
use utoipa::ToSchema;

/// A number or range (request and response document; `id` and the timestamps are read-only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumberBlock {
    #[serde(default)]
    #[schema(read_only)]
    pub id: String,
    /// The customer owning the block when it belongs to a hosted TG.
    pub tenant: Option<String>,
    /// The first (or only) number, E.164 (unique).
    #[schema(example = "+14085550100")]
    pub first: String,
    /// The last number of a range: same length as `first`, not below it.
    pub last: Option<String>,
    pub owner: Endpoint,
    /// Whether we vouch for these numbers as caller ID (attestation A).
    pub vouch: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    #[schema(read_only)]
    pub created_at: i64,
    #[serde(default)]
    #[schema(read_only)]
    pub updated_at: i64,
}

impl Document for NumberBlock {
    type Model = model::NumberBlock;
    const COLLECTION: &'static str = "numbers";

    fn repo(store: &store::Store) -> store::Repo<'_, Self::Model> {
        store.numbers()
    }

    fn from_model(n: Self::Model) -> Self {
        NumberBlock {
            id: n.id,
            tenant: n.tenant,
            first: n.first,
            last: n.last,
            owner: n.owner.into(),
            vouch: n.vouch,
            description: n.description,
            created_at: n.created_at,
            updated_at: n.updated_at,
        }
    }

    fn into_model(self, _: Mode<'_, Self::Model>) -> Result<Self::Model, Error> {
        Ok(model::NumberBlock {
            id: String::new(),
            tenant: self.tenant,
            first: self.first,
            last: self.last,
            owner: self.owner.into(),
            vouch: self.vouch,
            description: self.description,
            created_at: 0,
            updated_at: 0,
        })
    }
}

/// List numbers in creation order.
#[utoipa::path(get, path = "/numbers", tag = "numbers", params(Paging),
    responses((status = 200, description = "A page of numbers", body = List<NumberBlock>)))]
pub(crate) async fn list(
    State(s): State<AdminState>,
    Query(paging): Query<Paging>,
) -> Result<Json<List<NumberBlock>>, Error> {
    crate::crud::list(&s, "numbers.list", paging).await
}

crud_handlers!(
    NumberBlock,
    "numbers",
    "/numbers",
    "/numbers/{id}",
    "numbers"
);
