//! WHIP and WHEP: headless Chromium publishes its fake camera and microphone over WebRTC into
//! a live stream (VP8, and H.264 forced with setCodecPreferences); a second Chromium plays the
//! resulting HLS with hls.js, or the stream itself over WHEP. Bad offers, unsupported codecs,
//! wrong keys and missing tokens are refused.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use common::media::{Encrypted, browser_play, eventually, gstreamer_publish};
use ferrocast::pipeline::webrtc::RawCodec;
use ferrocast::pipeline::whep::WhepFanout;
use serde_json::{Value, json};

/// Runs a script of tests/browser with `args`; resolves to its JSON report.
fn browser_script(script: &'static str, args: Vec<String>) -> tokio::task::JoinHandle<Value> {
    let node_modules = std::env::var("BROWSER_TEST_NODE_MODULES").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ferrocast/npm/node_modules",
            std::env::var("HOME").unwrap()
        )
    });
    let path = format!("{}/tests/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    tokio::task::spawn_blocking(move || {
        let out = common::output_within(
            Command::new("node")
                .env("NODE_PATH", &node_modules)
                .arg(&path)
                .args(&args),
            Duration::from_secs(180),
            &format!("node {script} (Debian packages nodejs npm chromium)"),
        );
        assert!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "{script} printed no JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    })
}

/// Runs tests/browser/whip.cjs in the background; resolves to its JSON report.
fn whip_publish(url: &str, seconds: u32, codec: &str) -> tokio::task::JoinHandle<Value> {
    browser_script(
        "whip.cjs",
        vec![url.to_string(), seconds.to_string(), codec.to_string()],
    )
}

