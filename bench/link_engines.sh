#!/usr/bin/env bash
# bench/link_engines.sh — the two engines the links could run on, Redis
# Streams and NATS JetStream, measured the same way: the round trip of one
# carried request (request appended and acknowledged, read, reply appended,
# reply read) from one Python process (bench/link_engines.py, redis-py and
# nats-py in a virtualenv of the script's own), servers on cpu 0, the
# client on cpu 1.
#
# FSYNC=everysec (default) or always: Redis's appendfsync. NATS runs as
# Debian ships it (2.9), whose JetStream has no setting for a sync per
# write (sync_interval came with 2.10): it acknowledges a publish once the
# write reached the operating system and syncs on a timer.
# COUNT round trips (default 5000) after 500 of warm-up.
# Both servers listen on 127.0.0.1 only and are stopped by pid at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
FSYNC=${FSYNC:-everysec}
COUNT=${COUNT:-5000}
# shellcheck source=bench/lib.sh
source bench/lib.sh
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nats-server >/dev/null || missing+=(nats-server)
if ((${#missing[@]})); then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
		{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; }
fi
scratch link-engines
machine
venv=${VENV:-/tmp/tradsys-link-engines-venv}
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
"$venv/bin/pip" install -q redis==8.2.0 nats-py==2.16.0 >&2

rport=$(free_port)
taskset -c 0 redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync "$FSYNC" \
	--dir "$tmp" --daemonize no >"$tmp/redis.log" 2>&1 &
pids+=($!)
nport=$(free_port)
cat >"$tmp/nats.conf" <<EOF
listen: 127.0.0.1:$nport
jetstream {
  store_dir: "$tmp/jetstream"
}
EOF
taskset -c 0 nats-server -c "$tmp/nats.conf" >"$tmp/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	redis-cli -p "$rport" ping >/dev/null 2>&1 && (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && break
	sleep 0.1
done
echo "fsync=$FSYNC: redis $(redis-server --version | awk '{ print $3 }'), $(nats-server --version)"
taskset -c 1 "$venv/bin/python" bench/link_engines.py --redis-port "$rport" --nats-port "$nport" --count "$COUNT"
