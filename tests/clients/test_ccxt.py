"""ccxt's binance exchange, unmodified, against tradsys.

Only its URLs change: the spot REST entries and the wallet's (sapi) point
at the local server with the paths ccxt expects ("/api/v3", "/sapi/v1"),
every other API (sapiV2.., fapi, dapi, eapi, papi, ...) at a local path
tradsys does not serve, so that a call there fails here with 404 instead
of leaving the machine.

Amounts are checked exactly: the raw strings in each result's "info"
against Decimal expectations (money.py), and ccxt's parsed numbers against
the same values.
"""

import urllib.parse

import ccxt
import pytest

from conftest import http
from money import COMMISSION, D, ZERO, commission, fmt, quote_amount

# ccxt's names for https://api.binance.com/api/... and .../sapi/v1.
SERVED_APIS = ("public", "private", "v1", "sapi")


def local_urls(urls, base):
    """ccxt's urls with every API address on this machine (a new dict)."""
    out = dict(urls)

    def rewrite(value, name):
        if isinstance(value, dict):
            return {k: rewrite(v, k) for k, v in value.items()}
        if not isinstance(value, str):
            return value
        if name in SERVED_APIS:
            # ccxt requests urls['api'][name] + '/' + path: keep its path (/api/v3).
            return base + urllib.parse.urlsplit(value).path
        return f"{base}/unserved/{name}"

    for section in ("api", "test", "demo", "apiBackup"):
        if section in out:
            out[section] = rewrite(out[section], section)
    return out


def walk_strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from walk_strings(v)
    elif isinstance(value, str):
        yield value


def settings(api_key=None, secret=None):
    """What every test gives ccxt's binance: its key, no client-side rate
    limiting, spot only, no calls for currencies, margins or time."""
    return {
        "apiKey": api_key,
        "secret": secret,
        "enableRateLimit": False,
        "timeout": 5000,
        "options": {
            "fetchMarkets": ["spot"],
            "fetchCurrencies": False,
            "fetchMargins": False,
            "adjustForTimeDifference": False,
            "defaultType": "spot",
        },
    }


def exchange(tradsys, api_key=None, secret=None):
    ex = ccxt.binance(settings(api_key, secret))
    ex.urls = local_urls(ex.urls, tradsys.base_url)
    for section in ("api", "test"):
        for url in walk_strings(ex.urls[section]):
            assert url.startswith(tradsys.base_url + "/"), url
    assert ex.urls["api"]["public"] == tradsys.base_url + "/api/v3"
    assert ex.urls["api"]["private"] == tradsys.base_url + "/api/v3"
    return ex


def balance_of(ex):
    balance = ex.fetch_balance()
    raw = {b["asset"]: (b["free"], b["locked"]) for b in balance["info"]["balances"]}
    return balance, raw


def assert_balances(tradsys, ex, user_id, expected):
    """expected: {asset: (free, locked)} as Decimals; unnamed assets are zero."""
    balance, raw = balance_of(ex)
    for asset, (free, locked) in expected.items():
        assert raw.get(asset, (fmt(0), fmt(0))) == (fmt(free), fmt(locked)), f"{asset} via fetch_balance"
        assert (balance[asset]["free"], balance[asset]["used"], balance[asset]["total"]) == (
            float(free), float(locked), float(free + locked)), asset
    for asset, pair in raw.items():
        if asset not in expected:
            assert pair == (fmt(0), fmt(0)), f"unexpected balance {asset}: {pair}"
    assert tradsys.balances(user_id) == expected, "balances via the admin API"


def test_urls_all_local(tradsys):
    ex = exchange(tradsys)
    names = set(ex.urls["api"])
    assert {"public", "private", "sapi", "fapiPublic", "dapiPublic", "eapiPublic", "papi"} <= names
    for name, url in ex.urls["api"].items():
        if name not in SERVED_APIS:
            assert url == f"{tradsys.base_url}/unserved/{name}"
    assert ex.urls["api"]["sapi"] == tradsys.base_url + "/sapi/v1"
    # A call tradsys does not serve fails here, with tradsys's 404.
    with pytest.raises(ccxt.BaseError):
        ex.fapiPublicGetPing()
    assert ex.last_request_url == f"{tradsys.base_url}/unserved/fapiPublic/ping"
    status, _body = http("GET", ex.last_request_url)
    assert status == 404


