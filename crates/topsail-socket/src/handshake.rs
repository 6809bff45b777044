/*!
Who may open a socket. A page on any site can open a websocket to any
server, and the browser sends the visitor's cookies with it: without a
check, that page acts as its visitor. So the handshake's `Origin` must be
this server's own (its host is the `Host` the request was sent to) or one
the app allows (Sails' `onlyAllowOrigins`), and the app's
[`BeforeConnect`] hook may refuse it (Sails' `beforeConnect`). A client
that sends no `Origin` (Node, a native app) is no browser page acting for
someone else, and passes the origin check.
*/

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A socket handshake, as the [`BeforeConnect`] hook sees it.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The handshake's headers (cookies, `Origin`, `User-Agent`, ...).
    pub headers: HeaderMap,
    /// Its URI, with the query the client connected with.
    pub uri: Uri,
}

impl ConnectRequest {
    /// The value of query parameter `name` the client connected with, as
    /// sent (not percent-decoded): where a browser puts a token, since it
    /// cannot set a websocket's headers (`io.sails.query = 'token=...'`).
    ///
    /// ```
    /// let hs = topsail_socket::ConnectRequest {
    ///     headers: Default::default(),
    ///     uri: "/socket.io/?EIO=3&token=abc.def&transport=websocket".parse().unwrap(),
    /// };
    /// assert_eq!(hs.query_param("token"), Some("abc.def"));
    /// assert_eq!(hs.query_param("nope"), None);
    /// ```
    pub fn query_param(&self, name: &str) -> Option<&str> {
        crate::bridge::query_param(self.uri.query()?, name)
    }
}

type Hook = dyn Fn(ConnectRequest) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync;

/// An app's check of every new socket (Sails' `beforeConnect`): `false`
/// refuses the handshake with 403. It runs after the origin check, once per
/// socket.
#[derive(Clone)]
pub struct BeforeConnect(Arc<Hook>);

impl BeforeConnect {
    /// A hook from an async function of the handshake.
    ///
    /// ```
    /// use topsail_socket::{BeforeConnect, ConnectRequest};
    /// let only_with_a_session = BeforeConnect::new(|hs: ConnectRequest| async move {
    ///     hs.headers.get("cookie").is_some()
    /// });
    /// # let _ = only_with_a_session;
    /// ```
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(ConnectRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        BeforeConnect(Arc::new(move |hs| Box::pin(f(hs))))
    }
}

impl std::fmt::Debug for BeforeConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeConnect(..)")
    }
}

/// The handshake rules of one server.
#[derive(Debug)]
pub(crate) struct Policy {
    /// Allowed origins besides the server's own, lowercased, without a
    /// trailing `/`.
    allowed: Vec<String>,
    /// `*` was among them: any origin.
    any: bool,
    before_connect: Option<BeforeConnect>,
    /// Give a browser's handshake without a resume key one (see
    /// `crate::resume`).
    mint_resume_keys: bool,
}

impl Policy {
    pub(crate) fn new(allowed: &[String], before_connect: Option<BeforeConnect>) -> Self {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        Policy {
            any: allowed.iter().any(|o| o == "*"),
            allowed,
            before_connect,
            mint_resume_keys: false,
        }
    }

    /// The same rules, giving browsers resume keys.
    pub(crate) fn minting_resume_keys(mut self, on: bool) -> Self {
        self.mint_resume_keys = on;
        self
    }

    /// Whether a request with `headers` may open a socket, as far as its
    /// `Origin` says.
    fn origin_allowed(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin
            .to_str()
            .map_err(|_| "an unreadable Origin".to_owned())?
            .trim_end_matches('/')
            .to_ascii_lowercase();
        if self.any || self.allowed.contains(&origin) {
            return Ok(());
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        let authority = origin.split_once("://").map(|(_, a)| a);
        match (authority, host) {
            (Some(a), Some(h)) if a == h => Ok(()),
            _ => Err(format!("the origin `{origin}` is not allowed")),
        }
    }
}

/// Middleware: the handshake rules, for the socket.io endpoint's requests.
pub(crate) async fn guard(State(policy): State<Arc<Policy>>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/socket.io") {
        return next.run(req).await;
    }
    if let Err(why) = policy.origin_allowed(req.headers()) {
        tracing::warn!(reason = %why, "socket handshake refused");
        return refused(&why);
    }
    // Polling clients send their session id with every later request; the
    // hook sees the first one only.
    let first = !req.uri().query().unwrap_or("").contains("sid=");
    if let (true, Some(hook)) = (first, &policy.before_connect) {
        let hs = ConnectRequest {
            headers: req.headers().clone(),
            uri: req.uri().clone(),
        };
        if !(hook.0)(hs).await {
            tracing::info!("socket handshake refused by before_connect");
            return refused("refused by the application");
        }
    }
    let mut req = req;
    let minted = (first && policy.mint_resume_keys)
        .then(|| mint_resume_key(&mut req))
        .flatten();
    let mut res = next.run(req).await;
    if let Some(cookie) = minted {
        res.headers_mut().append(header::SET_COOKIE, cookie);
    }
    res
}

/// A browser (it sends `Origin`) opening a socket without a resume key is
/// given one, in the answer to its handshake and, for this socket, in its
/// request's cookies: its reconnects then carry it. Returns the
/// `Set-Cookie` to answer with. (A Node client keeps no cookies: it passes
/// the one of `GET /__getcookie` itself.)
fn mint_resume_key(req: &mut Request) -> Option<axum::http::HeaderValue> {
    let headers = req.headers_mut();
    if !headers.contains_key(header::ORIGIN) {
        return None;
    }
    let name = crate::resume::RESUME_COOKIE;
    if crate::jar::Jar::from_header(headers.get(header::COOKIE))
        .get(name)
        .is_some()
    {
        return None;
    }
    let cookies = headers
        .get(header::COOKIE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("");
    let key = crate::new_resume_key()?;
    let with_key = if cookies.trim().is_empty() {
        format!("{name}={key}")
    } else {
        format!("{cookies}; {name}={key}")
    };
    headers.insert(header::COOKIE, with_key.parse().ok()?);
    crate::resume_cookie(&key)
}

fn refused(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        format!("Forbidden: this socket connection is not allowed ({why})"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_servers_own_origin_and_the_allowed_ones_pass() {
        let p = Policy::new(&["https://App.example.com/".to_owned()], None);
        assert!(
            p.origin_allowed(&headers(None, "zoo:1337")).is_ok(),
            "no Origin: not a browser page"
        );
        assert!(
            p.origin_allowed(&headers(Some("http://zoo:1337"), "zoo:1337"))
                .is_ok()
        );
        assert!(
            p.origin_allowed(&headers(Some("http://ZOO:1337"), "zoo:1337"))
                .is_ok()
        );
        assert!(
            p.origin_allowed(&headers(Some("https://app.example.com"), "zoo:1337"))
                .is_ok()
        );
        for foreign in [
            "http://evil.example",
            "http://zoo:1338",
            "null",
            "http://zoo:1337.evil.example",
        ] {
            assert!(
                p.origin_allowed(&headers(Some(foreign), "zoo:1337"))
                    .is_err(),
                "{foreign}"
            );
        }
        let any = Policy::new(&["*".to_owned()], None);
        assert!(
            any.origin_allowed(&headers(Some("http://evil.example"), "zoo:1337"))
                .is_ok()
        );
    }
}
