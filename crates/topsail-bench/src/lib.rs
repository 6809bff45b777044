//! The load generator: a minimal HTTP/1.1 keep-alive client, and a socket
//! client that speaks Engine.IO 3 / Socket.IO 4 and the sails.io.js request
//! frames itself, light enough to hold 10,000 sockets on a 2-core machine
//! (the Node client cannot).

pub mod process;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// A result with a message.
pub type Result<T, E = String> = std::result::Result<T, E>;

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Http {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Http {
    /// Connects to `addr` (`127.0.0.1:1337`).
    pub async fn connect(addr: &str) -> Result<Self> {
        let tcp = TcpStream::connect(addr).await.map_err(e)?;
        tcp.set_nodelay(true).map_err(e)?;
        Ok(Http {
            stream: BufReader::new(tcp),
            host: addr.to_owned(),
        })
    }

    /// Sends one request and reads the whole response: `(status, body)`.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        json_body: Option<&str>,
    ) -> Result<(u16, Vec<u8>)> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(b) = json_body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        if let Some(b) = json_body {
            req.push_str(b);
        }
        self.stream
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(e)?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await.map_err(e)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.map_err(e)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().map_err(e)?;
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await.map_err(e)?;
        Ok((status, body))
    }
}

/// What a socket does with the events it receives: it is given the frame's
/// JSON array (`["pet",{...}]`) as text and parses what it needs, so the
/// load generator spends as little CPU per event as a real client would.
pub type OnEvent = Arc<dyn Fn(&str) + Send + Sync>;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<u16>>>>;

/// The part of a JWR ack the load generator reads.
#[derive(serde::Deserialize)]
struct AckStatus {
    #[serde(rename = "statusCode")]
    status_code: u16,
}

/// A socket speaking the protocol of sails.io.js 1.2.1 (Engine.IO 3).
#[derive(Clone, Debug)]
pub struct Socket {
    tx: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next: Arc<AtomicU64>,
    /// Its id (the Engine.IO session id, as socket.io-client 2 has it).
    pub sid: Arc<str>,
    /// Its connection's tasks, to drop it as a network would.
    tasks: Arc<Vec<tokio::task::AbortHandle>>,
    /// Set when the server closed its connection.
    pub closed: Arc<std::sync::atomic::AtomicBool>,
}

/// How a socket connects, besides its address.
#[derive(Clone, Debug, Default)]
pub struct Handshake {
    /// A `Cookie` header (the `topsail.rid` resume key a browser keeps).
    pub cookie: Option<String>,
    /// More query parameters (`&topsail_sid=...&topsail_seq=...`).
    pub query: String,
}

impl Socket {
    /// Connects to `ws://addr/socket.io/`; `on_event` sees every server
    /// push (`42["pet",{...}]`).
    pub async fn connect(addr: &str, on_event: OnEvent) -> Result<Self> {
        Self::connect_with(addr, on_event, &Handshake::default()).await
    }

