use topsail::Model;

struct Plain;

#[derive(Model)]
struct Pet {
    id: i64,
    #[model(model = Plain)]
    owner: Option<i64>,
}

fn main() {}
