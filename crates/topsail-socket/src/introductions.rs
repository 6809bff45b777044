/*!
Introductions carried out once delivery has caught up.

`_introduce` makes every watcher of a model join the room of each record
created while it watches: one membership per watcher and record, where
socketioxide copies the room's name into the socket's set and inserts the
socket into the room's. At 200 watchers that was a fifth of the work of a
burst of creates (`docs/BENCHMARKS.md`), and none of it is needed to
deliver the `created` message itself, which goes to the watchers' class
room. So an introduction is noted rather than carried out, and the
publisher task carries out what is noted as [`Introductions`] says: by
default once the lanes have handed out everything they were given and
the process has been idle for a few milliseconds (the sockets' writers
have written the burst), about a millisecond's worth at a time
([`CHUNK_TIME`]) and on at most a quarter of a core, and at the latest
when [`MAX_NOTED`] are waiting. Each record's watchers join in one call,
so socketioxide's rooms are never held for long.

A noted introduction counts as carried out for everything that looks,
so no client or app can tell the difference on this node:

- whatever changes the members of a room a noted introduction concerns
  (its source, the class room, or its destination, the record's room), or
  delivers to its destination, carries out first the noted introductions
  of that source, or of that record ([`Noted::needed_for`]);
- the rooms of a socket and the members of a destination include them
  ([`Noted::with_noted`], [`Noted::source_of`]);
- the sockets API (join, leave, rooms of, ..., cluster-wide) carries them
  out first;
- `_retire` of a record whose introduction is still noted forgets it
  ([`Noted::cancel`]): joining then leaving would come to the same.

What another node does through the adapter to this node's sockets (a
`leave` of a socket here, its rooms asked from there) does not pass here:
it meets the rooms as they are, as it already meets introductions relayed
to this node and not yet carried out; with the default, only while this
node is busy delivering.
*/

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// When the introductions of new records to their model's watchers are
/// carried out (see [`RealtimeConfig::introductions`](crate::RealtimeConfig::introductions)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Introductions {
    /// As each record is created, before its `created` goes out.
    AtOnce,
    /// Once the node has handed out every message it was given (or when
    /// [`MAX_NOTED`] wait): a burst of creates is delivered first.
    #[default]
    WhenCaughtUp,
    /// Only when something looks at or changes a room they concern (or
    /// when [`MAX_NOTED`] wait). The least work; in a cluster, what other
    /// nodes do through the adapter to this node's sockets meets them not
    /// yet carried out for longer.
    WhenNeeded,
}

/// The most introductions noted at once; past it the oldest are carried
/// out, [`CHUNK_TIME`] at a time.
pub const MAX_NOTED: usize = 4_096;

/// How long one carrying-out of noted introductions goes on, when the node
/// is quiet or too many wait (at least one record, whatever it takes):
/// each record is one join per watcher, and new work waits for them.
pub(crate) const CHUNK_TIME: std::time::Duration = std::time::Duration::from_millis(1);

/// Introductions noted and not yet carried out, on this node.
#[derive(Debug, Default)]
pub(crate) struct Noted {
    state: Mutex<State>,
    /// Whether any is noted: the check every delivery makes, without the
    /// lock.
    any: AtomicBool,
    /// Held while noted introductions are carried out (and while one is
    /// forgotten), so that a `_retire` never meets its introduction half
    /// carried out.
    pub(crate) carrying: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// `(source, destination)` in the order noted.
    order: VecDeque<(String, String)>,
    /// Each noted destination's source.
    dests: HashMap<String, String>,
    /// Each source's noted destinations.
    sources: HashMap<String, HashSet<String>>,
}

/// A share of noted introductions, by source: what one carrying-out joins.
pub(crate) type Batch = Vec<(String, Vec<String>)>;

impl Noted {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any introduction is noted.
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// How many introductions are noted.
    pub(crate) fn len(&self) -> usize {
        if !self.any() {
            return 0;
        }
        self.state().order.len()
    }

