"""The WebSocket API (/ws-api/v3) with real clients: raw frames through the
`websockets` package, and binance-connector's SpotWebsocketAPIClient, both
unmodified, against tradsys on loopback.

Every answer is checked in Binance's envelope (`id`, `status`, `result` or
`error`, `rateLimits`); every result against its REST twin on the same
state, or against amounts computed exactly (money.py); user data events
inside `{"subscriptionId": n, "event": {...}}` field by field.

Signed requests carry `apiKey`, `timestamp` and `signature` over every other
parameter sorted by name (`signed_params`). Only HMAC keys exist yet:
`session.logon`, and `userDataStream.subscribe` which needs it, take Ed25519
keys, so their tests belong next to `test_user_data_subscription_events`
once such keys can be created; `sign_payload` is where a key type's
signature goes.
"""

import collections
import json
import queue
import re
import time
import urllib.parse

import pytest
from binance.websocket.spot.websocket_api import SpotWebsocketAPIClient
from websockets.sync.client import connect

from conftest import SHARDS, http, sign
from money import COMMISSION, D, ZERO, commission, fmt, quote_amount

SYMBOL = "BTCUSDT"
RATE = COMMISSION[SYMBOL]
WAIT_S = 10
PATH = "/ws-api/v3"
MINUTE_MS, TEN_S_MS, DAY_MS = 60_000, 10_000, 86_400_000
# How long binance-connector's reader thread waits for a frame before it
# gives up (its socket timeout); well above any wait of a test.
CONNECTOR_IDLE_S = 60
# Connections opened to find one on each shard before giving up.
SHARD_ATTEMPTS = 40


def now_ms():
    return int(time.time() * 1000)


def ws_api_url(tradsys, query=""):
    return tradsys.base_url.replace("http://", "ws://", 1) + PATH + query


# --------------------------------------------------------------------------
# Signing, as Binance documents it for this API.


def payload_value(value):
    """A parameter's value as the signature payload spells it: JSON true and
    false in lower case, everything else as sent."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sign_payload(user, payload):
    """The signature of `payload` with the user's key (HMAC-SHA256)."""
    _user_id, _api_key, secret = user
    return sign(secret, payload)


def signed_params(user, params=None):
    """params with apiKey, timestamp (unless given) and the signature over
    all of them sorted by name."""
    _user_id, api_key, _secret = user
    signed = dict(params or {})
    signed.setdefault("timestamp", now_ms())
    signed["apiKey"] = api_key
    payload = "&".join(f"{name}={payload_value(value)}" for name, value in sorted(signed.items()))
    signed["signature"] = sign_payload(user, payload)
    return signed


# --------------------------------------------------------------------------
# One /ws-api/v3 connection.


class WsApi:
    """Requests and their answers on one connection; subscription events
    that arrive in between are kept, in order, for `event()`."""

    def __init__(self, tradsys, query=""):
        self.ws = connect(ws_api_url(tradsys, query), open_timeout=WAIT_S).__enter__()
        self.events = collections.deque()
        self.ids = 0

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()

    def close(self):
        self.ws.close()

    def recv(self):
        return json.loads(self.ws.recv(timeout=WAIT_S))

    def send(self, method, params=None, id=...):
        """Sends one request; returns its id (a fresh integer unless given)."""
        if id is ...:
            self.ids += 1
            id = self.ids
        message = {"id": id, "method": method}
        if params is not None:
            message["params"] = params
        self.ws.send(json.dumps(message))
        return id

    def answer(self):
        """The next answer; events before it are kept."""
        while True:
            frame = self.recv()
            if "subscriptionId" in frame:
                assert list(frame) == ["subscriptionId", "event"], frame
                self.events.append(frame)
                continue
            return frame

    def call(self, method, params=None, id=...):
        id = self.send(method, params, id)
        answer = self.answer()
        assert answer["id"] == id, (method, answer)
        return answer

    def ok(self, method, params=None):
        """The result of a request that must succeed."""
        answer = self.call(method, params)
        assert answer["status"] == 200, (method, params, answer)
        return answer["result"]

    def signed(self, method, user, params=None):
        return self.call(method, signed_params(user, params))

    def signed_ok(self, method, user, params=None):
        return self.ok(method, signed_params(user, params))

    def event(self):
        """The next subscription event frame; no answer may come first."""
        if self.events:
            return self.events.popleft()
        frame = self.recv()
        assert "subscriptionId" in frame, f"an answer where an event was expected: {frame!r}"
        assert list(frame) == ["subscriptionId", "event"], frame
        return frame


# --------------------------------------------------------------------------
# REST twins, with the standard library.


def rest_public(tradsys, path, params=None):
    query = urllib.parse.urlencode(params or {})
    status, body = http("GET", f"{tradsys.base_url}{path}" + (f"?{query}" if query else ""))
    assert status == 200, (path, params, body)
    return body


def rest_signed(tradsys, method, path, user, params=None):
    _user_id, api_key, secret = user
    status, body = tradsys.signed(method, path, api_key, secret, params)
    assert status == 200, (method, path, params, body)
    return body


def rest_order(tradsys, user, side, qty, price, resp="FULL"):
    return rest_signed(tradsys, "POST", "/api/v3/order", user, {
        "symbol": SYMBOL, "side": side, "type": "LIMIT", "timeInForce": "GTC",
        "quantity": qty, "price": price, "newOrderRespType": resp,
    })


def assert_same_order_counts(first, then, first_sent_ms, then_received_ms):
    """Two reads of the ORDERS counts (account.rateLimits.orders, GET
    /api/v3/rateLimit/order) agree, but a window that turned over between
    them starts again at 0."""
    assert [without(r, "count") for r in first] == [without(r, "count") for r in then], (first, then)
    for a, b in zip(first, then):
        interval_ms = {"SECOND": 1000, "MINUTE": MINUTE_MS, "DAY": DAY_MS}[a["interval"]] * a["intervalNum"]
        allowed = {a["count"]}
        if first_sent_ms // interval_ms != then_received_ms // interval_ms:
            allowed.add(0)
        assert b["count"] in allowed, (a, b)


def without(value, *names):
    """A dict without the fields that are times of the request itself."""
    return {k: v for k, v in value.items() if k not in names}


# --------------------------------------------------------------------------
# Shards: which one owns a user, which one serves a connection.


