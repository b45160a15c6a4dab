//! The passthrough-only broadcast: the publisher's H.264 and AAC re-wrapped as MPEG-TS
//! segments, in Rust, on the broadcast's own task (no GStreamer, no threads or tasks of its
//! own, no queue: each tag is muxed as the session hands it over, as nginx-rtmp does).
//!
//! Same contract as the GStreamer ladder: `Source` and `Renditions` once the first keyframe
//! arrives, then a `Segment` at every keyframe at least one segment duration after the last
//! cut, and on `finish` the last segment.

use super::PipelineEvent;
use crate::media::codec::{self, AacConfig, AvcConfig};
use crate::media::flv::{self, AudioTag, TagKind, VideoTag};
use crate::media::segmenter::TsSegmenter;
use crate::media::tsmux::{self, TsMuxer};
use crate::media::{Malformed, RenditionOut, SOURCE_RENDITION, Segment, SourceSummary};

/// FLV tags to segments: pure and synchronous, so it is tested without a runtime.
pub(crate) struct Muxing {
    segment_duration_s: u32,
    /// Parts of about this many ns too (LL-HLS).
    part_ns: Option<u64>,
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    /// What the audio is, as the ladder reports it ("aac", "mp3", …); None = none seen yet.
    audio_codec: Option<String>,
    /// Set at the first keyframe, when the program's streams are known.
    mux: Option<TsMuxer>,
    segmenter: Option<TsSegmenter>,
    /// Frames that could not be re-wrapped (logged once, then counted).
    bad_frames: u64,
}

impl Muxing {
    pub(crate) fn new(segment_duration_s: u32, part_ns: Option<u64>) -> Self {
        Self {
            segment_duration_s,
            part_ns,
            avc: None,
            aac: None,
            audio_codec: None,
            mux: None,
            segmenter: None,
            bad_frames: 0,
        }
    }

    /// Feeds one tag's body; appends the events it completes to `events`.
    pub(crate) fn push(
        &mut self,
        kind: TagKind,
        timestamp_ms: u32,
        body: &[u8],
        events: &mut Vec<PipelineEvent>,
    ) -> Result<(), Malformed> {
        match kind {
            TagKind::Video => self.video(timestamp_ms, body, events),
            TagKind::Audio => self.audio(timestamp_ms, body),
        }
    }

    /// End of input: the open segment, if it has a keyframe.
    pub(crate) fn finish(&mut self, events: &mut Vec<PipelineEvent>) {
        if let Some(segmenter) = self.segmenter.as_mut() {
            let seg = segmenter.finish();
            events.extend(parts(segmenter));
            events.extend(seg.map(segment));
        }
        if self.bad_frames > 0 {
            tracing::warn!(
                frames = self.bad_frames,
                "broadcast had malformed H.264 frames; they were left out"
            );
        }
    }

    fn video(
        &mut self,
        timestamp_ms: u32,
        body: &[u8],
        events: &mut Vec<PipelineEvent>,
    ) -> Result<(), Malformed> {
        let keyframe = match flv::video_tag(body) {
            VideoTag::AvcSequenceHeader(record) => {
                self.avc = Some(parse_avc_config_checked(record)?);
                return Ok(());
            }
            VideoTag::AvcFrame { keyframe } => keyframe,
            VideoTag::Unsupported(id) => {
                return Err(Malformed(format!(
                    "unsupported video codec {} (need H.264)",
                    flv::video_codec_name(id)
                )));
            }
            VideoTag::AvcEndOfSequence | VideoTag::Empty => return Ok(()),
        };
        if self.avc.is_none() {
            return Ok(()); // frames before the decoder configuration cannot be decoded
        }
        if self.mux.is_none() {
            if !keyframe {
                return Ok(()); // the first segment starts with a keyframe
            }
            self.begin(events)?;
        }
        // Composition time offset: signed 24 bits after the AVC packet type.
        let cts = body
            .get(2..5)
            .map(|b| (i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8) as i64)
            .unwrap_or(0);
        let frame = body.get(5..).unwrap_or(&[]);
        let avc = self.avc.as_ref().expect("checked above");
        let mut au = Vec::with_capacity(16);
        if let Err(e) = tsmux::annexb_parts(frame, avc, keyframe, &mut au) {
            if self.bad_frames == 0 {
                tracing::warn!(error = %e, timestamp_ms, "malformed H.264 frame left out");
            }
            self.bad_frames += 1;
            return Ok(());
        }
        let dts = tsmux::ts90(i64::from(timestamp_ms));
        let pts = tsmux::ts90(i64::from(timestamp_ms) + cts.max(0));
        let mux = self.mux.as_mut().expect("begun above");
        let segmenter = self.segmenter.as_mut().expect("begun with the muxer");
        let at = u64::from(timestamp_ms) * 1_000_000;
        let done = segmenter.append(at, keyframe, |out| {
            if keyframe {
                mux.tables(out);
            }
            mux.video(out, &au, dts, pts, keyframe);
        });
        events.extend(parts(segmenter));
        events.extend(done.map(segment));
        Ok(())
    }

