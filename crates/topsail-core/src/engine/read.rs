/*!
Reading records: the main select, then one query per populated association
(an `IN` list over the parents, with a window function for the per-parent
limit), never one query per row.
*/

use std::collections::HashMap;

use serde_json::Value;

use crate::criteria::{PopulateQuery, Query};
use crate::error::Result;
use crate::model::{AssocKind, AttrType, CollectionStorage, ModelDef, collection_storage};
use crate::query::{ColRef, Dir, Filter, Ident, Join, Select};
use crate::record::{Pk, Record};
use crate::store::{Conn, Row};
use crate::value::SqlValue;

/// The columns of a model's own row: scalar attributes, then to-one keys.
pub(crate) fn row_columns(model: &ModelDef) -> Vec<(ColRef, AttrType)> {
    let mut cols: Vec<(ColRef, AttrType)> = model
        .attrs
        .iter()
        .map(|a| (ColRef::Main(a.column.into()), a.ty))
        .collect();
    for a in model
        .assocs
        .iter()
        .filter(|a| matches!(a.kind, AssocKind::One))
    {
        cols.push((
            ColRef::Main(a.column.into()),
            a.target().pk_kind.attr_type(),
        ));
    }
    cols
}

/// The columns of [`row_columns`] as plain names (for `RETURNING`).
pub(crate) fn row_column_names(model: &ModelDef) -> Vec<(Ident, AttrType)> {
    row_columns(model)
        .into_iter()
        .map(|(c, ty)| match c {
            ColRef::Main(n) | ColRef::Join(n) => (n, ty),
        })
        .collect()
}

/// Populates a record just created with no collection links. A new record
/// with an auto-increment key has no children (nothing can point at a key
/// never used before), so its collections are empty without a query; other
/// keys may meet rows left pointing at a destroyed record, so they are read.
pub(crate) async fn populate_new(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    record: &mut Record,
    wanted: &[PopulateQuery],
) -> Result<()> {
    let fresh = model.pk_kind == crate::model::PkKind::AutoIncrement;
    for p in wanted {
        if fresh && p.assoc.is_collection() {
            record.insert(p.assoc.name.to_owned(), Value::Array(Vec::new()));
        } else {
            populate(conn, model, std::slice::from_mut(record), p).await?;
        }
    }
    Ok(())
}

/// Turns a row of [`row_columns`] into a record: attributes, then to-one
/// keys as raw ids (collections are added by populate).
pub(crate) fn row_record(model: &ModelDef, row: Row) -> Record {
    let names = model.attrs.iter().map(|a| a.name).chain(
        model
            .assocs
            .iter()
            .filter(|a| matches!(a.kind, AssocKind::One))
            .map(|a| a.name),
    );
    names.zip(row).map(|(n, v)| (n.to_owned(), v)).collect()
}

/// The primary key of a stored record.
pub(crate) fn pk_of(model: &ModelDef, r: &Record) -> Option<Pk> {
    r.get(model.pk).and_then(Pk::from_json)
}

/// A to-one value as a key, whether raw or populated.
pub(crate) fn link_pk(target: &ModelDef, v: &Value) -> Option<Pk> {
    match v {
        Value::Object(o) => o.get(target.pk).and_then(Pk::from_json),
        other => Pk::from_json(other),
    }
}

fn with_default_order(model: &ModelDef, mut sort: Vec<(Ident, Dir)>) -> Vec<(Ident, Dir)> {
    // A stable order (primary key last) keeps pages and tests deterministic.
    let pk: Ident = model.pk_column().into();
    if !sort.iter().any(|(c, _)| *c == pk) {
        sort.push((pk, Dir::Asc));
    }
    sort
}

