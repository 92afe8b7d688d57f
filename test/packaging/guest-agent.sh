#!/bin/bash
# guest-agent.sh - the realip-agent package under real systemd, run inside
# the VM by test/packaging/run.sh through vmtest/sysvm.sh (not by hand):
#
#   vmtest/sysvm.sh --env V1=... --env V2=... 6.1 -- \
#       realip-agent_V1-1_amd64.deb realip-agent_V2-1_amd64.deb \
#       toa.ko:/lib/modules/KVER/updates/dkms/toa.ko test/packaging/guest-agent.sh \
#       --cmd /test/guest-agent.sh
#
# toa.ko is the module DKMS built on the host from the toa-dkms package for
# this kernel's headers. The script installs version V1 of the package with
# dpkg (its postinst enables and starts the service under systemd), checks
# the service, its hardening as the kernel sees it, the module it loaded,
# `realip-agent status`, `systemctl reload`, `systemctl stop`, the
# modules-load.d/modprobe.d entries, an upgrade to V2 that keeps the edited
# configuration, the eBPF receiver under the same unit (receiver: ebpf:
# attached, pinned, reloaded, left in place by stop, detached by unload),
# an unwrap: entry under the same unit (a PROXY v1 connection reaches a
# server that parses nothing from the client's own address; stop removes
# the policy routing; needs /test/example-whoami and /test/busybox),
# removal (only the configuration stays) and purge (nothing stays). It prints one line per check and "N passed, N failed"; exit 1 if
# any failed.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive SYSTEMD_PAGER='' SYSTEMD_COLORS=0
: "${V1:?} ${V2:?}"
unit=realip-agent.service
kver=$(uname -r)
passed=0 failed=0

# shellcheck source=test/packaging/checks.sh
. "$(dirname "$0")/checks.sh"
# prefix TEXT: print stdin with TEXT before each line.
prefix() {
	local l
	while IFS= read -r l; do printf '%s%s\n' "$1" "$l"; done
}
loaded() { [[ -d /sys/module/toa ]] && grep -q '^toa ' /proc/modules; }
active() { [[ $(systemctl is-active "$unit") == active ]]; }
mainpid() { systemctl show -p MainPID --value "$unit"; }
# The agent's log lines reach the journal after systemctl has returned
# (journald reads the agent's output on its own), so every journal check
# waits for its line, bounded: a line that never comes still fails.

loads_logged() { dmesg | grep -c 'toa: realip TOA .* loaded' || true; }
# snapshot: the files of the root file system that packages own or make,
# without what changes by itself (logs, dpkg's own database, caches).
snapshot() {
	find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
		-o -path /test -o -path /var/log -o -path /var/lib/dpkg -o -path /var/cache \
		-o -path /var/tmp -o -path /var/lib/systemd/random-seed -o -path /etc/machine-id \
		-o -path /var/lib/systemd/timers -o -path /var/lib/systemd/journal \) -prune -o -print | sort
}

echo "guest: kernel $kver, PID 1 $(cat /proc/1/comm), upgrade $V1 -> $V2"
eq "PID 1" "$(cat /proc/1/comm)" systemd
check "DKMS-built toa.ko is in updates/dkms" test -f "/lib/modules/$kver/updates/dkms/toa.ko"
check "modprobe knows it (depmod)" sh -c "modinfo -F vermagic toa | grep -q '^$kver '"
check "toa is not loaded before the package is installed" sh -c '! grep -q "^toa " /proc/modules'
snapshot >/tmp/before

# --- install V1 under running systemd: the postinst enables and starts it.
echo "guest: dpkg -i realip-agent $V1"
if dpkg -i "/test/realip-agent_${V1}-1_amd64.deb" >/tmp/dpkg.log 2>&1; then
	ok "dpkg -i realip-agent $V1"
else
	bad "dpkg -i realip-agent $V1: $(cat /tmp/dpkg.log)"
fi
eq "enabled by the postinst" "$(systemctl is-enabled "$unit")" enabled
check "started by the postinst and active (Type=notify: module loaded and configured)" wait_for 30 active
check "toa loaded" loaded
check "the agent loaded the DKMS module" wait_for 10 sh -c "journalctl -u $unit -o cat | grep -q 'loaded the toa module.*path=/lib/modules/$kver/updates/dkms/toa.ko'"
eq "module version (sysfs)" "$(cat /sys/module/toa/version 2>/dev/null)" "$(modinfo -F version toa)"

