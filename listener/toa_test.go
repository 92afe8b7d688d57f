package listener

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/realip/realip/toactl"
	"github.com/realip/realip/wire"
)

// scriptedTOA answers Lookup as the kernel module (toactl.Client) would
// for the policy branches below; the module itself is exercised in the VM
// suite (vmtest), the eBPF receiver in toa_linux_test.go.
type scriptedTOA struct {
	entry toactl.Entry
	err   error
}

func (s scriptedTOA) Lookup(local, client netip.AddrPort) (toactl.Entry, error) {
	if s.err != nil {
		return toactl.Entry{}, s.err
	}
	e := s.entry
	e.Local = local
	return e, nil
}

func (scriptedTOA) Close() error { return nil }

func newTOAListener(t *testing.T, cfg Config, lookup toaLookup) *Listener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Protocols = []wire.Proto{wire.TOA}
	pol, err := newPolicy(cfg, wire.TOA)
	if err != nil {
		t.Fatal(err)
	}
	l := start(inner, pol, lookup) // New would dial the module; the script stands in
	t.Cleanup(func() { l.Close() })
	return l
}

func TestTOAPolicy(t *testing.T) {
	edge := netip.MustParseAddrPort("127.0.0.1:40000")
	tests := []struct {
		name    string
		cfg     Config
		lookup  scriptedTOA
		via     wire.Proto
		client  netip.AddrPort // zero: the socket's peer
		proxy   netip.AddrPort // zero: the socket's peer
		dropped Reason
		drop    bool
	}{
		{"entry from a trusted proxy", Config{Trusted: loopback}, scriptedTOA{entry: toactl.Entry{Client: client4, Proxy: edge}}, wire.TOA, client4, edge, 0, false},
		{"entry from an untrusted proxy dropped", Config{Trusted: docNet}, scriptedTOA{entry: toactl.Entry{Client: client4, Proxy: edge}}, 0, netip.AddrPort{}, netip.AddrPort{}, ReasonUntrusted, true},
		{"entry from an untrusted proxy ignored", Config{Trusted: docNet, Untrusted: UntrustedIgnore}, scriptedTOA{entry: toactl.Entry{Client: client4, Proxy: edge}}, wire.None, edge, edge, 0, false},
		{"no entry from a trusted peer, required", Config{Trusted: loopback}, scriptedTOA{err: toactl.ErrNoEntry}, 0, netip.AddrPort{}, netip.AddrPort{}, ReasonMissing, true},
		{"no entry from a trusted peer, optional", Config{Trusted: loopback, Optional: true}, scriptedTOA{err: toactl.ErrNoEntry}, wire.None, netip.AddrPort{}, netip.AddrPort{}, 0, false},
		{"no entry from an untrusted peer", Config{Trusted: docNet}, scriptedTOA{err: toactl.ErrNoEntry}, wire.None, netip.AddrPort{}, netip.AddrPort{}, 0, false},
		{"netlink failure", Config{Trusted: loopback}, scriptedTOA{err: errors.New("netlink: broken")}, 0, netip.AddrPort{}, netip.AddrPort{}, ReasonReadError, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newTOAListener(t, tt.cfg, moduleTOA{tt.lookup})
			if tt.drop {
				serveAccepts(t, l)
			}
			peer := dialSend(t, l, nil)
			if tt.drop {
				waitFor(t, func() bool { return l.Stats().Rejected[tt.dropped] == 1 })
				return
			}
			c := acceptOne(t, l)
			self := addrPort(peer.LocalAddr())
			wantClient, wantProxy := tt.client, tt.proxy
			if !wantClient.IsValid() {
				wantClient = self
			}
			if !wantProxy.IsValid() {
				wantProxy = self
			}
			if c.Via() != tt.via || c.Client() != wantClient || c.Proxy() != wantProxy {
				t.Fatalf("via %v client %v proxy %v; want %v %v %v", c.Via(), c.Client(), c.Proxy(), tt.via, wantClient, wantProxy)
			}
		})
	}
}

func TestTOAConfig(t *testing.T) {
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	defer inner.Close()
	if _, err := New(inner, Config{Trusted: loopback, Protocols: []wire.Proto{wire.TOA, wire.PPv1}}); err == nil {
		t.Fatal("toa combined with ppv1 accepted")
	}
}
