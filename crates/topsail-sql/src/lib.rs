//! The sqlx store of [topsail](https://docs.rs/topsail): SQLite (the
//! embedded default) and PostgreSQL behind one runtime-chosen handle.
//!
//! Criteria arrive as the column-level AST of `topsail_core::query`; this
//! crate renders it with `$N` placeholders, binds every value, and takes
//! every identifier from model metadata.

mod pool;
mod redact;
mod render;
mod schema;
mod store;

pub use pool::Pooled;
pub use redact::redacted;
pub use render::{Built, quote};
pub use schema::{MigrateError, Migration, create_schema, ddl, migrate};
pub use store::{ConnectError, DEFAULT_STATEMENT_TIMEOUT, SqlStore};

/// The rendering functions, for tests and tools that want to see the SQL.
pub mod sql {
    pub use crate::render::{count, delete, insert, select, update};
}
