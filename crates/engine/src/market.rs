//! Market specifications: what `shards/markets.toml` says about each market.
//!
//! Parsing is pure (text in, specs out); reading the file is the caller's
//! I/O. A spec that passes `parse_markets` is internally consistent: every
//! bound is positive, min ≤ max, and bounds are multiples of the tick and
//! step sizes, so the filters never disagree with each other.

use crate::num::{parse_units, Amount, DecimalError, Price, Qty, Rate, DECIMALS, UNIT};
use serde::Deserialize;

/// Markets one process may serve.
pub const MARKETS_MAX: usize = 1024;

/// One market, validated.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MarketSpec {
    pub symbol: String,
    pub base_asset: String,
    pub base_asset_precision: u32,
    pub quote_asset: String,
    pub quote_asset_precision: u32,
    pub tick_size: Price,
    pub step_size: Qty,
    pub min_price: Price,
    pub max_price: Price,
    pub min_qty: Qty,
    pub max_qty: Qty,
    pub min_notional: Amount,
    pub max_notional: Amount,
    pub maker_commission: Rate,
    pub taker_commission: Rate,
    /// The shard pinned in the file, if any.
    pub shard: Option<u32>,
}

/// Why a markets file was refused; the message names the market and key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarketsError {
    #[error("not valid TOML: {0}")]
    Syntax(String),
    #[error("no [[market]] table")]
    Empty,
    #[error("more than {MARKETS_MAX} markets")]
    TooMany,
    #[error("market {symbol}: {key}: {problem}")]
    Invalid {
        symbol: String,
        key: &'static str,
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    market: Vec<RawMarket>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMarket {
    symbol: String,
    base_asset: String,
    base_asset_precision: u32,
    quote_asset: String,
    quote_asset_precision: u32,
    tick_size: String,
    step_size: String,
    min_price: String,
    max_price: String,
    min_qty: String,
    max_qty: String,
    min_notional: String,
    max_notional: String,
    maker_commission: String,
    taker_commission: String,
    shard: Option<u32>,
}

/// Parses and validates the text of a markets file.
pub fn parse_markets(text: &str) -> Result<Vec<MarketSpec>, MarketsError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| MarketsError::Syntax(e.message().to_string()))?;
    if raw.market.is_empty() {
        return Err(MarketsError::Empty);
    }
    if raw.market.len() > MARKETS_MAX {
        return Err(MarketsError::TooMany);
    }
    let mut specs: Vec<MarketSpec> = Vec::with_capacity(raw.market.len());
    for market in raw.market {
        let spec = validate(market)?;
        if specs.iter().any(|s| s.symbol == spec.symbol) {
            return Err(invalid(&spec.symbol, "symbol", "appears twice".to_string()));
        }
        specs.push(spec);
    }
    Ok(specs)
}

fn invalid(symbol: &str, key: &'static str, problem: String) -> MarketsError {
    MarketsError::Invalid {
        symbol: symbol.to_string(),
        key,
        problem,
    }
}

fn validate(raw: RawMarket) -> Result<MarketSpec, MarketsError> {
    let symbol = raw.symbol.clone();
    let name_ok =
        |s: &str| (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !name_ok(&raw.symbol) {
        return Err(invalid(
            &symbol,
            "symbol",
            "must be 1-20 upper-case letters or digits".into(),
        ));
    }
    for (key, asset) in [("base_asset", &raw.base_asset), ("quote_asset", &raw.quote_asset)] {
        if !name_ok(asset) {
            return Err(invalid(
                &symbol,
                key,
                "must be 1-20 upper-case letters or digits".into(),
            ));
        }
    }
    if raw.base_asset == raw.quote_asset {
        return Err(invalid(&symbol, "quote_asset", "must differ from base_asset".into()));
    }
    for (key, precision) in [
        ("base_asset_precision", raw.base_asset_precision),
        ("quote_asset_precision", raw.quote_asset_precision),
    ] {
        if precision > DECIMALS {
            return Err(invalid(&symbol, key, format!("must be at most {DECIMALS}")));
        }
    }
    let decimal = |key: &'static str, text: &str| -> Result<i64, MarketsError> {
        parse_units(text).map_err(|e: DecimalError| invalid(&symbol, key, format!("{e}: {text:?}")))
    };
    let spec = MarketSpec {
        tick_size: Price(decimal("tick_size", &raw.tick_size)?),
        step_size: Qty(decimal("step_size", &raw.step_size)?),
        min_price: Price(decimal("min_price", &raw.min_price)?),
        max_price: Price(decimal("max_price", &raw.max_price)?),
        min_qty: Qty(decimal("min_qty", &raw.min_qty)?),
        max_qty: Qty(decimal("max_qty", &raw.max_qty)?),
        min_notional: Amount(decimal("min_notional", &raw.min_notional)?),
        max_notional: Amount(decimal("max_notional", &raw.max_notional)?),
        maker_commission: Rate(decimal("maker_commission", &raw.maker_commission)?),
        taker_commission: Rate(decimal("taker_commission", &raw.taker_commission)?),
        symbol: raw.symbol,
        base_asset: raw.base_asset,
        base_asset_precision: raw.base_asset_precision,
        quote_asset: raw.quote_asset,
        quote_asset_precision: raw.quote_asset_precision,
        shard: raw.shard,
    };
    check_consistent(&spec)?;
    Ok(spec)
}

