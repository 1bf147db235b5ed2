//! Numbers: E.164 numbers or ranges and who owns them, for caller-ID vouching and routing.

use crate::SecretKey;
use crate::error::{Error, Result};
use crate::model::Endpoint;
use crate::repo::{Repo, Resource};
use crate::row::{Row, Val, enum_name};
use crate::{Store, validate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberBlock {
    #[serde(default)]
    pub id: String,
    /// The customer owning the block when it belongs to a hosted TG; tenant-scoped callers
    /// see only their own blocks.
    pub tenant: Option<String>,
    /// The first (or only) number, E.164.
    pub first: String,
    /// The last number of a range, same length as `first` and not below it.
    pub last: Option<String>,
    pub owner: Endpoint,
    /// Whether we vouch for these numbers as caller ID (attestation A).
    pub vouch: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

impl NumberBlock {
    /// Whether `number` (E.164) lies in this block. Equal-length digit strings compare in
    /// numeric order, so a string comparison suffices.
    pub fn contains(&self, number: &str) -> bool {
        match &self.last {
            None => number == self.first,
            Some(last) => {
                number.len() == self.first.len()
                    && number >= self.first.as_str()
                    && number <= last.as_str()
            }
        }
    }
}

impl Resource for NumberBlock {
    const TABLE: &'static str = "numbers";
    const KIND: &'static str = "number";
    const UNIQUE: &'static str = "first";
    const TENANT_SCOPED: bool = true;
    const COLUMNS: &'static [&'static str] = &[
        "tenant",
        "first_number",
        "last_number",
        "owner_kind",
        "owner_id",
        "vouch",
        "description",
    ];

    fn id(&self) -> &str {
        &self.id
    }

    fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    fn set_meta(&mut self, id: String, created_at: i64, updated_at: i64) {
        self.id = id;
        self.created_at = created_at;
        self.updated_at = updated_at;
    }

    fn validate(&self) -> Result<()> {
        if let Some(t) = &self.tenant {
            validate::name("tenant", t)?;
        }
        validate::e164("first", &self.first)?;
        if let Some(last) = &self.last {
            validate::e164("last", last)?;
            if last.len() != self.first.len() || last.as_str() < self.first.as_str() {
                return Err(Error::invalid(
                    "last",
                    "must have the length of first and not be below it",
                ));
            }
        }
        validate::name("owner.id", &self.owner.id)?;
        if self.description.chars().count() > 1000 {
            return Err(Error::invalid("description", "longer than 1000 characters"));
        }
        Ok(())
    }

    fn values(&self, _key: &SecretKey, _id: &str) -> Result<Vec<Val>> {
        Ok(vec![
            Val::Text(self.tenant.clone()),
            Val::text(&self.first),
            Val::Text(self.last.clone()),
            enum_name(&self.owner.kind)?,
            Val::text(&self.owner.id),
            Val::flag(self.vouch),
            Val::text(&self.description),
        ])
    }

    fn from_row(row: &Row<'_>, _key: &SecretKey) -> Result<Self> {
        Ok(NumberBlock {
            id: row.text("id")?,
            tenant: row.opt_text("tenant")?,
            first: row.text("first_number")?,
            last: row.opt_text("last_number")?,
            owner: Endpoint {
                kind: row.enum_text("owner_kind")?,
                id: row.text("owner_id")?,
            },
            vouch: row.flag("vouch")?,
            description: row.text("description")?,
            created_at: row.int("created_at")?,
            updated_at: row.int("updated_at")?,
        })
    }
}

impl Store {
    pub fn numbers(&self) -> Repo<'_, NumberBlock> {
        Repo::new(self)
    }
}
