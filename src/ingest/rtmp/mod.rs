//! RTMP ingest. The protocol (handshake, chunk stream, AMF0, the publish command flow) is
//! sans-IO: nothing but `server.rs` performs I/O. The caller feeds bytes read from a socket into a
//! [`ServerConnection`], handles the returned [`Event`]s, and writes whatever
//! [`ServerConnection::take_output`] returns back to the socket.

pub mod amf0;
pub mod chunk;
pub mod connection;
pub mod handshake;
pub mod server;

#[cfg(test)]
mod tests;

pub use amf0::{Amf0Error, Amf0Value};
pub use connection::{Event, ServerConnection};

/// Resource limits that keep a hostile peer from exhausting memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message length accepted from a chunk header.
    pub max_message_len: usize,
    /// Largest chunk size the peer may select with Set Chunk Size.
    pub max_chunk_size: u32,
    /// Most chunk stream ids the peer may use at once.
    pub max_chunk_streams: usize,
    /// Most bytes held for unparsed input plus partially reassembled messages.
    pub max_buffered_input: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_len: 8 << 20,
            max_chunk_size: 1 << 20,
            max_chunk_streams: 64,
            max_buffered_input: 16 << 20,
        }
    }
}

/// Why a connection cannot continue; the caller should close the socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The first handshake byte (C0) was not RTMP version 3.
    #[error("unsupported handshake version {0}")]
    UnsupportedVersion(u8),
    /// The peer selected a chunk size of zero.
    #[error("chunk size 0")]
    ChunkSizeZero,
    /// The peer selected a chunk size above [`Limits::max_chunk_size`].
    #[error("chunk size {size} exceeds limit {max}")]
    ChunkSizeTooLarge { size: u32, max: u32 },
    /// A chunk header announced a message above [`Limits::max_message_len`].
    #[error("message of {len} bytes exceeds limit {max}")]
    MessageTooLarge { len: usize, max: usize },
    /// The peer used more chunk stream ids than [`Limits::max_chunk_streams`].
    #[error("more than {max} chunk streams in use")]
    TooManyChunkStreams { max: usize },
    /// A compressed chunk header (type 1, 2 or 3) arrived on a chunk stream with no history.
    #[error("chunk type {fmt} on chunk stream {csid} without a previous full header")]
    MissingChunkHeader { csid: u32, fmt: u8 },
    /// Buffered input and partial messages grew past [`Limits::max_buffered_input`].
    #[error("{len} buffered bytes exceed limit {max}")]
    BufferLimit { len: usize, max: usize },
    /// A protocol control message was shorter than its fixed layout.
    #[error("control message type {type_id} too short ({len} bytes)")]
    TruncatedControl { type_id: u8, len: usize },
    /// An aggregate message's sub-message headers did not fit its payload.
    #[error("malformed aggregate message")]
    MalformedAggregate,
    /// A command message was not valid AMF0.
    #[error("malformed AMF0 command: {0}")]
    Amf0(#[from] Amf0Error),
    /// A command message decoded but did not have the expected shape.
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    /// A command other than `connect` arrived before `connect`.
    #[error("command {0:?} received before connect")]
    NotConnected(String),
    /// A stream-level command referred to a stream that was never created.
    #[error("command for unknown stream {0}")]
    UnknownStream(u32),
    /// The peer created more streams than the server is willing to track.
    #[error("more than {0} streams created")]
    TooManyStreams(usize),
}
