//! Commerce rows: products and the playback ids they grant, prices, tax rates, discount
//! codes, customers and carts. Values are stored as validated by `commerce` (amounts in minor
//! units, rates in ten-thousandths of a percent); every query filters on `tenant_id`.

use sqlx::FromRow;

use super::{Db, DbError, DbResult, is_unique_violation, new_id, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub all_content: bool,
    pub playback_ids: Vec<String>,
    pub created_at: i64,
}

#[derive(FromRow)]
struct ProductRow {
    id: String,
    tenant_id: String,
    name: String,
    all_content: i64,
    created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Price {
    pub id: String,
    pub tenant_id: String,
    pub product_id: String,
    /// `one_time`, `rental` or `recurring`.
    pub r#type: String,
    pub unit_amount: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    pub tax_behavior: String,
    pub rental_hours: Option<i64>,
    pub rental_starts: Option<String>,
    pub billing_interval: Option<String>,
    pub trial_days: Option<i64>,
    pub tier: String,
    pub active: i64,
    pub created_at: i64,
}

/// A price before it is stored.
#[derive(Debug, Clone)]
pub struct NewPrice {
    pub product_id: String,
    pub r#type: &'static str,
    pub unit_amount: i64,
    pub currency: String,
    pub tax_behavior: &'static str,
    pub rental_hours: Option<i64>,
    pub rental_starts: Option<&'static str>,
    pub billing_interval: Option<&'static str>,
    pub trial_days: Option<i64>,
    pub tier: String,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TaxRate {
    pub id: String,
    pub tenant_id: String,
    pub country: String,
    pub region: String,
    /// Ten-thousandths of a percent.
    pub rate: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscountCode {
    pub id: String,
    pub tenant_id: String,
    pub code: String,
    /// Ten-thousandths of a percent.
    pub percent_off: Option<i64>,
    pub amount_off: Option<i64>,
    pub currency: Option<String>,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub max_redemptions: Option<i64>,
    pub max_per_customer: Option<i64>,
    pub min_subtotal: Option<i64>,
    pub redemptions: i64,
    /// Empty: every product.
    pub product_ids: Vec<String>,
    pub created_at: i64,
}

#[derive(FromRow)]
struct DiscountCodeRow {
    id: String,
    tenant_id: String,
    code: String,
    percent_off: Option<i64>,
    amount_off: Option<i64>,
    currency: Option<String>,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
    max_redemptions: Option<i64>,
    max_per_customer: Option<i64>,
    min_subtotal: Option<i64>,
    redemptions: i64,
    created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Customer {
    pub id: String,
    pub tenant_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub country: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Cart {
    pub id: String,
    pub tenant_id: String,
    pub currency: String,
    pub customer_id: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub discount_code_id: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A price in a cart, with its product's name and the quantity held.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct CartPrice {
    #[sqlx(flatten)]
    pub price: Price,
    pub product_name: String,
    pub quantity: i64,
}

const PRODUCT_COLUMNS: &str = "id, tenant_id, name, all_content, created_at";
const PRICE_COLUMNS: &str = "id, tenant_id, product_id, type, unit_amount, currency, \
     tax_behavior, rental_hours, rental_starts, billing_interval, trial_days, tier, active, \
     created_at";
const TAX_RATE_COLUMNS: &str = "id, tenant_id, country, region, rate, created_at";
const CODE_COLUMNS: &str = "id, tenant_id, code, percent_off, amount_off, currency, \
     starts_at, ends_at, max_redemptions, max_per_customer, min_subtotal, redemptions, created_at";
const CUSTOMER_COLUMNS: &str = "id, tenant_id, email, name, country, created_at";
const CART_COLUMNS: &str = "id, tenant_id, currency, customer_id, country, region, \
     discount_code_id, status, created_at, updated_at";

/// The most items one cart holds.
pub const MAX_CART_ITEMS: i64 = 100;

impl Db {
    /// Stores a product granting `playback_ids` (ids checked by the caller) or all content.
    pub async fn create_product(
        &self,
        tenant_id: &str,
        name: &str,
        all_content: bool,
        playback_ids: &[String],
    ) -> DbResult<Product> {
        let p = Product {
            id: new_id(),
            tenant_id: tenant_id.into(),
            name: name.into(),
            all_content,
            playback_ids: playback_ids.to_vec(),
            created_at: now_ms(),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO products ({PRODUCT_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
        ))
        .bind(&p.id)
        .bind(&p.tenant_id)
        .bind(&p.name)
        .bind(i64::from(all_content))
        .bind(p.created_at)
        .execute(&mut *tx)
        .await?;
        for id in playback_ids {
            sqlx::query(
                "INSERT INTO product_playback_ids (product_id, playback_id) VALUES ($1, $2)",
            )
            .bind(&p.id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(p)
    }

    pub async fn get_product(&self, tenant_id: &str, id: &str) -> DbResult<Product> {
        let row: ProductRow = self
            .tenant_row("products", PRODUCT_COLUMNS, tenant_id, id, "product")
            .await?;
        self.with_playback_ids(row).await
    }

    async fn with_playback_ids(&self, row: ProductRow) -> DbResult<Product> {
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT playback_id FROM product_playback_ids WHERE product_id = $1 \
             ORDER BY playback_id",
        )
        .bind(&row.id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Product {
            id: row.id,
            tenant_id: row.tenant_id,
            name: row.name,
            all_content: row.all_content != 0,
            playback_ids: ids.into_iter().map(|(i,)| i).collect(),
            created_at: row.created_at,
        })
    }

    pub async fn list_products(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<Product>> {
        let rows: Vec<ProductRow> = self
            .tenant_page("products", PRODUCT_COLUMNS, tenant_id, None, after, limit)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.with_playback_ids(row).await?);
        }
        Ok(out)
    }

    pub async fn create_price(&self, tenant_id: &str, p: &NewPrice) -> DbResult<Price> {
        let price = Price {
            id: new_id(),
            tenant_id: tenant_id.into(),
            product_id: p.product_id.clone(),
            r#type: p.r#type.into(),
            unit_amount: p.unit_amount,
            currency: p.currency.clone(),
            tax_behavior: p.tax_behavior.into(),
            rental_hours: p.rental_hours,
            rental_starts: p.rental_starts.map(Into::into),
            billing_interval: p.billing_interval.map(Into::into),
            trial_days: p.trial_days,
            tier: p.tier.clone(),
            active: 1,
            created_at: now_ms(),
        };
        sqlx::query(&format!(
            "INSERT INTO prices ({PRICE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&price.id)
        .bind(&price.tenant_id)
        .bind(&price.product_id)
        .bind(&price.r#type)
        .bind(price.unit_amount)
        .bind(&price.currency)
        .bind(&price.tax_behavior)
        .bind(price.rental_hours)
        .bind(&price.rental_starts)
        .bind(&price.billing_interval)
        .bind(price.trial_days)
        .bind(&price.tier)
        .bind(price.active)
        .bind(price.created_at)
        .execute(&self.pool)
        .await?;
        Ok(price)
    }

    pub async fn get_price(&self, tenant_id: &str, id: &str) -> DbResult<Price> {
        self.tenant_row("prices", PRICE_COLUMNS, tenant_id, id, "price")
            .await
    }

    /// Stops (or starts again) selling price `id`: carts refuse it, and a cart holding it
    /// cannot be checked out. What was bought with it is not changed.
    pub async fn set_price_active(
        &self,
        tenant_id: &str,
        id: &str,
        active: bool,
    ) -> DbResult<Price> {
        let done = sqlx::query("UPDATE prices SET active = $1 WHERE id = $2 AND tenant_id = $3")
            .bind(i64::from(active))
            .bind(id)
            .bind(tenant_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound("price"));
        }
        self.get_price(tenant_id, id).await
    }

    pub async fn list_prices(
        &self,
        tenant_id: &str,
        product_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<Price>> {
        let filter = product_id.map(|p| ("product_id", p));
        self.tenant_page("prices", PRICE_COLUMNS, tenant_id, filter, after, limit)
            .await
    }

    /// Stores a tax rate; a second rate for the same country and region is a conflict.
    pub async fn create_tax_rate(
        &self,
        tenant_id: &str,
        country: &str,
        region: &str,
        rate: i64,
    ) -> DbResult<TaxRate> {
        let t = TaxRate {
            id: new_id(),
            tenant_id: tenant_id.into(),
            country: country.into(),
            region: region.into(),
            rate,
            created_at: now_ms(),
        };
        sqlx::query(&format!(
            "INSERT INTO tax_rates ({TAX_RATE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&t.id)
        .bind(&t.tenant_id)
        .bind(&t.country)
        .bind(&t.region)
        .bind(t.rate)
        .bind(t.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                DbError::Conflict(format!(
                    "a tax rate for {country}{} exists",
                    if region.is_empty() {
                        String::new()
                    } else {
                        format!("-{region}")
                    }
                ))
            } else {
                e.into()
            }
        })?;
        Ok(t)
    }

    pub async fn list_tax_rates(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<TaxRate>> {
        self.tenant_page("tax_rates", TAX_RATE_COLUMNS, tenant_id, None, after, limit)
            .await
    }

    /// The rate for `region` of `country`, else the country's own, else none.
    pub async fn tax_rate_for(
        &self,
        tenant_id: &str,
        country: &str,
        region: &str,
    ) -> DbResult<Option<TaxRate>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {TAX_RATE_COLUMNS} FROM tax_rates WHERE tenant_id = $1 AND country = $2 \
             AND (region = $3 OR region = '') ORDER BY region DESC LIMIT 1"
        ))
        .bind(tenant_id)
        .bind(country)
        .bind(region)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Stores a code (its `id`, `redemptions` and `created_at` are set here).
    pub async fn create_discount_code(&self, c: &DiscountCode) -> DbResult<DiscountCode> {
        let code = DiscountCode {
            id: new_id(),
            redemptions: 0,
            created_at: now_ms(),
            ..c.clone()
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO discount_codes ({CODE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&code.id)
        .bind(&code.tenant_id)
        .bind(&code.code)
        .bind(code.percent_off)
        .bind(code.amount_off)
        .bind(&code.currency)
        .bind(code.starts_at)
        .bind(code.ends_at)
        .bind(code.max_redemptions)
        .bind(code.max_per_customer)
        .bind(code.min_subtotal)
        .bind(code.redemptions)
        .bind(code.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                DbError::Conflict(format!("the code {} exists", code.code))
            } else {
                e.into()
            }
        })?;
        for p in &code.product_ids {
            sqlx::query("INSERT INTO discount_code_products (code_id, product_id) VALUES ($1, $2)")
                .bind(&code.id)
                .bind(p)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(code)
    }

    async fn code_with_products(&self, row: DiscountCodeRow) -> DbResult<DiscountCode> {
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT product_id FROM discount_code_products WHERE code_id = $1 ORDER BY product_id",
        )
        .bind(&row.id)
        .fetch_all(&self.pool)
        .await?;
        Ok(DiscountCode {
            id: row.id,
            tenant_id: row.tenant_id,
            code: row.code,
            percent_off: row.percent_off,
            amount_off: row.amount_off,
            currency: row.currency,
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            max_redemptions: row.max_redemptions,
            max_per_customer: row.max_per_customer,
            min_subtotal: row.min_subtotal,
            redemptions: row.redemptions,
            product_ids: ids.into_iter().map(|(i,)| i).collect(),
            created_at: row.created_at,
        })
    }

    pub async fn get_discount_code(&self, tenant_id: &str, id: &str) -> DbResult<DiscountCode> {
        let row: DiscountCodeRow = self
            .tenant_row(
                "discount_codes",
                CODE_COLUMNS,
                tenant_id,
                id,
                "discount code",
            )
            .await?;
        self.code_with_products(row).await
    }

    /// The code a buyer typed (already upper case).
    pub async fn find_discount_code(
        &self,
        tenant_id: &str,
        code: &str,
    ) -> DbResult<Option<DiscountCode>> {
        let row: Option<DiscountCodeRow> = sqlx::query_as(&format!(
            "SELECT {CODE_COLUMNS} FROM discount_codes WHERE tenant_id = $1 AND code = $2"
        ))
        .bind(tenant_id)
        .bind(code)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some(self.code_with_products(r).await?)),
            None => Ok(None),
        }
    }

    pub async fn list_discount_codes(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<DiscountCode>> {
        let rows: Vec<DiscountCodeRow> = self
            .tenant_page(
                "discount_codes",
                CODE_COLUMNS,
                tenant_id,
                None,
                after,
                limit,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(self.code_with_products(r).await?);
        }
        Ok(out)
    }

    pub async fn create_customer(
        &self,
        tenant_id: &str,
        email: Option<&str>,
        name: Option<&str>,
        country: Option<&str>,
    ) -> DbResult<Customer> {
        let c = Customer {
            id: new_id(),
            tenant_id: tenant_id.into(),
            email: email.map(Into::into),
            name: name.map(Into::into),
            country: country.map(Into::into),
            created_at: now_ms(),
        };
        sqlx::query(&format!(
            "INSERT INTO customers ({CUSTOMER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.email)
        .bind(&c.name)
        .bind(&c.country)
        .bind(c.created_at)
        .execute(&self.pool)
        .await?;
        Ok(c)
    }

    /// The tenant's first customer with `email` (in any case), if any.
    pub async fn customer_by_email(
        &self,
        tenant_id: &str,
        email: &str,
    ) -> DbResult<Option<Customer>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE tenant_id = $1 \
             AND lower(email) = lower($2) ORDER BY created_at, id LIMIT 1"
        ))
        .bind(tenant_id)
        .bind(email)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn get_customer(&self, tenant_id: &str, id: &str) -> DbResult<Customer> {
        self.tenant_row("customers", CUSTOMER_COLUMNS, tenant_id, id, "customer")
            .await
    }

    pub async fn list_customers(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<Customer>> {
        self.tenant_page("customers", CUSTOMER_COLUMNS, tenant_id, None, after, limit)
            .await
    }

    pub async fn create_cart(
        &self,
        tenant_id: &str,
        currency: &str,
        customer_id: Option<&str>,
        country: Option<&str>,
        region: Option<&str>,
    ) -> DbResult<Cart> {
        let now = now_ms();
        let c = Cart {
            id: new_id(),
            tenant_id: tenant_id.into(),
            currency: currency.into(),
            customer_id: customer_id.map(Into::into),
            country: country.map(Into::into),
            region: region.map(Into::into),
            discount_code_id: None,
            status: "open".into(),
            created_at: now,
            updated_at: now,
        };
        sqlx::query(&format!(
            "INSERT INTO carts ({CART_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.currency)
        .bind(&c.customer_id)
        .bind(&c.country)
        .bind(&c.region)
        .bind(&c.discount_code_id)
        .bind(&c.status)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(c)
    }

    /// Sets an open cart's billing country and region (its tax place).
    pub async fn set_cart_place(
        &self,
        tenant_id: &str,
        id: &str,
        country: &str,
        region: Option<&str>,
    ) -> DbResult<()> {
        let done = sqlx::query(
            "UPDATE carts SET country = $1, region = $2, updated_at = $3 \
             WHERE id = $4 AND tenant_id = $5 AND status = 'open'",
        )
        .bind(country)
        .bind(region)
        .bind(now_ms())
        .bind(id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::Conflict(
                "no such open cart: it is checked out already, or not this tenant's".into(),
            ));
        }
        Ok(())
    }

    pub async fn get_cart(&self, tenant_id: &str, id: &str) -> DbResult<Cart> {
        self.tenant_row("carts", CART_COLUMNS, tenant_id, id, "cart")
            .await
    }

    /// A cart's prices with their product's name and quantity, in the order they were put
    /// in: one query for what pricing the cart needs.
    pub async fn cart_prices(&self, tenant_id: &str, cart_id: &str) -> DbResult<Vec<CartPrice>> {
        let columns = PRICE_COLUMNS
            .split(',')
            .map(|c| format!("p.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(sqlx::query_as(&format!(
            "SELECT {columns}, r.name AS product_name, i.quantity FROM cart_items i \
             JOIN prices p ON p.id = i.price_id AND p.tenant_id = $1 \
             JOIN products r ON r.id = p.product_id \
             WHERE i.cart_id = $2 ORDER BY i.added_at, i.price_id"
        ))
        .bind(tenant_id)
        .bind(cart_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Sets the quantity of `price_id` in an open cart (0 takes it out). A cart holds at most
    /// [`MAX_CART_ITEMS`] prices.
    pub async fn set_cart_item(
        &self,
        tenant_id: &str,
        cart_id: &str,
        price_id: &str,
        quantity: i64,
    ) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        let open = sqlx::query(
            "UPDATE carts SET updated_at = $1 WHERE id = $2 AND tenant_id = $3 AND status = 'open'",
        )
        .bind(now_ms())
        .bind(cart_id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        if open.rows_affected() == 0 {
            return Err(DbError::Conflict("the cart is checked out".into()));
        }
        if quantity == 0 {
            sqlx::query("DELETE FROM cart_items WHERE cart_id = $1 AND price_id = $2")
                .bind(cart_id)
                .bind(price_id)
                .execute(&mut *tx)
                .await?;
        } else {
            let changed = sqlx::query(
                "UPDATE cart_items SET quantity = $1 WHERE cart_id = $2 AND price_id = $3",
            )
            .bind(quantity)
            .bind(cart_id)
            .bind(price_id)
            .execute(&mut *tx)
            .await?;
            if changed.rows_affected() == 0 {
                let (n,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM cart_items WHERE cart_id = $1")
                        .bind(cart_id)
                        .fetch_one(&mut *tx)
                        .await?;
                if n >= MAX_CART_ITEMS {
                    return Err(DbError::Conflict(format!(
                        "a cart holds at most {MAX_CART_ITEMS} prices"
                    )));
                }
                sqlx::query(
                    "INSERT INTO cart_items (cart_id, price_id, quantity, added_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(cart_id)
                .bind(price_id)
                .bind(quantity)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Puts `code_id` on an open cart (none takes the code off).
    pub async fn set_cart_code(
        &self,
        tenant_id: &str,
        cart_id: &str,
        code_id: Option<&str>,
    ) -> DbResult<()> {
        let done = sqlx::query(
            "UPDATE carts SET discount_code_id = $1, updated_at = $2 \
             WHERE id = $3 AND tenant_id = $4 AND status = 'open'",
        )
        .bind(code_id)
        .bind(now_ms())
        .bind(cart_id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::Conflict("the cart is checked out".into()));
        }
        Ok(())
    }
}

/// A publishable key as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PublishableKey {
    pub id: String,
    pub tenant_id: String,
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl Db {
    pub async fn create_publishable_key(
        &self,
        tenant_id: &str,
        prefix: &str,
        secret_hash: &str,
    ) -> DbResult<PublishableKey> {
        let k = PublishableKey {
            id: new_id(),
            tenant_id: tenant_id.into(),
            prefix: prefix.into(),
            created_at: now_ms(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO publishable_keys (id, tenant_id, prefix, secret_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&k.id)
        .bind(&k.tenant_id)
        .bind(&k.prefix)
        .bind(secret_hash)
        .bind(k.created_at)
        .execute(&self.pool)
        .await?;
        Ok(k)
    }

    /// The tenant of an unrevoked publishable key, by its secret's hash.
    pub async fn publishable_key_tenant(&self, secret_hash: &str) -> DbResult<Option<String>> {
        Ok(sqlx::query_as::<_, (String,)>(
            "SELECT tenant_id FROM publishable_keys WHERE secret_hash = $1 AND revoked_at IS NULL",
        )
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await?
        .map(|(t,)| t))
    }

    pub async fn list_publishable_keys(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<PublishableKey>> {
        self.tenant_page(
            "publishable_keys",
            "id, tenant_id, prefix, created_at, revoked_at",
            tenant_id,
            None,
            after,
            limit,
        )
        .await
    }

    pub async fn revoke_publishable_key(&self, tenant_id: &str, id: &str) -> DbResult<()> {
        let done = sqlx::query(
            "UPDATE publishable_keys SET revoked_at = $1 \
             WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound("publishable key"));
        }
        Ok(())
    }
}
