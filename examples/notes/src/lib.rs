//! Notes: a small multi-user topsail app. Accounts sign up and in with a
//! password (argon2 hashes, never sent to a client); each account reads its
//! own notes and every shared note, and changes only its own; a page shows
//! them live. Sessions are tower-sessions cookies (`sails.sid`) stored in
//! the app's own database, SQLite or PostgreSQL, and a socket is identified
//! by the cookie of its handshake, or signs in over the socket.
//!
//! ```text
//! cargo run -p example-notes              # SQLite file notes.sqlite, port 1337
//! curl -si localhost:1337/signup -H 'content-type: application/json' \
//!      -d '{"name":"Ann","email":"ann@example.com","password":"correct horse"}'
//! DATABASE_URL=postgres://postgres@127.0.0.1/notes cargo run -p example-notes
//! ```
//!
//! The routes: `POST /signup {name, email, password}`, `POST /signin
//! {email, password}` (401 on a wrong password), `POST /signout`, `GET /me`
//! (401 signed out), the blueprint REST routes of `note` and `account`
//! (shortcuts off; every `/note` route 401 signed out), and the page at
//! `/`. All of them work over sails.io.js sockets too.

mod sessions;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use topsail::{
    Access, Actor, Criteria, Denied, Identify, Link, Model, Principal, RealtimeConfig, Registry,
    Rules, Topsail,
};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

pub use sessions::SqlSessions;

/// An account: who signs in.
#[derive(Model, Debug, Clone)]
pub struct Account {
    /// Primary key.
    pub id: i64,
    /// Display name.
    #[model(required)]
    pub name: String,
    /// Sign-in address, one account each.
    #[model(required, unique, is_email)]
    pub email: String,
    /// The argon2 hash of the password: never in an answer or a message.
    #[model(private)]
    pub password_hash: String,
    /// The account's notes.
    #[model(collection = Note, via = owner)]
    pub notes: Vec<Link<Note>>,
    /// Creation time, epoch ms.
    #[model(created_at)]
    pub created_at: i64,
    /// Last update time, epoch ms.
    #[model(updated_at)]
    pub updated_at: i64,
}

/// A note: private to its owner unless shared.
#[derive(Model, Debug, Clone)]
pub struct Note {
    /// Primary key.
    pub id: i64,
    /// Title.
    #[model(required)]
    pub title: String,
    /// Text.
    pub body: String,
    /// Who wrote it (set from the session on create, whatever a client
    /// sends).
    #[model(model = Account)]
    pub owner: Option<Link<Account>>,
    /// Every signed-in account may read it.
    pub shared: bool,
    /// Creation time, epoch ms.
    #[model(created_at)]
    pub created_at: i64,
    /// Last update time, epoch ms.
    #[model(updated_at)]
    pub updated_at: i64,
}

/// The models.
pub fn registry() -> Registry {
    Registry::new().model::<Account>().model::<Note>()
}

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://notes.sqlite";

/// The signed-in account: the principal of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Me(pub i64);

fn me(p: &Principal) -> Option<i64> {
    p.get::<Me>().map(|m| m.0)
}

/// Who may read and change what: my notes and shared ones; my notes only
/// to change; a note I create is mine. An account is readable by itself
/// only (a shared note's owner is null to others).
pub fn rules() -> Rules {
    Rules::new()
        .read::<Note>(|p| match me(p) {
            Some(id) => Access::eq("owner", id).or(Access::eq("shared", true)),
            None => Access::Nothing,
        })
        .write::<Note>(|p| match me(p) {
            Some(id) => Access::eq("owner", id),
            None => Access::Nothing,
        })
        .on_create::<Note>(|p, values| match me(p) {
            Some(id) => {
                values.insert("owner".into(), json!(id));
                Ok(())
            }
            None => Err(Denied),
        })
        .read::<Account>(|p| match me(p) {
            Some(id) => Access::eq("id", id),
            None => Access::Nothing,
        })
}

/// The session key holding the signed-in account's id.
const ACCOUNT: &str = "account";

/// Identifies a request by its session (the `sails.sid` cookie: a
/// browser's, or a socket's from its handshake or a sign-in over it).
#[derive(Debug, Clone, Copy)]
struct BySession;

