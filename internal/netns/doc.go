//go:build linux

// Package netns builds small networks of Linux network namespaces for
// integration tests: a client, an edge and an origin, each a Host with its
// own interfaces, addresses and routes, joined by veth pairs. Nothing leaves
// the machine, and the documentation prefixes the tests use (192.0.2.0/24,
// 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) exist only inside the lab.
//
// A test that needs a lab calls NewLab, which skips the test (or fails it
// with REALIP_STRICT=1, see internal/testenv) when the machine cannot run
// it: not root, no ip(8), or namespaces unusable.
//
//	lab := netns.NewLab(t)
//	client, origin := lab.Host("client"), lab.Host("origin")
//	lab.Link(client, origin,
//		[]netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")},
//		[]netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")})
//	var ln net.Listener
//	err := origin.Do(func() (err error) {
//		ln, err = net.Listen("tcp", "192.0.2.1:8080")
//		return err
//	})
//	proxy := origin.Start(t, "haproxy", "-f", cfg) // killed on cleanup
//
// Links are usable when Link returns: it waits until both ends pass traffic.
// Hosts do no IPv6 duplicate address detection (addresses are unique by
// construction), so IPv6 addresses, link-local ones included, work at once;
// with DAD, a forwarding host drops what it should forward for a second or
// two, as it cannot solicit neighbours from a tentative link-local address.
//
// Go code runs inside a namespace through Host.Do: sockets created there keep
// living in that namespace after Do returns, whatever goroutine uses them.
// External programs run through Host.Command and Host.Start (`ip netns exec`).
//
// Namespace names carry a prefix unique to the lab (realip-PID-RANDOM-), so
// parallel tests and parallel test binaries never collide. Everything a lab
// made is removed by t.Cleanup: processes running in its namespaces are
// killed, then the namespaces are deleted, which removes their interfaces.
// Namespaces left behind by a test binary that died (for example on a
// `go test -timeout` panic, which skips cleanups) are removed by the next
// NewLab once that binary's PID is gone.
//
// Lab and Host setup methods (Host, Link, Route, Sysctl, EnableForwarding)
// stop the test with t.Fatal on error, so they must be called from the
// goroutine running the test that created the lab. Do, Command and the
// returned Proc may be used from any goroutine.
package netns
