"""ccxt's wallet and fee calls, unmodified, against tradsys: fetch_status,
fetch_currencies, fetch_trading_fee, fetch_trading_fees, fetch_deposits and
fetch_withdrawals, with the URLs of test_ccxt.py (the wallet API, "sapi", on
the local server).

Everything ccxt reports is checked exactly against the transfers made here
through the admin API; what ccxt would ask of an endpoint tradsys does not
serve (margin pairs, fiat history) fails with tradsys's 404, on this
machine.
"""

import time

import ccxt
import pytest

from money import D, fmt
from test_ccxt import exchange

ASSETS = ("BTC", "USDT", "ETH", "EUR", "USD")
# The one network of every coin (docs/API.md, "Wallet").
NETWORK = "ADMIN"
DEPOSIT_DESC = ("Deposits are credited by the exchange operator through the admin API; "
                "there is no blockchain and no deposit address.")
WITHDRAW_DESC = ("Withdrawals are made by the exchange operator through the admin API; "
                 "POST /sapi/v1/capital/withdraw/apply is not supported.")
AMOUNT_MAX = "92233720368.54775807"


def now_ms():
    return int(time.time() * 1000)


def with_currencies(tradsys, api_key, secret, fetch_margins=False):
    """ccxt's binance as the other tests configure it, but fetching
    currencies (ccxt's default) and, if asked, margin pairs (its default too)."""
    ex = exchange(tradsys, api_key, secret)
    ex.options["fetchCurrencies"] = True
    ex.options["fetchMargins"] = fetch_margins
    return ex


def transfer(tradsys, user_id, asset, amount, deposit=True):
    """An admin deposit or withdrawal; the times just before and after it."""
    kind = "deposits" if deposit else "withdrawals"
    before = now_ms()
    tradsys.admin("POST", f"/admin/v1/users/{user_id}/{kind}", {"asset": asset, "amount": amount})
    return before, now_ms()


def test_fetch_status(tradsys):
    ex = exchange(tradsys)
    assert ex.fetch_status() == {
        "status": "ok", "updated": None, "eta": None, "url": None, "info": {"status": 0, "msg": "normal"}}
    assert ex.last_request_url == tradsys.base_url + "/sapi/v1/system/status"


def test_fetch_currencies(tradsys):
    user_id, api_key, secret = tradsys.create_user("coins", {"USDT": "1000", "BTC": "1.5"})
    ex = with_currencies(tradsys, api_key, secret)
    ex.load_markets()
    currencies = ex.fetch_currencies()
    assert ex.last_request_url.startswith(tradsys.base_url + "/sapi/v1/capital/config/getall?")
    assert sorted(currencies) == sorted(ASSETS)
    # load_markets fetched the same currencies (ccxt adds one of its own).
    assert sorted(ex.currencies) == sorted(ASSETS + ("BNFCR",))
    balances = {"USDT": D(1000), "BTC": D("1.5")}
    for code in ASSETS:
        c = currencies[code]
        info = c["info"]
        assert (info["coin"], info["name"], info["free"], info["locked"], info["isLegalMoney"], info["trading"]) == (
            code, code, fmt(balances.get(code, 0)), fmt(0), False, True)
        assert (c["id"], c["code"], c["name"], c["type"], c["active"], c["deposit"], c["withdraw"]) == (
            code, code, code, "crypto", True, False, False)
        assert (c["fee"], c["precision"]) == (0.0, 1e-08)
        assert c["limits"]["withdraw"] == {"min": 1e-08, "max": float(AMOUNT_MAX)}
        assert list(c["networks"]) == [NETWORK]
        network = c["networks"][NETWORK]
        assert (network["id"], network["network"], network["deposit"], network["withdraw"], network["fee"],
                network["precision"]) == (NETWORK, NETWORK, False, False, 0.0, 1e-08)
        assert network["limits"] == {"withdraw": {"min": 1e-08, "max": float(AMOUNT_MAX)},
                                     "deposit": {"min": 1e-08, "max": None}}
        raw = network["info"]
        assert (raw["coin"], raw["depositDesc"], raw["withdrawDesc"], raw["withdrawMax"], raw["minConfirm"]) == (
            code, DEPOSIT_DESC, WITHDRAW_DESC, AMOUNT_MAX, 0)


