//! The plan of a transcode: which renditions to encode from this source (the preset's rungs
//! by short side, never upscaled), whether to copy the source, where the MP4 download comes
//! from, and the frame rate and GOP. Pure: unit-tested without GStreamer.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::media::{RenditionOut, SOURCE_RENDITION, Segment};
use crate::pipeline::ladder::{self, Rendition, Tuning};

/// Which H.264 stream the MP4 download is muxed from.
#[derive(Clone, Debug, PartialEq)]
pub enum Mp4Source {
    /// The largest encoded rendition (tee after its encoder: no extra encode).
    Largest,
    /// A rendition by name ([`SOURCE_RENDITION`] = the passthrough copy, no encode at all).
    /// A name that is not produced for this source (dropped: no upscaling) falls back to
    /// [`Mp4Source::Largest`].
    Rendition(String),
    /// A dedicated encode with its own size/bitrate (planned like a rung: never upscaled).
    Own(Rendition),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mp4Spec {
    pub source: Mp4Source,
    /// Directory for the MP4 (and mp4mux's faststart scratch file); default: the system temp
    /// directory. The file is handed over in [`VodEvent::Mp4`]; the receiver owns it.
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct TranscodeSpec {
    /// Ladder rungs, as for the live pipeline (`ladder::plan`: by short side, no upscale).
    /// When no rung fits (tiny source) the smallest rung is produced at the source size.
    pub renditions: Vec<Rendition>,
    pub segment_duration_s: u32,
    /// Copy the source video as rendition [`SOURCE_RENDITION`] when it is H.264 (not when it
    /// carries a rotation tag: MPEG-TS cannot express it). Audio is the common AAC encode.
    pub passthrough_h264: bool,
    pub mp4: Option<Mp4Spec>,
    pub poster_at_s: Option<f64>,
    /// Scrubbing-preview sprite from the transcode's own frames ([`VodEvent::Storyboard`]).
    pub storyboard: Option<StoryboardSpec>,
    pub audio_bitrate_kbps: u32,
    /// Same levers as the live ladder; `zerolatency` is off by default for VOD.
    pub tuning: Tuning,
    pub probe_timeout: Duration,
}

impl TranscodeSpec {
    pub fn new(renditions: Vec<Rendition>, segment_duration_s: u32) -> Self {
        TranscodeSpec {
            renditions,
            segment_duration_s,
            passthrough_h264: false,
            mp4: None,
            poster_at_s: None,
            storyboard: None,
            audio_bitrate_kbps: 128,
            tuning: Tuning {
                // VOD has no latency budget: let x264 use its lookahead/mbtree (better quality
                // per bit); the GOP stays fixed so segments still line up across renditions.
                zerolatency: false,
                ..Tuning::default()
            },
            probe_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug)]
pub enum VodEvent {
    /// 0..1 by position / duration; non-decreasing.
    Progress {
        fraction: f64,
    },
    /// What will be produced, in order (passthrough first), with real sizes. Sent once, before
    /// any segment. Audio-only inputs: one rendition named [`AUDIO_RENDITION`], size 0x0.
    Renditions(Vec<RenditionOut>),
    /// In order per rendition (renditions interleave).
    Segment(Segment),
    /// Finished faststart MP4; the receiver owns (moves/deletes) the file.
    Mp4(PathBuf),
    Poster(bytes::Bytes),
    /// The scrubbing-preview sprite, after the last segment (when [`TranscodeSpec::storyboard`]
    /// asked and the input has video).
    Storyboard(Storyboard),
    /// Non-fatal: e.g. the poster could not be made, or no MP4 for an audio-only input.
    Warning(String),
    /// Terminal, success.
    Done,
    /// Terminal, failure (also sent for cancellation: "cancelled").
    Error(String),
}

// ---------------------------------------------------------------------------------------------
// transcode: plan

pub(super) struct Encode {
    pub(super) r: Rendition,
    pub(super) hls: bool,
    pub(super) mp4: bool,
}

pub(super) struct Plan {
    pub(super) outputs: Vec<Rendition>,
    /// Video encodes, largest first (scaling chain order).
    pub(super) encodes: Vec<Encode>,
    pub(super) passthrough: bool,
    pub(super) mp4_from_source: bool,
    pub(super) audio: bool,
    pub(super) video: bool,
    pub(super) size: (u32, u32),
    pub(super) fps: (i32, i32),
    pub(super) gop: u32,
}

/// Nominal fraction for a probed average rate: NTSC rates become n*1000/1001, others are
/// rounded to an integer; unknown -> 30; capped at [`MAX_FPS`].
pub(super) fn fps_fraction(fps: Option<f64>) -> (i32, i32) {
    let f = fps.filter(|f| f.is_finite() && *f >= 1.0).unwrap_or(30.0);
    if f > MAX_FPS {
        return (MAX_FPS as i32, 1);
    }
    let ntsc = (f * 1.001).round();
    if (f - ntsc / 1.001).abs() < 0.005 && (f - f.round()).abs() > 0.005 {
        return (ntsc as i32 * 1000, 1001);
    }
    (f.round().max(1.0) as i32, 1)
}

pub(super) fn make_plan(probe: &Probe, spec: &TranscodeSpec) -> Result<Plan, VodError> {
    let audio = probe.audio.is_some();
    let Some(v) = &probe.video else {
        return Ok(Plan {
            outputs: vec![Rendition {
                name: AUDIO_RENDITION.into(),
                width: 0,
                height: 0,
                video_bitrate_kbps: 0,
                profile: String::new(),
                x264_preset: String::new(),
            }],
            encodes: Vec::new(),
            passthrough: false,
            mp4_from_source: false,
            audio,
            video: false,
            size: (0, 0),
            fps: (30, 1),
            gop: 1,
        });
    };
    let (w, h) = ((v.width & !1).max(2), (v.height & !1).max(2));
    let lspec = ladder::LadderSpec::new(false, spec.renditions.clone(), spec.segment_duration_s);
    let mut planned = ladder::plan(&lspec, w, h);
    if planned.is_empty() {
        let smallest = spec
            .renditions
            .iter()
            .min_by_key(|r| r.width.min(r.height))
            .ok_or("no renditions in the spec")?;
        planned.push(Rendition {
            width: w,
            height: h,
            ..smallest.clone()
        });
    }
    let passthrough = spec.passthrough_h264 && v.codec == "h264" && v.rotation == 0;
    let fps = fps_fraction(v.fps);
    let gop = ((fps.0 as f64 / fps.1 as f64) * spec.segment_duration_s as f64)
        .round()
        .max(1.0) as u32;

    let mut encodes: Vec<Encode> = planned
        .iter()
        .map(|r| Encode {
            r: r.clone(),
            hls: true,
            mp4: false,
        })
        .collect();
    encodes.sort_by_key(|e| std::cmp::Reverse(e.r.width as u64 * e.r.height as u64));
    let mut mp4_from_source = false;
    if let Some(m) = &spec.mp4 {
        match &m.source {
            Mp4Source::Rendition(n) if n == SOURCE_RENDITION && passthrough => {
                mp4_from_source = true
            }
            Mp4Source::Rendition(n) if encodes.iter().any(|e| &e.r.name == n) => {
                encodes.iter_mut().find(|e| &e.r.name == n).unwrap().mp4 = true
            }
            Mp4Source::Own(r) => {
                let own = ladder::plan(
                    &ladder::LadderSpec::new(false, vec![r.clone()], spec.segment_duration_s),
                    w,
                    h,
                )
                .pop()
                .unwrap_or(Rendition {
                    width: w,
                    height: h,
                    ..r.clone()
                });
                encodes.push(Encode {
                    r: own,
                    hls: false,
                    mp4: true,
                });
                encodes.sort_by_key(|e| std::cmp::Reverse(e.r.width as u64 * e.r.height as u64));
            }
            _ => encodes[0].mp4 = true,
        }
    }
    let mut outputs = Vec::new();
    if passthrough {
        outputs.push(Rendition {
            name: SOURCE_RENDITION.into(),
            width: w,
            height: h,
            video_bitrate_kbps: 0,
            profile: String::new(),
            x264_preset: String::new(),
        });
    }
    outputs.extend(planned);
    Ok(Plan {
        outputs,
        encodes,
        passthrough,
        mp4_from_source,
        audio,
        video: true,
        size: (w, h),
        fps,
        gop,
    })
}

pub(super) fn validate(spec: &TranscodeSpec) -> Result<(), VodError> {
    let l = ladder::LadderSpec::new(false, spec.renditions.clone(), spec.segment_duration_s);
    ladder::validate(&l).map_err(|e| e.to_string())?;
    if spec.renditions.iter().any(|r| r.name == AUDIO_RENDITION) {
        return Err(VodError::Failed(format!(
            "rendition name {AUDIO_RENDITION:?} is reserved"
        )));
    }
    if let Some(Mp4Spec {
        source: Mp4Source::Own(r),
        ..
    }) = &spec.mp4
    {
        let l = ladder::LadderSpec::new(false, vec![r.clone()], spec.segment_duration_s);
        ladder::validate(&l).map_err(|e| format!("mp4: {e}"))?;
    }
    if spec.audio_bitrate_kbps == 0 {
        return Err("audio bitrate 0".into());
    }
    if let Some(sb) = &spec.storyboard {
        sb.check()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_fractions() {
        assert_eq!(fps_fraction(Some(30.0)), (30, 1));
        assert_eq!(fps_fraction(Some(29.97002997)), (30000, 1001));
        assert_eq!(fps_fraction(Some(23.976)), (24000, 1001));
        assert_eq!(fps_fraction(Some(25.0)), (25, 1));
        assert_eq!(fps_fraction(Some(240.0)), (60, 1));
        assert_eq!(fps_fraction(None), (30, 1));
        assert_eq!(fps_fraction(Some(0.0)), (30, 1));
    }

    fn rung(name: &str, w: u32, h: u32) -> Rendition {
        Rendition {
            name: name.into(),
            width: w,
            height: h,
            video_bitrate_kbps: 1000,
            profile: "main".into(),
            x264_preset: "veryfast".into(),
        }
    }

    fn probe_v(codec: &str, w: u32, h: u32, rotation: u32) -> Probe {
        Probe {
            duration_s: 10.0,
            video: Some(VideoInfo {
                codec: codec.into(),
                width: w,
                height: h,
                fps: Some(29.97),
                rotation,
            }),
            audio: None,
            container: "mp4".into(),
        }
    }

    fn names(p: &Plan) -> Vec<(&str, u32, u32, bool, bool)> {
        p.encodes
            .iter()
            .map(|e| (e.r.name.as_str(), e.r.width, e.r.height, e.hls, e.mp4))
            .collect()
    }

    #[test]
    fn plans() {
        let mut spec = TranscodeSpec::new(vec![rung("480p", 854, 480), rung("720p", 1280, 720)], 2);
        spec.passthrough_h264 = true;
        spec.mp4 = Some(Mp4Spec {
            source: Mp4Source::Rendition("1080p".into()), // not produced: falls back to largest
            dir: None,
        });
        let p = make_plan(&probe_v("h264", 1280, 720, 0), &spec).unwrap();
        assert_eq!((p.fps, p.gop, p.passthrough), ((30000, 1001), 60, true));
        assert_eq!(
            names(&p),
            [
                ("720p", 1280, 720, true, true),
                ("480p", 854, 480, true, false)
            ]
        );
        let out: Vec<&str> = p.outputs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(out, ["source", "480p", "720p"]); // passthrough first, then spec order
        // rotated: no passthrough; tiny source: smallest rung at source size
        let p = make_plan(&probe_v("h264", 201, 301, 90), &spec).unwrap();
        assert!(!p.passthrough);
        assert_eq!(names(&p), [("480p", 200, 300, true, true)]);
        // own MP4 rendition: extra encode, never upscaled, in chain order
        spec.mp4.as_mut().unwrap().source = Mp4Source::Own(rung("dl", 1920, 1080));
        let p = make_plan(&probe_v("vp9", 1280, 720, 0), &spec).unwrap();
        assert_eq!(
            names(&p),
            [
                ("720p", 1280, 720, true, false),
                ("dl", 1280, 720, false, true),
                ("480p", 854, 480, true, false)
            ]
        );
        // audio only
        let a = Probe {
            video: None,
            audio: Some(AudioInfo {
                codec: "mp3".into(),
                channels: 2,
                rate: 44100,
            }),
            ..probe_v("h264", 1, 1, 0)
        };
        let p = make_plan(&a, &spec).unwrap();
        assert!(p.encodes.is_empty() && p.audio && !p.video);
        assert_eq!(p.outputs[0].name, AUDIO_RENDITION);
    }
}
