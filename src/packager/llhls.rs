//! Low-Latency HLS (RFC 8216bis): the live media playlists of CMAF tracks with their parts,
//! kept in memory beside the segments in storage, and what serving them needs.
//!
//! The packager renders each track's playlist on every part ([`render`]) and publishes a
//! [`Snapshot`] to the [`Registry`]; the delivery serves it, holds blocking reloads
//! (`_HLS_msn`/`_HLS_part`) on the snapshot's watch channel until the part exists (no
//! polling), answers delta updates (`_HLS_skip=YES`) with the rendition's skip form, and
//! serves parts from memory while their segment is recent. Storage holds whole segments
//! and a plain media playlist, as for every output.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

/// Parts are cut once this long has passed since the part's first frame.
pub const PART_CUT_MS: u64 = 250;
/// What the playlists promise: no part lasts longer (a part is cut at its first frame
/// past [`PART_CUT_MS`], and a chunk holds back up to two frames).
pub const PART_TARGET_S: f64 = 0.334;
/// How far ahead of the last part a blocking request may ask (RFC 8216bis 6.2.5.2).
pub const ADVANCE_PART_LIMIT: u64 = 3;
/// Segments whose parts are still listed (and served) behind the open one.
pub const SEGMENTS_WITH_PARTS: u64 = 3;

/// One track's live playlist at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The media sequence number of the open segment (the one parts are added to).
    pub open_msn: u64,
    /// Parts of the open segment so far.
    pub open_parts: u64,
    /// How long a blocking request may wait: three target durations (RFC 8216bis).
    pub hold: std::time::Duration,
    /// The playlist, and its delta form (`EXT-X-SKIP`) when it has segments to skip.
    pub full: String,
    pub skip: Option<String>,
    /// Parts still listed, by file name (`{msn}.{part}.m4s`).
    pub parts: HashMap<String, Bytes>,
    /// The broadcast ended: serve the stored playlist.
    pub ended: bool,
}

impl Snapshot {
    /// Whether the playlist holds part `part` of segment `msn` (or, with no part asked,
    /// the whole segment `msn`).
    pub fn has(&self, msn: u64, part: Option<u64>) -> bool {
        match part {
            None => msn < self.open_msn,
            Some(p) => msn < self.open_msn || (msn == self.open_msn && p < self.open_parts),
        }
    }

    /// Whether a blocking request for (`msn`, `part`) goes too far ahead to wait for.
    pub fn too_far(&self, msn: u64, part: Option<u64>) -> bool {
        if msn > self.open_msn + 1 {
            return true;
        }
        match part {
            Some(p) if msn == self.open_msn => p > self.open_parts + ADVANCE_PART_LIMIT,
            Some(p) => msn > self.open_msn && p > ADVANCE_PART_LIMIT,
            None => false,
        }
    }
}

/// A track's snapshots, by (storage prefix, track name).
type Tracks = HashMap<(String, String), watch::Sender<Arc<Snapshot>>>;

/// The live tracks of every CMAF broadcast, by storage prefix and track name.
#[derive(Default, Clone)]
pub struct Registry {
    tracks: Arc<Mutex<Tracks>>,
}

impl Registry {
    /// Publishes a track's snapshot; an ended one is dropped (waiting requests see it).
    pub fn publish(&self, prefix: &str, track: &str, snapshot: Snapshot) {
        let key = (prefix.to_string(), track.to_string());
        let ended = snapshot.ended;
        let mut tracks = self.tracks.lock().expect("lock");
        match tracks.get(&key) {
            Some(tx) => {
                tx.send_replace(Arc::new(snapshot));
            }
            None if !ended => {
                tracks.insert(key.clone(), watch::channel(Arc::new(snapshot)).0);
            }
            None => {}
        }
        if ended {
            tracks.remove(&key);
        }
    }

    /// The track's snapshots, while it is live.
    pub fn watch(&self, prefix: &str, track: &str) -> Option<watch::Receiver<Arc<Snapshot>>> {
        let tracks = self.tracks.lock().expect("lock");
        tracks
            .get(&(prefix.to_string(), track.to_string()))
            .map(watch::Sender::subscribe)
    }
}

/// One part as a playlist lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartLine {
    pub duration_s: f64,
    pub independent: bool,
}

