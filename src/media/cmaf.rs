//! MPEG-TS segments re-wrapped as CMAF: one video and one audio track, each its own init
//! segment and fragments, from the same frames (nothing decoded).
//!
//! Every engine here (the GStreamer ladder, the copy engine, WHIP, VOD transcodes) cuts
//! MPEG-TS segments at keyframes, so CMAF is made at the one place they all meet, the
//! packager: each segment is demuxed (`tsdemux`) and written as one fragment per track
//! (`fmp4`). H.264 goes from Annex B to length-prefixed NAL units (SPS and PPS move to the
//! init segment's `avcC`; a new SPS or PPS makes a new init segment); ADTS headers give the
//! AAC configuration and are dropped. Decode times continue across segments: 90 kHz
//! timestamps are unwrapped past their 33 bits, and after a reconnect ([`reopen`]) the new
//! encoder's clock is moved to go on where the last one stopped, so a DASH timeline has no
//! gap or overlap.
//!
//! [`reopen`]: CmafRemuxer::reopen

use super::Malformed;
use super::codec::{aac_codec_from_config, avc_codec_from_config, parse_sps};
use super::fmp4::{self, Sample, Track, TrackKind};
use super::tsdemux::{AAC_RATES, Pes, StreamKind, TsReader, adts_frames, annexb_nals};

const TS_CLOCK: u64 = 90_000;
const TS_WRAP: i64 = 1 << 33;
/// Samples of one AAC frame (AAC-LC; HE-AAC signals its doubled rate implicitly).
const AAC_FRAME: u64 = 1024;
/// Most samples in one fragment: far above any segment (10 s of 240 fps video is 2,400).
const MAX_SAMPLES: usize = 100_000;

/// One track's output for one segment.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackFragment {
    /// A new init segment, when the track starts or its configuration changed: use it for
    /// this fragment and those after it.
    pub init: Option<Vec<u8>>,
    /// `moof` + `mdat`.
    pub fragment: Vec<u8>,
    /// RFC 6381 codec string.
    pub codec: String,
    pub timescale: u32,
    /// Decode time of the first sample, in `timescale` units.
    pub base_time: u64,
    /// Sum of the samples' durations, in `timescale` units.
    pub duration: u64,
    /// It starts with a sync sample (a keyframe; any audio frame).
    pub independent: bool,
}

/// What one MPEG-TS segment became.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Remuxed {
    pub video: Option<TrackFragment>,
    pub audio: Option<TrackFragment>,
}

/// 33-bit timestamps on a 64-bit line, shifted by `offset`.
#[derive(Debug, Default, Clone, Copy)]
struct Clock {
    last: Option<(u64, i64)>,
}

impl Clock {
    fn unwrap(&mut self, raw: u64) -> i64 {
        let value = match self.last {
            None => raw as i64,
            Some((last_raw, last_value)) => {
                let diff = (raw as i64 - last_raw as i64).rem_euclid(TS_WRAP);
                let diff = if diff >= TS_WRAP / 2 {
                    diff - TS_WRAP
                } else {
                    diff
                };
                last_value + diff
            }
        };
        self.last = Some((raw, value));
        value
    }
}

/// One H.264 access unit, its NAL units length-prefixed.
#[derive(Debug)]
struct Au {
    /// Unwrapped decode and presentation times (90 kHz), before the reconnect offset.
    dts: i64,
    pts: i64,
    data: Vec<u8>,
    sync: bool,
    duration: u32,
}

#[derive(Debug, Default)]
struct VideoState {
    clock: Clock,
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// The parameter sets changed: the next fragment carries a new init segment.
    new_config: bool,
    /// The last access unit, whose duration the next one's decode time gives.
    held: Option<Au>,
    /// Access units with their durations, for the next fragment.
    ready: Vec<Au>,
    /// Decode time (90 kHz, shifted) of the open segment's first access unit.
    segment_start: Option<i64>,
    /// Decode time (90 kHz, shifted) the next fragment should start at.
    next: Option<i64>,
}

