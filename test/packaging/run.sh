#!/usr/bin/env bash
# run.sh - build realip's deb and rpm packages and prove them end to end.
#
#   usage: test/packaging/run.sh [STEP...]     (root; all steps by default)
#
# Steps, in this order (a later step uses what an earlier one made):
#   build    go vet/gofmt/go test of packaging/, then `make packages`'s
#            command for version V1 (git describe: amd64+arm64, deb+rpm) and
#            V2 = V1+upgrade.1 (amd64) for the upgrade tests, into dist/test/
#   inspect  dpkg-deb and rpm: fields, Depends/Recommends, file lists,
#            conffiles / %config(noreplace), scripts, binaries (static,
#            -trimpath, right GOARCH), dkms.conf version
#   lint     lintian on every .deb: no error or warning (overrides ship in
#            the packages, each with its reason)
#   rpm      rpm --root into a scratch root (with busybox as /bin/sh and
#            recording dkms/systemctl stand-ins): files land, scriptlets run
#            with the right arguments, upgrade keeps an edited %config, erase
#   host     on this machine: apt-get installs the V1 .debs, DKMS builds
#            toa.ko for every kernel with headers (at least the 6.1
#            alias's, linux-headers-KVER, which it installs), a
#            kernel without headers is skipped with a message, toa-dkms
#            upgrades to V2, removal and purge leave nothing of ours
#   vm       boots that kernel with systemd (vmtest/sysvm.sh) with the DKMS
#            toa.ko: guest-agent.sh (install, hardening, status, reload,
#            stop, modules-load.d, upgrade, eBPF receiver, unwrap, remove,
#            purge) and guest-edge.sh
#
# Installs what it needs with scripts/deps.sh (lintian rpm dkms
# linux-headers-KVER qemu ...). The host step changes this machine and
# cleans up after itself: the packages are purged (dkms and the headers
# stay), also when a run was interrupted before; running it twice is fine.
# REALIP_STRICT=1: a step that cannot run (not root) fails instead of
# skipping. REALIP_CACHE: the vmtest cache (default /var/cache/realip/vmtest).
# Prints one line per check and ends with "N passed, N failed".
set -euo pipefail
PROG=packaging-test
REPO=$(cd "$(dirname "$0")/../.." && pwd)
export REALIP_CACHE=${REALIP_CACHE:-/var/cache/realip/vmtest}
OUT=$REPO/dist/test
ALIAS=6.1

