"""ccxt's websocket class (ccxt.pro.binance), unmodified, for market data
and for trading and user data over the WebSocket API.

ccxt opens ws://HOST/ws/<n> (n counts its connections) and then sends
SUBSCRIBE. Its REST URLs point at the local server as in test_ccxt.py; its
websocket URLs too: the spot stream at /ws, spot's WebSocket API at
/ws-api/v3, every other one (futures, options, their WebSocket APIs) at a
local path tradsys does not serve.

On the WebSocket API ccxt signs each request with the HMAC key, and its
watch methods for spot subscribe with userDataStream.subscribe.signature
on that same connection.

Every figure ccxt reports is checked exactly: trades, tickers and candles
against the trades placed here, order books against the REST depth of the
same moment, orders, fills, fees and balances against amounts computed
with Decimal (money.py) and against the REST twins.
"""

import asyncio

import ccxt.pro
import pytest

from money import COMMISSION, D, ZERO, commission, fmt, quote_amount
from test_ccxt import local_urls, settings
from test_ws_api import rest_order, rest_public, rest_signed, without

SYMBOLS = ("BTC/USDT", "ETH/USDT")
WAIT_S = 10


def ws_exchange(tradsys, api_key=None, secret=None):
    ex = ccxt.pro.binance(settings(api_key, secret))
    ws = dict(ex.urls["api"]["ws"])
    urls = local_urls(ex.urls, tradsys.base_url)
    base = tradsys.base_url.replace("http://", "ws://", 1)
    urls["api"]["ws"] = {name: f"{base}/unserved/ws-{name}" for name in ws if name != "ws-api"}
    urls["api"]["ws"]["spot"] = f"{base}/ws"
    urls["api"]["ws"]["ws-api"] = {kind: f"{base}/unserved/ws-api-{kind}" for kind in ws["ws-api"]}
    urls["api"]["ws"]["ws-api"]["spot"] = f"{base}/ws-api/v3"
    ex.urls = urls
    return ex


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


async def trade_until(done, traders, symbol, price, qty):
    """Crosses `qty` at `price` between the two traders until `done` is set:
    events keep coming while a watch call waits for its first one."""
    maker, taker = traders
    while not done.is_set():
        await maker.create_order(symbol, "limit", "sell", qty, price)
        await taker.create_order(symbol, "limit", "buy", qty, price)
        await asyncio.sleep(0.2)  # pacing the trades a watcher waits for, not a race fix


async def watch_while_trading(watch, traders, symbol, price, qty):
    done = asyncio.Event()
    trading = asyncio.create_task(trade_until(done, traders, symbol, price, qty))
    try:
        return await asyncio.wait_for(watch(), WAIT_S)
    finally:
        done.set()
        await trading


def top(book, levels=20):
    return [level[:2] for level in book["bids"][:levels]], [level[:2] for level in book["asks"][:levels]]


async def until_streamed_book_is_rest(ex, symbol):
    """Waits for the depth updates still on their way (the stream sends
    every 100 ms or 1 s), one update at a time, until ccxt's book equals
    the REST depth; fails if it never does."""
    for _ in range(20):
        rest = await ex.fetch_order_book(symbol, 1000)
        if top(ex.orderbooks[symbol]) == top(rest):
            return
        await asyncio.wait_for(ex.watch_order_book(symbol), WAIT_S)
    assert top(ex.orderbooks[symbol]) == top(await ex.fetch_order_book(symbol, 1000)), symbol


@pytest.fixture
def traders(tradsys):
    _, maker_key, maker_secret = tradsys.create_user("ws-maker", {"BTC": "10", "ETH": "100"})
    _, taker_key, taker_secret = tradsys.create_user("ws-taker", {"USDT": "1000000"})
    return (maker_key, maker_secret), (taker_key, taker_secret)


