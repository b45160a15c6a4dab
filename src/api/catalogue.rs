//! What a tenant sells: products (the playback ids they grant), their prices, tax rates,
//! discount codes, and customers. Names follow Stripe's where it has one; amounts are minor
//! units, percentages decimal strings. Prices are immutable once created, as Stripe's are:
//! a new price replaces an old one, so an order's price never changes under it.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Tenant;
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::commerce::money::{Currency, MAX_AMOUNT, Rate, TaxBehavior};
use crate::db;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The most playback ids one product grants.
const MAX_PRODUCT_IDS: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub name: String,
    /// The playback ids (live streams, assets) a purchase grants; or `all_content`.
    pub playback_ids: Option<Vec<String>>,
    /// Grants every playback id of the tenant, present and future.
    pub all_content: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    pub id: String,
    pub name: String,
    pub playback_ids: Vec<String>,
    pub all_content: bool,
    pub created_at: String,
}

impl From<db::Product> for ProductView {
    fn from(p: db::Product) -> Self {
        Self {
            id: p.id,
            name: p.name,
            playback_ids: p.playback_ids,
            all_content: p.all_content,
            created_at: rfc3339(p.created_at),
        }
    }
}

/// Text of 1 to `max` characters, with no control characters.
fn text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.trim().is_empty() || value.chars().count() > max || value.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(format!(
            "{field} must be 1 to {max} characters, without control characters"
        )));
    }
    Ok(())
}

/// Create a product: what a purchase grants access to.
#[utoipa::path(post, path = "/v1/products", tag = "commerce", request_body(content = CreateProduct,
    example = json!({"name": "Cup final, pay-per-view", "playback_ids": ["4dbe1ecf37089fe4d3d1bd916bbe6a57"]})),
    security(("api_key" = [])),
    responses((status = 201, body = ProductView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_product(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<CreateProduct>,
) -> ApiResult<(StatusCode, Json<ProductView>)> {
    text("name", &body.name, 200)?;
    let all = body.all_content.unwrap_or(false);
    let mut ids = body.playback_ids.unwrap_or_default();
    ids.sort();
    ids.dedup();
    match (all, ids.len()) {
        (true, 0) => {}
        (false, 1..=MAX_PRODUCT_IDS) => {}
        (true, _) => {
            return Err(ApiError::invalid(
                "give playback_ids or all_content: true, not both",
            ));
        }
        (false, 0) => {
            return Err(ApiError::invalid(
                "give playback_ids (at least one) or all_content: true",
            ));
        }
        (false, _) => {
            return Err(ApiError::invalid(format!(
                "a product grants at most {MAX_PRODUCT_IDS} playback ids"
            )));
        }
    }
    for id in &ids {
        match state.jobs.db.find_playback_target(id).await? {
            Some(t) if t.tenant_id == caller.tenant_id => {}
            _ => {
                return Err(ApiError::NotFound(format!(
                    "playback id {} not found",
                    id.escape_debug()
                        .to_string()
                        .chars()
                        .take(64)
                        .collect::<String>()
                )));
            }
        }
    }
    let p = state
        .jobs
        .db
        .create_product(&caller.tenant_id, body.name.trim(), all, &ids)
        .await?;
    Ok((StatusCode::CREATED, Json(p.into())))
}

#[utoipa::path(get, path = "/v1/products/{id}", tag = "commerce", security(("api_key" = [])),
    responses((status = 200, body = ProductView), (status = 404, body = ErrorBody)))]
pub async fn get_product(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<ProductView>> {
    let p = state.jobs.db.get_product(&caller.tenant_id, &id).await?;
    Ok(Json(p.into()))
}

#[utoipa::path(get, path = "/v1/products", tag = "commerce", params(Page), security(("api_key" = [])),
    responses((status = 200, body = List<ProductView>)))]
