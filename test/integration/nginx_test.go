//go:build linux

package integration

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/realip/realip/edge/rules"
	"github.com/realip/realip/internal/testenv"
	"github.com/realip/realip/wire"
)

// TestNginxBehindEdge runs nginx, configured with the files of
// examples/nginx as they are (only the log paths move), in the origin, and
// realip-edge with the example's rules in the edge. Clients connect over
// IPv4 and IPv6 through every rule (PROXY v1 and v2, to nginx's IPv4 and
// IPv6 addresses, stream and http servers) and nginx must report the
// client's own address and port both in its answer and in its access log,
// with the edge as $realip_remote_addr.
func TestNginxBehindEdge(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "nginx")
	ex := nginxExampleDir(t)
	rulesPath := filepath.Join(ex, nginxRules)
	set, err := rules.Load(rulesPath, "")
	if err != nil {
		t.Fatal(err)
	}
	rulesText, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t)
	ng := startNginx(t, l.origin)
	startEdge(t, l.edge, string(rulesText))
	// The edge's health checks of these origins (one at start, then every
	// few seconds) send a PROXY LOCAL / UNKNOWN header: nginx must not log
	// them as broken headers. Checked once every subtest is done.
	t.Cleanup(func() {
		for _, line := range strings.Split(ng.proc.Output(), "\n") {
			if strings.Contains(line, "broken header") || strings.Contains(line, "PROXY protocol") {
				t.Errorf("nginx logged a PROXY protocol problem: %s", line)
			}
		}
	})

	// The example must keep covering both header versions and both servers.
	var modes []wire.Proto
	var originPorts []uint16
	for _, r := range set.Rules {
		modes = append(modes, r.IPMode)
		originPorts = append(originPorts, r.OriginPort.Lo)
	}
	for _, m := range []wire.Proto{wire.PPv1, wire.PPv2} {
		if !slices.Contains(modes, m) {
			t.Errorf("%s has no %v rule", rulesPath, m)
		}
	}
	for _, p := range []uint16{nginxStreamPort, nginxHTTPPort} {
		if !slices.Contains(originPorts, p) {
			t.Errorf("%s has no rule to nginx's port %d", rulesPath, p)
		}
	}

	for _, r := range set.Rules {
		if r.Proto != rules.TCP || r.Origin.Kind != rules.OriginIP || r.PortCount() != 1 {
			t.Fatalf("%s:%d: the test expects TCP rules of one port to an IP address", rulesPath, r.Line)
		}
		port, origin := r.Ports[0].Lo, r.Origin.Addr
		for _, front := range []netip.Addr{edgeFrontV4, edgeFrontV6} {
			name := fmt.Sprintf("%d-%v-client%s-origin%s", port, r.IPMode, family(front), family(origin))
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				target := netip.AddrPortFrom(front, port)
				c := mustDial(t, l.client, target)
				client := addrPort(c.LocalAddr())
				edge := edgeBack(origin).String()
				want := fmt.Sprintf("%s %s\n", hostPort(client), client.Addr())
				var got, logFile string
				var wantLog []string
				switch r.OriginPort.Lo {
				case nginxStreamPort:
					got = readAllUntilEnd(t, c)
					logFile = "realip-edge-stream.log"
					wantLog = []string{"status=200", "edge_front=" + hostPort(target)}
				case nginxHTTPPort:
					path := "/" + name
					resp, body := httpGet(t, c, path)
					if resp.StatusCode != 200 {
						t.Errorf("HTTP status %s", resp.Status)
					}
					got = body
					logFile = "realip-edge-http.log"
					wantLog = []string{"status=200", `"GET ` + path + ` HTTP/1.0"`}
				default:
					t.Fatalf("rule to port %d: not one of the example's nginx servers", r.OriginPort.Lo)
				}
				if got != want {
					t.Errorf("nginx answered %q, want %q ($proxy_protocol_addr:$proxy_protocol_port $remote_addr of the client)", got, want)
				}
				line := ng.logLine(t, logFile, "client="+hostPort(client)+" ")
				f := logFields(line)
				if f["remote"] != hostPort(client) {
					t.Errorf("access log remote=%s, want the client %s:\n%s", f["remote"], hostPort(client), line)
				}
				if e, p, _ := cutPort(f["edge"]); e != edge || p == 0 {
					t.Errorf("access log edge=%s, want $realip_remote_addr the edge %s and a port:\n%s", f["edge"], edge, line)
				}
				if !containsAll(line, wantLog) {
					t.Errorf("access log line lacks %q:\n%s", wantLog, line)
				}
			})
		}
	}

	// A peer that set_real_ip_from does not name (here the origin itself)
	// can write any header: nginx shows it as $proxy_protocol_addr but
	// keeps the peer as $remote_addr.
	t.Run("untrusted-peer", func(t *testing.T) {
		t.Parallel()
		for _, lo := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")} {
			c := mustDial(t, l.origin, netip.AddrPortFrom(lo, nginxStreamPort))
			peer := addrPort(c.LocalAddr())
			forged := "PROXY TCP4 203.0.113.7 192.0.2.1 4444 7001\r\n"
			if _, err := c.Write([]byte(forged)); err != nil {
				t.Fatal(err)
			}
			got := readAllUntilEnd(t, c)
			if want := fmt.Sprintf("203.0.113.7:4444 %s\n", lo); got != want {
				t.Errorf("nginx answered %q to a forged header from %v, want %q", got, peer, want)
			}
			line := ng.logLine(t, "realip-edge-stream.log", "remote="+hostPort(peer)+" ")
			if f := logFields(line); f["client"] != "203.0.113.7:4444" || f["edge"] != hostPort(peer) {
				t.Errorf("access log line for a forged header from %v:\n%s", peer, line)
			}
		}
	})

	// The http variant of the README is the example file, word for word.
	t.Run("readme-shows-http-conf", func(t *testing.T) {
		readme := ng.readExample(t, "README.md")
		conf := ng.readExample(t, nginxHTTPConf)
		_, body, _ := strings.Cut(conf, "\nlog_format") // past the file's own comment
		if !strings.Contains(readme, "log_format"+body) {
			t.Errorf("README.md does not show %s as it is", nginxHTTPConf)
		}
	})
}

// cutPort splits "ADDR:PORT" as nginx prints it (IPv6 without brackets).
func cutPort(s string) (addr string, port uint16, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", 0, false
	}
	p, err := strconv.ParseUint(s[i+1:], 10, 16)
	if err != nil {
		return "", 0, false
	}
	return s[:i], uint16(p), true
}

// readExample returns examples/nginx/name as it is.
func (n *nginxLab) readExample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(nginxExampleDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
