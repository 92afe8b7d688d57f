#!/usr/bin/env bash
# demo.sh - the whole chain on one machine: a client, realip-edge and an origin
# in three network namespaces, one rule per IP passing mode (TCP and UDP,
# IPv4 and IPv6 clients), and a table of the client's own address next to
# what the origin saw. Needs root and iproute2; leaves nothing behind.
#
#   usage: scripts/demo.sh BINDIR     (make demo builds BINDIR=bin first)
set -euo pipefail

bin=$(cd "${1:-bin}" && pwd)
for b in realip-edge example-whoami example-probe; do
	[[ -x $bin/$b ]] || { echo "demo: $bin/$b missing; run make build" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }
command -v ip >/dev/null || { echo "demo: needs ip (iproute2)" >&2; exit 1; }

tag=rdemo$$
work=$(mktemp -d /tmp/realip-demo.XXXXXX)
pids=()

cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for h in client edge origin; do ip netns del "$tag-$h" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

nsx() { local host=$1; shift; ip netns exec "$tag-$host" "$@"; }

host() {
	ip netns add "$tag-$1"
	nsx "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	nsx "$1" ip link set lo up
}

# link A B ADDRS_A ADDRS_B: a veth pair between hosts A and B.
link() {
	local a=$1 b=$2 da=$3 db=$4
	ip link add "$tag-x" type veth peer name "$tag-y"
	ip link set "$tag-x" netns "$tag-$a" name "$da"
	ip link set "$tag-y" netns "$tag-$b" name "$db"
	nsx "$a" ip link set "$da" up
	nsx "$b" ip link set "$db" up
}

addr() { nsx "$1" ip addr add "$3" dev "$2" nodad 2>/dev/null || nsx "$1" ip addr add "$3" dev "$2"; }

echo "== building the lab: client (192.0.2.10, 2001:db8:1::10) -- edge -- origin (198.51.100.10, 2001:db8:2::10)"
host client; host edge; host origin
link client edge eth0 eth0
link edge origin eth1 eth0
addr client eth0 192.0.2.10/24; addr client eth0 2001:db8:1::10/64
addr edge eth0 192.0.2.1/24;    addr edge eth0 2001:db8:1::1/64
addr edge eth1 198.51.100.1/24; addr edge eth1 2001:db8:2::1/64
addr origin eth0 198.51.100.10/24; addr origin eth0 2001:db8:2::10/64

trust=198.51.100.1/32,2001:db8:2::1/128
start() { local host=$1 log=$2; shift 2; nsx "$host" "$@" >"$work/$log" 2>&1 & pids+=($!); }
start origin who-ppv1.log "$bin/example-whoami" -tcp :8001 -proto ppv1 -trust "$trust"
start origin who-ppv2.log "$bin/example-whoami" -tcp :8002 -udp :9002 -proto ppv2 -udp-framing first -trust "$trust"
start origin who-spp.log  "$bin/example-whoami" -udp :9003 -proto spp -trust "$trust"
start origin who-off.log  "$bin/example-whoami" -tcp :8000 -udp :9000 -proto ppv1,ppv2,spp -trust "$trust" -optional -header-timeout 200ms

cat >"$work/rules.txt" <<'RULES'
# PROTO:PORTS ORIGIN ORIGINPORT PERSIST IPMODE [TAG]
tcp:1001 198.51.100.10 8001 off ppv1 demo ppv1
tcp:1002 2001:db8:2::10 8002 on ppv2 demo ppv2 to an IPv6 origin
tcp:1000 198.51.100.10 8000 off off demo without client address
udp:2002 198.51.100.10 9002 off ppv2 demo ppv2 over udp
udp:2003 2001:db8:2::10 9003 off spp demo spp to an IPv6 origin
udp:2000 198.51.100.10 9000 off off demo udp without client address
RULES
echo "== rules (realip-edge -check prints them in canonical form):"
"$bin/realip-edge" -rules "$work/rules.txt" -check | sed 's/^/   /'
start edge edge.log "$bin/realip-edge" -rules "$work/rules.txt"

# probe PROTO ADDR: one request from the client, retried while things start.
probe() {
	local out
	for _ in $(seq 50); do
		if out=$(nsx client "$bin/example-probe" "-$1" "$2" -timeout 1s 2>/dev/null); then
			echo "$out"; return 0
		fi
		sleep 0.1
	done
	echo "local=? answer=(no answer)"; return 1
}

echo "== traffic"
printf '%-5s %-5s %-6s %-28s %s\n' PROTO MODE CLIENT "CLIENT'S OWN ADDRESS" "WHAT THE ORIGIN SAW"
fail=0
while read -r proto port mode; do
	for edgeip in 192.0.2.1 '[2001:db8:1::1]'; do
		family=ipv4; [[ $edgeip == \[* ]] && family=ipv6
		out=$(probe "$proto" "$edgeip:$port") || fail=1
		local_addr=${out#local=}; local_addr=${local_addr%% *}
		answer=${out#* answer=}
		printf '%-5s %-5s %-6s %-28s %s\n' "$proto" "$mode" "$family" "$local_addr" "$answer"
		seen=${answer#client=}; seen=${seen%% *}
		if [[ $mode == off ]]; then
			[[ $answer == *via=none* && $seen != "$local_addr" ]] || fail=1
		else
			[[ $seen == "$local_addr" && $answer == *"via=$mode"* ]] || fail=1
		fi
	done
done <<'PROBES'
tcp 1001 ppv1
tcp 1002 ppv2
tcp 1000 off
udp 2002 ppv2
udp 2003 spp
udp 2000 off
PROBES

if [[ $fail != 0 ]]; then
	echo "== FAILED: the origin did not see what it should. Logs:"
	for f in "$work"/*.log; do echo "--- $f"; cat "$f"; done
	exit 1
fi
echo "== every mode passed the client's own address; 'off' shows the edge instead, as it should"
