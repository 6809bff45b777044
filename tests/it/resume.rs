//! What a socket is sent from the replay log: the messages its rooms got
//! while it read (the find/subscribe race), each with its sequence number.

use futures_util::StreamExt;
use serde_json::{Value, json};
use topsail::core::pubsub::{Effect, now_us};
use topsail_tests::{Db, fresh_store};

use crate::sockets::{Ws, next_text};

/// A raw Engine.IO 4 socket to `addr`, with its socket id.
async fn connected_with_id(addr: std::net::SocketAddr) -> (Ws, String) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let url =
        format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("0{"));
    ws.send(Message::text("40")).await.unwrap();
    let connect = next_text(&mut ws).await;
    let body: Value = serde_json::from_str(connect.strip_prefix("40").unwrap()).unwrap();
    (ws, body["sid"].as_str().unwrap().to_owned())
}

fn updated(room: &str, id: i64) -> Effect {
    Effect::Broadcast {
        room: room.to_owned(),
        event: "pet",
        payload: json!({"verb": "updated", "id": id, "data": {"name": "Changed"}}),
        omit: None,
        guard: None,
    }
}

/// The first frame other than a ping `ws` receives within `ms` (Engine.IO
/// 4 servers ping every 25 s: a slow run reaches the first one).
async fn quiet_for(ws: &mut Ws, ms: u64) -> Option<String> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                ws.send(Message::text("3")).await.ok()?;
            }
            Ok(Some(Ok(m))) => return Some(m.to_string()),
            _ => return None,
        }
    }
}

/// A change published after a read's query began and before its socket
/// joined the record's room (the read did not see it; the socket was not
/// there to hear it) is sent to the socket when it joins, with its
/// sequence number; a join that names no read moment is sent nothing.
#[tokio::test]
async fn a_read_is_sent_what_its_rooms_got_between_its_query_and_its_join() {
    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let app = example_zoo::builder()
        .store(store.clone())
        .realtime(topsail::RealtimeConfig::default())
        .build()
        .await
        .unwrap();
    let router = app.serve(app.blueprints().router());
    let (addr, server) = topsail_tests::serve_on_free_port(router).await;
    let (mut ws, sid) = connected_with_id(addr).await;
    let publisher = app.engine().publisher();
    let (raced, plain) = ("sails_model_pet_1:pet", "sails_model_pet_2:pet");

    let read_began = now_us();
    publisher.publish(vec![updated(raced, 1)]).await;
    publisher
        .publish(vec![Effect::Join {
            socket: sid.as_str().into(),
            rooms: vec![raced.to_owned()],
            read_at: Some(read_began),
        }])
        .await;
    let frame = next_text(&mut ws).await;
    let args: Vec<Value> = serde_json::from_str(frame.strip_prefix("42").unwrap()).unwrap();
    assert_eq!(args[0], "pet");
    assert_eq!(args[1]["id"], 1);
    let seq = args[2]
        .as_u64()
        .expect("a sequence number after the payload");
    assert!(seq > read_began, "{seq} after {read_began}");

    publisher.publish(vec![updated(plain, 2)]).await;
    publisher
        .publish(vec![Effect::Join {
            socket: sid.as_str().into(),
            rooms: vec![plain.to_owned()],
            read_at: None,
        }])
        .await;
    assert_eq!(
        quiet_for(&mut ws, 300).await,
        None,
        "nothing to catch up on"
    );

    // Already in the room: what it heard live is not sent twice.
    let again = now_us();
    publisher.publish(vec![updated(raced, 1)]).await;
    let live = next_text(&mut ws).await;
    assert!(live.starts_with("42[\"pet\""), "{live}");
    publisher
        .publish(vec![Effect::Join {
            socket: sid.as_str().into(),
            rooms: vec![raced.to_owned()],
            read_at: Some(again),
        }])
        .await;
    assert_eq!(quiet_for(&mut ws, 300).await, None, "not a repeat");

    drop(ws);
    server.abort();
    app.close_sockets().await;
    store.close().await;
    cleanup.run().await;
}

/// A single process with a restart file journals its replay log as it
/// goes, and the next process reads it back before it serves: every entry,
/// those of a model with a read rule too (with their guards). The journal
/// goes on: a third process reads both. (A process killed mid-way is
/// `tests/e2e/reconnect.test.js`'s SIGKILL case.)
#[tokio::test]
async fn the_next_process_reads_back_the_journal_of_the_last() {
    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let file = std::env::temp_dir().join(format!(
        "topsail-saved-log-{}-{}.json",
        std::process::id(),
        now_us()
    ));
    let build = || {
        example_zoo::builder()
            .store(store.clone())
            .rules(topsail::Rules::new().read::<example_zoo::Pet>(|_| topsail::Access::All))
            .realtime(topsail::RealtimeConfig {
                replay: topsail::ReplayConfig {
                    restart_file: Some(file.clone()),
                    ..topsail::ReplayConfig::default()
                },
                ..topsail::RealtimeConfig::default()
            })
            .build()
    };
    let first = build().await.unwrap();
    let pets = first.model::<example_zoo::Pet>();
    for i in 0..10 {
        pets.create(json!({"name": format!("P{i}")})).await.unwrap();
    }
    let logged = first.sockets().unwrap().replay_census().0;
    assert!(logged >= 10, "logged {logged}");
    let journal = std::path::PathBuf::from(format!("{}.journal", file.display()));
    let journaled = || -> u64 {
        std::fs::read_dir(&journal)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    assert!(journaled() > 0, "journaled as it went, before any shutdown");
    assert!(first.shutdown(std::time::Duration::from_secs(5)).await);

    let next = build().await.unwrap();
    assert_eq!(next.sockets().unwrap().replay_census().0, logged);
    let pets = next.model::<example_zoo::Pet>();
    for i in 0..5 {
        pets.create(json!({"name": format!("Q{i}")})).await.unwrap();
    }
    let both = next.sockets().unwrap().replay_census().0;
    assert!(both >= logged + 5, "{both}");
    assert!(next.shutdown(std::time::Duration::from_secs(5)).await);

    let third = build().await.unwrap();
    assert_eq!(third.sockets().unwrap().replay_census().0, both);
    third.close_sockets().await;
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir_all(&journal);
    store.close().await;
    cleanup.run().await;
}