def test_fetch_currencies_with_margins_fails_visibly(tradsys):
    """With fetchMargins (ccxt's default), ccxt also asks for margin pairs:
    tradsys has no margin trading and answers 404, which ccxt raises."""
    _user_id, api_key, secret = tradsys.create_user("margins", {})
    ex = with_currencies(tradsys, api_key, secret, fetch_margins=True)
    with pytest.raises(ccxt.BaseError) as info:
        ex.load_markets()
    assert ex.last_request_url.startswith(tradsys.base_url + "/sapi/v1/margin/allPairs")
    assert "Unknown path /sapi/v1/margin/allPairs." in str(info.value)
    with pytest.raises(ccxt.BaseError) as info:
        ex.fetch_currencies()
    assert ex.last_request_url.startswith(tradsys.base_url + "/sapi/v1/margin/allPairs")


def test_fetch_trading_fees(tradsys):
    _user_id, api_key, secret = tradsys.create_user("fees", {})
    ex = exchange(tradsys, api_key, secret)
    ex.load_markets()
    fees = ex.fetch_trading_fees()
    assert ex.last_request_url.startswith(tradsys.base_url + "/sapi/v1/asset/tradeFee?")
    expected = {"BTC/USDT": ("BTCUSDT", "0.001"), "ETH/USDT": ("ETHUSDT", "0.001"),
                "ETH/BTC": ("ETHBTC", "0.001"), "EUR/USD": ("EURUSD", "0.0005")}
    assert sorted(fees) == sorted(expected)
    for symbol, (market_id, rate) in expected.items():
        info = {"symbol": market_id, "makerCommission": fmt(rate), "takerCommission": fmt(rate)}
        assert fees[symbol] == {"info": info, "symbol": symbol, "maker": float(rate), "taker": float(rate),
                                "percentage": None, "tierBased": None}
    one = ex.fetch_trading_fee("EUR/USD")
    assert one == fees["EUR/USD"]
    assert "symbol=EURUSD" in ex.last_request_url


def check_deposit(t, code, amount, before, after):
    """One deposit as ccxt parses it."""
    assert before <= t["timestamp"] <= after, (t, before, after)
    info = t["info"]
    assert info["txId"] == "Internal transfer " + t["id"]
    assert (info["amount"], info["status"], info["insertTime"], info["completeTime"]) == (
        fmt(amount), 1, t["timestamp"], t["timestamp"])
    assert {k: v for k, v in t.items() if k != "info"} == {
        "id": t["id"], "txid": t["id"], "timestamp": t["timestamp"], "datetime": ccxt.Exchange.iso8601(t["timestamp"]),
        "network": NETWORK, "address": None, "addressTo": None, "addressFrom": None, "tag": None, "tagTo": None,
        "tagFrom": None, "type": "deposit", "amount": float(amount), "currency": code, "status": "ok",
        "updated": None, "internal": True, "comment": None, "fee": None}


def check_withdrawal(t, code, amount, before, after):
    """One withdrawal as ccxt parses it: Binance's applyTime has seconds."""
    assert before // 1000 * 1000 <= t["timestamp"] <= after, (t, before, after)
    info = t["info"]
    assert info["txId"] == "Internal transfer " + t["id"]
    assert (info["amount"], info["status"], info["transactionFee"], info["applyTime"], info["completeTime"]) == (
        fmt(amount), 6, fmt(0), info["applyTime"], info["applyTime"])
    assert {k: v for k, v in t.items() if k != "info"} == {
        "id": t["id"], "txid": t["id"], "timestamp": t["timestamp"], "datetime": ccxt.Exchange.iso8601(t["timestamp"]),
        "network": NETWORK, "address": None, "addressTo": None, "addressFrom": None, "tag": None, "tagTo": None,
        "tagFrom": None, "type": "withdrawal", "amount": float(amount), "currency": code, "status": "ok",
        "updated": None, "internal": True, "comment": None, "fee": {"currency": code, "cost": 0.0}}


