//go:build linux

// Command toacheck is the in-VM test of realip's two TOA receivers: toa.ko
// (-receiver kmod) and the eBPF receiver of package toarecv (-receiver
// ebpf). vmtest/toa.sh runs it in a QEMU guest once per receiver. It starts
// the receiver (loads the module beside it, or attaches the programs to
// the root cgroup and pins them in /sys/fs/bpf/realip/toa), sends TOA with
// realip-edge's eBPF sender (edge/toasend) over loopback, and checks what
// accept(), getpeername(), the receiver's entries and counters, and the
// listener library report; options with clients no peer can have, put on
// the wire byte for byte by a sockops program (internal/toacraft), must be
// refused and counted (refused.go); then it stops the receiver with
// connections still open (unload, or unpin) and checks that nothing of it
// is left, and starts it once more.
//
// The cases and what each receiver must do in them are one table
// (cases.go); -table prints it, the rows where the receivers differ first.
// Each check prints "ok"/"FAIL", the receiver and the row; the program
// exits 1 on any failure.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/realip/realip/vmtest/recvtest"
)

// loopbackTrust is what the receiver trusts: the sender dials over
// loopback.
var loopbackTrust = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

type checker struct {
	kind   recvtest.Kind
	failed bool
}

// check prints one check of row id.
func (c *checker) check(id string, ok bool, format string, args ...any) {
	status := "ok  "
	if !ok {
		status, c.failed = "FAIL", true
	}
	fmt.Printf("%s %s %s: %s\n", status, c.kind, id, fmt.Sprintf(format, args...))
}

func main() {
	kind := flag.String("receiver", "kmod", "the receiver to test: kmod (toa.ko, from -module) or ebpf (the eBPF receiver)")
	module := flag.String("module", "/test/toa.ko", "kmod: the toa.ko file")
	table := flag.Bool("table", false, "print the table of cases, with each receiver's expected result, and exit")
	flag.Parse()
	if *table {
		printTable()
		return
	}
	k, err := recvtest.ParseKind(*kind)
	if err != nil || flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "usage: toacheck [-receiver kmod|ebpf] [-module toa.ko] | toacheck -table (%v)\n", err)
		os.Exit(2)
	}
	c := &checker{kind: k}
	t0 := time.Now()
	if err := run(c, recvtest.Options{Module: *module, Trusted: loopbackTrust}); err != nil {
		c.check("setup", false, "%v", err)
	}
	verdict := "passed"
	if c.failed {
		verdict = "FAILED"
	}
	fmt.Printf("toacheck: receiver %s: %s in %v\n", k, verdict, time.Since(t0).Round(time.Millisecond))
	if c.failed {
		os.Exit(1)
	}
}
