use http::{Method, StatusCode};
use serde_json::{Value, json};
use topsail_tests::{both, enc};

both! {
    async fn create_returns_the_populated_record_with_base_values(z) {
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let u = z.post("/user", json!({"name": "Ann", "email": "ann@example.com"})).await;
        assert_eq!(u["name"], "Ann");
        assert_eq!(u["age"], 0, "an omitted number gets the base value 0");
        assert_eq!(u["pets"], json!([]));
        let created = u["createdAt"].as_i64().unwrap();
        assert!(created >= before && created == u["updatedAt"].as_i64().unwrap(), "{u}");
        let p = z.post("/pet", json!({"name": "Rex", "owner": u["id"]})).await;
        assert_eq!(p["species"], "", "an omitted string gets the base value \"\"");
        assert_eq!(p["owner"]["name"], "Ann", "to-one populated as an object");
        assert_eq!(p["owner"].get("pets"), None, "a populated record carries no collections");
        assert_eq!(p["tags"], json!([]));
    }
}

both! {
    async fn values_are_coerced_and_unknown_keys_dropped(z) {
        let u = z.post("/user", json!({"name": 42, "email": "n@example.com", "age": "41", "bogus": 1})).await;
        assert_eq!(u["name"], "42");
        assert_eq!(u["age"], 41);
        assert_eq!(u.get("bogus"), None);
        let u = z.post("/user", json!({"name": "F", "email": "f@example.com", "age": 2.5})).await;
        assert_eq!(u["age"], 2.5);
    }
}

both! {
    async fn client_timestamps_win(z) {
        let u = z.post("/user", json!({"name": "T", "email": "t@example.com", "createdAt": 5})).await;
        assert_eq!(u["createdAt"], 5);
        let id = u["id"].as_i64().unwrap();
        let r = z.send(Method::PATCH, &format!("/user/{id}"), Some(json!({"updatedAt": 6}))).await;
        assert_eq!(r.body["updatedAt"], 6);
    }
}

both! {
    async fn find_one_update_and_destroy(z) {
        let id = z.user("Ann").await;
        let got = z.get(&format!("/user/{id}")).await;
        assert_eq!(got["name"], "Ann");
        // findOne ignores every other parameter.
        assert_eq!(z.get(&format!("/user/{id}?name=whatever")).await["id"], id);
        let r = z.send(Method::PATCH, &format!("/user/{id}"), Some(json!({"age": "7", "id": 999}))).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["age"], 7);
        assert_eq!(r.body["id"], id, "a pk in the body is ignored");
        assert!(r.body["updatedAt"].as_i64().unwrap() >= got["updatedAt"].as_i64().unwrap());
        let r = z.send(Method::PUT, &format!("/user/{id}"), Some(json!({"name": "Annie"}))).await;
        assert_eq!(r.body["name"], "Annie", "PUT is the deprecated alias of PATCH");
        let r = z.send(Method::DELETE, &format!("/user/{id}"), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["name"], "Annie", "destroy returns the record as it was");
        let r = z.send(Method::GET, &format!("/user/{id}"), None).await;
        assert_eq!((r.status, r.body), (StatusCode::NOT_FOUND, json!("Not Found")));
        for (m, uri) in [(Method::PATCH, "/user/999"), (Method::DELETE, "/user/999")] {
            assert_eq!(z.send(m, uri, Some(json!({}))).await.status, StatusCode::NOT_FOUND);
        }
    }
}

both! {
    async fn shortcut_routes(z) {
        let u = z.get("/user/create?name=Sam&email=sam%40example.com&age=3").await;
        let id = u["id"].as_i64().unwrap();
        assert_eq!(u["age"], 3);
        assert_eq!(z.get("/user/find").await.as_array().unwrap().len(), 1, "/user/find is find, not findOne(`find`)");
        assert_eq!(z.get(&format!("/user/find/{id}")).await["name"], "Sam");
        assert_eq!(z.get(&format!("/user/update/{id}?name=Samuel")).await["name"], "Samuel");
        let p = z.pet("Rex", json!({})).await;
        assert_eq!(z.get(&format!("/user/{id}/pets/add/{p}")).await["pets"][0]["id"], p);
        assert_eq!(z.get(&format!("/user/{id}/pets/remove/{p}")).await["pets"], json!([]));
        assert_eq!(z.get(&format!("/user/{id}/pets/replace?pets={}", enc(&format!("[{p}]")))).await["pets"][0]["id"], p);
        assert_eq!(z.get(&format!("/user/destroy/{id}")).await["name"], "Samuel");
        assert_eq!(z.get("/user").await, json!([]));
    }
}

both! {
    async fn routes_match_case_insensitively_and_ignore_a_trailing_slash(z) {
        let id = z.user("Ann").await;
        assert_eq!(z.get(&format!("/USER/{id}")).await["id"], id);
        assert_eq!(z.get(&format!("/user/{id}/")).await["id"], id);
        assert_eq!(z.get("/User/").await.as_array().unwrap().len(), 1);
        assert_eq!(z.get(&format!("/user/{id}/PETS")).await, json!([]));
    }
}

both! {
    async fn file_like_ids_are_not_found_on_get(z) {
        z.user("Ann").await;
        assert_eq!(z.send(Method::GET, "/user/1.json", None).await.status, StatusCode::NOT_FOUND);
    }
}

