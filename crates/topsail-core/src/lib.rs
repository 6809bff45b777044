//! The core of [topsail](https://docs.rs/topsail): model metadata, the
//! Waterline criteria language, the blueprint action engine and the pub-sub
//! plan of every action.
//!
//! This crate knows nothing of HTTP, SQL drivers or sockets: the store and
//! the publisher are traits ([`store::Store`], [`pubsub::Publisher`]) that
//! `topsail-sql` and the realtime layer implement. Apps use it through the
//! `topsail` facade. With the `axum` feature, [`Error`] answers HTTP
//! requests exactly as the blueprints do (`http`).

pub mod access;
pub mod criteria;
pub mod engine;
pub mod error;
pub mod etag;
#[cfg(feature = "axum")]
pub mod http;
pub mod inflight;
pub mod model;
pub mod pubsub;
pub mod query;
pub mod record;
pub mod registry;
pub mod store;
mod typed;
pub mod value;
pub mod visibility;

#[cfg(test)]
mod testing;

pub use access::{Access, Principal, PrincipalSlot, Rules};
pub use criteria::{Criteria, Populate};
pub use engine::{Engine, EngineConfig};
pub use error::{Error, Result, StoreError, UsageCode};
pub use inflight::{Inflight, InflightGuard};
pub use model::ModelDef;
pub use pubsub::{Actor, Effect, Publisher};
pub use record::{Pk, Record};
pub use registry::{Registry, RegistryError};
pub use typed::{DecodeError, Lifecycle, Link, Model, from_projected};
#[doc(hidden)]
pub use typed::{decode_field, encode_field};
