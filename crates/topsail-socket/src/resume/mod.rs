/*!
Taking a socket back after a drop, for the stock sails.io.js client.

A socket that drops is *parked*: its rooms, its principal, and the moment
from which its client may have missed messages (see
[`ReplayConfig::close_doubt`](crate::ReplayConfig::close_doubt)), under its
resume key: the `topsail.rid` cookie (set by `GET /__getcookie` and by the
handshake of a browser that has none), which sails.io.js sends with every
reconnect. A socket that connects with that key takes its parked sockets
back: it is identified first, keeps the rooms its principal may still be
in (a changed principal leaves those of models with a read rule), and is
sent every message of those rooms after that moment, from the replay log
(`crate::replay`), each judged by the read rules as a live one would be,
in order, before any new one; its virtual requests wait until then.

Two tabs share a cookie, and the stock client says nothing that tells
them apart: a socket coming back takes every socket of its key that
dropped and was not taken back more than [`SHARED_GRACE`] ago, so each of
two tabs that dropped together gets all it had (and what the other had).
A client that loads `/__topsail/resume.js` names the socket it was and the
last sequence number it saw, and gets exactly that socket's messages after
it, once each.

What the log no longer holds is not replayed in part: the socket joins the
room again and receives one `topsail:resync` event naming what to fetch
again.
*/

mod file;
pub(crate) mod journal;
mod parking;
mod state;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use socketioxide::socket::Sid;
use topsail_core::Principal;

use crate::backend::Sent;
use crate::sockets::Sockets;

pub(crate) use file::FileParking;
pub use parking::{FULL_SNAPSHOT_EVERY, SNAPSHOT_EVERY};
pub(crate) use parking::{Late, Parked, Parking, Resumable, SharedParking, WireParked};
use state::{Resuming, resync_message};

/// The cookie a socket is taken back by.
pub const RESUME_COOKIE: &str = "topsail.rid";
/// The event that tells a socket to fetch again what its gap lost.
pub const RESYNC_EVENT: &str = "topsail:resync";
/// How long a parked socket, once taken back by a stock client, may still
/// be taken by another socket of the same key (a second tab).
pub const SHARED_GRACE: Duration = Duration::from_secs(10);
/// Replayed off the publisher task in chunks of this many entries, until
/// fewer than [`CAUGHT_UP`] remain for the task to finish with.
const CHUNK: usize = 512;
const CAUGHT_UP: usize = 64;
/// How many sockets are given back what they missed at once, per node.
pub const RESUMES_AT_ONCE: usize = 256;
/// How long a replay waits, in all, for a reader that does not take what
/// it is sent before it gives up on it.
const REPLAY_PATIENCE: Duration = Duration::from_secs(30);

/// What a connecting socket claims: its resume key, and for the opt-in
/// client the socket it was and the last sequence number it saw.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub(crate) key: String,
    pub(crate) was: Option<String>,
    pub(crate) seen: Option<u64>,
}

impl Claim {
    /// The claim of a handshake: the resume cookie, and the opt-in
    /// client's `topsail_sid` and `topsail_seq` query parameters.
    pub(crate) fn of(cookie: Option<&str>, query: Option<&str>) -> Option<Self> {
        let key = cookie?.to_owned();
        let param = |name: &str| {
            crate::bridge::query_param(query?, name)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Some(Claim {
            key,
            was: param("topsail_sid"),
            seen: param("topsail_seq").and_then(|s| s.parse().ok()),
        })
    }
}

/// What of a socket's rooms (`own` is its id) is given back to it: all but
/// its own id room and the room-cap mark, and the room of blasts, which
/// reached it too.
pub(crate) fn rooms_to_give_back(own: &str, rooms: Vec<String>) -> Vec<String> {
    rooms
        .into_iter()
        .filter(|r| r != own && r != crate::room_cap::AT_ROOM_CAP)
        .chain([crate::replay::EVERYONE.to_owned()])
        .collect()
}

impl Sockets {
    /// The parked sockets `claim` takes back: this node's, or, in a
    /// cluster, those another node parked. Taken here, they are marked
    /// taken there too.
    async fn take_parked(&self, claim: &Claim) -> Vec<Parked> {
        let was = claim.was.as_deref();
        let local = self.parking.take(&claim.key, was);
        let Some(shared) = self.shared_parking.clone() else {
            return local;
        };
        if !local.is_empty() {
            let (key, was) = (claim.key.clone(), claim.was.clone());
            tokio::spawn(async move { shared.take(&key, was.as_deref()).await });
            return local;
        }
        shared
            .take(&claim.key, was)
            .await
            .into_iter()
            .map(Parked::from)
            .collect()
    }

