//! Metrics over many views, as Mux Data reports them: each is computed from the views that
//! have a value for it ([`Metric::value`]); a breakdown groups views by dimensions first, a
//! timeseries by the minute, hour or day they started in.

use std::collections::BTreeMap;

use crate::db::StoredView;

/// A metric the API reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Views,
    /// Milliseconds, summed.
    WatchTime,
    PlayingTime,
    /// Milliseconds, median and 95th percentile of views that started.
    VideoStartupTime,
    VideoStartupTimeP95,
    /// Percentages of the views (or of watch time).
    RebufferPercentage,
    /// Rebuffers per minute of watch time.
    RebufferFrequency,
    ExitsBeforeVideoStart,
    PlaybackFailurePercentage,
    VideoStartupFailurePercentage,
    BusinessExceptionPercentage,
    UpscalePercentage,
    DownscalePercentage,
    /// Bits per second, weighted by playing time.
    WeightedAverageBitrate,
    /// Share of VOD views that reached 90 %.
    CompletionRate,
    /// Mean of the views' scores.
    StartupScore,
    SmoothnessScore,
    QualityScore,
}

impl Metric {
    pub const ALL: [(&'static str, Metric); 18] = [
        ("views", Metric::Views),
        ("watch_time", Metric::WatchTime),
        ("playing_time", Metric::PlayingTime),
        ("video_startup_time", Metric::VideoStartupTime),
        ("video_startup_time_p95", Metric::VideoStartupTimeP95),
        ("rebuffer_percentage", Metric::RebufferPercentage),
        ("rebuffer_frequency", Metric::RebufferFrequency),
        ("exits_before_video_start", Metric::ExitsBeforeVideoStart),
        (
            "playback_failure_percentage",
            Metric::PlaybackFailurePercentage,
        ),
        (
            "video_startup_failure_percentage",
            Metric::VideoStartupFailurePercentage,
        ),
        (
            "business_exception_percentage",
            Metric::BusinessExceptionPercentage,
        ),
        ("upscale_percentage", Metric::UpscalePercentage),
        ("downscale_percentage", Metric::DownscalePercentage),
        ("weighted_average_bitrate", Metric::WeightedAverageBitrate),
        ("completion_rate", Metric::CompletionRate),
        ("startup_score", Metric::StartupScore),
        ("smoothness_score", Metric::SmoothnessScore),
        ("quality_score", Metric::QualityScore),
    ];

    pub fn parse(name: &str) -> Option<Metric> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }

    /// The metric over `views`; `None` when no view has a value for it.
    pub fn value(self, views: &[&StoredView]) -> Option<f64> {
        let started: Vec<&&StoredView> = views
            .iter()
            .filter(|v| v.video_startup_time_ms.is_some())
            .collect();
        let count = views.len() as f64;
        let share = |n: usize| (count > 0.0).then(|| n as f64 / count * 100.0);
        let watch: f64 = views.iter().map(|v| v.watch_time_ms as f64).sum();
        let playing: f64 = views.iter().map(|v| v.playing_time_ms as f64).sum();
        let mean =
            |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
        let weighted = |f: fn(&StoredView) -> f64| {
            (playing > 0.0).then(|| {
                views
                    .iter()
                    .map(|v| f(v) * v.playing_time_ms as f64)
                    .sum::<f64>()
                    / playing
            })
        };
        match self {
            Metric::Views => Some(count),
            Metric::WatchTime => Some(watch),
            Metric::PlayingTime => Some(playing),
            Metric::VideoStartupTime | Metric::VideoStartupTimeP95 => {
                let mut times: Vec<i64> = started
                    .iter()
                    .filter_map(|v| v.video_startup_time_ms)
                    .collect();
                let q = if self == Metric::VideoStartupTime {
                    0.5
                } else {
                    0.95
                };
                percentile(&mut times, q)
            }
            Metric::RebufferPercentage => (watch > 0.0).then(|| {
                views
                    .iter()
                    .map(|v| v.rebuffer_duration_ms as f64)
                    .sum::<f64>()
                    / watch
                    * 100.0
            }),
            Metric::RebufferFrequency => (watch > 0.0).then(|| {
                views.iter().map(|v| v.rebuffer_count as f64).sum::<f64>() / (watch / 60_000.0)
            }),
            Metric::ExitsBeforeVideoStart => share(
                views
                    .iter()
                    .filter(|v| v.exit_before_video_start != 0)
                    .count(),
            ),
            Metric::PlaybackFailurePercentage => {
                share(views.iter().filter(|v| v.playback_failure != 0).count())
            }
            Metric::VideoStartupFailurePercentage => {
                share(views.iter().filter(|v| v.startup_failure != 0).count())
            }
            Metric::BusinessExceptionPercentage => {
                share(views.iter().filter(|v| v.business_exception != 0).count())
            }
            Metric::UpscalePercentage => weighted(|v| v.upscale * 100.0),
            Metric::DownscalePercentage => weighted(|v| v.downscale * 100.0),
            Metric::WeightedAverageBitrate => {
                let with: Vec<&&StoredView> = views
                    .iter()
                    .filter(|v| v.weighted_bitrate.is_some())
                    .collect();
                let time: f64 = with.iter().map(|v| v.playing_time_ms as f64).sum();
                (time > 0.0).then(|| {
                    with.iter()
                        .map(|v| v.weighted_bitrate.unwrap_or(0.0) * v.playing_time_ms as f64)
                        .sum::<f64>()
                        / time
                })
            }
            Metric::CompletionRate => {
                let vod: Vec<i64> = views.iter().filter_map(|v| v.completed).collect();
                (!vod.is_empty()).then(|| {
                    vod.iter().filter(|c| **c != 0).count() as f64 / vod.len() as f64 * 100.0
                })
            }
            Metric::StartupScore => mean(
                started
                    .iter()
                    .filter_map(|v| v.video_startup_time_ms)
                    .map(|ms| 8.0 / (8.0 + ms as f64 / 1000.0) * 100.0)
                    .collect(),
            ),
            Metric::SmoothnessScore => mean(
                started
                    .iter()
                    .map(|v| {
                        let count = v.rebuffer_count as f64;
                        let share = if v.watch_time_ms > 0 {
                            v.rebuffer_duration_ms as f64 / v.watch_time_ms as f64
                        } else {
                            0.0
                        };
                        (100.0 / (1.0 + (count / 2.0).powi(2)).sqrt()
                            + 100.0 * (-10.0 * share).exp())
                            / 2.0
                    })
                    .collect(),
            ),
            Metric::QualityScore => mean(
                started
                    .iter()
                    .map(|v| 100.0 * (-0.33 * (0.15 * v.max_upscale + 0.85 * v.upscale)).exp())
                    .collect(),
            ),
        }
    }
}

