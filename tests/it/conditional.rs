//! Conditional requests: a findOne's `ETag`, `If-None-Match` → 304,
//! `If-Match` → 412 checked inside the write's transaction, 428 on a model
//! that requires it; over HTTP and over a socket, and the tag an `updated`
//! message carries.

use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use topsail::{Link, Model, Topsail};
use topsail_tests::{Db, fresh_store};
use tower::ServiceExt;

use crate::sockets::{connected, next_text, virtual_request};

/// A writer, with a secret no client sees and the drafts it populates.
#[derive(Model, Debug, Clone)]
struct Writer {
    id: i64,
    #[model(required)]
    name: String,
    #[model(private)]
    secret: String,
    #[model(collection = Draft, via = writer)]
    drafts: Vec<Link<Draft>>,
}

/// A draft: a client may change it only naming the version it read.
#[derive(Model, Debug, Clone)]
#[model(require_if_match)]
struct Draft {
    id: i64,
    #[model(required)]
    title: String,
    #[model(model = Writer)]
    writer: Option<Link<Writer>>,
}

struct App {
    app: Topsail,
    router: axum::Router,
    cleanup: topsail_tests::Cleanup,
}

async fn app(db: Db) -> App {
    let (store, cleanup) = fresh_store(db).await;
    let app = Topsail::builder()
        .model::<Writer>()
        .model::<Draft>()
        .store(store)
        .realtime(topsail::RealtimeConfig::default())
        .create_schema()
        .build()
        .await
        .unwrap();
    let router = app.serve(app.blueprints().router());
    App {
        app,
        router,
        cleanup,
    }
}

/// An answer: status, headers, body (JSON when it parses; `Null` when
/// empty).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn etag(&self) -> String {
        let tag = self.headers.get("etag").expect("an ETag");
        tag.to_str().unwrap().to_owned()
    }
}

impl App {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let res = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        let a = self.send(Method::GET, uri, &[], None).await;
        assert_eq!(a.status, StatusCode::OK, "GET {uri}: {:?}", a.body);
        a
    }

    async fn close(self) {
        let store = self.app.store().clone();
        self.app.close_sockets().await;
        drop(self.app);
        store.close().await;
        self.cleanup.run().await;
    }

    /// Ann (with a secret) and her draft.
    async fn ann_and_draft(&self) {
        let writers = self.app.model::<Writer>();
        writers
            .create(json!({"name": "Ann", "secret": "s1"}))
            .await
            .unwrap();
        let drafts = self.app.model::<Draft>();
        drafts
            .create(json!({"title": "Intro", "writer": 1}))
            .await
            .unwrap();
    }
}

async fn a_find_one_answers_with_a_tag_and_304_when_the_client_has_it(db: Db) {
    let t = app(db).await;
    t.ann_and_draft().await;
    let first = t.get("/writer/1").await;
    let tag = first.etag();
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && tag.len() == 24,
        "{tag}"
    );
    assert_eq!(
        t.get("/writer/1").await.etag(),
        tag,
        "the same record, the same tag"
    );

    for named in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"other\", {tag}"),
        "*".into(),
    ] {
        let a = t
            .send(Method::GET, "/writer/1", &[("if-none-match", &named)], None)
            .await;
        assert_eq!(a.status, StatusCode::NOT_MODIFIED, "If-None-Match: {named}");
        assert_eq!(a.body, Value::Null, "a 304 has no body");
        assert_eq!(a.etag(), tag);
    }
    let a = t
        .send(
            Method::GET,
            "/writer/1",
            &[("if-none-match", "\"other\"")],
            None,
        )
        .await;
    assert_eq!((a.status, a.body), (StatusCode::OK, first.body.clone()));

    // Another representation, another tag.
    let bare = t.get("/writer/1?populate=false").await;
    assert_ne!(bare.etag(), tag);

    // What the record populates is part of what the tag covers: a draft
    // renamed by app code changes Ann's answer, and so her tag.
    t.app
        .model::<Draft>()
        .update(1, json!({"title": "Preface"}))
        .await
        .unwrap();
    let a = t
        .send(Method::GET, "/writer/1", &[("if-none-match", &tag)], None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_ne!(a.etag(), tag);
    assert_eq!(a.body["drafts"][0]["title"], "Preface");

    // A private attribute is no part of what a client sees, nor of the tag.
    let now = a.etag();
    t.app
        .model::<Writer>()
        .update(1, json!({"secret": "s2"}))
        .await
        .unwrap();
    let after = t.get("/writer/1").await;
    assert_eq!(after.body["name"], "Ann");
    assert!(after.body.get("secret").is_none());
    // (The update stamped nothing else: the zoo-less models have no
    // `updatedAt`.)
    assert_eq!(after.etag(), now);
    t.close().await;
}

