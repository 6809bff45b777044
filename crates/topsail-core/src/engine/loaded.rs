/*!
Records as a read loaded them: the store's rows (own columns, then one
nested column per populated association) and one [`Shape`] that names and
projects them, worked out once per query.

A blueprint's answer to a read is written straight from these rows: no
`Record` map (a `String` key and a hash insert per field) is built for a
response that only gets serialised. Callers that want records (the typed API,
app code, the mutations) convert, through the same shape, so both forms carry
the same keys in the same order.
*/

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use crate::criteria::{PopulateQuery, Query};
use crate::model::{AssocKind, ModelDef};
use crate::record::{Pk, Record};
use crate::store::Row;

/// The field of each column of a model's own row (the columns the store is
/// asked for): attributes, then to-one associations.
pub(crate) fn row_field_names(model: &ModelDef) -> impl Iterator<Item = &'static str> + '_ {
    model.attrs.iter().map(|a| a.name).chain(
        model
            .assocs
            .iter()
            .filter(|a| matches!(a.kind, AssocKind::One))
            .map(|a| a.name),
    )
}

/// Rows read for one query, with the shape that turns them into records.
pub(crate) struct Loaded {
    shape: Shape,
    rows: Vec<Row>,
}

/// How a row of one model becomes a record: which fields, in which order,
/// from which columns.
#[derive(Debug)]
pub(super) struct Shape {
    /// The primary key's column (never projected away: `omit` refuses it and
    /// `select` always includes it).
    pk: usize,
    fields: Vec<Field>,
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// A column of the row.
    Column(usize),
    /// A populated association: the child rows of nested column `column`.
    Children {
        column: usize,
        /// A to-one: the first child (or null), not a list.
        one: bool,
        shape: Box<Shape>,
    },
}

impl Shape {
    /// The record of a row of the model's own columns:
    /// attributes, then to-one keys (a populated to-one replaces its key in
    /// place, collections follow in populate order), then `select` and
    /// `omit` applied (populated associations survive a `select`).
    pub(super) fn new(
        model: &ModelDef,
        select: &Option<Vec<&'static str>>,
        omit: &[&'static str],
        populate: &[PopulateQuery],
    ) -> Shape {
        let mut fields: Vec<Field> = row_field_names(model)
            .enumerate()
            .map(|(i, name)| Field {
                name,
                source: Source::Column(i),
            })
            .collect();
        let nested_base = fields.len();
        for (k, p) in populate.iter().enumerate() {
            let source = Source::Children {
                column: nested_base + k,
                one: !p.assoc.is_collection(),
                shape: Box::new(Shape::new(p.assoc.target(), &p.select, &p.omit, &[])),
            };
            match fields.iter_mut().find(|f| f.name == p.assoc.name) {
                Some(f) => f.source = source,
                None => fields.push(Field {
                    name: p.assoc.name,
                    source,
                }),
            }
        }
        fields.retain(|f| {
            let populated = matches!(f.source, Source::Children { .. });
            let selected = select
                .as_ref()
                .is_none_or(|s| populated || s.contains(&f.name));
            selected && !omit.contains(&f.name)
        });
        Shape {
            pk: model
                .attrs
                .iter()
                .position(|a| a.name == model.pk)
                .unwrap_or(0),
            fields,
        }
    }

    /// The child rows of a nested column.
    fn children(row: &[Value], column: usize) -> &[Value] {
        match row.get(column) {
            Some(Value::Array(rows)) => rows,
            _ => &[],
        }
    }

    /// The record of `row`, taking its values.
    pub(super) fn record(&self, row: &mut [Value]) -> Record {
        let mut out = Record::new();
        for f in &self.fields {
            let v = match &f.source {
                Source::Column(i) => row.get_mut(*i).map(std::mem::take).unwrap_or_default(),
                Source::Children { column, one, shape } => {
                    let kids = match row.get_mut(*column) {
                        Some(Value::Array(rows)) => std::mem::take(rows),
                        _ => Vec::new(),
                    };
                    let mut kids = kids.into_iter().map(|k| match k {
                        Value::Array(mut r) => Value::Object(shape.record(&mut r)),
                        _ => Value::Object(Record::new()),
                    });
                    if *one {
                        kids.next().unwrap_or(Value::Null)
                    } else {
                        Value::Array(kids.collect())
                    }
                }
            };
            out.insert(f.name.to_owned(), v);
        }
        out
    }

    fn pk_of(&self, row: &[Value]) -> Option<Pk> {
        row.get(self.pk).and_then(Pk::from_json)
    }
}

impl Loaded {
    /// The rows of `q` over `model`, as [`load_rows`](super::read::load_rows) fetched
    /// them.
    pub(crate) fn new(model: &ModelDef, q: &Query, rows: Vec<Row>) -> Loaded {
        Loaded {
            shape: Shape::new(model, &q.select, &q.omit, &q.populate),
            rows,
        }
    }

