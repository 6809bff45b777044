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

use crate::access::{Fields, Principal, PrincipalSlot, Rules};
use crate::model::ModelDef;
use crate::record::{Pk, Record};

/// Who made a request: the server itself (app code), an HTTP client, or a
/// socket, with the [`Principal`] the app identified. Only a socket actor
/// is subscribed by reads and omitted from the messages its request
/// causes; a client (HTTP or socket) never sees a private attribute nor
/// sets a read-only one, and is held to the access [`Rules`](crate::Rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Actor {
    /// App code: nobody is subscribed or omitted, it sees and sets every
    /// attribute, and no access rule applies.
    #[default]
    Server,
    /// An HTTP request: nobody is subscribed or omitted.
    Http(Principal),
    /// A socket request: the socket id (also the name of its own room).
    Socket(Arc<str>, Principal),
}

impl Actor {
    /// An anonymous HTTP client.
    pub fn http() -> Self {
        Actor::Http(Principal::anonymous())
    }

    /// An anonymous client on socket `id`.
    pub fn socket(id: impl Into<Arc<str>>) -> Self {
        Actor::Socket(id.into(), Principal::anonymous())
    }

    /// The same client, identified as `principal` (app code stays app
    /// code).
    pub fn with_principal(self, principal: Principal) -> Self {
        match self {
            Actor::Server => Actor::Server,
            Actor::Http(_) => Actor::Http(principal),
            Actor::Socket(id, _) => Actor::Socket(id, principal),
        }
    }

    /// The socket id, for a socket request.
    pub fn socket_id(&self) -> Option<&Arc<str>> {
        match self {
            Actor::Socket(id, _) => Some(id),
            Actor::Server | Actor::Http(_) => None,
        }
    }

    /// The client's principal; `None` for app code, which no rule limits.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Actor::Server => None,
            Actor::Http(p) | Actor::Socket(_, p) => Some(p),
        }
    }

    /// Whether a client made the request (HTTP or socket), not app code.
    pub fn is_client(&self) -> bool {
        !matches!(self, Actor::Server)
    }

    /// Whether the request came over a socket (Sails' `req.isSocket`).
    pub fn is_socket(&self) -> bool {
        matches!(self, Actor::Socket(..))
    }
}

/// The wall clock in microseconds since the Unix epoch: the axis of
/// message sequence numbers (a publisher numbers messages no lower than
/// it), so a moment taken before a read can be compared with them.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The record room of `id`: `sails_model_<identity>_<id>:<identity>`.
pub fn record_room(model: &ModelDef, id: &Pk) -> String {
    format!("sails_model_{}_{}:{}", model.identity, id, model.identity)
}

/// The class (watcher) room of a model: `sails_model_create_<identity>`.
pub fn class_room(model: &ModelDef) -> String {
    format!("sails_model_create_{}", model.identity)
}

/// A pub-sub room read back from its name (the inverse of [`record_room`]
/// and [`class_room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomName<'a> {
    /// The room of one record: its model's identity, and its key as text.
    Record {
        /// The model's identity.
        model: &'a str,
        /// The record's primary key, as in the room name.
        id: &'a str,
    },
    /// The class (watcher) room of a model.
    Class {
        /// The model's identity.
        model: &'a str,
    },
}

