//! The HLS output as a pure state machine: renditions, content keys by rotation period, and
//! segments in; encrypted segments, media and master playlists, and deletions out, as
//! [`Op`]s on object names below the output's prefix. No I/O: `output` drives it (creating
//! keys, handing the ops to the uploader), and its tests drive it here without ffmpeg.

use std::collections::{BTreeMap, HashSet, VecDeque};

use bytes::Bytes;

use super::crypto::{Key128, encrypt_segment, iv_for_sequence};
use super::playlist::{KeyRef, MediaPlaylist, PlaylistKind, SegmentEntry, Variant, render_master};
use crate::media::codec::avc_codec_from_annexb;
use crate::media::{RenditionOut, Segment};

pub const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
pub const SEGMENT_TYPE: &str = "video/mp2t";

/// What the output asks of storage, in order. Names are relative to the output's prefix.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Put {
        name: String,
        body: Bytes,
        content_type: &'static str,
    },
    Delete {
        name: String,
    },
    /// A low-latency track's live playlist and parts, for the delivery (not storage).
    Live {
        track: String,
        snapshot: super::llhls::Snapshot,
    },
}

impl Op {
    pub(super) fn playlist(name: String, text: String) -> Self {
        Op::Put {
            name,
            body: Bytes::from(text),
            content_type: PLAYLIST_TYPE,
        }
    }
}

/// One rendition's output state.
struct Output {
    info: RenditionOut,
    playlist: MediaPlaylist,
    codecs: Option<String>,
    bitrate_bps: Option<u64>,
    /// Segments out of the live window, kept a while for players still fetching them.
    stale: VecDeque<SegmentEntry>,
    total_s: f64,
}

/// The state of one HLS output (a broadcast or an asset).
pub struct HlsState {
    /// Base URL of key URIs (`BASE/keys/ID`).
    public_url: String,
    /// Live window in segments; `None` keeps every segment (recordings, VOD).
    window: Option<usize>,
    /// New content key every this many segments; 0: one key.
    rotation: u64,
    target_duration: u32,
    outputs: BTreeMap<String, Output>,
    /// Content keys by rotation period.
    keys: BTreeMap<u64, (String, Key128)>,
    /// The key given last, for the segment that asked for it even when it is older than the
    /// kept periods (a rendition that joins late, or lags).
    given: Option<(u64, String, Key128)>,
    discontinuity: HashSet<String>,
    master_written: bool,
    /// RFC 6381 codecs of the source, for renditions whose segments do not tell.
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    /// Live: the wall clock that stamps each segment's program date-time (ms since the
    /// epoch), and the time given to each sequence number, so every rendition's segment N
    /// carries the same one.
    clock: Option<fn() -> i64>,
    program_date_times: BTreeMap<u64, i64>,
}

impl HlsState {
    pub fn new(
        public_url: String,
        window: Option<usize>,
        rotation: u64,
        target_duration: u32,
    ) -> Self {
        Self {
            public_url,
            window,
            rotation,
            target_duration,
            outputs: BTreeMap::new(),
            keys: BTreeMap::new(),
            given: None,
            discontinuity: HashSet::new(),
            master_written: false,
            video_codec: None,
            audio_codec: None,
            clock: None,
            program_date_times: BTreeMap::new(),
        }
    }

    /// Stamps every segment from now on with `EXT-X-PROGRAM-DATE-TIME` read from `clock`
    /// (live outputs).
    pub fn stamp_program_date_time(&mut self, clock: fn() -> i64) {
        self.clock = Some(clock);
    }

    /// The renditions of a (new) publish; existing playlists continue after a discontinuity.
    pub fn set_renditions(&mut self, list: Vec<RenditionOut>) {
        for info in list {
            match self.outputs.get_mut(&info.name) {
                Some(out) => out.info = info,
                None => {
                    let playlist = MediaPlaylist::new(self.target_duration, self.window);
                    self.outputs.insert(
                        info.name.clone(),
                        Output {
                            playlist,
                            info,
                            codecs: None,
                            bitrate_bps: None,
                            stale: VecDeque::new(),
                            total_s: 0.0,
                        },
                    );
                }
            }
        }
        self.master_written = false;
    }

    /// After a reconnect every rendition's next segment starts a discontinuity.
    pub fn reopen(&mut self) {
        self.discontinuity = self.outputs.keys().cloned().collect();
    }

    fn period(&self, sequence: u64) -> u64 {
        sequence.checked_div(self.rotation).unwrap_or(0)
    }

