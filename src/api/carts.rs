//! Carts: a buyer's prices, quantities and discount code, read back priced (subtotal,
//! discount, tax, total, and each line's share). The tax country is the cart's (the billing
//! country), else the customer's, else the buyer's by the country header or GeoIP database.
//! One code per cart: applying a second replaces the first.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::{ClientIp, viewer_country};
use super::auth::Shop;
use super::catalogue::{country_code, normalise_code, region_code};
use super::{AppState, Json, Path};
use crate::commerce::cart::{self, PricedCart};
use crate::commerce::money::{MAX_QUANTITY, Rate};
use crate::error::{ApiError, ApiResult, ErrorBody};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCart {
    /// ISO 4217; every price in the cart is in it.
    pub currency: String,
    pub customer_id: Option<String>,
    /// The buyer's billing country (ISO 3166-1 alpha-2), for tax.
    pub country: Option<String>,
    /// Its subdivision, where the tax differs by region (`CA` in the US).
    pub region: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartLineView {
    pub price_id: String,
    pub product_id: String,
    pub product_name: String,
    /// `one_time`, `rental` or `recurring`.
    pub r#type: String,
    pub quantity: i64,
    pub unit_amount: i64,
    /// unit_amount × quantity.
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    /// What the buyer pays for this line.
    pub total: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppliedCodeView {
    pub id: String,
    pub code: String,
    /// Why it takes nothing off now (expired, used up, another currency…); null while it
    /// applies.
    pub problem: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartTaxView {
    pub country: String,
    pub region: Option<String>,
    pub percentage: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartView {
    pub id: String,
    /// `open`, or `checked_out`.
    pub status: String,
    /// Lower case, as Stripe writes it.
    pub currency: String,
    pub customer_id: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub lines: Vec<CartLineView>,
    pub discount_code: Option<AppliedCodeView>,
    /// The rate applied; null when the buyer's country has none (or is unknown).
    pub tax_rate: Option<CartTaxView>,
    /// Before discounts.
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
}

impl From<PricedCart> for CartView {
    fn from(p: PricedCart) -> Self {
        let lines = p
            .lines
            .iter()
            .zip(&p.totals.lines)
            .map(|(l, t)| CartLineView {
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
            })
            .collect();
        Self {
            id: p.cart.id,
            status: p.cart.status,
            currency: p.currency.stripe_code(),
            customer_id: p.cart.customer_id,
            country: p.cart.country,
            region: p.cart.region,
            lines,
            discount_code: p.code.map(|c| AppliedCodeView {
                id: c.id,
                code: c.code,
                problem: p.code_refusal.map(|r| r.to_string()),
            }),
            tax_rate: p.tax_rate.map(|t| CartTaxView {
                country: t.country,
                region: (!t.region.is_empty()).then_some(t.region),
                percentage: Rate::from_ten_thousandths(t.rate)
                    .unwrap_or_default()
                    .to_string(),
            }),
            subtotal: p.totals.subtotal,
            discount: p.totals.discount,
            tax: p.totals.tax,
            total: p.totals.total,
        }
    }
}

async fn priced(state: &AppState, tenant_id: &str, id: &str) -> ApiResult<CartView> {
    Ok(
        cart::load(&state.jobs.db, tenant_id, id, crate::clock::now_ms())
            .await?
            .into(),
    )
}

/// Create a cart.
#[utoipa::path(post, path = "/v1/carts", tag = "commerce", request_body(content = CreateCart,
    example = json!({"currency": "eur", "country": "DE"})),
    security(("api_key" = [])),
    responses((status = 201, body = CartView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_cart(
    State(state): State<AppState>,
    caller: Shop,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(body): Json<CreateCart>,
) -> ApiResult<(StatusCode, Json<CartView>)> {
    if caller.publishable && body.customer_id.is_some() {
        return Err(ApiError::Forbidden(
            "a publishable key cannot name a customer: the buyer gives an email at checkout".into(),
        ));
    }
    let currency = crate::commerce::money::Currency::parse(&body.currency)
        .ok_or_else(|| ApiError::invalid("currency must be an ISO 4217 code, such as eur"))?;
    let customer = match &body.customer_id {
        Some(id) => Some(state.jobs.db.get_customer(&caller.tenant_id, id).await?),
        None => None,
    };
    let region = body.region.as_deref().map(region_code).transpose()?;
    let country = match body.country.as_deref() {
        Some(c) => Some(country_code(c)?),
        None => customer
            .as_ref()
            .and_then(|c| c.country.clone())
            .or_else(|| {
                viewer_country(&state, &headers, ip.as_deref()).and_then(|c| country_code(&c).ok())
            }),
    };
    if region.is_some() && country.is_none() {
        return Err(ApiError::invalid("a region needs its country"));
    }
    let c = state
        .jobs
        .db
        .create_cart(
            &caller.tenant_id,
            currency.code(),
            body.customer_id.as_deref(),
            country.as_deref(),
            region.as_deref(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(priced(&state, &caller.tenant_id, &c.id).await?),
    ))
}

#[utoipa::path(get, path = "/v1/carts/{id}", tag = "commerce", security(("api_key" = [])),
    responses((status = 200, body = CartView), (status = 404, body = ErrorBody)))]
pub async fn get_cart(
    State(state): State<AppState>,
    caller: Shop,
    Path(id): Path<String>,
) -> ApiResult<Json<CartView>> {
    Ok(Json(priced(&state, &caller.tenant_id, &id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCartItem {
    pub price_id: String,
    /// The quantity to hold (1 to 10000); 0 takes the price out.
    pub quantity: i64,
}

/// Put a price in a cart, change its quantity, or (quantity 0) take it out.
#[utoipa::path(post, path = "/v1/carts/{id}/items", tag = "commerce", request_body(content = SetCartItem,
    example = json!({"price_id": "01a24e…", "quantity": 1})),
    security(("api_key" = [])),
    responses((status = 200, body = CartView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn set_item(
    State(state): State<AppState>,
    caller: Shop,
    Path(id): Path<String>,
    Json(body): Json<SetCartItem>,
) -> ApiResult<Json<CartView>> {
    if !(0..=MAX_QUANTITY).contains(&body.quantity) {
        return Err(ApiError::invalid(format!(
            "quantity must be 0 to {MAX_QUANTITY}"
        )));
    }
    let db = &state.jobs.db;
    let cart = db.get_cart(&caller.tenant_id, &id).await?;
    if cart.status != "open" {
        return Err(ApiError::Conflict("the cart is checked out".into()));
    }
    let price = db.get_price(&caller.tenant_id, &body.price_id).await?;
    if body.quantity > 0 {
        if price.active == 0 {
            return Err(ApiError::Conflict("the price is no longer sold".into()));
        }
        if price.currency != cart.currency {
            return Err(ApiError::invalid(format!(
                "the price is in {}, the cart in {}",
                price.currency, cart.currency
            )));
        }
        if price.r#type == "recurring" && body.quantity != 1 {
            return Err(ApiError::invalid("a subscription's quantity is 1"));
        }
        // Subscriptions are bought on their own: a subscription's end ends its order's
        // access, which must not take a one-time purchase with it.
        for held in db.cart_prices(&caller.tenant_id, &cart.id).await? {
            let other = held.price;
            if other.id == price.id {
                continue;
            }
            if (other.r#type == "recurring") != (price.r#type == "recurring") {
                return Err(ApiError::invalid(
                    "subscriptions are checked out in a cart of their own",
                ));
            }
            if other.billing_interval != price.billing_interval {
                return Err(ApiError::invalid(
                    "a cart's subscriptions all renew on one interval (month or year)",
                ));
            }
        }
    }
    db.set_cart_item(&caller.tenant_id, &cart.id, &price.id, body.quantity)
        .await?;
    Ok(Json(priced(&state, &caller.tenant_id, &id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyCode {
    pub code: String,
}

/// Apply a discount code to a cart (replacing any other: one code per cart). A code that
/// does not apply now is refused with the reason.
#[utoipa::path(post, path = "/v1/carts/{id}/discount", tag = "commerce", request_body(content = ApplyCode,
    example = json!({"code": "FINAL20"})),
    security(("api_key" = [])),
    responses((status = 200, body = CartView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn apply_code(
    State(state): State<AppState>,
    caller: Shop,
    Path(id): Path<String>,
    Json(body): Json<ApplyCode>,
) -> ApiResult<Json<CartView>> {
    let db = &state.jobs.db;
    let cart = db.get_cart(&caller.tenant_id, &id).await?;
    let unknown = || ApiError::NotFound("no such discount code".into());
    let code = normalise_code(&body.code).ok_or_else(unknown)?;
    let code = db
        .find_discount_code(&caller.tenant_id, &code)
        .await?
        .ok_or_else(unknown)?;
    // Checked on the cart as it would be with the code.
    let mut with = cart.clone();
    with.discount_code_id = Some(code.id.clone());
    let current = cart::load(db, &caller.tenant_id, &id, crate::clock::now_ms()).await?;
    let trial = cart::price_cart(
        with,
        current.currency,
        current.lines,
        Some(code.clone()),
        current.tax_rate,
        crate::clock::now_ms(),
    );
    if let Some(refusal) = &trial.code_refusal {
        return Err(ApiError::invalid(refusal.to_string()));
    }
    db.set_cart_code(&caller.tenant_id, &cart.id, Some(&code.id))
        .await?;
    // The cart as stored now is the one just priced.
    Ok(Json(trial.into()))
}

/// Take the discount code off a cart.
#[utoipa::path(delete, path = "/v1/carts/{id}/discount", tag = "commerce", security(("api_key" = [])),
    responses((status = 200, body = CartView), (status = 404, body = ErrorBody)))]
pub async fn remove_code(
    State(state): State<AppState>,
    caller: Shop,
    Path(id): Path<String>,
) -> ApiResult<Json<CartView>> {
    let db = &state.jobs.db;
    db.get_cart(&caller.tenant_id, &id).await?;
    db.set_cart_code(&caller.tenant_id, &id, None).await?;
    Ok(Json(priced(&state, &caller.tenant_id, &id).await?))
}
