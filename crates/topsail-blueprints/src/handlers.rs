/*!
One small handler per blueprint action. Each takes the bound [`Route`] and
typed extractors, calls the [`Engine`](topsail_core::Engine), and answers
200 with JSON; every error leaves through [`Error`]'s `IntoResponse`.

The order of a handler's extractors is the order its errors are reported
in, as Sails reports them: the criteria before the record's key.

Writes run through [`Engine::detached_write`](topsail_core::Engine::detached_write):
a client that goes away while its change commits does not cancel it, so a
committed change is always published, and a shutdown waits for it.
*/

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde_json::{Map, Value};
use topsail_core::etag::{self, Precondition};
use topsail_core::http::{json_response, tagged_record, with_etag};
use topsail_core::{Actor, Criteria, Error, Record};

use crate::extract::{ChildKey, Key, RouteState, params};
use crate::params::Params;
use crate::routes::Action;

/// The handler of `action`, for requests with `method`.
pub(crate) fn method_router(action: Action, method: MethodFilter) -> MethodRouter<RouteState> {
    match action {
        Action::Find => on(method, find),
        Action::FindOne => on(method, find_one),
        Action::Create => on(method, create),
        Action::Update => on(method, update),
        Action::Destroy => on(method, destroy),
        Action::DestroyWithoutId => on(method, destroy_without_id),
        Action::Populate => on(method, populate),
        Action::Add | Action::Remove => on(method, add_or_remove),
        Action::Replace => on(method, replace),
    }
}

/// JSON already written by the engine.
fn json_bytes(body: Vec<u8>) -> Response {
    json_response(StatusCode::OK, body)
}

/// A record, as JSON.
fn record(r: Record) -> Response {
    axum::Json(Value::Object(r)).into_response()
}

/// A record that exists after the write, as JSON with its `ETag` (a
/// write answers with the record populated by default: what a findOne
/// without parameters answers, so the same tag).
fn current(r: Record) -> Response {
    tagged_record(StatusCode::OK, &r)
}

async fn find(
    State(route): State<RouteState>,
    FindCriteria(c): FindCriteria,
    actor: Actor,
) -> Result<Response, Error> {
    let json = route.engine.find_json(route.model, &c, &actor).await?;
    Ok(json_bytes(json))
}

/// Answers with the record and its `ETag`; 304 with the tag alone when
/// the client's `If-None-Match` names it (the socket is subscribed either
/// way, as for any read).
async fn find_one(
    State(route): State<RouteState>,
    Projection(c): Projection,
    Key(id): Key,
    IfNoneMatch(cached): IfNoneMatch,
    actor: Actor,
) -> Result<Response, Error> {
    let json = route
        .engine
        .find_one_json(route.model, &id, &c, &actor)
        .await?;
    let tag = etag::of_json(&json);
    let mut res = if cached.is_some_and(|h| etag::none_match_names(&h, &tag)) {
        let mut res = Response::new(axum::body::Body::empty());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        res
    } else {
        json_bytes(json)
    };
    with_etag(&mut res, &tag);
    Ok(res)
}

async fn create(
    State(route): State<RouteState>,
    Values(mut values): Values,
    actor: Actor,
) -> Result<Response, Error> {
    // What the answer populates, read from the same parameters.
    let c = Criteria::projection_from_params(&values)?.cap_limit(route.max_limit);
    // `populate` chooses what the answer populates, unless it is an attribute.
    if route.model.field("populate").is_none() {
        values.remove("populate");
    }
    let created = route
        .engine
        .clone()
        .detached_write(async move {
            let values = Value::Object(values);
            route
                .engine
                .create(route.model, &values, &c.populate, &actor)
                .await
        })
        .await?;
    Ok(record(created))
}

async fn update(
    State(route): State<RouteState>,
    method: Method,
    Key(id): Key,
    Values(mut values): Values,
    IfMatch(pre): IfMatch,
    actor: Actor,
) -> Result<Response, Error> {
    if method == Method::PUT {
        tracing::debug!("Using `PUT` to update a record is deprecated; use `PATCH`");
    }
    values.remove("id");
    let updated = route
        .engine
        .clone()
        .detached_write(async move {
            let values = Value::Object(values);
            let (engine, model) = (&route.engine, route.model);
            engine.update_if(model, &id, &values, &actor, &pre).await
        })
        .await?;
    Ok(current(updated))
}

async fn destroy(
    State(route): State<RouteState>,
    Key(id): Key,
    IfMatch(pre): IfMatch,
    actor: Actor,
) -> Result<Response, Error> {
    let destroyed = route
        .engine
        .clone()
        .detached_write(async move {
            let (engine, model) = (&route.engine, route.model);
            engine.destroy_if(model, &id, &actor, &pre).await
        })
        .await?;
    Ok(record(destroyed))
}

