/*!
The sockets API (Sails' `sails.sockets`) over any socketioxide
adapter, and the [`Publisher`] that carries out the engine's pub-sub plan.

Every socket sits in a room named after its own id, so "a socket" and "a
room" are addressed the same way, and every operation works on sockets
connected to other processes too when the Redis adapter is in use.
*/

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::{BroadcastError, SocketError, SocketIo};
use tokio::sync::mpsc;
use topsail_core::pubsub::{Effect, Publisher};

use socketioxide::socket::Sid;

use crate::guarded::Guarding;
use crate::room_cap::{AT_ROOM_CAP, CHECK_EVERY, RoomCap};

/// A name for this node on the relay, unique enough among a cluster's
/// processes: its pid and start time.
fn node_name() -> Arc<str> {
    Arc::from(format!("{}-{}", std::process::id(), now_ms()))
}

/// The event name Sails uses when none is given.
pub const DEFAULT_EVENT: &str = "message";

/// A sockets operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketsError {
    /// The socket adapter failed (with the Redis adapter: Redis could not
    /// be reached).
    #[error(transparent)]
    Adapter(AdapterFailure),
    /// The other nodes did not answer within the cluster deadline.
    #[error("the other nodes did not answer in time")]
    ClusterTimeout,
    /// The cluster could not be reached: the message went to this node's
    /// sockets only.
    #[error("the cluster is unreachable; delivered to this node's sockets only")]
    DeliveredLocally,
    /// The data to send could not be serialized.
    #[error("the data to send could not be serialized")]
    Serialize(#[source] serde_json::Error),
}

/// An error of the socket adapter, with its causes.
///
/// socketioxide's adapter errors are `Send` but not `Sync`, and an error
/// that is not `Sync` cannot go into `Box<dyn Error + Send + Sync>` (or
/// `anyhow`) with `?`. So each cause's message is captured, in order, and
/// [`source`](std::error::Error::source) walks them as the original did.
#[derive(Debug)]
pub struct AdapterFailure {
    message: String,
    cause: Option<Box<AdapterFailure>>,
}

impl AdapterFailure {
    pub(crate) fn capture(e: &(dyn std::error::Error + 'static)) -> Self {
        AdapterFailure {
            message: e.to_string(),
            cause: e.source().map(|c| Box::new(AdapterFailure::capture(c))),
        }
    }
}

impl std::fmt::Display for AdapterFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AdapterFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

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
    /// The socket `socket` of this node enters (or leaves)
    /// [`AT_ROOM_CAP`](crate::room_cap::AT_ROOM_CAP).
    fn mark_at_room_cap(&self, socket: &str, at_cap: bool);
    /// Emits to this node's members of any of `to` (rooms, or socket ids)
    /// but `except` (socket ids), serializing once.
    async fn emit_local(&self, to: Vec<String>, except: Vec<String>, event: &str, data: &Value);
    /// This node's members of any of `within` (rooms, or socket ids) but
    /// `except` join (or leave) `rooms`.
    async fn local_membership(
        &self,
        within: Vec<String>,
        except: Vec<String>,
        rooms: Vec<String>,
        join: bool,
    );
}

/// Carries guarded effects to the other nodes of a cluster (see
/// [`crate::guarded`]).
#[async_trait]
pub(crate) trait Relay: Send + Sync + 'static {
    async fn send(&self, message: Vec<u8>) -> Result<(), SocketsError>;
}

/// How long a cluster operation may take before this node gives up on the
/// other nodes for now.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(1);
/// How long the node then works alone before it tries the cluster again.
const CLUSTER_BACKOFF: Duration = Duration::from_secs(2);

