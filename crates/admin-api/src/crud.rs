//! The create/read/update/delete shared by the configuration resources, and a macro stamping
//! out their documented handlers.

use crate::AdminState;
use crate::common::created;
use crate::error::Error;
use crate::extract::Json;
use crate::secret::Mode;
use axum::response::IntoResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;
use store::{Repo, Resource, Scope, Store};

/// An API document for a store resource: what the API accepts and shows (secrets masked).
pub(crate) trait Document: Sized + Serialize + DeserializeOwned + Send {
    type Model: Resource + Send + Sync;
    /// The collection's path segment (`sip-peers`), for `Location`.
    const COLLECTION: &'static str;
    fn repo(store: &Store) -> Repo<'_, Self::Model>;
    fn from_model(m: Self::Model) -> Self;
    fn into_model(self, mode: Mode<'_, Self::Model>) -> Result<Self::Model, Error>;
    /// Whether the document says `"***"` for a secret, i.e. an update must read the row.
    fn keeps_a_secret(&self) -> bool {
        false
    }
}

pub(crate) async fn create<D: Document>(
    s: &AdminState,
    op: &'static str,
    doc: D,
) -> Result<impl IntoResponse + use<D>, Error> {
    let value = doc.into_model(Mode::Create)?;
    let stored = s
        .metrics
        .time_db(op, D::repo(&s.store).create(&Scope::Admin, value))
        .await?;
    let id = stored.id().to_owned();
    Ok(created(D::COLLECTION, &id, Json(D::from_model(stored))))
}

pub(crate) async fn get<D: Document>(
    s: &AdminState,
    op: &'static str,
    id: &str,
) -> Result<Json<D>, Error> {
    let m = s
        .metrics
        .time_db(op, D::repo(&s.store).get(&Scope::Admin, id))
        .await?;
    Ok(Json(D::from_model(m)))
}

pub(crate) async fn update<D: Document>(
    s: &AdminState,
    op: &'static str,
    id: &str,
    doc: D,
) -> Result<Json<D>, Error> {
    // Only a document keeping a secret needs the stored row (a concurrent change between
    // this read and the write can at worst keep a secret that was replaced meanwhile).
    let old = if doc.keeps_a_secret() {
        Some(
            s.metrics
                .time_db(op, D::repo(&s.store).get(&Scope::Admin, id))
                .await?,
        )
    } else {
        None
    };
    let value = doc.into_model(Mode::Update(old.as_ref()))?;
    let stored = s
        .metrics
        .time_db(op, D::repo(&s.store).update(&Scope::Admin, id, value))
        .await?;
    Ok(Json(D::from_model(stored)))
}

pub(crate) async fn delete(
    s: &AdminState,
    op: &'static str,
    f: impl Future<Output = store::Result<()>>,
) -> Result<axum::http::StatusCode, Error> {
    s.metrics.time_db(op, f).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

pub(crate) async fn list<D: Document>(
    s: &AdminState,
    op: &'static str,
    paging: crate::common::Paging,
) -> Result<Json<crate::common::List<D>>, Error> {
    let page = paging.page()?;
    let items = s
        .metrics
        .time_db(op, D::repo(&s.store).list(&Scope::Admin, page))
        .await?;
    Ok(Json(
        paging.list(items.into_iter().map(D::from_model).collect())?,
    ))
}

/// The documented create/get/update/delete handlers of a [`Document`] type:
/// `crud_handlers!(Doc, "tag", "/collection", "/collection/{id}", "metric_prefix");`
macro_rules! crud_handlers {
    ($doc:ident, $tag:literal, $coll:literal, $item:literal, $op:literal) => {
        #[doc = concat!("Create one; `Location` names it.")]
        #[utoipa::path(post, path = $coll, tag = $tag, request_body = $doc,
                    responses(
                        (status = 201, description = "Created", body = $doc),
                        (status = 409, description = "A unique field is taken; `field` names it",
                         body = crate::error::Problem, content_type = "application/problem+json"),
                    ))]
        pub(crate) async fn create(
            axum::extract::State(s): axum::extract::State<crate::AdminState>,
            crate::extract::Json(doc): crate::extract::Json<$doc>,
        ) -> Result<impl axum::response::IntoResponse, crate::error::Error> {
            crate::crud::create::<$doc>(&s, concat!($op, ".create"), doc).await
        }

        #[doc = "Read one."]
        #[utoipa::path(get, path = $item, tag = $tag, params(("id" = String, Path)),
                    responses((status = 200, description = "Found", body = $doc)))]
        pub(crate) async fn get(
            axum::extract::State(s): axum::extract::State<crate::AdminState>,
            crate::extract::Id(id): crate::extract::Id,
        ) -> Result<crate::extract::Json<$doc>, crate::error::Error> {
            crate::crud::get::<$doc>(&s, concat!($op, ".get"), &id).await
        }

        #[doc = "Replace one. Secrets sent as `\"***\"` keep their stored values."]
        #[utoipa::path(put, path = $item, tag = $tag, params(("id" = String, Path)),
                    request_body = $doc,
                    responses(
                        (status = 200, description = "As stored", body = $doc),
                        (status = 409, description = "A unique field is taken; `field` names it",
                         body = crate::error::Problem, content_type = "application/problem+json"),
                    ))]
        pub(crate) async fn update(
            axum::extract::State(s): axum::extract::State<crate::AdminState>,
            crate::extract::Id(id): crate::extract::Id,
            crate::extract::Json(doc): crate::extract::Json<$doc>,
        ) -> Result<crate::extract::Json<$doc>, crate::error::Error> {
            crate::crud::update::<$doc>(&s, concat!($op, ".update"), &id, doc).await
        }

        #[doc = "Delete one."]
        #[utoipa::path(delete, path = $item, tag = $tag, params(("id" = String, Path)),
                    responses((status = 204, description = "Deleted")))]
        pub(crate) async fn delete(
            axum::extract::State(s): axum::extract::State<crate::AdminState>,
            crate::extract::Id(id): crate::extract::Id,
        ) -> Result<axum::http::StatusCode, crate::error::Error> {
            let repo = <$doc as crate::crud::Document>::repo(&s.store);
            crate::crud::delete(
                &s,
                concat!($op, ".delete"),
                repo.delete(&store::Scope::Admin, &id),
            )
            .await
        }
    };
}
pub(crate) use crud_handlers;
