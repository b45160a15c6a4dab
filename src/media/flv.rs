//! FLV as the pipeline's input: RTMP audio/video message payloads are FLV tag bodies, so a
//! broadcast becomes an FLV byte stream by adding a header and tag framing. Also the codec
//! facts a tag body tells (which codec, sequence header or frame, keyframe).

use bytes::{BufMut, Bytes, BytesMut};

use super::Malformed;

/// `FLV`, version 1, audio + video, header length 9, then PreviousTagSize0.
pub fn header() -> Bytes {
    Bytes::from_static(&[b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0])
}

/// FLV tag types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Audio = 8,
    Video = 9,
}

/// One FLV tag (header, body, PreviousTagSize) for an RTMP message payload.
pub fn tag(kind: TagKind, timestamp_ms: u32, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(11 + body.len() + 4);
    out.put_u8(kind as u8);
    out.put_uint(body.len() as u64, 3);
    out.put_uint(u64::from(timestamp_ms & 0x00ff_ffff), 3);
    out.put_u8((timestamp_ms >> 24) as u8);
    out.put_uint(0, 3);
    out.put_slice(body);
    out.put_u32(11 + body.len() as u32);
    out.freeze()
}

/// One tag read back from an FLV byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// 8 audio, 9 video, 18 script data.
    pub kind: u8,
    pub timestamp_ms: u32,
    pub body: Bytes,
}

/// Splits an FLV byte stream (as a muxer writes it, in pieces of any size) into tags.
/// Bounded: a tag claiming more than `MAX_TAG` bytes is an error, not a buffer that grows.
#[derive(Debug, Default)]
pub struct Reader {
    buf: BytesMut,
    header_done: bool,
}

/// Largest tag body accepted (8 MiB; one compressed frame is far smaller).
pub const MAX_TAG: usize = 8 << 20;

impl Reader {
    /// Adds bytes; returns the tags completed by them.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Tag>, Malformed> {
        self.buf.extend_from_slice(data);
        let mut tags = Vec::new();
        if !self.header_done {
            if self.buf.len() < 9 {
                return Ok(tags);
            }
            if &self.buf[..3] != b"FLV" {
                return Err("not an FLV stream".into());
            }
            let len = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
            let skip = len as usize + 4; // header, then PreviousTagSize0
            if !(9..=64).contains(&len) {
                return Err(Malformed(format!("FLV header length {len}")));
            }
            if self.buf.len() < skip {
                return Ok(tags);
            }
            let _ = self.buf.split_to(skip);
            self.header_done = true;
        }
        while self.buf.len() >= 11 {
            let size = (usize::from(self.buf[1]) << 16)
                | (usize::from(self.buf[2]) << 8)
                | usize::from(self.buf[3]);
            if size > MAX_TAG {
                return Err(Malformed(format!("FLV tag of {size} bytes")));
            }
            if self.buf.len() < 11 + size + 4 {
                break;
            }
            let head = self.buf.split_to(11);
            let body = self.buf.split_to(size).freeze();
            let _ = self.buf.split_to(4);
            let timestamp_ms = (u32::from(head[7]) << 24)
                | (u32::from(head[4]) << 16)
                | (u32::from(head[5]) << 8)
                | u32::from(head[6]);
            tags.push(Tag {
                kind: head[0] & 0x1f,
                timestamp_ms,
                body,
            });
        }
        Ok(tags)
    }
}

/// What a video tag body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// AVCDecoderConfigurationRecord (SPS/PPS).
    AvcSequenceHeader(&'a [u8]),
    AvcFrame {
        keyframe: bool,
    },
    AvcEndOfSequence,
    /// Any other codec, by FLV codec id (2 Sorenson, 4 VP6, 12 HEVC, …).
    Unsupported(u8),
    Empty,
}

pub fn video_tag(body: &[u8]) -> VideoTag<'_> {
    let Some(&first) = body.first() else {
        return VideoTag::Empty;
    };
    let codec = first & 0x0f;
    // Enhanced RTMP (ex-header bit) carries HEVC/AV1/VP9 FourCCs: not H.264.
    if first & 0x80 != 0 || codec != 7 {
        return VideoTag::Unsupported(codec);
    }
    match body.get(1) {
        Some(0) => VideoTag::AvcSequenceHeader(body.get(5..).unwrap_or(&[])),
        Some(1) => VideoTag::AvcFrame {
            keyframe: first >> 4 == 1,
        },
        Some(2) => VideoTag::AvcEndOfSequence,
        _ => VideoTag::Empty,
    }
}

