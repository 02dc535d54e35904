//! Exact fixed-point numbers for money.
//!
//! Every price, quantity and amount is an `i64` count of 10⁻⁸ units: the
//! eight decimals Binance prints. Parsing and printing are exact decimal
//! string conversions; there is no floating point anywhere in this crate.
//! Per-market scales (tick size, step size) are multiples of the unit and are
//! checked by the market's filters, not by these types.

use std::fmt;

/// Decimals every value carries.
pub const DECIMALS: u32 = 8;
/// Units in one whole: 10^DECIMALS.
pub const UNIT: i64 = 100_000_000;
/// Basis points in one: `trailingDelta` is counted in them.
pub const BIPS: i64 = 10_000;

/// Why a decimal string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("empty value")]
    Empty,
    #[error("negative value")]
    Negative,
    #[error("not a decimal number")]
    NotNumeric,
    #[error("more than 8 decimals")]
    TooManyDecimals,
    #[error("value too large")]
    Overflow,
}

/// Parses a non-negative decimal string ("12", "0.001", "1.50000000") into
/// units of 10⁻⁸. Leading '+', exponents, spaces and more than 8 decimals
/// are refused; trailing zeros beyond the 8th decimal are accepted because
/// clients print fixed widths ("0.001000000000").
pub fn parse_units(text: &str) -> Result<i64, DecimalError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(DecimalError::Empty);
    }
    if bytes[0] == b'-' {
        return Err(DecimalError::Negative);
    }
    let (whole, frac) = match text.find('.') {
        Some(dot) => (&bytes[..dot], &bytes[dot + 1..]),
        None => (bytes, &bytes[bytes.len()..]),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(DecimalError::NotNumeric);
    }
    let all_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if !all_digits(whole) || !all_digits(frac) {
        return Err(DecimalError::NotNumeric);
    }
    let significant = frac.len() - frac.iter().rev().take_while(|&&b| b == b'0').count();
    if significant > DECIMALS as usize {
        return Err(DecimalError::TooManyDecimals);
    }
    let mut units: i64 = 0;
    for &digit in whole {
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(i64::from(digit - b'0')))
            .ok_or(DecimalError::Overflow)?;
    }
    units = units.checked_mul(UNIT).ok_or(DecimalError::Overflow)?;
    let mut scale = UNIT / 10;
    for &digit in &frac[..significant] {
        units = units
            .checked_add(i64::from(digit - b'0') * scale)
            .ok_or(DecimalError::Overflow)?;
        scale /= 10;
    }
    Ok(units)
}

/// Appends `units` as a decimal with exactly `decimals` (≤ 8) digits after
/// the point. Digits beyond `decimals` must be zero: printing never rounds.
pub fn write_units(out: &mut String, units: i64, decimals: u32) {
    assert!(decimals <= DECIMALS);
    let divisor = 10_i64.pow(DECIMALS - decimals);
    assert!(
        units % divisor == 0,
        "printing {units} with {decimals} decimals would round"
    );
    if units < 0 {
        out.push('-');
    }
    let magnitude = units.unsigned_abs();
    let whole = magnitude / UNIT as u64;
    let frac = (magnitude % UNIT as u64) / divisor as u64;
    // Digits by hand rather than through `fmt`: responses print dozens of
    // amounts, and the formatting machinery was a visible cost.
    push_digits(out, whole, 1);
    if decimals > 0 {
        out.push('.');
        push_digits(out, frac, decimals as usize);
    }
}

/// Appends `value` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut String, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while value > 0 {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    start = start.min(digits.len() - width);
    for &digit in &digits[start..] {
        out.push(char::from(digit));
    }
}

/// `units` printed with all 8 decimals, as Binance prints money.
pub fn units_to_string(units: i64) -> String {
    let mut out = String::with_capacity(24);
    write_units(&mut out, units, DECIMALS);
    out
}

macro_rules! fixed_point {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        pub struct $name(pub i64);

        impl $name {
            pub const ZERO: $name = $name(0);

            /// Parses a non-negative decimal string; see [`parse_units`].
            pub fn parse(text: &str) -> Result<$name, DecimalError> {
                parse_units(text).map($name)
            }

            pub fn units(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&units_to_string(self.0))
            }
        }
    };
}

fixed_point!(
    /// A price in 10⁻⁸ units of the quote asset per whole base asset.
    Price
);
fixed_point!(
    /// A quantity in 10⁻⁸ units of the base asset.
    Qty
);
fixed_point!(
    /// An amount of one asset (a balance, a notional, a fee) in 10⁻⁸ units.
    Amount
);
fixed_point!(
    /// A rate (a commission) in 10⁻⁸ units: "0.001" is 100_000.
    Rate
);

