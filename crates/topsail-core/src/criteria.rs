/*!
The Waterline criteria language: `where` (with its modifiers, `and`, `or`
and the shorthands), `limit`, `skip`, `sort`, `select`, `omit` and
`populate` with subcriteria.

[`Criteria`] is what a client or app code asks for, still in JSON terms; the
router builds it from request parameters and app code builds it with methods.
[`Criteria::normalize`] checks it against a model and turns it into a
[`Query`]: column-level [`Filter`]s with typed, bound values. Every client
mistake becomes a 400 usage error here, never a database error.
*/

use serde_json::{Map, Value};

use crate::error::{Error, Result, UsageCode};
use crate::model::{AssocDef, AttrDef, AttrType, Field, ModelDef};
use crate::query::{CmpOp, ColRef, Dir, Filter, Ident};
use crate::value::{SqlValue, coerce, coerce_pk};

/// The default `limit` of `find` and of populated collections.
pub const DEFAULT_LIMIT: u64 = 30;
/// The deepest `and`/`or` nesting accepted in a `where` clause.
pub const MAX_WHERE_DEPTH: usize = 32;
/// The most terms (comparisons and `in` list items) accepted in a `where`.
pub const MAX_WHERE_TERMS: usize = 5_000;
/// The longest text a `contains`, `startsWith`, `endsWith` or `like` may
/// match, in bytes (SQLite refuses a pattern of 50,000 or more).
pub const MAX_LIKE_TEXT: usize = 10_000;

/// Parameters that are criteria clauses, not loose `where` terms.
pub const CLAUSE_PARAMS: [&str; 6] = ["limit", "skip", "sort", "populate", "select", "omit"];

/// What to populate.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Populate {
    /// Every association; collections capped at [`DEFAULT_LIMIT`].
    #[default]
    All,
    /// Nothing (`populate=false`).
    Nothing,
    /// Only these aliases, each with its own subcriteria.
    Only(Vec<(String, Criteria)>),
}

/// Find criteria, as a client or app code states them.
///
/// ```
/// use topsail_core::criteria::Criteria;
/// use serde_json::json;
///
/// let c = Criteria::new()
///     .filter(json!({"name": {"contains": "o"}, "age": {">": 3}}))
///     .sort("name ASC")
///     .limit(10);
/// assert_eq!(c.limit, Some(json!(10)));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Criteria {
    /// The `where` clause (an object, or the array/scalar pk shorthand).
    pub where_: Option<Value>,
    /// `limit` (a number, or a string that is one).
    pub limit: Option<Value>,
    /// `skip`.
    pub skip: Option<Value>,
    /// `sort`, in any accepted form.
    pub sort: Option<Value>,
    /// `select`: attribute names.
    pub select: Option<Vec<String>>,
    /// `omit`: attribute names.
    pub omit: Option<Vec<String>>,
    /// `populate`.
    pub populate: Populate,
}

impl Criteria {
    /// No constraints: the first 30 records, every association populated.
    pub fn new() -> Self {
        Self::default()
    }

    /// Criteria matching the record with primary key `id`.
    pub fn by_id(id: impl Into<crate::record::Pk>) -> Self {
        Self::new().filter(Value::Array(vec![id.into().to_json()]))
    }

    /// Sets the `where` clause.
    pub fn filter(mut self, where_: Value) -> Self {
        self.where_ = Some(where_);
        self
    }

