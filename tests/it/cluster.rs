use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use topsail_tests::{Db, OwnRedis, fresh_store};

use crate::sockets::{Ws, socket_watching_user, virtual_request};

/// One zoo node of a cluster on `redis`, served on a free port.
struct Node {
    app: topsail::Topsail,
    addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Node {
    async fn start(store: &topsail::SqlStore, redis: &OwnRedis) -> Self {
        Self::start_with(store, redis, |b| b).await
    }

    /// A node whose builder `with` sets up further.
    async fn start_with(
        store: &topsail::SqlStore,
        redis: &OwnRedis,
        with: impl FnOnce(topsail::Builder) -> topsail::Builder,
    ) -> Self {
        let app = with(example_zoo::builder())
            .store(store.clone())
            .redis(redis.url.clone())
            .build()
            .await
            .unwrap();
        let router = app.serve(app.blueprints().router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        Node { app, addr, server }
    }

    /// A socket on this node, watching `user`.
    async fn socket(&self) -> Ws {
        socket_watching_user(self.addr).await
    }

    async fn stop(self) {
        self.server.abort();
        self.app.close_sockets().await;
    }
}

/// Two zoo nodes on one SQLite database and a Redis of their own.
struct Pair {
    one: Node,
    two: Node,
    redis: OwnRedis,
    store: topsail::SqlStore,
    cleanup: topsail_tests::Cleanup,
}

impl Pair {
    async fn start() -> Self {
        Self::start_with(|b| b).await
    }

    /// Two nodes, the first one's builder set up further by `first`.
    async fn start_with(first: impl FnOnce(topsail::Builder) -> topsail::Builder) -> Self {
        let (store, cleanup) = fresh_store(Db::Sqlite).await;
        let redis = OwnRedis::start().await;
        let one = Node::start_with(&store, &redis, first).await;
        let two = Node::start(&store, &redis).await;
        Pair {
            one,
            two,
            redis,
            store,
            cleanup,
        }
    }

    /// A socket on node two watching `pet` (and `user`).
    async fn watcher_on_two(&self) -> Ws {
        let mut ws = self.two.socket().await;
        let watch = virtual_request(&mut ws, 2, "get", json!({"url": "/pet?name=none"})).await;
        assert_eq!(watch["statusCode"], 200);
        ws
    }

    /// Puts Redis to sleep for 2 s (`DEBUG SLEEP`); returns once it
    /// sleeps, with the `redis-cli` that ends when it wakes.
    async fn redis_asleep(&self) -> std::process::Child {
        let pause = self.redis.pause(2);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        pause
    }

    async fn stop(self) {
        self.one.stop().await;
        self.two.stop().await;
        self.store.close().await;
        self.cleanup.run().await;
    }
}

/// Waits until Redis wakes from `redis_asleep`, without blocking the
/// runtime (which runs the nodes too).
async fn until_awake(pause: &mut std::process::Child) {
    while pause.try_wait().unwrap().is_none() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The next event `ws` receives before `deadline`, as its name and
/// arguments (`None` once the deadline passed).
async fn next_event(ws: &mut Ws, deadline: tokio::time::Instant) -> Option<Vec<Value>> {
    loop {
        let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout_at(deadline, ws.next()).await
        else {
            return None;
        };
        if let Some(event) = t.strip_prefix("42")
            && let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(event)
        {
            return Some(parts);
        }
    }
}

/// Redis paused: a node's own watchers still hear each create at once.
/// Nothing waits for Redis on the way to this node's sockets, so nothing
/// queues up meanwhile to go out in one burst once the cluster deadline has
/// passed (a burst that overflowed the outgoing queues of sockets that read
/// fine, and they lost messages without falling behind).
#[tokio::test]
async fn a_paused_redis_holds_up_no_delivery_to_the_nodes_own_sockets() {
    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let redis = OwnRedis::start().await;
    let node = Node::start(&store, &redis).await;
    let mut ws = node.socket().await;
    let watch = virtual_request(&mut ws, 2, "get", json!({"url": "/pet?name=none"})).await;
    assert_eq!(watch["statusCode"], 200);

    let mut pause = redis.pause(2);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let pets = node.app.model::<example_zoo::Pet>();
    let started = tokio::time::Instant::now();
    for i in 0..20 {
        pets.create(json!({"name": format!("P{i}")})).await.unwrap();
    }
    let mut heard = 0;
    let deadline = started + std::time::Duration::from_millis(600);
    while heard < 20
        && let Some(parts) = next_event(&mut ws, deadline).await
    {
        if parts[1]["verb"] == "created" {
            heard += 1;
        }
    }
    assert_eq!(
        heard, 20,
        "every create heard within 600 ms, while Redis sleeps for 2 s"
    );

    let _ = pause.wait();
    node.stop().await;
    store.close().await;
    cleanup.run().await;
}

/// App code on one node subscribes a socket connected to another node
/// (Sails' `Model.subscribe` with that socket's id): the subscription
/// travels with the action's effects, and the socket hears the record's
/// next change.
#[tokio::test]
async fn a_subscription_made_on_one_node_reaches_a_socket_on_another() {
    let nodes = Pair::start().await;
    let (one, two) = (&nodes.one, &nodes.two);
    let mut ws = two.socket().await;
    let id = two.app.sockets().unwrap().sockets_where(&|_| true)[0].clone();

    let pets = one.app.model::<example_zoo::Pet>();
    let rex = pets.create(json!({"name": "Rex"})).await.unwrap().id;
    pets.subscribe(&id, [rex]).await;
    // The subscription is carried out on the other node's publisher task,
    // before any effect published after it; wait for the relay to get there.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    pets.update(rex, json!({"name": "Rex II"})).await.unwrap();

    let mut heard = None;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while heard.is_none()
        && let Some(parts) = next_event(&mut ws, deadline).await
    {
        if parts[1]["verb"] == "updated" {
            heard = Some(parts[1].clone());
        }
    }
    let heard = heard.expect("the socket on the other node heard the update");
    assert_eq!(heard["id"], json!(rex));
    assert_eq!(heard["data"]["name"], "Rex II");
    nodes.stop().await;
}

/// The pets announced as created to `ws` until `want` came or `within`
/// passed, then for `settle` more (a repeat would come then).
async fn created_ids(
    ws: &mut Ws,
    want: usize,
    within: std::time::Duration,
    settle: std::time::Duration,
) -> Vec<Value> {
    let mut ids = Vec::new();
    let mut deadline = tokio::time::Instant::now() + within;
    let mut settling = false;
    while let Some(parts) = next_event(ws, deadline).await {
        if parts[0] == "pet" && parts[1]["verb"] == "created" {
            ids.push(parts[1]["id"].clone());
        }
        if ids.len() >= want && !settling {
            settling = true;
            deadline = tokio::time::Instant::now() + settle;
        }
    }
    ids
}

/// Redis paused while one node writes: what it published meanwhile is
/// written once Redis answers, and the other node's watcher hears every
/// create, in order, and each once (a write Redis took although it timed
/// out is written again, and dropped there as a repeat).
#[tokio::test]
async fn what_a_node_publishes_while_redis_is_paused_reaches_the_other_node_once() {
    let nodes = Pair::start().await;
    let one = &nodes.one;
    let mut ws = nodes.watcher_on_two().await;
    let mut pause = nodes.redis_asleep().await;
    let pets = one.app.model::<example_zoo::Pet>();
    let mut created = Vec::new();
    for i in 0..20 {
        created.push(json!(
            pets.create(json!({"name": format!("P{i}")}))
                .await
                .unwrap()
                .id
        ));
    }
    assert!(
        pause.try_wait().unwrap().is_none(),
        "Redis still sleeps: the creates were made while it did"
    );
    until_awake(&mut pause).await;
    let heard = created_ids(
        &mut ws,
        20,
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(1500),
    )
    .await;
    assert_eq!(heard, created, "every create, in order, once");
    nodes.stop().await;
}

/// A node that starts reads the cluster's replay window back from Redis:
/// its log holds what the cluster published before it started (so a
/// socket that comes back to it is given what it missed, not told to fetch
/// again); also the messages of a model with a read rule, which are read
/// back with their guards.
#[tokio::test]
async fn a_node_that_starts_reads_the_clusters_replay_window_back() {
    for ruled in [false, true] {
        starting_node_reads_the_window_back(ruled).await;
    }
}

async fn starting_node_reads_the_window_back(ruled: bool) {
    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let redis = OwnRedis::start().await;
    let with = |b: topsail::Builder| match ruled {
        true => b.rules(topsail::Rules::new().read::<example_zoo::Pet>(|_| topsail::Access::All)),
        false => b,
    };
    let one = Node::start_with(&store, &redis, with).await;
    let pets = one.app.model::<example_zoo::Pet>();
    for i in 0..10 {
        pets.create(json!({"name": format!("P{i}")})).await.unwrap();
    }
    let published = one.app.sockets().unwrap().replay_census().0;
    assert!(published >= 10, "one's log: {published}");
    // The relay writes after the node's own sockets were served.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let two = Node::start_with(&store, &redis, with).await;
    assert_eq!(
        two.app.sockets().unwrap().replay_census().0,
        published,
        "the new node's log holds all that the other published before it started (rules: {ruled})"
    );

    one.stop().await;
    two.stop().await;
    store.close().await;
    cleanup.run().await;
}

/// A node whose relay queue overflows while Redis sleeps loses batches for
/// good: the other node notices the gap in their numbers when the next one
/// comes, and tells its connected sockets to fetch again (one
/// `topsail:resync` naming what they watch), rather than leaving them with
/// a silent gap.
#[tokio::test]
async fn batches_lost_by_a_relay_that_overflowed_resync_the_other_nodes_sockets() {
    let tiny = topsail::RealtimeConfig {
        publisher_queue: 2,
        ..topsail::RealtimeConfig::default()
    };
    let nodes = Pair::start_with(|b| b.realtime(tiny)).await;
    let one = &nodes.one;
    let mut ws = nodes.watcher_on_two().await;
    // A socket the lost batches did not concern: it watches users.
    let mut bystander = nodes.two.socket().await;
    let watch = virtual_request(&mut bystander, 2, "get", json!({"url": "/user?name=none"})).await;
    assert_eq!(watch["statusCode"], 200);
    let mut pause = nodes.redis_asleep().await;
    let pets = one.app.model::<example_zoo::Pet>();
    for i in 0..20 {
        pets.create(json!({"name": format!("P{i}")})).await.unwrap();
    }
    assert!(
        one.app.sockets().unwrap().relay_dropped() > 0,
        "the relay queue overflowed"
    );
    until_awake(&mut pause).await;
    // The batch after the lost ones.
    pets.create(json!({"name": "after"})).await.unwrap();

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut resync = None;
    while resync.is_none()
        && let Some(parts) = next_event(&mut ws, deadline).await
    {
        if parts[0] == "topsail:resync" {
            resync = Some(parts[1].clone());
        }
    }
    let resync = resync.expect("a topsail:resync");
    assert_eq!(resync["reason"], "gap");
    assert_eq!(resync["models"], json!(["pet", "user"]), "{resync}");

    // The sender said which rooms the lost batches reached: the socket
    // in none of them is not told to fetch again. It still hears what
    // comes after.
    one.app
        .model::<example_zoo::User>()
        .create(json!({"name": "U", "email": "u@example.com"}))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut heard = Vec::new();
    while let Some(parts) = next_event(&mut bystander, deadline).await {
        let created = parts[0] == "user" && parts[1]["verb"] == "created";
        heard.push(parts[0].clone());
        if created {
            break;
        }
    }
    assert_eq!(heard, [json!("user")], "only the user's create: {heard:?}");

    nodes.stop().await;
}

/// What `redis-cli` answers `args` on `redis`, a line per item.
fn redis_cli(redis: &OwnRedis, args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli must be installed: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Two apps on one Redis database, each with a prefix of its own
/// (`RealtimeConfig::redis_prefix`), do not hear each other: one app's
/// creates reach its other node and not the other app's watchers, and each
/// app's keys and channels are under its prefix.
#[tokio::test]
async fn two_apps_with_their_own_prefixes_share_a_redis_without_hearing_each_other() {
    let prefixed = |prefix: &'static str| {
        move |b: topsail::Builder| {
            b.realtime(topsail::RealtimeConfig {
                redis_prefix: prefix.to_owned(),
                ..Default::default()
            })
        }
    };
    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let redis = OwnRedis::start().await;
    let a1 = Node::start_with(&store, &redis, prefixed("app-a")).await;
    let a2 = Node::start_with(&store, &redis, prefixed("app-a")).await;
    let b = Node::start_with(&store, &redis, prefixed("app-b")).await;
    let mut watchers = Vec::new();
    for node in [&a2, &b] {
        let mut ws = node.socket().await;
        let watch = virtual_request(&mut ws, 2, "get", json!({"url": "/pet?name=none"})).await;
        assert_eq!(watch["statusCode"], 200);
        watchers.push(ws);
    }
    let [on_a2, on_b] = &mut watchers[..] else {
        unreachable!()
    };

    let mut created = Vec::new();
    for i in 0..3 {
        let pet = a1.app.model::<example_zoo::Pet>();
        created.push(json!(
            pet.create(json!({"name": format!("A{i}")}))
                .await
                .unwrap()
                .id
        ));
    }
    let within = std::time::Duration::from_secs(5);
    let settle = std::time::Duration::from_millis(1000);
    let heard = created_ids(on_a2, 3, within, settle).await;
    assert_eq!(
        heard, created,
        "the same app's other node hears its creates"
    );
    // The other app hears its own create, and nothing of the first app's.
    let own = b.app.model::<example_zoo::Pet>();
    let own = json!(own.create(json!({"name": "B"})).await.unwrap().id);
    let heard = created_ids(on_b, 1, within, settle).await;
    assert_eq!(heard, [own], "the other app hears only its own");

    let keys = redis_cli(&redis, &["KEYS", "*"]);
    for key in ["app-a:effects", "app-b:effects"] {
        assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
    }
    assert!(
        keys.iter()
            .all(|k| k.starts_with("app-a:") || k.starts_with("app-b:")),
        "every key under a prefix: {keys:?}"
    );
    let channels = redis_cli(&redis, &["PUBSUB", "CHANNELS", "*"]);
    for prefix in ["app-a:socket.io", "app-b:socket.io"] {
        assert!(
            channels.iter().any(|c| c.starts_with(prefix)),
            "{prefix} channels in {channels:?}"
        );
    }
    assert!(
        !channels.iter().any(|c| c.starts_with("socket.io")),
        "no channel under the adapter's default name: {channels:?}"
    );
    for node in [a1, a2, b] {
        node.stop().await;
    }
    store.close().await;
    cleanup.run().await;
}
