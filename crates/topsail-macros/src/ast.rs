//! Parsing `#[model(...)]` into an internal AST. Parsing never fails early:
//! every problem goes into the [`Ctxt`] and the user sees them all at once.

use std::cell::RefCell;

use proc_macro2::Span;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;

/// Collects errors (serde_derive's `Ctxt`).
pub(crate) struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
}

impl Ctxt {
    pub(crate) fn new() -> Self {
        Ctxt {
            errors: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn error(&self, tokens: impl ToTokens, msg: impl std::fmt::Display) {
        self.errors
            .borrow_mut()
            .push(syn::Error::new_spanned(tokens, msg));
    }

    pub(crate) fn error_at(&self, span: Span, msg: impl std::fmt::Display) {
        self.errors.borrow_mut().push(syn::Error::new(span, msg));
    }

    pub(crate) fn syn(&self, e: syn::Error) {
        self.errors.borrow_mut().push(e);
    }

    /// All errors combined, if any.
    pub(crate) fn check(self) -> Result<(), syn::Error> {
        let mut errors = self.errors.into_inner().into_iter();
        let Some(mut first) = errors.next() else {
            return Ok(());
        };
        for e in errors {
            first.combine(e);
        }
        Err(first)
    }
}

pub(crate) const CONTAINER_KEYS: &[&str] = &["identity", "table", "crate", "strict", "lifecycle"];
pub(crate) const FIELD_KEYS: &[&str] = &[
    "primary_key",
    "auto_increment",
    "column",
    "rename",
    "type",
    "json",
    "required",
    "unique",
    "allow_null",
    "default",
    "created_at",
    "updated_at",
    "is_email",
    "min",
    "max",
    "min_length",
    "max_length",
    "is_in",
    "regex",
    "model",
    "collection",
    "via",
];

/// A value that can be set once; a second setting is reported.
pub(crate) struct Attr<T> {
    name: &'static str,
    value: Option<(Span, T)>,
}

impl<T> Attr<T> {
    pub(crate) fn none(name: &'static str) -> Self {
        Attr { name, value: None }
    }

    pub(crate) fn set(&mut self, cx: &Ctxt, span: Span, v: T) {
        if self.value.is_some() {
            cx.error_at(span, format!("duplicate `model` attribute `{}`", self.name));
        } else {
            self.value = Some((span, v));
        }
    }

    pub(crate) fn get(&self) -> Option<&T> {
        self.value.as_ref().map(|(_, v)| v)
    }

    pub(crate) fn span(&self) -> Option<Span> {
        self.value.as_ref().map(|(s, _)| *s)
    }

    pub(crate) fn is_set(&self) -> bool {
        self.value.is_some()
    }
}

impl Attr<()> {
    pub(crate) fn flag(&mut self, cx: &Ctxt, span: Span) {
        self.set(cx, span, ());
    }
}

/// The storage type, as written or inferred.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Ty {
    String,
    Integer,
    Number,
    Boolean,
    Json,
}

impl Ty {
    fn from_ident(s: &str) -> Option<Ty> {
        Some(match s {
            "string" => Ty::String,
            "integer" => Ty::Integer,
            "number" => Ty::Number,
            "boolean" => Ty::Boolean,
            "json" => Ty::Json,
            _ => return None,
        })
    }
}

/// A literal from an attribute (`default`, `is_in`).
#[derive(Clone)]
pub(crate) enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Lit {
    pub(crate) fn ty(&self) -> Ty {
        match self {
            Lit::Str(_) => Ty::String,
            Lit::Int(_) => Ty::Integer,
            Lit::Float(_) => Ty::Number,
            Lit::Bool(_) => Ty::Boolean,
        }
    }
}

fn parse_lit(e: &syn::Expr) -> Option<Lit> {
    match e {
        syn::Expr::Lit(l) => match &l.lit {
            syn::Lit::Str(s) => Some(Lit::Str(s.value())),
            syn::Lit::Int(i) => i.base10_parse().ok().map(Lit::Int),
            syn::Lit::Float(f) => f.base10_parse().ok().map(Lit::Float),
            syn::Lit::Bool(b) => Some(Lit::Bool(b.value)),
            _ => None,
        },
        syn::Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => match parse_lit(&u.expr)? {
            Lit::Int(i) => Some(Lit::Int(-i)),
            Lit::Float(f) => Some(Lit::Float(-f)),
            _ => None,
        },
        _ => None,
    }
}

fn number(e: &syn::Expr) -> Option<f64> {
    match parse_lit(e)? {
        Lit::Int(i) => Some(i as f64),
        Lit::Float(f) => Some(f),
        _ => None,
    }
}

/// The container (struct) attributes.
pub(crate) struct Container {
    pub(crate) ident: syn::Ident,
    pub(crate) identity: Attr<String>,
    pub(crate) table: Attr<String>,
    pub(crate) krate: Attr<syn::Path>,
    pub(crate) strict: Attr<()>,
    pub(crate) lifecycle: Attr<()>,
    pub(crate) fields: Vec<FieldAst>,
}

/// The kind of association a field is.
pub(crate) enum AssocAst {
    One(syn::Path),
    Many(syn::Path),
}

/// One field and its attributes.
pub(crate) struct FieldAst {
    pub(crate) ident: syn::Ident,
    pub(crate) ty: syn::Type,
    pub(crate) primary_key: Attr<()>,
    pub(crate) auto_increment: Attr<bool>,
    pub(crate) column: Attr<String>,
    pub(crate) rename: Attr<String>,
    pub(crate) explicit_ty: Attr<Ty>,
    pub(crate) required: Attr<()>,
    pub(crate) unique: Attr<()>,
    pub(crate) allow_null: Attr<()>,
    pub(crate) default: Attr<Lit>,
    pub(crate) created_at: Attr<()>,
    pub(crate) updated_at: Attr<()>,
    pub(crate) is_email: Attr<()>,
    pub(crate) min: Attr<f64>,
    pub(crate) max: Attr<f64>,
    pub(crate) min_length: Attr<u64>,
    pub(crate) max_length: Attr<u64>,
    pub(crate) is_in: Attr<Vec<Lit>>,
    pub(crate) regex: Attr<String>,
    pub(crate) model: Attr<syn::Path>,
    pub(crate) collection: Attr<syn::Path>,
    pub(crate) via: Attr<syn::Ident>,
}

impl FieldAst {
    pub(crate) fn assoc(&self) -> Option<AssocAst> {
        if let Some(p) = self.model.get() {
            return Some(AssocAst::One(p.clone()));
        }
        self.collection.get().map(|p| AssocAst::Many(p.clone()))
    }

