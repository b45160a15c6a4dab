//! Why one file (1,308 lines, 374 of them tests): one state machine whose tracks,
//! chunks, playlists and manifest share private state; split, each part would reach into
//! the others' tracks.
//!
//! The CMAF output as a pure state machine, beside [`HlsState`](super::hls::HlsState): the
//! same MPEG-TS segments in, but written as CMAF (`media::cmaf`), encrypted with common
//! encryption (`media::cenc`), and listed twice from the same files: HLS media playlists
//! with `EXT-X-MAP` and a master with an audio group, and a DASH manifest.
//!
//! Layout below the output's prefix:
//! - `{rendition}/init.mp4`, `{rendition}/{n}.m4s`, `{rendition}/index.m3u8`: video only;
//! - `audio/…`: the audio track, taken from one rendition (all carry the same audio);
//! - `master.m3u8` and `manifest.mpd`.
//!
//! One content key encrypts every track of the output, or one per rotation period of
//! `rotate_keys_every` segments (`live.key_rotation_segments`): the key id is in each init
//! segment's `tenc`, so a new key brings a new init segment per track, written where it
//! changes in the HLS playlists (`EXT-X-KEY`, `EXT-X-MAP`) and as a new `Period` of the DASH
//! manifest. `cbcs` by default, with a constant IV derived from the key.

use std::collections::{BTreeMap, HashSet, VecDeque};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::dash::{self, Content, Live, Manifest, Representation};
use super::hls::Op;
use super::llhls::{self, PartLine, SEGMENTS_WITH_PARTS, SegmentLine, Snapshot};
use super::playlist::{
    CLEARKEY_FORMAT, KeyRef, MediaPlaylist, PlaylistKind, SegmentEntry, Variant,
    render_master_with_audio,
};
use crate::drm::Key128;
use crate::drm::speke::{DrmSystem, ProvidedKey};
use crate::media::cenc::{self, InitInfo, Protection, Scheme};
use crate::media::cmaf::{CmafRemuxer, TrackFragment};
use crate::media::{Part, RenditionOut, Segment};

/// The directory of the audio track (a reserved rendition name).
pub const AUDIO_TRACK: &str = "audio";
const VIDEO_TYPE: &str = "video/mp4";
const AUDIO_TYPE: &str = "audio/mp4";

/// One track's output state (a video rendition, or the audio).
struct Track {
    /// The rendition; `None` for the audio track.
    info: Option<RenditionOut>,
    playlist: MediaPlaylist,
    codec: Option<String>,
    bitrate_bps: Option<u64>,
    stale: VecDeque<SegmentEntry>,
    total_s: f64,
    /// The current init segment's name and what encrypting its fragments needs.
    init: Option<(String, InitInfo)>,
    inits: u32,
    /// The encoder's init segment in clear, and the key period the current one is for: a
    /// new period protects it again with the period's key.
    clear_init: Option<Vec<u8>>,
    init_period: Option<u64>,
    timescale: u32,
    /// The fragments in the playlist, for DASH.
    timeline: VecDeque<Listed>,
    /// Media time of the first fragment ever.
    origin: Option<u64>,
    /// Distinguishes this track's `cenc` IVs from the other tracks' under the same key.
    index: u64,
    /// The open segment's chunks (its parts), encrypted, in order.
    open: Vec<Chunk>,
    /// Parts of the last segments, for the LL-HLS playlist and for serving: (msn, parts).
    history: VecDeque<(u64, Vec<Chunk>)>,
}

/// One encrypted CMAF chunk: a part of its segment.
#[derive(Clone)]
struct Chunk {
    line: PartLine,
    bytes: Bytes,
    base_time: u64,
    duration: u64,
    codec: String,
    timescale: u32,
}

/// A key id as the HLS ClearKey `EXT-X-KEY` names it: a `data:` URI of its bytes.
fn kid_uri(kid: &[u8; 16]) -> String {
    use base64::Engine;
    format!(
        "data:text/plain;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(kid)
    )
}

/// A fragment as the DASH manifest lists it: (sequence, decode time, duration, the number
/// of its init segment).
type Listed = (u64, u64, u64, u32);

/// The name of a track's `n`th init segment.
fn init_name(n: u32) -> String {
    match n {
        0 => "init.mp4".to_string(),
        n => format!("init-{n}.mp4"),
    }
}

/// One rotation period's content key.
#[derive(Clone)]
struct PeriodKey {
    protection: Protection,
    /// DRM systems' signalling for the key (from a key server), beside ClearKey.
    systems: Vec<DrmSystem>,
}

/// The state of one CMAF output (a broadcast or an asset).
pub struct CmafState {
    scheme: Scheme,
    window: Option<usize>,
    target_duration: u32,
    tracks: BTreeMap<String, Track>,
    remuxers: BTreeMap<String, CmafRemuxer>,
    /// The rendition whose audio becomes the audio track, and whether its first segment
    /// said if there is any.
    audio_from: Option<String>,
    audio_known: bool,
    /// Segments per key period (0: one key).
    rotation: u64,
    /// The content key of each period still listed.
    keys: BTreeMap<u64, PeriodKey>,
    discontinuity: HashSet<String>,
    master_written: bool,
    clock: Option<fn() -> i64>,
    program_date_times: BTreeMap<u64, i64>,
    /// Wall clock of the first fragment (DASH `availabilityStartTime`).
    started_ms: Option<i64>,
    /// LL-HLS: parts are listed and published as they come.
    low_latency: bool,
    /// Bytes of each rendition's open segment already read from its parts.
    fed: BTreeMap<String, usize>,
    /// The DASH manifest's `BaseURL`, when it is not beside the segments.
    dash_base: Option<&'static str>,
}

