#!/usr/bin/env bash
# Latency of a client with a complete PROXY header while 2000 trusted peers
# stall their headers (issue 18.2), for this tree's listener and, with
# BASE=COMMIT, for the listener of that commit in the same run.
#
#   bench/slowpeers.sh                     # this tree, 1 and 50 sources
#   BASE=2be5bfa PROBES=20 bench/slowpeers.sh
#
# STALLS (2000), PROBES (300), SOURCES ("1 50") tune it. The program is
# bench/slowpeers/main.go; for BASE it is copied into a worktree of that
# commit, so it uses only the listener API both have.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
stalls=${STALLS:-2000} probes=${PROBES:-300} sources=${SOURCES:-"1 50"}
work=$(mktemp -d)
cleanup() {
	[[ -z ${BASE:-} ]] || git -C "$root" worktree remove --force "$work/base" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

(cd "$root" && go build -o "$work/slowpeers" ./bench/slowpeers)
if [[ -n ${BASE:-} ]]; then
	git -C "$root" worktree add -q --detach "$work/base" "$BASE"
	mkdir -p "$work/base/bench/slowpeers"
	cp "$root/bench/slowpeers/main.go" "$work/base/bench/slowpeers/"
	(cd "$work/base" && go build -o "$work/slowpeers-base" ./bench/slowpeers)
fi
for s in $sources; do
	echo "this tree: $("$work/slowpeers" -stalls "$stalls" -sources "$s" -probes "$probes")"
	if [[ -n ${BASE:-} ]]; then
		echo "$BASE:   $("$work/slowpeers-base" -stalls "$stalls" -sources "$s" -probes "$probes")"
	fi
done