def test_urls_all_local(tradsys):
    ex = ws_exchange(tradsys)
    base = tradsys.base_url.replace("http://", "ws://", 1)
    assert ex.urls["api"]["ws"]["spot"] == f"{base}/ws"
    assert ex.urls["api"]["ws"]["ws-api"]["spot"] == f"{base}/ws-api/v3"
    assert {"spot", "linear", "inverse"} <= set(ex.urls["api"]["ws"]["ws-api"])
    for name, entry in ex.urls["api"]["ws"].items():
        for kind, url in (entry.items() if isinstance(entry, dict) else [(None, entry)]):
            assert url.startswith(base + "/"), (name, kind, url)
    run(ex.close())


def test_watch_market_data_single_and_multi_symbol(tradsys, traders):
    (maker_key, maker_secret), (taker_key, taker_secret) = traders

    async def scenario():
        public = ws_exchange(tradsys)
        maker = ws_exchange(tradsys, maker_key, maker_secret)
        taker = ws_exchange(tradsys, taker_key, taker_secret)
        exchanges = (public, maker, taker)
        try:
            for ex in exchanges:
                await ex.load_markets()
            pair = (maker, taker)
            btc_price, eth_price, qty, eth_qty = 31234.5, 2345.67, 0.001, 0.01

            trades = await watch_while_trading(lambda: public.watch_trades("BTC/USDT"), pair, "BTC/USDT",
                                               btc_price, qty)
            assert trades and {(t["symbol"], t["price"], t["amount"]) for t in trades} == {
                ("BTC/USDT", btc_price, qty)}
            assert trades[-1]["cost"] == float(D("31234.5") * D("0.001"))

            ticker = await watch_while_trading(lambda: public.watch_ticker("BTC/USDT"), pair, "BTC/USDT",
                                               btc_price, qty)
            assert (ticker["symbol"], ticker["last"], ticker["close"]) == ("BTC/USDT", btc_price, btc_price)

            candles = await watch_while_trading(lambda: public.watch_ohlcv("BTC/USDT", "1m"), pair, "BTC/USDT",
                                                btc_price, qty)
            assert candles and candles[-1][4] == btc_price, candles[-1]

            multi = await watch_while_trading(lambda: public.watch_trades_for_symbols(list(SYMBOLS)), pair,
                                              "ETH/USDT", eth_price, eth_qty)
            assert multi and {(t["symbol"], t["price"]) for t in multi} <= {
                ("BTC/USDT", btc_price), ("ETH/USDT", eth_price)}

            tickers = await watch_while_trading(lambda: public.watch_tickers(list(SYMBOLS)), pair, "ETH/USDT",
                                                eth_price, eth_qty)
            assert set(tickers) <= set(SYMBOLS) and tickers
            for symbol, t in tickers.items():
                assert t["last"] == {"BTC/USDT": btc_price, "ETH/USDT": eth_price}[symbol], t

            candles = await watch_while_trading(
                lambda: public.watch_ohlcv_for_symbols([[s, "1m"] for s in SYMBOLS]), pair, "ETH/USDT",
                eth_price, eth_qty)
            for symbol, by_frame in candles.items():
                assert by_frame["1m"][-1][4] == {"BTC/USDT": btc_price, "ETH/USDT": eth_price}[symbol]

            # Resting orders on both books, then the books ccxt keeps from
            # the depth stream: once the last update is in, they equal the
            # REST depth exactly.
            await maker.create_order("BTC/USDT", "limit", "sell", 0.002, 40000.0)
            await taker.create_order("BTC/USDT", "limit", "buy", 0.003, 20000.0)
            await maker.create_order("ETH/USDT", "limit", "sell", 0.5, 3000.0)
            book = await watch_while_trading(lambda: public.watch_order_book("BTC/USDT"), pair, "BTC/USDT",
                                             btc_price, qty)
            assert book["symbol"] == "BTC/USDT"
            await watch_while_trading(lambda: public.watch_order_book_for_symbols(list(SYMBOLS)), pair,
                                      "ETH/USDT", eth_price, eth_qty)
            for symbol in SYMBOLS:
                await until_streamed_book_is_rest(public, symbol)
            btc, eth = public.orderbooks["BTC/USDT"], public.orderbooks["ETH/USDT"]
            assert [40000.0, 0.002] in btc["asks"] and [20000.0, 0.003] in btc["bids"]
            assert [3000.0, 0.5] in eth["asks"]
        finally:
            for ex in exchanges:
                await ex.close()

    run(scenario())
    for _, key, secret in tradsys.created[-2:]:
        tradsys.cancel_everything(key, secret)


