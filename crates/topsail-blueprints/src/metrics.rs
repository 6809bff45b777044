/*!
What every blueprint action reports, over HTTP and sockets alike (socket
requests run through the same routes): a `topsail_requests_total` count
and a `topsail_request_duration_seconds` histogram by model, action and
transport (the count also by status), through the `metrics` facade (free
when the app installs no recorder), and a `blueprint` span around the
action, under whatever span the app's own layers opened for the request.

Labels are the model's identity, the action's name, `http` or `socket`
and the status code: a few hundred series at most, never a record id.
*/

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use topsail_core::Actor;
use tracing::Instrument;

use crate::BlueprintAction;

/// Times and counts one blueprint request.
pub(crate) async fn measure(action: BlueprintAction, req: Request, next: Next) -> Response {
    let transport = transport(&req);
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
    let labels = [
        ("model", action.model),
        ("action", action.action),
        ("transport", transport),
    ];
    metrics::histogram!("topsail_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "topsail_requests_total",
        "model" => action.model,
        "action" => action.action,
        "transport" => transport,
        "status" => status.to_string(),
    )
    .increment(1);
    // Which action answered, for the app's outer layers (and the tests
    // that check a description of the API against the router).
    res.extensions_mut().insert(action);
    res
}

/// `socket` for a socket's virtual request, else `http`.
fn transport(req: &Request) -> &'static str {
    match req.extensions().get::<Actor>() {
        Some(actor) if actor.is_socket() => "socket",
        _ => "http",
    }
}