    /// Registers a local socket that can be taken back.
    pub(crate) fn resumable(&self, sid: Sid, r: Resumable) {
        let mut all = self.resumables.write().unwrap_or_else(|e| e.into_inner());
        all.insert(sid, r);
    }

    /// A local socket the server closed: no longer snapshotted, and left
    /// as its last snapshot says.
    pub(crate) fn forget_resumable(&self, sid: Sid) {
        self.resumables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sid);
    }

    /// A local socket left: parked (`Some`), or gone for good.
    pub(crate) fn left(&self, sid: Sid, key: &str, parked: Option<Parked>) {
        self.resumables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sid);
        match parked {
            Some(p) => {
                self.park(key, p);
                self.resume_late(key);
            }
            None => {
                if let Some(shared) = self.shared_parking.clone() {
                    let (key, sid) = (key.to_owned(), sid.to_string());
                    tokio::spawn(async move { shared.forget(&key, &sid).await });
                }
            }
        }
    }

    /// Takes back, into the sockets of `key` that connected lately and
    /// found nothing parked, what was just parked under it: their client
    /// came back before its old socket was seen to drop. Unlike a resume
    /// at connection, what they were sent meanwhile may come before what
    /// is replayed (each message still once, by its number).
    fn resume_late(&self, key: &str) {
        for sid in self.late.take(key) {
            let Some(r) = self.resumable_of(sid) else {
                continue;
            };
            let (me, again) = (self.clone(), self.guarding.again_of(sid));
            let claim = Claim {
                key: key.to_owned(),
                was: None,
                seen: None,
            };
            tokio::spawn(async move {
                let identify = async {
                    if let Some(again) = again {
                        again().await;
                    }
                };
                me.resume(sid, claim, identify, r.slot.clone(), &r.floor)
                    .await;
            });
        }
    }

    fn resumable_of(&self, sid: Sid) -> Option<Resumable> {
        let all = self.resumables.read().unwrap_or_else(|e| e.into_inner());
        all.get(&sid).cloned()
    }

    /// In a cluster (or with a restart file), records this node's live sockets every
    /// [`SNAPSHOT_EVERY`] (see [`SharedParking::snapshot`]), for as long
    /// as these sockets exist.
    pub(crate) fn snapshot_periodically(&self) {
        let Some(shared) = self.shared_parking.clone() else {
            return;
        };
        let me = self.clone();
        let (close_doubt, remember) = (
            u64::try_from(self.log.config().close_doubt.as_micros()).unwrap_or(u64::MAX),
            self.log.config().remember,
        );
        tokio::spawn(async move {
            let mut wait = SNAPSHOT_EVERY;
            let mut recorded = Recorded::default();
            loop {
                tokio::time::sleep(wait).await;
                let began = std::time::Instant::now();
                recorded.begin(began);
                let live: Vec<(Sid, Resumable)> = me
                    .resumables
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(s, r)| (*s, r.clone()))
                    .collect();
                // If this node dies now, its sockets may have missed what
                // it sent them lately.
                let since = crate::replay::now_us().saturating_sub(close_doubt);
                let records = live
                    .into_iter()
                    .filter_map(|(sid, r)| {
                        let own = sid.to_string();
                        let rooms = rooms_to_give_back(&own, me.backend.local_rooms(&own)?);
                        let floor = r.floor.load(std::sync::atomic::Ordering::Acquire);
                        let anonymous = r.slot.with(Principal::is_anonymous);
                        if !recorded.changed(sid, record_print(&rooms, floor, anonymous)) {
                            return None;
                        }
                        let wire = WireParked {
                            sid: own,
                            rooms,
                            since: since.max(floor),
                            floor,
                            anonymous,
                        };
                        Some((r.key, wire))
                    })
                    .collect();
                recorded.end(shared.snapshot(&me.node, records, remember).await);
                wait = shared.next_snapshot_after(began.elapsed());
            }
        });
    }

    /// Tells every socket connected to this node that it may have missed
    /// messages after `since` (another node's batches that never came):
    /// one `topsail:resync` each, naming its rooms, as a socket that comes
    /// back to a gap is told.
    pub(crate) fn resync_connected(&self, since: u64) {
        let sockets = self.guarding.sockets_where(&|_| true);
        self.resync_gap(sockets.iter().filter_map(|id| id.parse().ok()), since);
    }

    /// As [`Sockets::resync_connected`], for the sockets of this node in
    /// any of `rooms` only.
    pub(crate) fn resync_members(&self, rooms: &[String], since: u64) {
        let mut sockets = std::collections::HashSet::with_hasher(crate::guarded::BySid);
        for room in rooms {
            sockets.extend(self.backend.local_members(room, None));
        }
        self.resync_gap(sockets.into_iter(), since);
    }

    /// One `topsail:resync` to each of `sockets`, naming its rooms.
    fn resync_gap(&self, sockets: impl Iterator<Item = Sid>, since: u64) {
        let mut told = 0;
        for sid in sockets {
            let id = sid.to_string();
            let Some(rooms) = self.backend.local_rooms(&id) else {
                continue;
            };
            let rooms = rooms_to_give_back(&id, rooms);
            let message = resync_message("gap", since, &rooms);
            self.backend
                .emit_to(sid, RESYNC_EVENT, &crate::replay::to_raw(&message), None);
            told += 1;
        }
        metrics::counter!("topsail_resyncs_sent_total", "reason" => "relay-gap").increment(told);
    }

    /// Parks a socket that dropped, here and, in a cluster, for the other
    /// nodes.
    pub(crate) fn park(&self, key: &str, parked: Parked) {
        if let Some(shared) = self.shared_parking.clone() {
            let (key, wire) = (key.to_owned(), WireParked::from(&parked));
            let remember = self.log.config().remember;
            tokio::spawn(async move { shared.park(&key, wire, remember).await });
        }
        self.parking.park(key, parked);
    }

    /// Takes back what the socket `new` claims (its virtual requests wait
    /// for it). `identify` runs the app's identity for the socket; `slot`
    /// then holds its principal. `floor` (when it connected) is lowered to
    /// where its replay starts.
    pub(crate) async fn resume(
        &self,
        new: Sid,
        claim: Claim,
        identify: impl std::future::Future<Output = ()>,
        slot: topsail_core::PrincipalSlot,
        floor: &std::sync::atomic::AtomicU64,
    ) {
        let parked = self.take_parked(&claim).await;
        if parked.is_empty() {
            if claim.was.is_none() {
                // Its old socket may not be parked yet: the server notices
                // a dead connection only at the heartbeat, and a client
                // that saw it die is back long before.
                self.late.note(&claim.key, new);
            } else {
                // The opt-in client says it was a socket this node no
                // longer knows (or never did): everything is to fetch.
                metrics::counter!("topsail_resumes_total", "outcome" => "unknown").increment(1);
                let since = claim.seen.unwrap_or(0);
                let message = resync_message("unknown", since, &[]);
                self.backend
                    .emit_to(new, RESYNC_EVENT, &crate::replay::to_raw(&message), None);
            }
            return;
        }
        // Bounded: an avalanche of sockets coming back at once is replayed
        // a few at a time (the others wait their turn, their requests too),
        // rather than every replay filling every queue at once.
        let Ok(_turn) = self.resume_turns.clone().acquire_owned().await else {
            return;
        };
        identify.await;
        let principal = slot.get();
        let mut rooms = HashSet::new();
        let mut unsure = Vec::new();
        for p in &parked {
            // Under another principal (signed out, or in as someone else),
            // only the rooms of models without a read rule come back: the
            // app's own rooms may have been joined because of who it was.
            // Parked by another node, whose principal is not known here:
            // the others are named, to fetch again under this one.
            let same = p.principal.as_ref() == Some(&principal);
            for r in &p.rooms {
                if same || self.open_to_anyone(r) {
                    rooms.insert(r.clone());
                } else if p.principal.is_none() {
                    unsure.push(r.clone());
                }
            }
        }
        let since = match claim.seen {
            // What the opt-in client saw last, but nothing from before it
            // connected: that was never for it.
            Some(seen) if claim.was.is_some() => {
                let seen = seen.saturating_sub(self.replay_margin());
                parked
                    .iter()
                    .map(|p| seen.max(p.floor))
                    .min()
                    .unwrap_or(seen)
            }
            _ => parked.iter().map(|p| p.since).min().unwrap_or(0),
        };
        floor.fetch_min(since, std::sync::atomic::Ordering::AcqRel);
        let old: Vec<Arc<str>> = parked.iter().map(|p| p.sid.clone()).collect();
        let lowest_floor = parked.iter().map(|p| p.floor).min().unwrap_or(0);
        let mut state = Resuming::new(rooms, since, old, |r, s| self.log.lost_after(r, s))
            .floored(lowest_floor);
        state.gaps.extend(unsure);
        let mut slot = slot;
        let mut patience = REPLAY_PATIENCE;
        loop {
            if !self.replay_chunks(new, &mut state, &slot).await {
                // Gone again before it caught up: what it was given back
                // waits for its next try.
                for mut p in parked {
                    p.taken = None;
                    self.parking.park(&claim.key, p);
                }
                return;
            }
            let (done, finished) = tokio::sync::oneshot::channel();
            self.finish_resume(Box::new(Finish {
                new,
                state,
                slot,
                done,
            }))
            .await;
            match finished.await {
                Ok(Err(unfinished)) if !patience.is_zero() => {
                    // Its queue was full: let it read on, then try again.
                    (state, slot) = *unfinished;
                    let pause = Duration::from_millis(10);
                    patience = patience.saturating_sub(pause);
                    tokio::time::sleep(pause).await;
                }
                Ok(Err(_)) => {
                    tracing::warn!(sid = %new, "a resumed socket does not take its replay; it is left to its heartbeat");
                    return;
                }
                Ok(Ok(())) | Err(_) => return,
            }
        }
    }

    /// Whether any principal may be in `room`: a record or class room of
    /// a model without a read rule, or the room of every socket.
    fn open_to_anyone(&self, room: &str) -> bool {
        room == crate::replay::EVERYONE
            || (topsail_core::pubsub::RoomName::parse(room).is_some()
                && !self.guarding.is_guarded_room(room))
    }

    /// Replays the log to `new` off the publisher task, chunk by chunk,
    /// waiting when its outgoing queue is full, until little is left.
    /// False when the socket went away.
    async fn replay_chunks(
        &self,
        new: Sid,
        state: &mut Resuming,
        slot: &topsail_core::PrincipalSlot,
    ) -> bool {
        let rules = self.guarding.rules();
        let mut patience = REPLAY_PATIENCE;
        loop {
            let entries = self.log.after(state.cursor, CHUNK);
            if entries.len() < CAUGHT_UP {
                return true;
            }
            let out = state.step(
                &entries,
                |g| g.seen_by(rules, slot),
                |r, s| self.log.lost_after(r, s),
            );
            for m in out {
                loop {
                    match self.backend.emit_to(new, &m.event, &m.raw(), Some(m.seq)) {
                        Sent::Queued => {
                            state.mark_sent(m.seq);
                            break;
                        }
                        Sent::Gone => return false,
                        Sent::Full => {
                            if patience.is_zero() {
                                tracing::warn!(sid = %new, "a resumed socket does not take its replay; it is left to its heartbeat");
                                return false;
                            }
                            let pause = Duration::from_millis(2);
                            patience = patience.saturating_sub(pause);
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
            }
        }
    }

    /// The last part of a resume, on the publisher task (between two
    /// deliveries): the rest of the log, then the rooms. When the socket's
    /// queue cannot take the rest (it is still reading its replay), it
    /// stops there, in the rooms it was in: the state goes back to the
    /// resume, which tries again once the socket has read on.
    pub(crate) async fn finish(&self, finish: Finish) {
        let Finish {
            new,
            mut state,
            slot,
            done,
        } = finish;
        match self.finish_now(new, &mut state, &slot).await {
            Some(()) => {
                let _ = done.send(Ok(()));
            }
            None => {
                let _ = done.send(Err(Box::new((state, slot))));
            }
        }
    }

    /// [`Sockets::finish`]: `None` when the socket's queue is full.
    async fn finish_now(
        &self,
        new: Sid,
        state: &mut Resuming,
        slot: &topsail_core::PrincipalSlot,
    ) -> Option<()> {
        // Sent after anything its lane still holds for it (a blast).
        self.backend.quiesce(new).await;
        // Through the whole gap again: what came in late from another node
        // is numbered before where the chunks stopped.
        state.rewind(self.replay_margin());
        let entries = self.log.after(state.cursor, usize::MAX);
        let rules = self.guarding.rules();
        let out = state.step(
            &entries,
            |g| g.seen_by(rules, slot),
            |r, s| self.log.lost_after(r, s),
        );
        let resync = state.resync("gap");
        if let Some(message) = resync.as_ref().filter(|_| !state.resync_sent) {
            match self
                .backend
                .emit_to(new, RESYNC_EVENT, &crate::replay::to_raw(message), None)
            {
                Sent::Queued => state.resync_sent = true,
                Sent::Full => return None,
                Sent::Gone => return Some(()),
            }
        }
        for m in out {
            match self.backend.emit_to(new, &m.event, &m.raw(), Some(m.seq)) {
                Sent::Queued => state.mark_sent(m.seq),
                Sent::Full => return None,
                Sent::Gone => return Some(()),
            }
        }
        let socket = new.to_string();
        let replayed = state.replayed();
        let rooms: Vec<String> = std::mem::take(&mut state.rooms).into_iter().collect();
        let rooms = self.room_cap.admit(&*self.backend, &socket, rooms);
        self.backend
            .local_membership(vec![socket], Vec::new(), rooms, true)
            .await;
        let outcome = if resync.is_some() {
            "resync"
        } else {
            "replayed"
        };
        metrics::counter!("topsail_resumes_total", "outcome" => outcome).increment(1);
        metrics::counter!("topsail_replayed_messages_total").increment(replayed);
        tracing::info!(sid = %new, replayed, resync = resync.is_some(), "socket taken back");
        Some(())
    }
}

impl Sockets {
    /// A read's socket joins `rooms`, on the publisher task. What was
    /// published to them since the read began (`read_at`), while the
    /// socket was not in them, may describe a change the read did not see:
    /// it is sent first, from the log, and the rooms it introduced the
    /// socket to are joined too (Centrifugo closes the same race by
    /// reading a stream's position before its history).
    pub(crate) async fn join_after_read(&self, socket: &str, mut rooms: Vec<String>, read_at: u64) {
        let Some(sid) = socket.parse::<Sid>().ok().filter(|_| self.is_local(socket)) else {
            return;
        };
        let entries = self.log.after(read_at, usize::MAX);
        if !entries.is_empty() {
            let wanted: HashSet<&str> = rooms.iter().map(String::as_str).collect();
            if entries
                .iter()
                .any(|e| e.rooms.iter().any(|r| wanted.contains(&**r)))
            {
                let current: HashSet<String> = self
                    .backend
                    .local_rooms(socket)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let fresh = rooms
                    .iter()
                    .filter(|r| !current.contains(*r))
                    .cloned()
                    .collect();
                let lost_after = |r: &str, s: u64| self.log.lost_after(r, s);
                let mut state = Resuming::new(fresh, read_at, vec![Arc::from(socket)], lost_after);
                let (rules, slot) = (self.guarding.rules(), self.guarding.slot(sid));
                let missed = state.step(&entries, |g| g.seen_by(rules, &slot), lost_after);
                if !missed.is_empty() {
                    // After what its lane still holds for it.
                    self.backend.quiesce(sid).await;
                }
                for m in missed {
                    self.backend.emit_to(sid, &m.event, &m.raw(), Some(m.seq));
                }
                let added: Vec<String> = state
                    .rooms
                    .into_iter()
                    .filter(|r| !wanted.contains(r.as_str()))
                    .collect();
                rooms.extend(added);
            }
        }
        self.change_rooms(socket, rooms, true).await;
    }
}

/// What the publisher task finishes of a resume.
#[derive(Debug)]
pub(crate) struct Finish {
    new: Sid,
    state: Resuming,
    slot: topsail_core::PrincipalSlot,
    /// Done, or not yet (the socket's queue was full): the state back.
    done: tokio::sync::oneshot::Sender<Result<(), Unfinished>>,
}

/// A resume the publisher task could not finish yet.
type Unfinished = Box<(Resuming, topsail_core::PrincipalSlot)>;

/// Which sockets' records a snapshot gives (see
/// [`SharedParking::snapshot`]): those whose record changed since the last
/// one recorded, and all of them every [`FULL_SNAPSHOT_EVERY`] and after a
/// snapshot that could not be recorded.
#[derive(Debug, Default)]
struct Recorded {
    /// Each live socket's record print when last recorded.
    written: HashMap<Sid, u64>,
    /// This snapshot's prints (the sockets gone since drop out).
    now: HashMap<Sid, u64>,
    full_at: Option<std::time::Instant>,
    full: bool,
}

impl Recorded {
    fn begin(&mut self, at: std::time::Instant) {
        self.full = self.full_at.is_none_or(|t| at >= t);
        if self.full {
            self.full_at = Some(at + FULL_SNAPSHOT_EVERY);
        }
        self.now = HashMap::with_capacity(self.written.len());
    }

    /// Whether socket `sid`'s record, whose print is `print`, is to be
    /// given.
    fn changed(&mut self, sid: Sid, print: u64) -> bool {
        let same = self.written.get(&sid) == Some(&print);
        self.now.insert(sid, print);
        self.full || !same
    }

    fn end(&mut self, recorded: bool) {
        self.written = std::mem::take(&mut self.now);
        if !recorded {
            self.full_at = None;
        }
    }
}

/// A fingerprint of a socket's record (its rooms in any order, its floor,
/// whether it is anonymous): a snapshot records only the sockets whose
/// fingerprint changed. Without it, each snapshot wrote every room of
/// every socket, a second, whatever changed.
fn record_print(rooms: &[String], floor: u64, anonymous: bool) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let sum = rooms
        .iter()
        .fold(0u64, |sum, room| sum.wrapping_add(hasher.hash_one(room)));
    hasher.hash_one((sum, rooms.len(), floor, anonymous))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sid(n: u8) -> Sid {
        // A socket id is 16 base64url characters.
        format!("{}{}", "A".repeat(15), char::from(b'a' + n))
            .parse()
            .unwrap()
    }

    fn given(recorded: &mut Recorded, at: Instant, prints: &[(Sid, u64)], ok: bool) -> usize {
        recorded.begin(at);
        let n = prints
            .iter()
            .filter(|(s, p)| recorded.changed(*s, *p))
            .count();
        recorded.end(ok);
        n
    }

    #[test]
    fn a_snapshot_gives_the_changed_records_and_all_now_and_then() {
        let mut r = Recorded::default();
        let t = Instant::now();
        let mut socks = vec![(sid(0), 1), (sid(1), 2), (sid(2), 3)];
        assert_eq!(given(&mut r, t, &socks, true), 3, "the first: all");
        assert_eq!(given(&mut r, t + SNAPSHOT_EVERY, &socks, true), 0);
        socks[1].1 = 20;
        assert_eq!(given(&mut r, t + 2 * SNAPSHOT_EVERY, &socks, true), 1);
        socks[2].1 = 30;
        assert_eq!(given(&mut r, t + 3 * SNAPSHOT_EVERY, &socks, false), 1);
        assert_eq!(
            given(&mut r, t + 4 * SNAPSHOT_EVERY, &socks, true),
            3,
            "after one that could not be recorded: all"
        );
        assert_eq!(given(&mut r, t + 5 * SNAPSHOT_EVERY, &socks, true), 0);
        assert_eq!(
            given(
                &mut r,
                t + 5 * SNAPSHOT_EVERY + FULL_SNAPSHOT_EVERY,
                &socks,
                true
            ),
            3,
            "all again after FULL_SNAPSHOT_EVERY"
        );
    }

    #[test]
    fn a_record_print_ignores_the_order_of_rooms_and_sees_the_rest() {
        let rooms = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let print = record_print(&rooms(&["a", "b"]), 5, true);
        assert_eq!(print, record_print(&rooms(&["b", "a"]), 5, true));
        assert_ne!(print, record_print(&rooms(&["a", "b", "c"]), 5, true));
        assert_ne!(print, record_print(&rooms(&["a"]), 5, true));
        assert_ne!(print, record_print(&rooms(&["a", "b"]), 6, true));
        assert_ne!(print, record_print(&rooms(&["a", "b"]), 5, false));
    }

    #[test]
    fn a_claim_reads_the_cookie_and_the_opt_in_parameters() {
        let c = Claim::of(Some("abc"), Some("EIO=3&topsail_sid=x1&topsail_seq=42")).unwrap();
        assert_eq!(
            (c.key.as_str(), c.was.as_deref(), c.seen),
            ("abc", Some("x1"), Some(42))
        );
        let stock = Claim::of(Some("abc"), Some("EIO=3&topsail_sid=&transport=websocket")).unwrap();
        assert_eq!((stock.was, stock.seen), (None, None));
        assert!(
            Claim::of(None, Some("topsail_sid=x1")).is_none(),
            "no key, no claim"
        );
    }
}
