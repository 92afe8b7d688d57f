#!/usr/bin/env bash
# build-module.sh - build an out-of-tree kernel module against a cached
# Debian kernel's headers, the way kmod/ is built:
#   cd SRC_COPY && make KDIR=<headers build dir> [CC=...] [ARCH=arm64 CROSS_COMPILE=...]
#
#   usage: vmtest/build-module.sh [--arch amd64|arm64] ALIAS MODULE_SRC_DIR OUT.ko
#
# The source folder is copied to a scratch folder first (the source tree stays
# clean, and several kernels can build at once). The compiler is the one the
# kernel's .config names (CONFIG_GCC_VERSION): the host's gcc-N when it has
# it, the host's newer gcc for an older kernel (CC=gcc), else gcc-N in a
# debootstrap chroot of the kernel's suite (also when the kernel's prebuilt
# kbuild tools need a newer glibc than the host's). REALIP_VMTEST_BUILD=host
# or =chroot forces one. The build fails on any warning ('warning:' in any
# case, which covers gcc and modpost), and the .ko's vermagic must name the
# kernel. --arch arm64 cross-builds with aarch64-linux-gnu-gcc-N.
set -euo pipefail
# shellcheck disable=SC2034 # read by lib.sh
PROG=build-module
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

arch=amd64
while (($#)); do
	case $1 in
	--arch) arch=${2:-}; shift 2 || usage ;;
	--arch=*) arch=${1#*=}; shift ;;
	-h | --help) usage ;;
	-*) die "unknown option '$1' (see --help)" ;;
	*) break ;;
	esac
done
(($# == 3)) || usage
alias=$1 src=$2 out=$3
check_alias "$alias"
check_arch "$arch"
[[ -d $src ]] || die "module source folder '$src' not found"
[[ -f $src/Makefile || -f $src/Kbuild ]] || die "'$src' has no Makefile or Kbuild"
[[ $out == *.ko ]] || die "output '$out' must end in .ko"
src=$(cd "$src" && pwd)
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

load_kernel "$alias" "$arch"
need_cmd make

cross='' make_arch=()
if [[ $arch == arm64 ]]; then
	cross=aarch64-linux-gnu-
	make_arch=(ARCH=arm64 "CROSS_COMPILE=$cross")
fi

# decide_build: set MODE (host|chroot) and CC_ARGS from the headers.
decide_build() {
	local scripts=$KDIR/$HEADERS/scripts msg='' f hostmajor
	CC_ARGS=()
	MODE=${REALIP_VMTEST_BUILD:-}
	case $MODE in
	host | chroot | '') ;;
	*) die "REALIP_VMTEST_BUILD='$MODE': use host or chroot" ;;
	esac
	# The prebuilt kbuild tools are linked against the suite's glibc (sid's
	# modpost wants GLIBC_2.38, bookworm has 2.36): ask the loader.
	for f in "$scripts"/basic/fixdep "$scripts"/mod/modpost*; do
		[[ -f $f ]] || continue
		msg=$(ldd "$f" 2>&1 | grep -m 1 'not found' | sed 's/^[^:]*: *//; s/ (required by.*//' || true)
		[[ -z $msg ]] || break
	done
	if [[ -n $msg ]]; then
		if [[ $MODE == host ]]; then
			die "kbuild of $KVER cannot run on this host: $msg"
		fi
		REASON="its kbuild tool ${f##*/} cannot run on the host (${msg##*/})"
		MODE=chroot
	fi
	[[ -z $MODE || $MODE == host ]] || { REASON=${REASON:-REALIP_VMTEST_BUILD=chroot}; return 0; }
	if command -v "${cross}gcc-$GCC_MAJOR" >/dev/null; then
		MODE=host REASON="host has ${cross}gcc-$GCC_MAJOR"
		return 0
	fi
	hostmajor=$("${cross}gcc" -dumpversion 2>/dev/null | cut -d. -f1) || hostmajor=0
	if [[ $hostmajor =~ ^[0-9]+$ ]] && ((hostmajor > GCC_MAJOR)); then
		# An older kernel built by a newer compiler: fine for modules, and
		# Debian's headers skip the compiler-version check.
		MODE=host REASON="no ${cross}gcc-$GCC_MAJOR; the host's newer ${cross}gcc-$hostmajor serves"
		CC_ARGS=("CC=${cross}gcc")
		return 0
	fi
	if [[ $MODE == host ]]; then
		die "$KVER needs gcc-$GCC_MAJOR ($CC_TEXT); the host has ${cross}gcc ${hostmajor:-none}"
	fi
	MODE=chroot REASON="it needs gcc-$GCC_MAJOR ($CC_TEXT), the host has gcc-$hostmajor"
}
decide_build
where="on the host"
[[ $MODE == host ]] || where="in a $SUITE chroot"
log "$KVER ($arch): building $(basename "$src") $where: $REASON"

