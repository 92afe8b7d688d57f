# shellcheck shell=bash
# lib.sh - shared by bench/edge.sh and bench/unwrap.sh; sourced, not run.

# stop_jobs TENTHS: stop what the script started, its own background jobs,
# by PID (jobs -p lists only children not yet reaped, so no PID can be a
# stranger's): SIGTERM, up to TENTHS tenths of a second for them to end,
# then SIGKILL, and reap them.
stop_jobs() {
	local i
	# shellcheck disable=SC2046 # one word per PID
	kill -TERM $(jobs -p) 2>/dev/null || true
	for i in $(seq "$1"); do
		[[ -z $(jobs -rp) ]] && break
		sleep 0.1
	done
	# shellcheck disable=SC2046 # one word per PID
	kill -KILL $(jobs -rp) 2>/dev/null || true
	wait 2>/dev/null || true
}

# round REP DUR [ARG...]: every load of $loads against every relay of the
# array relays, the relays' order rotated by REP, so that drift in the
# machine's load hits them alike. Each run is the script's own
# "measure LOAD RELAY REP DUR ARG...".
# shellcheck disable=SC2154 # loads and relays are the script's
round() {
	local rep=$1 d=$2 n=${#relays[@]} kind i
	shift 2
	for kind in $loads; do
		for ((i = 0; i < n; i++)); do
			measure "$kind" "${relays[(i + rep) % n]}" "$rep" "$d" "$@"
		done
	done
}
