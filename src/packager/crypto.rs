//! AES-128-CBC segment encryption as HLS defines it (RFC 8216 §5.2): PKCS#7 padding, the IV
//! derived from the media sequence number and written explicitly into EXT-X-KEY.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};

type Encryptor = cbc::Encryptor<aes::Aes128>;
type Decryptor = cbc::Decryptor<aes::Aes128>;

pub use crate::drm::Key128;

/// The IV HLS implies for a segment: its media sequence number as a 128-bit big-endian integer.
pub fn iv_for_sequence(sequence: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[8..].copy_from_slice(&sequence.to_be_bytes());
    iv
}

/// `0x…` hex form used in the EXT-X-KEY IV attribute.
pub fn iv_hex(iv: &[u8; 16]) -> String {
    format!("0x{}", hex::encode(iv))
}

/// Encrypts a segment in its own buffer, which grows by the padding (PKCS#7 adds 1 to 16
/// bytes): without a new allocation when the buffer has that room, as segments from
/// `TsSegmenter` usually do.
pub fn encrypt_segment(key: &Key128, iv: &[u8; 16], buf: &mut Vec<u8>) {
    let len = buf.len();
    buf.resize(len + 16 - len % 16, 0);
    let encrypted = Encryptor::new(key.into(), iv.into())
        .encrypt_padded_mut::<Pkcs7>(buf, len)
        .expect("the buffer has room for the padding")
        .len();
    buf.truncate(encrypted);
}

/// Decrypts a segment; fails on a wrong key or damaged padding.
pub fn decrypt_segment(key: &Key128, iv: &[u8; 16], cipher: &[u8]) -> Result<Vec<u8>, String> {
    Decryptor::new(key.into(), iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(cipher)
        .map_err(|_| "bad padding: wrong key or damaged segment".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drm::generate_key;
    use std::io::Write;
    use std::process::{Command, Stdio};

    #[test]
    fn iv_is_the_sequence_number_big_endian() {
        assert_eq!(
            iv_hex(&iv_for_sequence(0)),
            "0x00000000000000000000000000000000"
        );
        assert_eq!(
            iv_hex(&iv_for_sequence(0x1234)),
            "0x00000000000000000000000000001234"
        );
    }

    #[test]
    fn round_trip_and_padding() {
        let key = generate_key();
        for len in [0usize, 1, 15, 16, 17, 188 * 7, 100_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let iv = iv_for_sequence(len as u64);
            let mut c = plain.clone();
            encrypt_segment(&key, &iv, &mut c);
            assert_eq!(c.len(), (len / 16 + 1) * 16, "PKCS#7 always pads");
            assert_eq!(decrypt_segment(&key, &iv, &c).unwrap(), plain);
        }
        let mut c = b"hello".to_vec();
        encrypt_segment(&key, &iv_for_sequence(1), &mut c);
        let mut wrong = key;
        wrong[0] ^= 1;
        assert!(
            decrypt_segment(&wrong, &iv_for_sequence(1), &c)
                .map(|p| p != b"hello")
                .unwrap_or(true)
        );
    }

    /// What players do: `openssl enc -aes-128-cbc -d` with the key and IV from the playlist.
    #[test]
    fn openssl_decrypts_what_we_encrypt_and_we_decrypt_what_it_encrypts() {
        let key = generate_key();
        let iv = iv_for_sequence(42);
        let plain: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        let openssl = |mode: &str, input: &[u8]| -> Vec<u8> {
            let mut child = Command::new("openssl")
                .args([
                    "enc",
                    mode,
                    "-aes-128-cbc",
                    "-K",
                    &hex::encode(key),
                    "-iv",
                    &hex::encode(iv),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("openssl is installed (Debian package openssl)");
            child.stdin.take().unwrap().write_all(input).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            out.stdout
        };
        let mut ours = plain.clone();
        encrypt_segment(&key, &iv, &mut ours);
        assert_eq!(openssl("-d", &ours), plain);
        let theirs = openssl("-e", &plain);
        assert_eq!(theirs, ours);
        assert_eq!(decrypt_segment(&key, &iv, &theirs).unwrap(), plain);
    }
}