# --- hardening, as the kernel applies it to the running process
pid=$(mainpid)
status=/proc/$pid/status
# CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_SYS_MODULE (16), CAP_PERFMON (38), CAP_BPF (39)
eq "bounding set = CAP_NET_ADMIN|CAP_SYS_MODULE|CAP_PERFMON|CAP_BPF|CAP_NET_BIND_SERVICE" "$(awk '/^CapBnd:/ {print $2}' "$status")" 000000c000011400
eq "effective set" "$(awk '/^CapEff:/ {print $2}' "$status")" 000000c000011400
eq "no_new_privs" "$(awk '/^NoNewPrivs:/ {print $2}' "$status")" 1
eq "seccomp filter mode" "$(awk '/^Seccomp:/ {print $2}' "$status")" 2
check "own mount namespace" test "$(readlink "/proc/$pid/ns/mnt")" != "$(readlink /proc/1/ns/mnt)"
check "/usr read-only for the service (ProtectSystem=strict)" sh -c "! nsenter -t $pid -m touch /usr/.realip-probe 2>/dev/null"
check "/etc read-only for the service" sh -c "! nsenter -t $pid -m touch /etc/realip/.probe 2>/dev/null"
check "/home hidden (ProtectHome)" sh -c "nsenter -t $pid -m sh -c 'test ! -e /root/.profile'"
for p in ProtectSystem=strict ProtectHome=yes PrivateTmp=yes PrivateDevices=yes \
	ProtectKernelTunables=yes ProtectKernelModules=no ProtectControlGroups=yes \
	RestrictNamespaces=yes MemoryDenyWriteExecute=yes LockPersonality=yes; do
	eq "systemctl show ${p%%=*}" "${p%%=*}=$(systemctl show -p "${p%%=*}" --value "$unit")" "$p"
done
# systemd prints the families sorted
eq "systemctl show RestrictAddressFamilies" "$(systemctl show -p RestrictAddressFamilies --value "$unit" | tr ' ' '\n' | sort | xargs)" \
	"AF_INET AF_INET6 AF_NETLINK AF_UNIX"
systemd-analyze security --no-pager "$unit" 2>/dev/null | tail -n 1 | prefix "guest: systemd-analyze security: "
if out=$(systemd-analyze verify "$unit" 2>&1) && [[ -z $out ]]; then ok "systemd-analyze verify $unit: clean"; else bad "systemd-analyze verify $unit: $out"; fi

# --- realip-agent status
if out=$(realip-agent status 2>&1); then ok "realip-agent status exits 0"; else bad "realip-agent status: $out"; fi
prefix "guest:   | " <<<"$out"
check "status: module loaded, netlink control" grep -Eq '^module: +toa .*live' <<<"$out"
check "status: netlink control" grep -Eq '^control: +netlink realip_toa' <<<"$out"
check "status -json: loaded" sh -c "realip-agent status -json | grep -q '\"loaded\": true'"
eq "modules loaded so far" "$(loads_logged)" 1

# --- systemctl reload pushes an edited configuration, no module reload
sed -i 's|^trusted: \[\]$|trusted:\n  - 198.51.100.0/24\n  - 2001:db8::/32|' /etc/realip/agent.yaml
check "agent.yaml edited" grep -q '^  - 198.51.100.0/24$' /etc/realip/agent.yaml
check "realip-agent check accepts it" realip-agent check -config /etc/realip/agent.yaml
pid=$(mainpid)
check "systemctl reload" systemctl reload "$unit"
check "the module trusts 198.51.100.0/24 and 2001:db8::/32 (read back over netlink)" \
	wait_for 10 sh -c "realip-agent status | grep -q '198.51.100.0/24, 2001:db8::/32'"
check "the module's parameter says so too" grep -q '198.51.100.0/24' /sys/module/toa/parameters/trusted
eq "same agent process" "$(mainpid)" "$pid"
eq "module not reloaded" "$(loads_logged)" 1
check "journal: configuration reloaded" wait_for 10 sh -c "journalctl -u $unit -o cat | grep -q 'configuration reloaded'"