/// Why a decimal string was refused as a price or quantity of a market whose
/// values must be whole multiples of an increment (tick or step size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IncrementError {
    #[error(transparent)]
    Decimal(#[from] DecimalError),
    #[error("not a multiple of the increment")]
    NotMultiple,
}

/// Parses `text` and requires a whole multiple of `increment` (> 0).
pub fn parse_multiple(text: &str, increment: i64) -> Result<i64, IncrementError> {
    assert!(increment > 0);
    let units = parse_units(text)?;
    if units % increment != 0 {
        return Err(IncrementError::NotMultiple);
    }
    Ok(units)
}

/// The exact product price × qty in 10⁻⁸ quote units times 10⁸. An i128
/// holds any product of two i64 values, so this can never overflow.
pub fn notional_wide(price: Price, qty: Qty) -> i128 {
    i128::from(price.0) * i128::from(qty.0)
}

/// price × qty rounded down to the unit; `None` when it exceeds an i64.
/// Fills use the rounded-down value: buyer and seller move the same number,
/// and the sum of rounded-down parts never exceeds the rounded-up whole
/// that a buy order locked.
pub fn notional_floor(price: Price, qty: Qty) -> Option<Amount> {
    narrow(floor_unit(notional_wide(price, qty)))
}

/// price × qty rounded up to the unit; `None` when it exceeds an i64.
/// Locks use the rounded-up value so that they always cover the fills.
pub fn notional_ceil(price: Price, qty: Qty) -> Option<Amount> {
    narrow(ceil_unit(notional_wide(price, qty)))
}

/// The commission on `received` at `rate`, rounded up to the unit. The
/// exchange never charges less than the exact fee; because a rate is at most
/// one whole, the fee never exceeds what was received.
pub fn fee_ceil(received: Amount, rate: Rate) -> Amount {
    assert!(received.0 >= 0 && (0..=UNIT).contains(&rate.0));
    let fee = ceil_unit(i128::from(received.0) * i128::from(rate.0));
    let fee = i64::try_from(fee).unwrap_or(i64::MAX);
    assert!(fee <= received.0);
    Amount(fee)
}

/// `amount` increased by `rate` (1 + rate), rounded up; `None` on overflow.
pub fn add_rate_ceil(amount: Amount, rate: Rate) -> Option<Amount> {
    let wide = i128::from(amount.0) * i128::from(UNIT + rate.0);
    narrow(ceil_unit(wide))
}

/// The largest multiple of `step` whose notional at `price`, rounded down,
/// is at most `quote`. Used to keep a taker inside its quote budget.
pub fn qty_within(price: Price, quote: Amount, step: Qty) -> Qty {
    assert!(price.0 > 0 && step.0 > 0 && quote.0 >= 0);
    let limit = (i128::from(quote.0) + 1) * i128::from(UNIT) - 1;
    let qty = limit / i128::from(price.0);
    let qty = qty - qty % i128::from(step.0);
    Qty(i64::try_from(qty).unwrap_or(i64::MAX - i64::MAX % step.0))
}

/// `wide` ÷ `UNIT` rounded toward −∞. Products on the hot paths almost
/// always fit an i64, where division by a constant compiles to a multiply;
/// a 128-bit division is a library call costing tens of nanoseconds.
fn floor_unit(wide: i128) -> i128 {
    match i64::try_from(wide) {
        Ok(narrow) => i128::from(narrow.div_euclid(UNIT)),
        Err(_) => wide.div_euclid(i128::from(UNIT)),
    }
}

/// `wide` ÷ `UNIT` rounded toward +∞.
fn ceil_unit(wide: i128) -> i128 {
    -floor_unit(-wide)
}

