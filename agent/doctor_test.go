//go:build linux

package agent_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/agent/agenttest"
	"github.com/realip/realip/toactl"
	"github.com/realip/realip/toarecv"
)

// noDKMS is a dkms command that is not installed.
const noDKMS = "realip-test-no-such-dkms"

// doctorEnv is an agent on agenttest's fakes, with a sockstat file in
// its procfs tree, for doctor.
type doctorEnv struct {
	*agenttest.Env
	agent *agent.Agent
}

func newDoctorEnv(t *testing.T) *doctorEnv {
	t.Helper()
	e := &doctorEnv{Env: agenttest.NewEnv(t)}
	e.agent = newAgent(t, e.Options())
	e.setSockets(t, 100)
	return e
}

// setSockets writes proc/net/sockstat with n TCP sockets allocated.
func (e *doctorEnv) setSockets(t *testing.T, n int) {
	t.Helper()
	body := fmt.Sprintf("sockets: used 120\nTCP: inuse 7 orphan 0 tw 2 alloc %d mem 3\nUDP: inuse 2 mem 1\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n", n)
	if err := os.WriteFile(filepath.Join(e.Dir, "proc", "net", "sockstat"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// counters are receiver counters in toa.ko's order, zero unless vals
// says otherwise.
func kmodStats(vals map[string]uint64) []toactl.Stat {
	var out []toactl.Stat
	for _, n := range toarecv.CounterNames {
		out = append(out, toactl.Stat{Name: n, Value: vals[n]})
	}
	return out
}

func ebpfCounters(vals map[string]uint64) []toarecv.Counter {
	var out []toarecv.Counter
	for _, n := range toarecv.CounterNames {
		v := vals[n]
		out = append(out, toarecv.Counter{Name: n, PerCPU: []uint64{v / 2, v - v/2}})
	}
	return out
}

// healthyCounters are those of an origin whose edge's options arrive and
// are honoured, with two connections open.
func healthyCounters() map[string]uint64 {
	return map[string]uint64{
		"syn_recv_sock_toa": 40, "syn_recv_sock_no_toa": 12, "getname_toa_ok": 80, "getname_toa_empty": 12,
		"getname_toa_bypass": 30, "ip6_address_alloc": 40, "ip6_address_free": 38, "listeners_taken_over": 2,
	}
}

func entries(n int) []toactl.Entry {
	var out []toactl.Entry
	for i := range n {
		out = append(out, toactl.Entry{
			Local:  netip.MustParseAddrPort("198.51.100.10:80"),
			Proxy:  netip.AddrPortFrom(netip.MustParseAddr("198.51.100.1"), uint16(40000+i)),
			Client: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.7"), uint16(5000+i)),
		})
	}
	return out
}

// healthyKmod: toa.ko loaded with the file's configuration, options
// arriving and honoured.
func (e *doctorEnv) healthyKmod() {
	e.Write("trusted: [198.51.100.0/24, 2001:db8::/32]\nkinds: [200, 254]\n")
	e.Module.Appear("198.51.100.0/24,2001:db8::/32", "200,254")
	e.Module.SetStats(kmodStats(healthyCounters()), entries(2))
}

// doctor runs Doctor on the environment's file, without dkms unless
// opts names it, and checks the text of the report fits 80 columns.
func (e *doctorEnv) doctor(t *testing.T, opts agent.DoctorOptions) *agent.Report {
	t.Helper()
	if opts.ConfigPath == "" {
		opts.ConfigPath, opts.ConfigGiven = e.ConfigPath, true
	}
	if opts.DKMS == nil {
		opts.DKMS = []string{noDKMS}
	}
	rep, err := e.agent.Doctor(opts)
	if err != nil {
		t.Fatal(err)
	}
	checkReportText(t, rep)
	return rep
}

// checkReportText: every check once, in order, and no line of the text
// wider than 80 columns.
func checkReportText(t *testing.T, rep *agent.Report) {
	t.Helper()
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
	}
	want := []string{"receiver", "module", "dkms", "config", "trust", "options", "untrusted", "malformed",
		"listeners", "family", "entries", "unwrap"}
	if !slices.Equal(names, want) {
		t.Errorf("checks %q, want %q", names, want)
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(b.String(), "\n") {
		if n := utf8.RuneCountInString(line); n > agent.TextWidth {
			t.Errorf("text line %d is %d columns wide:\n%s", i+1, n, line)
		}
	}
}

// expect checks the verdicts: those in want as given, every other check
// ok; and the report's status and problem count agree with them.
func expect(t *testing.T, rep *agent.Report, want map[string]agent.CheckStatus) {
	t.Helper()
	worst, problems := agent.CheckOK, 0
	for _, c := range rep.Checks {
		w, ok := want[c.Name]
		if !ok {
			w = agent.CheckOK
		}
		if c.Status != w {
			t.Errorf("%s: %s (%s; %s), want %s", c.Name, c.Status, c.Detail, c.Advice, w)
		}
		if (c.Status == agent.CheckWarn || c.Status == agent.CheckProblem) && c.Advice == "" {
			t.Errorf("%s: %s without advice: %s", c.Name, c.Status, c.Detail)
		}
		switch c.Status {
		case agent.CheckProblem:
			worst, problems = agent.CheckProblem, problems+1
		case agent.CheckWarn:
			if worst != agent.CheckProblem {
				worst = agent.CheckWarn
			}
		}
	}
	if rep.Status != worst || rep.Problems() != problems {
		t.Errorf("report status %s with %d problems, checks say %s and %d", rep.Status, rep.Problems(), worst, problems)
	}
}

// says checks that the named check's detail and advice contain every
// one of wants.
func says(t *testing.T, rep *agent.Report, name string, wants ...string) {
	t.Helper()
	c := rep.Check(name)
	if c == nil {
		t.Fatalf("no check %s", name)
	}
	text := c.Detail + " | " + c.Advice
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s: %q lacks %q", name, text, w)
		}
	}
}

func TestDoctorHealthyKmod(t *testing.T) {
	e := newDoctorEnv(t)
	e.healthyKmod()
	rep := e.doctor(t, agent.DoctorOptions{})
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip})
	if rep.Receiver != agent.ReceiverKmod || rep.Kernel != agenttest.KernelRelease || rep.WindowSeconds != 0 {
		t.Errorf("report %+v", rep)
	}
	says(t, rep, "receiver", "toa.ko 0.1.0", "live", "netlink control answers")
	says(t, rep, "module", e.ModulePath, "built for this kernel ("+agenttest.KernelRelease+")")
	says(t, rep, "dkms", "dkms is not installed")
	says(t, rep, "config", e.ConfigPath+" is in force")
	says(t, rep, "trust", "2 trusted: 198.51.100.0/24, 2001:db8::/32; kinds 200, 254")
	says(t, rep, "options", "40 of 52 connections since the receiver started carried a TOA option that was honoured")
	says(t, rep, "listeners", "2 listeners taken over", "answered 80 times")
	says(t, rep, "entries", "2 in use", "100 TCP sockets on the host")
	says(t, rep, "unwrap", "no unwrap entries configured")
}

