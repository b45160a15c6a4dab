//! The facts of an access decision as a request brings them: its token (query, bearer or
//! cookie), client address, page host and country. The decision itself is
//! [`drm::access::decide`](crate::drm::access::decide).

use axum::http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;

use super::AppState;
use crate::db::{PlaybackPolicy, PlaybackTarget};
use crate::drm::access::{Denial, Facts, decide};
use crate::drm::audit::Decision;
use crate::drm::{AUD_VIDEO, PlaybackClaims, TokenError};
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    pub(super) token: Option<String>,
    /// CMCD in query mode: observed for analytics, never part of access or caching.
    #[serde(rename = "CMCD")]
    pub(super) cmcd: Option<String>,
}

/// Cookie a site may set so that its players need no token in URLs.
const TOKEN_COOKIE: &str = "ferrocast_token";

/// The playback token: `?token=`, else `Authorization: Bearer`, else the `ferrocast_token` cookie.
pub(super) fn token_from(query: &TokenQuery, headers: &HeaderMap) -> Option<String> {
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    query
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| super::auth::bearer(header_str(header::AUTHORIZATION)?).map(str::to_string))
        .or_else(|| {
            header_str(header::COOKIE)?
                .split(';')
                .filter_map(|c| c.trim().split_once('='))
                .find(|(name, _)| *name == TOKEN_COOKIE)
                .map(|(_, v)| v.to_string())
        })
}

/// Whether the request's token is the `Authorization` header's: a player that sends it so
/// sends it with every request, and it is not written into the URIs of the playlists served.
pub(super) fn token_in_header(query: &TokenQuery, headers: &HeaderMap) -> bool {
    query.token.as_deref().is_none_or(str::is_empty)
        && headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(super::auth::bearer)
            .is_some()
}

/// The client's address: the configured proxy header's first entry, else the TCP peer.
pub struct ClientIp(pub Option<String>);

impl axum::extract::FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header_name = &state.jobs.config.playback.client_ip_header;
        let from_header = (!header_name.is_empty())
            .then(|| parts.headers.get(header_name.as_str()))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let peer = || {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        };
        Ok(ClientIp(from_header.or_else(peer)))
    }
}

/// The host a page was served from, from `Origin` or `Referer`.
fn page_host(headers: &HeaderMap) -> Option<String> {
    [header::ORIGIN, header::REFERER]
        .iter()
        .filter_map(|h| headers.get(h)?.to_str().ok())
        .filter_map(|v| url::Url::parse(v).ok())
        .find_map(|u| u.host_str().map(str::to_ascii_lowercase))
}

/// The viewer's country: the trusted header if configured and present, else the GeoIP
/// database's answer for the client address.
pub(super) fn viewer_country(
    state: &AppState,
    headers: &HeaderMap,
    client_ip: Option<&str>,
) -> Option<String> {
    let header_name = &state.jobs.config.playback.country_header;
    let from_header = (!header_name.is_empty())
        .then(|| headers.get(header_name.as_str()))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty());
    from_header.or_else(|| {
        let ip: std::net::IpAddr = client_ip?.parse().ok()?;
        let found: maxminddb::geoip2::Country = state.geoip.as_ref()?.lookup(ip).ok()??;
        Some(found.country?.iso_code?.to_ascii_uppercase())
    })
}

/// What a request would be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shown {
    /// Encrypted playlists and segments (whose key is judged again at `/keys`), the player
    /// page, and an asset's poster: the token rules.
    Protected,
    /// The content in the clear (thumbnails at any time, storyboards, WebRTC): the token
    /// rules, then, for paid media, an entitlement, as for its keys.
    Clear,
}

/// The playback target, if the request may play it, and the token's claims (signed policy).
/// Playlists, segments, stills and WHEP ask this.
pub(super) async fn authorize(
    state: &AppState,
    playback_id: &str,
    token: Option<&str>,
    audience: &str,
    shown: Shown,
    headers: &HeaderMap,
    client_ip: Option<&str>,
) -> ApiResult<(PlaybackTarget, Option<PlaybackClaims>)> {
    let target = target_of(state, playback_id).await?;
    Ok(judge(
        state,
        playback_id,
        target,
        token,
        audience,
        shown,
        headers,
        client_ip,
        Rental::Start,
    )
    .await??)
}

/// What `playback_id` plays; 404 for one that could not be an id or is no id of anything.
pub(super) async fn target_of(state: &AppState, playback_id: &str) -> ApiResult<PlaybackTarget> {
    let known = if super::player::plausible_id(playback_id) {
        state.jobs.db.playback_target(playback_id).await?
    } else {
        None
    };
    known.ok_or_else(|| ApiError::NotFound("playback id not found".into()))
}

/// [`authorize`] for what a player fetches to play (playlists, segments, the chat, the
/// viewer count): the token as the request carries it (query, bearer or cookie), judged as
/// encrypted content is.
pub(super) async fn authorize_playback(
    state: &AppState,
    playback_id: &str,
    q: &TokenQuery,
    headers: &HeaderMap,
    client_ip: Option<&str>,
) -> ApiResult<(PlaybackTarget, Option<PlaybackClaims>)> {
    let token = token_from(q, headers);
    authorize(
        state,
        playback_id,
        token.as_deref(),
        AUD_VIDEO,
        Shown::Protected,
        headers,
        client_ip,
    )
    .await
}

/// Whether looking at an entitlement starts a rental's clock: a play does, a page that only
/// says what the viewer could do does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rental {
    Start,
    Look,
}

