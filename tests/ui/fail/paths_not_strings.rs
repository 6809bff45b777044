use topsail::{Link, Model};

#[derive(Model)]
struct User {
    id: i64,
    #[model(collection = Pet, via = "owner")]
    pets: Vec<Link<Pet>>,
}

#[derive(Model)]
struct Pet {
    id: i64,
    #[model(model = "User")]
    owner: Option<Link<User>>,
}

fn main() {}
