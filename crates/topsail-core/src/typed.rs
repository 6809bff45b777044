/*!
The typed side of a model: the [`Model`] trait the derive implements, the
[`Lifecycle`] callbacks an app may implement, and [`Link`], the field type of
an association (an id, or the record when populated).
*/

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::model::ModelDef;
use crate::record::{Pk, Record};

/// A struct that is a topsail model. Implemented by `#[derive(Model)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a topsail model",
    label = "not a model",
    note = "add `#[derive(topsail::Model)]` to the definition of `{Self}`"
)]
pub trait Model: Sized + Send + Sync + 'static {
    /// The model's metadata.
    fn def() -> &'static ModelDef;

    /// Builds the struct from a record as the engine returns it.
    fn from_record(record: Record) -> Result<Self, DecodeError>;

    /// The struct's values as a record (what `create` would be given).
    fn to_record(&self) -> Record;
}

/// Lifecycle callbacks (Sails' `beforeCreate`, `afterCreate`, ...). Every
/// method has a no-op default; opt in with `#[model(lifecycle)]` and
/// implement the ones you need.
///
/// The `before_*` callbacks see the normalised values and may change them
/// (the changes are validated again) or reject the action with a message,
/// which the client gets as a 400 usage error.
pub trait Lifecycle {
    /// Before a record is inserted.
    fn before_create(_values: &mut Record) -> Result<(), String> {
        Ok(())
    }
    /// After a create has committed.
    fn after_create(_record: &Record) {}
    /// Before values are set on a record.
    fn before_update(_values: &mut Record) -> Result<(), String> {
        Ok(())
    }
    /// After an update has committed.
    fn after_update(_record: &Record) {}
    /// Before a record is destroyed.
    fn before_destroy(_record: &Record) -> Result<(), String> {
        Ok(())
    }
    /// After a destroy has committed.
    fn after_destroy(_record: &Record) {}
}

/// A record could not be turned into a model struct.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode field `{field}` of `{model}`: {source}")]
pub struct DecodeError {
    /// The model identity.
    pub model: &'static str,
    /// The JSON name of the field.
    pub field: &'static str,
    /// What serde said.
    #[source]
    pub source: serde_json::Error,
}

/// The value of an association field: the associated record's id, or the
/// record itself when it was populated.
#[derive(Debug, Clone, PartialEq)]
pub enum Link<M> {
    /// Not populated: the primary key.
    Id(Pk),
    /// Populated.
    Record(Box<M>),
}

impl<M: Model> Link<M> {
    /// The primary key of the associated record.
    pub fn id(&self) -> Option<Pk> {
        match self {
            Link::Id(k) => Some(k.clone()),
            Link::Record(m) => m.to_record().get(M::def().pk).and_then(Pk::from_json),
        }
    }

    /// The record, when populated.
    pub fn record(&self) -> Option<&M> {
        match self {
            Link::Record(m) => Some(m),
            Link::Id(_) => None,
        }
    }
}

impl<M> From<i64> for Link<M> {
    fn from(id: i64) -> Self {
        Link::Id(Pk::Int(id))
    }
}

impl<M: Model> Serialize for Link<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Link::Id(k) => k.to_json().serialize(s),
            Link::Record(m) => m.to_record().serialize(s),
        }
    }
}

impl<'de, M: Model> Deserialize<'de> for Link<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match Value::deserialize(d)? {
            Value::Object(o) => M::from_record(o)
                .map(|m| Link::Record(Box::new(m)))
                .map_err(D::Error::custom),
            v => Pk::from_json(&v)
                .map(Link::Id)
                .ok_or_else(|| D::Error::custom(format!("expected an id or a record, got {v}"))),
        }
    }
}

/// Builds `M` from a record a projection may have cut: attributes that
/// `select` or `omit` left out take their base value (the default, null
/// where null is allowed, else `""`, `0` or `false`), as they would on a
/// create, so a struct can still be built from a partial record.
pub fn from_projected<M: Model>(mut record: Record) -> Result<M, DecodeError> {
    for attr in &M::def().attrs {
        if !record.contains_key(attr.name) {
            record.insert(attr.name.to_owned(), attr.base_value());
        }
    }
    M::from_record(record)
}

/// Decodes one field of a record (used by derived `from_record`).
#[doc(hidden)]
pub fn decode_field<T: DeserializeOwned>(
    model: &'static str,
    record: &mut Record,
    field: &'static str,
    collection: bool,
) -> Result<T, DecodeError> {
    let v = record.remove(field).unwrap_or(if collection {
        Value::Array(Vec::new())
    } else {
        Value::Null
    });
    serde_json::from_value(v).map_err(|source| DecodeError {
        model,
        field,
        source,
    })
}

/// Encodes one field of a record (used by derived `to_record`).
#[doc(hidden)]
pub fn encode_field<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
