/*!
The operations topsail needs from a socket.io server ([`Backend`]), and
their implementation over socketioxide with any adapter ([`Io`]): the
cluster-wide operations of the sockets API behind a circuit breaker, and the
local operations the publisher uses.
*/

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use serde_json::value::RawValue;
use socketioxide::adapter::Adapter;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;
use socketioxide::{BroadcastError, SocketError, SocketIo};

use crate::backlog::SlowReaders;
use crate::connection::{cut, cut_full};
use crate::error::{AdapterFailure, SocketsError};
use crate::introductions::{Batch, CHUNK_TIME, Introductions, MAX_NOTED, Noted};
use crate::lanes::{Frame, Lanes};

/// The operations topsail needs from a socket.io server, object-safe so
/// one handle serves every adapter.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    async fn join(&self, target: &str, rooms: Vec<String>) -> Result<(), SocketsError>;
    async fn leave(&self, target: &str, rooms: Vec<String>) -> Result<(), SocketsError>;
    /// Whether the socket `socket` is connected to this node.
    fn is_local(&self, socket: &str) -> bool;
    async fn emit(
        &self,
        rooms: Vec<String>,
        except: Option<&str>,
        event: &str,
        data: &Value,
    ) -> Result<(), SocketsError>;
    async fn leave_all(&self, room: &str) -> Result<(), SocketsError>;
    async fn rooms_of(&self, socket: &str) -> Result<Vec<String>, SocketsError>;
    /// The rooms the socket `socket` is in, when it is connected to this
    /// node (its own id room included).
    fn local_rooms(&self, socket: &str) -> Option<Vec<String>>;
    /// The ids of this node's sockets in `room`, but `except`.
    fn local_members(&self, room: &str, except: Option<&str>) -> Vec<Sid>;
    /// How many sockets this node holds, and the rooms they are in.
    fn census(&self) -> Census;
    /// Whether the other nodes are reachable (false while the circuit
    /// breaker keeps this node alone; always true without a cluster).
    fn cluster_up(&self) -> bool;
    /// Whether the socket `socket`, which disconnected, had been cut
    /// because its queue was full (forgotten once asked).
    fn was_cut(&self, socket: Sid) -> bool;
    /// The number of the oldest message the socket `socket`, cut because
    /// its queue was full, was known to miss (see `crate::backlog`).
    fn cut_missed_from(&self, socket: Sid) -> Option<u64>;
    /// The socket `socket` of this node enters (or leaves)
    /// [`AT_ROOM_CAP`].
    fn mark_at_room_cap(&self, socket: &str, at_cap: bool);
    /// Emits to this node's members of any of `to` (rooms, or socket ids)
    /// but `except` (socket ids), serializing once; `seq` (the message's
    /// sequence number, see `crate::replay`) goes after `data`.
    async fn emit_local(
        &self,
        to: Vec<String>,
        except: Vec<String>,
        event: &str,
        data: &RawValue,
        seq: Option<u64>,
    );
    /// Emits to `members`, sockets of this node a caller listed (and
    /// judged, see `crate::guarded`), serializing once.
    async fn emit_members(&self, members: Vec<Sid>, event: &str, data: &RawValue, seq: Option<u64>);
    /// Emits to every socket of this node but `except` (socket ids).
    async fn emit_all_local(
        &self,
        except: Vec<String>,
        event: &str,
        data: &RawValue,
        seq: Option<u64>,
    );
    /// Emits to one socket of this node, without waiting: `Full` when its
    /// outgoing queue has no room (the caller may try again; replays do).
    fn emit_to(&self, socket: Sid, event: &str, data: &RawValue, seq: Option<u64>) -> Sent;
    /// Spreads the handing out of messages to local sockets over `n`
    /// delivery lanes from now on (see `crate::lanes`).
    fn start_lanes(&self, n: usize, slow: SlowReaders);
    /// From now until [`Backend::hand_out_gathered`], messages the
    /// publisher task emits to the same rooms one after the other are
    /// gathered, then handed to each socket as one run: its writer wakes
    /// once for them all. Anything else that sends or changes rooms hands
    /// out what is gathered first, so every order stays as it was.
    fn gather(&self) {}
    /// Hands out what was gathered, and gathers no more.
    async fn hand_out_gathered(&self) {}
    /// How many sockets messages wait for in the lanes (see
    /// `crate::backlog`).
    fn slow_readers(&self) -> usize;
    /// Returns once nothing sent to `socket` earlier is still waiting in a
    /// delivery lane.
    async fn quiesce(&self, socket: Sid);
    /// Runs `then` once every message emitted so far has been handed to
    /// its sockets (at once without lanes).
    async fn after_handed(&self, then: Box<dyn FnOnce() + Send>);
    /// This node's members of any of `within` (rooms, or socket ids) but
    /// `except` join (or leave) `rooms`.
    async fn local_membership(
        &self,
        within: Vec<String>,
        except: Vec<String>,
        rooms: Vec<String>,
        join: bool,
    );
    /// `_introduce` on this node's sockets: the members of `source` but
    /// those at their room cap join `dest`, now or later as
    /// [`Introductions`] says (see `crate::introductions`).
    async fn introduce(&self, source: &str, dest: &str) {
        let (within, except) = (vec![source.to_owned()], vec![AT_ROOM_CAP.to_owned()]);
        self.local_membership(within, except, vec![dest.to_owned()], true)
            .await
    }
    /// `_retire` on this node's sockets: the members of `source` leave
    /// `dest` (an introduction to it still noted is forgotten).
    async fn retire(&self, source: &str, dest: &str) {
        let within = vec![source.to_owned()];
        self.local_membership(within, Vec::new(), vec![dest.to_owned()], false)
            .await
    }
    /// Carries out noted introductions as [`Introductions`] says, after
    /// the publisher task did a piece of work (`queue_empty`: and has no
    /// more waiting).
    async fn carry_noted(&self, _queue_empty: bool) {}
    /// Whether introductions are noted that wait for the node to catch
    /// up: the publisher task then looks again soon.
    fn awaits_catch_up(&self) -> bool {
        false
    }
    /// A socket's `rooms` with the introductions noted for it.
    fn with_noted(&self, rooms: Vec<String>) -> Vec<String> {
        rooms
    }
    /// When introductions are carried out from now on.
    fn set_introductions(&self, _when: Introductions) {}
}

