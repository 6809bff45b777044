/*!
sails.io.js virtual requests: a socket event named after an HTTP
verb carries `{method, url, data, headers}`; it becomes an `http::Request`
dispatched through the app's own Router (same routes, same policies), and
the response goes back as the JWR ack `{body, headers, statusCode}`.

Anything malformed is answered with Sails' parse-error object (or the
`sails:parseError` event when the client asked for no ack); nothing a client
sends can panic the task or leave a callback unanswered.
*/

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use topsail_core::Actor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::extract::SocketContext;
use crate::sockets::Sockets;

/// The verbs sails.io.js emits as events.
pub(crate) const VERBS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];

/// The most headers a virtual request may carry.
pub(crate) const MAX_HEADERS: usize = 100;
/// The most bytes of header names and values a virtual request may carry
/// (hyper's default for an HTTP request's head is about as much).
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The largest response body forwarded in an ack.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// What the bridge knows about a socket from its handshake.
pub(crate) struct Handshake {
    /// The socket id (also its own room).
    pub(crate) sid: Arc<str>,
    /// The SDK version check: `Err` holds the parse-error details.
    pub(crate) sdk: Result<(), String>,
    /// The socket's cookies: the handshake's, updated by the answers to
    /// it; message headers cannot override them.
    pub(crate) cookies: crate::jar::Jar,
    /// The handshake `origin` header, likewise.
    pub(crate) origin: Option<HeaderValue>,
    /// The whole handshake, for handlers (Sails' `req.socket.handshake`).
    pub(crate) request: Arc<crate::ConnectRequest>,
    /// Who the socket was last identified as (set by the app's identity
    /// layer at each of its requests; read by guarded deliveries).
    pub(crate) principal: topsail_core::PrincipalSlot,
}

/// The value of query parameter `name`, as sent (not percent-decoded).
pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|p| {
        p.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}

/// Checks `__sails_io_sdk_version` (headers first, then the query): it must
/// be `major.minor.patch` at least 0.11.0. Missing counts as 0.9.0.
pub(crate) fn check_sdk(headers: &HeaderMap, query: Option<&str>) -> Result<(), String> {
    const NAME: &str = "__sails_io_sdk_version";
    let raw = headers
        .get(NAME)
        .and_then(|v| v.to_str().ok())
        .or_else(|| query.and_then(|q| query_param(q, NAME)))
        .unwrap_or("0.9.0");
    let core = raw.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<Option<u64>> = core.split('.').map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [Some(major), Some(minor), Some(_patch)] => {
            if (*major, *minor) >= (0, 11) {
                Ok(())
            } else {
                Err(format!(
                    "This socket's SDK version (`{raw}`) is too old: sails.io.js 0.11.0 or newer is required (send `__sails_io_sdk_version`)"
                ))
            }
        }
        _ => Err(format!(
            "This socket's SDK version (`{raw}`) is not a valid version (expected major.minor.patch)"
        )),
    }
}

/// The answer to a virtual request.
pub(crate) enum Reply {
    /// The JWR ack `{body, headers, statusCode}`.
    Jwr(Jwr),
    /// Sails' parse-error object: the ack, or the `sails:parseError` event
    /// when the client asked for no ack.
    ParseError(Value),
}