/// The `q` quantile (nearest rank) of `values`.
fn percentile(values: &mut [i64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1] as f64)
}

/// A view's value of a dimension (see `db::FILTER_COLUMNS`).
pub fn dimension<'a>(v: &'a StoredView, name: &str) -> Option<&'a str> {
    match name {
        "playback_id" => Some(&v.playback_id),
        "viewer_id" => v.viewer_id.as_deref(),
        "country" => v.country.as_deref(),
        "browser" => Some(&v.browser),
        "os" => Some(&v.os),
        "device_type" => Some(&v.device_type),
        "player" => Some(&v.player),
        _ => None,
    }
}

/// Views grouped by the values of `dimensions` (a missing value is `""`).
pub fn group_by<'a>(
    views: &'a [StoredView],
    dimensions: &[&str],
) -> BTreeMap<Vec<String>, Vec<&'a StoredView>> {
    let mut groups: BTreeMap<Vec<String>, Vec<&StoredView>> = BTreeMap::new();
    for v in views {
        let key = dimensions
            .iter()
            .map(|d| dimension(v, d).unwrap_or_default().to_string())
            .collect();
        groups.entry(key).or_default().push(v);
    }
    groups
}

/// Views grouped by the start of the `bucket_ms` period they started in.
pub fn by_time(views: &[StoredView], bucket_ms: i64) -> BTreeMap<i64, Vec<&StoredView>> {
    let mut buckets: BTreeMap<i64, Vec<&StoredView>> = BTreeMap::new();
    for v in views {
        buckets
            .entry(v.started_at.div_euclid(bucket_ms) * bucket_ms)
            .or_default()
            .push(v);
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(startup: Option<i64>, watch: i64, rebuffer_ms: i64, country: &str) -> StoredView {
        StoredView {
            tenant_id: "t".into(),
            id: format!("v{watch}{country}"),
            playback_id: "pb".into(),
            viewer_id: None,
            started_at: 60_000 * watch,
            ended_at: 0,
            finished: 1,
            play_requested: 1,
            video_startup_time_ms: startup,
            watch_time_ms: watch,
            playing_time_ms: watch - rebuffer_ms - startup.unwrap_or(0),
            rebuffer_count: i64::from(rebuffer_ms > 0),
            rebuffer_duration_ms: rebuffer_ms,
            exit_before_video_start: i64::from(startup.is_none()),
            startup_failure: 0,
            playback_failure: 0,
            business_exception: 0,
            upscale: 0.0,
            downscale: 0.0,
            max_upscale: 0.0,
            weighted_bitrate: None,
            completed: None,
            country: Some(country.into()),
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

    #[test]
    fn metrics_over_views_follow_their_definitions() {
        let views = [
            view(Some(1000), 60_000, 0, "DE"),
            view(Some(3000), 120_000, 6_000, "DE"),
            view(None, 4_000, 0, "FR"),
            view(Some(500), 30_000, 0, "FR"),
        ];
        let all: Vec<&StoredView> = views.iter().collect();
        let v = |m| Metric::value(m, &all).unwrap();
        assert_eq!(v(Metric::Views), 4.0);
        assert_eq!(v(Metric::WatchTime), 214_000.0);
        assert_eq!(
            v(Metric::VideoStartupTime),
            1000.0,
            "median of 500, 1000, 3000"
        );
        assert_eq!(v(Metric::VideoStartupTimeP95), 3000.0);
        assert!((v(Metric::RebufferPercentage) - 6_000.0 / 214_000.0 * 100.0).abs() < 1e-9);
        assert!((v(Metric::RebufferFrequency) - 1.0 / (214_000.0 / 60_000.0)).abs() < 1e-9);
        assert_eq!(v(Metric::ExitsBeforeVideoStart), 25.0);
        assert_eq!(Metric::CompletionRate.value(&all), None, "no VOD views");
        let groups = group_by(&views, &["country"]);
        let de = Metric::Views.value(&groups[&vec!["DE".to_string()]]);
        assert_eq!(de, Some(2.0));
        let minutes = by_time(&views, 60_000);
        assert_eq!(minutes.len(), 4);
        assert_eq!(
            Metric::parse("rebuffer_percentage"),
            Some(Metric::RebufferPercentage)
        );
        assert_eq!(Metric::parse("nope"), None);
    }
}
