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

/// A form from another site is refused: its `Origin`, when the browser sends one, must be
/// this server as the browser reached it (`Host`).
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    // Browsers that send Fetch Metadata say where a request comes from outright.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
    {
        return Err(ApiError::Forbidden(
            "this form can only be sent from the dashboard itself".into(),
        ));
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    if authority.is_some_and(|a| !host.is_empty() && a.eq_ignore_ascii_case(host)) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this form can only be sent from the dashboard itself".into(),
        ))
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
            r#"<header><span class="brand">Ferrocast</span><span class="tenant" id="tenant">{tenant}</span>
<nav><a href="/docs">API reference</a>
<form method="post" action="/dashboard/logout" class="inline"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" id="logout">Sign out</button></form></nav></header>
<main>
<section id="live">
<div class="row"><h2>Live streams</h2><button id="create-stream" type="button">New live stream</button></div>
<p class="muted" id="live-empty" hidden>No live stream yet: make one, then publish to its RTMP URL with its stream key.</p>
<table id="streams"><thead><tr><th>Status</th><th>Playback id</th><th>RTMP URL</th><th>Stream key</th><th></th></tr></thead><tbody></tbody></table>
<p class="error" id="error" role="alert" hidden></p>
</section>
</main>
<script src="/dashboard/dashboard.js"></script>"#
        ),
        &format!(r#"<meta name="csrf-token" content="{csrf}">"#),
    )
}
