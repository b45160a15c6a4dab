//! The creator dashboard: `/` leads to it, a tenant API key signs in, and the pages then call
//! the public `/v1` API with the session's HttpOnly cookie and its CSRF token, like any
//! other client: no private back door.
//!
//! A session is a random secret in a `SameSite=Strict` HttpOnly cookie, stored only as its
//! SHA-256, tied to the key that made it (revoking the key ends it) and to 12 hours at most.
//! Forms check the request's `Origin` against its `Host`; API calls made with the cookie
//! carry `X-CSRF-Token` (api/auth.rs).

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::auth::{SESSION_COOKIE, cookie, hash_hex};
use super::{AppState, escape_html};
use crate::db::Role;
use crate::error::{ApiError, ErrorBody};

/// How long a session lasts.
const SESSION_MS: i64 = 12 * 3_600_000;

/// What the pages may load and do: their own scripts and styles, calls to this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("dashboard.css");
const SCRIPT: &str = include_str!("dashboard.js");

/// `GET /`: the dashboard.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 303, description = "To `/dashboard`", headers(("Location" = String)))))]
pub async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

/// `GET /dashboard`: the signed-in tenant's dashboard, or the sign-in page.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard",
    responses((status = 200, content_type = "text/html", body = String,
        description = "The dashboard with the session cookie, else the sign-in page")))]
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session(&state, &headers).await {
        Ok(Some((tenant_name, csrf))) => html(StatusCode::OK, &dashboard(&tenant_name, &csrf)),
        Ok(None) => html(StatusCode::OK, &sign_in(None)),
        Err(e) => e.into_response(),
    }
}

/// The signed-in tenant's name and the session's CSRF token, if the cookie is a live session.
async fn session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(String, String)>, ApiError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let db = &state.jobs.db;
    let Some((key, csrf)) = db.find_session(&hash_hex(secret)).await? else {
        return Ok(None);
    };
    let Some(tenant_id) = key.tenant_id else {
        return Ok(None);
    };
    let tenant = db.get_tenant(&tenant_id).await?;
    Ok(Some((tenant.name, csrf)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SignIn {
    /// A tenant API key (`fck_…`).
    api_key: String,
}

/// A form the dashboard posts, or why it is refused.
fn form<T>(form: Result<Form<T>, FormRejection>) -> Result<T, ApiError> {
    match form {
        Ok(Form(f)) => Ok(f),
        Err(FormRejection::InvalidFormContentType(_)) => Err(ApiError::UnsupportedMediaType(
            "send application/x-www-form-urlencoded".into(),
        )),
        Err(e) => Err(ApiError::invalid(e.body_text())),
    }
}

/// `POST /dashboard/session` (form `api_key`): signs in with a tenant API key.
#[utoipa::path(post, path = "/dashboard/session", tag = "dashboard",
    request_body(content = SignIn, content_type = "application/x-www-form-urlencoded",
        example = json!({"api_key": "fck_mZnSJ0RSK9q4w_hrnX237d6p1n-_aYu4hAunmfTn"})),
    responses((status = 303, description = "Signed in: the session cookie is set; to `/dashboard`",
            headers(("Set-Cookie" = String), ("Location" = String))),
        (status = 401, content_type = "text/html", body = String, description = "Not a valid key"),
        (status = 403, content((String = "text/html"), (ErrorBody = "application/json")),
            description = "An admin key, or a form from another site")))]
