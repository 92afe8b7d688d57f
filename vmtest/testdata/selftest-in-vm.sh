#!/bin/sh
# Runs in the guest for vmtest/selftest.sh: load, check and unload the hello
# module, check the mounts the harness promises, then the netns/veth check.
set -eu
fail() {
	echo "selftest: FAIL: $*"
	exit 1
}
param=vmtest-$$

insmod /test/hello.ko who="$param" || fail "insmod hello.ko"
dmesg | grep -q "realip-vmtest hello: loaded, who=$param" || fail "no load line in dmesg"
got=$(cat /sys/module/hello/parameters/who) || fail "no /sys/module/hello/parameters/who"
[ "$got" = "$param" ] || fail "parameter who is '$got', want '$param'"
grep -q '^hello ' /proc/modules || fail "hello not in /proc/modules"
rmmod hello || fail "rmmod hello"
dmesg | grep -q "realip-vmtest hello: unloaded, who=$param" || fail "no unload line in dmesg"
[ ! -e /sys/module/hello ] || fail "/sys/module/hello still there after rmmod"
echo "selftest: hello.ko loaded with who=$param, checked, unloaded"

[ -f /sys/fs/cgroup/cgroup.controllers ] || fail "cgroup2 not mounted at /sys/fs/cgroup"
grep -q ' /sys/fs/bpf bpf ' /proc/mounts || fail "bpffs not mounted at /sys/fs/bpf"
grep -q '^veth ' /proc/modules || [ -d /sys/module/veth ] || fail "veth not loaded"
echo "selftest: cgroup2 ($(cat /sys/fs/cgroup/cgroup.controllers)) and bpffs mounted, veth loaded"

/test/netcheck || fail "netcheck"
