//! Server-side views: a client that fetches media with neither the beacon script nor CMCD
//! (ffmpeg, a set-top box, a native app) is still a viewer. Its media requests, grouped by
//! client address and user agent per playback id, make a `server` view whose watch time is
//! the media it fetched: the summed durations of the distinct segments, by name (the ladder's
//! renditions are cut at the same times, so the same name in two renditions is the same part
//! of the video, counted once).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a playlist's durations are trusted: a live playlist gains a segment every few
/// seconds, a VOD one never changes.
const FRESH: Duration = Duration::from_secs(1);

/// Playlists whose durations are kept at most; past that the oldest half is forgotten.
const MAX_PLAYLISTS: usize = 4096;

/// Segments named by one playlist at most (a 13-hour VOD asset at 2 s).
const MAX_SEGMENTS: usize = 25_000;

/// Segment durations in ms by segment file name, for each rendition playlist read.
#[derive(Debug, Default)]
pub struct SegmentDurations {
    playlists: Mutex<HashMap<String, Durations>>,
}

#[derive(Debug)]
struct Durations {
    read: Instant,
    files: HashMap<String, u32>,
}

impl SegmentDurations {
    /// The duration of `file` as the playlist `playlist_key` gives it: `Some(Some(ms))` when
    /// known, `Some(None)` when the playlist was read recently and does not name it, `None`
    /// when the playlist should be (re)read first.
    pub fn lookup(&self, playlist_key: &str, file: &str) -> Option<Option<u32>> {
        let playlists = self.playlists.lock().expect("durations lock");
        match playlists.get(playlist_key) {
            Some(d) if d.files.contains_key(file) => Some(d.files.get(file).copied()),
            Some(d) if d.read.elapsed() < FRESH => Some(None),
            _ => None,
        }
    }

    /// Keeps what a playlist's text says.
    pub fn remember(&self, playlist_key: &str, playlist: &str) {
        let files = parse(playlist);
        let mut playlists = self.playlists.lock().expect("durations lock");
        if playlists.len() >= MAX_PLAYLISTS && !playlists.contains_key(playlist_key) {
            let mut by_age: Vec<(Instant, String)> =
                playlists.iter().map(|(k, d)| (d.read, k.clone())).collect();
            by_age.sort();
            for (_, k) in by_age.into_iter().take(MAX_PLAYLISTS / 2) {
                playlists.remove(&k);
            }
        }
        playlists.insert(
            playlist_key.to_string(),
            Durations {
                read: Instant::now(),
                files,
            },
        );
    }
}

/// Segment file name (without a query) → duration in ms, from a media playlist's `#EXTINF`.
pub fn parse(playlist: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    let mut pending: Option<u32> = None;
    for line in playlist.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            let seconds = rest.split(',').next().unwrap_or("");
            pending = seconds
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 3600.0)
                .map(|s| (s * 1000.0).round() as u32);
        } else if !line.is_empty()
            && !line.starts_with('#')
            && let Some(ms) = pending.take()
        {
            let name = line.split('?').next().unwrap_or(line);
            let name = name.rsplit('/').next().unwrap_or(name);
            if out.len() < MAX_SEGMENTS {
                out.insert(name.to_string(), ms);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_come_from_extinf_by_file_name() {
        let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n\
            #EXTINF:4.000,\n0.ts?token=abc\n#EXTINF:2.5,title\nsub/1.ts\n#EXTINF:nan,\n2.ts\n\
            #EXTINF:-1,\n3.ts\n#EXT-X-ENDLIST\n";
        let d = parse(playlist);
        assert_eq!(d.get("0.ts"), Some(&4000));
        assert_eq!(d.get("1.ts"), Some(&2500));
        assert_eq!(d.get("2.ts"), None, "not a duration");
        assert_eq!(d.get("3.ts"), None, "negative");
        let cache = SegmentDurations::default();
        assert_eq!(cache.lookup("p", "0.ts"), None);
        cache.remember("p", playlist);
        assert_eq!(cache.lookup("p", "0.ts"), Some(Some(4000)));
        assert_eq!(
            cache.lookup("p", "9.ts"),
            Some(None),
            "read just now: not there"
        );
    }
}
