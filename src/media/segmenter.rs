//! Cuts one continuous MPEG-TS stream (mpegtsmux output) into HLS segments at keyframes.
//!
//! Pure logic over bytes, so it is unit-tested without GStreamer. The live ladder feeds it
//! every buffer leaving a rendition's `mpegtsmux`; mpegtsmux marks the buffer that starts a
//! keyframe as not-a-delta-unit and stamps buffers with their running time. A segment is
//! handed out the moment the next segment's keyframe arrives, so it is listed right after its
//! last frame, and it holds exactly the media its duration says.
//!
//! mpegtsmux repeats PAT/PMT on a timer, not before keyframes, so the latest PAT and PMT are
//! kept and written at the start of every segment that would not begin with them: each
//! segment decodes on its own.

use std::sync::Arc;

use super::pool::{SegmentBuf, Spare};

pub const TS_PACKET: usize = 188;
const PAT_PID: u16 = 0;

fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

fn payload_unit_start(p: &[u8]) -> bool {
    p[1] & 0x40 != 0
}

/// The first program's PMT PID in a PAT packet.
fn pmt_pid_from_pat(p: &[u8]) -> Option<u16> {
    let adaptation = (p[3] >> 4) & 0x3;
    let mut i = 4;
    if adaptation & 0x2 != 0 {
        i += 1 + *p.get(4)? as usize;
    }
    if payload_unit_start(p) {
        i += 1 + *p.get(i)? as usize; // pointer field
    }
    // table_id, section_length(2), ts_id(2), version(1), section(1), last(1), then programs.
    let section_len = ((usize::from(*p.get(i + 1)?) & 0x0f) << 8) | usize::from(*p.get(i + 2)?);
    let end = (i + 3 + section_len).saturating_sub(4).min(p.len()); // minus CRC
    let mut j = i + 8;
    while j + 4 <= end {
        let program = u16::from_be_bytes([p[j], p[j + 1]]);
        let pid = (u16::from(p[j + 2] & 0x1f) << 8) | u16::from(p[j + 3]);
        if program != 0 {
            return Some(pid);
        }
        j += 4;
    }
    None
}

/// A piece of the open segment, cut about every part duration (LL-HLS parts): the
/// segment's bytes are its parts' bytes, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct TsPart {
    pub bytes: Vec<u8>,
    /// It starts with a keyframe.
    pub independent: bool,
}

/// A finished segment.
#[derive(Debug, PartialEq)]
pub struct TsSegment {
    pub bytes: SegmentBuf,
    pub duration_s: f64,
}

#[derive(Debug)]
pub struct TsSegmenter {
    target_ns: u64,
    frame_ns: u64,
    /// The last segment's buffer, once its upload is done: the next one's.
    spare: Arc<Spare>,
    cur: SegmentBuf,
    /// Running time of the keyframe that opened `cur` (None until the first keyframe).
    start: Option<u64>,
    /// Latest running time seen, for the duration of the last segment.
    last_pts: Option<u64>,
    pat: Option<[u8; TS_PACKET]>,
    pmt: Option<[u8; TS_PACKET]>,
    pmt_pid: Option<u16>,
    /// Bytes of an incomplete packet carried to the next buffer.
    partial: Vec<u8>,
    /// The open segment has no packet yet: it needs the tables before its first one.
    need_tables: bool,
    /// Parts: their target length, where the open one starts in `cur`, its first
    /// timestamp, whether it opened with a keyframe, and the parts cut and not yet taken.
    part_ns: Option<u64>,
    part_from: usize,
    part_start: Option<u64>,
    part_independent: bool,
    parts: Vec<TsPart>,
}

impl TsSegmenter {
    /// Segments close at the first keyframe at least `target_ns` (less a tolerance for
    /// millisecond-rounded timestamps) after the segment's own first keyframe. `frame_ns` is one
    /// frame's duration, added to the last segment, which ends without a following keyframe.
    pub fn new(target_ns: u64, frame_ns: u64) -> Self {
        let spare = Spare::new();
        Self {
            target_ns,
            frame_ns,
            cur: SegmentBuf::with_capacity(&spare, 1 << 20),
            spare,
            start: None,
            last_pts: None,
            pat: None,
            pmt: None,
            pmt_pid: None,
            partial: Vec::new(),
            need_tables: false,
            part_ns: None,
            part_from: 0,
            part_start: None,
            part_independent: false,
            parts: Vec::new(),
        }
    }

    /// Also cuts the open segment into parts of about `part_ns` (see [`take_parts`]).
    ///
    /// [`take_parts`]: Self::take_parts
    pub fn with_parts(mut self, part_ns: u64) -> Self {
        self.part_ns = Some(part_ns.max(1));
        self
    }

