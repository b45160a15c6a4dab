//! RTMP chunk stream: reassembles incoming chunks into messages and splits outgoing ones.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Limits, ProtocolError};

/// Chunk size both directions start with until a Set Chunk Size message changes it.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Timestamp field value that signals a 4-byte extended timestamp follows the header.
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
/// Message header length for chunk types 0..=3.
const MESSAGE_HEADER_LEN: [usize; 4] = [11, 7, 3, 0];
/// Largest chunk stream id expressible in a 3-byte basic header.
const MAX_CSID: u32 = 65_599;

/// A complete RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chunk stream the message travelled on.
    pub csid: u32,
    /// Absolute timestamp in milliseconds (wrapping).
    pub timestamp: u32,
    /// Message type id (1 = Set Chunk Size, 8 = audio, 9 = video, 20 = AMF0 command, ...).
    pub type_id: u8,
    /// Message stream id (0 for connection-level messages).
    pub stream_id: u32,
    pub payload: Bytes,
}

/// Outcome of one [`ChunkDecoder::decode_chunk`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The buffer does not yet hold a whole chunk; nothing was consumed.
    NeedMore,
    /// A chunk was consumed but its message is still incomplete.
    Partial,
    /// A chunk was consumed and completed this message.
    Message(Message),
}

/// The header fields a chunk stream remembers so later chunks can omit them.
#[derive(Debug, Clone, Copy, Default)]
struct HeaderState {
    timestamp: u32,
    /// Last timestamp field (delta, or absolute for type 0); a new message in a type 3 chunk adds it.
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Whether the last full header used an extended timestamp, so type 3 chunks carry one too.
    extended: bool,
}

#[derive(Debug)]
struct ChunkStream {
    csid: u32,
    header: HeaderState,
    /// Payload received so far of the message in progress.
    partial: Option<BytesMut>,
}

/// Incoming direction of the chunk stream, with limits enforced before anything is committed.
#[derive(Debug)]
pub struct ChunkDecoder {
    limits: Limits,
    chunk_size: u32,
    streams: Vec<ChunkStream>,
    assembling: usize,
}

