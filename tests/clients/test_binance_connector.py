"""binance-connector (binance.spot.Spot), unmodified, against tradsys.

Every amount is checked exactly: the expected values are computed with
Decimal by the rules in money.py and compared to the strings the server
returns and to the admin API's balances.
"""

import time

import pytest
from binance.error import ClientError
from binance.spot import Spot

from conftest import fixture_pem
from money import COMMISSION, D, ZERO, commission, fmt, quote_amount

SYMBOL = "BTCUSDT"
RATE = COMMISSION[SYMBOL]
INSUFFICIENT = "Account has insufficient balance for requested action."


def client(tradsys, api_key=None, secret=None):
    spot = Spot(api_key, secret, base_url=tradsys.base_url, timeout=5)
    spot.session.trust_env = False  # never a proxy from the environment
    return spot


def account_balances(spot):
    account = spot.account()
    for b in account["balances"]:
        assert b["free"] == fmt(D(b["free"])) and b["locked"] == fmt(D(b["locked"])), b
    return {b["asset"]: (b["free"], b["locked"]) for b in account["balances"]}


def assert_balances(tradsys, spot, user_id, expected):
    """expected: {asset: (free, locked)} as Decimals; unnamed assets are zero."""
    got = account_balances(spot)
    for asset, (free, locked) in expected.items():
        assert got.get(asset, (fmt(0), fmt(0))) == (fmt(free), fmt(locked)), f"{asset} via /api/v3/account"
    for asset, (free, locked) in got.items():
        if asset not in expected:
            assert (free, locked) == (fmt(0), fmt(0)), f"unexpected balance {asset}: {free} {locked}"
    assert tradsys.balances(user_id) == expected, "balances via the admin API"


def assert_error(call, code, msg=None):
    """The call raises the client's error with Binance's code (and message)."""
    with pytest.raises(ClientError) as info:
        call()
    e = info.value
    assert 400 <= e.status_code < 500 and e.error_code == code, (e.status_code, e.error_code, e.error_message)
    if msg is not None:
        assert e.error_message == msg
    return e


def test_public_endpoints(tradsys):
    spot = client(tradsys)
    assert spot.ping() == {}
    before = int(time.time() * 1000)
    server_time = spot.time()["serverTime"]
    after = int(time.time() * 1000)
    assert before - 1000 <= server_time <= after + 1000

    info = spot.exchange_info()
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT", "ETHBTC", "EURUSD"]
    btc = spot.exchange_info(symbol=SYMBOL)["symbols"]
    assert len(btc) == 1
    btc = btc[0]
    assert (btc["baseAsset"], btc["quoteAsset"], btc["status"]) == ("BTC", "USDT", "TRADING")
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert filters["LOT_SIZE"]["minQty"] == "0.00001000"
    assert filters["NOTIONAL"]["minNotional"] == "5.00000000"

    assert_error(lambda: spot.exchange_info(symbol="NOPEUSDT"), -1121)
    assert_error(lambda: spot.depth("NOPEUSDT"), -1121)
    assert_error(lambda: spot.ticker_price("NOPEUSDT"), -1121)


