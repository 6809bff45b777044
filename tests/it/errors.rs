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
