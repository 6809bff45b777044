/*!
The engine's effects between the nodes of a cluster.

Each node carries out the effects of a batch (one action) on its own
sockets at once, with local operations that never wait for Redis, then
hands the batch to a relay task that appends it, as one entry, to a Redis
stream every node reads (`crate::cluster`). Every other node carries it out
on its own sockets, on its publisher task, in the order it was appended.

Why a stream rather than pub/sub: what a node publishes while Redis is
paused or restarting is written once Redis answers again, and what a
reader missed while its own link was down is still there when it comes
back, so the other nodes get it late rather than never; and a node that
starts reads the last window of it into its replay log, so a socket that
comes back to a restarted node (or to a cluster restarted whole) is given
what it missed instead of `topsail:resync`. Each batch carries its place
among its node's batches (`n`): a receiver drops a batch it already has (a
write that timed out after Redis took it is written again) and notices one
that never came (the relay's queue overflowed, Redis lost its data), see
[`Heard`].

Why not the adapter's cluster-wide operations: socketioxide-redis publishes
to the other nodes first and delivers locally once Redis answered, so a
slow or unreachable Redis held up every local delivery behind it (for up to
the cluster deadline, one operation after another), and what queued up
meanwhile then went out in one burst that overflowed the outgoing queues of
sockets that read fine: they lost messages without ever falling behind.
Now a node's own sockets never wait for Redis; the other nodes get what is
published while the link is down once it is back (see [`spawn`]).
*/

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use topsail_core::pubsub::{Effect, Guard};

use crate::backend::Relay;
use crate::guarded::WireGuard;
use crate::sockets::{AppMessage, Sockets};

/// The effects of one batch a node carried out, as the others receive it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Relayed<'a> {
    /// The node that sent it (it carried them out on its own sockets).
    node: Cow<'a, str>,
    /// Its place among that node's batches, from 1 (0: a node that does
    /// not number them).
    #[serde(default)]
    n: u64,
    effects: Vec<RelayedEffect<'a>>,
    /// The batches that node dropped just before this one (its relay
    /// queue was full), so that a receiver tells only the sockets they
    /// concerned to fetch again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lost: Option<Lost>,
}

/// The most rooms [`Lost`] lists; past it, every socket is concerned.
const LOST_ROOMS_MAX: usize = 1_024;

/// Batches a node dropped, and the rooms whose members they concerned.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Lost {
    batches: u64,
    /// `None`: every socket (a message to all, or too many rooms to list).
    rooms: Option<Vec<String>>,
}

impl Lost {
    /// Counts one more dropped batch, and the rooms of its effects: a
    /// broadcast's room, `_introduce`'s or `_retire`'s source (whose
    /// members missed the change and the message after it), a socket's own
    /// room for its memberships, an app message's rooms.
    fn add(&mut self, effects: &[RelayedEffect<'_>]) {
        self.batches += 1;
        let Some(rooms) = &mut self.rooms else {
            return;
        };
        for effect in effects {
            match effect {
                RelayedEffect::Membership { socket, .. } => rooms.push(socket.to_string()),
                RelayedEffect::Members { source, .. } => rooms.push(source.to_string()),
                RelayedEffect::Broadcast { room, .. } => rooms.push(room.to_string()),
                RelayedEffect::App(message, _) if message.rooms.is_empty() => {
                    self.rooms = None;
                    return;
                }
                RelayedEffect::App(message, _) => rooms.extend(message.rooms.iter().cloned()),
            }
        }
        rooms.sort_unstable();
        rooms.dedup();
        if rooms.len() > LOST_ROOMS_MAX {
            self.rooms = None;
        }
    }

    /// The rooms whose members must fetch again after `missed` batches
    /// never came; `None`: every socket (this does not account for all of
    /// them: Redis lost some too).
    fn rooms_for(lost: Option<&Lost>, missed: u64) -> Option<&[String]> {
        lost.filter(|l| l.batches == missed)
            .and_then(|l| l.rooms.as_deref())
    }
}

/// One effect as it travels between nodes: an [`Effect`] with its guard in
/// wire form. Effects on this node's sockets only (a request's socket
/// joining rooms, a socket forgetting its rooms) do not travel.
#[derive(Debug, Serialize, Deserialize)]
enum RelayedEffect<'a> {
    /// A socket of another node joins or leaves rooms (app code naming a
    /// socket that is not on the node that published).
    Membership {
        socket: Cow<'a, str>,
        rooms: Cow<'a, [String]>,
        join: bool,
    },
    /// `_introduce` (`join`) or `_retire`: `source`'s members and `dest`.
    Members {
        source: Cow<'a, str>,
        dest: Cow<'a, str>,
        join: bool,
        guard: Option<WireGuard>,
        /// Its sequence number (see `crate::replay`), the same on every
        /// node.
        #[serde(default)]
        seq: Option<u64>,
    },
    Broadcast {
        room: Cow<'a, str>,
        event: Cow<'a, str>,
        payload: Cow<'a, Value>,
        omit: Option<Cow<'a, str>>,
        guard: Option<WireGuard>,
        #[serde(default)]
        seq: Option<u64>,
    },
    /// An app's message (`broadcast`, `blast`), and its number.
    App(Cow<'a, AppMessage>, Option<u64>),
}

impl<'a> RelayedEffect<'a> {
    /// Its sequence number, if it has one.
    fn seq(&self) -> Option<u64> {
        match self {
            RelayedEffect::Membership { .. } => None,
            RelayedEffect::Members { seq, .. }
            | RelayedEffect::Broadcast { seq, .. }
            | RelayedEffect::App(_, seq) => *seq,
        }
    }