// TestDoctorJSON: the JSON report's field names, which scripts rely on.
func TestDoctorJSON(t *testing.T) {
	e := newDoctorEnv(t)
	e.healthyKmod()
	rep := e.doctor(t, agent.DoctorOptions{Watch: time.Second, Wait: func(time.Duration) {}})
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]any) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	if got := keys(doc); !slices.Equal(got, []string{"checks", "config", "counters", "kernel", "receiver", "status", "window_seconds"}) {
		t.Errorf("report fields %q", got)
	}
	first := doc["checks"].([]any)[0].(map[string]any)
	if got := keys(first); !slices.Equal(got, []string{"detail", "name", "status"}) || first["status"] != "ok" {
		t.Errorf("check fields %q: %v", got, first)
	}
	counter := doc["counters"].([]any)[0].(map[string]any)
	if got := keys(counter); !slices.Equal(got, []string{"delta", "name", "value"}) ||
		counter["name"] != "syn_recv_sock_toa" || counter["value"] != 40.0 || counter["delta"] != 0.0 {
		t.Errorf("counter %v", counter)
	}
	if doc["window_seconds"] != 1.0 || doc["status"] != "warn" { // no connection in the window
		t.Errorf("report %v", doc)
	}
}

func TestDoctorHealthyEBPF(t *testing.T) {
	e := newDoctorEnv(t)
	e.Write("receiver: ebpf\ntrusted: [198.51.100.0/24]\nkinds: [200]\n")
	e.EBPF.Appear(agenttest.FakeCgroupRoot, toarecv.Config{Trusted: prefixes("198.51.100.0/24"), Kinds: []uint8{200}})
	e.EBPF.SetCounters(ebpfCounters(healthyCounters()))
	rep := e.doctor(t, agent.DoctorOptions{})
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip})
	says(t, rep, "receiver", "eBPF receiver", "pinned in "+e.EBPF.PinDir(), "attached to cgroup "+agenttest.FakeCgroupRoot, "3 links")
	says(t, rep, "module", "not in use: the eBPF receiver runs")
	says(t, rep, "listeners", "nothing to take over", "cgroup "+agenttest.FakeCgroupRoot)
	says(t, rep, "entries", "2 in use")
}

