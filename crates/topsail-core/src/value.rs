/*!
Loose value coercion (Sails' rttc "loose" validation: `"42"` is 42 for a
number, `"true"` is true for a boolean) and the typed
values bound to SQL parameters.
*/

use serde_json::Value;

use crate::model::{AttrType, PkKind};
use crate::record::{Pk, number_json};

/// A value bound to a SQL parameter. NULLs carry their column type because
/// PostgreSQL rejects an untyped NULL bound to a BIGINT column.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// A typed NULL.
    Null(AttrType),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// A JSON document.
    Json(Value),
}

impl SqlValue {
    /// Converts a value already coerced to `ty` into a bind value.
    pub fn from_json(ty: AttrType, v: &Value) -> SqlValue {
        match (ty, v) {
            (AttrType::Json, v) => SqlValue::Json(v.clone()),
            (ty, Value::Null) => SqlValue::Null(ty),
            (AttrType::Integer, Value::Number(n)) => match n.as_i64() {
                Some(i) => SqlValue::Int(i),
                None => SqlValue::Float(n.as_f64().unwrap_or(0.0)),
            },
            (AttrType::Number, Value::Number(n)) => SqlValue::Float(n.as_f64().unwrap_or(0.0)),
            (AttrType::Boolean, Value::Bool(b)) => SqlValue::Bool(*b),
            (_, Value::String(s)) => SqlValue::Text(s.clone()),
            (_, other) => SqlValue::Text(other.to_string()),
        }
    }

    /// A primary-key bind value.
    pub fn from_pk(pk: &Pk) -> SqlValue {
        match pk {
            Pk::Int(i) => SqlValue::Int(*i),
            Pk::Str(s) => SqlValue::Text(s.clone()),
        }
    }
}

/// Why a value could not be coerced: `expected` names the type.
#[derive(Debug, Clone, PartialEq)]
pub struct CoercionError {
    /// The type that was expected ("a number", "a string", ...).
    pub expected: &'static str,
    /// The value that was given.
    pub got: Value,
}

impl std::fmt::Display for CoercionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Expected {}, but instead, got: {}",
            self.expected, self.got
        )
    }
}

