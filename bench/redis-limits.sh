#!/usr/bin/env bash
# bench/redis-limits.sh — Redis round trips per 1,000 admitted requests
# with the per-IP limits shared through Redis (issue 13's target: <= 50).
#
# Starts a redis-server of its own and a 2-shard tradsys with --redis and
# Binance's default limits (6,000 weight per minute), sends REQUESTS
# keep-alive GET /api/v3/ping (weight 1, under the limit) over 4
# connections from 127.0.0.1, and reads the Redis commands and writes from
# the server's /metrics (heartbeats and the script's load included).
# Everything listens on 127.0.0.1 and is stopped by pid at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-5000}
cargo build --release --quiet --bin tradsys
tmp=$(mktemp -d /tmp/redislimits.XXXXXX)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" --daemonize no >"$tmp/redis.log" 2>&1 &
pids+=($!)
tport=$(free_port)
mkdir "$tmp/data"
target/release/tradsys serve --listen "127.0.0.1:$tport" --admin-listen 127.0.0.1:0 --shards 2 \
	--data-dir "$tmp/data" --demo-user false --redis "redis://127.0.0.1:$rport" >"$tmp/tradsys.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	curl -sf "http://127.0.0.1:$tport/ready" >/dev/null && break
	sleep 0.1
done
echo "machine: nproc $(nproc), cpu '$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)', $(date -u +%FT%TZ)"
echo "tradsys: $(git log -1 --format='%h %s')"
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
