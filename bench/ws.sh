#!/usr/bin/env bash
# bench/ws.sh — WebSocket stream benchmarks of tradsys: memory of idle
# subscribed connections, fan-out of one trade stream to many subscribers
# (delivered messages per second, every subscriber checked for every trade
# id in order), and trade-to-subscriber latency; and the memory of idle
# WebSocket API sessions that follow one account (`wsapi-idle`), logged on
# with session.logon unless WSAPI_LOGON=0.
#
# One tradsys shard pinned to SERVER_CPU, the load generator
# (bench/loadgen, `ws-idle` and `ws-fanout`) pinned to CLIENT_CPU: the
# delivered-messages figure is the whole two-core box, client included.
# Like bench/rest.sh, it waits for a quiet machine before each run, marks a
# run BUSY when other processes or steal took more than 5 % of a core, and
# repeats a BUSY run up to ATTEMPTS times, keeping every line in the
# results file.
#
# Limits raised for the benchmark: the request limits (see LIMIT_FLAGS;
# trades are made over REST) and ws_connections_per_ip_max (default 300 per
# shard; every connection here comes from 127.0.0.1).
#
# All traffic goes to 127.0.0.1.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
	cat <<'EOF'
usage: bench/ws.sh [idle|fanout|latency|wsapi-idle|all]

  idle     IDLE_CONNS connections each subscribed to IDLE_STREAM (falls back
           to IDLE_FALLBACK when the server does not serve it): server RSS
           and kernel socket memory per connection (target <= 2 KiB user space)
  fanout   FANOUT_SUBS subscribers of btcusdt@trade at each of FANOUT_RATES
           trades/s: delivered messages/s (target >= 1,000,000 on 2 cores)
  latency  each SUBSCRIBERS:TRADES_PER_S point of LAT_POINTS: taker send ->
           subscriber receipt p50/p99 (target p99 <= 1 ms at 10,000
           subscribers and 1,000 trades/s) and the REST round trip alone
  wsapi-idle  IDLE_CONNS connections to /ws-api/v3, each a session logged on
           with session.logon (Ed25519 keys) and subscribed to its user's
           data with userDataStream.subscribe (WSAPI_LOGON=0: no logon, one
           userDataStream.subscribe.signature, HMAC-signed), against
           IDLE_CONNS connections to /ws/IDLE_STREAM, each on a fresh server
           holding the same IDLE_WSAPI_USERS users: server RSS per
           connection of both and the difference (target <= 512 bytes for a
           logged-on session)
  all      idle, fanout and latency (default)

  -h, --help  this text

environment (defaults in brackets):
  IDLE_CONNS [18000]  IDLE_STREAM [btcusdt@ticker]  IDLE_FALLBACK [btcusdt@bookTicker]
  IDLE_HOLD [25]  seconds the idle connections are held (past one ping round)
  FANOUT_SUBS [10000]  FANOUT_RATES ["50 100 200"]
  LAT_POINTS ["10000:1000 100:1000 10000:10"]
  IDLE_BARE [1]  1: also weigh IDLE_CONNS connections to /ws with no stream
  IDLE_WSAPI_USERS [IDLE_CONNS]  users (with keys, no funds) for wsapi-idle;
            session i follows user i mod IDLE_WSAPI_USERS
  WSAPI_RATE_LIMITS [1]  0: /ws-api/v3?returnRateLimits=false
  WSAPI_LOGON [1]  wsapi-idle: 1: each session logs on with session.logon
            (the users get Ed25519 keys as well) and subscribes with
            userDataStream.subscribe; 0: userDataStream.subscribe.signature
            on a session that is not logged on (HMAC keys only)
  DURATION [10]  WARMUP [2]  PRODUCERS [4]  THREADS [1]
  SPIN [0]  1: receivers poll without sleeping, so that the server's sends
            do not pay for waking them (on loopback they would)
  FANOUT_SPINS ["0 1"]  the fan-out runs are made with each of these SPIN
  DRAIN [30]  seconds a fan-out run waits for the last frames
  SERVER_CPU [0]  CLIENT_CPU [1]   (with SHARDS=1)
  SHARDS [1]  2: one shard per core, server and load generator unpinned
  QUIET_WAIT [300]  ATTEMPTS [2]
  TRADSYS_BIN  LOADGEN_BIN  use these binaries instead of building
  CARGO_TARGET_DIR  respected by the release build
  RESULTS_DIR [bench/results]  where ws-<date>.txt goes
