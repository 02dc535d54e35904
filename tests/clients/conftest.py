"""Fixtures of the real-client tests.

One tradsys process serves the whole session on loopback ports the kernel
chose. Each test creates its own users through the admin API, with HMAC
keys or with Ed25519 or RSA keys of tests/fixtures/keys; after each test
their open orders are cancelled and the server's audit must report that
every asset is conserved.

Nothing here or in the tests may reach another machine: socket connects and
name lookups are refused unless they stay on 127.0.0.0/8 (see `_loopback_only`).
"""

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

ROOT = Path(__file__).resolve().parents[2]
MARKETS = ROOT / "shards" / "markets.toml"
# Test-only key pairs (their private halves are public in the repository).
FIXTURE_KEYS = ROOT / "tests" / "fixtures" / "keys"
KEY_FILES = {"ED25519": "ed25519", "RSA": "rsa2048"}
SYMBOLS = ("BTCUSDT", "ETHUSDT", "ETHBTC", "EURUSD")
SHARDS = 2
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
HTTP_TIMEOUT_S = 5.0
# REQUEST_WEIGHT per IP per minute on each shard. Binance's 6000 is one
# client's budget; here every test's clients share 127.0.0.1, and the whole
# suite runs within a minute or two, so it gets ten clients' worth.
REQUEST_WEIGHT_PER_MINUTE_MAX = 60_000

# Proxies configured in the environment would carry local requests elsewhere.
for _name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(_name, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


# --------------------------------------------------------------------------
# The guard: no connection and no name lookup outside 127.0.0.0/8.


class OffMachineConnection(AssertionError):
    """A client tried to reach something that is not this machine's loopback."""


def _is_loopback_host(host):
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard/loopback
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _check_address(family, address):
    if family == socket.AF_UNIX or isinstance(address, (str, bytes)):
        return
    host = address[0]
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        raise OffMachineConnection(f"connect to a name, not a loopback address: {address!r}")
    # IPv4 loopback is 127.0.0.0/8; "::1" would also stay here but tradsys
    # listens on IPv4 only, so anything else is refused.
    if not (ip.version == 4 and ip in ipaddress.ip_network("127.0.0.0/8")):
        if not (ip.version == 6 and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback):
            raise OffMachineConnection(f"connect outside 127.0.0.0/8 refused: {address!r}")


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_create_connection = socket.create_connection
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self, address):
    _check_address(self.family, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check_address(self.family, address)
    return _real_connect_ex(self, address)


def _guarded_create_connection(address, *args, **kwargs):
    if not _is_loopback_host(address[0]):
        raise OffMachineConnection(f"create_connection outside loopback refused: {address!r}")
    return _real_create_connection(address, *args, **kwargs)


def _guarded_getaddrinfo(host, *args, **kwargs):
    # A lookup of a public name would itself send a DNS query elsewhere.
    if not _is_loopback_host(host):
        raise OffMachineConnection(f"name lookup of {host!r} refused: only loopback addresses")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(scope="session", autouse=True)
def _loopback_only():
    """Installed before anything else runs and kept for the whole session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _guarded_connect)
        mp.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
        mp.setattr(socket, "create_connection", _guarded_create_connection)
        mp.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
        yield


# --------------------------------------------------------------------------
# HTTP with the standard library only; proxies never used.

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, body=None, headers=None, form=False):
    """Returns (status, parsed JSON body or raw text)."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        if form:
            data = body.encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=HTTP_TIMEOUT_S) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def fixture_pem(name):
    """A PEM file of tests/fixtures/keys, e.g. "ed25519.pem"."""
    return (FIXTURE_KEYS / name).read_text()


class KeyPair:
    """A fixture key pair of one type (ED25519 or RSA): the public half goes
    to the admin API, the private half signs. Set-up and clean-up sign with
    `cryptography`, not with the clients under test."""

    def __init__(self, key_type, name=None):
        self.key_type = key_type
        self.name = name or KEY_FILES[key_type]
        self.private_pem = fixture_pem(f"{self.name}.pem")
        self.public_pem = fixture_pem(f"{self.name}.pub.pem")
        self._private = serialization.load_pem_private_key(self.private_pem.encode(), password=None)

    def sign(self, query):
        """The base64 signature of `query`, before URL-encoding."""
        if self.key_type == "RSA":
            raw = self._private.sign(query.encode(), padding.PKCS1v15(), hashes.SHA256())
        else:
            raw = self._private.sign(query.encode())
        return base64.b64encode(raw).decode()


