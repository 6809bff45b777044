use std::collections::HashMap;
use topsail::Model;

#[derive(Model)]
struct A {
    id: i64,
    #[model(is_email, min_length = 2)]
    age: i64,
    #[model(min = 1)]
    name: String,
    #[model(default = 5)]
    label: String,
    #[model(created_at)]
    created: String,
    map: HashMap<String, i64>,
    #[model(type = text)]
    other: String,
}

fn main() {}
