//! Traces: one `request` span per request, HTTP or socket, with the same
//! fields, and under it the blueprint action, a span per SQL statement
//! and the publish.

use std::sync::{Arc, Mutex};

use serde_json::json;
use topsail::{Model, Topsail};
use topsail_tests::{Db, fresh_store};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::client::{connected, virtual_request};

#[derive(Model, Debug, Clone)]
struct Trail {
    id: i64,
    #[model(required)]
    name: String,
}

/// A span as it was opened: its name, its `transport` field, and the
/// names of the spans it is nested in, innermost first.
#[derive(Debug, Clone)]
struct Opened {
    name: &'static str,
    transport: Option<String>,
    within: Vec<&'static str>,
}

/// Records every span opened.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Opened>>>);

struct Transport(Option<String>);

impl tracing::field::Visit for Transport {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "transport" {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut transport = Transport(None);
        attrs.record(&mut transport);
        let within = ctx
            .span(id)
            .map(|s| s.scope().skip(1).map(|p| p.name()).collect())
            .unwrap_or_default();
        let opened = Opened {
            name: attrs.metadata().name(),
            transport: transport.0,
            within,
        };
        self.0.lock().unwrap().push(opened);
    }
}

impl Spans {
    fn take(&self) -> Vec<Opened> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Computes every callsite's interest again, this thread's subscriber
/// included. Other tests' threads (with no subscriber) register callsites
/// concurrently, and one registered while `set_default` rebuilt the cache
/// can keep the interest computed without this subscriber: its spans then
/// never open here (a `publish` span went missing about once in seven
/// full runs).
fn settle_interest() {
    tracing::callsite::rebuild_interest_cache();
}

#[tokio::test]
async fn a_request_has_one_span_with_its_action_statements_and_publish_under_it() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry()
        .with(spans.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    // This test's thread only (a current-thread runtime: every task of the
    // app and its server runs here).
    let _default = tracing::subscriber::set_default(subscriber);

    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let app = Topsail::builder()
        .model::<Trail>()
        .store(store.clone())
        .realtime(topsail::RealtimeConfig::default())
        .create_schema()
        .build()
        .await
        .unwrap();
    let router = app.serve(app.blueprints().router());
    let (addr, server) = topsail_tests::serve_on_free_port(router).await;
    spans.take();
    settle_interest();

    // Over HTTP: a create (statements, then the publish).
    let res = raw_post(addr, "/trail", r#"{"name":"a"}"#).await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let http = spans.take();
    let requests: Vec<_> = http.iter().filter(|s| s.name == "request").collect();
    assert_eq!(requests.len(), 1, "{http:#?}");
    assert_eq!(requests[0].transport.as_deref(), Some("http"));
    let action = ["blueprint", "request"];
    assert!(
        http.iter()
            .any(|s| s.name == "blueprint" && s.within == ["request"]),
        "{http:#?}"
    );
    let sql: Vec<_> = http.iter().filter(|s| s.name == "sql").collect();
    assert!(!sql.is_empty(), "the insert: {http:#?}");
    // The write runs on a task of its own (it outlives a client that
    // leaves): its statements still nest under the request.
    assert!(sql.iter().all(|s| s.within.ends_with(&action)), "{sql:#?}");
    assert!(
        http.iter()
            .any(|s| s.name == "publish" && s.within.ends_with(&action)),
        "{http:#?}"
    );

    // Over a socket: the same span, its statements under it.
    let mut ws = connected(addr).await;
    spans.take();
    settle_interest();
    let jwr = virtual_request(&mut ws, 1, "get", json!({"url": "/trail/1"})).await;
    assert_eq!(jwr["statusCode"], 200);
    let socket = spans.take();
    let requests: Vec<_> = socket.iter().filter(|s| s.name == "request").collect();
    assert_eq!(requests.len(), 1, "{socket:#?}");
    assert_eq!(requests[0].transport.as_deref(), Some("socket"));
    assert!(
        socket
            .iter()
            .any(|s| s.name == "sql" && s.within.ends_with(&action)),
        "{socket:#?}"
    );

    drop(ws);
    server.abort();
    app.close_sockets().await;
    store.close().await;
    cleanup.run().await;
}

/// A POST over a plain TCP connection; the raw answer.
async fn raw_post(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    raw
}