#[derive(Debug, Default)]
struct AudioState {
    clock: Clock,
    config: Option<[u8; 2]>,
    new_config: bool,
    /// Frames for the next fragment: (PTS, 90 kHz shifted; payload).
    frames: Vec<(i64, Vec<u8>)>,
    /// Decode time (in samples) the next fragment should start at.
    next: Option<u64>,
}

/// One rendition's CMAF writer. Feed it that rendition's transport stream in order, whole
/// segments ([`remux`](Self::remux)) or pieces of one ([`feed`](Self::feed), then
/// [`part`](Self::part) for a chunk of what is complete, and
/// [`segment_end`](Self::segment_end) for the rest).
#[derive(Default)]
pub struct CmafRemuxer {
    reader: TsReader,
    video: VideoState,
    audio: AudioState,
    sequence: u32,
    /// 90 kHz added to every timestamp (moved at a reconnect).
    offset: i64,
    rebase: bool,
    /// Audio is written only when asked (one rendition carries the audio of all).
    with_audio: bool,
}

impl CmafRemuxer {
    pub fn new(with_audio: bool) -> Self {
        Self {
            with_audio,
            ..Self::default()
        }
    }

    /// A new encoder follows (a publisher reconnected): its clock is moved to go on where
    /// this one stopped.
    pub fn reopen(&mut self) {
        self.rebase = true;
        self.reader = TsReader::default();
        self.video.clock = Clock::default();
        self.audio.clock = Clock::default();
    }

    /// One whole MPEG-TS segment of `duration_s` as a fragment per track.
    pub fn remux(&mut self, ts: &[u8], duration_s: f64) -> Result<Remuxed, Malformed> {
        self.feed(ts)?;
        self.segment_end(duration_s)
    }

    /// Reads a piece of the open segment's transport stream.
    pub fn feed(&mut self, ts: &[u8]) -> Result<(), Malformed> {
        let pes = self.reader.feed(ts)?;
        self.take(pes)
    }

    /// A chunk (a CMAF fragment) of what is complete so far: every access unit whose
    /// successor has begun, and every audio frame.
    pub fn part(&mut self) -> Result<Remuxed, Malformed> {
        Ok(Remuxed {
            video: self.video_fragment()?,
            audio: self.audio_fragment()?,
        })
    }

    /// The open segment ends `duration_s` after its first frame: the rest of it.
    pub fn segment_end(&mut self, duration_s: f64) -> Result<Remuxed, Malformed> {
        let pes = self.reader.flush()?;
        self.take(pes)?;
        if let Some(mut last) = self.video.held.take() {
            let dts = last.dts + self.offset;
            let start = self.video.segment_start.unwrap_or(dts);
            let end = start + (duration_s * TS_CLOCK as f64).round() as i64;
            // Until the segment's end; when that is not after it (a duration that does not
            // match the timestamps), as long as the frame before it.
            let before = self.video.ready.last().map_or(3000, |a| a.duration);
            last.duration = match u32::try_from(end - dts) {
                Ok(d) if d > 0 && d <= 10 * TS_CLOCK as u32 => d,
                _ => before,
            };
            self.video.ready.push(last);
        }
        self.video.segment_start = None;
        self.part()
    }

    fn take(&mut self, pes: Vec<Pes>) -> Result<(), Malformed> {
        for p in pes {
            match p.kind {
                StreamKind::H264 => {
                    let pts = p.pts.ok_or("H.264 access unit without a timestamp")?;
                    let raw_dts = p.dts.unwrap_or(pts);
                    let dts = self.video.clock.unwrap(raw_dts);
                    let pts = dts + (pts as i64 - raw_dts as i64).rem_euclid(TS_WRAP);
                    self.rebase_at(dts);
                    self.video_au(dts, pts, &p.data)?;
                }
                StreamKind::AacAdts if self.with_audio => {
                    let Some(pts) = p.pts else { continue };
                    let pts = self.audio.clock.unwrap(pts);
                    self.rebase_at(pts);
                    self.audio_frames(pts + self.offset, &p.data)?;
                }
                StreamKind::AacAdts => {}
            }
        }
        if self.video.ready.len() + self.audio.frames.len() > MAX_SAMPLES {
            return Err("too many frames in one fragment".into());
        }
        Ok(())
    }

