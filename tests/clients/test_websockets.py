"""WebSocket streams with real clients: the `websockets` package and
binance-connector's SpotWebsocketStreamClient, both unmodified, against
tradsys on loopback.

Orders are placed over REST; the events they cause are checked field by
field, and a local order book built from `@depth` diffs by Binance's
documented procedure must equal REST depth.
"""

import json
import queue
import random
import time

from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient
from websockets.sync.client import connect

from conftest import http

SYMBOL = "BTCUSDT"
WAIT_S = 10
DEPOSITS = {"BTC": "10", "USDT": "1000000"}


def ws_url(tradsys, path):
    return tradsys.base_url.replace("http://", "ws://") + path


def order(tradsys, user, side, qty, price):
    _user_id, api_key, secret = user
    params = {
        "symbol": SYMBOL, "side": side, "type": "LIMIT", "timeInForce": "GTC",
        "quantity": qty, "price": price, "newOrderRespType": "FULL",
    }
    status, body = tradsys.signed("POST", "/api/v3/order", api_key, secret, params)
    assert status == 200, body
    return body


def recv_json(ws):
    return json.loads(ws.recv(timeout=WAIT_S))


def expected_trade(placed):
    fill = placed["fills"][0]
    return {
        "e": "trade", "E": placed["transactTime"], "s": SYMBOL, "t": fill["tradeId"],
        "p": fill["price"], "q": fill["qty"], "T": placed["transactTime"],
        "m": placed["side"] == "SELL", "M": True,
    }


def test_trade_stream_has_binance_fields(tradsys):
    maker = tradsys.create_user("ws-maker", DEPOSITS)
    taker = tradsys.create_user("ws-taker", DEPOSITS)
    with connect(ws_url(tradsys, "/ws/btcusdt@trade"), open_timeout=WAIT_S) as ws:
        order(tradsys, maker, "BUY", "0.00200", "29000.00")
        placed = order(tradsys, taker, "SELL", "0.00200", "29000.00")
        assert recv_json(ws) == {
            "e": "trade", "E": placed["transactTime"], "s": SYMBOL, "t": placed["fills"][0]["tradeId"],
            "p": "29000.00000000", "q": "0.00200000", "T": placed["transactTime"], "m": True, "M": True,
        }


def test_subscribe_list_and_combined_payloads(tradsys):
    maker = tradsys.create_user("ws-maker", DEPOSITS)
    taker = tradsys.create_user("ws-taker", DEPOSITS)
    with connect(ws_url(tradsys, "/ws"), open_timeout=WAIT_S) as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}))
        assert recv_json(ws) == {"result": None, "id": 1}
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert recv_json(ws) == {"result": ["btcusdt@trade"], "id": 2}
        ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 3}))
        assert recv_json(ws) == {"result": None, "id": 3}
        order(tradsys, maker, "SELL", "0.00100", "31000.00")
        placed = order(tradsys, taker, "BUY", "0.00100", "31000.00")
        assert recv_json(ws) == {"stream": "btcusdt@trade", "data": expected_trade(placed)}


def test_binance_connector_stream_client(tradsys):
    maker = tradsys.create_user("ws-maker", DEPOSITS)
    taker = tradsys.create_user("ws-taker", DEPOSITS)
    messages = queue.Queue()
    client = SpotWebsocketStreamClient(
        stream_url=tradsys.base_url.replace("http://", "ws://"),
        on_message=lambda _ws, message: messages.put(json.loads(message)),
    )
    try:
        client.trade(symbol="btcusdt", id=7)
        assert messages.get(timeout=WAIT_S) == {"result": None, "id": 7}
        order(tradsys, maker, "SELL", "0.00100", "30500.00")
        placed = order(tradsys, taker, "BUY", "0.00100", "30500.00")
        assert messages.get(timeout=WAIT_S) == expected_trade(placed)
    finally:
        client.stop()


def rest_depth(tradsys):
    status, body = http("GET", f"{tradsys.base_url}/api/v3/depth?symbol={SYMBOL}&limit=5000")
    assert status == 200, body
    return body


