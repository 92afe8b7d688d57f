//go:build linux

package main

// The -bench mode: what toa.ko costs an origin, measured in one guest
// boot, module loaded vs not loaded, in interleaved rounds (ABBA order, so
// a drift of the host's speed hits both states alike).
//
// The sender is this program with realip-edge's eBPF TOA sender
// (edge/toasend), dialing from the edge host's trusted address straight to
// the origin: every connection carries the option in both states (without
// the module the kernel just skips it), so the only difference is the
// module. The realip-edge process is left out on purpose: its relaying
// costs far more than the module and would hide it.
//
// Per state and round:
//   - connections/s: -conc concurrent clients for -window, each connection
//     accepted by the IPv6 C server (accept, getpeername, a line back,
//     close), and the request latency from connect() to the answer's EOF
//     (p50, p90);
//   - getpeername() cost: -calls calls on one accepted TOA connection.
//
// Each measurement also checks the answers (the client with the module,
// the sender without): a bench that measured the wrong thing fails.

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/realip/realip/edge/toasend"
)

type benchConfig struct {
	rounds, conc, calls int
	window              time.Duration
}

type measurement struct {
	connsPerSec      float64
	p50, p90         time.Duration
	getpeernameNanos float64
}

func bench(c *checker, cfg *config) error {
	if err := raiseFiles(1 << 16); err != nil {
		return err
	}
	b := &bencher{cfg: cfg.bench, module: cfg.module,
		target: netip.AddrPortFrom(origin4.Addr(), 10006),
		client: netip.MustParseAddrPort("192.0.2.10:40000")}
	defer b.close()
	if err := b.setUp(cfg.c6); err != nil {
		return err
	}
	fmt.Printf("bench: %d rounds, %v per connection test, %d concurrent, %d getpeername() calls; sender %s -> origin %s\n",
		cfg.bench.rounds, cfg.bench.window, cfg.bench.conc, cfg.bench.calls, back4.Addr(), b.target)
	results, err := b.rounds(c)
	if err != nil {
		return err
	}
	if err := b.set(false); err != nil {
		return err
	}
	summarize(results[true], results[false])
	return nil
}

// setUp builds the hosts, opens this program's TOA sender, starts the IPv6
// C server and the listener getpeernameCost dials.
func (b *bencher) setUp(c6 string) error {
	l, err := newLab()
	if err != nil {
		return err
	}
	b.l = l
	cg, err := cgroup("multihost")
	if err != nil {
		return err
	}
	if err := joinCgroup(cg); err != nil {
		return err
	}
	sender, err := toasend.Open(toasend.Options{CgroupPath: cg})
	if err != nil {
		return err
	}
	b.sender = sender
	srv, err := start(l.origin, "toa_server6", "", c6, "10006")
	if err != nil {
		return err
	}
	b.srv = srv
	if err := srv.waitFor("listening", 20*time.Second); err != nil {
		return err
	}
	peerLn, err := listen(l.origin, "[::]:9500")
	if err != nil {
		return err
	}
	b.peerLn = peerLn
	return nil
}

// close undoes setUp, in the reverse order.
func (b *bencher) close() {
	if b.peerLn != nil {
		b.peerLn.Close()
	}
	if b.srv != nil {
		b.srv.stop(2 * time.Second)
	}
	if b.sender != nil {
		b.sender.Close()
	}
	if b.l != nil {
		b.l.Close()
	}
}

// set loads or unloads the module unless it is so already.
func (b *bencher) set(on bool) error {
	if on == b.loaded {
		return nil
	}
	if on {
		if err := loadModule(b.module, "trusted="+trusted()); err != nil {
			return err
		}
	} else if err := unloadModule(); err != nil {
		return err
	}
	b.loaded = on
	return nil
}

// rounds measures each state once per round, in ABBA order; it returns
// the measurements by state (module loaded or not).
func (b *bencher) rounds(c *checker) (map[bool][]measurement, error) {
	results := map[bool][]measurement{}
	for r := range b.cfg.rounds {
		order := []bool{true, false}
		if r%2 == 1 {
			order = []bool{false, true}
		}
		for _, on := range order {
			if err := b.set(on); err != nil {
				return nil, err
			}
			m, err := b.measure(c, on)
			if err != nil {
				return nil, err
			}
			results[on] = append(results[on], m)
			fmt.Printf("bench round %d module=%s: %.0f conn/s, latency p50 %v p90 %v, getpeername %.0f ns\n",
				r+1, onOff(on), m.connsPerSec, m.p50.Round(time.Microsecond), m.p90.Round(time.Microsecond), m.getpeernameNanos)
		}
	}
	return results, nil
}

// summarize prints a result line per quantity, comparing the loaded
// measurements on with the unloaded ones off round by round.
func summarize(on, off []measurement) {
	perSec := func(v float64) string { return fmt.Sprintf("%.0f/s", v) }
	dur := func(v float64) string { return time.Duration(v).Round(time.Microsecond).String() }
	nanos := func(v float64) string { return fmt.Sprintf("%.0f ns", v) }
	summary(on, off, "connections/s", func(m measurement) float64 { return m.connsPerSec }, true, perSec)
	summary(on, off, "latency p50", func(m measurement) float64 { return float64(m.p50) }, false, dur)
	summary(on, off, "latency p90", func(m measurement) float64 { return float64(m.p90) }, false, dur)
	summary(on, off, "getpeername()", func(m measurement) float64 { return m.getpeernameNanos }, false, nanos)
}

