use topsail::Migration;
use topsail::core::store::Dialect;

#[test]
fn the_migration_files_match_the_models() {
    // If this fails, the models changed: add a new migration (start from
    // `zoo --print-schema <dialect>`), never edit an applied one.
    let r = example_zoo::registry();
    assert_eq!(
        example_zoo::SQLITE_MIGRATIONS[0].sql,
        topsail::ddl(&r, Dialect::Sqlite)
    );
    assert_eq!(
        example_zoo::POSTGRES_MIGRATIONS[0].sql,
        topsail::ddl(&r, Dialect::Postgres)
    );
}

async fn migrator_on(store: topsail::SqlStore) {
    let pg = matches!(store, topsail::SqlStore::Postgres(_));
    let list = if pg {
        example_zoo::POSTGRES_MIGRATIONS
    } else {
        example_zoo::SQLITE_MIGRATIONS
    };
    assert_eq!(topsail::migrate(&store, list).await.unwrap(), vec![1]);
    assert_eq!(
        topsail::migrate(&store, list).await.unwrap(),
        Vec::<i64>::new(),
        "applied once"
    );
    let two = [
        list[0],
        Migration {
            version: 2,
            name: "extra",
            sql: "CREATE TABLE extra (id BIGINT);",
        },
    ];
    assert_eq!(topsail::migrate(&store, &two).await.unwrap(), vec![2]);
    let edited = [Migration {
        sql: "CREATE TABLE other (id BIGINT);",
        ..list[0]
    }];
    assert!(matches!(
        topsail::migrate(&store, &edited).await,
        Err(topsail::MigrateError::Changed { version: 1, .. })
    ));
}

#[tokio::test]
async fn the_migrator_applies_once_and_notices_edits_sqlite() {
    let (store, cleanup) = topsail_tests::fresh_store(topsail_tests::Db::Sqlite).await;
    migrator_on(store.clone()).await;
    store.close().await;
    cleanup.run().await;
}

#[tokio::test]
async fn the_migrator_applies_once_and_notices_edits_postgres() {
    let (store, cleanup) = topsail_tests::fresh_store(topsail_tests::Db::Postgres).await;
    migrator_on(store.clone()).await;
    store.close().await;
    cleanup.run().await;
}

#[tokio::test]
async fn concurrent_starts_migrate_once_postgres() {
    let (store, cleanup) = topsail_tests::fresh_store(topsail_tests::Db::Postgres).await;
    let runs = (0..4).map(|_| {
        let s = store.clone();
        tokio::spawn(async move {
            topsail::migrate(&s, example_zoo::POSTGRES_MIGRATIONS)
                .await
                .unwrap()
        })
    });
    let mut applied = Vec::new();
    for r in runs {
        applied.extend(r.await.unwrap());
    }
    assert_eq!(applied, vec![1]);
    store.close().await;
    cleanup.run().await;
}
