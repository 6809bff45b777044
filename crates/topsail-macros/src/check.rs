//! Rules that span several attributes, one function each, run after parsing
//! (serde_derive's `check.rs`). Each reports into the [`Ctxt`] and returns
//! the resolved facts the expansion needs.

use std::collections::HashMap;

use syn::spanned::Spanned;

use proc_macro2::Span;

use crate::ast::{AssocAst, Container, FieldAst};
use crate::attr::Ty;
use crate::ctxt::Ctxt;
use crate::symbol::{self, Symbol};

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
    match (f.declared_ty(), inferred) {
        (Some(ty), _) => Resolved { ty, optional },
        (None, Some(r)) => r,
        (None, None) => {
            cx.error(
                &f.ty,
                format!(
                    "cannot infer the attribute type of `{}` from its Rust type\nhelp: add `#[{}({} = json)]` (or `string`, `integer`, `number`, `boolean`)",
                    f.ident,
                    symbol::NAMESPACE,
                    symbol::TYPE
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
        .filter(|(_, f)| f.attrs.primary_key.is_set())
        .map(|(i, _)| i)
        .collect();
    if marked.len() > 1 {
        for i in &marked[1..] {
            cx.error(
                &c.fields[*i].ident,
                format!(
                    "a model has one primary key: `{}` is already on another field",
                    symbol::PRIMARY_KEY
                ),
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
            format!(
                "`{}` has no primary key\nhelp: add a field `id: i64`, or mark a field with `#[{}({})]`",
                c.ident,
                symbol::NAMESPACE,
                symbol::PRIMARY_KEY
            ),
        );
    }
    pk
}

/// Reports `message` about the key written at `at`, or at the field.
fn report(cx: &Ctxt, f: &FieldAst, at: Option<Span>, message: String) {
    cx.error_at(at.unwrap_or_else(|| f.ident.span()), message);
}

/// Options that do not go together on one field.
pub(crate) fn combinations(cx: &Ctxt, f: &FieldAst, is_pk: bool, r: Option<&Resolved>) {
    let a = &f.attrs;
    conflict(
        cx,
        a.collection.written(),
        a.model.is_set().then_some(symbol::MODEL),
    );
    if a.via.is_set() && !a.collection.is_set() {
        report(
            cx,
            f,
            a.via.span(),
            format!(
                "`{}` only goes with `{}`\nhelp: write `#[{}({} = Pet, {} = owner)]`",
                symbol::VIA,
                symbol::COLLECTION,
                symbol::NAMESPACE,
                symbol::COLLECTION,
                symbol::VIA
            ),
        );
    }
    conflict(
        cx,
        a.default.written(),
        a.required.is_set().then_some(symbol::REQUIRED),
    );
    conflict(
        cx,
        a.updated_at.written(),
        a.created_at.is_set().then_some(symbol::CREATED_AT),
    );
    conflict(
        cx,
        a.json.written(),
        a.explicit_ty.is_set().then_some(symbol::TYPE),
    );
    if a.auto_increment.is_set() && !is_pk {
        report(
            cx,
            f,
            a.auto_increment.span(),
            format!(
                "`{}` only goes with the primary key",
                symbol::AUTO_INCREMENT
            ),
        );
    }
    if f.assoc().is_some() {
        let column = a.collection.is_set().then(|| a.column.written()).flatten();
        let keys = [
            a.primary_key.written(),
            a.explicit_ty.written(),
            a.unique.written(),
            a.default.written(),
            a.created_at.written(),
            a.updated_at.written(),
            a.private.written(),
            a.read_only.written(),
            column,
        ];
        not_here(cx, &keys, "an association");
    }
    if is_pk {
        not_here(
            cx,
            &[
                a.allow_null.written(),
                a.default.written(),
                a.private.written(),
            ],
            "the primary key",
        );
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

/// Reports `key`, where it was written, when `other` is written too.
fn conflict(cx: &Ctxt, key: Option<(Symbol, Span)>, other: Option<Symbol>) {
    if let (Some((key, at)), Some(other)) = (key, other) {
        cx.error_at(at, format!("`{key}` cannot be combined with `{other}`"));
    }
}

/// Reports each key written of `keys`: it does not apply to `what`.
fn not_here(cx: &Ctxt, keys: &[Option<(Symbol, Span)>], what: &str) {
    for (key, at) in keys.iter().flatten() {
        cx.error_at(*at, format!("`{key}` does not apply to {what}"));
    }
}

/// Reports each key written of `keys`: it only applies to `what`.
fn only_for(cx: &Ctxt, keys: &[Option<(Symbol, Span)>], what: &str) {
    for (key, at) in keys.iter().flatten() {
        cx.error_at(*at, format!("`{key}` only applies to {what}"));
    }
}

/// Rules and defaults must fit the attribute's type.
pub(crate) fn rules_fit_type(cx: &Ctxt, f: &FieldAst, r: &Resolved) {
    let a = &f.attrs;
    if r.ty != Ty::String {
        let string_rules = [
            a.is_email.written(),
            a.min_length.written(),
            a.max_length.written(),
            a.regex.written(),
        ];
        only_for(cx, &string_rules, "string attributes");
    }
    if !matches!(r.ty, Ty::Integer | Ty::Number) {
        only_for(cx, &[a.min.written(), a.max.written()], "number attributes");
    }
    if (a.created_at.is_set() || a.updated_at.is_set()) && r.ty != Ty::Integer {
        cx.error(
            &f.ty,
            "an automatic timestamp holds epoch milliseconds: use an integer type such as `i64`",
        );
    }
    if let Some(d) = a.default.get() {
        let ok =
            d.ty() == r.ty || (r.ty == Ty::Number && d.ty() == Ty::Integer) || r.ty == Ty::Json;
        if !ok {
            cx.error_at(
                a.default.span().unwrap_or_else(|| f.ty.span()),
                format!(
                    "the `{}` value does not match the attribute's type",
                    symbol::DEFAULT
                ),
            );
        }
    }
    if let Some(re) = a.regex.get()
        && re.is_empty()
    {
        report(
            cx,
            f,
            a.regex.span(),
            format!("`{}` needs a pattern", symbol::REGEX),
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
