//! One view, from its player events to its metrics, by Mux Data's definitions
//! (docs.mux.com/guides/data). [`summarize`] is pure: the aggregator feeds it what a view's
//! beacons brought, the tests feed it the fixtures under `tests/fixtures/analytics/`.
//!
//! - A **view** is one play attempt: pause and resume stay in it. It ends at `viewend`, a
//!   fatal error, or 60 minutes without an event ([`VIEW_TIMEOUT_MS`]).
//! - **Watch time** runs from the play request to the end, paused time excluded: it includes
//!   startup, rebuffering and seeking. **Playing time** is the part spent playing.
//! - **Video startup time** runs from the play request (`play`) to the first frame with the
//!   playhead moving (`playing`). **Key fetch time** is the part of it the player spent
//!   fetching keys or licences (`keyloaded` spans within it, overlaps once; a key fetched
//!   before the play request costs the viewer nothing).
//! - A **rebuffer** is a stall of at least [`MIN_REBUFFER_MS`] after the first frame, outside
//!   a seek. Rebuffer percentage = rebuffer duration ÷ watch time; frequency = rebuffers per
//!   minute of watch time.
//! - **Exit before video start**: a play request, no first frame, no fatal error.
//!   **Startup failure**: a fatal error before the first frame. **Playback failure**: any
//!   fatal error. A key denied for policy, entitlement or country (HTTP 403 on a key or
//!   licence) is a **business exception**, counted as neither.
//! - **Upscale / downscale**: the player's size against the rendition's (the fitting scale
//!   `min(player_w / w, player_h / h)`), `scale − 1` or `1 − scale` when positive, weighted by
//!   playing time. **Weighted average bitrate** likewise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A view with no event for this long has ended (Mux: 60 minutes).
pub const VIEW_TIMEOUT_MS: i64 = 60 * 60 * 1000;
/// Stalls shorter than this are not rebuffers.
pub const MIN_REBUFFER_MS: i64 = 250;
/// A VOD view is complete once its playhead reached this share of the duration.
pub const COMPLETION_SHARE: f64 = 0.9;

/// What a player reports. Times are the viewer's clock (ms since the epoch); `seq` orders
/// a view's events and makes a resent batch idempotent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u32,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Viewer clock, milliseconds since the Unix epoch.
    pub t: i64,
    /// Playhead, milliseconds into the media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playhead_ms: Option<i64>,
    /// The player's size in CSS pixels, when it is known or changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_w: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_h: Option<u32>,
    /// `renditionchange`: the rendition now playing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// `error`: whether playback stopped for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fatal: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `error`: what failed (`key`, `manifest`, `segment`, `media`, `other`) and its HTTP
    /// status, when a request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Live: the wall-clock time of the frame at the playhead (from the playlist's
    /// `EXT-X-PROGRAM-DATE-TIME`), ms since the epoch; `t` minus it is the viewer's latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_date_ms: Option<i64>,
    /// `keyloaded`: how long the request took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
}