/// One segment as the LL playlist lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentLine {
    pub msn: u64,
    pub duration_s: f64,
    pub discontinuity: bool,
    pub program_date_time_ms: Option<i64>,
    /// Listed only for the last few segments.
    pub parts: Vec<PartLine>,
    /// Its `#EXT-X-KEY` lines and init segment, written where they change (a key rotation,
    /// a new encoder) and before the first segment listed.
    pub key_lines: String,
    pub map_uri: String,
}

/// What a track's LL playlist says.
#[derive(Debug, Clone)]
pub struct Playlist<'a> {
    pub target_duration: u64,
    pub discontinuity_sequence: u64,
    pub segments: &'a [SegmentLine],
    pub open_msn: u64,
    pub open_parts: &'a [PartLine],
    /// The open segment's key lines and init segment (see [`SegmentLine`]).
    pub open_key_lines: &'a str,
    pub open_map_uri: &'a str,
    /// (track, last msn, last part) of the other tracks.
    pub reports: &'a [(String, u64, u64)],
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn parts(o: &mut String, msn: u64, parts: &[PartLine]) {
    for (i, p) in parts.iter().enumerate() {
        let _ = write!(
            o,
            "#EXT-X-PART:DURATION={:.3},URI=\"{msn}.{i}.m4s\"",
            p.duration_s
        );
        if p.independent {
            o.push_str(",INDEPENDENT=YES");
        }
        o.push('\n');
    }
}

/// The key lines and `#EXT-X-MAP` of the next segment, where they differ from `current`.
fn key_and_map<'s>(
    o: &mut String,
    current: &mut Option<(&'s str, &'s str)>,
    key: &'s str,
    map: &'s str,
) {
    if current.is_none_or(|(k, _)| k != key) {
        let _ = writeln!(o, "{key}");
    }
    if current.is_none_or(|(_, m)| m != map) {
        let _ = writeln!(o, "#EXT-X-MAP:URI=\"{map}\"");
    }
    *current = Some((key, map));
}

