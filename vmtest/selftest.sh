#!/usr/bin/env bash
# selftest.sh - prove the vmtest harness end to end on real Debian kernels.
#
#   usage: vmtest/selftest.sh [--arm64] [--no-negative] [ALIAS...]
#          (default: 6.1 sid; "all" = 5.10 6.1 6.12 sid)
#
# Per alias: fetch the kernel, build testdata/hello (a module with a
# parameter) exactly as kmod/toa.ko is built, boot it in QEMU with the module
# and a static Go binary (testdata/netcheck), and in the guest: insmod with
# a parameter, check dmesg and /sys/module/hello/parameters, rmmod, check
# cgroup2/bpffs/veth, then a netns + veth pair with ping and TCP both ways.
# On the first alias it also proves that run.sh catches failures, each
# after one boot (no second boot after init): a failing command, a kernel
# WARNING (hello warn=1), an oops after init (hello int3=1: a stray int3,
# the shape of the old TCG flake), a kernel panic after init (sysrq c), a
# taint outside the allowed mask, and a timeout (--no-negative skips these
# six boots).
# --arm64 also cross-builds hello for arm64 6.1. Prints a table of sizes and
# timings and a closing "N passed, N failed" line; exits 1 if any failed.
set -euo pipefail
# shellcheck disable=SC2034 # read by lib.sh
PROG=selftest
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

arm64=0 negative=1 aliases=()
for a; do
	case $a in
	--arm64) arm64=1 ;;
	--no-negative) negative=0 ;;
	all) aliases+=(5.10 6.1 6.12 sid) ;;
	-h | --help) usage ;;
	-*) die "unknown option '$a'" ;;
	*) check_alias "$a"; aliases+=("$a") ;;
	esac
done
((${#aliases[@]})) || aliases=(6.1 sid)
need_cmd go

work=$(mktemp -d "${TMPDIR:-/tmp}/vmtest-selftest.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "building testdata/netcheck (static)"
(cd "$REPO_DIR" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$work/netcheck" ./vmtest/testdata/netcheck)

passed=0 failed=0
rows=()
for alias in "${aliases[@]}"; do
	log "=== $alias"
	fetch_s=- build_s=- boot_s=- kver='?' mib='?' result=FAIL
	t=$(now)
	if kdir=$("$VMTEST_DIR/fetch.sh" "$alias"); then
		fetch_s=$(since "$t")
		# shellcheck source=/dev/null
		. "$kdir/vmtest.env"
		kver=${KVER:?} mib=$((DOWNLOAD_BYTES / 1048576))
		t=$(now)
		if "$VMTEST_DIR/build-module.sh" "$alias" "$VMTEST_DIR/testdata/hello" "$work/$alias/hello.ko"; then
			build_s=$(since "$t")
			t=$(now)
			if "$VMTEST_DIR/run.sh" --log "$work/$alias.log" "$alias" -- \
				"$VMTEST_DIR/testdata/selftest-in-vm.sh:/test/run-in-vm" \
				"$work/$alias/hello.ko" "$work/netcheck"; then
				result=PASS
			fi
			boot_s=$(since "$t")
			grep -E '^(selftest|netcheck):' "$work/$alias.log" | sed 's/^/  /' >&2 || true
			mkdir -p "$CACHE/logs"
			cp "$work/$alias.log" "$CACHE/logs/selftest-$alias.log"
		fi
	fi
	if [[ $result == PASS ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
	rows+=("$(printf '%-6s %-22s %8s %9s %9s %10s  %s' "$alias" "$kver" "$mib" "$fetch_s" "$build_s" "$boot_s" "$result")")
done

# expect_fail NAME WANT_RC WANT_TEXT RUN_ARGS...: run.sh must exit WANT_RC
# and say WANT_TEXT, after one boot: each of these fails after init, which
# run.sh must judge, never boot around.
expect_fail() {
	local name=$1 want_rc=$2 want_text=$3 rc=0 t
	shift 3
	t=$(now)
	rm -f "$work"/neg.log*
	"$VMTEST_DIR/run.sh" --log "$work/neg.log" "$@" >"$work/neg.out" 2>&1 || rc=$?
	if ((rc == want_rc)) && grep -q -- "$want_text" "$work/neg.out" &&
		[[ $(grep -c 'booting' "$work/neg.out") == 1 ]] && ! compgen -G "$work/neg.log.*" >/dev/null; then
		passed=$((passed + 1))
		rows+=("$(printf '%-6s %-22s %8s %9s %9s %10s  %s' "$alias" "$name" - - - "$(since "$t")" "PASS (caught: exit $rc)")")
	else
		failed=$((failed + 1))
		tail -n 20 "$work/neg.out" >&2
		rows+=("$(printf '%-6s %-22s %8s %9s %9s %10s  %s' "$alias" "$name" - - - "$(since "$t")" "FAIL (exit $rc, want $want_rc with '$want_text')")")
	fi
}
alias=${aliases[0]}
if ((negative)) && [[ -f $work/$alias/hello.ko ]]; then
	log "=== $alias: run.sh must catch failures"
	ko=$work/$alias/hello.ko
	expect_fail "neg: exit 3" 1 "test command failed (status=3)" --cmd 'exit 3' "$alias"
	expect_fail "neg: WARN" 1 "kernel trouble" --cmd 'insmod /test/hello.ko warn=1' "$alias" -- "$ko"
	# Oopses after init: the int3 shape of the old TCG flake, in our module,
	# and a panic of the kernel's own (sysrq c) with no module at all.
	expect_fail "neg: int3 oops" 1 "kernel trouble in the console: .*int3: 0000 \[#1\]" --cmd 'insmod /test/hello.ko int3=1' "$alias" -- "$ko"
	expect_fail "neg: sysrq crash" 1 "kernel trouble" --cmd 'echo c >/proc/sysrq-trigger' "$alias"
	expect_fail "neg: taint" 1 "kernel tainted" --allow-taint 0 --cmd 'insmod /test/hello.ko' "$alias" -- "$ko"
	expect_fail "neg: timeout" 124 "timed out" --timeout 20 --cmd 'sleep 600' "$alias"
fi

if ((arm64)); then
	log "=== 6.1 arm64 cross build"
	t=$(now) result=FAIL
	if "$VMTEST_DIR/build-module.sh" --arch arm64 6.1 "$VMTEST_DIR/testdata/hello" "$work/arm64/hello.ko"; then
		if od -An -tx1 -j18 -N2 "$work/arm64/hello.ko" | grep -q 'b7 00'; then
			result=PASS # e_machine 183 = EM_AARCH64
		else
			log "arm64 hello.ko is not an AArch64 ELF"
		fi
	fi
	if [[ $result == PASS ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
	rows+=("$(printf '%-6s %-22s %8s %9s %9s %10s  %s' 6.1 "$(cat "$CACHE/aliases/6.1-arm64" 2>/dev/null || echo ?)" - - "$(since "$t")" - "$result (arm64 build only)")")
fi

printf '\n%-6s %-22s %8s %9s %9s %10s  %s\n' alias kernel 'dl MiB' 'fetch s' 'build s' 'boot+run s' result
printf '%s\n' "${rows[@]}"
printf '(fetch s is 0.x when cached; dl MiB is what the first fetch downloaded; logs in %s/logs)\n' "$CACHE"
echo "$passed passed, $failed failed"
((failed == 0))
