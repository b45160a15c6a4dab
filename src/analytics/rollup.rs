//! What a view adds to the per-minute roll-ups: its sums, with its scores (the formulas
//! are in [`super::view`]), at the minute it started in and its dimension values. The
//! database adds the difference from the view's previous write (`db::rollup`), so every view
//! counts once however often it is written.

use crate::db::StoredView;
pub use crate::db::rollup::{Rollup, RollupKey};

use super::view::Summary;

/// The per-view values a stored row keeps, back as a summary for the score formulas.
pub fn summary_of(v: &StoredView) -> Summary {
    Summary {
        finished: v.finished != 0,
        play_requested: v.play_requested != 0,
        video_startup_time_ms: v.video_startup_time_ms,
        key_fetch_time_ms: v.key_fetch_time_ms,
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
        rendition: v.rendition.clone(),
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
        key_views: i64::from(v.key_fetch_time_ms.is_some()),
        key_fetch_time_ms: v.key_fetch_time_ms.unwrap_or(0),
    };
    Some((key, sums))
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
            key_fetch_time_ms: None,
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
            rendition: String::new(),
            summary: String::new(),
            events: None,
            timeline: None,
            watched: None,
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
            for (k, r) in crate::db::rollup::changes(old, w, of) {
                match rows.iter_mut().find(|(key, _)| *key == k) {
                    Some((_, sums)) => sums.add(&r, 1),
                    None => rows.push((k, r)),
                }
            }
            old = Some(w);
        }
        let (key, expected) = of(&writes[3]).unwrap();
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
        assert_eq!(of(&unrequested), None);
        assert!(crate::db::rollup::changes(Some(&writes[3]), &writes[3], of).is_empty());
    }

    /// In one transaction, a view written twice (a flush and its end) and one written
    /// before: each counts once in the summed roll-ups, with its last values.
    #[tokio::test]
    async fn one_write_of_many_views_counts_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = crate::db::Db::connect(&url, 2).await.unwrap();
        let (tenant, _) = db
            .create_tenant_with_key("t", "k", "fck_x", "hash")
            .await
            .unwrap();
        let at = |id: &str, watch: i64| StoredView {
            tenant_id: tenant.id.clone(),
            id: id.into(),
            ..view(60_000, watch, Some("DE"))
        };
        db.write_views(&[at("b", 2_000)], of).await.unwrap();
        let batch = [
            at("a", 3_000),
            at("b", 4_000),
            at("a", 7_000),
            at("c", 1_000),
        ];
        db.write_views(&batch, of).await.unwrap();
        let groups = db
            .rollups(&tenant.id, 0, 3_600_000, &[], &[], None, None)
            .await
            .unwrap();
        let sums = &groups[0].sums;
        assert_eq!((sums.views, sums.watch_time_ms), (3, 7_000 + 4_000 + 1_000));
    }
}
