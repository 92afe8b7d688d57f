//go:build linux

package main

// The -bench mode: what a TOA receiver costs an origin, measured in one
// run, in interleaved rounds. The states (benchstate.go) are
//
//	none  the kernel alone (the baseline of every ratio)
//	ebpf  the eBPF receiver (toarecv) attached to the origin's cgroup
//	kmod  toa.ko loaded (in the VM; this machine's kernel loads no modules)
//	hook  programs that do nothing on the getpeername hooks (optional):
//	      what the kernel's hook costs any eBPF receiver, before its work
//
// measured in the order given by -states and back (ABC CBA ...), so a
// drift of the machine's speed hits every state alike. Each state change
// leaves the old state entirely (the receiver's links unpinned, the module
// unloaded) before the next one starts: the two receivers are never active
// at once, and "none" is a kernel without a receiver, not one with an idle
// receiver attached. Attaching and loading happen before the measurement's
// warm-up, outside its window. After each load of toa.ko one connection is
// made first and not counted (prime): an accept() already
// blocked when the module loads returns that connection with the edge's
// address (the module's documented gap), and the C server always is.
//
// The sender is this program with realip-edge's eBPF TOA sender
// (edge/toasend), dialing from the edge host's trusted address straight to
// the origin: every measured connection carries the option in every state
// (without a receiver the kernel just skips it), so the only difference is
// the receiver. The realip-edge process is left out on purpose: its
// relaying costs far more than a receiver and would hide it.
//
// This program and the sender run in the cgroup PARENT/edge, the origin's
// servers in PARENT/origin (siblings under the cgroup v2 mount, PARENT is
// -bench-name), and the receiver attaches to PARENT/origin only: as on a
// real origin, where client and edge are other machines, it is charged
// for the origin's sockets, not for the load generator's.
//
// Per state and round:
//   - connections/s: -conc concurrent clients for -window, each connection
//     accepted by the IPv6 C server (accept, getpeername, a line back,
//     close), and the request latency from connect() to the answer's EOF
//     (p50, p90);
//   - CPU per connection: the CPU time charged to PARENT (cpu.stat
//     usage_usec: clients, server, and the kernel's work for both done in
//     their context, which on veth includes most of the receiving side's
//     softirq work) over the window, per connection. Other tenants of a
//     shared machine take CPU away from the bench and lower connections/s;
//     what a connection costs changes less with them (caches and the
//     hypervisor still move it). Softirq work done by ksoftirqd instead is
//     not in it.
//   - getpeername() ns/call, -calls calls in 500 batches, on an accepted
//     connection that carried TOA and on one that did not (what the
//     receiver adds to every getpeername() on the host). Each batch is
//     timed by the thread's own CPU clock (time preempted by others is not
//     in it; -peer-clock wall in TCG guests, where that clock advances in
//     ticks, and where a batch short enough often runs while QEMU's
//     thread is not preempted), and the figure is the 10th percentile of
//     the batches (disturbance from others only ever adds).
//
// Each measurement checks the answers (the client with a receiver, the
// sender without), and the receiver's counters check that it handled every
// connection and every getpeername() call measured, those on the socket
// without TOA included: a bench that measured the wrong thing fails.
//
// It runs on the host's kernel too (bench/toarecv.sh, -states none,ebpf):
// the same code in network namespaces of the host. -bpf-stats adds where
// the programs' time goes (benchstats.go).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/realip/realip/edge/toasend"
	"github.com/realip/realip/toarecv"
	"github.com/realip/realip/vmtest/vmnet"
)

type benchConfig struct {
	rounds, conc, calls int
	window              time.Duration
	states, name        string
	peerClock           string // thread or wall
	bpfStats            bool
}

// peerBatches is how many batches the getpeername() calls are timed in.
const peerBatches = 500

