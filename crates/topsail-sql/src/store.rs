/*!
[`SqlStore`]: one runtime-chosen handle over a SQLite or PostgreSQL pool.

An enum over the two concrete pools (not `sqlx::Any`, which cannot decode
SQLite booleans or PostgreSQL JSONB); one macro writes each operation once
for both dialects.
*/

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow};
use sqlx::{AssertSqlSafe, Postgres, Row as _, Sqlite};
use topsail_core::StoreError;
use topsail_core::model::AttrType;
use topsail_core::query::{Delete, Insert, Nested, Select, Update};
use topsail_core::record::number_json;
use topsail_core::store::{Conn, Dialect, Row, Store, Tx};
use topsail_core::value::SqlValue;
use tracing::Instrument;

use crate::pool::{Lease, Pooled, PooledTx};
use crate::render::{self, Built};

/// A `DATABASE_URL` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The scheme is neither `sqlite:` nor `postgres:`/`postgresql:`. The
    /// URL is kept with its password replaced by `***`.
    #[error(
        "unsupported database URL `{0}`: expected `sqlite://<file>`, `sqlite::memory:` or `postgres://...`"
    )]
    UnsupportedUrl(String),
    /// The URL could not be parsed.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Unreachable(#[source] sqlx::Error),
}

/// A SQLite or PostgreSQL database.
#[derive(Debug, Clone)]
pub enum SqlStore {
    /// SQLite.
    Sqlite(Pooled<Sqlite>),
    /// PostgreSQL.
    Postgres(Pooled<Postgres>),
}

/// A pooled connection idle for longer than this is pinged before use.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// Pool settings shared by both databases. sqlx pings every connection it
/// hands out by default: one extra round trip per request, a third of the
/// work of a `findOne`. A connection that has been busy recently is known
/// to be alive, so only one that sat idle is checked. (sqlx also pings each
/// connection it takes back; [`Pooled`] keeps clean ones from that.)
fn pool_options<DB: sqlx::Database>() -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(ping_if_stale::<DB>)
}

fn ping_if_stale<DB: sqlx::Database>(
    conn: &mut DB::Connection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        use sqlx::Connection;
        if meta.idle_for >= STALE_AFTER || crate::pool::idle_since_last_failure(meta.idle_for) {
            conn.ping().await?;
        }
        Ok(true)
    })
}

/// PostgreSQL's `statement_timeout` for a store connected from a URL: a
/// statement still running after it is cancelled by the server, and the
/// request answered 504. SQLite has no such timeout (its statements run in
/// the process, bounded by the criteria limits); a write waiting for its
/// lock gives up after `busy_timeout` (10 s) and is answered 503.
pub const DEFAULT_STATEMENT_TIMEOUT: &str = "30s";