/// The playlist, and its delta form when segments older than `CAN-SKIP-UNTIL` (six target
/// durations) exist.
pub fn render(p: &Playlist) -> (String, Option<String>) {
    let skip_until = 6 * p.target_duration;
    let mut head = String::with_capacity(512);
    let _ = write!(
        head,
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},CAN-SKIP-UNTIL={skip_until}.0\n\
         #EXT-X-PART-INF:PART-TARGET={PART_TARGET_S:.3}\n#EXT-X-INDEPENDENT-SEGMENTS\n\
         #EXT-X-MEDIA-SEQUENCE:{}\n",
        p.target_duration,
        3.0 * PART_TARGET_S,
        p.segments.first().map_or(p.open_msn, |s| s.msn),
    );
    if p.discontinuity_sequence > 0 {
        let _ = writeln!(
            head,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            p.discontinuity_sequence
        );
    }
    // Segments that end more than CAN-SKIP-UNTIL before the live edge may be skipped.
    let total: f64 = p.segments.iter().map(|s| s.duration_s).sum();
    let mut skippable = 0;
    let mut from_end = total;
    for s in p.segments {
        if from_end <= skip_until as f64 || s.discontinuity {
            break;
        }
        from_end -= s.duration_s;
        skippable += 1;
    }
    let body = |skipped: usize| {
        let mut o = String::with_capacity(2048);
        if skipped > 0 {
            let _ = writeln!(o, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        // The key and the init segment in force, written where they change.
        let mut current = None;
        for s in &p.segments[skipped..] {
            if s.discontinuity {
                o.push_str("#EXT-X-DISCONTINUITY\n");
            }
            key_and_map(&mut o, &mut current, &s.key_lines, &s.map_uri);
            if let Some(ms) = s.program_date_time_ms {
                let _ = writeln!(o, "#EXT-X-PROGRAM-DATE-TIME:{}", time(ms));
            }
            parts(&mut o, s.msn, &s.parts);
            let _ = writeln!(o, "#EXTINF:{:.3},\n{}.m4s", s.duration_s, s.msn);
        }
        if !p.open_parts.is_empty() || p.segments.len() == skipped {
            key_and_map(&mut o, &mut current, p.open_key_lines, p.open_map_uri);
        }
        parts(&mut o, p.open_msn, p.open_parts);
        let _ = writeln!(
            o,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}.{}.m4s\"",
            p.open_msn,
            p.open_parts.len()
        );
        for (track, msn, part) in p.reports {
            let _ = writeln!(
                o,
                "#EXT-X-RENDITION-REPORT:URI=\"../{track}/index.m3u8\",LAST-MSN={msn},LAST-PART={part}"
            );
        }
        o
    };
    let full = format!("{head}{}", body(0));
    let skip = (skippable > 0).then(|| format!("{head}{}", body(skippable)));
    (full, skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(independent: bool) -> PartLine {
        PartLine {
            duration_s: 0.25,
            independent,
        }
    }

    #[test]
    fn a_playlist_lists_parts_the_preload_hint_and_reports_and_skips_old_segments() {
        let segments: Vec<SegmentLine> = (10..20)
            .map(|msn| SegmentLine {
                msn,
                duration_s: 2.0,
                discontinuity: false,
                program_date_time_ms: Some(1_765_000_000_000 + msn as i64 * 2000),
                parts: if msn >= 18 {
                    vec![part(true), part(false)]
                } else {
                    vec![]
                },
                // The key rotates at segment 19, with a new init segment.
                key_lines: format!(
                    "#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"data:text/plain;base64,{}\",KEYFORMAT=\"org.w3.clearkey\"",
                    if msn >= 19 { "AQ==" } else { "AA==" }
                ),
                map_uri: if msn >= 19 { "init-1.mp4" } else { "init.mp4" }.into(),
            })
            .collect();
        let open = [part(true)];
        let reports = [("360p".to_string(), 20, 0)];
        let (full, skip) = render(&Playlist {
            target_duration: 2,
            discontinuity_sequence: 0,
            segments: &segments,
            open_msn: 20,
            open_parts: &open,
            open_key_lines: &segments[9].key_lines,
            open_map_uri: "init-1.mp4",
            reports: &reports,
        });
        for line in [
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,CAN-SKIP-UNTIL=12.0",
            "#EXT-X-PART-INF:PART-TARGET=0.334",
            "#EXT-X-MEDIA-SEQUENCE:10",
            "#EXT-X-PART:DURATION=0.250,URI=\"19.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.250,URI=\"19.1.m4s\"\n",
            "#EXTINF:2.000,\n19.m4s\n#EXT-X-PART:DURATION=0.250,URI=\"20.0.m4s\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"20.1.m4s\"\n",
            "#EXT-X-RENDITION-REPORT:URI=\"../360p/index.m3u8\",LAST-MSN=20,LAST-PART=0",
            "#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"data:text/plain;base64,AA==\",KEYFORMAT=\"org.w3.clearkey\"\n#EXT-X-MAP:URI=\"init.mp4\"\n",
            "18.m4s\n#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"data:text/plain;base64,AQ==\",KEYFORMAT=\"org.w3.clearkey\"\n#EXT-X-MAP:URI=\"init-1.mp4\"\n#EXT-X-PROGRAM-DATE-TIME",
        ] {
            assert!(full.contains(line), "{line} in {full}");
        }
        assert_eq!(
            full.matches("#EXT-X-KEY").count(),
            2,
            "written where it changes: {full}"
        );
        assert_eq!(full.matches("#EXT-X-MAP").count(), 2, "{full}");
        // 20 s listed, 12 s may not be skipped: the first 4 segments are.
        let skip = skip.unwrap();
        assert!(
            skip.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n#EXT-X-KEY"),
            "{skip}"
        );
        assert!(
            !skip.contains("\n13.m4s") && skip.contains("\n14.m4s"),
            "{skip}"
        );
        // Parsed back by a playlist reader.
        assert!(m3u8_rs::parse_media_playlist_res(full.as_bytes()).is_ok());
    }

    #[test]
    fn blocking_requests_are_held_only_within_the_limits() {
        let s = Snapshot {
            open_msn: 20,
            open_parts: 2,
            ..Snapshot::default()
        };
        assert!(s.has(20, Some(1)) && !s.has(20, Some(2)) && s.has(19, None) && !s.has(20, None));
        assert!(!s.too_far(20, Some(5)) && s.too_far(20, Some(6)));
        assert!(!s.too_far(21, Some(0)) && s.too_far(22, None) && s.too_far(21, Some(4)));
    }
}
