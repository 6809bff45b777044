//! The effects every action hands the publisher, checked against Sails'
//! resourceful pub-sub:
//! rooms, payloads, order, who is subscribed, who is left out.

use std::collections::BTreeSet;
use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};
use topsail::{Actor, Effect};
use topsail_tests::{Zoo, both};

fn broadcasts(effects: &[Effect]) -> Vec<(String, &'static str, Value)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast {
                room,
                event,
                payload,
                ..
            } => Some((room.clone(), *event, payload.clone())),
            _ => None,
        })
        .collect()
}

fn joined(effects: &[Effect], socket: &str) -> BTreeSet<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Join {
                socket: s, rooms, ..
            } if &**s == socket => Some(rooms.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn omits(effects: &[Effect]) -> BTreeSet<Option<String>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast { omit, .. } => Some(omit.as_ref().map(|s| s.to_string())),
            _ => None,
        })
        .collect()
}

fn socket(id: &str) -> Option<Actor> {
    Some(Actor::socket(id))
}

/// The `(event, payload-without-timestamps)` of each broadcast, for
/// comparing sequences.
fn shapes(effects: &[Effect]) -> Vec<(String, &'static str, Value)> {
    broadcasts(effects)
        .into_iter()
        .map(|(room, event, mut p)| {
            for key in ["data", "previous"] {
                if let Some(Value::Object(o)) = p.get_mut(key) {
                    o.remove("createdAt");
                    o.remove("updatedAt");
                }
            }
            (room, event, p)
        })
        .collect()
}

async fn settle(z: &Zoo) {
    z.published.take();
}

both! {
    async fn create_publishes_reverse_messages_then_created(z) {
        let u = z.user("Ann").await;
        let t = z.tag("good").await;
        settle(&z).await;
        let pet = z.post("/pet", json!({"name": "Rex", "owner": u, "tags": [t]})).await;
        let p = pet["id"].as_i64().unwrap();
        let effects = z.published.take();
        assert_eq!(
            effects.iter().find(|e| matches!(e, Effect::AddMembers { .. })),
            Some(&Effect::AddMembers { source: "sails_model_create_pet".into(), dest: format!("sails_model_pet_{p}:pet"), guard: None }),
            "_introduce: watchers get the new record"
        );
        let b = broadcasts(&effects);
        assert_eq!(b.len(), 3, "{b:?}");
        assert_eq!(b[0], (format!("sails_model_tag_{t}:tag"), "tag", json!({"id": t, "verb": "addedTo", "attribute": "pets", "addedId": p})));
        assert_eq!(b[1], (format!("sails_model_user_{u}:user"), "user", json!({"id": u, "verb": "addedTo", "attribute": "pets", "addedId": p})));
        assert_eq!(b[2], ("sails_model_create_pet".to_owned(), "pet", json!({"verb": "created", "data": pet, "id": p})), "created carries the populated record");
        assert_eq!(omits(&effects), BTreeSet::from([None]), "an HTTP change reaches every subscriber");
    }
}

both! {
    async fn create_that_takes_children_tells_the_old_parent(z) {
        let ann = z.user("Ann").await;
        let p = z.pet("Rex", json!({"owner": ann})).await;
        settle(&z).await;
        let bob = z.post("/user", json!({"name": "Bob", "email": "bob@example.com", "pets": [p]})).await["id"].as_i64().unwrap();
        let s = shapes(&z.published.take());
        assert_eq!(s.iter().map(|(_, e, p)| (*e, p["verb"].as_str().unwrap().to_owned())).collect::<Vec<_>>(), [("pet", "updated".into()), ("user", "created".into()), ("user", "removedFrom".into())]);
        assert_eq!(s[0], (format!("sails_model_pet_{p}:pet"), "pet", json!({"verb": "updated", "data": {"owner": bob}, "id": p})));
        assert_eq!(s[2], (format!("sails_model_user_{ann}:user"), "user", json!({"id": ann, "verb": "removedFrom", "attribute": "pets", "removedId": p})));
    }
}

