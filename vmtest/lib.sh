# shellcheck shell=bash
# lib.sh - shared by the vmtest scripts; sourced, not run.
#
# Cache layout (REALIP_CACHE, default <repo>/.cache/vmtest):
#   apt/SUITE-ARCHES/        private apt state: sources.list, lists/, cache/
#   aliases/ALIAS-ARCH       one line: the KVER the alias resolved to
#   kernels/KVER/            one kernel: root/ (dpkg -x of its packages),
#                            vmtest.env (what the scripts read), .complete
#   chroots/SUITE-gccN-ARCH/ debootstrap chroot for kernels whose compiler
#                            or kbuild tools the host cannot run
#   logs/                    console logs of run.sh

VMTEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$VMTEST_DIR/.." && pwd)
CACHE=${REALIP_CACHE:-$REPO_DIR/.cache/vmtest}

log() { printf '%s: %s\n' "${PROG:-vmtest}" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "${PROG:-vmtest}" "$*" >&2
	exit 1
}

# usage: print the calling script's header comment and exit 2.
usage() {
	sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# now: seconds since the epoch with milliseconds, for timings.
now() { date +%s.%3N; }
# since START: seconds elapsed since START (from now), one decimal.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# qemu_machine SMP [ARCH]: set QEMU_MACHINE, the machine, accelerator and
# CPU arguments that run.sh and sysvm.sh share, QEMU_BIN, the emulator, and
# QEMU_CONSOLE, the guest's serial console. amd64 (the default):
# qemu-system-x86_64 `-accel tcg,thread=single -cpu max -smp SMP`, ttyS0.
# arm64: qemu-system-aarch64 `-machine virt -accel tcg,thread=single -cpu
# max,pauth-impdef=on -smp SMP`, ttyAMA0 (the virt board's PL011).
#
# Why thread=single: with plain `-accel tcg` and -smp 2, QEMU runs each vCPU
# in its own host thread (MTTCG). The kernel patches its own text while the
# other CPU runs (jump labels/static keys, e.g. net_get_random_once in
# flow_hash_from_keys, BPF attach, kprobes: text_poke_bp puts an int3 on the
# first byte, syncs all CPUs, writes the rest, removes the int3, syncs
# again). Under MTTCG the other vCPU can still execute a translated block
# that holds the int3 after the kernel has removed it and dropped its
# patching state, and the kernel then oopses with `Oops: int3` at a
# jump-label site, nothing of ours in the trace. It was seen at boot on 6.12
# and sid and once after init (sid multihost, busy host). With one host
# thread for all vCPUs (round-robin TCG) a vCPU never runs while another
# writes code, so no stale block survives a write (QEMU 7.2 here). The
# guest still has SMP CPUs, with IPIs, per-CPU softirqs and threads that
# migrate and preempt each other: QEMU switches vCPUs when one idles or its
# kick timer fires (0.1 s), so the suites' races (getpeername() against
# unload, two CPUs' backlogs) still happen, at a coarser interleaving and
# no longer truly in parallel on the host.
# Measured in vmtest/README.md (vmtest/flake.sh).
#
# REALIP_VMTEST_TCG_THREAD=multi brings the old MTTCG setting back; it is
# there only to measure the flake (vmtest/flake.sh), never for CI.
#
# arm64's CPU: `max` with pauth-impdef=on. `max` has pointer authentication,
# which Debian's arm64 kernels use (CONFIG_ARM64_PTR_AUTH) for every
# function's return address; QEMU's architected algorithm (QARMA) costs
# far more in TCG than an implementation-defined one, which the guest cannot
# tell apart. Measured in vmtest/README.md ("arm64 guests").
# REALIP_VMTEST_ARM64_CPU overrides it (e.g. cortex-a72), for measuring.
qemu_machine() {
	local thread=${REALIP_VMTEST_TCG_THREAD:-single} arch=${2:-amd64}
	case $thread in
	single | multi) ;;
	*) die "REALIP_VMTEST_TCG_THREAD='$thread': use single (the default) or multi" ;;
	esac
	[[ $1 =~ ^[1-9][0-9]*$ ]] || die "--smp '$1' is not a number of CPUs"
	# shellcheck disable=SC2034 # read by the caller
	case $arch in
	amd64)
		QEMU_BIN=qemu-system-x86_64 QEMU_CONSOLE=ttyS0
		QEMU_MACHINE=(-accel "tcg,thread=$thread" -cpu max -smp "$1")
		;;
	arm64)
		QEMU_BIN=qemu-system-aarch64 QEMU_CONSOLE=ttyAMA0
		QEMU_MACHINE=(-machine virt -accel "tcg,thread=$thread"
			-cpu "${REALIP_VMTEST_ARM64_CPU:-max,pauth-impdef=on}" -smp "$1")
		;;
	*) die "architecture '$arch' unknown: use amd64 or arm64" ;;
	esac
}

