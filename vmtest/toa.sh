#!/usr/bin/env bash
# toa.sh [--arm64] [--skip-multihost] [--only SUITE] ALIAS... - kmod/toa.ko on Debian
# kernels (5.10, 6.1, 6.12, sid) in QEMU. Per kernel: build toa.ko
# warning-free, then three boots, each failing on any FAIL line, oops,
# BUG:, WARNING: or timeout (vmtest/run.sh):
#   1. vmtest/toacheck: TOA from realip-edge's eBPF sender over loopback
#      (IPv4, IPv6, v4-mapped, NAT64 sockets), getpeername/accept, netlink
#      entries, the listener's TOA mode, an untrusted sender, the
#      toa_stats layout, unload with connections open;
#   2. vmtest/multihost: client, edge (the real realip-edge binary, toa
#      rules), origin and rogue hosts in network namespaces; on the origin
#      the C servers of vmtest/testdata/csamples (built static here),
#      examples/whoami -proto toa and a Go server must see the client, also
#      with syncookies forced; a forged option is ignored; thousands of
#      connections with concurrent getpeername(); unload under load;
#   3. vmtest/agent: realip-agent load, SIGHUP, refusal of a foreign
#      module, unload.
# --arm64 also cross-builds toa.ko for arm64 against each kernel's arm64
# headers (warning-free, vermagic and ELF machine checked; not booted).
# --skip-multihost leaves out boot 2. --only toa|multihost|agent boots just
# that suite (e.g. `vmtest/toa.sh --only multihost sid`; repeatable;
# vmtest/flake.sh loops one suite to count flakes). REALIP_MULTIHOST_CONNS
# sets the load phase's connection count (default 2000).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
arm64=0 multihost=1 only=()
while (($#)); do
	case $1 in
	--arm64) arm64=1; shift ;;
	--skip-multihost) multihost=0; shift ;;
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
[[ $# -gt 0 ]] || { echo "usage: vmtest/toa.sh [--arm64] [--skip-multihost] [--only SUITE] ALIAS... (5.10 6.1 6.12 sid)" >&2; exit 2; }
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
work=$(mktemp -d /tmp/realip-toa.XXXXXX)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%3N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

t0=$(now)
(
	cd "$root"
	export CGO_ENABLED=0
	go build -o "$work/toacheck" ./vmtest/toacheck
	go build -trimpath -o "$work/agent-vmtest" ./vmtest/agent
	if ((multihost)); then
		go build -trimpath -o "$work/mh/multihost" ./vmtest/multihost
		go build -trimpath -o "$work/mh/realip-edge" ./cmd/realip-edge
		go build -trimpath -o "$work/mh/whoami" ./examples/whoami
	fi
)
if ((multihost)); then
	for s in 4 6; do
		gcc -static -O2 -Wall -Wextra -Werror -o "$work/mh/toa_server$s" \
			"$here/testdata/csamples/toa_server$s.c"
	done
fi
echo "toa.sh: test programs built in $(since "$t0")s"

status=0
boot_opts=() # more run.sh options for the next boot
# boot NAME ALIAS TIMEOUT PATTERN CMD FILE...: one run.sh boot, its
# result lines prefixed with NAME ALIAS.
boot() {
	local name=$1 alias=$2 timeout=$3 pattern=$4 cmd=$5 log t
	shift 5
	log="$work/$alias-$name.log"
	t=$(now)
	if "$here/run.sh" "${boot_opts[@]}" --timeout "$timeout" --log "$log" --cmd "$cmd" "$alias" -- "$@"; then
		grep -E "$pattern" "$log" | sed "s/^/$name $alias: /"
		echo "$name $alias: passed in $(since "$t")s"
	else
		grep -E "$pattern" "$log" | sed "s/^/$name $alias: /" || true
		tail -60 "$log" >&2
		echo "$name $alias: FAILED after $(since "$t")s" >&2
		status=1
	fi
}

for alias in "$@"; do
	t=$(now)
	"$here/build-module.sh" "$alias" "$root/kmod" "$work/toa.ko"
	echo "toa.sh: toa.ko for $alias built in $(since "$t")s"
	boot_opts=(--kmod-if-any tls) # toacheck attaches kTLS to a taken-over socket
	if wanted toa; then
		boot toa "$alias" 240 '^(ok|FAIL) ' "/test/toacheck /test/toa.ko" "$work/toacheck" "$work/toa.ko"
	fi
	boot_opts=()
	if ((multihost)); then
		cp "$work/toa.ko" "$work/mh/toa.ko"
		boot multihost "$alias" 600 '^(ok|FAIL|info) ' "/test/multihost -conns $conns -timeout 570s" "$work/mh"
	fi
	if wanted agent; then
		boot agent "$alias" 240 '^(PASS|FAIL) ' "/test/agent-vmtest -module /test/toa.ko" "$work/agent-vmtest" "$work/toa.ko"
	fi
done

if ((arm64)); then
	for alias in "$@"; do
		t=$(now)
		out="$work/toa-$alias-arm64.ko"
		# build-module.sh fails on any warning and on a wrong vermagic.
		if "$here/build-module.sh" --arch arm64 "$alias" "$root/kmod" "$out" &&
			readelf -h "$out" | grep -q 'Machine:.*AArch64'; then
			echo "arm64 $alias: toa.ko built warning-free, $(modinfo -F vermagic "$out" 2>/dev/null ||
				strings "$out" | sed -n 's/^vermagic=//p' | head -n 1) ($(since "$t")s)"
		else
			echo "arm64 $alias: FAILED after $(since "$t")s" >&2
			status=1
		fi
	done
fi
echo "toa.sh: done in $(since "$t0")s"
exit $status
