/*!
Renders the core query AST to SQL text with `$N` placeholders (SQLite honours
their numbering too, so one renderer serves both dialects).

Every value goes into [`Built::binds`]; the text holds only identifiers from
model metadata (quoted), fixed keywords, and row counts (limits and
offsets, numbers topsail parsed; see `Renderer::count`).
*/

use std::fmt::Write;

use topsail_core::query::{CmpOp, ColRef, Delete, Dir, Filter, Insert, Nested, Select, Update};
use topsail_core::store::Dialect;
use topsail_core::value::SqlValue;

/// The most columns of a nested child row in one JSON array call
/// (PostgreSQL takes at most 100 function arguments, SQLite 127 by
/// default). A wider row is an array of such arrays, flattened on reading.
pub(crate) const NESTED_CHUNK: usize = 90;

/// SQL text and the values bound to its placeholders, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// The statement.
    pub sql: String,
    /// The parameter values (`$1` is `binds[0]`).
    pub binds: Vec<SqlValue>,
}

/// Quotes an identifier. Identifiers come from model metadata; a quote in
/// one is doubled all the same, so no name can end the quoting.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

struct Renderer {
    dialect: Dialect,
    sql: String,
    binds: Vec<SqlValue>,
    /// The alias main-table columns are qualified with (`"t"` in selects,
    /// `"n"` in a nested one), or none (update/delete).
    main: Option<&'static str>,
    /// The alias of the join table (`"j"`, or `"m"` in a nested select).
    join: &'static str,
}

impl Renderer {
    fn new(dialect: Dialect, qualify: bool) -> Self {
        Renderer {
            dialect,
            sql: String::with_capacity(128),
            binds: Vec::new(),
            main: qualify.then_some("\"t\""),
            join: "\"j\"",
        }
    }

    fn bind(&mut self, v: SqlValue) {
        self.binds.push(v);
        let _ = write!(self.sql, "${}", self.binds.len());
    }

    fn col(&mut self, c: &ColRef) {
        let alias = match c {
            ColRef::Main(_) => self.main,
            ColRef::Join(_) => Some(self.join),
        };
        if let Some(alias) = alias {
            self.sql.push_str(alias);
            self.sql.push('.');
        }
        let (ColRef::Main(name) | ColRef::Join(name)) = c;
        self.sql.push_str(&quote(name));
    }

