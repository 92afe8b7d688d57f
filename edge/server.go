//go:build linux

package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/realip/realip/edge/origin"
	"github.com/realip/realip/edge/rules"
	"github.com/realip/realip/edge/toasend"
)

// ErrTOAUnavailable wraps the reason a rules file with a toa rule cannot
// be served here: sending TOA needs eBPF (root or CAP_BPF+CAP_NET_ADMIN),
// cgroup v2 and a kernel with BPF TCP header options (5.10+).
var ErrTOAUnavailable = errors.New("IPMODE toa cannot be served on this machine")

// Server relays the forwarding ports of a rules file to their origins.
type Server struct {
	opts     Options
	metrics  *metrics
	ctx      context.Context
	cancel   context.CancelFunc
	flows    *flowLimits    // live UDP flows, bounded by MaxUDPFlows and MaxUDPFlowsPerIP
	conns    atomic.Int64   // relayed TCP connections, bounded by maxConns
	maxConns atomic.Int64   // MaxTCPConns, or fewer if the open-file limit holds fewer
	connIPs  *ipCounts      // relayed TCP connections per client address
	tcpConns *connTable     // relayed TCP connections, for idle sweeps and drain
	evLoops  *evLoops       // epoll loops relaying TCP and UDP (Linux); nil: goroutines only
	sweeper  sync.Once      // starts tcpConns' sweeper with the first TCP port
	logs     *rateState     // the rate limits of the log (Options.Logger)
	logFlush sync.Once      // starts logs' periodic summaries
	loops    sync.WaitGroup // serveTCP and serveUDP goroutines
	active   sync.WaitGroup // TCP connections and UDP flows, for draining
	tuples   tupleSet       // address pairs of the UDP flows' upstream sockets

	// fileLimit raises the open-file limit for n descriptors more than a
	// margin and returns the limit the process got (openFileLimit; tests
	// replace it).
	fileLimit func(n int) (uint64, error)

	mu             sync.Mutex      // serialises Start, Reload and Shutdown; guards below
	shut           bool            // Shutdown began
	fileWarned     bool            // a failed raise of the open-file limit was logged
	fileCapsLogged [2]int          // the bounds the open-file limit lowered, as last logged
	toa            *toasend.Sender // opened with the first toa rule; set once, under mu
	rules          map[string]*ruleState
	tcp            map[uint16]*tcpPort
	udp            map[uint16]udpPort
}

// ruleState is one rule with what it needs at run time. Rules that did not
// change across a reload keep their ruleState, and so their flows.
type ruleState struct {
	rule    *rules.Rule
	key     string
	pass    passing // what the rule's IP mode means for the relays
	pool    *origin.Pool
	metrics *ruleMetrics
}

// binding is what a port forwards to.
type binding struct {
	rs         *ruleState
	originPort uint16
}

// New checks options and rules; Start begins listening.
func New(opts Options) (*Server, error) {
	opts = opts.withDefaults()
	if opts.RulesPath == "" {
		return nil, errors.New("edge: no rules file")
	}
	// The edge's own warnings are rate-limited per message; the origin
	// pools' (state changes) are not.
	logs := newRateLimitHandler(opts.Logger.Handler(), logPeriod)
	opts.Logger = slog.New(logs)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:      opts,
		metrics:   newMetrics(opts.Registerer),
		ctx:       ctx,
		cancel:    cancel,
		tcpConns:  newConnTable(opts.IdleTimeout),
		flows:     newFlowLimits(opts.MaxUDPFlows, opts.MaxUDPFlowsPerIP),
		connIPs:   newIPCounts(opts.MaxTCPConnsPerIP),
		fileLimit: openFileLimit,
		logs:      logs.st,
		rules:     map[string]*ruleState{},
		tcp:       map[uint16]*tcpPort{},
		udp:       map[uint16]udpPort{},
	}
	s.maxConns.Store(int64(opts.MaxTCPConns))
	if !opts.GoroutineRelay {
		s.evLoops = newEvLoops(s)
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{newOriginCollector(s), newTOACollector(s.TOAStats)} {
			if err := opts.Registerer.Register(c); err != nil {
				cancel()
				return nil, fmt.Errorf("edge: metrics: %w", err)
			}
		}
	}
	return s, nil
}

