//! `#[derive(Model)]` for [topsail](https://docs.rs/topsail). Use it through
//! the `topsail` crate, which re-exports it; the generated code refers to
//! `::topsail::__private` (override with `#[model(crate = path)]`).
//!
//! Set `TOPSAIL_MACROS_DEBUG=1` while building to print every expansion.

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;
mod symbol;

use proc_macro::TokenStream;

/// Derives `topsail::Model`. See the `topsail` crate for the attributes.
#[proc_macro_derive(Model, attributes(model))]
pub fn derive_model(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    let out = match expand::expand(&input) {
        Ok(ts) => ts,
        Err(e) => e.into_compile_error(),
    };
    if std::env::var_os("TOPSAIL_MACROS_DEBUG").is_some() {
        eprintln!("{out}");
    }
    out.into()
}

#[cfg(test)]
mod tests;
