/*!
The sockets API (Sails' `sails.sockets`) over any socketioxide
adapter, and the [`Publisher`] that carries out the engine's pub-sub plan.

Every socket sits in a room named after its own id, so "a socket" and "a
room" are addressed the same way, and every operation works on sockets
connected to other processes too when the Redis adapter is in use.
*/

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::socket::Sid;
use tokio::sync::mpsc;
use topsail_core::pubsub::{Effect, Publisher};

use crate::backend::{Backend, Io, MISSED_FULL, Relay, now_ms};
pub use crate::error::{AdapterFailure, SocketsError};
use crate::guarded::Guarding;
use crate::lanes::default_lanes;
use crate::replay::{EVERYONE, Log, ReplayConfig, What};
use crate::resume::{Finish, Parking};
use crate::room_cap::{CHECK_EVERY, RoomCap};

/// A name for this node on the relay, unique enough among a cluster's
/// processes: its pid, start time and a random number.
fn node_name() -> Arc<str> {
    // Random too: in containers every node may be pid 1, and two started in
    // the same millisecond would take each other's messages for their own.
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Arc::from(format!(
        "{}-{}-{:08x}",
        std::process::id(),
        now_ms(),
        random as u32
    ))
}

/// A message's payload as a value (for the read rules to redact) and as
/// the JSON text every recipient who sees it whole is sent.
#[derive(Clone, Copy)]
pub(crate) struct Shown<'a> {
    pub(crate) value: &'a Value,
    pub(crate) raw: &'a serde_json::value::RawValue,
}

/// The event name Sails uses when none is given.
pub const DEFAULT_EVENT: &str = "message";

/// The sockets API of an app: rooms and broadcasts, by socket id or room
/// name, across every process of a cluster.
#[derive(Clone)]
pub struct Sockets {
    pub(crate) backend: Arc<dyn Backend>,
    queue: usize,
    /// Delivery lanes the publisher starts (see [`Sockets::lanes`]).
    lanes: usize,
    /// How the lanes wait for slow readers (see [`Sockets::slow_readers`]).
    slow_readers: crate::SlowReaders,
    /// When `_introduce` is carried out (see [`Sockets::introductions`]).
    introductions: crate::Introductions,
    stalled: Arc<AtomicU64>,
    /// The rooms of this node's sockets, for their cap.
    pub(crate) room_cap: Arc<RoomCap>,
    /// The read rules and each local socket's principal.
    pub(crate) guarding: Guarding,
    /// This node's name on the relay.
    pub(crate) node: Arc<str>,
    /// The way to the other nodes (a cluster only; see [`crate::relay`]).
    relay: Option<crate::relay::RelayOut>,
    /// The last batch heard from each other node.
    pub(crate) heard: Arc<std::sync::Mutex<crate::relay::Heard>>,
    /// Batches published and not yet carried out, here and by the relay.
    pending: Arc<AtomicUsize>,
    /// Messages delivered, for sampling their recipients.
    sampled: Arc<AtomicU64>,
    /// What was delivered lately, for sockets that come back (see
    /// [`crate::replay`]).
    pub(crate) log: Arc<Log>,
    /// Where a single process journals its log for the next one (see
    /// [`crate::resume::journal`]).
    pub(crate) journal: Option<Arc<crate::resume::journal::Journal>>,
    /// The sockets that dropped lately (see [`crate::resume`]).
    pub(crate) parking: Arc<Parking>,
    /// The publisher task's queue, once [`Sockets::publisher`] started it.
    work: Arc<OnceLock<mpsc::Sender<Work>>>,
    /// The other nodes' parked sockets (a cluster only).
    pub(crate) shared_parking: Option<Arc<dyn crate::resume::SharedParking>>,
    /// The sockets that came back before their old one was parked.
    pub(crate) late: Arc<crate::resume::Late>,
    /// Turns for resumes (see [`crate::resume::RESUMES_AT_ONCE`]).
    pub(crate) resume_turns: Arc<tokio::sync::Semaphore>,
    /// This node's sockets that can be taken back, by id.
    pub(crate) resumables:
        Arc<std::sync::RwLock<std::collections::HashMap<Sid, crate::resume::Resumable>>>,
}

/// One message in this many has its recipients counted
/// (`topsail_message_recipients`).
pub const RECIPIENTS_SAMPLED_EVERY: u64 = 16;

