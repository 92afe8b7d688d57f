//go:build linux

package unwrap_test

import (
	"log"
	"net/netip"

	"github.com/realip/realip/agent/unwrap"
	"github.com/realip/realip/internal/tproute"
	"github.com/realip/realip/wire"
)

// A web server on 127.0.0.1:8080 that knows nothing of PROXY protocol sees
// the clients of the edges in 203.0.113.0/24, which connect to
// 198.51.100.10:80 with a PROXY v1 or v2 header.
func ExampleStart() {
	routing, err := tproute.Install(tproute.Config{}) // the defaults
	if err != nil {
		log.Fatal(err)
	}
	defer routing.Remove()
	r, err := unwrap.Start(unwrap.Entry{
		Network: "tcp",
		Listen:  netip.MustParseAddrPort("198.51.100.10:80"),
		To:      netip.MustParseAddrPort("127.0.0.1:8080"),
		Accept:  []wire.Proto{wire.PPv1, wire.PPv2},
		Trusted: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
	}, unwrap.Options{Mark: tproute.DefaultMark})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	// ... until the server stops:
	st := r.Stats()
	log.Printf("%d connections relayed, %d bytes to the server", st.Conns, st.BytesToServer)
}
