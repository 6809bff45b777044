//! The contracts against what is served: every operation of the OpenAPI
//! document reaches that action on the real router, the document lists
//! every route Sails binds (written out here by hand, not read from the
//! route table), and no private attribute appears in any contract.

use axum::body::Body;
use http::{Method, Request};
use serde_json::Value;
use topsail::{BlueprintAction, Blueprints, Contracts, Link, Model, Topsail};
use topsail_tests::{Db, fresh_store};
use tower::ServiceExt;

/// The zoo's routes under `/api/v1`, pluralized, shortcuts off: what Sails
/// binds for `user` (collection `pets`), `pet` (to-one `owner`, collection
/// `tags`) and `tag` (collection `pets`).
fn sails_routes_of_the_zoo() -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (model, collections, to_ones) in [
        ("users", &["pets"][..], &[][..]),
        ("pets", &["tags"][..], &["owner"][..]),
        ("tags", &["pets"][..], &[][..]),
    ] {
        let base = format!("/api/v1/{model}");
        out.extend([
            (Method::GET, base.clone()),
            (Method::GET, format!("{base}/{{id}}")),
            (Method::POST, base.clone()),
            (Method::PATCH, format!("{base}/{{id}}")),
            (Method::PUT, format!("{base}/{{id}}")),
            (Method::DELETE, base.clone()),
            (Method::DELETE, format!("{base}/{{id}}")),
        ]);
        for alias in to_ones {
            out.push((Method::GET, format!("{base}/{{parentid}}/{alias}")));
        }
        for alias in collections {
            let assoc = format!("{base}/{{parentid}}/{alias}");
            out.extend([
                (Method::GET, assoc.clone()),
                (Method::PUT, format!("{assoc}/{{childid}}")),
                (Method::DELETE, format!("{assoc}/{{childid}}")),
                (Method::PUT, assoc),
            ]);
        }
    }
    out.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
    out
}

/// The zoo's shortcut routes under `/api`, pluralized, REST off (when
/// Sails also binds the populate route as a shortcut).
fn sails_shortcuts_of_the_zoo() -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (model, collections, to_ones) in [
        ("users", &["pets"][..], &[][..]),
        ("pets", &["tags"][..], &["owner"][..]),
        ("tags", &["pets"][..], &[][..]),
    ] {
        let base = format!("/api/{model}");
        for verb in ["find", "create"] {
            out.push((Method::GET, format!("{base}/{verb}")));
        }
        for verb in ["find", "update", "destroy"] {
            out.push((Method::GET, format!("{base}/{verb}/{{id}}")));
        }
        for alias in to_ones.iter().chain(collections) {
            out.push((Method::GET, format!("{base}/{{parentid}}/{alias}")));
        }
        for alias in collections {
            let assoc = format!("{base}/{{parentid}}/{alias}");
            out.extend([
                (Method::GET, format!("{assoc}/add/{{childid}}")),
                (Method::GET, format!("{assoc}/remove/{{childid}}")),
                (Method::GET, format!("{assoc}/replace")),
            ]);
        }
    }
    out.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
    out
}

fn shortcuts_only(b: Blueprints) -> Blueprints {
    b.prefix("/api").pluralize(true).rest(false)
}

fn configured(b: Blueprints) -> Blueprints {
    b.prefix("/api")
        .rest_prefix("/v1")
        .pluralize(true)
        .shortcuts(false)
}

/// Every `(method, path, operationId)` of an OpenAPI document.
fn operations(doc: &Value) -> Vec<(Method, String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let id = op["operationId"].as_str().unwrap().to_owned();
            out.push((m, path.clone(), id));
        }
    }
    out
}

/// Sends `method path` (parameters filled with 1) through `router`; the
/// action that answered.
async fn reached(router: &axum::Router, method: &Method, path: &str) -> Option<BlueprintAction> {
    let uri = path
        .replace("{id}", "1")
        .replace("{parentid}", "1")
        .replace("{childid}", "1");
    let req = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    res.extensions().get::<BlueprintAction>().cloned()
}

