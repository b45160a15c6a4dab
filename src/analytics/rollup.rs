//! Per-minute roll-ups: the sums of many views from which a metric is computed. A view adds
//! its [`Rollup`] to the row of the minute it started in and its dimension values; when the
//! view changes (it is flushed again while open), the difference is added, so every view
//! counts once however often it is written.

use crate::db::StoredView;

use super::view::Summary;

/// Where a view's sums go: the minute it started in and its dimension values (`""` when
/// unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupKey {
    pub minute: i64,
    pub playback_id: String,
    pub country: String,
    pub browser: String,
    pub os: String,
    pub device_type: String,
    pub player: String,
    pub sources: String,
}

/// Additive sums over views.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    pub views: i64,
    /// Views with a first frame, and the sum of their startup times.
    pub started_views: i64,
    pub startup_time_ms: i64,
    pub watch_time_ms: i64,
    pub playing_time_ms: i64,
    pub rebuffer_count: i64,
    pub rebuffer_duration_ms: i64,
    pub exits_before_video_start: i64,
    pub startup_failures: i64,
    pub playback_failures: i64,
    pub business_exceptions: i64,
    /// Views of VOD assets, and those that reached 90 %.
    pub vod_views: i64,
    pub completed_views: i64,
    /// Σ upscale (or downscale) fraction × playing ms.
    pub upscale_ms: f64,
    pub downscale_ms: f64,
    /// Playing ms of views that reported a bitrate, and Σ bitrate × playing ms.
    pub bitrate_playing_ms: i64,
    pub bitrate_ms: f64,
    /// Σ of the per-view scores of started views ([`Rollup::started_views`] have them).
    pub startup_score: f64,
    pub smoothness_score: f64,
    pub quality_score: f64,
    /// Σ Playback Success Score, and the views that have one and the overall score.
    pub success_score: f64,
    pub scored_views: i64,
    pub experience_score: f64,
    /// Live views that reported a latency, and the sum of their latencies.
    pub latency_views: i64,
    pub live_latency_ms: i64,
}

/// The per-view values a stored row keeps, back as a summary for the score formulas.
pub fn summary_of(v: &StoredView) -> Summary {
    Summary {
        finished: v.finished != 0,
        play_requested: v.play_requested != 0,
        video_startup_time_ms: v.video_startup_time_ms,
        watch_time_ms: v.watch_time_ms,
        playing_time_ms: v.playing_time_ms,
        rebuffer_count: u32::try_from(v.rebuffer_count).unwrap_or(u32::MAX),
        rebuffer_duration_ms: v.rebuffer_duration_ms,
        exit_before_video_start: v.exit_before_video_start != 0,
        startup_failure: v.startup_failure != 0,
        playback_failure: v.playback_failure != 0,
        business_exception: v.business_exception != 0,
        upscale: v.upscale,
        downscale: v.downscale,
        max_upscale: v.max_upscale,
        weighted_bitrate: v.weighted_bitrate,
        completed: v.completed.map(|c| c != 0),
        ..Summary::default()
    }
}

impl Rollup {
    /// What a stored view adds, and where; `None` for a view without a play request (it
    /// counts nowhere).
    pub fn of(v: &StoredView) -> Option<(RollupKey, Rollup)> {
        if v.play_requested == 0 {
            return None;
        }
        let s = summary_of(v);
        let playing = v.playing_time_ms as f64;
        let bitrate_playing_ms = if v.weighted_bitrate.is_some() {
            v.playing_time_ms
        } else {
            0
        };
        let success = s.success_score();
        let experience = s.experience_score();
        let key = RollupKey {
            minute: v.started_at.div_euclid(60_000) * 60_000,
            playback_id: v.playback_id.clone(),
            country: v.country.clone().unwrap_or_default(),
            browser: v.browser.clone(),
            os: v.os.clone(),
            device_type: v.device_type.clone(),
            player: v.player.clone(),
            sources: v.sources.clone(),
        };
        let sums = Rollup {
            views: 1,
            started_views: i64::from(v.video_startup_time_ms.is_some()),
            startup_time_ms: v.video_startup_time_ms.unwrap_or(0),
            watch_time_ms: v.watch_time_ms,
            playing_time_ms: v.playing_time_ms,
            rebuffer_count: v.rebuffer_count,
            rebuffer_duration_ms: v.rebuffer_duration_ms,
            exits_before_video_start: v.exit_before_video_start,
            startup_failures: v.startup_failure,
            playback_failures: v.playback_failure,
            business_exceptions: v.business_exception,
            vod_views: i64::from(v.completed.is_some()),
            completed_views: v.completed.unwrap_or(0),
            upscale_ms: v.upscale * playing,
            downscale_ms: v.downscale * playing,
            bitrate_playing_ms,
            bitrate_ms: v.weighted_bitrate.unwrap_or(0.0) * bitrate_playing_ms as f64,
            startup_score: s.startup_score().unwrap_or(0.0),
            smoothness_score: s.smoothness_score().unwrap_or(0.0),
            quality_score: s.quality_score().unwrap_or(0.0),
            success_score: success.unwrap_or(0.0),
            scored_views: i64::from(success.is_some()),
            experience_score: experience.unwrap_or(0.0),
            latency_views: i64::from(v.live_latency_ms.is_some()),
            live_latency_ms: v.live_latency_ms.unwrap_or(0),
        };
        Some((key, sums))
    }

