//! What a player posts to `POST /v1/beacons`: one view's events, checked field by field
//! before anything is queued. Everything is bounded: a batch, its events, every string.

use serde::Deserialize;

use super::view::Event;

/// Events in one batch, at most.
pub const MAX_EVENTS: usize = 300;
/// Bytes of one batch, at most.
pub const MAX_BYTES: usize = 500 * 1024;
/// How far in the past an event may be (a player retrying with backoff), and ahead (clocks
/// apart), against the server's clock.
pub const MAX_PAST_MS: i64 = 24 * 3600 * 1000;
pub const MAX_AHEAD_MS: i64 = 10 * 60 * 1000;

/// A batch as posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub view_id: String,
    pub viewer_id: Option<String>,
    pub playback_id: String,
    #[serde(default)]
    pub player: Player,
    pub events: Vec<Event>,
}

/// The player, as it names itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Player {
    pub name: Option<String>,
    pub version: Option<String>,
}

/// Why a batch was refused (400, with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadBatch {
    #[error("the batch is not the JSON of a beacon batch: {0}")]
    Json(String),
    #[error("a batch holds 1 to {MAX_EVENTS} events")]
    EventCount,
    #[error("{0} must be 8 to 64 letters, digits, '-' or '_'")]
    Id(&'static str),
    #[error("playback_id is not a playback id")]
    PlaybackId,
    #[error("{0} is too long")]
    TooLong(&'static str),
    #[error("event {seq}: its time is {0} from the server's clock", seq = .1)]
    Time(String, u32),
    #[error("event {0}: a size or bitrate out of range")]
    Range(u32),
}

/// A view or viewer id's shape: 8 to 64 letters, digits, `-` or `_`.
pub fn id_shaped(s: &str) -> bool {
    (8..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn bounded(field: &'static str, s: &Option<String>, max: usize) -> Result<(), BadBatch> {
    match s {
        Some(s) if s.chars().count() > max || s.chars().any(char::is_control) => {
            Err(BadBatch::TooLong(field))
        }
        _ => Ok(()),
    }
}

/// Parses and checks a batch against the server's clock `now_ms`.
pub fn parse(body: &[u8], now_ms: i64) -> Result<Batch, BadBatch> {
    let mut batch: Batch =
        serde_json::from_slice(body).map_err(|e| BadBatch::Json(cut(&e.to_string(), 200)))?;
    if batch.events.is_empty() || batch.events.len() > MAX_EVENTS {
        return Err(BadBatch::EventCount);
    }
    if !id_shaped(&batch.view_id) {
        return Err(BadBatch::Id("view_id"));
    }
    if batch.viewer_id.as_deref().is_some_and(|v| !id_shaped(v)) {
        return Err(BadBatch::Id("viewer_id"));
    }
    if batch.playback_id.is_empty()
        || batch.playback_id.len() > 64
        || !batch.playback_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(BadBatch::PlaybackId);
    }
    bounded("player.name", &batch.player.name, 64)?;
    bounded("player.version", &batch.player.version, 32)?;
    for e in &batch.events {
        if e.seq >= super::cmcd_events::SEQ_BASE {
            // Above are CMCD event reports' (`cmcd_events`).
            return Err(BadBatch::Range(e.seq));
        }
        let ahead = e.t - now_ms;
        if ahead > MAX_AHEAD_MS || -ahead > MAX_PAST_MS {
            let how = if ahead > 0 {
                format!("{} s ahead", ahead / 1000)
            } else {
                format!("{} s behind", -ahead / 1000)
            };
            return Err(BadBatch::Time(how, e.seq));
        }
        bounded("code", &e.code, 64)?;
        bounded("message", &e.message, 500)?;
        bounded("context", &e.context, 16)?;
        let sizes = [e.player_w, e.player_h, e.width, e.height];
        if sizes.iter().flatten().any(|s| *s > 16_384)
            || e.bitrate.is_some_and(|b| b > 1_000_000_000)
            || e.playhead_ms
                .is_some_and(|p| !(0..=366 * 86_400_000).contains(&p))
            || e.duration_ms.is_some_and(|d| !(0..=600_000).contains(&d))
        {
            return Err(BadBatch::Range(e.seq));
        }
    }
    // A latency counts when it is under an hour and not negative by more than clocks
    // differ; otherwise (a recording watched long after, a clock far off) it is left out,
    // and the event kept.
    for e in &mut batch.events {
        if e.program_date_ms.is_some_and(|d| {
            e.t.checked_sub(d)
                .is_none_or(|l| !(-MAX_AHEAD_MS..=3_600_000).contains(&l))
        }) {
            e.program_date_ms = None;
        }
    }
    Ok(batch)
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_765_000_000_000;

    fn body(events: &str) -> String {
        format!(
            r#"{{"view_id":"v-0123456789","viewer_id":"viewer_01","playback_id":"abc123","player":{{"name":"ferrocast","version":"1"}},"events":{events}}}"#
        )
    }

    #[test]
    fn a_good_batch_parses() {
        let b = parse(
            body(&format!(r#"[{{"seq":1,"type":"play","t":{NOW}}}]"#)).as_bytes(),
            NOW,
        )
        .unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.player.name.as_deref(), Some("ferrocast"));
        // A live latency over an hour (a recording watched long after) or from a date far
        // ahead is left out; the events are kept.
        let min = i64::MIN;
        let b = parse(
            body(&format!(
                r#"[{{"seq":1,"type":"heartbeat","t":{NOW},"program_date_ms":{}}},
                    {{"seq":2,"type":"heartbeat","t":{NOW},"program_date_ms":{min}}},
                    {{"seq":3,"type":"heartbeat","t":{NOW},"program_date_ms":{}}}]"#,
                NOW - 7_200_000,
                NOW - 4000
            ))
            .as_bytes(),
            NOW,
        )
        .unwrap();
        let dates: Vec<Option<i64>> = b.events.iter().map(|e| e.program_date_ms).collect();
        assert_eq!(dates, [None, None, Some(NOW - 4000)]);
    }

    #[test]
    fn bad_batches_are_refused_with_their_reason() {
        let one = |e: &str| body(&format!("[{e}]"));
        let cases = [
            ("{".to_string(), "not the JSON"),
            (body("[]"), "1 to 300"),
            (
                body(&format!(
                    "[{}]",
                    vec![format!(r#"{{"seq":1,"type":"heartbeat","t":{NOW}}}"#); 301].join(",")
                )),
                "1 to 300",
            ),
            (
                one(&format!(
                    r#"{{"seq":7,"type":"play","t":{}}}"#,
                    NOW + 3_600_000
                )),
                "event 7: its time is 3600 s ahead",
            ),
            (
                one(&format!(
                    r#"{{"seq":2,"type":"play","t":{}}}"#,
                    NOW - 3 * 86_400_000
                )),
                "behind",
            ),
            (
                one(&format!(r#"{{"seq":1,"type":"nope","t":{NOW}}}"#)),
                "not the JSON",
            ),
            (
                one(&format!(
                    r#"{{"seq":1,"type":"error","t":{NOW},"message":"{}"}}"#,
                    "x".repeat(600)
                )),
                "message is too long",
            ),
            (
                one(&format!(
                    r#"{{"seq":1,"type":"renditionchange","t":{NOW},"width":99999}}"#
                )),
                "out of range",
            ),
            (
                body(&format!(r#"[{{"seq":1,"type":"play","t":{NOW}}}]"#))
                    .replace("v-0123456789", "v"),
                "view_id must be",
            ),
            (
                body(&format!(r#"[{{"seq":1,"type":"play","t":{NOW}}}]"#))
                    .replace("abc123", "../x"),
                "playback_id",
            ),
        ];
        for (input, reason) in cases {
            let err = parse(input.as_bytes(), NOW).unwrap_err().to_string();
            assert!(err.contains(reason), "{err:?} should say {reason:?}");
        }
    }
}