both! {
    async fn update_of_a_to_one_moves_between_parents(z) {
        let ann = z.user("Ann").await;
        let bob = z.user("Bob").await;
        let p = z.pet("Rex", json!({"owner": ann})).await;
        settle(&z).await;
        z.send(Method::PATCH, &format!("/pet/{p}"), Some(json!({"owner": bob.to_string(), "name": "Max"}))).await;
        let effects = z.published.take();
        let b = broadcasts(&effects);
        assert_eq!(b.len(), 3, "{b:?}");
        assert_eq!(b[0].2, json!({"id": ann, "verb": "removedFrom", "attribute": "pets", "removedId": p}));
        assert_eq!(b[1].2, json!({"id": bob, "verb": "addedTo", "attribute": "pets", "addedId": p}));
        let (room, event, upd) = &b[2];
        assert_eq!((room.as_str(), *event), (format!("sails_model_pet_{p}:pet").as_str(), "pet"));
        let data = upd["data"].as_object().unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["owner", "name", "id", "updatedAt"], "client keys, then pk, then updatedAt");
        assert_eq!((&data["owner"], &data["name"], &data["id"]), (&json!(bob), &json!("Max"), &json!(p)), "values coerced");
        assert_eq!(upd["previous"]["owner"]["id"], ann, "previous is the populated record before");
        assert_eq!(upd["previous"]["name"], "Rex");
    }
}

both! {
    async fn update_with_a_collection_sends_only_updated(z) {
        let u = z.user("Ann").await;
        z.pet("Rex", json!({"owner": u})).await;
        settle(&z).await;
        z.send(Method::PATCH, &format!("/user/{u}"), Some(json!({"pets": []}))).await;
        let b = broadcasts(&z.published.take());
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].2["verb"], "updated");
        assert_eq!(b[0].2["data"].get("pets"), None, "collections are not in updated.data");
    }
}

both! {
    async fn destroy_publishes_destroyed_then_retires_then_reverse(z) {
        let u = z.user("Ann").await;
        let p = z.pet("Rex", json!({"owner": u})).await;
        let t = z.tag("good").await;
        z.send(Method::PUT, &format!("/pet/{p}/tags/{t}"), None).await;
        settle(&z).await;
        z.send(Method::DELETE, &format!("/pet/{p}"), None).await;
        let effects = z.published.take();
        let room = format!("sails_model_pet_{p}:pet");
        let b = broadcasts(&effects);
        assert_eq!(b[0].0, room);
        assert_eq!((b[0].2["verb"].as_str(), &b[0].2["id"]), (Some("destroyed"), &json!(p)));
        assert_eq!(b[0].2["previous"]["tags"][0]["id"], t);
        let retire = effects.iter().position(|e| matches!(e, Effect::RemoveMembers { dest, .. } if *dest == room)).expect("_retire");
        let destroyed = effects.iter().position(|e| matches!(e, Effect::Broadcast { payload, .. } if payload["verb"] == "destroyed")).unwrap();
        assert!(destroyed < retire, "destroyed goes out before the watchers leave");
        assert_eq!(b[1], (format!("sails_model_user_{u}:user"), "user", json!({"id": u, "verb": "removedFrom", "attribute": "pets", "removedId": p})));
        assert_eq!(b[2], (format!("sails_model_tag_{t}:tag"), "tag", json!({"id": t, "verb": "removedFrom", "attribute": "pets", "removedId": p})));
        assert_eq!(b.len(), 3);

        let p2 = z.pet("Ace", json!({"owner": u})).await;
        settle(&z).await;
        z.send(Method::DELETE, &format!("/user/{u}"), None).await;
        let b = broadcasts(&z.published.take());
        assert_eq!(b[0].2["verb"], "destroyed");
        assert_eq!(b[1], (format!("sails_model_pet_{p2}:pet"), "pet", json!({"verb": "updated", "data": {"owner": null}, "id": p2})));
    }
}

