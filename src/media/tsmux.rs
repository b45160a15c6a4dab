//! MPEG-TS for the copied source, written in Rust: FLV's H.264 (AVCC) and AAC (raw frames) become
//! Annex B and ADTS in PES packets on 188-byte TS packets, the way an HLS player expects them.
//!
//! A passthrough-only broadcast needs no decoding, so it does not go through GStreamer at all:
//! a GStreamer pipeline per publisher (appsrc, flvdemux, h264parse, mpegtsmux, four queues and
//! their threads) cost three times nginx-rtmp's CPU per publisher, most of it in thread
//! hand-offs and per-packet buffers. Everything here is a pure function over bytes.

use super::Malformed;
use super::codec::{AacConfig, AvcConfig};
use super::segmenter::TS_PACKET;

const PAT_PID: u16 = 0;
/// The PIDs ffmpeg's muxer uses, so segments look familiar in any TS analyser.
pub const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x100;
pub const AUDIO_PID: u16 = 0x101;
const STREAM_TYPE_H264: u8 = 0x1b;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;
/// Timestamps start 1.4 s in and the PCR runs 0.7 s ahead of decoding (ffmpeg's defaults):
/// never negative, and a decoder has its buffer time.
const TS_OFFSET_90K: u64 = 126_000;
const PCR_LEAD_90K: u64 = 63_000;
const TS_MASK: u64 = (1 << 33) - 1;

/// 90 kHz timestamp for a millisecond time (33 bits, wrapping as MPEG-TS does).
pub fn ts90(ms: i64) -> u64 {
    ((ms * 90) as u64).wrapping_add(TS_OFFSET_90K) & TS_MASK
}

// --- elementary streams ----------------------------------------------------------------------

const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// Access unit delimiter (primary_pic_type 7: any slice type), which HLS asks for.
const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xf0];

/// One FLV/MP4 H.264 frame (length-prefixed NAL units) as the pieces of an Annex B access
/// unit, in order: an AUD first, then, on keyframes that do not carry their own, the SPS and
/// PPS, so that every segment decodes on its own, then each NAL unit after a start code. The
/// pieces borrow from `frame` and `cfg`, so the muxer copies each byte once, into its packets.
/// Appends to `parts`; leaves it as it was when the frame is malformed.
pub fn annexb_parts<'a>(
    frame: &'a [u8],
    cfg: &'a AvcConfig,
    keyframe: bool,
    parts: &mut Vec<&'a [u8]>,
) -> Result<(), Malformed> {
    let n = cfg.length_size;
    let nals = || {
        let mut rest = frame;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let Some(len) = rest.get(..n) else {
                rest = &[];
                return Some(Err("truncated NAL unit length".to_string()));
            };
            let len = len.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
            match rest.get(n..n + len) {
                Some(nal) if !nal.is_empty() => {
                    rest = &rest[n + len..];
                    Some(Ok(nal))
                }
                _ => {
                    let have = rest.len() - n;
                    rest = &[];
                    Some(Err(format!(
                        "NAL unit of {len} bytes, {have} left in the frame"
                    )))
                }
            }
        })
    };
    let mut has_sps = false;
    for nal in nals() {
        has_sps |= nal?[0] & 0x1f == 7;
    }
    parts.push(&AUD);
    if keyframe && !has_sps {
        for set in cfg.sps.iter().chain(&cfg.pps) {
            parts.extend([&START_CODE[..], set.as_slice()]);
        }
    }
    for nal in nals().flatten() {
        if nal[0] & 0x1f == 9 {
            continue; // the AUD above replaces any the frame had
        }
        parts.extend([&START_CODE[..], nal]);
    }
    Ok(())
}

/// The 7-byte ADTS header for one raw AAC frame of `frame_len` bytes.
pub fn adts_header(cfg: &AacConfig, frame_len: usize) -> [u8; 7] {
    // ADTS has two profile bits (Main, LC, SSR, LTP); HE-AAC is signalled implicitly as LC.
    let profile = if cfg.object_type <= 4 {
        cfg.object_type - 1
    } else {
        1
    };
    let len = frame_len + 7;
    [
        0xff,
        0xf1,
        (profile << 6) | (cfg.frequency_index << 2) | ((cfg.channels >> 2) & 1),
        ((cfg.channels & 3) << 6) | ((len >> 11) & 0x03) as u8,
        (len >> 3) as u8,
        (((len & 7) as u8) << 5) | 0x1f,
        0xfc,
    ]
}

