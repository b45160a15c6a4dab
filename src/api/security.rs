//! A tenant's playback security: token signing keys, playback rules per playback id,
//! entitlements, and the key-delivery audit log.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Tenant;
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::db::{self, PlaybackPolicy};
use crate::error::{ApiError, ApiResult, ErrorBody};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSigningKey {
    /// `RS256` (default) or `ES256`.
    pub algorithm: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyView {
    /// Put this in the `kid` header of the tokens you sign.
    pub id: String,
    pub algorithm: String,
    /// The public key Ferrocast verifies with (PEM).
    pub public_key: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedSigningKey {
    pub id: String,
    pub algorithm: String,
    /// PKCS#8 PEM. Shown only in this response: Ferrocast keeps only the public key.
    pub private_key: String,
    pub public_key: String,
    pub created_at: String,
}

impl From<db::SigningKey> for SigningKeyView {
    fn from(k: db::SigningKey) -> Self {
        Self {
            id: k.id,
            algorithm: k.algorithm,
            public_key: k.public_key,
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

/// Create a signing key for playback tokens; its private key is shown once.
#[utoipa::path(post, path = "/v1/signing-keys", tag = "security", request_body(content = CreateSigningKey, example = json!({"algorithm": "ES256"})),
    security(("api_key" = [])),
    responses((status = 201, body = CreatedSigningKey), (status = 400, body = ErrorBody)))]
pub async fn create_signing_key(
    State(state): State<AppState>,
    caller: Tenant,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<CreatedSigningKey>)> {
    // The body is optional: none means the defaults.
    let body: CreateSigningKey = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSigningKey { algorithm: None }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?
    };
    let algorithm = body.algorithm.unwrap_or_else(|| "RS256".into());
    if algorithm != "RS256" && algorithm != "ES256" {
        return Err(ApiError::invalid("algorithm must be RS256 or ES256"));
    }
    let alg = algorithm.clone();
    let (private_key, public_key) =
        tokio::task::spawn_blocking(move || crate::drm::signing::generate(&alg))
            .await
            .map_err(|e| ApiError::Internal(e.into()))??;
    let stored = state
        .jobs
        .db
        .insert_signing_key(&caller.tenant_id, &algorithm, &public_key)
        .await?;
    tracing::info!(kid = %stored.id, algorithm = %algorithm, "signing key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedSigningKey {
            id: stored.id,
            algorithm,
            private_key,
            public_key,
            created_at: rfc3339(stored.created_at),
        }),
    ))
}

/// List the tenant's signing keys (public halves), revoked ones included.
#[utoipa::path(get, path = "/v1/signing-keys", tag = "security", params(Page),
    security(("api_key" = [])), responses((status = 200, body = List<SigningKeyView>)))]