    /// `(a OR b OR ...)`, grouped into a balanced tree of parentheses once
    /// it is long: SQLite parses `a OR b OR c` as a left-deep tree and
    /// refuses one deeper than 1,000 ("expression tree is too large"), so a
    /// `where` of thousands of terms stays about 40 deep instead.
    fn balanced(&mut self, parts: &[Filter], sep: &str) {
        const FLAT: usize = 32;
        self.sql.push('(');
        if parts.len() <= FLAT {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    self.sql.push_str(sep);
                }
                self.filter(p);
            }
        } else {
            let (left, right) = parts.split_at(parts.len() / 2);
            self.balanced(left, sep);
            self.sql.push_str(sep);
            self.balanced(right, sep);
        }
        self.sql.push(')');
    }

    fn filter(&mut self, f: &Filter) {
        match f {
            Filter::True => self.sql.push_str("1=1"),
            Filter::False => self.sql.push_str("1=0"),
            Filter::And(parts) | Filter::Or(parts) if parts.is_empty() => {
                self.sql.push_str(if matches!(f, Filter::And(_)) {
                    "1=1"
                } else {
                    "1=0"
                })
            }
            Filter::And(parts) | Filter::Or(parts) => {
                let sep = if matches!(f, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                self.balanced(parts, sep);
            }
            Filter::Cmp { col, op, value } => {
                self.col(col);
                self.sql.push_str(match op {
                    CmpOp::Eq => " = ",
                    CmpOp::Ne => " <> ",
                    CmpOp::Lt => " < ",
                    CmpOp::Le => " <= ",
                    CmpOp::Gt => " > ",
                    CmpOp::Ge => " >= ",
                });
                self.bind(value.clone());
            }
            Filter::In {
                col,
                values,
                negated,
            } => {
                self.col(col);
                self.sql
                    .push_str(if *negated { " NOT IN (" } else { " IN (" });
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        self.sql.push_str(", ");
                    }
                    self.bind(v.clone());
                }
                self.sql.push(')');
            }
            Filter::Null { col, negated } => {
                self.col(col);
                self.sql
                    .push_str(if *negated { " IS NOT NULL" } else { " IS NULL" });
            }
            Filter::Like { col, pattern } => {
                // Case-insensitive on both dialects, as Sails' SQL adapters
                // are: ILIKE on PostgreSQL; SQLite's LIKE folds ASCII only.
                self.col(col);
                self.sql.push_str(match self.dialect {
                    Dialect::Postgres => " ILIKE ",
                    Dialect::Sqlite => " LIKE ",
                });
                self.bind(SqlValue::Text(pattern.clone()));
                self.sql.push_str(" ESCAPE '\\'");
            }
        }
    }

    fn order(&mut self, order: &[(topsail_core::query::Ident, Dir)], prefix: &str) {
        for (i, (c, d)) in order.iter().enumerate() {
            self.sql.push_str(if i == 0 { " ORDER BY " } else { ", " });
            self.sql.push_str(prefix);
            self.sql.push_str(&quote(c));
            self.sql
                .push_str(if *d == Dir::Asc { " ASC" } else { " DESC" });
        }
    }

    /// A row count (limit, offset) as a literal, not a parameter: PostgreSQL
    /// plans a prepared statement once for all parameter values, and with an
    /// unknown limit it costs a query as if it returned a tenth of the table
    /// (choosing worse plans, and JIT-compiling each execution of a
    /// populating find on a large table). The number is a `u64` topsail
    /// parsed, never client text.
    fn count(&mut self, n: u64) {
        let _ = write!(self.sql, "{}", n.min(i64::MAX as u64));
    }

    /// `, <main>."col" AS "o0", ...`: the sort keys, projected for an outer
    /// `ORDER BY` (see [`Renderer::order_by_keys`]).
    fn sort_keys(&mut self, order: &[(topsail_core::query::Ident, Dir)]) {
        let main = self.main.unwrap_or("\"t\"");
        for (i, (c, _)) in order.iter().enumerate() {
            let _ = write!(self.sql, ", {main}.{} AS \"o{i}\"", quote(c));
        }
    }

    /// ` FROM <table> AS <main>`, joined to the join table when there is one.
    fn from(&mut self, q: &Select) {
        let (main, join) = (self.main.unwrap_or("\"t\""), self.join);
        let _ = write!(self.sql, " FROM {} AS {main}", quote(&q.table));
        if let Some(j) = &q.join {
            let _ = write!(
                self.sql,
                " JOIN {} AS {join} ON {join}.{} = {main}.{}",
                quote(&j.table),
                quote(&j.child_column),
                quote(&j.target_pk)
            );
        }
    }

    /// `ORDER BY "o0", "o1"...`: the sort keys an inner select projected.
    fn order_by_keys(&mut self, order: &[(topsail_core::query::Ident, Dir)]) {
        for (i, (_, d)) in order.iter().enumerate() {
            self.sql.push_str(if i == 0 { " ORDER BY " } else { ", " });
            let _ = write!(
                self.sql,
                "\"o{i}\"{}",
                if *d == Dir::Asc { " ASC" } else { " DESC" }
            );
        }
    }

    fn limit_offset(&mut self, limit: Option<u64>, offset: u64) {
        match (limit, offset) {
            (Some(l), off) => {
                self.sql.push_str(" LIMIT ");
                self.count(l);
                if off > 0 {
                    self.sql.push_str(" OFFSET ");
                    self.count(off);
                }
            }
            (None, 0) => {}
            (None, off) => {
                // SQLite needs a LIMIT before OFFSET; -1 means none.
                if self.dialect == Dialect::Sqlite {
                    self.sql.push_str(" LIMIT -1");
                }
                self.sql.push_str(" OFFSET ");
                self.count(off);
            }
        }
    }

    /// A [`Nested`] select as one output column `"x{k}"`: a correlated
    /// subquery aggregating the child rows, in order, into a JSON array of
    /// arrays (text). The inner select applies the per-parent limit; the
    /// aggregate's own `ORDER BY` keeps the order (a subquery's order is not
    /// guaranteed to survive aggregation).
    fn nested(&mut self, n: &Nested, k: usize) {
        let q = &n.select;
        let outer = self.main.unwrap_or("\"t\"");
        let pg = self.dialect == Dialect::Postgres;
        let array = if pg {
            "json_build_array("
        } else {
            "json_array("
        };
        self.sql.push_str(if pg {
            "(SELECT COALESCE(json_agg("
        } else {
            "(SELECT json_group_array("
        });
        let wide = q.columns.len() > NESTED_CHUNK;
        if wide {
            self.sql.push_str(array);
        }
        for chunk in 0..q.columns.len().div_ceil(NESTED_CHUNK) {
            if chunk > 0 {
                self.sql.push_str(", ");
            }
            self.sql.push_str(array);
            let start = chunk * NESTED_CHUNK;
            for i in start..q.columns.len().min(start + NESTED_CHUNK) {
                if i > start {
                    self.sql.push_str(", ");
                }
                let _ = write!(self.sql, "\"c{i}\"");
            }
            self.sql.push(')');
        }
        if wide {
            self.sql.push(')');
        }
        self.order_by_keys(&q.order);
        self.sql.push_str(if pg { "), '[]')::text" } else { ")" });
        let windowed = q.limit.is_some() || q.offset > 0;
        // PostgreSQL plans a prepared statement generically, not knowing the
        // bound limit: it may then walk the child table in sort order, testing
        // every row for this parent, instead of finding the parent's few rows
        // by index and sorting them. `OFFSET 0` fences the parent filter so it
        // runs first, as the window-function form did. (SQLite finds them by
        // the parent key's index either way.)
        let fence = windowed && pg;
        self.sql.push_str(if fence {
            " FROM (SELECT * FROM (SELECT "
        } else {
            " FROM (SELECT "
        });
        let (main, join) = (self.main, self.join);
        (self.main, self.join) = (Some("\"n\""), "\"m\"");
        for (i, (c, _)) in q.columns.iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.col(c);
            let _ = write!(self.sql, " AS \"c{i}\"");
        }
        self.sort_keys(&q.order);
        self.from(q);
        self.sql.push_str(" WHERE ");
        self.col(&n.child_key);
        let _ = write!(self.sql, " = {outer}.{}", quote(&n.parent_key));
        if q.filter != Filter::True {
            self.sql.push_str(" AND ");
            self.filter(&q.filter);
        }
        if fence {
            self.sql.push_str(" OFFSET 0) AS \"f\"");
            self.order_by_keys(&q.order);
            self.limit_offset(q.limit, q.offset);
        } else if windowed {
            self.order(&q.order, "\"n\".");
            self.limit_offset(q.limit, q.offset);
        }
        (self.main, self.join) = (main, join);
        let _ = write!(self.sql, ") AS \"s\") AS \"x{k}\"");
    }

    fn finish(self) -> Built {
        Built {
            sql: self.sql,
            binds: self.binds,
        }
    }
}

