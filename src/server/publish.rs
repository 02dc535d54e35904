//! Stream publishing on one shard: filing trades in the market data,
//! sending each event once to every shard with subscribers, queueing it for
//! the local ones, the periodic streams (depth diffs, partial depth,
//! tickers, klines) and the subscriptions that start and stop them.
//!
//! The market's shard produces a market's events; the user's shard a
//! user's. Each event crosses the mesh once per subscribed shard and is
//! serialized once per shard (`streams::Registry`).

use crate::api::host::Host;
use crate::api::peer::CallError;
use crate::json::JsonWriter;
use crate::marketdata::TapeTrade;
use crate::server::mesh::{Call, Reply, ShardMsg, StreamMsg};
use crate::server::shard::Shard;
use crate::streams::{
    Delivery, Outbound, StreamEvent, StreamKey, StreamKind, TickerEntry, UserAttach, UserEvent, DEPTH_DIFF_LEVELS_MAX,
};
use crate::trading::Output;
use std::rc::Rc;
use tradsys_engine::order::{MarketId, UserId};

/// On a market's shard, the subscriptions of other instances of the
/// cluster are pseudo-shards from here up: instance `i` is
/// `REMOTE_SHARDS + i`. Events of a stream with any of them go once to the
/// links (`server::link`), which every other instance reads.
pub(crate) const REMOTE_SHARDS: usize = 1 << 20;
/// The shard of an instance that stands for another instance's markets:
/// its shards subscribe there, it subscribes at the owner through the
/// links and relays what the owner publishes.
pub(crate) const RELAY_SHARD: usize = 0;

/// How often the fast (100 ms) periodic streams are computed; the slow
/// (1000 ms) ones, tickers, klines and listen key expiry every
/// `STREAM_SLOW_TICKS` ticks.
pub(super) const STREAM_TICK_MS: u64 = 100;
const STREAM_SLOW_TICKS: u64 = 10;

/// Files trades of this shard's books in their markets' data and
/// publishes them, and the aggregates they completed, to the trade and
/// aggTrade streams. Aggregates are complete after an engine step: a
/// taker's trades all come from one matching call.
pub(super) fn record_trades(shard: &Shard, trades: &[tradsys_engine::msg::Fill]) {
    let mut agg_from: Vec<(MarketId, u64)> = Vec::new();
    {
        let streams = shard.streams.borrow();
        let mut data = shard.market_data.borrow_mut();
        for fill in trades {
            let Some(market) = data[usize::from(fill.market.0)].as_mut() else {
                continue;
            };
            let key = StreamKey {
                market: fill.market,
                kind: StreamKind::AggTrade,
            };
            if !agg_from.iter().any(|(m, _)| *m == fill.market) && streams.has_shards(key) {
                agg_from.push((fill.market, market.next_agg_id()));
            }
            market.record(&TapeTrade::from(fill));
        }
    }
    for fill in trades {
        publish(shard, StreamEvent::Trade(*fill));
    }
    for (market, from_id) in agg_from {
        let aggs = shard.market_data.borrow()[usize::from(market.0)]
            .as_ref()
            .map(|data| data.aggs_since(from_id, trades.len()))
            .unwrap_or_default();
        for agg in aggs {
            publish(shard, StreamEvent::AggTrade { market, agg });
        }
    }
}

/// Subscribes a local connection's queue to `key`. The shard's first
/// subscriber asks the market's shard for the stream and waits until
/// it is sent, so nothing after this returns is missed.
pub(crate) async fn subscribe(shard: &Shard, key: StreamKey, out: &Rc<Outbound>) -> Result<(), CallError> {
    if !shard.streams.borrow_mut().subscribe_local(key, out) {
        return Ok(());
    }
    for owner in stream_owners(shard, key) {
        if owner == shard.index {
            attach_stream(shard, key, shard.index);
            continue;
        }
        if let Err(e) = shard
            .call_peer(
                owner,
                Call::Subscribe {
                    key,
                    shard: shard.index,
                },
            )
            .await
        {
            unsubscribe(shard, key, out);
            return Err(e);
        }
    }
    Ok(())
}

