#!/usr/bin/env bash
# What the eBPF TOA receiver (toarecv) costs an origin on this machine's own
# kernel, no VM: connections/s, CPU per connection, request latency (p50,
# p90) and getpeername() ns/call on sockets with and without TOA, with no
# receiver and with the receiver attached to the origin's cgroup, in one
# run of interleaved rounds (none ebpf, ebpf none, ...). Every round's
# figures, then per quantity the median ratio to "none" of the same round
# with its min/max. Targets (issue 13): connections/s within 3%,
# getpeername() on sockets without TOA within 10%.
#
#   bench/toarecv.sh                       # 40 rounds of 3 s, about 8 min
#   ROUNDS=20 WINDOW=2s bench/toarecv.sh
#   STATES=none,ebpf,hook bench/toarecv.sh # also empty getpeername programs:
#                                          # the hook's own cost, any receiver's floor
#
# It is vmtest/multihost -bench (see vmtest/multihost/bench.go), the same
# program bench/toa-vm.sh runs in QEMU, here in network namespaces of this
# machine: sender (edge/toasend) and origin (vmtest/testdata/csamples
# toa_server6, and the program's own listener) on a veth pair, each side in
# a cgroup of its own under realip-bench-PID at the cgroup v2 mount, the
# receiver pinned in /sys/fs/bpf/realip-bench-PID; all removed at the end,
# also when the bench is killed. Root. The machine's load before and after
# is printed: on a shared machine read the min/max beside each median.
#
# ROUNDS, WINDOW (whole seconds), CONC (concurrent clients), CALLS
# (getpeername calls per socket and round), STATES. The whole output goes to
# $OUT (default /tmp/toarecv-bench.txt).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-40} window=${WINDOW:-3s} conc=${CONC:-4} calls=${CALLS:-500000}
states=${STATES:-none,ebpf}
out=${OUT:-/tmp/toarecv-bench.txt}
[[ $rounds =~ ^[0-9]+$ && $conc =~ ^[0-9]+$ && $calls =~ ^[0-9]+$ ]] || { echo "toarecv.sh: ROUNDS, CONC, CALLS are numbers" >&2; exit 2; }
secs=${window%s}
[[ $secs =~ ^[0-9]+$ ]] || { echo "toarecv.sh: WINDOW is whole seconds, like 3s" >&2; exit 2; }
[[ $states != *kmod* ]] || { echo "toarecv.sh: this kernel loads no modules; kmod is measured by bench/toa-vm.sh" >&2; exit 2; }

name=realip-bench-$$
cgmnt=$(findmnt -n -t cgroup2 -o TARGET | head -n 1)
[[ -n $cgmnt ]] || { echo "toarecv.sh: no cgroup v2 mounted" >&2; exit 1; }
work=$(mktemp -d /tmp/toarecv-bench.XXXXXX)
# cleanup removes what a bench that was killed leaves behind: the processes
# in its cgroups (the bench and its C server, nothing else can be there),
# the cgroups, the pins.
cleanup() {
	local cg=$cgmnt/$name pid
	if [[ -d $cg ]]; then
		cat "$cg"/edge/cgroup.procs "$cg"/origin/cgroup.procs 2>/dev/null | while read -r pid; do
			kill "$pid" 2>/dev/null || true
		done
		for _ in $(seq 50); do
			rmdir "$cg"/edge "$cg"/origin "$cg" 2>/dev/null && break
			sleep 0.1
		done
	fi
	rm -rf "/sys/fs/bpf/$name" "$work"
}
trap cleanup EXIT

(cd "$root" && go build -trimpath -o "$work/multihost" ./vmtest/multihost)
gcc -O2 -Wall -Wextra -Werror -o "$work/toa_server6" "$root/vmtest/testdata/csamples/toa_server6.c"

# busy prints the machine's load and, since $1 (a /proc/stat cpu line), the
# share of its CPU time that was busy (this bench's included).
busy() {
	local now
	now=$(head -n 1 /proc/stat)
	echo "machine: load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs, $(pgrep -c qemu-system || true) QEMU processes running"
	[[ -z ${1:-} ]] || awk -v a="$1" -v b="$now" 'BEGIN {
		split(a, x); split(b, y); t = 0; idle = 0
		for (i = 2; i <= 11; i++) t += y[i] - x[i]
		idle = (y[5] - x[5]) + (y[6] - x[6])
		printf "machine: %.0f%% of all CPU time busy during the run\n", 100 * (t - idle) / t }'
}
start=$(head -n 1 /proc/stat)
busy | tee "$out"
timeout=$((120 + rounds * $(tr -cd , <<<"$states," | wc -c) * (secs + 20)))
"$work/multihost" -bench -states "$states" -bench-name "$name" -c6 "$work/toa_server6" \
	-rounds "$rounds" -window "$window" -conc "$conc" -calls "$calls" -timeout "${timeout}s" | tee -a "$out" | grep -Ev '^ok '
busy "$start" | tee -a "$out"
