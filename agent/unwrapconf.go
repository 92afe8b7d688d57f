//go:build linux

package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/realip/realip/agent/unwrap"
	"github.com/realip/realip/internal/tproute"
	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// UnwrapEntry is one entry of the configuration's unwrap list: a relay
// that takes connections or datagrams wrapped in PROXY protocol or SPP
// from the edges and hands them to a local server from the client's own
// address (package unwrap):
//
//	unwrap:
//	  - name: web                  # metric label; default NETWORK-PORT
//	    listen: 203.0.113.10:80    # where the edge connects
//	    network: tcp               # tcp or udp
//	    accept: [ppv1, ppv2]       # tcp: ppv1, ppv2; udp: spp, ppv2
//	    to: 127.0.0.1:8080         # the server; or a list, one per family:
//	                               # [127.0.0.1:8080, "[::1]:8080"]
//	    trusted: [198.51.100.0/24] # default: the top-level trusted
//	    untrusted: drop            # drop, or ignore (serve the peer as itself)
//	    framing: every-datagram    # udp ppv2: every-datagram or first-datagram
//	    max_conns: 4096            # tcp: live connections
//	    max_flows: 4096            # udp: live flows (least active evicted)
//	    idle_timeout: 2m           # udp: a flow with no datagram expires
//	    header_timeout: 5s         # tcp: wait for the header
type UnwrapEntry struct {
	Name  string
	Entry unwrap.Entry
	// trustedSet tells whether the entry has its own trusted list.
	trustedSet bool
}

// UnwrapRouting is the configuration's unwrap_routing: the rule priority,
// route table and socket mark the transparent sockets use (package
// internal/tproute); zero fields take tproute's defaults.
type UnwrapRouting struct {
	Table, Priority, Mark uint32
}

var unwrapFields = []string{"name", "listen", "network", "accept", "to", "trusted", "untrusted",
	"framing", "max_conns", "max_flows", "idle_timeout", "header_timeout"}

