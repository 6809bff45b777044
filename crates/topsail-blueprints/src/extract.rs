/*!
What a blueprint handler takes: the route it was bound as ([`Route`]), the
record keys in its path ([`Key`], [`ChildKey`]) typed for their models, and
the request's parameters ([`Params`], read by [`read_params`] before the
handler runs). Each failure answers with its own status and Sails body.
*/

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;
use topsail_core::http::UsageRejection;
use topsail_core::model::{AssocDef, ModelDef};
use topsail_core::value::coerce_pk;
use topsail_core::{Engine, Error, Pk, UsageCode};

use crate::params::{Params, parse_qs};
use crate::routes::Action;

/// A bound route: the engine, the model and, for association routes, the
/// association. The state of every blueprint handler.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) engine: Engine,
    /// The action the route was bound as.
    pub(crate) action: Action,
    pub(crate) model: &'static ModelDef,
    pub(crate) assoc: Option<&'static AssocDef>,
    /// The most records one read may return ([`Criteria::cap_limit`]).
    ///
    /// [`Criteria::cap_limit`]: topsail_core::Criteria::cap_limit
    pub(crate) max_limit: u64,
}

impl Route {
    /// The association of an association route.
    pub(crate) fn assoc(&self) -> Result<&'static AssocDef, Error> {
        self.assoc.ok_or(Error::NotFound)
    }
}

/// The route state as handlers receive it.
pub(crate) type RouteState = Arc<Route>;

/// A route parameter by name.
async fn route_param(parts: &mut Parts, name: &str) -> Option<String> {
    let raw = RawPathParams::from_request_parts(parts, &()).await.ok()?;
    raw.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Reads a key of `model` from a route parameter.
fn key_of(model: &ModelDef, raw: String, code: UsageCode) -> Result<Pk, Error> {
    coerce_pk(model.pk_kind, &Value::String(raw)).map_err(|e| {
        Error::usage(
            code,
            format!("Invalid primary key for `{}`: {e}", model.identity),
        )
    })
}

/// The key of the record a route names: `{id}`, or `{parentid}` on an
/// association route. A key that is not of the model's key type is
/// `E_INVALID_CRITERIA`.
#[derive(Debug)]
pub(crate) struct Key(pub(crate) Pk);

impl FromRequestParts<RouteState> for Key {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, route: &RouteState) -> Result<Self, Error> {
        let name = if route.assoc.is_some() {
            "parentid"
        } else {
            "id"
        };
        let raw = route_param(parts, name).await.ok_or(Error::NotFound)?;
        key_of(route.model, raw, UsageCode::InvalidCriteria).map(Key)
    }
}

/// The associated record a route names (`{childid}`), typed for the
/// association's target; otherwise `E_INVALID_ASSOCIATED_IDS`.
#[derive(Debug)]
pub(crate) struct ChildKey(pub(crate) Pk);

impl FromRequestParts<RouteState> for ChildKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, route: &RouteState) -> Result<Self, Error> {
        let target = route.assoc()?.target();
        let raw = route_param(parts, "childid").await.ok_or(Error::NotFound)?;
        key_of(target, raw, UsageCode::InvalidAssociatedIds).map(ChildKey)
    }
}

fn params_missing() -> Error {
    Error::Store(topsail_core::StoreError::Database(
        "the request parameters were not read (the blueprint body layer is missing)".into(),
    ))
}

/// The parameters [`read_params`] left for the handler's extractors.
pub(crate) fn params(parts: &Parts) -> Result<&Params, Error> {
    parts.extensions.get::<Params>().ok_or_else(params_missing)
}

/// The parameters, taken whole (for the one extractor of a handler that
/// needs them owned).
impl FromRequestParts<RouteState> for Params {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &RouteState) -> Result<Self, Error> {
        parts
            .extensions
            .remove::<Params>()
            .ok_or_else(params_missing)
    }
}

