//go:build linux

// Command unwrapload is the load generator of bench/unwrap.sh. It plays
// the edge: it writes the PROXY v2 or SPP header of a made-up client in
// front of every TCP connection or UDP datagram it sends to an unwrapper
// (realip-agent unwrap, go-mmproxy, HAProxy with usesrc clientip), which
// hands the payload to a local server from that client's address. It also
// runs that server, checks that an unwrapper really passes the client's
// address, and prints the report of the collected results.
//
//	unwrapload origin -discard ADDR,... -echo ADDR,... -udp ADDR,...
//	unwrapload check  -net tcp|udp -addr ADDR [-header ppv2] [-seq N]
//	unwrapload tput   -addr ADDR [-header ppv2] [-conns 4] [-dur 3s] [-pids PID,...] [-label L -rep N]
//	unwrapload conn   -addr ADDR [-header ppv2] [-workers 8] [-size 64] ...
//	unwrapload udp    -addr ADDR [-header ppv2|ppv2-first|spp] [-flows 4] [-window 1] ...
//	unwrapload report [-subject realip] [-base RELAY,...] [-ceiling direct] [-variant RELAY:MIN,...] FILE
//
// Headers: none (the direct path, no unwrapper), ppv2 (PROXY v2 on the
// connection or on every datagram), ppv2-first (UDP: PROXY v2 on the first
// datagram of a flow only) and spp (UDP: 38-byte SPP header on every
// datagram and on every reply). Each connection or flow gets a client
// address of its own, identity -seq+i (see clientAt), so that two runs
// with different -seq never reuse a client address and port while an
// unwrapper's socket bound to it may linger in TIME_WAIT.
//
// The echo servers answer a request that starts with "WHO?" with the
// address of the peer they see, which is what check asserts: the client's
// address from the header, not the unwrapper's.
//
// Each load prints one result line of key=value fields (relay, metric,
// rep, value, unit, relay CPU, ...); report reads such lines and prints the
// tables. With -pids the loads also measure the CPU time the given
// processes (the unwrapper) used during the run, from /proc/PID/stat.
package main

import "github.com/realip/realip/bench/internal/loadkit"

func main() {
	loadkit.Main("unwrapload", []loadkit.Command{
		{Name: "origin", Run: runOrigin},
		{Name: "check", Run: runCheck},
		{Name: "tput", Run: runTput},
		{Name: "conn", Run: runConn},
		{Name: "udp", Run: runUDP},
		{Name: "report", Run: runReport},
	})
}