    /// Notes that the members of `source` join `dest`. A destination
    /// already noted keeps its first source (a record has one model).
    pub(crate) fn note(&self, source: &str, dest: &str) {
        let mut state = self.state();
        if state.dests.contains_key(dest) {
            return;
        }
        state.dests.insert(dest.to_owned(), source.to_owned());
        state
            .sources
            .entry(source.to_owned())
            .or_default()
            .insert(dest.to_owned());
        state.order.push_back((source.to_owned(), dest.to_owned()));
        self.any.store(true, Ordering::Release);
    }

    /// Forgets the introduction of `source`'s members to `dest`, if noted
    /// (the caller holds [`Noted::carrying`]).
    pub(crate) fn cancel(&self, source: &str, dest: &str) -> bool {
        let mut state = self.state();
        if state.dests.get(dest).map(String::as_str) != Some(source) {
            return false;
        }
        state.order.retain(|(_, d)| d != dest);
        state.forget(source, dest);
        self.any.store(!state.order.is_empty(), Ordering::Release);
        true
    }

    /// The oldest `limit` noted introductions (all without one), grouped
    /// by source, still noted until [`Noted::done`].
    pub(crate) fn peek(&self, limit: Option<usize>) -> Batch {
        let state = self.state();
        let n = limit.unwrap_or(usize::MAX).min(state.order.len());
        let mut batch: Batch = Vec::new();
        for (source, dest) in state.order.iter().take(n) {
            match batch.iter_mut().find(|(s, _)| s == source) {
                Some((_, dests)) => dests.push(dest.clone()),
                None => batch.push((source.clone(), vec![dest.clone()])),
            }
        }
        batch
    }

    /// `batch` was carried out: no longer noted.
    pub(crate) fn done(&self, batch: &Batch) {
        let mut state = self.state();
        let mut carried = HashSet::new();
        for (source, dests) in batch {
            for dest in dests {
                if state.dests.get(dest) == Some(source) {
                    state.forget(source, dest);
                    carried.insert(dest.as_str());
                }
            }
        }
        state.order.retain(|(_, d)| !carried.contains(d.as_str()));
        self.any.store(!state.order.is_empty(), Ordering::Release);
    }

    /// The noted introductions that changing the members of `rooms`, as
    /// selected by `within` and `except`, must wait for: every one from a
    /// source whose members change, and those to a destination whose
    /// members change or select. (A message to `rooms` selects their
    /// members: `needed_for(rooms, &[], &[])`.)
    pub(crate) fn needed_for(
        &self,
        within: &[String],
        except: &[String],
        rooms: &[String],
    ) -> Batch {
        if !self.any() {
            return Batch::new();
        }
        let state = self.state();
        let mut batch = Batch::new();
        let mut add =
            |source: &String, dest: &String| match batch.iter_mut().find(|(s, _)| s == source) {
                Some((_, dests)) if !dests.contains(dest) => dests.push(dest.clone()),
                Some(_) => {}
                None => batch.push((source.clone(), vec![dest.clone()])),
            };
        for room in rooms {
            if let Some(dests) = state.sources.get(room) {
                dests.iter().for_each(|d| add(room, d));
            }
        }
        for room in rooms.iter().chain(within).chain(except) {
            if let Some(source) = state.dests.get(room) {
                add(source, room);
            }
        }
        batch
    }

    /// The source whose members a noted introduction makes members of
    /// `dest`, if one does.
    pub(crate) fn source_of(&self, dest: &str) -> Option<String> {
        if !self.any() {
            return None;
        }
        self.state().dests.get(dest).cloned()
    }

    /// `rooms` (a socket's) with the destinations noted for the sources
    /// among them.
    pub(crate) fn with_noted(&self, mut rooms: Vec<String>) -> Vec<String> {
        if !self.any() {
            return rooms;
        }
        let state = self.state();
        let mut added: Vec<String> = Vec::new();
        for room in &rooms {
            if let Some(dests) = state.sources.get(room) {
                added.extend(dests.iter().cloned());
            }
        }
        if added.is_empty() {
            return rooms;
        }
        let held: HashSet<String> = rooms.iter().cloned().collect();
        rooms.extend(added.into_iter().filter(|d| !held.contains(d)));
        rooms
    }
}

