//go:build linux

package edge

import (
	"errors"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/evloop"
	"github.com/realip/realip/internal/ilist"
)

// evLoops are the server's epoll loops, one per CPU, each an
// evloop.Loop (package internal/evloop) that relays TCP connections
// (tcploop_linux.go) and UDP flows (udploop_linux.go).
type evLoops struct {
	s    *Server
	once sync.Once
	wg   sync.WaitGroup

	mu    sync.Mutex // serialises the methods; guards loops
	loops []*evLoop  // nil once stopped
}

func newEvLoops(s *Server) *evLoops { return &evLoops{s: s} }

// start opens the loops, once; an error leaves the server on the goroutine
// relay.
func (t *evLoops) start() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var err error
	t.once.Do(func() {
		for range runtime.GOMAXPROCS(0) {
			l, lerr := newEvLoop(t.s)
			if lerr != nil {
				err = lerr
				break
			}
			l.idx = len(t.loops)
			t.loops = append(t.loops, l)
		}
		if err != nil {
			for _, l := range t.loops {
				l.Close()
			}
			t.loops = nil
			return
		}
		for _, l := range t.loops {
			t.wg.Add(1)
			go func() { defer t.wg.Done(); l.Run() }()
		}
	})
	if err == nil && t.loops == nil {
		err = errors.New("edge: epoll loops unavailable")
	}
	return err
}

// cutAll closes every connection of the loops (the end of a drain).
func (t *evLoops) cutAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.loops {
		l.Call(l.cutAll)
	}
}

// stop ends the loops, cutting what connections they still hold; later
// calls of any method find no loop.
func (t *evLoops) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.loops {
		l.Call(func() { l.cutAll(); l.closeFlows(); l.Stop() })
	}
	t.wg.Wait()
	for _, l := range t.loops {
		l.Close()
	}
	t.loops = nil
}

// evLoop is one epoll loop: the evloop.Loop and what it relays. Tokens
// (evloop.Loop.NewTokens): odd ones are the upstream sockets of TCP
// connections, even ones the rest.
type evLoop struct {
	evloop.Loop
	s     *Server
	idx   int // in evLoops.loops, and so in a UDP port's fds
	buf   []byte
	ports map[uint64]*loopPort
	conns map[uint64]*loopConn    // by the token of either socket
	list  ilist.List[*loopConn]   // every connection, for sweeps and cutAll
	udps  map[uint64]*loopUDP     // UDP forwarding ports (udploop_linux.go)
	flows map[uint64]*udpLoopFlow // UDP flows, by their upstream socket's token
	udp   *udpScratch
}

func newEvLoop(s *Server) (*evLoop, error) {
	l := &evLoop{
		s:     s,
		buf:   make([]byte, smallBuf),
		ports: map[uint64]*loopPort{},
		conns: map[uint64]*loopConn{},
		udps:  map[uint64]*loopUDP{},
		flows: map[uint64]*udpLoopFlow{},
		udp:   newUDPScratch(),
	}
	period := max(min(s.opts.IdleTimeout/idleTicks, s.opts.UDPIdle/idleTicks, s.opts.DialTimeout/4, time.Second), 10*time.Millisecond)
	if err := l.Open(l, period, s.opts.Logger); err != nil {
		return nil, err
	}
	return l, nil
}

// Events handles a batch of events (evloop.Handler).
func (l *evLoop) Events(evs []unix.EpollEvent) bool {
	settled := true
	for i := range evs {
		if !l.dispatch(evloop.Token(&evs[i]), evs[i].Events) {
			settled = false
		}
	}
	return settled
}

// dispatch handles one event. It reports whether the loop may park
// without polling again as far as this event goes (see evloop.Loop.turn):
// true unless a level-triggered socket may still have something (a port
// that accepted its maximum in a row, a full recvmmsg). A connection's
// sockets are edge-triggered: polling again would not report them until
// something new arrives, so they always say true.
func (l *evLoop) dispatch(tok uint64, ev uint32) bool {
	c := l.conns[tok]
	if c == nil {
		return l.dispatchOther(tok)
	}
	switch {
	case tok == c.utok && c.connecting:
		l.connected(c, ev)
	case tok == c.utok:
		l.pump(c, false, ev)
	default:
		l.pump(c, true, ev)
	}
	return true
}

// dispatchOther handles an event of a listening socket or of UDP.
func (l *evLoop) dispatchOther(tok uint64) bool {
	if f := l.flows[tok]; f != nil {
		return l.originDatagrams(f)
	}
	if u := l.udps[tok]; u != nil {
		return l.clientDatagrams(u)
	}
	if lp := l.ports[tok]; lp != nil {
		return l.acceptFrom(lp)
	}
	return true // an event of a socket closed earlier in this batch
}

// Sweep fails connects past DialTimeout, resets connections idle both
// ways for IdleTimeout, closes flows idle for UDPIdle and resumes paused
// ports (evloop.Handler).
func (l *evLoop) Sweep() {
	l.sweepConns()
	l.sweepFlows()
	l.resumePorts()
}
