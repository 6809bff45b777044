/*!
The access rules (see [`crate::access`]) where the engine applies them: a
client's reads are filtered in SQL, its writes checked against the record
inside the write's transaction. App code (`Actor::Server`) is not limited.
*/

use serde_json::Value;

use crate::access::Access;
use crate::criteria::Query;
use crate::error::{Error, Result};
use crate::etag::Precondition;
use crate::model::ModelDef;
use crate::pubsub::Actor;
use crate::query::Filter;
use crate::record::{Pk, Record};
use crate::store::Conn;
use crate::value::SqlValue;

use super::Engine;
use super::read::load_rows;

impl Engine {
    /// A write's answer: `record` without what its actor may not see: its
    /// private attributes, and the populated records it may not read (a
    /// to-one is null, a collection leaves them out), as a read would
    /// answer them.
    pub(super) fn answer(
        &self,
        model: &'static ModelDef,
        mut record: Record,
        actor: &Actor,
    ) -> Record {
        if !actor.is_client() {
            return record;
        }
        if let Some(principal) = actor.principal() {
            for assoc in model.assocs.iter() {
                let target = assoc.target();
                if self.rules.read_rule(target).is_none() {
                    continue;
                }
                let access = self.rules.readable(target, principal);
                match record.get_mut(assoc.name) {
                    Some(Value::Array(items)) => items.retain(|item| match item {
                        Value::Object(r) => access.allows(target, r),
                        _ => true,
                    }),
                    Some(slot @ Value::Object(_)) => {
                        if let Value::Object(r) = &*slot
                            && !access.allows(target, r)
                        {
                            *slot = Value::Null;
                        }
                    }
                    _ => {}
                }
            }
        }
        crate::visibility::strip_private(model, &mut record);
        record
    }

    /// 412 with the record as `actor` may read it now, when its tag (that
    /// of a findOne's answer) is not one `pre` names. `current` is the
    /// record populated by default, as the transaction locked it.
    pub(super) fn check_precondition(
        &self,
        model: &'static ModelDef,
        current: &Record,
        actor: &Actor,
        pre: &Precondition,
    ) -> Result<()> {
        if !matches!(pre, Precondition::OneOf(_)) {
            return Ok(());
        }
        let shown = self.answer(model, current.clone(), actor);
        if pre.holds(|| crate::etag::of_record(&shown)) {
            Ok(())
        } else {
            Err(Error::PreconditionFailed {
                current: Box::new(shown),
            })
        }
    }

    /// What `actor` may read of `model`, when a rule limits it.
    fn read_limit(&self, model: &ModelDef, actor: &Actor) -> Option<Access> {
        let principal = actor.principal()?;
        self.rules.read_rule(model)?;
        Some(self.rules.readable(model, principal))
    }

    /// The SQL filter of what `actor` may read of `model`.
    pub(super) fn read_filter(&self, model: &'static ModelDef, actor: &Actor) -> Result<Filter> {
        match self.read_limit(model, actor) {
            Some(access) => access.to_filter(model),
            None => Ok(Filter::True),
        }
    }

    /// `q` limited to what `actor` may read: its records, and the records
    /// each association it populates brings in.
    pub(super) fn restrict(
        &self,
        model: &'static ModelDef,
        q: &mut Query,
        actor: &Actor,
    ) -> Result<()> {
        if actor.principal().is_none() || self.rules.is_empty() {
            return Ok(());
        }
        let own = self.read_filter(model, actor)?;
        q.filter = std::mem::replace(&mut q.filter, Filter::True).and(own);
        for p in &mut q.populate {
            let theirs = self.read_filter(p.assoc.target(), actor)?;
            p.filter = std::mem::replace(&mut p.filter, Filter::True).and(theirs);
        }
        Ok(())
    }

    /// Whether `actor` may watch `model` (be told of records created): not
    /// when it may read none of them.
    pub(super) fn may_watch(&self, model: &ModelDef, actor: &Actor) -> bool {
        self.read_limit(model, actor) != Some(Access::Nothing)
    }

    /// Whether `actor` may change `record` of `model`: 404 when it may not
    /// read it (its existence must not leak), 403 when it may read but not
    /// change it.
    pub(super) fn check_write(
        &self,
        model: &'static ModelDef,
        record: &Record,
        actor: &Actor,
    ) -> Result<()> {
        let Some(principal) = actor.principal() else {
            return Ok(());
        };
        if !self.rules.readable(model, principal).allows(model, record) {
            return Err(Error::NotFound);
        }
        self.check_result(model, record, actor)
    }

    /// Whether what a write makes of a record is still one `actor` may
    /// change (a note given to someone else is not): 403 otherwise.
    pub(super) fn check_result(
        &self,
        model: &'static ModelDef,
        record: &Record,
        actor: &Actor,
    ) -> Result<()> {
        match actor.principal() {
            Some(p) if !self.rules.writable(model, p).allows(model, record) => {
                Err(Error::Forbidden)
            }
            _ => Ok(()),
        }
    }

    /// The create rule of `model` on a client's values.
    pub(super) fn on_create(
        &self,
        model: &ModelDef,
        values: &mut Record,
        actor: &Actor,
    ) -> Result<()> {
        match actor.principal() {
            Some(p) => self
                .rules
                .on_create_of(model, p, values)
                .map_err(|_| Error::Forbidden),
            None => Ok(()),
        }
    }

    /// Of `ids` (children a collection action links or unlinks), those
    /// `actor` may read; 403 when one of them it may not change. Unreadable
    /// children count as missing, as unknown ids do.
    pub(super) async fn writable_children(
        &self,
        conn: &mut dyn Conn,
        target: &'static ModelDef,
        ids: Vec<Pk>,
        actor: &Actor,
    ) -> Result<Vec<Pk>> {
        if actor.principal().is_none() || !self.rules.governs(target) || ids.is_empty() {
            return Ok(ids);
        }
        let mut readable = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(super::KEYS_PER_STATEMENT) {
            let keys = chunk.iter().map(SqlValue::from_pk).collect();
            let q = Query {
                filter: Filter::any_of(target.pk_column().into(), keys),
                limit: None,
                skip: 0,
                sort: Vec::new(),
                select: None,
                omit: Vec::new(),
                populate: Vec::new(),
            };
            for record in load_rows(conn, target, &q, false).await?.into_records() {
                match self.check_write(target, &record, actor) {
                    Ok(()) => readable.extend(target.key_of(&record)),
                    Err(Error::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let found: std::collections::HashSet<Pk> = readable.into_iter().collect();
        Ok(ids.into_iter().filter(|k| found.contains(k)).collect())
    }
}

/// 428 when `model` requires `If-Match` of clients and `pre` is none.
pub(super) fn require_precondition(
    model: &ModelDef,
    actor: &Actor,
    pre: &Precondition,
) -> Result<()> {
    if model.require_if_match && actor.is_client() && !pre.is_some() {
        return Err(Error::PreconditionRequired);
    }
    Ok(())
}