/// The shards that produce `key`'s events: the market's, or every
/// shard for the streams of all markets.
fn stream_owners(shard: &Shard, key: StreamKey) -> Vec<usize> {
    if key.is_all_markets() {
        return (0..shard.mesh.shards()).collect();
    }
    if shard.trading().market_elsewhere(key.market).is_some() {
        return vec![RELAY_SHARD];
    }
    vec![shard.trading().market_shard(key.market) as usize]
}

/// Drops a local subscription; the shard's last one tells the market's
/// shard to stop sending the stream here.
pub(crate) fn unsubscribe(shard: &Shard, key: StreamKey, out: &Rc<Outbound>) {
    if !shard.streams.borrow_mut().unsubscribe_local(key, out) {
        return;
    }
    for owner in stream_owners(shard, key) {
        if owner == shard.index {
            remove_shard(shard, key, shard.index);
        } else {
            let msg = StreamMsg::Unsubscribe {
                key,
                shard: shard.index,
            };
            let _ = shard.mesh.send(owner, ShardMsg::Stream(msg));
        }
    }
}

/// On the market's shard: stops sending `key` to shard `to` (or to
/// another instance, `REMOTE_SHARDS + i`). On the relay shard, the last
/// of its shards gone from another instance's stream ends the
/// subscription there.
pub(crate) fn remove_shard(shard: &Shard, key: StreamKey, to: usize) {
    let (empty, no_local) = {
        let mut streams = shard.streams.borrow_mut();
        streams.remove_shard(key, to);
        (!streams.has_shards(key), !has_local_shards(&streams, key))
    };
    if key.is_all_markets() {
        // The relay's last shard gone: the other instances stop sending
        // their part of the stream here.
        if shard.index == RELAY_SHARD && to < REMOTE_SHARDS && no_local {
            subscribe_every_other_instance(shard, key, false);
        }
        return;
    }
    let owner = shard.trading().market_elsewhere(key.market).map(|(owner, _)| owner);
    if let (true, Some(owner), Some(link)) = (empty, owner, &shard.link) {
        link.subscribe_remote(owner, key.name(&shard.trading()), false);
    }
}

/// Whether any shard of this instance (not another instance) takes `key`.
fn has_local_shards(streams: &crate::streams::Registry, key: StreamKey) -> bool {
    streams.shards_of(key).iter().any(|&s| s < REMOTE_SHARDS)
}

/// Asks every other instance of the cluster to send (`on`) or stop
/// sending its part of a stream of every market.
fn subscribe_every_other_instance(shard: &Shard, key: StreamKey, on: bool) {
    let (Some(link), Some(place)) = (&shard.link, crate::cluster::process_place()) else {
        return;
    };
    let name = key.name(&shard.trading());
    for peer in (0..place.map.instances.len()).filter(|&i| i != place.me) {
        link.subscribe_remote(peer, name.clone(), on);
    }
}

