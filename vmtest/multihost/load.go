//go:build linux

package main

// The load phase and the receiver's stop under load: toa.ko unloaded, or
// the eBPF receiver detached (see main.go).

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realip/realip/toarecv"
)

// The load phase's protocol is client-speaks-first by default: the client
// sends its own address right after connect() and the origin answers "ok",
// so the edge relays that data right behind its handshake ACK. On veth, the
// ACK (sent from the softirq that took the SYN-ACK) and the data (sent by
// the edge's writing thread) enter different CPUs' backlogs, so the origin
// may complete the handshake from the data segment before the ACK arrives.
// realip's sender therefore writes the option on the first data segment as
// well (edge/toasend); before it did, about one connection in a few hundred
// showed the edge here. -server-first makes the origin greet first instead,
// so that only the ACK can complete the handshake.

// A connection of the load phase, as the origin holds it.
type held struct {
	conn  *net.TCPConn
	fd    int
	want  netip.AddrPort // the client, as the client saw its own address
	proxy netip.AddrPort // the edge's end, from the module's entry
}

type loadServer struct {
	ln          *net.TCPListener
	clientFirst bool // the client writes first; else the server greets first
	mu          sync.Mutex
	held        []*held
	bad         atomic.Int64
	firstBad    atomic.Value
	churn       atomic.Int64
}

func (s *loadServer) serve() {
	for {
		conn, err := s.ln.AcceptTCP()
		if err != nil {
			return
		}
		go s.handle(conn)
	}
}

func (s *loadServer) handle(conn *net.TCPConn) {
	if !s.clientFirst {
		io.WriteString(conn, "hello\n")
	}
	line, err := firstLine(conn, 30*time.Second)
	if err != nil {
		conn.Close()
		return
	}
	if strings.HasPrefix(line, "churn ") {
		s.churn.Add(1)
		io.WriteString(conn, "ok\n")
		io.Copy(io.Discard, conn)
		conn.Close()
		return
	}
	want, err := netip.ParseAddrPort(line)
	got := addrPort(conn.RemoteAddr())
	if err != nil || got != want {
		s.fail(fmt.Sprintf("accept() gave %s, the client is %q", got, line))
	}
	s.mu.Lock()
	s.held = append(s.held, &held{conn: conn, fd: fdOf(conn), want: want})
	s.mu.Unlock()
	io.WriteString(conn, "ok\n")
}

func (s *loadServer) fail(msg string) {
	if s.bad.Add(1) == 1 {
		s.firstBad.Store(msg)
	}
}

func (s *loadServer) snapshot() []*held {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*held(nil), s.held...)
}

