//! The packaging choices beyond one CMAF live stream: `both` (MPEG-TS and CMAF from one
//! encode, each at its own URLs), the `cenc` scheme, CMAF for uploads, and recordings that
//! keep their broadcast's packaging. Each output is read back by independent readers:
//! ffprobe plays the TS set with its AES-128 keys, ffmpeg's CENC reader decrypts the CMAF
//! fragments with the key Ferrocast's ClearKey licence gives.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::TestServer;
use common::media::{attribute, decrypted_frames, eventually, ffmpeg_publish, ffprobe, make_media};
use serde_json::{Value, json};

async fn fetch(server: &TestServer, path: &str) -> Vec<u8> {
    let r = server.client.get(server.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.bytes().await.unwrap().to_vec()
}

/// The content key the ClearKey licence of public media `id` gives for the key id that
/// the media playlist `media` names.
async fn clearkey(server: &TestServer, id: &str, media: &str) -> Vec<u8> {
    let kid = STANDARD
        .decode(attribute(media, "#EXT-X-KEY", "URI").trim_start_matches("data:text/plain;base64,"))
        .unwrap();
    let r = server
        .client
        .post(server.url(&format!("/licenses/clearkey/{id}")))
        .json(&json!({"kids": [URL_SAFE_NO_PAD.encode(&kid)], "type": "temporary"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let keys: Value = r.json().await.unwrap();
    assert_eq!(keys["keys"][0]["kid"], URL_SAFE_NO_PAD.encode(&kid));
    URL_SAFE_NO_PAD
        .decode(keys["keys"][0]["k"].as_str().unwrap())
        .unwrap()
}

/// The first fragment of a CMAF media playlist.
fn first_fragment(media: &str) -> &str {
    media
        .lines()
        .find(|l| l.ends_with(".m4s") && !l.starts_with('#'))
        .unwrap_or_else(|| panic!("a fragment in {media}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_packaged_as_both_serves_ts_and_cenc_cmaf_from_one_encode_and_so_does_its_recording()
 {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Both").await;
    let (status, e) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&key),
            Some(json!({"packaging": "hls", "playback_policy": "public"})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    let (status, s) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&key),
            Some(
                json!({"playback_policy": "public", "packaging": "both", "cenc_scheme": "cenc",
                "record": true, "reconnect_window_s": 0}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(
        (&s["packaging"], &s["cenc_scheme"]),
        (&json!("both"), &json!("cenc"))
    );
    let id = s["playback_id"].as_str().unwrap().to_string();
    let url = format!(
        "{}/{}",
        s["rtmp_url"].as_str().unwrap(),
        s["stream_key"].as_str().unwrap()
    );
    let mut ffmpeg = ffmpeg_publish(&url, 854, 480, 12);

    // The CMAF set beside the TS one: fMP4 with AES-CTR (cenc) and LL-HLS parts.
    let cmaf = eventually(
        "the CMAF set's 360p playlist",
        Duration::from_secs(40),
        || async {
            let (status, text) = server
                .get_text(&format!("/hls/{id}/cmaf/360p/index.m3u8"))
                .await;
            (status == 200 && text.contains(".m4s\n")).then_some(text)
        },
    )
    .await;
    for tag in [
        "#EXT-X-MAP:URI=\"init.mp4\"",
        "METHOD=SAMPLE-AES-CTR,",
        "KEYFORMAT=\"org.w3.clearkey\"",
        "#EXT-X-PART:DURATION=",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES",
    ] {
        assert!(cmaf.contains(tag), "{tag} in {cmaf}");
    }
    // The master is written once every rendition's codecs are known, which may lag one
    // rendition's playlist.
    let cmaf_master = eventually("the CMAF master", Duration::from_secs(20), || async {
        let (status, text) = server
            .get_text(&format!("/hls/{id}/cmaf/master.m3u8"))
            .await;
        (status == 200).then_some(text)
    })
    .await;
    assert!(
        cmaf_master.contains("URI=\"audio/index.m3u8\"") && cmaf_master.contains("360p/index.m3u8"),
        "{cmaf_master}"
    );
    // The TS set at the usual URLs is as a `ts` stream's: MPEG-TS with AES-128.
    let (status, ts) = server.get_text(&format!("/hls/{id}/360p/index.m3u8")).await;
    assert_eq!(status, 200);
    assert!(
        ts.contains("#EXT-X-KEY:METHOD=AES-128,URI=") && ts.contains(".ts\n"),
        "{ts}"
    );
    assert!(
        !ts.contains("#EXT-X-MAP") && !ts.contains("#EXT-X-PART"),
        "{ts}"
    );
    let probe = ffprobe(&server.url(&format!("/hls/{id}/master.m3u8"))).await;
    assert!(
        probe["streams"].as_array().is_some_and(|s| s.len() >= 2),
        "ffprobe reads the TS set with its keys: {probe}"
    );
    // DASH lists the CMAF set, from the top, with the scheme it was encrypted with.
    let (status, mpd) = server.get_text(&format!("/dash/{id}/manifest.mpd")).await;
    assert_eq!(status, 200, "{mpd}");
    assert!(
        mpd.contains("<BaseURL>cmaf/</BaseURL>")
            && mpd.contains("type=\"dynamic\"")
            && mpd.contains("value=\"cenc\""),
        "{mpd}"
    );
    let content_key = clearkey(&server, &id, &cmaf).await;
    let init = fetch(&server, &format!("/dash/{id}/cmaf/360p/init.mp4")).await;
    assert!(init.windows(4).any(|w| w == b"cenc"), "schm is cenc");
    let fragment = first_fragment(&cmaf);
    let bytes = fetch(&server, &format!("/dash/{id}/cmaf/360p/{fragment}")).await;
    let (frames, garbled) = decrypted_frames(&init, &bytes, &content_key);
    assert!(frames >= 50, "{frames} frames in a 2 s fragment at 30 fps");
    assert!(garbled, "without the key the frames do not decode");
    // The same file through the HLS URL; no TS file under the CMAF URLs.
    assert_eq!(
        fetch(&server, &format!("/hls/{id}/cmaf/360p/{fragment}")).await,
        bytes
    );
    let ts_segment = ts.lines().find(|l| l.ends_with(".ts")).unwrap();
    assert_eq!(
        server
            .get_text(&format!("/hls/{id}/cmaf/360p/{ts_segment}"))
            .await
            .0,
        404
    );

    // The recording keeps both sets, finished, and says how it was packaged.
    assert!(ffmpeg.wait(Duration::from_secs(60)).await, "ffmpeg ends");
    let recording = eventually("the recording", Duration::from_secs(60), || async {
        let (_, list) = server.call("GET", "/v1/assets", Some(&key), None).await;
        list["data"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["status"] == "ready").cloned())
    })
    .await;
    assert_eq!(
        (&recording["packaging"], &recording["cenc_scheme"]),
        (&json!("both"), &json!("cenc")),
        "{recording}"
    );
    let rid = recording["playback_id"].as_str().unwrap();
    let (status, mpd) = server.get_text(&format!("/dash/{rid}/manifest.mpd")).await;
    assert_eq!(status, 200);
    assert!(
        mpd.contains("type=\"static\"") && mpd.contains("<BaseURL>cmaf/</BaseURL>"),
        "{mpd}"
    );
    let (_, finished) = server
        .get_text(&format!("/hls/{rid}/cmaf/480p/index.m3u8"))
        .await;
    assert!(
        finished.contains("#EXT-X-ENDLIST") && !finished.contains("#EXT-X-PART:"),
        "{finished}"
    );
    let probe = ffprobe(&server.url(&format!("/hls/{rid}/master.m3u8"))).await;
    let seconds: f64 = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_default();
    assert!(seconds >= 8.0, "the TS recording plays: {probe}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_packaged_as_cmaf_plays_as_hls_and_a_static_dash_manifest() {
    let media = tempfile::tempdir().unwrap();
    let file = make_media(
        media.path(),
        "clip.mp4",
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
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Uploads").await;
    let upload = |packaging: &'static str| {
        let form = reqwest::multipart::Form::new()
            .text("playback_policy", "public")
            .text("packaging", packaging)
            .part(
                "file",
                reqwest::multipart::Part::bytes(std::fs::read(&file).unwrap())
                    .file_name("clip.mp4"),
            );
        server
            .client
            .post(server.url("/v1/assets"))
            .bearer_auth(&key)
            .multipart(form)
            .send()
    };
    let refused = upload("webm").await.unwrap();
    assert_eq!(refused.status(), 400);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("must be ts, cmaf or both"),
        "a clear error"
    );
    let created = upload("cmaf").await.unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let asset_id = created["asset_id"].as_str().unwrap().to_string();
    let asset = eventually("the asset to settle", Duration::from_secs(120), || async {
        let (_, a) = server
            .call("GET", &format!("/v1/assets/{asset_id}"), Some(&key), None)
            .await;
        matches!(a["status"].as_str(), Some("ready" | "errored")).then_some(a)
    })
    .await;
    assert_eq!(asset["status"], "ready", "{asset}");
    assert_eq!(
        (&asset["packaging"], &asset["cenc_scheme"]),
        (&json!("cmaf"), &Value::Null)
    );
    let id = asset["playback_id"].as_str().unwrap();

    let (status, master) = server.get_text(&format!("/hls/{id}/master.m3u8")).await;
    assert_eq!(status, 200);
    let rendition = master
        .lines()
        .find(|l| l.ends_with("/index.m3u8") && !l.starts_with('#'))
        .unwrap()
        .trim_end_matches("/index.m3u8")
        .to_string();
    let (_, playlist) = server
        .get_text(&format!("/hls/{id}/{rendition}/index.m3u8"))
        .await;
    for tag in [
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-MAP:URI=\"init.mp4\"",
        "METHOD=SAMPLE-AES,",
        "#EXT-X-ENDLIST",
    ] {
        assert!(playlist.contains(tag), "{tag} in {playlist}");
    }
    let (status, mpd) = server.get_text(&format!("/dash/{id}/manifest.mpd")).await;
    assert_eq!(status, 200);
    assert!(
        mpd.contains("type=\"static\" mediaPresentationDuration=\"PT")
            && mpd.contains("value=\"cbcs\"")
            && !mpd.contains("BaseURL"),
        "{mpd}"
    );
    let content_key = clearkey(&server, id, &playlist).await;
    let init = fetch(&server, &format!("/dash/{id}/{rendition}/init.mp4")).await;
    let fragment = first_fragment(&playlist);
    let bytes = fetch(&server, &format!("/dash/{id}/{rendition}/{fragment}")).await;
    let (frames, garbled) = decrypted_frames(&init, &bytes, &content_key);
    assert!(frames >= 30, "{frames} frames in the first fragment");
    assert!(garbled, "without the key the frames do not decode");
    // Not packaged as `both`: there is no CMAF set beside.
    assert_eq!(
        server
            .get_text(&format!("/hls/{id}/cmaf/master.m3u8"))
            .await
            .0,
        404
    );
    server.stop().await;
}
