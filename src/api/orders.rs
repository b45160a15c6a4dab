//! Checkout, orders, refunds and the tenant's payment provider settings. Checkout freezes
//! the cart into an order (amounts, tax and discount as priced now) and opens the provider's
//! hosted checkout; the provider's signed webhook (api/provider_webhooks.rs) marks it paid,
//! which grants the customer entitlements to what the products grant.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Shop, Tenant};
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::commerce::cart::{self, CodeFacts, check_code};
use crate::commerce::provider::{self, PaymentProvider, ProviderError};
use crate::db;
use crate::error::{ApiError, ApiResult, ErrorBody};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutProvider {
    /// Stripe: the secret API key (`sk_live_…`); PayPal: the REST app's client secret;
    /// Coinbase Commerce: the API key. Stored sealed under the master key.
    pub secret_key: String,
    /// Stripe: the webhook signing secret (`whsec_…`); PayPal: the webhook's id (deliveries
    /// are verified with PayPal against it); Coinbase Commerce: the webhook shared secret.
    pub webhook_secret: String,
    /// PayPal only: the REST app's client id.
    pub client_id: Option<String>,
    /// The provider's API: `https://api.stripe.com`, `https://api-m.paypal.com` (or
    /// PayPal's sandbox, `https://api-m.sandbox.paypal.com`),
    /// `https://api.commerce.coinbase.com`. The first is the default.
    pub base_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    pub provider: String,
    pub base_url: String,
    /// Where the provider must send events.
    pub webhook_url: String,
    pub created_at: String,
    pub updated_at: String,
}

fn provider_view(state: &AppState, p: db::ProviderSettings) -> ProviderView {
    ProviderView {
        webhook_url: format!(
            "{}/v1/webhooks/{}/{}",
            state.jobs.public_url.trim_end_matches('/'),
            p.provider,
            p.tenant_id
        ),
        provider: p.provider,
        base_url: p.base_url,
        created_at: rfc3339(p.created_at),
        updated_at: rfc3339(p.updated_at),
    }
}

/// What a sealed provider secret is bound to.
fn secret_aad(tenant_id: &str, provider: &str, which: &str) -> String {
    format!("payment-provider/{tenant_id}/{provider}/{which}")
}

