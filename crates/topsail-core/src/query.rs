/*!
The column-level query AST a [`Store`](crate::store::Store) renders to SQL.

Criteria are normalised against a [`ModelDef`](crate::model::ModelDef) into
these types, so every identifier here comes from model metadata and every
value is a typed [`SqlValue`] that the store binds as a parameter.
*/

use std::borrow::Cow;

use crate::model::AttrType;
use crate::value::SqlValue;

/// A table or column name taken from model metadata.
pub type Ident = Cow<'static, str>;

/// Which table of a [`Select`] a column belongs to.
#[derive(Debug, Clone, PartialEq)]
pub enum ColRef {
    /// A column of the main table.
    Main(Ident),
    /// A column of the join table (many-to-many populate).
    Join(Ident),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A boolean filter over the columns of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Matches every row.
    True,
    /// Matches no row.
    False,
    /// All of these.
    And(Vec<Filter>),
    /// Any of these.
    Or(Vec<Filter>),
    /// `col op value`.
    Cmp {
        /// The column.
        col: ColRef,
        /// The operator.
        op: CmpOp,
        /// The bound value.
        value: SqlValue,
    },
    /// `col [NOT] IN (values)`; never empty (empty lists normalise to
    /// `True`/`False`).
    In {
        /// The column.
        col: ColRef,
        /// The bound values.
        values: Vec<SqlValue>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `col IS [NOT] NULL`.
    Null {
        /// The column.
        col: ColRef,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// A case-insensitive pattern match; `pattern` is a SQL `LIKE` pattern
    /// with `\` as the escape character.
    Like {
        /// The column.
        col: ColRef,
        /// The pattern.
        pattern: String,
    },
}

impl Filter {
    /// `self AND other`, flattening trivial cases.
    pub fn and(self, other: Filter) -> Filter {
        match (self, other) {
            (Filter::True, f) | (f, Filter::True) => f,
            (Filter::False, _) | (_, Filter::False) => Filter::False,
            (Filter::And(mut a), Filter::And(b)) => {
                a.extend(b);
                Filter::And(a)
            }
            (Filter::And(mut a), f) | (f, Filter::And(mut a)) => {
                a.push(f);
                Filter::And(a)
            }
            (a, b) => Filter::And(vec![a, b]),
        }
    }

    /// `col IN values` on the main table, `False` when `values` is empty.
    pub fn any_of(col: Ident, values: Vec<SqlValue>) -> Filter {
        if values.is_empty() {
            Filter::False
        } else {
            Filter::In {
                col: ColRef::Main(col),
                values,
                negated: false,
            }
        }
    }

    /// `col = value` on the main table.
    pub fn eq(col: Ident, value: SqlValue) -> Filter {
        Filter::Cmp {
            col: ColRef::Main(col),
            op: CmpOp::Eq,
            value,
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

/// A many-to-many join for populating a collection through its join table:
/// `JOIN join ON join.child_column = main.target_pk`.
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    /// The join table.
    pub table: Ident,
    /// The join-table column holding the child (main-table) key.
    pub child_column: Ident,
    /// The main table's primary key column.
    pub target_pk: Ident,
}

/// A `SELECT` over one table (optionally joined to a join table).
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// The main table.
    pub table: Ident,
    /// The columns to return, with their types (for decoding).
    pub columns: Vec<(ColRef, AttrType)>,
    /// The row filter.
    pub filter: Filter,
    /// Sort order over main-table columns.
    pub order: Vec<(Ident, Dir)>,
    /// At most this many rows (per partition when `partition` is set).
    pub limit: Option<u64>,
    /// Skip this many rows (per partition when `partition` is set).
    pub offset: u64,
    /// A join table to go through.
    pub join: Option<Join>,
    /// Apply `limit`/`offset` per value of this column (populating several
    /// parents in one query), with a window function.
    pub partition: Option<ColRef>,
    /// Lock the selected rows until the transaction ends (`FOR UPDATE` on
    /// PostgreSQL; SQLite write transactions are already exclusive).
    pub lock: bool,
    /// Associated rows read in the same statement, one output column each
    /// after `columns` (see [`Nested`]).
    pub nested: Vec<Nested>,
}

/// The rows of another table that belong to each row of a [`Select`], read
/// in the same statement (a correlated subquery) so a record and what it
/// populates cost one round trip.
///
/// Each comes back as one more column of the parent row: an array with one
/// array per child row, holding the values of `select.columns` in order.
/// The child's `filter`, `order`, `limit` and `offset` apply per parent;
/// `partition`, `lock` and `nested` are not used.
#[derive(Debug, Clone, PartialEq)]
pub struct Nested {
    /// The child rows to read.
    pub select: Select,
    /// The child's column (own or join table) that must equal...
    pub child_key: ColRef,
    /// ...this column of the parent's main table.
    pub parent_key: Ident,
}

impl Select {
    /// A select of `columns` from `table` with no filter, order or limit.
    pub fn new(table: Ident, columns: Vec<(ColRef, AttrType)>) -> Self {
        Select {
            table,
            columns,
            filter: Filter::True,
            order: Vec::new(),
            limit: None,
            offset: 0,
            join: None,
            partition: None,
            lock: false,
            nested: Vec::new(),
        }
    }
}

/// An `INSERT` of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Insert {
    /// The table.
    pub table: Ident,
    /// Column values.
    pub values: Vec<(Ident, SqlValue)>,
    /// Return these columns of the inserted row (with their types).
    pub returning: Vec<(Ident, AttrType)>,
    /// Do nothing when a unique index would be violated (join rows).
    pub ignore_conflict: bool,
}

/// An `UPDATE` of the rows matching a filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The table.
    pub table: Ident,
    /// Column values to set.
    pub set: Vec<(Ident, SqlValue)>,
    /// The rows to change.
    pub filter: Filter,
}

/// A `DELETE` of the rows matching a filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    /// The table.
    pub table: Ident,
    /// The rows to delete.
    pub filter: Filter,
}
