//! Money and the one pricing function: amounts are `i64` minor units of an ISO 4217
//! currency, rates are decimal strings, and [`price`] turns lines and an order discount
//! into frozen totals. No floating point anywhere (the module denies float arithmetic).
//!
//! The rules, in order:
//! 1. a line's subtotal is unit amount × quantity;
//! 2. its own discount comes off (capped at the subtotal);
//! 3. the order discount (a percentage of, or a fixed amount capped at, the discountable
//!    lines' amount) is allocated across the discountable lines in proportion to their
//!    amounts by largest remainder: each line gets the floor of its exact share, and the
//!    cents left over go one each to the lines with the largest remainders, ties to the
//!    smaller line id;
//! 4. tax per line on what is left, rounded half-up: exclusive prices add
//!    `round(amount × rate)`; inclusive prices hold `amount − round(amount ÷ (1 + rate))`;
//! 5. the order's tax is the sum of the lines' taxes.
//!
//! Why one file (about 800 lines, 350 of them tests): currencies, rates and the pricing
//! function are one set of rules about minor units, and their property tests exercise
//! them together (a formatted amount reads back, allocations add up under every rate).

use std::fmt;

/// An ISO 4217 currency and its exponent (minor units per major unit = 10^exponent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// Currencies with no minor unit (ISO 4217 exponent 0).
const EXPONENT_0: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];
/// Currencies with three decimals.
const EXPONENT_3: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
/// The other active ISO 4217 currencies (two decimals).
const EXPONENT_2: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF",
    "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR",
    "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF",
    "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR", "KPW", "KYD", "KZT", "LAK", "LBP",
    "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
    "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SYP", "SZL", "THB", "TJS", "TMT", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "USD", "UYU", "UZS", "VES", "WST", "XCD", "YER", "ZAR", "ZMW",
    "ZWL",
];

impl Currency {
    /// The currency of an ISO 4217 code, upper or lower case (`"eur"`, as Stripe writes it).
    pub fn parse(code: &str) -> Option<Self> {
        let upper = code.to_ascii_uppercase();
        let exponent = if EXPONENT_2.contains(&upper.as_str()) {
            2
        } else if EXPONENT_0.contains(&upper.as_str()) {
            0
        } else if EXPONENT_3.contains(&upper.as_str()) {
            3
        } else {
            return None;
        };
        let b = upper.as_bytes();
        Some(Self {
            code: [b[0], b[1], b[2]],
            exponent,
        })
    }

    /// Upper case, as ISO writes it.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).expect("ASCII letters")
    }

    /// Lower case, as Stripe's API writes it.
    pub fn stripe_code(&self) -> String {
        self.code().to_ascii_lowercase()
    }

    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    /// `amount` minor units as a decimal string in major units: `1999` EUR → `"19.99"`,
    /// `500` JPY → `"500"`, `1005` KWD → `"1.005"`.
    pub fn format(&self, amount: i64) -> String {
        let sign = if amount < 0 { "-" } else { "" };
        let abs = amount.unsigned_abs();
        if self.exponent == 0 {
            return format!("{sign}{abs}");
        }
        let unit = 10u64.pow(self.exponent.into());
        format!(
            "{sign}{}.{:0width$}",
            abs / unit,
            abs % unit,
            width = usize::from(self.exponent)
        )
    }
}