func TestDoctorEmptyTrustList(t *testing.T) {
	e := newDoctorEnv(t)
	e.Write("trusted: []\nkinds: [200]\n")
	e.Module.Appear("", "200")
	e.Module.SetStats(kmodStats(healthyCounters()), entries(2))
	rep := e.doctor(t, agent.DoctorOptions{})
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip, "trust": agent.CheckProblem, "untrusted": agent.CheckSkip})
	says(t, rep, "trust", "no trusted prefixes", "anyone who can reach this host can forge", "trusted: in "+e.ConfigPath)
}

// TestDoctorForgedOptions: options from an untrusted source rising in the
// window are a problem; a total without a window is a warning.
func TestDoctorForgedOptions(t *testing.T) {
	e := newDoctorEnv(t)
	e.healthyKmod()
	vals := healthyCounters()
	vals["syn_recv_sock_untrusted"] = 5
	e.Module.SetStats(kmodStats(vals), entries(2))

	rep := e.doctor(t, agent.DoctorOptions{})
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip, "untrusted": agent.CheckWarn})
	says(t, rep, "untrusted", "5 options from sources outside the trusted prefixes were ignored since the receiver started", "-watch")

	waited := time.Duration(0)
	rep = e.doctor(t, agent.DoctorOptions{Watch: 30 * time.Second, Wait: func(d time.Duration) {
		waited = d
		vals["syn_recv_sock_untrusted"] += 3
		vals["syn_recv_sock_toa"] += 4
		vals["getname_toa_ok"] += 8
		e.Module.SetStats(kmodStats(vals), entries(2))
	}})
	if waited != 30*time.Second {
		t.Errorf("waited %v", waited)
	}
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip, "untrusted": agent.CheckProblem})
	says(t, rep, "untrusted", "3 options from sources outside the trusted prefixes were ignored in the last 30s", "someone sends forged options")
	says(t, rep, "options", "4 of 7 connections in the last 30s")
	if c := rep.Counters[slices.IndexFunc(rep.Counters, func(c agent.CounterReading) bool { return c.Name == "syn_recv_sock_untrusted" })]; c.Value != 8 || c.Delta == nil || *c.Delta != 3 {
		t.Errorf("counter %+v", c)
	}
}