both! {
    async fn add_remove_replace_fan_out(z) {
        let ann = z.user("Ann").await;
        let bob = z.user("Bob").await;
        let p = z.pet("Rex", json!({"owner": ann})).await;
        let t = z.tag("good").await;
        settle(&z).await;
        z.send(Method::PUT, &format!("/user/{bob}/pets/{p}"), None).await;
        let b = broadcasts(&z.published.take());
        assert_eq!(b.iter().map(|x| x.2.clone()).collect::<Vec<_>>(), [
            json!({"id": bob, "verb": "addedTo", "attribute": "pets", "addedId": p}),
            json!({"verb": "updated", "data": {"owner": bob}, "id": p}),
            json!({"id": ann, "verb": "removedFrom", "attribute": "pets", "removedId": p}),
        ]);
        z.send(Method::PUT, &format!("/pet/{p}/tags/{t}"), None).await;
        let b = broadcasts(&z.published.take());
        assert_eq!(b.iter().map(|x| (x.0.clone(), x.2.clone())).collect::<Vec<_>>(), [
            (format!("sails_model_pet_{p}:pet"), json!({"id": p, "verb": "addedTo", "attribute": "tags", "addedId": t})),
            (format!("sails_model_tag_{t}:tag"), json!({"id": t, "verb": "addedTo", "attribute": "pets", "addedId": p})),
        ]);
        z.send(Method::DELETE, &format!("/user/{bob}/pets/{p}"), None).await;
        let b = broadcasts(&z.published.take());
        assert_eq!(b.iter().map(|x| x.2.clone()).collect::<Vec<_>>(), [
            json!({"id": bob, "verb": "removedFrom", "attribute": "pets", "removedId": p}),
            json!({"verb": "updated", "data": {"owner": null}, "id": p}),
        ]);
        let t2 = z.tag("t2").await;
        settle(&z).await;
        z.send(Method::PUT, &format!("/pet/{p}/tags"), Some(json!([t2]))).await;
        let b = broadcasts(&z.published.take());
        assert_eq!(b.iter().map(|x| x.2.clone()).collect::<Vec<_>>(), [
            json!({"id": p, "verb": "addedTo", "attribute": "tags", "addedId": t2}),
            json!({"id": t2, "verb": "addedTo", "attribute": "pets", "addedId": p}),
            json!({"id": p, "verb": "removedFrom", "attribute": "tags", "removedId": t}),
            json!({"id": t, "verb": "removedFrom", "attribute": "pets", "removedId": p}),
        ]);
    }
}

both! {
    async fn socket_reads_subscribe_and_watch(z) {
        let u = z.user("Ann").await;
        let p = z.pet("Rex", json!({"owner": u})).await;
        let t = z.tag("good").await;
        z.send(Method::PUT, &format!("/pet/{p}/tags/{t}"), None).await;
        settle(&z).await;
        z.send_as(socket("A"), Method::GET, "/pet", None).await;
        let rooms = joined(&z.published.take(), "A");
        let expect: BTreeSet<String> = [
            format!("sails_model_pet_{p}:pet"),
            "sails_model_create_pet".into(),
            "sails_model_create_user".into(),
            "sails_model_create_tag".into(),
            format!("sails_model_user_{u}:user"),
            format!("sails_model_tag_{t}:tag"),
        ]
        .into();
        assert_eq!(rooms, expect);
        z.send_as(socket("B"), Method::GET, "/tag?label=none", None).await;
        assert_eq!(joined(&z.published.take(), "B"), BTreeSet::from(["sails_model_create_tag".to_owned()]), "an empty find still watches");
        z.send_as(socket("C"), Method::GET, &format!("/user/{u}"), None).await;
        let rooms = joined(&z.published.take(), "C");
        assert!(rooms.contains(&format!("sails_model_user_{u}:user")) && rooms.contains(&format!("sails_model_pet_{p}:pet")));
        assert!(rooms.contains("sails_model_create_pet") && !rooms.contains("sails_model_create_user"), "findOne watches associated models, not its own");
        z.send(Method::GET, "/pet", None).await;
        assert!(z.published.take().is_empty(), "HTTP reads subscribe nobody");
    }
}