def test_orders_fills_fees_and_market_data(tradsys):
    """Two users trade BTCUSDT with limit and market orders; every order,
    fill, fee, balance and trade is checked exactly."""
    alice_id, alice_key, alice_secret = tradsys.create_user("alice", {"USDT": "10000"})
    bob_id, bob_key, bob_secret = tradsys.create_user("bob", {"BTC": "1"})
    alice = client(tradsys, alice_key, alice_secret)
    bob = client(tradsys, bob_key, bob_secret)
    public = client(tradsys)

    book = public.depth(SYMBOL, limit=5)
    assert (book["bids"], book["asks"]) == ([], []), "the book starts empty"

    # 1. alice rests a buy: price x qty of USDT is locked.
    p1, q1 = D("30000.01"), D("0.01")
    a1 = alice.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC",
                         price=str(p1), quantity=str(q1), newOrderRespType="FULL")
    assert a1["symbol"] == SYMBOL and isinstance(a1["orderId"], int)
    assert (a1["status"], a1["type"], a1["side"], a1["timeInForce"]) == ("NEW", "LIMIT", "BUY", "GTC")
    assert (a1["price"], a1["origQty"]) == (fmt(p1), fmt(q1))
    assert (a1["executedQty"], a1["cummulativeQuoteQty"], a1["fills"]) == (fmt(0), fmt(0), [])
    usdt_free, usdt_locked = D(10000) - quote_amount(p1, q1), quote_amount(p1, q1)
    assert_balances(tradsys, alice, alice_id, {"USDT": (usdt_free, usdt_locked)})
    book = public.depth(SYMBOL, limit=5)
    assert (book["bids"], book["asks"]) == ([[fmt(p1), fmt(q1)]], [])

    # 2. bob sells below alice's price: fills at the maker's price.
    q2 = D("0.00333")
    b2 = bob.new_order(symbol=SYMBOL, side="SELL", type="LIMIT", timeInForce="GTC",
                       price="29000.00", quantity=str(q2), newOrderRespType="FULL")
    quote2 = quote_amount(p1, q2)
    assert quote2 == D("99.90003330")
    fee2_bob = commission(quote2, RATE)  # 0.0999000333 rounds up
    assert fee2_bob == D("0.09990004")
    fee2_alice = commission(q2, RATE)
    assert (b2["status"], b2["executedQty"], b2["cummulativeQuoteQty"]) == ("FILLED", fmt(q2), fmt(quote2))
    assert len(b2["fills"]) == 1
    fill = b2["fills"][0]
    assert (fill["price"], fill["qty"], fill["commission"], fill["commissionAsset"]) == (
        fmt(p1), fmt(q2), fmt(fee2_bob), "USDT")
    trade2_id = fill["tradeId"]

    # 3. bob sells at market: fills against alice's remainder.
    q3 = D("0.002")
    b3 = bob.new_order(symbol=SYMBOL, side="SELL", type="MARKET", quantity=str(q3), newOrderRespType="FULL")
    quote3 = quote_amount(p1, q3)
    fee3_bob, fee3_alice = commission(quote3, RATE), commission(q3, RATE)
    assert (b3["status"], b3["type"], b3["executedQty"], b3["cummulativeQuoteQty"]) == (
        "FILLED", "MARKET", fmt(q3), fmt(quote3))
    assert [(f["price"], f["qty"], f["commission"], f["commissionAsset"]) for f in b3["fills"]] == [
        (fmt(p1), fmt(q3), fmt(fee3_bob), "USDT")]
    trade3_id = b3["fills"][0]["tradeId"]
    assert trade3_id > trade2_id

    # 4. bob rests a sell above the bid; alice buys it at market for a quote amount.
    p4, q4 = D("30100.00"), D("0.005")
    b4 = bob.new_order(symbol=SYMBOL, side="SELL", type="LIMIT", timeInForce="GTC",
                       price=str(p4), quantity=str(q4), newOrderRespType="RESULT")
    assert (b4["status"], b4["executedQty"]) == ("NEW", fmt(0))
    assert "fills" not in b4
    ticker = public.book_ticker(SYMBOL)
    remaining1 = q1 - q2 - q3
    assert (ticker["bidPrice"], ticker["bidQty"], ticker["askPrice"], ticker["askQty"]) == (
        fmt(p1), fmt(remaining1), fmt(p4), fmt(q4))

    cost5 = D("30.1")
    q5 = D("0.001")  # 30.1 / 30100 exactly
    a5 = alice.new_order(symbol=SYMBOL, side="BUY", type="MARKET", quoteOrderQty=str(cost5),
                         newOrderRespType="FULL")
    quote5 = quote_amount(p4, q5)
    assert quote5 == cost5
    fee5_alice, fee5_bob = commission(q5, RATE), commission(quote5, RATE)
    assert (a5["status"], a5["executedQty"], a5["cummulativeQuoteQty"], a5["origQuoteOrderQty"]) == (
        "FILLED", fmt(q5), fmt(quote5), fmt(cost5))
    assert [(f["price"], f["qty"], f["commission"], f["commissionAsset"]) for f in a5["fills"]] == [
        (fmt(p4), fmt(q5), fmt(fee5_alice), "BTC")]
    trade5_id = a5["fills"][0]["tradeId"]

    # Balances after three fills.
    alice_btc = q2 - fee2_alice + q3 - fee3_alice + q5 - fee5_alice
    alice_usdt_free = D(10000) - quote_amount(p1, q1) - quote5
    alice_usdt_locked = quote_amount(p1, q1) - quote2 - quote3
    assert alice_usdt_locked == quote_amount(p1, remaining1)
    assert_balances(tradsys, alice, alice_id,
                    {"USDT": (alice_usdt_free, alice_usdt_locked), "BTC": (alice_btc, ZERO)})
    bob_usdt = quote2 - fee2_bob + quote3 - fee3_bob + quote5 - fee5_bob
    bob_btc_free = D(1) - q2 - q3 - q4
    bob_btc_locked = q4 - q5
    assert_balances(tradsys, bob, bob_id, {"USDT": (bob_usdt, ZERO), "BTC": (bob_btc_free, bob_btc_locked)})

    # 5. Query, then cancel, alice's partly filled order.
    got = alice.get_order(SYMBOL, orderId=a1["orderId"])
    assert (got["orderId"], got["clientOrderId"], got["status"]) == (a1["orderId"], a1["clientOrderId"], "PARTIALLY_FILLED")
    assert (got["price"], got["origQty"], got["executedQty"], got["cummulativeQuoteQty"]) == (
        fmt(p1), fmt(q1), fmt(q2 + q3), fmt(quote2 + quote3))
    canceled = alice.cancel_order(SYMBOL, orderId=a1["orderId"])
    assert (canceled["orderId"], canceled["status"], canceled["executedQty"], canceled["origQty"]) == (
        a1["orderId"], "CANCELED", fmt(q2 + q3), fmt(q1))
    assert alice.get_order(SYMBOL, orderId=a1["orderId"])["status"] == "CANCELED"
    alice_usdt_free += alice_usdt_locked
    assert_balances(tradsys, alice, alice_id, {"USDT": (alice_usdt_free, ZERO), "BTC": (alice_btc, ZERO)})

    # 6. Cancel all of bob's open orders at once.
    p6, q6 = D("30200.00"), D("0.001")
    b6 = bob.new_order(symbol=SYMBOL, side="SELL", type="LIMIT", timeInForce="GTC",
                       price=str(p6), quantity=str(q6))
    open_ids = sorted(o["orderId"] for o in bob.get_open_orders(SYMBOL))
    assert open_ids == sorted([b4["orderId"], b6["orderId"]])
    assert alice.get_open_orders(SYMBOL) == []
    bob_btc_free -= q6
    bob_btc_locked += q6
    assert_balances(tradsys, bob, bob_id, {"USDT": (bob_usdt, ZERO), "BTC": (bob_btc_free, bob_btc_locked)})
    all_canceled = bob.cancel_open_orders(SYMBOL)
    assert sorted((o["orderId"], o["status"]) for o in all_canceled) == sorted(
        [(b4["orderId"], "CANCELED"), (b6["orderId"], "CANCELED")])
    assert bob.get_open_orders(SYMBOL) == []
    bob_btc_free += bob_btc_locked
    assert_balances(tradsys, bob, bob_id, {"USDT": (bob_usdt, ZERO), "BTC": (bob_btc_free, ZERO)})
    book = public.depth(SYMBOL, limit=5)
    assert (book["bids"], book["asks"]) == ([], []), "every order was cancelled"

    # 7. Trade history of each side.
    def mine(spot):
        return [(t["id"], t["orderId"], t["price"], t["qty"], t["quoteQty"], t["commission"],
                 t["commissionAsset"], t["isBuyer"], t["isMaker"]) for t in spot.my_trades(SYMBOL)]

    assert mine(alice) == [
        (trade2_id, a1["orderId"], fmt(p1), fmt(q2), fmt(quote2), fmt(fee2_alice), "BTC", True, True),
        (trade3_id, a1["orderId"], fmt(p1), fmt(q3), fmt(quote3), fmt(fee3_alice), "BTC", True, True),
        (trade5_id, a5["orderId"], fmt(p4), fmt(q5), fmt(quote5), fmt(fee5_alice), "BTC", True, False),
    ]
    assert mine(bob) == [
        (trade2_id, b2["orderId"], fmt(p1), fmt(q2), fmt(quote2), fmt(fee2_bob), "USDT", False, False),
        (trade3_id, b3["orderId"], fmt(p1), fmt(q3), fmt(quote3), fmt(fee3_bob), "USDT", False, False),
        (trade5_id, b4["orderId"], fmt(p4), fmt(q5), fmt(quote5), fmt(fee5_bob), "USDT", False, True),
    ]
    all_orders = alice.get_orders(SYMBOL)
    assert [(o["orderId"], o["status"]) for o in all_orders] == [
        (a1["orderId"], "CANCELED"), (a5["orderId"], "FILLED")]

    # 8. Public market data shows the three trades, the last one last.
    recent = public.trades(SYMBOL, limit=3)
    assert [(t["id"], t["price"], t["qty"], t["quoteQty"], t["isBuyerMaker"]) for t in recent] == [
        (trade2_id, fmt(p1), fmt(q2), fmt(quote2), True),
        (trade3_id, fmt(p1), fmt(q3), fmt(quote3), True),
        (trade5_id, fmt(p4), fmt(q5), fmt(quote5), False),
    ]
    ticker = public.ticker_24hr(SYMBOL)
    assert (ticker["symbol"], ticker["lastPrice"], ticker["lastQty"]) == (SYMBOL, fmt(p4), fmt(q5))
    assert D(ticker["volume"]) >= q2 + q3 + q5 and D(ticker["highPrice"]) >= p4
    assert public.ticker_price(SYMBOL) == {"symbol": SYMBOL, "price": fmt(p4)}
    # The minute that holds the last trade closes at its price.
    trade5_time = public.trades(SYMBOL, limit=1)[0]["time"]
    klines = [k for k in public.klines(SYMBOL, "1m", limit=2) if k[0] <= trade5_time <= k[6]]
    assert len(klines) == 1, klines
    open_time, _open, high, low, close, volume = klines[0][:6]
    assert close == fmt(p4) and D(high) >= p4 and D(low) <= p4 and D(volume) >= q5
    assert open_time % 60000 == 0 and klines[0][6] == open_time + 59999