/// Runs tests/browser/whep.cjs in the background: a Chromium viewer of `playback_id` for
/// `seconds`, then `extra` arguments (token, mode); resolves to its JSON report.
fn whep_watch(
    server: &TestServer,
    playback_id: &str,
    seconds: u32,
    extra: &[&str],
) -> tokio::task::JoinHandle<Value> {
    let mut args = vec![
        server.url(&format!("/whep/{playback_id}")),
        seconds.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    browser_script("whep.cjs", args)
}

/// Waits until a WHEP viewer has joined live stream `id`; returns the fan-out serving it.
async fn joined_fanout(server: &TestServer, id: &str) -> Arc<WhepFanout> {
    eventually("the viewer to join", Duration::from_secs(30), || async {
        (!server.state.whep.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    server
        .state
        .live
        .tap(id)
        .unwrap()
        .current_fanout()
        .expect("the viewer's fan-out")
}

/// A whep.cjs report's frames decoded, one reading per second.
fn frames_decoded(viewer: &Value) -> Vec<u64> {
    viewer["framesDecoded"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect()
}

/// A public live stream, not recorded, with `options` added; returns (id, stream key, playback id).
async fn live_stream(server: &TestServer, key: &str, options: Value) -> (String, String, String) {
    let mut body = json!({"playback_policy": "public", "reconnect_window_s": 0, "record": false});
    for (k, v) in options.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, s) = server
        .call("POST", "/v1/live-streams", Some(key), Some(body))
        .await;
    assert_eq!(status, 201, "{s}");
    (
        s["id"].as_str().unwrap().into(),
        s["stream_key"].as_str().unwrap().into(),
        s["playback_id"].as_str().unwrap().into(),
    )
}

/// Waits (up to 40 s) until the live stream is active and `ready` holds; returns the stream.
async fn until_active(
    server: &TestServer,
    key: &str,
    id: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    // Chromium can take 10 s and more to start when the machine is busy or its files are not
    // cached (the first test after a build).
    eventually(
        "the stream to go active",
        Duration::from_secs(40),
        || async {
            let (_, s) = server
                .call("GET", &format!("/v1/live-streams/{id}"), Some(key), None)
                .await;
            (s["status"] == "active" && ready(&s)).then_some(s)
        },
    )
    .await
}

/// Whether a live stream's H.264 video has arrived (a WHEP viewer can join).
fn has_video(stream: &Value) -> bool {
    stream["ingest"]["video_codec"] == "H.264"
}

async fn publish_and_play(server: &TestServer, key: &str, codec: &str, expect_mime: &str) {
    let (id, stream_key, playback_id) = live_stream(server, key, json!({})).await;
    let publisher = whip_publish(&server.url(&format!("/whip/{stream_key}")), 16, codec);
    let stream = until_active(server, key, &id, |s| {
        s["ingest"]["renditions"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    assert_eq!(stream["ingest"]["video_codec"], "H.264", "{stream}");
    let master = server.url(&format!("/hls/{playback_id}/master.m3u8"));
    eventually("the first segments", Duration::from_secs(20), || async {
        let r = server.client.get(&master).send().await.unwrap();
        (r.status() == 200).then_some(())
    })
    .await;
    let played = browser_play(&server.url(&format!("/play/{playback_id}")), 3, 30).await;
    eprintln!("{codec}: {played:?}");
    played.assert_plays(3.0, Encrypted::Yes);
    let report = publisher.await.unwrap();
    assert_eq!(report["status"], 201, "{report}");
    assert_eq!(report["connected"], true, "{report}");
    assert!(report["framesSent"].as_u64().unwrap() > 100, "{report}");
    assert_eq!(report["codec"], expect_mime, "{report}");
    assert_eq!(report["deleteStatus"], 200, "{report}");
    let ports: Vec<u64> = report["candidatePorts"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    assert!(
        !ports.is_empty() && ports.iter().all(|p| (40100..=40199).contains(p)),
        "answer candidates within webrtc.port_min..port_max: {ports:?}"
    );
    assert_eq!(
        report["candidateIps"],
        json!(["127.0.0.1"]),
        "host candidates carry webrtc.nat_1to1_ips: {report}"
    );
    // DELETE ends the broadcast like an RTMP publisher leaving: ENDLIST, then idle.
    eventually("the stream to end", Duration::from_secs(15), || async {
        let (_, s) = server
            .call("GET", &format!("/v1/live-streams/{id}"), Some(key), None)
            .await;
        (s["status"] == "idle").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_over_whip_with_vp8_and_h264_and_hls_js_plays_it() {
    let server = TestServer::start_with(|c| {
        c.http.request_timeout_s = 60;
        c.webrtc.port_min = 40100;
        c.webrtc.port_max = 40199;
        // As behind 1:1 NAT, with loopback as the "public" address.
        c.webrtc.nat_1to1_ips = "127.0.0.1".into();
    })
    .await;
    let (_, key) = server.create_tenant("Browser TV").await;
    publish_and_play(&server, &key, "VP8", "video/VP8").await;
    publish_and_play(&server, &key, "H264", "video/H264").await;
    server.stop().await;
}

const AV1_ONLY: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 45\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:45 AV1/90000\r\n";

async fn post_sdp(
    server: &TestServer,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    let r = server
        .client
        .post(server.url(path))
        .header("Content-Type", content_type)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_whip_requests_get_a_4xx_with_a_reason_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Strict").await;
    let (_, stream_key, _) = live_stream(&server, &key, json!({})).await;
    let path = format!("/whip/{stream_key}");

    let (status, body) = post_sdp(&server, &path, "application/sdp", "hello").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("v=0"), "{body}");
    let (status, body) = post_sdp(&server, &path, "application/sdp", AV1_ONLY).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("AV1") && body.contains("VP8"), "{body}");
    let (status, _) = post_sdp(&server, &path, "text/plain", AV1_ONLY).await;
    assert_eq!(status, 415);
    let (status, body) = post_sdp(
        &server,
        "/whip/not-a-key",
        "application/sdp",
        &AV1_ONLY.replace("AV1", "VP8"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let r = server
        .client
        .post(server.url("/whip"))
        .header("Content-Type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no bearer stream key");

    // CORS preflight, trickle refused, unknown session.
    let r = server
        .client
        .request(reqwest::Method::OPTIONS, server.url(&path))
        .header("Origin", "https://studio.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(
        r.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(r.headers()["accept-post"], "application/sdp");
    let r = server
        .client
        .patch(server.url("/whip/sessions/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = server
        .client
        .delete(server.url("/whip/sessions/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Nothing of that left the stream active, and the server still answers.
    let (_, s) = server
        .call("GET", "/v1/live-streams", Some(&key), None)
        .await;
    assert!(
        s["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "idle"),
        "{s}"
    );
    let r = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_viewer_watches_a_whip_broadcast_with_a_token() {
    let server = TestServer::start_with(|c| c.http.request_timeout_s = 60).await;
    let (_, key) = server.create_tenant("Realtime").await;
    let (status, s) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&key),
            Some(json!({"playback_policy": "signed", "reconnect_window_s": 0, "record": false})),
        )
        .await;
    assert_eq!(status, 201);
    let (id, stream_key, playback_id) = (
        s["id"].as_str().unwrap().to_string(),
        s["stream_key"].as_str().unwrap().to_string(),
        s["playback_id"].as_str().unwrap().to_string(),
    );
    let whep = server.url(&format!("/whep/{playback_id}"));

    // Not live yet: 409; a signed stream without a token: 401.
    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=recvonly\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n";
    let post = |token: Option<&str>| {
        let mut req = server
            .client
            .post(&whep)
            .header("Content-Type", "application/sdp")
            .body(offer);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    let (_, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": playback_id, "expires_in": 600})),
        )
        .await;
    let token = t["token"].as_str().unwrap().to_string();
    assert_eq!(
        post(Some(&token)).await.unwrap().status(),
        409,
        "not live yet"
    );

    // The publisher's video is its own clock, so the viewer can tell glass-to-glass latency.
    let publisher = browser_script(
        "whip.cjs",
        vec![
            server.url(&format!("/whip/{stream_key}")),
            "16".into(),
            "H264".into(),
            "clock".into(),
        ],
    );
    until_active(&server, &key, &id, has_video).await;
    let viewer = whep_watch(&server, &playback_id, 6, &[&token]);
    let fanout = joined_fanout(&server, &id).await;
    assert!(
        fanout.copies(RawCodec::Opus) && fanout.video_codec() == "H264",
        "the publisher's Opus and H.264 reach WHEP viewers as they are"
    );
    drop(fanout);
    let viewer = viewer.await.unwrap();
    eprintln!("WHEP viewer: {viewer}");
    assert_eq!(viewer["status"], 201, "{viewer}");
    assert_eq!(viewer["connected"], true, "{viewer}");
    assert_eq!(viewer["codec"], "video/H264", "{viewer}");
    let frames = frames_decoded(&viewer);
    assert!(
        frames.len() >= 4
            && frames.windows(2).all(|w| w[1] >= w[0])
            && frames[frames.len() - 1] >= frames[0] + 40,
        "frames decoded should keep increasing: {frames:?}"
    );
    assert!(viewer["audioPackets"].as_u64().unwrap() > 50, "{viewer}");
    assert_eq!(viewer["deleteStatus"], 200, "{viewer}");
    // Publisher canvas -> viewer canvas: sub-second, as the README says, with room to spare.
    let mut lags: Vec<u64> = viewer["glassToGlassMs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    lags.sort_unstable();
    let report = publisher.await.unwrap();
    eprintln!("WHIP publisher: {report}");
    assert!(
        !lags.is_empty(),
        "the viewer read the publisher's clock: {viewer}"
    );
    let median = lags[lags.len() / 2];
    eprintln!(
        "glass-to-glass over WHIP -> WHEP: median {median} ms, {} samples",
        lags.len()
    );
    assert!(
        median < 500,
        "glass-to-glass latency {median} ms (median of {}), not sub-second with room: {lags:?}",
        lags.len()
    );
    assert_eq!(report["status"], 201, "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_viewer_watches_an_rtmp_broadcast_with_its_aac_made_opus() {
    let server = TestServer::start_with(|c| c.http.request_timeout_s = 60).await;
    let (_, key) = server.create_tenant("Encoder").await;
    let (id, stream_key, playback_id) =
        live_stream(&server, &key, json!({"ladder": "passthrough"})).await;
    // GStreamer's RTMP client: x264 without B-frames, which WebRTC players cannot take.
    let _publisher = gstreamer_publish(&format!("{}/{stream_key}", server.rtmp_url), 16);
    until_active(&server, &key, &id, has_video).await;
    let viewer = whep_watch(&server, &playback_id, 5, &[]).await.unwrap();
    eprintln!("WHEP viewer of an RTMP broadcast: {viewer}");
    assert_eq!(viewer["status"], 201, "{viewer}");
    assert_eq!(viewer["codec"], "video/H264", "{viewer}");
    let frames = frames_decoded(&viewer);
    assert!(
        frames.len() >= 4 && frames[frames.len() - 1] >= frames[0] + 40,
        "frames decoded should keep increasing: {frames:?}"
    );
    // 5 s of 20 ms Opus packets, encoded once for all viewers from the broadcast's AAC.
    assert!(viewer["audioPackets"].as_u64().unwrap() > 100, "{viewer}");
    let fanout = server
        .state
        .live
        .tap(&id)
        .unwrap()
        .current_fanout()
        .expect("the viewer's fan-out");
    assert!(
        !fanout.copies(RawCodec::Opus) && fanout.video_codec() == "H264",
        "AAC cannot be copied into WebRTC; H.264 is"
    );
    drop(fanout);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_viewer_of_a_vp8_whip_broadcast_gets_its_vp8_and_opus_as_they_came() {
    let server = TestServer::start_with(|c| c.http.request_timeout_s = 60).await;
    let (_, key) = server.create_tenant("Copier").await;
    let (id, stream_key, playback_id) =
        live_stream(&server, &key, json!({"ladder": "passthrough"})).await;
    let publisher = whip_publish(&server.url(&format!("/whip/{stream_key}")), 16, "VP8");
    until_active(&server, &key, &id, has_video).await;
    let viewer = whep_watch(&server, &playback_id, 5, &[]);
    let fanout = joined_fanout(&server, &id).await;
    assert!(
        fanout.copies(RawCodec::Vp8) && fanout.copies(RawCodec::Opus),
        "the publisher's VP8 and Opus reach WHEP viewers as they are"
    );
    drop(fanout);
    let viewer = viewer.await.unwrap();
    eprintln!("WHEP viewer of a VP8 broadcast: {viewer}");
    // The broadcast itself (HLS) is H.264; the WebRTC viewer gets the VP8 it was made from.
    assert_eq!(viewer["codec"], "video/VP8", "{viewer}");
    let frames = frames_decoded(&viewer);
    assert!(
        frames.len() >= 4 && frames[frames.len() - 1] >= frames[0] + 40,
        "frames decoded should keep increasing: {frames:?}"
    );
    // It joined between keyframes: its request reached the browser at once.
    assert!(
        viewer["firstFrameMs"].as_u64().is_some_and(|ms| ms < 3000),
        "{viewer}"
    );
    assert!(viewer["audioPackets"].as_u64().unwrap() > 100, "{viewer}");
    let (_, s) = server
        .call("GET", &format!("/v1/live-streams/{id}"), Some(&key), None)
        .await;
    assert_eq!(s["ingest"]["video_codec"], "H.264", "{s}");
    assert_eq!(publisher.await.unwrap()["deleteStatus"], 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_publisher_that_vanishes_without_delete_ends_the_broadcast() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Flaky").await;
    let (id, stream_key, _) = live_stream(&server, &key, json!({})).await;
    let report = browser_script(
        "whip.cjs",
        vec![
            server.url(&format!("/whip/{stream_key}")),
            "5".into(),
            "VP8".into(),
            "vanish".into(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(report["connected"], true, "{report}");
    // The browser is gone (no DELETE): the broadcast ends by itself.
    // Dropped after about 10 s of silence (the README), within 13 s.
    let gone = std::time::Instant::now();
    eventually("the broadcast to end", Duration::from_secs(13), || async {
        let (_, s) = server
            .call("GET", &format!("/v1/live-streams/{id}"), Some(&key), None)
            .await;
        (s["status"] == "idle").then_some(())
    })
    .await;
    eprintln!("vanished publisher dropped after {:?}", gone.elapsed());
    assert!(
        server.state.whip.lock().unwrap().is_empty(),
        "session forgotten"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_packets_from_a_whip_publisher_are_asked_for_and_resent() {
    // Every 40th video packet is lost on the way in (WHIP). ICE gathers on loopback only.
    let server = TestServer::start_with(|c| {
        c.http.request_timeout_s = 60;
        c.webrtc.simulate_loss_every = 40;
        c.webrtc.interface_ips = "127.0.0.1".into();
    })
    .await;
    let (_, key) = server.create_tenant("Lossy").await;
    let (id, stream_key, playback_id) = live_stream(&server, &key, json!({})).await;
    let publisher = browser_script(
        "whip.cjs",
        vec![
            server.url(&format!("/whip/{stream_key}")),
            "14".into(),
            "H264".into(),
        ],
    );
    until_active(&server, &key, &id, has_video).await;
    let viewer = whep_watch(&server, &playback_id, 6, &[]).await.unwrap();
    let report = publisher.await.unwrap();
    eprintln!("WHEP viewer: {viewer}\nWHIP publisher: {report}");

    assert_eq!(
        report["candidateIps"],
        json!(["127.0.0.1"]),
        "host candidates only on webrtc.interface_ips: {report}"
    );
    // In: the server's jitter buffer asked for the lost packets, and Chromium resent them
    // on the RTX stream the answer kept.
    assert_eq!(report["answerRtx"], true, "{report}");
    assert!(report["nackCount"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["retransmittedPacketsSent"].as_u64().unwrap() > 0,
        "{report}"
    );
    // Out: what was repaired reaches a WHEP viewer, whose picture keeps going.
    let frames = frames_decoded(&viewer);
    assert!(
        frames.len() >= 4 && frames[frames.len() - 1] >= frames[0] + 40,
        "frames decoded should keep increasing: {frames:?}"
    );
    // Every 40th video packet to the viewer is lost too: it asks (NACK), the server sends the
    // same packet again, and nearly nothing stays lost.
    assert_eq!(
        viewer["answerRtx"], false,
        "plain resends, no RTX: {viewer}"
    );
    let nacks = viewer["nackCount"].as_u64().unwrap();
    assert!(nacks > 0, "{viewer}");
    let (_, metrics) = server.get_text("/metrics").await;
    let resent = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferrocast_whep_resent_packets_total "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(resent > 0, "the server resent packets: {metrics}");
    // Four in five repaired; with a handful of losses (a slow start leaves few), one may stay
    // lost: a fresh-clone run once had 1 lost against 3 resent.
    assert!(
        viewer["packetsLost"].as_i64().unwrap() * 4 <= (resent as i64).max(4),
        "most lost packets should be repaired: {resent} resent, {viewer}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_viewer_that_vanishes_without_delete_is_dropped() {
    let server = TestServer::start_with(|c| c.http.request_timeout_s = 60).await;
    let (_, key) = server.create_tenant("Vanishing").await;
    let (id, stream_key, playback_id) =
        live_stream(&server, &key, json!({"ladder": "passthrough"})).await;
    let publisher = whip_publish(&server.url(&format!("/whip/{stream_key}")), 25, "H264");
    until_active(&server, &key, &id, has_video).await;
    // The browser is killed after 4 s: no DELETE, no DTLS close, no RTCP BYE.
    let viewer = whep_watch(&server, &playback_id, 4, &["", "vanish"])
        .await
        .unwrap();
    assert_eq!(viewer["connected"], true, "{viewer}");
    assert_eq!(server.state.whep.lock().unwrap().len(), 1, "still counted");
    let gone = std::time::Instant::now();
    // Dropped after about 10 s of silence (the README), within 13 s.
    eventually(
        "the viewer to be dropped",
        Duration::from_secs(13),
        || async { server.state.whep.lock().unwrap().is_empty().then_some(()) },
    )
    .await;
    eprintln!("vanished viewer dropped after {:?}", gone.elapsed());
    // And its branch is out of the fan-out (its removal did not hang).
    let fanout = server
        .state
        .live
        .tap(&id)
        .unwrap()
        .current_fanout()
        .unwrap();
    eventually("the branch to go", Duration::from_secs(5), || async {
        (fanout.viewer_count() == 0).then_some(())
    })
    .await;
    drop(fanout);
    let report = publisher.await.unwrap();
    assert_eq!(
        report["deleteStatus"], 200,
        "the publisher was unaffected: {report}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_viewer_joining_mid_stream_gets_a_keyframe_from_the_whip_publisher_at_once() {
    // The publisher is asked for a keyframe only once a minute (and never makes one on its
    // own): a viewer joining in between sees a picture only if its request (RTCP PLI) is
    // passed on to the publisher.
    let server = TestServer::start_with(|c| {
        c.http.request_timeout_s = 60;
        c.webrtc.keyframe_interval_s = 60;
        c.live.stall_timeout_s = 60;
    })
    .await;
    let (_, key) = server.create_tenant("Joiner").await;
    let (id, stream_key, playback_id) =
        live_stream(&server, &key, json!({"ladder": "passthrough"})).await;
    let publisher = whip_publish(&server.url(&format!("/whip/{stream_key}")), 20, "H264");
    until_active(&server, &key, &id, has_video).await;
    // Well past the publisher's first keyframe.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let viewer = whep_watch(&server, &playback_id, 5, &[]).await.unwrap();
    eprintln!("WHEP viewer: {viewer}");
    assert_eq!(viewer["status"], 201, "{viewer}");
    let first_frame = viewer["firstFrameMs"].as_u64();
    assert!(
        first_frame.is_some_and(|ms| ms <= 1500),
        "the viewer's first frame should come within 1.5 s (the README: about 1 s), not at \
         the next scheduled keyframe a minute later: {viewer}"
    );
    let frames = frames_decoded(&viewer);
    assert!(
        frames.last().is_some_and(|&n| n >= 30),
        "frames decoded should keep increasing: {frames:?}"
    );
    // The viewer asked (RTCP PLI) and its request went to the publisher. Under load the
    // publisher can make a keyframe of its own just as a viewer joins (its loss recovery with
    // the server), and that viewer needs to ask for none: then a second one joins, and the
    // check is made on it.
    let asked = if viewer["pliCount"].as_u64().unwrap() > 0 {
        viewer
    } else {
        eprintln!("a keyframe came without the viewer asking: a second viewer joins");
        let again = whep_watch(&server, &playback_id, 3, &[]).await.unwrap();
        eprintln!("second WHEP viewer: {again}");
        assert!(
            again["firstFrameMs"].as_u64().is_some_and(|ms| ms <= 1500),
            "{again}"
        );
        again
    };
    assert!(
        asked["pliCount"].as_u64().unwrap() > 0,
        "the viewer joined between keyframes and asked for one: {asked}"
    );
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferrocast_whep_keyframe_requests_total ") && !l.ends_with(" 0")),
        "keyframe requests counted: {metrics}"
    );
    // The publisher was asked for a keyframe and made one besides its first.
    let report = publisher.await.unwrap();
    eprintln!("WHIP publisher: {report}");
    assert!(
        report["keyframeRequests"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        report["keyFramesEncoded"].as_u64().unwrap() >= 2,
        "{report}"
    );
    server.stop().await;
}