/// A socket.io server, with a circuit breaker for its cluster: when the
/// adapter cannot reach the other nodes (Redis is down), operations run on
/// this node's sockets only, without waiting, until the backoff has passed.
struct Io<A: Adapter> {
    io: SocketIo<A>,
    /// Until when (ms since the epoch) the cluster is considered down.
    alone_until: AtomicU64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Messages that did not reach a socket of this process because its
/// outgoing queue was full (all `Sockets` of a process share it).
static MISSED_FULL: AtomicU64 = AtomicU64::new(0);

/// A broadcast reached every socket but `missed`: sockets whose outgoing
/// queue was full (a reader that stopped reading) or that had just closed.
/// socketioxide reports them without their ids, after sending to every
/// other socket. A full queue is counted, and logged at the first miss and
/// at each doubling: a reader that stopped misses every message until the
/// heartbeat disconnects it.
fn missed_by_slow_readers(event: &str, missed: &[SocketError]) {
    let full = missed
        .iter()
        .filter(|e| matches!(e, SocketError::InternalChannelFull))
        .count() as u64;
    let before = MISSED_FULL.fetch_add(full, Ordering::Relaxed);
    let after = before + full;
    if full > 0 && (before == 0 || after.ilog2() > before.ilog2()) {
        tracing::warn!(
            event,
            missed_so_far = after,
            "a message missed sockets whose outgoing queue is full (they are not reading)"
        );
    }
    tracing::debug!(
        event,
        queue_full = full,
        closed = missed.len() as u64 - full,
        "a broadcast missed sockets that are not reading"
    );
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
                    missed_by_slow_readers(event, &missed);
                    return Ok(());
                }
                Ok(Err(e)) => failure = Some(self.give_up(err(e))),
                Err(_) => failure = Some(self.give_up(SocketsError::ClusterTimeout)),
            }
        }
        match build(true).emit(event, data).await {
            Ok(()) => {}
            Err(BroadcastError::Socket(missed)) => missed_by_slow_readers(event, &missed),
            Err(e) => return Err(err(e)),
        }
        match failure {
            Some(e) => Err(e),
            None => Err(SocketsError::DeliveredLocally),
        }
    }

    async fn leave_all(&self, room: &str) -> Result<(), SocketsError> {
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
        Some(rooms.into_iter().map(|r| r.to_string()).collect())
    }

    fn local_members(&self, room: &str, except: Option<&str>) -> Vec<Sid> {
        let mut op = self.io.local().to(room.to_owned());
        if let Some(e) = except {
            op = op.except(e.to_owned());
        }
        op.sockets().into_iter().map(|s| s.id).collect()
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

    async fn emit_local(&self, to: Vec<String>, except: Vec<String>, event: &str, data: &Value) {
        if to.is_empty() {
            return;
        }
        match self
            .io
            .local()
            .to(to)
            .except(except)
            .emit(event, data)
            .await
        {
            Ok(()) => {}
            Err(BroadcastError::Socket(missed)) => missed_by_slow_readers(event, &missed),
            Err(e) => tracing::error!(error = %e, event, "could not deliver a guarded message"),
        }
    }

    async fn local_membership(
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

    async fn rooms_of(&self, socket: &str) -> Result<Vec<String>, SocketsError> {
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

/// The sockets API of an app: rooms and broadcasts, by socket id or room
/// name, across every process of a cluster.
#[derive(Clone)]
pub struct Sockets {
    pub(crate) backend: Arc<dyn Backend>,
    queue: usize,
    stalled: Arc<AtomicU64>,
    /// The rooms of this node's sockets, for their cap.
    room_cap: Arc<RoomCap>,
    /// The read rules and each local socket's principal.
    pub(crate) guarding: Guarding,
    /// This node's name on the relay.
    pub(crate) node: Arc<str>,
    /// The other nodes, for guarded effects (a cluster only).
    pub(crate) relay: Option<Arc<dyn Relay>>,
}

/// The default of [`Sockets::max_rooms_per_socket`].
pub const DEFAULT_MAX_ROOMS_PER_SOCKET: usize = 10_000;
/// The default of [`Sockets::publisher_queue`].
pub const DEFAULT_PUBLISHER_QUEUE: usize = 4_096;

impl std::fmt::Debug for Sockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sockets").finish_non_exhaustive()
    }
}

fn to_value<T: Serialize + ?Sized>(data: &T) -> Result<Value, SocketsError> {
    serde_json::to_value(data).map_err(SocketsError::Serialize)
}

impl Sockets {
    /// The sockets API of `io`.
    pub fn new<A: Adapter>(io: SocketIo<A>) -> Self {
        Sockets {
            backend: Arc::new(Io {
                io,
                alone_until: AtomicU64::new(0),
            }),
            queue: DEFAULT_PUBLISHER_QUEUE,
            stalled: Arc::new(AtomicU64::new(0)),
            room_cap: Arc::new(RoomCap::new(DEFAULT_MAX_ROOMS_PER_SOCKET)),
            guarding: Guarding::default(),
            node: node_name(),
            relay: None,
        }
    }

    /// The same sockets, relaying guarded effects through `relay`.
    pub(crate) fn with_relay(mut self, relay: Arc<dyn Relay>) -> Self {
        self.relay = Some(relay);
        self
    }

    /// Holds every message to the app's read `rules` (see
    /// `topsail_core::access`), per recipient; `models` are the app's
    /// models. Set once, when the app is built; false if already set.
    pub fn guard_with(
        &self,
        rules: topsail_core::Rules,
        models: impl IntoIterator<Item = &'static topsail_core::ModelDef>,
    ) -> bool {
        self.guarding.set(rules, models)
    }

    /// The slot holding the principal of socket `id` (of this node), which
    /// the delivery of guarded messages reads.
    pub(crate) fn principal_slot(&self, id: Sid) -> topsail_core::PrincipalSlot {
        self.guarding.slot(id)
    }

    /// The ids of this node's sockets whose principal `matches`.
    pub fn sockets_where(
        &self,
        matches: &dyn Fn(&topsail_core::Principal) -> bool,
    ) -> Vec<Arc<str>> {
        self.guarding.sockets_where(matches)
    }

    /// Runs the identity of this node's sockets whose principal `matches`
    /// again, through the app's identity layer, as their next request
    /// would (after a sign-out or a role change made over another
    /// connection); returns how many. A socket whose principal changed
    /// leaves the rooms of every model with a read rule.
    pub async fn reidentify(
        &self,
        matches: &(dyn Fn(&topsail_core::Principal) -> bool + Sync),
    ) -> usize {
        let again = self.guarding.reidentifiers(matches);
        for run in &again {
            run().await;
        }
        again.len()
    }

    pub(crate) fn on_reidentify(&self, socket: Sid, again: crate::guarded::Reidentify) {
        self.guarding.on_reidentify(socket, again);
    }

    /// How many messages did not reach a socket of this process because
    /// its outgoing queue ([`RealtimeConfig::send_queue`](crate::RealtimeConfig::send_queue))
    /// was full: counted per socket missed.
    pub fn missed_by_full_queues(&self) -> u64 {
        MISSED_FULL.load(Ordering::Relaxed)
    }

    /// How many sockets of this node were disconnected because they stopped
    /// reading: their outgoing queue was full at a heartbeat, or they did
    /// not answer a ping in time.
    pub fn stalled_disconnects(&self) -> u64 {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Counts one more stalled disconnect; returns the count.
    pub(crate) fn note_stalled(&self) -> u64 {
        self.stalled.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The most rooms a socket joins through pub-sub: its reads
    /// (subscriptions to records, watched models) and `_introduce` (a
    /// socket watching a model is subscribed to each record created
    /// meanwhile), its own id room included. Past it, a read still answers
    /// but subscribes the socket to no more records, and new records are
    /// no longer introduced to it (it still hears `created`); this is
    /// logged. Rooms joined through [`Sockets::join`] by app code count
    /// but are never refused.
    ///
    /// Rooms are counted exactly only when an estimate says a socket may
    /// be near the cap (see `room_cap.rs`); what `_introduce` adds is
    /// checked every two seconds, so a watcher may pass the cap by what
    /// its models create in that time.
    pub fn max_rooms_per_socket(mut self, n: usize) -> Self {
        self.room_cap = Arc::new(RoomCap::new(n));
        self
    }

    /// How many batches of effects (one per action) may wait for the
    /// publisher task of [`Sockets::publisher`]. When it is full, the next
    /// action waits for room after its commit, before it answers: back
    /// pressure on writers, never a dropped message.
    pub fn publisher_queue(mut self, batches: usize) -> Self {
        self.queue = batches.max(1);
        self
    }

    /// Counts, every [`CHECK_EVERY`], the sockets that may have reached
    /// their room cap (see [`crate::room_cap`]), for as long as these
    /// sockets exist.
    fn check_room_caps_periodically(&self) {
        let (backend, cap) = (
            Arc::downgrade(&self.backend),
            Arc::downgrade(&self.room_cap),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (Some(backend), Some(cap)) = (backend.upgrade(), cap.upgrade()) else {
                    return;
                };
                cap.check(&*backend);
            }
        });
    }

    /// Forgets what was counted of a socket that disconnected.
    pub(crate) fn forget(&self, socket: &str) {
        self.room_cap.forget(socket);
        if let Ok(sid) = socket.parse() {
            self.guarding.forget(sid);
        }
    }

    /// The socket `socket` (an id, local or on another node) joins `room`.
    pub async fn join(&self, socket: &str, room: impl Into<String>) -> Result<(), SocketsError> {
        self.backend.join(socket, vec![room.into()]).await
    }

    /// The socket `socket` leaves `room`.
    pub async fn leave(&self, socket: &str, room: impl Into<String>) -> Result<(), SocketsError> {
        self.backend.leave(socket, vec![room.into()]).await
    }

    /// Emits `event` (default `message`) with `data` to every socket in any
    /// of `rooms`, once each, leaving out the socket `omit`.
    pub async fn broadcast<T: Serialize + ?Sized>(
        &self,
        rooms: &[&str],
        event: Option<&str>,
        data: &T,
        omit: Option<&str>,
    ) -> Result<(), SocketsError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let rooms = rooms.iter().map(|r| (*r).to_owned()).collect();
        self.backend
            .emit(
                rooms,
                omit,
                event.unwrap_or(DEFAULT_EVENT),
                &to_value(data)?,
            )
            .await
    }

    /// Emits `event` (default `message`) to every connected socket but
    /// `omit`.
    pub async fn blast<T: Serialize + ?Sized>(
        &self,
        event: Option<&str>,
        data: &T,
        omit: Option<&str>,
    ) -> Result<(), SocketsError> {
        self.backend
            .emit(
                Vec::new(),
                omit,
                event.unwrap_or(DEFAULT_EVENT),
                &to_value(data)?,
            )
            .await
    }

    /// Every member of `room` leaves all its rooms (`room` included, its own
    /// id room not).
    pub async fn leave_all(&self, room: &str) -> Result<(), SocketsError> {
        self.backend.leave_all(room).await
    }

    /// Every member of `source` joins each of `dests`.
    pub async fn add_room_members_to_rooms(
        &self,
        source: &str,
        dests: &[&str],
    ) -> Result<(), SocketsError> {
        self.backend
            .join(source, dests.iter().map(|d| (*d).to_owned()).collect())
            .await
    }

    /// Every member of `source` leaves each of `dests`.
    pub async fn remove_room_members_from_rooms(
        &self,
        source: &str,
        dests: &[&str],
    ) -> Result<(), SocketsError> {
        self.backend
            .leave(source, dests.iter().map(|d| (*d).to_owned()).collect())
            .await
    }

    /// The rooms a socket is in (its own id room included), wherever it is
    /// connected.
    pub async fn rooms_of(&self, socket: &str) -> Result<Vec<String>, SocketsError> {
        self.backend.rooms_of(socket).await
    }

    /// Whether the socket `socket` is connected to this node.
    pub(crate) fn is_local(&self, socket: &str) -> bool {
        self.backend.is_local(socket)
    }

    /// Carries out `effect` on this node's sockets (the relay carries it
    /// to the other nodes, see [`crate::relay`]).
    async fn apply(&self, effect: Effect) {
        match effect {
            Effect::Join { socket, rooms } => self.change_rooms(&socket, rooms, true).await,
            Effect::Leave { socket, rooms } => self.change_rooms(&socket, rooms, false).await,
            Effect::AddMembers {
                source,
                dest,
                guard,
            } => {
                self.change_members(&source, &dest, true, guard.as_ref())
                    .await
            }
            Effect::RemoveMembers { source, dest } => {
                self.change_members(&source, &dest, false, None).await
            }
            Effect::Forget { socket } => self.leave_guarded_rooms(&socket).await,
            Effect::Broadcast {
                room,
                event,
                payload,
                omit,
                guard,
            } => {
                self.deliver(&room, event, &payload, omit.as_deref(), guard.as_ref())
                    .await
            }
        }
    }

    /// The socket `socket`, if it is on this node, joins (within its room
    /// cap) or leaves `rooms`.
    pub(crate) async fn change_rooms(&self, socket: &str, rooms: Vec<String>, join: bool) {
        if !self.is_local(socket) {
            return;
        }
        let rooms = if join {
            self.room_cap.admit(&*self.backend, socket, rooms)
        } else {
            self.room_cap.left(socket, &rooms);
            rooms
        };
        self.backend
            .local_membership(vec![socket.to_owned()], Vec::new(), rooms, join)
            .await;
    }

    /// This node's members of `source` join `dest` (`_introduce`: those
    /// the guard lets read its record, and not those at their room cap) or
    /// leave it (`_retire`).
    pub(crate) async fn change_members(
        &self,
        source: &str,
        dest: &str,
        join: bool,
        guard: Option<&topsail_core::pubsub::Guard>,
    ) {
        if join {
            self.room_cap.introduced(source);
        }
        match guard {
            Some(guard) if join => self.introduce_guarded(source, dest, guard).await,
            _ => {
                let except = if join {
                    vec![AT_ROOM_CAP.to_owned()]
                } else {
                    Vec::new()
                };
                let (within, dest) = (vec![source.to_owned()], vec![dest.to_owned()]);
                self.backend
                    .local_membership(within, except, dest, join)
                    .await
            }
        }
    }

    /// Delivers a message to this node's members of `room` but `omit`:
    /// per recipient under its guard, or as one room broadcast.
    pub(crate) async fn deliver(
        &self,
        room: &str,
        event: &str,
        payload: &Value,
        omit: Option<&str>,
        guard: Option<&topsail_core::pubsub::Guard>,
    ) {
        match guard {
            Some(guard) => {
                if guard.join.is_some() {
                    // A guarded `created` introduces its recipients too.
                    self.room_cap.introduced(room);
                }
                self.deliver_guarded(room, omit, event, payload, guard)
                    .await
            }
            None => {
                let except = omit.map(str::to_owned).into_iter().collect();
                self.backend
                    .emit_local(vec![room.to_owned()], except, event, payload)
                    .await
            }
        }
    }

    /// A publisher that carries out effects through these sockets, in the
    /// order they were published, without holding up the request that
    /// caused them.
    ///
    /// Also checks every two seconds which of this node's sockets reached
    /// their room cap (see [`Sockets::max_rooms_per_socket`]).
    pub fn publisher(&self) -> SocketPublisher {
        self.check_room_caps_periodically();
        let (tx, mut rx) = mpsc::channel::<Work>(self.queue);
        let pending = Arc::new(AtomicUsize::new(0));
        let relay_out = self
            .relay
            .clone()
            .map(|relay| crate::relay::spawn(relay, self.queue, pending.clone()));
        let sockets = self.clone();
        let done = pending.clone();
        tokio::spawn(async move {
            while let Some(work) = rx.recv().await {
                match work {
                    Work::Local(batch) => {
                        if let Some(out) = &relay_out {
                            out.offer(&sockets, &batch);
                        }
                        for effect in batch {
                            sockets.apply(effect).await;
                        }
                    }
                    Work::Relayed(bytes) => sockets.receive_relayed(&bytes).await,
                }
                done.fetch_sub(1, Ordering::AcqRel);
            }
        });
        SocketPublisher { tx, pending }
    }
}

