#!/usr/bin/env bash
# deps.sh - install the Debian packages that tests need, only those missing.
#
#   usage: scripts/deps.sh PACKAGE...      e.g. scripts/deps.sh haproxy nginx-core iproute2
#
# Idempotent: installed packages are left alone, and when nothing is missing
# nothing is fetched. Otherwise it runs `apt-get update` once and installs the
# missing packages without recommends. Each action is one line on stdout.
#
# When it cannot install (not Debian, not root, apt fails) it warns and exits 0,
# so the tests that need the packages skip; with REALIP_STRICT=1 (set by CI)
# it exits 1 instead, as those tests would fail.
#
# Services: Debian starts daemons such as haproxy and nginx when it installs
# them. The tests run their own instances inside network namespaces, so a
# system daemon would only hold ports (80, 443, ...) and memory. This script
# forbids the start instead of stopping the daemons afterwards: for the
# duration of the install /usr/sbin/policy-rc.d exits 101 ("action
# forbidden"), which invoke-rc.d and deb-systemd-invoke both obey, so the
# daemons never run at all, with systemd, sysvinit or no init (containers).
# A policy-rc.d that was already there is put back afterwards. The units stay
# enabled, so a machine with systemd would start them at its next boot.
set -euo pipefail

readonly policy=/usr/sbin/policy-rc.d
readonly saved=/usr/sbin/policy-rc.d.realip-saved
readonly lock=/run/lock/realip-deps.lock
apt_log=

log() { printf 'deps: %s\n' "$*"; }

# cannot REASON: give up; an error with REALIP_STRICT=1, else a warning.
cannot() {
	if [[ ${REALIP_STRICT:-} == 1 ]]; then
		log "error: $* (REALIP_STRICT=1)" >&2
		exit 1
	fi
	log "warning: $*; tests that need them will skip (REALIP_STRICT=1 makes this an error)" >&2
	exit 0
}

# missing PACKAGE...: print the packages that are not installed, one a line.
missing() {
	local p
	for p; do
		[[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] ||
			printf '%s\n' "$p"
	done
}

check_args() {
	if (($# == 0)); then
		echo "usage: $0 PACKAGE..." >&2
		exit 2
	fi
	local p
	for p; do
		if [[ ! $p =~ ^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?$ ]]; then
			log "error: '$p' is not a Debian package name" >&2
			exit 2
		fi
	done
}

is_debian() {
	[[ -f /etc/debian_version ]] && command -v dpkg-query >/dev/null &&
		command -v apt-get >/dev/null
}

# apt_get ARGS...: run apt-get quietly; its output is shown only if it fails.
apt_get() {
	if ! DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 "$@" >"$apt_log" 2>&1; then
		tail -n 30 "$apt_log" >&2
		cannot "apt-get $* failed"
	fi
}

hold_services() {
	# A saved copy already there means an interrupted run left ours in place.
	if [[ -e $policy && ! -e $saved ]]; then
		mv -f "$policy" "$saved"
	fi
	printf '#!/bin/sh\n# Written by realip scripts/deps.sh during an install, removed after it.\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	log "forbidding service starts during the install ($policy exits 101)"
}

release_services() {
	if [[ -e $saved ]]; then
		mv -f "$saved" "$policy"
		log "restored the previous $policy"
	else
		rm -f "$policy"
		log "removed $policy"
	fi
}

on_exit() {
	if [[ -n $apt_log ]]; then
		rm -f "$apt_log"
	fi
	if [[ -e $policy ]] && grep -q 'realip scripts/deps.sh' "$policy"; then
		release_services
	fi
}

install() {
	exec 9>"$lock"
	flock -w 600 9 || cannot "another deps.sh holds $lock"
	local -a todo
	mapfile -t todo < <(missing "$@") # a parallel run may have installed some
	if ((${#todo[@]} == 0)); then
		log "installed meanwhile by another run: $*"
		return
	fi
	apt_log=$(mktemp)
	trap on_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	log "apt-get update"
	apt_get update
	hold_services
	log "apt-get install ${todo[*]}"
	apt_get install -y --no-install-recommends "${todo[@]}"
	release_services
	mapfile -t todo < <(missing "${todo[@]}")
	if ((${#todo[@]} > 0)); then
		cannot "still not installed after apt-get install: ${todo[*]}"
	fi
}

main() {
	check_args "$@"
	is_debian || cannot "not a Debian system, cannot check or install: $*"
	local -a todo
	mapfile -t todo < <(missing "$@")
	if ((${#todo[@]} == 0)); then
		log "all installed: $*"
		return
	fi
	log "missing: ${todo[*]}"
	((EUID == 0)) || cannot "not root, cannot install: ${todo[*]}"
	install "${todo[@]}"
	log "installed: ${todo[*]}"
}

main "$@"
