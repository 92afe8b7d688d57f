//go:build linux

package integration

// Helpers of the nginx and fault tests: realip-edge's metrics and file
// descriptors, and nginx run from the configuration in examples/nginx.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/testenv"
)

// metricsAddr is where the edges of the nginx and fault tests serve
// /metrics, on the loopback of the edge's namespace (every lab has its own).
const metricsAddr = "127.0.0.1:9100"

// startMetricsEdge runs realip-edge in h (startEdge, edge_helpers_test.go)
// with rulesText and args, serving its metrics on metricsAddr.
func startMetricsEdge(t *testing.T, h *netns.Host, rulesText string, args ...string) *edgeProc {
	t.Helper()
	return startEdge(t, h, rulesText, append([]string{"-metrics", metricsAddr}, args...)...)
}

// metricOf returns the value of the first series of name whose labels
// include labels (each `key="value"`) on e's metrics, 0 if there is none:
// a series never touched is absent.
func (e *edgeProc) metricOf(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, _ := metricValue(scrape(t, e.host, metricsAddr), name, labels...)
	return v
}

// waitMetric waits until metricOf(name, labels) is want.
func (e *edgeProc) waitMetric(t *testing.T, want float64, name string, labels ...string) {
	t.Helper()
	var got float64
	waitFor(t, ioTimeout, func() bool {
		got = e.metricOf(t, name, labels...)
		return got == want
	}, func() string { return fmt.Sprintf("%s%v = %v, want %v", name, labels, got, want) })
}

// pid is the edge's process ID (ip netns exec execs it, no fork).
func (e *edgeProc) pid() int { return e.Cmd.Process.Pid }

// moduleRoot is the repository root; go test runs in the package directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	return root
}

// waitFor polls cond until it holds, failing with describe() after limit.
func waitFor(t *testing.T, limit time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not so after %v: %s", limit, describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readAllUntilEnd reads c until the peer ends the connection, bounded by
// the connection's deadline, and returns the bytes.
func readAllUntilEnd(t *testing.T, c net.Conn) string {
	t.Helper()
	got, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v (read %q)", ioTimeout, got)
	}
	return string(got)
}

// The nginx example: the files of examples/nginx, run as they are except
// for log paths, which move into the test's temporary directory.
const (
	nginxStreamConf = "realip-edge-stream.conf"
	nginxHTTPConf   = "realip-edge-http.conf"
	nginxRules      = "rules.txt"
	nginxLogDir     = "/var/log/nginx/"
	// The example's listen ports.
	nginxStreamPort = 7000
	nginxHTTPPort   = 8080
)

// nginxExampleDir is examples/nginx.
func nginxExampleDir(t *testing.T) string {
	return filepath.Join(moduleRoot(t), "examples", "nginx")
}

// nginxLab is nginx running the example configuration in a lab host.
type nginxLab struct {
	proc   *netns.Proc
	logDir string
}

// startNginx runs nginx in h with the example's stream and http
// configuration and waits until it has bound its ports.
func startNginx(t *testing.T, h *netns.Host) *nginxLab {
	t.Helper()
	testenv.RequireCommand(t, "nginx")
	dir := t.TempDir()
	n := &nginxLab{logDir: filepath.Join(dir, "logs")}
	for _, sub := range []string{"logs", "temp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	include := func(name string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(n.example(t, name)), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	pidFile := filepath.Join(dir, "nginx.pid")
	var b strings.Builder
	b.WriteString(nginxLoadStream(t))
	fmt.Fprintf(&b, "user %s;\nworker_processes 1;\npid %s;\nerror_log stderr notice;\n", nginxUser(), pidFile)
	b.WriteString("events { worker_connections 512; }\n")
	fmt.Fprintf(&b, "include %s;\n", include(nginxStreamConf))
	b.WriteString("http {\n")
	for _, tmp := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "\t%s_temp_path %s;\n", tmp, filepath.Join(dir, "temp", tmp))
	}
	fmt.Fprintf(&b, "\tinclude %s;\n}\n", include(nginxHTTPConf))
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	n.proc = h.Start(t, "nginx", "-c", conf, "-p", dir, "-g", "daemon off;")
	// nginx writes its pid file after it has bound every listening socket.
	waitFor(t, ioTimeout, func() bool {
		select {
		case <-n.proc.Done():
			t.Fatalf("nginx exited (%v):\n%s\nconfiguration:\n%s", n.proc.Err(), n.proc.Output(), b.String())
		default:
		}
		_, err := os.Stat(pidFile)
		return err == nil
	}, func() string { return "nginx wrote no pid file:\n" + n.proc.Output() })
	return n
}

// example returns the text of examples/nginx/name with its log files moved
// into the test's log directory.
func (n *nginxLab) example(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(nginxExampleDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if !strings.Contains(text, "access_log "+nginxLogDir) {
		t.Fatalf("%s: no access_log under %s to redirect", name, nginxLogDir)
	}
	return strings.ReplaceAll(text, nginxLogDir, n.logDir+"/")
}

// logLine waits until the access log file (the base name the example
// gives it) has a line holding every one of parts, and returns it.
func (n *nginxLab) logLine(t *testing.T, file string, parts ...string) string {
	t.Helper()
	path := filepath.Join(n.logDir, file)
	var line string
	waitFor(t, ioTimeout, func() bool {
		b, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(b), "\n") {
			if containsAll(l, parts) {
				line = l
				return true
			}
		}
		return false
	}, func() string {
		b, err := os.ReadFile(path)
		return fmt.Sprintf("no line with %q in %s (%v):\n%s", parts, path, err, b)
	})
	return line
}

// nginxLoadStream returns the load_module line the stream module needs, or
// "" when it is built in. A Debian nginx.conf loads it through
// /etc/nginx/modules-enabled, which a configuration of our own does not
// include.
func nginxLoadStream(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("nginx", "-V").CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -V: %v\n%s", err, out)
	}
	args := strings.Fields(string(out))
	modules := "/usr/lib/nginx/modules"
	dynamic, static := false, false
	for _, a := range args {
		switch {
		case a == "--with-stream=dynamic":
			dynamic = true
		case a == "--with-stream":
			static = true
		case strings.HasPrefix(a, "--modules-path="):
			modules = strings.TrimPrefix(a, "--modules-path=")
		}
	}
	if static {
		return ""
	}
	so := filepath.Join(modules, "ngx_stream_module.so")
	if _, err := os.Stat(so); err != nil {
		if dynamic {
			testenv.SkipOrFail(t, "nginx's stream module is not installed (%v): scripts/deps.sh nginx-core libnginx-mod-stream", err)
		}
		testenv.SkipOrFail(t, "this nginx has no stream module")
	}
	return "load_module " + so + ";\n"
}

// nginxUser is the unprivileged user and group of the workers.
func nginxUser() string {
	if _, err := user.LookupGroup("nogroup"); err == nil {
		return "nobody nogroup"
	}
	return "nobody nobody"
}

// httpGet sends a HTTP/1.0 GET for path on c and returns the response with
// its body read.
func httpGet(t *testing.T, c net.Conn, path string) (*http.Response, string) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: origin.example\r\n\r\n", path); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

// logFields splits an access log line into its key=value fields.
func logFields(line string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			out[k] = v
		}
	}
	return out
}

// hostPort joins an address and port the way nginx prints them in these
// logs: an IPv6 address without brackets.
func hostPort(ap netip.AddrPort) string {
	return fmt.Sprintf("%s:%d", ap.Addr(), ap.Port())
}