passed=0 failed=0 skipped=0
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}
# shellcheck source=test/packaging/checks.sh
. "$REPO/test/packaging/checks.sh"
# same DESCRIPTION GOT WANT: multi-line values, a diff when they differ.
same() {
	if [[ $2 == "$3" ]]; then
		ok "$1"
	else
		bad "$1:"
		diff <(printf '%s\n' "$3") <(printf '%s\n' "$2") | sed 's/^/       /' || true
	fi
}
# cannot STEP REASON: a step that cannot run: a failure under REALIP_STRICT=1.
cannot() {
	if [[ ${REALIP_STRICT:-} == 1 ]]; then
		bad "$1: cannot run: $2 (REALIP_STRICT=1)"
	else
		skipped=$((skipped + 1))
		echo "skip - $1: $2"
	fi
}
now() { date +%s.%3N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
deps() { "$REPO/scripts/deps.sh" "$@" >&2; }

V1='' V2='' KVER=''
load_versions() {
	[[ -n $V1 ]] && return
	[[ -f $OUT/versions ]] || die "no packages in $OUT: run the build step first"
	# shellcheck source=/dev/null
	. "$OUT/versions"
}
kver() {
	if [[ -z $KVER ]]; then
		"$REPO/vmtest/fetch.sh" "$ALIAS" >/dev/null
		KVER=$(<"$REALIP_CACHE/aliases/$ALIAS-amd64")
	fi
	printf '%s\n' "$KVER"
}

# --- build --------------------------------------------------------------
step_build() {
	local t0 v1 list
	t0=$(now)
	if (cd "$REPO/packaging" && go vet ./... && test -z "$(gofmt -l .)"); then
		ok "packaging/: go vet and gofmt clean"
	else
		bad "packaging/: go vet or gofmt"
	fi
	deps rpm # the version test compares with rpm's own ordering
	if (cd "$REPO/packaging" && go test -count=1 ./... >"$OUT.gotest.log" 2>&1); then
		ok "packaging/: go test (version derivation; dpkg and rpm agree on the order)"
	else
		bad "packaging/: go test: $(cat "$OUT.gotest.log")"
	fi
	rm -f "$OUT.gotest.log"
	rm -rf "$OUT"
	mkdir -p "$OUT/v2"
	list=$(cd "$REPO/packaging" && go run ./build -out "$OUT") || die "packaging/build failed"
	v1=$(sed -n 's|.*/realip-agent_\(.*\)-1_amd64\.deb$|\1|p' <<<"$list")
	[[ -n $v1 ]] || die "no realip-agent amd64 deb in: $list"
	(cd "$REPO/packaging" && go run ./build -out "$OUT/v2" -arch amd64 \
		-pkg toa-dkms,realip-agent,realip-edge -version "$v1+upgrade.1") >/dev/null ||
		die "packaging/build of V2 failed"
	printf 'V1=%q\nV2=%q\n' "$v1" "$v1+upgrade.1" >"$OUT/versions"
	load_versions
	eq "10 packages for V1 (3 packages x deb/rpm, 2 architectures for the binaries)" "$(wc -l <<<"$list")" 10
	if [[ -z $(git -C "$REPO" describe --tags --match 'v[0-9]*' 2>/dev/null) ]]; then
		check "untagged commit: dev version 0.0.0~git<commit time>.<hash of a commit> ($V1)" \
			sh -c "echo '$V1' | grep -Eq '^0\.0\.0~git[0-9]{14}\.[0-9a-f]{7}\$' && git -C '$REPO' cat-file -e '${V1##*.}^{commit}'"
	else
		ok "tagged: version $V1 from git describe"
	fi
	check "dpkg orders V1 < V2" dpkg --compare-versions "$V1-1" lt "$V2-1"
	log "build: $(since "$t0")s"
}

# --- inspect ------------------------------------------------------------
# deb_files DEB: the paths of the files (not folders) in DEB.
deb_files() { dpkg-deb -c "$1" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }' | sort; }
rpm_files() { rpm -qpl "$1" 2>/dev/null | sort; }

# man_pages PACKAGE: the manual pages PACKAGE installs, as files of
# packaging/man (the section is the extension).
man_pages() {
	case $1 in
	toa-dkms) echo toa.4 ;;
	realip-agent) echo realip-agent.8 realip-agent.yaml.5 ;;
	realip-edge) echo realip-edge.8 ;;
	esac
}
# shared_files PACKAGE: the files of packaging/ that PACKAGE installs as
# they are, as "SOURCE DESTINATION" lines: bash completion, Prometheus
# rules, Grafana dashboard (one dashboard for both services, a copy in each
# package, so that each has it and both install side by side).
shared_files() {
	case $1 in
	realip-agent | realip-edge)
		echo "completion/$1 /usr/share/bash-completion/completions/$1"
		echo "monitoring/$1.rules.yml /usr/share/realip/$1.rules.yml"
		echo "monitoring/realip-dashboard.json /usr/share/realip/$1-dashboard.json"
		;;
	esac
}

expected_files() { # expected_files PACKAGE FORMAT
	local pkg=$1 fmt=$2 f
	case $pkg in
	toa-dkms)
		for f in $(git -C "$REPO" ls-files kmod | sed 's|^kmod/||' | grep -vx -e LICENSE -e .gitignore); do
			echo "/usr/src/toa-$V1/$f"
		done
		;;
	realip-agent)
		printf '%s\n' /usr/bin/realip-agent /etc/realip/agent.yaml \
			/etc/modules-load.d/toa.conf /etc/modprobe.d/toa.conf
		;;
	realip-edge)
		printf '%s\n' /usr/bin/realip-edge /etc/realip/edge.rules /etc/realip/edge.groups /etc/realip/edge.env
		;;
	esac
	for f in $(man_pages "$pkg"); do
		echo "/usr/share/man/man${f##*.}/$f.gz"
	done
	shared_files "$pkg" | awk '{ print $2 }'
	if [[ $fmt == deb ]]; then
		printf '%s\n' "/usr/share/doc/$pkg/copyright" "/usr/share/doc/$pkg/changelog.Debian.gz" \
			"/usr/share/lintian/overrides/$pkg"
		[[ $pkg == toa-dkms ]] || echo "/lib/systemd/system/$pkg.service"
	else
		echo "/usr/share/licenses/$pkg/LICENSE"
		# rpm also lists the folders a package owns: the DKMS source's
		[[ $pkg != toa-dkms ]] || echo "/usr/src/toa-$V1"
		[[ $pkg == toa-dkms ]] || printf '%s\n' "/usr/share/licenses/$pkg/THIRD-PARTY" "/usr/lib/systemd/system/$pkg.service"
	fi
}

