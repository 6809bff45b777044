/*!
Messages that wait for a slow reader.

A socket's outgoing queue ([`RealtimeConfig::send_queue`](crate::RealtimeConfig::send_queue))
holds what its connection has not written yet. A burst fills it for a
reader that reads fine: the backlog another node relays once Redis is back,
a thousand creates in a second. Cutting such a socket at once made its
client reconnect for nothing. Instead, a message its full queue refuses
waits here, and what is published for that socket meanwhile waits behind
it, so the order holds; the lane hands them to the queue as it drains.
Nobody waits for a slow reader: its lane goes on with its other sockets.

A socket is cut (see `crate::connection`) when it took nothing for
[`SlowReaders::grace`] or when more than [`SlowReaders::backlog`] messages
wait for it: a reader that stopped, or one that can never catch up. What
waited for it is counted as missed
([`Sockets::missed_by_full_queues`](crate::Sockets::missed_by_full_queues));
its client reconnects and takes it back from the replay log (see
`crate::resume`), from `close_doubt` before the first message its queue
refused: while messages wait for a socket, `Cuts` holds that message's
number for its disconnect to find, however the socket goes.

Each lane keeps the backlogs of its own sockets: nothing here is shared or
locked, and a lane with none pays nothing per message.
*/

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::socket::Sid;
use tokio::sync::oneshot;

use crate::backend::{Cuts, Sent, count_missed_full, send_to};
use crate::guarded::BySid;
use crate::lanes::Frame;

/// How long, and for how many messages, a socket whose outgoing queue is
/// full is waited for before it is cut (see `crate::backlog`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowReaders {
    /// The longest a socket may take nothing while messages wait for it.
    /// Default 2 s.
    pub grace: Duration,
    /// The most messages that may wait for one socket beyond its outgoing
    /// queue; one more cuts it. Default 1,024. A waiting message costs the
    /// socket a pointer: its text is shared with every other recipient.
    /// So what waits is bounded by this per socket, and in all by what the
    /// node publishes within `grace`.
    pub backlog: usize,
}

impl Default for SlowReaders {
    fn default() -> Self {
        SlowReaders {
            grace: Duration::from_secs(2),
            backlog: 1_024,
        }
    }
}

/// What waits for one socket.
struct Waiting {
    frames: VecDeque<Arc<Frame>>,
    /// When it last took a message (or began to wait).
    took_at: Instant,
    /// Dropped, which wakes their receivers, once nothing waits any more.
    quiet: Vec<oneshot::Sender<()>>,
}

/// The backlogs of one lane's sockets.
pub(crate) struct Backlogs {
    waiting: HashMap<Sid, Waiting, BySid>,
    limits: SlowReaders,
    /// How many sockets have messages waiting, for the publisher task
    /// (a lane with any is not idle, see `crate::lanes`).
    count: Arc<AtomicUsize>,
}

/// How a socket's queue took what waited for it.
enum Taken {
    All,
    Some,
    Gone,
}

