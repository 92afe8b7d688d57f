//go:build linux

package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseConfigDefaults(t *testing.T) {
	for _, in := range []string{"", "\n", "# only a comment\n", "---\n", "~\n"} {
		cfg, err := ParseConfig([]byte(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if !reflect.DeepEqual(cfg, DefaultConfig()) {
			t.Errorf("%q: %+v, want defaults %+v", in, cfg, DefaultConfig())
		}
	}
	d := DefaultConfig()
	if d.Receiver != ReceiverAuto || d.Cgroup != "" || d.ModulePath != "" || d.Trusted != nil || d.KindsString() != "200,253,254" ||
		d.MetricsListen != "127.0.0.1:9788" || d.MetricsPerCPU || d.Procfs != "/proc" {
		t.Errorf("defaults changed: %+v", d)
	}
	if w := d.Warnings(); len(w) != 1 || !strings.Contains(w[0], "forge") {
		t.Errorf("defaults should warn about the empty trust list: %q", w)
	}
}

func TestParseConfigFull(t *testing.T) {
	in := `
# realip-agent
receiver: ebpf
cgroup: /sys/fs/cgroup/system.slice/nginx.service/
module_path: /opt/realip/toa.ko
trusted:
  - 198.51.100.0/24
  - 203.0.113.7        # a single edge
  - 2001:db8::/32
kinds: [200, 254]
metrics_listen: "[::1]:9100"
metrics_per_cpu: true
procfs: /host/proc/
`
	cfg, err := ParseConfig([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Receiver:   ReceiverEBPF,
		Cgroup:     "/sys/fs/cgroup/system.slice/nginx.service",
		ModulePath: "/opt/realip/toa.ko",
		Trusted: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"),
			netip.MustParsePrefix("203.0.113.7/32"), netip.MustParsePrefix("2001:db8::/32")},
		Kinds:         []uint8{200, 254},
		MetricsListen: "[::1]:9100",
		MetricsPerCPU: true,
		Procfs:        "/host/proc",
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Errorf("warnings %q", w)
	}
	if p := cfg.ModuleParams(); p != "trusted=198.51.100.0/24,203.0.113.7/32,2001:db8::/32 kinds=200,254" {
		t.Errorf("ModuleParams = %q", p)
	}
	// Fields that switch things off.
	cfg, err = ParseConfig([]byte("trusted: []\nmetrics_listen: \"\"\nmodule_path: \"\"\n"))
	if err != nil || cfg.MetricsListen != "" || cfg.Trusted != nil || cfg.ModulePath != "" {
		t.Fatalf("%+v %v", cfg, err)
	}
	if p := cfg.ModuleParams(); p != "kinds=200,253,254" {
		t.Errorf("ModuleParams without trusted = %q", p)
	}
	cfg, err = ParseConfig([]byte("trusted:\n"))
	if err != nil || cfg.Trusted != nil || len(cfg.Warnings()) != 1 {
		t.Fatalf("trusted: null: %+v %v", cfg, err)
	}
	for _, r := range []ReceiverKind{ReceiverAuto, ReceiverKmod, ReceiverEBPF} {
		cfg, err = ParseConfig([]byte("receiver: " + string(r) + "\ncgroup: \"\"\n"))
		if err != nil || cfg.Receiver != r || cfg.Cgroup != "" {
			t.Errorf("receiver %s: %+v %v", r, cfg, err)
		}
	}
	// A cgroup toa.ko would not use is allowed, and warned about.
	cfg, err = ParseConfig([]byte("receiver: kmod\ncgroup: /sys/fs/cgroup/web\ntrusted: [198.51.100.0/24]\n"))
	if w := cfg.Warnings(); err != nil || len(w) != 1 || !strings.Contains(w[0], "cgroup is set but receiver is kmod") {
		t.Errorf("kmod with a cgroup: %v, warnings %q", err, w)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, in    string
		field       string
		line        int
		msgContains string
	}{
		{"unknown field", "trusted: []\ntrustd: [1.2.3.4]\n", "trustd", 2, "unknown field (known: receiver, cgroup, module_path, trusted"},
		{"unknown nested", "metrics:\n  listen: x\n", "metrics", 1, "unknown field"},
		{"duplicate field", "kinds: [200]\nkinds: [254]\n", "kinds", 2, "given twice (first on line 1)"},
		{"not a mapping", "- a\n- b\n", "", 1, "want a mapping"},
		{"scalar document", "hello\n", "", 1, "want a mapping"},
		{"bad yaml", "trusted: [1.2.3.0/24\n", "", 1, "not valid YAML"},
		{"tab indentation", "trusted:\n\t- 1.2.3.0/24\n", "", 2, "not valid YAML"},
		{"two documents", "kinds: [200]\n---\nkinds: [254]\n", "", 2, "more than one YAML document"},
		{"non-string key", "? [a]\n: 1\n", "", 1, "plain strings"},

		{"trusted scalar", "trusted: 198.51.100.0/24\n", "trusted", 1, "want a list of prefixes"},
		{"trusted mapping", "trusted: {a: b}\n", "trusted", 1, "want a list of prefixes"},
		{"trusted garbage", "trusted:\n  - 198.51.100.0/24\n  - edge.example\n", "trusted[1]", 3, `"edge.example" is not an IP address or prefix`},
		{"trusted host bits", "trusted: [198.51.100.7/24]\n", "trusted[0]", 1, "has host bits set (did you mean 198.51.100.0/24?)"},
		{"trusted v6 host bits", "trusted: ['2001:db8::1/32']\n", "trusted[0]", 1, "did you mean 2001:db8::/32?"},
		{"trusted bad length", "trusted: [10.0.0.0/33]\n", "trusted[0]", 1, "is not a prefix"},
		{"trusted number", "trusted: [42]\n", "trusted[0]", 1, "got the number 42"},
		{"trusted nested list", "trusted: [[1.2.3.4]]\n", "trusted[0]", 1, "got a list"},
		{"trusted empty item", "trusted: ['']\n", "trusted[0]", 1, "empty prefix"},
		{"trusted zone", "trusted: ['fe80::1%eth0']\n", "trusted[0]", 1, "zone"},
		{"trusted mapped", "trusted: ['::ffff:198.51.100.0/120']\n", "trusted[0]", 1, "write IPv4 prefixes as IPv4 (198.51.100.0/24)"},
		{"trusted duplicate", "trusted: [198.51.100.0/24, 203.0.113.0/24, 198.51.100.0/24]\n", "trusted[2]", 1, "listed twice (also trusted[0])"},
		{"trusted too long", "trusted: [" + longTrusted(200) + "]\n", "trusted", 1, "longer than the module's 8191 characters"},
		{"trusted too many", "trusted: [" + strings.Repeat("10.0.0.0/8, ", 257) + "]\n", "trusted", 1, "at most 256"},

		{"kinds empty", "kinds: []\n", "kinds", 1, "at least one"},
		{"kinds null", "kinds:\n", "kinds", 1, "want a list of TCP option kinds"},
		{"kinds scalar", "kinds: 200\n", "kinds", 1, "want a list of TCP option kinds"},
		{"kinds 1", "kinds: [200, 1]\n", "kinds[1]", 1, "1 is not a TCP option kind"},
		{"kinds 0", "kinds: [0]\n", "kinds[0]", 1, "0 is not a TCP option kind"},
		{"kinds 256", "kinds: [256]\n", "kinds[0]", 1, "256 is not a TCP option kind"},
		{"kinds negative", "kinds: [-3]\n", "kinds[0]", 1, "-3 is not a TCP option kind"},
		{"kinds string", "kinds: [\"200\"]\n", "kinds[0]", 1, `got the string "200"`},
		{"kinds float", "kinds: [200.5]\n", "kinds[0]", 1, "got the number 200.5"},
		{"kinds duplicate", "kinds: [200, 254, 200]\n", "kinds[2]", 1, "kind 200 is listed twice"},

		{"listen no port", "metrics_listen: 127.0.0.1\n", "metrics_listen", 1, "is not host:port"},
		{"listen bad port", "metrics_listen: 127.0.0.1:http\n", "metrics_listen", 1, `port "http" is not a number`},
		{"listen big port", "metrics_listen: :70000\n", "metrics_listen", 1, "not a number 0..65535"},
		{"listen number", "metrics_listen: 9788\n", "metrics_listen", 1, "want a string, got the number 9788"},
		{"per cpu string", "metrics_per_cpu: \"yes\"\n", "metrics_per_cpu", 1, "want true or false"},
		{"per cpu number", "metrics_per_cpu: 1\n", "metrics_per_cpu", 1, "want true or false"},
		{"procfs relative", "procfs: proc\n", "procfs", 1, "not an absolute path"},
		{"procfs empty", "procfs: \"\"\n", "procfs", 1, "must not be empty"},
		{"module relative", "module_path: kmod/toa.ko\n", "module_path", 1, "not an absolute path"},
		{"module list", "module_path: [a]\n", "module_path", 1, "want a string, got a list"},

		{"receiver unknown", "receiver: bpf\n", "receiver", 1, `want auto, kmod (toa.ko) or ebpf (the eBPF receiver), got "bpf"`},
		{"receiver case", "receiver: EBPF\n", "receiver", 1, `got "EBPF"`},
		{"receiver empty", "receiver: \"\"\n", "receiver", 1, `got ""`},
		{"receiver null", "receiver:\n", "receiver", 1, "got nothing"},
		{"receiver list", "receiver: [kmod, ebpf]\n", "receiver", 1, "got a list"},
		{"receiver bool", "receiver: true\n", "receiver", 1, "got the boolean true"},
		{"receiver second field", "trusted: []\nreceiver: both\n", "receiver", 2, `got "both"`},
		{"cgroup relative", "cgroup: system.slice/nginx.service\n", "cgroup", 1, "not an absolute path"},
		{"cgroup number", "cgroup: 7\n", "cgroup", 1, "want a string, got the number 7"},
		{"cgroup list", "cgroup: [/a, /b]\n", "cgroup", 1, "want a string, got a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.in))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v (%T), want a *ConfigError; config %+v", err, err, cfg)
			}
			if ce.Field != tt.field || ce.Line != tt.line || !strings.Contains(ce.Msg, tt.msgContains) {
				t.Errorf("got field %q line %d msg %q\nwant field %q line %d msg containing %q",
					ce.Field, ce.Line, ce.Msg, tt.field, tt.line, tt.msgContains)
			}
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Errorf("a bad file returned a configuration: %+v", cfg)
			}
		})
	}
}

func TestLoadConfigNamesFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	os.WriteFile(p, []byte("kinds: [1]\n"), 0o644)
	_, err := LoadConfig(p)
	want := "config " + p + ", line 1: kinds[0]: 1 is not a TCP option kind that can carry an address (2..255)"
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
	_, err = LoadConfig(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

// TestPackagedConfig checks the default configuration shipped in
// packaging/config: it parses, and gives the documented defaults.
func TestPackagedConfig(t *testing.T) {
	cfg, err := LoadConfig("../packaging/config/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Errorf("packaged config %+v differs from the defaults %+v", cfg, DefaultConfig())
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("trusted: [198.51.100.0/24]\nkinds: [200]\n"))
	f.Add([]byte("metrics_listen: ':1'\nprocfs: /p\nmodule_path: /m\nmetrics_per_cpu: true\n"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Add([]byte("receiver: ebpf\ncgroup: /sys/fs/cgroup/x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseConfig(b)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if len(cfg.Kinds) == 0 {
			t.Fatal("accepted a configuration without kinds")
		}
		// What the agent passes to the module must parse back the same.
		again, err := ParseConfig([]byte("trusted: [" + strings.ReplaceAll(cfg.TrustedString(), ",", ", ") + "]\nkinds: [" + cfg.KindsString() + "]\n"))
		if err != nil || !reflect.DeepEqual(again.Trusted, cfg.Trusted) || !reflect.DeepEqual(again.Kinds, cfg.Kinds) {
			t.Fatalf("round trip of %q %q: %+v %v", cfg.TrustedString(), cfg.KindsString(), again, err)
		}
	})
}

// longTrusted lists n distinct IPv6 /128 prefixes, 43 characters each in
// their canonical form.
func longTrusted(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("'2001:db8:aaaa:bbbb:cccc:dddd:eeee:%x/128'", 0x1000+i)
	}
	return strings.Join(s, ", ")
}
