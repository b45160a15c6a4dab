//! Invoices and credit notes for orders: drafted here from the order's frozen lines, issued
//! (numbered, stored) by the database. An invoice is the order as paid; a credit note
//! reverses part of it: the refunded amount is spread over the lines in proportion to their
//! totals by largest remainder, and each line's share of tax is its own stored tax in the same
//! proportion, rounded half-up. Nothing is priced again.

use super::money;
use crate::clock::now_ms;
use crate::db::{self, Db, DbError, DbResult, Invoice, InvoiceLine, Issued};

fn draft(order: &db::Order, customer: Option<&db::Customer>, kind: &str) -> Invoice {
    Invoice {
        id: String::new(),
        tenant_id: order.tenant_id.clone(),
        kind: kind.into(),
        number: String::new(),
        order_id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        customer_email: customer.and_then(|c| c.email.clone()),
        country: order.country.clone(),
        currency: order.currency.clone(),
        lines: String::new(),
        subtotal: 0,
        discount: 0,
        tax: 0,
        total: 0,
        covers: 0,
        issued_at: now_ms(),
    }
}

fn description(l: &db::OrderLine) -> String {
    match (l.r#type.as_str(), l.rental_hours, &l.billing_interval) {
        ("rental", Some(h), _) => format!("{} (rental, {h} h)", l.product_name),
        ("recurring", _, Some(i)) => format!("{} (every {i})", l.product_name),
        _ => l.product_name.clone(),
    }
}

/// The invoice of a paid order: its stored lines and totals. A subscription that starts
/// with a free trial was charged nothing yet: its invoice shows the price, all of it taken
/// off as the trial, and a total of zero (the periods after it are charged and invoiced by
/// the provider).
pub fn invoice(
    order: &db::Order,
    lines: &[db::OrderLine],
    customer: Option<&db::Customer>,
) -> Invoice {
    let trial = order.mode == "subscription" && lines.iter().any(|l| l.trial_days > Some(0));
    let items: Vec<InvoiceLine> = lines
        .iter()
        .map(|l| match l.trial_days.filter(|d| trial && *d > 0) {
            Some(days) => InvoiceLine {
                description: format!("{} (free trial, {days} days)", description(l)),
                quantity: l.quantity,
                unit_amount: l.unit_amount,
                discount: l.subtotal,
                tax: 0,
                tax_rate: l.tax_rate,
                total: 0,
            },
            None => InvoiceLine {
                description: description(l),
                quantity: l.quantity,
                unit_amount: l.unit_amount,
                discount: l.discount,
                tax: l.tax,
                tax_rate: l.tax_rate,
                total: l.total,
            },
        })
        .collect();
    let (discount, tax, total) = if trial {
        (order.subtotal, 0, 0)
    } else {
        (order.discount, order.tax, order.total)
    };
    Invoice {
        lines: serde_json::to_string(&items).expect("lines serialise"),
        subtotal: order.subtotal,
        discount,
        tax,
        total,
        ..draft(order, customer, "invoice")
    }
}

/// `amount` spread over lines in proportion to `totals` (largest remainder, ties by line),
/// also when it is more than their sum (a period charged more than the order).
fn spread(amount: i64, lines: &[db::OrderLine]) -> Vec<i64> {
    let totals: Vec<i64> = lines.iter().map(|l| l.total.max(0)).collect();
    let ids: Vec<String> = lines.iter().map(|l| format!("{:06}", l.line_no)).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let whole: i64 = totals.iter().sum();
    if whole <= 0 || amount <= 0 {
        // Nothing to weigh by: all of it on the first line.
        return (0..lines.len())
            .map(|i| if i == 0 { amount.max(0) } else { 0 })
            .collect();
    }
    let times = amount / whole;
    money::allocate(amount - times * whole, &totals, &ids)
        .into_iter()
        .zip(&totals)
        .map(|(s, t)| s + times * t)
        .collect()
}

/// The invoice of a subscription's renewal: `paid` (period 1, 2, …) charged for the order's
/// lines, spread over them as their totals are, each line's tax its own stored proportion.
/// `covers` holds the period, so each period is invoiced once.
pub fn renewal_invoice(
    order: &db::Order,
    lines: &[db::OrderLine],
    customer: Option<&db::Customer>,
    paid: &db::PeriodPaid,
) -> Invoice {
    let items: Vec<InvoiceLine> = lines
        .iter()
        .zip(spread(paid.amount, lines))
        .map(|(l, s)| InvoiceLine {
            description: format!("{} (period {})", description(l), paid.period + 1),
            quantity: l.quantity,
            unit_amount: l.unit_amount,
            discount: money::share(s, l.discount, l.total),
            tax: money::share(s, l.tax, l.total),
            tax_rate: l.tax_rate,
            total: s,
        })
        .collect();
    let discount = items.iter().map(|i| i.discount).sum();
    Invoice {
        lines: serde_json::to_string(&items).expect("lines serialise"),
        subtotal: money::share(paid.amount, order.subtotal, order.total),
        discount,
        tax: items.iter().map(|i| i.tax).sum(),
        total: paid.amount,
        covers: paid.period,
        ..draft(order, customer, "invoice")
    }
}