    /// [`Socket::connect`] with a cookie and more query parameters.
    pub async fn connect_with(addr: &str, on_event: OnEvent, hs: &Handshake) -> Result<Self> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "ws://{addr}/socket.io/?__sails_io_sdk_version=1.2.1&__sails_io_sdk_platform=node&__sails_io_sdk_language=javascript&EIO=3&transport=websocket{}",
            hs.query
        );
        let mut req = url.into_client_request().map_err(e)?;
        if let Some(c) = &hs.cookie {
            req.headers_mut().insert("cookie", c.parse().map_err(e)?);
        }
        // Nagle off, as browsers do for websockets.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true)
            .await
            .map_err(e)?;
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let (ready_tx, ready_rx) = oneshot::channel::<String>();
        let writer = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        // Engine.IO 3: the client pings.
        let ping = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(20));
            tick.tick().await;
            loop {
                tick.tick().await;
                if ping.send(Message::text("2")).is_err() {
                    break;
                }
            }
        });
        let p = pending.clone();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed_by_server = closed.clone();
        let reader = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut sid = String::new();
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(t) = m else { continue };
                let t = t.as_str();
                if let Some(open) = t.strip_prefix('0') {
                    #[derive(serde::Deserialize)]
                    struct Open {
                        sid: String,
                    }
                    if let Ok(o) = serde_json::from_str::<Open>(open) {
                        sid = o.sid;
                    }
                } else if t.starts_with("40") {
                    if let Some(r) = ready.take() {
                        let _ = r.send(std::mem::take(&mut sid));
                    }
                } else if let Some(rest) = t.strip_prefix("43") {
                    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                    let (id, payload) = rest.split_at(digits);
                    // `[jwr]`: only the status is read; the body is scanned
                    // (the JSON is validated) but not built.
                    if let (Ok(id), Ok((ack,))) = (
                        id.parse::<u64>(),
                        serde_json::from_str::<(AckStatus,)>(payload),
                    ) {
                        let tx = p.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                        if let Some(tx) = tx {
                            let _ = tx.send(ack.status_code);
                        }
                    }
                } else if let Some(rest) = t.strip_prefix("42") {
                    on_event(rest);
                }
            }
            closed_by_server.store(true, Ordering::Release);
        });
        let sid = tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .map_err(|_| "no namespace connect".to_owned())?
            .map_err(e)?;
        Ok(Socket {
            tx,
            pending,
            next: Arc::new(AtomicU64::new(0)),
            sid: Arc::from(sid),
            tasks: Arc::new(vec![reader.abort_handle(), writer.abort_handle()]),
            closed,
        })
    }

    /// Drops the connection without a goodbye, as a network that went
    /// away does (the server sees its TCP connection end).
    pub fn drop_connection(&self) {
        for t in self.tasks.iter() {
            t.abort();
        }
    }

    /// A virtual request; resolves with the JWR's status code.
    pub async fn request(&self, method: &str, url: &str, data: Value) -> Result<u16> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let frame = format!(
            "42{id}{}",
            json!([method, {"method": method, "headers": {}, "data": data, "url": url}])
        );
        self.tx.send(Message::text(frame)).map_err(e)?;
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| format!("no ack for {method} {url}"))?
            .map_err(e)
    }

    /// Closes the socket.
    pub fn close(&self) {
        let _ = self.tx.send(Message::Close(None));
    }
}

/// A `pet` message as the load generator reads it, in borrowed fields (no
/// tree is built): `["pet",{"verb":"created","data":{"name":"b17",...}},seq]`
/// (topsail numbers its messages; Sails and the limit do not).
#[derive(Debug)]
pub struct PetEvent<'a> {
    /// `created`, `updated`, ...
    pub verb: std::borrow::Cow<'a, str>,
    /// The record's `name`.
    pub name: Option<std::borrow::Cow<'a, str>>,
    /// The message's sequence number, when the server numbers them.
    pub seq: Option<u64>,
}

#[derive(serde::Deserialize)]
struct PetFrame<'a>(
    #[serde(borrow)] std::borrow::Cow<'a, str>,
    #[serde(borrow)] PetMessage<'a>,
    #[serde(default)] Option<u64>,
);

#[derive(serde::Deserialize)]
struct PetMessage<'a> {
    #[serde(borrow)]
    verb: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: PetData<'a>,
}

#[derive(serde::Deserialize)]
struct PetData<'a> {
    #[serde(borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
}

/// Reads a server push (`42` stripped) as a `pet` message; `None` for
/// anything else.
pub fn pet_event(frame: &str) -> Option<PetEvent<'_>> {
    let PetFrame(event, msg, seq) = serde_json::from_str(frame).ok()?;
    (event == "pet").then_some(PetEvent {
        verb: msg.verb,
        name: msg.data.name,
        seq,
    })
}

/// Percentiles of latencies in microseconds.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::pet_event;

    #[test]
    fn a_pet_event_is_read_with_or_without_its_sequence_number() {
        let numbered = r#"["pet",{"verb":"created","data":{"name":"b7"},"id":7},1764512345678901]"#;
        let e = pet_event(numbered).unwrap();
        assert_eq!(
            (&*e.verb, e.name.as_deref(), e.seq),
            ("created", Some("b7"), Some(1764512345678901))
        );
        let plain = r#"["pet",{"verb":"created","data":{"name":"b7"},"id":7}]"#;
        assert_eq!(pet_event(plain).unwrap().seq, None, "Sails and the limit");
        assert!(pet_event(r#"["user",{"verb":"created","data":{}}]"#).is_none());
    }
}
