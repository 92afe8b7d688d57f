//go:build linux

package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DefaultConfigPath is where the packages install the configuration.
const DefaultConfigPath = "/etc/realip/agent.yaml"

// Defaults of the configuration file's fields.
const (
	DefaultMetricsListen = "127.0.0.1:9788"
	DefaultProcfs        = "/proc"
)

// DefaultKinds are the TCP option kinds read as TOA unless the file says
// otherwise: 200 (EdgeOne, Tencent), 253 (Tencent's IPv6 client on an IPv4
// origin), 254 (LVS, DPVS, Huawei, Volcengine).
var DefaultKinds = []uint8{200, 253, 254}

// Limits of the module (kmod/toa.h).
const (
	maxPrefixes  = 256
	maxConfigStr = 8192
)

// ReceiverKind names a TOA receiver: the configuration's receiver field.
type ReceiverKind string

// The receivers, and auto, which picks one from what the machine offers.
const (
	ReceiverAuto ReceiverKind = "auto"
	ReceiverKmod ReceiverKind = "kmod" // realip's toa.ko
	ReceiverEBPF ReceiverKind = "ebpf" // package toarecv
)

// Config is the agent's configuration file, /etc/realip/agent.yaml:
//
//	# TOA receiver: auto, kmod (toa.ko) or ebpf (no module).
//	receiver: auto
//	# cgroup v2 folder the eBPF receiver attaches to; empty: the root of
//	# the cgroup v2 mount (every process).
//	cgroup: ""
//	# toa.ko to load; empty: search the running kernel's module folders
//	# (/lib/modules/$(uname -r)/{updates/dkms,extra,updates,kernel}).
//	module_path: ""
//	# Source prefixes (the edges) whose TOA options are honoured. Empty:
//	# every source, so anyone who reaches this host can forge addresses.
//	trusted: [198.51.100.0/24, 2001:db8::/32]
//	# TCP option kinds read as TOA.
//	kinds: [200, 253, 254]
//	# host:port for Prometheus /metrics; "" turns the endpoint off.
//	metrics_listen: 127.0.0.1:9788
//	# Export the module's counters per CPU (label cpu) instead of summed.
//	metrics_per_cpu: false
//	# procfs mount point (where net/toa_stats is read).
//	procfs: /proc
//
// Unknown fields are errors; a bad value is one error naming the field,
// and nothing of the file is applied.
type Config struct {
	Receiver      ReceiverKind
	Cgroup        string
	ModulePath    string
	Trusted       []netip.Prefix
	Kinds         []uint8
	MetricsListen string
	MetricsPerCPU bool
	Procfs        string
	// Unwrap are the transparent relays (see UnwrapEntry); UnwrapRouting
	// the routing their sockets use.
	Unwrap        []UnwrapEntry
	UnwrapRouting UnwrapRouting
}

// DefaultConfig is the configuration of an empty file.
func DefaultConfig() Config {
	return Config{
		Receiver:      ReceiverAuto,
		Kinds:         slices.Clone(DefaultKinds),
		MetricsListen: DefaultMetricsListen,
		Procfs:        DefaultProcfs,
	}
}

// Warnings returns what is allowed but dangerous in c.
func (c Config) Warnings() []string {
	var w []string
	if len(c.Trusted) == 0 {
		w = append(w, "trusted is empty: the receiver honours TOA options from every source, so anyone who can reach this host can forge client addresses; list the prefixes of your L4 edges")
	}
	if c.Receiver == ReceiverKmod && c.Cgroup != "" {
		w = append(w, "cgroup is set but receiver is kmod: toa.ko serves every process and the cgroup is not used")
	}
	return w
}

// ModuleParams is the parameter string the module is loaded with, so that
// it starts with the file's trust list even before the agent's netlink
// push: "trusted=198.51.100.0/24,2001:db8::/32 kinds=200,253,254".
func (c Config) ModuleParams() string {
	var parts []string
	if t := c.TrustedString(); t != "" {
		parts = append(parts, "trusted="+t)
	}
	if k := c.KindsString(); k != "" {
		parts = append(parts, "kinds="+k)
	}
	return strings.Join(parts, " ")
}