def test_public_data(tradsys):
    ex = exchange(tradsys)
    markets = ex.load_markets()
    assert {"BTC/USDT", "ETH/USDT", "ETH/BTC", "EUR/USD"} <= set(markets)
    btc = markets["BTC/USDT"]
    assert (btc["id"], btc["base"], btc["quote"], btc["spot"], btc["active"]) == ("BTCUSDT", "BTC", "USDT", True, True)
    assert (btc["precision"]["price"], btc["precision"]["amount"]) == (0.01, 0.00001)
    assert (btc["limits"]["amount"]["min"], btc["limits"]["cost"]["min"]) == (0.00001, 5.0)
    assert abs(ex.fetch_time() - ex.milliseconds()) < 2000

    # The server's -1121, raised by ccxt as BadSymbol (ccxt checks unified
    # symbols itself, so ask with the raw id).
    with pytest.raises(ccxt.BadSymbol) as info:
        ex.public_get_ticker_24hr({"symbol": "NOPEUSDT"})
    assert '"code":-1121' in str(info.value).replace(" ", "")
    with pytest.raises(ccxt.BadSymbol) as info:
        ex.public_get_depth({"symbol": "NOPEUSDT"})
    assert '"code":-1121' in str(info.value).replace(" ", "")


def test_orders_fills_fees_and_market_data(tradsys):
    """Two users trade ETH/BTC (quote amounts that round down, fees that
    round up) with limit and market orders; all checked exactly."""
    symbol, market_id, rate = "ETH/BTC", "ETHBTC", COMMISSION["ETHBTC"]
    mia_id, mia_key, mia_secret = tradsys.create_user("mia", {"BTC": "1"})
    tom_id, tom_key, tom_secret = tradsys.create_user("tom", {"ETH": "10"})
    mia, tom, public = exchange(tradsys, mia_key, mia_secret), exchange(tradsys, tom_key, tom_secret), exchange(tradsys)
    for ex in (mia, tom, public):
        ex.load_markets()

    book = public.fetch_order_book(symbol, 5)
    assert (book["bids"], book["asks"]) == ([], []), "the book starts empty"

    # 1. mia rests a buy: price x qty of BTC is locked.
    p1, q1 = D("0.05123"), D("1")
    m1 = mia.create_order(symbol, "limit", "buy", float(q1), float(p1))
    info = m1["info"]
    assert (info["symbol"], info["status"], info["type"], info["side"], info["timeInForce"]) == (
        market_id, "NEW", "LIMIT", "BUY", "GTC")
    assert (info["price"], info["origQty"], info["executedQty"]) == (fmt(p1), fmt(q1), fmt(0))
    assert (m1["id"], m1["status"], m1["price"], m1["amount"], m1["filled"]) == (
        str(info["orderId"]), "open", float(p1), float(q1), 0.0)
    locked1 = quote_amount(p1, q1)
    assert_balances(tradsys, mia, mia_id, {"BTC": (D(1) - locked1, locked1)})
    book = public.fetch_order_book(symbol, 5)
    assert (book["bids"], book["asks"]) == ([[float(p1), float(q1)]], [])

    # 2. tom sells below: one fill at mia's price; the quote amount rounds down.
    q2 = D("0.3333")
    t2 = tom.create_order(symbol, "limit", "sell", float(q2), 0.05)
    quote2 = quote_amount(p1, q2)
    assert quote2 == D("0.01707495")  # 0.017074959
    fee2_tom, fee2_mia = commission(quote2, rate), commission(q2, rate)
    assert fee2_tom == D("0.00001708")  # 0.00001707495
    info = t2["info"]
    assert (info["status"], info["executedQty"], info["cummulativeQuoteQty"]) == ("FILLED", fmt(q2), fmt(quote2))
    assert [(f["price"], f["qty"], f["commission"], f["commissionAsset"]) for f in info["fills"]] == [
        (fmt(p1), fmt(q2), fmt(fee2_tom), "BTC")]
    assert (t2["status"], t2["filled"], t2["cost"], t2["fee"]["cost"], t2["fee"]["currency"]) == (
        "closed", float(q2), float(quote2), float(fee2_tom), "BTC")
    trade2_id = str(info["fills"][0]["tradeId"])

    # 3. tom sells at market: the fee rounds up.
    q3 = D("0.2")
    t3 = tom.create_order(symbol, "market", "sell", float(q3))
    quote3 = quote_amount(p1, q3)
    fee3_tom, fee3_mia = commission(quote3, rate), commission(q3, rate)
    assert fee3_tom == D("0.00001025")  # 0.000010246
    info = t3["info"]
    assert (info["status"], info["type"], info["executedQty"], info["cummulativeQuoteQty"]) == (
        "FILLED", "MARKET", fmt(q3), fmt(quote3))
    assert [(f["price"], f["qty"], f["commission"], f["commissionAsset"]) for f in info["fills"]] == [
        (fmt(p1), fmt(q3), fmt(fee3_tom), "BTC")]
    trade3_id = str(info["fills"][0]["tradeId"])

    # 4. tom rests a sell; mia buys part of it at market for a BTC amount.
    p4, q4 = D("0.05200"), D("0.5")
    t4 = tom.create_order(symbol, "limit", "sell", float(q4), float(p4))
    assert t4["status"] == "open"
    remaining1 = q1 - q2 - q3
    book = public.fetch_order_book(symbol, 5)
    assert (book["bids"], book["asks"]) == ([[float(p1), float(remaining1)]], [[float(p4), float(q4)]])

    cost5, q5 = D("0.0104"), D("0.2")  # 0.0104 / 0.052 exactly
    m5 = mia.create_market_buy_order_with_cost(symbol, float(cost5))
    quote5 = quote_amount(p4, q5)
    assert quote5 == cost5
    fee5_mia, fee5_tom = commission(q5, rate), commission(quote5, rate)
    info = m5["info"]
    assert (info["status"], info["executedQty"], info["cummulativeQuoteQty"], info["origQuoteOrderQty"]) == (
        "FILLED", fmt(q5), fmt(quote5), fmt(cost5))
    assert [(f["price"], f["qty"], f["commission"], f["commissionAsset"]) for f in info["fills"]] == [
        (fmt(p4), fmt(q5), fmt(fee5_mia), "ETH")]
    trade5_id = str(info["fills"][0]["tradeId"])

    # Balances after three fills. mia's lock shrinks by what each fill paid.
    mia_eth = q2 - fee2_mia + q3 - fee3_mia + q5 - fee5_mia
    mia_btc_locked = locked1 - quote2 - quote3
    mia_btc_free = D(1) - locked1 - quote5
    assert_balances(tradsys, mia, mia_id, {"BTC": (mia_btc_free, mia_btc_locked), "ETH": (mia_eth, ZERO)})
    tom_btc = quote2 - fee2_tom + quote3 - fee3_tom + quote5 - fee5_tom
    tom_eth_free, tom_eth_locked = D(10) - q2 - q3 - q4, q4 - q5
    assert_balances(tradsys, tom, tom_id, {"BTC": (tom_btc, ZERO), "ETH": (tom_eth_free, tom_eth_locked)})

    # 5. Fetch, then cancel, mia's partly filled order.
    got = mia.fetch_order(m1["id"], symbol)
    assert (got["id"], got["status"], got["filled"], got["remaining"]) == (
        m1["id"], "open", float(q2 + q3), float(remaining1))
    assert (got["info"]["status"], got["info"]["executedQty"], got["info"]["cummulativeQuoteQty"]) == (
        "PARTIALLY_FILLED", fmt(q2 + q3), fmt(quote2 + quote3))
    canceled = mia.cancel_order(m1["id"], symbol)
    assert (canceled["id"], canceled["status"], canceled["info"]["executedQty"]) == (
        m1["id"], "canceled", fmt(q2 + q3))
    assert mia.fetch_order(m1["id"], symbol)["status"] == "canceled"
    mia_btc_free += mia_btc_locked
    assert_balances(tradsys, mia, mia_id, {"BTC": (mia_btc_free, ZERO), "ETH": (mia_eth, ZERO)})

    # 6. Cancel all of tom's open orders at once.
    p6, q6 = D("0.05300"), D("0.1")
    t6 = tom.create_order(symbol, "limit", "sell", float(q6), float(p6))
    assert sorted(o["id"] for o in tom.fetch_open_orders(symbol)) == sorted([t4["id"], t6["id"]])
    assert mia.fetch_open_orders(symbol) == []
    tom_eth_free, tom_eth_locked = tom_eth_free - q6, tom_eth_locked + q6
    assert_balances(tradsys, tom, tom_id, {"BTC": (tom_btc, ZERO), "ETH": (tom_eth_free, tom_eth_locked)})
    all_canceled = tom.cancel_all_orders(symbol)
    assert sorted((o["id"], o["status"]) for o in all_canceled) == sorted(
        [(t4["id"], "canceled"), (t6["id"], "canceled")])
    assert tom.fetch_open_orders(symbol) == []
    assert_balances(tradsys, tom, tom_id, {"BTC": (tom_btc, ZERO), "ETH": (tom_eth_free + tom_eth_locked, ZERO)})
    book = public.fetch_order_book(symbol, 5)
    assert (book["bids"], book["asks"]) == ([], [])

    # 7. Trade history of each side.
    def mine(ex):
        return [(t["id"], t["order"], t["info"]["price"], t["info"]["qty"], t["info"]["quoteQty"],
                 t["info"]["commission"], t["info"]["commissionAsset"], t["side"], t["takerOrMaker"],
                 t["price"], t["amount"], t["cost"], t["fee"]["cost"], t["fee"]["currency"])
                for t in ex.fetch_my_trades(symbol)]

    def row(trade_id, order, price, qty, quote, fee, fee_asset, side, role):
        return (trade_id, order, fmt(price), fmt(qty), fmt(quote), fmt(fee), fee_asset, side, role,
                float(price), float(qty), float(quote), float(fee), fee_asset)

    assert mine(mia) == [
        row(trade2_id, m1["id"], p1, q2, quote2, fee2_mia, "ETH", "buy", "maker"),
        row(trade3_id, m1["id"], p1, q3, quote3, fee3_mia, "ETH", "buy", "maker"),
        row(trade5_id, m5["id"], p4, q5, quote5, fee5_mia, "ETH", "buy", "taker"),
    ]
    assert mine(tom) == [
        row(trade2_id, t2["id"], p1, q2, quote2, fee2_tom, "BTC", "sell", "taker"),
        row(trade3_id, t3["id"], p1, q3, quote3, fee3_tom, "BTC", "sell", "taker"),
        row(trade5_id, t4["id"], p4, q5, quote5, fee5_tom, "BTC", "sell", "maker"),
    ]

    # 8. Public data: aggregate trades (ccxt's fetch_trades), ticker, OHLCV.
    trades = public.fetch_trades(symbol, limit=3)
    assert [(t["info"]["p"], t["info"]["q"], t["info"]["m"], t["side"], t["price"], t["amount"]) for t in trades] == [
        (fmt(p1), fmt(q2), True, "sell", float(p1), float(q2)),
        (fmt(p1), fmt(q3), True, "sell", float(p1), float(q3)),
        (fmt(p4), fmt(q5), False, "buy", float(p4), float(q5)),
    ]
    ticker = public.fetch_ticker(symbol)
    assert (ticker["symbol"], ticker["info"]["lastPrice"], ticker["info"]["lastQty"], ticker["last"]) == (
        symbol, fmt(p4), fmt(q5), float(p4))
    assert ticker["baseVolume"] >= float(q2 + q3 + q5) and ticker["high"] >= float(p4)
    last_time = trades[-1]["timestamp"]
    candles = [c for c in public.fetch_ohlcv(symbol, "1m", limit=2) if c[0] <= last_time < c[0] + 60000]
    assert len(candles) == 1, candles
    _t, _o, high, low, close, volume = candles[0]
    assert close == float(p4) and high >= float(p4) and low <= float(p4) and volume >= float(q5)


