/*!
Reading records: one statement for the records and everything they
populate, each association a correlated subquery aggregated to JSON, so a
`find` or `findOne` is one database round trip however much it populates.
Records already in hand (just created) are populated with one query per
association: an `IN` list over the parents, with a window function for the
per-parent limit.
*/

use std::collections::HashMap;

use serde_json::Value;

use crate::criteria::{PopulateQuery, Query};
use crate::error::{Error, Result, StoreError};
use crate::model::{AssocKind, AttrType, CollectionStorage, ModelDef, collection_storage};
use crate::query::{ColRef, Dir, Filter, Ident, Join, Nested, Select};
use crate::record::{Pk, Record};
use crate::store::{Conn, Row};
use crate::value::SqlValue;

use super::KEYS_PER_STATEMENT;
use super::loaded::{Loaded, Shape, row_field_names};

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
    row_field_names(model)
        .zip(row)
        .map(|(n, v)| (n.to_owned(), v))
        .collect()
}

fn with_default_order(model: &ModelDef, mut sort: Vec<(Ident, Dir)>) -> Vec<(Ident, Dir)> {
    // A stable order (primary key last) keeps pages and tests deterministic.
    let pk: Ident = model.pk_column().into();
    if !sort.iter().any(|(c, _)| *c == pk) {
        sort.push((pk, Dir::Asc));
    }
    sort
}

/// Runs `q` against `model` with what it populates, in one statement: each
/// populated association is a nested select (see [`Nested`]).
pub(crate) async fn load_rows(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    q: &Query,
    lock: bool,
) -> Result<Loaded> {
    if q.limit == Some(0) || q.filter == Filter::False {
        return Ok(Loaded::new(model, q, Vec::new()));
    }
    let mut sel = Select::new(model.table.into(), row_columns(model));
    sel.filter = q.filter.clone();
    sel.order = with_default_order(model, q.sort.clone());
    sel.limit = q.limit;
    sel.offset = q.skip;
    sel.lock = lock;
    sel.nested = q
        .populate
        .iter()
        .map(|p| Children::new(model, p).nested())
        .collect();
    let rows = conn.fetch(&sel).await?;
    Ok(Loaded::new(model, q, rows))
}

/// Loads the one record `q` selects (by primary key).
pub(crate) async fn load_single(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    q: &Query,
    lock: bool,
) -> Result<Option<Record>> {
    Ok(load_rows(conn, model, q, lock).await?.into_records().pop())
}

/// Populates one association on records already in hand (a record just
/// created), with one query.
pub(crate) async fn populate(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    records: &mut [Record],
    p: &PopulateQuery,
) -> Result<()> {
    Children::new(model, p).populate(conn, model, records).await
}

/// Sets the association on `record` to its children: the first (or null)
/// for a to-one, all of them for a collection.
fn attach(p: &PopulateQuery, record: &mut Record, mut kids: Vec<Record>) {
    let name = p.assoc.name.to_owned();
    if p.assoc.is_collection() {
        record.insert(
            name,
            Value::Array(kids.into_iter().map(Value::Object).collect()),
        );
    } else {
        let first = (!kids.is_empty()).then(|| kids.swap_remove(0));
        record.insert(name, first.map(Value::Object).unwrap_or(Value::Null));
    }
}

/// How the records of one populate are read: the child select (filter,
/// order and per-parent window of the populate, no parent yet) and the
/// columns tying a child row to its parent.
struct Children<'p> {
    p: &'p PopulateQuery,
    sel: Select,
    /// The child's column holding the parent's key (for a to-one: the
    /// target's primary key)...
    child_key: ColRef,
    /// ...and the parent's column it matches.
    parent_key: Ident,
}

impl<'p> Children<'p> {
    fn new(model: &'static ModelDef, p: &'p PopulateQuery) -> Self {
        let assoc = p.assoc;
        let target = assoc.target();
        let mut sel = Select::new(target.table.into(), row_columns(target));
        sel.filter = p.filter.clone();
        let (child_key, parent_key) = match assoc.kind {
            AssocKind::One => (
                ColRef::Main(target.pk_column().into()),
                Ident::from(assoc.column),
            ),
            AssocKind::Many { .. } => {
                sel.order = with_default_order(target, p.sort.clone());
                sel.limit = p.limit;
                sel.offset = p.skip;
                let child_key = match collection_storage(model, assoc) {
                    CollectionStorage::ForeignKey { via } => ColRef::Main(via.column.into()),
                    CollectionStorage::Join(j) => {
                        sel.join = Some(Join {
                            table: j.table.into(),
                            child_column: j.child_column.into(),
                            target_pk: target.pk_column().into(),
                        });
                        ColRef::Join(j.parent_column.clone().into())
                    }
                };
                (child_key, Ident::from(model.pk_column()))
            }
        };
        Children {
            p,
            sel,
            child_key,
            parent_key,
        }
    }

    /// The children as a select nested in their parents' statement.
    fn nested(self) -> Nested {
        Nested {
            select: self.sel,
            child_key: self.child_key,
            parent_key: self.parent_key,
        }
    }