impl State {
    fn forget(&mut self, source: &str, dest: &str) {
        self.dests.remove(dest);
        if let Some(dests) = self.sources.get_mut(source) {
            dests.remove(dest);
            if dests.is_empty() {
                self.sources.remove(source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_socket_in_a_source_has_its_noted_destinations_once() {
        let noted = Noted::default();
        noted.note("pets", "pet#1");
        noted.note("pets", "pet#2");
        noted.note("users", "user#1");
        let mut got = noted.with_noted(rooms(&["me", "pets", "pet#1"]));
        got.sort();
        assert_eq!(got, rooms(&["me", "pet#1", "pet#2", "pets"]));
        assert_eq!(noted.with_noted(rooms(&["me"])), rooms(&["me"]));
        assert_eq!(noted.source_of("pet#2").as_deref(), Some("pets"));
        assert_eq!(noted.source_of("pets"), None);
    }

    #[test]
    fn what_touches_a_source_or_a_destination_waits_for_those_it_touches() {
        let noted = Noted::default();
        assert!(
            noted
                .needed_for(&rooms(&["pets"]), &[], &rooms(&["pet#1"]))
                .is_empty()
        );
        noted.note("pets", "pet#1");
        noted.note("pets", "pet#2");
        noted.note("users", "user#1");
        let all_pets = vec![("pets".to_owned(), rooms(&["pet#1", "pet#2"]))];
        let one = |d: &str| vec![("pets".to_owned(), rooms(&[d]))];
        let sorted = |mut b: Batch| {
            b.iter_mut().for_each(|(_, d)| d.sort());
            b
        };
        // A watcher joining or leaving the class room: all of its own.
        assert_eq!(
            sorted(noted.needed_for(&rooms(&["s1"]), &[], &rooms(&["pets"]))),
            all_pets
        );
        // Anyone joining the record's room, or its members selected (to
        // join elsewhere, or for a message): that one.
        assert_eq!(
            noted.needed_for(&rooms(&["s1"]), &[], &rooms(&["pet#1"])),
            one("pet#1")
        );
        assert_eq!(
            noted.needed_for(&rooms(&["pet#2"]), &[], &rooms(&["x"])),
            one("pet#2")
        );
        assert_eq!(
            noted.needed_for(&rooms(&["pet#1", "pets"]), &[], &[]),
            one("pet#1")
        );
        // Selecting the watchers to join another room needs none.
        assert!(
            noted
                .needed_for(&rooms(&["pets"]), &[], &rooms(&["pet#9"]))
                .is_empty()
        );
    }

    #[test]
    fn carried_out_in_order_by_chunks_and_forgotten_once_done() {
        let noted = Noted::default();
        for i in 0..5 {
            noted.note(if i % 2 == 0 { "pets" } else { "users" }, &format!("r{i}"));
        }
        // A repeat of a noted destination is one introduction.
        noted.note("pets", "r0");
        assert_eq!(noted.len(), 5);
        let first = noted.peek(Some(3));
        assert_eq!(
            first,
            vec![
                ("pets".to_owned(), rooms(&["r0", "r2"])),
                ("users".to_owned(), rooms(&["r1"]))
            ]
        );
        // Still noted while it is carried out.
        assert_eq!(noted.source_of("r2").as_deref(), Some("pets"));
        noted.done(&first);
        assert_eq!(noted.len(), 2);
        assert!(
            noted
                .needed_for(&rooms(&["r0", "r1", "r2"]), &[], &[])
                .is_empty()
        );
        let rest = noted.peek(None);
        noted.done(&rest);
        assert!(!noted.any());
        assert_eq!(noted.len(), 0);
    }

    #[test]
    fn a_retired_record_is_forgotten_without_being_carried_out() {
        let noted = Noted::default();
        noted.note("pets", "pet#1");
        noted.note("pets", "pet#2");
        assert!(!noted.cancel("users", "pet#1"), "only by its own source");
        assert!(noted.cancel("pets", "pet#1"));
        assert!(!noted.cancel("pets", "pet#1"));
        assert_eq!(
            noted.peek(None),
            vec![("pets".to_owned(), rooms(&["pet#2"]))]
        );
        assert!(noted.cancel("pets", "pet#2"));
        assert!(!noted.any());
    }
}