#[async_trait::async_trait]
impl Identify for BySession {
    async fn identify(&self, parts: &mut axum::http::request::Parts) -> Principal {
        let Some(session) = parts.extensions.get::<Session>() else {
            return Principal::anonymous();
        };
        match session.get::<i64>(ACCOUNT).await {
            Ok(Some(id)) => Principal::new(Me(id)).until(instant_of(session.expiry_date())),
            Ok(None) => Principal::anonymous(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read a session");
                Principal::anonymous()
            }
        }
    }
}

/// The `Instant` of a session's expiry date.
fn instant_of(at: tower_sessions::cookie::time::OffsetDateTime) -> std::time::Instant {
    let left = at - tower_sessions::cookie::time::OffsetDateTime::now_utc();
    let left = std::time::Duration::try_from(left).unwrap_or_default();
    std::time::Instant::now() + left
}

/// 401 with a stable code.
fn unauthorized(message: &str) -> Response {
    let body = json!({"code": "E_UNAUTHORIZED", "message": message});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// Notes are for signed-in accounts only (a policy: it runs after the
/// identity layer, which put the principal in the extensions).
async fn signed_in(req: Request, next: Next) -> Response {
    let anonymous = req
        .extensions()
        .get::<Principal>()
        .is_none_or(Principal::is_anonymous);
    if anonymous {
        return unauthorized("Sign in first.");
    }
    next.run(req).await
}

/// Accounts are made by `/signup`, never through the blueprints.
async fn refused(_req: Request, _next: Next) -> Response {
    (StatusCode::FORBIDDEN, "Forbidden").into_response()
}

/// What `/signup` takes.
#[derive(Debug, Deserialize)]
struct Signup {
    name: String,
    email: String,
    password: String,
}

/// What `/signin` takes.
#[derive(Debug, Deserialize)]
struct Signin {
    email: String,
    password: String,
}

/// The account `id` as its owner sees it (no private attribute).
async fn account_json(app: &Topsail, id: i64) -> Result<Json<Value>, topsail::Error> {
    let as_owner = Actor::http().with_principal(Principal::new(Me(id)));
    let record = app
        .engine()
        .find_one(Account::def(), &id.into(), &Criteria::new(), &as_owner)
        .await?;
    Ok(Json(Value::Object(record)))
}

fn hash(password: &str) -> Result<String, topsail::Error> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| {
            topsail::Error::Store(topsail::core::StoreError::Database(e.to_string().into()))
        })
}

fn verify(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Signs `session` in as `account`, with a new session id (no fixation).
async fn sign_in(session: &Session, account: i64) -> Result<(), topsail::Error> {
    let failed = |e: tower_sessions::session::Error| {
        topsail::Error::Store(topsail::core::StoreError::Database(e.to_string().into()))
    };
    session.cycle_id().await.map_err(failed)?;
    session.insert(ACCOUNT, account).await.map_err(failed)
}

async fn signup(
    State(app): State<Topsail>,
    session: Session,
    Json(form): Json<Signup>,
) -> Result<Response, topsail::Error> {
    if form.password.chars().count() < 8 {
        let details = "A password has at least 8 characters.";
        return Ok(topsail::UsageRejection::bad_request(
            topsail::UsageCode::InvalidNewRecord,
            details,
        )
        .into_response());
    }
    let password_hash = hash(&form.password)?;
    let created = app
        .model::<Account>()
        .create(json!({"name": form.name, "email": form.email, "passwordHash": password_hash}))
        .await?;
    sign_in(&session, created.id).await?;
    Ok(account_json(&app, created.id).await?.into_response())
}

async fn signin(
    State(app): State<Topsail>,
    session: Session,
    Json(form): Json<Signin>,
) -> Result<Response, topsail::Error> {
    let found = app
        .model::<Account>()
        .find(&Criteria::new().filter(json!({"email": form.email})))
        .await?;
    // The same answer, after as long a check, whether the address is
    // known or not: no oracle of who has an account.
    static NOBODY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash("no account has this password").unwrap_or_default());
    let account = found.into_iter().next();
    let hash = account
        .as_ref()
        .map_or(NOBODY.as_str(), |a| a.password_hash.as_str());
    match account {
        Some(a) if verify(&form.password, hash) => {
            sign_in(&session, a.id).await?;
            Ok(account_json(&app, a.id).await?.into_response())
        }
        _ => {
            verify(&form.password, hash);
            Ok(unauthorized("Wrong email or password."))
        }
    }
}

