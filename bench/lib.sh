#!/usr/bin/env bash
# Shared pieces of the benchmark scripts (bench/http.sh, bench/rest.sh):
# process checks, free ports, readiness, CPU accounting for quiet-machine
# detection, and medians. Sourced, not run; the functions read the
# calling script's settings (QUIET_WAIT and the like) when called.
# shellcheck disable=SC2154  # tmp and pids are the calling script's.

# A line for the operator, on stderr.
log() { printf '%s\n' "$*" >&2; }

# scratch NAME: a temporary directory in $tmp and an empty $pids; at exit
# every pid in $pids is stopped and the directory removed.
scratch() {
	tmp=$(mktemp -d "/tmp/$1.XXXXXX")
	pids=()
	trap stop_scratch EXIT
}

stop_scratch() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}

# A child that has exited stays a zombie until waited for, and kill -0
# succeeds on zombies; ask ps for the state instead.
alive() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ "$st" != Z* ]]
}

# The kernel picks a free port when binding port 0; a tiny race remains
# between closing it and the server binding it, which is fine on a quiet box.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL PID NAME: poll until URL answers 200, failing fast if the
# process died (its log is shown, because that is where the reason is).
wait_http() {
	local url=$1 pid=$2 name=$3 i
	for ((i = 0; i < 300; i++)); do
		if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
			return 0
		fi
		if ! alive "$pid"; then
			log "$name exited before it was ready; its log:"
			cat "$tmp/$name.log" >&2 || true
			return 1
		fi
		sleep 0.1
	done
	log "$name not ready after 30 s: $url"
	return 1
}

# worker_cpu_affinity takes a bit mask written as binary digits, rightmost
# digit = CPU 0.
cpu_mask() {
	local cpu=$1 mask=1 i
	for ((i = 0; i < cpu; i++)); do mask="${mask}0"; done
	echo "$mask"
}

# User + system time of this shell's finished children (wrk, curl), from the
# `times` builtin, in ticks. `times` must run in this shell, not in a $(...)
# subshell (a fork starts with no children's time), hence the file.
children_ticks() {
	times >"$tmp/times"
	awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%d\n", t * 100 }' "$tmp/times"
}

# Wait, up to QUIET_WAIT seconds, until processes other than ours use less
# than 5% of one core over 2 s: a parallel build on the same two cores would
# otherwise decide the result.
wait_quiet() {
	local waited=0 b0 t0 s0 b1 t1 s1 other pct
	while :; do
		b0=$(busy_ticks); t0=$(total_ticks); s0=$(server_ticks "${pids[@]}")
		sleep 2
		b1=$(busy_ticks); t1=$(total_ticks); s1=$(server_ticks "${pids[@]}")
		other=$((b1 - b0 - (s1 - s0)))
		pct=$(awk -v o="$other" -v t="$((t1 - t0))" -v n="$(nproc)" 'BEGIN { printf "%d", t ? 100 * o * n / t : 0 }')
		((pct < 5)) && return 0
		if ((waited >= QUIET_WAIT)); then
			out "WARNING: machine still busy after ${QUIET_WAIT}s (other processes ${pct}% of a core): $(ps -eo pcpu=,comm= --sort=-pcpu | head -3 | xargs)"
			return 0
		fi
		((waited == 0)) && log "waiting for a quiet machine (other processes ${pct}% of a core: $(ps -eo pcpu=,comm= --sort=-pcpu | head -3 | xargs))"
		sleep 3
		waited=$((waited + 5))
	done
}

