//go:build linux

package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/realip/realip/edge/rules"
	"github.com/realip/realip/internal/testenv"
)

// hostsOf turns IP addresses and domain names into origins.
func hostsOf(hosts ...string) []rules.Origin {
	out := make([]rules.Origin, len(hosts))
	for i, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			out[i] = rules.Origin{Kind: rules.OriginIP, Addr: a}
		} else {
			out[i] = rules.Origin{Kind: rules.OriginDomain, Name: h}
		}
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// clientAddr returns the i-th test client: IPv4 for even i, IPv6 for odd.
func clientAddr(i int) netip.Addr {
	if i%2 == 0 {
		return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	var b [16]byte
	copy(b[:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1})
	b[13], b[14], b[15] = byte(i>>16), byte(i>>8), byte(i)
	return netip.AddrFrom16(b)
}

// fakeDNS is a Resolver whose answers the test changes while the pool runs.
type fakeDNS struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	errs    map[string]error
	calls   map[string]int
}

func newFakeDNS() *fakeDNS {
	return &fakeDNS{answers: map[string][]netip.Addr{}, errs: map[string]error{}, calls: map[string]int{}}
}

func (d *fakeDNS) resolver() Resolver {
	return ResolverFunc(func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		if network != "ip" {
			return nil, fmt.Errorf("unexpected network %q", network)
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.calls[host]++
		if err := d.errs[host]; err != nil {
			return nil, err
		}
		a, ok := d.answers[host]
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return slices.Clone(a), nil
	})
}

func (d *fakeDNS) set(host string, a []netip.Addr, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.answers[host] = a
	d.errs[host] = err
}

func (d *fakeDNS) callCount(host string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[host]
}

// waitFor polls cond until it holds, failing the test after a generous
// limit; it asserts no timing, only that the state is eventually reached.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// sortedCandidates returns the pool's addresses as a sorted set.
func sortedCandidates(p *Pool) []netip.Addr {
	c := p.Candidates(netip.MustParseAddr("192.0.2.200"))
	slices.SortFunc(c, netip.Addr.Compare)
	return c
}

func healthyOf(p *Pool, a netip.Addr) (healthy, found bool) {
	for _, s := range p.Status() {
		if s.Addr == a {
			return s.Healthy, true
		}
	}
	return false, false
}

// logBuf collects log output safely across goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// origins is a set of real TCP listeners on several loopback addresses,
// all on the same port, standing in for origins with a health check port.
type origins struct {
	t    *testing.T
	port uint16
	mu   sync.Mutex
	ls   map[netip.Addr]net.Listener
}

// listenOrigins listens on 127.0.0.1 .. 127.0.0.n on one port. It skips
// the test where only 127.0.0.1 is usable.
func listenOrigins(t *testing.T, n int) *origins {
	t.Helper()
	for try := 0; try < 50; try++ {
		o := &origins{t: t, ls: map[netip.Addr]net.Listener{}}
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		o.port = uint16(first.Addr().(*net.TCPAddr).Port)
		o.ls[o.addr(1)] = first
		ok := true
		for i := 2; i <= n && ok; i++ {
			if err := o.open(i); err != nil {
				ok = false
				if errors.Is(err, errNoLoopback) {
					o.closeAll()
					testenv.SkipOrFail(t, "%v", err)
				}
			}
		}
		if ok {
			t.Cleanup(o.closeAll)
			return o
		}
		o.closeAll() // port taken on another address: try another one
	}
	t.Fatal("no common free port on the loopback addresses")
	return nil
}

var errNoLoopback = errors.New("cannot listen on 127.0.0.2 (only 127.0.0.1 is local)")

func (o *origins) addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, byte(i)}) }

func (o *origins) hosts(n int) []rules.Origin {
	out := make([]rules.Origin, n)
	for i := range out {
		out[i] = rules.Origin{Kind: rules.OriginIP, Addr: o.addr(i + 1)}
	}
	return out
}

// open (re)starts the listener of 127.0.0.i, accepting and closing
// connections until it is closed.
func (o *origins) open(i int) error {
	a := o.addr(i)
	l, err := net.Listen("tcp", netip.AddrPortFrom(a, o.port).String())
	if err != nil {
		if strings.Contains(err.Error(), "assign requested address") {
			return errNoLoopback
		}
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	o.mu.Lock()
	o.ls[a] = l
	o.mu.Unlock()
	return nil
}

// close stops the listener of 127.0.0.i: connects to it are refused.
func (o *origins) close(i int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if l := o.ls[o.addr(i)]; l != nil {
		l.Close()
		delete(o.ls, o.addr(i))
	}
}

func (o *origins) closeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for a, l := range o.ls {
		l.Close()
		delete(o.ls, a)
	}
}

// fastOptions are options for tests with background work.
func fastOptions() Options {
	return Options{
		ResolveEvery:   5 * time.Millisecond,
		ResolveTimeout: time.Second,
		CheckEvery:     5 * time.Millisecond,
		CheckTimeout:   time.Second,
		DownAfter:      2,
		UpAfter:        2,
	}
}
