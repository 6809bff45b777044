/*!
Sequence numbers and the replay log: what a socket that comes back after
a drop is given again (see `crate::resume`).

Every message this node delivers gets a sequence number from one
[`Sequencer`]: strictly increasing, and never below the wall clock in
microseconds, so a number is also a moment (a restart does not go back, a
socket's "from when" and "from which message" are the same axis, and the
engine can name a moment before it reads without asking this layer for
anything). The number travels as the message's last argument, after the
payload: `io.socket.on('pet', (msg, seq) => ...)`. sails.io.js hands every
argument to the handler untouched, and the payload stays what Sails sends.

The log keeps every delivered message and every `_introduce`/`_retire`
(which changes who is in a room) in one queue ordered by sequence, for a
window of time (120 s by default) and within a bound of messages per room
and in all. What falls out of it is remembered as a point per room ("lost
up to here"): a socket that needs anything from before that point is told
to fetch again (`topsail:resync`) rather than given part of its gap.
*/

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;
use topsail_core::pubsub::Guard;

/// How long and how much the replay log keeps, and how long a dropped
/// socket waits to be taken back.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Keep a log and give sockets that come back what they missed.
    /// `false`: no sequence numbers, no log, no resume (Sails' behaviour).
    pub enabled: bool,
    /// How long a message stays in the log: a socket away for longer is
    /// told to fetch again.
    pub window: Duration,
    /// The most messages the log keeps per room within the window (the
    /// oldest go first). A watched model's room takes two entries per
    /// record created (the message and the introduction of its watchers),
    /// so it is the busiest.
    pub per_room: usize,
    /// The most messages the log keeps in all, across rooms (a bound on
    /// its memory under a burst: past it, the oldest go first).
    pub max_messages: usize,
    /// How long a dropped socket's rooms are remembered. Past `window` its
    /// messages are gone, but a client that comes back is still told what
    /// to fetch again, rather than left with a silent gap.
    pub remember: Duration,
    /// The most dropped sockets remembered at once (the oldest go first).
    pub max_parked: usize,
    /// How far before a disconnect the server replays, when the connection
    /// closed (rather than timed out): what was written just before a
    /// connection broke may never have arrived. A heartbeat timeout goes
    /// back twice the ping interval plus the ping timeout, the time a dead
    /// connection can go unnoticed. A socket whose full outgoing queue
    /// refused messages before it went (see
    /// [`RealtimeConfig::slow_readers`](crate::RealtimeConfig::slow_readers))
    /// is replayed from this long before the first of them.
    pub close_doubt: Duration,
    /// A single process (no Redis): a file where it records its sockets
    /// every second (their resume keys, rooms and where they were), read
    /// when it starts, so that after a restart a stock client that comes
    /// back gets its rooms again. It also gets what it missed, after a
    /// deploy or a crash: the process journals its replay log beside the
    /// file (`<file>.journal/`, each entry before any socket is sent it),
    /// and the next process reads it back before it serves. One process
    /// per file: a second one that finds the journal held keeps none.
    /// `None` (the default): a restart
    /// forgets its sockets, and their clients come back as new ones
    /// without a word. In a cluster, Redis keeps them.
    pub restart_file: Option<std::path::PathBuf>,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            enabled: true,
            window: Duration::from_secs(120),
            per_room: 10_000,
            max_messages: 200_000,
            remember: Duration::from_secs(15 * 60),
            max_parked: 100_000,
            close_doubt: Duration::from_secs(5),
            restart_file: None,
        }
    }
}

pub use topsail_core::pubsub::now_us;

/// Hands out sequence numbers: each above the last, and at least the wall
/// clock in microseconds (past a million messages a second they run ahead
/// of it for a while).
#[derive(Debug, Default)]
pub(crate) struct Sequencer(AtomicU64);