def test_time_in_force_and_limit_maker(tradsys):
    """IOC keeps what fills and expires the rest, FOK fills whole or not at
    all, LIMIT_MAKER never takes: funds locked by each come back exactly."""
    maker_id, maker_key, maker_secret = tradsys.create_user("maker", {"ETH": "2"})
    taker_id, taker_key, taker_secret = tradsys.create_user("taker", {"USDT": "1000"})
    maker = client(tradsys, maker_key, maker_secret)
    taker = client(tradsys, taker_key, taker_secret)
    symbol, rate = "ETHUSDT", COMMISSION["ETHUSDT"]
    price, qty = D("2000.37"), D("0.1234")
    sell = maker.new_order(symbol=symbol, side="SELL", type="LIMIT", timeInForce="GTC",
                           price=str(price), quantity=str(qty))
    assert sell["status"] == "NEW"

    fok = taker.new_order(symbol=symbol, side="BUY", type="LIMIT", timeInForce="FOK",
                          price=str(price), quantity="0.2", newOrderRespType="FULL")
    assert (fok["status"], fok["executedQty"], fok["fills"]) == ("EXPIRED", fmt(0), [])
    assert_balances(tradsys, taker, taker_id, {"USDT": (D(1000), ZERO)})

    ioc = taker.new_order(symbol=symbol, side="BUY", type="LIMIT", timeInForce="IOC",
                          price="2001.00", quantity="0.2", newOrderRespType="FULL")
    quote = quote_amount(price, qty)
    assert quote == D("246.845658")
    taker_fee, maker_fee = commission(qty, rate), commission(quote, rate)
    assert maker_fee == D("0.24684566")  # 0.246845658 rounds up
    assert (ioc["status"], ioc["executedQty"], ioc["cummulativeQuoteQty"]) == ("EXPIRED", fmt(qty), fmt(quote))
    assert [(f["price"], f["qty"], f["commission"], f["commissionAsset"]) for f in ioc["fills"]] == [
        (fmt(price), fmt(qty), fmt(taker_fee), "ETH")]
    assert_balances(tradsys, taker, taker_id, {"USDT": (D(1000) - quote, ZERO), "ETH": (qty - taker_fee, ZERO)})
    assert_balances(tradsys, maker, maker_id, {"ETH": (D(2) - qty, ZERO), "USDT": (quote - maker_fee, ZERO)})

    # Binance answers LIMIT_MAKER with ACK unless asked for more.
    rest = maker.new_order(symbol=symbol, side="SELL", type="LIMIT_MAKER", price="2100.00", quantity="0.5",
                           newOrderRespType="RESULT")
    assert (rest["status"], rest["type"]) == ("NEW", "LIMIT_MAKER")
    assert_error(lambda: taker.new_order(symbol=symbol, side="BUY", type="LIMIT_MAKER", price="2100.00",
                                         quantity="0.01"), -2010, "Order would immediately match and take.")
    assert_balances(tradsys, taker, taker_id, {"USDT": (D(1000) - quote, ZERO), "ETH": (qty - taker_fee, ZERO)})
    maker.cancel_order(symbol, orderId=rest["orderId"])
    assert_balances(tradsys, maker, maker_id, {"ETH": (D(2) - qty, ZERO), "USDT": (quote - maker_fee, ZERO)})


