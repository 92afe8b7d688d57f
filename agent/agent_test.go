//go:build linux

package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/realip/realip/toactl"
)

// fakeModule stands for toa.ko: its sysfs folder and its netlink
// configuration, as the module keeps them (kinds sorted).
type fakeModule struct {
	mu      sync.Mutex
	sysfs   string
	loaded  bool
	cfg     toactl.Config
	sets    int // SetConfig calls
	loads   []string
	params  []string
	unloads int
	stats   []toactl.Stat
	entries []toactl.Entry
	loadErr error
}

func newFakeModule(t *testing.T) *fakeModule {
	return &fakeModule{sysfs: t.TempDir()}
}

func (f *fakeModule) dir() string { return filepath.Join(f.sysfs, "module", "toa") }

// appear makes the module loaded with the given configuration (as if
// loaded by modprobe or an earlier agent).
func (f *fakeModule) appear(trusted string, kinds string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	os.MkdirAll(filepath.Join(f.dir(), "parameters"), 0o755)
	os.WriteFile(filepath.Join(f.dir(), "initstate"), []byte("live\n"), 0o644)
	os.WriteFile(filepath.Join(f.dir(), "refcnt"), []byte("0\n"), 0o644)
	os.WriteFile(filepath.Join(f.dir(), "version"), []byte("0.1.0\n"), 0o644)
	os.WriteFile(filepath.Join(f.dir(), "srcversion"), []byte("0123456789ABCDEF012345\n"), 0o644)
	os.WriteFile(filepath.Join(f.dir(), "taint"), []byte("OE\n"), 0o644)
	f.loaded = true
	f.cfg.Version = "0.1.0"
	f.cfg.Trusted, _ = toactl.ParsePrefixes(trusted)
	f.cfg.Kinds, _ = toactl.ParseKinds(kinds)
	slices.Sort(f.cfg.Kinds)
}

func (f *fakeModule) Load(m *ModuleFile, params string) error {
	if f.loadErr != nil {
		return f.loadErr
	}
	f.mu.Lock()
	f.loads = append(f.loads, m.Path)
	f.params = append(f.params, params)
	f.mu.Unlock()
	trusted, kinds := "", "200,253,254"
	for _, p := range strings.Fields(params) {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "trusted":
			trusted = v
		case "kinds":
			kinds = v
		}
	}
	f.appear(trusted, kinds)
	return nil
}

func (f *fakeModule) Unload(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded {
		return ErrNotLoaded
	}
	f.unloads++
	f.loaded = false
	return os.RemoveAll(f.dir())
}

func (f *fakeModule) Dial() (Control, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded {
		return nil, toactl.ErrNotLoaded
	}
	return fakeControl{f}, nil
}

type fakeControl struct{ f *fakeModule }

func (c fakeControl) Config() (toactl.Config, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	cfg := c.f.cfg
	cfg.Trusted = slices.Clone(cfg.Trusted)
	cfg.Kinds = slices.Clone(cfg.Kinds)
	return cfg, nil
}

func (c fakeControl) SetConfig(cfg toactl.Config) error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	c.f.sets++
	c.f.cfg.Trusted = slices.Clone(cfg.Trusted)
	if cfg.Kinds != nil {
		if len(cfg.Kinds) == 0 {
			return syscall.EINVAL
		}
		c.f.cfg.Kinds = slices.Clone(cfg.Kinds)
		slices.Sort(c.f.cfg.Kinds)
	}
	return nil
}

func (c fakeControl) Stats() ([]toactl.Stat, uint64, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	return c.f.stats, uint64(len(c.f.entries)), nil
}

func (c fakeControl) Entries() ([]toactl.Entry, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	return c.f.entries, nil
}

func (c fakeControl) Close() error { return nil }

func (f *fakeModule) state() (cfg toactl.Config, sets, loads, unloads int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg, f.sets, len(f.loads), f.unloads
}

