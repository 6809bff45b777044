/*!
Collections: linking and unlinking children (a foreign key on the child, or
a join table), replacing a whole collection, and the `add`, `remove` and
`replace` actions over them. Every list of keys is read once per action.
*/

use std::collections::HashSet;

use serde_json::Value;

use crate::error::{Error, Result, UsageCode};
use crate::etag::Precondition;
use crate::model::{AssocDef, AttrType, CollectionStorage, ModelDef, collection_storage};
use crate::pubsub::{Actor, Linked};
use crate::query::{ColRef, Delete, Dir, Filter, Ident, Insert, Select, Update};
use crate::record::{Pk, Record};
use crate::store::{Conn, Tx};
use crate::value::SqlValue;

use super::read::{fetch_locked, refetch_populated};
use super::turns::Turn;
use super::{Engine, KEYS_PER_STATEMENT, checked_key, values};

impl Engine {
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
        self.add_if(model, parent, alias, child, actor, &Precondition::None)
            .await
    }

    /// [`add`](Engine::add) under `pre` (a client's `If-Match`), checked on
    /// the parent as the transaction locked it.
    pub async fn add_if(
        &self,
        model: &'static ModelDef,
        parent: &Pk,
        alias: &str,
        child: &Pk,
        actor: &Actor,
        pre: &Precondition,
    ) -> Result<Record> {
        let (assoc, parent, child, (turn, mut tx)) = self
            .open_child(model, parent, alias, child, actor, pre)
            .await?;
        let link = link_children(tx.as_mut(), model, assoc, &parent, &[child]).await?;
        if link.linked.is_empty() {
            return Err(Error::NotFound);
        }
        let record = commit_with_parent(tx, model, &parent).await?;
        let mut plan = self.plan(actor);
        plan.add(model, &parent, &link);
        self.publish(plan, Some(turn)).await;
        Ok(self.answer(model, record, actor))
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
        self.remove_if(model, parent, alias, child, actor, &Precondition::None)
            .await
    }

    /// [`remove`](Engine::remove) under `pre` (a client's `If-Match`),
    /// checked on the parent as the transaction locked it.
    pub async fn remove_if(
        &self,
        model: &'static ModelDef,
        parent: &Pk,
        alias: &str,
        child: &Pk,
        actor: &Actor,
        pre: &Precondition,
    ) -> Result<Record> {
        let (assoc, parent, child, (turn, mut tx)) = self
            .open_child(model, parent, alias, child, actor, pre)
            .await?;
        let children = std::slice::from_ref(&child);
        if existing_with(tx.as_mut(), assoc.target(), children, None)
            .await?
            .is_empty()
        {
            return Err(Error::NotFound);
        }
        unlink_children(tx.as_mut(), model, assoc, &parent, children).await?;
        let record = commit_with_parent(tx, model, &parent).await?;
        let mut plan = self.plan(actor);
        plan.remove(model, assoc, &parent, &child);
        self.publish(plan, Some(turn)).await;
        Ok(self.answer(model, record, actor))
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
        self.replace_if(model, parent, alias, ids, actor, &Precondition::None)
            .await
    }

    /// [`replace`](Engine::replace) under `pre` (a client's `If-Match`),
    /// checked on the parent as the transaction locked it.
    pub async fn replace_if(
        &self,
        model: &'static ModelDef,
        parent: &Pk,
        alias: &str,
        ids: &Value,
        actor: &Actor,
        pre: &Precondition,
    ) -> Result<Record> {
        let (assoc, parent) = collection_of(model, parent, alias)?;
        let ids = replacement_ids(assoc, ids)?;
        let (turn, mut tx) = self.lock_parent(model, &parent, actor, pre).await?;
        let ids = self
            .writable_children(tx.as_mut(), assoc.target(), ids, actor)
            .await?;
        let r = replace_children(tx.as_mut(), model, assoc, &parent, &ids).await?;
        let record = commit_with_parent(tx, model, &parent).await?;
        let mut plan = self.plan(actor);
        plan.replace(model, &parent, &r.before, &r.removed, &r.link);
        self.publish(plan, Some(turn)).await;
        Ok(self.answer(model, record, actor))
    }

    /// What `add` and `remove` start with: the collection, the parent's
    /// and the child's keys checked, and the parent's turn with the
    /// transaction that locked its row.
    async fn open_child(
        &self,
        model: &'static ModelDef,
        parent: &Pk,
        alias: &str,
        child: &Pk,
        actor: &Actor,
        pre: &Precondition,
    ) -> Result<(&'static AssocDef, Pk, Pk, (Turn<'_>, Box<dyn Tx>))> {
        let (assoc, parent) = collection_of(model, parent, alias)?;
        let child = checked_key(assoc.target(), child, UsageCode::InvalidAssociatedIds)?;
        let (turn, mut tx) = self.lock_parent(model, &parent, actor, pre).await?;
        let allowed = self
            .writable_children(tx.as_mut(), assoc.target(), vec![child.clone()], actor)
            .await?;
        if allowed.is_empty() {
            return Err(Error::NotFound);
        }
        Ok((assoc, parent, child, (turn, tx)))
    }

    /// The parent's turn (see `super::turns`) and a collection action's
    /// transaction, with the parent's row locked (404 when there is no such parent, or `actor` may not read it; 403
    /// when it may not change it; 412 when it is not the version `pre`
    /// names, for which the parent is read populated, as its tag covers).
    async fn lock_parent(
        &self,
        model: &'static ModelDef,
        parent: &Pk,
        actor: &Actor,
        pre: &Precondition,
    ) -> Result<(Turn<'_>, Box<dyn Tx>)> {
        super::rules::require_precondition(model, actor, pre)?;
        let populate = match pre {
            Precondition::OneOf(_) => super::default_populates(model),
            _ => Vec::new(),
        };
        let turn = self.turn(model, parent).await;
        let mut tx = self.store.begin().await?;
        let record = fetch_locked(tx.as_mut(), model, parent, populate).await?;
        self.check_write(model, &record, actor)?;
        self.check_precondition(model, &record, actor, pre)?;
        Ok((turn, tx))
    }
}

