//! Playback security against a real server: tenants' RS256/ES256 signing keys, every class of
//! bad token, playback rules (max resolution, referrer, country), entitlements, the audit
//! log, rate limits, and master-key rotation with a real broadcast that still plays in
//! ffprobe and headless Chromium afterwards.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::media::{Encrypted, browser_play, eventually, ffmpeg_publish, ffprobe};
use common::paid::{MASTER, Media, audit_entries, get_key, media_with, playback_token};
use common::{PgDatabase, TestServer};
use ferrocast::config::{Config, DatabaseUrl};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn now() -> u64 {
    ferrocast::clock::unix_now()
}

/// A signed live stream that has been live.
async fn media(server: &TestServer, tenant_id: &str, tenant_key: &str) -> Media {
    media_with(server, tenant_id, tenant_key, "signed").await
}

struct SigningKey {
    id: String,
    alg: Algorithm,
    encoding: EncodingKey,
}

async fn signing_key(server: &TestServer, tenant_key: &str, algorithm: &str) -> SigningKey {
    let (status, k) = server
        .call(
            "POST",
            "/v1/signing-keys",
            Some(tenant_key),
            Some(json!({ "algorithm": algorithm })),
        )
        .await;
    assert_eq!(status, 201, "{k}");
    assert_eq!(k["algorithm"], algorithm);
    let pem = k["private_key"].as_str().unwrap();
    let (alg, encoding) = match algorithm {
        "ES256" => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        ),
        _ => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        ),
    };
    SigningKey {
        id: k["id"].as_str().unwrap().into(),
        alg,
        encoding,
    }
}

impl SigningKey {
    fn sign(&self, claims: Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.id.clone());
        jsonwebtoken::encode(&h, &claims, &self.encoding).unwrap()
    }
}

fn claims(playback_id: &str) -> Value {
    json!({"sub": playback_id, "aud": "v", "exp": now() + 600})
}

