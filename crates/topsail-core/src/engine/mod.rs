/*!
The blueprint actions as plain async functions over a [`Store`] and a
[`Publisher`]: the HTTP handlers, the socket bridge and app code all call
these, so every caller gets the same validation, transactions and pub-sub.

Each mutation runs in one transaction (read the previous record, write,
re-fetch the populated result), then commits, then publishes the effects
its plan lists. The actions are split by concern:

- `reads`: find, findOne, count, the populate action;
- `writes`: create, update, destroy;
- `links`: add, remove, replace and the collection storage under them;
- `read` and `loaded`: the statement that loads records with what they
  populate, and the rows it returns;
- `values`: what a client's values become (coercion, validation).

Keys are [`Pk`]s at this boundary, checked against the model's key type
once.
*/

mod links;
mod loaded;
mod read;
mod reads;
mod rules;
mod turns;
mod values;
mod writes;

use std::sync::Arc;

use crate::access::Rules;
use crate::criteria::PopulateQuery;
use crate::error::{Error, Result, UsageCode};
use crate::inflight::Inflight;
use crate::model::{AttrType, ModelDef};
use crate::pubsub::{Actor, Plan, Publisher};
use crate::record::Pk;
use crate::store::Store;
use crate::value::coerce_pk;

/// Engine settings (Sails' `blueprints.autoWatch` and `mirror`).
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// A socket `find` watches the model's class room.
    pub auto_watch: bool,
    /// Send the requesting socket its own messages too.
    pub mirror: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            auto_watch: true,
            mirror: false,
        }
    }
}

/// Runs blueprint actions against a store and publishes what they cause.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
    config: EngineConfig,
    writes: Inflight,
    rules: Arc<Rules>,
    /// Whose turn it is to publish, per record (see [`turns`]).
    turns: Arc<turns::Turns>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dialect", &self.store.dialect())
            .field("config", &self.config)
            .finish()
    }
}

impl Engine {
    /// An engine over `store`, publishing through `publisher`.
    pub fn new(store: Arc<dyn Store>, publisher: Arc<dyn Publisher>, config: EngineConfig) -> Self {
        Engine {
            store,
            publisher,
            config,
            writes: Inflight::new(),
            rules: Arc::new(Rules::new()),
            turns: Arc::default(),
        }
    }

    /// The same engine, holding clients to `rules` (see [`crate::access`]).
    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = Arc::new(rules);
        self
    }

    /// The access rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The writes running on tasks of their own (see
    /// [`Engine::detached_write`]), which a graceful shutdown waits for.
    pub fn writes(&self) -> &Inflight {
        &self.writes
    }

    /// Runs `write` (an action of this engine) on a task of its own, so it
    /// commits and publishes even when the caller is dropped (an HTTP
    /// client that went away), counted in [`Engine::writes`] until it ends.
    /// The caller waits for it as it would for `write`.
    pub async fn detached_write<F, T>(&self, write: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let guard = self.writes.enter();
        // The task stays under the caller's span (a request's trace).
        let write = tracing::Instrument::in_current_span(write);
        tokio::spawn(async move {
            let done = write.await;
            drop(guard);
            done
        })
        .await
        .unwrap_or_else(|failed| {
            let what = format!("a write stopped before it ended: {failed}");
            Err(Error::Store(crate::error::StoreError::Database(
                what.into(),
            )))
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The publisher.
    pub fn publisher(&self) -> &Arc<dyn Publisher> {
        &self.publisher
    }

    /// The settings.
    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Hands a plan's effects to the publisher (after the commit), and
    /// waits until they are carried out. `turn`, the changed record's
    /// turn, is let go once the publisher has taken them (see [`turns`]).
    async fn publish(&self, plan: Plan<'_>, turn: Option<turns::Turn<'_>>) {
        if plan.effects.is_empty() {
            return;
        }
        use tracing::Instrument;
        let span = tracing::debug_span!("publish", effects = plan.effects.len());
        async {
            let handed = self.publisher.queue(plan.effects).await;
            drop(turn);
            handed.await;
        }
        .instrument(span)
        .await
    }

    /// Waits for record `id` of `model` to be this write's turn to change
    /// and publish (see [`turns`]); taken before its transaction begins.
    async fn turn(&self, model: &ModelDef, id: &Pk) -> turns::Turn<'_> {
        self.turns.take(model, id).await
    }

    /// A new plan for a request made by `actor`.
    fn plan<'a>(&'a self, actor: &'a Actor) -> Plan<'a> {
        Plan::new(actor, self.config.mirror, &self.rules)
    }
}

/// The most keys one statement binds in an `IN` list. A list of ids from a
/// client (a replace, a create's collection) or of a parent's children (a
/// destroy) can be longer than a statement may bind (SQLite 32,766
/// parameters, PostgreSQL 65,535), so such lists are sent in chunks of
/// this size, inside the action's one transaction.
pub(crate) const KEYS_PER_STATEMENT: usize = 10_000;

/// A key given to the engine, in the form `model` stores it: an integer
/// key given as `"7"` is 7; one that cannot be is a usage error (`code`).
fn checked_key(model: &ModelDef, id: &Pk, code: UsageCode) -> Result<Pk> {
    match (model.pk_kind.attr_type(), id) {
        (AttrType::Integer, Pk::Int(_)) | (AttrType::String, Pk::Str(_)) => Ok(id.clone()),
        _ => coerce_pk(model.pk_kind, &id.to_json()).map_err(|e| {
            Error::usage(
                code,
                format!("Invalid primary key for `{}`: {e}", model.identity),
            )
        }),
    }
}

/// What a record is populated with by default (every association,
/// collections capped): what the writes answer with.
fn default_populates(model: &'static ModelDef) -> Vec<PopulateQuery> {
    model
        .assocs
        .iter()
        .map(PopulateQuery::default_for)
        .collect()
}
