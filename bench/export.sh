#!/usr/bin/env bash
# bench/export.sh — streaming a user's whole history out of the admin API
# (GET /admin/v1/users/{id}/trades): ROWS trades of one user, exported as
# NDJSON and as CSV with curl to a pipe, on each history engine; the rows
# that arrived, the seconds, and how much the server's RSS grew over its
# resident size before the first export (target: <= 16 MiB whatever ROWS).
#
# Per engine: a fresh data directory (and, for PostgreSQL, a private server
# and database started here); tradsys starts once to make the user (and the
# SQLite files), stops; `cargo bench --bench export` writes ROWS trades of
# that user straight into the store (SQLite: the owner shard's file; the
# server must be stopped); tradsys starts again on that data; VmRSS of
# /proc/<pid>/status is read before the exports and every 50 ms while they
# run, each export after a wait for a quiet machine (bench/lib.sh). Last,
# a client that reads 1 MB and goes away: the export must end
# (tradsys_history_exports_active back to 0). Then the same trades as a
# background job (POST /tradsys/v1/export, signed with the user's HMAC
# key): seconds from the request to DONE (target: <= 10 s for 1,000,000
# trades), then the download's seconds, and the file's rows.
#
# All traffic goes to 127.0.0.1.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
	cat <<'EOF'
usage: bench/export.sh

environment (defaults in brackets):
  ROWS [1000000]              trades of the exported user
  ENGINES ["sqlite postgres"] history engines to measure
  WORK_DIR [/work/bench-data] where the data directories go
  QUIET_WAIT [300]            seconds to wait for a quiet machine before
                              each export (as bench/http.sh)
  TRADSYS_BIN                 use this binary instead of building
  CARGO_TARGET_DIR            respected by the release build
  RESULTS_DIR [bench/results] where export-<date>.txt goes
EOF
}

for arg in "$@"; do
	case "$arg" in
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done

ROWS=${ROWS:-1000000}
ENGINES=${ENGINES:-sqlite postgres}
WORK_DIR=${WORK_DIR:-/work/bench-data}
QUIET_WAIT=${QUIET_WAIT:-300}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
RESULTS_DIR=${RESULTS_DIR:-$root/bench/results}
mkdir -p "$RESULTS_DIR" "$WORK_DIR"
results="$RESULTS_DIR/export-$(date -u +%F).txt"
tmp=$(mktemp -d)
pids=()
TOKEN=bench-export-admin-token-0123456789
cleanup() {
	local pid
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$tmp" "$WORK_DIR/export-sqlite" "$WORK_DIR/export-postgres"
}
trap cleanup EXIT

out() { printf '%s\n' "$*" | tee -a "$results"; }
log() { printf '%s\n' "$*" >&2; }

if [[ -z "${TRADSYS_BIN:-}" ]]; then
	cargo build --release --locked >&2
	TRADSYS_BIN="${CARGO_TARGET_DIR:-$root/target}/release/tradsys"
fi

# start_tradsys DIR [FLAG...]: sets port, aport (admin), spid; waits for /ready.
start_tradsys() {
	local dir=$1
	shift
	port=$(free_port)
	aport=$(free_port)
	"$TRADSYS_BIN" serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$aport" --admin-token "$TOKEN" \
		--shards 2 --data-dir "$dir" --demo-user false "$@" >"$tmp/tradsys.log" 2>&1 &
	spid=$!
	pids+=("$spid")
	wait_http "http://127.0.0.1:$port/ready" "$spid" tradsys
}