impl<'a> RoomName<'a> {
    /// What `room` names; `None` for a room of the app's own.
    ///
    /// ```
    /// use topsail_core::pubsub::RoomName;
    /// assert_eq!(
    ///     RoomName::parse("sails_model_pet_7:pet"),
    ///     Some(RoomName::Record { model: "pet", id: "7" })
    /// );
    /// assert_eq!(RoomName::parse("sails_model_create_pet"), Some(RoomName::Class { model: "pet" }));
    /// // A model whose identity starts like a class room is still a record.
    /// assert_eq!(
    ///     RoomName::parse("sails_model_create_5:create"),
    ///     Some(RoomName::Record { model: "create", id: "5" })
    /// );
    /// assert_eq!(RoomName::parse("lobby"), None);
    /// ```
    pub fn parse(room: &'a str) -> Option<Self> {
        let record = room.rsplit_once(':').and_then(|(head, model)| {
            let id = head
                .strip_prefix("sails_model_")?
                .strip_prefix(model)?
                .strip_prefix('_')?;
            Some(RoomName::Record { model, id })
        });
        record.or_else(|| {
            let model = room.strip_prefix("sails_model_create_")?;
            (!model.contains(':')).then_some(RoomName::Class { model })
        })
    }

    /// The model's identity.
    pub fn model(self) -> &'a str {
        match self {
            RoomName::Record { model, .. } | RoomName::Class { model } => model,
        }
    }
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
        /// When the read that subscribes it began ([`now_us`]): a message
        /// to these rooms published since then may describe a change the
        /// read did not see, and the socket was not in them to receive it,
        /// so the publisher sends it too (where it keeps a replay log).
        read_at: Option<u64>,
    },
    /// The socket leaves these rooms.
    Leave {
        /// The socket id.
        socket: Arc<str>,
        /// Rooms to leave.
        rooms: Vec<String>,
    },
    /// Every member of `source` joins `dest` (`_introduce`: watchers get
    /// subscribed to a new record), cluster-wide; with a guard, only those
    /// who may read its record.
    AddMembers {
        /// The room whose members join.
        source: String,
        /// The room they join.
        dest: String,
        /// Who may join.
        guard: Option<Guard>,
    },
    /// Every member of `source` leaves `dest` (`_retire`).
    RemoveMembers {
        /// The room whose members leave.
        source: String,
        /// The room they leave.
        dest: String,
    },
    /// The socket's principal changed (signed in, out, or as someone
    /// else): it leaves every room of a model with a read rule, joined
    /// under the old principal, and joins again what it reads next.
    Forget {
        /// The socket id.
        socket: Arc<str>,
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
        /// Who may receive it, when a model concerned has a read rule.
        guard: Option<Guard>,
    },
}

/// Who may receive a message, decided per recipient by the read rules (see
/// [`crate::access`]) against records in hand: the record the message is
/// about, and the records populated into it.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The model of the record the message is about.
    pub model: &'static ModelDef,
    /// That record as the rule sees it (a `created`'s record, an
    /// `updated`'s record after the change, a `destroyed`'s record before
    /// it): private attributes included, never sent.
    pub record: Arc<Record>,
    /// Recipients the rule refuses also leave the room: the record stopped
    /// being readable to them.
    pub evict: bool,
    /// Populated records inside the payload whose model has a read rule.
    pub nested: Vec<Nested>,
    /// The members who receive it also join this room (a `created`'s
    /// `_introduce` of watchers into the new record's room, decided with
    /// the same check).
    pub join: Option<String>,
}

/// A populated record inside a message: `payload[key][assoc]` (a to-one)
/// or `payload[key][assoc][index]` (a collection's element).
#[derive(Debug, Clone)]
pub struct Nested {
    /// `data` or `previous`.
    pub key: &'static str,
    /// The association.
    pub assoc: &'static str,
    /// The element of a collection; `None` for a to-one.
    pub index: Option<usize>,
    /// The populated record's model.
    pub model: &'static ModelDef,
    /// The populated record.
    pub record: Record,
}

impl PartialEq for Guard {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.model, other.model)
            && self.record == other.record
            && self.evict == other.evict
            && self.nested.len() == other.nested.len()
            && self.join == other.join
    }
}

impl Guard {
    /// Whether `principal` may read the message's record.
    pub fn admits(&self, rules: &Rules, principal: &Principal) -> bool {
        rules
            .readable(self.model, principal)
            .allows(self.model, &self.record)
    }

