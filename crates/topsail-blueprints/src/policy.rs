//! Policies: axum middleware keyed like Sails policies (`pet/destroy`,
//! `pet/*`, `*`). An action gets the policies of its most specific matching
//! pattern, in the order they were added.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// A policy: middleware run before a blueprint action, over HTTP and over
/// sockets alike. Call `next.run(req)` to let the request through, or
/// answer it yourself (for example 403 `Forbidden`).
pub type Policy =
    Arc<dyn Fn(Request, Next) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// The policies of an app, by pattern.
#[derive(Clone, Default)]
pub(crate) struct Policies {
    by_pattern: Vec<(String, Policy)>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.by_pattern.iter().map(|(p, _)| p))
            .finish()
    }
}

impl Policies {
    pub(crate) fn add(&mut self, pattern: &str, policy: Policy) {
        self.by_pattern.push((pattern.to_owned(), policy));
    }

    /// The policies guarding `model`'s `action`: those of the most specific
    /// pattern that has any (`model/action`, then `model/*`, then `*`).
    pub(crate) fn for_action(&self, model: &str, action: &str) -> Vec<Policy> {
        let exact = format!("{model}/{action}");
        let any = format!("{model}/*");
        [exact.as_str(), any.as_str(), "*"]
            .into_iter()
            .map(|pattern| self.matching(pattern))
            .find(|found| !found.is_empty())
            .unwrap_or_default()
    }

    fn matching(&self, pattern: &str) -> Vec<Policy> {
        self.by_pattern
            .iter()
            .filter(|(p, _)| p == pattern)
            .map(|(_, f)| f.clone())
            .collect()
    }
}
