"""The guard in conftest: nothing connects, or looks a name up, outside
127.0.0.0/8 -- neither plain sockets nor the clients with their default
(public) URLs. Addresses here are TEST-NET (192.0.2.0/24): refused before
any packet is sent."""

import asyncio
import socket

import ccxt
import pytest
from binance.spot import Spot

from conftest import OffMachineConnection


def test_plain_sockets_stay_on_loopback():
    with socket.socket() as s, pytest.raises(OffMachineConnection):
        s.connect(("192.0.2.1", 9))
    with socket.socket() as s, pytest.raises(OffMachineConnection):
        s.connect_ex(("192.0.2.1", 9))
    with pytest.raises(OffMachineConnection):
        socket.create_connection(("192.0.2.1", 9), timeout=1)
    with pytest.raises(OffMachineConnection):
        socket.getaddrinfo("api.binance.com", 443)
    with socket.socket(socket.AF_INET6) as s, pytest.raises(OffMachineConnection):
        s.connect(("2001:db8::1", 9))

    # Loopback still works.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
        with socket.socket() as s:
            s.connect(server.getsockname())


def test_asyncio_stays_on_loopback():
    async def connect():
        await asyncio.open_connection("192.0.2.1", 9)

    with pytest.raises(OffMachineConnection):
        asyncio.run(connect())


def test_clients_with_default_urls_are_stopped():
    with pytest.raises(OffMachineConnection):
        Spot().time()
    with pytest.raises(OffMachineConnection):
        Spot(base_url="http://192.0.2.1:9").time()
    with pytest.raises(OffMachineConnection):
        ccxt.binance().fetch_time()
