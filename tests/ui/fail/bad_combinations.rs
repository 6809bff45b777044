use topsail::{Link, Model};

#[derive(Model)]
struct A {
    id: i64,
    #[model(model = A, collection = A)]
    both: Option<Link<A>>,
    #[model(via = x)]
    stray: String,
    #[model(required, default = "x")]
    name: String,
    #[model(model = A, unique)]
    parent: Option<Link<A>>,
    #[model(auto_increment = false)]
    count: i64,
}

fn main() {}
