//! Keys and tokens: content keys (generated, stored wrapped, handed out by the key endpoint)
//! and the signed playback tokens that gate playlists, segments and keys.

pub mod access;
pub mod audit;
mod content_keys;
pub mod ratelimit;
pub mod signing;
pub mod speke;
mod token;

pub use content_keys::{ContentKeys, Key128, KeyWrapper, RewrapReport, UnwrapError, generate_key};
pub use token::{
    AUD_STORYBOARD, AUD_THUMBNAIL, AUD_VIDEO, PlaybackClaims, PlaybackTokens, TokenError, Verified,
    resolution_lines,
};
