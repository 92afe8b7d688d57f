//go:build linux

package integration

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/realip/realip/internal/netns"
)

var edgeBin lazyPath

// edgeBinary builds cmd/realip-edge once per test binary run and returns
// its path.
func edgeBinary(t *testing.T) string {
	t.Helper()
	return moduleBinary(t, &edgeBin, "./cmd/realip-edge", "realip-edge")
}

// Log messages of realip-edge (slog text handler) the tests wait for.
const (
	logApplied = `msg="edge: rules applied"`
	logRefused = `msg="reload refused, rules unchanged"`
	logMetrics = `msg=metrics `
)

// daemon is a running program of the module that rereads its file on
// SIGHUP and logs whether it applied the new one: realip-edge and
// realip-agent.
type daemon struct {
	*netns.Proc
	host *netns.Host
	name string // the program, for messages
	file string // the path of the file it rereads
	// What it logs when it applied a new file, and when it refused one.
	appliedMsg, refusedMsg string
}

// edgeProc is a running realip-edge with its rules file.
type edgeProc struct {
	daemon
}

// writeFile writes text to path atomically (a reload never sees half a file).
func writeFile(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startEdge writes rulesText to a file, runs realip-edge on it in h with
// args and waits until the rules are applied (and the metrics listener is
// up when -metrics is among args).
func startEdge(t *testing.T, h *netns.Host, rulesText string, args ...string) *edgeProc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rules.txt")
	writeFile(t, path, rulesText)
	p := h.Start(t, edgeBinary(t), append([]string{"-rules", path}, args...)...)
	e := &edgeProc{daemon{Proc: p, host: h, name: "realip-edge", file: path, appliedMsg: logApplied, refusedMsg: logRefused}}
	waitCount(t, p, logApplied, 1)
	for _, a := range args {
		if a == "-metrics" {
			waitCount(t, p, logMetrics, 1)
		}
	}
	return e
}

// signal sends sig to the program (ip netns exec execs it: same process).
func (d *daemon) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := d.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// reload writes text as the new file, sends SIGHUP and waits for the
// outcome: applied (ok) or refused. It returns what the reload logged.
func (d *daemon) reload(t *testing.T, text string, ok bool) string {
	t.Helper()
	before := d.Output()
	applied, refused := strings.Count(before, d.appliedMsg), strings.Count(before, d.refusedMsg)
	writeFile(t, d.file, text)
	d.signal(t, syscall.SIGHUP)
	var out string
	waitFor(t, ioTimeout, func() bool {
		out = d.Output()
		if strings.Count(out, d.appliedMsg) > applied || strings.Count(out, d.refusedMsg) > refused {
			return true
		}
		select {
		case <-d.Done():
			t.Fatalf("%s exited (%v) on SIGHUP:\n%s", d.name, d.Err(), out)
		default:
		}
		return false
	}, func() string { return "no reload outcome logged:\n" + out[len(before):] })
	if got := strings.Count(out, d.appliedMsg) > applied; got != ok {
		t.Fatalf("%s reload: applied %v, want %v:\n%s", d.name, got, ok, out[len(before):])
	}
	return out[len(before):]
}

// waitCount waits until p's output holds want at least n times, failing if
// p exits first.
func waitCount(t *testing.T, p *netns.Proc, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for strings.Count(p.Output(), want) < n {
		select {
		case <-p.Done():
			t.Fatalf("process exited (%v) before printing %q %d times:\n%s", p.Err(), want, n, p.Output())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not printed %d times within %v:\n%s", want, n, ioTimeout, p.Output())
		}
	}
}

// waitExit waits (bounded) for p to exit.
func waitExit(t *testing.T, p *netns.Proc, within time.Duration) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(within):
		t.Fatalf("process still running %v later:\n%s", within, p.Output())
	}
}

// startWhoamiOn runs whoami in h and waits until it serves: for a UDP-only
// whoami the line to wait for is "whoami: udp ".
func startWhoamiOn(t *testing.T, h *netns.Host, args ...string) *netns.Proc {
	t.Helper()
	p := h.Start(t, whoamiBinary(t), args...)
	for i, a := range args {
		if (a == "-tcp" || a == "-udp") && i+1 < len(args) {
			waitOutput(t, p, "whoami: "+a[1:]+" ")
		}
	}
	return p
}

// tcpAsk connects from h to addr, sends a line, and returns whoami's line
// and the client's own address, after checking the echo.
func tcpAsk(t *testing.T, h *netns.Host, addr netip.AddrPort) (whoamiLine, netip.AddrPort) {
	t.Helper()
	c := mustDial(t, h, addr)
	defer c.Close()
	local := addrPort(c.LocalAddr())
	// Write first: a whoami that does not require a header decides at once.
	const hello = "hello through the edge\n"
	if _, err := io.WriteString(c, hello); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	w := readWhoamiLine(t, br)
	got := make([]byte, len(hello))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != hello {
		t.Fatalf("echo via %v: %q, %v", addr, got, err)
	}
	return w, local
}

// tcpSession is an open connection through the edge to whoami.
type tcpSession struct {
	c     net.Conn
	br    *bufio.Reader
	local netip.AddrPort
	line  whoamiLine
}

