//! The `#[model(...)]` keys and their values. Each key is declared once, in
//! [`ContainerAttrs`] or [`FieldAttrs`]: its field, its [`Symbol`], and the
//! parser of its value. Parsing reports into the [`Ctxt`] and never stops
//! early.

use proc_macro2::Span;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;

use crate::ctxt::Ctxt;
use crate::symbol::{self, Symbol};

/// A value that can be set once; a second setting is reported.
pub(crate) struct Attr<T> {
    name: Symbol,
    value: Option<(Span, T)>,
}

impl<T> Attr<T> {
    fn none(name: Symbol) -> Self {
        Attr { name, value: None }
    }

    fn set(&mut self, cx: &Ctxt, span: Span, v: T) {
        if self.value.is_some() {
            cx.error_at(
                span,
                format!(
                    "duplicate `{}` attribute `{}`",
                    symbol::NAMESPACE,
                    self.name
                ),
            );
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

    /// The key and where it was written, when it was.
    pub(crate) fn written(&self) -> Option<(Symbol, Span)> {
        self.span().map(|s| (self.name, s))
    }
}

/// Declares a set of keys: a struct with one [`Attr`] per key, its list of
/// keys, and the parser that reads one key into its attribute.
macro_rules! attributes {
    ($(#[$doc:meta])* $name:ident {
        $($(#[$fdoc:meta])* $field:ident: $ty:ty = $sym:ident by $parse:ident,)*
    }) => {
        $(#[$doc])*
        pub(crate) struct $name {
            $($(#[$fdoc])* pub(crate) $field: Attr<$ty>,)*
        }

        impl $name {
            /// Every key of this set, in the order errors list them.
            pub(crate) const KEYS: &'static [Symbol] = &[$(symbol::$sym),*];

            pub(crate) fn new() -> Self {
                $name { $($field: Attr::none(symbol::$sym),)* }
            }

            /// Reads `key` or `key = value` into its attribute; `false` when
            /// `key` is not one of this set.
            pub(crate) fn parse(&mut self, cx: &Ctxt, meta: &ParseNestedMeta<'_>) -> bool {
                $(
                    if meta.path == symbol::$sym {
                        if let Some(v) = value::$parse(cx, meta, symbol::$sym) {
                            self.$field.set(cx, meta.path.span(), v);
                        }
                        return true;
                    }
                )*
                false
            }
        }
    };
}

attributes! {
    /// The keys on the struct.
    ContainerAttrs {
        identity: String = IDENTITY by string,
        table: String = TABLE by string,
        krate: syn::Path = CRATE by crate_path,
        strict: () = STRICT by flag,
        require_if_match: () = REQUIRE_IF_MATCH by flag,
        lifecycle: () = LIFECYCLE by flag,
    }
}

attributes! {
    /// The keys on a field.
    FieldAttrs {
        primary_key: () = PRIMARY_KEY by flag,
        auto_increment: bool = AUTO_INCREMENT by boolean,
        column: String = COLUMN by string,
        rename: String = RENAME by string,
        /// `type = ...`.
        explicit_ty: Ty = TYPE by attr_type,
        json: () = JSON by flag,
        required: () = REQUIRED by flag,
        unique: () = UNIQUE by flag,
        allow_null: () = ALLOW_NULL by flag,
        /// Never sent to a client, nor filtered, sorted or set by one.
        private: () = PRIVATE by flag,
        /// Never set by a client.
        read_only: () = READ_ONLY by flag,
        default: Lit = DEFAULT by literal,
        created_at: () = CREATED_AT by flag,
        updated_at: () = UPDATED_AT by flag,
        is_email: () = IS_EMAIL by flag,
        min: f64 = MIN by number,
        max: f64 = MAX by number,
        min_length: u64 = MIN_LENGTH by whole_number,
        max_length: u64 = MAX_LENGTH by whole_number,
        is_in: Vec<Lit> = IS_IN by literals,
        regex: String = REGEX by string,
        model: syn::Path = MODEL by model_path,
        collection: syn::Path = COLLECTION by model_path,
        via: syn::Ident = VIA by field_name,
    }
}

/// Reports a key that is none of `keys`, and skips its value so parsing
/// of the other keys goes on.
pub(crate) fn unknown(cx: &Ctxt, meta: &ParseNestedMeta<'_>, what: &str, keys: &[Symbol]) {
    let name = meta.path.to_token_stream().to_string().replace(' ', "");
    let expected: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    cx.error(
        &meta.path,
        format!(
            "unknown `{}` {what}attribute `{name}`, expected one of {}",
            symbol::NAMESPACE,
            expected.join(", ")
        ),
    );
    skip_value(meta);
}

/// Skips whatever value follows a key that was reported.
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

/// The parsers of values, one per kind. Each reports a malformed value with
/// a `help:` line showing the right form.
mod value {
    use super::*;

    pub(super) fn flag(_: &Ctxt, _: &ParseNestedMeta<'_>, _: Symbol) -> Option<()> {
        Some(())
    }

    pub(super) fn string(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: Symbol) -> Option<String> {
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

    pub(super) fn boolean(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: Symbol) -> Option<bool> {
        match meta.value().and_then(|v| v.parse::<syn::LitBool>()) {
            Ok(b) => Some(b.value),
            Err(_) => {
                cx.error(
                    &meta.path,
                    format!("`{key}` takes a boolean\nhelp: write `{key} = false`"),
                );
                None
            }
        }
    }

    pub(super) fn crate_path(
        cx: &Ctxt,
        meta: &ParseNestedMeta<'_>,
        key: Symbol,
    ) -> Option<syn::Path> {
        match meta.value().and_then(|v| v.parse::<syn::Path>()) {
            Ok(p) => Some(p),
            Err(_) => {
                cx.error(
                    &meta.path,
                    format!("`{key}` takes a path\nhelp: write `{key} = ::my_reexport::topsail`"),
                );
                None
            }
        }
    }

    pub(super) fn attr_type(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: Symbol) -> Option<Ty> {
        match meta.value().and_then(|v| v.parse::<syn::Ident>()) {
            Ok(i) => {
                let ty = Ty::from_ident(&i.to_string());
                if ty.is_none() {
                    cx.error(&i, format!("unknown attribute type `{i}`, expected one of `string`, `integer`, `number`, `boolean`, `json`"));
                }
                ty
            }
            Err(_) => {
                cx.error(
                    &meta.path,
                    format!("`{key}` takes a type name\nhelp: write `{key} = json`"),
                );
                None
            }
        }
    }

    fn expr(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: Symbol, form: &str) -> Option<syn::Expr> {
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

    pub(super) fn literal(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: Symbol) -> Option<Lit> {
        let e = expr(cx, meta, key, "\"text\" | 42 | 1.5 | true")?;
        let lit = parse_lit(&e);
        if lit.is_none() {
            cx.error(
                &e,
                format!("`{key}` must be a string, number or boolean literal"),
            );
        }
        lit
    }

    pub(super) fn number(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: Symbol) -> Option<f64> {
        let e = expr(cx, meta, key, "10")?;
        match parse_lit(&e) {
            Some(Lit::Int(i)) => Some(i as f64),
            Some(Lit::Float(f)) => Some(f),
            _ => {
                cx.error(&e, format!("`{key}` must be a number literal"));
                None
            }
        }
    }

    pub(super) fn whole_number(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: Symbol) -> Option<u64> {
        let parsed = meta
            .value()
            .and_then(|v| v.parse::<syn::LitInt>())
            .and_then(|i| i.base10_parse::<u64>());
        match parsed {
            Ok(n) => Some(n),
            Err(_) => {
                cx.error(
                    &meta.path,
                    format!("`{key}` takes a whole number\nhelp: write `{key} = 3`"),
                );
                None
            }
        }
    }

    pub(super) fn literals(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: Symbol) -> Option<Vec<Lit>> {
        let Ok(arr) = meta.value().and_then(|v| v.parse::<syn::ExprArray>()) else {
            cx.error(
                &meta.path,
                format!("`{key}` takes a list\nhelp: write `{key} = [\"a\", \"b\"]`"),
            );
            return None;
        };
        let mut lits = Vec::new();
        for e in &arr.elems {
            match parse_lit(e) {
                Some(l) => lits.push(l),
                None => cx.error(
                    e,
                    format!("`{key}` values must be string, number or boolean literals"),
                ),
            }
        }
        Some(lits)
    }

    /// A value that names Rust code. A string is refused with a `help:`
    /// line, but its contents are still used, so one mistake gives one
    /// error.
    fn path(
        cx: &Ctxt,
        meta: &ParseNestedMeta<'_>,
        key: Symbol,
        example: &str,
    ) -> Option<syn::Path> {
        match expr(cx, meta, key, example)? {
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

    pub(super) fn model_path(
        cx: &Ctxt,
        meta: &ParseNestedMeta<'_>,
        key: Symbol,
    ) -> Option<syn::Path> {
        path(cx, meta, key, "User")
    }

    pub(super) fn field_name(
        cx: &Ctxt,
        meta: &ParseNestedMeta<'_>,
        key: Symbol,
    ) -> Option<syn::Ident> {
        let p = path(cx, meta, key, "owner")?;
        let ident = p.get_ident().cloned();
        if ident.is_none() {
            cx.error(
                &p,
                format!("`{key}` takes the name of a field of the associated model\nhelp: write `{key} = owner`"),
            );
        }
        ident
    }
}