/// Carries the engine's effects to the other nodes of a cluster (see
/// [`crate::relay`]).
#[async_trait]
pub(crate) trait Relay: Send + Sync + 'static {
    /// Writes `batches` (each one message, in order) for the other nodes.
    /// On an error any of them may have been written; they are written
    /// again (a receiver drops a repeat).
    async fn send(&self, batches: &[Vec<u8>]) -> Result<(), SocketsError>;
}

/// What became of a message for one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// In its outgoing queue.
    Queued,
    /// Its queue is full.
    Full,
    /// It is not connected (any more).
    Gone,
}

/// What one node holds (see [`crate::Sockets::census`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Sockets connected to this node.
    pub sockets: usize,
    /// Distinct rooms they are in (record, model and app rooms; not each
    /// socket's own id room).
    pub rooms: usize,
    /// Memberships: the sum over sockets of the rooms each is in.
    pub memberships: usize,
}

/// The room of this node's sockets that reached their room cap (see
/// `crate::room_cap`): `_introduce` leaves its members out.
pub(crate) const AT_ROOM_CAP: &str = "topsail#room-cap";

/// How long the node must have been quiet before noted introductions are
/// carried out (see `crate::introductions`).
const QUIET: Duration = Duration::from_millis(5);

/// The share of one core under which the process counts as idle: the
/// lanes can be caught up while the sockets' writers still write what
/// they were handed (for hundreds of milliseconds, to 10,000 sockets).
const IDLE_SHARE: f64 = 0.25;

/// The process's CPU time so far, where the platform tells it.
fn process_cpu() -> Option<Duration> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        Some(Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        None
    }
}

/// How long a cluster operation may take before this node gives up on the
/// other nodes for now.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(1);
/// How long the node then works alone before it tries the cluster again.
const CLUSTER_BACKOFF: Duration = Duration::from_secs(2);

/// A socket.io server, with a circuit breaker for its cluster: when the
/// adapter cannot reach the other nodes (Redis is down), operations run on
/// this node's sockets only, without waiting, until the backoff has passed.
pub(crate) struct Io<A: Adapter> {
    pub(crate) io: SocketIo<A>,
    /// Until when (ms since the epoch) the cluster is considered down.
    pub(crate) alone_until: AtomicU64,
    /// Sockets whose connection was cut because their queue was full.
    pub(crate) cuts: Cuts,
    /// The delivery lanes, once started.
    lanes: std::sync::OnceLock<Lanes<A>>,
    /// Introductions not carried out yet (see `crate::introductions`).
    noted: Noted,
    /// When they are (set when the publisher starts).
    introductions: std::sync::OnceLock<Introductions>,
    /// Since when the lanes have been caught up, and when the next chunk
    /// of noted introductions may be carried out (see [`Io::carry_noted`]).
    quiet: std::sync::Mutex<Quiet>,
    /// Whether messages are gathered now (see [`Backend::gather`]).
    gathering: std::sync::atomic::AtomicBool,
    /// The messages gathered, all to the same rooms.
    gathered: std::sync::Mutex<Option<Gathered>>,
    /// Held while what was gathered is handed out.
    handing_out: tokio::sync::Mutex<()>,
}

/// Messages to the same rooms, gathered to be handed out together (see
/// [`Backend::gather`]).
struct Gathered {
    to: Vec<String>,
    except: Vec<String>,
    frames: Vec<Arc<Frame>>,
}

/// Recipients under which gathered messages are broadcast one by one, each
/// encoded once, rather than handed to each socket as a run, which encodes
/// each message once per socket: at 200 watchers of a burst the run cost
/// more CPU than the wake-ups it saved, at 10,000 it was the cheaper.
const RUN_RECIPIENTS_MIN: usize = 1_000;