    /// What the socket whose principal is in `slot` may see of the
    /// message: `None` when it may not read its record, else the bit set
    /// of [`Guard::nested`] records it may not read (recipients with the
    /// same set get the same payload, serialized once; past 64 populated
    /// records, the rest count as one group with the 64th). The rules'
    /// answers come from the slot, computed once per principal.
    pub fn seen_by(&self, rules: &Rules, slot: &PrincipalSlot) -> Option<u64> {
        self.judge(rules).seen_by(slot)
    }

    /// The guard made ready to judge many recipients (see [`Judge`]).
    pub fn judge<'g>(&'g self, rules: &'g Rules) -> Judge<'g> {
        let ruled = |model: &ModelDef| rules.read_rule(model).is_some();
        Judge {
            rules,
            record: ruled(self.model).then(|| Fields::new(self.model, &self.record)),
            nested: (self.nested.iter().enumerate())
                .filter(|(_, n)| ruled(n.model))
                .map(|(i, n)| (1 << i.min(63), Fields::new(n.model, &n.record)))
                .collect(),
        }
    }

    /// `payload` without the populated records in `hidden`: a to-one is
    /// null (as an answer populates a record the reader may not read), a
    /// collection loses the element.
    pub fn redact(&self, payload: &Value, hidden: u64) -> Value {
        let mut out = payload.clone();
        // Backwards, so removing an element keeps the later indices right.
        for (i, n) in self.nested.iter().enumerate().rev() {
            if hidden & (1 << i.min(63)) == 0 {
                continue;
            }
            let Some(slot) = out.get_mut(n.key).and_then(|v| v.get_mut(n.assoc)) else {
                continue;
            };
            match (n.index, slot) {
                (Some(at), Value::Array(items)) if at < items.len() => {
                    items.remove(at);
                }
                (None, slot) => *slot = Value::Null,
                _ => {}
            }
        }
        out
    }
}

/// A message's [`Guard`] made ready to judge its recipients one by one:
/// what does not depend on the recipient (which of its records' models have
/// a read rule, the values the rules compare) is found once per message,
/// not once per recipient.
#[derive(Debug)]
pub struct Judge<'g> {
    rules: &'g Rules,
    /// The message's record, when its model has a read rule.
    record: Option<Fields<'g>>,
    /// The populated records whose model has a read rule, with their bit
    /// in [`Guard::seen_by`]'s set (the others are readable by anyone).
    nested: Vec<(u64, Fields<'g>)>,
}

impl Judge<'_> {
    /// As [`Guard::seen_by`].
    pub fn seen_by(&self, slot: &PrincipalSlot) -> Option<u64> {
        if let Some(record) = &self.record
            && !slot.reads(self.rules, record)
        {
            return None;
        }
        let mut mask = 0u64;
        for (bit, fields) in &self.nested {
            if !slot.reads(self.rules, fields) {
                mask |= bit;
            }
        }
        Some(mask)
    }
}

/// What waits until the effects [`Publisher::queue`] took were carried
/// out.
pub type Handed = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Delivers effects. Implemented by the socket layer; [`NoPublisher`] drops
/// them and [`RecordingPublisher`] keeps them for tests.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Carries out `effects` in order. Delivery failures are the
    /// publisher's to log: the change they describe has already committed.
    async fn publish(&self, effects: Vec<Effect>);

    /// Takes `effects` to carry out after every batch it took before, and
    /// returns once it has (without waiting for their delivery), with what
    /// waits until they are carried out. The engine holds a record's turn
    /// until this returns, so the batches about one record are taken in the
    /// order its changes committed, whatever the order their tasks run in.
    /// By default, carries them out first: the order holds, and the turn is
    /// held for the delivery too; a publisher with a queue answers sooner.
    async fn queue(&self, effects: Vec<Effect>) -> Handed {
        self.publish(effects).await;
        Box::pin(std::future::ready(()))
    }
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
