//go:build linux

package origin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/realip/realip/edge/rules"
)

func TestNewPoolErrors(t *testing.T) {
	tests := []struct {
		name  string
		hosts []rules.Origin
		want  string
	}{
		{"no hosts", nil, "no hosts"},
		{"group", []rules.Origin{{Kind: rules.OriginGroup, Name: "web"}}, "must be expanded"},
		{"invalid address", []rules.Origin{{Kind: rules.OriginIP}}, "invalid address"},
		{"unspecified address", hostsOf("0.0.0.0"), "invalid address"},
		{"empty name", []rules.Origin{{Kind: rules.OriginDomain}}, "empty domain"},
		{"zero kind", []rules.Origin{{Name: "x"}}, "invalid origin kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPool(tt.hosts, true, Check{}, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewPool = %v, %v; want error with %q", p, err, tt.want)
			}
		})
	}
}

func TestOptionDefaults(t *testing.T) {
	o := Options{CheckEvery: -1, UpAfter: 5}.withDefaults()
	if o.Resolver != net.DefaultResolver || o.ResolveEvery != 30*time.Second || o.ResolveTimeout != 5*time.Second ||
		o.CheckEvery != 5*time.Second || o.CheckTimeout != 2*time.Second || o.DownAfter != 2 || o.UpAfter != 5 ||
		o.RetryAfter != 30*time.Second || o.Logger == nil {
		t.Fatalf("defaults: %+v", o)
	}
}

