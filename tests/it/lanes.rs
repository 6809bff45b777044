//! The delivery lanes: a socket receives every message in publish order
//! (read from the sequence numbers, which the publisher task gives in that
//! order), whether its share of a message went through a lane or was
//! handed out directly, and nothing is lost.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use topsail::RealtimeConfig;
use topsail_tests::{Db, fresh_store};

use crate::sockets::{Ws, connected, virtual_request};

/// Watchers of `pet`: enough that each lane's share of a `created` is
/// queued as a job rather than handed out directly.
const WATCHERS: usize = 160;
const CHANGES: usize = 40;

/// The zoo on a fresh SQLite file with two delivery lanes, served.
struct Served {
    app: topsail::Topsail,
    store: topsail::SqlStore,
    cleanup: topsail_tests::Cleanup,
    addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn with_two_lanes() -> Self {
        let (store, cleanup) = fresh_store(Db::Sqlite).await;
        let app = example_zoo::builder()
            .store(store.clone())
            .realtime(RealtimeConfig {
                lanes: 2,
                ..RealtimeConfig::default()
            })
            .build()
            .await
            .unwrap();
        let router = app.serve(app.blueprints().router());
        let (addr, server) = topsail_tests::serve_on_free_port(router).await;
        Served {
            app,
            store,
            cleanup,
            addr,
            server,
        }
    }

    async fn stop(self) {
        self.server.abort();
        self.app.close_sockets().await;
        self.store.close().await;
        self.cleanup.run().await;
    }
}

/// Socket `i` got its messages (sequence numbers) in publish order.
fn assert_in_publish_order(i: usize, got: &[(String, u64)]) {
    assert!(
        got.windows(2).all(|w| w[0].1 < w[1].1),
        "socket {i} got its messages out of publish order: {got:?}"
    );
}

/// Reads `ws` until it has `pets` `created` and `users` `updated`
/// messages; returns their sequence numbers in the order they came.
async fn numbers_received(mut ws: Ws, pets: usize, users: usize) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    let (mut p, mut u) = (0, 0);
    while p < pets || u < users {
        let wait = std::time::Duration::from_secs(10);
        let frame = match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                ws.send(Message::text("3")).await.unwrap();
                continue;
            }
            Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => {
                panic!("{other:?}: {p} of {pets} pets and {u} of {users} updates came: {got:?}")
            }
        };
        let Some(body) = frame.strip_prefix("42") else {
            continue;
        };
        let args: Vec<Value> = serde_json::from_str(body).unwrap();
        let (model, verb) = (args[0].as_str().unwrap(), args[1]["verb"].as_str().unwrap());
        match (model, verb) {
            ("pet", "created") => p += 1,
            ("user", "updated") => u += 1,
            _ => continue,
        }
        let seq = args[2]
            .as_u64()
            .expect("a sequence number after the payload");
        got.push((format!("{model} {verb}"), seq));
    }
    got
}

/// Creates of pets (a room of every watcher) and updates of a user (a room
/// of one watcher) published at the same time from two tasks: each watcher
/// gets every create, and the one that also follows the user gets both
/// kinds interleaved exactly in publish order. The user's one-socket
/// message is small enough to be handed out directly when its lane is
/// idle. Two SQLite commits apart, a lane has usually handed out its
/// `created` already, so this test does not always catch a direct hand-out
/// that overtakes a queued one; the next test, without a database between
/// messages, does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_gets_its_messages_in_publish_order_through_the_lanes() {
    let served = Served::with_two_lanes().await;
    let (app, addr) = (&served.app, served.addr);
    let user = app
        .model::<example_zoo::User>()
        .create(json!({"name": "Ann", "email": "ann@example.com"}))
        .await
        .unwrap();

    let mut watchers = Vec::new();
    for i in 0..WATCHERS {
        let mut ws = connected(addr).await;
        let watched = virtual_request(&mut ws, 1, "get", json!({"url": "/pet?limit=1"})).await;
        assert_eq!(watched["statusCode"], 200);
        if i == 0 {
            let url = format!("/user/{}", user.id);
            let read = virtual_request(&mut ws, 2, "get", json!({ "url": url })).await;
            assert_eq!(read["statusCode"], 200);
        }
        watchers.push(ws);
    }
    let readers: Vec<_> = watchers
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let users = if i == 0 { CHANGES } else { 0 };
            tokio::spawn(numbers_received(ws, CHANGES, users))
        })
        .collect();

    let (pets, users) = (
        app.model::<example_zoo::Pet>(),
        app.model::<example_zoo::User>(),
    );
    let creating = async {
        for i in 0..CHANGES {
            let name = format!("pet {i}");
            pets.create(json!({ "name": name })).await.unwrap();
        }
    };
    let updating = renamed(&users, user.id, "Ann", CHANGES);
    tokio::join!(creating, updating);

    every_watcher_got(readers, CHANGES, CHANGES).await;
    served.stop().await;
}

/// Renames user `id` `n` times (`{prefix} 0`, `{prefix} 1`, ...).
async fn renamed(users: &topsail::Models<'_, example_zoo::User>, id: i64, prefix: &str, n: usize) {
    for i in 0..n {
        let name = format!("{prefix} {i}");
        users.update(id, json!({ "name": name })).await.unwrap();
    }
}

