// Command udpflood reproduces issue 18 part 3 against a realip-edge binary:
// one source address (127.0.0.1) opens -attackers UDP flows, each sending
// a datagram every -every, at -max-udp-flows equal to that number; then
// -newcomers clients from other loopback addresses (127.0.0.2, ...) each
// try to get an echo through. It prints how many newcomers were answered,
// how many of the attacker's sockets still were, and the edge's error
// counters by reason.
//
//	go run ./bench/udpflood -edge /tmp/realip-edge-before
//	go run ./bench/udpflood -edge bin/realip-edge -- -goroutine-relay
//
// Everything runs on loopback; the edge is started and stopped by the
// tool, every loop is bounded.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realip/realip/bench/internal/loadkit"
)

type config struct {
	edge      string
	attackers int
	newcomers int
	maxFlows  int
	every     time.Duration
	extra     []string
}

func main() {
	var c config
	flag.StringVar(&c.edge, "edge", "", "realip-edge binary to test (required)")
	flag.IntVar(&c.attackers, "attackers", 100, "sockets of the one attacking address")
	flag.IntVar(&c.newcomers, "newcomers", 8, "clients from other addresses arriving afterwards")
	flag.IntVar(&c.maxFlows, "max-flows", 0, "-max-udp-flows of the edge (default: -attackers)")
	flag.DurationVar(&c.every, "every", 500*time.Millisecond, "period of each attacking socket's datagram")
	flag.Parse()
	c.extra = flag.Args()
	if c.maxFlows == 0 {
		c.maxFlows = c.attackers
	}
	if c.edge == "" {
		fmt.Fprintln(os.Stderr, "udpflood: -edge is required")
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "udpflood:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	origin, err := loadkit.ServeUDP("127.0.0.1:0", 1, loadkit.Echo{}.UDP)
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	defer origin.Close()
	edgePort, metricsAddr, stop, err := startEdge(c, origin.LocalAddr().(*net.UDPAddr).Port)
	if err != nil {
		return err
	}
	defer stop()
	target := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), edgePort)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var answered atomic.Int64
	attackers, err := openAttackers(c.attackers, target)
	if err != nil {
		cancel()
		return err
	}
	for _, a := range attackers {
		wg.Add(1)
		go func() { defer wg.Done(); attack(ctx, a, c.every, &answered) }()
	}
	time.Sleep(2 * c.every) // every attacking flow is open by now
	got := 0
	for i := range c.newcomers {
		if newcomer(netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}), target) {
			got++
		}
	}
	answered.Store(0)
	time.Sleep(2 * c.every) // a round of the attack after the newcomers
	cancel()
	wg.Wait()
	fmt.Printf("newcomers answered: %d of %d\n", got, c.newcomers)
	fmt.Printf("attacker datagrams answered in the last %v: %d (%d sockets)\n", 2*c.every, answered.Load(), c.attackers)
	return printErrors(metricsAddr)
}

// startEdge runs the edge with one UDP rule towards originPort and waits
// until its metrics endpoint answers.
func startEdge(c config, originPort int) (uint16, string, func(), error) {
	dir, err := os.MkdirTemp("", "udpflood")
	if err != nil {
		return 0, "", nil, err
	}
	port, mport, err := freePorts()
	if err != nil {
		return 0, "", nil, err
	}
	rules := filepath.Join(dir, "rules")
	line := fmt.Sprintf("udp:%d 127.0.0.1 %d off off\n", port, originPort)
	if err := os.WriteFile(rules, []byte(line), 0o644); err != nil {
		return 0, "", nil, err
	}
	maddr := fmt.Sprintf("127.0.0.1:%d", mport)
	args := append([]string{"-rules", rules, "-listen-ip", "127.0.0.1", "-metrics", maddr,
		"-max-udp-flows", strconv.Itoa(c.maxFlows), "-drain-timeout", "1s"}, c.extra...)
	cmd := exec.Command(c.edge, args...)
	logf, err := os.Create(filepath.Join(dir, "edge.log"))
	if err != nil {
		return 0, "", nil, err
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return 0, "", nil, fmt.Errorf("start %s: %w", c.edge, err)
	}
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		logf.Close()
		os.RemoveAll(dir)
	}
	for range 100 {
		if r, err := http.Get("http://" + maddr + "/metrics"); err == nil {
			r.Body.Close()
			return port, maddr, stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return 0, "", nil, errors.New("the edge did not come up")
}

// freePorts returns a free UDP port and a free TCP port of 127.0.0.1.
func freePorts() (uint16, int, error) {
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, 0, err
	}
	defer u.Close()
	t, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, 0, err
	}
	defer t.Close()
	return uint16(u.LocalAddr().(*net.UDPAddr).Port), t.Addr().(*net.TCPAddr).Port, nil
}

func openAttackers(n int, target netip.AddrPort) ([]*net.UDPConn, error) {
	var out []*net.UDPConn
	for range n {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("attacker socket: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

// attack sends a datagram every period until ctx is done, counting echoes.
func attack(ctx context.Context, c *net.UDPConn, every time.Duration, answered *atomic.Int64) {
	defer c.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := c.Read(buf); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			answered.Add(1)
		}
	}()
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		c.Write([]byte("attack"))
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// newcomer reports whether a client from addr gets an echo within three
// tries of 300 ms.
func newcomer(addr netip.Addr, target netip.AddrPort) bool {
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)), net.UDPAddrFromAddrPort(target))
	if err != nil {
		fmt.Fprintln(os.Stderr, "udpflood: newcomer:", err)
		return false
	}
	defer c.Close()
	buf := make([]byte, 64)
	for range 3 {
		c.Write([]byte("hello"))
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "hello" {
			return true
		}
	}
	return false
}

// printErrors prints the edge's realip_edge_errors_total by reason.
func printErrors(addr string) error {
	r, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	found := false
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "realip_edge_errors_total{") || strings.HasPrefix(l, "realip_edge_udp_flows_active{") {
			fmt.Println(l)
			found = true
		}
	}
	if !found {
		fmt.Println("(no errors counted)")
	}
	return sc.Err()
}
