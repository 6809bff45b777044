/*!
What every blueprint action reports, over HTTP and sockets alike (socket
requests run through the same routes): a `topsail_requests_total` count
and a `topsail_request_duration_seconds` histogram by model, action and
transport (the count also by status), through the `metrics` facade (free
when the app installs no recorder), and a `blueprint` span around the
action, under whatever span the app's own layers opened for the request.
The response carries the [`BlueprintAction`] in its extensions.

Labels are the model's identity, the action's name, `http` or `socket`
and the status code: a few hundred series at most, never a record id.

Each route keeps its metric handles, made at its first request: looking a
series up by its labels at every request (a key built, hashed and found)
cost about a fifth of a `GET /user/1` on this machine's allocator, where
a handle is one atomic add. A recorder installed after a route's first
request is therefore not seen by it: install it before serving.
*/

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};
use topsail_core::Actor;
use tracing::Instrument;

use crate::BlueprintAction;

/// A route's metric handles, per transport.
#[derive(Clone, Default)]
pub(crate) struct RouteMetrics(Arc<[Handles; 2]>);

#[derive(Default)]
struct Handles {
    duration: OnceLock<Histogram>,
    /// By status: a route answers a handful.
    counts: RwLock<Vec<(u16, Counter)>>,
}

impl Handles {
    fn duration(&self, action: &BlueprintAction, transport: &'static str) -> &Histogram {
        self.duration.get_or_init(|| {
            metrics::histogram!(
                "topsail_request_duration_seconds",
                "model" => action.model,
                "action" => action.action,
                "transport" => transport,
            )
        })
    }

    fn count(&self, action: &BlueprintAction, transport: &'static str, status: u16) {
        let known = self.counts.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = known.iter().find(|(s, _)| *s == status) {
            c.increment(1);
            return;
        }
        drop(known);
        let counter = metrics::counter!(
            "topsail_requests_total",
            "model" => action.model,
            "action" => action.action,
            "transport" => transport,
            "status" => status.to_string(),
        );
        counter.increment(1);
        let mut known = self.counts.write().unwrap_or_else(|e| e.into_inner());
        if !known.iter().any(|(s, _)| *s == status) {
            known.push((status, counter));
        }
    }
}

/// Times and counts one blueprint request.
pub(crate) async fn measure(
    action: BlueprintAction,
    handles: RouteMetrics,
    req: Request,
    next: Next,
) -> Response {
    let (transport, at) = transport(&req);
    let span = tracing::info_span!(
        "blueprint",
        model = action.model,
        action = action.action,
        transport,
        status = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    span.record("status", status);
    let own = &handles.0[at];
    own.duration(&action, transport)
        .record(started.elapsed().as_secs_f64());
    own.count(&action, transport, status);
    // Which action answered, for the app's outer layers (and the tests
    // that check a description of the API against the router).
    res.extensions_mut().insert(action);
    res
}

/// `socket` for a socket's virtual request, else `http`; and its slot.
fn transport(req: &Request) -> (&'static str, usize) {
    match req.extensions().get::<Actor>() {
        Some(actor) if actor.is_socket() => ("socket", 1),
        _ => ("http", 0),
    }
}