# --------------------------------------------------------------------------
# The WebSocket API: orders, balances and the user data stream.

RATE = COMMISSION["BTCUSDT"]


def floats(free, used):
    """A ccxt balance entry of Decimal amounts."""
    return {"free": float(free), "used": float(used), "total": float(free + used)}


async def next_update(task):
    return await asyncio.wait_for(task, WAIT_S)


def test_orders_balances_and_user_data_over_ws_api(tradsys):
    """create_order_ws, cancel_order_ws and fetch_balance_ws on
    /ws-api/v3; watch_orders, watch_my_trades and watch_balance on the
    subscription ccxt makes there. Another user fills part of the order over
    REST; every figure is checked exactly."""
    user_id, key, secret = tradsys.create_user("ccxt-ws-api", {"USDT": "1000"})
    user = (user_id, key, secret)
    taker = tradsys.create_user("ccxt-ws-api-taker", {"BTC": "1"})
    price, qty, fill_qty = D("30000.00"), D("0.002"), D("0.0015")
    locked = quote_amount(price, qty)
    fill_quote, fee = quote_amount(price, fill_qty), commission(fill_qty, RATE)

    async def scenario():
        ex = ws_exchange(tradsys, key, secret)
        try:
            await ex.load_markets()
            balance = await ex.fetch_balance_ws()
            account = rest_signed(tradsys, "GET", "/api/v3/account", user)
            assert without(balance["info"], "updateTime") == without(account, "updateTime")
            # ccxt 4.5.90 reads account.status balances only for margin
            # (handle_account_status_ws passes no market type to
            # parse_balance_custom): its unified fields stay empty for spot.
            assert (balance["free"], balance["used"], balance["total"]) == ({}, {}, {})

            # userDataStream.subscribe.signature, before any watch waits.
            await ex.authenticate()
            orders = asyncio.create_task(ex.watch_orders("BTC/USDT"))
            balances = asyncio.create_task(ex.watch_balance())

            placed = await ex.create_order_ws("BTC/USDT", "limit", "buy", float(qty), float(price))
            info = placed["info"]
            assert (info["symbol"], info["status"], info["type"], info["side"], info["price"], info["origQty"],
                    info["executedQty"], info["fills"]) == (
                "BTCUSDT", "NEW", "LIMIT", "BUY", fmt(price), fmt(qty), fmt(0), [])
            assert (placed["id"], placed["clientOrderId"], placed["status"], placed["price"], placed["amount"],
                    placed["filled"], placed["remaining"]) == (
                str(info["orderId"]), info["clientOrderId"], "open", float(price), float(qty), 0.0, float(qty))
            [order] = await next_update(orders)
            assert (order["id"], order["clientOrderId"], order["status"], order["info"]["x"], order["filled"],
                    order["amount"], order["price"]) == (
                placed["id"], placed["clientOrderId"], "open", "NEW", 0.0, float(qty), float(price))
            balance = await next_update(balances)
            assert (balance["BTC"], balance["USDT"]) == (floats(ZERO, ZERO), floats(D(1000) - locked, locked))

            # The taker fills part of it over REST.
            orders = asyncio.create_task(ex.watch_orders("BTC/USDT"))
            trades = asyncio.create_task(ex.watch_my_trades("BTC/USDT"))
            balances = asyncio.create_task(ex.watch_balance())
            sold = rest_order(tradsys, taker, "SELL", str(fill_qty), "29000.00")
            trade_id = sold["fills"][0]["tradeId"]
            [order] = await next_update(orders)
            assert (order["id"], order["status"], order["filled"], order["remaining"], order["cost"],
                    order["average"], order["info"]["x"], order["info"]["t"]) == (
                placed["id"], "open", float(fill_qty), float(qty - fill_qty), float(fill_quote), float(price),
                "TRADE", trade_id)
            assert (order["info"]["n"], order["info"]["N"], order["fee"]) == (
                fmt(fee), "BTC", {"currency": "BTC", "cost": float(fee)})
            [trade] = await next_update(trades)
            assert (trade["id"], trade["order"], trade["symbol"], trade["side"], trade["takerOrMaker"],
                    trade["price"], trade["amount"], trade["cost"], trade["fee"]) == (
                str(trade_id), placed["id"], "BTC/USDT", "buy", "maker", float(price), float(fill_qty),
                float(fill_quote), {"currency": "BTC", "cost": float(fee)})
            balance = await next_update(balances)
            assert (balance["BTC"], balance["USDT"]) == (
                floats(fill_qty - fee, ZERO), floats(D(1000) - locked, locked - fill_quote))

            # The rest is cancelled over the WebSocket API.
            orders = asyncio.create_task(ex.watch_orders("BTC/USDT"))
            balances = asyncio.create_task(ex.watch_balance())
            canceled = await ex.cancel_order_ws(placed["id"], "BTC/USDT")
            info = canceled["info"]
            assert (info["orderId"], info["origClientOrderId"], info["status"], info["executedQty"],
                    info["cummulativeQuoteQty"]) == (
                int(placed["id"]), placed["clientOrderId"], "CANCELED", fmt(fill_qty), fmt(fill_quote))
            assert (canceled["id"], canceled["status"], canceled["filled"], canceled["remaining"]) == (
                placed["id"], "canceled", float(fill_qty), float(qty - fill_qty))
            [order] = await next_update(orders)
            assert (order["id"], order["clientOrderId"], order["status"], order["info"]["x"],
                    order["info"]["c"]) == (
                placed["id"], placed["clientOrderId"], "canceled", "CANCELED", info["clientOrderId"])
            balance = await next_update(balances)
            assert (balance["BTC"], balance["USDT"]) == (
                floats(fill_qty - fee, ZERO), floats(D(1000) - fill_quote, ZERO))

            balance = await ex.fetch_balance_ws()
            account = rest_signed(tradsys, "GET", "/api/v3/account", user)
            assert without(balance["info"], "updateTime") == without(account, "updateTime")
            got = {b["asset"]: (b["free"], b["locked"]) for b in balance["info"]["balances"]}
            assert (got["BTC"], got["USDT"]) == ((fmt(fill_qty - fee), fmt(0)), (fmt(D(1000) - fill_quote), fmt(0)))
        finally:
            await ex.close()

    run(scenario())
    assert tradsys.balances(user_id) == {"BTC": (fill_qty - fee, ZERO), "USDT": (D(1000) - fill_quote, ZERO)}


