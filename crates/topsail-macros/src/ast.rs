//! The derive's input as an internal AST (serde_derive's `ast.rs`): the
//! struct and its fields with their `#[model(...)]` keys already parsed.
//! Parsing never fails early: every problem goes into the [`Ctxt`].

use syn::spanned::Spanned;

use crate::attr::{self, ContainerAttrs, FieldAttrs, Ty};
use crate::ctxt::Ctxt;
use crate::symbol;

/// The struct.
pub(crate) struct Container {
    pub(crate) ident: syn::Ident,
    pub(crate) attrs: ContainerAttrs,
    pub(crate) fields: Vec<FieldAst>,
}

/// The kind of association a field is.
pub(crate) enum AssocAst {
    One(syn::Path),
    Many(syn::Path),
}

/// One field and its keys.
pub(crate) struct FieldAst {
    pub(crate) ident: syn::Ident,
    pub(crate) ty: syn::Type,
    pub(crate) attrs: FieldAttrs,
}

impl FieldAst {
    pub(crate) fn assoc(&self) -> Option<AssocAst> {
        if let Some(p) = self.attrs.model.get() {
            return Some(AssocAst::One(p.clone()));
        }
        self.attrs
            .collection
            .get()
            .map(|p| AssocAst::Many(p.clone()))
    }

    /// The storage type the field declares: `type = ...`, or `json`.
    pub(crate) fn declared_ty(&self) -> Option<Ty> {
        let json = self.attrs.json.is_set().then_some(Ty::Json);
        self.attrs.explicit_ty.get().copied().or(json)
    }

    /// The JSON name: `rename`, or the field name in camelCase.
    pub(crate) fn json_name(&self) -> String {
        self.attrs
            .rename
            .get()
            .cloned()
            .unwrap_or_else(|| camel_case(&unraw(&self.ident)))
    }

    /// The column name: `column`, or the field name.
    pub(crate) fn column_name(&self) -> String {
        self.attrs
            .column
            .get()
            .cloned()
            .unwrap_or_else(|| unraw(&self.ident))
    }
}

pub(crate) fn unraw(i: &syn::Ident) -> String {
    let s = i.to_string();
    s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
}

pub(crate) fn camel_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads every `#[model(...)]` of `attrs` with `read`, which parses one
/// key and says whether it knew it; unknown keys are reported.
fn read_keys(
    cx: &Ctxt,
    attrs: &[syn::Attribute],
    what: &str,
    keys: &[symbol::Symbol],
    mut read: impl FnMut(&syn::meta::ParseNestedMeta<'_>) -> bool,
) {
    for a in attrs.iter().filter(|a| *a.path() == symbol::NAMESPACE) {
        let r = a.parse_nested_meta(|meta| {
            if !read(&meta) {
                attr::unknown(cx, &meta, what, keys);
            }
            Ok(())
        });
        if let Err(e) = r {
            cx.syn(e);
        }
    }
}

pub(crate) fn parse(cx: &Ctxt, input: &syn::DeriveInput) -> Option<Container> {
    let mut attrs = ContainerAttrs::new();
    if !input.generics.params.is_empty() {
        cx.error(
            &input.generics,
            "`#[derive(Model)]` does not support generic structs",
        );
    }
    read_keys(cx, &input.attrs, "", ContainerAttrs::KEYS, |meta| {
        attrs.parse(cx, meta)
    });
    let fields = match &input.data {
        syn::Data::Struct(syn::DataStruct {
            fields: syn::Fields::Named(f),
            ..
        }) => &f.named,
        syn::Data::Struct(_) => {
            cx.error(
                &input.ident,
                "`#[derive(Model)]` needs a struct with named fields",
            );
            return None;
        }
        _ => {
            cx.error(
                &input.ident,
                "`#[derive(Model)]` can only be used on structs",
            );
            return None;
        }
    };
    Some(Container {
        ident: input.ident.clone(),
        attrs,
        fields: fields.iter().map(|f| parse_field(cx, f)).collect(),
    })
}

fn parse_field(cx: &Ctxt, f: &syn::Field) -> FieldAst {
    let mut attrs = FieldAttrs::new();
    read_keys(cx, &f.attrs, "field ", FieldAttrs::KEYS, |meta| {
        attrs.parse(cx, meta)
    });
    FieldAst {
        ident: f
            .ident
            .clone()
            .unwrap_or_else(|| syn::Ident::new("_", f.span())),
        ty: f.ty.clone(),
        attrs,
    }
}
