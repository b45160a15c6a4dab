//! A tenant's branding of its viewer pages (`/play`, `/embed`): a name, colours, a logo,
//! custom CSS cut down to a safe subset ([`safe_css`](super::safe_css)), and the publishable
//! key and provider its pages' buy buttons check out with.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Tenant, hash_hex};
use super::safe_css;
use super::{AppState, Json};
use crate::commerce::provider;
use crate::db::Branding;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// Longest brand name.
const MAX_NAME: usize = 80;
/// Longest logo URL.
const MAX_LOGO_URL: usize = 500;

/// A tenant's branding, as set (every field optional: none keeps Ferrocast's look).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme TV", "background": "#0b0d12", "text_color": "#f1f3f8",
    "accent": "#ff5a36", "logo_url": "https://cdn.example.com/acme.png",
    "custom_css": ".fc-title { font-weight: 700 }", "publishable_key": "fcp_Qm9vayBvZiBXaXNkb20gb24gYSBzaGVsZg",
    "checkout_provider": "stripe"}))]
pub struct SetBranding {
    /// Shown in the page's title and header.
    #[schema(max_length = 80)]
    pub name: Option<String>,
    /// `#rrggbb` colours of the page, its text, and its buttons and progress bar.
    pub background: Option<String>,
    pub text_color: Option<String>,
    pub accent: Option<String>,
    /// An `https://` image shown in the header (the page's Content-Security-Policy allows
    /// images from its origin only).
    #[schema(max_length = 500)]
    pub logo_url: Option<String>,
    /// CSS for the pages, at most 16 KiB. Only plain rules survive: class, id and element
    /// selectors, and colours, type, spacing, borders and sizes. At-rules, `url()`,
    /// `expression()`, escapes and other properties are dropped, and listed in `dropped`.
    pub custom_css: Option<String>,
    /// A publishable key (`fcp_…`) of this tenant: with it and a provider, a page whose
    /// viewer must buy shows a buy button that opens the provider's checkout.
    pub publishable_key: Option<String>,
    /// `stripe`, `paypal` or `coinbase`.
    pub checkout_provider: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"name": "Acme TV", "background": "#0b0d12", "text_color": "#f1f3f8",
    "accent": "#ff5a36", "logo_url": "https://cdn.example.com/acme.png",
    "custom_css": ".fc-title { font-weight: 700; }\n", "publishable_key": "fcp_Qm9vayBvZiBXaXNkb20gb24gYSBzaGVsZg",
    "checkout_provider": "stripe", "dropped": []}))]
pub struct BrandingView {
    pub name: Option<String>,
    pub background: Option<String>,
    pub text_color: Option<String>,
    pub accent: Option<String>,
    pub logo_url: Option<String>,
    /// The CSS as kept: what survived sanitising, rewritten.
    pub custom_css: String,
    pub publishable_key: Option<String>,
    pub checkout_provider: Option<String>,
    /// What sanitising dropped from the CSS just sent, and why (empty on GET).
    pub dropped: Vec<String>,
}

impl BrandingView {
    fn new(b: Branding, dropped: Vec<String>) -> Self {
        Self {
            name: b.name,
            background: b.background,
            text_color: b.text_color,
            accent: b.accent,
            logo_url: b.logo_url,
            custom_css: b.custom_css,
            publishable_key: b.publishable_key,
            checkout_provider: b.checkout_provider,
            dropped,
        }
    }
}

/// The tenant's branding.
#[utoipa::path(get, path = "/v1/branding", tag = "playback", security(("api_key" = [])),
    responses((status = 200, body = BrandingView), (status = 401, body = ErrorBody)))]
pub async fn get_branding(
    State(state): State<AppState>,
    caller: Tenant,
) -> ApiResult<Json<BrandingView>> {
    let b = state.jobs.db.branding(&caller.tenant_id).await?;
    Ok(Json(BrandingView::new(b, Vec::new())))
}

