//! The access decision: whether a request may have a playlist, a segment, a still, a WHEP
//! stream or a content key. [`decide`] judges facts the caller gathered (the token already
//! verified, the page's host, the viewer's country, the entitlement looked up); it does no
//! I/O, so each rule is unit-tested here, case by case.

use std::time::Duration;

use super::token::{PlaybackClaims, TokenError, Verified};

/// A rate limit by viewer: `Err(wait)` when the viewer is over it.
pub type ViewerLimit<'a> = dyn Fn(&str) -> Result<(), Duration> + 'a;

/// What a request brings that access depends on.
pub struct Facts<'a> {
    /// The tenant that owns the media.
    pub tenant_id: &'a str,
    /// The media plays without a token (public policy). A token presented anyway is still
    /// judged when the caller passes it.
    pub public: bool,
    /// The token presented, as verified for this media and audience; `None`: none presented.
    pub token: Option<Result<Verified, TokenError>>,
    /// The host of the page that asked (`Origin`, else `Referer`), looked up only when a
    /// token restricts it (it parses a URL: not on every segment request).
    pub page_host: &'a dyn Fn() -> Option<String>,
    /// The viewer's country (ISO 3166 alpha-2), looked up only when a token restricts it.
    pub country: &'a dyn Fn() -> Option<String>,
    /// Keys: whether the media the token plays is the media this key encrypts. Always true
    /// for a request that names its media.
    pub same_media: bool,
    /// Keys: hand out only to viewers with an entitlement (the grant then names the viewer
    /// whose entitlement the caller looks up last, see [`Grant::entitled`]).
    pub requires_entitlement: bool,
    /// Keys: the per-viewer rate limit; `Err(wait)` when this viewer is over it.
    pub viewer_limit: Option<&'a ViewerLimit<'a>>,
}

impl<'a> Facts<'a> {
    /// The facts of a request for media it names (a playlist, a segment, a still, a WHEP
    /// stream): the key rules (same media, rate, entitlement) do not apply.
    pub fn media(
        tenant_id: &'a str,
        public: bool,
        token: Option<Result<Verified, TokenError>>,
        page_host: &'a dyn Fn() -> Option<String>,
        country: &'a dyn Fn() -> Option<String>,
    ) -> Self {
        Self {
            tenant_id,
            public,
            token,
            page_host,
            country,
            same_media: true,
            requires_entitlement: false,
            viewer_limit: None,
        }
    }
}

/// Access granted, with the token's claims when one was judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub claims: Option<PlaybackClaims>,
    /// Paid media: the viewer whose entitlement is the last rule, still to be looked up.
    pub entitlement_of: Option<String>,
}

impl Grant {
    fn of(claims: Option<PlaybackClaims>) -> Self {
        Self {
            claims,
            entitlement_of: None,
        }
    }

    /// The last rule for paid media: the viewer holds an entitlement (`holds`, looked up by
    /// the caller once every other rule allowed the request, so that refused requests cost
    /// no lookup).
    pub fn entitled(self, holds: bool) -> Result<Grant, Denial> {
        match self.entitlement_of {
            Some(_) if !holds => Err(Denial::NoEntitlement),
            _ => Ok(Grant::of(self.claims)),
        }
    }
}

/// Why access was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("a playback token is required")]
    NoToken,
    #[error("{0}")]
    Token(TokenError),
    #[error("playback token is signed by another tenant's key")]
    ForeignSigningKey,
    #[error("this page is not allowed to play this video")]
    ReferrerNotAllowed,
    #[error("not available in your country")]
    CountryNotAllowed,
    /// Keys: the token plays other media than the key encrypts.
    #[error("{}", TokenError::WrongPlaybackId)]
    OtherMedia,
    #[error("this video is limited to some countries and yours is unknown")]
    CountryUnknown,
    /// Over the per-viewer rate limit: try again after this many seconds.
    #[error("too many requests; retry after {0} s")]
    RateLimited(u64),
    #[error("this video needs an entitlement; the token names no viewer")]
    NoViewer,
    #[error("this viewer has no entitlement to this video")]
    NoEntitlement,
}

