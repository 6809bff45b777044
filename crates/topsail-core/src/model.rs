/*!
Model metadata: what `#[derive(Model)]` describes about a struct.

A [`ModelDef`] is built once per model (the derive puts it in a `LazyLock`) and
is the only source of identifiers that ever reach SQL: table and column names
come from here, never from a request.
*/

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

use crate::record::{Pk, Record};

/// The storage type of an attribute, as Sails' `type` (plus an integer kind,
/// which Sails folds into `number`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrType {
    /// Text.
    String,
    /// A 64-bit integer (`BIGINT`).
    Integer,
    /// A double-precision number (Sails' `number`).
    Number,
    /// `true` / `false`.
    Boolean,
    /// Any JSON value (`JSONB` on PostgreSQL, text on SQLite).
    Json,
}

impl AttrType {
    /// The Sails type name, used in error messages.
    pub fn sails_name(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Integer | AttrType::Number => "number",
            AttrType::Boolean => "boolean",
            AttrType::Json => "json",
        }
    }
}

/// A constant value written in a `#[model(...)]` attribute (`default`, `is_in`).
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string literal.
    Str(&'static str),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
}

impl Literal {
    /// The literal as a JSON value.
    pub fn to_json(&self) -> Value {
        match self {
            Literal::Str(s) => Value::from(*s),
            Literal::Int(i) => Value::from(*i),
            Literal::Float(f) => crate::record::number_json(*f),
            Literal::Bool(b) => Value::from(*b),
        }
    }
}

/// A validation rule on an attribute (Sails' `validations`).
#[derive(Debug)]
pub enum Rule {
    /// `isEmail`.
    IsEmail,
    /// `min`: a number at least this.
    Min(f64),
    /// `max`: a number at most this.
    Max(f64),
    /// `minLength`: a string at least this many characters long.
    MinLength(usize),
    /// `maxLength`: a string at most this many characters long.
    MaxLength(usize),
    /// `isIn`: one of these values.
    IsIn(Vec<Literal>),
    /// `regex`: matches this pattern (compiled on first use).
    Regex(&'static str, OnceLock<Result<Regex, String>>),
}

impl Rule {
    /// A `regex` rule for `pattern`.
    pub fn regex(pattern: &'static str) -> Rule {
        Rule::Regex(pattern, OnceLock::new())
    }

    /// The Sails name of the rule, used in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::IsEmail => "isEmail",
            Rule::Min(_) => "min",
            Rule::Max(_) => "max",
            Rule::MinLength(_) => "minLength",
            Rule::MaxLength(_) => "maxLength",
            Rule::IsIn(_) => "isIn",
            Rule::Regex(..) => "regex",
        }
    }
}

/// Which automatic timestamp an attribute holds (epoch milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoTimestamp {
    /// Set when the record is created (`autoCreatedAt`).
    CreatedAt,
    /// Set when the record is created or updated (`autoUpdatedAt`).
    UpdatedAt,
}

/// A scalar attribute (including the primary key and to-one foreign keys,
/// which are described by [`AssocDef`] instead).
#[derive(Debug)]
pub struct AttrDef {
    /// The Rust field name.
    pub field: &'static str,
    /// The JSON name (Sails attribute name), camelCase by default.
    pub name: &'static str,
    /// The column name.
    pub column: &'static str,
    /// The storage type.
    pub ty: AttrType,
    /// A value must be given on create.
    pub required: bool,
    /// A unique index guards the column.
    pub unique: bool,
    /// `null` is a valid value (and the base value when omitted).
    pub allow_null: bool,
    /// The value used when create omits the attribute.
    pub default: Option<Literal>,
    /// Validation rules, checked after coercion.
    pub rules: Vec<Rule>,
    /// An automatic timestamp.
    pub auto: Option<AutoTimestamp>,
    /// Never sent to a client (answers, published messages, populated
    /// records), nor selected, filtered, sorted or set by one; app code
    /// reads and writes it (Sails' `customToJSON` and `protect`).
    pub private: bool,
    /// Never set by a client: dropped from its values like an unknown
    /// attribute (400 on a strict model). App code sets it.
    pub read_only: bool,
}

impl AttrDef {
    /// An attribute with the defaults of the derive: column and JSON name
    /// given, optional, not unique, no rules.
    pub fn new(
        field: &'static str,
        name: &'static str,
        column: &'static str,
        ty: AttrType,
    ) -> Self {
        AttrDef {
            field,
            name,
            column,
            ty,
            required: false,
            unique: false,
            allow_null: false,
            default: None,
            rules: Vec::new(),
            auto: None,
            private: false,
            read_only: false,
        }
    }