    /// Sets `limit`.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(Value::from(n));
        self
    }

    /// Sets `skip`.
    pub fn skip(mut self, n: u64) -> Self {
        self.skip = Some(Value::from(n));
        self
    }

    /// Sets `sort` (`"name ASC"`, `[{"age": "DESC"}]`, ...).
    pub fn sort(mut self, sort: impl Into<Value>) -> Self {
        self.sort = Some(sort.into());
        self
    }

    /// Sets `select`.
    pub fn select<I: IntoIterator<Item = S>, S: Into<String>>(mut self, attrs: I) -> Self {
        self.select = Some(attrs.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `omit`.
    pub fn omit<I: IntoIterator<Item = S>, S: Into<String>>(mut self, attrs: I) -> Self {
        self.omit = Some(attrs.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `populate`.
    pub fn populate(mut self, populate: Populate) -> Self {
        self.populate = populate;
        self
    }

    /// Caps how many records these criteria can read at `max`: a `limit`
    /// above it, or none (`limit=-1`), becomes `max`, and so does the limit
    /// of every explicitly populated collection (which has none by
    /// default). The default limit of 30 is below any sensible cap. A
    /// `limit` that does not parse is left for [`normalize`](Self::normalize)
    /// to refuse. (Sails apps do this in `parseBlueprintOptions`.)
    pub fn cap_limit(mut self, max: u64) -> Self {
        self.limit = cap(self.limit.take(), max, false);
        if let Populate::Only(list) = &mut self.populate {
            for (_, sub) in list.iter_mut() {
                sub.limit = cap(sub.limit.take(), max, true);
            }
        }
        self
    }

    /// Builds criteria from request parameters the way the `find` blueprint
    /// does: a `where` parameter (JSON text or an object) or else the loose
    /// parameters, plus the clause parameters. `exclude` names further
    /// parameters that are not loose `where` terms (route parameters).
    pub fn from_params(params: &Map<String, Value>, exclude: &[&str]) -> Result<Self> {
        let mut c = Criteria::new();
        c.where_ = match params.get("where") {
            Some(Value::String(s)) => Some(serde_json::from_str(s).map_err(|e| {
                Error::criteria(format!(
                    "Could not parse the provided `where` clause as JSON: {e}"
                ))
            })?),
            Some(Value::Null) | None => None,
            Some(v) => Some(v.clone()),
        };
        if c.where_.is_none() {
            let loose: Map<String, Value> = params
                .iter()
                .filter(|(k, v)| {
                    !CLAUSE_PARAMS.contains(&k.as_str())
                        && !exclude.contains(&k.as_str())
                        && !v.is_null()
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            c.where_ = Some(Value::Object(loose));
        }
        c.limit = params.get("limit").cloned();
        c.skip = params.get("skip").cloned();
        c.sort = params.get("sort").map(|s| match s {
            Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| s.clone()),
            other => other.clone(),
        });
        c.select = name_list(params.get("select"), "select")?;
        if c.select.is_none() {
            c.omit = name_list(params.get("omit"), "omit")?;
        }
        c.populate = populate_param(params.get("populate"))?;
        Ok(c)
    }

    /// Reads only `select`, `omit` and `populate` from request parameters
    /// (what `findOne`, `create` and the other single-record actions honour).
    pub fn projection_from_params(params: &Map<String, Value>) -> Result<Self> {
        let mut c = Criteria::new();
        c.select = name_list(params.get("select"), "select")?;
        if c.select.is_none() {
            c.omit = name_list(params.get("omit"), "omit")?;
        }
        c.populate = populate_param(params.get("populate"))?;
        Ok(c)
    }

    /// Checks the criteria against `model` and turns them into a [`Query`].
    pub fn normalize(&self, model: &'static ModelDef) -> Result<Query> {
        let filter = match &self.where_ {
            None => Filter::True,
            Some(w) => {
                let mut budget = MAX_WHERE_TERMS;
                normalize_where(model, w, 0, &mut budget)?
            }
        };
        let limit = normalize_limit(self.limit.as_ref())?;
        let skip = match &self.skip {
            None => 0,
            Some(v) => natural(v).ok_or_else(|| {
                Error::criteria(format!("Invalid `skip` ({v}): expected a natural number"))
            })?,
        };
        let sort = normalize_sort(model, self.sort.as_ref())?;
        let select = match &self.select {
            None => None,
            Some(names) if names.iter().any(|n| n == "*") => None,
            Some(names) => {
                let mut out = vec![model.pk];
                for n in names {
                    match model.field(n) {
                        Some(Field::Attr(a)) if !out.contains(&a.name) => out.push(a.name),
                        Some(Field::Attr(_)) => {}
                        Some(Field::Assoc(a)) if !a.is_collection() => out.push(a.name),
                        Some(Field::Assoc(_)) => {
                            return Err(Error::criteria(format!(
                                "Cannot `select` `{n}`: it is a plural association (use `populate` instead)"
                            )));
                        }
                        None => {
                            return Err(Error::criteria(format!(
                                "Cannot `select` `{n}`: it is not a recognized attribute"
                            )));
                        }
                    }
                }
                Some(out)
            }
        };
        let mut omit = Vec::new();
        for n in self.omit.iter().flatten() {
            match model.field(n) {
                Some(Field::Attr(a)) if a.name == model.pk => {
                    return Err(Error::criteria("Cannot `omit` the primary key"));
                }
                Some(Field::Attr(a)) => omit.push(a.name),
                // Waterline drops a plural association from `omit`: it is
                // there only when populated.
                Some(Field::Assoc(a)) if a.is_collection() => {}
                Some(Field::Assoc(a)) => omit.push(a.name),
                None => {
                    return Err(Error::criteria(format!(
                        "Cannot `omit` `{n}`: it is not a recognized attribute"
                    )));
                }
            }
        }
        let populate = normalize_populate(model, &self.populate)?;
        if let Some(p) = populate.iter().find(|p| omit.contains(&p.assoc.name)) {
            return Err(Error::usage(
                UsageCode::InvalidPopulates,
                format!(
                    "Could not populate `{}`.  This query also indicates that this attribute should be omitted.  Cannot populate AND omit an association at the same time!",
                    p.assoc.name
                ),
            ));
        }
        Ok(Query {
            filter,
            limit,
            skip,
            sort,
            select,
            omit,
            populate,
        })
    }
}

/// Criteria checked against a model, ready to run.
#[derive(Debug, Clone)]
pub struct Query {
    /// The row filter.
    pub filter: Filter,
    /// At most this many records; `None` is unlimited.
    pub limit: Option<u64>,
    /// Records to skip.
    pub skip: u64,
    /// Sort order (main-table columns).
    pub sort: Vec<(Ident, Dir)>,
    /// Attributes to return (primary key included); `None` is all.
    pub select: Option<Vec<&'static str>>,
    /// Attributes to leave out.
    pub omit: Vec<&'static str>,
    /// Associations to populate.
    pub populate: Vec<PopulateQuery>,
}

impl Query {
    /// A query for the record with primary key `id`, populating `populate`.
    pub fn by_pk(
        model: &'static ModelDef,
        id: &crate::record::Pk,
        populate: Vec<PopulateQuery>,
    ) -> Self {
        Query {
            filter: Filter::eq(model.pk_column().into(), SqlValue::from_pk(id)),
            limit: Some(1),
            skip: 0,
            sort: Vec::new(),
            select: None,
            omit: Vec::new(),
            populate,
        }
    }
}

/// One association to populate, with its subcriteria.
#[derive(Debug, Clone)]
pub struct PopulateQuery {
    /// The association.
    pub assoc: &'static AssocDef,
    /// Filter over the associated model.
    pub filter: Filter,
    /// Per-parent limit (collections).
    pub limit: Option<u64>,
    /// Per-parent skip (collections).
    pub skip: u64,
    /// Sort order of the associated records.
    pub sort: Vec<(Ident, Dir)>,
    /// Attributes of the associated records to return.
    pub select: Option<Vec<&'static str>>,
    /// Attributes of the associated records to leave out.
    pub omit: Vec<&'static str>,
}

impl PopulateQuery {
    /// Populate `assoc` with the blueprint default: everything, collections
    /// capped at [`DEFAULT_LIMIT`].
    pub fn default_for(assoc: &'static AssocDef) -> Self {
        PopulateQuery {
            assoc,
            filter: Filter::True,
            limit: assoc.is_collection().then_some(DEFAULT_LIMIT),
            skip: 0,
            sort: Vec::new(),
            select: None,
            omit: Vec::new(),
        }
    }
}

/// What `p` loads of `model`'s associations, checked against the model.
pub fn normalize_populate(model: &'static ModelDef, p: &Populate) -> Result<Vec<PopulateQuery>> {
    match p {
        Populate::All => Ok(model
            .assocs
            .iter()
            .map(PopulateQuery::default_for)
            .collect()),
        Populate::Nothing => Ok(Vec::new()),
        Populate::Only(list) => {
            let mut out: Vec<PopulateQuery> = Vec::with_capacity(list.len());
            for (alias, sub) in list {
                let assoc = model.assoc(alias).ok_or_else(|| {
                    Error::usage(
                        UsageCode::InvalidPopulates,
                        format!("Could not populate `{alias}`: there is no association by that name on `{}`", model.identity),
                    )
                })?;
                if out.iter().any(|q| std::ptr::eq(q.assoc, assoc)) {
                    continue;
                }
                let q = sub.normalize_as_populate(assoc)?;
                out.push(q);
            }
            Ok(out)
        }
    }
}

impl Criteria {
    /// Normalises these criteria as the subcriteria of populating `assoc`.
    /// A populate named explicitly has no default limit (only the
    /// populate-everything default caps collections).
    fn normalize_as_populate(&self, assoc: &'static AssocDef) -> Result<PopulateQuery> {
        let target = assoc.target();
        let sub = Criteria {
            populate: Populate::Nothing,
            ..self.clone()
        };
        let q = sub.normalize(target).map_err(|e| match e {
            Error::Usage { details, .. } => Error::usage(
                UsageCode::InvalidPopulates,
                format!(
                    "Could not populate `{}` with the given subcriteria: {details}",
                    assoc.name
                ),
            ),
            other => other,
        })?;
        Ok(PopulateQuery {
            assoc,
            filter: q.filter,
            limit: if self.limit.is_some() { q.limit } else { None },
            skip: q.skip,
            sort: q.sort,
            select: q.select,
            omit: q.omit,
        })
    }
}

/// Reads a `select`/`omit` parameter: a comma list, or an array of names.
fn name_list(v: Option<&Value>, clause: &str) -> Result<Option<Vec<String>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(
            s.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        )),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| {
                Error::criteria(format!(
                    "`{clause}` must be a comma-separated string or an array of attribute names"
                ))
            }),
        Some(other) => Err(Error::criteria(format!(
            "`{clause}` must be a comma-separated string or an array of attribute names, not {other}"
        ))),
    }
}

