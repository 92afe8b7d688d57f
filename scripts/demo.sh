#!/usr/bin/env bash
# demo.sh - the whole chain on one machine: a client, realip-edge and an origin
# in three network namespaces, one rule per IP passing mode (TCP and UDP,
# IPv4 and IPv6 clients), and a table of the client's own address next to
# what the origin saw. Where the kernel runs realip's eBPF TOA receiver, TOA
# too: the receiver attached by realip-agent to the cgroup of the origin's
# TOA servers, whoami on an IPv4 and on a [::] socket, and the vendors' own
# check, python3 -m http.server on the origin and curl from the client.
# And servers that know nothing of PROXY protocol or SPP (python3's
# http.server, a python3 UDP echo) behind realip-agent unwrap, which hands
# them the edge's ppv1 connections and SPP datagrams from the clients' own
# addresses.
#
# Needs root, iproute2, nsenter (util-linux) and cgroup v2; curl and python3
# for the http.server check. Leaves nothing behind, and checks that itself:
# every exit (success, failure, Ctrl-C, SIGTERM) stops what the demo started
# and unloads the receiver it loaded, and a process still running in one of
# its namespaces or cgroups, or a pin of the receiver left in bpffs, makes
# the demo fail.
#
#   usage: scripts/demo.sh BINDIR     (make demo builds BINDIR=bin first)
set -euo pipefail

bin=$(cd "${1:-bin}" && pwd)
for b in realip-edge realip-agent example-whoami example-probe; do
	[[ -x $bin/$b ]] || { echo "demo: $bin/$b missing; run make build" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }
command -v ip >/dev/null || { echo "demo: needs ip (iproute2)" >&2; exit 1; }
command -v nsenter >/dev/null || { echo "demo: needs nsenter (util-linux)" >&2; exit 1; }
cgmnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
[[ -n $cgmnt ]] || { echo "demo: needs cgroup v2 mounted (none in /proc/self/mounts)" >&2; exit 1; }

tag=rdemo$$
work=
cg=$cgmnt/$tag # the demo's cgroup: every program it starts runs in a child of it
hosts=()       # the namespaces, $tag-HOST; named before they are made
pids=()        # every program started, by the program's own pid
fail=0         # 1: a row did not show what it should

# The eBPF TOA receiver. realip-agent pins it in one fixed folder (it has no
# flag for another), so the demo loads it only when nothing is pinned there,
# and unpins only what it pinned itself.
pindir=/sys/fs/bpf/realip/toa
toa=          # 1: the receiver is attached to $cg/toa: the TOA rows run
ownpins=      # 1: the demo may have pinned the receiver in $pindir
madedir=      # 1: ${pindir%/*} did not exist before the demo
mountedbpffs= # 1: bpffs was not mounted at /sys/fs/bpf before the demo

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