# Kernel trouble in a console log: the patterns run.sh and sysvm.sh judge by.
# The last one is die()'s header, "int3: 0000 [#1] PREEMPT SMP" or
# "general protection fault: 0000 [#1]": kernels before 6.9 print it
# without the "Oops: " prefix, so without it the first line named would be
# the Call Trace that follows, not what happened. arm64 spells the stack
# dump "Call trace:" (an RCU stall, a hung task or an allocation failure
# print nothing else that matches) and its die() header "Internal error:
# Oops: 0000000096000004 [#1]" (matched by Oops).
#
# DEBUG_TROUBLE_RE: what the sanitizer kernel (vmtest/debug-kernel.sh) adds,
# part of TROUBLE_RE for every kernel (none of it is ever harmless). Most
# sanitizer reports already start with BUG: (KASAN, KFENCE, sleeping in
# atomic context) or WARNING: (lockdep, suspicious RCU usage, debug
# objects, list corruption); these are the ones that do not, or whose
# header line may come apart from that prefix:
#   UBSAN:                          UBSAN's report (its stack dump follows)
#   unreferenced object, suspected memory leak   kmemleak's report, its scan
#   kmemleak: ...disabled, Cannot, Memory pool empty   kmemleak gave up:
#                                   a run after that proves nothing
#   ODEBUG:                         debug objects (also "out of memory.
#                                   ODEBUG disabled")
#   list_*/slab corruption          DEBUG_LIST, slab checks
#   the lockdep and RCU headers     in case a kernel prints them without
#                                   "WARNING: " (older ones did)
#   non-static key, locking correctness validator   lockdep switching
#                                   itself off (printed with INFO:, no
#                                   WARNING:, only a stack dump)
#   INFO: task ... blocked          the hung task detector
#   stall(s) on CPU                 RCU's stall detector
# Nothing here is filtered out of a report: the debug kernel must boot with
# none of these (vmtest/README.md, "The sanitizer kernel").
DEBUG_TROUBLE_RE='UBSAN:|unreferenced object|suspected memory leak|kmemleak: (.*disabled|Cannot|Memory pool empty)|ODEBUG:|list_[a-z_]+ corruption|[Ss]lab corruption|possible circular locking|possible recursive locking|inconsistent lock state|lock inversion dependency|suspicious RCU usage|sleeping function called from invalid context|scheduling while atomic|bad unlock balance|held lock freed|lock held when returning|non-static key|locking correctness validator|INFO: task .* blocked for more than|stalls? on CPU'
TROUBLE_RE="Oops|BUG:|WARNING:|Kernel panic|Call [Tt]race|: [0-9a-f]{4} \\[#[0-9]+\\]|$DEBUG_TROUBLE_RE"

# broke_before_init LOG: true when the console shows kernel trouble before
# the kernel started init (or never got that far): nothing of ours had run
# (no module, no test). run.sh and sysvm.sh say so when they fail, and
# flake.sh counts such boots apart; neither boots again. They used to boot
# once more, for the int3 oopses of multi-threaded TCG in early boot; with
# one host thread for all vCPUs (qemu_machine) none was seen in 106 boots,
# against 2 in 70 with the old setting (vmtest/README.md), so any kernel
# trouble now fails the run, before init or after.
broke_before_init() {
	local trouble init
	trouble=$(grep -nE "$TROUBLE_RE" "$1" | head -n 1 | cut -d: -f1)
	[[ -n $trouble ]] || return 1
	init=$(grep -nE 'Run .* as init process' "$1" | head -n 1 | cut -d: -f1)
	[[ -z $init ]] || ((trouble < init))
}

