#!/usr/bin/env bash
# bench/rest.sh — signed REST benchmarks of tradsys: GET /api/v3/account
# against the nginx ping of bench/http.sh, and POST /api/v3/order crossing
# pairs on two shards (throughput with wrk, latency at constant rates with
# bench/loadgen); and the same orders as `order.place` over the WebSocket
# API against REST on one server (`wsapi`).
#
# It follows bench/http.sh: one core for the server and one for wrk where a
# comparison with nginx is made, rounds that alternate between the servers
# (ABBA), the median of the rounds, a wait for a quiet machine before each
# run, and every wrk count checked against the server's own counters.
#
# The benchmark raises tradsys's rate limits far above Binance's defaults
# (see LIMIT_FLAGS): with the defaults every run would end in 429s.
#
# Signed requests for wrk are written by `tradsys-loadgen presign` just
# before each run with recvWindow 60000, so a run (warm-up included) must
# stay well under 60 s; the loadgen signs each request when it sends it.
#
# All traffic goes to 127.0.0.1.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
	cat <<'EOF'
usage: bench/rest.sh [account|orders|latency|durability|history|wsapi|all]

  account   GET /api/v3/account (signed, one user) on 1 shard vs nginx ping
  orders    POST /api/v3/order crossing pairs on 2 shards, wrk throughput
  latency   orders at constant rates with tradsys-loadgen (runs `orders`
            first to learn the throughput unless LAT_RATES_ONLY=1)
  durability  POST /api/v3/order as `orders`, alternating --durability none
            and fsync rounds on fresh servers; fsync/none ratio, commit
            latency, journal bytes per order; then constant-rate latency with
            a snapshot every SNAPSHOT_RECORDS records vs none (snapshot stall)
  history   POST /api/v3/order as `orders` on fresh servers, rotating the
            history store off, SQLite (the default) and PostgreSQL (a
            private server started here, a fresh database per round);
            sqlite/off and postgres/sqlite ratios, and the store's backlog
            at the end of each round
  wsapi     one 2-shard server: REST throughput (wrk, as `orders`) and
            WebSocket API throughput (tradsys-loadgen run --api ws --rate
            max, one connection per user) in alternating rounds; then both
            at one constant rate, half the WebSocket API's median (or
            WSAPI_RATE), REST with tradsys-loadgen as `latency`; medians,
            ws/rest throughput (target >= 1.2) and p99 (target <= 0.5);
            order.place HMAC-signed per request, or on sessions logged on
            with session.logon (WSAPI_LOGON=1)
  all       account, orders and latency (default)

  -h, --help  this text

environment (defaults in brackets):
  ROUNDS [3]  DURATION [10s]  CONNS [64]  THREADS [1]  WARMUP [2s]
  SERVER_CPU [0]  CLIENT_CPU [1]   (account vs nginx: pinning as bench/http.sh)
  ORDER_THREADS [2]  ORDER_CONNS [64]   (orders: wrk unpinned, 2 shards)
  USERS_PER_SHARD [16]
  DURABILITY [fsync]  the server's --durability for account/orders/latency
  SNAPSHOT_RECORDS [200000]  SNAPSHOT_RATE [10000]   (durability: stall run)
  LAT_RATES ["10000 20000"]  extra constant rates, orders/s, besides half
              the measured throughput
  LAT_RATES_ONLY [0]  1: only LAT_RATES, do not run `orders` first
  LAT_DURATION [10]  LAT_WARMUP [2]  LAT_CONNS [64]   (seconds, connections)
  WSAPI_THREADS [2]  WSAPI_WINDOW [8]  (wsapi: loadgen threads, requests in
              flight per connection at most)
  WSAPI_RATE_LIMITS [1]  0: /ws-api/v3?returnRateLimits=false
  WSAPI_LOGON [0]  1: each WebSocket API connection logs on with session.logon
              (the users get Ed25519 keys as well) and sends order.place
              without apiKey and signature; 0: every order.place HMAC-signed
  WSAPI_RATE  the constant rate of the latency runs, orders/s (default: half
              the WebSocket API's median throughput, to 100 orders/s)
  QUIET_WAIT [300]  ATTEMPTS [3]   as in bench/http.sh
  TRADSYS_BIN  LOADGEN_BIN  use these binaries instead of building
  CARGO_TARGET_DIR  respected by the release build
  RESULTS_DIR [bench/results]  where rest-<date>.txt goes
EOF
}

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2s}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
ORDER_THREADS=${ORDER_THREADS:-2}
ORDER_CONNS=${ORDER_CONNS:-64}
USERS_PER_SHARD=${USERS_PER_SHARD:-16}
DURABILITY=${DURABILITY:-fsync}
SNAPSHOT_RECORDS=${SNAPSHOT_RECORDS:-200000}
SNAPSHOT_RATE=${SNAPSHOT_RATE:-10000}
# Extra server flags of the next start_tradsys (the durability mode sets them).
SERVER_FLAGS=()
LAT_RATES=${LAT_RATES:-10000 20000}
LAT_RATES_ONLY=${LAT_RATES_ONLY:-0}
LAT_DURATION=${LAT_DURATION:-10}
LAT_WARMUP=${LAT_WARMUP:-2}
LAT_CONNS=${LAT_CONNS:-64}
WSAPI_THREADS=${WSAPI_THREADS:-2}
WSAPI_WINDOW=${WSAPI_WINDOW:-8}
WSAPI_RATE_LIMITS=${WSAPI_RATE_LIMITS:-1}
WSAPI_LOGON=${WSAPI_LOGON:-0}
WSAPI_RATE=${WSAPI_RATE:-}
QUIET_WAIT=${QUIET_WAIT:-300}
ATTEMPTS=${ATTEMPTS:-3}
# Pre-signed requests per wrk run; wrk cycles through them.
PRESIGN_ACCOUNT_COUNT=1000
PRESIGN_ORDERS_COUNT=20000
ADMIN_TOKEN=rest-bench-admin-token
# setup's --ed25519 for the 2-shard users (the wsapi mode sets it).
SETUP_ED25519=0
LIMIT_FLAGS=(--request-weight-per-minute-max 4000000000 --raw-requests-per-5m-max 4000000000
	--orders-per-10s-max 4000000000 --orders-per-day-max 4000000000)

