use http::{Method, StatusCode};
use serde_json::{Value, json};
use topsail_tests::both;

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

both! {
    async fn populate_action_for_collections_and_to_one(z) {
        let u = z.user("Ann").await;
        let a = z.pet("Rex", json!({"owner": u})).await;
        let b = z.pet("Ace", json!({"owner": u})).await;
        let stray = z.pet("Stray", json!({})).await;
        assert_eq!(ids(&z.get(&format!("/user/{u}/pets")).await), [a, b]);
        assert_eq!(ids(&z.get(&format!("/user/{u}/pets?sort=name%20ASC")).await), [b, a]);
        assert_eq!(ids(&z.get(&format!("/user/{u}/pets?name=Rex")).await), [a], "loose params filter the children");
        assert_eq!(z.get(&format!("/pet/{a}/owner")).await["name"], "Ann");
        let r = z.send(Method::GET, &format!("/pet/{stray}/owner"), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "a null to-one is 404");
        assert_eq!(z.send(Method::GET, "/user/999/pets", None).await.status, StatusCode::NOT_FOUND);
        let r = z.send(Method::GET, &format!("/user/{u}/bogus"), None).await;
        assert_eq!((r.status, r.body), (StatusCode::NOT_FOUND, json!("Not Found")), "an unknown alias matches no route");
        let r = z.send(Method::PATCH, "/user", Some(json!({}))).await;
        assert_eq!((r.status, r.body), (StatusCode::NOT_FOUND, json!("Not Found")), "nor does an unbound method");
    }
}

both! {
    async fn add_remove_one_to_many(z) {
        let ann = z.user("Ann").await;
        let bob = z.user("Bob").await;
        let p = z.pet("Rex", json!({"owner": ann})).await;
        let r = z.send(Method::PUT, &format!("/user/{bob}/pets/{p}"), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(ids(&r.body["pets"]), [p], "add returns the parent, populated");
        assert_eq!(z.get(&format!("/pet/{p}")).await["owner"]["id"], bob, "the child was taken from Ann");
        assert_eq!(z.get(&format!("/user/{ann}")).await["pets"], json!([]));
        let again = z.send(Method::PUT, &format!("/user/{bob}/pets/{p}"), None).await;
        assert_eq!((again.status, ids(&again.body["pets"])), (StatusCode::OK, vec![p]), "adding twice is fine");
        // Removing from the wrong parent changes nothing.
        assert_eq!(z.send(Method::DELETE, &format!("/user/{ann}/pets/{p}"), None).await.status, StatusCode::OK);
        assert_eq!(z.get(&format!("/pet/{p}")).await["owner"]["id"], bob);
        let r = z.send(Method::DELETE, &format!("/user/{bob}/pets/{p}"), None).await;
        assert_eq!(r.body["pets"], json!([]));
        assert_eq!(z.get(&format!("/pet/{p}")).await["owner"], Value::Null);
        for uri in [format!("/user/999/pets/{p}"), format!("/user/{bob}/pets/999")] {
            assert_eq!(z.send(Method::PUT, &uri, None).await.status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(z.send(Method::DELETE, &uri, None).await.status, StatusCode::NOT_FOUND, "{uri}");
        }
    }
}

both! {
    async fn add_remove_many_to_many_from_both_sides(z) {
        let p = z.pet("Rex", json!({})).await;
        let t = z.tag("good").await;
        let r = z.send(Method::PUT, &format!("/pet/{p}/tags/{t}"), None).await;
        assert_eq!(ids(&r.body["tags"]), [t]);
        assert_eq!(ids(&z.get(&format!("/tag/{t}")).await["pets"]), [p], "visible from the other side");
        z.send(Method::PUT, &format!("/tag/{t}/pets/{p}"), None).await;
        assert_eq!(ids(&z.get(&format!("/pet/{p}")).await["tags"]), [t], "no duplicate join rows");
        let r = z.send(Method::DELETE, &format!("/tag/{t}/pets/{p}"), None).await;
        assert_eq!(r.body["pets"], json!([]));
        assert_eq!(z.get(&format!("/pet/{p}")).await["tags"], json!([]));
    }
}

both! {
    async fn replace_sets_the_whole_collection(z) {
        let ann = z.user("Ann").await;
        let bob = z.user("Bob").await;
        let a = z.pet("A", json!({"owner": ann})).await;
        let b = z.pet("B", json!({"owner": bob})).await;
        let c = z.pet("C", json!({})).await;
        let r = z.send(Method::PUT, &format!("/user/{ann}/pets"), Some(json!([b, c, 999]))).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(ids(&r.body["pets"]), [b, c], "unknown ids are ignored");
        assert_eq!(z.get(&format!("/pet/{a}")).await["owner"], Value::Null);
        assert_eq!(z.get(&format!("/user/{bob}")).await["pets"], json!([]));
        let t1 = z.tag("t1").await;
        let t2 = z.tag("t2").await;
        z.send(Method::PUT, &format!("/pet/{a}/tags"), Some(json!([t1, t2]))).await;
        let r = z.send(Method::PUT, &format!("/pet/{a}/tags"), Some(json!([t2]))).await;
        assert_eq!(ids(&r.body["tags"]), [t2]);
        let r = z.send(Method::PUT, &format!("/pet/{a}/tags?tags={}", topsail_tests::enc("[]")), None).await;
        assert_eq!(r.body["tags"], json!([]), "ids from the query string");
        assert_eq!(z.send(Method::PUT, "/user/999/pets", Some(json!([a]))).await.status, StatusCode::NOT_FOUND);
    }
}

both! {
    async fn create_and_update_with_collections(z) {
        let ann = z.user("Ann").await;
        let p1 = z.pet("A", json!({"owner": ann})).await;
        let t = z.tag("t").await;
        let u = z.post("/user", json!({"name": "Bob", "email": "bob@example.com", "pets": [p1]})).await;
        assert_eq!(ids(&u["pets"]), [p1], "create links the children");
        assert_eq!(z.get(&format!("/user/{ann}")).await["pets"], json!([]), "and takes them from their old parent");
        let p = z.post("/pet", json!({"name": "B", "tags": [t], "owner": ann})).await;
        assert_eq!(ids(&p["tags"]), [t]);
        let bob = u["id"].as_i64().unwrap();
        let r = z.send(Method::PATCH, &format!("/user/{bob}"), Some(json!({"pets": []}))).await;
        assert_eq!(r.body["pets"], json!([]), "a collection in an update replaces it");
    }
}

both! {
    async fn destroy_unlinks_children_and_join_rows(z) {
        let ann = z.user("Ann").await;
        let p = z.pet("Rex", json!({"owner": ann})).await;
        let t = z.tag("t").await;
        z.send(Method::PUT, &format!("/pet/{p}/tags/{t}"), None).await;
        let r = z.send(Method::DELETE, &format!("/user/{ann}"), None).await;
        assert_eq!(ids(&r.body["pets"]), [p], "the destroyed record comes back populated");
        assert_eq!(z.get(&format!("/pet/{p}")).await["owner"], Value::Null, "children of a destroyed parent are unlinked");
        z.send(Method::DELETE, &format!("/tag/{t}"), None).await;
        assert_eq!(z.get(&format!("/pet/{p}")).await["tags"], json!([]));
        // A new tag reusing nothing of the old one's join rows.
        let t2 = z.tag("t2").await;
        assert_eq!(z.get(&format!("/tag/{t2}")).await["pets"], json!([]));
    }
}

/// More keys than a statement may bind (SQLite 32,766 parameters,
/// PostgreSQL 65,535): a replace, a create's collection, a destroy of a
/// parent with that many children, over a foreign key and a join table.
/// Each used to be a 500 (and such a parent could never be destroyed).
const MANY: i64 = 70_000;

/// Inserts `MANY` unowned pets with keys 1..=MANY into the fresh zoo.
async fn seed_many_pets(z: &topsail_tests::Zoo) {
    let series = match z.db {
        topsail_tests::Db::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {MANY}) SELECT i FROM n"
        ),
        topsail_tests::Db::Postgres => format!("SELECT generate_series(1, {MANY}) AS i"),
    };
    z.app
        .store()
        .execute_script(&format!(
            "INSERT INTO pet (name, species, created_at, updated_at) SELECT 'p' || i, '', 0, 0 FROM ({series}) AS s"
        ))
        .await
        .unwrap();
}