func benchFlags(b *benchConfig) {
	flag.IntVar(&b.rounds, "rounds", 10, "bench: rounds, each measuring every state")
	flag.DurationVar(&b.window, "window", 3*time.Second, "bench: connection test length per measurement")
	flag.IntVar(&b.conc, "conc", 4, "bench: concurrent connections")
	flag.IntVar(&b.calls, "calls", 200000, "bench: getpeername() calls per socket and measurement")
	flag.StringVar(&b.states, "states", "none,ebpf,kmod", "bench: states in round order, none (the baseline) first")
	flag.StringVar(&b.name, "bench-name", "realip-bench", "bench: name of its cgroup (under the cgroup v2 mount) and of its bpffs pin folder")
	flag.BoolVar(&b.bpfStats, "bpf-stats", false, "bench: print the run count and time of the programs on the origin's cgroup (a diagnostic: the accounting costs time; see benchstats.go)")
	flag.StringVar(&b.peerClock, "peer-clock", "thread", "bench: the clock getpeername() batches are timed by: thread (the thread's CPU time) or wall (for guests whose CPU time clock advances in ticks: TCG, TSC unstable)")
}

type measurement struct {
	connsPerSec        float64
	cpuPerConn         time.Duration // CPU time of the bench's cgroup per connection
	p50, p90           time.Duration
	peerTOA, peerNoTOA float64 // getpeername() ns/call (-peer-clock)
	errs               int     // connections that failed in the window
}

type bencher struct {
	c      *checker
	cfg    benchConfig
	module string // toa.ko
	l      *lab
	cg     *benchCgroups
	pinDir string
	sender *toasend.Sender
	srv    *proc // the IPv6 C server
	peerLn *net.TCPListener
	recv   *toarecv.Receiver // while the state is ebpf
	hook   []link.Link       // while the state is hook
	stats  io.Closer         // -bpf-stats
	round  int
	cur    state
	noted  map[ebpf.AttachType]bool
	target netip.AddrPort
	client netip.AddrPort
}

func bench(c *checker, cfg *config) error {
	states, err := parseStates(cfg.bench.states)
	if err != nil {
		return err
	}
	if cfg.bench.calls < peerBatches || cfg.bench.rounds < 1 || cfg.bench.conc < 1 {
		return fmt.Errorf("bench: -calls >= %d, -rounds and -conc >= 1", peerBatches)
	}
	if cfg.bench.peerClock != "thread" && cfg.bench.peerClock != "wall" {
		return fmt.Errorf("bench: -peer-clock thread or wall, not %q", cfg.bench.peerClock)
	}
	b := &bencher{c: c, cfg: cfg.bench, module: cfg.module, cur: stateNone, noted: map[ebpf.AttachType]bool{},
		pinDir: "/sys/fs/bpf/" + cfg.bench.name,
		target: netip.AddrPortFrom(origin4.Addr(), 10006),
		client: netip.MustParseAddrPort("192.0.2.10:40000")}
	err = b.enableStats()
	if err == nil {
		err = b.setUp(cfg.c6)
	}
	if err == nil {
		b.header(states)
		err = b.warmUp()
	}
	if err == nil {
		var results map[state][]measurement
		if results, err = b.rounds(states); err == nil {
			summarize(results, states)
		}
	}
	cerr := b.close()
	c.check(cerr == nil, "bench cleanup", "receiver detached, module unloaded, servers stopped, cgroups removed: %v", cerr)
	return err
}

func (b *bencher) header(states []state) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		copy(u.Release[:], "unknown")
	}
	fmt.Printf("bench: kernel %s; states %v; %d rounds, %v per connection test, %d concurrent, %d getpeername() calls per socket\n",
		unix.ByteSliceToString(u.Release[:]), states, b.cfg.rounds, b.cfg.window, b.cfg.conc, b.calls())
	fmt.Printf("bench: sender %s (cgroup %s) -> origin %s (cgroup %s, the receiver's)\n",
		back4.Addr(), b.cg.edge, b.target, b.cg.origin)
}

// warmUp runs the clients for 2 s, not counted, answers checked: the first
// seconds of a fresh guest (page faults, the Go heap growing) would
// otherwise weigh on the first round's state.
func (b *bencher) warmUp() error {
	run := b.connections(2 * time.Second)
	if !b.c.check(run.bad == 0 && run.errs*100 <= run.n() && run.n() > 0, "bench warm-up",
		"%d connections, %d answered other than %s, %d failed (first: %v)", run.n(), run.bad, b.wantText(false), run.errs, run.first) {
		return fmt.Errorf("the origin's answers are wrong or connections fail: the bench would measure the wrong thing")
	}
	return nil
}