def test_ws_api_reads_and_edits_equal_rest(tradsys):
    """ccxt's other spot WebSocket API calls (order.status, openOrders.status,
    allOrders, myTrades, klines, trades.historical, order.cancelReplace,
    openOrders.cancelAll, order.test) answer what REST answers."""
    user_id, key, secret = tradsys.create_user("ccxt-ws-reads", {"USDT": "1000"})
    user = (user_id, key, secret)
    taker = tradsys.create_user("ccxt-ws-reads-taker", {"BTC": "1"})

    async def scenario():
        ex = ws_exchange(tradsys, key, secret)
        try:
            await ex.load_markets()
            placed = await ex.create_order_ws("BTC/USDT", "limit", "buy", 0.001, 30000.0)
            other = await ex.create_order_ws("BTC/USDT", "limit", "buy", 0.001, 29000.0)
            rest_order(tradsys, taker, "SELL", "0.00100", "30000.00")
            market = {"symbol": "BTCUSDT"}

            got = await ex.fetch_order_ws(placed["id"], "BTC/USDT")
            assert got["info"] == rest_signed(tradsys, "GET", "/api/v3/order", user,
                                              {**market, "orderId": placed["id"]})
            assert (got["status"], got["filled"]) == ("closed", 0.001)
            open_orders = await ex.fetch_open_orders_ws("BTC/USDT")
            assert [o["info"] for o in open_orders] == rest_signed(tradsys, "GET", "/api/v3/openOrders", user, market)
            assert [o["id"] for o in open_orders] == [other["id"]]
            every = await ex.fetch_orders_ws("BTC/USDT")
            assert [o["info"] for o in every] == rest_signed(tradsys, "GET", "/api/v3/allOrders", user, market)
            trades = await ex.fetch_my_trades_ws("BTC/USDT")
            assert [t["info"] for t in trades] == rest_signed(tradsys, "GET", "/api/v3/myTrades", user, market)
            assert [(t["order"], t["price"], t["amount"], t["takerOrMaker"]) for t in trades] == [
                (placed["id"], 30000.0, 0.001, "maker")]
            candles = await ex.fetch_ohlcv_ws("BTC/USDT", "1m", None, 2)
            rest = rest_public(tradsys, "/api/v3/klines", {**market, "interval": "1m", "limit": 2})
            assert candles == [[c[0], float(c[1]), float(c[2]), float(c[3]), float(c[4]), float(c[5])] for c in rest]
            recent = await ex.fetch_trades_ws("BTC/USDT", None, 3)
            rest = rest_public(tradsys, "/api/v3/historicalTrades", {**market, "limit": 3})
            assert [t["info"] for t in recent] == rest

            edited = await ex.edit_order_ws(other["id"], "BTC/USDT", "limit", "buy", 0.001, 29500.0)
            assert (edited["status"], edited["price"], edited["amount"]) == ("open", 29500.0, 0.001)
            assert edited["info"]["orderId"] != int(other["id"])
            assert [o["orderId"] for o in rest_signed(tradsys, "GET", "/api/v3/openOrders", user, market)] == [
                edited["info"]["orderId"]]
            tested = await ex.create_order_ws("BTC/USDT", "limit", "buy", 0.001, 29000.0, {"test": True})
            assert tested["info"] == {}
            canceled = await ex.cancel_all_orders_ws("BTC/USDT")
            assert [(o["id"], o["status"]) for o in canceled] == [(str(edited["info"]["orderId"]), "canceled")]
            assert rest_signed(tradsys, "GET", "/api/v3/openOrders", user, market) == []
        finally:
            await ex.close()

    run(scenario())


