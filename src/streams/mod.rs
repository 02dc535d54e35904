//! Market streams without I/O: stream names, the events a market's shard
//! sends, their Binance JSON, and one shard's registry of subscribers.
//!
//! Fan-out runs in two hops. A connection stays on the shard that accepted
//! it and subscribes in that shard's [`Registry`]. When a shard's local
//! count for a stream goes from 0 to 1 it asks the market's shard to send
//! it the stream (`mesh::Call::Subscribe`); from 1 to 0 it says so
//! (`mesh::StreamMsg::Unsubscribe`). The market's shard sends each event
//! once to each subscribed shard as plain data ([`StreamEvent`]), and that
//! shard serialises it once into a frame shared (`Rc<[u8]>`) by every
//! local subscriber's [`Outbound`] queue.
//!
//! **Invariant:** an [`Outbound`] never holds more than its byte bound;
//! a push that would exceed it marks the queue overflowed and empties it,
//! and the connection closes with 1008. One slow reader never slows the
//! publisher or another reader.
//!
//! **Invariant:** depth diffs of a market form one chain per speed: each
//! event's `U` is the previous event's `u` + 1, and `u` is the book's
//! update id (REST depth's `lastUpdateId`) the levels reflect.
//!
//! Periodic streams (depth diffs, partial depth, tickers, klines) are
//! computed on the market's shard by its stream timer, only for streams
//! that have a subscribed shard; with none, a tick does nothing.
//! `!ticker@arr` and `!miniTicker@arr` are streams of every market
//! ([`ALL_MARKETS`]): a subscriber shard subscribes at every shard, and
//! each sends the tickers of its own markets that changed.
//!
//! User data streams are keyed by user: each connection shard keeps its
//! connections with their listen keys, and the user's shard counts the
//! connections per shard, which is how the per-user cap holds over all
//! shards.
//!
//! Files: `name` (stream names), `event` (events and their JSON), `queue`
//! (a connection's outbound queue), `registry` (one shard's subscribers).
//! Callers: `server::publish` (registry, publishing, stream ticks) and
//! `server::wsconn` (the connection loop that drains an [`Outbound`]).

mod event;
mod name;
mod queue;
mod registry;
pub(crate) use registry::user_event_payloads;

pub(crate) use event::*;
pub(crate) use name::*;
pub(crate) use queue::*;
pub(crate) use registry::*;
use tradsys_engine::order::MarketId;

