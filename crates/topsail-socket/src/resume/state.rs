//! A resume's walk through the replay log: which messages a socket is sent,
//! which rooms it ends up in, and which rooms' gaps the log no longer holds.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};
use topsail_core::pubsub::{Guard, RoomName};

use crate::replay::{Entry, What};

/// A message replayed to one socket.
#[derive(Debug)]
pub(crate) struct Replayed {
    pub(crate) seq: u64,
    pub(crate) event: Arc<str>,
    payload: Shown,
}

/// What a socket is shown of a replayed message.
#[derive(Debug)]
enum Shown {
    /// The entry's own payload.
    Whole(Arc<Entry>),
    /// One the read rules redacted for this socket.
    Redacted(Value),
}

impl Replayed {
    /// The message as JSON text: the entry's, serialized once for every
    /// socket it is replayed to, or this socket's redacted one.
    pub(crate) fn raw(&self) -> std::borrow::Cow<'_, serde_json::value::RawValue> {
        match &self.payload {
            Shown::Whole(entry) => match entry.raw_payload() {
                Some(raw) => std::borrow::Cow::Borrowed(raw),
                None => std::borrow::Cow::Owned(crate::replay::to_raw(&Value::Null)),
            },
            Shown::Redacted(v) => std::borrow::Cow::Owned(crate::replay::to_raw(v)),
        }
    }
}

/// A resume in progress: the rooms the socket will be in, how far the log
/// has been read, and the rooms whose log lost part of the gap.
#[derive(Debug)]
pub(crate) struct Resuming {
    pub(crate) rooms: HashSet<String>,
    pub(crate) cursor: u64,
    pub(crate) gaps: HashSet<String>,
    /// The ids the client had: their own messages were not sent to them.
    old: Vec<Arc<str>>,
    /// Whether `topsail:resync` went out.
    pub(super) resync_sent: bool,
    /// Where it started, to go through the log again (see
    /// [`Resuming::rewind`]).
    start: (HashSet<String>, u64),
    /// Nothing before this was for the client (see [`Parked::floor`]).
    floor: u64,
    /// The messages sent so far, by number.
    sent: HashSet<u64>,
}

impl Resuming {
    /// Starts from `rooms`, after `since`, for a client that was `old`;
    /// `lost_after` says which rooms' logs lost part of the gap.
    pub(crate) fn new(
        rooms: HashSet<String>,
        since: u64,
        old: Vec<Arc<str>>,
        lost_after: impl Fn(&str, u64) -> bool,
    ) -> Self {
        let gaps = rooms
            .iter()
            .filter(|r| lost_after(r, since))
            .cloned()
            .collect();
        Resuming {
            floor: 0,
            start: (rooms.clone(), since),
            rooms,
            cursor: since,
            gaps,
            old,
            resync_sent: false,
            sent: HashSet::new(),
        }
    }

    /// Starts again from the beginning, `margin` earlier, keeping what was
    /// sent: in a cluster another node's message can come in after later
    /// ones, under a lower number than the cursor reached.
    pub(crate) fn rewind(&mut self, margin: u64) {
        self.rooms = self.start.0.clone();
        self.cursor = self.start.1.saturating_sub(margin).max(self.floor);
    }

    /// Nothing before `floor` was for the client: a rewind stops there.
    pub(crate) fn floored(mut self, floor: u64) -> Self {
        self.floor = floor.min(self.start.1);
        self
    }

    /// How many messages were sent.
    pub(crate) fn replayed(&self) -> u64 {
        self.sent.len() as u64
    }

    /// Message `seq` reached the socket's queue.
    pub(crate) fn mark_sent(&mut self, seq: u64) {
        self.sent.insert(seq);
    }

    /// Goes through `entries` (in order, after the cursor): what the
    /// socket is sent of them, and the rooms it joins or leaves on the
    /// way. `seen_by` is the read rules' answer for the socket (as
    /// [`Guard::seen_by`]).
    pub(crate) fn step(
        &mut self,
        entries: &[Arc<Entry>],
        seen_by: impl Fn(&Guard) -> Option<u64>,
        lost_after: impl Fn(&str, u64) -> bool,
    ) -> Vec<Replayed> {
        let mut out: Vec<Replayed> = Vec::new();
        for entry in entries {
            if entry.seq <= self.cursor {
                continue;
            }
            self.cursor = entry.seq;
            let Some(room) = entry.rooms.iter().find(|r| self.rooms.contains(&***r)) else {
                continue;
            };
            match &entry.what {
                What::Members { dest, join, guard } => {
                    let admitted = guard.as_deref().is_none_or(|g| seen_by(g).is_some());
                    if *join && admitted {
                        if self.rooms.insert(dest.to_string()) && lost_after(dest, entry.seq) {
                            self.gaps.insert(dest.to_string());
                        }
                    } else if !*join {
                        self.rooms.remove(&**dest);
                    }
                }
                What::Message {
                    event,
                    payload,
                    omit,
                    guard,
                } => {
                    if self.gaps.contains(&**room)
                        || omit.as_ref().is_some_and(|o| self.old.contains(o))
                        || self.sent.contains(&entry.seq)
                    {
                        continue;
                    }
                    let payload = match guard.as_deref() {
                        None => Shown::Whole(entry.clone()),
                        Some(g) => match seen_by(g) {
                            None => {
                                if g.evict {
                                    self.rooms.remove(&**room);
                                }
                                continue;
                            }
                            Some(0) => Shown::Whole(entry.clone()),
                            Some(hidden) => {
                                // Read back from its text: redacting is
                                // per socket, and only for a replay.
                                let whole =
                                    serde_json::from_str(payload.get()).unwrap_or(Value::Null);
                                Shown::Redacted(g.redact(&whole, hidden))
                            }
                        },
                    };
                    if let Some(dest) = guard.as_ref().and_then(|g| g.join.as_ref()) {
                        self.rooms.insert(dest.clone());
                    }
                    out.push(Replayed {
                        seq: entry.seq,
                        event: event.clone(),
                        payload,
                    });
                }
            }
        }
        out
    }

