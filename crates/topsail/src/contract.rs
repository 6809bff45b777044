//! The app's contracts (see `topsail_contract`), and the route that
//! serves them.

use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use topsail_contract::{Contracts, OpenApi};

use crate::Topsail;

impl Topsail {
    /// The OpenAPI 3.1 document of the blueprints with their defaults
    /// (`Contracts::new(&blueprints)` describes a configured one).
    pub fn openapi(&self) -> OpenApi {
        Contracts::new(&self.blueprints()).openapi()
    }

    /// The AsyncAPI 3.0 document of the socket side.
    pub fn asyncapi(&self) -> serde_json::Value {
        Contracts::new(&self.blueprints()).asyncapi()
    }

    /// The TypeScript module: each model's types and a typed wrapper over
    /// a sails.io.js socket.
    pub fn typescript(&self) -> String {
        Contracts::new(&self.blueprints()).typescript()
    }

    /// A router serving `contracts`: `GET /openapi.json`,
    /// `GET /asyncapi.json` and `GET /topsail.ts`, each rendered once.
    pub fn contracts_router<S: Clone + Send + Sync + 'static>(
        &self,
        contracts: &Contracts,
    ) -> axum::Router<S> {
        let openapi = json_text(&contracts.openapi());
        let asyncapi = json_text(&contracts.asyncapi());
        let ts = contracts.typescript();
        axum::Router::new()
            .route("/openapi.json", get_text(openapi, "application/json"))
            .route("/asyncapi.json", get_text(asyncapi, "application/json"))
            .route("/topsail.ts", get_text(ts, "text/plain; charset=utf-8"))
    }
}

fn json_text(v: &impl serde::Serialize) -> String {
    // Infallible: the documents are maps of strings and JSON values.
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn get_text<S: Clone + Send + Sync + 'static>(
    body: String,
    content_type: &'static str,
) -> axum::routing::MethodRouter<S> {
    let body: std::sync::Arc<str> = body.into();
    axum::routing::get(move || {
        let body = body.clone();
        async move {
            let mut res: Response = body.to_string().into_response();
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            res
        }
    })
}