/// Status of a GET with optional extra headers.
async fn status_of(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = server.client.get(server.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_signed_tokens_play_and_every_bad_token_is_denied() {
    let server =
        TestServer::start_with(|c| c.playback.country_header = "CF-IPCountry".into()).await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let (other_id, other_key) = server.create_tenant("Other").await;
    let m = media(&server, &tenant_id, &key).await;
    let m2 = media(&server, &tenant_id, &key).await;
    let foreign = media(&server, &other_id, &other_key).await;
    let master = |t: &str| format!("/hls/{}/master.m3u8?token={t}", m.playback_id);

    for algorithm in ["RS256", "ES256"] {
        let sk = signing_key(&server, &key, algorithm).await;
        let good = sk.sign(claims(&m.playback_id));
        assert_eq!(
            status_of(&server, &master(&good), &[]).await,
            200,
            "{algorithm}"
        );
        let (status, bytes) = get_key(&server, &m, &good).await;
        assert_eq!((status, bytes), (200, m.key.clone()), "{algorithm}");
    }

    let sk = signing_key(&server, &key, "ES256").await;
    let good = sk.sign(claims(&m.playback_id));
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims(&m.playback_id);
    c["exp"] = json!(now() + 3000);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );
    let unknown_kid = SigningKey {
        id: "0190c0de-0000-7000-8000-000000000000".into(),
        ..signing_key(&server, &key, "ES256").await
    }
    .sign(claims(&m.playback_id));
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, sk.id)),
        parts[1]
    );
    let expired = sk.sign(json!({"sub": m.playback_id, "aud": "v", "exp": now() - 5}));
    let too_long = sk.sign(json!({"sub": m.playback_id, "aud": "v", "exp": now() + 30 * 86400}));
    let other_playback = sk.sign(claims(&m2.playback_id));
    let thumbnail_aud = sk.sign(json!({"sub": m.playback_id, "aud": "t", "exp": now() + 600}));
    let other_tenant_key = signing_key(&server, &other_key, "ES256").await;
    let foreign_signed = other_tenant_key.sign(claims(&m.playback_id));
    let denied: [(&str, &str, u16); 9] = [
        ("tampered signature", &tampered, 401),
        ("unknown kid", &unknown_kid, 401),
        ("alg none", &alg_none, 401),
        ("expired", &expired, 403),
        ("lifetime over the maximum", &too_long, 401),
        ("another playback id", &other_playback, 403),
        ("thumbnail audience", &thumbnail_aud, 403),
        ("another tenant's key", &foreign_signed, 401),
        ("not a JWT", "abc.def.ghi", 401),
    ];
    for (what, token, want) in denied {
        assert_eq!(
            status_of(&server, &master(token), &[]).await,
            want,
            "playlist: {what}"
        );
        assert_eq!(get_key(&server, &m, token).await.0, want, "key: {what}");
    }
    // The other tenant's own media does not open with this tenant's good token.
    assert_eq!(get_key(&server, &foreign, &good).await.0, 403);
    // A playback token is not a thumbnail token, and the other way round.
    let thumb = format!("/thumbnails/{}.jpg?token={good}", m.playback_id);
    assert_eq!(status_of(&server, &thumb, &[]).await, 403);

    // Referrer allow-list: checked against Origin / Referer.
    let mut c = claims(&m.playback_id);
    c["referrer"] = json!(["video.example.com", "*.acme.tv"]);
    let t = sk.sign(c);
    assert_eq!(
        status_of(&server, &master(&t), &[]).await,
        403,
        "no referrer"
    );
    assert_eq!(
        status_of(
            &server,
            &master(&t),
            &[("Referer", "https://evil.example/x")]
        )
        .await,
        403
    );
    assert_eq!(
        status_of(
            &server,
            &master(&t),
            &[("Referer", "https://video.example.com/p")]
        )
        .await,
        200
    );
    assert_eq!(
        status_of(&server, &master(&t), &[("Origin", "https://www.acme.tv")]).await,
        200
    );

    // Country allow-list: from the trusted CF-IPCountry header.
    let mut c = claims(&m.playback_id);
    c["country"] = json!(["NO", "se"]);
    let t = sk.sign(c);
    assert_eq!(
        status_of(&server, &master(&t), &[]).await,
        403,
        "unknown country"
    );
    assert_eq!(
        status_of(&server, &master(&t), &[("CF-IPCountry", "US")]).await,
        403
    );
    assert_eq!(
        status_of(&server, &master(&t), &[("CF-IPCountry", "SE")]).await,
        200
    );

    // max_resolution: renditions above it leave the master playlist and are refused.
    let mut c = claims(&m.playback_id);
    c["max_resolution"] = json!("720p");
    let t = sk.sign(c);
    let text = server
        .client
        .get(server.url(&master(&t)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("1080p/"), "{text}");
    assert!(
        text.contains("720p/index.m3u8?token=") && text.contains("360p/"),
        "{text}"
    );
    let rendition = |r: &str| format!("/hls/{}/{r}/index.m3u8?token={t}", m.playback_id);
    assert_eq!(status_of(&server, &rendition("1080p"), &[]).await, 403);
    assert_eq!(status_of(&server, &rendition("720p"), &[]).await, 200);
    // Ferrocast-minted tokens carry the same rules.
    let (status, minted) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": m.playback_id, "max_resolution": "360p"})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let t = minted["token"].as_str().unwrap();
    let text = server
        .client
        .get(server.url(&master(t)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("720p/") && text.contains("360p/"), "{text}");
    // A max_resolution that does not read is refused, at minting and in a tenant's token.
    let (status, _) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": m.playback_id, "max_resolution": "720pp"})),
        )
        .await;
    assert_eq!(status, 400);
    let mut c = claims(&m.playback_id);
    c["max_resolution"] = json!("720pp");
    assert_eq!(status_of(&server, &master(&sk.sign(c)), &[]).await, 401);

    // Revoking the key stops its tokens at once; the list keeps it, marked, without secrets.
    let (status, _) = server
        .call(
            "DELETE",
            &format!("/v1/signing-keys/{}", sk.id),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(status_of(&server, &master(&good), &[]).await, 401);
    assert_eq!(get_key(&server, &m, &good).await.0, 401);
    let (_, list) = server
        .call("GET", "/v1/signing-keys", Some(&key), None)
        .await;
    let listed = list["data"].as_array().unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|k| k.get("private_key").is_none()));
    let revoked = listed.iter().find(|k| k["id"] == sk.id.as_str()).unwrap();
    assert!(revoked["revoked_at"].is_string());
    // Another tenant cannot revoke it (or see it).
    let (status, _) = server
        .call(
            "DELETE",
            &format!("/v1/signing-keys/{}", other_tenant_key.id),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn only_a_verified_token_is_carried_into_playlists_and_it_cannot_add_lines() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let public = media_with(&server, &tenant_id, &key, "public").await;
    let signed = media(&server, &tenant_id, &key).await;
    let evil = "x\n#EXT-X-STREAM-INF:BANDWIDTH=9\nhttps://evil.example/s.m3u8";
    let encoded: String = url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
    let master = |m: &Media| format!("/hls/{}/master.m3u8", m.playback_id);

    // Public media: no token is verified, so none is carried, from the query, a bearer
    // header or the cookie.
    let (status, plain) = server.get_text(&master(&public)).await;
    assert_eq!(status, 200);
    assert_eq!(plain, MASTER);
    let (status, text) = server
        .get_text(&format!("{}?token={encoded}", master(&public)))
        .await;
    assert_eq!(
        (status, text.as_str()),
        (200, MASTER),
        "query token reflected"
    );
    for (header, value) in [
        ("authorization", format!("Bearer {encoded}")),
        ("cookie", format!("ferrocast_token={encoded}")),
    ] {
        let response = server
            .client
            .get(server.url(&master(&public)))
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), MASTER, "{header} reflected");
    }

    // Signed media: the token that verified is carried into every URI, and only it.
    let token = viewer_token(&server, &key, &signed.playback_id, "v1").await;
    let (status, text) = server
        .get_text(&format!("{}?token={token}", master(&signed)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(text.lines().count(), MASTER.lines().count(), "{text}");
    assert_eq!(
        text.matches(&format!("?token={token}\n")).count(),
        3,
        "{text}"
    );
    assert!(!text.contains("evil"));
    let (status, _) = server
        .get_text(&format!("{}?token={encoded}", master(&signed)))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_token_is_refused_before_its_nbf() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let m = media(&server, &tenant_id, &key).await;
    let sk = signing_key(&server, &key, "ES256").await;
    let with_nbf = |nbf: u64| {
        let mut c = claims(&m.playback_id);
        c["nbf"] = json!(nbf);
        sk.sign(c)
    };
    let master = |t: &str| format!("/hls/{}/master.m3u8?token={t}", m.playback_id);
    let year_ahead = with_nbf(now() + 365 * 86400);
    assert_eq!(status_of(&server, &master(&year_ahead), &[]).await, 403);
    assert_eq!(get_key(&server, &m, &year_ahead).await.0, 403);
    // A little ahead (another server's clock) and in the past both play.
    for nbf in [now() + 30, now() - 60] {
        let t = with_nbf(nbf);
        assert_eq!(status_of(&server, &master(&t), &[]).await, 200, "nbf {nbf}");
        assert_eq!(get_key(&server, &m, &t).await.0, 200, "nbf {nbf}");
    }
}

#[tokio::test]
async fn a_token_that_does_not_verify_is_401_and_names_nothing_in_the_audit_log() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let m = media(&server, &tenant_id, &key).await;
    // Signed with a secret nobody holds; its sub is long and holds HTML.
    let sub = format!("<img src=x onerror=alert(1)>{}", "a".repeat(5000));
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "aud": "v", "exp": now() + 600}),
        &EncodingKey::from_secret(&[7; 32]),
    )
    .unwrap();
    assert_eq!(get_key(&server, &m, &forged).await.0, 401);
    // The same forgery naming the real playback id: 401 too, not "another playback id".
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&m.playback_id),
        &EncodingKey::from_secret(&[7; 32]),
    )
    .unwrap();
    assert_eq!(get_key(&server, &m, &forged).await.0, 401);
    server.state.audit.flush().await;
    let (_, denials) = server
        .call("GET", "/v1/audit?type=key_denial", Some(&key), None)
        .await;
    let denials = denials["data"].as_array().unwrap();
    assert_eq!(denials.len(), 2, "{denials:?}");
    for d in denials {
        assert_eq!(d["reason"], "invalid_token");
        assert!(d["playback_id"].is_null(), "unverified claim logged: {d}");
    }
}

