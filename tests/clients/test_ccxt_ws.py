"""ccxt's websocket class (ccxt.pro.binance), unmodified, for market data.

ccxt opens ws://HOST/ws/<n> (n counts its connections) and then sends
SUBSCRIBE. Its REST URLs point at the local server as in test_ccxt.py; its
websocket URLs too: the spot stream at /ws, every other one (futures,
options, the WebSocket API) at a local path tradsys does not serve.

Every figure ccxt reports is checked exactly: trades, tickers and candles
against the trades placed here, order books against the REST depth of the
same moment.
"""

import asyncio

import ccxt.pro
import pytest

from money import D
from test_ccxt import local_urls, settings

SYMBOLS = ("BTC/USDT", "ETH/USDT")
WAIT_S = 10


def ws_exchange(tradsys, api_key=None, secret=None):
    ex = ccxt.pro.binance(settings(api_key, secret))
    ws = dict(ex.urls["api"]["ws"])
    urls = local_urls(ex.urls, tradsys.base_url)
    base = tradsys.base_url.replace("http://", "ws://", 1)
    urls["api"]["ws"] = {name: f"{base}/unserved/ws-{name}" for name in ws}
    urls["api"]["ws"]["spot"] = f"{base}/ws"
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
    for name, url in ex.urls["api"]["ws"].items():
        assert url.startswith(base + "/"), (name, url)
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
