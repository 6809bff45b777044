/*!
Resourceful pub-sub, independent of any transport.

Each engine operation makes, besides its result, the ordered list of
[`Effect`]s it causes (its plan, `plan`): sockets joining or leaving rooms,
and messages broadcast to rooms. The engine hands the list to a
[`Publisher`] only after the transaction has committed, so a rolled-back
change publishes nothing. The realtime crate implements [`Publisher`] over
socket.io rooms.
*/

mod plan;

pub(crate) use plan::{Linked, Plan};

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::model::ModelDef;
use crate::record::Pk;

/// Who made a request: the server itself (app code), an HTTP client, or a
/// socket. Only a socket actor is subscribed by reads and omitted from the
/// messages its request causes; a client (HTTP or socket) never sees a
/// private attribute nor sets a read-only one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Actor {
    /// App code: nobody is subscribed or omitted, and it sees and sets
    /// every attribute.
    #[default]
    Server,
    /// An HTTP request: nobody is subscribed or omitted.
    Http,
    /// A socket request: the socket id (also the name of its own room).
    Socket(Arc<str>),
}

impl Actor {
    /// The socket id, for a socket request.
    pub fn socket(&self) -> Option<&Arc<str>> {
        match self {
            Actor::Socket(id) => Some(id),
            Actor::Server | Actor::Http => None,
        }
    }

    /// Whether a client made the request (HTTP or socket), not app code.
    pub fn is_client(&self) -> bool {
        !matches!(self, Actor::Server)
    }

    /// Whether the request came over a socket (Sails' `req.isSocket`).
    pub fn is_socket(&self) -> bool {
        matches!(self, Actor::Socket(_))
    }
}

/// The record room of `id`: `sails_model_<identity>_<id>:<identity>`.
pub fn record_room(model: &ModelDef, id: &Pk) -> String {
    format!("sails_model_{}_{}:{}", model.identity, id, model.identity)
}

/// The class (watcher) room of a model: `sails_model_create_<identity>`.
pub fn class_room(model: &ModelDef) -> String {
    format!("sails_model_create_{}", model.identity)
}

/// One thing a publisher must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The socket joins these rooms.
    Join {
        /// The socket id.
        socket: Arc<str>,
        /// Rooms to join.
        rooms: Vec<String>,
    },
    /// The socket leaves these rooms.
    Leave {
        /// The socket id.
        socket: Arc<str>,
        /// Rooms to leave.
        rooms: Vec<String>,
    },
    /// Every member of `source` joins `dest` (`_introduce`: watchers get
    /// subscribed to a new record), cluster-wide.
    AddMembers {
        /// The room whose members join.
        source: String,
        /// The room they join.
        dest: String,
    },
    /// Every member of `source` leaves `dest` (`_retire`).
    RemoveMembers {
        /// The room whose members leave.
        source: String,
        /// The room they leave.
        dest: String,
    },
    /// Emit `event` with `payload` to everyone in `room` but `omit`.
    Broadcast {
        /// The room.
        room: String,
        /// The event name (the model identity).
        event: &'static str,
        /// The message, serialised once by the publisher.
        payload: Value,
        /// The socket to leave out (the requester).
        omit: Option<Arc<str>>,
    },
}

/// Delivers effects. Implemented by the socket layer; [`NoPublisher`] drops
/// them and [`RecordingPublisher`] keeps them for tests.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Carries out `effects` in order. Delivery failures are the
    /// publisher's to log: the change they describe has already committed.
    async fn publish(&self, effects: Vec<Effect>);
}

/// A publisher that drops every effect (an app without realtime).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPublisher;

#[async_trait]
impl Publisher for NoPublisher {
    async fn publish(&self, _effects: Vec<Effect>) {}
}

/// A publisher that records every effect, for tests.
#[derive(Debug, Default, Clone)]
pub struct RecordingPublisher {
    effects: Arc<std::sync::Mutex<Vec<Effect>>>,
}

impl RecordingPublisher {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the effects recorded so far.
    pub fn take(&self) -> Vec<Effect> {
        std::mem::take(&mut *self.effects.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes the broadcasts recorded so far as `(room, event, payload)`.
    pub fn take_broadcasts(&self) -> Vec<(String, &'static str, Value)> {
        self.take()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Broadcast {
                    room,
                    event,
                    payload,
                    ..
                } => Some((room, event, payload)),
                _ => None,
            })
            .collect()
    }
}

#[async_trait]
impl Publisher for RecordingPublisher {
    async fn publish(&self, effects: Vec<Effect>) {
        self.effects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(effects);
    }
}
