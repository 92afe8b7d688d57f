#!/usr/bin/env bash
# Issue 18 part 3: one source address holding every UDP flow of realip-edge.
# 100 sockets from 127.0.0.1, one datagram each every 0.5 s, against
# -max-udp-flows 100; then 8 newcomers from 127.0.0.2..9. Runs the epoll
# loops and -goroutine-relay, on loopback only (~6 s per mode).
#
#   bench/udp-flood.sh                                # builds ./cmd/realip-edge
#   EDGE=/tmp/realip-edge-before bench/udp-flood.sh   # an older binary
#   bench/udp-flood.sh -max-udp-flows-per-ip 50       # extra realip-edge flags
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
edge=${EDGE:-}
if [[ -z $edge ]]; then
	(cd "$root" && go build -o "$work/realip-edge" ./cmd/realip-edge)
	edge=$work/realip-edge
fi
(cd "$root" && go build -o "$work/udpflood" ./bench/udpflood)
for mode in loops goroutine; do
	extra=("$@")
	[[ $mode == goroutine ]] && extra+=(-goroutine-relay)
	echo "== $mode: $edge -max-udp-flows 100 ${extra[*]}"
	"$work/udpflood" -edge "$edge" -attackers 100 -newcomers 8 -- "${extra[@]}"
done
