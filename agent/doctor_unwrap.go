//go:build linux

package agent

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/prometheus/procfs"

	"github.com/realip/realip/internal/tproute"
)

// tcpListen is the state of a listening socket in /proc/net/tcp.
const tcpListen = 0x0a

// checkUnwrap: with unwrap entries in the file, the routing their
// transparent sockets need is in place, a socket listens where each
// entry's edge connects, and its server listens at to.
func (d *doctor) checkUnwrap() Check {
	if len(d.cfg.Unwrap) == 0 {
		return ok("no unwrap entries configured")
	}
	rc := d.cfg.UnwrapRouting.tprouteConfig()
	if err := tproute.Verify(rc); err != nil {
		const fix = "start the agent (`systemctl start realip-agent`, or `realip-agent unwrap`): it installs the routing and removes it when it stops; without it servers' replies to clients never reach the relays"
		if ours, lerr := tproute.Leftovers(); lerr == nil && len(ours) == 0 {
			return finding(CheckProblem, fmt.Sprintf("%s configured but no unwrap routing is in place (rules at priority %d, table %d): the agent is not running them",
				plural(uint64(len(d.cfg.Unwrap)), "entry", "entries"), rc.Priority, rc.Table), fix)
		}
		return finding(CheckProblem, "the routing the unwrap relays need is not all in place: "+err.Error(), fix)
	}
	socks, err := readSockets(d.cfg.Procfs)
	if err != nil {
		return skip("the host's sockets could not be read: %v", err)
	}
	var missing, noServer []string
	for _, e := range d.cfg.Unwrap {
		en := e.Entry
		if !socks.bound(en.Network, en.Listen) {
			missing = append(missing, fmt.Sprintf("%s (%s %s)", e.Name, en.Network, en.Listen))
		}
		for _, to := range []netip.AddrPort{en.To, en.To6} {
			if to.IsValid() && !socks.bound(en.Network, to) {
				noServer = append(noServer, fmt.Sprintf("%s (%s %s)", e.Name, en.Network, to))
			}
		}
	}
	switch {
	case len(missing) > 0:
		return finding(CheckProblem, "nothing listens for unwrap entries "+strings.Join(missing, ", "),
			"the agent is not running these entries: check its log (`journalctl -u realip-agent`); another program may hold the port")
	case len(noServer) > 0:
		return finding(CheckProblem, "no server listens at "+strings.Join(noServer, ", "),
			"start the server, listening on loopback or on 0.0.0.0 / ::; until then every connection or flow counts in realip_unwrap_dial_errors_total (tcp) or gets no answer (udp)")
	}
	return ok("%s: routing in place, relays and servers listening", plural(uint64(len(d.cfg.Unwrap)), "unwrap entry", "unwrap entries"))
}

// sockets are the host's listening TCP and bound UDP sockets.
type sockets struct {
	tcp, udp []netip.AddrPort
}

func readSockets(procRoot string) (*sockets, error) {
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, err
	}
	var s sockets
	for _, v6 := range []bool{false, true} {
		tcp, udp := fs.NetTCP, fs.NetUDP
		if v6 {
			tcp, udp = fs.NetTCP6, fs.NetUDP6
		}
		t, err := tcp()
		if err != nil {
			return nil, err
		}
		for _, l := range t {
			if l.St == tcpListen {
				s.tcp = append(s.tcp, sockAddr(l.LocalAddr, l.LocalPort))
			}
		}
		u, err := udp()
		if err != nil {
			return nil, err
		}
		for _, l := range u {
			s.udp = append(s.udp, sockAddr(l.LocalAddr, l.LocalPort))
		}
	}
	return &s, nil
}

func sockAddr(ip []byte, port uint64) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}

// bound reports whether a socket of network listens at ap, on its address
// or on the wildcard address (IPv6's wildcard covers IPv4 too).
func (s *sockets) bound(network string, ap netip.AddrPort) bool {
	list := s.tcp
	if network == "udp" {
		list = s.udp
	}
	for _, b := range list {
		if b.Port() != ap.Port() {
			continue
		}
		if b.Addr() == ap.Addr().Unmap() || b.Addr().IsUnspecified() && (b.Addr().Is6() || ap.Addr().Unmap().Is4()) {
			return true
		}
	}
	return false
}
