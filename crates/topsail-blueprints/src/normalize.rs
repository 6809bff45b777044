/*!
Sails matches routes case-insensitively and ignores a trailing slash. axum
routes are exact, so this service rewrites the path before routing: known
static segments (model URL names, aliases, shortcut verbs, prefixes) take
their canonical case, and a trailing slash goes. Record ids are left
exactly as sent.
*/

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::http::Uri;
use axum::response::Response;
use tower::Service;

/// Wraps a router with path normalisation.
#[derive(Clone)]
pub(crate) struct Normalize {
    inner: Router,
    /// Lowercased static segment to its canonical spelling.
    statics: Arc<HashMap<String, String>>,
}

impl Normalize {
    /// `inner`, reached with `statics` (lowercased segment to canonical
    /// spelling) in their canonical case.
    pub(crate) fn new(inner: Router, statics: HashMap<String, String>) -> Self {
        Normalize {
            inner,
            statics: Arc::new(statics),
        }
    }

    /// As a router (rewriting happens before the inner router routes).
    pub(crate) fn into_router(self) -> Router {
        Router::new().fallback_service(self)
    }

    fn rewrite(&self, uri: &Uri) -> Option<Uri> {
        let path = uri.path();
        let mut changed = false;
        let mut out = String::with_capacity(path.len());
        let trimmed = if path.len() > 1 && path.ends_with('/') {
            changed = true;
            path.trim_end_matches('/')
        } else {
            path
        };
        for (i, seg) in trimmed.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            match self.statics.get(&seg.to_ascii_lowercase()) {
                Some(canon) if canon != seg => {
                    changed = true;
                    out.push_str(canon);
                }
                _ => out.push_str(seg),
            }
        }
        if !changed {
            return None;
        }
        if out.is_empty() {
            out.push('/');
        }
        if let Some(q) = uri.query() {
            out.push('?');
            out.push_str(q);
        }
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = out.parse().ok();
        Uri::from_parts(parts).ok()
    }
}

impl Service<Request> for Normalize {
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as Service<Request>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <Router as Service<Request>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if let Some(uri) = self.rewrite(req.uri()) {
            *req.uri_mut() = uri;
        }
        self.inner.call(req)
    }
}
