//! Tenants (admin) and a tenant's own API keys (tenant). A key is shown once, at creation.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{self, Admin, Tenant};
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::db::{self, NewApiKey, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::ids::random_secret;
use crate::storage::Prefix;

/// Storage prefix under which every object of a tenant lives.
pub fn tenant_prefix(tenant_id: &str) -> String {
    format!("tenants/{tenant_id}/")
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Display name, 1 to 200 characters.
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTenant {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// The tenant's first API key. Shown only in this response.
    pub api_key: String,
}

impl From<db::Tenant> for TenantView {
    fn from(t: db::Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: rfc3339(t.created_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label to recognise the key by, 1 to 200 characters (default "default").
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApiKey {
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    /// Set once the key is revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<String>,
}

impl From<db::ApiKey> for ApiKeyView {
    fn from(k: db::ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            created_at: rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKeyView,
    /// The secret. Shown only in this response; send it as `Authorization: Bearer <key>`.
    pub api_key: String,
}

fn valid_name(name: &str, what: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid(format!(
            "{what} must be 1 to 200 characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(name.to_string())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutTier {
    /// `free`, `starter`, `pro` or `enterprise`; null: the configured default
    /// (`rate_limits.default_tier`).
    pub tier: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierView {
    pub tenant_id: String,
    /// The tier in force.
    pub tier: String,
    /// API requests a minute per API key of the tenant.
    pub per_min: u32,
    /// The tier is the configured default, not one set for the tenant.
    pub default: bool,
}

/// Set a tenant's rate-limit tier (admin). It holds on this node at once and on others
/// within 30 s.
#[utoipa::path(put, path = "/v1/tenants/{id}/tier", tag = "tenants",
    request_body(content = PutTier, example = json!({"tier": "starter"})),
    security(("admin_key" = [])),
    responses((status = 200, body = TierView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn put_tier(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(body): Json<PutTier>,
) -> ApiResult<Json<TierView>> {
    let limits = &state.jobs.config.rate_limits;
    if let Some(t) = &body.tier
        && limits.per_min(t).is_none()
    {
        return Err(ApiError::invalid(format!(
            "tier must be one of {}",
            crate::config::TIERS.join(", ")
        )));
    }
    state
        .jobs
        .db
        .set_tenant_tier(&id, body.tier.as_deref())
        .await?;
    state.api_limits.forget_tier(&id);
    let default = body.tier.is_none();
    let tier = body.tier.unwrap_or_else(|| limits.default_tier.clone());
    Ok(Json(TierView {
        tenant_id: id,
        per_min: limits.per_min(&tier).unwrap_or(limits.pro_per_min),
        default,
        tier,
    }))
}

/// Create a tenant and its first API key.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body(content = CreateTenant, example = json!({"name": "Acme TV"})),
    security(("admin_key" = [])),
    responses((status = 201, body = CreatedTenant), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    _: Admin,
    Json(body): Json<CreateTenant>,
) -> ApiResult<(StatusCode, Json<CreatedTenant>)> {
    let name = valid_name(&body.name, "name")?;
    let key = auth::generate(Role::Tenant);
    let (tenant, _) = state
        .jobs
        .db
        .create_tenant_with_key(&name, "default", &key.prefix, &key.hash)
        .await?;
    tracing::info!(tenant = %tenant.id, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            id: tenant.id,
            name: tenant.name,
            created_at: rfc3339(tenant.created_at),
            api_key: key.secret,
        }),
    ))
}

/// List tenants.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(Page),
    security(("admin_key" = [])),
    responses((status = 200, body = List<TenantView>), (status = 401, body = ErrorBody)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    _: Admin,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<TenantView>>> {
    let limit = page.limit()?;
    let tenants = state
        .jobs
        .db
        .list_tenants(page.cursor.as_deref(), limit)
        .await?;
    let list = List::new(tenants, limit, |t| &t.id);
    Ok(Json(List {
        data: list.data.into_iter().map(TenantView::from).collect(),
        next_cursor: list.next_cursor,
    }))
}

/// Get a tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants",
    security(("admin_key" = [])),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantView>> {
    Ok(Json(state.jobs.db.get_tenant(&id).await?.into()))
}

/// Delete a tenant with all its keys and stored objects.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants",
    security(("admin_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.jobs.db.get_tenant(&id).await?;
    // Its broadcasts end first, their keys retired so that none starts again: nothing is
    // written under the tenant once its objects go.
    let mut streams = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state
            .jobs
            .db
            .list_live_streams(&id, after.as_deref(), 500)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for stream in page {
            state
                .jobs
                .db
                .set_stream_key(&id, &stream.id, &random_secret(24))
                .await?;
            streams.push(stream.id);
        }
    }
    let grace = std::time::Duration::from_secs(state.jobs.config.http.shutdown_grace_s);
    if !state.live.end_all_of(&streams, grace).await {
        // Nothing is deleted under a broadcast still writing; the delete can be retried.
        return Err(ApiError::Unavailable(
            "the tenant's broadcasts are still finishing; retry the delete shortly".into(),
        ));
    }
    // Objects next: if storage fails, the tenant still exists and the delete can be retried.
    let prefix = Prefix::parse(&tenant_prefix(&id))?;
    let removed = state.jobs.store.delete_prefix(&prefix).await?;
    state.jobs.db.delete_tenant(&id).await?;
    tracing::info!(tenant = %id, objects = removed, "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Create an API key for a tenant (for an admin recovering a tenant's access).
#[utoipa::path(post, path = "/v1/tenants/{id}/api-keys", tag = "tenants",
    request_body(content = CreateApiKey, example = json!({"name": "ci deploys"})),
    security(("admin_key" = [])),
    responses((status = 201, body = CreatedApiKey), (status = 404, body = ErrorBody)))]
pub async fn create_tenant_api_key(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(body): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    state.jobs.db.get_tenant(&id).await?;
    new_key(&state, &id, body).await
}

async fn new_key(
    state: &AppState,
    tenant_id: &str,
    body: CreateApiKey,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let name = valid_name(body.name.as_deref().unwrap_or("default"), "name")?;
    let key = auth::generate(Role::Tenant);
    let stored = state
        .jobs
        .db
        .insert_api_key(&NewApiKey {
            tenant_id: Some(tenant_id),
            name: &name,
            prefix: &key.prefix,
            secret_hash: &key.hash,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: stored.into(),
            api_key: key.secret,
        }),
    ))
}

/// The calling key's tenant.
#[utoipa::path(get, path = "/v1/tenant", tag = "api-keys",
    security(("api_key" = [])),
    responses((status = 200, body = TenantView), (status = 401, body = ErrorBody)))]
pub async fn current_tenant(
    State(state): State<AppState>,
    caller: Tenant,
) -> ApiResult<Json<TenantView>> {
    Ok(Json(
        state.jobs.db.get_tenant(&caller.tenant_id).await?.into(),
    ))
}

/// Create an API key for the calling tenant.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys",
    request_body(content = CreateApiKey, example = json!({"name": "web backend"})),
    security(("api_key" = [])),
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    new_key(&state, &caller.tenant_id, body).await
}

/// List the calling tenant's API keys (secrets are never shown again).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(Page),
    security(("api_key" = [])),
    responses((status = 200, body = List<ApiKeyView>), (status = 401, body = ErrorBody)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    caller: Tenant,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<ApiKeyView>>> {
    let limit = page.limit()?;
    let keys = state
        .jobs
        .db
        .list_api_keys(&caller.tenant_id, page.cursor.as_deref(), limit)
        .await?;
    let list = List::new(keys, limit, |k| &k.id);
    Ok(Json(List {
        data: list.data.into_iter().map(ApiKeyView::from).collect(),
        next_cursor: list.next_cursor,
    }))
}

/// Get one of the calling tenant's API keys.
#[utoipa::path(get, path = "/v1/api-keys/{id}", tag = "api-keys",
    security(("api_key" = [])),
    responses((status = 200, body = ApiKeyView), (status = 404, body = ErrorBody)))]
pub async fn get_api_key(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKeyView>> {
    Ok(Json(
        state
            .jobs
            .db
            .get_api_key(&caller.tenant_id, &id)
            .await?
            .into(),
    ))
}

/// Rename one of the calling tenant's API keys.
#[utoipa::path(patch, path = "/v1/api-keys/{id}", tag = "api-keys", request_body(content = UpdateApiKey, example = json!({"name": "web backend (old)"})),
    security(("api_key" = [])),
    responses((status = 200, body = ApiKeyView), (status = 404, body = ErrorBody)))]
pub async fn update_api_key(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Json(body): Json<UpdateApiKey>,
) -> ApiResult<Json<ApiKeyView>> {
    let name = valid_name(&body.name, "name")?;
    Ok(Json(
        state
            .jobs
            .db
            .rename_api_key(&caller.tenant_id, &id, &name)
            .await?
            .into(),
    ))
}

/// Revoke one of the calling tenant's API keys; it stops working at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    security(("api_key" = [])),
    responses((status = 200, body = ApiKeyView), (status = 404, body = ErrorBody)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKeyView>> {
    let key = state.jobs.db.revoke_api_key(&caller.tenant_id, &id).await?;
    tracing::info!(key_id = %id, by = %caller.key_id, "API key revoked");
    Ok(Json(key.into()))
}
