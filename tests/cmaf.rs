//! CMAF packaging end to end: ffmpeg publishes over RTMP to a live stream packaged as CMAF;
//! the HLS playlists and the DASH manifest list the same encrypted fragments; ffmpeg decrypts
//! a fragment with the key Ferrocast's ClearKey licence gives (an independent CENC reader);
//! hls.js and dash.js play it in Chromium with that licence, and play nothing for a viewer
//! without the entitlement.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::TestServer;
use common::media::{browser_script, eventually, ffmpeg_publish};
use serde_json::{Value, json};

async fn token(server: &TestServer, key: &str, playback_id: &str, viewer: &str) -> String {
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

/// The attribute `name="…"` of the first line holding `marker`.
fn attribute<'a>(text: &'a str, marker: &str, name: &str) -> &'a str {
    let line = text
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} in {text}"));
    line.split(&format!("{name}=\""))
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cmaf_live_stream_plays_encrypted_in_hls_js_and_dash_js_with_the_clearkey_licence() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Cmaf").await;
    let (status, s) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&key),
            Some(json!({"playback_policy": "signed", "packaging": "cmaf", "record": true, "reconnect_window_s": 0})),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["packaging"], "cmaf");
    let id = s["playback_id"].as_str().unwrap().to_string();
    // Paid: the key goes only to viewers with the entitlement.
    let (status, _) = server
        .call(
            "PATCH",
            &format!("/v1/playback-ids/{id}"),
            Some(&key),
            Some(json!({"requires_entitlement": true})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .call(
            "POST",
            "/v1/entitlements",
            Some(&key),
            Some(json!({"playback_id": id, "viewer": "ann"})),
        )
        .await;
    assert_eq!(status, 201);
    let ann = token(&server, &key, &id, "ann").await;
    let bob = token(&server, &key, &id, "bob").await;
    let url = format!(
        "{}/{}",
        s["rtmp_url"].as_str().unwrap(),
        s["stream_key"].as_str().unwrap()
    );
    let mut ffmpeg = ffmpeg_publish(&url, 854, 480, 120);

    let master = eventually(
        "the CMAF master playlist",
        Duration::from_secs(40),
        || async {
            let (status, text) = server
                .get_text(&format!("/hls/{id}/master.m3u8?token={ann}"))
                .await;
            (status == 200).then_some(text)
        },
    )
    .await;
    assert!(
        master.contains("#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8?token="),
        "{master}"
    );
    assert!(
        master.contains(",mp4a.40.2\"") && master.contains("AUDIO=\"audio\""),
        "{master}"
    );
    let media = eventually("two fragments", Duration::from_secs(20), || async {
        let (_, text) = server
            .get_text(&format!("/hls/{id}/360p/index.m3u8?token={ann}"))
            .await;
        (text.matches(".m4s").count() >= 2).then_some(text)
    })
    .await;
    assert!(
        media.contains("#EXT-X-MAP:URI=\"init.mp4?token="),
        "{media}"
    );
    let kid_b64 =
        attribute(&media, "#EXT-X-KEY", "URI").trim_start_matches("data:text/plain;base64,");
    assert!(
        media.contains("METHOD=SAMPLE-AES,") && media.contains("KEYFORMAT=\"org.w3.clearkey\""),
        "{media}"
    );
    let kid = base64::engine::general_purpose::STANDARD
        .decode(kid_b64)
        .unwrap();

    // The DASH manifest lists the same files, with this server's licence and clock.
    let (status, mpd) = server
        .get_text(&format!("/dash/{id}/manifest.mpd?token={ann}"))
        .await;
    assert_eq!(status, 200, "{mpd}");
    assert!(mpd.contains("type=\"dynamic\""), "{mpd}");
    assert_eq!(attribute(&mpd, "<UTCTiming", "value"), server.url("/time"));
    assert!(
        mpd.contains(&format!(
            "<dashif:Laurl>{}?token={ann}</dashif:Laurl>",
            server.url(&format!("/licenses/clearkey/{id}"))
        )),
        "{mpd}"
    );
    assert!(
        mpd.contains("initialization=\"360p/init.mp4?token=") && mpd.contains("id=\"audio\""),
        "{mpd}"
    );
    let (status, time) = server.get_text("/time").await;
    assert_eq!(status, 200);
    let at = chrono::DateTime::parse_from_rfc3339(&time)
        .unwrap()
        .timestamp_millis();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((at - now).abs() < 5000, "{time}");
    assert_eq!(
        server.get_text(&format!("/dash/{id}/manifest.mpd")).await.0,
        401
    );

    // The licence gives the key to ann, not to bob, and not without a token.
    let kids = json!({"kids": [URL_SAFE_NO_PAD.encode(&kid)], "type": "temporary"});
    let licence = |t: Option<&str>| {
        let q = t.map(|t| format!("?token={t}")).unwrap_or_default();
        server
            .client
            .post(server.url(&format!("/licenses/clearkey/{id}{q}")))
            .json(&kids)
            .send()
    };
    assert_eq!(licence(None).await.unwrap().status(), 401);
    assert_eq!(licence(Some(&bob)).await.unwrap().status(), 403);
    let keys: Value = licence(Some(&ann)).await.unwrap().json().await.unwrap();
    let content_key = URL_SAFE_NO_PAD
        .decode(keys["keys"][0]["k"].as_str().unwrap())
        .unwrap();

    // ffmpeg's own CENC reader decrypts a fragment with that key: every frame decodes.
    let dir = tempfile::tempdir().unwrap();
    let server_ref = &server;
    let fetch = |path: String| async move {
        let r = server_ref
            .client
            .get(server_ref.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.bytes().await.unwrap()
    };
    let sequence: u64 = media
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .map_or(0, |n| n.parse().unwrap());
    let file = dir.path().join("360p.mp4");
    let bytes = [
        fetch(format!("/dash/{id}/360p/init.mp4?token={ann}")).await,
        fetch(format!("/dash/{id}/360p/{sequence}.m4s?token={ann}")).await,
    ]
    .concat();
    std::fs::write(&file, &bytes).unwrap();
    let decode = |key: Option<&[u8]>| {
        let mut cmd = std::process::Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error"]);
        if let Some(k) = key {
            cmd.args(["-decryption_key", &hex::encode(k)]);
        }
        cmd.arg("-i")
            .arg(&file)
            .args(["-f", "framemd5", "-"])
            .output()
            .unwrap()
    };
    let out = decode(Some(&content_key));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "decrypted frames decode cleanly: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert!(frames >= 50, "{frames} frames in a 2 s fragment at 30 fps");
    let garbled = decode(None);
    assert!(
        !garbled.stderr.is_empty(),
        "without the key the frames do not decode"
    );

    // LL-HLS: parts, blocking reloads and their limits.
    let path = |q: &str| format!("/hls/{id}/360p/index.m3u8?token={ann}{q}");
    let (status, live) = server.get_text(&path("")).await;
    assert_eq!(status, 200);
    for tag in [
        "#EXT-X-PART-INF:PART-TARGET=0.334",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,CAN-SKIP-UNTIL=12.0",
        "#EXT-X-PART:DURATION=",
        "#EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8?token=",
    ] {
        assert!(live.contains(tag), "{tag} in {live}");
    }
    let hint = attribute(&live, "#EXT-X-PRELOAD-HINT", "URI");
    let (msn, part) = hint
        .split('?')
        .next()
        .unwrap()
        .trim_end_matches(".m4s")
        .split_once('.')
        .unwrap();
    let (msn, part): (u64, u64) = (msn.parse().unwrap(), part.parse().unwrap());
    let asked = std::time::Instant::now();
    let (status, blocked) = server
        .get_text(&path(&format!("&_HLS_msn={msn}&_HLS_part={part}")))
        .await;
    let held = asked.elapsed();
    assert_eq!(status, 200, "{blocked}");
    assert!(
        blocked.contains(&format!("URI=\"{msn}.{part}.m4s?token=")),
        "{blocked}"
    );
    assert!(
        held < Duration::from_millis(1500),
        "answered once the part was cut: {held:?}"
    );
    let hinted = server
        .client
        .get(server.url(&format!(
            "/hls/{id}/360p/{msn}.{}.m4s?token={ann}",
            part + 1
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        hinted.status(),
        200,
        "the next part is held until it exists"
    );
    assert!(
        hinted
            .bytes()
            .await
            .unwrap()
            .windows(4)
            .any(|w| w == b"senc"),
        "an encrypted chunk"
    );
    assert_eq!(server.get_text(&path("&_HLS_part=1")).await.0, 400);
    assert_eq!(
        server
            .get_text(&path(&format!("&_HLS_msn={}", msn + 5)))
            .await
            .0,
        400
    );
    assert_eq!(
        server
            .get_text(&path(&format!("&_HLS_msn={msn}&_HLS_part={}", part + 9)))
            .await
            .0,
        400
    );

    // Chromium: the /play page, and hls.js and dash.js on another site, play it with the
    // licence; bob's players (on the partner site: his /play page offers a purchase) play
    // nothing.
    let seen = browser_script(
        "cmaf_play.cjs",
        vec![server.url(""), id.clone(), ann.clone(), bob.clone()],
        200,
    )
    .await;
    assert_eq!(seen["error"], Value::Null, "{seen}");
    assert_eq!(
        seen["hls"]["lowLatency"], true,
        "hls.js plays the parts: {seen}"
    );
    let latency = seen["hls"]["latency"].as_f64().unwrap();
    let behind = seen["hls"]["behindIngest"].as_f64().unwrap();
    eprintln!(
        "hls.js plays the LL-HLS stream {latency:.2} s behind its live edge, \
         {behind:.2} s after the server received the frame"
    );
    assert!(latency < 3.0, "hls.js {latency} s behind the live edge");
    // The recording's playlists by now list more than CAN-SKIP-UNTIL (12 s): a delta
    // update skips the oldest.
    let (status, delta) = server.get_text(&path("&_HLS_skip=YES")).await;
    assert_eq!(status, 200);
    assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="), "{delta}");
    let full = server.get_text(&path("")).await.1;
    assert!(delta.matches("#EXTINF").count() < full.matches("#EXTINF").count());
    ffmpeg.kill();
    for player in ["play", "hls", "dash"] {
        let run = &seen[player];
        assert!(
            run["advanced"].as_f64().unwrap() >= 4.0,
            "{player} plays: {seen}"
        );
        assert!(
            run["licences"].as_array().unwrap().contains(&json!(200)),
            "{player}: {seen}"
        );
    }
    for player in ["hls", "dash"] {
        let denied = &seen[format!("{player}Denied")];
        assert_eq!(
            denied["frames"], 0,
            "{player} without the entitlement: {seen}"
        );
        assert!(
            denied["licences"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s == 403),
            "{seen}"
        );
        assert!(
            !denied["licences"].as_array().unwrap().is_empty(),
            "{player} asked: {seen}"
        );
    }
    server.stop().await;
}