impl Sequencer {
    pub(crate) fn next(&self) -> u64 {
        let now = now_us();
        let mut last = self.0.load(Ordering::Relaxed);
        loop {
            let next = (last + 1).max(now);
            match self
                .0
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// The last number handed out.
    #[cfg(test)]
    fn last(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Takes note of a number another node gave: the next ones here are
    /// above it (a hybrid logical clock, so a change made after another
    /// was seen is numbered after it, whatever the nodes' clocks say).
    pub(crate) fn observe(&self, seq: u64) {
        self.0.fetch_max(seq, Ordering::AcqRel);
    }
}

/// The room under which the log keeps blasts (every socket is in it, for
/// a resume).
pub(crate) const EVERYONE: &str = "topsail#everyone";

/// What a log entry records.
#[derive(Debug)]
pub(crate) enum What {
    /// A message delivered to the room's members (less `omit`, and those
    /// its guard refuses). Its payload is kept as JSON text: a replay sends
    /// it as it is (a guarded one is read back to be redacted), and text
    /// takes a fraction of a `Value`'s memory (a log of 200,000 entries
    /// took 250 MB as values).
    Message {
        event: Arc<str>,
        payload: Box<RawValue>,
        omit: Option<Arc<str>>,
        guard: Option<Arc<Guard>>,
    },
    /// The room's members joined (`_introduce`, those the guard admits)
    /// or left (`_retire`) `dest`.
    Members {
        dest: Arc<str>,
        join: bool,
        guard: Option<Arc<Guard>>,
    },
}

/// One thing that happened in a room (an app's message: in each of its
/// rooms at once).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) rooms: Box<[Arc<str>]>,
    pub(crate) what: What,
    at: Instant,
}

impl Entry {
    /// The payload of a message as JSON text, shared by every socket it is
    /// replayed to (`None` for a change of members, which is never sent).
    pub(crate) fn raw_payload(&self) -> Option<&RawValue> {
        match &self.what {
            What::Message { payload, .. } => Some(payload),
            What::Members { .. } => None,
        }
    }
}

/// `value` as JSON text.
pub(crate) fn to_raw(value: &Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| {
        serde_json::value::RawValue::from_string("null".to_owned()).expect("null is JSON")
    })
}

/// The log of one node (see the module documentation).
#[derive(Debug)]
pub(crate) struct Log {
    cfg: ReplayConfig,
    seq: Sequencer,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every entry kept, in sequence order.
    order: VecDeque<Arc<Entry>>,
    /// Per room that has entries kept: their numbers, and up to where its
    /// entries were dropped.
    rooms: HashMap<Arc<str>, RoomLog>,
    /// Up to where entries fell out of the log (by age or the overall
    /// bound), or the log's start: a room without entries kept may have
    /// lost any before it.
    dropped_upto: u64,
    /// Up to where entries may never have come in (another node's lost
    /// batches, see [`Log::lose_upto`]).
    gaps_upto: u64,
    /// Stretches in which entries came in late (see [`Log::came_late`]),
    /// oldest first, overlapping ones merged.
    late: VecDeque<(u64, u64)>,
}

#[derive(Debug, Default)]
struct RoomLog {
    seqs: VecDeque<u64>,
    dropped_upto: u64,
}

impl Log {
    pub(crate) fn new(cfg: ReplayConfig) -> Self {
        Log {
            cfg,
            seq: Sequencer::default(),
            // Nothing from before this node started is known to it: a
            // socket missing anything older is told to fetch again.
            inner: Mutex::new(Inner {
                dropped_upto: now_us().saturating_sub(1),
                ..Inner::default()
            }),
        }
    }

    pub(crate) fn config(&self) -> &ReplayConfig {
        &self.cfg
    }

    /// The next sequence number (also when the log is off: numbers cost
    /// nothing and let a client notice a gap).
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.next()
    }