// TestDoctorCounterReset: a counter that went down in the window (the
// receiver was loaded again) counts from zero.
func TestDoctorCounterReset(t *testing.T) {
	e := newDoctorEnv(t)
	e.healthyKmod()
	vals := map[string]uint64{"syn_recv_sock_toa": 3, "getname_toa_ok": 3, "ip6_address_alloc": 3, "ip6_address_free": 3, "syn_recv_sock_bad_option": 2}
	rep := e.doctor(t, agent.DoctorOptions{Watch: time.Minute, Wait: func(time.Duration) {
		e.Module.SetStats(kmodStats(vals), nil)
	}})
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip, "malformed": agent.CheckProblem})
	says(t, rep, "malformed", "2 options malformed", "in the last 1m0s")
	says(t, rep, "options", "3 of 5 connections in the last 1m0s")
}

func TestDoctorNoReceiver(t *testing.T) {
	e := newDoctorEnv(t)
	e.Write("trusted: [198.51.100.0/24]\n")
	rep := e.doctor(t, agent.DoctorOptions{})
	skipped := map[string]agent.CheckStatus{"receiver": agent.CheckProblem, "dkms": agent.CheckSkip}
	for _, n := range []string{"trust", "options", "untrusted", "malformed", "listeners", "family", "entries"} {
		skipped[n] = agent.CheckSkip
	}
	expect(t, rep, skipped)
	says(t, rep, "receiver", "no TOA receiver is in place", "servers see the edge's address", "systemctl restart realip-agent",
		"It would run kmod (module_path names "+e.ModulePath+")")
	says(t, rep, "config", "is valid", "no receiver configuration to compare it with")
	if rep.Receiver != agent.ReceiverNone || rep.Problems() != 1 {
		t.Errorf("receiver %s, %d problems", rep.Receiver, rep.Problems())
	}
}

// TestDoctorModuleForOtherKernel: the module file the agent would load
// was built for another kernel: a problem naming both releases and the
// rebuild, a warning while the eBPF receiver serves.
func TestDoctorModuleForOtherKernel(t *testing.T) {
	e := newDoctorEnv(t)
	bad := agenttest.BuildObject(t, e.Dir, "toa-old.ko", agenttest.RealipFields(agenttest.OtherRelease)...)
	e.Write("module_path: " + bad + "\ntrusted: [198.51.100.0/24]\n")
	rep := e.doctor(t, agent.DoctorOptions{})
	want := map[string]agent.CheckStatus{"receiver": agent.CheckProblem, "module": agent.CheckProblem, "dkms": agent.CheckSkip}
	for _, n := range []string{"trust", "options", "untrusted", "malformed", "listeners", "family", "entries"} {
		want[n] = agent.CheckSkip
	}
	expect(t, rep, want)
	says(t, rep, "module", bad+" was built for kernel "+agenttest.OtherRelease+", this kernel is "+agenttest.KernelRelease,
		"dkms install toa/0.1.0 -k "+agenttest.KernelRelease, "make -C kmod KDIR=/lib/modules/"+agenttest.KernelRelease+"/build")

	e.Write("receiver: ebpf\nmodule_path: " + bad + "\ntrusted: [198.51.100.0/24]\n")
	e.EBPF.Appear(agenttest.FakeCgroupRoot, toarecv.Config{Trusted: prefixes("198.51.100.0/24")})
	e.EBPF.SetCounters(ebpfCounters(healthyCounters()))
	rep = e.doctor(t, agent.DoctorOptions{})
	expect(t, rep, map[string]agent.CheckStatus{"module": agent.CheckWarn, "dkms": agent.CheckSkip})
}

// TestDoctorModuleSearch: with no module_path, the running kernel's
// module folders are searched.
func TestDoctorModuleSearch(t *testing.T) {
	e := newDoctorEnv(t)
	e.Write("module_path: \"\"\ntrusted: [198.51.100.0/24]\n")
	rep := e.doctor(t, agent.DoctorOptions{})
	if c := rep.Check("module"); c.Status != agent.CheckSkip || !strings.Contains(c.Detail, "not needed: the eBPF receiver can run here") {
		t.Errorf("no module, eBPF possible: %+v", c)
	}
	e.EBPF.SetUnavailable(errors.New("no cgroup v2"))
	rep = e.doctor(t, agent.DoctorOptions{})
	if c := rep.Check("module"); c.Status != agent.CheckProblem || !strings.Contains(c.Detail, "no toa.ko for kernel "+agenttest.KernelRelease) ||
		!strings.Contains(c.Advice, "install toa-dkms") {
		t.Errorf("no module, no eBPF: %+v", c)
	}
	says(t, rep, "receiver", "It would fail: no TOA receiver can run here")
	path := e.InstallModule(false)
	rep = e.doctor(t, agent.DoctorOptions{})
	says(t, rep, "module", path+": toa 0.1.0, built for this kernel")
	if c := rep.Check("module"); c.Status != agent.CheckOK {
		t.Errorf("installed module: %+v", c)
	}
}

