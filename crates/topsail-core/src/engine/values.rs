/*!
Normalising the values of a create or an update, as Waterline does: required
attributes, base values, loose coercion, validation rules, automatic
timestamps, unknown keys dropped (or refused in strict mode).
*/

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::{Error, Result, UsageCode};
use crate::model::{
    AssocDef, AssocKind, AttrDef, AttrType, AutoTimestamp, Field, Literal, ModelDef, PkKind, Rule,
};
use crate::record::{Pk, Record};
use crate::value::{coerce, coerce_pk};

/// Collection values of a create or update: the association and the ids.
pub(crate) type Collections = Vec<(&'static AssocDef, Vec<Pk>)>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    // The shape validator.js' isEmail accepts, without its length quirks.
    Regex::new(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
        .expect("the email pattern is a valid regex")
});

fn literal_eq(l: &Literal, v: &Value) -> bool {
    match (l, v) {
        (Literal::Str(s), Value::String(t)) => s == t,
        (Literal::Int(i), Value::Number(n)) => n.as_f64() == Some(*i as f64),
        (Literal::Float(f), Value::Number(n)) => n.as_f64() == Some(*f),
        (Literal::Bool(b), Value::Bool(c)) => b == c,
        _ => false,
    }
}

/// The rules `v` (already coerced) violates, as sentences.
fn violations(attr: &AttrDef, v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for rule in &attr.rules {
        let ok = match (rule, v) {
            (Rule::IsEmail, Value::String(s)) => EMAIL.is_match(s),
            (Rule::Min(m), Value::Number(n)) => n.as_f64().is_some_and(|f| f >= *m),
            (Rule::Max(m), Value::Number(n)) => n.as_f64().is_some_and(|f| f <= *m),
            (Rule::MinLength(m), Value::String(s)) => s.chars().count() >= *m,
            (Rule::MaxLength(m), Value::String(s)) => s.chars().count() <= *m,
            (Rule::IsIn(list), v) => list.iter().any(|l| literal_eq(l, v)),
            (Rule::Regex(pattern, cache), Value::String(s)) => {
                match cache.get_or_init(|| Regex::new(pattern).map_err(|e| e.to_string())) {
                    Ok(re) => re.is_match(s),
                    Err(_) => false,
                }
            }
            // A rule for another type does not apply (the derive refuses
            // such combinations; this keeps hand-built defs safe).
            _ => true,
        };
        if !ok {
            out.push(match rule {
                Rule::IsEmail => "Value was not a valid email address.".to_owned(),
                Rule::Min(m) => format!("Value was less than the configured minimum ({m})"),
                Rule::Max(m) => format!("Value was greater than the configured maximum ({m})"),
                Rule::MinLength(m) => {
                    format!("Value was shorter than the configured minimum length ({m})")
                }
                Rule::MaxLength(m) => {
                    format!("Value was longer than the configured maximum length ({m})")
                }
                Rule::IsIn(list) => format!(
                    "Value was not in the configured whitelist ({})",
                    list.iter()
                        .map(|l| l.to_json().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Rule::Regex(p, _) => {
                    format!("Value did not match the configured regular expression (/{p}/)")
                }
            });
        }
    }
    out
}

/// Coerces and validates one attribute value.
fn attr_value(attr: &AttrDef, v: &Value, code: UsageCode) -> Result<Value> {
    if v.is_null() {
        if attr.allow_null || attr.ty == AttrType::Json {
            return Ok(Value::Null);
        }
        return Err(Error::usage(
            code,
            format!(
                "Invalid value for `{}`: cannot set `null` (this attribute does not allow null). Expected {}",
                attr.name,
                expected(attr.ty)
            ),
        ));
    }
    let coerced = coerce(attr.ty, v).map_err(|e| {
        Error::usage(
            code,
            format!("Could not use specified `{}`.  {e}", attr.name),
        )
    })?;
    let bad = violations(attr, &coerced);
    if !bad.is_empty() {
        return Err(Error::usage(
            code,
            format!(
                "Invalid value for `{}`: violated one or more validation rules:\n  • {}",
                attr.name,
                bad.join("\n  • ")
            ),
        ));
    }
    Ok(coerced)
}

fn expected(ty: AttrType) -> &'static str {
    match ty {
        AttrType::String => "a string",
        AttrType::Integer => "an integer",
        AttrType::Number => "a number",
        AttrType::Boolean => "a boolean",
        AttrType::Json => "a JSON value",
    }
}

/// Parses a collection value: an array of ids (or JSON text of one, as the
/// shortcut routes send it).
pub(crate) fn id_list(
    target: &ModelDef,
    alias: &str,
    v: &Value,
    code: UsageCode,
) -> Result<Vec<Pk>> {
    let parsed;
    let v = match v {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|_| {
                Error::usage(
                    code,
                    format!("Could not use specified `{alias}`: expected an array of ids, got {v}"),
                )
            })?;
            &parsed
        }
        other => other,
    };
    let items = match v {
        Value::Array(items) => items,
        Value::Null => return Ok(Vec::new()),
        other => {
            return Err(Error::usage(
                code,
                format!("Could not use specified `{alias}`: expected an array of ids, got {other}"),
            ));
        }
    };
    items
        .iter()
        .map(|i| {
            let i = match i {
                // A record object stands for its id.
                Value::Object(o) => o.get(target.pk).unwrap_or(&Value::Null),
                other => other,
            };
            coerce_pk(target.pk_kind, i).map_err(|e| {
                Error::usage(
                    code,
                    format!("Could not use specified `{alias}`: an id is invalid.  {e}"),
                )
            })
        })
        .collect()
}