/// Reads the parent back, populated, and commits.
async fn commit_with_parent(
    mut tx: Box<dyn Tx>,
    model: &'static ModelDef,
    parent: &Pk,
) -> Result<Record> {
    let record = refetch_populated(tx.as_mut(), model, parent).await?;
    tx.commit().await?;
    Ok(record)
}

/// The collection `alias` of `model` (404 when there is none) and the
/// parent's key, checked.
fn collection_of(
    model: &'static ModelDef,
    parent: &Pk,
    alias: &str,
) -> Result<(&'static AssocDef, Pk)> {
    let assoc = collection(model, alias)?;
    let parent = checked_key(model, parent, UsageCode::InvalidCriteria)?;
    Ok((assoc, parent))
}

/// The collection `alias` of `model`; 404 when there is none.
fn collection(model: &'static ModelDef, alias: &str) -> Result<&'static AssocDef> {
    model
        .assocs
        .iter()
        .find(|a| a.name == alias && a.is_collection())
        .ok_or(Error::NotFound)
}

/// The ids a `replace` is given (an array, or its JSON text), typed for the
/// collection's target, without duplicates.
fn replacement_ids(assoc: &'static AssocDef, ids: &Value) -> Result<Vec<Pk>> {
    if !ids.is_array() && !ids.is_string() {
        return Err(Error::usage(
            UsageCode::InvalidAssociatedIds,
            format!(
                "Expected an array of ids for `{}` (as the request body, or as `?{}=[...]`)",
                assoc.name, assoc.name
            ),
        ));
    }
    let ids = values::id_list(
        assoc.target(),
        assoc.name,
        ids,
        UsageCode::InvalidAssociatedIds,
    )?;
    Ok(dedup_keep_order(ids))
}

/// Links the children of `ids` that exist to `parent`, taking them from
/// another parent where the collection is one-to-many.
pub(super) async fn link_children(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    assoc: &'static AssocDef,
    parent: &Pk,
    ids: &[Pk],
) -> Result<Linked> {
    let target = assoc.target();
    let ids = dedup_keep_order(ids.to_vec());
    let (linked, stolen) = match collection_storage(model, assoc) {
        CollectionStorage::ForeignKey { via } => {
            let found = existing_with(
                conn,
                target,
                &ids,
                Some((via.column, model.pk_kind.attr_type())),
            )
            .await?;
            let linked = known_in_order(&ids, found.iter().map(|(child, _)| child));
            let stolen = found
                .into_iter()
                .filter_map(|(child, old)| old.filter(|o| o != parent).map(|o| (child, o)))
                .collect();
            let key = SqlValue::from_pk(parent);
            set_foreign_key(conn, assoc, via.column, key, &linked, None).await?;
            (linked, stolen)
        }
        CollectionStorage::Join(j) => {
            let found = existing_with(conn, target, &ids, None).await?;
            let linked = known_in_order(&ids, found.iter().map(|(child, _)| child));
            for child in &linked {
                conn.insert(&Insert {
                    table: j.table.clone().into(),
                    values: vec![
                        (j.parent_column.clone().into(), SqlValue::from_pk(parent)),
                        (j.child_column.clone().into(), SqlValue::from_pk(child)),
                    ],
                    returning: Vec::new(),
                    ignore_conflict: true,
                })
                .await?;
            }
            (linked, Vec::new())
        }
    };
    Ok(Linked {
        assoc,
        linked,
        stolen,
    })
}

/// The keys of `ids` that are among `known`, in the order of `ids`.
fn known_in_order<'k>(ids: &[Pk], known: impl Iterator<Item = &'k Pk>) -> Vec<Pk> {
    let known: HashSet<&Pk> = known.collect();
    ids.iter().filter(|k| known.contains(k)).cloned().collect()
}