impl Event {
    /// An event with no optional field.
    pub fn new(seq: u32, kind: EventKind, t: i64) -> Event {
        Event {
            seq,
            kind,
            t,
            playhead_ms: None,
            player_w: None,
            player_h: None,
            bitrate: None,
            width: None,
            height: None,
            fatal: None,
            code: None,
            message: None,
            context: None,
            http_status: None,
            program_date_ms: None,
            duration_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Viewinit,
    Play,
    Playing,
    Pause,
    Seeking,
    Seeked,
    Rebufferstart,
    Rebufferend,
    Renditionchange,
    Error,
    Ended,
    Heartbeat,
    Viewend,
    /// A key or licence request answered (hls.js `KEY_LOADED`); `duration_ms` says how long
    /// it took, ending at `t`.
    Keyloaded,
}

/// A view's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// When the view started (its first event), viewer clock.
    pub started_at: i64,
    /// When it ended, or its last event so far.
    pub ended_at: i64,
    /// Ended: `viewend`, a fatal error or the timeout.
    pub finished: bool,
    /// The viewer asked to play (a page opened and left without it is no view).
    pub play_requested: bool,
    /// At its last event the viewer was starting, playing, rebuffering or seeking: a
    /// concurrent viewer (paused ones are not).
    pub active: bool,
    pub video_startup_time_ms: Option<i64>,
    /// The part of the startup time spent fetching keys or licences: their requests'
    /// spans, merged, within the play request to the first frame. None when no key was
    /// fetched before the first frame (clear media), or no frame came.
    pub key_fetch_time_ms: Option<i64>,
    pub watch_time_ms: i64,
    pub playing_time_ms: i64,
    pub rebuffer_count: u32,
    pub rebuffer_duration_ms: i64,
    pub exit_before_video_start: bool,
    pub startup_failure: bool,
    pub playback_failure: bool,
    pub business_exception: bool,
    /// The fatal error, if any: `code: message`.
    pub error: Option<String>,
    /// Time-weighted over playing time, as fractions (0.5 = 50 %).
    pub upscale: f64,
    pub downscale: f64,
    pub max_upscale: f64,
    pub weighted_bitrate: Option<f64>,
    pub max_playhead_ms: i64,
    /// Live: the median of the latencies the player reported while playing (its clock less
    /// the playhead's program date-time), on the viewer's clock; the aggregator corrects it
    /// by the view's clock skew.
    pub live_latency_ms: Option<i64>,
    /// VOD only: the playhead reached [`COMPLETION_SHARE`] of the duration.
    pub completed: Option<bool>,
    /// VOD only: bit `i` set when the viewer played part of the duration's `i`-th percent
    /// (the playhead moving through it while playing); the audience retention curve sums
    /// these over views.
    #[serde(skip)]
    pub watched: Option<u128>,
    /// Events after a 60-minute gap, left out (they belong to no open view).
    pub ignored_after_timeout: u32,
    /// The rendition played longest, by its height (`720p`); None when none was reported.
    pub rendition: Option<String>,
}

impl Summary {
    /// Derives what depends on the view having ended: call again after marking it finished
    /// from outside (a timeout the aggregator saw).
    pub fn settle(&mut self) {
        self.exit_before_video_start = self.finished
            && self.play_requested
            && self.video_startup_time_ms.is_none()
            && !self.playback_failure
            && !self.business_exception;
    }

    /// Rebuffer duration ÷ watch time.
    pub fn rebuffer_percentage(&self) -> f64 {
        ratio(self.rebuffer_duration_ms as f64, self.watch_time_ms as f64)
    }

    /// Rebuffers per minute of watch time.
    pub fn rebuffer_frequency(&self) -> f64 {
        ratio(
            f64::from(self.rebuffer_count),
            self.watch_time_ms as f64 / 60_000.0,
        )
    }

    /// Mux's Startup Time Score: `8 / (8 + startup seconds) × 100`; none for EBVS views.
    pub fn startup_score(&self) -> Option<f64> {
        let s = self.video_startup_time_ms? as f64 / 1000.0;
        Some(8.0 / (8.0 + s) * 100.0)
    }

    /// Mux's Smoothness Score: the mean of `100 / √(1 + (rebuffers / 2)²)` and
    /// `100 · e^(−10 · rebuffer fraction)`; none for EBVS views.
    pub fn smoothness_score(&self) -> Option<f64> {
        self.video_startup_time_ms?;
        let count = f64::from(self.rebuffer_count);
        let by_count = 100.0 / (1.0 + (count / 2.0).powi(2)).sqrt();
        let by_share = 100.0 * (-10.0 * self.rebuffer_percentage()).exp();
        Some((by_count + by_share) / 2.0)
    }

    /// Mux's Video Quality Score: `100 · e^(−0.33 · (0.15 · max upscale + 0.85 · mean
    /// upscale))`; none for EBVS views.
    pub fn quality_score(&self) -> Option<f64> {
        self.video_startup_time_ms?;
        Some(100.0 * (-0.33 * (0.15 * self.max_upscale + 0.85 * self.upscale)).exp())
    }
}

impl Summary {
    /// Mux's Playback Success Score: 0 for a playback (or startup) failure, 50 for an exit
    /// before video start, 100 for a view that played without failing. None for an exit
    /// within 1 s of the play request, for a view without a play request, and for a business
    /// exception (a key refused by policy is not a failure of the service; Mux's text
    /// leaves this case open).
    pub fn success_score(&self) -> Option<f64> {
        if !self.play_requested || self.business_exception {
            return None;
        }
        if self.playback_failure || self.startup_failure {
            return Some(0.0);
        }
        if self.video_startup_time_ms.is_some() {
            return Some(100.0);
        }
        if self.exit_before_video_start {
            return (self.watch_time_ms >= 1000).then_some(50.0);
        }
        None // still starting
    }

