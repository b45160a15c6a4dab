//! Live: real publishers (ffmpeg, GStreamer's rtmp2sink) push RTMP into a real server; ffprobe
//! and headless Chromium with hls.js play the encrypted ladder from storage.

mod common;

use std::time::Duration;

use common::TestServer;
use common::media::{
    self, Encrypted, browser_play, browser_play_to_end, eventually, ffmpeg_publish, ffprobe,
    gstreamer_publish,
};
use serde_json::{Value, json};

struct Stream {
    id: String,
    playback_id: String,
    publish_url: String,
}

async fn create_stream(server: &TestServer, tenant_key: &str, body: Value) -> Stream {
    let (status, s) = server
        .call("POST", "/v1/live-streams", Some(tenant_key), Some(body))
        .await;
    assert_eq!(status, 201, "{s}");
    assert_eq!(s["status"], "idle");
    assert_eq!(s["rtmp_url"], server.rtmp_url.as_str());
    Stream {
        id: s["id"].as_str().unwrap().into(),
        playback_id: s["playback_id"].as_str().unwrap().into(),
        publish_url: format!(
            "{}/{}",
            s["rtmp_url"].as_str().unwrap(),
            s["stream_key"].as_str().unwrap()
        ),
    }
}

/// A server with the embedded defaults, a tenant "Acme" (its API key) and one live stream.
async fn server_with_stream(body: Value) -> (TestServer, String, Stream) {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Acme").await;
    let stream = create_stream(&server, &key, body).await;
    (server, key, stream)
}

/// Waits (up to `limit`) until `path` is served with 200; returns its body.
async fn until_served(server: &TestServer, path: &str, limit: Duration) -> String {
    eventually(&format!("{path} to be served"), limit, || async {
        let (status, body) = server.get_text(path).await;
        (status == 200).then_some(body)
    })
    .await
}

/// `GET /v1/live-streams/{id}`, as its tenant sees it.
async fn stream_json(server: &TestServer, tenant_key: &str, id: &str) -> Value {
    let path = format!("/v1/live-streams/{id}");
    let (status, s) = server.call("GET", &path, Some(tenant_key), None).await;
    assert_eq!(status, 200, "{s}");
    s
}

