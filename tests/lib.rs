//! Helpers for the integration tests: a fresh database per test (a SQLite
//! file in the temporary directory, or a fresh PostgreSQL schema), the zoo
//! app over it with a
//! recording publisher, and a client that drives the router in process.

use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use topsail::{Actor, RecordingPublisher, SqlStore, Topsail};
use tower::ServiceExt;

/// The PostgreSQL server the tests use: `TOPSAIL_TEST_PG`, else the local
/// server with trust auth.
pub fn pg_url() -> String {
    std::env::var("TOPSAIL_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A fresh SQLite file (a pool of connections shares it, as in an app).
    Sqlite,
    /// A fresh schema on PostgreSQL.
    Postgres,
}

/// What to remove when a test is done.
#[derive(Debug, Clone)]
pub enum Cleanup {
    /// A SQLite file (and its WAL files).
    File(std::path::PathBuf),
    /// A PostgreSQL schema.
    Schema(String),
}

impl Cleanup {
    /// Removes the test database.
    pub async fn run(self) {
        match self {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::Schema(s) => {
                if let Ok(admin) = SqlStore::connect(&pg_url()).await {
                    let _ = admin
                        .execute_script(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"))
                        .await;
                    admin.close().await;
                }
            }
        }
    }
}

fn unique_name() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("topsail_test_{}_{n}", std::process::id())
}

/// A fresh, empty store: a SQLite file in the temp directory (a real pool
/// of connections, as an app has), or a new PostgreSQL schema. PostgreSQL
/// that cannot be reached fails the test loudly: these tests never skip.
pub async fn fresh_store(db: Db) -> (SqlStore, Cleanup) {
    let name = unique_name();
    match db {
        Db::Sqlite => {
            let path = std::env::temp_dir().join(format!("{name}.sqlite"));
            let url = format!("sqlite://{}", path.display());
            (
                SqlStore::connect(&url).await.expect("SQLite file"),
                Cleanup::File(path),
            )
        }
        Db::Postgres => {
            let admin = SqlStore::connect(&pg_url()).await.unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required for these tests and is not reachable at {}: {e}",
                    pg_url()
                )
            });
            admin
                .execute_script(&format!("CREATE SCHEMA \"{name}\""))
                .await
                .expect("create test schema");
            admin.close().await;
            let opts = PgConnectOptions::from_str(&pg_url())
                .expect("pg url")
                .options([("search_path", name.as_str())]);
            (
                SqlStore::connect_postgres(opts)
                    .await
                    .expect("connect to the test schema"),
                Cleanup::Schema(name),
            )
        }
    }
}

/// The zoo over a fresh database.
#[derive(Debug)]
pub struct Zoo {
    /// The app handle (typed API).
    pub app: Topsail,
    /// The blueprint router.
    pub router: Router,
    /// Every effect the app published.
    pub published: RecordingPublisher,
    /// Which database.
    pub db: Db,
    /// What to remove when the test is done.
    pub cleanup: Cleanup,
}

/// A response: status and body (JSON when it parses, else a string).
#[derive(Debug, Clone)]
pub struct Res {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: Value,
}

impl Res {
    /// The `code` of an error body.
    pub fn code(&self) -> &str {
        self.body.get("code").and_then(Value::as_str).unwrap_or("")
    }
}

/// Builds the zoo over a fresh database with a recording publisher.
pub async fn zoo(db: Db) -> Zoo {
    zoo_with(db, |b| b).await
}

/// Builds the zoo, letting the test adjust the blueprints.
pub async fn zoo_with(db: Db, f: impl FnOnce(topsail::Blueprints) -> topsail::Blueprints) -> Zoo {
    let published = RecordingPublisher::new();
    let (store, cleanup) = fresh_store(db).await;
    let app = example_zoo::builder()
        .store(store)
        .publisher(Arc::new(published.clone()))
        .build()
        .await
        .expect("zoo starts");
    let router = f(app.blueprints()).router();
    Zoo {
        app,
        router,
        published,
        db,
        cleanup,
    }
}