pub async fn list_products(
    State(state): State<AppState>,
    caller: Tenant,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<ProductView>>> {
    let limit = page.limit()?;
    let items = state
        .jobs
        .db
        .list_products(&caller.tenant_id, page.cursor.as_deref(), limit)
        .await?;
    let views: Vec<ProductView> = items.into_iter().map(Into::into).collect();
    Ok(Json(List::new(views, limit, |p| &p.id)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePrice {
    pub product_id: String,
    /// `one_time`, `rental` or `recurring`.
    pub r#type: String,
    /// Minor units of `currency` (cents; yen; fils).
    pub unit_amount: i64,
    /// ISO 4217 (`eur`, `USD`).
    pub currency: String,
    /// `exclusive` (default: tax is added) or `inclusive` (the amount holds the tax).
    pub tax_behavior: Option<String>,
    /// Rentals: hours of access (1 to 8760).
    pub rental_hours: Option<i64>,
    /// Rentals: the hours count from the `purchase` (default) or the `first_play`.
    pub rental_starts: Option<String>,
    /// Subscriptions: `month` or `year`.
    pub interval: Option<String>,
    /// Subscriptions: free days before the first charge (0 to 730).
    pub trial_days: Option<i64>,
    /// The highest resolution this price buys (`720p`): the `max_resolution` of the buyer's
    /// tokens. None: every rendition.
    pub tier: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    pub id: String,
    pub product_id: String,
    pub r#type: String,
    pub unit_amount: i64,
    /// Lower case, as Stripe writes it.
    pub currency: String,
    pub tax_behavior: String,
    pub rental_hours: Option<i64>,
    pub rental_starts: Option<String>,
    pub interval: Option<String>,
    pub trial_days: Option<i64>,
    pub tier: Option<String>,
    pub active: bool,
    pub created_at: String,
}

impl From<db::Price> for PriceView {
    fn from(p: db::Price) -> Self {
        Self {
            id: p.id,
            product_id: p.product_id,
            r#type: p.r#type,
            unit_amount: p.unit_amount,
            currency: p.currency.to_ascii_lowercase(),
            tax_behavior: p.tax_behavior,
            rental_hours: p.rental_hours,
            rental_starts: p.rental_starts,
            interval: p.billing_interval,
            trial_days: p.trial_days,
            tier: (!p.tier.is_empty()).then_some(p.tier),
            active: p.active != 0,
            created_at: rfc3339(p.created_at),
        }
    }
}

/// Checks a price request into what is stored.
fn new_price(body: CreatePrice) -> ApiResult<db::NewPrice> {
    let currency = Currency::parse(&body.currency)
        .ok_or_else(|| ApiError::invalid("currency must be an ISO 4217 code, such as eur"))?;
    if !(0..=MAX_AMOUNT).contains(&body.unit_amount) {
        return Err(ApiError::invalid(format!(
            "unit_amount must be 0 to {MAX_AMOUNT} minor units"
        )));
    }
    let tax_behavior = match body.tax_behavior.as_deref() {
        None => TaxBehavior::Exclusive,
        Some(t) => TaxBehavior::parse(t)
            .ok_or_else(|| ApiError::invalid("tax_behavior must be inclusive or exclusive"))?,
    };
    let only = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(ApiError::invalid(what))
        }
    };
    let kind = match body.r#type.as_str() {
        "one_time" => "one_time",
        "rental" => "rental",
        "recurring" => "recurring",
        _ => {
            return Err(ApiError::invalid(
                "type must be one_time, rental or recurring",
            ));
        }
    };
    only(
        kind == "rental" || (body.rental_hours.is_none() && body.rental_starts.is_none()),
        "rental_hours and rental_starts are for rental prices",
    )?;
    only(
        kind == "recurring" || (body.interval.is_none() && body.trial_days.is_none()),
        "interval and trial_days are for recurring prices",
    )?;
    let (rental_hours, rental_starts) = if kind == "rental" {
        let hours = body
            .rental_hours
            .filter(|h| (1..=8760).contains(h))
            .ok_or_else(|| ApiError::invalid("a rental needs rental_hours, 1 to 8760"))?;
        let starts = match body.rental_starts.as_deref() {
            None | Some("purchase") => "purchase",
            Some("first_play") => "first_play",
            Some(_) => {
                return Err(ApiError::invalid(
                    "rental_starts must be purchase or first_play",
                ));
            }
        };
        (Some(hours), Some(starts))
    } else {
        (None, None)
    };
    let (interval, trial_days) = if kind == "recurring" {
        let interval = match body.interval.as_deref() {
            Some("month") => "month",
            Some("year") => "year",
            _ => {
                return Err(ApiError::invalid(
                    "a recurring price needs interval: month or year",
                ));
            }
        };
        if body.trial_days.is_some_and(|d| !(0..=730).contains(&d)) {
            return Err(ApiError::invalid("trial_days must be 0 to 730"));
        }
        (Some(interval), body.trial_days.filter(|d| *d > 0))
    } else {
        (None, None)
    };
    let tier = match body.tier {
        None => String::new(),
        Some(t) => match crate::drm::resolution_lines(&t) {
            Some(lines) => format!("{lines}p"),
            None => return Err(ApiError::invalid("tier must be a resolution such as 720p")),
        },
    };
    Ok(db::NewPrice {
        product_id: body.product_id,
        r#type: kind,
        unit_amount: body.unit_amount,
        currency: currency.code().into(),
        tax_behavior: tax_behavior.as_str(),
        rental_hours,
        rental_starts,
        billing_interval: interval,
        trial_days,
        tier,
    })
}

/// Create a price for a product: one-time, rental or recurring.
#[utoipa::path(post, path = "/v1/prices", tag = "commerce", request_body(content = CreatePrice,
    example = json!({"product_id": "01a24e…", "type": "rental", "unit_amount": 499, "currency": "eur",
        "tax_behavior": "inclusive", "rental_hours": 48, "rental_starts": "first_play", "tier": "1080p"})),
    security(("api_key" = [])),
    responses((status = 201, body = PriceView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_price(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<CreatePrice>,
) -> ApiResult<(StatusCode, Json<PriceView>)> {
    let new = new_price(body)?;
    state
        .jobs
        .db
        .get_product(&caller.tenant_id, &new.product_id)
        .await?;
    let p = state.jobs.db.create_price(&caller.tenant_id, &new).await?;
    Ok((StatusCode::CREATED, Json(p.into())))
}

#[utoipa::path(get, path = "/v1/prices/{id}", tag = "commerce", security(("api_key" = [])),
    responses((status = 200, body = PriceView), (status = 404, body = ErrorBody)))]