    /// `self + sign × other`, field by field.
    pub fn add(&mut self, other: &Rollup, sign: i64) {
        let f = sign as f64;
        self.views += sign * other.views;
        self.started_views += sign * other.started_views;
        self.startup_time_ms += sign * other.startup_time_ms;
        self.watch_time_ms += sign * other.watch_time_ms;
        self.playing_time_ms += sign * other.playing_time_ms;
        self.rebuffer_count += sign * other.rebuffer_count;
        self.rebuffer_duration_ms += sign * other.rebuffer_duration_ms;
        self.exits_before_video_start += sign * other.exits_before_video_start;
        self.startup_failures += sign * other.startup_failures;
        self.playback_failures += sign * other.playback_failures;
        self.business_exceptions += sign * other.business_exceptions;
        self.vod_views += sign * other.vod_views;
        self.completed_views += sign * other.completed_views;
        self.upscale_ms += f * other.upscale_ms;
        self.downscale_ms += f * other.downscale_ms;
        self.bitrate_playing_ms += sign * other.bitrate_playing_ms;
        self.bitrate_ms += f * other.bitrate_ms;
        self.startup_score += f * other.startup_score;
        self.smoothness_score += f * other.smoothness_score;
        self.quality_score += f * other.quality_score;
        self.success_score += f * other.success_score;
        self.scored_views += sign * other.scored_views;
        self.experience_score += f * other.experience_score;
        self.latency_views += sign * other.latency_views;
        self.live_latency_ms += sign * other.live_latency_ms;
    }

    pub fn is_zero(&self) -> bool {
        *self == Rollup::default()
    }
}

/// The changes to make to the roll-ups when a view stored as `old` is written as `new`:
/// (key, sums, sign) to add.
pub fn changes(old: Option<&StoredView>, new: &StoredView) -> Vec<(RollupKey, Rollup)> {
    let before = old.and_then(Rollup::of);
    let after = Rollup::of(new);
    match (before, after) {
        (Some((k0, r0)), Some((k1, mut r1))) if k0 == k1 => {
            r1.add(&r0, -1);
            if r1.is_zero() { vec![] } else { vec![(k1, r1)] }
        }
        (before, after) => {
            let mut out = Vec::new();
            if let Some((k, r)) = before {
                let mut minus = Rollup::default();
                minus.add(&r, -1);
                out.push((k, minus));
            }
            out.extend(after);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(started_at: i64, watch: i64, country: Option<&str>) -> StoredView {
        StoredView {
            tenant_id: "t".into(),
            id: "v".into(),
            playback_id: "pb".into(),
            viewer_id: None,
            started_at,
            ended_at: started_at + watch,
            finished: 0,
            play_requested: 1,
            video_startup_time_ms: Some(500),
            watch_time_ms: watch,
            playing_time_ms: watch - 500,
            rebuffer_count: 0,
            rebuffer_duration_ms: 0,
            exit_before_video_start: 0,
            startup_failure: 0,
            playback_failure: 0,
            business_exception: 0,
            upscale: 0.25,
            downscale: 0.0,
            max_upscale: 0.5,
            weighted_bitrate: Some(1_000_000.0),
            completed: Some(0),
            live_latency_ms: None,
            country: country.map(str::to_string),
            browser: "Chrome".into(),
            os: "Linux".into(),
            device_type: "desktop".into(),
            player: "p".into(),
            sources: "beacon".into(),
            summary: String::new(),
            events: None,
            updated_at: 0,
        }
    }

    /// Summing the changes of every write of a view gives what the last write adds alone.
    #[test]
    fn a_view_written_many_times_counts_once() {
        let writes = [
            view(61_000, 5_000, None),
            view(61_000, 15_000, None),
            view(59_000, 25_000, Some("DE")), // an earlier event moved its start
            view(59_000, 35_000, Some("DE")),
        ];
        let mut rows: Vec<(RollupKey, Rollup)> = Vec::new();
        let mut old: Option<&StoredView> = None;
        for w in &writes {
            for (k, r) in changes(old, w) {
                match rows.iter_mut().find(|(key, _)| *key == k) {
                    Some((_, sums)) => sums.add(&r, 1),
                    None => rows.push((k, r)),
                }
            }
            old = Some(w);
        }
        let (key, expected) = Rollup::of(&writes[3]).unwrap();
        for (k, r) in &rows {
            if *k == key {
                assert_eq!(r.views, 1);
                assert_eq!(r.watch_time_ms, 35_000);
                assert!((r.upscale_ms - expected.upscale_ms).abs() < 1e-6);
                assert!((r.quality_score - expected.quality_score).abs() < 1e-9);
            } else {
                assert_eq!(r.views, 0, "the first minute's row is emptied: {k:?}");
                assert_eq!(r.watch_time_ms, 0);
                assert!(r.upscale_ms.abs() < 1e-6);
            }
        }
        assert_eq!(key.minute, 0);
        assert_eq!(key.country, "DE");
        let mut unrequested = view(0, 1000, None);
        unrequested.play_requested = 0;
        assert_eq!(Rollup::of(&unrequested), None);
        assert!(changes(Some(&writes[3]), &writes[3]).is_empty());
    }
}
