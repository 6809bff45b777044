//! Primary keys other than auto-increment integers, and via-less
//! collections, on both databases.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use topsail::{Link, Model, RecordingPublisher, Topsail};
use topsail_tests::{Db, fresh_store};

/// Keyed by a string the client chooses, with a via-less self-collection.
#[derive(Model, Debug)]
struct Person {
    #[model(primary_key)]
    handle: String,
    #[model(required)]
    name: String,
    #[model(collection = Person)]
    friends: Vec<Link<Person>>,
    #[model(collection = Thing, via = owner)]
    things: Vec<Link<Thing>>,
}

/// Keyed by an integer the client chooses.
#[derive(Model, Debug)]
struct Thing {
    #[model(auto_increment = false)]
    id: i64,
    #[model(model = Person)]
    owner: Option<Link<Person>>,
}

async fn run(db: Db) {
    let published = RecordingPublisher::new();
    let (store, cleanup) = fresh_store(db).await;
    let app = Topsail::builder()
        .model::<Person>()
        .model::<Thing>()
        .store(store.clone())
        .publisher(Arc::new(published.clone()))
        .create_schema()
        .build()
        .await
        .unwrap();
    let router = app.blueprints().router();
    let send = |m: Method, uri: &str, body: Option<Value>| {
        let router = router.clone();
        let uri = uri.to_owned();
        async move {
            let r = topsail_tests::call(&router, None, m, &uri, body).await;
            (r.status, r.body)
        }
    };
    let (s, ann) = send(
        Method::POST,
        "/person",
        Some(json!({"handle": "ann", "name": "Ann"})),
    )
    .await;
    assert_eq!((s, &ann["handle"]), (StatusCode::OK, &json!("ann")));
    let (s, e) = send(Method::POST, "/person", Some(json!({"name": "No Key"}))).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("E_INVALID_NEW_RECORD")),
        "a string key is required"
    );
    let (s, e) = send(
        Method::POST,
        "/person",
        Some(json!({"handle": "ann", "name": "Dup"})),
    )
    .await;
    assert_eq!(
        (s, &e["code"], &e["attrNames"]),
        (
            StatusCode::BAD_REQUEST,
            &json!("E_UNIQUE"),
            &json!(["handle"])
        ),
        "keys are unique"
    );
    send(
        Method::POST,
        "/person",
        Some(json!({"handle": "bob", "name": "Bob"})),
    )
    .await;
    let (s, t) = send(
        Method::POST,
        "/thing",
        Some(json!({"id": 42, "owner": "ann"})),
    )
    .await;
    assert_eq!(
        (s, &t["id"], &t["owner"]["handle"]),
        (StatusCode::OK, &json!(42), &json!("ann"))
    );
    assert_eq!(
        send(Method::GET, "/person/ann", None).await.1["things"][0]["id"],
        42
    );
    assert_eq!(
        send(
            Method::PATCH,
            "/person/bob",
            Some(json!({"name": "Robert"}))
        )
        .await
        .1["name"],
        "Robert"
    );

    // A via-less collection: only the parent side exists.
    let (s, p) = send(Method::PUT, "/person/ann/friends/bob", None).await;
    assert_eq!(
        (s, p["friends"][0]["handle"].as_str()),
        (StatusCode::OK, Some("bob"))
    );
    assert_eq!(
        send(Method::GET, "/person/bob", None).await.1["friends"],
        json!([]),
        "no inverse"
    );
    assert_eq!(
        send(Method::GET, "/person/ann/friends", None).await.1[0]["name"],
        "Robert"
    );
    published.take();
    send(Method::DELETE, "/person/ann/friends/bob", None).await;
    let b = published.take_broadcasts();
    assert_eq!(b.len(), 1, "via-less: only the parent-side message: {b:?}");
    assert_eq!(b[0].0, "sails_model_person_ann:person");
    assert_eq!(
        b[0].2,
        json!({"id": "ann", "verb": "removedFrom", "attribute": "friends", "removedId": "bob"})
    );
    let (s, _) = send(
        Method::PUT,
        "/person/ann/friends",
        Some(json!(["bob", "nobody"])),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        send(Method::GET, "/person/ann", None).await.1["friends"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let typed = app
        .model::<Person>()
        .find_one("ann")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(typed.friends.len(), 1);
    assert_eq!(typed.things[0].id(), Some(42.into()));
    let (s, _) = send(Method::DELETE, "/person/ann", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        send(Method::GET, "/thing/42", None).await.1["owner"],
        Value::Null,
        "its things are unlinked"
    );
    // A key chosen by the client may already have children (rows left
    // pointing at it): a new record is populated with them.
    let (s, _) = send(
        Method::POST,
        "/thing",
        Some(json!({"id": 43, "owner": "cy"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, cy) = send(
        Method::POST,
        "/person",
        Some(json!({"handle": "cy", "name": "Cy"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cy["things"], json!([{"id": 43, "owner": "cy"}]), "{cy}");
    assert_eq!(cy["friends"], json!([]));
    store.close().await;
    cleanup.run().await;
}

topsail_tests::each_db!(string_keys_client_keys_and_via_less_collections, run);
