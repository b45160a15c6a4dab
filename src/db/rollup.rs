//! Roll-up sums as the database stores them: where a view's sums go ([`RollupKey`]), the
//! sums ([`Rollup`]), and the change a write of a view makes. What a view adds is computed
//! above (`analytics::rollup::of`, with the score formulas) and passed in.

use super::StoredView;

/// Where a view's sums go: the minute it started in and its dimension values (`""` when
/// unknown).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RollupKey {
    pub minute: i64,
    pub playback_id: String,
    pub country: String,
    pub browser: String,
    pub os: String,
    pub device_type: String,
    pub player: String,
    pub sources: String,
    pub rendition: String,
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
    /// Started views that fetched a key during startup, and the sum of their key fetch times.
    pub key_views: i64,
    pub key_fetch_time_ms: i64,
}

impl Rollup {
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
        self.key_views += sign * other.key_views;
        self.key_fetch_time_ms += sign * other.key_fetch_time_ms;
    }

    pub fn is_zero(&self) -> bool {
        *self == Rollup::default()
    }
}

/// What a stored view adds to the roll-ups, and where; `None` when it counts nowhere.
pub type RollupOf = fn(&StoredView) -> Option<(RollupKey, Rollup)>;

/// The changes to make to the roll-ups when a view stored as `old` is written as `new`:
/// (key, sums, sign) to add.
pub fn changes(
    old: Option<&StoredView>,
    new: &StoredView,
    of: RollupOf,
) -> Vec<(RollupKey, Rollup)> {
    let before = old.and_then(of);
    let after = of(new);
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
