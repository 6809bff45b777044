/*!
What a client sees of each model, as the three contracts describe it: the
attributes an answer carries (never a private one), in the order an answer
carries them (scalar attributes, then associations), and which of them a
client may set on create and update.
*/

use serde_json::Value;
use topsail_core::model::{AssocKind, AttrType, ModelDef, PkKind, Rule};

/// One property of a record as a client sees it.
#[derive(Debug)]
pub(crate) struct Field {
    /// The JSON name.
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// `null` is a value it may hold.
    pub(crate) nullable: bool,
    /// A create must give it.
    pub(crate) required_on_create: bool,
    /// A client may set it (not read-only, not a timestamp, not an
    /// auto-increment key).
    pub(crate) settable: bool,
    /// Its validation rules, in words; `isIn` as an enum.
    pub(crate) rules: Vec<String>,
    pub(crate) one_of: Option<Vec<Value>>,
}

/// What a property holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A scalar attribute (the key included).
    Attr(AttrType),
    /// A to-one association: the target's key, or (populated) its record.
    ToOne(&'static ModelDef),
    /// A collection: absent unless populated, then the target's records.
    Many(&'static ModelDef),
}

/// The properties of `model` a client sees, in answer order.
pub(crate) fn fields(model: &'static ModelDef) -> Vec<Field> {
    let mut out = Vec::new();
    for a in model.attrs.iter().filter(|a| !a.private) {
        let is_pk = a.name == model.pk;
        let auto_key = is_pk && model.pk_kind == PkKind::AutoIncrement;
        let settable = !a.read_only && a.auto.is_none() && !auto_key;
        let one_of = a.rules.iter().find_map(|r| match r {
            Rule::IsIn(values) => Some(values.iter().map(|l| l.to_json()).collect()),
            _ => None,
        });
        out.push(Field {
            name: a.name,
            kind: Kind::Attr(a.ty),
            nullable: a.allow_null || a.ty == AttrType::Json,
            required_on_create: settable && (a.required || is_pk),
            settable,
            rules: a.rules.iter().filter_map(rule_in_words).collect(),
            one_of,
        });
    }
    for assoc in model.assocs.iter() {
        let kind = match assoc.kind {
            AssocKind::One => Kind::ToOne(assoc.target()),
            AssocKind::Many { .. } => Kind::Many(assoc.target()),
        };
        out.push(Field {
            name: assoc.name,
            kind,
            nullable: matches!(kind, Kind::ToOne(_)),
            required_on_create: false,
            settable: true,
            rules: Vec::new(),
            one_of: None,
        });
    }
    out
}

/// The storage type of `model`'s key.
pub(crate) fn key_type(model: &ModelDef) -> AttrType {
    model.pk_kind.attr_type()
}

fn rule_in_words(rule: &Rule) -> Option<String> {
    Some(match rule {
        Rule::IsEmail => "an email address".to_owned(),
        Rule::Min(n) => format!("at least {n}"),
        Rule::Max(n) => format!("at most {n}"),
        Rule::MinLength(n) => format!("at least {n} characters"),
        Rule::MaxLength(n) => format!("at most {n} characters"),
        Rule::Regex(p, _) => format!("matches /{p}/"),
        Rule::IsIn(_) => return None,
    })
}

/// The name of `model`'s types (`blog_post` → `BlogPost`), shared by the
/// OpenAPI components, the AsyncAPI messages and the TypeScript types.
pub(crate) fn type_name(model: &ModelDef) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in model.identity.chars() {
        if c.is_ascii_alphanumeric() {
            if upper {
                out.extend(c.to_uppercase());
            } else {
                out.push(c);
            }
            upper = false;
        } else {
            upper = true;
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'M');
    }
    out
}