# boot_vm LOGFILE VERBOSE TIMEOUT QEMU...: run QEMU once under the timeout
# with its console in LOGFILE (CRLF made LF); sets rc, secs (wall clock)
# and cpu_secs (QEMU's user+system CPU time: with one host thread for the
# vCPUs, what the guest cost, whatever else the host was doing).
# shellcheck disable=SC2034 # rc, secs and cpu_secs are read by the caller
boot_vm() {
	local log=$1 verbose=$2 timeout_s=$3 t0 tf TIMEFORMAT='%3U %3S'
	shift 3
	tf=$(mktemp)
	t0=$(now)
	set +e
	if ((verbose)); then
		# fd 3: the caller's stderr, for the console; time writes to 2
		{ time timeout -k 5 "$timeout_s" "$@" </dev/null 2>&1 | tee "$log" | sed -u 's/^/  | /' >&3; } 3>&2 2>"$tf"
		rc=${PIPESTATUS[0]}
	else
		{ time timeout -k 5 "$timeout_s" "$@" </dev/null >"$log" 2>&1; } 2>"$tf"
		rc=$?
	fi
	set -e
	secs=$(since "$t0")
	cpu_secs=$(awk '{ printf "%.1f", $1 + $2 }' "$tf")
	rm -f "$tf"
	sed -i 's/\r$//' "$log" # the guest console uses CRLF
}

need_cmd() {
	local c
	for c; do
		command -v "$c" >/dev/null ||
			die "command '$c' not found; install it with: scripts/deps.sh $(pkg_of_cmd "$c")"
	done
}

pkg_of_cmd() {
	case $1 in
	apt-get | apt-cache) echo apt ;;
	dpkg | dpkg-deb) echo dpkg ;;
	qemu-system-x86_64) echo qemu-system-x86 ;;
	qemu-system-aarch64) echo qemu-system-arm ;;
	busybox) echo busybox-static ;;
	aarch64-linux-gnu-gcc*) echo gcc-aarch64-linux-gnu ;;
	unzstd) echo zstd ;;
	debootstrap | pahole | cpio) echo "$1" ;;
	*) echo "$1" ;;
	esac
}

# check_alias ALIAS: exit with a clear message unless ALIAS is known.
# debug is the sanitizer kernel that vmtest/debug-kernel.sh builds from
# bookworm's linux-source-6.1 (amd64 only).
check_alias() {
	case $1 in
	5.10 | 6.1 | 6.12 | sid | debug) ;;
	*) die "kernel alias '$1' unknown: use 5.10, 6.1, 6.12, sid or debug" ;;
	esac
}

check_arch() {
	case $1 in
	amd64 | arm64) ;;
	*) die "architecture '$1' unknown: use amd64 or arm64" ;;
	esac
}

# Debian mirrors: the ones the host's apt uses, so the same proxy/mirror
# policy applies; REALIP_DEBIAN_MIRROR / REALIP_DEBIAN_SECURITY_MIRROR win.
host_mirror() { # host_mirror debian|debian-security
	local want=$1 uri
	uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
		/etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v '^[[:space:]]*#' |
		grep -Eo 'https?://[^ ]+' | sed 's:/*$::' |
		grep -E "/$want\$" | head -n 1) || true
	printf '%s\n' "${uri:-http://deb.debian.org/$want}"
}
MIRROR=${REALIP_DEBIAN_MIRROR:-$(host_mirror debian)}
SECURITY_MIRROR=${REALIP_DEBIAN_SECURITY_MIRROR:-$(host_mirror debian-security)}
KEYRING=${REALIP_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

# suite_lines SUITE: the sources.list suites of one Debian release.
suite_lines() {
	case $1 in
	sid) echo "$MIRROR sid" ;;
	*)
		echo "$MIRROR $1"
		echo "$MIRROR $1-updates"
		echo "$SECURITY_MIRROR $1-security"
		;;
	esac
}