// LoadRules reads and checks the rules and groups files the way Start and
// Reload do, without applying them.
func LoadRules(rulesPath, groupsPath string) (*rules.Set, error) {
	return rules.Load(rulesPath, groupsPath)
}

// firstTOARule returns the first rule with IPMODE toa, if any.
func firstTOARule(set *rules.Set) *rules.Rule {
	for i := range set.Rules {
		if passingFor(set.Rules[i].IPMode, false).toa {
			return &set.Rules[i]
		}
	}
	return nil
}

// ensureTOA opens the TOA sender the first time a rule needs it; a machine
// that cannot send TOA refuses the rules file, naming the rule, rather than
// forwarding without the client address.
func (s *Server) ensureTOA(set *rules.Set) error {
	r := firstTOARule(set)
	if r == nil || s.toa != nil {
		return nil
	}
	sender, err := toasend.Open(s.opts.TOA)
	if err != nil {
		return fmt.Errorf("%s:%d: %w: %w", s.opts.RulesPath, r.Line, ErrTOAUnavailable, err)
	}
	s.toa = sender
	s.opts.Logger.Info("edge: TOA sender attached", "cgroup", sender.Cgroup())
	return nil
}

// Start reads the rules and listens on every forwarding port.
func (s *Server) Start() error {
	s.logFlush.Do(func() { go s.logs.run(s.ctx) })
	return s.Reload()
}

// Reload reads the rules again and applies them atomically: on any error
// (a bad file, a port that cannot be bound) nothing changes.
func (s *Server) Reload() error {
	set, err := LoadRules(s.opts.RulesPath, s.opts.GroupsPath)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut {
		return errors.New("edge: server is shut down")
	}
	if err := s.ensureTOA(set); err != nil {
		return err
	}
	return s.apply(set)
}

// apply moves the server to set. New listeners are opened first, so a
// failure leaves the running configuration untouched.
func (s *Server) apply(set *rules.Set) error {
	states, fresh, err := s.ruleStates(set)
	if err != nil {
		return err
	}
	want := map[rules.Proto]map[uint16]binding{rules.TCP: {}, rules.UDP: {}}
	for _, rs := range states {
		for port, oport := range rs.rule.Mappings() {
			want[rs.rule.Proto][port] = binding{rs: rs, originPort: oport}
		}
	}
	udpSockets := len(want[rules.UDP])
	if s.evLoops != nil {
		udpSockets *= runtime.GOMAXPROCS(0) // a socket per loop and port
	}
	s.fitFileLimit(len(want[rules.TCP])+udpSockets, len(want[rules.TCP]) > 0, len(want[rules.UDP]) > 0)
	newTCP, newUDP, err := s.openPorts(want)
	if err != nil {
		for _, rs := range fresh {
			rs.close(s.rules)
		}
		return err
	}
	s.commitTCP(want[rules.TCP], newTCP)
	s.commitUDP(want[rules.UDP], newUDP)
	for key, rs := range s.rules {
		if _, kept := states[key]; !kept {
			rs.close(states)
		}
	}
	s.rules = states
	s.opts.Logger.Info("edge: rules applied", "rules", len(states), "tcp_ports", len(s.tcp), "udp_ports", len(s.udp), "new_rules", len(fresh))
	return nil
}

// fitFileLimit raises the open-file limit for sockets, MaxTCPConns and
// MaxUDPFlows, and lowers those two bounds to what the limit the process
// got holds (fileCaps). A failed raise is logged once per server, lowered
// bounds once per change. Called under s.mu.
func (s *Server) fitFileLimit(sockets int, tcp, udp bool) {
	o := s.opts
	limit, err := s.fileLimit(sockets + o.MaxUDPFlows + 2*o.MaxTCPConns)
	if err != nil && !s.fileWarned {
		s.fileWarned = true
		o.Logger.Warn("edge: cannot raise the open-file limit", "err", err)
	}
	conns, flows := fileCaps(limit, sockets, o.MaxTCPConns, o.MaxUDPFlows, tcp, udp)
	s.maxConns.Store(int64(conns))
	s.flows.setMax(flows)
	caps := [2]int{conns, flows}
	if caps != s.fileCapsLogged && (conns < o.MaxTCPConns || flows < o.MaxUDPFlows) {
		s.fileCapsLogged = caps
		o.Logger.Warn("edge: the open-file limit holds fewer connections or flows than asked",
			"limit", limit, "max_tcp_conns", conns, "max_udp_flows", flows,
			"asked_tcp_conns", o.MaxTCPConns, "asked_udp_flows", o.MaxUDPFlows)
	}
}