/// How [`Io::carry_noted`] paces itself.
#[derive(Debug, Default)]
struct Quiet {
    /// Since when the lanes have been caught up and the process idle.
    since: Option<std::time::Instant>,
    /// When the next chunk may be carried out.
    next: Option<std::time::Instant>,
    /// The last look at the process's CPU clock: when, and what it said.
    looked: Option<(std::time::Instant, Duration)>,
    /// Whether the process was idle between the last two looks.
    busy: bool,
    /// CPU the chunks carried out since the last look took.
    own: Duration,
}

impl Quiet {
    /// How long the node has been quiet as of `now`: the lanes caught up,
    /// and the process (its `cpu` so far, less the chunks' own) idle.
    fn quiet_for(
        &mut self,
        caught_up: bool,
        now: std::time::Instant,
        cpu: Option<Duration>,
    ) -> Duration {
        self.look(now, cpu);
        if !caught_up || self.busy {
            self.since = None;
            return Duration::ZERO;
        }
        now - *self.since.get_or_insert(now)
    }

    /// Whether the process was busy since the last look; a look sooner
    /// than a millisecond after it keeps the last answer (the share of so
    /// short a time says nothing).
    fn look(&mut self, now: std::time::Instant, cpu: Option<Duration>) {
        let Some(cpu) = cpu else { return };
        let Some((at, was)) = self.looked else {
            self.looked = Some((now, cpu));
            return;
        };
        let wall = now - at;
        if wall < Duration::from_millis(1) {
            return;
        }
        let others = cpu.saturating_sub(was).saturating_sub(self.own);
        self.busy = others.as_secs_f64() > IDLE_SHARE * wall.as_secs_f64();
        self.looked = Some((now, cpu));
        self.own = Duration::ZERO;
    }
}

impl<A: Adapter> Io<A> {
    pub(crate) fn new(io: SocketIo<A>) -> Self {
        Io {
            io,
            alone_until: AtomicU64::new(0),
            cuts: Cuts::default(),
            lanes: std::sync::OnceLock::new(),
            noted: Noted::default(),
            introductions: std::sync::OnceLock::new(),
            quiet: std::sync::Mutex::default(),
            gathering: std::sync::atomic::AtomicBool::new(false),
            gathered: std::sync::Mutex::default(),
            handing_out: tokio::sync::Mutex::const_new(()),
        }
    }

    /// [`Backend::emit_members`], but behind nothing gathered.
    async fn emit_members_now(
        &self,
        members: Vec<Sid>,
        event: &str,
        data: &RawValue,
        seq: Option<u64>,
    ) {
        match self.lanes.get() {
            Some(lanes) => lanes.deliver(members, Frame::new(event, data, seq)).await,
            None => {
                // Without lanes nothing keeps messages for a slow reader:
                // one whose queue is full is cut at once.
                let frame = (event, data, seq);
                let full = crate::lanes::hand_out(&self.io, &members, frame).await;
                count_missed_full(event, full.len() as u64);
                for socket in full.iter().filter_map(|&s| self.io.get_socket(s)) {
                    self.cuts.cut(&socket, seq);
                }
            }
        }
    }

    /// Hands out the messages gathered so far (see [`Backend::gather`]).
    async fn flush_gathered(&self) {
        if !self.gathering.load(Ordering::Acquire) {
            return;
        }
        let _turn = self.handing_out.lock().await;
        let taken = self
            .gathered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(Gathered { to, except, frames }) = taken else {
            return;
        };
        let op = || self.io.local().to(to.clone()).except(except.clone());
        // Listed only when a run may go out: not for one message, nor
        // while a lane holds something.
        let lanes = self.lanes.get().filter(|l| frames.len() > 1 && l.idle());
        if let Some(lanes) = lanes {
            let sockets = op().sockets();
            if sockets.len() >= RUN_RECIPIENTS_MIN && lanes.hand_out_runs(&sockets, &frames).await {
                return;
            }
        }
        for frame in &frames {
            let (event, data, seq) = frame.parts();
            self.emit_selected(op, event, data, seq).await;
        }
    }