    /// The overall Viewer Experience Score, Mux's `success × (T(smooth, quality) +
    /// T(smooth, startup) + T(startup, quality)) / 3` with success as a 0–1 factor. Mux does
    /// not publish its tradeoff function `T`; here it is the geometric mean `√(a·b)`, which
    /// weighs the worse of two scores more than their average does. A view without a first
    /// frame scores its success score alone (0 or 50).
    pub fn experience_score(&self) -> Option<f64> {
        let success = self.success_score()?;
        let (Some(startup), Some(smooth), Some(quality)) = (
            self.startup_score(),
            self.smoothness_score(),
            self.quality_score(),
        ) else {
            return Some(success);
        };
        let t = |a: f64, b: f64| (a * b).sqrt();
        Some(
            success / 100.0 * (t(smooth, quality) + t(smooth, startup) + t(startup, quality)) / 3.0,
        )
    }
}

/// The time `spans` cover within `from..to`, overlaps counted once; None without spans.
fn time_within(spans: &mut [(i64, i64)], from: i64, to: i64) -> Option<i64> {
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable();
    let (mut covered, mut reached) = (0, from);
    for &(start, end) in spans.iter() {
        let (start, end) = (start.max(reached), end.min(to));
        if end > start {
            covered += end - start;
            reached = end;
        }
    }
    Some(covered)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the play request.
    Idle,
    /// Play requested, no first frame yet.
    Starting,
    Playing,
    /// Play asked again after a pause; playing once a frame moves.
    Resuming,
    Paused,
    Seeking {
        was_paused: bool,
    },
    /// A stall after the first frame, since this time.
    Stalled {
        since: i64,
    },
    Over,
}

/// The metrics of one view from its events (any order, placed by their own times;
/// duplicates by `seq` count once). `duration_ms`: the VOD asset's length (completion),
/// `None` for live.
pub fn summarize(events: &[Event], duration_ms: Option<i64>) -> Summary {
    let unique: BTreeMap<u32, &Event> = events.iter().map(|e| (e.seq, e)).collect();
    let mut ordered: Vec<&Event> = unique.into_values().collect();
    ordered.sort_by_key(|e| (e.t, e.seq));
    let mut s = Summary::default();
    let Some(first) = ordered.first() else {
        return s;
    };
    s.started_at = first.t;
    let mut state = State::Idle;
    let mut last_t = first.t;
    let mut play_at = None;
    // Sizes, width by height: the player's and the rendition's.
    let mut player: Option<(u32, u32)> = None;
    let mut rendition: Option<(u32, u32)> = None;
    let mut bitrate: Option<u64> = None;
    let (mut bitrate_ms, mut bitrate_sum, mut scaled_ms) = (0i64, 0f64, 0i64);
    let mut latencies: Vec<i64> = Vec::new();
    // Spans of the key requests answered before the first frame.
    let mut key_spans: Vec<(i64, i64)> = Vec::new();
    let duration = duration_ms.filter(|d| *d > 0);
    let mut watched = 0u128;
    // Playing time per rendition (width, height).
    let mut played: BTreeMap<(u32, u32), i64> = BTreeMap::new();
    let mut last_playhead: Option<i64> = None;
    for (i, e) in ordered.iter().enumerate() {
        if state == State::Over {
            break;
        }
        // Out-of-order clocks never make time run backwards.
        let t = e.t.max(last_t);
        if t - last_t > VIEW_TIMEOUT_MS {
            s.ignored_after_timeout = (ordered.len() - i) as u32;
            s.finished = true;
            break;
        }
        let dt = t - last_t;
        match state {
            State::Starting | State::Resuming | State::Seeking { .. } | State::Stalled { .. } => {
                s.watch_time_ms += dt
            }
            State::Playing => {
                s.watch_time_ms += dt;
                s.playing_time_ms += dt;
                if let (Some(d), Some(from), Some(to)) = (duration, last_playhead, e.playhead_ms) {
                    watched |= played_through(from, to, dt, d);
                }
                if let Some(r) = rendition {
                    *played.entry(r).or_default() += dt;
                }
                if let Some(b) = bitrate {
                    bitrate_ms += dt;
                    bitrate_sum += b as f64 * dt as f64;
                }
                if let (Some((pw, ph)), Some((w, h))) = (player, rendition)
                    && w > 0
                    && h > 0
                {
                    let scale = (f64::from(pw) / f64::from(w)).min(f64::from(ph) / f64::from(h));
                    let up = (scale - 1.0).max(0.0);
                    s.upscale += up * dt as f64;
                    s.downscale += (1.0 - scale).max(0.0) * dt as f64;
                    s.max_upscale = s.max_upscale.max(up);
                    scaled_ms += dt;
                }
            }
            State::Idle | State::Paused | State::Over => {}
        }
        last_t = t;
        if let (Some(w), Some(h)) = (e.player_w, e.player_h) {
            player = Some((w, h));
        }
        if let Some(p) = e.playhead_ms {
            s.max_playhead_ms = s.max_playhead_ms.max(p);
            last_playhead = Some(p);
        }
        if let Some(date) = e.program_date_ms
            && state == State::Playing
        {
            latencies.push(e.t - date);
        }
        state = match (e.kind, state) {
            (EventKind::Play, State::Idle) => {
                play_at = Some(t);
                s.play_requested = true;
                State::Starting
            }
            // Paused before the first frame (autoplay refused, say): startup starts again
            // at the next play request.
            (EventKind::Pause, State::Starting) => State::Idle,
            (EventKind::Play, State::Paused) => State::Resuming,
            (EventKind::Keyloaded, State::Idle | State::Starting) => {
                if let Some(d) = e.duration_ms {
                    key_spans.push((t - d, t));
                }
                state
            }
            (EventKind::Playing, State::Starting) => {
                s.video_startup_time_ms = play_at.map(|p| t - p);
                s.key_fetch_time_ms = play_at.and_then(|p| time_within(&mut key_spans, p, t));
                State::Playing
            }
            (EventKind::Playing, State::Paused | State::Resuming | State::Stalled { .. }) => {
                end_stall(&mut s, state, t);
                State::Playing
            }
            (EventKind::Pause, State::Playing | State::Resuming | State::Stalled { .. }) => {
                end_stall(&mut s, state, t);
                State::Paused
            }
            (EventKind::Pause, State::Seeking { .. }) => State::Seeking { was_paused: true },
            (EventKind::Seeking, State::Playing | State::Resuming | State::Stalled { .. }) => {
                // A stall that turns into a seek was the seek's.
                State::Seeking { was_paused: false }
            }
            (EventKind::Seeking, State::Paused) => State::Seeking { was_paused: true },
            // Playing again after a seek without a `seeked` (CMCD's play states have none).
            (EventKind::Playing, State::Seeking { .. }) => State::Playing,
            (EventKind::Seeked, State::Seeking { was_paused }) => {
                if was_paused {
                    State::Paused
                } else {
                    State::Playing
                }
            }
            // Stalls during startup or a seek are part of them.
            (EventKind::Rebufferstart, State::Playing) => State::Stalled { since: t },
            (EventKind::Rebufferend, State::Stalled { .. }) => {
                end_stall(&mut s, state, t);
                State::Playing
            }
            (EventKind::Renditionchange, _) => {
                if let (Some(w), Some(h)) = (e.width, e.height) {
                    rendition = Some((w, h));
                }
                bitrate = e.bitrate.or(bitrate);
                state
            }
            (EventKind::Error, _) if e.fatal == Some(true) => {
                end_stall(&mut s, state, t);
                let business = e.http_status == Some(403)
                    && matches!(e.context.as_deref(), Some("key" | "licence" | "license"));
                if business {
                    s.business_exception = true;
                } else {
                    s.playback_failure = true;
                    s.startup_failure = s.video_startup_time_ms.is_none();
                }
                s.error = Some(format!(
                    "{}: {}",
                    e.code.as_deref().unwrap_or("error"),
                    e.message.as_deref().unwrap_or("")
                ));
                s.finished = true;
                State::Over
            }
            (EventKind::Ended, _) => {
                end_stall(&mut s, state, t);
                State::Paused
            }
            (EventKind::Viewend, _) => {
                end_stall(&mut s, state, t);
                s.finished = true;
                State::Over
            }
            (_, state) => state,
        };
    }
    s.ended_at = last_t;
    s.active = matches!(
        state,
        State::Starting
            | State::Playing
            | State::Resuming
            | State::Stalled { .. }
            | State::Seeking { was_paused: false }
    );
    s.settle();
    if scaled_ms > 0 {
        s.upscale /= scaled_ms as f64;
        s.downscale /= scaled_ms as f64;
    }
    s.weighted_bitrate = (bitrate_ms > 0).then(|| bitrate_sum / bitrate_ms as f64);
    latencies.sort_unstable();
    s.live_latency_ms = latencies.get(latencies.len() / 2).copied();
    s.completed = duration.map(|d| s.max_playhead_ms as f64 >= COMPLETION_SHARE * d as f64);
    s.watched = duration.map(|_| watched);
    s.rendition = played
        .iter()
        .max_by_key(|(_, ms)| **ms)
        .filter(|(_, ms)| **ms > 0)
        .map(|((_, h), _)| format!("{h}p"));
    s
}

/// The percents of a duration `d` the playhead played going from `from` to `to` (the end
/// excluded) while playing for `dt` ms, as bits; none when it did not move forward, or
/// moved much faster than time (a jump the player did not report as a seek).
fn played_through(from: i64, to: i64, dt: i64, d: i64) -> u128 {
    if to <= from || to - from > 2 * dt + 1000 {
        return 0;
    }
    let percent = |p: i64| (p.clamp(0, d) as i128 * 100 / d as i128).min(99) as u32;
    let (a, b) = (percent(from), percent(to - 1));
    ((1u128 << (b + 1)) - 1) & !((1u128 << a) - 1)
}

/// A stall that ends at `t`: a rebuffer if it lasted [`MIN_REBUFFER_MS`] or more, else as
/// if it never happened (its time was playing).
fn end_stall(s: &mut Summary, state: State, t: i64) {
    if let State::Stalled { since } = state {
        if t - since >= MIN_REBUFFER_MS {
            s.rebuffer_count += 1;
            s.rebuffer_duration_ms += t - since;
        } else {
            s.playing_time_ms += t - since;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u32, kind: EventKind, t: i64) -> Event {
        Event::new(seq, kind, t)
    }

    #[test]
    fn scores_follow_the_published_examples() {
        let s = |startup: i64| Summary {
            video_startup_time_ms: Some(startup),
            ..Summary::default()
        };
        for (ms, score) in [(400, 95.0), (2000, 80.0), (8000, 50.0), (20_000, 29.0)] {
            assert!((s(ms).startup_score().unwrap() - score).abs() < 0.5, "{ms}");
        }
        assert_eq!(Summary::default().startup_score(), None, "EBVS: no score");
        let mut q = s(1000);
        q.upscale = 0.5;
        q.max_upscale = 0.5;
        assert!((q.quality_score().unwrap() - 85.0).abs() < 0.5);
        let mut smooth = s(1000);
        assert_eq!(smooth.smoothness_score(), Some(100.0));
        smooth.rebuffer_count = 4;
        smooth.rebuffer_duration_ms = 60_000;
        smooth.watch_time_ms = 20 * 60_000;
        // Mux's example, four 15 s rebuffers in 20 minutes: about the mean of 44 and 60.
        assert!((smooth.smoothness_score().unwrap() - 52.7).abs() < 2.0);
        // Playback success: played 100, failed 0, left before the first frame 50 (no score
        // when that took under a second), a key refused by policy no score.
        let mut played = s(1000);
        played.play_requested = true;
        assert_eq!(played.success_score(), Some(100.0));
        let overall = played.experience_score().unwrap();
        let startup: f64 = 8.0 / 9.0 * 100.0;
        assert!((overall - (100.0 + 2.0 * startup.sqrt() * 10.0) / 3.0).abs() < 1e-9);
        let mut failed = played.clone();
        failed.playback_failure = true;
        assert_eq!(failed.success_score(), Some(0.0));
        assert_eq!(failed.experience_score(), Some(0.0));
        let mut left = Summary {
            play_requested: true,
            finished: true,
            watch_time_ms: 4000,
            ..Summary::default()
        };
        left.settle();
        assert_eq!(left.success_score(), Some(50.0));
        assert_eq!(left.experience_score(), Some(50.0));
        left.watch_time_ms = 900;
        assert_eq!(left.success_score(), None);
        let mut refused = left.clone();
        refused.business_exception = true;
        refused.exit_before_video_start = false;
        assert_eq!(refused.success_score(), None);
    }

    /// Every fixture under `tests/fixtures/analytics/`: its events, and the values its view
    /// must have (a float within 1e-6).
    #[test]
    fn the_fixtures_give_their_expected_metrics() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analytics");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let fixture: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let events: Vec<Event> = serde_json::from_value(fixture["events"].clone())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let summary = summarize(&events, fixture["duration_ms"].as_i64());
            let got = serde_json::to_value(&summary).unwrap();
            for (field, want) in fixture["expect"].as_object().unwrap() {
                let have = &got[field];
                let same = match (want.as_f64(), have.as_f64()) {
                    (Some(w), Some(h)) => (w - h).abs() < 1e-6,
                    _ => want == have,
                };
                assert!(same, "{name}: {field} is {have}, expected {want}");
            }
            checked += 1;
        }
        assert!(checked >= 14, "only {checked} fixtures");
    }