topsail_tests::each_db!(
    a_find_one_answers_with_a_tag_and_304_when_the_client_has_it,
    a_find_one_answers_with_a_tag_and_304_when_the_client_has_it
);

async fn a_write_naming_an_older_version_is_refused_with_412_and_the_record(db: Db) {
    let t = app(db).await;
    t.ann_and_draft().await;
    let read = t.get("/writer/1").await.etag();

    // Naming the current tag: the write goes ahead, and answers the tag a
    // findOne now answers.
    let patch = |tag: String, name: &'static str| {
        let t = &t;
        async move {
            let h = [("if-match", tag.as_str())];
            (t.send(Method::PATCH, "/writer/1", &h, Some(json!({"name": name})))).await
        }
    };
    let ok = patch(read.clone(), "Ann B").await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let now = t.get("/writer/1").await;
    assert_eq!(ok.etag(), now.etag(), "a write answers the new tag");
    assert_eq!(ok.body, now.body);

    // Naming the tag it read before that change: 412 with the record as it
    // is now and its tag; nothing changed.
    let stale = patch(read.clone(), "Ann C").await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.body, now.body);
    assert_eq!(stale.etag(), now.etag());
    assert_eq!(t.get("/writer/1").await.body["name"], "Ann B");
    // A weak tag, or a value that is no tag, never matches a write.
    for bad in [format!("W/{}", now.etag()), "garbage".into()] {
        let a = patch(bad.clone(), "Ann D").await;
        assert_eq!(a.status, StatusCode::PRECONDITION_FAILED, "If-Match: {bad}");
    }
    assert_eq!(patch("*".into(), "Ann E").await.status, StatusCode::OK);

    // The collection actions check the parent's tag.
    let tag = t.get("/writer/1").await.etag();
    let stale = [("if-match", read.as_str())];
    let current = [("if-match", tag.as_str())];
    let a = t
        .send(Method::PUT, "/writer/1/drafts/1", &stale, None)
        .await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    let a = t
        .send(Method::DELETE, "/writer/1/drafts/1", &stale, None)
        .await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    let a = t
        .send(Method::PUT, "/writer/1/drafts", &stale, Some(json!([])))
        .await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(t.get("/writer/1").await.body["drafts"][0]["id"], 1);
    let a = t
        .send(Method::DELETE, "/writer/1/drafts/1", &current, None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["drafts"], json!([]));
    assert_eq!(a.etag(), t.get("/writer/1").await.etag());

    // A destroy too; a record that is not there is a 404, as without it.
    let a = t.send(Method::DELETE, "/writer/1", &stale, None).await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    let tag = t.get("/writer/1").await.etag();
    let a = t
        .send(Method::DELETE, "/writer/1", &[("if-match", &tag)], None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = t
        .send(Method::DELETE, "/writer/1", &[("if-match", &tag)], None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    t.close().await;
}

topsail_tests::each_db!(
    a_write_naming_an_older_version_is_refused_with_412_and_the_record,
    a_write_naming_an_older_version_is_refused_with_412_and_the_record
);

/// Eight clients read the same version and write at once: the check runs
/// on the row the write's transaction locked, so exactly one wins.
async fn of_writers_naming_the_same_version_exactly_one_wins(db: Db) {
    let t = app(db).await;
    t.ann_and_draft().await;
    let tag = t.get("/writer/1").await.etag();
    let writes = (0..8).map(|i| {
        let (t, tag) = (&t, tag.clone());
        async move {
            let h = [("if-match", tag.as_str())];
            let body = json!({"name": format!("Writer {i}")});
            t.send(Method::PATCH, "/writer/1", &h, Some(body)).await
        }
    });
    let answers = futures_util::future::join_all(writes).await;
    let statuses: Vec<StatusCode> = answers.iter().map(|a| a.status).collect();
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((won, refused), (1, 7), "{statuses:?}");
    let winner = answers.iter().find(|a| a.status == StatusCode::OK).unwrap();
    assert_eq!(t.get("/writer/1").await.body["name"], winner.body["name"]);
    t.close().await;
}

topsail_tests::each_db!(
    of_writers_naming_the_same_version_exactly_one_wins,
    of_writers_naming_the_same_version_exactly_one_wins
);

async fn a_model_that_requires_if_match_answers_428_without_it(db: Db) {
    let t = app(db).await;
    t.ann_and_draft().await;
    let tag = t.get("/draft/1").await.etag();
    let writes = [
        (Method::PATCH, "/draft/1", Some(json!({"title": "x"}))),
        (Method::PUT, "/draft/1", Some(json!({"title": "x"}))),
        (Method::DELETE, "/draft/1", None),
    ];
    for (method, uri, body) in writes {
        let a = t.send(method.clone(), uri, &[], body).await;
        assert_eq!(
            a.status,
            StatusCode::PRECONDITION_REQUIRED,
            "{method} {uri}"
        );
        assert_eq!(a.body["code"], "E_PRECONDITION_REQUIRED");
    }
    assert_eq!(t.get("/draft/1").await.body["title"], "Intro");
    // Reads and creates are not writes of a version.
    let created = t
        .send(Method::POST, "/draft", &[], Some(json!({"title": "New"})))
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let h = [("if-match", tag.as_str())];
    let a = t
        .send(
            Method::PATCH,
            "/draft/1",
            &h,
            Some(json!({"title": "Intro 2"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    // App code is not a client: it needs no tag.
    t.app
        .model::<Draft>()
        .update(1, json!({"title": "By the app"}))
        .await
        .unwrap();
    t.close().await;
}

topsail_tests::each_db!(
    a_model_that_requires_if_match_answers_428_without_it,
    a_model_that_requires_if_match_answers_428_without_it
);

/// Over a real socket: the JWR carries the tag, `If-None-Match` in the
/// request's headers gives 304, `If-Match` 412 and 428; a subscribed
/// socket hears `updated` with the new tag, the one a findOne answers.
async fn conditional_requests_over_a_socket(db: Db) {
    let t = app(db).await;
    t.ann_and_draft().await;
    let (addr, server) = topsail_tests::serve_on_free_port(t.router.clone()).await;
    let mut ws = connected(addr).await;
    let mut other = connected(addr).await;

    let jwr = virtual_request(&mut ws, 1, "get", json!({"url": "/writer/1"})).await;
    assert_eq!(jwr["statusCode"], 200);
    let tag = jwr["headers"]["etag"].as_str().expect("a tag").to_owned();
    let http_tag = t.get("/writer/1").await.etag();
    assert_eq!(tag, http_tag, "the same tag over both transports");

    let get = json!({"url": "/writer/1", "headers": {"If-None-Match": tag}});
    let jwr = virtual_request(&mut ws, 2, "get", get).await;
    assert_eq!(jwr["statusCode"], 304, "{jwr}");
    assert!(jwr.get("body").is_none_or(Value::is_null), "{jwr}");

    // The other socket writes, naming the tag: the first (subscribed by
    // its read) hears `updated` carrying the tag a findOne now answers.
    let patch =
        json!({"url": "/writer/1", "data": {"name": "Ann B"}, "headers": {"If-Match": tag}});
    let jwr = virtual_request(&mut other, 1, "patch", patch.clone()).await;
    assert_eq!(jwr["statusCode"], 200, "{jwr}");
    let new_tag = jwr["headers"]["etag"].as_str().unwrap().to_owned();
    assert_eq!(new_tag, t.get("/writer/1").await.etag());
    let heard = loop {
        let f = next_text(&mut ws).await;
        if let Some(rest) = f.strip_prefix("42") {
            let msg: Value = serde_json::from_str(rest).unwrap();
            if msg[0] == "writer" {
                break msg[1].clone();
            }
        }
    };
    assert_eq!(heard["verb"], "updated");
    assert_eq!(heard["etag"], new_tag, "{heard}");

    // The same write again names a version that is gone: 412 with the
    // record as it is now.
    let jwr = virtual_request(&mut other, 2, "patch", patch).await;
    assert_eq!(jwr["statusCode"], 412, "{jwr}");
    assert_eq!(jwr["body"]["name"], "Ann B");
    assert_eq!(jwr["headers"]["etag"], new_tag);

    // A draft requires a tag.
    let put = json!({"url": "/draft/1", "data": {"title": "x"}});
    let jwr = virtual_request(&mut other, 3, "put", put).await;
    assert_eq!(jwr["statusCode"], 428, "{jwr}");
    assert_eq!(jwr["body"]["code"], "E_PRECONDITION_REQUIRED");

    server.abort();
    t.close().await;
}

topsail_tests::each_db!(
    conditional_requests_over_a_socket,
    conditional_requests_over_a_socket
);
