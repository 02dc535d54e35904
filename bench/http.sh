#!/usr/bin/env bash
# bench/http.sh — HTTP throughput of tradsys against nginx on the same core.
#
# Both servers get exactly one core (SERVER_CPU) and the load generator gets
# the other (CLIENT_CPU), so the comparison is one tradsys shard against one
# nginx worker doing the same job: answer GET /api/v3/ping with `{}`.
# Runs alternate between the servers (ABBA order: tradsys first in odd
# rounds, nginx first in even rounds) so that drift in the machine (thermal,
# noisy neighbours on a VM) hits both alike; the median of the rounds is
# reported, not the best, because the best run flatters whoever got lucky.
#
# Every run is cross-checked against the server's own request counter
# (nginx stub_status, tradsys /metrics): wrk's count must lie between the
# server's count minus what can still be in flight when wrk stops. This is
# what makes the pipelined figure trustworthy.
#
# All traffic goes to 127.0.0.1.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
	cat <<'EOF'
usage: bench/http.sh [--nginx-only] [ping|pipeline|all]

  ping       plain keep-alive GET /api/v3/ping, one request per write (default)
  pipeline   16 requests per write (bench/pipeline.lua), wrk counts responses
  all        both of the above

  --nginx-only   do not build or start tradsys (measure the nginx reference)
  -h, --help     this text

environment (defaults in brackets):
  ROUNDS [3]  DURATION [10s]  CONNS [64]  THREADS [1]  WARMUP [2s]
  DEPTH [16] (pipeline depth)  SERVER_CPU [0]  CLIENT_CPU [1]
  QUIET_WAIT [300]  seconds to wait for other processes to go quiet before
              each run (a compiler on the same cores ruins the figures)
  TRADSYS_BIN  use this binary instead of building one
  CARGO_TARGET_DIR  respected by the release build
  RESULTS_DIR [bench/results]  where the dated results file goes

Each run line shows "other-cpu": CPU time used during the run by processes
other than the server and wrk, and "steal", time the hypervisor took, both in
percent of one core; when either is above 5% the run is marked BUSY, printed as discarded and repeated (ATTEMPTS [3] in all).

Results go to stdout and are appended to bench/results/http-<date>.txt.
EOF
}

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2s}
DEPTH=${DEPTH:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-300}
ATTEMPTS=${ATTEMPTS:-3}
busy_kept=0

mode=ping
nginx_only=0
for arg in "$@"; do
	case "$arg" in
	-h | --help) usage; exit 0 ;;
	--nginx-only) nginx_only=1 ;;
	ping | pipeline | all) mode=$arg ;;
	*) usage >&2; exit 2 ;;
	esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
command_line="ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS THREADS=$THREADS WARMUP=$WARMUP DEPTH=$DEPTH SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU bench/http.sh $*"

tmp=$(mktemp -d /tmp/tradsys-http-bench.XXXXXX)
pids=()
results_dir=${RESULTS_DIR:-$root/bench/results}
results="$results_dir/http-$(date -u +%F).txt"
mkdir -p "$results_dir"