// ModprobeConf renders /etc/modprobe.d/toa.conf for cfg: the options the
// module gets when it is loaded without the agent (at boot through
// /etc/modules-load.d/toa.conf, or by modprobe).
func ModprobeConf(cfg Config, from string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `realip-agent modprobe-conf` from %s.\n", from)
	b.WriteString("# Options of toa.ko when it is loaded without the agent (at boot through\n")
	b.WriteString("# /etc/modules-load.d/toa.conf, or by modprobe); the agent sets the same\n")
	b.WriteString("# values over netlink when it runs.\n")
	if len(cfg.Trusted) == 0 {
		b.WriteString("# WARNING: no trusted prefixes: TOA options from every source are honoured.\n")
	}
	fmt.Fprintf(&b, "options toa %s\n", cfg.ModuleParams())
	return b.String()
}

// TrustedString is the module's form of the trusted list.
func (c Config) TrustedString() string {
	s := make([]string, len(c.Trusted))
	for i, p := range c.Trusted {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// KindsString is the module's form of the kinds.
func (c Config) KindsString() string {
	s := make([]string, len(c.Kinds))
	for i, k := range c.Kinds {
		s[i] = strconv.Itoa(int(k))
	}
	return strings.Join(s, ",")
}

// ConfigError is a bad configuration file: the field, the line and what
// is wrong with it.
type ConfigError struct {
	File  string // may be empty
	Line  int    // 0 if unknown
	Field string // e.g. "trusted[2]"; empty for the file as a whole
	Msg   string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.File != "" {
		b.WriteString(" " + e.File)
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, ", line %d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LoadConfig reads and checks the configuration file at path.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, &ConfigError{File: path, Msg: err.Error()}
	}
	cfg, err := ParseConfig(b)
	var ce *ConfigError
	if errors.As(err, &ce) {
		ce.File = path
	}
	return cfg, err
}

var configFields = []string{"receiver", "cgroup", "module_path", "trusted", "kinds", "metrics_listen", "metrics_per_cpu", "procfs", "unwrap", "unwrap_routing"}

// ParseConfig parses and checks a configuration file's content; fields
// left out keep their defaults (DefaultConfig). Errors are *ConfigError.
func ParseConfig(b []byte) (Config, error) {
	cfg := DefaultConfig()
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, nil // empty file: defaults
		}
		return Config{}, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return Config{}, &ConfigError{Line: extra.Line, Msg: "more than one YAML document"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if isNull(root) {
		return cfg, nil
	}
	if root.Kind != yaml.MappingNode {
		return Config{}, &ConfigError{Line: root.Line, Msg: "want a mapping of fields (" + strings.Join(configFields, ", ") + ")"}
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return Config{}, &ConfigError{Line: k.Line, Msg: "field names must be plain strings"}
		}
		name := k.Value
		if line, dup := seen[name]; dup {
			return Config{}, &ConfigError{Line: k.Line, Field: name, Msg: fmt.Sprintf("given twice (first on line %d)", line)}
		}
		seen[name] = k.Line
		if err := parseField(&cfg, k, v); err != nil {
			if err.Field == "" {
				err.Field = name
			}
			return Config{}, err
		}
	}
	if err := finishUnwrap(&cfg); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// parseField parses the value v of the field named by k into cfg.
func parseField(cfg *Config, k, v *yaml.Node) *ConfigError {
	var err *ConfigError
	switch name := k.Value; name {
	case "receiver":
		cfg.Receiver, err = parseReceiver(v)
	case "cgroup":
		err = parsePath(v, name, &cfg.Cgroup, true)
	case "module_path":
		err = parsePath(v, name, &cfg.ModulePath, true)
	case "trusted":
		cfg.Trusted, err = parseTrusted(v)
	case "kinds":
		cfg.Kinds, err = parseKinds(v)
	case "metrics_listen":
		err = parseListen(v, &cfg.MetricsListen)
	case "metrics_per_cpu":
		err = parseBool(v, name, &cfg.MetricsPerCPU)
	case "procfs":
		err = parsePath(v, name, &cfg.Procfs, false)
	case "unwrap":
		cfg.Unwrap, err = parseUnwrap(v)
	case "unwrap_routing":
		cfg.UnwrapRouting, err = parseRouting(v)
	default:
		return &ConfigError{Line: k.Line, Field: name, Msg: "unknown field (known: " + strings.Join(configFields, ", ") + ")"}
	}
	return err
}

func yamlError(err error) *ConfigError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, after
			}
		}
	}
	return &ConfigError{Line: line, Msg: "not valid YAML: " + msg}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func parseString(v *yaml.Node, field string) (string, *ConfigError) {
	if isNull(v) {
		return "", nil
	}
	if v.Kind != yaml.ScalarNode || v.Tag != "!!str" {
		return "", &ConfigError{Line: v.Line, Field: field, Msg: "want a string, got " + kindName(v)}
	}
	return v.Value, nil
}

