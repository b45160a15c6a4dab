//! Keys and tokens: content keys (generated, stored wrapped, handed out by the key endpoint)
//! and the signed playback tokens that gate playlists, segments and keys.

mod content_keys;
mod token;

pub use content_keys::{ContentKeys, KeyWrapper};
pub use token::{PlaybackClaims, PlaybackTokens, TokenError};