// calls is the number of getpeername() calls timed per socket.
func (b *bencher) calls() int { return b.cfg.calls / peerBatches * peerBatches }

// setUp builds the hosts and cgroups, opens the origin's Go listener in
// the origin's cgroup, moves this process into the edge's, opens the TOA
// sender there and starts the IPv6 C server in the origin's.
func (b *bencher) setUp(c6 string) error {
	l, err := newLab()
	if err != nil {
		return err
	}
	b.l = l
	if b.cg, err = makeCgroups(b.cfg.name); err != nil {
		return err
	}
	// A socket belongs to the cgroup its creator was in, and accepted
	// sockets to their listener's: the listener is made from the origin's.
	err = joinCgroupSockets(b.cg.origin, b.cg.edge, func() (err error) {
		b.peerLn, err = listenTCP(l.origin, "[::]:9500")
		return err
	})
	if err != nil {
		return err
	}
	if b.sender, err = toasend.Open(toasend.Options{CgroupPath: b.cg.edge}); err != nil {
		return err
	}
	if b.srv, err = start(l.origin, "toa_server6", b.cg.origin, c6, "10006"); err != nil {
		return err
	}
	if err := b.srv.waitFor("listening", 20*time.Second); err != nil {
		return err
	}
	return b.verifyState()
}

// close leaves the bench's state (detach, unload) and undoes setUp in the
// reverse order.
func (b *bencher) close() error {
	var errs []error
	if b.cg != nil {
		errs = append(errs, b.set(stateNone))
	}
	if b.peerLn != nil {
		errs = append(errs, b.peerLn.Close())
	}
	if b.srv != nil {
		b.srv.stop(2 * time.Second) // killed by its signal: the error says so
	}
	if b.sender != nil {
		errs = append(errs, b.sender.Close())
	}
	if b.cg != nil {
		errs = append(errs, b.cg.remove())
	}
	if b.l != nil {
		b.l.Close()
	}
	if b.stats != nil {
		errs = append(errs, b.stats.Close())
	}
	return errors.Join(errs...)
}

// rounds measures each state once per round, in the order of states and
// reversed in every other round; it returns the measurements by state.
func (b *bencher) rounds(states []state) (map[state][]measurement, error) {
	results := map[state][]measurement{}
	for r := range b.cfg.rounds {
		b.round = r + 1
		order := slices.Clone(states)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, s := range order {
			if err := b.set(s); err != nil {
				return nil, err
			}
			m, err := b.measure()
			if err != nil {
				return nil, err
			}
			results[s] = append(results[s], m)
			fmt.Printf("bench round %d %-4s: %.0f conn/s, CPU %.1f µs/conn, latency p50 %v p90 %v, getpeername TOA %.0f ns, no TOA %.0f ns, %d failed\n",
				r+1, s, m.connsPerSec, float64(m.cpuPerConn)/1e3, m.p50.Round(time.Microsecond), m.p90.Round(time.Microsecond), m.peerTOA, m.peerNoTOA, m.errs)
		}
	}
	return results, nil
}

// measure measures the current state once, checking every answer and the
// receiver's counters.
func (b *bencher) measure() (measurement, error) {
	var m measurement
	before, err := b.counters()
	if err != nil {
		return m, err
	}
	warm := b.connections(200 * time.Millisecond) // warm up
	probe := b.probe()
	cpu0, err := cgroupCPU(b.cg.parent)
	if err != nil {
		return m, err
	}
	probe.mark()
	run := b.connections(b.cfg.window)
	probe.mark()
	cpu1, err := cgroupCPU(b.cg.parent)
	if err != nil {
		return m, err
	}
	if err := b.checkRuns(warm, run); err != nil {
		return m, err
	}
	m.connsPerSec = float64(run.n()) / b.cfg.window.Seconds()
	m.cpuPerConn = (cpu1 - cpu0) / time.Duration(run.n())
	m.p50, m.p90, m.errs = run.lat[run.n()/2], run.lat[run.n()*9/10], run.errs
	if m.peerTOA, err = b.getpeernameCost(true); err != nil {
		return m, err
	}
	probe.mark()
	if m.peerNoTOA, err = b.getpeernameCost(false); err != nil {
		return m, err
	}
	probe.mark()
	if err := probe.report(b.round, run.n(), b.calls()); err != nil {
		return m, err
	}
	after, err := b.counters()
	if err != nil {
		return m, err
	}
	return m, b.checkCounters(before, after, warm.n()+run.n())
}

