//! Wiring: a store from a URL, the schema, the engine and the blueprints.

use std::sync::Arc;

use topsail_blueprints::Blueprints;
use topsail_core::access::{Principal, Rules};
use topsail_core::pubsub::{NoPublisher, Publisher};
use topsail_core::{Engine, EngineConfig, Model, Registry, RegistryError};
use topsail_socket::{Realtime, RealtimeConfig, RealtimeError, Sockets};
use topsail_sql::{ConnectError, MigrateError, Migration, SqlStore};

use crate::typed::Models;

/// Why an app could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The models do not hang together.
    #[error("invalid models: {0}")]
    Models(#[from] RegistryError),
    /// The database could not be reached or the URL is wrong.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The schema could not be set up.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// The socket cluster could not start.
    #[error(transparent)]
    Realtime(#[from] RealtimeError),
    /// No database was given.
    #[error("no database: call `Builder::database_url` or `Builder::store`")]
    NoDatabase,
}

/// How the schema is set up at start.
#[derive(Debug, Clone)]
enum Schema {
    /// Leave it alone.
    Existing,
    /// Create missing tables from model metadata.
    FromModels,
    /// Apply these migrations per dialect (`sqlite`, `postgres`).
    Migrations {
        sqlite: Vec<Migration>,
        postgres: Vec<Migration>,
    },
}

/// Builds a [`Topsail`].
pub struct Builder {
    registry: Registry,
    url: Option<String>,
    store: Option<SqlStore>,
    publisher: Option<Arc<dyn Publisher>>,
    config: EngineConfig,
    schema: Schema,
    realtime: Option<RealtimeConfig>,
    redis_url: Option<String>,
    rules: Rules,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("registry", &self.registry)
            // The password never reaches a log line.
            .field("url", &self.url.as_deref().map(topsail_sql::redacted))
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Registers model `M`.
    pub fn model<M: Model>(mut self) -> Self {
        self.registry = self.registry.model::<M>();
        self
    }

    /// Registers every model of `registry` (an app that lists its models
    /// once, for the builder, the schema printer and its tests).
    pub fn models(mut self, registry: &Registry) -> Self {
        for &def in registry.models() {
            self.registry = self.registry.def(def);
        }
        self
    }

    /// Connects to this database (`sqlite://app.sqlite`, `sqlite::memory:`,
    /// `postgres://...`).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Uses this store.
    pub fn store(mut self, store: SqlStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Publishes pub-sub effects through `publisher` too: with realtime
    /// on, each change's effects go to the sockets first, then to
    /// `publisher` (an audit log, a recorder in tests); without, to
    /// `publisher` only.
    pub fn publisher(mut self, publisher: Arc<dyn Publisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Serves sails.io.js sockets (virtual requests and pub-sub) in this
    /// process; [`Topsail::serve`] mounts them.
    pub fn realtime(mut self, config: RealtimeConfig) -> Self {
        self.realtime = Some(config);
        self
    }

    /// Makes this process one node of a cluster sharing Redis at `url`
    /// (and, for the data, one database): sockets connected to any node
    /// hear every change. Turns realtime on.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self.realtime.get_or_insert_with(RealtimeConfig::default);
        self
    }

    /// Holds clients to these access rules (see [`Rules`]): in answers, in
    /// what they populate and watch, in every published message (per
    /// recipient), and on writes.
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// Engine settings (`auto_watch`, `mirror`).
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Creates missing tables from the models at start (prototypes, tests).
    pub fn create_schema(mut self) -> Self {
        self.schema = Schema::FromModels;
        self
    }

    /// Applies these migrations at start, per dialect.
    pub fn migrations(mut self, sqlite: &[Migration], postgres: &[Migration]) -> Self {
        self.schema = Schema::Migrations {
            sqlite: sqlite.to_vec(),
            postgres: postgres.to_vec(),
        };
        self
    }

    /// Connects, sets up the schema and returns the app handle.
    pub async fn build(self) -> Result<Topsail, StartError> {
        self.registry.validate()?;
        let store = match (self.store, self.url) {
            (Some(s), _) => s,
            (None, Some(url)) => SqlStore::connect(&url).await?,
            (None, None) => return Err(StartError::NoDatabase),
        };
        match &self.schema {
            Schema::Existing => {}
            Schema::FromModels => topsail_sql::create_schema(&store, &self.registry)
                .await
                .map_err(MigrateError::from)?,
            Schema::Migrations { sqlite, postgres } => {
                let list = match store {
                    SqlStore::Sqlite(_) => sqlite,
                    SqlStore::Postgres(_) => postgres,
                };
                topsail_sql::migrate(&store, list).await?;
            }
        }
        let realtime = match (&self.realtime, &self.redis_url) {
            (Some(cfg), Some(url)) => Some(Realtime::redis(url, cfg).await?),
            (Some(cfg), None) => Some(Realtime::local(cfg)),
            (None, _) => None,
        };
        let publisher: Arc<dyn Publisher> = match (&realtime, self.publisher) {
            (Some(rt), Some(app)) => Arc::new(Both(Arc::new(rt.publisher()), app)),
            (Some(rt), None) => Arc::new(rt.publisher()),
            (None, Some(app)) => app,
            (None, None) => Arc::new(NoPublisher),
        };
        if let Some(rt) = &realtime {
            rt.sockets()
                .guard_with(self.rules.clone(), self.registry.models().iter().copied());
            rt.read_back().await?;
        }
        let engine =
            Engine::new(Arc::new(store.clone()), publisher, self.config).with_rules(self.rules);
        Ok(Topsail {
            engine,
            registry: self.registry,
            store,
            realtime,
        })
    }
}

/// Two publishers, in order: the sockets, then the app's own.
struct Both(Arc<dyn Publisher>, Arc<dyn Publisher>);

#[async_trait::async_trait]
impl Publisher for Both {
    async fn publish(&self, effects: Vec<topsail_core::Effect>) {
        self.queue(effects).await.await;
    }

    /// Taken by both, in order: the app's publisher takes the effects once
    /// the sockets' queue has.
    async fn queue(&self, effects: Vec<topsail_core::Effect>) -> topsail_core::pubsub::Handed {
        let sockets = self.0.queue(effects.clone()).await;
        let app = self.1.queue(effects).await;
        Box::pin(async move {
            sockets.await;
            app.await;
        })
    }
}

/// A running topsail app: the models, the store and the engine.
#[derive(Debug, Clone)]
pub struct Topsail {
    engine: Engine,
    registry: Registry,
    store: SqlStore,
    realtime: Option<Realtime>,
}

impl Topsail {
    /// Starts building an app.
    pub fn builder() -> Builder {
        Builder {
            registry: Registry::new(),
            url: None,
            store: None,
            publisher: None,
            config: EngineConfig::default(),
            schema: Schema::Existing,
            realtime: None,
            redis_url: None,
            rules: Rules::new(),
        }
    }

    /// The typed actions of model `M`.
    pub fn model<M: Model>(&self) -> Models<'_, M> {
        Models::new(&self.engine)
    }

    /// The engine (dynamic, JSON-level actions).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The registered models.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The store.
    pub fn store(&self) -> &SqlStore {
        &self.store
    }

    /// The sockets API, when realtime is on.
    pub fn sockets(&self) -> Option<&Sockets> {
        self.realtime.as_ref().map(Realtime::sockets)
    }

    /// The router to serve: `routes` (the app's routes with the blueprints
    /// mounted), and, when realtime is on, the socket.io endpoint whose
    /// virtual requests run through those same `routes`. Call it once.
    ///
    /// Every HTTP request runs in a `request` span and is logged (one
    /// `tracing` line: method, path, status, duration, transport) when a
    /// subscriber listens at info level as this is called; socket requests
    /// are traced and logged by the socket layer, once. A handler of `routes` that returns
    /// [`topsail::Error`](crate::Error) answers exactly as a blueprint
    /// action does, over HTTP and over sockets.
    pub fn serve(&self, routes: axum::Router) -> axum::Router {
        let routes = routes.layer(axum::middleware::from_fn(topsail_blueprints::name_errors));
        let router = match &self.realtime {
            Some(rt) => rt.serve(routes),
            None => routes,
        };
        // One `request` span per HTTP request, with the fields the socket
        // bridge gives its own (`transport`, `method`, `path`, `status`):
        // the blueprint action, its SQL statements and its publish nest
        // under it. Failures are logged where they are answered. Left off
        // when nothing listens at info level as the router is built: the
        // layer costs about a tenth of a `GET /user/1` even with its spans
        // disabled (measured: 102 against 90 µs of CPU per request).
        if !tracing::enabled!(tracing::Level::INFO) {
            return router;
        }
        let trace = tower_http::trace::TraceLayer::new_for_http()
            .make_span_with(http_span)
            .on_request(())
            .on_response(http_done)
            .on_body_chunk(())
            .on_eos(())
            .on_failure(());
        router.layer(trace)
    }

    /// Disconnects every socket of this process, cleanly. Prefer
    /// [`Topsail::shutdown`], which lets their work end first.
    pub async fn close_sockets(&self) {
        if let Some(rt) = &self.realtime {
            rt.close().await;
        }
    }

    /// A graceful shutdown of what the app runs besides the HTTP server;
    /// call it once the server has stopped accepting and finished its
    /// requests (`axum::serve(..).with_graceful_shutdown(..)` returned). In
    /// order: socket requests are refused from now on (503) while those in
    /// flight end; writes whose HTTP client went away end; every message
    /// they published is delivered (through Redis in a cluster); then the
    /// sockets are disconnected cleanly, and a single process's replay
    /// journal is closed for the next process (see
    /// `ReplayConfig::restart_file`). Returns false, and logs what was
    /// left, when `deadline` passed first; the sockets are closed anyway.
    ///
    /// ```no_run
    /// # async fn run(app: topsail::Topsail, listener: tokio::net::TcpListener, router: axum::Router) {
    /// let signal = async { let _ = tokio::signal::ctrl_c().await; };
    /// axum::serve(listener, router).with_graceful_shutdown(signal).await.unwrap();
    /// app.shutdown(std::time::Duration::from_secs(10)).await;
    /// # }
    /// ```
    pub async fn shutdown(&self, deadline: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + deadline;
        let left = || until.saturating_duration_since(std::time::Instant::now());
        if let Some(rt) = &self.realtime {
            rt.requests().close();
        }
        let requests = match &self.realtime {
            Some(rt) => rt.requests().idle(left()).await,
            None => true,
        };
        let writes = self.engine.writes().idle(left()).await;
        let delivered = match &self.realtime {
            Some(rt) => rt.publisher().flush(left()).await,
            None => true,
        };
        let clean = requests && writes && delivered;
        if let Some(rt) = &self.realtime {
            rt.close().await;
            // Whatever was left undone: what was delivered was journaled.
            rt.close_journal();
        }
        if clean {
            tracing::info!(
                "shut down cleanly: every request ended and every message was delivered"
            );
        } else {
            tracing::warn!(
                socket_requests = self.realtime.as_ref().map_or(0, |rt| rt.requests().len()),
                writes = self.engine.writes().len(),
                undelivered_batches = self
                    .realtime
                    .as_ref()
                    .map_or(0, |rt| rt.publisher().queue_depth()),
                "shutdown deadline passed with work left"
            );
        }
        clean
    }

    /// How many actions' messages wait to be delivered to sockets (0
    /// without realtime): the depth of the publisher queue, bounded by
    /// [`RealtimeConfig::publisher_queue`].
    pub fn publisher_queue_depth(&self) -> usize {
        self.realtime
            .as_ref()
            .map_or(0, |rt| rt.publisher().queue_depth())
    }

    /// The identity layer over `identify`: put it on the routes given to
    /// [`Topsail::serve`], inside the layers it reads (a session layer goes
    /// on after it, so it runs first), and every request, HTTP or socket,
    /// is identified once (see [`Identify`](crate::Identify)).
    ///
    /// Layers on the router given to `serve` apply to socket requests too;
    /// layers added to the router `serve` returns apply to HTTP only.
    pub fn identity(&self, identify: impl crate::Identify) -> crate::IdentityLayer {
        crate::IdentityLayer::new(Arc::new(identify), self.engine.publisher().clone())
    }

    /// Runs the identity of this process' sockets whose principal
    /// `matches` again, as their next request would: after a sign-out, an
    /// expiry or a role change made over another connection, so messages
    /// stop reaching them under the old principal at once. Returns how
    /// many sockets were identified again. (A cluster: call it on each
    /// node, or let each socket's next request do it.)
    pub async fn reidentify(&self, matches: impl Fn(&Principal) -> bool + Send + Sync) -> usize {
        match &self.realtime {
            Some(rt) => rt.sockets().reidentify(&matches).await,
            None => 0,
        }
    }

    /// Blueprints for every registered model; configure, then call
    /// `.router()` or `.mount(app_routes)`.
    pub fn blueprints(&self) -> Blueprints {
        Blueprints::new(self.engine.clone(), self.registry.clone())
    }
}

/// Resolves on Ctrl-C or SIGTERM: the signal to give
/// `axum::serve(..).with_graceful_shutdown(..)` before [`Topsail::shutdown`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}

/// One log line per HTTP request.
/// The span of an HTTP request (see [`Topsail::serve`]): the fields the
/// socket bridge gives its own.
fn http_span(req: &axum::extract::Request) -> tracing::Span {
    tracing::info_span!(
        "request",
        transport = "http",
        method = %req.method(),
        path = req.uri().path(),
        status = tracing::field::Empty,
    )
}

/// An HTTP request answered: its status on the span, one `request` line.
fn http_done(res: &axum::response::Response, latency: std::time::Duration, span: &tracing::Span) {
    span.record("status", res.status().as_u16());
    tracing::info!(ms = latency.as_secs_f64() * 1000.0, "request");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_does_not_print_a_database_password() {
        let b = Topsail::builder().database_url("postgres://app:s3cret@db.example/zoo");
        let printed = format!("{b:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("postgres://app:***@db.example/zoo"),
            "{printed}"
        );
    }

    #[tokio::test]
    async fn an_unusable_url_is_reported_without_its_password() {
        let err = Topsail::builder()
            .database_url("mysql://app:s3cret@db.example/zoo")
            .build()
            .await
            .expect_err("mysql is not supported");
        let printed = format!("{err} {err:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("mysql://app:***@db.example/zoo"),
            "{printed}"
        );
    }
}
