#!/usr/bin/env bash
# Issue 14's benchmark: transparent unwrapping on an origin, realip-agent
# unwrap against go-mmproxy and HAProxy (usesrc clientip), all in one run
# on the same setup:
#
#   tput  TCP throughput: CONNS long connections, each with a PROXY v2
#         header, stream to a discard server for DUR; MB/s.
#   conn  new TCP connections: WORKERS workers connect, write a PROXY v2
#         header of a new client and 64 bytes, read the 64-byte echo,
#         close, for DUR; conn/s.
#   udp   UDP: FLOWS flows of 64-byte request/response through the
#         unwrapper to a UDP echo server (WINDOW requests in flight per
#         flow), PROXY v2 on every datagram, for DUR; requests/s.
#
#   bench/unwrap.sh                       # REPS=5 rounds of DUR=2s (~3.5 min)
#   REPS=3 DUR=5s bench/unwrap.sh
#   LOADS=udp bench/unwrap.sh             # one load only
#   RELAYS="realip go-mmproxy" bench/unwrap.sh    # some relays only
#   AGENT=/tmp/realip-agent bench/unwrap.sh   # a prebuilt realip-agent
#   PROFILE=/tmp/unwrapprof bench/unwrap.sh   # then perf profiles of
#                                         # realip-agent under each load
#   REPS=0 PROFILE=/tmp/unwrapprof bench/unwrap.sh   # the profiles only
#
# Hosts (network namespaces, documentation prefixes only): "edge" runs
# the load generator (bench/unwrapload), which plays the edge and writes
# the headers itself, one made-up client address and port per connection
# or flow (192.0.2.0/24, 203.0.113.0/24); each unwrapper has an origin
# namespace of its own, reached over a veth pair from the edge, with the
# same servers on 127.0.0.1 (discard :9000, echo :9001, UDP echo :9002,
# all in one unwrapload process) and the same routing of replies to
# client addresses (realip-agent installs its own; the others get the
# standard "from 127.0.0.0/8 iif lo lookup 123" + "local 0.0.0.0/0 dev lo
# table 123"):
#
#   direct          the load generator straight to the servers on the
#                   origin's address, no header, no unwrapper: the ceiling
#   realip          realip-agent unwrap: tcp ppv2 entries, udp ppv2 with
#                   framing every-datagram (default limits)
#   go-mmproxy      Debian's go-mmproxy 2.1, one process per port,
#                   -listeners as many as CPUs (MM_LISTENERS=N to change;
#                   1 and 2 measured alike here), -allowed-subnets
#   haproxy         HAProxy 2.6, nbthread 2, "bind ... accept-proxy",
#                   "server ... source 0.0.0.0 usesrc clientip" (TCP only;
#                   the server sees the client's address, not its port)
#   haproxy-splice  the same with "option splice-auto"
#   realip-spp      realip with SPP on every datagram (and on every reply),
#                   which neither baseline can do: compared with realip's
#                   own PROXY v2 figure
#   realip-ppv2-first  realip with PROXY v2 on the first datagram of a flow
#                   only (EdgeOne's framing): shown, no target
#
# Before measuring, every unwrapper is checked: the echo server must see
# the client address of the header (unwrapload check). Each round runs
# every load against every relay back to back, the order rotating from
# round to round; a short warm-up round comes first and is not counted.
# The report gives the median and [min .. max] over the rounds, the relay's
# own CPU (cores busy; CPU time per MB/connection/request), and realip's
# ratio to the best of go-mmproxy and HAProxy (target >= 1.0x, issue 14)
# and realip-spp's to realip (target >= 0.90x), with the range of the
# same-round ratios and the ratio of CPU time per unit, which a busy
# machine disturbs less than the rates. Every process shares the machine's
# CPUs: the load generator and the servers cost every relay the same. Raw
# result lines go to $OUT (default /tmp/unwrap-bench.txt).
#
# Needs root, iproute2, nsenter, haproxy (built with TPROXY, as Debian's
# is) and go-mmproxy (scripts/deps.sh haproxy go-mmproxy); PROFILE needs
# perf (linux-perf). Installs nothing itself. Everything it starts is
# stopped on exit and its namespaces are deleted; its configs and logs
# live in a temporary directory that is removed (KEEP=1 keeps it).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$root/bench/lib.sh" # stop_jobs, round
reps=${REPS:-5}
dur=${DUR:-2s}
warm=${WARM:-0.5s}
conns=${CONNS:-4}
workers=${WORKERS:-8}
flows=${FLOWS:-16}
window=${WINDOW:-4}
loads=${LOADS:-tput conn udp}
out=${OUT:-/tmp/unwrap-bench.txt}
profile=${PROFILE:-}
prof_dur=${PROF_DUR:-6s}
agent=${AGENT:-}
mm_listeners=${MM_LISTENERS:-$(nproc)}
all_relays=(direct realip go-mmproxy haproxy haproxy-splice realip-spp realip-ppv2-first)
read -r -a relays <<<"${RELAYS:-${all_relays[*]}}"
for r in "${relays[@]}"; do
	[[ " ${all_relays[*]} " == *" $r "* ]] || { echo "unwrap.sh: RELAYS: unknown relay $r (known: ${all_relays[*]})" >&2; exit 2; }