// --- transport stream ------------------------------------------------------------------------

/// CRC-32/MPEG-2, as PSI sections carry it.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Writes MPEG-TS: tables, then PES packets of video and audio, each PID with its own
/// continuity counter.
#[derive(Debug)]
pub struct TsMuxer {
    audio: bool,
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
}

impl TsMuxer {
    /// `audio`: whether the program has an AAC stream besides the H.264 one.
    pub fn new(audio: bool) -> Self {
        Self {
            audio,
            cc_pat: 0,
            cc_pmt: 0,
            cc_video: 0,
            cc_audio: 0,
        }
    }

    /// PAT and PMT, written before every keyframe so each segment starts with them.
    pub fn tables(&mut self, out: &mut Vec<u8>) {
        let mut pat = vec![0x00, 0xb0, 13, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01];
        pat.extend_from_slice(&[0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8]);
        section(out, PAT_PID, &mut self.cc_pat, pat);

        let streams = if self.audio { 2 } else { 1 };
        let len = 9 + 5 * streams + 4;
        let mut pmt = vec![0x02, 0xb0, len as u8, 0x00, 0x01, 0xc1, 0x00, 0x00];
        pmt.extend_from_slice(&[0xe0 | (VIDEO_PID >> 8) as u8, VIDEO_PID as u8, 0xf0, 0x00]);
        pmt.extend_from_slice(&[
            STREAM_TYPE_H264,
            0xe0 | (VIDEO_PID >> 8) as u8,
            VIDEO_PID as u8,
            0xf0,
            0x00,
        ]);
        if self.audio {
            pmt.extend_from_slice(&[
                STREAM_TYPE_AAC_ADTS,
                0xe0 | (AUDIO_PID >> 8) as u8,
                AUDIO_PID as u8,
                0xf0,
                0x00,
            ]);
        }
        section(out, PMT_PID, &mut self.cc_pmt, pmt);
    }

    /// One Annex B access unit, given as its pieces in order (see [`annexb_parts`]); the PCR
    /// rides on its first packet.
    pub fn video(&mut self, out: &mut Vec<u8>, au: &[&[u8]], dts: u64, pts: u64, keyframe: bool) {
        // Unbounded length (0) is allowed for video; alignment flag set.
        let mut header = [0u8; 19];
        header[..7].copy_from_slice(&[0, 0, 1, 0xe0, 0, 0, 0x84]);
        let len = if pts == dts {
            header[7..9].copy_from_slice(&[0x80, 5]);
            header[9..14].copy_from_slice(&timestamp(0x2, pts));
            14
        } else {
            header[7..9].copy_from_slice(&[0xc0, 10]);
            header[9..14].copy_from_slice(&timestamp(0x3, pts));
            header[14..19].copy_from_slice(&timestamp(0x1, dts));
            19
        };
        let pcr = dts.wrapping_sub(PCR_LEAD_90K) & TS_MASK;
        let pes = Gather::new(&header[..len], au);
        packetize(out, VIDEO_PID, &mut self.cc_video, pes, Some(pcr), keyframe);
    }

    /// One AAC frame with its ADTS header. Ignored when the program has no audio stream.
    pub fn audio(&mut self, out: &mut Vec<u8>, cfg: &AacConfig, frame: &[u8], pts: u64) {
        if !self.audio {
            return;
        }
        let pes_len = 3 + 5 + 7 + frame.len();
        let len_field = if pes_len > 0xffff { 0 } else { pes_len as u16 };
        let mut header = [0u8; 21];
        header[..4].copy_from_slice(&[0, 0, 1, 0xc0]);
        header[4..6].copy_from_slice(&len_field.to_be_bytes());
        header[6..9].copy_from_slice(&[0x84, 0x80, 5]);
        header[9..14].copy_from_slice(&timestamp(0x2, pts));
        header[14..].copy_from_slice(&adts_header(cfg, frame.len()));
        let payload = [frame];
        let pes = Gather::new(&header, &payload);
        packetize(out, AUDIO_PID, &mut self.cc_audio, pes, None, false);
    }
}

