#!/usr/bin/env bash
# bench/webhooks.sh — webhook deliveries per second to a local receiver on
# the machine's 2 cores (issue 13's target: >= 20,000/s).
#
# A redis-server of the script's own; a 2-shard tradsys with --redis whose
# shards run no job workers (--jobs-workers-in-server false), so that the
# events of a trading burst wait in Redis; USERS_PER_SHARD users per shard,
# each with a webhook pointing at `tradsys-loadgen webhook-sink`; crossing
# order pairs for TRADE_SECONDS (every fill sends its executionReport and
# outboundAccountPosition to both sides' webhooks: 4 events a trade). Then
# the waiting events are counted in Redis and `tradsys worker --shards 2`
# delivers them all: the sink times the first to the last delivery.
# Everything listens on 127.0.0.1 and is stopped by pid at the end.
# Raw output: tee it to bench/results/webhooks-<date>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS_PER_SHARD=${USERS_PER_SHARD:-64}
TRADE_SECONDS=${TRADE_SECONDS:-10}
CONCURRENCY=${CONCURRENCY:-64}
cargo build --release --quiet --bin tradsys
cargo build --release --quiet -p tradsys-loadgen
# shellcheck source=bench/lib.sh
source bench/lib.sh
scratch webhooks
token=bench-webhooks-admin-token-0123456789
echo "machine: nproc $(nproc), cpu '$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)', $(date -u +%FT%TZ)"
echo "tradsys: $(git log -1 --format='%h %s')"
echo "command: USERS_PER_SHARD=$USERS_PER_SHARD TRADE_SECONDS=$TRADE_SECONDS CONCURRENCY=$CONCURRENCY bench/webhooks.sh"

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" --daemonize no >"$tmp/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done

port=$(free_port)
aport=$(free_port)
target/release/tradsys serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$aport" --admin-token "$token" \
	--shards 2 --data-dir "$tmp/data" --demo-user false --durability batch --history off \
	--redis "redis://127.0.0.1:$rport" --jobs-workers-in-server false \
	--request-weight-per-minute-max 1000000000 --raw-requests-per-5m-max 1000000000 \
	--orders-per-10s-max 1000000000 --orders-per-day-max 1000000000 >"$tmp/tradsys.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
target/release/tradsys-loadgen setup --admin "127.0.0.1:$aport" --token "$token" --shards 2 \
	--per-shard "$USERS_PER_SHARD" --out "$tmp/users" >/dev/null

sink_port=$(free_port)
while IFS=$'\t' read -r user _; do
	curl -fsS -X PUT -H "X-Admin-Token: $token" -d "{\"url\":\"http://127.0.0.1:$sink_port/hook\"}" \
		"http://127.0.0.1:$aport/admin/v1/users/$user/webhook" >/dev/null
done <"$tmp/users"
echo "users with a webhook: $(wc -l <"$tmp/users")"

target/release/tradsys-loadgen run --target "127.0.0.1:$port" --users "$tmp/users" --rate max \
	--duration "$TRADE_SECONDS" --warmup 1 --connections 32 | grep RESULT | sed 's/^/trading: /' | tee "$tmp/run.log"
metric() {
	curl -fsS "http://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 ~ "^" n "[{]" { s += $2 } END { printf "%d\n", s }'
}
# Each filled pair is one trade: an executionReport and an
# outboundAccountPosition for each side.
trades=$(sed -n 's/.* filled=\([0-9]*\).*/\1/p' "$tmp/run.log")
# The shards' outboxes reach Redis within moments; count until it stops growing.
count() {
	redis-cli -p "$rport" --raw eval \
		"local n = 0 for _, k in ipairs(redis.call('KEYS', 'tradsys:webhooks:*')) do n = n + redis.call('LLEN', k) end return n" 0
}
events=$(count)
while sleep 1; now=$(count); [[ $now != "$events" ]]; do events=$now; done
echo "events waiting in Redis: $events; trades $trades (4 events each: $((4 * trades))); dropped on the way $(metric tradsys_webhook_events_dropped_total)"

target/release/tradsys-loadgen webhook-sink --port "$sink_port" --expect "$events" >"$tmp/sink.log" &
sink=$!
pids+=("$sink")
for _ in $(seq 100); do grep -q listening "$tmp/sink.log" && break; sleep 0.05; done
target/release/tradsys worker --shards 2 --redis "redis://127.0.0.1:$rport" --data-dir "$tmp/data" --history off \
	--jobs-concurrency "$CONCURRENCY" --jobs-poll-ms 1 >"$tmp/worker.log" 2>&1 &
worker=$!
pids+=("$worker")
start=$(date +%s.%N)
wait "$sink"
end=$(date +%s.%N)
grep received "$tmp/sink.log"
echo "from the worker's start: $(echo "$end - $start" | bc) s"
left=$(count)
echo "events left in Redis: $left (expected 0)"
rate=$(awk '/received/ { print $(NF-2) }' "$tmp/sink.log")
echo "RESULT webhook_deliveries_per_s=$rate (target >= 20000)"