both! {
    async fn the_requesting_socket_is_left_out_of_everything_it_causes(z) {
        let u = z.user("Ann").await;
        let t = z.tag("good").await;
        settle(&z).await;
        let p = z.send_as(socket("A"), Method::POST, "/pet", Some(json!({"name": "Rex", "owner": u, "tags": [t]}))).await.body["id"].as_i64().unwrap();
        let effects = z.published.take();
        assert_eq!(omits(&effects), BTreeSet::from([Some("A".to_owned())]), "primary and reverse messages omit the requester");
        assert_eq!(joined(&effects, "A"), BTreeSet::from([format!("sails_model_pet_{p}:pet")]), "create subscribes the requester, not to the class room");
        z.send_as(socket("A"), Method::PATCH, &format!("/pet/{p}"), Some(json!({"name": "Max"}))).await;
        assert_eq!(omits(&z.published.take()), BTreeSet::from([Some("A".to_owned())]));
        z.send_as(socket("A"), Method::DELETE, &format!("/pet/{p}"), None).await;
        let effects = z.published.take();
        assert_eq!(effects[0], Effect::Leave { socket: "A".into(), rooms: vec![format!("sails_model_pet_{p}:pet")] }, "destroy unsubscribes first");
        assert_eq!(omits(&effects), BTreeSet::from([Some("A".to_owned())]));
    }
}

both! {
    async fn a_failed_change_publishes_nothing(z) {
        z.user("Ann").await;
        settle(&z).await;
        let r = z.send_as(socket("A"), Method::POST, "/user", Some(json!({"name": "X", "email": "ann@example.com"}))).await;
        assert_eq!(r.code(), "E_UNIQUE");
        let r = z.send_as(socket("A"), Method::POST, "/user", Some(json!({"name": "X"}))).await;
        assert_eq!(r.code(), "E_INVALID_NEW_RECORD");
        assert_eq!(z.send_as(socket("A"), Method::DELETE, "/user/999", None).await.status, http::StatusCode::NOT_FOUND);
        assert!(z.published.take().is_empty());
    }
}

