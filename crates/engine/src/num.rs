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
    use fmt::Write;
    // Writing into a String cannot fail.
    let _ = if decimals == 0 {
        write!(out, "{whole}")
    } else {
        write!(out, "{whole}.{frac:0width$}", width = decimals as usize)
    };
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
}
