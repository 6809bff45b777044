/*!
The blueprint actions as plain async functions over a [`Store`] and a
[`Publisher`]: the HTTP handlers, the socket bridge and app code all call
these, so every caller gets the same validation, transactions and pub-sub.

Each mutation runs in one transaction (read the previous record, write,
re-fetch the populated result), then commits, then publishes its effects.
*/

mod loaded;
mod read;
mod values;

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use crate::criteria::{Criteria, Populate, PopulateQuery, Query};
use crate::error::{Error, Result, StoreError, UsageCode};
use crate::model::{
    AssocDef, AssocKind, AttrType, CollectionStorage, ModelDef, collection_storage,
};
use crate::pubsub::{Actor, Plan, Publisher};
use crate::query::{Delete, Filter, Insert, Update};
use crate::record::{Pk, Record};
use crate::store::{Conn, Store};
use crate::value::{SqlValue, coerce_pk};

use loaded::Loaded;
use read::{dedup_keep_order, existing_with, link_pk, linked_ids, load_rows, load_single, pk_of};

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
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dialect", &self.store.dialect())
            .field("config", &self.config)
            .finish()
    }
}

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

fn unique(model: &'static ModelDef, e: StoreError) -> Error {
    match e {
        StoreError::Unique { columns } => {
            let attrs = columns
                .iter()
                .map(|c| {
                    model
                        .attrs
                        .iter()
                        .find(|a| {
                            a.column == c
                                || format!("{}_{}_key", model.table, a.column) == *c
                                || (a.name == model.pk && format!("{}_pkey", model.table) == *c)
                        })
                        .map(|a| a.name.to_owned())
                        .unwrap_or_else(|| c.clone())
                })
                .collect();
            Error::Unique {
                model: model.identity,
                attrs,
            }
        }
        other => Error::Store(other),
    }
}

fn as_values(v: &Value) -> Result<&serde_json::Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        Error::usage(
            UsageCode::InvalidRequest,
            format!("Expected a dictionary of values, got {v}"),
        )
    })
}