async fn destroy_without_id(State(route): State<RouteState>) -> Error {
    Error::criteria(format!(
        "Cannot destroy without a primary key: use `DELETE /{}/:id`",
        route.model.identity
    ))
}

async fn populate(
    State(route): State<RouteState>,
    PopulateCriteria(c): PopulateCriteria,
    Key(parent): Key,
    actor: Actor,
) -> Result<Response, Error> {
    let assoc = route.assoc()?;
    let populated = route
        .engine
        .populate(route.model, &parent, assoc.name, &c, &actor)
        .await?;
    Ok(axum::Json(populated).into_response())
}

/// `add` and `remove`: the parent and the child named in the path; the
/// route says which.
async fn add_or_remove(
    State(route): State<RouteState>,
    Key(parent): Key,
    ChildKey(child): ChildKey,
    IfMatch(pre): IfMatch,
    actor: Actor,
) -> Result<Response, Error> {
    let alias = route.assoc()?.name;
    let parent = route
        .engine
        .clone()
        .detached_write(async move {
            let (engine, model) = (&route.engine, route.model);
            if route.action == Action::Add {
                engine
                    .add_if(model, &parent, alias, &child, &actor, &pre)
                    .await
            } else {
                engine
                    .remove_if(model, &parent, alias, &child, &actor, &pre)
                    .await
            }
        })
        .await?;
    Ok(current(parent))
}

async fn replace(
    State(route): State<RouteState>,
    Key(parent): Key,
    params: Params,
    IfMatch(pre): IfMatch,
    actor: Actor,
) -> Result<Response, Error> {
    let assoc = route.assoc()?;
    // The ids are the body when it is an array, else `?<alias>=[...]`.
    let ids = match params.body {
        ids @ Value::Array(_) => ids,
        _ => params.query.get(assoc.name).cloned().unwrap_or(Value::Null),
    };
    let alias = assoc.name;
    let parent = route
        .engine
        .clone()
        .detached_write(async move {
            let (engine, model) = (&route.engine, route.model);
            engine
                .replace_if(model, &parent, alias, &ids, &actor, &pre)
                .await
        })
        .await?;
    Ok(current(parent))
}

/// A write's `If-Match` (see [`etag`]).
struct IfMatch(Precondition);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let values = parts.headers.get_all(header::IF_MATCH).iter();
        // A value that is not text names no tag: the write is refused.
        let text = values.map(|v| v.to_str().unwrap_or("\u{0}"));
        Ok(IfMatch(Precondition::from_if_match(text)))
    }
}

/// A read's `If-None-Match`, its values joined.
struct IfNoneMatch(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let values: Vec<&str> = (parts.headers.get_all(header::IF_NONE_MATCH).iter())
            .filter_map(|v| v.to_str().ok())
            .collect();
        Ok(IfNoneMatch((!values.is_empty()).then(|| values.join(","))))
    }
}

/// `req.allParams()`.
fn all_params(parts: &Parts) -> Result<Map<String, Value>, Error> {
    params(parts).map(Params::all)
}

/// `find`'s criteria: `where` (or loose parameters), `limit`, `skip`,
/// `sort`, `select`, `omit`, `populate`.
struct FindCriteria(Criteria);

impl FromRequestParts<RouteState> for FindCriteria {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, route: &RouteState) -> Result<Self, Error> {
        let all = all_params(parts)?;
        let c = Criteria::from_params(&all, &[])?;
        Ok(FindCriteria(c.cap_limit(route.max_limit)))
    }
}

/// The populate action's criteria: as `find`'s, where the parent's
/// `parentid` is a route parameter, not a filter.
struct PopulateCriteria(Criteria);

impl FromRequestParts<RouteState> for PopulateCriteria {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, route: &RouteState) -> Result<Self, Error> {
        let all = all_params(parts)?;
        let c = Criteria::from_params(&all, &["parentid"])?;
        Ok(PopulateCriteria(c.cap_limit(route.max_limit)))
    }
}

/// `select`, `omit` and `populate` (findOne, and what create answers with).
struct Projection(Criteria);

impl FromRequestParts<RouteState> for Projection {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, route: &RouteState) -> Result<Self, Error> {
        let all = all_params(parts)?;
        let c = Criteria::projection_from_params(&all)?;
        Ok(Projection(c.cap_limit(route.max_limit)))
    }
}

/// The values of a create or an update: every parameter.
struct Values(Map<String, Value>);

impl FromRequestParts<RouteState> for Values {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &RouteState) -> Result<Self, Error> {
        all_params(parts).map(Values)
    }
}
