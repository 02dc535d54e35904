#!/usr/bin/env bash
# bench/link.sh — a request carried to another instance of a cluster
# against the same request answered where it arrives (issue: several
# instances).
#
# Starts a redis-server and a PostgreSQL of its own and two 1-shard
# tradsys instances, a and b, of a two-instance cluster map, all on cpu 0
# (wrk on cpu 1). Users are created on a. Signed GET /api/v3/account of
# those users is sent to a (answered there) and to b (carried to a through
# Redis Streams and back), alternating ROUNDS rounds of wrk -t1 -cCONNS
# -d10s --latency on pre-signed requests, and the requests per second and
# the latency percentiles of each are printed, with their ratios.
#
# FSYNC=everysec (default) or always: Redis's appendfsync (the links' own
# durability; carried requests are at most once and need none).
# Everything listens on 127.0.0.1 and is stopped by pid at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-16}
FSYNC=${FSYNC:-everysec}
# shellcheck source=bench/lib.sh
source bench/lib.sh
build_release
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >&2 ||
	{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >&2; }
scratch link
machine
echo "tradsys: $(git log -1 --format='%h %s')"

rport=$(free_port)
taskset -c 0 redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync "$FSYNC" \
	--dir "$tmp" --daemonize no >"$tmp/redis.log" 2>&1 &
pids+=($!)
start_postgres

aport=$(free_port)
bport=$(free_port)
# instance ID PORT SLOTS MARKETS: one [[instance]] of the map.
instance() {
	printf '[[instance]]\nid = "%s"\napi = "127.0.0.1:%s"\nlink = "127.0.0.1:%s"\nslots = ["%s"]\nmarkets = [%s]\n\n' \
		"$1" "$2" "$(free_port)" "$3" "$4"
}
{
	instance a "$aport" 0-8191 '"BTCUSDT", "ETHBTC"'
	instance b "$bport" 8192-16383 '"ETHUSDT", "EURUSD"'
} >"$tmp/cluster.toml"
token=link-bench-admin-token
admin_a=$(free_port)
for id in a b; do
	port=$aport
	[[ $id == b ]] && port=$bport
	mkdir -p "$tmp/$id"
	taskset -c 0 target/release/tradsys serve --cluster "$tmp/cluster.toml" --instance "$id" \
		--listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$([[ $id == a ]] && echo "$admin_a" || free_port)" \
		--admin-token "$token" --shards 1 --data-dir "$tmp/$id" --demo-user false "${LIMITS_OFF_FLAGS[@]}" \
		--redis "redis://127.0.0.1:$rport" --postgres "host=127.0.0.1 port=$pgport user=postgres dbname=postgres" \
		>"$tmp/$id.log" 2>&1 &
	pids+=($!)
	wait_http "http://127.0.0.1:$port/ready" "${pids[-1]}" "$id"
done
target/release/tradsys-loadgen setup --admin "127.0.0.1:$admin_a" --token "$token" --shards 1 \
	--per-shard 4 --out "$tmp/users" >/dev/null

# measure PORT: "req/s p50_ms p99_ms" of one wrk round.
measure() {
	target/release/tradsys-loadgen presign --users "$tmp/users" --kind account --count 1000 \
		--out "$tmp/req" >/dev/null
	taskset -c 1 wrk -t1 -c"$CONNS" -d10s --timeout 5s --latency -s bench/rest.lua "http://127.0.0.1:$1" -- "$tmp/req" 1 1 |
		awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
		     /^Requests\/sec:/ { rps = $2 } $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
		     END { printf "%s %.3f %.3f\n", rps, p50, p99 }'
}
local_rps=() local_p50=() local_p99=() carried_rps=() carried_p50=() carried_p99=()
for ((r = 1; r <= ROUNDS; r++)); do
	for which in $( ((r % 2)) && echo "local carried" || echo "carried local"); do
		port=$aport
		[[ $which == carried ]] && port=$bport
		read -r rps p50 p99 < <(measure "$port")
		declare -n rr=${which}_rps p5=${which}_p50 p9=${which}_p99
		rr+=("$rps") p5+=("$p50") p9+=("$p99")
		unset -n rr p5 p9
		echo "round $r $which: $rps req/s, p50 $p50 ms, p99 $p99 ms"
	done
done
metrics=$(curl -s "http://127.0.0.1:$bport/metrics")
sent=$(awk '/^tradsys_link_sent_total\{/ { s += $2 } END { print s }' <<<"$metrics")
timeouts=$(awk '/^tradsys_link_timeouts_total\{/ { s += $2 } END { print s }' <<<"$metrics")
lr=$(median "${local_rps[@]}") cr=$(median "${carried_rps[@]}")
l5=$(median "${local_p50[@]}") c5=$(median "${carried_p50[@]}")
l9=$(median "${local_p99[@]}") c9=$(median "${carried_p99[@]}")
echo "RESULT fsync=$FSYNC local_rps=$lr carried_rps=$cr rps_ratio=$(awk -v a="$cr" -v b="$lr" 'BEGIN { printf "%.3f", a / b }')" \
	"local_p50_ms=$l5 carried_p50_ms=$c5 local_p99_ms=$l9 carried_p99_ms=$c9" \
	"carried_requests=$sent link_timeouts=$timeouts"