/// On the market's shard: starts sending `key` to shard `to` (or to
/// another instance, `REMOTE_SHARDS + i`). A stream's first subscriber
/// starts its depth chain or book ticker from now. On the relay shard, a
/// stream of another instance's market is asked of that instance.
pub(crate) fn attach_stream(shard: &Shard, key: StreamKey, to: usize) {
    if to >= REMOTE_SHARDS {
        shard.streams.borrow_mut().renew_lease(key, to, crate::clock::now_ms());
    }
    let first_local = to < REMOTE_SHARDS && !has_local_shards(&shard.streams.borrow(), key);
    let first = shard.streams.borrow_mut().add_shard(key, to);
    if key.is_all_markets() {
        // Every shard sends its own markets' part; the relay's first shard
        // also asks the other instances for theirs.
        if shard.index == RELAY_SHARD && first_local {
            subscribe_every_other_instance(shard, key, true);
        }
        return;
    }
    if !first {
        return;
    }
    let owner = shard.trading().market_elsewhere(key.market).map(|(owner, _)| owner);
    if let Some(owner) = owner {
        if let Some(link) = &shard.link {
            link.subscribe_remote(owner, key.name(&shard.trading()), true);
        }
        return;
    }
    if let StreamKind::Kline(interval) = key.kind {
        let data = shard.market_data.borrow();
        let newest = data[usize::from(key.market.0)]
            .as_ref()
            .and_then(|d| d.newest_candle(interval));
        let now_ms = crate::clock::now_ms();
        shard
            .streams
            .borrow_mut()
            .kline_start(key.market, interval, newest, now_ms);
        return;
    }
    let trading = shard.trading();
    let Some(book) = trading.book(key.market) else { return };
    let mut streams = shard.streams.borrow_mut();
    match key.kind {
        StreamKind::Depth { fast } => {
            let (mut bids, mut asks) = (Vec::new(), Vec::new());
            let update_id = book.depth(DEPTH_DIFF_LEVELS_MAX, &mut bids, &mut asks);
            streams.depth_start(key.market, fast, update_id, bids, asks);
        }
        StreamKind::BookTicker => {
            streams.book_ticker_changed(key.market, book.update_id());
        }
        _ => {}
    }
}

/// Sends `event` once to each shard subscribed to its stream, and once to
/// the links when other instances subscribe to it.
fn publish(shard: &Shard, event: StreamEvent) {
    let shards = shard.streams.borrow().shards_of(event.key()).to_vec();
    // A relayed event came from its owner's instance, which sends it to
    // every instance subscribed: never sent on again.
    let relayed = matches!(event, StreamEvent::Relayed { .. });
    if !relayed && shards.iter().any(|&to| to >= REMOTE_SHARDS) {
        if let Some(link) = &shard.link {
            let trading = shard.trading();
            let mut w = JsonWriter::with_capacity(256);
            event.write(&trading, &mut w);
            link.publish_md(event.key().name(&trading), w.buf);
        }
    }
    for to in shards {
        if to >= REMOTE_SHARDS {
            continue;
        }
        if to == shard.index {
            publish_local(shard, &event);
        } else {
            let msg = StreamMsg::Event(Box::new(event.clone()));
            if shard.mesh.send(to, ShardMsg::Stream(msg)).is_ok() {
                shard.metrics.borrow_mut().mesh_sent += 1;
            }
        }
    }
}

/// Subscribes a user data stream connection by its listen key; the
/// user's shard checks the key and the user's connection cap.
pub(crate) async fn subscribe_user(shard: &Shard, key: &str, out: &Rc<Outbound>) -> Result<UserAttach, CallError> {
    let Some(user) = crate::auth::user_of_key(key.as_bytes()) else {
        return Ok(UserAttach::UnknownKey);
    };
    let owner = shard.trading().user_shard(user) as usize;
    let attach = if owner == shard.index {
        attach_user(shard, key, shard.index)
    } else {
        let call = Call::UserStream {
            key: key.to_string(),
            shard: shard.index,
        };
        match shard.call_peer(owner, call).await? {
            Reply::UserStream(attach) => attach,
            _ => return Err(CallError::Mismatch(owner)),
        }
    };
    // The user's shard counted the connection for the user it found.
    if let UserAttach::Attached(user) = attach {
        let delivery = Delivery::ListenKey(Rc::from(key));
        shard.streams.borrow_mut().subscribe_user_local(user, delivery, out);
    }
    Ok(attach)
}

/// A user data stream connection closed; the user's shard counts it off.
pub(crate) fn unsubscribe_user(shard: &Shard, user: UserId, out: &Rc<Outbound>) {
    shard.streams.borrow_mut().unsubscribe_user_local(user, out);
    let owner = shard.trading().user_shard(user) as usize;
    if owner == shard.index {
        shard.streams.borrow_mut().remove_user_connection(user, shard.index);
    } else {
        let msg = StreamMsg::UserUnsubscribe {
            user,
            shard: shard.index,
        };
        let _ = shard.mesh.send(owner, ShardMsg::Stream(msg));
    }
}