    /// Gathers a message to `to` but `except`, handing out first what was
    /// gathered for other rooms; returns `false` when not gathering.
    async fn gather_emit(
        &self,
        to: &[String],
        except: &[String],
        (event, data, seq): (&str, &RawValue, Option<u64>),
    ) -> bool {
        if !self.gathering.load(Ordering::Acquire) {
            return false;
        }
        let same = {
            let g = self.gathered.lock().unwrap_or_else(|e| e.into_inner());
            g.as_ref().is_some_and(|g| g.to == to && g.except == except)
        };
        // An introduction carried out now changes who is in `to`: what was
        // gathered before it goes out first.
        let carries = self.noted.any() && !self.noted.needed_for(to, &[], &[]).is_empty();
        if !same || carries {
            self.flush_gathered().await;
        }
        self.carry(|noted| noted.needed_for(to, &[], &[])).await;
        let frame = Arc::new(Frame::new(event, data, seq));
        let mut g = self.gathered.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(g) => g.frames.push(frame),
            None => {
                *g = Some(Gathered {
                    to: to.to_vec(),
                    except: except.to_vec(),
                    frames: vec![frame],
                })
            }
        }
        true
    }

    fn introductions(&self) -> Introductions {
        self.introductions
            .get()
            .copied()
            .unwrap_or(Introductions::AtOnce)
    }

    /// Carries out the noted introductions `pick` chooses, one record at
    /// a time (socketioxide holds every room under one lock while a
    /// record's watchers join it).
    async fn carry(&self, pick: impl Fn(&Noted) -> Batch) {
        // Most deliveries in a burst need none: they pass without the turn.
        if !self.noted.any() || pick(&self.noted).is_empty() {
            return;
        }
        self.flush_gathered().await;
        let _turn = self.noted.carrying.lock().await;
        let batch = pick(&self.noted);
        for (source, dests) in &batch {
            for dest in dests {
                self.introduce_now(source, dest).await;
            }
        }
        self.noted.done(&batch);
    }

    /// The members of `source` but those at their room cap join `dest`.
    async fn introduce_now(&self, source: &str, dest: &str) {
        let (within, except) = (vec![source.to_owned()], vec![AT_ROOM_CAP.to_owned()]);
        self.membership_now(within, except, vec![dest.to_owned()], true)
            .await
    }

    /// Carries out every noted introduction, for an operation of the
    /// sockets API that may look at any room.
    async fn carry_all(&self) {
        self.carry(|noted| noted.peek(None)).await
    }

    /// This node's members of any of `within` but `except` join (or
    /// leave) `rooms`, as the rooms are now.
    async fn membership_now(
        &self,
        within: Vec<String>,
        except: Vec<String>,
        rooms: Vec<String>,
        join: bool,
    ) {
        if within.is_empty() || rooms.is_empty() {
            return;
        }
        let op = self.io.local().within(within).except(except);
        let done = if join {
            op.join(rooms).await
        } else {
            op.leave(rooms).await
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "could not change the rooms of local sockets");
        }
    }

    /// Hands a message to the local sockets `op` selects: through the
    /// lanes once they run, else as one broadcast.
    async fn emit_selected(
        &self,
        op: impl Fn() -> socketioxide::operators::BroadcastOperators<A>,
        event: &str,
        data: &RawValue,
        seq: Option<u64>,
    ) {
        match self.lanes.get() {
            Some(lanes) => {
                if lanes.broadcast_if_idle(&op, (event, data, seq)).await {
                    return;
                }
                let ids = op().sockets().into_iter().map(|s| s.id).collect();
                self.emit_members_now(ids, event, data, seq).await
            }
            None => emit_counted(op(), &op, event, data, seq, &self.cuts).await,
        }
    }
}

/// The sockets whose queue was full: cut because of it, or with messages
/// waiting for them (see `crate::backlog`), until their disconnect is
/// seen.
#[derive(Clone, Default)]
pub(crate) struct Cuts(Arc<std::sync::Mutex<std::collections::HashMap<Sid, Strain>>>);

/// What is known of a socket whose queue was full.
#[derive(Debug, Clone, Copy)]
struct Strain {
    cut: bool,
    /// The number of the first message its full queue refused.
    missed_from: Option<u64>,
    /// Once nothing waits for it any more, until when what it was handed
    /// may still sit unread in its queue and buffers.
    unread_until: Option<std::time::Instant>,
}

impl Strain {
    fn missed_from(&self) -> Option<u64> {
        let stale = self
            .unread_until
            .is_some_and(|t| std::time::Instant::now() > t);
        if stale { None } else { self.missed_from }
    }
}

impl Cuts {
    /// Cuts the sockets `op` selects whose queue is full (see
    /// `crate::connection`), and remembers them.
    pub(crate) fn cut_full<A: Adapter>(&self, op: BroadcastOperators<A>) {
        cut_full(op, |sid| self.mark(sid, true, None));
    }

    /// Cuts `socket`'s connection, and remembers it; `missed_from`: the
    /// number of a message it missed.
    pub(crate) fn cut<A: Adapter>(
        &self,
        socket: &socketioxide::extract::SocketRef<A>,
        missed_from: Option<u64>,
    ) {
        cut(socket, &mut |sid| self.mark(sid, true, missed_from));
    }

    /// Messages wait for `socket` from message `missed_from` on.
    pub(crate) fn waiting(&self, socket: Sid, missed_from: Option<u64>) {
        self.mark(socket, false, missed_from);
    }

