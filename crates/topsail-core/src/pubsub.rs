/*!
The pub-sub plan of an action (spec section 4), independent of any transport.

Each engine operation returns, besides its result, the ordered list of
[`Effect`]s it causes: sockets joining or leaving rooms, and messages
broadcast to rooms. The engine hands the list to a [`Publisher`] only after
the transaction has committed, so a rolled-back change publishes nothing.
The realtime crate implements [`Publisher`] over socket.io rooms.
*/

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::model::ModelDef;
use crate::record::Pk;

/// Who made a request: the server itself (app code), an HTTP client, or a
/// socket. Only a socket actor is subscribed by reads and omitted from the
/// messages its request causes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Actor {
    /// App code or an HTTP request: nobody is subscribed or omitted.
    #[default]
    Server,
    /// A socket request: the socket id (also the name of its own room).
    Socket(Arc<str>),
}

impl Actor {
    /// The socket id, for a socket request.
    pub fn socket(&self) -> Option<&Arc<str>> {
        match self {
            Actor::Socket(id) => Some(id),
            Actor::Server => None,
        }
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

/// Builds the effect list of one operation (spec 4.3-4.6).
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    actor: &'a Actor,
    /// The socket omitted from broadcasts (the requester, unless mirroring).
    omit: Option<Arc<str>>,
    /// Rooms the actor already joins in this plan (a deep read can name
    /// the same room many times).
    joined: std::collections::HashSet<String>,
    pub(crate) effects: Vec<Effect>,
}

impl<'a> Plan<'a> {
    pub(crate) fn new(actor: &'a Actor, mirror: bool) -> Self {
        let omit = if mirror {
            None
        } else {
            actor.socket().cloned()
        };
        Plan {
            actor,
            omit,
            joined: std::collections::HashSet::new(),
            effects: Vec::new(),
        }
    }

    /// Subscribes the requesting socket to records of `model`.
    pub(crate) fn subscribe<'p>(
        &mut self,
        model: &ModelDef,
        ids: impl IntoIterator<Item = &'p Pk>,
    ) {
        if let Some(socket) = self.actor.socket() {
            let rooms: Vec<String> = ids.into_iter().map(|id| record_room(model, id)).collect();
            if !rooms.is_empty() {
                self.push_join(socket.clone(), rooms);
            }
        }
    }

    /// Unsubscribes the requesting socket from a record.
    pub(crate) fn unsubscribe(&mut self, model: &ModelDef, id: &Pk) {
        if let Some(socket) = self.actor.socket() {
            let room = record_room(model, id);
            self.joined.remove(&room);
            self.effects.push(Effect::Leave {
                socket: socket.clone(),
                rooms: vec![room],
            });
        }
    }

    /// The requesting socket watches `model`'s class room.
    pub(crate) fn watch(&mut self, model: &ModelDef) {
        if let Some(socket) = self.actor.socket() {
            self.push_join(socket.clone(), vec![class_room(model)]);
        }
    }

    // Consecutive joins merge into one effect (one adapter call), and a
    // room already joined in this plan is not joined again.
    fn push_join(&mut self, socket: Arc<str>, rooms: Vec<String>) {
        let fresh: Vec<String> = rooms
            .into_iter()
            .filter(|r| self.joined.insert(r.clone()))
            .collect();
        if fresh.is_empty() {
            return;
        }
        if let Some(Effect::Join {
            socket: s,
            rooms: r,
        }) = self.effects.last_mut()
            && *s == socket
        {
            r.extend(fresh);
            return;
        }
        self.effects.push(Effect::Join {
            socket,
            rooms: fresh,
        });
    }

    /// `_introduce`: watchers of `model` are subscribed to the new record.
    pub(crate) fn introduce(&mut self, model: &ModelDef, id: &Pk) {
        self.effects.push(Effect::AddMembers {
            source: class_room(model),
            dest: record_room(model, id),
        });
    }

    /// `_retire`: watchers of `model` leave the record's room.
    pub(crate) fn retire(&mut self, model: &ModelDef, id: &Pk) {
        self.effects.push(Effect::RemoveMembers {
            source: class_room(model),
            dest: record_room(model, id),
        });
    }

