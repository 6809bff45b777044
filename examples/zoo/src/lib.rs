//! The zoo: the reference topsail app (users, pets and tags), used by the
//! tests, the benchmarks and the demo.
//!
//! ```text
//! cargo run -p example-zoo                 # SQLite file zoo.sqlite, port 1337
//! curl -s localhost:1337/user -d '{"name":"Ann","email":"ann@example.com"}' -H 'content-type: application/json'
//! curl -s 'localhost:1337/pet?where={"name":{"contains":"re"}}&sort=name%20ASC'
//! DATABASE_URL=postgres://postgres@127.0.0.1/zoo cargo run -p example-zoo
//! REDIS_URL=redis://127.0.0.1:6379/ DATABASE_URL=postgres://... PORT=1338 cargo run -p example-zoo   # a second node
//! cargo run -p example-zoo -- --print-schema postgres
//! ```

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use topsail::{Link, Migration, Model, RealtimeConfig, Registry, SocketRequest, Topsail};

/// A person who owns pets.
#[derive(Model, Debug, Clone)]
pub struct User {
    /// Primary key.
    pub id: i64,
    /// Display name.
    #[model(required)]
    pub name: String,
    /// Unique email address.
    #[model(required, unique, is_email)]
    pub email: String,
    /// Age; 0 when not given.
    pub age: f64,
    /// The pets this user owns.
    #[model(collection = Pet, via = owner)]
    pub pets: Vec<Link<Pet>>,
    /// Creation time, epoch ms.
    #[model(created_at)]
    pub created_at: i64,
    /// Last update time, epoch ms.
    #[model(updated_at)]
    pub updated_at: i64,
}

/// A pet, owned by at most one user, with any number of tags.
#[derive(Model, Debug, Clone)]
pub struct Pet {
    /// Primary key.
    pub id: i64,
    /// Name.
    #[model(required)]
    pub name: String,
    /// Species; "" when not given.
    pub species: String,
    /// The owner.
    #[model(model = User)]
    pub owner: Option<Link<User>>,
    /// Tags (many-to-many).
    #[model(collection = Tag, via = pets)]
    pub tags: Vec<Link<Tag>>,
    /// Creation time, epoch ms.
    #[model(created_at)]
    pub created_at: i64,
    /// Last update time, epoch ms.
    #[model(updated_at)]
    pub updated_at: i64,
}

/// A label for pets.
#[derive(Model, Debug, Clone)]
pub struct Tag {
    /// Primary key.
    pub id: i64,
    /// Unique label.
    #[model(required, unique)]
    pub label: String,
    /// Pets with this tag.
    #[model(collection = Pet, via = tags)]
    pub pets: Vec<Link<Pet>>,
    /// Creation time, epoch ms.
    #[model(created_at)]
    pub created_at: i64,
    /// Last update time, epoch ms.
    #[model(updated_at)]
    pub updated_at: i64,
}

/// The zoo's models.
pub fn registry() -> Registry {
    Registry::new()
        .model::<User>()
        .model::<Pet>()
        .model::<Tag>()
}

/// The SQLite migrations (`migrations/sqlite`).
pub const SQLITE_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "zoo",
    sql: include_str!("../../../migrations/sqlite/0001_zoo.sql"),
}];

/// The PostgreSQL migrations (`migrations/postgres`).
pub const POSTGRES_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "zoo",
    sql: include_str!("../../../migrations/postgres/0001_zoo.sql"),
}];

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://zoo.sqlite";

/// A builder with the zoo's models and migrations; add a database.
pub fn builder() -> topsail::Builder {
    Topsail::builder()
        .models(&registry())
        .migrations(SQLITE_MIGRATIONS, POSTGRES_MIGRATIONS)
}

/// Connects to `database_url`, applies the migrations, and returns the app
/// and the router to serve: the zoo's own routes, the blueprints (REST and
/// shortcut routes on) and the sails.io.js socket endpoint.
///
/// With `redis_url`, the process is one node of a cluster sharing that Redis
/// (and the database).
pub async fn app(
    database_url: &str,
    redis_url: Option<&str>,
) -> Result<(Topsail, axum::Router), topsail::StartError> {
    app_with(database_url, redis_url, RealtimeConfig::default()).await
}

/// [`app`] with the socket server's settings (the zoo's binary sets the
/// allowed origins from `ALLOWED_ORIGINS`).
pub async fn app_with(
    database_url: &str,
    redis_url: Option<&str>,
    realtime: RealtimeConfig,
) -> Result<(Topsail, axum::Router), topsail::StartError> {
    let mut b = builder().realtime(realtime).database_url(database_url);
    if let Some(url) = redis_url {
        b = b.redis(url);
    }
    let ts = b.build().await?;
    let router = ts.serve(ts.blueprints().mount(routes(&ts)));
    Ok((ts, router))
}

type Reply = (StatusCode, Json<Value>);

