/*!
Messages delivered per recipient under the app's read rules (see
`topsail_core::access`).

A guarded message is never handed to the adapter as a room broadcast,
which would reach every member. Each node delivers it to its own members
of the room: it reads each member's principal (kept in memory, set by the
identity layer at each request of the socket), asks the rule whether that
principal may read the message's record and which populated records it may
not, groups the members by that answer, and emits once per group, so a
payload is serialized once per distinct answer, not per recipient. A
member the rule refuses receives nothing; with `evict` (an `updated` whose
record stopped being readable to it) it also leaves the room.

In a cluster the message goes to the other nodes with the rest of its
batch (see `crate::relay`), and each node delivers it to its own sockets
the same way.
*/

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use socketioxide::socket::Sid;
use topsail_core::access::{PrincipalSlot, Rules};
use topsail_core::model::ModelDef;
use topsail_core::pubsub::{Guard, Nested};
use topsail_core::{Principal, Record};

use crate::room_cap::AT_ROOM_CAP;
use crate::sockets::Sockets;

/// What a node needs to decide for its own sockets: the rules, the models
/// they may name (for messages from other nodes), and each local socket's
/// principal.
#[derive(Clone, Default)]
pub(crate) struct Guarding {
    /// Set once the app is built (the sockets exist before the engine).
    rules: Arc<std::sync::OnceLock<Rules>>,
    models: Arc<std::sync::OnceLock<HashMap<&'static str, &'static ModelDef>>>,
    /// By socket id (a 16-byte key: cheaper to hash than its text).
    principals: Arc<std::sync::RwLock<HashMap<Sid, Local, BySid>>>,
}

/// Hashes socket ids for the map a delivery reads once per recipient.
/// Socket ids are random, made by the server (no client chooses one), so
/// folding their bytes is enough: SipHash's resistance to chosen keys buys
/// nothing here, and it was 2% of a 10,000-recipient delivery.
#[derive(Clone, Copy, Default)]
pub(crate) struct BySid;

impl std::hash::BuildHasher for BySid {
    type Hasher = FoldHasher;
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher(0)
    }
}

#[derive(Default)]
pub(crate) struct FoldHasher(u64);

impl std::hash::Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

/// Runs a socket's identity again (through the app's identity layer).
pub(crate) type Reidentify =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// What a node keeps of one of its sockets.
#[derive(Clone, Default)]
struct Local {
    slot: PrincipalSlot,
    again: Option<Reidentify>,
}

/// The rules before the app set them: none.
static NO_RULES: std::sync::LazyLock<Rules> = std::sync::LazyLock::new(Rules::new);

impl std::fmt::Debug for Guarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarding")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// Who of a room's local members gets which payload.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Verdict {
    /// Members by the set of populated records hidden from them.
    pub(crate) groups: Vec<(u64, Vec<Sid>)>,
    /// Members the rule refused.
    pub(crate) refused: Vec<Sid>,
}

impl Guarding {
    /// Sets the rules and the models, once; false when they were set.
    pub(crate) fn set(
        &self,
        rules: Rules,
        models: impl IntoIterator<Item = &'static ModelDef>,
    ) -> bool {
        let models = models.into_iter().map(|m| (m.identity, m)).collect();
        self.rules.set(rules).is_ok() && self.models.set(models).is_ok()
    }

    pub(crate) fn rules(&self) -> &Rules {
        self.rules.get().unwrap_or(&NO_RULES)
    }

    /// The principal slot of a local socket, created at its connection.
    pub(crate) fn slot(&self, socket: Sid) -> PrincipalSlot {
        let mut all = self.principals.write().unwrap_or_else(|e| e.into_inner());
        all.entry(socket).or_default().slot.clone()
    }

    /// How to identify a local socket again.
    pub(crate) fn on_reidentify(&self, socket: Sid, again: Reidentify) {
        let mut all = self.principals.write().unwrap_or_else(|e| e.into_inner());
        all.entry(socket).or_default().again = Some(again);
    }

    /// How to identify a local socket again.
    pub(crate) fn again_of(&self, socket: Sid) -> Option<Reidentify> {
        let all = self.principals.read().unwrap_or_else(|e| e.into_inner());
        all.get(&socket).and_then(|l| l.again.clone())
    }

    /// The ways to identify again the local sockets whose principal
    /// `matches`.
    pub(crate) fn reidentifiers(&self, matches: &dyn Fn(&Principal) -> bool) -> Vec<Reidentify> {
        let all = self.principals.read().unwrap_or_else(|e| e.into_inner());
        all.values()
            .filter(|l| l.slot.with(matches))
            .filter_map(|l| l.again.clone())
            .collect()
    }

    /// Forgets a socket that disconnected.
    pub(crate) fn forget(&self, socket: Sid) {
        let mut all = self.principals.write().unwrap_or_else(|e| e.into_inner());
        all.remove(&socket);
    }