def user_shard(user_id, shards=SHARDS):
    """The shard owning a user's account: the engine's `owner_of`
    (crates/engine/src/account.rs), a SplitMix64 finaliser of the id."""
    mask = (1 << 64) - 1
    z = (user_id + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return z % shards


def users_on_every_shard(tradsys, name, deposits):
    """One user owned by each shard: {shard: (user_id, api_key, secret)}."""
    users = {}
    for i in range(64):
        user = tradsys.create_user(f"{name}-{i}", deposits)
        users.setdefault(user_shard(user[0]), user)
        if len(users) == SHARDS:
            return users
    raise AssertionError(f"no user on each of {SHARDS} shards after 64 users")


def open_ws_per_shard(tradsys):
    """One /ws-api/v3 connection served by each shard: {shard: WsApi}.

    The kernel spreads connections over the shards (SO_REUSEPORT); which
    shard took one shows in /metrics as tradsys_ws_connections_open going up
    by one there. A reading that is not exactly that (a connection of an
    earlier test still closing) leaves the connection unclassified."""

    def open_per_shard():
        status, text = http("GET", tradsys.base_url + "/metrics")
        assert status == 200, text
        found = re.findall(r'^tradsys_ws_connections_open\{shard="(\d+)"\} (\d+)$', text, re.M)
        counts = {int(s): int(n) for s, n in found}
        assert sorted(counts) == list(range(SHARDS)), found
        return counts

    by_shard, spare = {}, []
    try:
        for _ in range(SHARD_ATTEMPTS):
            before = open_per_shard()
            conn = WsApi(tradsys)
            after = open_per_shard()
            grew = [s for s in range(SHARDS) if after[s] - before[s] == 1]
            steady = all(after[s] == before[s] for s in range(SHARDS) if s not in grew)
            if len(grew) == 1 and steady and grew[0] not in by_shard:
                by_shard[grew[0]] = conn
            else:
                spare.append(conn)
            if len(by_shard) == SHARDS:
                return by_shard
        raise AssertionError(f"no connection on each shard after {SHARD_ATTEMPTS}: {sorted(by_shard)}")
    except BaseException:
        for conn in by_shard.values():
            conn.close()
        raise
    finally:
        for conn in spare:
            conn.close()


# --------------------------------------------------------------------------
# rateLimits.


class Window:
    """One fixed-window counter as `rateLimits` reports it. Windows start at
    multiples of their length (epoch time), so a count grows by exactly the
    request's cost unless a window boundary passed since the previous
    request was sent; then it may also have restarted at the cost."""

    def __init__(self, interval_ms, count=None):
        self.interval_ms = interval_ms
        self.count = count  # None: not known yet
        self.since_ms = None  # None with a count: known in any window

    def check(self, count, cost, sent_ms, received_ms, what):
        if self.count is not None:
            allowed = {self.count + cost}
            if self.since_ms is not None and self.since_ms // self.interval_ms != received_ms // self.interval_ms:
                allowed.add(cost)
            assert count in allowed, f"{what}: count {count}, expected one of {sorted(allowed)}"
        self.count, self.since_ms = count, sent_ms


class RateLimits:
    """Checks each answer's `rateLimits` against the limits exchangeInfo
    publishes and the counts the requests of one connection add up to."""

    def __init__(self, tradsys):
        limits = {(r["rateLimitType"], r["interval"], r["intervalNum"]): r["limit"]
                  for r in rest_public(tradsys, "/api/v3/exchangeInfo")["rateLimits"]}
        self.weight_limit = limits[("REQUEST_WEIGHT", "MINUTE", 1)]
        self.orders_10s_limit = limits[("ORDERS", "SECOND", 10)]
        self.orders_day_limit = limits[("ORDERS", "DAY", 1)]
        self.weight = Window(MINUTE_MS)
        # A new user has placed no order in any window.
        self.orders_10s = Window(TEN_S_MS, 0)
        self.orders_day = Window(DAY_MS, 0)

    def check(self, answer, weight, orders, sent_ms, received_ms, what):
        got = answer["rateLimits"]
        names = [(r["rateLimitType"], r["interval"], r["intervalNum"]) for r in got]
        expected_names = [("REQUEST_WEIGHT", "MINUTE", 1)]
        if orders:
            expected_names = [("ORDERS", "SECOND", 10), ("ORDERS", "DAY", 1)] + expected_names
        assert names == expected_names, (what, got)
        for r in got:
            assert list(r) == ["rateLimitType", "interval", "intervalNum", "limit", "count"], (what, r)
            kind = (r["rateLimitType"], r["interval"])
            limit, window, cost = {
                ("REQUEST_WEIGHT", "MINUTE"): (self.weight_limit, self.weight, weight),
                ("ORDERS", "SECOND"): (self.orders_10s_limit, self.orders_10s, 1),
                ("ORDERS", "DAY"): (self.orders_day_limit, self.orders_day, 1),
            }[kind]
            assert r["limit"] == limit, (what, r)
            window.check(r["count"], cost, sent_ms, received_ms, f"{what} {kind}")


# --------------------------------------------------------------------------
# Tests.

DEPOSITS = {"BTC": "10", "USDT": "1000000"}


def test_every_method_answers_in_binance_envelope(tradsys):
    """Each method tradsys serves (session.logon and userDataStream.subscribe
    aside: Ed25519 only) answers with its id echoed (integer, string or
    null), status 200, a result and `rateLimits` whose counts add up to the
    methods' weights (and, for orders, the ORDERS counts)."""
    user = tradsys.create_user("ws-envelope", DEPOSITS)
    limits = RateLimits(tradsys)
    order = {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "0.00100", "price": "10000.00"}
    market = {"symbol": SYMBOL}
    seen = []

    with WsApi(tradsys) as conn:
        def check(method, params, weight, orders=False, signed=False):
            n = len(seen)
            id = [n + 1, f"req-{n}", None][n % 3]
            sent = now_ms()
            answer = conn.call(method, signed_params(user, params) if signed else params, id=id)
            received = now_ms()
            assert list(answer) == ["id", "status", "result", "rateLimits"], (method, answer)
            assert (answer["id"], answer["status"]) == (id, 200), (method, answer)
            limits.check(answer, weight, orders, sent, received, method)
            seen.append(method)
            return answer["result"]

        assert check("ping", None, 1) == {}
        assert set(check("time", {}, 1)) == {"serverTime"}
        assert [s["symbol"] for s in check("exchangeInfo", market, 20)["symbols"]] == [SYMBOL]
        assert set(check("depth", {**market, "limit": 5}, 5)) == {"lastUpdateId", "bids", "asks"}
        assert isinstance(check("trades.recent", {**market, "limit": 5}, 25), list)
        assert isinstance(check("trades.historical", {**market, "limit": 5}, 25), list)
        assert isinstance(check("trades.aggregate", {**market, "limit": 5}, 4), list)
        assert isinstance(check("klines", {**market, "interval": "1m", "limit": 5}, 2), list)
        assert isinstance(check("uiKlines", {**market, "interval": "1m", "limit": 5}, 2), list)
        assert check("avgPrice", market, 2)["mins"] == 5
        assert check("ticker.24hr", market, 2)["symbol"] == SYMBOL
        assert check("ticker.price", market, 2)["symbol"] == SYMBOL
        assert check("ticker.book", market, 2)["symbol"] == SYMBOL
        assert check("order.test", order, 1, signed=True) == {}
        placed = check("order.place", order, 1, orders=True, signed=True)
        assert placed["status"] == "NEW"
        status = check("order.status", {**market, "orderId": placed["orderId"]}, 4, signed=True)
        assert (status["orderId"], status["status"]) == (placed["orderId"], "NEW")
        assert [o["orderId"] for o in check("openOrders.status", market, 6, signed=True)] == [placed["orderId"]]
        replaced = check("order.cancelReplace", {**order, "price": "10001.00", "cancelReplaceMode": "STOP_ON_FAILURE",
                                                 "cancelOrderId": placed["orderId"]}, 1, orders=True, signed=True)
        assert (replaced["cancelResult"], replaced["newOrderResult"]) == ("SUCCESS", "SUCCESS")
        new_id = replaced["newOrderResponse"]["orderId"]
        assert check("order.cancel", {**market, "orderId": new_id}, 1, signed=True)["status"] == "CANCELED"
        again = check("order.place", order, 1, orders=True, signed=True)
        canceled = check("openOrders.cancelAll", market, 1, signed=True)
        assert [(o["orderId"], o["status"]) for o in canceled] == [(again["orderId"], "CANCELED")]
        assert check("account.status", {}, 20, signed=True)["accountType"] == "SPOT"
        assert [(r["rateLimitType"], r["interval"], r["intervalNum"], r["limit"])
                for r in check("account.rateLimits.orders", {}, 40, signed=True)] == [
            ("ORDERS", "SECOND", 10, limits.orders_10s_limit), ("ORDERS", "DAY", 1, limits.orders_day_limit)]
        assert len(check("allOrders", market, 20, signed=True)) == 3
        assert check("myTrades", market, 20, signed=True) == []
        status = check("session.status", None, 2)
        assert (status["apiKey"], status["authorizedSince"], status["userDataStream"]) == (None, None, False)
        subscribed = check("userDataStream.subscribe.signature", {}, 2, signed=True)
        assert subscribed == {"subscriptionId": 0}
        assert check("session.subscriptions", None, 2) == [{"subscriptionId": 0}]
        assert check("userDataStream.unsubscribe", {"subscriptionId": 0}, 2) == {}
        assert conn.event()["event"]["e"] == "eventStreamTerminated"
        status = check("session.logout", None, 2)
        assert (status["apiKey"], status["userDataStream"]) == (None, False)
        assert not conn.events

    served = {"ping", "time", "exchangeInfo", "depth", "trades.recent", "trades.historical", "trades.aggregate",
              "klines", "uiKlines", "avgPrice", "ticker.24hr", "ticker.price", "ticker.book", "order.place",
              "order.test", "order.status", "order.cancel", "order.cancelReplace", "openOrders.status",
              "openOrders.cancelAll", "account.status", "account.rateLimits.orders", "allOrders", "myTrades",
              "session.status", "session.logout", "userDataStream.subscribe.signature",
              "userDataStream.unsubscribe", "session.subscriptions"}
    assert set(seen) == served


def test_rate_limits_left_out_by_url_or_by_request(tradsys):
    """`?returnRateLimits=false` leaves `rateLimits` out of every answer
    unless a request asks with `"returnRateLimits": true`; on a default
    connection `"returnRateLimits": false` leaves them out of that answer."""
    user = tradsys.create_user("ws-quiet", DEPOSITS)
    order = {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "0.00100", "price": "10000.00"}

    with WsApi(tradsys, "?returnRateLimits=false") as conn:
        quiet = [
            conn.call("ping"),
            conn.call("depth", {"symbol": SYMBOL, "limit": 5}),
            conn.signed("account.status", user),
            conn.signed("order.place", user, order),
            conn.signed("openOrders.cancelAll", user, {"symbol": SYMBOL}),
            conn.call("session.status"),
            conn.signed("userDataStream.subscribe.signature", user),
            conn.call("session.subscriptions"),
            conn.call("userDataStream.unsubscribe"),
        ]
        for answer in quiet:
            assert list(answer) == ["id", "status", "result"], answer
        assert quiet[5]["result"]["returnRateLimits"] is False
        bad = conn.call("account.status", {**signed_params(user), "signature": "0" * 64})
        assert list(bad) == ["id", "status", "error"], bad
        asked = conn.call("time", {"returnRateLimits": True})
        assert list(asked) == ["id", "status", "result", "rateLimits"], asked
        asked = conn.signed("account.status", user, {"returnRateLimits": True})
        assert [r["rateLimitType"] for r in asked["rateLimits"]] == ["REQUEST_WEIGHT"]
        assert conn.event()["event"]["e"] == "eventStreamTerminated"

    with WsApi(tradsys) as conn:
        assert conn.call("session.status")["result"]["returnRateLimits"] is True
        assert list(conn.call("ping", {"returnRateLimits": False})) == ["id", "status", "result"]
        answer = conn.signed("order.place", user, {**order, "returnRateLimits": False})
        assert list(answer) == ["id", "status", "result"], answer
        assert list(conn.signed("openOrders.cancelAll", user, {"symbol": SYMBOL, "returnRateLimits": False})) == [
            "id", "status", "result"]
        assert list(conn.call("session.subscriptions", {"returnRateLimits": False})) == ["id", "status", "result"]
        bad = conn.call("account.status", {**signed_params(user, {"returnRateLimits": False}), "signature": "0" * 64})
        assert list(bad) == ["id", "status", "error"], bad
        assert list(conn.call("ping")) == ["id", "status", "result", "rateLimits"]


def test_results_equal_rest_twins(tradsys):
    """On the same state, every read answers exactly what its REST twin
    answers (fields that are times of the request itself left out)."""
    maker = tradsys.create_user("ws-twin-maker", DEPOSITS)
    taker = tradsys.create_user("ws-twin-taker", DEPOSITS)
    # Trades at two prices (one taker order over two makers: one aggregate),
    # then resting orders on both sides of the book.
    rest_order(tradsys, maker, "SELL", "0.00100", "30100.00")
    rest_order(tradsys, maker, "SELL", "0.00200", "30100.00")
    rest_order(tradsys, taker, "BUY", "0.00300", "30100.00")
    rest_order(tradsys, maker, "BUY", "0.00150", "30050.00")
    rest_order(tradsys, taker, "SELL", "0.00100", "30050.00")
    resting = [rest_order(tradsys, maker, side, qty, price, resp="RESULT") for side, qty, price in
               [("BUY", "0.00400", "29900.00"), ("BUY", "0.00250", "29950.00"), ("SELL", "0.00300", "30300.00")]]
    open_eth = rest_signed(tradsys, "POST", "/api/v3/order", maker, {
        "symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.0100",
        "price": "1000.00", "newClientOrderId": "twin-eth"})
    last_trade = rest_public(tradsys, "/api/v3/trades", {"symbol": SYMBOL, "limit": 1})[0]["id"]
    symbols = json.dumps(["BTCUSDT", "ETHUSDT"], separators=(",", ":"))

    with WsApi(tradsys) as conn:
        public = [
            ("depth", "/api/v3/depth", {"symbol": SYMBOL}),
            ("depth", "/api/v3/depth", {"symbol": SYMBOL, "limit": 2}),
            ("trades.recent", "/api/v3/trades", {"symbol": SYMBOL}),
            ("trades.recent", "/api/v3/trades", {"symbol": SYMBOL, "limit": 2}),
            ("trades.historical", "/api/v3/historicalTrades", {"symbol": SYMBOL, "fromId": last_trade - 2}),
            ("trades.aggregate", "/api/v3/aggTrades", {"symbol": SYMBOL}),
            ("trades.aggregate", "/api/v3/aggTrades", {"symbol": SYMBOL, "limit": 2}),
            ("klines", "/api/v3/klines", {"symbol": SYMBOL, "interval": "1m"}),
            ("klines", "/api/v3/klines", {"symbol": SYMBOL, "interval": "1h", "limit": 3}),
            ("uiKlines", "/api/v3/uiKlines", {"symbol": SYMBOL, "interval": "1m"}),
            ("avgPrice", "/api/v3/avgPrice", {"symbol": SYMBOL}),
            ("ticker.price", "/api/v3/ticker/price", {"symbol": SYMBOL}),
            ("ticker.price", "/api/v3/ticker/price", {}),
            ("ticker.book", "/api/v3/ticker/bookTicker", {"symbol": SYMBOL}),
            ("ticker.book", "/api/v3/ticker/bookTicker", {}),
        ]
        for method, path, params in public:
            assert conn.ok(method, params) == rest_public(tradsys, path, params), (method, params)
        # Lists of symbols: a JSON array on the WebSocket API, its text on REST.
        for method, path in [("ticker.price", "/api/v3/ticker/price"), ("ticker.book", "/api/v3/ticker/bookTicker")]:
            assert conn.ok(method, {"symbols": ["BTCUSDT", "ETHUSDT"]}) == rest_public(
                tradsys, path, {"symbols": symbols}), method
        got = conn.ok("ticker.24hr", {"symbol": SYMBOL})
        assert without(got, "openTime", "closeTime") == without(
            rest_public(tradsys, "/api/v3/ticker/24hr", {"symbol": SYMBOL}), "openTime", "closeTime")
        got = conn.ok("ticker.24hr", {"symbols": ["BTCUSDT", "ETHUSDT"]})
        rest = rest_public(tradsys, "/api/v3/ticker/24hr", {"symbols": symbols})
        assert [without(t, "openTime", "closeTime") for t in got] == [
            without(t, "openTime", "closeTime") for t in rest]
        got = conn.ok("exchangeInfo", {"symbol": SYMBOL})
        assert without(got, "serverTime") == without(
            rest_public(tradsys, "/api/v3/exchangeInfo", {"symbol": SYMBOL}), "serverTime")
        assert conn.ok("ping") == rest_public(tradsys, "/api/v3/ping")

        signed = [
            ("order.status", "/api/v3/order", {"symbol": SYMBOL, "orderId": resting[0]["orderId"]}),
            ("order.status", "/api/v3/order", {"symbol": "ETHUSDT", "origClientOrderId": "twin-eth"}),
            ("openOrders.status", "/api/v3/openOrders", {"symbol": SYMBOL}),
            ("openOrders.status", "/api/v3/openOrders", {}),
            ("allOrders", "/api/v3/allOrders", {"symbol": SYMBOL}),
            ("allOrders", "/api/v3/allOrders", {"symbol": SYMBOL, "limit": 2}),
            ("myTrades", "/api/v3/myTrades", {"symbol": SYMBOL}),
            ("myTrades", "/api/v3/myTrades", {"symbol": SYMBOL, "limit": 1}),
        ]
        for method, path, params in signed:
            got = conn.signed_ok(method, maker, params)
            assert got == rest_signed(tradsys, "GET", path, maker, params), (method, params)
        sent = now_ms()
        got = conn.signed_ok("account.rateLimits.orders", maker)
        rest = rest_signed(tradsys, "GET", "/api/v3/rateLimit/order", maker)
        assert_same_order_counts(got, rest, sent, now_ms())
        for method, path, params in [("allOrders", "/api/v3/allOrders", {"symbol": SYMBOL}),
                                     ("myTrades", "/api/v3/myTrades", {"symbol": SYMBOL})]:
            got = conn.signed_ok(method, taker, params)
            assert got == rest_signed(tradsys, "GET", path, taker, params), (method, params)
        for user in (maker, taker):
            got = conn.signed_ok("account.status", user)
            rest = rest_signed(tradsys, "GET", "/api/v3/account", user)
            assert without(got, "updateTime") == without(rest, "updateTime")
        eth = conn.signed_ok("order.status", maker, {"symbol": "ETHUSDT", "orderId": open_eth["orderId"]})
        assert (eth["clientOrderId"], eth["status"]) == ("twin-eth", "NEW")
        assert len(conn.signed_ok("myTrades", maker, {"symbol": SYMBOL})) == 3
        assert not conn.events


def test_signatures_cover_values_as_sent(tradsys):
    """What a signature covers, by Binance's rules for this API: values
    unescaped (a client order id with / and :), booleans as true/false,
    numbers as sent, a microsecond timestamp, a recvWindow with decimals;
    an HMAC signature in upper case is the same signature."""
    user = tradsys.create_user("ws-signing", DEPOSITS)
    order = {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "0.00100", "price": "20000.00"}
    with WsApi(tradsys) as conn:
        placed = conn.signed_ok("order.place", user, {**order, "newClientOrderId": "a/b:c.d_e-f"})
        assert (placed["clientOrderId"], placed["status"]) == ("a/b:c.d_e-f", "NEW")
        got = conn.signed_ok("order.status", user, {"symbol": SYMBOL, "origClientOrderId": "a/b:c.d_e-f"})
        assert got["orderId"] == placed["orderId"]
        rates = conn.signed_ok("order.test", user, {**order, "computeCommissionRates": True})
        assert rates["standardCommissionForOrder"] == {"maker": fmt(RATE), "taker": fmt(RATE)}
        assert conn.signed_ok("order.test", user, {**order, "computeCommissionRates": False}) == {}
        numbers = conn.signed_ok("allOrders", user, {"symbol": SYMBOL, "orderId": placed["orderId"], "limit": 5})
        assert [o["orderId"] for o in numbers] == [placed["orderId"]]
        assert conn.signed_ok("account.status", user, {"timestamp": now_ms() * 1000})["accountType"] == "SPOT"
        assert conn.signed_ok("account.status", user, {"recvWindow": "6000.346"})["accountType"] == "SPOT"
        upper = signed_params(user)
        upper["signature"] = upper["signature"].upper()
        assert conn.ok("account.status", upper)["accountType"] == "SPOT"
        canceled = conn.signed_ok("order.cancel", user, {"symbol": SYMBOL, "origClientOrderId": "a/b:c.d_e-f",
                                                         "newClientOrderId": "cancel/1:x"})
        assert (canceled["clientOrderId"], canceled["origClientOrderId"], canceled["status"]) == (
            "cancel/1:x", "a/b:c.d_e-f", "CANCELED")


def test_orders_through_either_shard(tradsys):
    """Users owned by each shard trade through connections served by each
    shard: every answer is the order's, with the user's ORDERS counts."""
    users = users_on_every_shard(tradsys, "ws-route", {"USDT": "1000"})
    conns = open_ws_per_shard(tradsys)
    try:
        placed = {owner: [] for owner in users}
        # Each user's ORDERS counts, wherever its orders come in.
        windows = {owner: (Window(TEN_S_MS, 0), Window(DAY_MS, 0)) for owner in users}
        for socket_shard, conn in sorted(conns.items()):
            for owner, user in sorted(users.items()):
                price = f"{20000 + 10 * owner + socket_shard}.00"
                sent = now_ms()
                answer = conn.signed("order.place", user, {
                    "symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                    "quantity": "0.00100", "price": price, "newClientOrderId": f"route-{owner}-{socket_shard}"})
                received = now_ms()
                assert answer["status"] == 200, answer
                result = answer["result"]
                assert (result["clientOrderId"], result["price"], result["status"]) == (
                    f"route-{owner}-{socket_shard}", fmt(D(price)), "NEW")
                ten_s, day = answer["rateLimits"][:2]
                assert (ten_s["interval"], day["interval"]) == ("SECOND", "DAY"), answer["rateLimits"]
                windows[owner][0].check(ten_s["count"], 1, sent, received, f"user of shard {owner}")
                windows[owner][1].check(day["count"], 1, sent, received, f"user of shard {owner}")
                placed[owner].append(result["orderId"])
        for owner, user in sorted(users.items()):
            for conn in conns.values():
                got = conn.signed_ok("openOrders.status", user, {"symbol": SYMBOL})
                assert [o["orderId"] for o in got] == placed[owner]
                assert got == rest_signed(tradsys, "GET", "/api/v3/openOrders", user, {"symbol": SYMBOL})
        for socket_shard, conn in sorted(conns.items()):
            for owner, user in sorted(users.items()):
                canceled = conn.signed_ok("order.cancel", user, {
                    "symbol": SYMBOL, "origClientOrderId": f"route-{owner}-{socket_shard}"})
                assert canceled["status"] == "CANCELED"
        for owner, user in users.items():
            assert rest_signed(tradsys, "GET", "/api/v3/openOrders", user, {"symbol": SYMBOL}) == []
            assert tradsys.balances(user[0]) == {"USDT": (D(1000), ZERO)}
    finally:
        for conn in conns.values():
            conn.close()


def test_errors_have_binance_codes(tradsys):
    user = tradsys.create_user("ws-errors", DEPOSITS)
    _user_id, api_key, _secret = user

    def error(answer):
        """The error part of an answer: (id, status, code, msg)."""
        assert set(answer) <= {"id", "status", "error", "rateLimits"} and "result" not in answer, answer
        assert list(answer)[:3] == ["id", "status", "error"], answer
        assert list(answer["error"]) == ["code", "msg"], answer
        return answer["id"], answer["status"], answer["error"]["code"], answer["error"]["msg"]

    with WsApi(tradsys) as conn:
        bad_signature = {**signed_params(user), "signature": "0" * 64}
        assert error(conn.call("account.status", bad_signature, id=1)) == (
            1, 400, -1022, "Signature for this request is not valid.")
        # A parameter changed after signing: the signature no longer covers it.
        changed = {**signed_params(user, {"symbol": SYMBOL}), "symbol": "ETHUSDT"}
        assert error(conn.call("openOrders.status", changed, id=2)) == (
            2, 400, -1022, "Signature for this request is not valid.")
        stale = signed_params(user, {"timestamp": now_ms() - 60_000})
        assert error(conn.call("account.status", stale, id=3)) == (
            3, 400, -1021, "Timestamp for this request is outside of the recvWindow.")
        ahead = signed_params(user, {"timestamp": now_ms() + 5_000})
        assert error(conn.call("account.status", ahead, id=4)) == (
            4, 400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        wide = signed_params(user, {"recvWindow": 60_001})
        assert error(conn.call("account.status", wide, id=5)) == (
            5, 400, -1131, "recvWindow must be less than 60000")
        no_key = signed_params(user)
        del no_key["apiKey"]
        assert error(conn.call("account.status", no_key, id=6)) == (
            6, 400, -1102, "Mandatory parameter 'apiKey' was not sent, was empty/null, or malformed.")
        no_signature = signed_params(user)
        del no_signature["signature"]
        assert error(conn.call("account.status", no_signature, id=7)) == (
            7, 400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        unknown_key = signed_params((0, api_key[:-4] + "AAAA", "x" * 64))
        assert error(conn.call("account.status", unknown_key, id=8)) == (
            8, 401, -2015, "Invalid API-key, IP, or permissions for action.")
        assert error(conn.call("no.such.method", {}, id="m")) == ("m", 400, -1020, "Unknown method 'no.such.method'.")
        assert error(conn.call("depth", {"symbol": "NOPEUSDT"}, id=9)) == (9, 400, -1121, "Invalid symbol.")

        # Frames that are not requests: answered with id null.
        conn.ws.send("not json")
        assert error(conn.answer()) == (None, 400, -1135, "Invalid JSON Request")
        conn.ws.send('["ping"]')
        assert error(conn.answer()) == (None, 400, -1135, "Invalid JSON Request")
        conn.ws.send(json.dumps({"id": 1.5, "method": "ping"}))
        assert error(conn.answer()) == (
            None, 400, -1102, "Mandatory parameter 'id' was not sent, was empty/null, or malformed.")
        conn.ws.send(json.dumps({"id": 10, "method": "ping", "params": [1]}))
        assert error(conn.answer()) == (10, 400, -1135, "JSON sent for parameter 'params' is not valid")

        # Subscriptions.
        bad_subscription = {**signed_params(user), "signature": "0" * 64}
        assert error(conn.call("userDataStream.subscribe.signature", bad_subscription, id=12)) == (
            12, 400, -1022, "Signature for this request is not valid.")
        stale_subscription = signed_params(user, {"timestamp": now_ms() - 60_000})
        assert error(conn.call("userDataStream.subscribe.signature", stale_subscription, id=13)) == (
            13, 400, -1021, "Timestamp for this request is outside of the recvWindow.")
        assert conn.ok("session.subscriptions") == []
        assert conn.signed_ok("userDataStream.subscribe.signature", user) == {"subscriptionId": 0}
        assert error(conn.signed("userDataStream.subscribe.signature", user)) == (
            conn.ids, 400, -2035, "User Data Stream subscription already active.")
        assert error(conn.call("userDataStream.unsubscribe", {"subscriptionId": 1}, id=11)) == (
            11, 400, -2036, "User Data Stream subscription not active.")
        assert conn.ok("session.subscriptions") == [{"subscriptionId": 0}]

        # Retired by Binance: the listen key methods.
        retired = ("userDataStream.start, .ping and .stop are no longer available; "
                   "use userDataStream.subscribe or userDataStream.subscribe.signature.")
        for i, (method, params) in enumerate([
            ("userDataStream.start", {"apiKey": api_key}),
            ("userDataStream.ping", {"apiKey": api_key, "listenKey": "x" * 60}),
            ("userDataStream.stop", {"apiKey": api_key, "listenKey": "x" * 60}),
        ]):
            assert error(conn.call(method, params, id=f"r{i}")) == (f"r{i}", 400, -1020, retired)
        assert not conn.events


def expected_report(placed, **fields):
    """An executionReport of the order REST answered with `placed`
    (newOrderRespType FULL), as it rests unfilled; `fields` change it."""
    report = {
        "e": "executionReport", "E": None, "s": placed["symbol"], "c": placed["clientOrderId"],
        "S": placed["side"], "o": placed["type"], "f": placed["timeInForce"], "q": placed["origQty"],
        "p": placed["price"], "P": fmt(0), "F": fmt(0), "g": -1, "C": "", "x": "NEW", "X": "NEW", "r": "NONE",
        "i": placed["orderId"], "l": fmt(0), "z": fmt(0), "L": fmt(0), "n": fmt(0), "N": None,
        "T": placed["transactTime"], "t": -1, "I": placed["orderId"], "w": True, "m": False, "M": False,
        "O": placed["transactTime"], "Z": fmt(0), "Y": fmt(0), "Q": fmt(0), "W": placed["workingTime"],
        "V": placed["selfTradePreventionMode"],
    }
    report.update(fields)
    return report


def next_order_events(conn, subscription):
    """The executionReport and outboundAccountPosition of one order change.
    Event times are the server's when it sent them: returned as they are,
    the account position's checked against the report's."""
    frame = conn.event()
    assert frame["subscriptionId"] == subscription, frame
    report = frame["event"]
    assert report["e"] == "executionReport", report
    assert report["E"] >= report["T"], report
    frame = conn.event()
    assert frame["subscriptionId"] == subscription, frame
    position = frame["event"]
    assert list(position) == ["e", "E", "u", "B"], position
    assert (position["e"], position["E"], position["u"]) == ("outboundAccountPosition", report["E"], report["T"])
    return report, position


def balances(*rows):
    return [{"a": asset, "f": fmt(free), "l": fmt(locked)} for asset, free, locked in rows]


def test_user_data_subscription_events(tradsys):
    """userDataStream.subscribe.signature, then an order placed over REST by
    the same user and filled by another: each event arrives exactly, in the
    subscription's envelope; unsubscribing ends them with
    eventStreamTerminated."""
    maker = tradsys.create_user("ws-sub-maker", {"USDT": "1000"})
    taker = tradsys.create_user("ws-sub-taker", {"BTC": "1"})
    price, qty, fill_qty = D("30000.00"), D("0.002"), D("0.0015")
    locked = quote_amount(price, qty)

    with WsApi(tradsys) as conn:
        status = conn.ok("session.status")
        assert status["userDataStream"] is False
        assert conn.signed_ok("userDataStream.subscribe.signature", maker) == {"subscriptionId": 0}
        assert conn.ok("session.subscriptions") == [{"subscriptionId": 0}]
        assert conn.ok("session.status")["userDataStream"] is True

        placed = rest_order(tradsys, maker, "BUY", str(qty), str(price))
        report, position = next_order_events(conn, 0)
        assert report == expected_report(placed, E=report["E"])
        assert position["B"] == balances(("BTC", 0, 0), ("USDT", D(1000) - locked, locked))

        filled = rest_order(tradsys, taker, "SELL", str(fill_qty), "29000.00")
        fill = filled["fills"][0]
        fill_quote = quote_amount(price, fill_qty)
        fee = commission(fill_qty, RATE)
        assert (fill["price"], fill["qty"]) == (fmt(price), fmt(fill_qty))
        report, position = next_order_events(conn, 0)
        assert report == expected_report(
            placed, E=report["E"], x="TRADE", X="PARTIALLY_FILLED", l=fmt(fill_qty), z=fmt(fill_qty),
            L=fmt(price), n=fmt(fee), N="BTC", T=filled["transactTime"], t=fill["tradeId"], m=True,
            Z=fmt(fill_quote), Y=fmt(fill_quote))
        usdt_free = D(1000) - locked
        assert position["B"] == balances(("BTC", fill_qty - fee, 0), ("USDT", usdt_free, locked - fill_quote))

        canceled = rest_signed(tradsys, "DELETE", "/api/v3/order", maker,
                               {"symbol": SYMBOL, "orderId": placed["orderId"]})
        report, position = next_order_events(conn, 0)
        assert report == expected_report(
            placed, E=report["E"], c=canceled["clientOrderId"], C=placed["clientOrderId"], x="CANCELED",
            X="CANCELED", z=fmt(fill_qty), T=canceled["transactTime"], w=False, Z=fmt(fill_quote))
        assert position["B"] == balances(("BTC", fill_qty - fee, 0), ("USDT", D(1000) - fill_quote, 0))

        sent = now_ms()
        assert conn.ok("userDataStream.unsubscribe", {"subscriptionId": 0}) == {}
        ended = conn.event()
        assert ended == {"subscriptionId": 0, "event": {"e": "eventStreamTerminated", "E": ended["event"]["E"]}}
        assert sent <= ended["event"]["E"] <= now_ms()
        assert conn.ok("session.subscriptions") == []
        assert conn.ok("session.status")["userDataStream"] is False

        # The subscription is over: the maker's next order sends nothing
        # here. A new subscription gets the next id and the events again.
        rest_order(tradsys, maker, "BUY", "0.00100", "20000.00")
        assert conn.signed_ok("userDataStream.subscribe.signature", maker) == {"subscriptionId": 1}
        placed = rest_order(tradsys, maker, "BUY", "0.00100", "20001.00")
        report, _position = next_order_events(conn, 1)
        assert (report["i"], report["x"]) == (placed["orderId"], "NEW")
        assert not conn.events


def test_unsubscribe_all_ends_each_subscription(tradsys):
    """userDataStream.unsubscribe without an id ends every subscription of
    the connection, each with its eventStreamTerminated; another
    connection's subscription of the same user keeps its events."""
    users = [tradsys.create_user(f"ws-unsub-{i}", {"USDT": "1000"}) for i in range(2)]
    with WsApi(tradsys) as conn, WsApi(tradsys) as other:
        for i, user in enumerate(users):
            assert conn.signed_ok("userDataStream.subscribe.signature", user) == {"subscriptionId": i}
        assert other.signed_ok("userDataStream.subscribe.signature", users[0]) == {"subscriptionId": 0}
        assert conn.ok("session.subscriptions") == [{"subscriptionId": 0}, {"subscriptionId": 1}]

        assert conn.ok("userDataStream.unsubscribe") == {}
        ended = [conn.event(), conn.event()]
        assert [(e["subscriptionId"], e["event"]["e"]) for e in ended] == [
            (0, "eventStreamTerminated"), (1, "eventStreamTerminated")]
        assert conn.ok("session.subscriptions") == []

        placed = rest_order(tradsys, users[0], "BUY", "0.00100", "20000.00")
        report, _position = next_order_events(other, 0)
        assert report == expected_report(placed, E=report["E"])
        # Nothing reached the first connection: its next frame is the answer.
        assert conn.ok("ping") == {}
        assert not conn.events and not other.events


def test_events_reach_a_connection_on_either_shard(tradsys):
    """A user's events reach a subscription whichever shard serves the
    socket: users owned by each shard, subscribed on a connection served by
    each shard."""
    users = users_on_every_shard(tradsys, "ws-shard", {"USDT": "1000"})
    taker = tradsys.create_user("ws-shard-taker", {"BTC": "1"})
    conns = open_ws_per_shard(tradsys)
    try:
        subscription = {}
        for socket_shard, conn in conns.items():
            for owner, user in sorted(users.items()):
                got = conn.signed_ok("userDataStream.subscribe.signature", user)
                subscription[socket_shard, owner] = got["subscriptionId"]
            assert conn.ok("session.subscriptions") == [
                {"subscriptionId": subscription[socket_shard, owner]} for owner in sorted(users)]

        for owner, user in sorted(users.items()):
            price = f"{25000 + owner}.00"
            placed = rest_order(tradsys, user, "BUY", "0.00100", price)
            filled = rest_order(tradsys, taker, "SELL", "0.00100", price)
            fill = filled["fills"][0]
            fee = commission(D("0.001"), RATE)
            for socket_shard, conn in conns.items():
                what = f"user of shard {owner} on a socket of shard {socket_shard}"
                report, position = next_order_events(conn, subscription[socket_shard, owner])
                assert report == expected_report(placed, E=report["E"]), what
                report, position = next_order_events(conn, subscription[socket_shard, owner])
                assert report == expected_report(
                    placed, E=report["E"], x="TRADE", X="FILLED", l=fmt(D("0.001")), z=fmt(D("0.001")),
                    L=fmt(D(price)), n=fmt(fee), N="BTC", T=filled["transactTime"], t=fill["tradeId"], m=True,
                    w=False, Z=fmt(quote_amount(price, "0.001")), Y=fmt(quote_amount(price, "0.001"))), what
                spent = quote_amount(price, "0.001")
                assert position["B"] == balances(("BTC", D("0.001") - fee, 0), ("USDT", D(1000) - spent, 0)), what
        for conn in conns.values():
            assert not conn.events
    finally:
        for conn in conns.values():
            conn.close()


def test_pipelined_requests_are_answered_in_order(tradsys):
    """Requests sent without waiting are answered once each, in order, with
    their own ids, whichever kinds they are."""
    user = tradsys.create_user("ws-pipeline", DEPOSITS)
    with WsApi(tradsys) as conn:
        sent = []
        for i in range(8):
            params = signed_params(user, {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                          "quantity": "0.00100", "price": f"{20000 + i}.00",
                                          "newClientOrderId": f"pipe-{i}"})
            sent.append(("order.place", conn.send("order.place", params, id=f"o{i}")))
            sent.append(("ping", conn.send("ping", id=i)))
        sent.append(("openOrders.status", conn.send("openOrders.status", signed_params(user, {"symbol": SYMBOL}))))
        sent.append(("session.status", conn.send("session.status", id=None)))
        answers = [conn.answer() for _ in sent]
        assert [a["id"] for a in answers] == [id for _method, id in sent]
        assert all(a["status"] == 200 for a in answers), answers
        placed = [a["result"] for (method, _id), a in zip(sent, answers) if method == "order.place"]
        assert [o["clientOrderId"] for o in placed] == [f"pipe-{i}" for i in range(8)]
        assert [o["orderId"] for o in placed] == sorted(o["orderId"] for o in placed)
        assert [o["clientOrderId"] for o in answers[-2]["result"]] == [f"pipe-{i}" for i in range(8)]
        assert not conn.events


def test_ws_api_trader_and_rest_trader_see_the_same_fills(tradsys):
    """Alice trades over the WebSocket API, Bob against her over REST: both
    see the same fills, fees and balances, exactly, and Alice's
    subscription reports each of her fills as her trades list them."""
    alice = tradsys.create_user("ws-alice", {"USDT": "10000"})
    bob = tradsys.create_user("rest-bob", {"BTC": "1"})
    order = {"symbol": SYMBOL, "type": "LIMIT", "timeInForce": "GTC", "newOrderRespType": "FULL"}

    with WsApi(tradsys) as conn:
        assert conn.signed_ok("userDataStream.subscribe.signature", alice) == {"subscriptionId": 0}

        # 1. Alice rests a buy over the WebSocket API.
        p1, q1 = D("30000.01"), D("0.01")
        a1 = conn.signed_ok("order.place", alice, {**order, "side": "BUY", "price": str(p1), "quantity": str(q1)})
        assert (a1["status"], a1["price"], a1["origQty"], a1["fills"]) == ("NEW", fmt(p1), fmt(q1), [])
        report, _ = next_order_events(conn, 0)
        assert (report["i"], report["x"], report["c"]) == (a1["orderId"], "NEW", a1["clientOrderId"])

        # 2. Bob sells into it over REST: one fill at Alice's price.
        q2 = D("0.00333")
        b2 = rest_order(tradsys, bob, "SELL", str(q2), "29000.00")
        quote2 = quote_amount(p1, q2)
        fee2_bob, fee2_alice = commission(quote2, RATE), commission(q2, RATE)
        assert (b2["status"], b2["executedQty"], b2["cummulativeQuoteQty"]) == ("FILLED", fmt(q2), fmt(quote2))
        assert [(f["price"], f["qty"], f["commission"], f["commissionAsset"]) for f in b2["fills"]] == [
            (fmt(p1), fmt(q2), fmt(fee2_bob), "USDT")]
        trade2 = b2["fills"][0]["tradeId"]
        report, _ = next_order_events(conn, 0)
        assert (report["x"], report["X"], report["t"], report["L"], report["l"], report["n"], report["N"]) == (
            "TRADE", "PARTIALLY_FILLED", trade2, fmt(p1), fmt(q2), fmt(fee2_alice), "BTC")

        # 3. Bob rests a sell over REST; Alice takes part of it at market.
        p3, q3 = D("30100.00"), D("0.005")
        b3 = rest_order(tradsys, bob, "SELL", str(q3), str(p3), resp="RESULT")
        assert b3["status"] == "NEW"
        q4 = D("0.002")
        a4 = conn.signed_ok("order.place", alice, {"symbol": SYMBOL, "side": "BUY", "type": "MARKET",
                                                   "quantity": str(q4), "newOrderRespType": "FULL"})
        quote4 = quote_amount(p3, q4)
        fee4_alice, fee4_bob = commission(q4, RATE), commission(quote4, RATE)
        assert (a4["status"], a4["executedQty"], a4["cummulativeQuoteQty"]) == ("FILLED", fmt(q4), fmt(quote4))
        assert [(f["price"], f["qty"], f["commission"], f["commissionAsset"]) for f in a4["fills"]] == [
            (fmt(p3), fmt(q4), fmt(fee4_alice), "BTC")]
        trade4 = a4["fills"][0]["tradeId"]
        report, _ = next_order_events(conn, 0)
        if report["x"] == "NEW":  # Binance reports a taker as NEW before its trade; tradsys does not yet
            assert (report["i"], report["X"], report["z"]) == (a4["orderId"], "NEW", fmt(0))
            report, _ = next_order_events(conn, 0)
        assert (report["i"], report["x"], report["X"], report["t"], report["n"], report["m"]) == (
            a4["orderId"], "TRADE", "FILLED", trade4, fmt(fee4_alice), False)

        # 4. Alice cancels what is left of her buy.
        a5 = conn.signed_ok("order.cancel", alice, {"symbol": SYMBOL, "orderId": a1["orderId"]})
        assert (a5["status"], a5["executedQty"], a5["cummulativeQuoteQty"]) == ("CANCELED", fmt(q2), fmt(quote2))
        report, _ = next_order_events(conn, 0)
        assert (report["i"], report["x"], report["c"], report["C"]) == (
            a1["orderId"], "CANCELED", a5["clientOrderId"], a1["clientOrderId"])

        # The same trades from both sides.
        alice_trades = conn.signed_ok("myTrades", alice, {"symbol": SYMBOL})
        bob_trades = rest_signed(tradsys, "GET", "/api/v3/myTrades", bob, {"symbol": SYMBOL})
        assert [(t["id"], t["price"], t["qty"], t["quoteQty"], t["commission"], t["commissionAsset"],
                 t["isBuyer"], t["isMaker"]) for t in alice_trades] == [
            (trade2, fmt(p1), fmt(q2), fmt(quote2), fmt(fee2_alice), "BTC", True, True),
            (trade4, fmt(p3), fmt(q4), fmt(quote4), fmt(fee4_alice), "BTC", True, False)]
        assert [(t["id"], t["price"], t["qty"], t["quoteQty"], t["commission"], t["commissionAsset"],
                 t["isBuyer"], t["isMaker"]) for t in bob_trades] == [
            (trade2, fmt(p1), fmt(q2), fmt(quote2), fmt(fee2_bob), "USDT", False, False),
            (trade4, fmt(p3), fmt(q4), fmt(quote4), fmt(fee4_bob), "USDT", False, True)]
        for a, b in zip(alice_trades, bob_trades):
            assert (a["time"], a["symbol"]) == (b["time"], b["symbol"])
        assert alice_trades == rest_signed(tradsys, "GET", "/api/v3/myTrades", alice, {"symbol": SYMBOL})
        assert bob_trades == conn.signed_ok("myTrades", bob, {"symbol": SYMBOL})

        # Balances, every way they can be read.
        alice_btc = q2 - fee2_alice + q4 - fee4_alice
        alice_usdt = D(10000) - quote2 - quote4
        bob_btc_free, bob_btc_locked = D(1) - q2 - q3, q3 - q4
        bob_usdt = quote2 - fee2_bob + quote4 - fee4_bob
        expected = {
            alice: {"BTC": (alice_btc, ZERO), "USDT": (alice_usdt, ZERO)},
            bob: {"BTC": (bob_btc_free, bob_btc_locked), "USDT": (bob_usdt, ZERO)},
        }
        for user, want in expected.items():
            assert tradsys.balances(user[0]) == want
            ws_account = conn.signed_ok("account.status", user)
            rest_account = rest_signed(tradsys, "GET", "/api/v3/account", user)
            assert without(ws_account, "updateTime") == without(rest_account, "updateTime")
            got = {b["asset"]: (b["free"], b["locked"]) for b in ws_account["balances"]}
            assert {a: got[a] for a in want} == {a: (fmt(f), fmt(l)) for a, (f, l) in want.items()}
            assert all(got[a] == (fmt(0), fmt(0)) for a in got if a not in want), got
        assert not conn.events


# --------------------------------------------------------------------------
# binance-connector's SpotWebsocketAPIClient.


class Connector:
    """SpotWebsocketAPIClient on one connection; its answers by id."""

    def __init__(self, tradsys, user):
        _user_id, api_key, secret = user
        self.messages = queue.Queue()
        self.ids = 0
        self.client = SpotWebsocketAPIClient(
            stream_url=ws_api_url(tradsys), api_key=api_key, api_secret=secret, timeout=CONNECTOR_IDLE_S,
            on_message=lambda _manager, message: self.messages.put(json.loads(message)),
        )

    def __call__(self, method, **params):
        """Calls one client method with a fresh id; returns the answer."""
        self.ids += 1
        id = f"bc-{self.ids}"
        getattr(self.client, method)(id=id, **params)
        answer = self.messages.get(timeout=WAIT_S)
        assert answer["id"] == id, (method, answer)
        return answer

    def ok(self, method, **params):
        answer = self(method, **params)
        assert answer["status"] == 200, (method, params, answer)
        assert [r["rateLimitType"] for r in answer["rateLimits"]][-1] == "REQUEST_WEIGHT", answer
        return answer["result"]

    def stop(self):
        self.client.stop()


def test_binance_connector_orders_and_account(tradsys):
    """Orders, their queries and cancels, the account and the user's trades
    and orders through binance-connector, each against REST."""
    alice = tradsys.create_user("bc-alice", {"USDT": "10000"})
    bob = tradsys.create_user("bc-bob", {"BTC": "1"})
    client = Connector(tradsys, alice)
    try:
        p1, q1 = D("29000.00"), D("0.004")
        placed = client.ok("new_order", symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC",
                           price=str(p1), quantity=str(q1), newClientOrderId="bc-first",
                           newOrderRespType="FULL")
        assert (placed["clientOrderId"], placed["status"], placed["price"], placed["origQty"], placed["fills"]) == (
            "bc-first", "NEW", fmt(p1), fmt(q1), [])
        second = client.ok("new_order", symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC",
                           price="28000.00", quantity="0.001", newOrderRespType="RESULT")
        assert (second["status"], "fills" in second) == ("NEW", False)

        q2 = D("0.0015")
        sold = rest_order(tradsys, bob, "SELL", str(q2), str(p1))
        quote2, fee2 = quote_amount(p1, q2), commission(q2, RATE)
        trade_id = sold["fills"][0]["tradeId"]

        got = client.ok("get_order", symbol=SYMBOL, orderId=placed["orderId"])
        assert got == rest_signed(tradsys, "GET", "/api/v3/order", alice, {"symbol": SYMBOL,
                                                                          "orderId": placed["orderId"]})
        assert (got["status"], got["executedQty"], got["cummulativeQuoteQty"]) == (
            "PARTIALLY_FILLED", fmt(q2), fmt(quote2))
        assert client.ok("get_order", symbol=SYMBOL, origClientOrderId="bc-first") == got

        open_orders = client.ok("get_open_orders", symbol=SYMBOL)
        assert open_orders == rest_signed(tradsys, "GET", "/api/v3/openOrders", alice, {"symbol": SYMBOL})
        assert [o["orderId"] for o in open_orders] == [placed["orderId"], second["orderId"]]
        assert client.ok("get_open_orders") == open_orders

        trades = client.ok("my_trades", symbol=SYMBOL)
        assert trades == rest_signed(tradsys, "GET", "/api/v3/myTrades", alice, {"symbol": SYMBOL})
        assert [(t["id"], t["orderId"], t["price"], t["qty"], t["quoteQty"], t["commission"],
                 t["commissionAsset"], t["isBuyer"], t["isMaker"]) for t in trades] == [
            (trade_id, placed["orderId"], fmt(p1), fmt(q2), fmt(quote2), fmt(fee2), "BTC", True, True)]

        canceled = client.ok("cancel_order", symbol=SYMBOL, orderId=placed["orderId"])
        assert (canceled["orderId"], canceled["origClientOrderId"], canceled["status"], canceled["executedQty"]) == (
            placed["orderId"], "bc-first", "CANCELED", fmt(q2))
        all_canceled = client.ok("cancel_open_orders", symbol=SYMBOL)
        assert [(o["orderId"], o["status"]) for o in all_canceled] == [(second["orderId"], "CANCELED")]
        assert client.ok("get_open_orders", symbol=SYMBOL) == []

        # allOrders: binance-connector 3.13.0 names it order_history.
        history = client.ok("order_history", symbol=SYMBOL)
        assert history == rest_signed(tradsys, "GET", "/api/v3/allOrders", alice, {"symbol": SYMBOL})
        assert [(o["orderId"], o["status"]) for o in history] == [
            (placed["orderId"], "CANCELED"), (second["orderId"], "CANCELED")]

        account = client.ok("account")
        assert without(account, "updateTime") == without(
            rest_signed(tradsys, "GET", "/api/v3/account", alice), "updateTime")
        got = {b["asset"]: (b["free"], b["locked"]) for b in account["balances"]}
        assert (got["BTC"], got["USDT"]) == ((fmt(q2 - fee2), fmt(0)), (fmt(D(10000) - quote2), fmt(0)))
        sent = now_ms()
        counts = client.ok("order_rate_limit")
        assert_same_order_counts(counts, rest_signed(tradsys, "GET", "/api/v3/rateLimit/order", alice), sent, now_ms())
    finally:
        client.stop()


def test_binance_connector_user_data_methods_are_retired(tradsys):
    """binance-connector 3.13.0 offers only the listen key methods, which
    Binance retired: each is answered with the same error."""
    user = tradsys.create_user("bc-listen", DEPOSITS)
    client = Connector(tradsys, user)
    retired = {"code": -1020, "msg": "userDataStream.start, .ping and .stop are no longer available; "
                                     "use userDataStream.subscribe or userDataStream.subscribe.signature."}
    try:
        assert client("user_data_start") == {"id": "bc-1", "status": 400, "error": retired}
        assert client("user_data_ping", listenKey="x" * 60) == {"id": "bc-2", "status": 400, "error": retired}
        assert client("user_data_stop", listenKey="x" * 60) == {"id": "bc-3", "status": 400, "error": retired}
    finally:
        client.stop()


# --------------------------------------------------------------------------
# What tradsys does not do as Binance does yet: each test fails today (strict
# xfail, so that a fix shows as XPASS and the mark goes).


def test_numbers_are_signed_as_sent(tradsys):
    """A client that sends a DECIMAL parameter as a JSON number signs the
    number's text as it sent it (Python: 5e-05). The answer must be the REST
    twin's for that value, not a bad signature."""
    user = tradsys.create_user("ws-number", DEPOSITS)
    params = {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": 5e-05,
              "price": "30000.00"}
    _user_id, api_key, secret = user
    status, rest = tradsys.signed("POST", "/api/v3/order/test", api_key, secret, {**params, "quantity": "5e-05"})
    with WsApi(tradsys) as conn:
        answer = conn.signed("order.test", user, params)
    assert (answer["status"], answer.get("result", answer.get("error"))) == (status, rest)


def test_subscription_signature_checked_first(tradsys):
    """A subscription request that does not prove its key is refused as
    such, whatever the connection already holds."""
    user = tradsys.create_user("ws-sub-twice", DEPOSITS)
    with WsApi(tradsys) as conn:
        assert conn.signed_ok("userDataStream.subscribe.signature", user) == {"subscriptionId": 0}
        answer = conn.call("userDataStream.subscribe.signature", {**signed_params(user), "signature": "0" * 64})
    assert (answer["status"], answer["error"]) == (
        400, {"code": -1022, "msg": "Signature for this request is not valid."})


def taker_events(tradsys, conn, taker, params):
    """Subscribes `taker` on `conn`, places its order over REST; returns
    the REST answer and the (x, X, l, t) of each report up to the one that
    closes the order or leaves it resting."""
    assert conn.signed_ok("userDataStream.subscribe.signature", taker) == {"subscriptionId": 0}
    placed = rest_signed(tradsys, "POST", "/api/v3/order", taker, {
        "symbol": SYMBOL, "newOrderRespType": "FULL", **params})
    reports = []
    while True:
        report, _position = next_order_events(conn, 0)
        assert report["i"] == placed["orderId"], report
        reports.append((report["x"], report["X"], report["l"], report["t"]))
        if report["X"] == placed["status"] and report["z"] == placed["executedQty"]:
            return placed, reports


@pytest.mark.parametrize("kind", ["LIMIT", "MARKET", "IOC"])
def test_taker_order_reports_new_first(tradsys, kind):
    """Binance reports every order it accepts with x NEW before its trades
    (or its expiry), takers included."""
    maker = tradsys.create_user("ws-new-maker", DEPOSITS)
    taker = tradsys.create_user("ws-new-taker", DEPOSITS)
    rest_order(tradsys, maker, "BUY", "0.00100", "30000.00")
    params = {"side": "SELL", "quantity": "0.00100"}
    params.update({
        "LIMIT": {"type": "LIMIT", "timeInForce": "GTC", "price": "30000.00"},
        "MARKET": {"type": "MARKET"},
        "IOC": {"type": "LIMIT", "timeInForce": "IOC", "price": "31000.00"},
    }[kind])
    with WsApi(tradsys) as conn:
        placed, reports = taker_events(tradsys, conn, taker, params)
    assert reports[0] == ("NEW", "NEW", fmt(0), -1), reports
    assert len(reports) == 2, reports
    assert placed["status"] == {"IOC": "EXPIRED"}.get(kind, "FILLED")


def test_resting_taker_reports_each_trade_once(tradsys):
    """A LIMIT order that trades part of its quantity on arrival and rests
    the remainder gets one TRADE report for its one trade; no report says
    TRADE without carrying a trade."""
    maker = tradsys.create_user("ws-rest-maker", DEPOSITS)
    taker = tradsys.create_user("ws-rest-taker", DEPOSITS)
    rest_order(tradsys, maker, "BUY", "0.00100", "30000.00")
    with WsApi(tradsys) as conn:
        placed, reports = taker_events(tradsys, conn, taker, {
            "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.00200", "price": "30000.00"})
        # The next frame is this answer: nothing else came for the order.
        assert conn.ok("ping") == {} and not conn.events
    trade = placed["fills"][0]["tradeId"]
    assert placed["status"] == "PARTIALLY_FILLED"
    assert [r for r in reports if r[0] == "TRADE"] == [("TRADE", "PARTIALLY_FILLED", fmt(D("0.001")), trade)]
    assert all(t != -1 for x, _X, _l, t in reports if x == "TRADE"), reports


def test_ticker_24hr_mini(tradsys):
    """`type: MINI` answers Binance's mini ticker: no price change, bid, ask
    or last quantity fields."""
    with WsApi(tradsys) as conn:
        mini = conn.ok("ticker.24hr", {"symbol": SYMBOL, "type": "MINI"})
    assert set(mini) == {"symbol", "openPrice", "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume",
                         "openTime", "closeTime", "firstId", "lastId", "count"}
