/*!
The engine's effects between the nodes of a cluster.

Each node carries out the effects of a batch (one action) on its own
sockets at once, with local operations that never wait for Redis, then
hands the batch to a relay task that publishes it, as one message, on a
channel of its own. Every other node carries it out on its own sockets, on
its publisher task, in the order it was published.

Why not the adapter's cluster-wide operations: socketioxide-redis publishes
to the other nodes first and delivers locally once Redis answered, so a
slow or unreachable Redis held up every local delivery behind it (for up to
the cluster deadline, one operation after another), and what queued up
meanwhile then went out in one burst that overflowed the outgoing queues of
sockets that read fine: they lost messages without ever falling behind.
Now a node's own sockets never wait for Redis; the other nodes miss what is
published while the link is down (see [`spawn`]), as before.
*/

use std::borrow::Cow;
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
    effects: Vec<RelayedEffect<'a>>,
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
    /// The publisher's count of work not yet carried out: a batch counts
    /// until the relay task has published it too (a graceful shutdown
    /// waits for it).
    pending: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
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
    /// has been slow for a while) drops it: the other nodes miss it, this
    /// node's sockets do not wait.
    fn send(&self, node: &str, effects: Vec<RelayedEffect<'_>>) {
        let message = Relayed {
            node: Cow::Borrowed(node),
            effects,
        };
        let bytes = match serde_json::to_vec(&message) {
            Ok(b) => b,
            Err(e) => {
                return tracing::error!(error = %e, "could not encode effects for the cluster");
            }
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(bytes).is_err() {
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

    /// How many batches the other nodes missed: the relay's queue was full,
    /// or Redis had just failed (see [`spawn`]).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How long the relay sends nothing after a failed publish: the other
/// nodes miss what is published meanwhile, and this node does not queue
/// it up for a burst once Redis answers.
const BACKOFF: Duration = Duration::from_secs(2);

/// Starts the relay task: it publishes each queued batch through `relay`,
/// in order. After a failure it drops what comes for [`BACKOFF`].
pub(crate) fn spawn(relay: Arc<dyn Relay>, capacity: usize, pending: Arc<AtomicUsize>) -> RelayOut {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let lost = dropped.clone();
    let done = pending.clone();
    tokio::spawn(async move {
        let mut down_until: Option<Instant> = None;
        while let Some(bytes) = rx.recv().await {
            match down_until {
                Some(t) if Instant::now() < t => {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
                _ => match relay.send(bytes).await {
                    Ok(()) => {
                        if down_until.take().is_some() {
                            tracing::info!("the other nodes are reachable again");
                        }
                    }
                    Err(e) => {
                        if down_until.is_none() {
                            tracing::warn!(error = %e, "cannot reach the other nodes; they miss this node's messages for {BACKOFF:?}");
                        }
                        lost.fetch_add(1, Ordering::Relaxed);
                        down_until = Some(Instant::now() + BACKOFF);
                    }
                },
            }
            done.fetch_sub(1, Ordering::AcqRel);
        }
    });
    RelayOut {
        tx,
        pending,
        dropped,
    }
}

impl Sockets {
    /// This node's form of a relayed guard; `Err` (logged) when it names
    /// a model this node does not have.
    fn guard_here(&self, wire: Option<WireGuard>) -> Result<Option<Guard>, ()> {
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
    pub(crate) async fn receive_relayed(&self, bytes: &[u8]) {
        let message: Relayed<'_> = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(e) => return tracing::warn!(error = %e, "unreadable relayed effects"),
        };
        if *message.node == *self.node {
            return;
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

    /// A Redis link that fails its first publish and counts the attempts.
    #[derive(Default)]
    struct FailsOnce(AtomicU64);

    #[async_trait::async_trait]
    impl Relay for FailsOnce {
        async fn send(&self, _: Vec<u8>) -> Result<(), crate::error::SocketsError> {
            match self.0.fetch_add(1, Ordering::SeqCst) {
                0 => Err(crate::error::SocketsError::ClusterTimeout),
                _ => Ok(()),
            }
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

    /// After a failed publish the relay tries nothing for its backoff: what
    /// comes meanwhile is dropped and counted (the other nodes miss it; no
    /// backlog builds up to leave in a burst), and nothing stays pending.
    #[tokio::test]
    async fn after_a_failure_the_relay_drops_and_counts_for_its_backoff() {
        let link = Arc::new(FailsOnce::default());
        let pending = Arc::new(AtomicUsize::new(0));
        let out = spawn(link.clone(), 16, pending.clone());
        for _ in 0..5 {
            out.send("node", message());
        }
        for _ in 0..100 {
            if pending.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pending.load(Ordering::Acquire), 0, "nothing left pending");
        assert_eq!(
            link.0.load(Ordering::SeqCst),
            1,
            "one attempt, then none during the backoff"
        );
        assert_eq!(out.dropped(), 5, "the failed one and the four after it");
    }

    /// A full relay queue drops what does not fit, at once, and counts it:
    /// the caller (the publisher task) never waits for Redis.
    #[tokio::test]
    async fn a_full_relay_queue_drops_at_once() {
        struct Stuck;
        #[async_trait::async_trait]
        impl Relay for Stuck {
            async fn send(&self, _: Vec<u8>) -> Result<(), crate::error::SocketsError> {
                std::future::pending().await
            }
        }
        let pending = Arc::new(AtomicUsize::new(0));
        let out = spawn(Arc::new(Stuck), 2, pending.clone());
        for _ in 0..10 {
            out.send("node", message());
        }
        // One taken by the task (stuck in its send), two queued.
        assert!(out.dropped() >= 7, "dropped {}", out.dropped());
        assert!(pending.load(Ordering::Acquire) <= 3);
    }
}
