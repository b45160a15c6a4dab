//! Server side of the RTMP handshake: C0+C1 in, S0+S1+S2 out, C2 consumed.
//!
//! Only the simple handshake is implemented; S2 echoes C1 verbatim, which clients sending the
//! Flash "digest" form of C1 (ffmpeg, OBS) also accept when publishing.

use bytes::{Buf, BufMut, BytesMut};

use super::ProtocolError;

/// The only RTMP version the server speaks (6 would be RTMPE).
pub const RTMP_VERSION: u8 = 3;
/// Length of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitC0C1,
    AwaitC2,
    Done,
}

/// Progress through the handshake for one connection.
#[derive(Debug, Clone)]
pub struct Handshake {
    state: State,
}

impl Default for Handshake {
    fn default() -> Self {
        Self::new()
    }
}

impl Handshake {
    /// Starts waiting for C0+C1.
    pub fn new() -> Self {
        Self {
            state: State::AwaitC0C1,
        }
    }

    /// Whether C2 has been consumed and chunk data follows.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes handshake bytes from the front of `input`, appending replies to `output`.
    ///
    /// Leaves bytes after C2 in `input` untouched; returns early when more bytes are needed.
    pub fn advance(
        &mut self,
        input: &mut BytesMut,
        output: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        loop {
            match self.state {
                State::AwaitC0C1 => {
                    let Some(&version) = input.first() else {
                        return Ok(());
                    };
                    // Fail on the first byte so non-RTMP peers are dropped without buffering.
                    if version != RTMP_VERSION {
                        return Err(ProtocolError::UnsupportedVersion(version));
                    }
                    if input.len() < 1 + HANDSHAKE_SIZE {
                        return Ok(());
                    }
                    input.advance(1);
                    let c1 = input.split_to(HANDSHAKE_SIZE);
                    output.reserve(1 + 2 * HANDSHAKE_SIZE);
                    output.put_u8(RTMP_VERSION);
                    write_s1(&c1, output);
                    output.extend_from_slice(&c1);
                    self.state = State::AwaitC2;
                }
                State::AwaitC2 => {
                    if input.len() < HANDSHAKE_SIZE {
                        return Ok(());
                    }
                    input.advance(HANDSHAKE_SIZE);
                    self.state = State::Done;
                }
                State::Done => return Ok(()),
            }
        }
    }
}

/// Writes S1: zero time, zero version (so clients skip digest validation), then filler.
///
/// The filler is pseudo-random, seeded from C1, because the spec asks for random bytes but
/// nothing checks them and this keeps the module free of an RNG dependency.
fn write_s1(c1: &[u8], output: &mut BytesMut) {
    output.put_u32(0);
    output.put_u32(0);
    let mut state = c1.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    for _ in 0..(HANDSHAKE_SIZE - 8) / 8 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        output.put_u64(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_hello() -> Vec<u8> {
        let mut bytes = vec![RTMP_VERSION];
        bytes.extend((0..HANDSHAKE_SIZE).map(|i| (i * 7) as u8));
        bytes
    }

    #[test]
    fn replies_s0_s1_s2_and_consumes_c2() {
        let mut hs = Handshake::new();
        let mut input = BytesMut::from(&client_hello()[..]);
        let mut output = BytesMut::new();
        hs.advance(&mut input, &mut output).unwrap();
        assert_eq!(output.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(output[0], RTMP_VERSION);
        assert_eq!(&output[1..9], &[0; 8]);
        assert_eq!(&output[1 + HANDSHAKE_SIZE..], &client_hello()[1..]);
        assert!(!hs.is_done());
        input.extend_from_slice(&[0xAA; HANDSHAKE_SIZE]);
        input.extend_from_slice(b"rest");
        hs.advance(&mut input, &mut output).unwrap();
        assert!(hs.is_done());
        assert_eq!(&input[..], b"rest");
    }

    #[test]
    fn works_byte_by_byte() {
        let mut hs = Handshake::new();
        let mut input = BytesMut::new();
        let mut output = BytesMut::new();
        let mut all = client_hello();
        all.extend_from_slice(&[0; HANDSHAKE_SIZE]);
        for &b in &all {
            input.put_u8(b);
            hs.advance(&mut input, &mut output).unwrap();
        }
        assert!(hs.is_done());
        assert!(input.is_empty());
        assert_eq!(output.len(), 1 + 2 * HANDSHAKE_SIZE);
    }

    #[test]
    fn rejects_other_versions_immediately() {
        let mut hs = Handshake::new();
        let mut output = BytesMut::new();
        let err = hs.advance(&mut BytesMut::from(&[6u8][..]), &mut output);
        assert_eq!(err, Err(ProtocolError::UnsupportedVersion(6)));
        assert_eq!(
            err.unwrap_err().to_string(),
            "unsupported handshake version 6"
        );
        assert!(output.is_empty());
    }
}
