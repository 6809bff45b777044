/*!
Prometheus metrics: the recorder the `metrics` facade reports to, and the
route that renders it, with what is read at each scrape (gauges of the
sockets, the publisher queue and the database pool).

topsail's crates report through the `metrics` facade, which costs nothing
until a recorder is installed: [`Topsail::metrics_router`] installs
`metrics-exporter-prometheus`'s, once per process. An app that installs
its own recorder gets the same series from it (and the gauges below by
calling [`Topsail::sample_metrics`] before it renders).

| Series | Kind | Labels |
|---|---|---|
| `topsail_requests_total` | counter | `model`, `action`, `transport` (`http`, `socket`), `status` |
| `topsail_request_duration_seconds` | histogram | `model`, `action`, `transport` |
| `topsail_messages_total` | counter: model messages published by this node | `model`, `verb` |
| `topsail_message_recipients` | histogram: this node's recipients of one message in 16 (those a read rule lets read it, for a guarded one) | |
| `topsail_publish_lag_seconds` | histogram: from an action's commit to its messages handed to every local socket | |
| `topsail_publisher_queue_depth` | gauge: actions whose messages wait | |
| `topsail_sockets_connected` | gauge | |
| `topsail_rooms`, `topsail_room_memberships` | gauge: distinct rooms of this node's sockets, and memberships | |
| `topsail_slow_consumer_disconnects_total` | counter: sockets disconnected because they stopped reading | |
| `topsail_messages_missed_total` | counter: deliveries lost to a full socket queue (a socket cut with messages waiting for it, or not found by its probe) | |
| `topsail_slow_readers` | gauge: sockets messages wait for beyond their full outgoing queue | |
| `topsail_relay_dropped_total` | counter: effect batches not relayed to the other nodes (the relay queue was full while Redis was away) | |
| `topsail_relay_gaps_total` | counter: other nodes' effect batches that never came here (their relay overflowed, or Redis lost them) | |
| `topsail_relay_repeats_total` | counter: other nodes' effect batches that came twice (a timed-out write Redis had taken, written again) and were dropped | |
| `topsail_resumes_total` | counter: sockets taken back | `outcome` (`replayed`, `resync`, `unknown`) |
| `topsail_replayed_messages_total` | counter: messages replayed to sockets taken back | |
| `topsail_resyncs_sent_total` | counter: `topsail:resync` sent to connected sockets | `reason` (`relay-gap`) |
| `topsail_cluster_up` | gauge: 1 when the other nodes are reachable (or there is no cluster), 0 while this node works alone | |
| `topsail_cluster_breaker_openings_total` | counter: times this node started working alone | |
| `topsail_db_connections_in_use`, `topsail_db_connections_max` | gauge | |
| `topsail_db_acquire_wait_seconds` | histogram: waiting for a database connection | |

Every label has a handful of values (models, actions, verbs, statuses):
never a record id, a room or a socket.
*/

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::Topsail;

/// Seconds: from a tenth of a millisecond to ten seconds.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Recipients of one message.
const RECIPIENTS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0, 50000.0,
];

/// How often the histograms' samples are folded in.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("could not install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

/// The process's Prometheus recorder, installed at the first call.
fn recorder() -> Result<&'static PrometheusHandle, MetricsError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    let installed = HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("topsail_message_recipients".into()),
                    RECIPIENTS,
                )
            })
            .map_err(|e| e.to_string())?;
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
        // A histogram keeps its samples until upkeep folds them in: without
        // it, a server nobody scrapes would grow by every request.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("topsail-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(handle)
    });
    installed.as_ref().map_err(|e| MetricsError(e.clone()))
}

impl Topsail {
    /// A router serving `GET /metrics` in the Prometheus text format,
    /// installing the recorder for this process at the first call (an
    /// error when another recorder is installed already). Mount it where
    /// only the scraper reaches it, or behind a policy: it shows request
    /// rates and model names.
    pub fn metrics_router<S: Clone + Send + Sync + 'static>(
        &self,
    ) -> Result<axum::Router<S>, MetricsError> {
        let handle = recorder()?;
        let app = self.clone();
        let render = move || {
            let app = app.clone();
            async move { app.render_metrics(handle) }
        };
        Ok(axum::Router::new().route("/metrics", axum::routing::get(render)))
    }

    fn render_metrics(&self, handle: &PrometheusHandle) -> Response {
        self.sample_metrics();
        let mut res = handle.render().into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        res
    }

    /// Sets the gauges and totals that are read rather than counted: the
    /// publisher queue, the sockets and their rooms, the database pool.
    /// [`Topsail::metrics_router`] calls it at every scrape; an app with
    /// its own recorder calls it before rendering. Walks every socket's
    /// rooms (a scrape's work, not a message's).
    pub fn sample_metrics(&self) {
        metrics::gauge!("topsail_publisher_queue_depth").set(self.publisher_queue_depth() as f64);
        let (in_use, max) = self.store().connections();
        metrics::gauge!("topsail_db_connections_in_use").set(in_use as f64);
        metrics::gauge!("topsail_db_connections_max").set(max as f64);
        if let Some(sockets) = self.sockets() {
            let census = sockets.census();
            metrics::gauge!("topsail_sockets_connected").set(census.sockets as f64);
            metrics::gauge!("topsail_rooms").set(census.rooms as f64);
            metrics::gauge!("topsail_room_memberships").set(census.memberships as f64);
            metrics::gauge!("topsail_cluster_up").set(f64::from(u8::from(sockets.cluster_up())));
            let (logged, parked) = sockets.replay_census();
            metrics::gauge!("topsail_replay_log_entries").set(logged as f64);
            metrics::gauge!("topsail_parked_sockets").set(parked as f64);
            metrics::counter!("topsail_slow_consumer_disconnects_total")
                .absolute(sockets.stalled_disconnects());
            metrics::counter!("topsail_messages_missed_total")
                .absolute(sockets.missed_by_full_queues());
            metrics::gauge!("topsail_slow_readers").set(sockets.slow_readers_waited_for() as f64);
            metrics::counter!("topsail_relay_dropped_total").absolute(sockets.relay_dropped());
        }
    }
}
