/*!
Connections handed back out without sqlx's release round trip.

When a `PoolConnection` is dropped, sqlx pings it before it takes it back
(on PostgreSQL a `Sync` and its `ReadyForQuery`): one more round trip to the
database for every request, which measured a third of the server's CPU per
`findOne` and as much work again for the database. A connection whose last
statement completed is known to be in a clean state, so the store keeps such
connections on a stack of its own and hands them straight out again. A
connection whose work was interrupted (a request cancelled mid-statement) or
failed goes back through sqlx, which checks it, as do transactions.

A semaphore with one permit per connection bounds the connections in use,
so a request waiting for a connection wakes when one is put back on the
stack. The invariant that keeps it from waiting forever on sqlx: a permit
holder asks sqlx for a connection only when the stack is empty (so sqlx has
a free slot for it) or after handing sqlx one from the stack.
*/

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool, Transaction};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection on the stack longer than this goes back through sqlx (which
/// pings it) before it is used again.
const STALE_AFTER: Duration = Duration::from_secs(30);
/// A connection the store has held this long goes back to sqlx when
/// released, so sqlx's `max_lifetime` still retires it.
const RENEW_AFTER: Duration = Duration::from_secs(15 * 60);
/// A connection left at the bottom of the stack this long goes back to
/// sqlx, whose idle timeout then closes it: the stack does not keep a
/// burst's connections open for ever.
const IDLE_AFTER: Duration = Duration::from_secs(10 * 60);

/// Whether `e` says the connection itself failed (the server restarted or
/// went away, the socket broke), rather than the statement: the connection
/// is not used again, and a read may be run once more on another.
pub(crate) fn is_connection_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL: connection exceptions (class 08), and the server
        // shutting down or starting (57P01..57P03).
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// Whether PostgreSQL answered a statement by ending the session
/// (57P01..57P03: terminated, crash shutdown, starting up): the statement's
/// transaction was rolled back, so an autocommit write did not happen and
/// may be sent again. (A broken socket says nothing of the sort.)
pub(crate) fn is_session_ended(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.code().is_some_and(|c| matches!(c.as_ref(), "57P01" | "57P02" | "57P03")))
}

/// When (ms since the epoch) a connection of this process last failed
/// (see [`is_connection_failure`]).
static LAST_CONNECTION_FAILURE: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Records a connection failure: every connection that went idle before it
/// may be as dead, so each is checked before it is used again (see
/// [`idle_since_last_failure`]).
pub(crate) fn note_connection_failure() {
    LAST_CONNECTION_FAILURE.store(now_ms(), Ordering::Relaxed);
}

/// Whether a connection idle for `idle_for` already sat idle when a
/// connection last failed: it is then checked before it is handed out.
pub(crate) fn idle_since_last_failure(idle_for: Duration) -> bool {
    let failed = LAST_CONNECTION_FAILURE.load(Ordering::Relaxed);
    failed != 0 && now_ms().saturating_sub(idle_for.as_millis() as u64) <= failed
}

/// A sqlx pool with a stack of clean connections in front of it.
pub struct Pooled<DB: Database> {
    pool: Pool<DB>,
    shared: Arc<Shared<DB>>,
}

