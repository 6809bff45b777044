//! The integration suite: one binary, one module per area. Every test that
//! touches a database runs twice, on a fresh SQLite file and on a fresh
//! PostgreSQL schema (the `both!` macro); PostgreSQL must be reachable.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

// A raw Socket.IO client.
mod client;
// The record actions, the routes, and the rules a record's values follow.
mod crud;
// The criteria language: where, limit, skip, sort, select, omit, populate.
mod criteria;
// Associations: populate, add, remove, replace, and what destroy unlinks.
mod associations;
// Policies: axum middleware keyed like Sails policies.
mod policies;
// Socket requests over a real websocket, through the same router.
mod sockets;
// Client mistakes: every one a 4xx with a stable code, never a 500.
mod errors;
// The pub-sub plan of every action (subscriptions, messages, their order), recorded.
mod pubsub;
// String and client-chosen keys, via-less collections.
mod keys;
// App code: the typed API and lifecycle callbacks.
mod typed;
// One record and its populates in one statement, equal to a list's read.
mod nested;
// Concurrent writers and rolled-back changes.
mod concurrency;
// The schema: generated DDL, migration files, the migrator.
mod schema;
// Private and read-only attributes: never sent to, used or set by a client.
mod visibility;
// CSRF protection: tokens over HTTP and sockets, shortcut writes off.
mod csrf;
// Access rules: reads filtered, writes refused, messages per recipient.
mod access;
// One node of a cluster whose Redis is slow: its own sockets do not wait.
mod cluster;
// Conditional requests: ETag, 304, 412 and 428 over HTTP and sockets.
mod conditional;
// Prometheus metrics that move under a scripted scenario.
mod metrics;
// The contracts (OpenAPI, AsyncAPI, TypeScript) against the routes served.
mod contracts;
// What an action publishes reaches its sockets before it answers.
mod ordering;
// The replay log: the find/subscribe race.
mod resume;
// The delivery lanes keep each socket's publish order.
mod lanes;