/// A live stream's broadcast and the recording asset made of it play the same media.
#[tokio::test]
async fn a_recording_locked_down_is_locked_under_the_live_streams_id_too() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let live = media_with(&server, &tenant_id, &key, "public").await;
    let (_, streams) = server
        .call("GET", "/v1/live-streams", Some(&key), None)
        .await;
    let stream = &streams["data"][0];
    let prefix = format!(
        "tenants/{tenant_id}/live/{}/b1/",
        stream["id"].as_str().unwrap()
    );
    let recording_pb = ferrocast::ids::new_playback_id();
    server
        .state
        .jobs
        .db
        .create_asset(
            &tenant_id,
            stream["id"].as_str(),
            &recording_pb,
            ferrocast::db::PlaybackPolicy::Public,
            ferrocast::db::AssetStatus::Ready,
            Some(&prefix),
        )
        .await
        .unwrap();
    let master = format!("/hls/{}/master.m3u8", live.playback_id);
    let key_url = format!("/keys/{}", live.key_id);
    assert_eq!(status_of(&server, &master, &[]).await, 200);
    assert_eq!(status_of(&server, &key_url, &[]).await, 200);

    set_rules(
        &server,
        &key,
        &recording_pb,
        json!({"policy": "signed", "requires_entitlement": true}),
    )
    .await;
    // Neither id plays it, nor hands out its key, without a token...
    for pb in [&live.playback_id, &recording_pb] {
        let path = format!("/hls/{pb}/720p/index.m3u8");
        assert_eq!(status_of(&server, &path, &[]).await, 401, "{pb}");
    }
    assert_eq!(status_of(&server, &master, &[]).await, 401);
    assert_eq!(status_of(&server, &key_url, &[]).await, 401);
    // ...nor to a token of either id whose viewer has no entitlement.
    for pb in [&live.playback_id, &recording_pb] {
        let t = viewer_token(&server, &key, pb, "mallory").await;
        assert_eq!(get_key(&server, &live, &t).await.0, 403, "{pb}");
    }
    // An entitled viewer of the recording gets its key.
    entitle(&server, &key, &recording_pb, "alice").await;
    let alice = viewer_token(&server, &key, &recording_pb, "alice").await;
    assert_eq!(
        get_key(&server, &live, &alice).await,
        (200, live.key.clone())
    );
    // An entitlement to the live stream's id plays the same media under the recording's.
    entitle(&server, &key, &live.playback_id, "carol").await;
    let carol = viewer_token(&server, &key, &recording_pb, "carol").await;
    assert_eq!(get_key(&server, &live, &carol).await.0, 200);
    // The live stream's own rules are its own: it still says public.
    let (_, own) = server
        .call(
            "PATCH",
            &format!("/v1/playback-ids/{}", live.playback_id),
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(own["policy"], "public", "{own}");
}