    /// The `topsail:resync` message for the rooms whose log lost part of
    /// the gap; `None` when none did.
    pub(crate) fn resync(&self, reason: &str) -> Option<Value> {
        if self.gaps.is_empty() {
            return None;
        }
        Some(resync_message(reason, self.cursor, &self.gaps))
    }
}

/// What a client must fetch again: the records it was subscribed to, the
/// models it watched, and the app's rooms, from their room names.
pub(crate) fn resync_message<'a>(
    reason: &str,
    since: u64,
    rooms: impl IntoIterator<Item = &'a String>,
) -> Value {
    let mut records: Vec<Value> = Vec::new();
    let mut models: Vec<&str> = Vec::new();
    let mut others: Vec<&str> = Vec::new();
    let mut everyone = false;
    for room in rooms {
        match RoomName::parse(room) {
            _ if room == crate::replay::EVERYONE => everyone = true,
            Some(RoomName::Class { model }) => models.push(model),
            Some(RoomName::Record { model, id }) => {
                let id = id
                    .parse::<i64>()
                    .map_or_else(|_| Value::from(id), Value::from);
                records.push(json!({ "model": model, "id": id }));
            }
            None => others.push(room),
        }
    }
    models.sort_unstable();
    others.sort_unstable();
    records.sort_by_key(|r| r.to_string());
    json!({
        "reason": reason,
        "since": since,
        "records": records,
        "models": models,
        "rooms": others,
        // Blasts (to every socket) were lost too.
        "everyone": everyone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{Log, ReplayConfig};

    fn msg(log: &Log, room: &str, omit: Option<&str>) -> u64 {
        let seq = log.next_seq();
        log.append(
            seq,
            vec![Arc::from(room)],
            What::Message {
                event: Arc::from("pet"),
                payload: crate::replay::to_raw(&json!({ "verb": "updated", "n": seq })),
                omit: omit.map(Arc::from),
                guard: None,
            },
        );
        seq
    }

    fn introduce(log: &Log, source: &str, dest: &str) -> u64 {
        let seq = log.next_seq();
        log.append(
            seq,
            vec![Arc::from(source)],
            What::Members {
                dest: Arc::from(dest),
                join: true,
                guard: None,
            },
        );
        seq
    }

    fn rooms(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_resume_replays_its_rooms_in_order_and_follows_introductions() {
        let log = Log::new(ReplayConfig::default());
        let before = msg(&log, "sails_model_pet_1:pet", None);
        let a = msg(&log, "sails_model_pet_1:pet", None);
        msg(&log, "sails_model_pet_9:pet", None);
        let own = msg(&log, "sails_model_pet_1:pet", Some("old"));
        introduce(&log, "sails_model_create_pet", "sails_model_pet_2:pet");
        let b = msg(&log, "sails_model_pet_2:pet", None);
        let c = msg(&log, "sails_model_pet_1:pet", None);
        let mut state = Resuming::new(
            rooms(&["sails_model_pet_1:pet", "sails_model_create_pet"]),
            before,
            vec![Arc::from("old")],
            |r, s| log.lost_after(r, s),
        );
        let out = state.step(
            &log.after(before, 100),
            |_| Some(0),
            |r, s| log.lost_after(r, s),
        );
        let seqs: Vec<u64> = out.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [a, b, c], "not pet 9's, not its own ({own})");
        assert!(state.rooms.contains("sails_model_pet_2:pet"), "introduced");
        assert!(state.resync("gap").is_none());
    }

    #[test]
    fn a_room_whose_log_lost_part_of_the_gap_is_named_not_replayed() {
        let log = Log::new(ReplayConfig {
            per_room: 2,
            ..ReplayConfig::default()
        });
        let since = log.next_seq();
        for _ in 0..3 {
            msg(&log, "sails_model_pet_7:pet", None);
        }
        let kept = msg(&log, "lobby", None);
        let mut state = Resuming::new(
            rooms(&["sails_model_pet_7:pet", "lobby", "sails_model_create_pet"]),
            since,
            Vec::new(),
            |r, s| log.lost_after(r, s),
        );
        let out = state.step(
            &log.after(since, 100),
            |_| Some(0),
            |r, s| log.lost_after(r, s),
        );
        assert_eq!(out.iter().map(|m| m.seq).collect::<Vec<_>>(), [kept]);
        let resync = state.resync("gap").expect("a gap");
        assert_eq!(resync["records"], json!([{ "model": "pet", "id": 7 }]));
        assert_eq!(resync["models"], json!([]), "the class room lost nothing");
        assert!(
            state.rooms.contains("sails_model_pet_7:pet"),
            "still joined"
        );
    }

    #[test]
    fn resync_names_records_models_and_app_rooms() {
        let gaps = [
            "sails_model_create_user".to_owned(),
            "sails_model_pet_abc:pet".to_owned(),
            "lobby".to_owned(),
        ];
        let m = resync_message("gap", 5, &gaps);
        assert_eq!(m["records"], json!([{ "model": "pet", "id": "abc" }]));
        assert_eq!(m["models"], json!(["user"]));
        assert_eq!(m["rooms"], json!(["lobby"]));
    }
}