/// Sends a request through `router` as `actor` (none: an HTTP client),
/// with a JSON body when one is given.
pub async fn call(
    router: &Router,
    actor: Option<Actor>,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> Res {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let mut req = req
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .expect("request");
    if let Some(a) = actor {
        req.extensions_mut().insert(a);
    }
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Res { status, body }
}

impl Zoo {
    /// Sends a request through the router as `actor`.
    pub async fn send_as(
        &self,
        actor: Option<Actor>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> Res {
        call(&self.router, actor, method, uri, body).await
    }

    /// Sends a request over "HTTP" (no socket actor).
    pub async fn send(&self, method: Method, uri: &str, body: Option<Value>) -> Res {
        self.send_as(None, method, uri, body).await
    }

    /// GET, expecting 200.
    pub async fn get(&self, uri: &str) -> Value {
        let r = self.send(Method::GET, uri, None).await;
        assert_eq!(r.status, StatusCode::OK, "GET {uri}: {:?}", r.body);
        r.body
    }

    /// POST JSON, expecting 200.
    pub async fn post(&self, uri: &str, body: Value) -> Value {
        let r = self.send(Method::POST, uri, Some(body)).await;
        assert_eq!(r.status, StatusCode::OK, "POST {uri}: {:?}", r.body);
        r.body
    }

    /// Creates a user, returning its id.
    pub async fn user(&self, name: &str) -> i64 {
        let email = format!("{}@example.com", name.to_lowercase());
        self.post("/user", serde_json::json!({"name": name, "email": email}))
            .await
            .get("id")
            .and_then(Value::as_i64)
            .expect("user id")
    }

    /// Creates a pet, returning its id.
    pub async fn pet(&self, name: &str, extra: Value) -> i64 {
        let mut body = serde_json::json!({"name": name});
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        self.post("/pet", body)
            .await
            .get("id")
            .and_then(Value::as_i64)
            .expect("pet id")
    }

    /// Creates a tag, returning its id.
    pub async fn tag(&self, label: &str) -> i64 {
        self.post("/tag", serde_json::json!({"label": label}))
            .await
            .get("id")
            .and_then(Value::as_i64)
            .expect("tag id")
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Drop for Zoo {
    // SQLite files go even when a test builds its zoo by hand or panics.
    fn drop(&mut self) {
        if let Cleanup::File(path) = &self.cleanup {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Serves `router` on a free port of 127.0.0.1: its address, and the
/// server's task (abort it to stop).
pub async fn serve_on_free_port(
    router: Router,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("its address");
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, server)
}

/// Runs `test` on a fresh zoo over `db`, then removes the database.
pub async fn run_on<F, Fut>(db: Db, test: F)
where
    F: FnOnce(Zoo) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let z = zoo(db).await;
    let cleanup = z.cleanup.clone();
    let store = z.app.store().clone();
    test(z).await;
    store.close().await;
    cleanup.run().await;
}

/// Runs a test body on SQLite and on PostgreSQL, as two tests.
#[macro_export]
macro_rules! both {
    ($(#[$m:meta])* async fn $name:ident($z:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($z: $crate::Zoo) $body
            #[tokio::test]
            async fn sqlite() {
                $crate::run_on($crate::Db::Sqlite, run).await
            }
            #[tokio::test]
            async fn postgres() {
                $crate::run_on($crate::Db::Postgres, run).await
            }
        }
    };
}

/// Runs `$run(db)` (an async fn taking a [`Db`]) as two tests,
/// `$name::sqlite` and `$name::postgres`.
#[macro_export]
macro_rules! each_db {
    ($name:ident, $run:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$run($crate::Db::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$run($crate::Db::Postgres).await
            }
        }
    };
}

/// A Redis server of the test's own, on a free port, stopped when dropped
/// (as the end-to-end cluster suites run theirs): a test needs only
/// `redis-server` installed, not one running. `DEBUG` is enabled, for
/// tests that pause it (`DEBUG SLEEP`).
#[derive(Debug)]
pub struct OwnRedis {
    child: std::process::Child,
    /// `redis://127.0.0.1:<port>/`.
    pub url: String,
    /// Its port.
    pub port: u16,
}

impl OwnRedis {
    /// Starts it; returns once it accepts connections.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server must be installed (scripts/test checks it): {e}")
            });
        // Owned at once: stopped on every path, a failed start included.
        let redis = OwnRedis {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
            port,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    /// Pauses it for `seconds` (`DEBUG SLEEP`), in the background: returns
    /// at once, with the `redis-cli` to wait for.
    pub fn pause(&self, seconds: u32) -> std::process::Child {
        std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "DEBUG", "SLEEP"])
            .arg(seconds.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-cli must be installed: {e}"))
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
