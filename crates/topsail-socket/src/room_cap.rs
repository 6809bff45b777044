/*!
The room cap of a socket ([`Sockets::max_rooms_per_socket`](crate::Sockets::max_rooms_per_socket)).

A socket gathers rooms two ways through pub-sub: its reads join it to the
records they return (and watch their models), and `_introduce` joins every
watcher of a model to each record created while it watches. Both are
bounded by one cap, counted per socket of this node.

Counting a socket's rooms means copying their names (socketioxide has no
count), which costs as much as the socket holds, so rooms are counted
exactly only when an estimate says the socket may be near the cap. The
estimate is the last exact count, plus the rooms its reads joined since,
plus, for each model it watches, the introductions from that model's class
room since: every introduction on this node (its own and those other nodes
relay) is carried out here, on the publisher task, which counts them per
class room. A read counts again after a tenth of the cap joined; the
periodic check (every [`CHECK_EVERY`]) counts the sockets whose estimate
reached the cap. A socket found at the cap enters [`AT_ROOM_CAP`], which
`_introduce` leaves out, and its reads join nothing more until a later
count finds it below the cap.
*/

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

pub(crate) use crate::backend::AT_ROOM_CAP;
use crate::backend::Backend;

/// How often the sockets whose estimate reached the cap are counted: a
/// watcher may pass the cap by what its models create in that time.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The prefix of a model's class (watcher) room, the source of its
/// introductions.
const CLASS_ROOM: &str = "sails_model_create_";

/// What is known of the rooms of this node's sockets.
#[derive(Debug)]
pub(crate) struct RoomCap {
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    sockets: HashMap<String, Budget>,
    /// Introductions carried out on this node, per class room, ever.
    introduced: HashMap<String, u64>,
}

/// What is known of one socket's rooms between two exact counts.
#[derive(Debug, Default)]
struct Budget {
    /// Its rooms at the last exact count.
    counted: usize,
    /// Rooms its reads joined since.
    joined: usize,
    /// The class rooms it watches, each with the introductions from it at
    /// the last count (or when the watch began).
    watching: Vec<(String, u64)>,
    full: bool,
}

impl State {
    /// The most rooms `b` can be in now.
    fn estimate(&self, b: &Budget) -> usize {
        let introduced: u64 = b
            .watching
            .iter()
            .map(|(room, at)| {
                self.introduced
                    .get(room)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(*at)
            })
            .sum();
        b.counted + b.joined + usize::try_from(introduced).unwrap_or(usize::MAX)
    }
}

impl Budget {
    /// Records the class rooms among `rooms` as watched from now on.
    fn watch(&mut self, rooms: &[String], introduced: &HashMap<String, u64>) {
        for room in rooms.iter().filter(|r| r.starts_with(CLASS_ROOM)) {
            if !self.watching.iter().any(|(w, _)| w == room) {
                let at = introduced.get(room).copied().unwrap_or(0);
                self.watching.push((room.clone(), at));
            }
        }
    }
}

impl RoomCap {
    pub(crate) fn new(max: usize) -> Self {
        RoomCap {
            max: max.max(1),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `rooms`, less those that would take the local socket `socket` past
    /// the cap (see the module documentation).
    pub(crate) fn admit(
        &self,
        backend: &dyn Backend,
        socket: &str,
        mut rooms: Vec<String>,
    ) -> Vec<String> {
        let count_every = (self.max / 10).max(1);
        {
            let mut state = self.state();
            let State {
                sockets,
                introduced,
            } = &mut *state;
            // Looked up before inserted: no key copied on every read.
            if !sockets.contains_key(socket) {
                sockets.insert(socket.to_owned(), Budget::default());
            }
            let Some(b) = sockets.get_mut(socket) else {
                return rooms;
            };
            b.watch(&rooms, introduced);
            b.joined += rooms.len();
            if b.joined < count_every {
                return if b.full { Vec::new() } else { rooms };
            }
        }
        let Some(held) = backend.local_rooms(socket) else {
            return rooms;
        };
        let mut full = false;
        if held.len() + rooms.len() > self.max {
            // Near the cap: rooms the socket is in already cost nothing.
            let held: HashSet<&String> = held.iter().collect();
            rooms.retain(|r| !held.contains(r));
            let room_left = self.max.saturating_sub(held.len());
            if rooms.len() >= room_left {
                full = true;
                tracing::warn!(
                    socket,
                    held = held.len(),
                    refused = rooms.len() - room_left,
                    max = self.max,
                    "a socket reached its room cap; it is not subscribed to more records"
                );
                rooms.truncate(room_left);
            }
        }
        self.counted(backend, socket, held.len() + rooms.len(), full);
        rooms
    }

    /// Records an exact count of `socket`'s rooms, and whether it is at
    /// the cap.
    fn counted(&self, backend: &dyn Backend, socket: &str, held: usize, full: bool) {
        let mut state = self.state();
        let State {
            sockets,
            introduced,
        } = &mut *state;
        let Some(b) = sockets.get_mut(socket) else {
            return;
        };
        b.counted = held;
        b.joined = 0;
        for (room, at) in &mut b.watching {
            *at = introduced.get(room).copied().unwrap_or(0);
        }
        if b.full != full {
            b.full = full;
            backend.mark_at_room_cap(socket, full);
        }
    }

    /// The local socket `socket` left `rooms`: it no longer watches the
    /// class rooms among them.
    pub(crate) fn left(&self, socket: &str, rooms: &[String]) {
        let mut state = self.state();
        if let Some(b) = state.sockets.get_mut(socket) {
            b.watching.retain(|(w, _)| !rooms.contains(w));
        }
    }

    /// The members of `source` were introduced to one more room.
    pub(crate) fn introduced(&self, source: &str) {
        if !source.starts_with(CLASS_ROOM) {
            return;
        }
        let mut state = self.state();
        match state.introduced.get_mut(source) {
            Some(n) => *n += 1,
            None => {
                state.introduced.insert(source.to_owned(), 1);
            }
        }
    }

    /// Counts the sockets whose estimate reached the cap; those at it
    /// enter [`AT_ROOM_CAP`].
    pub(crate) fn check(&self, backend: &dyn Backend) {
        let near: Vec<String> = {
            let state = self.state();
            state
                .sockets
                .iter()
                .filter(|(_, b)| !b.full && state.estimate(b) >= self.max)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for socket in near {
            let Some(held) = backend.local_rooms(&socket) else {
                continue;
            };
            let full = held.len() >= self.max;
            if full {
                tracing::warn!(
                    socket,
                    held = held.len(),
                    max = self.max,
                    "a socket reached its room cap; it is not introduced to more records"
                );
            }
            self.counted(backend, &socket, held.len(), full);
        }
    }

    /// Forgets a socket that disconnected.
    pub(crate) fn forget(&self, socket: &str) {
        self.state().sockets.remove(socket);
    }
}