/// Streams one connection may subscribe to (Binance's limit).
pub(crate) const WS_STREAMS_PER_CONNECTION_MAX: usize = 1024;
/// Levels per side a depth diff compares (the deepest REST depth).
pub(crate) const DEPTH_DIFF_LEVELS_MAX: usize = tradsys_engine::book::DEPTH_LEVELS_MAX;
/// Levels per side the partial depth streams may ask for (`@depth<N>`).
pub(crate) const PARTIAL_DEPTH_LEVELS: [u8; 3] = [5, 10, 20];
/// Candles one kline tick sends at most for one stream: a timer that ran
/// late may find several short candles closed since the last tick.
pub(crate) const KLINE_CANDLES_PER_TICK_MAX: usize = 16;
/// The market of the streams that cover every market (`!ticker@arr`).
pub(crate) const ALL_MARKETS: MarketId = MarketId(u16::MAX);
/// Frames a drained queue keeps room for; a queue that grew beyond it
/// gives its memory back, so an idle subscriber stays small.
const OUTBOUND_FRAMES_KEPT_MAX: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketdata::{Interval, MarketData};
    use crate::trading::Trading;
    use std::collections::HashSet;
    use std::rc::Rc;
    use tradsys_engine::num::{Price, Qty};

    #[test]
    fn changed_levels_reports_new_changed_and_removed_levels() {
        let old = [(Price(100), Qty(5)), (Price(99), Qty(1)), (Price(98), Qty(2))];
        let new = [(Price(101), Qty(3)), (Price(100), Qty(5)), (Price(99), Qty(4))];
        let touched = HashSet::from([Price(97), Price(100)]);
        assert_eq!(
            changed_levels(&old, &new, &touched),
            vec![
                (Price(101), Qty(3)),
                (Price(100), Qty(5)),
                (Price(99), Qty(4)),
                (Price(98), Qty(0)),
                (Price(97), Qty(0))
            ]
        );
    }

    #[test]
    fn outbound_overflow_drops_everything_and_refuses_more() {
        let out = Outbound::new(10, false);
        assert_eq!(out.push(Rc::from(&b"123456"[..])), Push::Queued);
        assert_eq!(out.push(Rc::from(&b"123456"[..])), Push::Overflowed);
        assert!(out.is_overflowed());
        assert_eq!(out.pop(), None);
        assert_eq!(out.push(Rc::from(&b"1"[..])), Push::Dropped);
    }

    fn trading() -> Trading {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml")).expect("markets.toml");
        let specs = tradsys_engine::market::parse_markets(&text).expect("markets");
        Trading::new(0, 1, specs, tradsys_engine::book::BookCapacity::default())
    }

    #[test]
    fn stream_names_parse_to_their_canonical_names() {
        let trading = trading();
        let table = [
            ("btcusdt@aggTrade", Some("btcusdt@aggTrade")),
            ("btcusdt@ticker", Some("btcusdt@ticker")),
            ("btcusdt@miniTicker", Some("btcusdt@miniTicker")),
            ("btcusdt@depth5", Some("btcusdt@depth5")),
            ("btcusdt@depth10@1000ms", Some("btcusdt@depth10")),
            ("btcusdt@depth20@100ms", Some("btcusdt@depth20@100ms")),
            ("btcusdt@depth15", None),
            ("btcusdt@depth5@10ms", None),
            ("btcusdt@kline_1m", Some("btcusdt@kline_1m")),
            ("btcusdt@kline_1M", Some("btcusdt@kline_1M")),
            ("btcusdt@kline_2m", None),
            ("!ticker@arr", Some("!ticker@arr")),
            ("!miniTicker@arr", Some("!miniTicker@arr")),
            ("!bookTicker@arr", None),
            ("nosuch@ticker", None),
        ];
        for (name, canonical) in table {
            let key = StreamKey::parse(name, &trading);
            assert_eq!(key.map(|k| k.name(&trading)).as_deref(), canonical, "{name}");
        }
        assert!(StreamKey::parse("!ticker@arr", &trading).is_some_and(|k| k.is_all_markets()));
    }

    fn tape(id: u64, price: i64, time_ms: u64) -> crate::marketdata::TapeTrade {
        crate::marketdata::TapeTrade {
            id,
            price: Price(price),
            qty: Qty(1),
            quote_qty: tradsys_engine::num::Amount(price),
            time_ms,
            is_buyer_maker: false,
            taker_order: id,
        }
    }

    #[test]
    fn kline_updates_send_changes_then_the_close() {
        let (market, interval) = (MarketId(0), Interval::M1);
        let mut data = MarketData::new(crate::marketdata::MarketDataLimits::default());
        let mut registry = Registry::default();
        data.record(&tape(1, 10, 60_000));
        registry.kline_start(market, interval, data.newest_candle(interval), 60_500);
        // (new trade, now, expected (open, last trade id, closed) sent)
        type Row = (Option<(u64, i64, u64)>, u64, &'static [(u64, u64, bool)]);
        let table: [Row; 6] = [
            // The open candle goes out once after the start.
            (None, 61_000, &[(60_000, 1, false)]),
            (None, 62_000, &[]),
            (Some((2, 11, 62_500)), 63_000, &[(60_000, 2, false)]),
            // Its time is over: once more, closed.
            (None, 120_000, &[(60_000, 2, true)]),
            (None, 121_000, &[]),
            // A trade two minutes on: that candle, open.
            (Some((3, 12, 240_100)), 240_200, &[(240_000, 3, false)]),
        ];
        for (trade, now, expected) in table {
            if let Some((id, price, time)) = trade {
                data.record(&tape(id, price, time));
            }
            let sent: Vec<(u64, u64, bool)> = registry
                .kline_updates(market, interval, &data, now)
                .iter()
                .map(|(c, closed)| (c.open_time_ms, c.last_trade_id, *closed))
                .collect();
            assert_eq!(sent, expected, "at {now}");
        }
        // A newer candle closes the one before it at once.
        data.record(&tape(4, 13, 300_000));
        let sent: Vec<(u64, bool)> = registry
            .kline_updates(market, interval, &data, 300_001)
            .iter()
            .map(|(c, closed)| (c.open_time_ms, *closed))
            .collect();
        assert_eq!(sent, [(240_000, true), (300_000, false)]);
    }

    #[test]
    fn user_connections_are_capped_over_all_shards() {
        let mut registry = Registry::default();
        assert!(registry.add_user_connection(7, 0, 3));
        assert!(registry.add_user_connection(7, 1, 3));
        assert!(registry.add_user_connection(7, 1, 3));
        assert!(!registry.add_user_connection(7, 0, 3));
        assert!(registry.add_user_connection(8, 0, 3), "another user has its own count");
        assert_eq!(registry.user_shards_of(7), [0, 1]);
        registry.remove_user_connection(7, 1);
        assert_eq!(registry.user_shards_of(7), [0, 1]);
        assert!(registry.add_user_connection(7, 0, 3));
        registry.remove_user_connection(7, 0);
        registry.remove_user_connection(7, 0);
        registry.remove_user_connection(7, 1);
        assert!(registry.user_shards_of(7).is_empty());
        assert!(registry.has_user_streams(), "user 8 still has one");
    }

    #[test]
    fn a_finished_queue_drops_later_frames_and_is_ready() {
        let out = Outbound::new(100, false);
        assert_eq!(out.push_last(Rc::from(&b"last"[..])), Push::Queued);
        assert_eq!(out.push(Rc::from(&b"more"[..])), Push::Dropped);
        assert!(out.is_finished());
        assert_eq!(out.pop().as_deref(), Some(&b"last"[..]));
        assert_eq!(out.pop(), None);
    }

    #[test]
    fn a_close_of_stale_streams_spares_who_subscribed_after_it() {
        let trading = trading();
        let Some(key) = StreamKey::parse("btcusdt@trade", &trading) else {
            panic!("btcusdt@trade is a stream")
        };
        let mut registry = Registry::default();
        let (stale, fresh) = (Rc::new(Outbound::new(1000, false)), Rc::new(Outbound::new(1000, false)));
        registry.subscribe_local(key, &stale);
        let before = std::time::Instant::now();
        // The clock may not have moved yet: the fresh one comes strictly after.
        while std::time::Instant::now() <= before {}
        registry.subscribe_local(key, &fresh);
        assert_eq!(registry.close_local(key, b"closed", &trading, before), 0);
        assert!(stale.is_finished());
        assert!(!fresh.is_finished());
        assert_eq!(fresh.pop(), None);
    }

    #[test]
    fn depth_chain_links_update_ids() {
        let mut registry = Registry::default();
        let market = MarketId(0);
        registry.depth_start(market, true, 7, vec![(Price(10), Qty(1))], vec![]);
        assert_eq!(registry.depth_diff(market, true, 7, 0, vec![], vec![]), None);
        let diff = registry
            .depth_diff(market, true, 9, 5, vec![], vec![(Price(11), Qty(2))])
            .expect("a diff");
        assert_eq!((diff.first_update_id, diff.last_update_id), (8, 9));
        assert_eq!(diff.bids, vec![(Price(10), Qty(0))]);
        assert_eq!(diff.asks, vec![(Price(11), Qty(2))]);
        let next = registry
            .depth_diff(market, true, 12, 6, vec![], vec![])
            .expect("a diff");
        assert_eq!(next.first_update_id, 10);
    }
}