# --- a bad file: refused whole, the settings in force stay
cp /etc/realip/agent.yaml /tmp/agent.yaml.good
echo 'kinds: [300]' >>/etc/realip/agent.yaml
systemctl reload "$unit"
check "a bad file is refused (journal names the field)" wait_for 10 sh -c "journalctl -u $unit -o cat | grep -q 'configuration not applied.*kinds'"
check "still active after a bad reload" active
check "trust unchanged after a bad reload" sh -c "realip-agent status | grep -q '198.51.100.0/24'"
cp /tmp/agent.yaml.good /etc/realip/agent.yaml

# --- systemctl stop leaves the module loaded
check "systemctl stop" systemctl stop "$unit"
eq "stopped" "$(systemctl is-active "$unit")" inactive
check "the module stays loaded after stop" loaded
check "and keeps its trust" sh -c "realip-agent status | grep -q '198.51.100.0/24'"

# --- modules-load.d and modprobe.d: the module comes back without the agent
check "/etc/modules-load.d/toa.conf names toa" grep -qx toa /etc/modules-load.d/toa.conf
check "/etc/modprobe.d/toa.conf sets the kinds" grep -qx 'options toa kinds=200,253,254' /etc/modprobe.d/toa.conf
check "realip-agent unload" realip-agent unload
check "unloaded" sh -c '! grep -q "^toa " /proc/modules'
check "systemd-modules-load loads it again" systemctl restart systemd-modules-load.service
check "loaded by systemd-modules-load" loaded
eq "with the kinds of modprobe.d" "$(cat /sys/module/toa/parameters/kinds)" 200,253,254
realip-agent modprobe-conf >/tmp/toa.conf && cp /tmp/toa.conf /etc/modprobe.d/toa.conf
check "realip-agent modprobe-conf writes the trust into modprobe.d" grep -q 'trusted=198.51.100.0/24' /etc/modprobe.d/toa.conf
realip-agent unload >/dev/null
systemctl restart systemd-modules-load.service
check "a boot-time load trusts what agent.yaml says" grep -q '198.51.100.0/24' /sys/module/toa/parameters/trusted
check "systemctl start" systemctl start "$unit"
check "it adopted the loaded module" wait_for 10 sh -c "journalctl -u $unit -o cat | grep -q 'adopted the loaded toa module'"
check "active again" wait_for 10 active

# --- upgrade V1 -> V2 keeps the edited configuration and restarts the agent
pid=$(mainpid)
cp /etc/realip/agent.yaml /tmp/agent.yaml.edited
cp /etc/modprobe.d/toa.conf /tmp/modprobe.edited
echo "guest: dpkg -i realip-agent $V2 (upgrade)"
if dpkg -i "/test/realip-agent_${V2}-1_amd64.deb" </dev/null >/tmp/dpkg.log 2>&1; then
	ok "dpkg -i realip-agent $V2 (upgrade, no prompt)"
else
	bad "upgrade: $(cat /tmp/dpkg.log)"
fi
eq "installed version" "$(dpkg-query -W -f='${Version}' realip-agent)" "$V2-1"
check "edited agent.yaml kept" cmp -s /etc/realip/agent.yaml /tmp/agent.yaml.edited
check "edited modprobe.d/toa.conf kept" cmp -s /etc/modprobe.d/toa.conf /tmp/modprobe.edited
check "no .dpkg-new/.dpkg-dist left" sh -c '! ls /etc/realip /etc/modprobe.d /etc/modules-load.d | grep -q dpkg-'
check "active after the upgrade" wait_for 30 active
check "restarted by the upgrade" test "$(mainpid)" != "$pid"
check "the new agent adopted the module" wait_for 10 sh -c "journalctl -u $unit -o cat | grep -c 'adopted the loaded toa module' | grep -qx 2"
check "trust survived the upgrade" sh -c "realip-agent status | grep -q '198.51.100.0/24'"