fn done() -> Reply {
    (StatusCode::OK, Json(json!({"ok": true})))
}

fn failed(e: impl std::fmt::Display) -> Reply {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": e.to_string()})),
    )
}

fn only_sockets() -> Reply {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "send this over a socket"})),
    )
}

/// The zoo's own routes: the sockets API and the model-level pub-sub API,
/// as an app would expose them (and as the end-to-end tests drive them).
pub fn routes(app: &Topsail) -> axum::Router {
    axum::Router::new()
        .route(
            "/",
            get(|| async {
                page(
                    "text/html; charset=utf-8",
                    include_str!("../web/index.html"),
                )
            }),
        )
        .route(
            "/app.js",
            get(|| async { page("application/javascript", include_str!("../web/app.js")) }),
        )
        .route(
            "/style.css",
            get(|| async { page("text/css", include_str!("../web/style.css")) }),
        )
        .route("/js/sails.io.js", get(sails_io_js))
        .route("/whoami", get(whoami))
        .route("/delay/{ms}", get(delay))
        .route("/pets/{id}/subscribe", post(subscribe_pet))
        .route("/pets/{id}/unsubscribe", post(unsubscribe_pet))
        .route("/pets/watch", post(watch_pets))
        .route("/pets/unwatch", post(unwatch_pets))
        .merge(observability(app))
        .merge(if production() {
            axum::Router::new()
        } else {
            control_routes()
        })
        .with_state(app.clone())
}

/// `GET /metrics` (Prometheus) and the contracts (`/openapi.json`,
/// `/asyncapi.json`, `/topsail.ts`), served by default so a newcomer finds
/// them (an app would keep `/metrics` from the public).
fn observability(app: &Topsail) -> axum::Router<Topsail> {
    let contracts =
        topsail::Contracts::new(&app.blueprints()).titled("zoo", env!("CARGO_PKG_VERSION"));
    let metrics = app.metrics_router().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no /metrics");
        axum::Router::new()
    });
    metrics.merge(app.contracts_router(&contracts))
}

/// Whether the zoo runs in production: `NODE_ENV=production`, the setting
/// Sails reads. There the control routes are not served.
pub fn production() -> bool {
    std::env::var("NODE_ENV").is_ok_and(|v| v == "production")
}

/// The control routes: the sockets API by room and by socket id, `/blast`,
/// and publishing a pet's messages. They let any client join any room
/// (and so read every record's messages) or send any message to everyone,
/// in the name of the app; they exist for the demo page and the end-to-end
/// tests, and are left out in production (see [`production`]).
fn control_routes() -> axum::Router<Topsail> {
    axum::Router::new()
        .route("/rooms/{room}/join", post(join))
        .route("/rooms/{room}/leave", post(leave))
        .route("/rooms/{room}/broadcast", post(broadcast))
        .route("/rooms/{room}/leave-all", post(leave_all))
        .route("/rooms/{source}/add-members-to/{dest}", post(add_members))
        .route(
            "/rooms/{source}/remove-members-from/{dest}",
            post(remove_members),
        )
        .route("/sockets/{id}/join/{room}", post(join_by_id))
        .route("/sockets/{id}/leave/{room}", post(leave_by_id))
        .route("/sockets/{id}/rooms", get(rooms_of))
        .route("/blast", post(blast))
        .route("/pets/{id}/publish", post(publish_pet))
}

/// A static file of the demo page, with its content type.
fn page(
    content_type: &'static str,
    body: impl axum::response::IntoResponse,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The stock sails.io.js browser build, from the npm install in
/// `examples/zoo/web` (`ZOO_WEB_DIR` overrides where that is), read once.
async fn sails_io_js() -> axum::response::Response {
    use axum::response::IntoResponse;
    // Bytes: each response shares the one copy.
    static SCRIPT: std::sync::OnceLock<Option<axum::body::Bytes>> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| {
        let dir = std::env::var("ZOO_WEB_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/web").to_owned());
        std::fs::read_to_string(
            std::path::Path::new(&dir).join("node_modules/sails.io.js/dist/sails.io.js"),
        )
        .ok()
        .map(axum::body::Bytes::from)
    });
    match script {
        Some(js) => page("application/javascript", js.clone()),
        None => (
            StatusCode::NOT_FOUND,
            "sails.io.js is not installed: run `npm ci` in examples/zoo/web (scripts/demo does it for you)",
        )
            .into_response(),
    }
}

/// The app's sockets API, for handlers; 503 when realtime is off.
struct AppSockets(topsail::Sockets);

impl axum::extract::FromRequestParts<Topsail> for AppSockets {
    type Rejection = Reply;

    async fn from_request_parts(
        _: &mut axum::http::request::Parts,
        app: &Topsail,
    ) -> Result<Self, Reply> {
        app.sockets()
            .cloned()
            .map(AppSockets)
            .ok_or_else(|| failed("realtime is off"))
    }
}