fn to_one_value(assoc: &AssocDef, v: &Value, code: UsageCode) -> Result<Value> {
    let target = assoc.target();
    // Waterline takes a key here, never a record (nested creates and
    // updates are not a thing).
    if v.is_object() || v.is_array() {
        return Err(Error::usage(
            code,
            format!(
                "Expecting an id representing the associated record, or `null` to indicate there will be no associated record.  But the specified value is not a valid `{}`: a `{}` key, but instead, got: {v}",
                assoc.name, target.identity
            ),
        ));
    }
    if v.is_null() {
        return Ok(Value::Null);
    }
    coerce_pk(target.pk_kind, v)
        .map(|k| k.to_json())
        .map_err(|e| {
            Error::usage(
                code,
                format!("Could not use specified `{}`.  {e}", assoc.name),
            )
        })
}

pub(super) fn unknown(model: &ModelDef, key: &str, code: UsageCode) -> Result<()> {
    if model.strict {
        Err(Error::usage(
            code,
            format!(
                "`{key}` is not a recognized attribute of `{}`",
                model.identity
            ),
        ))
    } else {
        tracing::debug!(
            model = model.identity,
            attribute = key,
            "dropping unknown attribute"
        );
        Ok(())
    }
}

/// Normalises the values of a new record. Returns the scalar values (to-one
/// keys included) in declaration order, and the collections to link.
pub(crate) fn new_record(
    model: &'static ModelDef,
    given: &Map<String, Value>,
) -> Result<(Record, Collections)> {
    let code = UsageCode::InvalidNewRecord;
    for key in given.keys() {
        if model.field(key).is_none() {
            unknown(model, key, code)?;
        }
    }
    let now = now_ms();
    let mut out = Record::new();
    for attr in &model.attrs {
        let is_pk = attr.name == model.pk;
        let value = match given.get(attr.name) {
            Some(v) if is_pk && model.pk_kind == PkKind::AutoIncrement && v.is_null() => continue,
            // A key the client chooses would put the database's counter
            // out of step (PostgreSQL's identity hands it out again; past
            // SQLite's largest key no create works again): refused.
            Some(_) if is_pk && model.pk_kind == PkKind::AutoIncrement => {
                return Err(Error::usage(
                    code,
                    format!(
                        "The primary key `{}` of `{}` is assigned by the database: leave it out of a create (a model whose clients choose its keys declares `#[model(auto_increment = false)]`)",
                        attr.name, model.identity
                    ),
                ));
            }
            Some(v) if is_pk => coerce_pk(model.pk_kind, v)
                .map(|k| k.to_json())
                .map_err(|e| {
                    Error::usage(
                        code,
                        format!("Could not use specified `{}`.  {e}", attr.name),
                    )
                })?,
            Some(v) => attr_value(attr, v, code)?,
            None if is_pk && model.pk_kind == PkKind::AutoIncrement => continue,
            None if attr.auto.is_some() => Value::from(now),
            None if attr.required || is_pk => {
                return Err(Error::usage(
                    code,
                    format!(
                        "Missing value for required attribute `{}`.  Expected {}, but instead, got: undefined",
                        attr.name,
                        expected(attr.ty)
                    ),
                ));
            }
            None => attr.base_value(),
        };
        out.insert(attr.name.to_owned(), value);
    }
    let mut collections = Collections::new();
    for assoc in &model.assocs {
        let Some(v) = given.get(assoc.name) else {
            if matches!(assoc.kind, AssocKind::One) {
                out.insert(assoc.name.to_owned(), Value::Null);
            }
            continue;
        };
        match assoc.kind {
            AssocKind::One => {
                out.insert(assoc.name.to_owned(), to_one_value(assoc, v, code)?);
            }
            AssocKind::Many { .. } => {
                collections.push((assoc, id_list(assoc.target(), assoc.name, v, code)?))
            }
        }
    }
    Ok((out, collections))
}

