//! A tenant's branding of its player pages, and what those pages offer for sale.

use serde::Serialize;
use sqlx::FromRow;

use super::{Db, DbResult, now_ms};

/// A tenant's branding as stored (every field checked by the API before it is stored).
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow, Serialize)]
pub struct Branding {
    pub name: Option<String>,
    pub background: Option<String>,
    pub text_color: Option<String>,
    pub accent: Option<String>,
    pub logo_url: Option<String>,
    /// Sanitised.
    pub custom_css: String,
    pub publishable_key: Option<String>,
    pub checkout_provider: Option<String>,
}

/// A price a viewer could buy to play a playback id.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Offer {
    pub product_name: String,
    pub price_id: String,
    pub r#type: String,
    pub unit_amount: i64,
    pub currency: String,
    pub rental_hours: Option<i64>,
    pub billing_interval: Option<String>,
}

const COLUMNS: &str = "name, background, text_color, accent, logo_url, custom_css, \
                       publishable_key, checkout_provider";

impl Db {
    /// The tenant's branding; the defaults if it set none.
    pub async fn branding(&self, tenant_id: &str) -> DbResult<Branding> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM tenant_branding WHERE tenant_id = $1"
        ))
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or_default())
    }

    pub async fn set_branding(&self, tenant_id: &str, b: &Branding) -> DbResult<()> {
        sqlx::query(&format!(
            "INSERT INTO tenant_branding (tenant_id, {COLUMNS}, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (tenant_id) DO UPDATE SET name = $2, background = $3, text_color = $4, \
             accent = $5, logo_url = $6, custom_css = $7, publishable_key = $8, \
             checkout_provider = $9, updated_at = $10"
        ))
        .bind(tenant_id)
        .bind(&b.name)
        .bind(&b.background)
        .bind(&b.text_color)
        .bind(&b.accent)
        .bind(&b.logo_url)
        .bind(&b.custom_css)
        .bind(&b.publishable_key)
        .bind(&b.checkout_provider)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The active prices of the products that grant `playback_id` (or all the tenant's
    /// content), cheapest first; at most 10.
    pub async fn offers_for_playback(
        &self,
        tenant_id: &str,
        playback_id: &str,
    ) -> DbResult<Vec<Offer>> {
        Ok(sqlx::query_as(
            "SELECT p.name AS product_name, pr.id AS price_id, pr.type, pr.unit_amount, \
                    pr.currency, pr.rental_hours, pr.billing_interval \
             FROM products p JOIN prices pr ON pr.product_id = p.id AND pr.tenant_id = p.tenant_id \
             WHERE p.tenant_id = $1 AND pr.active = 1 AND (p.all_content = 1 OR EXISTS ( \
                 SELECT 1 FROM product_playback_ids pp WHERE pp.product_id = p.id \
                 AND pp.playback_id = $2)) \
             ORDER BY pr.unit_amount, pr.id LIMIT 10",
        )
        .bind(tenant_id)
        .bind(playback_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