/// Counts a model message this node published (`topsail_messages_total`,
/// by model and verb).
fn count_message(effect: &Effect) {
    if let Effect::Broadcast { event, payload, .. } = effect {
        let verb = payload.get("verb").and_then(Value::as_str).unwrap_or("");
        metrics::counter!(
            "topsail_messages_total",
            "model" => *event,
            "verb" => verb.to_owned(),
        )
        .increment(1);
    }
}

/// How far before a socket's last known point a replay looks in a
/// cluster (see `Sockets::replay_margin`).
pub const CLUSTER_REPLAY_MARGIN: Duration = Duration::from_secs(2);

/// The default of [`Sockets::max_rooms_per_socket`].
pub const DEFAULT_MAX_ROOMS_PER_SOCKET: usize = 10_000;
/// The default of [`Sockets::publisher_queue`].
pub const DEFAULT_PUBLISHER_QUEUE: usize = 4_096;
/// How soon the publisher task looks again whether the lanes caught up,
/// while introductions wait for it (see `crate::introductions`).
const LOOK_AGAIN: Duration = Duration::from_millis(1);

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
            backend: Arc::new(Io::new(io)),
            queue: DEFAULT_PUBLISHER_QUEUE,
            lanes: default_lanes(),
            slow_readers: crate::SlowReaders::default(),
            introductions: crate::Introductions::default(),
            stalled: Arc::new(AtomicU64::new(0)),
            room_cap: Arc::new(RoomCap::new(DEFAULT_MAX_ROOMS_PER_SOCKET)),
            guarding: Guarding::default(),
            node: node_name(),
            relay: None,
            heard: Arc::default(),
            pending: Arc::default(),
            sampled: Arc::default(),
            log: Arc::new(Log::new(ReplayConfig::default())),
            journal: None,
            parking: Arc::new(Parking::new(&ReplayConfig::default())),
            work: Arc::default(),
            shared_parking: None,
            resumables: Arc::default(),
            late: Arc::new(crate::resume::Late::new(Duration::from_secs(90))),
            resume_turns: Arc::new(tokio::sync::Semaphore::new(crate::resume::RESUMES_AT_ONCE)),
        }
    }

    /// The replay log and the resume of dropped sockets, with these
    /// settings (see [`ReplayConfig`]).
    pub fn replay(mut self, config: ReplayConfig) -> Self {
        self.parking = Arc::new(Parking::new(&config));
        self.log = Arc::new(Log::new(config));
        self
    }

    /// How long a socket that came back may still be given what its old
    /// socket had, once that one is seen to drop: as long as a dead
    /// connection can go unnoticed (a ping interval and timeout).
    pub(crate) fn late_window(mut self, window: Duration) -> Self {
        self.late = Arc::new(crate::resume::Late::new(window));
        self
    }

    /// Whether messages carry sequence numbers and sockets that come back
    /// are given what they missed.
    pub fn replays(&self) -> bool {
        self.log.config().enabled
    }

    /// How many messages the replay log holds, and how many dropped
    /// sockets wait to be taken back.
    pub fn replay_census(&self) -> (usize, usize) {
        (self.log.len(), self.parking.len())
    }

    /// How far before a point a replay looks, for messages numbered by
    /// another node that came in late: none on one node; in a cluster,
    /// [`CLUSTER_REPLAY_MARGIN`] (the relay's delay and the nodes' clock
    /// skew). What is sent twice is sent once: a resume remembers.
    pub(crate) fn replay_margin(&self) -> u64 {
        if self.relay.is_some() {
            u64::try_from(CLUSTER_REPLAY_MARGIN.as_micros()).unwrap_or(u64::MAX)
        } else {
            0
        }
    }

    /// The same sockets, one node of a cluster: the effects they carry out
    /// reach the other nodes through `relay` (see [`crate::relay`]). Starts
    /// the relay task.
    pub(crate) fn with_relay(
        mut self,
        relay: Arc<dyn Relay>,
        parking: Arc<dyn crate::resume::SharedParking>,
    ) -> Self {
        let out = crate::relay::spawn(relay, self.queue, self.pending.clone());
        self.relay = Some(out);
        self.shared_parking = Some(parking);
        self
    }

    /// A single process that keeps its sockets in `path` across restarts
    /// (see [`ReplayConfig::restart_file`]).
    pub(crate) fn keep_across_restarts(mut self, path: &std::path::Path) -> Self {
        self.shared_parking = Some(Arc::new(crate::resume::FileParking::open(path)));
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

    /// How many sockets of this node messages wait for now, beyond
    /// their outgoing queue: readers slower than what is published to them
    /// (see [`RealtimeConfig::slow_readers`](crate::RealtimeConfig::slow_readers)).
    pub fn slow_readers_waited_for(&self) -> usize {
        self.backend.slow_readers()
    }

    /// How many batches of effects (one per action) the other nodes of a
    /// cluster missed because the way to them was down (Redis had just
    /// failed: nothing is sent for 2 s after) or full (Redis slow for a
    /// while). This node's sockets had them.
    pub fn relay_dropped(&self) -> u64 {
        self.relay
            .as_ref()
            .map_or(0, crate::relay::RelayOut::dropped)
    }

    /// How many sockets of this node were disconnected because they stopped
    /// reading: a message found their outgoing queue full (cut at once, when
    /// the app serves with [`crate::Connection`]), their queue was full at a
    /// heartbeat, or they did not answer a ping in time.
    pub fn stalled_disconnects(&self) -> u64 {
        self.stalled.load(Ordering::Relaxed)
    }

    /// How many sockets this node holds, and their rooms (it walks every
    /// socket's rooms: for a metrics scrape, not for every message).
    pub fn census(&self) -> crate::backend::Census {
        self.backend.census()
    }

    /// Whether the other nodes of the cluster are reachable: false while
    /// this node works alone after Redis failed it (always true without a
    /// cluster).
    pub fn cluster_up(&self) -> bool {
        self.backend.cluster_up()
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

    /// Spreads the handing out of messages over `n` delivery lanes (see
    /// `crate::lanes`; by default one per core, [`default_lanes`]); 0
    /// hands every message out on the publisher task.
    pub fn lanes(mut self, n: usize) -> Self {
        self.lanes = n;
        self
    }

    /// How long, and for how many messages, the lanes wait for a socket
    /// whose outgoing queue is full before they cut it (see
    /// [`RealtimeConfig::slow_readers`](crate::RealtimeConfig::slow_readers)).
    pub fn slow_readers(mut self, slow: crate::SlowReaders) -> Self {
        self.slow_readers = slow;
        self
    }

    /// When the introductions of new records to their model's watchers are
    /// carried out (see
    /// [`RealtimeConfig::introductions`](crate::RealtimeConfig::introductions)).
    pub fn introductions(mut self, when: crate::Introductions) -> Self {
        self.introductions = when;
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

    /// Whether the socket `socket`, which disconnected, had been cut because
    /// its outgoing queue was full.
    pub(crate) fn was_cut(&self, socket: Sid) -> bool {
        self.backend.was_cut(socket)
    }

    /// The number of the oldest message the socket `socket`, cut because
    /// it stopped reading, was known to miss.
    pub(crate) fn cut_missed_from(&self, socket: Sid) -> Option<u64> {
        self.backend.cut_missed_from(socket)
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
    ///
    /// Like the model messages, it is numbered, kept in the replay log and
    /// carried out on the publisher task: it returns once this node's
    /// sockets have it, after every message published before it. The other
    /// nodes of a cluster get it through the relay (they miss it while
    /// Redis is down: [`Sockets::relay_dropped`]).
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
        self.send_app(AppMessage {
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
            event: event.unwrap_or(DEFAULT_EVENT).to_owned(),
            payload: to_value(data)?,
            omit: omit.map(str::to_owned),
        })
        .await
    }

    /// Emits `event` (default `message`) to every connected socket but
    /// `omit` (numbered and kept as [`Sockets::broadcast`] is).
    pub async fn blast<T: Serialize + ?Sized>(
        &self,
        event: Option<&str>,
        data: &T,
        omit: Option<&str>,
    ) -> Result<(), SocketsError> {
        self.send_app(AppMessage {
            rooms: Vec::new(),
            event: event.unwrap_or(DEFAULT_EVENT).to_owned(),
            payload: to_value(data)?,
            omit: omit.map(str::to_owned),
        })
        .await
    }

    /// Hands an app's message to the publisher task and waits until this
    /// node's sockets have it; without a task (or a replay log), emits it
    /// through the adapter, cluster-wide.
    async fn send_app(&self, message: AppMessage) -> Result<(), SocketsError> {
        match self.work.get() {
            Some(tx) if self.replays() => {
                let (handed, done) = tokio::sync::oneshot::channel();
                self.pending.fetch_add(1, Ordering::AcqRel);
                if tx.send(Work::App(message, handed)).await.is_err() {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    tracing::error!("the pub-sub task has stopped; a message was dropped");
                }
                let _ = done.await;
                Ok(())
            }
            _ => {
                let omit = message.omit.as_deref();
                self.backend
                    .emit(message.rooms, omit, &message.event, &message.payload)
                    .await
            }
        }
    }

    /// Carries out an app's message on this node's sockets (on the
    /// publisher task): numbered, and kept in the log of each of its rooms
    /// (a blast in that of [`EVERYONE`]), and journaled first (see
    /// [`crate::resume::journal`]).
    pub(crate) async fn app_message(&self, message: AppMessage, seq: u64) {
        let AppMessage {
            rooms,
            event,
            payload,
            omit,
        } = message;
        let except: Vec<String> = omit.iter().cloned().collect();
        // Written once, for the sockets and for the log.
        let payload = crate::replay::to_raw(&payload);
        if let Some(journal) = &self.journal {
            let mut named: Vec<&str> = rooms.iter().map(String::as_str).collect();
            if named.is_empty() {
                named.push(EVERYONE);
            }
            journal.message(seq, &named, &event, &payload, omit.as_deref(), None);
        }
        if rooms.is_empty() {
            self.backend
                .emit_all_local(except, &event, &payload, Some(seq))
                .await;
        } else {
            self.backend
                .emit_local(rooms.clone(), except, &event, &payload, Some(seq))
                .await;
        }
        if !self.replays() {
            return;
        }
        let event: Arc<str> = Arc::from(event);
        let omit: Option<Arc<str>> = omit.map(Arc::from);
        let rooms = if rooms.is_empty() {
            vec![Arc::from(EVERYONE)]
        } else {
            rooms.into_iter().map(Arc::from).collect()
        };
        let what = What::Message {
            event,
            payload,
            omit,
            guard: None,
        };
        self.log.append(seq, rooms, what);
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

    /// The sequence number of `effect`, when it is a message or a change
    /// of a room's members (what the replay log keeps).
    fn number(&self, effect: &Effect) -> Option<u64> {
        let logged = logged_room(effect).is_some();
        (logged && self.replays()).then(|| self.log.next_seq())
    }

    /// The number of something another node numbered (`seq`), or this
    /// node's next one when it did not.
    pub(crate) fn renumber(&self, seq: Option<u64>) -> Option<u64> {
        if !self.replays() {
            return None;
        }
        match seq {
            Some(seq) => {
                self.log.observe(seq);
                Some(seq)
            }
            None => Some(self.log.next_seq()),
        }
    }

    /// Carries out `effect`, numbered `seq`, on this node's sockets (the
    /// relay carries it to the other nodes, see [`crate::relay`]).
    async fn apply(&self, effect: Effect, seq: Option<u64>) {
        match effect {
            Effect::Join {
                socket,
                rooms,
                read_at,
            } => match read_at {
                Some(at) if self.replays() => self.join_after_read(&socket, rooms, at).await,
                _ => self.change_rooms(&socket, rooms, true).await,
            },
            Effect::Leave { socket, rooms } => self.change_rooms(&socket, rooms, false).await,
            Effect::AddMembers {
                source,
                dest,
                guard,
            } => self.members(source, dest, true, guard, seq).await,
            Effect::RemoveMembers { source, dest } => {
                self.members(source, dest, false, None, seq).await
            }
            Effect::Forget { socket } => self.leave_guarded_rooms(&socket).await,
            Effect::Broadcast {
                room,
                event,
                payload,
                omit,
                guard,
            } => self.message(room, event, payload, omit, guard, seq).await,
        }
    }

    /// `_introduce` (`join`) or `_retire` on this node's sockets, kept in
    /// the replay log (a socket that comes back joins what its rooms'
    /// members joined meanwhile), and journaled before (see
    /// [`crate::resume::journal`]).
    pub(crate) async fn members(
        &self,
        source: String,
        dest: String,
        join: bool,
        guard: Option<topsail_core::pubsub::Guard>,
        seq: Option<u64>,
    ) {
        if let (Some(journal), Some(seq)) = (&self.journal, seq) {
            journal.members(seq, &source, &dest, join, guard.as_ref());
        }
        self.change_members(&source, &dest, join, guard.as_ref())
            .await;
        if let Some(seq) = seq {
            let what = What::Members {
                dest: Arc::from(dest),
                join,
                guard: guard.map(Arc::new),
            };
            self.log.append(seq, vec![Arc::from(source)], what);
        }
    }

    /// Delivers a message numbered `seq` to this node's members of `room`,
    /// and keeps it in the replay log (journaled before anyone is sent it,
    /// see [`crate::resume::journal`]).
    pub(crate) async fn message(
        &self,
        room: String,
        event: &str,
        payload: Value,
        omit: Option<Arc<str>>,
        guard: Option<topsail_core::pubsub::Guard>,
        seq: Option<u64>,
    ) {
        // Written once, for the sockets and for the log.
        let raw = crate::replay::to_raw(&payload);
        if let (Some(journal), Some(seq)) = (&self.journal, seq) {
            journal.message(seq, &[&room], event, &raw, omit.as_deref(), guard.as_ref());
        }
        let shown = Shown {
            value: &payload,
            raw: &raw,
        };
        self.deliver(&room, event, shown, omit.as_deref(), guard.as_ref(), seq)
            .await;
        if let Some(seq) = seq {
            let what = What::Message {
                event: Arc::from(event),
                payload: raw,
                omit,
                guard: guard.map(Arc::new),
            };
            self.log.append(seq, vec![Arc::from(room)], what);
        }
    }

    /// Hands the end of a resume to the publisher task (see
    /// [`crate::resume`]), or finishes it here when there is none.
    pub(crate) async fn finish_resume(&self, finish: Box<Finish>) {
        match self.work.get() {
            Some(tx) => {
                self.pending.fetch_add(1, Ordering::AcqRel);
                if let Err(mpsc::error::SendError(Work::Finish(finish))) =
                    tx.send(Work::Finish(finish)).await
                {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    self.finish(*finish).await;
                }
            }
            None => self.finish(*finish).await,
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
            _ if join => self.backend.introduce(source, dest).await,
            _ => self.backend.retire(source, dest).await,
        }
    }

    /// Delivers a message to this node's members of `room` but `omit`:
    /// per recipient under its guard, or as one room broadcast.
    pub(crate) async fn deliver(
        &self,
        room: &str,
        event: &str,
        payload: Shown<'_>,
        omit: Option<&str>,
        guard: Option<&topsail_core::pubsub::Guard>,
        seq: Option<u64>,
    ) {
        match guard {
            Some(guard) => {
                if guard.join.is_some() {
                    // A guarded `created` introduces its recipients too.
                    self.room_cap.introduced(room);
                }
                self.deliver_guarded(room, omit, event, payload, guard, seq)
                    .await
            }
            None => {
                self.sample_recipients(room, omit);
                let except = omit.map(str::to_owned).into_iter().collect();
                self.backend
                    .emit_local(vec![room.to_owned()], except, event, payload.raw, seq)
                    .await
            }
        }
    }

    /// Records how many of this node's sockets a message goes to, for one
    /// message in [`RECIPIENTS_SAMPLED_EVERY`]: counting them walks the
    /// room's members, which the broadcast itself does not need.
    fn sample_recipients(&self, room: &str, omit: Option<&str>) {
        self.note_recipients(|| self.backend.local_members(room, omit).len());
    }

    /// Records `count()` recipients for one message in
    /// [`RECIPIENTS_SAMPLED_EVERY`] (guarded deliveries know theirs, and
    /// are sampled alike so the histogram weighs every message the same).
    pub(crate) fn note_recipients(&self, count: impl FnOnce() -> usize) {
        let n = self.sampled.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(RECIPIENTS_SAMPLED_EVERY) {
            metrics::histogram!("topsail_message_recipients").record(count() as f64);
        }
    }

    /// Carries out one work of the publisher task; returns whom to tell
    /// once every local socket has been handed its messages.
    async fn carry_out(
        &self,
        work: Work,
        relay_out: Option<&crate::relay::RelayOut>,
    ) -> Option<tokio::sync::oneshot::Sender<()>> {
        match work {
            Work::Local(batch, committed, answer, intent) => {
                // Numbered before they travel: every node delivers and
                // keeps a message under the same number.
                let seqs: Vec<Option<u64>> = batch.iter().map(|e| self.number(e)).collect();
                if let Some(out) = relay_out {
                    out.offer(self, &batch, &seqs);
                }
                for (effect, seq) in batch.into_iter().zip(seqs) {
                    count_message(&effect);
                    self.apply(effect, seq).await;
                }
                if let (Some(journal), Some(intent)) = (&self.journal, intent) {
                    journal.done(intent);
                }
                metrics::histogram!("topsail_publish_lag_seconds")
                    .record(committed.elapsed().as_secs_f64());
                Some(answer)
            }
            Work::Relayed(bytes, arrival) => {
                self.receive_relayed(&bytes, arrival).await;
                None
            }
            Work::Finish(finish) => {
                self.finish(*finish).await;
                None
            }
            Work::App(message, answer) => {
                let seq = self.log.next_seq();
                if let Some(out) = relay_out {
                    out.offer_app(self, &message, seq);
                }
                self.app_message(message, seq).await;
                Some(answer)
            }
        }
    }

    /// Tells `answers` once the lanes have handed every message so far to
    /// its sockets (a publishing request may answer then; it may have gone:
    /// nothing waits then), and counts the works done.
    async fn answer_once_handed(
        &self,
        answers: Vec<Option<tokio::sync::oneshot::Sender<()>>>,
        done: &Arc<AtomicUsize>,
    ) {
        let (done, works) = (done.clone(), answers.len());
        let then = move || {
            for answer in answers.into_iter().flatten() {
                let _ = answer.send(());
            }
            done.fetch_sub(works, Ordering::AcqRel);
        };
        self.backend.after_handed(Box::new(then)).await;
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
        if self.work.set(tx.clone()).is_err() {
            tracing::warn!("Sockets::publisher called twice; resumes finish on the first task");
        }
        if self.lanes > 0 {
            self.backend.start_lanes(self.lanes, self.slow_readers);
        }
        self.backend.set_introductions(self.introductions);
        let pending = self.pending.clone();
        let relay_out = self.relay.clone();
        let sockets = self.clone();
        let done = pending.clone();
        tokio::spawn(async move {
            loop {
                let work = if sockets.backend.awaits_catch_up() {
                    // Noted introductions wait for the lanes to catch up:
                    // look again soon when no work comes.
                    tokio::select! {
                        work = rx.recv() => work,
                        () = tokio::time::sleep(LOOK_AGAIN) => {
                            sockets.backend.carry_noted(rx.is_empty()).await;
                            continue;
                        }
                    }
                } else {
                    rx.recv().await
                };
                let Some(work) = work else { break };
                // The local works already waiting behind this one are taken
                // with it: what they send to the same rooms is handed to
                // each socket as one run (see `Backend::gather`).
                let (run, after) = waiting_run(work, &mut rx);
                let gathered = run.len() > 1;
                if gathered {
                    sockets.backend.gather();
                }
                let mut answers = Vec::with_capacity(run.len());
                for work in run {
                    answers.push(sockets.carry_out(work, relay_out.as_ref()).await);
                }
                if gathered {
                    sockets.backend.hand_out_gathered().await;
                }
                sockets.answer_once_handed(answers, &done).await;
                if let Some(work) = after {
                    let answer = sockets.carry_out(work, relay_out.as_ref()).await;
                    sockets.answer_once_handed(vec![answer], &done).await;
                }
                sockets.backend.carry_noted(rx.is_empty()).await;
            }
        });
        SocketPublisher {
            tx,
            pending,
            journal: self.journal.clone(),
        }
    }
}

/// A message of the app's ([`Sockets::broadcast`], [`Sockets::blast`]).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct AppMessage {
    /// Its rooms; none: every socket.
    pub(crate) rooms: Vec<String>,
    pub(crate) event: String,
    pub(crate) payload: Value,
    pub(crate) omit: Option<String>,
}

/// Local works taken together at most (see [`waiting_run`]).
const RUN_MAX: usize = 64;

/// `first` and the local works waiting behind it (at most [`RUN_MAX`]),
/// when `first` is one; and the first other work found, to be carried out
/// after them.
fn waiting_run(first: Work, rx: &mut mpsc::Receiver<Work>) -> (Vec<Work>, Option<Work>) {
    let mut run = vec![first];
    if !matches!(run[0], Work::Local(..)) {
        return (run, None);
    }
    while run.len() < RUN_MAX {
        match rx.try_recv() {
            Ok(work @ Work::Local(..)) => run.push(work),
            Ok(other) => return (run, Some(other)),
            Err(_) => break,
        }
    }
    (run, None)
}

/// What the publisher task carries out, in order: this node's effects, and
/// the guarded effects other nodes relay (on the same task, so every
/// change of a guarded room's members is made between two deliveries).
#[derive(Debug)]
enum Work {
    /// This node's effects, with when they were published (just after
    /// their commit), whom to tell once every local socket has them, and
    /// their intent in the journal (see [`crate::resume::journal`]).
    Local(
        Vec<Effect>,
        std::time::Instant,
        tokio::sync::oneshot::Sender<()>,
        Option<(u64, u64)>,
    ),
    /// A batch another node relayed, as it came.
    Relayed(Vec<u8>, crate::relay::Arrival),
    /// The end of a socket's resume (see [`crate::resume`]).
    Finish(Box<Finish>),
    /// An app's message, and whom to tell once local sockets have it.
    App(AppMessage, tokio::sync::oneshot::Sender<()>),
}

/// Delivers the engine's effects over socket.io (see [`Sockets::publisher`]).
#[derive(Debug, Clone)]
pub struct SocketPublisher {
    tx: mpsc::Sender<Work>,
    /// Batches published and not yet carried out (queued, or in progress).
    pending: Arc<AtomicUsize>,
    /// A single process's journal, told of each batch as it is queued.
    journal: Option<Arc<crate::resume::journal::Journal>>,
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

    /// Queues a batch another node relayed.
    pub(crate) async fn relayed(&self, bytes: Vec<u8>, arrival: crate::relay::Arrival) {
        self.send(Work::Relayed(bytes, arrival)).await;
    }

    async fn send(&self, work: Work) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(work).await.is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            tracing::error!("the pub-sub task has stopped; effects dropped");
        }
    }
}