    /// After a reconnect, the first timestamp of the new encoder goes where the last
    /// encoder's media ended.
    fn rebase_at(&mut self, first: i64) {
        if !std::mem::take(&mut self.rebase) {
            return;
        }
        let expected = self.video.next.or(self
            .audio
            .next
            .zip(self.audio.config)
            .map(|(n, c)| (n * TS_CLOCK / u64::from(aac_rate(c))) as i64));
        if let Some(expected) = expected {
            self.offset = expected - first;
        }
    }

    fn video_au(&mut self, dts: i64, pts: i64, annexb: &[u8]) -> Result<(), Malformed> {
        let mut data = Vec::with_capacity(annexb.len() + 16);
        let mut sync = false;
        for nal in annexb_nals(annexb) {
            match nal[0] & 0x1f {
                7 if nal != self.video.sps.as_slice() => {
                    self.video.sps = nal.to_vec();
                    self.video.new_config = true;
                }
                8 if nal != self.video.pps.as_slice() => {
                    self.video.pps = nal.to_vec();
                    self.video.new_config = true;
                }
                7..=9 => {}
                t => {
                    sync |= t == 5;
                    let len = u32::try_from(nal.len()).map_err(|_| "NAL unit over 4 GiB")?;
                    data.extend(len.to_be_bytes());
                    data.extend(nal);
                }
            }
        }
        if self.video.sps.is_empty() || self.video.pps.is_empty() {
            return Err("H.264 without an SPS and PPS before its first frame".into());
        }
        if let Some(mut held) = self.video.held.take() {
            held.duration = u32::try_from(dts - held.dts).unwrap_or(0);
            self.video.ready.push(held);
        }
        self.video.segment_start.get_or_insert(dts + self.offset);
        self.video.held = Some(Au {
            dts,
            pts,
            data,
            sync,
            duration: 0,
        });
        Ok(())
    }

    fn video_fragment(&mut self) -> Result<Option<TrackFragment>, Malformed> {
        if self.video.ready.is_empty() {
            return Ok(None);
        }
        let init = if std::mem::take(&mut self.video.new_config) {
            Some(self.video_init()?)
        } else {
            None
        };
        let aus = std::mem::take(&mut self.video.ready);
        let mut data = Vec::with_capacity(aus.iter().map(|a| a.data.len()).sum());
        let mut samples = Vec::with_capacity(aus.len());
        for au in &aus {
            data.extend(&au.data);
            samples.push(Sample {
                // A frame whose next one decodes no later (broken timestamps) lasts one tick.
                duration: au.duration.max(1),
                size: u32::try_from(au.data.len()).map_err(|_| "frame over 4 GiB")?,
                sync: au.sync,
                composition_offset: i32::try_from(au.pts - au.dts).unwrap_or(0),
            });
        }
        let first = aus[0].dts + self.offset;
        let independent = aus[0].sync;
        let base_time = u64::try_from(first).unwrap_or(0);
        let duration: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
        self.video.next = Some(first + duration as i64);
        self.sequence = self.sequence.wrapping_add(1);
        Ok(Some(TrackFragment {
            init,
            fragment: fmp4::fragment(self.sequence, base_time, &samples, &data),
            codec: avc_codec_from_config(&self.avcc()).unwrap_or_default(),
            timescale: TS_CLOCK as u32,
            base_time,
            duration,
            independent,
        }))
    }

    fn avcc(&self) -> Vec<u8> {
        let (sps, pps) = (&self.video.sps, &self.video.pps);
        let mut r = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        r.extend((sps.len() as u16).to_be_bytes());
        r.extend(sps);
        r.push(1);
        r.extend((pps.len() as u16).to_be_bytes());
        r.extend(pps);
        r
    }

