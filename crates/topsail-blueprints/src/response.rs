/*!
How engine results become HTTP responses (spec 3): 200 JSON for every
success, `Not Found` as text, usage errors as `{code, details, message}`,
`E_UNIQUE` as 400. Only a store failure is a 500, and it is logged.
*/

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use topsail_core::Error;

/// A JSON 200.
pub(crate) fn ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

/// A JSON 200 from bytes already serialised, or the error's response.
pub(crate) fn json_or_error(
    result: Result<Vec<u8>, Error>,
    method: &Method,
    path: &str,
) -> Response {
    match result {
        Ok(body) => (
            // What `axum::Json` sends.
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => error(e, method, path),
    }
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A 400 (or other 4xx) with the Sails usage-error body.
pub(crate) fn usage(
    status: StatusCode,
    method: &Method,
    path: &str,
    code: &str,
    details: &str,
) -> Response {
    tracing::info!(%method, path, code, details, "rejected request");
    let message = format!(
        "The server could not fulfill this request (`{method} {path}`) due to a problem with the parameters that were sent.  See the `details` for more info."
    );
    (
        status,
        axum::Json(json!({"code": code, "details": details, "message": message})),
    )
        .into_response()
}

/// Maps an engine error.
pub(crate) fn error(e: Error, method: &Method, path: &str) -> Response {
    match e {
        Error::NotFound => text(StatusCode::NOT_FOUND, "Not Found"),
        Error::Usage { code, details } => usage(
            StatusCode::BAD_REQUEST,
            method,
            path,
            code.as_str(),
            &details,
        ),
        Error::Unique { model, attrs } => {
            tracing::info!(%method, path, model, ?attrs, "uniqueness violation");
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "code": "E_UNIQUE",
                    "message": "Would violate uniqueness constraint-- a record already exists with conflicting value(s).",
                    "modelIdentity": model,
                    "attrNames": attrs,
                })),
            )
                .into_response()
        }
        other => {
            tracing::error!(%method, path, error = %other, "blueprint action failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    }
}