pub async fn sign_in_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Form<SignIn>, FormRejection>,
) -> Response {
    if let Err(e) = same_origin(&headers) {
        return e.into_response();
    }
    let form = match form(body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let secret = form.api_key.trim();
    let key = if secret.len() <= 200 {
        state
            .jobs
            .db
            .find_active_key_by_hash(&hash_hex(secret))
            .await
    } else {
        Ok(None)
    };
    let key = match key {
        Ok(Some(key)) if key.role == Role::Tenant => key,
        Ok(Some(_)) => {
            return html(
                StatusCode::FORBIDDEN,
                &sign_in(Some(
                    "That is an admin key: sign in with one of a tenant's API keys (fck_…).",
                )),
            );
        }
        Ok(None) => {
            return html(
                StatusCode::UNAUTHORIZED,
                &sign_in(Some("That key is not a valid API key, or it was revoked.")),
            );
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let session = crate::ids::random_secret(32);
    let csrf = crate::ids::random_secret(24);
    let expires_at = crate::clock::now_ms() + SESSION_MS;
    if let Err(e) = state
        .jobs
        .db
        .create_session(&hash_hex(&session), &key.id, &csrf, expires_at)
        .await
    {
        return ApiError::from(e).into_response();
    }
    tracing::info!(key_id = %key.id, "dashboard session started");
    let secure = if state.jobs.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_MS / 1000
    );
    to_dashboard(&cookie)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SignOut {
    /// The session's CSRF token (the page's `csrf-token`).
    csrf: String,
}

/// `POST /dashboard/logout` (form `csrf`): ends the session.
#[utoipa::path(post, path = "/dashboard/logout", tag = "dashboard",
    request_body(content = SignOut, content_type = "application/x-www-form-urlencoded",
        example = json!({"csrf": "Qm9vZ2llIHdvb2dpZSBib29naWUgd29v"})),
    responses((status = 303, description = "Signed out: the cookie is cleared; to `/dashboard`",
            headers(("Set-Cookie" = String), ("Location" = String))),
        (status = 403, body = ErrorBody, description = "A wrong CSRF token, or a form from another site")))]
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Form<SignOut>, FormRejection>,
) -> Response {
    if let Err(e) = same_origin(&headers) {
        return e.into_response();
    }
    let form = match form(body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
        let hash = hash_hex(secret);
        match state.jobs.db.find_session(&hash).await {
            Ok(Some((_, csrf))) if bool::from(csrf.as_bytes().ct_eq(form.csrf.as_bytes())) => {
                if let Err(e) = state.jobs.db.delete_session(&hash).await {
                    return ApiError::from(e).into_response();
                }
            }
            Ok(Some(_)) => {
                return ApiError::Forbidden("wrong CSRF token".into()).into_response();
            }
            Ok(None) => {}
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    to_dashboard(&format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
}

/// `303` to the dashboard, setting `cookie`.
fn to_dashboard(cookie: &str) -> Response {
    let mut r = Redirect::to("/dashboard").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(cookie).expect("ascii"),
    );
    r
}

/// A form from another site is refused ([`super::same_origin`]).
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    if super::same_origin(headers) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this form can only be sent from the dashboard itself".into(),
        ))
    }
}

/// `GET /dashboard/lib/{file}`: the dashboard's npm libraries as `make` installed them:
/// `tus.min.js` (tus-js-client), `uplot.min.js` and `uplot.min.css` (uPlot).
#[utoipa::path(get, path = "/dashboard/lib/{file}", tag = "dashboard",
    responses((status = 200, content((String = "text/javascript"), (String = "text/css"))),
        (status = 404, body = crate::error::ErrorBody, description = "Not one of the libraries, or not installed (run make)")))]
pub async fn lib(
    State(state): State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    let libs = &state.dashboard_libs;
    let (content_type, body) = match file.as_str() {
        "tus.min.js" => ("text/javascript; charset=utf-8", &libs.tus),
        "uplot.min.js" => ("text/javascript; charset=utf-8", &libs.uplot),
        "uplot.min.css" => ("text/css; charset=utf-8", &libs.uplot_css),
        _ => return ApiError::NotFound("no such library".into()).into_response(),
    };
    match body {
        Some(b) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            b.clone(),
        )
            .into_response(),
        None => ApiError::NotFound(format!("{file} is not installed on this server: run make"))
            .into_response(),
    }
}

/// `GET /dashboard/dashboard.css`, `/dashboard/dashboard.js`.
#[utoipa::path(get, path = "/dashboard/{file}", tag = "dashboard",
    responses((status = 200, content((String = "text/css"), (String = "text/javascript")))))]
pub async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "dashboard.css" => ("text/css; charset=utf-8", STYLE),
        "dashboard.js" => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return ApiError::NotFound("no such file".into()).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn html(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn frame(title: &str, body: &str, head: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Ferrocast</title><link rel="stylesheet" href="/dashboard/dashboard.css">{head}</head>
<body>{body}</body></html>"#
    )
}

