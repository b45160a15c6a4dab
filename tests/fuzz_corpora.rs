//! The fuzzers' corpora (`fuzz/corpus/<target>/`, what cargo-afl kept: the seeds and every
//! input that reached new code) replayed through the same targets (`ferrocast::fuzzing`), so
//! a change that breaks a parser on an input the fuzzer once found fails here, in seconds.
//!
//! `cargo test --test fuzz_corpora -- --ignored write_seeds` writes the seeds (`make
//! fuzz-seed`): real captures (ffmpeg's and GStreamer's RTMP publishing, an ffmpeg FLV, a
//! Chromium offer), every request example of the OpenAPI spec, and a minted token.

use std::path::{Path, PathBuf};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn every_target_has_a_corpus_and_replays_it() {
    let mut counts = Vec::new();
    for (name, _) in ferrocast::fuzzing::TARGETS {
        let dir = corpus_root().join(name);
        let n = ferrocast::fuzzing::replay(name, &dir);
        assert!(
            n >= 3,
            "fuzz/corpus/{name} holds {n} inputs; run make fuzz-seed"
        );
        counts.push(format!("{name} {n}"));
    }
    eprintln!("replayed: {}", counts.join(", "));
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("ferrocast-fuzz-{}", std::process::id())),
    );
}

/// Every folder under `fuzz/corpus` is a target's (a renamed target leaves none behind).
#[test]
fn no_corpus_without_a_target() {
    for entry in std::fs::read_dir(corpus_root()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            ferrocast::fuzzing::target(&name).is_some(),
            "fuzz/corpus/{name} has no target"
        );
    }
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_root().join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

