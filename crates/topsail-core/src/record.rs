/*!
Records as the engine sees them: JSON objects keyed by attribute name, in
declaration order (serde_json's `preserve_order`). Typed structs convert to
and from this form through code the derive writes.
*/

use serde_json::{Map, Value};

/// A float as JSON, written as an integer when it is one (JavaScript prints
/// `0`, not `0.0`, and Sails clients compare with `===`).
pub fn number_json(f: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_991.0;
    if f.fract() == 0.0 && f.abs() <= SAFE {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// A record or a set of values: attribute name to JSON value.
pub type Record = Map<String, Value>;

/// A primary-key value: the integer or string forms Sails uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pk {
    /// An integer key.
    Int(i64),
    /// A string key.
    Str(String),
}

impl Pk {
    /// The key as a JSON value: integer keys are numbers in messages, as
    /// Sails' `parseId` makes them.
    pub fn to_json(&self) -> Value {
        match self {
            Pk::Int(i) => Value::from(*i),
            Pk::Str(s) => Value::from(s.as_str()),
        }
    }

    /// Reads a key from a stored JSON value.
    pub fn from_json(v: &Value) -> Option<Pk> {
        match v {
            Value::Number(n) => n.as_i64().map(Pk::Int),
            Value::String(s) => Some(Pk::Str(s.clone())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Pk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pk::Int(i) => write!(f, "{i}"),
            Pk::Str(s) => f.write_str(s),
        }
    }
}

impl From<i64> for Pk {
    fn from(v: i64) -> Self {
        Pk::Int(v)
    }
}

impl From<&str> for Pk {
    fn from(v: &str) -> Self {
        Pk::Str(v.to_owned())
    }
}

impl From<String> for Pk {
    fn from(v: String) -> Self {
        Pk::Str(v)
    }
}
