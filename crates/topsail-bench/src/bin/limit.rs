//! The hand-written limit the benchmarks compare topsail with: the zoo's
//! `GET /pet` (30 pets by name, owners and tags populated) and `POST /pet`
//! written directly against axum and sqlx, on PostgreSQL or SQLite, with
//! the same queries, and raw socketioxide broadcasting a payload to every
//! socket.
//!
//! `DATABASE_URL` (a database the zoo has migrated: `postgres://...` or
//! `sqlite://<file>`), `PORT`.
//!
//! "The same queries" means the statements topsail sends for these routes:
//! the find is one statement (pets, owners and tags nested as JSON), the
//! create one `INSERT ... RETURNING` (plus the owner when one is given).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ColumnIndex, Decode, Row, Type};

#[derive(Clone)]
enum Db {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds (each arm
/// is typed on its own, so one body serves both databases).
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            Db::Pg($pool) => $body,
            Db::Sqlite($pool) => $body,
        }
    };
}

#[derive(Clone)]
struct App {
    db: Db,
    io: SocketIo,
}

/// A column of `r` by name; a type mismatch is a bug in this file.
fn col<'r, R, T>(r: &'r R, name: &str) -> T
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    r.try_get(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A pet as the zoo answers it, owner and tags populated: typed structs
/// serialised by serde's derive, as a hand-written handler would have them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Pet {
    id: i64,
    name: String,
    species: String,
    created_at: i64,
    updated_at: i64,
    owner: Option<User>,
    tags: Vec<Tag>,
}

/// A user; read from a nested row (`[id, name, ...]`: serde's derive takes
/// a struct from a sequence too) or from a plain row.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    id: i64,
    name: String,
    email: String,
    #[serde(serialize_with = "js_number")]
    age: f64,
    created_at: i64,
    updated_at: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tag {
    id: i64,
    label: String,
    created_at: i64,
    updated_at: i64,
}

/// A float as JavaScript (and topsail) writes it: `2`, not `2.0`.
fn js_number<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_991.0 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// A pet row (`id, name, species, created_at, updated_at`) with its owner
/// and tags.
fn pet<R>(r: &R, owner: Option<User>, tags: Vec<Tag>) -> Pet
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    Pet {
        id: col(r, "id"),
        name: col(r, "name"),
        species: col(r, "species"),
        created_at: col(r, "created_at"),
        updated_at: col(r, "updated_at"),
        owner,
        tags,
    }
}

/// Rows aggregated by the database (`[[v, ...], ...]`).
fn nested<T: serde::de::DeserializeOwned>(text: &str) -> Vec<T> {
    serde_json::from_str(text).unwrap_or_default()
}

/// The zoo's `GET /pet?limit=30&sort=name ASC` as one statement: each pet
/// with its owner and first 30 tags aggregated to JSON, as topsail reads it
/// on PostgreSQL (the parent filter fenced by `OFFSET 0`).
const FIND_PG: &str = r#"SELECT "t"."id", "t"."name", "t"."species", "t"."owner", "t"."created_at", "t"."updated_at",
  (SELECT COALESCE(json_agg(json_build_array("c0", "c1", "c2", "c3", "c4", "c5")), '[]')::text FROM
    (SELECT "n"."id" AS "c0", "n"."name" AS "c1", "n"."email" AS "c2", "n"."age" AS "c3", "n"."created_at" AS "c4", "n"."updated_at" AS "c5"
     FROM "user" AS "n" WHERE "n"."id" = "t"."owner") AS "s") AS "owner_rows",
  (SELECT COALESCE(json_agg(json_build_array("c0", "c1", "c2", "c3") ORDER BY "c0"), '[]')::text FROM
    (SELECT * FROM (SELECT "n"."id" AS "c0", "n"."label" AS "c1", "n"."created_at" AS "c2", "n"."updated_at" AS "c3"
     FROM "tag" AS "n" JOIN "pet_tags__tag_pets" AS "m" ON "m"."tag_pets" = "n"."id"
     WHERE "m"."pet_tags" = "t"."id" OFFSET 0) AS "f" ORDER BY "c0" LIMIT 30) AS "s") AS "tag_rows"
FROM "pet" AS "t" ORDER BY "t"."name" ASC, "t"."id" ASC LIMIT 30"#;

