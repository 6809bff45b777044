//! A single process's replay log, journaled to disk as it is written, so
//! the next process (after a deploy or a crash) reads it back (see
//! [`ReplayConfig::restart_file`](crate::ReplayConfig::restart_file)).
//!
//! Every log entry is appended to the journal *before* any socket is
//! handed the message (or a room's members change): what a socket may have
//! been sent is on disk, and what never reached the disk reached nobody.
//! So the next process, which reads the journal back before it serves,
//! holds every message its predecessor delivered in the window, and
//! nothing was delivered between the journal's end and its own start: a
//! stock client that comes back after a crash is given what it missed,
//! not `topsail:resync`.
//!
//! No `fsync` per entry: a process that crashes or is killed leaves what
//! it wrote in the kernel's page cache, which the next process reads. Only
//! the machine itself going down loses the journal's tail, and that is
//! noticed: the journal records the machine's boot (Linux's `boot_id`),
//! and one left open under another boot is not vouched for (its sockets
//! are told to fetch again). The journal is synced once, when it is closed
//! at a graceful shutdown, which marks it closed.
//!
//! Layout: a directory beside the restart file (`<file>.journal/`) with
//! one file per segment, named by the number after which the journal holds
//! every entry (`<after>.jsonl`, one JSON line per entry), and a `lock`
//! file one process holds while it writes. A segment gives way to the next
//! every quarter of the window (or quarter of `max_messages` entries), and
//! goes once all its entries are past the window or past the overall
//! bound, so the journal keeps about what the log keeps. The oldest
//! segment's name is how far back the journal is complete.
//!
//! A change commits before its messages are numbered and journaled, on the
//! publisher task, and a burst can hold many batches in its queue: a
//! process that dies then leaves committed changes whose messages reached
//! no one. So each batch is also journaled when it is queued (an
//! *intent*: its id and the rooms it concerns, right after the commit, on
//! the writer's task), and marked done once its entries are journaled. The
//! next process counts the rooms of every intent not done as lost: a
//! socket in one of them is told to fetch again, rather than replayed
//! without what it can no longer be given.
//!
//! What cannot be trusted is said, never papered over: a line that cannot
//! be read (other than the last one, which a crash may have cut short
//! before anyone was sent it) makes everything before the next line read
//! count as lost, and a journal that cannot be written is removed until
//! it can be again, so the next process knows it starts without one.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use topsail_core::pubsub::Guard;

use crate::guarded::WireGuard;
use crate::replay::{ReplayConfig, What, now_us};
use crate::sockets::Sockets;

/// Where the journal of a process with the restart file `restart_file`
/// lives.
pub(crate) fn dir_of(restart_file: &Path) -> PathBuf {
    let mut name = restart_file.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// A log entry as it is journaled (borrowed from the entry being written).
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    rooms: &'a [&'a str],
    what: Said<'a>,
}

#[derive(Serialize)]
enum Said<'a> {
    Message {
        event: &'a str,
        payload: &'a RawValue,
        omit: Option<&'a str>,
        guard: Option<WireGuard>,
    },
    Members {
        dest: &'a str,
        join: bool,
        guard: Option<WireGuard>,
    },
}

/// A batch queued (see the module's documentation): its id (this
/// journal's nonce and a count) and the rooms of its entries.
#[derive(Serialize)]
struct Intent<'a> {
    intent: (u64, u64),
    rooms: &'a [&'a str],
}

/// A batch whose entries are all journaled.
#[derive(Serialize)]
struct Done {
    done: (u64, u64),
}

/// A line as it is read back.
#[derive(Debug)]
enum ReadLine {
    Entry(Box<Saved>),
    Intent(ReadIntent),
    Done(ReadDone),
}

