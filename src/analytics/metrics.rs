//! Metrics over many views, as Mux Data reports them. Every metric but the startup-time
//! percentiles is computed from the sums of a roll-up ([`Rollup`]): views count where they
//! have a value for the metric. The percentiles need the views' startup times themselves.

use super::rollup::Rollup;

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
    PlaybackSuccessScore,
    ViewerExperienceScore,
    /// Milliseconds, the mean of live views' median latencies.
    LiveLatency,
    /// Milliseconds, the mean key fetch time of views that fetched a key during startup.
    KeyFetchTime,
}

impl Metric {
    pub const ALL: [(&'static str, Metric); 22] = [
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
        ("playback_success_score", Metric::PlaybackSuccessScore),
        ("viewer_experience_score", Metric::ViewerExperienceScore),
        ("live_latency", Metric::LiveLatency),
        ("key_fetch_time", Metric::KeyFetchTime),
    ];

    pub fn parse(name: &str) -> Option<Metric> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }

    /// The percentile metrics, computed from the views' startup times (the `q` quantile).
    pub fn quantile(self) -> Option<f64> {
        match self {
            Metric::VideoStartupTime => Some(0.5),
            Metric::VideoStartupTimeP95 => Some(0.95),
            _ => None,
        }
    }

    /// The roll-up sums the metric is computed from (besides `views`, always read): a query
    /// reads only these columns.
    pub fn sums(self) -> &'static [&'static str] {
        match self {
            Metric::Views | Metric::VideoStartupTime | Metric::VideoStartupTimeP95 => &[],
            Metric::WatchTime => &["watch_time_ms"],
            Metric::PlayingTime => &["playing_time_ms"],
            Metric::RebufferPercentage => &["rebuffer_duration_ms", "watch_time_ms"],
            Metric::RebufferFrequency => &["rebuffer_count", "watch_time_ms"],
            Metric::ExitsBeforeVideoStart => &["exits_before_video_start"],
            Metric::PlaybackFailurePercentage => &["playback_failures"],
            Metric::VideoStartupFailurePercentage => &["startup_failures"],
            Metric::BusinessExceptionPercentage => &["business_exceptions"],
            Metric::UpscalePercentage => &["upscale_ms", "playing_time_ms"],
            Metric::DownscalePercentage => &["downscale_ms", "playing_time_ms"],
            Metric::WeightedAverageBitrate => &["bitrate_ms", "bitrate_playing_ms"],
            Metric::CompletionRate => &["completed_views", "vod_views"],
            Metric::StartupScore => &["startup_score", "started_views"],
            Metric::SmoothnessScore => &["smoothness_score", "started_views"],
            Metric::QualityScore => &["quality_score", "started_views"],
            Metric::PlaybackSuccessScore => &["success_score", "scored_views"],
            Metric::ViewerExperienceScore => &["experience_score", "scored_views"],
            Metric::LiveLatency => &["live_latency_ms", "latency_views"],
            Metric::KeyFetchTime => &["key_fetch_time_ms", "key_views"],
        }
    }

    /// The metric over the views summed in `r`; `None` when no view has a value for it
    /// (and for the percentile metrics, see [`Metric::quantile`]).
    pub fn value(self, r: &Rollup) -> Option<f64> {
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        let share = |n: i64| ratio(n as f64 * 100.0, r.views as f64);
        let watch = r.watch_time_ms as f64;
        let playing = r.playing_time_ms as f64;
        let started = r.started_views as f64;
        match self {
            Metric::Views => Some(r.views as f64),
            Metric::WatchTime => Some(watch),
            Metric::PlayingTime => Some(playing),
            Metric::VideoStartupTime | Metric::VideoStartupTimeP95 => None,
            Metric::RebufferPercentage => ratio(r.rebuffer_duration_ms as f64 * 100.0, watch),
            Metric::RebufferFrequency => ratio(r.rebuffer_count as f64, watch / 60_000.0),
            Metric::ExitsBeforeVideoStart => share(r.exits_before_video_start),
            Metric::PlaybackFailurePercentage => share(r.playback_failures),
            Metric::VideoStartupFailurePercentage => share(r.startup_failures),
            Metric::BusinessExceptionPercentage => share(r.business_exceptions),
            Metric::UpscalePercentage => ratio(r.upscale_ms * 100.0, playing),
            Metric::DownscalePercentage => ratio(r.downscale_ms * 100.0, playing),
            Metric::WeightedAverageBitrate => ratio(r.bitrate_ms, r.bitrate_playing_ms as f64),
            Metric::CompletionRate => ratio(r.completed_views as f64 * 100.0, r.vod_views as f64),
            Metric::StartupScore => ratio(r.startup_score, started),
            Metric::SmoothnessScore => ratio(r.smoothness_score, started),
            Metric::QualityScore => ratio(r.quality_score, started),
            Metric::PlaybackSuccessScore => ratio(r.success_score, r.scored_views as f64),
            Metric::ViewerExperienceScore => ratio(r.experience_score, r.scored_views as f64),
            Metric::LiveLatency => ratio(r.live_latency_ms as f64, r.latency_views as f64),
            Metric::KeyFetchTime => ratio(r.key_fetch_time_ms as f64, r.key_views as f64),
        }
    }
}

