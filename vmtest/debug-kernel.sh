#!/usr/bin/env bash
# debug-kernel.sh - build (once per machine) the sanitizer kernel that
# vmtest/toa.sh runs toa.ko on: Debian bookworm's linux-source-6.1,
# configured with `make tinyconfig` + vmtest/debug-kernel.config (KASAN,
# lockdep, kmemleak, debug objects, KFENCE, UBSAN, ...), built for amd64.
#
#   usage: vmtest/debug-kernel.sh [--refresh]
#
#   --refresh  update the package lists and take the newest linux-source-6.1
#              (without it a kernel built before is used as it is, with no
#              network, as long as the config fragment did not change)
#
# linux-source-6.1 is fetched with `apt-get download` through the private
# apt state fetch.sh uses (CACHE/apt/bookworm-amd64) and never installed.
# After olddefconfig every value line of the fragment must be in .config:
# the script fails, naming each one a dependency dropped. The build tree
# (kept whole: toa.ko is built against it with M=, which needs its
# Module.symvers, scripts and include/generated) and the bzImage live in
#   CACHE/kernels/debug-SRCVERSION-SHA12/   SHA12: sha256 of the fragment
# with a vmtest.env like fetch.sh's (HEADERS is the build tree), and
# CACHE/aliases/debug-amd64 names it, so `run.sh debug`, `build-module.sh
# debug` and `toa.sh debug` use it like any other kernel. A second run
# with the same source version and fragment does nothing. Prints the
# kernel's cache folder on stdout. See vmtest/README.md ("The sanitizer
# kernel").
set -euo pipefail
# shellcheck disable=SC2034 # read by lib.sh
PROG=debug-kernel NATIVE_ARCH=amd64
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

refresh=0
while (($#)); do
	case $1 in
	--refresh) refresh=1; shift ;;
	-h | --help) usage ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

fragment=$VMTEST_DIR/debug-kernel.config
[[ -f $fragment ]] || die "$fragment missing"
sha=$(sha256sum "$fragment" | cut -c1-12)
mkdir -p "$CACHE/aliases" "$CACHE/kernels"
alias_file=$CACHE/aliases/debug-amd64

# cached DIR: whether DIR is a finished build of this fragment.
cached() {
	[[ -f $1/.complete ]] && grep -qx "CONFIG_SHA=$sha" "$1/vmtest.env"
}
# use DIR: record DIR as the alias and print it.
use() {
	basename "$1" >"$alias_file"
	printf '%s\n' "$1"
}
if ((!refresh)) && [[ -f $alias_file ]] && cached "$CACHE/kernels/$(<"$alias_file")"; then
	log "cached $(<"$alias_file")"
	use "$CACHE/kernels/$(<"$alias_file")"
	exit 0
fi

need_cmd apt-get apt-cache dpkg-deb flock make gcc bison flex bc perl
# toa.ko is built against the tree with the host's gcc (build-module.sh:
# CONFIG_GCC_VERSION 12 -> the host's gcc-12), so the kernel is too: the
# same `gcc`, or kbuild warns that the compiler differs
[[ $(gcc -dumpversion) == 12* ]] || die "the host's gcc is $(gcc -dumpversion), not 12 (bookworm's)"
[[ -f /usr/include/libelf.h ]] || die "libelf.h missing (objtool needs it): scripts/deps.sh libelf-dev"
exec 8>"$CACHE/.debug-kernel.lock"
flock -w 7200 8 || die "another build holds $CACHE/.debug-kernel.lock"

