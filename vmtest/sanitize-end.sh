#!/bin/sh
# sanitize-end.sh - run in the guest (busybox sh) by vmtest/toa.sh at the
# end of every boot of the sanitizer kernel (alias debug), after the
# suites, toa.ko unloaded: proof that the sanitizers were still on, and
# kmemleak's scan.
#
# - toa.ko must be gone (each suite unloads it);
# - lockdep must still be validating (/proc/lockdep_stats debug_locks 1:
#   lockdep switches itself off after its first report, or when a limit is
#   hit, and would then prove nothing about the rest of the run);
# - kmemleak scans twice, 5 s apart (an object is reported only once it is
#   older than 5 s and unreferenced), and its report is printed on the
#   console, where the harness fails the boot on "unreferenced object";
# - KASAN and KFENCE: KFENCE's counters (how many allocations it guarded,
#   and its bugs) are printed; KASAN has no counter, its reports are on the
#   console (BUG: KASAN).
# Lines start with "sanitizers: "; exit 1 when a check fails. Nothing here
# prints the words the harness looks for unless the kernel did.
fail=0
say() { echo "sanitizers: $*"; }
bad() { say "FAIL $*"; fail=1; }

if grep -q '^toa ' /proc/modules; then
	bad "toa.ko still loaded at the end of the boot"
fi
# stat FILE NAME: the number after "NAME:" in FILE (lockdep_stats,
# kfence/stats: "name:   value [...]")
stat() { sed -n "s/^ *$2: *\([0-9]*\).*/\1/p" "$1" 2>/dev/null | head -n 1; }
ls=/proc/lockdep_stats
if [ "$(stat $ls debug_locks)" = 1 ]; then
	say "lockdep still on (debug_locks 1), $(stat $ls lock-classes) lock classes, $(stat $ls 'dependency chains') dependency chains"
else
	bad "lockdep is off at the end (debug_locks '$(stat $ls debug_locks)'; see the console for why)"
fi
ml=/sys/kernel/debug/kmemleak
if [ -w $ml ] && echo scan >$ml; then
	sleep 5
	if echo scan >$ml; then
		n=$(grep -c '^unreferenced object' $ml)
		cat $ml
		if [ "$n" = 0 ]; then
			say "kmemleak scanned twice after the unload: nothing reported"
		else
			bad "kmemleak reported $n objects (above)"
		fi
	else
		bad "kmemleak's second scan failed"
	fi
else
	bad "kmemleak is not running (no $ml, or its scan failed)"
fi
kf=/sys/kernel/debug/kfence/stats
if [ "$(stat $kf enabled)" = 1 ]; then
	say "kfence guarded $(stat $kf 'total allocations') allocations, $(stat $kf 'total bugs') bugs"
	[ "$(stat $kf 'total bugs')" = 0 ] || bad "kfence counted bugs (see the console)"
else
	bad "KFENCE is not enabled (no $kf, or enabled 0)"
fi
exit $fail