/// Set the tenant's branding: every field at once (one left out goes back to the default).
#[utoipa::path(put, path = "/v1/branding", tag = "playback", request_body = SetBranding,
    security(("api_key" = [])),
    responses((status = 200, body = BrandingView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn set_branding(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<SetBranding>,
) -> ApiResult<Json<BrandingView>> {
    let name = body
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if let Some(n) = &name
        && (n.chars().count() > MAX_NAME || n.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(format!(
            "name must be at most {MAX_NAME} characters, without control characters"
        )));
    }
    for (field, colour) in [
        ("background", &body.background),
        ("text_color", &body.text_color),
        ("accent", &body.accent),
    ] {
        if let Some(c) = colour
            && !is_colour(c)
        {
            return Err(ApiError::invalid(format!(
                "{field} must be a #rrggbb colour"
            )));
        }
    }
    // Kept as parsed (normalised, percent-encoded), not as sent.
    let logo_url = match &body.logo_url {
        Some(u) => {
            logo_origin(u).ok_or_else(|| {
                ApiError::invalid(format!(
                    "logo_url must be an https:// URL of at most {MAX_LOGO_URL} characters"
                ))
            })?;
            url::Url::parse(u).ok().map(String::from)
        }
        None => None,
    };
    let css = body.custom_css.unwrap_or_default();
    if css.len() > safe_css::MAX_LEN {
        return Err(ApiError::PayloadTooLarge(format!(
            "custom_css is over {} KiB",
            safe_css::MAX_LEN / 1024
        )));
    }
    let sanitized = safe_css::sanitize(&css);
    if let Some(key) = &body.publishable_key {
        let owner = state.jobs.db.publishable_key_tenant(&hash_hex(key)).await?;
        if owner.as_deref() != Some(caller.tenant_id.as_str()) {
            return Err(ApiError::invalid(
                "publishable_key is not a live publishable key of this tenant",
            ));
        }
    }
    if let Some(p) = &body.checkout_provider
        && !provider::NAMES.contains(&p.as_str())
    {
        return Err(ApiError::invalid(
            "checkout_provider must be stripe, paypal or coinbase",
        ));
    }
    let b = Branding {
        name,
        background: body.background.map(|c| c.to_ascii_lowercase()),
        text_color: body.text_color.map(|c| c.to_ascii_lowercase()),
        accent: body.accent.map(|c| c.to_ascii_lowercase()),
        logo_url,
        custom_css: sanitized.css,
        publishable_key: body.publishable_key,
        checkout_provider: body.checkout_provider,
    };
    state.jobs.db.set_branding(&caller.tenant_id, &b).await?;
    Ok(Json(BrandingView::new(b, sanitized.dropped)))
}

/// `#rrggbb`.
pub(super) fn is_colour(c: &str) -> bool {
    c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|d| d.is_ascii_hexdigit())
}

/// The origin of an acceptable logo URL (`https://host[:port]`), for the page's CSP.
pub(super) fn logo_origin(u: &str) -> Option<String> {
    if u.len() > MAX_LOGO_URL {
        return None;
    }
    let parsed = url::Url::parse(u).ok()?;
    if parsed.scheme() != "https" || parsed.host_str().is_none() || !parsed.username().is_empty() {
        return None;
    }
    Some(parsed.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_logos() {
        assert!(is_colour("#ff5A36"));
        for bad in ["ff5a36", "#ff5a3", "#ff5a36;", "red", "#gg0000"] {
            assert!(!is_colour(bad), "{bad}");
        }
        assert_eq!(
            logo_origin("https://cdn.example.com:8443/a/logo.png?x=1").as_deref(),
            Some("https://cdn.example.com:8443")
        );
        for bad in [
            "http://cdn.example.com/logo.png",
            "javascript:alert(1)",
            "data:image/png;base64,AAAA",
            "https://user@cdn.example.com/logo.png",
        ] {
            assert_eq!(logo_origin(bad), None, "{bad}");
        }
    }
}