/// Stills show the content in the clear: for paid media they follow the key's entitlement
/// rule. The poster, the frame a buy page shows, needs only the token.
#[tokio::test]
async fn stills_of_paid_media_need_an_entitlement_except_the_poster() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let pb = ferrocast::ids::new_playback_id();
    let asset = server
        .state
        .jobs
        .db
        .create_asset(
            &tenant_id,
            None,
            &pb,
            ferrocast::db::PlaybackPolicy::Signed,
            ferrocast::db::AssetStatus::Ready,
            None,
        )
        .await
        .unwrap();
    server
        .state
        .jobs
        .db
        .finish_asset(
            &asset.id,
            ferrocast::db::AssetStatus::Ready,
            Some(10_000),
            None,
        )
        .await
        .unwrap();
    // Stills already rendered, so that nothing but access decides the answer.
    for name in ["poster.jpg", "thumbnails/1000_320.jpg", "storyboard.vtt"] {
        server
            .state
            .jobs
            .store
            .put(
                &ferrocast::storage::ObjectKey::parse(&format!("{}{name}", asset.storage_prefix))
                    .unwrap(),
                bytes::Bytes::from_static(b"still"),
                "image/jpeg",
            )
            .await
            .unwrap();
    }
    set_rules(&server, &key, &pb, json!({"requires_entitlement": true})).await;
    let token = |aud: &'static str, viewer: Option<&'static str>| {
        let server = &server;
        let key = key.clone();
        let pb = pb.clone();
        async move {
            let mut body = json!({"playback_id": pb, "audience": aud});
            if let Some(v) = viewer {
                body["viewer"] = json!(v);
            }
            let (status, t) = server
                .call("POST", "/v1/playback-tokens", Some(&key), Some(body))
                .await;
            assert_eq!(status, 201, "{t}");
            t["token"].as_str().unwrap().to_string()
        }
    };
    let thumb = |t: &str| format!("/thumbnails/{pb}.jpg?time=1&width=320&token={t}");
    let poster = |t: &str| format!("/thumbnails/{pb}.jpg?token={t}");
    let board = |t: &str| format!("/storyboards/{pb}.vtt?token={t}");
    let (t_anon, t_bob) = (token("t", None).await, token("t", Some("bob")).await);
    let s_bob = token("s", Some("bob")).await;
    assert_eq!(
        status_of(&server, &thumb(&t_anon), &[]).await,
        403,
        "no viewer"
    );
    assert_eq!(
        status_of(&server, &thumb(&t_bob), &[]).await,
        403,
        "not entitled"
    );
    assert_eq!(
        status_of(&server, &board(&s_bob), &[]).await,
        403,
        "not entitled"
    );
    assert_eq!(
        status_of(&server, &poster(&t_anon), &[]).await,
        200,
        "the poster"
    );
    assert_eq!(status_of(&server, &poster("x"), &[]).await, 401);
    entitle(&server, &key, &pb, "bob").await;
    assert_eq!(status_of(&server, &thumb(&t_bob), &[]).await, 200);
    assert_eq!(status_of(&server, &board(&s_bob), &[]).await, 200);
    // The same stills are not reachable as if they were a rendition's files.
    let v_bob = token("v", Some("bob")).await;
    let beside = format!("/hls/{pb}/thumbnails/1000_320.jpg?token={v_bob}");
    assert_eq!(status_of(&server, &beside, &[]).await, 404);
    // Public but paid: the same rule, a token is needed for the frames.
    set_rules(&server, &key, &pb, json!({"policy": "public"})).await;
    let bare = format!("/thumbnails/{pb}.jpg?time=1&width=320");
    assert_eq!(status_of(&server, &bare, &[]).await, 401);
    assert_eq!(status_of(&server, &thumb(&t_bob), &[]).await, 200);
    // Paid frames are never cached for anyone else, even on public media.
    let response = server
        .client
        .get(server.url(&thumb(&t_bob)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "private, max-age=3600");
    assert_eq!(
        status_of(&server, &format!("/thumbnails/{pb}.jpg"), &[]).await,
        200
    );
}

/// WebRTC plays the content in the clear: paid live streams need the entitlement there too.
#[tokio::test]
async fn whep_playback_of_paid_media_needs_an_entitlement() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let m = media(&server, &tenant_id, &key).await;
    set_rules(
        &server,
        &key,
        &m.playback_id,
        json!({"requires_entitlement": true}),
    )
    .await;
    let bob = viewer_token(&server, &key, &m.playback_id, "bob").await;
    let offer = |token: &str| {
        server
            .client
            .post(server.url(&format!("/whep/{}?token={token}", m.playback_id)))
            .header("content-type", "application/sdp")
            .body("v=0\r\n")
            .send()
    };
    assert_eq!(offer(&bob).await.unwrap().status(), 403);
    entitle(&server, &key, &m.playback_id, "bob").await;
    // Entitled, the offer itself is judged next (and this one is not an offer).
    assert_eq!(offer(&bob).await.unwrap().status(), 400);
}

/// The probe's slow-header flood, with real sockets: connections that never finish their
/// headers are capped per address, make room at the global cap, and are closed after the
/// header-read timeout; meanwhile `/healthz` and media are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_http_requests_cannot_hold_the_server() {
    let server = TestServer::start_with(|c| {
        c.http.max_connections = 64;
        c.http.max_pending_per_ip = 8;
        c.http.header_read_timeout_s = 3;
    })
    .await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let m = media_with(&server, &tenant_id, &key, "public").await;
    let addr: std::net::SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();

    // 300 from one address: 8 are let in, the rest closed at once.
    let unfinished = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";
    let mut one = common::stalled_connections(addr, [127, 0, 0, 2], 300, unfinished).await;
    let closed = common::closed_within(&mut one, Duration::from_millis(300)).await;
    assert!(
        one.len() - closed <= 8,
        "{} of {} kept open",
        one.len() - closed,
        one.len()
    );
    // From many addresses, more than the server holds.
    let mut many = Vec::new();
    for host in 3..=12u8 {
        many.extend(common::stalled_connections(addr, [127, 0, 0, host], 8, unfinished).await);
    }
    // At the cap, a new viewer is still served: the oldest silent connection makes room.
    let fresh = reqwest::Client::new();
    for path in [
        "/healthz".to_string(),
        format!("/hls/{}/master.m3u8", m.playback_id),
    ] {
        let response = fresh.get(server.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // The unfinished ones are all closed once the header-read timeout has passed.
    let started = std::time::Instant::now();
    let still_open = many.len() + one.len();
    let closed = common::closed_within(&mut many, Duration::from_secs(6)).await
        + common::closed_within(&mut one, Duration::from_secs(1)).await;
    assert_eq!(closed, still_open, "closed within {:?}", started.elapsed());
    server.stop().await;
}

/// What a viewer is told never names where things are stored.
#[tokio::test]
async fn errors_shown_to_viewers_name_no_storage_keys() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let m = media_with(&server, &tenant_id, &key, "public").await;
    for path in [
        format!("/hls/{}/999p/index.m3u8", m.playback_id),
        format!("/hls/{}/720p/seg_00001.ts", m.playback_id),
        format!("/hls/{}/subtitles/xx.vtt", m.playback_id),
        format!("/hls/{}/a%20b/index.m3u8", m.playback_id),
        format!("/thumbnails/{}.jpg", m.playback_id),
        format!("/storyboards/{}.vtt", m.playback_id),
    ] {
        let (status, text) = server.get_text(&path).await;
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(
            !text.contains("tenants/") && !text.contains(&tenant_id),
            "{path}: {text}"
        );
    }
}