async fn signout(
    State(app): State<Topsail>,
    principal: Principal,
    session: Session,
) -> Result<Response, topsail::Error> {
    let was = me(&principal);
    session.flush().await.map_err(|e| {
        topsail::Error::Store(topsail::core::StoreError::Database(e.to_string().into()))
    })?;
    // Other sockets of this browser (its other tabs) carry the same
    // session: identify them again now, so they stop hearing this
    // account's notes at once.
    if let Some(id) = was {
        app.reidentify(|p| me(p) == Some(id)).await;
    }
    Ok(Json(json!({})).into_response())
}

async fn whoami(
    State(app): State<Topsail>,
    principal: Principal,
) -> Result<Response, topsail::Error> {
    match me(&principal) {
        Some(id) => Ok(account_json(&app, id).await?.into_response()),
        None => Ok(unauthorized("Not signed in.")),
    }
}

/// A static file of the page.
fn file(content_type: &'static str, body: impl IntoResponse) -> Response {
    ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The stock sails.io.js browser build, from the npm install in
/// `examples/notes/web` (`NOTES_WEB_DIR` overrides where that is).
async fn sails_io_js() -> Response {
    static SCRIPT: std::sync::OnceLock<Option<axum::body::Bytes>> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| {
        let dir = std::env::var("NOTES_WEB_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/web").to_owned());
        std::fs::read(std::path::Path::new(&dir).join("node_modules/sails.io.js/dist/sails.io.js"))
            .ok()
            .map(axum::body::Bytes::from)
    });
    match script {
        Some(js) => file("application/javascript", js.clone()),
        None => (
            StatusCode::NOT_FOUND,
            "sails.io.js is not installed: run `npm ci` in examples/notes/web (scripts/notes does it for you)",
        )
            .into_response(),
    }
}

/// The app's own routes: sign-up, sign-in, sign-out, me, and the page.
fn routes(app: &Topsail) -> Router {
    Router::new()
        .route("/signup", post(signup))
        .route("/signin", post(signin))
        .route("/signout", post(signout))
        .route("/me", get(whoami))
        .route(
            "/",
            get(|| async {
                file(
                    "text/html; charset=utf-8",
                    include_str!("../web/index.html"),
                )
            }),
        )
        .route(
            "/app.js",
            get(|| async { file("application/javascript", include_str!("../web/app.js")) }),
        )
        .route("/js/sails.io.js", get(sails_io_js))
        .with_state(app.clone())
}

/// Connects to `database_url`, creates what is missing of the schema (the
/// models' tables and the session table), and returns the app and the
/// router to serve.
pub async fn app(
    database_url: &str,
    realtime: RealtimeConfig,
) -> Result<(Topsail, Router), Box<dyn std::error::Error + Send + Sync>> {
    let app = Topsail::builder()
        .models(&registry())
        .database_url(database_url)
        .create_schema()
        .rules(rules())
        .realtime(realtime)
        .build()
        .await?;
    let sessions = SqlSessions::new(app.store().clone());
    sessions.create_table().await?;
    let blueprints = app
        .blueprints()
        .shortcuts(false)
        .policy("note/*", signed_in)
        .policy("account/find", signed_in)
        .policy("account/findOne", signed_in)
        .policy("account/populate", signed_in)
        .policy("account/*", refused);
    let session_layer = SessionManagerLayer::new(sessions)
        .with_name("sails.sid")
        .with_secure(false)
        .with_same_site(tower_sessions::cookie::SameSite::Lax)
        .with_expiry(Expiry::OnInactivity(
            tower_sessions::cookie::time::Duration::days(7),
        ));
    // The session layer runs first, then the identity layer that reads
    // it, then the routes: on the router given to `serve`, so socket
    // requests go through both too.
    let routes = blueprints
        .mount(routes(&app))
        .layer(app.identity(BySession))
        .layer(session_layer);
    let router = app.serve(routes);
    Ok((app, router))
}