impl Engine {
    /// An engine over `store`, publishing through `publisher`.
    pub fn new(store: Arc<dyn Store>, publisher: Arc<dyn Publisher>, config: EngineConfig) -> Self {
        Engine {
            store,
            publisher,
            config,
        }
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

    async fn publish(&self, plan: Plan<'_>) {
        if !plan.effects.is_empty() {
            self.publisher.publish(plan.effects).await;
        }
    }

    fn plan<'a>(&self, actor: &'a Actor) -> Plan<'a> {
        Plan::new(actor, self.config.mirror)
    }

    /// `subscribeDeep` (spec 4.3) for every loaded record: watch every
    /// associated model, subscribe to every populated associated record.
    fn subscribe_deep(&self, plan: &mut Plan<'_>, model: &'static ModelDef, loaded: &Loaded) {
        let per_assoc: Vec<Option<Vec<Vec<Pk>>>> = model
            .assocs
            .iter()
            .map(|a| loaded.populated_ids(a.name))
            .collect();
        for i in 0..loaded.len() {
            for (assoc, ids) in model.assocs.iter().zip(&per_assoc) {
                let target = assoc.target();
                if self.config.auto_watch {
                    plan.watch(target);
                }
                if let Some(ids) = ids.as_ref().and_then(|ids| ids.get(i)) {
                    plan.subscribe(target, ids);
                }
            }
        }
    }

    /// `find`: records matching `criteria`. A socket actor is subscribed to
    /// them and (with autoWatch) watches the model.
    pub async fn find(
        &self,
        model: &'static ModelDef,
        criteria: &Criteria,
        actor: &Actor,
    ) -> Result<Vec<Record>> {
        Ok(self.read(model, criteria, actor).await?.into_records())
    }

    /// [`find`](Engine::find) answered as the JSON array a blueprint sends,
    /// written straight from the rows the store returned (no record maps in
    /// between).
    pub async fn find_json(
        &self,
        model: &'static ModelDef,
        criteria: &Criteria,
        actor: &Actor,
    ) -> Result<Vec<u8>> {
        Ok(self.read(model, criteria, actor).await?.to_json())
    }

    async fn read(
        &self,
        model: &'static ModelDef,
        criteria: &Criteria,
        actor: &Actor,
    ) -> Result<Loaded> {
        let q = criteria.normalize(model)?;
        let mut conn = self.store.conn().await?;
        let loaded = load_rows(conn.as_mut(), model, &q, false).await?;
        drop(conn);
        if actor.is_socket() {
            let mut plan = self.plan(actor);
            plan.subscribe(model, &loaded.ids());
            if self.config.auto_watch {
                plan.watch(model);
            }
            self.subscribe_deep(&mut plan, model, &loaded);
            self.publish(plan).await;
        }
        Ok(loaded)
    }

    /// Counts the records matching `criteria`'s `where`.
    pub async fn count(&self, model: &'static ModelDef, criteria: &Criteria) -> Result<u64> {
        let q = criteria.normalize(model)?;
        if q.filter == Filter::False {
            return Ok(0);
        }
        let mut sel = crate::query::Select::new(model.table.into(), Vec::new());
        sel.filter = q.filter;
        let mut conn = self.store.conn().await?;
        Ok(conn.count(&sel).await?)
    }

    /// `findOne`: the record with primary key `id` (only `select`, `omit`
    /// and `populate` of `criteria` apply).
    pub async fn find_one(
        &self,
        model: &'static ModelDef,
        id: &Pk,
        criteria: &Criteria,
        actor: &Actor,
    ) -> Result<Record> {
        let loaded = self.read_one(model, id, criteria, actor).await?;
        loaded.into_records().pop().ok_or(Error::NotFound)
    }

    /// [`find_one`](Engine::find_one) answered as the JSON object a
    /// blueprint sends, written straight from the row.
    pub async fn find_one_json(
        &self,
        model: &'static ModelDef,
        id: &Pk,
        criteria: &Criteria,
        actor: &Actor,
    ) -> Result<Vec<u8>> {
        let loaded = self.read_one(model, id, criteria, actor).await?;
        loaded.first_to_json().ok_or(Error::NotFound)
    }

    async fn read_one(
        &self,
        model: &'static ModelDef,
        id: &Pk,
        criteria: &Criteria,
        actor: &Actor,
    ) -> Result<Loaded> {
        let id = checked_key(model, id, UsageCode::InvalidCriteria)?;
        let mut q = Criteria {
            where_: None,
            limit: None,
            skip: None,
            sort: None,
            ..criteria.clone()
        }
        .normalize(model)?;
        q.filter = Query::by_pk(model, &id, Vec::new()).filter;
        let loaded = self.load_one(model, &q).await?;
        self.subscribe_one(model, &id, &loaded, actor).await;
        Ok(loaded)
    }

    /// Loads the one record `q` selects; 404 if there is none.
    async fn load_one(&self, model: &'static ModelDef, q: &Query) -> Result<Loaded> {
        let mut conn = self.store.conn().await?;
        let loaded = load_rows(conn.as_mut(), model, q, false).await?;
        if loaded.is_empty() {
            return Err(Error::NotFound);
        }
        Ok(loaded)
    }

    /// A socket reading one record is subscribed to it and, deeply, to what
    /// it populated (`findOne` and `populate`).
    async fn subscribe_one(
        &self,
        model: &'static ModelDef,
        id: &Pk,
        loaded: &Loaded,
        actor: &Actor,
    ) {
        if actor.is_socket() {
            let mut plan = self.plan(actor);
            plan.subscribe(model, [id]);
            self.subscribe_deep(&mut plan, model, loaded);
            self.publish(plan).await;
        }
    }

    /// `populate`: the records (collection) or record (to-one) associated
    /// with `parent` through `alias`, filtered by `criteria`.
    pub async fn populate(
        &self,
        model: &'static ModelDef,
        parent: &Pk,
        alias: &str,
        criteria: &Criteria,
        actor: &Actor,
    ) -> Result<Value> {
        let parent = checked_key(model, parent, UsageCode::InvalidCriteria)?;
        let assoc = model.assoc(alias).ok_or(Error::NotFound)?;
        let sub = if assoc.is_collection() {
            let mut c = criteria.clone();
            c.populate = Populate::Nothing;
            if c.limit.is_none() {
                c.limit = Some(Value::from(crate::criteria::DEFAULT_LIMIT));
            }
            c
        } else {
            // A to-one keeps only the projection (spec 2.3).
            Criteria {
                select: criteria.select.clone(),
                omit: criteria.omit.clone(),
                ..Criteria::new()
            }
        };
        let q = Criteria::new()
            .populate(Populate::Only(vec![(alias.to_owned(), sub)]))
            .normalize(model)?;
        let q = Query {
            filter: Query::by_pk(model, &parent, Vec::new()).filter,
            ..q
        };
        let loaded = self.load_one(model, &q).await?;
        let value = match loaded.first_field(alias) {
            Some(v) if !v.is_null() => v,
            _ => return Err(Error::NotFound),
        };
        self.subscribe_one(model, &parent, &loaded, actor).await;
        Ok(value)
    }

    /// `create`: inserts a record (and links its collections), returns it
    /// populated per `populate`.
    pub async fn create(
        &self,
        model: &'static ModelDef,
        values: &Value,
        populate: &Populate,
        actor: &Actor,
    ) -> Result<Record> {
        let (mut row, collections) = values::new_record(model, as_values(values)?)?;
        (model.hooks.before_create)(&mut row)
            .map_err(|m| Error::usage(UsageCode::InvalidNewRecord, m))?;
        values::recheck(model, &mut row, UsageCode::InvalidNewRecord)?;
        let pq = Criteria::new()
            .populate(populate.clone())
            .normalize(model)?
            .populate;

        let insert = Insert {
            table: model.table.into(),
            values: row_values(model, &row),
            returning: read::row_column_names(model),
            ignore_conflict: false,
        };
        let (id, record, links) = if collections.is_empty() {
            // One INSERT is atomic on its own: no transaction, and the row
            // comes back with it, so only to-one populates need a query.
            let mut conn = self.store.conn().await?;
            let (id, mut record) = insert_row(conn.as_mut(), model, &insert).await?;
            read::populate_new(conn.as_mut(), model, &mut record, &pq).await?;
            (id, record, Vec::new())
        } else {
            let mut tx = self.store.begin().await?;
            let (id, _) = insert_row(tx.as_mut(), model, &insert).await?;
            let mut links = Vec::new();
            for (assoc, ids) in &collections {
                links.push(link_children(tx.as_mut(), model, assoc, &id, ids).await?);
            }
            let record = refetch(tx.as_mut(), model, &id, pq).await?;
            tx.commit().await.map_err(|e| unique(model, e))?;
            (id, record, links)
        };
        (model.hooks.after_create)(&record);

        let mut plan = self.plan(actor);
        plan.subscribe(model, [&id]);
        plan.introduce(model, &id);
        // Reverse messages first, collections before to-one keys (the key
        // order of a Waterline record), then `created`, then the children
        // taken from other parents (spec 4.5).
        for link in &links {
            match model.inverse_of(link.assoc) {
                Some(inv) if matches!(inv.kind, AssocKind::One) => {
                    for child in &link.linked {
                        plan.updated_reverse(link.assoc.target(), child, inv.name, id.to_json());
                    }
                }
                Some(inv) => {
                    for child in &link.linked {
                        plan.added_to(link.assoc.target(), child, inv.name, &id);
                    }
                }
                None => {}
            }
        }
        for assoc in model
            .assocs
            .iter()
            .filter(|a| matches!(a.kind, AssocKind::One))
        {
            if let (Some(parent), Some(inv)) = (
                row.get(assoc.name).and_then(Pk::from_json),
                model.inverse_of(assoc),
            ) {
                plan.added_to(assoc.target(), &parent, inv.name, &id);
            }
        }
        plan.created(model, &id, Value::Object(record.clone()));
        for link in &links {
            for (child, old) in &link.stolen {
                plan.removed_from(model, old, link.assoc.name, child);
            }
        }
        self.publish(plan).await;
        Ok(record)
    }

    /// `update`: sets `values` on record `id`, returns it populated.
    pub async fn update(
        &self,
        model: &'static ModelDef,
        id: &Pk,
        values: &Value,
        actor: &Actor,
    ) -> Result<Record> {
        let id = checked_key(model, id, UsageCode::InvalidCriteria)?;
        let (mut data, collections) = values::values_to_set(model, &id, as_values(values)?)?;
        (model.hooks.before_update)(&mut data)
            .map_err(|m| Error::usage(UsageCode::InvalidValuesToSet, m))?;
        values::recheck(model, &mut data, UsageCode::InvalidValuesToSet)?;
        let pq = Criteria::new().normalize(model)?.populate;

        let mut tx = self.store.begin().await?;
        let previous = fetch_locked(tx.as_mut(), model, &id, pq.clone()).await?;
        let set: Vec<_> = row_values(model, &data)
            .into_iter()
            .filter(|(c, _)| c != model.pk_column())
            .collect();
        if !set.is_empty() {
            let upd = Update {
                table: model.table.into(),
                set,
                filter: pk_filter(model, &id),
            };
            tx.update(&upd).await.map_err(|e| unique(model, e))?;
        }
        // A collection in the values replaces it silently (spec 4.5: no
        // collection notifications from an update).
        for (assoc, ids) in &collections {
            replace_children(tx.as_mut(), model, assoc, &id, ids).await?;
        }
        let record = refetch(tx.as_mut(), model, &id, pq).await?;
        tx.commit().await.map_err(|e| unique(model, e))?;
        (model.hooks.after_update)(&record);

        let mut plan = self.plan(actor);
        plan.subscribe(model, [&id]);
        for (key, new) in &data {
            let Some(assoc) = model.assoc(key) else {
                continue;
            };
            let target = assoc.target();
            let old = previous.get(key.as_str()).and_then(|v| link_pk(target, v));
            let new = Pk::from_json(new);
            if old == new {
                continue;
            }
            if let Some(inv) = model.inverse_of(assoc) {
                if let Some(old) = &old {
                    plan.removed_from(target, old, inv.name, &id);
                }
                if let Some(new) = &new {
                    plan.added_to(target, new, inv.name, &id);
                }
            }
        }
        plan.updated(model, &id, Value::Object(data), Value::Object(previous));
        self.publish(plan).await;
        Ok(record)
    }

    /// `destroy`: deletes record `id` (unlinking its collections), returns
    /// it as it was, populated.
    pub async fn destroy(
        &self,
        model: &'static ModelDef,
        id: &Pk,
        actor: &Actor,
    ) -> Result<Record> {
        let id = checked_key(model, id, UsageCode::InvalidCriteria)?;
        let pq = Criteria::new().normalize(model)?.populate;
        let mut tx = self.store.begin().await?;
        let previous = fetch_locked(tx.as_mut(), model, &id, pq).await?;
        (model.hooks.before_destroy)(&previous)
            .map_err(|m| Error::usage(UsageCode::InvalidRequest, m))?;
        let mut unlinked = Vec::new();
        for assoc in model.assocs.iter().filter(|a| a.is_collection()) {
            let children = linked_ids(tx.as_mut(), model, assoc, &id).await?;
            replace_children(tx.as_mut(), model, assoc, &id, &[]).await?;
            unlinked.push((assoc, children));
        }
        tx.delete(&Delete {
            table: model.table.into(),
            filter: pk_filter(model, &id),
        })
        .await?;
        tx.commit().await?;
        (model.hooks.after_destroy)(&previous);

        let mut plan = self.plan(actor);
        plan.unsubscribe(model, &id);
        plan.destroyed(model, &id, Value::Object(previous.clone()));
        plan.retire(model, &id);
        for assoc in &model.assocs {
            let target = assoc.target();
            match assoc.kind {
                AssocKind::One => {
                    let parent = previous.get(assoc.name).and_then(|v| link_pk(target, v));
                    if let (Some(parent), Some(inv)) = (parent, model.inverse_of(assoc)) {
                        plan.removed_from(target, &parent, inv.name, &id);
                    }
                }
                AssocKind::Many { .. } => {
                    let Some(inv) = model.inverse_of(assoc) else {
                        continue;
                    };
                    let children = unlinked
                        .iter()
                        .find(|(a, _)| std::ptr::eq(*a, assoc))
                        .map(|(_, c)| c.as_slice())
                        .unwrap_or(&[]);
                    for child in children {
                        if matches!(inv.kind, AssocKind::One) {
                            plan.updated_reverse(target, child, inv.name, Value::Null);
                        } else {
                            plan.removed_from(target, child, inv.name, &id);
                        }
                    }
                }
            }
        }
        self.publish(plan).await;
        Ok(previous)
    }

    fn collection(model: &'static ModelDef, alias: &str) -> Result<&'static AssocDef> {
        model
            .assocs
            .iter()
            .find(|a| a.name == alias && a.is_collection())
            .ok_or(Error::NotFound)
    }

    /// `add`: links `child` to `parent` through collection `alias`, returns
    /// the parent populated.
    pub async fn add(
        &self,
        model: &'static ModelDef,
        parent: &Pk,
        alias: &str,
        child: &Pk,
        actor: &Actor,
    ) -> Result<Record> {
        let assoc = Self::collection(model, alias)?;
        let target = assoc.target();
        let parent = checked_key(model, parent, UsageCode::InvalidCriteria)?;
        let child = checked_key(target, child, UsageCode::InvalidAssociatedIds)?;
        let pq = Criteria::new().normalize(model)?.populate;
        let mut tx = self.store.begin().await?;
        fetch_locked(tx.as_mut(), model, &parent, Vec::new()).await?;
        let link = link_children(
            tx.as_mut(),
            model,
            assoc,
            &parent,
            std::slice::from_ref(&child),
        )
        .await?;
        if link.linked.is_empty() {
            return Err(Error::NotFound);
        }
        let record = refetch(tx.as_mut(), model, &parent, pq).await?;
        tx.commit().await?;

        let mut plan = self.plan(actor);
        plan.subscribe(model, [&parent]);
        self.publish_add(&mut plan, model, assoc, &parent, &child);
        for (child, old) in &link.stolen {
            plan.removed_from(model, old, assoc.name, child);
        }
        self.publish(plan).await;
        Ok(record)
    }

    /// `_publishAdd`: `addedTo` on the parent, the requester subscribed to
    /// the child, and the reverse message.
    fn publish_add(
        &self,
        plan: &mut Plan<'_>,
        model: &'static ModelDef,
        assoc: &'static AssocDef,
        parent: &Pk,
        child: &Pk,
    ) {
        let target = assoc.target();
        plan.added_to(model, parent, assoc.name, child);
        plan.subscribe(target, [child]);
        match model.inverse_of(assoc) {
            Some(inv) if matches!(inv.kind, AssocKind::One) => {
                plan.updated_reverse(target, child, inv.name, parent.to_json())
            }
            Some(inv) => plan.added_to(target, child, inv.name, parent),
            None => {}
        }
    }

    /// `_publishRemove`: `removedFrom` on the parent and the reverse message.
    fn publish_remove(
        &self,
        plan: &mut Plan<'_>,
        model: &'static ModelDef,
        assoc: &'static AssocDef,
        parent: &Pk,
        child: &Pk,
    ) {
        let target = assoc.target();
        plan.removed_from(model, parent, assoc.name, child);
        match model.inverse_of(assoc) {
            Some(inv) if matches!(inv.kind, AssocKind::One) => {
                plan.updated_reverse(target, child, inv.name, Value::Null)
            }
            Some(inv) => plan.removed_from(target, child, inv.name, parent),
            None => {}
        }
    }

    /// `remove`: unlinks `child` from `parent`, returns the parent populated.
    pub async fn remove(
        &self,
        model: &'static ModelDef,
        parent: &Pk,
        alias: &str,
        child: &Pk,
        actor: &Actor,
    ) -> Result<Record> {
        let assoc = Self::collection(model, alias)?;
        let target = assoc.target();
        let parent = checked_key(model, parent, UsageCode::InvalidCriteria)?;
        let child = checked_key(target, child, UsageCode::InvalidAssociatedIds)?;
        let pq = Criteria::new().normalize(model)?.populate;
        let mut tx = self.store.begin().await?;
        fetch_locked(tx.as_mut(), model, &parent, Vec::new()).await?;
        if existing_with(tx.as_mut(), target, std::slice::from_ref(&child), None)
            .await?
            .is_empty()
        {
            return Err(Error::NotFound);
        }
        unlink_children(
            tx.as_mut(),
            model,
            assoc,
            &parent,
            std::slice::from_ref(&child),
        )
        .await?;
        let record = refetch(tx.as_mut(), model, &parent, pq).await?;
        tx.commit().await?;

        let mut plan = self.plan(actor);
        self.publish_remove(&mut plan, model, assoc, &parent, &child);
        self.publish(plan).await;
        Ok(record)
    }

    /// `replace`: makes `ids` the whole of `parent`'s collection `alias`
    /// (unknown ids are ignored), returns the parent populated.
    pub async fn replace(
        &self,
        model: &'static ModelDef,
        parent: &Pk,
        alias: &str,
        ids: &Value,
        actor: &Actor,
    ) -> Result<Record> {
        let assoc = Self::collection(model, alias)?;
        let target = assoc.target();
        let parent = checked_key(model, parent, UsageCode::InvalidCriteria)?;
        if !ids.is_array() && !ids.is_string() {
            return Err(Error::usage(
                UsageCode::InvalidAssociatedIds,
                format!(
                    "Expected an array of ids for `{alias}` (as the request body, or as `?{alias}=[...]`)"
                ),
            ));
        }
        let ids = dedup_keep_order(values::id_list(
            target,
            alias,
            ids,
            UsageCode::InvalidAssociatedIds,
        )?);
        let pq = Criteria::new().normalize(model)?.populate;
        let mut tx = self.store.begin().await?;
        fetch_locked(tx.as_mut(), model, &parent, Vec::new()).await?;
        let before = linked_ids(tx.as_mut(), model, assoc, &parent).await?;
        let (removed, link) = replace_children(tx.as_mut(), model, assoc, &parent, &ids).await?;
        let record = refetch(tx.as_mut(), model, &parent, pq).await?;
        tx.commit().await?;

        let mut plan = self.plan(actor);
        plan.subscribe(model, [&parent]);
        let had: HashSet<&Pk> = before.iter().collect();
        for child in link.linked.iter().filter(|c| !had.contains(c)) {
            self.publish_add(&mut plan, model, assoc, &parent, child);
        }
        for child in &removed {
            self.publish_remove(&mut plan, model, assoc, &parent, child);
        }
        for (child, old) in &link.stolen {
            plan.removed_from(model, old, assoc.name, child);
        }
        self.publish(plan).await;
        Ok(record)
    }
}

