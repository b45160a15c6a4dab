//! HLS playlists written with m3u8-rs: media playlists (a sliding live window, or every
//! segment when recording) and the master playlist of a rendition ladder.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use m3u8_rs::{Key, KeyMethod, MediaPlaylistType, MediaSegment, Resolution, VariantStream};

use super::crypto::iv_hex;

/// The key a segment is encrypted with: where players fetch it, and the segment's IV.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRef {
    pub uri: String,
    pub iv: [u8; 16],
    /// Common encryption (CMAF): `SAMPLE-AES` (cbcs) or `SAMPLE-AES-CTR` (cenc) for the
    /// W3C ClearKey key system, the key id in a `data:` URI, no IV (it is in the init).
    /// `None`: whole segments in AES-128.
    pub cenc: Option<crate::media::cenc::Scheme>,
    /// More `#EXT-X-KEY` lines for the same key, one per other DRM system (Widevine,
    /// PlayReady, FairPlay signalling from a key server).
    pub extra: Vec<String>,
}

/// One segment as a playlist lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentEntry {
    pub sequence: u64,
    pub uri: String,
    pub duration: f64,
    pub key: Option<KeyRef>,
    /// The first segment after an encoder change (a publisher reconnecting).
    pub discontinuity: bool,
    /// Live: the wall-clock time of the segment's first frame (ms since the Unix epoch),
    /// written as `EXT-X-PROGRAM-DATE-TIME` so players can tell their latency.
    pub program_date_time_ms: Option<i64>,
    /// CMAF: the init segment (`EXT-X-MAP`) this segment needs.
    pub map: Option<String>,
}

/// How the playlist presents itself to players.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// Live: no playlist type; players reload it.
    Live,
    /// A finished recording: `EXT-X-PLAYLIST-TYPE:VOD` and `EXT-X-ENDLIST`.
    Vod,
}

/// The state of one rendition's media playlist.
#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    target_duration: u64,
    window: Option<usize>,
    segments: VecDeque<SegmentEntry>,
    discontinuity_sequence: u64,
    next_sequence: u64,
    ended: bool,
}

impl MediaPlaylist {
    /// `window`: how many segments a live playlist keeps (`None`: all, for recordings).
    pub fn new(target_duration_s: u32, window: Option<usize>) -> Self {
        Self {
            target_duration: u64::from(target_duration_s.max(1)),
            window: window.map(|w| w.max(3)),
            segments: VecDeque::new(),
            discontinuity_sequence: 0,
            next_sequence: 0,
            ended: false,
        }
    }

    /// Segments with a discontinuity that left the window (`EXT-X-DISCONTINUITY-SEQUENCE`).
    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    /// The media sequence number the next segment gets.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    pub fn segments(&self) -> impl Iterator<Item = &SegmentEntry> {
        self.segments.iter()
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Appends a segment (reopening an ended playlist); returns segments that slid out of
    /// the window, which the caller may delete from storage.
    pub fn push(&mut self, segment: SegmentEntry) -> Vec<SegmentEntry> {
        // EXTINF rounded to the nearest integer must not exceed the target duration.
        self.target_duration = self.target_duration.max(segment.duration.round() as u64);
        self.next_sequence = segment.sequence + 1;
        self.ended = false;
        self.segments.push_back(segment);
        let mut evicted = Vec::new();
        if let Some(window) = self.window {
            while self.segments.len() > window {
                let old = self.segments.pop_front().expect("non-empty");
                if old.discontinuity {
                    self.discontinuity_sequence += 1;
                }
                evicted.push(old);
            }
        }
        evicted
    }

    /// Marks the playlist complete (`EXT-X-ENDLIST`).
    pub fn end(&mut self) {
        self.ended = true;
    }

