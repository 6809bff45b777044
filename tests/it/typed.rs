use serde_json::{Value, json};
use topsail::{Criteria, Error, Lifecycle, Link, Model, Record, Topsail};
use topsail_tests::both;

both! {
    async fn the_typed_api_returns_structs(z) {
        let users = z.app.model::<example_zoo::User>();
        let ann = users.create(json!({"name": "Ann", "email": "ann@example.com"})).await.unwrap();
        assert_eq!((ann.name.as_str(), ann.age), ("Ann", 0.0));
        let pets = z.app.model::<example_zoo::Pet>();
        let rex = pets.create(json!({"name": "Rex", "owner": ann.id})).await.unwrap();
        match &rex.owner {
            Some(Link::Record(owner)) => assert_eq!(owner.name, "Ann"),
            other => panic!("owner should be populated: {other:?}"),
        }
        let found = pets.find(&Criteria::new().filter(json!({"name": {"startsWith": "r"}}))).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(users.count(&Criteria::new()).await.unwrap(), 1);
        let ann2 = users.update(ann.id, json!({"age": 30})).await.unwrap();
        assert_eq!(ann2.age, 30.0);
        let tag = z.app.model::<example_zoo::Tag>().create(json!({"label": "good"})).await.unwrap();
        let rex = pets.add(rex.id, "tags", tag.id).await.unwrap();
        assert_eq!(rex.tags.len(), 1);
        let rex = pets.replace(rex.id, "tags", Vec::<i64>::new()).await.unwrap();
        assert!(rex.tags.is_empty());
        assert!(users.find_one(999).await.unwrap().is_none());
        match users.create(json!({"name": "X"})).await {
            Err(Error::Usage { code, .. }) => assert_eq!(code.as_str(), "E_INVALID_NEW_RECORD"),
            other => panic!("expected a usage error, got {other:?}"),
        }
        let gone = users.destroy(ann.id).await.unwrap();
        assert_eq!(gone.name, "Ann");
        let roundtrip = example_zoo::Pet::from_record(rex.to_record()).unwrap();
        assert_eq!(roundtrip.name, "Rex");
    }
}

/// A model with lifecycle callbacks: names are trimmed, `admin` cannot be
/// created, and `locked` notes cannot be destroyed.
#[derive(Model, Debug)]
#[model(lifecycle, identity = "note", strict)]
struct Note {
    id: i64,
    #[model(required, min_length = 1)]
    title: String,
    #[model(default = "draft", is_in = ["draft", "published", "locked"])]
    state: String,
    #[model(min = 0, max = 10)]
    stars: i64,
    #[model(regex = "^[a-z-]*$")]
    slug: String,
    #[model(json)]
    meta: Value,
    #[model(allow_null)]
    summary: Option<String>,
}

impl Lifecycle for Note {
    fn before_create(values: &mut Record) -> Result<(), String> {
        if let Some(Value::String(t)) = values.get_mut("title") {
            *t = t.trim().to_owned();
            if t == "admin" {
                return Err("`admin` is reserved".into());
            }
        }
        Ok(())
    }
    fn before_update(values: &mut Record) -> Result<(), String> {
        if values.get("state") == Some(&json!("published")) {
            values.insert("stars".into(), json!(1));
        }
        Ok(())
    }
    fn before_destroy(record: &Record) -> Result<(), String> {
        if record.get("state") == Some(&json!("locked")) {
            Err("this note is locked".into())
        } else {
            Ok(())
        }
    }
}

/// An app of `Note`s on an in-memory SQLite database.
async fn notes_app() -> Topsail {
    Topsail::builder()
        .model::<Note>()
        .database_url("sqlite::memory:")
        .create_schema()
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn lifecycle_callbacks_rules_and_strict_mode() {
    let app = notes_app().await;
    let notes = app.model::<Note>();
    let n = notes
        .create(json!({"title": "  hello  ", "meta": {"a": [1, 2]}}))
        .await
        .unwrap();
    assert_eq!(
        (n.title.as_str(), n.state.as_str(), n.stars),
        ("hello", "draft", 0)
    );
    assert_eq!(n.meta, json!({"a": [1, 2]}));
    assert_eq!(n.summary, None);
    let code = |r: Result<Note, Error>| match r {
        Err(Error::Usage { code, details }) => format!("{}: {details}", code.as_str()),
        other => format!("{other:?}"),
    };
    assert!(code(notes.create(json!({"title": "admin"})).await).contains("reserved"));
    assert!(code(notes.create(json!({"title": ""})).await).starts_with("E_INVALID_NEW_RECORD"));
    assert!(
        code(notes.create(json!({"title": "a", "state": "bogus"})).await).contains("whitelist")
    );
    assert!(code(notes.create(json!({"title": "a", "stars": 11})).await).contains("maximum"));
    assert!(
        code(notes.create(json!({"title": "a", "slug": "Not OK"})).await)
            .contains("regular expression")
    );
    assert!(
        code(notes.create(json!({"title": "a", "bogus": 1})).await)
            .contains("not a recognized attribute"),
        "strict mode"
    );
    let n = notes
        .update(n.id, json!({"state": "published"}))
        .await
        .unwrap();
    assert_eq!(n.stars, 1, "before_update may change values");
    let n = notes
        .update(n.id, json!({"state": "locked", "summary": "s"}))
        .await
        .unwrap();
    assert_eq!(n.summary.as_deref(), Some("s"));
    assert!(code(notes.destroy(n.id).await).contains("locked"));
    assert!(
        notes.find_one(n.id).await.unwrap().is_some(),
        "a rejected destroy keeps the record"
    );
}

#[tokio::test]
async fn find_with_a_projection_builds_structs_with_base_values() {
    let app = notes_app().await;
    let notes = app.model::<Note>();
    notes
        .create(json!({"title": "hello", "stars": 3, "summary": "s"}))
        .await
        .unwrap();
    // `title` is required and `select` leaves it out: it takes its base value.
    let picked = notes
        .find(&Criteria::new().select(["stars"]))
        .await
        .unwrap();
    assert_eq!(picked.len(), 1);
    assert_eq!((picked[0].title.as_str(), picked[0].stars), ("", 3));
    assert_eq!(picked[0].summary, None, "null where null is allowed");
    assert_eq!(picked[0].state, "draft", "the default where there is one");
    let omitted = notes
        .find(&Criteria::new().omit(["title", "summary"]))
        .await
        .unwrap();
    assert_eq!((omitted[0].title.as_str(), omitted[0].stars), ("", 3));
}

#[tokio::test]
async fn the_typed_api_takes_typed_values() {
    #[derive(serde::Serialize)]
    struct NewNote<'a> {
        title: &'a str,
        stars: i64,
    }
    #[derive(serde::Serialize)]
    struct Stars {
        stars: i64,
    }
    let app = notes_app().await;
    let notes = app.model::<Note>();
    let n = notes
        .create(NewNote {
            title: "typed",
            stars: 2,
        })
        .await
        .unwrap();
    assert_eq!((n.title.as_str(), n.stars), ("typed", 2));
    let n = notes.update(n.id, Stars { stars: 5 }).await.unwrap();
    assert_eq!(n.stars, 5);
    match notes
        .create(NewNote {
            title: "",
            stars: 2,
        })
        .await
    {
        Err(Error::Usage { code, .. }) => assert_eq!(code.as_str(), "E_INVALID_NEW_RECORD"),
        other => panic!("typed values are validated as a client's: {other:?}"),
    }
}
