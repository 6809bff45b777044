//! CSRF protection (`Blueprints::csrf`): a write that carries the session
//! cookie must carry its token, over HTTP and over a socket; shortcut
//! routes that change data are off.

use axum::body::Body;
use futures_util::SinkExt;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use topsail::Csrf;
use tower::ServiceExt;

use crate::sockets::{next_text, virtual_request};

const SECRET: &[u8] = b"a secret shared by every node....";

/// Sends a request with optional cookie, CSRF header and JSON body: the
/// status, the error code, and the `Set-Cookie` of the answer.
async fn send(
    router: &axum::Router,
    method: Method,
    uri: &str,
    cookie: Option<&str>,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(t) = token {
        req = req.header("x-csrf-token", t);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let set_cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body, set_cookie)
}

fn app_routes() -> axum::Router {
    axum::Router::new().route("/ping", axum::routing::post(|| async { "pong" }))
}

#[tokio::test]
async fn writes_with_the_session_cookie_need_its_token_over_http() {
    let z = topsail_tests::zoo(topsail_tests::Db::Sqlite).await;
    let router = z
        .app
        .blueprints()
        .csrf(Csrf::new(SECRET))
        .mount(app_routes());
    let ann = json!({"name": "Ann", "email": "ann@example.com"});
    let session = Some("sails.sid=victim");

    // No session cookie: no ambient credential, nothing to check.
    let (status, ..) = send(
        &router,
        Method::POST,
        "/user",
        None,
        None,
        Some(ann.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The session cookie without a token (what a page of another site can
    // make a browser send): refused, on blueprints and app routes alike.
    for (uri, body) in [
        (
            "/user",
            Some(json!({"name": "Eve", "email": "e@example.com"})),
        ),
        ("/ping", None),
    ] {
        let (status, body, _) = send(&router, Method::POST, uri, session, None, body).await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::FORBIDDEN, json!("E_CSRF")),
            "{uri}"
        );
    }
    let (status, ..) = send(&router, Method::DELETE, "/user/1", session, None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The token of the session, from GET /csrfToken: as a header, a query
    // parameter or a body parameter (taken out of the values).
    let (status, got, _) = send(&router, Method::GET, "/csrfToken", session, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let token = got["_csrf"].as_str().unwrap().to_owned();
    let bo = json!({"name": "Bo", "email": "bo@example.com"});
    let (status, ..) = send(
        &router,
        Method::POST,
        "/user",
        session,
        Some(&token),
        Some(bo),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let cy = json!({"name": "Cy", "email": "cy@example.com"});
    let (status, ..) = send(
        &router,
        Method::POST,
        &format!("/user?_csrf={token}"),
        session,
        None,
        Some(cy),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let di = json!({"name": "Di", "email": "di@example.com", "_csrf": token});
    let (status, created, _) = send(&router, Method::POST, "/user", session, None, Some(di)).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert!(created.get("_csrf").is_none());
    let (status, ..) = send(&router, Method::POST, "/ping", session, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    // Another session's token, or a forged one.
    for bad in [Csrf::new(SECRET).token("attacker"), "forged".to_owned()] {
        let (status, ..) = send(&router, Method::POST, "/ping", session, Some(&bad), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{bad}");
    }

    // A client with no session gets one with its token.
    let (status, got, set) = send(&router, Method::GET, "/csrfToken", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = set.unwrap().split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("sails.sid="));
    let (status, ..) = send(
        &router,
        Method::POST,
        "/ping",
        Some(&cookie),
        got["_csrf"].as_str(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Shortcut routes that change data are off, cookie or not; reads stay.
    for uri in [
        "/user/create?name=Eve&email=e@example.com",
        "/user/update/1?name=Eve",
        "/user/destroy/1",
    ] {
        let (status, body, _) = send(&router, Method::GET, uri, None, None, None).await;
        assert_eq!(
            (status, body["code"].clone()),
            (StatusCode::FORBIDDEN, json!("E_CSRF")),
            "{uri}"
        );
    }
    let (status, ..) = send(&router, Method::GET, "/user/find", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (store, cleanup) = (z.app.store().clone(), z.cleanup.clone());
    drop(z);
    store.close().await;
    cleanup.run().await;
}

/// Over a socket: the handshake's cookie is the session, and a virtual
/// request carries the token as a header or in its data.
#[tokio::test]
async fn writes_over_a_socket_need_the_token_of_its_session() {
    let (store, cleanup) = topsail_tests::fresh_store(topsail_tests::Db::Sqlite).await;
    let app = example_zoo::builder()
        .store(store.clone())
        .realtime(topsail::RealtimeConfig::default())
        .build()
        .await
        .unwrap();
    let router = app.serve(app.blueprints().csrf(Csrf::new(SECRET)).mount(app_routes()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let url =
        format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("cookie", "sails.sid=victim".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("0{"));
    ws.send(Message::text("40")).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("40{"));

    let eve = json!({"name": "Eve", "email": "eve@example.com"});
    let jwr = virtual_request(&mut ws, 1, "post", json!({"url": "/user", "data": eve})).await;
    assert_eq!(
        (jwr["statusCode"].clone(), jwr["body"]["code"].clone()),
        (json!(403), json!("E_CSRF"))
    );
    let jwr = virtual_request(&mut ws, 2, "get", json!({"url": "/csrfToken"})).await;
    let token = jwr["body"]["_csrf"].as_str().unwrap().to_owned();
    assert_eq!(
        token,
        Csrf::new(SECRET).token("victim"),
        "bound to the handshake's cookie"
    );
    let jwr = virtual_request(
        &mut ws,
        3,
        "post",
        json!({"url": "/user", "data": eve, "headers": {"x-csrf-token": token}}),
    )
    .await;
    assert_eq!(jwr["statusCode"], 200, "{jwr}");
    let bo = json!({"name": "Bo", "email": "bo@example.com", "_csrf": token});
    let jwr = virtual_request(&mut ws, 4, "post", json!({"url": "/user", "data": bo})).await;
    assert_eq!(jwr["statusCode"], 200, "{jwr}");
    server.abort();
    app.close_sockets().await;
    store.close().await;
    cleanup.run().await;
}