/// What an audio tag body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AudioSpecificConfig.
    AacSequenceHeader(&'a [u8]),
    AacFrame,
    Mp3Frame,
    /// Any other codec, by FLV sound format id (1 ADPCM, 4-6 Nellymoser, 11 Speex, …).
    Unsupported(u8),
    Empty,
}

pub fn audio_tag(body: &[u8]) -> AudioTag<'_> {
    let Some(&first) = body.first() else {
        return AudioTag::Empty;
    };
    match first >> 4 {
        10 => match body.get(1) {
            Some(0) => AudioTag::AacSequenceHeader(body.get(2..).unwrap_or(&[])),
            Some(1) => AudioTag::AacFrame,
            _ => AudioTag::Empty,
        },
        2 => AudioTag::Mp3Frame,
        other => AudioTag::Unsupported(other),
    }
}

/// The name of an FLV video codec id, for messages to broadcasters.
pub fn video_codec_name(id: u8) -> &'static str {
    match id {
        2 => "Sorenson H.263",
        3 => "Screen video",
        4 => "On2 VP6",
        5 => "On2 VP6 with alpha",
        7 => "H.264",
        12 => "HEVC",
        _ => "an unknown codec",
    }
}

/// The name of an FLV sound format id.
pub fn audio_codec_name(id: u8) -> &'static str {
    match id {
        0 | 3 => "PCM",
        1 => "ADPCM",
        2 => "MP3",
        4..=6 => "Nellymoser",
        7 | 8 => "G.711",
        10 => "AAC",
        11 => "Speex",
        _ => "an unknown codec",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_gives_back_what_tag_wrote_in_pieces_of_any_size() {
        let mut stream = header().to_vec();
        stream.extend_from_slice(&tag(TagKind::Video, 0x0123_4567, &[0x17, 0, 1, 2]));
        stream.extend_from_slice(&tag(TagKind::Audio, 40, &[0xaf, 1, 9]));
        for piece in [1, 3, 7, 1000] {
            let mut r = Reader::default();
            let mut tags = Vec::new();
            for chunk in stream.chunks(piece) {
                tags.extend(r.push(chunk).unwrap());
            }
            assert_eq!(tags.len(), 2, "pieces of {piece}");
            assert_eq!(tags[0].kind, 9);
            assert_eq!(tags[0].timestamp_ms, 0x0123_4567);
            assert_eq!(&tags[0].body[..], &[0x17, 0, 1, 2]);
            assert_eq!((tags[1].kind, tags[1].timestamp_ms), (8, 40));
        }
        assert!(Reader::default().push(b"GIF89a-----").is_err());
        let mut r = Reader::default();
        let mut huge = header().to_vec();
        huge.extend_from_slice(&[9, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0]);
        assert!(r.push(&huge).is_err());
    }

    #[test]
    fn tags_frame_bodies_with_24_bit_sizes_and_extended_timestamps() {
        let t = tag(TagKind::Video, 0x0123_4567, &[0x17, 1, 0, 0, 0, 9]);
        assert_eq!(&t[..11], &[9, 0, 0, 6, 0x23, 0x45, 0x67, 0x01, 0, 0, 0]);
        assert_eq!(&t[11..17], &[0x17, 1, 0, 0, 0, 9]);
        assert_eq!(&t[17..], &17u32.to_be_bytes());
        assert_eq!(&header()[..3], b"FLV");
    }

    #[test]
    fn codecs_are_recognised() {
        assert_eq!(
            video_tag(&[0x17, 0, 0, 0, 0, 1, 0x64]),
            VideoTag::AvcSequenceHeader(&[1, 0x64])
        );
        assert_eq!(
            video_tag(&[0x17, 1, 0, 0, 0]),
            VideoTag::AvcFrame { keyframe: true }
        );
        assert_eq!(
            video_tag(&[0x27, 1, 0, 0, 0]),
            VideoTag::AvcFrame { keyframe: false }
        );
        assert_eq!(video_tag(&[0x14, 0]), VideoTag::Unsupported(4));
        assert_eq!(video_tag(&[0x9c, 0]), VideoTag::Unsupported(12));
        assert_eq!(video_tag(&[]), VideoTag::Empty);
        assert_eq!(
            audio_tag(&[0xaf, 0, 0x12, 0x10]),
            AudioTag::AacSequenceHeader(&[0x12, 0x10])
        );
        assert_eq!(audio_tag(&[0xaf, 1, 0x21]), AudioTag::AacFrame);
        assert_eq!(audio_tag(&[0x2f, 0xff]), AudioTag::Mp3Frame);
        assert_eq!(audio_tag(&[0xb6]), AudioTag::Unsupported(11));
        assert_eq!(video_codec_name(4), "On2 VP6");
        assert_eq!(audio_codec_name(11), "Speex");
    }
}
