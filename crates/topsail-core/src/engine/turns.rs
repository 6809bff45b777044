/*!
The messages about one record published in the order its changes
committed.

Two writes to one record commit one after the other (the second waits for
the row's lock), but each then hands its messages to the publisher on a
task of its own, and the second could be queued first: a subscriber would
be left with the older state. So a write to an existing record takes the
record's *turn* before its transaction begins, and keeps it until the
publisher has taken its messages ([`Publisher::queue`](crate::Publisher::queue)),
not until they are delivered. A create takes none: nobody can change a
record before its create has answered.

Turns are a fixed set of locks, a record's chosen by hashing its model and
key: two records that share one wait for each other's transaction, rarely
(with 16 writes in flight, a write finds its turn taken by another record
about one time in 17), rather than the engine keeping a lock per record.
A write takes one turn, before any lock of the database's, so turns and row
locks cannot wait for each other in a circle.
*/

use std::hash::{Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

use crate::model::ModelDef;
use crate::record::Pk;

/// How many turns there are.
const TURNS: usize = 256;

/// A record's turn, held (see the module's documentation).
pub(crate) type Turn<'a> = MutexGuard<'a, ()>;

/// See the module's documentation.
pub(crate) struct Turns(Box<[Mutex<()>]>);

impl Default for Turns {
    fn default() -> Self {
        Turns((0..TURNS).map(|_| Mutex::new(())).collect())
    }
}

impl Turns {
    /// Waits for record `id` of `model` to be this write's turn.
    pub(crate) async fn take(&self, model: &ModelDef, id: &Pk) -> Turn<'_> {
        let mut hasher = std::hash::DefaultHasher::new();
        model.identity.hash(&mut hasher);
        id.hash(&mut hasher);
        let at = usize::try_from(hasher.finish() % TURNS as u64).unwrap_or(0);
        self.0[at].lock().await
    }
}