/// Renders a select. Output columns are `c0..cN` in the order of
/// `q.columns`.
pub fn select(q: &Select, dialect: Dialect) -> Built {
    let mut r = Renderer::new(dialect, true);
    let partitioned = q.partition.is_some();
    if partitioned {
        r.sql.push_str("SELECT ");
        for i in 0..q.columns.len() {
            if i > 0 {
                r.sql.push_str(", ");
            }
            let _ = write!(r.sql, "\"c{i}\"");
        }
        for k in 0..q.nested.len() {
            let _ = write!(r.sql, ", \"x{k}\"");
        }
        r.sql.push_str(" FROM (");
    }
    r.sql.push_str("SELECT ");
    for (i, (c, _)) in q.columns.iter().enumerate() {
        if i > 0 {
            r.sql.push_str(", ");
        }
        r.col(c);
        let _ = write!(r.sql, " AS \"c{i}\"");
    }
    for (k, n) in q.nested.iter().enumerate() {
        r.sql.push_str(", ");
        r.nested(n, k);
    }
    if let Some(p) = &q.partition {
        r.sql.push_str(", ROW_NUMBER() OVER (PARTITION BY ");
        r.col(p);
        // The window's order is the populate's sort order.
        let order = q.order.clone();
        let mut first = true;
        for (c, d) in &order {
            r.sql.push_str(if first { " ORDER BY " } else { ", " });
            first = false;
            r.sql.push_str("\"t\".");
            r.sql.push_str(&quote(c));
            r.sql
                .push_str(if *d == Dir::Asc { " ASC" } else { " DESC" });
        }
        r.sql.push_str(") AS \"__rn\"");
        // Keep the sort keys for the outer ORDER BY.
        r.sort_keys(&order);
    }
    r.from(q);
    if q.filter != Filter::True {
        r.sql.push_str(" WHERE ");
        r.filter(&q.filter);
    }
    if partitioned {
        r.sql.push_str(") AS \"s\" WHERE \"__rn\" > ");
        r.count(q.offset);
        if let Some(limit) = q.limit {
            r.sql.push_str(" AND \"__rn\" <= ");
            r.count(q.offset.saturating_add(limit));
        }
        r.order_by_keys(&q.order);
        return r.finish();
    }
    r.order(&q.order, "\"t\".");
    r.limit_offset(q.limit, q.offset);
    if q.lock && dialect == Dialect::Postgres && q.join.is_none() {
        r.sql.push_str(" FOR UPDATE OF \"t\"");
    }
    r.finish()
}