/// On the user's shard: a live `key` under the user's connection cap
/// starts sending its user's events to shard `to`.
pub(crate) fn attach_user(shard: &Shard, key: &str, to: usize) -> UserAttach {
    let Some(user) = shard.trading().listen_key_user(key, crate::clock::now_ms()) else {
        return UserAttach::UnknownKey;
    };
    match attach_user_id(shard, user, to) {
        true => UserAttach::Attached(user),
        false => UserAttach::TooMany,
    }
}

/// On the user's shard: `user`'s events start going to shard `to` too,
/// unless the user holds `ws_user_data_connections_per_user_max` streams.
pub(crate) fn attach_user_id(shard: &Shard, user: UserId, to: usize) -> bool {
    let max = shard.ws.user_data_connections_per_user_max;
    if !shard.streams.borrow_mut().add_user_connection(user, to, max) {
        // Refused with 429 like the other connection limits.
        shard.metrics.borrow_mut().rate_limited += 1;
        return false;
    }
    true
}

/// Sends the order changes, transfers and closed listen keys of this
/// shard's users, once each, to each shard holding the user's stream
/// connections.
pub(super) fn user_events(shard: &Shard, out: &mut Output) {
    if out.user_updates.is_empty()
        && out.balance_updates.is_empty()
        && out.closed_listen_keys.is_empty()
        && out.mmp_events.is_empty()
        && out.list_updates.is_empty()
    {
        return;
    }
    let now_ms = crate::clock::now_ms();
    let hooked = !shard.webhooks.borrow().is_empty();
    for update in out.user_updates.drain(..) {
        let event = UserEvent::Order(update);
        if hooked {
            webhook_event(shard, &event, now_ms);
        }
        publish_user_event(shard, event, now_ms);
    }
    for update in out.balance_updates.drain(..) {
        let event = UserEvent::Balance(update);
        if hooked {
            webhook_event(shard, &event, now_ms);
        }
        publish_user_event(shard, event, now_ms);
    }
    for (user, key) in out.closed_listen_keys.drain(..) {
        publish_user_event(shard, UserEvent::KeyClosed { user, key }, now_ms);
    }
    for event in out.mmp_events.drain(..) {
        publish_user_event(shard, UserEvent::Mmp(event), now_ms);
    }
    for update in out.list_updates.drain(..) {
        publish_user_event(shard, UserEvent::List(update), now_ms);
    }
}

/// Webhook events waiting for the job queue, per shard, at most.
const WEBHOOK_OUTBOX_MAX: usize = 65_536;

/// A fill or a balance change of a user with a webhook: its payloads join
/// the outbox that `server::jobs` moves to the job queue in order.
fn webhook_event(shard: &Shard, event: &UserEvent, time_ms: u64) {
    let user = event.user();
    let wanted = match event {
        UserEvent::Order(update) => update.trade.is_some(),
        UserEvent::Balance(_) => true,
        UserEvent::KeyClosed { .. } | UserEvent::Mmp(_) | UserEvent::List(_) => false,
    };
    if !wanted || shard.webhooks.borrow().get(user).is_none() {
        return;
    }
    let Some(payloads) = crate::streams::user_event_payloads(event, time_ms, &shard.trading()) else {
        return;
    };
    let mut outbox = shard.webhook_outbox.borrow_mut();
    for payload in payloads {
        let delivery = shard.webhooks.borrow_mut().delivery(user, payload);
        let json = delivery.and_then(|d| serde_json::to_string(&d).ok());
        match json {
            Some(json) if outbox.len() < WEBHOOK_OUTBOX_MAX => outbox.push_back((user, json)),
            _ => shard.metrics.borrow_mut().webhook_events_dropped += 1,
        }
    }
    shard.webhook_signal.signal(1);
}

