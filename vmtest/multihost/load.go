//go:build linux

package main

// The load phase and the unload under load (see main.go).

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realip/realip/toactl"
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
	srv      *loadServer
	checkers *peerCheckers
	targets  []netip.AddrPort
	clients  []net.Conn // the client ends of the load's connections
	hs       []*held    // the origin's ends, once the load is done
	churned  int64      // connections the churn made around the unload
}

// loadAndUnload is the load phase and the unload under load. It returns
// how many connections went through the edge.
func loadAndUnload(c *checker, l *lab, cfg *config) (int, error) {
	r, err := startLoad(c, l, cfg)
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
	return len(r.hs) + int(r.churned), nil
}

// startLoad starts the origin's load server and the getpeername() threads.
func startLoad(c *checker, l *lab, cfg *config) (*loadRun, error) {
	ln, err := listen(l.origin, fmt.Sprintf("[::]:%d", loadOriginPort))
	if err != nil {
		return nil, err
	}
	r := &loadRun{c: c, l: l, cfg: cfg, srv: &loadServer{ln: ln, clientFirst: cfg.clientFirst}}
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
	statsBefore := toaStats()
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
	fmt.Printf("info load: toa_stats %s\n", fmtDelta(delta(toaStats(), statsBefore)))
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

// checkEntries checks every connection against the module's entries and
// keeps each one's proxy (the edge's end).
func (r *loadRun) checkEntries() error {
	// The module answers about the namespace of the asking socket: the
	// origin's entries from inside the origin, none from the edge's.
	entries, live, err := originEntries(r.l)
	if err != nil {
		return err
	}
	var other []toactl.Entry
	oerr := r.l.edge.Do(func() error {
		ectl, err := toactl.Dial()
		if err != nil {
			return err
		}
		defer ectl.Close()
		other, err = ectl.Entries()
		return err
	})
	r.c.check(oerr == nil && len(other) == 0, "load: netlink entries per namespace",
		"the edge's namespace sees %d of the origin's %d entries (%v)", len(other), len(entries), oerr)
	missing := r.matchEntries(entries)
	alloc, _ := toaStat("ip6_address_alloc")
	free, _ := toaStat("ip6_address_free")
	r.c.check(missing == 0 && live >= uint64(len(r.hs)) && alloc-free == live, "load: netlink entries",
		"%d live entries (toa_stats: %d allocated - %d freed = %d), %d of %d connections without an entry naming the edge",
		live, alloc, free, alloc-free, missing, len(r.hs))
	return nil
}

// originEntries reads the module's entries and its count of live ones
// over netlink from inside the origin.
func originEntries(l *lab) ([]toactl.Entry, uint64, error) {
	var ctl *toactl.Client
	if err := l.origin.Do(func() (err error) { ctl, err = toactl.Dial(); return err }); err != nil {
		return nil, 0, err
	}
	entries, err := ctl.Entries()
	_, live, serr := ctl.Stats()
	ctl.Close()
	if err != nil || serr != nil {
		return nil, 0, errors.Join(err, serr)
	}
	return entries, live, nil
}

// matchEntries sets the proxy of every connection whose entry names the
// edge and returns how many have no such entry.
func (r *loadRun) matchEntries(entries []toactl.Entry) int {
	byConn := map[[2]netip.AddrPort]toactl.Entry{}
	for _, e := range entries {
		byConn[[2]netip.AddrPort{e.Local, e.Client}] = e
	}
	missing := 0
	for _, h := range r.hs {
		e, ok := byConn[[2]netip.AddrPort{addrPort(h.conn.LocalAddr()), h.want}]
		back := back6.Addr()
		if addrPort(h.conn.LocalAddr()).Addr().Is4() {
			back = back4.Addr()
		}
		if !ok || e.Proxy.Addr() != back {
			missing++
			continue
		}
		h.proxy = e.Proxy
	}
	return missing
}

// unload unloads the module with every connection open, getpeername()
// running on all threads and new connections arriving; it reports whether
// delete_module succeeded.
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
	// New connections before, during and after the unload: at least one
	// made before it starts and one after it ends, however slowly the guest
	// runs (at least 500 ms each way, at most 10 s).
	waitGrow(&churnOK, 0)
	callsBefore := checkers.calls.Load()
	t1 := time.Now()
	uerr := unloadModule()
	took := time.Since(t1)
	waitGrow(&churnOK, churnOK.Load())
	close(churnStop)
	churnWG.Wait()
	checkers.halt()
	r.c.check(uerr == nil, "unload", "delete_module(toa) with %d connections open took %v (%v)", len(r.hs), took.Round(time.Microsecond), uerr)
	r.c.check(churnFail.Load() == 0 && churnOK.Load() > 0, "unload: new connections", "%d made during the unload, %d failed", churnOK.Load(), churnFail.Load())
	r.c.check(checkers.bad.Load() == 0 && checkers.calls.Load() > callsBefore, "unload: concurrent getpeername()",
		"%d calls around the unload, each the client or the edge; %d other answers%s",
		checkers.calls.Load()-callsBefore, checkers.bad.Load(), checkers.why())
	r.churned = churnOK.Load()
	return uerr == nil
}

// checkUnloaded checks what the unload left: every entry freed, the
// module's files and control family gone, getpeername() answering the
// edge again, the connections still carrying data.
func (r *loadRun) checkUnloaded() {
	c, hs := r.c, r.hs
	freed, allocated, ok := unloadLine()
	c.check(ok && freed == allocated && allocated >= uint64(len(hs)), "unload: freed",
		"kernel log: %d of %d entries freed (ip6_address_free == ip6_address_alloc)", freed, allocated)
	_, statErr := os.Stat("/proc/net/toa_stats")
	_, dialErr := toactl.Dial()
	c.check(errors.Is(statErr, os.ErrNotExist) && errors.Is(dialErr, toactl.ErrNotLoaded), "unload: gone",
		"/proc/net/toa_stats: %v; netlink: %v", statErr, dialErr)
	wrong, firstWrong := 0, ""
	for _, h := range hs {
		if got, err := peerOf(h.fd); err != nil || got != h.proxy {
			if wrong++; wrong == 1 {
				firstWrong = fmt.Sprintf("; first: %s gave %s (%v), want %s", h.want, got, err, h.proxy)
			}
		}
	}
	c.check(wrong == 0, "unload: hooks gone", "getpeername() on the %d still-open connections answers the edge again; %d do not%s",
		len(hs), wrong, firstWrong)
	// The connections still carry data after the unload.
	if len(r.clients) > 0 {
		conn := r.clients[len(r.clients)/2]
		_, werr := io.WriteString(conn, "still here\n")
		c.check(werr == nil, "unload: connections alive", "write after the unload: %v", werr)
	}
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