impl ChunkDecoder {
    /// Starts at the default 128-byte chunk size with no chunk stream history.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            assembling: 0,
        }
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Applies a Set Chunk Size from the peer.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ProtocolError> {
        if size == 0 {
            return Err(ProtocolError::ChunkSizeZero);
        }
        if size > self.limits.max_chunk_size {
            return Err(ProtocolError::ChunkSizeTooLarge {
                size,
                max: self.limits.max_chunk_size,
            });
        }
        self.chunk_size = size;
        Ok(())
    }

    /// Drops the partially received message on `csid` (Abort Message).
    pub fn abort(&mut self, csid: u32) {
        if let Some(stream) = self.streams.iter_mut().find(|s| s.csid == csid)
            && let Some(partial) = stream.partial.take()
        {
            self.assembling -= partial.len();
        }
    }

    /// Bytes held in partially reassembled messages.
    pub fn assembling_len(&self) -> usize {
        self.assembling
    }

    /// Decodes at most one chunk from the front of `input`, consuming it only if complete.
    pub fn decode_chunk(&mut self, input: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        let buf: &[u8] = input;
        let Some((fmt, csid, mut pos)) = basic_header(buf) else {
            return Ok(Decoded::NeedMore);
        };
        let index = self.streams.iter().position(|s| s.csid == csid);
        let previous = index.map(|i| &self.streams[i]);
        if fmt != 0 && previous.is_none() {
            return Err(ProtocolError::MissingChunkHeader { csid, fmt });
        }
        let prev = previous.map(|s| s.header).unwrap_or_default();
        let in_progress = previous.and_then(|s| s.partial.as_ref()).map(BytesMut::len);

        let header_len = MESSAGE_HEADER_LEN[usize::from(fmt)];
        let Some(fields) = buf.get(pos..pos + header_len) else {
            return Ok(Decoded::NeedMore);
        };
        pos += header_len;
        let ts_field = if fmt < 3 { be24(&fields[0..3]) } else { 0 };
        let extended = if fmt == 3 {
            prev.extended
        } else {
            ts_field == EXTENDED_TIMESTAMP
        };
        let extended_value = if extended {
            let Some(ext) = buf.get(pos..pos + 4) else {
                return Ok(Decoded::NeedMore);
            };
            pos += 4;
            Some(u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]))
        } else {
            None
        };
        let (length, type_id, stream_id) = match fmt {
            0 => (
                be24(&fields[3..6]),
                fields[6],
                u32::from_le_bytes([fields[7], fields[8], fields[9], fields[10]]),
            ),
            1 => (be24(&fields[3..6]), fields[6], prev.stream_id),
            _ => (prev.length, prev.type_id, prev.stream_id),
        };

        // A full header that repeats the in-progress message's shape continues it, as ffmpeg
        // tolerates; any other full header abandons the partial message.
        let continues = in_progress.is_some()
            && (fmt == 3
                || (length == prev.length
                    && type_id == prev.type_id
                    && stream_id == prev.stream_id));
        let header = if continues {
            prev
        } else {
            let field = extended_value.unwrap_or(ts_field);
            match fmt {
                0 => HeaderState {
                    timestamp: field,
                    delta: field,
                    length,
                    type_id,
                    stream_id,
                    extended,
                },
                1 | 2 => HeaderState {
                    timestamp: prev.timestamp.wrapping_add(field),
                    delta: field,
                    length,
                    type_id,
                    stream_id,
                    extended,
                },
                _ => {
                    let delta = extended_value.unwrap_or(prev.delta);
                    HeaderState {
                        timestamp: prev.timestamp.wrapping_add(delta),
                        delta,
                        ..prev
                    }
                }
            }
        };
        if header.length as usize > self.limits.max_message_len {
            return Err(ProtocolError::MessageTooLarge {
                len: header.length as usize,
                max: self.limits.max_message_len,
            });
        }

        let received = if continues {
            in_progress.unwrap_or(0)
        } else {
            0
        };
        let remaining = header.length as usize - received;
        let chunk_len = remaining.min(self.chunk_size as usize);
        if buf.len() < pos + chunk_len {
            return Ok(Decoded::NeedMore);
        }
        if index.is_none() && self.streams.len() >= self.limits.max_chunk_streams {
            return Err(ProtocolError::TooManyChunkStreams {
                max: self.limits.max_chunk_streams,
            });
        }
        let completes = chunk_len == remaining;
        if !completes {
            let abandoned = if continues {
                0
            } else {
                in_progress.unwrap_or(0)
            };
            let held = self.assembling - abandoned + chunk_len;
            if held > self.limits.max_buffered_input {
                return Err(ProtocolError::BufferLimit {
                    len: held,
                    max: self.limits.max_buffered_input,
                });
            }
        }

        input.advance(pos);
        let data = input.split_to(chunk_len);
        let index = index.unwrap_or_else(|| {
            self.streams.push(ChunkStream {
                csid,
                header,
                partial: None,
            });
            self.streams.len() - 1
        });
        let stream = &mut self.streams[index];
        stream.header = header;
        if !continues && let Some(abandoned) = stream.partial.take() {
            self.assembling -= abandoned.len();
        }
        let payload = match stream.partial.take() {
            // Copy so the message does not pin the whole input buffer allocation.
            None if completes => Bytes::copy_from_slice(&data),
            None => {
                self.assembling += chunk_len;
                stream.partial = Some(BytesMut::from(&data[..]));
                return Ok(Decoded::Partial);
            }
            Some(mut partial) => {
                partial.extend_from_slice(&data);
                if !completes {
                    self.assembling += chunk_len;
                    stream.partial = Some(partial);
                    return Ok(Decoded::Partial);
                }
                self.assembling -= partial.len() - chunk_len;
                partial.freeze()
            }
        };
        Ok(Decoded::Message(Message {
            csid,
            timestamp: header.timestamp,
            type_id: header.type_id,
            stream_id: header.stream_id,
            payload,
        }))
    }
}

