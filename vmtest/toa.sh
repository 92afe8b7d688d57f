#!/usr/bin/env bash
# toa.sh ALIAS... - builds kmod/toa.ko for each Debian kernel alias (5.10,
# 6.1, 6.12, sid), boots it in QEMU and runs vmtest/toacheck in the guest:
# TOA sent by realip-edge's eBPF sender over IPv4, IPv6, v4-mapped and
# NAT64 sockets, getpeername/accept, the netlink entries, realip's listener
# in TOA mode, an untrusted sender, the toa_stats layout, and an unload
# with connections open that must free every entry; then agent/vmtest
# (realip-agent load, SIGHUP, refusal of a foreign module, unload) on the
# same kernel. The run fails on any
# FAIL line, oops, BUG:, WARNING: or timeout (vmtest/run.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
[[ $# -gt 0 ]] || { echo "usage: vmtest/toa.sh ALIAS... (5.10 6.1 6.12 sid)" >&2; exit 2; }
work=$(mktemp -d /tmp/realip-toa.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$root" && CGO_ENABLED=0 go build -o "$work/toacheck" ./vmtest/toacheck &&
	CGO_ENABLED=0 go build -trimpath -o "$work/agent-vmtest" ./agent/vmtest)
status=0
for alias in "$@"; do
	"$here/build-module.sh" "$alias" "$root/kmod" "$work/toa.ko"
	log="$work/$alias.log"
	if "$here/run.sh" --timeout 240 --log "$log" --cmd "/test/toacheck /test/toa.ko" "$alias" -- "$work/toacheck" "$work/toa.ko"; then
		grep -E '^(ok|FAIL) ' "$log" | sed "s/^/toa $alias: /"
	else
		grep -E '^(ok|FAIL) ' "$log" | sed "s/^/toa $alias: /" || true
		tail -60 "$log" >&2
		echo "toa $alias: FAILED" >&2
		status=1
	fi
	# realip-agent on the same kernel: load, SIGHUP, refusal, unload.
	alog="$work/$alias-agent.log"
	if "$here/run.sh" --timeout 240 --log "$alog" --cmd "/test/agent-vmtest -module /test/toa.ko" "$alias" -- "$work/agent-vmtest" "$work/toa.ko"; then
		grep -E '^(PASS|FAIL) ' "$alog" | sed "s/^/agent $alias: /"
	else
		tail -60 "$alog" >&2
		echo "agent $alias: FAILED" >&2
		status=1
	fi
done
exit $status