type testEnv struct {
	t      *testing.T
	mod    *fakeModule
	dir    string
	cfg    string // configuration file
	module string // a good toa.ko
	agent  *Agent
	notify chan string
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestEnv(t *testing.T) *testEnv {
	e := &testEnv{t: t, mod: newFakeModule(t), dir: t.TempDir(), notify: make(chan string, 16), logs: &syncBuffer{}}
	e.cfg = filepath.Join(e.dir, "agent.yaml")
	e.module = buildModule(t, e.dir, realipFields(testRelease)...)
	os.MkdirAll(filepath.Join(e.dir, "proc", "net"), 0o755)
	seed, err := os.ReadFile("../exporter/testdata/seed/net/toa_stats")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(e.dir, "proc", "net", "toa_stats"), seed, 0o644)
	e.agent = e.newAgent()
	return e
}

func (e *testEnv) options() Options {
	return Options{
		Logger:        slogTo(e.logs),
		SysfsRoot:     e.mod.sysfs,
		ModulesRoot:   filepath.Join(e.dir, "lib-modules"),
		KernelRelease: testRelease,
		Kernel:        e.mod,
		Dial:          e.mod.Dial,
		Notify: func(s string) {
			select {
			case e.notify <- s:
			default:
			}
		},
	}
}

func (e *testEnv) newAgent() *Agent {
	a, err := New(e.options())
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// write writes the configuration file: module_path is the good module
// unless the body sets it, procfs the fixture tree.
func (e *testEnv) write(body string) {
	e.t.Helper()
	if !strings.Contains(body, "module_path:") {
		body = "module_path: " + e.module + "\n" + body
	}
	if !strings.Contains(body, "procfs:") {
		body += "procfs: " + filepath.Join(e.dir, "proc") + "\n"
	}
	if !strings.Contains(body, "metrics_listen:") {
		body += "metrics_listen: \"\"\n"
	}
	if err := os.WriteFile(e.cfg, []byte(body), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestStartLoadsWithParams(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24, 2001:db8::/32]\nkinds: [254, 200]\n")
	cfg, res, err := e.agent.Start(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Adopted || res.Path != e.module || res.Version != "0.1.0" {
		t.Errorf("result %+v", res)
	}
	mcfg, sets, loads, _ := e.mod.state()
	if loads != 1 || e.mod.params[0] != "trusted=198.51.100.0/24,2001:db8::/32 kinds=254,200" {
		t.Errorf("loads %d params %q", loads, e.mod.params)
	}
	// The parameters gave the module the right configuration: nothing to set.
	if sets != 0 || !slices.Equal(mcfg.Trusted, prefixes("198.51.100.0/24", "2001:db8::/32")) || !slices.Equal(mcfg.Kinds, []uint8{200, 254}) {
		t.Errorf("module config %+v after %d sets", mcfg, sets)
	}
	if !slices.Equal(cfg.Kinds, []uint8{254, 200}) || !slices.Equal(e.agent.Config().Trusted, cfg.Trusted) {
		t.Errorf("config in force %+v", e.agent.Config())
	}
	if v := testutil.ToFloat64(e.agent.loads); v != 1 {
		t.Errorf("module loads metric %v", v)
	}
}

func TestStartAdoptsLoadedModule(t *testing.T) {
	e := newTestEnv(t)
	e.mod.appear("", "200")
	e.write("trusted: [203.0.113.0/24]\n")
	_, res, err := e.agent.Start(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	mcfg, sets, loads, _ := e.mod.state()
	if !res.Adopted || loads != 0 || sets != 1 {
		t.Errorf("adopted %v, %d loads, %d sets", res.Adopted, loads, sets)
	}
	if !slices.Equal(mcfg.Trusted, prefixes("203.0.113.0/24")) || !slices.Equal(mcfg.Kinds, []uint8{200, 253, 254}) {
		t.Errorf("module config %+v", mcfg)
	}
	if !strings.Contains(e.logs.String(), "adopted the loaded toa module") {
		t.Errorf("log: %s", e.logs)
	}
}

func TestStartRefusesOtherKernel(t *testing.T) {
	e := newTestEnv(t)
	bad := buildObject(t, e.dir, "old-toa.ko", realipFields(otherRelease)...)
	e.write("module_path: " + bad + "\ntrusted: [198.51.100.0/24]\n")
	_, _, err := e.agent.Start(e.cfg)
	var ve *VermagicError
	if !errors.As(err, &ve) || ve.ModuleRelease != otherRelease || ve.KernelRelease != testRelease {
		t.Fatalf("err = %v", err)
	}
	if _, _, loads, _ := e.mod.state(); loads != 0 {
		t.Error("the kernel was asked to load a module built for another kernel")
	}
	if st, _ := ReadModuleState(e.mod.sysfs); st.Loaded {
		t.Error("module loaded")
	}
}

func TestStartSearchesModuleFolders(t *testing.T) {
	e := newTestEnv(t)
	dkms := filepath.Join(e.dir, "lib-modules", testRelease, "updates", "dkms")
	os.MkdirAll(dkms, 0o755)
	img, _ := os.ReadFile(e.module)
	os.WriteFile(filepath.Join(dkms, "toa.ko.xz"), compressWith(t, CompressXZ, img), 0o644)
	e.write("module_path: \"\"\ntrusted: [198.51.100.0/24]\n")
	_, res, err := e.agent.Start(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != filepath.Join(dkms, "toa.ko.xz") {
		t.Errorf("loaded %q", res.Path)
	}
}

func TestStartBadConfigTouchesNothing(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24]\ntrusted_edges: []\n")
	_, _, err := e.agent.Start(e.cfg)
	if err == nil || !strings.Contains(err.Error(), "trusted_edges: unknown field") {
		t.Fatalf("err = %v", err)
	}
	if _, sets, loads, _ := e.mod.state(); sets != 0 || loads != 0 {
		t.Errorf("%d sets, %d loads after a bad config", sets, loads)
	}
}

func TestEmptyTrustWarns(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: []\n")
	if _, _, err := e.agent.Start(e.cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.logs.String(), "level=WARN") || !strings.Contains(e.logs.String(), "forge client addresses") {
		t.Errorf("no warning: %s", e.logs)
	}
	if p := e.mod.params[0]; strings.Contains(p, "trusted") {
		t.Errorf("params %q", p)
	}
}

func TestReloadPushesWithoutReloading(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24]\n")
	if _, _, err := e.agent.Start(e.cfg); err != nil {
		t.Fatal(err)
	}
	e.write("trusted: [203.0.113.0/24, 2001:db8::/32]\nkinds: [200]\n")
	if err := e.agent.Reload(e.cfg); err != nil {
		t.Fatal(err)
	}
	mcfg, sets, loads, unloads := e.mod.state()
	if loads != 1 || unloads != 0 || sets != 1 {
		t.Errorf("%d loads, %d unloads, %d sets", loads, unloads, sets)
	}
	if !slices.Equal(mcfg.Trusted, prefixes("203.0.113.0/24", "2001:db8::/32")) || !slices.Equal(mcfg.Kinds, []uint8{200}) {
		t.Errorf("module config %+v", mcfg)
	}
	// Unchanged file: nothing to set.
	if err := e.agent.Reload(e.cfg); err != nil {
		t.Fatal(err)
	}
	if _, sets, _, _ := e.mod.state(); sets != 1 {
		t.Errorf("%d sets after an unchanged reload", sets)
	}
	if v := testutil.ToFloat64(e.agent.reloads.WithLabelValues("success")); v != 2 {
		t.Errorf("successful reloads %v", v)
	}
}

func TestReloadBadConfigKeepsOld(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24]\n")
	if _, _, err := e.agent.Start(e.cfg); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"trusted: [203.0.113.0/24]\nkinds: [1]\n",       // second field bad
		"trusted: [203.0.113.0/24]\nmetric_listen: x\n", // unknown field
		"trusted: [203.0.113.0/24, 203.0.113.9/24]\n",   // host bits
		"trusted: [203.0.113.0/24\n",                    // YAML
	} {
		e.write(bad)
		err := e.agent.Reload(e.cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Fatalf("%q: err %v", bad, err)
		}
		mcfg, sets, loads, _ := e.mod.state()
		if sets != 0 || loads != 1 || !slices.Equal(mcfg.Trusted, prefixes("198.51.100.0/24")) {
			t.Errorf("%q: %d sets, %d loads, module config %+v", bad, sets, loads, mcfg)
		}
		if got := e.agent.Config().Trusted; !slices.Equal(got, prefixes("198.51.100.0/24")) {
			t.Errorf("%q: config in force %v", bad, got)
		}
	}
	if v := testutil.ToFloat64(e.agent.reloads.WithLabelValues("failure")); v != 4 {
		t.Errorf("failed reloads %v", v)
	}
	if v := testutil.ToFloat64(e.agent.reloadOK); v != 0 {
		t.Errorf("last reload successful = %v", v)
	}
	if !strings.Contains(e.logs.String(), "previous one stays in force") {
		t.Errorf("log: %s", e.logs)
	}
}

func TestReloadLoadsGoneModule(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24]\n")
	if _, _, err := e.agent.Start(e.cfg); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Unload(); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Unload(); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("second unload: %v", err)
	}
	if err := e.agent.Reload(e.cfg); err != nil {
		t.Fatal(err)
	}
	if _, _, loads, _ := e.mod.state(); loads != 2 {
		t.Errorf("%d loads", loads)
	}
}

