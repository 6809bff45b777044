/*!
The reads: `find`, `findOne`, `count` and the `populate` action. A socket
that reads is subscribed to what it read (and, with auto-watch, watches the
models it read), as Sails' `subscribeDeep` does.
*/

use serde_json::Value;

use crate::criteria::{Criteria, Populate, Query};
use crate::error::{Error, Result, UsageCode};
use crate::model::ModelDef;
use crate::pubsub::{Actor, Plan, now_us};
use crate::query::{Filter, Select};
use crate::record::{Pk, Record};

use super::loaded::Loaded;
use super::read::load_rows;
use super::{Engine, checked_key};

impl Engine {
    /// `q` as `actor` may run it: a client's may not name a private
    /// attribute, returns none (see [`crate::visibility`]), and reads only
    /// the records the read rules let it (see [`crate::access`]).
    fn client_query(&self, model: &'static ModelDef, mut q: Query, actor: &Actor) -> Result<Query> {
        if actor.is_client() {
            crate::visibility::client_query(model, &mut q)?;
            self.restrict(model, &mut q, actor)?;
        }
        Ok(q)
    }

    /// Sails' `subscribeDeep` for every loaded record: watch every
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
                if self.config.auto_watch && self.may_watch(target, plan.actor()) {
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
        let q = self.client_query(model, criteria.normalize(model)?, actor)?;
        let began = now_us();
        let mut conn = self.store.conn().await?;
        let loaded = load_rows(conn.as_mut(), model, &q, false).await?;
        drop(conn);
        if actor.is_socket() {
            let mut plan = self.plan(actor).read_began(began);
            plan.subscribe(model, &loaded.ids());
            if self.config.auto_watch && self.may_watch(model, actor) {
                plan.watch(model);
            }
            self.subscribe_deep(&mut plan, model, &loaded);
            self.publish(plan, None).await;
        }
        Ok(loaded)
    }

    /// Counts the records matching `criteria`'s `where` (that `actor` may
    /// read).
    pub async fn count(
        &self,
        model: &'static ModelDef,
        criteria: &Criteria,
        actor: &Actor,
    ) -> Result<u64> {
        let q = self.client_query(model, criteria.normalize(model)?, actor)?;
        if q.filter == Filter::False {
            return Ok(0);
        }
        let mut sel = Select::new(model.table.into(), Vec::new());
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
        q.filter = Filter::True;
        q = self.client_query(model, q, actor)?;
        q.filter = Query::by_pk(model, &id, Vec::new()).filter.and(q.filter);
        let began = now_us();
        let loaded = self.load_one(model, &q).await?;
        self.subscribe_one(model, &id, &loaded, actor, began).await;
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

    /// A socket reading one record (a read that `began` then) is
    /// subscribed to it and, deeply, to what it populated (`findOne` and
    /// `populate`).
    async fn subscribe_one(
        &self,
        model: &'static ModelDef,
        id: &Pk,
        loaded: &Loaded,
        actor: &Actor,
        began: u64,
    ) {
        if actor.is_socket() {
            let mut plan = self.plan(actor).read_began(began);
            plan.subscribe(model, [id]);
            self.subscribe_deep(&mut plan, model, loaded);
            self.publish(plan, None).await;
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
            // Populating a to-one takes only `select` and `omit` of the
            // criteria, as in Sails.
            Criteria {
                select: criteria.select.clone(),
                omit: criteria.omit.clone(),
                ..Criteria::new()
            }
        };
        let q = Criteria::new()
            .populate(Populate::Only(vec![(alias.to_owned(), sub)]))
            .normalize(model)?;
        let mut q = self.client_query(
            model,
            Query {
                filter: Filter::True,
                ..q
            },
            actor,
        )?;
        q.filter = Query::by_pk(model, &parent, Vec::new())
            .filter
            .and(q.filter);
        let began = now_us();
        let loaded = self.load_one(model, &q).await?;
        let value = match loaded.first_field(alias) {
            Some(v) if !v.is_null() => v,
            _ => return Err(Error::NotFound),
        };
        self.subscribe_one(model, &parent, &loaded, actor, began)
            .await;
        Ok(value)
    }
}