impl SqlStore {
    /// Connects from a URL: `sqlite://zoo.sqlite` (created if missing),
    /// `sqlite::memory:`, or `postgres://user@host/db`.
    pub async fn connect(url: &str) -> Result<SqlStore, ConnectError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut opts = PgConnectOptions::from_str(url).map_err(ConnectError::InvalidUrl)?;
            // A URL that sets its own (`?options=-c statement_timeout=5s`)
            // keeps it.
            if !url.contains("statement_timeout") {
                opts = opts.options([("statement_timeout", DEFAULT_STATEMENT_TIMEOUT)]);
            }
            return Self::connect_postgres(opts).await;
        }
        if url.starts_with("sqlite:") {
            let memory = matches!(
                url,
                "sqlite::memory:" | "sqlite://:memory:" | "sqlite:memory:"
            );
            let opts = if memory {
                SqliteConnectOptions::from_str("sqlite::memory:")
            } else {
                SqliteConnectOptions::from_str(url).map(|o| {
                    o.create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                })
            }
            .map_err(ConnectError::InvalidUrl)?;
            return Self::connect_sqlite(opts, memory).await;
        }
        Err(ConnectError::UnsupportedUrl(crate::redacted(url)))
    }

    /// Connects to SQLite with explicit options. An in-memory database lives
    /// in one connection, kept open for the life of the pool.
    pub async fn connect_sqlite(
        opts: SqliteConnectOptions,
        in_memory: bool,
    ) -> Result<SqlStore, ConnectError> {
        let opts = opts.busy_timeout(Duration::from_secs(10));
        let pool = if in_memory {
            pool_options::<Sqlite>()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool_options::<Sqlite>().max_connections(8)
        };
        let pool = pool
            .connect_with(opts)
            .await
            .map_err(ConnectError::Unreachable)?;
        Ok(SqlStore::Sqlite(Pooled::new(pool)))
    }

    /// Connects to PostgreSQL with explicit options.
    pub async fn connect_postgres(opts: PgConnectOptions) -> Result<SqlStore, ConnectError> {
        let pool = pool_options::<Postgres>()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone())
            .await;
        match pool {
            Ok(pool) => Ok(SqlStore::Postgres(Pooled::new(pool))),
            // The pool only says it timed out; one direct attempt tells why
            // (refused, unknown host, bad password, no such database).
            Err(sqlx::Error::PoolTimedOut) => {
                use sqlx::Connection;
                match sqlx::PgConnection::connect_with(&opts).await {
                    Err(cause) => Err(ConnectError::Unreachable(cause)),
                    Ok(_) => Err(ConnectError::Unreachable(sqlx::Error::PoolTimedOut)),
                }
            }
            Err(e) => Err(ConnectError::Unreachable(e)),
        }
    }

    /// Runs SQL text with no parameters (DDL, migrations).
    pub async fn execute_script(&self, sql: &str) -> Result<(), StoreError> {
        let sql = AssertSqlSafe(sql.to_owned());
        match self {
            SqlStore::Sqlite(p) => {
                let mut c = p.lease().await.map_err(store_error)?;
                sqlx::raw_sql(sql).execute(c.busy()).await.map(|_| c.done())
            }
            SqlStore::Postgres(p) => {
                let mut c = p.lease().await.map_err(store_error)?;
                sqlx::raw_sql(sql).execute(c.busy()).await.map(|_| c.done())
            }
        }
        .map_err(store_error)
    }

    /// Connections in use now, and the most there may be.
    pub fn connections(&self) -> (usize, usize) {
        match self {
            SqlStore::Sqlite(p) => p.connections(),
            SqlStore::Postgres(p) => p.connections(),
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            SqlStore::Sqlite(p) => p.close().await,
            SqlStore::Postgres(p) => p.close().await,
        }
    }
}

/// Maps a sqlx error, recognising unique violations and naming their
/// columns.
pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    if matches!(e, sqlx::Error::PoolTimedOut) {
        return StoreError::Unavailable;
    }
    if crate::pool::is_connection_failure(&e) {
        crate::pool::note_connection_failure();
        return StoreError::ConnectionLost(Box::new(e));
    }
    if let sqlx::Error::Database(db) = &e {
        match db.code().as_deref() {
            // PostgreSQL's query_canceled: `statement_timeout` (or a
            // cancel request).
            Some("57014") => return StoreError::Timeout,
            // SQLite's busy and locked (with their extended codes): the
            // write lock stayed taken past `busy_timeout`, which SQLite
            // spent retrying with backoff.
            Some(c)
                if sqlite_busy(c)
                    && db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() =>
            {
                return StoreError::Unavailable;
            }
            _ => {}
        }
    }
    if let sqlx::Error::Database(db) = &e
        && db.kind() == sqlx::error::ErrorKind::UniqueViolation
    {
        let columns = match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            Some(pg) => pg.detail().map(pg_key_columns).unwrap_or_default(),
            None => sqlite_unique_columns(db.message()),
        };
        return StoreError::Unique { columns };
    }
    StoreError::Database(Box::new(e))
}

