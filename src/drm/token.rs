//! Playback tokens: JWTs (HS256, key derived from the master key) that name one playback id,
//! an audience and an expiry. Verification pins the algorithm, so `alg: none` or a
//! public-key algorithm cannot be substituted.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// Audience of tokens for playlists, segments and keys.
pub const AUD_VIDEO: &str = "v";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybackClaims {
    /// The playback id.
    pub sub: String,
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("playback token has expired")]
    Expired,
    #[error("playback token is for another playback id")]
    WrongPlaybackId,
    #[error("playback token is invalid")]
    Invalid,
}

/// Mints and verifies playback tokens.
#[derive(Clone)]
pub struct PlaybackTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for PlaybackTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlaybackTokens([redacted])")
    }
}

impl PlaybackTokens {
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
        }
    }

    pub fn mint(&self, playback_id: &str, expires_at_unix: u64, viewer: Option<String>) -> String {
        let claims = PlaybackClaims {
            sub: playback_id.to_string(),
            aud: AUD_VIDEO.to_string(),
            exp: expires_at_unix,
            viewer,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Checks signature, algorithm, audience and expiry, then that it names `playback_id`.
    pub fn verify(&self, token: &str, playback_id: &str) -> Result<PlaybackClaims, TokenError> {
        let claims = self.verify_any(token)?;
        if claims.sub != playback_id {
            return Err(TokenError::WrongPlaybackId);
        }
        Ok(claims)
    }

    /// Checks signature, algorithm, audience and expiry; the caller checks the playback id.
    pub fn verify_any(&self, token: &str) -> Result<PlaybackClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUD_VIDEO]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<PlaybackClaims>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn good_tokens_verify_and_bad_ones_say_why() {
        let tokens = PlaybackTokens::new([9; 32]);
        let good = tokens.mint("pb1", now() + 60, Some("viewer-7".into()));
        let claims = tokens.verify(&good, "pb1").unwrap();
        assert_eq!(claims.viewer.as_deref(), Some("viewer-7"));
        assert_eq!(
            tokens.verify(&good, "pb2"),
            Err(TokenError::WrongPlaybackId)
        );
        assert_eq!(
            tokens.verify(&tokens.mint("pb1", now() - 1, None), "pb1"),
            Err(TokenError::Expired)
        );
        assert_eq!(
            PlaybackTokens::new([8; 32]).verify(&good, "pb1"),
            Err(TokenError::Invalid)
        );
        // Tampered payload, same signature.
        let parts: Vec<&str> = good.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"pb1","aud":"v","exp":{}}}"#,
            now() + 99999
        ));
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(tokens.verify(&forged, "pb1"), Err(TokenError::Invalid));
        // alg: none
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert_eq!(tokens.verify(&unsigned, "pb1"), Err(TokenError::Invalid));
        // Wrong audience.
        let thumb = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &PlaybackClaims {
                sub: "pb1".into(),
                aud: "t".into(),
                exp: now() + 60,
                viewer: None,
            },
            &EncodingKey::from_secret(&[9; 32]),
        )
        .unwrap();
        assert_eq!(tokens.verify(&thumb, "pb1"), Err(TokenError::Invalid));
        assert_eq!(tokens.verify("garbage", "pb1"), Err(TokenError::Invalid));
    }
}
