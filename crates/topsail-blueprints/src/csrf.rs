/*!
Opt-in CSRF protection, as Sails' `security.csrf`: a page gets a token from
`GET /csrfToken` (`{"_csrf": "..."}`) and sends it with every `POST`, `PUT`,
`PATCH` and `DELETE`, as the `X-CSRF-Token` header or a `_csrf` parameter
(query or body), over HTTP and over sockets alike. A page of another site
cannot read the token, so it cannot make the visitor's browser change
anything. With it on, the shortcut routes that change data
(`GET /pet/create?...`) are refused: any page can make a browser load a URL.

The token is bound to the session cookie (`sails.sid` by default): an HMAC
of its value under the app's secret, so no server state is kept and every
node of a cluster that shares the secret accepts it. A request that carries
no session cookie has no ambient credential to abuse and is not checked
(an API client with a bearer token, say).
*/

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use topsail_core::http::UsageRejection;

type HmacSha256 = Hmac<sha2::Sha256>;

/// The CSRF settings of an app: its secret and its session cookie.
#[derive(Clone)]
pub struct Csrf {
    key: Arc<[u8]>,
    cookie: String,
}

impl std::fmt::Debug for Csrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Csrf")
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

impl Csrf {
    /// Tokens signed with `secret`; give every node of a cluster the same
    /// one (at least 32 random bytes).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Csrf {
            key: Arc::from(secret.as_ref()),
            cookie: "sails.sid".to_owned(),
        }
    }

    /// Tokens signed with a secret drawn now: for one process (they do not
    /// survive a restart).
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        if let Err(e) = getrandom::fill(&mut secret) {
            // No entropy source is a broken machine; refuse to run half
            // protected.
            panic!("no random bytes for the CSRF secret: {e}");
        }
        Self::new(secret)
    }

    /// The session cookie tokens are bound to (default `sails.sid`).
    pub fn cookie(mut self, name: impl Into<String>) -> Self {
        self.cookie = name.into();
        self
    }

    fn mac(&self, session: &str) -> HmacSha256 {
        // An HMAC takes a key of any length.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(session.as_bytes());
        mac
    }

    /// The token of `session`.
    pub fn token(&self, session: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.mac(session).finalize().into_bytes())
    }

    fn valid(&self, session: &str, given: &str) -> bool {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(given.trim())
            .is_ok_and(|tag| self.mac(session).verify_slice(&tag).is_ok())
    }

    /// The session cookie's value in `headers`.
    fn session<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie)
            .map(|(_, value)| value)
    }
}

/// `GET /csrfToken`: `{"_csrf": token}` for the request's session; a
/// request without a session cookie gets one (as `/__getcookie` does).
pub(crate) async fn token_route(State(csrf): State<Arc<Csrf>>, headers: HeaderMap) -> Response {
    if let Some(session) = csrf.session(&headers) {
        return axum::Json(json!({"_csrf": csrf.token(session)})).into_response();
    }
    let mut session = [0u8; 16];
    if getrandom::fill(&mut session).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response();
    }
    let session = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(session);
    let mut res = axum::Json(json!({"_csrf": csrf.token(&session)})).into_response();
    let cookie = format!("{}={session}; Path=/; HttpOnly; SameSite=Lax", csrf.cookie);
    if let Ok(v) = cookie.parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// Middleware: a `POST`, `PUT`, `PATCH` or `DELETE` that carries the session
/// cookie must carry its token (header, query or body `_csrf`, which is
/// taken out of the body before the handler reads it); otherwise 403.
pub(crate) async fn guard(
    State((csrf, body_limit)): State<(Arc<Csrf>, usize)>,
    req: Request,
    next: Next,
) -> Response {
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return next.run(req).await;
    }
    let Some(session) = csrf.session(req.headers()).map(str::to_owned) else {
        return next.run(req).await;
    };
    let from_header = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let from_query = req
        .uri()
        .query()
        .map(crate::params::parse_qs)
        .and_then(|q| q.get("_csrf").and_then(Value::as_str).map(str::to_owned));
    let (req, from_body) = match (&from_header, &from_query) {
        (None, None) => take_from_body(req, body_limit).await,
        _ => (req, None),
    };
    match from_header.or(from_query).or(from_body) {
        Some(token) if csrf.valid(&session, &token) => next.run(req).await,
        given => {
            tracing::warn!(
                method = %req.method(),
                path = req.uri().path(),
                token = given.is_some(),
                "refused: no valid CSRF token"
            );
            forbidden(if given.is_some() {
                "The CSRF token is not valid for this session"
            } else {
                "A CSRF token is required (`X-CSRF-Token` header or `_csrf` parameter; get one from `GET /csrfToken`)"
            })
        }
    }
}

/// The `_csrf` of a JSON or urlencoded body, and the request with the body
/// without it. A body that cannot be read is left for the handler to refuse.
async fn take_from_body(req: Request, limit: usize) -> (Request, Option<String>) {
    let (parts, body) = req.into_parts();
    let mime = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return (Request::from_parts(parts, Body::empty()), None);
    };
    let rebuilt = |b: Body| Request::from_parts(parts.clone(), b);
    if mime.starts_with("application/json") {
        if let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(&bytes) {
            let token = map
                .remove("_csrf")
                .and_then(|t| t.as_str().map(str::to_owned));
            let body = Body::from(Value::Object(map).to_string());
            return (rebuilt(body), token);
        }
    } else if mime.starts_with("application/x-www-form-urlencoded") {
        let form = std::str::from_utf8(&bytes).map(crate::params::parse_qs);
        let token = form
            .ok()
            .and_then(|f| f.get("_csrf").and_then(Value::as_str).map(str::to_owned));
        return (rebuilt(Body::from(bytes)), token);
    }
    (rebuilt(Body::from(bytes)), None)
}

fn forbidden(details: &str) -> Response {
    UsageRejection::new(StatusCode::FORBIDDEN, "E_CSRF", details.to_owned()).into_response()
}

/// The answer of a shortcut route that would change data while CSRF
/// protection is on.
pub(crate) fn shortcut_refused() -> Response {
    forbidden(
        "Shortcut routes that change data are off while CSRF protection is on: use the REST route with a CSRF token",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_valid_for_its_session_only() {
        let csrf = Csrf::new(b"0123456789abcdef0123456789abcdef");
        let t = csrf.token("session-a");
        assert!(csrf.valid("session-a", &t));
        assert!(!csrf.valid("session-b", &t));
        assert!(!csrf.valid("session-a", "not base64 !"));
        assert!(!csrf.valid("session-a", ""));
        let other = Csrf::new(b"another secret, another server...");
        assert!(
            !other.valid("session-a", &t),
            "tokens are bound to the secret"
        );
    }

    #[test]
    fn the_session_is_read_from_any_cookie_header() {
        let csrf = Csrf::new(b"k").cookie("sid");
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; sidx=2".parse().unwrap());
        h.append(header::COOKIE, "b=3; sid=xyz".parse().unwrap());
        assert_eq!(csrf.session(&h), Some("xyz"));
    }
}