def test_fetch_deposits_and_withdrawals(tradsys):
    user_id, api_key, secret = tradsys.create_user("wallet", {})
    made = [
        ("deposit", "USDT", "1000", transfer(tradsys, user_id, "USDT", "1000")),
        ("deposit", "BTC", "2", transfer(tradsys, user_id, "BTC", "2")),
        ("withdrawal", "USDT", "250", transfer(tradsys, user_id, "USDT", "250", deposit=False)),
        ("deposit", "BTC", "0.25", transfer(tradsys, user_id, "BTC", "0.25")),
        ("withdrawal", "BTC", "0.1", transfer(tradsys, user_id, "BTC", "0.1", deposit=False)),
    ]
    ex = exchange(tradsys, api_key, secret)
    ex.load_markets()
    deposits = ex.fetch_deposits()
    assert ex.last_request_url.startswith(tradsys.base_url + "/sapi/v1/capital/deposit/hisrec?")
    withdrawals = ex.fetch_withdrawals()
    assert ex.last_request_url.startswith(tradsys.base_url + "/sapi/v1/capital/withdraw/history?")

    # Oldest first (ccxt sorts by time); equal times keep the server's order.
    assert [t["timestamp"] for t in deposits] == sorted(t["timestamp"] for t in deposits)
    by_amount = {(t["currency"], t["amount"]): t for t in deposits + withdrawals}
    assert len(by_amount) == len(made)
    positions = []
    for kind, code, amount, (before, after) in made:
        t = by_amount[(code, float(amount))]
        (check_deposit if kind == "deposit" else check_withdrawal)(t, code, D(amount), before, after)
        positions.append(tuple(int(p) for p in t["id"].split("-")))
    # One shard and generation; journal positions in the order made.
    assert len({p[:2] for p in positions}) == 1, positions
    assert [p[2] for p in positions] == sorted(p[2] for p in positions), positions
    assert len(deposits) == 3 and len(withdrawals) == 2

    assert [t["id"] for t in ex.fetch_deposits("BTC")] == [t["id"] for t in deposits if t["currency"] == "BTC"]
    assert "coin=BTC" in ex.last_request_url
    assert [t["id"] for t in ex.fetch_withdrawals("USDT")] == [t["id"] for t in withdrawals if t["currency"] == "USDT"]
    # ccxt's window: since, and 90 days on.
    since = made[1][3][0]
    later = ex.fetch_deposits(since=since)
    assert f"startTime={since}" in ex.last_request_url and f"endTime={since + 7776000000}" in ex.last_request_url
    assert [t["id"] for t in later] == [t["id"] for t in deposits if t["timestamp"] >= since]
    # The newest one (by journal position: times may be equal).
    assert [t["id"] for t in ex.fetch_deposits(limit=1)] == [by_amount[("BTC", 0.25)]["id"]]
    # ccxt keeps what is at or after `since` by Binance's applyTime, which
    # has whole seconds: ask from the first withdrawal's second.
    since = withdrawals[0]["timestamp"]
    assert [t["id"] for t in ex.fetch_withdrawals(since=since)] == [t["id"] for t in withdrawals]
    assert f"startTime={since}" in ex.last_request_url


def test_fiat_deposits_fail_visibly(tradsys):
    """ccxt reads deposits of the currencies it takes for fiat (EUR, USD,
    ...) from Binance's fiat API, which tradsys does not serve: 404."""
    _user_id, api_key, secret = tradsys.create_user("fiat", {"EUR": "10"})
    ex = exchange(tradsys, api_key, secret)
    ex.load_markets()
    with pytest.raises(ccxt.BaseError) as info:
        ex.fetch_deposits("EUR")
    assert ex.last_request_url.startswith(tradsys.base_url + "/sapi/v1/fiat/orders?")
    assert "Unknown path /sapi/v1/fiat/orders." in str(info.value)