    /// The JSON name: `rename`, or the field name in camelCase.
    pub(crate) fn json_name(&self) -> String {
        self.rename
            .get()
            .cloned()
            .unwrap_or_else(|| camel_case(&unraw(&self.ident)))
    }

    /// The column name: `column`, or the field name.
    pub(crate) fn column_name(&self) -> String {
        self.column
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

fn unknown(cx: &Ctxt, meta: &ParseNestedMeta<'_>, what: &str, keys: &[&str]) {
    let name = meta.path.to_token_stream().to_string().replace(' ', "");
    cx.error(
        &meta.path,
        format!(
            "unknown `model` {what}attribute `{name}`, expected one of {}",
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
}

/// Skips whatever value follows an attribute we reported, so parsing of the
/// remaining attributes can go on.
fn skip_value(meta: &ParseNestedMeta<'_>) {
    if meta.input.peek(syn::Token![=]) {
        let _ = meta.value().and_then(|v| v.parse::<syn::Expr>());
    } else if meta.input.peek(syn::token::Paren) {
        let _ = meta.parse_nested_meta(|m| {
            skip_value(&m);
            Ok(())
        });
    }
}

fn str_value(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: &str) -> Option<String> {
    match meta.value().and_then(|v| v.parse::<syn::LitStr>()) {
        Ok(s) => Some(s.value()),
        Err(_) => {
            cx.error(
                &meta.path,
                format!("`{key}` takes a string\nhelp: write `{key} = \"...\"`"),
            );
            None
        }
    }
}

fn expr_value(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: &str, form: &str) -> Option<syn::Expr> {
    match meta.value().and_then(|v| v.parse::<syn::Expr>()) {
        Ok(e) => Some(e),
        Err(_) => {
            cx.error(
                &meta.path,
                format!("`{key}` takes a value\nhelp: write `{key} = {form}`"),
            );
            None
        }
    }
}

/// A value that names Rust code. A string is refused with a `help:` line,
/// but its contents are still used, so one mistake gives one error.
fn path_value(
    cx: &Ctxt,
    meta: &ParseNestedMeta<'_>,
    key: &str,
    example: &str,
) -> Option<syn::Path> {
    let e = expr_value(cx, meta, key, example)?;
    match e {
        syn::Expr::Path(p) => Some(p.path),
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => {
            cx.error(
                &s,
                format!(
                    "`{key}` takes a path, not a string\nhelp: write `{key} = {}`",
                    s.value()
                ),
            );
            syn::parse_str::<syn::Path>(&s.value()).ok()
        }
        other => {
            cx.error(
                &other,
                format!("`{key}` takes a path\nhelp: write `{key} = {example}`"),
            );
            None
        }
    }
}

pub(crate) fn parse(cx: &Ctxt, input: &syn::DeriveInput) -> Option<Container> {
    let mut c = Container {
        ident: input.ident.clone(),
        identity: Attr::none("identity"),
        table: Attr::none("table"),
        krate: Attr::none("crate"),
        strict: Attr::none("strict"),
        lifecycle: Attr::none("lifecycle"),
        fields: Vec::new(),
    };
    if !input.generics.params.is_empty() {
        cx.error(
            &input.generics,
            "`#[derive(Model)]` does not support generic structs",
        );
    }
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("model")) {
        let r = attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            if meta.path.is_ident("identity") {
                if let Some(v) = str_value(cx, &meta, "identity") {
                    c.identity.set(cx, span, v);
                }
            } else if meta.path.is_ident("table") {
                if let Some(v) = str_value(cx, &meta, "table") {
                    c.table.set(cx, span, v);
                }
            } else if meta.path.is_ident("crate") {
                match meta.value().and_then(|v| v.parse::<syn::Path>()) {
                    Ok(p) => c.krate.set(cx, span, p),
                    Err(_) => cx.error(
                        &meta.path,
                        "`crate` takes a path\nhelp: write `crate = ::my_reexport::topsail`",
                    ),
                }
            } else if meta.path.is_ident("strict") {
                c.strict.flag(cx, span);
            } else if meta.path.is_ident("lifecycle") {
                c.lifecycle.flag(cx, span);
            } else {
                unknown(cx, &meta, "", CONTAINER_KEYS);
                skip_value(&meta);
            }
            Ok(())
        });
        if let Err(e) = r {
            cx.syn(e);
        }
    }
    let fields = match &input.data {
        syn::Data::Struct(s) => match &s.fields {
            syn::Fields::Named(f) => &f.named,
            _ => {
                cx.error(
                    &input.ident,
                    "`#[derive(Model)]` needs a struct with named fields",
                );
                return None;
            }
        },
        _ => {
            cx.error(
                &input.ident,
                "`#[derive(Model)]` can only be used on structs",
            );
            return None;
        }
    };
    for f in fields {
        c.fields.push(parse_field(cx, f));
    }
    Some(c)
}

fn parse_field(cx: &Ctxt, f: &syn::Field) -> FieldAst {
    let mut fa = FieldAst {
        ident: f
            .ident
            .clone()
            .unwrap_or_else(|| syn::Ident::new("_", f.span())),
        ty: f.ty.clone(),
        primary_key: Attr::none("primary_key"),
        auto_increment: Attr::none("auto_increment"),
        column: Attr::none("column"),
        rename: Attr::none("rename"),
        explicit_ty: Attr::none("type"),
        required: Attr::none("required"),
        unique: Attr::none("unique"),
        allow_null: Attr::none("allow_null"),
        default: Attr::none("default"),
        created_at: Attr::none("created_at"),
        updated_at: Attr::none("updated_at"),
        is_email: Attr::none("is_email"),
        min: Attr::none("min"),
        max: Attr::none("max"),
        min_length: Attr::none("min_length"),
        max_length: Attr::none("max_length"),
        is_in: Attr::none("is_in"),
        regex: Attr::none("regex"),
        model: Attr::none("model"),
        collection: Attr::none("collection"),
        via: Attr::none("via"),
    };
    for attr in f.attrs.iter().filter(|a| a.path().is_ident("model")) {
        let r = attr.parse_nested_meta(|meta| {
            parse_field_meta(cx, &mut fa, &meta);
            Ok(())
        });
        if let Err(e) = r {
            cx.syn(e);
        }
    }
    fa
}

fn parse_field_meta(cx: &Ctxt, fa: &mut FieldAst, meta: &ParseNestedMeta<'_>) {
    let span = meta.path.span();
    let Some(key) = meta.path.get_ident().map(|i| i.to_string()) else {
        unknown(cx, meta, "field ", FIELD_KEYS);
        skip_value(meta);
        return;
    };
    match key.as_str() {
        "primary_key" => fa.primary_key.flag(cx, span),
        "required" => fa.required.flag(cx, span),
        "unique" => fa.unique.flag(cx, span),
        "allow_null" => fa.allow_null.flag(cx, span),
        "created_at" => fa.created_at.flag(cx, span),
        "updated_at" => fa.updated_at.flag(cx, span),
        "is_email" => fa.is_email.flag(cx, span),
        "json" => fa.explicit_ty.set(cx, span, Ty::Json),
        "column" => {
            if let Some(v) = str_value(cx, meta, "column") {
                fa.column.set(cx, span, v);
            }
        }
        "rename" => {
            if let Some(v) = str_value(cx, meta, "rename") {
                fa.rename.set(cx, span, v);
            }
        }
        "regex" => {
            if let Some(v) = str_value(cx, meta, "regex") {
                fa.regex.set(cx, span, v);
            }
        }
        "auto_increment" => match meta.value().and_then(|v| v.parse::<syn::LitBool>()) {
            Ok(b) => fa.auto_increment.set(cx, span, b.value),
            Err(_) => cx.error(&meta.path, "`auto_increment` takes a boolean\nhelp: write `auto_increment = false`"),
        },
        "type" => match meta.value().and_then(|v| v.parse::<syn::Ident>()) {
            Ok(i) => match Ty::from_ident(&i.to_string()) {
                Some(t) => fa.explicit_ty.set(cx, span, t),
                None => cx.error(&i, format!("unknown attribute type `{i}`, expected one of `string`, `integer`, `number`, `boolean`, `json`")),
            },
            Err(_) => cx.error(&meta.path, "`type` takes a type name\nhelp: write `type = json`"),
        },
        "default" => {
            if let Some(e) = expr_value(cx, meta, "default", "\"text\" | 42 | 1.5 | true") {
                match parse_lit(&e) {
                    Some(l) => fa.default.set(cx, span, l),
                    None => cx.error(&e, "`default` must be a string, number or boolean literal"),
                }
            }
        }
        "min" | "max" => {
            if let Some(e) = expr_value(cx, meta, &key, "10") {
                match number(&e) {
                    Some(n) if key == "min" => fa.min.set(cx, span, n),
                    Some(n) => fa.max.set(cx, span, n),
                    None => cx.error(&e, format!("`{key}` must be a number literal")),
                }
            }
        }
        "min_length" | "max_length" => match meta.value().and_then(|v| v.parse::<syn::LitInt>()).and_then(|i| i.base10_parse::<u64>()) {
            Ok(n) if key == "min_length" => fa.min_length.set(cx, span, n),
            Ok(n) => fa.max_length.set(cx, span, n),
            Err(_) => cx.error(&meta.path, format!("`{key}` takes a whole number\nhelp: write `{key} = 3`")),
        },
        "is_in" => match meta.value().and_then(|v| v.parse::<syn::ExprArray>()) {
            Ok(arr) => {
                let mut lits = Vec::new();
                for e in &arr.elems {
                    match parse_lit(e) {
                        Some(l) => lits.push(l),
                        None => cx.error(e, "`is_in` values must be string, number or boolean literals"),
                    }
                }
                fa.is_in.set(cx, span, lits);
            }
            Err(_) => cx.error(&meta.path, "`is_in` takes a list\nhelp: write `is_in = [\"a\", \"b\"]`"),
        },
        "model" | "collection" => {
            if let Some(p) = path_value(cx, meta, &key, "User") {
                if key == "model" {
                    fa.model.set(cx, span, p);
                } else {
                    fa.collection.set(cx, span, p);
                }
            }
        }
        "via" => {
            if let Some(p) = path_value(cx, meta, "via", "owner") {
                match p.get_ident() {
                    Some(i) => fa.via.set(cx, span, i.clone()),
                    None => cx.error(&p, "`via` takes the name of a field of the associated model\nhelp: write `via = owner`"),
                }
            }
        }
        _ => {
            unknown(cx, meta, "field ", FIELD_KEYS);
            skip_value(meta);
        }
    }
}