fn publish_user_event(shard: &Shard, event: UserEvent, time_ms: u64) {
    let shards = shard.streams.borrow().user_shards_of(event.user());
    for to in shards {
        if to == shard.index {
            publish_user_local(shard, &event, time_ms);
        } else {
            let msg = StreamMsg::User(Box::new(event.clone()), time_ms);
            if shard.mesh.send(to, ShardMsg::Stream(msg)).is_ok() {
                shard.metrics.borrow_mut().mesh_sent += 1;
            }
        }
    }
}

pub(super) fn publish_user_local(shard: &Shard, event: &UserEvent, time_ms: u64) {
    let overflowed = shard
        .streams
        .borrow()
        .publish_user_local(event, time_ms, &shard.trading());
    if overflowed > 0 {
        shard.metrics.borrow_mut().ws_slow_closed += overflowed as u64;
    }
}

/// Expires the listen keys past their time; `flush_engine` then tells
/// their connections. The sweep runs only while users of this shard have
/// connections.
fn expire_listen_keys(shard: &Shard, now_ms: u64) {
    if shard.streams.borrow().has_user_streams() {
        shard.trading_mut().expire_listen_keys(now_ms);
        shard.flush_engine();
    }
}

/// Queues `event` for this shard's subscribers; a queue it overflows
/// counts as a slow consumer (its connection closes with 1008).
/// On the relay shard: an event of another instance's market, as that
/// instance rendered it, to this instance's subscribers.
pub(crate) fn publish_relayed(shard: &Shard, name: &str, payload: String) {
    let Some(key) = StreamKey::parse(name, &shard.trading()) else {
        return;
    };
    publish(shard, StreamEvent::Relayed { key, payload });
}

/// The links to other instances are down: the streams of their markets
/// end on every shard, each subscriber told why in a last event. Those
/// that subscribed since `before` (the moment the link found out) are
/// spared: their subscription was asked for again after it.
pub(crate) fn close_remote_streams(shard: &Shard, reason: &str, before: std::time::Instant) {
    let keys: Vec<StreamKey> = {
        let trading = shard.trading();
        let streams = shard.streams.borrow();
        streams
            .local_keys()
            .into_iter()
            .filter(|k| k.is_all_markets() || trading.market_elsewhere(k.market).is_some())
            .collect()
    };
    for key in keys {
        let trading = shard.trading();
        let mut w = JsonWriter::with_capacity(256);
        w.begin_object()
            .field_str("e", "streamClosed")
            .field_uint("E", crate::clock::now_ms());
        // A stream of every market has no one symbol.
        if !key.is_all_markets() {
            w.field_str("s", &trading.spec(key.market).symbol);
        }
        w.field_str("stream", &key.name(&trading))
            .field_str("reason", reason)
            .end_object();
        let overflowed = shard
            .streams
            .borrow()
            .close_local(key, w.buf.as_bytes(), &trading, before);
        shard.metrics.borrow_mut().ws_slow_closed += overflowed as u64;
    }
}

pub(super) fn publish_local(shard: &Shard, event: &StreamEvent) {
    let overflowed = shard.streams.borrow().publish_local(event, &shard.trading());
    if overflowed > 0 {
        shard.metrics.borrow_mut().ws_slow_closed += overflowed as u64;
    }
}

pub(super) fn book_tickers(shard: &Shard) {
    let keys = shard.streams.borrow().subscribed(|k| k == StreamKind::BookTicker);
    for key in keys {
        let event = {
            let trading = shard.trading();
            let Some(book) = trading.book(key.market) else { continue };
            if !shard
                .streams
                .borrow_mut()
                .book_ticker_changed(key.market, book.update_id())
            {
                continue;
            }
            StreamEvent::BookTicker {
                market: key.market,
                update_id: book.update_id(),
                bid: book.best_bid(),
                ask: book.best_ask(),
            }
        };
        publish(shard, event);
    }
}