/// Column values of a normalised row (attributes and to-one keys).
fn row_values(model: &ModelDef, row: &Record) -> Vec<(crate::query::Ident, SqlValue)> {
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
        .map_err(|e| unique(model, e))?
        .ok_or_else(no_row)?;
    let record = read::row_record(model, inserted);
    let id = pk_of(model, &record).ok_or_else(no_row)?;
    Ok((id, record))
}

/// Reads a record inside a transaction, locking its row; 404 if missing.
async fn fetch_locked(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    id: &Pk,
    populate: Vec<PopulateQuery>,
) -> Result<Record> {
    load_single(conn, model, &Query::by_pk(model, id, populate), true)
        .await?
        .ok_or(Error::NotFound)
}

/// Reads back a record written in this transaction.
async fn refetch(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    id: &Pk,
    populate: Vec<PopulateQuery>,
) -> Result<Record> {
    load_single(conn, model, &Query::by_pk(model, id, populate), false)
        .await?
        .ok_or_else(|| {
            Error::Store(StoreError::Database(
                format!("could not find `{}` {id} after writing it", model.identity).into(),
            ))
        })
}

/// What linking children did.
struct Linked {
    assoc: &'static AssocDef,
    /// Children that exist and are now linked, in the order given.
    linked: Vec<Pk>,
    /// `(child, old parent)` for children taken from another parent
    /// (one-to-many only).
    stolen: Vec<(Pk, Pk)>,
}

