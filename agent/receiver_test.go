//go:build linux

package agent_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/agent/agenttest"
	"github.com/realip/realip/toarecv"
)

// TestChooseReceiver runs Start on machines that offer different things
// (a loaded module, a pinned eBPF receiver, a module file, lockdown, a
// kernel that cannot run the eBPF receiver) and checks the receiver the
// agent takes, why, and that a refusal touches nothing.
func TestChooseReceiver(t *testing.T) {
	errOldKernel := fmt.Errorf("toarecv: %w: loading the receiver's programs: invalid argument", toarecv.ErrUnsupported)
	tests := []struct {
		name    string
		setup   func(e *agenttest.Env)
		config  string
		want    agent.ReceiverKind
		why     string // in LoadResult.Why
		err     error  // errors.Is
		errText []string
		adopted bool
	}{
		{name: "auto, module for this kernel, no lockdown file",
			setup:  func(e *agenttest.Env) { e.InstallModule(false) },
			config: "module_path: \"\"\n", want: agent.ReceiverKmod,
			why: "toa.ko for kernel " + agenttest.KernelRelease + " found at "},
		{name: "auto, module, no lockdown file, said why",
			setup:  func(e *agenttest.Env) { e.InstallModule(false) },
			config: "module_path: \"\"\n", want: agent.ReceiverKmod, why: "/updates/dkms/toa.ko (no lockdown)"},
		{name: "auto, module, lockdown none",
			setup:  func(e *agenttest.Env) { e.InstallModule(false); e.SetLockdown("none") },
			config: "module_path: \"\"\n", want: agent.ReceiverKmod, why: "(lockdown none)"},
		{name: "auto, unsigned module under lockdown",
			setup:  func(e *agenttest.Env) { e.InstallModule(false); e.SetLockdown("integrity") },
			config: "module_path: \"\"\n", want: agent.ReceiverEBPF, why: "lockdown (integrity), which refuses unsigned modules"},
		{name: "auto, signed module under lockdown",
			setup:  func(e *agenttest.Env) { e.InstallModule(true); e.SetLockdown("confidentiality") },
			config: "module_path: \"\"\n", want: agent.ReceiverKmod, why: "(lockdown confidentiality, signed)"},
		{name: "auto, no module",
			config: "module_path: \"\"\n", want: agent.ReceiverEBPF, why: "no toa.ko for the running kernel " + agenttest.KernelRelease},
		{name: "auto, module for another kernel",
			setup: func(e *agenttest.Env) {
				agenttest.BuildModule(t, mkdirs(t, e.Dir, "lib-modules", agenttest.KernelRelease, "extra"), agenttest.RealipFields(agenttest.OtherRelease)...)
			},
			config: "module_path: \"\"\n", want: agent.ReceiverEBPF, why: "built for kernel " + agenttest.OtherRelease},
		{name: "auto, nothing can run",
			setup:  func(e *agenttest.Env) { e.EBPF.SetUnavailable(errOldKernel) },
			config: "module_path: \"\"\n", err: toarecv.ErrUnsupported,
			errText: []string{"no TOA receiver can run here. toa.ko: no toa.ko for the running kernel", "dkms install toa/VERSION",
				"The eBPF receiver: toarecv: the eBPF TOA receiver needs Linux 5.10 or newer"}},
		{name: "auto adopts the loaded module, lockdown or not",
			setup:  func(e *agenttest.Env) { e.Module.Appear("", "200"); e.SetLockdown("integrity") },
			config: "module_path: \"\"\n", want: agent.ReceiverKmod, why: "toa.ko is loaded: adopting it", adopted: true},
		{name: "auto adopts the pinned eBPF receiver over an installed module",
			setup:  func(e *agenttest.Env) { e.InstallModule(false); e.EBPF.Appear("/sys/fs/cgroup/web", toarecv.Config{}) },
			config: "module_path: \"\"\n", want: agent.ReceiverEBPF, why: "the eBPF receiver is pinned in ", adopted: true},
		{name: "auto with module_path takes the module and its refusal",
			config: "module_path: /nonexistent/toa.ko\n", err: fs.ErrNotExist, errText: []string{"/nonexistent/toa.ko"}},
		{name: "kmod while the eBPF receiver is pinned",
			setup:  func(e *agenttest.Env) { e.EBPF.Appear("", toarecv.Config{}) },
			config: "receiver: kmod\n", err: agent.ErrReceiverConflict,
			errText: []string{"receiver is kmod but the eBPF receiver is attached (pinned in ", "run `realip-agent unload` first"}},
		{name: "ebpf while toa.ko is loaded",
			setup:  func(e *agenttest.Env) { e.Module.Appear("", "200") },
			config: "receiver: ebpf\n", err: agent.ErrReceiverConflict,
			errText: []string{"receiver is ebpf but toa.ko is loaded; run `realip-agent unload` first"}},
		{name: "both in place",
			setup:  func(e *agenttest.Env) { e.Module.Appear("", "200"); e.EBPF.Appear("", toarecv.Config{}) },
			config: "", err: agent.ErrReceiverConflict, errText: []string{"both at once", "it removes both"}},
		{name: "ebpf on a kernel without it",
			setup:  func(e *agenttest.Env) { e.EBPF.SetUnavailable(errOldKernel) },
			config: "receiver: ebpf\n", err: toarecv.ErrUnsupported,
			errText: []string{"the eBPF receiver: toarecv: the eBPF TOA receiver needs Linux 5.10 or newer", "use the toa.ko receiver"}},
		{name: "ebpf without cgroup v2",
			setup:  func(e *agenttest.Env) { e.EBPF.SetUnavailable(fmt.Errorf("toarecv: %w", toarecv.ErrNoCgroup2)) },
			config: "receiver: ebpf\n", err: toarecv.ErrNoCgroup2, errText: []string{"mount -t cgroup2"}},
		{name: "ebpf without the right",
			setup:  func(e *agenttest.Env) { e.EBPF.SetUnavailable(fmt.Errorf("toarecv: %w", toarecv.ErrNotPermitted)) },
			config: "receiver: ebpf\n", err: toarecv.ErrNotPermitted, errText: []string{"run as root"}},
		{name: "ebpf on a cgroup, module installed",
			setup:  func(e *agenttest.Env) { e.InstallModule(false) },
			config: "receiver: ebpf\ncgroup: /sys/fs/cgroup/system.slice/web.service\n", want: agent.ReceiverEBPF, why: "receiver: ebpf"},
		{name: "kmod, unsigned module under lockdown",
			setup:  func(e *agenttest.Env) { e.SetLockdown("integrity") },
			config: "receiver: kmod\n", err: agent.ErrRefused,
			errText: []string{"lockdown (integrity), which refuses unsigned modules", "or set receiver: ebpf"}},
		{name: "kmod, lockdown none", setup: func(e *agenttest.Env) { e.SetLockdown("none") },
			config: "receiver: kmod\n", want: agent.ReceiverKmod, why: "receiver: kmod"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			if tc.setup != nil {
				tc.setup(e.Env)
			}
			e.Write(tc.config + "trusted: [198.51.100.0/24]\n")
			before := e.EBPF.State()
			_, _, loadsBefore, _ := e.Module.State()
			_, res, err := e.agent.Start(e.ConfigPath)
			_, _, loads, _ := e.Module.State()
			after := e.EBPF.State()
			if tc.err != nil {
				checkRefusal(t, err, tc.err, tc.errText)
				if loads != loadsBefore || after.Attaches != before.Attaches {
					t.Errorf("a refusal loaded (%d) or attached (%d) something", loads-loadsBefore, after.Attaches-before.Attaches)
				}
				return
			}
			if err != nil {
				t.Fatalf("Start: %v\nlog:\n%s", err, e.Logs)
			}
			if res.Receiver != tc.want || !strings.Contains(res.Why, tc.why) || res.Adopted != tc.adopted {
				t.Errorf("chose %s (adopted %v) because %q; want %s (adopted %v) because ...%q...", res.Receiver, res.Adopted, res.Why, tc.want, tc.adopted, tc.why)
			}
			if !strings.Contains(e.Logs.String(), "TOA receiver chosen") || !strings.Contains(e.Logs.String(), "receiver="+string(tc.want)) {
				t.Errorf("the choice is not logged:\n%s", e.Logs)
			}
			checkOneInPlace(t, e, tc.want)
		})
	}
}