/// Reads the `populate` parameter: `false`, or aliases separated by commas.
fn populate_param(v: Option<&Value>) -> Result<Populate> {
    let names: Vec<String> = match v {
        None | Some(Value::Null | Value::Bool(false)) => return Ok(Populate::All),
        Some(Value::String(s)) if s.is_empty() => return Ok(Populate::All),
        Some(Value::String(s)) if s == "false" => return Ok(Populate::Nothing),
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_owned()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Error::usage(
                    UsageCode::InvalidPopulates,
                    "`populate` must be a comma-separated list of association names",
                )
            })?,
        Some(other) => {
            return Err(Error::usage(
                UsageCode::InvalidPopulates,
                format!(
                    "Could not populate `{other}`: `populate` must be `false` or a comma-separated list of association names"
                ),
            ));
        }
    };
    Ok(Populate::Only(
        names.into_iter().map(|n| (n, Criteria::new())).collect(),
    ))
}

/// A safe natural number from a JSON number or numeric string.
fn natural(v: &Value) -> Option<u64> {
    let f = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) if !s.trim().is_empty() => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_991.0).then_some(f as u64)
}

/// A `limit` capped at `max`. `unlimited_when_absent`: an absent limit
/// reads everything (an explicit populate) rather than the default 30.
fn cap(limit: Option<Value>, max: u64, unlimited_when_absent: bool) -> Option<Value> {
    let capped = Some(Value::from(max));
    match limit {
        None if unlimited_when_absent => capped,
        None => None,
        Some(v) => match normalize_limit(Some(&v)) {
            Ok(None) => capped,
            Ok(Some(n)) if n > max => capped,
            _ => Some(v),
        },
    }
}