def test_errors(tradsys):
    user_id, api_key, secret = tradsys.create_user("errors", {"USDT": "100"})
    spot = client(tradsys, api_key, secret)

    assert_error(lambda: spot.new_order(symbol="NOPEUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                        price="1", quantity="1"), -1121)
    assert_error(lambda: spot.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC",
                                        price="30000.00", quantity="0.01"), -2010, INSUFFICIENT)
    assert_error(lambda: spot.new_order(symbol=SYMBOL, side="SELL", type="MARKET", quantity="0.001"),
                 -2010, INSUFFICIENT)
    assert_error(lambda: spot.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC",
                                        price="30000.00"), -1102)
    assert_error(lambda: spot.cancel_order(SYMBOL, orderId=987654321), -2011)
    assert_error(lambda: spot.get_order(SYMBOL, orderId=987654321), -2013)

    wrong = client(tradsys, api_key, "0" * len(secret))
    assert_error(wrong.account, -1022)
    unknown = client(tradsys, "no-such-key-" + api_key[:8], secret)
    assert_error(unknown.account, -2015)
    assert spot.account()["balances"]  # the right key still works

    # A timestamp far in the past is outside recvWindow.
    status, body = tradsys.signed("GET", "/api/v3/account", api_key, secret, {"timestamp": 1})
    assert 400 <= status < 500 and body["code"] == -1021, (status, body)

    tradsys.revoke_key(api_key)
    assert_error(spot.account, -2015)

    assert tradsys.balances(user_id) == {"USDT": (D(100), ZERO)}



@pytest.mark.parametrize("key_type", ["ED25519", "RSA"])
def test_ed25519_and_rsa_keys(tradsys, key_type):
    """binance-connector signs with a private key (`Spot(private_key=PEM)`):
    base64 Ed25519 or RSA signatures, URL-encoded. The admin API was given
    only the public key; the users trade, query and cancel exactly as with
    HMAC keys, and another key's signature is refused."""
    seller_id, seller_key, pair = tradsys.create_user(f"seller-{key_type}", {"BTC": "1"}, key_type=key_type)
    buyer_id, buyer_key, _ = tradsys.create_user(f"buyer-{key_type}", {"USDT": "1000"}, key_type=key_type)

    def keyed(api_key, private_pem):
        spot = Spot(api_key=api_key, private_key=private_pem, base_url=tradsys.base_url, timeout=5)
        spot.session.trust_env = False  # never a proxy from the environment
        return spot

    seller = keyed(seller_key, pair.private_pem)
    buyer = keyed(buyer_key, pair.private_pem)

    # The seller rests 0.01 BTC at 30000; the buyer takes it.
    price, qty = D("30000.00"), D("0.01")
    sell = seller.new_order(symbol=SYMBOL, side="SELL", type="LIMIT", timeInForce="GTC",
                            price=str(price), quantity=str(qty))
    assert (sell["status"], sell["price"], sell["origQty"]) == ("NEW", fmt(price), fmt(qty))
    assert_balances(tradsys, seller, seller_id, {"BTC": (D(1) - qty, qty)})
    buy = buyer.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC",
                          price=str(price), quantity=str(qty), newOrderRespType="FULL")
    quote = quote_amount(price, qty)
    assert quote == D("300.00000000")
    fee_buyer, fee_seller = commission(qty, RATE), commission(quote, RATE)
    assert (buy["status"], buy["executedQty"], buy["cummulativeQuoteQty"]) == ("FILLED", fmt(qty), fmt(quote))
    assert [(f["price"], f["qty"], f["commission"], f["commissionAsset"]) for f in buy["fills"]] == [
        (fmt(price), fmt(qty), fmt(fee_buyer), "BTC")]
    assert seller.get_order(SYMBOL, orderId=sell["orderId"])["status"] == "FILLED"
    assert_balances(tradsys, seller, seller_id, {"BTC": (D(1) - qty, ZERO), "USDT": (quote - fee_seller, ZERO)})
    assert_balances(tradsys, buyer, buyer_id, {"BTC": (qty - fee_buyer, ZERO), "USDT": (D(1000) - quote, ZERO)})

    # A resting order, queried and cancelled.
    rest_price, rest_qty = D("20000.00"), D("0.001")
    rest = buyer.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC",
                           price=str(rest_price), quantity=str(rest_qty))
    locked = quote_amount(rest_price, rest_qty)
    assert_balances(tradsys, buyer, buyer_id,
                    {"BTC": (qty - fee_buyer, ZERO), "USDT": (D(1000) - quote - locked, locked)})
    got = buyer.get_order(SYMBOL, orderId=rest["orderId"])
    assert (got["status"], got["price"], got["origQty"]) == ("NEW", fmt(rest_price), fmt(rest_qty))
    canceled = buyer.cancel_order(SYMBOL, orderId=rest["orderId"])
    assert (canceled["orderId"], canceled["status"]) == (rest["orderId"], "CANCELED")
    assert_balances(tradsys, buyer, buyer_id, {"BTC": (qty - fee_buyer, ZERO), "USDT": (D(1000) - quote, ZERO)})

    # The same API key with another key pair's signature.
    other = {"ED25519": "ed25519-other.pem", "RSA": "rsa2048-other.pem"}[key_type]
    impostor = keyed(buyer_key, fixture_pem(other))
    assert_error(impostor.account, -1022, "Signature for this request is not valid.")


