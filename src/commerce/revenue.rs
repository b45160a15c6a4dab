//! Revenue figures from paid orders' frozen lines: gross (what was paid), refunded and net,
//! per product, per day, or per playback id, in each currency apart (amounts in different
//! currencies are never added). An order's refunds are spread over its lines by largest
//! remainder; a line of a product granting several playback ids is split among them the same
//! way. Conversion: purchases (distinct buyers) per view of the playback id.

use std::collections::{BTreeMap, BTreeSet};

use super::money::allocate;
use crate::db::RevenueLine;

/// What revenue is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Product,
    Day,
    PlaybackId,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "product" => Some(Self::Product),
            "day" => Some(Self::Day),
            "playback_id" => Some(Self::PlaybackId),
            _ => None,
        }
    }
}

/// One group's figures in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revenue {
    pub key: String,
    /// The product's name, when grouped by product.
    pub name: Option<String>,
    pub currency: String,
    pub orders: i64,
    /// Distinct buyers.
    pub purchases: i64,
    pub gross: i64,
    pub refunded: i64,
    pub net: i64,
}

/// A group's figures, with the orders and buyers seen (counted at the end).
type Tally = (Revenue, BTreeSet<String>, BTreeSet<String>);

/// Groups `lines` by `by`; `grants` maps a product to its playback ids (none: all content,
/// grouped as `*`).
pub fn group(lines: &[RevenueLine], by: GroupBy, grants: &[(String, String)]) -> Vec<Revenue> {
    // Each line's share of its order's refunds.
    let mut refunds: BTreeMap<(&str, i64), i64> = BTreeMap::new();
    let mut by_order: BTreeMap<&str, Vec<&RevenueLine>> = BTreeMap::new();
    for l in lines {
        by_order.entry(&l.order_id).or_default().push(l);
    }
    for (order, ls) in &by_order {
        let weights: Vec<i64> = ls.iter().map(|l| l.total).collect();
        let ids: Vec<String> = ls.iter().map(|l| format!("{:06}", l.line_no)).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let shares = allocate(ls[0].order_refunded, &weights, &ids);
        for (l, s) in ls.iter().zip(shares) {
            refunds.insert((order, l.line_no), s);
        }
    }
    let mut out: BTreeMap<(String, String), Tally> = BTreeMap::new();
    for l in lines {
        let refunded = refunds
            .get(&(l.order_id.as_str(), l.line_no))
            .copied()
            .unwrap_or(0);
        let keys: Vec<(String, i64, i64)> = match by {
            GroupBy::Product => vec![(l.product_id.clone(), l.total, refunded)],
            GroupBy::Day => vec![(day(l.paid_at), l.total, refunded)],
            GroupBy::PlaybackId => {
                let ids: Vec<&str> = grants
                    .iter()
                    .filter(|(p, _)| *p == l.product_id)
                    .map(|(_, id)| id.as_str())
                    .collect();
                if ids.is_empty() {
                    vec![("*".into(), l.total, refunded)]
                } else {
                    // Equal weights, each at least the amount: an even split.
                    let even = vec![l.total.max(refunded).max(1); ids.len()];
                    let gross = allocate(l.total, &even, &ids);
                    let back = allocate(refunded, &even, &ids);
                    ids.iter()
                        .zip(gross.into_iter().zip(back))
                        .map(|(id, (g, r))| (id.to_string(), g, r))
                        .collect()
                }
            }
        };
        for (key, gross, refunded) in keys {
            let entry = out
                .entry((key.clone(), l.currency.clone()))
                .or_insert_with(|| {
                    (
                        Revenue {
                            key,
                            name: (by == GroupBy::Product).then(|| l.product_name.clone()),
                            currency: l.currency.clone(),
                            ..Revenue::default()
                        },
                        Default::default(),
                        Default::default(),
                    )
                });
            entry.0.gross += gross;
            entry.0.refunded += refunded;
            entry.0.net += gross - refunded;
            entry.1.insert(l.order_id.clone());
            entry.2.insert(l.customer_id.clone());
        }
    }
    out.into_values()
        .map(|(mut r, orders, buyers)| {
            r.orders = orders.len() as i64;
            r.purchases = buyers.len() as i64;
            r
        })
        .collect()
}

/// `YYYY-MM-DD` (UTC) of a time in milliseconds.
fn day(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(
        order: &str,
        no: i64,
        product: &str,
        total: i64,
        order_total: i64,
        refunded: i64,
    ) -> RevenueLine {
        RevenueLine {
            order_id: order.into(),
            customer_id: format!("c-{order}"),
            line_no: no,
            product_id: product.into(),
            product_name: format!("name {product}"),
            currency: "EUR".into(),
            total,
            order_total,
            order_refunded: refunded,
            paid_at: 1_765_000_000_000,
        }
    }

    #[test]
    fn refunds_spread_over_lines_and_playback_ids_split_evenly() {
        let lines = vec![
            line("o1", 0, "p1", 600, 1000, 500),
            line("o1", 1, "p2", 400, 1000, 500),
            line("o2", 0, "p1", 999, 999, 0),
        ];
        let by_product = group(&lines, GroupBy::Product, &[]);
        assert_eq!(
            by_product
                .iter()
                .map(|r| (r.key.as_str(), r.gross, r.refunded, r.net, r.orders))
                .collect::<Vec<_>>(),
            vec![("p1", 1599, 300, 1299, 2), ("p2", 400, 200, 200, 1)]
        );
        let grants = vec![
            ("p1".to_string(), "a".to_string()),
            ("p1".to_string(), "b".to_string()),
        ];
        let by_id = group(&lines, GroupBy::PlaybackId, &grants);
        let total: i64 = by_id.iter().map(|r| r.gross).sum();
        assert_eq!(total, 1999, "nothing counted twice: {by_id:?}");
        assert_eq!(by_id.iter().find(|r| r.key == "*").unwrap().gross, 400);
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(1_765_000_000_000), "2025-12-06");
        assert_eq!(group(&lines, GroupBy::Day, &[])[0].key, "2025-12-06");
    }
}