work=$(mktemp -d "${TMPDIR:-/tmp}/vmtest-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
cp -a "$src/." "$work/src/"
# drop results of an earlier in-tree build so that nothing stale is linked
find "$work/src" \( -name '*.o' -o -name '*.ko' -o -name '*.mod' -o -name '*.mod.c' \
	-o -name '.*.cmd' -o -name 'Module.symvers' -o -name 'modules.order' \) -delete
buildlog=$work/build.log
t0=$(now)
if [[ $MODE == host ]]; then
	# headers that ship vmlinux make kbuild add BTF to modules, with pahole
	[[ ! -f $KDIR/$HEADERS/vmlinux ]] || need_cmd pahole
	set +e
	# cd rather than make -C, so a Makefile using $(PWD) works as well
	(cd "$work/src" && exec make "KDIR=$KDIR/$HEADERS" "${make_arch[@]}" "${CC_ARGS[@]}" \
		-j"$(nproc)") >"$buildlog" 2>&1
	rc=$?
	set -e
else
	chroot_dir=$("$VMTEST_DIR/chroot.sh" --arch "$arch" "$SUITE" "$GCC_MAJOR")
	set +e
	# a private mount namespace: the bind mounts vanish with the build.
	# shellcheck disable=SC2016 # the inner script expands its own arguments
	unshare --mount --propagation private -- bash -euc '
		c=$1 kdir=$2 work=$3
		shift 3
		mkdir -p "$c/vmtest/kernel" "$c/vmtest/work"
		mount --bind "$kdir" "$c/vmtest/kernel"
		mount -o remount,bind,ro "$c/vmtest/kernel"
		mount --bind "$work" "$c/vmtest/work"
		mount -t proc proc "$c/proc"
		mount --rbind /dev "$c/dev"
		exec chroot "$c" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
			sh -c "cd /vmtest/work/src && exec make \"\$@\"" make "$@"
	' _ "$chroot_dir" "$KDIR" "$work" \
		"KDIR=/vmtest/kernel/$HEADERS" "${make_arch[@]}" "${CC_ARGS[@]}" \
		-j"$(nproc)" >"$buildlog" 2>&1
	rc=$?
	set -e
fi
secs=$(since "$t0")
if ((rc != 0)); then
	cat "$buildlog" >&2
	die "build of $(basename "$src") for $KVER ($arch) failed (exit $rc)"
fi
if grep -i 'warning:' "$buildlog" >&2; then
	die "build of $(basename "$src") for $KVER ($arch) has warnings (above); warnings fail the build"
fi

name=$(basename "$out")
ko=$work/src/$name
if [[ ! -f $ko ]]; then
	mapfile -t kos < <(find "$work/src" -name '*.ko')
	((${#kos[@]} == 1)) || die "build made ${#kos[@]} .ko files (${kos[*]##*/}), none named $name"
	ko=${kos[0]}
fi
# vermagic: the module must be for exactly this kernel release.
vermagic=$(strings "$ko" | sed -n 's/^vermagic=//p' | head -n 1)
[[ $vermagic == "$KVER "* ]] || die "$(basename "$ko") has vermagic '$vermagic', not for $KVER"
cp "$ko" "$out"
log "$KVER ($arch): $(basename "$ko") -> $out (${secs}s, $(wc -c <"$out") bytes)"