mode=all
for arg in "$@"; do
	case "$arg" in
	-h | --help) usage; exit 0 ;;
	account | orders | latency | durability | history | wsapi | all) mode=$arg ;;
	*) usage >&2; exit 2 ;;
	esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
command_line="ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS THREADS=$THREADS WARMUP=$WARMUP ORDER_THREADS=$ORDER_THREADS ORDER_CONNS=$ORDER_CONNS LAT_RATES='$LAT_RATES' LAT_DURATION=$LAT_DURATION LAT_CONNS=$LAT_CONNS DURABILITY=$DURABILITY SNAPSHOT_RECORDS=$SNAPSHOT_RECORDS SNAPSHOT_RATE=$SNAPSHOT_RATE bench/rest.sh $*"
if [[ $mode == wsapi ]]; then
	command_line="USERS_PER_SHARD=$USERS_PER_SHARD LAT_WARMUP=$LAT_WARMUP WSAPI_THREADS=$WSAPI_THREADS WSAPI_WINDOW=$WSAPI_WINDOW WSAPI_RATE_LIMITS=$WSAPI_RATE_LIMITS WSAPI_LOGON=$WSAPI_LOGON WSAPI_RATE=$WSAPI_RATE $command_line"
	# session.logon takes only Ed25519 keys: the users get one besides
	# their HMAC key (which REST and wrk keep using).
	if [[ $WSAPI_LOGON == 1 ]]; then
		SETUP_ED25519=1
	fi
	# The WebSocket API's own limits: requests per connection and second
	# (200 by default; a pipelining client sends thousands), connections
	# opened per IP (every round opens one per user from 127.0.0.1).
	LIMIT_FLAGS+=(--ws-api-messages-per-second-max 1000000000 --ws-api-connection-attempts-per-5m-max 1000000000
		--ws-connections-per-ip-max 1048576)
fi

# Neither the temp dir nor the binaries run from it carry the name
# "tradsys": on a shared host, other test suites' clean-up may stop
# processes by that name (seen here: a server exiting with status 0, i.e.
# after SIGTERM, mid-run), so the benchmark runs copies under its own names.
tmp=$(mktemp -d /tmp/restbench.XXXXXX)
pids=()
results_dir=${RESULTS_DIR:-$root/bench/results}
results="$results_dir/rest-$(date -u +%F).txt"
mkdir -p "$results_dir"

# --- helpers shared in spirit with bench/http.sh -------------------------


