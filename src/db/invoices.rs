//! Invoices and credit notes, as `commerce::invoicing` drafts them: numbered per tenant and
//! per kind in one sequence with no gaps (`INV-000001`, `CN-000001`: the number is taken and
//! the document stored in one transaction, or neither), and never changed once issued. One
//! invoice per order and per renewal of its subscription, and one credit note per refunded
//! total of an order, so issuing again (a retried event) finds the document already there.

use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::{Db, DbError, DbResult, is_unique_violation, new_id};

/// One line of an invoice or credit note, as issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub description: String,
    pub quantity: i64,
    pub unit_amount: i64,
    pub discount: i64,
    pub tax: i64,
    /// Tax rate in ten-thousandths of a percent.
    pub tax_rate: i64,
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Invoice {
    pub id: String,
    pub tenant_id: String,
    /// `invoice` or `credit_note`.
    pub kind: String,
    pub number: String,
    pub order_id: String,
    pub customer_id: String,
    pub customer_email: Option<String>,
    pub country: Option<String>,
    pub currency: String,
    /// JSON array of [`InvoiceLine`].
    pub lines: String,
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
    /// Credit notes: the order's refunded total this note brings the credits to. Invoices:
    /// the subscription period invoiced (0 for the order's own invoice, n for its nth
    /// renewal).
    pub covers: i64,
    pub issued_at: i64,
}

/// What [`Db::issue_invoice`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    New(Invoice),
    /// The same document was issued before.
    Existing(Invoice),
    /// Credits changed since the draft: draft again.
    Stale,
}

const INVOICE_COLUMNS: &str = "id, tenant_id, kind, number, order_id, customer_id, \
     customer_email, country, currency, lines, subtotal, discount, tax, total, covers, issued_at";

impl Db {
    /// Issues `draft` with the tenant's next number of its kind; if the order already has
    /// this document (same kind and `covers`), returns that one instead.
    /// A credit note is drafted against `credited`, the order's credits when it was drafted:
    /// if another was issued meanwhile, nothing is issued and `Stale` says to draft again.
    pub async fn issue_invoice(&self, draft: Invoice, credited: i64) -> DbResult<Issued> {
        let mut tx = self.write_tx().await?;
        let (next,): (i64,) = sqlx::query_as(
            "INSERT INTO invoice_counters (tenant_id, kind, last) VALUES ($1, $2, 1) \
             ON CONFLICT (tenant_id, kind) DO UPDATE SET last = invoice_counters.last + 1 \
             RETURNING last",
        )
        .bind(&draft.tenant_id)
        .bind(&draft.kind)
        .fetch_one(&mut *tx)
        .await?;
        if draft.kind == "credit_note" {
            // The counter row above is now locked for this tenant's credit notes.
            let (now_credited,): (i64,) = sqlx::query_as(
                "SELECT COALESCE(MAX(covers), 0) FROM invoices \
                 WHERE order_id = $1 AND kind = 'credit_note'",
            )
            .bind(&draft.order_id)
            .fetch_one(&mut *tx)
            .await?;
            if now_credited != credited {
                return Ok(Issued::Stale);
            }
        }
        let prefix = if draft.kind == "credit_note" {
            "CN"
        } else {
            "INV"
        };
        let invoice = Invoice {
            id: new_id(),
            number: format!("{prefix}-{next:06}"),
            ..draft
        };
        let stored = sqlx::query(&format!(
            "INSERT INTO invoices ({INVOICE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(&invoice.id)
        .bind(&invoice.tenant_id)
        .bind(&invoice.kind)
        .bind(&invoice.number)
        .bind(&invoice.order_id)
        .bind(&invoice.customer_id)
        .bind(&invoice.customer_email)
        .bind(&invoice.country)
        .bind(&invoice.currency)
        .bind(&invoice.lines)
        .bind(invoice.subtotal)
        .bind(invoice.discount)
        .bind(invoice.tax)
        .bind(invoice.total)
        .bind(invoice.covers)
        .bind(invoice.issued_at)
        .execute(&mut *tx)
        .await;
        match stored {
            Ok(_) => {
                tx.commit().await?;
                Ok(Issued::New(invoice))
            }
            Err(e) if is_unique_violation(&e) => {
                // Issued already: the number taken above goes back with the rollback.
                drop(tx);
                self.find_invoice(&invoice.order_id, &invoice.kind, invoice.covers)
                    .await?
                    .map(Issued::Existing)
                    .ok_or(DbError::NotFound("invoice"))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn find_invoice(
        &self,
        order_id: &str,
        kind: &str,
        covers: i64,
    ) -> DbResult<Option<Invoice>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {INVOICE_COLUMNS} FROM invoices WHERE order_id = $1 AND kind = $2 AND covers = $3"
        ))
        .bind(order_id)
        .bind(kind)
        .bind(covers)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// An order's documents, oldest first.
    pub async fn order_invoices(&self, order_id: &str) -> DbResult<Vec<Invoice>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {INVOICE_COLUMNS} FROM invoices WHERE order_id = $1 ORDER BY issued_at, number"
        ))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_invoice(&self, tenant_id: &str, id: &str) -> DbResult<Invoice> {
        self.tenant_row("invoices", INVOICE_COLUMNS, tenant_id, id, "invoice")
            .await
    }

    pub async fn list_invoices(
        &self,
        tenant_id: &str,
        order_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<Invoice>> {
        let filter = order_id.map(|o| ("order_id", o));
        self.tenant_page("invoices", INVOICE_COLUMNS, tenant_id, filter, after, limit)
            .await
    }
}