// getpeernameThreads runs n OS threads that call getpeername() on random
// held connections until stop is closed. Strict: the answer must be the
// client. Not strict (during the unload): the client or the edge.
type peerCheckers struct {
	calls, bad atomic.Int64
	strict     atomic.Bool
	firstBad   atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startCheckers(s *loadServer, n int) *peerCheckers {
	p := &peerCheckers{stop: make(chan struct{})}
	p.strict.Store(true)
	for i := range n {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			runtime.LockOSThread() // a thread of its own, truly concurrent
			defer runtime.UnlockOSThread()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			var list []*held
			for {
				select {
				case <-p.stop:
					return
				default:
				}
				if len(list) < 64 || rng.IntN(64) == 0 {
					list = s.snapshot()
				}
				if len(list) == 0 {
					time.Sleep(time.Millisecond)
					continue
				}
				for range 32 {
					h := list[rng.IntN(len(list))]
					got, err := peerOf(h.fd)
					p.calls.Add(1)
					ok := err == nil && got == h.want
					if !ok && !p.strict.Load() && err == nil && h.proxy.IsValid() {
						ok = got == h.proxy
					}
					if !ok && p.bad.Add(1) == 1 {
						p.firstBad.Store(fmt.Sprintf("getpeername on the connection of %s gave %s (%v)", h.want, got, err))
					}
					// getsockname() passes through the module's getname to
					// the kernel's, which may sleep (lock_sock): the unload
					// must wait for such calls too.
					if local, err := localOf(h.fd); err != nil || local.Port() != loadOriginPort {
						if p.bad.Add(1) == 1 {
							p.firstBad.Store(fmt.Sprintf("getsockname on the connection of %s gave %s (%v)", h.want, local, err))
						}
					}
				}
				// Paced: on two emulated CPUs, unpaced threads would starve
				// the clients and the edge.
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	return p
}

func (p *peerCheckers) halt() {
	close(p.stop)
	p.wg.Wait()
}

func (p *peerCheckers) why() string {
	if v, ok := p.firstBad.Load().(string); ok {
		return "; first: " + v
	}
	return ""
}

// loadRun is what the steps of loadAndUnload share.
type loadRun struct {
	c        *checker
	l        *lab
	cfg      *config
	s        *suiteRun
	srv      *loadServer
	checkers *peerCheckers
	targets  []netip.AddrPort
	clients  []net.Conn // the client ends of the load's connections
	hs       []*held    // the origin's ends, once the load is done
	churned  int64      // connections the churn made around the unload
}

// loadAndUnload is the load phase and the stop under load. It returns
// how many connections went through the edge.
func loadAndUnload(s *suiteRun) (int, error) {
	r, err := startLoad(s)
	if err != nil {
		return 0, err
	}
	defer r.close()
	r.load()
	r.recheckPeers()
	if err := r.checkEntries(); err != nil {
		return len(r.hs), err
	}
	if !r.unload() {
		return len(r.hs), nil
	}
	r.checkUnloaded()
	return len(r.hs) + int(r.churned) + 1, nil
}

// startLoad starts the origin's load server, its listener in the origin's
// cgroup, and the getpeername() threads.
func startLoad(s *suiteRun) (*loadRun, error) {
	var ln *net.TCPListener
	err := joinCgroupSockets(s.cg.origin, s.cg.self, func() (err error) {
		ln, err = listen(s.l.origin, fmt.Sprintf("[::]:%d", loadOriginPort))
		return err
	})
	if err != nil {
		return nil, err
	}
	c, l, cfg := s.c, s.l, s.cfg
	r := &loadRun{c: c, l: l, cfg: cfg, s: s, srv: &loadServer{ln: ln, clientFirst: cfg.clientFirst}}
	go r.srv.serve()
	r.checkers = startCheckers(r.srv, cfg.checkers)
	r.targets = []netip.AddrPort{
		netip.AddrPortFrom(front4.Addr(), loadPort4), netip.AddrPortFrom(front4.Addr(), loadPort6),
		netip.AddrPortFrom(front6.Addr(), loadPort4), netip.AddrPortFrom(front6.Addr(), loadPort6),
	}
	return r, nil
}

// close closes the client ends, halts the getpeername() threads unless the
// unload did, and closes the listener and the origin's ends.
func (r *loadRun) close() {
	for _, conn := range r.clients {
		conn.Close()
	}
	select {
	case <-r.checkers.stop:
	default:
		r.checkers.halt()
	}
	r.srv.ln.Close()
	for _, h := range r.srv.snapshot() {
		h.conn.Close()
	}
}

// load opens the connections and checks them as the origin accepted them
// and as the getpeername() threads saw them meanwhile.
func (r *loadRun) load() {
	c, cfg := r.c, r.cfg
	statsBefore, _ := r.s.r.Counters()
	originBefore, _ := netstat(r.l.origin)
	edgeBefore, _ := netstat(r.l.edge)
	t0 := time.Now()
	failed, first := r.connect()
	elapsed := time.Since(t0)
	why := ""
	if first != "" {
		why = "; first failure: " + first
	}
	// Each server handler registers before it answers "ok": all are held.
	r.hs = r.srv.snapshot()
	hs, clients, checkers := r.hs, r.clients, r.checkers
	c.check(failed == 0 && len(hs) == cfg.conns, "load",
		"%d connections from %d concurrent clients through the edge in %v (%.0f/s), %d held by the origin, %d failed%s",
		len(clients), cfg.clients, elapsed.Round(time.Millisecond), float64(len(clients))/elapsed.Seconds(), len(hs), failed, why)
	whyBad := ""
	if v, ok := r.srv.firstBad.Load().(string); ok {
		whyBad = "; first: " + v
	}
	c.check(r.srv.bad.Load() == 0, "load: accept()", "%d of %d connections accepted with a wrong peer%s", r.srv.bad.Load(), len(hs), whyBad)
	c.check(checkers.calls.Load() > 0 && checkers.bad.Load() == 0, "load: concurrent getpeername()",
		"%d threads, %d calls during the load, %d wrong%s", cfg.checkers, checkers.calls.Load(), checkers.bad.Load(), checkers.why())

	originAfter, _ := netstat(r.l.origin)
	edgeAfter, _ := netstat(r.l.edge)
	statsAfter, _ := r.s.r.Counters()
	fmt.Printf("info load: toa_stats %s\n", fmtDelta(delta(statsAfter, statsBefore)))
	fmt.Printf("info load: origin TcpExt %s\n", netstatDelta(originAfter, originBefore))
	fmt.Printf("info load: edge TcpExt %s\n", netstatDelta(edgeAfter, edgeBefore))
}

// connect opens cfg.conns connections from cfg.clients concurrent clients
// and keeps those that went through in r.clients; it returns how many
// failed and the first failure ("" if none).
func (r *loadRun) connect() (int64, string) {
	var (
		mu     sync.Mutex
		failed atomic.Int64
		first  atomic.Value
		wg     sync.WaitGroup
	)
	per := (r.cfg.conns + r.cfg.clients - 1) / r.cfg.clients
	for w := range r.cfg.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The whole client runs on one thread inside the client host.
			r.l.client.Do(func() error {
				d := net.Dialer{Timeout: 20 * time.Second}
				for j := range per {
					if w*per+j >= r.cfg.conns {
						break
					}
					to := r.targets[(w+j)%len(r.targets)]
					conn, err := loadConn(&d, to, r.cfg.clientFirst)
					if err != nil {
						if failed.Add(1) == 1 {
							first.Store(fmt.Sprintf("%s: %v", to, err))
						}
						continue
					}
					mu.Lock()
					r.clients = append(r.clients, conn)
					mu.Unlock()
				}
				return nil
			})
		}()
	}
	wg.Wait()
	v, _ := first.Load().(string)
	return failed.Load(), v
}

// loadConn opens one connection of the load and has the origin confirm the
// client's address. It closes the connection if that exchange fails, not
// if the greeting (-server-first) does.
func loadConn(d *net.Dialer, to netip.AddrPort, clientFirst bool) (net.Conn, error) {
	conn, err := d.Dial("tcp", to.String())
	if err == nil && !clientFirst {
		err = expectLine(conn, "hello")
	}
	if err == nil {
		_, err = fmt.Fprintf(conn, "%s\n", addrPort(conn.LocalAddr()))
		if err == nil {
			var line string
			line, err = firstLine(conn, 30*time.Second)
			if err == nil && line != "ok" {
				err = fmt.Errorf("answer %q", line)
			}
		}
		if err != nil {
			conn.Close()
		}
	}
	return conn, err
}

// recheckPeers calls getpeername() once more on every connection.
func (r *loadRun) recheckPeers() {
	wrong := 0
	var firstWrong string
	for _, h := range r.hs {
		if got, err := peerOf(h.fd); err != nil || got != h.want {
			if wrong++; wrong == 1 {
				firstWrong = fmt.Sprintf("; first: %s gave %s (%v)", h.want, got, err)
			}
		}
	}
	r.c.check(wrong == 0, "load: getpeername() on every connection", "%d of %d wrong%s", wrong, len(r.hs), firstWrong)
}

// unload stops the receiver (unloads toa.ko, or detaches the eBPF
// receiver) with every connection open, getpeername() running on all
// threads and new connections arriving; it reports whether the stop
// succeeded.
func (r *loadRun) unload() bool {
	checkers := r.checkers
	checkers.strict.Store(false)
	churnStop := make(chan struct{})
	var churnOK, churnFail atomic.Int64
	var churnWG sync.WaitGroup
	churnWG.Add(1)
	go func() {
		defer churnWG.Done()
		r.l.client.Do(func() error { churn(r.targets, r.cfg.clientFirst, churnStop, &churnOK, &churnFail); return nil })
	}()
	// New connections before, during and after the stop: at least one
	// made before it starts and one after it ends, however slowly the guest
	// runs (at least 500 ms each way, at most 10 s).
	waitGrow(&churnOK, 0)
	callsBefore := checkers.calls.Load()
	t1 := time.Now()
	uerr := r.s.r.Stop()
	took := time.Since(t1)
	r.s.stopped = true
	waitGrow(&churnOK, churnOK.Load())
	close(churnStop)
	churnWG.Wait()
	checkers.halt()
	at := r.s.r.CountersAtStop()
	r.c.check(uerr == nil, "stop", "%s stopped with %d connections open in %v (%v); its counters just before: %s",
		r.s.r.Kind(), len(r.hs), took.Round(time.Microsecond), uerr, fmtCounters(at))
	r.c.check(churnFail.Load() == 0 && churnOK.Load() > 0, "stop: new connections", "%d made around the stop, %d failed", churnOK.Load(), churnFail.Load())
	r.c.check(checkers.bad.Load() == 0 && checkers.calls.Load() > callsBefore, "stop: concurrent getpeername()",
		"%d calls around the stop, each the client or the edge; %d other answers%s",
		checkers.calls.Load()-callsBefore, checkers.bad.Load(), checkers.why())
	r.churned = churnOK.Load()
	return uerr == nil
}

// fmtCounters lists the counters that are not 0.
func fmtCounters(m map[string]uint64) string {
	var parts []string
	for _, name := range toarecv.CounterNames {
		if m[name] != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", name, m[name]))
		}
	}
	return strings.Join(parts, " ")
}

