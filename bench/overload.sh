#!/usr/bin/env bash
# bench/overload.sh — order entry at 1.5, 2 and 3 times the load a shard can
# serve (MULTIPLES), with load shedding (--overload-order-wait-ms-max,
# default 10) and without it (0), on the same machine in the same run.
#
# A 1-shard tradsys pinned to CPU 0 (fsync durability, the embedded history
# store, request and order limits lifted) and tradsys-loadgen pinned to CPU
# 1. For each setting, on a fresh data directory:
#   1. capacity: `run --rate max` with CAP_CONNS connections (as many orders
#      as answers come back), with the server's CPU use over the run;
#   2. half load: C/2 orders/s, the reference p99 of orders taken;
#   3. each multiple M: M·C orders/s, then the p99 of the orders taken, how
#      many were refused with 503 -1008 (shed) and how many failed (timed
#      out or cut: there must be none), and the server's RSS before the
#      burst, right after it and after REST_S seconds of rest.
# Steps 2 and 3 run open loop (`run --api rest-open`): one epoll thread
# drives CONNS connections, one order in flight on each, as many clients
# would; latency counts from each order's intended send time, so a server
# that falls behind is charged for every order it delays.
#
#   bench/overload.sh                   # both settings
#   DURATION=20 CONNS=512 bench/overload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-15}
CONNS=${CONNS:-2000}
CAP_CONNS=${CAP_CONNS:-256}
USERS_PER_SHARD=${USERS_PER_SHARD:-64}
REST_S=${REST_S:-10}
SETTINGS=${SETTINGS:-"10 0"}
MULTIPLES=${MULTIPLES:-"1.5 2 3"}
ADMIN_TOKEN=bench-overload-token-0123456789
# shellcheck source=bench/lib.sh
source bench/lib.sh
build_release
scratch overload
machine
echo "server: 1 shard on CPU 0; loadgen on CPU 1; capacity with $CAP_CONNS connections, then open loop over $CONNS; ${DURATION}s runs after 2s warm-up"

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# lg RATE: one open-loop loadgen run on CPU 1; prints its RESULT line.
lg() {
	taskset -c 1 target/release/tradsys-loadgen run --api rest-open --target "127.0.0.1:$port" \
		--users "$tmp/users" --rate "$1" --duration "$DURATION" --warmup 2 --connections "$CONNS" \
		--recv-window 60000 >"$tmp/lg.txt"
	grep '^RESULT' "$tmp/lg.txt"
}

# lg_max: the capacity run, closed loop; prints its RESULT line.
lg_max() {
	taskset -c 1 target/release/tradsys-loadgen run --target "127.0.0.1:$port" --users "$tmp/users" \
		--rate max --duration "$DURATION" --warmup 2 --connections "$CAP_CONNS" >"$tmp/lg.txt"
	grep '^RESULT' "$tmp/lg.txt"
}
# shed_total: order entry shed so far (/metrics is never shed).
shed_total() {
	curl -fsS "http://127.0.0.1:$port/metrics" | awk '/^tradsys_overload_shed_trading_total/ { s += $NF } END { print s + 0 }'
}

for wait_ms in $SETTINGS; do
	port=$(free_port)
	aport=$(free_port)
	taskset -c 0 target/release/tradsys serve --shards 1 --listen "127.0.0.1:$port" \
		--admin-listen "127.0.0.1:$aport" --admin-token "$ADMIN_TOKEN" --data-dir "$tmp/data-$wait_ms" \
		--demo-user false --overload-order-wait-ms-max "$wait_ms" \
		"${LIMITS_OFF_FLAGS[@]}" \
		>"$tmp/tradsys-$wait_ms.log" 2>&1 &
	pids+=($!)
	server=${pids[-1]}
	wait_http "http://127.0.0.1:$port/ready" "$server" tradsys
	target/release/tradsys-loadgen setup --admin "127.0.0.1:$aport" --token "$ADMIN_TOKEN" --shards 1 \
		--per-shard "$USERS_PER_SHARD" --out "$tmp/users" >/dev/null
	t0=$(server_ticks "$server")
	max=$(lg_max)
	cpu_pct=$(awk -v t="$(($(server_ticks "$server") - t0))" -v hz="$(getconf CLK_TCK)" -v d="$((DURATION + 2))" 'BEGIN { printf "%.0f", 100 * t / hz / d }')
	capacity=$(result_field achieved "$max")
	half=$((capacity / 2))
	half_run=$(lg "$half")
	p99_half=$(result_field ok_p99_us "$half_run")
	echo "setting overload_order_wait_ms_max=$wait_ms"
	echo "  capacity (rate max): $capacity orders/s, ok p99 $(result_field ok_p99_us "$max") µs, server CPU ${cpu_pct}% of its core"
	echo "  half load $half/s: achieved $(result_field achieved "$half_run"), ok $(result_field ok "$half_run"), shed $(result_field shed "$half_run"), failed $(result_field failed "$half_run"), ok p50 $(result_field ok_p50_us "$half_run") p99 $p99_half µs"
	for multiple in $MULTIPLES; do
		rate=$(awk -v c="$capacity" -v m="$multiple" 'BEGIN { printf "%d", c * m }')
		shed0=$(shed_total)
		rss_before=$(rss_kib "$server")
		run=$(lg "$rate")
		rss_after=$(rss_kib "$server")
		sleep "$REST_S"
		rss_rest=$(rss_kib "$server")
		shed1=$(shed_total)
		p99=$(result_field ok_p99_us "$run")
		lg_cpu=$(sed -n 's/^load generator CPU: \([0-9.]*\) s.*/\1/p' "$tmp/lg.txt")
		echo "  ${multiple}x load $rate/s: achieved $(result_field achieved "$run"), ok $(result_field ok "$run"), shed $(result_field shed "$run") (server counted $((shed1 - shed0)) with warm-up), failed $(result_field failed "$run"), ok p50 $(result_field ok_p50_us "$run") p99 $p99 µs, all answers p99 $(result_field p99_us "$run") µs; loadgen CPU ${lg_cpu}s; RSS KiB before $rss_before, right after $rss_after, after ${REST_S}s rest $rss_rest"
		echo "RESULT wait_ms=$wait_ms multiple=$multiple capacity=$capacity rate=$rate half_ok_p99_us=$p99_half ok_p99_us=$p99 ratio=$(awk -v a="$p99" -v b="$p99_half" 'BEGIN { printf "%.2f", a / b }') ok=$(result_field ok "$run") shed=$(result_field shed "$run") failed=$(result_field failed "$run") rss_before_kib=$rss_before rss_after_kib=$rss_after rss_rest_kib=$rss_rest"
	done
	stop_pid "$server"
done
