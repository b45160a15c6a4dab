//! Replays recorded real client sessions and fuzzes the server with garbage and mutations.

use super::handshake::HANDSHAKE_SIZE;
use super::{Event, Limits, ServerConnection};

/// Bytes ffmpeg sent while publishing (captured from a real publish to a recording server).
const FFMPEG: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/rtmp/ffmpeg_publish.bin"
));
/// Bytes GStreamer's rtmp2sink sent while publishing.
const GST: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/rtmp/gst_publish.bin"
));

/// Small deterministic xorshift64* generator, so failures reproduce without extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A piece length skewed towards small sizes but sometimes large.
    fn piece_len(&mut self) -> usize {
        match self.below(4) {
            0 => 1,
            1 => 1 + self.below(16),
            2 => 1 + self.below(2048),
            _ => 1 + self.below(70_000),
        }
    }
}

/// Feeds `data` in pieces of the given lengths, accepting publishes; returns events and output.
fn replay(data: &[u8], mut piece_len: impl FnMut() -> usize) -> (Vec<Event>, Vec<u8>) {
    let mut conn = ServerConnection::new(Limits::default());
    let mut events = Vec::new();
    let mut output = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + piece_len()).min(data.len());
        for event in conn.feed(&data[pos..end]).expect("fixture decodes") {
            if let Event::PublishRequested { stream_id, .. } = event {
                conn.accept_publish(stream_id);
            }
            events.push(event);
        }
        output.extend_from_slice(&conn.take_output());
        pos = end;
    }
    assert_eq!(conn.buffered_len(), 0, "bytes left over");
    (events, output)
}

fn check_session(events: &[Event], output: &[u8], fixture: &[u8]) {
    assert!(
        matches!(&events[0], Event::Connected { app, tc_url: Some(_) } if app == "live"),
        "{:?}",
        events[0]
    );
    assert!(matches!(
        &events[1],
        Event::PublishRequested { stream_id: 1, app, stream_name, publish_type }
            if app == "live" && stream_name == "testkey" && publish_type == "live"
    ));
    let videos: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Video {
                timestamp_ms,
                payload,
                ..
            } => Some((*timestamp_ms, payload)),
            _ => None,
        })
        .collect();
    let first = videos[0].1;
    assert_eq!(first[0] >> 4, 1, "keyframe");
    assert_eq!(first[0] & 0xF, 7, "AVC");
    assert_eq!(first[1], 0, "AVC sequence header");
    assert!(videos.len() >= 80, "{} video messages", videos.len());
    assert!(videos.windows(2).all(|w| w[0].0 <= w[1].0));
    let span = videos[videos.len() - 1].0 - videos[0].0;
    assert!((2500..=3500).contains(&span), "video spans {span} ms");
    let audio = events
        .iter()
        .find_map(|e| match e {
            Event::Audio { payload, .. } => Some(payload),
            _ => None,
        })
        .expect("audio");
    assert_eq!(audio[0] >> 4, 10, "AAC");
    assert_eq!(audio[1], 0, "AAC sequence header");
    let width = events.iter().find_map(|e| match e {
        Event::Metadata { data, .. } => data
            .iter()
            .find(|(k, _)| k == "width")
            .and_then(|(_, v)| v.as_number()),
        _ => None,
    });
    assert_eq!(width, Some(320.0));
    assert_eq!(events.last(), Some(&Event::Unpublished { stream_id: 1 }));

    assert_eq!(output[0], 3, "S0");
    let s2 = &output[1 + HANDSHAKE_SIZE..1 + 2 * HANDSHAKE_SIZE];
    assert_eq!(s2, &fixture[1..1 + HANDSHAKE_SIZE], "S2 echoes C1");
    assert!(output.len() > 1 + 2 * HANDSHAKE_SIZE, "command replies");
}

#[test]
fn fixtures_replay_whole_bytewise_and_in_random_pieces() {
    for (seed, fixture) in [(1, FFMPEG), (2, GST)] {
        let (whole, output) = replay(fixture, || usize::MAX);
        check_session(&whole, &output, fixture);
        // Outputs differ in order (publish replies interleave differently), events must not.
        let (bytewise, _) = replay(fixture, || 1);
        assert!(bytewise == whole, "byte-by-byte replay differs");
        for round in 0..4 {
            let mut rng = Rng(seed * 1000 + round);
            let (pieces, _) = replay(fixture, || rng.piece_len());
            assert!(pieces == whole, "random-piece replay {round} differs");
        }
    }
}