// checkUnloaded checks what the stop left: nothing of the receiver in
// force, getpeername() answering the edge again, the connections still
// carrying data, a new connection showing the edge. (What it freed is
// checked once the origin's programs are gone: suite.)
func (r *loadRun) checkUnloaded() {
	c, hs := r.c, r.hs
	what, err := r.s.r.Gone()
	c.check(err == nil, "stop: gone", "%s (%v)", what, orNothing(err))
	wrong, firstWrong := 0, ""
	for _, h := range hs {
		if got, err := peerOf(h.fd); err != nil || got != h.proxy {
			if wrong++; wrong == 1 {
				firstWrong = fmt.Sprintf("; first: %s gave %s (%v), want %s", h.want, got, err, h.proxy)
			}
		}
	}
	c.check(wrong == 0, "stop: after", "getpeername() on the %d still-open connections answers the edge again; %d do not%s",
		len(hs), wrong, firstWrong)
	// The connections still carry data after the stop.
	if len(r.clients) > 0 {
		conn := r.clients[len(r.clients)/2]
		_, werr := io.WriteString(conn, "still here\n")
		c.check(werr == nil, "stop: after", "write on a held connection after the stop: %v", werr)
	}
	// A new connection through the edge to the plain Go server.
	conn, err := dial(r.l.client, netip.AddrPortFrom(front4.Addr(), 2090), nil)
	var line string
	if err == nil {
		line, err = firstLine(conn, 10*time.Second)
		conn.Close()
	}
	got, perr := netip.ParseAddrPort(line)
	c.check(err == nil && perr == nil && got.Addr().Unmap() == back4.Addr(), "stop: after",
		"a new connection after the stop: the Go server saw %q (%v), want the edge %s", line, err, back4.Addr())
}