    /// Takes note of a number another node gave (see
    /// [`Sequencer::observe`]).
    pub(crate) fn observe(&self, seq: u64) {
        self.seq.observe(seq);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `what` as entry `seq` of `rooms`, and lets go of what is past
    /// the window or the bounds.
    pub(crate) fn append(&self, seq: u64, rooms: Vec<Arc<str>>, what: What) {
        if !self.cfg.enabled {
            return;
        }
        let now = Instant::now();
        // A number is a moment (see `Sequencer`): an entry read back from
        // the cluster's stream at start, or relayed late, is as old as its
        // number says, and leaves the window when it would have.
        let age = Duration::from_micros(now_us().saturating_sub(seq));
        let entry = Arc::new(Entry {
            seq,
            rooms: rooms.into_boxed_slice(),
            what,
            at: now.checked_sub(age).unwrap_or(now),
        });
        let mut inner = self.lock();
        for room in entry.rooms.iter() {
            let log = inner.rooms.entry(room.clone()).or_default();
            // In order of number: another node's message may come in after
            // a later one of this node's (usually it goes last).
            let at = log.seqs.iter().rev().take_while(|s| **s > seq).count();
            log.seqs.insert(log.seqs.len() - at, seq);
            if log.seqs.len() > self.cfg.per_room.max(1)
                && let Some(oldest) = log.seqs.pop_front()
            {
                log.dropped_upto = oldest;
            }
        }
        let at = inner.order.iter().rev().take_while(|e| e.seq > seq).count();
        let len = inner.order.len();
        inner.order.insert(len - at, entry);
        self.trim(&mut inner, now);
    }

    fn trim(&self, inner: &mut Inner, now: Instant) {
        while let Some(front) = inner.order.front() {
            let expired = now.saturating_duration_since(front.at) > self.cfg.window;
            if !expired && inner.order.len() <= self.cfg.max_messages.max(1) {
                break;
            }
            let Some(gone) = inner.order.pop_front() else {
                break;
            };
            inner.dropped_upto = gone.seq;
            for room in gone.rooms.iter() {
                if let Some(log) = inner.rooms.get_mut(room) {
                    if log.seqs.front() == Some(&gone.seq) {
                        log.seqs.pop_front();
                        log.dropped_upto = log.dropped_upto.max(gone.seq);
                    }
                    // A room that lost more than the log as a whole (see
                    // `Log::lose_rooms`) is remembered.
                    if log.seqs.is_empty() && log.dropped_upto <= gone.seq {
                        inner.rooms.remove(room);
                    }
                }
            }
        }
    }

    /// Takes note that entries up to `seq` may be missing (another node's
    /// batches that never came): a socket that needs any of them is told to
    /// fetch again.
    pub(crate) fn lose_upto(&self, seq: u64) {
        let mut inner = self.lock();
        inner.gaps_upto = inner.gaps_upto.max(seq);
    }

    /// Takes note that messages of `rooms` up to `upto` may be missing (a
    /// previous process committed changes whose messages reached no one):
    /// a socket in one of them is told to fetch again.
    pub(crate) fn lose_rooms(&self, rooms: impl IntoIterator<Item = Arc<str>>, upto: u64) {
        let mut inner = self.lock();
        for room in rooms {
            let log = inner.rooms.entry(room).or_default();
            log.dropped_upto = log.dropped_upto.max(upto);
        }
    }

    /// Takes note that entries numbered from `from` came in only at `at`
    /// (another node's batches, held up while Redis did not answer): a
    /// socket that left in between was not given them live, and a replay
    /// from its point, which goes by number, would pass them by; it is told
    /// to fetch again instead.
    pub(crate) fn came_late(&self, from: u64, at: u64) {
        let mut inner = self.lock();
        match inner.late.back_mut() {
            Some(last) if from <= last.1 => *last = (last.0.min(from), last.1.max(at)),
            _ => inner.late.push_back((from, at)),
        }
        // Older than the window, a stretch concerns no socket the log can
        // replay to; and a burst of late batches makes one stretch.
        let window = u64::try_from(self.cfg.window.as_micros()).unwrap_or(u64::MAX);
        let oldest = now_us().saturating_sub(window);
        while inner.late.len() > 1 && inner.late.front().is_some_and(|s| s.1 < oldest) {
            inner.late.pop_front();
        }
    }

    /// Takes note that the log holds everything after `seq` (read back from
    /// the cluster's stream at start), although this node started later.
    pub(crate) fn known_after(&self, seq: u64) {
        let mut inner = self.lock();
        inner.dropped_upto = inner.dropped_upto.min(seq);
    }

    /// The number of the oldest entry kept.
    pub(crate) fn first_seq(&self) -> Option<u64> {
        self.lock().order.front().map(|e| e.seq)
    }

    /// Whether entries of `room` after `since` may be missing from the log.
    pub(crate) fn lost_after(&self, room: &str, since: u64) -> bool {
        let inner = self.lock();
        inner.dropped_upto.max(inner.gaps_upto) > since
            || inner
                .late
                .iter()
                .any(|(from, at)| (*from..*at).contains(&since))
            || inner
                .rooms
                .get(room)
                .is_some_and(|r| r.dropped_upto > since)
    }

    /// Up to `limit` entries after `since`, in order (shared: copying them
    /// is a reference count each).
    pub(crate) fn after(&self, since: u64, limit: usize) -> Vec<Arc<Entry>> {
        let mut inner = self.lock();
        self.trim(&mut inner, Instant::now());
        let start = inner.order.partition_point(|e| e.seq <= since);
        inner.order.range(start..).take(limit).cloned().collect()
    }

    /// How many entries the log holds.
    pub(crate) fn len(&self) -> usize {
        self.lock().order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(event: &str) -> What {
        What::Message {
            event: Arc::from(event),
            payload: to_raw(&serde_json::json!({"verb": "created"})),
            omit: None,
            guard: None,
        }
    }

    fn log(per_room: usize, max_messages: usize, window: Duration) -> Log {
        Log::new(ReplayConfig {
            per_room,
            max_messages,
            window,
            ..ReplayConfig::default()
        })
    }

    #[test]
    fn sequence_numbers_rise_and_follow_the_clock() {
        let s = Sequencer::default();
        let before = now_us();
        let (a, b) = (s.next(), s.next());
        assert!(a >= before && b > a, "{before} {a} {b}");
        assert_eq!(s.last(), b);
    }

    #[test]
    fn entries_after_a_point_come_in_order() {
        let l = log(10, 100, Duration::from_secs(60));
        let seqs: Vec<u64> = (0..5).map(|_| l.next_seq()).collect();
        for (i, s) in seqs.iter().enumerate() {
            l.append(*s, vec![Arc::from(format!("r{}", i % 2))], message("pet"));
        }
        let after: Vec<u64> = l.after(seqs[1], 10).iter().map(|e| e.seq).collect();
        assert_eq!(after, seqs[2..]);
        assert_eq!(l.after(seqs[1], 2).len(), 2, "the limit holds");
        assert!(!l.lost_after("r0", seqs[0] - 1));
    }

    #[test]
    fn a_room_past_its_bound_has_lost_its_oldest() {
        let l = log(2, 100, Duration::from_secs(60));
        let seqs: Vec<u64> = (0..4).map(|_| l.next_seq()).collect();
        for s in &seqs {
            l.append(*s, vec![Arc::from("busy")], message("pet"));
        }
        let quiet = l.next_seq();
        l.append(quiet, vec![Arc::from("quiet")], message("pet"));
        assert!(l.lost_after("busy", seqs[0]), "its first two fell out");
        assert!(!l.lost_after("busy", seqs[1]), "its last two are kept");
        assert!(!l.lost_after("quiet", seqs[0]), "another room lost nothing");
    }

    #[test]
    fn the_overall_bound_and_the_window_let_go_of_the_oldest() {
        let l = log(100, 3, Duration::from_secs(60));
        let seqs: Vec<u64> = (0..5).map(|_| l.next_seq()).collect();
        for s in &seqs {
            l.append(*s, vec![Arc::from("r")], message("pet"));
        }
        assert_eq!(l.len(), 3);
        assert!(
            l.lost_after("elsewhere", seqs[0]),
            "any room may have lost something before the overall cut"
        );
        assert!(!l.lost_after("elsewhere", seqs[1]));

        let short = log(100, 100, Duration::from_millis(20));
        let first = short.next_seq();
        short.append(first, vec![Arc::from("r")], message("pet"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(short.after(0, 10).is_empty(), "past the window");
        assert!(short.lost_after("r", first - 1));
    }

    #[test]
    fn an_entry_is_as_old_as_its_number() {
        let l = log(100, 100, Duration::from_secs(60));
        let old = now_us() - 90_000_000;
        let recent = now_us() - 30_000_000;
        l.append(old, vec![Arc::from("r")], message("pet"));
        l.append(recent, vec![Arc::from("r")], message("pet"));
        let kept: Vec<u64> = l.after(0, 10).iter().map(|e| e.seq).collect();
        assert_eq!(
            kept,
            vec![recent],
            "one from 90 s ago is past a 60 s window"
        );
    }

    #[test]
    fn what_was_read_back_at_start_is_known_and_a_gap_is_not_forgotten() {
        let l = log(100, 100, Duration::from_secs(60));
        let before_start = now_us() - 30_000_000;
        assert!(
            l.lost_after("r", before_start),
            "nothing before the start is known"
        );
        l.append(before_start + 1, vec![Arc::from("r")], message("pet"));
        let gap = now_us() - 10_000_000;
        l.lose_upto(gap);
        l.known_after(l.first_seq().unwrap() - 1);
        assert!(!l.lost_after("r", gap), "after the gap: known");
        assert!(
            l.lost_after("r", before_start + 5),
            "a gap is remembered, whatever was read back"
        );
        l.known_after(0);
        assert!(l.lost_after("r", gap - 1));
    }

    #[test]
    fn a_socket_that_left_while_entries_were_late_is_told_to_fetch_again() {
        let l = log(100, 100, Duration::from_secs(60));
        let (published, arrived) = (now_us() - 20_000_000, now_us() - 5_000_000);
        l.known_after(0);
        l.came_late(published, arrived);
        assert!(
            l.lost_after("r", published + 1_000_000),
            "left after they were numbered and before they came"
        );
        assert!(
            !l.lost_after("r", published - 1),
            "before: they are replayed"
        );
        assert!(
            !l.lost_after("r", arrived),
            "after: they were delivered live"
        );
        l.came_late(published + 3_000_000, arrived + 1_000_000);
        assert!(
            l.lost_after("r", arrived + 500_000),
            "merged into one stretch"
        );
    }

    #[test]
    fn a_room_that_lost_messages_is_remembered_past_its_entries() {
        let l = log(100, 100, Duration::from_millis(20));
        let first = l.next_seq();
        l.append(first, vec![Arc::from("r")], message("pet"));
        let lost_at = now_us();
        l.lose_rooms([Arc::from("r")], lost_at);
        assert!(l.lost_after("r", lost_at - 1));
        assert!(!l.lost_after("quiet", first), "another room lost nothing");
        std::thread::sleep(Duration::from_millis(40));
        assert!(l.after(0, 10).is_empty(), "its entry is past the window");
        assert!(
            l.lost_after("r", lost_at - 1),
            "what it lost is not forgotten with its entries"
        );
    }
}