#[tokio::test]
async fn mirror_sends_the_requester_its_own_messages() {
    let published = topsail::RecordingPublisher::new();
    let (store, cleanup) = topsail_tests::fresh_store(topsail_tests::Db::Sqlite).await;
    let app = example_zoo::builder()
        .store(store.clone())
        .publisher(Arc::new(published.clone()))
        .config(topsail::EngineConfig {
            mirror: true,
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    app.model::<example_zoo::User>()
        .actor(Actor::socket("A"))
        .create(json!({"name": "A", "email": "a@example.com"}))
        .await
        .unwrap();
    assert_eq!(omits(&published.take()), BTreeSet::from([None]));
    store.close().await;
    cleanup.run().await;
}

#[tokio::test]
async fn an_app_publisher_hears_every_change_beside_the_sockets() {
    let published = topsail::RecordingPublisher::new();
    let (store, cleanup) = topsail_tests::fresh_store(topsail_tests::Db::Sqlite).await;
    let app = example_zoo::builder()
        .store(store.clone())
        .realtime(topsail::RealtimeConfig::default())
        .publisher(Arc::new(published.clone()))
        .build()
        .await
        .unwrap();
    assert!(app.sockets().is_some(), "realtime is on");
    app.model::<example_zoo::User>()
        .create(json!({"name": "A", "email": "a@example.com"}))
        .await
        .unwrap();
    let sent = broadcasts(&published.take());
    assert_eq!(
        sent.len(),
        1,
        "the app's publisher is not replaced: {sent:?}"
    );
    assert_eq!(sent[0].0, "sails_model_create_user");
    assert_eq!(sent[0].2["verb"], "created");
    store.close().await;
    cleanup.run().await;
}

/// A store whose inserts take 300 ms more once the row is written: a
/// window in which the client can go away.
struct SlowInserts(topsail::SqlStore);

struct SlowConn(Box<dyn topsail::core::store::Conn>);

#[topsail::async_trait]
impl topsail::core::store::Conn for SlowConn {
    async fn fetch(
        &mut self,
        q: &topsail::core::query::Select,
    ) -> Result<Vec<topsail::core::store::Row>, topsail::core::StoreError> {
        self.0.fetch(q).await
    }
    async fn insert(
        &mut self,
        q: &topsail::core::query::Insert,
    ) -> Result<Option<topsail::core::store::Row>, topsail::core::StoreError> {
        let row = self.0.insert(q).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        row
    }
    async fn update(
        &mut self,
        q: &topsail::core::query::Update,
    ) -> Result<u64, topsail::core::StoreError> {
        self.0.update(q).await
    }
    async fn delete(
        &mut self,
        q: &topsail::core::query::Delete,
    ) -> Result<u64, topsail::core::StoreError> {
        self.0.delete(q).await
    }
    async fn count(
        &mut self,
        q: &topsail::core::query::Select,
    ) -> Result<u64, topsail::core::StoreError> {
        self.0.count(q).await
    }
}

#[topsail::async_trait]
impl topsail::core::store::Store for SlowInserts {
    fn dialect(&self) -> topsail::core::store::Dialect {
        self.0.dialect()
    }
    async fn conn(&self) -> Result<Box<dyn topsail::core::store::Conn>, topsail::core::StoreError> {
        Ok(Box::new(SlowConn(self.0.conn().await?)))
    }
    async fn begin(&self) -> Result<Box<dyn topsail::core::store::Tx>, topsail::core::StoreError> {
        self.0.begin().await
    }
}

/// An engine over `store` whose inserts are slow, and what it publishes.
fn slow_engine(store: &topsail::SqlStore) -> (topsail::Engine, topsail::RecordingPublisher) {
    let published = topsail::RecordingPublisher::new();
    let engine = topsail::Engine::new(
        Arc::new(SlowInserts(store.clone())),
        Arc::new(published.clone()),
        topsail::EngineConfig::default(),
    );
    (engine, published)
}

#[tokio::test]
async fn a_write_whose_client_went_away_still_publishes() {
    use topsail::core::store::Store;
    let (store, cleanup) = topsail_tests::fresh_store(topsail_tests::Db::Sqlite).await;
    let app = example_zoo::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let (engine, published) = slow_engine(&store);
    let router = topsail::Blueprints::new(engine, app.registry().clone()).router();
    // The client gives up while the insert is written but not yet answered
    // (hyper drops the request's future when its connection closes).
    let request = topsail_tests::call(
        &router,
        None,
        Method::POST,
        "/user",
        Some(json!({"name": "Ann", "email": "ann@example.com"})),
    );
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), request)
            .await
            .is_err(),
        "the request was dropped before it ended"
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let sent = broadcasts(&published.take());
    assert_eq!(
        sent.len(),
        1,
        "the committed create was published: {sent:?}"
    );
    assert_eq!(sent[0].2["verb"], "created");
    assert_eq!(sent[0].2["data"]["name"], "Ann");
    let mut conn = store.conn().await.unwrap();
    let sel = topsail::core::query::Select::new("user".into(), Vec::new());
    assert_eq!(conn.count(&sel).await.unwrap(), 1, "and it is stored");
    drop(conn);
    store.close().await;
    cleanup.run().await;
}