impl Backlogs {
    pub(crate) fn new(limits: SlowReaders, count: Arc<AtomicUsize>) -> Self {
        Backlogs {
            waiting: HashMap::with_hasher(BySid),
            limits,
            count,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Takes out of `sockets` those that have messages waiting, and puts
    /// `frame` behind those: they get it in its turn.
    pub(crate) fn queue_behind<A: Adapter>(
        &mut self,
        sockets: &mut Vec<Sid>,
        frame: &Arc<Frame>,
        io: &SocketIo<A>,
        cuts: &Cuts,
    ) {
        if self.waiting.is_empty() {
            return;
        }
        let mut over = Vec::new();
        sockets.retain(|socket| match self.waiting.get_mut(socket) {
            Some(waiting) => {
                waiting.frames.push_back(frame.clone());
                if waiting.frames.len() > self.limits.backlog {
                    over.push(*socket);
                }
                false
            }
            None => true,
        });
        self.cut_all(over, io, cuts);
    }

    /// `frame` waits for `sockets`, whose queues refused it.
    pub(crate) fn hold<A: Adapter>(
        &mut self,
        sockets: Vec<Sid>,
        frame: &Arc<Frame>,
        io: &SocketIo<A>,
        cuts: &Cuts,
    ) {
        if sockets.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut over = Vec::new();
        for socket in sockets {
            let waiting = self.waiting.entry(socket).or_insert_with(|| {
                // Should it go, its client is replayed from this message.
                cuts.waiting(socket, frame.parts().2);
                Waiting {
                    frames: VecDeque::new(),
                    took_at: now,
                    quiet: Vec::new(),
                }
            });
            waiting.frames.push_back(frame.clone());
            if waiting.frames.len() > self.limits.backlog {
                over.push(socket);
            }
        }
        self.cut_all(over, io, cuts);
    }

    /// Hands what waits to the queues that have room again, in order, and
    /// cuts the sockets that took nothing for the grace.
    pub(crate) fn drain<A: Adapter>(&mut self, io: &SocketIo<A>, cuts: &Cuts) {
        let now = Instant::now();
        let grace = self.limits.grace;
        self.waiting.retain(
            |&socket, waiting| match waiting.take_what_fits(io, socket, now) {
                Taken::All => {
                    cuts.done_waiting(socket, grace);
                    false
                }
                Taken::Gone => {
                    // Once its disconnect has been seen (it parked the
                    // socket with what waited), nothing needs the mark.
                    if io.get_socket(socket).is_none() {
                        cuts.gone(socket);
                    }
                    false
                }
                Taken::Some if now.duration_since(waiting.took_at) > grace => {
                    cut(io, socket, waiting, cuts);
                    false
                }
                Taken::Some => true,
            },
        );
        self.recount();
    }

    /// Drops `quiet` once nothing waits for `socket` (at once when
    /// nothing does).
    pub(crate) fn when_quiet(&mut self, socket: Sid, quiet: oneshot::Sender<()>) {
        if let Some(waiting) = self.waiting.get_mut(&socket) {
            waiting.quiet.push(quiet);
        }
    }

    /// Publishes how many sockets wait (see `count`).
    fn recount(&self) {
        self.count.store(self.waiting.len(), Ordering::Release);
    }

    fn cut_all<A: Adapter>(&mut self, sockets: Vec<Sid>, io: &SocketIo<A>, cuts: &Cuts) {
        for socket in sockets {
            if let Some(waiting) = self.waiting.remove(&socket) {
                cut(io, socket, &waiting, cuts);
            }
        }
        self.recount();
    }
}

impl Waiting {
    fn take_what_fits<A: Adapter>(&mut self, io: &SocketIo<A>, socket: Sid, now: Instant) -> Taken {
        let Some(socket) = io.get_socket(socket) else {
            return Taken::Gone;
        };
        while let Some(frame) = self.frames.front() {
            match send_to(&socket, frame.parts()) {
                Sent::Queued => {
                    self.frames.pop_front();
                    self.took_at = now;
                }
                Sent::Full => return Taken::Some,
                // Closed: its client comes back and resumes from the
                // replay log.
                Sent::Gone => return Taken::Gone,
            }
        }
        Taken::All
    }
}

/// Cuts `socket`'s connection; what waited for it is missed.
fn cut<A: Adapter>(io: &SocketIo<A>, socket: Sid, waiting: &Waiting, cuts: &Cuts) {
    let oldest = waiting.frames.front().map(|f| f.parts());
    count_missed_full(oldest.map_or("", |o| o.0), waiting.frames.len() as u64);
    match io.get_socket(socket) {
        Some(socket) => cuts.cut(&socket, oldest.and_then(|o| o.2)),
        // Its disconnect has been seen already.
        None => cuts.gone(socket),
    }
}