median() {
	printf '%s\n' "$@" | sort -g |
		awk '{ a[NR] = $1 } END { if (NR % 2) printf "%.2f\n", a[(NR + 1) / 2];
		                          else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
steal_ticks() { awk '$1 == "cpu" { print $9; exit }' /proc/stat; }
total_ticks() { awk '$1 == "cpu" { s = 0; for (i = 2; i <= 9; i++) s += $i; print s; exit }' /proc/stat; }

# One nginx worker on SERVER_CPU answering GET /api/v3/ping like tradsys, on
# a free port; sets nport and npid and adds npid to pids.
start_nginx() {
	nport=$(free_port)
	mkdir -p "$tmp/nginx/logs"
	# One worker on the server core, nothing logged per request, keep-alive
	# connections never recycled during a run (keepalive_requests), and all
	# temp paths inside the temp prefix so nothing touches /var.
	cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes 1;
worker_cpu_affinity $(cpu_mask "$SERVER_CPU");
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events {
    worker_connections 20000;
}
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 75s;
    client_body_temp_path $tmp/nginx/client_body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    server {
        listen 127.0.0.1:$nport reuseport;
        location = /api/v3/ping { default_type application/json; return 200 '{}'; }
        location = /nginx_status { stub_status; }
    }
}
EOF
	taskset -c "$SERVER_CPU" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
		-e "$tmp/nginx/logs/error.log" >"$tmp/nginx.log" 2>&1 &
	npid=$!
	pids+=("$npid")
	wait_http "http://127.0.0.1:$nport/api/v3/ping" "$npid" nginx
}

# server_ticks PID...: CPU ticks of the processes and their children.
server_ticks() {
	local pid kids t=0
	for pid in "$@"; do
		kids=$(pgrep -P "$pid" || true)
		for p in $pid $kids; do
			t=$((t + $(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk '{ print $12 + $13 }' || echo 0)))
		done
	done
	echo "$t"
}

# window_start: CPU counters at the start of a measured window, read by the
# calling script's window_end.
# shellcheck disable=SC2034  # w_* are the calling script's window_end's.
window_start() {
	w_b0=$(busy_ticks); w_t0=$(total_ticks); w_st0=$(steal_ticks); w_s0=$(server_ticks "${pids[@]}")
	children_ticks >"$tmp/c0"
}

# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# start_postgres: a private PostgreSQL on a free loopback port in $tmp, as
# the postgres user (it refuses root), its postmaster a child of the calling
# script (counted as server CPU, stopped with the script's pids). Sets
# pgport, pgpid, pgbin.
start_postgres() {
	pgbin=$(pg_config --bindir 2>/dev/null || true)
	[[ -x "$pgbin/initdb" ]] || pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	[[ -x "$pgbin/initdb" ]] || { log "PostgreSQL is not installed (apt-get install postgresql)"; return 1; }
	local dir=$tmp/pg user=()
	mkdir -p "$dir" && chmod 755 "$tmp" && chmod 700 "$dir"
	if ((EUID == 0)); then
		chown postgres: "$dir"
		user=(setpriv --reuid=postgres --regid=postgres --init-groups)
	fi
	"${user[@]}" "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >"$tmp/initdb.log" 2>&1
	pgport=$(free_port)
	"${user[@]}" "$pgbin/postgres" -D "$dir/data" -p "$pgport" -k "$dir" -c listen_addresses=127.0.0.1 \
		>"$tmp/postgres.log" 2>&1 &
	pgpid=$!
	pids+=("$pgpid")
	local i
	for ((i = 0; i < 100; i++)); do
		"$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pgport" && return 0
		sleep 0.1
	done
	log "PostgreSQL did not start; its log:"; tail -n 20 "$tmp/postgres.log" >&2
	return 1
}

pg_sql() {
	"$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -d "${2:-postgres}" -Atqc "$1"
}

# machine: the line a benchmark's output starts with (what ran it, when).
machine() {
	echo "machine: nproc $(nproc), cpu '$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)', $(date -u +%FT%TZ)"
}

# Flags that lift the request and order limits out of a benchmark's way.
# shellcheck disable=SC2034  # used by the scripts that source this file.
LIMITS_OFF_FLAGS=(--orders-per-10s-max 100000000 --orders-per-day-max 1000000000
	--request-weight-per-minute-max 1000000000 --raw-requests-per-5m-max 1000000000)

# result_field NAME LINE: the value of NAME=VALUE in a RESULT line.
result_field() { tr ' ' '\n' <<<"$2" | awk -F= -v n="$1" '$1 == n { print $2 }'; }

# build_release: the server and the load generator, as benchmarks run them.
build_release() {
	cargo build --release --quiet -p tradsys --bin tradsys
	cargo build --release --quiet -p tradsys-loadgen
}