/// A PES packet as the slices it is made of (its header, then the payload's pieces), read in
/// order without first copying them together.
struct Gather<'a> {
    head: &'a [u8],
    rest: &'a [&'a [u8]],
    /// Bytes not yet taken.
    left: usize,
}

impl<'a> Gather<'a> {
    fn new(head: &'a [u8], rest: &'a [&'a [u8]]) -> Self {
        let left = head.len() + rest.iter().map(|p| p.len()).sum::<usize>();
        Self { head, rest, left }
    }

    /// Appends the next `n` bytes (no more than are left) to `out`.
    fn take_into(&mut self, mut n: usize, out: &mut Vec<u8>) {
        self.left -= n;
        while n > 0 {
            while self.head.is_empty() {
                let (next, rest) = self.rest.split_first().expect("n is at most what is left");
                (self.head, self.rest) = (next, rest);
            }
            let k = self.head.len().min(n);
            out.extend_from_slice(&self.head[..k]);
            self.head = &self.head[k..];
            n -= k;
        }
    }
}

/// A PSI section (without CRC) in one packet: pointer field, section, CRC, 0xff fill.
fn section(out: &mut Vec<u8>, pid: u16, cc: &mut u8, mut body: Vec<u8>) {
    let crc = crc32_mpeg2(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    let mut p = [0xffu8; TS_PACKET];
    p[..5].copy_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | *cc, 0x00]);
    p[5..5 + body.len()].copy_from_slice(&body);
    *cc = (*cc + 1) & 0x0f;
    out.extend_from_slice(&p);
}

/// The 5-byte PTS/DTS field with its 4-bit prefix and marker bits.
fn timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((ts >> 30) & 0x07) as u8) << 1 | 1,
        (ts >> 22) as u8,
        (((ts >> 15) & 0x7f) as u8) << 1 | 1,
        (ts >> 7) as u8,
        ((ts & 0x7f) as u8) << 1 | 1,
    ]
}