// checkRuns checks the warm-up's and the window's answers, and that
// connections that failed (an error from connect() or read(), which a
// shared guest sees now and then) stay below 1% of those made.
func (b *bencher) checkRuns(warm, run connRun) error {
	n, bad, errs := warm.n()+run.n(), warm.bad+run.bad, warm.errs+run.errs
	if !b.c.check(bad == 0 && run.n() > 0, "bench answers", "%s: %d connections, %d answered other than %s",
		b.cur, n, bad, b.wantText(b.cur.answersClient())) {
		return fmt.Errorf("the origin's answers are wrong: the bench would measure the wrong thing")
	}
	if errs == 0 {
		return nil
	}
	first := warm.first
	if first == nil {
		first = run.first
	}
	if !b.c.check(errs*100 <= n, "bench connection errors", "%s: %d of %d connections failed (first: %v)", b.cur, errs, errs+n, first) {
		return fmt.Errorf("too many connections failed")
	}
	return nil
}

// wantText is the address the C server must report, in its format: the
// client's, or the sender's (any port).
func (b *bencher) wantText(client bool) string {
	if !client {
		return "inet6/[::ffff:" + back4.Addr().String() + "]:PORT"
	}
	return "inet6/[::ffff:" + b.client.Addr().String() + "]:" + fmt.Sprint(b.client.Port())
}

// answerOK judges a line of the C server, "accept=A peer=P v4=V": A and P
// must both be the client (client) or the sender.
func (b *bencher) answerOK(line string, client bool) bool {
	f := strings.Fields(line)
	if len(f) < 2 {
		return false
	}
	accept, ok1 := strings.CutPrefix(f[0], "accept=")
	peer, ok2 := strings.CutPrefix(f[1], "peer=")
	want := b.wantText(client)
	if !client {
		want = strings.TrimSuffix(want, "PORT")
		return ok1 && ok2 && strings.HasPrefix(accept, want) && strings.HasPrefix(peer, want)
	}
	return ok1 && ok2 && accept == want && peer == want
}

// request makes one connection to the C server and reads its answer.
func (b *bencher) request(dialer *net.Dialer, buf []byte) (string, error) {
	conn, err := dialer.Dial("tcp", b.target.String())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	var got []byte
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return string(got), nil
		}
	}
}

// prime makes the first connection after toa.ko is loaded. The module
// takes over a listener that listened before the load at its first TOA
// handshake, and an accept() that was already blocked then (the C
// server's) returns that one connection with the edge's address: the
// module's one documented gap (README, "The TOA kernel module"), not a
// cost. Its answer may be the client or the edge, nothing else.
func (b *bencher) prime() error {
	var line string
	err := b.l.edge.Do(func() (err error) {
		dialer := net.Dialer{Timeout: 10 * time.Second, Control: b.sender.Control(b.client)}
		line, err = b.request(&dialer, make([]byte, 256))
		return err
	})
	if err != nil {
		return err
	}
	if !b.c.check(b.answerOK(line, true) || b.answerOK(line, false), "bench prime", "%s: first connection after the change: %s",
		b.cur, strings.TrimSpace(line)) {
		return fmt.Errorf("the origin's answer is neither client nor edge")
	}
	return nil
}

// connRun is what the clients of one run did.
type connRun struct {
	lat   []time.Duration // of the connections answered, sorted
	bad   int             // answered wrong
	errs  int             // failed: connect() or read() errors
	first error           // the first of them
}

func (r connRun) n() int { return len(r.lat) }

