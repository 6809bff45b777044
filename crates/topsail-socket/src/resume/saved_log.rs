//! A single process's replay log, saved at a graceful shutdown and read
//! back by the next process (see
//! [`ReplayConfig::restart_file`](crate::ReplayConfig::restart_file)).
//!
//! The restart file tells the next process which sockets there were; this
//! tells it what they were sent. Saved once, when every message published
//! has been delivered and nothing more can be (a shutdown after its
//! requests and writes ended), so the log read back holds everything from
//! its first entry until the process stopped, and nothing was published
//! between then and the next start: a stock client that comes back after a
//! deploy is given what it missed, not `topsail:resync`. After a crash
//! there is no saved log (it is removed once read), and the client gets
//! `topsail:resync` as before.
//!
//! What app code of its own still broadcasts after the save (a background
//! task outliving the shutdown) is not in it, and the next process cannot
//! know: an app that broadcasts from such tasks stops them first.
//!
//! Not written every second as the restart file is: the log holds up to
//! `max_messages` entries (about 100 MB at the default bound), and a crash
//! leaves no way to know what was published after the last write.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::guarded::WireGuard;
use crate::replay::What;
use crate::sockets::Sockets;

/// Where the log is saved, beside the restart file `restart_file`.
pub(crate) fn path_of(restart_file: &Path) -> PathBuf {
    let mut name = restart_file.as_os_str().to_owned();
    name.push(".log");
    PathBuf::from(name)
}

/// The file: the log's entries, and up to where it may have lost some.
#[derive(Serialize, Deserialize)]
struct SavedLog {
    lost_upto: u64,
    /// Rooms that lost entries after `lost_upto` (past their bound).
    room_cuts: Vec<(String, u64)>,
    entries: Vec<Saved>,
}

/// A log entry as saved.
#[derive(Serialize, Deserialize)]
struct Saved {
    seq: u64,
    rooms: Vec<String>,
    what: SavedWhat,
}

#[derive(Serialize, Deserialize)]
enum SavedWhat {
    Message {
        event: String,
        payload: Box<RawValue>,
        omit: Option<String>,
        guard: Option<WireGuard>,
    },
    Members {
        dest: String,
        join: bool,
        guard: Option<WireGuard>,
    },
}

impl Sockets {
    /// Saves the replay log to `path` (a new file renamed over the old
    /// one); returns how many entries.
    pub(crate) async fn save_log(&self, path: &Path) -> std::io::Result<usize> {
        let (lost_upto, room_cuts) = self.log.cuts();
        let entries = self.log.after(0, usize::MAX);
        let saved: Vec<Saved> = entries
            .iter()
            .map(|e| Saved {
                seq: e.seq,
                rooms: e.rooms.iter().map(|r| r.to_string()).collect(),
                what: match &e.what {
                    What::Message {
                        event,
                        payload,
                        omit,
                        guard,
                    } => SavedWhat::Message {
                        event: event.to_string(),
                        payload: payload.clone(),
                        omit: omit.as_deref().map(str::to_owned),
                        guard: guard.as_deref().map(WireGuard::from),
                    },
                    What::Members { dest, join, guard } => SavedWhat::Members {
                        dest: dest.to_string(),
                        join: *join,
                        guard: guard.as_deref().map(WireGuard::from),
                    },
                },
            })
            .collect();
        let count = saved.len();
        let file = SavedLog {
            lost_upto,
            room_cuts: room_cuts
                .into_iter()
                .map(|(r, at)| (r.to_string(), at))
                .collect(),
            entries: saved,
        };
        let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        super::file::replace_file(path, bytes).await?;
        Ok(count)
    }

    /// Reads the log a previous process saved at `path` into this one's,
    /// and removes the file (a later crash must not find it). Call before
    /// serving, once the read rules are set: guarded entries need them.
    /// Returns how many entries were read.
    pub(crate) fn read_saved_log(&self, path: &Path) -> usize {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the saved replay log cannot be read");
                return 0;
            }
        };
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "the saved replay log cannot be removed; it is not read");
            return 0;
        }
        let saved: SavedLog = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the saved replay log cannot be read");
                return 0;
            }
        };
        let mut read = 0;
        for s in saved.entries {
            let what = match s.what {
                SavedWhat::Message {
                    event,
                    payload,
                    omit,
                    guard,
                } => What::Message {
                    event: Arc::from(event),
                    payload,
                    omit: omit.map(Arc::from),
                    guard: match self.guard_here(guard) {
                        Ok(g) => g.map(Arc::new),
                        Err(()) => continue,
                    },
                },
                SavedWhat::Members { dest, join, guard } => What::Members {
                    dest: Arc::from(dest),
                    join,
                    guard: match self.guard_here(guard) {
                        Ok(g) => g.map(Arc::new),
                        Err(()) => continue,
                    },
                },
            };
            self.log.observe(s.seq);
            let rooms = s.rooms.into_iter().map(Arc::from).collect();
            self.log.append(s.seq, rooms, what);
            read += 1;
        }
        // What the previous process's log held is all here, and nothing
        // was published between its end and this start.
        let rooms = saved.room_cuts.into_iter();
        self.log.restore_cuts(
            saved.lost_upto,
            rooms.map(|(r, at)| (Arc::from(r), at)).collect(),
        );
        read
    }
}
