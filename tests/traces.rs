//! Traces: a span per request over both transports, SQL and publish under
//! it. In a process of its own: the test reads spans through a subscriber
//! of its thread (`tracing::subscriber::set_default`), and `tracing` caches
//! each callsite's interest process-wide; with the integration suite's
//! other tests hitting the same callsites on other threads at the same
//! time, a span now and then never opened here (`publish`, in about one
//! full run in seven, and again after the interest was rebuilt before the
//! request), whatever the code under test did.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

#[path = "it/client.rs"]
mod client;
#[path = "it/traces.rs"]
mod traces;