def sign(secret, query):
    """The `signature` value for `query`: hex HMAC under a secret, or a key
    pair's base64 signature URL-encoded (its `+`, `/`, `=`)."""
    if isinstance(secret, KeyPair):
        return urllib.parse.quote(secret.sign(query), safe="")
    return hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------
# The server.


class Tradsys:
    """A running tradsys and the admin helpers the tests use."""

    def __init__(self, process, base_url, admin_url, admin_token, data_dir, stderr_path):
        self.process = process
        self.base_url = base_url
        self.admin_url = admin_url
        self.admin_token = admin_token
        self.data_dir = data_dir
        self.stderr_path = stderr_path
        self.port = int(urllib.parse.urlsplit(base_url).port)
        # Users created by the running test: (user_id, api_key, secret), the
        # secret an HMAC secret or a KeyPair.
        self.created = []

    # admin API ------------------------------------------------------------

    def admin(self, method, path, body=None, expect=200):
        status, payload = http(
            method, self.admin_url + path, body, headers={"X-Admin-Token": self.admin_token}
        )
        if expect is not None:
            assert status == expect, f"admin {method} {path}: HTTP {status}: {payload!r}"
        return payload

    def create_user(self, name, deposits=None, scopes=("READ", "TRADE", "USER_STREAM"), key_type="HMAC_SHA256"):
        """Creates a user with one API key of `key_type` and deposits; returns
        (user_id, api_key, secret), the secret a KeyPair for ED25519 and RSA."""
        user = self.admin("POST", "/admin/v1/users", {"name": name})
        user_id = user["userId"]
        assert isinstance(user_id, int), user
        if key_type == "HMAC_SHA256":
            key = self.admin("POST", f"/admin/v1/users/{user_id}/keys", {"scopes": list(scopes)})
            api_key, secret = key["apiKey"], key["secretKey"]
            assert api_key and secret and api_key != secret, key
        else:
            secret = KeyPair(key_type)
            body = {"scopes": list(scopes), "type": key_type, "publicKey": secret.public_pem}
            key = self.admin("POST", f"/admin/v1/users/{user_id}/keys", body)
            api_key = key["apiKey"]
        # The scopes in the server's order; a secret only for HMAC keys.
        listed = [s for s in ("READ", "TRADE", "USER_STREAM") if s in scopes]
        assert key == {"apiKey": api_key, "type": key_type, "scopes": listed,
                       **({"secretKey": secret} if key_type == "HMAC_SHA256" else {})}, key
        for asset, amount in (deposits or {}).items():
            self.admin("POST", f"/admin/v1/users/{user_id}/deposits", {"asset": asset, "amount": str(amount)})
        self.created.append((user_id, api_key, secret))
        expected = {asset: (Decimal(str(amount)), Decimal(0)) for asset, amount in (deposits or {}).items()}
        assert self.balances(user_id) == Balances(expected), "balances right after the deposits"
        return user_id, api_key, secret

    def revoke_key(self, api_key):
        status, body = http("DELETE", f"{self.admin_url}/admin/v1/keys/{api_key}",
                            headers={"X-Admin-Token": self.admin_token})
        assert 200 <= status < 300, f"admin DELETE key: HTTP {status}: {body!r}"
        self.created = [u for u in self.created if u[1] != api_key]

    def balances(self, user_id):
        """The user's balances from the admin API: Balances {asset: (free, locked)}."""
        user = self.admin("GET", f"/admin/v1/users/{user_id}")
        assert user["userId"] == user_id, user
        return Balances(
            {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in user["balances"]}
        )

    def audit(self):
        return self.admin("GET", "/admin/v1/audit")

    def assert_audit_ok(self):
        audit = self.audit()
        assert audit["ok"] is True, f"audit failed: {audit!r}"
        for a in audit["assets"]:
            held = Decimal(a["free"]) + Decimal(a["locked"]) + Decimal(a["fees"])
            assert held == Decimal(a["deposits"]) - Decimal(a["withdrawals"]), f"asset not conserved: {a!r}"
        return audit

    # Binance API with the standard library, for set-up and clean-up -------

    def signed(self, method, path, api_key, secret, params=None):
        params = dict(params or {})
        params.setdefault("timestamp", int(time.time() * 1000))
        query = urllib.parse.urlencode(params)
        query += "&signature=" + sign(secret, query)
        return http(method, f"{self.base_url}{path}?{query}", headers={"X-MBX-APIKEY": api_key})

    def cancel_everything(self, api_key, secret):
        """Cancels every open order of one user, so that the next test starts on empty books."""
        status, orders = self.signed("GET", "/api/v3/openOrders", api_key, secret)
        assert status == 200, f"openOrders: HTTP {status}: {orders!r}"
        for symbol in sorted({o["symbol"] for o in orders}):
            status, body = self.signed("DELETE", "/api/v3/openOrders", api_key, secret, {"symbol": symbol})
            assert status == 200, f"DELETE openOrders {symbol}: HTTP {status}: {body!r}"

    def stderr_tail(self):
        try:
            return Path(self.stderr_path).read_text(errors="replace")[-4000:]
        except OSError:
            return ""


