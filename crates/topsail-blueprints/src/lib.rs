//! The blueprint [`axum::Router`] of [topsail](https://docs.rs/topsail): the
//! Sails blueprint actions (find, findOne, create, update, destroy,
//! populate, add, remove, replace) over Sails' REST and shortcut routes, for
//! every registered model.
//!
//! One table lists the routes (`routes`); each action is a small handler
//! over typed extractors (`handlers`, `extract`). Handlers turn a request
//! into parameters, call the [`Engine`], and answer; errors answer through
//! [`topsail_core::Error`]'s `IntoResponse`. The [`Actor`](topsail_core::Actor)
//! in the request extensions says who is asking; the socket bridge puts a
//! socket actor there, so virtual requests run through these same routes
//! and policies.

mod csrf;
mod extract;
mod handlers;
mod metrics;
mod normalize;
mod params;
mod pluralize;
mod policy;
mod routes;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use topsail_core::http::{name_the_request, text_response};
use topsail_core::model::ModelDef;
use topsail_core::{Engine, Registry};

pub use csrf::Csrf;
pub use params::{Params, parse_qs};
pub use pluralize::pluralize;
pub use policy::Policy;

use extract::Route;
use policy::Policies;
use routes::{Bases, Bound, Family};

/// The blueprint action a request reached, in the request extensions (for
/// policies and logs) and in the response's (for the app's outer layers). `action` is the Sails action name: `pet/destroy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlueprintAction {
    /// The model identity.
    pub model: &'static str,
    /// The action: `find`, `findOne`, `create`, `update`, `destroy`,
    /// `populate`, `add`, `remove` or `replace`.
    pub action: &'static str,
}

impl BlueprintAction {
    /// The Sails action identity, `<model>/<action>`.
    pub fn identity(&self) -> String {
        format!("{}/{}", self.model, self.action)
    }
}

/// One route the blueprints serve (see [`Blueprints::route_table`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouteInfo {
    /// The HTTP method (socket requests name the same).
    pub method: Method,
    /// The path, its parameters in braces (`/pet/{id}`,
    /// `/pet/{parentid}/tags/{childid}`), as OpenAPI writes them.
    pub path: String,
    /// The model.
    pub model: &'static topsail_core::ModelDef,
    /// The association of populate, add, remove and replace.
    pub assoc: Option<&'static topsail_core::model::AssocDef>,
    /// The Sails action name: `find`, `findOne`, `create`, `update`,
    /// `destroy`, `populate`, `add`, `remove` or `replace`.
    pub action: &'static str,
    /// A shortcut route (`GET /pet/create?...`).
    pub shortcut: bool,
    /// A shortcut that changes data while CSRF protection is on: bound,
    /// and always answered 403.
    pub refused_by_csrf: bool,
    /// `DELETE /pet`: bound, as in Sails, and always answered 400.
    pub always_refused: bool,
    /// A policy guards it (it may answer what the policy answers, 403).
    pub policies: bool,
    /// It needs the CSRF token (when the request carries the session
    /// cookie).
    pub csrf: bool,
}

/// Route options (Sails' `config/blueprints.js`).
#[derive(Debug, Clone)]
struct Options {
    prefix: String,
    rest_prefix: String,
    pluralize: bool,
    rest: bool,
    shortcuts: bool,
    body_limit: usize,
    max_limit: u64,
    csrf: Option<Arc<Csrf>>,
}

/// The default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The default cap on the records one read returns (see
/// [`Blueprints::max_limit`]).
pub const DEFAULT_MAX_LIMIT: u64 = 1_000;

/// Builds the blueprint router.
///
/// ```
/// # use topsail_blueprints::Blueprints;
/// # fn demo(engine: topsail_core::Engine, registry: topsail_core::Registry) -> axum::Router {
/// Blueprints::new(engine, registry)
///     .prefix("/api")
///     .shortcuts(false)
///     .router()
/// # }
/// ```
pub struct Blueprints {
    engine: Engine,
    registry: Registry,
    options: Options,
    policies: Policies,
}

