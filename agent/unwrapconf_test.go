//go:build linux

package agent

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/realip/realip/agent/unwrap"
	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

func TestParseUnwrap(t *testing.T) {
	in := `
trusted: [198.51.100.0/24]
unwrap:
  - listen: 203.0.113.10:80
    network: tcp
    accept: [ppv1, ppv2]
    to: 127.0.0.1:8080
  - name: game
    listen: "[2001:db8::10]:7000"
    network: udp
    accept: [spp, ppv2]
    to: [127.0.0.1:7000, "[::1]:7000"]
    trusted: [203.0.113.0/24]
    untrusted: ignore
    framing: first-datagram
    max_flows: 100
    idle_timeout: 30s
unwrap_routing: {table: 300, priority: 90, mark: 0x52}
`
	cfg, err := ParseConfig([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	edge := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	want := []UnwrapEntry{
		{Name: "tcp-80", Entry: unwrap.Entry{Network: "tcp", Listen: netip.MustParseAddrPort("203.0.113.10:80"),
			To: netip.MustParseAddrPort("127.0.0.1:8080"), Accept: []wire.Proto{wire.PPv1, wire.PPv2}, Trusted: edge}},
		{Name: "game", trustedSet: true, Entry: unwrap.Entry{Network: "udp", Listen: netip.MustParseAddrPort("[2001:db8::10]:7000"),
			To: netip.MustParseAddrPort("127.0.0.1:7000"), To6: netip.MustParseAddrPort("[::1]:7000"),
			Accept: []wire.Proto{wire.SPP, wire.PPv2}, Trusted: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
			Untrusted: listener.UntrustedIgnore, Framing: listener.FramingFirstDatagram, MaxFlows: 100, Idle: 30 * time.Second}},
	}
	if !reflect.DeepEqual(cfg.Unwrap, want) {
		t.Errorf("unwrap:\n got %+v\nwant %+v", cfg.Unwrap, want)
	}
	if r := (UnwrapRouting{Table: 300, Priority: 90, Mark: 0x52}); cfg.UnwrapRouting != r {
		t.Errorf("unwrap_routing: %+v, want %+v", cfg.UnwrapRouting, r)
	}
}

// TestParseUnwrapErrors: every mistake is one error naming the entry and
// the field, with the line.
func TestParseUnwrapErrors(t *testing.T) {
	const head = "trusted: [198.51.100.0/24]\nunwrap:\n"
	const ok = "  - {listen: 203.0.113.10:80, network: tcp, accept: [ppv2], to: 127.0.0.1:8080}\n"
	for _, tc := range []struct{ name, in, field, msg string }{
		{"not a list", "trusted: [198.51.100.0/24]\nunwrap: yes\n", "unwrap", "want a list"},
		{"unknown field", head + "  - {listen: 203.0.113.10:80, network: tcp, accept: [ppv2], to: 127.0.0.1:8080, colour: red}\n", "unwrap[0].colour", "unknown field"},
		{"no listen", head + "  - {network: tcp, accept: [ppv2], to: 127.0.0.1:8080}\n", "unwrap[0].listen", "missing"},
		{"bad listen", head + "  - {listen: 203.0.113.10, network: tcp, accept: [ppv2], to: 127.0.0.1:8080}\n", "unwrap[0].listen", "not address:port"},
		{"port 0", head + "  - {listen: 203.0.113.10:0, network: tcp, accept: [ppv2], to: 127.0.0.1:8080}\n", "unwrap[0].listen", "port 1..65535"},
		{"bad network", head + "  - {listen: 203.0.113.10:80, network: sctp, accept: [ppv2], to: 127.0.0.1:8080}\n", "unwrap[0].network", "tcp or udp"},
		{"spp over tcp", head + "  - {listen: 203.0.113.10:80, network: tcp, accept: [spp], to: 127.0.0.1:8080}\n", "unwrap[0].accept", "spp is not carried over tcp"},
		{"ppv1 over udp", head + "  - {listen: 203.0.113.10:80, network: udp, accept: [ppv1], to: 127.0.0.1:8080}\n", "unwrap[0].accept", "ppv1 is not carried over udp"},
		{"toa", head + "  - {listen: 203.0.113.10:80, network: tcp, accept: [toa], to: 127.0.0.1:8080}\n", "unwrap[0].accept", "want ppv1, ppv2 or spp"},
		{"accept twice", head + "  - {listen: 203.0.113.10:80, network: tcp, accept: [ppv2, ppv2], to: 127.0.0.1:8080}\n", "unwrap[0].accept", "twice"},
		{"no to", head + "  - {listen: 203.0.113.10:80, network: tcp, accept: [ppv2]}\n", "unwrap[0].to", "missing"},
		{"to not loopback", head + "  - {listen: 203.0.113.10:80, network: tcp, accept: [ppv2], to: 192.0.2.1:8080}\n", "unwrap[0].to", "not a loopback address"},
		{"to twice v4", head + "  - {listen: 203.0.113.10:80, network: tcp, accept: [ppv2], to: [127.0.0.1:1, 127.0.0.2:1]}\n", "unwrap[0].to", "two addresses of one family"},
		{"framing on tcp", head + "  - {listen: 203.0.113.10:80, network: tcp, accept: [ppv2], to: 127.0.0.1:8080, framing: first}\n", "unwrap[0].framing", "udp entries only"},
		{"bad framing", head + "  - {listen: 203.0.113.10:80, network: udp, accept: [ppv2], to: 127.0.0.1:8080, framing: sometimes}\n", "unwrap[0].framing", "every-datagram or first-datagram"},
		{"bad untrusted", head + "  - {listen: 203.0.113.10:80, network: tcp, accept: [ppv2], to: 127.0.0.1:8080, untrusted: allow}\n", "unwrap[0].untrusted", "want drop"},
		{"bad idle", head + "  - {listen: 203.0.113.10:80, network: udp, accept: [spp], to: 127.0.0.1:8080, idle_timeout: 10ms}\n", "unwrap[0].idle_timeout", "1s..24h"},
		{"bad max_flows", head + "  - {listen: 203.0.113.10:80, network: udp, accept: [spp], to: 127.0.0.1:8080, max_flows: 0}\n", "unwrap[0].max_flows", "1..1048576"},
		{"bad trusted", head + "  - {listen: 203.0.113.10:80, network: tcp, accept: [ppv2], to: 127.0.0.1:8080, trusted: [10.0.0.1/8]}\n", "unwrap[0].trusted[0]", "host bits"},
		{"bad name", head + "  - {name: 'a b', listen: 203.0.113.10:80, network: tcp, accept: [ppv2], to: 127.0.0.1:8080}\n", "unwrap[0].name", "letters, digits"},
		{"same listen", head + ok + ok, "unwrap[1].listen", "also unwrap[0]'s"},
		{"same name", head + ok + "  - {name: tcp-80, listen: 203.0.113.10:81, network: tcp, accept: [ppv2], to: 127.0.0.1:8080}\n", "unwrap[1].name", "also the name of unwrap[0]"},
		{"no one trusted", "unwrap:\n" + ok, "unwrap[0].trusted", "no trusted edges"},
		{"routing table", "unwrap_routing: {table: 254}\n", "unwrap_routing.table", "kernel's own tables"},
		{"routing field", "unwrap_routing: {tabel: 5}\n", "unwrap_routing.tabel", "unknown field"},
		{"routing zero", "unwrap_routing: {mark: 0}\n", "unwrap_routing.mark", "1..4294967295"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.in))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *ConfigError", err)
			}
			if ce.Field != tc.field || !strings.Contains(ce.Msg, tc.msg) {
				t.Errorf("got field %q msg %q, want field %q msg containing %q", ce.Field, ce.Msg, tc.field, tc.msg)
			}
			if ce.Line == 0 && tc.field != "unwrap[0].trusted" {
				t.Errorf("no line number: %v", err)
			}
		})
	}
}