    /// The parts cut since the last call, in order. Take them after each `push`, `append`
    /// or `finish`, before the segment it returned. A segment's last part is not handed
    /// out: it is the rest of the segment, which comes at the same moment. (As a part of
    /// its own it was a second chunk at the segment's end: a remuxer that holds back each
    /// part's last frame, whose duration only the next one gives, then ended every segment
    /// with a one-frame part, on which hls.js stopped loading.)
    pub fn take_parts(&mut self) -> Vec<TsPart> {
        std::mem::take(&mut self.parts)
    }

    /// Closes the open part (if it holds anything) and opens one at the end of `cur`.
    fn close_part(&mut self, next_start: Option<u64>, next_independent: bool) {
        if self.part_ns.is_none() {
            return;
        }
        let bytes = &self.cur[self.part_from.min(self.cur.len())..];
        if !bytes.is_empty() && self.part_start.is_some() {
            self.parts.push(TsPart {
                bytes: bytes.to_vec(),
                independent: self.part_independent,
            });
        }
        self.part_from = self.cur.len();
        self.part_start = next_start;
        self.part_independent = next_independent;
    }

    /// Feeds one buffer; returns the segment it completed, if any. `keyframe` is the buffer's
    /// not-a-delta-unit flag, `pts_ns` its timestamp. mpegtsmux puts that flag on the first
    /// packet it writes for a keyframe, which is the PAT when it writes the tables first (as
    /// at the start), so a segment begins with the flagged buffer, whatever it holds.
    pub fn push(&mut self, data: &[u8], pts_ns: Option<u64>, keyframe: bool) -> Option<TsSegment> {
        let done = match (keyframe, pts_ns) {
            (true, Some(pts)) => self.keyframe(pts),
            _ => None,
        };
        if done.is_none() {
            self.part_due(pts_ns, keyframe);
        }
        let mut data = data;
        let joined;
        if !self.partial.is_empty() {
            let mut j = std::mem::take(&mut self.partial);
            j.extend_from_slice(data);
            joined = j;
            data = &joined;
        }
        let cur = self.cur.vec_mut();
        let mut chunks = data.chunks_exact(TS_PACKET);
        for p in &mut chunks {
            if p[0] != 0x47 {
                // Not aligned: keep the bytes (the muxer never does this).
                cur.extend_from_slice(p);
                continue;
            }
            let id = pid(p);
            if id == PAT_PID {
                self.pat = Some(p.try_into().unwrap());
                self.pmt_pid = pmt_pid_from_pat(p).or(self.pmt_pid);
            } else if Some(id) == self.pmt_pid {
                self.pmt = Some(p.try_into().unwrap());
            }
            if self.need_tables {
                // A new segment that does not open with the PAT gets the latest tables first.
                self.need_tables = false;
                if id != PAT_PID
                    && let (Some(pat), Some(pmt)) = (self.pat, self.pmt)
                {
                    cur.extend_from_slice(&pat);
                    cur.extend_from_slice(&pmt);
                }
            }
            cur.extend_from_slice(p);
        }
        self.partial.extend_from_slice(chunks.remainder());
        if let Some(pts) = pts_ns {
            self.last_pts = Some(self.last_pts.map_or(pts, |l| l.max(pts)));
        }
        done
    }

