//go:build linux

package agent_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/tproute"
)

// procSockets writes the environment's proc/net/{tcp,tcp6,udp,udp6} with
// a listening TCP socket at each of tcp and nothing else.
func (e *doctorEnv) procSockets(t *testing.T, tcp ...netip.AddrPort) {
	t.Helper()
	const head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	var b strings.Builder
	b.WriteString(head)
	for i, ap := range tcp {
		a := ap.Addr().As4()
		fmt.Fprintf(&b, "%4d: %02X%02X%02X%02X:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 100 0 0 10 0\n",
			i, a[3], a[2], a[1], a[0], ap.Port(), 1000+i)
	}
	files := map[string]string{"tcp": b.String(), "tcp6": head, "udp": head, "udp6": head}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(e.Dir, "proc", "net", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDoctorUnwrap: with unwrap entries, doctor checks the routing (the
// real rules and routes of a namespace), the relay's listening socket and
// the server's.
func TestDoctorUnwrap(t *testing.T) {
	host := netns.NewLab(t).Host("origin")
	listen := netip.MustParseAddrPort("198.51.100.10:80")
	server := netip.MustParseAddrPort("127.0.0.1:8080")
	const entry = "\nunwrap:\n  - {listen: 198.51.100.10:80, network: tcp, accept: [ppv1], to: 127.0.0.1:8080}\n"
	for _, tc := range []struct {
		name    string
		entries bool
		routing bool
		sockets []netip.AddrPort
		status  agent.CheckStatus
		says    string
	}{
		{"no entries", false, false, nil, agent.CheckOK, "no unwrap entries configured"},
		{"agent not running", true, false, []netip.AddrPort{server}, agent.CheckProblem, "no unwrap routing is in place"},
		{"healthy", true, true, []netip.AddrPort{listen, server}, agent.CheckOK, "1 unwrap entry: routing in place"},
		{"no relay", true, true, []netip.AddrPort{server}, agent.CheckProblem, "nothing listens for unwrap entries tcp-80 (tcp 198.51.100.10:80)"},
		{"no server", true, true, []netip.AddrPort{listen}, agent.CheckProblem, "no server listens at tcp-80 (tcp 127.0.0.1:8080)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newDoctorEnv(t)
			e.healthyKmod()
			cfg := "trusted: [198.51.100.0/24, 2001:db8::/32]\nkinds: [200, 254]\n"
			if tc.entries {
				cfg += entry
			}
			e.Write(cfg)
			e.procSockets(t, tc.sockets...)
			var rep *agent.Report
			err := host.Do(func() error {
				if tc.routing {
					r, err := tproute.Install(tproute.Config{})
					if err != nil {
						return err
					}
					defer r.Remove()
				}
				rep = e.doctor(t, agent.DoctorOptions{})
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			c := rep.Check("unwrap")
			if c.Status != tc.status || !strings.Contains(c.Detail, tc.says) {
				t.Errorf("unwrap: %s %q, want %s with %q", c.Status, c.Detail, tc.status, tc.says)
			}
		})
	}
}