/// The room under which the replay log keeps `effect`: a message's room,
/// or the source of a change of members; `None` for what it does not keep
/// (a socket's own joins and leaves).
fn logged_room(effect: &Effect) -> Option<&str> {
    match effect {
        Effect::Broadcast { room, .. } => Some(room),
        Effect::AddMembers { source, .. } | Effect::RemoveMembers { source, .. } => Some(source),
        Effect::Join { .. } | Effect::Leave { .. } | Effect::Forget { .. } => None,
    }
}

/// The rooms under which the log keeps `effects`: what a batch concerns,
/// should its messages never go out.
fn logged_rooms(effects: &[Effect]) -> Vec<&str> {
    let mut rooms: Vec<&str> = effects.iter().filter_map(logged_room).collect();
    rooms.sort_unstable();
    rooms.dedup();
    rooms
}

/// Publishing returns once this node's sockets have been handed every
/// message and membership of the batch, as Sails does (its broadcasts
/// reach the sockets' buffers before the action answers): a socket's own
/// message comes before its answer, a read's subscriptions are in place
/// before it answers, and a client that acts on an answer has already been
/// sent what the action published. Other nodes get the batch through the
/// relay, after (see `crate::relay`): across nodes, no such order holds.
#[async_trait]
impl Publisher for SocketPublisher {
    async fn publish(&self, effects: Vec<Effect>) {
        self.queue(effects).await.await;
    }

