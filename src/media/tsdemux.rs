//! MPEG-TS read back into its elementary streams: the PES packets of the first program's
//! H.264 and AAC (ADTS) streams, with their timestamps. Every engine (the GStreamer ladder,
//! the copy engine, WHIP, VOD) cuts MPEG-TS segments; the CMAF packager reads them back with
//! this to write fragmented MP4 (see `cmaf`). Pure, bounded by its input: a segment of N
//! bytes yields at most N bytes of payload.

use super::Malformed;
use super::segmenter::TS_PACKET;

const PAT_PID: u16 = 0;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;
const STREAM_TYPE_H264: u8 = 0x1b;

/// What an elementary stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// H.264 in Annex B, one access unit per PES packet.
    H264,
    /// AAC in ADTS frames, one or more per PES packet.
    AacAdts,
}

/// One PES packet's payload, with its 90 kHz timestamps as written (33 bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pes {
    pub kind: StreamKind,
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub data: Vec<u8>,
}

fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

/// The packet's payload (after the adaptation field), if it has one.
fn payload(p: &[u8]) -> Option<&[u8]> {
    let control = (p[3] >> 4) & 0x3;
    let start = match control {
        0b01 => 4,
        0b11 => 5 + usize::from(p[4]),
        _ => return None,
    };
    p.get(start..).filter(|b| !b.is_empty())
}

/// A PSI section's body from a packet that starts one: after the pointer field, from the
/// table id up to (not including) the CRC.
fn section(p: &[u8]) -> Option<&[u8]> {
    let body = payload(p)?;
    let s = body.get(1 + usize::from(*body.first()?)..)?;
    let len = (usize::from(*s.get(1)? & 0x0f) << 8) | usize::from(*s.get(2)?);
    s.get(..(3 + len).checked_sub(4)?)
}

/// Where the program's streams are: the PMT PID from the PAT, then each stream's PID.
#[derive(Default)]
struct Program {
    pmt: Option<u16>,
    streams: Vec<(u16, StreamKind)>,
}

impl Program {
    fn read_pat(&mut self, p: &[u8]) {
        let Some(s) = section(p) else { return };
        // table_id, length(2), ts id(2), version(1), section numbers(2), then programs.
        for e in s.get(8..).unwrap_or_default().chunks_exact(4) {
            if u16::from_be_bytes([e[0], e[1]]) != 0 {
                self.pmt = Some((u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]));
                return;
            }
        }
    }

    fn read_pmt(&mut self, p: &[u8]) {
        let Some(s) = section(p) else { return };
        let Some(info) = s.get(10..12) else { return };
        let mut i = 12 + ((usize::from(info[0] & 0x0f) << 8) | usize::from(info[1]));
        let mut streams = Vec::new();
        while let Some(e) = s.get(i..i + 5) {
            let pid = (u16::from(e[1] & 0x1f) << 8) | u16::from(e[2]);
            let kind = match e[0] {
                STREAM_TYPE_H264 => Some(StreamKind::H264),
                STREAM_TYPE_AAC_ADTS => Some(StreamKind::AacAdts),
                _ => None,
            };
            streams.extend(kind.map(|k| (pid, k)));
            i += 5 + ((usize::from(e[3] & 0x0f) << 8) | usize::from(e[4]));
        }
        self.streams = streams;
    }
}

fn timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1) & 0x7) << 30
        | u64::from(b[1]) << 22
        | u64::from(b[2] >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4] >> 1)
}

/// A whole PES packet (header and payload) into its payload and timestamps.
fn parse_pes(kind: StreamKind, bytes: &[u8]) -> Result<Pes, Malformed> {
    let bad = |what: &str| Malformed(format!("PES packet {what}"));
    if bytes.len() < 9 || bytes[..3] != [0, 0, 1] {
        return Err(bad("without a start code"));
    }
    let flags = bytes[7] >> 6;
    let header_end = 9 + usize::from(bytes[8]);
    let fields = bytes.get(9..header_end).ok_or_else(|| bad("header cut"))?;
    let (pts, dts) = match flags {
        0b10 => (Some(fields.get(..5).ok_or_else(|| bad("PTS cut"))?), None),
        0b11 => (
            Some(fields.get(..5).ok_or_else(|| bad("PTS cut"))?),
            Some(fields.get(5..10).ok_or_else(|| bad("DTS cut"))?),
        ),
        _ => (None, None),
    };
    Ok(Pes {
        kind,
        pts: pts.map(timestamp),
        dts: dts.map(timestamp),
        data: bytes[header_end..].to_vec(),
    })
}