fn normalize_limit(v: Option<&Value>) -> Result<Option<u64>> {
    let Some(v) = v else {
        return Ok(Some(DEFAULT_LIMIT));
    };
    if let Some(n) = natural(v) {
        return Ok(Some(n));
    }
    // Negative integers mean "no limit" (deprecated in Waterline, still honoured).
    let negative = match v {
        Value::Number(n) => n.as_i64().is_some_and(|i| i < 0),
        Value::String(s) => s.trim().parse::<i64>().is_ok_and(|i| i < 0),
        _ => false,
    };
    if negative {
        Ok(None)
    } else {
        Err(Error::criteria(format!(
            "Invalid `limit` ({v}): expected a natural number"
        )))
    }
}

fn sortable(model: &ModelDef, name: &str) -> Result<Ident> {
    match model.field(name) {
        Some(Field::Attr(a)) => Ok(a.column.into()),
        Some(Field::Assoc(a)) if !a.is_collection() => Ok(a.column.into()),
        Some(Field::Assoc(_)) => Err(Error::criteria(format!(
            "Cannot sort by `{name}`: it is a plural association"
        ))),
        None => Err(Error::criteria(format!(
            "Cannot sort by `{name}`: it is not a recognized attribute"
        ))),
    }
}

fn direction(d: &str) -> Result<Dir> {
    match d.to_ascii_uppercase().as_str() {
        "ASC" => Ok(Dir::Asc),
        "DESC" => Ok(Dir::Desc),
        _ => Err(Error::criteria(format!(
            "Invalid sort direction `{d}`: expected `ASC` or `DESC`"
        ))),
    }
}

fn sort_string(model: &ModelDef, s: &str) -> Result<(Ident, Dir)> {
    if s.contains(',') {
        return Err(Error::criteria(format!(
            "Invalid `sort` (`{s}`): a comma-separated list is not supported; use an array like [{{\"name\":\"ASC\"}},{{\"age\":\"DESC\"}}]"
        )));
    }
    let mut parts = s.split_whitespace();
    let attr = parts
        .next()
        .ok_or_else(|| Error::criteria("Invalid `sort`: empty string"))?;
    let dir = parts.next().map(direction).transpose()?.unwrap_or(Dir::Asc);
    if parts.next().is_some() {
        return Err(Error::criteria(format!(
            "Invalid `sort` (`{s}`): expected `<attribute> ASC|DESC`"
        )));
    }
    Ok((sortable(model, attr)?, dir))
}

/// A `sort` given as a dictionary: Waterline's legacy Mongo-style form,
/// `{"name": 1, "age": -1}` (1 ascending, -1 descending). One key with a
/// string direction is a comparator that was meant to be in an array, and
/// is refused as Waterline refuses it.
fn sort_dictionary(
    model: &ModelDef,
    o: &serde_json::Map<String, Value>,
) -> Result<Vec<(Ident, Dir)>> {
    if o.len() == 1 && o.values().all(Value::is_string) {
        return Err(Error::criteria(
            "Invalid `sort`: a dictionary is not supported; wrap it in an array, like [{\"name\":\"ASC\"}]",
        ));
    }
    o.iter()
        .map(|(k, d)| {
            let dir = match d.as_f64() {
                Some(1.0) => Dir::Asc,
                Some(-1.0) => Dir::Desc,
                _ => {
                    return Err(Error::criteria(format!(
                        "Invalid `sort`: as a dictionary it uses -1 and 1 for the direction (like {{\"name\": -1}}), but `{k}` is {d}"
                    )));
                }
            };
            Ok((sortable(model, k)?, dir))
        })
        .collect()
}

fn normalize_sort(model: &ModelDef, v: Option<&Value>) -> Result<Vec<(Ident, Dir)>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![sort_string(model, s)?]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => sort_string(model, s),
                Value::Object(o) if o.len() == 1 => {
                    let (k, d) = o
                        .iter()
                        .next()
                        .ok_or_else(|| Error::criteria("Invalid `sort` item"))?;
                    let dir = d.as_str().ok_or_else(|| {
                        Error::criteria(format!("Invalid sort direction for `{k}`: {d}"))
                    })?;
                    Ok((sortable(model, k)?, direction(dir)?))
                }
                other => Err(Error::criteria(format!(
                    "Invalid `sort` item {other}: expected `\"name ASC\"` or `{{\"name\":\"ASC\"}}`"
                ))),
            })
            .collect(),
        Some(Value::Object(o)) => sort_dictionary(model, o),
        Some(other) => Err(Error::criteria(format!("Invalid `sort` ({other})"))),
    }
}

