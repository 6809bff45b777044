use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Method;
use serde_json::json;
use topsail::BlueprintAction;
use topsail_tests::{Db, zoo_with};

async fn admin_only(req: Request, next: Next) -> Response {
    if req.headers().contains_key("x-admin") {
        next.run(req).await
    } else {
        (StatusCode::FORBIDDEN, "Forbidden").into_response()
    }
}

async fn deny(_req: Request, _next: Next) -> Response {
    (StatusCode::FORBIDDEN, "Forbidden").into_response()
}

/// Records which action each request reached, then lets it through.
async fn tag_action(req: Request, next: Next) -> Response {
    let action = req
        .extensions()
        .get::<BlueprintAction>()
        .map(BlueprintAction::identity)
        .unwrap_or_default();
    let mut res = next.run(req).await;
    res.headers_mut()
        .insert("x-action", action.parse().unwrap());
    res
}

#[tokio::test]
async fn policies_guard_actions_by_the_most_specific_pattern() {
    let z = zoo_with(Db::Sqlite, |b| {
        b.policy("*", deny)
            .policy("pet/*", tag_action)
            .policy("pet/destroy", admin_only)
    })
    .await;
    // `*` denies every model without a more specific pattern.
    let r = z.send(Method::GET, "/user", None).await;
    assert_eq!(
        (r.status, r.body),
        (StatusCode::FORBIDDEN, json!("Forbidden"))
    );
    // `pet/*` replaces `*` for pets, over REST and shortcut routes.
    assert_eq!(
        z.send(Method::POST, "/pet", Some(json!({"name": "Rex"})))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        z.send(Method::GET, "/pet/find", None).await.status,
        StatusCode::OK
    );
    // `pet/destroy` replaces `pet/*` for that action, on both its routes.
    assert_eq!(
        z.send(Method::DELETE, "/pet/1", None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        z.send(Method::GET, "/pet/destroy/1", None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        z.get("/pet").await.as_array().unwrap().len(),
        1,
        "the denied destroy changed nothing"
    );
    let req = http::Request::delete("/pet/1")
        .header("x-admin", "1")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = tower::ServiceExt::oneshot(z.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn policies_see_which_action_they_guard() {
    let z = zoo_with(Db::Sqlite, |b| b.policy("*", tag_action)).await;
    for (method, uri, expect) in [
        (Method::GET, "/pet", "pet/find"),
        (Method::GET, "/pet/find", "pet/find"),
        (Method::GET, "/pet/1", "pet/findOne"),
        (Method::PUT, "/pet/1/tags/1", "pet/add"),
        (Method::GET, "/user/1/pets", "user/populate"),
        (Method::DELETE, "/tag/9", "tag/destroy"),
    ] {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let res = tower::ServiceExt::oneshot(z.router.clone(), req)
            .await
            .unwrap();
        assert_eq!(
            res.headers().get("x-action").and_then(|v| v.to_str().ok()),
            Some(expect),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn several_policies_on_one_pattern_run_in_order() {
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = (seen.clone(), seen.clone());
    let z = zoo_with(Db::Sqlite, move |bp| {
        bp.policy("user/find", move |req: Request, next: Next| {
            let a = a.clone();
            async move {
                a.lock().unwrap().push("first");
                next.run(req).await
            }
        })
        .policy("user/find", move |req: Request, next: Next| {
            let b = b.clone();
            async move {
                b.lock().unwrap().push("second");
                next.run(req).await
            }
        })
    })
    .await;
    z.get("/user").await;
    assert_eq!(*seen.lock().unwrap(), ["first", "second"]);
}
