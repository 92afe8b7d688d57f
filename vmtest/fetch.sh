#!/usr/bin/env bash
# fetch.sh - download (never install) a Debian kernel and its headers into
# the vmtest cache, unpacked with dpkg -x, ready for build-module.sh/run.sh.
#
#   usage: vmtest/fetch.sh [--arch amd64|arm64] [--refresh] ALIAS
#          vmtest/fetch.sh --arch arm64 --busybox
#
#   ALIAS    5.10 (bullseye), 6.1 (bookworm), 6.12 (bookworm's +deb12 build,
#            trixie if bookworm has none), sid (the newest, 7.x)
#   --arch   amd64 (default) or arm64: image, modules and headers, bootable
#            in QEMU (qemu-system-x86_64 / qemu-system-aarch64); kbuild
#            (fixdep, modpost) is always the host's amd64 one, so arm64
#            modules cross-build here
#   --refresh  update the package lists and take the newest build of ALIAS
#            (without it a cached ALIAS is used as it is, with no network)
#   --busybox  instead of a kernel: bookworm's busybox-static of --arch,
#            unpacked into CACHE/busybox/VERSION-ARCH (the guest's shell
#            for a foreign architecture; amd64 guests use the host's)
#
# Prints the kernel's cache folder (CACHE/kernels/KVER) on stdout, or with
# --busybox the static busybox binary. A private
# apt state under CACHE/apt is used: the host's apt lists, sources and dpkg
# database are neither read nor changed. See vmtest/README.md.
set -euo pipefail
# shellcheck disable=SC2034 # PROG and NATIVE_ARCH are read by lib.sh
PROG=fetch NATIVE_ARCH=amd64
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

arch=amd64 refresh=0 alias='' busybox=0
while (($#)); do
	case $1 in
	--arch) arch=${2:-}; shift 2 || usage ;;
	--arch=*) arch=${1#*=}; shift ;;
	--refresh) refresh=1; shift ;;
	--busybox) busybox=1; shift ;;
	-h | --help) usage ;;
	-*) die "unknown option '$1' (see --help)" ;;
	*) [[ -z $alias ]] || die "one alias at a time (got '$alias' and '$1')"; alias=$1; shift ;;
	esac
done
check_arch "$arch"

