//! Rules that span several attributes, one function each, run after parsing
//! (serde_derive's `check.rs`). Each reports into the [`Ctxt`] and returns
//! the resolved facts the expansion needs.

use std::collections::HashMap;

use syn::spanned::Spanned;

use crate::ast::{AssocAst, Container, Ctxt, FieldAst, Ty};

/// What a scalar field resolved to.
pub(crate) struct Resolved {
    pub(crate) ty: Ty,
    /// `Option<T>`: null allowed.
    pub(crate) optional: bool,
}

/// The last path segment of a type and its first generic argument.
fn last_segment(ty: &syn::Type) -> Option<(&syn::Ident, Option<&syn::Type>)> {
    let syn::Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    let arg = match &seg.arguments {
        syn::PathArguments::AngleBracketed(a) => a.args.iter().find_map(|g| match g {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        }),
        _ => None,
    };
    Some((&seg.ident, arg))
}

/// Infers the storage type of a Rust type.
fn infer(ty: &syn::Type) -> Option<Resolved> {
    let (ident, arg) = last_segment(ty)?;
    let name = ident.to_string();
    if name == "Option" {
        let inner = infer(arg?)?;
        return Some(Resolved {
            ty: inner.ty,
            optional: true,
        });
    }
    let t = match name.as_str() {
        "String" | "str" | "Cow" => Ty::String,
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "isize" => Ty::Integer,
        "f32" | "f64" => Ty::Number,
        "bool" => Ty::Boolean,
        "Value" => Ty::Json,
        _ => return None,
    };
    Some(Resolved {
        ty: t,
        optional: false,
    })
}

/// Resolves a scalar field's type, or reports why it cannot.
pub(crate) fn resolve(cx: &Ctxt, f: &FieldAst) -> Resolved {
    let inferred = infer(&f.ty);
    let optional = inferred.as_ref().is_some_and(|r| r.optional)
        || matches!(last_segment(&f.ty), Some((i, _)) if i == "Option");
    match (f.explicit_ty.get(), inferred) {
        (Some(t), _) => Resolved { ty: *t, optional },
        (None, Some(r)) => r,
        (None, None) => {
            cx.error(
                &f.ty,
                format!(
                    "cannot infer the attribute type of `{}` from its Rust type\nhelp: add `#[model(type = json)]` (or `string`, `integer`, `number`, `boolean`)",
                    f.ident
                ),
            );
            Resolved {
                ty: Ty::Json,
                optional,
            }
        }
    }
}

/// Exactly one primary key: a field marked `primary_key`, else `id`.
pub(crate) fn primary_key(cx: &Ctxt, c: &Container) -> Option<usize> {
    let marked: Vec<usize> = c
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.primary_key.is_set())
        .map(|(i, _)| i)
        .collect();
    if marked.len() > 1 {
        for i in &marked[1..] {
            cx.error(
                &c.fields[*i].ident,
                "a model has one primary key: `primary_key` is already on another field",
            );
        }
    }
    let pk = marked
        .first()
        .copied()
        .or_else(|| c.fields.iter().position(|f| f.ident == "id"));
    if pk.is_none() {
        cx.error(
            &c.ident,
            format!("`{}` has no primary key\nhelp: add a field `id: i64`, or mark a field with `#[model(primary_key)]`", c.ident),
        );
    }
    pk
}