func parsePath(v *yaml.Node, field string, dst *string, emptyOK bool) *ConfigError {
	s, err := parseString(v, field)
	if err != nil {
		return err
	}
	if s == "" {
		if !emptyOK {
			return &ConfigError{Line: v.Line, Field: field, Msg: "must not be empty"}
		}
		*dst = ""
		return nil
	}
	if !filepath.IsAbs(s) {
		return &ConfigError{Line: v.Line, Field: field, Msg: fmt.Sprintf("%q is not an absolute path", s)}
	}
	*dst = filepath.Clean(s)
	return nil
}

func parseReceiver(v *yaml.Node) (ReceiverKind, *ConfigError) {
	const want = "want auto, kmod (toa.ko) or ebpf (the eBPF receiver)"
	if v.Kind != yaml.ScalarNode || v.Tag != "!!str" {
		return "", &ConfigError{Line: v.Line, Field: "receiver", Msg: want + ", got " + kindName(v)}
	}
	switch r := ReceiverKind(v.Value); r {
	case ReceiverAuto, ReceiverKmod, ReceiverEBPF:
		return r, nil
	}
	return "", &ConfigError{Line: v.Line, Field: "receiver", Msg: fmt.Sprintf("%s, got %q", want, v.Value)}
}

func parseBool(v *yaml.Node, field string, dst *bool) *ConfigError {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
		return &ConfigError{Line: v.Line, Field: field, Msg: "want true or false, got " + kindName(v)}
	}
	var b bool
	if err := v.Decode(&b); err != nil {
		return &ConfigError{Line: v.Line, Field: field, Msg: err.Error()}
	}
	*dst = b
	return nil
}

func parseListen(v *yaml.Node, dst *string) *ConfigError {
	s, err := parseString(v, "metrics_listen")
	if err != nil {
		return err
	}
	if s == "" {
		*dst = ""
		return nil
	}
	_, port, perr := net.SplitHostPort(s)
	if perr != nil {
		return &ConfigError{Line: v.Line, Msg: fmt.Sprintf("%q is not host:port (e.g. 127.0.0.1:9788, [::1]:9788, :9788): %v", s, stripAddrErr(perr))}
	}
	if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
		return &ConfigError{Line: v.Line, Msg: fmt.Sprintf("%q: port %q is not a number 0..65535", s, port)}
	}
	*dst = s
	return nil
}

func stripAddrErr(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return err.Error()
}