impl Currency {
    /// A decimal string in major units as minor units, the inverse of [`Currency::format`]:
    /// `"19.99"` EUR → `1999`, `"500"` JPY → `500`. No sign, at most the currency's
    /// decimals, at most [`MAX_AMOUNT`] × 10; anything else is none.
    pub fn parse_amount(&self, s: &str) -> Option<i64> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || whole.len() > 13
            || !digits(whole)
            || !digits(frac)
            || frac.len() > usize::from(self.exponent)
            || (s.contains('.') && frac.is_empty())
        {
            return None;
        }
        let unit = 10i64.pow(self.exponent.into());
        let padded = format!("{frac:0<width$}", width = usize::from(self.exponent));
        let minor = if padded.is_empty() {
            0
        } else {
            padded.parse::<i64>().ok()?
        };
        let amount = whole
            .parse::<i64>()
            .ok()?
            .checked_mul(unit)?
            .checked_add(minor)?;
        (amount <= MAX_AMOUNT * 10).then_some(amount)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The largest amount a unit price or a fixed discount may have: 10^11 minor units
/// (a billion euros), so that every product and sum below fits an `i64` with room.
pub const MAX_AMOUNT: i64 = 100_000_000_000;
/// The largest quantity of one line.
pub const MAX_QUANTITY: i64 = 10_000;
/// The most lines an order may have.
pub const MAX_LINES: usize = 100;

/// A percentage, such as a tax rate or a percent-off code, with up to four decimals
/// (`"19"`, `"7.25"`, `"8.875"`), between 0 and 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Rate {
    /// The percentage × 10^4: `"8.875"` is 88_750; 100 % is 1_000_000.
    ten_thousandths: i64,
}

/// The denominator of [`Rate`]: a rate is `ten_thousandths / RATE_ONE` as a fraction.
const RATE_ONE: i128 = 1_000_000;

impl Rate {
    pub const ZERO: Rate = Rate { ten_thousandths: 0 };

    /// Parses a decimal percentage string; no sign, exponent or more than four decimals.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a percentage from 0 to 100 with at most 4 decimals");
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty()
            || whole.len() > 3
            || frac.len() > 4
            || (s.contains('.') && frac.is_empty())
            || !whole
                .bytes()
                .chain(frac.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: i64 = whole.parse().map_err(|_| bad())?;
        let frac_value: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse::<i64>().map_err(|_| bad())? * 10i64.pow(4 - frac.len() as u32)
        };
        let ten_thousandths = whole * 10_000 + frac_value;
        if ten_thousandths > 1_000_000 {
            return Err(bad());
        }
        Ok(Self { ten_thousandths })
    }

    /// The rate from its stored form ([`Self::ten_thousandths`]), if in range.
    pub fn from_ten_thousandths(v: i64) -> Option<Self> {
        (0..=1_000_000)
            .contains(&v)
            .then_some(Self { ten_thousandths: v })
    }

    pub fn ten_thousandths(&self) -> i64 {
        self.ten_thousandths
    }

    pub fn is_zero(&self) -> bool {
        self.ten_thousandths == 0
    }

    /// `amount × rate`, rounded half-up (amount ≥ 0).
    pub fn of(&self, amount: i64) -> i64 {
        round_half_up(
            i128::from(amount) * i128::from(self.ten_thousandths),
            RATE_ONE,
        )
    }
}

impl fmt::Display for Rate {
    /// The shortest decimal: `"19"`, `"7.25"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.ten_thousandths / 10_000, self.ten_thousandths % 10_000);
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:04}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// `amount × part ÷ whole`, rounded half-up (all ≥ 0; 0 when `whole` is 0): a share of a
/// stored amount in a stored proportion.
pub fn share(amount: i64, part: i64, whole: i64) -> i64 {
    if whole <= 0 || amount <= 0 || part <= 0 {
        return 0;
    }
    round_half_up(i128::from(amount) * i128::from(part), i128::from(whole))
}

/// `n / d` rounded half-up, for `n ≥ 0` and `d > 0`.
fn round_half_up(n: i128, d: i128) -> i64 {
    debug_assert!(n >= 0 && d > 0);
    i64::try_from((2 * n + d) / (2 * d)).expect("bounded amounts")
}

/// How a price relates to tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaxBehavior {
    /// The price is net; tax is added on top.
    Exclusive,
    /// The price is gross; the tax is inside it.
    Inclusive,
}

impl TaxBehavior {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Exclusive => "exclusive",
            Self::Inclusive => "inclusive",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exclusive" => Some(Self::Exclusive),
            "inclusive" => Some(Self::Inclusive),
            _ => None,
        }
    }
}