# toa_unload: detach and unpin the receiver if the demo may have pinned it,
# then check that nothing of it is pinned. realip-agent unload would unload
# a toa.ko as well, so should one have been loaded meanwhile, the demo
# removes its pins itself (which is all unload does to the eBPF receiver).
toa_unload() {
	[[ -n $ownpins ]] || return 0
	[[ -n $toa || -e $pindir ]] || return 0 # loading failed and left nothing
	if [[ -n $(ls -A "$pindir" 2>/dev/null) && -e /sys/module/toa ]]; then
		rm -f "$pindir"/*
	elif [[ -n $(ls -A "$pindir" 2>/dev/null) ]]; then
		"$bin/realip-agent" unload 2>&1 | sed 's/^/   /'
		if ((PIPESTATUS[0])); then
			echo "demo: FAILED: realip-agent unload did not detach the eBPF TOA receiver" >&2
			return 1
		fi
	fi
	[[ ! -d $pindir ]] || rmdir "$pindir" 2>/dev/null # an interrupted load's empty folder
	[[ -z $madedir ]] || rmdir "${pindir%/*}" 2>/dev/null
	if [[ -n $mountedbpffs && $(stat -f -c %T /sys/fs/bpf) == bpf_fs && -z $(ls -A /sys/fs/bpf) ]]; then
		umount /sys/fs/bpf
	fi
	if [[ -e $pindir ]]; then
		echo "demo: FAILED: the eBPF TOA receiver is still pinned in $pindir:" >&2
		ls -l "$pindir" >&2
		return 1
	fi
	echo "== cleanup: nothing of the eBPF TOA receiver is attached or pinned ($pindir is gone)"
}

# cleanup: stop what was started, check that nothing of the demo still runs
# (before the namespaces go: a process outlives its namespace's name), unload
# the TOA receiver, then remove namespaces, cgroups and the work folder. A
# leftover fails the demo.
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
	toa_unload || { ((rc)) || rc=1; }
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

# start HOST NAME CMD...: CMD in the background in HOST's network namespace
# and in a cgroup of its own, $cg/NAME (where a BPF program meant for it
# attaches), output in $work/NAME.log (a / in NAME as -). The subshell joins
# the cgroup and execs nsenter, which execs CMD: $! is CMD's own pid, the one
# cleanup stops. nsenter, not ip netns exec: that one mounts a sysfs of the
# namespace over /sys, hiding the cgroup v2 and bpffs mounts the TOA sender
# and the receiver's lookups need.
start() {
	local host=$1 name=$2; shift 2
	mkdir -p "$cg/$name"
	{ echo "$BASHPID" >"$cg/$name/cgroup.procs" && exec nsenter --net="/run/netns/$tag-$host" "$@"; } \
		>"$work/${name//\//-}.log" 2>&1 &
	pids+=($!)
}

# toa_load: attach the eBPF TOA receiver to $cg/toa with realip-agent, or
# say in one line why the demo goes without TOA (return 1).
toa_load() {
	local why
	if [[ -e /sys/module/toa ]]; then
		echo "== TOA: skipped: toa.ko is loaded here and realip-agent runs one TOA receiver at a time (the demo leaves the module alone)"
		return 1
	fi
	if [[ -e $pindir ]]; then
		echo "== TOA: skipped: an eBPF TOA receiver the demo did not load is pinned in $pindir (see realip-agent status); realip-agent has no flag for another pin folder, and the demo leaves it alone"
		return 1
	fi
	mkdir "$cg/toa"
	printf 'receiver: ebpf\ncgroup: %s\ntrusted:\n  - 198.51.100.1/32\n  - 2001:db8:2::1/128\nmetrics_listen: ""\n' \
		"$cg/toa" >"$work/agent.yaml"
	[[ -e ${pindir%/*} ]] || madedir=1
	[[ $(stat -f -c %T /sys/fs/bpf 2>/dev/null) == bpf_fs ]] || mountedbpffs=1
	ownpins=1
	if ! "$bin/realip-agent" load -config "$work/agent.yaml" >"$work/agent-load.log" 2>&1; then
		why=$(grep -m1 '^realip-agent load: ' "$work/agent-load.log" || tail -n1 "$work/agent-load.log")
		echo "== TOA: skipped: the eBPF TOA receiver cannot run here: ${why#realip-agent load: }"
		return 1
	fi
	echo "== TOA: the eBPF receiver, attached by realip-agent load (receiver: ebpf) to the cgroup of the origin's TOA servers:"
	grep -m1 '^eBPF TOA receiver' "$work/agent-load.log" | sed 's/^/   /'
}

# toa_servers: the origin's TOA servers, all in the receiver's cgroup:
# whoami on an IPv4 socket and on a [::] socket, and python3's http.server
# as it comes (it binds 0.0.0.0) and bound to [::].
toa_servers() {
	start origin toa/who-v4 "$bin/example-whoami" -tcp 198.51.100.10:8004 -proto toa -trust "$trust"
	start origin toa/who-any "$bin/example-whoami" -tcp '[::]:8005' -proto toa -trust "$trust"
	[[ -n $py ]] || return 0
	mkdir -p "$work/www"
	echo "hello from the origin" >"$work/www/index.html"
	start origin toa/http "$py" -m http.server -d "$work/www" 8080
	start origin toa/http-any "$py" -m http.server -d "$work/www" -b :: 8081
}

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

# row PROTO PORT MODE: a request from the client's IPv4 and one from its
# IPv6 address through the edge's PORT, a table row each, checked: the
# origin saw the client (via=MODE), or for mode off the edge (via=none).
row() {
	local proto=$1 port=$2 mode=$3 edgeip family out local_addr answer seen
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
}

# http_row NAME PORT FAMILY WANT [NOTE]: curl from the client's FAMILY
# address through the edge's PORT to http.server NAME (its log
# $work/NAME.log; the row's mode is NAME's part before the first -), a
# table row with the server's log line (and NOTE), checked: the line starts
# with WANT, the address accept() gave.
http_row() {
	local name=$1 port=$2 family=$3 want=$4 note=${5:-} edgeip=192.0.2.1 out='' ip line
	[[ $family == ipv4 ]] || edgeip='[2001:db8:1::1]'
	for _ in $(seq 50); do
		out=$(nsx client "$curl" -gsS -o /dev/null -w '%{local_ip} %{local_port}' --max-time 2 \
			"http://$edgeip:$port/?$family-client" 2>/dev/null) && break
		out=
		sleep 0.1
	done
	ip=${out% *}
	[[ $ip != *:* ]] || ip="[$ip]"
	line=$(grep -m1 " \"GET /?$family-client " "$work/$name.log" || true)
	printf '%-5s %-5s %-6s %-28s %s%s\n' tcp "${name%%-*}" "$family" "${out:+$ip:${out#* }}" "${line:-(nothing logged)}" "$note"
	[[ -n $out && ${line%% *} == "$want" ]] || fail=1
}

# toa_rows: the TOA part of the table: whoami on an IPv4 socket and on
# [::], then the vendors' check with http.server, and the receiver's
# counters as realip-agent status shows them.
toa_rows() {
	echo "   toa to whoami on 198.51.100.10:8004, an IPv4 socket (tcp:1004):"
	row tcp 1004 toa
	echo "   toa to whoami on [::]:8005, a dual-stack socket, reached at 198.51.100.10 (tcp:1005):"
	row tcp 1005 toa
	if [[ -z $py || -z $curl ]]; then
		echo "   the http.server check: skipped: needs python3 and curl (make demo installs them)"
		return
	fi
	echo "   the vendors' check: curl from the client to python3 -m http.server -d WWW 8080 on the origin, which binds 0.0.0.0 (tcp:1080); its log:"
	http_row toa-http 1080 ipv4 192.0.2.10
	http_row toa-http 1080 ipv6 198.51.100.1 "  <- the edge, see below"
	echo "   the same with -b :: 8081, a [::] socket, reached at 2001:db8:2::10 (tcp:1081):"
	http_row toa-http-any 1081 ipv4 ::ffff:192.0.2.10
	http_row toa-http-any 1081 ipv6 2001:db8:1::10
	cat <<-'NOTE'
	   An IPv6 client on an IPv4 socket: the eBPF receiver cannot change the address family,
	   so getpeername() and accept() there keep the edge's address (counted as getname_toa_mismatch;
	   toa.ko gives the client). whoami above reads the client from the receiver's entry instead.
	NOTE
	toa_counters
}

# toa_counters: the receiver's counters that are not 0, as realip-agent
# status shows them.
toa_counters() {
	local c
	c=$("$bin/realip-agent" status 2>/dev/null |
		awk '/^counters:/ { on = 1; next } on && NF == 2 && $2 != 0 { s = s sep $1 "=" $2; sep = " " } END { print s }')
	echo "   receiver counters (realip-agent status): ${c:-(none)}"
	[[ $c != *no_toa* ]] ||
		echo "   (syn_recv_sock_no_toa and getname_toa_empty: the edge's TCP health checks of the origins, which have no client to pass)"
}

# unwrap_start: servers that know nothing of PROXY protocol or SPP on the
# origin's loopback, python3's http.server and a UDP echo that answers with
# the peer address it sees, and realip-agent unwrap in front of them
# (transparent sockets, so the servers see the clients themselves).
unwrap_start() {
	mkdir -p "$work/www"
	echo "hello from the origin" >"$work/www/index.html"
	start origin unwrap-http "$py" -m http.server -d "$work/www" -b 127.0.0.1 8090
	start origin unwrap-http6 "$py" -m http.server -d "$work/www" -b ::1 8090
	local family addr
	for family in AF_INET AF_INET6; do
		addr=127.0.0.1; [[ $family == AF_INET ]] || addr=::1
		start origin "unwrap/echo-$family" "$py" -u -c "
import socket
s = socket.socket(socket.$family, socket.SOCK_DGRAM)
s.bind(('$addr', 9090))
while True:
    b, peer = s.recvfrom(2048)
    host = peer[0] if ':' not in peer[0] else '[' + peer[0] + ']'
    s.sendto(('client=%s:%d via=none (a plain UDP server)' % (host, peer[1])).encode(), peer)
"
	done
	cat >"$work/unwrap.yaml" <<-YAML
	trusted: [198.51.100.1/32, 2001:db8:2::1/128]
	metrics_listen: ""
	unwrap:
	  - {name: web, listen: 198.51.100.10:8091, network: tcp, accept: [ppv1, ppv2], to: [127.0.0.1:8090, "[::1]:8090"]}
	  - {name: game, listen: 198.51.100.10:9091, network: udp, accept: [spp], to: [127.0.0.1:9090, "[::1]:9090"]}
	YAML
	start origin unwrap/agent "$bin/realip-agent" unwrap -config "$work/unwrap.yaml"
}

# unwrap_rows: the unwrap part of the table: http.server's log, and the
# UDP echo's answer, checked as the rows above.
unwrap_rows() {
	echo "   ppv1 to realip-agent unwrap on 198.51.100.10:8091, which connects from the client's address to"
	echo "   python3 -m http.server on 127.0.0.1:8090 and [::1]:8090, servers that know no PROXY protocol (tcp:1090); their logs:"
	http_row unwrap-http 1090 ipv4 192.0.2.10
	http_row unwrap-http6 1090 ipv6 2001:db8:1::10
	echo "   spp to realip-agent unwrap on 198.51.100.10:9091, which sends from the client's address to a"
	echo "   python3 UDP echo on 127.0.0.1:9090 and [::1]:9090 that knows no SPP (udp:2091); the reply comes back through the edge:"
	unwrap_udp_row
	local rules
	rules=$( { nsx origin ip -4 rule show; nsx origin ip -6 rule show; } | grep -c 'proto 82' || true)
	echo "   the agent's routing for its transparent sockets: $rules rules (IPv4 and IPv6) tagged proto 82, removed when it stops"
}

# unwrap_udp_row: an SPP request from the client's IPv4 and one from its
# IPv6 address through udp:2091, checked: the echo saw the client.
unwrap_udp_row() {
	local edgeip family out local_addr answer seen
	for edgeip in 192.0.2.1 '[2001:db8:1::1]'; do
		family=ipv4; [[ $edgeip == \[* ]] && family=ipv6
		out=$(probe udp "$edgeip:2091") || fail=1
		local_addr=${out#local=}; local_addr=${local_addr%% *}
		answer=${out#* answer=}
		printf '%-5s %-5s %-6s %-28s %s\n' udp unwrap "$family" "$local_addr" "$answer"
		seen=${answer#client=}; seen=${seen%% *}
		[[ $seen == "$local_addr" ]] || fail=1
	done
}

echo "== building the lab: client (192.0.2.10, 2001:db8:1::10) -- edge -- origin (198.51.100.10, 2001:db8:2::10)"
host client; host edge; host origin
link client edge eth0 eth0
link edge origin eth1 eth0
addr client eth0 192.0.2.10/24; addr client eth0 2001:db8:1::10/64
addr edge eth0 192.0.2.1/24;    addr edge eth0 2001:db8:1::1/64
addr edge eth1 198.51.100.1/24; addr edge eth1 2001:db8:2::1/64
addr origin eth0 198.51.100.10/24; addr origin eth0 2001:db8:2::10/64

trust=198.51.100.1/32,2001:db8:2::1/128
start origin who-ppv1 "$bin/example-whoami" -tcp :8001 -proto ppv1 -trust "$trust"
start origin who-ppv2 "$bin/example-whoami" -tcp :8002 -udp :9002 -proto ppv2 -udp-framing first -trust "$trust"
start origin who-spp  "$bin/example-whoami" -udp :9003 -proto spp -trust "$trust"
start origin who-off  "$bin/example-whoami" -tcp :8000 -udp :9000 -proto ppv1,ppv2,spp -trust "$trust" -optional -header-timeout 200ms

py=$(command -v python3 || true)
curl=$(command -v curl || true)
unwrap=
if [[ -n $py && -n $curl ]]; then
	unwrap=1
	unwrap_start
fi
if toa_load; then
	toa=1
	toa_servers
fi

cat >"$work/rules.txt" <<'RULES'
# PROTO:PORTS ORIGIN ORIGINPORT PERSIST IPMODE [TAG]
tcp:1001 198.51.100.10 8001 off ppv1 demo ppv1
tcp:1002 2001:db8:2::10 8002 on ppv2 demo ppv2 to an IPv6 origin
tcp:1000 198.51.100.10 8000 off off demo without client address
udp:2002 198.51.100.10 9002 off ppv2 demo ppv2 over udp
udp:2003 2001:db8:2::10 9003 off spp demo spp to an IPv6 origin
udp:2000 198.51.100.10 9000 off off demo udp without client address
RULES
[[ -z $toa ]] || cat >>"$work/rules.txt" <<'RULES'
tcp:1004 198.51.100.10 8004 off toa demo toa to an IPv4 socket
tcp:1005 198.51.100.10 8005 off toa demo toa to a [::] socket
tcp:1080 198.51.100.10 8080 off toa demo toa to http.server
tcp:1081 2001:db8:2::10 8081 off toa demo toa to http.server on [::]
RULES
[[ -z $unwrap ]] || cat >>"$work/rules.txt" <<'RULES'
tcp:1090 198.51.100.10 8091 off ppv1 demo ppv1 to realip-agent unwrap
udp:2091 198.51.100.10 9091 off spp demo spp to realip-agent unwrap
RULES
echo "== rules (realip-edge -check prints them in canonical form):"
"$bin/realip-edge" -rules "$work/rules.txt" -check | sed 's/^/   /'
start edge edge "$bin/realip-edge" -rules "$work/rules.txt"

echo "== traffic"
printf '%-5s %-5s %-6s %-28s %s\n' PROTO MODE CLIENT "CLIENT'S OWN ADDRESS" "WHAT THE ORIGIN SAW"
row tcp 1001 ppv1
row tcp 1002 ppv2
row tcp 1000 off
row udp 2002 ppv2
row udp 2003 spp
row udp 2000 off
[[ -z $toa ]] || toa_rows
if [[ -n $unwrap ]]; then
	unwrap_rows
else
	echo "   realip-agent unwrap: skipped: needs python3 and curl (make demo installs them)"
fi

if [[ $fail != 0 ]]; then
	echo "== FAILED: the origin did not see what it should. Logs:"
	for f in "$work"/*.log; do echo "--- $f"; cat "$f"; done
	exit 1
fi
echo "== every mode passed the client's own address; 'off' shows the edge instead, as it should"
