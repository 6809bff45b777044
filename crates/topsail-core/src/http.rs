/*!
The HTTP face of [`Error`] (feature `axum`): the statuses and bodies the
blueprints answer with, so an app's own handler can return
`Result<_, topsail::Error>` and use `?` on engine calls.

| error | status | body |
|---|---|---|
| [`Error::NotFound`] | 404 | `Not Found` (text) |
| [`Error::Forbidden`] (an access rule refused a write) | 403 | `Forbidden` (text) |
| [`Error::PreconditionFailed`] (`If-Match` names an older version) | 412 | the record as it is now (JSON), with its `ETag` |
| [`Error::PreconditionRequired`] (the model requires `If-Match`) | 428 | `{code: "E_PRECONDITION_REQUIRED", details, message}` |
| [`Error::Usage`] | 400 | `{code, details, message}` |
| [`Error::Unique`] | 400 | `{code: "E_UNIQUE", message, modelIdentity, attrNames}` |
| [`Error::Store`] with [`StoreError::Unavailable`] (every connection busy, SQLite's lock still taken) or [`StoreError::ConnectionLost`] (the database went away) | 503 | `Service Unavailable` (text), `Retry-After: 1` |
| [`Error::Store`] with [`StoreError::Timeout`] (past the statement timeout) | 504 | `Gateway Timeout` (text) |
| any other [`Error::Store`], [`Error::Decode`] | 500 | `Internal Server Error` (text), logged |

A usage body's `message` names the request (`` `GET /pet` ``), as Sails'
does. A response does not know its request, so [`UsageRejection`] renders a
message without it and keeps itself in the response extensions;
[`name_the_request`], run by a middleware that saw the request, writes the
message again with the request line. The blueprint router and
`Topsail::serve` run it for every route.
*/

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::json;

use crate::access::Principal;
use crate::error::{Error, StoreError, UsageCode};
use crate::pubsub::Actor;

/// A 4xx answered with Sails' usage-error body `{code, details, message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRejection {
    status: StatusCode,
    code: &'static str,
    details: String,
}

impl UsageRejection {
    /// A rejection answered with `status` and the stable `code`
    /// (`E_INVALID_CRITERIA`, `E_PAYLOAD_TOO_LARGE`, ...).
    pub fn new(status: StatusCode, code: &'static str, details: impl Into<String>) -> Self {
        UsageRejection {
            status,
            code,
            details: details.into(),
        }
    }

    /// A 400 with a Waterline usage code.
    pub fn bad_request(code: UsageCode, details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code.as_str(), details)
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What was wrong, in words.
    pub fn details(&self) -> &str {
        &self.details
    }

    /// The response, its message naming `request` (`(method, path)`) when
    /// it is known.
    fn render(&self, request: Option<(&Method, &str)>) -> Response {
        let message = match request {
            Some((method, path)) => format!(
                "The server could not fulfill this request (`{method} {path}`) due to a problem with the parameters that were sent.  See the `details` for more info."
            ),
            None => "The server could not fulfill this request due to a problem with the parameters that were sent.  See the `details` for more info.".to_owned(),
        };
        let body = json!({"code": self.code, "details": self.details, "message": message});
        json_response(self.status, body.to_string())
    }
}

impl IntoResponse for UsageRejection {
    fn into_response(self) -> Response {
        tracing::info!(
            status = self.status.as_u16(),
            code = self.code,
            details = self.details,
            "rejected request"
        );
        let mut res = self.render(None);
        res.extensions_mut().insert(self);
        res
    }
}

/// Writes the message of a usage-error response again, naming the request
/// it answers. Other responses pass unchanged. Run it from a middleware
/// that saw the request, with the method and path the client sent.
pub fn name_the_request(mut res: Response, method: &Method, path: &str) -> Response {
    if !res.status().is_client_error() {
        return res;
    }
    match res.extensions().get::<UsageRejection>() {
        Some(rejection) => {
            let mut named = rejection.render(Some((method, path)));
            // What inner layers put there (which action answered) stays.
            std::mem::swap(named.extensions_mut(), res.extensions_mut());
            named
        }
        None => res,
    }
}

/// The body of an `E_UNIQUE` answer.
fn unique_response(model: &str, attrs: &[String]) -> Response {
    tracing::info!(model, ?attrs, "uniqueness violation");
    let body = json!({
        "code": "E_UNIQUE",
        "message": "Would violate uniqueness constraint-- a record already exists with conflicting value(s).",
        "modelIdentity": model,
        "attrNames": attrs,
    });
    json_response(StatusCode::BAD_REQUEST, body.to_string())
}

