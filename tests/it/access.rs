//! Access rules: who may read and change which records, over HTTP, over
//! real sockets, and in the messages each socket hears (per recipient), on
//! both databases.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use futures_util::SinkExt;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use topsail::{Access, Actor, Criteria, Denied, Identify, Link, Model, Principal, Rules, Topsail};
use topsail_tests::{Db, Res, fresh_store};
use tower::ServiceExt;

use crate::sockets::{Ws, next_text, virtual_request};

#[derive(Model, Debug, Clone)]
struct Account {
    id: i64,
    #[model(required)]
    name: String,
    #[model(private)]
    password_hash: String,
    #[model(collection = Note, via = owner)]
    notes: Vec<Link<Note>>,
}

#[derive(Model, Debug, Clone)]
struct Note {
    id: i64,
    #[model(required)]
    title: String,
    #[model(model = Account)]
    owner: Option<Link<Account>>,
    shared: bool,
}

/// A comment on a note; no rule of its own.
#[derive(Model, Debug, Clone)]
struct Comment {
    id: i64,
    text: String,
    #[model(model = Note)]
    note: Option<Link<Note>>,
}

/// The signed-in account (the principal's type).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Me(i64);

/// Identifies by a cookie `acct=<id>`, unless that account was signed out.
#[derive(Clone, Default)]
struct ByCookie {
    signed_out: Arc<Mutex<HashSet<i64>>>,
}

#[topsail::async_trait]
impl Identify for ByCookie {
    async fn identify(&self, parts: &mut http::request::Parts) -> Principal {
        let id = parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix("acct="))
            .and_then(|v| v.parse::<i64>().ok());
        // A socket may bring its account in its handshake's query instead.
        let id = id.or_else(|| {
            topsail::SocketRequest::from_parts(parts).and_then(|s| {
                s.handshake()
                    .query_param("acct")
                    .and_then(|v| v.parse().ok())
            })
        });
        match id {
            Some(id) if !self.signed_out.lock().unwrap().contains(&id) => Principal::new(Me(id)),
            _ => Principal::anonymous(),
        }
    }
}

fn me(p: &Principal) -> Option<i64> {
    p.get::<Me>().map(|m| m.0)
}

/// Notes: mine or shared; changed by me only; created as mine. Accounts:
/// only my own.
fn rules() -> Rules {
    Rules::new()
        .read::<Note>(|p| match me(p) {
            Some(id) => Access::eq("owner", id).or(Access::eq("shared", true)),
            None => Access::Nothing,
        })
        .write::<Note>(|p| match me(p) {
            Some(id) => Access::eq("owner", id),
            None => Access::Nothing,
        })
        .on_create::<Note>(|p, values| match me(p) {
            Some(id) => {
                values.insert("owner".into(), json!(id));
                Ok(())
            }
            None => Err(Denied),
        })
        .read::<Account>(|p| match me(p) {
            Some(id) => Access::eq("id", id),
            None => Access::Nothing,
        })
}

struct App {
    app: Topsail,
    router: axum::Router,
    identity: ByCookie,
    cleanup: topsail_tests::Cleanup,
    ann: i64,
    bo: i64,
}

async fn app(db: Db) -> App {
    app_with(db, topsail::RealtimeConfig::default()).await
}

async fn app_with(db: Db, realtime: topsail::RealtimeConfig) -> App {
    let (store, cleanup) = fresh_store(db).await;
    let app = Topsail::builder()
        .model::<Account>()
        .model::<Note>()
        .model::<Comment>()
        .store(store)
        .create_schema()
        .rules(rules())
        .realtime(realtime)
        .build()
        .await
        .unwrap();
    let identity = ByCookie::default();
    let routes = app
        .blueprints()
        .router()
        .layer(app.identity(identity.clone()));
    let router = app.serve(routes);
    let accounts = app.model::<Account>();
    let ann = accounts
        .create(json!({"name": "Ann", "passwordHash": "h1"}))
        .await
        .unwrap()
        .id;
    let bo = accounts
        .create(json!({"name": "Bo", "passwordHash": "h2"}))
        .await
        .unwrap()
        .id;
    App {
        app,
        router,
        identity,
        cleanup,
        ann,
        bo,
    }
}

