//! The blueprint [`axum::Router`] of [topsail](https://docs.rs/topsail): the
//! Sails blueprint actions (find, findOne, create, update, destroy,
//! populate, add, remove, replace) over the REST and shortcut routes of
//! spec 1.3/1.4, for every registered model.
//!
//! Handlers are thin: they turn a request into parameters, call the
//! [`Engine`], and turn the result into a response. The [`Actor`] in the
//! request extensions says who is asking; the socket bridge puts a socket
//! actor there, so virtual requests run through these same routes and
//! policies.

mod normalize;
mod params;
mod pluralize;
mod response;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde_json::{Map, Value};
use topsail_core::criteria::Criteria;
use topsail_core::model::ModelDef;
use topsail_core::{Actor, Engine, Registry, UsageCode};

pub use params::{Params, parse_qs};
pub use pluralize::pluralize;

/// A policy: middleware run before a blueprint action, over HTTP and over
/// sockets alike. Call `next.run(req)` to let the request through, or
/// answer it yourself (for example 403 `Forbidden`).
pub type Policy =
    Arc<dyn Fn(Request, Next) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// The blueprint action a request reached, in the request extensions (for
/// policies and logs). `action` is the Sails action name: `pet/destroy`.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Find,
    FindOne,
    Create,
    Update,
    Destroy,
    DestroyWithoutId,
    Populate,
    Add,
    Remove,
    Replace,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Find => "find",
            Action::FindOne => "findOne",
            Action::Create => "create",
            Action::Update => "update",
            Action::Destroy | Action::DestroyWithoutId => "destroy",
            Action::Populate => "populate",
            Action::Add => "add",
            Action::Remove => "remove",
            Action::Replace => "replace",
        }
    }
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
}

/// The default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

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
    policies: Vec<(String, Policy)>,
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
            .field(
                "policies",
                &self
                    .policies
                    .iter()
                    .map(|(p, _)| p.as_str())
                    .collect::<Vec<_>>(),
            )
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

struct Shared {
    engine: Engine,
    body_limit: usize,
}

