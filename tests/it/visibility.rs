//! Private and read-only attributes: what a client never sees, uses in
//! criteria or sets, over HTTP, over a socket and in published messages;
//! and what app code still reads and writes.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use topsail::{Link, Model, RecordingPublisher, Topsail};
use topsail_tests::{Db, Res, call, fresh_store};

use crate::sockets::{next_text, virtual_request};

/// An account with a password hash no client may see and a role no
/// client may set.
#[derive(Model, Debug, Clone)]
struct Member {
    id: i64,
    #[model(required)]
    name: String,
    #[model(private)]
    password_hash: String,
    #[model(read_only)]
    role: String,
    #[model(collection = Post, via = author)]
    posts: Vec<Link<Post>>,
}

/// A post, populated with its author.
#[derive(Model, Debug, Clone)]
struct Post {
    id: i64,
    #[model(required)]
    title: String,
    #[model(model = Member)]
    author: Option<Link<Member>>,
}

/// The same account, strict: a client that sets a read-only or private
/// attribute is refused.
#[derive(Model, Debug, Clone)]
#[model(strict)]
struct Admin {
    id: i64,
    name: String,
    #[model(private)]
    secret: String,
    #[model(read_only)]
    role: String,
}

struct App {
    app: Topsail,
    router: axum::Router,
    published: RecordingPublisher,
    cleanup: topsail_tests::Cleanup,
}

async fn app(db: Db, realtime: bool) -> App {
    let (store, cleanup) = fresh_store(db).await;
    let published = RecordingPublisher::new();
    let mut b = Topsail::builder()
        .model::<Member>()
        .model::<Post>()
        .model::<Admin>()
        .store(store)
        .publisher(std::sync::Arc::new(published.clone()))
        .create_schema();
    if realtime {
        b = b.realtime(topsail::RealtimeConfig::default());
    }
    let app = b.build().await.unwrap();
    let router = app.serve(app.blueprints().router());
    App {
        app,
        router,
        published,
        cleanup,
    }
}

impl App {
    async fn send(&self, method: Method, uri: &str, body: Option<Value>) -> Res {
        call(&self.router, None, method, uri, body).await
    }

    async fn close(self) {
        let store = self.app.store().clone();
        drop(self.app);
        store.close().await;
        self.cleanup.run().await;
    }
}

/// Every JSON object anywhere in `v` (records, populated records, message
/// payloads) lacks `key`.
fn nowhere(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(m) => !m.contains_key(key) && m.values().all(|x| nowhere(x, key)),
        Value::Array(a) => a.iter().all(|x| nowhere(x, key)),
        _ => true,
    }
}

