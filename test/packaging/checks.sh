# shellcheck shell=bash
# checks.sh - the check helpers of the packaging tests, sourced by run.sh on
# the host and by guest-agent.sh and guest-edge.sh in the VM (run.sh copies
# it into the guest's /test). The sourcing script sets passed=0 failed=0.

ok() {
	passed=$((passed + 1))
	echo "ok   - $*"
}
bad() {
	failed=$((failed + 1))
	echo "FAIL - $*"
}
# check DESCRIPTION COMMAND...: one check, by the command's status.
check() {
	local d=$1
	shift
	if "$@"; then ok "$d"; else bad "$d"; fi
}
# eq DESCRIPTION GOT WANT
eq() {
	if [[ $2 == "$3" ]]; then ok "$1: $2"; else bad "$1: got '$2', want '$3'"; fi
}
# wait_for SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
	local n=$(($1 * 10))
	shift
	while ((n-- > 0)); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}
# listening PORT: a TCP socket listens on PORT (from /proc: the guest has no iproute2).
listening() {
	local hex
	hex=$(printf '%04X' "$1")
	awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' /proc/net/tcp /proc/net/tcp6
}
not_listening() { ! listening "$1"; }