impl CmafState {
    pub fn new(scheme: Scheme, window: Option<usize>, target_duration: u32) -> Self {
        Self {
            scheme,
            window,
            target_duration,
            tracks: BTreeMap::new(),
            remuxers: BTreeMap::new(),
            audio_from: None,
            audio_known: false,
            rotation: 0,
            keys: BTreeMap::new(),
            discontinuity: HashSet::new(),
            master_written: false,
            clock: None,
            program_date_times: BTreeMap::new(),
            started_ms: None,
            low_latency: false,
            fed: BTreeMap::new(),
            dash_base: None,
        }
    }

    /// The DASH manifest is stored above the segments: its `BaseURL` is `base`.
    pub fn dash_base_url(&mut self, base: &'static str) {
        self.dash_base = Some(base);
    }

    /// Lists parts (LL-HLS) and publishes each track's live playlist as parts come.
    pub fn low_latency(&mut self) {
        self.low_latency = true;
    }

    pub fn stamp_program_date_time(&mut self, clock: fn() -> i64) {
        self.clock = Some(clock);
    }

    fn track(&mut self, name: &str, info: Option<RenditionOut>) -> &mut Track {
        let index = self.tracks.len() as u64;
        let (target, window) = (self.target_duration, self.window);
        let track = self
            .tracks
            .entry(name.to_string())
            .or_insert_with(|| Track {
                info: None,
                playlist: MediaPlaylist::new(target, window),
                codec: None,
                bitrate_bps: None,
                stale: VecDeque::new(),
                total_s: 0.0,
                init: None,
                inits: 0,
                clear_init: None,
                init_period: None,
                timescale: 1,
                timeline: VecDeque::new(),
                origin: None,
                index,
                open: Vec::new(),
                history: VecDeque::new(),
            });
        if info.is_some() {
            track.info = info;
        }
        track
    }

    /// The renditions of a (new) publish; existing playlists continue after a discontinuity.
    pub fn set_renditions(&mut self, list: Vec<RenditionOut>) {
        if self.audio_from.is_none() {
            self.audio_from = list.first().map(|r| r.name.clone());
        }
        for info in list {
            let name = info.name.clone();
            self.track(&name, Some(info));
            let with_audio = self.audio_from.as_deref() == Some(name.as_str());
            self.remuxers
                .entry(name)
                .or_insert_with(|| CmafRemuxer::new(with_audio));
        }
        self.master_written = false;
    }

    /// After a reconnect every track's next segment starts a discontinuity, and the new
    /// encoder's timestamps go on from where the last one's stopped.
    pub fn reopen(&mut self) {
        self.discontinuity = self.tracks.keys().cloned().collect();
        for r in self.remuxers.values_mut() {
            r.reopen();
        }
    }

    /// A new content key every `segments` segments (0: one for the whole output).
    pub fn rotate_keys_every(&mut self, segments: u64) {
        self.rotation = segments;
    }

    fn period(&self, sequence: u64) -> u64 {
        sequence.checked_div(self.rotation).unwrap_or(0)
    }

    /// The key period whose key the next segment of `rendition` needs, while it is not
    /// given (give it with [`set_key`](Self::set_key) before the segment).
    pub fn key_needed(&self, rendition: &str) -> Option<u64> {
        let sequence = self
            .tracks
            .get(rendition)
            .map_or(0, |t| t.playlist.next_sequence());
        let period = self.period(sequence);
        (!self.keys.contains_key(&period)).then_some(period)
    }

    /// A period's content key; `id` is its base64url key id (16 bytes).
    pub fn add_key(&mut self, period: u64, id: String, key: Key128) {
        self.set_key(
            period,
            ProvidedKey {
                id,
                key,
                systems: Vec::new(),
            },
        );
    }

