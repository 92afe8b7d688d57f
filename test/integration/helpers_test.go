//go:build linux

// Package integration runs realip against real peers (HAProxy, ...) in a
// client/edge/origin lab of network namespaces (internal/netns).
package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/testenv"
)

// ioTimeout bounds every dial, read and wait of these tests; in the lab
// everything answers within milliseconds.
const ioTimeout = 5 * time.Second

// The lab's addresses. The edge has one leg towards the client and one
// towards the origin; client and origin cannot reach each other.
var (
	clientV4 = netip.MustParseAddr("192.0.2.10")
	clientV6 = netip.MustParseAddr("2001:db8:1::10")
	// The edge's client-side addresses, where HAProxy listens.
	edgeFrontV4 = netip.MustParseAddr("192.0.2.1")
	edgeFrontV6 = netip.MustParseAddr("2001:db8:1::1")
	// The edge's origin-side addresses, the proxy the origin sees.
	edgeBackV4 = netip.MustParseAddr("198.51.100.1")
	edgeBackV6 = netip.MustParseAddr("2001:db8:2::1")
	originV4   = netip.MustParseAddr("198.51.100.10")
	originV6   = netip.MustParseAddr("2001:db8:2::10")
)

// edgeTrust is the -trust value that names exactly the edge's origin-side
// addresses.
var edgeTrust = edgeBackV4.String() + "/32," + edgeBackV6.String() + "/128"

// tmpDir holds what the test binary builds once (moduleBinary).
var tmpDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "realip-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
	tmpDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lazyPath is a path found or built once per test binary run.
type lazyPath struct {
	once sync.Once
	path string
	err  error
}

// get returns the path, finding it with find the first time; a failure
// fails every test that asks, with what as its context.
func (o *lazyPath) get(t *testing.T, what string, find func() (string, error)) string {
	t.Helper()
	o.once.Do(func() { o.path, o.err = find() })
	if o.err != nil {
		t.Fatalf("%s: %v", what, o.err)
	}
	return o.path
}

// moduleBinary builds the package pkg of the module into tmpDir/name once
// per test binary run (b holds the outcome) and returns its path.
func moduleBinary(t *testing.T, b *lazyPath, pkg, name string) string {
	t.Helper()
	goTool := testenv.RequireCommand(t, "go")
	return b.get(t, "build "+name, func() (string, error) { return buildCommand(goTool, pkg, name) })
}

var whoamiBin lazyPath

// whoamiBinary builds examples/whoami once per test binary run and returns
// its path.
func whoamiBinary(t *testing.T) string {
	t.Helper()
	return moduleBinary(t, &whoamiBin, "./examples/whoami", "whoami")
}

// buildCommand builds the package pkg of the module into tmpDir/name.
func buildCommand(goTool, pkg, name string) (string, error) {
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the module")
	}
	path := filepath.Join(tmpDir, name)
	cmd := exec.Command(goTool, "build", "-o", path, pkg)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return path, nil
}

// lab is the three-host network of these tests.
type lab struct {
	*netns.Lab
	client, edge, origin *netns.Host
}

// newLab builds client - edge - origin with the addresses above. No host
// routes anything: the edge proxies.
func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{Lab: netns.NewLab(t)}
	l.client, l.edge, l.origin = l.Host("client"), l.Host("edge"), l.Host("origin")
	l.Link(l.client, l.edge,
		prefixes(clientV4, 24, clientV6, 64),
		prefixes(edgeFrontV4, 24, edgeFrontV6, 64))
	l.Link(l.edge, l.origin,
		prefixes(edgeBackV4, 24, edgeBackV6, 64),
		prefixes(originV4, 24, originV6, 64))
	return l
}

// prefixes builds address/length pairs: prefixes(a, 24, b, 64).
func prefixes(pairs ...any) []netip.Prefix {
	var out []netip.Prefix
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, netip.PrefixFrom(pairs[i].(netip.Addr), pairs[i+1].(int)))
	}
	return out
}

// startWhoami runs the whoami example in h with args and waits until it
// listens (it prints "whoami: tcp ADDR" once the listener is up).
func startWhoami(t *testing.T, h *netns.Host, args ...string) *netns.Proc {
	t.Helper()
	p := h.Start(t, whoamiBinary(t), args...)
	waitOutput(t, p, "whoami: tcp ")
	return p
}

