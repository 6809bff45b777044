/*!
Delivery lanes: the per-recipient work of the pub-sub spread over as many
worker tasks as the machine has cores.

The publisher task stays the one place that decides: it numbers and logs
every message, changes rooms, and picks each message's recipients (a
room's members at that point of the order), all in publish order. What a
message costs per recipient, handing its frame to each socket's outgoing
queue, is then done by the lanes. Every socket belongs to one lane (by a
hash of its id), and a lane hands out its jobs in the order it got them,
so each socket still receives every message in publish order, which is
stronger than the order per record Sails gives: two records' messages
reach a socket in the order they were published too, and the messages of
one action keep Sails' order (`addedTo` before `created`, ...).

Three things keep the order with what the publisher task does itself:

- A share of a message small enough to hand out directly (at most
  [`INLINE_MAX`] sockets) whose lane has nothing pending is handed out by
  the publisher task at once: nothing of that lane can then come before
  it, and a quiet server does not pay a hop per message.
- Before the publisher task sends to one socket itself (a replay, see
  `crate::resume`) it waits for that socket's lane to be idle
  ([`Lanes::quiesce`]).
- A publishing action answers once every lane has handed out what it
  held when the batch was done ([`Lanes::after_handed`]): as in Sails,
  its recipients are served before the answer goes out.

Room membership is not spread: socketioxide keeps every room in one map
under one lock, so joins from several lanes would only wait for each
other. A lane encodes a message once for its share of the recipients, from
the JSON written once ([`Frame`]), through the same emit as the one-task
delivery (`crate::backend::emit_counted`).

Messages under a read rule (`crate::guarded`) are still judged on the
publisher task, recipient by recipient; only their handing out is spread.
Judging on the lanes would need each lane's refused sockets back before
the publisher task makes the others join the new record's room
(`_introduce`): joining everyone first and letting the lanes take the
refused out would leave them, for a moment, in a room an app's own
unguarded broadcast could reach.
*/

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::socket::Sid;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{Cuts, emit_counted};

/// A lane's share of a message this small is handed out by the publisher
/// task itself when the lane has nothing pending.
pub const INLINE_MAX: usize = 64;

/// Jobs a lane holds before the publisher task waits for it.
const LANE_QUEUE: usize = 1_024;

