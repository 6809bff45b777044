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

A socket whose outgoing queue is full is waited for, within bounds: what
it refused and what comes after for it wait in its lane, which goes on with
its other sockets (see `crate::backlog`).

Four things keep the order with what the publisher task does itself:

- A message to whole rooms while no lane holds anything is handed out by
  the publisher task in one broadcast ([`Lanes::broadcast_if_idle`]),
  as raw socketioxide does: its recipients are neither listed nor shared
  out, which in a burst to 200 watchers was a quarter of the node's CPU
  per event. A share of a message small enough to hand out directly (at
  most [`INLINE_MAX`] sockets) whose lane has nothing pending is handed
  out by the publisher task at once too: nothing of that lane can then
  come before it, and a quiet server does not pay a hop per message.
- Messages the publisher task gathered in a burst (see
  `crate::backend::Backend::gather`) are handed to each socket as one
  run ([`Lanes::hand_out_runs`]) only while no lane holds anything, for
  the same reason.
- Before the publisher task sends to one socket itself (a replay, see
  `crate::resume`) it waits for that socket's lane to be idle
  ([`Lanes::quiesce`]).
- A publishing action answers once every lane has handed out what it
  held when the batch was done ([`Lanes::after_handed`]): as in Sails,
  its recipients are served before the answer goes out. A message waiting
  for a slow reader (see `crate::backlog`) counts as handed: it is that
  socket's, as a message in a full socket buffer is in Sails.

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
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;
use tokio::sync::{mpsc, oneshot};

use socketioxide::BroadcastError;

use crate::backend::{Cuts, Sent, count_missed_full, full_queues, send_to};
use crate::backlog::{Backlogs, SlowReaders};
use crate::connection::full_among;

/// A lane's share of a message this small is handed out by the publisher
/// task itself when the lane has nothing pending.
pub const INLINE_MAX: usize = 64;

/// Jobs a lane holds before the publisher task waits for it.
const LANE_QUEUE: usize = 1_024;

/// How often a lane with messages waiting for slow readers tries their
/// queues again (see `crate::backlog`).
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

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

    pub(crate) fn parts(&self) -> (&str, &RawValue, Option<u64>) {
        (&self.event, &self.data, self.seq)
    }
}

/// Hands a message to `sockets` (ids of this node's sockets), encoded
/// once for all of them: as a broadcast to their own rooms (every socket
/// is in the room named after its id), which costs a room lookup per
/// socket where encoding the frame for each socket cost several
/// allocations and copies. A socket gone meanwhile is passed by. Returns
/// those whose outgoing queue was full: they did not take it.
pub(crate) async fn hand_out<A: Adapter>(
    io: &SocketIo<A>,
    sockets: &[Sid],
    frame: (&str, &RawValue, Option<u64>),
) -> Vec<Sid> {
    let (event, data, seq) = frame;
    if let [socket] = sockets {
        let sent = io.get_socket(*socket).map(|s| send_to(&s, frame));
        return match sent {
            Some(Sent::Full) => vec![*socket],
            _ => Vec::new(),
        };
    }
    let own_rooms: Vec<String> = sockets.iter().map(Sid::to_string).collect();
    let to_them = io.local().to(own_rooms);
    let sent = match seq {
        Some(seq) => to_them.emit(event, &(data, seq)).await,
        None => to_them.emit(event, data).await,
    };
    let missed = match sent {
        Ok(()) => return Vec::new(),
        Err(BroadcastError::Socket(missed)) => missed,
        Err(e) => {
            tracing::error!(error = %e, event, "could not deliver a message");
            return Vec::new();
        }
    };
    let full = full_queues(&missed);
    if full == 0 {
        Vec::new()
    } else if full == sockets.len() {
        sockets.to_vec()
    } else {
        which_were_full(io, sockets, event, full)
    }
}

