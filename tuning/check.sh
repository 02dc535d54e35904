#!/usr/bin/env bash
# tuning/check.sh — report what this host still lacks for tradsys.
#
# Compares the running kernel and the current shell's limits with
# tuning/sysctl.conf and tuning/limits.conf, and checks the things a
# thread-per-core io_uring server depends on (kernel >= 5.8, io_uring not
# disabled, performance governor). It is a report, not a gate: it prints
# OK, MISSING or N/A per item and exits 0, so it can run on any host,
# including CI and developer laptops. Nothing is changed.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: tuning/check.sh [--sysctl FILE] [--nofile N] [--memlock-kib N]

  --sysctl FILE     settings to compare against (default: tuning/sysctl.conf)
  --nofile N        open-file limit wanted for this shell (default 1048576)
  --memlock-kib N   locked-memory limit wanted, KiB (default 65536)
  -h, --help        this text

Prints OK / MISSING / N/A per item and a count; always exits 0.
Limits are those of the shell that runs the check: run it as the service user
(or read deploy/systemd/tradsys.service, which sets its own).
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sysctl_file="$here/sysctl.conf"
nofile_want=1048576
memlock_want=65536
while (($#)); do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--sysctl) sysctl_file=$2; shift 2 ;;
	--nofile) nofile_want=$2; shift 2 ;;
	--memlock-kib) memlock_want=$2; shift 2 ;;
	*) usage >&2; exit 2 ;;
	esac
done

ok=0
missing=0
na=0
report() {
	local status=$1 item=$2 detail=$3
	printf '%-8s %-40s %s\n' "$status" "$item" "$detail"
	case "$status" in
	OK) ok=$((ok + 1)) ;;
	MISSING) missing=$((missing + 1)) ;;
	*) na=$((na + 1)) ;;
	esac
}

# Keys where a smaller value is the goal; for every other single number,
# "at least the wanted value" is good enough (a host tuned higher is fine).
# Switches whose values are modes, not amounts, must match exactly
# (tcp_tw_reuse 2 means loopback only; tcp_syncookies 2 means always).
exact=" net.ipv4.tcp_tw_reuse net.ipv4.tcp_syncookies "
lower_is_better=" net.ipv4.tcp_fin_timeout net.ipv4.tcp_slow_start_after_idle vm.swappiness kernel.io_uring_disabled "

# compare KEY WANT HAVE -> exit 0 when HAVE satisfies WANT.
compare() {
	local key=$1 want=$2 have=$3
	local -a w h
	read -r -a w <<<"$want"
	read -r -a h <<<"$have"
	if ((${#w[@]} == 1)); then
		if [[ "$exact" == *" $key "* ]]; then
			((h[0] == w[0]))
		elif [[ "$lower_is_better" == *" $key "* ]]; then
			((h[0] <= w[0]))
		else
			((h[0] >= w[0]))
		fi
	elif [[ "$key" == net.ipv4.ip_local_port_range ]]; then
		# A range at least as wide as the wanted one.
		((h[0] <= w[0] && h[1] >= w[1]))
	else
		# Buffer triples (min default max): the maximum is what matters.
		((h[${#h[@]} - 1] >= w[${#w[@]} - 1]))
	fi
}

echo "tradsys host check: $(hostname), kernel $(uname -r), $(nproc) CPUs, $(date -u +%FT%TZ)"

# Kernel: glommio needs io_uring features from 5.8.
kver=$(uname -r)
kmaj=${kver%%.*}
kmin=${kver#*.}
kmin=${kmin%%[!0-9]*}
if ((kmaj > 5 || (kmaj == 5 && kmin >= 8))); then
	report OK "kernel >= 5.8" "$kver"
else
	report MISSING "kernel >= 5.8" "$kver (glommio needs io_uring features from 5.8)"
fi

# io_uring: the sysctl exists from 6.6; before that it cannot be disabled
# this way, so a recent-enough kernel has it.
if [[ -r /proc/sys/kernel/io_uring_disabled ]]; then
	v=$(cat /proc/sys/kernel/io_uring_disabled)
	case "$v" in
	0) report OK "io_uring enabled" "kernel.io_uring_disabled = 0" ;;
	1) report MISSING "io_uring enabled" "kernel.io_uring_disabled = 1 (only root and io_uring_group may use it)" ;;
	*) report MISSING "io_uring enabled" "kernel.io_uring_disabled = $v (disabled for everyone)" ;;
	esac
else
	report OK "io_uring enabled" "no io_uring_disabled knob on this kernel (it cannot be switched off)"
fi

# sysctl settings, one line per key of the settings file.
while IFS= read -r line; do
	line=${line%%#*}
	[[ "$line" == *=* ]] || continue
	key=$(echo "${line%%=*}" | xargs)
	want=$(echo "${line#*=}" | xargs)
	path="/proc/sys/${key//./\/}"
	if [[ ! -r "$path" ]]; then
		report N/A "$key" "not on this kernel (wanted $want)"
		continue
	fi
	have=$(xargs <"$path")
	if compare "$key" "$want" "$have"; then
		report OK "$key" "$have"
	else
		report MISSING "$key" "have $have, want $want"
	fi
done <"$sysctl_file"

# Limits of this shell (what a process started from it would inherit).
nofile=$(ulimit -n)
if [[ "$nofile" == unlimited ]] || ((nofile >= nofile_want)); then
	report OK "ulimit -n (open files)" "$nofile"
else
	report MISSING "ulimit -n (open files)" "have $nofile, want $nofile_want (tuning/limits.conf)"
fi
memlock=$(ulimit -l)
if [[ "$memlock" == unlimited ]] || ((memlock >= memlock_want)); then
	report OK "ulimit -l (locked memory, KiB)" "$memlock"
else
	report MISSING "ulimit -l (locked memory, KiB)" "have $memlock, want $memlock_want; enough for $((memlock / 512)) shards at 512 KiB each"
fi

# CPU frequency governor: VMs and some firmware expose no cpufreq at all, in
# which case there is nothing to set from inside.
govs=$(cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null | sort | uniq -c | xargs || true)
if [[ -z "$govs" ]]; then
	report N/A "cpu governor performance" "no cpufreq interface (VM or firmware-managed)"
elif [[ "$govs" =~ ^[0-9]+\ performance$ ]]; then
	report OK "cpu governor performance" "$govs"
else
	report MISSING "cpu governor performance" "$govs (tuning/cpu-governor.sh --apply)"
fi

# irqbalance moves NIC interrupts back after tuning/irq-affinity.sh pins them.
if pgrep -x irqbalance >/dev/null 2>&1; then
	report MISSING "irqbalance stopped" "irqbalance is running and will undo tuning/irq-affinity.sh"
else
	report OK "irqbalance stopped" "not running"
fi

echo "summary: $ok OK, $missing MISSING, $na N/A"
exit 0
