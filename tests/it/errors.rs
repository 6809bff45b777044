use http::{Method, StatusCode};
use serde_json::json;
use topsail_tests::{Zoo, both, enc};

async fn expect(
    z: &Zoo,
    method: Method,
    uri: &str,
    body: Option<serde_json::Value>,
    status: StatusCode,
    code: &str,
) {
    let r = z.send(method.clone(), uri, body).await;
    assert_eq!(
        (r.status, r.code()),
        (status, code),
        "{method} {uri}: {:?}",
        r.body
    );
    if status == StatusCode::BAD_REQUEST && code != "E_UNIQUE" {
        let msg = r.body["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(&format!(
                "The server could not fulfill this request (`{method} "
            )),
            "{msg}"
        );
        assert!(r.body["details"].is_string());
    }
}

const BAD: StatusCode = StatusCode::BAD_REQUEST;

both! {
    async fn invalid_new_records(z) {
        for body in [
            json!({"email": "a@example.com"}),
            json!({"name": "A"}),
            json!({"name": "A", "email": "not an email"}),
            json!({"name": null, "email": "a@example.com"}),
            json!({"name": "A", "email": "a@example.com", "age": "old"}),
            json!({"name": {"x": 1}, "email": "a@example.com"}),
            json!({"name": "A", "email": "a@example.com", "pets": "nope"}),
            json!({"name": "A", "email": "a@example.com", "pets": ["x"]}),
            // An array is not a record (Sails reads it as {0: ...}).
            json!([{"name": "A", "email": "a@example.com"}]),
        ] {
            expect(&z, Method::POST, "/user", Some(body), BAD, "E_INVALID_NEW_RECORD").await;
        }
        expect(&z, Method::POST, "/pet", Some(json!({"name": "R", "owner": "abc"})), BAD, "E_INVALID_NEW_RECORD").await;
        assert_eq!(z.get("/user").await, json!([]), "nothing was written");
    }
}

both! {
    async fn invalid_values_to_set(z) {
        let id = z.user("Ann").await;
        for body in [json!({"age": "x"}), json!({"email": "nope"}), json!({"name": null})] {
            expect(&z, Method::PATCH, &format!("/user/{id}"), Some(body), BAD, "E_INVALID_VALUES_TO_SET").await;
        }
        assert_eq!(z.get(&format!("/user/{id}")).await["email"], "ann@example.com");
    }
}

both! {
    async fn unique_violations_are_400_e_unique(z) {
        let a = z.user("Ann").await;
        z.user("Bob").await;
        let r = z.send(Method::POST, "/user", Some(json!({"name": "X", "email": "ann@example.com"}))).await;
        assert_eq!(r.status, BAD);
        assert_eq!(r.body, json!({
            "code": "E_UNIQUE",
            "message": "Would violate uniqueness constraint-- a record already exists with conflicting value(s).",
            "modelIdentity": "user",
            "attrNames": ["email"],
        }));
        let r = z.send(Method::PATCH, &format!("/user/{a}"), Some(json!({"email": "bob@example.com"}))).await;
        assert_eq!((r.status, r.code()), (BAD, "E_UNIQUE"));
        assert_eq!(r.body["attrNames"], json!(["email"]));
    }
}