# apt_init SUITE ARCHES: set APT_DIR and APT_OPTS for a private apt state of
# SUITE with packages of ARCHES (comma separated, first = native). The
# host's sources, lists, preferences and dpkg status are neither used nor
# changed.
apt_init() {
	local suite=$1 arches=$2
	APT_DIR=$CACHE/apt/$suite-${arches//,/-}
	mkdir -p "$APT_DIR"/{etc/parts,lists/partial,cache/archives/partial}
	: >>"$APT_DIR/status"
	suite_lines "$suite" | while read -r uri s; do
		echo "deb [arch=$arches signed-by=$KEYRING] $uri $s main"
	done >"$APT_DIR/etc/sources.list"
	# Only where apt keeps its sources, lists, cache and dpkg status is
	# overridden; the host's apt.conf.d still applies for how the network is
	# reached (proxies, Check-Valid-Until for a snapshot mirror, ...).
	APT_OPTS=(
		-o "Dir::Etc::sourcelist=$APT_DIR/etc/sources.list"
		-o "Dir::Etc::sourceparts=$APT_DIR/etc/parts"
		-o "Dir::Etc::preferences=$APT_DIR/etc/preferences"
		-o "Dir::Etc::preferencesparts=$APT_DIR/etc/parts"
		-o "Dir::State=$APT_DIR"
		-o "Dir::State::Lists=$APT_DIR/lists"
		-o "Dir::State::status=$APT_DIR/status"
		-o "Dir::Cache=$APT_DIR/cache"
		-o "Dir::Cache::pkgcache=$APT_DIR/cache/pkgcache.bin"
		-o "Dir::Cache::srcpkgcache="
		-o "APT::Architecture=${arches%%,*}"
		-o "APT::Architectures=$arches"
		-o "APT::Sandbox::User=root"
		-o "Acquire::Languages=none"
		-o "Acquire::GzipIndexes=true"
		-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
	)
}

# apt-get/apt-cache with the private state.
apt_get() { apt-get "${APT_OPTS[@]}" "$@"; }
apt_cache() { apt-cache "${APT_OPTS[@]}" "$@"; }

apt_update() {
	local out t
	t=$(now)
	if ! out=$(apt_get -q update 2>&1); then
		printf '%s\n' "$out" >&2
		die "apt-get update failed for $APT_DIR (mirror $MIRROR; set REALIP_DEBIAN_MIRROR to change it)"
	fi
	if grep -E '^(W|E):' <<<"$out" | grep -v 'DirectoryExists' >&2; then
		die "apt-get update reported problems for $APT_DIR"
	fi
	touch "$APT_DIR/.updated"
	log "apt-get update of $(basename "$APT_DIR") took $(since "$t")s ($(du -sm "$APT_DIR/lists" | cut -f1) MiB lists)"
}

# pkg_exists PKG: whether the private apt state knows PKG (with a version).
pkg_exists() {
	apt_cache show --no-all-versions "$1" >/dev/null 2>&1
}

# pkg_field PKG FIELD: one control field of the candidate version of PKG.
pkg_field() {
	apt_cache show --no-all-versions "$1" 2>/dev/null |
		awk -v f="$2:" '$1 == f { sub(/^[^:]*: */, ""); print; exit }'
}

# pkg_depends PKG: the names PKG depends on, first of each alternative.
pkg_depends() {
	pkg_field "$1" Depends | tr ',' '\n' |
		sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/[[:space:]]//g' | grep -v '^$' || true
}

# kernel_closure ARCH PKG...: PKG and, recursively, the kernel packages it
# depends on (linux-image/binary/modules/base/headers/kbuild of a version).
# Packages of ARCH other than the native one are printed as NAME:ARCH.
kernel_closure() {
	local arch=$1 p d q
	shift
	local -a todo=("$@") seen=()
	while ((${#todo[@]})); do
		p=${todo[0]}
		todo=("${todo[@]:1}")
		[[ " ${seen[*]} " == *" $p "* ]] && continue
		seen+=("$p")
		q=$p
		# arch-qualify foreign packages, except arch:all ones (headers-common)
		# and kbuild, which must run on the build machine.
		if [[ $arch != "${NATIVE_ARCH:-amd64}" && $p != *:* && $p != linux-kbuild-* ]] &&
			[[ $(pkg_field "$p:$arch" Architecture) == "$arch" ]]; then
			q=$p:$arch
		fi
		printf '%s\n' "$q"
		for d in $(pkg_depends "$q"); do
			if [[ $d =~ ^linux-(image|binary|modules|base|headers|kbuild)-[0-9] && $d != *-dbg ]]; then
				todo+=("$d")
			fi
		done
	done
}

# load_kernel ALIAS ARCH: fetch if needed (quietly when cached), then set
# KDIR (absolute) and the vmtest.env variables: KVER SUITE PKGVER VMLINUZ
# MODDIR HEADERS GCC_MAJOR CC_TEXT ... (paths relative to KDIR).
# The debug alias is built, not fetched (debug-kernel.sh: once per machine,
# a no-op when cached).
load_kernel() {
	local alias=$1 arch=$2 kver
	if [[ $alias == debug ]]; then
		[[ $arch == amd64 ]] || die "the debug kernel is amd64 only (not $arch)"
		"$VMTEST_DIR/debug-kernel.sh" >/dev/null
	else
		"$VMTEST_DIR/fetch.sh" --arch "$arch" "$alias" >/dev/null
	fi
	kver=$(<"$CACHE/aliases/$alias-$arch")
	KDIR=$CACHE/kernels/$kver
	# shellcheck source=/dev/null
	. "$KDIR/vmtest.env"
}
