//go:build linux

// Command edgeload is the load generator of bench/edge.sh: an origin that
// echoes or discards, three loads (TCP throughput, new TCP connections per
// second, UDP request/response echo) aimed at a relay, a report of the
// collected results, and a wrapper that runs package edge with a CPU
// profile.
//
//	edgeload origin -discard ADDR -echo ADDR [-echo-ppv1 ADDR] [-udp ADDR]
//	edgeload wait   [-tcp ADDR,...] [-udp ADDR,...] [-timeout 10s]
//	edgeload tput   -addr ADDR [-conns 4] [-dur 3s] [-pids PID,...] [-label L -rep N]
//	edgeload conn   -addr ADDR [-workers 8] [-dur 3s] [-size 64] ...
//	edgeload udp    -addr ADDR [-flows 4] [-window 1] [-dur 3s] [-size 64] ...
//	edgeload report [-base RELAY,...] [-edge RELAY] FILE
//	edgeload edge   -rules FILE [-listen-ip IP] -cpuprofile FILE
//
// Each load prints one result line of key=value fields (relay, metric, rep,
// value, unit, relay CPU, ...); report reads such lines and prints the
// table. With -pids the loads also measure the CPU time the given processes
// (the relay) used during the run, from /proc/PID/stat.
package main

import "github.com/realip/realip/bench/internal/loadkit"

func main() {
	loadkit.Main("edgeload", []loadkit.Command{
		{Name: "origin", Run: runOrigin},
		{Name: "wait", Run: runWait},
		{Name: "tput", Run: runTput},
		{Name: "conn", Run: runConn},
		{Name: "udp", Run: runUDP},
		{Name: "report", Run: runReport},
		{Name: "edge", Run: runEdge},
	})
}