/// The JWR. The body is the handler's JSON as it was written: embedded,
/// not parsed back into a tree and serialized again.
#[derive(serde::Serialize)]
pub(crate) struct Jwr {
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<JwrBody>,
    headers: Map<String, Value>,
    #[serde(rename = "statusCode")]
    status_code: u16,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum JwrBody {
    Json(Box<serde_json::value::RawValue>),
    Text(String),
}

impl Jwr {
    /// A JWR with a text body.
    pub(crate) fn plain(status: u16, text: &str) -> Self {
        Jwr {
            body: Some(JwrBody::Text(text.to_owned())),
            headers: Map::new(),
            status_code: status,
        }
    }
}

/// Sails' parse-error object (without a stack).
pub(crate) fn parse_error(details: impl Into<String>) -> Value {
    json!({
        "code": "SAILS:HOOK:SOCKETS:PARSE_VIRTUAL_REQ",
        "name": "Error (SAILS:HOOK:SOCKETS:PARSE_VIRTUAL_REQ):",
        "status": 400,
        "message": "Failed to parse incoming socket.io request.",
        "details": details.into(),
    })
}

/// Percent-encodes the characters a URI may not hold, so a client's raw
/// `/user?where={"name":"Bob"}` still parses (its parameters decode back).
fn sanitize_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        let ok = c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
        if ok {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// A parsed virtual request.
struct Virtual {
    method: Method,
    uri: http::Uri,
    body: Option<Value>,
    headers: HeaderMap,
}

fn parse_virtual(verb: &str, hs: &Handshake, payload: Value) -> Result<Virtual, String> {
    let Value::Object(msg) = payload else {
        return Err(format!(
            "The request must be a dictionary like {{url, data, headers}}, got {payload}"
        ));
    };
    let url = match msg.get("url") {
        Some(Value::String(u)) if !u.is_empty() => u,
        Some(Value::String(_) | Value::Null) | None => {
            return Err("No url provided in request".into());
        }
        Some(other) => return Err(format!("The url must be a string, got {other}")),
    };
    let path_and_query = if url.starts_with('/') {
        url.clone()
    } else {
        format!("/{url}")
    };
    let uri: http::Uri = sanitize_url(&path_and_query)
        .parse()
        .map_err(|e| format!("The url `{url}` could not be parsed: {e}"))?;
    // HEAD runs as GET: Sails answers a virtual HEAD with the GET's body.
    let method = match verb {
        "head" => Method::GET,
        other => {
            Method::from_bytes(other.to_ascii_uppercase().as_bytes()).map_err(|e| e.to_string())?
        }
    };
    // `req.body` is `data` when it is an array, else params merged with data.
    let body = match (msg.get("params"), msg.get("data")) {
        (_, Some(Value::Array(a))) => Some(Value::Array(a.clone())),
        (p, d) => {
            let mut merged = Map::new();
            for v in [p, d].into_iter().flatten() {
                match v {
                    Value::Object(o) => merged.extend(o.clone()),
                    Value::Null => {}
                    other => {
                        return Err(format!(
                            "`data` must be a dictionary or an array, got {other}"
                        ));
                    }
                }
            }
            (!merged.is_empty()).then_some(Value::Object(merged))
        }
    };
    let mut headers = HeaderMap::new();
    if let Some(Value::Object(h)) = msg.get("headers") {
        // An `http::HeaderMap` panics past its capacity (about 24,000
        // entries), and no browser sends more than a few dozen.
        if h.len() > MAX_HEADERS {
            return Err(format!(
                "The request has {} headers; at most {MAX_HEADERS} are accepted",
                h.len()
            ));
        }
        let mut bytes = 0usize;
        for (name, value) in h {
            bytes += name.len() + value.as_str().map_or(0, str::len);
            if bytes > MAX_HEADER_BYTES {
                return Err(format!(
                    "The request's headers are longer than {MAX_HEADER_BYTES} bytes"
                ));
            }
            let lower = name.to_ascii_lowercase();
            // The socket's own cookie and origin win, whatever the case.
            if matches!(
                lower.as_str(),
                "cookie" | "origin" | "content-length" | "transfer-encoding" | "host"
            ) {
                continue;
            }
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(lower.as_bytes()),
                HeaderValue::from_str(&text),
            ) {
                headers.insert(n, v);
            }
        }
    }
    if let Some(c) = hs.cookies.header() {
        headers.insert(header::COOKIE, c);
    }
    if let Some(o) = &hs.origin {
        headers.insert(header::ORIGIN, o.clone());
    }
    Ok(Virtual {
        method,
        uri,
        body,
        headers,
    })
}

/// What every request of a socket carries: the transport, the socket's
/// principal slot (for the identity layer) and its context (for handlers).
fn socket_extensions(req: &mut Request<Body>, hs: &Handshake, sockets: &Sockets) {
    req.extensions_mut().insert(Actor::socket(hs.sid.clone()));
    req.extensions_mut().insert(hs.principal.clone());
    req.extensions_mut().insert(SocketContext {
        id: hs.sid.clone(),
        sockets: sockets.clone(),
        handshake: hs.request.clone(),
        principal: hs.principal.clone(),
    });
}

/// Runs the app's identity layer for the socket, as a request of its own
/// would (with its cookies and handshake), without running a route.
pub(crate) async fn identify_again(hs: &Handshake, router: &Router, sockets: &Sockets) {
    let mut req = Request::new(Body::empty());
    *req.uri_mut() = http::Uri::from_static("/__topsail/identify");
    if let Some(c) = hs.cookies.header() {
        req.headers_mut().insert(header::COOKIE, c);
    }
    if let Some(o) = &hs.origin {
        req.headers_mut().insert(header::ORIGIN, o.clone());
    }
    socket_extensions(&mut req, hs, sockets);
    req.extensions_mut()
        .insert(topsail_core::access::IdentifyOnly);
    let _ = router.clone().oneshot(req).await;
}

/// Runs one virtual request and returns the ack payload.
pub(crate) async fn dispatch(
    verb: &str,
    hs: &Handshake,
    payload: Value,
    router: &OnceLock<Router>,
    sockets: &Sockets,
) -> Reply {
    if let Err(details) = &hs.sdk {
        return Reply::ParseError(parse_error(details.clone()));
    }
    let v = match parse_virtual(verb, hs, payload) {
        Ok(v) => v,
        Err(details) => return Reply::ParseError(parse_error(details)),
    };
    let Some(router) = router.get() else {
        return Reply::Jwr(Jwr::plain(503, "Service Unavailable"));
    };
    let started = std::time::Instant::now();
    let path = v.uri.path().to_owned();
    let mut req = Request::builder().method(v.method.clone()).uri(v.uri);
    if let Some(h) = req.headers_mut() {
        *h = v.headers;
        if v.body.is_some() {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    let body = v
        .body
        .map(|b| Body::from(b.to_string()))
        .unwrap_or_else(Body::empty);
    let mut req = match req.body(body) {
        Ok(r) => r,
        Err(e) => {
            return Reply::ParseError(parse_error(format!("The request could not be built: {e}")));
        }
    };
    socket_extensions(&mut req, hs, sockets);
    // The span an HTTP request gets (see `Topsail::serve`), with the
    // socket's id: what the request runs nests under it.
    let span = tracing::info_span!(
        "request",
        transport = "socket",
        method = %v.method,
        path,
        status = tracing::field::Empty,
        socket = &*hs.sid,
    );
    let res = match router.clone().oneshot(req).instrument(span.clone()).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = res.status();
    span.record("status", status.as_u16());
    let (parts, body) = res.into_parts();
    // A cookie set by the answer is the socket's from now on (a sign-in),
    // and who the socket is may have changed with it (not when the answer
    // only extended a session's expiry: that would be one more session
    // read for every request).
    if hs.cookies.update(&parts.headers) {
        identify_again(hs, router, sockets).await;
    }
    let bytes = match http_body_util::Limited::new(body, MAX_RESPONSE)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            tracing::error!(error = %e, path, "could not read a virtual response");
            return Reply::Jwr(Jwr::plain(500, "Internal Server Error"));
        }
    };
    span.in_scope(|| tracing::info!(ms = started.elapsed().as_secs_f64() * 1000.0, "request"));
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.contains("+json"));
    // Headers the handler set; the framework's own and cookies stay out.
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        if matches!(
            name.as_str(),
            "content-type" | "content-length" | "set-cookie"
        ) {
            continue;
        }
        if let Ok(text) = value.to_str() {
            headers.insert(name.as_str().to_owned(), Value::from(text));
        }
    }
    let body = (!bytes.is_empty()).then(|| {
        let text = match String::from_utf8(bytes.into()) {
            Ok(t) => t,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        if is_json {
            // Validated, not built: a handler that labels text as JSON still
            // gets its text through. (Copying the text costs less than a
            // second validating scan would.)
            serde_json::value::RawValue::from_string(text.clone())
                .map(JwrBody::Json)
                .unwrap_or(JwrBody::Text(text))
        } else {
            JwrBody::Text(text)
        }
    });
    Reply::Jwr(Jwr {
        body,
        headers,
        status_code: status.as_u16(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs() -> Handshake {
        Handshake {
            sid: Arc::from("S"),
            sdk: Ok(()),
            cookies: crate::jar::Jar::from_header(Some(&HeaderValue::from_static("sails.sid=abc"))),
            origin: None,
            request: Arc::new(crate::ConnectRequest {
                headers: HeaderMap::new(),
                uri: http::Uri::from_static("/socket.io/?EIO=4"),
            }),
            principal: Default::default(),
        }
    }

    #[test]
    fn sdk_versions() {
        let h = HeaderMap::new();
        assert!(check_sdk(&h, Some("__sails_io_sdk_version=1.2.1&EIO=3")).is_ok());
        assert!(check_sdk(&h, Some("__sails_io_sdk_version=0.11.0")).is_ok());
        assert!(check_sdk(&h, Some("__sails_io_sdk_version=0.10.9")).is_err());
        assert!(check_sdk(&h, None).is_err(), "missing means 0.9.0");
        assert!(
            check_sdk(&h, Some("__sails_io_sdk_version=abc")).is_err(),
            "invalid is a parse error, not a crash"
        );
        let mut h = HeaderMap::new();
        h.insert("__sails_io_sdk_version", HeaderValue::from_static("1.0.0"));
        assert!(
            check_sdk(&h, Some("__sails_io_sdk_version=0.1.0")).is_ok(),
            "headers first"
        );
    }

    #[test]
    fn too_many_headers_are_a_parse_error_not_a_panic() {
        let headers: Map<String, Value> = (0..25_000)
            .map(|i| (format!("x-h{i}"), Value::from("v")))
            .collect();
        let err = parse_virtual("get", &hs(), json!({"url": "/user", "headers": headers}))
            .err()
            .unwrap_or_default();
        assert!(err.contains("at most 100"), "{err}");
        let few: Map<String, Value> = (0..MAX_HEADERS)
            .map(|i| (format!("x-h{i}"), Value::from("v")))
            .collect();
        assert!(parse_virtual("get", &hs(), json!({"url": "/user", "headers": few})).is_ok());
        let long = json!({"x-a": "a".repeat(40_000), "x-b": "b".repeat(40_000)});
        let err = parse_virtual("get", &hs(), json!({"url": "/user", "headers": long}))
            .err()
            .unwrap_or_default();
        assert!(err.contains("longer than 65536 bytes"), "{err}");
    }

    #[test]
    fn malformed_payloads_are_parse_errors() {
        for p in [
            json!(null),
            json!("x"),
            json!({}),
            json!({"url": 5}),
            json!({"url": ""}),
            json!({"url": "/a", "data": 5}),
        ] {
            assert!(parse_virtual("get", &hs(), p.clone()).is_err(), "{p}");
        }
    }

    #[test]
    fn data_becomes_the_body_and_the_handshake_cookie_wins() {
        let v = parse_virtual(
            "get",
            &hs(),
            json!({"url": "/user?where={\"name\":\"Bob\"}", "data": {"a": 1}, "params": {"b": 2}, "headers": {"Cookie": "x=1", "X-Foo": "bar"}}),
        )
        .unwrap();
        assert_eq!(v.method, Method::GET);
        assert_eq!(v.body, Some(json!({"b": 2, "a": 1})));
        assert_eq!(v.headers.get("cookie").unwrap(), "sails.sid=abc");
        assert_eq!(v.headers.get("x-foo").unwrap(), "bar");
        assert_eq!(v.uri.query(), Some("where=%7B%22name%22:%22Bob%22%7D"));
        let v =
            parse_virtual("put", &hs(), json!({"url": "/user/1/pets", "data": [1, 2]})).unwrap();
        assert_eq!(v.body, Some(json!([1, 2])));
        assert_eq!(
            parse_virtual("head", &hs(), json!({"url": "/user"}))
                .unwrap()
                .method,
            Method::GET
        );
    }

    /// The virtual-request parser over any payload a socket can send: it
    /// never panics, and what it accepts is a request the router can take.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "/pet",
                    "pet/1",
                    "/user?name[contains]=a",
                    "",
                    "/",
                    "//x",
                    "/%zz",
                    "http://h/p",
                    "/a b",
                    "cookie",
                    "Origin",
                    "content-length",
                    "x-custom",
                    "\u{0}",
                ])
                .prop_map(str::to_owned),
                any::<String>(),
            ]
        }

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                text().prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::vec((text(), inner), 0..6)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        /// A payload shaped like sails.io.js's, with any values in it.
        fn payload() -> impl Strategy<Value = Value> {
            let field = prop::sample::select(vec!["url", "method", "headers", "data", "params"]);
            prop_oneof![
                json(),
                prop::collection::vec((field, json()), 0..5).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn any_payload_parses_or_is_refused_cleanly(
                verb in prop::sample::select(VERBS.to_vec()),
                payload in payload()
            ) {
                let hs = hs();
                if let Ok(v) = parse_virtual(verb, &hs, payload) {
                    prop_assert!(v.uri.path().starts_with('/'));
                    let cookie = hs.cookies.header();
                    prop_assert_eq!(v.headers.get(header::COOKIE), cookie.as_ref());
                    prop_assert!(v.headers.get(header::ORIGIN).is_none());
                    prop_assert!(v.headers.len() <= MAX_HEADERS + 2);
                    prop_assert!(matches!(v.body, None | Some(Value::Object(_) | Value::Array(_))));
                }
            }
        }
    }
}