both! {
    async fn invalid_criteria(z) {
        z.user("Ann").await;
        for q in [
            format!("where={}", enc("{bad")),
            "where=".to_owned(),
            format!("where={}", enc(r#"{"bogus":1}"#)),
            format!("where={}", enc(r#"{"name":{"bogusop":1}}"#)),
            format!("where={}", enc(r#"{"pets":1}"#)),
            format!("where={}", enc(r#"{"age":{"contains":"1"}}"#)),
            format!("where={}", enc(r#""abc""#)),
            "limit=abc".to_owned(),
            "limit=1.5".to_owned(),
            "skip=-2".to_owned(),
            format!("sort={}", enc(r#"{"age":"DESC"}"#)),
            format!("sort={}", enc("age DESC, name ASC")),
            "sort=bogus".to_owned(),
            "select=pets".to_owned(),
            "select=bogus".to_owned(),
            "omit=id".to_owned(),
            "bogus=1".to_owned(),
        ] {
            expect(&z, Method::GET, &format!("/user?{q}"), None, BAD, "E_INVALID_CRITERIA").await;
        }
        expect(&z, Method::GET, "/user/abc", None, BAD, "E_INVALID_CRITERIA").await;
        expect(&z, Method::DELETE, "/user", None, BAD, "E_INVALID_CRITERIA").await;
        expect(&z, Method::PATCH, "/user/abc", Some(json!({})), BAD, "E_INVALID_CRITERIA").await;
    }
}

both! {
    async fn invalid_populates(z) {
        z.user("Ann").await;
        for q in ["populate=true", "populate=%5Bpets%5D", "populate=bogus"] {
            expect(&z, Method::GET, &format!("/user?{q}"), None, BAD, "E_INVALID_POPULATES").await;
        }
        expect(&z, Method::GET, "/user/1?populate=bogus", None, BAD, "E_INVALID_POPULATES").await;
    }
}

both! {
    async fn invalid_associated_ids(z) {
        let u = z.user("Ann").await;
        expect(&z, Method::PUT, &format!("/user/{u}/pets"), Some(json!({"pets": [1]})), BAD, "E_INVALID_ASSOCIATED_IDS").await;
        expect(&z, Method::PUT, &format!("/user/{u}/pets?pets=abc"), None, BAD, "E_INVALID_ASSOCIATED_IDS").await;
        expect(&z, Method::PUT, &format!("/user/{u}/pets"), Some(json!(["x"])), BAD, "E_INVALID_ASSOCIATED_IDS").await;
        expect(&z, Method::PUT, &format!("/user/{u}/pets/abc"), None, BAD, "E_INVALID_ASSOCIATED_IDS").await;
    }
}

both! {
    async fn deep_and_huge_where_clauses_are_refused(z) {
        let mut w = json!({"name": "x"});
        for _ in 0..40 {
            w = json!({"or": [w]});
        }
        let r = z.send(Method::GET, "/user", Some(json!({"where": w}))).await;
        assert_eq!((r.status, r.code()), (BAD, "E_INVALID_CRITERIA"), "socket-style where in a body");
        let ids: Vec<i64> = (0..6000).collect();
        let r = z.send(Method::GET, "/user", Some(json!({"where": {"id": {"in": ids}}}))).await;
        assert_eq!((r.status, r.code()), (BAD, "E_INVALID_CRITERIA"));
        let ids: Vec<i64> = (0..4000).collect();
        let r = z.send(Method::GET, "/user", Some(json!({"where": {"id": {"in": ids}}}))).await;
        assert_eq!(r.status, StatusCode::OK, "a large but bounded in-list is fine");
    }
}

both! {
    async fn malformed_bodies(z) {
        use axum::body::Body;
        use tower::ServiceExt;
        let send = |ct: &'static str, body: Vec<u8>| {
            let router = z.router.clone();
            async move {
                let req = http::Request::post("/user").header("content-type", ct).body(Body::from(body)).unwrap();
                let res = router.oneshot(req).await.unwrap();
                let status = res.status();
                let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                (status, v["code"].as_str().unwrap_or_default().to_owned())
            }
        };
        assert_eq!(send("application/json", b"{bad".to_vec()).await, (BAD, "E_INVALID_REQUEST".to_owned()));
        assert_eq!(send("application/json", b"42".to_vec()).await, (BAD, "E_INVALID_REQUEST".to_owned()));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(send("application/json", deep.into_bytes()).await, (BAD, "E_INVALID_REQUEST".to_owned()));
        assert_eq!(send("text/plain", b"hello".to_vec()).await, (StatusCode::UNSUPPORTED_MEDIA_TYPE, "E_UNSUPPORTED_MEDIA_TYPE".to_owned()));
        // No content type (a cross-site `fetch` sends a JSON text so, without
        // a preflight): refused, never read as JSON.
        let no_type = http::Request::post("/user")
            .body(Body::from(r#"{"name":"Eve","email":"eve@example.com"}"#))
            .unwrap();
        let res = z.router.clone().oneshot(no_type).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let big = format!("{{\"name\":\"{}\",\"email\":\"a@example.com\"}}", "x".repeat(1024 * 1024 + 1));
        assert_eq!(send("application/json", big.into_bytes()).await, (StatusCode::PAYLOAD_TOO_LARGE, "E_PAYLOAD_TOO_LARGE".to_owned()));
        assert_eq!(z.get("/user").await, json!([]));
    }
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let z = topsail_tests::zoo_with(topsail_tests::Db::Sqlite, |b| b.body_limit(64)).await;
    let r = z
        .send(
            Method::POST,
            "/user",
            Some(json!({"name": "x".repeat(100), "email": "a@example.com"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "E_PAYLOAD_TOO_LARGE")
    );
}

both! {
    async fn nul_characters_are_refused_on_every_database(z) {
        // PostgreSQL cannot store a NUL in `text` or `jsonb`: refused with a
        // 400 on both databases, never a 500, and nothing is written.
        expect(&z, Method::POST, "/user", Some(json!({"name": "A\u{0}B", "email": "a@example.com"})), BAD, "E_INVALID_NEW_RECORD").await;
        let id = z.user("Ann").await;
        expect(&z, Method::PATCH, &format!("/user/{id}"), Some(json!({"name": "x\u{0}"})), BAD, "E_INVALID_VALUES_TO_SET").await;
        let where_nul = format!("/user?where={}", enc(r#"{"name":"\u0000"}"#));
        for uri in ["/user?name=a%00b", "/user?name[contains]=a%00", "/user?name[like]=%00", &where_nul] {
            expect(&z, Method::GET, uri, None, BAD, "E_INVALID_CRITERIA").await;
        }
        assert_eq!(z.get("/user").await.as_array().map(Vec::len), Some(1));
    }
}

both! {
    async fn a_like_pattern_may_end_in_a_backslash(z) {
        z.post("/user", json!({"name": "back\\", "email": "b@example.com"})).await;
        z.user("Ann").await;
        // A lone trailing backslash is matched literally (PostgreSQL would
        // refuse the pattern; SQLite matches it literally).
        let found = z.get(&format!("/user?name[like]={}", enc("%\\"))).await;
        assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
        assert_eq!(found[0]["name"], "back\\");
        let escaped = z.get(&format!("/user?name[like]={}", enc("back\\\\"))).await;
        assert_eq!(escaped.as_array().map(Vec::len), Some(1), "an escaped backslash: {escaped}");
    }
}

both! {
    async fn a_to_one_given_a_record_is_refused(z) {
        let ann = z.user("Ann").await;
        // Waterline takes a key for a to-one, never a record.
        expect(&z, Method::POST, "/pet", Some(json!({"name": "Rex", "owner": {"id": ann}})), BAD, "E_INVALID_NEW_RECORD").await;
        let rex = z.pet("Rex", json!({})).await;
        expect(&z, Method::PATCH, &format!("/pet/{rex}"), Some(json!({"owner": {"id": ann}})), BAD, "E_INVALID_VALUES_TO_SET").await;
        expect(&z, Method::PATCH, &format!("/pet/{rex}"), Some(json!({"owner": [ann]})), BAD, "E_INVALID_VALUES_TO_SET").await;
        assert_eq!(z.get(&format!("/pet/{rex}")).await["owner"], json!(null), "nothing was written");
    }
}

both! {
    async fn sort_as_a_mongo_style_dictionary(z) {
        for name in ["Bob", "Ann", "Cid"] {
            z.user(name).await;
        }
        let names = |v: serde_json::Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|u| u["name"].as_str().map(str::to_owned)).collect()
        };
        let desc = z.get(&format!("/user?sort={}", enc(r#"{"name":-1}"#))).await;
        assert_eq!(names(desc), ["Cid", "Bob", "Ann"]);
        let asc = z.get(&format!("/user?sort={}", enc(r#"{"age":1,"name":1}"#))).await;
        assert_eq!(names(asc), ["Ann", "Bob", "Cid"]);
        let ann = z.get("/user?name=Ann").await[0]["id"].as_i64().unwrap_or_default();
        // The populate action takes it too.
        let pets = z.get(&format!("/user/{ann}/pets?sort={}", enc(r#"{"name":-1}"#))).await;
        assert_eq!(pets, json!([]));
        // One key with a string direction belongs in an array, as Sails says.
        expect(&z, Method::GET, &format!("/user?sort={}", enc(r#"{"name":"DESC"}"#)), None, BAD, "E_INVALID_CRITERIA").await;
        expect(&z, Method::GET, &format!("/user?sort={}", enc(r#"{"name":2}"#)), None, BAD, "E_INVALID_CRITERIA").await;
        expect(&z, Method::GET, &format!("/user?sort={}", enc(r#"{"nope":1}"#)), None, BAD, "E_INVALID_CRITERIA").await;
    }
}

both! {
    async fn omit_meets_populate_as_in_sails(z) {
        let ann = z.user("Ann").await;
        z.pet("Rex", json!({"owner": ann})).await;
        // `owner` is populated by default: populating and omitting it is an error.
        expect(&z, Method::GET, "/pet?omit=species,owner", None, BAD, "E_INVALID_POPULATES").await;
        // Without the populate, omitting it is fine.
        let plain = z.get("/pet?omit=species,owner&populate=false").await;
        assert!(plain[0].get("owner").is_none() && plain[0].get("species").is_none(), "{plain}");
        // A plural association is dropped from `omit` (it is there only when populated).
        let users = z.get("/user?omit=pets").await;
        assert_eq!(users[0]["pets"].as_array().map(Vec::len), Some(1), "{users}");
    }
}

both! {
    async fn a_client_cannot_choose_an_auto_increment_key(z) {
        for id in [json!(9_223_372_036_854_775_807_i64), json!(5), json!("7")] {
            let body = json!({"id": id, "name": "A", "email": "a@example.com"});
            expect(&z, Method::POST, "/user", Some(body), BAD, "E_INVALID_NEW_RECORD").await;
        }
        expect(&z, Method::GET, "/user/create?id=5&name=A&email=a@example.com", None, BAD, "E_INVALID_NEW_RECORD").await;
        // Later creates get their keys from the database, as before.
        let a = z.user("Ann").await;
        let b = z.user("Bob").await;
        assert!(b > a, "{a} then {b}");
        // `null` means "assign one", as in Waterline.
        let c = z.post("/user", json!({"id": null, "name": "Cid", "email": "cid@example.com"})).await;
        assert!(c["id"].as_i64().unwrap_or_default() > b, "{c}");
    }
}

/// Sends `method uri` (with a JSON `body`) through `router`: the status and
/// the `Retry-After` header.
async fn status_and_retry_after(
    router: &axum::Router,
    method: Method,
    uri: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, Option<String>) {
    use tower::ServiceExt;
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        ))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let retry = res
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (res.status(), retry)
}

/// Connection options for a fresh PostgreSQL schema (its `search_path`),
/// for a test that builds its own pool or store.
async fn fresh_pg_schema() -> (sqlx::postgres::PgConnectOptions, topsail_tests::Cleanup) {
    let (schema_store, cleanup) = topsail_tests::fresh_store(topsail_tests::Db::Postgres).await;
    schema_store.close().await;
    let topsail_tests::Cleanup::Schema(schema) = cleanup.clone() else {
        panic!("a PostgreSQL schema");
    };
    let opts =
        <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&topsail_tests::pg_url())
            .unwrap()
            .options([("search_path", schema.as_str())]);
    (opts, cleanup)
}

#[tokio::test]
async fn every_connection_busy_is_503_with_retry_after() {
    use topsail::core::store::Store;
    // A pool of one connection that waits 200 ms for a free one, on a fresh
    // PostgreSQL schema.
    let (opts, cleanup) = fresh_pg_schema().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_millis(200))
        .connect_with(opts)
        .await
        .unwrap();
    let store = topsail::SqlStore::Postgres(topsail::Pooled::new(pool));
    let app = example_zoo::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let router = app.blueprints().router();
    // Another request holds the one connection.
    let held = store.begin().await.unwrap();
    let create = json!({"name": "A", "email": "a@example.com"});
    for (method, uri, body) in [
        (Method::GET, "/user", None),
        (Method::POST, "/user", Some(create)),
    ] {
        let (status, retry) = status_and_retry_after(&router, method.clone(), uri, body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {uri}");
        assert_eq!(retry.as_deref(), Some("1"), "Retry-After");
    }
    drop(held);
    let (status, _) = status_and_retry_after(&router, Method::GET, "/user", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "served again once a connection is free"
    );
    store.close().await;
    cleanup.run().await;
}

both! {
    async fn long_where_clauses_and_long_patterns(z) {
        z.user("Ann").await;
        // 1,500 `or` terms (sent in the body: the URL would be too long):
        // SQLite refused such an expression tree (500).
        let find = |filter: serde_json::Value| {
            let z = &z;
            async move {
                let r = z.send(Method::GET, "/user", Some(json!({"where": filter}))).await;
                assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
                r.body.as_array().map(Vec::len)
            }
        };
        let terms: Vec<serde_json::Value> = (0..1_500).map(|i| json!({"age": i})).collect();
        assert_eq!(find(json!({"or": terms})).await, Some(1));
        let terms: Vec<serde_json::Value> = (1..1_500).map(|i| json!({"age": {"!=": i}})).collect();
        assert_eq!(find(json!({"and": terms})).await, Some(1));
        // A pattern text past 10,000 bytes is refused, on both databases.
        let long = "a".repeat(20_000);
        expect(&z, Method::GET, &format!("/user?name[contains]={long}"), None, BAD, "E_INVALID_CRITERIA").await;
        let fits = "a".repeat(9_000);
        assert_eq!(z.get(&format!("/user?name[contains]={fits}")).await, json!([]));
    }
}

/// The zoo on a fresh PostgreSQL schema, through a store whose connections
/// carry `application_name` (to find them in `pg_stat_activity`) and the
/// given `statement_timeout`.
async fn zoo_on_named_pg(
    application_name: &str,
    statement_timeout: &str,
) -> (topsail::Topsail, axum::Router, topsail_tests::Cleanup) {
    let (opts, cleanup) = fresh_pg_schema().await;
    let opts = opts
        .application_name(application_name)
        .options([("statement_timeout", statement_timeout)]);
    let store = topsail::SqlStore::connect_postgres(opts).await.unwrap();
    let app = example_zoo::builder().store(store).build().await.unwrap();
    let router = app.blueprints().router();
    (app, router, cleanup)
}

/// Every connection of `application_name` is killed by the server, as a
/// restart would (`pg_terminate_backend`, from another connection).
async fn terminate_backends(application_name: &str) -> i64 {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&topsail_tests::pg_url())
        .await
        .unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) AS k",
    )
    .bind(application_name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    // Termination is asynchronous: wait until they are gone.
    for _ in 0..100 {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(application_name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    killed
}

/// The server kills every connection of the store (a restart, as the
/// store sees it): the next reads and writes are answered as if nothing
/// happened. A read that fails at the connection level is run once more
/// on a checked connection, a write's transaction is begun again, and the
/// connections that went idle before the failure are checked before use.
/// (It used to cost one 500 per connection the store held.)
#[tokio::test]
async fn connections_killed_by_the_server_cost_no_error() {
    let name = format!("topsail_kill_{}", std::process::id());
    let (app, router, cleanup) = zoo_on_named_pg(&name, "30s").await;
    let create = |i: u32| json!({"name": format!("U{i}"), "email": format!("u{i}@example.com")});
    let (status, _) = status_and_retry_after(&router, Method::POST, "/user", Some(create(0))).await;
    assert_eq!(status, StatusCode::OK);
    for round in 1..=3 {
        // Several connections in use at once, then back on the store's
        // stack and in sqlx's idle queue.
        let reads = (0..6).map(|_| status_and_retry_after(&router, Method::GET, "/user", None));
        for (status, _) in futures_util::future::join_all(reads).await {
            assert_eq!(status, StatusCode::OK);
        }
        let killed = terminate_backends(&name).await;
        assert!(killed >= 1, "round {round}: killed {killed}");
        for uri in ["/user", "/user/1", "/user?populate=pets", "/pet"] {
            let (status, _) = status_and_retry_after(&router, Method::GET, uri, None).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "round {round}: GET {uri} after the kill"
            );
        }
        let killed = terminate_backends(&name).await;
        assert!(killed >= 1);
        let (status, _) =
            status_and_retry_after(&router, Method::POST, "/user", Some(create(round))).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "round {round}: a write after the kill"
        );
        terminate_backends(&name).await;
        let rename = json!({"name": format!("Renamed {round}")});
        let (status, _) =
            status_and_retry_after(&router, Method::PATCH, "/user/1", Some(rename)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "round {round}: a transaction after the kill"
        );
    }
    app.store().close().await;
    cleanup.run().await;
}

/// A statement past PostgreSQL's `statement_timeout` is answered 504, and
/// the connection serves the next request.
#[tokio::test]
async fn a_statement_past_the_statement_timeout_is_504() {
    use sqlx::Connection;
    let name = format!("topsail_timeout_{}", std::process::id());
    let (app, router, cleanup) = zoo_on_named_pg(&name, "300ms").await;
    let topsail_tests::Cleanup::Schema(schema) = cleanup.clone() else {
        panic!("a PostgreSQL schema");
    };
    // Another session holds the table locked: reads wait on the lock.
    let mut locker = sqlx::PgConnection::connect(&topsail_tests::pg_url())
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; LOCK TABLE \"{schema}\".\"user\" IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut locker)
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let (status, _) = status_and_retry_after(&router, Method::GET, "/user", None).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let create = json!({"name": "A", "email": "a@example.com"});
    let (status, _) = status_and_retry_after(&router, Method::POST, "/user", Some(create)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "a write too");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    let (status, _) = status_and_retry_after(&router, Method::GET, "/user", None).await;
    assert_eq!(status, StatusCode::OK, "served again");
    app.store().close().await;
    cleanup.run().await;
}

/// SQLite: a write that finds the database locked by another process's
/// write waits (SQLite retries with backoff for `busy_timeout`, 10 s) and
/// is then answered 503 with `Retry-After`, not 500.
#[tokio::test]
async fn a_sqlite_write_lock_held_too_long_is_503() {
    use sqlx::Connection;
    let z = topsail_tests::zoo(topsail_tests::Db::Sqlite).await;
    let topsail_tests::Cleanup::File(path) = z.cleanup.clone() else {
        panic!("a SQLite file");
    };
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let create = json!({"name": "A", "email": "a@example.com"});
    let started = std::time::Instant::now();
    let (status, retry) =
        status_and_retry_after(&z.router, Method::POST, "/user", Some(create.clone())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(5),
        "it waited for the lock first: {:?}",
        started.elapsed()
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    let (status, _) = status_and_retry_after(&z.router, Method::POST, "/user", Some(create)).await;
    assert_eq!(status, StatusCode::OK, "served once the lock is free");
    let (store, cleanup) = (z.app.store().clone(), z.cleanup.clone());
    drop(z);
    store.close().await;
    cleanup.run().await;
}

/// A 12 MB body sent over a real connection by a client that writes all
/// of it before it reads (as Node's `fetch` and browsers do): it gets the
/// 413. The server used to answer at once and close the connection under
/// the client, which saw a reset instead.
#[tokio::test]
async fn a_client_still_sending_a_too_large_body_reads_the_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let z = topsail_tests::zoo(topsail_tests::Db::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = z.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    for declared in [true, false] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = vec![b' '; 12 * 1024 * 1024];
        let length = if declared {
            format!("Content-Length: {}\r\n", body.len())
        } else {
            "Transfer-Encoding: chunked\r\n".to_owned()
        };
        let head = format!(
            "POST /user HTTP/1.1\r\nHost: zoo\r\nContent-Type: application/json\r\n{length}\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let sent = async {
            for chunk in body.chunks(64 * 1024) {
                if declared {
                    tcp.write_all(chunk).await?;
                } else {
                    tcp.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .await?;
                    tcp.write_all(chunk).await?;
                    tcp.write_all(b"\r\n").await?;
                }
            }
            if !declared {
                tcp.write_all(b"0\r\n\r\n").await?;
            }
            std::io::Result::Ok(())
        };
        let sent = tokio::time::timeout(std::time::Duration::from_secs(20), sent)
            .await
            .expect("the body was taken in time");
        assert!(
            sent.is_ok(),
            "declared {declared}: the connection closed under the client: {sent:?}"
        );
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut answer))
            .await
            .expect("an answer")
            .expect("no reset");
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "declared {declared}: {answer}"
        );
        assert!(answer.contains("E_PAYLOAD_TOO_LARGE"), "{answer}");
    }
    server.abort();
    let (store, cleanup) = (z.app.store().clone(), z.cleanup.clone());
    drop(z);
    store.close().await;
    cleanup.run().await;
}