impl<DB: Database> Clone for Pooled<DB> {
    fn clone(&self) -> Self {
        Pooled {
            pool: self.pool.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<DB: Database> std::fmt::Debug for Pooled<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("pool", &self.pool)
            .field("warm", &self.shared.stack().len())
            .finish()
    }
}

struct Shared<DB: Database> {
    permits: Arc<Semaphore>,
    /// How many permits there are: the most connections in use at once.
    max: usize,
    warm: Mutex<Vec<Warm<DB>>>,
    acquire_timeout: Duration,
}

impl<DB: Database> Shared<DB> {
    fn stack(&self) -> MutexGuard<'_, Vec<Warm<DB>>> {
        // The stack is consistent after any panic (push and pop only).
        self.warm.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Warm<DB: Database> {
    conn: PoolConnection<DB>,
    /// When the store first took it from sqlx.
    taken: Instant,
    /// When it was put on the stack.
    since: Instant,
}

/// A connection in use, with its permit. Put back on the stack when dropped
/// clean; otherwise sqlx checks it.
pub(crate) struct Lease<DB: Database> {
    conn: Option<PoolConnection<DB>>,
    pool: Pool<DB>,
    taken: Instant,
    /// Set when the last operation completed; see [`Lease::busy`].
    clean: bool,
    shared: Arc<Shared<DB>>,
    _permit: OwnedSemaphorePermit,
}

/// A transaction on a sqlx connection, holding a permit.
pub(crate) struct PooledTx<DB: Database> {
    /// Always there, but while [`PooledTx::renew`] replaces it.
    tx: Option<Transaction<'static, DB>>,
    _permit: OwnedSemaphorePermit,
    /// Where it came from, to begin it again (see [`PooledTx::renew`]).
    pooled: Pooled<DB>,
    statement: Option<&'static str>,
    /// Whether a statement of it has completed.
    used: bool,
}

impl<DB: Database> Pooled<DB> {
    /// Fronts `pool` (whose `max_connections` and `acquire_timeout` it
    /// takes): a store with the app's own pool settings is
    /// `SqlStore::Postgres(Pooled::new(pool))`. A request that waits longer
    /// than `acquire_timeout` for a connection is answered 503 with
    /// `Retry-After`.
    pub fn new(pool: Pool<DB>) -> Self {
        let opts = pool.options();
        let max = opts.get_max_connections() as usize;
        let shared = Shared {
            permits: Arc::new(Semaphore::new(max)),
            max,
            warm: Mutex::new(Vec::new()),
            acquire_timeout: opts.get_acquire_timeout(),
        };
        Pooled {
            pool,
            shared: Arc::new(shared),
        }
    }

    /// The sqlx pool behind it. A connection taken from it directly is
    /// outside the store's count of connections in use: hold it briefly.
    pub fn sqlx_pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Connections in use now (leases and transactions), and the most
    /// there may be.
    pub fn connections(&self) -> (usize, usize) {
        let free = self.shared.permits.available_permits();
        (self.shared.max.saturating_sub(free), self.shared.max)
    }

    /// A permit to use a connection; how long it took is recorded as
    /// `topsail_db_acquire_wait_seconds`.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, sqlx::Error> {
        let started = Instant::now();
        let wait = self.shared.permits.clone().acquire_owned();
        let permit = match tokio::time::timeout(self.shared.acquire_timeout, wait).await {
            Err(_) => Err(sqlx::Error::PoolTimedOut),
            Ok(Err(_)) => Err(sqlx::Error::PoolClosed),
            Ok(Ok(p)) => Ok(p),
        };
        metrics::histogram!("topsail_db_acquire_wait_seconds")
            .record(started.elapsed().as_secs_f64());
        permit
    }

    /// The most recently used clean connection, or one from sqlx.
    pub(crate) async fn lease(&self) -> Result<Lease<DB>, sqlx::Error> {
        let permit = self.permit().await?;
        let (warm, idle) = {
            let mut stack = self.shared.stack();
            let idle = match stack.first() {
                Some(w) if w.since.elapsed() >= IDLE_AFTER => Some(stack.remove(0)),
                _ => None,
            };
            (stack.pop(), idle)
        };
        // Dropped outside the lock (it spawns sqlx's release).
        drop(idle);
        let (conn, taken) = match warm {
            Some(w) if w.since.elapsed() < STALE_AFTER => (w.conn, w.taken),
            // Dropping it returns it to sqlx, which pings it; sqlx now has
            // a slot for this permit (the invariant above).
            stale => {
                drop(stale);
                (self.pool.acquire().await?, Instant::now())
            }
        };
        Ok(Lease {
            conn: Some(conn),
            pool: self.pool.clone(),
            taken,
            clean: true,
            shared: self.shared.clone(),
            _permit: permit,
        })
    }

