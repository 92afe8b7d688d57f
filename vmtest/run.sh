#!/usr/bin/env bash
# run.sh - boot a cached Debian kernel in QEMU (TCG) with a busybox initramfs
# holding the given files, run a test command in the guest, and judge it.
#
#   usage: vmtest/run.sh [options] ALIAS -- FILE...
#
#   --arch A   amd64 (default: qemu-system-x86_64, console ttyS0, the host's
#              busybox-static) or arm64 (qemu-system-aarch64 -M virt,
#              console ttyAMA0, bookworm's busybox-static:arm64 from the
#              cache); FILEs must then be arm64 programs
#   FILE       copied into the guest's /test/ (a folder: its contents);
#              SRC:DEST puts it at DEST (an absolute guest path) instead.
#              Programs must be static (Go: CGO_ENABLED=0).
#   --cmd CMD  run in the guest by sh -c, in /test (default: /test/run-in-vm)
#   --kmod M   also load module M (and its dependencies) from the kernel's
#              own modules at boot; repeatable. veth is always loaded.
#   --kmod-if-any M  the same, for a module the kernel may not have (a
#              kernel built without it boots without it)
#   --env K=V  set in the test's environment; repeatable
#   --timeout S  seconds before the VM is killed (default 300)
#   --mem SIZE   guest memory (default 1G); --smp N: CPUs (default 2)
#   --append A   extra kernel command line
#   --allow-taint MASK  taint bits that may be set at the end (default
#              0x3000: O out-of-tree and E unsigned module, which loading a
#              module we built always sets)
#   --log FILE   console log (default CACHE/logs/ALIAS-TIME.log)
#   -v         also show the console while it runs
#
# The guest mounts proc, sysfs, devtmpfs, devpts, tmpfs /tmp and /run,
# cgroup2 at /sys/fs/cgroup, bpffs at /sys/fs/bpf, debugfs and tracefs,
# sets lo up, loads the modules, runs CMD and powers off. Exit status 0 only
# when the console shows the PASS marker and none of Oops, BUG:, WARNING:,
# Kernel panic, Call Trace, and no taint outside MASK; 124 on a timeout.
set -euo pipefail
# shellcheck disable=SC2034 # read by lib.sh
PROG=run
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

cmd=/test/run-in-vm timeout_s=300 mem=1G smp=2 append='' allow_taint=0x3000 logfile='' verbose=0
arch=amd64
kmods=(veth) optional_kmods=() envs=()
while (($#)); do
	case $1 in
	--arch) arch=${2:?--arch needs amd64 or arm64}; shift 2 ;;
	--cmd) cmd=${2:?--cmd needs a value}; shift 2 ;;
	--kmod) kmods+=("${2:?--kmod needs a value}"); shift 2 ;;
	--kmod-if-any) optional_kmods+=("${2:?--kmod-if-any needs a value}"); shift 2 ;;
	--env) envs+=("${2:?--env needs K=V}"); shift 2 ;;
	--timeout) timeout_s=${2:?}; shift 2 ;;
	--mem) mem=${2:?}; shift 2 ;;
	--smp) smp=${2:?}; shift 2 ;;
	--append) append=${2:?}; shift 2 ;;
	--allow-taint) allow_taint=${2:?}; shift 2 ;;
	--log) logfile=${2:?}; shift 2 ;;
	-v | --verbose) verbose=1; shift ;;
	-h | --help) usage ;;
	--) die "the kernel alias goes before --" ;;
	-*) die "unknown option '$1' (see --help)" ;;
	*) break ;;
	esac
