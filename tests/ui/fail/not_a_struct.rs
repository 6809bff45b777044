use topsail::Model;

#[derive(Model)]
enum E {
    A,
}

#[derive(Model)]
struct T(i64);

#[derive(Model)]
struct G<T> {
    id: i64,
    x: T,
}

fn main() {}