/// Set a payment provider's keys for this tenant: `stripe`, `paypal` or `coinbase`.
#[utoipa::path(put, path = "/v1/payment-providers/{provider}", tag = "commerce",
    request_body(content = PutProvider, examples(
        ("stripe" = (value = json!({"secret_key": "sk_live_…", "webhook_secret": "whsec_…"}))),
        ("paypal" = (value = json!({"client_id": "AYSq3RDGsmBLJE-otTkBtM-jBRd1TCQwFf9RGfwddNXWz0uFU9ztymylOhRS",
            "secret_key": "EGnHDxD_qRPdaLdZz8iCr8N7_MzF-YHPTkjs6NKYQvQSBngp4PTTVWkPZRbL", "webhook_secret": "8PT597110X687430LKGECATA"}))),
        ("coinbase" = (value = json!({"secret_key": "a3b5…", "webhook_secret": "6f2c…"}))))),
    security(("api_key" = [])),
    responses((status = 200, body = ProviderView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn put_provider(
    State(state): State<AppState>,
    caller: Tenant,
    Path(provider): Path<String>,
    Json(body): Json<PutProvider>,
) -> ApiResult<Json<ProviderView>> {
    if !provider::NAMES.contains(&provider.as_str()) {
        return Err(ApiError::NotFound(
            "providers: stripe, paypal, coinbase".into(),
        ));
    }
    let printable = |what: &str, v: &str| {
        if v.is_empty() || v.len() > 512 || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid(format!(
                "{what} must be 1 to 512 printable ASCII characters"
            )));
        }
        Ok(())
    };
    printable("secret_key", &body.secret_key)?;
    printable("webhook_secret", &body.webhook_secret)?;
    // PayPal signs in with client id and secret: kept together, sealed.
    let secret = match (provider.as_str(), &body.client_id) {
        ("paypal", Some(id)) => {
            printable("client_id", id)?;
            if id.contains(':') {
                return Err(ApiError::invalid("client_id cannot contain ':'"));
            }
            format!("{id}:{}", body.secret_key)
        }
        ("paypal", None) => return Err(ApiError::invalid("PayPal needs client_id")),
        (_, Some(_)) => return Err(ApiError::invalid("client_id is PayPal's only")),
        (_, None) => body.secret_key.clone(),
    };
    let official = provider::official_base_urls(&provider);
    let base_url = body
        .base_url
        .unwrap_or_else(|| official[0].into())
        .trim_end_matches('/')
        .to_string();
    let parsed = url::Url::parse(&base_url)
        .map_err(|_| ApiError::invalid("base_url must be an absolute URL"))?;
    // The provider's own API only: a tenant must not make this server call hosts of its
    // choice (an internal address). Tests' local fakes are let in by a setting that is never
    // on in production.
    let any_host = state.jobs.config.commerce.allow_plain_http_providers;
    if !(official.contains(&base_url.as_str())
        || any_host && parsed.host().is_some() && base_url.len() <= 500)
    {
        return Err(ApiError::invalid(format!(
            "base_url must be one of {}",
            official.join(", ")
        )));
    }
    let keys = &state.jobs.content_keys;
    let tenant = &caller.tenant_id;
    let (kek_id, secret_key) = keys.seal_secret(
        &secret_aad(tenant, &provider, "secret_key"),
        secret.as_bytes(),
    );
    let (_, webhook_secret) = keys.seal_secret(
        &secret_aad(tenant, &provider, "webhook_secret"),
        body.webhook_secret.as_bytes(),
    );
    let now = crate::clock::now_ms();
    let settings = db::ProviderSettings {
        tenant_id: tenant.clone(),
        provider: provider.clone(),
        base_url,
        kek_id,
        secret_key,
        webhook_secret,
        created_at: now,
        updated_at: now,
    };
    state.jobs.db.put_provider(&settings).await?;
    let stored = state.jobs.db.get_provider(tenant, &provider).await?;
    Ok(Json(provider_view(&state, stored)))
}

#[utoipa::path(get, path = "/v1/payment-providers", tag = "commerce", security(("api_key" = [])),
    responses((status = 200, body = List<ProviderView>)))]
pub async fn list_providers(
    State(state): State<AppState>,
    caller: Tenant,
) -> ApiResult<Json<List<ProviderView>>> {
    let items = state.jobs.db.list_providers(&caller.tenant_id).await?;
    Ok(Json(List {
        data: items
            .into_iter()
            .map(|p| provider_view(&state, p))
            .collect(),
        next_cursor: None,
    }))
}