    /// What the other nodes must do of `effect`; `None` when it concerns
    /// this node's sockets only.
    fn of(effect: &'a Effect, seq: Option<u64>, is_local: impl Fn(&str) -> bool) -> Option<Self> {
        Some(match effect {
            Effect::Join { socket, rooms, .. } | Effect::Leave { socket, rooms } => {
                if is_local(socket) {
                    return None;
                }
                RelayedEffect::Membership {
                    socket: Cow::Borrowed(socket),
                    rooms: Cow::Borrowed(rooms),
                    join: matches!(effect, Effect::Join { .. }),
                }
            }
            Effect::AddMembers {
                source,
                dest,
                guard,
            } => RelayedEffect::Members {
                source: Cow::Borrowed(source),
                dest: Cow::Borrowed(dest),
                join: true,
                guard: guard.as_ref().map(WireGuard::from),
                seq,
            },
            Effect::RemoveMembers { source, dest } => RelayedEffect::Members {
                source: Cow::Borrowed(source),
                dest: Cow::Borrowed(dest),
                join: false,
                guard: None,
                seq,
            },
            Effect::Forget { .. } => return None,
            Effect::Broadcast {
                room,
                event,
                payload,
                omit,
                guard,
            } => RelayedEffect::Broadcast {
                room: Cow::Borrowed(room),
                event: Cow::Borrowed(event),
                payload: Cow::Borrowed(payload),
                omit: omit.as_deref().map(Cow::Borrowed),
                guard: guard.as_ref().map(WireGuard::from),
                seq,
            },
        })
    }
}

/// Hands this node's batches to the relay task (see [`spawn`]).
#[derive(Debug, Clone)]
pub(crate) struct RelayOut {
    tx: mpsc::Sender<Vec<u8>>,
    /// The number of the last batch offered (see [`Relayed::n`]); one that
    /// does not fit in the queue still takes its number, so that the other
    /// nodes notice it never came.
    numbered: Arc<AtomicU64>,
    /// The publisher's count of work not yet carried out: a batch counts
    /// until the relay task has published it too (a graceful shutdown
    /// waits for it).
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    /// The batches dropped since the last one queued.
    lost: Arc<std::sync::Mutex<Option<Lost>>>,
}

impl RelayOut {
    /// Queues `batch` for the other nodes, unless it concerns this node
    /// only.
    pub(crate) fn offer(&self, sockets: &Sockets, batch: &[Effect], seqs: &[Option<u64>]) {
        let effects: Vec<_> = batch
            .iter()
            .zip(seqs)
            .filter_map(|(e, seq)| RelayedEffect::of(e, *seq, |s| sockets.is_local(s)))
            .collect();
        if !effects.is_empty() {
            self.send(&sockets.node, effects);
        }
    }

