#!/usr/bin/env bash
# bench/slow-reader.sh — how long after it stopped reading a client that
# keeps sending requests is closed (issue 14: the write timeout ran to
# about twice its setting).
#
# A 1-shard tradsys on 127.0.0.1 with --http-write-timeout-ms 3000, once
# with the kernel's send buffer autotuned (--http-socket-send-bytes 0, the
# old behaviour) and once with the default cap; a client with a 4 KiB
# receive buffer sends 50 pipelined exchangeInfo requests every 50 ms and
# never reads. Prints the seconds from its first request to the reset.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin tradsys
# shellcheck source=bench/lib.sh
source bench/lib.sh
scratch slowreader
machine
for send_bytes in 0 262144; do
	port=$(free_port)
	target/release/tradsys serve --shards 1 --listen "127.0.0.1:$port" --data-dir "$tmp/data-$send_bytes" \
		--demo-user false --http-write-timeout-ms 3000 --http-socket-send-bytes "$send_bytes" >"$tmp/tradsys.log" 2>&1 &
	pids+=($!)
	wait_http "http://127.0.0.1:$port/ready" "${pids[-1]}" tradsys
	closed=$(python3 - "$port" <<'PY'
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.setblocking(False)
requests = b"GET /api/v3/exchangeInfo HTTP/1.1\r\nHost: x\r\n\r\n" * 50
start = time.time()
while time.time() - start < 60:
    try:
        s.send(requests)
    except BlockingIOError:
        pass
    except OSError:
        break
    time.sleep(0.05)
print(f"{time.time() - start:.2f}")
PY
)
	echo "RESULT http_socket_send_bytes=$send_bytes write_timeout_ms=3000 closed_after_s=$closed"
	stop_pid "${pids[-1]}"
done
