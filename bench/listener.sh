#!/usr/bin/env bash
# Runs the listener benchmarks (plain socket vs realip vs go-proxyproto) and
# prints benchstat tables with every implementation's ratio to raw.
#
#   bench/listener.sh                 # 6 rounds of every benchmark
#   COUNT=10 BENCH=UDPEcho bench/listener.sh
#   BENCH=Accept bench/listener.sh -accept.inflight=1   # latency of one connection
#
# Arguments are passed to the test binary.
# The test binary is built once and run COUNT times with -count 1, so each
# round runs raw and its competitors back to back: drift in the machine's
# load (other jobs, a noisy VM) then hits every variant alike instead of
# whichever ran last. Results go to $OUT (default /tmp/listener-bench.txt).
# benchstat is fetched with "go run pkg@version" outside the module, so
# go.mod is never touched.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
count=${COUNT:-6}
bench=${BENCH:-.}
benchtime=${BENCHTIME:-1s}
out=${OUT:-/tmp/listener-bench.txt}
benchstat_pkg=${BENCHSTAT:-golang.org/x/perf/cmd/benchstat@latest}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$root" && go test -c -o "$work/listener.test" ./listener/)
: >"$out"
for i in $(seq "$count"); do
	echo "== round $i/$count" >&2
	(cd "$root/listener" && "$work/listener.test" -test.run '^$' -test.bench "$bench" \
		-test.benchmem -test.benchtime "$benchtime" "$@") | tee "$work/round-$i.txt" >&2
	cat "$work/round-$i.txt" >>"$out"
done

benchstat() { (cd "$work" && go run "$benchstat_pkg" "$@"); }

# The first sub-benchmark level names the implementation; make it a
# benchstat key ("Accept/realip-2" -> "Accept/impl=realip-2") so that it can
# be a column.
impl_re='s#^(Benchmark[A-Za-z0-9_]+)/([A-Za-z][A-Za-z0-9]*(-[A-Za-z][A-Za-z0-9]*)*)#\1/impl=\2#'
sed -E "$impl_re" "$out" >"$work/impl.txt"

echo
echo "### benchstat (medians, 95% CI; columns compared to raw)"
benchstat -filter '.name:(Accept OR PassThrough)' \
	-col '/impl@(raw realip realip-v2 goproxyproto)' "$work/impl.txt"
benchstat -filter '.name:UDPEcho' \
	-col '/impl@(raw realip-spp realip-spp-netaddr realip-ppv2-flow)' "$work/impl.txt"

# Paired ratios: each round's value divided by raw's value of the same round,
# which cancels drift between rounds. For ns/op and cpu-ns/op lower is
# better; for MB/s and datagrams/s higher is better.
echo
echo "### ratio to raw within each round: median [min .. max] over $count rounds"
for i in $(seq "$count"); do sed -E "$impl_re" "$work/round-$i.txt" | sed "s/^/$i /"; done | awk '
function sortn(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j+1] = a[j]; a[j+1] = t }
}
$2 ~ /^Benchmark/ {
	round = $1; name = $2
	sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
	if (!match(name, /\/impl=[^\/]+/)) next
	impl = substr(name, RSTART + 6, RLENGTH - 6)
	row = substr(name, 1, RSTART - 1) substr(name, RSTART + RLENGTH)
	for (f = 4; f < NF; f += 2) {
		unit = $(f + 1)
		if (unit != "ns/op" && unit != "cpu-ns/op" && unit != "MB/s" && unit != "datagrams/s") continue
		val[round SUBSEP row SUBSEP impl SUBSEP unit] = $f
		if (!((row SUBSEP impl SUBSEP unit) in seen)) {
			seen[row SUBSEP impl SUBSEP unit] = 1
			order[++norder] = row SUBSEP impl SUBSEP unit
		}
		rounds[round] = 1
	}
}
END {
	printf "%-24s %-20s %-12s %s\n", "benchmark", "impl", "unit", "ratio to raw"
	for (k = 1; k <= norder; k++) {
		split(order[k], p, SUBSEP)
		if (p[2] == "raw") continue
		n = 0
		for (r in rounds) {
			a = val[r SUBSEP p[1] SUBSEP p[2] SUBSEP p[3]]
			base = val[r SUBSEP p[1] SUBSEP "raw" SUBSEP p[3]]
			if (a != "" && base != "" && base + 0 != 0) x[++n] = a / base
		}
		if (n == 0) continue
		sortn(x, n)
		med = (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
		printf "%-24s %-20s %-12s %.3f [%.3f .. %.3f]\n", p[1], p[2], p[3], med, x[1], x[n]
	}
}'
