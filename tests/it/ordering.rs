//! The order a socket sees: what an action publishes is handed to every
//! local socket before the action answers, as in Sails (where a
//! broadcast reaches the sockets' buffers before the response goes out).

use serde_json::{Value, json};
use topsail::EngineConfig;
use topsail_tests::{Db, fresh_store};

use crate::sockets::{Ws, connected, next_text};

/// Sends a virtual request and returns every frame up to and including
/// its acknowledgement.
async fn frames_until_ack(ws: &mut Ws, n: u32, verb: &str, payload: Value) -> Vec<String> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(format!("42{n}{}", json!([verb, payload]))))
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let frame = next_text(ws).await;
        let done = frame.starts_with(&format!("43{n}"));
        seen.push(frame);
        if done {
            return seen;
        }
    }
}

/// With `mirror` on, a socket that updates a record it is subscribed to
/// gets the `updated` message before the answer to its own request, every
/// time: the request answers only once the publisher has handed its batch
/// to the sockets. (On two worker threads, without that wait the answer
/// came first in each of three runs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actions_own_message_reaches_its_socket_before_its_answer() {
    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let config = EngineConfig {
        mirror: true,
        ..EngineConfig::default()
    };
    let app = example_zoo::builder()
        .store(store.clone())
        .config(config)
        .realtime(topsail::RealtimeConfig::default())
        .build()
        .await
        .unwrap();
    let router = app.serve(app.blueprints().router());
    let (addr, server) = topsail_tests::serve_on_free_port(router).await;
    let pet = app
        .model::<example_zoo::Pet>()
        .create(json!({"name": "Ace"}))
        .await
        .unwrap();

    let mut ws = connected(addr).await;
    let url = format!("/pet/{}", pet.id);
    let read = frames_until_ack(&mut ws, 1, "get", json!({"url": url})).await;
    assert_eq!(read.len(), 1, "{read:?}");
    for i in 0..20u32 {
        let patch = json!({"url": url, "data": {"name": format!("Ace {i}")}});
        let frames = frames_until_ack(&mut ws, 100 + i, "patch", patch).await;
        let message = frames
            .iter()
            .position(|f| f.starts_with("42[\"pet\"") && f.contains("\"updated\""));
        assert_eq!(
            message.map(|at| at + 2),
            Some(frames.len()),
            "write {i}: the message, then the answer: {frames:?}"
        );
    }
    drop(ws);
    server.abort();
    app.close_sockets().await;
    store.close().await;
    cleanup.run().await;
}