    /// A transaction, begun with `statement` (or `BEGIN`), on a connection
    /// from sqlx: its rollback on drop and its check on release are sqlx's.
    /// When the connection fails before the transaction began (a restarted
    /// server), it is begun once more, on a connection that is checked:
    /// nothing was written yet.
    pub(crate) async fn begin(
        &self,
        statement: Option<&'static str>,
    ) -> Result<PooledTx<DB>, sqlx::Error> {
        match self.try_to_begin(statement).await {
            Err(e) if is_connection_failure(&e) => {
                tracing::warn!(error = %e, "a database connection failed; beginning again on a checked one");
                self.forget_connections();
                self.try_to_begin(statement).await
            }
            other => other,
        }
    }

    /// After a connection failed: the other connections may be as dead, so
    /// the stacked ones go back through sqlx (which checks each), and every
    /// idle one is checked before it is used (see `before_acquire`).
    pub(crate) fn forget_connections(&self) {
        note_connection_failure();
        let stacked = std::mem::take(&mut *self.shared.stack());
        drop(stacked);
    }

    async fn try_to_begin(
        &self,
        statement: Option<&'static str>,
    ) -> Result<PooledTx<DB>, sqlx::Error> {
        let permit = self.permit().await?;
        let ready = match statement {
            Some(s) => self.pool.try_begin_with(s).await?,
            None => self.pool.try_begin().await?,
        };
        let tx = match ready {
            Some(tx) => tx,
            None => {
                // sqlx has no idle connection: give it one from the stack
                // (the invariant above), then wait for it.
                drop(self.shared.stack().pop());
                match statement {
                    Some(s) => self.pool.begin_with(s).await?,
                    None => self.pool.begin().await?,
                }
            }
        };
        Ok(PooledTx {
            tx: Some(tx),
            _permit: permit,
            pooled: self.clone(),
            statement,
            used: false,
        })
    }

    /// Closes the pool: the stacked connections first, then sqlx's.
    pub(crate) async fn close(&self) {
        self.shared.permits.close();
        let stacked = std::mem::take(&mut *self.shared.stack());
        drop(stacked);
        self.pool.close().await;
    }
}

impl<DB: Database> PooledTx<DB> {
    /// A statement of the transaction completed: from now on it cannot
    /// move to another connection.
    pub(crate) fn used(&mut self) {
        self.used = true;
    }

    /// Whether nothing has run in the transaction yet, so that a
    /// connection failure can be met by beginning it again elsewhere.
    pub(crate) fn is_fresh(&self) -> bool {
        !self.used
    }

    /// Begins the transaction again on a checked connection, keeping the
    /// permit, after its first statement found the connection dead (sqlx
    /// sends `BEGIN` with that statement, so the failure shows there).
    pub(crate) async fn renew(&mut self) -> Result<(), sqlx::Error> {
        self.pooled.forget_connections();
        // The dead connection goes first: this permit then holds none, so
        // sqlx has a free slot for it (the invariant above).
        drop(self.tx.take());
        let pool = &self.pooled.pool;
        self.tx = Some(match self.statement {
            Some(s) => pool.begin_with(s).await?,
            None => pool.begin().await?,
        });
        Ok(())
    }

    /// The transaction's connection.
    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        self.tx
            .as_mut()
            .expect("a transaction is there but while it is renewed")
    }

    /// Commits the transaction.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        match self.tx.take() {
            Some(tx) => tx.commit().await,
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// The transaction and the permit it must be held with.
    pub(crate) fn into_parts(mut self) -> (Transaction<'static, DB>, OwnedSemaphorePermit) {
        let tx = self
            .tx
            .take()
            .expect("a transaction is there but while it is renewed");
        (tx, self._permit)
    }
}

impl<DB: Database> Lease<DB> {
    /// Marks the connection busy until [`Lease::done`]: a lease dropped
    /// busy (its future cancelled, or its statement failed) goes back
    /// through sqlx.
    pub(crate) fn busy(&mut self) -> &mut DB::Connection {
        self.clean = false;
        self.deref_mut()
    }

    /// The operation started by [`Lease::busy`] completed.
    pub(crate) fn done(&mut self) {
        self.clean = true;
    }

