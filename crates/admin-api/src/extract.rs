//! Request extractors whose rejections are problem documents naming the field at fault
//! (axum's own rejections are plain text and say nothing about which field).

use crate::error::Error;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A JSON body: `application/json`, at most [`crate::BODY_LIMIT`] bytes, deserialized with
/// the path of a failing field recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json {
            return Err(Error::UnsupportedMediaType);
        }
        // An announced length over the limit is refused before anything is read (hyper sends
        // `100 Continue` only once the body is polled, so such a client never sends it).
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > crate::BODY_LIMIT as u64) {
            return Err(Error::TooLarge {
                limit: crate::BODY_LIMIT,
            });
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::TooLarge {
                    limit: crate::BODY_LIMIT,
                }
            } else {
                Error::BadRequest {
                    field: None,
                    reason: "the body could not be read".to_owned(),
                }
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Deserializes `bytes`: syntax errors are 400, type and shape errors 422, both naming the
/// field. Strings holding NUL are refused up front (422): Postgres cannot store NUL in TEXT,
/// and that must not surface later as a database error.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::BadRequest {
            field: None,
            reason: match e.classify() {
                serde_json::error::Category::Eof => "truncated JSON".to_owned(),
                _ => format!("malformed JSON at line {} column {}", e.line(), e.column()),
            },
        })?;
    // Every request body of this API is an object (serde would otherwise accept a struct as
    // an array of its fields and report the error at "[0]").
    if !value.is_object() {
        return Err(Error::Invalid {
            field: "body".to_owned(),
            reason: "expected a JSON object".to_owned(),
        });
    }
    if let Some(path) = nul_path(&value, String::new()) {
        return Err(Error::Invalid {
            field: if path.is_empty() {
                "body".to_owned()
            } else {
                path
            },
            reason: "contains a NUL character".to_owned(),
        });
    }
    serde_path_to_error::deserialize(value).map_err(
        |e: serde_path_to_error::Error<serde_json::Error>| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            Error::Invalid {
                field: field_of(&path, &message).unwrap_or_else(|| "body".to_owned()),
                reason: reason_without_value(&message),
            }
        },
    )
}

/// The path (`a.b[2]`) of the first string or key containing NUL.
fn nul_path(v: &serde_json::Value, here: String) -> Option<String> {
    match v {
        serde_json::Value::String(s) => s.contains('\0').then_some(here),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{here}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
            let path = if here.is_empty() {
                k.clone()
            } else {
                format!("{here}.{k}")
            };
            if k.contains('\0') {
                Some(path)
            } else {
                nul_path(item, path)
            }
        }),
        _ => None,
    }
}

/// The field a serde error is about: its path, extended by the field named in "missing field"
/// and "unknown field" messages (serde reports those at the enclosing object).
fn field_of(path: &str, message: &str) -> Option<String> {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    match (base, named) {
        ("", None) => None,
        ("", Some(n)) => Some(n.to_owned()),
        (b, None) => Some(b.to_owned()),
        // Unknown fields are already the path's last segment; missing ones are not.
        (b, Some(n)) if b == n || b.ends_with(&format!(".{n}")) => Some(b.to_owned()),
        (b, Some(n)) => Some(format!("{b}.{n}")),
    }
}

/// serde echoes the offending value ("invalid type: string \"hunter2\", expected u32"); the
/// value may be a secret, so only the expectation is kept.
fn reason_without_value(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    for kind in ["invalid type", "invalid value", "invalid length"] {
        if message.starts_with(kind) {
            return match message.split_once(", expected ") {
                Some((_, expected)) => format!("{kind}, expected {expected}"),
                None => kind.to_owned(),
            };
        }
    }
    if message.starts_with("unknown variant") {
        return match message.split_once(", expected ") {
            Some((_, expected)) => format!("unknown variant, expected {expected}"),
            None => "unknown variant".to_owned(),
        };
    }
    message.to_owned()
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A query string; any problem is a 400 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let query = parts.uri.query().unwrap_or_default();
        // Postgres cannot compare against NUL; no value legitimately holds one.
        if let Some((k, _)) =
            form_urlencoded_parse(query).find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(Error::BadRequest {
                field: Some(k.replace('\0', "")),
                reason: "contains a NUL character".to_owned(),
            });
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                Error::BadRequest {
                    field: field_of(&path, &message),
                    reason: reason_without_value(&message),
                }
            })
    }
}

/// A resource id from the path's `{id}` segment.
#[derive(Debug, Clone)]
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadRequest {
            field: Some("id".to_owned()),
            reason: reason.to_owned(),
        };
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| bad("not a valid path segment"))?;
        if id.contains('\0') {
            return Err(bad("contains a NUL character"));
        }
        Ok(Id(id))
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Inner,
        list: Vec<Inner>,
    }

    fn field(body: &str) -> (u16, Option<String>, String) {
        match parse_json::<Outer>(body.as_bytes()) {
            Ok(_) => (200, None, String::new()),
            Err(e) => (e.status().as_u16(), e.problem().field, e.to_string()),
        }
    }

    #[test]
    fn fields_are_named() {
        assert_eq!(
            field(r#"{"inner":{"n":1},"list":[]}"#).1.as_deref(),
            Some("name")
        );
        assert_eq!(
            field(r#"{"name":"a","inner":{},"list":[]}"#).1.as_deref(),
            Some("inner.n")
        );
        let (status, f, text) = field(r#"{"name":"a","inner":{"n":"secret-pw"},"list":[]}"#);
        assert_eq!((status, f.as_deref()), (422, Some("inner.n")));
        assert!(!text.contains("secret-pw"), "{text}");
        assert_eq!(
            field(r#"{"name":"a","inner":{"n":1},"list":[{"n":-1}]}"#)
                .1
                .as_deref(),
            Some("list[0].n")
        );
        assert_eq!(
            field(r#"{"name":"a","inner":{"n":1},"list":[],"x":1}"#)
                .1
                .as_deref(),
            Some("x")
        );
        assert_eq!(field(r#"{"name":"a""#).0, 400);
        assert_eq!(field(r#"{"name":"a","inner":{"n":1},"list":[]} x"#).0, 400);
        assert_eq!(field("[1]").1.as_deref(), Some("body"));
        assert_eq!(field("").0, 400);
        let (status, f, _) = field(r#"{"name":"a\u0000b","inner":{"n":1},"list":[]}"#);
        assert_eq!((status, f.as_deref()), (422, Some("name")));
    }
}
