use topsail::Model;

#[derive(Model)]
struct A {
    name: String,
}

#[derive(Model)]
struct B {
    #[model(primary_key)]
    a: i64,
    #[model(primary_key)]
    b: i64,
}

#[derive(Model)]
struct C {
    id: Option<i64>,
}

fn main() {}