# --- the eBPF receiver under the same unit: no module, pins under bpffs
pins=/sys/fs/bpf/realip/toa
check "systemctl stop, realip-agent unload (the module goes)" sh -c "systemctl stop $unit && realip-agent unload"
check "toa unloaded" sh -c '! grep -q "^toa " /proc/modules'
sed -i 's/^receiver: auto$/receiver: ebpf/' /etc/realip/agent.yaml
check "agent.yaml: receiver: ebpf" grep -qx 'receiver: ebpf' /etc/realip/agent.yaml
check "systemctl start with receiver: ebpf" systemctl start "$unit"
check "active (Type=notify: the eBPF receiver attached and configured)" wait_for 30 active
check "journal: attached the eBPF receiver" wait_for 10 sh -c "journalctl -u $unit -o cat | grep -q 'attached the eBPF TOA receiver'"
check "pinned in $pins by the sandboxed agent" test -e "$pins/link_sockops" -a -e "$pins/toa_settings"
check "no module loaded" sh -c '! grep -q "^toa " /proc/modules'
if out=$(realip-agent status 2>&1); then ok "status exits 0 with the eBPF receiver"; else bad "status: $out"; fi
prefix "guest:   | " <<<"$out"
check "status: receiver ebpf, attached to the root cgroup" grep -Eq '^cgroup: +/sys/fs/cgroup \(id [0-9]+\)$' <<<"$out"
check "status: the trust list is in the pinned maps" grep -q '198.51.100.0/24, 2001:db8::/32' <<<"$out"
# metrics over bash's /dev/tcp (the guest has no HTTP client)
scrape() { (exec 3<>/dev/tcp/127.0.0.1/9788 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3); }
ebpf_metrics() {
	local m
	m=$(scrape) && grep -q '^realip_toa_receiver_info{receiver="ebpf"} 1' <<<"$m" &&
		grep -q '^realip_toa_module_loaded 1' <<<"$m" && grep -q '^realip_toa_syn_recv_sock_toa_total ' <<<"$m"
}
check "metrics: receiver_info ebpf, receiver in place, toa.ko's row names" wait_for 10 ebpf_metrics
sed -i 's|^  - 2001:db8::/32$|  - 2001:db8::/32\n  - 203.0.113.0/24|' /etc/realip/agent.yaml
pid=$(mainpid)
check "systemctl reload (eBPF)" systemctl reload "$unit"
check "the pinned maps trust 203.0.113.0/24 too" wait_for 10 sh -c "realip-agent status | grep -q '198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32'"
eq "same agent process after reload" "$(mainpid)" "$pid"
check "systemctl stop leaves the eBPF receiver pinned" sh -c "systemctl stop $unit && test -e $pins/link_sockops"
check "realip-agent unload detaches and unpins it" sh -c "realip-agent unload | grep -q 'eBPF TOA receiver detached and unpinned' && test ! -e $pins"
cp /tmp/agent.yaml.edited /etc/realip/agent.yaml
check "systemctl start with receiver: auto again" systemctl start "$unit"
check "active, the DKMS module loaded again" wait_for 30 sh -c "systemctl is-active -q $unit && grep -q '^toa ' /proc/modules"

# --- transparent unwrap under the same unit (realip-agent run with an
# unwrap: list): a relay on a privileged port (CAP_NET_BIND_SERVICE) takes
# a PROXY v1 connection from a trusted edge (here a bash client on
# loopback) and connects to a server that parses nothing (whoami, every
# peer untrusted, so it reports getpeername()) from the client's own
# address (CAP_NET_ADMIN: IP_TRANSPARENT, SO_MARK and the policy routing,
# which stop removes). busybox's ip lists the rules (no iproute2 here).
rules() { /test/busybox ip rule | grep -c '^7710:' || true; }
/test/example-whoami -tcp 127.0.0.1:8080 -proto ppv1 -trust 192.0.2.1/32 >/tmp/unwrap-whoami.log 2>&1 &
whoami=$!
check "the plain server (whoami) listens on 127.0.0.1:8080" wait_for 10 listening 8080
cat >>/etc/realip/agent.yaml <<'EOF'
unwrap:
  - name: web
    listen: 127.0.0.1:443
    network: tcp
    accept: [ppv1]
    to: 127.0.0.1:8080
    trusted: [127.0.0.0/8]
