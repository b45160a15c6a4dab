//! Invoices and credit notes: JSON, and a printable HTML page (`/v1/invoices/{id}.html`)
//! in which every text is escaped.

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Tenant;
use super::{AppState, Json, List, Page, Path, Query, escape_html, rfc3339};
use crate::commerce::money::{Currency, Rate};
use crate::db::{self, InvoiceLine};
use crate::error::{ApiResult, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceLineView {
    pub description: String,
    pub quantity: i64,
    pub unit_amount: i64,
    pub discount: i64,
    pub tax: i64,
    /// Percentage, as a decimal string.
    pub tax_rate: String,
    pub total: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    pub id: String,
    /// `invoice` or `credit_note`.
    pub kind: String,
    /// `INV-000001`, `CN-000001`: per tenant and kind, in sequence, without gaps.
    pub number: String,
    pub order_id: String,
    pub customer_id: String,
    pub customer_email: Option<String>,
    pub country: Option<String>,
    pub currency: String,
    pub lines: Vec<InvoiceLineView>,
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
    pub issued_at: String,
}

impl From<db::Invoice> for InvoiceView {
    fn from(i: db::Invoice) -> Self {
        let lines: Vec<InvoiceLine> = serde_json::from_str(&i.lines).unwrap_or_default();
        Self {
            id: i.id,
            kind: i.kind,
            number: i.number,
            order_id: i.order_id,
            customer_id: i.customer_id,
            customer_email: i.customer_email,
            country: i.country,
            currency: i.currency.to_ascii_lowercase(),
            lines: lines
                .into_iter()
                .map(|l| InvoiceLineView {
                    description: l.description,
                    quantity: l.quantity,
                    unit_amount: l.unit_amount,
                    discount: l.discount,
                    tax: l.tax,
                    tax_rate: Rate::from_ten_thousandths(l.tax_rate)
                        .unwrap_or_default()
                        .to_string(),
                    total: l.total,
                })
                .collect(),
            subtotal: i.subtotal,
            discount: i.discount,
            tax: i.tax,
            total: i.total,
            issued_at: rfc3339(i.issued_at),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceFilter {
    pub order_id: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/invoices", tag = "commerce", params(InvoiceFilter),
    security(("api_key" = [])), responses((status = 200, body = List<InvoiceView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Tenant,
    Query(f): Query<InvoiceFilter>,
) -> ApiResult<Json<List<InvoiceView>>> {
    let limit = Page {
        limit: f.limit,
        cursor: None,
    }
    .limit()?;
    let items = state
        .jobs
        .db
        .list_invoices(
            &caller.tenant_id,
            f.order_id.as_deref(),
            f.cursor.as_deref(),
            limit,
        )
        .await?;
    let views: Vec<InvoiceView> = items.into_iter().map(Into::into).collect();
    Ok(Json(List::new(views, limit, |i| &i.id)))
}

/// An invoice or credit note: `/v1/invoices/{id}` as JSON, `/v1/invoices/{id}.html` as a
/// printable page.
#[utoipa::path(get, path = "/v1/invoices/{id}", tag = "commerce", security(("api_key" = [])),
    responses((status = 200, body = InvoiceView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, html) = match id.strip_suffix(".html") {
        Some(bare) => (bare.to_string(), true),
        None => (id, false),
    };
    let invoice: InvoiceView = state
        .jobs
        .db
        .get_invoice(&caller.tenant_id, &id)
        .await?
        .into();
    if !html {
        return Ok(Json(invoice).into_response());
    }
    let tenant = state.jobs.db.get_tenant(&caller.tenant_id).await?;
    Ok(Html(page(&invoice, &tenant.name)).into_response())
}

/// The printable page; every value from outside goes through [`escape_html`].
fn page(i: &InvoiceView, seller: &str) -> String {
    let currency = Currency::parse(&i.currency);
    let money = |v: i64| match currency {
        Some(c) => format!("{} {}", c.format(v), c.code()),
        None => v.to_string(),
    };
    let title = if i.kind == "credit_note" {
        "Credit note"
    } else {
        "Invoice"
    };
    let mut rows = String::new();
    for l in &i.lines {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} %</td><td>{}</td><td>{}</td></tr>\n",
            escape_html(&l.description),
            l.quantity,
            money(l.unit_amount),
            money(l.discount),
            escape_html(&l.tax_rate),
            money(l.tax),
            money(l.total)
        ));
    }
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{title} {number}</title>
<style>body{{font:14px sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ccc;padding:4px;text-align:left}}@media print{{body{{margin:0}}}}</style>
</head><body>
<h1>{title} {number}</h1>
<p>{seller}<br>Issued {issued}<br>Order {order}</p>
<p>Billed to: {customer}{country}</p>
<table><tr><th>Item</th><th>Qty</th><th>Unit</th><th>Discount</th><th>Tax rate</th><th>Tax</th><th>Total</th></tr>
{rows}</table>
<p>Subtotal {subtotal}<br>Discount {discount}<br>Tax {tax}<br><strong>Total {total}</strong></p>
</body></html>"#,
        number = escape_html(&i.number),
        seller = escape_html(seller),
        issued = escape_html(&i.issued_at),
        order = escape_html(&i.order_id),
        customer = escape_html(i.customer_email.as_deref().unwrap_or(&i.customer_id)),
        country = i
            .country
            .as_deref()
            .map(|c| format!(", {}", escape_html(c)))
            .unwrap_or_default(),
        subtotal = money(i.subtotal),
        discount = money(i.discount),
        tax = money(i.tax),
        total = money(i.total),
    )
}