// ruleStates builds the state of every rule of set, reusing unchanged ones.
func (s *Server) ruleStates(set *rules.Set) (all map[string]*ruleState, fresh []*ruleState, err error) {
	all = map[string]*ruleState{}
	for i := range set.Rules {
		r := &set.Rules[i]
		hosts, key := expandOrigin(r, set.Groups)
		if old, ok := s.rules[key]; ok {
			all[key] = old
			continue
		}
		rs, err := s.newRuleState(r, hosts, key)
		if err != nil {
			for _, f := range fresh {
				f.close(s.rules)
			}
			return nil, nil, fmt.Errorf("%s:%d: %w", s.opts.RulesPath, r.Line, err)
		}
		all[key] = rs
		fresh = append(fresh, rs)
	}
	return all, fresh, nil
}

func (s *Server) newRuleState(r *rules.Rule, hosts []rules.Origin, key string) (*ruleState, error) {
	pass := passingFor(r.IPMode, s.opts.PPv2EveryDatagram)
	var check origin.Check
	if r.Proto == rules.TCP {
		check.TCPPort = r.OriginPort.Lo
		hello, err := pass.checkHello()
		if err != nil {
			return nil, err
		}
		check.Hello = hello
	}
	pool, err := origin.NewPool(hosts, r.Persist, check, s.opts.Origin)
	if err != nil {
		return nil, err
	}
	pool.Start(s.ctx)
	label := strings.Fields(r.String())[0]
	return &ruleState{rule: r, key: key, pass: pass, pool: pool, metrics: s.metrics.forRule(label, r.Proto.String())}, nil
}

// close stops the rule's pool and removes its metric series, unless a rule
// of live has the same label: a rule changed in place keeps its ports, so
// its label, and its new state shares the series.
func (rs *ruleState) close(live map[string]*ruleState) {
	rs.pool.Close()
	for _, o := range live {
		if o != rs && o.metrics.label == rs.metrics.label {
			return
		}
	}
	rs.metrics.forget()
}

// expandOrigin returns the hosts of a rule's origin and a key that changes
// whenever anything that affects forwarding changes (not the tag).
func expandOrigin(r *rules.Rule, groups rules.Groups) ([]rules.Origin, string) {
	hosts := []rules.Origin{r.Origin}
	if r.Origin.Kind == rules.OriginGroup {
		if g, ok := groups.Lookup(r.Origin.Name); ok {
			hosts = g.Hosts
		}
	}
	bare := *r
	bare.Tag, bare.Line = "", 0
	key := bare.String()
	for _, h := range hosts {
		key += " " + h.String()
	}
	return hosts, key
}

// Shutdown stops listening, closes UDP flows and waits for TCP connections
// to finish until ctx is done; then it cuts them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shut = true
	for port, p := range s.tcp {
		s.closeTCPPort(p)
		delete(s.tcp, port)
	}
	for port, p := range s.udp {
		p.close()
		delete(s.udp, port)
	}
	s.mu.Unlock()
	s.loops.Wait() // no serve loop can start a connection or flow any more
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("edge: drain: %w", ctx.Err())
	}
	s.cancel()            // cuts the UDP flows left, stops the sweeper and the origin pools
	s.tcpConns.closeAll() // and the TCP connections
	if s.evLoops != nil {
		s.evLoops.cutAll()
		s.evLoops.stop()
	}
	s.mu.Lock()
	for _, rs := range s.rules {
		rs.close(nil)
	}
	s.rules = map[string]*ruleState{}
	if s.toa != nil {
		s.toa.Close()
	}
	s.mu.Unlock()
	return err
}