# stop_pid PID: SIGTERM, then SIGKILL after 5 s.
cleanup() {
	local rc=$? pid
	for pid in "${pids[@]}"; do
		stop_pid "$pid"
	done
	if ((rc != 0)); then
		echo "status: incomplete (exit $rc)" >>"$results"
		tail -n 20 "$tmp"/*.log "$tmp"/nginx/logs/error.log >&2 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

out() { printf '%s\n' "$*" | tee -a "$results"; }
log() { printf '%s\n' "$*" >&2; }

ensure_tools() {
	local missing=()
	command -v nginx >/dev/null || missing+=(nginx-light)
	command -v wrk >/dev/null || missing+=(wrk)
	command -v curl >/dev/null || missing+=(curl)
	command -v taskset >/dev/null || missing+=(util-linux)
	if ((${#missing[@]})); then
		log "installing: ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
			{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; }
	fi
}


build() {
	if [[ -n "${TRADSYS_BIN:-}" && -n "${LOADGEN_BIN:-}" ]]; then
		return
	fi
	log "building release (tradsys and tradsys-loadgen)"
	cargo build --release -p tradsys --bin tradsys >&2
	cargo build --release -p tradsys-loadgen >&2
	local dir="${CARGO_TARGET_DIR:-$root/target}/release"
	TRADSYS_BIN=${TRADSYS_BIN:-$dir/tradsys}
	LOADGEN_BIN=${LOADGEN_BIN:-$dir/tradsys-loadgen}
}

# Copies of the binaries under names no one else stops (see tmp above).
private_copies() {
	cp "$TRADSYS_BIN" "$tmp/restbench-server"
	cp "$LOADGEN_BIN" "$tmp/restbench-loadgen"
	built_from=$TRADSYS_BIN
	TRADSYS_BIN=$tmp/restbench-server
	LOADGEN_BIN=$tmp/restbench-loadgen
}




# start_tradsys SHARDS [taskset CPU]: sets tport, aport, tpid. The API port
# is chosen here so that every shard listens on it (SO_REUSEPORT); the
# admin port is read from the server's start-up lines.
start_tradsys() {
	local shards=$1 cpu=${2:-} i
	local pin=()
	[[ -n "$cpu" ]] && pin=(taskset -c "$cpu")
	tport=$(free_port)
	rm -rf "$tmp/data"
	mkdir -p "$tmp/data"
	"${pin[@]}" "$TRADSYS_BIN" serve --listen "127.0.0.1:$tport" --admin-listen 127.0.0.1:0 \
		--admin-token "$ADMIN_TOKEN" --shards "$shards" --data-dir "$tmp/data" --demo-user false \
		--durability "$DURABILITY" "${LIMIT_FLAGS[@]}" "${SERVER_FLAGS[@]}" >"$tmp/tradsys.log" 2>&1 &
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

# A server that exits by itself mid-benchmark is a finding, not noise: say
# how it ended (exit status, or 128 + the signal that killed it), when, and
# what it logged, then stop.
check_server() {
	local rc=0
	alive "$tpid" && return 0
	wait "$tpid" || rc=$?
	out "ERROR: tradsys (pid $tpid) exited by itself with status $rc$( ((rc > 128)) && echo " (signal $((rc - 128)))") before $(date -u +%T)Z; its log:"
	sed 's/^/    /' "$tmp/tradsys.log" | tail -n 20 | tee -a "$results"
	exit 1
}

stop_tradsys() {
	local keep=() pid
	stop_pid "$tpid"
	for pid in "${pids[@]}"; do [[ "$pid" != "$tpid" ]] && keep+=("$pid"); done
	pids=("${keep[@]}")
}

# metric NAME [ROUTE [STATUS]]: sum of a tradsys counter over shards (and,
# for tradsys_http_requests_total, one route; STATUS "200" or "other").
metric() {
	local name=$1 route=${2:-} status=${3:-}
	{ curl -fsS --max-time 2 "http://127.0.0.1:$tport/metrics" 2>/dev/null || true; } |
		awk -v n="$name" -v r="route=\"$route\"" -v s="$status" '
			index($0, n "{") == 1 {
				if (r != "route=\"\"" && index($0, r) == 0) next
				if (s == "200" && index($0, "status=\"200\"") == 0) next
				if (s == "other" && index($0, "status=\"200\"") != 0) next
				t += $NF
			}
			END { printf "%d\n", t }'
}

hz=$(getconf CLK_TCK)



# Run-window accounting: window_start before a run, window_end after it
# sets other (percent of a core used by anything but our processes), steal,
# srv_ticks (server CPU ticks) and busy (" BUSY" or "").
window_end() {
	local b1 t1 st1 s1 c0 c1
	b1=$(busy_ticks); t1=$(total_ticks); st1=$(steal_ticks); s1=$(server_ticks "${pids[@]}")
	children_ticks >"$tmp/c1"
	c0=$(<"$tmp/c0"); c1=$(<"$tmp/c1")
	srv_ticks=$((s1 - w_s0))
	other=$(awk -v o="$((b1 - w_b0 - (s1 - w_s0) - (c1 - c0)))" -v t="$((t1 - w_t0))" -v n="$(nproc)" \
		'BEGIN { v = t ? 100 * o * n / t : 0; if (v < 0) v = 0; printf "%.1f", v }')
	steal=$(awk -v s="$((st1 - w_st0))" -v t="$((t1 - w_t0))" -v n="$(nproc)" 'BEGIN { printf "%.1f", t ? 100 * s * n / t : 0 }')
	busy=""
	awk -v v="$other" -v s="$steal" 'BEGIN { exit !(v > 5 || s > 5) }' && busy=" BUSY"
	return 0
}

# --- account vs nginx ping ---------------------------------------------------

presign() {
	"$LOADGEN_BIN" presign --users "$1" --kind "$2" --count "$3" --out "$4"
}

# run_wrk_pinned NAME DURATION OUTFILE: nginx ping or tradsys account.
run_wrk_pinned() {
	local name=$1 dur=$2 outfile=$3
	local args=(-t"$THREADS" -c"$CONNS" -d"$dur" --timeout 5s)
	if [[ "$name" == nginx ]]; then
		args+=("http://127.0.0.1:$nport/api/v3/ping")
	else
		presign "$tmp/users1" account "$PRESIGN_ACCOUNT_COUNT" "$tmp/account.req"
		args+=(-s "$root/bench/rest.lua" "http://127.0.0.1:$tport" -- "$tmp/account.req" 1 "$THREADS")
	fi
	taskset -c "$CLIENT_CPU" wrk "${args[@]}" >"$outfile" 2>&1
}

wrk_field() {
	case "$1" in
	rps) awk '/^Requests\/sec:/ { print $2 }' "$2" ;;
	total) awk '/ requests in / { print $1 }' "$2" ;;
	lat) awk '$1 == "Latency" { print $2; exit }' "$2" ;;
	errs) awk -F'Socket errors: ' 'NF > 1 { print $2 }' "$2" ;;
	non2xx) awk -F': ' '/Non-2xx or 3xx responses/ { print $2 }' "$2" ;;
	esac
}

# count_check BEFORE AFTER WRK_TOTAL INFLIGHT
count_check() {
	local d=$(($2 - $1))
	if ((d >= $3 && d <= $3 + $4)); then
		echo "count-check ok (server $d)"
	else
		echo "count-check MISMATCH (server $d, wrk $3)"
	fi
}

measure_pinned_once() {
	local name=$1 round=$2 f="$tmp/wrk-$1-$2.txt" before after bad0 bad1 rps total check
	wait_quiet
	if [[ $name == nginx ]]; then
		before=$(curl -fsS "http://127.0.0.1:$nport/nginx_status" | awk 'NR == 3 { print $3 }')
	else
		check_server
		before=$(metric tradsys_http_requests_total "GET /api/v3/account" 200)
		bad0=$(metric tradsys_http_requests_total "GET /api/v3/account" other)
	fi
	window_start
	run_wrk_pinned "$name" "$DURATION" "$f"
	window_end
	rps=$(wrk_field rps "$f"); total=$(wrk_field total "$f")
	[[ -n "$rps" && -n "$total" ]] || { log "could not parse wrk output:"; cat "$f" >&2; return 1; }
	if [[ $name == nginx ]]; then
		after=$(curl -fsS "http://127.0.0.1:$nport/nginx_status" | awk 'NR == 3 { print $3 }')
		check=$(count_check "$before" "$after" "$total" $((CONNS + 2)))
	else
		after=$(metric tradsys_http_requests_total "GET /api/v3/account" 200)
		bad1=$(metric tradsys_http_requests_total "GET /api/v3/account" other)
		check="$(count_check "$before" "$after" "$total" "$CONNS") non-200 $((bad1 - bad0))"
	fi
	last_busy=$busy
	last_rps=$rps
	last_line=$(printf 'round %s  %-7s %-8s %12s req/s  %10s requests  avg-latency %-9s %s  other-cpu %s%%, steal %s%%%s%s%s' \
		"$round" "$name" "$([[ $name == nginx ]] && echo ping || echo account)" "$rps" "$total" \
		"$(wrk_field lat "$f")" "$check" "$other" "$steal" "$busy" \
		"$(e=$(wrk_field errs "$f"); [[ -n $e ]] && echo "  socket-errors: $e")" \
		"$(e=$(wrk_field non2xx "$f"); [[ -n $e ]] && echo "  non-2xx: $e")")
}

measure_pinned() {
	local attempt
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		measure_pinned_once "$@"
		if [[ -z "$last_busy" || $attempt -eq ATTEMPTS ]]; then
			out "$last_line"
			case "$1" in
			tradsys) rps_tradsys+=("$last_rps") ;;
			nginx) rps_nginx+=("$last_rps") ;;
			esac
			[[ -n "$last_busy" ]] && busy_kept=$((busy_kept + 1))
			return 0
		fi
		out "discarded: $last_line"
	done
}

bench_account() {
	local r name order mt mn
	rps_tradsys=(); rps_nginx=(); busy_kept=0
	out ""
	out "== GET /api/v3/account (signed, 1 user) on 1 shard vs nginx GET /api/v3/ping =="
	out "pinning: servers on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU; wrk -t$THREADS -c$CONNS -d$DURATION, warm-up $WARMUP"
	start_tradsys 1 "$SERVER_CPU"
	"$LOADGEN_BIN" setup --admin "127.0.0.1:$aport" --token "$ADMIN_TOKEN" --shards 1 --per-shard 2 --out "$tmp/users1"
	start_nginx
	presign "$tmp/users1" account 1 "$tmp/one.req"
	out "response from tradsys GET /api/v3/account ($(curl -sS -i -H "X-MBX-APIKEY: $(cut -f3 "$tmp/one.req")" \
		"http://127.0.0.1:$tport$(cut -f2 "$tmp/one.req")" | wc -c) bytes incl. head)"
	for name in tradsys nginx; do run_wrk_pinned "$name" "$WARMUP" "$tmp/warmup.txt"; done
	for ((r = 1; r <= ROUNDS; r++)); do
		order=(tradsys nginx)
		((r % 2 == 0)) && order=(nginx tradsys)
		for name in "${order[@]}"; do measure_pinned "$name" "$r"; done
	done
	((busy_kept)) && out "WARNING: $busy_kept kept run(s) were BUSY; the medians below are not clean"
	mt=$(median "${rps_tradsys[@]}"); mn=$(median "${rps_nginx[@]}")
	out "median: tradsys account $mt req/s, nginx ping $mn req/s, ratio account/nginx-ping $(awk -v a="$mt" -v b="$mn" 'BEGIN { printf "%.3f", a / b }') (target >= 0.8)"
	stop_tradsys
	stop_pid "$npid"
}

# --- orders on two shards ------------------------------------------------------

start_two_shards() {
	start_tradsys 2
	"$LOADGEN_BIN" setup --admin "127.0.0.1:$aport" --token "$ADMIN_TOKEN" --shards 2 \
		--per-shard "$USERS_PER_SHARD" --ed25519 "$SETUP_ED25519" --out "$tmp/users2"
	"$LOADGEN_BIN" plan --users "$tmp/users2" --shards 2 | sed 's/^/    /' | tee -a "$results"
}

# orders_counters: "local cross ok other" summed over shards.
orders_counters() {
	echo "$(metric tradsys_orders_local_total) $(metric tradsys_orders_cross_shard_total)" \
		"$(metric tradsys_http_requests_total "POST /api/v3/order" 200)" \
		"$(metric tradsys_http_requests_total "POST /api/v3/order" other)"
}

book() { "$LOADGEN_BIN" book --target "127.0.0.1:$tport" | sed 's/^/    /' | tee -a "$results"; }

measure_orders_once() {
	local round=$1 f="$tmp/wrk-orders-$1.txt" l0 x0 ok0 bad0 l1 x1 ok1 bad1 rps total orders cpu_s
	wait_quiet
	check_server
	presign "$tmp/users2" orders "$PRESIGN_ORDERS_COUNT" "$tmp/orders.req"
	read -r l0 x0 ok0 bad0 <<<"$(orders_counters)"
	window_start
	wrk -t"$ORDER_THREADS" -c"$ORDER_CONNS" -d"$DURATION" --timeout 5s -s "$root/bench/rest.lua" \
		"http://127.0.0.1:$tport" -- "$tmp/orders.req" 2 "$ORDER_THREADS" >"$f" 2>&1
	window_end
	read -r l1 x1 ok1 bad1 <<<"$(orders_counters)"
	rps=$(wrk_field rps "$f"); total=$(wrk_field total "$f")
	[[ -n "$rps" && -n "$total" ]] || { log "could not parse wrk output:"; cat "$f" >&2; return 1; }
	orders=$((l1 - l0 + x1 - x0))
	cpu_s=$(awk -v t="$srv_ticks" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')
	last_busy=$busy
	last_rps=$rps
	last_per_cpu=$(awk -v o="$orders" -v c="$cpu_s" 'BEGIN { printf "%.0f", (c > 0 ? o / c : 0) }')
	last_cross=$(awk -v x="$((x1 - x0))" -v o="$orders" 'BEGIN { printf "%.1f", o ? 100 * x / o : 0 }')
	last_line=$(printf 'round %s  orders %12s req/s  %9s requests  avg-latency %-9s %s non-200 %s  orders %s (cross-shard %s%%)  server-cpu %ss = %s orders/cpu-s  other-cpu %s%%, steal %s%%%s%s%s' \
		"$round" "$rps" "$total" "$(wrk_field lat "$f")" "$(count_check "$ok0" "$ok1" "$total" "$ORDER_CONNS")" \
		"$((bad1 - bad0))" "$orders" "$last_cross" "$cpu_s" "$last_per_cpu" "$other" "$steal" "$busy" \
		"$(e=$(wrk_field errs "$f"); [[ -n $e ]] && echo "  socket-errors: $e")" \
		"$(e=$(wrk_field non2xx "$f"); [[ -n $e ]] && echo "  non-2xx: $e")")
}

bench_orders() {
	local r attempt
	rps_orders=(); per_cpu=(); cross=(); busy_kept=0
	out ""
	out "== POST /api/v3/order crossing pairs, 2 shards, wrk -t$ORDER_THREADS -c$ORDER_CONNS -d$DURATION unpinned =="
	out "users: $USERS_PER_SHARD per shard; form bodies signed by tradsys-loadgen presign, SELL and BUY of a pair on one wrk thread"
	run_orders_warmup
	for ((r = 1; r <= ROUNDS; r++)); do
		for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
			measure_orders_once "$r"
			if [[ -z "$last_busy" || $attempt -eq ATTEMPTS ]]; then
				out "$last_line"
				rps_orders+=("$last_rps"); per_cpu+=("$last_per_cpu"); cross+=("$last_cross")
				[[ -n "$last_busy" ]] && busy_kept=$((busy_kept + 1))
				break
			fi
			out "discarded: $last_line"
		done
	done
	((busy_kept)) && out "WARNING: $busy_kept kept run(s) were BUSY; the medians below are not clean"
	orders_median=$(median "${rps_orders[@]}")
	out "median: $orders_median orders/s (target >= 60000), $(median "${per_cpu[@]}") orders per server CPU-second, cross-shard share $(median "${cross[@]}")%"
	out "resting after all rounds (a pair that traded leaves nothing):"
	book
}

run_orders_warmup() {
	presign "$tmp/users2" orders "$PRESIGN_ORDERS_COUNT" "$tmp/orders.req"
	wrk -t"$ORDER_THREADS" -c"$ORDER_CONNS" -d"$WARMUP" -s "$root/bench/rest.lua" \
		"http://127.0.0.1:$tport" -- "$tmp/orders.req" 2 "$ORDER_THREADS" >"$tmp/warmup.txt" 2>&1
}

bench_latency() {
	local rates=() rate f l0 x0 l1 x1 result
	out ""
	out "== POST /api/v3/order crossing pairs, 2 shards, constant rate (tradsys-loadgen run, $LAT_CONNS connections, ${LAT_DURATION}s after ${LAT_WARMUP}s warm-up) =="
	if [[ -n "${orders_median:-}" ]]; then
		rates+=("$(awk -v m="$orders_median" 'BEGIN { printf "%d", m / 2 / 1000 + 0.5 }')000")
	fi
	for rate in $LAT_RATES; do rates+=("$rate"); done
	for rate in "${rates[@]}"; do
		f="$tmp/lat-$rate.txt"
		wait_quiet
		check_server
		read -r l0 x0 _ _ <<<"$(orders_counters)"
		window_start
		"$LOADGEN_BIN" run --target "127.0.0.1:$tport" --users "$tmp/users2" --rate "$rate" \
			--duration "$LAT_DURATION" --warmup "$LAT_WARMUP" --connections "$LAT_CONNS" >"$f"
		window_end
		read -r l1 x1 _ _ <<<"$(orders_counters)"
		sed 's/^/    /' "$f" | grep -v RESULT | tee -a "$results"
		result=$(grep '^RESULT' "$f")
		out "rate $rate: ${result#RESULT } server-cpu $(awk -v t="$srv_ticks" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')s cross-shard $(awk -v x="$((x1 - x0))" -v o="$((l1 - l0 + x1 - x0))" 'BEGIN { printf "%.1f", o ? 100 * x / o : 0 }')% other-cpu $other% steal $steal%$busy"
	done
	out "resting after the latency runs:"
	book
}

# --- durability: fsync vs none, and snapshot stalls ---------------------------

# journal_summary: commit p50 and p99 (max over shards, ms) and frame bytes.
journal_summary() {
	curl -fsS --max-time 2 "http://127.0.0.1:$tport/metrics" | awk '
		/^tradsys_journal_commit_duration_seconds\{.*quantile="0.5"/ { if ($NF > p50) p50 = $NF }
		/^tradsys_journal_commit_duration_seconds\{.*quantile="0.99"/ { if ($NF > p99) p99 = $NF }
		/^tradsys_journal_commits_total/ { commits += $NF }
		/^tradsys_journal_records_total/ { records += $NF }
		/^tradsys_journal_frame_bytes_total/ { bytes += $NF }
		END { printf "%.3f %.3f %d %d %d\n", p50 * 1000, p99 * 1000, commits, records, bytes }'
}

bench_durability() {
	local r mode order rps_none=() rps_fsync=() p50s=() p99s=() bpo=() l0 x0 l1 x1 p50 p99 commits records bytes bytes0
	out ""
	out "== durability: POST /api/v3/order crossing pairs, 2 shards, wrk -t$ORDER_THREADS -c$ORDER_CONNS -d$DURATION, fresh server per round =="
	for ((r = 1; r <= ROUNDS; r++)); do
		order="none fsync"
		((r % 2 == 0)) && order="fsync none"
		for mode in $order; do
			DURABILITY=$mode
			start_two_shards
			run_orders_warmup
			read -r l0 x0 _ _ <<<"$(orders_counters)"
			read -r _ _ _ _ bytes0 <<<"$(journal_summary)"
			measure_orders_once "$r"
			read -r l1 x1 _ _ <<<"$(orders_counters)"
			read -r p50 p99 commits records bytes <<<"$(journal_summary)"
			out "$mode: $last_line"
			if [[ $mode == none ]]; then
				rps_none+=("$last_rps")
			else
				rps_fsync+=("$last_rps"); p50s+=("$p50"); p99s+=("$p99")
				bpo+=("$(awk -v b="$((bytes - bytes0))" -v o="$((l1 - l0 + x1 - x0))" 'BEGIN { printf "%.0f", o ? b / o : 0 }')")
				out "    journal: $commits commits, $records records, commit p50 ${p50} ms p99 ${p99} ms (whole server run), $((bytes - bytes0)) frame bytes in the round"
			fi
			stop_tradsys
		done
	done
	DURABILITY=fsync
	local none fsync
	none=$(median "${rps_none[@]}"); fsync=$(median "${rps_fsync[@]}")
	out "median: none $none orders/s, fsync $fsync orders/s, fsync/none $(awk -v a="$fsync" -v b="$none" 'BEGIN { printf "%.3f", b ? a / b : 0 }') (target >= 0.70)"
	out "fsync: commit latency p50 $(median "${p50s[@]}") ms, p99 $(median "${p99s[@]}") ms; journal frame bytes per order $(median "${bpo[@]}") (an order journals its own record, the book's copy of it and the fills on both sides)"
	bench_snapshot_stall
}

# Constant-rate latency with snapshots every SNAPSHOT_RECORDS records and
# with none: a shard that stalled while a snapshot was taken would show in
# the tail and the maximum.
bench_snapshot_stall() {
	local snaps f result
	out ""
	out "== snapshot stall: tradsys-loadgen run at $SNAPSHOT_RATE orders/s, ${LAT_DURATION}s, $LAT_CONNS connections, 2 shards, fsync =="
	for snaps in off on; do
		if [[ $snaps == on ]]; then
			SERVER_FLAGS=(--snapshot-records "$SNAPSHOT_RECORDS")
		else
			SERVER_FLAGS=(--snapshot-records 1099511627776 --snapshot-interval-s 86400)
		fi
		start_two_shards
		f="$tmp/stall-$snaps.txt"
		wait_quiet
		window_start
		"$LOADGEN_BIN" run --target "127.0.0.1:$tport" --users "$tmp/users2" --rate "$SNAPSHOT_RATE" \
			--duration "$LAT_DURATION" --warmup "$LAT_WARMUP" --connections "$LAT_CONNS" >"$f"
		window_end
		result=$(grep '^RESULT' "$f")
		out "snapshots $snaps (${SERVER_FLAGS[*]}): ${result#RESULT } other-cpu $other% steal $steal%$busy"
		out "    snapshots taken: $(grep -c '^snapshot at epoch' "$tmp/tradsys.log" || true); $(grep '^snapshot at epoch' "$tmp/tradsys.log" | tail -n 1)"
		stop_tradsys
	done
	SERVER_FLAGS=()
}

# --- history store: off vs SQLite vs PostgreSQL --------------------------------

# history_backlog: rows waiting and rows written, summed over shards.
history_backlog() {
	echo "$(metric tradsys_history_backlog_rows) $(metric tradsys_history_rows_written_total)"
}

# wait_history_drained LIMIT_S: waits until no shard has rows waiting for
# the store (nor rows dropped for room still to be read back from the
# journal); prints the seconds it took, or "not-drained".
wait_history_drained() {
	local limit=$1 start i
	start=$(date +%s.%N)
	for ((i = 0; i < limit * 10; i++)); do
		if (($(metric tradsys_history_backlog_rows) == 0 && $(metric tradsys_history_backlog_over_max) == 0)); then
			awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", e - s }'
			return 0
		fi
		sleep 0.1
	done
	echo "not-drained"
}

bench_history() {
	local r store rps_off=() rps_sqlite=() rps_pg=() cpu_off=() cpu_sqlite=() cpu_pg=() order waiting written
	start_postgres
	out ""
	out "== history store: POST /api/v3/order crossing pairs, 2 shards, wrk -t$ORDER_THREADS -c$ORDER_CONNS -d$DURATION, fresh server per round, --durability $DURABILITY =="
	out "PostgreSQL $("$pgbin/postgres" --version | awk '{ print $NF }') on 127.0.0.1:$pgport (private, fsync on), a fresh database per round"
	for ((r = 1; r <= ROUNDS; r++)); do
		case $((r % 3)) in
			1) order="off sqlite postgres" ;;
			2) order="sqlite postgres off" ;;
			0) order="postgres off sqlite" ;;
		esac
		for store in $order; do
			case $store in
				off) SERVER_FLAGS=(--history off) ;;
				sqlite) SERVER_FLAGS=() ;;
				postgres)
					pg_sql "DROP DATABASE IF EXISTS bench" >/dev/null
					pg_sql "CREATE DATABASE bench" >/dev/null
					SERVER_FLAGS=(--postgres "postgresql://postgres@127.0.0.1:$pgport/bench")
					;;
			esac
			start_two_shards
			run_orders_warmup
			# The warm-up's rows are the store's work, not the next window's;
			# nor are the writes earlier rounds left in the page cache or in
			# PostgreSQL's buffers, which the kernel and PostgreSQL's
			# checkpointer would otherwise flush in the middle of this window.
			wait_history_drained 300 >/dev/null
			pg_sql "CHECKPOINT" >/dev/null
			sync
			measure_orders_once "$r"
			read -r waiting written <<<"$(history_backlog)"
			out "$store: $last_line"
			out "    history: $written rows written, $waiting waiting at the end of the window, $(metric tradsys_history_rows_dropped_total) dropped for room (read back from the journal); all in the store $(wait_history_drained 600) s after the load stopped"
			case $store in
				off) rps_off+=("$last_rps"); cpu_off+=("$last_per_cpu") ;;
				sqlite) rps_sqlite+=("$last_rps"); cpu_sqlite+=("$last_per_cpu") ;;
				postgres) rps_pg+=("$last_rps"); cpu_pg+=("$last_per_cpu") ;;
			esac
			stop_tradsys
		done
	done
	SERVER_FLAGS=()
	local off sqlite pg
	off=$(median "${rps_off[@]}"); sqlite=$(median "${rps_sqlite[@]}"); pg=$(median "${rps_pg[@]}")
	out "median orders/s: off $off, sqlite $sqlite, postgres $pg"
	out "ratios: sqlite/off $(awk -v a="$sqlite" -v b="$off" 'BEGIN { printf "%.3f", b ? a / b : 0 }') (target >= 0.90), postgres/sqlite $(awk -v a="$pg" -v b="$sqlite" 'BEGIN { printf "%.3f", b ? a / b : 0 }') (target >= 0.90)"
	out "median orders per server CPU-second (PostgreSQL's CPU counted as server): off $(median "${cpu_off[@]}"), sqlite $(median "${cpu_sqlite[@]}"), postgres $(median "${cpu_pg[@]}")"
}

# --- WebSocket API against REST on one server ---------------------------------

# loadgen_window FILE ARGS...: one tradsys-loadgen run on the 2-shard users
# with the run-window accounting; sets lg_result (its RESULT fields),
# lg_orders (the server's count in the window), lg_cross (their cross-shard
# share, %), lg_cpu_s (server CPU seconds) and lg_gen_cpu_s (the load
# generator's).
loadgen_window() {
	local f=$1 l0 x0 l1 x1
	shift
	wait_quiet
	check_server
	read -r l0 x0 _ _ <<<"$(orders_counters)"
	window_start
	"$LOADGEN_BIN" run --target "127.0.0.1:$tport" --users "$tmp/users2" "$@" >"$f"
	window_end
	read -r l1 x1 _ _ <<<"$(orders_counters)"
	lg_result=$(grep '^RESULT' "$f") || { log "no RESULT from the load generator:"; cat "$f" >&2; return 1; }
	lg_result=${lg_result#RESULT }
	lg_orders=$((l1 - l0 + x1 - x0))
	lg_cross=$(awk -v x="$((x1 - x0))" -v o="$lg_orders" 'BEGIN { printf "%.1f", o ? 100 * x / o : 0 }')
	lg_cpu_s=$(awk -v t="$srv_ticks" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')
	lg_gen_cpu_s=$(awk '/^load generator CPU:/ { print $4 }' "$f")
}

# field NAME: one NAME=VALUE of the last loadgen_window's RESULT.
field() { tr ' ' '\n' <<<"$lg_result" | awk -F= -v n="$1" '$1 == n { print $2 }'; }

wsapi_args() {
	echo --api ws --threads "$WSAPI_THREADS" --window "$WSAPI_WINDOW" --rate-limits "$WSAPI_RATE_LIMITS" \
		--logon "$WSAPI_LOGON"
}

measure_wsapi_max_once() {
	local round=$1
	# shellcheck disable=SC2046  # wsapi_args is a list of words.
	loadgen_window "$tmp/wsapi-max-$round.txt" $(wsapi_args) --rate max --duration "${DURATION%s}" \
		--warmup "$LAT_WARMUP"
	last_busy=$busy
	last_rps=$(field achieved)
	last_line=$(printf 'round %s  wsapi %12s orders/s  ok %s rejected %s failed %s  round trip p50 %s p99 %s µs  server orders %s (cross-shard %s%%)  server-cpu %ss = %s orders/cpu-s  loadgen-cpu %ss  other-cpu %s%%, steal %s%%%s' \
		"$round" "$last_rps" "$(field ok)" "$(field rejected)" "$(field failed)" "$(field p50_us)" "$(field p99_us)" \
		"$lg_orders" "$lg_cross" "$lg_cpu_s" "$(awk -v o="$lg_orders" -v c="$lg_cpu_s" 'BEGIN { printf "%.0f", (c > 0 ? o / c : 0) }')" \
		"$lg_gen_cpu_s" "$other" "$steal" "$busy")
}

# keep_round API ROUND: measures one API's throughput, repeating a BUSY
# round up to ATTEMPTS times, and keeps the last figure.
keep_round() {
	local api=$1 round=$2 attempt
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		case $api in
		rest)
			measure_orders_once "$round"
			last_line="round $round  rest  ${last_line#"round $round  "}"
			;;
		wsapi) measure_wsapi_max_once "$round" ;;
		esac
		if [[ -z "$last_busy" || $attempt -eq ATTEMPTS ]]; then
			out "$last_line"
			case $api in
			rest) rps_rest+=("$last_rps") ;;
			wsapi) rps_ws+=("$last_rps") ;;
			esac
			[[ -n "$last_busy" ]] && busy_kept=$((busy_kept + 1))
			return 0
		fi
		out "discarded: $last_line"
	done
}

# latency_run API RATE: one constant-rate run; prints its line and adds its
# p99 to that API's list.
latency_run() {
	local api=$1 rate=$2 args=(--connections "$LAT_CONNS") line
	# shellcheck disable=SC2207  # wsapi_args is a list of words.
	[[ $api == wsapi ]] && args=($(wsapi_args))
	loadgen_window "$tmp/lat-$api-$rate.txt" "${args[@]}" --rate "$rate" --duration "$LAT_DURATION" \
		--warmup "$LAT_WARMUP"
	line=$(printf '%-5s at %s orders/s: achieved %s, ok %s rejected %s failed %s filled %s; latency from intended send time p50 %s p90 %s p99 %s p99.9 %s max %s µs; server orders %s (cross-shard %s%%), server-cpu %ss, loadgen-cpu %ss; other-cpu %s%%, steal %s%%%s' \
		"$api" "$rate" "$(field achieved)" "$(field ok)" "$(field rejected)" "$(field failed)" "$(field filled)" \
		"$(field p50_us)" "$(field p90_us)" "$(field p99_us)" "$(field p999_us)" "$(field max_us)" \
		"$lg_orders" "$lg_cross" "$lg_cpu_s" "$lg_gen_cpu_s" "$other" "$steal" "$busy")
	out "$line"
	[[ -n "$busy" ]] && busy_kept=$((busy_kept + 1))
	case $api in
	rest) p99_rest+=("$(field p99_us)"); p50_rest+=("$(field p50_us)") ;;
	wsapi) p99_ws+=("$(field p99_us)"); p50_ws+=("$(field p50_us)") ;;
	esac
	grep -E '^(first problem|connection error)' "$tmp/lat-$api-$rate.txt" | sed 's/^/    /' | tee -a "$results" || true
}

bench_wsapi() {
	local r order api rest ws rate why form="requests HMAC-signed when sent"
	[[ $WSAPI_LOGON == 1 ]] && form="each logged on with session.logon (Ed25519) before the run, order.place without apiKey and signature"
	rps_rest=(); rps_ws=(); p99_rest=(); p99_ws=(); p50_rest=(); p50_ws=(); busy_kept=0
	out ""
	out "== order.place over the WebSocket API vs POST /api/v3/order, crossing pairs, 2 shards, one server =="
	out "users: $USERS_PER_SHARD per shard; REST: wrk -t$ORDER_THREADS -c$ORDER_CONNS -d$DURATION on pre-signed bodies (as \`orders\`); WebSocket API: tradsys-loadgen run $(wsapi_args), one connection per user ($((2 * USERS_PER_SHARD))), $form"
	run_orders_warmup
	# shellcheck disable=SC2046  # wsapi_args is a list of words.
	"$LOADGEN_BIN" run --target "127.0.0.1:$tport" --users "$tmp/users2" $(wsapi_args) --rate max \
		--duration "${WARMUP%s}" --warmup 1 >"$tmp/wsapi-warmup.txt"
	out "-- throughput, rounds alternating (REST first in odd rounds)"
	for ((r = 1; r <= ROUNDS; r++)); do
		order="rest wsapi"
		((r % 2 == 0)) && order="wsapi rest"
		for api in $order; do keep_round "$api" "$r"; done
	done
	rest=$(median "${rps_rest[@]}"); ws=$(median "${rps_ws[@]}")
	out "median: REST $rest orders/s, WebSocket API $ws orders/s, ws/rest $(awk -v a="$ws" -v b="$rest" 'BEGIN { printf "%.3f", b ? a / b : 0 }') (target >= 1.2)"
	rate=$WSAPI_RATE why="WSAPI_RATE"
	if [[ -z "$rate" ]]; then
		rate=$(awk -v m="$ws" 'BEGIN { r = int(m / 2 / 100 + 0.5) * 100; print (r < 100 ? 100 : r) }')
		why="half the WebSocket API median, to 100"
	fi
	out "-- latency at $rate orders/s ($why), ${LAT_DURATION}s after ${LAT_WARMUP}s warm-up; REST: tradsys-loadgen run, $LAT_CONNS connections; rounds alternating"
	for ((r = 1; r <= ROUNDS; r++)); do
		order="rest wsapi"
		((r % 2 == 0)) && order="wsapi rest"
		for api in $order; do latency_run "$api" "$rate"; done
	done
	((busy_kept)) && out "WARNING: $busy_kept kept run(s) were BUSY; the medians below are not clean"
	rest=$(median "${p99_rest[@]}"); ws=$(median "${p99_ws[@]}")
	out "median at $rate orders/s: p99 REST $rest µs, WebSocket API $ws µs, ws/rest $(awk -v a="$ws" -v b="$rest" 'BEGIN { printf "%.3f", b ? a / b : 0 }') (target <= 0.5); p50 REST $(median "${p50_rest[@]}") µs, WebSocket API $(median "${p50_ws[@]}") µs"
	out "RESULT wsapi rest_orders_per_s=$(median "${rps_rest[@]}") ws_orders_per_s=$(median "${rps_ws[@]}") rate=$rate rest_p99_us=$rest ws_p99_us=$ws"
	out "resting after all runs (a pair that traded leaves nothing):"
	book
}

# --- main --------------------------------------------------------------------

ensure_tools
build
private_copies
out ""
out "=== rest benchmark $(date -u +%FT%TZ) ==="
out "command: $command_line"
out "machine: nproc $(nproc), cpu '$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)', kernel $(uname -r)"
out "tools: $(wrk -v 2>&1 | head -n1 | awk '{ print $1, $2 }'), $(nginx -v 2>&1 | sed 's/^nginx version: //')"
# The server's code is src/ and crates/; Cargo.toml also lists bench/loadgen.
out "tradsys: $(git -C "$root" log -1 --format='%h %s' -- src crates)$(git -C "$root" diff --quiet HEAD -- src crates || echo ' (modified)'), $built_from"
out "rate limits raised for the benchmark: ${LIMIT_FLAGS[*]}"

case "$mode" in
account) bench_account ;;
durability) bench_durability ;;
history) bench_history ;;
wsapi) start_two_shards; bench_wsapi ;;
orders) start_two_shards; bench_orders ;;
latency)
	start_two_shards
	((LAT_RATES_ONLY)) || bench_orders
	bench_latency
	;;
all)
	bench_account
	start_two_shards
	bench_orders
	bench_latency
	;;
esac
out "=== end ==="