step_inspect() {
	load_versions
	deps rpm file man-db groff-base
	local pkg arch deb rpmf tmp s want_arch rarch
	tmp=$(mktemp -d)
	for pkg in toa-dkms realip-agent realip-edge; do
		for arch in amd64 arm64; do
			[[ $pkg != toa-dkms || $arch == amd64 ]] || continue
			want_arch=$arch rarch=$([[ $arch == amd64 ]] && echo x86_64 || echo aarch64)
			[[ $pkg != toa-dkms ]] || want_arch=all rarch=noarch
			deb=$OUT/${pkg}_$V1-1_$want_arch.deb
			rpmf=$OUT/$pkg-$V1-1.$rarch.rpm
			if [[ ! -f $deb || ! -f $rpmf ]]; then
				bad "$pkg $arch: $deb or $rpmf missing"
				continue
			fi
			# deb control fields
			eq "$pkg $arch deb: Package/Version/Architecture" \
				"$(dpkg-deb -f "$deb" Package Version Architecture | tr '\n' ' ')" \
				"Package: $pkg Version: $V1-1 Architecture: $want_arch "
			case $pkg in
			toa-dkms)
				eq "$pkg deb: Depends" "$(dpkg-deb -f "$deb" Depends)" dkms
				eq "$pkg rpm: Requires dkms" "$(rpm -qpR "$rpmf" 2>/dev/null | grep -v '^rpmlib(' | xargs)" dkms
				;;
			realip-agent)
				eq "$pkg $arch deb: Recommends" "$(dpkg-deb -f "$deb" Recommends)" toa-dkms
				eq "$pkg $arch deb: no Depends (static binary)" "$(dpkg-deb -f "$deb" Depends)" ""
				eq "$pkg $arch rpm: Recommends" "$(rpm -qp --recommends "$rpmf" 2>/dev/null)" toa-dkms
				;;
			realip-edge)
				eq "$pkg $arch deb: no Depends/Recommends" "$(dpkg-deb -f "$deb" Depends Recommends)" ""
				;;
			esac
			# file lists
			same "$pkg $arch deb: file list" "$(deb_files "$deb")" "$(expected_files "$pkg" deb | sort)"
			same "$pkg $arch rpm: file list" "$(rpm_files "$rpmf")" "$(expected_files "$pkg" rpm | sort)"
			# conffiles and %config(noreplace)
			rm -rf "$tmp/ctl" "$tmp/root"
			dpkg-deb -e "$deb" "$tmp/ctl"
			dpkg-deb -x "$deb" "$tmp/root"
			same "$pkg $arch deb: conffiles = its /etc files" "$(sort "$tmp/ctl/conffiles" 2>/dev/null)" \
				"$(expected_files "$pkg" deb | grep '^/etc/' | sort)"
			same "$pkg $arch rpm: %config(noreplace) = its /etc files" \
				"$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpmf" 2>/dev/null | awk 'NF == 2 && $1 ~ /c/ && $1 ~ /n/ { print $2 }' | sort)" \
				"$(expected_files "$pkg" rpm | grep '^/etc/' | sort)"
			# maintainer scripts
			local want_scripts='postinst postrm prerm' want_rpm='postinstall postuninstall preuninstall'
			[[ $pkg != toa-dkms ]] || want_scripts='postinst prerm' want_rpm='posttrans preuninstall'
			eq "$pkg $arch deb: maintainer scripts" "$(find "$tmp/ctl" -type f -printf '%f\n' | grep -Ev '^(control|md5sums|conffiles)$' | sort | xargs)" "$want_scripts"
			eq "$pkg $arch rpm: scriptlets" "$(rpm -qp --scripts "$rpmf" 2>/dev/null | sed -n 's/^\([a-z]*\) scriptlet.*/\1/p' | sort | xargs)" "$want_rpm"
			for s in "$tmp"/ctl/post* "$tmp"/ctl/pre*; do
				check "$pkg $arch deb: $(basename "$s") is valid sh with no placeholder left" \
					sh -c "sh -n '$s' && ! grep -q '@[A-Z_]*@' '$s'"
				if command -v shellcheck >/dev/null; then
					check "$pkg $arch deb: shellcheck $(basename "$s")" shellcheck -s sh "$s"
				fi
			done
			check "$pkg $arch deb: md5sums match the files" sh -c "cd '$tmp/root' && md5sum --quiet -c '$tmp/ctl/md5sums'"
			inspect_docs "$pkg" "$arch" "$tmp/root" "$rpmf"
			if [[ $pkg == toa-dkms ]]; then
				check "dkms.conf: PACKAGE_VERSION=$V1" grep -qx "PACKAGE_VERSION=\"$V1\"" "$tmp/root/usr/src/toa-$V1/dkms.conf"
				check "dkms.conf: sources identical to kmod/" sh -c "for f in '$tmp'/root/usr/src/toa-$V1/*; do n=\$(basename \"\$f\"); [ \$n = dkms.conf ] || cmp -s \"\$f\" '$REPO'/kmod/\$n || exit 1; done"
			else
				local b=$tmp/root/usr/bin/$pkg info
				info=$(go version -m "$b")
				check "$pkg $arch: statically linked (CGO_ENABLED=0)" grep -q 'CGO_ENABLED=0' <<<"$info"
				check "$pkg $arch: -trimpath" grep -q -- '-trimpath=true' <<<"$info"
				check "$pkg $arch: GOARCH=$arch" grep -q "GOARCH=$arch\$" <<<"$info"
				check "$pkg $arch: ELF for $arch" grep -q "$([[ $arch == amd64 ]] && echo x86-64 || echo aarch64).*statically linked" <<<"$(file "$b")"
				check "$pkg $arch deb: the unit is packaging/systemd/$pkg.service" cmp -s "$tmp/root/lib/systemd/system/$pkg.service" "$REPO/packaging/systemd/$pkg.service"
				check "$pkg $arch deb: copyright lists the linked Go modules with their licenses" \
					sh -c "grep -q 'golang.org/x/sys' '$tmp/root/usr/share/doc/$pkg/copyright' && grep -q 'Permission is hereby granted' '$tmp/root/usr/share/doc/$pkg/copyright'"
			fi
		done
	done
	rm -rf "$tmp"
}