apt_init bookworm amd64
if [[ ! -f $APT_DIR/.updated ]] || ((refresh)); then apt_update; fi
pkg=linux-source-6.1
srcver=$(pkg_field "$pkg" Version)
[[ -n $srcver ]] || die "$pkg not in bookworm's lists (mirror $MIRROR)"
dest=$CACHE/kernels/debug-${srcver//:/_}-$sha
if cached "$dest"; then # built meanwhile (the lock), or by another alias file
	log "cached $(basename "$dest")"
	use "$dest"
	exit 0
fi
log "building $pkg $srcver with $(basename "$fragment") (sha256 $sha...) into $dest"

t0=$(now)
# built where it stays (kbuild's files name paths in the tree): a folder
# without .complete is a build that did not finish, started over here
rm -rf "$dest"
mkdir -p "$dest/debs"
download() {
	(cd "$dest/debs" && apt_get -q download "$pkg=$srcver") >"$dest/download.log" 2>&1
}
if ! download; then
	log "download failed, updating the lists and retrying"
	apt_update
	download || { cat "$dest/download.log" >&2; die "apt-get download $pkg=$srcver failed"; }
fi
dl_bytes=$(cat "$dest"/debs/*.deb | wc -c)
log "downloaded $((dl_bytes / 1048576)) MiB in $(since "$t0")s"

# the package holds /usr/src/linux-source-6.1.tar.xz: Debian's patched tree
dpkg-deb -x "$dest"/debs/*.deb "$dest/deb"
tarball=$(find "$dest/deb/usr/src" -maxdepth 1 -name 'linux-source-*.tar.*' | head -n 1)
[[ -n $tarball ]] || die "$pkg $srcver has no linux-source-*.tar.* in /usr/src"
tu=$(now)
tar -xf "$tarball" -C "$dest"
rm -rf "$dest/deb" "$dest/debs"
mv "$dest"/linux-source-* "$dest/src"
log "unpacked in $(since "$tu")s"

# make ARGS...: make in the tree, output appended to build.log.
kmake() {
	make -C "$dest/src" "$@" >>"$dest/build.log" 2>&1 ||
		{ tail -n 40 "$dest/build.log" >&2; die "make $* failed (log above; whole: $dest/build.log)"; }
}
# ARCH=x86_64: with the default ARCH=x86, allnoconfig turns 64BIT off
# and the 32-bit defaults of visible options (FRAME_WARN 1024, ...) stay
# after the fragment turns it on again
kmake ARCH=x86_64 tinyconfig
(cd "$dest/src" && scripts/kconfig/merge_config.sh -m .config "$fragment") >>"$dest/build.log" 2>&1 ||
	die "merge_config.sh failed (see $dest/build.log)"
kmake olddefconfig
cp "$fragment" "$dest/debug-kernel.config"
# Every value the fragment asks for must have survived olddefconfig.
missing=()
while IFS= read -r line; do
	grep -qxF "$line" "$dest/src/.config" || missing+=("$line (.config: $(grep -E "^(# )?${line%%=*}[= ]" "$dest/src/.config" || echo absent))")
done < <(grep -E '^CONFIG_[A-Za-z0-9_]+=' "$fragment")
if ((${#missing[@]})); then
	printf '  %s\n' "${missing[@]}" >&2
	die "${#missing[@]} option(s) of $(basename "$fragment") did not survive olddefconfig (above): a dependency is missing"
fi
log "config: every one of $(grep -cE '^CONFIG_[A-Za-z0-9_]+=' "$fragment") fragment values kept; building with -j$(nproc)"

tb=$(now)
kmake -j"$(nproc)"
build_secs=$(since "$tb")
kver=$(make -s -C "$dest/src" kernelrelease)
# modules_install of a kernel with everything built in: modules.builtin,
# what run.sh reads to know that veth and tls need no insmod
kmake INSTALL_MOD_PATH="$dest/root" modules_install
moddir=root/lib/modules/$kver
mkdir -p "$dest/$moddir/kernel"
rm -f "$dest/$moddir/build" "$dest/$moddir/source"
[[ -f $dest/src/arch/x86/boot/bzImage && -f $dest/src/Module.symvers ]] ||
	die "the build made no bzImage or Module.symvers"
gcc_version=$(sed -n 's/^CONFIG_GCC_VERSION=//p' "$dest/src/.config")
cc_text=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$dest/src/.config")
{
	printf '# written by vmtest/debug-kernel.sh; paths are relative to this folder\n'
	printf 'ALIAS=debug\nARCH=amd64\nSUITE=bookworm\nKVER=%q\n' "$kver"
	printf 'PKGVER=%q\nPACKAGES=%q\n' "$srcver" "$pkg=$srcver"
	printf 'HEADERS=src\nVMLINUZ=src/arch/x86/boot/bzImage\nMODDIR=%q\n' "$moddir"
	printf 'GCC_MAJOR=%q\nCC_TEXT=%q\n' "$((gcc_version / 10000))" "$cc_text"
	printf 'CONFIG_SHA=%s\nBUILD_SECS=%q\nBUILD_CPUS=%q\n' "$sha" "$build_secs" "$(nproc)"
	printf 'DOWNLOAD_BYTES=%q\nMIRROR=%q\n' "$dl_bytes" "$MIRROR"
} >"$dest/vmtest.env"
touch "$dest/.complete"
log "$kver ($pkg $srcver) built in ${build_secs}s with -j$(nproc), $(since "$t0")s in all; $(du -sm "$dest" | cut -f1) MiB in $dest"
use "$dest"