    /// The percents a VOD view played: from the first frame, skipping what a seek jumped
    /// over, through to the end; none for live.
    #[test]
    fn the_percents_played_skip_what_a_seek_jumped_over() {
        let at = |seq, kind, t, playhead| {
            let mut e = ev(seq, kind, t);
            e.playhead_ms = Some(playhead);
            e
        };
        let events = vec![
            at(1, EventKind::Play, 0, 0),
            at(2, EventKind::Playing, 500, 0),
            at(3, EventKind::Heartbeat, 10_500, 10_000),
            at(4, EventKind::Seeking, 15_500, 15_000),
            at(5, EventKind::Seeked, 16_000, 80_000),
            at(6, EventKind::Heartbeat, 26_000, 90_000),
            at(7, EventKind::Ended, 36_000, 100_000),
        ];
        let bits = summarize(&events, Some(100_000)).watched.unwrap();
        let percents: Vec<u32> = (0..100).filter(|i| bits & (1 << i) != 0).collect();
        let want: Vec<u32> = (0..=14).chain(80..=99).collect();
        assert_eq!(percents, want);
        assert_eq!(
            summarize(&events, None).watched,
            None,
            "live has no duration"
        );
        // A jump the player did not report as a seek marks nothing.
        let jumped = vec![
            at(1, EventKind::Play, 0, 0),
            at(2, EventKind::Playing, 500, 0),
            at(3, EventKind::Heartbeat, 10_500, 60_000),
        ];
        assert_eq!(summarize(&jumped, Some(100_000)).watched, Some(0));
        // Standing still plays nothing; stopping on a boundary does not reach past it.
        assert_eq!(played_through(5_000, 5_000, 1_000, 100_000), 0);
        assert_eq!(played_through(0, 2_000, 2_000, 100_000), 0b11);
    }