/// Splits one PES packet into TS packets, appended to `out`. The first carries the
/// payload-start flag and, when asked, the PCR and the random-access flag in its adaptation
/// field; the last is padded with adaptation-field stuffing (never with bytes the decoder
/// would read). Each payload byte is copied once, from where it lies into `out`.
fn packetize(
    out: &mut Vec<u8>,
    pid: u16,
    cc: &mut u8,
    mut pes: Gather,
    pcr: Option<u64>,
    random_access: bool,
) {
    out.reserve(pes.left.div_ceil(184) * TS_PACKET + TS_PACKET);
    let mut first = true;
    while first || pes.left > 0 {
        // The packet header and adaptation field; the payload follows it in `out`.
        let mut p = [0xffu8; TS_PACKET];
        p[0] = 0x47;
        p[1] = if first { 0x40 } else { 0 } | ((pid >> 8) as u8 & 0x1f);
        p[2] = pid as u8;
        let pcr = pcr.filter(|_| first);
        let flags =
            if first && random_access { 0x40 } else { 0 } | if pcr.is_some() { 0x10 } else { 0 };
        // Adaptation field bytes the flags need: length, flags, PCR.
        let needed = if flags != 0 {
            2 + if pcr.is_some() { 6 } else { 0 }
        } else {
            0
        };
        let n = pes.left.min(184 - needed);
        let af = 184 - n; // adaptation field size, length byte included (stuffing fills it)
        if af > 0 {
            p[3] = 0x30 | *cc;
            p[4] = (af - 1) as u8;
            if af > 1 {
                p[5] = flags;
                if let Some(pcr) = pcr {
                    p[6..12].copy_from_slice(&[
                        (pcr >> 25) as u8,
                        (pcr >> 17) as u8,
                        (pcr >> 9) as u8,
                        (pcr >> 1) as u8,
                        (((pcr & 1) as u8) << 7) | 0x7e,
                        0x00,
                    ]);
                }
            }
        } else {
            p[3] = 0x10 | *cc;
        }
        out.extend_from_slice(&p[..4 + af]);
        pes.take_into(n, out);
        *cc = (*cc + 1) & 0x0f;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::parse_aac_config;

    #[test]
    fn adts_headers_carry_the_frame_length() {
        // AAC-LC, 48 kHz, stereo (0x11 0x90); a 100-byte frame is 107 bytes with its header.
        let a = parse_aac_config(&[0x11, 0x90]).unwrap();
        assert_eq!(
            adts_header(&a, 100),
            [0xff, 0xf1, 0x4c, 0x80, 0x0d, 0x7f, 0xfc]
        );
    }

    /// One PES packet read back: PID, payload, PCR, random-access flag.
    struct Unit(u16, Vec<u8>, Option<u64>, bool);

    /// Reassembles each PID's payload from TS packets, checking framing and counters.
    fn demux(ts: &[u8]) -> Vec<Unit> {
        assert_eq!(ts.len() % TS_PACKET, 0);
        let mut units: Vec<Unit> = Vec::new();
        let mut cc = std::collections::HashMap::new();
        for p in ts.chunks(TS_PACKET) {
            assert_eq!(p[0], 0x47);
            let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
            let start = p[1] & 0x40 != 0;
            let counter = p[3] & 0x0f;
            if let Some(prev) = cc.insert(pid, counter) {
                assert_eq!(counter, (prev + 1) & 0x0f, "continuity on PID {pid:#x}");
            }
            let mut i = 4;
            let (mut pcr, mut rai) = (None, false);
            if p[3] & 0x20 != 0 {
                let len = usize::from(p[4]);
                if len > 0 {
                    rai = p[5] & 0x40 != 0;
                    if p[5] & 0x10 != 0 {
                        let b = &p[6..12];
                        pcr = Some(
                            (u64::from(b[0]) << 25)
                                | (u64::from(b[1]) << 17)
                                | (u64::from(b[2]) << 9)
                                | (u64::from(b[3]) << 1)
                                | u64::from(b[4] >> 7),
                        );
                    }
                    assert!(
                        p[6 + if pcr.is_some() { 6 } else { 0 }..5 + len]
                            .iter()
                            .all(|&b| b == 0xff)
                    );
                }
                i = 5 + len;
            }
            assert!(p[3] & 0x10 != 0, "every packet carries payload");
            if start {
                units.push(Unit(pid, p[i..].to_vec(), pcr, rai));
            } else {
                let unit = units.iter_mut().rev().find(|u| u.0 == pid).unwrap();
                unit.1.extend_from_slice(&p[i..]);
            }
        }
        units
    }

    #[test]
    fn the_pat_matches_ffmpegs_byte_for_byte() {
        let mut out = Vec::new();
        TsMuxer::new(true).tables(&mut out);
        // ffmpeg -f mpegts: PAT section for program 1 on PID 0x1000, CRC 2AB104B2.
        assert_eq!(
            &out[..21],
            &[
                0x47, 0x40, 0x00, 0x10, 0x00, 0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00,
                0x01, 0xf0, 0x00, 0x2a, 0xb1, 0x04, 0xb2
            ]
        );
        assert!(out[21..188].iter().all(|&b| b == 0xff));
        // The PMT's CRC covers its section: recomputing over section + CRC gives 0.
        let pmt = &out[188..];
        assert_eq!(&pmt[1..3], &[0x50, 0x00]);
        let len = usize::from(pmt[7]);
        assert_eq!(len, 9 + 10 + 4);
        assert_eq!(crc32_mpeg2(&pmt[5..8 + len]), 0);
        assert_eq!(pmt[17], STREAM_TYPE_H264);
        assert_eq!(pmt[22], STREAM_TYPE_AAC_ADTS);
        let mut video_only = Vec::new();
        TsMuxer::new(false).tables(&mut video_only);
        assert_eq!(usize::from(video_only[188 + 7]), 9 + 5 + 4);
    }

    #[test]
    fn pes_of_every_size_splits_into_whole_packets_and_reassembles() {
        let mut mux = TsMuxer::new(true);
        let cfg = AacConfig {
            object_type: 2,
            frequency_index: 3,
            channels: 2,
        };
        for size in (1..600).chain([2000, 65_000, 300_000]) {
            let au: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            // In pieces, as annexb_parts gives it: empty ones, and cuts that fall anywhere
            // in a packet.
            let (a, b) = au.split_at(size / 3);
            let (b, c) = b.split_at(b.len() / 2);
            let mut out = Vec::new();
            mux.video(&mut out, &[a, &[], b, c], 90_000, 93_000, size % 2 == 0);
            mux.audio(&mut out, &cfg, &au[..size.min(1500)], 91_000);
            let units = demux(&out);
            assert_eq!(units.len(), 2, "size {size}");
            let Unit(pid, video, pcr, rai) = &units[0];
            assert_eq!(*pid, VIDEO_PID);
            assert_eq!(*pcr, Some(90_000 - PCR_LEAD_90K));
            assert_eq!(*rai, size % 2 == 0);
            assert_eq!(&video[..4], &[0, 0, 1, 0xe0]);
            assert_eq!(video[7], 0xc0, "PTS and DTS");
            assert_eq!(&video[19..], &au[..], "size {size}");
            let Unit(pid, audio, pcr, _) = &units[1];
            assert_eq!((*pid, *pcr), (AUDIO_PID, None));
            let frame = &au[..size.min(1500)];
            assert_eq!(
                usize::from(u16::from_be_bytes([audio[4], audio[5]])),
                audio.len() - 6
            );
            assert_eq!(&audio[14..21], &adts_header(&cfg, frame.len()));
            assert_eq!(&audio[21..], frame);
        }
    }

    #[test]
    fn timestamps_are_encoded_with_their_marker_bits() {
        let ts = 0x1_2345_6789u64;
        let b = timestamp(0x3, ts);
        let back = (u64::from(b[0] >> 1) & 7) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1);
        assert_eq!(back, ts);
        assert_eq!(b[0] >> 4, 3);
        assert!(b[0] & 1 == 1 && b[2] & 1 == 1 && b[4] & 1 == 1);
        assert_eq!(ts90(0), 126_000);
        assert_eq!(ts90(1000), 216_000);
    }

    fn cfg() -> AvcConfig {
        AvcConfig {
            length_size: 4,
            sps: vec![vec![0x67, 1, 2]],
            pps: vec![vec![0x68, 3]],
        }
    }

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| {
                (n.len() as u32)
                    .to_be_bytes()
                    .into_iter()
                    .chain(n.iter().copied())
            })
            .collect()
    }

    /// The access unit as one buffer.
    fn annexb(frame: &[u8], cfg: &AvcConfig, keyframe: bool) -> Result<Vec<u8>, Malformed> {
        let mut parts = Vec::new();
        annexb_parts(frame, cfg, keyframe, &mut parts)?;
        Ok(parts.concat())
    }

    #[test]
    fn keyframes_get_an_aud_and_the_parameter_sets() {
        let frame = avcc(&[&[0x09, 0x10], &[0x06, 5], &[0x65, 7, 7]]);
        let cfg = cfg();
        assert_eq!(
            annexb(&frame, &cfg, true).unwrap(),
            [
                &AUD[..],
                &[0, 0, 0, 1, 0x67, 1, 2],
                &[0, 0, 0, 1, 0x68, 3],
                &[0, 0, 0, 1, 0x06, 5],
                &[0, 0, 0, 1, 0x65, 7, 7]
            ]
            .concat()
        );
        assert_eq!(
            annexb(&avcc(&[&[0x41, 9]]), &cfg, false).unwrap(),
            [&AUD[..], &[0, 0, 0, 1, 0x41, 9]].concat()
        );
        // A keyframe carrying its own SPS does not get a second one.
        let own = annexb(&avcc(&[&[0x67, 4], &[0x68, 4], &[0x65, 1]]), &cfg, true).unwrap();
        assert_eq!(own.iter().filter(|&&b| b == 0x67).count(), 1);
    }

    #[test]
    fn malformed_frames_are_refused_and_leave_nothing_behind() {
        let cfg = cfg();
        let kept: &[u8] = &[9];
        let mut parts = vec![kept];
        let mut truncated = avcc(&[&[0x65, 1, 2, 3]]);
        truncated.truncate(6);
        assert!(annexb_parts(&truncated, &cfg, true, &mut parts).is_err());
        assert!(annexb_parts(&[0, 0], &cfg, true, &mut parts).is_err());
        assert!(annexb_parts(&[0, 0, 0, 0], &cfg, true, &mut parts).is_err());
        assert_eq!(parts, [kept]);
    }
}