/// Who is asking: Sails' `req.isSocket`, the socket id, and the cookie and
/// origin the request carries (a socket's own, whatever its messages say).
async fn whoami(socket: Option<SocketRequest>, headers: axum::http::HeaderMap) -> Json<Value> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Json(json!({
        "isSocket": socket.is_some(),
        "id": socket.as_ref().map(SocketRequest::id),
        "cookie": header("cookie"),
        "origin": header("origin"),
    }))
}

/// Answers after `ms` milliseconds (at most 5 s): a slow request, to show
/// that one socket's requests run concurrently.
async fn delay(Path(ms): Path<u64>) -> Json<Value> {
    tokio::time::sleep(std::time::Duration::from_millis(ms.min(5000))).await;
    Json(json!({"waited": ms.min(5000)}))
}

async fn join(socket: Option<SocketRequest>, Path(room): Path<String>) -> Reply {
    match socket {
        Some(s) => s.join(room).await.map_or_else(failed, |()| done()),
        None => only_sockets(),
    }
}

async fn leave(socket: Option<SocketRequest>, Path(room): Path<String>) -> Reply {
    match socket {
        Some(s) => s.leave(room).await.map_or_else(failed, |()| done()),
        None => only_sockets(),
    }
}

/// `{event?, data}`; the requesting socket is left out, as in
/// `sails.sockets.broadcast(room, event, data, req)`.
async fn broadcast(
    AppSockets(sockets): AppSockets,
    socket: Option<SocketRequest>,
    Path(room): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    let event = body.get("event").and_then(Value::as_str);
    let omit = socket.as_ref().map(SocketRequest::id);
    sockets
        .broadcast(&[room.as_str()], event, &body["data"], omit)
        .await
        .map_or_else(failed, |()| done())
}

async fn blast(
    AppSockets(sockets): AppSockets,
    socket: Option<SocketRequest>,
    Json(body): Json<Value>,
) -> Reply {
    let event = body.get("event").and_then(Value::as_str);
    let omit = socket.as_ref().map(SocketRequest::id);
    sockets
        .blast(event, &body["data"], omit)
        .await
        .map_or_else(failed, |()| done())
}

async fn leave_all(AppSockets(sockets): AppSockets, Path(room): Path<String>) -> Reply {
    sockets
        .leave_all(&room)
        .await
        .map_or_else(failed, |()| done())
}

async fn add_members(
    AppSockets(sockets): AppSockets,
    Path((source, dest)): Path<(String, String)>,
) -> Reply {
    sockets
        .add_room_members_to_rooms(&source, &[dest.as_str()])
        .await
        .map_or_else(failed, |()| done())
}

async fn remove_members(
    AppSockets(sockets): AppSockets,
    Path((source, dest)): Path<(String, String)>,
) -> Reply {
    sockets
        .remove_room_members_from_rooms(&source, &[dest.as_str()])
        .await
        .map_or_else(failed, |()| done())
}

async fn join_by_id(
    AppSockets(sockets): AppSockets,
    Path((id, room)): Path<(String, String)>,
) -> Reply {
    sockets
        .join(&id, room)
        .await
        .map_or_else(failed, |()| done())
}

async fn leave_by_id(
    AppSockets(sockets): AppSockets,
    Path((id, room)): Path<(String, String)>,
) -> Reply {
    sockets
        .leave(&id, room)
        .await
        .map_or_else(failed, |()| done())
}

async fn rooms_of(AppSockets(sockets): AppSockets, Path(id): Path<String>) -> Reply {
    match sockets.rooms_of(&id).await {
        Ok(mut rooms) => {
            rooms.sort();
            (StatusCode::OK, Json(json!(rooms)))
        }
        Err(e) => failed(e),
    }
}

async fn subscribe_pet(
    State(app): State<Topsail>,
    socket: SocketRequest,
    Path(id): Path<i64>,
) -> Reply {
    app.model::<Pet>().subscribe(socket.id(), [id]).await;
    done()
}

async fn unsubscribe_pet(
    State(app): State<Topsail>,
    socket: SocketRequest,
    Path(id): Path<i64>,
) -> Reply {
    app.model::<Pet>().unsubscribe(socket.id(), [id]).await;
    done()
}

async fn watch_pets(State(app): State<Topsail>, socket: SocketRequest) -> Reply {
    app.model::<Pet>().watch(socket.id()).await;
    done()
}

async fn unwatch_pets(State(app): State<Topsail>, socket: SocketRequest) -> Reply {
    app.model::<Pet>().unwatch(socket.id()).await;
    done()
}

/// `Pet.publish([id], data, req)`.
async fn publish_pet(
    State(app): State<Topsail>,
    socket: Option<SocketRequest>,
    Path(id): Path<i64>,
    Json(data): Json<Value>,
) -> Reply {
    app.model::<Pet>()
        .publish([id], data, socket.as_ref().map(SocketRequest::id))
        .await;
    done()
}
