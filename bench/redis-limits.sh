#!/usr/bin/env bash
# bench/redis-limits.sh [trips|account] — the per-IP limits shared through
# Redis (issue 13's targets).
#
# trips (default): Redis round trips per 1,000 admitted requests (<= 50).
# account: signed GET /api/v3/account on a 1-shard server with --redis
#   against one without, alternating ROUNDS rounds of wrk (-t1 -c64, 10 s,
#   pre-signed requests) in the same run, servers on cpu 0 and wrk on
#   cpu 1, limits raised far above Binance's as bench/rest.sh does (>= 0.9).
#
# trips: starts a redis-server of its own and a 2-shard tradsys with --redis and
# Binance's default limits (6,000 weight per minute), sends REQUESTS
# keep-alive GET /api/v3/ping (weight 1, under the limit) over 4
# connections from 127.0.0.1, and reads the Redis commands and writes from
# the server's /metrics (heartbeats and the script's load included).
# Everything listens on 127.0.0.1 and is stopped by pid at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-5000}
ROUNDS=${ROUNDS:-3}
MODE=${1:-trips}
cargo build --release --quiet --bin tradsys
cargo build --release --quiet -p tradsys-loadgen
# shellcheck source=bench/lib.sh
source bench/lib.sh
scratch redislimits
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" --daemonize no >"$tmp/redis.log" 2>&1 &
pids+=($!)
echo "machine: nproc $(nproc), cpu '$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)', $(date -u +%FT%TZ)"
echo "tradsys: $(git log -1 --format='%h %s')"

# account: two servers, one with --redis, measured alternately.
if [[ $MODE == account ]]; then
	limits=(--request-weight-per-minute-max 4000000000 --raw-requests-per-5m-max 4000000000
		--orders-per-10s-max 4000000000 --orders-per-day-max 4000000000)
	token=redis-bench-admin-token
	# NAME [FLAGS...]: a 1-shard server on cpu 0 and its users; its port
	# goes into the variable NAME_port (not printed: a server started in a
	# command substitution would escape the clean-up's list).
	start() {
		local name=$1 port aport
		shift
		port=$(free_port)
		aport=$(free_port)
		mkdir -p "$tmp/$name"
		taskset -c 0 target/release/tradsys serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$aport" \
			--admin-token "$token" --shards 1 --data-dir "$tmp/$name" --demo-user false "${limits[@]}" "$@" \
			>"$tmp/$name.log" 2>&1 &
		pids+=($!)
		for _ in $(seq 100); do
			curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
			sleep 0.1
		done
		target/release/tradsys-loadgen setup --admin "127.0.0.1:$aport" --token "$token" --shards 1 \
			--per-shard 2 --out "$tmp/$name.users" >/dev/null
		printf -v "${name}_port" '%s' "$port"
	}
	plain_port=""
	shared_port=""
	start plain
	start shared --redis "redis://127.0.0.1:$rport"
	plain=$plain_port
	shared=$shared_port
	measure() { # NAME PORT: requests per second
		target/release/tradsys-loadgen presign --users "$tmp/$1.users" --kind account --count 1000 \
			--out "$tmp/$1.req" >/dev/null
		taskset -c 1 wrk -t1 -c64 -d10s --timeout 5s -s bench/rest.lua "http://127.0.0.1:$2" -- "$tmp/$1.req" 1 1 \
			| awk '/^Requests\/sec:/ { print $2 }'
	}
	plain_rps=()
	shared_rps=()
	for ((r = 1; r <= ROUNDS; r++)); do
		if ((r % 2)); then
			plain_rps+=("$(measure plain "$plain")")
			shared_rps+=("$(measure shared "$shared")")
		else
			shared_rps+=("$(measure shared "$shared")")
			plain_rps+=("$(measure plain "$plain")")
		fi
		echo "round $r: without Redis ${plain_rps[-1]} req/s, with Redis ${shared_rps[-1]} req/s"
	done
	p=$(median "${plain_rps[@]}")
	q=$(median "${shared_rps[@]}")
	metrics=$(curl -s "http://127.0.0.1:$shared/metrics")
	commands=$(awk '/^tradsys_redis_commands_total\{/ { s += $2 } END { print s }' <<<"$metrics")
	echo "RESULT account_rps_without_redis=$p account_rps_with_redis=$q ratio=$(awk -v a="$q" -v b="$p" 'BEGIN { printf "%.3f", a / b }') (target >= 0.9) redis_commands_with_redis=$commands"
	exit 0
fi

tport=$(free_port)
mkdir "$tmp/data"
target/release/tradsys serve --listen "127.0.0.1:$tport" --admin-listen 127.0.0.1:0 --shards 2 \
	--data-dir "$tmp/data" --demo-user false --redis "redis://127.0.0.1:$rport" >"$tmp/tradsys.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	curl -sf "http://127.0.0.1:$tport/ready" >/dev/null && break
	sleep 0.1
done
python3 - "$tport" "$REQUESTS" <<'PY'
import http.client, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(4)]
ok = refused = 0
start = time.time()
for i in range(count):
    c = conns[i % 4]
    c.request("GET", "/api/v3/ping")
    r = c.getresponse()
    r.read()
    ok += r.status == 200
    refused += r.status == 429
elapsed = time.time() - start
m = http.client.HTTPConnection("127.0.0.1", port)
m.request("GET", "/metrics")
text = m.getresponse().read().decode()
def total(name):
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name + "{"))
commands, writes = total("tradsys_redis_commands_total"), total("tradsys_redis_writes_total")
fallbacks = total("tradsys_redis_limit_fallbacks_total")
print(f"admitted {ok}, refused {refused}, in {elapsed:.2f} s; Redis commands {commands:.0f}, writes {writes:.0f}, "
      f"limit fallbacks {fallbacks:.0f}")
print(f"RESULT redis_commands_per_1000_admitted={1000 * commands / max(ok, 1):.1f} "
      f"redis_writes_per_1000_admitted={1000 * writes / max(ok, 1):.1f} (target <= 50)")
PY
