#!/usr/bin/env bash
# bench/idle.sh — user-space memory per idle keep-alive connection.
#
# Builds the release binary, starts one tradsys shard pinned to SERVER_CPU
# on a free loopback port with a throw-away data directory, and lets
# bench/idle_conns.py (pinned to CLIENT_CPU) open CONNS keep-alive
# connections, each having answered one ping, and weigh them. The target is
# at most 4 KiB of server RSS per idle connection: a shard should hold tens
# of thousands of connected bots without its memory being the limit.
#
# Connections are spread over SOURCES loopback addresses (127.0.0.1..K) so a
# per-IP connection limit in the server does not cut the run short; all of
# them are on this machine.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: bench/idle.sh

environment (defaults in brackets):
  CONNS [10000] (at most 18000: the client needs one fd per connection)
  SOURCES [16]  loopback source addresses to spread connections over
  SERVER_CPU [0]  CLIENT_CPU [1]
  TRADSYS_BIN  use this binary instead of building one
  CARGO_TARGET_DIR  respected by the release build
  RESULTS_DIR [bench/results]  where the dated results file goes

Results go to stdout and are appended to bench/results/idle-<date>.txt.
EOF
}

case "${1:-}" in
-h | --help) usage; exit 0 ;;
"") ;;
*) usage >&2; exit 2 ;;
esac

CONNS=${CONNS:-10000}
SOURCES=${SOURCES:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
results_dir=${RESULTS_DIR:-$root/bench/results}
mkdir -p "$results_dir"
results="$results_dir/idle-$(date -u +%F).txt"
tmp=$(mktemp -d /tmp/tradsys-idle-bench.XXXXXX)
tpid=""

# A child that has exited stays a zombie until waited for, and kill -0
# succeeds on zombies; ask ps for the state instead.
alive() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ "$st" != Z* ]]
}

# Stop the server this script started (SIGKILL if SIGTERM is ignored for
# 5 s) and remove its data directory.
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
	local i
	if [[ -n "$tpid" ]]; then
		kill -TERM "$tpid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			alive "$tpid" || break
			sleep 0.1
		done
		kill -KILL "$tpid" 2>/dev/null || true
		wait "$tpid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

out() { printf '%s\n' "$*" | tee -a "$results"; }

if [[ -n "${TRADSYS_BIN:-}" ]]; then
	bin=$TRADSYS_BIN
else
	echo "building release (cargo build --release)" >&2
	cargo build --release --bin tradsys >&2
	bin="${CARGO_TARGET_DIR:-$root/target}/release/tradsys"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/data"
# Started from the repository root, where its default markets file is.
# The request limits are raised so that no connection is ever refused with 429.
taskset -c "$SERVER_CPU" "$bin" serve --listen "127.0.0.1:$port" --shards 1 \
	--data-dir "$tmp/data" --demo-user false \
	--request-weight-per-minute-max 4000000000 --raw-requests-per-5m-max 4000000000 \
	>"$tmp/tradsys.log" 2>&1 &
tpid=$!

for ((i = 0; ; i++)); do
	if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/ready" 2>/dev/null; then
		break
	fi
	if ! alive "$tpid" || ((i >= 300)); then
		echo "tradsys did not become ready; its log:" >&2
		cat "$tmp/tradsys.log" >&2
		exit 1
	fi
	sleep 0.1
done

out ""
out "=== idle connections $(date -u +%FT%TZ) ==="
out "command: CONNS=$CONNS SOURCES=$SOURCES SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU bench/idle.sh"
out "machine: nproc $(nproc), cpu '$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)', kernel $(uname -r)"
out "tradsys: $(git log -1 --format='%h %s' -- src crates Cargo.toml Cargo.lock)$(git diff --quiet HEAD -- src crates Cargo.toml Cargo.lock || echo ' (modified)'), $bin"
# The idle figure is the server's RSS growth, so the client must not share
# its core and must be started only after the server has settled.
sleep 1
rc=0
taskset -c "$CLIENT_CPU" python3 "$root/bench/idle_conns.py" --port "$port" --pid "$tpid" \
	--conns "$CONNS" --sources "$SOURCES" 2>&1 | tee -a "$results" || rc=$?
out "=== end (idle_conns.py exit $rc) ==="
exit "$rc"
