//! Metrics: a scripted scenario over HTTP and a real socket moves the
//! series `GET /metrics` renders, by exactly what it did.

use std::collections::HashMap;

use serde_json::json;
use topsail::{Model, Topsail};
use topsail_tests::{Db, fresh_store};

use crate::sockets::{connected, next_text, virtual_request};

/// A model no other test uses, so the series labelled with it move only
/// with this test (the recorder is the process's).
#[derive(Model, Debug, Clone)]
struct Meter {
    id: i64,
    #[model(required)]
    label: String,
}

/// The samples of a Prometheus text page, by series (`name{labels}`).
fn samples(page: &str) -> HashMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(base: &str) -> HashMap<String, f64> {
    let res = reqwest_get(&format!("{base}/metrics")).await;
    assert!(res.0.starts_with("text/plain"), "{}", res.0);
    samples(&res.1)
}

/// A plain HTTP/1.1 GET over TCP: content type and body.
async fn reqwest_get(url: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let ct = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or("")
        .to_owned();
    (ct, body.to_owned())
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

async fn a_scripted_scenario_moves_the_metrics(db: Db) {
    let (store, cleanup) = fresh_store(db).await;
    let app = Topsail::builder()
        .model::<Meter>()
        .store(store.clone())
        .realtime(topsail::RealtimeConfig::default())
        .create_schema()
        .build()
        .await
        .unwrap();
    let routes = app.metrics_router().unwrap();
    let router = app.serve(app.blueprints().mount(routes));
    let (addr, server) = topsail_tests::serve_on_free_port(router).await;
    let base = format!("http://{addr}");
    let before = scrape(&base).await;
    assert_eq!(before["topsail_sockets_connected"], 0.0);

    // A socket watches the model (its find subscribes it), HTTP creates
    // twice and misses once.
    let mut ws = connected(addr).await;
    let jwr = virtual_request(&mut ws, 1, "get", json!({"url": "/meter"})).await;
    assert_eq!(jwr["statusCode"], 200);
    for label in ["a", "b"] {
        let r = topsail_tests::call(
            &app_router(&app),
            None,
            http::Method::POST,
            "/meter",
            Some(json!({"label": label})),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let missing = reqwest_get(&format!("{base}/meter/999")).await;
    assert_eq!(missing.1, "Not Found");
    // Both `created` reached the socket: their batches are done.
    let mut heard = 0;
    while heard < 2 {
        if next_text(&mut ws).await.starts_with("42[\"meter\"") {
            heard += 1;
        }
    }

    let after = scrape(&base).await;
    let requests = |action: &str, transport: &str, status: u16| {
        let series = format!(
            "topsail_requests_total{{model=\"meter\",action=\"{action}\",transport=\"{transport}\",status=\"{status}\"}}"
        );
        delta(&before, &after, &series)
    };
    assert_eq!(requests("find", "socket", 200), 1.0);
    assert_eq!(requests("create", "http", 200), 2.0);
    assert_eq!(requests("findOne", "http", 404), 1.0);
    let timed = "topsail_request_duration_seconds_count{model=\"meter\",action=\"create\",transport=\"http\"}";
    assert_eq!(delta(&before, &after, timed), 2.0);
    let created = "topsail_messages_total{model=\"meter\",verb=\"created\"}";
    assert_eq!(delta(&before, &after, created), 2.0);
    assert!(delta(&before, &after, "topsail_publish_lag_seconds_count") >= 2.0);
    assert!(delta(&before, &after, "topsail_db_acquire_wait_seconds_count") >= 3.0);
    // The gauges read at the scrape: this app's one socket, in the model's
    // class room and the two new records' rooms.
    assert_eq!(after["topsail_sockets_connected"], 1.0);
    assert_eq!(after["topsail_rooms"], 3.0, "{after:?}");
    assert_eq!(after["topsail_room_memberships"], 3.0);
    assert_eq!(after["topsail_publisher_queue_depth"], 0.0);
    assert_eq!(after["topsail_cluster_up"], 1.0);
    assert_eq!(after["topsail_slow_readers"], 0.0, "every socket reads");
    assert!(after["topsail_db_connections_max"] >= 1.0);
    // No series names a record or a room.
    assert!(
        after
            .keys()
            .all(|s| !s.contains("sails_model") && !s.contains("999")),
        "{:?}",
        after
            .keys()
            .filter(|s| s.contains("sails_model") || s.contains("999"))
            .collect::<Vec<_>>()
    );

    drop(ws);
    server.abort();
    app.close_sockets().await;
    store.close().await;
    cleanup.run().await;
}

/// The blueprints, for requests made in process.
fn app_router(app: &Topsail) -> axum::Router {
    app.blueprints().router()
}

/// On each database in turn: the two runs share the process's recorder,
/// so they must not overlap.
#[tokio::test]
async fn a_scripted_scenario_moves_the_metrics_on_both_databases() {
    a_scripted_scenario_moves_the_metrics(Db::Sqlite).await;
    a_scripted_scenario_moves_the_metrics(Db::Postgres).await;
}
