//! DASH playback of CMAF outputs: `GET /dash/{playback_id}/manifest.mpd`, the fragments
//! beside it (the same files `/hls/…` serves, by the same rules), and `GET /time`, the clock
//! live manifests point players at (`UTCTiming`). The stored manifest names its licence
//! and clock by placeholders; each viewer's copy gets this server's URLs, the playback id
//! and the viewer's token, and loses the representations above what the viewer may watch.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use super::access::{ClientIp, TokenQuery};
use super::delivery::{manifest_viewer, serve_object};
use super::{AppState, Path, Query};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::packager::dash::{LICENCE_URL, TIME_URL};

/// Stored manifests are a few KB; this bounds reading one back.
const MAX_MANIFEST: usize = 4 << 20;

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Lines (the short side) of a `<Representation …>` start tag, when it has a size.
fn representation_lines(tag: &str) -> Option<u32> {
    let attr = |name: &str| -> Option<u32> {
        let v = tag.split(&format!(" {name}=\"")).nth(1)?;
        v.split('"').next()?.parse().ok()
    };
    Some(attr("width")?.min(attr("height")?))
}

/// The manifest as one viewer gets it: the licence and clock URLs filled in, the token (if
/// one is carried) on every URL, representations above `max_lines` left out.
pub fn for_viewer(
    mpd: &str,
    base_url: &str,
    playback_id: &str,
    token: Option<&str>,
    max_lines: Option<u32>,
) -> String {
    let query = token.map(|t| {
        let t: String = url::form_urlencoded::byte_serialize(t.as_bytes()).collect();
        format!("?token={t}")
    });
    let query = query.as_deref().unwrap_or("");
    let licence = format!("{base_url}/licenses/clearkey/{playback_id}{query}");
    let mut out = String::with_capacity(mpd.len() + 256);
    let mut skipping = false;
    for line in mpd.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("<Representation ") {
            skipping = max_lines
                .zip(representation_lines(trimmed))
                .is_some_and(|(max, lines)| lines > max);
        }
        if skipping {
            skipping = !trimmed.starts_with("</Representation>");
            continue;
        }
        let mut line = line
            .replace(LICENCE_URL, &xml_escape(&licence))
            .replace(TIME_URL, &xml_escape(&format!("{base_url}/time")));
        if !query.is_empty() {
            for attr in ["initialization=\"", "media=\""] {
                if let Some(start) = line.find(attr).map(|i| i + attr.len())
                    && let Some(len) = line[start..].find('"')
                {
                    line.insert_str(start + len, &xml_escape(query));
                }
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `GET /dash/{playback_id}/manifest.mpd`
#[utoipa::path(get, path = "/dash/{playback_id}/manifest.mpd", tag = "playback",
    params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media"), ("CMCD" = Option<String>, Query, description = "CMCD data (query mode), for analytics")),
    responses((status = 200, description = "The DASH manifest of a CMAF output (dynamic while live, static after); a token in the query is carried into its URLs and its ClearKey licence URL",
            content_type = "application/dash+xml", body = String),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"), (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement, tier)"),
        (status = 404, body = ErrorBody, description = "No such playback id, offline, or packaged as MPEG-TS (no DASH)"), (status = 429, body = ErrorBody)))]
pub async fn manifest(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let v = manifest_viewer(&state, &playback_id, &q, ip.as_deref(), &headers).await?;
    let (target, private, max_lines) = (&v.target, v.private, v.max_lines);
    let stored = serve_object(&state, target, private, "manifest.mpd", None, None)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => {
                ApiError::NotFound("no DASH manifest: this media is not packaged as CMAF".into())
            }
            e => e,
        })?;
    let (mut parts, body) = stored.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("reading the manifest: {e}")))?;
    let text = for_viewer(
        &String::from_utf8_lossy(&bytes),
        state.jobs.public_url.trim_end_matches('/'),
        &playback_id,
        v.carried.as_deref(),
        max_lines,
    );
    if max_lines.is_some() && !text.contains("<Representation ") {
        return Err(ApiError::Forbidden(
            "no rendition of this video is within what this viewer may watch".into(),
        ));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(text)))
}