# max_gzip FILE: FILE is gzip made at the best compression (XFL byte 2,
# what lintian reads).
max_gzip() { gzip -t "$1" && [[ $(od -An -tu1 -j8 -N1 "$1" | tr -d ' ') == 2 ]]; }
# same_page GZ SOURCE: the page in GZ is SOURCE with its version set.
same_page() { zcat "$1" | cmp -s - <(sed "s/@VERSION@/$V1/" "$2"); }
# inspect_docs PACKAGE ARCH ROOT RPM: the manual pages, completions and
# monitoring files in the deb unpacked at ROOT and in RPM.
inspect_docs() {
	local pkg=$1 arch=$2 root=$3 rpmf=$4 page gz out src dst
	for page in $(man_pages "$pkg"); do
		gz=$root/usr/share/man/man${page##*.}/$page.gz
		check "$pkg $arch deb: $page.gz is gzip at maximum compression" max_gzip "$gz"
		check "$pkg $arch deb: $page is packaging/man/$page with the version $V1" \
			same_page "$gz" "$REPO/packaging/man/$page"
		out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$gz" 2>&1 >/dev/null)
		eq "$pkg $arch deb: man --warnings $page: no warning" "$out" ""
	done
	while read -r src dst; do
		check "$pkg $arch deb: $dst is packaging/$src" cmp -s "$root$dst" "$REPO/packaging/$src"
	done < <(shared_files "$pkg")
	eq "$pkg $arch rpm: the manual pages, each %doc (rpm --excludedocs leaves them out)" \
		"$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpmf" 2>/dev/null | awk '$1 ~ /^\/usr\/share\/man\// { print $1 ($2 ~ /d/ ? "" : "(not %doc)") }' | sort | xargs)" \
		"$(expected_files "$pkg" rpm | grep '^/usr/share/man/' | sort | xargs)"
}