/// Outgoing direction: always a type 0 header, then type 3 continuation chunks.
#[derive(Debug, Clone)]
pub struct ChunkEncoder {
    chunk_size: u32,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    /// Starts at the default 128-byte chunk size the peer assumes.
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }

    /// Changes the outgoing chunk size; the caller must have sent Set Chunk Size first.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.max(1);
    }

    /// Appends `msg` to `out` as chunks.
    ///
    /// The csid is clamped into 2..=65599 and the length field holds 24 bits, since both are
    /// chosen by this server rather than by the peer.
    pub fn write_message(&self, msg: &Message, out: &mut BytesMut) {
        let csid = msg.csid.clamp(2, MAX_CSID);
        let extended = msg.timestamp >= EXTENDED_TIMESTAMP;
        write_basic_header(0, csid, out);
        put_u24(out, msg.timestamp.min(EXTENDED_TIMESTAMP));
        put_u24(out, msg.payload.len() as u32);
        out.put_u8(msg.type_id);
        out.put_u32_le(msg.stream_id);
        if extended {
            out.put_u32(msg.timestamp);
        }
        let mut chunks = msg.payload.chunks(self.chunk_size as usize);
        out.extend_from_slice(chunks.next().unwrap_or_default());
        for chunk in chunks {
            write_basic_header(3, csid, out);
            if extended {
                out.put_u32(msg.timestamp);
            }
            out.extend_from_slice(chunk);
        }
    }
}

/// Parses the basic header: chunk type, chunk stream id and the header's length.
fn basic_header(buf: &[u8]) -> Option<(u8, u32, usize)> {
    let first = *buf.first()?;
    let fmt = first >> 6;
    match first & 0x3F {
        0 => Some((fmt, 64 + u32::from(*buf.get(1)?), 2)),
        1 => {
            let b = buf.get(1..3)?;
            Some((fmt, 64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3))
        }
        id => Some((fmt, u32::from(id), 1)),
    }
}

fn write_basic_header(fmt: u8, csid: u32, out: &mut BytesMut) {
    match csid {
        2..=63 => out.put_u8((fmt << 6) | csid as u8),
        64..=319 => {
            out.put_u8(fmt << 6);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            let id = csid - 64;
            out.put_u8((fmt << 6) | 1);
            out.put_u8(id as u8);
            out.put_u8((id >> 8) as u8);
        }
    }
}

fn be24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