func TestDoctorLoadedModuleDiffers(t *testing.T) {
	e := newDoctorEnv(t)
	e.healthyKmod()
	other := agenttest.BuildModule(t, t.TempDir(), slices.Concat(agenttest.RealipFields(agenttest.KernelRelease)[:6],
		[]string{"srcversion=FEDCBA9876543210FEDCBA", "depends=", "name=toa", "vermagic=" + agenttest.KernelRelease + " SMP "})...)
	e.Write("module_path: " + other + "\ntrusted: [198.51.100.0/24, 2001:db8::/32]\nkinds: [200, 254]\n")
	rep := e.doctor(t, agent.DoctorOptions{})
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip, "module": agent.CheckWarn})
	says(t, rep, "module", "the loaded toa.ko is another build (srcversion 0123456789ABCDEF012345, the file's FEDCBA9876543210FEDCBA)")
}

func TestDoctorReceiverStates(t *testing.T) {
	e := newDoctorEnv(t)
	e.healthyKmod()
	e.EBPF.Appear(agenttest.FakeCgroupRoot, toarecv.Config{})
	rep := e.doctor(t, agent.DoctorOptions{})
	says(t, rep, "receiver", "both at once", "realip-agent unload")
	if c := rep.Check("receiver"); c.Status != agent.CheckProblem {
		t.Errorf("both: %+v", c)
	}

	e = newDoctorEnv(t)
	e.Write("receiver: ebpf\ntrusted: [198.51.100.0/24]\n")
	e.EBPF.Appear(agenttest.FakeCgroupRoot, toarecv.Config{Trusted: prefixes("198.51.100.0/24")})
	e.EBPF.Detach()
	rep = e.doctor(t, agent.DoctorOptions{})
	if c := rep.Check("receiver"); c.Status != agent.CheckProblem || !strings.Contains(c.Detail, "its programs are detached") {
		t.Errorf("detached: %+v", c)
	}
}

func TestDoctorConfigFile(t *testing.T) {
	e := newDoctorEnv(t)
	e.healthyKmod()
	e.Write("trusted: [203.0.113.0/24]\nkinds: [200, 254]\n")
	rep := e.doctor(t, agent.DoctorOptions{})
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip, "config": agent.CheckProblem})
	says(t, rep, "config", "is not in force", `trusted="203.0.113.0/24"`, "systemctl reload realip-agent")

	missing := filepath.Join(e.Dir, "nowhere.yaml")
	rep = e.doctor(t, agent.DoctorOptions{ConfigPath: missing})
	if c := rep.Check("config"); c.Status != agent.CheckWarn || !strings.Contains(c.Detail, "no configuration file at "+missing) {
		t.Errorf("default file missing: %+v", c)
	}
	rep = e.doctor(t, agent.DoctorOptions{ConfigPath: missing, ConfigGiven: true})
	if c := rep.Check("config"); c.Status != agent.CheckProblem || !strings.Contains(c.Detail, missing) {
		t.Errorf("named file missing: %+v", c)
	}
	e.Write("trusted: [not-a-prefix]\n")
	rep = e.doctor(t, agent.DoctorOptions{})
	if c := rep.Check("config"); c.Status != agent.CheckProblem || !strings.Contains(c.Detail, "trusted") ||
		!strings.Contains(c.Advice, "realip-agent check -config "+e.ConfigPath) {
		t.Errorf("bad file: %+v", c)
	}
}