pub async fn list_signing_keys(
    State(state): State<AppState>,
    caller: Tenant,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<SigningKeyView>>> {
    let limit = page.limit()?;
    let keys = state
        .jobs
        .db
        .list_signing_keys(&caller.tenant_id, page.cursor.as_deref(), limit)
        .await?;
    let views: Vec<SigningKeyView> = keys.into_iter().map(Into::into).collect();
    Ok(Json(List::new(views, limit, |k| &k.id)))
}

/// Revoke a signing key: tokens it signed stop working at once.
#[utoipa::path(delete, path = "/v1/signing-keys/{id}", tag = "security",
    security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_signing_key(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .jobs
        .db
        .revoke_signing_key(&caller.tenant_id, &id)
        .await?;
    state.tokens.forget_key(&id);
    tracing::info!(kid = %id, "signing key revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaybackRules {
    /// `public` or `signed`.
    pub policy: Option<PlaybackPolicy>,
    /// Keys, and the content in the clear (thumbnails other than the poster, storyboards,
    /// WebRTC), only to viewers holding an entitlement (the token's `viewer`). Media that
    /// several ids play (a broadcast and its recording) follows the strictest of their rules.
    pub requires_entitlement: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlaybackRulesView {
    pub playback_id: String,
    pub policy: PlaybackPolicy,
    pub requires_entitlement: bool,
}

/// Change the playback rules of one of the tenant's playback ids (live stream or asset).
#[utoipa::path(patch, path = "/v1/playback-ids/{playback_id}", tag = "security",
    request_body(content = PlaybackRules,
        example = json!({"policy": "signed", "requires_entitlement": true})), security(("api_key" = [])),
    responses((status = 200, body = PlaybackRulesView), (status = 404, body = ErrorBody)))]
pub async fn update_playback_rules(
    State(state): State<AppState>,
    caller: Tenant,
    Path(playback_id): Path<String>,
    Json(body): Json<PlaybackRules>,
) -> ApiResult<Json<PlaybackRulesView>> {
    state
        .jobs
        .db
        .set_playback_rules(
            &caller.tenant_id,
            &playback_id,
            body.policy,
            body.requires_entitlement,
        )
        .await?;
    let target = state
        .jobs
        .db
        .find_playback_target(&playback_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("playback id not found".into()))?;
    Ok(Json(PlaybackRulesView {
        playback_id,
        policy: target.policy,
        requires_entitlement: target.requires_entitlement,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEntitlement {
    pub playback_id: String,
    /// The viewer id your tokens carry in `viewer`.
    pub viewer: String,
    /// Seconds until it lapses; none: until revoked.
    pub expires_in: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01a24fa8-d6c0-713d-97dc-230d6e5d3b99", "playback_id": "461e5a5ce379bf8b0189c8811fe87cc5", "viewer": "cus_42", "expires_at": "2027-01-06T09:39:54Z", "created_at": "2026-12-07T08:39:54.814Z", "revoked_at": null}))]
pub struct EntitlementView {
    pub id: String,
    pub playback_id: String,
    pub viewer: String,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl From<db::Entitlement> for EntitlementView {
    fn from(e: db::Entitlement) -> Self {
        Self {
            id: e.id,
            playback_id: e.playback_id,
            viewer: e.viewer,
            expires_at: e.expires_at.map(rfc3339),
            created_at: rfc3339(e.created_at),
            revoked_at: e.revoked_at.map(rfc3339),
        }
    }
}

/// Grant a viewer the right to play a playback id that requires an entitlement.
#[utoipa::path(post, path = "/v1/entitlements", tag = "security", request_body(content = CreateEntitlement,
        example = json!({"playback_id": "8f2c1d0e4b6a49f3a1c2d3e4f5a6b7c8", "viewer": "cus_42", "expires_in": 172800})),
    security(("api_key" = [])),
    responses((status = 201, body = EntitlementView), (status = 404, body = ErrorBody)))]
pub async fn create_entitlement(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<CreateEntitlement>,
) -> ApiResult<(StatusCode, Json<EntitlementView>)> {
    if body.viewer.is_empty() || body.viewer.len() > 200 {
        return Err(ApiError::invalid("viewer must be 1 to 200 characters"));
    }
    match state
        .jobs
        .db
        .find_playback_target(&body.playback_id)
        .await?
    {
        Some(t) if t.tenant_id == caller.tenant_id => {}
        _ => return Err(ApiError::NotFound("playback id not found".into())),
    }
    let expires_at = match body.expires_in {
        Some(0) => return Err(ApiError::invalid("expires_in must be at least 1")),
        Some(s) => Some(crate::clock::now_ms() + (s.min(100 * 365 * 86400) as i64) * 1000),
        None => None,
    };
    let e = state
        .jobs
        .db
        .create_entitlement(
            &caller.tenant_id,
            &body.playback_id,
            &body.viewer,
            expires_at,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(e.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntitlementFilter {
    pub playback_id: Option<String>,
    pub viewer: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// List entitlements, optionally for one playback id and/or viewer.
#[utoipa::path(get, path = "/v1/entitlements", tag = "security", params(EntitlementFilter),
    security(("api_key" = [])), responses((status = 200, body = List<EntitlementView>)))]
pub async fn list_entitlements(
    State(state): State<AppState>,
    caller: Tenant,
    Query(f): Query<EntitlementFilter>,
) -> ApiResult<Json<List<EntitlementView>>> {
    let limit = Page {
        limit: f.limit,
        cursor: None,
    }
    .limit()?;
    let items = state
        .jobs
        .db
        .list_entitlements(
            &caller.tenant_id,
            f.playback_id.as_deref(),
            f.viewer.as_deref(),
            f.cursor.as_deref(),
            limit,
        )
        .await?;
    let views: Vec<EntitlementView> = items.into_iter().map(Into::into).collect();
    Ok(Json(List::new(views, limit, |e| &e.id)))
}

/// Revoke an entitlement: the viewer's next key request is denied.
#[utoipa::path(delete, path = "/v1/entitlements/{id}", tag = "security",
    security(("api_key" = [])),
    responses((status = 200, body = EntitlementView), (status = 404, body = ErrorBody)))]
pub async fn revoke_entitlement(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<EntitlementView>> {
    let e = state
        .jobs
        .db
        .revoke_entitlement(&caller.tenant_id, &id)
        .await?;
    Ok(Json(e.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// `key_grant` or `key_denial`; none: both.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub playback_id: Option<String>,
    pub key_id: Option<String>,
    pub viewer: Option<String>,
    pub client_ip: Option<String>,
    /// `granted` or `denied`.
    pub result: String,
    pub reason: Option<String>,
    pub at: String,
}

/// The tenant's key-delivery audit log, oldest first.
#[utoipa::path(get, path = "/v1/audit", tag = "security", params(AuditFilter),
    security(("api_key" = [])), responses((status = 200, body = List<AuditEventView>)))]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Tenant,
    Query(f): Query<AuditFilter>,
) -> ApiResult<Json<List<AuditEventView>>> {
    let limit = Page {
        limit: f.limit,
        cursor: None,
    }
    .limit()?;
    if let Some(k) = f.kind.as_deref()
        && k != "key_grant"
        && k != "key_denial"
    {
        return Err(ApiError::invalid("type must be key_grant or key_denial"));
    }
    let events = state
        .jobs
        .db
        .list_audit_events(
            &caller.tenant_id,
            f.kind.as_deref(),
            f.cursor.as_deref(),
            limit,
        )
        .await?;
    let views: Vec<AuditEventView> = events
        .into_iter()
        .map(|e| AuditEventView {
            id: e.id,
            kind: e.kind,
            playback_id: e.playback_id,
            key_id: e.key_id,
            viewer: e.viewer,
            client_ip: e.client_ip,
            result: e.result,
            reason: e.reason,
            at: rfc3339(e.at),
        })
        .collect();
    Ok(Json(List::new(views, limit, |e| &e.id)))
}