    /// Nothing waits for `socket` any more: its queue took it all. What it
    /// took may still sit unread for `unread_for` (a connection that dies
    /// empties its queue into the void before its disconnect is seen).
    pub(crate) fn done_waiting(&self, socket: Sid, unread_for: Duration) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(strain) = all.get_mut(&socket).filter(|s| !s.cut) {
            strain.unread_until = Some(std::time::Instant::now() + unread_for);
        }
    }

    /// `socket` is gone, and its disconnect was seen.
    pub(crate) fn gone(&self, socket: Sid) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(&socket);
    }

    fn mark(&self, socket: Sid, cut: bool, missed_from: Option<u64>) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let strain = all.entry(socket).or_insert(Strain {
            cut,
            missed_from,
            unread_until: None,
        });
        // A strain long over is forgotten: this one starts afresh.
        if strain.missed_from().is_none() {
            strain.missed_from = None;
        }
        strain.unread_until = None;
        strain.cut |= cut;
        strain.missed_from = match (strain.missed_from, missed_from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The number of the first message `socket`'s full queue refused, if
    /// it was cut, had messages waiting when it went, or went soon after.
    fn missed_from(&self, socket: Sid) -> Option<u64> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.get(&socket).and_then(Strain::missed_from)
    }

    /// Whether `socket` was cut (forgotten once asked).
    fn take(&self, socket: Sid) -> bool {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(&socket).is_some_and(|s| s.cut)
    }
}

/// Emits to the sockets `op` selects, serialized once, with `seq` after
/// `data` when there is one. A socket it finds with a full queue misses it
/// (counted, see [`missed_by_slow_readers`]), and those `again` selects
/// whose queue is full are cut.
pub(crate) async fn emit_counted<A: Adapter, T: serde::Serialize + ?Sized>(
    op: BroadcastOperators<A>,
    again: impl FnOnce() -> BroadcastOperators<A>,
    event: &str,
    data: &T,
    seq: Option<u64>,
    cuts: &Cuts,
) {
    let sent = match seq {
        Some(seq) => op.emit(event, &(data, seq)).await,
        None => op.emit(event, data).await,
    };
    match sent {
        Ok(()) => {}
        Err(BroadcastError::Socket(missed)) => {
            if missed_by_slow_readers(event, &missed) > 0 {
                cuts.cut_full(again());
            }
        }
        Err(e) => tracing::error!(error = %e, event, "could not deliver a message"),
    }
}