/// The column and value type a `where` term compares against.
struct Target {
    column: Ident,
    ty: AttrType,
    pk: Option<crate::model::PkKind>,
    name: String,
}

fn where_target(model: &ModelDef, name: &str) -> Result<Target> {
    match model.field(name) {
        Some(Field::Attr(a)) => Ok(attr_target(model, a)),
        Some(Field::Assoc(a)) if !a.is_collection() => {
            let t = a.target();
            Ok(Target {
                column: a.column.into(),
                ty: t.pk_kind.attr_type(),
                pk: Some(t.pk_kind),
                name: name.into(),
            })
        }
        Some(Field::Assoc(_)) => Err(Error::criteria(format!(
            "Cannot filter by `{name}` because it is a plural association"
        ))),
        None if name.contains('.') => Err(Error::criteria(format!(
            "Cannot filter by `{name}`: deep targets are not supported"
        ))),
        None => Err(Error::criteria(format!(
            "Invalid `where` clause: `{name}` is not a recognized attribute for this model"
        ))),
    }
}

fn attr_target(model: &ModelDef, a: &AttrDef) -> Target {
    let pk = (a.name == model.pk).then_some(model.pk_kind);
    Target {
        column: a.column.into(),
        ty: a.ty,
        pk,
        name: a.name.into(),
    }
}

impl Target {
    fn bind(&self, v: &Value) -> Result<SqlValue> {
        if v.is_null() {
            return Ok(SqlValue::Null(self.ty));
        }
        if let Some(kind) = self.pk {
            return coerce_pk(kind, v)
                .map(|pk| SqlValue::from_pk(&pk))
                .map_err(|e| Error::criteria(format!("Invalid value for `{}`: {e}", self.name)));
        }
        let coerced = coerce(self.ty, v)
            .map_err(|e| Error::criteria(format!("Invalid value for `{}`: {e}", self.name)))?;
        Ok(SqlValue::from_json(self.ty, &coerced))
    }

    fn col(&self) -> ColRef {
        ColRef::Main(self.column.clone())
    }
}

fn spend(budget: &mut usize, n: usize) -> Result<()> {
    if *budget < n {
        return Err(Error::criteria(format!(
            "The `where` clause is too large (more than {MAX_WHERE_TERMS} terms)"
        )));
    }
    *budget -= n;
    Ok(())
}