done
want() { [[ " ${relays[*]} " == *" $1"* ]]; } # want PREFIX: a relay starting so is selected

export PATH=$PATH:/usr/sbin:/sbin
[[ $(id -u) == 0 ]] || { echo "unwrap.sh: needs root (network namespaces, transparent sockets)" >&2; exit 1; }
missing=()
for c in ip:iproute2 nsenter:util-linux haproxy:haproxy go-mmproxy:go-mmproxy; do
	command -v "${c%%:*}" >/dev/null || missing+=("${c#*:}")
done
[[ -z $profile ]] || command -v perf >/dev/null || missing+=(linux-perf)
if ((${#missing[@]})); then
	echo "unwrap.sh: missing ${missing[*]}; install with: scripts/deps.sh ${missing[*]}" >&2
	exit 1
fi
if [[ $(haproxy -vv 2>/dev/null) != *+LINUX_TPROXY* ]]; then
	echo "unwrap.sh: this haproxy is built without LINUX_TPROXY: usesrc clientip cannot work" >&2
	exit 1
fi

tag=ub$$
work=$(mktemp -d /tmp/unwrap-bench.XXXXXX)
hosts=() # namespaces made, $tag-HOST

# cleanup stops what this script started (its own background jobs, see
# stop_jobs), then deletes its namespaces.
cleanup() {
	local rc=$? h
	stop_jobs 50
	if [[ -e /run/netns/$tag-realip ]] && ip -n "$tag-realip" rule show | grep -q 'proto 82'; then
		echo "unwrap.sh: realip-agent left routing rules behind after SIGTERM:" >&2
		ip -n "$tag-realip" rule show | grep 'proto 82' >&2
	fi
	for h in "${hosts[@]}"; do ip netns del "$tag-$h" 2>/dev/null || true; done
	ip link del "$tag-x" 2>/dev/null || true # a veth pair not yet moved
	if [[ -n ${KEEP:-} ]]; then
		echo "unwrap.sh: kept $work" >&2
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== building" >&2
if want realip && [[ -z $agent ]]; then
	(cd "$root" && go build -o "$work/realip-agent" ./cmd/realip-agent)
	agent=$work/realip-agent
fi
(cd "$root" && go build -o "$work/unwrapload" ./bench/unwrapload)
load=$work/unwrapload

nsx() { local h=$1; shift; nsenter --net="/run/netns/$tag-$h" "$@"; }

# start HOST NAME CMD...: CMD in the background in HOST's namespace, its
# output in $work/NAME.log; its pid is added to pids[HOST].
declare -A pids
start() {
	local h=$1 name=$2
	shift 2
	# nsenter execs CMD, so $! is CMD's own pid (nsx, a function, would
	# leave a subshell in between).
	nsenter --net="/run/netns/$tag-$h" "$@" >"$work/$name.log" 2>&1 &
	pids[$h]="${pids[$h]:-} $!"
}

fail_start() {
	echo "unwrap.sh: $1 did not come up; its logs:" >&2
	tail -n 20 "$work"/"$2"*.log >&2
	exit 1
}

ip netns add "$tag-edge"
hosts+=(edge)
nsx edge ip link set lo up
# The load generator opens tens of thousands of connections per run: all
# ports, and TIME_WAIT reuse (its side closes first). /proc/sys/net is
# that of the writer's namespace.
nsx edge sh -c 'echo 1024 65535 >/proc/sys/net/ipv4/ip_local_port_range && echo 1 >/proc/sys/net/ipv4/tcp_tw_reuse'

# origin K NAME: namespace $tag-NAME, reached from the edge at
# 198.51.100.(4K+2) over a veth pair (198.51.100.(4K+1) on the edge).
origin() {
	local k=$1 name=$2 a=198.51.100.$((4 * $1 + 1)) o=198.51.100.$((4 * $1 + 2))
	ip netns add "$tag-$name"
	hosts+=("$name")
	ip link add "$tag-x" type veth peer name "$tag-y"
	ip link set "$tag-x" netns "$tag-edge" name "o$k"
	ip link set "$tag-y" netns "$tag-$name" name eth0
	nsx edge ip addr add "$a/30" dev "o$k"
	nsx edge ip link set "o$k" up
	nsx "$name" ip addr add "$o/30" dev eth0
	nsx "$name" ip link set eth0 up
	nsx "$name" ip link set lo up
}

# servers HOST [ADDR]: the discard, echo and UDP echo servers on
# 127.0.0.1 (and on ADDR too).
servers() {
	local h=$1 d=127.0.0.1:9000 e=127.0.0.1:9001 u=127.0.0.1:9002
	[[ -z ${2:-} ]] || { d+=,$2:9000; e+=,$2:9001; u+=,$2:9002; }
	start "$h" "$h-servers" "$load" origin -discard "$d" -echo "$e" -udp "$u"
	srv_pids[$h]=$!
}
declare -A srv_pids

# routing HOST: replies from local servers to client addresses are
# delivered locally (go-mmproxy's README; HAProxy's usesrc needs the same).
routing() {
	nsx "$1" ip rule add from 127.0.0.0/8 iif lo table 123 priority 100
	nsx "$1" ip route add local 0.0.0.0/0 dev lo table 123
}

addr_direct=198.51.100.2 addr_realip=198.51.100.6 addr_mm=198.51.100.10 addr_ha=198.51.100.14
origin 0 direct
origin 1 realip
origin 2 mmproxy
origin 3 haproxy
servers direct "$addr_direct"
servers realip
servers mmproxy
servers haproxy
routing mmproxy
routing haproxy

cat >"$work/realip.yaml" <<-EOF
	trusted: [198.51.100.0/24]
	metrics_listen: 127.0.0.1:9100
	unwrap:
	  - {name: tput, listen: "$addr_realip:8000", network: tcp, accept: [ppv2], to: 127.0.0.1:9000}
	  - {name: echo, listen: "$addr_realip:8001", network: tcp, accept: [ppv2], to: 127.0.0.1:9001}
	  - {name: udp, listen: "$addr_realip:8002", network: udp, accept: [ppv2], to: 127.0.0.1:9002, framing: every-datagram}
	  - {name: spp, listen: "$addr_realip:8003", network: udp, accept: [spp], to: 127.0.0.1:9002}
	  - {name: first, listen: "$addr_realip:8004", network: udp, accept: [ppv2], to: 127.0.0.1:9002, framing: first-datagram}
EOF
want realip && start realip realip-agent "$agent" unwrap -config "$work/realip.yaml"

echo 198.51.100.0/24 >"$work/mmproxy-subnets"
for p in tcp:8000:9000 tcp:8001:9001 udp:8002:9002; do
	IFS=: read -r proto lp rp <<<"$p"
	start mmproxy "go-mmproxy-$lp" go-mmproxy -p "$proto" -l "$addr_mm:$lp" -4 "127.0.0.1:$rp" \
		-allowed-subnets "$work/mmproxy-subnets" -listeners "$mm_listeners" -v 0
done

cat >"$work/haproxy.cfg" <<-EOF
	global
	    nbthread $(nproc)
	    maxconn 5000
	defaults
	    mode tcp
	    timeout connect 5s
	    timeout client 600s
	    timeout server 600s
	listen tput
	    bind $addr_ha:8000 accept-proxy
	    server s 127.0.0.1:9000 source 0.0.0.0 usesrc clientip
	listen echo
	    bind $addr_ha:8001 accept-proxy
	    server s 127.0.0.1:9001 source 0.0.0.0 usesrc clientip
	listen tput-splice
	    option splice-auto
	    bind $addr_ha:8010 accept-proxy
	    server s 127.0.0.1:9000 source 0.0.0.0 usesrc clientip
	listen echo-splice
	    option splice-auto
	    bind $addr_ha:8011 accept-proxy
	    server s 127.0.0.1:9001 source 0.0.0.0 usesrc clientip
EOF
start haproxy haproxy haproxy -db -f "$work/haproxy.cfg"

# Relay table: host, header, tput, echo and udp addresses (none when not
# served); the relay's CPU is that of the unwrapper processes of its host
# (not the servers').
declare -A r_host=([direct]=direct [realip]=realip [go-mmproxy]=mmproxy [haproxy]=haproxy
	[haproxy-splice]=haproxy [realip-spp]=realip [realip-ppv2-first]=realip)
declare -A r_hdr=([direct]=none [realip]=ppv2 [go-mmproxy]=ppv2 [haproxy]=ppv2
	[haproxy-splice]=ppv2 [realip-spp]=spp [realip-ppv2-first]=ppv2-first)
declare -A r_tput=([direct]=$addr_direct:9000 [realip]=$addr_realip:8000 [go-mmproxy]=$addr_mm:8000
	[haproxy]=$addr_ha:8000 [haproxy-splice]=$addr_ha:8010)
declare -A r_echo=([direct]=$addr_direct:9001 [realip]=$addr_realip:8001 [go-mmproxy]=$addr_mm:8001
	[haproxy]=$addr_ha:8001 [haproxy-splice]=$addr_ha:8011)
declare -A r_udp=([direct]=$addr_direct:9002 [realip]=$addr_realip:8002 [go-mmproxy]=$addr_mm:8002
	[realip-spp]=$addr_realip:8003 [realip-ppv2-first]=$addr_realip:8004)

relay_pids() { # RELAY: comma-separated pids of its unwrapper processes
	local h=${r_host[$1]} p out=
	[[ $h == direct ]] && return 0
	for p in ${pids[$h]}; do
		[[ $p == "${srv_pids[$h]}" ]] || out+=${out:+,}$p
	done
	echo "$out"
}

# Client identities (unwrapload -seq): a block of 400000 per run, so no
# run reuses a client address and port of an earlier one (TIME_WAIT of the
# unwrappers' sockets); the checks take theirs from the top of the space.
run=0
next_seq() { seq=$(((run * 400000) % 32000000)); run=$((run + 1)); }
check_seq=32100000

echo "== checking that every unwrapper passes the client's address" >&2
for r in "${relays[@]}"; do
	for kind in tcp udp; do
		a=${r_echo[$r]:-}
		[[ $kind == udp ]] && a=${r_udp[$r]:-}
		[[ -n $a ]] || continue
		check_seq=$((check_seq + 100))
		port=true
		[[ $r == haproxy* ]] && port=false # usesrc clientip: the client's address, a port of the kernel's
		nsx edge "$load" check -net "$kind" -addr "$a" -header "${r_hdr[$r]}" -seq "$check_seq" -port=$port >&2 ||
			fail_start "$r" "${r_host[$r]}"
	done
done

# measure LOAD RELAY REP DUR FILE: one run, its result lines appended to
# FILE and shown on stderr. It runs in this shell, not in a pipeline's
# subshell, so that next_seq's count goes on.
measure() {
	local kind=$1 r=$2 rep=$3 d=$4 dest=$5 a
	case $kind in
	tput) a=${r_tput[$r]:-} ;;
	conn) a=${r_echo[$r]:-} ;;
	udp) a=${r_udp[$r]:-} ;;
	esac
	[[ -n $a ]] || return 0
	next_seq
	local common=(-addr "$a" -header "${r_hdr[$r]}" -seq "$seq" -dur "$d" -label "$r" -rep "$rep" -pids "$(relay_pids "$r")")
	case $kind in
	tput) nsx edge "$load" tput -conns "$conns" "${common[@]}" ;;
	conn) nsx edge "$load" conn -workers "$workers" "${common[@]}" ;;
	udp) nsx edge "$load" udp -flows "$flows" -window "$window" "${common[@]}" ;;
	esac | tee -a "$dest" >&2
}