/// Hands a message to one socket's outgoing queue, with `seq` after
/// `data` when there is one.
pub(crate) fn send_to<A: Adapter>(
    socket: &socketioxide::extract::SocketRef<A>,
    (event, data, seq): (&str, &RawValue, Option<u64>),
) -> Sent {
    let sent = match seq {
        Some(seq) => socket.emit(event, &(data, seq)),
        None => socket.emit(event, data),
    };
    match sent {
        Ok(()) => Sent::Queued,
        Err(socketioxide::SendError::Socket(SocketError::InternalChannelFull)) => Sent::Full,
        Err(socketioxide::SendError::Socket(_)) => Sent::Gone,
        Err(e) => {
            tracing::error!(error = %e, event, "could not encode a message");
            Sent::Gone
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Messages that did not reach a socket of this process because its
/// outgoing queue was full (all `Sockets` of a process share it).
pub(crate) static MISSED_FULL: AtomicU64 = AtomicU64::new(0);

/// A broadcast reached every socket but `missed`: sockets whose outgoing
/// queue was full (a reader that stopped reading) or that had just closed.
/// socketioxide reports them without their ids, after sending to every
/// other socket. A full queue is counted, and logged at the first miss and
/// at each doubling; returns how many sockets missed it for that reason
/// (whose connections the caller then cuts, see `crate::connection`).
pub(crate) fn missed_by_slow_readers(event: &str, missed: &[SocketError]) -> u64 {
    let full = full_queues(missed) as u64;
    count_missed_full(event, full);
    tracing::debug!(
        event,
        queue_full = full,
        closed = missed.len() as u64 - full,
        "a broadcast missed sockets that are not reading"
    );
    full
}

/// How many of a broadcast's `missed` sockets missed it because their
/// outgoing queue was full (the others had just closed).
pub(crate) fn full_queues(missed: &[SocketError]) -> usize {
    missed
        .iter()
        .filter(|e| matches!(e, SocketError::InternalChannelFull))
        .count()
}

/// Counts `full` sockets a message missed because their outgoing queue was
/// full, logged at the first miss and at each doubling.
pub(crate) fn count_missed_full(event: &str, full: u64) {
    let before = MISSED_FULL.fetch_add(full, Ordering::Relaxed);
    let after = before + full;
    if full > 0 && (before == 0 || after.ilog2() > before.ilog2()) {
        tracing::warn!(
            event,
            missed_so_far = after,
            "a message missed sockets whose outgoing queue is full (they are not reading)"
        );
    }
}

fn err(e: impl std::error::Error + 'static) -> SocketsError {
    SocketsError::Adapter(AdapterFailure::capture(&e))
}

impl<A: Adapter> Io<A> {
    fn alone(&self) -> bool {
        now_ms() < self.alone_until.load(Ordering::Relaxed)
    }

    /// Runs a cluster-wide operation under the deadline; on failure the
    /// node works alone for a while.
    async fn cluster<T, E: std::error::Error + 'static>(
        &self,
        op: impl Future<Output = Result<T, E>>,
    ) -> Result<T, SocketsError> {
        match tokio::time::timeout(CLUSTER_DEADLINE, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.give_up(err(e))),
            Err(_) => Err(self.give_up(SocketsError::ClusterTimeout)),
        }
    }

    fn give_up(&self, e: SocketsError) -> SocketsError {
        if !self.alone() {
            metrics::counter!("topsail_cluster_breaker_openings_total").increment(1);
            tracing::warn!(error = %e, "cannot reach the other nodes; working alone for {CLUSTER_BACKOFF:?}");
        }
        self.alone_until.store(
            now_ms() + CLUSTER_BACKOFF.as_millis() as u64,
            Ordering::Relaxed,
        );
        e
    }

    fn ops(&self, local: bool) -> socketioxide::operators::BroadcastOperators<A> {
        if local {
            self.io.local()
        } else {
            self.io.broadcast()
        }
    }

    /// The members of `target` (a socket id or a room) join or leave
    /// `rooms`: cluster-wide, or on this node only while it works alone.
    async fn membership(
        &self,
        target: &str,
        rooms: Vec<String>,
        join: bool,
    ) -> Result<(), SocketsError> {
        self.carry_all().await;
        let run = |local: bool| {
            let op = self.ops(local).within(target.to_owned());
            let rooms = rooms.clone();
            async move {
                if join {
                    op.join(rooms).await
                } else {
                    op.leave(rooms).await
                }
            }
        };
        if !self.alone() {
            match self.cluster(run(false)).await {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!(error = %e, "room change falls back to local sockets"),
            }
        }
        run(true).await.map_err(err)
    }
}

#[async_trait]
impl<A: Adapter> Backend for Io<A> {
    async fn join(&self, target: &str, rooms: Vec<String>) -> Result<(), SocketsError> {
        self.membership(target, rooms, true).await
    }

    async fn leave(&self, target: &str, rooms: Vec<String>) -> Result<(), SocketsError> {
        self.membership(target, rooms, false).await
    }

    fn was_cut(&self, socket: Sid) -> bool {
        self.cuts.take(socket)
    }

    fn cut_missed_from(&self, socket: Sid) -> Option<u64> {
        self.cuts.missed_from(socket)
    }

    fn is_local(&self, socket: &str) -> bool {
        socket
            .parse()
            .ok()
            .is_some_and(|sid| self.io.get_socket(sid).is_some())
    }

    async fn emit(
        &self,
        rooms: Vec<String>,
        except: Option<&str>,
        event: &str,
        data: &Value,
    ) -> Result<(), SocketsError> {
        self.carry_all().await;
        let build = |local: bool| {
            let mut op = self.ops(local);
            if !rooms.is_empty() {
                op = op.to(rooms.clone());
            }
            if let Some(e) = except {
                op = op.except(e.to_owned());
            }
            op
        };
        let mut failure = None;
        if !self.alone() {
            // The adapter publishes to the other nodes first and delivers
            // locally only once that succeeded: on failure nothing was
            // delivered yet, so the local fallback sends nothing twice.
            match tokio::time::timeout(CLUSTER_DEADLINE, build(false).emit(event, data)).await {
                Ok(Ok(())) => return Ok(()),
                // Delivered everywhere but to local sockets that could not
                // take it: not a cluster failure, and nothing to send again.
                Ok(Err(BroadcastError::Socket(missed))) => {
                    if missed_by_slow_readers(event, &missed) > 0 {
                        self.cuts.cut_full(build(true));
                    }
                    return Ok(());
                }
                Ok(Err(e)) => failure = Some(self.give_up(err(e))),
                Err(_) => failure = Some(self.give_up(SocketsError::ClusterTimeout)),
            }
        }
        match build(true).emit(event, data).await {
            Ok(()) => {}
            Err(BroadcastError::Socket(missed)) => {
                if missed_by_slow_readers(event, &missed) > 0 {
                    self.cuts.cut_full(build(true));
                }
            }
            Err(e) => return Err(err(e)),
        }
        match failure {
            Some(e) => Err(e),
            None => Err(SocketsError::DeliveredLocally),
        }
    }

    async fn leave_all(&self, room: &str) -> Result<(), SocketsError> {
        self.carry_all().await;
        let local = self.alone();
        let members = match self
            .cluster(self.ops(local).within(room.to_owned()).fetch_sockets())
            .await
        {
            Ok(m) => m,
            Err(_) => self
                .ops(true)
                .within(room.to_owned())
                .fetch_sockets()
                .await
                .map_err(err)?,
        };
        for s in members {
            let own = s.data().id.to_string();
            let rooms: Vec<String> = s
                .rooms()
                .await
                .map_err(err)?
                .into_iter()
                .map(|r| r.to_string())
                .filter(|r| *r != own)
                .collect();
            if !rooms.is_empty() {
                s.leave(rooms).await.map_err(err)?;
            }
        }
        Ok(())
    }

    fn local_rooms(&self, socket: &str) -> Option<Vec<String>> {
        let sid = socket.parse().ok()?;
        let rooms = self.io.get_socket(sid)?.rooms();
        Some(self.with_noted(rooms.into_iter().map(|r| r.to_string()).collect()))
    }

    fn census(&self) -> Census {
        let sockets = self.io.sockets();
        let mut rooms = std::collections::HashSet::new();
        let mut memberships = 0;
        for socket in &sockets {
            let own = socket.id.to_string();
            let held = socket.rooms().into_iter().map(|r| r.into_owned()).collect();
            for room in self.with_noted(held) {
                // Its own id room, and the mark of a socket at its cap,
                // are topsail's bookkeeping, not rooms an app sees.
                if room != own && room != AT_ROOM_CAP {
                    memberships += 1;
                    rooms.insert(room);
                }
            }
        }
        Census {
            sockets: sockets.len(),
            rooms: rooms.len(),
            memberships,
        }
    }

    fn cluster_up(&self) -> bool {
        !self.alone()
    }

    fn local_members(&self, room: &str, except: Option<&str>) -> Vec<Sid> {
        let members = |room: String, except: Vec<String>| {
            let op = self.io.local().to(room).except(except);
            op.sockets().into_iter().map(|s| s.id)
        };
        let except: Vec<String> = except.map(str::to_owned).into_iter().collect();
        let mut found: Vec<Sid> = members(room.to_owned(), except.clone()).collect();
        // The watchers a noted introduction makes members of it.
        if let Some(source) = self.noted.source_of(room) {
            let held: std::collections::HashSet<Sid> = found.iter().copied().collect();
            let mut except = except;
            except.push(AT_ROOM_CAP.to_owned());
            found.extend(members(source, except).filter(|s| !held.contains(s)));
        }
        found
    }

    fn mark_at_room_cap(&self, socket: &str, at_cap: bool) {
        let Some(s) = socket.parse().ok().and_then(|sid| self.io.get_socket(sid)) else {
            return;
        };
        if at_cap {
            s.join(AT_ROOM_CAP);
        } else {
            s.leave(AT_ROOM_CAP);
        }
    }

    async fn emit_local(
        &self,
        to: Vec<String>,
        except: Vec<String>,
        event: &str,
        data: &RawValue,
        seq: Option<u64>,
    ) {
        if to.is_empty() || self.gather_emit(&to, &except, (event, data, seq)).await {
            return;
        }
        self.carry(|noted| noted.needed_for(&to, &[], &[])).await;
        let op = || self.io.local().to(to.clone()).except(except.clone());
        self.emit_selected(op, event, data, seq).await
    }

    async fn emit_all_local(
        &self,
        except: Vec<String>,
        event: &str,
        data: &RawValue,
        seq: Option<u64>,
    ) {
        self.flush_gathered().await;
        let op = || self.io.local().except(except.clone());
        self.emit_selected(op, event, data, seq).await
    }

    async fn emit_members(
        &self,
        members: Vec<Sid>,
        event: &str,
        data: &RawValue,
        seq: Option<u64>,
    ) {
        self.flush_gathered().await;
        self.emit_members_now(members, event, data, seq).await
    }

    fn start_lanes(&self, n: usize, slow: SlowReaders) {
        let lanes = Lanes::start(n, self.io.clone(), self.cuts.clone(), slow);
        let _ = self.lanes.set(lanes);
    }

    fn gather(&self) {
        // Only through the lanes: without them a message is broadcast at
        // once, and a full queue cuts its socket.
        if self.lanes.get().is_some() {
            self.gathering.store(true, Ordering::Release);
        }
    }

    async fn hand_out_gathered(&self) {
        self.flush_gathered().await;
        self.gathering.store(false, Ordering::Release);
    }

    fn slow_readers(&self) -> usize {
        self.lanes.get().map_or(0, Lanes::waited_for)
    }

    async fn quiesce(&self, socket: Sid) {
        self.flush_gathered().await;
        if let Some(lanes) = self.lanes.get() {
            lanes.quiesce(socket).await
        }
    }

    async fn after_handed(&self, then: Box<dyn FnOnce() + Send>) {
        self.flush_gathered().await;
        match self.lanes.get() {
            Some(lanes) => lanes.after_handed(then).await,
            None => then(),
        }
    }

    fn emit_to(&self, socket: Sid, event: &str, data: &RawValue, seq: Option<u64>) -> Sent {
        match self.io.get_socket(socket) {
            Some(socket) => send_to(&socket, (event, data, seq)),
            None => Sent::Gone,
        }
    }

    async fn local_membership(
        &self,
        within: Vec<String>,
        except: Vec<String>,
        rooms: Vec<String>,
        join: bool,
    ) {
        self.flush_gathered().await;
        self.carry(|noted| noted.needed_for(&within, &except, &rooms))
            .await;
        self.membership_now(within, except, rooms, join).await
    }

    async fn introduce(&self, source: &str, dest: &str) {
        match self.introductions() {
            Introductions::AtOnce => {
                self.flush_gathered().await;
                self.introduce_now(source, dest).await
            }
            Introductions::WhenCaughtUp | Introductions::WhenNeeded => {
                self.noted.note(source, dest)
            }
        }
    }

    async fn retire(&self, source: &str, dest: &str) {
        if self.noted.any() {
            let _turn = self.noted.carrying.lock().await;
            self.noted.cancel(source, dest);
        }
        let within = vec![source.to_owned()];
        self.local_membership(within, Vec::new(), vec![dest.to_owned()], false)
            .await
    }

    async fn carry_noted(&self, queue_empty: bool) {
        if !self.noted.any() {
            return;
        }
        // A chunk at a time: new work waits for no more than one. Once
        // caught up, the lanes have handed everything to the sockets'
        // queues, but their writers may still be writing it (for a while,
        // to 10,000 sockets): so only once the process has been idle for
        // `QUIET`, and on at most a quarter of a core.
        let over = self.noted.len() > MAX_NOTED;
        let due = match self.introductions() {
            Introductions::AtOnce => true,
            Introductions::WhenCaughtUp => {
                let caught_up = queue_empty && self.lanes.get().is_none_or(Lanes::caught_up);
                let now = std::time::Instant::now();
                let mut quiet = self.quiet.lock().unwrap_or_else(|e| e.into_inner());
                let paced = quiet.next.is_none_or(|next| now >= next);
                let quiet_for = quiet.quiet_for(caught_up, now, process_cpu());
                over || (quiet_for >= QUIET && paced)
            }
            Introductions::WhenNeeded => over,
        };
        if due {
            let started = std::time::Instant::now();
            loop {
                self.carry(|noted| noted.peek(Some(1))).await;
                if !self.noted.any() || started.elapsed() >= CHUNK_TIME {
                    break;
                }
            }
            let took = started.elapsed();
            let mut quiet = self.quiet.lock().unwrap_or_else(|e| e.into_inner());
            quiet.next = Some(std::time::Instant::now() + took * 3);
            quiet.own += took;
        }
    }

    fn awaits_catch_up(&self) -> bool {
        self.introductions() == Introductions::WhenCaughtUp && self.noted.any()
    }

    fn with_noted(&self, rooms: Vec<String>) -> Vec<String> {
        // A socket at its room cap is introduced to nothing more.
        if rooms.iter().any(|r| r == AT_ROOM_CAP) {
            return rooms;
        }
        self.noted.with_noted(rooms)
    }

    fn set_introductions(&self, when: Introductions) {
        let _ = self.introductions.set(when);
    }

    async fn rooms_of(&self, socket: &str) -> Result<Vec<String>, SocketsError> {
        self.carry_all().await;
        let local = self.alone();
        let found = self
            .cluster(self.ops(local).within(socket.to_owned()).fetch_sockets())
            .await?;
        let Some(s) = found.into_iter().next() else {
            return Ok(Vec::new());
        };
        Ok(s.rooms()
            .await
            .map_err(err)?
            .into_iter()
            .filter(|r| r != AT_ROOM_CAP)
            .map(|r| r.to_string())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{QUIET, Quiet, process_cpu};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_node_is_quiet_only_once_its_cpu_has_stayed_under_a_quarter_of_a_core() {
        let (t0, mut q) = (Instant::now(), Quiet::default());
        let cpu = Duration::from_secs(1);
        assert_eq!(q.quiet_for(true, t0, Some(cpu)), Duration::ZERO);
        // 2 ms of CPU in 4 ms: busy (the writers still write).
        let busy = q.quiet_for(true, t0 + 4 * MS, Some(cpu + 2 * MS));
        assert_eq!(busy, Duration::ZERO);
        // Then 0.5 ms in 4 ms, twice: quiet since the first of those looks.
        assert_eq!(
            q.quiet_for(true, t0 + 8 * MS, Some(cpu + 2 * MS + MS / 2)),
            Duration::ZERO
        );
        let quiet = q.quiet_for(true, t0 + 14 * MS, Some(cpu + 3 * MS));
        assert_eq!(quiet, 6 * MS);
        assert!(quiet >= QUIET);
        // Lanes not caught up: not quiet, whatever the CPU.
        assert_eq!(
            q.quiet_for(false, t0 + 18 * MS, Some(cpu + 3 * MS)),
            Duration::ZERO
        );
    }

    #[test]
    fn the_chunks_own_cpu_does_not_make_the_node_busy() {
        let (t0, mut q) = (Instant::now(), Quiet::default());
        let cpu = Duration::from_secs(1);
        q.quiet_for(true, t0, Some(cpu));
        // 3 ms of CPU in 4 ms, all of it a chunk carried out: still quiet.
        q.own += 3 * MS;
        q.quiet_for(true, t0 + 4 * MS, Some(cpu + 3 * MS));
        assert!(!q.busy);
        // A look sooner than a millisecond keeps the last answer.
        q.quiet_for(true, t0 + 4 * MS + MS / 2, Some(cpu + 4 * MS));
        assert!(!q.busy);
        q.quiet_for(true, t0 + 8 * MS, Some(cpu + 6 * MS));
        assert!(q.busy);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_process_cpu_clock_moves_with_work() {
        let before = process_cpu().expect("Linux has a process CPU clock");
        let mut x = 0u64;
        let spin = Instant::now();
        while spin.elapsed() < 20 * MS {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu().expect("the clock read once");
        assert!(after - before >= 10 * MS, "{:?}", after - before);
    }
}