/// What the publisher task carries out, in order: this node's effects, and
/// the guarded effects other nodes relay (on the same task, so every
/// change of a guarded room's members is made between two deliveries).
#[derive(Debug)]
enum Work {
    Local(Vec<Effect>),
    Relayed(Vec<u8>),
}

/// Delivers the engine's effects over socket.io (see [`Sockets::publisher`]).
#[derive(Debug, Clone)]
pub struct SocketPublisher {
    tx: mpsc::Sender<Work>,
    /// Batches published and not yet carried out (queued, or in progress).
    pending: Arc<AtomicUsize>,
}

impl SocketPublisher {
    /// How many batches of effects (one per action) are published and not
    /// yet carried out: waiting in the queue, or being delivered.
    pub fn queue_depth(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Waits until every batch published so far has been carried out;
    /// false when `deadline` passed first. For a graceful shutdown.
    pub async fn flush(&self, deadline: Duration) -> bool {
        let drained = async {
            while self.queue_depth() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(deadline, drained).await.is_ok()
    }

    /// Queues a guarded effect another node relayed.
    pub(crate) async fn relayed(&self, bytes: Vec<u8>) {
        self.send(Work::Relayed(bytes)).await;
    }

    async fn send(&self, work: Work) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(work).await.is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            tracing::error!("the pub-sub task has stopped; effects dropped");
        }
    }
}