/// The typed API in an app handler: when the handler is dropped while its
/// create is being written, the create still commits and publishes.
#[tokio::test]
async fn a_typed_write_whose_caller_was_dropped_still_publishes() {
    let (store, cleanup) = topsail_tests::fresh_store(topsail_tests::Db::Sqlite).await;
    let app = example_zoo::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let (engine, published) = slow_engine(&store);
    let users = topsail::Models::<example_zoo::User>::new(&engine);
    let create = users.create(json!({"name": "Ann", "email": "ann@example.com"}));
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), create)
            .await
            .is_err(),
        "the caller was dropped before the create ended"
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let sent = broadcasts(&published.take());
    assert_eq!(
        sent.len(),
        1,
        "the committed create was published: {sent:?}"
    );
    assert_eq!(sent[0].2["data"]["name"], "Ann");
    assert!(engine.writes().is_empty(), "and it is no longer counted");
    drop(app);
    store.close().await;
    cleanup.run().await;
}

/// A publisher that takes its time over a batch that renames a record to
/// its name (300 ms before it records it): the window in which a later change
/// to the same record, committed after it, could be taken first.
struct SlowOver(&'static str, topsail::RecordingPublisher);

#[topsail::async_trait]
impl topsail::Publisher for SlowOver {
    async fn publish(&self, effects: Vec<Effect>) {
        let slow = effects.iter().any(
            |e| matches!(e, Effect::Broadcast { payload, .. } if payload["data"]["name"] == self.0),
        );
        if slow {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        self.1.publish(effects).await;
    }
}

/// Renames the pet at `path` "first" (whose messages [`SlowOver`] holds),
/// then, once that committed, makes request `then` of it; returns the verbs
/// and names its subscribers heard, in order.
async fn while_first_is_held(
    router: &axum::Router,
    path: &str,
    then: (Method, Option<Value>),
    published: &topsail::RecordingPublisher,
) -> Vec<String> {
    let first = {
        let (router, path) = (router.clone(), path.to_owned());
        let rename = Some(json!({"name": "first"}));
        tokio::spawn(async move {
            topsail_tests::call(&router, None, Method::PATCH, &path, rename).await
        })
    };
    // The first has committed, and its messages are being taken.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (method, body) = then;
    let second = topsail_tests::call(router, None, method, path, body).await;
    assert_eq!(second.status, http::StatusCode::OK);
    assert_eq!(first.await.unwrap().status, http::StatusCode::OK);
    broadcasts(&published.take())
        .into_iter()
        .filter(|(room, ..)| room.starts_with("sails_model_pet_"))
        .map(|(_, _, p)| format!("{} {}", p["verb"], p["data"]["name"]))
        .collect()
}

/// Two updates of one record, the second committed while the first's
/// messages are still being taken: subscribers hear them in commit order,
/// and are left with the record as stored. Likewise a destroy after an
/// update.
async fn changes_to_one_record_are_published_in_commit_order(db: topsail_tests::Db) {
    let (store, cleanup) = topsail_tests::fresh_store(db).await;
    let app = example_zoo::builder()
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let published = topsail::RecordingPublisher::new();
    let engine = topsail::Engine::new(
        Arc::new(store.clone()),
        Arc::new(SlowOver("first", published.clone())),
        topsail::EngineConfig::default(),
    );
    let router = topsail::Blueprints::new(engine, app.registry().clone()).router();
    let pet = topsail_tests::call(
        &router,
        None,
        Method::POST,
        "/pet",
        Some(json!({"name": "zero"})),
    )
    .await;
    let path = format!("/pet/{}", pet.body["id"]);

    let then = (Method::PATCH, Some(json!({"name": "second"})));
    let heard = while_first_is_held(&router, &path, then, &published).await;
    assert_eq!(
        heard,
        [r#""updated" "first""#, r#""updated" "second""#],
        "in commit order"
    );
    let heard = while_first_is_held(&router, &path, (Method::DELETE, None), &published).await;
    assert_eq!(
        heard,
        [r#""updated" "first""#, r#""destroyed" null"#],
        "in commit order"
    );
    store.close().await;
    cleanup.run().await;
}

topsail_tests::each_db!(
    changes_to_one_record_are_published_in_commit_order_on,
    changes_to_one_record_are_published_in_commit_order
);
