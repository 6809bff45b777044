//! The zoo: the reference topsail app (users, pets and tags), used by the
//! tests, the benchmarks and the demo.
//!
//! ```text
//! cargo run -p example-zoo                 # SQLite file zoo.sqlite, port 1337
//! curl -s localhost:1337/user -d '{"name":"Ann","email":"ann@example.com"}' -H 'content-type: application/json'
//! curl -s 'localhost:1337/pet?where={"name":{"contains":"re"}}&sort=name%20ASC'
//! DATABASE_URL=postgres://postgres@127.0.0.1/zoo cargo run -p example-zoo
//! cargo run -p example-zoo -- --print-schema postgres
//! ```

use topsail::{Link, Migration, Model, Registry, Topsail};

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
        .model::<User>()
        .model::<Pet>()
        .model::<Tag>()
        .migrations(SQLITE_MIGRATIONS, POSTGRES_MIGRATIONS)
}

/// Connects to `database_url`, applies the migrations, and returns the app
/// and its HTTP router (blueprints with REST and shortcut routes on).
pub async fn app(database_url: &str) -> Result<(Topsail, axum::Router), topsail::StartError> {
    let ts = builder().database_url(database_url).build().await?;
    let router = ts.blueprints().router();
    Ok((ts, router))
}