#[test]
fn ffmpeg_fixture_uses_digest_handshake_and_gst_simple() {
    // Bytes 4..8 of C1 are zero for the simple handshake and the Flash version otherwise.
    assert_ne!(&FFMPEG[5..9], &[0; 4]);
    assert_eq!(&GST[5..9], &[0; 4]);
}

/// Feeds `data` in random pieces, checking buffers stay bounded and errors stay sticky.
fn feed_hostile(data: &[u8], limits: Limits, rng: &mut Rng) {
    let mut conn = ServerConnection::new(limits);
    let bytewise = rng.below(16) == 0;
    let mut pos = 0;
    while pos < data.len() {
        let len = if bytewise { 1 } else { rng.piece_len() };
        let end = (pos + len).min(data.len());
        let result = conn.feed(&data[pos..end]);
        assert!(conn.buffered_len() <= limits.max_buffered_input);
        match result {
            Ok(events) => {
                for event in events {
                    if let Event::PublishRequested { stream_id, .. } = event {
                        if rng.below(2) == 0 {
                            conn.accept_publish(stream_id);
                        } else {
                            conn.reject_publish(stream_id, "", "no");
                        }
                    }
                }
            }
            Err(err) => {
                assert_eq!(conn.feed(b"more").unwrap_err(), err);
                assert_eq!(conn.buffered_len(), 0);
                return;
            }
        }
        conn.take_output();
        pos = end;
    }
}

fn mutate(fixture: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = fixture.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len());
        match rng.below(6) {
            0 => data.truncate(at),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(data.len());
                    if let Some(b) = data.get_mut(i) {
                        *b = rng.next() as u8;
                    }
                }
            }
            2 => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                data.drain(at..end);
            }
            3 => {
                let len = 1 + rng.below(64);
                let junk = rng.bytes(len);
                data.splice(at..at, junk);
            }
            4 => {
                let end = (at + 1 + rng.below(4096)).min(data.len());
                let copy = data[at..end].to_vec();
                let to = rng.below(data.len());
                data.splice(to..to, copy);
            }
            _ => {
                if let Some(b) = data.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
    }
    data
}

fn hostile_limits(rng: &mut Rng) -> Limits {
    if rng.below(2) == 0 {
        Limits::default()
    } else {
        Limits {
            max_message_len: 1 + rng.below(64 << 10),
            max_chunk_size: 1 + rng.below(64 << 10) as u32,
            max_chunk_streams: 1 + rng.below(8),
            max_buffered_input: 1 + rng.below(256 << 10),
        }
    }
}

#[test]
fn mutated_fixtures_never_panic_and_stay_bounded() {
    let mut rng = Rng(0x5EED);
    for round in 0..400 {
        let fixture = if round % 2 == 0 { FFMPEG } else { GST };
        let data = mutate(fixture, &mut rng);
        let limits = hostile_limits(&mut rng);
        feed_hostile(&data, limits, &mut rng);
    }
}

#[test]
fn garbage_never_panics_and_stays_bounded() {
    let mut rng = Rng(0xBAD5EED);
    let session_start = &FFMPEG[..1 + 2 * HANDSHAKE_SIZE + 200];
    for round in 0..900 {
        let mut data = match round % 3 {
            // Raw garbage mostly fails at the version byte.
            0 => Vec::new(),
            // Garbage after a valid handshake exercises the chunk decoder.
            1 => {
                let mut d = vec![3];
                d.extend(rng.bytes(2 * HANDSHAKE_SIZE));
                d
            }
            // Garbage after connect exercises command and media handling.
            _ => session_start.to_vec(),
        };
        let len = rng.below(20_000);
        if rng.below(2) == 0 {
            data.extend(rng.bytes(len));
        } else {
            // Chunk-shaped garbage: small csids and lengths so headers are often accepted.
            while data.len() < len {
                let fmt = rng.below(4) as u8;
                data.push((fmt << 6) | (2 + rng.below(6)) as u8);
                data.extend(rng.bytes([11, 7, 3, 0][usize::from(fmt)]));
                if fmt < 2 {
                    let at = data.len() - [11, 7][usize::from(fmt)] + 3;
                    data[at] = 0;
                    data[at + 1] = rng.below(2) as u8;
                    data[at + 3] = [1, 4, 8, 9, 15, 17, 18, 20, 22][rng.below(9)];
                }
                let body = rng.below(300);
                data.extend(rng.bytes(body));
            }
        }
        let limits = hostile_limits(&mut rng);
        feed_hostile(&data, limits, &mut rng);
    }
}