fn put_u24(out: &mut BytesMut, v: u32) {
    out.put_slice(&v.to_be_bytes()[1..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, len: usize) -> Message {
        Message {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: (0..len).map(|i| (i % 251) as u8).collect(),
        }
    }

    fn decode_all(decoder: &mut ChunkDecoder, input: &mut BytesMut) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            match decoder.decode_chunk(input).unwrap() {
                Decoded::NeedMore => return out,
                Decoded::Partial => {}
                Decoded::Message(m) => out.push(m),
            }
        }
    }

    #[test]
    fn encoder_roundtrips_through_decoder() {
        for chunk_size in [1, 7, 128, 4096] {
            let mut encoder = ChunkEncoder::new();
            encoder.set_chunk_size(chunk_size);
            let mut decoder = ChunkDecoder::new(Limits::default());
            decoder.set_chunk_size(chunk_size).unwrap();
            let messages = [
                msg(2, 0, 1, 0, 4),
                msg(3, 1000, 20, 0, 300),
                msg(63, 5, 9, 1, 0),
                msg(64, 0x00FF_FFFF, 9, 1, 700),
                msg(319, 0xFFFF_FFFF, 8, 1, 129),
                msg(320, 42, 8, 2, 1),
                msg(65_599, 7, 18, 1, 5000),
            ];
            let mut wire = BytesMut::new();
            for m in &messages {
                encoder.write_message(m, &mut wire);
            }
            assert_eq!(decode_all(&mut decoder, &mut wire), messages);
            assert!(wire.is_empty());
            assert_eq!(decoder.assembling_len(), 0);
        }
    }

    #[test]
    fn interleaved_messages_reassemble_byte_by_byte() {
        let mut decoder = ChunkDecoder::new(Limits::default());
        let a = msg(4, 10, 9, 1, 300);
        let b = msg(6, 20, 8, 1, 200);
        let mut wa = BytesMut::new();
        let mut wb = BytesMut::new();
        ChunkEncoder::new().write_message(&a, &mut wa);
        ChunkEncoder::new().write_message(&b, &mut wb);
        // Interleave: a's first chunk, b's first chunk, then the rest of each.
        let mut wire = Vec::new();
        wire.extend_from_slice(&wa[..12 + 128]);
        wire.extend_from_slice(&wb[..12 + 128]);
        wire.extend_from_slice(&wa[12 + 128..]);
        wire.extend_from_slice(&wb[12 + 128..]);
        let mut input = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire {
            input.put_u8(byte);
            out.extend(decode_all(&mut decoder, &mut input));
        }
        assert_eq!(out, vec![a, b]);
    }

    #[test]
    fn resolves_compressed_header_timestamps() {
        let mut wire = BytesMut::new();
        // Type 0: csid 4, ts 1000, len 2, type 9, stream 1.
        wire.extend_from_slice(&[0x04, 0x00, 0x03, 0xE8, 0, 0, 2, 9, 1, 0, 0, 0, 0xAA, 0xBB]);
        // Type 1: delta 40, len 1, type 8.
        wire.extend_from_slice(&[0x44, 0, 0, 40, 0, 0, 1, 8, 0xCC]);
        // Type 2: delta 33.
        wire.extend_from_slice(&[0x84, 0, 0, 33, 0xDD]);
        // Type 3 starting a new message: repeats delta 33.
        wire.extend_from_slice(&[0xC4, 0xEE]);
        let mut decoder = ChunkDecoder::new(Limits::default());
        let got = decode_all(&mut decoder, &mut wire);
        let ts: Vec<_> = got.iter().map(|m| (m.timestamp, m.type_id)).collect();
        assert_eq!(ts, vec![(1000, 9), (1040, 8), (1073, 8), (1106, 8)]);
        assert!(got.iter().all(|m| m.stream_id == 1));
    }

    #[test]
    fn type3_after_type0_uses_timestamp_as_delta() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&[0x05, 0, 0, 20, 0, 0, 1, 8, 1, 0, 0, 0, 1]);
        wire.extend_from_slice(&[0xC5, 2]);
        let got = decode_all(&mut ChunkDecoder::new(Limits::default()), &mut wire);
        assert_eq!(got[1].timestamp, 40);
    }

    #[test]
    fn extended_timestamps_and_wrapping() {
        let mut wire = BytesMut::new();
        // Type 0 with extended timestamp 0xFFFFFFF0, 130 bytes so a continuation chunk follows.
        wire.extend_from_slice(&[0x04, 0xFF, 0xFF, 0xFF, 0, 0, 130, 9, 1, 0, 0, 0]);
        wire.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        wire.extend_from_slice(&[1; 128]);
        wire.extend_from_slice(&[0xC4]);
        wire.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        wire.extend_from_slice(&[2; 2]);
        // Type 1 with delta 0x20: wraps to 0x10.
        wire.extend_from_slice(&[0x44, 0, 0, 0x20, 0, 0, 1, 9, 3]);
        let got = decode_all(&mut ChunkDecoder::new(Limits::default()), &mut wire);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].timestamp, 0xFFFF_FFF0);
        assert_eq!(got[0].payload.len(), 130);
        assert_eq!(got[1].timestamp, 0x10);
        assert!(wire.is_empty());
    }

    #[test]
    fn abort_discards_partial_message() {
        let mut decoder = ChunkDecoder::new(Limits::default());
        let mut wire = BytesMut::new();
        ChunkEncoder::new().write_message(&msg(4, 0, 9, 1, 200), &mut wire);
        let mut first = wire.split_to(12 + 128);
        assert_eq!(decoder.decode_chunk(&mut first), Ok(Decoded::Partial));
        assert_eq!(decoder.assembling_len(), 128);
        decoder.abort(4);
        assert_eq!(decoder.assembling_len(), 0);
        let mut next = BytesMut::new();
        ChunkEncoder::new().write_message(&msg(4, 5, 8, 1, 3), &mut next);
        let got = decode_all(&mut decoder, &mut next);
        assert_eq!(got, vec![msg(4, 5, 8, 1, 3)]);
    }

    #[test]
    fn full_header_mid_message_with_same_shape_continues_it() {
        let mut decoder = ChunkDecoder::new(Limits::default());
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&[0x04, 0, 0, 1, 0, 0, 130, 9, 1, 0, 0, 0]);
        wire.extend_from_slice(&[1; 128]);
        wire.extend_from_slice(&[0x04, 0, 0, 1, 0, 0, 130, 9, 1, 0, 0, 0, 2, 2]);
        let got = decode_all(&mut decoder, &mut wire);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload.len(), 130);
    }

    #[test]
    fn enforces_limits() {
        let limits = Limits {
            max_message_len: 1000,
            max_chunk_size: 4096,
            max_chunk_streams: 2,
            max_buffered_input: 300,
        };
        let mut decoder = ChunkDecoder::new(limits);
        assert_eq!(decoder.set_chunk_size(0), Err(ProtocolError::ChunkSizeZero));
        assert_eq!(
            decoder.set_chunk_size(0x8000_0000).unwrap_err().to_string(),
            "chunk size 2147483648 exceeds limit 4096"
        );
        let mut big = BytesMut::from(&[0x04, 0, 0, 0, 0, 0x03, 0xE9, 9, 1, 0, 0, 0][..]);
        assert_eq!(
            decoder.decode_chunk(&mut big).unwrap_err().to_string(),
            "message of 1001 bytes exceeds limit 1000"
        );
        let mut orphan = BytesMut::from(&[0xC7][..]);
        assert_eq!(
            decoder.decode_chunk(&mut orphan),
            Err(ProtocolError::MissingChunkHeader { csid: 7, fmt: 3 })
        );
        let mut wire = BytesMut::new();
        for csid in [3, 4, 5] {
            ChunkEncoder::new().write_message(&msg(csid, 0, 9, 1, 200), &mut wire);
        }
        let results: Vec<_> = (0..5).map(|_| decoder.decode_chunk(&mut wire)).collect();
        assert_eq!(
            results,
            vec![
                Ok(Decoded::Partial),
                Ok(Decoded::Message(msg(3, 0, 9, 1, 200))),
                Ok(Decoded::Partial),
                Ok(Decoded::Message(msg(4, 0, 9, 1, 200))),
                Err(ProtocolError::TooManyChunkStreams { max: 2 }),
            ]
        );
        let mut decoder = ChunkDecoder::new(Limits {
            max_chunk_streams: 3,
            ..limits
        });
        let mut wire = BytesMut::new();
        for csid in [3, 4, 5] {
            let mut whole = BytesMut::new();
            ChunkEncoder::new().write_message(&msg(csid, 0, 9, 1, 900), &mut whole);
            wire.extend_from_slice(&whole[..12 + 128]);
        }
        let err = (0..3)
            .map(|_| decoder.decode_chunk(&mut wire))
            .find(Result::is_err);
        assert_eq!(
            err,
            Some(Err(ProtocolError::BufferLimit { len: 384, max: 300 }))
        );
    }

    #[test]
    fn zero_length_messages_complete_immediately() {
        let mut wire = BytesMut::from(&[0x03, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 0][..]);
        let got = decode_all(&mut ChunkDecoder::new(Limits::default()), &mut wire);
        assert_eq!(got.len(), 1);
        assert!(got[0].payload.is_empty());
    }

    #[test]
    fn needs_whole_chunk_before_consuming() {
        let mut decoder = ChunkDecoder::new(Limits::default());
        let mut full = BytesMut::new();
        ChunkEncoder::new().write_message(&msg(3, 0, 20, 0, 50), &mut full);
        for len in 0..full.len() {
            let mut part = BytesMut::from(&full[..len]);
            assert_eq!(decoder.decode_chunk(&mut part), Ok(Decoded::NeedMore));
            assert_eq!(part.len(), len);
        }
    }
}