struct Route {
    model: &'static ModelDef,
    action: Action,
    alias: Option<&'static str>,
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
            },
            policies: Vec::new(),
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
        self.policies.push((pattern.to_owned(), policy));
        self
    }

    fn policies_for(&self, model: &str, action: &str) -> Vec<Policy> {
        let exact = format!("{model}/{action}");
        let any = format!("{model}/*");
        for pattern in [exact.as_str(), any.as_str(), "*"] {
            let found: Vec<Policy> = self
                .policies
                .iter()
                .filter(|(p, _)| p == pattern)
                .map(|(_, f)| f.clone())
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
        Vec::new()
    }

    /// The router of every blueprint route. Mount it with
    /// [`Blueprints::mount`] to let the app's own routes win.
    pub fn router(self) -> Router {
        let shared = Arc::new(Shared {
            engine: self.engine.clone(),
            body_limit: self.options.body_limit,
        });
        let mut statics: HashMap<String, String> = HashMap::new();
        let mut router = Router::new();
        let o = &self.options;
        for seg in o
            .prefix
            .split('/')
            .chain(o.rest_prefix.split('/'))
            .filter(|s| !s.is_empty())
        {
            statics.insert(seg.to_ascii_lowercase(), seg.to_owned());
        }
        for verb in [
            "find", "create", "update", "destroy", "add", "remove", "replace",
        ] {
            statics.insert(verb.to_owned(), verb.to_owned());
        }
        let add = |router: Router, method: MethodFilter, path: String, route: Route| -> Router {
            let action = BlueprintAction {
                model: route.model.identity,
                action: route.action.name(),
            };
            let policies = self.policies_for(action.model, action.action);
            let route = Arc::new(route);
            let shared = shared.clone();
            let handler = move |req: Request| {
                let route = route.clone();
                let shared = shared.clone();
                async move { dispatch(&shared, &route, req).await }
            };
            let mut mr: MethodRouter = on(method, handler);
            for p in policies.into_iter().rev() {
                mr = mr.layer(axum::middleware::from_fn(
                    move |req: Request, next: Next| {
                        let p = p.clone();
                        async move { p(req, next).await }
                    },
                ));
            }
            // Outermost: tell policies which action this is.
            mr = mr.layer(tower::util::MapRequestLayer::new(
                move |mut req: Request| {
                    req.extensions_mut().insert(action.clone());
                    req
                },
            ));
            router.route(&path, mr)
        };
        for &model in self.registry.models() {
            let name = if o.pluralize {
                pluralize(model.identity)
            } else {
                model.identity.to_owned()
            };
            statics.insert(name.to_ascii_lowercase(), name.clone());
            for a in &model.assocs {
                statics.insert(a.name.to_ascii_lowercase(), a.name.to_owned());
            }
            let s = format!("{}/{}", o.prefix, name);
            let b = format!("{}{}/{}", o.prefix, o.rest_prefix, name);
            let r = |action, alias| Route {
                model,
                action,
                alias,
            };
            use MethodFilter as M;
            // Shortcuts first: `GET /pet/find` must not be findOne(`find`).
            if o.shortcuts {
                router = add(router, M::GET, format!("{s}/find"), r(Action::Find, None));
                router = add(
                    router,
                    M::GET,
                    format!("{s}/find/{{id}}"),
                    r(Action::FindOne, None),
                );
                router = add(
                    router,
                    M::GET,
                    format!("{s}/create"),
                    r(Action::Create, None),
                );
                router = add(
                    router,
                    M::GET,
                    format!("{s}/update/{{id}}"),
                    r(Action::Update, None),
                );
                router = add(
                    router,
                    M::GET,
                    format!("{s}/destroy/{{id}}"),
                    r(Action::Destroy, None),
                );
                for a in model.assocs.iter().filter(|a| a.is_collection()) {
                    let al = Some(a.name);
                    router = add(
                        router,
                        M::GET,
                        format!("{s}/{{id}}/{}/add/{{childid}}", a.name),
                        r(Action::Add, al),
                    );
                    router = add(
                        router,
                        M::GET,
                        format!("{s}/{{id}}/{}/replace", a.name),
                        r(Action::Replace, al),
                    );
                    router = add(
                        router,
                        M::GET,
                        format!("{s}/{{id}}/{}/remove/{{childid}}", a.name),
                        r(Action::Remove, al),
                    );
                }
                if !o.rest {
                    for a in &model.assocs {
                        router = add(
                            router,
                            M::GET,
                            format!("{s}/{{id}}/{}", a.name),
                            r(Action::Populate, Some(a.name)),
                        );
                    }
                }
            }
            if o.rest {
                router = add(router, M::GET, b.clone(), r(Action::Find, None));
                router = add(
                    router,
                    M::GET,
                    format!("{b}/{{id}}"),
                    r(Action::FindOne, None),
                );
                router = add(router, M::POST, b.clone(), r(Action::Create, None));
                router = add(
                    router,
                    M::PATCH,
                    format!("{b}/{{id}}"),
                    r(Action::Update, None),
                );
                router = add(
                    router,
                    M::PUT,
                    format!("{b}/{{id}}"),
                    r(Action::Update, None),
                );
                router = add(
                    router,
                    M::DELETE,
                    b.clone(),
                    r(Action::DestroyWithoutId, None),
                );
                router = add(
                    router,
                    M::DELETE,
                    format!("{b}/{{id}}"),
                    r(Action::Destroy, None),
                );
                for a in &model.assocs {
                    let al = Some(a.name);
                    if a.is_collection() {
                        router = add(
                            router,
                            M::PUT,
                            format!("{b}/{{id}}/{}/{{childid}}", a.name),
                            r(Action::Add, al),
                        );
                        router = add(
                            router,
                            M::PUT,
                            format!("{b}/{{id}}/{}", a.name),
                            r(Action::Replace, al),
                        );
                        router = add(
                            router,
                            M::DELETE,
                            format!("{b}/{{id}}/{}/{{childid}}", a.name),
                            r(Action::Remove, al),
                        );
                    }
                    router = add(
                        router,
                        M::GET,
                        format!("{b}/{{id}}/{}", a.name),
                        r(Action::Populate, al),
                    );
                }
            }
        }
        // Unmatched paths and methods answer as Sails' `res.notFound()` does.
        let not_found = || async { response::text(StatusCode::NOT_FOUND, "Not Found") };
        let router = router
            .fallback(not_found)
            .method_not_allowed_fallback(not_found);
        let service = normalize::Normalize {
            inner: router,
            statics: Arc::new(statics),
        };
        Router::new().fallback_service(service)
    }

    /// Mounts the blueprints under `app`: the app's routes win, and any
    /// request they do not match (path or method) goes to the blueprints.
    pub fn mount<S: Clone + Send + Sync + 'static>(self, app: Router<S>) -> Router<S> {
        let bp = self.router();
        let fallback = bp.clone();
        app.fallback_service(bp)
            .method_not_allowed_fallback(move |req: Request| {
                let bp = fallback.clone();
                async move { tower::ServiceExt::oneshot(bp, req).await.into_response() }
            })
    }
}

/// Why a request's parameters could not be read.
enum BodyError {
    TooLarge,
    Malformed(String),
    Unsupported,
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Value, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| BodyError::TooLarge)?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/x-www-form-urlencoded" {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| BodyError::Malformed("the form body is not UTF-8".into()))?;
        return Ok(Value::Object(parse_qs(text)));
    }
    if mime.is_empty() || mime == "application/json" || mime.ends_with("+json") {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| BodyError::Malformed(format!("the JSON body could not be parsed: {e}")))?;
        return match v {
            Value::Object(_) | Value::Array(_) => Ok(v),
            other => Err(BodyError::Malformed(format!(
                "the JSON body must be an object or an array, not {other}"
            ))),
        };
    }
    Err(BodyError::Unsupported)
}

