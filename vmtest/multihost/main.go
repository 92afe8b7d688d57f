//go:build linux

// Command multihost is the multi-host suite of realip's two TOA receivers,
// toa.ko (-receiver kmod) and the eBPF receiver of package toarecv
// (-receiver ebpf), run in a QEMU guest by vmtest/toa.sh (static:
// CGO_ENABLED=0) and, with the eBPF receiver, on the host's own kernel by
// its test (host_linux_test.go). It builds a client, an edge, an origin
// and a rogue host in network namespaces (see topo.go), runs the real
// realip-edge binary on the edge with toa rules, starts the receiver on the
// origin trusting only the edge's origin-facing addresses (toa.ko loaded,
// or the eBPF receiver attached to the cgroup the origin's programs run
// in), and checks what the origin's programs see:
//
//   - two C servers written after the seed documentation's samples (an
//     IPv4 socket that takes a sockaddr_in6, and a [::] socket), realip's
//     examples/whoami -proto toa, and a plain Go server, for IPv4 and IPv6
//     clients, to IPv4 and IPv6 origins (an IPv6 client to an IPv4 origin
//     is the NAT64 case): each must report the client's own address;
//   - the same with net.ipv4.tcp_syncookies=2 on the origin, where only the
//     handshake ACK exists to carry the option;
//   - an option forged by a host outside the trusted prefixes: ignored and
//     counted;
//   - load: thousands of connections from concurrent clients, held open
//     while several threads call getpeername() on them at random, every
//     answer checked;
//   - the receiver stopped (toa.ko unloaded, or the eBPF receiver detached:
//     its pins removed) with all of them open, getpeername() running and
//     new connections arriving: nothing of it left, getpeername() on a
//     still-open socket answers the edge again, every entry freed.
//
// Both receivers run the same cases; where their results differ on
// purpose, the table in suiterecv.go has an explicit row with each one's
// expected result (-table prints it). It prints "ok RECEIVER NAME" or
// "FAIL RECEIVER NAME: why" per check and exits 1 on any failure;
// vmtest/run.sh also fails the run on an oops, BUG: or WARNING:. With
// -bench it measures instead (see bench.go).
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

type checker struct {
	failed int
	prefix string // the receiver and a space, in the suite
}

func (c *checker) check(ok bool, name, format string, args ...any) bool {
	if ok {
		fmt.Printf("ok   %s%s: %s\n", c.prefix, name, fmt.Sprintf(format, args...))
	} else {
		c.failed++
		fmt.Printf("FAIL %s%s: %s\n", c.prefix, name, fmt.Sprintf(format, args...))
	}
	return ok
}

type config struct {
	module, edge, whoami, c4, c6 string
	conns, clients, checkers     int
	clientFirst                  bool
	timeout                      time.Duration
	bench                        benchConfig
	recv                         recvConfig
}

func main() {
	var cfg config
	benchMode := flag.Bool("bench", false, "measure the TOA receivers (none, eBPF, toa.ko) instead of testing (see bench.go)")
	flag.StringVar(&cfg.module, "module", "/test/toa.ko", "toa.ko to load")
	flag.StringVar(&cfg.edge, "edge", "/test/realip-edge", "realip-edge binary")
	flag.StringVar(&cfg.whoami, "whoami", "/test/whoami", "examples/whoami binary")
	flag.StringVar(&cfg.c4, "c4", "/test/toa_server4", "the IPv4 C server (vmtest/testdata/csamples)")
	flag.StringVar(&cfg.c6, "c6", "/test/toa_server6", "the IPv6 C server (vmtest/testdata/csamples)")
	flag.IntVar(&cfg.conns, "conns", 5000, "connections of the load phase, all held open until the unload")
	flag.IntVar(&cfg.clients, "clients", 4, "concurrent clients of the load phase")
	flag.IntVar(&cfg.checkers, "checkers", 4, "threads calling getpeername() during the load and the unload")
	serverFirst := flag.Bool("server-first", false, "load phase: the origin greets first, so only the handshake ACK can complete the handshake (default: the client writes first, right after connect; see load.go)")
	flag.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "give up (FAIL) after this long")
	benchFlags(&cfg.bench)
	recvFlags(&cfg.recv)
	flag.Parse()
	if cfg.recv.table {
		printTable()
		return
	}
	cfg.clientFirst = !*serverFirst

	c := &checker{}
	timer := time.AfterFunc(cfg.timeout, func() {
		fmt.Printf("FAIL timeout: not done after %v\n", cfg.timeout)
		os.Exit(1)
	})
	var err error
	if *benchMode {
		err = bench(c, &cfg)
	} else {
		c.prefix = cfg.recv.kind + " "
		err = suite(c, &cfg)
	}
	timer.Stop()
	if err != nil {
		c.check(false, "setup", "%v", err)
	}
	if c.failed > 0 {
		fmt.Printf("multihost: %d checks failed\n", c.failed)
		os.Exit(1)
	}
	fmt.Println("multihost: all checks passed")
}
