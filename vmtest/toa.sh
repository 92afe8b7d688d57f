#!/usr/bin/env bash
# toa.sh [--arm64] [--arch A] [--parallel] [--skip-multihost] [--only SUITE]
# [--receiver R] ALIAS... - the TOA receivers (kmod/toa.ko, the eBPF receiver toarecv) on
# Debian kernels (5.10, 6.1, 6.12, sid) in QEMU. Per kernel and
# architecture: build toa.ko warning-free, then three boots, each failing
# on any FAIL line, oops, BUG:, WARNING: or timeout (vmtest/run.sh):
#   1. vmtest/toacheck: TOA from realip-edge's eBPF sender over loopback
#      (IPv4, IPv6, v4-mapped, NAT64 sockets), getpeername/accept, the
#      receiver's entries, the listener's TOA mode, an untrusted sender,
#      refused options, the counters' layout, stop (unload, or unpin) with
#      connections open, start again;
#   2. vmtest/multihost: client, edge (the real realip-edge binary, toa
#      rules), origin and rogue hosts in network namespaces; on the origin
#      the C servers of vmtest/testdata/csamples (built static here),
#      examples/whoami -proto toa and a Go server must see the client, also
#      with syncookies forced; a forged option is ignored; thousands of
#      connections with concurrent getpeername(); unload (or detach)
#      under load;
#   3. vmtest/agent: realip-agent load, SIGHUP, refusal of a foreign
#      module, unload.
# Boots 1 and 2 test both TOA receivers, toa.ko (kmod) and the eBPF
# receiver (ebpf, toarecv), one after the other in the same guest: the
# same table of cases, whose rows where the two must differ are printed
# first (`toacheck -table`, `multihost -table`). toacheck attaches the
# eBPF receiver to the root cgroup, multihost to the origin's cgroup;
# multihost's unload under load is then a detach under load.
# --receiver kmod|ebpf (repeatable) runs boots 1 and 2 with those only.
# --arm64 does all of it on arm64 too, after amd64: toa.ko cross-built
# against the kernel's arm64 headers (warning-free, vermagic and ELF machine
# checked), the Go programs built with GOARCH=arm64, the C servers with
# aarch64-linux-gnu-gcc -static, and the same three boots, with the same
# arguments, in qemu-system-aarch64 -M virt (TCG) on Debian's arm64 kernel
# of the same alias. --arch amd64|arm64 (repeatable) picks the
# architectures instead (`--arch arm64`: arm64 only). --parallel boots
# the two architectures side by side (two guests at a time, one host
# thread each; `make vmtest` does, on 2 cores), each one's lines shown
# when its last kernel is done; the debug kernel is a chain of its own. REALIP_ARM64_TIMEOUT_X
# multiplies arm64's boot timeouts (default 3: TCG emulates arm64 on this
# x86 host, see vmtest/README.md "arm64 guests").
# --skip-multihost leaves out boot 2. --only toa|multihost|agent boots just
# that suite (e.g. `vmtest/toa.sh --only multihost sid`; repeatable;
# vmtest/flake.sh loops one suite to count flakes). REALIP_MULTIHOST_CONNS
# sets the load phase's connection count (default 2000);
# REALIP_MULTIHOST_CONNS_ARM64 sets arm64's (default: the same).
# ALIAS debug is the sanitizer kernel (vmtest/debug-kernel.sh: bookworm's
# 6.1 source with KASAN, lockdep, kmemleak, debug objects, KFENCE, UBSAN;
# amd64 only, built once per machine): the same boots with 2 GiB of guest
# memory, REALIP_DEBUG_TIMEOUT_X (default 6) times the timeouts,
# REALIP_MULTIHOST_CONNS_DEBUG connections (default 400)
# and REALIP_MULTIHOST_CHECKERS_DEBUG getpeername() threads (default 8),
# and at the end of each boot vmtest/sanitize-end.sh (lockdep still on,
# two kmemleak scans after the unload, KFENCE's counters). Any sanitizer
# report fails the boot (DEBUG_TROUBLE_RE in vmtest/lib.sh). Before them,
# a boot of testdata/hello with a use-after-free, a lock inversion and a
# leak must fail with KASAN's, lockdep's and kmemleak's reports.
# --meanwhile CMD runs the shell command CMD beside the sanitizer chain,
# from the moment every other chain has ended (without --parallel or a
# debug alias: after the last boot): the sanitizer kernel's boots are the
# longest, and alone they leave one of two cores idle. `make check` runs
# its packages test so. CMD's output is shown after the chains', and its
# failure fails toa.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
multihost=1 parallel=0 only=() arches=() receivers=() meanwhile=''
while (($#)); do
	case $1 in
	--arm64) arches+=(amd64 arm64); shift ;;
	--arch)
		case ${2:-} in
		amd64 | arm64) arches+=("$2"); shift 2 ;;
		*) echo "toa.sh: --arch wants amd64 or arm64, not '${2:-}'" >&2; exit 2 ;;
		esac
		;;
	--skip-multihost) multihost=0; shift ;;
	--parallel) parallel=1; shift ;;
	--meanwhile)
		[[ -n ${2:-} ]] || { echo "toa.sh: --meanwhile wants a command" >&2; exit 2; }
		meanwhile=$2
		shift 2
		;;
	--receiver)
		case ${2:-} in
		kmod | ebpf) receivers+=("$2"); shift 2 ;;
		*) echo "toa.sh: --receiver wants kmod or ebpf, not '${2:-}'" >&2; exit 2 ;;
		esac
		;;
	--only)
		case ${2:-} in
		toa | multihost | agent) only+=("$2"); shift 2 ;;
		*) echo "toa.sh: --only wants toa, multihost or agent, not '${2:-}'" >&2; exit 2 ;;
		esac
		;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "toa.sh: unknown option '$1'" >&2; exit 2 ;;
	*) break ;;
	esac
