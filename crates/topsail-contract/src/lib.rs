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
/// The security schemes an app names with [`Contracts::security`].
pub use utoipa::openapi::security;

use topsail_blueprints::{Blueprints, RouteInfo};
use utoipa::openapi::RefOr;

/// The contracts of one configuration of the blueprints, titled.
///
/// ```
/// # fn demo(blueprints: &topsail_blueprints::Blueprints) {
/// let contracts = topsail_contract::Contracts::new(blueprints).titled("Zoo", "1.0.0");
/// let openapi = contracts.openapi();
/// assert_eq!(openapi.info.title, "Zoo");
/// # }
/// ```
#[derive(Clone)]
pub struct Contracts {
    routes: Vec<RouteInfo>,
    title: String,
    version: String,
    security: Vec<(String, security::SecurityScheme)>,
}

impl std::fmt::Debug for Contracts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contracts")
            .field("routes", &self.routes.len())
            .field("title", &self.title)
            .field("version", &self.version)
            .field(
                "security",
                &self.security.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Contracts {
    /// The contracts of what `blueprints` serve.
    pub fn new(blueprints: &Blueprints) -> Self {
        Contracts {
            routes: blueprints.route_table(),
            title: "topsail app".to_owned(),
            version: "0.0.0".to_owned(),
            security: Vec::new(),
        }
    }

    /// Names the API (`info.title`, `info.version`).
    pub fn titled(mut self, title: &str, version: &str) -> Self {
        title.clone_into(&mut self.title);
        version.clone_into(&mut self.version);
        self
    }

    /// Names how the app's identity layer finds a principal (a session
    /// cookie, a bearer token): the OpenAPI document lists the scheme, and
    /// every operation accepts it or none (an anonymous client is a
    /// principal too; the read rules and policies decide what it gets).
    ///
    /// ```
    /// use topsail_contract::security::{ApiKey, ApiKeyValue, SecurityScheme};
    /// # fn demo(blueprints: &topsail_blueprints::Blueprints) {
    /// let contracts = topsail_contract::Contracts::new(blueprints)
    ///     .security("session", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("id"))));
    /// # }
    /// ```
    pub fn security(mut self, name: &str, scheme: security::SecurityScheme) -> Self {
        self.security.push((name.to_owned(), scheme));
        self
    }

    /// The routes described.
    pub fn routes(&self) -> &[RouteInfo] {
        &self.routes
    }

    /// The OpenAPI 3.1 document.
    pub fn openapi(&self) -> OpenApi {
        let mut doc = openapi(&self.routes, &self.title, &self.version);
        if !self.security.is_empty() {
            let components = doc.components.get_or_insert_with(Default::default);
            let mut accepted = Vec::new();
            for (name, scheme) in &self.security {
                components
                    .security_schemes
                    .insert(name.clone(), RefOr::T(scheme.clone()));
                accepted.push(security::SecurityRequirement::new(
                    name.clone(),
                    Vec::<String>::new(),
                ));
            }
            // Anonymous clients are served too.
            accepted.push(security::SecurityRequirement::default());
            doc.security = Some(accepted);
        }
        doc
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