# --- lint ---------------------------------------------------------------
step_lint() {
	load_versions
	deps lintian
	local out t0
	t0=$(now)
	# Errors and warnings fail; info and pedantic tags are shown.
	if out=$(lintian --info --pedantic --fail-on error,warning --no-tag-display-limit "$OUT"/*.deb 2>&1); then
		ok "lintian: no errors or warnings on $(find "$OUT" -maxdepth 1 -name '*.deb' | wc -l) debs ($(since "$t0")s)"
	else
		bad "lintian:"
	fi
	if [[ -n $out ]]; then
		{ grep -E '^[EWIPX]:' <<<"$out" || true; } | sort -u | sed 's/^/       /'
	fi
	# The packages have their manual pages: lintian has nothing to say
	# about manual pages at any level, and no override hides it.
	eq "lintian: no manual-page tag (no-manual-page, groff-message, ...) at any level" \
		"$(grep -E '^[EWIPXO]: .*(manual|manpage|groff)' <<<"$out" | sort -u | xargs)" ""
	eq "no override of a manual-page tag in packaging/lintian" \
		"$(grep -lE '^[^#].*(manual|manpage|groff)' "$REPO"/packaging/lintian/* | xargs)" ""
	# shellcheck disable=SC2016 # awk's own $0
	check "every shipped override has a reason (a comment above it)" awk '
		/^#/ { reason = 1; next }
		/^[[:space:]]*$/ { reason = 0; next }
		!reason { print FILENAME ": " $0; bad = 1 }
		END { exit bad }' "$REPO"/packaging/lintian/*
}

# --- rpm ----------------------------------------------------------------
step_rpm() {
	load_versions
	deps rpm busybox-static
	local root busybox calls v1a v2a
	root=$(mktemp -d)
	busybox=$(command -v busybox)
	mkdir -p "$root"/{dev,bin,usr/bin,usr/sbin,var/log,run/systemd/system,lib/modules/6.0.0-fake/build,lib/modules/5.4.0-noheaders/kernel}
	: >"$root/lib/modules/6.0.0-fake/build/Makefile"
	: >"$root/lib/modules/5.4.0-noheaders/modules.dep"
	mknod -m 666 "$root/dev/null" c 1 3
	cp "$busybox" "$root/bin/busybox"
	for a in sh basename grep sed cat rm mkdir ls echo true touch mv; do ln -s busybox "$root/bin/$a"; done
	# Stand-ins that record their arguments; dkms keeps the little state
	# (added / installed) that the scriptlets ask it about.
	cat >"$root/usr/sbin/dkms" <<'EOF'
#!/bin/sh
echo "dkms $*" >>/var/log/calls
state=/var/log/dkms.state
touch $state
case $1 in
status) grep -e "$3" $state | { [ "$5" = "" ] && cat || grep -e "$5"; } ;;
add) echo "toa/$5: added" >>$state ;;
install) echo "toa/$5, $7, x86_64: installed" >>$state ;;
remove) grep -v -e "$5" $state >$state.new; mv $state.new $state ;;
esac
exit 0
EOF
	cat >"$root/usr/bin/systemctl" <<'EOF'
#!/bin/sh
echo "systemctl $*" >>/var/log/calls
EOF
	chmod 755 "$root/usr/sbin/dkms" "$root/usr/bin/systemctl"
	v1a=$OUT/realip-agent-$V1-1.x86_64.rpm v2a=$OUT/v2/realip-agent-$V2-1.x86_64.rpm
	rpm --root "$root" --initdb
	# rpm warns that Debian's rpm is not for installing (use alien): a
	# scratch root is what it is for here.
	check "rpm -i --nodeps toa-dkms realip-agent realip-edge into a scratch root" \
		rpm --root "$root" -i --nodeps "$OUT/toa-dkms-$V1-1.noarch.rpm" "$v1a" "$OUT/realip-edge-$V1-1.x86_64.rpm"
	eq "rpm -qa" "$(rpm --root "$root" -qa --qf '%{NAME}-%{VERSION}-%{RELEASE}\n' | sort | xargs)" \
		"realip-agent-$V1-1 realip-edge-$V1-1 toa-dkms-$V1-1"
	check "files landed" test -x "$root/usr/bin/realip-agent" -a -x "$root/usr/bin/realip-edge" \
		-a -f "$root/usr/lib/systemd/system/realip-agent.service" -a -f "$root/usr/src/toa-$V1/dkms.conf" \
		-a -f "$root/etc/realip/agent.yaml" -a -f "$root/etc/modules-load.d/toa.conf" \
		-a -f "$root/usr/share/man/man8/realip-agent.8.gz" -a -f "$root/usr/share/man/man4/toa.4.gz" \
		-a -f "$root/usr/share/bash-completion/completions/realip-edge" -a -f "$root/usr/share/realip/realip-edge.rules.yml"
	check "rpm -V: installed files verify" rpm --root "$root" -V --nodeps realip-agent realip-edge toa-dkms
	calls=$(cat "$root/var/log/calls" 2>/dev/null)
	printf '%s\n' "$calls" | sed 's/^/       scriptlet called: /'
	check "%posttrans: dkms add" grep -qx "dkms add -m toa -v $V1" <<<"$calls"
	check "%posttrans: dkms install for the kernel with headers" grep -qx "dkms install -m toa -v $V1 -k 6.0.0-fake" <<<"$calls"
	check "%posttrans: no build for the kernel without headers" test -z "$(grep 5.4.0-noheaders <<<"$calls")"
	check "%post: systemctl preset realip-agent.service (first install)" grep -qx 'systemctl --no-reload preset realip-agent.service' <<<"$calls"
	check "%post: systemctl preset realip-edge.service" grep -qx 'systemctl --no-reload preset realip-edge.service' <<<"$calls"
	: >"$root/var/log/calls"
	sed -i 's|^trusted: \[\]$|trusted: [198.51.100.0/24]|' "$root/etc/realip/agent.yaml"
	check "rpm -U realip-agent V2" rpm --root "$root" -U --nodeps "$v2a"
	check "upgrade kept the edited agent.yaml (noreplace)" grep -qx 'trusted: \[198.51.100.0/24\]' "$root/etc/realip/agent.yaml"
	check "no .rpmnew / .rpmsave after the upgrade" test -z "$(find "$root/etc" -name '*.rpm*')"
	calls=$(cat "$root/var/log/calls")
	check "upgrade: no preset again" test -z "$(grep preset <<<"$calls")"
	check "upgrade: %postun try-restart" grep -qx 'systemctl try-restart realip-agent.service' <<<"$calls"
	: >"$root/var/log/calls"
	check "rpm -e realip-agent realip-edge toa-dkms" rpm --root "$root" -e realip-agent realip-edge toa-dkms
	calls=$(cat "$root/var/log/calls")
	check "%preun: disable --now realip-agent" grep -qx 'systemctl --no-reload disable --now realip-agent.service' <<<"$calls"
	check "%preun: dkms remove" grep -qx "dkms remove -m toa -v $V1 --all" <<<"$calls"
	check "erase saved the edited config as agent.yaml.rpmsave" test -f "$root/etc/realip/agent.yaml.rpmsave"
	eq "nothing of the packages left (but the .rpmsave)" \
		"$(find "$root/usr/bin" "$root/usr/src" "$root/usr/lib/systemd" "$root/usr/share" "$root/etc" -type f ! -name systemctl 2>/dev/null | sed "s|^$root||" | sort | xargs)" \
		"/etc/realip/agent.yaml.rpmsave"
	rm -rf "$root"
}

# --- host ---------------------------------------------------------------
HOST_PKGS=(toa-dkms realip-agent realip-edge)
POLICY=/usr/sbin/policy-rc.d
POLICY_SAVED=/usr/sbin/policy-rc.d.realip-packaging-saved
NOHEADERS=/lib/modules/0.0.0-realip-test-noheaders
host_cleanup() {
	local p installed=()
	for p in "${HOST_PKGS[@]}"; do
		if dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qv '^not-installed$'; then
			installed+=("$p")
		fi
	done
	if ((${#installed[@]})); then
		log "purging ${installed[*]}"
		DEBIAN_FRONTEND=noninteractive dpkg -P "${installed[@]}" >/dev/null 2>&1 || true
	fi
	rm -rf "$NOHEADERS"
	if [[ -e $POLICY_SAVED ]]; then
		mv -f "$POLICY_SAVED" "$POLICY"
	elif [[ -e $POLICY ]] && grep -q 'realip test/packaging' "$POLICY"; then
		rm -f "$POLICY"
	fi
}
host_snapshot() {
	local d dirs=()
	# The folders the packages write in; those that exist (find fails on
	# one that does not, such as /usr/share/realip before the install).
	for d in /etc /usr/bin /usr/src /usr/lib/systemd /usr/share/doc /usr/share/lintian/overrides \
		/usr/share/man /usr/share/bash-completion /usr/share/realip \
		"/lib/modules/$KVER" /var/lib/dkms /var/lib/systemd; do
		[[ ! -e $d ]] || dirs+=("$d")
	done
	find "${dirs[@]}" \
		\( -path /var/lib/systemd/timers -o -path /var/lib/systemd/journal \) -prune -o -print 2>/dev/null |
		grep -Ev "^/lib/modules/$KVER/modules\.|^/var/lib/dkms/mok\.(key|pub)\$|^/etc/ld\.so\.cache\$" | sort
}
# dkms_want VERSION: the `dkms status -m toa` lines the packages promise on
# this machine: one "installed" line for each kernel in /lib/modules that
# has headers (build/Makefile) and that dkms.conf's BUILD_EXCLUSIVE_KERNEL
# admits. The 6.1 alias's kernel is one of them (step_host installs its
# headers); apt may have brought others (linux-headers-amd64 with dkms).
dkms_want() {
	local dir k re
	re=$(sed -n 's/^BUILD_EXCLUSIVE_KERNEL="\(.*\)"$/\1/p' "$REPO/kmod/dkms.conf")
	[[ -n $re ]] || die "no BUILD_EXCLUSIVE_KERNEL in kmod/dkms.conf"
	for dir in /lib/modules/*/; do
		[[ -e $dir/build/Makefile ]] || continue
		k=$(basename "$dir")
		[[ $k =~ $re ]] || continue
		echo "toa/$1, $k, $(uname -m): installed"
	done | sort
}
# dkms_got: what DKMS says, sorted like dkms_want.
dkms_got() { dkms status -m toa | sort; }

# installed_completion COMMAND LINE: what bash completes LINE to with
# COMMAND's completion as bash-completion loads it on demand from where the
# package installed it, one candidate a line.
installed_completion() {
	# shellcheck disable=SC2016 # the inner bash expands them
	bash --norc --noprofile -c '. /usr/share/bash-completion/bash_completion
		_completion_loader "$1"
		[[ $(complete -p "$1" 2>/dev/null) =~ -F\ ([^ ]+) ]] || exit 1
		read -ra COMP_WORDS <<<"$2"
		[[ $2 == *" " ]] && COMP_WORDS+=("")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1)) COMP_LINE=$2 COMP_POINT=${#2}
		"${BASH_REMATCH[1]}" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
		printf "%s\n" "${COMPREPLY[@]}"' completion "$1" "$2" | sort | xargs
}