both! {
    async fn id_lists_longer_than_a_statement_can_bind(z) {
        seed_many_pets(&z).await;
        let all: Vec<i64> = (1..=MANY).collect();
        let pets = z.app.model::<example_zoo::Pet>();
        let owned_by = |u: i64| topsail::Criteria::new().filter(json!({"owner": u}));

        let ann = z.user("Ann").await;
        let r = z.send(Method::PUT, &format!("/user/{ann}/pets"), Some(json!(all))).await;
        assert_eq!(r.status, StatusCode::OK, "replace: {}", r.body);
        assert_eq!(pets.count(&owned_by(ann)).await.unwrap(), MANY as u64);

        let r = z.send(Method::POST, "/user", Some(json!({"name": "Bo", "email": "bo@example.com", "pets": all}))).await;
        assert_eq!(r.status, StatusCode::OK, "create with a collection: {}", r.body);
        let bo = r.body["id"].as_i64().unwrap();
        assert_eq!(pets.count(&owned_by(bo)).await.unwrap(), MANY as u64, "Bo took every pet");
        assert_eq!(pets.count(&owned_by(ann)).await.unwrap(), 0);

        let r = z.send(Method::DELETE, &format!("/user/{bo}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "destroy a parent of {MANY}: {}", r.body);
        assert_eq!(pets.count(&owned_by(bo)).await.unwrap(), 0);
        assert_eq!(pets.count(&topsail::Criteria::new()).await.unwrap(), MANY as u64, "the children stay");

        let tag = z.tag("big").await;
        let tags_of_ends = || async {
            pets.find(&topsail::Criteria::new().filter(json!({"id": [1, MANY]})))
                .await
                .unwrap()
                .iter()
                .map(|p| p.tags.len())
                .sum::<usize>()
        };
        let r = z.send(Method::PUT, &format!("/tag/{tag}/pets"), Some(json!(all))).await;
        assert_eq!(r.status, StatusCode::OK, "replace through a join table: {}", r.body);
        assert_eq!(tags_of_ends().await, 2);
        let r = z.send(Method::PUT, &format!("/tag/{tag}/pets"), Some(json!([]))).await;
        assert_eq!(r.status, StatusCode::OK, "unlink {MANY} through a join table: {}", r.body);
        assert_eq!(tags_of_ends().await, 0);
        let r = z.send(Method::PUT, &format!("/tag/{tag}/pets"), Some(json!(all))).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = z.send(Method::DELETE, &format!("/tag/{tag}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "destroy a tag on {MANY} pets: {}", r.body);
        assert_eq!(tags_of_ends().await, 0, "the join rows went with the tag");
    }
}
