#!/usr/bin/env bash
# bench/cluster_orders.sh — orders whose user and market live on different
# instances of a cluster, against the same orders on one instance of two
# shards (issue: several instances).
#
# The cluster: a redis-server and a PostgreSQL of its own and three 1-shard
# tradsys instances: a owns every user slot and no market, b owns BTCUSDT
# and ETHUSDT, c ETHBTC and EURUSD. The load generator's users are made on
# a, and its crossing pairs (tradsys-loadgen run: LIMIT GTC, four markets)
# go to a, so every order crosses to b or c and its fills and outcome
# come back: each is three durable commits on two instances and six link
# messages through Redis. The baseline: one instance of two shards, the
# same users' mix (half the orders cross shards).
#
# Placement: instance a (every user, and so every request) on cpu 0, b and
# c on cpu 1 (a 1-shard instance pins its shard to the first cpu it may
# use, so unplaced all three would share cpu 0); Redis and PostgreSQL
# on both cpus; the load generator on cpu 1. The baseline's two shards
# take one cpu each. For each setup: RATE orders/s for DURATION
# s (latency from the intended send time), then --rate max (the most it
# answers with CONNS orders in flight). Prints a RESULT line with both
# setups' figures and their ratio.
#
# BASELINE=0 runs the cluster alone (for turns between two builds, with
# the figures compared run against run).
#
# FSYNC=everysec (default) or always: Redis's appendfsync. Durability of
# the instances is the default (fsync per group commit); DATA=/dev/shm
# puts their data directories on tmpfs, which takes the disk's sync time
# out and leaves the links' and the instances' own cost. Everything
# listens on 127.0.0.1 and is stopped by pid at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-5000}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
FSYNC=${FSYNC:-everysec}
BASELINE=${BASELINE:-1}
# shellcheck source=bench/lib.sh
source bench/lib.sh
build_release
scratch cluster-orders
data=$(mktemp -d "${DATA:-$tmp}/cluster-orders-data.XXXXXX")
trap 'stop_scratch; rm -rf "$data"' EXIT
machine
echo "tradsys: $(git log -1 --format='%h %s')"
token=cluster-bench-admin-token

# lg PORT RATE: one loadgen run at PORT; prints its RESULT line.
lg() {
	taskset -c 1 target/release/tradsys-loadgen run --target "127.0.0.1:$1" --users "$tmp/users" \
		--rate "$2" --duration "$DURATION" --warmup 2 --connections "$CONNS" >"$tmp/lg.txt"
	grep '^RESULT' "$tmp/lg.txt"
}

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync "$FSYNC" \
	--dir "$tmp" --daemonize no >"$tmp/redis.log" 2>&1 &
pids+=($!)
start_postgres

declare -A api
for id in a b c; do api[$id]=$(free_port); done
instance() {
	printf '[[instance]]\nid = "%s"\napi = "127.0.0.1:%s"\nlink = "127.0.0.1:%s"\nslots = [%s]\nmarkets = [%s]\n\n' \
		"$1" "${api[$1]}" "$(free_port)" "$2" "$3"
}
{
	instance a '"0-16383"' ''
	instance b '' '"BTCUSDT", "ETHUSDT"'
	instance c '' '"ETHBTC", "EURUSD"'
} >"$tmp/cluster.toml"
admin_a=$(free_port)
cluster_pids=()
for id in a b c; do
	mkdir -p "$data/$id"
	admin=$(free_port)
	[[ $id == a ]] && admin=$admin_a
	cpu=1
	[[ $id == a ]] && cpu=0
	taskset -c "$cpu" target/release/tradsys serve --cluster "$tmp/cluster.toml" --instance "$id" \
		--listen "127.0.0.1:${api[$id]}" --admin-listen "127.0.0.1:$admin" \
		--admin-token "$token" --shards 1 --data-dir "$data/$id" --demo-user false "${LIMITS_OFF_FLAGS[@]}" \
		--redis "redis://127.0.0.1:$rport" --postgres "host=127.0.0.1 port=$pgport user=postgres dbname=postgres" \
		>"$tmp/$id.log" 2>&1 &
	pids+=($!)
	cluster_pids+=($!)
	wait_http "http://127.0.0.1:${api[$id]}/ready" "${pids[-1]}" "$id"
done
target/release/tradsys-loadgen setup --admin "127.0.0.1:$admin_a" --token "$token" --shards 1 \
	--per-shard 32 --out "$tmp/users" >/dev/null
cross_rate=$(lg "${api[a]}" "$RATE")
echo "cluster, $RATE orders/s: $cross_rate"
cross_max=$(lg "${api[a]}" max)
echo "cluster, most: $cross_max"
metrics=$(curl -s "http://127.0.0.1:${api[a]}/metrics")
sent=$(awk '/^tradsys_link_engine_sent_total\{/ { s += $2 } END { print s + 0 }' <<<"$metrics")
again=$(awk '/^tradsys_link_redeliveries_total\{/ { s += $2 } END { print s + 0 }' <<<"$metrics")
for pid in "${cluster_pids[@]}"; do stop_pid "$pid"; done
if [[ $BASELINE == 0 ]]; then
	echo "RESULT rate=$RATE fsync=$FSYNC data=${DATA:-disk}" \
		"cluster_p50_us=$(result_field p50_us "$cross_rate") cluster_p99_us=$(result_field p99_us "$cross_rate")" \
		"cluster_max=$(result_field achieved "$cross_max") engine_messages_from_a=$sent redelivered=$again"
	exit 0
fi

port=$(free_port)
admin=$(free_port)
mkdir -p "$data/one"
target/release/tradsys serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
	--admin-token "$token" --shards 2 --data-dir "$data/one" --demo-user false "${LIMITS_OFF_FLAGS[@]}" \
	>"$tmp/one.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$port/ready" "${pids[-1]}" one
target/release/tradsys-loadgen setup --admin "127.0.0.1:$admin" --token "$token" --shards 2 \
	--per-shard 16 --out "$tmp/users" >/dev/null
one_rate=$(lg "$port" "$RATE")
echo "one instance, $RATE orders/s: $one_rate"
one_max=$(lg "$port" max)
echo "one instance, most: $one_max"

f() { result_field "$1" "$2"; }
echo "RESULT rate=$RATE fsync=$FSYNC data=${DATA:-disk}" \
	"cluster_p50_us=$(f p50_us "$cross_rate") cluster_p99_us=$(f p99_us "$cross_rate")" \
	"cluster_achieved=$(f achieved "$cross_rate") cluster_failed=$(f failed "$cross_rate")" \
	"one_p50_us=$(f p50_us "$one_rate") one_p99_us=$(f p99_us "$one_rate")" \
	"cluster_max=$(f achieved "$cross_max") one_max=$(f achieved "$one_max")" \
	"max_ratio=$(awk -v a="$(f achieved "$cross_max")" -v b="$(f achieved "$one_max")" 'BEGIN { printf "%.3f", a / b }')" \
	"engine_messages_from_a=$sent redelivered=$again"
