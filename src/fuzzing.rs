//! One function per parser of bytes from outside, for the coverage-guided fuzzer (`fuzz/`,
//! cargo-afl) and for `tests/fuzz_corpora.rs`, which replays the committed corpora
//! (`fuzz/corpus/<target>/`) in `make test`.
//!
//! Each target takes any bytes and must return: a panic, a hang or memory beyond the
//! parser's own limits is a finding. Where there is more to hold than "no crash", the target
//! asserts it: AMF0, WebVTT and the playlists read back what was written; RTMP events do not
//! depend on how the bytes were split; a storage key never leaves its folder; a playback
//! token verifies only as it was minted; no JSON body makes the API answer 500.

use std::sync::OnceLock;

/// A target: any bytes in, returns or panics.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus folder and afl binary carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("rtmp", rtmp),
    ("amf0", amf0),
    ("flv", flv),
    ("sdp", sdp),
    ("tus", tus),
    ("jwt", jwt),
    ("json", json),
    ("subtitles", subtitles),
    ("playlist", playlist),
    ("beacon", beacon),
    ("cmcd", cmcd),
    ("webhooks", webhooks),
    ("storage_key", storage_key),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// An RTMP server connection (handshake, chunk stream, AMF0 commands, media messages), fed
/// the bytes whole and again in two pieces split where the first byte says: the events must
/// be the same. A third run accepts each publish request, to reach the publishing state.
pub fn rtmp(data: &[u8]) {
    use crate::ingest::rtmp::{Event, Limits, ServerConnection};
    let run = |pieces: &[&[u8]], accept: bool| -> Option<Vec<Event>> {
        let mut conn = ServerConnection::new(Limits::default());
        let mut events = Vec::new();
        for piece in pieces {
            let got = conn.feed(piece).ok()?;
            for e in &got {
                if let (true, Event::PublishRequested { stream_id, .. }) = (accept, e) {
                    conn.accept_publish(*stream_id);
                }
            }
            events.extend(got);
            let _ = conn.take_output();
        }
        Some(events)
    };
    let at = data
        .first()
        .map_or(0, |&b| usize::from(b) * data.len() / 256);
    if let (Some(whole), Some(split)) =
        (run(&[data], false), run(&[&data[..at], &data[at..]], false))
    {
        // Metadata may hold NaN, which is not equal to itself: unequal events are compared
        // again as text.
        if whole != split {
            assert_eq!(
                format!("{whole:?}"),
                format!("{split:?}"),
                "events depend on where the input was split at {at}"
            );
        }
    }
    let _ = run(&[data], true);
}

/// AMF0 values: decoded, encoded and decoded again, the second encoding equals the first.
pub fn amf0(data: &[u8]) {
    use crate::ingest::rtmp::amf0;
    let Ok(values) = amf0::decode_all(data) else {
        return;
    };
    let once = amf0::encode_all(&values);
    let again = amf0::decode_all(&once).expect("AMF0 this module wrote decodes");
    assert_eq!(amf0::encode_all(&again), once);
}

/// An FLV byte stream (what RTMP messages carry) through the Rust copy engine: tags read,
/// AVC and AAC configurations parsed, frames re-wrapped as MPEG-TS segments and parts.
pub fn flv(data: &[u8]) {
    use crate::media::flv::{self, TagKind};
    let mut reader = flv::Reader::default();
    let mut header = flv::header().to_vec();
    header.extend_from_slice(data);
    let Ok(tags) = reader.push(&header) else {
        return;
    };
    let mut muxing = crate::pipeline::copy::Muxing::new(2, Some(334_000_000));
    let mut events = Vec::new();
    for tag in tags {
        let kind = match tag.kind {
            8 => TagKind::Audio,
            9 => TagKind::Video,
            _ => continue,
        };
        if muxing
            .push(kind, tag.timestamp_ms, &tag.body, &mut events)
            .is_err()
        {
            return;
        }
        events.clear();
    }
    muxing.finish(&mut events);
}