    fn audio(&mut self, timestamp_ms: u32, body: &[u8]) -> Result<(), Malformed> {
        match flv::audio_tag(body) {
            AudioTag::AacSequenceHeader(asc) => {
                self.audio_codec = Some("aac".into());
                self.aac = Some(codec::parse_aac_config(asc)?);
            }
            AudioTag::AacFrame => {
                let (Some(cfg), Some(mux), Some(segmenter)) =
                    (&self.aac, self.mux.as_mut(), self.segmenter.as_mut())
                else {
                    return Ok(()); // before the first keyframe: the segment starts there
                };
                let frame = body.get(2..).unwrap_or(&[]);
                if frame.is_empty() || frame.len() + 7 >= 1 << 13 {
                    return Ok(()); // nothing to play, or more than ADTS can frame
                }
                let pts = tsmux::ts90(i64::from(timestamp_ms));
                // Audio never cuts a segment.
                let at = u64::from(timestamp_ms) * 1_000_000;
                let _ = segmenter.append(at, false, |out| mux.audio(out, cfg, frame, pts));
            }
            AudioTag::Mp3Frame => {
                self.audio_codec.get_or_insert_with(|| "mp3".into());
            }
            AudioTag::Unsupported(id) => {
                self.audio_codec
                    .get_or_insert_with(|| flv::audio_codec_name(id).to_lowercase());
            }
            AudioTag::Empty => {}
        }
        Ok(())
    }

    /// The first keyframe: the source's size is known and the program's streams are fixed
    /// (AAC announced by then is muxed; audio that only starts later is not, as in the ladder).
    fn begin(&mut self, events: &mut Vec<PipelineEvent>) -> Result<(), Malformed> {
        let avc = self.avc.as_ref().expect("checked by the caller");
        let sps =
            codec::parse_sps(&avc.sps[0]).ok_or("cannot read the H.264 sequence parameter set")?;
        let (n, d) = sps.fps.unwrap_or((30, 1));
        let fps = f64::from(n) / f64::from(d);
        let gop_frames = (fps * f64::from(self.segment_duration_s)).round().max(1.0) as u32;
        events.push(PipelineEvent::Source(SourceSummary {
            width: sps.width,
            height: sps.height,
            video_codec: "h264".into(),
            audio_codec: self.audio_codec.clone(),
            gop_frames,
        }));
        events.push(PipelineEvent::Renditions(vec![RenditionOut {
            name: SOURCE_RENDITION.into(),
            width: sps.width,
            height: sps.height,
            bitrate_kbps: None,
            frame_rate: sps.fps.map(|_| fps),
            passthrough: true,
        }]));
        self.mux = Some(TsMuxer::new(self.aac.is_some()));
        let segmenter = TsSegmenter::new(
            u64::from(self.segment_duration_s) * 1_000_000_000,
            (1e9 / fps) as u64,
        );
        self.segmenter = Some(match self.part_ns {
            Some(ns) => segmenter.with_parts(ns),
            None => segmenter,
        });
        Ok(())
    }
}

fn parse_avc_config_checked(record: &[u8]) -> Result<AvcConfig, Malformed> {
    let cfg = codec::parse_avc_config(record)?;
    codec::parse_sps(&cfg.sps[0]).ok_or("cannot read the H.264 sequence parameter set")?;
    Ok(cfg)
}

fn parts(segmenter: &mut TsSegmenter) -> impl Iterator<Item = PipelineEvent> {
    segmenter.take_parts().into_iter().map(|p| {
        PipelineEvent::Part(crate::media::Part {
            rendition: SOURCE_RENDITION.into(),
            bytes: p.bytes,
            independent: p.independent,
        })
    })
}

