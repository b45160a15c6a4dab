//! A cart priced: its items' prices, the buyer's tax rate and its discount code turned into
//! [`money::LineInput`]s and priced. The code's rules are checked here, in one pure function,
//! each time the cart is read: a code that lapsed since it was applied stops counting and the
//! cart says why.

use super::money::{self, Currency, LineInput, OrderDiscount, Rate, TaxBehavior, Totals};
use crate::db::{self, Db, DbResult};

/// Why a discount code does not apply to a cart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeRefusal {
    #[error("the code is not valid yet")]
    NotYet,
    #[error("the code has expired")]
    Expired,
    #[error("the code has been used as often as it may be")]
    UsedUp,
    #[error("this customer has used the code as often as they may")]
    UsedUpByCustomer,
    #[error("the code is in {0}, the cart in another currency")]
    Currency(String),
    #[error("the code needs a subtotal of at least {0}")]
    MinSubtotal(String),
    #[error("the code applies to none of the cart's products")]
    NoProduct,
}

/// What a code's rules are checked against.
#[derive(Debug, Clone)]
pub struct CodeFacts<'a> {
    pub now_ms: i64,
    pub currency: Currency,
    /// The cart's subtotal before any discount.
    pub subtotal: i64,
    /// Paid orders of the cart's customer that used the code.
    pub customer_redemptions: i64,
    /// The products of the cart's lines.
    pub products: &'a [&'a str],
}

/// The discount `code` gives a cart with `facts`, or why it gives none.
pub fn check_code(
    code: &db::DiscountCode,
    facts: &CodeFacts<'_>,
) -> Result<OrderDiscount, CodeRefusal> {
    if code.starts_at.is_some_and(|t| facts.now_ms < t) {
        return Err(CodeRefusal::NotYet);
    }
    if code.ends_at.is_some_and(|t| facts.now_ms >= t) {
        return Err(CodeRefusal::Expired);
    }
    if code.max_redemptions.is_some_and(|m| code.redemptions >= m) {
        return Err(CodeRefusal::UsedUp);
    }
    if code
        .max_per_customer
        .is_some_and(|m| facts.customer_redemptions >= m)
    {
        return Err(CodeRefusal::UsedUpByCustomer);
    }
    if let Some(c) = &code.currency
        && c != facts.currency.code()
    {
        return Err(CodeRefusal::Currency(c.clone()));
    }
    if let Some(min) = code.min_subtotal
        && facts.subtotal < min
    {
        return Err(CodeRefusal::MinSubtotal(format!(
            "{} {}",
            facts.currency.format(min),
            facts.currency
        )));
    }
    if !code.product_ids.is_empty()
        && !facts
            .products
            .iter()
            .any(|p| code.product_ids.iter().any(|c| c == p))
    {
        return Err(CodeRefusal::NoProduct);
    }
    Ok(match (code.percent_off, code.amount_off) {
        (Some(p), _) => OrderDiscount::Percent(Rate::from_ten_thousandths(p).unwrap_or_default()),
        (None, Some(a)) => OrderDiscount::Amount(a),
        (None, None) => OrderDiscount::None,
    })
}

/// One line of a cart: a price and how many.
#[derive(Debug, Clone)]
pub struct CartLine {
    pub price: db::Price,
    pub product_name: String,
    pub quantity: i64,
}

/// A cart with everything needed to show and check it out.
#[derive(Debug, Clone)]
pub struct PricedCart {
    pub cart: db::Cart,
    pub currency: Currency,
    pub lines: Vec<CartLine>,
    pub totals: Totals,
    pub code: Option<db::DiscountCode>,
    /// Why the cart's code gives no discount now.
    pub code_refusal: Option<CodeRefusal>,
    /// The tax rate applied, if the buyer's country has one.
    pub tax_rate: Option<db::TaxRate>,
}

/// Reads and prices cart `id` of `tenant_id` at `now_ms`.
pub async fn load(db: &Db, tenant_id: &str, id: &str, now_ms: i64) -> DbResult<PricedCart> {
    let cart = db.get_cart(tenant_id, id).await?;
    // Stored carts hold only currencies checked when the cart was made.
    let currency = Currency::parse(&cart.currency)
        .ok_or_else(|| db::DbError::Conflict(format!("cart {id} has an unknown currency")))?;
    let lines = db
        .cart_prices(tenant_id, &cart.id)
        .await?
        .into_iter()
        .map(|p| CartLine {
            price: p.price,
            product_name: p.product_name,
            quantity: p.quantity,
        })
        .collect();
    let tax_rate = match &cart.country {
        Some(country) => {
            db.tax_rate_for(tenant_id, country, cart.region.as_deref().unwrap_or(""))
                .await?
        }
        None => None,
    };
    let code = match &cart.discount_code_id {
        Some(code_id) => Some(db.get_discount_code(tenant_id, code_id).await?),
        None => None,
    };
    Ok(price_cart(cart, currency, lines, code, tax_rate, now_ms))
}

