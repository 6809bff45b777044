/*!
The writes: `create`, `update` and `destroy`. Each runs its lifecycle
callbacks and its statements (in one transaction where it takes more than
one), and publishes its messages only once the change has committed.
*/

use std::borrow::Cow;

use serde_json::Value;

use crate::criteria::{Populate, PopulateQuery, normalize_populate};
use crate::error::{Error, Result, StoreError, UsageCode};
use crate::etag::Precondition;
use crate::model::{AssocDef, AssocKind, ModelDef};
use crate::pubsub::{Actor, Linked};
use crate::query::{Delete, Filter, Ident, Insert, Update};
use crate::record::{Pk, Record};
use crate::store::Conn;
use crate::value::SqlValue;

use super::links::{link_children, replace_children};
use super::read::{self, fetch_locked, refetch};
use super::{Engine, checked_key, default_populates, values};

impl Engine {
    /// `create`: inserts a record (and links its collections), returns it
    /// populated per `populate`.
    pub async fn create(
        &self,
        model: &'static ModelDef,
        values: &Value,
        populate: &Populate,
        actor: &Actor,
    ) -> Result<Record> {
        let mut given = settable(model, values, actor, UsageCode::InvalidNewRecord)?;
        if self.rules().governs(model) {
            self.on_create(model, given.to_mut(), actor)?;
        }
        let (mut row, collections) = values::new_record(model, &given)?;
        (model.hooks.before_create)(&mut row)
            .map_err(|m| Error::usage(UsageCode::InvalidNewRecord, m))?;
        values::recheck(model, &mut row, UsageCode::InvalidNewRecord)?;
        self.check_result(model, &row, actor)?;
        let populate = normalize_populate(model, populate)?;
        let (id, record, links) = self.insert(model, &row, &collections, &populate).await?;
        (model.hooks.after_create)(&record);

        let mut plan = self.plan(actor);
        plan.create(model, &id, &row, &record, &links);
        self.publish(plan, None).await;
        Ok(self.answer(model, record, actor))
    }

    /// Inserts `row` and links `collections`: the new key, the record
    /// populated per `populate`, and what linking did.
    async fn insert(
        &self,
        model: &'static ModelDef,
        row: &Record,
        collections: &values::Collections,
        populate: &[PopulateQuery],
    ) -> Result<(Pk, Record, Vec<Linked>)> {
        let insert = Insert {
            table: model.table.into(),
            values: row_values(model, row),
            returning: read::row_column_names(model),
            ignore_conflict: false,
        };
        if collections.is_empty() {
            // One INSERT is atomic on its own: no transaction, and the row
            // comes back with it, so only to-one populates need a query.
            let mut conn = self.store.conn().await?;
            let (id, mut record) = insert_row(conn.as_mut(), model, &insert).await?;
            read::populate_new(conn.as_mut(), model, &mut record, populate).await?;
            return Ok((id, record, Vec::new()));
        }
        let mut tx = self.store.begin().await?;
        let (id, _) = insert_row(tx.as_mut(), model, &insert).await?;
        let mut links = Vec::with_capacity(collections.len());
        for (assoc, ids) in collections {
            links.push(link_children(tx.as_mut(), model, assoc, &id, ids).await?);
        }
        let record = refetch(tx.as_mut(), model, &id, populate.to_vec()).await?;
        tx.commit().await.map_err(|e| unique_violation(model, e))?;
        Ok((id, record, links))
    }

    /// `update`: sets `values` on record `id`, returns it populated.
    pub async fn update(
        &self,
        model: &'static ModelDef,
        id: &Pk,
        values: &Value,
        actor: &Actor,
    ) -> Result<Record> {
        self.update_if(model, id, values, actor, &Precondition::None)
            .await
    }

    /// [`update`](Engine::update) under `pre` (a client's `If-Match`),
    /// checked on the record as the transaction locked it.
    pub async fn update_if(
        &self,
        model: &'static ModelDef,
        id: &Pk,
        values: &Value,
        actor: &Actor,
        pre: &Precondition,
    ) -> Result<Record> {
        super::rules::require_precondition(model, actor, pre)?;
        let id = checked_key(model, id, UsageCode::InvalidCriteria)?;
        let given = settable(model, values, actor, UsageCode::InvalidValuesToSet)?;
        let (mut set, collections) = values::values_to_set(model, &id, &given)?;
        (model.hooks.before_update)(&mut set)
            .map_err(|m| Error::usage(UsageCode::InvalidValuesToSet, m))?;
        values::recheck(model, &mut set, UsageCode::InvalidValuesToSet)?;
        let populate = default_populates(model);

        let turn = self.turn(model, &id).await;
        let mut tx = self.store.begin().await?;
        let previous = fetch_locked(tx.as_mut(), model, &id, populate.clone()).await?;
        self.check_write(model, &previous, actor)?;
        self.check_precondition(model, &previous, actor, pre)?;
        let columns: Vec<_> = row_values(model, &set)
            .into_iter()
            .filter(|(c, _)| c != model.pk_column())
            .collect();
        if !columns.is_empty() {
            let update = Update {
                table: model.table.into(),
                set: columns,
                filter: pk_filter(model, &id),
            };
            tx.update(&update)
                .await
                .map_err(|e| unique_violation(model, e))?;
        }
        // A collection among the values replaces it, silently: an update
        // publishes no collection messages (as in Sails).
        for (assoc, ids) in &collections {
            replace_children(tx.as_mut(), model, assoc, &id, ids).await?;
        }
        let record = refetch(tx.as_mut(), model, &id, populate).await?;
        // Dropping the transaction rolls the change back.
        self.check_result(model, &record, actor)?;
        tx.commit().await.map_err(|e| unique_violation(model, e))?;
        (model.hooks.after_update)(&record);

        let mut plan = self.plan(actor);
        plan.update(model, &id, set, &record, previous);
        self.publish(plan, Some(turn)).await;
        Ok(self.answer(model, record, actor))
    }