#[derive(Debug, Deserialize)]
struct ReadIntent {
    intent: (u64, u64),
    rooms: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ReadDone {
    done: (u64, u64),
}

impl ReadLine {
    /// Told apart by their first key, as they are written (serde's
    /// untagged enums cannot hold an entry's `RawValue`).
    fn parse(line: &[u8]) -> serde_json::Result<Self> {
        if line.starts_with(br#"{"intent":"#) {
            serde_json::from_slice(line).map(ReadLine::Intent)
        } else if line.starts_with(br#"{"done":"#) {
            serde_json::from_slice(line).map(ReadLine::Done)
        } else {
            serde_json::from_slice(line).map(ReadLine::Entry)
        }
    }
}

/// A log entry as it is read back (the same shape as [`Line`]).
#[derive(Debug, Deserialize)]
pub(crate) struct Saved {
    seq: u64,
    rooms: Vec<String>,
    what: SavedWhat,
}

#[derive(Debug, Deserialize)]
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

/// What the journal held when the process started, until
/// [`Sockets::read_journal`] takes it into the log.
#[derive(Debug)]
pub(crate) struct Found {
    /// The journal holds every entry after this number.
    after: u64,
    entries: Vec<Saved>,
    /// Entries up to this number may be missing (lines that could not be
    /// read); 0 when none.
    lost_upto: u64,
    /// The rooms of batches queued and never journaled whole.
    unfinished: Vec<String>,
}

/// What the journal in `dir` holds, read without its lock (a test looks
/// at the journal of a process still running).
#[cfg(test)]
pub(crate) fn peek(dir: &Path) -> Found {
    let mut found = Found::nothing();
    read_segments(&segments_in(dir).unwrap_or_default(), &mut found);
    found
}

impl Found {
    /// The rooms of batches queued and never journaled whole.
    #[cfg(test)]
    pub(crate) fn unfinished(&self) -> &[String] {
        &self.unfinished
    }

    /// How many entries it holds.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.entries.len()
    }

    fn nothing() -> Self {
        Found {
            after: now_us().saturating_sub(1),
            entries: Vec::new(),
            lost_upto: 0,
            unfinished: Vec::new(),
        }
    }
}

/// See the module's documentation.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    /// How long a segment takes entries before the next one begins.
    span: Duration,
    /// The most entries a segment takes.
    per_segment: usize,
    window_us: u64,
    max_entries: usize,
    /// This journal's part of an intent's id (see [`Intent`]).
    nonce: u64,
    intents: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Held while this process writes here (see [`Journal::open`]).
    lock: Option<File>,
    writing: Option<Segment>,
    /// The earlier segments still kept, oldest first.
    older: VecDeque<Kept>,
    /// The line being written (its buffer is reused).
    line: Vec<u8>,
    /// Writing failed: the journal was removed, and is begun again with
    /// the first entry written after this moment.
    failed_until: Option<Instant>,
    closed: bool,
    /// Told once: something was published after the journal closed.
    told_closed: bool,
}

#[derive(Debug)]
struct Segment {
    file: File,
    path: PathBuf,
    last: Option<u64>,
    entries: usize,
    opened: Instant,
}

#[derive(Debug)]
struct Kept {
    path: PathBuf,
    /// Its newest entry's number (or its name, when it has none).
    newest: u64,
    entries: usize,
}

/// This boot of the machine (Linux), to tell a journal left by a process
/// from one left by a machine that went down (see the module's
/// documentation).
fn this_boot() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Whether the journal in `dir` may have lost writes the page cache held:
/// left open (not closed at a shutdown) under another boot of the machine.
fn machine_went_down(dir: &Path) -> bool {
    let closed = dir.join(CLOSED).exists();
    let written_under = std::fs::read_to_string(dir.join(BOOT))
        .ok()
        .map(|s| s.trim().to_owned());
    !closed && written_under != this_boot()
}

/// The file naming the boot the journal was written under.
const BOOT: &str = "boot";
/// The file that says the journal was closed at a shutdown, and synced.
const CLOSED: &str = "closed";

fn segment_path(dir: &Path, after: u64) -> PathBuf {
    dir.join(format!("{after:020}.jsonl"))
}

