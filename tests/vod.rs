//! VOD: a real tus client uploads files made by ffmpeg; jobs transcode them into the same
//! encrypted HLS ladder as live; ffprobe and headless Chromium play the result.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::TestServer;
use common::media::{
    Encrypted, browser_play, browser_play_with_headers, eventually, ffprobe, make_media, tus_upload,
};
use serde_json::Value;

fn mp4_720p(dir: &Path) -> PathBuf {
    make_media(
        dir,
        "talk.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    )
}

async fn only_asset(server: &TestServer, key: &str) -> Value {
    let (_, list) = server.call("GET", "/v1/assets", Some(key), None).await;
    let assets = list["data"].as_array().unwrap();
    assert_eq!(assets.len(), 1, "{list}");
    assets[0].clone()
}

async fn wait_until_settled(server: &TestServer, key: &str, id: &str, limit: Duration) -> Value {
    eventually("the asset to be ready or errored", limit, || async {
        let (_, a) = server
            .call("GET", &format!("/v1/assets/{id}"), Some(key), None)
            .await;
        matches!(a["status"].as_str(), Some("ready" | "errored")).then_some(a)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tus_upload_survives_a_killed_client_and_a_server_restart_then_plays_everywhere() {
    let media = tempfile::tempdir().unwrap();
    let file = mp4_720p(media.path());
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(
        size > 600 * 1024,
        "test file too small to interrupt: {size}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    // The country of a view comes from this header (as a CDN would set it).
    config.playback.country_header = "x-country".into();
    // Four thumbnail renders from one address, then one a hundred seconds.
    config.playback.thumbnail_render_burst_per_ip = 4;
    config.playback.thumbnail_renders_per_ip = 0.01;
    let server = TestServer::start_config(config.clone()).await;
    let admin = server.admin_key();
    let (status, tenant) = server
        .call(
            "POST",
            "/v1/tenants",
            Some(&admin),
            Some(serde_json::json!({"name": "Creators"})),
        )
        .await;
    assert_eq!(status, 201);
    let key = tenant["api_key"].as_str().unwrap().to_string();

    // The client is SIGKILLed after ~half the file, in the middle of a request.
    let first = tus_upload(&file, &server.url("/v1/uploads"), &key, size / 2, "");
    assert_eq!(first["finished"], false, "{first}");
    let upload_url = first["url"].as_str().expect("upload URL").to_string();
    let path = upload_url
        .split_once("/v1/uploads/")
        .map(|(_, id)| format!("/v1/uploads/{id}"))
        .unwrap();
    let asset = only_asset(&server, &key).await;
    assert_eq!(asset["status"], "uploading");
    assert_eq!(asset["filename"], "talk.mp4");
    server.stop().await;

    // The server restarts; the stored offset is still there and the client resumes from it.
    let server = TestServer::start_config(config).await;
    let head = server
        .client
        .head(server.url(&path))
        .bearer_auth(&key)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let offset: u64 = head.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(offset > 0 && offset < size, "offset {offset} of {size}");
    let second = tus_upload(
        &file,
        &server.url("/v1/uploads"),
        &key,
        0,
        &server.url(&path),
    );
    assert_eq!(second["finished"], true, "{second}");

    let asset_id = asset["id"].as_str().unwrap().to_string();
    let ready = wait_until_settled(&server, &key, &asset_id, Duration::from_secs(120)).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let duration = ready["duration_s"].as_f64().unwrap();
    assert!((9.5..=10.5).contains(&duration), "{duration}");
    assert_eq!(ready["media_info"]["video"]["width"], 1280);
    assert_eq!(ready["media_info"]["audio"]["codec"], "aac");

    // The same encrypted ladder as live: ffprobe sees every rendition through the key.
    let playback = ready["playback_id"].as_str().unwrap();
    let master = server.url(&format!("/hls/{playback}/master.m3u8"));
    let probe = ffprobe(&master).await;
    let mut heights: Vec<u64> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_type"] == "video")
        .map(|s| s["height"].as_u64().unwrap())
        .collect();
    heights.sort();
    heights.dedup();
    assert_eq!(heights, [360, 480, 720], "{probe}");
    let (_, media_playlist) = {
        let r = server
            .client
            .get(server.url(&format!("/hls/{playback}/480p/index.m3u8")))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    };
    assert!(
        media_playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD")
            && media_playlist.contains("METHOD=AES-128"),
        "{media_playlist}"
    );

    // The MP4 download is H.264/AAC with its index first (faststart).
    let prefix = format!(
        "tenants/{}/assets/{asset_id}/",
        tenant["id"].as_str().unwrap()
    );
    let mp4 = server
        .state
        .jobs
        .store
        .get(
            &ferrocast::storage::ObjectKey::parse(&format!("{prefix}download.mp4")).unwrap(),
            None,
        )
        .await
        .unwrap();
    let local = media.path().join("download.mp4");
    std::fs::write(&local, &mp4.body).unwrap();
    let probe = ffprobe(local.to_str().unwrap()).await;
    let codecs: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap())
        .collect();
    assert!(
        codecs.contains(&"h264") && codecs.contains(&"aac"),
        "{codecs:?}"
    );
    let moov = mp4.body.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = mp4.body.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov < mdat, "moov after mdat: not faststart");

    // And a browser plays it, its page reporting the view.
    let played = browser_play_with_headers(
        &server.url(&format!("/play/{playback}")),
        8,
        40,
        &[("x-country", "NL")],
    )
    .await;
    played.assert_plays(8.0, Encrypted::Yes);
    let view = common::reported_view(&server, &key, &played, true).await;
    assert_eq!(view["country"], "NL", "{view}");
    assert_eq!(view["playback_id"], playback);
    let cmcd = &view["cmcd"];
    assert!(cmcd["requests"].as_u64().unwrap() >= 3, "{cmcd}");
    assert!(cmcd["media_ms"].as_u64().unwrap() >= 6000, "{cmcd}");
    assert_eq!(view["playback_failure"], false);

    // A page with plain hls.js and CMCD v2 event reports (no Ferrocast script): a `cmcd`
    // view of its own, its startup close to what the page measured.
    let v2 = common::media::browser_cmcd_v2(&server.url(""), playback, 4, 40).await;
    assert!(
        v2["fatal"].is_null() && v2["playedS"].as_f64() >= Some(4.0),
        "{v2}"
    );
    let sid = v2["sessionId"].as_str().unwrap().to_string();
    let page_startup = v2["startupMs"].as_f64().unwrap();
    let view = eventually("the CMCD v2 view", Duration::from_secs(10), || async {
        server.state.analytics.flush().await;
        let (status, v) = server
            .call(
                "GET",
                &format!("/v1/analytics/views/{sid}"),
                Some(&key),
                None,
            )
            .await;
        (status == 200 && v["video_startup_time_ms"].is_number()).then_some(v)
    })
    .await;
    assert_eq!(view["sources"], serde_json::json!(["cmcd"]), "{view}");
    assert_eq!(view["player"], "cmcd 2", "{view}");
    let startup = view["video_startup_time_ms"].as_f64().unwrap();
    assert!(
        (startup - page_startup).abs() <= 0.2 * page_startup.max(250.0),
        "startup {startup} ms, the page measured {page_startup} ms: {view}"
    );
    assert!(
        view["watch_time_ms"].as_i64() >= Some(2000),
        "heartbeats every 2 s: {view}"
    );

    // ffmpeg reading the HLS sends no beacon and no CMCD: the server counts it from the
    // segments it fetched, as a `server` view with the minutes it got.
    let hls = server.url(&format!("/hls/{playback}/master.m3u8"));
    let out = tokio::task::spawn_blocking(move || {
        common::output_within(
            Command::new("ffmpeg").args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-i",
                &hls,
                "-c",
                "copy",
                "-f",
                "null",
                "-",
            ]),
            Duration::from_secs(60),
            "ffmpeg reading the HLS",
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let read = eventually("a server view", Duration::from_secs(10), || async {
        server.state.analytics.flush().await;
        let (_, list) = server
            .call(
                "GET",
                &format!("/v1/analytics/views?playback_id={playback}"),
                Some(&key),
                None,
            )
            .await;
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["sources"] == serde_json::json!(["server"]))
            .cloned()
    })
    .await;
    let watch = read["watch_time_ms"].as_i64().unwrap();
    assert!((9_000..=11_000).contains(&watch), "{read}");
    assert_eq!(
        (
            read["browser"].as_str(),
            read["player"].as_str(),
            read["completed"].as_bool()
        ),
        (Some("FFmpeg"), Some("FFmpeg"), Some(true)),
        "{read}"
    );
    assert!(read["server"]["segments"].as_u64().unwrap() >= 2, "{read}");

    // Subtitles: SRT in, WebVTT stored, offered to players as a SUBTITLES group.
    let srt =
        "1\n00:00:01,000 --> 00:00:04,000\nHello\n\n2\n00:00:05,000 --> 00:00:08,000\nWorld\n";
    let (status, track) = server
        .call(
            "POST",
            &format!("/v1/assets/{asset_id}/subtitles"),
            Some(&key),
            Some(serde_json::json!({"language": "en", "name": "English", "content": srt})),
        )
        .await;
    assert_eq!(status, 201, "{track}");
    assert_eq!(track["cues"], 2);
    let bad = "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:05,000 --> 00:00:03,000\nbad\n";
    let (status, e) = server
        .call(
            "POST",
            &format!("/v1/assets/{asset_id}/subtitles"),
            Some(&key),
            Some(serde_json::json!({"language": "fr", "content": bad})),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("line 6"),
        "{e}"
    );
    // A name or language that would add a line or an attribute to the master is refused.
    for (language, name) in [
        ("de", "a\nhttps://evil.example/b.m3u8\n#"),
        ("de", "a\",URI=\"https://evil.example/c.m3u8"),
        ("de\nhttps://evil.example/d.m3u8", "Deutsch"),
    ] {
        let (status, e) = server
            .call(
                "POST",
                &format!("/v1/assets/{asset_id}/subtitles"),
                Some(&key),
                Some(serde_json::json!({"language": language, "name": name, "content": srt})),
            )
            .await;
        assert_eq!(status, 400, "{name:?}: {e}");
    }
    let master_text = server
        .client
        .get(&master)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        master_text.contains("TYPE=SUBTITLES") && master_text.contains("SUBTITLES=\"subs\""),
        "{master_text}"
    );
    assert!(!master_text.contains("evil"), "{master_text}");
    let vtt = server
        .client
        .get(server.url(&format!("/hls/{playback}/subtitles/en.vtt")))
        .send()
        .await
        .unwrap();
    assert_eq!(vtt.headers()["content-type"], "text/vtt");
    assert!(
        vtt.text()
            .await
            .unwrap()
            .contains("00:00:01.000 --> 00:00:04.000\nHello")
    );
    let played = browser_play(&server.url(&format!("/play/{playback}")), 2, 40).await;
    assert_eq!(
        played.subtitle_tracks, 1,
        "hls.js does not offer the track: {played:?}"
    );
    // The page's own controls: the captions menu turns the track on, the scrub bar previews
    // the storyboard frame under the pointer.
    let shots = concat!(env!("CARGO_TARGET_TMPDIR"), "/screenshots");
    std::fs::create_dir_all(shots).unwrap();
    let controls = common::media::browser_script(
        "vod_player.cjs",
        vec![server.url(&format!("/play/{playback}")), shots.into()],
        90,
    )
    .await;
    assert_eq!(controls["error"], serde_json::Value::Null, "{controls}");
    assert_eq!(controls["problems"], serde_json::json!([]), "{controls}");
    assert_eq!(
        controls["captions"].as_array().unwrap().len(),
        2,
        "{controls}"
    );
    assert_eq!(controls["captionsOn"], 0, "{controls}");
    assert!(
        controls["preview"]
            .as_str()
            .unwrap()
            .contains(&format!("/storyboards/{playback}.jpg")),
        "{controls}"
    );

    // Thumbnails: a frame on demand (then kept in storage), and the poster.
    let thumb = server
        .client
        .get(server.url(&format!("/thumbnails/{playback}.jpg?time=5&width=320")))
        .send()
        .await
        .unwrap();
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
    let jpeg = thumb.bytes().await.unwrap();
    assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
    let local = media.path().join("thumb.jpg");
    std::fs::write(&local, &jpeg).unwrap();
    let probe = ffprobe(local.to_str().unwrap()).await;
    assert_eq!(
        (
            probe["streams"][0]["width"].as_u64(),
            probe["streams"][0]["height"].as_u64()
        ),
        (Some(320), Some(180))
    );
    let cached = server
        .state
        .jobs
        .store
        .head(
            &ferrocast::storage::ObjectKey::parse(&format!("{prefix}thumbnails/5000_320.jpg"))
                .unwrap(),
        )
        .await;
    assert!(cached.is_ok(), "the thumbnail was not kept");
    let poster = server
        .client
        .get(server.url(&format!("/thumbnails/{playback}.jpg")))
        .send()
        .await
        .unwrap();
    assert_eq!(poster.status(), 200);
    let bad = server
        .client
        .get(server.url(&format!("/thumbnails/{playback}.jpg?time=-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // Renders are bounded: times and widths snap to a grid (5.4 s at 300 px is the frame
    // already kept), widths stop at the source's, times past the end are refused, and one
    // address gets a few renders before it must wait.
    let width_of = |path: &'static str| {
        let (server, dir) = (&server, media.path());
        async move {
            let response = server.client.get(server.url(path)).send().await.unwrap();
            if response.status() != 200 {
                return (response.status().as_u16(), 0);
            }
            let local = dir.join("snapped.jpg");
            std::fs::write(&local, response.bytes().await.unwrap()).unwrap();
            let probe = ffprobe(local.to_str().unwrap()).await;
            (200, probe["streams"][0]["width"].as_u64().unwrap())
        }
    };
    let thumbs = |server: &TestServer| {
        let prefix = ferrocast::storage::Prefix::parse(&format!("{prefix}thumbnails/")).unwrap();
        let store = server.state.jobs.store.clone();
        async move { store.list(&prefix).await.unwrap().len() }
    };
    let path = |q: &str| -> &'static str {
        Box::leak(format!("/thumbnails/{playback}.jpg?{q}").into_boxed_str())
    };
    assert_eq!(width_of(path("time=5.4&width=300")).await, (200, 320));
    assert_eq!(
        thumbs(&server).await,
        1,
        "no second render for the same frame"
    );
    assert_eq!(width_of(path("time=5&width=1920")).await, (200, 1280));
    assert_eq!(width_of(path("time=10.5&width=320")).await.0, 400);
    assert_eq!(width_of(path("time=1&width=320")).await.0, 200);
    assert_eq!(width_of(path("time=2&width=320")).await.0, 200);
    assert_eq!(width_of(path("time=3&width=320")).await.0, 429);
    assert_eq!(
        width_of(path("time=5&width=320")).await.0,
        200,
        "kept ones are served"
    );
    assert_eq!(thumbs(&server).await, 4);

    // A storyboard: a sprite and the WebVTT that points into it, for scrubbing previews.
    let vtt = server
        .client
        .get(server.url(&format!("/storyboards/{playback}.vtt")))
        .send()
        .await
        .unwrap();
    assert_eq!(vtt.status(), 200);
    assert_eq!(vtt.headers()["content-type"], "text/vtt");
    let vtt = vtt.text().await.unwrap();
    assert!(vtt.starts_with("WEBVTT"), "{vtt}");
    assert_eq!(vtt.matches("#xywh=").count(), 5, "{vtt}");
    assert!(
        vtt.contains(&format!(
            "00:00:02.000 --> 00:00:04.000\n{playback}.jpg#xywh=160,0,160,90"
        )),
        "{vtt}"
    );
    // A public asset verifies no token, so none is carried into the cues: it cannot add any.
    let evil = "x#xywh=0,0,1,1\n\n00:00:00.000 --> 00:00:09.000\nhttps://evil.example/a.jpg";
    let encoded: String = url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
    let (status, injected) = server
        .get_text(&format!("/storyboards/{playback}.vtt?token={encoded}"))
        .await;
    assert_eq!((status, injected.as_str()), (200, vtt.as_str()));
    let sprite = server
        .client
        .get(server.url(&format!("/storyboards/{playback}.jpg")))
        .send()
        .await
        .unwrap();
    assert_eq!(sprite.status(), 200);
    let local = media.path().join("sprite.jpg");
    std::fs::write(&local, sprite.bytes().await.unwrap()).unwrap();
    let probe = ffprobe(local.to_str().unwrap()).await;
    assert_eq!(
        (
            probe["streams"][0]["width"].as_u64(),
            probe["streams"][0]["height"].as_u64()
        ),
        (Some(800), Some(90))
    );

    // Deleting the asset removes every object stored for it.
    assert_eq!(
        server
            .call(
                "DELETE",
                &format!("/v1/assets/{asset_id}"),
                Some(&key),
                None
            )
            .await
            .0,
        204
    );
    let left = server
        .state
        .jobs
        .store
        .list(&ferrocast::storage::Prefix::parse(&prefix).unwrap())
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_are_not_playable_media_end_errored_with_a_reason_and_leave_nothing() {
    let media = tempfile::tempdir().unwrap();
    let text = media.path().join("notes.txt");
    std::fs::write(
        &text,
        "these are not the frames you are looking for\n".repeat(200),
    )
    .unwrap();
    let good = mp4_720p(media.path());
    let bytes = std::fs::read(&good).unwrap();
    let truncated = media.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() * 4 / 10]).unwrap();
    let empty = media.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();

    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Creators").await;
    for (file, expected) in [
        (&text, "not a media file"),
        (&truncated, "truncated"),
        (&empty, "not a media file"),
    ] {
        let report = tus_upload(file, &server.url("/v1/uploads"), &key, 0, "");
        assert_eq!(report["finished"], true, "{report}");
        let (_, list) = server.call("GET", "/v1/assets", Some(&key), None).await;
        let id = list["data"].as_array().unwrap().last().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let settled = wait_until_settled(&server, &key, &id, Duration::from_secs(60)).await;
        assert_eq!(settled["status"], "errored", "{settled}");
        let message = settled["error"].as_str().unwrap();
        assert!(message.contains(expected), "{}: {message}", file.display());
        let left = server
            .state
            .jobs
            .store
            .list(
                &ferrocast::storage::Prefix::parse(&format!("tenants/{tenant_id}/assets/{id}/"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(left.is_empty(), "{} left {left:?}", file.display());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tus_protocol_is_enforced_with_clear_errors_and_limits() {
    let server = TestServer::start_with(|c| {
        c.uploads.max_size_bytes = 1000;
        c.uploads.tenant_quota_bytes = 1500;
    })
    .await;
    let (_, key) = server.create_tenant("Creators").await;
    let http = &server.client;
    let tus = |req: reqwest::RequestBuilder| req.bearer_auth(&key).header("Tus-Resumable", "1.0.0");

    let options = http
        .request(reqwest::Method::OPTIONS, server.url("/v1/uploads"))
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(options.headers()["tus-version"], "1.0.0");
    assert!(
        options.headers()["tus-extension"]
            .to_str()
            .unwrap()
            .contains("creation")
    );

    let no_version = http
        .post(server.url("/v1/uploads"))
        .bearer_auth(&key)
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(no_version.status(), 412);
    let too_big = tus(http.post(server.url("/v1/uploads")))
        .header("Upload-Length", "5000")
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    assert!(
        too_big
            .text()
            .await
            .unwrap()
            .contains("largest accepted is 1000 bytes")
    );

    let created = tus(http.post(server.url("/v1/uploads")))
        .header("Upload-Length", "900")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_string();
    assert!(created.headers().contains_key("upload-expires"));
    // The quota counts unfinished uploads: a second 900-byte upload would exceed 1500.
    let over_quota = tus(http.post(server.url("/v1/uploads")))
        .header("Upload-Length", "900")
        .send()
        .await
        .unwrap();
    assert_eq!(over_quota.status(), 413);
    assert!(over_quota.text().await.unwrap().contains("quota"));

    let patch = |offset: &str, body: Vec<u8>, ct: &str| {
        tus(http.patch(&location))
            .header("Upload-Offset", offset)
            .header("Content-Type", ct)
            .body(body)
            .send()
    };
    assert_eq!(
        patch("0", vec![1; 10], "application/octet-stream")
            .await
            .unwrap()
            .status(),
        415
    );
    let ok = patch("0", vec![1; 300], "application/offset+octet-stream")
        .await
        .unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(ok.headers()["upload-offset"], "300");
    let conflict = patch("0", vec![1; 10], "application/offset+octet-stream")
        .await
        .unwrap();
    assert_eq!(conflict.status(), 409);
    let overflow = patch("300", vec![1; 700], "application/offset+octet-stream")
        .await
        .unwrap();
    assert_eq!(overflow.status(), 413);
    let head = tus(http.head(&location)).send().await.unwrap();
    assert_eq!(
        head.headers()["upload-offset"],
        "300",
        "a refused PATCH must not move the offset"
    );
    assert_eq!(head.headers()["upload-length"], "900");
    assert_eq!(head.headers()["cache-control"], "no-store");

    // Checksum extension: a body that does not match its Upload-Checksum is not kept.
    use base64::Engine;
    use sha1::Digest;
    let chunk = vec![7u8; 100];
    let sum = |b: &[u8]| {
        format!(
            "sha1 {}",
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b))
        )
    };
    let mismatch = tus(http.patch(&location))
        .header("Upload-Offset", "300")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Checksum", sum(b"something else"))
        .body(chunk.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(mismatch.status().as_u16(), 460);
    let head = tus(http.head(&location)).send().await.unwrap();
    assert_eq!(head.headers()["upload-offset"], "300");
    let matched = tus(http.patch(&location))
        .header("Upload-Offset", "300")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Checksum", sum(&chunk))
        .body(chunk)
        .send()
        .await
        .unwrap();
    assert_eq!(matched.status(), 204);
    assert_eq!(matched.headers()["upload-offset"], "400");

    // Another tenant cannot see or touch it.
    let (_, other) = server.create_tenant("Other").await;
    let foreign = http
        .head(&location)
        .bearer_auth(&other)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);

    // Termination removes the upload and its asset.
    assert_eq!(
        tus(http.delete(&location)).send().await.unwrap().status(),
        204
    );
    assert_eq!(
        tus(http.head(&location)).send().await.unwrap().status(),
        404
    );
    let (_, list) = server.call("GET", "/v1/assets", Some(&key), None).await;
    assert!(list["data"].as_array().unwrap().is_empty(), "{list}");
    server.stop().await;
}

/// The probe's tus edge cases: each answered cleanly, none a 500, none with two winners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_edge_cases_get_clean_answers_and_one_winner() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Creators").await;
    let http = &server.client;
    let tus = |req: reqwest::RequestBuilder| req.bearer_auth(&key).header("Tus-Resumable", "1.0.0");
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    // Lengths are digits; metadata is bounded and clean.
    for (length, metadata) in [
        ("+5".to_string(), String::new()),
        ("5".into(), format!("filename {}", b64("a\nb.mp4"))),
        ("5".into(), format!("filename {}", b64("a\0b.mp4"))),
        ("5".into(), format!("filename {}", b64(&"x".repeat(5000)))),
    ] {
        let mut req = tus(http.post(server.url("/v1/uploads"))).header("Upload-Length", &length);
        if !metadata.is_empty() {
            req = req.header("Upload-Metadata", &metadata);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), 400, "{length} {metadata:.40}");
    }

    let srv = &server;
    let create = |length: u64| async move {
        let created = tus(http.post(srv.url("/v1/uploads")))
            .header("Upload-Length", length.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        created.headers()["location"].to_str().unwrap().to_string()
    };
    let patch = |location: String, offset: u64, body: Vec<u8>| async move {
        tus(http.patch(&location))
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(body)
            .send()
            .await
            .unwrap()
    };

    // An empty PATCH at the final offset, while the upload finishes and after: a no-op.
    let done = create(10).await;
    assert_eq!(patch(done.clone(), 0, vec![1; 10]).await.status(), 204);
    for _ in 0..2 {
        let again = patch(done.clone(), 10, Vec::new()).await;
        assert_eq!(again.status(), 204);
        assert_eq!(again.headers()["upload-offset"], "10");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(patch(done.clone(), 10, vec![1; 3]).await.status(), 413);

    // A DELETE during a PATCH: the DELETE wins, and the PATCH is told it lost.
    let location = create(100).await;
    let url = reqwest::Url::parse(&location).unwrap();
    let mut socket = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
        .await
        .unwrap();
    let head = format!(
        "PATCH {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: 100\r\nConnection: close\r\n\r\n",
        url.path()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&[2; 50]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted = tus(http.delete(&location)).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    socket.write_all(&[2; 50]).await.unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(
        tus(http.head(&location)).send().await.unwrap().status(),
        404
    );
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir.join("uploads"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcode_cut_off_by_a_server_stop_is_finished_after_restart() {
    let media = tempfile::tempdir().unwrap();
    let file = make_media(
        media.path(),
        "long.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "30",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.jobs.lease_s = 5;
    let server = TestServer::start_config(config.clone()).await;
    let admin = server.admin_key();
    let (_, tenant) = server
        .call(
            "POST",
            "/v1/tenants",
            Some(&admin),
            Some(serde_json::json!({"name": "C"})),
        )
        .await;
    let key = tenant["api_key"].as_str().unwrap().to_string();
    let report = tus_upload(&file, &server.url("/v1/uploads"), &key, 0, "");
    assert_eq!(report["finished"], true, "{report}");
    let id = only_asset(&server, &key).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let processing = eventually(
        "the transcode to make progress",
        Duration::from_secs(60),
        || async {
            let (_, a) = server
                .call("GET", &format!("/v1/assets/{id}"), Some(&key), None)
                .await;
            (a["status"] == "processing" && a["progress"].as_f64().unwrap_or(0.0) > 0.0)
                .then_some(a)
        },
    )
    .await;
    assert!(processing["progress"].as_f64().unwrap() < 100.0);
    server.stop().await;

    let server = TestServer::start_config(config).await;
    // Progress streams as Server-Sent Events until the asset is ready. The
    // stream outlives the shared client's 30 s request limit on a loaded
    // machine, so this one bounds each read instead of the whole response.
    let sse = reqwest::Client::builder()
        .read_timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut events = sse
        .get(server.url(&format!("/v1/assets/{id}/events")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(chunk) = events.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("\"status\":\"ready\"") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no ready event: {text}");
    let progress: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .filter_map(|v| v["progress"].as_f64())
        .collect();
    assert!(
        progress.iter().any(|p| *p > 0.0 && *p < 100.0),
        "no progress between 0 and 100: {text}"
    );
    let done = wait_until_settled(&server, &key, &id, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "ready", "{done}");
    let duration = done["duration_s"].as_f64().unwrap();
    assert!((29.0..=31.0).contains(&duration), "{duration}");
    let job = server
        .state
        .jobs
        .db
        .latest_job_for_asset(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        job.attempts, 2,
        "the job was taken again after its lease expired"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mov_mkv_webm_portrait_and_audio_only_files_all_become_ready_and_play() {
    let media = tempfile::tempdir().unwrap();
    let dir = media.path();
    let av = |size: &str| -> Vec<String> {
        [
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=30"),
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let files = [
        (
            "clip.mov",
            [
                av("640x360"),
                [
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                ]
                .map(String::from)
                .to_vec(),
            ]
            .concat(),
            Some((640, 360)),
        ),
        (
            "clip.mkv",
            [
                av("640x360"),
                [
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                ]
                .map(String::from)
                .to_vec(),
            ]
            .concat(),
            Some((640, 360)),
        ),
        (
            "clip.webm",
            [
                av("640x360"),
                [
                    "-c:v",
                    "libvpx-vp9",
                    "-deadline",
                    "realtime",
                    "-cpu-used",
                    "8",
                    "-c:a",
                    "libopus",
                ]
                .map(String::from)
                .to_vec(),
            ]
            .concat(),
            Some((640, 360)),
        ),
        (
            "portrait.mp4",
            [
                av("1080x1920"),
                [
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                ]
                .map(String::from)
                .to_vec(),
            ]
            .concat(),
            Some((1080, 1920)),
        ),
        (
            "song.m4a",
            [
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440",
                "-t",
                "10",
                "-c:a",
                "aac",
            ]
            .map(String::from)
            .to_vec(),
            None,
        ),
    ];
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Creators").await;
    let mut playback_ids = Vec::new();
    for (name, args, size) in &files {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let file = make_media(dir, name, &args);
        let report = tus_upload(&file, &server.url("/v1/uploads"), &key, 0, "");
        assert_eq!(report["finished"], true, "{name}: {report}");
        let (_, list) = server.call("GET", "/v1/assets", Some(&key), None).await;
        let id = list["data"].as_array().unwrap().last().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let asset = wait_until_settled(&server, &key, &id, Duration::from_secs(180)).await;
        assert_eq!(asset["status"], "ready", "{name}: {asset}");
        let playback = asset["playback_id"].as_str().unwrap().to_string();
        let probe = ffprobe(&server.url(&format!("/hls/{playback}/master.m3u8"))).await;
        let streams = probe["streams"].as_array().unwrap();
        match size {
            Some((w, h)) => {
                let largest = streams
                    .iter()
                    .filter(|s| s["codec_type"] == "video")
                    .max_by_key(|s| s["width"].as_u64())
                    .unwrap();
                assert_eq!(
                    (largest["width"].as_u64(), largest["height"].as_u64()),
                    (Some(*w), Some(*h)),
                    "{name}"
                );
            }
            None => assert!(
                streams.iter().all(|s| s["codec_type"] == "audio"),
                "{name}: {probe}"
            ),
        }
        playback_ids.push((name.to_string(), playback, size.is_some()));
    }
    // A browser plays every one past 3 s (the audio-only one too).
    for (name, playback, video) in &playback_ids {
        let played = browser_play(&server.url(&format!("/play/{playback}")), 3, 40).await;
        eprintln!("{name}: {played:?}");
        if *video {
            played.assert_plays(3.0, Encrypted::Yes);
        } else {
            assert!(
                played.current_time >= 3.0 && played.key_loaded && played.fatal.is_none(),
                "{name}: {played:?}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_worker_process_shares_postgres_and_s3_with_the_api_node() {
    let pg = common::PgDatabase::create().await;
    let s3 = common::S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.database.url = ferrocast::config::DatabaseUrl::new(pg.url.clone());
    s3.configure(&mut config, "ferrocast-vod");
    // The API node runs no jobs; a worker with its own local folders does.
    config.jobs.concurrency = 0;
    let api = TestServer::start_config(config.clone()).await;
    // `ferrocast worker`, a process of its own, configured as an operator would: by
    // environment, with its own data folder and the same master key (a shared secret).
    let worker_dir = tempfile::tempdir().unwrap();
    let worker_log = worker_dir.path().join("worker.log");
    let worker = std::process::Command::new(env!("CARGO_BIN_EXE_ferrocast"))
        .arg("worker")
        .env("FERROCAST_DATA_DIR", worker_dir.path().join("data"))
        .env("FERROCAST_KEYS_DIR", dir.path().join("keys"))
        .env("FERROCAST_DATABASE_URL", &pg.url)
        .env("FERROCAST_JOBS_CONCURRENCY", "1")
        .env("FERROCAST_HTTP_PUBLIC_URL", &api.base)
        .env("FERROCAST_STORAGE_BACKEND", "s3")
        .env("FERROCAST_STORAGE_S3_BUCKET", "ferrocast-vod")
        .env("FERROCAST_STORAGE_S3_ENDPOINT", &s3.endpoint)
        .env("FERROCAST_STORAGE_S3_PATH_STYLE", "true")
        .env("FERROCAST_STORAGE_S3_ACCESS_KEY_ID", &s3.access_key)
        .env("FERROCAST_STORAGE_S3_SECRET_ACCESS_KEY", &s3.secret_key)
        .env("FERROCAST_STORAGE_S3_CREATE_BUCKET", "true")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&worker_log).unwrap())
        .stderr(std::fs::File::create(worker_dir.path().join("worker.err")).unwrap())
        .spawn()
        .expect("ferrocast worker starts");
    let worker_output = || {
        format!(
            "{}{}",
            std::fs::read_to_string(&worker_log).unwrap_or_default(),
            std::fs::read_to_string(worker_dir.path().join("worker.err")).unwrap_or_default()
        )
    };
    // Killed by the guard if the test fails before it stops the worker itself.
    let mut worker = common::process::KillOnDrop(worker);
    eventually("the worker to start", Duration::from_secs(20), || async {
        worker_output()
            .contains("running job workers only")
            .then_some(())
    })
    .await;

    let (_, key) = api.create_tenant("Creators").await;
    let media = tempfile::tempdir().unwrap();
    let file = make_media(
        media.path(),
        "short.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine",
            "-t",
            "6",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    );
    let report = tus_upload(&file, &api.url("/v1/uploads"), &key, 0, "");
    assert_eq!(report["finished"], true, "{report}");
    let id = only_asset(&api, &key).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ready = wait_until_settled(&api, &key, &id, Duration::from_secs(120)).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let playback = ready["playback_id"].as_str().unwrap();
    let probe = ffprobe(&api.url(&format!("/hls/{playback}/master.m3u8"))).await;
    assert!(
        probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["height"] == 360),
        "{probe}"
    );
    // The idle worker heard of the job through PostgreSQL's NOTIFY, from the other process:
    // it did not wait for its own look at the queue, 30 s after the last one (at its start,
    // a few seconds before the upload).
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url)
        .await
        .unwrap();
    let (created, started, attempts): (i64, i64, i64) =
        sqlx::query_as("SELECT created_at, started_at, attempts FROM jobs WHERE asset_id = $1")
            .bind(&id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(attempts, 1, "started_at is the first attempt's");
    assert!(
        started - created < 3_000,
        "the worker took the job {} ms after it was queued",
        started - created
    );
    // SIGTERM: the worker stops cleanly, as under systemd or Kubernetes.
    let pid = worker.0.id().to_string();
    let term = common::output_within(
        std::process::Command::new("kill").args(["-TERM", &pid]),
        Duration::from_secs(5),
        "kill",
    );
    assert!(term.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not stop within 15 s of SIGTERM:\n{}",
            worker_output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.success(),
        "worker exited with {status}:\n{}",
        worker_output()
    );
    drop(worker);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_uploads_in_one_multipart_request_and_an_oversized_one_leaves_nothing() {
    let media = tempfile::tempdir().unwrap();
    let file = make_media(
        media.path(),
        "small.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    );
    let bytes = std::fs::read(&file).unwrap();
    let server =
        TestServer::start_with(|c| c.uploads.max_size_bytes = bytes.len() as u64 + 10).await;
    let (_, key) = server.create_tenant("Creators").await;
    let form = |data: Vec<u8>| {
        reqwest::multipart::Form::new()
            .text("playback_policy", "public")
            .text("ladder", "web")
            .part(
                "file",
                reqwest::multipart::Part::bytes(data).file_name("small.mp4"),
            )
    };
    let resp = server
        .client
        .post(server.url("/v1/assets"))
        .bearer_auth(&key)
        .multipart(form(bytes.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let created: Value = resp.json().await.unwrap();
    let id = created["asset_id"].as_str().unwrap();
    let ready = wait_until_settled(&server, &key, id, Duration::from_secs(90)).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["filename"], "small.mp4");
    // The `web` preset adds a VP9/Opus WebM download.
    let (tenant, _) = (
        server.call("GET", "/v1/tenant", Some(&key), None).await.1,
        (),
    );
    let webm_key = format!(
        "tenants/{}/assets/{id}/download.webm",
        tenant["id"].as_str().unwrap()
    );
    let webm = server
        .state
        .jobs
        .store
        .get(
            &ferrocast::storage::ObjectKey::parse(&webm_key).unwrap(),
            None,
        )
        .await
        .unwrap();
    let local = media.path().join("download.webm");
    std::fs::write(&local, &webm.body).unwrap();
    let probe = ffprobe(local.to_str().unwrap()).await;
    let codecs: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap())
        .collect();
    assert_eq!(codecs, ["vp9", "opus"], "{probe}");
    let (status, e) = server
        .call(
            "POST",
            "/v1/direct-uploads",
            Some(&key),
            Some(serde_json::json!({"size": 10, "ladder": "8k"})),
        )
        .await;
    assert_eq!(status, 400, "{e}");

    let mut big = bytes.clone();
    big.extend_from_slice(&[0u8; 4096]);
    let resp = server
        .client
        .post(server.url("/v1/assets"))
        .bearer_auth(&key)
        .multipart(form(big))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let (_, list) = server.call("GET", "/v1/assets", Some(&key), None).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "the refused upload left an asset: {list}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir.join("uploads"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    server.stop().await;
}

/// A form's text fields are small: one of 64 MiB is refused at its first 4 KiB, and its
/// content is not echoed back.
#[tokio::test]
async fn a_huge_form_text_field_is_refused_without_being_read_whole() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Creators").await;
    for field in ["ladder", "playback_policy"] {
        let form = reqwest::multipart::Form::new()
            .text(field, "x".repeat(64 << 20))
            .part("file", reqwest::multipart::Part::bytes(vec![0u8; 16]));
        let resp = server
            .client
            .post(server.url("/v1/assets"))
            .bearer_auth(&key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{field}");
        let text = resp.text().await.unwrap_or_default();
        assert!(text.len() < 1024, "{field}: {} bytes answered", text.len());
        assert!(text.contains("longer than 4096 bytes"), "{field}: {text}");
    }
    // A ladder that only copies (live) cannot transcode an upload: refused at once.
    let (status, e) = server
        .call(
            "POST",
            "/v1/direct-uploads",
            Some(&key),
            Some(serde_json::json!({"size": 10, "ladder": "passthrough"})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_upload_goes_straight_to_s3_in_presigned_parts() {
    let s3 = common::S3Server::start();
    let server = TestServer::start_with(|c| s3.configure(c, "ferrocast-direct")).await;
    let (_, key) = server.create_tenant("Creators").await;
    let media = tempfile::tempdir().unwrap();
    let file = make_media(
        media.path(),
        "big.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine",
            "-t",
            "8",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "12M",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    );
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.len() > 8 << 20,
        "want more than one part: {} bytes",
        bytes.len()
    );
    let (status, created) = server
        .call("POST", "/v1/direct-uploads", Some(&key), Some(serde_json::json!({"size": bytes.len(), "filename": "big.mp4", "playback_policy": "public"})))
        .await;
    assert_eq!(status, 201, "{created}");
    let part_size = created["part_size"].as_u64().unwrap() as usize;
    let mut parts = Vec::new();
    for part in created["parts"].as_array().unwrap() {
        let n = part["part_number"].as_u64().unwrap() as usize;
        let chunk = bytes[(n - 1) * part_size..(n * part_size).min(bytes.len())].to_vec();
        // A plain HTTP client, no S3 credentials: the URL carries the signature.
        let resp = server
            .client
            .put(part["url"].as_str().unwrap())
            .body(chunk)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "part {n}");
        parts.push(
            serde_json::json!({"part_number": n, "etag": resp.headers()["etag"].to_str().unwrap()}),
        );
    }
    assert!(parts.len() >= 2);
    let complete = created["complete_url"]
        .as_str()
        .unwrap()
        .replace(&server.base, "");
    let (status, done) = server
        .call(
            "POST",
            &complete,
            Some(&key),
            Some(serde_json::json!({"parts": parts})),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    let id = created["asset_id"].as_str().unwrap();
    let ready = wait_until_settled(&server, &key, id, Duration::from_secs(120)).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["size_bytes"].as_u64(), Some(bytes.len() as u64));
    server.stop().await;

    // With local storage there is nothing to upload to directly: a clear refusal.
    let local = TestServer::start().await;
    let (_, key) = local.create_tenant("Creators").await;
    let (status, e) = local
        .call(
            "POST",
            "/v1/direct-uploads",
            Some(&key),
            Some(serde_json::json!({"size": 100})),
        )
        .await;
    assert_eq!(status, 409, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("S3"),
        "{e}"
    );
    let (_, list) = local.call("GET", "/v1/assets", Some(&key), None).await;
    assert!(
        list["data"].as_array().unwrap().is_empty(),
        "a refused direct upload left an asset"
    );
    local.stop().await;
}

/// Mean grey level of each `tile_width`-wide tile along the first row of a JPEG sprite.
fn tile_brightness(sprite: &Path, tile_width: usize) -> Vec<f64> {
    let out = common::output_within(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(sprite)
            .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"]),
        Duration::from_secs(30),
        "ffmpeg (Debian package ffmpeg)",
    );
    assert!(out.status.success(), "ffmpeg could not decode the sprite");
    let probe = common::output_within(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=width",
                "-of",
                "csv=p=0",
            ])
            .arg(sprite),
        Duration::from_secs(30),
        "ffprobe (Debian package ffmpeg)",
    );
    let width: usize = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .unwrap();
    let rows = out.stdout.len() / width;
    (0..width / tile_width)
        .map(|k| {
            let sum: u64 = (0..rows)
                .flat_map(|y| {
                    let at = y * width + k * tile_width;
                    out.stdout[at..at + tile_width].iter().map(|&v| v as u64)
                })
                .sum();
            sum as f64 / (rows * tile_width) as f64
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_storyboard_tile_shows_the_frame_of_its_own_time() {
    // A picture that brightens steadily, luma 16 + 20 per second, so every tile's time can be
    // read back from its brightness; once landscape, once portrait, whose tiles must be
    // portrait too. The tiles come from the transcode's own frames.
    let media = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Creators").await;
    for (name, size, tile_height) in [("ramp.mp4", "640x360", 90), ("upright.mp4", "360x640", 284)]
    {
        let file = make_media(
            media.path(),
            name,
            &[
                "-f",
                "lavfi",
                "-i",
                &format!(
                    "color=c=black:s={size}:r=30,format=yuv420p,geq=lum='16+20*T':cb=128:cr=128"
                ),
                "-f",
                "lavfi",
                "-i",
                "sine",
                "-t",
                "10",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
            ],
        );
        let form = reqwest::multipart::Form::new()
            .text("playback_policy", "public")
            .part(
                "file",
                reqwest::multipart::Part::bytes(std::fs::read(&file).unwrap()).file_name(name),
            );
        let resp = server
            .client
            .post(server.url("/v1/assets"))
            .bearer_auth(&key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{name}");
        let created: Value = resp.json().await.unwrap();
        let id = created["asset_id"].as_str().unwrap();
        let asset = wait_until_settled(&server, &key, id, Duration::from_secs(120)).await;
        assert_eq!(asset["status"], "ready", "{name}: {asset}");
        let playback = asset["playback_id"].as_str().unwrap().to_string();
        let (status, vtt) = server
            .get_text(&format!("/storyboards/{playback}.vtt"))
            .await;
        assert_eq!(status, 200, "{name}: {vtt}");
        assert_eq!(vtt.matches("#xywh=").count(), 5, "{name}: {vtt}");
        assert!(
            vtt.contains(&format!(
                "00:00:08.000 --> 00:00:10.000\n{playback}.jpg#xywh=640,0,160,{tile_height}"
            )),
            "{name}: {vtt}"
        );
        let sprite = server
            .client
            .get(server.url(&format!("/storyboards/{playback}.jpg")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let local = media.path().join(format!("{name}.jpg"));
        std::fs::write(&local, &sprite).unwrap();
        let seen = tile_brightness(&local, 160);
        // Tile k is the frame at 2k s: luma 16 + 40k, full range in the JPEG.
        let expected: Vec<f64> = (0..5).map(|k| 40.0 * k as f64 * 255.0 / 219.0).collect();
        assert_eq!(seen.len(), 5, "{name}: {seen:?}");
        for (k, (s, e)) in seen.iter().zip(&expected).enumerate() {
            assert!(
                (s - e).abs() < 8.0,
                "{name}: tile {k} has brightness {s:.1}, the frame at {} s has {e:.1} \
                 (all tiles: {seen:?})",
                2 * k
            );
        }
    }
    server.stop().await;
}
