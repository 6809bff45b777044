//! Code generation. The derive emits metadata and thin glue; the logic lives
//! in generic library code behind `::topsail::__private`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{AssocAst, Ctxt, FieldAst, Lit, Ty, unraw};
use crate::check;

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

fn attr_def(p: &TokenStream, f: &FieldAst, r: &check::Resolved) -> TokenStream {
    let field = unraw(&f.ident);
    let name = f.json_name();
    let column = f.column_name();
    let ty = ty_tokens(p, r.ty);
    let mut sets = Vec::new();
    if f.required.is_set() {
        sets.push(quote!(__a.required = true;));
    }
    if f.unique.is_set() {
        sets.push(quote!(__a.unique = true;));
    }
    if f.allow_null.is_set() || r.optional {
        sets.push(quote!(__a.allow_null = true;));
    }
    if let Some(d) = f.default.get() {
        let l = lit_tokens(p, d);
        sets.push(quote!(__a.default = ::core::option::Option::Some(#l);));
    }
    if f.created_at.is_set() {
        sets.push(quote!(__a.auto = ::core::option::Option::Some(#p::AutoTimestamp::CreatedAt);));
    }
    if f.updated_at.is_set() {
        sets.push(quote!(__a.auto = ::core::option::Option::Some(#p::AutoTimestamp::UpdatedAt);));
    }
    if f.is_email.is_set() {
        sets.push(quote!(__a.rules.push(#p::Rule::IsEmail);));
    }
    if let Some(m) = f.min.get() {
        sets.push(quote!(__a.rules.push(#p::Rule::Min(#m));));
    }
    if let Some(m) = f.max.get() {
        sets.push(quote!(__a.rules.push(#p::Rule::Max(#m));));
    }
    if let Some(m) = f.min_length.get() {
        let m = *m as usize;
        sets.push(quote!(__a.rules.push(#p::Rule::MinLength(#m));));
    }
    if let Some(m) = f.max_length.get() {
        let m = *m as usize;
        sets.push(quote!(__a.rules.push(#p::Rule::MaxLength(#m));));
    }
    if let Some(list) = f.is_in.get() {
        let lits = list.iter().map(|l| lit_tokens(p, l));
        sets.push(quote!(__a.rules.push(#p::Rule::IsIn(::std::vec![#(#lits),*]));));
    }
    if let Some(re) = f.regex.get() {
        sets.push(quote!(__a.rules.push(#p::Rule::regex(#re));));
    }
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

pub(crate) fn expand(input: &syn::DeriveInput) -> Result<TokenStream, syn::Error> {
    let cx = Ctxt::new();
    let Some(c) = crate::ast::parse(&cx, input) else {
        return Err(cx
            .check()
            .err()
            .unwrap_or_else(|| syn::Error::new_spanned(&input.ident, "cannot derive `Model`")));
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

    let krate = c
        .krate
        .get()
        .map(|p| quote!(#p))
        .unwrap_or_else(|| quote!(::topsail));
    let p = quote!(#krate::__private);
    let ident = &c.ident;
    let identity = c
        .identity
        .get()
        .cloned()
        .unwrap_or_else(|| ident.to_string().to_lowercase());
    let table = c.table.get().cloned().unwrap_or_else(|| identity.clone());
    let pk_field = pk
        .map(|i| &c.fields[i])
        .ok_or_else(|| syn::Error::new_spanned(ident, "no primary key"))?;
    let pk_name = pk_field.json_name();
    let pk_ty = pk
        .and_then(|i| resolved[i].as_ref())
        .map(|r| r.ty)
        .unwrap_or(Ty::Integer);
    let pk_kind = match (pk_ty, pk_field.auto_increment.get()) {
        (Ty::String, _) => quote!(#p::PkKind::String),
        (_, Some(false)) => quote!(#p::PkKind::Integer),
        _ => quote!(#p::PkKind::AutoIncrement),
    };

    let mut attrs = Vec::new();
    let mut assocs = Vec::new();
    let mut decode = Vec::new();
    let mut encode = Vec::new();
    for (f, r) in c.fields.iter().zip(&resolved) {
        let fid = &f.ident;
        let name = f.json_name();
        let field = unraw(fid);
        let fty = &f.ty;
        let collection = matches!(f.assoc(), Some(AssocAst::Many(_)));
        match (f.assoc(), r) {
            (None, Some(r)) => attrs.push(attr_def(&p, f, r)),
            (Some(AssocAst::One(path)), _) => {
                let target = model_bound(&p, &path);
                let column = f.column_name();
                assocs.push(quote!(#p::AssocDef { field: #field, name: #name, column: #column, target: #target, kind: #p::AssocKind::One }));
            }
            (Some(AssocAst::Many(path)), _) => {
                let target = model_bound(&p, &path);
                let via = match f.via.get() {
                    Some(v) => {
                        let v = unraw(v);
                        quote!(::core::option::Option::Some(#v))
                    }
                    None => quote!(::core::option::Option::None),
                };
                assocs.push(quote!(#p::AssocDef { field: #field, name: #name, column: #name, target: #target, kind: #p::AssocKind::Many { via: #via } }));
            }
            (None, None) => {}
        }
        decode.push(quote_spanned!(fty.span()=> #fid: #p::decode_field::<#fty>(#identity, &mut __record, #name, #collection)?,));
        encode.push(quote_spanned!(fty.span()=> __record.insert(::std::string::String::from(#name), #p::encode_field::<#fty>(&self.#fid));));
    }
    let hooks = if c.lifecycle.is_set() {
        quote!(#p::Hooks {
            before_create: <#ident as #p::Lifecycle>::before_create,
            after_create: <#ident as #p::Lifecycle>::after_create,
            before_update: <#ident as #p::Lifecycle>::before_update,
            after_update: <#ident as #p::Lifecycle>::after_update,
            before_destroy: <#ident as #p::Lifecycle>::before_destroy,
            after_destroy: <#ident as #p::Lifecycle>::after_destroy,
        })
    } else {
        quote!(<#p::Hooks as ::core::default::Default>::default())
    };
    let strict = c.strict.is_set();

    Ok(quote! {
        #[doc(hidden)]
        const _: () = {
            #[automatically_derived]
            impl #p::Model for #ident {
                fn def() -> &'static #p::ModelDef {
                    static __DEF: #p::LazyLock<#p::ModelDef> = #p::LazyLock::new(|| #p::ModelDef {
                        identity: #identity,
                        table: #table,
                        pk: #pk_name,
                        pk_kind: #pk_kind,
                        attrs: ::std::vec![#(#attrs),*],
                        assocs: ::std::vec![#(#assocs),*],
                        hooks: #hooks,
                        strict: #strict,
                    });
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
