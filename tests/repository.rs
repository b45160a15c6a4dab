//! One repository suite, run on SQLite and on a fresh PostgreSQL database.

mod common;

use common::PgDatabase;
use ferrocast::db::{Backend, Db, DbError, NewApiKey, Role};

async fn repository_suite(db: &Db) {
    db.ping().await.unwrap();
    assert_eq!(db.count_admin_keys().await.unwrap(), 0);

    // Tenants come with their first key, atomically.
    let (a, a_key) = db
        .create_tenant_with_key("Acme", "default", "fck_aaaaaaaa", "hash-a1")
        .await
        .unwrap();
    let (b, b_key) = db
        .create_tenant_with_key("Beta", "default", "fck_bbbbbbbb", "hash-b1")
        .await
        .unwrap();
    assert_eq!(a_key.tenant_id.as_deref(), Some(a.id.as_str()));
    assert_eq!(a_key.role, Role::Tenant);
    assert_eq!(db.get_tenant(&a.id).await.unwrap(), a);
    assert!(matches!(
        db.get_tenant("nope").await,
        Err(DbError::NotFound("tenant"))
    ));

    // A duplicate secret hash is refused, and the tenant insert is rolled back with it.
    let dup = db
        .create_tenant_with_key("Dup", "default", "fck_dupdupdu", "hash-a1")
        .await;
    assert!(matches!(dup, Err(DbError::Conflict(_))), "{dup:?}");
    let all = db.list_tenants(None, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["Acme", "Beta"]
    );

    // Pagination by cursor.
    let first = db.list_tenants(None, 1).await.unwrap();
    assert_eq!(first, vec![a.clone()]);
    let second = db.list_tenants(Some(&first[0].id), 1).await.unwrap();
    assert_eq!(second, vec![b.clone()]);
    assert!(db.list_tenants(Some(&b.id), 1).await.unwrap().is_empty());

    // Admin keys.
    let admin = db
        .insert_api_key(&NewApiKey {
            tenant_id: None,
            name: "bootstrap",
            prefix: "fca_xxxxxxxx",
            secret_hash: "hash-admin",
        })
        .await
        .unwrap();
    assert_eq!(admin.role, Role::Admin);
    assert_eq!(db.count_admin_keys().await.unwrap(), 1);
    let found = db
        .find_active_key_by_hash("hash-admin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.role, Role::Admin);
    assert_eq!(found.tenant_id, None);

    // Keys are found by hash while active; use is recorded at most once a minute.
    let a2 = db
        .insert_api_key(&NewApiKey {
            tenant_id: Some(&a.id),
            name: "ci",
            prefix: "fck_cccccccc",
            secret_hash: "hash-a2",
        })
        .await
        .unwrap();
    assert_eq!(
        db.find_active_key_by_hash("hash-a2")
            .await
            .unwrap()
            .unwrap(),
        a2
    );
    assert!(
        db.find_active_key_by_hash("hash-unknown")
            .await
            .unwrap()
            .is_none()
    );
    db.touch_api_key(&a2.id, 1_000_000).await.unwrap();
    db.touch_api_key(&a2.id, 1_030_000).await.unwrap();
    assert_eq!(
        db.get_api_key(&a.id, &a2.id).await.unwrap().last_used_at,
        Some(1_000_000)
    );
    db.touch_api_key(&a2.id, 1_070_000).await.unwrap();
    assert_eq!(
        db.get_api_key(&a.id, &a2.id).await.unwrap().last_used_at,
        Some(1_070_000)
    );

    // Every tenant-owned query is scoped: B cannot see, rename or revoke A's keys.
    let a_keys = db.list_api_keys(&a.id, None, 100).await.unwrap();
    assert_eq!(
        a_keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        ["default", "ci"]
    );
    assert_eq!(
        db.list_api_keys(&b.id, None, 100).await.unwrap(),
        vec![b_key.clone()]
    );
    assert!(matches!(
        db.get_api_key(&b.id, &a2.id).await,
        Err(DbError::NotFound(_))
    ));
    assert!(matches!(
        db.rename_api_key(&b.id, &a2.id, "stolen").await,
        Err(DbError::NotFound(_))
    ));
    assert!(matches!(
        db.revoke_api_key(&b.id, &a2.id).await,
        Err(DbError::NotFound(_))
    ));
    let untouched = db.get_api_key(&a.id, &a2.id).await.unwrap();
    assert_eq!(untouched.name, "ci");
    assert_eq!(untouched.revoked_at, None);

    // Rename and revoke by the owner; a revoked key no longer authenticates.
    assert_eq!(
        db.rename_api_key(&a.id, &a2.id, "deploy")
            .await
            .unwrap()
            .name,
        "deploy"
    );
    let revoked = db.revoke_api_key(&a.id, &a2.id).await.unwrap();
    let when = revoked.revoked_at.expect("revoked");
    assert!(
        db.find_active_key_by_hash("hash-a2")
            .await
            .unwrap()
            .is_none()
    );
    let again = db.revoke_api_key(&a.id, &a2.id).await.unwrap();
    assert_eq!(
        again.revoked_at,
        Some(when),
        "revoking twice keeps the first time"
    );

    // Deleting a tenant deletes its keys, and only its keys.
    db.delete_tenant(&a.id).await.unwrap();
    assert!(matches!(
        db.get_tenant(&a.id).await,
        Err(DbError::NotFound(_))
    ));
    assert!(
        db.find_active_key_by_hash("hash-a1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(db.list_api_keys(&a.id, None, 100).await.unwrap().is_empty());
    assert!(
        db.find_active_key_by_hash("hash-b1")
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        db.delete_tenant(&a.id).await,
        Err(DbError::NotFound(_))
    ));
}

#[tokio::test]
async fn sqlite_passes_the_repository_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("fc.db").display());
    let db = Db::connect(&url, 4).await.unwrap();
    assert_eq!(db.backend(), Backend::Sqlite);
    repository_suite(&db).await;
    db.close().await;
    // Migrations are idempotent: reopening the same file runs nothing new and loses nothing.
    let db = Db::connect(&url, 4).await.unwrap();
    assert_eq!(db.list_tenants(None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn postgres_passes_the_repository_suite() {
    let pg = PgDatabase::create().await;
    let db = Db::connect(&pg.url, 4).await.unwrap();
    assert_eq!(db.backend(), Backend::Postgres);
    repository_suite(&db).await;
    db.close().await;
    let db = Db::connect(&pg.url, 4).await.unwrap();
    assert_eq!(db.list_tenants(None, 10).await.unwrap().len(), 1);
    db.close().await;
}