    /// Reads the children of every record with one query (an `IN` list over
    /// the parents, a window for a per-parent limit) and attaches them.
    async fn populate(
        self,
        conn: &mut dyn Conn,
        model: &'static ModelDef,
        records: &mut [Record],
    ) -> Result<()> {
        if self.p.assoc.is_collection() {
            self.populate_collection(conn, model, records).await
        } else {
            self.populate_to_one(conn, records).await
        }
    }

    /// The children's records, projected as a nested read projects them.
    fn shape(&self) -> Shape {
        Shape::new(self.p.assoc.target(), &self.p.select, &self.p.omit, &[])
    }

    /// A to-one: the records the keys point at, by key.
    async fn populate_to_one(self, conn: &mut dyn Conn, records: &mut [Record]) -> Result<()> {
        let shape = self.shape();
        let Children { p, sel, .. } = self;
        let assoc = p.assoc;
        let target = assoc.target();
        let mut keys: Vec<Pk> = records
            .iter()
            .filter_map(|r| r.get(assoc.name).and_then(Pk::from_json))
            .collect();
        keys.sort();
        keys.dedup();
        let keys: Vec<SqlValue> = keys.iter().map(SqlValue::from_pk).collect();
        let col = ColRef::Main(target.pk_column().into());
        let by_pk: HashMap<Pk, Record> = fetch_in_chunks(conn, &sel, &col, &keys)
            .await?
            .into_iter()
            .map(|mut row| {
                let rec = shape.record(&mut row);
                (target.key_of(&rec).unwrap_or(Pk::Int(0)), rec)
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
        Ok(())
    }

    /// A collection: every parent's children in one query, grouped by the
    /// column that ties a child row to its parent.
    async fn populate_collection(
        self,
        conn: &mut dyn Conn,
        model: &'static ModelDef,
        records: &mut [Record],
    ) -> Result<()> {
        let shape = self.shape();
        let Children {
            p,
            mut sel,
            child_key,
            ..
        } = self;
        let parents: Vec<SqlValue> = records
            .iter()
            .filter_map(|r| model.key_of(r))
            .map(|k| SqlValue::from_pk(&k))
            .collect();
        // The column holding each child row's parent: the child's own key,
        // or the join table's, read as one more column.
        let parent_at = match sel.columns.iter().position(|(c, _)| *c == child_key) {
            Some(i) => i,
            None => {
                sel.columns
                    .push((child_key.clone(), model.pk_kind.attr_type()));
                sel.columns.len() - 1
            }
        };
        if sel.limit.is_some() || sel.offset > 0 {
            sel.partition = Some(child_key.clone());
        }
        let mut groups: HashMap<Pk, Vec<Record>> = HashMap::new();
        for mut row in fetch_in_chunks(conn, &sel, &child_key, &parents).await? {
            // Read before the projection, which may leave the key out.
            let parent = row.get(parent_at).and_then(Pk::from_json);
            let rec = shape.record(&mut row);
            if let Some(parent) = parent {
                groups.entry(parent).or_default().push(rec);
            }
        }
        for r in records.iter_mut() {
            let kids = model
                .key_of(r)
                .and_then(|k| groups.remove(&k))
                .unwrap_or_default();
            attach(p, r, kids);
        }
        Ok(())
    }
}

/// The rows of `sel` whose `col` is one of `keys`, fetched
/// [`KEYS_PER_STATEMENT`] keys at a time (a page of parents may hold more
/// keys than one statement can bind). No keys, no rows.
async fn fetch_in_chunks(
    conn: &mut dyn Conn,
    sel: &Select,
    col: &ColRef,
    keys: &[SqlValue],
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let mut part = sel.clone();
        part.filter = Filter::In {
            col: col.clone(),
            values: chunk.to_vec(),
            negated: false,
        }
        .and(part.filter);
        rows.extend(conn.fetch(&part).await?);
    }
    Ok(rows)
}

/// Reads record `id` with what `populate` names; `lock` locks its row
/// for the rest of the transaction.
async fn load_by_key(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    id: &Pk,
    populate: Vec<PopulateQuery>,
    lock: bool,
) -> Result<Option<Record>> {
    load_single(conn, model, &Query::by_pk(model, id, populate), lock).await
}

/// Reads a record inside a transaction, locking its row; 404 if missing.
pub(crate) async fn fetch_locked(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    id: &Pk,
    populate: Vec<PopulateQuery>,
) -> Result<Record> {
    load_by_key(conn, model, id, populate, true)
        .await?
        .ok_or(Error::NotFound)
}

/// Reads back a record written in this transaction.
pub(crate) async fn refetch(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    id: &Pk,
    populate: Vec<PopulateQuery>,
) -> Result<Record> {
    let missing = || {
        let what = format!("could not find `{}` {id} after writing it", model.identity);
        Error::Store(StoreError::Database(what.into()))
    };
    load_by_key(conn, model, id, populate, false)
        .await?
        .ok_or_else(missing)
}

/// Reads back, populated by default, a record written in this transaction.
pub(crate) async fn refetch_populated(
    conn: &mut dyn Conn,
    model: &'static ModelDef,
    id: &Pk,
) -> Result<Record> {
    refetch(conn, model, id, super::default_populates(model)).await
}
