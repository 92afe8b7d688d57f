//go:build linux

package monitoring

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// The unwrap part of the lab: the real `realip-agent unwrap` on the
// origin, reached through the edge's ppv1, ppv2 and spp rules, relaying
// from the client's own address to plain servers on the origin's loopback
// that know nothing of PROXY protocol or SPP, and one entry whose server
// is down. Its metrics (realip_unwrap_*) feed the dashboard's Unwrap row
// and the RealipUnwrap* alerts.
const (
	portUnwrapWeb        = 8005 // TCP entry "web" (ppv1, ppv2) on the origin's address
	portUnwrapGame       = 9006 // UDP entry "game" (spp)
	portUnwrapDown       = 8007 // TCP entry "down" (ppv2): nothing listens at its to:
	portUnwrapWebServer  = 8015 // the plain TCP server behind "web", on 127.0.0.1
	portUnwrapGameServer = 9016 // the plain UDP server behind "game", on 127.0.0.1
	portUnwrapDownServer = 8017 // where "down" relays to: nobody listens
	portAgentUnwrap      = 9791 // the unwrap agent's metrics_listen

	ruleUnwrapWeb  = 1005 // edge rules to the entries
	ruleUnwrapGame = 2006
	ruleUnwrapDown = 1007
)

// edgeUnwrapRules are the edge's rules to the agent's entries.
var edgeUnwrapRules = fmt.Sprintf(`tcp:%[2]d %[1]s %[3]d off ppv1 unwrap web, plain TCP server
udp:%[4]d %[1]s %[5]d off spp unwrap game, plain UDP server
tcp:%[6]d %[1]s %[7]d off ppv2 unwrap down, its server does not listen
`, originV4, ruleUnwrapWeb, portUnwrapWeb, ruleUnwrapGame, portUnwrapGame, ruleUnwrapDown, portUnwrapDown)

// unwrapConfig is the agent's file: the edge trusted, one entry per kind
// of traffic the dashboard's Unwrap row shows.
var unwrapConfig = fmt.Sprintf(`trusted: [%[1]s/32]
metrics_listen: %[2]q
unwrap:
  - name: web
    network: tcp
    listen: %[3]q
    accept: [ppv1, ppv2]
    to: %[4]q
  - name: game
    network: udp
    listen: %[5]q
    accept: [spp]
    to: %[6]q
  - name: down
    network: tcp
    listen: %[7]q
    accept: [ppv2]
    to: %[8]q
`, edgeBack, hostPort(originV4, portAgentUnwrap),
	hostPort(originV4, portUnwrapWeb), hostPort(loopback, portUnwrapWebServer),
	hostPort(originV4, portUnwrapGame), hostPort(loopback, portUnwrapGameServer),
	hostPort(originV4, portUnwrapDown), hostPort(loopback, portUnwrapDownServer))

var loopback = netip.MustParseAddr("127.0.0.1")

// startUnwrap starts, in the origin, the plain servers on loopback and
// `realip-agent unwrap` in front of them, and waits until the agent serves
// its metrics (it does once every relay and its routing are up).
func (s *stack) startUnwrap(t *testing.T, agentBin string) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := s.origin.Do(func() (err error) {
		if ln, err = net.Listen("tcp", hostPort(loopback, portUnwrapWebServer)); err != nil {
			return err
		}
		if pc, err = net.ListenPacket("udp", hostPort(loopback, portUnwrapGameServer)); err != nil {
			ln.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("servers behind the unwrap agent: %v", err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go serveTCP(ln)
	go serveUDP(pc)

	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte(unwrapConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	p := s.origin.Start(t, agentBin, "unwrap", "-config", path)
	waitOutput(t, p, `msg="serving metrics"`)
}

// viaUnwrap sends one of each kind of unwrap traffic: a TCP connection and
// a UDP flow through the edge and the agent to the plain servers, which
// must see the client; a connection to the entry whose server is down,
// which the agent resets; a malformed header straight to the agent.
func (s *stack) viaUnwrap(t *testing.T) {
	t.Helper()
	s.viaTCP(t, ruleUnwrapWeb)
	s.viaUDP(t, ruleUnwrapGame)
	s.wantClosed(t, ruleUnwrapDown, "unwrap, its server down")
	s.malformedTo(t, portUnwrapWeb)
}
