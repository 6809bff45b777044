//! Collects errors (serde_derive's `Ctxt`). Parsing never fails early:
//! every problem goes into the context, and the user sees them all at once.
//! A context must be [`check`](Ctxt::check)ed: one dropped with its errors
//! unread would swallow them, so that panics (a bug in this crate, caught
//! by its tests).

use std::cell::RefCell;

use proc_macro2::Span;
use quote::ToTokens;

/// The errors found so far.
pub(crate) struct Ctxt {
    /// `None` once checked.
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Ctxt {
    pub(crate) fn new() -> Self {
        Ctxt {
            errors: RefCell::new(Some(Vec::new())),
        }
    }

    fn push(&self, e: syn::Error) {
        if let Some(errors) = self.errors.borrow_mut().as_mut() {
            errors.push(e);
        }
    }

    /// An error spanning `tokens`.
    pub(crate) fn error(&self, tokens: impl ToTokens, msg: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, msg));
    }

    /// An error at `span`.
    pub(crate) fn error_at(&self, span: Span, msg: impl std::fmt::Display) {
        self.push(syn::Error::new(span, msg));
    }

    /// An error syn reported.
    pub(crate) fn syn(&self, e: syn::Error) {
        self.push(e);
    }

    /// All errors combined, if any.
    pub(crate) fn check(self) -> Result<(), syn::Error> {
        let errors = self.errors.borrow_mut().take().unwrap_or_default();
        let mut errors = errors.into_iter();
        let Some(mut first) = errors.next() else {
            return Ok(());
        };
        for e in errors {
            first.combine(e);
        }
        Err(first)
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !std::thread::panicking() && self.errors.borrow().is_some() {
            // A guard, as serde_derive's: a path through the derive forgot
            // to report what it collected.
            panic!("topsail-macros: an error context was dropped without `check()`");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_combines_every_error() {
        let cx = Ctxt::new();
        cx.error_at(Span::call_site(), "one");
        cx.error_at(Span::call_site(), "two");
        let err = cx.check().expect_err("two errors");
        assert_eq!(err.into_iter().count(), 2);
        assert!(Ctxt::new().check().is_ok());
    }

    #[test]
    #[should_panic(expected = "dropped without `check()`")]
    fn an_unchecked_context_panics_on_drop() {
        let cx = Ctxt::new();
        cx.error_at(Span::call_site(), "lost");
        drop(cx);
    }
}
