//! Socket requests over a real websocket (raw Engine.IO 4 frames), through
//! the same router as HTTP: policies guard them too.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use topsail::RealtimeConfig;
use topsail_tests::{Db, fresh_store};

async fn admin_only(req: Request, next: Next) -> Response {
    if req.headers().contains_key("x-admin") {
        next.run(req).await
    } else {
        (StatusCode::FORBIDDEN, "Forbidden").into_response()
    }
}

pub(crate) use crate::client::{Ws, connected, next_text, virtual_request};

/// The zoo on `store`, with sockets (the default realtime settings).
async fn zoo_with_sockets(store: &topsail::SqlStore) -> topsail::Topsail {
    example_zoo::builder()
        .store(store.clone())
        .realtime(RealtimeConfig::default())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn policies_guard_socket_requests_too() {
    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let app = zoo_with_sockets(&store).await;
    let router = app.serve(app.blueprints().policy("pet/destroy", admin_only).router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let url =
        format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(
        next_text(&mut ws).await.starts_with("0{"),
        "the Engine.IO open packet"
    );
    ws.send(Message::text("40")).await.unwrap();
    let connected = next_text(&mut ws).await;
    assert!(
        connected.starts_with("40{\"sid\""),
        "the namespace connect: {connected}"
    );

    let created = virtual_request(
        &mut ws,
        1,
        "post",
        json!({"url": "/pet", "data": {"name": "Rex"}}),
    )
    .await;
    assert_eq!(created["statusCode"], 200);
    let id = created["body"]["id"].as_i64().unwrap();
    let denied = virtual_request(&mut ws, 2, "delete", json!({"url": format!("/pet/{id}")})).await;
    assert_eq!(
        (denied["statusCode"].clone(), denied["body"].clone()),
        (json!(403), json!("Forbidden")),
        "the policy answered the socket"
    );
    let allowed = virtual_request(
        &mut ws,
        3,
        "delete",
        json!({"url": format!("/pet/{id}"), "headers": {"x-admin": "1"}}),
    )
    .await;
    assert_eq!(allowed["statusCode"], 200);
    assert_eq!(allowed["body"]["name"], "Rex");
    let gone = virtual_request(&mut ws, 4, "get", json!({"url": format!("/pet/{id}")})).await;
    assert_eq!(gone["statusCode"], 404);

    ws.close(None).await.ok();
    server.abort();
    app.close_sockets().await;
    store.close().await;
    cleanup.run().await;
}

/// Opens a raw Engine.IO 4 socket (over `stream`), connects the namespace
/// and watches `user` (a virtual `GET /user?limit=1`).
pub(crate) async fn watching_user<S>(
    stream: S,
    addr: std::net::SocketAddr,
) -> tokio_tungstenite::WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    watching_user_with(stream, addr, None).await
}

/// As [`watching_user`], with `cookie` in the handshake.
async fn watching_user_with<S>(
    stream: S,
    addr: std::net::SocketAddr,
    cookie: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url =
        format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1");
    let mut req = url.into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    // The next text frame that is not a ping (answered, as a client does).
    async fn frame<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    ws.send(Message::text("3")).await.unwrap()
                }
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(_)) => {}
                other => panic!("no frame: {other:?}"),
            }
        }
    }
    assert!(frame(&mut ws).await.starts_with("0{"));
    ws.send(Message::text("40")).await.unwrap();
    let connected = frame(&mut ws).await;
    assert!(
        connected.starts_with("40{"),
        "the namespace connect: {connected}"
    );
    let watch = json!(["get", {"url": "/user?limit=1"}]);
    ws.send(Message::text(format!("421{watch}"))).await.unwrap();
    while !frame(&mut ws).await.starts_with("431") {}
    ws
}

/// A plain socket to the server at `addr`, watching `user`.
pub(crate) async fn socket_watching_user(addr: std::net::SocketAddr) -> Ws {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    watching_user(tokio_tungstenite::MaybeTlsStream::Plain(tcp), addr).await
}

/// The zoo served on a free port with `config`, `routes` mounted beside
/// the blueprints.
struct Served {
    app: topsail::Topsail,
    router: axum::Router,
    addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    store: topsail::SqlStore,
    cleanup: topsail_tests::Cleanup,
}

impl Served {
    /// Served as the zoo is: each connection is the connect info, so a
    /// socket whose queue overflows is cut at once.
    async fn start(config: RealtimeConfig, routes: axum::Router) -> Self {
        Served::serve(config, routes, true, std::time::Duration::from_secs(3)).await
    }

    /// Served without the connections: such a socket is left to the
    /// heartbeat.
    async fn start_without_connections(config: RealtimeConfig, routes: axum::Router) -> Self {
        Served::serve(config, routes, false, std::time::Duration::from_secs(3)).await
    }

    /// As [`Served::start`], the kernel closing a connection that has
    /// taken no data for `stalled_after`.
    async fn start_stalled_after(
        config: RealtimeConfig,
        stalled_after: std::time::Duration,
    ) -> Self {
        Served::serve(config, axum::Router::new(), true, stalled_after).await
    }