fn check_consistent(spec: &MarketSpec) -> Result<(), MarketsError> {
    let fail = |key, problem: &str| Err(invalid(&spec.symbol, key, problem.to_string()));
    let tick = spec.tick_size.0;
    let step = spec.step_size.0;
    if tick <= 0 {
        return fail("tick_size", "must be > 0");
    }
    if step <= 0 {
        return fail("step_size", "must be > 0");
    }
    if spec.min_price.0 <= 0 || spec.min_price.0 % tick != 0 {
        return fail("min_price", "must be > 0 and a multiple of tick_size");
    }
    if spec.max_price < spec.min_price || spec.max_price.0 % tick != 0 {
        return fail("max_price", "must be >= min_price and a multiple of tick_size");
    }
    if spec.min_qty.0 <= 0 || spec.min_qty.0 % step != 0 {
        return fail("min_qty", "must be > 0 and a multiple of step_size");
    }
    if spec.max_qty < spec.min_qty || spec.max_qty.0 % step != 0 {
        return fail("max_qty", "must be >= min_qty and a multiple of step_size");
    }
    if spec.max_notional < spec.min_notional {
        return fail("max_notional", "must be >= min_notional");
    }
    for (key, rate) in [
        ("maker_commission", spec.maker_commission),
        ("taker_commission", spec.taker_commission),
    ] {
        if rate.0 > UNIT {
            return fail(key, "must be at most 1");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_MARKETS: &str = include_str!("../../../shards/markets.toml");

    #[test]
    fn default_markets_parse() {
        let specs = parse_markets(DEFAULT_MARKETS).unwrap();
        let symbols: Vec<&str> = specs.iter().map(|s| s.symbol.as_str()).collect();
        assert_eq!(symbols, ["BTCUSDT", "ETHUSDT", "ETHBTC", "EURUSD"]);
        assert_eq!(specs[0].tick_size, Price(1_000_000));
        assert_eq!(specs[0].step_size, Qty(1_000));
        assert_eq!(specs[0].taker_commission, Rate(100_000));
    }

    #[test]
    fn invalid_markets_name_the_key() {
        let good = DEFAULT_MARKETS.split("\n[[market]]\n").nth(1).unwrap();
        let one = |text: &str| format!("[[market]]\n{text}\n");
        let cases: &[(&str, &str, &str)] = &[
            (
                "tick_size = \"0.01\"",
                "tick_size = \"0\"",
                "market BTCUSDT: tick_size: must be > 0",
            ),
            (
                "min_price = \"0.01\"",
                "min_price = \"0.015\"",
                "market BTCUSDT: min_price: must be > 0 and a multiple of tick_size",
            ),
            (
                "max_qty = \"9000\"",
                "max_qty = \"-1\"",
                "market BTCUSDT: max_qty: negative value: \"-1\"",
            ),
            (
                "symbol = \"BTCUSDT\"",
                "symbol = \"btc\"",
                "market btc: symbol: must be 1-20 upper-case letters or digits",
            ),
        ];
        for (from, to, expected) in cases {
            let text = one(&good.replacen(from, to, 1));
            assert_eq!(parse_markets(&text).unwrap_err().to_string(), *expected);
        }
        let twice = format!("{}{}", one(good), one(good));
        assert_eq!(
            parse_markets(&twice).unwrap_err().to_string(),
            "market BTCUSDT: symbol: appears twice"
        );
        assert_eq!(parse_markets("").unwrap_err(), MarketsError::Empty);
    }
}
