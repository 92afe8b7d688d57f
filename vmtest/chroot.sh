#!/usr/bin/env bash
# chroot.sh - make (once) and print a minimal Debian chroot with gcc-N, for
# kernels whose compiler or prebuilt kbuild tools the host cannot provide
# (sid's 7.x wants gcc-16 and a newer glibc). build-module.sh calls it.
#
#   usage: vmtest/chroot.sh [--arch amd64|arm64] SUITE GCC_MAJOR
#
# Made with debootstrap --variant=minbase from the host's Debian mirror into
# CACHE/chroots/SUITE-gccN-ARCH (about 400 MB); later calls only print it.
# --arch arm64 adds the aarch64-linux-gnu cross compiler.
set -euo pipefail
# shellcheck disable=SC2034 # read by lib.sh
PROG=chroot
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

arch=amd64
if [[ ${1:-} == --arch ]]; then
	arch=${2:-}
	shift 2
fi
(($# == 2)) || usage
suite=$1 major=$2
check_arch "$arch"
[[ $suite =~ ^[a-z]+$ ]] || die "suite '$suite' is not a Debian suite name"
[[ $major =~ ^[0-9]+$ ]] || die "gcc major version '$major' is not a number"

dir=$CACHE/chroots/$suite-gcc$major-$arch
mkdir -p "$CACHE/chroots"
exec 7>"$dir.lock"
flock -w 3600 7 || die "another chroot.sh holds $dir.lock"
if [[ -f $dir/.complete ]]; then
	printf '%s\n' "$dir"
	exit 0
fi
((EUID == 0)) || die "making the $suite chroot needs root (debootstrap)"
need_cmd debootstrap unshare

# gcc-N and make build the module; the -dev packages pull in the libraries
# (libelf, libssl, zlib under whatever names the suite uses) that the
# kernel's prebuilt kbuild tools link, and pahole makes module BTF.
pkgs=(gcc-"$major" make libc6-dev libelf-dev libssl-dev zlib1g-dev pahole)
[[ $arch == amd64 ]] || pkgs+=(gcc-"$major"-aarch64-linux-gnu)
include=$(
	IFS=,
	echo "${pkgs[*]}"
)

tmp=$dir.tmp
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
t0=$(now)
log "debootstrap $suite with ${pkgs[*]} into $dir (a few minutes, once)"
if ! debootstrap --variant=minbase --keyring="$KEYRING" --include="$include" \
	"$suite" "$tmp" "$MIRROR" >"$dir.log" 2>&1; then
	tail -n 30 "$dir.log" >&2
	[[ ! -f $tmp/debootstrap/debootstrap.log ]] || tail -n 30 "$tmp/debootstrap/debootstrap.log" >&2
	die "debootstrap of $suite failed (full log: $dir.log)"
fi
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*_Packages
chroot "$tmp" "gcc-$major" --version | head -n 1 >&2
mkdir -p "$tmp/vmtest"
touch "$tmp/.complete"
mv "$tmp" "$dir"
trap - EXIT
log "$suite chroot ready in $(since "$t0")s ($(du -sm "$dir" | cut -f1) MiB): $dir"
printf '%s\n' "$dir"