def apply(side, levels):
    for price, qty in levels:
        if qty == "0.00000000":
            side.pop(price, None)
        else:
            side[price] = qty


def test_local_book_from_depth_diffs_equals_rest_depth(tradsys):
    users = [tradsys.create_user(f"ws-depth-{i}", DEPOSITS) for i in range(2)]
    rng = random.Random(20240611)
    with connect(ws_url(tradsys, "/ws/btcusdt@depth@100ms"), open_timeout=WAIT_S) as ws:
        def place(count):
            for _ in range(count):
                side = rng.choice(["BUY", "SELL"])
                price = f"{29990 + rng.randrange(21)}.00"
                qty = f"0.00{1 + rng.randrange(5)}00"
                order(tradsys, rng.choice(users), side, qty, price)

        place(20)
        snapshot = rest_depth(tradsys)
        events = []
        last = snapshot
        for _ in range(3):
            place(20)
            last = rest_depth(tradsys)
            deadline = time.monotonic() + WAIT_S
            while not events or events[-1]["u"] < last["lastUpdateId"]:
                assert time.monotonic() < deadline, "diffs never caught up with REST depth"
                events.append(recv_json(ws))

    # Binance's procedure: drop what the snapshot covers, then apply in order.
    bids = {p: q for p, q in snapshot["bids"]}
    asks = {p: q for p, q in snapshot["asks"]}
    kept = [e for e in events if e["u"] > snapshot["lastUpdateId"]]
    assert kept, "diffs after the snapshot"
    assert kept[0]["U"] <= snapshot["lastUpdateId"] + 1 <= kept[0]["u"]
    previous = None
    for event in kept:
        assert event["e"] == "depthUpdate" and event["s"] == SYMBOL
        if previous is not None:
            assert event["U"] == previous + 1
        previous = event["u"]
        apply(bids, event["b"])
        apply(asks, event["a"])
    assert previous == last["lastUpdateId"]
    assert bids == {p: q for p, q in last["bids"]}
    assert asks == {p: q for p, q in last["asks"]}


def test_user_data_stream_execution_report(tradsys):
    maker = tradsys.create_user("ws-maker", DEPOSITS)
    taker = tradsys.create_user("ws-taker", DEPOSITS)
    status, body = http("POST", tradsys.base_url + "/api/v3/userDataStream", headers={"X-MBX-APIKEY": taker[1]})
    assert status == 200, body
    with connect(ws_url(tradsys, "/ws/" + body["listenKey"]), open_timeout=WAIT_S) as ws:
        order(tradsys, maker, "BUY", "0.00100", "29500.00")
        placed = order(tradsys, taker, "SELL", "0.00100", "29500.00")
        report = recv_json(ws)
        while report["e"] != "executionReport" or report["x"] != "TRADE":
            report = recv_json(ws)
        fill = placed["fills"][0]
        assert report == {
            "e": "executionReport", "E": report["E"], "s": SYMBOL, "c": placed["clientOrderId"],
            "S": "SELL", "o": "LIMIT", "f": "GTC", "q": "0.00100000", "p": "29500.00000000",
            "P": "0.00000000", "F": "0.00000000", "g": -1, "C": "", "x": "TRADE", "X": "FILLED",
            "r": "NONE", "i": placed["orderId"], "l": "0.00100000", "z": "0.00100000",
            "L": "29500.00000000", "n": fill["commission"], "N": fill["commissionAsset"],
            "T": placed["transactTime"], "t": fill["tradeId"], "I": placed["orderId"], "w": False,
            "m": False, "M": False, "O": placed["transactTime"], "Z": "29.50000000", "Y": "29.50000000",
            "Q": "0.00000000", "W": placed["transactTime"], "V": "NONE",
        }
        position = recv_json(ws)
        assert position["e"] == "outboundAccountPosition"
        assert [b["a"] for b in position["B"]] == ["BTC", "USDT"]
        assert position["B"][0] == {"a": "BTC", "f": "9.99900000", "l": "0.00000000"}