/// The `q` quantile (nearest rank) of `values`.
pub fn percentile(values: &mut [i64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1] as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::StoredView;

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
            key_fetch_time_ms: None,
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
            live_latency_ms: None,
            country: Some(country.into()),
            browser: "Chrome".into(),
            os: "Linux".into(),
            device_type: "desktop".into(),
            player: "p".into(),
            sources: "beacon".into(),
            rendition: String::new(),
            summary: String::new(),
            events: None,
            timeline: None,
            watched: None,
            updated_at: 0,
        }
    }

    /// `r` with only `views` and the named sums kept, as a query that reads only them.
    fn keep(r: &Rollup, names: &[&str]) -> Rollup {
        let has = |n: &str| names.contains(&n);
        let i = |n: &str, v: i64| if has(n) { v } else { 0 };
        let f = |n: &str, v: f64| if has(n) { v } else { 0.0 };
        Rollup {
            views: r.views,
            started_views: i("started_views", r.started_views),
            startup_time_ms: i("startup_time_ms", r.startup_time_ms),
            watch_time_ms: i("watch_time_ms", r.watch_time_ms),
            playing_time_ms: i("playing_time_ms", r.playing_time_ms),
            rebuffer_count: i("rebuffer_count", r.rebuffer_count),
            rebuffer_duration_ms: i("rebuffer_duration_ms", r.rebuffer_duration_ms),
            exits_before_video_start: i("exits_before_video_start", r.exits_before_video_start),
            startup_failures: i("startup_failures", r.startup_failures),
            playback_failures: i("playback_failures", r.playback_failures),
            business_exceptions: i("business_exceptions", r.business_exceptions),
            vod_views: i("vod_views", r.vod_views),
            completed_views: i("completed_views", r.completed_views),
            upscale_ms: f("upscale_ms", r.upscale_ms),
            downscale_ms: f("downscale_ms", r.downscale_ms),
            bitrate_playing_ms: i("bitrate_playing_ms", r.bitrate_playing_ms),
            bitrate_ms: f("bitrate_ms", r.bitrate_ms),
            startup_score: f("startup_score", r.startup_score),
            smoothness_score: f("smoothness_score", r.smoothness_score),
            quality_score: f("quality_score", r.quality_score),
            success_score: f("success_score", r.success_score),
            scored_views: i("scored_views", r.scored_views),
            experience_score: f("experience_score", r.experience_score),
            latency_views: i("latency_views", r.latency_views),
            live_latency_ms: i("live_latency_ms", r.live_latency_ms),
            key_views: i("key_views", r.key_views),
            key_fetch_time_ms: i("key_fetch_time_ms", r.key_fetch_time_ms),
        }
    }

    fn sum(views: &[StoredView]) -> Rollup {
        let mut r = Rollup::default();
        for v in views {
            r.add(&super::super::rollup::of(v).unwrap().1, 1);
        }
        r
    }

    #[test]
    fn metrics_over_views_follow_their_definitions() {
        let views = [
            view(Some(1000), 60_000, 0, "DE"),
            view(Some(3000), 120_000, 6_000, "DE"),
            view(None, 4_000, 0, "FR"),
            view(Some(500), 30_000, 0, "FR"),
        ];
        let all = sum(&views);
        let v = |m: Metric| m.value(&all).unwrap();
        assert_eq!(v(Metric::Views), 4.0);
        assert_eq!(v(Metric::WatchTime), 214_000.0);
        let mut startups: Vec<i64> = views
            .iter()
            .filter_map(|v| v.video_startup_time_ms)
            .collect();
        assert_eq!(
            percentile(&mut startups, Metric::VideoStartupTime.quantile().unwrap()),
            Some(1000.0),
            "median of 500, 1000, 3000"
        );
        assert_eq!(
            percentile(
                &mut startups,
                Metric::VideoStartupTimeP95.quantile().unwrap()
            ),
            Some(3000.0)
        );
        assert_eq!(Metric::VideoStartupTime.value(&all), None);
        assert!((v(Metric::RebufferPercentage) - 6_000.0 / 214_000.0 * 100.0).abs() < 1e-9);
        assert!((v(Metric::RebufferFrequency) - 1.0 / (214_000.0 / 60_000.0)).abs() < 1e-9);
        assert_eq!(v(Metric::ExitsBeforeVideoStart), 25.0);
        assert_eq!(Metric::CompletionRate.value(&all), None, "no VOD views");
        let startup_scores: f64 = [1.0, 3.0, 0.5]
            .iter()
            .map(|s| 8.0 / (8.0 + s) * 100.0)
            .sum();
        assert!((v(Metric::StartupScore) - startup_scores / 3.0).abs() < 1e-9);
        // Three played (100), one left after 4 s (50).
        assert!((v(Metric::PlaybackSuccessScore) - 350.0 / 4.0).abs() < 1e-9);
        let de = sum(&views[..2]);
        assert_eq!(Metric::Views.value(&de), Some(2.0));
        assert_eq!(
            Metric::parse("rebuffer_percentage"),
            Some(Metric::RebufferPercentage)
        );
        assert_eq!(Metric::parse("nope"), None);
        assert_eq!(Metric::Views.value(&Rollup::default()), Some(0.0));
        // Each metric reads only the sums it names: computed from those alone, it is the same.
        let mut rich = views.clone();
        rich[0].weighted_bitrate = Some(2e6);
        rich[0].upscale = 0.3;
        rich[0].completed = Some(1);
        rich[1].completed = Some(0);
        rich[1].live_latency_ms = Some(4000);
        let full = sum(&rich);
        for (name, m) in Metric::ALL {
            let only = keep(&full, m.sums());
            assert_eq!(
                m.value(&only),
                m.value(&full),
                "{name} reads more than {:?}",
                m.sums()
            );
        }
        assert_eq!(Metric::RebufferPercentage.value(&Rollup::default()), None);
    }
}