// waitOutput waits until p has printed want, failing if p exits first.
func waitOutput(t *testing.T, p *netns.Proc, want string) {
	t.Helper()
	waitCount(t, p, want, 1)
}

// startHAProxy writes cfg to a file, runs HAProxy with it in the edge's
// namespace and waits until every address in frontends accepts connections
// from the client's namespace.
func startHAProxy(t *testing.T, l *lab, cfg string, frontends ...netip.AddrPort) *netns.Proc {
	t.Helper()
	testenv.RequireCommand(t, "haproxy")
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := l.edge.Start(t, "haproxy", "-f", path, "-db")
	deadline := time.Now().Add(ioTimeout)
	for _, fe := range frontends {
		for {
			c, err := dial(l.client, fe)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.Done():
				t.Fatalf("haproxy exited (%v):\n%s\nconfig:\n%s", p.Err(), p.Output(), cfg)
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy frontend %v not accepting within %v: %v\n%s", fe, ioTimeout, err, p.Output())
			}
		}
	}
	return p
}

// dial connects from inside h to addr.
func dial(h *netns.Host, addr netip.AddrPort) (c net.Conn, err error) {
	err = h.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr.String(), ioTimeout)
		return err
	})
	return c, err
}

// mustDial is dial that fails the test, with a deadline on the connection.
func mustDial(t *testing.T, h *netns.Host, addr netip.AddrPort) net.Conn {
	t.Helper()
	c, err := dial(h, addr)
	if err != nil {
		t.Fatalf("dial %v from %s: %v", addr, h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	return c
}

// whoamiLine is the line whoami writes first on every connection.
type whoamiLine struct {
	client, proxy netip.AddrPort
	via           string
}

// readWhoamiLine reads and parses whoami's first line from br.
func readWhoamiLine(t *testing.T, br *bufio.Reader) whoamiLine {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading whoami's line: got %q, %v", line, err)
	}
	w, err := parseWhoamiLine(line)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// parseWhoamiLine parses "client=IP:PORT proxy=IP:PORT via=PROTO\n".
func parseWhoamiLine(line string) (whoamiLine, error) {
	var w whoamiLine
	fields := strings.Fields(line)
	if len(fields) != 3 || !strings.HasSuffix(line, "\n") {
		return w, fmt.Errorf("whoami line %q: want 3 fields and a newline", line)
	}
	var err error
	for _, f := range fields {
		key, value, _ := strings.Cut(f, "=")
		switch key {
		case "client":
			w.client, err = netip.ParseAddrPort(value)
		case "proxy":
			w.proxy, err = netip.ParseAddrPort(value)
		case "via":
			w.via = value
		default:
			err = fmt.Errorf("unknown field %q", key)
		}
		if err != nil {
			return w, fmt.Errorf("whoami line %q: %w", line, err)
		}
	}
	if w.via == "" || !w.client.IsValid() || !w.proxy.IsValid() {
		return w, fmt.Errorf("whoami line %q: a field is missing", line)
	}
	return w, nil
}

// checkEcho sends payload on c and reads it back through br.
func checkEcho(t *testing.T, c net.Conn, br *bufio.Reader, payload string) {
	t.Helper()
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatalf("write payload: %v", err)
	}
	got := make([]byte, len(payload))
	if n, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("echo: got %q, %v; want %q", got[:n], err, payload)
	}
	if string(got) != payload {
		t.Fatalf("echo: got %q, want %q", got, payload)
	}
}

// readClosed reads r until the connection ends and fails unless it ends
// (EOF or a reset, not a timeout) without a single byte.
func readClosed(t *testing.T, r io.Reader) {
	t.Helper()
	got, err := io.ReadAll(r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v (read %q)", ioTimeout, got)
	}
	if len(got) > 0 {
		t.Fatalf("read %q (%v), want the connection closed without data", got, err)
	}
}

// addrPort returns a socket address as an unmapped AddrPort.
func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// family names an address's family for test names.
func family(a netip.Addr) string {
	if a.Is4() {
		return "v4"
	}
	return "v6"
}
