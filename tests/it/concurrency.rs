use http::StatusCode;
use serde_json::json;
use topsail_tests::both;

both! {
    async fn concurrent_creates_of_one_unique_value_let_exactly_one_through(z) {
        z.published.take();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let router = z.router.clone();
            tasks.push(tokio::spawn(async move {
                let req = http::Request::post("/user")
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(json!({"name": format!("N{i}"), "email": "same@example.com"}).to_string()))
                    .unwrap();
                tower::ServiceExt::oneshot(router, req).await.unwrap().status()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                StatusCode::OK => ok += 1,
                StatusCode::BAD_REQUEST => {}
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!(ok, 1);
        let created = z.published.take_broadcasts().into_iter().filter(|(_, _, p)| p["verb"] == "created").count();
        assert_eq!(created, 1, "only the committed create is published");
    }
}

both! {
    async fn concurrent_updates_each_see_a_whole_previous(z) {
        let id = z.user("Ann").await;
        z.published.take();
        let mut tasks = Vec::new();
        for i in 0..10 {
            let router = z.router.clone();
            tasks.push(tokio::spawn(async move {
                let req = http::Request::patch(format!("/user/{id}"))
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(json!({"age": 100 + i}).to_string()))
                    .unwrap();
                tower::ServiceExt::oneshot(router, req).await.unwrap().status()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::OK);
        }
        // Updates are serialised per record: the previous values form a
        // chain from the original age through every update.
        let mut prev: Vec<i64> = Vec::new();
        let mut next: Vec<i64> = Vec::new();
        for (_, _, p) in z.published.take_broadcasts() {
            prev.push(p["previous"]["age"].as_i64().unwrap());
            next.push(p["data"]["age"].as_i64().unwrap());
        }
        assert_eq!(prev.len(), 10);
        prev.sort();
        prev.dedup();
        assert_eq!(prev.len(), 10, "no two updates saw the same previous record: {prev:?}");
        let last = z.get(&format!("/user/{id}")).await["age"].as_i64().unwrap();
        assert!(next.contains(&last));
    }
}