// parseUnwrap parses the unwrap list.
func parseUnwrap(v *yaml.Node) ([]UnwrapEntry, *ConfigError) {
	if isNull(v) || v.Kind == yaml.SequenceNode && len(v.Content) == 0 {
		return nil, nil
	}
	if v.Kind != yaml.SequenceNode {
		return nil, &ConfigError{Line: v.Line, Field: "unwrap", Msg: "want a list of entries, got " + kindName(v)}
	}
	out := make([]UnwrapEntry, 0, len(v.Content))
	for i, item := range v.Content {
		e, err := parseUnwrapEntry(item, i)
		if err != nil {
			return nil, err
		}
		if err := checkUnique(out, e, i, item.Line); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// checkUnique refuses an entry whose name or listening socket an earlier
// entry has.
func checkUnique(prev []UnwrapEntry, e UnwrapEntry, i, line int) *ConfigError {
	for j, p := range prev {
		if p.Entry.Network == e.Entry.Network && p.Entry.Listen == e.Entry.Listen {
			return &ConfigError{Line: line, Field: fmt.Sprintf("unwrap[%d].listen", i), Msg: fmt.Sprintf("%s %s is also unwrap[%d]'s", e.Entry.Network, e.Entry.Listen, j)}
		}
		if p.Name == e.Name {
			return &ConfigError{Line: line, Field: fmt.Sprintf("unwrap[%d].name", i), Msg: fmt.Sprintf("%q is also the name of unwrap[%d]", e.Name, j)}
		}
	}
	return nil
}

// parseUnwrapEntry parses unwrap[i].
func parseUnwrapEntry(v *yaml.Node, i int) (UnwrapEntry, *ConfigError) {
	prefix := fmt.Sprintf("unwrap[%d]", i)
	if v.Kind != yaml.MappingNode {
		return UnwrapEntry{}, &ConfigError{Line: v.Line, Field: prefix, Msg: "want a mapping (" + strings.Join(unwrapFields, ", ") + "), got " + kindName(v)}
	}
	var e UnwrapEntry
	seen := map[string]bool{}
	for j := 0; j+1 < len(v.Content); j += 2 {
		k, val := v.Content[j], v.Content[j+1]
		if seen[k.Value] {
			return e, &ConfigError{Line: k.Line, Field: prefix + "." + k.Value, Msg: "given twice"}
		}
		seen[k.Value] = true
		if err := parseUnwrapField(&e, k, val); err != nil {
			sub := k.Value
			if err.Field != "" {
				sub = err.Field // e.g. trusted[2]
			}
			err.Field = prefix + "." + sub
			if err.Line == 0 {
				err.Line = k.Line
			}
			return e, err
		}
	}
	if err := finishUnwrapEntry(&e, prefix, v.Line); err != nil {
		return e, err
	}
	return e, nil
}

// parseUnwrapField parses one field of an entry; the caller names it.
func parseUnwrapField(e *UnwrapEntry, k, v *yaml.Node) *ConfigError {
	en := &e.Entry
	switch k.Value {
	case "name":
		return parseUnwrapName(v, &e.Name)
	case "listen":
		return parseAddrPort(v, &en.Listen)
	case "network":
		return parseNetwork(v, &en.Network)
	case "accept":
		return parseAccept(v, &en.Accept)
	case "to":
		return parseTo(v, en)
	case "trusted":
		p, err := parseTrusted(v)
		en.Trusted, e.trustedSet = p, true
		return err
	case "untrusted":
		return parseUntrusted(v, &en.Untrusted)
	case "framing":
		return parseFramingField(v, &en.Framing)
	case "max_conns":
		return parseCount(v, &en.MaxConns)
	case "max_flows":
		return parseCount(v, &en.MaxFlows)
	case "idle_timeout":
		return parseDuration(v, &en.Idle)
	case "header_timeout":
		return parseDuration(v, &en.HeaderTimeout)
	}
	return &ConfigError{Line: k.Line, Msg: "unknown field (known: " + strings.Join(unwrapFields, ", ") + ")"}
}

// finishUnwrapEntry checks the fields that must be there and that go
// together, and names the entry if the file did not.
func finishUnwrapEntry(e *UnwrapEntry, prefix string, line int) *ConfigError {
	en := &e.Entry
	for _, f := range []struct {
		name    string
		missing bool
	}{{"listen", !en.Listen.IsValid()}, {"network", en.Network == ""}, {"accept", len(en.Accept) == 0},
		{"to", !en.To.IsValid() && !en.To6.IsValid()}} {
		if f.missing {
			return &ConfigError{Line: line, Field: prefix + "." + f.name, Msg: "missing"}
		}
	}
	for _, p := range en.Accept {
		if !unwrapAccepts(en.Network, p) {
			want := "ppv1, ppv2"
			if en.Network == "udp" {
				want = "spp, ppv2"
			}
			return &ConfigError{Line: line, Field: prefix + ".accept", Msg: fmt.Sprintf("%s is not carried over %s (want %s)", p, en.Network, want)}
		}
	}
	if en.Network == "tcp" && en.Framing != listener.FramingEveryDatagram {
		return &ConfigError{Line: line, Field: prefix + ".framing", Msg: "applies to udp entries only"}
	}
	if e.Name == "" {
		e.Name = fmt.Sprintf("%s-%d", en.Network, en.Listen.Port())
	}
	if err := en.Validate(); err != nil {
		return &ConfigError{Line: line, Field: prefix, Msg: err.Error()}
	}
	return nil
}

func unwrapAccepts(network string, p wire.Proto) bool {
	if network == "tcp" {
		return p == wire.PPv1 || p == wire.PPv2
	}
	return p == wire.SPP || p == wire.PPv2
}

// finishUnwrap gives entries without their own trusted list the file's,
// and refuses an entry that would trust no one.
func finishUnwrap(cfg *Config) *ConfigError {
	for i := range cfg.Unwrap {
		e := &cfg.Unwrap[i]
		if !e.trustedSet {
			e.Entry.Trusted = slices.Clone(cfg.Trusted)
		}
		if len(e.Entry.Trusted) == 0 {
			return &ConfigError{Field: fmt.Sprintf("unwrap[%d].trusted", i),
				Msg: "no trusted edges (neither the entry nor the file lists any): every header would be refused; list your edges' prefixes"}
		}
	}
	return nil
}

func parseUnwrapName(v *yaml.Node, dst *string) *ConfigError {
	s, err := parseString(v, "")
	if err != nil {
		return err
	}
	if s == "" || len(s) > 64 || strings.IndexFunc(s, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) >= 0 {
		return &ConfigError{Line: v.Line, Msg: fmt.Sprintf("%q: want 1..64 of letters, digits, '-', '_', '.'", s)}
	}
	*dst = s
	return nil
}

func parseAddrPort(v *yaml.Node, dst *netip.AddrPort) *ConfigError {
	s, err := parseString(v, "")
	if err != nil {
		return err
	}
	ap, perr := netip.ParseAddrPort(s)
	if perr != nil {
		return &ConfigError{Line: v.Line, Msg: fmt.Sprintf("%q is not address:port (e.g. 203.0.113.10:80, [2001:db8::10]:80)", s)}
	}
	if ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().Is4In6() {
		return &ConfigError{Line: v.Line, Msg: fmt.Sprintf("%q: want a port 1..65535 and a plain IPv4 or IPv6 address", s)}
	}
	*dst = ap
	return nil
}

func parseNetwork(v *yaml.Node, dst *string) *ConfigError {
	s, err := parseString(v, "")
	if err != nil {
		return err
	}
	if s != "tcp" && s != "udp" {
		return &ConfigError{Line: v.Line, Msg: fmt.Sprintf("%q: want tcp or udp", s)}
	}
	*dst = s
	return nil
}

func parseAccept(v *yaml.Node, dst *[]wire.Proto) *ConfigError {
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		return &ConfigError{Line: v.Line, Msg: "want a list of ppv1, ppv2, spp (e.g. [ppv2]), got " + kindName(v)}
	}
	var out []wire.Proto
	for _, item := range v.Content {
		p, err := wire.ParseProto(item.Value)
		if err != nil || item.Kind != yaml.ScalarNode || p == wire.None || p == wire.TOA {
			return &ConfigError{Line: item.Line, Msg: fmt.Sprintf("%q: want ppv1, ppv2 or spp", item.Value)}
		}
		if slices.Contains(out, p) {
			return &ConfigError{Line: item.Line, Msg: fmt.Sprintf("%s is listed twice", p)}
		}
		out = append(out, p)
	}
	*dst = out
	return nil
}

// parseTo parses to: one address:port, or a list of one per family.
func parseTo(v *yaml.Node, e *unwrap.Entry) *ConfigError {
	items := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		items = v.Content
	}
	if len(items) == 0 || len(items) > 2 {
		return &ConfigError{Line: v.Line, Msg: "want address:port, or a list of one IPv4 and one IPv6 address:port"}
	}
	for _, item := range items {
		var ap netip.AddrPort
		if err := parseAddrPort(item, &ap); err != nil {
			return err
		}
		if !ap.Addr().IsLoopback() {
			return &ConfigError{Line: item.Line, Msg: fmt.Sprintf("%s is not a loopback address: the server's replies to client addresses are routed back to the agent only from 127.0.0.0/8 and ::1 (a server listening on 0.0.0.0 or :: is reachable there too)", ap)}
		}
		dst := &e.To
		if ap.Addr().Is6() {
			dst = &e.To6
		}
		if dst.IsValid() {
			return &ConfigError{Line: item.Line, Msg: "two addresses of one family; give one IPv4 and/or one IPv6 address"}
		}
		*dst = ap
	}
	return nil
}