/// The client for a tenant's account at `name`, its secrets opened.
pub(super) async fn provider_of(
    state: &AppState,
    tenant_id: &str,
    name: &str,
) -> ApiResult<Box<dyn PaymentProvider>> {
    let p = match state.jobs.db.get_provider(tenant_id, name).await {
        Ok(p) => p,
        Err(db::DbError::NotFound(_)) => {
            return Err(ApiError::Conflict(format!(
                "{name} is not set up: PUT /v1/payment-providers/{name}"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let open = |which: &str, sealed: &str| -> ApiResult<String> {
        let bytes = state
            .jobs
            .content_keys
            .open_secret(&p.kek_id, &secret_aad(tenant_id, name, which), sealed)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("opening the {name} {which}: {e}")))?;
        String::from_utf8(bytes)
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("the {name} {which} is not text")))
    };
    let secret_key = open("secret_key", &p.secret_key)?;
    let webhook_secret = open("webhook_secret", &p.webhook_secret)?;
    provider::open(&provider::Credentials {
        provider: name,
        base_url: &p.base_url,
        secret_key: &secret_key,
        webhook_secret: &webhook_secret,
    })
    .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the {name} settings do not open")))
}

/// A provider's failure as an answer: down is 503 (try again), a refusal 422, an
/// operation it does not have 409.
pub(super) fn provider_error(e: ProviderError) -> ApiError {
    match e {
        ProviderError::Unreachable { .. } => {
            ApiError::Unavailable(format!("the payment provider is unavailable: {e}"))
        }
        ProviderError::Refused { .. } => {
            ApiError::Unprocessable(format!("the payment provider refused: {e}"))
        }
        ProviderError::Unsupported(m) => ApiError::Conflict(m),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkout {
    /// `stripe`, `paypal` or `coinbase` (crypto). Subscriptions are sold through Stripe.
    pub provider: String,
    /// Where the provider sends the buyer after paying.
    pub success_url: String,
    /// Where the provider sends a buyer who gives up.
    pub cancel_url: String,
    /// The buyer, if the cart has none yet (an anonymous cart becomes theirs here).
    pub customer_id: Option<String>,
    /// Or the buyer's email: the tenant's customer with it, or a new one.
    pub email: Option<String>,
    /// Or a playback token (of this tenant) whose `viewer` is a customer id: how a viewer's
    /// page, holding only a publishable key, buys for the viewer it plays for.
    pub playback_token: Option<String>,
    /// The buyer's billing address: its country (ISO 3166-1 alpha-2) and, where tax differs
    /// by region, its region. It sets the tax as the cart's does, and the order is priced
    /// with it.
    pub country: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutView {
    pub order_id: String,
    /// Send the buyer here: the provider's hosted checkout.
    pub redirect_url: String,
    pub customer_id: String,
    pub total: i64,
    pub currency: String,
}

/// The customer a playback token names: verified, of `tenant` (signed by its key, or by
/// the server's for one of its playback ids), with a `viewer` that is one of its customers.
async fn token_viewer(state: &AppState, tenant: &str, token: &str) -> ApiResult<String> {
    let refused = |why: &str| ApiError::Forbidden(format!("playback_token: {why}"));
    let verified = state
        .tokens
        .verify(token, None, crate::drm::AUD_VIDEO)
        .await
        .map_err(|e| refused(&e.to_string()))?;
    let owner = match verified.signed_by_tenant {
        Some(t) => Some(t),
        None => state
            .jobs
            .db
            .playback_target(&verified.claims.sub)
            .await?
            .map(|t| t.tenant_id),
    };
    if owner.as_deref() != Some(tenant) {
        return Err(refused("not a token of this tenant"));
    }
    let viewer = verified
        .claims
        .viewer
        .ok_or_else(|| refused("the token names no viewer"))?;
    match state.jobs.db.get_customer(tenant, &viewer).await {
        Ok(c) => Ok(c.id),
        Err(crate::db::DbError::NotFound(_)) => Err(refused("its viewer is not a customer")),
        Err(e) => Err(e.into()),
    }
}

fn web_url(what: &str, u: &str) -> ApiResult<()> {
    match url::Url::parse(u) {
        Ok(p) if (p.scheme() == "https" || p.scheme() == "http") && u.len() <= 2000 => Ok(()),
        _ => Err(ApiError::invalid(format!(
            "{what} must be an http(s) URL of at most 2000 characters"
        ))),
    }
}

/// Check a cart out: its prices, tax and code are checked again and frozen into an order,
/// and the buyer is sent to the provider's hosted checkout.
#[utoipa::path(post, path = "/v1/carts/{id}/checkout", tag = "commerce",
    request_body(content = Checkout, example = json!({"provider": "stripe", "email": "viewer@example.com",
        "country": "DE", "success_url": "https://example.com/thanks", "cancel_url": "https://example.com/cart"})),
    security(("api_key" = [])),
    responses((status = 201, body = CheckoutView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn checkout(
    State(state): State<AppState>,
    caller: Shop,
    Path(id): Path<String>,
    Json(body): Json<Checkout>,
) -> ApiResult<(StatusCode, Json<CheckoutView>)> {
    if caller.publishable && body.customer_id.is_some() {
        return Err(ApiError::Forbidden(
            "a publishable key cannot name a customer: give the buyer's email".into(),
        ));
    }
    if !provider::NAMES.contains(&body.provider.as_str()) {
        return Err(ApiError::invalid(
            "provider must be stripe, paypal or coinbase",
        ));
    }
    web_url("success_url", &body.success_url)?;
    web_url("cancel_url", &body.cancel_url)?;
    let db = &state.jobs.db;
    let tenant = &caller.tenant_id;
    let now = crate::clock::now_ms();
    match (&body.country, &body.region) {
        (Some(country), region) => {
            let country = super::catalogue::country_code(country)?;
            let region = region
                .as_deref()
                .map(super::catalogue::region_code)
                .transpose()?;
            match db.get_cart(tenant, &id).await?.status.as_str() {
                "open" => {
                    db.set_cart_place(tenant, &id, &country, region.as_deref())
                        .await?
                }
                _ => return Err(ApiError::Conflict("the cart is already checked out".into())),
            }
        }
        (None, Some(_)) => return Err(ApiError::invalid("a region needs its country")),
        (None, None) => {}
    }
    let priced = cart::load(db, tenant, &id, now).await?;
    if priced.cart.status != "open" {
        return Err(ApiError::Conflict("the cart is already checked out".into()));
    }
    if priced.lines.is_empty() {
        return Err(ApiError::invalid("the cart is empty"));
    }
    if let Some(l) = priced.lines.iter().find(|l| l.price.active == 0) {
        return Err(ApiError::Conflict(format!(
            "price {} is no longer sold",
            l.price.id
        )));
    }
    // The buyer.
    let viewer = match &body.playback_token {
        Some(token) => Some(token_viewer(&state, tenant, token).await?),
        None => None,
    };
    let named = body.customer_id.as_ref().or(viewer.as_ref());
    let customer_id = match (&priced.cart.customer_id, named, &body.email) {
        (Some(c), _, _) => c.clone(),
        (None, Some(c), _) => db.get_customer(tenant, c).await?.id,
        (None, None, Some(email)) => {
            if email.len() > 254 || !email.contains('@') || email.contains(char::is_whitespace) {
                return Err(ApiError::invalid("email must be an address"));
            }
            // The same buyer again (whose uses of a code count together), or a new one.
            match db.customer_by_email(tenant, email).await? {
                Some(c) => c.id,
                None => {
                    db.create_customer(tenant, Some(email), None, priced.cart.country.as_deref())
                        .await?
                        .id
                }
            }
        }
        (None, None, None) => {
            return Err(ApiError::invalid(
                "the cart has no customer: give customer_id or email",
            ));
        }
    };
    // The code, checked again with this customer's own uses.
    if let Some(refusal) = &priced.code_refusal {
        return Err(ApiError::Conflict(format!(
            "the discount code does not apply: {refusal}"
        )));
    }
    if let Some(code) = &priced.code {
        let products: Vec<&str> = priced
            .lines
            .iter()
            .map(|l| l.price.product_id.as_str())
            .collect();
        let used = db
            .code_uses_by_customer(tenant, &code.id, &customer_id)
            .await?;
        if let Err(refusal) = check_code(
            code,
            &CodeFacts {
                now_ms: now,
                currency: priced.currency,
                subtotal: priced.totals.subtotal,
                customer_redemptions: used,
                products: &products,
            },
        ) {
            return Err(ApiError::Conflict(format!(
                "the discount code does not apply: {refusal}"
            )));
        }
    }
    let client = provider_of(&state, tenant, &body.provider).await?;
    let order_id = crate::ids::new_id();
    let rate = priced.tax_rate.as_ref().map_or(0, |t| t.rate);
    let lines: Vec<db::OrderLine> = priced
        .lines
        .iter()
        .zip(&priced.totals.lines)
        .enumerate()
        .map(|(i, (l, t))| db::OrderLine {
            order_id: order_id.clone(),
            line_no: i as i64,
            price_id: l.price.id.clone(),
            product_id: l.price.product_id.clone(),
            product_name: l.product_name.clone(),
            r#type: l.price.r#type.clone(),
            quantity: l.quantity,
            unit_amount: l.price.unit_amount,
            subtotal: t.subtotal,
            discount: t.discount,
            tax: t.tax,
            total: t.total,
            tax_rate: rate,
            tax_behavior: l.price.tax_behavior.clone(),
            rental_hours: l.price.rental_hours,
            rental_starts: l.price.rental_starts.clone(),
            billing_interval: l.price.billing_interval.clone(),
            trial_days: l.price.trial_days,
            tier: l.price.tier.clone(),
        })
        .collect();
    let subscription = lines.iter().any(|l| l.r#type == "recurring");
    if subscription && !client.sells_subscriptions() {
        return Err(ApiError::invalid(format!(
            "subscriptions are sold through Stripe, not {}",
            body.provider
        )));
    }
    let order = db::Order {
        id: order_id.clone(),
        tenant_id: tenant.clone(),
        cart_id: priced.cart.id.clone(),
        customer_id: customer_id.clone(),
        currency: priced.cart.currency.clone(),
        country: priced.cart.country.clone(),
        region: priced.cart.region.clone(),
        discount_code_id: priced.code.as_ref().map(|c| c.id.clone()),
        subtotal: priced.totals.subtotal,
        discount: priced.totals.discount,
        tax: priced.totals.tax,
        total: priced.totals.total,
        mode: if subscription {
            "subscription"
        } else {
            "payment"
        }
        .into(),
        provider: client.name().into(),
        provider_session: None,
        payment_ref: None,
        status: "pending".into(),
        refunded: 0,
        disputed: 0,
        created_at: now,
        paid_at: None,
        updated_at: now,
    };
    db.create_order(&order, &lines).await?;
    let session = match client
        .checkout(&order, &lines, &body.success_url, &body.cancel_url)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(order = %order.id, provider = client.name(), error = %e,
                "checkout failed; the cart is open again");
            db.abandon_order(&order).await?;
            return Err(provider_error(e));
        }
    };
    db.set_order_session(&order.id, &session.id).await?;
    tracing::info!(order = %order.id, total = order.total, currency = %order.currency, "checkout started");
    Ok((
        StatusCode::CREATED,
        Json(CheckoutView {
            order_id,
            redirect_url: session.url,
            customer_id,
            total: order.total,
            currency: order.currency.to_ascii_lowercase(),
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublishableKeyView {
    pub id: String,
    /// The key itself, shown only when it is made.
    pub key: Option<String>,
    pub prefix: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl From<db::PublishableKey> for PublishableKeyView {
    fn from(k: db::PublishableKey) -> Self {
        Self {
            id: k.id,
            key: None,
            prefix: k.prefix,
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

/// Make a publishable key (`fcp_…`) for viewers' browsers: it can create carts, fill them,
/// apply codes and check out, and nothing else.
#[utoipa::path(post, path = "/v1/publishable-keys", tag = "commerce", security(("api_key" = [])),
    responses((status = 201, body = PublishableKeyView)))]
pub async fn create_publishable_key(
    State(state): State<AppState>,
    caller: Tenant,
) -> ApiResult<(StatusCode, Json<PublishableKeyView>)> {
    let generated = super::auth::generate_publishable();
    let k = state
        .jobs
        .db
        .create_publishable_key(&caller.tenant_id, &generated.prefix, &generated.hash)
        .await?;
    let mut view = PublishableKeyView::from(k);
    view.key = Some(generated.secret);
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/publishable-keys", tag = "commerce", security(("api_key" = [])),
    params(Page), responses((status = 200, body = List<PublishableKeyView>)))]
pub async fn list_publishable_keys(
    State(state): State<AppState>,
    caller: Tenant,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<PublishableKeyView>>> {
    let limit = page.limit()?;
    let keys = state
        .jobs
        .db
        .list_publishable_keys(&caller.tenant_id, page.cursor.as_deref(), limit)
        .await?;
    let views: Vec<PublishableKeyView> = keys.into_iter().map(Into::into).collect();
    Ok(Json(List::new(views, limit, |k| &k.id)))
}

#[utoipa::path(delete, path = "/v1/publishable-keys/{id}", tag = "commerce", security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_publishable_key(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .jobs
        .db
        .revoke_publishable_key(&caller.tenant_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderLineView {
    pub price_id: String,
    pub product_id: String,
    pub product_name: String,
    pub r#type: String,
    pub quantity: i64,
    pub unit_amount: i64,
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub id: String,
    /// `pending`, `paid`, `failed`, `canceled` or `refunded` (in full).
    pub status: String,
    pub customer_id: String,
    pub currency: String,
    pub country: Option<String>,
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
    /// Refunded so far.
    pub amount_refunded: i64,
    pub disputed: bool,
    /// `payment` or `subscription`.
    pub mode: String,
    pub provider: String,
    pub lines: Vec<OrderLineView>,
    pub created_at: String,
    pub paid_at: Option<String>,
}

async fn order_view(db: &db::Db, o: db::Order) -> ApiResult<OrderView> {
    let lines = db.order_lines(&o.id).await?;
    Ok(order_view_of(o, lines))
}

/// Order `o` with its `lines` as the API shows it.
pub(super) fn order_view_of(o: db::Order, lines: Vec<db::OrderLine>) -> OrderView {
    let lines = lines
        .into_iter()
        .map(|l| OrderLineView {
            price_id: l.price_id,
            product_id: l.product_id,
            product_name: l.product_name,
            r#type: l.r#type,
            quantity: l.quantity,
            unit_amount: l.unit_amount,
            subtotal: l.subtotal,
            discount: l.discount,
            tax: l.tax,
            total: l.total,
        })
        .collect();
    OrderView {
        id: o.id,
        status: o.status,
        customer_id: o.customer_id,
        currency: o.currency.to_ascii_lowercase(),
        country: o.country,
        subtotal: o.subtotal,
        discount: o.discount,
        tax: o.tax,
        total: o.total,
        amount_refunded: o.refunded,
        disputed: o.disputed != 0,
        mode: o.mode,
        provider: o.provider,
        lines,
        created_at: rfc3339(o.created_at),
        paid_at: o.paid_at.map(rfc3339),
    }
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "commerce", security(("api_key" = [])),
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody)))]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<OrderView>> {
    let o = state.jobs.db.get_order(&caller.tenant_id, &id).await?;
    Ok(Json(order_view(&state.jobs.db, o).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderFilter {
    pub customer_id: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/orders", tag = "commerce", params(OrderFilter), security(("api_key" = [])),
    responses((status = 200, body = List<OrderView>)))]
pub async fn list_orders(
    State(state): State<AppState>,
    caller: Tenant,
    Query(f): Query<OrderFilter>,
) -> ApiResult<Json<List<OrderView>>> {
    let limit = Page {
        limit: f.limit,
        cursor: None,
    }
    .limit()?;
    let orders = state
        .jobs
        .db
        .list_orders(
            &caller.tenant_id,
            f.customer_id.as_deref(),
            f.cursor.as_deref(),
            limit,
        )
        .await?;
    let mut views = Vec::with_capacity(orders.len());
    for o in orders {
        views.push(order_view(&state.jobs.db, o).await?);
    }
    Ok(Json(List::new(views, limit, |o| &o.id)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// Minor units; none: all that is not refunded yet. A refund of the whole order ends
    /// the customer's access at their next key request; a partial one keeps it. A
    /// subscription's order refunds its latest paid period's charge: in full, access ends
    /// until a later period is paid.
    pub amount: Option<i64>,
}

/// Refund a paid order, in full or in part, through its provider (a subscription: its
/// latest paid period).
#[utoipa::path(post, path = "/v1/orders/{id}/refunds", tag = "commerce",
    request_body(content = CreateRefund, example = json!({"amount": 500})),
    security(("api_key" = [])),
    responses((status = 200, body = OrderView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn refund(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Json(body): Json<CreateRefund>,
) -> ApiResult<Json<OrderView>> {
    let db = &state.jobs.db;
    let order = db.get_order(&caller.tenant_id, &id).await?;
    if order.status != "paid" {
        return Err(ApiError::Conflict(format!(
            "only a paid order can be refunded; this one is {}",
            order.status
        )));
    }
    if order.mode == "subscription" {
        return refund_period(&state, &caller.tenant_id, order, body.amount).await;
    }
    let left = order.total - order.refunded;
    let amount = body.amount.unwrap_or(left);
    if amount < 1 || amount > left {
        return Err(ApiError::invalid(format!(
            "amount must be 1 to {left} (what is not refunded yet)"
        )));
    }
    if order.payment_ref.is_none() {
        return Err(ApiError::Conflict(
            "the order has no payment to refund".into(),
        ));
    }
    let client = provider_of(&state, &caller.tenant_id, &order.provider).await?;
    // Refunded so far + this: a retried request is the same refund.
    let key = format!("ferrocast-refund-{}-{}-{amount}", order.id, order.refunded);
    client
        .refund(&order, amount, &key)
        .await
        .map_err(provider_error)?;
    let result = db
        .record_refund(&caller.tenant_id, &order.id, order.refunded + amount)
        .await?;
    crate::commerce::invoicing::settle(db, &caller.tenant_id, &order.id).await?;
    tracing::info!(order = %order.id, amount, %result, "refund");
    let o = db.get_order(&caller.tenant_id, &id).await?;
    Ok(Json(order_view(db, o).await?))
}

/// Refunds `amount` (none: all that is left) of the latest paid period of subscription
/// `order`.
async fn refund_period(
    state: &AppState,
    tenant_id: &str,
    order: db::Order,
    amount: Option<i64>,
) -> ApiResult<Json<OrderView>> {
    let db = &state.jobs.db;
    let Some(paid) = db.period_payments(&order.id).await?.pop() else {
        return Err(ApiError::Conflict(
            "the subscription has no paid period to refund (a free trial charged nothing)".into(),
        ));
    };
    let left = paid.amount - paid.refunded;
    let amount = amount.unwrap_or(left);
    if left < 1 {
        return Err(ApiError::Conflict(format!(
            "the latest paid period ({}) is refunded already",
            paid.period + 1
        )));
    }
    if amount < 1 || amount > left {
        return Err(ApiError::invalid(format!(
            "amount must be 1 to {left} (what is not refunded yet of the latest period)"
        )));
    }
    let client = provider_of(state, tenant_id, &order.provider).await?;
    let key = format!(
        "ferrocast-refund-{}-{}-{}-{amount}",
        order.id, paid.payment_ref, paid.refunded
    );
    let charge = db::Order {
        payment_ref: Some(paid.payment_ref.clone()),
        ..order.clone()
    };
    client
        .refund(&charge, amount, &key)
        .await
        .map_err(provider_error)?;
    let result = db
        .record_period_refund(
            tenant_id,
            &order.provider,
            &paid.payment_ref,
            paid.refunded + amount,
        )
        .await?;
    crate::commerce::invoicing::settle(db, tenant_id, &order.id).await?;
    tracing::info!(order = %order.id, amount, %result, "refund of a period");
    let o = db.get_order(tenant_id, &order.id).await?;
    Ok(Json(order_view(db, o).await?))
}
