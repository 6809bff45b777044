//! A record read with its populates in one statement (nested JSON
//! aggregation) must come back exactly as the same record does in a list,
//! and as the JSON the blueprints write straight from the rows: every
//! attribute type, nulls, filters, sorts, windows and projections, on both
//! dialects.

use serde_json::{Value, json};
use topsail::{Actor, Criteria, Link, Model, Populate, Topsail};
use topsail_tests::{Db, fresh_store};

/// Every attribute type, a to-one, a collection via a key and a
/// many-to-many, so each decodes through the nested path.
#[derive(Model, Debug)]
struct Shelf {
    id: i64,
    name: String,
    open: bool,
    weight: f64,
    big: i64,
    #[model(json)]
    meta: Value,
    #[model(allow_null)]
    note: Option<String>,
    #[model(collection = Book, via = shelf)]
    books: Vec<Link<Book>>,
    #[model(collection = Label, via = shelves)]
    labels: Vec<Link<Label>>,
}

#[derive(Model, Debug)]
struct Book {
    id: i64,
    title: String,
    open: bool,
    weight: f64,
    big: i64,
    #[model(json)]
    meta: Value,
    #[model(allow_null)]
    note: Option<String>,
    #[model(model = Shelf)]
    shelf: Option<Link<Shelf>>,
}

#[derive(Model, Debug)]
struct Label {
    id: i64,
    name: String,
    #[model(collection = Shelf, via = labels)]
    shelves: Vec<Link<Shelf>>,
}

/// Beyond f64's exact integers: decoding through a float would change it.
const BIG: i64 = 9_007_199_254_740_993;

async fn create(app: &Topsail, model: &'static topsail::ModelDef, v: Value) -> i64 {
    app.engine()
        .create(model, &v, &Populate::Nothing, &Actor::Server)
        .await
        .unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// `findOne` against `find` by id, and both against the JSON the
/// blueprints write from the rows.
async fn same_alone_and_listed(
    app: &Topsail,
    model: &'static topsail::ModelDef,
    id: i64,
    c: &Criteria,
) -> Value {
    let engine = app.engine();
    let alone = engine
        .find_one(model, &topsail::Pk::from(id), c, &Actor::Server)
        .await
        .unwrap();
    let by_id = c.clone().filter(json!({ "id": id }));
    let listed = engine.find(model, &by_id, &Actor::Server).await.unwrap();
    assert_eq!(listed.len(), 1);
    // Compared as text: same values, same key order.
    let text = serde_json::to_string(&alone).unwrap();
    assert_eq!(
        text,
        serde_json::to_string(&listed[0]).unwrap(),
        "{} {id} with {c:?}",
        model.identity
    );
    // The blueprints' answers, written straight from the rows, say the
    // same as the records do.
    let alone_json = engine
        .find_one_json(model, &topsail::Pk::from(id), c, &Actor::Server)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(alone_json).unwrap(), text, "{c:?}");
    let listed_json = engine
        .find_json(model, &by_id, &Actor::Server)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(listed_json).unwrap(),
        serde_json::to_string(&listed).unwrap(),
        "{c:?}"
    );
    Value::Object(alone)
}