# host_docs: after the installation, man finds the pages by name and
# section, bash-completion finds the completions, the monitoring files
# are in /usr/share/realip.
host_docs() {
	local page
	deps man-db bash-completion
	for page in toa.4 realip-agent.8 realip-agent.yaml.5 realip-edge.8; do
		eq "man -w ${page##*.} ${page%.*}" "$(man -w "${page##*.}" "${page%.*}" 2>&1)" \
			"/usr/share/man/man${page##*.}/$page.gz"
	done
	eq "bash completes 'realip-agent st' (completion loaded from the package)" \
		"$(installed_completion realip-agent 'realip-agent st')" status
	eq "bash completes 'realip-agent exporter -' (completion loaded from the package)" \
		"$(installed_completion realip-agent 'realip-agent exporter -')" "-listen -per-cpu -procfs"
	eq "bash completes 'realip-edge -origin-' (completion loaded from the package)" \
		"$(installed_completion realip-edge 'realip-edge -origin-')" "-origin-groups"
	eq "/usr/share/realip" "$(find /usr/share/realip -type f -printf '%f\n' | sort | xargs)" \
		"realip-agent-dashboard.json realip-agent.rules.yml realip-edge-dashboard.json realip-edge.rules.yml"
}

step_host() {
	load_versions
	if ((EUID != 0)); then
		cannot host "not root (installs packages on this machine)"
		return
	fi
	kver >/dev/null
	deps dkms "linux-headers-$KVER"
	local out want t0 ko=$OUT/toa-$KVER.ko
	t0=$(now)
	host_cleanup # a run interrupted earlier
	trap host_cleanup EXIT
	host_snapshot >"$OUT/host-before"
	# No service may start on this machine: deb-systemd-invoke obeys this.
	[[ ! -e $POLICY ]] || mv -f "$POLICY" "$POLICY_SAVED"
	printf '#!/bin/sh\n# realip test/packaging: no service starts during the test\nexit 101\n' >"$POLICY"
	chmod 755 "$POLICY"
	mkdir -p "$NOHEADERS/kernel" && : >"$NOHEADERS/modules.dep"

	if out=$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends \
		"$OUT/toa-dkms_${V1}-1_all.deb" "$OUT/realip-agent_${V1}-1_amd64.deb" "$OUT/realip-edge_${V1}-1_amd64.deb" 2>&1); then
		ok "apt-get install the three V1 .debs"
	else
		bad "apt-get install: $out"
	fi
	grep '^toa-dkms:' <<<"$out" | sed 's/^/       /'
	want=$(dkms_want "$V1")
	check "the kernels with headers include $KVER" grep -q "^toa/$V1, $KVER, " <<<"$want"
	same "dkms status: toa/$V1 installed for each kernel with headers ($(wc -l <<<"$want"))" "$(dkms_got)" "$want"
	check "DKMS installed toa.ko in updates/dkms" test -f "/lib/modules/$KVER/updates/dkms/toa.ko"
	check "its vermagic is $KVER's" sh -c "modinfo -F vermagic /lib/modules/$KVER/updates/dkms/toa.ko | grep -q '^$KVER '"
	eq "its version is the package's" "$(modinfo -F version "/lib/modules/$KVER/updates/dkms/toa.ko" 2>&1)" "$V1"
	check "a kernel without headers was skipped with a message" grep -q "kernel 0.0.0-realip-test-noheaders has no headers" <<<"$out"
	check "realip-agent enabled (deb-systemd-helper, without a running systemd)" \
		test -L /etc/systemd/system/multi-user.target.wants/realip-agent.service
	host_docs
	cp "/lib/modules/$KVER/updates/dkms/toa.ko" "$ko" 2>/dev/null || true
	rm -rf "$NOHEADERS"

	echo "edited by test/packaging" >>/etc/realip/edge.rules
	if out=$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends \
		"$OUT/v2/toa-dkms_${V2}-1_all.deb" "$OUT/v2/realip-edge_${V2}-1_amd64.deb" 2>&1); then
		ok "apt-get upgrade toa-dkms and realip-edge to V2"
	else
		bad "upgrade to V2: $out"
	fi
	same "dkms status after the upgrade: only V2, for each kernel with headers" "$(dkms_got)" "$(dkms_want "$V2")"
	check "V1's source is gone" test ! -e "/usr/src/toa-$V1"
	check "toa.ko rebuilt for V2" test -f "/lib/modules/$KVER/updates/dkms/toa.ko"
	check "edited edge.rules kept across the upgrade" grep -qx 'edited by test/packaging' /etc/realip/edge.rules

	check "dpkg -r the three" sh -c "DEBIAN_FRONTEND=noninteractive dpkg -r ${HOST_PKGS[*]} >/dev/null 2>&1"
	eq "dkms status after removal" "$(dkms status -m toa)" ""
	check "toa.ko gone" test ! -e "/lib/modules/$KVER/updates/dkms/toa.ko"
	check "sources gone" test -z "$(find /usr/src -maxdepth 1 -name 'toa-*')"
	check "binaries gone" test ! -e /usr/bin/realip-agent -a ! -e /usr/bin/realip-edge
	check "configuration kept after remove" test -f /etc/realip/agent.yaml -a -f /etc/realip/edge.rules -a -f /etc/modules-load.d/toa.conf
	check "dpkg -P the three" sh -c "DEBIAN_FRONTEND=noninteractive dpkg -P ${HOST_PKGS[*]} >/dev/null 2>&1"
	host_snapshot >"$OUT/host-after"
	same "after purge nothing of ours is left (depmod's indexes and DKMS's signing key aside)" \
		"$(diff "$OUT/host-before" "$OUT/host-after" || true)" ""
	host_cleanup
	trap - EXIT
	log "host: $(since "$t0")s"
}