async fn private_attributes_reach_no_client(db: Db) {
    let t = app(db, false).await;
    let members = t.app.model::<Member>();
    // App code sets and reads both.
    let ann = members
        .create(json!({"name": "Ann", "passwordHash": "$argon2id$secret", "role": "admin"}))
        .await
        .unwrap();
    assert_eq!(
        (ann.password_hash.as_str(), ann.role.as_str()),
        ("$argon2id$secret", "admin")
    );
    let post = t
        .send(
            Method::POST,
            "/post",
            Some(json!({"title": "Hi", "author": ann.id})),
        )
        .await;
    assert_eq!(post.status, StatusCode::OK);
    assert!(
        nowhere(&post.body, "passwordHash"),
        "the create's answer populates the author: {}",
        post.body
    );

    // Answers: findOne, find, a populated author, the populate action.
    for uri in [
        format!("/member/{}", ann.id),
        "/member".to_owned(),
        "/post".to_owned(),
        format!("/post/{}/author", post.body["id"]),
        format!("/member/{}/posts", ann.id),
        "/member?select=name".to_owned(),
        "/member?omit=name".to_owned(),
    ] {
        let r = t.send(Method::GET, &uri, None).await;
        assert_eq!(r.status, StatusCode::OK, "GET {uri}: {}", r.body);
        assert!(nowhere(&r.body, "passwordHash"), "GET {uri}: {}", r.body);
    }
    let one = t
        .send(Method::GET, &format!("/member/{}", ann.id), None)
        .await;
    assert_eq!(one.body["role"], "admin", "read-only is readable");

    // Criteria: filter, sort, select, in the where of a populate: 400 as an
    // unknown attribute, so no oracle.
    for uri in [
        "/member?passwordHash[startsWith]=%24".to_owned(),
        "/member?passwordHash=x".to_owned(),
        format!(
            "/member?where={}",
            topsail_tests::enc(r#"{"or":[{"name":"x"},{"passwordHash":{"contains":"a"}}]}"#)
        ),
        "/member?sort=passwordHash%20ASC".to_owned(),
        "/member?select=name,passwordHash".to_owned(),
    ] {
        let r = t.send(Method::GET, &uri, None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "E_INVALID_CRITERIA"),
            "GET {uri}: {}",
            r.body
        );
    }

    // Setting: dropped like an unknown attribute; the stored values stay.
    let bo = t
        .send(
            Method::POST,
            "/member",
            Some(json!({"name": "Bo", "passwordHash": "mine", "role": "admin"})),
        )
        .await;
    assert_eq!(bo.status, StatusCode::OK, "{}", bo.body);
    assert_eq!(
        bo.body["role"], "",
        "a client cannot set a read-only attribute"
    );
    let bo_id = bo.body["id"].as_i64().unwrap();
    let r = t
        .send(
            Method::PATCH,
            &format!("/member/{}", ann.id),
            Some(json!({"passwordHash": "x", "role": "guest", "name": "Ann B"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(nowhere(&r.body, "passwordHash"));
    let stored = members.find_one(ann.id).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.name.as_str(),
            stored.password_hash.as_str(),
            stored.role.as_str()
        ),
        ("Ann B", "$argon2id$secret", "admin")
    );
    let stored = members.find_one(bo_id).await.unwrap().unwrap();
    assert_eq!(
        (stored.password_hash.as_str(), stored.role.as_str()),
        ("", "")
    );

    // A strict model refuses them.
    for body in [
        json!({"name": "C", "role": "admin"}),
        json!({"name": "C", "secret": "s"}),
    ] {
        let r = t.send(Method::POST, "/admin", Some(body.clone())).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "E_INVALID_NEW_RECORD"),
            "{body}"
        );
    }
    let admin = t
        .app
        .model::<Admin>()
        .create(json!({"name": "Root", "secret": "s", "role": "root"}))
        .await
        .unwrap();
    let r = t
        .send(
            Method::PATCH,
            &format!("/admin/{}", admin.id),
            Some(json!({"role": "guest"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "E_INVALID_VALUES_TO_SET")
    );

    // Published messages: created, updated (data and previous, with the
    // populated posts), destroyed (previous), whoever wrote.
    members
        .update(ann.id, json!({"passwordHash": "$argon2id$new"}))
        .await
        .unwrap();
    t.send(Method::DELETE, &format!("/member/{bo_id}"), None)
        .await;
    members.destroy(ann.id).await.unwrap();
    let effects = t.published.take();
    let payloads: Vec<Value> = effects
        .iter()
        .filter_map(|e| match e {
            topsail::core::Effect::Broadcast { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect();
    let verbs: Vec<&str> = payloads.iter().filter_map(|p| p["verb"].as_str()).collect();
    for verb in ["created", "updated", "destroyed"] {
        assert!(verbs.contains(&verb), "{verb} in {verbs:?}");
    }
    for p in &payloads {
        assert!(nowhere(p, "passwordHash"), "published: {p}");
        assert!(nowhere(p, "secret"), "published: {p}");
    }
    t.close().await;
}

topsail_tests::each_db!(
    private_attributes_reach_no_client,
    private_attributes_reach_no_client
);

/// Over a real socket: answers and the messages it hears carry no private
/// attribute; criteria naming one are refused.
#[tokio::test]
async fn private_attributes_reach_no_socket() {
    let t = app(Db::Sqlite, true).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = t.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let members = t.app.model::<Member>();
    let ann = members
        .create(json!({"name": "Ann", "passwordHash": "h"}))
        .await
        .unwrap();

    let mut ws = crate::client::connected(addr).await;

    let jwr = virtual_request(&mut ws, 1, "get", json!({"url": "/member"})).await;
    assert_eq!(jwr["statusCode"], 200);
    assert!(nowhere(&jwr["body"], "passwordHash"), "{jwr}");
    let jwr = virtual_request(
        &mut ws,
        2,
        "get",
        json!({"url": "/member", "data": {"where": {"passwordHash": {"startsWith": "h"}}}}),
    )
    .await;
    assert_eq!(
        (jwr["statusCode"].clone(), jwr["body"]["code"].clone()),
        (json!(400), json!("E_INVALID_CRITERIA"))
    );
    let jwr = virtual_request(
        &mut ws,
        3,
        "post",
        json!({"url": "/member", "data": {"name": "Bo", "passwordHash": "x", "role": "admin"}}),
    )
    .await;
    assert_eq!(jwr["statusCode"], 200);
    assert!(nowhere(&jwr["body"], "passwordHash"));
    assert_eq!(jwr["body"]["role"], "");

    // Subscribed to Ann by the find, the socket hears her update (made by
    // app code, private attribute included) without it.
    members
        .update(ann.id, json!({"name": "Ann B", "passwordHash": "h2"}))
        .await
        .unwrap();
    let heard = loop {
        let f = next_text(&mut ws).await;
        if f.starts_with("42[\"member\"") {
            break f;
        }
    };
    let heard: Value = serde_json::from_str(&heard[2..]).unwrap();
    assert_eq!(heard[1]["verb"], "updated");
    assert_eq!(heard[1]["data"]["name"], "Ann B");
    assert!(nowhere(&heard, "passwordHash"), "{heard}");
    server.abort();
    t.app.close_sockets().await;
    t.close().await;
}