/// How a denial is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    /// No credentials, or credentials that prove nothing: 401.
    Unauthenticated,
    /// Valid credentials that do not allow this: 403.
    Forbidden,
    /// 429, with the seconds to wait.
    TooManyRequests(u64),
}

impl Denial {
    pub fn kind(&self) -> DenialKind {
        match self {
            Self::NoToken | Self::ForeignSigningKey => DenialKind::Unauthenticated,
            Self::Token(e) if !e.is_forbidden() => DenialKind::Unauthenticated,
            // As a token for another playback id is.
            Self::OtherMedia => DenialKind::Forbidden,
            Self::RateLimited(wait) => DenialKind::TooManyRequests(*wait),
            _ => DenialKind::Forbidden,
        }
    }

    /// A short reason for the audit log and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoToken => "no_token",
            Self::Token(e) => e.reason(),
            Self::OtherMedia => TokenError::WrongPlaybackId.reason(),
            Self::ForeignSigningKey => "foreign_signing_key",
            Self::ReferrerNotAllowed => "referrer_not_allowed",
            Self::CountryNotAllowed => "country_not_allowed",
            Self::CountryUnknown => "country_unknown",
            Self::RateLimited(_) => "rate_limited",
            Self::NoViewer => "no_viewer",
            Self::NoEntitlement => "no_entitlement",
        }
    }
}

impl From<TokenError> for Denial {
    fn from(e: TokenError) -> Self {
        Self::Token(e)
    }
}

/// Judges one request. The rules, in order: a public media plays without a token unless it
/// needs an entitlement; otherwise
/// a token is needed, valid for this media and audience (verified by the caller), signed by
/// Ferrocast or by this tenant; its referrer and country restrictions hold; for a key, the
/// token plays the media the key encrypts, its viewer is within the rate limit, and, when the
/// media needs one, a viewer is named whose entitlement is the last rule
/// ([`Grant::entitled`]).
pub fn decide(facts: Facts) -> Result<Grant, Denial> {
    let verified = match facts.token {
        None if facts.public && !facts.requires_entitlement => return Ok(Grant::of(None)),
        None => return Err(Denial::NoToken),
        Some(Err(e)) => return Err(Denial::Token(e)),
        Some(Ok(verified)) => verified,
    };
    if let Some(signer) = &verified.signed_by_tenant
        && signer != facts.tenant_id
    {
        return Err(Denial::ForeignSigningKey);
    }
    let claims = verified.claims;
    if let Some(allowed) = &claims.referrer {
        match (facts.page_host)() {
            Some(host) if referrer_allowed(allowed, &host) => {}
            _ => return Err(Denial::ReferrerNotAllowed),
        }
    }
    if let Some(allowed) = &claims.country {
        match (facts.country)() {
            Some(c) if allowed.iter().any(|a| a.eq_ignore_ascii_case(&c)) => {}
            Some(_) => return Err(Denial::CountryNotAllowed),
            None => return Err(Denial::CountryUnknown),
        }
    }
    if !facts.same_media {
        return Err(Denial::OtherMedia);
    }
    if let (Some(viewer), Some(limit)) = (&claims.viewer, facts.viewer_limit)
        && let Err(wait) = limit(viewer)
    {
        return Err(Denial::RateLimited(
            (wait.as_secs_f64().ceil() as u64).max(1),
        ));
    }
    let entitlement_of = match (facts.requires_entitlement, &claims.viewer) {
        (false, _) => None,
        (true, None) => return Err(Denial::NoViewer),
        (true, Some(viewer)) => Some(viewer.clone()),
    };
    Ok(Grant {
        claims: Some(claims),
        entitlement_of,
    })
}

