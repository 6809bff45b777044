/*!
The contracts of a topsail app, generated at run time from its registered
models and its blueprint routes, so they never drift from what is served:

- [`openapi`]: the OpenAPI 3.1 document of every blueprint route (utoipa's
  document model);
- [`asyncapi`]: the AsyncAPI 3.0 document of the socket side: the virtual
  requests and each model's messages, with their exact payloads;
- [`typescript`]: a TypeScript module with each model's `Row`, `Create`
  and `Update` types, its message union, and a thin typed wrapper over a
  sails.io.js socket.

The route list is `Blueprints::route_table`, the one table the router is
built from. Private attributes appear in none of them.
*/

mod asyncapi;
mod openapi;
mod shapes;
mod typescript;

pub use asyncapi::asyncapi;
pub use openapi::openapi;
pub use typescript::typescript;
pub use utoipa::openapi::OpenApi;

use topsail_blueprints::{Blueprints, RouteInfo};

/// The contracts of one configuration of the blueprints, titled.
///
/// ```
/// # fn demo(blueprints: &topsail_blueprints::Blueprints) {
/// let contracts = topsail_contract::Contracts::new(blueprints).titled("Zoo", "1.0.0");
/// let openapi = contracts.openapi();
/// assert_eq!(openapi.info.title, "Zoo");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Contracts {
    routes: Vec<RouteInfo>,
    title: String,
    version: String,
}

impl Contracts {
    /// The contracts of what `blueprints` serve.
    pub fn new(blueprints: &Blueprints) -> Self {
        Contracts {
            routes: blueprints.route_table(),
            title: "topsail app".to_owned(),
            version: "0.0.0".to_owned(),
        }
    }

    /// Names the API (`info.title`, `info.version`).
    pub fn titled(mut self, title: &str, version: &str) -> Self {
        title.clone_into(&mut self.title);
        version.clone_into(&mut self.version);
        self
    }

    /// The routes described.
    pub fn routes(&self) -> &[RouteInfo] {
        &self.routes
    }

    /// The OpenAPI 3.1 document.
    pub fn openapi(&self) -> OpenApi {
        openapi(&self.routes, &self.title, &self.version)
    }

    /// The AsyncAPI 3.0 document.
    pub fn asyncapi(&self) -> serde_json::Value {
        asyncapi(&self.routes, &self.title, &self.version)
    }

    /// The TypeScript module.
    pub fn typescript(&self) -> String {
        typescript(&self.routes)
    }
}