def test_amend_keep_priority_and_the_protections(tradsys):
    """The tradsys endpoints binance-connector has no method for yet, through
    its own signing (`Spot.sign_request`): an amendment keeps the order's
    place and frees its funds exactly, the list shows it, and a dead-man's
    switch set and turned off answers as documented."""
    user_id, key, secret = tradsys.create_user("amender", {"USDT": "10000"})
    spot = client(tradsys, key, secret)
    first = spot.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC",
                           price="20000", quantity="0.1", newClientOrderId="first")
    spot.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC", price="20000", quantity="0.1")
    assert_balances(tradsys, spot, user_id, {"USDT": (D(6000), D(4000))})
    amended = spot.sign_request("PUT", "/api/v3/order/amend/keepPriority",
                                {"symbol": SYMBOL, "orderId": first["orderId"], "newQty": "0.04",
                                 "newClientOrderId": "first-2"})
    order = amended["amendedOrder"]
    assert (order["qty"], order["status"], order["origClientOrderId"], order["clientOrderId"]) == (
        fmt(D("0.04")), "NEW", "first", "first-2")
    assert amended["executionId"] == first["orderId"] * 16 + 1
    # 0.06 × 20000 back to free, exactly.
    assert_balances(tradsys, spot, user_id, {"USDT": (D(7200), D(2800))})
    listed = spot.sign_request("GET", "/api/v3/order/amendments", {"symbol": SYMBOL, "orderId": first["orderId"]})
    assert [(a["origQty"], a["newQty"], a["newClientOrderId"]) for a in listed] == [
        (fmt(D("0.1")), fmt(D("0.04")), "first-2")]
    assert_error(lambda: spot.sign_request("PUT", "/api/v3/order/amend/keepPriority",
                                           {"symbol": SYMBOL, "orderId": first["orderId"], "newQty": "0.05"}),
                 -2038, "Order amend (quantity increase) is not supported.")
    book = spot.depth(SYMBOL, limit=5)
    assert book["bids"] == [[fmt(D(20000)), fmt(D("0.14"))]]
    armed = spot.sign_request("POST", "/api/v3/countdownCancelAll", {"symbol": SYMBOL, "countdownTime": 60000})
    assert armed == {"symbol": SYMBOL, "countdownTime": "60000"}
    off = spot.sign_request("POST", "/api/v3/countdownCancelAll", {"symbol": SYMBOL, "countdownTime": 0})
    assert off == {"symbol": SYMBOL, "countdownTime": "0"}
    tradsys.cancel_everything(key, secret)
    assert_balances(tradsys, spot, user_id, {"USDT": (D(10000), ZERO)})


def test_iceberg_and_trailing_orders(tradsys):
    """new_order's icebergQty and trailingDelta, as binance-connector sends
    them: the iceberg shows its visible part only and fills part by part,
    the trailing stop-loss market sell fires 2 % below the highest trade,
    and the refusals carry Binance's codes and messages."""
    maker_id, maker_key, maker_secret = tradsys.create_user("conn-ice", {"BTC": "2"})
    taker_id, taker_key, taker_secret = tradsys.create_user("conn-taker", {"USDT": "100000"})
    owner_id, owner_key, owner_secret = tradsys.create_user("conn-trail", {"BTC": "1"})
    maker, taker = client(tradsys, maker_key, maker_secret), client(tradsys, taker_key, taker_secret)
    owner = client(tradsys, owner_key, owner_secret)

    ice = maker.new_order(symbol=SYMBOL, side="SELL", type="LIMIT", timeInForce="GTC", price="30000",
                          quantity="1", icebergQty="0.4", newOrderRespType="RESULT")
    assert (ice["status"], ice["icebergQty"]) == ("NEW", fmt(D("0.4")))
    assert maker.depth(SYMBOL, limit=5)["asks"] == [[fmt(D(30000)), fmt(D("0.4"))]]
    bought = taker.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="IOC", price="30000",
                             quantity="0.5")
    assert [f["qty"] for f in bought["fills"]] == [fmt(D("0.4")), fmt(D("0.1"))]
    order = maker.get_order(SYMBOL, orderId=ice["orderId"])
    assert (order["status"], order["executedQty"], order["icebergQty"]) == (
        "PARTIALLY_FILLED", fmt(D("0.5")), fmt(D("0.4")))
    assert_error(lambda: maker.new_order(symbol=SYMBOL, side="SELL", type="LIMIT", timeInForce="IOC",
                                         price="30000", quantity="0.1", icebergQty="0.05"),
                 -2010, "Unsupported order combination")
    maker.cancel_order(SYMBOL, orderId=ice["orderId"])

    def trade_at(price):
        maker.new_order(symbol=SYMBOL, side="SELL", type="LIMIT", timeInForce="GTC", price=price, quantity="0.001")
        taker.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="IOC", price=price, quantity="0.001")

    # A bid for the fired market sell to meet.
    taker.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="GTC", price="25000", quantity="0.2")
    trade_at("30000")
    stop = owner.new_order(symbol=SYMBOL, side="SELL", type="STOP_LOSS", quantity="0.2", trailingDelta=200,
                           newOrderRespType="RESULT")
    assert (stop["status"], stop["trailingDelta"]) == ("NEW", 200)
    trade_at("31000")
    trade_at("30380.01")
    assert owner.get_order(SYMBOL, orderId=stop["orderId"])["status"] == "NEW"
    # 30,380 is 2 % below 31,000: it fires and sells 0.2 to the bid at 25,000.
    trade_at("30380")
    fired = owner.get_order(SYMBOL, orderId=stop["orderId"])
    quote = quote_amount(D(25000), D("0.2"))
    assert (fired["status"], fired["executedQty"], fired["cummulativeQuoteQty"]) == (
        "FILLED", fmt(D("0.2")), fmt(quote))
    assert_balances(tradsys, owner, owner_id, {"BTC": (D("0.8"), ZERO), "USDT": (quote - commission(quote, RATE), ZERO)})
    assert_error(lambda: owner.new_order(symbol=SYMBOL, side="SELL", type="STOP_LOSS", quantity="0.1",
                                         trailingDelta=5),
                 -1013, "Filter failure: TRAILING_DELTA")
    tradsys.cancel_everything(maker_key, maker_secret)
    tradsys.cancel_everything(taker_key, taker_secret)


