//! Every key of `#[model(...)]`, named once (serde_derive's `symbol.rs`).
//! Parsing matches these, error messages print them, and the lists of
//! valid keys in "unknown attribute" errors are made from them.

use std::fmt;

/// The name of one `#[model(...)]` key.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Symbol(&'static str);

// On the struct.
pub(crate) const IDENTITY: Symbol = Symbol("identity");
pub(crate) const TABLE: Symbol = Symbol("table");
pub(crate) const CRATE: Symbol = Symbol("crate");
pub(crate) const STRICT: Symbol = Symbol("strict");
pub(crate) const REQUIRE_IF_MATCH: Symbol = Symbol("require_if_match");
pub(crate) const LIFECYCLE: Symbol = Symbol("lifecycle");

// On a field.
pub(crate) const PRIMARY_KEY: Symbol = Symbol("primary_key");
pub(crate) const AUTO_INCREMENT: Symbol = Symbol("auto_increment");
pub(crate) const COLUMN: Symbol = Symbol("column");
pub(crate) const RENAME: Symbol = Symbol("rename");
pub(crate) const TYPE: Symbol = Symbol("type");
pub(crate) const JSON: Symbol = Symbol("json");
pub(crate) const REQUIRED: Symbol = Symbol("required");
pub(crate) const UNIQUE: Symbol = Symbol("unique");
pub(crate) const ALLOW_NULL: Symbol = Symbol("allow_null");
pub(crate) const PRIVATE: Symbol = Symbol("private");
pub(crate) const READ_ONLY: Symbol = Symbol("read_only");
pub(crate) const DEFAULT: Symbol = Symbol("default");
pub(crate) const CREATED_AT: Symbol = Symbol("created_at");
pub(crate) const UPDATED_AT: Symbol = Symbol("updated_at");
pub(crate) const IS_EMAIL: Symbol = Symbol("is_email");
pub(crate) const MIN: Symbol = Symbol("min");
pub(crate) const MAX: Symbol = Symbol("max");
pub(crate) const MIN_LENGTH: Symbol = Symbol("min_length");
pub(crate) const MAX_LENGTH: Symbol = Symbol("max_length");
pub(crate) const IS_IN: Symbol = Symbol("is_in");
pub(crate) const REGEX: Symbol = Symbol("regex");
pub(crate) const MODEL: Symbol = Symbol("model");
pub(crate) const COLLECTION: Symbol = Symbol("collection");
pub(crate) const VIA: Symbol = Symbol("via");

/// The attribute namespace itself: `#[model(...)]`.
pub(crate) const NAMESPACE: Symbol = Symbol("model");

impl PartialEq<Symbol> for syn::Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