    /// Queued on the publisher task's queue, in order; the sockets are
    /// handed them later.
    async fn queue(&self, effects: Vec<Effect>) -> topsail_core::pubsub::Handed {
        let (handed, done) = tokio::sync::oneshot::channel();
        let intent = self
            .journal
            .as_ref()
            .and_then(|journal| journal.intend(&logged_rooms(&effects)));
        let at = std::time::Instant::now();
        self.send(Work::Local(effects, at, handed, intent)).await;
        Box::pin(async move {
            // An error: the task has stopped, and `send` said so.
            let _ = done.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes named in the same millisecond with the same pid (pid
    /// 1 in two containers) still differ.
    #[test]
    fn node_names_differ_within_one_millisecond_and_one_pid() {
        let names: std::collections::HashSet<_> = (0..100).map(|_| node_name()).collect();
        assert_eq!(names.len(), 100);
    }
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
        fn census(&self) -> crate::backend::Census {
            crate::backend::Census::default()
        }
        fn cluster_up(&self) -> bool {
            true
        }
        fn local_members(&self, _: &str, _: Option<&str>) -> Vec<Sid> {
            Vec::new()
        }
        fn is_local(&self, _: &str) -> bool {
            true
        }
        fn was_cut(&self, _: Sid) -> bool {
            false
        }
        fn cut_missed_from(&self, _: Sid) -> Option<u64> {
            None
        }
        fn mark_at_room_cap(&self, _: &str, _: bool) {}
        async fn emit_local(
            &self,
            _: Vec<String>,
            _: Vec<String>,
            _: &str,
            _: &serde_json::value::RawValue,
            _: Option<u64>,
        ) {
            let permit = self.0.acquire().await;
            drop(permit);
        }
        async fn emit_all_local(
            &self,
            _: Vec<String>,
            _: &str,
            _: &serde_json::value::RawValue,
            _: Option<u64>,
        ) {
        }
        async fn emit_members(
            &self,
            _: Vec<Sid>,
            _: &str,
            _: &serde_json::value::RawValue,
            _: Option<u64>,
        ) {
        }
        fn emit_to(
            &self,
            _: Sid,
            _: &str,
            _: &serde_json::value::RawValue,
            _: Option<u64>,
        ) -> crate::backend::Sent {
            crate::backend::Sent::Queued
        }
        async fn local_membership(&self, _: Vec<String>, _: Vec<String>, _: Vec<String>, _: bool) {}
        fn start_lanes(&self, _: usize, _: crate::SlowReaders) {}
        fn slow_readers(&self) -> usize {
            0
        }
        async fn quiesce(&self, _: Sid) {}
        async fn after_handed(&self, then: Box<dyn FnOnce() + Send>) {
            then()
        }
    }

    /// Publishes [`message`] through `publisher` on a task of its own.
    fn spawn_publish(publisher: &SocketPublisher) -> tokio::task::JoinHandle<()> {
        let p = publisher.clone();
        tokio::spawn(async move { p.publish(message()).await })
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
    /// Sockets whose deliveries wait for a permit of `gate`.
    fn gated(gate: &Arc<Semaphore>) -> Sockets {
        Sockets {
            backend: Arc::new(Gated(gate.clone())),
            queue: DEFAULT_PUBLISHER_QUEUE,
            lanes: default_lanes(),
            slow_readers: crate::SlowReaders::default(),
            introductions: crate::Introductions::default(),
            stalled: Arc::default(),
            room_cap: Arc::new(RoomCap::new(DEFAULT_MAX_ROOMS_PER_SOCKET)),
            guarding: Guarding::default(),
            node: node_name(),
            relay: None,
            heard: Arc::default(),
            pending: Arc::default(),
            sampled: Arc::default(),
            log: Arc::new(Log::new(ReplayConfig::default())),
            journal: None,
            parking: Arc::new(Parking::new(&ReplayConfig::default())),
            work: Arc::default(),
            shared_parking: None,
            resumables: Arc::default(),
            late: Arc::default(),
            resume_turns: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    #[tokio::test]
    async fn a_full_publisher_queue_makes_the_writer_wait_and_drops_nothing() {
        let gate = Arc::new(Semaphore::new(0));
        let sockets = gated(&gate).publisher_queue(1);
        let publisher = sockets.publisher();
        let publish = || spawn_publish(&publisher);
        // The first batch is taken by the task (and waits in emit), the
        // second fills the queue of one, the third waits for room.
        let (first, second) = (publish(), publish());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let third = publish();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!first.is_finished(), "a publish waits for its delivery");
        assert!(!third.is_finished(), "the third publish waits for room");
        assert_eq!(publisher.queue_depth(), 3);
        assert!(!publisher.flush(Duration::from_millis(20)).await);
        gate.add_permits(3);
        for p in [first, second, third] {
            p.await.unwrap();
        }
        assert!(
            publisher.flush(Duration::from_secs(5)).await,
            "all delivered"
        );
        assert_eq!(publisher.queue_depth(), 0);
    }

    /// A batch queued behind one the sockets are slow to take is in the
    /// journal as an intent, not done, until it is carried out: a process
    /// that died then would leave its rooms counted as lost.
    #[tokio::test]
    async fn a_batch_waiting_in_the_queue_is_journaled_as_an_intent_until_done() {
        let dir = std::env::temp_dir().join(format!(
            "topsail-intents-{}-{}",
            std::process::id(),
            crate::replay::now_us()
        ));
        let (journal, _) = crate::resume::journal::Journal::open(&dir, &ReplayConfig::default());
        let gate = Arc::new(Semaphore::new(0));
        let sockets = gated(&gate).journal_to(journal.expect("opened"));
        let publisher = sockets.publisher();
        let publish = || spawn_publish(&publisher);
        let (first, second) = (publish(), publish());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let held = crate::resume::journal::peek(&dir);
        assert_eq!(held.unfinished(), ["sails_model_create_pet"]);
        assert_eq!(
            held.entries(),
            1,
            "the first is journaled, held in its delivery"
        );

        gate.add_permits(2);
        first.await.unwrap();
        second.await.unwrap();
        let done = crate::resume::journal::peek(&dir);
        assert!(done.unfinished().is_empty(), "{:?}", done.unfinished());
        assert_eq!(done.entries(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