// openSession connects to addr and reads whoami's line.
func openSession(t *testing.T, h *netns.Host, addr netip.AddrPort) *tcpSession {
	t.Helper()
	c := mustDial(t, h, addr)
	c.SetDeadline(time.Time{})
	s := &tcpSession{c: c, br: bufio.NewReader(c), local: addrPort(c.LocalAddr())}
	s.echo(t, "first\n")
	return s
}

// echo sends msg and reads it back (the first call reads whoami's line too).
func (s *tcpSession) echo(t *testing.T, msg string) {
	t.Helper()
	s.c.SetDeadline(time.Now().Add(ioTimeout))
	defer s.c.SetDeadline(time.Time{})
	if _, err := io.WriteString(s.c, msg); err != nil {
		t.Fatalf("session %v: write: %v", s.local, err)
	}
	if !s.line.client.IsValid() {
		s.line = readWhoamiLine(t, s.br)
	}
	got := make([]byte, len(msg))
	if n, err := io.ReadFull(s.br, got); err != nil || string(got) != msg {
		t.Fatalf("session %v: echo %q, %v; want %q", s.local, got[:n], err, msg)
	}
}

// dialUDP returns a UDP socket in h connected to addr.
func dialUDP(t *testing.T, h *netns.Host, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		t.Fatalf("udp dial %v from %s: %v", addr, h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpLocal returns a UDP socket's own address, unmapped.
func udpLocal(c *net.UDPConn) netip.AddrPort {
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// udpExchange sends payload on c and returns the next datagram received.
func udpExchange(t *testing.T, c *net.UDPConn, payload []byte) []byte {
	t.Helper()
	if _, err := c.Write(payload); err != nil {
		t.Fatalf("udp write to %v: %v", c.RemoteAddr(), err)
	}
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 64<<10)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no udp answer from %v: %v", c.RemoteAddr(), err)
	}
	return buf[:n]
}

// udpAsk sends one datagram to whoami through addr and returns its line.
func udpAsk(t *testing.T, c *net.UDPConn) whoamiLine {
	t.Helper()
	reply := udpExchange(t, c, []byte("who am i?\n"))
	w, err := parseWhoamiLine(string(reply))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// datagram is one datagram a udpOrigin received.
type datagram struct {
	from netip.AddrPort
	data []byte
}

// udpOrigin is a raw UDP server in the origin namespace that hands every
// datagram to the test and answers with reply(datagram), if not nil.
type udpOrigin struct {
	conn *net.UDPConn
	got  chan datagram
}

func startUDPOrigin(t *testing.T, h *netns.Host, port uint16, reply func([]byte) []byte) *udpOrigin {
	t.Helper()
	o := &udpOrigin{got: make(chan datagram, 64)}
	err := h.Do(func() (err error) {
		o.conn, err = net.ListenUDP("udp", &net.UDPAddr{Port: int(port)})
		return err
	})
	if err != nil {
		t.Fatalf("udp origin :%d: %v", port, err)
	}
	t.Cleanup(func() { o.conn.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := o.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			d := datagram{netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), append([]byte(nil), buf[:n]...)}
			select {
			case o.got <- d:
			default: // the test is not reading: drop
			}
			if reply != nil {
				if r := reply(d.data); r != nil {
					o.conn.WriteToUDPAddrPort(r, from)
				}
			}
		}
	}()
	return o
}

// next returns the next datagram the origin received.
func (o *udpOrigin) next(t *testing.T) datagram {
	t.Helper()
	select {
	case d := <-o.got:
		return d
	case <-time.After(ioTimeout):
		t.Fatalf("udp origin %v received nothing within %v", o.conn.LocalAddr(), ioTimeout)
		return datagram{}
	}
}

// scrape fetches /metrics from addr inside h (an HTTP client would dial
// from another goroutine, outside the namespace).
func scrape(t *testing.T, h *netns.Host, addr string) string {
	t.Helper()
	var c net.Conn
	err := h.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, ioTimeout)
		return err
	})
	if err != nil {
		t.Fatalf("metrics %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("metrics %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics %s: %s, %v", addr, resp.Status, err)
	}
	return string(body)
}

// scrapeUntil scrapes until done accepts the text or ioTimeout passes, and
// returns the last text. A relay counts a datagram or byte after it sent
// it, so a client can hold a reply before its count is in.
func scrapeUntil(t *testing.T, h *netns.Host, addr string, done func(text string) bool) string {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for {
		text := scrape(t, h, addr)
		if done(text) || time.Now().After(deadline) {
			return text
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricValue finds the sample of name whose labels include all of labels
// (each `key="value"`) in a Prometheus text exposition.
func metricValue(text, name string, labels ...string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		if !containsAll(rest, labels) {
			continue
		}
		fields := strings.Fields(rest)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			continue
		}
		return v, true
	}
	return 0, false
}

// front returns the edge's client-side address of a's family.
func front(a netip.Addr) netip.Addr {
	if a.Is4() {
		return edgeFrontV4
	}
	return edgeFrontV6
}

// isRefused reports whether err is a refused TCP connection.
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