cores=$(nproc)
echo "== $(haproxy -v | head -n1 | cut -d' ' -f1-3), go-mmproxy $(dpkg-query -W -f='${Version}' go-mmproxy 2>/dev/null || echo '?'), realip $(cd "$root" && git describe --always --dirty 2>/dev/null || echo '?'), $(go version | cut -d' ' -f3), kernel $(uname -r), $cores CPUs" >&2
echo "== loads ($loads): tput $conns conns; conn $workers workers, 64 B echo; udp $flows flows x window $window, 64 B; $dur each, $reps rounds" >&2
if ((reps > 0)); then
	echo "== warm-up round ($warm each)" >&2
	round 0 "$warm" /dev/null 2>/dev/null
	: >"$out"
	for rep in $(seq "$reps"); do
		echo "== round $rep/$reps" >&2
		round "$rep" "$dur" "$out"
	done

	echo
	echo "### realip-agent unwrap vs go-mmproxy and HAProxy (usesrc clientip): edge namespace -> origin namespace (veth) -> unwrapper -> server on 127.0.0.1; $cores CPUs shared by all"
	echo "### median [min .. max] over $reps rounds of $dur; relay CPU = the unwrapper's cores busy and CPU time per unit; gen CPU = the load generator's cores"
	"$load" report -subject realip -base go-mmproxy,haproxy,haproxy-splice -ceiling direct \
		-variant realip-spp:0.90,realip-ppv2-first "$out"
	echo
	echo "(UDP: realip, go-mmproxy: PROXY v2 on every datagram; realip-spp: SPP on every datagram and reply;"
	echo " realip-ppv2-first: PROXY v2 on a flow's first datagram; direct: no header, no unwrapper. Raw results in $out)"