/// Every watcher got `pets` creates, and the first `users` updates too,
/// each once and in publish order.
async fn every_watcher_got(
    readers: Vec<tokio::task::JoinHandle<Vec<(String, u64)>>>,
    pets: usize,
    users: usize,
) {
    for (i, reader) in readers.into_iter().enumerate() {
        let got = reader.await.unwrap();
        let expected = if i == 0 { pets + users } else { pets };
        assert_eq!(got.len(), expected, "watcher {i}: {got:?}");
        assert_in_publish_order(i, &got);
    }
}

/// A raw Engine.IO 4 socket to `addr`, and its id (from the connect
/// packet of Socket.IO protocol 5).
async fn connected_with_id(addr: std::net::SocketAddr) -> (Ws, String) {
    let url =
        format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(crate::sockets::next_text(&mut ws).await.starts_with("0{"));
    ws.send(Message::text("40")).await.unwrap();
    let connect = crate::sockets::next_text(&mut ws).await;
    let body: Value = serde_json::from_str(connect.strip_prefix("40").unwrap()).unwrap();
    (ws, body["sid"].as_str().unwrap().to_owned())
}

/// Reads `ws` until it has `n` messages of the app's; returns their
/// sequence numbers in the order they came.
async fn app_numbers(mut ws: Ws, n: usize) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let frame = crate::sockets::next_text(&mut ws).await;
        let Some(body) = frame.strip_prefix("42") else {
            continue;
        };
        let args: Vec<Value> = serde_json::from_str(body).unwrap();
        let room = args[1]["room"].as_str().unwrap().to_owned();
        got.push((room, args[2].as_u64().unwrap()));
    }
    got
}

/// The same with the app's own messages, which need no database and so
/// follow one another as fast as the publisher task takes them: one to a
/// room of every socket (queued on the lanes), one to a room of a single
/// socket (handed out directly when that socket's lane is idle), from two
/// tasks at once. The single socket must get them in publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_message_never_overtakes_a_big_one_queued_on_its_lane() {
    let served = Served::with_two_lanes().await;
    let (app, addr) = (&served.app, served.addr);
    let sockets = app.sockets().unwrap().clone();
    let mut readers = Vec::new();
    for i in 0..WATCHERS {
        let (ws, sid) = connected_with_id(addr).await;
        sockets.join(&sid, "everyone").await.unwrap();
        if i == 0 {
            sockets.join(&sid, "one").await.unwrap();
        }
        let n = if i == 0 { 2 * CHANGES * 5 } else { CHANGES * 5 };
        readers.push(tokio::spawn(app_numbers(ws, n)));
    }
    let send = |room: &'static str| {
        let sockets = sockets.clone();
        tokio::spawn(async move {
            for i in 0..CHANGES * 5 {
                let message = json!({ "room": room, "i": i });
                sockets
                    .broadcast(&[room], Some("news"), &message, None)
                    .await
                    .unwrap();
            }
        })
    };
    let (big, small) = (send("everyone"), send("one"));
    big.await.unwrap();
    small.await.unwrap();
    for (i, reader) in readers.into_iter().enumerate() {
        assert_in_publish_order(i, &reader.await.unwrap());
    }
    served.stop().await;
}

/// Watchers of `pet` in the burst below: enough that the creates waiting
/// together in the publisher's queue are handed to each socket as one run
/// rather than broadcast one by one.
const MANY_WATCHERS: usize = 1_100;

/// A burst of creates from several tasks at once to over a thousand
/// watchers, while a user one watcher follows is updated in between:
/// every watcher gets every create once, and that one gets both kinds
/// interleaved exactly in publish order. The publisher task finds several
/// creates waiting and hands them to each watcher as one run (seen when
/// the test was written: runs of 2 and 3; a run handed out in reverse
/// order fails it); that it does is not asserted here, only that what
/// comes of it keeps every order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_a_thousand_watchers_keeps_every_message_once_and_in_order() {
    let served = Served::with_two_lanes().await;
    let (app, addr) = (&served.app, served.addr);
    let user = app
        .model::<example_zoo::User>()
        .create(json!({"name": "Bo", "email": "bo@example.com"}))
        .await
        .unwrap();
    let (tasks, per_task, updates) = (8, 6, 20);
    let pets = tasks * per_task;

    let mut watchers = Vec::new();
    for chunk in 0..MANY_WATCHERS.div_ceil(100) {
        let joining: Vec<_> = (0..100.min(MANY_WATCHERS - chunk * 100))
            .map(|j| {
                let follows_user = chunk == 0 && j == 0;
                let url = format!("/user/{}", user.id);
                tokio::spawn(async move {
                    let mut ws = connected(addr).await;
                    let watched =
                        virtual_request(&mut ws, 1, "get", json!({"url": "/pet?limit=1"})).await;
                    assert_eq!(watched["statusCode"], 200);
                    if follows_user {
                        let read = virtual_request(&mut ws, 2, "get", json!({ "url": url })).await;
                        assert_eq!(read["statusCode"], 200);
                    }
                    ws
                })
            })
            .collect();
        for j in joining {
            watchers.push(j.await.unwrap());
        }
    }
    let readers: Vec<_> = watchers
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let users = if i == 0 { updates } else { 0 };
            tokio::spawn(numbers_received(ws, pets, users))
        })
        .collect();

    let creating = futures_util::future::join_all((0..tasks).map(|t| async move {
        let pets = app.model::<example_zoo::Pet>();
        for i in 0..per_task {
            let name = format!("pet {t}.{i}");
            pets.create(json!({ "name": name })).await.unwrap();
        }
    }));
    let users = app.model::<example_zoo::User>();
    tokio::join!(creating, renamed(&users, user.id, "Bo", updates));

    every_watcher_got(readers, pets, updates).await;
    served.stop().await;
}