    /// For a muxer that writes whole packets straight into the open segment, with the tables
    /// before every keyframe (the copying pipeline): cuts at `keyframe` as [`push`](Self::push)
    /// does, then lets `write` append to the open segment. No packet is read or copied again.
    pub fn append(
        &mut self,
        pts_ns: u64,
        keyframe: bool,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Option<TsSegment> {
        debug_assert!(self.partial.is_empty(), "append after a partial packet");
        let done = if keyframe {
            self.keyframe(pts_ns)
        } else {
            None
        };
        if done.is_none() {
            self.part_due(Some(pts_ns), keyframe);
        }
        // Segments open at keyframes, which the writer opens with the tables.
        self.need_tables = false;
        write(self.cur.vec_mut());
        self.last_pts = Some(self.last_pts.map_or(pts_ns, |l| l.max(pts_ns)));
        done
    }

    /// A part ends before a buffer stamped a part duration after the part's start.
    fn part_due(&mut self, pts_ns: Option<u64>, keyframe: bool) {
        if let (Some(part_ns), Some(pts), Some(start)) = (self.part_ns, pts_ns, self.part_start)
            && pts >= start + part_ns
        {
            self.close_part(Some(pts), keyframe);
        }
    }

    fn keyframe(&mut self, pts: u64) -> Option<TsSegment> {
        let Some(start) = self.start else {
            self.start = Some(pts);
            // The first segment's first part holds what the segment holds.
            self.part_from = 0;
            self.part_start = Some(pts);
            self.part_independent = true;
            return None;
        };
        let tolerance = self.target_ns / 20;
        if pts.saturating_sub(start) + tolerance < self.target_ns {
            return None;
        }
        self.start = Some(pts);
        // The next segment's buffer (the spare, see `pool`) has room for this one's size
        // and more, so that it rarely grows; this one keeps its slack (no shrinking copy),
        // which usually leaves the packager room to pad and encrypt it in place.
        let room = self.cur.len() + self.cur.len() / 8 + 4 * TS_PACKET;
        let next = SegmentBuf::with_capacity(&self.spare, room);
        Some(self.cut(pts.saturating_sub(start), next))
    }

    /// Hands out the open segment (its last part in it, see [`take_parts`]); `next` is the
    /// one that opens now.
    ///
    /// [`take_parts`]: Self::take_parts
    fn cut(&mut self, duration_ns: u64, next: SegmentBuf) -> TsSegment {
        self.part_from = 0;
        self.part_start = self.start;
        self.part_independent = true;
        let bytes = std::mem::replace(&mut self.cur, next);
        self.need_tables = true;
        TsSegment {
            bytes,
            duration_s: duration_ns as f64 / 1e9,
        }
    }

    /// End of stream: the open segment, if it holds a keyframe.
    pub fn finish(&mut self) -> Option<TsSegment> {
        let start = self.start.take()?;
        let end = self.last_pts.unwrap_or(start) + self.frame_ns;
        // Nothing follows: no buffer for a next segment.
        Some(self.cut(end.saturating_sub(start), SegmentBuf::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PMT: u16 = 0x20;
    const VIDEO: u16 = 0x41;
    const AUDIO: u16 = 0x42;

    fn packet(pid: u16, pusi: bool, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; TS_PACKET];
        p[0] = 0x47;
        p[1] = (if pusi { 0x40 } else { 0 }) | ((pid >> 8) as u8 & 0x1f);
        p[2] = pid as u8;
        p[3] = 0x10;
        p
    }

    fn pat() -> Vec<u8> {
        let mut p = packet(PAT_PID, true, 0xff);
        // pointer 0; table 0; section length 13; ts id 1; version; 0; 0; program 1 -> PMT.
        let section = [
            0x00,
            0x00,
            0xb0,
            13,
            0,
            1,
            0xc1,
            0,
            0,
            0,
            1,
            0xe0 | (PMT >> 8) as u8,
            PMT as u8,
            1,
            2,
            3,
            4,
        ];
        p[4..4 + section.len()].copy_from_slice(&section);
        p
    }

    const S: u64 = 1_000_000_000;

    /// Feeds `gops` GOPs of `gop_s` seconds (2 packets per frame at 30 fps, audio between).
    fn run(seg: &mut TsSegmenter, gops: u64, gop_ms: u64) -> Vec<TsSegment> {
        let mut out = Vec::new();
        // As mpegtsmux at the start: the tables carry the first keyframe's flag.
        out.extend(seg.push(&pat(), Some(0), true));
        out.extend(seg.push(&packet(PMT, true, 1), Some(0), false));
        let frames = gop_ms * 30 / 1000;
        for g in 0..gops {
            for f in 0..frames {
                let pts = (g * frames + f) * S / 30;
                let first = g == 0 && f == 0;
                out.extend(seg.push(&packet(VIDEO, true, 2), Some(pts), f == 0 && !first));
                out.extend(seg.push(&packet(VIDEO, false, 3), Some(pts), false));
                out.extend(seg.push(&packet(AUDIO, true, 4), Some(pts), false));
                if f % 10 == 5 {
                    out.extend(seg.push(&pat(), Some(pts), false));
                    out.extend(seg.push(&packet(PMT, true, 1), Some(pts), false));
                }
            }
        }
        out.extend(seg.finish());
        out
    }

    #[test]
    fn parts_cut_each_segment_into_its_bytes_a_part_duration_apart() {
        let mut seg = TsSegmenter::new(2 * S, S / 30).with_parts(S / 4);
        // Parts as they are taken, and each segment with the parts taken before it.
        let mut pending: Vec<TsPart> = Vec::new();
        let mut segments = Vec::new();
        let mut feed = |seg: &mut TsSegmenter, done: Option<TsSegment>| {
            pending.extend(seg.take_parts());
            if let Some(d) = done {
                segments.push((d, std::mem::take(&mut pending)));
            }
        };
        let d = seg.push(&pat(), Some(0), true);
        feed(&mut seg, d);
        for i in 0..(3 * 60) {
            let pts = i * S / 30;
            let d = seg.push(&packet(VIDEO, true, 2), Some(pts), i % 60 == 0 && i > 0);
            feed(&mut seg, d);
            let d = seg.push(&packet(AUDIO, true, 4), Some(pts), false);
            feed(&mut seg, d);
        }
        let d = seg.finish();
        feed(&mut seg, d);
        assert_eq!(segments.len(), 3);
        for (segment, parts) in &segments {
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.bytes.clone()).collect();
            assert!(
                segment.bytes.starts_with(&joined) && joined.len() < segment.bytes.len(),
                "a segment is its parts, then its last part"
            );
            assert_eq!(
                parts.len(),
                7,
                "2 s in parts of 250 ms, the last one in the segment"
            );
            assert!(parts[0].independent && parts[1..].iter().all(|p| !p.independent));
        }
    }

    #[test]
    fn cuts_at_each_keyframe_when_the_gop_is_the_target() {
        let mut seg = TsSegmenter::new(2 * S, S / 30);
        let out = run(&mut seg, 5, 2000);
        assert_eq!(out.len(), 5);
        for s in &out {
            assert!((s.duration_s - 2.0).abs() < 1e-6, "{}", s.duration_s);
            assert_eq!(s.bytes.len() % TS_PACKET, 0);
            assert_eq!(pid(&s.bytes[0..]), PAT_PID, "segment starts with the PAT");
            assert_eq!(pid(&s.bytes[TS_PACKET..]), PMT, "then the PMT");
            let third = &s.bytes[2 * TS_PACKET..];
            assert_eq!(pid(third), VIDEO, "then the keyframe");
            assert!(payload_unit_start(third));
        }
    }

    #[test]
    fn short_source_gops_are_gathered_up_to_the_target() {
        let mut seg = TsSegmenter::new(2 * S, S / 30);
        let out = run(&mut seg, 7, 1000);
        let d: Vec<f64> = out.iter().map(|s| s.duration_s).collect();
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d[..3].iter().all(|x| (x - 2.0).abs() < 1e-6), "{d:?}");
        assert!(
            (d[3] - 1.0).abs() < 1e-6,
            "last segment ends after its last frame: {d:?}"
        );
    }

    #[test]
    fn the_segment_is_handed_out_on_the_next_keyframe() {
        let mut seg = TsSegmenter::new(2 * S, S / 30);
        let _ = run(&mut seg, 0, 2000);
        assert!(seg.push(&packet(VIDEO, true, 2), Some(0), true).is_none());
        for f in 1..60 {
            assert!(
                seg.push(&packet(VIDEO, true, 2), Some(f * S / 30), false)
                    .is_none()
            );
        }
        let s = seg.push(&packet(VIDEO, true, 2), Some(2 * S), true);
        assert!(
            s.is_some(),
            "closed by the keyframe itself, not a GOP later"
        );
    }

    #[test]
    fn packets_split_across_buffers_are_reassembled() {
        let mut seg = TsSegmenter::new(2 * S, S / 30);
        let mut stream = pat();
        stream.extend(packet(PMT, true, 1));
        let key = packet(VIDEO, true, 2);
        assert!(seg.push(&stream[..100], Some(0), false).is_none());
        assert!(seg.push(&stream[100..], Some(0), false).is_none());
        assert!(seg.push(&key, Some(0), true).is_none());
        let last = seg.finish().unwrap();
        assert_eq!(last.bytes.len(), 3 * TS_PACKET);
        assert_eq!(pmt_pid_from_pat(&pat()), Some(PMT));
    }

    #[test]
    fn nothing_before_the_first_keyframe_is_a_segment() {
        let mut seg = TsSegmenter::new(2 * S, S / 30);
        assert!(seg.push(&packet(AUDIO, true, 4), Some(0), false).is_none());
        assert!(seg.finish().is_none());
    }

    #[test]
    fn the_first_segment_holds_exactly_its_own_duration() {
        // Regression: when the first keyframe's flag sat on the PAT, the first segment
        // silently held two GOPs while saying it held one.
        let mut seg = TsSegmenter::new(2 * S, S / 30);
        let out = run(&mut seg, 3, 2000);
        let video_packets = |s: &TsSegment| {
            s.bytes
                .chunks(TS_PACKET)
                .filter(|p| pid(p) == VIDEO)
                .count()
        };
        assert_eq!(out.len(), 3);
        for s in &out {
            assert_eq!(
                video_packets(s),
                2 * 60,
                "one GOP of 60 frames, 2 packets each"
            );
        }
    }
}