/// Reads a transport stream fed in pieces (whole packets): the tables and the PES packet
/// being gathered on each stream carry over from one piece to the next.
#[derive(Default)]
pub struct TsReader {
    program: Program,
    open: Vec<(u16, StreamKind, Vec<u8>)>,
}

/// Most bytes one PES packet may gather: far above any frame (a 4K keyframe is a few MB).
const MAX_PES: usize = 32 << 20;

impl TsReader {
    /// The PES packets that ended in `ts` (a packet ends when the next one of its stream
    /// starts, or when it has the length its header gives). A trailing partial packet is
    /// ignored.
    pub fn feed(&mut self, ts: &[u8]) -> Result<Vec<Pes>, Malformed> {
        let mut out = Vec::new();
        for (n, p) in ts.chunks_exact(TS_PACKET).enumerate() {
            if p[0] != 0x47 {
                return Err(Malformed(format!("no sync byte in TS packet {n}")));
            }
            let pid = pid(p);
            let start = p[1] & 0x40 != 0;
            if pid == PAT_PID {
                if start {
                    self.program.read_pat(p);
                }
                continue;
            }
            if Some(pid) == self.program.pmt {
                if start {
                    self.program.read_pmt(p);
                }
                continue;
            }
            let Some(&(_, kind)) = self.program.streams.iter().find(|(s, _)| *s == pid) else {
                continue;
            };
            let Some(body) = payload(p) else { continue };
            let slot = self.open.iter().position(|(s, _, _)| *s == pid);
            if start {
                if let Some(i) = slot {
                    let (_, kind, bytes) = self.open.swap_remove(i);
                    out.push(parse_pes(kind, &bytes)?);
                }
                self.open.push((pid, kind, body.to_vec()));
            } else if let Some(i) = slot {
                if self.open[i].2.len() + body.len() > MAX_PES {
                    return Err("a PES packet over 32 MiB".into());
                }
                self.open[i].2.extend_from_slice(body);
            }
            // A PES packet with a length is whole once it has it (audio, here).
            if let Some(i) = self.open.iter().position(|(s, _, _)| *s == pid) {
                let b = &self.open[i].2;
                let len = b
                    .get(4..6)
                    .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
                if len > 0 && b.len() >= 6 + len {
                    let (_, kind, mut bytes) = self.open.swap_remove(i);
                    bytes.truncate(6 + len);
                    out.push(parse_pes(kind, &bytes)?);
                }
            }
        }
        Ok(out)
    }

    /// The PES packets still being gathered, as they are (the end of the stream).
    pub fn flush(&mut self) -> Result<Vec<Pes>, Malformed> {
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|(_, kind, bytes)| parse_pes(kind, &bytes))
            .collect()
    }
}

/// The PES packets of a whole transport stream's H.264 and AAC streams, in the order they
/// end. The tables must come before the streams' packets, as every segment here starts with
/// them; packets of other PIDs and a trailing partial packet are ignored.
pub fn demux(ts: &[u8]) -> Result<Vec<Pes>, Malformed> {
    let mut reader = TsReader::default();
    let mut out = reader.feed(ts)?;
    out.extend(reader.flush()?);
    Ok(out)
}

/// The NAL units of Annex B bytes, without start codes or trailing zero bytes.
pub fn annexb_nals(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= bytes.len() {
        if bytes[i] == 0 && bytes[i + 1] == 0 && bytes[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|s| s - 3)
        .chain(std::iter::once(bytes.len()))
        .collect();
    starts.into_iter().zip(ends).filter_map(move |(s, e)| {
        let nal = &bytes[s..e];
        let keep = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        (keep > 0).then(|| &nal[..keep])
    })
}

/// One ADTS frame: its AAC configuration and raw payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsFrame<'a> {
    /// Audio object type (2: AAC-LC).
    pub object_type: u8,
    pub frequency_index: u8,
    pub channels: u8,
    pub payload: &'a [u8],
}

