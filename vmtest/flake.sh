#!/usr/bin/env bash
# flake.sh - count chance failures: boot the multihost suite (vmtest/toa.sh
# --only multihost) N times on one kernel and classify every boot.
#
#   usage: vmtest/flake.sh [--busy [--burners N]] [--conns N] [--out DIR] ALIAS BOOTS
#
# Builds toa.ko and the suite's programs once (as toa.sh does), then boots
# run.sh BOOTS times. Per boot one line: pass, or why it failed: kernel
# trouble after init (lib.sh's TROUBLE_RE: Oops, BUG:, WARNING:, a
# panic, a Call Trace, die()'s "[#N]" header), a suite FAIL,
# a timeout. Kernel trouble before init (nothing of ours had run yet) is
# counted apart from trouble after it.
#   --busy     keep the host busy during each boot: a CPU burner (a shell
#              loop) beside QEMU, as a developer machine or a second CI
#              job would; --burners N runs N of them (default 1). Two
#              flake.sh runs at once (say sid and 6.12) are also each
#              other's busy neighbour.
#   --conns N  the load phase's connection count (default 2000, as toa.sh)
#   --out DIR  keep every boot's console there (default: only the failing
#              ones, in CACHE/logs/flake-*)
# REALIP_VMTEST_TCG_THREAD=multi measures the old QEMU setting (lib.sh).
# The last line is the summary, e.g.
#   flake sid: 25 boots (busy, tcg thread=single, conns 2000): 25 passed,
#   0 kernel trouble (0 before init, 0 after), 0 suite FAIL, 0 timeouts
# Exit status 0 only when every boot passed.
set -euo pipefail
# shellcheck disable=SC2034 # read by lib.sh
PROG=flake
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

busy=0 burners=1 conns=2000 out=''
while (($#)); do
	case $1 in
	--busy) busy=1; shift ;;
	--burners) burners=${2:?--burners needs a number}; shift 2 ;;
	--conns) conns=${2:?--conns needs a number}; shift 2 ;;
	--out) out=${2:?--out needs a folder}; shift 2 ;;
	-h | --help) usage ;;
	-*) die "unknown option '$1' (see --help)" ;;
	*) break ;;
	esac
done
(($# == 2)) || usage
alias=$1 boots=$2
check_alias "$alias"
[[ $boots =~ ^[1-9][0-9]*$ ]] || die "BOOTS '$boots' is not a number"
[[ $conns =~ ^[1-9][0-9]*$ ]] || die "--conns '$conns' is not a number"
[[ $burners =~ ^[1-9][0-9]*$ ]] || die "--burners '$burners' is not a number"
need_cmd go gcc
mode=idle
((busy == 0)) || mode="busy, $burners burner(s)"
thread=${REALIP_VMTEST_TCG_THREAD:-single}
qemu_machine 2 # validates REALIP_VMTEST_TCG_THREAD

work=$(mktemp -d "${TMPDIR:-/tmp}/vmtest-flake.XXXXXX")
burner=()
cleanup() {
	if ((${#burner[@]})); then kill "${burner[@]}" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mh"
t=$(now)
(
	cd "$REPO_DIR"
	export CGO_ENABLED=0
	go build -trimpath -o "$work/mh/multihost" ./vmtest/multihost
	go build -trimpath -o "$work/mh/realip-edge" ./cmd/realip-edge
	go build -trimpath -o "$work/mh/whoami" ./examples/whoami
)
for s in 4 6; do
	gcc -static -O2 -Wall -Wextra -Werror -o "$work/mh/toa_server$s" "$VMTEST_DIR/testdata/csamples/toa_server$s.c"
done
"$VMTEST_DIR/build-module.sh" "$alias" "$REPO_DIR/kmod" "$work/mh/toa.ko" >&2
log "built in $(since "$t")s; $boots boots of multihost on $alias ($mode host, tcg thread=$thread, conns $conns)"
[[ -z $out ]] || mkdir -p "$out"
mkdir -p "$CACHE/logs"

passed=0 early=0 late=0 suite=0 timeouts=0 other=0 secs_all=()
stamp=$(date +%Y%m%d-%H%M%S)
for ((i = 1; i <= boots; i++)); do
	if ((busy)); then
		for ((b = 0; b < burners; b++)); do
			sh -c 'while :; do :; done' &
			burner+=($!)
		done
	fi
	blog=$work/boot.log rc=0 t=$(now)
	"$VMTEST_DIR/run.sh" --timeout 600 --log "$blog" \
		--cmd "/test/multihost -conns $conns -timeout 570s" "$alias" -- "$work/mh" >"$work/run.out" 2>&1 || rc=$?
	s=$(since "$t")
	if ((${#burner[@]})); then
		kill "${burner[@]}" 2>/dev/null || true
		wait "${burner[@]}" 2>/dev/null || true
		burner=()
	fi
	secs_all+=("$s")
	trouble=$(grep -m1 -E "$TROUBLE_RE" "$blog" || true)
	if ((rc == 0)); then
		verdict=pass passed=$((passed + 1))
	elif [[ -n $trouble ]] && broke_before_init "$blog"; then
		verdict="kernel trouble before init: $trouble" early=$((early + 1))
	elif [[ -n $trouble ]]; then
		verdict="kernel trouble after init: $trouble" late=$((late + 1))
	elif ((rc == 124)); then
		verdict=timeout timeouts=$((timeouts + 1))
	elif grep -q '^FAIL ' "$blog"; then
		verdict="suite: $(grep -m1 '^FAIL ' "$blog")" suite=$((suite + 1))
	else
		verdict="other: $(tail -n 1 "$work/run.out")" other=$((other + 1))
	fi
	keep=''
	if [[ -n $out ]]; then
		keep=$out/$alias-$i.log
	elif ((rc != 0)); then
		keep=$CACHE/logs/flake-$alias-$stamp-$i.log
	fi
	if [[ -n $keep ]]; then
		cp "$blog" "$keep"
		verdict+=" (log $keep)"
	fi
	printf 'flake %s: boot %d/%d %ss: %s\n' "$alias" "$i" "$boots" "$s" "$verdict"
done

median=$(printf '%s\n' "${secs_all[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
printf 'flake %s: %d boots (%s, tcg thread=%s, conns %d): %d passed, %d kernel trouble (%d before init, %d after), %d suite FAIL, %d timeouts, %d other; median %ss per boot\n' \
	"$alias" "$boots" "$mode" "$thread" "$conns" \
	"$passed" $((early + late)) "$early" "$late" "$suite" "$timeouts" "$other" "$median"
((passed == boots))