EOF
}

IDLE_CONNS=${IDLE_CONNS:-18000}
IDLE_STREAM=${IDLE_STREAM:-btcusdt@ticker}
IDLE_FALLBACK=${IDLE_FALLBACK:-btcusdt@bookTicker}
IDLE_HOLD=${IDLE_HOLD:-25}
FANOUT_SUBS=${FANOUT_SUBS:-10000}
FANOUT_RATES=${FANOUT_RATES:-50 100 200}
LAT_POINTS=${LAT_POINTS:-10000:1000 100:1000 10000:10}
IDLE_BARE=${IDLE_BARE:-1}
IDLE_WSAPI_USERS=${IDLE_WSAPI_USERS:-$IDLE_CONNS}
WSAPI_RATE_LIMITS=${WSAPI_RATE_LIMITS:-1}
WSAPI_LOGON=${WSAPI_LOGON:-1}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
PRODUCERS=${PRODUCERS:-4}
THREADS=${THREADS:-1}
SPIN=${SPIN:-0}
FANOUT_SPINS=${FANOUT_SPINS:-0 1}
DRAIN=${DRAIN:-30}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SHARDS=${SHARDS:-1}
QUIET_WAIT=${QUIET_WAIT:-300}
ATTEMPTS=${ATTEMPTS:-2}
ADMIN_TOKEN=ws-bench-admin-token
LIMIT_FLAGS=(--request-weight-per-minute-max 4000000000 --raw-requests-per-5m-max 4000000000
	--orders-per-10s-max 4000000000 --orders-per-day-max 4000000000
	--ws-connections-per-ip-max 1048576)

server_pin=()
client_pin=()

mode=all
for arg in "$@"; do
	case "$arg" in
	-h | --help) usage; exit 0 ;;
	idle | fanout | latency | wsapi-idle | all) mode=$arg ;;
	*) usage >&2; exit 2 ;;
	esac
done

if ((SHARDS == 1)); then
	server_pin=(taskset -c "$SERVER_CPU")
	client_pin=(taskset -c "$CLIENT_CPU")
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
command_line="IDLE_CONNS=$IDLE_CONNS IDLE_STREAM=$IDLE_STREAM FANOUT_SUBS=$FANOUT_SUBS FANOUT_RATES='$FANOUT_RATES' LAT_POINTS='$LAT_POINTS' IDLE_BARE=$IDLE_BARE DURATION=$DURATION WARMUP=$WARMUP PRODUCERS=$PRODUCERS THREADS=$THREADS SPIN=$SPIN FANOUT_SPINS='$FANOUT_SPINS' SHARDS=$SHARDS bench/ws.sh $*"
if [[ $mode == wsapi-idle ]]; then
	command_line="IDLE_HOLD=$IDLE_HOLD IDLE_WSAPI_USERS=$IDLE_WSAPI_USERS WSAPI_RATE_LIMITS=$WSAPI_RATE_LIMITS WSAPI_LOGON=$WSAPI_LOGON $command_line"
	# The WebSocket API's connections opened per IP in 5 minutes (300 by
	# default) and user data connections per user (3): every session here
	# comes from 127.0.0.1, and sessions may share users.
	LIMIT_FLAGS+=(--ws-api-connection-attempts-per-5m-max 1000000000
		--ws-user-data-connections-per-user-max 1048576)
fi

# As in bench/rest.sh: neither the temp dir nor the binaries carry the
# name "tradsys", so that other suites' clean-up by name cannot stop them.
tmp=$(mktemp -d /tmp/wsbench.XXXXXX)
pids=()
tpid=""
results_dir=${RESULTS_DIR:-$root/bench/results}
results="$results_dir/ws-$(date -u +%F).txt"
mkdir -p "$results_dir"