/// Why a request body could not become parameters.
#[derive(Debug)]
pub(crate) enum BodyRejection {
    /// Larger than the route's limit: 413.
    TooLarge { limit: usize },
    /// Not JSON (or urlencoded) that parses into an object or array: 400.
    Malformed(String),
    /// A content type the blueprints do not read: 415.
    Unsupported,
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        match self {
            BodyRejection::TooLarge { limit } => UsageRejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "E_PAYLOAD_TOO_LARGE",
                format!("The request body is larger than the limit of {limit} bytes"),
            ),
            BodyRejection::Malformed(details) => {
                UsageRejection::bad_request(UsageCode::InvalidRequest, details)
            }
            BodyRejection::Unsupported => UsageRejection::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "E_UNSUPPORTED_MEDIA_TYPE",
                "Send the body as application/json or application/x-www-form-urlencoded, with a Content-Type header",
            ),
        }
        .into_response()
    }
}

/// The most of a too-large body read (and dropped) before the 413 goes out.
const DISCARD_AT_MOST: usize = 16 * 1024 * 1024;
/// The longest the rest of a too-large body is read before the 413 goes out.
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// The body's bytes, or a 413 once they pass `limit` (the rest is then
/// read and dropped, see [`discard`]).
async fn collect_within(mut body: axum::body::Body, limit: usize) -> Result<Bytes, BodyRejection> {
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| BodyRejection::Malformed(format!("the body could not be read: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            discard(body).await;
            return Err(BodyRejection::TooLarge { limit });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Reads what is left of a body that is too large, and drops it, up to
/// [`DISCARD_AT_MOST`] bytes and for at most [`DISCARD_FOR`]: a client
/// still sending (a browser, Node's `fetch`) then reads the 413 instead of
/// seeing the connection reset under it. A larger or slower body is cut off
/// (the connection closes after the answer).
async fn discard(mut body: axum::body::Body) {
    use http_body_util::BodyExt;
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DISCARD_AT_MOST {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_FOR, drain).await;
}

/// Reads the body (at most `limit` bytes) as JSON or a urlencoded form.
async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Value, BodyRejection> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        discard(body).await;
        return Err(BodyRejection::TooLarge { limit });
    }
    let bytes = collect_within(body, limit).await?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/x-www-form-urlencoded" {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| BodyRejection::Malformed("the form body is not UTF-8".into()))?;
        return Ok(Value::Object(parse_qs(text)));
    }
    // A body without a content type is refused, not read as JSON: a page
    // on another site can send one with a plain cross-site `fetch` (no
    // preflight), which must not create records with the visitor's cookies.
    if mime == "application/json" || mime.ends_with("+json") {
        return match serde_json::from_slice(&bytes) {
            Ok(v @ (Value::Object(_) | Value::Array(_))) => Ok(v),
            Ok(other) => Err(BodyRejection::Malformed(format!(
                "the JSON body must be an object or an array, not {other}"
            ))),
            Err(e) => Err(BodyRejection::Malformed(format!(
                "the JSON body could not be parsed: {e}"
            ))),
        };
    }
    Err(BodyRejection::Unsupported)
}

/// Middleware: reads the query string and the body into [`Params`] for the
/// handler, or answers the body's rejection.
pub(crate) async fn read_params(limit: usize, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body, limit).await {
        Ok(v) => v,
        Err(rejection) => return rejection.into_response(),
    };
    let mut params = Params {
        query: parts.uri.query().map(parse_qs).unwrap_or_default(),
        body,
        route: Default::default(),
    };
    if let Ok(raw) = RawPathParams::from_request_parts(&mut parts, &()).await {
        for (name, value) in &raw {
            params
                .route
                .insert(name.to_owned(), Value::String(value.to_owned()));
        }
    }
    parts.extensions.insert(params);
    next.run(Request::from_parts(parts, axum::body::Body::empty()))
        .await
}