done
[[ $# -gt 0 ]] || { echo "usage: vmtest/toa.sh [--arm64] [--arch A] [--parallel] [--meanwhile CMD] [--skip-multihost] [--only SUITE] [--receiver kmod|ebpf] ALIAS... (5.10 6.1 6.12 sid debug)" >&2; exit 2; }
# the architectures, amd64 first, each once
want_arches=("${arches[@]}")
arches=()
((${#want_arches[@]})) || want_arches=(amd64)
for a in amd64 arm64; do
	if [[ " ${want_arches[*]} " == *" $a "* ]]; then arches+=("$a"); fi
done
# the receivers, kmod first, each once
want_receivers=("${receivers[@]}")
receivers=()
((${#want_receivers[@]})) || want_receivers=(kmod ebpf)
for r in kmod ebpf; do
	if [[ " ${want_receivers[*]} " == *" $r "* ]]; then receivers+=("$r"); fi
done
# per_receiver CMD: a guest command line running CMD once per receiver
# (CMD's RECEIVER replaced by it), all of them, failing if any failed.
per_receiver() {
	local r out='rc=0;'
	for r in "${receivers[@]}"; do
		out+=" ${1//RECEIVER/$r} || rc=1;"
	done
	# shellcheck disable=SC2016 # $rc is the guest shell's
	printf '%s exit $rc' "$out"
}
# wanted SUITE: whether this run boots SUITE.
wanted() {
	((${#only[@]} == 0)) || [[ " ${only[*]} " == *" $1 "* ]]
}
if ((${#only[@]})); then
	multihost=0
	if wanted multihost; then multihost=1; fi
fi
conns=${REALIP_MULTIHOST_CONNS:-2000}
[[ $conns =~ ^[0-9]+$ ]] || { echo "toa.sh: REALIP_MULTIHOST_CONNS='$conns' is not a number" >&2; exit 2; }
conns_arm64=${REALIP_MULTIHOST_CONNS_ARM64:-$conns}
[[ $conns_arm64 =~ ^[0-9]+$ ]] || { echo "toa.sh: REALIP_MULTIHOST_CONNS_ARM64='$conns_arm64' is not a number" >&2; exit 2; }
tx_arm64=${REALIP_ARM64_TIMEOUT_X:-3}
[[ $tx_arm64 =~ ^[1-9][0-9]*$ ]] || { echo "toa.sh: REALIP_ARM64_TIMEOUT_X='$tx_arm64' is not a whole factor" >&2; exit 2; }
# the debug kernel runs everything about 16 times slower than Debian's 6.1
# (KASAN, lockdep, kmemleak under TCG): 2000 connections took 9 min there,
# with resets and timeouts of its own; 400 keep 400 entries live through
# the unload under load, with the getpeername() threads below
conns_debug=${REALIP_MULTIHOST_CONNS_DEBUG:-400}
[[ $conns_debug =~ ^[0-9]+$ ]] || { echo "toa.sh: REALIP_MULTIHOST_CONNS_DEBUG='$conns_debug' is not a number" >&2; exit 2; }
checkers_debug=${REALIP_MULTIHOST_CHECKERS_DEBUG:-8}
[[ $checkers_debug =~ ^[1-9][0-9]*$ ]] || { echo "toa.sh: REALIP_MULTIHOST_CHECKERS_DEBUG='$checkers_debug' is not a number" >&2; exit 2; }
tx_debug=${REALIP_DEBUG_TIMEOUT_X:-6}
[[ $tx_debug =~ ^[1-9][0-9]*$ ]] || { echo "toa.sh: REALIP_DEBUG_TIMEOUT_X='$tx_debug' is not a whole factor" >&2; exit 2; }
work=$(mktemp -d /tmp/realip-toa.XXXXXX)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%3N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# build_progs ARCH: the guest's programs for ARCH into $work/ARCH: static
# Go programs (CGO_ENABLED=0 GOARCH=ARCH) and the C servers (static, the
# host's gcc or Debian's aarch64-linux-gnu-gcc cross compiler).
build_progs() {
	local arch=$1 dir=$work/$1 cc=gcc
	[[ $arch == amd64 ]] || cc=aarch64-linux-gnu-gcc
	(
		cd "$root"
		export CGO_ENABLED=0 GOARCH=$arch
		go build -o "$dir/toacheck" ./vmtest/toacheck
		go build -trimpath -o "$dir/agent-vmtest" ./vmtest/agent
		if ((multihost)); then
			go build -trimpath -o "$dir/mh/multihost" ./vmtest/multihost
			go build -trimpath -o "$dir/mh/realip-edge" ./cmd/realip-edge
			go build -trimpath -o "$dir/mh/whoami" ./examples/whoami
		fi
	)
	if ((multihost)); then
		command -v "$cc" >/dev/null || { echo "toa.sh: $cc missing: scripts/deps.sh gcc-aarch64-linux-gnu libc6-dev-arm64-cross" >&2; exit 1; }
		for s in 4 6; do
			"$cc" -static -O2 -Wall -Wextra -Werror -o "$dir/mh/toa_server$s" \
				"$here/testdata/csamples/toa_server$s.c"
		done
	fi
}

t0=$(now)
for arch in "${arches[@]}"; do
	build_progs "$arch"
done
echo "toa.sh: test programs built for ${arches[*]} in $(since "$t0")s"
# The sanitizer kernel's boots get a folder of their own, a copy of
# amd64's programs made before any chain starts: toa.ko is built per
# kernel into the folder (and copied into its mh/), so with --parallel the
# amd64 chain would replace the debug chain's toa.ko under it (CI caught
# "toa.ko is built for 7.2.13+deb14-amd64, the guest runs
# 6.1.192-realip-debug").
if [[ " $* " == *" debug "* && -d $work/amd64 ]]; then
	cp -a "$work/amd64" "$work/amd64-debug"
fi
# The cases, as each receiver must pass them (the host runs the amd64
# build: static, no kernel needed to print a table).
if ((${#receivers[@]} == 2)) && [[ -x $work/amd64/toacheck ]]; then
	if wanted toa; then "$work/amd64/toacheck" -table | sed 's/^/toacheck table: /'; fi
	if ((multihost)); then "$work/amd64/mh/multihost" -table | sed 's/^/multihost table: /'; fi
fi

status=0
boot_opts=() # more run.sh options for the next boot
debug=0      # 1 while booting the sanitizer kernel (alias debug)
# guest CMD: the guest's command line for CMD; on the sanitizer kernel,
# vmtest/sanitize-end.sh runs after it (whatever CMD's result), and the
# boot fails if either failed.
guest() {
	if ((debug)); then
		# shellcheck disable=SC2016 # $rc is the guest shell's
		printf 'rc=0; (%s) || rc=1; sh /test/sanitize-end.sh || rc=1; exit $rc' "$1"
	else
		printf '%s' "$1"
	fi
}
# boot NAME TAG TIMEOUT PATTERN CMD FILE...: one run.sh boot of $alias on
# $arch, its result lines prefixed with NAME TAG.
boot() {
	local name=$1 tag=$2 timeout=$3 pattern=$4 cmd=$5 log t
	shift 5
	log="$work/$alias-$arch-$name.log"
	t=$(now)
	if ((debug)); then
		# the sanitizers' end-of-boot lines, and every load and unload
		pattern="$pattern|^sanitizers: |toa: (realip TOA .* loaded|unloaded)"
		set -- "$@" "$here/sanitize-end.sh"
	fi
	if "$here/run.sh" --arch "$arch" "${boot_opts[@]}" --timeout "$timeout" --log "$log" \
		--cmd "$(guest "$cmd")" "$alias" -- "$@"; then
		grep -E "$pattern" "$log" | sed "s|^|$name $tag: |"
		if ((debug)); then
			echo "$name $tag: toa.ko loaded $(grep -cE 'toa: realip TOA .* loaded' "$log") times," \
				"unloaded $(grep -c 'toa: unloaded' "$log") times; no sanitizer report"
		fi
		echo "$name $tag: passed in $(since "$t")s"
	else
		grep -E "$pattern" "$log" | sed "s|^|$name $tag: |" || true
		tail -60 "$log" >&2
		echo "$name $tag: FAILED after $(since "$t")s" >&2
		status=1
	fi
}

# build_ko: toa.ko for $alias on $arch into $dir/toa.ko (build-module.sh
# fails on any warning and on a wrong vermagic; a cross build must be an
# AArch64 ELF).
build_ko() {
	local t out=$dir/toa.ko
	t=$(now)
	if ! "$here/build-module.sh" --arch "$arch" "$alias" "$root/kmod" "$out"; then
		echo "toa.sh: toa.ko for $tag: build FAILED after $(since "$t")s" >&2
		return 1
	fi
	if [[ $arch == arm64 ]] && ! readelf -h "$out" | grep -q 'Machine:.*AArch64'; then
		echo "toa.sh: toa.ko for $tag is not an AArch64 ELF" >&2
		return 1
	fi
	echo "toa.sh: toa.ko for $tag built warning-free in $(since "$t")s," \
		"vermagic $(strings "$out" | sed -n 's/^vermagic=//p' | head -n 1)"
}

# prove_sanitizers: on the sanitizer kernel, before toa.ko's boots, one
# boot of testdata/hello with a use-after-free, a lock inversion and a
# leak (uaf=1 lockorder=1 leak=1) must fail, with KASAN's, lockdep's and
# kmemleak's report each on the console: the detectors and the harness's
# reading of them work, so the boots after it passing means something.
prove_sanitizers() {
	local t log=$work/debug-proof.log ko=$dir/hello.ko want missing=() rc=0
	t=$(now)
	"$here/build-module.sh" debug "$here/testdata/hello" "$ko" || return 1
	"$here/run.sh" "${mem[@]}" --timeout $((240 * x)) --log "$log" \
		--cmd "$(guest 'insmod /test/hello.ko uaf=1 lockorder=1 leak=1 && rmmod hello')" \
		debug -- "$ko" "$here/sanitize-end.sh" >"$work/debug-proof.out" 2>&1 || rc=$?
	if ((rc == 0 || rc == 124)); then
		cat "$work/debug-proof.out" >&2
		echo "proof debug: FAILED: a boot with a use-after-free, a lock inversion and a leak $( ((rc)) && echo timed out || echo passed)" >&2
		return 1
	fi
	for want in 'BUG: KASAN: [a-z-]*use-after-free in hello' 'WARNING: possible circular locking dependency detected' \
		'unreferenced object 0x[0-9a-f]+ \(size 64\)'; do
		if grep -qE "$want" "$log"; then
			echo "proof debug: $(grep -m 1 -oE "$want" "$log")"
		else
			missing+=("$want")
		fi
	done
	if ((${#missing[@]})); then
		tail -n 80 "$log" >&2
		printf 'proof debug: FAILED: no report matching %s\n' "${missing[@]}" >&2
		return 1
	fi
	echo "proof debug: the boot failed as it must: $(grep -m 1 'FAIL after' "$work/debug-proof.out" | sed 's/.*FAIL after [0-9.]*s: //; s/ (log .*//') ($(since "$t")s)"
}

# kernels ARCH ALIAS...: toa.ko and the boots for each kernel on ARCH, one
# kernel after the other; returns 1 when anything failed.
kernels() {
	local arch=$1 alias dir tag x n mem mhopts
	shift
	for alias; do
		dir=$work/$arch tag=$alias x=1 n=$conns debug=0 mem=() mhopts=''
		if [[ $alias == debug ]]; then
			if [[ $arch != amd64 ]]; then
				echo "toa.sh: debug (the sanitizer kernel) is amd64 only: not booted on $arch"
				continue
			fi
			# KASAN's shadow is an eighth of memory, kmemleak and lockdep
			# keep their own tables, and everything runs several times
			# slower under TCG
			# kasan_multi_shot: every KASAN report, not the first only
			debug=1 x=$tx_debug n=$conns_debug mem=(--mem 2G --append kasan_multi_shot)
			dir=$work/$arch-debug
			mhopts="-checkers $checkers_debug"
		fi
		if [[ $arch == arm64 ]]; then
			tag=$alias/arm64 x=$tx_arm64 n=$conns_arm64
		fi
		build_ko || { status=1; continue; }
		if ((debug)); then prove_sanitizers || status=1; fi
		boot_opts=("${mem[@]}" --kmod-if-any tls) # toacheck attaches kTLS to a taken-over socket
		if wanted toa; then
			boot toa "$tag" $((240 * x * ${#receivers[@]})) '^(ok|FAIL) |^toacheck: ' \
				"$(per_receiver "/test/toacheck -receiver RECEIVER -module /test/toa.ko")" "$dir/toacheck" "$dir/toa.ko"
		fi
		boot_opts=("${mem[@]}")
		if ((multihost)); then
			cp "$dir/toa.ko" "$dir/mh/toa.ko"
			boot multihost "$tag" $((600 * x * ${#receivers[@]})) '^(ok|FAIL|info) ' \
				"$(per_receiver "/test/multihost -receiver RECEIVER -conns $n ${mhopts:+$mhopts }-timeout $((600 * x - 30))s")" "$dir/mh"
		fi
		if wanted agent; then
			boot agent "$tag" $((240 * x)) '^(PASS|FAIL) ' "/test/agent-vmtest -module /test/toa.ko" "$dir/agent-vmtest" "$dir/toa.ko"
		fi
	done
	return "$status"
}

# with --parallel: chains of boots side by side, one per architecture, and
# the sanitizer kernel (debug) in a chain of its own, its boots being the
# longest; each guest runs its vCPUs on one host thread, so two guests keep
# two cores busy. Each chain's output is shown when it ends, in order.
chains=() # "ARCH ALIAS..." per chain
if ((parallel)); then
	others=() with_debug=0
	for alias in "$@"; do
		if [[ $alias == debug && " ${arches[*]} " == *" amd64 "* ]]; then with_debug=1; else others+=("$alias"); fi
	done
	if ((${#others[@]})); then
		for arch in "${arches[@]}"; do chains+=("$arch ${others[*]}"); done
	fi
	if ((with_debug)); then chains+=("amd64 debug"); fi
fi
# start_meanwhile: --meanwhile's command in the background (output in
# $work/meanwhile.out), when there is one.
meanwhile_pid=''
start_meanwhile() {
	[[ -n $meanwhile ]] || return 0
	echo "toa.sh: --meanwhile starts after $(since "$t0")s: $meanwhile"
	bash -c "$meanwhile" >"$work/meanwhile.out" 2>&1 &
	meanwhile_pid=$!
}
if ((${#chains[@]} > 1)); then
	pids=()
	for i in "${!chains[@]}"; do
		# shellcheck disable=SC2086 # "ARCH ALIAS..." split on purpose
		kernels ${chains[$i]} >"$work/chain$i.out" 2>&1 &
		pids+=("$!")
	done
	for i in "${!chains[@]}"; do
		# the debug chain, when there is one, is the last
		if [[ ${chains[$i]} == "amd64 debug" ]]; then start_meanwhile; fi
		wait "${pids[$i]}" || status=1
		cat "$work/chain$i.out"
	done
else
	for alias in "$@"; do
		for arch in "${arches[@]}"; do
			kernels "$arch" "$alias" || status=1
		done
	done
fi
if [[ -n $meanwhile && -z $meanwhile_pid ]]; then start_meanwhile; fi
if [[ -n $meanwhile_pid ]]; then
	mrc=0
	wait "$meanwhile_pid" || mrc=$?
	cat "$work/meanwhile.out"
	if ((mrc)); then
		echo "toa.sh: --meanwhile FAILED (exit $mrc): $meanwhile" >&2
		status=1
	else
		echo "toa.sh: --meanwhile passed: $meanwhile"
	fi
fi
echo "toa.sh: done in $(since "$t0")s"
exit $status