/// Whether a SQLite result code is `SQLITE_BUSY` or `SQLITE_LOCKED`, plain
/// or extended (the low byte is the primary code).
fn sqlite_busy(code: &str) -> bool {
    code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

/// The columns of a PostgreSQL unique violation, from its detail:
/// `Key (email)=(ann@example.com) already exists.` (the part PostgreSQL
/// writes in every locale is the key list between the first parentheses).
fn pg_key_columns(detail: &str) -> Vec<String> {
    let Some((_, rest)) = detail.split_once('(') else {
        return Vec::new();
    };
    let Some((list, _)) = rest.split_once(")=(") else {
        return Vec::new();
    };
    list.split(", ")
        .map(|c| c.trim().trim_matches('"').to_owned())
        .collect()
}

/// The columns of a SQLite unique violation, from its message:
/// `UNIQUE constraint failed: user.email, user.name`.
fn sqlite_unique_columns(message: &str) -> Vec<String> {
    message
        .rsplit(": ")
        .next()
        .unwrap_or_default()
        .split(", ")
        .map(|c| c.rsplit('.').next().unwrap_or(c).to_owned())
        .collect()
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, <Sqlite as sqlx::Database>::Arguments>;
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, <Postgres as sqlx::Database>::Arguments>;

fn bind_sqlite(q: SqliteQuery<'_>, v: SqlValue) -> SqliteQuery<'_> {
    match v {
        SqlValue::Null(AttrType::Integer) => q.bind(None::<i64>),
        SqlValue::Null(AttrType::Number) => q.bind(None::<f64>),
        SqlValue::Null(AttrType::Boolean) => q.bind(None::<bool>),
        SqlValue::Null(_) | SqlValue::Json(Value::Null) => q.bind(None::<String>),
        SqlValue::Int(i) => q.bind(i),
        SqlValue::Float(f) => q.bind(f),
        SqlValue::Text(s) => q.bind(s),
        SqlValue::Bool(b) => q.bind(b),
        SqlValue::Json(v) => q.bind(v.to_string()),
    }
}

fn bind_pg(q: PgQuery<'_>, v: SqlValue) -> PgQuery<'_> {
    match v {
        // PostgreSQL rejects untyped NULLs: type them from the column.
        SqlValue::Null(AttrType::Integer) => q.bind(None::<i64>),
        SqlValue::Null(AttrType::Number) => q.bind(None::<f64>),
        SqlValue::Null(AttrType::Boolean) => q.bind(None::<bool>),
        SqlValue::Null(AttrType::String) => q.bind(None::<String>),
        SqlValue::Null(AttrType::Json) | SqlValue::Json(Value::Null) => {
            q.bind(None::<sqlx::types::Json<Value>>)
        }
        SqlValue::Int(i) => q.bind(i),
        SqlValue::Float(f) => q.bind(f),
        SqlValue::Text(s) => q.bind(s),
        SqlValue::Bool(b) => q.bind(b),
        SqlValue::Json(v) => q.bind(sqlx::types::Json(v)),
    }
}

fn decode_sqlite(row: &SqliteRow, i: usize, ty: AttrType) -> Result<Value, sqlx::Error> {
    // Unchecked: SQLite converts between storage classes itself, and the
    // declared type does not survive a subquery.
    Ok(match ty {
        AttrType::Integer => row.try_get_unchecked::<Option<i64>, _>(i)?.map(Value::from),
        AttrType::Number => row.try_get_unchecked::<Option<f64>, _>(i)?.map(number_json),
        AttrType::Boolean => row
            .try_get_unchecked::<Option<bool>, _>(i)?
            .map(Value::from),
        AttrType::String => row
            .try_get_unchecked::<Option<String>, _>(i)?
            .map(Value::from),
        AttrType::Json => row
            .try_get_unchecked::<Option<String>, _>(i)?
            .map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s))),
    }
    .unwrap_or(Value::Null))
}

fn decode_pg(row: &PgRow, i: usize, ty: AttrType) -> Result<Value, sqlx::Error> {
    Ok(match ty {
        AttrType::Integer => row.try_get::<Option<i64>, _>(i)?.map(Value::from),
        AttrType::Number => row.try_get::<Option<f64>, _>(i)?.map(number_json),
        AttrType::Boolean => row.try_get::<Option<bool>, _>(i)?.map(Value::from),
        AttrType::String => row.try_get::<Option<String>, _>(i)?.map(Value::from),
        AttrType::Json => row
            .try_get::<Option<sqlx::types::Json<Value>>, _>(i)?
            .map(|j| j.0),
    }
    .unwrap_or(Value::Null))
}

/// The rows of a [`Nested`] column (a JSON array of arrays, as text),
/// each value decoded by its column's type as [`decode_sqlite`] and
/// [`decode_pg`] do for a plain column.
fn decode_nested(text: Option<&str>, n: &Nested, dialect: Dialect) -> Result<Value, StoreError> {
    let Some(text) = text else {
        return Ok(Value::Array(Vec::new()));
    };
    let rows: Vec<Vec<Value>> = serde_json::from_str(text)
        .map_err(|e| StoreError::Database(format!("malformed nested rows: {e}").into()))?;
    let wide = n.select.columns.len() > render::NESTED_CHUNK;
    Ok(Value::Array(
        rows.into_iter()
            .map(|row| {
                let row = if wide {
                    row.into_iter()
                        .flat_map(|chunk| match chunk {
                            Value::Array(values) => values,
                            other => vec![other],
                        })
                        .collect()
                } else {
                    row
                };
                Value::Array(
                    row.into_iter()
                        .zip(&n.select.columns)
                        .map(|(v, (_, ty))| json_column(v, *ty, dialect))
                        .collect(),
                )
            })
            .collect(),
    ))
}

/// A column value as the JSON functions of `dialect` render it, read back
/// as its attribute type.
fn json_column(v: Value, ty: AttrType, dialect: Dialect) -> Value {
    match (ty, v) {
        (_, Value::Null) => Value::Null,
        // SQLite may hold a REAL in an INTEGER column; its reader truncates.
        (AttrType::Integer, Value::Number(n)) => n
            .as_i64()
            .map(Value::from)
            .unwrap_or_else(|| Value::from(n.as_f64().unwrap_or(0.0) as i64)),
        (AttrType::Number, Value::Number(n)) => number_json(n.as_f64().unwrap_or(f64::NAN)),
        // PostgreSQL writes non-finite floats as strings.
        (AttrType::Number, Value::String(s)) => number_json(s.parse().unwrap_or(f64::NAN)),
        // SQLite stores booleans as 0 and 1.
        (AttrType::Boolean, Value::Number(n)) => Value::Bool(n.as_f64() != Some(0.0)),
        // SQLite keeps JSON as text; PostgreSQL's JSONB is embedded as is.
        (AttrType::Json, Value::String(s)) if dialect == Dialect::Sqlite => {
            serde_json::from_str(&s).unwrap_or(Value::String(s))
        }
        (AttrType::String, v @ (Value::Number(_) | Value::Bool(_))) => Value::String(v.to_string()),
        (_, v) => v,
    }
}

/// A pooled SQLite connection.
pub(crate) struct SqliteConn(Lease<Sqlite>);
/// A SQLite transaction.
pub(crate) struct SqliteTx(PooledTx<Sqlite>);
/// A pooled PostgreSQL connection.
pub(crate) struct PgConn(Lease<Postgres>);
/// A PostgreSQL transaction.
pub(crate) struct PgTx(PooledTx<Postgres>);

/// Where a [`Conn`] runs its statements: [`Exec::start`] before one,
/// [`Exec::finish`] once it completed.
trait Exec<DB: sqlx::Database> {
    fn start(&mut self) -> &mut DB::Connection;
    fn finish(&mut self);
    /// Whether a statement (`read` or not) that failed at the connection
    /// level (`e`) may be run again on another connection: a read on a
    /// pooled connection; a write the server refused because it was ending
    /// the session (it did not commit); any statement that is a
    /// transaction's first (it was not committed, so it did not happen).
    fn may_renew(&self, read: bool, e: &sqlx::Error) -> bool;
}

impl<DB: sqlx::Database> Exec<DB> for Lease<DB> {
    fn start(&mut self) -> &mut DB::Connection {
        self.busy()
    }
    fn finish(&mut self) {
        self.done()
    }
    fn may_renew(&self, read: bool, e: &sqlx::Error) -> bool {
        read || crate::pool::is_session_ended(e)
    }
}

impl<DB: sqlx::Database> Exec<DB> for PooledTx<DB> {
    fn start(&mut self) -> &mut DB::Connection {
        self.conn()
    }
    fn finish(&mut self) {
        self.used()
    }
    fn may_renew(&self, _read: bool, _e: &sqlx::Error) -> bool {
        self.is_fresh()
    }
}

/// Runs a statement (`$run`, an expression using `conn`) on `$exec`; when
/// it fails at the connection level (a restarted server) and may be run
/// again ([`Exec::may_renew`]), runs it once more on a checked connection
/// (the `renew` of a lease or of a transaction),
/// so a restart costs the client nothing.
macro_rules! with_retry {
    ($exec:expr, read = $read:expr, |$conn:ident| $run:expr) => {{
        let first = {
            let $conn = $exec.start();
            $run.await
        };
        match first {
            Err(e) if crate::pool::is_connection_failure(&e) && $exec.may_renew($read, &e) => {
                tracing::warn!(error = %e, "a database connection failed; running the statement again on a checked one");
                $exec.renew().await?;
                let $conn = $exec.start();
                $run.await
            }
            other => other,
        }
    }};
}

/// The span of one statement (debug level: free unless a subscriber asks
/// for it), a child of the request's; sqlx's own event with the
/// statement's text is logged inside it.
fn sql_span(operation: &'static str, table: &str, dialect: Dialect) -> tracing::Span {
    let system = match dialect {
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgresql",
    };
    tracing::debug_span!(
        "sql",
        db.system = system,
        db.operation = operation,
        db.table = table
    )
}

/// Implements [`Conn`] for a wrapper whose `.0` is an [`Exec`].
macro_rules! impl_conn {
    ($ty:ty, $db:ty, $dialect:expr, $bind:ident, $decode:ident) => {
        impl $ty {
            fn prepare(
                b: Built,
            ) -> sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments> {
                let mut q = sqlx::query(AssertSqlSafe(b.sql));
                for v in b.binds {
                    q = $bind(q, v);
                }
                q
            }
        }

        #[async_trait]
        impl Conn for $ty {
            async fn fetch(&mut self, q: &Select) -> Result<Vec<Row>, StoreError> {
                let rows: Result<_, sqlx::Error> = async {
                    with_retry!(self.0, read = true, |conn| Self::prepare(render::select(
                        q, $dialect
                    ))
                    .fetch_all(conn))
                }
                .instrument(sql_span("select", &q.table, $dialect))
                .await;
                let rows = rows.map_err(store_error)?;
                self.0.finish();
                rows.iter()
                    .map(|row| {
                        let mut out = q
                            .columns
                            .iter()
                            .enumerate()
                            .map(|(i, (_, ty))| $decode(row, i, *ty))
                            .collect::<Result<Row, _>>()
                            .map_err(store_error)?;
                        for (k, n) in q.nested.iter().enumerate() {
                            // Borrowed from the row: no copy of the text.
                            let text: Option<&str> =
                                row.try_get(q.columns.len() + k).map_err(store_error)?;
                            out.push(decode_nested(text, n, $dialect)?);
                        }
                        Ok(out)
                    })
                    .collect::<Result<Vec<Row>, StoreError>>()
            }

            async fn insert(&mut self, q: &Insert) -> Result<Option<Row>, StoreError> {
                let row: Result<_, sqlx::Error> = async {
                    with_retry!(self.0, read = false, |conn| Self::prepare(render::insert(
                        q, $dialect
                    ))
                    .fetch_optional(conn))
                }
                .instrument(sql_span("insert", &q.table, $dialect))
                .await;
                let row = row.map_err(store_error)?;
                self.0.finish();
                if q.returning.is_empty() {
                    return Ok(None);
                }
                row.map(|r| {
                    q.returning
                        .iter()
                        .enumerate()
                        .map(|(i, (_, ty))| $decode(&r, i, *ty))
                        .collect::<Result<Row, _>>()
                })
                .transpose()
                .map_err(store_error)
            }

            async fn update(&mut self, q: &Update) -> Result<u64, StoreError> {
                let r: Result<_, sqlx::Error> = async {
                    with_retry!(self.0, read = false, |conn| Self::prepare(render::update(
                        q, $dialect
                    ))
                    .execute(conn))
                }
                .instrument(sql_span("update", &q.table, $dialect))
                .await;
                let r = r.map_err(store_error)?;
                self.0.finish();
                Ok(r.rows_affected())
            }

            async fn delete(&mut self, q: &Delete) -> Result<u64, StoreError> {
                let r: Result<_, sqlx::Error> = async {
                    with_retry!(self.0, read = false, |conn| Self::prepare(render::delete(
                        q, $dialect
                    ))
                    .execute(conn))
                }
                .instrument(sql_span("delete", &q.table, $dialect))
                .await;
                let r = r.map_err(store_error)?;
                self.0.finish();
                Ok(r.rows_affected())
            }

            async fn count(&mut self, q: &Select) -> Result<u64, StoreError> {
                let row: Result<_, sqlx::Error> = async {
                    with_retry!(self.0, read = true, |conn| Self::prepare(render::count(
                        q, $dialect
                    ))
                    .fetch_one(conn))
                }
                .instrument(sql_span("count", &q.table, $dialect))
                .await;
                let row = row.map_err(store_error)?;
                self.0.finish();
                let n: i64 = row.try_get(0).map_err(store_error)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }
    };
}

impl_conn!(
    SqliteConn,
    Sqlite,
    Dialect::Sqlite,
    bind_sqlite,
    decode_sqlite
);
impl_conn!(
    SqliteTx,
    Sqlite,
    Dialect::Sqlite,
    bind_sqlite,
    decode_sqlite
);
impl_conn!(PgConn, Postgres, Dialect::Postgres, bind_pg, decode_pg);
impl_conn!(PgTx, Postgres, Dialect::Postgres, bind_pg, decode_pg);

#[async_trait]
impl Tx for SqliteTx {
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.0.commit().await.map_err(store_error)
    }
}

#[async_trait]
impl Tx for PgTx {
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.0.commit().await.map_err(store_error)
    }
}