async fn run(db: Db) {
    let (store, cleanup) = fresh_store(db).await;
    let app = Topsail::builder()
        .model::<Shelf>()
        .model::<Book>()
        .model::<Label>()
        .store(store.clone())
        .create_schema()
        .build()
        .await
        .unwrap();
    let (shelf, book, label) = (Shelf::def(), Book::def(), Label::def());
    let mut labels = Vec::new();
    for name in ["b", "c", "a"] {
        labels.push(create(&app, label, json!({ "name": name })).await);
    }
    let a = create(
        &app,
        shelf,
        json!({"name": "A", "open": true, "weight": 0.1, "big": BIG,
               "meta": {"a": [1, "x", null], "b": 1.5}, "note": "say \"hi\" ünï",
               "labels": labels}),
    )
    .await;
    let b = create(
        &app,
        shelf,
        json!({"name": "B", "open": false, "weight": -2.5e300, "big": -5,
               "meta": "just a string", "note": null}),
    )
    .await;
    let metas = [
        json!(42),
        json!([]),
        json!({"k": true}),
        json!("[1]"),
        json!(null),
    ];
    for (i, meta) in metas.into_iter().enumerate() {
        let i = i as i64;
        create(
            &app,
            book,
            json!({"title": format!("t{i}"), "open": i % 2 == 0, "weight": (i as f64).mul_add(-0.75, 3.0),
                   "big": BIG - i, "meta": meta, "note": if i == 1 { json!(null) } else { json!("n") },
                   "shelf": a}),
        )
        .await;
    }
    let loose = create(&app, book, json!({"title": "loose", "meta": {}})).await;

    // Every association, default windows.
    let got = same_alone_and_listed(&app, shelf, a, &Criteria::new()).await;
    assert_eq!(got["big"], json!(BIG));
    assert_eq!(got["books"].as_array().unwrap().len(), 5);
    assert_eq!(got["books"][0]["big"], json!(BIG), "big integers exact");
    assert_eq!(got["books"][0]["open"], json!(true), "booleans, not 0/1");
    assert_eq!(got["books"][0]["meta"], json!(42));
    assert_eq!(
        got["books"][3]["meta"],
        json!("[1]"),
        "a JSON string stays a string"
    );
    assert_eq!(got["books"][1]["note"], json!(null));
    assert_eq!(got["books"][1]["weight"], json!(2.25));
    assert_eq!(
        got["books"][0]["weight"],
        json!(3),
        "whole floats as integers"
    );
    // Nested values decode exactly as the same rows read on their own.
    assert_eq!(
        serde_json::to_string(&got["books"]).unwrap(),
        plain(&app, book, json!({ "shelf": a })).await
    );
    let names: Vec<&Value> = got["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["name"])
        .collect();
    assert_eq!(
        names,
        [&json!("b"), &json!("c"), &json!("a")],
        "by primary key"
    );
    let got = same_alone_and_listed(&app, shelf, b, &Criteria::new()).await;
    assert_eq!(got["meta"], json!("just a string"));
    assert_eq!(got["weight"], json!(-2.5e300));
    assert_eq!((&got["books"], &got["labels"]), (&json!([]), &json!([])));

    // A filtered, sorted, windowed, projected collection.
    let books = Criteria::new()
        .filter(json!({"open": true}))
        .sort("weight DESC")
        .limit(2)
        .skip(1)
        .select(["title", "weight"]);
    let c = Criteria::new().populate(Populate::Only(vec![("books".into(), books)]));
    let got = same_alone_and_listed(&app, shelf, a, &c).await;
    assert_eq!(
        got["books"],
        json!([{"id": got["books"][0]["id"], "title": "t2", "weight": 1.5},
                                     {"id": got["books"][1]["id"], "title": "t4", "weight": 0}])
    );
    assert!(got.get("labels").is_none(), "only what was asked for");

    // A many-to-many window, with the parent projected.
    let c = Criteria::new()
        .omit(["meta", "note"])
        .populate(Populate::Only(vec![(
            "labels".into(),
            Criteria::new().sort("name DESC").limit(2),
        )]));
    let got = same_alone_and_listed(&app, shelf, a, &c).await;
    let names: Vec<&Value> = got["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["name"])
        .collect();
    assert_eq!(names, [&json!("c"), &json!("b")]);
    assert!(got.get("meta").is_none());
    let c = Criteria::new().select(["name"]).populate(Populate::Nothing);
    let got = same_alone_and_listed(&app, shelf, a, &c).await;
    assert_eq!(got, json!({"id": a, "name": "A"}));

    // To-one: set, projected, and unset.
    let first_book = got_first_book(&app, a).await;
    let got = same_alone_and_listed(&app, book, first_book, &Criteria::new()).await;
    assert_eq!(
        serde_json::to_string(&[&got["shelf"]]).unwrap(),
        plain(&app, shelf, json!({ "id": a })).await
    );
    assert_eq!(got["shelf"]["big"], json!(BIG));
    assert_eq!(got["shelf"]["note"], json!("say \"hi\" ünï"));
    let c = Criteria::new().populate(Populate::Only(vec![(
        "shelf".into(),
        Criteria::new().select(["name"]),
    )]));
    let got = same_alone_and_listed(&app, book, first_book, &c).await;
    assert_eq!(got["shelf"], json!({"id": a, "name": "A"}));
    let got = same_alone_and_listed(&app, book, loose, &Criteria::new()).await;
    assert_eq!(got["shelf"], json!(null));

    store.close().await;
    cleanup.run().await;
}

/// `model`'s records matching `filter`, populating nothing: each column
/// decoded on its own, as text.
async fn plain(app: &Topsail, model: &'static topsail::ModelDef, filter: Value) -> String {
    let c = Criteria::new().filter(filter).populate(Populate::Nothing);
    let rows = app.engine().find(model, &c, &Actor::Server).await.unwrap();
    serde_json::to_string(&rows).unwrap()
}

async fn got_first_book(app: &Topsail, shelf: i64) -> i64 {
    app.engine()
        .find(
            Book::def(),
            &Criteria::new().filter(json!({ "shelf": shelf })).limit(1),
            &Actor::Server,
        )
        .await
        .unwrap()[0]["id"]
        .as_i64()
        .unwrap()
}

topsail_tests::each_db!(a_record_read_alone_equals_it_read_in_a_list, run);

/// A child row wider than one JSON array call takes (PostgreSQL: 100
/// arguments) is read in chunks and comes back flat, in column order.
async fn wide(db: Db) {
    use topsail::core::model::AttrType;
    use topsail::core::query::{ColRef, Dir, Nested, Select};
    use topsail::core::store::Store;
    const WIDTH: i64 = 185;
    let (store, cleanup) = fresh_store(db).await;
    let cols: Vec<String> = (0..WIDTH).map(|i| format!("\"v{i}\" BIGINT")).collect();
    let values = |id: i64| -> Vec<i64> { (0..WIDTH).map(|i| i * 1000 + id).collect() };
    let mut script = format!(
        "CREATE TABLE \"top\" (\"id\" BIGINT PRIMARY KEY);
         CREATE TABLE \"wide\" (\"id\" BIGINT PRIMARY KEY, \"parent\" BIGINT, {});
         INSERT INTO \"top\" (\"id\") VALUES (1), (2);",
        cols.join(", ")
    );
    for id in [10, 11] {
        let row: Vec<String> = values(id).iter().map(i64::to_string).collect();
        script.push_str(&format!(
            "INSERT INTO \"wide\" VALUES ({id}, 1, {});",
            row.join(", ")
        ));
    }
    store.execute_script(&script).await.unwrap();
    let int = |c: String| (ColRef::Main(c.into()), AttrType::Integer);
    let mut child = Select::new(
        "wide".into(),
        std::iter::once(int("id".into()))
            .chain((0..WIDTH).map(|i| int(format!("v{i}"))))
            .collect(),
    );
    child.order = vec![("id".into(), Dir::Desc)];
    let mut q = Select::new("top".into(), vec![int("id".into())]);
    q.order = vec![("id".into(), Dir::Asc)];
    q.nested = vec![Nested {
        select: child,
        child_key: ColRef::Main("parent".into()),
        parent_key: "id".into(),
    }];
    let rows = store.conn().await.unwrap().fetch(&q).await.unwrap();
    let child_row = |id: i64| {
        let mut row = vec![json!(id)];
        row.extend(values(id).into_iter().map(Value::from));
        Value::Array(row)
    };
    assert_eq!(
        rows,
        vec![
            vec![json!(1), json!([child_row(11), child_row(10)])],
            vec![json!(2), json!([])],
        ]
    );
    store.close().await;
    cleanup.run().await;
}

topsail_tests::each_db!(a_wide_nested_row_is_read_in_chunks, wide);