/// Sets the foreign key `via` of the `children` of `assoc` to `value`;
/// with `from`, only on children that point at `from` now.
async fn set_foreign_key(
    conn: &mut dyn Conn,
    assoc: &'static AssocDef,
    via: &'static str,
    value: SqlValue,
    children: &[Pk],
    from: Option<&Pk>,
) -> Result<()> {
    if children.is_empty() {
        return Ok(());
    }
    let target = assoc.target();
    for chunk in children.chunks(KEYS_PER_STATEMENT) {
        let mut filter = Filter::any_of(
            target.pk_column().into(),
            chunk.iter().map(SqlValue::from_pk).collect(),
        );
        if let Some(from) = from {
            filter = filter.and(Filter::eq(via.into(), SqlValue::from_pk(from)));
        }
        conn.update(&Update {
            table: target.table.into(),
            set: vec![(via.into(), value.clone())],
            filter,
        })
        .await?;
    }
    Ok(())
}

/// Unlinks `ids` from `parent`.
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
    match collection_storage(model, assoc) {
        CollectionStorage::ForeignKey { via } => {
            let null = SqlValue::Null(model.pk_kind.attr_type());
            set_foreign_key(conn, assoc, via.column, null, ids, Some(parent)).await
        }
        CollectionStorage::Join(j) => {
            for chunk in ids.chunks(KEYS_PER_STATEMENT) {
                let keys: Vec<SqlValue> = chunk.iter().map(SqlValue::from_pk).collect();
                conn.delete(&Delete {
                    table: j.table.clone().into(),
                    filter: Filter::eq(j.parent_column.clone().into(), SqlValue::from_pk(parent))
                        .and(Filter::any_of(j.child_column.clone().into(), keys)),
                })
                .await?;
            }
            Ok(())
        }
    }
}