    /// Queues an app's message for the other nodes.
    pub(crate) fn offer_app(&self, sockets: &Sockets, message: &AppMessage, seq: u64) {
        let effect = RelayedEffect::App(Cow::Borrowed(message), Some(seq));
        self.send(&sockets.node, vec![effect]);
    }

    /// Queues `effects` of node `node` as one message. A full queue (Redis
    /// has been unreachable for a while) drops it: the other nodes miss it
    /// (and notice), this node's sockets do not wait.
    fn send(&self, node: &str, effects: Vec<RelayedEffect<'_>>) {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        let message = Relayed {
            node: Cow::Borrowed(node),
            n: self.numbered.fetch_add(1, Ordering::AcqRel) + 1,
            effects,
            lost: lost.clone(),
        };
        let bytes = match serde_json::to_vec(&message) {
            Ok(b) => b,
            Err(e) => {
                return tracing::error!(error = %e, "could not encode effects for the cluster");
            }
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(bytes).is_ok() {
            *lost = None;
        } else {
            lost.get_or_insert_with(|| Lost {
                batches: 0,
                rooms: Some(Vec::new()),
            })
            .add(&message.effects);
            self.pending.fetch_sub(1, Ordering::AcqRel);
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "the relay to the other nodes is full; they miss this node's messages"
                );
            }
        }
    }

    /// How many batches the other nodes missed: the relay's queue was full
    /// (see [`spawn`]).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How long the relay waits before it writes again after a failed write.
const RETRY: Duration = Duration::from_millis(250);

/// The most batches written to Redis in one round trip.
const WRITE_AT_ONCE: usize = 64;