def test_binance_connector_agg_trade_and_kline(tradsys):
    maker = tradsys.create_user("ws-maker", DEPOSITS)
    taker = tradsys.create_user("ws-taker", DEPOSITS)
    messages = queue.Queue()
    client = SpotWebsocketStreamClient(
        stream_url=tradsys.base_url.replace("http://", "ws://"),
        on_message=lambda _ws, message: messages.put(json.loads(message)),
    )
    try:
        client.agg_trade(symbol="btcusdt", id=1)
        assert messages.get(timeout=WAIT_S) == {"result": None, "id": 1}
        client.kline(symbol="btcusdt", interval="1m", id=2)
        assert messages.get(timeout=WAIT_S) == {"result": None, "id": 2}
        # One taker order over two makers at one price: one aggregate.
        order(tradsys, maker, "SELL", "0.00100", "30200.00")
        order(tradsys, maker, "SELL", "0.00200", "30200.00")
        placed = order(tradsys, taker, "BUY", "0.00300", "30200.00")
        first, last = (f["tradeId"] for f in placed["fills"])

        def next_event(kind, wanted=lambda _event: True):
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                event = messages.get(timeout=WAIT_S)
                if event.get("e") == kind and wanted(event):
                    return event
            raise AssertionError(f"no {kind} event")

        agg = next_event("aggTrade")
        status, rows = http("GET", f"{tradsys.base_url}/api/v3/aggTrades?symbol={SYMBOL}&fromId={agg['a']}")
        assert status == 200, rows
        assert rows == [{k: agg[k] for k in ("a", "p", "q", "f", "l", "T", "m", "M")}]
        assert agg == {
            "e": "aggTrade", "E": placed["transactTime"], "s": SYMBOL, "a": agg["a"], "p": "30200.00000000",
            "q": "0.00300000", "f": first, "l": last, "T": placed["transactTime"], "m": False, "M": True,
        }
        kline = next_event("kline", lambda e: e["k"]["L"] == last)["k"]
        status, rows = http(
            "GET", f"{tradsys.base_url}/api/v3/klines?symbol={SYMBOL}&interval=1m&startTime={kline['t']}&limit=1"
        )
        assert status == 200, rows
        fields = ("t", "o", "h", "l", "c", "v", "T", "q", "n", "V", "Q", "B")
        assert [kline[k] for k in fields] == rows[0]
        assert (kline["s"], kline["i"], kline["c"]) == (SYMBOL, "1m", "30200.00000000")
    finally:
        client.stop()


def test_user_data_stream_balance_update(tradsys):
    user_id, api_key, _secret = tradsys.create_user("ws-saver", DEPOSITS)
    status, body = http("POST", tradsys.base_url + "/api/v3/userDataStream", headers={"X-MBX-APIKEY": api_key})
    assert status == 200, body
    with connect(ws_url(tradsys, "/ws/" + body["listenKey"]), open_timeout=WAIT_S) as ws:
        tradsys.admin("POST", f"/admin/v1/users/{user_id}/deposits", {"asset": "BTC", "amount": "0.5"})
        update = recv_json(ws)
        assert update == {"e": "balanceUpdate", "E": update["E"], "a": "BTC", "d": "0.50000000", "T": update["E"]}
        assert recv_json(ws) == {
            "e": "outboundAccountPosition", "E": update["E"], "u": update["E"],
            "B": [{"a": "BTC", "f": "10.50000000", "l": "0.00000000"}],
        }
        tradsys.admin("POST", f"/admin/v1/users/{user_id}/withdrawals", {"asset": "BTC", "amount": "2"})
        update = recv_json(ws)
        assert (update["e"], update["a"], update["d"]) == ("balanceUpdate", "BTC", "-2.00000000")
        assert recv_json(ws)["B"] == [{"a": "BTC", "f": "8.50000000", "l": "0.00000000"}]