    /// `destroy`: deletes record `id` (unlinking its collections), returns
    /// it as it was, populated.
    pub async fn destroy(
        &self,
        model: &'static ModelDef,
        id: &Pk,
        actor: &Actor,
    ) -> Result<Record> {
        self.destroy_if(model, id, actor, &Precondition::None).await
    }

    /// [`destroy`](Engine::destroy) under `pre` (a client's `If-Match`),
    /// checked on the record as the transaction locked it.
    pub async fn destroy_if(
        &self,
        model: &'static ModelDef,
        id: &Pk,
        actor: &Actor,
        pre: &Precondition,
    ) -> Result<Record> {
        super::rules::require_precondition(model, actor, pre)?;
        let id = checked_key(model, id, UsageCode::InvalidCriteria)?;
        let populate = default_populates(model);
        let turn = self.turn(model, &id).await;
        let mut tx = self.store.begin().await?;
        let previous = fetch_locked(tx.as_mut(), model, &id, populate).await?;
        self.check_write(model, &previous, actor)?;
        self.check_precondition(model, &previous, actor, pre)?;
        (model.hooks.before_destroy)(&previous)
            .map_err(|m| Error::usage(UsageCode::InvalidRequest, m))?;
        let mut unlinked: Vec<(&'static AssocDef, Vec<Pk>)> = Vec::new();
        for assoc in model.assocs.iter().filter(|a| a.is_collection()) {
            let replaced = replace_children(tx.as_mut(), model, assoc, &id, &[]).await?;
            unlinked.push((assoc, replaced.removed));
        }
        tx.delete(&Delete {
            table: model.table.into(),
            filter: pk_filter(model, &id),
        })
        .await?;
        tx.commit().await?;
        (model.hooks.after_destroy)(&previous);

        let mut plan = self.plan(actor);
        plan.destroy(model, &id, &previous, &unlinked);
        self.publish(plan, Some(turn)).await;
        Ok(self.answer(model, previous, actor))
    }
}

/// The values a client gave, less what it may not set: private and
/// read-only attributes are dropped like unknown ones (refused on a strict
/// model). App code sets anything.
fn settable<'v>(
    model: &ModelDef,
    values: &'v Value,
    actor: &Actor,
    code: UsageCode,
) -> Result<Cow<'v, serde_json::Map<String, Value>>> {
    let given = as_values(values)?;
    if !actor.is_client() || !model.attrs.iter().any(|a| a.private || a.read_only) {
        return Ok(Cow::Borrowed(given));
    }
    let mut own = given.clone();
    for name in crate::visibility::client_values(model, &mut own) {
        values::unknown(model, &name, code)?;
    }
    Ok(Cow::Owned(own))
}

/// The values of a create or an update, which must be a dictionary.
fn as_values(v: &Value) -> Result<&serde_json::Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        Error::usage(
            UsageCode::InvalidRequest,
            format!("Expected a dictionary of values, got {v}"),
        )
    })
}

/// A unique violation as the `E_UNIQUE` of `model`: the store names the
/// columns of the violated key, which are mapped to attribute names.
fn unique_violation(model: &'static ModelDef, e: StoreError) -> Error {
    match e {
        StoreError::Unique { columns } => Error::Unique {
            model: model.identity,
            attrs: columns
                .into_iter()
                .map(|c| match model.attrs.iter().find(|a| a.column == c) {
                    Some(a) => a.name.to_owned(),
                    None => c,
                })
                .collect(),
        },
        other => Error::Store(other),
    }
}

/// Column values of a normalised row (attributes and to-one keys).
fn row_values(model: &ModelDef, row: &Record) -> Vec<(Ident, SqlValue)> {
    let mut out = Vec::with_capacity(row.len());
    for (key, v) in row {
        if let Some(a) = model.attrs.iter().find(|a| a.name == key) {
            out.push((a.column.into(), SqlValue::from_json(a.ty, v)));
        } else if let Some(a) = model
            .assocs
            .iter()
            .find(|a| a.name == key && matches!(a.kind, AssocKind::One))
        {
            out.push((
                a.column.into(),
                SqlValue::from_json(a.target().pk_kind.attr_type(), v),
            ));
        }
    }
    out
}

fn pk_filter(model: &ModelDef, id: &Pk) -> Filter {
    Filter::eq(model.pk_column().into(), SqlValue::from_pk(id))
}

/// Inserts a row and reads it back from `RETURNING`: its key and record.
async fn insert_row(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    insert: &Insert,
) -> Result<(Pk, Record)> {
    let no_row = || Error::Store(StoreError::Database("the insert returned no row".into()));
    let inserted = conn
        .insert(insert)
        .await
        .map_err(|e| unique_violation(model, e))?
        .ok_or_else(no_row)?;
    let record = read::row_record(model, inserted);
    let id = model.key_of(&record).ok_or_else(no_row)?;
    Ok((id, record))
}