fn apply_projection(
    r: &mut Record,
    select: &Option<Vec<&'static str>>,
    omit: &[&'static str],
    keep: &[&str],
) {
    if let Some(sel) = select {
        r.retain(|k, _| sel.contains(&k.as_str()) || keep.contains(&k.as_str()));
    }
    for o in omit {
        r.remove(*o);
    }
}

/// Runs `q` against `model` and populates what it asks for.
pub(crate) async fn load(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    q: &Query,
    lock: bool,
) -> Result<Vec<Record>> {
    if q.limit == Some(0) || q.filter == Filter::False {
        return Ok(Vec::new());
    }
    let mut sel = Select::new(model.table.into(), row_columns(model));
    sel.filter = q.filter.clone();
    sel.order = with_default_order(model, q.sort.clone());
    sel.limit = q.limit;
    sel.offset = q.skip;
    sel.lock = lock;
    let rows = conn.fetch(&sel).await?;
    let mut records: Vec<Record> = rows.into_iter().map(|r| row_record(model, r)).collect();
    if !records.is_empty() {
        for p in &q.populate {
            populate(conn, model, &mut records, p).await?;
        }
    }
    let populated: Vec<&str> = q.populate.iter().map(|p| p.assoc.name).collect();
    for r in &mut records {
        apply_projection(r, &q.select, &q.omit, &populated);
    }
    Ok(records)
}

/// Populates one association on every record, with one query.
pub(crate) async fn populate(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    records: &mut [Record],
    p: &PopulateQuery,
) -> Result<()> {
    let assoc = p.assoc;
    let target = assoc.target();
    let mut cols = row_columns(target);
    let mut sel;
    match assoc.kind {
        AssocKind::One => {
            let mut keys: Vec<Pk> = records
                .iter()
                .filter_map(|r| r.get(assoc.name).and_then(Pk::from_json))
                .collect();
            keys.sort();
            keys.dedup();
            if keys.is_empty() {
                for r in records.iter_mut() {
                    r.insert(assoc.name.to_owned(), Value::Null);
                }
                return Ok(());
            }
            sel = Select::new(target.table.into(), cols);
            sel.filter = Filter::any_of(
                target.pk_column().into(),
                keys.iter().map(SqlValue::from_pk).collect(),
            )
            .and(p.filter.clone());
            let rows = conn.fetch(&sel).await?;
            let by_pk: HashMap<Pk, Record> = rows
                .into_iter()
                .map(|row| {
                    let mut rec = row_record(target, row);
                    apply_projection(&mut rec, &p.select, &p.omit, &[]);
                    (pk_of(target, &rec).unwrap_or(Pk::Int(0)), rec)
                })
                .collect();
            for r in records.iter_mut() {
                let v = r
                    .get(assoc.name)
                    .and_then(Pk::from_json)
                    .and_then(|k| by_pk.get(&k))
                    .map(|rec| Value::Object(rec.clone()))
                    .unwrap_or(Value::Null);
                r.insert(assoc.name.to_owned(), v);
            }
            return Ok(());
        }
        AssocKind::Many { .. } => {
            let parents: Vec<SqlValue> = records
                .iter()
                .filter_map(|r| pk_of(model, r))
                .map(|k| SqlValue::from_pk(&k))
                .collect();
            let parent_col = match collection_storage(model, assoc) {
                CollectionStorage::ForeignKey { via } => {
                    sel = Select::new(target.table.into(), cols);
                    sel.filter = Filter::any_of(via.column.into(), parents).and(p.filter.clone());
                    ColRef::Main(via.column.into())
                }
                CollectionStorage::Join(j) => {
                    let pcol = ColRef::Join(j.parent_column.clone().into());
                    cols.push((pcol.clone(), model.pk_kind.attr_type()));
                    sel = Select::new(target.table.into(), cols);
                    sel.join = Some(Join {
                        table: j.table.into(),
                        child_column: j.child_column.into(),
                        target_pk: target.pk_column().into(),
                    });
                    sel.filter = Filter::In {
                        col: pcol.clone(),
                        values: parents,
                        negated: false,
                    }
                    .and(p.filter.clone());
                    pcol
                }
            };
            sel.order = with_default_order(target, p.sort.clone());
            sel.limit = p.limit;
            sel.offset = p.skip;
            if sel.limit.is_some() || sel.offset > 0 {
                sel.partition = Some(parent_col.clone());
            }
            let via_join = matches!(parent_col, ColRef::Join(_));
            let via_name = match &parent_col {
                ColRef::Main(c) => target
                    .assocs
                    .iter()
                    .find(|a| a.column == c.as_ref() && matches!(a.kind, AssocKind::One))
                    .map(|a| a.name),
                ColRef::Join(_) => None,
            };
            let rows = conn.fetch(&sel).await?;
            let mut groups: HashMap<Pk, Vec<Value>> = HashMap::new();
            for mut row in rows {
                let parent = if via_join { row.pop() } else { None };
                let mut rec = row_record(target, row);
                let parent = match (parent, via_name) {
                    (Some(p), _) => Pk::from_json(&p),
                    (None, Some(n)) => rec.get(n).and_then(Pk::from_json),
                    (None, None) => None,
                };
                apply_projection(&mut rec, &p.select, &p.omit, &[]);
                if let Some(parent) = parent {
                    groups.entry(parent).or_default().push(Value::Object(rec));
                }
            }
            for r in records.iter_mut() {
                let children = pk_of(model, r)
                    .and_then(|k| groups.remove(&k))
                    .unwrap_or_default();
                r.insert(assoc.name.to_owned(), Value::Array(children));
            }
        }
    }
    Ok(())
}

/// The keys of the records currently linked to `parent` through `alias`,
/// straight from the store (not capped like a populate).
pub(crate) async fn linked_ids(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    assoc: &'static crate::model::AssocDef,
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
pub(crate) async fn existing_with(
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
    sel.filter = Filter::any_of(
        model.pk_column().into(),
        ids.iter().map(SqlValue::from_pk).collect(),
    );
    sel.order = vec![(model.pk_column().into(), Dir::Asc)];
    let rows = conn.fetch(&sel).await?;
    Ok(rows
        .into_iter()
        .filter_map(|mut r| {
            let extra = if r.len() > 1 {
                r.pop().and_then(|v| Pk::from_json(&v))
            } else {
                None
            };
            r.first().and_then(Pk::from_json).map(|k| (k, extra))
        })
        .collect())
}

/// Keeps `ids` in the order the client gave them, without duplicates.
pub(crate) fn dedup_keep_order(ids: Vec<Pk>) -> Vec<Pk> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter().filter(|k| seen.insert(k.clone())).collect()
}