#[async_trait]
impl Publisher for SocketPublisher {
    async fn publish(&self, effects: Vec<Effect>) {
        self.send(Work::Local(effects)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    /// A backend whose deliveries wait for a permit: sockets that are slow
    /// to take them.
    struct Gated(Arc<Semaphore>);

    #[async_trait]
    impl Backend for Gated {
        async fn join(&self, _: &str, _: Vec<String>) -> Result<(), SocketsError> {
            Ok(())
        }
        async fn leave(&self, _: &str, _: Vec<String>) -> Result<(), SocketsError> {
            Ok(())
        }
        async fn emit(
            &self,
            _: Vec<String>,
            _: Option<&str>,
            _: &str,
            _: &Value,
        ) -> Result<(), SocketsError> {
            Ok(())
        }
        async fn leave_all(&self, _: &str) -> Result<(), SocketsError> {
            Ok(())
        }
        async fn rooms_of(&self, _: &str) -> Result<Vec<String>, SocketsError> {
            Ok(Vec::new())
        }
        fn local_rooms(&self, _: &str) -> Option<Vec<String>> {
            None
        }
        fn local_members(&self, _: &str, _: Option<&str>) -> Vec<Sid> {
            Vec::new()
        }
        fn is_local(&self, _: &str) -> bool {
            true
        }
        fn mark_at_room_cap(&self, _: &str, _: bool) {}
        async fn emit_local(&self, _: Vec<String>, _: Vec<String>, _: &str, _: &Value) {
            let permit = self.0.acquire().await;
            drop(permit);
        }
        async fn local_membership(&self, _: Vec<String>, _: Vec<String>, _: Vec<String>, _: bool) {}
    }

    fn message() -> Vec<Effect> {
        vec![Effect::Broadcast {
            room: "sails_model_create_pet".into(),
            event: "pet",
            payload: serde_json::json!({"verb": "created"}),
            omit: None,
            guard: None,
        }]
    }

    /// The publisher queue holds `publisher_queue` batches: past it a
    /// publish waits (back pressure on the writer, nothing dropped), the
    /// depth says how many wait, and `flush` returns once all are out.
    #[tokio::test]
    async fn a_full_publisher_queue_makes_the_writer_wait_and_drops_nothing() {
        let gate = Arc::new(Semaphore::new(0));
        let sockets = Sockets {
            backend: Arc::new(Gated(gate.clone())),
            queue: DEFAULT_PUBLISHER_QUEUE,
            stalled: Arc::default(),
            room_cap: Arc::new(RoomCap::new(DEFAULT_MAX_ROOMS_PER_SOCKET)),
            guarding: Guarding::default(),
            node: node_name(),
            relay: None,
        }
        .publisher_queue(1);
        let publisher = sockets.publisher();
        // The first batch is taken by the task (and waits in emit), the
        // second fills the queue of one.
        publisher.publish(message()).await;
        publisher.publish(message()).await;
        let third = {
            let p = publisher.clone();
            tokio::spawn(async move { p.publish(message()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "the third publish waits for room");
        assert_eq!(publisher.queue_depth(), 3);
        assert!(!publisher.flush(Duration::from_millis(20)).await);
        gate.add_permits(3);
        third.await.unwrap();
        assert!(
            publisher.flush(Duration::from_secs(5)).await,
            "all delivered"
        );
        assert_eq!(publisher.queue_depth(), 0);
    }
}
