//! Portable column values and typed reads over `AnyRow`.

use crate::error::{Error, Result};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row as _};

/// One bound value. Only the kinds every backend stores the same way.
#[derive(Debug, Clone)]
pub enum Val {
    Text(Option<String>),
    Int(Option<i64>),
    Blob(Option<Vec<u8>>),
}

impl Val {
    pub(crate) fn text(s: impl Into<String>) -> Val {
        Val::Text(Some(s.into()))
    }
    pub(crate) fn flag(b: bool) -> Val {
        Val::Int(Some(i64::from(b)))
    }
    pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<Val> {
        serde_json::to_string(v)
            .map(|s| Val::Text(Some(s)))
            .map_err(|e| Error::invalid("body", e.to_string()))
    }
}

pub(crate) fn bind(q: Query<'_, Any, AnyArguments>, v: Val) -> Query<'_, Any, AnyArguments> {
    match v {
        Val::Text(t) => q.bind(t),
        Val::Int(i) => q.bind(i),
        Val::Blob(b) => q.bind(b),
    }
}

/// Typed accessors naming the column in errors.
pub struct Row<'r>(pub(crate) &'r AnyRow);

impl std::fmt::Debug for Row<'_> {
    // Rows may hold sealed secrets; print nothing of their contents.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Row(..)")
    }
}

impl Row<'_> {
    pub(crate) fn text(&self, c: &'static str) -> Result<String> {
        self.0.try_get(c).map_err(|_| Error::Corrupt { column: c })
    }
    pub(crate) fn opt_text(&self, c: &'static str) -> Result<Option<String>> {
        self.0.try_get(c).map_err(|_| Error::Corrupt { column: c })
    }
    pub(crate) fn int(&self, c: &'static str) -> Result<i64> {
        self.0.try_get(c).map_err(|_| Error::Corrupt { column: c })
    }
    pub(crate) fn opt_int(&self, c: &'static str) -> Result<Option<i64>> {
        self.0.try_get(c).map_err(|_| Error::Corrupt { column: c })
    }
    pub(crate) fn opt_u32(&self, c: &'static str) -> Result<Option<u32>> {
        self.opt_int(c)?
            .map(|v| u32::try_from(v).map_err(|_| Error::Corrupt { column: c }))
            .transpose()
    }
    pub(crate) fn flag(&self, c: &'static str) -> Result<bool> {
        Ok(self.int(c)? != 0)
    }
    pub(crate) fn opt_blob(&self, c: &'static str) -> Result<Option<Vec<u8>>> {
        self.0.try_get(c).map_err(|_| Error::Corrupt { column: c })
    }
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, c: &'static str) -> Result<T> {
        serde_json::from_str(&self.text(c)?).map_err(|_| Error::Corrupt { column: c })
    }
    /// A string column holding a serde unit-variant name (enums stored as TEXT).
    pub(crate) fn enum_text<T: serde::de::DeserializeOwned>(&self, c: &'static str) -> Result<T> {
        serde_json::from_value(serde_json::Value::String(self.text(c)?))
            .map_err(|_| Error::Corrupt { column: c })
    }
}

/// A unit enum's serde name, for storing it as TEXT.
pub(crate) fn enum_name<T: serde::Serialize>(v: &T) -> Result<Val> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => Ok(Val::Text(Some(s))),
        _ => Err(Error::invalid("enum", "not a unit variant")),
    }
}