// summary prints the result line of the quantity f: the median ratio
// loaded/unloaded and whether the module costs within 3%.
func summary(on, off []measurement, name string, f func(measurement) float64, higherIsBetter bool, unit func(float64) string) {
	ratios := make([]float64, len(on))
	for i := range on {
		ratios[i] = f(on[i]) / f(off[i])
	}
	slices.Sort(ratios)
	med := median(ratios)
	cost := med - 1 // how much worse with the module
	if higherIsBetter {
		cost = 1 - med
	}
	verdict := "within 3%"
	if cost > 0.03 {
		verdict = "NOT within 3%"
	}
	fmt.Printf("result %-14s loaded/unloaded median %.3f (min %.3f, max %.3f over %d rounds; medians %s loaded, %s unloaded): %s\n",
		name, med, ratios[0], ratios[len(ratios)-1], len(ratios),
		unit(median(sortedOf(on, f))), unit(median(sortedOf(off, f))), verdict)
}

func onOff(on bool) string {
	if on {
		return "loaded"
	}
	return "unloaded"
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func sortedOf(ms []measurement, f func(measurement) float64) []float64 {
	out := make([]float64, len(ms))
	for i, m := range ms {
		out[i] = f(m)
	}
	slices.Sort(out)
	return out
}

type bencher struct {
	l      *lab
	sender *toasend.Sender
	srv    *proc // the IPv6 C server
	cfg    benchConfig
	peerLn *net.TCPListener
	target netip.AddrPort
	client netip.AddrPort
	module string // toa.ko
	loaded bool   // whether set loaded it
}

func (b *bencher) measure(c *checker, loaded bool) (measurement, error) {
	var m measurement
	// The answer the C server must give: the client, or the sender.
	want := "[::ffff:" + b.client.Addr().String() + "]"
	if !loaded {
		want = "[::ffff:" + back4.Addr().String() + "]"
	}
	b.connections(200*time.Millisecond, want) // warm up
	n, lat, bad, err := b.connections(b.cfg.window, want)
	if err != nil {
		return m, err
	}
	if !c.check(bad == 0 && n > 0, "bench answers", "module %s: %d connections, %d answered other than %s", onOff(loaded), n, bad, want) {
		return m, fmt.Errorf("the origin's answers are wrong: the bench would measure the wrong thing")
	}
	slices.Sort(lat)
	m.connsPerSec = float64(n) / b.cfg.window.Seconds()
	m.p50, m.p90 = lat[len(lat)/2], lat[len(lat)*9/10]
	m.getpeernameNanos, err = b.getpeernameCost(c, loaded)
	return m, err
}

// connections runs the clients for d; it returns how many connections
// completed, their latencies, and how many answers did not hold want.
func (b *bencher) connections(d time.Duration, want string) (int, []time.Duration, int, error) {
	var (
		mu    sync.Mutex
		lat   []time.Duration
		bad   int
		first error
		wg    sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	for range b.cfg.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			myBad := 0
			err := b.l.edge.Do(func() error {
				dialer := net.Dialer{Timeout: 10 * time.Second, Control: b.sender.Control(b.client)}
				buf := make([]byte, 256)
				for time.Now().Before(deadline) {
					t := time.Now()
					conn, err := dialer.Dial("tcp", b.target.String())
					if err != nil {
						return err
					}
					var got []byte
					for {
						n, err := conn.Read(buf)
						got = append(got, buf[:n]...)
						if err != nil {
							break
						}
					}
					conn.Close()
					mine = append(mine, time.Since(t))
					if !strings.Contains(string(got), "accept=inet6/"+want) {
						myBad++
					}
				}
				return nil
			})
			mu.Lock()
			lat = append(lat, mine...)
			bad += myBad
			if err != nil && first == nil {
				first = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return len(lat), lat, bad, first
}

// getpeernameCost times getpeername() on one accepted TOA connection.
func (b *bencher) getpeernameCost(c *checker, loaded bool) (float64, error) {
	out, err := dial(b.l.edge, netip.AddrPortFrom(origin4.Addr(), 9500), b.sender.Control(b.client))
	if err != nil {
		return 0, err
	}
	defer out.Close()
	in, err := b.peerLn.AcceptTCP()
	if err != nil {
		return 0, err
	}
	defer in.Close()
	fd := fdOf(in)
	var rsa syscall.RawSockaddrAny
	call := func() syscall.Errno {
		n := uint32(syscall.SizeofSockaddrAny)
		_, _, e := syscall.RawSyscall(syscall.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
		return e
	}
	if e := call(); e != 0 {
		return 0, e
	}
	got, _ := peerOf(fd)
	want := b.client
	if !loaded {
		want = addrPort(out.LocalAddr())
	}
	if !c.check(got == want, "bench getpeername", "module %s: getpeername gives %s (want %s)", onOff(loaded), got, want) {
		return 0, fmt.Errorf("getpeername answers wrong: the bench would measure the wrong thing")
	}
	t := time.Now()
	for range b.cfg.calls {
		if e := call(); e != 0 {
			return 0, e
		}
	}
	return float64(time.Since(t).Nanoseconds()) / float64(b.cfg.calls), nil
}
