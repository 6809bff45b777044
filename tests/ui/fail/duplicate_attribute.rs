use topsail::Model;

#[derive(Model)]
#[model(table = "a", table = "b")]
struct A {
    id: i64,
    #[model(required, required)]
    name: String,
}

fn main() {}