    fn video_init(&self) -> Result<Vec<u8>, Malformed> {
        let sps = &self.video.sps;
        let info = parse_sps(sps).ok_or("an SPS that does not parse")?;
        if sps.len() < 4 || sps.len() > 0xffff || self.video.pps.len() > 0xffff {
            return Err("SPS or PPS of an impossible size".into());
        }
        Ok(fmp4::init_segment(&Track {
            timescale: TS_CLOCK as u32,
            kind: TrackKind::Avc {
                avcc: self.avcc(),
                width: u16::try_from(info.width).map_err(|_| "picture too wide")?,
                height: u16::try_from(info.height).map_err(|_| "picture too tall")?,
            },
        }))
    }

    fn audio_frames(&mut self, pts: i64, bytes: &[u8]) -> Result<(), Malformed> {
        for f in adts_frames(bytes)? {
            let asc = [
                (f.object_type << 3) | (f.frequency_index >> 1),
                ((f.frequency_index & 1) << 7) | (f.channels << 3),
            ];
            if self.audio.config != Some(asc) {
                if !self.audio.frames.is_empty() {
                    return Err("AAC configuration changed within a fragment".into());
                }
                self.audio.config = Some(asc);
                self.audio.new_config = true;
                self.audio.next = None;
            }
            self.audio.frames.push((pts, f.payload.to_vec()));
        }
        Ok(())
    }

    fn audio_fragment(&mut self) -> Result<Option<TrackFragment>, Malformed> {
        let (Some(asc), Some(first_pts)) =
            (self.audio.config, self.audio.frames.first().map(|f| f.0))
        else {
            return Ok(None);
        };
        let frames = std::mem::take(&mut self.audio.frames);
        let rate = aac_rate(asc);
        let init = std::mem::take(&mut self.audio.new_config).then(|| {
            fmp4::init_segment(&Track {
                timescale: rate,
                kind: TrackKind::Aac {
                    asc: asc.to_vec(),
                    sample_rate: rate,
                    channels: u16::from((asc[1] >> 3) & 0x0f),
                },
            })
        });
        // Frames follow each other exactly: a fragment that starts within half a frame of
        // where the last one ended continues it.
        let at = (u64::try_from(first_pts).unwrap_or(0)) * u64::from(rate) / TS_CLOCK;
        let base_time = match self.audio.next {
            Some(next) if next.abs_diff(at) <= AAC_FRAME / 2 => next,
            _ => at,
        };
        let samples: Vec<Sample> = frames
            .iter()
            .map(|(_, f)| Sample {
                duration: AAC_FRAME as u32,
                size: f.len() as u32,
                sync: true,
                composition_offset: 0,
            })
            .collect();
        let data: Vec<u8> = frames.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        let duration = frames.len() as u64 * AAC_FRAME;
        self.audio.next = Some(base_time + duration);
        self.sequence = self.sequence.wrapping_add(1);
        Ok(Some(TrackFragment {
            init,
            fragment: fmp4::fragment(self.sequence, base_time, &samples, &data),
            codec: aac_codec_from_config(&asc).unwrap_or_default(),
            timescale: rate,
            base_time,
            duration,
            independent: true,
        }))
    }
}