/// `example.com` allows exactly that host; `*.example.com` any host below it. Entries may be
/// written as origins (`https://example.com`).
pub fn referrer_allowed(allowed: &[String], host: &str) -> bool {
    allowed.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let entry = url::Url::parse(&entry)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or(entry);
        match entry.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => entry == host,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drm::AUD_VIDEO;

    fn claims() -> PlaybackClaims {
        PlaybackClaims::new("pb", AUD_VIDEO, 4_000_000_000)
    }

    fn token(claims: PlaybackClaims, tenant: Option<&str>) -> Option<Result<Verified, TokenError>> {
        Some(Ok(Verified {
            claims,
            signed_by_tenant: tenant.map(str::to_string),
        }))
    }

    fn no_country() -> Option<String> {
        None
    }

    fn no_host() -> Option<String> {
        None
    }

    /// A signed media, a valid Ferrocast-signed token with no restrictions.
    fn facts<'a>() -> Facts<'a> {
        Facts::media("t1", false, token(claims(), None), &no_host, &no_country)
    }

    #[test]
    fn public_media_plays_without_a_token_signed_media_needs_one() {
        let public = Facts {
            public: true,
            token: None,
            ..facts()
        };
        assert_eq!(decide(public), Ok(Grant::of(None)));
        let signed = Facts {
            token: None,
            ..facts()
        };
        assert_eq!(decide(signed), Err(Denial::NoToken));
        assert_eq!(Denial::NoToken.kind(), DenialKind::Unauthenticated);
    }

    #[test]
    fn a_token_that_failed_verification_is_refused_with_its_reason() {
        let expired = Facts {
            token: Some(Err(TokenError::Expired)),
            ..facts()
        };
        let denial = decide(expired).unwrap_err();
        assert_eq!(denial, Denial::Token(TokenError::Expired));
        assert_eq!(
            (denial.kind(), denial.reason()),
            (DenialKind::Forbidden, "expired")
        );
        let invalid = decide(Facts {
            token: Some(Err(TokenError::Invalid)),
            ..facts()
        });
        assert_eq!(invalid.unwrap_err().kind(), DenialKind::Unauthenticated);
        // Even on public media, a key request's token is judged when it is presented.
        let public = Facts {
            public: true,
            token: Some(Err(TokenError::Invalid)),
            ..facts()
        };
        assert!(decide(public).is_err());
    }

    #[test]
    fn a_valid_token_grants_with_its_claims() {
        let grant = decide(facts()).unwrap();
        assert_eq!(grant.claims.unwrap().sub, "pb");
    }

    #[test]
    fn only_the_owning_tenants_signing_key_counts() {
        assert!(
            decide(Facts {
                token: token(claims(), Some("t1")),
                ..facts()
            })
            .is_ok()
        );
        let foreign = decide(Facts {
            token: token(claims(), Some("t2")),
            ..facts()
        });
        assert_eq!(foreign, Err(Denial::ForeignSigningKey));
    }

    #[test]
    fn a_referrer_restriction_needs_an_allowed_page() {
        let mut c = claims();
        c.referrer = Some(vec!["*.example.com".into(), "https://shop.test".into()]);
        for (host, ok) in [
            (Some("www.example.com"), true),
            (Some("shop.test"), true),
            (Some("example.com"), false),
            (Some("evil.test"), false),
            (None, false),
        ] {
            let page = move || host.map(str::to_string);
            let f = Facts {
                token: token(c.clone(), None),
                page_host: &page,
                ..facts()
            };
            assert_eq!(decide(f).is_ok(), ok, "{host:?}");
        }
        let f = Facts {
            token: token(c, None),
            page_host: &no_host,
            ..facts()
        };
        assert_eq!(decide(f).unwrap_err().reason(), "referrer_not_allowed");
    }

    #[test]
    fn a_country_restriction_needs_a_known_allowed_country() {
        let mut c = claims();
        c.country = Some(vec!["de".into(), "FR".into()]);
        fn de() -> Option<String> {
            Some("DE".into())
        }
        fn us() -> Option<String> {
            Some("US".into())
        }
        let f = |country: &'static dyn Fn() -> Option<String>| Facts {
            token: token(c.clone(), None),
            country,
            ..facts()
        };
        assert!(decide(f(&de)).is_ok());
        assert_eq!(decide(f(&us)), Err(Denial::CountryNotAllowed));
        assert_eq!(decide(f(&no_country)), Err(Denial::CountryUnknown));
        // Without a restriction, the country is never looked up.
        let never = || -> Option<String> { panic!("looked up") };
        assert!(
            decide(Facts {
                country: &never,
                ..facts()
            })
            .is_ok()
        );
    }

    #[test]
    fn a_key_needs_a_token_for_the_media_it_encrypts() {
        let other = decide(Facts {
            same_media: false,
            ..facts()
        })
        .unwrap_err();
        assert_eq!(other, Denial::OtherMedia);
        // Answered as a token for another playback id is.
        let token = Denial::Token(TokenError::WrongPlaybackId);
        assert_eq!(
            (other.kind(), other.reason(), other.to_string()),
            (token.kind(), token.reason(), token.to_string())
        );
    }

    #[test]
    fn viewers_over_their_rate_limit_wait() {
        let mut c = claims();
        c.viewer = Some("v1".into());
        let over = |viewer: &str| {
            assert_eq!(viewer, "v1");
            Err(Duration::from_millis(1200))
        };
        let f = Facts {
            token: token(c.clone(), None),
            viewer_limit: Some(&over),
            ..facts()
        };
        let denial = decide(f).unwrap_err();
        assert_eq!(denial, Denial::RateLimited(2));
        assert_eq!(denial.kind(), DenialKind::TooManyRequests(2));
        let under = |_: &str| Ok(());
        let f = Facts {
            token: token(c, None),
            viewer_limit: Some(&under),
            ..facts()
        };
        assert!(decide(f).is_ok());
        // A token without a viewer has no per-viewer limit.
        assert!(
            decide(Facts {
                viewer_limit: Some(&over),
                ..facts()
            })
            .is_ok()
        );
    }

    #[test]
    fn paid_media_needs_a_named_viewer_with_an_entitlement() {
        let mut c = claims();
        c.viewer = Some("v1".into());
        let paid = |claims: PlaybackClaims| Facts {
            token: token(claims, None),
            requires_entitlement: true,
            ..facts()
        };
        assert_eq!(decide(paid(claims())), Err(Denial::NoViewer));
        // Public but paid: no token, no viewer, nothing.
        let public_paid = Facts {
            public: true,
            token: None,
            requires_entitlement: true,
            ..facts()
        };
        assert_eq!(decide(public_paid), Err(Denial::NoToken));
        let grant = decide(paid(c)).unwrap();
        assert_eq!(grant.entitlement_of.as_deref(), Some("v1"));
        assert_eq!(grant.clone().entitled(false), Err(Denial::NoEntitlement));
        assert_eq!(grant.entitled(true).unwrap().entitlement_of, None);
        assert_eq!(Denial::NoEntitlement.kind(), DenialKind::Forbidden);
        // Free media needs no lookup at all.
        let free = decide(facts()).unwrap();
        assert_eq!(free.entitlement_of, None);
        assert!(free.entitled(false).is_ok());
    }

    #[test]
    fn referrers_match_hosts_wildcards_and_origins() {
        let allowed = vec![
            "video.example.com".to_string(),
            "*.acme.tv".into(),
            "https://x.org".into(),
        ];
        assert!(referrer_allowed(&allowed, "video.example.com"));
        assert!(!referrer_allowed(&allowed, "evil-video.example.com"));
        assert!(referrer_allowed(&allowed, "www.acme.tv"));
        assert!(!referrer_allowed(&allowed, "acme.tv.evil.com"));
        assert!(!referrer_allowed(&allowed, "notacme.tv"));
        assert!(referrer_allowed(&allowed, "x.org"));
    }
}
