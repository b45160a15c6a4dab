//! One storage suite, run on the local-folder backend (behind a real server, which serves its
//! presigned URLs) and on the S3 backend against a real S3-compatible server (s3s-fs).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{S3Server, TestServer};
use ferrocast::storage::{ByteRange, ObjectKey, ObjectStore, Prefix, StorageError};

fn key(k: &str) -> ObjectKey {
    ObjectKey::parse(k).unwrap()
}

fn prefix(p: &str) -> Prefix {
    Prefix::parse(p).unwrap()
}

fn keys_of(list: &[ferrocast::storage::ObjectMeta]) -> Vec<&str> {
    list.iter().map(|m| m.key.as_str()).collect()
}

/// Everything a backend must do, the same way.
async fn storage_suite(store: &dyn ObjectStore) {
    store.check().await.expect("store is reachable");
    let body = Bytes::from_static(b"0123456789abcdefghij");

    // put, head, get
    let k = key("tenants/t1/live/seg_00001.ts");
    store.put(&k, body.clone(), "video/mp2t").await.unwrap();
    let meta = store.head(&k).await.unwrap();
    assert_eq!(meta.size, 20);
    assert!(meta.modified_ms > 0);
    let whole = store.get(&k, None).await.unwrap();
    assert_eq!(whole.body, body);
    assert_eq!(whole.range, None);
    assert_eq!(whole.meta.size, 20);

    // byte ranges
    let part = store.get(&k, Some(ByteRange::FromTo(2, 5))).await.unwrap();
    assert_eq!(&part.body[..], b"2345");
    assert_eq!(part.range, Some((2, 5)));
    assert_eq!(
        part.meta.size, 20,
        "a ranged read still reports the whole size"
    );
    let tail = store.get(&k, Some(ByteRange::From(15))).await.unwrap();
    assert_eq!(&tail.body[..], b"fghij");
    let suffix = store.get(&k, Some(ByteRange::Suffix(3))).await.unwrap();
    assert_eq!(&suffix.body[..], b"hij");
    assert_eq!(suffix.range, Some((17, 19)));
    let clipped = store
        .get(&k, Some(ByteRange::FromTo(18, 1000)))
        .await
        .unwrap();
    assert_eq!(&clipped.body[..], b"ij");
    assert!(matches!(
        store.get(&k, Some(ByteRange::From(20))).await,
        Err(StorageError::InvalidRange(_))
    ));

    // overwrite replaces
    store
        .put(&k, Bytes::from_static(b"new"), "video/mp2t")
        .await
        .unwrap();
    assert_eq!(&store.get(&k, None).await.unwrap().body[..], b"new");

    // missing objects
    let missing = key("tenants/t1/none.ts");
    assert!(matches!(
        store.get(&missing, None).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        store.head(&missing).await,
        Err(StorageError::NotFound(_))
    ));
    store
        .delete(&missing)
        .await
        .expect("deleting a missing object is not an error");

    // empty object
    let empty = key("tenants/t1/empty");
    store
        .put(&empty, Bytes::new(), "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(store.head(&empty).await.unwrap().size, 0);
    assert!(store.get(&empty, None).await.unwrap().body.is_empty());
    store.delete(&empty).await.unwrap();

    // list by prefix: sorted, exact prefix semantics (not folder semantics)
    for name in ["a/1.ts", "a/2.ts", "a/b/3.ts", "ab/4.ts", "b/5.ts"] {
        store
            .put(
                &key(&format!("p/{name}")),
                Bytes::from_static(b"x"),
                "video/mp2t",
            )
            .await
            .unwrap();
    }
    assert_eq!(
        keys_of(&store.list(&prefix("p/a/")).await.unwrap()),
        ["p/a/1.ts", "p/a/2.ts", "p/a/b/3.ts"]
    );
    assert_eq!(
        keys_of(&store.list(&prefix("p/a")).await.unwrap()),
        ["p/a/1.ts", "p/a/2.ts", "p/a/b/3.ts", "p/ab/4.ts"]
    );
    assert_eq!(
        keys_of(&store.list(&prefix("p/a/b/3")).await.unwrap()),
        ["p/a/b/3.ts"]
    );
    assert!(store.list(&prefix("p/zzz/")).await.unwrap().is_empty());
    let everything = store.list(&prefix("")).await.unwrap();
    assert!(keys_of(&everything).contains(&"tenants/t1/live/seg_00001.ts"));
    assert_eq!(
        everything
            .iter()
            .find(|m| m.key == key("p/b/5.ts"))
            .unwrap()
            .size,
        1
    );

    // delete by prefix removes exactly the prefix
    assert_eq!(store.delete_prefix(&prefix("p/a/")).await.unwrap(), 3);
    assert_eq!(
        keys_of(&store.list(&prefix("p/")).await.unwrap()),
        ["p/ab/4.ts", "p/b/5.ts"]
    );
    assert_eq!(store.delete_prefix(&prefix("p/")).await.unwrap(), 2);
    assert!(store.list(&prefix("p/")).await.unwrap().is_empty());
    assert_eq!(store.delete_prefix(&prefix("p/")).await.unwrap(), 0);

    // delete
    store.delete(&k).await.unwrap();
    assert!(matches!(
        store.head(&k).await,
        Err(StorageError::NotFound(_))
    ));

    // a large object (multipart on S3: threshold 6 MiB, parts of 5 MiB)
    let big: Vec<u8> = (0..13 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let big_key = key("tenants/t1/vod/original.mp4");
    store
        .put(&big_key, Bytes::from(big.clone()), "video/mp4")
        .await
        .unwrap();
    assert_eq!(store.head(&big_key).await.unwrap().size, big.len() as u64);
    let back = store.get(&big_key, None).await.unwrap();
    assert!(back.body == big, "large object came back different");
    let mid = store
        .get(
            &big_key,
            Some(ByteRange::FromTo(5 * 1024 * 1024 - 2, 5 * 1024 * 1024 + 1)),
        )
        .await
        .unwrap();
    assert_eq!(
        &mid.body[..],
        &big[5 * 1024 * 1024 - 2..=5 * 1024 * 1024 + 1]
    );

    presigned_urls(store).await;
    store.delete(&big_key).await.unwrap();

    // Files go in and out without passing through memory whole (multipart on S3).
    let dir = tempfile::tempdir().unwrap();
    let upload = dir.path().join("upload.bin");
    std::fs::write(&upload, &big).unwrap();
    let file_key = key("tenants/t1/vod/from-file.mp4");
    store
        .put_file(&file_key, &upload, "video/mp4")
        .await
        .unwrap();
    assert!(!upload.exists(), "the uploaded file is consumed");
    assert_eq!(store.head(&file_key).await.unwrap().size, big.len() as u64);
    let copy = dir.path().join("copy.bin");
    assert_eq!(
        store.get_to_file(&file_key, &copy).await.unwrap(),
        big.len() as u64
    );
    assert!(
        std::fs::read(&copy).unwrap() == big,
        "file came back different"
    );
    assert!(matches!(
        store
            .get_to_file(&key("tenants/t1/none.mp4"), &dir.path().join("x"))
            .await,
        Err(StorageError::NotFound(_))
    ));
    store.delete(&file_key).await.unwrap();
}

/// A presigned URL works with a plain HTTP client (whole and ranged), and fails once expired.
async fn presigned_urls(store: &dyn ObjectStore) {
    let http = common::http_client();
    let k = key("tenants/t1/presign/index.m3u8");
    store
        .put(
            &k,
            Bytes::from_static(b"#EXTM3U\n#EXT-X-VERSION:3\n"),
            "application/vnd.apple.mpegurl",
        )
        .await
        .unwrap();

    let url = store
        .presign_get(&k, Duration::from_secs(300))
        .await
        .unwrap();
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    assert_eq!(
        resp.bytes().await.unwrap(),
        &b"#EXTM3U\n#EXT-X-VERSION:3\n"[..]
    );
    let resp = http
        .get(&url)
        .header("Range", "bytes=0-6")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), &b"#EXTM3U"[..]);

    // Tampering with the signed key is refused.
    let forged = url.replacen("index.m3u8", "other.m3u8", 1);
    assert_eq!(
        http.get(&forged).send().await.unwrap().status(),
        403,
        "{forged}"
    );

    // Three seconds: a loaded machine (a build beside the tests) once took over one to sign
    // and send.
    let short = store.presign_get(&k, Duration::from_secs(3)).await.unwrap();
    assert_eq!(http.get(&short).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert_eq!(
        http.get(&short).send().await.unwrap().status(),
        403,
        "expired URL still works"
    );
    store.delete(&k).await.unwrap();
}

#[tokio::test]
async fn local_folder_backend_passes_the_storage_suite() {
    let server = TestServer::start().await;
    storage_suite(server.state.jobs.store.as_ref()).await;

    // Atomic writes leave no temp files behind, and nothing is stored outside the root.
    let root = server.data_dir.join("objects");
    let partial: Vec<_> = std::fs::read_dir(root.join(".partial")).unwrap().collect();
    assert!(partial.is_empty(), "temp files left behind: {partial:?}");
    server.stop().await;
}

#[tokio::test]
async fn s3_backend_passes_the_storage_suite_against_a_real_s3_server() {
    let s3 = S3Server::start();
    let store = s3.store("ferrocast-suite").await;
    storage_suite(&store).await;
}

#[tokio::test]
async fn an_unreachable_s3_server_is_reported_unavailable() {
    let mut s3 = S3Server::start();
    let store = s3.store("ferrocast-down").await;
    store.check().await.unwrap();
    s3.kill();
    assert!(matches!(
        store.check().await,
        Err(StorageError::Unavailable(_))
    ));
    let err = store
        .put(&key("a/b.ts"), Bytes::from_static(b"x"), "video/mp2t")
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Unavailable(_)), "{err}");
}