/// A WHIP/WHEP offer, narrowed to the codecs the server takes.
pub fn sdp(data: &[u8]) {
    let _ = crate::media::sdp::prepare_offer(&text(data), &["H264", "VP8", "VP9"]);
}

/// tus `Upload-Metadata` (what is accepted holds no control character) and the numeric
/// headers.
pub fn tus(data: &[u8]) {
    let value = text(data);
    if let Ok(map) = crate::api::uploads::parse_metadata(Some(&value)) {
        for (k, v) in &map {
            assert!(k.bytes().all(|b| b.is_ascii_graphic()), "{k:?}");
            let v = v.as_str().expect("metadata values are strings");
            assert!(!v.chars().any(char::is_control), "{v:?}");
        }
    }
    let _ = crate::api::uploads::parse_u64_header("Upload-Offset", &value);
}

/// The secret the `jwt` target mints and verifies with.
const JWT_SECRET: [u8; 32] = [7; 32];

/// A playback token minted by [`jwt`]'s key, for the corpus (it never expires, so that the
/// fuzzer can reach everything after the checks).
pub fn minted_token() -> String {
    let tokens = crate::drm::PlaybackTokens::new(&[JWT_SECRET], None, u64::MAX);
    let claims = crate::drm::PlaybackClaims::new("p", crate::drm::AUD_VIDEO, u64::MAX / 4);
    tokens.mint(&claims)
}

/// A playback token: verified only if it is exactly the one minted.
pub fn jwt(data: &[u8]) {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    });
    let token = text(data);
    let tokens = crate::drm::PlaybackTokens::new(&[JWT_SECRET], None, u64::MAX);
    if rt
        .block_on(tokens.verify(&token, Some("p"), crate::drm::AUD_VIDEO))
        .is_ok()
    {
        assert_eq!(
            token,
            minted_token(),
            "a token that was never minted verified"
        );
    }
}

/// The API, in this process (SQLite and a folder in a temporary directory), with a tenant.
struct Api {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    tenant_key: String,
    admin_key: String,
    playback_id: String,
    /// `(method, path)` of every route that takes a JSON body, from the OpenAPI spec.
    routes: Vec<(axum::http::Method, String)>,
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        // Left behind on exit: a fuzzer's process ends by being stopped.
        let dir = std::env::temp_dir().join(format!("ferrocast-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = crate::config::Config::defaults();
        config.data_dir = dir.join("data");
        config.keys.dir = dir.join("keys");
        let (state, startup, demo) = rt.block_on(async {
            let (state, startup) =
                crate::server::build(config, "http://127.0.0.1:9", "rtmp://127.0.0.1:9/live")
                    .await
                    .expect("the server builds");
            let demo = crate::server::create_demo(&state)
                .await
                .expect("a demo tenant");
            (state, startup, demo)
        });
        Api {
            router: crate::api::router(state),
            rt,
            tenant_key: demo.tenant_api_key,
            admin_key: startup
                .bootstrap_admin_key
                .expect("a fresh database makes an admin key"),
            playback_id: demo.playback_id,
            routes: json_routes(),
        }
    })
}

/// `(method, path)` of every route that takes a JSON body, from the OpenAPI spec, in the
/// order [`json`] numbers them. Not `POST /v1/signing-keys`: it makes an RSA key pair, which
/// takes seconds by design (on the blocking pool), and would read as a hang.
pub fn json_routes() -> Vec<(axum::http::Method, String)> {
    let mut routes = Vec::new();
    let spec = crate::api::openapi::spec();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let json_body = op["requestBody"]["content"]
                .as_object()
                .is_some_and(|c| c.contains_key("application/json"))
                && path != "/v1/signing-keys";
            if let (true, Ok(m)) = (
                json_body,
                method.to_uppercase().parse::<axum::http::Method>(),
            ) {
                routes.push((m, path.clone()));
            }
        }
    }
    routes.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
    routes
}