impl App {
    /// An HTTP request as account `who` (`None`: signed out).
    async fn send(&self, who: Option<i64>, method: Method, uri: &str, body: Option<Value>) -> Res {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(id) = who {
            req = req.header("cookie", format!("acct={id}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Res {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// A note created by app code.
    async fn note(&self, owner: i64, title: &str, shared: bool) -> i64 {
        self.app
            .model::<Note>()
            .create(json!({"title": title, "owner": owner, "shared": shared}))
            .await
            .unwrap()
            .id
    }

    async fn close(self) {
        let store = self.app.store().clone();
        self.app.close_sockets().await;
        drop(self.app);
        store.close().await;
        self.cleanup.run().await;
    }
}

fn titles(v: &Value) -> Vec<String> {
    let mut t: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["title"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

async fn reads_answer_only_what_the_rule_allows(db: Db) {
    let t = app(db).await;
    let (ann, bo) = (t.ann, t.bo);
    let a_private = t.note(ann, "a-private", false).await;
    let a_shared = t.note(ann, "a-shared", true).await;
    let b_private = t.note(bo, "b-private", false).await;

    // find: mine and shared; signed out, nothing.
    let r = t.send(Some(bo), Method::GET, "/note", None).await;
    assert_eq!(titles(&r.body), ["a-shared", "b-private"], "{}", r.body);
    let r = t.send(Some(ann), Method::GET, "/note", None).await;
    assert_eq!(titles(&r.body), ["a-private", "a-shared"]);
    let r = t.send(None, Method::GET, "/note", None).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!([])));
    // A client's criteria narrow the rule; they never widen it.
    let r = t
        .send(
            Some(bo),
            Method::GET,
            "/note?where=%7B%22shared%22%3Afalse%7D",
            None,
        )
        .await;
    assert_eq!(titles(&r.body), ["b-private"]);

    // findOne: another's private note does not exist for me.
    let r = t
        .send(Some(bo), Method::GET, &format!("/note/{a_private}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = t
        .send(Some(bo), Method::GET, &format!("/note/{a_shared}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Its owner is an account Bo may not read: populated as null.
    assert_eq!(r.body["owner"], Value::Null, "{}", r.body);
    let r = t
        .send(Some(ann), Method::GET, &format!("/note/{a_shared}"), None)
        .await;
    assert_eq!(r.body["owner"]["name"], "Ann");

    // Populate, both ways: another's account is not found; my account's
    // notes are mine only (an association populated with the rule of its
    // model).
    let r = t
        .send(
            Some(bo),
            Method::GET,
            &format!("/account/{ann}/notes"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = t
        .send(
            Some(bo),
            Method::GET,
            &format!("/note/{a_shared}/owner"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = t
        .send(Some(bo), Method::GET, &format!("/account/{bo}"), None)
        .await;
    assert_eq!(titles(&r.body["notes"]), ["b-private"]);
    let r = t.send(Some(bo), Method::GET, "/account", None).await;
    assert_eq!(
        r.body.as_array().map(Vec::len),
        Some(1),
        "only Bo: {}",
        r.body
    );

    // count, through the engine as each client.
    let as_bo = Actor::http().with_principal(Principal::new(Me(bo)));
    let counted = t
        .app
        .engine()
        .count(Note::def(), &Criteria::new(), &as_bo)
        .await
        .unwrap();
    assert_eq!(counted, 2);
    let counted = t
        .app
        .engine()
        .count(Note::def(), &Criteria::new(), &Actor::Server)
        .await
        .unwrap();
    assert_eq!(counted, 3, "app code is not limited");
    let _ = b_private;
    t.close().await;
}

topsail_tests::each_db!(
    reads_answer_only_what_the_rule_allows,
    reads_answer_only_what_the_rule_allows
);

async fn writes_answer_404_or_403_and_change_nothing(db: Db) {
    let t = app(db).await;
    let (ann, bo) = (t.ann, t.bo);
    let a_private = t.note(ann, "a-private", false).await;
    let a_shared = t.note(ann, "a-shared", true).await;
    let b_note = t.note(bo, "b-note", false).await;
    let patch = Some(json!({"title": "taken"}));

    // Not readable: 404, as if it did not exist. Readable, not mine: 403.
    for (method, uri, body, status) in [
        (
            Method::PATCH,
            format!("/note/{a_private}"),
            patch.clone(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            format!("/note/{a_private}"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PATCH,
            format!("/note/{a_shared}"),
            patch.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::DELETE,
            format!("/note/{a_shared}"),
            None,
            StatusCode::FORBIDDEN,
        ),
        // Giving my note away: what the update makes is not mine.
        (
            Method::PATCH,
            format!("/note/{b_note}"),
            Some(json!({"owner": ann})),
            StatusCode::FORBIDDEN,
        ),
        // Collections: another's account is not found; my account may not
        // take another's note.
        (
            Method::PUT,
            format!("/account/{ann}/notes/{b_note}"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            format!("/account/{bo}/notes/{a_shared}"),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::PUT,
            format!("/account/{bo}/notes/{a_private}"),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            format!("/account/{bo}/notes/{a_shared}"),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::PUT,
            format!("/account/{bo}/notes"),
            Some(json!([a_shared])),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let r = t.send(Some(bo), method.clone(), &uri, body).await;
        assert_eq!(r.status, status, "{method} {uri}: {}", r.body);
    }
    // Signed out: every note is unreadable, and a create is refused.
    let r = t
        .send(
            None,
            Method::PATCH,
            &format!("/note/{a_shared}"),
            patch.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = t
        .send(None, Method::POST, "/note", Some(json!({"title": "x"})))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Nothing changed.
    let notes = t.app.model::<Note>();
    for (id, title, owner) in [
        (a_private, "a-private", ann),
        (a_shared, "a-shared", ann),
        (b_note, "b-note", bo),
    ] {
        let n = notes.find_one(id).await.unwrap().unwrap();
        assert_eq!(n.title, title);
        assert_eq!(n.owner.and_then(|o| o.id()), Some(owner.into()), "{title}");
    }

    // A write's answer populates like a read: a comment on a note Bo may
    // not read does not show him the note.
    let r = t
        .send(
            Some(bo),
            Method::POST,
            "/comment",
            Some(json!({"text": "hi", "note": a_private})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["note"], Value::Null, "{}", r.body);
    let comment = r.body["id"].clone();
    let r = t
        .send(
            Some(bo),
            Method::PATCH,
            &format!("/comment/{comment}"),
            Some(json!({"text": "again"})),
        )
        .await;
    assert_eq!(r.body["note"], Value::Null, "{}", r.body);
    let r = t
        .send(Some(ann), Method::GET, &format!("/comment/{comment}"), None)
        .await;
    assert_eq!(r.body["note"]["title"], "a-private", "its owner sees it");

    // What is allowed works: my own note, and a create is mine whatever
    // owner I send.
    let r = t
        .send(Some(bo), Method::PATCH, &format!("/note/{b_note}"), patch)
        .await;
    assert_eq!(
        (r.status, r.body["title"].clone()),
        (StatusCode::OK, json!("taken"))
    );
    let r = t
        .send(
            Some(bo),
            Method::POST,
            "/note",
            Some(json!({"title": "mine", "owner": ann})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["owner"]["id"], json!(bo), "{}", r.body);
    let r = t
        .send(Some(bo), Method::DELETE, &format!("/note/{b_note}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    t.close().await;
}

topsail_tests::each_db!(
    writes_answer_404_or_403_and_change_nothing,
    writes_answer_404_or_403_and_change_nothing
);

/// A raw socket connected with `cookie`.
async fn socket(addr: std::net::SocketAddr, cookie: Option<String>) -> Ws {
    socket_with(addr, cookie, "").await
}

/// A raw socket connected with `cookie`, its handshake URL ending in
/// `query` (`&name=value...`).
async fn socket_with(addr: std::net::SocketAddr, cookie: Option<String>, query: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "ws://{addr}/socket.io/?EIO=4&transport=websocket&__sails_io_sdk_version=1.2.1{query}"
    );
    let mut req = url.into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("0{"));
    ws.send(Message::text("40")).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("40{"));
    ws
}

/// The `note` and `account` messages a socket hears until a `note` message
/// whose title is `until` (a marker every socket that may read it gets).
async fn heard_until(ws: &mut Ws, until: &str) -> Vec<Value> {
    let mut heard = Vec::new();
    loop {
        let frame = next_text(ws).await;
        let Some(rest) = frame.strip_prefix("42") else {
            continue;
        };
        let msg: Vec<Value> = serde_json::from_str(rest).unwrap();
        let done = msg[1]["data"]["title"] == until;
        heard.push(json!({"event": msg[0], "message": msg[1]}));
        if done {
            return heard;
        }
    }
}

/// Nothing about the record in `heard`: no message names its id or title.
fn says_nothing_of(heard: &[Value], id: i64, title: &str) -> bool {
    let text = serde_json::to_string(heard).unwrap();
    !text.contains(title)
        && !heard
            .iter()
            .any(|h| h["event"] == "note" && h["message"]["id"] == json!(id))
}

async fn each_socket_hears_only_what_it_may_read(db: Db) {
    let t = app(db).await;
    let (ann, bo) = (t.ann, t.bo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = t.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let mut a = socket(addr, Some(format!("acct={ann}"))).await;
    let mut b = socket(addr, Some(format!("acct={bo}"))).await;
    let mut anon = socket(addr, None).await;
    // Each reads the notes (so watches them) and populates their owner
    // (so, with auto-watch, watches accounts: the path a new account's
    // record used to take to every socket).
    let shared = t.note(ann, "shared-1", true).await;
    for (ws, n) in [(&mut a, 1), (&mut b, 1), (&mut anon, 1)] {
        let jwr = virtual_request(ws, n, "get", json!({"url": "/note"})).await;
        assert_eq!(jwr["statusCode"], 200);
    }

    // Ann's private note, a new account, the shared note turned private
    // (and then changed again), a private note destroyed: Bo and the
    // anonymous socket hear none of it. A marker note shared last ends
    // the wait.
    let notes = t.app.model::<Note>();
    let private = t.note(ann, "secret-1", false).await;
    t.app
        .model::<Account>()
        .create(json!({"name": "Cy", "passwordHash": "h3"}))
        .await
        .unwrap();
    notes
        .update(shared, json!({"title": "secret-2", "shared": false}))
        .await
        .unwrap();
    notes
        .update(shared, json!({"title": "secret-3"}))
        .await
        .unwrap();
    notes
        .update(private, json!({"title": "secret-4"}))
        .await
        .unwrap();
    notes.destroy(private).await.unwrap();
    let visible = t.note(ann, "visible", true).await;
    notes
        .update(visible, json!({"title": "visible-2"}))
        .await
        .unwrap();
    t.note(ann, "marker", true).await;

    let heard_b = heard_until(&mut b, "marker").await;

    for secret in ["secret-1", "secret-2", "secret-3", "secret-4", "Cy", "h3"] {
        assert!(
            !serde_json::to_string(&heard_b).unwrap().contains(secret),
            "Bo heard {secret}: {heard_b:#?}"
        );
    }
    assert!(
        says_nothing_of(&heard_b, private, "secret-1"),
        "{heard_b:#?}"
    );
    assert!(
        !heard_b.iter().any(|h| h["event"] == "account"),
        "Bo hears of no account but his own: {heard_b:#?}"
    );
    // What Bo may read reaches him, its owner (an account he may not
    // read) left out: a key at most, never the account.
    let created = heard_b
        .iter()
        .find(|h| h["message"]["verb"] == "created" && h["message"]["data"]["title"] == "visible")
        .unwrap_or_else(|| panic!("Bo hears the shared note: {heard_b:#?}"));
    assert!(
        !created["message"]["data"]["owner"].is_object(),
        "{created}"
    );
    let updated = heard_b
        .iter()
        .find(|h| h["message"]["verb"] == "updated" && h["message"]["id"] == json!(visible))
        .unwrap_or_else(|| panic!("Bo hears its update: {heard_b:#?}"));
    assert_eq!(
        updated["message"]["previous"]["owner"],
        Value::Null,
        "{updated}"
    );

    // Ann hears all of it, her account populated in full (less its
    // private attribute).
    let heard_a = heard_until(&mut a, "marker").await;
    let text = serde_json::to_string(&heard_a).unwrap();
    for title in ["secret-1", "secret-2", "secret-3", "secret-4", "visible-2"] {
        assert!(text.contains(title), "Ann hears {title}: {heard_a:#?}");
    }
    assert!(!text.contains("h1"), "no private attribute: {text}");
    let ann_created = heard_a
        .iter()
        .find(|h| h["message"]["verb"] == "created" && h["message"]["data"]["title"] == "visible")
        .unwrap();
    assert_eq!(ann_created["message"]["data"]["owner"]["name"], "Ann");

    // A destroyed note reaches those who could read it: Bo could read the
    // visible note, so he hears it go; its owner still hidden.
    notes.destroy(visible).await.unwrap();
    t.note(ann, "marker-2", true).await;
    let heard_b = heard_until(&mut b, "marker-2").await;
    let destroyed = heard_b
        .iter()
        .find(|h| h["message"]["verb"] == "destroyed")
        .unwrap_or_else(|| panic!("{heard_b:#?}"));
    assert_eq!(destroyed["message"]["previous"]["owner"], Value::Null);

    // A note shared later reaches Bo from then on: he joins its room.
    let later = t.note(ann, "later", false).await;
    notes
        .update(later, json!({"shared": true, "title": "now-shared"}))
        .await
        .unwrap();
    notes
        .update(later, json!({"title": "still-shared"}))
        .await
        .unwrap();
    t.note(ann, "marker-1b", true).await;
    let heard_b = heard_until(&mut b, "marker-1b").await;
    let text = serde_json::to_string(&heard_b).unwrap();
    assert!(
        text.contains("now-shared") && text.contains("still-shared"),
        "Bo hears a note shared with him, and its next change: {heard_b:#?}"
    );

    // A socket identified by its handshake's query reads as Bo.
    let mut by_query = socket_with(addr, None, &format!("&acct={bo}")).await;
    let seen = virtual_request(&mut by_query, 1, "get", json!({"url": "/note"})).await;
    let as_bo = virtual_request(&mut b, 9, "get", json!({"url": "/note"})).await;
    assert!(!titles(&seen["body"]).is_empty());
    assert_eq!(
        titles(&seen["body"]),
        titles(&as_bo["body"]),
        "the query's account, as with the cookie"
    );

    // The anonymous socket may read no note: it watches nothing, hears
    // nothing. A request after the marker shows it is alive.
    let jwr = virtual_request(&mut anon, 2, "get", json!({"url": "/note"})).await;
    assert_eq!(jwr["body"], json!([]));
    let mut quiet = true;
    while let Ok(frame) =
        tokio::time::timeout(std::time::Duration::from_millis(200), next_text(&mut anon)).await
    {
        quiet &= !frame.starts_with("42");
    }
    assert!(quiet, "the anonymous socket heard a message");

    // Sign-out made elsewhere: Bo's socket is identified again at once and
    // hears nothing more, though it was subscribed.
    t.identity.signed_out.lock().unwrap().insert(bo);
    let again = t.app.reidentify(|p| me(p) == Some(bo)).await;
    assert_eq!(again, 2, "Bo's two sockets (cookie and query)");
    let after = t.note(ann, "after-sign-out", true).await;
    notes
        .update(after, json!({"title": "after-2"}))
        .await
        .unwrap();
    t.note(ann, "marker-3", true).await;
    heard_until(&mut a, "marker-3").await;
    let mut heard = Vec::new();
    while let Ok(frame) =
        tokio::time::timeout(std::time::Duration::from_millis(300), next_text(&mut b)).await
    {
        heard.push(frame);
    }
    assert!(
        !heard.iter().any(|f| f.starts_with("42")),
        "a signed-out socket hears nothing: {heard:?}"
    );
    let jwr = virtual_request(&mut b, 2, "get", json!({"url": "/note"})).await;
    assert_eq!(jwr["body"], json!([]), "and reads nothing");

    server.abort();
    t.close().await;
}

topsail_tests::each_db!(
    each_socket_hears_only_what_it_may_read,
    each_socket_hears_only_what_it_may_read
);

/// The room cap holds for a guarded `_introduce` too: a watcher that may
/// read every new record is introduced to them up to the cap, and no
/// further, while it still hears each `created`.
#[tokio::test]
async fn a_guarded_watcher_is_introduced_to_at_most_max_rooms_per_socket() {
    let config = topsail::RealtimeConfig {
        max_rooms_per_socket: 20,
        ..topsail::RealtimeConfig::default()
    };
    let t = app_with(Db::Sqlite, config).await;
    let ann = t.ann;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = t.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let mut a = socket(addr, Some(format!("acct={ann}"))).await;
    let jwr = virtual_request(&mut a, 1, "get", json!({"url": "/note"})).await;
    assert_eq!(jwr["statusCode"], 200);
    let sockets = t.app.sockets().unwrap().clone();
    let id = sockets.sockets_where(&|p| me(p) == Some(ann))[0].clone();
    let rooms = || async { sockets.rooms_of(&id).await.unwrap().len() };

    for i in 0..30 {
        t.note(ann, &format!("n{i}"), false).await;
    }
    // What `_introduce` adds is checked every two seconds.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let introduced = rooms().await;
    assert!(introduced >= 20, "introduced up to the cap: {introduced}");
    for i in 30..40 {
        t.note(ann, &format!("n{i}"), false).await;
    }
    let heard = heard_until(&mut a, "n39").await;
    let created = heard
        .iter()
        .filter(|h| h["event"] == "note" && h["message"]["verb"] == "created")
        .count();
    assert_eq!(created, 40, "the watcher at its cap still hears `created`");
    assert_eq!(rooms().await, introduced, "introduced to nothing more");

    server.abort();
    t.close().await;
}

/// Two nodes over one database and Redis: a guarded message reaches the
/// sockets of the other node that may read it, and no other.
#[tokio::test]
async fn guarded_messages_cross_the_cluster_per_recipient() {
    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let redis = topsail_tests::OwnRedis::start().await;
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let app = Topsail::builder()
            .model::<Account>()
            .model::<Note>()
            .store(store.clone())
            .create_schema()
            .rules(rules())
            .redis(redis.url.clone())
            .build()
            .await
            .unwrap();
        let routes = app
            .blueprints()
            .router()
            .layer(app.identity(ByCookie::default()));
        let router = app.serve(routes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        nodes.push((app, addr, server));
    }
    let accounts = nodes[0].0.model::<Account>();
    let ann = accounts.create(json!({"name": "Ann"})).await.unwrap().id;
    let bo = accounts.create(json!({"name": "Bo"})).await.unwrap().id;
    // Bo and Ann on the second node; the writes on the first.
    let mut b = socket(nodes[1].1, Some(format!("acct={bo}"))).await;
    let mut a = socket(nodes[1].1, Some(format!("acct={ann}"))).await;
    for ws in [&mut a, &mut b] {
        let jwr = virtual_request(ws, 1, "get", json!({"url": "/note"})).await;
        assert_eq!(jwr["statusCode"], 200);
    }
    let notes = nodes[0].0.model::<Note>();
    notes
        .create(json!({"title": "secret", "owner": ann, "shared": false}))
        .await
        .unwrap();
    notes
        .create(json!({"title": "marker", "owner": ann, "shared": true}))
        .await
        .unwrap();
    let heard_b = heard_until(&mut b, "marker").await;
    assert!(
        !serde_json::to_string(&heard_b).unwrap().contains("secret"),
        "{heard_b:#?}"
    );
    let heard_a = heard_until(&mut a, "marker").await;
    assert!(
        serde_json::to_string(&heard_a).unwrap().contains("secret"),
        "the owner hears her private note on the other node: {heard_a:#?}"
    );
    for (app, _, server) in nodes {
        server.abort();
        app.close_sockets().await;
    }
    store.close().await;
    cleanup.run().await;
}