EOF
sed -i '/^unwrap: \[\]$/d' /etc/realip/agent.yaml
check "realip-agent check accepts the unwrap entry" realip-agent check -config /etc/realip/agent.yaml
eq "no policy rules before" "$(rules)" 0
pid=$(mainpid)
check "systemctl reload starts the relay" systemctl reload "$unit"
check "the relay listens on 127.0.0.1:443" wait_for 10 listening 443
eq "same agent process" "$(mainpid)" "$pid"
eq "policy rules at priority 7710 (fwmark and loopback, IPv4 and IPv6 are separate lists: IPv4 here)" "$(rules)" 2
unwrapped() {
	(exec 3<>/dev/tcp/127.0.0.1/443 && printf 'PROXY TCP4 198.51.100.7 127.0.0.1 40000 443\r\n' >&3 && head -n 1 <&3)
}
answer=$(unwrapped 2>&1)
echo "guest: server's answer through the relay: $answer"
check "the server saw the client's own address (client=198.51.100.7:40000 via=none)" \
	grep -q '^client=198.51.100.7:40000 .*via=none' <<<"$answer"
relayed() { scrape | grep -Eq '^realip_unwrap_relayed_total\{[^}]*entry="web"[^}]*\} [1-9]'; }
check "metrics: realip_unwrap_relayed_total for entry web" wait_for 10 relayed
check "systemctl stop" systemctl stop "$unit"
check "the relay is gone" wait_for 10 not_listening 443
eq "the policy rules are gone" "$(rules)" 0
kill "$whoami" 2>/dev/null
wait "$whoami" 2>/dev/null
cp /tmp/agent.yaml.edited /etc/realip/agent.yaml
check "systemctl start without the unwrap entry" systemctl start "$unit"
check "active" wait_for 30 active

# --- remove: service stopped, program gone, configuration kept
echo "guest: dpkg -r realip-agent"
check "dpkg -r realip-agent" sh -c 'dpkg -r realip-agent >/tmp/dpkg.log 2>&1'
eq "unit stopped by the prerm" "$(systemctl is-active "$unit")" inactive
eq "dpkg state" "$(dpkg-query -W -f='${db:Status-Abbrev}' realip-agent)" "rc "
check "program gone" test ! -e /usr/bin/realip-agent
check "unit file gone" test ! -e /lib/systemd/system/realip-agent.service
check "edited agent.yaml kept on remove" cmp -s /etc/realip/agent.yaml /tmp/agent.yaml.edited
check "the module stays loaded (servers keep their addresses)" loaded
snapshot >/tmp/after-remove
left=$(comm -13 /tmp/before /tmp/after-remove)
prefix "guest: left after remove: " <<<"$left"
unexpected=$(grep -vE '^(/etc/realip|/etc/realip/agent\.yaml|/etc/modules-load\.d/toa\.conf|/etc/modprobe\.d/toa\.conf|/etc/systemd/system/multi-user\.target\.wants/realip-agent\.service|/etc/systemd/system/realip-agent\.service|/var/lib/systemd/deb-systemd-helper-masked|/var/lib/systemd/deb-systemd-helper-(enabled|masked)(/.*)?realip-agent\.service(\.dsh-also)?)$' <<<"$left" | grep . || true)
eq "after remove only configuration and deb-systemd-helper state remain (unexpected: ${unexpected:-none})" "$unexpected" ""
check "the enable link is inert (points to a removed unit file or is masked)" sh -c \
	"! systemctl is-enabled $unit 2>/dev/null | grep -qx enabled"

# --- purge: nothing stays
echo "guest: dpkg -P realip-agent"
check "dpkg -P realip-agent" sh -c 'dpkg -P realip-agent >/tmp/dpkg.log 2>&1'
check "dpkg forgot it" sh -c '! dpkg-query -W realip-agent 2>/dev/null'
snapshot >/tmp/after-purge
diff=$(diff /tmp/before /tmp/after-purge)
eq "after purge the file system is as before the install (diff: ${diff:-none})" "$diff" ""

# --- the module unloads cleanly at the end (the console is checked for oopses)
check "rmmod toa" rmmod toa

echo "guest-agent: $passed passed, $failed failed"
((failed == 0))