    #[test]
    fn a_view_ended_from_outside_before_its_first_frame_is_an_exit_before_start() {
        let events = vec![ev(1, EventKind::Play, 0), ev(2, EventKind::Heartbeat, 5000)];
        let mut s = summarize(&events, None);
        assert!(!s.finished && !s.exit_before_video_start, "still open");
        s.finished = true; // the aggregator's timeout
        s.settle();
        assert!(s.exit_before_video_start);
    }

    #[test]
    fn a_viewer_is_active_unless_paused_or_gone() {
        let mut events = vec![ev(1, EventKind::Play, 0)];
        assert!(summarize(&events, None).active, "starting counts");
        events.push(ev(2, EventKind::Playing, 500));
        assert!(summarize(&events, None).active);
        events.push(ev(3, EventKind::Pause, 5000));
        assert!(!summarize(&events, None).active, "paused does not");
        events.push(ev(4, EventKind::Play, 6000));
        events.push(ev(5, EventKind::Viewend, 7000));
        assert!(!summarize(&events, None).active, "gone does not");
    }

    #[test]
    fn a_resent_or_reordered_batch_gives_the_same_view() {
        let events = vec![
            ev(1, EventKind::Viewinit, 0),
            ev(2, EventKind::Play, 100),
            ev(3, EventKind::Playing, 600),
            ev(4, EventKind::Viewend, 10_600),
        ];
        let once = summarize(&events, None);
        let mut twice: Vec<Event> = events.iter().rev().cloned().collect();
        twice.extend(events.clone());
        assert_eq!(summarize(&twice, None), once);
        assert_eq!(once.watch_time_ms, 10_500);
        assert_eq!(once.playing_time_ms, 10_000);
    }
}