/// Renders `SELECT COUNT(*)` over `q.table` and `q.filter`.
pub fn count(q: &Select, dialect: Dialect) -> Built {
    let mut r = Renderer::new(dialect, true);
    let _ = write!(r.sql, "SELECT COUNT(*) FROM {} AS \"t\"", quote(&q.table));
    if q.filter != Filter::True {
        r.sql.push_str(" WHERE ");
        r.filter(&q.filter);
    }
    r.finish()
}

/// Renders an insert.
pub fn insert(q: &Insert, dialect: Dialect) -> Built {
    let mut r = Renderer::new(dialect, false);
    let _ = write!(r.sql, "INSERT INTO {}", quote(&q.table));
    if q.values.is_empty() {
        r.sql.push_str(" DEFAULT VALUES");
    } else {
        r.sql.push_str(" (");
        for (i, (c, _)) in q.values.iter().enumerate() {
            if i > 0 {
                r.sql.push_str(", ");
            }
            r.sql.push_str(&quote(c));
        }
        r.sql.push_str(") VALUES (");
        for (i, (_, v)) in q.values.iter().enumerate() {
            if i > 0 {
                r.sql.push_str(", ");
            }
            r.bind(v.clone());
        }
        r.sql.push(')');
    }
    if q.ignore_conflict {
        r.sql.push_str(" ON CONFLICT DO NOTHING");
    }
    for (i, (c, _)) in q.returning.iter().enumerate() {
        r.sql.push_str(if i == 0 { " RETURNING " } else { ", " });
        r.sql.push_str(&quote(c));
    }
    r.finish()
}

/// Renders an update.
pub fn update(q: &Update, dialect: Dialect) -> Built {
    let mut r = Renderer::new(dialect, false);
    let _ = write!(r.sql, "UPDATE {} SET ", quote(&q.table));
    for (i, (c, v)) in q.set.iter().enumerate() {
        if i > 0 {
            r.sql.push_str(", ");
        }
        r.sql.push_str(&quote(c));
        r.sql.push_str(" = ");
        r.bind(v.clone());
    }
    r.sql.push_str(" WHERE ");
    r.filter(&q.filter);
    r.finish()
}