/// The default number of lanes: one per core.
pub fn default_lanes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A message as every recipient gets it: its event, its JSON (written
/// once) and its sequence number.
pub(crate) struct Frame {
    event: Box<str>,
    data: Box<RawValue>,
    seq: Option<u64>,
}

impl Frame {
    pub(crate) fn new(event: &str, data: &RawValue, seq: Option<u64>) -> Self {
        Frame {
            event: event.into(),
            data: data.to_owned(),
            seq,
        }
    }

    fn parts(&self) -> (&str, &RawValue, Option<u64>) {
        (&self.event, &self.data, self.seq)
    }
}

/// Hands a message to `sockets` (ids of this node's sockets), encoded
/// once for all of them: as a broadcast to their own rooms (every socket
/// is in the room named after its id), which costs a room lookup per
/// socket where encoding the frame for each socket cost several
/// allocations and copies. A socket gone meanwhile is passed by. Those it
/// finds with a full queue (a reader that stopped reading) are cut (see
/// `crate::connection`).
pub(crate) async fn hand_out<A: Adapter>(
    io: &SocketIo<A>,
    sockets: &[Sid],
    (event, data, seq): (&str, &RawValue, Option<u64>),
    cuts: &Cuts,
) {
    let to_them = || {
        let own_rooms: Vec<String> = sockets.iter().map(Sid::to_string).collect();
        io.local().to(own_rooms)
    };
    emit_counted(to_them(), to_them, event, data, seq, cuts).await
}

/// Runs its closure once the last clone is dropped: when every lane that
/// holds one has reached it.
struct Countdown(std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl Drop for Countdown {
    fn drop(&mut self) {
        let then = self.0.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(then) = then {
            then();
        }
    }
}

enum Job {
    Send {
        sockets: Vec<Sid>,
        frame: Arc<Frame>,
    },
    /// Reached once every job before it is done.
    Mark(#[allow(dead_code)] Arc<Countdown>),
    Idle(oneshot::Sender<()>),
}

struct Lane {
    tx: mpsc::Sender<Job>,
    /// Jobs queued or running.
    pending: Arc<AtomicUsize>,
}

impl Lane {
    fn idle(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    async fn push(&self, job: Job) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(job).await.is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            tracing::error!("a delivery lane has stopped; a message is dropped");
        }
    }
}

/// The lanes of one node (see the module's documentation).
pub(crate) struct Lanes<A: Adapter> {
    lanes: Vec<Lane>,
    io: SocketIo<A>,
    cuts: Cuts,
}

impl<A: Adapter> Lanes<A> {
    /// Starts `n` lanes (at least one) on the sockets of `io`; a socket
    /// whose queue is full is cut and remembered in `cuts`.
    pub(crate) fn start(n: usize, io: SocketIo<A>, cuts: Cuts) -> Self {
        let lanes = (0..n.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                let pending = Arc::new(AtomicUsize::new(0));
                tokio::spawn(run(rx, pending.clone(), io.clone(), cuts.clone()));
                Lane { tx, pending }
            })
            .collect();
        Lanes { lanes, io, cuts }
    }

    fn lane_of(&self, socket: Sid) -> usize {
        use std::hash::BuildHasher;
        (crate::guarded::BySid.hash_one(socket) % self.lanes.len() as u64) as usize
    }

    /// Hands `frame` to `sockets` (ids of this node's sockets), each
    /// through its lane.
    pub(crate) async fn deliver(&self, sockets: Vec<Sid>, frame: Frame) {
        if sockets.is_empty() {
            return;
        }
        let mut shares: Vec<Vec<Sid>> = (0..self.lanes.len()).map(|_| Vec::new()).collect();
        for socket in sockets {
            shares[self.lane_of(socket)].push(socket);
        }
        let frame = Arc::new(frame);
        for (lane, share) in self.lanes.iter().zip(shares) {
            if share.is_empty() {
                continue;
            }
            if share.len() <= INLINE_MAX && lane.idle() {
                hand_out(&self.io, &share, frame.parts(), &self.cuts).await;
            } else {
                let frame = frame.clone();
                lane.push(Job::Send {
                    sockets: share,
                    frame,
                })
                .await;
            }
        }
    }

    /// Returns once the lane of `socket` has handed out everything it was
    /// given, so what the caller sends to it now comes after.
    pub(crate) async fn quiesce(&self, socket: Sid) {
        let lane = &self.lanes[self.lane_of(socket)];
        if lane.idle() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        lane.push(Job::Idle(tx)).await;
        let _ = rx.await;
    }

    /// Runs `then` once every lane has handed out what it was given so
    /// far (at once when none has anything pending).
    pub(crate) async fn after_handed(&self, then: Box<dyn FnOnce() + Send>) {
        let countdown = Arc::new(Countdown(std::sync::Mutex::new(Some(then))));
        for lane in &self.lanes {
            // A lane with nothing pending has handed out all it got.
            if !lane.idle() {
                lane.push(Job::Mark(countdown.clone())).await;
            }
        }
    }
}

/// One lane: its jobs, in order.
async fn run<A: Adapter>(
    mut rx: mpsc::Receiver<Job>,
    pending: Arc<AtomicUsize>,
    io: SocketIo<A>,
    cuts: Cuts,
) {
    while let Some(job) = rx.recv().await {
        match job {
            Job::Send { sockets, frame } => hand_out(&io, &sockets, frame.parts(), &cuts).await,
            Job::Mark(countdown) => drop(countdown),
            Job::Idle(tx) => {
                // Idle before the waiter wakes.
                pending.fetch_sub(1, Ordering::AcqRel);
                let _ = tx.send(());
                continue;
            }
        }
        pending.fetch_sub(1, Ordering::AcqRel);
    }
}
