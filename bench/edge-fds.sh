#!/usr/bin/env bash
# Issue 18 part 4: realip-edge under a 256-descriptor limit it may not
# raise (CAP_SYS_RESOURCE dropped), 440 clients at once through a TCP rule
# to a group of two healthy echo origins; epoll loops and -goroutine-relay.
# Prints clients served, errors by reason, origin health and log lines.
#
#   bench/edge-fds.sh                                # builds ./cmd/realip-edge
#   EDGE=/tmp/realip-edge-before bench/edge-fds.sh   # an older binary
#   NOFILE=512 CLIENTS=1000 bench/edge-fds.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
edge=${EDGE:-}
if [[ -z $edge ]]; then
	(cd "$root" && go build -o "$work/realip-edge" ./cmd/realip-edge)
	edge=$work/realip-edge
fi
(cd "$root" && go build -o "$work/fdload" ./bench/fdload)
nofile=${NOFILE:-256}
for mode in loops goroutine; do
	extra=()
	[[ $mode == goroutine ]] && extra=(-goroutine-relay)
	echo "== $mode: nofile $nofile, $edge ${extra[*]}"
	"$work/fdload" -clients "${CLIENTS:-440}" -- setpriv --bounding-set=-sys_resource \
		prlimit --nofile="$nofile:$nofile" "$edge" "${extra[@]}"
done
