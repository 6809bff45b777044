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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
            // Engine.IO 4 servers ping; a client answers and reads on.
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                ws.send(Message::text("3")).await.unwrap()
            }
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(_))) => {}
            other => panic!("no frame: {other:?}"),
        }
    }
}

/// Sends a virtual request with ack id `n` and returns the JWR.
async fn virtual_request(ws: &mut Ws, n: u32, verb: &str, payload: Value) -> Value {
    ws.send(Message::text(format!("42{n}{}", json!([verb, payload]))))
        .await
        .unwrap();
    loop {
        let frame = next_text(ws).await;
        if let Some(rest) = frame.strip_prefix(&format!("43{n}")) {
            let acked: Vec<Value> = serde_json::from_str(rest).unwrap();
            return acked.into_iter().next().unwrap();
        }
    }
}

#[tokio::test]
async fn policies_guard_socket_requests_too() {
    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let app = example_zoo::builder()
        .store(store.clone())
        .realtime(RealtimeConfig::default())
        .build()
        .await
        .unwrap();
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