fn normalize_where(
    model: &ModelDef,
    w: &Value,
    depth: usize,
    budget: &mut usize,
) -> Result<Filter> {
    if depth > MAX_WHERE_DEPTH {
        return Err(Error::criteria(format!(
            "The `where` clause is nested too deeply (more than {MAX_WHERE_DEPTH} levels)"
        )));
    }
    let obj = match w {
        Value::Object(o) => o,
        // Shorthand: `where` may be an array of primary keys, or one key.
        Value::Array(_) | Value::Number(_) | Value::String(_) if depth == 0 => {
            let pk = attr_target(model, model.pk_attr());
            return constraint(&pk, w, budget);
        }
        other => {
            return Err(Error::criteria(format!(
                "Invalid `where` clause: expected a dictionary, got {other}"
            )));
        }
    };
    let mut parts = Vec::with_capacity(obj.len());
    for (key, v) in obj {
        let f = match key.as_str() {
            "and" | "or" => {
                let items = v.as_array().ok_or_else(|| {
                    Error::criteria(format!(
                        "Invalid `where` clause: `{key}` must be an array of dictionaries"
                    ))
                })?;
                let subs = items
                    .iter()
                    .map(|i| match i {
                        Value::Object(_) => normalize_where(model, i, depth + 1, budget),
                        other => Err(Error::criteria(format!(
                            "Invalid `{key}` item {other}: expected a dictionary"
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                if key == "and" {
                    subs.into_iter().fold(Filter::True, Filter::and)
                } else if subs.is_empty() {
                    Filter::False
                } else {
                    Filter::Or(subs)
                }
            }
            name => constraint(&where_target(model, name)?, v, budget)?,
        };
        parts.push(f);
    }
    Ok(parts.into_iter().fold(Filter::True, Filter::and))
}

/// The `in` list of a constraint; empty lists normalise away.
fn in_list(t: &Target, items: &[Value], negated: bool, budget: &mut usize) -> Result<Filter> {
    spend(budget, items.len().max(1))?;
    if items.is_empty() {
        return Ok(if negated { Filter::True } else { Filter::False });
    }
    let mut values = Vec::with_capacity(items.len());
    let mut has_null = false;
    for i in items {
        if i.is_null() {
            has_null = true;
        } else {
            values.push(t.bind(i)?);
        }
    }
    let null = Filter::Null {
        col: t.col(),
        negated,
    };
    let list = (!values.is_empty()).then(|| Filter::In {
        col: t.col(),
        values,
        negated,
    });
    Ok(match (list, has_null, negated) {
        (Some(l), false, _) => l,
        (None, _, _) => null,
        (Some(l), true, false) => Filter::Or(vec![l, null]),
        (Some(l), true, true) => Filter::And(vec![l, null]),
    })
}

fn constraint(t: &Target, v: &Value, budget: &mut usize) -> Result<Filter> {
    match v {
        Value::Null => {
            spend(budget, 1)?;
            Ok(Filter::Null {
                col: t.col(),
                negated: false,
            })
        }
        Value::Array(items) => in_list(t, items, false, budget),
        Value::Object(mods) => {
            if mods.is_empty() {
                return Err(Error::criteria(format!(
                    "Invalid constraint for `{}`: an empty dictionary",
                    t.name
                )));
            }
            let mut out = Filter::True;
            for (m, operand) in mods {
                out = out.and(modifier(t, m, operand, budget)?);
            }
            Ok(out)
        }
        scalar => {
            spend(budget, 1)?;
            Ok(Filter::Cmp {
                col: t.col(),
                op: CmpOp::Eq,
                value: t.bind(scalar)?,
            })
        }
    }
}

/// A `like` pattern whose last character is a lone backslash escapes
/// nothing; PostgreSQL refuses it (SQLite matches it literally). It is
/// matched literally on both: doubled, an escaped backslash.
fn literal_trailing_backslash(mut pattern: String) -> String {
    let trailing = pattern.chars().rev().take_while(|c| *c == '\\').count();
    if trailing % 2 == 1 {
        pattern.push('\\');
    }
    pattern
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One `{modifier: operand}` of an attribute's constraint.
fn modifier(t: &Target, m: &str, operand: &Value, budget: &mut usize) -> Result<Filter> {
    match m {
        "<" | "lessThan" => compare(t, m, CmpOp::Lt, operand, budget),
        "<=" | "lessThanOrEqual" => compare(t, m, CmpOp::Le, operand, budget),
        ">" | "greaterThan" => compare(t, m, CmpOp::Gt, operand, budget),
        ">=" | "greaterThanOrEqual" => compare(t, m, CmpOp::Ge, operand, budget),
        "!=" | "not" | "!" | "!==" => not_equal(t, m, operand, budget),
        "in" | "nin" => match operand {
            Value::Array(items) => in_list(t, items, m == "nin", budget),
            other => Err(Error::criteria(format!(
                "Invalid `{m}` modifier for `{}`: expected an array, got {other}",
                t.name
            ))),
        },
        "contains" | "startsWith" | "endsWith" | "like" => like(t, m, operand, budget),
        other => Err(Error::criteria(format!(
            "Unrecognized modifier (`{other}`) within the constraint for `{}`",
            t.name
        ))),
    }
}

/// `<`, `<=`, `>`, `>=`: one value.
fn compare(t: &Target, m: &str, op: CmpOp, operand: &Value, budget: &mut usize) -> Result<Filter> {
    spend(budget, 1)?;
    if operand.is_null() || operand.is_array() || operand.is_object() {
        return Err(Error::criteria(format!(
            "Invalid `{m}` modifier for `{}`: expected a single value, got {operand}",
            t.name
        )));
    }
    Ok(Filter::Cmp {
        col: t.col(),
        op,
        value: t.bind(operand)?,
    })
}

/// `!=`: not in a list, not null, or not a value.
fn not_equal(t: &Target, m: &str, operand: &Value, budget: &mut usize) -> Result<Filter> {
    match operand {
        Value::Array(items) => in_list(t, items, true, budget),
        Value::Null => {
            spend(budget, 1)?;
            Ok(Filter::Null {
                col: t.col(),
                negated: true,
            })
        }
        Value::Object(_) => Err(Error::criteria(format!(
            "Invalid `{m}` modifier for `{}`: expected a value",
            t.name
        ))),
        v => {
            spend(budget, 1)?;
            // SQL `<>` never matches NULL; Waterline's `!=` does.
            Ok(Filter::Or(vec![
                Filter::Cmp {
                    col: t.col(),
                    op: CmpOp::Ne,
                    value: t.bind(v)?,
                },
                Filter::Null {
                    col: t.col(),
                    negated: false,
                },
            ]))
        }
    }
}

/// `contains`, `startsWith`, `endsWith` (the operand matched literally)
/// and `like` (a pattern), on string attributes.
fn like(t: &Target, m: &str, operand: &Value, budget: &mut usize) -> Result<Filter> {
    spend(budget, 1)?;
    if t.ty != AttrType::String {
        return Err(Error::criteria(format!(
            "Cannot use the `{m}` modifier with `{}`: it is only usable with string attributes",
            t.name
        )));
    }
    let s = match operand {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(Error::criteria(format!(
                "Invalid `{m}` modifier for `{}`: expected a string, got {other}",
                t.name
            )));
        }
    };
    if s.len() > MAX_LIKE_TEXT {
        return Err(Error::criteria(format!(
            "Invalid `{m}` modifier for `{}`: the text is {} bytes long; at most {MAX_LIKE_TEXT} are accepted",
            t.name,
            s.len()
        )));
    }
    if s.contains('\0') {
        return Err(Error::criteria(format!(
            "Invalid `{m}` modifier for `{}`: the text holds a NUL character (`\\u0000`)",
            t.name
        )));
    }
    let pattern = match m {
        "contains" => format!("%{}%", escape_like(&s)),
        "startsWith" => format!("{}%", escape_like(&s)),
        "endsWith" => format!("%{}", escape_like(&s)),
        _ => literal_trailing_backslash(s),
    };
    Ok(Filter::Like {
        col: t.col(),
        pattern,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{pet, user};
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn filter(model: &'static ModelDef, w: Value) -> Result<Filter> {
        Criteria::new().filter(w).normalize(model).map(|q| q.filter)
    }

    fn code(e: Error) -> &'static str {
        match e {
            Error::Usage { code, .. } => code.as_str(),
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn loose_params_become_the_where_clause() {
        let c = Criteria::from_params(&params(json!({"name": "Bob", "limit": "5"})), &[]).unwrap();
        assert_eq!(c.where_, Some(json!({"name": "Bob"})));
        let q = c.normalize(user()).unwrap();
        assert_eq!(q.limit, Some(5));
        assert_eq!(
            q.filter,
            Filter::eq("name".into(), SqlValue::Text("Bob".into()))
        );
    }

    #[test]
    fn a_where_param_wins_over_loose_params() {
        let c = Criteria::from_params(
            &params(json!({"where": "{\"name\":\"Bob\"}", "age": "99"})),
            &[],
        )
        .unwrap();
        assert_eq!(c.where_, Some(json!({"name": "Bob"})));
    }

    #[test]
    fn bad_where_json_is_a_400_not_a_500() {
        let e = Criteria::from_params(&params(json!({"where": "{bad"})), &[]).unwrap_err();
        assert_eq!(code(e), "E_INVALID_CRITERIA");
        let e = Criteria::from_params(&params(json!({"where": ""})), &[]).unwrap_err();
        assert_eq!(code(e), "E_INVALID_CRITERIA");
    }

    #[test]
    fn values_are_coerced_to_the_attribute_type() {
        let f = filter(user(), json!({"age": {">": "25"}})).unwrap();
        assert_eq!(
            f,
            Filter::Cmp {
                col: ColRef::Main("age".into()),
                op: CmpOp::Gt,
                value: SqlValue::Float(25.0)
            }
        );
        let e = filter(user(), json!({"age": "abc"})).unwrap_err();
        assert_eq!(code(e), "E_INVALID_CRITERIA");
    }

    #[test]
    fn several_modifiers_are_anded() {
        let f = filter(user(), json!({"age": {">": 30, "<=": 50}})).unwrap();
        assert!(matches!(f, Filter::And(ref v) if v.len() == 2), "{f:?}");
    }

    #[test]
    fn empty_in_and_or_normalise_like_waterline() {
        assert_eq!(
            filter(user(), json!({"id": {"in": []}})).unwrap(),
            Filter::False
        );
        assert_eq!(
            filter(user(), json!({"id": {"nin": []}})).unwrap(),
            Filter::True
        );
        assert_eq!(filter(user(), json!({"or": []})).unwrap(), Filter::False);
        assert_eq!(filter(user(), json!({"and": []})).unwrap(), Filter::True);
    }

    #[test]
    fn array_shorthand_means_pk_in() {
        let f = filter(user(), json!([1, "2"])).unwrap();
        assert_eq!(
            f,
            Filter::In {
                col: ColRef::Main("id".into()),
                values: vec![SqlValue::Int(1), SqlValue::Int(2)],
                negated: false
            }
        );
        assert_eq!(
            code(filter(user(), json!("abc")).unwrap_err()),
            "E_INVALID_CRITERIA"
        );
    }

    #[test]
    fn not_equal_matches_nulls_too() {
        let f = filter(pet(), json!({"species": {"!=": "cat"}})).unwrap();
        assert!(
            matches!(f, Filter::Or(ref v) if matches!(v[1], Filter::Null { negated: false, .. }))
        );
        let f = filter(pet(), json!({"species": {"!=": ["cat", "dog"]}})).unwrap();
        assert!(matches!(f, Filter::In { negated: true, .. }));
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        let f = filter(pet(), json!({"name": {"contains": "50%_off"}})).unwrap();
        assert_eq!(
            f,
            Filter::Like {
                col: ColRef::Main("name".into()),
                pattern: "%50\\%\\_off%".into()
            }
        );
        let f = filter(pet(), json!({"name": {"like": "R%"}})).unwrap();
        assert_eq!(
            f,
            Filter::Like {
                col: ColRef::Main("name".into()),
                pattern: "R%".into()
            }
        );
    }

    #[test]
    fn client_mistakes_in_where_are_usage_errors() {
        for bad in [
            json!({"bogus": 1}),
            json!({"name": {"bogusop": 1}}),
            json!({"pets": 1}),
            json!({"age": {"contains": "1"}}),
            json!({"or": "x"}),
            json!({"name": {}}),
            json!({"a.b": 1}),
            json!({"name": {"<": [1]}}),
        ] {
            assert_eq!(
                code(filter(user(), bad.clone()).unwrap_err()),
                "E_INVALID_CRITERIA",
                "{bad}"
            );
        }
    }

    #[test]
    fn deep_and_huge_where_clauses_are_refused() {
        let mut w = json!({"name": "x"});
        for _ in 0..40 {
            w = json!({"or": [w]});
        }
        assert_eq!(code(filter(user(), w).unwrap_err()), "E_INVALID_CRITERIA");
        let ids: Vec<i64> = (0..6000).collect();
        assert_eq!(
            code(filter(user(), json!({"id": {"in": ids}})).unwrap_err()),
            "E_INVALID_CRITERIA"
        );
    }

    #[test]
    fn limit_and_skip_follow_waterline() {
        let q = |p: Value| Criteria::from_params(&params(p), &[]).and_then(|c| c.normalize(user()));
        assert_eq!(q(json!({})).unwrap().limit, Some(30));
        assert_eq!(q(json!({"limit": "0"})).unwrap().limit, Some(0));
        assert_eq!(q(json!({"limit": "-1"})).unwrap().limit, None);
        assert_eq!(q(json!({"limit": "100000"})).unwrap().limit, Some(100_000));
        assert_eq!(q(json!({"skip": "2"})).unwrap().skip, 2);
        for bad in [
            json!({"limit": "abc"}),
            json!({"limit": "1.5"}),
            json!({"skip": "-1"}),
            json!({"skip": "x"}),
        ] {
            assert_eq!(
                code(q(bad.clone()).unwrap_err()),
                "E_INVALID_CRITERIA",
                "{bad}"
            );
        }
    }

    #[test]
    fn every_sort_form_is_accepted() {
        let q = |p: Value| {
            Criteria::from_params(&params(p), &[])
                .and_then(|c| c.normalize(user()))
                .map(|q| q.sort)
        };
        let name_asc = vec![(Ident::from("name"), Dir::Asc)];
        assert_eq!(q(json!({"sort": "name ASC"})).unwrap(), name_asc);
        assert_eq!(q(json!({"sort": "name"})).unwrap(), name_asc);
        assert_eq!(
            q(json!({"sort": "name desc"})).unwrap(),
            vec![(Ident::from("name"), Dir::Desc)]
        );
        assert_eq!(
            q(json!({"sort": "[{\"name\":\"ASC\"},{\"age\":\"DESC\"}]"})).unwrap(),
            vec![
                (Ident::from("name"), Dir::Asc),
                (Ident::from("age"), Dir::Desc)
            ]
        );
        assert_eq!(
            q(json!({"sort": ["age DESC"]})).unwrap(),
            vec![(Ident::from("age"), Dir::Desc)]
        );
        for bad in [
            json!({"sort": "{\"age\":\"DESC\"}"}),
            json!({"sort": "age DESC, name ASC"}),
            json!({"sort": "bogus ASC"}),
            json!({"sort": "name sideways"}),
            json!({"sort": "pets"}),
        ] {
            assert_eq!(
                code(q(bad.clone()).unwrap_err()),
                "E_INVALID_CRITERIA",
                "{bad}"
            );
        }
    }

    #[test]
    fn select_adds_the_pk_and_refuses_collections() {
        let c = Criteria::from_params(&params(json!({"select": "name, email"})), &[]).unwrap();
        assert_eq!(
            c.normalize(user()).unwrap().select,
            Some(vec!["id", "name", "email"])
        );
        let c = Criteria::from_params(&params(json!({"select": "pets"})), &[]).unwrap();
        assert_eq!(code(c.normalize(user()).unwrap_err()), "E_INVALID_CRITERIA");
        let c = Criteria::from_params(&params(json!({"omit": "id"})), &[]).unwrap();
        assert_eq!(code(c.normalize(user()).unwrap_err()), "E_INVALID_CRITERIA");
        let e = Criteria::from_params(&params(json!({"select": 5})), &[]).unwrap_err();
        assert_eq!(code(e), "E_INVALID_CRITERIA");
    }

    #[test]
    fn populate_forms() {
        let q = |p: Value| {
            Criteria::from_params(&params(p), &[])
                .and_then(|c| c.normalize(pet()))
                .map(|q| q.populate)
        };
        let all = q(json!({})).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all.iter().find(|p| p.assoc.name == "tags").map(|p| p.limit),
            Some(Some(30))
        );
        assert!(q(json!({"populate": "false"})).unwrap().is_empty());
        let only = q(json!({"populate": "tags, owner"})).unwrap();
        assert_eq!(
            only.iter().map(|p| p.assoc.name).collect::<Vec<_>>(),
            vec!["tags", "owner"]
        );
        assert_eq!(only[0].limit, None, "an explicit populate has no 30 cap");
        for bad in [
            json!({"populate": "true"}),
            json!({"populate": "[tags]"}),
            json!({"populate": true}),
        ] {
            let e = Criteria::from_params(&params(bad.clone()), &[])
                .and_then(|c| c.normalize(pet()))
                .unwrap_err();
            assert_eq!(code(e), "E_INVALID_POPULATES", "{bad}");
        }
    }
}
