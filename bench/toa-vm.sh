#!/usr/bin/env bash
# What toa.ko costs an origin, measured in QEMU (TCG) on a Debian kernel:
# connections/s, request latency (p50, p90) and getpeername() cost with
# the module loaded vs not loaded, in one guest boot, interleaved rounds
# (ABBA), every round's figures and the median loaded/unloaded ratio with
# its spread. The target is within 3%; TCG on a shared machine spreads
# single rounds by about ±30%, so it takes about 40 rounds (~6 minutes) for
# the median to resolve 3%: read the spread before the median. See
# vmtest/multihost/bench.go.
#
#   bench/toa-vm.sh                   # 6.1, 40 rounds of 3 s
#   ROUNDS=20 WINDOW=5s KVER=sid bench/toa-vm.sh
#
# ROUNDS, WINDOW (per connection test), CONC (concurrent clients), CALLS
# (getpeername calls per round), KVER (5.10, 6.1, 6.12, sid). Root; uses
# the vmtest cache ($REALIP_CACHE, default /var/cache/realip/vmtest). The
# whole console log goes to $OUT (default /tmp/toa-vm-bench.txt).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export REALIP_CACHE=${REALIP_CACHE:-/var/cache/realip/vmtest}
kver=${KVER:-6.1} rounds=${ROUNDS:-40} window=${WINDOW:-3s} conc=${CONC:-4} calls=${CALLS:-200000}
out=${OUT:-/tmp/toa-vm-bench.txt}
[[ $rounds =~ ^[0-9]+$ && $conc =~ ^[0-9]+$ && $calls =~ ^[0-9]+$ ]] || { echo "toa-vm.sh: ROUNDS, CONC, CALLS are numbers" >&2; exit 2; }
secs=${window%s}
[[ $secs =~ ^[0-9]+$ ]] || { echo "toa-vm.sh: WINDOW is whole seconds, like 3s" >&2; exit 2; }

work=$(mktemp -d /tmp/toa-vm-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/guest"
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$work/guest/multihost" ./vmtest/multihost)
gcc -static -O2 -Wall -Wextra -Werror -o "$work/guest/toa_server6" "$root/vmtest/testdata/csamples/toa_server6.c"
"$root/vmtest/build-module.sh" "$kver" "$root/kmod" "$work/guest/toa.ko"
# a round: two states, each a warm-up, the window, the getpeername loop
# and a load or unload; TCG is slow, so be generous.
timeout=$((120 + rounds * 2 * (secs + 15)))
"$root/vmtest/run.sh" --timeout "$timeout" --log "$out" \
	--cmd "/test/multihost -bench -rounds $rounds -window $window -conc $conc -calls $calls -timeout $((timeout - 30))s" \
	"$kver" -- "$work/guest"
grep -E '^(bench|result|FAIL)' "$out"