/// Sails skips GET routes ending in a parameter when the last segment looks
/// like a file name (`/user/1.json` is 404, spec 1.6).
fn looks_like_asset(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.') && !last.starts_with('.') && !last.ends_with('.'))
}

async fn dispatch(shared: &Shared, route: &Route, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let actor = req.extensions().get::<Actor>().cloned().unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let raw = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok();
    let route_param = |name: &str| -> Option<String> {
        raw.as_ref()?
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    if method == Method::GET
        && route_param("childid")
            .or_else(|| route_param("id"))
            .is_some()
        && looks_like_asset(&path)
    {
        let ends_in_param = matches!(
            route.action,
            Action::FindOne | Action::Update | Action::Destroy | Action::Add | Action::Remove
        );
        if ends_in_param {
            return response::text(StatusCode::NOT_FOUND, "Not Found");
        }
    }
    if method == Method::PUT && route.action == Action::Update {
        tracing::debug!(
            path,
            "Using `PUT` to update a record is deprecated; use `PATCH`"
        );
    }
    let body = match read_body(&parts.headers, body, shared.body_limit).await {
        Ok(v) => v,
        Err(BodyError::TooLarge) => {
            return response::usage(
                StatusCode::PAYLOAD_TOO_LARGE,
                &method,
                &path,
                "E_PAYLOAD_TOO_LARGE",
                &format!(
                    "The request body is larger than the limit of {} bytes",
                    shared.body_limit
                ),
            );
        }
        Err(BodyError::Malformed(d)) => {
            return response::usage(
                StatusCode::BAD_REQUEST,
                &method,
                &path,
                UsageCode::InvalidRequest.as_str(),
                &d,
            );
        }
        Err(BodyError::Unsupported) => {
            return response::usage(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &method,
                &path,
                "E_UNSUPPORTED_MEDIA_TYPE",
                "Send the body as application/json or application/x-www-form-urlencoded",
            );
        }
    };
    let mut params = Params {
        query: parts.uri.query().map(parse_qs).unwrap_or_default(),
        body,
        route: Map::new(),
    };
    // Route parameters under the names Sails gives them.
    let id = route_param("id").map(Value::String);
    let child = route_param("childid").map(Value::String);
    match route.action {
        Action::Populate | Action::Add | Action::Remove | Action::Replace => {
            if let Some(v) = &id {
                params.route.insert("parentid".into(), v.clone());
            }
            if let Some(v) = &child {
                params.route.insert("childid".into(), v.clone());
            }
        }
        _ => {
            if let Some(v) = &id {
                params.route.insert("id".into(), v.clone());
            }
        }
    }
    let e = &shared.engine;
    let m = route.model;
    let alias = route.alias.unwrap_or_default();
    let all = params.all();
    let id = id.unwrap_or(Value::Null);
    let child = child.unwrap_or(Value::Null);
    let result = match route.action {
        // Reads are answered with JSON written straight from the rows.
        Action::Find => {
            let json = match Criteria::from_params(&all, &[]) {
                Ok(c) => e.find_json(m, &c, &actor).await,
                Err(err) => Err(err),
            };
            return response::json_or_error(json, &method, &path);
        }
        Action::FindOne => {
            let json = match Criteria::projection_from_params(&all) {
                Ok(c) => e.find_one_json(m, &id, &c, &actor).await,
                Err(err) => Err(err),
            };
            return response::json_or_error(json, &method, &path);
        }
        Action::Create => match Criteria::projection_from_params(&all) {
            Ok(c) => {
                let mut values = all;
                if m.field("populate").is_none() {
                    values.remove("populate");
                }
                e.create(m, &Value::Object(values), &c.populate, &actor)
                    .await
                    .map(Value::Object)
            }
            Err(err) => Err(err),
        },
        Action::Update => {
            let mut values = all;
            values.remove("id");
            e.update(m, &id, &Value::Object(values), &actor)
                .await
                .map(Value::Object)
        }
        Action::Destroy => e.destroy(m, &id, &actor).await.map(Value::Object),
        Action::DestroyWithoutId => Err(topsail_core::Error::criteria(format!(
            "Cannot destroy without a primary key: use `DELETE /{}/:id`",
            m.identity
        ))),
        Action::Populate => match Criteria::from_params(&all, &["parentid"]) {
            Ok(c) => e.populate(m, &id, alias, &c, &actor).await,
            Err(err) => Err(err),
        },
        Action::Add => e
            .add(m, &id, alias, &child, &actor)
            .await
            .map(Value::Object),
        Action::Remove => e
            .remove(m, &id, alias, &child, &actor)
            .await
            .map(Value::Object),
        Action::Replace => {
            let ids = match &params.body {
                Value::Array(_) => params.body.clone(),
                _ => params.query.get(alias).cloned().unwrap_or(Value::Null),
            };
            e.replace(m, &id, alias, &ids, &actor)
                .await
                .map(Value::Object)
        }
    };
    match result {
        Ok(v) => response::ok(v),
        Err(err) => response::error(err, &method, &path),
    }
}