/// Prices a cart's lines (pure: everything comes in).
pub fn price_cart(
    cart: db::Cart,
    currency: Currency,
    lines: Vec<CartLine>,
    code: Option<db::DiscountCode>,
    tax_rate: Option<db::TaxRate>,
    now_ms: i64,
) -> PricedCart {
    let rate = tax_rate
        .as_ref()
        .and_then(|t| Rate::from_ten_thousandths(t.rate))
        .unwrap_or(Rate::ZERO);
    let inputs = |restricted: Option<&[String]>| -> Vec<LineInput> {
        lines
            .iter()
            .map(|l| LineInput {
                id: l.price.id.clone(),
                unit_amount: l.price.unit_amount,
                quantity: l.quantity,
                line_discount: 0,
                discountable: restricted
                    .is_none_or(|ids| ids.is_empty() || ids.contains(&l.price.product_id)),
                tax_rate: rate,
                tax_behavior: TaxBehavior::parse(&l.price.tax_behavior)
                    .unwrap_or(TaxBehavior::Exclusive),
            })
            .collect()
    };
    let undiscounted =
        money::price(&inputs(None), OrderDiscount::None).unwrap_or_else(|_| empty_totals());
    let products: Vec<&str> = lines.iter().map(|l| l.price.product_id.as_str()).collect();
    let (discount, code_refusal) = match &code {
        Some(c) => match check_code(
            c,
            &CodeFacts {
                now_ms,
                currency,
                subtotal: undiscounted.subtotal,
                // Checked again at checkout, where the buyer is known (api/orders.rs).
                customer_redemptions: 0,
                products: &products,
            },
        ) {
            Ok(d) => (d, None),
            Err(r) => (OrderDiscount::None, Some(r)),
        },
        None => (OrderDiscount::None, None),
    };
    let totals = match discount {
        OrderDiscount::None => undiscounted,
        d => money::price(&inputs(code.as_ref().map(|c| c.product_ids.as_slice())), d)
            .unwrap_or_else(|_| empty_totals()),
    };
    PricedCart {
        cart,
        currency,
        lines,
        totals,
        code,
        code_refusal,
        tax_rate,
    }
}

fn empty_totals() -> Totals {
    Totals {
        lines: Vec::new(),
        subtotal: 0,
        discount: 0,
        tax: 0,
        total: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> db::DiscountCode {
        db::DiscountCode {
            id: "c".into(),
            tenant_id: "t".into(),
            code: "SAVE20".into(),
            percent_off: Some(200_000),
            amount_off: None,
            currency: None,
            starts_at: Some(1000),
            ends_at: Some(2000),
            max_redemptions: Some(5),
            max_per_customer: Some(1),
            min_subtotal: None,
            redemptions: 0,
            product_ids: vec!["p1".into()],
            created_at: 0,
        }
    }

    fn facts<'a>(products: &'a [&'a str]) -> CodeFacts<'a> {
        CodeFacts {
            now_ms: 1500,
            currency: Currency::parse("EUR").unwrap(),
            subtotal: 1000,
            customer_redemptions: 0,
            products,
        }
    }

    #[test]
    fn a_code_applies_inside_its_window_limits_and_products() {
        let c = code();
        assert_eq!(
            check_code(&c, &facts(&["p1"])),
            Ok(OrderDiscount::Percent(Rate::parse("20").unwrap()))
        );
        let f = |mutate: &dyn Fn(&mut CodeFacts<'_>)| {
            let products = ["p1"];
            let mut f = facts(&products);
            mutate(&mut f);
            check_code(&c, &f)
        };
        assert_eq!(f(&|f| f.now_ms = 999), Err(CodeRefusal::NotYet));
        assert_eq!(f(&|f| f.now_ms = 2000), Err(CodeRefusal::Expired));
        assert_eq!(
            f(&|f| f.customer_redemptions = 1),
            Err(CodeRefusal::UsedUpByCustomer)
        );
        assert_eq!(check_code(&c, &facts(&["p2"])), Err(CodeRefusal::NoProduct));
        let used = db::DiscountCode {
            redemptions: 5,
            ..code()
        };
        assert_eq!(check_code(&used, &facts(&["p1"])), Err(CodeRefusal::UsedUp));
        let fixed = db::DiscountCode {
            percent_off: None,
            amount_off: Some(500),
            currency: Some("USD".into()),
            min_subtotal: Some(2000),
            ..code()
        };
        assert_eq!(
            check_code(&fixed, &facts(&["p1"])),
            Err(CodeRefusal::Currency("USD".into()))
        );
        let fixed = db::DiscountCode {
            currency: Some("EUR".into()),
            ..fixed
        };
        assert_eq!(
            check_code(&fixed, &facts(&["p1"])),
            Err(CodeRefusal::MinSubtotal("20.00 EUR".into()))
        );
    }
}