/// A credit note for `amount` more refunded of `order`, bringing its credits to `covers`.
pub fn credit_note(
    order: &db::Order,
    lines: &[db::OrderLine],
    customer: Option<&db::Customer>,
    amount: i64,
    covers: i64,
) -> Invoice {
    let shares = spread(amount, lines);
    let items: Vec<InvoiceLine> = lines
        .iter()
        .zip(&shares)
        .filter(|(_, s)| **s > 0)
        .map(|(l, s)| InvoiceLine {
            description: format!("Refund: {}", description(l)),
            quantity: l.quantity,
            unit_amount: l.unit_amount,
            discount: 0,
            tax: money::share(*s, l.tax, l.total),
            tax_rate: l.tax_rate,
            total: *s,
        })
        .collect();
    let tax = items.iter().map(|i| i.tax).sum();
    Invoice {
        lines: serde_json::to_string(&items).expect("lines serialise"),
        subtotal: amount,
        discount: 0,
        tax,
        total: amount,
        covers,
        ..draft(order, customer, "credit_note")
    }
}

/// Issues what an order's state calls for and is not issued yet: its invoice once paid, and
/// a credit note for what was refunded since the last one. Safe to call again at any time,
/// and at the same time: a credit note drafted against credits that changed meanwhile is
/// drafted again from the order as it is then.
pub async fn settle(db: &Db, tenant_id: &str, order_id: &str) -> DbResult<Vec<Invoice>> {
    let mut issued = Vec::new();
    for _ in 0..5 {
        let order = db.get_order(tenant_id, order_id).await?;
        if order.paid_at.is_none() || order.status == "pending" {
            return Ok(issued);
        }
        let existing = db.order_invoices(&order.id).await?;
        let lines = db.order_lines(&order.id).await?;
        let customer = db.get_customer(tenant_id, &order.customer_id).await.ok();
        // Paid, even if refunded since (or before its paid event came): the money moved, so
        // an invoice and a credit note say so.
        if !existing.iter().any(|i| i.kind == "invoice")
            && let Issued::New(i) = db
                .issue_invoice(invoice(&order, &lines, customer.as_ref()), 0)
                .await?
        {
            issued.push(i);
        }
        // Each renewal paid, invoiced once (period 0 is the order's own invoice).
        if order.mode == "subscription" {
            for paid in db.period_payments(&order.id).await? {
                if paid.period > 0
                    && !existing
                        .iter()
                        .any(|i| i.kind == "invoice" && i.covers == paid.period)
                    && let Issued::New(i) = db
                        .issue_invoice(renewal_invoice(&order, &lines, customer.as_ref(), &paid), 0)
                        .await?
                {
                    issued.push(i);
                }
            }
        }
        let credited = existing
            .iter()
            .filter(|i| i.kind == "credit_note")
            .map(|i| i.covers)
            .max()
            .unwrap_or(0);
        if order.refunded <= credited {
            return Ok(issued);
        }
        let note = credit_note(
            &order,
            &lines,
            customer.as_ref(),
            order.refunded - credited,
            order.refunded,
        );
        match db.issue_invoice(note, credited).await? {
            Issued::New(i) => {
                issued.push(i);
                return Ok(issued);
            }
            Issued::Existing(_) => return Ok(issued),
            Issued::Stale => continue,
        }
    }
    Err(DbError::Conflict(
        "the order's credit notes kept changing; try again".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(mode: &str) -> db::Order {
        db::Order {
            id: "ord".into(),
            tenant_id: "t".into(),
            cart_id: "c".into(),
            customer_id: "cus".into(),
            currency: "EUR".into(),
            country: Some("DE".into()),
            region: None,
            discount_code_id: None,
            subtotal: 999,
            discount: 0,
            tax: 190,
            total: 1189,
            mode: mode.into(),
            provider: "stripe".into(),
            provider_session: None,
            payment_ref: None,
            status: "paid".into(),
            refunded: 0,
            disputed: 0,
            created_at: 0,
            paid_at: Some(0),
            updated_at: 0,
        }
    }

    fn line(r#type: &str, trial_days: Option<i64>) -> db::OrderLine {
        db::OrderLine {
            order_id: "ord".into(),
            line_no: 0,
            price_id: "p".into(),
            product_id: "prod".into(),
            product_name: "Monthly".into(),
            r#type: r#type.into(),
            quantity: 1,
            unit_amount: 999,
            subtotal: 999,
            discount: 0,
            tax: 190,
            total: 1189,
            tax_rate: 190_000,
            tax_behavior: "exclusive".into(),
            rental_hours: None,
            rental_starts: None,
            billing_interval: (r#type == "recurring").then(|| "month".into()),
            trial_days,
            tier: String::new(),
        }
    }

    #[test]
    fn a_free_trial_is_invoiced_at_nothing_and_a_paid_order_as_frozen() {
        let trial = invoice(&order("subscription"), &[line("recurring", Some(7))], None);
        assert_eq!(
            (trial.subtotal, trial.discount, trial.tax, trial.total),
            (999, 999, 0, 0)
        );
        assert!(
            trial.lines.contains("free trial, 7 days"),
            "{}",
            trial.lines
        );
        let paid = invoice(&order("subscription"), &[line("recurring", None)], None);
        assert_eq!((paid.tax, paid.total), (190, 1189));
        let once = invoice(&order("payment"), &[line("one_time", Some(7))], None);
        assert_eq!(once.total, 1189);
    }
}