func parseUntrusted(v *yaml.Node, dst *listener.UntrustedAction) *ConfigError {
	s, err := parseString(v, "")
	if err != nil {
		return err
	}
	switch s {
	case "drop":
		*dst = listener.UntrustedDrop
	case "ignore":
		*dst = listener.UntrustedIgnore
	default:
		return &ConfigError{Line: v.Line, Msg: fmt.Sprintf("%q: want drop (close or drop what an untrusted peer sends with a header) or ignore (strip the header, relay from the peer's own address)", s)}
	}
	return nil
}

func parseFramingField(v *yaml.Node, dst *listener.Framing) *ConfigError {
	s, err := parseString(v, "")
	if err != nil {
		return err
	}
	f, ferr := listener.ParseFraming(s)
	if ferr != nil {
		return &ConfigError{Line: v.Line, Msg: fmt.Sprintf("%q: want every-datagram or first-datagram (how the edge sends PROXY v2 over UDP)", s)}
	}
	*dst = f
	return nil
}

func parseCount(v *yaml.Node, dst *int) *ConfigError {
	n, err := strconv.Atoi(v.Value)
	if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || err != nil || n < 1 || n > 1<<20 {
		return &ConfigError{Line: v.Line, Msg: "want a number 1..1048576, got " + kindName(v)}
	}
	*dst = n
	return nil
}

func parseDuration(v *yaml.Node, dst *time.Duration) *ConfigError {
	d, err := time.ParseDuration(v.Value)
	if v.Kind != yaml.ScalarNode || err != nil || d < time.Second || d > 24*time.Hour {
		return &ConfigError{Line: v.Line, Msg: "want a duration 1s..24h such as 30s or 2m, got " + kindName(v)}
	}
	*dst = d
	return nil
}

// parseRouting parses unwrap_routing: {table, priority, mark}.
func parseRouting(v *yaml.Node) (UnwrapRouting, *ConfigError) {
	var r UnwrapRouting
	if v.Kind != yaml.MappingNode {
		return r, &ConfigError{Line: v.Line, Field: "unwrap_routing", Msg: "want a mapping of table, priority, mark, got " + kindName(v)}
	}
	for j := 0; j+1 < len(v.Content); j += 2 {
		k, val := v.Content[j], v.Content[j+1]
		n, err := strconv.ParseUint(val.Value, 0, 32)
		field := "unwrap_routing." + k.Value
		if val.Kind != yaml.ScalarNode || val.Tag != "!!int" || err != nil || n == 0 {
			return r, &ConfigError{Line: val.Line, Field: field, Msg: "want a number 1..4294967295, got " + kindName(val)}
		}
		switch k.Value {
		case "table":
			if n >= 253 && n <= 255 {
				return r, &ConfigError{Line: val.Line, Field: field, Msg: fmt.Sprintf("%d is one of the kernel's own tables (default, main, local)", n)}
			}
			r.Table = uint32(n)
		case "priority":
			if n > 32765 {
				return r, &ConfigError{Line: val.Line, Field: field, Msg: fmt.Sprintf("%d: want 1..32765 (the main table's rule is 32766, and a rule after it never sees the replies)", n)}
			}
			r.Priority = uint32(n)
		case "mark":
			r.Mark = uint32(n)
		default:
			return r, &ConfigError{Line: k.Line, Field: field, Msg: "unknown field (known: table, priority, mark)"}
		}
	}
	return r, nil
}

// tprouteConfig is the routing the transparent sockets of cfg need.
func (r UnwrapRouting) tprouteConfig() tproute.Config {
	return tproute.Config{Table: r.Table, Priority: r.Priority, Mark: r.Mark}.WithDefaults()
}
