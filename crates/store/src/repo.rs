//! One generic repository for the configuration resources: create / get / list / update /
//! delete with tenant scoping, conflict mapping and the `config_version` bump.

use crate::error::{Error, Result, db};
use crate::row::{Row, Val, bind};
use crate::{Page, Scope, SecretKey, Store, bump_config_version, new_id, now_ms};
use sqlx::Acquire as _;
use std::marker::PhantomData;

/// A configuration row type. Implemented by the model structs of this crate.
pub trait Resource: Sized + Send + Sync {
    /// Table name (a constant: SQL is never built from caller data).
    const TABLE: &'static str;
    /// Name used in `Error::NotFound`.
    const KIND: &'static str;
    /// The field reported by `Error::Conflict` when the table's unique key is violated.
    const UNIQUE: &'static str;
    /// Whether rows carry a `tenant` column that scopes them to one customer.
    const TENANT_SCOPED: bool;
    /// The data columns, in the order of [`Resource::values`] (without id and timestamps).
    const COLUMNS: &'static [&'static str];

    fn id(&self) -> &str;
    fn tenant(&self) -> Option<&str> {
        None
    }
    fn set_meta(&mut self, id: String, created_at: i64, updated_at: i64);
    fn validate(&self) -> Result<()>;
    /// Column values; secrets are sealed with `key` bound to row `id`.
    fn values(&self, key: &SecretKey, id: &str) -> Result<Vec<Val>>;
    fn from_row(row: &Row<'_>, key: &SecretKey) -> Result<Self>;
}

/// Access to one resource table. Obtain it from the `Store` accessors (`store.sip_peers()`…).
#[derive(Debug)]
pub struct Repo<'s, R> {
    pub(crate) store: &'s Store,
    _r: PhantomData<fn() -> R>,
}