/// Renders a delete.
pub fn delete(q: &Delete, dialect: Dialect) -> Built {
    let mut r = Renderer::new(dialect, false);
    let _ = write!(r.sql, "DELETE FROM {} WHERE ", quote(&q.table));
    r.filter(&q.filter);
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use topsail_core::model::AttrType;
    use topsail_core::query::Join;

    fn main(c: &'static str) -> ColRef {
        ColRef::Main(c.into())
    }

    #[test]
    fn values_are_bound_never_inlined() {
        let mut q = Select::new(
            "user".into(),
            vec![
                (main("id"), AttrType::Integer),
                (main("name"), AttrType::String),
            ],
        );
        let evil = "x'); DROP TABLE \"user\"; --";
        q.filter = Filter::Or(vec![
            Filter::eq("name".into(), SqlValue::Text(evil.into())),
            Filter::Like {
                col: main("name"),
                pattern: format!("%{evil}%"),
            },
        ]);
        q.order = vec![("name".into(), Dir::Desc)];
        q.limit = Some(30);
        let b = select(&q, Dialect::Postgres);
        assert!(!b.sql.contains("DROP"), "{}", b.sql);
        assert_eq!(
            b.sql,
            "SELECT \"t\".\"id\" AS \"c0\", \"t\".\"name\" AS \"c1\" FROM \"user\" AS \"t\" WHERE (\"t\".\"name\" = $1 OR \"t\".\"name\" ILIKE $2 ESCAPE '\\') ORDER BY \"t\".\"name\" DESC LIMIT 30"
        );
        assert_eq!(b.binds.len(), 2, "row counts are literals");
        assert_eq!(b.binds[0], SqlValue::Text(evil.into()));
        assert!(select(&q, Dialect::Sqlite).sql.contains(" LIKE $2 ESCAPE"));
    }

    #[test]
    fn identifiers_cannot_escape_their_quotes() {
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn offset_without_limit_is_valid_on_sqlite() {
        let mut q = Select::new("pet".into(), vec![(main("id"), AttrType::Integer)]);
        q.offset = 5;
        assert_eq!(
            select(&q, Dialect::Sqlite).sql,
            "SELECT \"t\".\"id\" AS \"c0\" FROM \"pet\" AS \"t\" LIMIT -1 OFFSET 5"
        );
        assert_eq!(
            select(&q, Dialect::Postgres).sql,
            "SELECT \"t\".\"id\" AS \"c0\" FROM \"pet\" AS \"t\" OFFSET 5"
        );
    }

    #[test]
    fn a_per_parent_limit_uses_a_window() {
        let mut q = Select::new(
            "tag".into(),
            vec![
                (main("id"), AttrType::Integer),
                (ColRef::Join("pet_tags".into()), AttrType::Integer),
            ],
        );
        q.join = Some(Join {
            table: "pet_tags__tag_pets".into(),
            child_column: "tag_pets".into(),
            target_pk: "id".into(),
        });
        q.filter = Filter::In {
            col: ColRef::Join("pet_tags".into()),
            values: vec![SqlValue::Int(1), SqlValue::Int(2)],
            negated: false,
        };
        q.order = vec![("id".into(), Dir::Asc)];
        q.limit = Some(30);
        q.partition = Some(ColRef::Join("pet_tags".into()));
        let b = select(&q, Dialect::Sqlite);
        assert_eq!(
            b.sql,
            "SELECT \"c0\", \"c1\" FROM (SELECT \"t\".\"id\" AS \"c0\", \"j\".\"pet_tags\" AS \"c1\", ROW_NUMBER() OVER (PARTITION BY \"j\".\"pet_tags\" ORDER BY \"t\".\"id\" ASC) AS \"__rn\", \"t\".\"id\" AS \"o0\" FROM \"tag\" AS \"t\" JOIN \"pet_tags__tag_pets\" AS \"j\" ON \"j\".\"tag_pets\" = \"t\".\"id\" WHERE \"j\".\"pet_tags\" IN ($1, $2)) AS \"s\" WHERE \"__rn\" > 0 AND \"__rn\" <= 30 ORDER BY \"o0\" ASC"
        );
        assert_eq!(b.binds.len(), 2);
    }

    #[test]
    fn a_nested_collection_is_a_correlated_aggregate() {
        let mut tags = Select::new("tag".into(), vec![(main("id"), AttrType::Integer)]);
        tags.join = Some(Join {
            table: "pet_tags".into(),
            child_column: "tag".into(),
            target_pk: "id".into(),
        });
        tags.filter = Filter::eq("label".into(), SqlValue::Text("x".into()));
        tags.order = vec![("id".into(), Dir::Desc)];
        tags.limit = Some(30);
        let mut q = Select::new("pet".into(), vec![(main("id"), AttrType::Integer)]);
        q.filter = Filter::eq("id".into(), SqlValue::Int(7));
        q.nested = vec![Nested {
            select: tags,
            child_key: ColRef::Join("pet".into()),
            parent_key: "id".into(),
        }];
        let b = select(&q, Dialect::Postgres);
        assert_eq!(
            b.sql,
            "SELECT \"t\".\"id\" AS \"c0\", (SELECT COALESCE(json_agg(json_build_array(\"c0\") ORDER BY \"o0\" DESC), '[]')::text FROM (SELECT * FROM (SELECT \"n\".\"id\" AS \"c0\", \"n\".\"id\" AS \"o0\" FROM \"tag\" AS \"n\" JOIN \"pet_tags\" AS \"m\" ON \"m\".\"tag\" = \"n\".\"id\" WHERE \"m\".\"pet\" = \"t\".\"id\" AND \"n\".\"label\" = $1 OFFSET 0) AS \"f\" ORDER BY \"o0\" DESC LIMIT 30) AS \"s\") AS \"x0\" FROM \"pet\" AS \"t\" WHERE \"t\".\"id\" = $2",
            "the parent filter is fenced off from the window on PostgreSQL"
        );
        // Binds in text order: the child's, then the parent's.
        assert_eq!(b.binds, [SqlValue::Text("x".into()), SqlValue::Int(7)]);
        assert_eq!(
            select(&q, Dialect::Sqlite).sql,
            "SELECT \"t\".\"id\" AS \"c0\", (SELECT json_group_array(json_array(\"c0\") ORDER BY \"o0\" DESC) FROM (SELECT \"n\".\"id\" AS \"c0\", \"n\".\"id\" AS \"o0\" FROM \"tag\" AS \"n\" JOIN \"pet_tags\" AS \"m\" ON \"m\".\"tag\" = \"n\".\"id\" WHERE \"m\".\"pet\" = \"t\".\"id\" AND \"n\".\"label\" = $1 ORDER BY \"n\".\"id\" DESC LIMIT 30) AS \"s\") AS \"x0\" FROM \"pet\" AS \"t\" WHERE \"t\".\"id\" = $2"
        );
    }

    #[test]
    fn writes_render_with_binds() {
        let ins = Insert {
            table: "pet".into(),
            values: vec![
                ("name".into(), SqlValue::Text("Rex".into())),
                ("owner".into(), SqlValue::Null(AttrType::Integer)),
            ],
            returning: vec![("id".into(), AttrType::Integer)],
            ignore_conflict: false,
        };
        assert_eq!(
            insert(&ins, Dialect::Postgres).sql,
            "INSERT INTO \"pet\" (\"name\", \"owner\") VALUES ($1, $2) RETURNING \"id\""
        );
        let upd = Update {
            table: "pet".into(),
            set: vec![("name".into(), SqlValue::Text("Max".into()))],
            filter: Filter::eq("id".into(), SqlValue::Int(3)),
        };
        assert_eq!(
            update(&upd, Dialect::Sqlite).sql,
            "UPDATE \"pet\" SET \"name\" = $1 WHERE \"id\" = $2"
        );
        let del = Delete {
            table: "pet".into(),
            filter: Filter::Null {
                col: main("owner"),
                negated: true,
            },
        };
        assert_eq!(
            delete(&del, Dialect::Sqlite).sql,
            "DELETE FROM \"pet\" WHERE \"owner\" IS NOT NULL"
        );
    }

    #[test]
    fn locked_reads_lock_on_postgres_only() {
        let mut q = Select::new("pet".into(), vec![(main("id"), AttrType::Integer)]);
        q.lock = true;
        assert!(
            select(&q, Dialect::Postgres)
                .sql
                .ends_with(" FOR UPDATE OF \"t\"")
        );
        assert!(!select(&q, Dialect::Sqlite).sql.contains("FOR UPDATE"));
    }
}
