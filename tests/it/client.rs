//! A raw Engine.IO 4 / Socket.IO client for the tests: connect, read a
//! frame (answering pings), send a virtual request and read its answer.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn next_text(ws: &mut Ws) -> String {
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

/// A raw Engine.IO 4 socket to `addr`, its namespace connected.
pub(crate) async fn connected(addr: std::net::SocketAddr) -> Ws {
    let url =
        format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("0{"));
    ws.send(Message::text("40")).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("40{"));
    ws
}

/// Sends a virtual request with ack id `n` and returns the JWR.
pub(crate) async fn virtual_request(ws: &mut Ws, n: u32, verb: &str, payload: Value) -> Value {
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
