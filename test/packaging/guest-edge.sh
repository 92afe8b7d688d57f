#!/bin/bash
# guest-edge.sh - the realip-edge package under real systemd, run inside the
# VM by test/packaging/run.sh through vmtest/sysvm.sh after guest-agent.sh
# (not by hand). Needs in /test: realip-edge_V1-1_amd64.deb, example-whoami,
# example-probe (static), and toa.ko installed for the kernel (DKMS's).
#
# Installs the package (enabled and started by its postinst, with the
# example rules: nothing to forward), checks its hardening as the kernel
# applies it (a dynamic user with CAP_NET_BIND_SERVICE, CAP_NET_ADMIN and
# CAP_BPF only), then adds a toa rule on port 443 and reloads: the edge,
# as that unprivileged user, must listen on a privileged port and attach
# its eBPF TOA sender to its cgroup, and a connection through it must
# reach an origin (examples/whoami with toa.ko loaded) with the TOA option
# (via=toa). Then purge leaves nothing. Prints "N passed, N failed".
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive SYSTEMD_PAGER='' SYSTEMD_COLORS=0
: "${V1:?}"
unit=realip-edge.service
passed=0 failed=0
# shellcheck source=test/packaging/checks.sh
. "$(dirname "$0")/checks.sh"
active() { [[ $(systemctl is-active "$unit") == active ]]; }
mainpid() { systemctl show -p MainPID --value "$unit"; }
snapshot() {
	find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
		-o -path /test -o -path /var/log -o -path /var/lib/dpkg -o -path /var/cache \
		-o -path /var/tmp -o -path /var/lib/systemd/random-seed -o -path /etc/machine-id \
		-o -path /var/lib/systemd/timers -o -path /var/lib/systemd/journal \) -prune -o -print | sort
}

echo "guest: realip-edge $V1"
snapshot >/tmp/edge-before
check "modprobe toa trusted=127.0.0.0/8 (the origin's side)" modprobe toa trusted=127.0.0.0/8

if dpkg -i "/test/realip-edge_${V1}-1_amd64.deb" >/tmp/dpkg.log 2>&1; then
	ok "dpkg -i realip-edge $V1"
else
	bad "dpkg -i realip-edge: $(cat /tmp/dpkg.log)"
fi
eq "enabled by the postinst" "$(systemctl is-enabled "$unit")" enabled
check "started with the example rules (nothing to forward)" wait_for 20 active
if out=$(systemd-analyze verify "$unit" 2>&1) && [[ -z $out ]]; then ok "systemd-analyze verify $unit: clean"; else bad "systemd-analyze verify $unit: $out"; fi

pid=$(mainpid)
status=/proc/$pid/status
check "runs as a dynamic user, not root" test "$(awk '/^Uid:/ {print $2}' "$status")" -ne 0
eq "bounding set = CAP_NET_BIND_SERVICE|CAP_NET_ADMIN|CAP_BPF" "$(awk '/^CapBnd:/ {print $2}' "$status")" 0000008000001400
eq "effective set (ambient)" "$(awk '/^CapEff:/ {print $2}' "$status")" 0000008000001400
eq "no_new_privs" "$(awk '/^NoNewPrivs:/ {print $2}' "$status")" 1
eq "seccomp filter mode" "$(awk '/^Seccomp:/ {print $2}' "$status")" 2
systemd-analyze security --no-pager "$unit" 2>/dev/null | tail -n 1 | sed 's/^/guest: systemd-analyze security: /'

# --- an origin behind a toa rule on a privileged port
/test/example-whoami -tcp 127.0.0.1:9090 -proto toa -trust 127.0.0.0/8 >/tmp/whoami.log 2>&1 &
whoami=$!
check "origin (whoami -proto toa) listening" wait_for 10 listening 9090
echo 'tcp:443 127.0.0.1 9090 off toa vmtest' >>/etc/realip/edge.rules
check "realip-edge -check accepts the rules" realip-edge -rules /etc/realip/edge.rules -origin-groups /etc/realip/edge.groups -check
check "systemctl reload" systemctl reload "$unit"
check "the edge listens on 443 as its dynamic user" wait_for 10 listening 443
eq "same edge process after reload" "$(mainpid)" "$pid"
answer=$(/test/example-probe -tcp 127.0.0.1:443 2>&1)
echo "guest: probe: $answer"
check "the origin got the connection with TOA (via=toa)" grep -q 'via=toa' <<<"$answer"
# shellcheck disable=SC2016 # awk's own $ fields
check "toa.ko counted it (syn_recv_sock_toa > 0 in /proc/net/toa_stats)" \
	awk '$1 == "syn_recv_sock_toa" { for (i = 2; i <= NF; i++) n += $i } END { exit !(n > 0) }' /proc/net/toa_stats
if journalctl -u "$unit" -o cat | grep -Ei 'level=(error|warn)'; then bad "errors in the edge's journal"; else ok "no errors in the edge's journal"; fi
kill "$whoami" 2>/dev/null
wait "$whoami" 2>/dev/null

# --- stop and purge
check "systemctl stop" systemctl stop "$unit"
check "port 443 closed" wait_for 5 not_listening 443
check "dpkg -P realip-edge" sh -c 'dpkg -P realip-edge >/tmp/dpkg.log 2>&1'
snapshot >/tmp/edge-after
diff=$(diff /tmp/edge-before /tmp/edge-after)
eq "after purge the file system is as before the install (diff: ${diff:-none})" "$diff" ""
check "rmmod toa" rmmod toa

echo "guest-edge: $passed passed, $failed failed"
((failed == 0))