    fn broadcast(&mut self, room: String, model: &ModelDef, payload: Value) {
        self.effects.push(Effect::Broadcast {
            room,
            event: model.event(),
            payload,
            omit: self.omit.clone(),
        });
    }

    /// `created` to the class room.
    pub(crate) fn created(&mut self, model: &ModelDef, id: &Pk, record: Value) {
        let payload = json!({"verb": "created", "data": record, "id": id.to_json()});
        self.broadcast(class_room(model), model, payload);
    }

    /// `updated` with `previous` (the primary message of an update).
    pub(crate) fn updated(&mut self, model: &ModelDef, id: &Pk, data: Value, previous: Value) {
        let payload =
            json!({"verb": "updated", "data": data, "id": id.to_json(), "previous": previous});
        self.broadcast(record_room(model, id), model, payload);
    }

    /// The reverse-side `updated`: `{<alias>: value}`, no `previous`.
    pub(crate) fn updated_reverse(&mut self, model: &ModelDef, id: &Pk, alias: &str, value: Value) {
        let mut data = serde_json::Map::new();
        data.insert(alias.to_owned(), value);
        let payload = json!({"verb": "updated", "data": data, "id": id.to_json()});
        self.broadcast(record_room(model, id), model, payload);
    }

    /// `destroyed` with `previous`.
    pub(crate) fn destroyed(&mut self, model: &ModelDef, id: &Pk, previous: Value) {
        let payload = json!({"verb": "destroyed", "id": id.to_json(), "previous": previous});
        self.broadcast(record_room(model, id), model, payload);
    }

    /// `addedTo` on a parent.
    pub(crate) fn added_to(&mut self, model: &ModelDef, id: &Pk, alias: &str, added: &Pk) {
        let payload = json!({"id": id.to_json(), "verb": "addedTo", "attribute": alias, "addedId": added.to_json()});
        self.broadcast(record_room(model, id), model, payload);
    }

    /// `removedFrom` on a parent.
    pub(crate) fn removed_from(&mut self, model: &ModelDef, id: &Pk, alias: &str, removed: &Pk) {
        let payload = json!({"id": id.to_json(), "verb": "removedFrom", "attribute": alias, "removedId": removed.to_json()});
        self.broadcast(record_room(model, id), model, payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pet, user};

    #[test]
    fn room_names_are_sails_names() {
        assert_eq!(record_room(user(), &Pk::Int(1)), "sails_model_user_1:user");
        assert_eq!(
            record_room(pet(), &Pk::Str("a".into())),
            "sails_model_pet_a:pet"
        );
        assert_eq!(class_room(pet()), "sails_model_create_pet");
    }

    #[test]
    fn only_socket_actors_are_subscribed_and_omitted() {
        let http = Actor::Server;
        let mut plan = Plan::new(&http, false);
        plan.subscribe(user(), [&Pk::Int(1)]);
        plan.watch(user());
        plan.created(user(), &Pk::Int(1), json!({}));
        assert!(matches!(
            plan.effects.as_slice(),
            [Effect::Broadcast { omit: None, .. }]
        ));

        let socket = Actor::Socket("S".into());
        let mut plan = Plan::new(&socket, false);
        plan.subscribe(user(), [&Pk::Int(1), &Pk::Int(2)]);
        plan.watch(user());
        plan.watch(user());
        plan.removed_from(user(), &Pk::Int(1), "pets", &Pk::Int(7));
        assert_eq!(
            plan.effects,
            vec![
                Effect::Join {
                    socket: "S".into(),
                    rooms: vec![
                        "sails_model_user_1:user".into(),
                        "sails_model_user_2:user".into(),
                        "sails_model_create_user".into()
                    ],
                },
                Effect::Broadcast {
                    room: "sails_model_user_1:user".into(),
                    event: "user",
                    payload: json!({"id": 1, "verb": "removedFrom", "attribute": "pets", "removedId": 7}),
                    omit: Some("S".into()),
                },
            ],
            "consecutive joins merge, without duplicates"
        );
        let mut mirrored = Plan::new(&socket, true);
        mirrored.destroyed(pet(), &Pk::Int(3), json!({}));
        assert!(
            matches!(
                mirrored.effects.as_slice(),
                [Effect::Broadcast { omit: None, .. }]
            ),
            "mirror sends the requester its own messages"
        );
    }
}