/// The same on SQLite, as topsail reads it there.
const FIND_SQLITE: &str = r#"SELECT "t"."id", "t"."name", "t"."species", "t"."owner", "t"."created_at", "t"."updated_at",
  (SELECT json_group_array(json_array("c0", "c1", "c2", "c3", "c4", "c5")) FROM
    (SELECT "n"."id" AS "c0", "n"."name" AS "c1", "n"."email" AS "c2", "n"."age" AS "c3", "n"."created_at" AS "c4", "n"."updated_at" AS "c5"
     FROM "user" AS "n" WHERE "n"."id" = "t"."owner") AS "s") AS "owner_rows",
  (SELECT json_group_array(json_array("c0", "c1", "c2", "c3") ORDER BY "c0") FROM
    (SELECT "n"."id" AS "c0", "n"."label" AS "c1", "n"."created_at" AS "c2", "n"."updated_at" AS "c3"
     FROM "tag" AS "n" JOIN "pet_tags__tag_pets" AS "m" ON "m"."tag_pets" = "n"."id"
     WHERE "m"."pet_tags" = "t"."id" ORDER BY "n"."id" LIMIT 30) AS "s") AS "tag_rows"
FROM "pet" AS "t" ORDER BY "t"."name" ASC, "t"."id" ASC LIMIT 30"#;

async fn find(State(app): State<App>) -> Json<Vec<Pet>> {
    let pets = with_pool!(&app.db, |pool| {
        let sql = if matches!(app.db, Db::Pg(_)) {
            FIND_PG
        } else {
            FIND_SQLITE
        };
        let rows = sqlx::query(sql).fetch_all(pool).await.unwrap_or_default();
        rows.iter()
            .map(|r| {
                let owner = nested::<User>(&col::<_, String>(r, "owner_rows")).pop();
                let tags = nested(&col::<_, String>(r, "tag_rows"));
                pet(r, owner, tags)
            })
            .collect::<Vec<Pet>>()
    });
    Json(pets)
}

/// The zoo's `POST /pet` as topsail runs it: one `INSERT ... RETURNING`
/// (no transaction: no collection is linked), then the owner, if any. A new
/// pet has no tags yet.
async fn create(State(app): State<App>, Json(body): Json<Value>) -> Result<Json<Pet>, StatusCode> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    with_pool!(&app.db, |pool| {
        let row = sqlx::query(
            "INSERT INTO pet (name, species, owner, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             RETURNING id, name, species, owner, created_at, updated_at",
        )
        .bind(body["name"].as_str().unwrap_or(""))
        .bind(body["species"].as_str().unwrap_or(""))
        .bind(body["owner"].as_i64())
        .bind(now)
        .fetch_one(pool)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        let mut owner = None;
        if let Some(id) = col::<_, Option<i64>>(&row, "owner") {
            let user = sqlx::query(
                r#"SELECT id, name, email, age, created_at, updated_at FROM "user" WHERE id = $1"#,
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
            owner = user.map(|u| User {
                id: col(&u, "id"),
                name: col(&u, "name"),
                email: col(&u, "email"),
                age: col(&u, "age"),
                created_at: col(&u, "created_at"),
                updated_at: col(&u, "updated_at"),
            });
        }
        Ok(Json(pet(&row, owner, Vec::new())))
    })
}

/// Broadcasts the request body as a `pet` event to every connected socket.
async fn emit(State(app): State<App>, Json(body): Json<Value>) -> Json<Value> {
    let payload = Arc::new(body);
    let _ = app.io.to("watchers").emit("pet", &*payload).await;
    Json(json!({"ok": true}))
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/topsail_bench".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "1399".into());
    // As topsail's pools: no ping round trip on every acquire; as many
    // connections; SQLite in WAL mode with a busy timeout.
    let db = if url.starts_with("sqlite:") {
        let opts = url.parse::<SqliteConnectOptions>().map(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(std::time::Duration::from_secs(10))
        });
        match opts {
            Ok(opts) => SqlitePoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                .connect_with(opts)
                .await
                .map(Db::Sqlite),
            Err(e) => Err(e),
        }
    } else {
        PgPoolOptions::new()
            .max_connections(16)
            .test_before_acquire(false)
            .connect(&url)
            .await
            .map(Db::Pg)
    };
    let db = db.unwrap_or_else(|e| {
        eprintln!("limit: {e}");
        std::process::exit(1)
    });
    let (layer, io) = SocketIo::builder().build_layer();
    io.ns("/", async |s: SocketRef| {
        s.join("watchers");
    });
    let app = App { db, io };
    let router = Router::new()
        .route("/pet", get(find).post(create))
        .route("/emit", post(emit))
        .with_state(app)
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| {
            eprintln!("limit: {e}");
            std::process::exit(1)
        });
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let _ = axum::serve(listener, router).await;
}
