#!/usr/bin/env bash
# Runs the real-client tests: unmodified Binance clients (binance-connector,
# ccxt) against a tradsys started on loopback ports.
#
# Creates .venv/ at the repository root (reused while requirements.txt is
# unchanged), builds the release binary unless TRADSYS_BIN names one, and
# runs pytest. Extra arguments go to pytest. The exit code is pytest's;
# "no tests collected" (5) is a failure like any other non-zero code.
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$PWD
requirements=tests/clients/requirements.txt
venv=$root/.venv
python=${PYTHON:-python3}

if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv
fi

want=$(sha256sum "$requirements" | cut -d' ' -f1)
stamp=$venv/.tradsys-requirements.sha256
if [[ ! -x $venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
    echo "$want" >"$stamp"
fi

if [[ -z ${TRADSYS_BIN:-} ]]; then
    # cargo does nothing when the binary is up to date, and never tests a
    # stale one.
    cargo build --release --locked
    TRADSYS_BIN=${CARGO_TARGET_DIR:-$root/target}/release/tradsys
fi
[[ -x $TRADSYS_BIN ]] || { echo "tests/clients: no tradsys binary at $TRADSYS_BIN" >&2; exit 1; }
export TRADSYS_BIN

status=0
"$venv/bin/python" -m pytest -q tests/clients "$@" || status=$?
if ((status == 5)); then
    echo "tests/clients: pytest collected no tests" >&2
fi
exit "$status"
