use topsail::Model;

#[derive(Model)]
#[model(identiy = "x")]
struct A {
    id: i64,
    #[model(requird, maxlength = 3)]
    name: String,
}

fn main() {}
