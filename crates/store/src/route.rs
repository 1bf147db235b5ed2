//! Routes: from a source, calls matching a destination (and optionally caller) pattern go to
//! ordered targets. Only data here: failover (on 5xx and timeouts, never on 486/600/603) is
//! applied by the router.

use crate::SecretKey;
use crate::error::{Error, Result};
use crate::model::{Endpoint, EndpointKind};
use crate::peer::yes;
use crate::repo::{Repo, Resource};
use crate::row::{Row, Val, enum_name};
use crate::{Page, Scope, Store, validate};
use serde::{Deserialize, Serialize};

/// One target; lower `priority` is tried first, `weight` splits load within a priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTarget {
    pub endpoint: Endpoint,
    pub priority: u32,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Among routes matching a call, the lowest value wins.
    pub priority: u32,
    pub source: Endpoint,
    /// RIPT number pattern (`+1408*,!+14085551212`).
    pub destination_pattern: String,
    pub caller_pattern: Option<String>,
    pub targets: Vec<RouteTarget>,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
}

impl Resource for Route {
    const TABLE: &'static str = "routes";
    const KIND: &'static str = "route";
    const UNIQUE: &'static str = "name";
    const TENANT_SCOPED: bool = false;
    const COLUMNS: &'static [&'static str] = &[
        "name",
        "enabled",
        "priority",
        "source_kind",
        "source_id",
        "destination_pattern",
        "caller_pattern",
        "targets",
    ];

    fn id(&self) -> &str {
        &self.id
    }

    fn set_meta(&mut self, id: String, created_at: i64, updated_at: i64) {
        self.id = id;
        self.created_at = created_at;
        self.updated_at = updated_at;
    }

    fn validate(&self) -> Result<()> {
        validate::name("name", &self.name)?;
        validate::name("source.id", &self.source.id)?;
        validate::pattern("destination_pattern", &self.destination_pattern)?;
        if let Some(c) = &self.caller_pattern {
            validate::pattern("caller_pattern", c)?;
        }
        if self.targets.is_empty() {
            return Err(Error::invalid("targets", "at least one target"));
        }
        for t in &self.targets {
            validate::name("targets.endpoint.id", &t.endpoint.id)?;
            if t.endpoint == self.source {
                return Err(Error::invalid(
                    "targets",
                    "a route cannot target its source",
                ));
            }
        }
        Ok(())
    }

    fn values(&self, _key: &SecretKey, _id: &str) -> Result<Vec<Val>> {
        Ok(vec![
            Val::text(&self.name),
            Val::flag(self.enabled),
            Val::Int(Some(i64::from(self.priority))),
            enum_name(&self.source.kind)?,
            Val::text(&self.source.id),
            Val::text(&self.destination_pattern),
            Val::Text(self.caller_pattern.clone()),
            Val::json(&self.targets)?,
        ])
    }

    fn from_row(row: &Row<'_>, _key: &SecretKey) -> Result<Self> {
        Ok(Route {
            id: row.text("id")?,
            name: row.text("name")?,
            enabled: row.flag("enabled")?,
            priority: u32::try_from(row.int("priority")?)
                .map_err(|_| Error::Corrupt { column: "priority" })?,
            source: Endpoint {
                kind: row.enum_text("source_kind")?,
                id: row.text("source_id")?,
            },
            destination_pattern: row.text("destination_pattern")?,
            caller_pattern: row.opt_text("caller_pattern")?,
            targets: row.json("targets")?,
            created_at: row.int("created_at")?,
            updated_at: row.int("updated_at")?,
        })
    }
}

impl Store {
    pub fn routes(&self) -> Repo<'_, Route> {
        Repo::new(self)
    }
}

impl Repo<'_, Route> {
    /// The routes whose source is `source`, in creation order.
    pub async fn list_for_source(&self, source: &Endpoint, page: Page) -> Result<Vec<Route>> {
        let kind = match source.kind {
            EndpointKind::SipPeer => "sip_peer",
            EndpointKind::Upstream => "upstream",
            EndpointKind::HostedTg => "hosted_tg",
        };
        self.list_where(
            &Scope::Admin,
            &[
                ("source_kind", kind.to_owned()),
                ("source_id", source.id.clone()),
            ],
            page,
        )
        .await
    }
}