    pub fn render(&self, kind: PlaylistKind) -> String {
        m3u8_rs::WRITE_OPT_FLOAT_PRECISION.store(3, Ordering::Relaxed);
        let cmaf = self.segments.iter().any(|s| s.map.is_some());
        // EXT-X-MAP and KEY are written where they change (and on the first segment).
        let (mut map, mut key) = (None, None);
        let playlist = m3u8_rs::MediaPlaylist {
            // EXT-X-MAP in a media playlist without I-frames, and KEYFORMAT: version 6.
            version: Some(if cmaf { 6 } else { 3 }),
            target_duration: self.target_duration,
            media_sequence: self
                .segments
                .front()
                .map_or(self.next_sequence, |s| s.sequence),
            discontinuity_sequence: self.discontinuity_sequence,
            end_list: self.ended || kind == PlaylistKind::Vod,
            playlist_type: (kind == PlaylistKind::Vod).then_some(MediaPlaylistType::Vod),
            independent_segments: true,
            segments: self
                .segments
                .iter()
                .map(|s| {
                    (
                        s,
                        s.key
                            .as_ref()
                            .filter(|k| k.cenc.is_none() || key.replace(*k) != Some(*k)),
                    )
                })
                .map(|(s, written_key)| MediaSegment {
                    uri: s.uri.clone(),
                    duration: s.duration as f32,
                    discontinuity: s.discontinuity,
                    program_date_time: s.program_date_time_ms.and_then(|ms| {
                        chrono::DateTime::from_timestamp_millis(ms).map(|t| t.fixed_offset())
                    }),
                    map: s
                        .map
                        .as_ref()
                        .filter(|m| map.replace(*m) != Some(*m) || s.discontinuity)
                        .map(|m| m3u8_rs::Map {
                            uri: m.clone(),
                            ..Default::default()
                        }),
                    key: written_key.map(render_key),
                    unknown_tags: written_key
                        .map(|k| k.extra.iter().filter_map(|l| ext_tag(l)).collect())
                        .unwrap_or_default(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut out = Vec::new();
        playlist
            .write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("m3u8-rs writes UTF-8")
    }
}

/// `#EXT-X-KEY:…` as the tag m3u8-rs writes back as it is.
fn ext_tag(line: &str) -> Option<m3u8_rs::ExtTag> {
    let (tag, rest) = line.strip_prefix("#EXT-")?.split_once(':')?;
    Some(m3u8_rs::ExtTag {
        tag: tag.to_string(),
        rest: Some(rest.to_string()),
    })
}

fn render_key(k: &KeyRef) -> Key {
    use crate::media::cenc::Scheme;
    match k.cenc {
        None => Key {
            method: KeyMethod::AES128,
            uri: Some(k.uri.clone()),
            iv: Some(iv_hex(&k.iv)),
            keyformat: None,
            keyformatversions: None,
        },
        Some(scheme) => Key {
            method: match scheme {
                Scheme::Cbcs => KeyMethod::SampleAES,
                Scheme::Cenc => KeyMethod::Other("SAMPLE-AES-CTR".into()),
            },
            uri: Some(k.uri.clone()),
            iv: None,
            keyformat: Some(CLEARKEY_FORMAT.into()),
            keyformatversions: Some("1".into()),
        },
    }
}

const AUDIO_GROUP: &str = "audio";

/// The W3C ClearKey key system's KEYFORMAT.
pub const CLEARKEY_FORMAT: &str = "org.w3.clearkey";

/// One rendition as the master playlist advertises it.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub uri: String,
    /// Peak bits per second.
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<f64>,
    /// RFC 6381 codecs, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
}

/// The master playlist: renditions from the highest bandwidth down.
pub fn render_master(variants: &[Variant]) -> String {
    render_master_with_audio(variants, None)
}

/// The master playlist; with `audio` (the URI of an audio-only media playlist), every
/// variant plays its video with that audio (`EXT-X-MEDIA` group `audio`).
pub fn render_master_with_audio(variants: &[Variant], audio: Option<&str>) -> String {
    let mut sorted = variants.to_vec();
    sorted.sort_by_key(|v| std::cmp::Reverse(v.bandwidth));
    let playlist = m3u8_rs::MasterPlaylist {
        independent_segments: true,
        variants: sorted
            .into_iter()
            .map(|v| VariantStream {
                uri: v.uri,
                bandwidth: v.bandwidth,
                average_bandwidth: v.average_bandwidth,
                codecs: Some(v.codecs),
                resolution: Some(Resolution {
                    width: u64::from(v.width),
                    height: u64::from(v.height),
                }),
                frame_rate: v.frame_rate,
                audio: audio.map(|_| AUDIO_GROUP.to_string()),
                ..Default::default()
            })
            .collect(),
        alternatives: audio
            .map(|uri| m3u8_rs::AlternativeMedia {
                media_type: m3u8_rs::AlternativeMediaType::Audio,
                uri: Some(uri.to_string()),
                group_id: AUDIO_GROUP.into(),
                name: "Audio".into(),
                default: true,
                autoselect: true,
                ..Default::default()
            })
            .into_iter()
            .collect(),
        version: Some(if audio.is_some() { 6 } else { 3 }),
        ..Default::default()
    };
    let mut out = Vec::new();
    playlist
        .write_to(&mut out)
        .expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("m3u8-rs writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packager::crypto::iv_for_sequence;

    fn segment(seq: u64, duration: f64, discontinuity: bool) -> SegmentEntry {
        SegmentEntry {
            sequence: seq,
            uri: format!("{seq}.ts"),
            duration,
            key: Some(KeyRef {
                uri: format!("/keys/k{}", seq / 3),
                iv: iv_for_sequence(seq),
                cenc: None,
                extra: Vec::new(),
            }),
            discontinuity,
            program_date_time_ms: None,
            map: None,
        }
    }

    fn parse_media(text: &str) -> m3u8_rs::MediaPlaylist {
        match m3u8_rs::parse_playlist_res(text.as_bytes()).expect("parses") {
            m3u8_rs::Playlist::MediaPlaylist(p) => p,
            m3u8_rs::Playlist::MasterPlaylist(_) => panic!("expected a media playlist"),
        }
    }

    #[test]
    fn a_live_window_slides_and_counts_discontinuities() {
        let mut p = MediaPlaylist::new(2, Some(3));
        for seq in 0..5 {
            let evicted = p.push(segment(seq, 2.0, seq == 1));
            assert_eq!(evicted.len(), usize::from(seq >= 3));
        }
        let parsed = parse_media(&p.render(PlaylistKind::Live));
        assert_eq!(parsed.media_sequence, 2);
        assert_eq!(
            parsed.discontinuity_sequence, 1,
            "the evicted segment 1 carried a discontinuity"
        );
        assert_eq!(parsed.segments.len(), 3);
        assert!(!parsed.end_list);
        assert_eq!(parsed.playlist_type, None);
        let key = parsed.segments[0].key.as_ref().unwrap();
        assert_eq!(key.method, KeyMethod::AES128);
        assert_eq!(key.uri.as_deref(), Some("/keys/k0"));
        assert_eq!(
            key.iv.as_deref(),
            Some("0x00000000000000000000000000000002")
        );
        assert_eq!(
            parsed.segments[2].key.as_ref().unwrap().uri.as_deref(),
            Some("/keys/k1"),
            "rotated key"
        );
    }

    #[test]
    fn a_recording_keeps_everything_and_ends_as_vod() {
        let mut p = MediaPlaylist::new(2, None);
        for seq in 0..10 {
            p.push(segment(seq, 2.002, false));
        }
        p.push(segment(10, 2.6, true));
        p.end();
        let live = parse_media(&p.render(PlaylistKind::Live));
        assert!(live.end_list);
        assert_eq!(live.segments.len(), 11);
        assert_eq!(live.target_duration, 3, "2.6 s rounds to 3");
        assert!(live.segments[10].discontinuity);
        assert!((live.segments[0].duration - 2.002).abs() < 1e-6);
        let vod = parse_media(&p.render(PlaylistKind::Vod));
        assert_eq!(vod.playlist_type, Some(MediaPlaylistType::Vod));
        assert!(vod.end_list);
        // Pushing after end reopens it: the publisher came back within the reconnect window.
        p.push(segment(11, 2.0, true));
        assert!(!parse_media(&p.render(PlaylistKind::Live)).end_list);
    }

    #[test]
    fn the_master_playlist_lists_renditions_highest_first_with_their_attributes() {
        let v = |uri: &str, bw: u64, w: u32, h: u32| Variant {
            uri: uri.into(),
            bandwidth: bw,
            average_bandwidth: Some(bw * 8 / 10),
            width: w,
            height: h,
            frame_rate: Some(30.0),
            codecs: "avc1.64001f,mp4a.40.2".into(),
        };
        let text = render_master(&[
            v("360p/index.m3u8", 900_000, 640, 360),
            v("720p/index.m3u8", 3_000_000, 1280, 720),
        ]);
        let m3u8_rs::Playlist::MasterPlaylist(m) =
            m3u8_rs::parse_playlist_res(text.as_bytes()).unwrap()
        else {
            panic!("expected master")
        };
        assert_eq!(m.variants.len(), 2);
        assert_eq!(m.variants[0].uri, "720p/index.m3u8");
        assert_eq!(m.variants[0].bandwidth, 3_000_000);
        assert_eq!(m.variants[0].average_bandwidth, Some(2_400_000));
        assert_eq!(
            m.variants[0].resolution,
            Some(Resolution {
                width: 1280,
                height: 720
            })
        );
        assert_eq!(m.variants[0].frame_rate, Some(30.0));
        assert_eq!(
            m.variants[0].codecs.as_deref(),
            Some("avc1.64001f,mp4a.40.2")
        );
    }
}