async fn every_documented_route_reaches_its_action(db: Db) {
    for configure in [
        configured as fn(Blueprints) -> Blueprints,
        shortcuts_only,
        |b| b,
    ] {
        let z = topsail_tests::zoo_with(db, configure).await;
        let doc =
            serde_json::to_value(Contracts::new(&configure(z.app.blueprints())).openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let ops = operations(&doc);
        assert!(ops.len() >= 28, "{}", ops.len());
        for (method, path, id) in &ops {
            let mut parts = id.split('.');
            let (model, action) = (parts.next().unwrap(), parts.next().unwrap());
            let got = reached(&z.router, method, path).await;
            assert_eq!(
                got.as_ref().map(|a| (a.model, a.action)),
                Some((model, action)),
                "{method} {path} ({id})"
            );
        }
        drop(z);
    }
}

topsail_tests::each_db!(
    every_documented_route_reaches_its_action,
    every_documented_route_reaches_its_action
);

#[tokio::test]
async fn the_document_lists_exactly_the_routes_sails_binds() {
    for (configure, expected) in [
        (
            configured as fn(Blueprints) -> Blueprints,
            sails_routes_of_the_zoo(),
        ),
        (shortcuts_only, sails_shortcuts_of_the_zoo()),
    ] {
        let z = topsail_tests::zoo_with(Db::Sqlite, configure).await;
        let doc =
            serde_json::to_value(Contracts::new(&configure(z.app.blueprints())).openapi()).unwrap();
        let mut documented: Vec<(Method, String)> = operations(&doc)
            .into_iter()
            .map(|(m, p, _)| (m, p))
            .collect();
        documented.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
        assert_eq!(documented, expected);
        // A route the document leaves out is not one the router serves as
        // a blueprint: the unprefixed path answers the fallback.
        assert!(reached(&z.router, &Method::GET, "/user").await.is_none());
    }
}

/// An account with a private attribute.
#[derive(Model, Debug, Clone)]
struct Account {
    id: i64,
    #[model(required)]
    name: String,
    #[model(private)]
    password_hash: String,
    #[model(read_only)]
    role: String,
    #[model(collection = Note, via = owner)]
    notes: Vec<Link<Note>>,
}

#[derive(Model, Debug, Clone)]
struct Note {
    id: i64,
    text: String,
    #[model(model = Account)]
    owner: Option<Link<Account>>,
}

#[tokio::test]
async fn no_private_attribute_appears_in_any_contract_and_read_only_ones_are_not_values() {
    let (store, cleanup) = fresh_store(Db::Sqlite).await;
    let app = Topsail::builder()
        .model::<Account>()
        .model::<Note>()
        .store(store.clone())
        .create_schema()
        .build()
        .await
        .unwrap();
    let c = Contracts::new(&app.blueprints());
    let openapi = serde_json::to_string(&c.openapi()).unwrap();
    let asyncapi = c.asyncapi().to_string();
    let ts = c.typescript();
    for (name, text) in [("openapi", &openapi), ("asyncapi", &asyncapi), ("ts", &ts)] {
        assert!(!text.contains("passwordHash"), "{name}");
        assert!(!text.contains("password_hash"), "{name}");
        assert!(
            text.contains("role"),
            "{name}: read-only attributes are answered"
        );
    }
    let doc: Value = serde_json::from_str(&openapi).unwrap();
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["Account"]["properties"]["role"].is_object());
    assert!(schemas["AccountCreate"]["properties"].get("role").is_none());
    assert!(schemas["AccountCreate"]["properties"].get("id").is_none());
    assert_eq!(
        schemas["AccountCreate"]["required"],
        serde_json::json!(["name"])
    );
    assert!(ts.contains("export interface AccountRow"));
    // A named identity scheme is offered to every operation, beside none.
    use topsail::contract_security::{ApiKey, ApiKeyValue, SecurityScheme};
    let cookie = SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("id")));
    let secured = serde_json::to_value(c.clone().security("session", cookie).openapi()).unwrap();
    assert_eq!(
        secured["components"]["securitySchemes"]["session"],
        serde_json::json!({"type": "apiKey", "in": "cookie", "name": "id"})
    );
    assert_eq!(
        secured["security"],
        serde_json::json!([{"session": []}, {}])
    );
    assert!(ts.contains("export type NoteMessage"));
    store.close().await;
    cleanup.run().await;
}