func TestNotRealipModuleLoaded(t *testing.T) {
	e := newTestEnv(t)
	e.mod.appear("", "200")
	// Loaded, but without the netlink family (another vendor's toa.ko).
	e.agent = func() *Agent {
		o := e.options()
		o.Dial = func() (Control, error) { return nil, toactl.ErrNotLoaded }
		a, _ := New(o)
		return a
	}()
	e.write("trusted: [198.51.100.0/24]\n")
	_, _, err := e.agent.Start(e.cfg)
	if err == nil || !strings.Contains(err.Error(), "not realip's") || !strings.Contains(err.Error(), "realip-agent unload") {
		t.Errorf("err = %v", err)
	}
}

func waitNotify(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-ch:
			if strings.HasPrefix(s, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q notification", want)
		}
	}
}

func TestRunSignals(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24]\nmetrics_listen: 127.0.0.1:0\n")
	sigs := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- e.agent.Run(context.Background(), e.cfg, sigs) }()
	waitNotify(t, e.notify, "READY=1")

	addr := e.agent.MetricsAddr()
	if addr == "" {
		t.Fatal("no metrics address")
	}
	body := scrape(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		"realip_toa_module_loaded 1",
		"realip_toa_syn_recv_sock_toa_total 1723",
		"realip_toa_control_up 1",
		"realip_toa_trusted_prefixes 1",
		`realip_toa_module_info{srcversion="0123456789ABCDEF012345",version="0.1.0"} 1`,
		"realip_agent_module_loads_total 1",
		"realip_agent_config_last_reload_successful 1",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	e.write("trusted: [203.0.113.0/24, 2001:db8::/32]\nmetrics_listen: 127.0.0.1:0\nmetrics_per_cpu: true\n")
	sigs <- syscall.SIGHUP
	waitNotify(t, e.notify, "RELOADING=1\nMONOTONIC_USEC=")
	waitNotify(t, e.notify, "READY=1")
	mcfg, sets, loads, _ := e.mod.state()
	if loads != 1 || sets != 1 || !slices.Equal(mcfg.Trusted, prefixes("203.0.113.0/24", "2001:db8::/32")) {
		t.Errorf("after SIGHUP: %d loads, %d sets, %+v", loads, sets, mcfg)
	}
	body = scrape(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		"realip_toa_trusted_prefixes 2",
		`realip_toa_syn_recv_sock_toa_total{cpu="1"} 858`,
		`realip_agent_config_reloads_total{result="success"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics after reload lack %q", want)
		}
	}

	sigs <- syscall.SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after SIGTERM")
	}
	if _, _, _, unloads := e.mod.state(); unloads != 0 {
		t.Error("SIGTERM unloaded the module")
	}
	if st, _ := ReadModuleState(e.mod.sysfs); !st.Loaded {
		t.Error("module gone after SIGTERM")
	}
	if !strings.Contains(e.logs.String(), "the toa module stays loaded") {
		t.Errorf("log: %s", e.logs)
	}
}

func TestRunFailsOnBusyPort(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24]\nmetrics_listen: 127.0.0.1:0\n")
	sigs := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- e.agent.Run(context.Background(), e.cfg, sigs) }()
	waitNotify(t, e.notify, "READY=1")
	addr := e.agent.MetricsAddr()

	e2 := newTestEnv(t)
	e2.write("trusted: [198.51.100.0/24]\nmetrics_listen: " + addr + "\n")
	err := e2.agent.Run(context.Background(), e2.cfg, make(chan os.Signal))
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("second agent on %s: %v", addr, err)
	}
	sigs <- syscall.SIGINT
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func TestStatus(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24, 2001:db8::/32]\n")
	if _, _, err := e.agent.Start(e.cfg); err != nil {
		t.Fatal(err)
	}
	e.mod.stats = []toactl.Stat{{Name: "syn_recv_sock_toa", Value: 12}, {Name: "getname_toa_ok", Value: 7}, {Name: "syn_recv_sock_untrusted", Value: 123456}}
	e.mod.entries = []toactl.Entry{
		{Local: netip.MustParseAddrPort("198.51.100.10:80"), Proxy: netip.MustParseAddrPort("198.51.100.1:40000"), Client: netip.MustParseAddrPort("203.0.113.7:5555")},
		{Local: netip.MustParseAddrPort("[2001:db8::10]:443"), Proxy: netip.MustParseAddrPort("[2001:db8::1]:40001"), Client: netip.MustParseAddrPort("[2001:db8:ffff::7]:6666")},
	}
	st, err := e.agent.Status(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := st.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	for _, want := range []string{
		"module:       toa 0.1.0, live, refcount 0 (kernel " + testRelease + ")",
		"control:      netlink realip_toa, module version 0.1.0",
		"trusted:      198.51.100.0/24, 2001:db8::/32",
		"kinds:        200, 253, 254",
		"config file:  " + e.cfg + ": in force",
		"  syn_recv_sock_untrusted  123456",
		"  getname_toa_ok                7",
		"entries: 2 live",
		"LOCAL               PROXY                CLIENT",
		"198.51.100.10:80    198.51.100.1:40000   203.0.113.7:5555",
		"[2001:db8::10]:443  [2001:db8::1]:40001  [2001:db8:ffff::7]:6666",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	var js bytes.Buffer
	st.WriteJSON(&js)
	var back Status
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !back.Module.Loaded || back.Module.Version != "0.1.0" || !back.Control.Available ||
		!slices.Equal(back.Config.Trusted, []string{"198.51.100.0/24", "2001:db8::/32"}) ||
		!slices.Equal(back.Config.Kinds, []int{200, 253, 254}) ||
		back.LiveEntries != 2 || len(back.Entries) != 2 || back.Entries[1].Client != "[2001:db8:ffff::7]:6666" ||
		len(back.Counters) != 3 || back.Counters[2] != (Counter{"syn_recv_sock_untrusted", 123456}) ||
		!back.ConfigFile.InSync {
		t.Errorf("JSON:\n%s", js.String())
	}

	// Drift: the file says something else than the module.
	e.write("trusted: [203.0.113.0/24]\n")
	st, _ = e.agent.Status(e.cfg)
	text.Reset()
	st.WriteText(&text)
	if st.ConfigFile.InSync || !strings.Contains(text.String(), "NOT in force") {
		t.Errorf("drift not shown:\n%s", text.String())
	}
}

func TestStatusNotLoaded(t *testing.T) {
	e := newTestEnv(t)
	st, err := e.agent.Status("")
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	st.WriteText(&text)
	if st.Module.Loaded || !strings.Contains(text.String(), "module:   not loaded (kernel "+testRelease+")") {
		t.Errorf("%s", text.String())
	}
	var js bytes.Buffer
	st.WriteJSON(&js)
	if !strings.Contains(js.String(), `"loaded": false`) || !strings.Contains(js.String(), `"entries": []`) {
		t.Errorf("%s", js.String())
	}
}
