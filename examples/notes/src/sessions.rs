//! tower-sessions sessions in the app's own database (the `session` table),
//! SQLite or PostgreSQL, through the app's connection pool.
//!
//! Why not `tower-sessions-sqlx-store`: it is built on sqlx 0.8 and topsail
//! on sqlx 0.9, and one binary cannot link two SQLite libraries. The store
//! is four statements.

use topsail::SqlStore;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

/// Sessions stored in the `session` table of the app's database.
#[derive(Debug, Clone)]
pub struct SqlSessions {
    store: SqlStore,
}

/// Runs `$run` with `$pool` bound to the store's sqlx pool, SQLite or
/// PostgreSQL: the statements are the same text on both, only the pool's
/// type differs.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $run:expr) => {
        match $store {
            SqlStore::Sqlite(p) => {
                let $pool = p.sqlx_pool();
                $run
            }
            SqlStore::Postgres(p) => {
                let $pool = p.sqlx_pool();
                $run
            }
        }
    };
}

fn backend(e: sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn encode(r: &Record) -> session_store::Result<String> {
    serde_json::to_string(&r.data).map_err(|e| session_store::Error::Encode(e.to_string()))
}

fn now() -> i64 {
    tower_sessions::cookie::time::OffsetDateTime::now_utc().unix_timestamp()
}

impl SqlSessions {
    /// Sessions in `store`'s database.
    pub fn new(store: SqlStore) -> Self {
        SqlSessions { store }
    }

    /// Creates the `session` table when it is missing.
    pub async fn create_table(&self) -> Result<(), topsail::core::StoreError> {
        self.store
            .execute_script(
                "CREATE TABLE IF NOT EXISTS session (\
                   id TEXT PRIMARY KEY NOT NULL, \
                   data TEXT NOT NULL, \
                   expiry_date BIGINT NOT NULL)",
            )
            .await
    }

    /// Inserts `r`; false when its id is taken. With `replace`, an existing
    /// row is overwritten instead.
    async fn put(&self, r: &Record, replace: bool) -> session_store::Result<bool> {
        let data = encode(r)?;
        let (id, expiry) = (r.id.to_string(), r.expiry_date.unix_timestamp());
        const INSERT: &str = "INSERT INTO session (id, data, expiry_date) VALUES ($1, $2, $3) \
            ON CONFLICT (id) DO NOTHING";
        const UPSERT: &str = "INSERT INTO session (id, data, expiry_date) VALUES ($1, $2, $3) \
            ON CONFLICT (id) DO UPDATE SET data = excluded.data, expiry_date = excluded.expiry_date";
        let sql = if replace { UPSERT } else { INSERT };
        let done = on_pool!(&self.store, |pool| {
            let q = sqlx::query(sql).bind(id).bind(data).bind(expiry);
            q.execute(pool).await.map_err(backend)?.rows_affected()
        });
        Ok(done > 0)
    }
}

#[async_trait::async_trait]
impl SessionStore for SqlSessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A fresh id until one is free (a collision of 128 random bits is
        // not expected, but never overwrites another's session).
        while !self.put(record, false).await? {
            record.id = Id::default();
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.put(record, true).await.map(|_| ())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        const SQL: &str =
            "SELECT data, expiry_date FROM session WHERE id = $1 AND expiry_date > $2";
        let row: Option<(String, i64)> = on_pool!(&self.store, |pool| {
            let q = sqlx::query_as(SQL).bind(id.to_string()).bind(now());
            q.fetch_optional(pool).await.map_err(backend)?
        });
        let Some((data, expiry)) = row else {
            return Ok(None);
        };
        let data =
            serde_json::from_str(&data).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date = tower_sessions::cookie::time::OffsetDateTime::from_unix_timestamp(expiry)
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        const SQL: &str = "DELETE FROM session WHERE id = $1";
        on_pool!(&self.store, |pool| {
            let q = sqlx::query(SQL).bind(id.to_string());
            q.execute(pool).await.map(|_| ()).map_err(backend)
        })
    }
}