pub async fn get_price(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<PriceView>> {
    Ok(Json(
        state
            .jobs
            .db
            .get_price(&caller.tenant_id, &id)
            .await?
            .into(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePrice {
    /// False: no longer sold (carts refuse it, and carts holding it cannot be checked out);
    /// true: sold again. A price's amounts never change: make a new price for new amounts.
    pub active: bool,
}

/// Stop or resume selling a price (Stripe's `POST /v1/prices/{id}`: only `active` changes).
#[utoipa::path(post, path = "/v1/prices/{id}", tag = "commerce", security(("api_key" = [])),
    request_body(content = UpdatePrice, example = json!({"active": false})),
    responses((status = 200, body = PriceView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn update_price(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Json(body): Json<UpdatePrice>,
) -> ApiResult<Json<PriceView>> {
    Ok(Json(
        state
            .jobs
            .db
            .set_price_active(&caller.tenant_id, &id, body.active)
            .await?
            .into(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PriceFilter {
    pub product_id: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/prices", tag = "commerce", params(PriceFilter), security(("api_key" = [])),
    responses((status = 200, body = List<PriceView>)))]
pub async fn list_prices(
    State(state): State<AppState>,
    caller: Tenant,
    Query(f): Query<PriceFilter>,
) -> ApiResult<Json<List<PriceView>>> {
    let limit = Page {
        limit: f.limit,
        cursor: None,
    }
    .limit()?;
    let items = state
        .jobs
        .db
        .list_prices(
            &caller.tenant_id,
            f.product_id.as_deref(),
            f.cursor.as_deref(),
            limit,
        )
        .await?;
    let views: Vec<PriceView> = items.into_iter().map(Into::into).collect();
    Ok(Json(List::new(views, limit, |p| &p.id)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaxRate {
    /// ISO 3166-1 alpha-2 (`DE`).
    pub country: String,
    /// A subdivision (`CA`, `QC`), for countries whose tax differs by region.
    pub region: Option<String>,
    /// A decimal string with at most four decimals (`"19"`, `"8.875"`).
    pub percentage: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaxRateView {
    pub id: String,
    pub country: String,
    pub region: Option<String>,
    pub percentage: String,
    pub created_at: String,
}

impl From<db::TaxRate> for TaxRateView {
    fn from(t: db::TaxRate) -> Self {
        Self {
            id: t.id,
            country: t.country,
            region: (!t.region.is_empty()).then_some(t.region),
            percentage: Rate::from_ten_thousandths(t.rate)
                .unwrap_or_default()
                .to_string(),
            created_at: rfc3339(t.created_at),
        }
    }
}

/// A country code: two ASCII letters, upper-cased.
pub(super) fn country_code(c: &str) -> ApiResult<String> {
    if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(c.to_ascii_uppercase())
    } else {
        Err(ApiError::invalid(
            "country must be an ISO 3166-1 alpha-2 code, such as DE",
        ))
    }
}

/// A region code: 1 to 3 ASCII letters or digits, upper-cased (ISO 3166-2's part after the
/// country).
pub(super) fn region_code(r: &str) -> ApiResult<String> {
    if (1..=3).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(r.to_ascii_uppercase())
    } else {
        Err(ApiError::invalid(
            "region must be the 1 to 3 letters or digits after the country in ISO 3166-2 (CA for US-CA)",
        ))
    }
}

/// Create the tax rate of a country, or of one of its regions.
#[utoipa::path(post, path = "/v1/tax-rates", tag = "commerce", request_body(content = CreateTaxRate,
    example = json!({"country": "DE", "percentage": "19"})),
    security(("api_key" = [])),
    responses((status = 201, body = TaxRateView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_tax_rate(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<CreateTaxRate>,
) -> ApiResult<(StatusCode, Json<TaxRateView>)> {
    let country = country_code(&body.country)?;
    let region = body.region.as_deref().map(region_code).transpose()?;
    let rate = Rate::parse(&body.percentage).map_err(ApiError::invalid)?;
    let t = state
        .jobs
        .db
        .create_tax_rate(
            &caller.tenant_id,
            &country,
            region.as_deref().unwrap_or(""),
            rate.ten_thousandths(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

#[utoipa::path(get, path = "/v1/tax-rates", tag = "commerce", security(("api_key" = [])),
    params(Page), responses((status = 200, body = List<TaxRateView>)))]
pub async fn list_tax_rates(
    State(state): State<AppState>,
    caller: Tenant,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<TaxRateView>>> {
    let limit = page.limit()?;
    let items = state
        .jobs
        .db
        .list_tax_rates(&caller.tenant_id, page.cursor.as_deref(), limit)
        .await?;
    let views: Vec<TaxRateView> = items.into_iter().map(Into::into).collect();
    Ok(Json(List::new(views, limit, |t| &t.id)))
}

/// A time given to the API: RFC 3339, or Unix seconds.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Instant {
    Rfc3339(String),
    Seconds(i64),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDiscountCode {
    /// What buyers type: 1 to 40 letters, digits, `-` or `_`; matched without case.
    pub code: String,
    /// A percentage as a decimal string (`"20"`); or `amount_off` with `currency`.
    pub percent_off: Option<String>,
    /// Minor units of `currency`, capped at the discounted lines' amount.
    pub amount_off: Option<i64>,
    /// The code's currency: needed with `amount_off` or `min_subtotal`; carts in another
    /// currency cannot use it.
    pub currency: Option<String>,
    /// From when the code works: RFC 3339 (`2027-01-01T00:00:00Z`) or Unix seconds.
    pub starts_at: Option<Instant>,
    /// When the code stops working: RFC 3339 or Unix seconds.
    pub ends_at: Option<Instant>,
    /// Paid orders that may use the code, in all.
    pub max_redemptions: Option<i64>,
    /// Paid orders one customer may use it on.
    pub max_per_customer: Option<i64>,
    /// The least cart subtotal (minor units of `currency`) the code needs.
    pub min_subtotal: Option<i64>,
    /// The products it takes money off; none: every product.
    pub product_ids: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DiscountCodeView {
    pub id: String,
    pub code: String,
    pub percent_off: Option<String>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub max_redemptions: Option<i64>,
    pub max_per_customer: Option<i64>,
    pub min_subtotal: Option<i64>,
    pub times_redeemed: i64,
    pub product_ids: Vec<String>,
    pub created_at: String,
}

impl From<db::DiscountCode> for DiscountCodeView {
    fn from(c: db::DiscountCode) -> Self {
        Self {
            id: c.id,
            code: c.code,
            percent_off: c
                .percent_off
                .and_then(Rate::from_ten_thousandths)
                .map(|r| r.to_string()),
            amount_off: c.amount_off,
            currency: c.currency.map(|c| c.to_ascii_lowercase()),
            starts_at: c.starts_at.map(rfc3339),
            ends_at: c.ends_at.map(rfc3339),
            max_redemptions: c.max_redemptions,
            max_per_customer: c.max_per_customer,
            min_subtotal: c.min_subtotal,
            times_redeemed: c.redemptions,
            product_ids: c.product_ids,
            created_at: rfc3339(c.created_at),
        }
    }
}

/// A code as buyers type it, normalised; none if it cannot be one.
pub(super) fn normalise_code(code: &str) -> Option<String> {
    ((1..=40).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| code.to_ascii_uppercase())
}

/// Create a discount code. A cart holds one code at a time: applying another replaces it.
#[utoipa::path(post, path = "/v1/discount-codes", tag = "commerce", request_body(content = CreateDiscountCode,
    example = json!({"code": "FINAL20", "percent_off": "20", "ends_at": "2027-01-01T00:00:00Z", "max_redemptions": 500, "max_per_customer": 1})),
    security(("api_key" = [])),
    responses((status = 201, body = DiscountCodeView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_discount_code(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<CreateDiscountCode>,
) -> ApiResult<(StatusCode, Json<DiscountCodeView>)> {
    let code = normalise_code(&body.code)
        .ok_or_else(|| ApiError::invalid("code must be 1 to 40 letters, digits, - or _"))?;
    let currency = body
        .currency
        .as_deref()
        .map(|c| {
            Currency::parse(c)
                .map(|c| c.code().to_string())
                .ok_or_else(|| ApiError::invalid("currency must be an ISO 4217 code"))
        })
        .transpose()?;
    let percent_off = match (&body.percent_off, body.amount_off) {
        (Some(p), None) => {
            let r = Rate::parse(p).map_err(ApiError::invalid)?;
            if r.is_zero() {
                return Err(ApiError::invalid("percent_off must be more than 0"));
            }
            Some(r.ten_thousandths())
        }
        (None, Some(a)) => {
            if !(1..=MAX_AMOUNT).contains(&a) {
                return Err(ApiError::invalid(format!(
                    "amount_off must be 1 to {MAX_AMOUNT} minor units"
                )));
            }
            None
        }
        _ => {
            return Err(ApiError::invalid(
                "give percent_off or amount_off, one of them",
            ));
        }
    };
    if (body.amount_off.is_some() || body.min_subtotal.is_some()) && currency.is_none() {
        return Err(ApiError::invalid(
            "amount_off and min_subtotal need the code's currency",
        ));
    }
    if body
        .min_subtotal
        .is_some_and(|m| !(0..=MAX_AMOUNT).contains(&m))
    {
        return Err(ApiError::invalid("min_subtotal is out of range"));
    }
    let seconds = |s: Option<Instant>, what: &str| -> ApiResult<Option<i64>> {
        let ms = match s {
            None => return Ok(None),
            Some(Instant::Seconds(s)) if (0..=253_402_300_799).contains(&s) => s * 1000,
            Some(Instant::Rfc3339(t)) => {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                    .ok()
                    .filter(|t| (0..=9999).contains(&t.year()))
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "{what} must be an RFC 3339 time (2027-01-01T00:00:00Z) or Unix seconds"
                        ))
                    })?
            }
            Some(Instant::Seconds(_)) => {
                return Err(ApiError::invalid(format!("{what} is out of range")));
            }
        };
        Ok(Some(ms))
    };
    let (starts_at, ends_at) = (
        seconds(body.starts_at, "starts_at")?,
        seconds(body.ends_at, "ends_at")?,
    );
    if let (Some(s), Some(e)) = (starts_at, ends_at)
        && e <= s
    {
        return Err(ApiError::invalid("ends_at must be after starts_at"));
    }
    for (what, v) in [
        ("max_redemptions", body.max_redemptions),
        ("max_per_customer", body.max_per_customer),
    ] {
        if v.is_some_and(|v| v < 1) {
            return Err(ApiError::invalid(format!("{what} must be at least 1")));
        }
    }
    let mut product_ids = body.product_ids.unwrap_or_default();
    product_ids.sort();
    product_ids.dedup();
    if product_ids.len() > MAX_PRODUCT_IDS {
        return Err(ApiError::invalid(format!(
            "a code names at most {MAX_PRODUCT_IDS} products"
        )));
    }
    for p in &product_ids {
        state.jobs.db.get_product(&caller.tenant_id, p).await?;
    }
    let c = state
        .jobs
        .db
        .create_discount_code(&db::DiscountCode {
            id: String::new(),
            tenant_id: caller.tenant_id.clone(),
            code,
            percent_off,
            amount_off: body.amount_off,
            currency,
            starts_at,
            ends_at,
            max_redemptions: body.max_redemptions,
            max_per_customer: body.max_per_customer,
            min_subtotal: body.min_subtotal,
            redemptions: 0,
            product_ids,
            created_at: 0,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

#[utoipa::path(get, path = "/v1/discount-codes", tag = "commerce", params(Page), security(("api_key" = [])),
    responses((status = 200, body = List<DiscountCodeView>)))]
pub async fn list_discount_codes(
    State(state): State<AppState>,
    caller: Tenant,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<DiscountCodeView>>> {
    let limit = page.limit()?;
    let items = state
        .jobs
        .db
        .list_discount_codes(&caller.tenant_id, page.cursor.as_deref(), limit)
        .await?;
    let views: Vec<DiscountCodeView> = items.into_iter().map(Into::into).collect();
    Ok(Json(List::new(views, limit, |c| &c.id)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    pub email: Option<String>,
    pub name: Option<String>,
    /// Billing country (ISO 3166-1 alpha-2): the tax country of their carts.
    pub country: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerView {
    /// Also the `viewer` of this customer's playback tokens: entitlements are granted to it.
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub country: Option<String>,
    pub created_at: String,
}

impl From<db::Customer> for CustomerView {
    fn from(c: db::Customer) -> Self {
        Self {
            id: c.id,
            email: c.email,
            name: c.name,
            country: c.country,
            created_at: rfc3339(c.created_at),
        }
    }
}

/// Create a customer: a buyer whose id is the `viewer` of their playback tokens.
#[utoipa::path(post, path = "/v1/customers", tag = "commerce", request_body(content = CreateCustomer,
    example = json!({"email": "viewer@example.com", "country": "DE"})),
    security(("api_key" = [])),
    responses((status = 201, body = CustomerView), (status = 400, body = ErrorBody)))]
pub async fn create_customer(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<CreateCustomer>,
) -> ApiResult<(StatusCode, Json<CustomerView>)> {
    if let Some(e) = &body.email {
        text("email", e, 254)?;
        if !e.contains('@') || e.contains(char::is_whitespace) {
            return Err(ApiError::invalid("email must be an address"));
        }
    }
    if let Some(n) = &body.name {
        text("name", n, 200)?;
    }
    let country = body.country.as_deref().map(country_code).transpose()?;
    let c = state
        .jobs
        .db
        .create_customer(
            &caller.tenant_id,
            body.email.as_deref(),
            body.name.as_deref(),
            country.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

#[utoipa::path(get, path = "/v1/customers/{id}", tag = "commerce", security(("api_key" = [])),
    responses((status = 200, body = CustomerView), (status = 404, body = ErrorBody)))]
pub async fn get_customer(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<CustomerView>> {
    Ok(Json(
        state
            .jobs
            .db
            .get_customer(&caller.tenant_id, &id)
            .await?
            .into(),
    ))
}

#[utoipa::path(get, path = "/v1/customers", tag = "commerce", params(Page), security(("api_key" = [])),
    responses((status = 200, body = List<CustomerView>)))]
pub async fn list_customers(
    State(state): State<AppState>,
    caller: Tenant,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<CustomerView>>> {
    let limit = page.limit()?;
    let items = state
        .jobs
        .db
        .list_customers(&caller.tenant_id, page.cursor.as_deref(), limit)
        .await?;
    let views: Vec<CustomerView> = items.into_iter().map(Into::into).collect();
    Ok(Json(List::new(views, limit, |c| &c.id)))
}