def test_oco_and_order_list_endpoints(tradsys):
    """Order lists through binance-connector: an OCO (new_oco_order, i.e.
    POST /api/v3/orderList/oco) whose LIMIT_MAKER fills in two parts and
    expires its stop at the first, a legacy BUY OCO (POST /api/v3/order/oco,
    which the connector no longer has a method for, through its own
    signing) holding one lock, the larger leg's, an OTO whose pending order
    locks nothing until it is placed and ends with its working order, and
    an OTOCO whose pending pair is placed, with one lock, when the working
    order fills. The queries (get_oco_order, get_oco_orders,
    get_oco_open_orders) and the refusals answer exactly as Binance does."""
    tape_id, tape_key, tape_secret = tradsys.create_user("list-tape", {"BTC": "1"})
    taker_id, taker_key, taker_secret = tradsys.create_user("list-taker", {"USDT": "100000"})
    seller_id, seller_key, seller_secret = tradsys.create_user("list-seller", {"BTC": "1"})
    # A little BTC beyond what the OTOCO buys: its pending sell of the same
    # quantity is locked after the buy's fee was taken in BTC.
    buyer_id, buyer_key, buyer_secret = tradsys.create_user("list-buyer", {"USDT": "1000", "BTC": "0.001"})
    tape, taker = client(tradsys, tape_key, tape_secret), client(tradsys, taker_key, taker_secret)
    seller, buyer = client(tradsys, seller_key, seller_secret), client(tradsys, buyer_key, buyer_secret)

    def trade_at(price):
        tape.new_order(symbol=SYMBOL, side="SELL", type="LIMIT", timeInForce="GTC", price=price, quantity="0.001")
        taker.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="IOC", price=price, quantity="0.001")

    def head(answer):
        """A list answer without its order reports, as the queries show it."""
        return {k: v for k, v in answer.items() if k != "orderReports"}

    def state(spot, order_id):
        o = spot.get_order(SYMBOL, orderId=order_id)
        return (o["orderListId"], o["status"], o["executedQty"])

    trade_at("30000")

    # 1. Refusals: the stop is above the last price; the types are on the wrong sides.
    assert_error(lambda: seller.new_oco_order(SYMBOL, "SELL", "0.1", "LIMIT_MAKER", "STOP_LOSS",
                                              abovePrice="31000", belowStopPrice="30100"),
                 -2010, "The relationship of the prices for the orders is not correct.")
    assert_error(lambda: seller.new_oco_order(SYMBOL, "SELL", "0.1", "STOP_LOSS", "LIMIT_MAKER",
                                              aboveStopPrice="31000", belowPrice="29000"),
                 -1197, "A stop loss order in a sell OCO must be below.")
    assert seller.get_oco_open_orders() == [] and seller.get_open_orders(SYMBOL) == []
    assert_balances(tradsys, seller, seller_id, {"BTC": (D(1), ZERO)})

    # 2. A SELL OCO: a LIMIT_MAKER above the last price, a stop-limit below.
    qty = D("0.1")
    oco = seller.new_oco_order(SYMBOL, "SELL", str(qty), "LIMIT_MAKER", "STOP_LOSS_LIMIT",
                               abovePrice="31000", aboveClientOrderId="conn-tp",
                               belowStopPrice="29000", belowPrice="28900", belowTimeInForce="GTC",
                               belowClientOrderId="conn-sl", listClientOrderId="conn-oco")
    tp_id, sl_id = (o["orderId"] for o in oco["orders"])
    list_id = oco["orderListId"]
    assert list_id == tp_id and sl_id > tp_id
    assert (oco["contingencyType"], oco["listStatusType"], oco["listOrderStatus"], oco["listClientOrderId"],
            oco["symbol"]) == ("OCO", "EXEC_STARTED", "EXECUTING", "conn-oco", SYMBOL)
    assert oco["orders"] == [{"symbol": SYMBOL, "orderId": tp_id, "clientOrderId": "conn-tp"},
                             {"symbol": SYMBOL, "orderId": sl_id, "clientOrderId": "conn-sl"}]
    assert [(r["orderId"], r["orderListId"], r["clientOrderId"], r["type"], r["side"], r["status"], r["price"],
             r.get("stopPrice"), r["origQty"], r["executedQty"], r["fills"]) for r in oco["orderReports"]] == [
        (tp_id, list_id, "conn-tp", "LIMIT_MAKER", "SELL", "NEW", fmt(31000), None, fmt(qty), fmt(0), []),
        (sl_id, list_id, "conn-sl", "STOP_LOSS_LIMIT", "SELL", "NEW", fmt(28900), fmt(29000), fmt(qty), fmt(0), []),
    ]
    # One lock for both orders.
    assert_balances(tradsys, seller, seller_id, {"BTC": (D(1) - qty, qty)})
    assert [(o["orderId"], o["orderListId"], o["status"]) for o in seller.get_open_orders(SYMBOL)] == [
        (tp_id, list_id, "NEW"), (sl_id, list_id, "NEW")]
    assert seller.get_oco_open_orders() == [head(oco)]
    assert seller.get_oco_order(orderListId=list_id) == head(oco)
    assert seller.get_oco_order(origClientOrderId="conn-oco") == head(oco)
    assert_error(lambda: seller.get_oco_order(orderListId=987654321), -2013, "Order list does not exist.")
    assert buyer.get_oco_open_orders() == []

    # 3. A taker buys part of the LIMIT_MAKER: the stop expires at once.
    q1, price = D("0.04"), D(31000)
    bought = taker.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="IOC", price=str(price),
                             quantity=str(q1), newOrderRespType="FULL")
    assert [(f["price"], f["qty"]) for f in bought["fills"]] == [(fmt(price), fmt(q1))]
    assert state(seller, tp_id) == (list_id, "PARTIALLY_FILLED", fmt(q1))
    assert state(seller, sl_id) == (list_id, "EXPIRED", fmt(0))
    quote1 = quote_amount(price, q1)
    seller_usdt = quote1 - commission(quote1, RATE)
    assert_balances(tradsys, seller, seller_id, {"BTC": (D(1) - qty, qty - q1), "USDT": (seller_usdt, ZERO)})
    still = seller.get_oco_order(orderListId=list_id)
    assert (still["listStatusType"], still["listOrderStatus"]) == ("EXEC_STARTED", "EXECUTING")

    # ... and the rest: the list is done.
    q2 = qty - q1
    taker.new_order(symbol=SYMBOL, side="BUY", type="LIMIT", timeInForce="IOC", price=str(price), quantity=str(q2))
    assert state(seller, tp_id) == (list_id, "FILLED", fmt(qty))
    quote2 = quote_amount(price, q2)
    seller_usdt += quote2 - commission(quote2, RATE)
    assert seller_usdt == D("3096.90000000")
    assert_balances(tradsys, seller, seller_id, {"BTC": (D(1) - qty, ZERO), "USDT": (seller_usdt, ZERO)})
    done = {**head(oco), "listStatusType": "ALL_DONE", "listOrderStatus": "ALL_DONE"}
    assert seller.get_oco_order(orderListId=list_id) == done
    assert seller.get_oco_open_orders() == []
    assert [(o["orderId"], o["orderListId"], o["status"]) for o in seller.get_orders(SYMBOL)] == [
        (tp_id, list_id, "FILLED"), (sl_id, list_id, "EXPIRED")]

    # 4. The legacy endpoint, a BUY OCO below and above the last price
    # (31,000): the stop-limit's 316 USDT is locked, not 290 + 316.
    legacy = buyer.sign_request("POST", "/api/v3/order/oco", {
        "symbol": SYMBOL, "side": "BUY", "quantity": "0.01", "price": "29000", "stopPrice": "31500",
        "stopLimitPrice": "31600", "stopLimitTimeInForce": "GTC", "listClientOrderId": "conn-legacy",
        "limitClientOrderId": "conn-legacy-limit", "stopClientOrderId": "conn-legacy-stop"})
    stop_id, limit_id = (o["orderId"] for o in legacy["orders"])
    legacy_id = legacy["orderListId"]
    assert legacy_id == stop_id
    assert (legacy["contingencyType"], legacy["listStatusType"], legacy["listOrderStatus"]) == (
        "OCO", "EXEC_STARTED", "EXECUTING")
    assert [(r["orderId"], r["orderListId"], r["clientOrderId"], r["type"], r["status"], r["price"],
             r.get("stopPrice")) for r in legacy["orderReports"]] == [
        (stop_id, legacy_id, "conn-legacy-stop", "STOP_LOSS_LIMIT", "NEW", fmt(31600), fmt(31500)),
        (limit_id, legacy_id, "conn-legacy-limit", "LIMIT_MAKER", "NEW", fmt(29000), None),
    ]
    assert_balances(tradsys, buyer, buyer_id, {"USDT": (D(684), D(316)), "BTC": (D("0.001"), ZERO)})
    assert buyer.get_oco_open_orders() == [head(legacy)]
    canceled = buyer.cancel_oco_order(SYMBOL, listClientOrderId="conn-legacy")
    assert head(canceled) == {**head(legacy), "listStatusType": "ALL_DONE", "listOrderStatus": "ALL_DONE",
                              "transactionTime": canceled["transactionTime"]}
    assert [(r["orderId"], r["orderListId"], r["origClientOrderId"], r["status"])
            for r in canceled["orderReports"]] == [
        (stop_id, legacy_id, "conn-legacy-stop", "CANCELED"), (limit_id, legacy_id, "conn-legacy-limit", "CANCELED")]
    assert_error(lambda: buyer.cancel_oco_order(SYMBOL, orderListId=legacy_id), -2011)
    assert_balances(tradsys, buyer, buyer_id, {"USDT": (D(1000), ZERO), "BTC": (D("0.001"), ZERO)})

    # 5. An OTO: only the working buy is locked; its cancel ends the pending sell.
    oto = buyer.new_oto_order(SYMBOL, "LIMIT", "BUY", "30500", "0.01", "LIMIT_MAKER", "SELL", "0.01",
                              workingTimeInForce="GTC", pendingPrice="32000", listClientOrderId="conn-oto")
    working_id, pending_id = (o["orderId"] for o in oto["orders"])
    oto_id = oto["orderListId"]
    assert (oto_id, oto["contingencyType"], oto["listStatusType"], oto["listOrderStatus"]) == (
        working_id, "OTO", "EXEC_STARTED", "EXECUTING")
    assert [(r["orderId"], r["orderListId"], r["type"], r["side"], r["status"], r["price"])
            for r in oto["orderReports"]] == [
        (working_id, oto_id, "LIMIT", "BUY", "NEW", fmt(30500)),
        (pending_id, oto_id, "LIMIT_MAKER", "SELL", "PENDING_NEW", fmt(32000)),
    ]
    assert_balances(tradsys, buyer, buyer_id, {"USDT": (D(695), D(305)), "BTC": (D("0.001"), ZERO)})
    assert buyer.cancel_order(SYMBOL, orderId=working_id)["status"] == "CANCELED"
    assert state(buyer, pending_id) == (oto_id, "CANCELED", fmt(0))
    assert buyer.get_oco_order(orderListId=oto_id)["listStatusType"] == "ALL_DONE"
    assert_balances(tradsys, buyer, buyer_id, {"USDT": (D(1000), ZERO), "BTC": (D("0.001"), ZERO)})

    # 6. An OTOCO: the working buy fills (the buyer as maker), then its
    # pending OCO pair is placed with one lock of 0.01 BTC.
    otoco = buyer.new_otoco_order(SYMBOL, "LIMIT", "BUY", "30000", "0.01", "SELL", "0.01", "LIMIT_MAKER",
                                  workingTimeInForce="GTC", pendingAbovePrice="32000",
                                  pendingBelowType="STOP_LOSS_LIMIT", pendingBelowStopPrice="29000",
                                  pendingBelowPrice="28900", pendingBelowTimeInForce="GTC",
                                  listClientOrderId="conn-otoco")
    working_id, above_id, below_id = (o["orderId"] for o in otoco["orders"])
    otoco_id = otoco["orderListId"]
    assert (otoco_id, otoco["contingencyType"], otoco["listStatusType"], otoco["listClientOrderId"]) == (
        working_id, "OTO", "EXEC_STARTED", "conn-otoco")
    assert [(r["orderId"], r["type"], r["side"], r["status"], r.get("stopPrice")) for r in otoco["orderReports"]] == [
        (working_id, "LIMIT", "BUY", "NEW", None),
        (above_id, "LIMIT_MAKER", "SELL", "PENDING_NEW", None),
        (below_id, "STOP_LOSS_LIMIT", "SELL", "PENDING_NEW", fmt(29000)),
    ]
    assert_balances(tradsys, buyer, buyer_id, {"USDT": (D(700), D(300)), "BTC": (D("0.001"), ZERO)})
    tape.new_order(symbol=SYMBOL, side="SELL", type="LIMIT", timeInForce="GTC", price="30000", quantity="0.01")
    assert state(buyer, working_id) == (otoco_id, "FILLED", fmt(D("0.01")))
    assert state(buyer, above_id) == (otoco_id, "NEW", fmt(0))
    assert state(buyer, below_id) == (otoco_id, "NEW", fmt(0))
    buyer_btc = D("0.001") + D("0.01") - commission(D("0.01"), RATE)
    assert buyer_btc == D("0.01099")
    assert_balances(tradsys, buyer, buyer_id, {"USDT": (D(700), ZERO), "BTC": (buyer_btc - D("0.01"), D("0.01"))})
    assert [l["orderListId"] for l in buyer.get_oco_open_orders()] == [otoco_id]
    canceled = buyer.cancel_oco_order(SYMBOL, orderListId=otoco_id)
    assert (canceled["listStatusType"], canceled["listOrderStatus"]) == ("ALL_DONE", "ALL_DONE")
    reports = {r["orderId"]: r["status"] for r in canceled["orderReports"]}
    assert (reports[above_id], reports[below_id]) == ("CANCELED", "CANCELED")
    assert state(buyer, above_id) == (otoco_id, "CANCELED", fmt(0))
    assert state(buyer, below_id) == (otoco_id, "CANCELED", fmt(0))
    assert_balances(tradsys, buyer, buyer_id, {"USDT": (D(700), ZERO), "BTC": (buyer_btc, ZERO)})

    # 7. Every list of each user, done.
    def lists(spot):
        return {l["orderListId"]: (l["contingencyType"], l["listStatusType"], l["listOrderStatus"],
                                   l["listClientOrderId"]) for l in spot.get_oco_orders()}

    assert lists(seller) == {list_id: ("OCO", "ALL_DONE", "ALL_DONE", "conn-oco")}
    assert lists(buyer) == {legacy_id: ("OCO", "ALL_DONE", "ALL_DONE", "conn-legacy"),
                            oto_id: ("OTO", "ALL_DONE", "ALL_DONE", "conn-oto"),
                            otoco_id: ("OTO", "ALL_DONE", "ALL_DONE", "conn-otoco")}
    assert buyer.get_oco_open_orders() == [] and buyer.get_open_orders(SYMBOL) == []
