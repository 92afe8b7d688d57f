//go:build linux

package origin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realip/realip/edge/rules"
)

// Resolver looks up the addresses of a domain name. *net.Resolver
// satisfies it; the pool calls it with network "ip" (A and AAAA).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ResolverFunc adapts a function to a [Resolver].
type ResolverFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// LookupNetIP calls f.
func (f ResolverFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}

// Defaults of [Options].
const (
	DefaultResolveEvery   = 30 * time.Second
	DefaultResolveTimeout = 5 * time.Second
	DefaultCheckEvery     = 5 * time.Second
	DefaultCheckTimeout   = 2 * time.Second
	DefaultDownAfter      = 2
	DefaultUpAfter        = 2
	DefaultRetryAfter     = 30 * time.Second
)

// Options tune a [Pool]. A zero or negative field takes its default.
type Options struct {
	Resolver       Resolver      // default net.DefaultResolver
	ResolveEvery   time.Duration // re-resolution period of domain names, default 30s
	ResolveTimeout time.Duration // time limit of one look-up, default 5s
	CheckEvery     time.Duration // active health check period, default 5s
	CheckTimeout   time.Duration // TCP connect time limit of one check, default 2s
	DownAfter      int           // consecutive failed checks that mark an address down, default 2
	UpAfter        int           // consecutive good checks that mark it up again, default 2
	// RetryAfter applies to pools without an active check only: an address
	// marked down by MarkDown is healthy again this long after its last
	// passive failure (seen every CheckEvery), default 30s.
	RetryAfter time.Duration
	Logger     *slog.Logger // nil discards
}

