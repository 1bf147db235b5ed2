//! The OpenAPI document: info, the bearer scheme, and the problem responses every operation
//! can produce, added here once instead of on each handler.

use crate::error::{PROBLEM_JSON, Problem};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi as _};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ript-gateway admin API",
        description = "Configuration, live calls, CDRs, health and metrics of a SIP/RTP ⇄ RIPT \
                       gateway. Errors are RFC 9457 problem documents \
                       (`application/problem+json`) with a `field` member naming the input at \
                       fault. Secrets are write-only: responses show `\"***\"`.",
    ),
    components(schemas(Problem)),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
pub(crate) struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An admin token: the configured static token or one issued into the \
                         store",
                    ))
                    .build(),
            ),
        );
    }
}

pub(crate) fn base() -> OpenApi {
    ApiDoc::openapi()
}

fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// Adds the problem responses an operation can produce, judged from its shape: every
/// operation can meet a 400/503; secured ones a 401; ones with a body 413/415/422; ones with
/// a path parameter a 404.
pub(crate) fn add_problem_responses(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            let secured = op.security.as_ref().is_none_or(|s| !s.is_empty());
            let has_body = op.request_body.is_some();
            let has_path_param = op.parameters.as_ref().is_some_and(|ps| {
                ps.iter()
                    .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Path))
            });
            let responses = &mut op.responses.responses;
            let mut add = |code: &str, text: &str| {
                responses
                    .entry(code.to_owned())
                    .or_insert_with(|| problem(text).into());
            };
            add("400", "Malformed request (query string or JSON syntax)");
            if secured {
                add("401", "Missing or invalid admin token");
            }
            if has_path_param {
                add("404", "No such id");
            }
            if has_body {
                add("413", "Body larger than 64 KiB");
                add("415", "Body is not application/json");
                add("422", "A field is missing, of the wrong type or refused");
            }
            add("503", "The database (or another dependency) is unavailable");
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_routes_are_public_and_the_rest_secured() {
        let doc = serde_json::to_value(crate::openapi()).unwrap_or_default();
        assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
        for public in ["/healthz", "/readyz"] {
            assert_eq!(
                doc["paths"][public]["get"]["security"],
                // OpenAPI 3.1 §4.8.10: an empty list removes the top-level requirement.
                serde_json::json!([]),
                "{public}"
            );
        }
        assert!(doc["paths"]["/metrics"]["get"].get("security").is_none());
    }
}