stop_tradsys() {
	kill -TERM "$spid"
	wait "$spid" || true
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# metric NAME: summed over shards.
metric() {
	curl -fsS "http://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 ~ "^" n "[{]" { s += $2 } END { printf "%d\n", s }'
}

# export_once FORMAT: streams the user's trades to a line count; prints
# "lines seconds max_rss_kib" (RSS sampled every 50 ms while it runs).
export_once() {
	local format=$1 cpid started ended max=0 rss
	started=$(date +%s.%N)
	(curl -fsS -N -H "X-Admin-Token: $TOKEN" \
		"http://127.0.0.1:$aport/admin/v1/users/$user/trades?format=$format" | wc -l >"$tmp/lines") &
	cpid=$!
	while kill -0 "$cpid" 2>/dev/null; do
		rss=$(rss_kib "$spid")
		((rss > max)) && max=$rss
		sleep 0.05
	done
	wait "$cpid" || { log "the $format export failed; tradsys log:"; tail -n 20 "$tmp/tradsys.log" >&2; exit 1; }
	ended=$(date +%s.%N)
	rss=$(rss_kib "$spid")
	((rss > max)) && max=$rss
	echo "$(cat "$tmp/lines") $(echo "$ended - $started" | bc) $max"
}

measure() {
	local engine=$1 dir=$WORK_DIR/export-$engine flags=() fill=() before line lines seconds max peak=0 format rows
	rm -rf "$dir"
	case $engine in
	sqlite)
		fill=(--data-dir "$dir" --shards 2)
		;;
	postgres)
		start_postgres
		pg_sql "CREATE DATABASE bench" >/dev/null
		flags=(--postgres "postgresql://postgres@127.0.0.1:$pgport/bench")
		fill=(--postgres "host=127.0.0.1 port=$pgport user=postgres dbname=bench")
		;;
	esac
	out ""
	out "== $engine: $ROWS trades of one user =="
	start_tradsys "$dir" "${flags[@]}"
	user=$(curl -fsS -H "X-Admin-Token: $TOKEN" -d '{"name":"exporter"}' "http://127.0.0.1:$aport/admin/v1/users" |
		sed 's/.*"userId":\([0-9]*\).*/\1/')
	stop_tradsys
	cargo bench --locked --bench export -- --user "$user" --rows "$ROWS" "${fill[@]}" >"$tmp/fill.log" 2>&1 ||
		{ log "the fill failed:"; tail -n 30 "$tmp/fill.log" >&2; exit 1; }
	grep '^filled' "$tmp/fill.log" | sed 's/^/    /' | tee -a "$results"
	start_tradsys "$dir" "${flags[@]}"
	before=$(rss_kib "$spid")
	out "server RSS before the first export: $((before / 1024)) MiB"
	for format in ndjson csv; do
		wait_quiet
		line=$(export_once "$format")
		read -r lines seconds max <<<"$line"
		rows=$lines
		[[ $format == csv ]] && rows=$((lines - 1))
		((max > peak)) && peak=$max
		out "$format: $rows rows in $seconds s ($(awk -v r="$rows" -v s="$seconds" 'BEGIN { printf "%.0f", r / s }') rows/s), RSS max $((max / 1024)) MiB, growth $(awk -v a="$max" -v b="$before" 'BEGIN { printf "%.1f", (a - b) / 1024 }') MiB"
		((rows == ROWS)) || { out "ERROR: expected $ROWS rows"; exit 1; }
	done
	out "$engine: RSS growth over both exports $(awk -v a="$peak" -v b="$before" 'BEGIN { printf "%.1f", (a - b) / 1024 }') MiB (target <= 16 MiB)"
	# A client that reads 1 MB and goes away: its export must end.
	curl -sS -N -H "X-Admin-Token: $TOKEN" "http://127.0.0.1:$aport/admin/v1/users/$user/trades" 2>/dev/null |
		head -c 1000000 >/dev/null || true
	local i
	for ((i = 0; i < 200; i++)); do
		(($(metric tradsys_history_exports_active) == 0)) && break
		sleep 0.05
	done
	out "client gone after 1 MB: exports running $(metric tradsys_history_exports_active) (expected 0), RSS $(($(rss_kib "$spid") / 1024)) MiB"
	job_export
	stop_tradsys
}

# signed METHOD PATH QUERY: a signed request with the user's HMAC key;
# prints the body.
signed() {
	local method=$1 path=$2 query="$3${3:+&}timestamp=$(date +%s%3N)" signature
	signature=$(printf '%s' "$query" | openssl dgst -sha256 -hmac "$secret" | awk '{ print $NF }')
	curl -fsS -X "$method" -H "X-MBX-APIKEY: $apikey" "http://127.0.0.1:$port$path?$query&signature=$signature"
}

# job_export: the user's trades as a background job, timed to DONE, then
# downloaded.
job_export() {
	local key id status started ended done_at lines
	key=$(curl -fsS -H "X-Admin-Token: $TOKEN" -d '{"scopes":["READ"]}' "http://127.0.0.1:$aport/admin/v1/users/$user/keys")
	apikey=$(sed 's/.*"apiKey":"\([^"]*\)".*/\1/' <<<"$key")
	secret=$(sed 's/.*"secretKey":"\([^"]*\)".*/\1/' <<<"$key")
	wait_quiet
	started=$(date +%s.%N)
	id=$(signed POST /tradsys/v1/export "startTime=0" | sed 's/.*"exportId":"\([^"]*\)".*/\1/')
	while :; do
		status=$(signed GET /tradsys/v1/export "exportId=$id")
		[[ $status == *'"status":"DONE"'* ]] && break
		[[ $status == *'"status":"FAILED"'* ]] && { out "ERROR: the export job failed: $status"; exit 1; }
		sleep 0.02
	done
	done_at=$(date +%s.%N)
	signed GET /tradsys/v1/export/download "exportId=$id" >"$tmp/export.csv"
	ended=$(date +%s.%N)
	lines=$(($(wc -l <"$tmp/export.csv") - 1))
	out "job: $lines rows DONE in $(echo "$done_at - $started" | bc) s after the request (target <= 10 s for 1000000), download $(stat -c %s "$tmp/export.csv") bytes in $(echo "$ended - $done_at" | bc) s"
	((lines == ROWS)) || { out "ERROR: expected $ROWS rows"; exit 1; }
	rm -f "$tmp/export.csv"
}

out ""
out "=== export benchmark $(date -u +%FT%TZ) ==="
out "command: ROWS=$ROWS ENGINES=\"$ENGINES\" bench/export.sh"
out "machine: nproc $(nproc), cpu '$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)', kernel $(uname -r)"
out "tradsys: $(git -C "$root" log -1 --format='%h %s' -- src crates)$(git -C "$root" diff --quiet HEAD -- src crates || echo ' (modified)')"
for engine in $ENGINES; do
	measure "$engine"
done
out "=== end ==="