/// What replacing a collection changed.
pub(super) struct Replaced {
    /// The children linked before, in key order.
    pub(super) before: Vec<Pk>,
    /// The children unlinked.
    pub(super) removed: Vec<Pk>,
    /// What linking the new list did.
    pub(super) link: Linked,
}

/// Makes `ids` the whole collection (an empty list unlinks every child).
pub(super) async fn replace_children(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    assoc: &'static AssocDef,
    parent: &Pk,
    ids: &[Pk],
) -> Result<Replaced> {
    let before = linked_ids(conn, model, assoc, parent).await?;
    let wanted: HashSet<&Pk> = ids.iter().collect();
    let removed: Vec<Pk> = before
        .iter()
        .filter(|k| !wanted.contains(k))
        .cloned()
        .collect();
    unlink_children(conn, model, assoc, parent, &removed).await?;
    let link = link_children(conn, model, assoc, parent, ids).await?;
    Ok(Replaced {
        before,
        removed,
        link,
    })
}

/// The keys of the records currently linked to `parent` through `alias`,
/// straight from the store (not capped like a populate).
async fn linked_ids(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    assoc: &'static AssocDef,
    parent: &Pk,
) -> Result<Vec<Pk>> {
    let target = assoc.target();
    let tpk = target.pk_kind.attr_type();
    let rows = match collection_storage(model, assoc) {
        CollectionStorage::ForeignKey { via } => {
            let mut sel = Select::new(
                target.table.into(),
                vec![(ColRef::Main(target.pk_column().into()), tpk)],
            );
            sel.filter = Filter::eq(via.column.into(), SqlValue::from_pk(parent));
            sel.order = vec![(target.pk_column().into(), Dir::Asc)];
            conn.fetch(&sel).await?
        }
        CollectionStorage::Join(j) => {
            let mut sel = Select::new(
                j.table.into(),
                vec![(ColRef::Main(j.child_column.into()), tpk)],
            );
            sel.filter = Filter::eq(j.parent_column.into(), SqlValue::from_pk(parent));
            sel.order = vec![(Ident::from("id"), Dir::Asc)];
            conn.fetch(&sel).await?
        }
    };
    Ok(rows
        .iter()
        .filter_map(|r| r.first().and_then(Pk::from_json))
        .collect())
}

/// Which of `ids` exist in `model`, with the value of `column` (a to-one key)
/// for each: used to ignore unknown children and to find their old parents.
async fn existing_with(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    ids: &[Pk],
    column: Option<(&'static str, AttrType)>,
) -> Result<Vec<(Pk, Option<Pk>)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut cols = vec![(
        ColRef::Main(model.pk_column().into()),
        model.pk_kind.attr_type(),
    )];
    if let Some((c, ty)) = column {
        cols.push((ColRef::Main(c.into()), ty));
    }
    let mut sel = Select::new(model.table.into(), cols);
    sel.order = vec![(model.pk_column().into(), Dir::Asc)];
    let mut found = Vec::new();
    for chunk in ids.chunks(KEYS_PER_STATEMENT) {
        sel.filter = Filter::any_of(
            model.pk_column().into(),
            chunk.iter().map(SqlValue::from_pk).collect(),
        );
        found.extend(conn.fetch(&sel).await?.into_iter().filter_map(|mut r| {
            let extra = if r.len() > 1 {
                r.pop().and_then(|v| Pk::from_json(&v))
            } else {
                None
            };
            r.first().and_then(Pk::from_json).map(|k| (k, extra))
        }));
    }
    // In key order, as one statement would have returned them.
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Keeps `ids` in the order the client gave them, without duplicates.
fn dedup_keep_order(ids: Vec<Pk>) -> Vec<Pk> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter().filter(|k| seen.insert(k.clone())).collect()
}
