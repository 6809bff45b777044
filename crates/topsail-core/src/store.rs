/*!
What the engine needs from a database: a connection that runs the
[`query`](crate::query) AST, and transactions on top of it.

The traits are object-safe so one runtime-chosen store (SQLite or PostgreSQL
from a URL) serves every model without generics in user code.
*/

use async_trait::async_trait;
use serde_json::Value;

use crate::error::StoreError;
use crate::query::{Delete, Insert, Select, Update};

/// A row as JSON values, in the order of [`Select::columns`].
pub type Row = Vec<Value>;

/// The SQL dialect of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A database connection (pooled, or inside a transaction).
#[async_trait]
pub trait Conn: Send {
    /// Runs a select.
    async fn fetch(&mut self, q: &Select) -> Result<Vec<Row>, StoreError>;
    /// Inserts a row; returns the `returning` columns when asked for (and a
    /// row was inserted).
    async fn insert(&mut self, q: &Insert) -> Result<Option<Row>, StoreError>;
    /// Updates rows; returns how many changed.
    async fn update(&mut self, q: &Update) -> Result<u64, StoreError>;
    /// Deletes rows; returns how many went.
    async fn delete(&mut self, q: &Delete) -> Result<u64, StoreError>;
    /// Counts rows of `q.table` matching `q.filter` (other fields ignored).
    async fn count(&mut self, q: &Select) -> Result<u64, StoreError>;
}

/// A transaction. Dropping it without [`Tx::commit`] rolls it back.
#[async_trait]
pub trait Tx: Conn {
    /// Commits the transaction.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// A database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The SQL dialect.
    fn dialect(&self) -> Dialect;
    /// A pooled connection for reads.
    async fn conn(&self) -> Result<Box<dyn Conn>, StoreError>;
    /// A transaction for writes.
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError>;
}
