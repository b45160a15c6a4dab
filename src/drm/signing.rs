//! Token signing keys for tenants: generated here, private half shown once, public half kept.

use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

/// A new key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM).
pub fn generate(algorithm: &str) -> anyhow::Result<(String, String)> {
    let mut rng = rand::rngs::OsRng;
    match algorithm {
        "ES256" => {
            let secret = p256::SecretKey::random(&mut rng);
            let private = secret.to_pkcs8_pem(LineEnding::LF)?.to_string();
            let public = secret.public_key().to_public_key_pem(LineEnding::LF)?;
            Ok((private, public))
        }
        "RS256" => {
            let private = rsa::RsaPrivateKey::new(&mut rng, 2048)?;
            let public = rsa::RsaPublicKey::from(&private);
            Ok((
                private.to_pkcs8_pem(LineEnding::LF)?.to_string(),
                public.to_public_key_pem(LineEnding::LF)?,
            ))
        }
        other => anyhow::bail!("unsupported algorithm {other:?} (RS256 or ES256)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drm::token::{AUD_VIDEO, PlaybackClaims};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

    #[test]
    fn generated_keys_sign_and_verify_tokens() {
        for (name, alg) in [("ES256", Algorithm::ES256), ("RS256", Algorithm::RS256)] {
            let (private, public) = generate(name).unwrap();
            assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"), "{name}");
            assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{name}");
            let enc = match alg {
                Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
                _ => EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
            };
            let dec = match alg {
                Algorithm::ES256 => DecodingKey::from_ec_pem(public.as_bytes()).unwrap(),
                _ => DecodingKey::from_rsa_pem(public.as_bytes()).unwrap(),
            };
            let claims = PlaybackClaims::new("pb", AUD_VIDEO, crate::clock::unix_now() + 60);
            let token = jsonwebtoken::encode(&Header::new(alg), &claims, &enc).unwrap();
            let mut v = Validation::new(alg);
            v.set_audience(&[AUD_VIDEO]);
            assert!(jsonwebtoken::decode::<PlaybackClaims>(&token, &dec, &v).is_ok());
        }
        assert!(generate("HS256").is_err());
    }
}
