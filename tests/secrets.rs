//! No secret in the logs: a `ferrocast serve` logging at `debug` for every crate (its own,
//! hyper's, sqlx's, GStreamer's bindings) is handed every kind of secret the way clients hand
//! them (admin and API keys in headers, stream keys over RTMP, playback tokens in queries and
//! headers, webhook signing secrets, a tenant's private signing key, content keys), with a
//! failed guess of each kind beside them, and its whole log is then searched for every one.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::media::{eventually, ffmpeg_publish};
use common::process::KillOnDrop;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_token_stream_key_or_signing_secret_reaches_the_logs_at_debug_level() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, rtmp_port) = (common::free_port(), common::free_port());
    let admin = "fc_admin_secrets_test_0123456789abcdef0123456789".to_string();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferrocast"))
            .arg("serve")
            .env("FERROCAST_DATA_DIR", dir.path().join("data"))
            .env("FERROCAST_KEYS_DIR", dir.path().join("keys"))
            .env("FERROCAST_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
            .env("FERROCAST_RTMP_LISTEN", format!("127.0.0.1:{rtmp_port}"))
            .env("FERROCAST_ADMIN_KEY", &admin)
            .env("FERROCAST_LOG_FILTER", "debug")
            .env("FERROCAST_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("ferrocast serve starts"),
    );
    let base = format!("http://127.0.0.1:{http_port}");
    let client = common::http_client();
    let call = |method: &str, path: &str, key: &str, body: Option<Value>| {
        let mut req = client
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    eventually("the server to serve", Duration::from_secs(30), || async {
        let r = client.get(format!("{base}/healthz")).send().await;
        r.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await;

    // What must never be logged, named for the failure message.
    let mut secrets: Vec<(&str, String)> = vec![("the admin key", admin.clone())];
    let (status, tenant) = call(
        "POST",
        "/v1/tenants",
        &admin,
        Some(json!({"name": "Quiet"})),
    )
    .await;
    assert_eq!(status, 201, "{tenant}");
    let key = tenant["api_key"].as_str().unwrap().to_string();
    secrets.push(("a tenant's API key", key.clone()));
    let wrong_key = "fc_live_not_a_real_key_0123456789abcdef";
    assert_eq!(
        call("GET", "/v1/live-streams", wrong_key, None).await.0,
        401
    );
    secrets.push(("a guessed API key", wrong_key.into()));
    let (status, extra) = call("POST", "/v1/api-keys", &key, Some(json!({"name": "ci"}))).await;
    assert_eq!(status, 201, "{extra}");
    secrets.push((
        "a second API key",
        extra["api_key"].as_str().unwrap().into(),
    ));

    let (status, signing) = call(
        "POST",
        "/v1/signing-keys",
        &key,
        Some(json!({"algorithm": "ES256"})),
    )
    .await;
    assert_eq!(status, 201, "{signing}");
    let pem = signing["private_key"].as_str().unwrap();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        secrets.push(("a line of a private signing key", line.into()));
    }
    let (status, hook) = call(
        "POST",
        "/v1/webhook-endpoints",
        &key,
        Some(json!({"url": format!("http://127.0.0.1:{}/hook", common::free_port()), "events": ["*"]})),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    secrets.push((
        "a webhook signing secret",
        hook["secret"].as_str().unwrap().into(),
    ));

    let (status, stream) = call(
        "POST",
        "/v1/live-streams",
        &key,
        Some(json!({"playback_policy": "signed", "record": false, "reconnect_window_s": 0})),
    )
    .await;
    assert_eq!(status, 201, "{stream}");
    let stream_key = stream["stream_key"].as_str().unwrap().to_string();
    let stream_id = stream["id"].as_str().unwrap().to_string();
    let id = stream["playback_id"].as_str().unwrap().to_string();
    secrets.push(("a stream key", stream_key.clone()));
    let rtmp = format!("rtmp://127.0.0.1:{rtmp_port}/live");
    let guess = "guessedStreamKey0123456789abcdef";
    let mut refused = ffmpeg_publish(&format!("{rtmp}/{guess}"), 320, 240, 2);
    assert!(
        !refused.wait_output(Duration::from_secs(30)).await.0,
        "a wrong stream key is refused"
    );
    secrets.push(("a guessed stream key", guess.into()));
    let mut ffmpeg = ffmpeg_publish(&format!("{rtmp}/{stream_key}"), 320, 240, 10);

    let (status, t) = call(
        "POST",
        "/v1/playback-tokens",
        &key,
        Some(json!({"playback_id": id, "viewer": "ann"})),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    let token = t["token"].as_str().unwrap().to_string();
    secrets.push(("a playback token", token.clone()));
    // The token in the query (as players send it), then in a header; a forged one too.
    let media = eventually("a media playlist", Duration::from_secs(40), || async {
        let master = client
            .get(format!("{base}/hls/{id}/master.m3u8?token={token}"))
            .send()
            .await
            .ok()?;
        let text = master.text().await.ok()?;
        let rendition = text
            .lines()
            .find(|l| l.contains("/index.m3u8"))?
            .to_string();
        let media = client
            .get(format!("{base}/hls/{id}/{rendition}"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        media.contains("#EXT-X-KEY").then_some(media)
    })
    .await;
    let key_uri = media
        .lines()
        .find(|l| l.starts_with("#EXT-X-KEY"))
        .and_then(|l| l.split("URI=\"").nth(1))
        .and_then(|l| l.split('"').next())
        .unwrap()
        .to_string();
    let content_key = client
        .get(&key_uri)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(content_key.len(), 16, "{key_uri}");
    secrets.push(("a content key (hex)", hex::encode(&content_key)));
    secrets.push((
        "a content key (base64)",
        base64::engine::general_purpose::STANDARD.encode(&content_key),
    ));
    let bare_key_uri = key_uri.split('?').next().unwrap();
    let by_header = client
        .get(bare_key_uri)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 200);
    let forged = format!("{}x", &token[..token.len() - 1]);
    let refused = client
        .get(format!("{bare_key_uri}?token={forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    secrets.push(("a forged playback token", forged));
    assert!(ffmpeg.wait(Duration::from_secs(60)).await, "ffmpeg ends");

    // SIGTERM, so that everything buffered is written out.
    common::output_within(
        Command::new("kill").args(["-TERM", &server.0.id().to_string()]),
        Duration::from_secs(10),
        "kill (Debian package procps)",
    );
    common::process::wait_within(&mut server.0, Duration::from_secs(30), "ferrocast to stop");
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("DEBUG") && text.lines().count() > 100,
        "the server logged at debug level: {} lines\n{}",
        text.lines().count(),
        &text[..text.len().min(3000)]
    );
    // The paths that carried the secrets were logged, only without them.
    for logged in [
        stream_id.as_str(),
        "path=/keys/",
        "path=/hls/",
        "publishing",
    ] {
        assert!(text.contains(logged), "{logged} is in the log");
    }
    for (what, secret) in &secrets {
        if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
            panic!("{what} is in the log: {line}");
        }
    }
}