/// The ADTS frames of an AAC PES payload.
pub fn adts_frames(mut bytes: &[u8]) -> Result<Vec<AdtsFrame<'_>>, Malformed> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let h = bytes
            .get(..7)
            .ok_or_else(|| Malformed::from("ADTS header cut"))?;
        if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
            return Err("ADTS frame without its sync word".into());
        }
        let header = if h[1] & 1 == 1 { 7 } else { 9 };
        let len =
            (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        let frequency_index = (h[2] >> 2) & 0x0f;
        if len <= header || frequency_index > 12 {
            return Err(Malformed(format!(
                "ADTS frame of {len} bytes at rate index {frequency_index}"
            )));
        }
        let payload = bytes
            .get(header..len)
            .ok_or_else(|| Malformed(format!("ADTS frame of {len} bytes cut")))?;
        frames.push(AdtsFrame {
            object_type: (h[2] >> 6) + 1,
            frequency_index,
            channels: ((h[2] & 1) << 2) | (h[3] >> 6),
            payload,
        });
        bytes = &bytes[len..];
    }
    Ok(frames)
}

pub const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::AacConfig;
    use crate::media::tsmux::{TsMuxer, adts_header};

    fn cfg() -> AacConfig {
        AacConfig {
            object_type: 2,
            frequency_index: 4,
            channels: 2,
        }
    }

    #[test]
    fn what_the_muxer_wrote_reads_back_with_its_timestamps() {
        let mut mux = TsMuxer::new(true);
        let mut ts = Vec::new();
        mux.tables(&mut ts);
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xab];
        let idr: Vec<u8> = std::iter::once(0x65)
            .chain((0..400).map(|i| i as u8 | 1))
            .collect();
        let au: Vec<&[u8]> = vec![&[0, 0, 0, 1], &sps, &[0, 0, 0, 1], &idr];
        mux.video(&mut ts, &au, 90_000, 93_000, true);
        mux.audio(&mut ts, &cfg(), &[0x21; 300], 90_500);
        mux.video(
            &mut ts,
            &[&[0, 0, 0, 1], &[0x41, 0x9a, 0x10]],
            93_000,
            96_000,
            false,
        );
        let pes = demux(&ts).unwrap();
        assert_eq!(pes.len(), 3);
        let video: Vec<&Pes> = pes.iter().filter(|p| p.kind == StreamKind::H264).collect();
        assert_eq!((video[0].dts, video[0].pts), (Some(90_000), Some(93_000)));
        let nals: Vec<&[u8]> = annexb_nals(&video[0].data).collect();
        assert!(
            nals.contains(&&sps[..]) && nals.contains(&&idr[..]),
            "{nals:?}"
        );
        assert_eq!((video[1].dts, video[1].pts), (Some(93_000), Some(96_000)));
        let audio = pes.iter().find(|p| p.kind == StreamKind::AacAdts).unwrap();
        assert_eq!(audio.pts, Some(90_500));
        let frames = adts_frames(&audio.data).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].payload, &[0x21; 300][..]);
        assert_eq!(
            (
                frames[0].object_type,
                frames[0].frequency_index,
                frames[0].channels
            ),
            (2, 4, 2)
        );
    }

    #[test]
    fn damaged_streams_are_refused_or_skipped_without_panicking() {
        let mut mux = TsMuxer::new(true);
        let mut ts = Vec::new();
        mux.tables(&mut ts);
        mux.video(&mut ts, &[&[0, 0, 0, 1], &[0x65; 900]], 0, 0, true);
        for cut in (0..ts.len()).step_by(47) {
            let _ = demux(&ts[..cut]);
        }
        let mut bad = ts.clone();
        bad[188 * 2] = 0;
        assert!(demux(&bad).is_err());
        let mut frame = adts_header(&cfg(), 10).to_vec();
        frame.extend([0; 4]);
        assert!(
            adts_frames(&frame).is_err(),
            "a frame longer than its bytes"
        );
        assert!(adts_frames(&[0xff, 0xf1, 0x50]).is_err());
        assert_eq!(
            annexb_nals(&[0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x65, 1, 0]).collect::<Vec<_>>(),
            vec![&[0x09, 0xf0][..], &[0x65, 1][..]]
        );
    }
}