func checkRefusal(t *testing.T, err, want error, texts []string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatal("Start succeeded")
	case !errors.Is(err, want):
		t.Errorf("err = %v, want %v", err, want)
	}
	for _, s := range texts {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q:\n%v", s, err)
		}
	}
}

// checkOneInPlace checks that the receiver want is in place and the other
// is not.
func checkOneInPlace(t *testing.T, e *testEnv, want agent.ReceiverKind) {
	t.Helper()
	st, err := agent.ReadModuleState(e.Module.SysfsRoot())
	if err != nil {
		t.Fatal(err)
	}
	pinned := e.EBPF.State().Pinned
	if st.Loaded != (want == agent.ReceiverKmod) || pinned != (want == agent.ReceiverEBPF) {
		t.Errorf("module loaded %v, eBPF receiver pinned %v; want only %s", st.Loaded, pinned, want)
	}
}

func mkdirs(t *testing.T, elem ...string) string {
	t.Helper()
	dir := filepath.Join(elem...)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLockdown(t *testing.T) {
	e := agenttest.NewEnv(t)
	if mode, err := agent.Lockdown(e.Module.SysfsRoot()); mode != "" || err != nil {
		t.Errorf("no lockdown file: %q %v", mode, err)
	}
	for _, m := range []string{"none", "integrity", "confidentiality"} {
		e.SetLockdown(m)
		if mode, err := agent.Lockdown(e.Module.SysfsRoot()); mode != m || err != nil {
			t.Errorf("%s: %q %v", m, mode, err)
		}
	}
}

// TestEBPFReceiverFlow drives the eBPF receiver (the fake) through start,
// reloads, status, metrics, the receiver gone under the agent, and unload.
func TestEBPFReceiverFlow(t *testing.T) {
	e := newTestEnv(t)
	e.Write("receiver: ebpf\ncgroup: /sys/fs/cgroup/web\ntrusted: [198.51.100.0/24]\nkinds: [254, 200]\n")
	_, res, err := e.agent.Start(e.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	st := e.EBPF.State()
	if res.Adopted || res.Cgroup != "/sys/fs/cgroup/web" || res.PinDir != e.EBPF.PinDir() || st.Attaches != 1 ||
		!slices.Equal(st.Config.Trusted, prefixes("198.51.100.0/24")) || !slices.Equal(st.Config.Kinds, []uint8{200, 254}) {
		t.Fatalf("result %+v, receiver %+v", res, st)
	}
	if _, _, loads, _ := e.Module.State(); loads != 0 {
		t.Errorf("the module was loaded %d times", loads)
	}

	// SIGHUP: trust and kinds change in the pinned maps, nothing is
	// attached again; receiver and cgroup wait for a restart.
	e.Write("receiver: kmod\ncgroup: /sys/fs/cgroup/other\ntrusted: [203.0.113.0/24, 2001:db8::/32]\nkinds: [200]\n")
	if err := e.agent.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	st = e.EBPF.State()
	if st.Attaches != 1 || st.Sets != 1 || st.Cgroup != "/sys/fs/cgroup/web" ||
		!slices.Equal(st.Config.Trusted, prefixes("203.0.113.0/24", "2001:db8::/32")) || !slices.Equal(st.Config.Kinds, []uint8{200}) {
		t.Errorf("after reload: %+v", st)
	}
	for _, want := range []string{"receiver changed; it applies when the agent restarts", "cgroup changed; restart the agent"} {
		if !strings.Contains(e.Logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, e.Logs)
		}
	}
	if c := e.agent.Config(); c.Receiver != agent.ReceiverEBPF || c.Cgroup != "/sys/fs/cgroup/web" {
		t.Errorf("config in force %+v", c)
	}
	if err := e.agent.Reload(e.ConfigPath); err != nil || e.EBPF.State().Sets != 1 {
		t.Errorf("unchanged reload: %v, %d sets", err, e.EBPF.State().Sets)
	}

	// Unpinned under the agent: a reload attaches it again, as a reload
	// loads a module that is gone.
	if removed, err := e.agent.UnloadReceivers(); err != nil || !slices.Equal(removed, []agent.ReceiverKind{agent.ReceiverEBPF}) {
		t.Fatalf("unload: %v %v", removed, err)
	}
	if err := e.agent.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if st = e.EBPF.State(); !st.Pinned || st.Attaches != 2 || st.Cgroup != "/sys/fs/cgroup/web" ||
		!strings.Contains(e.Logs.String(), "the eBPF TOA receiver had been detached; attached it again") {
		t.Errorf("after reload of a detached receiver: %+v\n%s", st, e.Logs)
	}
	// Links gone, maps pinned: attached again too.
	e.EBPF.Detach()
	if err := e.agent.Reload(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	if st = e.EBPF.State(); st.Attaches != 3 || !strings.Contains(e.Logs.String(), "programs had been detached; attached them again") {
		t.Errorf("after reload of detached programs: %+v\n%s", st, e.Logs)
	}
	// The file now names the receiver in force: nothing to wait for.
	e.Write("receiver: ebpf\ncgroup: /sys/fs/cgroup/web\ntrusted: [203.0.113.0/24, 2001:db8::/32]\nkinds: [200]\n")
	before := strings.Count(e.Logs.String(), "receiver changed")
	if err := e.agent.Reload(e.ConfigPath); err != nil || strings.Count(e.Logs.String(), "receiver changed") != before {
		t.Errorf("reload naming the receiver in force: %v\n%s", err, e.Logs)
	}
	removed, err := e.agent.UnloadReceivers()
	if err != nil || len(removed) != 1 {
		t.Errorf("unload: %v %v", removed, err)
	}
	if removed, err = e.agent.UnloadReceivers(); err != nil || len(removed) != 0 {
		t.Errorf("unload with nothing in place: %v %v", removed, err)
	}
}

// fakeCounters are counters with a distinct value per row and CPU (row r,
// CPU c: r*100+c+1), but ip6_address_free: 5 less than ip6_address_alloc.
func fakeCounters() []toarecv.Counter {
	var out []toarecv.Counter
	for r, name := range toarecv.CounterNames {
		c := toarecv.Counter{Name: name, PerCPU: []uint64{uint64(r*100 + 1), uint64(r*100 + 2)}}
		if name == "ip6_address_free" {
			alloc := out[len(out)-1].PerCPU
			c.PerCPU = []uint64{alloc[0] - 5, alloc[1]}
		}
		out = append(out, c)
	}
	return out
}

// toaStatsFile renders counters as toa.ko's /proc/net/toa_stats.
func toaStatsFile(counters []toarecv.Counter) string {
	var b strings.Builder
	b.WriteString("                         CPU0        CPU1\n")
	for _, c := range counters {
		fmt.Fprintf(&b, "%-24s %d %d\n", c.Name, c.PerCPU[0], c.PerCPU[1])
	}
	return b.String()
}

// toaSamples gathers a's registry and returns the realip_toa_* samples,
// but the receiver's identity (module_info, receiver_info), as
// "TYPE name{labels} value".
func toaSamples(t *testing.T, a *agent.Agent) []string {
	t.Helper()
	mfs, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "realip_toa_") || name == "realip_toa_module_info" || name == "realip_toa_receiver_info" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			out = append(out, fmt.Sprintf("%s %s{%s} %v", mf.GetType(), name, strings.Join(ls, ","), v))
		}
	}
	return out
}