    /// How many records.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// No records.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The records, in order.
    pub(crate) fn into_records(self) -> Vec<Record> {
        let shape = self.shape;
        self.rows
            .into_iter()
            .map(|mut r| shape.record(&mut r))
            .collect()
    }

    /// Field `name` of the first record, as the record would have it.
    pub(crate) fn first_field(&self, name: &str) -> Option<Value> {
        let mut row = self.rows.first()?.clone();
        self.shape.record(&mut row).swap_remove(name)
    }

    /// The primary keys of the records, in order.
    pub(crate) fn ids(&self) -> Vec<Pk> {
        self.rows
            .iter()
            .filter_map(|r| self.shape.pk_of(r))
            .collect()
    }

    /// The keys of the records populated through association `name` of each
    /// record (for a to-one, the one record), record by record; `None` when
    /// the association was not populated (or was omitted).
    pub(crate) fn populated_ids(&self, name: &str) -> Option<Vec<Vec<Pk>>> {
        let (column, one, shape) = self.shape.fields.iter().find_map(|f| match &f.source {
            Source::Children { column, one, shape } if f.name == name => {
                Some((*column, *one, shape))
            }
            _ => None,
        })?;
        Some(
            self.rows
                .iter()
                .map(|r| {
                    let kids = Shape::children(r, column);
                    let kids = if one {
                        &kids[..kids.len().min(1)]
                    } else {
                        kids
                    };
                    kids.iter()
                        .filter_map(|k| match k {
                            Value::Array(k) => shape.pk_of(k),
                            _ => None,
                        })
                        .collect()
                })
                .collect(),
        )
    }

    /// The records as a JSON array (a `find`'s answer).
    pub(crate) fn to_json(&self) -> Vec<u8> {
        json_bytes(&self.list())
    }

    /// The first record as a JSON object (a `findOne`'s answer); `None`
    /// when there is none.
    pub(crate) fn first_to_json(&self) -> Option<Vec<u8>> {
        let row = self.rows.first()?;
        Some(json_bytes(&View {
            shape: &self.shape,
            row,
        }))
    }

    fn list(&self) -> List<'_, Row> {
        List {
            shape: &self.shape,
            rows: &self.rows,
        }
    }
}

fn json_bytes(v: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Infallible: every key is a string and every value a `serde_json::Value`.
    serde_json::to_writer(&mut out, v).expect("records serialise to JSON");
    out
}

/// One record, serialised from its row.
struct View<'a> {
    shape: &'a Shape,
    row: &'a [Value],
}

impl Serialize for View<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.shape.fields.len()))?;
        for f in &self.shape.fields {
            match &f.source {
                Source::Column(i) => {
                    map.serialize_entry(f.name, self.row.get(*i).unwrap_or(&Value::Null))?
                }
                Source::Children { column, one, shape } => {
                    let rows = Shape::children(self.row, *column);
                    if *one {
                        match rows.first() {
                            Some(Value::Array(row)) => {
                                map.serialize_entry(f.name, &View { shape, row })?
                            }
                            Some(_) => map.serialize_entry(f.name, &Record::new())?,
                            None => map.serialize_entry(f.name, &Value::Null)?,
                        }
                    } else {
                        map.serialize_entry(f.name, &List { shape, rows })?
                    }
                }
            }
        }
        map.end()
    }
}

/// Records serialised from their rows: the store's `Row`s, or child rows
/// nested as JSON arrays.
struct List<'a, R> {
    shape: &'a Shape,
    rows: &'a [R],
}

/// A row, whichever way it is held.
trait AsRow {
    fn as_row(&self) -> Option<&[Value]>;
}

impl AsRow for Row {
    fn as_row(&self) -> Option<&[Value]> {
        Some(self)
    }
}

impl AsRow for Value {
    fn as_row(&self) -> Option<&[Value]> {
        match self {
            Value::Array(r) => Some(r),
            _ => None,
        }
    }
}

impl<R: AsRow> Serialize for List<'_, R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.rows.len()))?;
        for r in self.rows {
            match r.as_row() {
                Some(row) => seq.serialize_element(&View {
                    shape: self.shape,
                    row,
                })?,
                // A malformed child row reads as an empty record, as
                // `into_records` makes it.
                None => seq.serialize_element(&Record::new())?,
            }
        }
        seq.end()
    }
}
