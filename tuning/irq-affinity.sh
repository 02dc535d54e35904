#!/usr/bin/env bash
# tuning/irq-affinity.sh — place NIC interrupts for a thread-per-core server.
#
# tradsys runs one shard per core and every shard accepts on the same port
# (SO_REUSEPORT). A NIC with several receive queues raises each queue's
# interrupt on one CPU; if those CPUs are spread round-robin over the shard
# cores, the packets of a connection are handled by the kernel on a shard
# core instead of all landing on CPU 0 and starving shard 0. Alternatively
# (--cpus with housekeeping cores) interrupts can be kept OFF the shard
# cores entirely, and --housekeeping moves every other movable interrupt
# (disks, timers of devices) to those cores too, so shards see no noise.
#
# Dry run by default: it prints what it would write. --apply writes
# /proc/irq/N/smp_affinity (root only). Stop irqbalance first, or it will
# move the interrupts back within seconds. True core isolation also needs
# kernel parameters (printed at the end); they take effect after a reboot.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: tuning/irq-affinity.sh [--apply] [--iface NAME]... [--cpus LIST] [--housekeeping LIST]

  --iface NAME         NIC whose queue interrupts to place (repeatable;
                       default: every interface in /sys/class/net except lo)
  --cpus LIST          CPUs that receive NIC interrupts, round-robin
                       (default: all online CPUs, e.g. 0-7 or 0,2,4)
  --housekeeping LIST  also move all other movable interrupts to LIST
  --apply              write smp_affinity (default is a dry run)
  -h, --help           this text
EOF
}

apply=0
ifaces=()
cpus_arg=""
housekeeping=""
while (($#)); do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--apply) apply=1; shift ;;
	--dry-run) apply=0; shift ;;
	--iface) ifaces+=("$2"); shift 2 ;;
	--cpus) cpus_arg=$2; shift 2 ;;
	--housekeeping) housekeeping=$2; shift 2 ;;
	*) usage >&2; exit 2 ;;
	esac
done

# expand "0-3,6" into "0 1 2 3 6".
expand_list() {
	local part a b out=() parts=()
	IFS=, read -r -a parts <<<"$1"
	for part in "${parts[@]}"; do
		if [[ "$part" == *-* ]]; then
			a=${part%-*}
			b=${part#*-}
			for ((; a <= b; a++)); do out+=("$a"); done
		else
			out+=("$part")
		fi
	done
	echo "${out[@]}"
}

# smp_affinity takes a hex mask in comma-separated 32-bit words, highest
# word first (the format /proc/irq/N/smp_affinity prints).
cpu_mask() {
	local -a words=()
	local cpu i hex=""
	for cpu in "$@"; do
		i=$((cpu / 32))
		words[i]=$((${words[i]:-0} | (1 << (cpu % 32))))
	done
	for ((i = ${#words[@]} - 1; i >= 0; i--)); do
		hex+=$(printf '%08x' "${words[i]:-0}")
		((i > 0)) && hex+=","
	done
	echo "$hex"
}

set_affinity() {
	local irq=$1 mask=$2 why=$3 cur
	cur=$(cat "/proc/irq/$irq/smp_affinity" 2>/dev/null || echo "?")
	if ((apply)); then
		if echo "$mask" >"/proc/irq/$irq/smp_affinity" 2>/dev/null; then
			echo "irq $irq: $cur -> $mask ($why)"
		else
			# Per-CPU and managed interrupts refuse new masks; that is expected.
			echo "irq $irq: kept $cur, the kernel refused $mask ($why)"
		fi
	else
		echo "would set irq $irq: $cur -> $mask ($why)"
	fi
}

if ((${#ifaces[@]} == 0)); then
	for d in /sys/class/net/*; do
		[[ "$(basename "$d")" == lo ]] || ifaces+=("$(basename "$d")")
	done
fi
read -r -a cpus <<<"$(expand_list "${cpus_arg:-$(cat /sys/devices/system/cpu/online)}")"

if pgrep -x irqbalance >/dev/null 2>&1; then
	echo "note: irqbalance is running and will undo this; stop and disable it first" >&2
fi
((apply)) || echo "dry run (use --apply to write); NIC interfaces: ${ifaces[*]:-none}; CPUs: ${cpus[*]}"

# Interrupt lines of /proc/interrupts name their device in the last column,
# e.g. "eth0-TxRx-3", "mlx5_comp2@pci:...", "virtio0-input.0"; match the
# interface name and, for virtio NICs, the virtio device behind it; the
# "-config" line of a virtio device carries no packets and is left alone.
nic_irqs=()
for ifc in "${ifaces[@]}"; do
	pattern="$ifc"
	if [[ -e "/sys/class/net/$ifc/device" ]]; then
		dev=$(basename "$(readlink -f "/sys/class/net/$ifc/device")")
		pattern="$pattern|$dev"
		# mlx5 names its queues after the PCI address, not the interface.
		pci=$(basename "$(readlink -f "/sys/class/net/$ifc/device/..")" 2>/dev/null || true)
		[[ "$pci" == *:* ]] && pattern="$pattern|$pci"
	fi
	while read -r irq; do
		nic_irqs+=("$irq")
	done < <(awk -v re="($pattern)" '$1 ~ /^[0-9]+:$/ && $NF ~ re && $NF !~ /config$/ { sub(":", "", $1); print $1 }' /proc/interrupts)
done

if ((${#nic_irqs[@]} == 0)); then
	echo "no NIC interrupts found for: ${ifaces[*]:-none} (a VM with a paravirtual NIC may use MSI lines named otherwise; see /proc/interrupts)"
fi

i=0
for irq in "${nic_irqs[@]}"; do
	cpu=${cpus[i % ${#cpus[@]}]}
	set_affinity "$irq" "$(cpu_mask "$cpu")" "NIC queue -> cpu $cpu"
	i=$((i + 1))
done

if [[ -n "$housekeeping" ]]; then
	read -r -a hk <<<"$(expand_list "$housekeeping")"
	mask=$(cpu_mask "${hk[@]}")
	for d in /proc/irq/[0-9]*; do
		irq=$(basename "$d")
		[[ " ${nic_irqs[*]} " == *" $irq "* ]] && continue
		[[ -w "$d/smp_affinity" ]] || continue
		set_affinity "$irq" "$mask" "other device -> housekeeping ${hk[*]}"
	done
fi

cat <<EOF

For full isolation of the shard cores (after a reboot), add to the kernel
command line, with SHARDS the cores the shards run on, e.g. 1-7:
  isolcpus=managed_irq,domain,SHARDS nohz_full=SHARDS rcu_nocbs=SHARDS irqaffinity=HOUSEKEEPING
and start tradsys with those cores in its CPU affinity (taskset or CPUAffinity=).
EOF
