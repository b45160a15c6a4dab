//! One repository suite, run on SQLite and on a fresh PostgreSQL database.

mod common;

use common::PgDatabase;
use ferrocast::db::{
    Backend, Db, DbError, LiveState, NewApiKey, NewLiveStream, PlaybackPolicy, Role,
    StoredContentKey,
};
use ferrocast::media::Packaging;

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

    live_suite(db, &a.id, &b.id).await;
    cleanup_suite(db, &b.id).await;

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

/// The clean-up of broadcasts that are not recorded: pending while they run, due after their
/// retention, and then the stream has nothing left to play.
async fn cleanup_suite(db: &Db, tenant: &str) {
    let s = db
        .create_live_stream(&NewLiveStream {
            tenant_id: tenant,
            stream_key: "key-cleanup",
            playback_id: "pbcleanup",
            ladder: "default",
            playback_policy: PlaybackPolicy::Public,
            reconnect_window_s: 0,
            record: false,
            packaging: Packaging::Ts,
            cenc_scheme: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(
        db.live_state_for_playback("pbcleanup").await.unwrap(),
        Some(LiveState::Offline)
    );
    let (one, two) = ("tenants/t/live/c/1/", "tenants/t/live/c/2/");
    assert!(db.try_activate_live_stream(&s.id, one).await.unwrap());
    assert_eq!(
        db.live_state_for_playback("pbcleanup").await.unwrap(),
        Some(LiveState::Live)
    );
    db.add_pending_live_cleanup(one, tenant, &s.id)
        .await
        .unwrap();
    // Pending: never due, and no time to wait for.
    assert!(db.due_live_cleanups(i64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(db.next_live_cleanup_due().await.unwrap(), None);
    db.set_live_idle(&s.id, None).await.unwrap();
    assert_eq!(
        db.live_state_for_playback("pbcleanup").await.unwrap(),
        Some(LiveState::Ended)
    );
    db.schedule_live_cleanup(one, tenant, &s.id, 5_000)
        .await
        .unwrap();
    db.schedule_live_cleanup(two, tenant, &s.id, 3_000)
        .await
        .unwrap();
    assert_eq!(db.next_live_cleanup_due().await.unwrap(), Some(3_000));
    assert_eq!(
        db.due_live_cleanups(2_999, 10).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(db.due_live_cleanups(4_000, 10).await.unwrap(), [two]);
    assert_eq!(db.due_live_cleanups(9_000, 1).await.unwrap(), [two]);
    assert_eq!(db.due_live_cleanups(9_000, 10).await.unwrap(), [two, one]);
    db.postpone_live_cleanup(two, 8_000).await.unwrap();
    assert_eq!(db.due_live_cleanups(6_000, 10).await.unwrap(), [one]);
    // A clean-up of another broadcast leaves the stream's current one alone.
    db.finish_live_cleanup(two).await.unwrap();
    assert_eq!(
        db.live_state_for_playback("pbcleanup").await.unwrap(),
        Some(LiveState::Ended)
    );
    db.finish_live_cleanup(one).await.unwrap();
    assert_eq!(
        db.live_state_for_playback("pbcleanup").await.unwrap(),
        Some(LiveState::Offline)
    );
    assert_eq!(db.next_live_cleanup_due().await.unwrap(), None);
    assert!(db.due_live_cleanups(i64::MAX, 10).await.unwrap().is_empty());
    db.delete_live_stream(tenant, &s.id).await.unwrap();
}

/// Live streams, assets, playback targets and content keys, scoped like everything else.
async fn live_suite(db: &Db, a: &str, b: &str) {
    let new = |tenant, key, playback| NewLiveStream {
        tenant_id: tenant,
        stream_key: key,
        playback_id: playback,
        ladder: "default",
        playback_policy: PlaybackPolicy::Signed,
        reconnect_window_s: 60,
        record: true,
        packaging: Packaging::Cmaf,
        cenc_scheme: Default::default(),
    };
    let s = db
        .create_live_stream(&new(a, "key-a", "pb-a"))
        .await
        .unwrap();
    assert_eq!(
        (
            s.status.as_str(),
            s.record,
            s.reconnect_window_s,
            s.packaging
        ),
        ("idle", true, 60, Packaging::Cmaf)
    );
    let dup = db.create_live_stream(&new(b, "key-a", "pb-b")).await;
    assert!(matches!(dup, Err(DbError::Conflict(_))), "{dup:?}");
    let sb = db
        .create_live_stream(&new(b, "key-b", "pb-b"))
        .await
        .unwrap();
    assert_eq!(
        db.find_live_stream_by_key("key-a")
            .await
            .unwrap()
            .unwrap()
            .id,
        s.id
    );
    assert!(db.find_live_stream_by_key("nope").await.unwrap().is_none());
    assert!(matches!(
        db.get_live_stream(b, &s.id).await,
        Err(DbError::NotFound(_))
    ));
    assert_eq!(db.list_live_streams(a, None, 10).await.unwrap().len(), 1);

    // One publisher at a time: activation succeeds once until the stream is idle again.
    assert!(
        db.try_activate_live_stream(&s.id, "tenants/a/live/x/1/")
            .await
            .unwrap()
    );
    assert!(
        !db.try_activate_live_stream(&s.id, "tenants/a/live/x/2/")
            .await
            .unwrap()
    );
    db.set_live_ingest(&s.id, r#"{"width":1280}"#)
        .await
        .unwrap();
    let active = db.get_live_stream(a, &s.id).await.unwrap();
    assert_eq!(
        (active.status.as_str(), active.ingest.as_deref()),
        ("active", Some(r#"{"width":1280}"#))
    );
    db.set_live_idle(&s.id, Some("pipeline stalled"))
        .await
        .unwrap();
    let idle = db.get_live_stream(a, &s.id).await.unwrap();
    assert_eq!(
        (idle.status.as_str(), idle.last_error.as_deref()),
        ("idle", Some("pipeline stalled"))
    );
    assert_eq!(idle.current_prefix.as_deref(), Some("tenants/a/live/x/1/"));
    assert!(
        db.try_activate_live_stream(&s.id, "tenants/a/live/x/1/")
            .await
            .unwrap()
    );
    assert_eq!(db.reset_active_live_streams().await.unwrap(), 1);
    let rekeyed = db.set_stream_key(a, &s.id, "key-a2").await.unwrap();
    assert_eq!(rekeyed.stream_key, "key-a2");
    assert!(matches!(
        db.set_stream_key(b, &s.id, "stolen").await,
        Err(DbError::NotFound(_))
    ));

    // Playback targets: a live stream's current broadcast, or an asset.
    let target = db.find_playback_target("pb-a").await.unwrap().unwrap();
    assert_eq!(
        (
            target.tenant_id.as_str(),
            target.policy,
            target.prefix.as_deref()
        ),
        (a, PlaybackPolicy::Signed, Some("tenants/a/live/x/1/"))
    );
    assert_eq!(
        db.find_playback_target("pb-b")
            .await
            .unwrap()
            .unwrap()
            .prefix,
        None
    );
    assert!(db.find_playback_target("pb-none").await.unwrap().is_none());
    let asset = db
        .create_asset(
            a,
            Some(&s.id),
            "pb-rec",
            PlaybackPolicy::Public,
            ferrocast::db::AssetStatus::Preparing,
            Some("tenants/a/live/x/1/"),
        )
        .await
        .unwrap();
    db.finish_asset(
        &asset.id,
        ferrocast::db::AssetStatus::Ready,
        Some(12_345),
        None,
    )
    .await
    .unwrap();
    let ready = db.get_asset(a, &asset.id).await.unwrap();
    assert_eq!(
        (
            ready.status.as_str(),
            ready.duration_ms,
            ready.source.as_str()
        ),
        ("ready", Some(12_345), "live")
    );
    assert!(matches!(
        db.get_asset(b, &asset.id).await,
        Err(DbError::NotFound(_))
    ));
    assert_eq!(db.list_assets(a, None, 10).await.unwrap().len(), 1);
    assert!(db.list_assets(b, None, 10).await.unwrap().is_empty());
    assert_eq!(
        db.find_playback_target("pb-rec")
            .await
            .unwrap()
            .unwrap()
            .policy,
        PlaybackPolicy::Public
    );
    let rules = db.scope_rules("tenants/a/live/x/1/").await.unwrap();
    // The public recording shares the signed broadcast's media: the strictest rule holds.
    assert_eq!((rules.owners, rules.signed), (2, true), "{rules:?}");
    assert!(!rules.public());
    let none = db.scope_rules("tenants/a/live/x/9/").await.unwrap();
    assert_eq!(none.owners, 0);
    assert!(!none.public());
    // A recording takes its broadcast's rules; an entitlement to either id plays both.
    db.set_playback_rules(a, "pb-a", None, Some(true))
        .await
        .unwrap();
    db.copy_rules_to_recording(&s.id, &asset.id).await.unwrap();
    let rec = db.find_playback_target("pb-rec").await.unwrap().unwrap();
    assert_eq!(
        (rec.policy, rec.requires_entitlement),
        (PlaybackPolicy::Signed, true)
    );
    let prefix = Some("tenants/a/live/x/1/");
    assert!(
        !db.has_entitlement_to_media(a, "pb-rec", prefix, "ann", true)
            .await
            .unwrap()
    );
    db.create_entitlement(a, "pb-a", "ann", None).await.unwrap();
    assert!(
        db.has_entitlement_to_media(a, "pb-rec", prefix, "ann", true)
            .await
            .unwrap()
    );
    assert!(
        !db.has_entitlement_to_media(b, "pb-rec", prefix, "ann", true)
            .await
            .unwrap()
    );
    assert!(
        !db.has_entitlement_to_media(a, "pb-rec", None, "ann", true)
            .await
            .unwrap()
    );
    db.set_playback_rules(a, "pb-a", None, Some(false))
        .await
        .unwrap();

    // Content keys are stored as given (wrapped by the caller) and deleted by scope.
    let ck = StoredContentKey {
        id: "kid-1".into(),
        tenant_id: a.into(),
        scope: "tenants/a/live/x/1/".into(),
        wrapped: "d3JhcHBlZA==".into(),
        kek_id: "local:0011".into(),
        created_at: 1,
    };
    db.insert_content_key(&ck).await.unwrap();
    assert_eq!(db.get_content_key("kid-1").await.unwrap(), Some(ck));
    assert_eq!(
        db.delete_content_keys("tenants/a/live/x/1/").await.unwrap(),
        1
    );
    assert!(db.get_content_key("kid-1").await.unwrap().is_none());

    jobs_suite(db, a, &asset.id).await;
    assert_eq!(db.delete_asset(a, &asset.id).await.unwrap().id, asset.id);
    db.delete_live_stream(a, &s.id).await.unwrap();
    assert!(matches!(
        db.delete_live_stream(a, &s.id).await,
        Err(DbError::NotFound(_))
    ));
    db.delete_live_stream(b, &sb.id).await.unwrap();
}

/// Uploads and the job queue: leases, heartbeats, expiry and retries.
async fn jobs_suite(db: &Db, tenant: &str, asset: &str) {
    let upload = db
        .create_upload(tenant, asset, 1000, r#"{"filename":"a.mp4"}"#, i64::MAX)
        .await
        .unwrap();
    assert_eq!((upload.received, upload.completed_at), (0, None));
    db.set_upload_received(&upload.id, 400).await.unwrap();
    assert_eq!(
        db.get_upload(tenant, &upload.id).await.unwrap().received,
        400
    );
    assert!(matches!(
        db.get_upload("other-tenant", &upload.id).await,
        Err(DbError::NotFound(_))
    ));
    assert_eq!(
        db.tenant_upload_bytes(tenant).await.unwrap(),
        1000,
        "unfinished uploads count toward the quota"
    );
    db.complete_upload(&upload.id).await.unwrap();
    assert!(
        db.get_upload(tenant, &upload.id)
            .await
            .unwrap()
            .completed_at
            .is_some()
    );
    let stale = db.create_upload(tenant, asset, 10, "{}", 5).await.unwrap();
    let expired = db.expired_uploads(10).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, stale.id);
    db.delete_upload(&stale.id).await.unwrap();

    assert_eq!(db.next_job_due().await.unwrap(), None, "an empty queue");
    let job = db.enqueue_job(tenant, asset, "transcode", 2).await.unwrap();
    assert_eq!((job.status.as_str(), job.attempts), ("queued", 0));
    assert_eq!(db.next_job_due().await.unwrap(), Some(job.run_after));
    let claimed = db
        .claim_job("w1", 60_000)
        .await
        .unwrap()
        .expect("a job to claim");
    assert_eq!(
        (
            claimed.id.as_str(),
            claimed.status.as_str(),
            claimed.attempts
        ),
        (job.id.as_str(), "running", 1)
    );
    assert_eq!(claimed.lease_owner.as_deref(), Some("w1"));
    assert_eq!(
        db.next_job_due().await.unwrap(),
        claimed.lease_expires_at,
        "an idle worker wakes when the lease runs out"
    );
    assert!(
        db.claim_job("w2", 60_000).await.unwrap().is_none(),
        "a leased job was claimed twice"
    );
    assert!(db.heartbeat_job(&job.id, "w1", 60_000, 420).await.unwrap());
    assert!(
        !db.heartbeat_job(&job.id, "w2", 60_000, 1).await.unwrap(),
        "a stranger extended the lease"
    );
    assert_eq!(
        db.latest_job_for_asset(asset)
            .await
            .unwrap()
            .unwrap()
            .progress_permille,
        420
    );

    // A worker that dies leaves a lease that expires; another worker takes the job.
    assert!(db.heartbeat_job(&job.id, "w1", -1, 500).await.unwrap());
    let retaken = db
        .claim_job("w2", 60_000)
        .await
        .unwrap()
        .expect("the expired lease");
    assert_eq!(
        (retaken.lease_owner.as_deref(), retaken.attempts),
        (Some("w2"), 2)
    );
    assert!(
        !db.heartbeat_job(&job.id, "w1", 60_000, 600).await.unwrap(),
        "the old worker lost its lease"
    );

    // Failures retry while attempts remain; the last one fails for good.
    let retry = db.fail_job(&job.id, "w2", "boom", 0).await.unwrap();
    assert!(!retry, "2 of 2 attempts used");
    let failed = db.get_job(&job.id).await.unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.error.as_deref()),
        ("failed", Some("boom"))
    );
    let again = db.enqueue_job(tenant, asset, "transcode", 3).await.unwrap();
    let c = db.claim_job("w3", 60_000).await.unwrap().unwrap();
    assert_eq!(c.id, again.id);
    assert!(db.fail_job(&c.id, "w3", "transient", 60_000).await.unwrap());
    assert!(
        db.claim_job("w3", 60_000).await.unwrap().is_none(),
        "a retry ran before its backoff"
    );
    let back = db.get_job(&again.id).await.unwrap();
    assert_eq!(back.status, ferrocast::db::JobStatus::Queued);
    assert_eq!(
        db.next_job_due().await.unwrap(),
        Some(back.run_after),
        "an idle worker wakes when the retry comes due"
    );
    // A retry due in a minute and a lease running out sooner: the sooner counts.
    let third = db.enqueue_job(tenant, asset, "transcode", 3).await.unwrap();
    let running = db.claim_job("w4", 1_000).await.unwrap().unwrap();
    assert_eq!(running.id, third.id);
    assert!(running.lease_expires_at.unwrap() < back.run_after);
    assert_eq!(db.next_job_due().await.unwrap(), running.lease_expires_at);
    db.delete_jobs_for_asset(asset).await.unwrap();
    assert!(db.latest_job_for_asset(asset).await.unwrap().is_none());
}

#[tokio::test]
async fn sqlite_passes_the_repository_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("fc.db").display());
    let db = Db::connect(&url, 4).await.unwrap();
    assert_eq!(db.backend(), Backend::Sqlite);
    repository_suite(&db).await;
    // The file holds wrapped keys and key hashes: this user's only, its WAL too.
    use std::os::unix::fs::PermissionsExt;
    let mode = |file: &str| {
        std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    for file in ["fc.db", "fc.db-wal"] {
        assert_eq!(mode(file), 0o600, "{file}: {:o}", mode(file));
    }
    db.close().await;
    // A file made readable by others is made private again when opened.
    std::fs::set_permissions(
        dir.path().join("fc.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // Migrations are idempotent: reopening the same file runs nothing new and loses nothing.
    let db = Db::connect(&url, 4).await.unwrap();
    assert_eq!(db.list_tenants(None, 10).await.unwrap().len(), 1);
    assert_eq!(mode("fc.db"), 0o600);
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