#[async_trait]
impl Store for SqlStore {
    fn dialect(&self) -> Dialect {
        match self {
            SqlStore::Sqlite(_) => Dialect::Sqlite,
            SqlStore::Postgres(_) => Dialect::Postgres,
        }
    }

    async fn conn(&self) -> Result<Box<dyn Conn>, StoreError> {
        Ok(match self {
            SqlStore::Sqlite(p) => Box::new(SqliteConn(p.lease().await.map_err(store_error)?)),
            SqlStore::Postgres(p) => Box::new(PgConn(p.lease().await.map_err(store_error)?)),
        })
    }

    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
        Ok(match self {
            // IMMEDIATE takes the write lock up front: two deferred
            // transactions that both read and then write would deadlock.
            SqlStore::Sqlite(p) => Box::new(SqliteTx(
                p.begin(Some("BEGIN IMMEDIATE"))
                    .await
                    .map_err(store_error)?,
            )),
            SqlStore::Postgres(p) => Box::new(PgTx(p.begin(None).await.map_err(store_error)?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_values_read_back_as_their_attribute_types() {
        use AttrType::*;
        let (pg, lite) = (Dialect::Postgres, Dialect::Sqlite);
        let cases = [
            (json!(null), Integer, lite, json!(null)),
            (
                json!(9_007_199_254_740_993_i64),
                Integer,
                pg,
                json!(9_007_199_254_740_993_i64),
            ),
            (json!(2.9), Integer, lite, json!(2)),
            (json!(3.0), Number, lite, json!(3)),
            (json!(0.1), Number, pg, json!(0.1)),
            (json!("Infinity"), Number, pg, json!(null)),
            (json!(1), Boolean, lite, json!(true)),
            (json!(0), Boolean, lite, json!(false)),
            (json!(true), Boolean, pg, json!(true)),
            (json!(42), String, lite, json!("42")),
            (json!("{\"a\":1}"), Json, lite, json!({"a": 1})),
            (json!("not json"), Json, lite, json!("not json")),
            (json!("{\"a\":1}"), Json, pg, json!("{\"a\":1}")),
            (json!({"a": 1}), Json, pg, json!({"a": 1})),
        ];
        for (input, ty, dialect, want) in cases {
            assert_eq!(
                json_column(input.clone(), ty, dialect),
                want,
                "{input} as {ty:?} on {dialect:?}"
            );
        }
    }

    #[test]
    fn unique_violations_name_their_columns() {
        assert_eq!(
            pg_key_columns("Key (email)=(ann@example.com) already exists."),
            vec!["email"]
        );
        assert_eq!(
            pg_key_columns("Key (a, \"b c\")=(1, 2) already exists."),
            vec!["a", "b c"]
        );
        assert!(pg_key_columns("no key here").is_empty());
        assert_eq!(
            sqlite_unique_columns("UNIQUE constraint failed: user.email, user.name"),
            vec!["email", "name"]
        );
    }
}