/// Runs the periodic streams due at tick `tick` of the stream timer:
/// the 100 ms ones at every tick, the 1000 ms ones at every tenth.
/// Each costs a look-up when nobody subscribes.
pub(super) fn periodic(shard: &Shard, tick: u64, now_ms: u64) {
    let slow_due = tick % STREAM_SLOW_TICKS == 0;
    depth(shard, slow_due, now_ms);
    partial_depth(shard, slow_due);
    if slow_due {
        remote_leases(shard, tick, now_ms);
        tickers(shard, now_ms);
        all_tickers(shard, StreamKind::AllTickers, now_ms);
        all_tickers(shard, StreamKind::AllMiniTickers, now_ms);
        klines(shard, now_ms);
        expire_listen_keys(shard, now_ms);
    }
}

/// Other instances' stream subscriptions are leases: each shard stops
/// sending to an instance that did not renew one within
/// `link_stream_lease_ms` (it crashed, or was cut off and ended its
/// streams), and the relay renews this instance's own every third of it.
fn remote_leases(shard: &Shard, tick: u64, now_ms: u64) {
    let Some(link) = &shard.link else { return };
    let lease_ms = link.stream_lease_ms();
    let expired = shard.streams.borrow().expired_leases(now_ms.saturating_sub(lease_ms));
    for (key, to) in expired {
        remove_shard(shard, key, to);
        // Still subscribed there, it would miss events without knowing.
        link.publish_lapse(key.name(&shard.trading()), to - REMOTE_SHARDS);
    }
    // A multiple of the slow tick this runs on, at most a third of the lease.
    let every_ticks = (lease_ms / 3 / STREAM_TICK_MS / STREAM_SLOW_TICKS).max(1) * STREAM_SLOW_TICKS;
    if shard.index == RELAY_SHARD && tick % every_ticks == 0 {
        renew_remote_subscriptions(shard);
    }
}

/// On the relay shard: asks again, of the instances that own them, for
/// every stream of theirs this instance's connections take.
pub(crate) fn renew_remote_subscriptions(shard: &Shard) {
    let Some(link) = &shard.link else { return };
    let renewing: Vec<StreamKey> = {
        let streams = shard.streams.borrow();
        let trading = shard.trading();
        streams
            .subscribed(|_| true)
            .into_iter()
            .filter(|&k| k.is_all_markets() || trading.market_elsewhere(k.market).is_some())
            .filter(|&k| has_local_shards(&streams, k))
            .collect()
    };
    for key in renewing {
        if key.is_all_markets() {
            subscribe_every_other_instance(shard, key, true);
        } else if let Some((owner, _)) = shard.trading().market_elsewhere(key.market) {
            link.subscribe_remote(owner, key.name(&shard.trading()), true);
        }
    }
}

/// Sends the top levels of each subscribed `@depth<N>` stream due.
fn partial_depth(shard: &Shard, slow_due: bool) {
    let keys = shard
        .streams
        .borrow()
        .subscribed(|k| matches!(k, StreamKind::PartialDepth { fast, .. } if fast || slow_due));
    for key in keys {
        let StreamKind::PartialDepth { levels, fast } = key.kind else {
            continue;
        };
        let event = {
            let trading = shard.trading();
            let Some(book) = trading.book(key.market) else { continue };
            let (mut bids, mut asks) = (Vec::new(), Vec::new());
            let update_id = book.depth(usize::from(levels), &mut bids, &mut asks);
            StreamEvent::PartialDepth {
                market: key.market,
                levels,
                fast,
                update_id,
                bids,
                asks,
            }
        };
        publish(shard, event);
    }
}

/// The 24 h ticker of `market` (owned here) at `now_ms`, with its
/// book's best bid and ask; `None` for a market that never traded.
fn ticker_entry(shard: &Shard, market: MarketId, now_ms: u64) -> Option<TickerEntry> {
    let data = shard.market_data.borrow();
    let stats = data[usize::from(market.0)].as_ref()?.ticker_24h(now_ms)?;
    let trading = shard.trading();
    let book = trading.book(market)?;
    Some(TickerEntry {
        market,
        stats,
        bid: book.best_bid().unwrap_or_default(),
        ask: book.best_ask().unwrap_or_default(),
    })
}