/// One line to price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInput {
    /// Orders the lines for ties in the allocation (and nothing else).
    pub id: String,
    pub unit_amount: i64,
    pub quantity: i64,
    /// An amount off this line alone (capped at its subtotal).
    pub line_discount: i64,
    /// Whether the order discount may reduce this line (a code restricted to other products
    /// may not).
    pub discountable: bool,
    pub tax_rate: Rate,
    pub tax_behavior: TaxBehavior,
}

/// A discount on the whole order (a discount code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderDiscount {
    None,
    /// A percentage of the discountable lines' amount, rounded half-up.
    Percent(Rate),
    /// A fixed amount, capped at the discountable lines' amount.
    Amount(i64),
}

/// One priced line. `total = subtotal − discount (+ tax when exclusive)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub id: String,
    /// unit amount × quantity.
    pub subtotal: i64,
    /// The line's own discount plus its share of the order discount.
    pub discount: i64,
    /// Its share of the order discount alone.
    pub order_discount: i64,
    pub tax: i64,
    /// What the buyer pays for the line.
    pub total: i64,
    /// The part of `total` that is not tax.
    pub net: i64,
}

/// Priced lines and their sums; every sum is the sum of the lines' values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    pub lines: Vec<PricedLine>,
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
}

/// Why lines cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("an order has at most {MAX_LINES} lines")]
    TooManyLines,
    #[error("unit amounts are 0 to {MAX_AMOUNT} minor units")]
    Amount,
    #[error("quantities are 1 to {MAX_QUANTITY}")]
    Quantity,
    #[error("discounts are 0 to {MAX_AMOUNT} minor units")]
    Discount,
}

/// Prices `lines` with `discount`, by the rules in this module's header.
pub fn price(lines: &[LineInput], discount: OrderDiscount) -> Result<Totals, PriceError> {
    if lines.len() > MAX_LINES {
        return Err(PriceError::TooManyLines);
    }
    for l in lines {
        if !(0..=MAX_AMOUNT).contains(&l.unit_amount) {
            return Err(PriceError::Amount);
        }
        if !(1..=MAX_QUANTITY).contains(&l.quantity) {
            return Err(PriceError::Quantity);
        }
        if !(0..=MAX_AMOUNT).contains(&l.line_discount) {
            return Err(PriceError::Discount);
        }
    }
    if let OrderDiscount::Amount(a) = discount
        && !(0..=MAX_AMOUNT).contains(&a)
    {
        return Err(PriceError::Discount);
    }
    // 1 and 2: subtotal, and what is left after the line's own discount.
    let subtotals: Vec<i64> = lines.iter().map(|l| l.unit_amount * l.quantity).collect();
    let line_discounts: Vec<i64> = lines
        .iter()
        .zip(&subtotals)
        .map(|(l, s)| l.line_discount.min(*s))
        .collect();
    let after_line: Vec<i64> = subtotals
        .iter()
        .zip(&line_discounts)
        .map(|(s, d)| s - d)
        .collect();
    // 3: the order discount over the discountable lines.
    let weights: Vec<i64> = lines
        .iter()
        .zip(&after_line)
        .map(|(l, a)| if l.discountable { *a } else { 0 })
        .collect();
    let base: i64 = weights.iter().sum();
    let order_discount = match discount {
        OrderDiscount::None => 0,
        OrderDiscount::Percent(rate) => rate.of(base),
        OrderDiscount::Amount(a) => a,
    }
    .min(base);
    let ids: Vec<&str> = lines.iter().map(|l| l.id.as_str()).collect();
    let shares = allocate(order_discount, &weights, &ids);
    // 4: tax per line.
    let mut priced = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let amount = after_line[i] - shares[i];
        let (tax, net, total) = match l.tax_behavior {
            TaxBehavior::Exclusive => {
                let tax = l.tax_rate.of(amount);
                (tax, amount, amount + tax)
            }
            TaxBehavior::Inclusive => {
                let net = round_half_up(
                    i128::from(amount) * RATE_ONE,
                    RATE_ONE + i128::from(l.tax_rate.ten_thousandths),
                );
                (amount - net, net, amount)
            }
        };
        priced.push(PricedLine {
            id: l.id.clone(),
            subtotal: subtotals[i],
            discount: line_discounts[i] + shares[i],
            order_discount: shares[i],
            tax,
            total,
            net,
        });
    }
    // 5: sums.
    Ok(Totals {
        subtotal: priced.iter().map(|l| l.subtotal).sum(),
        discount: priced.iter().map(|l| l.discount).sum(),
        tax: priced.iter().map(|l| l.tax).sum(),
        total: priced.iter().map(|l| l.total).sum(),
        lines: priced,
    })
}