# --- vm -----------------------------------------------------------------
step_vm() {
	load_versions
	if ((EUID != 0)); then
		cannot vm "not root (debootstrap, QEMU)"
		return
	fi
	kver >/dev/null
	local ko=$OUT/toa-$KVER.ko t0
	if [[ ! -f $ko ]]; then
		bad "vm: no DKMS-built $ko (the host step makes it)"
		return
	fi
	deps busybox-static qemu-system-x86 cpio debootstrap e2fsprogs kmod xz-utils
	t0=$(now)
	(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -o "$OUT/example-whoami" ./examples/whoami &&
		CGO_ENABLED=0 go build -trimpath -o "$OUT/example-probe" ./examples/probe) ||
		die "building the examples failed"
	# shellcheck disable=SC2016 # $? and $a are the guest's
	if "$REPO/vmtest/sysvm.sh" --timeout 900 --env "V1=$V1" --env "V2=$V2" \
		--cmd '/test/guest-agent.sh; a=$?; /test/guest-edge.sh && exit $a' --log "$OUT/vm.log" "$ALIAS" -- \
		"$OUT/realip-agent_${V1}-1_amd64.deb" "$OUT/v2/realip-agent_${V2}-1_amd64.deb" \
		"$OUT/realip-edge_${V1}-1_amd64.deb" "$OUT/example-whoami" "$OUT/example-probe" "$(command -v busybox)" \
		"$ko:/lib/modules/$KVER/updates/dkms/toa.ko" \
		"$REPO/test/packaging/guest-agent.sh" "$REPO/test/packaging/guest-edge.sh" \
		"$REPO/test/packaging/checks.sh"; then
		ok "vm: systemd guest on $KVER passed ($(since "$t0")s)"
	else
		bad "vm: systemd guest on $KVER failed (console: $OUT/vm.log)"
	fi
	# the guest's own checks, counted here too
	local line
	while IFS= read -r line; do
		case $line in
		"ok   - "*) ok "vm: ${line#ok   - }" ;;
		"FAIL - "*) bad "vm: ${line#FAIL - }" ;;
		esac
	done < <(sed -n 's/^.*realip-vmtest\[[0-9]*\]: \(\(ok  \|FAIL\) - .*\)$/\1/p' "$OUT/vm.log")
}

steps=("$@")
((${#steps[@]})) || steps=(build inspect lint rpm host vm)
mkdir -p "$REPO/dist"
T0=$(now)
for s in "${steps[@]}"; do
	case $s in
	build | inspect | lint | rpm | host | vm) ;;
	*) die "unknown step '$s': build inspect lint rpm host vm" ;;
	esac
	log "step $s"
	"step_$s"
done
log "total $(since "$T0")s"
echo "packaging: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