// TestDoctorOptionsArrive: no connection is a warning; connections with
// no honoured option a problem whose advice follows the cause.
func TestDoctorOptionsArrive(t *testing.T) {
	for _, tc := range []struct {
		name   string
		vals   map[string]uint64
		status agent.CheckStatus
		want   []string
	}{
		{"no traffic", map[string]uint64{}, agent.CheckWarn, []string{"no connection reached the receiver", "-watch 30s"}},
		{"no option", map[string]uint64{"syn_recv_sock_no_toa": 9}, agent.CheckProblem,
			[]string{"none of 9 connections", "none carried an option of a configured kind", "IP mode is toa", "[200 254]"}},
		{"dropped", map[string]uint64{"syn_recv_sock_no_toa": 9, "syn_recv_sock_bad_option": 1}, agent.CheckProblem,
			[]string{"none of 10 connections", "see untrusted and malformed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newDoctorEnv(t)
			e.healthyKmod()
			e.Module.SetStats(kmodStats(tc.vals), nil)
			rep := e.doctor(t, agent.DoctorOptions{})
			if c := rep.Check("options"); c.Status != tc.status {
				t.Errorf("options: %+v", c)
			}
			says(t, rep, "options", tc.want...)
		})
	}
}

// TestDoctorListenersNotTakenOver: options honoured but no accept() or
// getpeername() reached the receiver.
func TestDoctorListenersNotTakenOver(t *testing.T) {
	vals := map[string]uint64{"syn_recv_sock_toa": 4, "ip6_address_alloc": 4, "ip6_address_free": 4, "listeners_taken_over": 1}
	e := newDoctorEnv(t)
	e.healthyKmod()
	e.Module.SetStats(kmodStats(vals), nil)
	rep := e.doctor(t, agent.DoctorOptions{})
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip, "listeners": agent.CheckProblem})
	says(t, rep, "listeners", "4 connections", "their listener was not taken over (1 listeners taken over since load)", "restart the server")

	e = newDoctorEnv(t)
	e.Write("receiver: ebpf\ntrusted: [198.51.100.0/24]\n")
	e.EBPF.Appear(agenttest.FakeCgroupRoot, toarecv.Config{Trusted: prefixes("198.51.100.0/24")})
	e.EBPF.SetCounters(ebpfCounters(vals))
	rep = e.doctor(t, agent.DoctorOptions{})
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip, "listeners": agent.CheckWarn})
}

func TestDoctorFamilyMismatch(t *testing.T) {
	e := newDoctorEnv(t)
	e.Write("receiver: ebpf\ntrusted: [198.51.100.0/24]\n")
	e.EBPF.Appear(agenttest.FakeCgroupRoot, toarecv.Config{Trusted: prefixes("198.51.100.0/24")})
	vals := healthyCounters()
	vals["getname_toa_mismatch"] = 1
	e.EBPF.SetCounters(ebpfCounters(vals))
	rep := e.doctor(t, agent.DoctorOptions{})
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip, "family": agent.CheckWarn})
	says(t, rep, "family", "1 accept()/getpeername() call since", "use toa.ko")
	rep = e.doctor(t, agent.DoctorOptions{Watch: time.Second, Wait: func(time.Duration) {
		vals["getname_toa_mismatch"] += 2
		e.EBPF.SetCounters(ebpfCounters(vals))
	}})
	expect(t, rep, map[string]agent.CheckStatus{"dkms": agent.CheckSkip, "family": agent.CheckProblem,
		"options": agent.CheckWarn, "listeners": agent.CheckOK})
	says(t, rep, "family", "2 accept()/getpeername() calls in the last 1s")
}