/// Options that do not go together on one field.
pub(crate) fn combinations(cx: &Ctxt, f: &FieldAst, is_pk: bool, r: Option<&Resolved>) {
    let conflict = |a: &str, b: &str, span: Option<proc_macro2::Span>| {
        cx.error_at(
            span.unwrap_or_else(|| f.ident.span()),
            format!("`{a}` cannot be combined with `{b}`"),
        );
    };
    if f.model.is_set() && f.collection.is_set() {
        conflict("collection", "model", f.collection.span());
    }
    if f.via.is_set() && !f.collection.is_set() {
        cx.error_at(
            f.via.span().unwrap_or_else(|| f.ident.span()),
            "`via` only goes with `collection`\nhelp: write `#[model(collection = Pet, via = owner)]`",
        );
    }
    if f.required.is_set() && f.default.is_set() {
        conflict("default", "required", f.default.span());
    }
    if f.created_at.is_set() && f.updated_at.is_set() {
        conflict("updated_at", "created_at", f.updated_at.span());
    }
    if f.auto_increment.is_set() && !is_pk {
        cx.error_at(
            f.auto_increment.span().unwrap_or_else(|| f.ident.span()),
            "`auto_increment` only goes with the primary key",
        );
    }
    let assoc = f.assoc().is_some();
    if assoc {
        for (name, span) in [
            ("primary_key", f.primary_key.span()),
            ("type", f.explicit_ty.span()),
            ("unique", f.unique.span()),
            ("default", f.default.span()),
            ("created_at", f.created_at.span()),
            ("updated_at", f.updated_at.span()),
            (
                "column",
                if f.collection.is_set() {
                    f.column.span()
                } else {
                    None
                },
            ),
        ] {
            if let Some(s) = span {
                cx.error_at(s, format!("`{name}` does not apply to an association"));
            }
        }
    }
    if is_pk {
        for (name, span) in [
            ("allow_null", f.allow_null.span()),
            ("default", f.default.span()),
        ] {
            if let Some(s) = span {
                cx.error_at(s, format!("`{name}` does not apply to the primary key"));
            }
        }
        if let Some(r) = r {
            if r.optional {
                cx.error(&f.ty, "the primary key cannot be an `Option`");
            }
            if !matches!(r.ty, Ty::Integer | Ty::String) {
                cx.error(&f.ty, "the primary key must be an integer or a string");
            }
        }
    }
}

/// Rules and defaults must fit the attribute's type.
pub(crate) fn rules_fit_type(cx: &Ctxt, f: &FieldAst, r: &Resolved) {
    let string_rules = [
        ("is_email", f.is_email.span()),
        ("min_length", f.min_length.span()),
        ("max_length", f.max_length.span()),
        ("regex", f.regex.span()),
    ];
    if r.ty != Ty::String {
        for (name, span) in string_rules {
            if let Some(s) = span {
                cx.error_at(s, format!("`{name}` only applies to string attributes"));
            }
        }
    }
    if !matches!(r.ty, Ty::Integer | Ty::Number) {
        for (name, span) in [("min", f.min.span()), ("max", f.max.span())] {
            if let Some(s) = span {
                cx.error_at(s, format!("`{name}` only applies to number attributes"));
            }
        }
    }
    if (f.created_at.is_set() || f.updated_at.is_set()) && r.ty != Ty::Integer {
        cx.error(
            &f.ty,
            "an automatic timestamp holds epoch milliseconds: use an integer type such as `i64`",
        );
    }
    if let Some(d) = f.default.get() {
        let ok =
            d.ty() == r.ty || (r.ty == Ty::Number && d.ty() == Ty::Integer) || r.ty == Ty::Json;
        if !ok {
            cx.error_at(
                f.default.span().unwrap_or_else(|| f.ty.span()),
                "the `default` value does not match the attribute's type",
            );
        }
    }
    if let Some(re) = f.regex.get()
        && re.is_empty()
    {
        cx.error_at(
            f.regex.span().unwrap_or_else(|| f.ident.span()),
            "`regex` needs a pattern",
        );
    }
}

/// JSON names and columns are unique within the model.
pub(crate) fn unique_names(cx: &Ctxt, c: &Container) {
    let mut json: HashMap<String, &syn::Ident> = HashMap::new();
    let mut cols: HashMap<String, &syn::Ident> = HashMap::new();
    for f in &c.fields {
        if let Some(prev) = json.insert(f.json_name(), &f.ident) {
            cx.error(
                &f.ident,
                format!(
                    "the attribute name `{}` is already used by field `{prev}`",
                    f.json_name()
                ),
            );
        }
        if !matches!(f.assoc(), Some(AssocAst::Many(_)))
            && let Some(prev) = cols.insert(f.column_name(), &f.ident)
        {
            cx.error(
                &f.ident,
                format!(
                    "the column `{}` is already used by field `{prev}`",
                    f.column_name()
                ),
            );
        }
    }
}
