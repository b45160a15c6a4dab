//! Why one file (1,096 lines): the connection is one sans-IO state machine (656 lines) whose
//! handlers share its stream table; the rest is its tests, which replay recorded publisher
//! bytes against it and need its internals. Chunking, AMF0 and the handshake are already
//! files of their own.
//!
//! Server-side RTMP connection: turns received bytes into publish events and protocol replies.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::amf0::{self, Amf0Value};
use super::chunk::{ChunkDecoder, ChunkEncoder, Decoded, Message};
use super::handshake::Handshake;
use super::{Limits, ProtocolError};

const SET_CHUNK_SIZE: u8 = 1;
const ABORT: u8 = 2;
const ACKNOWLEDGEMENT: u8 = 3;
const USER_CONTROL: u8 = 4;
const WINDOW_ACK_SIZE: u8 = 5;
const SET_PEER_BANDWIDTH: u8 = 6;
const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const DATA_AMF3: u8 = 15;
const COMMAND_AMF3: u8 = 17;
const DATA_AMF0: u8 = 18;
const COMMAND_AMF0: u8 = 20;
const AGGREGATE: u8 = 22;

const STREAM_BEGIN: u16 = 0;
const PING_REQUEST: u16 = 6;
const PING_RESPONSE: u16 = 7;

/// Chunk stream for protocol control and user control messages, fixed by the spec.
const CONTROL_CSID: u32 = 2;
/// Chunk stream for connection-level command replies.
const COMMAND_CSID: u32 = 3;
/// Chunk stream for stream-level status messages.
const STREAM_CSID: u32 = 5;
/// Outgoing chunk size announced after connect; fewer chunk headers than the default 128.
const SERVER_CHUNK_SIZE: u32 = 4096;
/// Window Acknowledgement Size and peer bandwidth announced to the client.
const SERVER_WINDOW: u32 = 2_500_000;
/// Most streams one connection may have created at once.
const MAX_STREAMS: usize = 16;
/// Input is processed in slices this big so one huge `feed` cannot balloon the buffer.
const FEED_SLICE: usize = 64 * 1024;

/// Something the application must know about or act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `connect` succeeded; the server has already replied with window, bandwidth, chunk size
    /// and `_result` NetConnection.Connect.Success.
    Connected { app: String, tc_url: Option<String> },
    /// The client asked to publish; answer with `accept_publish` or `reject_publish`.
    PublishRequested {
        stream_id: u32,
        app: String,
        stream_name: String,
        publish_type: String,
    },
    /// `onMetaData` properties, from `@setDataFrame` or a bare `onMetaData` data message.
    Metadata {
        stream_id: u32,
        data: Vec<(String, Amf0Value)>,
    },
    /// Message type 9; the payload is an FLV video tag body, unmodified (possibly empty).
    Video {
        stream_id: u32,
        timestamp_ms: u32,
        payload: Bytes,
    },
    /// Message type 8; the payload is an FLV audio tag body, unmodified (possibly empty).
    Audio {
        stream_id: u32,
        timestamp_ms: u32,
        payload: Bytes,
    },
    /// The client stopped publishing (FCUnpublish, deleteStream or closeStream); sent once.
    Unpublished { stream_id: u32 },
}

/// How far a created stream has got with publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublishState {
    Idle,
    Requested,
    Publishing,
    Rejected,
}

#[derive(Debug)]
struct NetStream {
    id: u32,
    name: String,
    state: PublishState,
}

impl NetStream {
    /// Media and metadata are only delivered for streams with a live publish request.
    fn is_active(&self) -> bool {
        matches!(
            self.state,
            PublishState::Requested | PublishState::Publishing
        )
    }
}

/// Protocol state for one TCP connection from a publishing client.
#[derive(Debug)]
pub struct ServerConnection {
    limits: Limits,
    handshake: Handshake,
    input: BytesMut,
    output: BytesMut,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    /// Total bytes received, for Acknowledgement sequence numbers.
    received: u64,
    /// Window the client asked us to acknowledge at (0 = never).
    ack_window: u32,
    acked: u64,
    app: Option<String>,
    streams: Vec<NetStream>,
    next_stream_id: u32,
    /// Set once a protocol error occurred; later feeds fail with it again.
    failure: Option<ProtocolError>,
}