func TestIPHostsUsableWithoutStart(t *testing.T) {
	p, err := NewPool(hostsOf("::ffff:192.0.2.1", "192.0.2.1", "2001:db8::1"), true, Check{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The mapped form is the IPv4 address, written twice: used once.
	if got, want := sortedCandidates(p), addrs("192.0.2.1", "2001:db8::1"); !slices.Equal(got, want) {
		t.Fatalf("candidates %v, want %v", got, want)
	}
}

// TestHysteresis feeds check results and passive marks to one address.
// Steps: x failed check, o good check, D MarkDown, U MarkUp; want gives
// the health after each step (h healthy, u unhealthy).
func TestHysteresis(t *testing.T) {
	tests := []struct {
		downAfter, upAfter int
		steps, want        string
	}{
		{2, 2, "xoxx", "hhhu"},
		{2, 2, "xxooo", "huuhh"},
		{2, 2, "xxoxoo", "huuuuh"},
		{2, 2, "Doo", "uuh"},
		{2, 2, "DU", "uh"},
		{2, 2, "xxoDoo", "huuuuh"}, // a passive failure restarts the up count
		{2, 2, "xxU", "huh"},
		{1, 3, "xooo", "uuuh"},
		{3, 1, "xxoxxxo", "hhhhhuh"},
		{2, 2, "oUUoo", "hhhhh"},
	}
	for _, tt := range tests {
		t.Run(tt.steps, func(t *testing.T) {
			a := netip.MustParseAddr("192.0.2.1")
			p, err := NewPool(hostsOf(a.String(), "192.0.2.2"), true, Check{TCPPort: 1},
				Options{DownAfter: tt.downAfter, UpAfter: tt.upAfter})
			if err != nil {
				t.Fatal(err)
			}
			st := p.addrs[a]
			for i, step := range tt.steps {
				switch step {
				case 'x':
					p.applyCheck(st, errors.New("refused"), time.Now())
				case 'o':
					p.applyCheck(st, nil, time.Now())
				case 'D':
					p.MarkDown(a, errors.New("passive"))
				case 'U':
					p.MarkUp(a)
				}
				healthy, _ := healthyOf(p, a)
				if want := tt.want[i] == 'h'; healthy != want {
					t.Fatalf("after step %d (%s): healthy %v, want %v", i+1, tt.steps[:i+1], healthy, want)
				}
				// Candidates sees it at once.
				got := p.Candidates(a)
				if healthy && p.snap.Load().healthy != 2 || !healthy && got[1] != a {
					t.Fatalf("after step %d: candidates %v disagree with health %v", i+1, got, healthy)
				}
			}
		})
	}
}

func TestHealthCheckDownAndBack(t *testing.T) {
	o := listenOrigins(t, 3)
	var logs logBuf
	opt := fastOptions()
	opt.Logger = logs.logger()
	p, err := NewPool(o.hosts(3), true, Check{TCPPort: o.port}, opt)
	if err != nil {
		t.Fatal(err)
	}
	p.Start(t.Context())
	defer p.Close()

	waitFor(t, "first checks", func() bool {
		for _, s := range p.Status() {
			if s.LastCheck.IsZero() || !s.Healthy {
				return false
			}
		}
		return true
	})
	// A client whose origin is 127.0.0.2.
	victim := o.addr(2)
	var client netip.Addr
	for i := 0; !client.IsValid(); i++ {
		if p.Candidates(clientAddr(i))[0] == victim {
			client = clientAddr(i)
		}
	}

	o.close(2)
	waitFor(t, "127.0.0.2 down", func() bool { h, _ := healthyOf(p, victim); return !h })
	got := p.Candidates(client)
	if got[0] == victim || got[2] != victim {
		t.Fatalf("with %v down: %v", victim, got)
	}
	for _, a := range []netip.Addr{o.addr(1), o.addr(3)} {
		if h, _ := healthyOf(p, a); !h {
			t.Fatalf("%v down too", a)
		}
	}
	for _, s := range p.Status() {
		if s.Addr == victim && !strings.Contains(s.LastErr, "refused") {
			t.Errorf("LastErr of %v: %q", victim, s.LastErr)
		}
	}

	if err := o.open(2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "127.0.0.2 up", func() bool { h, _ := healthyOf(p, victim); return h })
	if got := p.Candidates(client)[0]; got != victim {
		t.Fatalf("client back on %v, want %v", got, victim)
	}
	p.Close()

	log := logs.String()
	for _, want := range []string{
		`msg="origin down" host=127.0.0.2 addr=127.0.0.2 error=`,
		`msg="origin up" host=127.0.0.2 addr=127.0.0.2 by=check`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "addr=127.0.0.1") || strings.Contains(log, "addr=127.0.0.3") {
		t.Errorf("transitions of healthy origins logged:\n%s", log)
	}
}

func TestMarkDownComesBackAfterChecks(t *testing.T) {
	o := listenOrigins(t, 2)
	p, err := NewPool(o.hosts(2), false, Check{TCPPort: o.port}, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	p.Start(t.Context())
	defer p.Close()

	a := o.addr(1)
	p.MarkDown(a, errors.New("connection refused"))
	if h, _ := healthyOf(p, a); h {
		t.Fatal("MarkDown did not take effect at once")
	}
	// The origin answers its checks: UpAfter good ones bring it back.
	waitFor(t, "back up by checks", func() bool { h, _ := healthyOf(p, a); return h })
}

func TestFullyDownGroupStillTried(t *testing.T) {
	o := listenOrigins(t, 2)
	p, err := NewPool(o.hosts(2), true, Check{TCPPort: o.port}, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	o.closeAll()
	p.Start(t.Context())
	defer p.Close()
	waitFor(t, "all down", func() bool {
		for _, s := range p.Status() {
			if s.Healthy {
				return false
			}
		}
		return true
	})
	if got := p.Candidates(clientAddr(0)); len(got) != 2 {
		t.Fatalf("fully down pool: candidates %v, want both as last resort", got)
	}
}

func TestNoCheckRetryAfter(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	opt := fastOptions()
	opt.RetryAfter = time.Hour
	p, err := NewPool(hostsOf("192.0.2.1", "192.0.2.2"), true, Check{}, opt)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	p.MarkDown(a, errors.New("icmp port unreachable"))
	p.expireDown(before.Add(opt.RetryAfter - time.Millisecond))
	if h, _ := healthyOf(p, a); h {
		t.Fatal("down mark lifted before RetryAfter")
	}
	p.expireDown(time.Now().Add(opt.RetryAfter))
	if h, _ := healthyOf(p, a); !h {
		t.Fatal("down mark not lifted after RetryAfter")
	}

	// And in the background, with a short RetryAfter.
	opt.RetryAfter = 20 * time.Millisecond
	p, err = NewPool(hostsOf("192.0.2.1", "192.0.2.2"), true, Check{}, opt)
	if err != nil {
		t.Fatal(err)
	}
	p.Start(t.Context())
	defer p.Close()
	p.MarkDown(a, errors.New("icmp port unreachable"))
	waitFor(t, "retry", func() bool { h, _ := healthyOf(p, a); return h })
	for _, s := range p.Status() {
		if !s.LastCheck.IsZero() {
			t.Errorf("%v checked actively without a check port", s.Addr)
		}
	}
}

func TestResolveAtStart(t *testing.T) {
	notFound := &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}
	tests := []struct {
		name    string
		hosts   []string
		answers map[string][]netip.Addr // missing: not found
		errs    map[string]error
		want    []netip.Addr // sorted candidates
		status  []Status     // Host, Addr, Healthy, LastErr prefix
	}{
		{
			name:    "A and AAAA",
			hosts:   []string{"web.example"},
			answers: map[string][]netip.Addr{"web.example": addrs("2001:db8::1", "192.0.2.1")},
			want:    addrs("192.0.2.1", "2001:db8::1"),
			status: []Status{
				{Host: "web.example", Addr: netip.MustParseAddr("192.0.2.1"), Healthy: true},
				{Host: "web.example", Addr: netip.MustParseAddr("2001:db8::1"), Healthy: true},
			},
		},
		{
			name:    "failed name contributes nothing",
			hosts:   []string{"gone.example", "192.0.2.9"},
			errs:    map[string]error{"gone.example": notFound},
			want:    addrs("192.0.2.9"),
			status:  []Status{{Host: "gone.example", LastErr: "resolve: lookup x: no such host"}, {Host: "192.0.2.9", Addr: netip.MustParseAddr("192.0.2.9"), Healthy: true}},
			answers: nil,
		},
		{
			name:   "nothing resolved",
			hosts:  []string{"a.example", "b.example"},
			errs:   map[string]error{"b.example": errors.New("timeout")},
			want:   nil,
			status: []Status{{Host: "a.example", LastErr: "resolve: lookup a.example: no such host"}, {Host: "b.example", LastErr: "resolve: timeout"}},
		},
		{
			name:    "empty answer is a failure",
			hosts:   []string{"empty.example", "192.0.2.9"},
			answers: map[string][]netip.Addr{"empty.example": {}},
			want:    addrs("192.0.2.9"),
			status:  []Status{{Host: "empty.example", LastErr: "resolve: " + errNoAddrs.Error()}, {Host: "192.0.2.9", Addr: netip.MustParseAddr("192.0.2.9"), Healthy: true}},
		},
		{
			name:    "answer cleaned",
			hosts:   []string{"web.example"},
			answers: map[string][]netip.Addr{"web.example": addrs("::ffff:192.0.2.1", "192.0.2.1", "0.0.0.0", "::", "224.0.0.1", "192.0.2.2")},
			want:    addrs("192.0.2.1", "192.0.2.2"),
		},
		{
			name:    "address shared by a name and an IP",
			hosts:   []string{"web.example", "192.0.2.1"},
			answers: map[string][]netip.Addr{"web.example": addrs("192.0.2.1")},
			want:    addrs("192.0.2.1"),
			status: []Status{
				{Host: "web.example", Addr: netip.MustParseAddr("192.0.2.1"), Healthy: true},
				{Host: "192.0.2.1", Addr: netip.MustParseAddr("192.0.2.1"), Healthy: true},
			},
		},
		{
			name:    "repeated name used once",
			hosts:   []string{"web.example", "WEB.example"},
			answers: map[string][]netip.Addr{"web.example": addrs("192.0.2.1")},
			want:    addrs("192.0.2.1"),
			status:  []Status{{Host: "web.example", Addr: netip.MustParseAddr("192.0.2.1"), Healthy: true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dns := newFakeDNS()
			for h, a := range tt.answers {
				dns.set(h, a, nil)
			}
			for h, err := range tt.errs {
				dns.set(h, nil, err)
			}
			var logs logBuf
			p, err := NewPool(hostsOf(tt.hosts...), true, Check{},
				Options{Resolver: dns.resolver(), ResolveEvery: time.Hour, Logger: logs.logger()})
			if err != nil {
				t.Fatal(err)
			}
			p.Start(t.Context())
			defer p.Close()
			if got := sortedCandidates(p); !slices.Equal(got, tt.want) {
				t.Fatalf("candidates %v, want %v", got, tt.want)
			}
			if tt.want == nil && p.Candidates(clientAddr(1)) != nil {
				t.Fatal("candidates not empty")
			}
			if tt.status != nil {
				got := p.Status()
				if len(got) != len(tt.status) {
					t.Fatalf("status %+v, want %+v", got, tt.status)
				}
				for i, w := range tt.status {
					g := got[i]
					if g.Host != w.Host || g.Addr != w.Addr || g.Healthy != w.Healthy || g.LastErr != w.LastErr {
						t.Errorf("status[%d] = %+v, want %+v", i, g, w)
					}
				}
			}
			for _, h := range tt.hosts {
				if _, err := netip.ParseAddr(h); err == nil {
					continue
				}
				if n := dns.callCount(strings.ToLower(h)); n != 1 {
					t.Errorf("%s resolved %d times at Start, want 1", h, n)
				}
			}
			if len(tt.errs) > 0 || tt.want == nil {
				if !strings.Contains(logs.String(), "origin resolve failed") {
					t.Errorf("failure not logged:\n%s", logs.String())
				}
			}
		})
	}
}

func TestResolveKeepsLastAnswerAndFollowsChanges(t *testing.T) {
	dns := newFakeDNS()
	dns.set("web.example", addrs("192.0.2.1", "192.0.2.2"), nil)
	var logs logBuf
	opt := fastOptions()
	opt.RetryAfter = time.Hour
	opt.Logger = logs.logger()
	opt.Resolver = dns.resolver()
	p, err := NewPool(hostsOf("web.example"), true, Check{}, opt)
	if err != nil {
		t.Fatal(err)
	}
	p.Start(t.Context())
	defer p.Close()
	if got, want := sortedCandidates(p), addrs("192.0.2.1", "192.0.2.2"); !slices.Equal(got, want) {
		t.Fatalf("candidates %v, want %v right after Start", got, want)
	}
	p.MarkDown(netip.MustParseAddr("192.0.2.2"), errors.New("refused"))

	// Failures keep the last answer.
	for _, err := range []error{errors.New("i/o timeout"), nil} {
		dns.set("web.example", nil, err) // nil, nil: an empty answer
		n := dns.callCount("web.example")
		// Resolution rounds are sequential: once a later one has started,
		// the earlier one has been applied.
		waitFor(t, "two failed re-resolutions", func() bool { return dns.callCount("web.example") >= n+2 })
		if got, want := sortedCandidates(p), addrs("192.0.2.1", "192.0.2.2"); !slices.Equal(got, want) {
			t.Fatalf("after failure %v: candidates %v, want the last answer %v", err, got, want)
		}
	}
	if !strings.Contains(logs.String(), `msg="origin resolve failed" host=web.example error="i/o timeout" kept=2`) {
		t.Errorf("failure not logged:\n%s", logs.String())
	}

	// A change drops and adds addresses; the health of those kept stays.
	dns.set("web.example", addrs("192.0.2.3", "192.0.2.2"), nil)
	waitFor(t, "new answer", func() bool {
		return slices.Equal(sortedCandidates(p), addrs("192.0.2.2", "192.0.2.3"))
	})
	if h, _ := healthyOf(p, netip.MustParseAddr("192.0.2.2")); h {
		t.Error("kept address lost its down mark")
	}
	if h, found := healthyOf(p, netip.MustParseAddr("192.0.2.3")); !h || !found {
		t.Error("new address not healthy")
	}
	if _, found := healthyOf(p, netip.MustParseAddr("192.0.2.1")); found {
		t.Error("dropped address still in status")
	}
	if got := p.Candidates(clientAddr(5)); got[0] != netip.MustParseAddr("192.0.2.3") {
		t.Errorf("candidates %v: healthy new address not first", got)
	}
	p.Close()
	if !strings.Contains(logs.String(), `msg="origin addresses changed" host=web.example added=[192.0.2.3] removed=[192.0.2.1]`) {
		t.Errorf("change not logged:\n%s", logs.String())
	}
}

func TestStartCloseLifecycle(t *testing.T) {
	dns := newFakeDNS()
	dns.set("web.example", addrs("192.0.2.1"), nil)
	opt := fastOptions()
	opt.ResolveEvery = time.Hour
	opt.Resolver = dns.resolver()
	p, err := NewPool(hostsOf("web.example"), true, Check{TCPPort: 9}, opt)
	if err != nil {
		t.Fatal(err)
	}
	p.Close() // before Start: fine
	p.Start(t.Context())
	if n := dns.callCount("web.example"); n != 0 {
		t.Fatalf("Start after Close resolved %d times", n)
	}

	p, err = NewPool(hostsOf("web.example"), true, Check{TCPPort: 9}, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	p.Start(ctx)
	p.Start(ctx) // second Start: no-op
	if n := dns.callCount("web.example"); n != 1 {
		t.Fatalf("two Starts resolved %d times, want 1", n)
	}
	cancel()
	p.Close() // returns once the background work has ended
	p.Close()
	if got := p.Candidates(clientAddr(0)); len(got) != 1 {
		t.Fatalf("after Close: candidates %v, want the last state", got)
	}
}

func TestConcurrentUse(t *testing.T) {
	o := listenOrigins(t, 3)
	dns := newFakeDNS()
	dns.set("web.example", addrs("127.0.0.3", "127.0.0.4"), nil)
	opt := fastOptions()
	opt.Resolver = dns.resolver()
	hosts := append(o.hosts(2), hostsOf("web.example")...)
	p, err := NewPool(hosts, true, Check{TCPPort: o.port}, opt)
	if err != nil {
		t.Fatal(err)
	}
	p.Start(t.Context())
	defer p.Close()

	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			buf := make([]netip.Addr, 0, 8)
			for i := range 3000 {
				c := clientAddr(g*10000 + i)
				if got := p.Candidates(c); len(got) == 0 {
					t.Error("empty candidates")
					return
				}
				buf = p.AppendCandidates(buf[:0], c)
				switch i % 100 {
				case 0:
					p.MarkDown(buf[0], errors.New("refused"))
				case 50:
					p.MarkUp(buf[len(buf)-1])
				case 99:
					_ = p.Status()
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 20 {
			if i%2 == 0 {
				dns.set("web.example", addrs("127.0.0.3"), nil)
			} else {
				dns.set("web.example", addrs("127.0.0.3", "127.0.0.4"), nil)
			}
			n := dns.callCount("web.example")
			deadline := time.Now().Add(10 * time.Second)
			for dns.callCount("web.example") <= n {
				if time.Now().After(deadline) {
					t.Error("no re-resolution")
					return
				}
				time.Sleep(time.Millisecond)
			}
		}
	})
	wg.Wait()
}

// TestHealthCheckSendsHello checks that a check connection carries the
// check's Hello and nothing else, then closes.
func TestHealthCheckSendsHello(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	hello := []byte("PROXY UNKNOWN\r\n")
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	p, err := NewPool(hostsOf("127.0.0.1"), false, Check{TCPPort: port, Hello: hello}, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	p.Start(t.Context())
	defer p.Close()
	select {
	case b := <-got:
		if !bytes.Equal(b, hello) {
			t.Fatalf("check connection carried %q, want %q", b, hello)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no check connection")
	}
}
