#!/usr/bin/env bash
# demo.sh - the whole chain on one machine: a client, realip-edge and an origin
# in three network namespaces, one rule per IP passing mode (TCP and UDP,
# IPv4 and IPv6 clients), and a table of the client's own address next to
# what the origin saw. Needs root, iproute2 and cgroup v2; leaves nothing
# behind, and checks that itself: every exit (success, failure, Ctrl-C,
# SIGTERM) stops what the demo started, and a process still running in one
# of its namespaces or cgroups after that makes the demo fail.
#
#   usage: scripts/demo.sh BINDIR     (make demo builds BINDIR=bin first)
set -euo pipefail

bin=$(cd "${1:-bin}" && pwd)
for b in realip-edge example-whoami example-probe; do
	[[ -x $bin/$b ]] || { echo "demo: $bin/$b missing; run make build" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }
command -v ip >/dev/null || { echo "demo: needs ip (iproute2)" >&2; exit 1; }
cgmnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
[[ -n $cgmnt ]] || { echo "demo: needs cgroup v2 mounted (none in /proc/self/mounts)" >&2; exit 1; }

tag=rdemo$$
work=
cg=$cgmnt/$tag # the demo's cgroup: every program it starts runs in a child of it
hosts=()       # the namespaces, $tag-HOST; named before they are made
pids=()        # every program started, by the program's own pid

# members: the pids of all processes in the demo's namespaces and cgroups
# (zombies are in neither).
members() {
	local h
	for h in "${hosts[@]}"; do
		[[ ! -e /run/netns/$tag-$h ]] || ip netns pids "$tag-$h"
	done
	[[ ! -d $cg ]] || find "$cg" -name cgroup.procs -exec cat {} +
}

# alive PID...: those of the pids that still run as part of the demo: not
# zombies, and children of this script (as started programs are) or members.
# A pid reused since by some other process is left alone.
alive() {
	local pid stat ppid in
	in=$(members)
	for pid; do
		{ read -r stat <"/proc/$pid/stat"; } 2>/dev/null || continue
		read -r stat ppid _ <<<"${stat##*) }"
		[[ $stat != Z ]] || continue
		[[ $ppid == "$$" ]] || grep -qx "$pid" <<<"$in" || continue
		echo "$pid"
	done
}

# stop PID...: SIGTERM, up to 5 s to go, then SIGKILL to those left. Bash
# reaps its children by itself.
stop() {
	local left sig
	for sig in TERM KILL; do
		mapfile -t left < <(alive "$@")
		((${#left[@]})) || return 0
		kill -"$sig" "${left[@]}" 2>/dev/null
		for _ in $(seq 50); do [[ -n $(alive "${left[@]}") ]] || break; sleep 0.1; done
	done
}

# show PID...: each pid with its namespace and command line.
show() {
	local pid cmd
	for pid; do
		cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
		printf '   pid %s netns=%s: %s\n' "$pid" "$(ip netns identify "$pid" 2>/dev/null)" "${cmd% }"
	done
}

# cleanup: stop what was started, check that nothing of the demo still runs
# (before the namespaces go: a process outlives its namespace's name), then
# remove namespaces, cgroups and the work folder. A leftover fails the demo.
cleanup() {
	local rc=$? left h
	set +e
	trap '' HUP INT TERM
	stop "${pids[@]}"
	mapfile -t left < <({ alive "${pids[@]}"; members; } | sort -un)
	if ((${#left[@]})); then
		echo "demo: FAILED: still running after stopping the ${#pids[@]} programs it started:" >&2
		show "${left[@]}" >&2
		((rc)) || rc=1
		[[ ! -e $cg/cgroup.kill ]] || echo 1 >"$cg/cgroup.kill"
		stop "${left[@]}"
		mapfile -t left < <({ alive "${pids[@]}"; members; } | sort -un)
		if ((${#left[@]})); then
			echo "demo: could not stop:" >&2
			show "${left[@]}" >&2
		fi
	elif ((${#pids[@]})); then
		echo "== cleanup: stopped the ${#pids[@]} programs the demo started; nothing of it runs any more"
	fi
	for h in "${hosts[@]}"; do ip netns del "$tag-$h" 2>/dev/null; done
	ip link del "$tag-x" 2>/dev/null
	if [[ -d $cg ]] && ! find "$cg" -depth -type d -exec rmdir {} +; then
		echo "demo: FAILED: could not remove the cgroup $cg" >&2
		((rc)) || rc=1
	fi
	[[ -z $work ]] || rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d /tmp/realip-demo.XXXXXX)
mkdir "$cg" || { echo "demo: cannot make a cgroup in $cgmnt (needs cgroup v2, writable)" >&2; exit 1; }

nsx() { local host=$1; shift; ip netns exec "$tag-$host" "$@"; }

host() {
	hosts+=("$1")
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
# start HOST NAME CMD...: CMD in the background in HOST's namespace and in a
# cgroup of its own, $cg/NAME (where a BPF program meant for it attaches),
# output in $work/NAME.log. The subshell joins the cgroup and execs ip, which
# execs CMD: $! is CMD's own pid, the one cleanup stops.
start() {
	local host=$1 name=$2; shift 2
	mkdir -p "$cg/$name"
	{ echo "$BASHPID" >"$cg/$name/cgroup.procs" && exec ip netns exec "$tag-$host" "$@"; } >"$work/$name.log" 2>&1 &
	pids+=($!)
}
start origin who-ppv1 "$bin/example-whoami" -tcp :8001 -proto ppv1 -trust "$trust"
start origin who-ppv2 "$bin/example-whoami" -tcp :8002 -udp :9002 -proto ppv2 -udp-framing first -trust "$trust"
start origin who-spp  "$bin/example-whoami" -udp :9003 -proto spp -trust "$trust"
start origin who-off  "$bin/example-whoami" -tcp :8000 -udp :9000 -proto ppv1,ppv2,spp -trust "$trust" -optional -header-timeout 200ms

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
start edge edge "$bin/realip-edge" -rules "$work/rules.txt"

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