func (o Options) withDefaults() Options {
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	dur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	dur(&o.ResolveEvery, DefaultResolveEvery)
	dur(&o.ResolveTimeout, DefaultResolveTimeout)
	dur(&o.CheckEvery, DefaultCheckEvery)
	dur(&o.CheckTimeout, DefaultCheckTimeout)
	dur(&o.RetryAfter, DefaultRetryAfter)
	if o.DownAfter <= 0 {
		o.DownAfter = DefaultDownAfter
	}
	if o.UpAfter <= 0 {
		o.UpAfter = DefaultUpAfter
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Check is the active health check of a pool.
type Check struct {
	// TCPPort is the port a TCP connect is tried on, every CheckEvery. 0
	// means no active check (UDP rules): only MarkDown and MarkUp change
	// the health of an address.
	TCPPort uint16
	// Hello is written on each check connection before it is closed: a
	// PROXY header with the LOCAL command (v2) or UNKNOWN (v1) for an origin
	// that expects one, so the check reads as a health check there and not
	// as a connection with a broken header. Empty: connect and close.
	Hello []byte
}

// Status is the state of one address of one host, for metrics and logs.
type Status struct {
	Host      string     // the host as written: IP address or domain name
	Addr      netip.Addr // invalid when the host has no address (its name never resolved)
	Healthy   bool
	LastErr   string    // last failure (check, passive mark or resolution); "" once healthy again
	LastCheck time.Time // time of the last active check of Addr; zero if none yet
}

// errNoAddrs is the resolution error of an answer without usable addresses.
var errNoAddrs = errors.New("no usable address in answer")

// hostState is one host of the pool. origin and label never change; the
// rest is guarded by Pool.mu.
type hostState struct {
	origin rules.Origin
	label  string // origin.String()

	addrs   []netip.Addr // current addresses, sorted; the last good answer for a name
	lastErr string       // last resolution error; "" after a good answer
}

// addrState is the health of one address. addr never changes; the rest is
// guarded by Pool.mu.
type addrState struct {
	addr      netip.Addr
	hosts     string // labels of the hosts that have addr, comma-separated
	healthy   bool
	okRun     int // consecutive good active checks
	failRun   int // consecutive failed active checks
	lastErr   string
	lastCheck time.Time
	downAt    time.Time // last passive failure (for RetryAfter)
}

// Pool picks origin addresses for the connections and flows of one rule.
// Its methods may be called by several goroutines at once.
type Pool struct {
	opt     Options
	persist bool
	check   Check
	log     *slog.Logger
	domains bool // some host is a domain name

	snap atomic.Pointer[snapshot] // what Candidates reads
	rr   atomic.Uint64            // round-robin counter (persist off)

	mu    sync.Mutex
	hosts []*hostState
	addrs map[netip.Addr]*addrState

	runMu   sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewPool returns a pool of the given hosts: IP addresses and domain names
// (groups must be expanded by the caller; repeated hosts are used once).
// persist selects rendezvous hashing on the client address, otherwise
// round robin. IP addresses can be used at once; domain names are resolved
// by Start. NewPool fails if hosts is empty or holds a group or an invalid
// origin.
func NewPool(hosts []rules.Origin, persist bool, check Check, opt Options) (*Pool, error) {
	if len(hosts) == 0 {
		return nil, errors.New("origin: no hosts")
	}
	opt = opt.withDefaults()
	p := &Pool{
		opt:     opt,
		persist: persist,
		check:   check,
		log:     opt.Logger,
		addrs:   make(map[netip.Addr]*addrState),
	}
	seen := make(map[string]bool, len(hosts))
	for _, o := range hosts {
		h := &hostState{origin: o}
		switch o.Kind {
		case rules.OriginIP:
			if !o.Addr.IsValid() || o.Addr.IsUnspecified() {
				return nil, fmt.Errorf("origin: invalid address %q", o.Addr)
			}
			h.origin.Addr = clean(o.Addr)
			h.addrs = []netip.Addr{h.origin.Addr}
		case rules.OriginDomain:
			if o.Name == "" {
				return nil, errors.New("origin: empty domain name")
			}
			h.origin.Name = strings.ToLower(o.Name)
			h.lastErr = "not resolved yet"
			p.domains = true
		case rules.OriginGroup:
			return nil, fmt.Errorf("origin: group %q must be expanded by the caller", o.Name)
		default:
			return nil, fmt.Errorf("origin: invalid origin kind %d", o.Kind)
		}
		h.label = h.origin.String()
		if seen[h.label] {
			continue
		}
		seen[h.label] = true
		p.hosts = append(p.hosts, h)
	}
	p.mu.Lock()
	p.rebuildLocked()
	p.mu.Unlock()
	return p, nil
}

// clean returns a as the pool keeps addresses: an IPv4-mapped IPv6
// address as IPv4, without zone.
func clean(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// Start resolves the domain names once, before it returns, then keeps
// re-resolving them and checking the health of the addresses in the
// background until ctx is done or Close is called. Only the first call
// does anything, and none after Close.
func (p *Pool) Start(ctx context.Context) {
	p.runMu.Lock()
	if p.started || p.closed {
		p.runMu.Unlock()
		return
	}
	p.started = true
	ctx, p.cancel = context.WithCancel(ctx)
	p.wg.Add(1)
	p.runMu.Unlock()

	if p.domains {
		p.resolveAll(ctx)
	}
	if ctx.Err() == nil && len(p.snap.Load().entries) == 0 {
		p.log.Warn("origin: no host resolved to an address", "hosts", p.hostLabels())
	}
	go p.run(ctx)
}

// Close stops the background work of Start and waits for it to end. The
// pool still answers Candidates with its last state.
func (p *Pool) Close() {
	p.runMu.Lock()
	p.closed = true
	if p.cancel != nil {
		p.cancel()
	}
	p.runMu.Unlock()
	p.wg.Wait()
}

func (p *Pool) run(ctx context.Context) {
	defer p.wg.Done()
	if p.domains {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.resolveLoop(ctx)
		}()
	}
	p.healthLoop(ctx)
}

func (p *Pool) hostLabels() string {
	labels := make([]string, len(p.hosts))
	for i, h := range p.hosts {
		labels[i] = h.label
	}
	return strings.Join(labels, ",")
}

// MarkDown records a passive failure of a seen by the caller (connection
// refused, ICMP unreachable): a is unhealthy at once. With an active check
// it is healthy again after UpAfter good checks, without one RetryAfter
// after its last passive failure, or at once on MarkUp. Addresses that are
// not in the pool are ignored.
func (p *Pool) MarkDown(a netip.Addr, err error) {
	a = clean(a)
	msg := "marked down"
	if err != nil {
		msg = err.Error()
	}
	p.mu.Lock()
	st := p.addrs[a]
	if st == nil {
		p.mu.Unlock()
		return
	}
	st.okRun = 0
	st.lastErr = msg
	st.downAt = time.Now()
	was := st.healthy
	st.healthy = false
	if was {
		p.publishLocked()
	}
	hosts := st.hosts
	p.mu.Unlock()
	if was {
		p.log.Info("origin down", "host", hosts, "addr", a, "error", msg, "by", "passive")
	}
}

// MarkUp records a passive success with a: an unhealthy a is healthy at
// once. It costs no lock when a is already healthy.
func (p *Pool) MarkUp(a netip.Addr) {
	a = clean(a)
	s := p.snap.Load()
	if i, ok := s.index[a]; !ok || s.entries[i].healthy {
		return
	}
	p.mu.Lock()
	st := p.addrs[a]
	if st == nil || st.healthy {
		p.mu.Unlock()
		return
	}
	st.setUp()
	p.publishLocked()
	hosts := st.hosts
	p.mu.Unlock()
	p.log.Info("origin up", "host", hosts, "addr", a, "by", "passive")
}

func (st *addrState) setUp() {
	st.healthy = true
	st.okRun, st.failRun = 0, 0
	st.lastErr = ""
}

// Status returns the state of every address, host by host in the order
// given to NewPool, each host's addresses in address order. A host without
// an address (a name that never resolved) has one entry with an invalid
// Addr and the resolution error. An address shared by several hosts has an
// entry under each, with the same health.
func (p *Pool) Status() []Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Status, 0, len(p.hosts)+len(p.addrs))
	for _, h := range p.hosts {
		if len(h.addrs) == 0 {
			out = append(out, Status{Host: h.label, LastErr: h.lastErr})
			continue
		}
		for _, a := range h.addrs {
			st := p.addrs[a]
			out = append(out, Status{
				Host:      h.label,
				Addr:      a,
				Healthy:   st.healthy,
				LastErr:   st.lastErr,
				LastCheck: st.lastCheck,
			})
		}
	}
	return out
}

// rebuildLocked makes p.addrs the union of the hosts' addresses, keeping
// the health of the addresses that stay and adding new ones as healthy,
// and publishes a new snapshot.
func (p *Pool) rebuildLocked() {
	owners := make(map[netip.Addr][]string)
	for _, h := range p.hosts {
		for _, a := range h.addrs {
			owners[a] = append(owners[a], h.label)
		}
	}
	for a := range p.addrs {
		if owners[a] == nil {
			delete(p.addrs, a)
		}
	}
	for a, labels := range owners {
		st := p.addrs[a]
		if st == nil {
			st = &addrState{addr: a, healthy: true}
			p.addrs[a] = st
		}
		st.hosts = strings.Join(labels, ",")
	}
	p.publishLocked()
}

// publishLocked stores a snapshot of the current addresses and health for
// Candidates.
func (p *Pool) publishLocked() {
	s := &snapshot{
		entries: make([]entry, 0, len(p.addrs)),
		index:   make(map[netip.Addr]int, len(p.addrs)),
	}
	for a, st := range p.addrs {
		s.entries = append(s.entries, entry{addr: a, hash: hashAddr(a), healthy: st.healthy})
	}
	slices.SortFunc(s.entries, func(x, y entry) int {
		if x.healthy != y.healthy {
			if x.healthy {
				return -1
			}
			return 1
		}
		return x.addr.Compare(y.addr)
	})
	for i, e := range s.entries {
		s.index[e.addr] = i
		if e.healthy {
			s.healthy++
		}
	}
	p.snap.Store(s)
}