    /// Replaces a connection that failed (see [`is_connection_failure`])
    /// with one sqlx checks, keeping the permit. The stacked connections go
    /// back through sqlx first: a restarted server broke them all.
    pub(crate) async fn renew(&mut self) -> Result<(), sqlx::Error> {
        if let Some(mut dead) = self.conn.take() {
            dead.close_on_drop();
        }
        note_connection_failure();
        let stacked = std::mem::take(&mut *self.shared.stack());
        drop(stacked);
        // This permit holds no connection and the stack is empty: sqlx has
        // a free slot for it (the invariant above). Idle connections older
        // than the failure are pinged by `before_acquire` on the way.
        self.conn = Some(self.pool.acquire().await?);
        self.taken = Instant::now();
        self.clean = true;
        Ok(())
    }
}

impl<DB: Database> Deref for Lease<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl<DB: Database> DerefMut for Lease<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl<DB: Database> Drop for Lease<DB> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.clean && self.taken.elapsed() < RENEW_AFTER && !self.shared.permits.is_closed() {
            // Pushed before the permit is released (a field, dropped after
            // this), so the task it wakes finds the connection.
            self.shared.stack().push(Warm {
                conn,
                taken: self.taken,
                since: Instant::now(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgPoolOptions;
    use sqlx::{AssertSqlSafe, Postgres};

    /// The test server (as the integration tests): unreachable fails loudly.
    async fn pooled(max: u32) -> Pooled<Postgres> {
        let url = std::env::var("TOPSAIL_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
        Pooled::new(pool)
    }

    async fn backend_pid(c: &mut Lease<Postgres>) -> i32 {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(c.busy())
            .await
            .unwrap();
        c.done();
        pid
    }

    #[tokio::test]
    async fn a_clean_connection_is_handed_out_again_without_sqlx() {
        let p = pooled(2).await;
        let mut c = p.lease().await.unwrap();
        let first = backend_pid(&mut c).await;
        drop(c);
        assert_eq!(p.shared.stack().len(), 1, "kept on the stack");
        assert_eq!(p.pool.num_idle(), 0, "not returned to sqlx");
        let mut c = p.lease().await.unwrap();
        assert_eq!(backend_pid(&mut c).await, first, "the same connection");
    }

    #[tokio::test]
    async fn an_interrupted_statement_sends_the_connection_back_through_sqlx() {
        let p = pooled(1).await;
        let mut c = p.lease().await.unwrap();
        let slow = sqlx::query("SELECT pg_sleep(1)").execute(c.busy());
        assert!(
            tokio::time::timeout(Duration::from_millis(100), slow)
                .await
                .is_err()
        );
        drop(c);
        assert!(p.shared.stack().is_empty(), "not stacked mid-statement");
        // sqlx drains it (the sleep ends) and checks it; the next lease
        // gets a working connection.
        let mut c = p.lease().await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(c.busy())
            .await
            .unwrap();
        assert_eq!(one, 1);
    }

    #[tokio::test]
    async fn a_dropped_transaction_rolls_back() {
        let p = pooled(1).await;
        let table = format!("pooled_tx_{}", std::process::id());
        let mut c = p.lease().await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (x INT)"
        )))
        .execute(c.busy())
        .await
        .unwrap();
        c.done();
        drop(c);
        let mut tx = p.begin(None).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!("INSERT INTO {table} VALUES (1)")))
            .execute(tx.conn())
            .await
            .unwrap();
        drop(tx);
        let mut c = p.lease().await.unwrap();
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(c.busy())
            .await
            .unwrap();
        c.done();
        sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(c.busy())
            .await
            .unwrap();
        assert_eq!(n, 0);
    }

    /// Leases and transactions from many tasks over two connections: every
    /// one gets a connection (none waits for the acquire timeout) and the
    /// connections in use never exceed the pool's size.
    #[tokio::test]
    async fn leases_and_transactions_share_the_connections_without_stalling() {
        let p = pooled(2).await;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    if i % 3 == 0 {
                        let mut tx = p.begin(None).await.unwrap();
                        sqlx::query("SELECT 1").execute(tx.conn()).await.unwrap();
                        tx.commit().await.unwrap();
                    } else {
                        let mut c = p.lease().await.unwrap();
                        backend_pid(&mut c).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(p.pool.size() <= 2, "sqlx opened {}", p.pool.size());
        assert!(p.shared.stack().len() <= 2);
    }
}