fn sign_in(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, escape_html(e)))
        .unwrap_or_default();
    frame(
        "Sign in",
        &format!(
            r#"<main class="signin">
<h1>Ferrocast</h1>
<p>Live and on-demand video: streams, uploads, sales and analytics.</p>
<form method="post" action="/dashboard/session">
<label for="api_key">Your tenant API key</label>
<input id="api_key" name="api_key" type="password" autocomplete="current-password" placeholder="fck_…" required maxlength="200">
{error}
<button type="submit">Sign in</button>
</form>
<p class="hint">An admin makes tenants and their keys (<code>POST /v1/tenants</code>); <code>make run</code> printed the first admin key.</p>
<nav><a href="/docs">API reference</a> · <a href="/openapi.json">OpenAPI document</a></nav>
</main>"#
        ),
        "",
    )
}

fn dashboard(tenant: &str, csrf: &str) -> String {
    let tenant = escape_html(tenant);
    let csrf = escape_html(csrf);
    frame(
        "Dashboard",
        &format!(
            r##"<header><span class="brand">Ferrocast</span><span class="tenant" id="tenant">{tenant}</span>
<nav class="tabs" aria-label="Sections"><a href="#live" data-tab="live">Live</a><a href="#uploads" data-tab="uploads">Uploads</a><a href="#analytics" data-tab="analytics">Analytics</a><a href="#commerce" data-tab="commerce">Commerce</a><a href="#settings" data-tab="settings">Settings</a></nav>
<nav><a href="/docs">API reference</a>
<form method="post" action="/dashboard/logout" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" id="logout">Sign out</button></form></nav></header>
<main>
<p class="error" id="error" role="alert" hidden></p>
<section id="live" class="tab">
<div class="row"><h2>Live streams</h2><button id="create-stream" type="button">New live stream</button></div>
<p class="muted" id="live-empty" hidden>No live stream yet: make one, then publish to its RTMP URL with its stream key.</p>
<table id="streams"><thead><tr><th>Status</th><th>Playback id</th><th>RTMP URL</th><th>Stream key</th><th>WHIP URL</th><th>Ingest</th><th></th></tr></thead><tbody></tbody></table>
<div id="chat-panel" hidden>
<div class="row"><h3 id="chat-title">Chat</h3><button id="chat-close" type="button" class="copy">Close</button></div>
<form id="chat-rules-form" class="card-form wide"><label>Slow mode (seconds between a viewer's messages, 0: off) <input id="chat-slow" type="number" min="0" max="3600" value="0"></label>
<label class="check"><input id="chat-entitled" type="checkbox"> Only viewers who bought access may write</label>
<label>Moderators (viewer ids, comma-separated) <input id="chat-moderators" maxlength="4000"></label>
<button type="submit">Save chat rules</button></form>
<table id="chat-messages-table"><thead><tr><th>Sent</th><th>Name</th><th>Message</th><th></th></tr></thead><tbody></tbody></table>
<h3>Timeouts and bans</h3><table id="chat-bans"><thead><tr><th>Name</th><th>Until</th><th>Reason</th><th></th></tr></thead><tbody></tbody></table>
</div>
</section>
<section id="uploads" class="tab" hidden>
<div class="row"><h2>Uploads</h2></div>
<div id="drop" class="drop"><p><strong>Drop a video or audio file here</strong> or <label class="file">choose one<input id="file" type="file" accept="video/*,audio/*"></label></p>
<p class="muted">Uploads resume where they stopped, even after a reload (tus).</p></div>
<div id="upload" class="upload" hidden><span id="upload-name"></span><progress id="upload-progress" max="100" value="0"></progress><span id="upload-percent">0 %</span></div>
<table id="assets"><thead><tr><th></th><th>Status</th><th>File</th><th>Duration</th><th>Playback id</th><th>Added</th><th></th></tr></thead><tbody></tbody></table>
<p class="muted" id="assets-empty" hidden>No upload yet.</p>
</section>
<section id="analytics" class="tab" hidden>
<div class="row"><h2>Analytics</h2><label class="muted">Last <select id="timeframe"><option value="24h">24 hours</option><option value="7d">7 days</option><option value="30d">30 days</option></select></label></div>
<div class="cards" id="cards"></div>
<div class="row"><h3>Over time</h3><select id="metric" aria-label="Metric"><option value="views">Views</option><option value="watch_time">Watch time (ms)</option><option value="video_startup_time">Startup time p50 (ms)</option><option value="video_startup_time_p95">Startup time p95 (ms)</option><option value="rebuffer_percentage">Rebuffering (share of watch time)</option></select></div><div id="views-chart" class="chart"></div>
<h3>Concurrent viewers (peak per hour)</h3><div id="concurrency-chart" class="chart"></div>
<div class="row"><h3>Audience retention</h3><select id="retention-asset" aria-label="Asset"></select></div><div id="retention-chart" class="chart"></div>
<div class="split"><div><h3>Countries</h3><table id="countries"><thead><tr><th>Country</th><th>Views</th></tr></thead><tbody></tbody></table></div>
<div><h3>Devices</h3><table id="devices"><thead><tr><th>Device</th><th>Views</th></tr></thead><tbody></tbody></table></div></div>
</section>
<section id="commerce" class="tab" hidden>
<div class="row"><h2>Commerce</h2><span class="muted" id="revenue"></span></div>
<form id="product-form" class="card-form"><h3>New product</h3>
<label>Name <input id="product-name" required maxlength="200" placeholder="Cup final"></label>
<label>Playback ids it grants (comma-separated; empty: all content) <input id="product-playback-ids" maxlength="2000"></label>
<label>Price <input id="product-amount" required inputmode="decimal" placeholder="9.99" maxlength="20"></label>
<label>Currency <input id="product-currency" required value="eur" maxlength="3"></label>
<button type="submit">Create product</button></form>
<h3>Products</h3><table id="products"><thead><tr><th>Name</th><th>Grants</th><th>Prices</th><th>Id</th></tr></thead><tbody></tbody></table>
<form id="code-form" class="card-form"><h3>New discount code</h3>
<label>Code <input id="code-code" required maxlength="64" placeholder="LAUNCH20"></label>
<label>Percent off <input id="code-percent" required inputmode="decimal" placeholder="20" maxlength="8"></label>
<button type="submit">Create code</button></form>
<h3>Discount codes</h3><table id="codes"><thead><tr><th>Code</th><th>Off</th><th>Redeemed</th><th>Ends</th></tr></thead><tbody></tbody></table>
<h3>Orders</h3><table id="orders"><thead><tr><th>Status</th><th>Total</th><th>Customer</th><th>Created</th><th></th></tr></thead><tbody></tbody></table>
</section>
<section id="settings" class="tab" hidden>
<h2>Settings</h2>
<div class="row"><h3>API keys</h3><button id="create-key" type="button" class="copy">New API key</button></div>
<p id="secret" class="secret" hidden><span id="secret-label"></span> <code id="secret-value"></code> <span class="muted">Shown once: copy it now.</span></p>
<table id="keys"><thead><tr><th>Name</th><th>Prefix</th><th>Created</th><th>Last used</th><th></th></tr></thead><tbody></tbody></table>
<div class="row"><h3>Signing keys (for playback tokens your backend signs)</h3><button id="create-signing-key" type="button" class="copy">New ES256 key</button></div>
<table id="signing-keys"><thead><tr><th>Id</th><th>Algorithm</th><th>Created</th><th></th></tr></thead><tbody></tbody></table>
<div class="row"><h3>Webhook endpoints</h3></div>
<form id="webhook-form" class="inline-form"><input id="webhook-url" type="url" required placeholder="https://example.com/hooks" maxlength="2048"><button type="submit">Add endpoint (all events)</button></form>
<table id="webhooks"><thead><tr><th>URL</th><th>Events</th><th>Enabled</th><th></th></tr></thead><tbody></tbody></table>
<form id="branding-form" class="card-form"><h3>Branding of the viewer pages</h3>
<label>Name <input id="brand-name" maxlength="80"></label>
<label>Accent colour <input id="brand-accent" type="color" value="#ff5a36"></label>
<label>Custom CSS (a safe subset is kept) <textarea id="brand-css" rows="4" maxlength="16384"></textarea></label>
<button type="submit">Save branding</button><p id="brand-result" class="muted" role="status"></p></form>
</section>
</main>
<script src="/dashboard/lib/tus.min.js"></script>
<script src="/dashboard/lib/uplot.min.js"></script>
<script src="/dashboard/dashboard.js"></script>"##
        ),
        &format!(
            r#"<meta name="csrf-token" content="{csrf}"><link rel="stylesheet" href="/dashboard/lib/uplot.min.css">"#
        ),
    )
}
