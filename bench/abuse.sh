#!/usr/bin/env bash
# bench/abuse.sh — a well-behaved client's latency while hostile clients
# hold the server (issue 14): 1,000 slowloris connections (one header byte
# a second), 1,000 slow readers (pipelined requests, never read) and a
# WebSocket connection flood at the per-IP cap, all at once.
#
# A 1-shard tradsys pinned to CPU 0 with --http-header-timeout-ms and
# --http-write-timeout-ms at TIMEOUT_MS (default 5000). On CPU 1: the good
# client (tradsys-loadgen run, RATE orders/s over 16 connections, latency
# from intended send time) once alone (quiet) and once while the abusers
# (one Python process, every socket non-blocking) run; then how many of
# each kind the server closed within its timeout, and what /metrics
# counted. Prints the p99 ratio against the quiet run.
#
# The abusers share CPU 1 with the good client, which measures from the
# intended send time: any moment the abusers' process holds that CPU is
# counted as server latency though the server had nothing to do with it.
# They run in the idle scheduling class there (ABUSERS_SCHED=idle, the
# default), so the good client's own delays stay what they are in the
# quiet run; ABUSERS_SCHED=normal runs them as ordinary processes.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-2000}
DURATION=${DURATION:-15}
TIMEOUT_MS=${TIMEOUT_MS:-5000}
SLOWLORIS=${SLOWLORIS:-1000}
SLOW_READERS=${SLOW_READERS:-1000}
WS_FLOOD=${WS_FLOOD:-400}
ABUSERS_SCHED=${ABUSERS_SCHED:-idle}
# More server flags, word-split (e.g. "--http-socket-send-bytes 65536").
SERVER_FLAGS=${SERVER_FLAGS:-}
ADMIN_TOKEN=bench-abuse-token-0123456789
# shellcheck source=bench/lib.sh
source bench/lib.sh
build_release
scratch abuse
machine
port=$(free_port)
aport=$(free_port)
# SERVER_FLAGS is split into words on purpose.
# shellcheck disable=SC2086
taskset -c 0 target/release/tradsys serve --shards 1 --listen "127.0.0.1:$port" \
	--admin-listen "127.0.0.1:$aport" --admin-token "$ADMIN_TOKEN" --data-dir "$tmp/data" --demo-user false \
	--http-header-timeout-ms "$TIMEOUT_MS" --http-write-timeout-ms "$TIMEOUT_MS" \
	"${LIMITS_OFF_FLAGS[@]}" $SERVER_FLAGS \
	>"$tmp/tradsys.log" 2>&1 &
pids+=($!)
server=${pids[-1]}
wait_http "http://127.0.0.1:$port/ready" "$server" tradsys
target/release/tradsys-loadgen setup --admin "127.0.0.1:$aport" --token "$ADMIN_TOKEN" --shards 1 \
	--per-shard 16 --out "$tmp/users" >/dev/null

good() {
	taskset -c 1 target/release/tradsys-loadgen run --target "127.0.0.1:$port" --users "$tmp/users" \
		--rate "$RATE" --duration "$DURATION" --warmup 2 --connections 16 >"$tmp/good.txt"
	grep '^RESULT' "$tmp/good.txt"
}
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 ~ "^" n "[{ ]" || $1 == n { s += $NF } END { print s + 0 }'; }

quiet=$(good)
echo "quiet:  $quiet"
header0=$(metric tradsys_http_header_timeouts_total)
write0=$(metric tradsys_http_write_timeouts_total)

# The abusers, for the good client's run plus the timeouts.
hold_s=$((DURATION + 2 + TIMEOUT_MS / 1000 + 5))
sched=()
[[ $ABUSERS_SCHED == idle ]] && sched=(chrt --idle 0)
taskset -c 1 "${sched[@]}" python3 - "$port" "$SLOWLORIS" "$SLOW_READERS" "$WS_FLOOD" "$hold_s" "$TIMEOUT_MS" >"$tmp/abusers.txt" 2>&1 <<'PY' &
import base64, os, selectors, socket, sys, time
port, n_loris, n_readers, n_ws, hold_s, timeout_ms = map(int, sys.argv[1:])
addr = ("127.0.0.1", port)
start = time.time()
loris, readers, ws = [], [], []
head = b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000
def connect(rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(addr)
    s.setblocking(False)
    return s
for _ in range(n_loris):
    loris.append([connect(), 0, None])
big = b"GET /api/v3/exchangeInfo HTTP/1.1\r\nHost: x\r\n\r\n" * 200
for _ in range(n_readers):
    s = connect(4096)
    try:
        s.send(big)
    except BlockingIOError:
        pass
    readers.append([s, None])
ws_ok = ws_refused = 0
for _ in range(n_ws):
    s = socket.create_connection(addr)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET /ws/btcusdt@trade HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    answer = s.recv(4096)
    if answer.startswith(b"HTTP/1.1 101"):
        ws_ok += 1
        ws.append(s)
    else:
        ws_refused += 1
        s.close()
print(f"opened: {len(loris)} slowloris, {len(readers)} slow readers, websocket {ws_ok} upgraded, {ws_refused} refused", flush=True)
def closed(s):
    try:
        data = s.recv(65536)
        return data == b"" or data.startswith(b"HTTP/1.1 408")
    except BlockingIOError:
        return False
    except OSError:
        return True
while time.time() - start < hold_s:
    now = time.time()
    for entry in loris:
        s, sent, done = entry
        if done is not None:
            continue
        if closed(s):
            entry[2] = now - start
            continue
        if sent < len(head):
            try:
                s.send(head[sent:sent + 1])
                entry[1] += 1
            except OSError:
                entry[2] = now - start
    for entry in readers:
        s, done = entry
        if done is None:
            try:
                s.send(big)
            except BlockingIOError:
                pass
            except OSError:
                entry[1] = now - start
    time.sleep(1)
limit = timeout_ms / 1000 + 2
loris_closed = [d for _, _, d in loris if d is not None]
reader_closed = [d for _, d in readers if d is not None]
print(f"slowloris closed: {len(loris_closed)} of {len(loris)}, within {limit:.0f} s of the timeout's start: {sum(1 for d in loris_closed if d <= limit)}; latest {max(loris_closed, default=0):.1f} s")
print(f"slow readers closed: {len(reader_closed)} of {len(readers)}; latest {max(reader_closed, default=0):.1f} s")
PY
abusers=$!
pids+=("$abusers")
# Let every abuser connect before the good client measures.
for ((i = 0; i < 100; i++)); do
	grep -q '^opened' "$tmp/abusers.txt" 2>/dev/null && break
	sleep 0.2
done
cat "$tmp/abusers.txt"
loud=$(good)
echo "abused: $loud"
wait "$abusers" || true
cat "$tmp/abusers.txt" | grep -v '^opened'
header1=$(metric tradsys_http_header_timeouts_total)
write1=$(metric tradsys_http_write_timeouts_total)
echo "metrics: tradsys_http_header_timeouts_total +$((header1 - header0)), tradsys_http_write_timeouts_total +$((write1 - write0))"
qp=$(result_field p99_us "$quiet")
lp=$(result_field p99_us "$loud")
echo "RESULT rate=$RATE abusers_sched=$ABUSERS_SCHED quiet_p99_us=$qp abused_p99_us=$lp ratio=$(awk -v a="$lp" -v b="$qp" 'BEGIN { printf "%.2f", a / b }') quiet_failed=$(result_field failed "$quiet") abused_failed=$(result_field failed "$loud") header_timeouts=$((header1 - header0)) write_timeouts=$((write1 - write0))"
stop_pid "$server"
