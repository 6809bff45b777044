//! Who can be taken back: the sockets that dropped (parked, on this node and,
//! in a cluster, in Redis), the live ones a node records for the case it
//! dies, and those that came back before their old socket was seen to drop.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketioxide::socket::Sid;
use topsail_core::Principal;

use super::SHARED_GRACE;
use crate::replay::ReplayConfig;

/// A socket that dropped, as it is remembered.
#[derive(Debug, Clone)]
pub(crate) struct Parked {
    pub(crate) sid: Arc<str>,
    pub(crate) rooms: Vec<String>,
    /// Its client may have missed every message after this.
    pub(crate) since: u64,
    /// Nothing before this was for it: when it connected, or what it was
    /// given back from.
    pub(crate) floor: u64,
    /// Its principal; `None` when it was parked by another node (a
    /// principal does not travel): then rooms a principal may matter for
    /// are named in `topsail:resync` rather than given back.
    pub(crate) principal: Option<Principal>,
    at: Instant,
    pub(super) taken: Option<Instant>,
}

/// A parked socket as other nodes see it (see [`SharedParking`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct WireParked {
    pub(crate) sid: String,
    pub(crate) rooms: Vec<String>,
    pub(crate) since: u64,
    pub(crate) floor: u64,
    /// Whether its principal was anonymous: the one principal that can be
    /// told equal on another node.
    #[serde(default)]
    pub(crate) anonymous: bool,
}

impl From<&Parked> for WireParked {
    fn from(p: &Parked) -> Self {
        WireParked {
            sid: p.sid.to_string(),
            rooms: p.rooms.clone(),
            since: p.since,
            floor: p.floor,
            anonymous: p.principal.as_ref().is_some_and(Principal::is_anonymous),
        }
    }
}

impl From<WireParked> for Parked {
    fn from(w: WireParked) -> Self {
        let mut p = Parked::new(
            Arc::from(w.sid),
            w.rooms,
            w.since,
            w.floor,
            Principal::anonymous(),
        );
        if !w.anonymous {
            p.principal = None;
        }
        p
    }
}

/// The parked sockets of every node (Redis, in a cluster): a socket that
/// comes back to another node is taken back there.
#[async_trait::async_trait]
pub(crate) trait SharedParking: Send + Sync + 'static {
    /// Remembers `parked` under `key` for `remember`.
    async fn park(&self, key: &str, parked: WireParked, remember: Duration);
    /// What [`Parking::take`] would give, across the cluster (and marks it
    /// taken there). A socket of a node that stopped (killed: it parked
    /// nothing) counts as parked from its last snapshot.
    async fn take(&self, key: &str, sid: Option<&str>) -> Vec<WireParked>;
    /// Records node `node`'s live sockets given (each under its key), and
    /// that the node is alive: what is given back if the node dies. Only
    /// sockets whose record changed are given, and all of them every
    /// [`FULL_SNAPSHOT_EVERY`]; a record not given stays as it was. False
    /// when it could not be recorded (the next snapshot gives them all).
    async fn snapshot(
        &self,
        node: &str,
        live: Vec<(String, WireParked)>,
        remember: Duration,
    ) -> bool;
    /// Forgets a socket that left for good (its client said goodbye).
    async fn forget(&self, key: &str, sid: &str);
    /// How long to wait before the next snapshot, the last one having
    /// taken `took`.
    fn next_snapshot_after(&self, _took: Duration) -> Duration {
        SNAPSHOT_EVERY
    }
}

/// How often a node of a cluster records its live sockets (see
/// [`SharedParking::snapshot`]).
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// How often a snapshot records every live socket, changed or not: a
/// record lost meanwhile (Redis restarted without its data) comes back,
/// and no record expires while its socket lives.
pub const FULL_SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

/// The sockets that connected lately with a key and found nothing parked,
/// by key (see `Sockets::resume_late`): for as long as a dead connection
/// may go unnoticed, at most [`PER_KEY`] per key.
#[derive(Debug, Default)]
pub(crate) struct Late {
    window: Duration,
    by_key: Mutex<HashMap<String, Vec<(Sid, Instant)>>>,
}

impl Late {
    pub(crate) fn new(window: Duration) -> Self {
        Late {
            window,
            by_key: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(Sid, Instant)>>> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn note(&self, key: &str, sid: Sid) {
        let now = Instant::now();
        let mut all = self.lock();
        // Let go of the stale, all keys at once now and then.
        if all.len() > 10_000 {
            all.retain(|_, v| {
                v.iter()
                    .any(|(_, at)| now.duration_since(*at) <= self.window)
            });
        }
        let list = all.entry(key.to_owned()).or_default();
        list.retain(|(_, at)| now.duration_since(*at) <= self.window);
        list.push((sid, now));
        if list.len() > PER_KEY {
            list.remove(0);
        }
    }

    pub(crate) fn take(&self, key: &str) -> Vec<Sid> {
        let now = Instant::now();
        let mut all = self.lock();
        all.remove(key)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, at)| now.duration_since(*at) <= self.window)
            .map(|(sid, _)| sid)
            .collect()
    }
}