/// A plain-text response, as Sails' `res.notFound()` and `res.serverError()`
/// send.
pub fn text_response(status: StatusCode, body: &'static str) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A JSON response from text already serialized (what `axum::Json` sends).
pub fn json_response(status: StatusCode, body: impl Into<axum_core::body::Body>) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// `record` as a JSON answer with its `ETag` (the tag a findOne of it
/// without parameters answers, when `record` is populated by default).
pub fn tagged_record(status: StatusCode, record: &crate::record::Record) -> Response {
    let body = crate::etag::record_json(record);
    let tag = crate::etag::of_json(&body);
    let mut res = json_response(status, body);
    with_etag(&mut res, &tag);
    res
}

/// Sets the `ETag` header (a tag from [`crate::etag`], always a valid
/// header value).
pub fn with_etag(res: &mut Response, tag: &str) {
    if let Ok(v) = HeaderValue::from_str(tag) {
        res.headers_mut().insert(header::ETAG, v);
    }
}

impl Error {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Error::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Error::Usage { .. } | Error::Unique { .. } => StatusCode::BAD_REQUEST,
            Error::Store(StoreError::Unavailable | StoreError::ConnectionLost(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Store(StoreError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Error::Store(_) | Error::Decode(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::NotFound => text_response(StatusCode::NOT_FOUND, "Not Found"),
            Error::Forbidden => text_response(StatusCode::FORBIDDEN, "Forbidden"),
            Error::PreconditionFailed { current } => {
                tracing::info!("If-Match named an older version; answered 412");
                tagged_record(StatusCode::PRECONDITION_FAILED, &current)
            }
            Error::PreconditionRequired => UsageRejection::new(
                StatusCode::PRECONDITION_REQUIRED,
                "E_PRECONDITION_REQUIRED",
                "This model requires `If-Match` with the record's `ETag` (from a findOne) on every write.",
            )
            .into_response(),
            Error::Usage { code, details } => {
                UsageRejection::bad_request(code, details).into_response()
            }
            Error::Unique { model, attrs } => unique_response(model, &attrs),
            Error::Store(e @ (StoreError::Unavailable | StoreError::ConnectionLost(_))) => {
                tracing::warn!(error = %e, "answered 503");
                let mut res = text_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                res
            }
            Error::Store(StoreError::Timeout) => {
                tracing::warn!("a statement ran past the statement timeout; answered 504");
                text_response(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout")
            }
            fault @ (Error::Store(_) | Error::Decode(_)) => {
                tracing::error!(error = %fault, "request failed");
                text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }
}

/// Who is asking: the transport (the [`Actor`] the socket bridge put in the
/// request extensions, or [`Actor::Http`]) with the [`Principal`] the
/// identity layer found (anonymous without one). A client either way: app
/// code that wants to see everything uses `Actor::Server`.
impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or_default();
        let transport = parts
            .extensions
            .get::<Actor>()
            .cloned()
            .unwrap_or_else(Actor::http);
        Ok(transport.with_principal(principal))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or_default();
        Ok(parts
            .extensions
            .get::<Actor>()
            .cloned()
            .map(|a| a.with_principal(principal)))
    }
}

/// The [`Principal`] the app's identity layer found for this request, over
/// HTTP and sockets alike; anonymous when there is none.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(res: Response) -> serde_json::Value {
        let bytes = futures_body(res);
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
    }

    fn futures_body(res: Response) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            use http_body_util::BodyExt;
            res.into_body()
                .collect()
                .await
                .map(|c| c.to_bytes().to_vec())
                .unwrap_or_default()
        })
    }

    #[test]
    fn usage_errors_name_the_request_once_a_middleware_saw_it() {
        let res = Error::criteria("bad `where`").into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let named = name_the_request(res, &Method::GET, "/pet");
        assert_eq!(
            body(named),
            json!({
                "code": "E_INVALID_CRITERIA",
                "details": "bad `where`",
                "message": "The server could not fulfill this request (`GET /pet`) due to a problem with the parameters that were sent.  See the `details` for more info.",
            })
        );
    }

    #[test]
    fn every_variant_has_the_blueprint_status_and_body() {
        let res = Error::NotFound.into_response();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(futures_body(res), b"Not Found");
        let res = Error::Unique {
            model: "user",
            attrs: vec!["email".into()],
        }
        .into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(res)["attrNames"], json!(["email"]));
        let res = Error::Store(crate::StoreError::Database("boom".into())).into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(futures_body(res), b"Internal Server Error");
    }

    #[test]
    fn other_responses_pass_unchanged() {
        let res = text_response(StatusCode::NOT_FOUND, "Not Found");
        let res = name_the_request(res, &Method::GET, "/x");
        assert_eq!(futures_body(res), b"Not Found");
    }
}
