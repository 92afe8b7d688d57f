#!/usr/bin/env bash
# Compares realip-edge with HAProxy (mode tcp) and nginx stream relaying on
# loopback, all in the same run:
#
#   tput  TCP throughput: CONNS connections stream client -> relay -> a
#         discard origin for DUR; MB/s.
#   conn  new connections: WORKERS workers connect, send 64 bytes, read the
#         64-byte echo, close, for DUR; conn/s and p50/p99 latency.
#   udp   UDP: FLOWS flows of 64-byte request/response echo (WINDOW requests
#         in flight per flow) for DUR; requests/s (2 datagrams each).
#
#   bench/edge.sh                       # REPS=3 rounds, DUR=3s each (~2 min)
#   REPS=5 DUR=5s bench/edge.sh
#   LOADS=udp WINDOW=8 bench/edge.sh    # one load only; 8 requests in flight per flow
#   PROFILE=/tmp/edgeprof bench/edge.sh # then CPU-profile realip-edge (package
#                                       # edge run by bench/edgeload) under each load
#   REPS=0 PROFILE=/tmp/edgeprof bench/edge.sh   # the profiles only
#
# Relays, each on 127.0.0.1 with its own ports and the same origin:
#   realip-edge       rules "... off off" (no header), -listen-ip 127.0.0.1
#   realip-edge-ppv1  the conn load with a PROXY v1 header (origin strips it):
#                     the cost of the header; not compared with the baselines
#   realip-edge-goroutine  realip-edge with -goroutine-relay (two goroutines
#                     per TCP connection, one per UDP port and per flow,
#                     instead of the epoll loops): what the loops gain; not
#                     compared with the baselines
#   haproxy           2.6, mode tcp, nbthread 2 (no UDP: HAProxy has no UDP proxy)
#   haproxy-splice    the same with "option splice-auto"
#   nginx             stream proxy_pass, worker_processes 2, UDP "listen ... udp
#                     reuseport" with the default proxy_responses (unlimited,
#                     one session per client flow, like realip-edge)
# Every relay gets the same 2 cores: HAProxy and nginx 2 threads/workers,
# realip-edge GOMAXPROCS = number of CPUs. The load generator and the origin
# run on the same cores, identically for every relay; the table shows the
# relay's own CPU (cores busy, and CPU time per MB/connection/request) so
# that efficiency can be compared apart from that contention.
#
# Each round runs every load against every relay back to back, the relay
# order rotating from round to round, so that drift in the machine's load
# hits them alike; a short warm-up round comes first and is not counted.
# The report gives the median and [min .. max] over the rounds and
# realip-edge's ratio to the best baseline (the best of haproxy,
# haproxy-splice, nginx by median), with the same-round pairs' range.
# Raw result lines go to $OUT (default /tmp/edge-bench.txt).
#
# Needs haproxy, nginx and nginx's stream module (Debian: haproxy,
# nginx-core, libnginx-mod-stream; scripts/deps.sh installs them). Installs
# nothing itself. Everything it starts is stopped on exit, and its configs,
# logs and pids live in a temporary directory that is removed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$root/bench/lib.sh" # stop_jobs, round
reps=${REPS:-3}
dur=${DUR:-3s}
warm=${WARM:-0.5s}
conns=${CONNS:-4}
workers=${WORKERS:-8}
flows=${FLOWS:-4}
window=${WINDOW:-1}
loads=${LOADS:-tput conn udp}
base=${BASE:-23100}
out=${OUT:-/tmp/edge-bench.txt}
profile=${PROFILE:-}
prof_dur=${PROF_DUR:-8s}
stream_mod=${NGINX_STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}