done
(($# >= 1)) || usage
alias=$1
shift
check_alias "$alias"
check_arch "$arch"
if (($#)); then
	[[ $1 == -- ]] || die "expected -- after the alias, got '$1'"
	shift
fi
files=("$@")
[[ $timeout_s =~ ^[0-9]+$ ]] || die "--timeout '$timeout_s' is not a number of seconds"
[[ $allow_taint =~ ^(0x[0-9a-fA-F]+|[0-9]+)$ ]] || die "--allow-taint '$allow_taint' is not a number"
for e in "${envs[@]}"; do
	[[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env '$e' is not K=V"
done

for f in "${files[@]}"; do
	src=$f
	[[ $f != *:/* ]] || src=${f%%:/*}
	[[ -e $src ]] || die "file '$src' not found"
done

qemu_machine "$smp" "$arch"
need_cmd "$QEMU_BIN" cpio gzip timeout
if [[ $arch == amd64 ]]; then
	need_cmd busybox
	busybox_bin=$(command -v busybox)
	[[ $(ldd "$busybox_bin" 2>&1) == *"not a dynamic executable"* ]] ||
		die "$busybox_bin is not static: scripts/deps.sh busybox-static"
else
	busybox_bin=$("$VMTEST_DIR/fetch.sh" --arch "$arch" --busybox)
fi

load_kernel "$alias" "$arch"

work=$(mktemp -d "${TMPDIR:-/tmp}/vmtest-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
ir=$work/initramfs
mkdir -p "$ir"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,test,etc/vmtest,root}
cp "$busybox_bin" "$ir/bin/busybox"

# --- files under test
for f in "${files[@]}"; do
	src=$f dest=''
	if [[ $f == *:/* ]]; then
		src=${f%%:/*} dest=/${f#*:/}
	fi
	[[ -e $src ]] || die "file '$src' not found"
	if [[ -d $src ]]; then
		mkdir -p "$ir${dest:-/test}"
		cp -a "$src/." "$ir${dest:-/test}/"
	else
		[[ -n $dest ]] || dest=/test/$(basename "$src")
		mkdir -p "$(dirname "$ir$dest")"
		cp -L "$src" "$ir$dest"
	fi
done

# --- kernel modules from the image, dependencies first
moddir=$KDIR/${MODDIR:?} # MODDIR, KVER, VMLINUZ: from vmtest.env
gmoddir=/lib/modules/$KVER
declare -A done_mods=()
load_order=()
# has_kmod NAME: whether the kernel has NAME, as a module or built in.
has_kmod() {
	local pat=${1//[-_]/[-_]}
	grep -Eq "/${pat}\.ko(\.[a-z]+)?\$" "$moddir/modules.builtin" 2>/dev/null ||
		[[ -n $(find "$moddir/kernel" -name "$pat.ko" -o -name "$pat.ko.*" | head -n 1) ]]
}
# add_kmod NAME: copy NAME.ko (decompressed) and its dependencies.
add_kmod() {
	local name=$1 pat file rel dep deps
	pat=${name//[-_]/[-_]}
	[[ -z ${done_mods[${name//-/_}]:-} ]] || return 0
	done_mods[${name//-/_}]=1
	if grep -Eq "/${pat}\.ko(\.[a-z]+)?\$" "$moddir/modules.builtin" 2>/dev/null; then
		return 0 # built in
	fi
	file=$(find "$moddir/kernel" -name "$pat.ko" -o -name "$pat.ko.*" | head -n 1)
	[[ -n $file ]] || die "kernel module '$name' not found in $KVER's modules (nor built in)"
	rel=${file#"$moddir"/}
	rel=${rel%.xz} rel=${rel%.zst} rel=${rel%.gz}
	mkdir -p "$(dirname "$ir$gmoddir/$rel")"
	case $file in
	*.xz) xz -dc "$file" >"$ir$gmoddir/$rel" ;;
	*.zst) need_cmd zstd && zstd -qdc "$file" >"$ir$gmoddir/$rel" ;;
	*.gz) gzip -dc "$file" >"$ir$gmoddir/$rel" ;;
	*) cp "$file" "$ir$gmoddir/$rel" ;;
	esac
	deps=$(tr '\0' '\n' <"$ir$gmoddir/$rel" | sed -n 's/^depends=//p' | head -n 1)
	for dep in ${deps//,/ }; do
		add_kmod "$dep"
	done
	load_order+=("$gmoddir/$rel")
}
for m in "${kmods[@]}"; do
	add_kmod "$m"
done
for m in "${optional_kmods[@]}"; do
	if has_kmod "$m"; then add_kmod "$m"; fi
done
printf '%s\n' "${load_order[@]}" >"$ir/etc/vmtest/modules"

# --- init
token=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
{
	for e in "${envs[@]}"; do
		printf 'export %q\n' "$e"
	done
} >"$ir/etc/vmtest/env"
printf '%s\n' "$cmd" >"$ir/etc/vmtest/cmd"
cat >"$ir/init" <<EOF
#!/bin/busybox sh
# vmtest init: generated by vmtest/run.sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /sys/fs/cgroup /sys/fs/bpf /run/netns
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run && mkdir -p /run/netns
mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "vmtest: cannot mount cgroup2"
mount -t bpf bpf /sys/fs/bpf || echo "vmtest: cannot mount bpffs"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ip link set lo up
result() {
	echo "REALIP-VMTEST-RESULT $token \$1 status=\$2 tainted=\$(cat /proc/sys/kernel/tainted)"
	sync
	poweroff -f
	sleep 30
}
for m in \$(cat /etc/vmtest/modules); do
	insmod "\$m" || { echo "vmtest: insmod \$m failed"; result FAIL 125; }
done
. /etc/vmtest/env
echo "REALIP-VMTEST: kernel \$(uname -r), running: \$(cat /etc/vmtest/cmd)"
cd /test
sh -c "\$(cat /etc/vmtest/cmd)" </dev/null
rc=\$?
if [ \$rc -eq 0 ]; then result PASS 0; else result FAIL \$rc; fi
EOF
chmod 755 "$ir/init"
initrd=$work/initrd.gz
(cd "$ir" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$initrd"

# --- boot
if [[ -z $logfile ]]; then
	mkdir -p "$CACHE/logs"
	tag=$alias
	[[ $arch == amd64 ]] || tag=$alias-$arch
	logfile=$CACHE/logs/$tag-$(date +%Y%m%d-%H%M%S)-$$.log
	# keep the 100 newest logs
	find "$CACHE/logs" -name '*.log' -printf '%T@ %p\n' | sort -rn | tail -n +100 |
		cut -d' ' -f2- | xargs -r rm -f
fi
mkdir -p "$(dirname "$logfile")"
qemu=("$QEMU_BIN" "${QEMU_MACHINE[@]}" -m "$mem"
	-nodefaults -no-user-config -display none -serial stdio -monitor none -no-reboot
	-kernel "$KDIR/$VMLINUZ" -initrd "$initrd"
	-append "console=$QEMU_CONSOLE panic=-1 oops=panic random.trust_cpu=on $append")
log "$alias: booting $KVER ($(du -k "$initrd" | cut -f1) KiB initramfs, timeout ${timeout_s}s, ${QEMU_MACHINE[*]}), log $logfile"
boot_vm "$logfile" "$verbose" "$timeout_s" "${qemu[@]}"

# fail REASON [EXIT]: show the console around the first kernel trouble (or
# its end), say why, and exit.
fail() {
	local first
	first=$(grep -nE "$TROUBLE_RE" "$logfile" | head -n 1 | cut -d: -f1 || true)
	if [[ -n $first ]]; then
		sed -n "$((first > 5 ? first - 5 : 1)),$((first + 40))p" "$logfile"
		echo '...'
		tail -n 5 "$logfile"
	else
		tail -n 60 "$logfile"
	fi | sed 's/^/  | /' >&2
	log "$alias ($KVER): FAIL after ${secs}s: $* (log $logfile)"
	exit "${2:-1}"
}
if ((rc == 124 || rc == 137)); then
	fail "timed out after ${timeout_s}s" 124
fi
bad=$(grep -nE "$TROUBLE_RE" "$logfile" | head -n 5 || true)
if [[ -n $bad ]]; then
	when=''
	broke_before_init "$logfile" && when=' (before init: nothing of ours had run yet)'
	fail "kernel trouble in the console$when: $(head -n 1 <<<"$bad")"
fi
marker=$(grep -E "^REALIP-VMTEST-RESULT $token " "$logfile" | tail -n 1 || true)
[[ -n $marker ]] || fail "no result marker (qemu exit $rc)"
read -r _ _ verdict status tainted <<<"$marker"
tainted=${tainted#tainted=}
if ((tainted & ~allow_taint)); then
	fail "kernel tainted $tainted (allowed mask $allow_taint); see Documentation/admin-guide/tainted-kernels.rst"
fi
[[ $verdict == PASS ]] || fail "test command failed ($status)"
# the guest clock when the kernel started init: the boot's own share
init_at=$(sed -n 's/^\[ *\([0-9.]*\)\] Run .* as init process.*/\1/p' "$logfile" | head -n 1)
log "$alias ($KVER, $arch): PASS in ${secs}s boot-to-poweroff (QEMU CPU ${cpu_secs}s), init after ${init_at:-?}s of guest time (tainted=$tainted)"