/// The segments in `dir`, by name (the number they follow), oldest first.
fn segments_in(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let after = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(after) = after {
            found.push((after, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads the segments found, in order, into `found`; returns each one's
/// newest number and entry count.
fn read_segments(segments: &[(u64, PathBuf)], found: &mut Found) -> Vec<Kept> {
    let mut kept = Vec::with_capacity(segments.len());
    // A line that could not be read: what came before the next one read
    // may be missing.
    let mut unreadable = false;
    let mut open_intents: std::collections::HashMap<(u64, u64), Vec<String>> =
        std::collections::HashMap::new();
    for (i, (after, path)) in segments.iter().enumerate() {
        let last_segment = i + 1 == segments.len();
        let mut newest = *after;
        let mut entries = 0;
        match std::fs::read(path) {
            Ok(bytes) => {
                let mut lines = bytes.split(|b| *b == b'\n').peekable();
                while let Some(line) = lines.next() {
                    let complete = lines.peek().is_some();
                    if line.is_empty() {
                        continue;
                    }
                    match ReadLine::parse(line) {
                        Ok(ReadLine::Entry(saved)) => {
                            if std::mem::take(&mut unreadable) {
                                found.lost_upto = found.lost_upto.max(saved.seq.saturating_sub(1));
                            }
                            newest = newest.max(saved.seq);
                            entries += 1;
                            found.entries.push(*saved);
                        }
                        Ok(ReadLine::Intent(ReadIntent { intent, rooms })) => {
                            entries += 1;
                            open_intents.insert(intent, rooms);
                        }
                        Ok(ReadLine::Done(ReadDone { done })) => {
                            entries += 1;
                            open_intents.remove(&done);
                        }
                        // A crash cut this write short: it was never
                        // handed to anyone (that comes after the write).
                        Err(_) if !complete && last_segment => {
                            tracing::info!(path = %path.display(), "the journal's last entry was cut short by the end of the previous process; it was never sent");
                        }
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "a journal entry cannot be read; sockets that needed it will be told to fetch again");
                            unreadable = true;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "a journal segment cannot be read; sockets that needed it will be told to fetch again");
                unreadable = true;
            }
        }
        kept.push(Kept {
            path: path.clone(),
            newest,
            entries,
        });
    }
    if unreadable {
        // Nothing read after it: how far it went is unknown.
        found.lost_upto = now_us();
    }
    let mut unfinished: Vec<String> = open_intents.into_values().flatten().collect();
    unfinished.sort_unstable();
    unfinished.dedup();
    if !unfinished.is_empty() {
        tracing::warn!(
            rooms = unfinished.len(),
            "changes committed by the previous process never reached its sockets: the sockets of their rooms are told to fetch again"
        );
    }
    found.unfinished = unfinished;
    kept
}

impl Journal {
    /// Opens the journal in `dir` for this process: reads what earlier
    /// processes left there, and begins a segment for this one. `None`
    /// (logged) when it cannot: another process holds it, or the
    /// directory cannot be written; the log then begins at this start.
    pub(crate) fn open(dir: &Path, cfg: &ReplayConfig) -> (Option<Journal>, Found) {
        match Self::try_open(dir, cfg) {
            Ok(opened) => opened,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "the replay journal cannot be opened: a socket that comes back after a crash is told to fetch again");
                (None, Found::nothing())
            }
        }
    }

    fn try_open(dir: &Path, cfg: &ReplayConfig) -> std::io::Result<(Option<Journal>, Found)> {
        std::fs::create_dir_all(dir)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::error!(dir = %dir.display(), "another process writes this replay journal (two processes share a restart file): this one keeps none");
                return Ok((None, Found::nothing()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let segments = segments_in(dir)?;
        let mut found = Found::nothing();
        let older = read_segments(&segments, &mut found);
        if let Some((first, _)) = segments.first() {
            found.after = *first;
            if machine_went_down(dir) {
                tracing::warn!(dir = %dir.display(), "the replay journal was left open by a machine that went down: its end may be lost, and sockets that come back are told to fetch again");
                found.lost_upto = now_us();
            }
        }
        match std::fs::remove_file(dir.join(CLOSED)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::write(dir.join(BOOT), this_boot().unwrap_or_default())?;
        // This process's entries follow the last one read (nothing was
        // published between that one and this start).
        let after = older.iter().map(|k| k.newest).max().unwrap_or(found.after);
        let journal = Journal {
            dir: dir.to_owned(),
            span: (cfg.window / 4).max(Duration::from_secs(1)),
            per_segment: (cfg.max_messages / 4).max(1),
            window_us: u64::try_from(cfg.window.as_micros()).unwrap_or(u64::MAX),
            max_entries: cfg.max_messages.max(1),
            nonce: random_nonce(),
            intents: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new(State {
                lock: Some(lock),
                writing: Some(Segment::begin(dir, after)?),
                older: older.into(),
                line: Vec::with_capacity(1024),
                failed_until: None,
                closed: false,
                told_closed: false,
            }),
        };
        journal.let_go(&mut journal.lock());
        Ok((Some(journal), found))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Journals that a batch concerning `rooms` was queued; returns its id,
    /// for [`Journal::done`] (`None` when it concerns none).
    pub(crate) fn intend(&self, rooms: &[&str]) -> Option<(u64, u64)> {
        if rooms.is_empty() {
            return None;
        }
        let n = self
            .intents
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let intent = (self.nonce, n);
        self.write(&Intent { intent, rooms }, None);
        Some(intent)
    }

    /// Journals that batch `intent`'s entries are all journaled.
    pub(crate) fn done(&self, intent: (u64, u64)) {
        self.write(&Done { done: intent }, None);
    }

    /// Journals message `seq` to `rooms`, before anyone is sent it.
    pub(crate) fn message(
        &self,
        seq: u64,
        rooms: &[&str],
        event: &str,
        payload: &RawValue,
        omit: Option<&str>,
        guard: Option<&Guard>,
    ) {
        let line = Line {
            seq,
            rooms,
            what: Said::Message {
                event,
                payload,
                omit,
                guard: guard.map(WireGuard::from),
            },
        };
        self.write(&line, Some(seq));
    }

    /// Journals that the members of `source` joined or left `dest`
    /// (numbered `seq`), before they do.
    pub(crate) fn members(
        &self,
        seq: u64,
        source: &str,
        dest: &str,
        join: bool,
        guard: Option<&Guard>,
    ) {
        let line = Line {
            seq,
            rooms: &[source],
            what: Said::Members {
                dest,
                join,
                guard: guard.map(WireGuard::from),
            },
        };
        self.write(&line, Some(seq));
    }

    // A write to the page cache, on the publisher task: a few
    // microseconds per entry (docs/BENCHMARKS.md), against a message's
    // delivery to its sockets; handing it to a thread would add a wake-up
    // per entry before the delivery could begin.
    // `seq`: an entry's number (`None` for an intent or its end).
    fn write(&self, line: &impl Serialize, seq: Option<u64>) {
        let mut state = self.lock();
        if state.closed {
            if !std::mem::replace(&mut state.told_closed, true) {
                tracing::warn!(
                    "a message was published after the replay journal closed (at shutdown): a socket that comes back to the next process may not be given it"
                );
            }
            return;
        }
        if let Some(until) = state.failed_until {
            // Begun again with an entry: it is complete from there on.
            let Some(seq) = seq.filter(|_| Instant::now() >= until) else {
                return;
            };
            match Segment::begin(&self.dir, seq.saturating_sub(1)) {
                Ok(segment) => {
                    tracing::info!(dir = %self.dir.display(), "the replay journal is written again");
                    state.failed_until = None;
                    state.writing = Some(segment);
                }
                Err(e) => return self.fail(&mut state, e),
            }
        }
        if let Err(e) = self.roll_if_due(&mut state) {
            return self.fail(&mut state, e);
        }
        let State {
            line: buf, writing, ..
        } = &mut *state;
        let Some(segment) = writing else {
            return;
        };
        buf.clear();
        if let Err(e) = serde_json::to_writer(&mut *buf, line) {
            tracing::error!(error = %e, "a replay journal entry cannot be written");
            return self.fail(&mut state, std::io::Error::other(e));
        }
        // Payloads are compact JSON (`crate::replay::to_raw`): no line
        // break but this one.
        buf.push(b'\n');
        match segment.file.write_all(buf) {
            Ok(()) => {
                segment.last = seq.or(segment.last);
                segment.entries += 1;
            }
            Err(e) => self.fail(&mut state, e),
        }
    }

    /// Begins the next segment once this one has taken its span or its
    /// share of entries, and lets go of those no longer needed.
    fn roll_if_due(&self, state: &mut State) -> std::io::Result<()> {
        let Some(segment) = &mut state.writing else {
            return Ok(());
        };
        let due = segment.opened.elapsed() >= self.span || segment.entries >= self.per_segment;
        if !due {
            return Ok(());
        }
        let Some(last) = segment.last else {
            // Nothing in it: the same name would do.
            segment.opened = Instant::now();
            return Ok(());
        };
        let next = Segment::begin(&self.dir, last)?;
        if let Some(done) = state.writing.replace(next) {
            state.older.push_back(Kept {
                path: done.path,
                newest: last,
                entries: done.entries,
            });
        }
        self.let_go(state);
        Ok(())
    }

    /// Removes the oldest segments whose every entry is past the window,
    /// or past the overall bound counting the newer ones.
    fn let_go(&self, state: &mut State) {
        let oldest_kept = now_us().saturating_sub(self.window_us);
        let mut total: usize = state.older.iter().map(|k| k.entries).sum::<usize>()
            + state.writing.as_ref().map_or(0, |s| s.entries);
        while let Some(front) = state.older.front() {
            let past_window = front.newest < oldest_kept;
            let past_bound = total - front.entries >= self.max_entries;
            if !past_window && !past_bound {
                break;
            }
            if let Err(e) = std::fs::remove_file(&front.path) {
                tracing::warn!(path = %front.path.display(), error = %e, "an old replay journal segment cannot be removed");
                break;
            }
            total -= front.entries;
            state.older.pop_front();
        }
    }

    /// Writing failed: the journal is removed (the next process must not
    /// take it for complete), and begun again after a span.
    fn fail(&self, state: &mut State, error: std::io::Error) {
        tracing::error!(dir = %self.dir.display(), error = %error, "the replay journal cannot be written: it is dropped for now, and a socket that comes back after a crash is told to fetch again");
        let paths = state
            .writing
            .take()
            .map(|s| s.path)
            .into_iter()
            .chain(state.older.drain(..).map(|k| k.path));
        for path in paths {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::error!(path = %path.display(), error = %e, "a replay journal segment that may be incomplete cannot be removed");
            }
        }
        state.failed_until = Some(Instant::now() + self.span);
    }

    /// Closes the journal at a graceful shutdown, once every message was
    /// delivered: syncs it to disk, marks it closed (it survives the
    /// machine going down then) and lets go of its lock.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let writing = state.writing.take().map(|s| s.path);
        let paths = state.older.iter().map(|k| k.path.clone()).chain(writing);
        let synced = paths
            .map(|path| {
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| (path, e))
            })
            .collect::<Result<Vec<()>, _>>()
            .and_then(|_| {
                std::fs::write(self.dir.join(CLOSED), b"").map_err(|e| (self.dir.join(CLOSED), e))
            });
        if let Err((path, e)) = synced {
            tracing::warn!(path = %path.display(), error = %e, "the replay journal could not be synced at shutdown: it is trusted after a process restart only");
        }
        state.lock = None;
    }
}

/// A number no other process's journal uses for its intents (random; the
/// clock, which only rises between processes, should the system refuse).
fn random_nonce() -> u64 {
    getrandom::u64().unwrap_or_else(|_| now_us())
}

impl Segment {
    /// A new segment holding what comes after `after` (a file of that
    /// name left empty by an earlier process is begun again).
    fn begin(dir: &Path, after: u64) -> std::io::Result<Self> {
        let path = segment_path(dir, after);
        Ok(Segment {
            file: File::create(&path)?,
            path,
            last: None,
            entries: 0,
            opened: Instant::now(),
        })
    }
}

impl Sockets {
    /// Journals this node's log from now on (see [`Journal`]).
    pub(crate) fn journal_to(mut self, journal: Journal) -> Self {
        self.journal = Some(Arc::new(journal));
        self
    }

    /// Takes what the journal held at start into the log. Call before
    /// serving, once the read rules are set: guarded entries need them.
    /// Returns how many entries were read.
    pub(crate) fn read_journal(&self, found: Found) -> usize {
        // What the journal holds is all that was published after its
        // oldest segment began, until this process started.
        self.log.known_after(found.after);
        let mut read = 0;
        for s in found.entries {
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
        if found.lost_upto > 0 {
            self.log.lose_upto(found.lost_upto);
        }
        // Committed, and sent to no one: whoever is in those rooms missed it.
        self.log
            .lose_rooms(found.unfinished.into_iter().map(Arc::from), now_us());
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A directory of its own under the system's temporary one.
    fn fresh_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "topsail-journal-{name}-{}-{}",
            std::process::id(),
            now_us()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn config(window: Duration, max_messages: usize) -> ReplayConfig {
        ReplayConfig {
            window,
            max_messages,
            ..ReplayConfig::default()
        }
    }

    fn minute() -> ReplayConfig {
        config(Duration::from_secs(60), 1_000)
    }

    /// A fresh journal with [`minute`]'s bounds: its directory, the
    /// journal, and the number after which it is complete.
    fn begun(name: &str) -> (PathBuf, Journal, u64) {
        let dir = fresh_dir(name);
        let (journal, found) = Journal::open(&dir, &minute());
        (dir, journal.expect("opened"), found.after)
    }

    fn pet(journal: &Journal, seq: u64) {
        let payload = crate::replay::to_raw(&json!({"verb": "created", "id": seq}));
        journal.message(
            seq,
            &["sails_model_create_pet"],
            "pet",
            &payload,
            None,
            None,
        );
    }

    fn seqs(found: &Found) -> Vec<u64> {
        found.entries.iter().map(|s| s.seq).collect()
    }

    fn segment_files(dir: &Path) -> usize {
        segments_in(dir).unwrap().len()
    }

    /// What one process journaled (without closing: a crash) the next one
    /// reads back whole, and knows it holds everything after the
    /// journal's start.
    #[test]
    fn what_a_process_journaled_the_next_one_reads_back_after_a_crash() {
        let dir = fresh_dir("crash");
        let (journal, found) = Journal::open(&dir, &minute());
        let journal = journal.expect("opened");
        assert!(found.entries.is_empty());
        let start = found.after;
        let first: Vec<u64> = (1..=3).map(|i| start + i).collect();
        for s in &first {
            pet(&journal, *s);
        }
        journal.members(start + 4, "sails_model_create_pet", "pet#7", true, None);
        drop(journal);

        let (journal, found) = Journal::open(&dir, &minute());
        assert_eq!(seqs(&found), [start + 1, start + 2, start + 3, start + 4]);
        assert_eq!(found.after, start, "complete since the first process began");
        assert_eq!(found.lost_upto, 0);
        match &found.entries[0].what {
            SavedWhat::Message { event, payload, .. } => {
                assert_eq!(event, "pet");
                assert_eq!(
                    payload.get(),
                    format!(r#"{{"verb":"created","id":{}}}"#, start + 1)
                );
            }
            other @ SavedWhat::Members { .. } => panic!("{other:?}"),
        }
        match &found.entries[3].what {
            SavedWhat::Members { dest, join, .. } => {
                assert_eq!((dest.as_str(), *join), ("pet#7", true))
            }
            other @ SavedWhat::Message { .. } => panic!("{other:?}"),
        }
        // A third process reads the first's entries and the second's.
        let journal = journal.unwrap();
        pet(&journal, start + 5);
        drop(journal);
        let (_, found) = Journal::open(&dir, &minute());
        assert_eq!(seqs(&found).last(), Some(&(start + 5)));
        assert_eq!(found.after, start);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn newest_segment(dir: &Path) -> PathBuf {
        segments_in(dir).unwrap().pop().unwrap().1
    }

    fn append_bytes(path: &Path, bytes: &[u8]) {
        let mut file = File::options().append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
    }

    /// A last line cut short by a crash was never sent: nothing is lost.
    #[test]
    fn a_last_entry_cut_short_by_a_crash_costs_nothing() {
        let (dir, journal, start) = begun("torn");
        pet(&journal, start + 1);
        drop(journal);
        append_bytes(&newest_segment(&dir), br#"{"seq":99,"rooms":["sails_mo"#);

        let (_, found) = Journal::open(&dir, &minute());
        assert_eq!(seqs(&found), [start + 1]);
        assert_eq!(found.lost_upto, 0, "nobody was sent it");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A line that cannot be read within the journal makes what came
    /// before the next one read count as lost; at the very end of it
    /// (whole, so not cut short), everything until now.
    #[test]
    fn an_unreadable_entry_counts_as_lost_up_to_the_next_one_read() {
        let (dir, journal, start) = begun("garbled");
        pet(&journal, start + 1);
        drop(journal);
        append_bytes(&newest_segment(&dir), b"{garbled}\n");
        let (journal, _) = Journal::open(&dir, &minute());
        let journal = journal.unwrap();
        pet(&journal, start + 10);
        drop(journal);

        let (_, found) = Journal::open(&dir, &minute());
        assert_eq!(seqs(&found), [start + 1, start + 10]);
        assert_eq!(found.lost_upto, start + 9);

        append_bytes(&newest_segment(&dir), b"{garbled}\n");
        let before = now_us();
        let (_, found) = Journal::open(&dir, &minute());
        assert!(found.lost_upto >= before, "{} < {before}", found.lost_upto);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Segments give way by count, and go once the entries after them
    /// reach the overall bound or all theirs are past the window; the
    /// oldest one left says how far back the journal is complete.
    #[test]
    fn old_segments_go_past_the_bound_and_the_window() {
        let dir = fresh_dir("bounds");
        // Four entries a segment; at most 16 kept.
        let (journal, found) = Journal::open(&dir, &config(Duration::from_secs(60), 16));
        let (journal, start) = (journal.unwrap(), found.after);
        for i in 1..=40 {
            pet(&journal, start + i);
        }
        drop(journal);
        let (_, found) = Journal::open(&dir, &config(Duration::from_secs(60), 16));
        let read = seqs(&found);
        assert!((16..=20).contains(&read.len()), "{read:?}");
        assert_eq!(read.last(), Some(&(start + 40)));
        assert_eq!(
            found.after,
            read[0] - 1,
            "complete after the last segment let go"
        );
        assert!(segment_files(&dir) <= 6, "{}", segment_files(&dir));
        let _ = std::fs::remove_dir_all(&dir);

        let dir = fresh_dir("window");
        let (journal, _) = Journal::open(&dir, &config(Duration::from_secs(60), 1_000));
        let journal = journal.unwrap();
        let long_ago = now_us() - 600_000_000;
        for i in 0..250 {
            pet(&journal, long_ago + i);
        }
        let recent = now_us();
        for i in 0..250 {
            pet(&journal, recent + i);
        }
        drop(journal);
        let (_, found) = Journal::open(&dir, &config(Duration::from_secs(60), 1_000));
        assert!(
            seqs(&found).iter().all(|s| *s >= recent),
            "the segments of ten minutes ago are gone"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two processes on one restart file: the second keeps no journal
    /// rather than interleave with the first's.
    #[test]
    fn a_second_process_on_the_same_journal_keeps_none() {
        let dir = fresh_dir("twice");
        let (first, _) = Journal::open(&dir, &minute());
        assert!(first.is_some());
        let (second, found) = Journal::open(&dir, &minute());
        assert!(second.is_none(), "held by the first");
        assert!(found.entries.is_empty());
        first.unwrap().close();
        let (third, _) = Journal::open(&dir, &minute());
        assert!(third.is_some(), "closed: let go");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A write that fails (a full disk) removes the journal, so the next
    /// process does not take it for complete, and it is begun again a
    /// span later, complete from the first entry it then takes.
    #[test]
    fn a_journal_that_cannot_be_written_is_removed_then_begun_again() {
        let dir = fresh_dir("full");
        let cfg = config(Duration::from_secs(4), 1_000);
        let (journal, found) = Journal::open(&dir, &cfg);
        let (journal, start) = (journal.unwrap(), found.after);
        pet(&journal, start + 1);
        journal.lock().writing.as_mut().unwrap().file =
            File::options().write(true).open("/dev/full").unwrap();
        pet(&journal, start + 2);
        assert_eq!(segment_files(&dir), 0, "removed");
        pet(&journal, start + 3);
        assert_eq!(segment_files(&dir), 0, "not within the span");
        std::thread::sleep(Duration::from_millis(1_100));
        pet(&journal, start + 4);
        drop(journal);
        let (_, found) = Journal::open(&dir, &cfg);
        assert_eq!(seqs(&found), [start + 4]);
        assert_eq!(
            found.after,
            start + 3,
            "complete from its new beginning only"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A journal left open under another boot of the machine (it went
    /// down, taking the page cache) is not vouched for; one closed at a
    /// shutdown (and so synced) is.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_journal_left_open_by_a_machine_that_went_down_is_not_vouched_for() {
        let (dir, journal, start) = begun("reboot");
        pet(&journal, start + 1);
        drop(journal);
        std::fs::write(dir.join(BOOT), "another boot").unwrap();
        let before = now_us();
        let (journal, found) = Journal::open(&dir, &minute());
        assert_eq!(seqs(&found), [start + 1]);
        assert!(found.lost_upto >= before, "{} < {before}", found.lost_upto);

        let (_, found) = {
            drop(journal);
            Journal::open(&dir, &minute())
        };
        assert_eq!(
            found.lost_upto, 0,
            "left open under this boot: a process crashed"
        );

        let (journal, _) = Journal::open(&dir, &minute());
        journal.unwrap().close();
        std::fs::write(dir.join(BOOT), "another boot").unwrap();
        let (_, found) = Journal::open(&dir, &minute());
        assert_eq!(found.lost_upto, 0, "closed and synced at a shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A batch queued and never journaled whole (the process died with it
    /// in the publisher's queue) leaves its rooms counted as lost; one
    /// journaled whole, nothing.
    #[test]
    fn a_batch_queued_and_never_journaled_whole_leaves_its_rooms_lost() {
        let (dir, journal, start) = begun("intents");
        assert_eq!(journal.intend(&[]), None, "a batch that concerns no room");
        let whole = journal.intend(&["sails_model_create_user"]).unwrap();
        let stuck = journal.intend(&["sails_model_user_1", "sails_model_create_pet"]);
        pet(&journal, start + 1);
        journal.done(whole);
        assert!(stuck.is_some());
        drop(journal);

        let (journal, found) = Journal::open(&dir, &minute());
        assert_eq!(seqs(&found), [start + 1]);
        assert_eq!(
            found.unfinished,
            ["sails_model_create_pet", "sails_model_user_1"]
        );
        assert_eq!(found.lost_upto, 0, "the entries themselves are whole");
        // Read once: the next process's intents are its own.
        let again = journal
            .unwrap()
            .intend(&["sails_model_create_pet"])
            .unwrap();
        assert_ne!(again.0, whole.0, "another process's nonce");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