def test_time_in_force_and_post_only(tradsys):
    symbol, rate = "ETH/USDT", COMMISSION["ETHUSDT"]
    maker_id, maker_key, maker_secret = tradsys.create_user("maker", {"ETH": "2"})
    taker_id, taker_key, taker_secret = tradsys.create_user("taker", {"USDT": "1000"})
    maker, taker = exchange(tradsys, maker_key, maker_secret), exchange(tradsys, taker_key, taker_secret)
    price, qty = D("1999.99"), D("0.0777")
    maker.create_order(symbol, "limit", "sell", float(qty), float(price))

    fok = taker.create_order(symbol, "limit", "buy", 0.1, float(price), {"timeInForce": "FOK"})
    assert (fok["status"], fok["info"]["status"], fok["info"]["executedQty"]) == ("expired", "EXPIRED", fmt(0))
    assert_balances(tradsys, taker, taker_id, {"USDT": (D(1000), ZERO)})

    ioc = taker.create_order(symbol, "limit", "buy", 0.1, 2000.0, {"timeInForce": "IOC"})
    quote = quote_amount(price, qty)
    taker_fee, maker_fee = commission(qty, rate), commission(quote, rate)
    assert (quote, maker_fee) == (D("155.399223"), D("0.15539923"))
    assert (ioc["status"], ioc["info"]["executedQty"], ioc["info"]["cummulativeQuoteQty"]) == (
        "expired", fmt(qty), fmt(quote))
    assert_balances(tradsys, taker, taker_id, {"USDT": (D(1000) - quote, ZERO), "ETH": (qty - taker_fee, ZERO)})
    assert_balances(tradsys, maker, maker_id, {"ETH": (D(2) - qty, ZERO), "USDT": (quote - maker_fee, ZERO)})

    rest = maker.create_order(symbol, "limit", "sell", 0.5, 2100.0, {"postOnly": True})
    assert (rest["info"]["type"], rest["status"]) == ("LIMIT_MAKER", "open")
    with pytest.raises(ccxt.OrderImmediatelyFillable) as info:
        taker.create_order(symbol, "limit", "buy", 0.01, 2100.0, {"postOnly": True})
    # ccxt maps Binance's exact message to the exception and reports the message.
    assert str(info.value) == "binance Order would immediately match and take."
    maker.cancel_order(rest["id"], symbol)
    assert_balances(tradsys, maker, maker_id, {"ETH": (D(2) - qty, ZERO), "USDT": (quote - maker_fee, ZERO)})