    /// The value an omitted optional attribute gets, as in Sails: its
    /// default, else null where null is allowed, else `""`, `0`, `false`
    /// (null for JSON).
    pub fn base_value(&self) -> Value {
        if let Some(lit) = &self.default {
            return lit.to_json();
        }
        if self.allow_null {
            return Value::Null;
        }
        match self.ty {
            AttrType::String => Value::from(""),
            AttrType::Integer | AttrType::Number => Value::from(0),
            AttrType::Boolean => Value::from(false),
            AttrType::Json => Value::Null,
        }
    }
}

/// How the primary key gets its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkKind {
    /// An auto-increment integer assigned by the database.
    AutoIncrement,
    /// An integer the client supplies.
    Integer,
    /// A string the client supplies.
    String,
}

impl PkKind {
    /// The storage type of the key.
    pub fn attr_type(self) -> AttrType {
        match self {
            PkKind::AutoIncrement | PkKind::Integer => AttrType::Integer,
            PkKind::String => AttrType::String,
        }
    }
}

/// The target of an association, resolved lazily so two models can refer to
/// each other.
pub type ModelRef = fn() -> &'static ModelDef;

/// The kind of an association.
#[derive(Debug, Clone, Copy)]
pub enum AssocKind {
    /// To-one (`model: 'user'`): a foreign-key column on this table.
    One,
    /// To-many (`collection: 'pet'`), with the name of the field on the
    /// target that points back (`via`), or none for a via-less collection.
    Many {
        /// The Rust field name of the inverse on the target model.
        via: Option<&'static str>,
    },
}

/// An association attribute.
#[derive(Debug)]
pub struct AssocDef {
    /// The Rust field name.
    pub field: &'static str,
    /// The JSON name (the Sails alias).
    pub name: &'static str,
    /// The foreign-key column (to-one only).
    pub column: &'static str,
    /// The model this association points at.
    pub target: ModelRef,
    /// To-one or to-many.
    pub kind: AssocKind,
}

impl AssocDef {
    /// The target model's metadata.
    pub fn target(&self) -> &'static ModelDef {
        (self.target)()
    }

    /// Whether this is a to-many association.
    pub fn is_collection(&self) -> bool {
        matches!(self.kind, AssocKind::Many { .. })
    }
}

/// Lifecycle callbacks, as plain function pointers so the dynamic engine can
/// call a model's hooks without knowing its type (see `Lifecycle`).
#[derive(Debug, Clone, Copy)]
pub struct Hooks {
    /// Called with the normalised values before an insert; may change them or
    /// reject the create with a validation error.
    pub before_create: fn(&mut Record) -> Result<(), String>,
    /// Called with the created (populated) record after the commit.
    pub after_create: fn(&Record),
    /// Called with the normalised values to set before an update.
    pub before_update: fn(&mut Record) -> Result<(), String>,
    /// Called with the updated (populated) record after the commit.
    pub after_update: fn(&Record),
    /// Called with the record about to be destroyed; may reject it.
    pub before_destroy: fn(&Record) -> Result<(), String>,
    /// Called with the destroyed record after the commit.
    pub after_destroy: fn(&Record),
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            before_create: |_| Ok(()),
            after_create: |_| {},
            before_update: |_| Ok(()),
            after_update: |_| {},
            before_destroy: |_| Ok(()),
            after_destroy: |_| {},
        }
    }
}

/// Everything topsail knows about one model.
#[derive(Debug)]
pub struct ModelDef {
    /// The identity: the URL segment, the event name, the room prefix.
    pub identity: &'static str,
    /// The table name.
    pub table: &'static str,
    /// The primary key (also listed in `attrs`).
    pub pk: &'static str,
    /// How the primary key is assigned.
    pub pk_kind: PkKind,
    /// Scalar attributes in declaration order, the primary key included.
    pub attrs: Vec<AttrDef>,
    /// Associations in declaration order.
    pub assocs: Vec<AssocDef>,
    /// Lifecycle callbacks.
    pub hooks: Hooks,
    /// Reject unknown attributes on create/update with 400 instead of
    /// dropping them.
    pub strict: bool,
    /// Clients' writes (update, destroy, add, remove, replace) must send
    /// `If-Match` with the record's `ETag`: 428 without it.
    pub require_if_match: bool,
}