cleanup() {
	local rc=$? pid
	for pid in "${pids[@]}"; do
		stop_pid "$pid"
	done
	if ((rc != 0)); then
		echo "status: incomplete (exit $rc)" >>"$results"
		tail -n 20 "$tmp"/*.log >&2 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

out() { printf '%s\n' "$*" | tee -a "$results"; }
log() { printf '%s\n' "$*" >&2; }

build() {
	if [[ -z "${TRADSYS_BIN:-}" || -z "${LOADGEN_BIN:-}" ]]; then
		log "building release (tradsys and tradsys-loadgen)"
		cargo build --release -p tradsys --bin tradsys >&2
		cargo build --release -p tradsys-loadgen >&2
		local dir="${CARGO_TARGET_DIR:-$root/target}/release"
		TRADSYS_BIN=${TRADSYS_BIN:-$dir/tradsys}
		LOADGEN_BIN=${LOADGEN_BIN:-$dir/tradsys-loadgen}
	fi
	cp "$TRADSYS_BIN" "$tmp/wsbench-server"
	cp "$LOADGEN_BIN" "$tmp/wsbench-loadgen"
	built_from=$TRADSYS_BIN
	TRADSYS_BIN=$tmp/wsbench-server
	LOADGEN_BIN=$tmp/wsbench-loadgen
}

# No periodic snapshot during a run: the buffers of a snapshot of 18,000
# users (tens of MiB) stay in the server's RSS once freed, and one taken
# during an idle hold was seen adding 4 KiB to every connection's figure.
SNAPSHOT_FLAGS=(--snapshot-interval-s 86400 --snapshot-records 1099511627776)

# One shard on SERVER_CPU (or SHARDS shards, each pinned by the server
# itself) with a fresh data directory; sets tport, aport and tpid.
start_tradsys() {
	local i
	tport=$(free_port)
	rm -rf "$tmp/data"
	mkdir -p "$tmp/data"
	"${server_pin[@]}" "$TRADSYS_BIN" serve --listen "127.0.0.1:$tport" --admin-listen 127.0.0.1:0 \
		--admin-token "$ADMIN_TOKEN" --shards "$SHARDS" --data-dir "$tmp/data" --demo-user false \
		"${LIMIT_FLAGS[@]}" "${SNAPSHOT_FLAGS[@]}" >"$tmp/tradsys.log" 2>&1 &
	tpid=$!
	pids+=("$tpid")
	wait_http "http://127.0.0.1:$tport/ready" "$tpid" tradsys
	aport=""
	for ((i = 0; i < 50; i++)); do
		aport=$(awk '/^admin listening/ { n = split($NF, a, ":"); print a[n] }' "$tmp/tradsys.log")
		[[ -n "$aport" ]] && break
		sleep 0.1
	done
	[[ -n "$aport" ]] || { log "no admin port in the server's output"; return 1; }
}

stop_tradsys() {
	local keep=() pid
	stop_pid "$tpid"
	for pid in "${pids[@]}"; do [[ "$pid" != "$tpid" ]] && keep+=("$pid"); done
	pids=("${keep[@]}")
}

check_server() {
	local rc=0
	alive "$tpid" && return 0
	wait "$tpid" || rc=$?
	out "ERROR: tradsys (pid $tpid) exited by itself with status $rc before $(date -u +%T)Z; its log:"
	sed 's/^/    /' "$tmp/tradsys.log" | tail -n 20 | tee -a "$results"
	exit 1
}

server_ticks() {
	local pid t=0
	for pid in "$@"; do
		t=$((t + $(sed 's/^.*) //' /proc/"$pid"/stat 2>/dev/null | awk '{ print $12 + $13 }' || echo 0)))
	done
	echo "$t"
}

# Run-window accounting as in bench/rest.sh: other (percent of a core used
# by anything but the server and the load generator), steal, busy.
window_end() {
	local b1 t1 st1 s1 c0 c1
	b1=$(busy_ticks); t1=$(total_ticks); st1=$(steal_ticks); s1=$(server_ticks "${pids[@]}")
	children_ticks >"$tmp/c1"
	c0=$(<"$tmp/c0"); c1=$(<"$tmp/c1")
	other=$(awk -v o="$((b1 - w_b0 - (s1 - w_s0) - (c1 - c0)))" -v t="$((t1 - w_t0))" -v n="$(nproc)" \
		'BEGIN { v = t ? 100 * o * n / t : 0; if (v < 0) v = 0; printf "%.1f", v }')
	steal=$(awk -v s="$((st1 - w_st0))" -v t="$((t1 - w_t0))" -v n="$(nproc)" 'BEGIN { printf "%.1f", t ? 100 * s * n / t : 0 }')
	busy=""
	awk -v v="$other" -v s="$steal" 'BEGIN { exit !(v > 5 || s > 5) }' && busy=" BUSY"
	return 0
}

# run_loadgen LABEL ARGS...: runs the load generator on CLIENT_CPU, BUSY
# runs repeated up to ATTEMPTS times; every attempt's output is kept.
run_loadgen() {
	local label=$1 attempt f rc
	shift
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		wait_quiet
		check_server
		f="$tmp/run.txt"
		rc=0
		window_start
		"${client_pin[@]}" "$LOADGEN_BIN" "$@" >"$f" 2>&1 || rc=$?
		window_end
		out "-- $label, attempt $attempt ($(date -u +%T)Z): other-cpu $other%, steal $steal%$busy$( ((rc)) && echo ", loadgen exit $rc")"
		sed 's/^/    /' "$f" | tee -a "$results"
		((rc)) && return 1
		[[ -z "$busy" ]] && return 0
	done
	return 0
}

# idle_run STREAM [FALLBACK]: a fresh server for every attempt, because a
# second run would find the memory the first one left behind and weigh
# nothing.
idle_run() {
	local stream=$1 fallback=(${2:+--fallback-stream "$2"}) attempt
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		start_tradsys
		ATTEMPTS=1 run_loadgen "idle $IDLE_CONNS on $stream, server $attempt" ws-idle --target "127.0.0.1:$tport" \
			--pid "$tpid" --conns "$IDLE_CONNS" --stream "$stream" "${fallback[@]}" --hold-s "$IDLE_HOLD"
		stop_tradsys
		if [[ -z "$busy" ]]; then break; fi
	done
	return 0
}

bench_idle() {
	out ""
	out "== idle subscribed connections: $IDLE_CONNS to /ws/$IDLE_STREAM (fallback $IDLE_FALLBACK), held ${IDLE_HOLD}s =="
	idle_run "$IDLE_STREAM" "$IDLE_FALLBACK"
	if ((IDLE_BARE)); then
		out ""
		out "== idle connections without a stream: $IDLE_CONNS to /ws, held ${IDLE_HOLD}s (the subscription's share) =="
		idle_run -
	fi
}

# idle_users: IDLE_WSAPI_USERS users with keys and no funds on the running
# server, as many on each shard; with WSAPI_LOGON=1 each has an Ed25519 key
# besides its HMAC key (session.logon takes only Ed25519 keys).
idle_users() {
	"$LOADGEN_BIN" setup --admin "127.0.0.1:$aport" --token "$ADMIN_TOKEN" --shards "$SHARDS" \
		--per-shard $(((IDLE_WSAPI_USERS + SHARDS - 1) / SHARDS)) --fund 0 --ed25519 "$WSAPI_LOGON" \
		--out "$tmp/idle-users" >&2
}

# idle_kind_run stream|wsapi: IDLE_CONNS idle connections of one kind on a
# fresh server (per attempt) that holds the same users whichever the kind,
# so that two servers differ only in their connections; sets idle_rss to
# the kept attempt's server RSS per connection after the hold.
idle_kind_run() {
	local kind=$1 attempt label args
	case $kind in
	stream)
		label="idle $IDLE_CONNS on $IDLE_STREAM"
		args=(--stream "$IDLE_STREAM" --fallback-stream "$IDLE_FALLBACK")
		;;
	wsapi)
		label="idle $IDLE_CONNS WebSocket API sessions with a user data subscription, $(session_form)"
		args=(--wsapi "$tmp/idle-users" --rate-limits "$WSAPI_RATE_LIMITS" --logon "$WSAPI_LOGON")
		;;
	esac
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		start_tradsys
		idle_users
		ATTEMPTS=1 run_loadgen "$label, server $attempt" ws-idle --target "127.0.0.1:$tport" --pid "$tpid" \
			--conns "$IDLE_CONNS" "${args[@]}" --hold-s "$IDLE_HOLD"
		stop_tradsys
		if [[ -z "$busy" ]]; then break; fi
	done
	idle_rss=$(awk '/^RESULT/ { for (i = 2; i <= NF; i++) if (sub(/^rss_per_conn=/, "", $i)) print $i }' "$tmp/run.txt")
}

# session_form: how the wsapi-idle sessions subscribe (WSAPI_LOGON).
session_form() {
	if [[ $WSAPI_LOGON == 1 ]]; then
		echo "logged on (session.logon, Ed25519) and subscribed with userDataStream.subscribe"
	else
		echo "not logged on, subscribed with userDataStream.subscribe.signature (HMAC)"
	fi
}

bench_wsapi_idle() {
	local stream_rss ws_rss key_bytes keys="keys"
	[[ $WSAPI_LOGON == 1 ]] && keys="HMAC and Ed25519 keys"
	out ""
	out "== idle WebSocket API sessions with one user data subscription, $(session_form), against idle market-stream connections: $IDLE_CONNS of each, fresh servers holding $IDLE_WSAPI_USERS users with $keys, held ${IDLE_HOLD}s =="
	idle_kind_run stream
	stream_rss=$idle_rss
	idle_kind_run wsapi
	ws_rss=$idle_rss
	out "server RSS per idle connection: market stream $stream_rss bytes, WebSocket API session with a user data subscription ($(session_form)) $ws_rss bytes, difference $(awk -v a="$ws_rss" -v b="$stream_rss" 'BEGIN { printf "%.0f", a - b }') bytes (target <= 512)"
	if [[ $WSAPI_LOGON == 1 ]]; then
		# The logged-on key is the Ed25519 one (column 5 of the users file).
		key_bytes=$(awk -F'\t' 'NR == 1 { print length($5) }' "$tmp/idle-users")
		out "each measured session holds its logged-on API key: one heap copy of $key_bytes bytes, included above"
	else
		key_bytes=$(awk -F'\t' 'NR == 1 { print length($3) }' "$tmp/idle-users")
		out "a session logged on with session.logon (Ed25519 keys) and subscribed with userDataStream.subscribe holds the same plus its logged-on API key: one heap copy of $key_bytes bytes (WSAPI_LOGON=1 measures it)"
	fi
	out "RESULT wsapi-idle conns=$IDLE_CONNS stream_rss_per_conn=$stream_rss wsapi_rss_per_conn=$ws_rss key_bytes=$key_bytes logon=$WSAPI_LOGON"
}

start_trading_server() {
	start_tradsys
	# A maker and takers (with two shards, that many on each).
	"$LOADGEN_BIN" setup --admin "127.0.0.1:$aport" --token "$ADMIN_TOKEN" --shards "$SHARDS" \
		--per-shard $((PRODUCERS + 1)) --out "$tmp/users" >&2
}

fanout_run() {
	local subs=$1 rate=$2 spin=${3:-$SPIN}
	run_loadgen "$subs subscribers, $rate trades/s, spin $spin" ws-fanout --target "127.0.0.1:$tport" --users "$tmp/users" \
		--subscribers "$subs" --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" \
		--producers "$PRODUCERS" --threads "$THREADS" --pid "$tpid" --spin "$spin" --drain-s "$DRAIN"
}

bench_fanout() {
	local rate spin
	out ""
	out "== fan-out: $FANOUT_SUBS subscribers of btcusdt@trade, ${DURATION}s after ${WARMUP}s warm-up, $PRODUCERS producer connections, $THREADS receiver thread(s) =="
	start_trading_server
	# Spinning and sleeping receivers alternate at each rate, so that the
	# two are compared on the same server a minute apart.
	for rate in $FANOUT_RATES; do
		for spin in $FANOUT_SPINS; do fanout_run "$FANOUT_SUBS" "$rate" "$spin"; done
	done
	stop_tradsys
}

bench_latency() {
	local point
	out ""
	out "== latency: subscribers:trades/s points $LAT_POINTS on btcusdt@trade, ${DURATION}s after ${WARMUP}s warm-up =="
	start_trading_server
	for point in $LAT_POINTS; do fanout_run "${point%%:*}" "${point##*:}"; done
	stop_tradsys
}

build
out ""
out "=== ws benchmark $(date -u +%FT%TZ) ==="
out "command: $command_line"
out "machine: nproc $(nproc), cpu '$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)', kernel $(uname -r), open files $(ulimit -n)"
out "load before: $(cut -d' ' -f1-3 /proc/loadavg); busiest: $(ps -eo pcpu=,comm= --sort=-pcpu | head -3 | xargs)"
out "tradsys: $(git -C "$root" log -1 --format='%h %s' -- src crates)$(git -C "$root" diff --quiet HEAD -- src crates || echo ' (modified)'), $built_from"
if ((SHARDS == 1)); then
	out "pinning: server (1 shard) on cpu $SERVER_CPU, load generator on cpu $CLIENT_CPU"
else
	out "pinning: $SHARDS shards, one per cpu (the server pins them); load generator unpinned"
fi
out "limits raised for the benchmark: ${LIMIT_FLAGS[*]}"

case "$mode" in
idle) bench_idle ;;
fanout) bench_fanout ;;
latency) bench_latency ;;
wsapi-idle) bench_wsapi_idle ;;
all)
	bench_idle
	bench_fanout
	bench_latency
	;;
esac
out "=== end ==="