async fn link_children(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    assoc: &'static AssocDef,
    parent: &Pk,
    ids: &[Pk],
) -> Result<Linked> {
    let target = assoc.target();
    let ids = dedup_keep_order(ids.to_vec());
    match collection_storage(model, assoc) {
        CollectionStorage::ForeignKey { via } => {
            let found = existing_with(
                conn,
                target,
                &ids,
                Some((via.column, model.pk_kind.attr_type())),
            )
            .await?;
            let known: HashSet<&Pk> = found.iter().map(|(f, _)| f).collect();
            let linked: Vec<Pk> = ids.iter().filter(|k| known.contains(k)).cloned().collect();
            let stolen = found
                .iter()
                .filter_map(|(child, old)| {
                    old.as_ref()
                        .filter(|o| *o != parent)
                        .map(|o| (child.clone(), o.clone()))
                })
                .collect();
            if !linked.is_empty() {
                let upd = Update {
                    table: target.table.into(),
                    set: vec![(via.column.into(), SqlValue::from_pk(parent))],
                    filter: Filter::any_of(
                        target.pk_column().into(),
                        linked.iter().map(SqlValue::from_pk).collect(),
                    ),
                };
                conn.update(&upd).await?;
            }
            Ok(Linked {
                assoc,
                linked,
                stolen,
            })
        }
        CollectionStorage::Join(j) => {
            let found = existing_with(conn, target, &ids, None).await?;
            let known: HashSet<&Pk> = found.iter().map(|(f, _)| f).collect();
            let linked: Vec<Pk> = ids.iter().filter(|k| known.contains(k)).cloned().collect();
            for child in &linked {
                let ins = Insert {
                    table: j.table.clone().into(),
                    values: vec![
                        (j.parent_column.clone().into(), SqlValue::from_pk(parent)),
                        (j.child_column.clone().into(), SqlValue::from_pk(child)),
                    ],
                    returning: Vec::new(),
                    ignore_conflict: true,
                };
                conn.insert(&ins).await?;
            }
            Ok(Linked {
                assoc,
                linked,
                stolen: Vec::new(),
            })
        }
    }
}