/// Which `full` of `sockets` a broadcast found with a full queue:
/// socketioxide says how many, not which, so each is probed (see
/// `crate::connection`). A socket whose writer took a packet between the
/// broadcast and its probe is not found: its miss is counted, and logged.
fn which_were_full<A: Adapter>(
    io: &SocketIo<A>,
    sockets: &[Sid],
    event: &str,
    full: usize,
) -> Vec<Sid> {
    let found = full_among(io, sockets);
    if found.len() < full {
        let unknown = (full - found.len()) as u64;
        count_missed_full(event, unknown);
        tracing::warn!(
            event,
            unknown,
            "a message missed sockets whose queue had room again by the time they were looked for"
        );
    }
    found
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
    /// `frame` waits for `sockets`: the publisher task found their queues
    /// full.
    Hold {
        sockets: Vec<Sid>,
        frame: Arc<Frame>,
    },
    /// Reached once every job before it is done.
    Mark(#[allow(dead_code)] Arc<Countdown>),
    /// Answered (dropped) once the socket has nothing waiting.
    Idle(Sid, oneshot::Sender<()>),
}

struct Lane {
    tx: mpsc::Sender<Job>,
    /// Jobs queued or running.
    pending: Arc<AtomicUsize>,
    /// Sockets with messages waiting (see `crate::backlog`).
    backlogged: Arc<AtomicUsize>,
}

impl Lane {
    fn idle(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0 && self.backlogged.load(Ordering::Acquire) == 0
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
}

impl<A: Adapter> Lanes<A> {
    /// Starts `n` lanes (at least one) on the sockets of `io`; a socket
    /// whose queue is full is waited for as `slow` says, then cut and
    /// remembered in `cuts`.
    pub(crate) fn start(n: usize, io: SocketIo<A>, cuts: Cuts, slow: SlowReaders) -> Self {
        let lanes = (0..n.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_QUEUE);
                let pending = Arc::new(AtomicUsize::new(0));
                let backlogged = Arc::new(AtomicUsize::new(0));
                let backlogs = Backlogs::new(slow, backlogged.clone());
                let worker = Worker {
                    io: io.clone(),
                    cuts: cuts.clone(),
                    backlogs,
                };
                tokio::spawn(worker.run(rx, pending.clone()));
                Lane {
                    tx,
                    pending,
                    backlogged,
                }
            })
            .collect();
        Lanes { lanes, io }
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
                let full = hand_out(&self.io, &share, frame.parts()).await;
                self.hold(full, &frame).await;
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

    /// Hands a message to the sockets `op` selects in one broadcast from
    /// the caller's task, as raw socketioxide does, when no lane holds
    /// anything: nothing can then come before it for any socket, and the
    /// recipients need not be listed and shared out. Returns `false`, and
    /// does nothing, when some lane holds something (the caller lists the
    /// recipients for [`Lanes::deliver`]).
    pub(crate) async fn broadcast_if_idle(
        &self,
        op: impl Fn() -> BroadcastOperators<A>,
        (event, data, seq): (&str, &RawValue, Option<u64>),
    ) -> bool {
        if !self.idle() {
            return false;
        }
        let sent = match seq {
            Some(seq) => op().emit(event, &(data, seq)).await,
            None => op().emit(event, data).await,
        };
        let full = match sent {
            Ok(()) => return true,
            Err(BroadcastError::Socket(missed)) => full_queues(&missed),
            Err(e) => {
                tracing::error!(error = %e, event, "could not deliver a message");
                return true;
            }
        };
        if full > 0 {
            // Rare: listed only now, and the rooms have not changed since
            // (they change on this task).
            let sockets: Vec<Sid> = op().sockets().into_iter().map(|s| s.id).collect();
            let full = which_were_full(&self.io, &sockets, event, full);
            self.hold(full, &Arc::new(Frame::new(event, data, seq)))
                .await;
        }
        true
    }

    /// Whether no lane holds anything.
    pub(crate) fn idle(&self) -> bool {
        self.lanes.iter().all(Lane::idle)
    }

    /// Hands each of `sockets` every one of `frames`, in order, one
    /// socket after the other, when no lane holds anything (else returns
    /// `false` and does nothing): each socket's writer then wakes once for
    /// the whole run. A socket whose queue fills up midway waits for the
    /// rest in its lane (see `crate::backlog`).
    pub(crate) async fn hand_out_runs(
        &self,
        sockets: &[socketioxide::extract::SocketRef<A>],
        frames: &[Arc<Frame>],
    ) -> bool {
        if !self.idle() {
            return false;
        }
        let mut full_from = Vec::new();
        for socket in sockets {
            for (i, frame) in frames.iter().enumerate() {
                match send_to(socket, frame.parts()) {
                    Sent::Queued => {}
                    Sent::Full => {
                        full_from.push((socket.id, i));
                        break;
                    }
                    Sent::Gone => break,
                }
            }
        }
        for (socket, from) in full_from {
            for frame in &frames[from..] {
                self.hold(vec![socket], frame).await;
            }
        }
        true
    }

    /// `frame` waits for `sockets`, whose queues were full, each in its
    /// lane (see `crate::backlog`).
    async fn hold(&self, sockets: Vec<Sid>, frame: &Arc<Frame>) {
        if sockets.is_empty() {
            return;
        }
        let mut shares: Vec<Vec<Sid>> = (0..self.lanes.len()).map(|_| Vec::new()).collect();
        for socket in sockets {
            shares[self.lane_of(socket)].push(socket);
        }
        for (lane, share) in self.lanes.iter().zip(shares) {
            if !share.is_empty() {
                let frame = frame.clone();
                lane.push(Job::Hold {
                    sockets: share,
                    frame,
                })
                .await;
            }
        }
    }

    /// Returns once the lane of `socket` has handed out everything it was
    /// given, and nothing waits for `socket` (see `crate::backlog`), so
    /// what the caller sends to it now comes after.
    pub(crate) async fn quiesce(&self, socket: Sid) {
        let lane = &self.lanes[self.lane_of(socket)];
        if lane.idle() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        lane.push(Job::Idle(socket, tx)).await;
        let _ = rx.await;
    }

    /// How many sockets messages wait for now (see `crate::backlog`).
    pub(crate) fn waited_for(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| l.backlogged.load(Ordering::Acquire))
            .sum()
    }

    /// Whether every lane has handed out every job it was given (messages
    /// may still wait for slow readers, see `crate::backlog`).
    pub(crate) fn caught_up(&self) -> bool {
        self.lanes
            .iter()
            .all(|l| l.pending.load(Ordering::Acquire) == 0)
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

/// One lane's worker: its jobs in order, and its sockets' backlogs.
struct Worker<A: Adapter> {
    io: SocketIo<A>,
    cuts: Cuts,
    backlogs: Backlogs,
}

impl<A: Adapter> Worker<A> {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>, pending: Arc<AtomicUsize>) {
        let mut next_drain = tokio::time::Instant::now();
        loop {
            let job = if self.backlogs.is_empty() {
                rx.recv().await
            } else {
                // Slow readers' queues are tried again between jobs, at
                // most every `DRAIN_EVERY`, and when the lane has none.
                if tokio::time::Instant::now() >= next_drain {
                    self.backlogs.drain(&self.io, &self.cuts);
                    next_drain = tokio::time::Instant::now() + DRAIN_EVERY;
                    continue;
                }
                tokio::select! {
                    biased;
                    job = rx.recv() => job,
                    () = tokio::time::sleep_until(next_drain) => continue,
                }
            };
            let Some(job) = job else { break };
            match job {
                Job::Send { sockets, frame } => self.send(sockets, &frame).await,
                Job::Hold { sockets, frame } => {
                    self.backlogs.hold(sockets, &frame, &self.io, &self.cuts)
                }
                Job::Mark(countdown) => drop(countdown),
                Job::Idle(socket, tx) => {
                    // Idle before the waiter wakes.
                    pending.fetch_sub(1, Ordering::AcqRel);
                    self.backlogs.when_quiet(socket, tx);
                    continue;
                }
            }
            pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Hands `frame` to `sockets`, but behind what waits for any of them.
    async fn send(&mut self, mut sockets: Vec<Sid>, frame: &Arc<Frame>) {
        self.backlogs
            .queue_behind(&mut sockets, frame, &self.io, &self.cuts);
        if sockets.is_empty() {
            return;
        }
        let full = hand_out(&self.io, &sockets, frame.parts()).await;
        self.backlogs.hold(full, frame, &self.io, &self.cuts);
    }
}
