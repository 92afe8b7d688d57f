//go:build linux

package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/agent/agenttest"
	"github.com/realip/realip/internal/testenv"
	"github.com/realip/realip/toactl"
)

// testEnv is agenttest's Env with an agent on its options.
type testEnv struct {
	*agenttest.Env
	agent *agent.Agent
}

func newTestEnv(t *testing.T) *testEnv {
	e := &testEnv{Env: agenttest.NewEnv(t)}
	e.agent = newAgent(t, e.Options())
	return e
}

func newAgent(t *testing.T, opts agent.Options) *agent.Agent {
	t.Helper()
	a, err := agent.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestStartLoadsWithParams(t *testing.T) {
	e := newTestEnv(t)
	e.Write("trusted: [198.51.100.0/24, 2001:db8::/32]\nkinds: [254, 200]\n")
	cfg, res, err := e.agent.Start(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if res.Adopted || res.Path != e.ModulePath || res.Version != "0.1.0" {
		t.Errorf("result %+v", res)
	}
	mcfg, sets, loads, _ := e.Module.State()
	if loads != 1 || e.Module.Params()[0] != "trusted=198.51.100.0/24,2001:db8::/32 kinds=254,200" {
		t.Errorf("loads %d params %q", loads, e.Module.Params())
	}
	// The parameters gave the module the right configuration: nothing to set.
	if sets != 0 || !slices.Equal(mcfg.Trusted, prefixes("198.51.100.0/24", "2001:db8::/32")) || !slices.Equal(mcfg.Kinds, []uint8{200, 254}) {
		t.Errorf("module config %+v after %d sets", mcfg, sets)
	}
	if !slices.Equal(cfg.Kinds, []uint8{254, 200}) || !slices.Equal(e.agent.Config().Trusted, cfg.Trusted) {
		t.Errorf("config in force %+v", e.agent.Config())
	}
	if v := testutil.ToFloat64(agent.LoadsMetric(e.agent)); v != 1 {
		t.Errorf("module loads metric %v", v)
	}
}

func TestStartAdoptsLoadedModule(t *testing.T) {
	e := newTestEnv(t)
	e.Module.Appear("", "200")
	e.Write("trusted: [203.0.113.0/24]\n")
	_, res, err := e.agent.Start(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	mcfg, sets, loads, _ := e.Module.State()
	if !res.Adopted || loads != 0 || sets != 1 {
		t.Errorf("adopted %v, %d loads, %d sets", res.Adopted, loads, sets)
	}
	if !slices.Equal(mcfg.Trusted, prefixes("203.0.113.0/24")) || !slices.Equal(mcfg.Kinds, []uint8{200, 253, 254}) {
		t.Errorf("module config %+v", mcfg)
	}
	if !strings.Contains(e.Logs.String(), "adopted the loaded toa module") {
		t.Errorf("log: %s", e.Logs)
	}
}

func TestStartRefusesOtherKernel(t *testing.T) {
	e := newTestEnv(t)
	bad := agenttest.BuildObject(t, e.Dir, "old-toa.ko", agenttest.RealipFields(agenttest.OtherRelease)...)
	e.Write("module_path: " + bad + "\ntrusted: [198.51.100.0/24]\n")
	_, _, err := e.agent.Start(e.ConfigPath)
	var ve *agent.VermagicError
	if !errors.As(err, &ve) || ve.ModuleRelease != agenttest.OtherRelease || ve.KernelRelease != agenttest.KernelRelease {
		t.Fatalf("err = %v", err)
	}
	if _, _, loads, _ := e.Module.State(); loads != 0 {
		t.Error("the kernel was asked to load a module built for another kernel")
	}
	if st, _ := agent.ReadModuleState(e.Module.SysfsRoot()); st.Loaded {
		t.Error("module loaded")
	}
}

func TestStartSearchesModuleFolders(t *testing.T) {
	e := newTestEnv(t)
	dkms := filepath.Join(e.Dir, "lib-modules", agenttest.KernelRelease, "updates", "dkms")
	os.MkdirAll(dkms, 0o755)
	img, _ := os.ReadFile(e.ModulePath)
	os.WriteFile(filepath.Join(dkms, "toa.ko.xz"), compressWith(t, agent.CompressXZ, img), 0o644)
	e.Write("module_path: \"\"\ntrusted: [198.51.100.0/24]\n")
	_, res, err := e.agent.Start(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != filepath.Join(dkms, "toa.ko.xz") {
		t.Errorf("loaded %q", res.Path)
	}
}

func TestStartBadConfigTouchesNothing(t *testing.T) {
	e := newTestEnv(t)
	e.Write("trusted: [198.51.100.0/24]\ntrusted_edges: []\n")
	_, _, err := e.agent.Start(e.ConfigPath)
	if err == nil || !strings.Contains(err.Error(), "trusted_edges: unknown field") {
		t.Fatalf("err = %v", err)
	}
	if _, sets, loads, _ := e.Module.State(); sets != 0 || loads != 0 {
		t.Errorf("%d sets, %d loads after a bad config", sets, loads)
	}
}

func TestEmptyTrustWarns(t *testing.T) {
	e := newTestEnv(t)
	e.Write("trusted: []\n")
	if _, _, err := e.agent.Start(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.Logs.String(), "level=WARN") || !strings.Contains(e.Logs.String(), "forge client addresses") {
		t.Errorf("no warning: %s", e.Logs)
	}
	if p := e.Module.Params()[0]; strings.Contains(p, "trusted") {
		t.Errorf("params %q", p)
	}
}

func TestReloadPushesWithoutReloading(t *testing.T) {
	e := newTestEnv(t)
	e.Write("trusted: [198.51.100.0/24]\n")
	if _, _, err := e.agent.Start(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	e.Write("trusted: [203.0.113.0/24, 2001:db8::/32]\nkinds: [200]\n")
	if err := e.agent.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	mcfg, sets, loads, unloads := e.Module.State()
	if loads != 1 || unloads != 0 || sets != 1 {
		t.Errorf("%d loads, %d unloads, %d sets", loads, unloads, sets)
	}
	if !slices.Equal(mcfg.Trusted, prefixes("203.0.113.0/24", "2001:db8::/32")) || !slices.Equal(mcfg.Kinds, []uint8{200}) {
		t.Errorf("module config %+v", mcfg)
	}
	// Unchanged file: nothing to set.
	if err := e.agent.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if _, sets, _, _ := e.Module.State(); sets != 1 {
		t.Errorf("%d sets after an unchanged reload", sets)
	}
	if v := testutil.ToFloat64(agent.ReloadsMetric(e.agent).WithLabelValues("success")); v != 2 {
		t.Errorf("successful reloads %v", v)
	}
}

func TestReloadBadConfigKeepsOld(t *testing.T) {
	e := newTestEnv(t)
	e.Write("trusted: [198.51.100.0/24]\n")
	if _, _, err := e.agent.Start(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"trusted: [203.0.113.0/24]\nkinds: [1]\n",       // second field bad
		"trusted: [203.0.113.0/24]\nmetric_listen: x\n", // unknown field
		"trusted: [203.0.113.0/24, 203.0.113.9/24]\n",   // host bits
		"trusted: [203.0.113.0/24\n",                    // YAML
	} {
		e.Write(bad)
		err := e.agent.Reload(e.ConfigPath)
		var ce *agent.ConfigError
		if !errors.As(err, &ce) {
			t.Fatalf("%q: err %v", bad, err)
		}
		mcfg, sets, loads, _ := e.Module.State()
		if sets != 0 || loads != 1 || !slices.Equal(mcfg.Trusted, prefixes("198.51.100.0/24")) {
			t.Errorf("%q: %d sets, %d loads, module config %+v", bad, sets, loads, mcfg)
		}
		if got := e.agent.Config().Trusted; !slices.Equal(got, prefixes("198.51.100.0/24")) {
			t.Errorf("%q: config in force %v", bad, got)
		}
	}
	if v := testutil.ToFloat64(agent.ReloadsMetric(e.agent).WithLabelValues("failure")); v != 4 {
		t.Errorf("failed reloads %v", v)
	}
	if v := testutil.ToFloat64(agent.ReloadOKMetric(e.agent)); v != 0 {
		t.Errorf("last reload successful = %v", v)
	}
	if !strings.Contains(e.Logs.String(), "previous one stays in force") {
		t.Errorf("log: %s", e.Logs)
	}
}

func TestReloadLoadsGoneModule(t *testing.T) {
	e := newTestEnv(t)
	e.Write("trusted: [198.51.100.0/24]\n")
	if _, _, err := e.agent.Start(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Unload(); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Unload(); !errors.Is(err, agent.ErrNotLoaded) {
		t.Errorf("second unload: %v", err)
	}
	if err := e.agent.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if _, _, loads, _ := e.Module.State(); loads != 2 {
		t.Errorf("%d loads", loads)
	}
}

func TestNotRealipModuleLoaded(t *testing.T) {
	e := newTestEnv(t)
	e.Module.Appear("", "200")
	// Loaded, but without the netlink family (another vendor's toa.ko).
	e.agent = func() *agent.Agent {
		o := e.Options()
		o.Dial = func() (agent.Control, error) { return nil, toactl.ErrNotLoaded }
		a, _ := agent.New(o)
		return a
	}()
	e.Write("trusted: [198.51.100.0/24]\n")
	_, _, err := e.agent.Start(e.ConfigPath)
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
	e.Write("trusted: [198.51.100.0/24]\nmetrics_listen: 127.0.0.1:0\n")
	sigs := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- e.agent.Run(context.Background(), e.ConfigPath, sigs) }()
	waitNotify(t, e.Notify, "READY=1")

	addr := e.agent.MetricsAddr()
	if addr == "" {
		t.Fatal("no metrics address")
	}
	body := agenttest.Scrape(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		"realip_toa_module_loaded 1",
		"realip_toa_syn_recv_sock_toa_total 1723",
		"realip_toa_control_up 1",
		"realip_toa_trusted_prefixes 1",
		`realip_toa_receiver_info{receiver="kmod"} 1`,
		`realip_toa_module_info{srcversion="0123456789ABCDEF012345",version="0.1.0"} 1`,
		"realip_agent_module_loads_total 1",
		"realip_agent_config_last_reload_successful 1",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	e.Write("trusted: [203.0.113.0/24, 2001:db8::/32]\nmetrics_listen: 127.0.0.1:0\nmetrics_per_cpu: true\n")
	sigs <- syscall.SIGHUP
	waitNotify(t, e.Notify, "RELOADING=1\nMONOTONIC_USEC=")
	waitNotify(t, e.Notify, "READY=1")
	mcfg, sets, loads, _ := e.Module.State()
	if loads != 1 || sets != 1 || !slices.Equal(mcfg.Trusted, prefixes("203.0.113.0/24", "2001:db8::/32")) {
		t.Errorf("after SIGHUP: %d loads, %d sets, %+v", loads, sets, mcfg)
	}
	body = agenttest.Scrape(t, "http://"+addr+"/metrics")
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
	if _, _, _, unloads := e.Module.State(); unloads != 0 {
		t.Error("SIGTERM unloaded the module")
	}
	if st, _ := agent.ReadModuleState(e.Module.SysfsRoot()); !st.Loaded {
		t.Error("module gone after SIGTERM")
	}
	if !strings.Contains(e.Logs.String(), "the toa module stays loaded") {
		t.Errorf("log: %s", e.Logs)
	}
}

func TestRunFailsOnBusyPort(t *testing.T) {
	e := newTestEnv(t)
	e.Write("trusted: [198.51.100.0/24]\nmetrics_listen: 127.0.0.1:0\n")
	sigs := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- e.agent.Run(context.Background(), e.ConfigPath, sigs) }()
	waitNotify(t, e.Notify, "READY=1")
	addr := e.agent.MetricsAddr()

	e2 := newTestEnv(t)
	e2.Write("trusted: [198.51.100.0/24]\nmetrics_listen: " + addr + "\n")
	err := e2.agent.Run(context.Background(), e2.ConfigPath, make(chan os.Signal))
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("second agent on %s: %v", addr, err)
	}
	sigs <- syscall.SIGINT
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestStatus(t *testing.T) {
	e := newTestEnv(t)
	e.Write("trusted: [198.51.100.0/24, 2001:db8::/32]\n")
	if _, _, err := e.agent.Start(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	e.Module.SetStats([]toactl.Stat{{Name: "syn_recv_sock_toa", Value: 12}, {Name: "getname_toa_ok", Value: 7}, {Name: "syn_recv_sock_untrusted", Value: 123456}},
		[]toactl.Entry{
			{Local: netip.MustParseAddrPort("198.51.100.10:80"), Proxy: netip.MustParseAddrPort("198.51.100.1:40000"), Client: netip.MustParseAddrPort("203.0.113.7:5555")},
			{Local: netip.MustParseAddrPort("[2001:db8::10]:443"), Proxy: netip.MustParseAddrPort("[2001:db8::1]:40001"), Client: netip.MustParseAddrPort("[2001:db8:ffff::7]:6666")},
		})
	st, err := e.agent.Status(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := st.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	for _, want := range []string{
		"receiver:     kmod (toa.ko)\n",
		"module:       toa 0.1.0, live, refcount 0 (kernel " + agenttest.KernelRelease + ")",
		"control:      netlink realip_toa, module version 0.1.0",
		"trusted:      198.51.100.0/24, 2001:db8::/32",
		"kinds:        200, 253, 254",
		"config file:  " + e.ConfigPath + ": in force",
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
	var back agent.Status
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Receiver != agent.ReceiverKmod || back.EBPF != nil || !back.Module.Loaded || back.Module.Version != "0.1.0" || !back.Control.Available ||
		!slices.Equal(back.Config.Trusted, []string{"198.51.100.0/24", "2001:db8::/32"}) ||
		!slices.Equal(back.Config.Kinds, []int{200, 253, 254}) ||
		back.LiveEntries != 2 || len(back.Entries) != 2 || back.Entries[1].Client != "[2001:db8:ffff::7]:6666" ||
		len(back.Counters) != 3 || back.Counters[2] != (agent.Counter{"syn_recv_sock_untrusted", 123456}) ||
		!back.ConfigFile.InSync {
		t.Errorf("JSON:\n%s", js.String())
	}

	// Drift: the file says something else than the module.
	e.Write("trusted: [203.0.113.0/24]\n")
	st, _ = e.agent.Status(e.ConfigPath)
	text.Reset()
	st.WriteText(&text)
	if st.ConfigFile.InSync || !strings.Contains(text.String(), `NOT in force (file: trusted="203.0.113.0/24" kinds="200,253,254"; reload the agent)`) {
		t.Errorf("drift not shown:\n%s", text.String())
	}
	// The file names the other receiver: a restart will not do.
	e.Write("receiver: ebpf\ntrusted: [198.51.100.0/24, 2001:db8::/32]\n")
	st, _ = e.agent.Status(e.ConfigPath)
	if st.ConfigFile.InSync || !strings.Contains(st.ConfigFile.Differs, "the file names receiver ebpf, kmod is in place; switch with `realip-agent unload`") {
		t.Errorf("receiver drift: %+v", st.ConfigFile)
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
	want := "receiver:  none (kernel " + agenttest.KernelRelease + "): no TOA receiver is in place: toa.ko is not loaded and no eBPF receiver is pinned in " + e.EBPF.PinDir() + "\n"
	if st.Module.Loaded || st.InPlace() || text.String() != want {
		t.Errorf("got:\n%swant:\n%s", text.String(), want)
	}
	var js bytes.Buffer
	st.WriteJSON(&js)
	if !strings.Contains(js.String(), `"receiver": "none"`) || !strings.Contains(js.String(), `"loaded": false`) || !strings.Contains(js.String(), `"entries": []`) {
		t.Errorf("%s", js.String())
	}
}

// TestPromtool runs `promtool check metrics` on the agent's exposition
// (its own metrics, the toa_stats collector, Go and process metrics), with
// either receiver.
func TestPromtool(t *testing.T) {
	promtool := testenv.RequireCommand(t, "promtool")
	for _, receiver := range []string{"kmod", "ebpf"} {
		t.Run(receiver, func(t *testing.T) {
			e := newTestEnv(t)
			e.Write("receiver: " + receiver + "\ntrusted: [198.51.100.0/24]\n")
			if _, _, err := e.agent.Start(e.ConfigPath); err != nil {
				t.Fatal(err)
			}
			e.agent.Reload(e.ConfigPath)
			if err := agent.SwapTOACollector(e.agent, e.agent.Config()); err != nil {
				t.Fatal(err)
			}
			promtoolCheck(t, promtool, e.agent)
		})
	}
}

func promtoolCheck(t *testing.T, promtool string, a *agent.Agent) {
	t.Helper()
	mfs, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"realip_toa_syn_recv_sock_toa_total", "realip_agent_config_reloads_total", "realip_toa_control_up", "realip_toa_receiver_info"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("exposition lacks %s", want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exposition := buf.String()
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = &buf
	// promtool prints lint problems, some of them with exit status 0.
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s\nexposition:\n%s", err, out, exposition)
	}
}