async fn unlink_children(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    assoc: &'static AssocDef,
    parent: &Pk,
    ids: &[Pk],
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let target = assoc.target();
    let keys: Vec<SqlValue> = ids.iter().map(SqlValue::from_pk).collect();
    match collection_storage(model, assoc) {
        CollectionStorage::ForeignKey { via } => {
            let upd = Update {
                table: target.table.into(),
                set: vec![(via.column.into(), SqlValue::Null(model.pk_kind.attr_type()))],
                filter: Filter::any_of(target.pk_column().into(), keys)
                    .and(Filter::eq(via.column.into(), SqlValue::from_pk(parent))),
            };
            conn.update(&upd).await?;
        }
        CollectionStorage::Join(j) => {
            let del = Delete {
                table: j.table.into(),
                filter: Filter::eq(j.parent_column.into(), SqlValue::from_pk(parent))
                    .and(Filter::any_of(j.child_column.into(), keys)),
            };
            conn.delete(&del).await?;
        }
    }
    Ok(())
}

/// Makes `ids` the whole collection; returns the children unlinked and what
/// linking did.
async fn replace_children(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    assoc: &'static AssocDef,
    parent: &Pk,
    ids: &[Pk],
) -> Result<(Vec<Pk>, Linked)> {
    let before = linked_ids(conn, model, assoc, parent).await?;
    let wanted: HashSet<&Pk> = ids.iter().collect();
    let removed: Vec<Pk> = before
        .iter()
        .filter(|k| !wanted.contains(k))
        .cloned()
        .collect();
    unlink_children(conn, model, assoc, parent, &removed).await?;
    let link = link_children(conn, model, assoc, parent, ids).await?;
    Ok((removed, link))
}