def test_errors(tradsys):
    user_id, api_key, secret = tradsys.create_user("errors", {"USDT": "100"})
    ex = exchange(tradsys, api_key, secret)
    ex.load_markets()

    def code_of(error):
        return str(error).replace(" ", "")

    with pytest.raises(ccxt.BadSymbol) as info:
        ex.private_post_order({"symbol": "NOPEUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                               "price": "1", "quantity": "1"})
    assert '"code":-1121' in code_of(info.value)
    # ccxt maps Binance's exact -2010 message to InsufficientFunds and
    # reports the message, not the body.
    insufficient = "binance Account has insufficient balance for requested action."
    with pytest.raises(ccxt.InsufficientFunds) as info:
        ex.create_order("BTC/USDT", "limit", "buy", 0.01, 30000.0)
    assert str(info.value) == insufficient
    with pytest.raises(ccxt.InsufficientFunds) as info:
        ex.create_order("BTC/USDT", "market", "sell", 0.001)
    assert str(info.value) == insufficient
    with pytest.raises(ccxt.OrderNotFound) as info:
        ex.cancel_order("987654321", "BTC/USDT")
    assert '"code":-2011' in code_of(info.value)
    with pytest.raises(ccxt.OrderNotFound) as info:
        ex.fetch_order("987654321", "BTC/USDT")
    assert '"code":-2013' in code_of(info.value)

    wrong = exchange(tradsys, api_key, "0" * len(secret))
    with pytest.raises(ccxt.AuthenticationError) as info:
        wrong.fetch_balance()
    assert '"code":-1022' in code_of(info.value)
    unknown = exchange(tradsys, "no-such-key-" + api_key[:8], secret)
    with pytest.raises(ccxt.AuthenticationError) as info:
        unknown.fetch_balance()
    assert '"code":-2015' in code_of(info.value)

    assert_balances(tradsys, ex, user_id, {"USDT": (D(100), ZERO)})
    tradsys.revoke_key(api_key)
    # A fresh instance: after one authenticated success ccxt reports -2015
    # as DDoSProtection (a temporary ban on Binance), by design.
    with pytest.raises(ccxt.AuthenticationError) as info:
        exchange(tradsys, api_key, secret).fetch_balance()
    assert '"code":-2015' in code_of(info.value)


def test_iceberg_trailing_stop_and_edit_order(tradsys):
    """ccxt's own parameters for Binance's iceberg orders (icebergAmount)
    and trailing stops (trailingPercent), and edit_order, with exact
    results: the book shows the iceberg's visible part only, a taker meets
    it part by part, and the trailing stop fires 1 % below the highest
    trade since it was placed."""
    symbol = "ETH/USDT"
    maker_id, maker_key, maker_secret = tradsys.create_user("ice-maker", {"ETH": "3"})
    taker_id, taker_key, taker_secret = tradsys.create_user("ice-taker", {"USDT": "10000"})
    owner_id, owner_key, owner_secret = tradsys.create_user("trail-owner", {"ETH": "1"})
    maker, taker = exchange(tradsys, maker_key, maker_secret), exchange(tradsys, taker_key, taker_secret)
    owner, public = exchange(tradsys, owner_key, owner_secret), exchange(tradsys)
    for ex in (maker, taker, owner, public):
        ex.load_markets()

    # An iceberg of 1 ETH showing 0.25 at a time.
    ice = maker.create_order(symbol, "limit", "sell", 1.0, 2000.0, {"icebergAmount": 0.25})
    assert (ice["status"], ice["info"]["origQty"], ice["info"]["icebergQty"]) == ("open", fmt(1), fmt("0.25"))
    assert public.fetch_order_book(symbol, 5)["asks"] == [[2000.0, 0.25]]
    bought = taker.create_order(symbol, "limit", "buy", 0.3, 2000.0, {"timeInForce": "IOC"})
    assert [f["qty"] for f in bought["info"]["fills"]] == [fmt("0.25"), fmt("0.05")]
    assert public.fetch_order_book(symbol, 5)["asks"] == [[2000.0, 0.2]]
    fetched = maker.fetch_order(ice["id"], symbol)
    assert (fetched["status"], fetched["filled"], fetched["info"]["icebergQty"]) == ("open", 0.3, fmt("0.25"))

    # edit_order: ccxt's cancel-replace; the new order is an iceberg no more.
    edited = maker.edit_order(ice["id"], symbol, "limit", "sell", 0.5, 2010.0)
    assert (edited["status"], edited["price"], edited["amount"]) == ("open", 2010.0, 0.5)
    assert maker.fetch_order(ice["id"], symbol)["status"] == "canceled"
    assert public.fetch_order_book(symbol, 5)["asks"] == [[2010.0, 0.5]]
    maker.cancel_order(edited["id"], symbol)

    def trade_at(price):
        maker.create_order(symbol, "limit", "sell", 0.01, price)
        taker.create_order(symbol, "limit", "buy", 0.01, price, {"timeInForce": "IOC"})

    # A trailing stop-loss limit sell, 1 %, tracking from the last price.
    trade_at(2000.0)
    stop = owner.create_order(
        symbol, "limit", "sell", 0.5, 1900.0, {"trailingPercent": 1, "stopLossOrTakeProfit": "stopLoss"})
    info = owner.fetch_order(stop["id"], symbol)["info"]
    assert (info["type"], info["trailingDelta"], info["stopPrice"], info["status"]) == (
        "STOP_LOSS_LIMIT", 100, fmt(0), "NEW")
    trade_at(2020.0)
    trade_at(1999.81)
    assert public.fetch_order_book(symbol, 5)["asks"] == []
    # 1,999.80 is 1 % below 2,020: it fires and its limit sell rests.
    trade_at(1999.8)
    assert public.fetch_order_book(symbol, 5)["asks"] == [[1900.0, 0.5]]
    assert_balances(tradsys, owner, owner_id, {"ETH": (D("0.5"), D("0.5"))})


def test_oco_order_list_and_cancel(tradsys):
    """Order lists through ccxt. Its unified API has no OCO for spot
    (create_order always posts /api/v3/order), so the lists go through its
    implicit API: private_post_orderlist_oco, private_get_orderlist,
    private_get_openorderlist and private_delete_orderlist, signed by ccxt,
    which also names each leg (its broker prefix). The legs are ordinary
    orders to fetch_order, fetch_open_orders and fetch_balance: one lock
    for the pair; a fill of one expires the other; a trailing stop leg that
    fires expires the LIMIT_MAKER; a cancel of the list cancels both."""
    symbol, market_id, rate = "ETH/USDT", "ETHUSDT", COMMISSION["ETHUSDT"]
    owner_id, owner_key, owner_secret = tradsys.create_user("oco-owner", {"ETH": "2"})
    tape_id, tape_key, tape_secret = tradsys.create_user("oco-tape", {"ETH": "1"})
    taker_id, taker_key, taker_secret = tradsys.create_user("oco-taker", {"USDT": "100000"})
    owner, tape = exchange(tradsys, owner_key, owner_secret), exchange(tradsys, tape_key, tape_secret)
    taker = exchange(tradsys, taker_key, taker_secret)
    for ex in (owner, tape, taker):
        ex.load_markets()

    def trade_at(price):
        tape.create_order(symbol, "limit", "sell", 0.01, price)
        taker.create_order(symbol, "limit", "buy", 0.01, price, {"timeInForce": "IOC"})

    def oco(params):
        return owner.private_post_orderlist_oco({"symbol": market_id, "side": "SELL", **params})

    def legs(answer):
        return tuple(str(o["orderId"]) for o in answer["orders"])

    def status(order_id):
        o = owner.fetch_order(order_id, symbol)
        return (o["status"], o["info"]["status"], o["filled"], o["info"]["orderListId"])

    trade_at(2000.0)

    # A stop above the last price: ccxt raises InvalidOrder with Binance's answer.
    with pytest.raises(ccxt.InvalidOrder) as info:
        oco({"quantity": "0.5", "aboveType": "LIMIT_MAKER", "abovePrice": "2100",
             "belowType": "STOP_LOSS", "belowStopPrice": "2050"})
    relationship = '{"code":-2010,"msg":"The relationship of the prices for the orders is not correct."}'
    assert str(info.value) == "binance " + relationship
    assert_balances(tradsys, owner, owner_id, {"ETH": (D(2), ZERO)})

    # 1. A LIMIT_MAKER at 2,100 and a stop-limit at 1,900 / 1,890 for 0.5 ETH.
    q1 = D("0.5")
    first = oco({"quantity": str(q1), "aboveType": "LIMIT_MAKER", "abovePrice": "2100",
                 "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": "1900", "belowPrice": "1890",
                 "belowTimeInForce": "GTC", "listClientOrderId": "ccxt-oco-1"})
    tp1, sl1 = legs(first)
    list1 = first["orderListId"]
    assert (str(list1), first["contingencyType"], first["listStatusType"], first["listOrderStatus"],
            first["listClientOrderId"]) == (tp1, "OCO", "EXEC_STARTED", "EXECUTING", "ccxt-oco-1")
    # ccxt named both legs: its spot broker id and 22 random characters.
    client_ids = [o["clientOrderId"] for o in first["orders"]]
    assert all(c.startswith("x-TKT5PX2F") and len(c) == 32 for c in client_ids), client_ids
    assert [(str(r["orderId"]), r["orderListId"], r["clientOrderId"], r["type"], r["status"], r["price"],
             r.get("stopPrice"), r["origQty"]) for r in first["orderReports"]] == [
        (tp1, list1, client_ids[0], "LIMIT_MAKER", "NEW", fmt(2100), None, fmt(q1)),
        (sl1, list1, client_ids[1], "STOP_LOSS_LIMIT", "NEW", fmt(1890), fmt(1900), fmt(q1)),
    ]
    assert [(o["id"], o["clientOrderId"], o["status"], o["type"], o["postOnly"], o["side"], o["price"],
             o["triggerPrice"], o["amount"], o["info"]["orderListId"]) for o in owner.fetch_open_orders(symbol)] == [
        (tp1, client_ids[0], "open", "limit", True, "sell", 2100.0, None, float(q1), list1),
        (sl1, client_ids[1], "open", "limit", False, "sell", 1890.0, 1900.0, float(q1), list1),
    ]
    # One lock of 0.5 ETH for the pair.
    assert_balances(tradsys, owner, owner_id, {"ETH": (D(2) - q1, q1)})

    # A taker lifts the LIMIT_MAKER: the stop-limit expires.
    lifted = taker.create_order(symbol, "limit", "buy", float(q1), 2100.0, {"timeInForce": "IOC"})
    assert (lifted["status"], lifted["filled"]) == ("closed", float(q1))
    assert status(tp1) == ("closed", "FILLED", float(q1), list1)
    assert status(sl1) == ("expired", "EXPIRED", 0.0, list1)
    done = owner.private_get_orderlist({"orderListId": list1})
    assert (done["listStatusType"], done["listOrderStatus"], done["orders"]) == (
        "ALL_DONE", "ALL_DONE", first["orders"])
    quote1 = quote_amount(D(2100), q1)
    owner_usdt = quote1 - commission(quote1, rate)
    assert owner_usdt == D("1048.95")
    assert_balances(tradsys, owner, owner_id, {"ETH": (D(2) - q1, ZERO), "USDT": (owner_usdt, ZERO)})
    assert owner.fetch_open_orders(symbol) == []

    # 2. A LIMIT_MAKER at 2,200 and a 1 % trailing stop: open, then the
    # list is canceled through DELETE /api/v3/orderList.
    q2 = D("0.4")
    second = oco({"quantity": str(q2), "aboveType": "LIMIT_MAKER", "abovePrice": "2200",
                  "belowType": "STOP_LOSS", "belowTrailingDelta": "100"})
    tp2, sl2 = legs(second)
    list2 = second["orderListId"]
    assert second["listClientOrderId"].startswith("x-TKT5PX2F")  # ccxt drew it
    assert [(r["type"], r["status"], r["price"], r.get("stopPrice"), r.get("trailingDelta"))
            for r in second["orderReports"]] == [
        ("LIMIT_MAKER", "NEW", fmt(2200), None, None), ("STOP_LOSS", "NEW", fmt(0), fmt(0), 100)]
    assert [(o["id"], o["status"], o["type"], o["amount"], o["info"]["orderListId"], o["info"].get("trailingDelta"))
            for o in owner.fetch_open_orders(symbol)] == [
        (tp2, "open", "limit", float(q2), list2, None), (sl2, "open", "market", float(q2), list2, 100)]
    assert [(l["orderListId"], l["listStatusType"]) for l in owner.private_get_openorderlist()] == [
        (list2, "EXEC_STARTED")]
    assert_balances(tradsys, owner, owner_id, {"ETH": (D(2) - q1 - q2, q2), "USDT": (owner_usdt, ZERO)})
    canceled = owner.private_delete_orderlist({"symbol": market_id, "orderListId": list2})
    assert (canceled["orderListId"], canceled["listStatusType"], canceled["listOrderStatus"]) == (
        list2, "ALL_DONE", "ALL_DONE")
    assert [(str(r["orderId"]), r["status"]) for r in canceled["orderReports"]] == [
        (tp2, "CANCELED"), (sl2, "CANCELED")]
    assert status(tp2) == ("canceled", "CANCELED", 0.0, list2)
    assert status(sl2) == ("canceled", "CANCELED", 0.0, list2)
    assert owner.fetch_open_orders(symbol) == [] and owner.private_get_openorderlist() == []
    assert_balances(tradsys, owner, owner_id, {"ETH": (D(2) - q1, ZERO), "USDT": (owner_usdt, ZERO)})

    # 3. The same pair for 0.3 ETH, and the trailing stop fires: 1 % below
    # the highest trade since it was placed (2,150), it sells to the bid
    # at 2,000 and the LIMIT_MAKER expires.
    q3, bid = D("0.3"), D(2000)
    taker.create_order(symbol, "limit", "buy", float(q3), float(bid))
    third = oco({"quantity": str(q3), "aboveType": "LIMIT_MAKER", "abovePrice": "2300",
                 "belowType": "STOP_LOSS", "belowTrailingDelta": "100"})
    tp3, sl3 = legs(third)
    list3 = third["orderListId"]
    trade_at(2150.0)
    trade_at(2128.51)
    assert status(sl3) == ("open", "NEW", 0.0, list3)
    assert status(tp3) == ("open", "NEW", 0.0, list3)
    trade_at(2128.5)
    assert status(sl3) == ("closed", "FILLED", float(q3), list3)
    assert status(tp3) == ("expired", "EXPIRED", 0.0, list3)
    assert owner.private_get_orderlist({"orderListId": list3})["listStatusType"] == "ALL_DONE"
    quote3 = quote_amount(bid, q3)
    owner_usdt += quote3 - commission(quote3, rate)
    assert owner_usdt == D("1648.35")
    assert_balances(tradsys, owner, owner_id, {"ETH": (D(2) - q1 - q3, ZERO), "USDT": (owner_usdt, ZERO)})
    assert {l["orderListId"]: l["listStatusType"] for l in owner.private_get_allorderlist()} == {
        list1: "ALL_DONE", list2: "ALL_DONE", list3: "ALL_DONE"}