export PATH=$PATH:/usr/sbin:/sbin
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || missing+=(nginx-core)
[[ -f $stream_mod ]] || missing+=(libnginx-mod-stream)
if ((${#missing[@]})); then
	echo "edge.sh: missing ${missing[*]}; install with: scripts/deps.sh haproxy nginx-core libnginx-mod-stream" >&2
	exit 1
fi

work=$(mktemp -d /tmp/edge-bench.XXXXXX)
# cleanup stops what this script started (its own background jobs, see
# stop_jobs) and removes its directory.
cleanup() {
	stop_jobs 30
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Ports: relay k uses base+10k (tput), +1 (echo), +2 (udp); the origin base+90...
port() { echo $((base + $1)); }
origin_discard=$(port 90) origin_echo=$(port 91) origin_echo_v1=$(port 92) origin_udp=$(port 93)
busy=$(ss -Hltnu 2>/dev/null | awk '{print $5}' | sed 's/.*://' | sort -u || true)
for p in $(seq "$base" $((base + 99))); do
	if grep -qx "$p" <<<"$busy"; then
		echo "edge.sh: port $p is in use; pick another range with BASE=PORT (100 ports)" >&2
		exit 1
	fi
done

echo "== building" >&2
(cd "$root" && go build -o "$work/realip-edge" ./cmd/realip-edge && go build -o "$work/edgeload" ./bench/edgeload)
load=$work/edgeload

"$load" origin -discard "127.0.0.1:$origin_discard" -echo "127.0.0.1:$origin_echo" \
	-echo-ppv1 "127.0.0.1:$origin_echo_v1" -udp "127.0.0.1:$origin_udp" 2>"$work/origin.log" &
"$load" wait -tcp "127.0.0.1:$origin_discard,127.0.0.1:$origin_echo,127.0.0.1:$origin_echo_v1" -udp "127.0.0.1:$origin_udp"

# Relay table: name, tput port, echo port, udp port (- when not served).
declare -A tput_port echo_port udp_port pids
relays=()
add_relay() { relays+=("$1"); tput_port[$1]=$2; echo_port[$1]=$3; udp_port[$1]=$4; }

# fail_start NAME LOG: a relay did not come up.
fail_start() {
	echo "edge.sh: $1 did not start; its log:" >&2
	tail -n 20 "$2" >&2
	exit 1
}

start_edge() { # name k mode udp(yes/no) tput(yes/no) [realip-edge flag...]
	local name=$1 k=$2 mode=$3 udp=$4 tput=$5 rules=$work/$1.rules
	shift 5
	local tp=- ep=$(port $((10 * k + 1))) up=-
	: >"$rules"
	if [[ $tput == yes ]]; then
		tp=$(port $((10 * k)))
		echo "tcp:$tp 127.0.0.1 $origin_discard off off" >>"$rules"
	fi
	local oecho=$origin_echo
	[[ $mode == ppv1 ]] && oecho=$origin_echo_v1
	echo "tcp:$ep 127.0.0.1 $oecho off $mode" >>"$rules"
	if [[ $udp == yes ]]; then
		up=$(port $((10 * k + 2)))
		echo "udp:$up 127.0.0.1 $origin_udp off off" >>"$rules"
	fi
	"$work/realip-edge" -rules "$rules" -listen-ip 127.0.0.1 -drain-timeout 2s "$@" 2>"$work/$name.log" &
	pids[$name]=$!
	add_relay "$name" "$tp" "$ep" "$up"
}

start_haproxy() { # name k extra-defaults-line
	local name=$1 k=$2 cfg=$work/$1.cfg
	local tp=$(port $((10 * k))) ep=$(port $((10 * k + 1)))
	cat >"$cfg" <<-EOF
		global
		    nbthread 2
		    maxconn 5000
		defaults
		    mode tcp
		    timeout connect 5s
		    timeout client 600s
		    timeout server 600s
		    $3
		listen tput
		    bind 127.0.0.1:$tp
		    server origin 127.0.0.1:$origin_discard
		listen echo
		    bind 127.0.0.1:$ep
		    server origin 127.0.0.1:$origin_echo
	EOF
	haproxy -db -f "$cfg" >"$work/$name.log" 2>&1 &
	pids[$name]=$!
	add_relay "$name" "$tp" "$ep" -
}

start_nginx() { # name k
	local name=$1 k=$2 cfg=$work/$1.conf
	local tp=$(port $((10 * k))) ep=$(port $((10 * k + 1))) up=$(port $((10 * k + 2)))
	mkdir -p "$work/$name"
	cat >"$cfg" <<-EOF
		load_module $stream_mod;
		worker_processes 2;
		worker_rlimit_nofile 20000;
		daemon off;
		pid $work/$name.pid;
		error_log $work/$name.log warn;
		events { worker_connections 9000; }
		stream {
		    server { listen 127.0.0.1:$tp; proxy_pass 127.0.0.1:$origin_discard; }
		    server { listen 127.0.0.1:$ep; proxy_pass 127.0.0.1:$origin_echo; }
		    server { listen 127.0.0.1:$up udp reuseport; proxy_pass 127.0.0.1:$origin_udp; proxy_timeout 30s; }
		}
	EOF
	nginx -p "$work/$name" -e "$work/$name.log" -c "$cfg" 2>>"$work/$name.log" &
	pids[$name]=$!
	add_relay "$name" "$tp" "$ep" "$up"
}

start_edge realip-edge 0 off yes yes
start_edge realip-edge-ppv1 1 ppv1 no no
start_edge realip-edge-goroutine 6 off yes yes -goroutine-relay
start_haproxy haproxy 2 ""
start_haproxy haproxy-splice 3 "option splice-auto"
start_nginx nginx 4

for r in "${relays[@]}"; do
	tcp=127.0.0.1:${echo_port[$r]}
	[[ ${tput_port[$r]} != - ]] && tcp+=,127.0.0.1:${tput_port[$r]}
	udp=
	[[ ${udp_port[$r]} != - ]] && udp=127.0.0.1:${udp_port[$r]}
	"$load" wait -tcp "$tcp" -udp "$udp" || fail_start "$r" "$work/$r.log"
done
# nginx's CPU is its workers' (the master only forks them).
ngx_workers=$(cat /proc/"${pids[nginx]}"/task/*/children 2>/dev/null | xargs)
[[ -n $ngx_workers ]] || fail_start nginx "$work/nginx.log"
pids[nginx]="${pids[nginx]} $ngx_workers"

# measure LOAD RELAY REP DUR: one run, its result lines on stdout.
measure() {
	local kind=$1 r=$2 rep=$3 d=$4 p
	local common=(-dur "$d" -label "$r" -rep "$rep" -pids "$(tr ' ' , <<<"${pids[$r]}")")
	case $kind in
	tput) p=${tput_port[$r]} ;;
	conn) p=${echo_port[$r]} ;;
	udp) p=${udp_port[$r]} ;;
	esac
	[[ $p == - ]] && return 0
	case $kind in
	tput) "$load" tput -addr "127.0.0.1:$p" -conns "$conns" "${common[@]}" ;;
	conn) "$load" conn -addr "127.0.0.1:$p" -workers "$workers" "${common[@]}" ;;
	udp) "$load" udp -addr "127.0.0.1:$p" -flows "$flows" -window "$window" "${common[@]}" ;;
	esac
}

cores=$(nproc)
echo "== $(haproxy -v | head -n1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3), realip-edge $(cd "$root" && git describe --always --dirty 2>/dev/null || echo '?'), $(go version | cut -d' ' -f3), $cores CPUs" >&2
echo "== loads ($loads): tput $conns conns; conn $workers workers, 64 B echo; udp $flows flows x window $window, 64 B; $dur each, $reps rounds" >&2
if ((reps > 0)); then
	echo "== warm-up round ($warm each)" >&2
	round 0 "$warm" >/dev/null
	: >"$out"
	for rep in $(seq "$reps"); do
		echo "== round $rep/$reps" >&2
		round "$rep" "$dur" | tee -a "$out" >&2
	done

	echo
	echo "### realip-edge vs HAProxy and nginx stream on loopback, $cores CPUs shared by relay, load generator and origin"
	echo "### median [min .. max] over $reps rounds of $dur; relay CPU = cores busy; CPU/op = relay CPU time per unit; gen CPU = load generator's cores"
	"$load" report -edge realip-edge -base haproxy,haproxy-splice,nginx -variants realip-edge-ppv1,realip-edge-goroutine "$out"
	echo
	echo "(realip-edge-ppv1: realip-edge writing a PROXY v1 header on each connection, the cost of the header;"
	echo " realip-edge-goroutine: realip-edge relaying with goroutines instead of epoll loops; raw results in $out)"
fi

[[ -n $profile ]] || exit 0

# Profiles: package edge run by "edgeload edge" with the same rules, one CPU
# profile per load, on ports base+50...
mkdir -p "$profile"
prof_filter='^ *flat|Total samples|realip/edge\.|net\.\(\*(TCPConn|UDPConn|netFD|sysDialer|TCPListener)\)\.[a-zA-Z]+$|net\.(newTCPConn|setNoDelay|setKeepAlive[A-Za-z]*)$|poll\.(spliceDrain|splicePump)$|^.* syscall\.[A-Z][A-Za-z0-9]*( \(inline\))?$|runtime\.(findRunnable|netpoll|futex|mallocgc|gcBgMarkWorker|newproc|sysmon)$|context\.AfterFunc$'
pt=$(port 50) pe=$(port 51) pu=$(port 52)
cat >"$work/prof.rules" <<-EOF
	tcp:$pt 127.0.0.1 $origin_discard off off
	tcp:$pe 127.0.0.1 $origin_echo off off
	udp:$pu 127.0.0.1 $origin_udp off off
EOF
for kind in $loads; do
	"$load" edge -rules "$work/prof.rules" -listen-ip 127.0.0.1 -cpuprofile "$profile/$kind.pprof" \
		-mutexprofile "$profile/$kind.mutex.pprof" 2>"$work/prof.log" &
	pp=$!
	"$load" wait -tcp "127.0.0.1:$pt,127.0.0.1:$pe" -udp "127.0.0.1:$pu" || fail_start profile "$work/prof.log"
	case $kind in
	tput) "$load" tput -addr "127.0.0.1:$pt" -conns "$conns" -dur "$prof_dur" -pids $pp -label profile ;;
	conn) "$load" conn -addr "127.0.0.1:$pe" -workers "$workers" -dur "$prof_dur" -pids $pp -label profile ;;
	udp) "$load" udp -addr "127.0.0.1:$pu" -flows "$flows" -window "$window" -dur "$prof_dur" -pids $pp -label profile ;;
	esac
	kill -TERM $pp
	wait $pp || true
	cp "$load" "$profile/edgeload" # pprof wants the binary for symbols of old profiles
	echo
	echo "### CPU profile of package edge under the $kind load ($profile/$kind.pprof)"
	echo "### cumulative, edge's functions, the net and poll calls and syscalls they make, the scheduler:"
	(cd "$root" && go tool pprof -top -cum -nodecount=400 "$profile/$kind.pprof" 2>/dev/null) |
		grep -E "$prof_filter" | head -n 45
done