fn segment(seg: crate::media::segmenter::TsSegment) -> PipelineEvent {
    PipelineEvent::Segment(Segment {
        rendition: SOURCE_RENDITION.into(),
        duration_s: seg.duration_s,
        bytes: seg.bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::tests::hex;
    use crate::media::flv::{Reader, header, tag};
    use bytes::Bytes;

    /// Feeds every tag of an FLV byte stream, as the session hands them over.
    fn feed(m: &mut Muxing, flv: &[u8], events: &mut Vec<PipelineEvent>) -> Result<(), Malformed> {
        for t in Reader::default().push(flv)? {
            let kind = match t.kind {
                9 => TagKind::Video,
                8 => TagKind::Audio,
                _ => continue,
            };
            m.push(kind, t.timestamp_ms, &t.body, events)?;
        }
        Ok(())
    }

    /// avcC with the real 1280x720 x264 SPS and a PPS.
    fn avc_config() -> Vec<u8> {
        let sps = hex("6764001facd9405005bb0110000003001000000303c0f1831960");
        let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let mut r = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        r.extend_from_slice(&sps);
        r.push(1);
        r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        r.extend_from_slice(&pps);
        r
    }

    fn video(ts: u32, key: bool, cts: u32, nal: &[u8]) -> Bytes {
        let mut body = vec![if key { 0x17 } else { 0x27 }, 1];
        body.extend_from_slice(&cts.to_be_bytes()[1..]);
        body.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        body.extend_from_slice(nal);
        tag(TagKind::Video, ts, &body)
    }

    /// `seconds` of 30 fps video (keyframe every 2 s) and AAC every ~21 ms, as FLV bytes.
    fn broadcast(seconds: u32) -> Vec<u8> {
        let mut flv = header().to_vec();
        let mut seq = vec![0x17, 0, 0, 0, 0];
        seq.extend_from_slice(&avc_config());
        flv.extend_from_slice(&tag(TagKind::Video, 0, &seq));
        flv.extend_from_slice(&tag(TagKind::Audio, 0, &[0xaf, 0, 0x11, 0x90]));
        let mut audio_ms = 0;
        for f in 0..seconds * 30 {
            let ms = f * 1000 / 30;
            let key = f % 60 == 0;
            let nal: &[u8] = if key {
                &[0x65, 0x88, 1, 2]
            } else {
                &[0x41, 0x9a, 3]
            };
            flv.extend_from_slice(&video(ms, key, 66, nal));
            while audio_ms <= ms {
                flv.extend_from_slice(&tag(TagKind::Audio, audio_ms, &[0xaf, 1, 0x21, 0x10]));
                audio_ms += 21;
            }
        }
        flv
    }

    #[test]
    fn a_broadcast_becomes_keyframe_aligned_segments_of_the_target_length() {
        let mut m = Muxing::new(2, None);
        let mut events = Vec::new();
        feed(&mut m, &broadcast(9), &mut events).unwrap();
        m.finish(&mut events);
        let PipelineEvent::Source(s) = &events[0] else {
            panic!("{:?}", events[0])
        };
        assert_eq!((s.width, s.height, s.gop_frames), (1280, 720, 60));
        assert_eq!(s.audio_codec.as_deref(), Some("aac"));
        let PipelineEvent::Renditions(r) = &events[1] else {
            panic!("{:?}", events[1])
        };
        assert_eq!(r[0].frame_rate, Some(30.0));
        let segments: Vec<&Segment> = events
            .iter()
            .filter_map(|e| match e {
                PipelineEvent::Segment(s) => Some(s),
                _ => None,
            })
            .collect();
        let durations: Vec<f64> = segments.iter().map(|s| s.duration_s).collect();
        assert_eq!(durations.len(), 5, "{durations:?}");
        for d in &durations[..4] {
            assert!((d - 2.0).abs() < 0.01, "{durations:?}");
        }
        assert!((durations[4] - 1.0).abs() < 0.05, "{durations:?}");
        for s in segments {
            assert_eq!(s.bytes.len() % 188, 0);
            // Each segment opens with PAT, PMT and a random-access video packet.
            assert_eq!(&s.bytes[1..3], &[0x40, 0x00]);
            assert_eq!(&s.bytes[189..191], &[0x50, 0x00]);
            assert_eq!(&s.bytes[377..379], &[0x41, 0x00]);
            assert_eq!(s.bytes[381] & 0x40, 0x40);
            // ... and holds audio too.
            assert!(s.bytes.chunks(188).any(|p| p[1..3] == [0x41, 0x01]));
        }
    }

    #[test]
    fn frames_before_the_first_keyframe_are_skipped_and_bad_input_is_reported() {
        let mut m = Muxing::new(2, None);
        let mut events = Vec::new();
        let mut flv = header().to_vec();
        flv.extend_from_slice(&video(0, false, 0, &[0x41, 1])); // no configuration yet
        let mut seq = vec![0x17, 0, 0, 0, 0];
        seq.extend_from_slice(&avc_config());
        flv.extend_from_slice(&tag(TagKind::Video, 0, &seq));
        flv.extend_from_slice(&video(33, false, 0, &[0x41, 1])); // not a keyframe
        feed(&mut m, &flv, &mut events).unwrap();
        assert!(events.is_empty());
        // A frame whose NAL length runs past its end is left out; the broadcast goes on.
        let mut broken = vec![0x17, 1, 0, 0, 0, 0, 0, 0x10, 0];
        broken.push(0x65);
        m.push(TagKind::Video, 66, &broken, &mut events).unwrap();
        assert_eq!(m.bad_frames, 1);

        let mut vp6 = Muxing::new(2, None);
        let mut flv = header().to_vec();
        flv.extend_from_slice(&tag(TagKind::Video, 0, &[0x14, 0]));
        let err = feed(&mut vp6, &flv, &mut Vec::new()).unwrap_err();
        assert!(err.0.contains("VP6"), "{err}");
        let mut bad_config = Muxing::new(2, None);
        let mut flv = header().to_vec();
        flv.extend_from_slice(&tag(TagKind::Video, 0, &[0x17, 0, 0, 0, 0, 1, 2]));
        assert!(feed(&mut bad_config, &flv, &mut Vec::new()).is_err());
    }
}
