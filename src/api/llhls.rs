//! LL-HLS delivery (RFC 8216bis): a live CMAF track's playlist and parts come from memory
//! (`packager::llhls`), not storage. A blocking reload (`_HLS_msn`, `_HLS_part`) awaits the
//! track's next snapshot until the playlist holds what was asked, at most three target
//! durations (then 503); a request too far ahead, or `_HLS_part` without `_HLS_msn`, is a
//! 400. `_HLS_skip=YES` gets the delta form. A part not there yet but next in line (the
//! preload hint) is held until it exists. The access rules are the caller's (the
//! rendition route checks the token before it comes here).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::watch;

use crate::error::{ApiError, ApiResult};
use crate::packager::llhls::Snapshot;

/// The LL-HLS query parameters (the token and CMCD are read elsewhere).
#[derive(Debug, Default, Deserialize)]
pub struct LlQuery {
    #[serde(rename = "_HLS_msn")]
    msn: Option<String>,
    #[serde(rename = "_HLS_part")]
    part: Option<String>,
    #[serde(rename = "_HLS_skip")]
    skip: Option<String>,
}

fn number(v: &Option<String>, name: &str) -> ApiResult<Option<u64>> {
    v.as_deref()
        .map(|t| {
            t.parse()
                .map_err(|_| ApiError::invalid(format!("{name} must be a non-negative integer")))
        })
        .transpose()
}

/// Waits (bounded) until `ready` holds for the track's snapshot; `None` when the track
/// stopped being live meanwhile.
async fn wait_for(
    rx: &mut watch::Receiver<Arc<Snapshot>>,
    ready: impl Fn(&Snapshot) -> bool,
) -> ApiResult<Option<Arc<Snapshot>>> {
    let hold = rx.borrow().hold;
    let waited = tokio::time::timeout(hold, async {
        loop {
            let now = rx.borrow_and_update().clone();
            if ready(&now) || now.ended {
                return Some(now);
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    match waited {
        Ok(s) => Ok(s.filter(|s| !s.ended)),
        Err(_) => Err(ApiError::Unavailable(
            "the playlist did not reach that part in three target durations".into(),
        )),
    }
}

fn response(body: impl Into<Body>, content_type: &'static str, cache: &'static str) -> Response {
    let mut r = Response::new(body.into());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

/// The live media playlist of a low-latency track; `None` when the track is no longer live
/// (the stored playlist answers).
pub async fn playlist(
    mut rx: watch::Receiver<Arc<Snapshot>>,
    q: &LlQuery,
    token: Option<&str>,
) -> ApiResult<Option<Response>> {
    let msn = number(&q.msn, "_HLS_msn")?;
    let part = number(&q.part, "_HLS_part")?;
    if part.is_some() && msn.is_none() {
        return Err(ApiError::invalid("_HLS_part needs _HLS_msn"));
    }
    let snapshot = match msn {
        Some(msn) => {
            if rx.borrow().too_far(msn, part) {
                return Err(ApiError::invalid(
                    "_HLS_msn/_HLS_part is further ahead than the playlist will be soon",
                ));
            }
            wait_for(&mut rx, |s| s.has(msn, part)).await?
        }
        None => Some(rx.borrow().clone()).filter(|s| !s.ended),
    };
    let Some(snapshot) = snapshot else {
        return Ok(None);
    };
    let delta = matches!(q.skip.as_deref(), Some("YES" | "v2"));
    let text = match (&snapshot.skip, delta) {
        (Some(skip), true) => skip.as_str(),
        _ => snapshot.full.as_str(),
    };
    let text = match token {
        Some(t) => super::delivery::with_token(text, t),
        None => text.to_string(),
    };
    Ok(Some(response(
        text,
        crate::packager::hls::PLAYLIST_TYPE,
        "no-cache",
    )))
}

/// `{msn}.{part}.m4s` as (msn, part).
pub fn part_name(file: &str) -> Option<(u64, u64)> {
    let (msn, rest) = file.strip_suffix(".m4s")?.split_once('.')?;
    Some((msn.parse().ok()?, rest.parse().ok()?))
}

/// A part from memory; one not there yet but due next (the preload hint) is waited for,
/// until it exists or its segment closed without it (then 404 at once, as RFC 8216bis
/// asks of a hint that will not be fulfilled). `None`: not a part this track holds (the
/// stored segment, if any, answers).
pub async fn part(
    mut rx: watch::Receiver<Arc<Snapshot>>,
    file: &str,
    private: bool,
) -> ApiResult<Option<Response>> {
    let Some((msn, index)) = part_name(file) else {
        return Ok(None);
    };
    let found = |s: &Snapshot| s.parts.get(file).cloned();
    let now = rx.borrow().clone();
    let bytes = match found(&now) {
        Some(b) => Some(b),
        None if !now.too_far(msn, Some(index)) && !now.has(msn, Some(index)) => {
            wait_for(&mut rx, |s| s.parts.contains_key(file) || msn < s.open_msn)
                .await?
                .and_then(|s| found(&s))
        }
        None => None,
    };
    let Some(bytes) = bytes else {
        return Err(ApiError::NotFound(format!(
            "part {file} is not held any more"
        )));
    };
    let cache = if private {
        "private, max-age=60"
    } else {
        "public, max-age=60"
    };
    Ok(Some(response(bytes, "video/mp4", cache)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(open_msn: u64, parts: &[&str]) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            open_msn,
            open_parts: parts
                .iter()
                .filter(|p| p.starts_with(&format!("{open_msn}.")))
                .count() as u64,
            hold: std::time::Duration::from_secs(6),
            parts: parts
                .iter()
                .map(|p| (p.to_string(), bytes::Bytes::from_static(b"chunk")))
                .collect(),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_hinted_part_is_held_until_it_is_cut_or_its_segment_closes_without_it() {
        let (tx, rx) = watch::channel(snapshot(5, &["5.0.m4s", "5.1.m4s"]));
        let waiting = tokio::spawn(part(rx.clone(), "5.2.m4s", false));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "held while it is due");
        tx.send_replace(snapshot(5, &["5.0.m4s", "5.1.m4s", "5.2.m4s"]));
        let r = waiting.await.unwrap().unwrap().unwrap();
        assert_eq!(r.status(), 200);

        // The segment closes with three parts: a request for a fourth is answered at once.
        let waiting = tokio::spawn(part(rx, "5.3.m4s", false));
        tokio::task::yield_now().await;
        let started = std::time::Instant::now();
        tx.send_replace(snapshot(6, &["5.0.m4s", "5.1.m4s", "5.2.m4s"]));
        let r = waiting.await.unwrap();
        assert!(matches!(r, Err(ApiError::NotFound(_))), "{r:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn part_names_are_read() {
        assert_eq!(part_name("12.3.m4s"), Some((12, 3)));
        assert_eq!(part_name("12.m4s"), None);
        assert_eq!(part_name("a.3.m4s"), None);
        assert_eq!(part_name("init.mp4"), None);
    }
}