/// Writes the seed inputs (run by `make fuzz-seed`; the fuzzer grows the corpora from them).
#[test]
#[ignore = "writes fuzz/corpus; run by make fuzz-seed"]
fn write_seeds() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // RTMP: what ffmpeg and GStreamer's rtmp2sink sent when publishing (captured on this
    // machine), whole and cut after the handshake, connect and publish.
    for capture in ["ffmpeg_publish", "gst_publish"] {
        let bytes = std::fs::read(fixtures.join(format!("rtmp/{capture}.bin"))).unwrap();
        write("rtmp", capture, &bytes);
        write(
            "rtmp",
            &format!("{capture}-start"),
            &bytes[..8192.min(bytes.len())],
        );
        write(
            "rtmp",
            &format!("{capture}-handshake"),
            &bytes[..3073.min(bytes.len())],
        );
    }
    // FLV (ffmpeg's muxer: 2 s of H.264 + AAC), and its script tag's AMF0.
    let flv = ffmpeg_flv();
    write("flv", "ffmpeg", &flv[13..]);
    write("flv", "ffmpeg-start", &flv[13..4096.min(flv.len())]);
    let mut at = 13;
    let mut n = 0;
    while at + 11 <= flv.len() {
        let kind = flv[at];
        let len = u32::from_be_bytes([0, flv[at + 1], flv[at + 2], flv[at + 3]]) as usize;
        let body = &flv[at + 11..(at + 11 + len).min(flv.len())];
        if kind == 18 {
            write("amf0", &format!("ffmpeg-metadata-{n}"), body);
        }
        if n < 4 {
            write(
                "flv",
                &format!("tag-{n}"),
                &flv[at..(at + 15 + len).min(flv.len())],
            );
        }
        at += 15 + len;
        n += 1;
    }
    use ferrocast::ingest::rtmp::amf0::{Amf0Value, encode_all};
    write(
        "amf0",
        "connect",
        &encode_all(&[
            Amf0Value::String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(vec![
                ("app".into(), Amf0Value::String("live".into())),
                (
                    "tcUrl".into(),
                    Amf0Value::String("rtmp://127.0.0.1/live".into()),
                ),
                ("fpad".into(), Amf0Value::Boolean(false)),
            ]),
        ]),
    );
    write(
        "amf0",
        "publish",
        &encode_all(&[
            Amf0Value::String("publish".into()),
            Amf0Value::Number(5.0),
            Amf0Value::Null,
            Amf0Value::String("sk_0123456789".into()),
            Amf0Value::String("live".into()),
        ]),
    );
    // SDP: an offer of Chromium 156 (Debian's; audio and video, sendonly, with its ICE
    // candidates, as its WHIP client sends it), and the same without the video.
    let offer = std::fs::read_to_string(fixtures.join("webrtc/chromium_offer.sdp")).unwrap();
    write("sdp", "chromium", offer.as_bytes());
    write(
        "sdp",
        "chromium-audio",
        offer.split("m=video").next().unwrap().as_bytes(),
    );
    write(
        "sdp",
        "minimal",
        b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    );
    // tus: what tus-js-client and Uppy send.
    write(
        "tus",
        "tus-js",
        b"filename dGVzdC5tcDQ=,filetype dmlkZW8vbXA0",
    );
    write(
        "tus",
        "ferrocast",
        b"filename bW92aWUubXA0,ladder d2Vi,packaging Y21hZg==,playback_policy c2lnbmVk",
    );
    write("tus", "empty-value", b"is_private,title SGVsbG8gd29ybGQ=");
    // Tokens: one minted, one with its signature cut, one of another algorithm.
    let token = ferrocast::fuzzing::minted_token();
    write("jwt", "minted", token.as_bytes());
    write("jwt", "cut", &token.as_bytes()[..token.len() - 8]);
    write("jwt", "none", b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJwIn0.");
    // JSON bodies and the analytics bodies: every request example of the OpenAPI spec.
    json_examples();
    // Subtitles.
    write("subtitles", "srt", b"1\n00:00:01,000 --> 00:00:03,500\nHello\n\n2\n00:00:04,000 --> 00:00:06,000\nTwo\nlines\n");
    write(
        "subtitles",
        "vtt",
        b"WEBVTT\n\nNOTE made by hand\n\nintro\n01:02.000 --> 01:03.000 align:start\nHi\n",
    );
    write("subtitles", "vtt-bom", "\u{feff}WEBVTT\nX-TIMESTAMP-MAP=LOCAL:00:00:00.000,MPEGTS:0\n\n00:00.000 --> 00:01.000\n<b>bold</b>\n".as_bytes());
    // Playlists: subtitle names and languages, then bytes read as durations.
    write(
        "playlist",
        "names",
        "English\u{1}en\u{1}Français (CC)\u{1}fr-CA\u{1}中文\u{1}zh-Hant-TW".as_bytes(),
    );
    write("playlist", "quote", "a\",URI=\"x\u{1}en".as_bytes());
    write(
        "playlist",
        "durations",
        &[128, 0, 128, 1, 127, 0, 255, 0, 1, 1],
    );
    // CMCD: hls.js's query form and its v2 event report.
    write("cmcd", "query", br#"bl=21300,br=3200,d=4004,ot=v,sf=h,sid="6e2fb550-c457-11e9-bb97-0800200c9a66",st=v,tb=6000"#);
    write("cmcd", "events", b"e=ps,sta=p,ts=1796632000000,sid=\"6e2fb550-c457-11e9-bb97-0800200c9a66\",cid=\"8f2c1d0e4b6a49f3a1c2d3e4f5a6b7c8\"\ne=ps,sta=s,ts=1796632000100,sid=\"6e2fb550-c457-11e9-bb97-0800200c9a66\",cid=\"8f2c1d0e4b6a49f3a1c2d3e4f5a6b7c8\"");
    write(
        "cmcd",
        "v2-keys",
        b"ltc=900,msd=250,pr=1.5,v=2,nor=\"../seg2.m4s\",nrr=\"12323-48763\"",
    );
    // Webhooks: a Stripe-Signature line, then Stripe's, PayPal's and Coinbase's event shapes.
    write("webhooks", "stripe", b"t=1796632000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd\n{\"id\":\"evt_1\",\"object\":\"event\",\"type\":\"checkout.session.completed\",\"created\":1796632000,\"data\":{\"object\":{\"id\":\"cs_1\",\"object\":\"checkout.session\",\"metadata\":{\"order_id\":\"ord_1\"},\"payment_status\":\"paid\"}}}");
    write("webhooks", "paypal", b"\n{\"id\":\"WH-1\",\"event_type\":\"PAYMENT.CAPTURE.COMPLETED\",\"resource\":{\"id\":\"CAP-1\",\"custom_id\":\"ord_1\",\"amount\":{\"currency_code\":\"EUR\",\"value\":\"10.00\"}}}");
    write("webhooks", "coinbase", b"ab12\n{\"id\":1,\"event\":{\"id\":\"e1\",\"type\":\"charge:confirmed\",\"data\":{\"code\":\"C1\",\"metadata\":{\"order_id\":\"ord_1\"}}}}");
    // Storage keys and ranges.
    for (n, key) in [
        "live/abc/720p/12.ts",
        "../etc/passwd",
        "a/./b",
        "bytes=0-99",
        "a/%2e%2e/b",
        "a//b",
    ]
    .iter()
    .enumerate()
    {
        write("storage_key", &n.to_string(), key.as_bytes());
    }
    // Beacons: each analytics fixture's events as one batch.
    for entry in std::fs::read_dir(fixtures.join("analytics")).unwrap() {
        let path = entry.unwrap().path();
        let case: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let batch = serde_json::json!({
            "view_id": "6e2fb550-c457-11e9-bb97-0800200c9a66",
            "playback_id": "8f2c1d0e4b6a49f3a1c2d3e4f5a6b7c8",
            "events": case["events"],
        });
        write(
            "beacon",
            path.file_stem().unwrap().to_str().unwrap(),
            batch.to_string().as_bytes(),
        );
    }
}

/// ffmpeg's FLV of 2 s of 320x240 H.264 and AAC.
fn ffmpeg_flv() -> Vec<u8> {
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
            "-b:v",
            "200k",
            "-c:a",
            "aac",
            "-b:a",
            "32k",
            "-f",
            "flv",
            "-",
        ])
        .output()
        .expect("ffmpeg (Debian package ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `json`: the first byte picks the route as `ferrocast::fuzzing::json` does; the body is
/// the route's example. `beacon`, `cmcd`: the examples of their routes.
fn json_examples() {
    let spec = ferrocast::api::openapi::spec();
    let mut routes = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let content = &op["requestBody"]["content"];
            for (kind, media) in content.as_object().into_iter().flatten() {
                let example = &media["example"];
                if example.is_null() {
                    continue;
                }
                let body = match example {
                    serde_json::Value::String(s) if kind != "application/json" => s.clone(),
                    other => other.to_string(),
                };
                routes.push((path.clone(), method.to_uppercase(), kind.clone(), body));
            }
        }
    }
    let json_routes = ferrocast::fuzzing::json_routes();
    for (path, method, kind, body) in &routes {
        if path == "/v1/beacons" {
            write("beacon", "openapi-example", body.as_bytes());
        }
        if path == "/v1/cmcd" {
            write("cmcd", "openapi-example", body.as_bytes());
        }
        if kind != "application/json" {
            continue;
        }
        // A route the target leaves out (see `json_routes`) has no seed.
        let Some(index) = json_routes
            .iter()
            .position(|(m, p)| m.as_str() == method && p == path)
        else {
            continue;
        };
        for admin in [false, true] {
            let mut bytes = vec![(index as u8 & 0x7f) | if admin { 0x80 } else { 0 }];
            bytes.extend_from_slice(body.as_bytes());
            let name = format!(
                "{}-{}{}",
                method.to_lowercase(),
                path.trim_start_matches('/').replace(['/', '{', '}'], "_"),
                if admin { "-admin" } else { "" }
            );
            write("json", &name, &bytes);
        }
    }
}

/// Which route each first byte of a `json` input picks (`cargo test --test fuzz_corpora --
/// --ignored json_routes --nocapture`), to read a finding.
#[test]
#[ignore = "prints the json target's routes"]
fn json_routes() {
    let routes = ferrocast::fuzzing::json_routes();
    for (n, (method, path)) in routes.iter().enumerate() {
        println!("{n:3} {method} {path}");
    }
}