/// `GET /dash/{playback_id}/{rendition}/{file}`: a CMAF init segment or fragment, as
/// `/hls/{playback_id}/{rendition}/{file}` serves it.
#[utoipa::path(get, path = "/dash/{playback_id}/{rendition}/{file}", tag = "playback",
    params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media"), ("CMCD" = Option<String>, Query, description = "CMCD data (query mode), for analytics")),
    responses((status = 200, description = "An encrypted CMAF init segment (`init.mp4`) or fragment (`N.m4s`)",
            content((String = "video/mp4"), (String = "audio/mp4"))),
        (status = 302, description = "The fragment at a presigned storage URL (`delivery.redirect_segments`)"),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"), (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement, tier)"),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn fragment(
    state: State<AppState>,
    Path((playback_id, rendition, file)): Path<(String, String, String)>,
    q: Query<TokenQuery>,
    ip: ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    fragment_in(state, "", playback_id, rendition, file, q, ip, headers).await
}

/// `GET /dash/{playback_id}/cmaf/{rendition}/{file}`: for media packaged as `both`, whose
/// manifest points into its CMAF set with `<BaseURL>cmaf/</BaseURL>`.
#[utoipa::path(get, path = "/dash/{playback_id}/cmaf/{rendition}/{file}", tag = "playback",
    params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media"), ("CMCD" = Option<String>, Query, description = "CMCD data (query mode), for analytics")),
    responses((status = 200, description = "An encrypted CMAF init segment (`init.mp4`) or fragment (`N.m4s`) of the CMAF set of media packaged as `both`",
            content((String = "video/mp4"), (String = "audio/mp4"))),
        (status = 302, description = "The fragment at a presigned storage URL (`delivery.redirect_segments`)"),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"), (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement, tier)"),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn cmaf_fragment(
    state: State<AppState>,
    Path((playback_id, rendition, file)): Path<(String, String, String)>,
    q: Query<TokenQuery>,
    ip: ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let set = crate::packager::output::CMAF_BESIDE;
    fragment_in(state, set, playback_id, rendition, file, q, ip, headers).await
}

#[allow(clippy::too_many_arguments)]
async fn fragment_in(
    state: State<AppState>,
    set: &str,
    playback_id: String,
    rendition: String,
    file: String,
    q: Query<TokenQuery>,
    ip: ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if !(file.ends_with(".m4s") || file.ends_with(".mp4")) {
        return Err(ApiError::NotFound("not found".into()));
    }
    super::delivery::serve_rendition_file(
        state,
        set,
        playback_id,
        rendition,
        file,
        q,
        Query(Default::default()),
        ip,
        headers,
    )
    .await
}

/// `GET /time`: this server's clock, ISO 8601 in UTC with milliseconds
/// (`urn:mpeg:dash:utc:http-iso:2014`), for live DASH players.
#[utoipa::path(get, path = "/time", tag = "playback",
    responses((status = 200, description = "The current time", content_type = "text/plain", body = String,
        example = "2026-12-07T14:05:09.123Z")))]
pub async fn time() -> Response {
    let now = chrono::DateTime::from_timestamp_millis(crate::clock::now_ms())
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let mut response = Response::new(Body::from(now));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const MPD: &str = "<MPD>\n    <AdaptationSet id=\"0\">\n      <ContentProtection><dashif:Laurl>ferrocast:clearkey-licence</dashif:Laurl></ContentProtection>\n      <Representation id=\"720p\" bandwidth=\"1\" codecs=\"avc1\" width=\"1280\" height=\"720\">\n        <SegmentTemplate timescale=\"90000\" initialization=\"720p/init.mp4\" media=\"720p/$Number$.m4s\" startNumber=\"0\">\n      </Representation>\n      <Representation id=\"360p\" bandwidth=\"1\" codecs=\"avc1\" width=\"640\" height=\"360\">\n        <SegmentTemplate timescale=\"90000\" initialization=\"360p/init.mp4\" media=\"360p/$Number$.m4s\" startNumber=\"0\">\n      </Representation>\n    </AdaptationSet>\n  <UTCTiming value=\"ferrocast:time\"/>\n</MPD>\n";

    #[test]
    fn each_viewer_gets_the_urls_with_the_token_and_only_the_renditions_allowed() {
        let out = for_viewer(MPD, "https://x.test", "pb1", Some("a.b&\"<"), Some(480));
        assert!(out.contains("<dashif:Laurl>https://x.test/licenses/clearkey/pb1?token=a.b%26%22%3C</dashif:Laurl>"), "{out}");
        assert!(out.contains("value=\"https://x.test/time\""));
        assert!(out.contains("initialization=\"360p/init.mp4?token=a.b%26%22%3C\" media=\"360p/$Number$.m4s?token=a.b%26%22%3C\""), "{out}");
        assert!(!out.contains("720p"), "{out}");
        let public = for_viewer(MPD, "https://x.test", "pb1", None, None);
        assert!(public.contains("720p/init.mp4\"") && public.contains("clearkey/pb1<"));
    }
}
