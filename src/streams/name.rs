//! Stream names: what a stream carries (`StreamKind`) for which market
//! (`StreamKey`), parsed from and printed as Binance's names.

use super::*;
use crate::marketdata::Interval;
use crate::trading::Trading;
use tradsys_engine::order::MarketId;

/// What a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StreamKind {
    Trade,
    AggTrade,
    BookTicker,
    /// Depth diffs every 100 ms (`fast`) or every second.
    Depth {
        fast: bool,
    },
    /// The top `levels` of each side every 100 ms (`fast`) or every second.
    PartialDepth {
        levels: u8,
        fast: bool,
    },
    /// The rolling 24 h statistics, every second when they changed.
    Ticker,
    MiniTicker,
    Kline(Interval),
    /// Arrays of the tickers of every market that changed in the last
    /// second; the key's market is [`ALL_MARKETS`].
    AllTickers,
    AllMiniTickers,
}

impl StreamKind {
    fn suffix(self) -> String {
        match self {
            StreamKind::Trade => "trade".into(),
            StreamKind::AggTrade => "aggTrade".into(),
            StreamKind::BookTicker => "bookTicker".into(),
            StreamKind::Depth { fast: false } => "depth".into(),
            StreamKind::Depth { fast: true } => "depth@100ms".into(),
            StreamKind::PartialDepth { levels, fast: false } => format!("depth{levels}"),
            StreamKind::PartialDepth { levels, fast: true } => format!("depth{levels}@100ms"),
            StreamKind::Ticker => "ticker".into(),
            StreamKind::MiniTicker => "miniTicker".into(),
            StreamKind::Kline(interval) => format!("kline_{}", interval.as_str()),
            StreamKind::AllTickers => "!ticker@arr".into(),
            StreamKind::AllMiniTickers => "!miniTicker@arr".into(),
        }
    }

    fn parse_suffix(kind: &str) -> Option<StreamKind> {
        let kind = match kind {
            "trade" => StreamKind::Trade,
            "aggTrade" => StreamKind::AggTrade,
            "bookTicker" => StreamKind::BookTicker,
            "depth" | "depth@1000ms" => StreamKind::Depth { fast: false },
            "depth@100ms" => StreamKind::Depth { fast: true },
            "ticker" => StreamKind::Ticker,
            "miniTicker" => StreamKind::MiniTicker,
            _ => return StreamKind::parse_kline(kind).or_else(|| StreamKind::parse_partial_depth(kind)),
        };
        Some(kind)
    }

    fn parse_kline(kind: &str) -> Option<StreamKind> {
        let interval = kind.strip_prefix("kline_")?;
        Interval::parse(interval).ok().map(StreamKind::Kline)
    }

    fn parse_partial_depth(kind: &str) -> Option<StreamKind> {
        let rest = kind.strip_prefix("depth")?;
        let (levels, fast) = match rest.split_once('@') {
            None => (rest, false),
            Some((levels, "100ms")) => (levels, true),
            Some((levels, "1000ms")) => (levels, false),
            Some(_) => return None,
        };
        let levels: u8 = levels.parse().ok()?;
        PARTIAL_DEPTH_LEVELS
            .contains(&levels)
            .then_some(StreamKind::PartialDepth { levels, fast })
    }
}

/// One stream: a kind of one market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StreamKey {
    pub(crate) market: MarketId,
    pub(crate) kind: StreamKind,
}

impl StreamKey {
    /// Parses a Binance stream name such as `btcusdt@trade`,
    /// `btcusdt@kline_1m` or `!ticker@arr`.
    pub(crate) fn parse(name: &str, trading: &Trading) -> Option<StreamKey> {
        let all = match name {
            "!ticker@arr" => Some(StreamKind::AllTickers),
            "!miniTicker@arr" => Some(StreamKind::AllMiniTickers),
            _ => None,
        };
        if let Some(kind) = all {
            return Some(StreamKey {
                market: ALL_MARKETS,
                kind,
            });
        }
        let (symbol, kind) = name.split_once('@')?;
        let kind = StreamKind::parse_suffix(kind)?;
        let market = trading.market(&symbol.to_ascii_uppercase())?;
        Some(StreamKey { market, kind })
    }

    /// True for the streams of every market.
    pub(crate) fn is_all_markets(&self) -> bool {
        self.market == ALL_MARKETS
    }

    /// The stream's canonical name, as combined payloads and
    /// LIST_SUBSCRIPTIONS show it.
    pub(crate) fn name(&self, trading: &Trading) -> String {
        if self.is_all_markets() {
            return self.kind.suffix();
        }
        let symbol = trading.spec(self.market).symbol.to_ascii_lowercase();
        format!("{symbol}@{}", self.kind.suffix())
    }
}
