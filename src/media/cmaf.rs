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
use super::tsdemux::{AAC_RATES, StreamKind, adts_frames, annexb_nals, demux};

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

#[derive(Debug, Default)]
struct VideoState {
    clock: Clock,
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// Decode time (90 kHz, shifted) the next fragment should start at.
    next: Option<i64>,
}

#[derive(Debug, Default)]
struct AudioState {
    clock: Clock,
    config: Option<[u8; 2]>,
    /// Decode time (in samples) the next fragment should start at.
    next: Option<u64>,
}

/// One rendition's CMAF writer. Feed it that rendition's segments in order.
#[derive(Debug, Default)]
pub struct CmafRemuxer {
    video: VideoState,
    audio: AudioState,
    sequence: u32,
    /// 90 kHz added to every timestamp (moved at a reconnect).
    offset: i64,
    rebase: bool,
    /// Audio is written only when asked (one rendition carries the audio of all).
    pub with_audio: bool,
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
        self.video.clock = Clock::default();
        self.audio.clock = Clock::default();
    }

    /// One MPEG-TS segment of `duration_s` as a fragment per track.
    pub fn remux(&mut self, ts: &[u8], duration_s: f64) -> Result<Remuxed, Malformed> {
        let pes = demux(ts)?;
        self.sequence = self.sequence.wrapping_add(1);
        let mut video_aus = Vec::new();
        let mut audio_pes = Vec::new();
        for p in pes {
            match p.kind {
                StreamKind::H264 => {
                    let pts = p.pts.ok_or("H.264 access unit without a timestamp")?;
                    let dts = self.video.clock.unwrap(p.dts.unwrap_or(pts));
                    let pts = dts + (pts as i64 - p.dts.unwrap_or(pts) as i64).rem_euclid(TS_WRAP);
                    video_aus.push((dts, pts, p.data));
                }
                StreamKind::AacAdts if self.with_audio => {
                    let Some(pts) = p.pts else { continue };
                    audio_pes.push((self.audio.clock.unwrap(pts), p.data));
                }
                StreamKind::AacAdts => {}
            }
            if video_aus.len() + audio_pes.len() > MAX_SAMPLES {
                return Err("too many frames in one segment".into());
            }
        }
        if self.rebase {
            self.rebase = false;
            let first = video_aus
                .first()
                .map(|a| a.0)
                .or(audio_pes.first().map(|a| a.0));
            let expected = self.video.next.or(self
                .audio
                .next
                .zip(self.audio.config)
                .map(|(n, c)| (n * TS_CLOCK / u64::from(aac_rate(c))) as i64));
            if let (Some(first), Some(expected)) = (first, expected) {
                self.offset = expected - first;
            }
        }
        let video = self.video_fragment(&video_aus, duration_s)?;
        let audio = self.audio_fragment(&audio_pes)?;
        Ok(Remuxed { video, audio })
    }

    fn video_fragment(
        &mut self,
        aus: &[(i64, i64, Vec<u8>)],
        duration_s: f64,
    ) -> Result<Option<TrackFragment>, Malformed> {
        if aus.is_empty() {
            return Ok(None);
        }
        let mut data = Vec::with_capacity(aus.iter().map(|a| a.2.len() + 16).sum());
        let mut samples = Vec::with_capacity(aus.len());
        let (mut sps, mut pps) = (None, None);
        for (_, _, au) in aus {
            let start = data.len();
            let mut sync = false;
            for nal in annexb_nals(au) {
                match nal[0] & 0x1f {
                    7 => sps = sps.or(Some(nal)),
                    8 => pps = pps.or(Some(nal)),
                    9 => {}
                    t => {
                        sync |= t == 5;
                        let len = u32::try_from(nal.len()).map_err(|_| "NAL unit over 4 GiB")?;
                        data.extend(len.to_be_bytes());
                        data.extend(nal);
                    }
                }
            }
            let size = u32::try_from(data.len() - start).map_err(|_| "frame over 4 GiB")?;
            samples.push(Sample {
                duration: 0,
                size,
                sync,
                composition_offset: 0,
            });
        }
        let mut init = None;
        if let (Some(sps), Some(pps)) = (sps, pps)
            && (sps != self.video.sps || pps != self.video.pps)
        {
            self.video.sps = sps.to_vec();
            self.video.pps = pps.to_vec();
            init = Some(self.video_init()?);
        }
        if self.video.sps.is_empty() {
            return Err("H.264 without an SPS and PPS before its first frame".into());
        }
        let shifted = |t: i64| t + self.offset;
        let first = shifted(aus[0].0);
        let end = first + (duration_s * TS_CLOCK as f64).round() as i64;
        for (i, s) in samples.iter_mut().enumerate() {
            let dts = shifted(aus[i].0);
            let next = aus.get(i + 1).map_or(end, |a| shifted(a.0));
            s.duration = u32::try_from(next - dts).unwrap_or(0);
            s.composition_offset = i32::try_from(aus[i].1 - aus[i].0).unwrap_or(0);
        }
        // The last frame lasts until the segment's end; when that is not after it (a
        // duration that does not match the timestamps), as long as the frame before it.
        let n = samples.len();
        if samples[n - 1].duration == 0 || samples[n - 1].duration > 10 * TS_CLOCK as u32 {
            samples[n - 1].duration = if n > 1 { samples[n - 2].duration } else { 3000 };
        }
        let base_time = u64::try_from(first).unwrap_or(0);
        let duration: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
        self.video.next = Some(first + duration as i64);
        Ok(Some(TrackFragment {
            init,
            fragment: fmp4::fragment(self.sequence, base_time, &samples, &data),
            codec: avc_codec_from_config(&self.avcc()).unwrap_or_default(),
            timescale: TS_CLOCK as u32,
            base_time,
            duration,
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

    fn audio_fragment(
        &mut self,
        pes: &[(i64, Vec<u8>)],
    ) -> Result<Option<TrackFragment>, Malformed> {
        let mut data = Vec::new();
        let mut count = 0usize;
        let mut first_pts = None;
        let mut config = None;
        for (pts, bytes) in pes {
            for f in adts_frames(bytes)? {
                let asc = [
                    (f.object_type << 3) | (f.frequency_index >> 1),
                    ((f.frequency_index & 1) << 7) | (f.channels << 3),
                ];
                if config.is_some_and(|c| c != asc) {
                    return Err("AAC configuration changed within a segment".into());
                }
                config = Some(asc);
                first_pts = first_pts.or(Some(*pts + self.offset));
                data.extend(f.payload);
                count += 1;
            }
        }
        let (Some(asc), Some(first_pts)) = (config, first_pts) else {
            return Ok(None);
        };
        let rate = aac_rate(asc);
        let mut init = None;
        if self.audio.config != Some(asc) {
            self.audio.config = Some(asc);
            self.audio.next = None;
            init = Some(fmp4::init_segment(&Track {
                timescale: rate,
                kind: TrackKind::Aac {
                    asc: asc.to_vec(),
                    sample_rate: rate,
                    channels: u16::from((asc[1] >> 3) & 0x0f),
                },
            }));
        }
        // Frames follow each other exactly: a fragment that starts within half a frame of
        // where the last one ended continues it.
        let at = (u64::try_from(first_pts).unwrap_or(0)) * u64::from(rate) / TS_CLOCK;
        let base_time = match self.audio.next {
            Some(next) if next.abs_diff(at) <= AAC_FRAME / 2 => next,
            _ => at,
        };
        let mut samples = Vec::with_capacity(count);
        let mut offset = 0usize;
        for (_, bytes) in pes {
            for f in adts_frames(bytes)? {
                samples.push(Sample {
                    duration: AAC_FRAME as u32,
                    size: f.payload.len() as u32,
                    sync: true,
                    composition_offset: 0,
                });
                offset += f.payload.len();
            }
        }
        debug_assert_eq!(offset, data.len());
        let duration = count as u64 * AAC_FRAME;
        self.audio.next = Some(base_time + duration);
        Ok(Some(TrackFragment {
            init,
            fragment: fmp4::fragment(self.sequence, base_time, &samples, &data),
            codec: aac_codec_from_config(&asc).unwrap_or_default(),
            timescale: rate,
            base_time,
            duration,
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