# Stop exactly the servers this script started, then remove the temp dir.
# A server that ignores SIGTERM for 5 s gets SIGKILL, so a hung server never
# leaves the core busy for the next benchmark.
cleanup() {
	local rc=$? pid i
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		for ((i = 0; i < 50; i++)); do
			alive "$pid" || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if ((rc != 0)); then
		echo "status: incomplete (exit $rc)" >>"$results"
		# The servers' own logs usually say why; they go with the temp dir.
		tail -n 20 "$tmp"/*.log "$tmp"/nginx/logs/error.log >&2 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Everything worth keeping goes both to stdout and to the results file.
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
		# A fresh host may have no package lists yet; update once and retry.
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
			{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; }
	fi
}


build_tradsys() {
	if [[ -n "${TRADSYS_BIN:-}" ]]; then
		echo "$TRADSYS_BIN"
		return
	fi
	log "building release (cargo build --release)"
	cargo build --release --bin tradsys >&2
	echo "${CARGO_TARGET_DIR:-$root/target}/release/tradsys"
}


start_tradsys() {
	local bin=$1
	tport=$(free_port)
	mkdir -p "$tmp/data"
	# Started from the repository root, where its default markets file
	# (shards/markets.toml) is. Binance's default request limits (6000 weight
	# a minute per IP) would answer most of a benchmark with 429, so the
	# benchmark raises them, as the docs say.
	taskset -c "$SERVER_CPU" "$bin" serve --listen "127.0.0.1:$tport" --shards 1 \
		--data-dir "$tmp/data" --demo-user false \
		--request-weight-per-minute-max 4000000000 --raw-requests-per-5m-max 4000000000 \
		>"$tmp/tradsys.log" 2>&1 &
	tpid=$!
	pids+=("$tpid")
	wait_http "http://127.0.0.1:$tport/ready" "$tpid" tradsys
}



# Requests the server itself has answered so far ("n/a" when it cannot say).
server_count() {
	local name=$1
	case "$name" in
	nginx)
		{ curl -fsS --max-time 2 "http://127.0.0.1:$nport/nginx_status" 2>/dev/null || true; } |
			awk 'NR == 3 { print $3; found = 1 } END { if (!found) print "n/a" }'
		;;
	tradsys)
		{ curl -fsS --max-time 2 "http://127.0.0.1:$tport/metrics" 2>/dev/null || true; } |
			awk '/^tradsys_http_requests_total[{ ]/ { s += $NF; found = 1 }
			     END { if (found) printf "%d\n", s; else print "n/a" }'
		;;
	esac
}

url_of() {
	case "$1" in
	nginx) echo "http://127.0.0.1:$nport/api/v3/ping" ;;
	tradsys) echo "http://127.0.0.1:$tport/api/v3/ping" ;;
	esac
}

# run_wrk NAME KIND DURATION OUTFILE
run_wrk() {
	local name=$1 kind=$2 dur=$3 outfile=$4
	local args=(-t"$THREADS" -c"$CONNS" -d"$dur" --timeout 5s)
	if [[ "$kind" == pipeline ]]; then
		args+=(-s "$root/bench/pipeline.lua" "$(url_of "$name")" -- "$DEPTH" /api/v3/ping)
	else
		args+=("$(url_of "$name")")
	fi
	taskset -c "$CLIENT_CPU" wrk "${args[@]}" >"$outfile" 2>&1
}

# CPU accounting, in clock ticks, to see whether anything but the benchmark
# ran during a run. Without IRQ time accounting the kernel charges softirq
# ticks (loopback TCP work) to the running task as well, so busy time here
# includes irq and softirq to stay comparable with the tasks' own times.
# utime + stime of the given processes and their direct children (the nginx
# worker); threads are included in a process's own figures.
# The comm field is stripped first because it may contain spaces.


# measure NAME KIND ROUND: one measured run, printed as one line; the
# requests/s figure is appended to rps_tradsys or rps_nginx. A run during
# which other processes took more than 5% of a core is printed as discarded
# and repeated, up to ATTEMPTS times; if the last attempt is still BUSY it
# is kept (and marked), because a missing round would hide the problem.
measure() {
	local attempt
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		measure_once "$@"
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

measure_once() {
	local name=$1 kind=$2 round=$3 f="$tmp/wrk-$1-$2-$3.txt"
	local before after rps total lat errs non2xx check inflight
	local b0 t0 st0 s0 c0 b1 t1 st1 s1 c1 other busy steal
	wait_quiet
	before=$(server_count "$name")
	b0=$(busy_ticks); t0=$(total_ticks); st0=$(steal_ticks); s0=$(server_ticks "${pids[@]}"); children_ticks >"$tmp/c0"
	run_wrk "$name" "$kind" "$DURATION" "$f"
	b1=$(busy_ticks); t1=$(total_ticks); st1=$(steal_ticks); s1=$(server_ticks "${pids[@]}"); children_ticks >"$tmp/c1"
	after=$(server_count "$name")
	c0=$(<"$tmp/c0")
	c1=$(<"$tmp/c1")
	# Percent of one core used by anything but the servers and wrk.
	other=$(awk -v o="$((b1 - b0 - (s1 - s0) - (c1 - c0)))" -v t="$((t1 - t0))" -v n="$(nproc)" \
		'BEGIN { v = t ? 100 * o * n / t : 0; if (v < 0) v = 0; printf "%.1f", v }')
	steal=$(awk -v s="$((st1 - st0))" -v t="$((t1 - t0))" -v n="$(nproc)" 'BEGIN { printf "%.1f", t ? 100 * s * n / t : 0 }')
	# On a VM the hypervisor can take the core away too (steal time); that
	# disturbs a run as much as a local build does.
	busy=""
	awk -v v="$other" -v s="$steal" 'BEGIN { exit !(v > 5 || s > 5) }' && busy=" BUSY"
	other="other-cpu ${other}%, steal ${steal}%${busy}"
	rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
	total=$(awk '/ requests in / { print $1 }' "$f")
	lat=$(awk '$1 == "Latency" { print $2; exit }' "$f")
	errs=$(awk -F'Socket errors: ' 'NF > 1 { print $2 }' "$f")
	non2xx=$(awk -F': ' '/Non-2xx or 3xx responses/ { print $2 }' "$f")
	if [[ -z "$rps" || -z "$total" ]]; then
		log "could not parse wrk output:"
		cat "$f" >&2
		return 1
	fi
	# wrk stops counting at the deadline; what was in flight then may have
	# been answered by the server but not counted by wrk, at most one batch
	# per connection. The server's counter also sees our own status request.
	inflight=$((CONNS + 2))
	[[ "$kind" == pipeline ]] && inflight=$((CONNS * DEPTH + 2))
	if [[ "$before" == n/a || "$after" == n/a ]]; then
		check="count-check n/a"
	elif ((after - before >= total && after - before <= total + inflight)); then
		check="count-check ok (server $((after - before)))"
	else
		check="count-check MISMATCH (server $((after - before)), wrk $total)"
	fi
	last_busy=$busy
	last_rps=$rps
	last_line=$(printf 'round %s  %-7s %-8s %12s req/s  %10s requests  avg-latency %-9s %s  %s%s%s' \
		"$round" "$name" "$kind" "$rps" "$total" "$lat" "$check" "$other" \
		"${errs:+  socket-errors: $errs}" "${non2xx:+  non-2xx: $non2xx}")
}

# bench_kind KIND: warm both servers up, then ROUNDS alternating runs.
bench_kind() {
	local kind=$1 r order name
	rps_tradsys=()
	rps_nginx=()
	busy_kept=0
	out ""
	out "== $kind$([[ $kind == pipeline ]] && echo " (depth $DEPTH, bench/pipeline.lua)") =="
	for name in "${servers[@]}"; do
		run_wrk "$name" "$kind" "$WARMUP" "$tmp/warmup.txt"
	done
	for ((r = 1; r <= ROUNDS; r++)); do
		order=("${servers[@]}")
		if ((r % 2 == 0)); then
			order=()
			for name in "${servers[@]}"; do order=("$name" "${order[@]}"); done
		fi
		for name in "${order[@]}"; do
			measure "$name" "$kind" "$r"
		done
	done
	local mt mn
	if ((busy_kept)); then
		out "WARNING: $busy_kept kept run(s) were BUSY; the medians below are not clean"
	fi
	mn=$(median "${rps_nginx[@]}")
	if ((nginx_only)); then
		out "median $kind: nginx $mn req/s; tradsys not measured"
	else
		mt=$(median "${rps_tradsys[@]}")
		out "median $kind: tradsys $mt req/s, nginx $mn req/s, ratio tradsys/nginx $(awk -v a="$mt" -v b="$mn" 'BEGIN { printf "%.3f", a / b }')"
	fi
}

ensure_tools
servers=(nginx)
bin=""
if ((!nginx_only)); then
	bin=$(build_tradsys)
	servers=(tradsys nginx)
fi

out ""
out "=== http benchmark $(date -u +%FT%TZ) ==="
out "command: $command_line"
out "machine: nproc $(nproc), cpu '$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)', kernel $(uname -r)"
out "tools: $(wrk -v 2>&1 | head -n1 | awk '{ print $1, $2 }'), $(nginx -v 2>&1 | sed 's/^nginx version: //')"
out "pinning: servers on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU; wrk -t$THREADS -c$CONNS -d$DURATION, warm-up $WARMUP"
if ((!nginx_only)); then
	# Name the last commit that changed the server, not the last bench commit.
	out "tradsys: $(git -C "$root" log -1 --format='%h %s' -- src crates Cargo.toml Cargo.lock)$(git -C "$root" diff --quiet HEAD -- src crates Cargo.toml Cargo.lock || echo ' (modified)'), $bin"
	start_tradsys "$bin"
fi
start_nginx

# The two responses should be alike in size, or the comparison is unfair to
# whoever sends more bytes; show both so a reader can judge.
for name in "${servers[@]}"; do
	out "response from $name ($(curl -sS -i "$(url_of "$name")" | wc -c) bytes):"
	curl -sS -i "$(url_of "$name")" | tr -d '\r' | sed 's/^/    /' | tee -a "$results"
	echo | tee -a "$results"
done

case "$mode" in
ping) bench_kind ping ;;
pipeline) bench_kind pipeline ;;
all) bench_kind ping; bench_kind pipeline ;;
esac
out "=== end ==="
