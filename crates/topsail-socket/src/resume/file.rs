//! The sockets of a single process, kept in a file across its restarts
//! ([`ReplayConfig::restart_file`](crate::ReplayConfig::restart_file)).
//!
//! A process that restarts (a deploy, a crash) starts with an empty replay
//! log and nothing parked, so a stock client coming back with its resume key
//! used to be taken for a new socket: no rooms, and no word of what it
//! missed. With the file, the new process knows which keys had sockets
//! then, and where they were: such a socket gets its rooms back, and what
//! it missed from the journal of the log (`super::journal`), or one
//! `topsail:resync` where the journal cannot vouch for its gap: never a
//! silent gap.
//!
//! Written every [`SNAPSHOT_EVERY`](super::SNAPSHOT_EVERY) (less often when
//! writing it takes long) with the live sockets and those parked, read
//! once at start. It plays the part Redis
//! plays in a cluster, for one process: the next one is "another node" whose
//! predecessor stopped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::parking::{SharedParking, WireParked};
use crate::backend::now_ms;

/// The sockets remembered in the file, by resume key.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Remembered {
    by_key: HashMap<String, Vec<Entry>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    parked: WireParked,
    /// Remembered until then (ms since the epoch).
    until_ms: u64,
    /// Read from the file at start: a socket of the previous process, the
    /// only kind this file gives back (this process's own are parked in
    /// memory too).
    #[serde(default, skip_serializing)]
    earlier: bool,
}

/// See the module's documentation.
pub(crate) struct FileParking {
    path: PathBuf,
    remembered: Arc<Mutex<Remembered>>,
}

impl FileParking {
    /// Reads what the previous process left in `path` (nothing when there
    /// is no file or it cannot be read, which is logged).
    pub(crate) fn open(path: &Path) -> Self {
        let read = match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Remembered::default()),
            read => read
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())),
        };
        let mut remembered = read.unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), error, "the sockets of the previous process cannot be read; they are not taken back");
            Remembered::default()
        });
        let now = now_ms();
        for entries in remembered.by_key.values_mut() {
            entries.retain(|e| e.until_ms > now);
            for e in entries.iter_mut() {
                e.earlier = true;
            }
        }
        remembered.by_key.retain(|_, v| !v.is_empty());
        let sockets: usize = remembered.by_key.values().map(Vec::len).sum();
        if sockets > 0 {
            tracing::info!(sockets, path = %path.display(), "sockets of the previous process can be taken back");
        }
        FileParking {
            path: path.to_owned(),
            remembered: Arc::new(Mutex::new(remembered)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.remembered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the file (to a new file then renamed over it, so a crash
    /// mid-write leaves the last whole one).
    async fn write(&self) {
        let bytes = match serde_json::to_vec(&*self.lock()) {
            Ok(b) => b,
            Err(e) => return tracing::warn!(error = %e, "could not record the sockets"),
        };
        if let Err(e) = replace_file(&self.path, bytes).await {
            tracing::warn!(path = %self.path.display(), error = %e, "could not record the sockets for a restart");
        }
    }
}

/// Writes `bytes` to a new file beside `path`, then renames it over `path`
/// (a crash mid-write leaves the last whole one), off the runtime's
/// threads.
pub(super) async fn replace_file(path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut fresh = path.clone().into_os_string();
        fresh.push(".new");
        std::fs::write(&fresh, bytes)?;
        std::fs::rename(&fresh, &path)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[async_trait::async_trait]
impl SharedParking for FileParking {
    async fn park(&self, key: &str, parked: WireParked, remember: Duration) {
        let until_ms = now_ms() + remember.as_millis() as u64;
        let mut all = self.lock();
        let entries = all.by_key.entry(key.to_owned()).or_default();
        entries.retain(|e| e.parked.sid != parked.sid);
        entries.push(Entry {
            parked,
            until_ms,
            earlier: false,
        });
    }

    async fn take(&self, key: &str, sid: Option<&str>) -> Vec<WireParked> {
        let mut all = self.lock();
        let Some(entries) = all.by_key.get_mut(key) else {
            return Vec::new();
        };
        let now = now_ms();
        let (taken, kept): (Vec<Entry>, Vec<Entry>) = entries
            .drain(..)
            .partition(|e| sid.is_none_or(|s| e.parked.sid == s));
        *entries = kept;
        if entries.is_empty() {
            all.by_key.remove(key);
        }
        taken
            .into_iter()
            .filter(|e| e.earlier && e.until_ms > now)
            .map(|e| e.parked)
            .collect()
    }

    async fn snapshot(
        &self,
        _node: &str,
        live: Vec<(String, WireParked)>,
        remember: Duration,
    ) -> bool {
        {
            let now = now_ms();
            let until_ms = now + remember.as_millis() as u64;
            let mut all = self.lock();
            // A socket live before and not now either parked, left for
            // good (both seen here) or was closed by this server (a
            // shutdown): it stays as last recorded, as with Redis.
            for entries in all.by_key.values_mut() {
                entries.retain(|e| e.until_ms > now);
            }
            for (key, parked) in live {
                let entries = all.by_key.entry(key).or_default();
                entries.retain(|e| e.parked.sid != parked.sid);
                entries.push(Entry {
                    parked,
                    until_ms,
                    earlier: false,
                });
            }
            all.by_key.retain(|_, v| !v.is_empty());
        }
        // The records are kept here, whole: a failed write loses none.
        self.write().await;
        true
    }

    /// At least a second, and ten times what the last one took: a file
    /// of many sockets in many rooms (each watcher of a busy model joins
    /// every new record's room) would otherwise be rewritten all the time.
    fn next_snapshot_after(&self, took: Duration) -> Duration {
        (took * 10).max(super::SNAPSHOT_EVERY)
    }

    async fn forget(&self, key: &str, sid: &str) {
        let mut all = self.lock();
        if let Some(entries) = all.by_key.get_mut(key) {
            entries.retain(|e| e.parked.sid != sid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(sid: &str) -> WireParked {
        WireParked {
            sid: sid.into(),
            rooms: vec!["sails_model_create_pet".into()],
            since: 1,
            floor: 1,
            anonymous: true,
        }
    }

    /// What one process recorded (live and parked) the next one gives back,
    /// once; what it gives back of its own is only what it read.
    #[tokio::test]
    async fn the_next_process_takes_back_what_the_last_one_recorded() {
        let dir = std::env::temp_dir().join(format!("topsail-file-parking-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sockets.json");
        let _ = std::fs::remove_file(&path);
        let minute = Duration::from_secs(60);

        let first = FileParking::open(&path);
        first.park("k1", parked("a"), minute).await;
        first
            .snapshot("n", vec![("k2".into(), parked("b"))], minute)
            .await;
        assert!(
            first.take("k2", None).await.is_empty(),
            "its own live socket"
        );

        let second = FileParking::open(&path);
        let took = second.take("k1", None).await;
        assert_eq!(
            took.iter().map(|p| p.sid.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            second.take("k2", Some("b")).await.len(),
            1,
            "a live one counts as parked"
        );
        assert!(second.take("k1", None).await.is_empty(), "taken once");

        // Expired entries are not read back.
        second.park("k3", parked("c"), Duration::ZERO).await;
        second.snapshot("n", Vec::new(), minute).await;
        assert!(FileParking::open(&path).take("k3", None).await.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