# fetch_busybox: print the cached static busybox of $arch, fetching it
# (apt-get download + dpkg -x) from bookworm the first time.
fetch_busybox() {
	local dir ver tmp bin
	mkdir -p "$CACHE/busybox"
	exec 8>"$CACHE/.fetch-busybox-$arch.lock"
	flock -w 600 8 || die "another fetch holds $CACHE/.fetch-busybox-$arch.lock"
	dir=$(cat "$CACHE/busybox/current-$arch" 2>/dev/null) || dir=''
	if ((!refresh)) && [[ -n $dir && -f $dir/.complete ]]; then
		printf '%s\n' "$dir/bin/busybox"
		return 0
	fi
	need_cmd apt-get apt-cache dpkg-deb flock
	if [[ $arch == amd64 ]]; then apt_init bookworm amd64; else apt_init bookworm "amd64,$arch"; fi
	if [[ ! -f $APT_DIR/.updated ]] || ((refresh)); then apt_update; fi
	ver=$(pkg_field "busybox-static:$arch" Version)
	[[ -n $ver ]] || die "busybox-static:$arch not in bookworm's lists (mirror $MIRROR)"
	dir=$CACHE/busybox/${ver//:/_}-$arch
	tmp=$dir.tmp.$$
	rm -rf "$tmp"
	mkdir -p "$tmp/debs"
	(cd "$tmp/debs" && apt_get -q download "busybox-static:$arch") >"$tmp/download.log" 2>&1 ||
		{ cat "$tmp/download.log" >&2; rm -rf "$tmp"; die "apt-get download busybox-static:$arch failed"; }
	dpkg-deb -x "$tmp"/debs/*.deb "$tmp/root"
	bin=$tmp/root/bin/busybox
	[[ -f $bin ]] || bin=$tmp/root/usr/bin/busybox
	[[ -f $bin ]] || { rm -rf "$tmp"; die "busybox-static:$arch $ver has no bin/busybox"; }
	mkdir -p "$tmp/bin"
	cp "$bin" "$tmp/bin/busybox"
	rm -rf "$tmp/debs" "$tmp/root" "$tmp/download.log"
	touch "$tmp/.complete"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	printf '%s\n' "$dir" >"$CACHE/busybox/current-$arch"
	log "busybox-static:$arch $ver ready in $dir"
	printf '%s\n' "$dir/bin/busybox"
}
if ((busybox)); then
	[[ -z $alias ]] || die "--busybox takes no kernel alias (got '$alias')"
	fetch_busybox
	exit 0
fi
[[ -n $alias ]] || usage
check_alias "$alias"
[[ $alias != debug ]] || die "the debug kernel is built, not fetched: vmtest/debug-kernel.sh"

mkdir -p "$CACHE/aliases" "$CACHE/kernels"
exec 8>"$CACHE/.fetch-$alias-$arch.lock"
flock -w 1800 8 || die "another fetch of $alias/$arch holds $CACHE/.fetch-$alias-$arch.lock"

# bootable DIR: whether DIR is a complete kernel with an image. arm64
# kernels fetched before arm64 guests booted hold headers only: those are
# fetched again, image and modules included.
bootable() {
	[[ -f $1/.complete ]] && grep -q '^VMLINUZ=root/' "$1/vmtest.env"
}

alias_file=$CACHE/aliases/$alias-$arch
if ((!refresh)) && [[ -f $alias_file ]]; then
	kver=$(<"$alias_file")
	if bootable "$CACHE/kernels/$kver"; then
		log "$alias/$arch: cached $kver"
		printf '%s\n' "$CACHE/kernels/$kver"
		exit 0
	fi
fi

need_cmd apt-get apt-cache dpkg-deb flock
[[ -r $KEYRING ]] || die "Debian archive keyring $KEYRING missing: scripts/deps.sh debian-archive-keyring"

# suite and meta package per alias; the meta package names the current ABI.
case $alias in
5.10) suites=(bullseye) meta=("linux-image-$arch") ;;
6.1) suites=(bookworm) meta=("linux-image-$arch") ;;
6.12) suites=(bookworm trixie) meta=("linux-image-6.12-$arch" "linux-image-$arch") ;;
sid) suites=(sid) meta=("linux-image-$arch") ;;
esac
arches=amd64
[[ $arch == amd64 ]] || arches=amd64,$arch

# resolve: set SUITE and KVER from the first suite whose meta package
# exists and points at a kernel of the alias's series.
resolve() {
	local i m dep
	SUITE='' KVER=''
	for i in "${!suites[@]}"; do
		apt_init "${suites[$i]}" "$arches"
		if [[ ! -f $APT_DIR/.updated ]] || ((refresh)); then
			apt_update
		fi
		m=${meta[$i]}
		[[ $arch == amd64 ]] || m=$m:$arch
		pkg_exists "$m" || continue
		for dep in $(pkg_depends "$m"); do
			if [[ $dep =~ ^linux-image-([0-9].*-$arch)$ ]]; then
				KVER=${BASH_REMATCH[1]}
				break
			fi
		done
		[[ -n $KVER ]] || continue
		case $alias in
		5.10 | 6.1 | 6.12) [[ $KVER == "$alias".* ]] || { KVER=; continue; } ;;
		esac
		SUITE=${suites[$i]}
		return 0
	done
	return 1
}

t0=$(now)
if ! resolve; then
	refresh=1
	resolve || die "no $alias kernel for $arch found in ${suites[*]} (mirror $MIRROR)"
fi
log "$alias/$arch: $KVER from $SUITE"

dest=$CACHE/kernels/$KVER
if bootable "$dest"; then
	printf '%s\n' "$KVER" >"$alias_file"
	log "$alias/$arch: cached $KVER"
	printf '%s\n' "$dest"
	exit 0
fi

# packages: image + modules + headers. kbuild (prebuilt fixdep, modpost,
# ...) is always the host's (amd64) one (kernel_closure).
if [[ $arch == amd64 ]]; then
	roots=("linux-image-$KVER" "linux-headers-$KVER")
else
	roots=("linux-image-$KVER:$arch" "linux-headers-$KVER:$arch")
fi
mapfile -t pkgs < <(kernel_closure "$arch" "${roots[@]}" | sort -u)
for p in "${pkgs[@]}"; do
	pkg_exists "$p" || die "package $p (needed by ${roots[*]}) not in $SUITE lists"
done
log "$alias/$arch: packages: ${pkgs[*]}"

tmp=$dest.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp/debs" "$tmp/root"
trap 'rm -rf "$tmp"' EXIT
download() {
	(cd "$tmp/debs" && apt_get -q download "${pkgs[@]}") >"$tmp/download.log" 2>&1
}
td=$(now)
if ! download; then
	# stale lists name files the mirror dropped: update once and retry.
	log "download failed, updating the lists and retrying"
	apt_update
	if ! download; then
		cat "$tmp/download.log" >&2
		die "apt-get download ${pkgs[*]} failed"
	fi
fi
dl_secs=$(since "$td")
dl_bytes=$(cat "$tmp"/debs/*.deb | wc -c)
log "$alias/$arch: downloaded $((dl_bytes / 1048576)) MiB in ${dl_secs}s"

tu=$(now)
for deb in "$tmp"/debs/*.deb; do
	dpkg-deb -x "$deb" "$tmp/root"
done

log "$alias/$arch: unpacked in $(since "$tu")s"

# absolute symlinks (lib/modules/KVER/build -> /usr/src/...) point into the
# host; make those whose target is inside root/ relative to root/.
while IFS= read -r -d '' l; do
	t=$(readlink "$l")
	[[ $t == /* && -e $tmp/root$t ]] || continue
	rel=$(realpath -s --relative-to="$(dirname "$l")" "$tmp/root$t")
	ln -sfn "$rel" "$l"
done < <(find "$tmp/root" -type l -print0)

# headers: Debian's flavour Makefile includes /usr/src/linux-headers-*-common
# (and sid's sets KBUILD_OUTPUT=/usr/src/...) by absolute path; make those
# relative to the Makefile's own folder, so the tree works wherever the
# cache is (also bind-mounted into a chroot) and nothing goes in /usr/src.
headers=usr/src/linux-headers-$KVER
mk=$tmp/root/$headers/Makefile
[[ -f $mk ]] || die "$headers/Makefile missing in the packages"
{
	echo '# vmtest/fetch.sh: /usr/src/ made relative to this folder'
	# shellcheck disable=SC2016 # make syntax
	echo 'VMTEST_HEADERS_DIR := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))'
	# shellcheck disable=SC2016
	sed 's|/usr/src/|$(VMTEST_HEADERS_DIR)/../|g' "$mk"
} >"$mk.new"
mv "$mk.new" "$mk"
config=$tmp/root/$headers/.config
[[ -f $config ]] || die "$headers/.config missing"
gcc_version=$(sed -n 's/^CONFIG_GCC_VERSION=//p' "$config")
[[ $gcc_version =~ ^[0-9]+$ && $gcc_version -gt 0 ]] ||
	die "$headers/.config has no CONFIG_GCC_VERSION (a clang-built kernel?): unsupported"
cc_text=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$config")

vmlinuz='' moddir=''
for f in "boot/vmlinuz-$KVER" "usr/lib/modules/$KVER/vmlinuz" "lib/modules/$KVER/vmlinuz"; do
	if [[ -f $tmp/root/$f ]]; then vmlinuz=$f; break; fi
done
[[ -n $vmlinuz ]] || die "no vmlinuz in ${pkgs[*]}"
for f in "lib/modules/$KVER" "usr/lib/modules/$KVER"; do
	if [[ -d $tmp/root/$f/kernel ]]; then moddir=$f; break; fi
done
[[ -n $moddir ]] || die "no modules folder in ${pkgs[*]}"

{
	printf '# written by vmtest/fetch.sh; paths are relative to this folder\n'
	printf 'ALIAS=%q\nARCH=%q\nSUITE=%q\nKVER=%q\n' "$alias" "$arch" "$SUITE" "$KVER"
	printf 'PKGVER=%q\n' "$(pkg_field "${roots[0]}" Version)"
	printf 'PACKAGES=%q\n' "${pkgs[*]}"
	printf 'HEADERS=%q\nVMLINUZ=%q\nMODDIR=%q\n' "root/$headers" "${vmlinuz:+root/$vmlinuz}" "${moddir:+root/$moddir}"
	printf 'GCC_MAJOR=%q\nCC_TEXT=%q\n' "$((gcc_version / 10000))" "$cc_text"
	printf 'DOWNLOAD_BYTES=%q\nDOWNLOAD_SECS=%q\nMIRROR=%q\n' "$dl_bytes" "$dl_secs" "$MIRROR"
} >"$tmp/vmtest.env"
ls -l "$tmp"/debs >"$tmp/debs.txt"
# the .debs are not needed once unpacked; keep them with REALIP_VMTEST_KEEP_DEBS=1
[[ ${REALIP_VMTEST_KEEP_DEBS:-} == 1 ]] || rm -rf "$tmp/debs"
rm -f "$tmp/download.log"
touch "$tmp/.complete"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
printf '%s\n' "$KVER" >"$alias_file"
log "$alias/$arch: $KVER ready in $dest ($(du -sm "$dest" | cut -f1) MiB unpacked, $(since "$t0")s total)"
printf '%s\n' "$dest"
