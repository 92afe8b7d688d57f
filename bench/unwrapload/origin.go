//go:build linux

package main

import (
	"flag"
	"fmt"

	"github.com/realip/realip/bench/internal/loadkit"
)

// runOrigin serves the origin: TCP discard (throughput), TCP echo
// (connections per second) and UDP echo, each on a list of addresses (the
// loopback address the unwrappers connect to, and the origin's own address
// for the direct path). The echo servers answer a request that starts with
// "WHO?" with the peer's address (see loadkit.Echo). It runs until SIGTERM
// or SIGINT.
func runOrigin(args []string) error {
	fs := flag.NewFlagSet("origin", flag.ExitOnError)
	discard := fs.String("discard", "", "comma-separated TCP addresses that read and drop everything")
	echo := fs.String("echo", "", "comma-separated TCP addresses that echo everything")
	udp := fs.String("udp", "", "comma-separated UDP addresses that echo every datagram")
	readers := fs.Int("udp-readers", 2, "goroutines reading each UDP socket")
	fs.Parse(args)
	for _, a := range loadkit.SplitList(*discard) {
		if _, err := loadkit.ServeTCP(a, loadkit.Discard); err != nil {
			return fmt.Errorf("tcp server: %w", err)
		}
	}
	for _, a := range loadkit.SplitList(*echo) {
		if _, err := loadkit.ServeTCP(a, loadkit.Echo{Who: true}.TCP); err != nil {
			return fmt.Errorf("tcp server: %w", err)
		}
	}
	for _, a := range loadkit.SplitList(*udp) {
		if _, err := loadkit.ServeUDP(a, *readers, loadkit.Echo{Who: true}.UDP); err != nil {
			return fmt.Errorf("udp echo: %w", err)
		}
	}
	loadkit.WaitForStop()
	return nil
}