def test_watch_my_trades_one_trade_per_fill(tradsys):
    """A sell that trades part on arrival and rests the rest, then fills:
    watch_my_trades reports exactly the two fills."""
    _, key, secret = tradsys.create_user("ccxt-ws-taker", {"BTC": "1"})
    buyer = tradsys.create_user("ccxt-ws-buyer", {"USDT": "1000"})
    rest_order(tradsys, buyer, "BUY", "0.00100", "30000.00")

    async def scenario():
        ex = ws_exchange(tradsys, key, secret)
        try:
            await ex.load_markets()
            await ex.authenticate()
            trades = asyncio.create_task(ex.watch_my_trades("BTC/USDT"))
            placed = await ex.create_order_ws("BTC/USDT", "limit", "sell", 0.002, 30000.0)
            first = await next_update(trades)
            trades = asyncio.create_task(ex.watch_my_trades("BTC/USDT"))
            bought = rest_order(tradsys, buyer, "BUY", "0.00100", "30000.00")
            second = await next_update(trades)
            assert [(t["id"], t["order"], t["amount"]) for t in first] == [
                (str(placed["info"]["fills"][0]["tradeId"]), placed["id"], 0.001)]
            assert [(t["id"], t["order"], t["amount"]) for t in second] == [
                (str(bought["fills"][0]["tradeId"]), placed["id"], 0.001)]
        finally:
            await ex.close()

    run(scenario())
