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

/// The invoice of a paid order: its stored lines and totals.
pub fn invoice(
    order: &db::Order,
    lines: &[db::OrderLine],
    customer: Option<&db::Customer>,
) -> Invoice {
    let items: Vec<InvoiceLine> = lines
        .iter()
        .map(|l| InvoiceLine {
            description: description(l),
            quantity: l.quantity,
            unit_amount: l.unit_amount,
            discount: l.discount,
            tax: l.tax,
            tax_rate: l.tax_rate,
            total: l.total,
        })
        .collect();
    Invoice {
        lines: serde_json::to_string(&items).expect("lines serialise"),
        subtotal: order.subtotal,
        discount: order.discount,
        tax: order.tax,
        total: order.total,
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
    let totals: Vec<i64> = lines.iter().map(|l| l.total).collect();
    let ids: Vec<String> = lines.iter().map(|l| format!("{:06}", l.line_no)).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let shares = money::allocate(amount, &totals, &ids);
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
