#!/usr/bin/env bash
# sysvm.sh - boot a cached Debian kernel in QEMU (TCG) on a minimal Debian
# bookworm root file system with systemd as PID 1, run a test command there
# as a systemd service once the system is up, and judge it like run.sh.
# For tests that need real systemd: packages' maintainer scripts, units and
# their hardening, systemd-modules-load.
#
#   usage: vmtest/sysvm.sh [options] ALIAS -- FILE...
#
#   FILE       copied into the guest's /test/ (a folder: its contents);
#              SRC:DEST puts it at DEST (an absolute guest path) instead.
#              A .ko put under /lib/modules/KVER/ is found by modprobe
#              (depmod runs on the image).
#   --cmd CMD  run in the guest by sh -c, in /test, as the service
#              realip-vmtest.service after multi-user.target (default:
#              /test/run-in-vm); its output goes to the console
#   --env K=V  set in the test's environment; repeatable
#   --timeout S  seconds before the VM is killed (default 600)
#   --mem SIZE   guest memory (default 1G); --smp N: CPUs (default 2)
#   --allow-taint MASK  taint bits that may be set (default 0x3000, O|E)
#   --log FILE   console log (default CACHE/logs/sys-ALIAS-TIME.log)
#   --rootfs     only make (once) and print the cached root file system
#   -v         also show the console while it runs
#
# The root file system (debootstrap --variant=minbase of bookworm with
# systemd, systemd-sysv, kmod, procps; about 250 MB) is made once into
# CACHE/rootfs/bookworm-systemd-amd64 from the host's Debian mirror; each
# run copies it, adds the FILEs and the test service, makes an ext4 image
# of it (mke2fs -d, no loop device) and boots it on virtio-blk with a small
# busybox initramfs that loads virtio/ext4 from the kernel's own modules and
# switch_roots to systemd. The guest's changes are thrown away.
# After the command, the guest prints the result marker and powers off
# through systemd (so a unit that hangs at shutdown shows as a timeout).
# Exit status: 0 for the PASS marker with no Oops, BUG:, WARNING:, Kernel
# panic, Call Trace on the console and no taint outside MASK; 124 on a
# timeout; 1 otherwise.
set -euo pipefail
# shellcheck disable=SC2034 # read by lib.sh
PROG=sysvm
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

cmd=/test/run-in-vm timeout_s=600 mem=1G smp=2 allow_taint=0x3000 logfile='' verbose=0 only_rootfs=0
envs=()
while (($#)); do
	case $1 in
	--cmd) cmd=${2:?--cmd needs a value}; shift 2 ;;
	--env) envs+=("${2:?--env needs K=V}"); shift 2 ;;
	--timeout) timeout_s=${2:?}; shift 2 ;;
	--mem) mem=${2:?}; shift 2 ;;
	--smp) smp=${2:?}; shift 2 ;;
	--allow-taint) allow_taint=${2:?}; shift 2 ;;
	--log) logfile=${2:?}; shift 2 ;;
	--rootfs) only_rootfs=1; shift ;;
	-v | --verbose) verbose=1; shift ;;
	-h | --help) usage ;;
	--) die "the kernel alias goes before --" ;;
	-*) die "unknown option '$1' (see --help)" ;;
	*) break ;;
	esac