fi

[[ -n $profile ]] && want realip || exit 0

# Profiles: perf samples realip-agent (all its threads) while each load
# runs against it.
mkdir -p "$profile"
cp "$agent" "$profile/realip-agent"
apid=$(relay_pids realip)
for kind in $loads; do
	perf record -F 999 -g -p "$apid" -o "$profile/$kind.perf.data" -- sleep "${prof_dur%s}" 2>"$work/perf-$kind.log" &
	ppid=$!
	sleep 0.2
	next_seq
	run_dur=$(awk -v d="${prof_dur%s}" 'BEGIN { print d - 0.5 "s" }')
	measure "$kind" realip profile "$run_dur" /dev/null 2>/dev/null
	wait "$ppid" || { cat "$work/perf-$kind.log" >&2; continue; }
	echo
	echo "### perf profile of realip-agent under the $kind load ($profile/$kind.perf.data; perf report -i it)"
	echo "### self time by function (kernel [k] and the agent [.]), top 25:"
	{ perf report -i "$profile/$kind.perf.data" --no-children -F overhead,sym --stdio -g none 2>/dev/null || true; } |
		grep -E '^ +[0-9.]+%' | head -n 25 || true
	echo "### the agent's functions, time including callees (children) and own (self), top 40:"
	{ perf report -i "$profile/$kind.perf.data" --children -F overhead_children,overhead,sym --stdio -g none 2>/dev/null || true; } |
		grep -E '\[\.\] ' | head -n 40 || true
done