/// A local socket that can be taken back: its key, and what a snapshot
/// needs of it.
#[derive(Debug, Clone)]
pub(crate) struct Resumable {
    pub(crate) key: String,
    pub(crate) floor: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) slot: topsail_core::PrincipalSlot,
}

impl Parked {
    pub(crate) fn new(
        sid: Arc<str>,
        rooms: Vec<String>,
        since: u64,
        floor: u64,
        principal: Principal,
    ) -> Self {
        Parked {
            sid,
            rooms,
            since: since.max(floor),
            floor,
            principal: Some(principal),
            at: Instant::now(),
            taken: None,
        }
    }
}

/// The parked sockets of one node, by resume key, bounded in number and
/// in time.
#[derive(Debug)]
pub(crate) struct Parking {
    remember: Duration,
    max: usize,
    inner: Mutex<ParkingInner>,
}

#[derive(Debug, Default)]
struct ParkingInner {
    by_key: HashMap<String, Vec<Parked>>,
    /// When each was parked, oldest first, to let go of them.
    order: VecDeque<(Instant, String, Arc<str>)>,
}

/// The most parked sockets one key keeps (a browser with many tabs).
const PER_KEY: usize = 32;

impl Parking {
    pub(crate) fn new(cfg: &ReplayConfig) -> Self {
        Parking {
            remember: cfg.remember,
            max: cfg.max_parked.max(1),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ParkingInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers `parked` under `key`.
    pub(crate) fn park(&self, key: &str, parked: Parked) {
        let mut inner = self.lock();
        inner
            .order
            .push_back((parked.at, key.to_owned(), parked.sid.clone()));
        let list = inner.by_key.entry(key.to_owned()).or_default();
        list.push(parked);
        if list.len() > PER_KEY {
            list.remove(0);
        }
        self.expire(&mut inner, Instant::now());
    }

    fn expire(&self, inner: &mut ParkingInner, now: Instant) {
        while let Some((at, key, sid)) = inner.order.front().cloned() {
            if now.saturating_duration_since(at) <= self.remember && inner.order.len() <= self.max {
                break;
            }
            inner.order.pop_front();
            if let Some(list) = inner.by_key.get_mut(&key) {
                list.retain(|p| p.sid != sid);
                if list.is_empty() {
                    inner.by_key.remove(&key);
                }
            }
        }
    }

    /// The parked sockets a socket connecting with `key` takes back: the
    /// one it names (`sid`, the opt-in client), or every one not taken by
    /// another socket more than [`SHARED_GRACE`] ago (the stock client).
    pub(crate) fn take(&self, key: &str, sid: Option<&str>) -> Vec<Parked> {
        let now = Instant::now();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        let Some(list) = inner.by_key.get_mut(key) else {
            return Vec::new();
        };
        // Taken back by another socket a while ago: that socket has them.
        list.retain(|p| {
            p.taken
                .is_none_or(|t| now.duration_since(t) <= SHARED_GRACE)
        });
        let taken: Vec<Parked> = match sid {
            Some(sid) => {
                let found = list.iter().position(|p| &*p.sid == sid);
                found.map(|i| list.remove(i)).into_iter().collect()
            }
            None => list
                .iter_mut()
                .filter(|p| {
                    p.taken
                        .is_none_or(|t| now.duration_since(t) <= SHARED_GRACE)
                })
                .map(|p| {
                    p.taken.get_or_insert(now);
                    p.clone()
                })
                .collect(),
        };
        if list.is_empty() {
            inner.by_key.remove(key);
        }
        taken
    }

    /// How many sockets are parked.
    pub(crate) fn len(&self) -> usize {
        self.lock().by_key.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(sid: &str) -> Parked {
        Parked::new(
            Arc::from(sid),
            vec!["r".to_owned()],
            1,
            0,
            Principal::anonymous(),
        )
    }

    #[test]
    fn two_tabs_that_dropped_together_both_get_everything_back() {
        let p = Parking::new(&ReplayConfig::default());
        p.park("k", parked("a"));
        p.park("k", parked("b"));
        assert_eq!(p.take("k", None).len(), 2, "the first tab back");
        assert_eq!(p.take("k", None).len(), 2, "the second, within the grace");
        assert!(p.take("other", None).is_empty());
        assert_eq!(p.take("k", Some("a")).len(), 1, "named: that one");
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn parking_is_bounded() {
        let p = Parking::new(&ReplayConfig {
            max_parked: 3,
            ..ReplayConfig::default()
        });
        for i in 0..10 {
            p.park(&format!("k{i}"), parked("s"));
        }
        assert_eq!(p.len(), 3);
        assert!(p.take("k0", None).is_empty(), "the oldest went first");
        assert_eq!(p.take("k9", None).len(), 1);
    }
}
