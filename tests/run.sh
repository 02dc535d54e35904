#!/usr/bin/env bash
# Installs what the tests need and runs all of them.
#
# This is the README's test command and exactly what CI runs (.ci/run), on a
# fresh Debian/Ubuntu host that has Rust. Every step is idempotent: packages
# already present are not reinstalled. Tests that need servers start their
# own on free loopback ports and stop them.
set -euo pipefail

cd "$(dirname "$0")/.."

# Debian packages the test suites use (g++ builds libFuzzer for tests/fuzz.sh; prometheus brings promtool and
# nginx-light nginx, for the checks of deploy/ in tests/deploy.rs). Kept in one list so that a fresh host and CI
# install exactly the same things.
DEBIAN_PACKAGES=(ca-certificates g++ nginx-light postgresql prometheus redis-server util-linux)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    # Installed, not started: the tests start what they need on free loopback ports. policy-rc.d answering 101
    # keeps the packages' services (nginx on port 80, Prometheus, Redis, PostgreSQL) from starting at install.
    own_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
    [[ -z $own_policy ]] || $sudo rm -f /usr/sbin/policy-rc.d
fi

# Release mode: the engine's differential test runs a million operations and
# the HTTP tests start the same binary that production runs.
cargo test --release --workspace --locked

# Every fuzz target for a bounded number of executions from the corpus kept
# in fuzz/corpus (tests/fuzz.sh; docs/fuzzing.md has the long runs).
./tests/fuzz.sh

# Unmodified Binance clients (binance-connector, ccxt) against the release
# binary built above; see tests/clients/run.sh.
./tests/clients/run.sh