/// Splits `amount` (at most the weights' sum) in proportion to `weights` by largest
/// remainder; ties go to the smaller id. No share exceeds its weight.
pub fn allocate(amount: i64, weights: &[i64], ids: &[&str]) -> Vec<i64> {
    let total: i128 = weights.iter().map(|w| i128::from(*w)).sum();
    if amount <= 0 || total == 0 {
        return vec![0; weights.len()];
    }
    let amount = i128::from(amount).min(total);
    let mut shares = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let exact = amount * i128::from(*w);
        shares.push((exact / total) as i64);
        remainders.push((exact % total, i));
    }
    let given: i64 = shares.iter().sum();
    let mut left = (amount as i64) - given;
    // Largest remainder first; equal remainders by id, then position.
    remainders.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(ids[a.1].cmp(ids[b.1]))
            .then(a.1.cmp(&b.1))
    });
    for (rem, i) in remainders {
        if left == 0 {
            break;
        }
        if rem > 0 && shares[i] < weights[i] {
            shares[i] += 1;
            left -= 1;
        }
    }
    debug_assert_eq!(
        left, 0,
        "the leftover is fewer than the lines with a remainder"
    );
    shares
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn line(id: &str, unit: i64, qty: i64, rate: &str, behavior: TaxBehavior) -> LineInput {
        LineInput {
            id: id.into(),
            unit_amount: unit,
            quantity: qty,
            line_discount: 0,
            discountable: true,
            tax_rate: Rate::parse(rate).unwrap(),
            tax_behavior: behavior,
        }
    }

    #[test]
    fn currencies_have_their_iso_exponents() {
        assert_eq!(Currency::parse("eur").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
        assert_eq!(Currency::parse("kwd").unwrap().format(1005), "1.005");
        assert_eq!(Currency::parse("JPY").unwrap().format(500), "500");
        assert_eq!(Currency::parse("EUR").unwrap().format(-5), "-0.05");
        assert_eq!(Currency::parse("USD").unwrap().stripe_code(), "usd");
        for bad in ["", "EU", "EURO", "XXX", "€"] {
            assert!(Currency::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn rates_are_decimal_strings_with_four_decimals_at_most() {
        assert_eq!(Rate::parse("19").unwrap().ten_thousandths(), 190_000);
        assert_eq!(Rate::parse("8.875").unwrap().ten_thousandths(), 88_750);
        assert_eq!(Rate::parse("100").unwrap().ten_thousandths(), 1_000_000);
        assert_eq!(Rate::parse("0.0001").unwrap().ten_thousandths(), 1);
        assert_eq!(Rate::parse("7.50").unwrap().to_string(), "7.5");
        assert_eq!(Rate::parse("19").unwrap().to_string(), "19");
        for bad in [
            "", ".", "1.", ".5", "-1", "+1", "100.0001", "101", "1e2", "0.00001", "１", "1,5",
            " 1", "NaN",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn exclusive_tax_is_added_and_rounded_half_up() {
        // 19 % of 1050 = 199.5 → 200.
        let t = price(
            &[line("a", 1050, 1, "19", TaxBehavior::Exclusive)],
            OrderDiscount::None,
        )
        .unwrap();
        assert_eq!((t.subtotal, t.tax, t.total), (1050, 200, 1250));
    }

    #[test]
    fn inclusive_tax_is_inside_the_price() {
        // 1190 gross at 19 %: net 1000, tax 190.
        let t = price(
            &[line("a", 1190, 1, "19", TaxBehavior::Inclusive)],
            OrderDiscount::None,
        )
        .unwrap();
        assert_eq!(
            (t.subtotal, t.tax, t.total, t.lines[0].net),
            (1190, 190, 1190, 1000)
        );
        // 999 gross at 19 %: 839.49… → 839 net, 160 tax.
        let t = price(
            &[line("a", 999, 1, "19", TaxBehavior::Inclusive)],
            OrderDiscount::None,
        )
        .unwrap();
        assert_eq!((t.tax, t.lines[0].net), (160, 839));
    }

    #[test]
    fn the_order_discount_goes_by_largest_remainder_with_ties_to_the_smaller_id() {
        // 100 off three equal lines: 33.33 each, the leftover cent to "a".
        let lines: Vec<LineInput> = ["c", "a", "b"]
            .iter()
            .map(|id| line(id, 1000, 1, "0", TaxBehavior::Exclusive))
            .collect();
        let t = price(&lines, OrderDiscount::Amount(100)).unwrap();
        let by_id: Vec<(&str, i64)> = t
            .lines
            .iter()
            .map(|l| (l.id.as_str(), l.order_discount))
            .collect();
        assert_eq!(by_id, vec![("c", 33), ("a", 34), ("b", 33)]);
        assert_eq!(t.discount, 100);
        // Largest remainder beats the id: 10 over 100 and 200 → 3.33 and 6.67: 3 and 7.
        assert_eq!(allocate(10, &[100, 200], &["a", "b"]), vec![3, 7]);
    }

    #[test]
    fn lines_that_cannot_be_discounted_are_left_out_and_the_discount_is_capped() {
        let mut lines = vec![
            line("a", 500, 1, "0", TaxBehavior::Exclusive),
            line("b", 2000, 1, "0", TaxBehavior::Exclusive),
        ];
        lines[1].discountable = false;
        let t = price(&lines, OrderDiscount::Amount(10_000)).unwrap();
        assert_eq!(
            (t.lines[0].discount, t.lines[1].discount, t.total),
            (500, 0, 2000)
        );
        // 20 % of the discountable 500 only.
        let t = price(&lines, OrderDiscount::Percent(Rate::parse("20").unwrap())).unwrap();
        assert_eq!((t.discount, t.total), (100, 2400));
    }

    #[test]
    fn tax_is_on_the_discounted_amount_per_line() {
        // 2 × 999 EUR at 19 % exclusive, 20 % off: 1998 − 399.6 → 400 off; 1598 × 19 % =
        // 303.62 → 304 tax.
        let t = price(
            &[line("a", 999, 2, "19", TaxBehavior::Exclusive)],
            OrderDiscount::Percent(Rate::parse("20").unwrap()),
        )
        .unwrap();
        assert_eq!(
            (t.subtotal, t.discount, t.tax, t.total),
            (1998, 400, 304, 1902)
        );
    }

    #[test]
    fn yen_and_dinar_prices_are_whole_minor_units() {
        // 1500 JPY at 10 % inclusive: net 1363.6… → 1364, tax 136.
        let t = price(
            &[line("a", 1500, 1, "10", TaxBehavior::Inclusive)],
            OrderDiscount::None,
        )
        .unwrap();
        assert_eq!((t.tax, t.total), (136, 1500));
        // 1.005 KWD at 5 % exclusive: 50.25 fils → 50.
        let t = price(
            &[line("a", 1005, 1, "5", TaxBehavior::Exclusive)],
            OrderDiscount::None,
        )
        .unwrap();
        assert_eq!((t.tax, t.total), (50, 1055));
    }

    #[test]
    fn bad_lines_are_refused() {
        let mut l = line("a", 100, 1, "0", TaxBehavior::Exclusive);
        l.quantity = 0;
        assert_eq!(
            price(&[l.clone()], OrderDiscount::None),
            Err(PriceError::Quantity)
        );
        l.quantity = 1;
        l.unit_amount = -1;
        assert_eq!(price(&[l], OrderDiscount::None), Err(PriceError::Amount));
        let many = vec![line("a", 1, 1, "0", TaxBehavior::Exclusive); MAX_LINES + 1];
        assert_eq!(
            price(&many, OrderDiscount::None),
            Err(PriceError::TooManyLines)
        );
    }

    fn arb_line() -> impl Strategy<Value = LineInput> {
        (
            "[a-e]{1,2}",
            0..=MAX_AMOUNT,
            1..=MAX_QUANTITY,
            0..=MAX_AMOUNT,
            any::<bool>(),
            0..=1_000_000i64,
            any::<bool>(),
        )
            .prop_map(|(id, unit, qty, ld, disc, rate, incl)| LineInput {
                id,
                unit_amount: unit,
                quantity: qty,
                line_discount: ld / 1000,
                discountable: disc,
                tax_rate: Rate::from_ten_thousandths(rate).unwrap(),
                tax_behavior: if incl {
                    TaxBehavior::Inclusive
                } else {
                    TaxBehavior::Exclusive
                },
            })
    }

    fn arb_small_line() -> impl Strategy<Value = LineInput> {
        (arb_line(), 0..5000i64, 1..5i64).prop_map(|(mut l, unit, qty)| {
            l.unit_amount = unit;
            l.quantity = qty;
            l.line_discount %= 300;
            l
        })
    }

    fn arb_discount() -> impl Strategy<Value = OrderDiscount> {
        prop_oneof![
            Just(OrderDiscount::None),
            (0..=1_000_000i64)
                .prop_map(|r| OrderDiscount::Percent(Rate::from_ten_thousandths(r).unwrap())),
            (0..=MAX_AMOUNT).prop_map(OrderDiscount::Amount),
            (0..3000i64).prop_map(OrderDiscount::Amount),
        ]
    }

    #[test]
    fn provider_amounts_read_back_in_minor_units() {
        let eur = Currency::parse("EUR").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(eur.parse_amount("19.99"), Some(1999));
        assert_eq!(eur.parse_amount("19.9"), Some(1990));
        assert_eq!(eur.parse_amount("19"), Some(1900));
        assert_eq!(eur.parse_amount("0.05"), Some(5));
        assert_eq!(jpy.parse_amount("500"), Some(500));
        assert_eq!(kwd.parse_amount("1.005"), Some(1005));
        for bad in [
            "",
            ".5",
            "1.",
            "1.999",
            "-1",
            "+1",
            "1e3",
            "1,00",
            " 1",
            "99999999999999",
        ] {
            assert_eq!(eur.parse_amount(bad), None, "{bad:?}");
        }
        assert_eq!(jpy.parse_amount("5.0"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn a_formatted_amount_reads_back(amount in 0i64..=MAX_AMOUNT, code in prop::sample::select(vec!["EUR", "JPY", "KWD"])) {
            let c = Currency::parse(code).unwrap();
            prop_assert_eq!(c.parse_amount(&c.format(amount)), Some(amount));
        }

        #[test]
        fn totals_add_up_and_nothing_goes_negative(
            lines in prop_oneof![
                prop::collection::vec(arb_line(), 0..8),
                prop::collection::vec(arb_small_line(), 0..8),
            ],
            discount in arb_discount(),
        ) {
            let t = price(&lines, discount).unwrap();
            prop_assert_eq!(t.lines.len(), lines.len());
            prop_assert_eq!(t.subtotal, t.lines.iter().map(|l| l.subtotal).sum::<i64>());
            prop_assert_eq!(t.tax, t.lines.iter().map(|l| l.tax).sum::<i64>());
            prop_assert_eq!(t.total, t.lines.iter().map(|l| l.total).sum::<i64>());
            prop_assert_eq!(t.discount, t.lines.iter().map(|l| l.discount).sum::<i64>());
            prop_assert!(t.discount <= t.subtotal);
            let mut exclusive_tax = 0;
            for (l, input) in t.lines.iter().zip(&lines) {
                prop_assert!(l.subtotal >= 0 && l.discount >= 0 && l.tax >= 0);
                prop_assert!(l.total >= 0 && l.net >= 0);
                prop_assert!(l.discount <= l.subtotal);
                prop_assert_eq!(l.net + l.tax, l.total);
                if !input.discountable {
                    prop_assert_eq!(l.order_discount, 0);
                }
                match input.tax_behavior {
                    TaxBehavior::Exclusive => {
                        prop_assert_eq!(l.total, l.subtotal - l.discount + l.tax);
                        exclusive_tax += l.tax;
                    }
                    TaxBehavior::Inclusive => prop_assert_eq!(l.total, l.subtotal - l.discount),
                }
            }
            prop_assert_eq!(t.total, t.subtotal - t.discount + exclusive_tax);
        }

        #[test]
        fn the_order_discount_is_allocated_exactly(
            lines in prop::collection::vec(arb_small_line(), 1..8),
            discount in arb_discount(),
        ) {
            let t = price(&lines, discount).unwrap();
            let base: i64 = lines.iter().zip(&t.lines)
                .filter(|(i, _)| i.discountable)
                .map(|(i, _)| i.unit_amount * i.quantity - i.line_discount.min(i.unit_amount * i.quantity))
                .sum();
            let expected = match discount {
                OrderDiscount::None => 0,
                OrderDiscount::Percent(r) => r.of(base),
                OrderDiscount::Amount(a) => a,
            }.min(base);
            prop_assert_eq!(t.lines.iter().map(|l| l.order_discount).sum::<i64>(), expected);
        }

        #[test]
        fn allocation_sums_caps_and_stays_within_a_cent_of_the_exact_share(
            weights in prop::collection::vec(0..1_000_000i64, 1..10),
            fraction in 0..=1000i64,
        ) {
            let total: i64 = weights.iter().sum();
            let amount = total * fraction / 1000;
            let ids: Vec<String> = (0..weights.len()).map(|i| format!("{i:02}")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let shares = allocate(amount, &weights, &ids);
            prop_assert_eq!(shares.iter().sum::<i64>(), if total == 0 { 0 } else { amount });
            for (s, w) in shares.iter().zip(&weights) {
                prop_assert!(*s >= 0 && s <= w);
                if total > 0 {
                    // |share − amount × w / total| < 1
                    let exact = i128::from(amount) * i128::from(*w);
                    let diff = i128::from(*s) * i128::from(total) - exact;
                    prop_assert!(diff.abs() < i128::from(total));
                }
            }
        }

        #[test]
        fn inclusive_and_exclusive_prices_follow_the_documented_rounding(
            amount in 0..=MAX_AMOUNT,
            rate in 0..=1_000_000i64,
        ) {
            let r = Rate::from_ten_thousandths(rate).unwrap();
            let one = |b| LineInput {
                id: "a".into(), unit_amount: amount, quantity: 1, line_discount: 0,
                discountable: true, tax_rate: r, tax_behavior: b,
            };
            // Exclusive: |tax − amount × rate| ≤ ½, ties up.
            let ex = price(&[one(TaxBehavior::Exclusive)], OrderDiscount::None).unwrap();
            let exact = i128::from(amount) * i128::from(rate);
            let twice = 2 * i128::from(ex.tax) * 1_000_000 - 2 * exact;
            prop_assert!(twice > -1_000_000 && twice <= 1_000_000, "tax {} for {} at {}", ex.tax, amount, r);
            // Inclusive: |net × (1 + rate) − gross| ≤ ½ (1 + rate), and net + tax = gross.
            let inc = price(&[one(TaxBehavior::Inclusive)], OrderDiscount::None).unwrap();
            let net = i128::from(inc.lines[0].net);
            let d = 1_000_000 + i128::from(rate);
            let twice = 2 * (net * d - i128::from(amount) * 1_000_000);
            prop_assert!(twice > -d && twice <= d, "net {} for {} at {}", net, amount, r);
            prop_assert_eq!(inc.total, amount);
        }
    }
}