fn parse_js_number(s: &str) -> Option<f64> {
    // rttc accepts what `+s` accepts, minus the empty string, hex and
    // Infinity: decimal numbers with an optional exponent.
    let t = s.trim();
    if t.is_empty()
        || !t
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Whether `v` holds a NUL character in a string (or, for JSON, in any
/// string or key within it). PostgreSQL cannot store one in `text` or
/// `jsonb`, so topsail refuses it on both databases: the same value is
/// accepted or refused whichever database an app runs on.
pub fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Coerces `v` to `ty` the way Waterline does before it writes or compares.
/// `null` is rejected here; callers decide whether the attribute allows it.
/// A string holding a NUL character is rejected for every type (see
/// [`holds_nul`]).
pub fn coerce(ty: AttrType, v: &Value) -> Result<Value, CoercionError> {
    let fail = |expected| CoercionError {
        expected,
        got: v.clone(),
    };
    if holds_nul(v) {
        return Err(fail("a value without NUL characters (`\\u0000`)"));
    }
    match ty {
        AttrType::Json => Ok(v.clone()),
        AttrType::String => match v {
            Value::String(_) => Ok(v.clone()),
            Value::Number(n) => Ok(Value::from(n.to_string())),
            Value::Bool(b) => Ok(Value::from(b.to_string())),
            _ => Err(fail("a string")),
        },
        AttrType::Number => match v {
            Value::Number(n) => Ok(number_json(n.as_f64().ok_or_else(|| fail("a number"))?)),
            Value::String(s) => parse_js_number(s)
                .map(number_json)
                .ok_or_else(|| fail("a number")),
            Value::Bool(b) => Ok(Value::from(u8::from(*b))),
            _ => Err(fail("a number")),
        },
        AttrType::Integer => {
            let f = match v {
                Value::Number(n) => match n.as_i64() {
                    Some(i) => return Ok(Value::from(i)),
                    None => n.as_f64(),
                },
                Value::String(s) => parse_js_number(s),
                Value::Bool(b) => Some(f64::from(u8::from(*b))),
                _ => None,
            };
            match f {
                Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0 => {
                    Ok(Value::from(f as i64))
                }
                _ => Err(fail("an integer")),
            }
        }
        AttrType::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s == "true" => Ok(Value::Bool(true)),
            Value::String(s) if s == "false" => Ok(Value::Bool(false)),
            Value::Number(n) if n.as_f64() == Some(1.0) => Ok(Value::Bool(true)),
            Value::Number(n) if n.as_f64() == Some(0.0) => Ok(Value::Bool(false)),
            _ => Err(fail("a boolean")),
        },
    }
}

/// Coerces a primary-key value (from a URL segment, a `where`, an id list).
pub fn coerce_pk(kind: PkKind, v: &Value) -> Result<Pk, CoercionError> {
    match coerce(kind.attr_type(), v)? {
        Value::Number(n) => n.as_i64().map(Pk::Int).ok_or(CoercionError {
            expected: "an integer",
            got: v.clone(),
        }),
        Value::String(s) => Ok(Pk::Str(s)),
        _ => Err(CoercionError {
            expected: "a primary key",
            got: v.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_coerce_like_rttc() {
        assert_eq!(coerce(AttrType::Number, &json!("42")).unwrap(), json!(42));
        assert_eq!(
            coerce(AttrType::Number, &json!("4.5e1")).unwrap(),
            json!(45)
        );
        assert_eq!(coerce(AttrType::Number, &json!(true)).unwrap(), json!(1));
        assert_eq!(coerce(AttrType::Number, &json!(2.5)).unwrap(), json!(2.5));
        for bad in [
            json!(""),
            json!("abc"),
            json!(null),
            json!([1]),
            json!("0x10"),
            json!("Infinity"),
        ] {
            assert!(
                coerce(AttrType::Number, &bad).is_err(),
                "{bad} must be rejected"
            );
        }
    }

    #[test]
    fn integers_reject_fractions() {
        assert_eq!(coerce(AttrType::Integer, &json!("7")).unwrap(), json!(7));
        assert_eq!(coerce(AttrType::Integer, &json!(7.0)).unwrap(), json!(7));
        assert!(coerce(AttrType::Integer, &json!("1.5")).is_err());
        assert!(coerce(AttrType::Integer, &json!(1e300)).is_err());
    }

    #[test]
    fn strings_and_booleans_coerce_like_rttc() {
        assert_eq!(coerce(AttrType::String, &json!(42)).unwrap(), json!("42"));
        assert_eq!(
            coerce(AttrType::String, &json!(true)).unwrap(),
            json!("true")
        );
        assert!(coerce(AttrType::String, &json!(null)).is_err());
        assert!(coerce(AttrType::String, &json!({"a": 1})).is_err());
        assert_eq!(
            coerce(AttrType::Boolean, &json!("true")).unwrap(),
            json!(true)
        );
        assert_eq!(coerce(AttrType::Boolean, &json!(0)).unwrap(), json!(false));
        assert!(coerce(AttrType::Boolean, &json!("yes")).is_err());
        assert!(coerce(AttrType::Boolean, &json!("TRUE")).is_err());
    }

    #[test]
    fn integral_floats_print_as_integers() {
        assert_eq!(number_json(0.0).to_string(), "0");
        assert_eq!(number_json(2.5).to_string(), "2.5");
    }

    #[test]
    fn pks_coerce_by_kind() {
        assert_eq!(
            coerce_pk(PkKind::AutoIncrement, &json!("12")).unwrap(),
            Pk::Int(12)
        );
        assert!(coerce_pk(PkKind::AutoIncrement, &json!("abc")).is_err());
        assert_eq!(
            coerce_pk(PkKind::String, &json!(5)).unwrap(),
            Pk::Str("5".into())
        );
    }
}