    async fn serve(
        config: RealtimeConfig,
        routes: axum::Router,
        connections: bool,
        stalled_after: std::time::Duration,
    ) -> Self {
        let (store, cleanup) = fresh_store(Db::Sqlite).await;
        let app = example_zoo::builder()
            .store(store.clone())
            .realtime(config)
            .build()
            .await
            .unwrap();
        let router = app.serve(app.blueprints().mount(routes));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // As an app does: a connection that stops reading is closed (after
        // `stalled_after`, 3 s for most tests here, once the heartbeat of
        // the tests that shorten it has disconnected the socket).
        let listener = topsail::TunedListener::new(listener, stalled_after);
        let served = router.clone();
        let server = if connections {
            let served = served.into_make_service_with_connect_info::<topsail::Connection>();
            tokio::spawn(async move { axum::serve(listener, served).await })
        } else {
            tokio::spawn(async move { axum::serve(listener, served).await })
        };
        Served {
            app,
            router,
            addr,
            server,
            store,
            cleanup,
        }
    }

    /// A plain socket watching `user`.
    async fn socket(&self) -> Ws {
        socket_watching_user(self.addr).await
    }

    async fn stop(self) {
        self.server.abort();
        self.app.close_sockets().await;
        self.store.close().await;
        self.cleanup.run().await;
    }
}

#[tokio::test]
async fn a_reader_that_stops_reading_costs_no_one_a_duplicate() {
    let zoo = Served::start(RealtimeConfig::default(), axum::Router::new()).await;
    let (addr, router) = (zoo.addr, zoo.router.clone());

    // A watcher with a tiny receive window that never reads again: its
    // outgoing queue on the server fills after a few large messages.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stalled = watching_user(socket.connect(addr).await.unwrap(), addr).await;
    // A watcher that reads everything.
    let mut reader = zoo.socket().await;
    let counted = tokio::spawn(async move {
        let mut created = std::collections::HashMap::<i64, u32>::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, reader.next()).await {
            let Message::Text(t) = m else { continue };
            if t.as_str() == "2" {
                let _ = reader.send(Message::text("3")).await;
                continue;
            }
            if let Some(event) = t.strip_prefix("42")
                && let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(event)
                && parts[1]["verb"] == "created"
            {
                *created
                    .entry(parts[1]["id"].as_i64().unwrap_or(0))
                    .or_default() += 1;
            }
            if created.len() == 200 {
                // Any duplicate would follow within moments.
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                while let Ok(Some(Ok(Message::Text(t)))) =
                    tokio::time::timeout(std::time::Duration::from_millis(200), reader.next()).await
                {
                    if let Some(event) = t.strip_prefix("42")
                        && let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(event)
                    {
                        *created
                            .entry(parts[1]["id"].as_i64().unwrap_or(0))
                            .or_default() += 1;
                    }
                }
                break;
            }
        }
        created
    });

    // 200 users with 64 KiB names: far more than the stalled socket's
    // kernel buffers and its queue of 128 packets hold.
    let long_name = "n".repeat(64 * 1024);
    for i in 0..200 {
        let r = topsail_tests::call(
            &router,
            None,
            http::Method::POST,
            "/user",
            Some(json!({"name": long_name, "email": format!("u{i}@example.com")})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let created = counted.await.unwrap();
    assert_eq!(created.len(), 200, "the reader heard every create");
    let repeated: Vec<_> = created.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "no message twice: {repeated:?}");

    drop(stalled);
    zoo.stop().await;
}

#[tokio::test]
async fn a_message_over_max_payload_closes_only_its_own_connection() {
    let config = RealtimeConfig {
        max_payload: 16 * 1024,
        ..RealtimeConfig::default()
    };
    let zoo = Served::start(config, axum::Router::new()).await;
    let mut big = zoo.socket().await;
    let mut other = zoo.socket().await;
    // A 64 KiB websocket message, four times the limit: the server closes
    // this connection instead of parsing it.
    let name = "n".repeat(64 * 1024);
    let request =
        json!(["post", {"url": "/user", "data": {"name": name, "email": "big@example.com"}}]);
    let _ = big.send(Message::text(format!("422{request}"))).await;
    let closed = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), big.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                let _ = big.send(Message::text("3")).await;
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                assert!(
                    !t.starts_with("432"),
                    "the oversized request was answered: {t}"
                );
            }
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => break true,
            Ok(Some(Ok(_))) => {}
            Err(_) => break false,
        }
    };
    assert!(closed, "the connection that sent it is closed");
    // Nothing was created, and the other socket is served as before.
    let jwr = virtual_request(&mut other, 3, "get", json!({"url": "/user"})).await;
    assert_eq!(
        (jwr["statusCode"].clone(), jwr["body"].clone()),
        (json!(200), json!([]))
    );
    zoo.stop().await;
}