/// Normalises the values to set on record `id` (what an `updated`
/// message carries as `data`):
/// the client's known keys in their order, coerced, then the primary key,
/// then `updatedAt` unless the client sent one. Collections come back apart.
pub(crate) fn values_to_set(
    model: &'static ModelDef,
    id: &Pk,
    given: &Map<String, Value>,
) -> Result<(Record, Collections)> {
    let code = UsageCode::InvalidValuesToSet;
    let mut out = Record::new();
    let mut collections = Collections::new();
    for (key, v) in given {
        match model.field(key) {
            Some(Field::Attr(a)) if a.name == model.pk => {
                // The URL decides which record changes; a body pk is ignored.
                tracing::debug!(
                    model = model.identity,
                    "ignoring a primary key sent in the values to set"
                );
            }
            Some(Field::Attr(a)) => {
                out.insert(a.name.to_owned(), attr_value(a, v, code)?);
            }
            Some(Field::Assoc(a)) => match a.kind {
                AssocKind::One => {
                    out.insert(a.name.to_owned(), to_one_value(a, v, code)?);
                }
                AssocKind::Many { .. } => {
                    collections.push((a, id_list(a.target(), a.name, v, code)?))
                }
            },
            None => unknown(model, key, code)?,
        }
    }
    out.insert(model.pk.to_owned(), id.to_json());
    if let Some(attr) = model.auto_attr(AutoTimestamp::UpdatedAt)
        && !out.contains_key(attr.name)
    {
        out.insert(attr.name.to_owned(), Value::from(now_ms()));
    }
    Ok((out, collections))
}

/// Re-checks values a `before_*` callback may have changed.
pub(crate) fn recheck(model: &ModelDef, values: &mut Record, code: UsageCode) -> Result<()> {
    for (key, v) in values.iter_mut() {
        match model.field(key) {
            Some(Field::Attr(a)) if a.name == model.pk => {}
            Some(Field::Attr(a)) => *v = attr_value(a, v, code)?,
            Some(Field::Assoc(a)) if matches!(a.kind, AssocKind::One) => {
                *v = to_one_value(a, v, code)?
            }
            _ => {
                return Err(Error::usage(
                    code,
                    format!("a lifecycle callback set `{key}`, which is not an attribute"),
                ));
            }
        }
    }
    Ok(())
}
