// Command fdload reproduces issue 18 part 4's descriptor shortage against
// a realip-edge binary: the edge runs under a low open-file limit (the
// command given after --, e.g. setpriv and prlimit around the binary),
// with a TCP rule to an origin group of two healthy echo origins, and
// -clients connections arrive at once and stay open for -hold. It prints
// how many were served, the edge's error counters by reason, the origins'
// health as the edge sees it, and how many log lines the edge wrote.
//
//	go run ./bench/fdload -- setpriv --bounding-set=-sys_resource prlimit --nofile=256:256 bin/realip-edge
//
// Everything runs on loopback; every loop is bounded.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	clients := flag.Int("clients", 440, "connections opened at once")
	hold := flag.Duration("hold", time.Second, "how long each served connection stays open")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "fdload: give the edge's command line after --")
		os.Exit(2)
	}
	if err := run(flag.Args(), *clients, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "fdload:", err)
		os.Exit(1)
	}
}

func run(edgeCmd []string, clients int, hold time.Duration) error {
	// Two origins on the same port: 127.0.0.1 and 127.0.0.2.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	defer ln.Close()
	go echo(ln)
	port := ln.Addr().(*net.TCPAddr).Port
	ln2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
	if err != nil {
		return fmt.Errorf("second origin: %w", err)
	}
	defer ln2.Close()
	go echo(ln2)
	e, err := startEdge(edgeCmd, port)
	if err != nil {
		return err
	}
	defer e.stop()
	served := load(e.addr, clients, hold)
	fmt.Printf("clients served: %d of %d\n", served, clients)
	if err := e.printMetrics(); err != nil {
		return err
	}
	fmt.Printf("edge log lines: %d\n", e.logLines())
	return nil
}

func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { defer c.Close(); io.Copy(c, c) }()
	}
}

// load opens n connections at once; each sends a byte, waits for its echo
// and stays open for hold. It returns how many got their echo.
func load(addr string, n int, hold time.Duration) int {
	var wg sync.WaitGroup
	var served atomic.Int64
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3*time.Second + hold))
			b := []byte{'x'}
			if _, err := c.Write(b); err != nil {
				return
			}
			if _, err := io.ReadFull(c, b); err != nil {
				return
			}
			served.Add(1)
			time.Sleep(hold)
		}()
	}
	wg.Wait()
	return int(served.Load())
}

type edge struct {
	cmd     *exec.Cmd
	dir     string
	addr    string
	metrics string
	log     *os.File
}

// startEdge runs the edge command with a rule forwarding a free port to
// og:both (127.0.0.1 and 127.0.0.2 on originPort).
func startEdge(cmdline []string, originPort int) (*edge, error) {
	dir, err := os.MkdirTemp("", "fdload")
	if err != nil {
		return nil, err
	}
	port, mport := freePort(), freePort()
	rules := filepath.Join(dir, "rules")
	groups := filepath.Join(dir, "groups")
	if err := os.WriteFile(rules, fmt.Appendf(nil, "tcp:%d og:both %d off off\n", port, originPort), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(groups, []byte("both 127.0.0.1 127.0.0.2\n"), 0o644); err != nil {
		return nil, err
	}
	e := &edge{dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", port), metrics: fmt.Sprintf("127.0.0.1:%d", mport)}
	args := append(cmdline[1:], "-rules", rules, "-origin-groups", groups, "-listen-ip", "127.0.0.1",
		"-metrics", e.metrics, "-drain-timeout", "1s")
	e.cmd = exec.Command(cmdline[0], args...)
	if e.log, err = os.Create(filepath.Join(dir, "edge.log")); err != nil {
		return nil, err
	}
	e.cmd.Stderr = e.log
	if err := e.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the edge: %w", err)
	}
	for range 100 {
		if r, err := http.Get("http://" + e.metrics + "/metrics"); err == nil {
			r.Body.Close()
			time.Sleep(200 * time.Millisecond) // the first health checks
			return e, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.stop()
	return nil, errors.New("the edge did not come up")
}

func (e *edge) stop() {
	e.cmd.Process.Signal(os.Interrupt)
	e.cmd.Wait()
	e.log.Close()
	os.RemoveAll(e.dir)
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// printMetrics prints the edge's errors by reason and its origins' health.
func (e *edge) printMetrics() error {
	r, err := http.Get("http://" + e.metrics + "/metrics")
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "realip_edge_errors_total{") || strings.HasPrefix(l, "realip_edge_origin_up{") {
			fmt.Println(l)
		}
	}
	return sc.Err()
}

// logLines counts the edge's log lines so far and prints its warnings
// about the open-file limit.
func (e *edge) logLines() int {
	b, _ := os.ReadFile(e.log.Name())
	for _, l := range bytes.Split(b, []byte("\n")) {
		if bytes.Contains(l, []byte("open-file limit")) {
			fmt.Printf("  %s\n", l)
		}
	}
	return bytes.Count(b, []byte("\n"))
}
