//! Code generation. The derive emits metadata and thin glue; the logic lives
//! in generic library code behind `::topsail::__private`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{AssocAst, Container, FieldAst, unraw};
use crate::attr::{Lit, Ty};
use crate::check::{self, Resolved};
use crate::ctxt::Ctxt;

fn lit_tokens(p: &TokenStream, l: &Lit) -> TokenStream {
    match l {
        Lit::Str(s) => quote!(#p::Literal::Str(#s)),
        Lit::Int(i) => quote!(#p::Literal::Int(#i)),
        Lit::Float(f) => quote!(#p::Literal::Float(#f)),
        Lit::Bool(b) => quote!(#p::Literal::Bool(#b)),
    }
}

fn ty_tokens(p: &TokenStream, t: Ty) -> TokenStream {
    match t {
        Ty::String => quote!(#p::AttrType::String),
        Ty::Integer => quote!(#p::AttrType::Integer),
        Ty::Number => quote!(#p::AttrType::Number),
        Ty::Boolean => quote!(#p::AttrType::Boolean),
        Ty::Json => quote!(#p::AttrType::Json),
    }
}

/// The statements that set a scalar field's flags and rules on `__a`.
fn attr_settings(p: &TokenStream, f: &FieldAst, r: &Resolved) -> Vec<TokenStream> {
    let a = &f.attrs;
    let some = |t: TokenStream| quote!(::core::option::Option::Some(#t));
    let mut sets = Vec::new();
    if a.required.is_set() {
        sets.push(quote!(__a.required = true;));
    }
    if a.unique.is_set() {
        sets.push(quote!(__a.unique = true;));
    }
    if a.allow_null.is_set() || r.optional {
        sets.push(quote!(__a.allow_null = true;));
    }
    if a.private.is_set() {
        sets.push(quote!(__a.private = true;));
    }
    if a.read_only.is_set() {
        sets.push(quote!(__a.read_only = true;));
    }
    if let Some(d) = a.default.get() {
        let l = some(lit_tokens(p, d));
        sets.push(quote!(__a.default = #l;));
    }
    if a.created_at.is_set() {
        let at = some(quote!(#p::AutoTimestamp::CreatedAt));
        sets.push(quote!(__a.auto = #at;));
    }
    if a.updated_at.is_set() {
        let at = some(quote!(#p::AutoTimestamp::UpdatedAt));
        sets.push(quote!(__a.auto = #at;));
    }
    sets.extend(
        rules(p, f)
            .into_iter()
            .map(|rule| quote!(__a.rules.push(#rule);)),
    );
    sets
}

/// The validation rules of a scalar field, in the order they are checked.
fn rules(p: &TokenStream, f: &FieldAst) -> Vec<TokenStream> {
    let a = &f.attrs;
    let mut rules = Vec::new();
    if a.is_email.is_set() {
        rules.push(quote!(#p::Rule::IsEmail));
    }
    if let Some(m) = a.min.get() {
        rules.push(quote!(#p::Rule::Min(#m)));
    }
    if let Some(m) = a.max.get() {
        rules.push(quote!(#p::Rule::Max(#m)));
    }
    if let Some(&m) = a.min_length.get() {
        let m = m as usize;
        rules.push(quote!(#p::Rule::MinLength(#m)));
    }
    if let Some(&m) = a.max_length.get() {
        let m = m as usize;
        rules.push(quote!(#p::Rule::MaxLength(#m)));
    }
    if let Some(list) = a.is_in.get() {
        let lits = list.iter().map(|l| lit_tokens(p, l));
        rules.push(quote!(#p::Rule::IsIn(::std::vec![#(#lits),*])));
    }
    if let Some(re) = a.regex.get() {
        rules.push(quote!(#p::Rule::regex(#re)));
    }
    rules
}

fn attr_def(p: &TokenStream, f: &FieldAst, r: &Resolved) -> TokenStream {
    let field = unraw(&f.ident);
    let name = f.json_name();
    let column = f.column_name();
    let ty = ty_tokens(p, r.ty);
    let sets = attr_settings(p, f, r);
    quote! {{
        let mut __a = #p::AttrDef::new(#field, #name, #column, #ty);
        #(#sets)*
        __a
    }}
}

fn model_bound(p: &TokenStream, path: &syn::Path) -> TokenStream {
    // Spanned at the path, so "not a topsail model" points at it.
    quote_spanned!(path.span()=> <#path as #p::Model>::def)
}

fn assoc_def(p: &TokenStream, f: &FieldAst, assoc: AssocAst) -> TokenStream {
    let field = unraw(&f.ident);
    let name = f.json_name();
    match assoc {
        AssocAst::One(path) => {
            let target = model_bound(p, &path);
            let column = f.column_name();
            quote!(#p::AssocDef { field: #field, name: #name, column: #column, target: #target, kind: #p::AssocKind::One })
        }
        AssocAst::Many(path) => {
            let target = model_bound(p, &path);
            let via = match f.attrs.via.get() {
                Some(v) => {
                    let v = unraw(v);
                    quote!(::core::option::Option::Some(#v))
                }
                None => quote!(::core::option::Option::None),
            };
            quote!(#p::AssocDef { field: #field, name: #name, column: #name, target: #target, kind: #p::AssocKind::Many { via: #via } })
        }
    }
}

/// The derive's input, parsed and checked.
struct Checked {
    c: Container,
    /// The index of the primary key.
    pk: usize,
    /// Per field: what a scalar resolved to (`None` for associations).
    resolved: Vec<Option<Resolved>>,
}

/// Parses and checks `input`, reporting every error at once.
fn check(input: &syn::DeriveInput) -> Result<Checked, syn::Error> {
    let cx = Ctxt::new();
    let Some(c) = crate::ast::parse(&cx, input) else {
        cx.check()?;
        return Err(syn::Error::new_spanned(
            &input.ident,
            "cannot derive `Model`",
        ));
    };
    let pk = check::primary_key(&cx, &c);
    check::unique_names(&cx, &c);
    let mut resolved = Vec::with_capacity(c.fields.len());
    for (i, f) in c.fields.iter().enumerate() {
        let r = f.assoc().is_none().then(|| check::resolve(&cx, f));
        check::combinations(&cx, f, pk == Some(i), r.as_ref());
        if let Some(r) = &r {
            check::rules_fit_type(&cx, f, r);
        }
        resolved.push(r);
    }
    cx.check()?;
    let pk = pk.ok_or_else(|| syn::Error::new_spanned(&c.ident, "no primary key"))?;
    Ok(Checked { c, pk, resolved })
}

impl Checked {
    fn pk_kind(&self, p: &TokenStream) -> TokenStream {
        let ty = self.resolved[self.pk]
            .as_ref()
            .map(|r| r.ty)
            .unwrap_or(Ty::Integer);
        match (ty, self.c.fields[self.pk].attrs.auto_increment.get()) {
            (Ty::String, _) => quote!(#p::PkKind::String),
            (_, Some(false)) => quote!(#p::PkKind::Integer),
            _ => quote!(#p::PkKind::AutoIncrement),
        }
    }

    fn hooks(&self, p: &TokenStream) -> TokenStream {
        let ident = &self.c.ident;
        if !self.c.attrs.lifecycle.is_set() {
            return quote!(<#p::Hooks as ::core::default::Default>::default());
        }
        quote!(#p::Hooks {
            before_create: <#ident as #p::Lifecycle>::before_create,
            after_create: <#ident as #p::Lifecycle>::after_create,
            before_update: <#ident as #p::Lifecycle>::before_update,
            after_update: <#ident as #p::Lifecycle>::after_update,
            before_destroy: <#ident as #p::Lifecycle>::before_destroy,
            after_destroy: <#ident as #p::Lifecycle>::after_destroy,
        })
    }

    fn identity(&self) -> String {
        self.c
            .attrs
            .identity
            .get()
            .cloned()
            .unwrap_or_else(|| self.c.ident.to_string().to_lowercase())
    }

    /// The `ModelDef` expression.
    fn model_def(&self, p: &TokenStream) -> TokenStream {
        let identity = self.identity();
        let table = self
            .c
            .attrs
            .table
            .get()
            .cloned()
            .unwrap_or(identity.clone());
        let pk_name = self.c.fields[self.pk].json_name();
        let pk_kind = self.pk_kind(p);
        let mut attrs = Vec::new();
        let mut assocs = Vec::new();
        for (f, r) in self.c.fields.iter().zip(&self.resolved) {
            match (f.assoc(), r) {
                (Some(assoc), _) => assocs.push(assoc_def(p, f, assoc)),
                (None, Some(r)) => attrs.push(attr_def(p, f, r)),
                (None, None) => {}
            }
        }
        let hooks = self.hooks(p);
        let strict = self.c.attrs.strict.is_set();
        let require_if_match = self.c.attrs.require_if_match.is_set();
        quote!(#p::ModelDef {
            identity: #identity,
            table: #table,
            pk: #pk_name,
            pk_kind: #pk_kind,
            attrs: ::std::vec![#(#attrs),*],
            assocs: ::std::vec![#(#assocs),*],
            hooks: #hooks,
            strict: #strict,
            require_if_match: #require_if_match,
        })
    }

    /// Per field: how it is read from a record and written to one.
    fn conversions(&self, p: &TokenStream) -> (Vec<TokenStream>, Vec<TokenStream>) {
        let identity = self.identity();
        let mut decode = Vec::new();
        let mut encode = Vec::new();
        for f in &self.c.fields {
            let fid = &f.ident;
            let name = f.json_name();
            let fty = &f.ty;
            let collection = matches!(f.assoc(), Some(AssocAst::Many(_)));
            decode.push(quote_spanned!(fty.span()=> #fid: #p::decode_field::<#fty>(#identity, &mut __record, #name, #collection)?,));
            encode.push(quote_spanned!(fty.span()=> __record.insert(::std::string::String::from(#name), #p::encode_field::<#fty>(&self.#fid));));
        }
        (decode, encode)
    }
}

pub(crate) fn expand(input: &syn::DeriveInput) -> Result<TokenStream, syn::Error> {
    let checked = check(input)?;
    let krate = match checked.c.attrs.krate.get() {
        Some(path) => quote!(#path),
        None => quote!(::topsail),
    };
    let p = quote!(#krate::__private);
    let ident = &checked.c.ident;
    let model_def = checked.model_def(&p);
    let (decode, encode) = checked.conversions(&p);
    Ok(quote! {
        #[doc(hidden)]
        const _: () = {
            #[automatically_derived]
            impl #p::Model for #ident {
                fn def() -> &'static #p::ModelDef {
                    static __DEF: #p::LazyLock<#p::ModelDef> = #p::LazyLock::new(|| #model_def);
                    &__DEF
                }

                fn from_record(mut __record: #p::Record) -> ::core::result::Result<Self, #p::DecodeError> {
                    ::core::result::Result::Ok(Self { #(#decode)* })
                }

                fn to_record(&self) -> #p::Record {
                    let mut __record = #p::Record::new();
                    #(#encode)*
                    __record
                }
            }
        };
    })
}