fn aac_rate(asc: [u8; 2]) -> u32 {
    let index = usize::from(((asc[0] & 0x07) << 1) | (asc[1] >> 7));
    AAC_RATES.get(index).copied().unwrap_or(48000)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::codec::AacConfig;
    use crate::media::tsmux::TsMuxer;

    // A real 320x240 baseline SPS and PPS (x264).
    pub(crate) const SPS: [u8; 24] = [
        0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0xa4, 0x80,
    ];
    const PPS: [u8; 5] = [0x68, 0xcb, 0x83, 0xcb, 0x20];

    /// 90 kHz ticks of one video frame (23.4 fps: two AAC frames of 48 kHz each).
    pub(crate) const STEP: u64 = 3840;
    /// 25 frames.
    pub(crate) const SEGMENT_S: f64 = (25 * STEP) as f64 / 90_000.0;

    pub(crate) fn segment(mux: &mut TsMuxer, start: u64, frames: u64, sps: &[u8]) -> Vec<u8> {
        let mut ts = Vec::new();
        mux.tables(&mut ts);
        let cfg = AacConfig {
            object_type: 2,
            frequency_index: 3,
            channels: 2,
        };
        for i in 0..frames {
            let t = (start + i * STEP) & ((1 << 33) - 1);
            let slice = [if i == 0 { 0x65 } else { 0x41 }, 0x88, i as u8, 0x10];
            let au: Vec<&[u8]> = if i == 0 {
                vec![
                    &[0, 0, 0, 1],
                    sps,
                    &[0, 0, 0, 1],
                    &PPS,
                    &[0, 0, 0, 1],
                    &slice,
                ]
            } else {
                vec![&[0, 0, 0, 1], &slice]
            };
            mux.video(&mut ts, &au, t, (t + STEP) & ((1 << 33) - 1), i == 0);
            // 48 kHz AAC: 1024 samples are 1920 ticks of 90 kHz, two to a frame.
            for k in 0..2 {
                let a = (start + i * STEP + k * 1920) & ((1 << 33) - 1);
                mux.audio(&mut ts, &cfg, &[0x21, i as u8, k as u8], a);
            }
        }
        ts
    }

    #[test]
    fn segments_become_one_fragment_per_track_continuing_each_other() {
        let mut mux = TsMuxer::new(true);
        let mut cmaf = CmafRemuxer::new(true);
        // Two segments of 25 frames; the second crosses the 33-bit wrap.
        let start = (1 << 33) - 25 * STEP - 1800;
        let a = cmaf
            .remux(&segment(&mut mux, start, 25, &SPS), SEGMENT_S)
            .unwrap();
        let b = cmaf
            .remux(&segment(&mut mux, start + 25 * STEP, 25, &SPS), SEGMENT_S)
            .unwrap();
        let (va, vb) = (a.video.unwrap(), b.video.unwrap());
        assert!(
            va.init.is_some() && vb.init.is_none(),
            "one init while the SPS stays"
        );
        assert_eq!(va.codec, "avc1.42c00d");
        assert_eq!(va.duration, 25 * STEP);
        assert_eq!(
            vb.base_time,
            va.base_time + va.duration,
            "past the 33-bit wrap"
        );
        let (aa, ab) = (a.audio.unwrap(), b.audio.unwrap());
        assert_eq!((aa.codec.as_str(), aa.timescale), ("mp4a.40.2", 48000));
        assert_eq!(aa.duration, 50 * 1024);
        assert_eq!(ab.base_time, aa.base_time + aa.duration);
        // Length-prefixed slices, no SPS/PPS/AUD left in the samples.
        let f = &va.fragment;
        let mdat = f.windows(4).position(|w| w == b"mdat").unwrap() + 4;
        assert_eq!(&f[mdat..mdat + 8], [0, 0, 0, 4, 0x65, 0x88, 0, 0x10]);
    }

    #[test]
    fn a_reconnect_goes_on_where_the_last_encoder_stopped_and_a_new_sps_makes_a_new_init() {
        let mut mux = TsMuxer::new(true);
        let mut cmaf = CmafRemuxer::new(false);
        let a = cmaf
            .remux(&segment(&mut mux, 900_000, 25, &SPS), SEGMENT_S)
            .unwrap()
            .video
            .unwrap();
        cmaf.reopen();
        let mut other = SPS;
        other[3] = 0x1e;
        let b = cmaf
            .remux(&segment(&mut TsMuxer::new(true), 0, 25, &other), SEGMENT_S)
            .unwrap();
        assert!(b.audio.is_none(), "audio only where asked");
        let b = b.video.unwrap();
        assert!(b.init.is_some());
        assert_eq!(b.codec, "avc1.42c01e");
        assert_eq!(b.base_time, a.base_time + a.duration);
    }

    /// The mdat payload and the base time of each fragment in `bytes` (moof + mdat pairs).
    fn payloads(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if &bytes[at + 4..at + 8] == b"mdat" {
                out.extend(&bytes[at + 8..at + size]);
            }
            at += size;
        }
        out
    }

    #[test]
    fn a_segment_fed_in_pieces_comes_out_as_chunks_of_the_same_samples() {
        let ts = segment(&mut TsMuxer::new(true), 900_000, 25, &SPS);
        let whole = CmafRemuxer::new(true).remux(&ts, SEGMENT_S).unwrap();
        let mut cmaf = CmafRemuxer::new(true);
        let (mut video, mut audio, mut chunks) = (Vec::new(), Vec::new(), 0);
        let (mut video_time, mut audio_time) = (0, 0);
        for piece in ts.chunks(188 * 9) {
            cmaf.feed(piece).unwrap();
            let r = cmaf.part().unwrap();
            for (track, out, time) in [
                (r.video, &mut video, &mut video_time),
                (r.audio, &mut audio, &mut audio_time),
            ] {
                if let Some(t) = track {
                    chunks += 1;
                    if *time > 0 {
                        assert_eq!(t.base_time, *time, "each chunk starts where the last ended");
                    }
                    *time = t.base_time + t.duration;
                    out.extend(t.fragment);
                }
            }
        }
        let last = cmaf.segment_end(SEGMENT_S).unwrap();
        // Audio frames are whole as they come (their PES packets have a length): none is left.
        let v = last.video.unwrap();
        assert_eq!(v.base_time, video_time);
        video.extend(v.fragment);
        if let Some(a) = last.audio {
            audio.extend(a.fragment);
        }
        assert!(chunks > 10, "{chunks} chunks");
        let (wv, wa) = (whole.video.unwrap(), whole.audio.unwrap());
        assert_eq!(payloads(&video), payloads(&wv.fragment));
        assert_eq!(payloads(&audio), payloads(&wa.fragment));
        assert_eq!(
            v.base_time + v.duration,
            wv.base_time + wv.duration,
            "the same end"
        );
    }

    #[test]
    fn broken_segments_are_refused_without_panicking() {
        let mut mux = TsMuxer::new(true);
        let ts = segment(&mut mux, 0, 5, &SPS);
        for cut in (0..ts.len()).step_by(61) {
            let _ = CmafRemuxer::new(true).remux(&ts[..cut], 1.0);
        }
        let mut no_sps = TsMuxer::new(false);
        let mut ts = Vec::new();
        no_sps.tables(&mut ts);
        no_sps.video(&mut ts, &[&[0, 0, 0, 1], &[0x41, 1, 2]], 0, 0, false);
        assert!(CmafRemuxer::new(true).remux(&ts, 1.0).is_err());
    }

    /// What ffmpeg decodes from a file, frame by frame (`-f framemd5`, hashes only).
    fn decoded(path: &std::path::Path, stream: &str) -> Vec<String> {
        let out = std::process::Command::new("ffmpeg")
            .args(["-loglevel", "error", "-i"])
            .arg(path)
            .args(["-map", stream, "-f", "framemd5", "-"])
            .output()
            .expect("ffmpeg runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit(',').next().unwrap().trim().to_string())
            .collect()
    }

    #[test]
    fn ffmpeg_decodes_the_same_frames_from_the_cmaf_tracks_as_from_the_transport_stream() {
        let dir = tempfile::tempdir().unwrap();
        let ts_path = dir.path().join("in.ts");
        let made = std::process::Command::new("ffmpeg")
            .args([
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "2",
            ])
            .args([
                "-c:v", "libx264", "-g", "50", "-bf", "2", "-c:a", "aac", "-f", "mpegts",
            ])
            .arg(&ts_path)
            .status()
            .expect("ffmpeg runs");
        assert!(made.success());
        let ts = std::fs::read(&ts_path).unwrap();
        let out = CmafRemuxer::new(true).remux(&ts, 2.0).unwrap();
        for (track, name, stream) in [(out.video, "v.mp4", "0:v"), (out.audio, "a.mp4", "0:a")] {
            let track = track.unwrap();
            let path = dir.path().join(name);
            std::fs::write(&path, [track.init.unwrap(), track.fragment].concat()).unwrap();
            let (want, got) = (decoded(&ts_path, stream), decoded(&path, "0"));
            assert!(want.len() >= 50, "{name}: {} frames", want.len());
            assert_eq!(got, want, "{name}");
        }
    }
}
