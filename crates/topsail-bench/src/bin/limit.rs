//! The hand-written limit the benchmarks compare topsail with: the zoo's
//! `GET /pet` (30 pets by name, owners and tags populated) and `POST /pet`
//! written directly against axum and sqlx on PostgreSQL, with the same
//! queries, and raw socketioxide broadcasting a payload to every socket.
//!
//! `DATABASE_URL` (a database the zoo has migrated), `PORT`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};

#[derive(Clone)]
struct App {
    db: PgPool,
    io: SocketIo,
}

fn user(r: &PgRow) -> Value {
    json!({"id": r.get::<i64, _>("id"), "name": r.get::<String, _>("name"), "email": r.get::<String, _>("email"),
        "age": r.get::<f64, _>("age"), "createdAt": r.get::<i64, _>("created_at"), "updatedAt": r.get::<i64, _>("updated_at")})
}

/// Pets by the given statement, with owners and tags: three queries.
async fn populated(
    db: impl sqlx::PgExecutor<'_> + Copy,
    pets: Vec<PgRow>,
) -> Result<Vec<Value>, sqlx::Error> {
    let ids: Vec<i64> = pets.iter().map(|r| r.get("id")).collect();
    let owners: Vec<i64> = pets
        .iter()
        .filter_map(|r| r.get::<Option<i64>, _>("owner"))
        .collect();
    let users = sqlx::query(
        r#"SELECT id, name, email, age, created_at, updated_at FROM "user" WHERE id = ANY($1)"#,
    )
    .bind(&owners)
    .fetch_all(db)
    .await?;
    let tags = sqlx::query(
        r#"SELECT p, id, label, created_at, updated_at FROM (SELECT j.pet_tags AS p, t.id, t.label, t.created_at, t.updated_at,
           ROW_NUMBER() OVER (PARTITION BY j.pet_tags ORDER BY t.id) AS rn
           FROM tag t JOIN pet_tags__tag_pets j ON j.tag_pets = t.id WHERE j.pet_tags = ANY($1)) s WHERE rn <= 30 ORDER BY id"#,
    )
    .bind(&ids)
    .fetch_all(db)
    .await?;
    Ok(pets
        .iter()
        .map(|r| {
            let id: i64 = r.get("id");
            let owner = r.get::<Option<i64>, _>("owner").and_then(|o| users.iter().find(|u| u.get::<i64, _>("id") == o)).map(user);
            let tags: Vec<Value> = tags
                .iter()
                .filter(|t| t.get::<i64, _>("p") == id)
                .map(|t| json!({"id": t.get::<i64, _>("id"), "label": t.get::<String, _>("label"), "createdAt": t.get::<i64, _>("created_at"), "updatedAt": t.get::<i64, _>("updated_at")}))
                .collect();
            let mut m = Map::new();
            m.insert("id".into(), json!(id));
            m.insert("name".into(), json!(r.get::<String, _>("name")));
            m.insert("species".into(), json!(r.get::<String, _>("species")));
            m.insert("createdAt".into(), json!(r.get::<i64, _>("created_at")));
            m.insert("updatedAt".into(), json!(r.get::<i64, _>("updated_at")));
            m.insert("owner".into(), owner.unwrap_or(Value::Null));
            m.insert("tags".into(), Value::Array(tags));
            Value::Object(m)
        })
        .collect())
}

async fn find(State(app): State<App>) -> Json<Value> {
    let pets = sqlx::query("SELECT id, name, species, owner, created_at, updated_at FROM pet ORDER BY name ASC, id ASC LIMIT 30").fetch_all(&app.db).await.unwrap_or_default();
    Json(Value::Array(
        populated(&app.db, pets).await.unwrap_or_default(),
    ))
}

async fn create(State(app): State<App>, Json(body): Json<Value>) -> Json<Value> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut tx = match app.db.begin().await {
        Ok(tx) => tx,
        Err(e) => return Json(json!({"error": e.to_string()})),
    };
    let row = sqlx::query("INSERT INTO pet (name, species, owner, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) RETURNING id")
        .bind(body["name"].as_str().unwrap_or(""))
        .bind(body["species"].as_str().unwrap_or(""))
        .bind(body["owner"].as_i64())
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
    let Ok(row) = row else {
        return Json(json!({"error": "insert"}));
    };
    let id: i64 = row.get("id");
    let pets = sqlx::query(
        "SELECT id, name, species, owner, created_at, updated_at FROM pet WHERE id = $1",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .unwrap_or_default();
    let users = {
        let owners: Vec<i64> = pets
            .iter()
            .filter_map(|r| r.get::<Option<i64>, _>("owner"))
            .collect();
        sqlx::query(
            r#"SELECT id, name, email, age, created_at, updated_at FROM "user" WHERE id = ANY($1)"#,
        )
        .bind(&owners)
        .fetch_all(&mut *tx)
        .await
        .unwrap_or_default()
    };
    let _ = tx.commit().await;
    let mut out = populated(&app.db, pets).await.unwrap_or_default();
    if let (Some(Value::Object(p)), Some(u)) = (out.first_mut(), users.first()) {
        p.insert("owner".into(), user(u));
    }
    Json(out.pop().unwrap_or(Value::Null))
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
    // As topsail's pool: no ping round trip on every acquire.
    let db = PgPoolOptions::new()
        .max_connections(16)
        .test_before_acquire(false)
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
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
