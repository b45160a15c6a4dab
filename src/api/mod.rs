//! The HTTP API: shared state, extractors that speak the API's error shape, and one module per
//! area. `router.rs` holds the whole route table.

mod access;
mod analytics;
mod assets;
mod audience;
pub mod auth;
mod branding;
mod carts;
mod catalogue;
mod chat;
mod chat_moderation;
mod cmcd_reports;
mod cors;
mod dash;
mod dashboard;
mod delivery;
pub mod delivery_cache;
mod embed;
mod health;
mod idempotency;
mod invoices;
mod licenses;
mod limits;
pub mod live;
mod llhls;
mod objects;
pub mod openapi;
mod orders;
mod player;
mod provider_webhooks;
pub use provider_webhooks::unverified_webhook_limiter;
mod revenue;
mod router;
mod safe_css;
mod security;
pub mod stills;
mod subscriptions;
mod telemetry;
mod tenants;
pub mod uploads;
pub mod webhook_endpoints;
pub mod whep;
pub mod whip;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::drm::PlaybackTokens;
use crate::drm::audit::AuditLog;
use crate::drm::ratelimit::RateLimiter;
use crate::error::ApiError;
use crate::live::LiveHub;
use crate::storage::UrlSigner;

pub use router::router;
pub use telemetry::install_metrics_recorder;

/// What every handler can reach: one pointer, so the several clones each request makes
/// (extractors, middleware) cost a reference count, not a copy of every field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The dashboard's libraries from npm (served at `/dashboard/lib/…`).
#[derive(Default)]
pub struct DashboardLibs {
    pub tus: Option<bytes::Bytes>,
    pub uplot: Option<bytes::Bytes>,
    pub uplot_css: Option<bytes::Bytes>,
}

/// The state behind [`AppState`].
pub struct Shared {
    /// Configuration, database, storage, presets, content keys and the public URL: what job
    /// workers run with too (its `wakeup` tells this process's workers a job was queued).
    pub jobs: crate::vod::JobDeps,
    /// Signs and checks `/objects/...` URLs when the local backend is in use.
    pub url_signer: Option<UrlSigner>,
    /// SHA-256 of `admin.key` when one is configured.
    pub configured_admin_key: Option<[u8; 32]>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub tokens: PlaybackTokens,
    pub audit: AuditLog,
    pub key_limits: Arc<KeyLimits>,
    /// Wrong keys per client (API, publishable and stream keys), shared with ingest.
    pub bad_keys: Arc<crate::admission::BadKeys>,
    /// Country of a client address (`playback.geoip_mmdb`), when configured.
    pub geoip: Option<Arc<maxminddb::Reader<Vec<u8>>>>,
    pub live: LiveHub,
    /// Live chat rooms on this server.
    pub chat: Arc<crate::chat::ChatHub>,
    /// Where publishers push, without the stream key (`rtmp://host:port/live`).
    pub rtmp_url: String,
    /// hls.js for the player page, when installed.
    pub hlsjs: Option<bytes::Bytes>,
    /// Swagger UI for /docs, when installed.
    pub docs_ui: Option<openapi::DocsUi>,
    /// The dashboard's npm libraries, when installed.
    pub dashboard_libs: DashboardLibs,
    pub upload_locks: uploads::UploadLocks,
    /// WHIP publishes in progress on this server.
    pub whip: crate::ingest::whip::WhipSessions,
    /// WHEP viewers on this server.
    pub whep: whep::WhepViewers,
    /// Segments recently served (`delivery.cache_mib`).
    pub delivery_cache: Arc<delivery_cache::DeliveryCache>,
    /// How many thumbnails are rendered, per address and at once.
    pub renders: Arc<stills::RenderLimits>,
    /// The view aggregator beacons are queued to.
    pub analytics: crate::analytics::Analytics,
    /// Payment provider deliveries that fail verification, kept for the record at this
    /// rate per tenant and provider (past it they are refused and not stored).
    pub unverified_webhooks: RateLimiter,
    /// API requests per key, by the tenant's tier (api/limits.rs).
    pub api_limits: limits::ApiLimits,
    /// Tiers viewers bought, looked up for segment requests (api/delivery.rs).
    pub bought_caps: delivery::BoughtCaps,
    /// Realtime viewer counts the player pages ask for, kept a few seconds.
    pub viewer_counts: audience::ViewerCounts,
}

/// Rate limits of the key endpoint.
#[derive(Debug)]
pub struct KeyLimits {
    pub per_ip: RateLimiter,
    pub per_viewer: RateLimiter,
}

impl KeyLimits {
    pub fn new(c: &crate::config::PlaybackConfig) -> Self {
        Self {
            per_ip: RateLimiter::new(c.key_rate_per_ip, c.key_burst_per_ip),
            per_viewer: RateLimiter::new(c.key_rate_per_viewer, c.key_burst_per_viewer),
        }
    }
}

/// `axum::Json` whose rejections use the API's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejections use the API's error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` whose rejections use the API's error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Cursor pagination shared by every list endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Items per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Page {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(n) if (1..=1000).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid("limit must be between 1 and 1000")),
        }
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    /// `items` holds up to `limit` entries; a full page may have a successor.
    pub fn new(items: Vec<T>, limit: i64, id: impl Fn(&T) -> &str) -> Self {
        let next_cursor = (items.len() as i64 == limit)
            .then(|| items.last().map(|i| id(i).to_string()))
            .flatten();
        Self {
            data: items,
            next_cursor,
        }
    }
}

pub use crate::clock::rfc3339;

/// Whether a browser's request comes from a page of this server: Fetch Metadata says
/// `same-origin` when the browser sends it, and `Origin`, when sent, is this server as the
/// browser reached it (`Host`). A request with neither is not a browser's cross-site one.
pub(crate) fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    use axum::http::header;
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|a| !host.is_empty() && a.eq_ignore_ascii_case(host))
}

/// `s` safe in HTML text and in quoted attribute values (control characters dropped).
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}