/// An attribute or an association, looked up by JSON name.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// A scalar attribute.
    Attr(&'a AttrDef),
    /// An association.
    Assoc(&'a AssocDef),
}

impl ModelDef {
    /// The primary-key attribute.
    pub fn pk_attr(&self) -> &AttrDef {
        self.attrs
            .iter()
            .find(|a| a.name == self.pk)
            .unwrap_or(&self.attrs[0])
    }

    /// The primary-key column.
    pub fn pk_column(&self) -> &'static str {
        self.pk_attr().column
    }

    /// Looks up a scalar attribute or association by JSON name.
    pub fn field(&self, name: &str) -> Option<Field<'_>> {
        if let Some(a) = self.attrs.iter().find(|a| a.name == name) {
            return Some(Field::Attr(a));
        }
        self.assocs
            .iter()
            .find(|a| a.name == name)
            .map(Field::Assoc)
    }

    /// Looks up an association by JSON name (alias).
    pub fn assoc(&self, alias: &str) -> Option<&AssocDef> {
        self.assocs.iter().find(|a| a.name == alias)
    }

    /// Looks up an association by Rust field name (`via` refers to fields).
    pub fn assoc_by_field(&self, field: &str) -> Option<&AssocDef> {
        self.assocs.iter().find(|a| a.field == field)
    }

    /// The inverse association of `assoc` on its target, if `assoc` has a
    /// `via` (collections), or the target collection whose `via` is `assoc`
    /// (to-one).
    pub fn inverse_of(&self, assoc: &AssocDef) -> Option<&'static AssocDef> {
        let target = assoc.target();
        match assoc.kind {
            AssocKind::Many { via: Some(via) } => target.assoc_by_field(via),
            AssocKind::Many { via: None } => None,
            AssocKind::One => target.assocs.iter().find(|a| {
                matches!(a.kind, AssocKind::Many { via: Some(v) } if v == assoc.field)
                    && std::ptr::eq(a.target(), self)
            }),
        }
    }

    /// The primary key of one of this model's records.
    pub fn key_of(&self, record: &Record) -> Option<Pk> {
        record.get(self.pk).and_then(Pk::from_json)
    }

    /// The key a to-one value pointing at this model holds, whether it is
    /// the raw key or the populated record.
    pub fn key_of_link(&self, v: &Value) -> Option<Pk> {
        match v {
            Value::Object(record) => self.key_of(record),
            other => Pk::from_json(other),
        }
    }

    /// The event name and room prefix (the identity).
    pub fn event(&self) -> &'static str {
        self.identity
    }

    /// The `created_at` attribute, if any.
    pub fn auto_attr(&self, which: AutoTimestamp) -> Option<&AttrDef> {
        self.attrs.iter().find(|a| a.auto == Some(which))
    }
}

/// The join table of a many-to-many (or via-less) collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTable {
    /// Table name, as Waterline names junction tables.
    pub table: String,
    /// Column holding the owning side's primary key.
    pub parent_column: String,
    /// Column holding the associated record's primary key.
    pub child_column: String,
}

/// How a collection is stored.
#[derive(Debug, Clone)]
pub enum CollectionStorage {
    /// One-to-many: the child's to-one column points at the parent.
    ForeignKey {
        /// The child's to-one association.
        via: &'static AssocDef,
    },
    /// Many-to-many or via-less: a join table.
    Join(JoinTable),
}

/// How `assoc` (a collection on `model`) is stored.
pub fn collection_storage(model: &'static ModelDef, assoc: &'static AssocDef) -> CollectionStorage {
    let target = assoc.target();
    match assoc.kind {
        AssocKind::Many { via: Some(via) } => match target.assoc_by_field(via) {
            Some(inv) if matches!(inv.kind, AssocKind::One) => {
                CollectionStorage::ForeignKey { via: inv }
            }
            Some(inv) => {
                // Waterline orders the two sides alphabetically: `pet_tags__tag_pets`.
                let mine = format!("{}_{}", model.identity, assoc.name);
                let theirs = format!("{}_{}", target.identity, inv.name);
                let table = if mine <= theirs {
                    format!("{mine}__{theirs}")
                } else {
                    format!("{theirs}__{mine}")
                };
                CollectionStorage::Join(JoinTable {
                    table,
                    parent_column: mine,
                    child_column: theirs,
                })
            }
            // Checked by `Registry::validate`; treat as via-less defensively.
            None => via_less(model, assoc),
        },
        _ => via_less(model, assoc),
    }
}

fn via_less(model: &'static ModelDef, assoc: &'static AssocDef) -> CollectionStorage {
    let target = assoc.target();
    let parent = format!("{}_{}", model.identity, assoc.name);
    let child = format!("{}_{}_{}", target.identity, assoc.name, model.identity);
    CollectionStorage::Join(JoinTable {
        table: format!("{parent}__{child}"),
        parent_column: parent,
        child_column: child,
    })
}
