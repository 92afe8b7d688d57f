# dkms.sh - the DKMS steps of toa-dkms, shared by its deb and rpm scripts:
# packaging/build puts this file where a script has the line "#@include
# dkms.sh" and replaces @VERSION@ with the package version.

toa_version='@VERSION@'

# toa_dkms_install: add toa/VERSION to DKMS and build and install it for
# every kernel in /lib/modules that has headers (its build/ tree). A kernel
# without headers is skipped with a message, and so is one DKMS leaves out
# (BUILD_EXCLUSIVE_KERNEL in dkms.conf: older than 5.10); a failed build is
# reported with its log and does not fail the package installation: the
# agent refuses to start without a module for the running kernel and says
# why.
# shellcheck disable=SC2317 # a script calls one of the two functions
toa_dkms_install() {
	if [ -z "$(dkms status -m toa -v "$toa_version" 2>/dev/null)" ]; then
		dkms add -m toa -v "$toa_version"
	fi
	built=0 skipped=0 failed=0
	for dir in /lib/modules/*/; do
		[ -d "$dir" ] || continue
		kver=$(basename "$dir")
		if [ ! -e "$dir/build/Makefile" ]; then
			# Only a kernel whose modules are there counts as installed;
			# a folder left by other packages is none of our business.
			if [ -e "$dir/modules.dep" ] || [ -d "$dir/kernel" ]; then
				echo "toa-dkms: kernel $kver has no headers ($dir""build): toa.ko not built for it."
				echo "toa-dkms:   install its headers (Debian/Ubuntu: linux-headers-$kver; Fedora/RHEL: kernel-devel-$kver);"
				echo "toa-dkms:   DKMS then builds toa.ko by itself (or run: dkms install toa/$toa_version -k $kver)."
				skipped=$((skipped + 1))
			fi
			continue
		fi
		if dkms status -m toa -v "$toa_version" -k "$kver" 2>/dev/null | grep -q ': installed'; then
			echo "toa-dkms: toa/$toa_version already installed for $kver"
			built=$((built + 1))
			continue
		fi
		echo "toa-dkms: building toa/$toa_version for $kver"
		rc=0
		dkms install -m toa -v "$toa_version" -k "$kver" || rc=$?
		case $rc in
		0) built=$((built + 1)) ;;
		77)
			echo "toa-dkms: toa/$toa_version does not support kernel $kver (5.10 or newer is needed): skipped"
			skipped=$((skipped + 1))
			;;
		*)
			echo "toa-dkms: error: building toa/$toa_version for $kver failed (dkms exit $rc);" >&2
			echo "toa-dkms:   log: /var/lib/dkms/toa/$toa_version/build/make.log; retry: dkms install toa/$toa_version -k $kver" >&2
			failed=$((failed + 1))
			;;
		esac
	done
	echo "toa-dkms: toa/$toa_version installed for $built kernel(s), skipped $skipped, failed $failed"
}

# toa_dkms_remove: remove toa/VERSION from DKMS: its module from every
# kernel, then its DKMS tree (the source in /usr/src goes with the package).
# shellcheck disable=SC2317 # a script calls one of the two functions
toa_dkms_remove() {
	if [ -n "$(dkms status -m toa -v "$toa_version" 2>/dev/null)" ]; then
		dkms remove -m toa -v "$toa_version" --all || true
	fi
}