both! {
    async fn forms_and_head_requests_work(z) {
        use axum::body::Body;
        use tower::ServiceExt;
        let req = http::Request::post("/user")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("name=Form&email=form%40example.com&age=5"))
            .unwrap();
        let res = z.router.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(z.get("/user?name=Form").await[0]["age"], 5);
        let res = z.router.clone().oneshot(http::Request::head("/user").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn prefix_rest_prefix_pluralize_and_switches() {
    let z = topsail_tests::zoo_with(topsail_tests::Db::Sqlite, |b| {
        b.prefix("api").rest_prefix("/v1").pluralize(true)
    })
    .await;
    let u = z
        .post(
            "/api/v1/users",
            json!({"name": "Ann", "email": "ann@example.com"}),
        )
        .await;
    assert_eq!(
        z.get(&format!("/api/v1/users/{}", u["id"])).await["name"],
        "Ann"
    );
    assert_eq!(
        z.get("/api/users/find").await.as_array().unwrap().len(),
        1,
        "shortcuts use prefix, not restPrefix"
    );
    assert_eq!(
        z.send(Method::GET, "/user", None).await.status,
        StatusCode::NOT_FOUND
    );

    let z = topsail_tests::zoo_with(topsail_tests::Db::Sqlite, |b| b.shortcuts(false)).await;
    assert_eq!(
        z.send(Method::GET, "/user/find", None).await.status,
        StatusCode::BAD_REQUEST,
        "now findOne(`find`)"
    );
    assert_eq!(
        z.send(Method::GET, "/user/create?name=x", None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let z = topsail_tests::zoo_with(topsail_tests::Db::Sqlite, |b| b.rest(false)).await;
    assert_eq!(
        z.send(Method::POST, "/user", Some(json!({}))).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(z.get("/user/find").await, json!([]));
}

#[tokio::test]
async fn app_routes_win_over_blueprints() {
    use axum::routing::get;
    let z = topsail_tests::zoo(topsail_tests::Db::Sqlite).await;
    z.user("Ann").await;
    let app: axum::Router = axum::Router::new().route("/user", get(|| async { "custom" }));
    let app = z.app.blueprints().mount(app);
    let call = |m: Method, uri: &str, body: Option<Value>| {
        let app = app.clone();
        let uri = uri.to_owned();
        async move {
            let r = topsail_tests::call(&app, None, m, &uri, body).await;
            (r.status, r.body)
        }
    };
    assert_eq!(
        call(Method::GET, "/user", None).await,
        (StatusCode::OK, json!("custom"))
    );
    let (s, body) = call(
        Method::POST,
        "/user",
        Some(json!({"name": "Bob", "email": "bob@example.com"})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "other methods on an app path fall through to blueprints: {body}"
    );
    assert_eq!(call(Method::GET, "/user/1", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn app_routes_win_for_every_spelling_the_blueprints_accept() {
    use axum::extract::Path;
    use axum::routing::get;
    let z = topsail_tests::zoo(topsail_tests::Db::Sqlite).await;
    z.user("Ann").await;
    let app: axum::Router = axum::Router::new().route(
        "/user/{id}",
        get(|Path(id): Path<String>| async move { format!("app {id}") }),
    );
    let app = z.app.blueprints().mount(app);
    for uri in ["/user/1", "/User/1", "/USER/1", "/user/1/", "/User/1/"] {
        let r = topsail_tests::call(&app, None, Method::GET, uri, None).await;
        assert_eq!(
            (r.status, r.body),
            (StatusCode::OK, json!("app 1")),
            "`GET {uri}` reaches the app's route, not blueprint findOne"
        );
    }
    // What the app does not route still reaches the blueprints, in any case.
    let r = topsail_tests::call(&app, None, Method::GET, "/USER/", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body[0]["name"], "Ann");
}

#[tokio::test]
async fn app_handlers_answer_topsail_errors_as_the_blueprints_do() {
    use axum::routing::post;
    use topsail::Topsail;
    let z = topsail_tests::zoo(topsail_tests::Db::Sqlite).await;
    z.user("Ann").await;
    let ts: Topsail = z.app.clone();
    // An app's own create: the engine's errors leave through `?`.
    let handler = move |axum::Json(v): axum::Json<Value>| {
        let ts = ts.clone();
        async move {
            let user = ts.model::<example_zoo::User>().create(v).await?;
            Ok::<_, topsail::Error>(axum::Json(json!({"created": user.id})))
        }
    };
    let app = z.app.serve(
        z.app
            .blueprints()
            .mount(axum::Router::new().route("/signup", post(handler))),
    );
    let mine = topsail_tests::call(
        &app,
        None,
        Method::POST,
        "/signup",
        Some(json!({"name": "Ann", "email": "ann@example.com"})),
    )
    .await;
    let theirs = topsail_tests::call(
        &app,
        None,
        Method::POST,
        "/user",
        Some(json!({"name": "Ann", "email": "ann@example.com"})),
    )
    .await;
    assert_eq!(mine.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        mine.body, theirs.body,
        "E_UNIQUE, as the blueprint sends it"
    );
    assert_eq!(mine.body["code"], "E_UNIQUE");

    let mine = topsail_tests::call(&app, None, Method::POST, "/signup", Some(json!({}))).await;
    let theirs = topsail_tests::call(&app, None, Method::POST, "/user", Some(json!({}))).await;
    assert_eq!(mine.status, StatusCode::BAD_REQUEST);
    assert_eq!(mine.body["code"], "E_INVALID_NEW_RECORD");
    assert_eq!(mine.body["details"], theirs.body["details"]);
    assert_eq!(
        mine.body["message"],
        "The server could not fulfill this request (`POST /signup`) due to a problem with the parameters that were sent.  See the `details` for more info.",
        "the message names the app's request"
    );
}