impl std::fmt::Debug for Blueprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blueprints")
            .field(
                "models",
                &self
                    .registry
                    .models()
                    .iter()
                    .map(|m| m.identity)
                    .collect::<Vec<_>>(),
            )
            .field("options", &self.options)
            .field("policies", &self.policies)
            .finish()
    }
}

fn normalize_prefix(p: &str, what: &str) -> String {
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        return String::new();
    }
    if p.starts_with('/') {
        p.to_owned()
    } else {
        tracing::warn!("the blueprint {what} `{p}` has no leading slash; using `/{p}`");
        format!("/{p}")
    }
}

impl Blueprints {
    /// Blueprints for every model of `registry`, run by `engine`, with the
    /// Sails core defaults: REST and shortcut routes on, no prefix.
    pub fn new(engine: Engine, registry: Registry) -> Self {
        Blueprints {
            engine,
            registry,
            options: Options {
                prefix: String::new(),
                rest_prefix: String::new(),
                pluralize: false,
                rest: true,
                shortcuts: true,
                body_limit: DEFAULT_BODY_LIMIT,
                max_limit: DEFAULT_MAX_LIMIT,
                csrf: None,
            },
            policies: Policies::default(),
        }
    }

    /// A prefix for every blueprint route (`/api`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.options.prefix = normalize_prefix(prefix, "prefix");
        self
    }

    /// A prefix for the REST routes only, after `prefix` (`/v1`).
    pub fn rest_prefix(mut self, prefix: &str) -> Self {
        self.options.rest_prefix = normalize_prefix(prefix, "restPrefix");
        self
    }

    /// Use plural model names in URLs (`/users`).
    pub fn pluralize(mut self, on: bool) -> Self {
        self.options.pluralize = on;
        self
    }

    /// Bind the RESTful routes (on by default).
    pub fn rest(mut self, on: bool) -> Self {
        self.options.rest = on;
        self
    }

    /// Bind the GET shortcut routes (on by default, as in Sails core; turn
    /// them off in production).
    pub fn shortcuts(mut self, on: bool) -> Self {
        self.options.shortcuts = on;
        self
    }

    /// The largest request body accepted (413 above it).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.options.body_limit = bytes;
        self
    }

    /// The most records one read returns (default 1,000): a `limit` above
    /// it, `limit=-1` (Sails' "no limit"), and an explicitly populated
    /// collection are capped at `max`, on `find`, `findOne`, the populate
    /// action and what `create` answers. It is at least the default page
    /// size, 30 (a smaller `max` counts as 30); `u64::MAX` lifts the cap.
    pub fn max_limit(mut self, max: u64) -> Self {
        self.options.max_limit = max.max(topsail_core::criteria::DEFAULT_LIMIT);
        self
    }

    /// Runs `policy` before the actions matching `pattern`: `"pet/destroy"`
    /// (one action), `"pet/*"` (every action of a model) or `"*"` (all).
    /// As in Sails, an action gets the policies of its most specific
    /// matching pattern, in the order they were added.
    pub fn policy<F, Fut>(mut self, pattern: &str, policy: F) -> Self
    where
        F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let policy: Policy = Arc::new(move |req, next| Box::pin(policy(req, next)));
        self.policies.add(pattern, policy);
        self
    }

    /// Every route these blueprints serve, in the order they are bound:
    /// the one table the router is built from, so a description of the
    /// API made from it (`topsail-contract`) lists exactly what is served.
    pub fn route_table(&self) -> Vec<RouteInfo> {
        let mut out = Vec::new();
        for &model in self.registry.models() {
            let bases = self.bases(model);
            for bound in routes::bind(model, &bases, |f| self.binds(f)) {
                let def = bound.def;
                let action = def.action.name();
                out.push(RouteInfo {
                    method: def.method.clone(),
                    path: bound.path,
                    model,
                    assoc: bound.assoc,
                    action,
                    shortcut: def.family != Family::Rest,
                    refused_by_csrf: self.refused_by_csrf(def),
                    always_refused: def.action == routes::Action::DestroyWithoutId,
                    policies: !self.policies.for_action(model.identity, action).is_empty(),
                    csrf: self.options.csrf.is_some()
                        && def.method != Method::GET
                        && def.action.changes_data(),
                });
            }
        }
        out
    }

    /// The router of every blueprint route. Mount it with
    /// [`Blueprints::mount`] to let the app's own routes win.
    pub fn router(self) -> Router {
        let csrf = self.csrf_layer();
        let (router, statics) = self.routes();
        normalize::Normalize::new(csrf(router).layer(from_fn(name_errors)), statics).into_router()
    }

    /// Sails' `security.csrf`: `GET /csrfToken`, and every `POST`, `PUT`,
    /// `PATCH` and `DELETE` that carries the session cookie must carry its
    /// token, over HTTP and sockets, on the blueprints and on the app's own
    /// routes (with [`Blueprints::mount`]); shortcut routes that change data
    /// answer 403. See [`Csrf`].
    pub fn csrf(mut self, csrf: Csrf) -> Self {
        self.options.csrf = Some(Arc::new(csrf));
        self
    }

    /// What CSRF protection adds to a router: the token route and the
    /// check, or nothing when it is off.
    fn csrf_layer(&self) -> impl FnOnce(Router) -> Router + use<> {
        let csrf = self.options.csrf.clone();
        let limit = self.options.body_limit;
        move |router: Router| match csrf {
            None => router,
            Some(csrf) => router
                .route(
                    "/csrfToken",
                    axum::routing::get(csrf::token_route).with_state(csrf.clone()),
                )
                .layer(axum::middleware::from_fn_with_state(
                    (csrf, limit),
                    csrf::guard,
                )),
        }
    }

    /// Mounts the blueprints under `app`: the app's routes win, and any
    /// request they do not match (path or method) goes to the blueprints.
    ///
    /// The app's routes see the path the blueprints would: segments the
    /// blueprints know (model names, associations, shortcut verbs,
    /// prefixes) in their canonical case, and no trailing slash. So an
    /// app's `GET /user/{id}` wins for `GET /User/1` and `GET /user/1/` too,
    /// as it does for every spelling the blueprint routes accept. (A
    /// `Router` with state: call `.with_state(state)` on it first.)
    pub fn mount(self, app: Router) -> Router {
        let csrf = self.csrf_layer();
        let (blueprints, statics) = self.routes();
        let fallback = blueprints.clone();
        let app = app
            .fallback_service(blueprints)
            .method_not_allowed_fallback(move |req: Request| {
                let blueprints = fallback.clone();
                async move {
                    tower::ServiceExt::oneshot(blueprints, req)
                        .await
                        .into_response()
                }
            });
        normalize::Normalize::new(csrf(app).layer(from_fn(name_errors)), statics).into_router()
    }

    /// Every bound route, and the static segments their paths hold (what
    /// the case-insensitive matcher must know).
    fn routes(self) -> (Router, HashMap<String, String>) {
        let mut router = Router::new();
        let mut statics = HashMap::new();
        for &model in self.registry.models() {
            let bases = self.bases(model);
            for bound in routes::bind(model, &bases, |f| self.binds(f)) {
                for seg in routes::static_segments(&bound.path) {
                    statics.insert(seg.to_ascii_lowercase(), seg.to_owned());
                }
                router = router.route(&bound.path, self.method_router(&bound));
            }
        }
        // Unmatched paths and methods answer as Sails' `res.notFound()` does.
        let not_found = || async { text_response(StatusCode::NOT_FOUND, "Not Found") };
        let router = router
            .fallback(not_found)
            .method_not_allowed_fallback(not_found);
        (router, statics)
    }

    fn binds(&self, family: Family) -> bool {
        match family {
            Family::Rest => self.options.rest,
            Family::Shortcut => self.options.shortcuts,
            Family::ShortcutWithoutRest => self.options.shortcuts && !self.options.rest,
        }
    }

    /// Whether `def` is a GET that changes data while CSRF protection is
    /// on: any page can make a browser load a URL, so such a route is bound
    /// and always refused (403).
    fn refused_by_csrf(&self, def: &routes::RouteDef) -> bool {
        self.options.csrf.is_some() && def.method == Method::GET && def.action.changes_data()
    }

    /// `/<prefix><restPrefix>/pet` and `/<prefix>/pet`.
    fn bases(&self, model: &ModelDef) -> Bases {
        let o = &self.options;
        let name = if o.pluralize {
            pluralize(model.identity)
        } else {
            model.identity.to_owned()
        };
        Bases {
            rest: format!("{}{}/{name}", o.prefix, o.rest_prefix),
            shortcut: format!("{}/{name}", o.prefix),
        }
    }

    /// The handler of one bound route with its layers: outermost the
    /// metrics and span (so a policy's refusal is counted too), then the
    /// [`BlueprintAction`] (for policies), then the policies, then the file
    /// name check, then the parameters read for the handler.
    fn method_router(&self, bound: &Bound) -> MethodRouter {
        let def = bound.def;
        let route = Arc::new(Route {
            engine: self.engine.clone(),
            action: def.action,
            model: bound.model,
            assoc: bound.assoc,
            max_limit: self.options.max_limit,
        });
        let method = MethodFilter::try_from(def.method.clone()).unwrap_or(MethodFilter::GET);
        if self.refused_by_csrf(def) {
            return axum::routing::on(method, || async { csrf::shortcut_refused() });
        }
        let limit = self.options.body_limit;
        let mut mr = handlers::method_router(def.action, method)
            .with_state(route)
            .layer(from_fn(move |req, next| {
                extract::read_params(limit, req, next)
            }));
        if def.method == Method::GET && def.shape.ends_in_param() {
            mr = mr.layer(from_fn(skip_file_names));
        }
        let action = BlueprintAction {
            model: bound.model.identity,
            action: def.action.name(),
        };
        for p in self
            .policies
            .for_action(action.model, action.action)
            .into_iter()
            .rev()
        {
            mr = mr.layer(from_fn(move |req: Request, next: Next| {
                let p = p.clone();
                async move { p(req, next).await }
            }));
        }
        let measured = action.clone();
        let handles = metrics::RouteMetrics::default();
        mr.layer(tower::util::MapRequestLayer::new(
            move |mut req: Request| {
                req.extensions_mut().insert(action.clone());
                req
            },
        ))
        .layer(from_fn(move |req, next| {
            metrics::measure(measured.clone(), handles.clone(), req, next)
        }))
    }
}

/// Middleware: usage errors name the request they answer (Sails' message
/// says `` `GET /pet` ``). `Topsail::serve` runs it for the app's own routes
/// too, so a handler returning `topsail::Error` answers as a blueprint does.
pub async fn name_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // A `Uri` shares its bytes: no copy of the path per request.
    let uri = req.uri().clone();
    let res = next.run(req).await;
    name_the_request(res, &method, uri.path())
}

/// Sails skips GET routes ending in a parameter when the last segment looks
/// like a file name: `GET /user/1.json` is 404, left for static assets.
async fn skip_file_names(req: Request, next: Next) -> Response {
    if req.method() == Method::GET && looks_like_asset(req.uri().path()) {
        return text_response(StatusCode::NOT_FOUND, "Not Found");
    }
    next.run(req).await
}

fn looks_like_asset(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.') && !last.starts_with('.') && !last.ends_with('.'))
}