// TestMetricsSameForBothReceivers: the same counters give the same
// realip_toa_* series whichever receiver holds them, summed and per CPU;
// only realip_toa_receiver_info (and the module's info) tell them apart.
func TestMetricsSameForBothReceivers(t *testing.T) {
	counters := fakeCounters()
	for _, perCPU := range []bool{false, true} {
		extra := fmt.Sprintf("trusted: [198.51.100.0/24, 203.0.113.0/24]\nmetrics_per_cpu: %v\n", perCPU)
		kmod := newTestEnv(t)
		if err := os.WriteFile(filepath.Join(kmod.Dir, "proc", "net", "toa_stats"), []byte(toaStatsFile(counters)), 0o644); err != nil {
			t.Fatal(err)
		}
		kmod.Write(extra)
		ebpf := newTestEnv(t)
		ebpf.EBPF.SetCounters(counters)
		ebpf.Write("receiver: ebpf\n" + extra)
		for _, e := range []*testEnv{kmod, ebpf} {
			cfg, _, err := e.agent.Start(e.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if err := agent.SwapTOACollector(e.agent, cfg); err != nil {
				t.Fatal(err)
			}
		}
		got, want := toaSamples(t, ebpf.agent), toaSamples(t, kmod.agent)
		if len(want) < len(toarecv.CounterNames)+5 || !slices.Equal(got, want) {
			t.Errorf("per CPU %v: the eBPF receiver gives\n%s\ntoa.ko\n%s", perCPU, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		for _, want := range []string{"GAUGE realip_toa_ip6_addresses_in_use{} 5", "GAUGE realip_toa_module_loaded{} 1",
			"GAUGE realip_toa_control_up{} 1", "GAUGE realip_toa_trusted_prefixes{} 2"} {
			if !slices.Contains(got, want) {
				t.Errorf("eBPF receiver's metrics lack %q", want)
			}
		}
		for e, want := range map[*testEnv]string{kmod: "kmod", ebpf: "ebpf"} {
			if got, v := receiverInfo(t, e.agent); got != want || v != 1 {
				t.Errorf("realip_toa_receiver_info{receiver=%q} %v, want receiver %q", got, v, want)
			}
		}
	}
}

// receiverInfo returns the one realip_toa_receiver_info series: its
// receiver label and value.
func receiverInfo(t *testing.T, a *agent.Agent) (string, float64) {
	t.Helper()
	mfs, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "realip_toa_receiver_info" && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if l := m.GetLabel(); len(l) == 1 && l[0].GetName() == "receiver" {
				return l[0].GetValue(), m.GetGauge().GetValue()
			}
		}
	}
	t.Fatal("no single realip_toa_receiver_info{receiver} series")
	return "", 0
}

// TestStatusEBPF: status of the eBPF receiver, text and JSON: where it is
// attached, its configuration and counters, and the live entries counted
// but not listed.
func TestStatusEBPF(t *testing.T) {
	e := newTestEnv(t)
	e.Write("receiver: ebpf\ncgroup: /sys/fs/cgroup/web\ntrusted: [198.51.100.0/24, 2001:db8::/32]\n")
	if _, _, err := e.agent.Start(e.ConfigPath); err != nil {
		t.Fatal(err)
	}
	e.EBPF.SetCounters(fakeCounters())
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
		"receiver:     ebpf (kernel " + agenttest.KernelRelease + ")\n",
		"cgroup:       /sys/fs/cgroup/web (id 4242)\n",
		"links:        link_sockops, link_getpeername4, link_getpeername6\n",
		"control:      maps pinned in " + e.EBPF.PinDir() + "\n",
		"trusted:      198.51.100.0/24, 2001:db8::/32\n",
		"kinds:        200, 253, 254\n",
		"config file:  " + e.ConfigPath + ": in force\n",
		"\ncounters:\n  syn_recv_sock_toa            3\n",
		"  listeners_taken_over      2603\n",
		"\nentries: 5 live (not listed: the eBPF receiver keeps its entries in socket storage, which user space cannot enumerate)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "LOCAL") || strings.Contains(out, "module:") {
		t.Errorf("status of the eBPF receiver shows an entry table or a module:\n%s", out)
	}
	var js bytes.Buffer
	if err := st.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back agent.Status
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Receiver != agent.ReceiverEBPF || back.EBPF == nil || back.EBPF.Cgroup != "/sys/fs/cgroup/web" || back.EBPF.CgroupID != 4242 ||
		len(back.EBPF.Links) != 3 || back.EBPF.PinDir != e.EBPF.PinDir() || back.Module.Loaded ||
		len(back.Counters) != len(toarecv.CounterNames) || back.Counters[13] != (agent.Counter{Name: "listeners_taken_over", Value: 2603}) ||
		back.LiveEntries != 5 || back.Entries != nil || back.EntriesNote == "" || !back.ConfigFile.InSync ||
		!strings.Contains(js.String(), `"entries": null`) {
		t.Errorf("JSON:\n%s", js.String())
	}

	// A cgroup in the file other than the one attached: a restart moves it.
	e.Write("receiver: ebpf\ncgroup: /sys/fs/cgroup/other\ntrusted: [198.51.100.0/24, 2001:db8::/32]\n")
	if st, _ = e.agent.Status(e.ConfigPath); st.ConfigFile.InSync ||
		!strings.Contains(st.ConfigFile.Differs, "the file names cgroup /sys/fs/cgroup/other, the eBPF receiver is attached to /sys/fs/cgroup/web") {
		t.Errorf("cgroup drift: %+v", st.ConfigFile)
	}

	// Maps pinned, links gone: nothing is attached, and metrics say so.
	e.EBPF.Detach()
	st, _ = e.agent.Status("")
	text.Reset()
	st.WriteText(&text)
	if !strings.Contains(text.String(), "cgroup:    none: no link is pinned, the programs are detached\n") {
		t.Errorf("detached:\n%s", text.String())
	}
	if err := agent.SwapTOACollector(e.agent, e.agent.Config()); err != nil {
		t.Fatal(err)
	}
	if got := toaSamples(t, e.agent); !slices.Contains(got, "GAUGE realip_toa_module_loaded{} 0") {
		t.Errorf("detached receiver's metrics:\n%s", strings.Join(got, "\n"))
	}
}

// TestStatusBothInPlace: both receivers at once is shown as a problem.
func TestStatusBothInPlace(t *testing.T) {
	e := newTestEnv(t)
	e.Module.Appear("198.51.100.0/24", "200")
	e.EBPF.Appear("", toarecv.Config{})
	st, err := e.agent.Status("")
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	st.WriteText(&text)
	if st.Receiver != agent.ReceiverKmod || !strings.Contains(text.String(), "PROBLEM:     toa.ko is loaded and the eBPF receiver is pinned in ") ||
		!strings.Contains(st.Problem, "run `realip-agent unload` (it removes both)") {
		t.Errorf("%+v\n%s", st, text.String())
	}
	removed, err := e.agent.UnloadReceivers()
	if err != nil || !slices.Equal(removed, []agent.ReceiverKind{agent.ReceiverKmod, agent.ReceiverEBPF}) {
		t.Errorf("unload: %v %v", removed, err)
	}
}