    /// The rotation period whose key the next segment of `rendition` needs and that is not
    /// known yet (give it with [`add_key`](Self::add_key) before the segment).
    pub fn key_needed(&self, rendition: &str) -> Option<u64> {
        let sequence = self.outputs.get(rendition)?.playlist.next_sequence();
        let period = self.period(sequence);
        (!self.keys.contains_key(&period)).then_some(period)
    }

    /// The content key of one rotation period, for the next segment of the rendition that
    /// asked. Renditions move in step: keys two periods back are no longer asked for, and
    /// are forgotten (a rendition behind them gets a key of its own for each segment).
    pub fn add_key(&mut self, period: u64, id: String, key: Key128) {
        self.given = Some((period, id.clone(), key));
        self.keys.insert(period, (id, key));
        while self.keys.len() > 3 {
            let first = *self.keys.keys().next().expect("non-empty");
            self.keys.remove(&first);
        }
    }

    /// One segment: encrypted, with its media playlist, the deletion of segments that left
    /// the window long enough ago, and the master playlist once every rendition's codecs are
    /// known. `None`: a segment of a rendition this output does not have. Panics when the
    /// segment's key was not given (see [`key_needed`](Self::key_needed)).
    pub fn add_segment(&mut self, segment: Segment) -> Option<Vec<Op>> {
        let out = self.outputs.get(&segment.rendition)?;
        let sequence = out.playlist.next_sequence();
        let period = self.period(sequence);
        let (key_id, key) = self
            .keys
            .get(&period)
            .cloned()
            .or_else(|| {
                let (given, id, key) = self.given.clone()?;
                (given == period).then_some((id, key))
            })
            .expect("the segment's content key was given");
        let iv = iv_for_sequence(sequence);
        // What the playlists say of the rendition is read from the first segment in clear.
        let plain_len = segment.bytes.len();
        let sniffed_video = out
            .codecs
            .is_none()
            .then(|| avc_codec_from_annexb(&segment.bytes))
            .flatten();
        // The segment's own buffer is encrypted in place, and shared with the upload as it is.
        let mut bytes = segment.bytes;
        encrypt_segment(&key, &iv, bytes.vec_mut());
        let name = segment.rendition;
        let mut ops = vec![Op::Put {
            name: format!("{name}/{sequence}.ts"),
            body: bytes.into_bytes(),
            content_type: SEGMENT_TYPE,
        }];

        // A segment is cut once its last frame is in: its first frame came one duration ago.
        // Segment N of another rendition cut about then shares its stamp; one cut far from it
        // (a rendition that joined at sequence 0 after a reconnect) gets its own.
        let target_ms = i64::from(self.target_duration.max(1)) * 1000;
        let program_date_time_ms = self.clock.map(|now| {
            let fresh = now() - (segment.duration_s * 1000.0).round() as i64;
            let at = match self.program_date_times.get(&sequence) {
                Some(t) if (t - fresh).abs() <= target_ms => *t,
                _ => {
                    self.program_date_times.insert(sequence, fresh);
                    fresh
                }
            };
            while self.program_date_times.len() > 4096 {
                self.program_date_times.pop_first();
            }
            at
        });
        let entry = SegmentEntry {
            sequence,
            uri: format!("{sequence}.ts"),
            program_date_time_ms,
            duration: segment.duration_s,
            key: Some(KeyRef {
                uri: format!("{}/keys/{key_id}", self.public_url),
                iv,
                cenc: None,
                extra: Vec::new(),
            }),
            discontinuity: self.discontinuity.remove(&name),
            map: None,
        };
        let source_codecs = [self.video_codec.clone(), self.audio_codec.clone()];
        let out = self.outputs.get_mut(&name).expect("looked up above");
        if out.codecs.is_none() {
            let [video, audio] = source_codecs;
            out.codecs = Some(
                [sniffed_video.or(video), audio]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        if out.bitrate_bps.is_none() && segment.duration_s > 0.5 {
            out.bitrate_bps = Some((plain_len as f64 * 8.0 / segment.duration_s) as u64);
        }
        out.total_s += segment.duration_s;
        let evicted = out.playlist.push(entry);
        ops.push(Op::playlist(
            format!("{name}/index.m3u8"),
            out.playlist.render(PlaylistKind::Live),
        ));
        out.stale.extend(evicted);
        while out.stale.len() > self.window.unwrap_or(usize::MAX) {
            let old = out.stale.pop_front().expect("non-empty");
            ops.push(Op::Delete {
                name: format!("{name}/{}", old.uri),
            });
        }
        if !self.master_written && self.outputs.values().all(|o| o.codecs.is_some()) {
            ops.push(self.master());
        }
        Some(ops)
    }

    fn master(&mut self) -> Op {
        let variants: Vec<Variant> = self
            .outputs
            .values()
            .map(|o| {
                let measured = o
                    .bitrate_bps
                    .unwrap_or(u64::from(o.info.bitrate_kbps.unwrap_or(1000)) * 1000);
                Variant {
                    uri: format!("{}/index.m3u8", o.info.name),
                    bandwidth: measured * 5 / 4,
                    average_bandwidth: Some(measured),
                    width: o.info.width,
                    height: o.info.height,
                    frame_rate: o.info.frame_rate,
                    codecs: o.codecs.clone().unwrap_or_default(),
                }
            })
            .collect();
        self.master_written = true;
        Op::playlist("master.m3u8".into(), render_master(&variants))
    }

    /// A master playlist not written yet is written now, of the renditions that have media.
    fn master_of_what_played(&mut self, ops: &mut Vec<Op>) {
        if !self.master_written && self.outputs.values().any(|o| o.codecs.is_some()) {
            self.outputs.retain(|_, o| o.codecs.is_some());
            ops.push(self.master());
        }
    }

    /// The publisher stopped: every playlist gets EXT-X-ENDLIST.
    pub fn end(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        self.master_of_what_played(&mut ops);
        for (name, out) in &mut self.outputs {
            out.playlist.end();
            ops.push(Op::playlist(
                format!("{name}/index.m3u8"),
                out.playlist.render(PlaylistKind::Live),
            ));
        }
        ops
    }

    /// Every media playlist as a finished VOD playlist (a recording, an asset).
    pub fn vod_playlists(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        self.master_of_what_played(&mut ops);
        for (name, out) in &self.outputs {
            ops.push(Op::playlist(
                format!("{name}/index.m3u8"),
                out.playlist.render(PlaylistKind::Vod),
            ));
        }
        ops
    }

    /// Whether any segment was written.
    pub fn has_media(&self) -> bool {
        self.outputs
            .values()
            .any(|o| o.playlist.segments().next().is_some())
    }

    /// Media duration: the longest rendition's.
    pub fn duration_ms(&self) -> Option<i64> {
        self.outputs
            .values()
            .map(|o| (o.total_s * 1000.0) as i64)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packager::crypto::decrypt_segment;

    fn rendition(name: &str) -> RenditionOut {
        RenditionOut {
            name: name.into(),
            width: 640,
            height: 360,
            bitrate_kbps: Some(800),
            frame_rate: Some(30.0),
            passthrough: false,
        }
    }

    /// Clear bytes that start like an H.264 TS segment (an SPS: `avc1.64001f`).
    fn clear(n: u8) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f];
        v.resize(1000, n);
        v
    }

    fn segment(rendition: &str, n: u8) -> Segment {
        Segment {
            rendition: rendition.into(),
            duration_s: 2.0,
            bytes: clear(n).into(),
        }
    }

    /// A state with renditions, giving each key it asks for (`k<period>`, bytes = period).
    struct Harness {
        state: HlsState,
        keys_given: Vec<u64>,
    }

    impl Harness {
        fn new(window: Option<usize>, rotation: u64, renditions: &[&str]) -> Self {
            let mut state = HlsState::new("https://cdn.test".into(), window, rotation, 2);
            state.audio_codec = Some("mp4a.40.2".into());
            state.set_renditions(renditions.iter().map(|r| rendition(r)).collect());
            Self {
                state,
                keys_given: Vec::new(),
            }
        }

        fn add(&mut self, rendition: &str, n: u8) -> Vec<Op> {
            if let Some(period) = self.state.key_needed(rendition) {
                self.keys_given.push(period);
                self.state
                    .add_key(period, format!("k{period}"), [period as u8; 16]);
            }
            self.state.add_segment(segment(rendition, n)).unwrap()
        }
    }

    fn names(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                Op::Put { name, .. } => format!("put {name}"),
                Op::Delete { name } => format!("delete {name}"),
                Op::Live { track, .. } => format!("live {track}"),
            })
            .collect()
    }

    fn text(ops: &[Op], wanted: &str) -> String {
        ops.iter()
            .find_map(|op| match op {
                Op::Put { name, body, .. } if name == wanted => {
                    Some(String::from_utf8(body.to_vec()).unwrap())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {wanted} in {:?}", names(ops)))
    }

    /// A live output stamps segment N of every rendition with one program date-time: the
    /// wall clock when the first rendition's segment N was cut, less its duration.
    #[test]
    fn live_segments_carry_one_program_date_time_per_sequence() {
        use std::sync::atomic::{AtomicI64, Ordering};
        static NOW: AtomicI64 = AtomicI64::new(1_765_000_010_000);
        let mut h = Harness::new(Some(3), 0, &["360p", "720p"]);
        h.state
            .stamp_program_date_time(|| NOW.fetch_add(150, Ordering::SeqCst));
        let low = h.add("360p", 1);
        let high = h.add("720p", 1);
        let stamp = |ops: &[Op], rendition: &str| {
            let playlist = text(ops, &format!("{rendition}/index.m3u8"));
            let m = match m3u8_rs::parse_playlist_res(playlist.as_bytes()).unwrap() {
                m3u8_rs::Playlist::MediaPlaylist(m) => m,
                _ => panic!("a media playlist"),
            };
            m.segments[0]
                .program_date_time
                .expect("EXT-X-PROGRAM-DATE-TIME")
        };
        assert_eq!(stamp(&low, "360p"), stamp(&high, "720p"));
        assert_eq!(
            stamp(&low, "360p").timestamp_millis(),
            1_765_000_010_000 - 2000,
            "cut at the clock's time, two seconds after its first frame"
        );
        assert!(
            text(&low, "360p/index.m3u8")
                .contains("#EXT-X-PROGRAM-DATE-TIME:2025-12-06T05:46:48.000Z")
        );
        // Without a clock (VOD), none.
        let mut vod = Harness::new(None, 0, &["360p"]);
        assert!(!text(&vod.add("360p", 1), "360p/index.m3u8").contains("PROGRAM-DATE-TIME"));
    }

    #[test]
    fn each_segment_is_encrypted_with_its_iv_and_listed_with_its_key() {
        let mut h = Harness::new(Some(3), 0, &["360p"]);
        let ops = h.add("360p", 7);
        assert_eq!(
            names(&ops),
            ["put 360p/0.ts", "put 360p/index.m3u8", "put master.m3u8"]
        );
        let Op::Put {
            body, content_type, ..
        } = &ops[0]
        else {
            panic!()
        };
        assert_eq!(*content_type, SEGMENT_TYPE);
        assert_ne!(&body[..], &clear(7)[..]);
        let plain = decrypt_segment(&[0; 16], &iv_for_sequence(0), body).unwrap();
        assert_eq!(plain, clear(7));
        let playlist = text(&ops, "360p/index.m3u8");
        assert!(
            playlist.contains(
                "#EXT-X-KEY:METHOD=AES-128,URI=\"https://cdn.test/keys/k0\",IV=0x00000000000000000000000000000000"
            ),
            "{playlist}"
        );
        assert!(playlist.contains("0.ts") && !playlist.contains("#EXT-X-ENDLIST"));
        let master = text(&ops, "master.m3u8");
        assert!(
            master.contains("CODECS=\"avc1.64001f,mp4a.40.2\""),
            "{master}"
        );
        assert!(master.contains("RESOLUTION=640x360") && master.contains("360p/index.m3u8"));
    }

    #[test]
    fn the_master_waits_for_every_renditions_codecs_and_is_written_once() {
        let mut h = Harness::new(Some(3), 0, &["360p", "720p"]);
        assert!(!names(&h.add("360p", 1)).contains(&"put master.m3u8".to_string()));
        let ops = h.add("720p", 1);
        let master = text(&ops, "master.m3u8");
        assert!(master.contains("360p/index.m3u8") && master.contains("720p/index.m3u8"));
        assert!(!names(&h.add("360p", 2)).contains(&"put master.m3u8".to_string()));
        // A segment of a rendition the output does not have is no operation.
        assert_eq!(h.state.add_segment(segment("1080p", 1)), None);
    }

    #[test]
    fn the_live_window_slides_and_old_segments_are_deleted_a_window_later() {
        let mut h = Harness::new(Some(3), 0, &["360p"]);
        let mut deleted = Vec::new();
        let mut last = Vec::new();
        for n in 0..8 {
            last = h.add("360p", n);
            deleted.extend(names(&last).into_iter().filter(|o| o.starts_with("delete")));
        }
        let playlist = text(&last, "360p/index.m3u8");
        assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:5"), "{playlist}");
        assert!(
            playlist.contains("5.ts") && playlist.contains("7.ts") && !playlist.contains("4.ts")
        );
        // Segments 3 and 4 left the window but stay for players still fetching them.
        assert_eq!(deleted, ["delete 360p/0.ts", "delete 360p/1.ts"]);
    }

    #[test]
    fn keys_rotate_every_period_and_old_ones_are_forgotten() {
        let mut h = Harness::new(None, 2, &["360p", "720p"]);
        let mut playlist = String::new();
        for n in 0..6 {
            h.add("720p", n);
            playlist = text(&h.add("360p", n), "360p/index.m3u8");
        }
        // One key per period, created once for both renditions.
        assert_eq!(h.keys_given, [0, 1, 2]);
        for (period, first) in [(0, 0), (1, 2), (2, 4)] {
            let line = format!(
                "URI=\"https://cdn.test/keys/k{period}\",IV={}",
                crate::packager::crypto::iv_hex(&iv_for_sequence(first))
            );
            assert!(playlist.contains(&line), "{line} in {playlist}");
        }
        assert_eq!(h.state.keys.len(), 3);
        h.add("360p", 6);
        assert_eq!(h.state.keys.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn a_rendition_that_joins_periods_later_gets_keys_of_its_own() {
        let mut h = Harness::new(Some(6), 1, &["360p"]);
        for n in 0..4 {
            h.add("360p", n);
        }
        assert_eq!(h.keys_given, [0, 1, 2, 3]);
        // A reconnect at a higher resolution adds a rung: its playlist starts at sequence 0,
        // a period older than the kept ones.
        h.state.reopen();
        h.state
            .set_renditions(vec![rendition("360p"), rendition("720p")]);
        let ops = h.add("720p", 0);
        assert_eq!(h.keys_given, [0, 1, 2, 3, 0]);
        let playlist = text(&ops, "720p/index.m3u8");
        assert!(playlist.contains("/keys/k0\""), "{playlist}");
        let Op::Put { body, .. } = &ops[0] else {
            panic!()
        };
        assert_eq!(
            decrypt_segment(&[0; 16], &iv_for_sequence(0), body).unwrap(),
            clear(0)
        );
        // The kept periods are the newest three.
        assert_eq!(h.state.keys.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn a_reconnect_continues_each_playlist_after_a_discontinuity() {
        let mut h = Harness::new(Some(6), 0, &["360p"]);
        h.add("360p", 0);
        h.state.reopen();
        h.state.set_renditions(vec![rendition("360p")]);
        let playlist = text(&h.add("360p", 1), "360p/index.m3u8");
        let lines: Vec<&str> = playlist.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == "#EXT-X-DISCONTINUITY")
            .unwrap();
        assert!(lines[at..].contains(&"1.ts"), "{playlist}");
        assert!(!lines[..at].contains(&"1.ts"));
        let next = text(&h.add("360p", 2), "360p/index.m3u8");
        assert_eq!(next.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{next}");
    }

    #[test]
    fn the_end_writes_endlist_and_a_master_of_what_played() {
        let mut h = Harness::new(Some(3), 0, &["360p", "720p"]);
        h.add("360p", 0);
        let ops = h.state.end();
        // 720p never produced a segment: the master lists only 360p, and only its
        // playlist is written.
        assert_eq!(names(&ops), ["put master.m3u8", "put 360p/index.m3u8"]);
        assert!(!text(&ops, "master.m3u8").contains("720p"));
        assert!(text(&ops, "360p/index.m3u8").ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn a_recording_keeps_every_segment_in_a_vod_playlist() {
        let mut h = Harness::new(None, 0, &["360p"]);
        for n in 0..10 {
            h.add("360p", n);
        }
        assert!(h.state.has_media());
        assert_eq!(h.state.duration_ms(), Some(20_000));
        let ops = h.state.vod_playlists();
        assert_eq!(names(&ops), ["put 360p/index.m3u8"]);
        let playlist = text(&ops, "360p/index.m3u8");
        assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD"), "{playlist}");
        assert!(
            playlist.contains("\n0.ts\n") && playlist.contains("\n9.ts\n"),
            "{playlist}"
        );
        assert!(playlist.ends_with("#EXT-X-ENDLIST\n"));
        assert!(!HlsState::new(String::new(), None, 0, 2).has_media());
    }
}