/// Sends each subscribed `@ticker` and `@miniTicker` whose figures
/// changed since it last sent them.
fn tickers(shard: &Shard, now_ms: u64) {
    let keys = shard
        .streams
        .borrow()
        .subscribed(|k| matches!(k, StreamKind::Ticker | StreamKind::MiniTicker));
    for key in keys {
        let Some(ticker) = ticker_entry(shard, key.market, now_ms) else {
            continue;
        };
        if !shard.streams.borrow_mut().ticker_changed(key.kind, &ticker) {
            continue;
        }
        let mini = key.kind == StreamKind::MiniTicker;
        publish(
            shard,
            StreamEvent::Ticker {
                mini,
                time_ms: now_ms,
                ticker,
            },
        );
    }
}

/// This shard's part of `!ticker@arr` or `!miniTicker@arr`: the
/// tickers of its markets that changed since the last second.
fn all_tickers(shard: &Shard, kind: StreamKind, now_ms: u64) {
    let key = StreamKey {
        market: crate::streams::ALL_MARKETS,
        kind,
    };
    if !shard.streams.borrow().has_shards(key) {
        return;
    }
    let markets: Vec<MarketId> = {
        let data = shard.market_data.borrow();
        (0..data.len())
            .filter(|&m| data[m].is_some())
            .map(|m| MarketId(m as u16))
            .collect()
    };
    let tickers: Vec<TickerEntry> = markets
        .into_iter()
        .filter_map(|market| ticker_entry(shard, market, now_ms))
        .filter(|ticker| shard.streams.borrow_mut().ticker_changed(kind, ticker))
        .collect();
    if tickers.is_empty() {
        return;
    }
    let mini = kind == StreamKind::AllMiniTickers;
    publish(
        shard,
        StreamEvent::AllTickers {
            mini,
            time_ms: now_ms,
            tickers,
        },
    );
}

/// Sends the kline updates due: a candle that changed since its last
/// update, and once more, with `x` true, when it closes.
fn klines(shard: &Shard, now_ms: u64) {
    let keys = shard.streams.borrow().subscribed(|k| matches!(k, StreamKind::Kline(_)));
    for key in keys {
        let StreamKind::Kline(interval) = key.kind else {
            continue;
        };
        let updates = {
            let data = shard.market_data.borrow();
            let Some(data) = data[usize::from(key.market.0)].as_ref() else {
                continue;
            };
            shard
                .streams
                .borrow_mut()
                .kline_updates(key.market, interval, data, now_ms)
        };
        for (candle, closed) in updates {
            publish(
                shard,
                StreamEvent::Kline {
                    market: key.market,
                    interval,
                    candle,
                    closed,
                    time_ms: now_ms,
                },
            );
        }
    }
}

/// Computes and sends the depth diffs due.
fn depth(shard: &Shard, slow_due: bool, now_ms: u64) {
    let keys = shard
        .streams
        .borrow()
        .subscribed(|k| k == StreamKind::Depth { fast: true } || (slow_due && k == StreamKind::Depth { fast: false }));
    for key in keys {
        let StreamKind::Depth { fast } = key.kind else { continue };
        let diff = {
            let trading = shard.trading();
            let Some(book) = trading.book(key.market) else { continue };
            let (mut bids, mut asks) = (Vec::new(), Vec::new());
            let update_id = book.depth(DEPTH_DIFF_LEVELS_MAX, &mut bids, &mut asks);
            shard
                .streams
                .borrow_mut()
                .depth_diff(key.market, fast, update_id, now_ms, bids, asks)
        };
        if let Some(diff) = diff {
            publish(shard, StreamEvent::Depth(diff));
        }
    }
}