impl<'s, R: Resource> Repo<'s, R> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Repo {
            store,
            _r: PhantomData,
        }
    }

    /// The tenant condition for `scope`, or `None` when the scope sees nothing in this table.
    fn scope_filter<'a>(&self, scope: &'a Scope) -> Option<Option<&'a str>> {
        match (R::TENANT_SCOPED, scope.tenant()) {
            (_, None) => Some(None),
            (true, Some(t)) => Some(Some(t)),
            // Global resources are operator-only: a tenant sees none of them.
            (false, Some(_)) => None,
        }
    }

    fn not_found() -> Error {
        Error::NotFound { kind: R::KIND }
    }

    /// A tenant may only write rows of its own tenant.
    fn check_write_scope(&self, scope: &Scope, value: &R) -> Result<()> {
        match self.scope_filter(scope) {
            None => Err(Self::not_found()),
            Some(Some(t)) if value.tenant() != Some(t) => {
                Err(Error::invalid("tenant", "must be the caller's own tenant"))
            }
            Some(_) => Ok(()),
        }
    }

    /// Inserts a new row with a fresh id and returns it as stored.
    pub async fn create(&self, scope: &Scope, mut value: R) -> Result<R> {
        value.validate()?;
        self.check_write_scope(scope, &value)?;
        let id = new_id()?;
        let now = now_ms();
        let values = value.values(self.store.key(), &id)?;
        let cols = R::COLUMNS.join(", ");
        let marks: Vec<String> = (1..=R::COLUMNS.len() + 3)
            .map(|i| format!("${i}"))
            .collect();
        let sql = format!(
            "INSERT INTO {} (id, {cols}, created_at, updated_at) VALUES ({})",
            R::TABLE,
            marks.join(", ")
        );
        let mut conn = self.store.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.clone());
        for v in values {
            q = bind(q, v);
        }
        q.bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db(R::UNIQUE))?;
        bump_config_version(&mut tx).await?;
        tx.commit().await?;
        value.set_meta(id, now, now);
        Ok(value)
    }

    pub async fn get(&self, scope: &Scope, id: &str) -> Result<R> {
        let Some(tenant) = self.scope_filter(scope) else {
            return Err(Self::not_found());
        };
        let mut sql = format!("SELECT * FROM {} WHERE id = $1", R::TABLE);
        if tenant.is_some() {
            sql.push_str(" AND tenant = $2");
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_owned());
        if let Some(t) = tenant {
            q = q.bind(t.to_owned());
        }
        let row = q
            .fetch_optional(&self.store.pool)
            .await?
            .ok_or_else(Self::not_found)?;
        R::from_row(&Row(&row), self.store.key())
    }

    /// A page of rows in creation order.
    pub async fn list(&self, scope: &Scope, page: Page) -> Result<Vec<R>> {
        self.list_where(scope, &[], page).await
    }

    /// A page of rows whose `column = value` for each filter (columns are constants chosen by
    /// this crate's typed wrappers, values are bound).
    pub(crate) async fn list_where(
        &self,
        scope: &Scope,
        filters: &[(&'static str, String)],
        page: Page,
    ) -> Result<Vec<R>> {
        let Some(tenant) = self.scope_filter(scope) else {
            return Ok(Vec::new());
        };
        let mut conds = Vec::new();
        let mut binds = Vec::new();
        if let Some(t) = tenant {
            binds.push(t.to_owned());
            conds.push(format!("tenant = ${}", binds.len()));
        }
        for (col, v) in filters {
            binds.push(v.clone());
            conds.push(format!("{col} = ${}", binds.len()));
        }
        let mut sql = format!("SELECT * FROM {}", R::TABLE);
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(&format!(
            " ORDER BY created_at, id LIMIT ${} OFFSET ${}",
            binds.len() + 1,
            binds.len() + 2
        ));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let rows = q
            .bind(page.sql_limit())
            .bind(page.sql_offset()?)
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter()
            .map(|r| R::from_row(&Row(r), self.store.key()))
            .collect()
    }

    /// Replaces every field of row `id` with `value` (keeping id and creation time).
    pub async fn update(&self, scope: &Scope, id: &str, mut value: R) -> Result<R> {
        value.validate()?;
        self.check_write_scope(scope, &value)?;
        let tenant = self.scope_filter(scope).flatten();
        let values = value.values(self.store.key(), id)?;
        let n = R::COLUMNS.len();
        let sets: Vec<String> = R::COLUMNS
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ${}", i + 1))
            .collect();
        let mut sql = format!(
            "UPDATE {} SET {}, updated_at = ${} WHERE id = ${}",
            R::TABLE,
            sets.join(", "),
            n + 1,
            n + 2
        );
        if tenant.is_some() {
            sql.push_str(&format!(" AND tenant = ${}", n + 3));
        }
        sql.push_str(" RETURNING created_at");
        let now = now_ms();
        let mut conn = self.store.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in values {
            q = bind(q, v);
        }
        q = q.bind(now).bind(id.to_owned());
        if let Some(t) = tenant {
            q = q.bind(t.to_owned());
        }
        let row = q
            .fetch_optional(&mut *tx)
            .await
            .map_err(db(R::UNIQUE))?
            .ok_or_else(Self::not_found)?;
        let created = Row(&row).int("created_at")?;
        bump_config_version(&mut tx).await?;
        tx.commit().await?;
        value.set_meta(id.to_owned(), created, now);
        Ok(value)
    }

    pub async fn delete(&self, scope: &Scope, id: &str) -> Result<()> {
        let Some(tenant) = self.scope_filter(scope) else {
            return Err(Self::not_found());
        };
        let mut sql = format!("DELETE FROM {} WHERE id = $1", R::TABLE);
        if tenant.is_some() {
            sql.push_str(" AND tenant = $2");
        }
        let mut conn = self.store.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_owned());
        if let Some(t) = tenant {
            q = q.bind(t.to_owned());
        }
        let done = q.execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(Self::not_found());
        }
        bump_config_version(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