done
[[ $timeout_s =~ ^[0-9]+$ ]] || die "--timeout '$timeout_s' is not a number of seconds"
[[ $allow_taint =~ ^(0x[0-9a-fA-F]+|[0-9]+)$ ]] || die "--allow-taint '$allow_taint' is not a number"
for e in "${envs[@]}"; do
	[[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env '$e' is not K=V"
done

# make_rootfs: print the cached root file system, making it first if needed.
make_rootfs() {
	local dir=$CACHE/rootfs/bookworm-systemd-amd64 tmp t0 u
	mkdir -p "$CACHE/rootfs"
	exec 7>"$dir.lock"
	flock -w 1800 7 || die "another sysvm.sh holds $dir.lock"
	if [[ -f $dir/.complete ]]; then
		printf '%s\n' "$dir"
		return
	fi
	((EUID == 0)) || die "making the root file system needs root (debootstrap)"
	need_cmd debootstrap
	tmp=$dir.tmp
	rm -rf "$tmp"
	t0=$(now)
	log "debootstrap bookworm with systemd into $dir (a few minutes, once)"
	if ! debootstrap --variant=minbase --keyring="$KEYRING" \
		--include=systemd,systemd-sysv,kmod,procps \
		bookworm "$tmp" "$MIRROR" >"$dir.log" 2>&1; then
		tail -n 30 "$dir.log" >&2
		rm -rf "$tmp"
		die "debootstrap failed (full log: $dir.log)"
	fi
	# A quiet, quick boot: no gettys (the test service owns the console),
	# no timers, nothing that waits for devices udev would announce (there
	# is no udev), no logind (no D-Bus).
	for u in getty@tty1.service serial-getty@ttyS0.service console-getty.service \
		systemd-logind.service apt-daily.timer apt-daily-upgrade.timer \
		e2scrub_all.timer e2scrub_reap.service fstrim.timer \
		systemd-timesyncd.service dpkg-db-backup.timer; do
		ln -sfn /dev/null "$tmp/etc/systemd/system/$u"
	done
	echo realip-vm >"$tmp/etc/hostname"
	: >"$tmp/etc/fstab"
	rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*_Packages
	touch "$tmp/.complete"
	mv "$tmp" "$dir"
	log "root file system ready in $(since "$t0")s ($(du -sm "$dir" | cut -f1) MiB): $dir"
	printf '%s\n' "$dir"
}

if ((only_rootfs)); then
	make_rootfs
	exit 0
fi

(($# >= 1)) || usage
alias=$1
shift
check_alias "$alias"
if (($#)); then
	[[ $1 == -- ]] || die "expected -- after the alias, got '$1'"
	shift
fi
files=("$@")
for f in "${files[@]}"; do
	src=$f
	[[ $f != *:/* ]] || src=${f%%:/*}
	[[ -e $src ]] || die "file '$src' not found"
done

need_cmd qemu-system-x86_64 cpio gzip busybox timeout mke2fs depmod
busybox_bin=$(command -v busybox)
[[ $(ldd "$busybox_bin" 2>&1) == *"not a dynamic executable"* ]] ||
	die "$busybox_bin is not static: scripts/deps.sh busybox-static"

load_kernel "$alias" amd64
rootfs=$(make_rootfs)

work=$(mktemp -d "${TMPDIR:-/tmp}/vmtest-sysvm.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
t0=$(now)
cp -a "$rootfs" "$root"
rm -f "$root/.complete"

# --- files under test
mkdir -p "$root/test"
for f in "${files[@]}"; do
	src=$f dest=''
	if [[ $f == *:/* ]]; then
		src=${f%%:/*} dest=/${f#*:/}
	fi
	if [[ -d $src ]]; then
		mkdir -p "$root${dest:-/test}"
		cp -a "$src/." "$root${dest:-/test}/"
	else
		[[ -n $dest ]] || dest=/test/$(basename "$src")
		mkdir -p "$(dirname "$root$dest")"
		cp -L "$src" "$root$dest"
	fi
done

# --- kernel modules: the ones to reach the root file system go into the
# initramfs (dependencies first); the guest's /lib/modules/KVER gets the
# kernel's module lists, so modprobe and depmod work there for the modules
# the test puts in.
moddir=$KDIR/${MODDIR:?} # MODDIR, KVER, VMLINUZ: from vmtest.env
ir=$work/initramfs
mkdir -p "$ir"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$busybox_bin" "$ir/bin/busybox"
declare -A done_mods=()
load_order=()
# add_kmod NAME: put NAME.ko (decompressed) and its dependencies in the
# initramfs, unless built in.
add_kmod() {
	local name=$1 pat file out dep deps
	pat=${name//[-_]/[-_]}
	[[ -z ${done_mods[${name//-/_}]:-} ]] || return 0
	done_mods[${name//-/_}]=1
	if grep -Eq "/${pat}\.ko(\.[a-z]+)?\$" "$moddir/modules.builtin" 2>/dev/null; then
		return 0
	fi
	file=$(find "$moddir/kernel" -name "$pat.ko" -o -name "$pat.ko.*" | head -n 1)
	[[ -n $file ]] || die "kernel module '$name' not found in $KVER's modules (nor built in)"
	out=$ir/lib/modules/$name.ko
	case $file in
	*.xz) xz -dc "$file" >"$out" ;;
	*.zst) zstd -qdc "$file" >"$out" ;;
	*.gz) gzip -dc "$file" >"$out" ;;
	*) cp "$file" "$out" ;;
	esac
	deps=$(tr '\0' '\n' <"$out" | sed -n 's/^depends=//p' | head -n 1)
	for dep in ${deps//,/ }; do
		add_kmod "$dep"
	done
	load_order+=("/lib/modules/$name.ko")
}
for m in virtio_pci virtio_blk ext4 crc32c_generic; do
	add_kmod "$m"
done
gmod=$root/lib/modules/$KVER
mkdir -p "$gmod"
for f in modules.builtin modules.builtin.modinfo modules.order; do
	[[ ! -f $moddir/$f ]] || cp "$moddir/$f" "$gmod/"
done
depmod -b "$root" "$KVER"

# --- the test service
token=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
{
	for e in "${envs[@]}"; do
		printf 'export %q\n' "$e"
	done
} >"$root/test/.env"
printf '%s\n' "$cmd" >"$root/test/.cmd"
cat >"$root/usr/local/sbin/realip-vmtest" <<EOF
#!/bin/sh
# generated by vmtest/sysvm.sh: runs the test command, prints the result
# marker on the console and powers off through systemd.
. /test/.env
echo "REALIP-VMTEST: kernel \$(uname -r), systemd \$(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p'), running: \$(cat /test/.cmd)"
cd /test
sh -c "\$(cat /test/.cmd)" </dev/null
rc=\$?
verdict=FAIL
[ \$rc -ne 0 ] || verdict=PASS
echo "REALIP-VMTEST-RESULT $token \$verdict status=\$rc tainted=\$(cat /proc/sys/kernel/tainted)"
systemctl --no-block poweroff
EOF
chmod 755 "$root/usr/local/sbin/realip-vmtest"
cat >"$root/etc/systemd/system/realip-vmtest.service" <<'EOF'
# generated by vmtest/sysvm.sh
[Unit]
Description=realip vmtest: the test command
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/realip-vmtest
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
[Install]
WantedBy=default.target
EOF
mkdir -p "$root/etc/systemd/system/default.target.wants"
ln -sfn ../realip-vmtest.service "$root/etc/systemd/system/default.target.wants/realip-vmtest.service"

# --- disk image and initramfs
size_mb=$(($(du -sm "$root" | cut -f1) + 256))
img=$work/root.img
mke2fs -q -t ext4 -L realip-root -d "$root" "$img" "${size_mb}M"
rm -rf "$root"
printf '%s\n' "${load_order[@]}" >"$ir/modules"
cat >"$ir/init" <<'EOF'
#!/bin/busybox sh
# sysvm initramfs: load the drivers of the root disk, mount it, start systemd.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules); do
	insmod "$m" || echo "sysvm: insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
mount -t ext4 -o rw /dev/vda /newroot || { echo "sysvm: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
EOF
chmod 755 "$ir/init"
initrd=$work/initrd.gz
(cd "$ir" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$initrd"
log "$alias: image ready in $(since "$t0")s (${size_mb} MiB)"

# --- boot
if [[ -z $logfile ]]; then
	mkdir -p "$CACHE/logs"
	logfile=$CACHE/logs/sys-$alias-$(date +%Y%m%d-%H%M%S)-$$.log
	find "$CACHE/logs" -name '*.log' -printf '%T@ %p\n' | sort -rn | tail -n +100 |
		cut -d' ' -f2- | xargs -r rm -f
fi
mkdir -p "$(dirname "$logfile")"
qemu_machine "$smp"
qemu=(qemu-system-x86_64 "${QEMU_MACHINE[@]}" -m "$mem"
	-nodefaults -no-user-config -display none -serial stdio -monitor none -no-reboot
	-drive "file=$img,if=virtio,format=raw,cache=unsafe"
	-kernel "$KDIR/$VMLINUZ" -initrd "$initrd"
	-append "console=ttyS0 panic=-1 oops=panic random.trust_cpu=on systemd.show_status=error")
log "$alias: booting $KVER with systemd (timeout ${timeout_s}s, ${QEMU_MACHINE[*]}), log $logfile"
boot_vm "$logfile" "$verbose" "$timeout_s" "${qemu[@]}"

fail() {
	local first
	first=$(grep -nE "$TROUBLE_RE" "$logfile" | head -n 1 | cut -d: -f1 || true)
	if [[ -n $first ]]; then
		sed -n "$((first > 5 ? first - 5 : 1)),$((first + 40))p" "$logfile"
	else
		tail -n 80 "$logfile"
	fi | sed 's/^/  | /' >&2
	log "$alias ($KVER, systemd): FAIL after ${secs}s: $1 (log $logfile)"
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
marker=$(grep -E "REALIP-VMTEST-RESULT $token " "$logfile" | tail -n 1 || true)
[[ -n $marker ]] || fail "no result marker (qemu exit $rc)"
marker=${marker#*REALIP-VMTEST-RESULT }
read -r _ verdict status tainted <<<"$marker"
tainted=${tainted#tainted=}
if ((tainted & ~allow_taint)); then
	fail "kernel tainted $tainted (allowed mask $allow_taint)"
fi
[[ $verdict == PASS ]] || fail "test command failed ($status)"
grep -q 'reboot: Power down' "$logfile" || fail "the guest did not power off cleanly through systemd"
log "$alias ($KVER, systemd): PASS in ${secs}s boot-to-poweroff (tainted=$tainted)"
