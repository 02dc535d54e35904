#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded number of executions.
#
#   tests/fuzz.sh                  # each target 100,000 runs (the test command)
#   tests/fuzz.sh 10000000         # the long run recorded in docs/fuzzing.md
#   tests/fuzz.sh 10000000 ws_frames http_request   # chosen targets
#
# Targets start from the corpus kept in fuzz/corpus/<target>; inputs the
# run finds new coverage with go to a scratch directory, not the repository
# (copy them in by hand when a long run finds ones worth keeping). A crash
# stops the run with libFuzzer's report and the crashing input saved under
# the scratch directory, whose path is printed. cargo-fuzz is installed from
# crates.io when missing; it runs on stable Rust without a sanitizer.
set -euo pipefail

cd "$(dirname "$0")/.."

runs=${1:-100000}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(http_request ws_frames ws_handshake request_params journal_segment snapshot_file wsapi_request)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/tradsys-fuzz.XXXXXX")
echo "fuzz: scratch directory $scratch"

# Inputs up to 64 KiB: a snapshot or journal seed is several KiB.
max_len=65536
cargo fuzz build --sanitizer none --fuzz-dir fuzz 2>&1 | tail -n 3
# Copies, so that a rebuild during a long run does not touch what runs.
mkdir -p "$scratch/bin"
for target in "${targets[@]}"; do
    cp "fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release/$target" "$scratch/bin/"
done
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target/new" "$scratch/$target/artifacts"
    log="$scratch/$target/log"
    start=$(date +%s)
    if ! "$scratch/bin/$target" "$scratch/$target/new" "fuzz/corpus/$target" \
        -runs="$runs" -max_len="$max_len" -seed=1 -print_final_stats=1 \
        -artifact_prefix="$scratch/$target/artifacts/" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz: $target FAILED; the input is in $scratch/$target/artifacts" >&2
        exit 1
    fi
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    echo "fuzz: $target ok: ${execs:-?} executions, ${cov:-cov: ?} edges, $(($(date +%s) - start)) s"
done
rm -rf "$scratch"