async fn token(server: &TestServer, tenant_key: &str, playback_id: &str) -> String {
    let (status, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(tenant_key),
            Some(json!({"playback_id": playback_id, "expires_in": 600})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

/// The tenant's first asset to become ready (a broadcast's recording).
async fn ready_asset(
    server: &TestServer,
    tenant_id: &str,
    limit: Duration,
) -> ferrocast::db::Asset {
    eventually("the recording asset", limit, || async {
        let assets = server
            .state
            .jobs
            .db
            .list_assets(tenant_id, None, 10)
            .await
            .unwrap();
        assets
            .into_iter()
            .find(|a| a.status == ferrocast::db::AssetStatus::Ready)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_720p_and_viewers_play_the_encrypted_ladder_live_and_recorded() {
    let server = TestServer::start_with(|c| c.http.request_timeout_s = 60).await;
    let (tenant_id, key) = server.create_tenant("Acme TV").await;
    let stream = create_stream(&server, &key, json!({"reconnect_window_s": 0})).await;
    let token = token(&server, &key, &stream.playback_id).await;
    let mut ffmpeg = ffmpeg_publish(&stream.publish_url, 1280, 720, 16);

    // The stream goes active and reports what the publisher sends.
    let ingest = eventually(
        "the stream to report its ingest",
        Duration::from_secs(20),
        || async {
            let s = stream_json(&server, &key, &stream.id).await;
            (s["status"] == "active"
                && s["ingest"]["renditions"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty()))
            .then(|| s["ingest"].clone())
        },
    )
    .await;
    assert_eq!(ingest["video_codec"], "H.264");
    assert_eq!(ingest["audio_codec"], "AAC");
    assert_eq!(ingest["width"], 1280);
    let names: Vec<_> = ingest["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["source", "720p", "480p", "360p"],
        "1080p must not be made from a 720p source"
    );

    // The master playlist appears, with every rendition; ffprobe reads it through the key.
    let master_path = format!("/hls/{}/master.m3u8?token={token}", stream.playback_id);
    let master = eventually("the master playlist", Duration::from_secs(20), || async {
        let (status, body) = server.get_text(&master_path).await;
        (status == 200).then_some(body)
    })
    .await;
    for attr in [
        "BANDWIDTH=",
        "AVERAGE-BANDWIDTH=",
        "RESOLUTION=1280x720",
        "RESOLUTION=854x480",
        "RESOLUTION=640x360",
        "FRAME-RATE=30",
        "CODECS=\"avc1.",
        "mp4a.40.2",
    ] {
        assert!(master.contains(attr), "{attr} missing from:\n{master}");
    }
    assert!(
        master.contains(&format!("index.m3u8?token={token}")),
        "token not carried into variant URIs"
    );
    let probe = ffprobe(&server.url(&master_path)).await;
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
    // The scaled rungs keep the colour matrix of their 720p frames (BT.709 where the source
    // does not say): none is converted to BT.601 on the way down, and each one says so.
    for s in probe["streams"].as_array().unwrap() {
        if s["codec_type"] == "video" && s["height"].as_u64().unwrap() < 720 {
            assert_eq!(s["color_space"], "bt709", "{s}");
        }
    }

    // A media playlist lists AES-128 segments with explicit IVs and key URIs on this server.
    let (status, media) = server
        .get_text(&format!(
            "/hls/{}/720p/index.m3u8?token={token}",
            stream.playback_id
        ))
        .await;
    assert_eq!(status, 200);
    assert!(
        media.contains("#EXT-X-KEY:METHOD=AES-128,URI=\""),
        "{media}"
    );
    assert!(media.contains(",IV=0x"), "{media}");
    assert!(
        media.contains("/keys/") && media.contains(&format!("?token={token}")),
        "{media}"
    );
    assert!(
        !media.contains("#EXT-X-ENDLIST"),
        "live playlist ended early:\n{media}"
    );

    // Without a token nothing plays: no playlists, no key.
    let (status, _) = server
        .get_text(&format!("/hls/{}/master.m3u8", stream.playback_id))
        .await;
    assert_eq!(status, 401);
    let key_uri = media
        .split("URI=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let bare_key = key_uri.split('?').next().unwrap().to_string();
    let resp = server.client.get(&bare_key).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = server.client.get(&key_uri).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store, private");
    assert_eq!(resp.bytes().await.unwrap().len(), 16);

    // A viewer's browser plays the live stream with the token, and fetches the key.
    let played = browser_play(
        &server.url(&format!("/play/{}?token={token}", stream.playback_id)),
        5,
        40,
    )
    .await;
    played.assert_plays(5.0, Encrypted::Yes);

    // Publisher stops: ENDLIST within 1.5 s, and the recording becomes an asset that plays.
    assert!(ffmpeg.wait(Duration::from_secs(30)).await, "ffmpeg failed");
    let stopped = std::time::Instant::now();
    eventually(
        "EXT-X-ENDLIST after the publisher stopped",
        Duration::from_millis(1500),
        || async {
            let (_, media) = server
                .get_text(&format!(
                    "/hls/{}/720p/index.m3u8?token={token}",
                    stream.playback_id
                ))
                .await;
            media.contains("#EXT-X-ENDLIST").then_some(())
        },
    )
    .await;
    eprintln!(
        "ENDLIST {:?} after the publisher stopped",
        stopped.elapsed()
    );
    let asset = ready_asset(&server, &tenant_id, Duration::from_secs(15)).await;
    assert_eq!(asset.live_stream_id.as_deref(), Some(stream.id.as_str()));
    let duration = asset.duration_ms.unwrap() as f64 / 1000.0;
    assert!(
        (15.0..=17.0).contains(&duration),
        "recorded {duration} s of a 16 s broadcast"
    );
    let asset_token = self::token(&server, &key, &asset.playback_id).await;
    let (status, vod) = server
        .get_text(&format!(
            "/hls/{}/360p/index.m3u8?token={asset_token}",
            asset.playback_id
        ))
        .await;
    assert_eq!(status, 200);
    assert!(
        vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.contains("#EXT-X-ENDLIST"),
        "{vod}"
    );
    let probe = ffprobe(&server.url(&format!(
        "/hls/{}/master.m3u8?token={asset_token}",
        asset.playback_id
    )))
    .await;
    let recorded: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (15.0..=17.0).contains(&recorded),
        "ffprobe sees {recorded} s"
    );

    // The stream is idle again, ready for the next broadcast.
    let s = stream_json(&server, &key, &stream.id).await;
    assert_eq!(s["status"], "idle");
    assert!(s["last_error"].is_null(), "{s}");

    // Nothing in the database or the storage folder holds a content key in clear.
    let clear_key = server
        .client
        .get(&key_uri)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    server.assert_nowhere_on_disk(&clear_key).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_a_token_cannot_get_the_key_and_does_not_play() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Acme").await;
    let stream = create_stream(&server, &key, json!({"ladder": "passthrough"})).await;
    let token = token(&server, &key, &stream.playback_id).await;
    let _ffmpeg = ffmpeg_publish(&stream.publish_url, 640, 360, 30);
    eventually("the master playlist", Duration::from_secs(20), || async {
        let (status, _) = server
            .get_text(&format!(
                "/hls/{}/master.m3u8?token={token}",
                stream.playback_id
            ))
            .await;
        (status == 200).then_some(())
    })
    .await;
    let played = browser_play(&server.url(&format!("/play/{}", stream.playback_id)), 3, 12).await;
    assert!(
        played.current_time < 0.5,
        "played without a token: {played:?}"
    );
    // The page says why instead of starting a player that cannot play.
    assert_eq!(played.state, "token_required", "{played:?}");

    // A token for another playback id does not unlock this stream's key either.
    let other = create_stream(&server, &key, json!({})).await;
    let other_token = self::token(&server, &key, &other.playback_id).await;
    let (status, _) = server
        .get_text(&format!(
            "/hls/{}/master.m3u8?token={other_token}",
            stream.playback_id
        ))
        .await;
    assert_eq!(status, 403);
    let (_, media) = server
        .get_text(&format!(
            "/hls/{}/source/index.m3u8?token={token}",
            stream.playback_id
        ))
        .await;
    let key_url = media
        .split("URI=\"")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let resp = server
        .client
        .get(format!("{key_url}?token={other_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = server
        .client
        .get(format!("{key_url}?token={token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "tampered token");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_rtmp2sink_is_an_independent_publisher_that_also_works() {
    let (server, _, stream) =
        server_with_stream(json!({"playback_policy": "public", "reconnect_window_s": 0})).await;
    let mut publisher = gstreamer_publish(&stream.publish_url, 10);
    let master = eventually("the master playlist", Duration::from_secs(25), || async {
        let (status, body) = server
            .get_text(&format!("/hls/{}/master.m3u8", stream.playback_id))
            .await;
        (status == 200).then_some(body)
    })
    .await;
    assert!(master.contains("RESOLUTION=640x360"), "{master}");
    // Public: no token needed for playlists or keys.
    let probe = ffprobe(&server.url(&format!("/hls/{}/master.m3u8", stream.playback_id))).await;
    assert!(
        probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["codec_name"] == "h264"),
        "{probe}"
    );
    assert!(
        publisher.wait(Duration::from_secs(40)).await,
        "rtmp2sink failed"
    );
    server.stop().await;
}

/// Deleting a tenant ends its broadcasts first: the publisher is disconnected and nothing
/// is written under the deleted tenant afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_disconnects_its_publishers_and_leaves_nothing() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Leaving").await;
    let stream = create_stream(
        &server,
        &key,
        json!({"ladder": "passthrough", "playback_policy": "public", "record": true}),
    )
    .await;
    let mut publisher = ffmpeg_publish(&stream.publish_url, 320, 240, 60);
    eventually("the stream to go live", Duration::from_secs(20), || async {
        (stream_json(&server, &key, &stream.id).await["status"] == "active").then_some(())
    })
    .await;
    let (status, body) = server
        .call(
            "DELETE",
            &format!("/v1/tenants/{tenant_id}"),
            Some(&server.admin_key()),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let cut_off = tokio::time::Instant::now() + Duration::from_secs(10);
    while publisher.is_running() && tokio::time::Instant::now() < cut_off {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!publisher.is_running(), "the publisher still runs");
    assert_eq!(server.state.live.broadcasts(), 0);
    // Nothing appears under the tenant afterwards (a broadcast still writing would).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = server
        .state
        .jobs
        .store
        .list(&ferrocast::storage::Prefix::parse(&format!("tenants/{tenant_id}/")).unwrap())
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "{} objects written after the delete",
        left.len()
    );
    // Its stream key no longer publishes.
    let mut again = ffmpeg_publish(&stream.publish_url, 320, 240, 5);
    assert!(
        !again.wait(Duration::from_secs(15)).await,
        "published to a deleted tenant"
    );
    server.stop().await;
}

/// The probe's lockout, with real sockets: hundreds of connections that send one byte and
/// stop, from one address and then from many, while a real ffmpeg publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_rtmp_connections_cannot_lock_a_broadcaster_out_or_cut_one_off() {
    let server = TestServer::start_with(|c| {
        c.rtmp.max_connections = 64;
        c.rtmp.max_pending_per_ip = 8;
        c.rtmp.handshake_timeout_s = 30;
    })
    .await;
    let (_, key) = server.create_tenant("Acme").await;
    let stream = create_stream(
        &server,
        &key,
        json!({"ladder": "passthrough", "playback_policy": "public"}),
    )
    .await;
    let addr = rtmp_addr(&server);

    // 300 from one address: 8 are let in, the rest closed at once.
    let mut one = common::stalled_connections(addr, [127, 0, 0, 2], 300, &[3]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closed = common::closed_within(&mut one, Duration::from_millis(300)).await;
    assert!(
        one.len() - closed <= 8,
        "{} of {} kept open",
        one.len() - closed,
        one.len()
    );
    // From many addresses, enough to fill the server.
    let mut many = Vec::new();
    for host in 3..=12u8 {
        many.extend(common::stalled_connections(addr, [127, 0, 0, host], 8, &[3]).await);
    }

    // A real broadcaster still gets in, and goes live.
    let mut publisher = ffmpeg_publish(&stream.publish_url, 320, 240, 12);
    eventually("the stream to go live", Duration::from_secs(20), || async {
        (stream_json(&server, &key, &stream.id).await["status"] == "active").then_some(())
    })
    .await;
    // The oldest stalled connections made the room.
    assert!(common::closed_within(&mut many, Duration::from_millis(500)).await >= 1);

    // Another flood while it publishes: it is never the one dropped.
    let mut more = Vec::new();
    for host in 13..=30u8 {
        more.extend(common::stalled_connections(addr, [127, 0, 0, host], 8, &[3]).await);
    }
    assert!(
        publisher.wait(Duration::from_secs(30)).await,
        "the broadcaster was cut off"
    );
    eventually(
        "the broadcast to end cleanly",
        Duration::from_secs(20),
        || async {
            (stream_json(&server, &key, &stream.id).await["status"] == "idle").then_some(())
        },
    )
    .await;
    drop((one, many, more));
    server.stop().await;
}

/// The server's RTMP listening address.
fn rtmp_addr(server: &TestServer) -> std::net::SocketAddr {
    server
        .rtmp_url
        .trim_start_matches("rtmp://")
        .trim_end_matches("/live")
        .parse()
        .unwrap()
}

/// A real RTMP handshake (C0+C1, S0+S1+S2 read, C2 the echo of S1) from `from`.
async fn rtmp_handshaken(addr: std::net::SocketAddr, from: [u8; 4]) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend((0..1536u32).map(|i| (i * 7) as u8));
    s.write_all(&c0c1).await.unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * 1536];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut s0s1s2))
        .await
        .expect("the server answers the handshake")
        .unwrap();
    assert_eq!(s0s1s2[0], 3, "RTMP version 3");
    s.write_all(&s0s1s2[1..1537]).await.unwrap();
    s
}

/// Slowloris past the handshake: connections that complete it, then trickle a chunk stream
/// (a `connect` command declared 4,000 bytes long, one byte every 100 ms, never finished)
/// are cut at the publish deadline however steadily they send, and the server goes on
/// taking broadcasters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_connections_trickling_a_chunk_stream_are_cut_at_the_publish_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| {
        c.rtmp.max_pending_per_ip = 8;
        c.rtmp.handshake_timeout_s = 3;
    })
    .await;
    let (_, key) = server.create_tenant("Acme").await;
    let stream = create_stream(
        &server,
        &key,
        json!({"ladder": "passthrough", "playback_policy": "public"}),
    )
    .await;
    let addr = rtmp_addr(&server);
    let started = std::time::Instant::now();
    let mut tricklers = Vec::new();
    for _ in 0..8 {
        let mut s = rtmp_handshaken(addr, [127, 0, 0, 2]).await;
        tricklers.push(tokio::spawn(async move {
            // Chunk basic header (fmt 0, chunk stream 3), then the message header: time 0,
            // length 4,000, type 20 (AMF0 command), message stream 0.
            let header = [0x03, 0, 0, 0, 0x00, 0x0f, 0xa0, 20, 0, 0, 0, 0];
            if s.write_all(&header).await.is_err() {
                return started.elapsed();
            }
            let mut buf = [0u8; 4096];
            for _ in 0..200 {
                if s.write_all(&[0x02]).await.is_err() {
                    break;
                }
                let read = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf));
                if let Ok(Ok(0) | Err(_)) = read.await {
                    break;
                }
            }
            started.elapsed()
        }));
    }
    for t in tricklers {
        let cut = t.await.unwrap();
        assert!(
            cut >= Duration::from_millis(2500) && cut < Duration::from_secs(6),
            "a trickling connection was cut {cut:?} after it opened (deadline 3 s)"
        );
    }
    // A broadcaster from that same address gets in and goes live.
    let mut publisher = ffmpeg_publish(&stream.publish_url, 320, 240, 4);
    eventually("the stream to go live", Duration::from_secs(20), || async {
        (stream_json(&server, &key, &stream.id).await["status"] == "active").then_some(())
    })
    .await;
    assert!(publisher.wait(Duration::from_secs(20)).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishers_are_refused_and_the_server_keeps_serving_others() {
    let server = TestServer::start_with(|c| c.rtmp.handshake_timeout_s = 2).await;
    let (_, key) = server.create_tenant("Acme").await;
    let stream = create_stream(
        &server,
        &key,
        json!({"ladder": "passthrough", "playback_policy": "public"}),
    )
    .await;
    let rtmp_addr = rtmp_addr(&server);

    // A client that stops mid-handshake, and one that sends garbage.
    let mut stalled = tokio::net::TcpStream::connect(&rtmp_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &[3, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut garbage = tokio::net::TcpStream::connect(&rtmp_addr).await.unwrap();
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = tokio::io::AsyncWriteExt::write_all(&mut garbage, &noise).await;

    // A wrong stream key is refused promptly.
    let mut wrong = ffmpeg_publish(&format!("{}/not-a-key", server.rtmp_url), 320, 240, 5);
    assert!(
        !wrong.wait(Duration::from_secs(15)).await,
        "ffmpeg published with a wrong key"
    );

    // A codec other than H.264 or AAC is refused: the publisher is told why (onStatus error,
    // which ffmpeg prints), and so is the API.
    for (video, audio, why) in [
        (
            "flv",
            "aac",
            "unsupported video codec Sorenson H.263: send H.264",
        ),
        (
            "libx264",
            "libmp3lame",
            "unsupported audio codec MP3: send AAC",
        ),
    ] {
        let mut publisher = media::ffmpeg_publish_codecs(&stream.publish_url, video, audio, 5);
        let (ok, stderr) = publisher.wait_output(Duration::from_secs(20)).await;
        assert!(
            !ok,
            "a publish was accepted that should be refused with {why}"
        );
        assert!(
            stderr.contains(&format!("Server error: {why}")),
            "ffmpeg was not told {why:?}: {stderr}"
        );
        eventually(
            "the stream to be idle and say why",
            Duration::from_secs(10),
            || async {
                let s = stream_json(&server, &key, &stream.id).await;
                let error = s["last_error"].as_str().unwrap_or_default();
                (s["status"] == "idle" && error.contains(why)).then_some(())
            },
        )
        .await;
    }

    // A good publisher still works, and a second one on the same key is refused.
    let mut good = ffmpeg_publish(&stream.publish_url, 640, 360, 8);
    eventually("the stream to go live", Duration::from_secs(20), || async {
        let (status, _) = server
            .get_text(&format!("/hls/{}/master.m3u8", stream.playback_id))
            .await;
        (status == 200).then_some(())
    })
    .await;
    let mut second = ffmpeg_publish(&stream.publish_url, 320, 240, 5);
    assert!(
        !second.wait(Duration::from_secs(15)).await,
        "a second publisher took over the stream"
    );
    assert!(good.is_running(), "the first publisher was disturbed");

    // The stalled client was dropped after the handshake deadline.
    let mut buf = [0u8; 4096];
    let dropped = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut stalled, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(dropped.is_ok(), "a half-open handshake held its connection");
    assert!(good.wait(Duration::from_secs(30)).await);
    let (status, _) = server.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_reconnects_within_the_window_continues_the_same_playlists() {
    let (server, _, stream) = server_with_stream(
        json!({"ladder": "passthrough", "playback_policy": "public", "reconnect_window_s": 30}),
    )
    .await;
    let media_path = format!("/hls/{}/source/index.m3u8", stream.playback_id);
    let mut first = ffmpeg_publish(&stream.publish_url, 640, 360, 6);
    assert!(first.wait(Duration::from_secs(30)).await);
    let ended = eventually(
        "ENDLIST after the first publish",
        Duration::from_millis(1500),
        || async {
            let (_, media) = server.get_text(&media_path).await;
            media.contains("#EXT-X-ENDLIST").then_some(media)
        },
    )
    .await;
    let first_segments = ended.matches("#EXTINF").count();
    assert!(first_segments >= 2, "{ended}");

    let mut again = ffmpeg_publish(&stream.publish_url, 640, 360, 6);
    let resumed = eventually(
        "the playlist to continue",
        Duration::from_secs(20),
        || async {
            let (_, media) = server.get_text(&media_path).await;
            (media.matches("#EXTINF").count() > first_segments && !media.contains("#EXT-X-ENDLIST"))
                .then_some(media)
        },
    )
    .await;
    assert!(resumed.contains("#EXT-X-DISCONTINUITY"), "{resumed}");
    assert!(again.wait(Duration::from_secs(30)).await);
    eventually(
        "ENDLIST after the second publish",
        Duration::from_millis(1500),
        || async {
            let (_, media) = server.get_text(&media_path).await;
            media.contains("#EXT-X-ENDLIST").then_some(())
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_still_play_in_hls_js() {
    let server = TestServer::start_with(|c| c.live.key_rotation_segments = 2).await;
    let (_, key) = server.create_tenant("Acme").await;
    let stream = create_stream(&server, &key, json!({"ladder": "passthrough"})).await;
    let token = token(&server, &key, &stream.playback_id).await;
    let _ffmpeg = ffmpeg_publish(&stream.publish_url, 640, 360, 30);
    let media = eventually(
        "three rotation periods",
        Duration::from_secs(25),
        || async {
            let (_, media) = server
                .get_text(&format!(
                    "/hls/{}/source/index.m3u8?token={token}",
                    stream.playback_id
                ))
                .await;
            let keys: std::collections::HashSet<&str> = media
                .split("URI=\"")
                .skip(1)
                .map(|s| s.split('?').next().unwrap())
                .collect();
            (keys.len() >= 3).then(|| media.clone())
        },
    )
    .await;
    assert!(media.contains("#EXT-X-KEY"));
    let played = browser_play(
        &server.url(&format!("/play/{}?token={token}", stream.playback_id)),
        5,
        40,
    )
    .await;
    played.assert_plays(5.0, Encrypted::Yes);
    assert!(
        played.key_requests >= 2,
        "hls.js fetched only {} keys",
        played.key_requests
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_is_stored_in_s3_and_plays_from_there() {
    let s3 = common::S3Server::start();
    let server = TestServer::start_with(|c| {
        s3.configure(c, "ferrocast-live");
        c.delivery.redirect_segments = true;
    })
    .await;
    let (_, key) = server.create_tenant("Acme").await;
    let stream = create_stream(
        &server,
        &key,
        json!({"ladder": "passthrough", "playback_policy": "public", "reconnect_window_s": 0}),
    )
    .await;
    let mut ffmpeg = ffmpeg_publish(&stream.publish_url, 640, 360, 8);
    // ffmpeg can take many seconds to connect while other tests keep both cores busy.
    eventually("the master playlist", Duration::from_secs(40), || async {
        let (status, _) = server
            .get_text(&format!("/hls/{}/master.m3u8", stream.playback_id))
            .await;
        (status == 200).then_some(())
    })
    .await;
    assert!(ffmpeg.wait(Duration::from_secs(30)).await);
    eventually("ENDLIST", Duration::from_millis(1500), || async {
        let (_, media) = server
            .get_text(&format!("/hls/{}/source/index.m3u8", stream.playback_id))
            .await;
        media.contains("#EXT-X-ENDLIST").then_some(())
    })
    .await;
    // The segments are in the bucket, encrypted; ffprobe plays them through the server.
    let objects = server
        .state
        .jobs
        .store
        .list(&ferrocast::storage::Prefix::parse("tenants/").unwrap())
        .await
        .unwrap();
    let segments: Vec<_> = objects
        .iter()
        .filter(|o| o.key.as_str().ends_with(".ts"))
        .collect();
    assert!(segments.len() >= 3, "{objects:?}");
    // Stored encrypted: the bytes in the bucket are not TS, and decrypt (openssl, with the key
    // and IV the playlist names) into TS.
    let stored = server
        .state
        .jobs
        .store
        .get(
            &segments
                .iter()
                .find(|o| o.key.as_str().ends_with("/source/0.ts"))
                .expect("the first segment is in the bucket")
                .key,
            None,
        )
        .await
        .unwrap();
    // Ciphertext starts with 0x47 one time in 256, so the check is that the packets' sync bytes
    // are not all there (the odds of that by chance are 1 in 256 per packet).
    assert!(
        !stored.body.chunks(188).all(|p| p[0] == 0x47),
        "a segment is stored in clear (TS sync bytes)"
    );
    let plain = decrypt_as_a_player(
        &server,
        &format!("/hls/{}/source/index.m3u8", stream.playback_id),
        "0.ts",
        &stored.body,
    )
    .await;
    assert!(
        plain.len() % 188 == 0 && plain.chunks(188).all(|p| p[0] == 0x47),
        "the stored segment does not decrypt into MPEG-TS ({} bytes)",
        plain.len()
    );
    // Segments are answered with a redirect to a presigned S3 URL; ffprobe follows it.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let resp = no_redirects
        .get(server.url(&format!("/hls/{}/source/0.ts", stream.playback_id)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&s3.endpoint) && location.contains("X-Amz-Signature="),
        "{location}"
    );
    let direct = server.client.get(&location).send().await.unwrap();
    assert_eq!(direct.status(), 200);
    let first_segment = objects
        .iter()
        .find(|o| o.key.as_str().ends_with("/source/0.ts"))
        .unwrap();
    assert_eq!(
        direct.bytes().await.unwrap().len() as u64,
        first_segment.size
    );
    let probe = ffprobe(&server.url(&format!("/hls/{}/master.m3u8", stream.playback_id))).await;
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((6.0..=10.0).contains(&duration), "{duration}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_outage_mid_broadcast_is_retried_and_loses_no_segment() {
    let mut s3 = common::S3Server::start();
    let server = TestServer::start_with(|c| {
        s3.configure(c, "ferrocast-outage");
        // Two segments may wait for storage; then the broadcast waits, and so does ingest.
        c.live.upload_queue_segments = 2;
    })
    .await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let stream = create_stream(
        &server,
        &key,
        json!({"ladder": "passthrough", "playback_policy": "public", "reconnect_window_s": 0, "record": true}),
    )
    .await;
    let mut ffmpeg = ffmpeg_publish(&stream.publish_url, 640, 360, 14);
    let media_url = format!("/hls/{}/source/index.m3u8", stream.playback_id);
    eventually("two segments listed", Duration::from_secs(20), || async {
        let (_, media) = server.get_text(&media_url).await;
        (media.matches("#EXTINF").count() >= 2).then_some(())
    })
    .await;
    // S3 goes away for 30 s while segments keep coming and a viewer keeps asking for the
    // playlist (the issue's outage): the queue fills to its bound and stays there (the
    // metric shows it), never beyond, and the viewer gets 200 or 503, never anything else.
    s3.kill();
    let outage = std::time::Instant::now();
    let mut deepest = 0.0f64;
    let mut retried = false;
    let mut viewer = std::collections::BTreeMap::<u16, usize>::new();
    while outage.elapsed() < Duration::from_secs(30) {
        let (status, _) = server.get_text(&media_url).await;
        *viewer.entry(status).or_default() += 1;
        let (_, metrics) = server.get_text("/metrics").await;
        retried = metrics
            .lines()
            .any(|l| l.starts_with("ferrocast_storage_write_retries_total "));
        for depth in metrics
            .lines()
            .filter(|l| l.starts_with("ferrocast_live_upload_queue_depth{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        {
            assert!(
                depth <= 2.0,
                "the upload queue grew past its bound: {metrics}"
            );
            deepest = deepest.max(depth);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s3.restart();
    assert!(retried, "no write was retried in the outage");
    assert_eq!(
        deepest, 2.0,
        "the upload queue never filled during the outage"
    );
    assert!(
        viewer.keys().all(|s| [200, 503].contains(s)),
        "the viewer's playlist answers in the outage: {viewer:?}"
    );
    eprintln!("the viewer's playlist answers in the 30 s outage: {viewer:?}");
    // The viewer recovers: the playlist grows again.
    let before = server
        .get_text(&media_url)
        .await
        .1
        .matches("#EXTINF")
        .count();
    eventually(
        "the playlist to grow after the outage",
        Duration::from_secs(40),
        || async {
            let (status, media) = server.get_text(&media_url).await;
            (status == 200 && media.matches("#EXTINF").count() > before).then_some(())
        },
    )
    .await;
    assert!(ffmpeg.wait(Duration::from_secs(60)).await, "ffmpeg failed");
    let asset = ready_asset(&server, &tenant_id, Duration::from_secs(40)).await;
    // Every segment made it: the recording is as long as the broadcast, without gaps, and
    // each listed segment is in the bucket.
    let (status, vod) = server
        .get_text(&format!("/hls/{}/source/index.m3u8", asset.playback_id))
        .await;
    assert_eq!(status, 200);
    let total: f64 = vod
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse::<f64>().unwrap())
        .sum();
    assert!(
        (13.0..=15.0).contains(&total),
        "{total} s recorded of 14: {vod}"
    );
    let uris: Vec<&str> = vod
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    for (i, uri) in uris.iter().enumerate() {
        assert_eq!(*uri, format!("{i}.ts"), "no gap in the sequence: {vod}");
        let (status, _) = server
            .get_text(&format!("/hls/{}/source/{uri}", asset.playback_id))
            .await;
        assert_eq!(status, 200, "{uri}");
    }
    // The lag was visible, not silent.
    let (_, metrics) = server.get_text("/metrics").await;
    let retries: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferrocast_storage_write_retries_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        retries >= 1.0,
        "ferrocast_storage_write_retries_total: {metrics}"
    );
    // The broadcast waited for the full queue (backpressure to the publisher's socket).
    let waits: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferrocast_live_upload_queue_full_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        waits >= 1.0,
        "ferrocast_live_upload_queue_full_total: {metrics}"
    );
    server.stop().await;
}

/// Decodes every frame of `url` with ffprobe; returns (video frames, audio frames, errors,
/// whether the video frames came out in presentation order with evenly spaced timestamps).
async fn decode_all(url: &str) -> (u64, u64, String, bool) {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let out = common::output_within(
            std::process::Command::new("ffprobe")
                .args(["-v", "error", "-allowed_extensions", "ALL", "-count_frames"])
                .args([
                    "-show_entries",
                    "stream=codec_type,nb_read_frames:frame=media_type,pts",
                ])
                .args(["-of", "json"])
                .arg(&url),
            Duration::from_secs(120),
            "ffprobe -count_frames (Debian package ffmpeg)",
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let frames = |kind: &str| -> u64 {
            v["streams"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["codec_type"] == kind)
                .filter_map(|s| s["nb_read_frames"].as_str()?.parse::<u64>().ok())
                .sum()
        };
        let pts: Vec<i64> = v["frames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["media_type"] == "video")
            .filter_map(|f| f["pts"].as_i64())
            .collect();
        // 90 kHz clock, 30 fps: 3000 ticks apart, give or take FLV's millisecond rounding.
        let even = pts
            .windows(2)
            .all(|w| (2900..=3100).contains(&(w[1] - w[0])));
        (
            frames("video"),
            frames("audio"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            even,
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_broadcast_with_b_frames_is_rewrapped_frame_for_frame() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let stream = create_stream(
        &server,
        &key,
        json!({"ladder": "passthrough", "reconnect_window_s": 0, "record": true}),
    )
    .await;
    // x264's veryfast preset codes B-frames: composition offsets must survive the re-wrap.
    let mut ffmpeg = ffmpeg_publish(&stream.publish_url, 1280, 720, 10);
    let token = token(&server, &key, &stream.playback_id).await;
    let master = eventually("the master playlist", Duration::from_secs(20), || async {
        let (status, body) = server
            .get_text(&format!(
                "/hls/{}/master.m3u8?token={token}",
                stream.playback_id
            ))
            .await;
        (status == 200).then_some(body)
    })
    .await;
    assert!(
        master.contains("RESOLUTION=1280x720") && master.contains("FRAME-RATE=30"),
        "{master}"
    );
    assert!(
        master.contains("avc1.64") && master.contains("mp4a.40.2"),
        "{master}"
    );
    assert!(ffmpeg.wait(Duration::from_secs(30)).await, "ffmpeg failed");

    let asset = ready_asset(&server, &tenant_id, Duration::from_secs(20)).await;
    let asset_token = self::token(&server, &key, &asset.playback_id).await;
    let (_, media) = server
        .get_text(&format!(
            "/hls/{}/source/index.m3u8?token={asset_token}",
            asset.playback_id
        ))
        .await;
    let durations: Vec<f64> = media
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:")?.split(',').next()?.parse().ok())
        .collect();
    assert_eq!(durations.len(), 5, "{media}");
    assert!(
        durations[..4].iter().all(|d| (d - 2.0).abs() < 0.01),
        "{media}"
    );
    // Every one of the 300 frames and ~469 AAC frames decodes, through the key, without an error.
    let (video, audio, errors, even) = decode_all(&server.url(&format!(
        "/hls/{}/source/index.m3u8?token={asset_token}",
        asset.playback_id
    )))
    .await;
    assert!(errors.trim().is_empty(), "decoder errors: {errors}");
    assert_eq!(video, 300, "video frames decoded");
    assert!(even, "video frames out of order or unevenly timed");
    assert!((460..=475).contains(&audio), "{audio} audio frames decoded");
    server.stop().await;
}

/// Decrypts `stored`, the bytes of segment `segment` of the media playlist at `playlist_path`,
/// as a player would: with the key (fetched from its URI) and IV of the `EXT-X-KEY` in force
/// for that segment, by openssl (AES-128-CBC), not Ferrocast's own code.
async fn decrypt_as_a_player(
    server: &TestServer,
    playlist_path: &str,
    segment: &str,
    stored: &[u8],
) -> Vec<u8> {
    let (status, playlist) = server.get_text(playlist_path).await;
    assert_eq!(status, 200, "{playlist}");
    let mut key_line = None;
    let mut found = None;
    for line in playlist.lines() {
        if line.starts_with("#EXT-X-KEY:") {
            key_line = Some(line.to_string());
        } else if line.split('?').next() == Some(segment) {
            found = key_line.clone();
            break;
        }
    }
    let key_line = found.unwrap_or_else(|| panic!("no EXT-X-KEY for {segment} in:\n{playlist}"));
    assert!(key_line.contains("METHOD=AES-128"), "{key_line}");
    let attr = |name: &str| -> String {
        let start = key_line
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("{name} missing: {key_line}"))
            + name.len()
            + 1;
        let rest = key_line[start..].trim_start_matches('"');
        rest.split(['"', ',']).next().unwrap().to_string()
    };
    let key = server
        .client
        .get(attr("URI"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(key.len(), 16, "the key URI did not answer a key");
    let iv = attr("IV");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("segment.enc");
    std::fs::write(&input, stored).unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let out = common::output_within(
        std::process::Command::new("openssl")
            .args(["enc", "-d", "-aes-128-cbc", "-K", &hex, "-iv"])
            .arg(iv.trim_start_matches("0x").trim_start_matches("0X"))
            .arg("-in")
            .arg(&input),
        Duration::from_secs(30),
        "openssl (Debian package openssl)",
    );
    assert!(
        out.status.success(),
        "openssl could not decrypt {segment}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A publisher pushes 8 s of 640x360 through the default ladder (source + 360p); a viewer
/// polls every rendition every 50 ms from the moment the publisher stops. Each one gets
/// `EXT-X-ENDLIST` within 1.5 s, never an error on the way nor after, and every segment the
/// final playlists list can be fetched.
async fn every_rendition_ends_cleanly(record: bool) {
    let (server, _, stream) = server_with_stream(
        json!({"playback_policy": "public", "reconnect_window_s": 0, "record": record}),
    )
    .await;
    let mut ffmpeg = ffmpeg_publish(&stream.publish_url, 640, 360, 8);
    let master_path = format!("/hls/{}/master.m3u8", stream.playback_id);
    let master = until_served(&server, &master_path, Duration::from_secs(40)).await;
    let renditions: Vec<String> = master
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('?').next().unwrap().to_string())
        .collect();
    assert!(renditions.len() >= 2, "{master}");
    assert!(ffmpeg.wait(Duration::from_secs(30)).await, "ffmpeg failed");
    let stopped = std::time::Instant::now();
    let mut ended_at = vec![None; renditions.len()];
    let mut last = vec![String::new(); renditions.len()];
    // ENDLIST is due within 1.5 s; polling goes on to 4.5 s to see that it stays.
    while stopped.elapsed() < Duration::from_millis(4500) {
        for (i, rendition) in renditions.iter().enumerate() {
            let path = format!("/hls/{}/{rendition}", stream.playback_id);
            let (status, body) = server.get_text(&path).await;
            assert_eq!(
                status,
                200,
                "{rendition} answered {status} {:?} after the publisher stopped: {body}",
                stopped.elapsed()
            );
            if body.contains("#EXT-X-ENDLIST") {
                ended_at[i].get_or_insert(stopped.elapsed());
            } else {
                assert!(
                    ended_at[i].is_none(),
                    "{rendition} lost its ENDLIST: {body}"
                );
            }
            last[i] = body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (rendition, at) in renditions.iter().zip(&ended_at) {
        let at = at.unwrap_or_else(|| panic!("no ENDLIST on {rendition} within 4.5 s"));
        eprintln!("record={record}: ENDLIST on {rendition} {at:?} after the publisher stopped");
        assert!(
            at <= Duration::from_millis(1500),
            "ENDLIST on {rendition} {at:?} after the publisher stopped (the README says about 1 s)"
        );
    }
    if record {
        // Keyframes are aligned across renditions: a player switching between them at a
        // segment boundary always lands on one.
        let mut keyframes = Vec::new();
        for rendition in &renditions {
            let times =
                keyframe_times(&server.url(&format!("/hls/{}/{rendition}", stream.playback_id)))
                    .await;
            assert!(times.len() >= 3, "{rendition}: keyframes at {times:?}");
            keyframes.push((rendition, times));
        }
        let (first, reference) = &keyframes[0];
        for (rendition, times) in &keyframes[1..] {
            assert!(
                times.len() == reference.len()
                    && times
                        .iter()
                        .zip(reference)
                        .all(|(a, b)| (a - b).abs() < 0.002),
                "keyframes of {rendition} {times:?} are not those of {first} {reference:?}"
            );
        }
    }
    for (rendition, playlist) in renditions.iter().zip(&last) {
        let dir = rendition.rsplit_once('/').map_or("", |(d, _)| d);
        let segments: Vec<&str> = playlist
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        assert!(segments.len() >= 3, "{rendition}: {playlist}");
        for segment in segments {
            let url = server.url(&format!("/hls/{}/{dir}/{segment}", stream.playback_id));
            let resp = server.client.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{url}");
            let body = resp.bytes().await.unwrap();
            assert!(
                !body.is_empty() && body.len() % 16 == 0,
                "{url}: {} bytes is no AES-128 segment",
                body.len()
            );
        }
    }
    server.stop().await;
}

/// A publisher SIGKILLed in the middle of a GOP (no RTMP goodbye, a frame cut anywhere):
/// ENDLIST follows at once (no reconnect window), and the recording holds every whole
/// segment up to the kill and decodes without an error to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_killed_mid_gop_ends_the_broadcast_and_its_recording_plays_to_the_last_whole_segment()
 {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let stream = create_stream(
        &server,
        &key,
        json!({"ladder": "passthrough", "playback_policy": "public", "reconnect_window_s": 0, "record": true}),
    )
    .await;
    let mut ffmpeg = ffmpeg_publish(&stream.publish_url, 640, 360, 60);
    let master = format!("/hls/{}/master.m3u8", stream.playback_id);
    let master = until_served(&server, &master, Duration::from_secs(40)).await;
    let rendition = master
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    let media = format!("/hls/{}/{rendition}", stream.playback_id);
    until_served(&server, &media, Duration::from_secs(10)).await;
    // 7.3 s in: 1.3 s into the fourth 2 s GOP.
    tokio::time::sleep(Duration::from_millis(7300)).await;
    let live = server.get_text(&media).await.1;
    ffmpeg.kill();
    let killed = std::time::Instant::now();
    let ended = eventually(
        "EXT-X-ENDLIST after the publisher was killed",
        Duration::from_secs(5),
        || async {
            let (_, body) = server.get_text(&media).await;
            body.contains("#EXT-X-ENDLIST").then_some(body)
        },
    )
    .await;
    eprintln!("ENDLIST {:?} after SIGKILL", killed.elapsed());
    let segments = |p: &str| p.lines().filter(|l| l.starts_with("#EXTINF")).count();
    assert!(
        segments(&ended) >= segments(&live),
        "segments were lost at the end: {live} then {ended}"
    );
    let asset = ready_asset(&server, &tenant_id, Duration::from_secs(30)).await;
    let recorded = asset.duration_ms.unwrap() as f64 / 1000.0;
    // The segments made before the kill, at least 3 of 2 s (the last may be the cut GOP's
    // frames up to the kill, itself whole frames only).
    assert!((6.0..=10.0).contains(&recorded), "recorded {recorded} s");
    let master = server.url(&format!("/hls/{}/master.m3u8", asset.playback_id));
    common::media::assert_decodes_cleanly(&master, Duration::from_secs(60));
    let s = stream_json(&server, &key, &stream.id).await;
    assert_eq!(s["status"], "idle", "{s}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_that_is_not_recorded_ends_cleanly_on_every_rendition() {
    every_rendition_ends_cleanly(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_broadcast_ends_cleanly_on_every_rendition() {
    every_rendition_ends_cleanly(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_behind_the_live_edge_plays_a_broadcast_that_is_not_recorded_to_its_end() {
    let (server, key, stream) = server_with_stream(json!({"ladder": "passthrough", "playback_policy": "public", "reconnect_window_s": 0, "record": false})).await;
    let mut ffmpeg = ffmpeg_publish(&stream.publish_url, 640, 360, 16);
    let master_path = format!("/hls/{}/master.m3u8", stream.playback_id);
    until_served(&server, &master_path, Duration::from_secs(40)).await;
    // hls.js starts 3 segments (6 s) behind the live edge, so it is still playing when the
    // publisher stops; it plays what is left and fires `ended` at the ENDLIST.
    let played =
        browser_play_to_end(&server.url(&format!("/play/{}", stream.playback_id)), 60).await;
    assert!(ffmpeg.wait(Duration::from_secs(30)).await, "ffmpeg failed");
    eprintln!("{played:?}");
    assert!(played.ended, "the player never reached the end: {played:?}");
    played.assert_plays(4.0, Encrypted::Yes);
    assert_eq!(played.state, "ended", "{played:?}");
    let (status, page) = server
        .get_text(&format!("/play/{}", stream.playback_id))
        .await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-state="ended">ended<"#), "{page}");

    // The page reported the live view: its startup and watch time as the page measured
    // them, fed by beacons and CMCD, with the latency the playlist's program date-times give.
    let view = common::reported_view(&server, &key, &played, false).await;
    // hls.js starts about three 2 s segments behind the live edge; a segment's program
    // date-time is its first frame's arrival, so the latency is several seconds, not zero
    // and not minutes.
    let latency = view["live_latency_ms"].as_i64().expect("a live latency");
    assert!((2_000..=20_000).contains(&latency), "{latency} ms: {view}");
    let media = server
        .get_text(&format!("/hls/{}/source/index.m3u8", stream.playback_id))
        .await
        .1;
    assert!(media.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{media}");
    server.stop().await;
}

/// A broadcast that is not recorded keeps its playlists and segments for
/// `live.ended_retention_s`, then they and its key are deleted: by the server that ran it,
/// or, when that stopped within the retention, by the next one to start.
async fn an_ended_broadcast_is_deleted_after_its_retention(s3: Option<&common::S3Server>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.live.ended_retention_s = 4;
    if let Some(s3) = s3 {
        s3.configure(&mut config, "ferrocast-retention");
    }
    let server = TestServer::start_config(config.clone()).await;
    let (tenant_id, key) = server.create_tenant("Acme").await;
    let stream = create_stream(
        &server,
        &key,
        json!({"ladder": "passthrough", "playback_policy": "public", "reconnect_window_s": 0, "record": false}),
    )
    .await;
    let media_path = format!("/hls/{}/source/index.m3u8", stream.playback_id);
    let page_path = format!("/play/{}", stream.playback_id);
    let mut ffmpeg = ffmpeg_publish(&stream.publish_url, 640, 360, 5);
    until_served(&server, &media_path, Duration::from_secs(40)).await;
    assert!(ffmpeg.wait(Duration::from_secs(30)).await, "ffmpeg failed");
    let media = eventually("ENDLIST", Duration::from_millis(1500), || async {
        let (_, media) = server.get_text(&media_path).await;
        media.contains("#EXT-X-ENDLIST").then_some(media)
    })
    .await;
    let ended = std::time::Instant::now();
    let prefix = server
        .state
        .jobs
        .db
        .get_live_stream(&tenant_id, &stream.id)
        .await
        .unwrap()
        .current_prefix
        .expect("the broadcast's prefix");
    let prefix = ferrocast::storage::Prefix::parse(&prefix).unwrap();
    let stored = server.state.jobs.store.list(&prefix).await.unwrap();
    assert!(stored.len() >= 3, "{stored:?}");
    let key_path = media
        .split("URI=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|uri| uri.find("/keys/").map(|at| uri[at..].to_string()))
        .expect("a key URI in the playlist");
    assert_eq!(server.get_text(&key_path).await.0, 200);
    let (_, page) = server.get_text(&page_path).await;
    assert!(page.contains(r#"data-state="ended""#), "{page}");

    let server = if s3.is_some() {
        // The server stops within the retention; the clean-up is due while none runs.
        server.stop().await;
        tokio::time::sleep(Duration::from_secs(5).saturating_sub(ended.elapsed())).await;
        TestServer::start_config(config).await
    } else {
        server
    };
    eventually(
        "the ended broadcast's objects to be deleted",
        Duration::from_secs(10),
        || async {
            let left = server.state.jobs.store.list(&prefix).await.unwrap();
            left.is_empty().then_some(())
        },
    )
    .await;
    // Its keys go next, and the stream says so last.
    eventually(
        "the stream to be offline",
        Duration::from_secs(2),
        || async {
            let (_, page) = server.get_text(&page_path).await;
            page.contains(r#"data-state="offline""#).then_some(())
        },
    )
    .await;
    // Due 4 s after the broadcast was finalized, which was at most a poll before `ended`.
    let waited = ended.elapsed();
    assert!(
        waited >= Duration::from_millis(3500),
        "deleted {waited:?} after the end, before the retention"
    );
    assert_eq!(server.get_text(&media_path).await.0, 404);
    assert_eq!(
        server.get_text(&key_path).await.0,
        404,
        "the key outlived it"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_broadcast_is_deleted_from_local_storage_after_its_retention() {
    an_ended_broadcast_is_deleted_after_its_retention(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_broadcast_is_deleted_from_s3_after_its_retention_across_a_restart() {
    let s3 = common::S3Server::start();
    an_ended_broadcast_is_deleted_after_its_retention(Some(&s3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_the_key_or_deleting_the_stream_disconnects_its_publisher() {
    let (server, key, stream) = server_with_stream(
        json!({"ladder": "passthrough", "playback_policy": "public", "reconnect_window_s": 30}),
    )
    .await;
    let path = format!("/v1/live-streams/{}", stream.id);
    let active = || async {
        let (_, s) = server.call("GET", &path, Some(&key), None).await;
        (s["status"] == "active").then_some(())
    };

    // A new key: the publisher on the old one is told and cut off at once, and the
    // broadcast ends without waiting for its reconnect window.
    let mut publisher = ffmpeg_publish(&stream.publish_url, 320, 240, 60);
    let media_path = format!("/hls/{}/source/index.m3u8", stream.playback_id);
    until_served(&server, &media_path, Duration::from_secs(40)).await;
    let (status, reset) = server
        .call(
            "POST",
            &format!("{path}/reset-stream-key"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reset}");
    let (ok, stderr) = publisher.wait_output(Duration::from_secs(5)).await;
    assert!(!ok, "ffmpeg went on publishing on a reset key");
    assert!(
        stderr.contains("Server error: the live stream was deleted or its key was reset"),
        "{stderr}"
    );
    eventually(
        "the broadcast to end at once, with ENDLIST",
        Duration::from_millis(1500),
        || async {
            let (_, s) = server.call("GET", &path, Some(&key), None).await;
            let (_, media) = server
                .get_text(&format!("/hls/{}/source/index.m3u8", stream.playback_id))
                .await;
            (s["status"] == "idle" && media.contains("#EXT-X-ENDLIST")).then_some(())
        },
    )
    .await;
    // The old key is refused; the new one works.
    let mut old = ffmpeg_publish(&stream.publish_url, 320, 240, 5);
    assert!(
        !old.wait(Duration::from_secs(15)).await,
        "the old key still publishes"
    );
    let new_url = format!(
        "{}/{}",
        server.rtmp_url,
        reset["stream_key"].as_str().expect("the new stream key")
    );
    let mut publisher = ffmpeg_publish(&new_url, 320, 240, 60);
    eventually(
        "the stream to go live again",
        Duration::from_secs(40),
        active,
    )
    .await;

    // Deleted: the publisher is cut off too.
    let (status, _) = server.call("DELETE", &path, Some(&key), None).await;
    assert_eq!(status, 204);
    let (ok, stderr) = publisher.wait_output(Duration::from_secs(5)).await;
    assert!(!ok, "ffmpeg went on publishing on a deleted stream");
    assert!(stderr.contains("Server error: "), "{stderr}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_stream_takes_its_token_as_bearer_or_cookie_and_says_how_long_to_cache() {
    let (server, key, stream) = server_with_stream(
        json!({"ladder": "passthrough", "playback_policy": "signed", "reconnect_window_s": 0}),
    )
    .await;
    let token = token(&server, &key, &stream.playback_id).await;
    let mut ffmpeg = ffmpeg_publish(&stream.publish_url, 320, 240, 8);
    let media = format!("/hls/{}/source/index.m3u8", stream.playback_id);
    let get = |path: String, how: &'static str| {
        let mut req = server.client.get(server.url(&path));
        req = match how {
            "bearer" => req.bearer_auth(&token),
            "cookie" => req.header("Cookie", format!("theme=dark; ferrocast_token={token}")),
            _ => req,
        };
        async move {
            let resp = req.send().await.unwrap();
            let cache = resp
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (
                resp.status().as_u16(),
                cache,
                resp.text().await.unwrap_or_default(),
            )
        }
    };
    let live = eventually("two segments", Duration::from_secs(40), || async {
        let (status, _, body) = get(media.clone(), "bearer").await;
        (status == 200 && body.matches("#EXTINF").count() >= 2).then_some(body)
    })
    .await;
    assert!(!live.contains("#EXT-X-ENDLIST"), "{live}");
    for how in ["bearer", "cookie"] {
        let (status, cache, _) = get(media.clone(), how).await;
        assert_eq!(
            (status, cache.as_str()),
            (200, "no-cache"),
            "live playlist, {how}"
        );
        let (status, cache, _) = get(format!("/hls/{}/master.m3u8", stream.playback_id), how).await;
        assert_eq!(
            (status, cache.as_str()),
            (200, "no-cache"),
            "master playlist while live, {how}"
        );
        let (status, cache, _) = get(format!("/hls/{}/source/0.ts", stream.playback_id), how).await;
        assert_eq!(
            (status, cache.as_str()),
            (200, "private, max-age=86400, immutable"),
            "segment, {how}"
        );
    }
    // Without the token nothing is served; a token of the wrong shape neither.
    assert_eq!(get(media.clone(), "none").await.0, 401);
    let (status, _) = server.get_text(&format!("{media}?token=not-a-token")).await;
    assert_eq!(status, 401);
    // Ended: the final playlist may be cached a while.
    assert!(ffmpeg.wait(Duration::from_secs(30)).await, "ffmpeg failed");
    eventually("ENDLIST", Duration::from_millis(1500), || async {
        let (status, cache, body) = get(media.clone(), "cookie").await;
        (status == 200 && body.contains("#EXT-X-ENDLIST") && cache == "private, max-age=60")
            .then_some(())
    })
    .await;
    server.stop().await;
}

/// The time of every video keyframe of the HLS rendition at `url` (ffprobe, through its key).
async fn keyframe_times(url: &str) -> Vec<f64> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let out = common::output_within(
            std::process::Command::new("ffprobe")
                .args(["-v", "error", "-select_streams", "v:0"])
                .args(["-show_entries", "packet=pts_time,flags", "-of", "csv=p=0"])
                .arg(&url),
            Duration::from_secs(60),
            "ffprobe (Debian package ffmpeg)",
        );
        assert!(out.status.success(), "ffprobe {url}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.split(',').nth(1).is_some_and(|f| f.starts_with('K')))
            .filter_map(|l| l.split(',').next()?.parse().ok())
            .collect()
    })
    .await
    .unwrap()
}