#[tokio::test]
async fn a_socket_is_bounded_in_requests_in_flight_and_in_time() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A route that takes a second, and counts how many runs finished.
    let finished = std::sync::Arc::new(AtomicUsize::new(0));
    let done = finished.clone();
    let slow = axum::Router::new().route(
        "/slow",
        axum::routing::get(move || {
            let done = done.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                done.fetch_add(1, Ordering::SeqCst);
                "slow"
            }
        }),
    );
    let config = RealtimeConfig {
        max_in_flight: 2,
        request_timeout: std::time::Duration::from_millis(200),
        ..RealtimeConfig::default()
    };
    let zoo = Served::start(config, slow).await;
    let mut ws = zoo.socket().await;

    for n in 1..=3 {
        let request = json!(["get", {"url": "/slow"}]);
        ws.send(Message::text(format!("42{}{request}", n + 10)))
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let mut acks = std::collections::BTreeMap::new();
    while acks.len() < 3 {
        let frame = next_text(&mut ws).await;
        for n in 11..=13 {
            if let Some(rest) = frame.strip_prefix(&format!("43{n}")) {
                let jwr: Vec<Value> = serde_json::from_str(rest).unwrap();
                acks.insert(n, (jwr[0]["statusCode"].clone(), started.elapsed()));
            }
        }
    }
    assert_eq!(
        acks[&13].0,
        json!(429),
        "the third in flight is refused at once"
    );
    assert!(acks[&13].1 < std::time::Duration::from_millis(150));
    for n in [11, 12] {
        assert_eq!(acks[&n].0, json!(504), "past the time limit");
        assert!(
            acks[&n].1 < std::time::Duration::from_millis(900),
            "{:?}",
            acks[&n].1
        );
    }
    // The timed-out requests were not cut short; once they end, their
    // places are free again.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(finished.load(Ordering::SeqCst), 2);
    let jwr = virtual_request(&mut ws, 14, "get", json!({"url": "/user"})).await;
    assert_eq!(jwr["statusCode"], 200);

    zoo.stop().await;
}

/// A route that answers the rooms of the socket that asks.
fn my_rooms() -> axum::Router {
    axum::Router::new().route(
        "/my-rooms",
        axum::routing::get(|socket: topsail::SocketRequest| async move {
            let rooms = socket.sockets().rooms_of(socket.id()).await.unwrap();
            axum::Json(json!(rooms))
        }),
    )
}

