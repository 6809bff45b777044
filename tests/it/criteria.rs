use http::{Method, StatusCode};
use serde_json::{Value, json};
use topsail_tests::{Zoo, both, enc};

async fn seed(z: &Zoo) {
    for (name, email, age) in [
        ("Alice", "alice@example.com", 30),
        ("Bob", "bob@example.com", 25),
        ("Carol", "carol@example.com", 41),
        ("dave", "dave@example.com", 50),
    ] {
        z.post("/user", json!({"name": name, "email": email, "age": age}))
            .await;
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn find(z: &Zoo, where_: Value) -> Vec<String> {
    names(
        &z.get(&format!(
            "/user?where={}&sort=name%20ASC",
            enc(&where_.to_string())
        ))
        .await,
    )
}

both! {
    async fn every_where_operator(z) {
        seed(&z).await;
        assert_eq!(find(&z, json!({"name": "Bob"})).await, ["Bob"]);
        assert_eq!(find(&z, json!({"age": "25"})).await, ["Bob"], "values are coerced");
        assert_eq!(find(&z, json!({"name": ["Bob", "Carol"]})).await, ["Bob", "Carol"]);
        assert_eq!(find(&z, json!({"name": {"in": ["Bob", "dave"]}})).await, ["Bob", "dave"]);
        assert_eq!(find(&z, json!({"name": {"nin": ["Bob", "dave"]}})).await, ["Alice", "Carol"]);
        assert_eq!(find(&z, json!({"age": {"<": 30}})).await, ["Bob"]);
        assert_eq!(find(&z, json!({"age": {"<=": 30}})).await, ["Alice", "Bob"]);
        assert_eq!(find(&z, json!({"age": {">": 41}})).await, ["dave"]);
        assert_eq!(find(&z, json!({"age": {">=": "41"}})).await, ["Carol", "dave"]);
        assert_eq!(find(&z, json!({"age": {">": 26, "<=": 41}})).await, ["Alice", "Carol"]);
        assert_eq!(find(&z, json!({"name": {"!=": "Bob"}})).await, ["Alice", "Carol", "dave"]);
        assert_eq!(find(&z, json!({"name": {"!=": ["Bob", "Carol"]}})).await, ["Alice", "dave"]);
        assert_eq!(find(&z, json!({"name": {"contains": "li"}})).await, ["Alice"]);
        assert_eq!(find(&z, json!({"name": {"startsWith": "ca"}})).await, ["Carol"], "case-insensitive on both dialects");
        assert_eq!(find(&z, json!({"name": {"endsWith": "VE"}})).await, ["dave"]);
        assert_eq!(find(&z, json!({"name": {"like": "%o%"}})).await, ["Bob", "Carol"]);
        assert_eq!(find(&z, json!({"or": [{"name": "Bob"}, {"age": 50}]})).await, ["Bob", "dave"]);
        assert_eq!(find(&z, json!({"and": [{"age": {">": 20}}, {"name": {"contains": "a"}}]})).await, ["Alice", "Carol", "dave"]);
        assert_eq!(find(&z, json!({"or": []})).await, Vec::<String>::new());
        assert_eq!(find(&z, json!({"and": []})).await.len(), 4);
        assert_eq!(find(&z, json!({"name": {"in": []}})).await, Vec::<String>::new());
        assert_eq!(find(&z, json!({"name": {"lessThan": "B"}})).await, ["Alice"], "deprecated aliases still work");
        assert_eq!(find(&z, json!([1, 2])).await, ["Alice", "Bob"], "array shorthand is pk in");
    }
}

both! {
    async fn like_wildcards_in_contains_are_literal(z) {
        z.post("/user", json!({"name": "100% real", "email": "a@example.com"})).await;
        z.post("/user", json!({"name": "1000 fake", "email": "b@example.com"})).await;
        assert_eq!(find(&z, json!({"name": {"contains": "0%"}})).await, ["100% real"]);
        assert_eq!(find(&z, json!({"name": {"contains": "_"}})).await, Vec::<String>::new());
    }
}

both! {
    async fn null_matches(z) {
        let u = z.user("Ann").await;
        z.pet("Rex", json!({"owner": u})).await;
        z.pet("Stray", json!({})).await;
        let v = z.get(&format!("/pet?where={}", enc(r#"{"owner":null}"#))).await;
        assert_eq!(names(&v), ["Stray"]);
        let v = z.get(&format!("/pet?where={}", enc(r#"{"owner":{"!=":null}}"#))).await;
        assert_eq!(names(&v), ["Rex"]);
        let v = z.get(&format!("/pet?owner={u}")).await;
        assert_eq!(names(&v), ["Rex"], "filtering by a to-one key");
    }
}

both! {
    async fn loose_params_and_qs_brackets(z) {
        seed(&z).await;
        assert_eq!(names(&z.get("/user?name=Bob").await), ["Bob"]);
        assert_eq!(names(&z.get("/user?name[contains]=o&sort=name%20ASC").await), ["Bob", "Carol"]);
        assert_eq!(names(&z.get("/user?age[%3E]=40&sort=age%20DESC").await), ["dave", "Carol"]);
        assert_eq!(names(&z.get(&format!("/user?where={}&age=99", enc(r#"{"name":"Bob"}"#))).await), ["Bob"], "where wins over loose params");
    }
}

both! {
    async fn limit_skip_and_every_sort_form(z) {
        seed(&z).await;
        assert_eq!(names(&z.get("/user?sort=age%20DESC&limit=2").await), ["dave", "Carol"]);
        assert_eq!(names(&z.get("/user?sort=age&skip=1&limit=2").await), ["Alice", "Carol"]);
        assert_eq!(names(&z.get("/user?sort=age&skip=3").await), ["dave"], "skip without limit");
        assert_eq!(z.get("/user?limit=0").await, json!([]));
        assert_eq!(z.get("/user?limit=-1").await.as_array().unwrap().len(), 4);
        assert_eq!(names(&z.get("/user?sort=name%20desc").await), ["dave", "Carol", "Bob", "Alice"]);
        assert_eq!(names(&z.get(&format!("/user?sort={}", enc(r#"[{"age":"DESC"}]"#))).await)[0], "dave");
        assert_eq!(names(&z.get(&format!("/user?sort[]={}", enc("age ASC"))).await)[0], "Bob");
        for _ in 0..31 {
            z.post("/tag", json!({"label": format!("t{}", z.get("/tag?limit=-1").await.as_array().unwrap().len())})).await;
        }
        assert_eq!(z.get("/tag").await.as_array().unwrap().len(), 30, "the default limit is 30");
        assert_eq!(z.get("/tag?limit=100").await.as_array().unwrap().len(), 31);
    }
}

both! {
    async fn select_and_omit(z) {
        let u = z.user("Ann").await;
        z.pet("Rex", json!({"owner": u})).await;
        let v = z.get(&format!("/user/{u}?select=name")).await;
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["id", "name", "pets"], "pk always, populated associations still returned");
        let v = z.get("/user?omit=email,age").await;
        assert_eq!(v[0].get("email"), None);
        assert_eq!(v[0]["name"], "Ann");
        let keys: Vec<&String> = v[0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "name", "createdAt", "updatedAt", "pets"], "the others keep their order");
        let v = z.get("/pet?select=name&populate=false").await;
        assert_eq!(v[0].as_object().unwrap().len(), 2, "{v}");
    }
}

both! {
    async fn populate_forms_and_the_collection_cap(z) {
        let u = z.user("Ann").await;
        let p = z.pet("Rex", json!({"owner": u})).await;
        let mut tags = Vec::new();
        for i in 0..31 {
            tags.push(z.tag(&format!("tag{i:02}")).await);
        }
        let r = z.send(Method::PUT, &format!("/pet/{p}/tags"), Some(json!(tags))).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["tags"].as_array().unwrap().len(), 30, "default populate caps collections at 30");
        let v = z.get(&format!("/pet/{p}?populate=tags")).await;
        assert_eq!(v["tags"].as_array().unwrap().len(), 31, "an explicit populate has no cap");
        assert_eq!(v["owner"], u, "an unpopulated to-one is its id");
        let v = z.get(&format!("/pet/{p}?populate=false")).await;
        assert_eq!((v.get("tags"), &v["owner"]), (None, &json!(u)));
        let v = z.get(&format!("/pet/{p}?populate=owner,%20tags")).await;
        assert_eq!(v["owner"]["id"], u);
        let v = z.get(&format!("/user/{u}")).await;
        assert_eq!(v["pets"][0]["owner"], u, "populated children show their to-one keys as ids");
        assert_eq!(v["pets"][0].get("tags"), None, "and leave out their collections");
    }
}

both! {
    async fn populate_caps_each_parent_separately(z) {
        // Many parents, many children: the per-parent cap must hold for each.
        let mut users = Vec::new();
        for i in 0..5 {
            users.push(z.user(&format!("U{i}")).await);
        }
        for (i, u) in users.iter().enumerate() {
            for j in 0..(31 + i) {
                z.pet(&format!("p{i}-{j}"), json!({"owner": u})).await;
            }
        }
        let v = z.get("/user?sort=name%20ASC").await;
        for u in v.as_array().unwrap() {
            let pets = u["pets"].as_array().unwrap();
            assert_eq!(pets.len(), 30, "each parent gets its own 30");
            assert!(pets.iter().all(|p| p["owner"] == u["id"]));
        }
        let v = z.get(&format!("/user/{}/pets?limit=100&skip=2&sort=name%20DESC", users[4])).await;
        assert_eq!(v.as_array().unwrap().len(), 33);
    }
}

/// A store that counts the selects it runs.
struct Counting {
    inner: topsail::SqlStore,
    selects: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    transactions: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct CountingConn {
    inner: Box<dyn topsail::core::store::Conn>,
    selects: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[topsail::async_trait]
impl topsail::core::store::Conn for CountingConn {
    async fn fetch(
        &mut self,
        q: &topsail::core::query::Select,
    ) -> Result<Vec<topsail::core::store::Row>, topsail::core::StoreError> {
        self.selects
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.fetch(q).await
    }
    async fn insert(
        &mut self,
        q: &topsail::core::query::Insert,
    ) -> Result<Option<topsail::core::store::Row>, topsail::core::StoreError> {
        self.inner.insert(q).await
    }
    async fn update(
        &mut self,
        q: &topsail::core::query::Update,
    ) -> Result<u64, topsail::core::StoreError> {
        self.inner.update(q).await
    }
    async fn delete(
        &mut self,
        q: &topsail::core::query::Delete,
    ) -> Result<u64, topsail::core::StoreError> {
        self.inner.delete(q).await
    }
    async fn count(
        &mut self,
        q: &topsail::core::query::Select,
    ) -> Result<u64, topsail::core::StoreError> {
        self.inner.count(q).await
    }
}

#[topsail::async_trait]
impl topsail::core::store::Store for Counting {
    fn dialect(&self) -> topsail::core::store::Dialect {
        self.inner.dialect()
    }
    async fn conn(&self) -> Result<Box<dyn topsail::core::store::Conn>, topsail::core::StoreError> {
        Ok(Box::new(CountingConn {
            inner: self.inner.conn().await?,
            selects: self.selects.clone(),
        }))
    }
    async fn begin(&self) -> Result<Box<dyn topsail::core::store::Tx>, topsail::core::StoreError> {
        self.transactions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.begin().await
    }
}

#[tokio::test]
async fn a_read_and_its_populates_are_one_statement() {
    use std::sync::atomic::Ordering;
    let z = topsail_tests::zoo(topsail_tests::Db::Sqlite).await;
    for i in 0..20 {
        let u = z.user(&format!("U{i}")).await;
        let p = z.pet(&format!("P{i}"), json!({"owner": u})).await;
        let t = z.tag(&format!("T{i}")).await;
        z.send(Method::PUT, &format!("/pet/{p}/tags/{t}"), None)
            .await;
    }
    let selects = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let transactions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let store = Counting {
        inner: z.app.store().clone(),
        selects: selects.clone(),
        transactions: transactions.clone(),
    };
    let engine = topsail::Engine::new(
        std::sync::Arc::new(store),
        std::sync::Arc::new(topsail::NoPublisher),
        Default::default(),
    );
    let pets = engine
        .find(
            <example_zoo::Pet as topsail::Model>::def(),
            &topsail::Criteria::new(),
            &topsail::Actor::Server,
        )
        .await
        .unwrap();
    assert_eq!(pets.len(), 20);
    assert!(
        pets.iter()
            .all(|p| p["owner"].is_object() && p["tags"].as_array().unwrap().len() == 1)
    );
    assert_eq!(
        selects.load(Ordering::SeqCst),
        1,
        "pets with their owners and tags: one statement"
    );
    // A create that links no collection is one INSERT (returning the row),
    // outside a transaction; only the owner is read back.
    selects.store(0, Ordering::SeqCst);
    let pet = <example_zoo::Pet as topsail::Model>::def();
    let created = engine
        .create(
            pet,
            &json!({"name": "Solo", "owner": 1}),
            &topsail::Populate::All,
            &topsail::Actor::Server,
        )
        .await
        .unwrap();
    assert_eq!(
        (created["owner"]["id"].clone(), created["tags"].clone()),
        (json!(1), json!([]))
    );
    assert_eq!(
        (
            selects.load(Ordering::SeqCst),
            transactions.load(Ordering::SeqCst)
        ),
        (1, 0)
    );
    // With collections it is a transaction, as before.
    let linked = engine
        .create(
            pet,
            &json!({"name": "Duo", "tags": [1]}),
            &topsail::Populate::All,
            &topsail::Actor::Server,
        )
        .await
        .unwrap();
    assert_eq!(linked["tags"][0]["id"], 1);
    assert_eq!(transactions.load(Ordering::SeqCst), 1);
    // One record reads its owner and tags in the same statement.
    selects.store(0, Ordering::SeqCst);
    let one = engine
        .find_one(
            pet,
            &topsail::Pk::from(1),
            &topsail::Criteria::new(),
            &topsail::Actor::Server,
        )
        .await
        .unwrap();
    assert!(one["owner"].is_object() && one["tags"].as_array().unwrap().len() == 1);
    assert_eq!(selects.load(Ordering::SeqCst), 1, "findOne: one statement");
}

/// `Blueprints::max_limit` caps every read: `limit=-1`, a limit above it,
/// the default, an explicit populate and the populate action.
async fn reads_are_capped_at_max_limit(db: topsail_tests::Db) {
    let z = topsail_tests::zoo_with(db, |b| b.max_limit(40)).await;
    let store = z.app.store().clone();
    let cleanup = z.cleanup.clone();
    let ann = z.user("Ann").await;
    for i in 0..44 {
        z.user(&format!("U{i}")).await;
        z.pet(&format!("P{i}"), json!({"owner": ann})).await;
    }
    let len = |v: serde_json::Value| v.as_array().map(Vec::len);
    assert_eq!(
        len(z.get("/user?limit=-1").await),
        Some(40),
        "Sails' no limit"
    );
    assert_eq!(len(z.get("/user?limit=100").await), Some(40));
    assert_eq!(len(z.get("/user").await), Some(30), "the default stands");
    assert_eq!(
        len(z.get("/user?limit=3").await),
        Some(3),
        "a smaller limit stands"
    );
    let one = z.get(&format!("/user/{ann}?populate=pets")).await;
    assert_eq!(len(one["pets"].clone()), Some(40), "an explicit populate");
    let listed = z.get("/user?name=Ann&populate=pets").await;
    assert_eq!(
        len(listed[0]["pets"].clone()),
        Some(40),
        "an explicit populate in a find"
    );
    let action = z.get(&format!("/user/{ann}/pets?limit=-1")).await;
    assert_eq!(len(action), Some(40), "the populate action");
    let page = z.get("/user?limit=10&skip=40").await;
    assert_eq!(len(page), Some(5), "paging goes on past the cap");
    let r = z.send(http::Method::GET, "/user?limit=abc", None).await;
    assert_eq!(
        r.code(),
        "E_INVALID_CRITERIA",
        "a bad limit is still refused"
    );
    drop(z);
    store.close().await;
    cleanup.run().await;
}

topsail_tests::each_db!(reads_are_capped_at_max_limit, reads_are_capped_at_max_limit);

/// Criteria as any client could send them, for the property test below.
mod any_criteria {
    use proptest::prelude::*;
    use serde_json::Value;

    /// The words criteria are made of (the zoo's attributes, the modifiers,
    /// the clauses), and any other text.
    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec![
                "where", "limit", "skip", "sort", "select", "omit", "populate", "or", "and",
                "in", "nin", "contains", "startsWith", "endsWith", "like", "<", "<=", ">",
                ">=", "!=", "id", "name", "email", "age", "pets", "owner", "tags", "species",
                "createdAt", "ASC", "DESC", "name DESC", "age ASC", "-1", "1", "0", "%", "_",
                "\\", "\u{0}", "9223372036854775807", "1e400", "[]", "{}", "null",
            ])
            .prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            word().prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((word(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// A route that reads criteria and a request body of parameters.
    pub(super) fn request() -> impl Strategy<Value = (&'static str, Value)> {
        let route = prop::sample::select(vec![
            "/user",
            "/pet",
            "/tag",
            "/user/1",
            "/pet/1",
            "/user/1/pets",
            "/pet/1/tags",
            "/pet/1/owner",
        ]);
        let params = prop::collection::vec((word(), json()), 0..6)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()));
        (route, params)
    }
}

/// Any criteria a client can send (as the parameters of a read, in the
/// body so that nothing is lost to URL encoding), through the router to a
/// real database: every answer is 200, 400 or 404, never a 5xx, on both
/// databases. 300 cases per database keep it to seconds.
fn any_criteria_is_answered_without_a_server_error(db: topsail_tests::Db) {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let z = rt.block_on(async {
        let z = topsail_tests::zoo(db).await;
        seed(&z).await;
        let ann = z.user("Ann").await;
        let tag = z.tag("good").await;
        let rex = z.pet("Rex", json!({"owner": ann})).await;
        let added = z
            .send(Method::PUT, &format!("/pet/{rex}/tags/{tag}"), None)
            .await;
        assert_eq!(added.status, StatusCode::OK);
        z
    });
    let config = Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    };
    let outcome = TestRunner::new(config).run(&any_criteria::request(), |(route, params)| {
        let r = rt.block_on(z.send(Method::GET, route, Some(params.clone())));
        if r.status.is_server_error() || r.status == StatusCode::OK && r.body.is_null() {
            return Err(TestCaseError::fail(format!(
                "GET {route} {params} answered {} {}",
                r.status, r.body
            )));
        }
        Ok(())
    });
    let (store, cleanup) = (z.app.store().clone(), z.cleanup.clone());
    drop(z);
    rt.block_on(async {
        store.close().await;
        cleanup.run().await;
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

mod any_criteria_is_answered_without_a_server_error {
    #[test]
    fn sqlite() {
        super::any_criteria_is_answered_without_a_server_error(topsail_tests::Db::Sqlite)
    }
    #[test]
    fn postgres() {
        super::any_criteria_is_answered_without_a_server_error(topsail_tests::Db::Postgres)
    }
}