/// Starts the relay task: it writes the queued batches through `relay`, in
/// order, up to [`WRITE_AT_ONCE`] at a time. A failed write is tried again
/// every [`RETRY`] until Redis takes it; meanwhile the queue fills (this
/// node's sockets do not wait, see [`RelayOut::offer`]), and what no longer
/// fits in it is dropped and counted.
pub(crate) fn spawn(relay: Arc<dyn Relay>, capacity: usize, pending: Arc<AtomicUsize>) -> RelayOut {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(capacity.max(1));
    let done = pending.clone();
    tokio::spawn(async move {
        let mut batches: Vec<Vec<u8>> = Vec::with_capacity(WRITE_AT_ONCE);
        let mut down_since: Option<Instant> = None;
        loop {
            if batches.is_empty() {
                match rx.recv().await {
                    Some(bytes) => batches.push(bytes),
                    None => break,
                }
                while batches.len() < WRITE_AT_ONCE {
                    match rx.try_recv() {
                        Ok(bytes) => batches.push(bytes),
                        Err(_) => break,
                    }
                }
            }
            match relay.send(&batches).await {
                Ok(()) => {
                    if let Some(since) = down_since.take() {
                        tracing::info!(
                            after = ?since.elapsed(),
                            "the other nodes are reachable again; what they missed is on its way"
                        );
                    }
                    done.fetch_sub(batches.len(), Ordering::AcqRel);
                    batches.clear();
                }
                Err(e) => {
                    if down_since.is_none() {
                        tracing::warn!(error = %e, "cannot reach the other nodes; this node's messages wait for Redis");
                        down_since = Some(Instant::now());
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    });
    RelayOut {
        tx,
        numbered: Arc::default(),
        pending,
        dropped: Arc::default(),
        lost: Arc::default(),
    }
}

/// How a relayed batch came to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// As the other node wrote it (perhaps late, after a Redis outage).
    Live,
    /// Read back from the stream as this node started, before it served
    /// any socket.
    Recalled,
}

/// The most nodes whose last batch a node remembers (a node is a process:
/// each restart is a new one); past it, the one heard from longest ago is
/// forgotten.
const NODES_REMEMBERED: usize = 1024;

/// Where a batch stands among those heard from its node.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// The next one, or the first heard from that node.
    InOrder,
    /// Already heard: a write Redis took although it timed out, written
    /// again.
    Repeat,
    /// Batches of that node before it never came; `since`: the highest
    /// number heard from it before them.
    AfterGap { missed: u64, since: u64 },
}

/// What was last heard from a node: its batch, the highest sequence
/// number in its batches, and when.
#[derive(Debug)]
struct LastHeard {
    n: u64,
    seq: u64,
    at: Instant,
}

/// The last batch heard from each node (see [`Relayed::n`]).
#[derive(Debug, Default)]
pub(crate) struct Heard(HashMap<Box<str>, LastHeard>);

impl Heard {
    /// Where batch `n` of `node`, whose highest sequence number is `seq`
    /// (0: none), stands, and takes note of it.
    pub(crate) fn place(&mut self, node: &str, n: u64, seq: u64) -> Place {
        if n == 0 {
            return Place::InOrder;
        }
        let now = Instant::now();
        let Some(last) = self.0.get_mut(node) else {
            if self.0.len() >= NODES_REMEMBERED
                && let Some(oldest) = self
                    .0
                    .iter()
                    .min_by_key(|(_, last)| last.at)
                    .map(|(k, _)| k.clone())
            {
                self.0.remove(&oldest);
            }
            self.0.insert(node.into(), LastHeard { n, seq, at: now });
            return Place::InOrder;
        };
        if n <= last.n {
            return Place::Repeat;
        }
        let (missed, since) = (n - last.n - 1, last.seq);
        *last = LastHeard {
            n,
            seq: seq.max(since),
            at: now,
        };
        if missed == 0 {
            Place::InOrder
        } else {
            Place::AfterGap { missed, since }
        }
    }
}

impl Sockets {
    /// Where `message`, whose highest sequence number is `highest`,
    /// stands among its node's batches.
    fn place_relayed(&self, message: &Relayed<'_>, highest: u64) -> Place {
        self.heard.lock().unwrap_or_else(|e| e.into_inner()).place(
            &message.node,
            message.n,
            highest,
        )
    }

    /// Takes note of a batch whose lowest number is `lowest` that comes in
    /// later than a relay takes (held up while Redis did not answer): see
    /// [`Log::came_late`](crate::replay::Log::came_late).
    fn note_if_late(&self, lowest: u64) {
        let now = crate::replay::now_us();
        let margin =
            u64::try_from(crate::sockets::CLUSTER_REPLAY_MARGIN.as_micros()).unwrap_or(u64::MAX);
        if now.saturating_sub(lowest) > margin {
            self.log.came_late(lowest, now);
        }
    }

    /// This node's form of a relayed guard; `Err` (logged) when it names
    /// a model this node does not have.
    pub(crate) fn guard_here(&self, wire: Option<WireGuard>) -> Result<Option<Guard>, ()> {
        match wire.map(|g| self.guarding.guard_from(g)) {
            None => Ok(None),
            Some(Some(g)) => Ok(Some(g)),
            Some(None) => {
                tracing::warn!("relayed effects name a model this node does not have");
                Err(())
            }
        }
    }

    /// Carries out on this node's sockets a batch another node relayed.
    pub(crate) async fn receive_relayed(&self, bytes: &[u8], arrival: Arrival) {
        let message: Relayed<'_> = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(e) => return tracing::warn!(error = %e, "unreadable relayed effects"),
        };
        if *message.node == *self.node {
            return;
        }
        let seqs = message.effects.iter().filter_map(RelayedEffect::seq);
        let (lowest, highest) = seqs
            .fold(None, |range, s| match range {
                None => Some((s, s)),
                Some((lo, hi)) => Some((s.min(lo), s.max(hi))),
            })
            .unzip();
        let highest = highest.unwrap_or(0);
        match self.place_relayed(&message, highest) {
            Place::Repeat => {
                metrics::counter!("topsail_relay_repeats_total").increment(1);
                return;
            }
            Place::AfterGap { missed, since } => {
                tracing::warn!(
                    node = %message.node,
                    missed,
                    "batches of another node never came (its relay overflowed, or Redis lost them)"
                );
                metrics::counter!("topsail_relay_gaps_total").increment(missed);
                // What the lost batches published is missing from the log
                // and never reached this node's sockets: a socket that
                // comes back for anything before this batch is told to
                // fetch again rather than given part of its gap, and so is
                // every socket connected now that they concerned: the
                // members of the rooms the sender says they reached, or
                // every socket when it cannot say (Redis lost them).
                let now = crate::replay::now_us();
                let upto = if highest > 0 { highest } else { now };
                self.log.lose_upto(match arrival {
                    Arrival::Live => upto.max(now),
                    Arrival::Recalled => upto,
                });
                if arrival == Arrival::Live {
                    match Lost::rooms_for(message.lost.as_ref(), missed) {
                        Some(rooms) => self.resync_members(rooms, since),
                        None => self.resync_connected(since),
                    }
                }
            }
            Place::InOrder => {}
        }
        if let (Arrival::Live, Some(lowest)) = (arrival, lowest) {
            self.note_if_late(lowest);
        }
        for effect in message.effects {
            match effect {
                RelayedEffect::Membership {
                    socket,
                    rooms,
                    join,
                } => {
                    if self.is_local(&socket) {
                        self.change_rooms(&socket, rooms.into_owned(), join).await;
                    }
                }
                RelayedEffect::Members {
                    source,
                    dest,
                    join,
                    guard,
                    seq,
                } => {
                    let Ok(guard) = self.guard_here(guard) else {
                        continue;
                    };
                    let seq = self.renumber(seq);
                    self.members(source.into_owned(), dest.into_owned(), join, guard, seq)
                        .await;
                }
                RelayedEffect::Broadcast {
                    room,
                    event,
                    payload,
                    omit,
                    guard,
                    seq,
                } => {
                    let Ok(guard) = self.guard_here(guard) else {
                        continue;
                    };
                    let omit = omit.map(|o| Arc::from(&*o));
                    let seq = self.renumber(seq);
                    let (room, payload) = (room.into_owned(), payload.into_owned());
                    self.message(room, &event, payload, omit, guard, seq).await;
                }
                RelayedEffect::App(message, seq) => {
                    let seq = self.renumber(seq).unwrap_or_else(|| self.log.next_seq());
                    self.app_message(message.into_owned(), seq).await
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn broadcast(room: &str) -> RelayedEffect<'_> {
        RelayedEffect::Broadcast {
            room: Cow::Borrowed(room),
            event: Cow::Borrowed("pet"),
            payload: Cow::Owned(Value::Null),
            omit: None,
            guard: None,
            seq: Some(1),
        }
    }

    fn app(rooms: &[&str]) -> RelayedEffect<'static> {
        let message = AppMessage {
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            event: "news".into(),
            payload: Value::Null,
            omit: None,
        };
        RelayedEffect::App(Cow::Owned(message), Some(2))
    }

    /// What dropped batches concerned is the set of their rooms, until
    /// one reached every socket (or too many rooms); and it stands for
    /// the gap only when it counts every batch missing.
    #[test]
    fn lost_batches_name_the_rooms_they_concerned() {
        let mut lost = Lost {
            batches: 0,
            rooms: Some(Vec::new()),
        };
        lost.add(&[broadcast("pet"), broadcast("pet#1")]);
        lost.add(&[
            RelayedEffect::Members {
                source: Cow::Borrowed("pet"),
                dest: Cow::Borrowed("pet#2"),
                join: true,
                guard: None,
                seq: Some(3),
            },
            RelayedEffect::Membership {
                socket: Cow::Borrowed("abc"),
                rooms: Cow::Owned(vec!["user#1".into()]),
                join: true,
            },
            app(&["lobby"]),
        ]);
        assert_eq!(
            Lost::rooms_for(Some(&lost), 2),
            Some(
                &[
                    "abc".to_owned(),
                    "lobby".into(),
                    "pet".into(),
                    "pet#1".into()
                ][..]
            )
        );
        assert_eq!(Lost::rooms_for(Some(&lost), 3), None, "a batch unaccounted");
        assert_eq!(Lost::rooms_for(None, 2), None);

        lost.add(&[app(&[])]);
        lost.add(&[broadcast("pet#9")]);
        assert_eq!(lost.batches, 4);
        assert_eq!(Lost::rooms_for(Some(&lost), 4), None, "a message to all");

        let mut many = Lost {
            batches: 0,
            rooms: Some(Vec::new()),
        };
        let rooms: Vec<String> = (0..=LOST_ROOMS_MAX).map(|i| format!("pet#{i}")).collect();
        let effects: Vec<_> = rooms.iter().map(|r| broadcast(r)).collect();
        many.add(&effects);
        assert_eq!(Lost::rooms_for(Some(&many), 1), None, "too many to list");
    }

    /// A Redis link that fails its first write and keeps what it took.
    #[derive(Default)]
    struct FailsOnce {
        attempts: AtomicU64,
        took: Mutex<Vec<u64>>,
    }

    #[async_trait::async_trait]
    impl Relay for FailsOnce {
        async fn send(&self, batches: &[Vec<u8>]) -> Result<(), crate::error::SocketsError> {
            if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(crate::error::SocketsError::ClusterTimeout);
            }
            let mut took = self.took.lock().unwrap();
            for bytes in batches {
                let batch: Relayed<'_> = serde_json::from_slice(bytes).unwrap();
                took.push(batch.n);
            }
            Ok(())
        }
    }

    fn message() -> Vec<RelayedEffect<'static>> {
        vec![RelayedEffect::Members {
            source: "sails_model_create_pet".into(),
            dest: "sails_model_pet_1:pet".into(),
            join: true,
            guard: None,
            seq: None,
        }]
    }

    async fn until_nothing_pending(pending: &AtomicUsize) {
        for _ in 0..200 {
            if pending.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A failed write is tried again until Redis takes it: what comes
    /// meanwhile waits in the queue and follows, in order, numbered from
    /// 1; nothing is dropped and nothing stays pending.
    #[tokio::test]
    async fn after_a_failure_the_relay_writes_again_and_loses_nothing() {
        let link = Arc::new(FailsOnce::default());
        let pending = Arc::new(AtomicUsize::new(0));
        let out = spawn(link.clone(), 16, pending.clone());
        for _ in 0..5 {
            out.send("node", message());
        }
        until_nothing_pending(&pending).await;
        assert_eq!(pending.load(Ordering::Acquire), 0, "nothing left pending");
        assert_eq!(*link.took.lock().unwrap(), vec![1, 2, 3, 4, 5]);
        assert!(link.attempts.load(Ordering::SeqCst) >= 2, "written again");
        assert_eq!(out.dropped(), 0);
    }

    /// A full relay queue drops what does not fit, at once, and counts it:
    /// the caller (the publisher task) never waits for Redis; a dropped
    /// batch still takes its number, so the other nodes see the gap.
    #[tokio::test]
    async fn a_full_relay_queue_drops_at_once_and_leaves_a_gap_in_the_numbers() {
        struct Stuck;
        #[async_trait::async_trait]
        impl Relay for Stuck {
            async fn send(&self, _: &[Vec<u8>]) -> Result<(), crate::error::SocketsError> {
                std::future::pending().await
            }
        }
        let pending = Arc::new(AtomicUsize::new(0));
        let out = spawn(Arc::new(Stuck), 2, pending.clone());
        for _ in 0..10 {
            out.send("node", message());
        }
        // At most two queued and two taken by the task (stuck in its write).
        assert!(out.dropped() >= 6, "dropped {}", out.dropped());
        assert!(pending.load(Ordering::Acquire) <= 4);
        assert_eq!(
            out.numbered.load(Ordering::Acquire),
            10,
            "every batch numbered"
        );
    }

    #[test]
    fn a_receiver_drops_a_repeat_and_notices_a_gap() {
        let mut heard = Heard::default();
        assert_eq!(
            heard.place("a", 7, 70),
            Place::InOrder,
            "the first heard from a node"
        );
        assert_eq!(heard.place("a", 8, 80), Place::InOrder);
        assert_eq!(heard.place("a", 8, 80), Place::Repeat);
        assert_eq!(heard.place("a", 5, 50), Place::Repeat);
        assert_eq!(
            heard.place("b", 1, 10),
            Place::InOrder,
            "each node on its own"
        );
        assert_eq!(
            heard.place("a", 9, 0),
            Place::InOrder,
            "a batch without numbers"
        );
        assert_eq!(
            heard.place("a", 11, 110),
            Place::AfterGap {
                missed: 1,
                since: 80
            }
        );
        assert_eq!(heard.place("a", 12, 120), Place::InOrder);
        assert_eq!(heard.place("old", 0, 0), Place::InOrder, "unnumbered");
        assert_eq!(heard.place("old", 0, 0), Place::InOrder, "unnumbered");
    }

    #[test]
    fn a_receiver_remembers_a_bounded_number_of_nodes() {
        let mut heard = Heard::default();
        for i in 0..NODES_REMEMBERED + 10 {
            heard.place(&format!("node-{i}"), 1, 0);
        }
        assert_eq!(heard.0.len(), NODES_REMEMBERED);
    }
}