#[tokio::test]
async fn a_socket_joins_at_most_max_rooms_per_socket() {
    let config = RealtimeConfig {
        max_rooms_per_socket: 20,
        ..RealtimeConfig::default()
    };
    let zoo = Served::start(config, my_rooms()).await;
    let users = zoo.app.model::<example_zoo::User>();
    for i in 0..40 {
        let email = format!("u{i}@example.com");
        users
            .create(json!({"name": format!("U{i}"), "email": email}))
            .await
            .unwrap();
    }
    let mut ws = zoo.socket().await;
    let found = virtual_request(&mut ws, 11, "get", json!({"url": "/user?limit=100"})).await;
    assert_eq!(found["statusCode"], 200, "the read still answers");
    assert_eq!(found["body"].as_array().map(Vec::len), Some(40));
    // The rooms are joined after the answer, by the publisher task.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let rooms = virtual_request(&mut ws, 12, "get", json!({"url": "/my-rooms"})).await;
    let rooms = rooms["body"].as_array().unwrap().len();
    assert_eq!(
        rooms, 20,
        "its own room, the watches of user and pet, 17 records"
    );

    // A socket under the cap is not held back.
    let mut other = zoo.socket().await;
    virtual_request(&mut other, 11, "get", json!({"url": "/user?limit=5"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let rooms = virtual_request(&mut other, 12, "get", json!({"url": "/my-rooms"})).await;
    assert_eq!(
        rooms["body"].as_array().unwrap().len(),
        8,
        "own, 2 watches, 5 records: {rooms}"
    );
    zoo.stop().await;
}

/// How many rooms the socket is in (through [`my_rooms`]).
async fn rooms_of(ws: &mut Ws, n: u32) -> usize {
    let rooms = virtual_request(ws, n, "get", json!({"url": "/my-rooms"})).await;
    rooms["body"].as_array().unwrap().len()
}

/// Watching a model subscribes a socket to every record created meanwhile
/// (`_introduce`): those rooms count against `max_rooms_per_socket` too.
/// Past the cap the watcher still hears `created`, but is subscribed to no
/// more records; a socket under the cap still is.
#[tokio::test]
async fn a_watcher_is_introduced_to_at_most_max_rooms_per_socket() {
    let config = RealtimeConfig {
        max_rooms_per_socket: 20,
        ..RealtimeConfig::default()
    };
    let zoo = Served::start(config, my_rooms()).await;
    let pets = zoo.app.model::<example_zoo::Pet>();
    let mut watcher = zoo.socket().await;
    let found = virtual_request(&mut watcher, 11, "get", json!({"url": "/pet?name=none"})).await;
    assert_eq!(found["statusCode"], 200);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let watching = rooms_of(&mut watcher, 12).await;

    for i in 0..30 {
        pets.create(json!({"name": format!("P{i}")})).await.unwrap();
    }
    // What `_introduce` adds is counted every two seconds.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let introduced = rooms_of(&mut watcher, 13).await;
    // (A count may have come while they were being created.)
    assert!(
        (20..=watching + 30).contains(&introduced),
        "introduced to pets up to the cap at least: {introduced} rooms"
    );

    let mut late = zoo.socket().await;
    virtual_request(&mut late, 11, "get", json!({"url": "/pet?name=none"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let late_watching = rooms_of(&mut late, 12).await;
    for i in 30..40 {
        pets.create(json!({"name": format!("P{i}")})).await.unwrap();
    }
    // Still watching: it hears each `created`.
    let mut created = 0;
    while let Ok(frame) = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        next_text(&mut watcher),
    )
    .await
    {
        if let Some(event) = frame.strip_prefix("42")
            && let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(event)
            && parts[1]["verb"] == "created"
        {
            created += 1;
        }
    }
    assert_eq!(created, 10, "the watcher at its cap still hears `created`");
    assert_eq!(
        rooms_of(&mut watcher, 14).await,
        introduced,
        "at the cap: introduced to nothing more"
    );
    assert_eq!(
        rooms_of(&mut late, 13).await,
        late_watching + 10,
        "under the cap: introduced as before"
    );
    zoo.stop().await;
}

/// `Topsail::shutdown`: a socket's request in flight ends and is answered,
/// what it published is delivered, a new request is refused with 503, and
/// only then are the sockets disconnected.
#[tokio::test]
async fn shutdown_finishes_socket_work_and_delivers_its_messages_first() {
    let app_cell = std::sync::Arc::new(std::sync::OnceLock::<topsail::Topsail>::new());
    let app_for_route = app_cell.clone();
    let slow_create = axum::Router::new().route(
        "/slow-create",
        axum::routing::get(move || {
            let app = app_for_route.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let users = app.get().unwrap().model::<example_zoo::User>();
                let ann = json!({"name": "Ann", "email": "ann@example.com"});
                users.create(ann).await.unwrap();
                "created"
            }
        }),
    );
    let zoo = Served::start(RealtimeConfig::default(), slow_create).await;
    app_cell.set(zoo.app.clone()).unwrap();
    let mut ws = zoo.socket().await;
    let slow = json!(["get", {"url": "/slow-create"}]);
    ws.send(Message::text(format!("4211{slow}"))).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let app = zoo.app.clone();
    let shutdown =
        tokio::spawn(async move { app.shutdown(std::time::Duration::from_secs(5)).await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let late = json!(["get", {"url": "/user"}]);
    ws.send(Message::text(format!("4212{late}"))).await.unwrap();

    // Everything the socket receives until it is disconnected.
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                ws.send(Message::text("3")).await.unwrap()
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                // A namespace disconnect, or the Engine.IO close.
                let disconnected = t.starts_with("41") || t.as_str() == "1";
                frames.push(t.to_string());
                if disconnected {
                    break;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("{other:?} after {frames:?}"),
        }
    }
    let position = |prefix: &str| {
        frames
            .iter()
            .position(|f| f.starts_with(prefix))
            .unwrap_or_else(|| panic!("no frame starting {prefix} in {frames:?}"))
    };
    let late_ack = &frames[position("4312")];
    assert!(late_ack.contains("\"statusCode\":503"), "{late_ack}");
    let slow_ack = &frames[position("4311")];
    assert!(slow_ack.contains("\"statusCode\":200"), "{slow_ack}");
    let created = position("42[\"user\"");
    assert!(frames[created].contains("\"verb\":\"created\""));
    assert!(
        created < frames.len() - 1,
        "delivered before the disconnect"
    );
    assert!(shutdown.await.unwrap(), "a clean shutdown");
    zoo.stop().await;
}

/// A socket that stops reading (its queue fills, it answers no ping) is
/// disconnected by the heartbeat, counted and logged; a socket that reads
/// is not touched and hears every message.
#[tokio::test]
async fn a_socket_that_stops_reading_is_disconnected_by_the_heartbeat() {
    let config = RealtimeConfig {
        ping_interval: std::time::Duration::from_millis(300),
        ping_timeout: std::time::Duration::from_secs(1),
        send_queue: 16,
        ..RealtimeConfig::default()
    };
    let zoo = Served::start_without_connections(config, axum::Router::new()).await;
    let (addr, router) = (zoo.addr, zoo.router.clone());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stalled = watching_user(socket.connect(addr).await.unwrap(), addr).await;
    let mut reader = zoo.socket().await;
    let sockets = zoo.app.sockets().unwrap().clone();
    assert_eq!(sockets.stalled_disconnects(), 0);

    let started = std::time::Instant::now();
    let long_name = "n".repeat(64 * 1024);
    // 12 MiB: more than the kernel buffers of both ends hold.
    for i in 0..200 {
        let user = json!({"name": long_name, "email": format!("u{i}@example.com")});
        let r = topsail_tests::call(&router, None, http::Method::POST, "/user", Some(user)).await;
        assert_eq!(r.status, StatusCode::OK);
        // The reader keeps up (and answers pings).
        while let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(std::time::Duration::from_millis(5), reader.next()).await
        {
            if t.as_str() == "2" {
                reader.send(Message::text("3")).await.unwrap();
            }
        }
    }
    while sockets.stalled_disconnects() == 0
        && started.elapsed() < std::time::Duration::from_secs(10)
    {
        let jwr = virtual_request(&mut reader, 50, "get", json!({"url": "/user?limit=1"})).await;
        assert_eq!(jwr["statusCode"], 200);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sockets.stalled_disconnects(), 1, "the stalled socket, once");

    let jwr = virtual_request(&mut reader, 51, "get", json!({"url": "/user?limit=1"})).await;
    assert_eq!(jwr["statusCode"], 200, "the reading socket is still served");
    drop(stalled);
    zoo.stop().await;
}

/// A socket that stopped reading, watching users while 64 KiB users are
/// created until it is cut, served with each connection as its connect
/// info (as the zoo is) and no heartbeat within the test. Its connection
/// ends, and a socket that reads beside it hears every create once (a
/// probe is no `created`). Returns how long the cut took.
async fn stalled_reader_is_cut(slow_readers: topsail::SlowReaders) -> std::time::Duration {
    let config = RealtimeConfig {
        ping_interval: std::time::Duration::from_secs(60),
        send_queue: 16,
        slow_readers,
        ..RealtimeConfig::default()
    };
    let zoo = Served::start(config, axum::Router::new()).await;
    let (addr, router) = (zoo.addr, zoo.router.clone());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut stalled = watching_user(socket.connect(addr).await.unwrap(), addr).await;
    let mut reader = zoo.socket().await;
    let sockets = zoo.app.sockets().unwrap().clone();

    let started = std::time::Instant::now();
    let long_name = "n".repeat(64 * 1024);
    let mut created = std::collections::HashMap::<i64, u32>::new();
    let count = |t: &str, created: &mut std::collections::HashMap<i64, u32>| {
        if let Some(event) = t.strip_prefix("42")
            && let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(event)
            && parts[1]["verb"] == "created"
        {
            *created
                .entry(parts[1]["id"].as_i64().unwrap_or(0))
                .or_default() += 1;
        }
    };
    let mut made = 0;
    while sockets.stalled_disconnects() == 0 && made < 2_000 {
        let user = json!({"name": long_name, "email": format!("u{made}@example.com")});
        let r = topsail_tests::call(&router, None, http::Method::POST, "/user", Some(user)).await;
        assert_eq!(r.status, StatusCode::OK);
        made += 1;
        while let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(std::time::Duration::from_millis(5), reader.next()).await
        {
            count(&t, &mut created);
        }
    }
    let took = started.elapsed();
    assert_eq!(
        sockets.stalled_disconnects(),
        1,
        "the stalled socket was cut"
    );
    // Its connection has ended: what its kernel buffer held, then the end.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(_)) = stalled.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stalled socket's connection ended");

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while created.len() < made {
        let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout_at(deadline, reader.next()).await
        else {
            break;
        };
        count(&t, &mut created);
    }
    assert_eq!(created.len(), made, "the reader heard every create");
    assert!(created.values().all(|n| *n == 1), "nothing twice");
    zoo.stop().await;
    took
}

/// A socket that takes nothing for the grace is cut then, long before
/// any heartbeat could notice: its client reconnects and takes back what
/// it missed instead of going on with a gap.
#[tokio::test]
async fn a_socket_that_takes_nothing_for_the_grace_is_cut() {
    let took = stalled_reader_is_cut(topsail::SlowReaders {
        grace: std::time::Duration::from_millis(300),
        backlog: 1_000_000,
    })
    .await;
    assert!(
        took >= std::time::Duration::from_millis(300),
        "not before the grace: {took:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(20),
        "cut long before a heartbeat: {took:?}"
    );
}

/// A socket for which more messages wait than its backlog holds is cut
/// at once, however long the grace: a client that stopped reading holds
/// a bounded backlog.
#[tokio::test]
async fn a_socket_more_messages_wait_for_than_its_backlog_holds_is_cut() {
    let took = stalled_reader_is_cut(topsail::SlowReaders {
        grace: std::time::Duration::from_secs(600),
        backlog: 8,
    })
    .await;
    assert!(
        took < std::time::Duration::from_secs(60),
        "cut by the backlog, not the grace: {took:?}"
    );
}

/// The ids of the users announced as created in `frame`, if it is that.
fn created_user(frame: &str) -> Option<i64> {
    let event = frame.strip_prefix("42")?;
    let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(event) else {
        return None;
    };
    (parts[0] == "user" && parts[1]["verb"] == "created").then(|| parts[1]["id"].as_i64())?
}

/// A socket that stops reading, with a resume cookie, watching users
/// while a 64 KiB user is created every 10 ms until it is gone: cut after
/// `grace` without taking anything, or closed by the kernel after
/// `stalled_after`. Its old connection is read to its end, then its
/// client comes back with its cookie: every create reached it, what waited
/// for it longer than `close_doubt` (3 s) before it went too, since the
/// replay goes back from the first message its queue refused. Returns how
/// many sockets the server cut (this one, or none).
async fn stalled_reader_comes_back(
    grace: std::time::Duration,
    stalled_after: std::time::Duration,
) -> u64 {
    let config = RealtimeConfig {
        ping_interval: std::time::Duration::from_secs(60),
        send_queue: 16,
        slow_readers: topsail::SlowReaders {
            grace,
            backlog: 1_000_000,
        },
        replay: topsail::ReplayConfig {
            close_doubt: std::time::Duration::from_secs(3),
            ..topsail::ReplayConfig::default()
        },
        ..RealtimeConfig::default()
    };
    let zoo = Served::start_stalled_after(config, stalled_after).await;
    let (addr, router) = (zoo.addr, zoo.router.clone());
    let sockets = zoo.app.sockets().unwrap().clone();
    let cookie = "topsail.rid=5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut stalled = watching_user_with(tcp, addr, Some(cookie)).await;

    let long_name = "n".repeat(64 * 1024);
    let mut made = Vec::new();
    let mut waited_for = 0;
    while sockets.census().sockets > 0 && made.len() < 2_000 {
        let user = json!({"name": long_name, "email": format!("u{}@example.com", made.len())});
        let r = topsail_tests::call(&router, None, http::Method::POST, "/user", Some(user)).await;
        assert_eq!(r.status, StatusCode::OK);
        made.push(r.body["id"].as_i64().unwrap());
        waited_for = waited_for.max(sockets.slow_readers_waited_for());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(sockets.census().sockets, 0, "the socket went");
    assert_eq!(waited_for, 1, "messages waited for it first");

    // What its connection still brings (its kernel buffers), then the end.
    let mut heard = std::collections::HashSet::new();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(m)) = stalled.next().await {
            if let Message::Text(t) = m {
                heard.extend(created_user(&t));
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "its connection ended");
    let before_resume = heard.len();

    // Its client comes back with its cookie (and asks nothing, which would
    // wait for the replay) and is replayed the rest.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let url =
        format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1");
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut back, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    back.send(Message::text("40")).await.unwrap();
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(std::time::Duration::from_secs(2), back.next()).await
    {
        match m {
            Message::Text(t) if t.as_str() == "2" => back.send(Message::text("3")).await.unwrap(),
            Message::Text(t) => heard.extend(created_user(&t)),
            _ => {}
        }
    }
    let missing: Vec<_> = made.iter().filter(|id| !heard.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} never reached it ({before_resume} before it came back): {missing:?}",
        missing.len(),
        made.len()
    );
    let cut = sockets.stalled_disconnects();
    zoo.stop().await;
    cut
}

/// A socket cut because it stopped reading (6 s after its queue first
/// refused a message), whose client comes back with its resume cookie, is
/// given all it had not read (not only what came within `close_doubt` of
/// the cut).
#[tokio::test]
async fn a_socket_cut_for_not_reading_is_given_back_what_it_had_not_read() {
    let secs = std::time::Duration::from_secs;
    // The kernel would close the connection before the grace is over.
    let cut = stalled_reader_comes_back(secs(6), secs(60)).await;
    assert_eq!(cut, 1, "cut by the server");
}

/// The same when the kernel closes the connection of a socket messages
/// wait for (5 s after it stopped taking data), before its grace is over.
#[tokio::test]
async fn a_stalled_socket_whose_connection_dies_is_given_back_what_it_had_not_read() {
    let secs = std::time::Duration::from_secs;
    let cut = stalled_reader_comes_back(secs(60), secs(5)).await;
    assert_eq!(cut, 0, "gone by its connection, not cut");
}

/// A reader slower than a burst, but reading, is not cut: what its full
/// queue refused waits for it, and what comes after waits behind, so it
/// hears every create once and in order (the lanes cut such a reader at
/// once before, and a relayed backlog cut sockets that read fine).
#[tokio::test]
async fn a_reader_slower_than_a_burst_is_waited_for_and_hears_everything_in_order() {
    let config = RealtimeConfig {
        ping_interval: std::time::Duration::from_secs(60),
        send_queue: 16,
        ..RealtimeConfig::default()
    };
    let zoo = Served::start(config, axum::Router::new()).await;
    let (addr, router) = (zoo.addr, zoo.router.clone());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut slow = watching_user(socket.connect(addr).await.unwrap(), addr).await;
    let sockets = zoo.app.sockets().unwrap().clone();

    // 200 users with 64 KiB names (12.8 MiB) as fast as the store takes
    // them, far more than the kernel buffers and a queue of 16 hold.
    const USERS: usize = 200;
    let burst = tokio::spawn(async move {
        let long_name = "n".repeat(64 * 1024);
        for i in 0..USERS {
            let user = json!({"name": long_name, "email": format!("u{i}@example.com")});
            let r =
                topsail_tests::call(&router, None, http::Method::POST, "/user", Some(user)).await;
            assert_eq!(r.status, StatusCode::OK);
        }
    });
    // The reader takes a message every 10 ms: 2 s for them all.
    let mut heard = Vec::new();
    let mut waited_for = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while heard.len() < USERS {
        let t = match tokio::time::timeout_at(deadline, slow.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            other => panic!(
                "the slow reader's connection ended after {} creates: {other:?}",
                heard.len()
            ),
        };
        if t.as_str() == "2" {
            slow.send(Message::text("3")).await.unwrap();
            continue;
        }
        if let Some(event) = t.strip_prefix("42")
            && let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(event)
            && parts[1]["verb"] == "created"
        {
            heard.push(parts[1]["id"].as_i64().unwrap());
        }
        waited_for = waited_for.max(sockets.slow_readers_waited_for());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    burst.await.unwrap();
    let mut in_order = heard.clone();
    in_order.sort_unstable();
    in_order.dedup();
    assert_eq!(heard, in_order, "every create once, in order");
    assert_eq!(waited_for, 1, "its queue was full, and messages waited");
    assert_eq!(sockets.stalled_disconnects(), 0, "nobody was cut");
    assert_eq!(
        sockets.slow_readers_waited_for(),
        0,
        "nothing waits once it has all"
    );
    zoo.stop().await;
}

/// `before_connect` sees each new socket's handshake (its query and
/// headers) and may refuse it with 403; the origin check runs first.
#[tokio::test]
async fn before_connect_may_refuse_a_handshake() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let config = RealtimeConfig {
        before_connect: Some(topsail::BeforeConnect::new(
            move |hs: topsail::ConnectRequest| {
                let log = log.clone();
                async move {
                    let query = hs.uri.query().unwrap_or("").to_owned();
                    log.lock().unwrap().push(query.clone());
                    query.contains("token=good")
                }
            },
        )),
        ..RealtimeConfig::default()
    };
    let zoo = Served::start(config, axum::Router::new()).await;
    let open = |query: &str, origin: Option<&str>| {
        let url = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1&{query}",
            zoo.addr
        );
        let mut req = url.into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    let status = |r: Result<_, tokio_tungstenite::tungstenite::Error>| match r {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status(open("token=bad", None).await), 403);
    assert_eq!(status(open("token=good", None).await), 101);
    let own = format!("http://{}", zoo.addr);
    assert_eq!(
        status(open("token=good", Some(&own)).await),
        101,
        "its own origin"
    );
    assert_eq!(
        status(open("token=good", Some("http://evil.example")).await),
        403,
        "another origin, whatever the hook says"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        3,
        "the hook ran for the handshakes past the origin check: {seen:?}"
    );
    zoo.stop().await;
}

/// Handlers see the socket's handshake (Sails' `req.socket.handshake`): the
/// query it connected with (where a page puts a token, since a browser sets
/// no headers on a websocket) and its headers.
#[tokio::test]
async fn handlers_see_the_handshake() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let route = axum::Router::new().route(
        "/handshake",
        axum::routing::get(|socket: topsail::SocketRequest| async move {
            let hs = socket.handshake();
            axum::Json(json!({
                "query": hs.uri.query(),
                "client": hs.headers.get("x-client").and_then(|v| v.to_str().ok()),
            }))
        }),
    );
    let zoo = Served::start(RealtimeConfig::default(), route).await;
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1&token=abc",
        zoo.addr
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("x-client", "tests".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("0{"));
    ws.send(Message::text("40")).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("40{"));
    let jwr = virtual_request(&mut ws, 1, "get", json!({"url": "/handshake"})).await;
    assert_eq!(jwr["statusCode"], 200);
    assert!(
        jwr["body"]["query"].as_str().unwrap().contains("token=abc"),
        "{jwr}"
    );
    assert_eq!(jwr["body"]["client"], "tests");
    zoo.stop().await;
}

/// A socket keeps the cookies its answers set, as Sails keeps a socket's
/// session: a sign-in over a socket holds for its later requests, a
/// sign-out ends it, and another socket opened with the same handshake
/// cookie has its own jar.
#[tokio::test]
async fn a_sign_in_over_a_socket_holds_for_that_socket() {
    use axum::http::header::{COOKIE, SET_COOKIE};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let routes = axum::Router::new()
        .route(
            "/signin",
            axum::routing::post(|| async { ([(SET_COOKIE, "user=ann; Path=/; HttpOnly")], "in") }),
        )
        .route(
            "/signout",
            axum::routing::post(|| async { ([(SET_COOKIE, "user=; Path=/; Max-Age=0")], "out") }),
        )
        .route(
            "/cookies",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                let c = headers
                    .get(COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                axum::Json(json!(c))
            }),
        );
    let zoo = Served::start(RealtimeConfig::default(), routes).await;
    let open = || async {
        let url = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1",
            zoo.addr
        );
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("cookie", "sails.sid=browser".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert!(next_text(&mut ws).await.starts_with("0{"));
        ws.send(Message::text("40")).await.unwrap();
        assert!(next_text(&mut ws).await.starts_with("40{"));
        ws
    };
    let mut a = open().await;
    let mut b = open().await;
    let cookies = |jwr: Value| jwr["body"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        cookies(virtual_request(&mut a, 1, "get", json!({"url": "/cookies"})).await),
        "sails.sid=browser"
    );
    virtual_request(&mut a, 2, "post", json!({"url": "/signin"})).await;
    assert_eq!(
        cookies(virtual_request(&mut a, 3, "get", json!({"url": "/cookies"})).await),
        "sails.sid=browser; user=ann",
        "signed in for its later requests"
    );
    assert_eq!(
        cookies(virtual_request(&mut b, 1, "get", json!({"url": "/cookies"})).await),
        "sails.sid=browser",
        "the other socket's jar is its own"
    );
    virtual_request(&mut a, 4, "post", json!({"url": "/signout"})).await;
    assert_eq!(
        cookies(virtual_request(&mut a, 5, "get", json!({"url": "/cookies"})).await),
        "sails.sid=browser"
    );
    zoo.stop().await;
}

/// A client that sends its first request the moment it is connected (as
/// sails.io.js does with the requests it queued while connecting) is
/// answered: the socket is set up before the client is told it is
/// connected. It was not always: socketioxide sends the connect packet
/// before it runs the connect handler, and a request read in between was
/// dropped without an answer (one socket in a few hundred, on two worker
/// threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_the_moment_a_socket_connects_is_answered() {
    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let app = zoo_with_sockets(&store).await;
    let router = app.serve(app.blueprints().router());
    let (addr, server) = topsail_tests::serve_on_free_port(router).await;
    let clients = (0..4).map(|_| {
        tokio::spawn(async move {
            for _ in 0..250 {
                let mut ws = connected(addr).await;
                let answer = tokio::time::timeout(
                    std::time::Duration::from_secs(3),
                    virtual_request(&mut ws, 1, "get", json!({"url": "/pet?limit=1"})),
                )
                .await
                .expect("the first request of a socket is answered");
                assert_eq!(answer["statusCode"], 200);
            }
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await.unwrap();
    }
    server.abort();
    app.close_sockets().await;
    store.close().await;
    cleanup.run().await;
}

/// The pet events (`verb`, `id`) a socket receives within `for_ms`.
async fn pet_events(ws: &mut Ws, for_ms: u64) -> Vec<(String, i64)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(for_ms);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
        let Message::Text(t) = m else { continue };
        if t.as_str() == "2" {
            let _ = ws.send(Message::text("3")).await;
        } else if let Some(event) = t.strip_prefix("42")
            && let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(event)
            && parts[0] == "pet"
        {
            let verb = parts[1]["verb"].as_str().unwrap_or_default().to_owned();
            got.push((verb, parts[1]["id"].as_i64().unwrap_or(-1)));
        }
    }
    got
}

/// `/my-rooms`, and `/leave?room=`: the socket leaves a room.
fn rooms_and_leave() -> axum::Router {
    my_rooms().route(
        "/leave",
        axum::routing::get(
            |socket: topsail::SocketRequest,
             axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| async move {
                socket
                    .sockets()
                    .leave(socket.id(), q["room"].clone())
                    .await
                    .unwrap();
                "left"
            },
        ),
    )
}

/// Whenever introductions are carried out (at once, once the node caught
/// up, or only when something looks), a watcher is subscribed to exactly
/// the records created while it watched, as in Sails: it hears their
/// updates and sees their rooms; a socket that starts watching later is
/// not subscribed to them; one that leaves a record's room hears no more
/// of it. With `WhenNeeded` every check below meets a noted introduction
/// (each record is created just before), so each way of looking is the
/// one that carries it out.
#[tokio::test]
async fn a_watcher_is_subscribed_to_exactly_the_records_created_while_it_watched() {
    for when in [
        topsail::Introductions::WhenNeeded,
        topsail::Introductions::WhenCaughtUp,
        topsail::Introductions::AtOnce,
    ] {
        let config = RealtimeConfig {
            introductions: when,
            ..RealtimeConfig::default()
        };
        let zoo = Served::start(config, rooms_and_leave()).await;
        let pets = zoo.app.model::<example_zoo::Pet>();
        let pets = &pets;
        let create = |name: &'static str| async move {
            pets.create(json!({ "name": name })).await.unwrap().id
        };
        let rename = |id: i64, name: &'static str| async move {
            pets.update(id, json!({ "name": name })).await.unwrap();
        };
        let room = |id: i64| format!("sails_model_pet_{id}:pet");
        let mut watcher = zoo.socket().await;
        let watched =
            virtual_request(&mut watcher, 1, "get", json!({"url": "/pet?name=none"})).await;
        assert_eq!(watched["statusCode"], 200);

        // A message to the new record's room.
        let first = create("First").await;
        rename(first, "First again").await;
        assert_eq!(
            pet_events(&mut watcher, 400).await,
            vec![("created".into(), first), ("updated".into(), first)],
            "{when:?}: the watcher hears the update of a record created while it watched"
        );

        // Another socket starting to watch (the class room's members change).
        let second = create("Second").await;
        let mut late = zoo.socket().await;
        virtual_request(&mut late, 1, "get", json!({"url": "/pet?name=none"})).await;
        rename(second, "Second again").await;
        assert_eq!(
            pet_events(&mut late, 400).await,
            vec![],
            "{when:?}: a socket that watches from now on is not subscribed to an earlier record"
        );
        assert_eq!(
            pet_events(&mut watcher, 100).await,
            vec![("created".into(), second), ("updated".into(), second)],
            "{when:?}"
        );

        // The watcher's rooms, through the sockets API.
        let third = create("Third").await;
        let rooms = virtual_request(&mut watcher, 2, "get", json!({"url": "/my-rooms"})).await;
        let rooms: Vec<String> = serde_json::from_value(rooms["body"].clone()).unwrap();
        for id in [first, second, third] {
            assert!(
                rooms.contains(&room(id)),
                "{when:?}: {} in {rooms:?}",
                room(id)
            );
        }

        // Leaving a record's room.
        let fourth = create("Fourth").await;
        let left = virtual_request(
            &mut watcher,
            3,
            "get",
            json!({"url": format!("/leave?room={}", room(fourth))}),
        )
        .await;
        assert_eq!(left["statusCode"], 200);
        rename(fourth, "Fourth again").await;
        rename(first, "First once more").await;
        let heard = pet_events(&mut watcher, 400).await;
        assert!(
            !heard.contains(&("updated".into(), fourth)),
            "{when:?}: left the record's room: {heard:?}"
        );
        assert!(
            heard.contains(&("updated".into(), first)),
            "{when:?}: {heard:?}"
        );
        // The late watcher was introduced to the records created since.
        assert_eq!(
            pet_events(&mut late, 100).await,
            vec![
                ("created".into(), third),
                ("created".into(), fourth),
                ("updated".into(), fourth)
            ],
            "{when:?}"
        );
        zoo.stop().await;
    }
}