// connections runs the clients for d.
func (b *bencher) connections(d time.Duration) connRun {
	var (
		mu  sync.Mutex
		run connRun
		wg  sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	for range b.cfg.conc {
		wg.Go(func() {
			var mine connRun
			err := b.l.edge.Do(func() error {
				b.client1(deadline, &mine)
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			run.lat = append(run.lat, mine.lat...)
			run.bad += mine.bad
			run.errs += mine.errs
			for _, e := range []error{err, mine.first} {
				if e != nil && run.first == nil {
					run.first = e
				}
			}
		})
	}
	wg.Wait()
	slices.Sort(run.lat)
	return run
}

// client1 is one client: connections one after the other until deadline.
func (b *bencher) client1(deadline time.Time, run *connRun) {
	dialer := net.Dialer{Timeout: 10 * time.Second, Control: b.sender.Control(b.client)}
	buf := make([]byte, 256)
	client := b.cur.answersClient()
	for time.Now().Before(deadline) {
		t := time.Now()
		got, err := b.request(&dialer, buf)
		if err != nil {
			run.errs++
			if run.first == nil {
				run.first = err
			}
			continue
		}
		run.lat = append(run.lat, time.Since(t))
		if !b.answerOK(got, client) {
			run.bad++
		}
	}
}

// getpeernameCost times getpeername() on an accepted connection that
// carried TOA (toa) or not.
func (b *bencher) getpeernameCost(toa bool) (float64, error) {
	var control func(string, string, syscall.RawConn) error
	if toa {
		control = b.sender.Control(b.client)
	}
	out, err := dial(b.l.edge, netip.AddrPortFrom(origin4.Addr(), 9500), control)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	b.peerLn.SetDeadline(time.Now().Add(10 * time.Second))
	in, err := b.peerLn.AcceptTCP()
	if err != nil {
		return 0, err
	}
	defer in.Close()
	fd := fdOf(in)
	got, err := peerOf(fd)
	if err != nil {
		return 0, err
	}
	want := addrPort(out.LocalAddr())
	if toa && b.cur.answersClient() {
		want = b.client
	}
	if !b.c.check(got == want, "bench getpeername", "%s, TOA %v: getpeername gives %s (want %s)", b.cur, toa, got, want) {
		return 0, fmt.Errorf("getpeername answers wrong: the bench would measure the wrong thing")
	}
	return timeGetpeername(fd, b.calls(), b.cfg.peerClock == "thread")
}

// timeGetpeername calls getpeername(fd) calls times in peerBatches
// batches; it returns the 10th percentile of the batches' ns/call, in the
// thread's CPU time (threadClock) or wall time.
func timeGetpeername(fd, calls int, threadClock bool) (float64, error) {
	clock := threadCPU
	if !threadClock {
		clock = wallClock
	}
	runtime.LockOSThread() // one thread, whose CPU clock is read
	defer runtime.UnlockOSThread()
	var rsa syscall.RawSockaddrAny
	per := calls / peerBatches
	perCall := make([]float64, 0, peerBatches)
	for range peerBatches {
		t, err := clock()
		if err != nil {
			return 0, err
		}
		for range per {
			n := uint32(syscall.SizeofSockaddrAny)
			_, _, e := syscall.RawSyscall(syscall.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
			if e != 0 {
				return 0, fmt.Errorf("getpeername: %w", e)
			}
		}
		t2, err := clock()
		if err != nil {
			return 0, err
		}
		perCall = append(perCall, float64(t2-t)/float64(per))
	}
	slices.Sort(perCall)
	return perCall[len(perCall)/10], nil
}

// listenTCP opens a plain TCP listener in ns (no MPTCP, which Go would
// otherwise use: the C server is plain TCP too).
func listenTCP(ns *vmnet.NS, addr string) (*net.TCPListener, error) {
	var ln net.Listener
	err := ns.Do(func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		var err error
		ln, err = lc.Listen(context.Background(), "tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// threadCPU is the calling thread's CPU time.
func threadCPU() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime(CLOCK_THREAD_CPUTIME_ID): %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

// wallClock is the monotonic clock's time.
func wallClock() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime(CLOCK_MONOTONIC): %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

// cgroupCPU is the CPU time charged to a cgroup v2 folder and its
// descendants (cpu.stat usage_usec, kept without any controller enabled).
func cgroupCPU(dir string) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s/cpu.stat: %q: %w", dir, line, err)
			}
			return time.Duration(us) * time.Microsecond, nil
		}
	}
	return 0, fmt.Errorf("%s/cpu.stat has no usage_usec", dir)
}
