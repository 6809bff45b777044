#![deny(missing_docs)]
//! A model using every attribute compiles, also under `deny(missing_docs)`.

use topsail::{Link, Model};

/// Owners.
#[derive(Model)]
#[model(identity = "person", table = "people", strict, crate = ::topsail)]
pub struct Person {
    /// Key.
    #[model(primary_key)]
    pub handle: String,
    /// Name.
    #[model(required, min_length = 1, max_length = 80, column = "full_name", rename = "fullName")]
    pub name: String,
    /// Email.
    #[model(unique, is_email)]
    pub email: Option<String>,
    /// Score.
    #[model(min = -1.5, max = 10, default = 3)]
    pub score: f64,
    /// Level.
    #[model(is_in = [1, 2, 3], default = 1)]
    pub level: i32,
    /// Colour.
    #[model(regex = "^[a-z]+$", is_in = ["red", "blue"], default = "red")]
    pub colour: String,
    /// Active.
    #[model(default = true)]
    pub active: bool,
    /// Never sent to a client.
    #[model(private)]
    pub secret: String,
    /// Never set by a client.
    #[model(read_only, default = "member")]
    pub role: String,
    /// Anything.
    #[model(type = json)]
    pub extra: serde_json::Value,
    /// A custom type stored as JSON.
    #[model(json)]
    pub tags: Vec<String>,
    /// Things owned.
    #[model(collection = Thing, via = owner)]
    pub things: Vec<Link<Thing>>,
    /// Friends (via-less).
    #[model(collection = Person)]
    pub friends: Vec<Link<Person>>,
    /// Created.
    #[model(created_at)]
    pub r#created: i64,
    /// Updated.
    #[model(updated_at)]
    pub updated: i64,
}

/// Things.
#[derive(Model)]
pub struct Thing {
    /// Key, assigned by the client.
    #[model(auto_increment = false)]
    pub id: i64,
    /// Owner.
    #[model(model = Person, column = "owner_handle")]
    pub owner: Option<Link<Person>>,
}

fn main() {
    let def = <Person as topsail::Model>::def();
    assert_eq!((def.identity, def.table, def.pk), ("person", "people", "handle"));
    let r = topsail::Registry::new().model::<Person>().model::<Thing>();
    assert!(r.validate().is_ok());
}