    /// The local sockets whose principal `matches`.
    pub(crate) fn sockets_where(&self, matches: &dyn Fn(&Principal) -> bool) -> Vec<Arc<str>> {
        let all = self.principals.read().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|(_, l)| l.slot.with(matches))
            .map(|(id, _)| Arc::from(id.to_string()))
            .collect()
    }

    /// Splits `members` by what the guard lets each read.
    pub(crate) fn judge(&self, guard: &Guard, members: Vec<Sid>) -> Verdict {
        let all = self.principals.read().unwrap_or_else(|e| e.into_inner());
        let anonymous = PrincipalSlot::default();
        let judge = guard.judge(self.rules());
        let mut verdict = Verdict::default();
        for id in members {
            let slot = all.get(&id).map_or(&anonymous, |l| &l.slot);
            match judge.seen_by(slot) {
                None => verdict.refused.push(id),
                Some(mask) => match verdict.groups.iter_mut().find(|(m, _)| *m == mask) {
                    Some((_, ids)) => ids.push(id),
                    None => verdict.groups.push((mask, vec![id])),
                },
            }
        }
        verdict
    }

    /// Whether `room` belongs to a model with a read rule (a record room
    /// `sails_model_<identity>_<id>:<identity>` or a class room
    /// `sails_model_create_<identity>`): the rooms a socket leaves when
    /// its principal changes.
    pub(crate) fn is_guarded_room(&self, room: &str) -> bool {
        let Some(identity) = topsail_core::pubsub::RoomName::parse(room).map(|r| r.model()) else {
            return false;
        };
        let rules = self.rules();
        rules
            .models()
            .any(|m| m.identity == identity && rules.read_rule(m).is_some())
    }

    /// A guard received from another node, with this node's models.
    pub(crate) fn guard_from(&self, wire: WireGuard) -> Option<Guard> {
        let model = *self.models.get()?.get(wire.model.as_str())?;
        let nested = wire
            .nested
            .into_iter()
            .filter_map(|n| {
                let assoc = model.assoc(&n.assoc)?;
                Some(Nested {
                    key: if n.key == "data" { "data" } else { "previous" },
                    assoc: assoc.name,
                    index: n.index,
                    model: assoc.target(),
                    record: n.record,
                })
            })
            .collect();
        Some(Guard {
            model,
            record: Arc::new(wire.record),
            evict: wire.evict,
            nested,
            join: wire.join,
        })
    }
}

/// Guarded delivery, on this node's sockets and to the other nodes.
impl Sockets {
    /// Delivers a guarded message to this node's members of `room`.
    ///
    /// The room's members are listed once, judged, and each group is
    /// handed its payload by socket id, so the message reaches exactly the
    /// members judged (a socket app code joins to the room at that very
    /// moment gets the next message, not this one), and a guarded message
    /// lists the room once, as an unguarded one does.
    pub(crate) async fn deliver_guarded(
        &self,
        room: &str,
        omit: Option<&str>,
        event: &str,
        payload: crate::sockets::Shown<'_>,
        guard: &Guard,
        seq: Option<u64>,
    ) {
        let members = self.backend.local_members(room, omit);
        if members.is_empty() {
            self.note_recipients(|| 0);
            return;
        }
        let verdict = self.guarding.judge(guard, members);
        self.note_recipients(|| verdict.groups.iter().map(|(_, ids)| ids.len()).sum());
        let shown = |hidden: u64| match hidden {
            0 => std::borrow::Cow::Borrowed(payload.raw),
            hidden => {
                std::borrow::Cow::Owned(crate::replay::to_raw(&guard.redact(payload.value, hidden)))
            }
        };
        let text = |ids: &[Sid]| ids.iter().map(Sid::to_string).collect::<Vec<_>>();
        if let Some(dest) = &guard.join {
            let (within, dest) = (vec![room.to_owned()], vec![dest.clone()]);
            let mut except = text(&verdict.refused);
            except.extend(omit.map(str::to_owned));
            except.push(AT_ROOM_CAP.to_owned());
            self.backend
                .local_membership(within, except, dest, true)
                .await;
        }
        for (hidden, ids) in verdict.groups {
            self.backend
                .emit_members(ids, event, &shown(hidden), seq)
                .await;
        }
        if guard.evict {
            let (refused, room) = (text(&verdict.refused), vec![room.to_owned()]);
            self.backend
                .local_membership(refused, Vec::new(), room, false)
                .await;
        }
    }

    /// This node's members of `source` that may read the guard's record
    /// join `dest` (a guarded `_introduce`), but those at their room cap.
    pub(crate) async fn introduce_guarded(&self, source: &str, dest: &str, guard: &Guard) {
        let members = self.backend.local_members(source, None);
        let verdict = self.guarding.judge(guard, members);
        let mut refused: Vec<String> = verdict.refused.iter().map(Sid::to_string).collect();
        refused.push(AT_ROOM_CAP.to_owned());
        let (within, dest) = (vec![source.to_owned()], vec![dest.to_owned()]);
        self.backend
            .local_membership(within, refused, dest, true)
            .await;
    }

    /// A socket whose principal changed leaves the rooms of every model
    /// with a read rule.
    pub(crate) async fn leave_guarded_rooms(&self, socket: &str) {
        let Some(rooms) = self.backend.local_rooms(socket) else {
            return;
        };
        let guarded: Vec<String> = rooms
            .into_iter()
            .filter(|r| self.guarding.is_guarded_room(r))
            .collect();
        self.backend
            .local_membership(vec![socket.to_owned()], Vec::new(), guarded, false)
            .await;
    }
}

/// A [`Guard`] as it travels between nodes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireGuard {
    model: String,
    record: Record,
    evict: bool,
    nested: Vec<WireNested>,
    join: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireNested {
    key: String,
    assoc: String,
    index: Option<usize>,
    record: Record,
}

impl From<&Guard> for WireGuard {
    fn from(g: &Guard) -> Self {
        WireGuard {
            model: g.model.identity.to_owned(),
            record: (*g.record).clone(),
            evict: g.evict,
            join: g.join.clone(),
            nested: g
                .nested
                .iter()
                .map(|n| WireNested {
                    key: n.key.to_owned(),
                    assoc: n.assoc.to_owned(),
                    index: n.index,
                    record: n.record.clone(),
                })
                .collect(),
        }
    }
}
