//! Paid media for tests: a live stream that has been live, with its playlists and a content
//! key in place (no broadcast needed), and its key fetched with a token.

use serde_json::json;

use super::TestServer;

pub const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:3\n\
#EXT-X-STREAM-INF:BANDWIDTH=6000000,RESOLUTION=1920x1080,CODECS=\"avc1.640028,mp4a.40.2\"\n1080p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720,CODECS=\"avc1.4d401f,mp4a.40.2\"\n720p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.42c01e,mp4a.40.2\"\n360p/index.m3u8\n";

/// A live stream that has been live: its master playlist and a content key in place.
pub struct Media {
    pub playback_id: String,
    pub key_id: String,
    pub key: Vec<u8>,
}

/// A live stream of `policy` that has been live.
pub async fn media_with(
    server: &TestServer,
    tenant_id: &str,
    tenant_key: &str,
    policy: &str,
) -> Media {
    let (status, s) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(tenant_key),
            Some(json!({"playback_policy": policy})),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    let id = s["id"].as_str().unwrap();
    let prefix = format!("tenants/{tenant_id}/live/{id}/b1/");
    assert!(
        server
            .state
            .jobs
            .db
            .try_activate_live_stream(id, &prefix)
            .await
            .unwrap()
    );
    let state = &server.state;
    state
        .jobs
        .store
        .put(
            &ferrocast::storage::ObjectKey::parse(&format!("{prefix}master.m3u8")).unwrap(),
            bytes::Bytes::from_static(MASTER.as_bytes()),
            "application/vnd.apple.mpegurl",
        )
        .await
        .unwrap();
    for r in ["1080p", "720p", "360p"] {
        state
            .jobs
            .store
            .put(
                &ferrocast::storage::ObjectKey::parse(&format!("{prefix}{r}/index.m3u8")).unwrap(),
                bytes::Bytes::from_static(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n"),
                "application/vnd.apple.mpegurl",
            )
            .await
            .unwrap();
    }
    let (key_id, key) = state
        .jobs
        .content_keys
        .create(tenant_id, &prefix)
        .await
        .unwrap();
    Media {
        playback_id: s["playback_id"].as_str().unwrap().into(),
        key_id,
        key: key.to_vec(),
    }
}

pub async fn get_key(server: &TestServer, m: &Media, token: &str) -> (u16, Vec<u8>) {
    let resp = server
        .client
        .get(server.url(&format!("/keys/{}?token={token}", m.key_id)))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

/// A playback token (`POST /v1/playback-tokens`) for `playback_id`, naming `viewer`.
pub async fn playback_token(
    server: &TestServer,
    tenant_key: &str,
    playback_id: &str,
    viewer: Option<&str>,
) -> String {
    let (status, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(tenant_key),
            Some(json!({"playback_id": playback_id, "viewer": viewer})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

/// The tenant's audit entries of `kind` (`key_grant`, `key_denial`), once every decision
/// made so far is written.
pub async fn audit_entries(
    server: &TestServer,
    tenant_key: &str,
    kind: &str,
) -> Vec<serde_json::Value> {
    server.state.audit.flush().await;
    let (status, page) = server
        .call(
            "GET",
            &format!("/v1/audit?type={kind}"),
            Some(tenant_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().clone()
}

/// One finished view of `playback_id` (viewinit, play, playing, viewend: 8 s of watching),
/// sent as a player's beacon batch and written (the aggregator flushed).
pub async fn watched(server: &TestServer, playback_id: &str, view_id: &str) {
    let now = ferrocast::clock::now_ms();
    let batch = serde_json::json!({"view_id": view_id, "playback_id": playback_id,
        "player": {"name": "test", "version": "1"},
        "events": [{"seq": 1, "type": "viewinit", "t": now - 9000}, {"seq": 2, "type": "play", "t": now - 8000},
            {"seq": 3, "type": "playing", "t": now - 7000}, {"seq": 4, "type": "viewend", "t": now - 1000}]});
    let sent = server
        .client
        .post(server.url("/v1/beacons"))
        .header("content-type", "application/json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    server.state.analytics.flush().await;
}