class Balances(dict):
    """{asset: (free, locked)} where a missing asset equals (0, 0)."""

    def __getitem__(self, asset):
        return dict.get(self, asset, (Decimal(0), Decimal(0)))

    def nonzero(self):
        return {a: v for a, v in self.items() if v != (Decimal(0), Decimal(0))}

    def __eq__(self, other):
        other = other if isinstance(other, Balances) else Balances(other)
        return self.nonzero() == other.nonzero()

    def __ne__(self, other):
        return not self == other


def tradsys_binary():
    path = os.environ.get("TRADSYS_BIN")
    if path:
        return path
    subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    if not target.is_absolute():
        target = ROOT / target
    return str(target / "release" / "tradsys")


def _read_lines(stream, lines):
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\n"))
    lines.put(None)


_start_failure = []  # pytest retries a failed session fixture for every test: fail at once


@pytest.fixture(scope="session")
def tradsys_server(_loopback_only):
    if _start_failure:
        pytest.fail(_start_failure[0], pytrace=False)
    binary = tradsys_binary()
    data_dir = tempfile.mkdtemp(prefix="tradsys-clients-")
    token = "clients-" + os.urandom(12).hex()
    stderr_path = os.path.join(data_dir, "stderr.log")
    stderr = open(stderr_path, "w")
    process = subprocess.Popen(
        [
            binary, "serve",
            "--listen", "127.0.0.1:0",
            "--admin-listen", "127.0.0.1:0",
            "--admin-token", token,
            "--shards", str(SHARDS),
            "--data-dir", os.path.join(data_dir, "data"),
            "--markets", str(MARKETS),
            "--request-weight-per-minute-max", str(REQUEST_WEIGHT_PER_MINUTE_MAX),
            # Shedding is tested in tests/overload.rs; here a busy machine would
            # shed the very requests under test.
            "--overload-order-wait-ms-max", "0",
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()

    def fail(why):
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr.flush()
        text = Path(stderr_path).read_text(errors="replace")[-4000:]
        _start_failure.append(f"tradsys did not start: {why}; exit {process.returncode}; stderr:\n{text}")
        pytest.fail(_start_failure[0], pytrace=False)

    shard_ports, admin_port = {}, None
    seen = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(shard_ports) < SHARDS or admin_port is None:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            fail(f"no start-up lines within {START_TIMEOUT_S} s; got {seen!r}")
        if line is None:
            fail(f"stdout closed; got {seen!r}")
        seen.append(line)
        words = line.split()
        if len(words) == 6 and words[0] == "shard" and words[2] == "core" and words[4] == "listening":
            host, port = words[5].rsplit(":", 1)
            assert host == "127.0.0.1", line
            shard_ports[int(words[1])] = int(port)
        elif len(words) == 3 and words[:2] == ["admin", "listening"]:
            host, port = words[2].rsplit(":", 1)
            assert host == "127.0.0.1", line
            admin_port = int(port)
    assert sorted(shard_ports) == list(range(SHARDS)), seen
    assert len(set(shard_ports.values())) == 1, f"shards listen on one port (SO_REUSEPORT): {seen!r}"
    port = shard_ports[0]
    server = Tradsys(
        process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", token, data_dir, stderr_path
    )

    while True:
        try:
            status, body = http("GET", server.base_url + "/ready")
            if status == 200:
                break
        except OSError as e:
            body = repr(e)
        if time.monotonic() > deadline:
            fail(f"/ready did not answer 200: {body!r}")
        time.sleep(0.02)  # polling a start-up that has a deadline, not a race fix

    yield server

    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"tradsys did not stop within {STOP_TIMEOUT_S} s of SIGTERM", pytrace=False)
    stderr.close()
    assert code == 0, f"tradsys exited {code} on SIGTERM; stderr:\n{server.stderr_tail()}"
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def tradsys(tradsys_server):
    """The session's server for one test: afterwards, its users' orders are
    cancelled and the audit must be ok."""
    server = tradsys_server
    assert server.process.poll() is None, f"tradsys died: exit {server.process.returncode}\n{server.stderr_tail()}"
    server.created = []
    yield server
    for _user_id, api_key, secret in server.created:
        server.cancel_everything(api_key, secret)
    server.created = []
    server.assert_audit_ok()