// expectLine reads one line and wants it to be want.
func expectLine(conn net.Conn, want string) error {
	line, err := firstLine(conn, 30*time.Second)
	if err == nil && line != want {
		err = fmt.Errorf("answer %q, want %q", line, want)
	}
	return err
}

// churn keeps opening short connections until stop is closed.
func churn(targets []netip.AddrPort, clientFirst bool, stop chan struct{}, ok, fail *atomic.Int64) {
	d := net.Dialer{Timeout: 10 * time.Second}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		to := targets[i%len(targets)]
		conn, err := d.Dial("tcp", to.String())
		if err == nil && !clientFirst {
			err = expectLine(conn, "hello")
		}
		if err == nil {
			_, err = fmt.Fprintf(conn, "churn %s\n", addrPort(conn.LocalAddr()))
			if err == nil {
				var line string
				line, err = firstLine(conn, 10*time.Second)
				if err == nil && line != "ok" {
					err = fmt.Errorf("answer %q", line)
				}
			}
			conn.Close()
		}
		if err != nil {
			fail.Add(1)
			fmt.Printf("churn: %s: %v\n", to, err)
			continue
		}
		ok.Add(1)
	}
}

// waitGrow waits 500 ms, then until n has grown beyond from or 10 s have
// passed.
func waitGrow(n *atomic.Int64, from int64) {
	time.Sleep(500 * time.Millisecond)
	for deadline := time.Now().Add(10 * time.Second); n.Load() <= from && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}