/// [`authorize`]'s decision for a known target: the denial itself, for a page that explains it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn judge(
    state: &AppState,
    playback_id: &str,
    target: PlaybackTarget,
    token: Option<&str>,
    audience: &str,
    shown: Shown,
    headers: &HeaderMap,
    client_ip: Option<&str>,
    rental: Rental,
) -> ApiResult<Result<(PlaybackTarget, Option<PlaybackClaims>), Denial>> {
    let public = target.policy != PlaybackPolicy::Signed;
    let requires_entitlement = target.requires_entitlement && shown == Shown::Clear;
    let token = match token {
        Some(token) if !public || requires_entitlement => Some(
            state
                .tokens
                .verify(token, Some(playback_id), audience)
                .await,
        ),
        _ => None,
    };
    let host = || page_host(headers);
    let country = || viewer_country(state, headers, client_ip);
    let grant = match decide(Facts {
        requires_entitlement,
        ..Facts::media(&target.tenant_id, public, token, &host, &country)
    }) {
        Ok(grant) => grant,
        Err(denial) => return Ok(Err(denial)),
    };
    let grant = match &grant.entitlement_of {
        Some(viewer) => {
            let holds = state
                .jobs
                .db
                .has_entitlement_to_media(
                    &target.tenant_id,
                    playback_id,
                    target.prefix.as_deref(),
                    viewer,
                    rental == Rental::Start,
                )
                .await?;
            match grant.entitled(holds) {
                Ok(grant) => grant,
                Err(denial) => return Ok(Err(denial)),
            }
        }
        None => grant,
    };
    Ok(Ok((target, grant.claims)))
}

/// Why a key request got no key: a denial (audited), or a failure on the way.
pub(super) enum KeyRefusal {
    Denied(Denial),
    Failed(ApiError),
}

impl From<Denial> for KeyRefusal {
    fn from(d: Denial) -> Self {
        Self::Denied(d)
    }
}

impl From<crate::db::DbError> for KeyRefusal {
    fn from(e: crate::db::DbError) -> Self {
        Self::Failed(e.into())
    }
}

/// Whether the content key `stored` may be handed out to this request; fills in who asked,
/// for the audit log.
pub(super) async fn key_access(
    state: &AppState,
    stored: &crate::db::StoredContentKey,
    q: &TokenQuery,
    headers: &HeaderMap,
    decision: &mut Decision,
) -> Result<(), KeyRefusal> {
    let host = || page_host(headers);
    let client_ip = decision.client_ip.clone();
    let country = || viewer_country(state, headers, client_ip.as_deref());
    let facts = |public, token| Facts::media(&stored.tenant_id, public, token, &host, &country);
    let Some(token) = token_from(q, headers) else {
        let public = state.jobs.db.scope_rules(&stored.scope).await?.public();
        decide(facts(public, None))?;
        return Ok(());
    };
    // Verified before anything it says is used: a token that does not verify is refused
    // for that (401), and what it claims is never looked up or written to the audit log.
    let verified = state
        .tokens
        .verify(&token, None, AUD_VIDEO)
        .await
        .map_err(Denial::Token)?;
    let playback_id = verified.claims.sub.clone();
    // Judged by the strictest rules of every id that plays this media.
    let target = state
        .jobs
        .db
        .media_target(&playback_id)
        .await?
        .filter(|t| t.tenant_id == stored.tenant_id)
        .ok_or(Denial::Token(TokenError::WrongPlaybackId))?;
    decision.playback_id = Some(playback_id.clone());
    let viewer = verified.claims.viewer.clone();
    let limit = |viewer: &str| state.key_limits.per_viewer.check(viewer);
    let result = decide(Facts {
        same_media: target.prefix.as_deref() == Some(stored.scope.as_str()),
        requires_entitlement: target.requires_entitlement,
        viewer_limit: Some(&limit),
        ..facts(false, Some(Ok(verified)))
    });
    // The audit log names the viewer of a token that passed its own checks.
    match &result {
        Ok(_) | Err(Denial::NoViewer) => decision.viewer = viewer,
        Err(Denial::OtherMedia) => {
            decision.viewer = viewer;
            tracing::info!(key_id = %stored.id, %playback_id, "key denied: token for other media");
        }
        Err(Denial::RateLimited(_)) => {
            decision.viewer = viewer;
            metrics::counter!("ferrocast_key_rate_limited_total", "by" => "viewer").increment(1);
        }
        Err(_) => {}
    }
    let grant = result?;
    if let Some(viewer) = &grant.entitlement_of {
        let holds = state
            .jobs
            .db
            .has_entitlement_to_media(
                &target.tenant_id,
                &playback_id,
                target.prefix.as_deref(),
                viewer,
                true,
            )
            .await?;
        grant.entitled(holds)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_bearer_token_is_read_whatever_the_case_of_its_scheme() {
        let q = TokenQuery::default();
        for value in ["Bearer abc", "bearer abc", "BEARER  abc "] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            assert_eq!(token_from(&q, &h).as_deref(), Some("abc"), "{value:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(token_from(&q, &h), None);
    }

    #[test]
    fn the_page_host_comes_from_origin_or_referer_in_lower_case() {
        let mut h = HeaderMap::new();
        assert_eq!(page_host(&h), None);
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://Video.Example.com/page?x"),
        );
        assert_eq!(page_host(&h).as_deref(), Some("video.example.com"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://shop.test"),
        );
        assert_eq!(page_host(&h).as_deref(), Some("shop.test"));
    }
}