/// A JSON body sent to a route that takes one (the first byte picks the route and the key:
/// the tenant's or the admin's), through the real router and extractors: never a 500.
pub fn json(data: &[u8]) {
    use tower::ServiceExt;
    let api = api();
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (method, template) = &api.routes[usize::from(pick & 0x7f) % api.routes.len()];
    let mut path = String::new();
    for (i, piece) in template.split(['{', '}']).enumerate() {
        path.push_str(match (i % 2, piece) {
            (0, text) => text,
            (_, "playback_id") => &api.playback_id,
            _ => "00000000000000000000000000000000",
        });
    }
    let key = if pick & 0x80 != 0 {
        &api.admin_key
    } else {
        &api.tenant_key
    };
    let request = axum::http::Request::builder()
        .method(method)
        .uri(&path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", "127.0.0.1")
        .body(axum::body::Body::from(body.to_vec()))
        .expect("a request");
    let response = api
        .rt
        .block_on(api.router.clone().oneshot(request))
        .expect("the router answers");
    assert_ne!(
        response.status(),
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "{method} {path} answered 500 to {:?}",
        text(body)
    );
}

/// SRT or WebVTT: what parses is written as WebVTT and parses back the same.
pub fn subtitles(data: &[u8]) {
    use crate::packager::subtitles;
    let Ok(cues) = subtitles::parse(&text(data)) else {
        return;
    };
    let vtt = subtitles::to_webvtt(&cues);
    assert_eq!(subtitles::parse(&vtt).as_ref(), Ok(&cues), "{vtt}");
}

/// Subtitle track names and languages (the outside text that reaches a master playlist)
/// and segment durations, written and parsed back by m3u8-rs: every accepted name and
/// language comes back as it went in, as one attribute, and every segment as written.
pub fn playlist(data: &[u8]) {
    use crate::packager::{playlist as pl, subtitles};
    let fields: Vec<String> = text(data).split('\u{1}').map(str::to_string).collect();
    let master = pl::render_master(&[pl::Variant {
        uri: "720p/index.m3u8".into(),
        bandwidth: 3_000_000,
        average_bandwidth: None,
        width: 1280,
        height: 720,
        frame_rate: Some(30.0),
        codecs: "avc1.64001f,mp4a.40.2".into(),
    }]);
    let tracks: Vec<subtitles::Track> = fields
        .chunks(2)
        .take(8)
        .enumerate()
        .map(|(n, pair)| subtitles::Track {
            name: pair[0].clone(),
            language: pair.get(1).cloned().unwrap_or_default(),
            uri: format!("subtitles/{n}.m3u8"),
        })
        .collect();
    let written = subtitles::master_with_subtitles(&master, &tracks).expect("our own master");
    let parsed = m3u8_rs::parse_master_playlist_res(written.as_bytes())
        .unwrap_or_else(|e| panic!("{e:?}: {written}"));
    assert_eq!(parsed.variants.len(), 1, "{written}");
    let accepted: Vec<_> = tracks
        .iter()
        .filter(|t| subtitles::check_name(&t.name).is_ok())
        .filter(|t| subtitles::check_language(&t.language).is_ok())
        .collect();
    assert_eq!(parsed.alternatives.len(), accepted.len(), "{written}");
    for (t, alt) in accepted.iter().zip(&parsed.alternatives) {
        assert_eq!(alt.name, t.name, "{written}");
        assert_eq!(
            alt.language.as_deref(),
            Some(t.language.as_str()),
            "{written}"
        );
        assert_eq!(alt.uri.as_deref(), Some(t.uri.as_str()), "{written}");
    }

    let mut media = pl::MediaPlaylist::new(2, Some(6));
    let mut pushed = Vec::new();
    for (n, pair) in data.chunks(2).take(64).enumerate() {
        let duration = f64::from(pair[0]) / 64.0 + 0.001;
        let segment = pl::SegmentEntry {
            sequence: n as u64,
            uri: format!("{n}.ts"),
            duration,
            key: None,
            discontinuity: pair.get(1).is_some_and(|b| b & 1 == 1),
            program_date_time_ms: None,
            map: None,
        };
        pushed.push(segment.clone());
        media.push(segment);
    }
    if pushed.is_empty() {
        return;
    }
    media.end();
    let written = media.render(pl::PlaylistKind::Vod);
    let parsed = m3u8_rs::parse_media_playlist_res(written.as_bytes())
        .unwrap_or_else(|e| panic!("{e:?}: {written}"));
    assert!(parsed.end_list, "{written}");
    let kept: Vec<_> = media.segments().collect();
    assert_eq!(parsed.segments.len(), kept.len(), "{written}");
    for (s, p) in kept.iter().zip(&parsed.segments) {
        assert_eq!(p.uri, s.uri, "{written}");
        assert!(
            (f64::from(p.duration) - s.duration).abs() < 0.001,
            "{written}"
        );
    }
}

/// A viewer beacon batch.
pub fn beacon(data: &[u8]) {
    let _ = crate::analytics::beacon::parse(data, 1_765_000_600_000);
}

/// CMCD: a report of event lines, and the keys of one request (query or header form).
pub fn cmcd(data: &[u8]) {
    let _ = crate::analytics::cmcd_events::parse(data, 1_796_632_000_000);
    let _ = crate::analytics::cmcd::parse(text(data).split(','));
}

/// Payment providers' webhook bodies and signature headers (Stripe, PayPal, Coinbase):
/// the first line is the signature header, the rest the body.
pub fn webhooks(data: &[u8]) {
    use crate::commerce::{coinbase, paypal, stripe};
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let header = text(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    assert!(
        stripe::verify_signature(Some(&header), body, "whsec_fuzz", 1_796_632_000).is_err(),
        "a forged Stripe signature verified"
    );
    assert!(
        coinbase::verify_signature(Some(&header), body, "fuzz").is_err(),
        "a forged Coinbase signature verified"
    );
    let _ = stripe::Event::parse(body);
    let _ = paypal::parse_event(body);
    let _ = coinbase::parse_event(body);
}

/// Storage keys and prefixes: an accepted key stays inside the storage folder.
pub fn storage_key(data: &[u8]) {
    use crate::storage::{ObjectKey, Prefix};
    let key = text(data);
    if let Ok(k) = ObjectKey::parse(&key) {
        let path = std::path::Path::new(k.as_str());
        assert!(path.is_relative(), "{key:?}");
        assert!(
            path.components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
            "{key:?} leaves its folder"
        );
    }
    let _ = Prefix::parse(&key);
    let _ = crate::storage::ByteRange::parse_header(&key);
}

/// Runs a target over every file of its committed corpus (for `tests/fuzz_corpora.rs`);
/// returns how many inputs ran.
pub fn replay(name: &str, corpus: &std::path::Path) -> usize {
    let run = target(name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    let mut n = 0;
    let mut files: Vec<_> = std::fs::read_dir(corpus)
        .map(|d| d.map(|e| e.expect("a corpus entry").path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        let bytes = std::fs::read(&file).expect("a corpus file");
        if std::panic::catch_unwind(|| run(&bytes)).is_err() {
            panic!("fuzz target {name} fails on {}", file.display());
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `jwt` target's property is not vacuous: its minted token does verify.
    #[test]
    fn the_minted_token_verifies() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let tokens = crate::drm::PlaybackTokens::new(&[JWT_SECRET], None, u64::MAX);
        let token = minted_token();
        assert!(
            rt.block_on(tokens.verify(&token, Some("p"), crate::drm::AUD_VIDEO))
                .is_ok()
        );
        jwt(token.as_bytes());
    }

    /// Every target runs on empty input and on a byte of each value.
    #[test]
    fn every_target_takes_tiny_inputs() {
        for (_, run) in TARGETS {
            run(b"");
            for b in 0..=255u8 {
                run(&[b]);
            }
        }
        let _ = std::fs::remove_dir_all(
            std::env::temp_dir().join(format!("ferrocast-fuzz-{}", std::process::id())),
        );
    }
}