/// Sets a playback id's rules (`PATCH /v1/playback-ids/{id}`); returns them.
async fn set_rules(server: &TestServer, key: &str, playback_id: &str, rules: Value) -> Value {
    let (status, body) = server
        .call(
            "PATCH",
            &format!("/v1/playback-ids/{playback_id}"),
            Some(key),
            Some(rules),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Gives `viewer` an entitlement to `playback_id`.
async fn entitle(server: &TestServer, key: &str, playback_id: &str, viewer: &str) {
    let (status, e) = server
        .call(
            "POST",
            "/v1/entitlements",
            Some(key),
            Some(json!({"playback_id": playback_id, "viewer": viewer})),
        )
        .await;
    assert_eq!(status, 201, "{e}");
}

async fn viewer_token(server: &TestServer, key: &str, playback_id: &str, viewer: &str) -> String {
    let (status, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(key),
            Some(json!({"playback_id": playback_id, "viewer": viewer})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

async fn entitlements_and_audit(server: &TestServer) {
    let (tenant_id, key) = server.create_tenant("Paid").await;
    let m = media(server, &tenant_id, &key).await;
    let alice = viewer_token(server, &key, &m.playback_id, "alice").await;
    assert_eq!(
        get_key(server, &m, &alice).await.0,
        200,
        "no entitlement needed yet"
    );

    let rules = set_rules(
        server,
        &key,
        &m.playback_id,
        json!({"requires_entitlement": true}),
    )
    .await;
    assert_eq!(rules["requires_entitlement"], true);
    assert_eq!(rules["policy"], "signed");
    assert_eq!(get_key(server, &m, &alice).await.0, 403, "no entitlement");
    let anonymous = {
        let (_, t) = server
            .call(
                "POST",
                "/v1/playback-tokens",
                Some(&key),
                Some(json!({"playback_id": m.playback_id})),
            )
            .await;
        t["token"].as_str().unwrap().to_string()
    };
    assert_eq!(
        get_key(server, &m, &anonymous).await.0,
        403,
        "no viewer in the token"
    );

    let (status, e) = server
        .call(
            "POST",
            "/v1/entitlements",
            Some(&key),
            Some(json!({"playback_id": m.playback_id, "viewer": "alice"})),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    let (status, bytes) = get_key(server, &m, &alice).await;
    assert_eq!((status, bytes), (200, m.key.clone()));
    let bob = viewer_token(server, &key, &m.playback_id, "bob").await;
    assert_eq!(
        get_key(server, &m, &bob).await.0,
        403,
        "alice's entitlement is not bob's"
    );
    let (status, _) = server
        .call(
            "DELETE",
            &format!("/v1/entitlements/{}", e["id"].as_str().unwrap()),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(get_key(server, &m, &alice).await.0, 403, "revoked");

    // A public playback id that needs an entitlement still needs a token for its key.
    set_rules(server, &key, &m.playback_id, json!({"policy": "public"})).await;
    let no_token = server
        .client
        .get(server.url(&format!("/keys/{}", m.key_id)))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    assert_eq!(no_token.headers()["cache-control"], "no-store, private");

    // Every decision is in the tenant's audit log, with who and why.
    server.state.audit.flush().await;
    let (status, grants) = server
        .call("GET", "/v1/audit?type=key_grant", Some(&key), None)
        .await;
    assert_eq!(status, 200, "{grants}");
    let grants = grants["data"].as_array().unwrap().clone();
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert!(
        grants
            .iter()
            .all(|g| g["result"] == "granted" && g["key_id"] == m.key_id.as_str())
    );
    assert_eq!(grants[1]["viewer"], "alice");
    assert_eq!(grants[1]["playback_id"], m.playback_id.as_str());
    assert_eq!(grants[1]["client_ip"], "127.0.0.1");
    let (_, denials) = server
        .call("GET", "/v1/audit?type=key_denial", Some(&key), None)
        .await;
    let reasons: Vec<&str> = denials["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "no_entitlement",
            "no_viewer",
            "no_entitlement",
            "no_entitlement",
            "no_token"
        ]
    );
    // Tenants see only their own log.
    let (_, other_key) = server.create_tenant("Nosy").await;
    let (_, theirs) = server
        .call("GET", "/v1/audit", Some(&other_key), None)
        .await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 0);
    let (status, _) = server
        .call("GET", "/v1/audit?type=bogus", Some(&key), None)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entitlements_gate_keys_and_the_audit_log_says_why_sqlite() {
    let server = TestServer::start().await;
    entitlements_and_audit(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entitlements_gate_keys_and_the_audit_log_says_why_postgres() {
    let pg = PgDatabase::create().await;
    let url = pg.url.clone();
    let server = TestServer::start_with(|c| c.database.url = DatabaseUrl::new(url)).await;
    entitlements_and_audit(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_endpoint_rate_limits_per_address_and_per_viewer() {
    let server = TestServer::start_with(|c| {
        c.playback.key_rate_per_ip = 0.1;
        c.playback.key_burst_per_ip = 6;
        c.playback.key_rate_per_viewer = 0.1;
        c.playback.key_burst_per_viewer = 3;
    })
    .await;
    let (tenant_id, key) = server.create_tenant("Busy").await;
    let m = media(&server, &tenant_id, &key).await;
    let (_, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": m.playback_id, "viewer": "v1"})),
        )
        .await;
    let token = t["token"].as_str().unwrap();
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(get_key(&server, &m, token).await.0);
        }
        v
    };
    assert_eq!(statuses, [200, 200, 200, 429], "per viewer");
    let resp = server
        .client
        .get(server.url(&format!("/keys/{}?token={token}", m.key_id)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    // Five requests so far from 127.0.0.1; the sixth is the burst's last, then 429.
    let (_, t2) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": m.playback_id, "viewer": "v2"})),
        )
        .await;
    let t2 = t2["token"].as_str().unwrap();
    assert_eq!(get_key(&server, &m, t2).await.0, 200);
    assert_eq!(get_key(&server, &m, t2).await.0, 429, "per address");
    server.stop().await;
}

/// Runs the `ferrocast` binary against the test server's folders.
fn ferrocast_cli(config: &Config, args: &[&str]) -> (bool, String) {
    let out = common::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_ferrocast"))
            .args(args)
            .env("FERROCAST_DATA_DIR", &config.data_dir)
            .env("FERROCAST_KEYS_DIR", &config.keys.dir),
        std::time::Duration::from_secs(60),
        "the ferrocast CLI",
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_rewraps_every_key_while_serving_and_recordings_still_play() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(dir.path());
    let server = TestServer::start_config(config.clone()).await;
    let (tenant_id, key) = server.create_tenant("Rotating").await;
    let (status, s) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&key),
            Some(json!({"reconnect_window_s": 0, "record": true})),
        )
        .await;
    assert_eq!(status, 201);
    let publish = format!(
        "{}/{}",
        s["rtmp_url"].as_str().unwrap(),
        s["stream_key"].as_str().unwrap()
    );
    let mut ffmpeg = ffmpeg_publish(&publish, 640, 360, 8);
    assert!(ffmpeg.wait(Duration::from_secs(40)).await, "ffmpeg failed");
    let asset = eventually("the recording", Duration::from_secs(20), || async {
        let assets = server
            .state
            .jobs
            .db
            .list_assets(&tenant_id, None, 10)
            .await
            .unwrap();
        assets
            .into_iter()
            .find(|a| a.status == ferrocast::db::AssetStatus::Ready)
    })
    .await;
    let sk = signing_key(&server, &key, "RS256").await;
    let token = sk
        .sign(json!({"sub": asset.playback_id, "aud": "v", "exp": now() + 600, "viewer": "carol"}));
    let media_playlist = server
        .client
        .get(server.url(&format!(
            "/hls/{}/source/index.m3u8?token={token}",
            asset.playback_id
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key_uri = media_playlist
        .split("URI=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("an EXT-X-KEY URI")
        .to_string();
    let fetch_key = || async {
        let r = server.client.get(&key_uri).send().await.unwrap();
        let status = r.status();
        let body = r.bytes().await.unwrap().to_vec();
        assert_eq!(status, 200, "{key_uri}: {}", String::from_utf8_lossy(&body));
        body
    };
    let before = fetch_key().await;
    let old_kek = server.state.jobs.content_keys.current_kek_id();

    // Rotate with the CLI while the server runs.
    let (ok, out) = ferrocast_cli(&config, &["keys", "rotate-master"]);
    assert!(ok, "{out}");
    assert!(out.contains("re-wrapped"), "{out}");
    let per_kek = server.state.jobs.db.content_keys_per_kek().await.unwrap();
    assert_eq!(per_kek.len(), 1, "{per_kek:?}");
    assert_ne!(per_kek[0].0, old_kek, "every key is under the new KEK");
    assert!(per_kek[0].1 >= 1);
    // The running server finds the new KEK by itself and hands out the same key.
    assert_eq!(fetch_key().await, before);
    assert!(
        dir.path().join("keys/previous").read_dir().unwrap().count() == 1,
        "the old master key is kept until retired"
    );
    let (ok, out) = ferrocast_cli(&config, &["keys", "retire-previous"]);
    assert!(
        !ok && out.contains("retry in"),
        "too soon after rotating: {out}"
    );

    // The recording still plays: ffprobe decrypts it, Chromium plays it with the tenant's
    // RS256 token, and a viewer without the entitlement it now needs gets no key.
    let probe = ffprobe(&server.url(&format!(
        "/hls/{}/master.m3u8?token={token}",
        asset.playback_id
    )))
    .await;
    let seconds: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(seconds > 5.0, "{probe}");
    let played = browser_play(
        &server.url(&format!("/play/{}?token={token}", asset.playback_id)),
        5,
        40,
    )
    .await;
    played.assert_plays(5.0, Encrypted::Yes);
    set_rules(
        &server,
        &key,
        &asset.playback_id,
        json!({"requires_entitlement": true}),
    )
    .await;
    let denied = browser_play(
        &server.url(&format!("/play/{}?token={token}", asset.playback_id)),
        2,
        15,
    )
    .await;
    // The page says a purchase is needed instead of starting a player, and the key itself
    // is refused to that token whatever page asks for it.
    assert_eq!(denied.state, "purchase_required", "{denied:?}");
    assert!(
        denied.current_time == 0.0 && !denied.key_loaded,
        "{denied:?}"
    );
    let r = server.client.get(&key_uri).send().await.unwrap();
    assert_eq!(r.status(), 403, "{key_uri}");

    // No content key is in clear anywhere on disk, before or after the rotation.
    server.assert_nowhere_on_disk(&before).await;

    // A restart reads the new master key and serves the same key (carol is entitled now).
    entitle(&server, &key, &asset.playback_id, "carol").await;
    server.stop().await;

    let server = TestServer::start_config(config.clone()).await;
    let port_key_uri = key_uri.replace(key_uri.split("/keys/").next().unwrap(), &server.base);
    let r = server.client.get(&port_key_uri).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), before);
    let (ok, out) = ferrocast_cli(&config, &["keys", "status"]);
    assert!(ok && out.contains("previous master keys: 1"), "{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_country_header_the_geoip_database_says_where_the_viewer_is() {
    let dir = tempfile::tempdir().unwrap();
    let mmdb = dir.path().join("countries.mmdb");
    let mut writer = mmdb_writer::Writer::new("GeoLite2-Country");
    writer
        .insert(
            "127.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
            &json!({"country": {"iso_code": "NO"}}),
        )
        .unwrap();
    std::fs::write(&mmdb, writer.to_bytes().unwrap()).unwrap();
    let path = mmdb.display().to_string();
    let server = TestServer::start_with(|c| c.playback.geoip_mmdb = path).await;
    let (tenant_id, key) = server.create_tenant("Nordic").await;
    let m = media(&server, &tenant_id, &key).await;
    let sk = signing_key(&server, &key, "ES256").await;
    let master = |t: &str| format!("/hls/{}/master.m3u8?token={t}", m.playback_id);
    let mut c = claims(&m.playback_id);
    c["country"] = json!(["NO"]);
    let norway = sk.sign(c.clone());
    assert_eq!(status_of(&server, &master(&norway), &[]).await, 200);
    assert_eq!(get_key(&server, &m, &norway).await.0, 200);
    c["country"] = json!(["SE", "DK"]);
    let elsewhere = sk.sign(c);
    assert_eq!(status_of(&server, &master(&elsewhere), &[]).await, 403);
    assert_eq!(get_key(&server, &m, &elsewhere).await.0, 403);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clearkey_licence_gives_keys_by_the_rules_of_keys_and_is_audited() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Licensed").await;
    let media = media_with(&server, &tenant_id, &key, "signed").await;
    let other = media_with(&server, &tenant_id, &key, "signed").await;
    let token = |playback_id: String, viewer: Option<&'static str>| {
        let (server, key) = (&server, key.clone());
        async move { playback_token(server, &key, &playback_id, viewer).await }
    };
    let license = |playback_id: String, token: Option<String>, body: Value| {
        let server = &server;
        async move {
            let q = token.map(|t| format!("?token={t}")).unwrap_or_default();
            let r = server
                .client
                .post(server.url(&format!("/licenses/clearkey/{playback_id}{q}")))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.headers()["cache-control"], "no-store, private");
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let asks = json!({"kids": [media.key_id], "type": "temporary"});
    let pb = media.playback_id.clone();

    // A token for the media: the key, as a JSON Web Key.
    let t = token(pb.clone(), None).await;
    let (status, l) = license(pb.clone(), Some(t.clone()), asks.clone()).await;
    assert_eq!(status, 200, "{l}");
    assert_eq!(l["type"], "temporary");
    assert_eq!(l["keys"][0]["kty"], "oct");
    assert_eq!(l["keys"][0]["kid"], media.key_id.as_str());
    let k = URL_SAFE_NO_PAD
        .decode(l["keys"][0]["k"].as_str().unwrap())
        .unwrap();
    assert_eq!(k, media.key);

    // No token; a token of other media; the key asked through another playback id.
    assert_eq!(license(pb.clone(), None, asks.clone()).await.0, 401);
    let other_token = token(other.playback_id.clone(), None).await;
    assert_eq!(
        license(pb.clone(), Some(other_token.clone()), asks.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        license(other.playback_id.clone(), Some(other_token), asks.clone())
            .await
            .0,
        403
    );
    // Requests that are not licence requests.
    for bad in [
        json!({"kids": []}),
        json!({"kids": ["not-a-key-id"]}),
        json!({"kids": [media.key_id], "type": "persistent-license"}),
        json!({"kids": vec![media.key_id.clone(); 17]}),
    ] {
        assert_eq!(license(pb.clone(), Some(t.clone()), bad).await.0, 400);
    }
    assert_eq!(
        license(
            pb.clone(),
            Some(t.clone()),
            json!({"kids": ["AAAAAAAAAAAAAAAAAAAAAA"]})
        )
        .await
        .0,
        404
    );

    // Paid: only a viewer holding the entitlement.
    let (status, _) = server
        .call(
            "PATCH",
            &format!("/v1/playback-ids/{pb}"),
            Some(&key),
            Some(json!({"requires_entitlement": true})),
        )
        .await;
    assert_eq!(status, 200);
    let ann = token(pb.clone(), Some("ann")).await;
    assert_eq!(
        license(pb.clone(), Some(ann.clone()), asks.clone()).await.0,
        403
    );
    let (status, _) = server
        .call(
            "POST",
            "/v1/entitlements",
            Some(&key),
            Some(json!({"playback_id": pb, "viewer": "ann"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(license(pb.clone(), Some(ann), asks.clone()).await.0, 200);

    // A player on another site asks across origins: the preflight lets it POST.
    let r = server
        .client
        .request(
            reqwest::Method::OPTIONS,
            server.url(&format!("/licenses/clearkey/{pb}")),
        )
        .header("origin", "https://player.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-methods"], "POST, OPTIONS");

    // Every decision is in the audit log, as for /keys.
    let denials = audit_entries(&server, &key, "key_denial").await;
    let reasons: Vec<&str> = denials
        .iter()
        .filter(|e| e["key_id"] == media.key_id.as_str())
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for reason in ["no_token", "no_entitlement"] {
        assert!(reasons.contains(&reason), "{reason} not in {reasons:?}");
    }
    let grants = audit_entries(&server, &key, "key_grant").await;
    let ours = grants
        .iter()
        .filter(|e| e["key_id"] == media.key_id.as_str());
    assert!(ours.count() >= 2, "{grants:?}");
    server.stop().await;
}

/// A DRM vendor's licence server: records what it gets, answers with a canned licence.
async fn fake_vendor() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(HeaderMapLite, Vec<u8>)>>>,
) {
    use axum::routing::post;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/wv",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let log = log.clone();
                async move {
                    let lite: HeaderMapLite = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    log.lock().unwrap().push((lite, body.to_vec()));
                    (
                        [("content-type", "application/octet-stream")],
                        b"LICENCE-FOR-THE-CDM".to_vec(),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/wv", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(120), axum::serve(listener, app)).await;
    });
    (url, seen)
}

type HeaderMapLite = std::collections::HashMap<String, String>;

#[tokio::test]
async fn the_licence_proxy_forwards_a_challenge_only_for_an_entitled_viewer() {
    let (vendor, seen) = fake_vendor().await;
    // A port nothing listens on: the FairPlay vendor is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = TestServer::start_with(|c| {
        c.licences.widevine_url = vendor.clone();
        c.licences.fairplay_url = format!("http://{closed}/fps");
        c.licences.auth_header = ferrocast::config::Secret::new("X-Vendor-Key: s3cret");
    })
    .await;
    let (tenant_id, key) = server.create_tenant("Studio").await;
    let media = media_with(&server, &tenant_id, &key, "signed").await;
    let pb = media.playback_id.clone();
    let token = |viewer: &'static str| playback_token(&server, &key, &pb, Some(viewer));
    let challenge = b"\x08\x04CHALLENGE-FROM-THE-CDM".to_vec();
    let ask = |system: &str, token: Option<String>, body: Vec<u8>| {
        let q = token.map(|t| format!("?token={t}")).unwrap_or_default();
        server
            .client
            .post(server.url(&format!("/licenses/{system}/{pb}{q}")))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    let (status, _) = server
        .call(
            "PATCH",
            &format!("/v1/playback-ids/{pb}"),
            Some(&key),
            Some(json!({"requires_entitlement": true})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ask("widevine", None, challenge.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        ask("widevine", Some(token("bob").await), challenge.clone())
            .await
            .unwrap()
            .status(),
        403
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the vendor for refused viewers"
    );

    let (status, _) = server
        .call(
            "POST",
            "/v1/entitlements",
            Some(&key),
            Some(json!({"playback_id": pb, "viewer": "ann"})),
        )
        .await;
    assert_eq!(status, 201);
    let ann = token("ann").await;
    let r = ask("widevine", Some(ann.clone()), challenge.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store, private");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"LICENCE-FOR-THE-CDM");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (headers, body) = &seen[0];
        assert_eq!(body, &challenge, "the challenge as the CDM made it");
        assert_eq!(headers["x-vendor-key"], "s3cret");
        assert_eq!(headers["x-ferrocast-viewer"], "ann");
        assert_eq!(headers["x-ferrocast-playback-id"], pb);
    }
    // Not configured, unknown, empty, too big, and a vendor that is down.
    for (system, body, status) in [
        ("playready", challenge.clone(), 404),
        ("betamax", challenge.clone(), 404),
        ("widevine", Vec::new(), 400),
        ("widevine", vec![0; 70 << 10], 400),
        ("fairplay", challenge.clone(), 503),
    ] {
        let got = ask(system, Some(ann.clone()), body).await.unwrap().status();
        assert_eq!(got, status, "{system}");
    }

    let denials = audit_entries(&server, &key, "key_denial").await;
    let reasons: Vec<&str> = denials
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for reason in [
        "widevine: no_token",
        "widevine: no_entitlement",
        "fairplay: licence server unreachable",
    ] {
        assert!(reasons.contains(&reason), "{reason} not in {reasons:?}");
    }
    server.stop().await;
}

/// Guessing keys: past 20 wrong ones in a minute, an address's keys are refused unread (429
/// with the seconds left), whatever it sends (API keys, publishable keys, WHIP stream keys),
/// while other addresses go on as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_guessing_keys_is_refused_unread_for_the_minute_and_others_are_not() {
    let server =
        TestServer::start_with(|c| c.playback.client_ip_header = "x-forwarded-for".into()).await;
    let (_, key) = server.create_tenant("Guessed").await;
    let from = |ip: &'static str, bearer: String| {
        server
            .client
            .get(server.url("/v1/live-streams"))
            .header("x-forwarded-for", ip)
            .bearer_auth(bearer)
            .send()
    };
    for i in 0..20 {
        let r = from("203.0.113.9", format!("fc_guess_{i:040}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "guess {i}");
    }
    // The 21st, and even the right key from that address: refused unread.
    for bearer in ["fc_guess_21".to_string(), key.clone()] {
        let r = from("203.0.113.9", bearer).await.unwrap();
        assert_eq!(r.status(), 429);
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    // Another address is not held up, and its right key works.
    assert_eq!(
        from("198.51.100.4", key.clone()).await.unwrap().status(),
        200
    );
    assert_eq!(
        from("198.51.100.4", "fc_one_wrong".into())
            .await
            .unwrap()
            .status(),
        401
    );

    // Stream keys over WHIP count the same way, from their own address.
    let offer = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/webrtc/chromium_offer.sdp"
    ))
    .unwrap();
    let whip = |stream_key: String| {
        server
            .client
            .post(server.url(&format!("/whip/{stream_key}")))
            .header("x-forwarded-for", "2001:db8:7::1")
            .header("content-type", "application/sdp")
            .body(offer.clone())
            .send()
    };
    for i in 0..20 {
        assert_eq!(
            whip(format!("wrong-key-{i}")).await.unwrap().status(),
            401,
            "guess {i}"
        );
    }
    assert_eq!(whip("wrong-key-21".into()).await.unwrap().status(), 429);
    // The same /64 is the same client.
    let r = server
        .client
        .get(server.url("/v1/live-streams"))
        .header("x-forwarded-for", "2001:db8:7::beef")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains("ferrocast_wrong_keys_total{kind=\"stream key\"} 20")
            && metrics.contains("ferrocast_wrong_keys_blocked_total{kind=\"API key\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}
