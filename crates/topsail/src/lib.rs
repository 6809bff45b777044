#![doc = include_str!("../../../README.md")]

mod app;
mod contract;
mod identity;
mod metrics;
mod typed;

pub use app::{Builder, StartError, Topsail, shutdown_signal};
pub use identity::{Identify, IdentityLayer, IdentityService};
pub use metrics::MetricsError;
pub use typed::Models;

/// Re-exported for implementing [`Publisher`] and the store traits.
pub use async_trait::async_trait;
pub use topsail_blueprints::{
    BlueprintAction, Blueprints, Csrf, Params, Policy, name_errors, parse_qs,
};
pub use topsail_contract::security as contract_security;
pub use topsail_contract::{Contracts, OpenApi};
pub use topsail_core::access::{Access, Denied, Principal, PrincipalSlot, Rules};
pub use topsail_core::criteria::{Criteria, Populate};
pub use topsail_core::http::UsageRejection;
pub use topsail_core::pubsub::{
    Actor, Effect, NoPublisher, Publisher, RecordingPublisher, class_room, record_room,
};
pub use topsail_core::{
    DecodeError, Engine, EngineConfig, Error, Lifecycle, Link, Model, ModelDef, Pk, Record,
    Registry, RegistryError, Result, UsageCode,
};
pub use topsail_macros::Model;
pub use topsail_socket::{
    AdapterFailure, BeforeConnect, Census, ConnectRequest, Connection, DEFAULT_REDIS_PREFIX,
    DEFAULT_STALLED_AFTER, Introductions, NotASocketRequest, RESUME_COOKIE, RESUME_SCRIPT_PATH,
    RESUMES_AT_ONCE, RESYNC_EVENT, RealtimeConfig, ReplayConfig, SlowReaders, SocketRequest,
    Sockets, SocketsError, TunedListener, tune_tcp,
};
pub use topsail_sql::{
    ConnectError, DEFAULT_STATEMENT_TIMEOUT, MigrateError, Migration, Pooled, SqlStore,
    create_schema, ddl, migrate,
};

/// The lower layers, for apps that need them.
pub mod core {
    pub use topsail_core::*;
}

/// What `#[derive(Model)]` expands to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use std::sync::LazyLock;
    pub use topsail_core::model::{
        AssocDef, AssocKind, AttrDef, AttrType, AutoTimestamp, Hooks, Literal, ModelDef, PkKind,
        Rule,
    };
    pub use topsail_core::{DecodeError, Lifecycle, Model, Record, decode_field, encode_field};
}