    /// A period's content key with the DRM systems' `pssh` boxes and HLS lines a key
    /// server gave for it (written beside the W3C common `pssh` and ClearKey signalling).
    /// Keys of periods no track lists any more are forgotten.
    pub fn set_key(&mut self, period: u64, provided: ProvidedKey) {
        use base64::Engine;
        let ProvidedKey { id, key, systems } = provided;
        let mut kid = [0u8; 16];
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&id) {
            Ok(raw) if raw.len() == 16 => kid.copy_from_slice(&raw),
            // Not a 16-byte id (never made here): a key id derived from it.
            _ => kid.copy_from_slice(&Sha256::digest(id.as_bytes())[..16]),
        }
        let digest = Sha256::new()
            .chain_update(b"ferrocast cbcs constant iv")
            .chain_update(key)
            .finalize();
        let mut constant_iv = [0u8; 16];
        constant_iv.copy_from_slice(&digest[..16]);
        let mut pssh = vec![cenc::pssh_common(&[kid])];
        pssh.extend(systems.iter().map(|s| s.pssh.clone()));
        let protection = Protection {
            scheme: self.scheme,
            kid,
            key,
            constant_iv,
            pssh,
        };
        self.keys.insert(
            period,
            PeriodKey {
                protection,
                systems,
            },
        );
        let oldest = self
            .tracks
            .values()
            .filter_map(|t| t.playlist.segments().next().map(|s| s.sequence))
            .min();
        if let Some(oldest) = oldest {
            let keep = self.period(oldest);
            self.keys.retain(|p, _| *p >= keep || *p == period);
        }
    }

    /// The key of the period of segment `sequence`: that period's, or (never expected: a
    /// segment whose key was not asked for) the latest.
    fn key_for(&self, sequence: u64) -> Option<&PeriodKey> {
        self.keys
            .get(&self.period(sequence))
            .or_else(|| self.keys.values().next_back())
    }

    /// `#EXT-X-KEY` lines of the other DRM systems: the key server's own, or (Widevine,
    /// PlayReady) the `pssh` in a `data:` URI as Shaka Packager writes it.
    fn system_key_lines(&self, key: &PeriodKey) -> Vec<String> {
        use base64::Engine;
        let method = match self.scheme {
            Scheme::Cbcs => "SAMPLE-AES",
            Scheme::Cenc => "SAMPLE-AES-CTR",
        };
        key.systems
            .iter()
            .filter_map(|s| {
                s.hls_key.clone().or_else(|| {
                    (s.system_id != crate::drm::speke::FAIRPLAY).then(|| {
                        format!(
                            "#EXT-X-KEY:METHOD={method},URI=\"data:text/plain;base64,{}\",\
                             KEYFORMAT=\"urn:uuid:{}\",KEYFORMATVERSIONS=\"1\"",
                            base64::engine::general_purpose::STANDARD.encode(&s.pssh),
                            crate::drm::speke::uuid(&s.system_id)
                        )
                    })
                })
            })
            .collect()
    }

    /// A part of a rendition's open segment: its complete frames re-wrapped as chunks,
    /// encrypted, and (LL-HLS) listed at once.
    pub fn add_part(&mut self, part: Part) -> Option<Vec<Op>> {
        let remuxer = self.remuxers.get_mut(&part.rendition)?;
        *self.fed.entry(part.rendition.clone()).or_default() += part.bytes.len();
        let remuxed = match remuxer.feed(&part.bytes).and_then(|()| remuxer.part()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(rendition = %part.rendition, error = %e, "part not re-wrapped as CMAF");
                return Some(Vec::new());
            }
        };
        let mut ops = Vec::new();
        if let Some(video) = remuxed.video {
            self.add_chunk(&part.rendition, video, &mut ops);
            ops.extend(self.live(&part.rendition));
        }
        if self.audio_from.as_deref() == Some(part.rendition.as_str())
            && let Some(audio) = remuxed.audio
        {
            self.add_chunk(AUDIO_TRACK, audio, &mut ops);
            ops.extend(self.live(AUDIO_TRACK));
        }
        Some(ops)
    }

    /// One MPEG-TS segment (whose parts, if any, came before): the rest of it re-wrapped,
    /// and the segment, its chunks together, stored and listed. `None`: a segment of a
    /// rendition this output does not have. Panics when the key was not given (see
    /// `key_needed`).
    pub fn add_segment(&mut self, segment: Segment) -> Option<Vec<Op>> {
        let remuxer = self.remuxers.get_mut(&segment.rendition)?;
        // Parts are the segment's first bytes, in order: what they did not hold is read now.
        let fed = self.fed.remove(&segment.rendition).unwrap_or(0);
        let rest = segment.bytes.get(fed..).unwrap_or_default();
        let remuxed = match remuxer
            .feed(rest)
            .and_then(|()| remuxer.segment_end(segment.duration_s))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(rendition = %segment.rendition, error = %e, "segment not re-wrapped as CMAF; skipped");
                if let Some(t) = self.tracks.get_mut(&segment.rendition) {
                    t.open.clear();
                }
                return Some(Vec::new());
            }
        };
        let mut ops = Vec::new();
        let pdt = self.program_date_time(&segment);
        let name = segment.rendition.as_str();
        if let Some(video) = remuxed.video {
            self.add_chunk(name, video, &mut ops);
        }
        self.close_segment(name, pdt, &mut ops);
        ops.extend(self.live(name));
        if self.audio_from.as_deref() == Some(name) {
            self.audio_known = true;
            if let Some(audio) = remuxed.audio {
                self.add_chunk(AUDIO_TRACK, audio, &mut ops);
            }
            self.close_segment(AUDIO_TRACK, pdt, &mut ops);
            ops.extend(self.live(AUDIO_TRACK));
        }
        let videos_ready = self
            .tracks
            .iter()
            .filter(|(n, _)| *n != AUDIO_TRACK)
            .all(|(_, t)| t.codec.is_some());
        if !self.master_written && videos_ready && self.audio_known {
            ops.push(self.master());
        }
        if self.master_written && !ops.is_empty() {
            ops.push(self.manifest(true));
        }
        Some(ops)
    }

    /// Segment N of every rendition gets one program date-time (as `HlsState` does).
    fn program_date_time(&mut self, segment: &Segment) -> Option<i64> {
        let now = self.clock?;
        let sequence = self
            .tracks
            .get(&segment.rendition)?
            .playlist
            .next_sequence();
        let target_ms = i64::from(self.target_duration.max(1)) * 1000;
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
        self.started_ms.get_or_insert(at);
        Some(at)
    }

    /// One chunk of a track's open segment: its init (when new) stored, the chunk encrypted.
    fn add_chunk(&mut self, name: &str, fragment: TrackFragment, ops: &mut Vec<Op>) {
        let sequence = self
            .tracks
            .get(name)
            .map_or(0, |t| t.playlist.next_sequence());
        let period = self.period(sequence);
        let protection = self
            .key_for(sequence)
            .expect("the content key was given")
            .protection
            .clone();
        let content_type = if name == AUDIO_TRACK {
            AUDIO_TYPE
        } else {
            VIDEO_TYPE
        };
        let track = self.track(name, None);
        if let Some(init) = fragment.init {
            track.clear_init = Some(init);
            track.init_period = None;
            track.timescale = fragment.timescale;
        }
        // A new encoder's init segment, or a new key period: the init, protected with the
        // period's key, under a new name.
        if track.init_period != Some(period)
            && let Some(clear) = &track.clear_init
        {
            let init_name = init_name(track.inits);
            match cenc::protect_init(clear, &protection) {
                Ok((bytes, info)) => {
                    track.inits += 1;
                    track.init = Some((init_name.clone(), info));
                    track.init_period = Some(period);
                    ops.push(Op::Put {
                        name: format!("{name}/{init_name}"),
                        body: Bytes::from(bytes),
                        content_type,
                    });
                }
                Err(e) => tracing::warn!(track = name, error = %e, "init segment not encrypted"),
            }
        }
        let Some((_, info)) = &track.init else {
            tracing::warn!(track = name, "a fragment before any init segment; skipped");
            return;
        };
        // cenc IVs never repeat under one key: 8 bits of track, 36 of segment, 8 of part
        // and 12 of sample (a whole segment's chunk has 20 bits of samples).
        let part = track.open.len() as u64;
        let seed = (track.index << 56) | ((sequence & 0xf_ffff_ffff) << 20) | ((part & 0xff) << 12);
        let bytes = match cenc::protect_segment(&fragment.fragment, info, &protection, seed) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(track = name, error = %e, "fragment not encrypted; skipped");
                return;
            }
        };
        track.open.push(Chunk {
            line: PartLine {
                duration_s: fragment.duration as f64 / f64::from(fragment.timescale.max(1)),
                independent: fragment.independent,
            },
            bytes: Bytes::from(bytes),
            base_time: fragment.base_time,
            duration: fragment.duration,
            codec: fragment.codec,
            timescale: fragment.timescale,
        });
    }

    /// The track's open segment is complete: its chunks, together, are the segment.
    fn close_segment(&mut self, name: &str, program_date_time_ms: Option<i64>, ops: &mut Vec<Op>) {
        let sequence = self
            .tracks
            .get(name)
            .map_or(0, |t| t.playlist.next_sequence());
        let key = self
            .key_for(sequence)
            .expect("the content key was given")
            .clone();
        let protection = key.protection.clone();
        let scheme = self.scheme;
        let extra_keys = self.system_key_lines(&key);
        let discontinuity = self.discontinuity.remove(name);
        let (window, low_latency) = (self.window, self.low_latency);
        let content_type = if name == AUDIO_TRACK {
            AUDIO_TYPE
        } else {
            VIDEO_TYPE
        };
        let track = self.track(name, None);
        if track.open.is_empty() {
            return;
        }
        let Some((init_name, _)) = track.init.clone() else {
            return;
        };
        let chunks = std::mem::take(&mut track.open);
        let first = &chunks[0];
        let (base_time, timescale) = (first.base_time, first.timescale);
        let duration: u64 = chunks.iter().map(|c| c.duration).sum();
        // Several chunks: a `sidx` first, which players that read the segment alone need.
        let mut bytes = if chunks.len() > 1 {
            let refs: Vec<(u32, u32, bool)> = chunks
                .iter()
                .map(|c| {
                    let size = u32::try_from(c.bytes.len()).unwrap_or(u32::MAX);
                    let duration = u32::try_from(c.duration).unwrap_or(u32::MAX);
                    (size, duration, c.line.independent)
                })
                .collect();
            crate::media::fmp4::sidx(timescale, base_time, &refs)
        } else {
            Vec::new()
        };
        bytes.extend(chunks.iter().flat_map(|c| c.bytes.iter().copied()));
        let sequence = track.playlist.next_sequence();
        let duration_s = duration as f64 / f64::from(timescale.max(1));
        if track.codec.is_none() {
            track.codec = Some(first.codec.clone());
        }
        if track.bitrate_bps.is_none() && duration_s > 0.5 {
            track.bitrate_bps = Some((bytes.len() as f64 * 8.0 / duration_s) as u64);
        }
        track.total_s += duration_s;
        track.origin.get_or_insert(base_time);
        ops.push(Op::Put {
            name: format!("{name}/{sequence}.m4s"),
            body: Bytes::from(bytes),
            content_type,
        });
        let evicted = track.playlist.push(SegmentEntry {
            sequence,
            uri: format!("{sequence}.m4s"),
            duration: duration_s,
            key: Some(KeyRef {
                uri: kid_uri(&protection.kid),
                iv: [0; 16],
                cenc: Some(scheme),
                extra: extra_keys,
            }),
            discontinuity,
            program_date_time_ms,
            map: Some(init_name),
        });
        let init_number = track.inits.saturating_sub(1);
        track
            .timeline
            .push_back((sequence, base_time, duration, init_number));
        let first = track.playlist.segments().next().map_or(0, |s| s.sequence);
        while track.timeline.front().is_some_and(|t| t.0 < first) {
            track.timeline.pop_front();
        }
        if low_latency {
            track.history.push_back((sequence, chunks));
            while track.history.len() as u64 > SEGMENTS_WITH_PARTS {
                track.history.pop_front();
            }
        }
        ops.push(Op::playlist(
            format!("{name}/index.m3u8"),
            track.playlist.render(PlaylistKind::Live),
        ));
        track.stale.extend(evicted);
        while track.stale.len() > window.unwrap_or(usize::MAX) {
            let old = track.stale.pop_front().expect("non-empty");
            ops.push(Op::Delete {
                name: format!("{name}/{}", old.uri),
            });
        }
    }

    /// The track's live LL-HLS playlist and parts, for the delivery (LL outputs only).
    fn live(&self, name: &str) -> Option<Op> {
        if !self.low_latency {
            return None;
        }
        let track = self.tracks.get(name)?;
        let (init_name, _) = track.init.as_ref()?;
        let method = match self.scheme {
            Scheme::Cbcs => "SAMPLE-AES",
            Scheme::Cenc => "SAMPLE-AES-CTR",
        };
        // The ClearKey line of a key (its id in a `data:` URI), then the other systems'.
        let key_lines = |uri: &str, extra: &[String]| {
            let mut lines = format!(
                "#EXT-X-KEY:METHOD={method},URI=\"{uri}\",\
                 KEYFORMAT=\"{CLEARKEY_FORMAT}\",KEYFORMATVERSIONS=\"1\""
            );
            for line in extra {
                lines.push('\n');
                lines.push_str(line);
            }
            lines
        };
        let open_msn = track.playlist.next_sequence();
        let open_key_lines = {
            let key = self.key_for(open_msn)?;
            key_lines(&kid_uri(&key.protection.kid), &self.system_key_lines(key))
        };
        let segments: Vec<SegmentLine> = track
            .playlist
            .segments()
            .map(|s| SegmentLine {
                msn: s.sequence,
                duration_s: s.duration,
                discontinuity: s.discontinuity,
                program_date_time_ms: s.program_date_time_ms,
                parts: track
                    .history
                    .iter()
                    .find(|(msn, _)| *msn == s.sequence)
                    .map(|(_, c)| c.iter().map(|c| c.line.clone()).collect())
                    .unwrap_or_default(),
                key_lines: s
                    .key
                    .as_ref()
                    .map(|k| key_lines(&k.uri, &k.extra))
                    .unwrap_or_default(),
                map_uri: s.map.clone().unwrap_or_else(|| init_name.clone()),
            })
            .collect();
        let open_parts: Vec<PartLine> = track.open.iter().map(|c| c.line.clone()).collect();
        let reports: Vec<(String, u64, u64)> = self
            .tracks
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .filter_map(|(n, t)| {
                let open = t.playlist.next_sequence();
                match (t.open.len(), t.history.back()) {
                    (0, Some((msn, c))) => {
                        Some((n.clone(), *msn, c.len().saturating_sub(1) as u64))
                    }
                    (0, None) => None,
                    (k, _) => Some((n.clone(), open, k as u64 - 1)),
                }
            })
            .collect();
        let (full, skip) = llhls::render(&llhls::Playlist {
            target_duration: u64::from(self.target_duration.max(1)),
            discontinuity_sequence: track.playlist.discontinuity_sequence(),
            segments: &segments,
            open_msn,
            open_parts: &open_parts,
            open_key_lines: &open_key_lines,
            open_map_uri: init_name,
            reports: &reports,
        });
        let parts = track
            .history
            .iter()
            .chain(std::iter::once(&(open_msn, track.open.clone())))
            .flat_map(|(msn, chunks)| {
                chunks
                    .iter()
                    .enumerate()
                    .map(move |(i, c)| (format!("{msn}.{i}.m4s"), c.bytes.clone()))
            })
            .collect();
        Some(Op::Live {
            track: name.to_string(),
            snapshot: Snapshot {
                open_msn,
                open_parts: track.open.len() as u64,
                hold: std::time::Duration::from_secs(3 * u64::from(self.target_duration.max(1))),
                full,
                skip,
                parts,
                ended: track.playlist.is_ended(),
            },
        })
    }

    fn master(&mut self) -> Op {
        let audio = self.tracks.get(AUDIO_TRACK).and_then(|a| {
            a.codec
                .clone()
                .map(|c| (c, a.bitrate_bps.unwrap_or(128_000)))
        });
        let variants: Vec<Variant> = self
            .tracks
            .iter()
            .filter_map(|(name, t)| Some((name, t, t.info.as_ref()?)))
            .map(|(name, t, info)| {
                let video = t
                    .bitrate_bps
                    .unwrap_or(u64::from(info.bitrate_kbps.unwrap_or(1000)) * 1000);
                let measured = video + audio.as_ref().map_or(0, |a| a.1);
                let codecs = [t.codec.clone(), audio.as_ref().map(|a| a.0.clone())];
                Variant {
                    uri: format!("{name}/index.m3u8"),
                    bandwidth: measured * 5 / 4,
                    average_bandwidth: Some(measured),
                    width: info.width,
                    height: info.height,
                    frame_rate: info.frame_rate,
                    codecs: codecs.into_iter().flatten().collect::<Vec<_>>().join(","),
                }
            })
            .collect();
        self.master_written = true;
        let audio_uri = audio.map(|_| format!("{AUDIO_TRACK}/index.m3u8"));
        Op::playlist(
            "master.m3u8".into(),
            render_master_with_audio(&variants, audio_uri.as_deref()),
        )
    }

    fn manifest(&self, live: bool) -> Op {
        let Some(latest) = self.keys.values().next_back() else {
            return Op::Delete {
                name: dash::MANIFEST.into(),
            };
        };
        let listed: Vec<(&String, &Track)> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.codec.is_some() && t.init.is_some())
            .collect();
        // One period per key (one for all without rotation), over the fragments listed.
        let rotating = self.rotation > 0;
        let mut periods: Vec<u64> = listed
            .iter()
            .flat_map(|(_, t)| t.timeline.iter().map(|e| self.period(e.0)))
            .collect();
        periods.sort_unstable();
        periods.dedup();
        if !rotating || periods.is_empty() {
            periods = vec![periods.first().copied().unwrap_or(0)];
        }
        let in_period = |t: &Track, p: u64| -> Vec<Listed> {
            t.timeline
                .iter()
                .filter(|e| !rotating || self.period(e.0) == p)
                .copied()
                .collect()
        };
        // Each period's entries per track; then its start on the presentation timeline
        // (media time from the track's first fragment ever), read from a video track.
        let entries: Vec<Vec<Vec<Listed>>> = periods
            .iter()
            .map(|&p| listed.iter().map(|(_, t)| in_period(t, p)).collect())
            .collect();
        let timelines: Vec<Vec<Vec<(u64, u64)>>> = entries
            .iter()
            .map(|tracks| {
                tracks
                    .iter()
                    .map(|e| e.iter().map(|e| (e.1, e.2)).collect())
                    .collect()
            })
            .collect();
        let manifest_periods = periods
            .iter()
            .zip(entries.iter().zip(&timelines))
            .map(|(&p, (entries, timelines))| {
                let key = self.keys.get(&p).unwrap_or(latest);
                let start_s = if rotating {
                    listed
                        .iter()
                        .zip(entries)
                        .find(|((_, t), e)| t.info.is_some() && !e.is_empty())
                        .map_or(0.0, |((_, t), e)| {
                            e[0].1.saturating_sub(t.origin.unwrap_or(0)) as f64
                                / f64::from(t.timescale.max(1))
                        })
                } else {
                    0.0
                };
                let representations = listed
                    .iter()
                    .zip(entries.iter().zip(timelines))
                    .filter(|(_, (e, _))| !rotating || !e.is_empty())
                    .map(|((name, t), (e, timeline))| Representation {
                        id: name.as_str(),
                        content: match &t.info {
                            Some(i) => Content::Video {
                                width: i.width,
                                height: i.height,
                                frame_rate: i.frame_rate,
                            },
                            None => Content::Audio,
                        },
                        codec: t.codec.as_deref().unwrap_or_default(),
                        bandwidth: t.bitrate_bps.unwrap_or(1_000_000),
                        timescale: t.timescale,
                        init: match (rotating, e.last()) {
                            (true, Some(last)) => init_name(last.3),
                            _ => t
                                .init
                                .as_ref()
                                .map_or_else(|| init_name(0), |i| i.0.clone()),
                        },
                        start_number: e.first().map_or(0, |e| e.0),
                        timeline: timeline.as_slice(),
                        presentation_time_offset: t.origin.unwrap_or(0)
                            + (start_s * f64::from(t.timescale)).round() as u64,
                    })
                    .collect();
                dash::Period {
                    id: p,
                    start_s,
                    kid: key.protection.kid,
                    systems: key
                        .systems
                        .iter()
                        .map(|s| (crate::drm::speke::uuid(&s.system_id), s.pssh.clone()))
                        .collect(),
                    representations,
                }
            })
            .collect();
        let live = (live && !self.tracks.values().any(|t| t.playlist.is_ended()))
            .then_some(())
            .and(self.started_ms.zip(self.clock))
            .map(|(start, now)| Live {
                availability_start_ms: start,
                publish_ms: now(),
                time_shift_buffer_s: self
                    .window
                    .map_or(3600.0, |w| (w as f64) * f64::from(self.target_duration)),
            });
        let mpd = dash::render(&Manifest {
            live,
            max_segment_s: f64::from(self.target_duration),
            scheme: self.scheme,
            periods: manifest_periods,
            base_url: self.dash_base,
        });
        Op::Put {
            name: dash::MANIFEST.into(),
            body: Bytes::from(mpd),
            content_type: dash::MPD_TYPE,
        }
    }

    fn master_of_what_played(&mut self, ops: &mut Vec<Op>) {
        if !self.master_written && self.tracks.values().any(|t| t.codec.is_some()) {
            self.tracks.retain(|_, t| t.codec.is_some());
            ops.push(self.master());
        }
    }

    /// The publisher stopped: every playlist gets EXT-X-ENDLIST, the manifest turns static.
    pub fn end(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        self.master_of_what_played(&mut ops);
        for (name, t) in &mut self.tracks {
            t.playlist.end();
            ops.push(Op::playlist(
                format!("{name}/index.m3u8"),
                t.playlist.render(PlaylistKind::Live),
            ));
        }
        let names: Vec<String> = self.tracks.keys().cloned().collect();
        ops.extend(names.iter().filter_map(|n| self.live(n)));
        ops.push(self.manifest(false));
        ops
    }

    /// Every playlist as a finished VOD playlist, and a static manifest.
    pub fn vod_playlists(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        self.master_of_what_played(&mut ops);
        for (name, t) in &self.tracks {
            ops.push(Op::playlist(
                format!("{name}/index.m3u8"),
                t.playlist.render(PlaylistKind::Vod),
            ));
        }
        ops.push(self.manifest(false));
        ops
    }

    pub fn has_media(&self) -> bool {
        self.tracks
            .values()
            .any(|t| t.playlist.segments().next().is_some())
    }

    pub fn duration_ms(&self) -> Option<i64> {
        self.tracks
            .values()
            .map(|t| (t.total_s * 1000.0) as i64)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::cmaf::tests::{SEGMENT_S, SPS, STEP, segment};
    use crate::media::tsmux::TsMuxer;

    fn rendition(name: &str, height: u32) -> RenditionOut {
        RenditionOut {
            name: name.into(),
            width: height * 16 / 9,
            height,
            bitrate_kbps: Some(800),
            frame_rate: Some(23.4),
            passthrough: false,
        }
    }

    fn text(ops: &[Op], wanted: &str) -> String {
        ops.iter()
            .rev()
            .find_map(|op| match op {
                Op::Put { name, body, .. } if name == wanted => {
                    Some(String::from_utf8(body.to_vec()).unwrap())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {wanted}"))
    }

    fn put(ops: &[Op], wanted: &str) -> Bytes {
        ops.iter()
            .find_map(|op| match op {
                Op::Put { name, body, .. } if name == wanted => Some(body.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {wanted}"))
    }

    #[test]
    fn renditions_become_encrypted_cmaf_tracks_with_hls_and_dash_listings() {
        static NOW: std::sync::atomic::AtomicI64 =
            std::sync::atomic::AtomicI64::new(1_765_000_000_000);
        let mut state = CmafState::new(Scheme::Cbcs, Some(3), 2);
        state.stamp_program_date_time(|| NOW.fetch_add(1000, std::sync::atomic::Ordering::SeqCst));
        state.set_renditions(vec![rendition("480p", 480), rendition("360p", 360)]);
        assert_eq!(state.key_needed("480p"), Some(0));
        let kid = [7u8; 16];
        use base64::Engine;
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kid);
        state.add_key(0, id, [9; 16]);
        assert_eq!(state.key_needed("360p"), None);
        let (mut a, mut b) = (TsMuxer::new(true), TsMuxer::new(true));
        let mut all = Vec::new();
        for n in 0..7u64 {
            for (name, mux) in [("480p", &mut a), ("360p", &mut b)] {
                let ts = segment(mux, 900_000 + n * 25 * STEP, 25, &SPS);
                let ops = state
                    .add_segment(Segment {
                        rendition: name.into(),
                        duration_s: SEGMENT_S,
                        bytes: ts.into(),
                    })
                    .unwrap();
                all.extend(ops);
            }
        }
        let names: Vec<String> = all
            .iter()
            .map(|op| match op {
                Op::Put { name, .. } => format!("put {name}"),
                Op::Delete { name } => format!("delete {name}"),
                Op::Live { track, .. } => format!("live {track}"),
            })
            .collect();
        for want in [
            "put 480p/init.mp4",
            "put 480p/0.m4s",
            "put audio/init.mp4",
            "put audio/4.m4s",
            "put 360p/4.m4s",
            "delete 480p/0.m4s",
        ] {
            assert!(names.contains(&want.to_string()), "{want} in {names:?}");
        }
        // Audio comes from the first rendition only.
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("put audio/") && n.ends_with(".m4s"))
                .count(),
            7
        );

        let master = text(&all, "master.m3u8");
        assert!(
            master.contains("#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8\",GROUP-ID=\"audio\""),
            "{master}"
        );
        assert!(
            master.contains("CODECS=\"avc1.42c00d,mp4a.40.2\"")
                && master.contains("AUDIO=\"audio\""),
            "{master}"
        );
        let media = text(&all, "480p/index.m3u8");
        assert!(
            media.contains("#EXT-X-VERSION:6") && media.contains("#EXT-X-MAP:URI=\"init.mp4\""),
            "{media}"
        );
        let key_line = format!(
            "#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"data:text/plain;base64,{}\",KEYFORMAT=\"org.w3.clearkey\",KEYFORMATVERSIONS=\"1\"",
            base64::engine::general_purpose::STANDARD.encode(kid)
        );
        assert_eq!(media.matches("#EXT-X-KEY").count(), 1, "{media}");
        assert!(media.contains(&key_line), "{media}");
        assert!(
            media.contains("#EXT-X-MEDIA-SEQUENCE:4") && media.contains("6.m4s"),
            "{media}"
        );

        let mpd = text(&all, "manifest.mpd");
        assert!(
            mpd.contains("type=\"dynamic\"") && mpd.contains("startNumber=\"4\""),
            "{mpd}"
        );
        assert!(
            mpd.contains(&format!(
                "<S t=\"{}\" d=\"{}\" r=\"2\"/>",
                900_000 + 4 * 25 * STEP,
                25 * STEP
            )),
            "{mpd}"
        );
        assert!(
            mpd.contains("id=\"audio\"") && mpd.contains("cenc:default_KID=\"07070707-0707"),
            "{mpd}"
        );

        // The fragments are encrypted: the clear one comes back with the key.
        let init = put(&all, "360p/init.mp4");
        let protection = state.keys[&0].protection.clone();
        let info = {
            let clear_init = crate::media::cmaf::CmafRemuxer::new(false)
                .remux(&segment(&mut TsMuxer::new(true), 0, 25, &SPS), SEGMENT_S)
                .unwrap()
                .video
                .unwrap()
                .init
                .unwrap();
            let (again, info) = cenc::protect_init(&clear_init, &protection).unwrap();
            assert_eq!(again, init.to_vec(), "the init carries tenc and pssh");
            info
        };
        let fragment = put(&all, "360p/1.m4s");
        let clear = cenc::unprotect_segment(&fragment, &info, &protection).unwrap();
        assert_ne!(clear, fragment.to_vec());
        assert!(
            clear
                .windows(8)
                .any(|w| w == [0, 0, 0, 4, 0x65, 0x88, 0, 0x10]),
            "an IDR slice in clear"
        );

        let end = state.end();
        assert!(text(&end, "480p/index.m3u8").contains("#EXT-X-ENDLIST"));
        assert!(text(&end, "manifest.mpd").contains("type=\"static\""));
    }

    #[test]
    fn keys_rotate_every_period_with_new_init_segments_key_lines_and_dash_periods() {
        static NOW: std::sync::atomic::AtomicI64 =
            std::sync::atomic::AtomicI64::new(1_765_000_000_000);
        let mut state = CmafState::new(Scheme::Cbcs, None, 2);
        state.rotate_keys_every(2);
        state.low_latency();
        state.stamp_program_date_time(|| NOW.fetch_add(1000, std::sync::atomic::Ordering::SeqCst));
        state.set_renditions(vec![rendition("360p", 360)]);
        let mut mux = TsMuxer::new(true);
        let mut all = Vec::new();
        let mut asked = Vec::new();
        let kid = |period: u64| [period as u8 + 1; 16];
        for n in 0..5u64 {
            if let Some(period) = state.key_needed("360p") {
                use base64::Engine;
                asked.push(period);
                let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kid(period));
                state.add_key(period, id, [period as u8 + 10; 16]);
            }
            let ts = segment(&mut mux, 900_000 + n * 25 * STEP, 25, &SPS);
            all.extend(
                state
                    .add_segment(Segment {
                        rendition: "360p".into(),
                        duration_s: SEGMENT_S,
                        bytes: ts.into(),
                    })
                    .unwrap(),
            );
        }
        assert_eq!(asked, [0, 1, 2], "one key per two segments");
        for track in ["360p", "audio"] {
            for init in ["init.mp4", "init-1.mp4", "init-2.mp4"] {
                put(&all, &format!("{track}/{init}"));
            }
        }
        // HLS: the key and the init change where the period does.
        let media = text(&all, "360p/index.m3u8");
        let uri = |period: u64| {
            use base64::Engine;
            format!(
                "URI=\"data:text/plain;base64,{}\"",
                base64::engine::general_purpose::STANDARD.encode(kid(period))
            )
        };
        assert_eq!(media.matches("#EXT-X-KEY").count(), 3, "{media}");
        let at = |needle: &str| {
            media
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} in {media}"))
        };
        assert!(at(&uri(0)) < at("\n0.m4s") && at("\n1.m4s") < at(&uri(1)));
        let map = at("#EXT-X-MAP:URI=\"init-1.mp4\"");
        assert!(at("\n1.m4s") < map && map < at("\n2.m4s"), "{media}");
        assert!(at(&uri(1)) < at("\n2.m4s"), "{media}");
        assert!(at("\n3.m4s") < at(&uri(2)) && at(&uri(2)) < at("\n4.m4s"));
        // The LL-HLS playlist too.
        let live = all
            .iter()
            .filter_map(|op| match op {
                Op::Live { track, snapshot } if track == "360p" => Some(snapshot),
                _ => None,
            })
            .next_back()
            .unwrap();
        assert_eq!(live.full.matches("#EXT-X-KEY").count(), 3, "{}", live.full);
        assert!(
            live.full.contains("#EXT-X-MAP:URI=\"init-2.mp4\""),
            "{}",
            live.full
        );
        // DASH: a period per key, each with its key id and init segment.
        let mpd = text(&all, "manifest.mpd");
        for (period, init) in [(0, "init.mp4"), (1, "init-1.mp4"), (2, "init-2.mp4")] {
            assert!(mpd.contains(&format!("<Period id=\"{period}\"")), "{mpd}");
            assert!(
                mpd.contains(&format!(
                    "cenc:default_KID=\"{}",
                    dash::kid_uuid(&kid(period))
                )),
                "{mpd}"
            );
            assert!(
                mpd.contains(&format!("initialization=\"360p/{init}\"")),
                "{mpd}"
            );
        }
        assert!(
            mpd.contains("start=\"PT0.000S\"") && mpd.contains("startNumber=\"2\""),
            "{mpd}"
        );
        // Segment 2 decrypts with period 1's key and its init segment's track information.
        let protection = state.keys[&1].protection.clone();
        assert_eq!(protection.kid, kid(1));
        let (_, info) = cenc::protect_init(
            state.tracks["360p"].clear_init.as_ref().unwrap(),
            &protection,
        )
        .unwrap();
        let fragment = put(&all, "360p/2.m4s");
        let clear = cenc::unprotect_segment(&fragment, &info, &protection).unwrap();
        assert!(
            clear
                .windows(8)
                .any(|w| w == [0, 0, 0, 4, 0x65, 0x88, 0, 0x10]),
            "an IDR slice in clear"
        );
        // (These test samples are too short for cbcs to encrypt any block: the key id is
        // what tells the periods apart, in each init's `tenc` and `pssh`.)
        let init_1 = put(&all, "360p/init-1.mp4");
        let names = |bytes: &[u8], kid: [u8; 16]| bytes.windows(16).any(|w| w == kid);
        assert!(names(&init_1, kid(1)) && !names(&init_1, kid(0)));
        assert!(names(&put(&all, "360p/init.mp4"), kid(0)));
    }

    #[test]
    fn parts_become_encrypted_chunks_listed_live_and_the_segment_is_their_sum() {
        let mut state = CmafState::new(Scheme::Cbcs, Some(6), 2);
        state.low_latency();
        state.set_renditions(vec![rendition("360p", 360)]);
        state.add_key(0, "AAAAAAAAAAAAAAAAAAAAAA".into(), [3; 16]);
        let mut segmenter = crate::media::segmenter::TsSegmenter::new(2_000_000_000, 40_000_000)
            .with_parts(250_000_000);
        let ts = segment(&mut TsMuxer::new(true), 0, 25, &SPS);
        let next = segment(&mut TsMuxer::new(true), 25 * STEP, 1, &SPS);
        let mut ops = Vec::new();
        let mut done = None;
        // The segment's packets, stamped across 2.2 s; the next segment's first one cuts it.
        let n = (ts.len() / 188) as u64;
        for (i, packet) in ts.chunks(188).chain(next.chunks(188)).enumerate() {
            let i = i as u64;
            let pts = i * 2_200_000_000 / n;
            let cut = segmenter.push(packet, Some(pts), i == 0 || i == n);
            for part in segmenter.take_parts() {
                let part = Part {
                    rendition: "360p".into(),
                    bytes: part.bytes,
                    independent: part.independent,
                };
                ops.extend(state.add_part(part).unwrap());
            }
            if cut.is_some() && done.is_none() {
                done = cut;
            }
        }
        let seg = done.expect("the next keyframe cut the segment");
        let lives: Vec<&Snapshot> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Live { track, snapshot } if track == "360p" => Some(snapshot),
                _ => None,
            })
            .collect();
        assert!(
            lives.len() >= 3,
            "a live playlist per part: {}",
            lives.len()
        );
        let last = lives.last().unwrap();
        assert!(
            last.full.contains("#EXT-X-PART:DURATION=")
                && last.full.contains("URI=\"0.0.m4s\",INDEPENDENT=YES"),
            "{}",
            last.full
        );
        assert!(last.parts.contains_key("0.0.m4s"));
        let parts_before: Vec<Bytes> = (0..last.open_parts)
            .map(|i| last.parts[&format!("0.{i}.m4s")].clone())
            .collect();
        let ops = state
            .add_segment(Segment {
                rendition: "360p".into(),
                duration_s: seg.duration_s,
                bytes: seg.bytes,
            })
            .unwrap();
        let stored = put(&ops, "360p/0.m4s");
        assert_eq!(
            &stored[4..8],
            b"sidx",
            "several chunks: a segment index first"
        );
        let joined: Vec<u8> = parts_before
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect();
        assert!(
            stored.windows(joined.len()).any(|w| w == joined.as_slice()),
            "the segment holds the parts as served"
        );
        let after = ops.iter().find_map(|op| match op {
            Op::Live { track, snapshot } if track == "360p" => Some(snapshot),
            _ => None,
        });
        let after = after.unwrap();
        assert_eq!((after.open_msn, after.open_parts), (1, 0));
        assert!(
            after.full.contains("#EXTINF:")
                && after
                    .full
                    .contains("PRELOAD-HINT:TYPE=PART,URI=\"1.0.m4s\""),
            "{}",
            after.full
        );
    }
}