impl ServerConnection {
    /// Starts a connection awaiting the client's C0+C1.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            handshake: Handshake::new(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            decoder: ChunkDecoder::new(limits),
            encoder: ChunkEncoder::new(),
            received: 0,
            ack_window: 0,
            acked: 0,
            app: None,
            streams: Vec::new(),
            next_stream_id: 1,
            failure: None,
        }
    }

    /// Feed bytes received from the socket. Returns events decoded so far.
    ///
    /// After an error the connection is dead: events from the failing call are dropped and
    /// every later call returns the same error.
    pub fn feed(&mut self, input: &[u8]) -> Result<Vec<Event>, ProtocolError> {
        if let Some(err) = &self.failure {
            return Err(err.clone());
        }
        let mut events = Vec::new();
        match self.feed_slices(input, &mut events) {
            Ok(()) => Ok(events),
            Err(err) => {
                self.input = BytesMut::new();
                self.decoder = ChunkDecoder::new(self.limits);
                self.failure = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Bytes to write to the socket (handshake replies, command responses, acks). Drains.
    pub fn take_output(&mut self) -> Bytes {
        if self.output.is_empty() {
            // Most reads answer nothing; splitting an empty buffer would still make it shared.
            return Bytes::new();
        }
        self.output.split().freeze()
    }

    /// Bytes currently held for unparsed input and partially reassembled messages.
    pub fn buffered_len(&self) -> usize {
        self.input.len() + self.decoder.assembling_len()
    }

    /// Answer a `PublishRequested` event: sends Stream Begin and NetStream.Publish.Start.
    ///
    /// Does nothing unless `stream_id` has a pending publish request.
    pub fn accept_publish(&mut self, stream_id: u32) {
        let Some(stream) = self
            .streams
            .iter_mut()
            .find(|s| s.id == stream_id && s.state == PublishState::Requested)
        else {
            return;
        };
        stream.state = PublishState::Publishing;
        let description = format!("{} is now published.", stream.name);
        let mut begin = Vec::with_capacity(6);
        begin.put_u16(STREAM_BEGIN);
        begin.put_u32(stream_id);
        self.send_control(USER_CONTROL, &begin);
        self.send_on_status(stream_id, "status", "NetStream.Publish.Start", &description);
    }

    /// Refuse a publish: sends onStatus level "error" with `code` (NetStream.Publish.BadName
    /// when empty); the caller then closes the connection.
    ///
    /// Does nothing if `stream_id` was never created.
    pub fn reject_publish(&mut self, stream_id: u32, code: &str, description: &str) {
        let Some(stream) = self.streams.iter_mut().find(|s| s.id == stream_id) else {
            return;
        };
        stream.state = PublishState::Rejected;
        let code = if code.is_empty() {
            "NetStream.Publish.BadName"
        } else {
            code
        };
        self.send_on_status(stream_id, "error", code, description);
    }

    fn feed_slices(&mut self, input: &[u8], events: &mut Vec<Event>) -> Result<(), ProtocolError> {
        for piece in input.chunks(FEED_SLICE) {
            self.received += piece.len() as u64;
            self.input.extend_from_slice(piece);
            self.process(events)?;
            let held = self.buffered_len();
            if held > self.limits.max_buffered_input {
                return Err(ProtocolError::BufferLimit {
                    len: held,
                    max: self.limits.max_buffered_input,
                });
            }
        }
        if self.ack_window > 0 && self.received - self.acked >= u64::from(self.ack_window) {
            self.acked = self.received;
            // The sequence number is defined modulo 2^32.
            self.send_control(ACKNOWLEDGEMENT, &(self.received as u32).to_be_bytes());
        }
        Ok(())
    }

    fn process(&mut self, events: &mut Vec<Event>) -> Result<(), ProtocolError> {
        if !self.handshake.is_done() {
            self.handshake.advance(&mut self.input, &mut self.output)?;
            if !self.handshake.is_done() {
                return Ok(());
            }
        }
        loop {
            match self.decoder.decode_chunk(&mut self.input)? {
                Decoded::NeedMore => return Ok(()),
                Decoded::Partial => {}
                Decoded::Message(message) => self.handle_message(message, events)?,
            }
        }
    }

    fn handle_message(
        &mut self,
        msg: Message,
        events: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        match msg.type_id {
            SET_CHUNK_SIZE => self.decoder.set_chunk_size(control_u32(&msg)?)?,
            ABORT => self.decoder.abort(control_u32(&msg)?),
            WINDOW_ACK_SIZE => self.ack_window = control_u32(&msg)?,
            USER_CONTROL => self.handle_user_control(&msg)?,
            AUDIO | VIDEO => self.handle_media(
                msg.type_id,
                msg.stream_id,
                msg.timestamp,
                msg.payload,
                events,
            ),
            DATA_AMF0 => self.handle_data(msg.stream_id, &msg.payload, events),
            DATA_AMF3 => self.handle_data(msg.stream_id, skip_amf3_format(&msg.payload), events),
            COMMAND_AMF0 => self.handle_command(msg.stream_id, &msg.payload, events)?,
            COMMAND_AMF3 => {
                self.handle_command(msg.stream_id, skip_amf3_format(&msg.payload), events)?
            }
            AGGREGATE => self.handle_aggregate(&msg, events)?,
            // Acknowledgements, peer bandwidth, shared objects and unknown types need nothing
            // from a server that only receives.
            _ => {}
        }
        Ok(())
    }

    fn handle_user_control(&mut self, msg: &Message) -> Result<(), ProtocolError> {
        let truncated = || ProtocolError::TruncatedControl {
            type_id: msg.type_id,
            len: msg.payload.len(),
        };
        let event = msg.payload.get(..2).ok_or_else(truncated)?;
        if u16::from_be_bytes([event[0], event[1]]) == PING_REQUEST {
            let timestamp = msg.payload.get(2..6).ok_or_else(truncated)?;
            let mut response = Vec::with_capacity(6);
            response.put_u16(PING_RESPONSE);
            response.extend_from_slice(timestamp);
            self.send_control(USER_CONTROL, &response);
        }
        Ok(())
    }

    fn handle_media(
        &mut self,
        type_id: u8,
        stream_id: u32,
        timestamp_ms: u32,
        payload: Bytes,
        events: &mut Vec<Event>,
    ) {
        if !self.is_active(stream_id) {
            return;
        }
        events.push(if type_id == AUDIO {
            Event::Audio {
                stream_id,
                timestamp_ms,
                payload,
            }
        } else {
            Event::Video {
                stream_id,
                timestamp_ms,
                payload,
            }
        });
    }

    /// Extracts `onMetaData`; other or malformed data messages are advisory and skipped.
    fn handle_data(&mut self, stream_id: u32, payload: &[u8], events: &mut Vec<Event>) {
        if !self.is_active(stream_id) {
            return;
        }
        let mut rest = payload;
        let mut next = || {
            let (value, used) = amf0::decode(rest).ok()?;
            rest = &rest[used..];
            Some(value)
        };
        let mut name = next();
        if name.as_ref().and_then(Amf0Value::as_str) == Some("@setDataFrame") {
            name = next();
        }
        if name.as_ref().and_then(Amf0Value::as_str) != Some("onMetaData") {
            return;
        }
        if let Some(Amf0Value::Object(data) | Amf0Value::EcmaArray(data)) = next() {
            events.push(Event::Metadata { stream_id, data });
        }
    }

    /// Splits an aggregate message (FLV-tag framed sub-messages) into media and data.
    fn handle_aggregate(
        &mut self,
        msg: &Message,
        events: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        let mut rest = msg.payload.clone();
        let mut first_timestamp = None;
        while !rest.is_empty() {
            if rest.len() < 11 {
                return Err(ProtocolError::MalformedAggregate);
            }
            let type_id = rest[0];
            let size = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
            let timestamp = u32::from_be_bytes([rest[7], rest[4], rest[5], rest[6]]);
            if rest.len() < 11 + size + 4 {
                return Err(ProtocolError::MalformedAggregate);
            }
            let body = rest.slice(11..11 + size);
            rest.advance(11 + size + 4);
            let first = *first_timestamp.get_or_insert(timestamp);
            let timestamp = msg.timestamp.wrapping_add(timestamp.wrapping_sub(first));
            match type_id {
                AUDIO | VIDEO => self.handle_media(type_id, msg.stream_id, timestamp, body, events),
                DATA_AMF0 => self.handle_data(msg.stream_id, &body, events),
                _ => {}
            }
        }
        Ok(())
    }

    fn handle_command(
        &mut self,
        stream_id: u32,
        payload: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        let mut values = amf0::decode_all(payload)?.into_iter();
        let Some(Amf0Value::String(name)) = values.next() else {
            return Err(ProtocolError::InvalidCommand(
                "command name is not a string".into(),
            ));
        };
        let transaction_id = values.next().and_then(|v| v.as_number()).unwrap_or(0.0);
        let command_object = values.next().unwrap_or(Amf0Value::Null);
        let args: Vec<Amf0Value> = values.collect();
        match name.as_str() {
            "connect" => return self.on_connect(transaction_id, &command_object, events),
            // Replies and notifications the client sends unprompted never need an answer.
            "_result" | "_error" | "onStatus" | "_checkbw" | "onBWDone" => return Ok(()),
            _ if self.app.is_none() => return Err(ProtocolError::NotConnected(name)),
            _ => {}
        }
        match name.as_str() {
            "releaseStream" => self.reply_result(transaction_id, Amf0Value::Undefined),
            "FCPublish" => {
                self.reply_result(transaction_id, Amf0Value::Undefined);
                let stream_name = args.first().and_then(Amf0Value::as_str).unwrap_or("");
                let info = status_object("status", "NetStream.Publish.Start", stream_name);
                self.send_command(
                    COMMAND_CSID,
                    0,
                    &["onFCPublish".into(), 0.0.into(), Amf0Value::Null, info],
                );
            }
            "createStream" => self.on_create_stream(transaction_id)?,
            "publish" => self.on_publish(stream_id, &args, events)?,
            "FCUnpublish" => {
                if let Some(id) = self.stream_named(args.first()) {
                    self.end_publish(id, events);
                }
            }
            "deleteStream" => {
                // rtmp2sink passes the stream name here instead of the stream id.
                let id = match args.first() {
                    Some(Amf0Value::Number(n)) => Some(*n as u32),
                    name => self.stream_named(name),
                };
                if let Some(id) = id {
                    self.end_publish(id, events);
                    self.streams.retain(|s| s.id != id);
                }
            }
            "closeStream" => self.end_publish(stream_id, events),
            _ if transaction_id > 0.0 => {
                let info = status_object(
                    "error",
                    "NetConnection.Call.Failed",
                    &format!("Method not found ({name})."),
                );
                self.send_command(
                    COMMAND_CSID,
                    0,
                    &[
                        "_error".into(),
                        transaction_id.into(),
                        Amf0Value::Null,
                        info,
                    ],
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn on_connect(
        &mut self,
        transaction_id: f64,
        command_object: &Amf0Value,
        events: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        if self.app.is_some() {
            return Err(ProtocolError::InvalidCommand("duplicate connect".into()));
        }
        let app = command_object
            .get("app")
            .and_then(Amf0Value::as_str)
            .unwrap_or("")
            .to_owned();
        let tc_url = command_object
            .get("tcUrl")
            .and_then(Amf0Value::as_str)
            .map(str::to_owned);
        self.send_control(WINDOW_ACK_SIZE, &SERVER_WINDOW.to_be_bytes());
        let mut bandwidth = SERVER_WINDOW.to_be_bytes().to_vec();
        bandwidth.push(2);
        self.send_control(SET_PEER_BANDWIDTH, &bandwidth);
        self.send_control(SET_CHUNK_SIZE, &SERVER_CHUNK_SIZE.to_be_bytes());
        self.encoder.set_chunk_size(SERVER_CHUNK_SIZE);
        let properties = Amf0Value::Object(vec![
            ("fmsVer".into(), "FMS/3,0,1,123".into()),
            ("capabilities".into(), 31.0.into()),
        ]);
        let mut info = status_object(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
        );
        if let Amf0Value::Object(props) = &mut info {
            // Only AMF0 is spoken, whatever encoding the client offered.
            props.push(("objectEncoding".into(), 0.0.into()));
        }
        self.send_command(
            COMMAND_CSID,
            0,
            &["_result".into(), transaction_id.into(), properties, info],
        );
        self.app = Some(app.clone());
        events.push(Event::Connected { app, tc_url });
        Ok(())
    }

    fn on_create_stream(&mut self, transaction_id: f64) -> Result<(), ProtocolError> {
        if self.streams.len() >= MAX_STREAMS {
            return Err(ProtocolError::TooManyStreams(MAX_STREAMS));
        }
        let id = self.next_stream_id;
        self.next_stream_id = id
            .checked_add(1)
            .ok_or(ProtocolError::TooManyStreams(MAX_STREAMS))?;
        self.streams.push(NetStream {
            id,
            name: String::new(),
            state: PublishState::Idle,
        });
        self.send_command(
            COMMAND_CSID,
            0,
            &[
                "_result".into(),
                transaction_id.into(),
                Amf0Value::Null,
                f64::from(id).into(),
            ],
        );
        Ok(())
    }

    fn on_publish(
        &mut self,
        stream_id: u32,
        args: &[Amf0Value],
        events: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        let app = self.app.clone().unwrap_or_default();
        let Some(stream) = self.streams.iter_mut().find(|s| s.id == stream_id) else {
            return Err(ProtocolError::UnknownStream(stream_id));
        };
        if stream.is_active() {
            return Err(ProtocolError::InvalidCommand(format!(
                "publish on stream {stream_id} which is already publishing"
            )));
        }
        let stream_name = args.first().and_then(Amf0Value::as_str).unwrap_or("");
        let publish_type = args.get(1).and_then(Amf0Value::as_str).unwrap_or("live");
        stream.name = stream_name.to_owned();
        stream.state = PublishState::Requested;
        events.push(Event::PublishRequested {
            stream_id,
            app,
            stream_name: stream_name.to_owned(),
            publish_type: publish_type.to_owned(),
        });
        Ok(())
    }

    /// Emits `Unpublished` once per publish, however many teardown commands follow.
    fn end_publish(&mut self, stream_id: u32, events: &mut Vec<Event>) {
        if let Some(stream) = self
            .streams
            .iter_mut()
            .find(|s| s.id == stream_id && s.is_active())
        {
            stream.state = PublishState::Idle;
            events.push(Event::Unpublished { stream_id });
        }
    }

    /// The id of the active stream published under the name in `name`, if any.
    fn stream_named(&self, name: Option<&Amf0Value>) -> Option<u32> {
        let name = name.and_then(Amf0Value::as_str)?;
        self.streams
            .iter()
            .find(|s| s.is_active() && s.name == name)
            .map(|s| s.id)
    }

    fn is_active(&self, stream_id: u32) -> bool {
        self.streams
            .iter()
            .any(|s| s.id == stream_id && s.is_active())
    }

    fn reply_result(&mut self, transaction_id: f64, value: Amf0Value) {
        if transaction_id > 0.0 {
            self.send_command(
                COMMAND_CSID,
                0,
                &[
                    "_result".into(),
                    transaction_id.into(),
                    Amf0Value::Null,
                    value,
                ],
            );
        }
    }

    fn send_on_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let info = status_object(level, code, description);
        self.send_command(
            STREAM_CSID,
            stream_id,
            &["onStatus".into(), 0.0.into(), Amf0Value::Null, info],
        );
    }

    fn send_command(&mut self, csid: u32, stream_id: u32, values: &[Amf0Value]) {
        self.send(csid, COMMAND_AMF0, stream_id, amf0::encode_all(values));
    }

    fn send_control(&mut self, type_id: u8, payload: &[u8]) {
        self.send(CONTROL_CSID, type_id, 0, payload.to_vec());
    }

    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Vec<u8>) {
        let message = Message {
            csid,
            timestamp: 0,
            type_id,
            stream_id,
            payload: payload.into(),
        };
        self.encoder.write_message(&message, &mut self.output);
    }
}

fn status_object(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::Object(vec![
        ("level".into(), level.into()),
        ("code".into(), code.into()),
        ("description".into(), description.into()),
    ])
}

/// Reads the 4-byte big-endian value of a protocol control message.
fn control_u32(msg: &Message) -> Result<u32, ProtocolError> {
    let bytes = msg
        .payload
        .get(..4)
        .ok_or(ProtocolError::TruncatedControl {
            type_id: msg.type_id,
            len: msg.payload.len(),
        })?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// AMF3 command and data messages prefix AMF0 values with a 0x00 format byte.
fn skip_amf3_format(payload: &[u8]) -> &[u8] {
    match payload.split_first() {
        Some((0, rest)) => rest,
        _ => payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::rtmp::handshake::HANDSHAKE_SIZE;

    /// Minimal client side used to script sessions and read the server's replies.
    struct Client {
        encoder: ChunkEncoder,
        decoder: ChunkDecoder,
        server_bytes: BytesMut,
    }

    impl Client {
        fn connect(conn: &mut ServerConnection) -> Self {
            let mut hello = vec![3u8];
            hello.extend(std::iter::repeat_n(9, 2 * HANDSHAKE_SIZE));
            assert!(conn.feed(&hello).unwrap().is_empty());
            let reply = conn.take_output();
            assert_eq!(reply.len(), 1 + 2 * HANDSHAKE_SIZE);
            Self {
                encoder: ChunkEncoder::new(),
                decoder: ChunkDecoder::new(Limits::default()),
                server_bytes: BytesMut::new(),
            }
        }

        fn message(
            &self,
            csid: u32,
            type_id: u8,
            stream_id: u32,
            ts: u32,
            payload: &[u8],
        ) -> Vec<u8> {
            let mut out = BytesMut::new();
            let message = Message {
                csid,
                timestamp: ts,
                type_id,
                stream_id,
                payload: Bytes::copy_from_slice(payload),
            };
            self.encoder.write_message(&message, &mut out);
            out.to_vec()
        }

        fn command(&self, stream_id: u32, values: &[Amf0Value]) -> Vec<u8> {
            self.message(3, COMMAND_AMF0, stream_id, 0, &amf0::encode_all(values))
        }

        fn replies(&mut self, conn: &mut ServerConnection) -> Vec<Message> {
            self.server_bytes.extend_from_slice(&conn.take_output());
            let mut out = Vec::new();
            loop {
                match self.decoder.decode_chunk(&mut self.server_bytes).unwrap() {
                    Decoded::NeedMore => return out,
                    Decoded::Partial => {}
                    Decoded::Message(m) => {
                        if m.type_id == SET_CHUNK_SIZE {
                            self.decoder
                                .set_chunk_size(control_u32(&m).unwrap())
                                .unwrap();
                        }
                        out.push(m);
                    }
                }
            }
        }
    }

    fn cmd(name: &str, tx: f64, rest: Vec<Amf0Value>) -> Vec<Amf0Value> {
        let mut values = vec![name.into(), tx.into(), Amf0Value::Null];
        values.extend(rest);
        values
    }

    fn connect_values() -> Vec<Amf0Value> {
        vec![
            "connect".into(),
            1.0.into(),
            Amf0Value::Object(vec![
                ("app".into(), "live".into()),
                ("tcUrl".into(), "rtmp://h/live".into()),
            ]),
        ]
    }

    fn decode_command(m: &Message) -> Vec<Amf0Value> {
        assert_eq!(m.type_id, COMMAND_AMF0);
        amf0::decode_all(&m.payload).unwrap()
    }

    fn code(values: &[Amf0Value]) -> Option<&str> {
        values.get(3)?.get("code")?.as_str()
    }

    /// Connects, creates stream 1 and requests publishing "key".
    fn publishing_session() -> (ServerConnection, Client) {
        let mut conn = ServerConnection::new(Limits::default());
        let mut client = Client::connect(&mut conn);
        conn.feed(&client.command(0, &connect_values())).unwrap();
        conn.feed(&client.command(0, &cmd("createStream", 2.0, vec![])))
            .unwrap();
        let events = conn
            .feed(&client.command(1, &cmd("publish", 3.0, vec!["key".into(), "live".into()])))
            .unwrap();
        assert_eq!(events.len(), 1);
        client.replies(&mut conn);
        (conn, client)
    }

    #[test]
    fn full_publish_flow() {
        let mut conn = ServerConnection::new(Limits::default());
        let mut client = Client::connect(&mut conn);

        let events = conn.feed(&client.command(0, &connect_values())).unwrap();
        assert_eq!(
            events,
            vec![Event::Connected {
                app: "live".into(),
                tc_url: Some("rtmp://h/live".into())
            }]
        );
        let replies = client.replies(&mut conn);
        let kinds: Vec<u8> = replies.iter().map(|m| m.type_id).collect();
        assert_eq!(
            kinds,
            vec![
                WINDOW_ACK_SIZE,
                SET_PEER_BANDWIDTH,
                SET_CHUNK_SIZE,
                COMMAND_AMF0
            ]
        );
        assert_eq!(control_u32(&replies[2]).unwrap(), 4096);
        let result = decode_command(&replies[3]);
        assert_eq!(result[0].as_str(), Some("_result"));
        assert_eq!(result[1].as_number(), Some(1.0));
        assert_eq!(code(&result), Some("NetConnection.Connect.Success"));

        conn.feed(&client.command(0, &cmd("releaseStream", 2.0, vec!["key".into()])))
            .unwrap();
        conn.feed(&client.command(0, &cmd("FCPublish", 3.0, vec!["key".into()])))
            .unwrap();
        conn.feed(&client.command(0, &cmd("createStream", 4.0, vec![])))
            .unwrap();
        let replies: Vec<_> = client
            .replies(&mut conn)
            .iter()
            .map(decode_command)
            .collect();
        assert_eq!(replies.len(), 4);
        assert_eq!(replies[1][0].as_str(), Some("_result"));
        assert_eq!(replies[2][0].as_str(), Some("onFCPublish"));
        assert_eq!(replies[3][1].as_number(), Some(4.0));
        assert_eq!(replies[3][3].as_number(), Some(1.0));

        let events = conn
            .feed(&client.command(1, &cmd("publish", 5.0, vec!["key".into(), "live".into()])))
            .unwrap();
        assert_eq!(
            events,
            vec![Event::PublishRequested {
                stream_id: 1,
                app: "live".into(),
                stream_name: "key".into(),
                publish_type: "live".into()
            }]
        );
        assert!(client.replies(&mut conn).is_empty());
        conn.accept_publish(1);
        let replies = client.replies(&mut conn);
        assert_eq!(replies[0].type_id, USER_CONTROL);
        assert_eq!(&replies[0].payload[..], &[0, 0, 0, 0, 0, 1]);
        let status = decode_command(&replies[1]);
        assert_eq!(replies[1].stream_id, 1);
        assert_eq!(code(&status), Some("NetStream.Publish.Start"));

        let mut metadata = vec![
            Amf0Value::from("@setDataFrame"),
            "onMetaData".into(),
            Amf0Value::EcmaArray(vec![("width".into(), 320.0.into())]),
        ];
        let mut events = conn
            .feed(&client.message(4, DATA_AMF0, 1, 0, &amf0::encode_all(&metadata)))
            .unwrap();
        metadata.remove(0);
        let mut amf3 = vec![0u8];
        amf3.extend(amf0::encode_all(&metadata));
        events.extend(
            conn.feed(&client.message(4, DATA_AMF3, 1, 0, &amf3))
                .unwrap(),
        );
        let video = vec![0x17; 5000];
        events.extend(conn.feed(&client.message(6, VIDEO, 1, 33, &video)).unwrap());
        events.extend(
            conn.feed(&client.message(4, AUDIO, 1, 40, &[0xAF, 1, 2]))
                .unwrap(),
        );
        let expected_metadata = Event::Metadata {
            stream_id: 1,
            data: vec![("width".into(), 320.0.into())],
        };
        assert_eq!(events[0], expected_metadata);
        assert_eq!(events[1], expected_metadata);
        assert_eq!(
            events[2],
            Event::Video {
                stream_id: 1,
                timestamp_ms: 33,
                payload: video.into()
            }
        );
        assert_eq!(
            events[3],
            Event::Audio {
                stream_id: 1,
                timestamp_ms: 40,
                payload: Bytes::from_static(&[0xAF, 1, 2])
            }
        );

        let events = conn
            .feed(&client.command(0, &cmd("FCUnpublish", 6.0, vec!["key".into()])))
            .unwrap();
        assert_eq!(events, vec![Event::Unpublished { stream_id: 1 }]);
        let events = conn
            .feed(&client.command(0, &cmd("deleteStream", 7.0, vec![1.0.into()])))
            .unwrap();
        assert!(events.is_empty());
        assert!(
            conn.feed(&client.message(6, VIDEO, 1, 66, &[0x27]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn reject_sends_error_status_and_drops_media() {
        let (mut conn, mut client) = publishing_session();
        conn.reject_publish(1, "", "stream key not allowed");
        let status = decode_command(&client.replies(&mut conn)[0]);
        assert_eq!(
            status[3].get("level").and_then(Amf0Value::as_str),
            Some("error")
        );
        assert_eq!(code(&status), Some("NetStream.Publish.BadName"));
        assert_eq!(
            status[3].get("description").and_then(Amf0Value::as_str),
            Some("stream key not allowed")
        );
        assert!(
            conn.feed(&client.message(6, VIDEO, 1, 0, &[0x17]))
                .unwrap()
                .is_empty()
        );
        conn.reject_publish(1, "NetStream.Publish.Denied", "no");
        assert_eq!(
            code(&decode_command(&client.replies(&mut conn)[0])),
            Some("NetStream.Publish.Denied")
        );
    }

    #[test]
    fn delete_and_close_stream_end_publishing() {
        let (mut conn, client) = publishing_session();
        let events = conn
            .feed(&client.command(0, &cmd("deleteStream", 0.0, vec![1.0.into()])))
            .unwrap();
        assert_eq!(events, vec![Event::Unpublished { stream_id: 1 }]);
        let (mut conn, client) = publishing_session();
        let events = conn
            .feed(&client.command(0, &cmd("deleteStream", 0.0, vec!["key".into()])))
            .unwrap();
        assert_eq!(events, vec![Event::Unpublished { stream_id: 1 }]);
        let (mut conn, client) = publishing_session();
        let events = conn
            .feed(&client.command(1, &cmd("closeStream", 0.0, vec![])))
            .unwrap();
        assert_eq!(events, vec![Event::Unpublished { stream_id: 1 }]);
    }

    #[test]
    fn answers_ping_and_acknowledges_window() {
        let (mut conn, mut client) = publishing_session();
        conn.feed(&client.message(2, USER_CONTROL, 0, 0, &[0, 6, 0, 0, 0x12, 0x34]))
            .unwrap();
        let replies = client.replies(&mut conn);
        assert_eq!(&replies[0].payload[..], &[0, 7, 0, 0, 0x12, 0x34]);

        conn.feed(&client.message(2, WINDOW_ACK_SIZE, 0, 0, &5000u32.to_be_bytes()))
            .unwrap();
        assert!(client.replies(&mut conn).is_empty());
        // Handshake and setup bytes already exceed the window, so the first feed acks.
        let audio = client.message(4, AUDIO, 1, 0, &[0xAF; 3000]);
        let mut acks = Vec::new();
        for _ in 0..3 {
            conn.feed(&audio).unwrap();
            acks.push(
                client
                    .replies(&mut conn)
                    .iter()
                    .map(|m| control_u32(m).unwrap())
                    .collect::<Vec<_>>(),
            );
        }
        let total = conn.received as u32;
        let step = audio.len() as u32;
        assert_eq!(acks, vec![vec![total - 2 * step], vec![], vec![total]]);
    }

    #[test]
    fn unknown_commands_get_error_only_when_expected() {
        let (mut conn, mut client) = publishing_session();
        conn.feed(&client.command(0, &cmd("getStreamLength", 0.0, vec!["key".into()])))
            .unwrap();
        assert!(client.replies(&mut conn).is_empty());
        conn.feed(&client.command(0, &cmd("getStreamLength", 9.0, vec!["key".into()])))
            .unwrap();
        let reply = decode_command(&client.replies(&mut conn)[0]);
        assert_eq!(reply[0].as_str(), Some("_error"));
        assert_eq!(reply[1].as_number(), Some(9.0));
        conn.feed(&client.command(0, &cmd("_result", 1.0, vec![])))
            .unwrap();
        assert!(client.replies(&mut conn).is_empty());
    }

    #[test]
    fn amf3_command_and_chunk_size_change() {
        let mut conn = ServerConnection::new(Limits::default());
        let mut client = Client::connect(&mut conn);
        conn.feed(&client.message(2, SET_CHUNK_SIZE, 0, 0, &60000u32.to_be_bytes()))
            .unwrap();
        client.encoder.set_chunk_size(60000);
        let mut payload = vec![0u8];
        payload.extend(amf0::encode_all(&connect_values()));
        let events = conn
            .feed(&client.message(3, COMMAND_AMF3, 0, 0, &payload))
            .unwrap();
        assert!(matches!(&events[0], Event::Connected { app, .. } if app == "live"));
    }

    #[test]
    fn aggregate_messages_are_split() {
        let (mut conn, client) = publishing_session();
        let mut aggregate = Vec::new();
        for (type_id, ts, body) in [
            (VIDEO, 100u32, &[0x17u8, 1][..]),
            (AUDIO, 120, &[0xAF, 1, 9][..]),
        ] {
            aggregate.push(type_id);
            aggregate.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            aggregate.extend_from_slice(&ts.to_be_bytes()[1..]);
            aggregate.push((ts >> 24) as u8);
            aggregate.extend_from_slice(&[0, 0, 0]);
            aggregate.extend_from_slice(body);
            aggregate.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        }
        let events = conn
            .feed(&client.message(6, AGGREGATE, 1, 1000, &aggregate))
            .unwrap();
        assert_eq!(
            events,
            vec![
                Event::Video {
                    stream_id: 1,
                    timestamp_ms: 1000,
                    payload: Bytes::from_static(&[0x17, 1])
                },
                Event::Audio {
                    stream_id: 1,
                    timestamp_ms: 1020,
                    payload: Bytes::from_static(&[0xAF, 1, 9])
                },
            ]
        );
        let err = conn
            .feed(&client.message(6, AGGREGATE, 1, 0, &aggregate[..20]))
            .unwrap_err();
        assert_eq!(err, ProtocolError::MalformedAggregate);
    }

    #[test]
    fn errors_are_sticky_and_descriptive() {
        let mut conn = ServerConnection::new(Limits::default());
        let client = Client::connect(&mut conn);
        let err = conn
            .feed(&client.command(1, &cmd("publish", 2.0, vec!["k".into()])))
            .unwrap_err();
        assert_eq!(err, ProtocolError::NotConnected("publish".into()));
        assert_eq!(conn.feed(&[]).unwrap_err(), err);

        let mut conn = ServerConnection::new(Limits::default());
        let client = Client::connect(&mut conn);
        conn.feed(&client.command(0, &connect_values())).unwrap();
        let err = conn
            .feed(&client.command(7, &cmd("publish", 2.0, vec!["k".into()])))
            .unwrap_err();
        assert_eq!(err, ProtocolError::UnknownStream(7));

        let mut conn = ServerConnection::new(Limits::default());
        let client = Client::connect(&mut conn);
        let err = conn
            .feed(&client.message(2, SET_CHUNK_SIZE, 0, 0, &[0, 0, 0, 0]))
            .unwrap_err();
        assert_eq!(err.to_string(), "chunk size 0");

        let mut conn = ServerConnection::new(Limits::default());
        let client = Client::connect(&mut conn);
        let err = conn
            .feed(&client.message(2, SET_CHUNK_SIZE, 0, 0, &[0, 1]))
            .unwrap_err();
        assert_eq!(err, ProtocolError::TruncatedControl { type_id: 1, len: 2 });
    }

    #[test]
    fn limits_bound_buffering_even_for_one_huge_feed() {
        let limits = Limits {
            max_message_len: 1 << 20,
            max_chunk_size: 1 << 20,
            max_chunk_streams: 4,
            max_buffered_input: 100_000,
        };
        let mut conn = ServerConnection::new(limits);
        let mut client = Client::connect(&mut conn);
        conn.feed(&client.message(2, SET_CHUNK_SIZE, 0, 0, &(1u32 << 20).to_be_bytes()))
            .unwrap();
        client.encoder.set_chunk_size(1 << 20);
        let huge = client.message(6, VIDEO, 0, 0, &vec![0; 1 << 20]);
        let err = conn.feed(&huge).unwrap_err();
        assert!(
            matches!(err, ProtocolError::BufferLimit { max: 100_000, .. }),
            "{err}"
        );
        assert_eq!(conn.buffered_len(), 0);
    }
}
