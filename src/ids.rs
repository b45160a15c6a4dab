//! Identifiers and secrets: time-ordered ids for rows, random ones for anything a URL carries.

use base64::Engine;
use rand::RngCore;

/// A new time-ordered id (UUIDv7), so listing by id lists by creation.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A random URL-safe secret (stream keys and the like) of `bytes` random bytes.
pub fn random_secret(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// A playback id: 128 random bits as lowercase hex (safe in any URL or file name).
pub fn new_playback_id() -> String {
    let mut raw = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_shapes() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        let p = new_playback_id();
        assert!(p.len() == 32 && p.bytes().all(|c| c.is_ascii_hexdigit()));
        let s = random_secret(24);
        assert_eq!(s.len(), 32);
        assert!(
            s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }
}
