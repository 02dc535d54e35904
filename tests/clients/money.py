"""Expected amounts, computed exactly as the server must compute them.

A fill's quote amount is price x qty rounded down to 1e-8; commission is
charged in the asset received, at the market's rate, rounded up to 1e-8.
Binance prints decimals with 8 decimals ("0.00100000").
"""

from decimal import ROUND_DOWN, ROUND_UP, Decimal

D = Decimal
E8 = D("0.00000001")
ZERO = D(0)

# Maker and taker commission of each market (shards/markets.toml).
COMMISSION = {"BTCUSDT": D("0.001"), "ETHUSDT": D("0.001"), "ETHBTC": D("0.001"), "EURUSD": D("0.0005")}


def quote_amount(price, qty):
    return (D(price) * D(qty)).quantize(E8, rounding=ROUND_DOWN)


def commission(received, rate):
    return (D(received) * D(rate)).quantize(E8, rounding=ROUND_UP)


def fmt(value):
    """A decimal as Binance prints it: exactly 8 decimals."""
    value = D(value)
    exact = value.quantize(E8)
    assert exact == value, f"{value} has more than 8 decimals"
    return f"{exact:f}"


def step_floor(value, step):
    """value rounded down to a multiple of step."""
    return (D(value) / D(step)).to_integral_value(rounding=ROUND_DOWN) * D(step)
