#!/usr/bin/env bash
# tuning/cpu-governor.sh — run the shard cores at full clock.
#
# A shard that waits for I/O in io_uring looks idle to the frequency
# governor, which then lowers the clock; the next burst of orders is served
# slowly until the clock ramps up again, which shows as tail latency.
# "performance" keeps every core at its highest frequency. Dry run by
# default; --apply writes scaling_governor (root only). VMs often expose no
# cpufreq interface: then there is nothing to do from inside and it says so.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: tuning/cpu-governor.sh [--apply] [--governor NAME]

  --governor NAME   governor to set (default: performance)
  --apply           write it (default is a dry run that prints what it would do)
  -h, --help        this text

The setting does not survive a reboot: use cpufrequtils or a systemd unit
calling this script with --apply to keep it.
EOF
}

apply=0
governor=performance
while (($#)); do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--apply) apply=1; shift ;;
	--dry-run) apply=0; shift ;;
	--governor) governor=$2; shift 2 ;;
	*) usage >&2; exit 2 ;;
	esac
done

shopt -s nullglob
files=(/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor)
if ((${#files[@]} == 0)); then
	echo "no cpufreq interface on this host (VM or firmware-managed frequency): nothing to set"
	exit 0
fi

for f in "${files[@]}"; do
	cpu=$(basename "$(dirname "$(dirname "$f")")")
	cur=$(cat "$f")
	avail=$(cat "$(dirname "$f")/scaling_available_governors" 2>/dev/null || echo "")
	if [[ -n "$avail" && " $avail " != *" $governor "* ]]; then
		echo "$cpu: $governor not available (have: $avail)"
	elif [[ "$cur" == "$governor" ]]; then
		echo "$cpu: already $governor"
	elif ((apply)); then
		echo "$governor" >"$f"
		echo "$cpu: $cur -> $(cat "$f")"
	else
		echo "$cpu: would set $cur -> $governor"
	fi
done