func parseTrusted(v *yaml.Node) ([]netip.Prefix, *ConfigError) {
	if isNull(v) {
		return nil, nil
	}
	if v.Kind != yaml.SequenceNode {
		return nil, &ConfigError{Line: v.Line, Field: "trusted", Msg: "want a list of prefixes (e.g. [198.51.100.0/24, 2001:db8::/32]), got " + kindName(v)}
	}
	if len(v.Content) > maxPrefixes {
		return nil, &ConfigError{Line: v.Line, Field: "trusted", Msg: fmt.Sprintf("%d prefixes; the module holds at most %d", len(v.Content), maxPrefixes)}
	}
	out := make([]netip.Prefix, 0, len(v.Content))
	where := make(map[netip.Prefix]int)
	for i, item := range v.Content {
		field := fmt.Sprintf("trusted[%d]", i)
		if item.Kind != yaml.ScalarNode || item.Tag != "!!str" {
			return nil, &ConfigError{Line: item.Line, Field: field, Msg: "want a prefix such as 198.51.100.0/24 or an address, got " + kindName(item)}
		}
		p, msg := parsePrefix(strings.TrimSpace(item.Value))
		if msg != "" {
			return nil, &ConfigError{Line: item.Line, Field: field, Msg: msg}
		}
		if j, dup := where[p]; dup {
			return nil, &ConfigError{Line: item.Line, Field: field, Msg: fmt.Sprintf("%s is listed twice (also trusted[%d])", p, j)}
		}
		where[p] = i
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, nil
	}
	c := Config{Trusted: out}
	if len(c.TrustedString()) >= maxConfigStr {
		return nil, &ConfigError{Line: v.Line, Field: "trusted", Msg: fmt.Sprintf("the list is longer than the module's %d characters", maxConfigStr-1)}
	}
	return out, nil
}

// parsePrefix parses a trusted prefix strictly: host bits must be zero
// (a typo in a trust list should not silently widen or move it), an
// address alone is a single host, no zones, no IPv4-mapped IPv6.
func parsePrefix(s string) (netip.Prefix, string) {
	if s == "" {
		return netip.Prefix{}, "empty prefix"
	}
	var p netip.Prefix
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, fmt.Sprintf("%q is not an IP address or prefix", s)
		}
		if a.Zone() != "" {
			return p, fmt.Sprintf("%q: addresses with a zone cannot be trusted prefixes", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	} else {
		var err error
		p, err = netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Sprintf("%q is not a prefix: %v", s, strings.TrimPrefix(err.Error(), "netip.ParsePrefix("+strconv.Quote(s)+"): "))
		}
		if m := p.Masked(); m != p {
			return p, fmt.Sprintf("%s has host bits set (did you mean %s?)", s, m)
		}
	}
	if p.Addr().Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			return p, fmt.Sprintf("%s: write IPv4 prefixes as IPv4", s)
		}
		return p, fmt.Sprintf("%s: write IPv4 prefixes as IPv4 (%s)", s, netip.PrefixFrom(p.Addr().Unmap(), bits))
	}
	return p, ""
}

func parseKinds(v *yaml.Node) ([]uint8, *ConfigError) {
	if v.Kind != yaml.SequenceNode {
		return nil, &ConfigError{Line: v.Line, Field: "kinds", Msg: "want a list of TCP option kinds (e.g. [200, 253, 254]), got " + kindName(v)}
	}
	if len(v.Content) == 0 {
		return nil, &ConfigError{Line: v.Line, Field: "kinds", Msg: "must list at least one option kind (default [200, 253, 254])"}
	}
	out := make([]uint8, 0, len(v.Content))
	for i, item := range v.Content {
		field := fmt.Sprintf("kinds[%d]", i)
		if item.Kind != yaml.ScalarNode || item.Tag != "!!int" {
			return nil, &ConfigError{Line: item.Line, Field: field, Msg: "want a number 2..255, got " + kindName(item)}
		}
		n, err := strconv.ParseInt(item.Value, 0, 64)
		if err != nil || n < 2 || n > 255 {
			return nil, &ConfigError{Line: item.Line, Field: field, Msg: fmt.Sprintf("%s is not a TCP option kind that can carry an address (2..255)", item.Value)}
		}
		if slices.Contains(out, uint8(n)) {
			return nil, &ConfigError{Line: item.Line, Field: field, Msg: fmt.Sprintf("kind %d is listed twice", n)}
		}
		out = append(out, uint8(n))
	}
	return out, nil
}