// TestDoctorEntries: the alloc/free balance against the host's TCP
// sockets, and allocation failures.
func TestDoctorEntries(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vals    map[string]uint64
		sockets int
		status  agent.CheckStatus
		want    string
	}{
		{"balanced", map[string]uint64{"syn_recv_sock_toa": 9, "getname_toa_ok": 9, "ip6_address_alloc": 9, "ip6_address_free": 2}, 7,
			agent.CheckOK, "7 in use (ip6_address_alloc 9, ip6_address_free 2), 7 TCP sockets on the host"},
		{"leak", map[string]uint64{"syn_recv_sock_toa": 9, "getname_toa_ok": 9, "ip6_address_alloc": 9, "ip6_address_free": 2}, 6,
			agent.CheckProblem, "7 entries in use, more than the 6 TCP sockets on the host"},
		{"free ahead", map[string]uint64{"syn_recv_sock_toa": 2, "getname_toa_ok": 2, "ip6_address_alloc": 2, "ip6_address_free": 3}, 6,
			agent.CheckProblem, "ip6_address_free (3) is ahead of ip6_address_alloc (2)"},
		{"alloc failed", map[string]uint64{"syn_recv_sock_toa": 2, "getname_toa_ok": 2, "ip6_address_alloc": 2, "alloc_failed": 1}, 6,
			agent.CheckWarn, "1 connections since the receiver started got no entry (alloc_failed: out of memory)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newDoctorEnv(t)
			e.healthyKmod()
			e.setSockets(t, tc.sockets)
			e.Module.SetStats(kmodStats(tc.vals), nil)
			rep := e.doctor(t, agent.DoctorOptions{})
			if c := rep.Check("entries"); c.Status != tc.status {
				t.Errorf("entries: %+v", c)
			}
			says(t, rep, "entries", tc.want)
		})
	}
}

// TestDoctorDKMS runs the real dkms on trees of the test's own.
func TestDoctorDKMS(t *testing.T) {
	const ver = "0.1.0"
	for _, tc := range []struct {
		name   string
		setup  func(d *agenttest.DKMS)
		loaded bool
		status agent.CheckStatus
		want   []string
	}{
		{"not registered", func(d *agenttest.DKMS) {}, true, agent.CheckSkip, []string{"toa is not registered with DKMS"}},
		{"installed", func(d *agenttest.DKMS) { d.Add(ver); d.Installed(ver, agenttest.KernelRelease, false) }, true,
			agent.CheckOK, []string{"toa/0.1.0 is installed for kernel " + agenttest.KernelRelease}},
		{"installed file differs", func(d *agenttest.DKMS) { d.Add(ver); d.Installed(ver, agenttest.KernelRelease, true) }, true,
			agent.CheckWarn, []string{"WARNING! Diff between built and installed module!", "dkms install --force toa/0.1.0 -k " + agenttest.KernelRelease}},
		{"built only", func(d *agenttest.DKMS) { d.Add(ver); d.Build(ver, agenttest.KernelRelease) }, true,
			agent.CheckWarn, []string{"toa/0.1.0 is built for kernel " + agenttest.KernelRelease + " but not installed"}},
		{"other kernel, none loaded", func(d *agenttest.DKMS) { d.Add(ver); d.Installed(ver, agenttest.OtherRelease, false) }, false,
			agent.CheckProblem, []string{"not built for kernel " + agenttest.KernelRelease, "built for " + agenttest.OtherRelease + " (installed)",
				"linux-headers-" + agenttest.KernelRelease}},
		{"added only, none loaded", func(d *agenttest.DKMS) { d.Add(ver) }, false,
			agent.CheckProblem, []string{"toa/0.1.0 is registered with DKMS but not built for kernel " + agenttest.KernelRelease}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := agenttest.NewDKMS(t)
			tc.setup(d)
			e := newDoctorEnv(t)
			e.healthyKmod()
			if !tc.loaded {
				e.Module.Unload("toa")
			}
			rep := e.doctor(t, agent.DoctorOptions{DKMS: d.Command()})
			if c := rep.Check("dkms"); c.Status != tc.status {
				t.Errorf("dkms: %+v", c)
			}
			says(t, rep, "dkms", tc.want...)
		})
	}
}