fn narrow(wide: i128) -> Option<Amount> {
    i64::try_from(wide).ok().map(Amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_values() {
        let table: &[(&str, Result<i64, DecimalError>)] = &[
            ("0", Ok(0)),
            ("1", Ok(UNIT)),
            ("0.001", Ok(100_000)),
            ("0.00000001", Ok(1)),
            ("12.50000000", Ok(1_250_000_000)),
            ("0.0010000000000", Ok(100_000)),
            (".5", Ok(50_000_000)),
            ("5.", Ok(5 * UNIT)),
            ("92233720368.54775807", Ok(i64::MAX)),
            ("92233720368.54775808", Err(DecimalError::Overflow)),
            ("100000000000", Err(DecimalError::Overflow)),
            ("", Err(DecimalError::Empty)),
            ("-1", Err(DecimalError::Negative)),
            (".", Err(DecimalError::NotNumeric)),
            ("1e5", Err(DecimalError::NotNumeric)),
            ("+1", Err(DecimalError::NotNumeric)),
            (" 1", Err(DecimalError::NotNumeric)),
            ("1.2.3", Err(DecimalError::NotNumeric)),
            ("0.000000001", Err(DecimalError::TooManyDecimals)),
        ];
        for (text, expected) in table {
            assert_eq!(parse_units(text), *expected, "parsing {text:?}");
        }
    }

    #[test]
    fn prints_fixed_decimals() {
        let table: &[(i64, u32, &str)] = &[
            (0, 8, "0.00000000"),
            (100_000, 8, "0.00100000"),
            (1_250_000_000, 2, "12.50"),
            (UNIT, 0, "1"),
            (-UNIT, 8, "-1.00000000"),
            (i64::MAX, 8, "92233720368.54775807"),
        ];
        for &(units, decimals, expected) in table {
            let mut out = String::new();
            write_units(&mut out, units, decimals);
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn display_round_trips() {
        for units in [0, 1, 99, UNIT, 123_456_789_012, i64::MAX] {
            assert_eq!(Price::parse(&Price(units).to_string()), Ok(Price(units)));
        }
    }

    #[test]
    fn notional_and_fees_at_the_extremes() {
        let max = i64::MAX;
        assert_eq!(notional_wide(Price(max), Qty(max)), i128::from(max) * i128::from(max));
        assert_eq!(notional_floor(Price(max), Qty(max)), None);
        assert_eq!(notional_ceil(Price(max), Qty(UNIT)), Some(Amount(max)));
        assert_eq!(notional_ceil(Price(max), Qty(UNIT + 1)), None);
        assert_eq!(notional_floor(Price(3), Qty(UNIT / 2)), Some(Amount(1)));
        assert_eq!(notional_ceil(Price(3), Qty(UNIT / 2)), Some(Amount(2)));
        assert_eq!(notional_floor(Price(0), Qty(max)), Some(Amount(0)));
        assert_eq!(fee_ceil(Amount(max), Rate(UNIT)), Amount(max));
        assert_eq!(fee_ceil(Amount(max), Rate(100_000)), Amount(9_223_372_036_854_776));
        assert_eq!(fee_ceil(Amount(1), Rate(1)), Amount(1));
        assert_eq!(fee_ceil(Amount(0), Rate(UNIT)), Amount(0));
        assert_eq!(fee_ceil(Amount(999), Rate(100_000)), Amount(1));
        assert_eq!(add_rate_ceil(Amount(100), Rate(5_000_000)), Some(Amount(105)));
        assert_eq!(add_rate_ceil(Amount(101), Rate(5_000_000)), Some(Amount(107)));
        assert_eq!(add_rate_ceil(Amount(max), Rate(1)), None);
        assert_eq!(qty_within(Price(UNIT), Amount(10), Qty(1)), Qty(10));
        assert_eq!(qty_within(Price(3 * UNIT), Amount(10), Qty(1)), Qty(3));
        assert_eq!(qty_within(Price(1), Amount(max), Qty(7)).0 % 7, 0);
    }

    #[test]
    fn unit_division_agrees_across_the_i64_boundary() {
        let unit = i128::from(UNIT);
        let edges = [i128::from(i64::MAX), i128::from(i64::MIN)];
        for edge in edges {
            for wide in [edge - 1, edge, edge + 1, -edge - 1, -edge, -edge + 1] {
                let floor = wide.div_euclid(unit);
                assert_eq!(floor_unit(wide), floor, "{wide}");
                assert_eq!(ceil_unit(wide), -(-wide).div_euclid(unit), "{wide}");
            }
        }
        for wide in [-UNIT - 1, -UNIT, -1, 0, 1, UNIT - 1, UNIT, UNIT + 1] {
            let wide = i128::from(wide);
            assert_eq!(floor_unit(wide), wide.div_euclid(unit));
            assert_eq!(ceil_unit(wide), -(-wide).div_euclid(unit));
        }
    }

    #[test]
    fn increments_are_typed() {
        assert_eq!(parse_multiple("0.02", 1_000_000), Ok(2_000_000));
        assert_eq!(parse_multiple("0.015", 1_000_000), Err(IncrementError::NotMultiple));
        assert_eq!(
            parse_multiple("-1", 1),
            Err(IncrementError::Decimal(DecimalError::Negative))
        );
        assert_eq!(parse_multiple("", 1), Err(IncrementError::Decimal(DecimalError::Empty)));
        assert_eq!(
            parse_multiple("x", 1),
            Err(IncrementError::Decimal(DecimalError::NotNumeric))
        );
        assert_eq!(
            parse_multiple("1.000000001", 1),
            Err(IncrementError::Decimal(DecimalError::TooManyDecimals))
        );
        assert_eq!(
            parse_multiple("92233720369", 1),
            Err(IncrementError::Decimal(DecimalError::Overflow))
        );
    }
}
