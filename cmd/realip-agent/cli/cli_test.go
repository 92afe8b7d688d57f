//go:build linux

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"strings"
	"testing"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/agent/agenttest"
)

// cliEnv runs realip-agent's commands on agenttest's fakes.
type cliEnv struct{ *agenttest.Env }

func newCLIEnv(t *testing.T) cliEnv { return cliEnv{agenttest.NewEnv(t)} }

// main runs realip-agent with args and returns its exit status and output;
// the agent logs to stderr, as the command's default logger does.
func (e cliEnv) main(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	opts := e.Options()
	opts.Logger = slog.New(slog.NewTextHandler(&errb, nil))
	code = run(args, &out, &errb, opts)
	return code, out.String(), errb.String()
}

func TestCLILoadStatusUnload(t *testing.T) {
	e := newCLIEnv(t)
	e.Write("trusted: [198.51.100.0/24]\n")

	code, _, _ := e.main("status")
	if code != exitNotLoaded {
		t.Errorf("status before load: exit %d, want %d", code, exitNotLoaded)
	}
	code, out, errs := e.main("load", "-config", e.ConfigPath)
	if code != 0 || !strings.Contains(out, "toa 0.1.0: loaded "+e.ModulePath+`; trusted="198.51.100.0/24" kinds="200,253,254"`) {
		t.Fatalf("load: %d %q %q", code, out, errs)
	}
	code, out, _ = e.main("load", "-config", e.ConfigPath)
	if code != 0 || !strings.Contains(out, "already loaded") {
		t.Errorf("second load: %d %q", code, out)
	}
	code, out, _ = e.main("status", "-json")
	var st agent.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Config == nil || st.Config.Trusted[0] != "198.51.100.0/24" {
		t.Errorf("status -json: %d %s", code, out)
	}
	code, out, _ = e.main("status", "-config", e.ConfigPath)
	if code != 0 || !strings.Contains(out, "trusted:      198.51.100.0/24") || !strings.Contains(out, "in force") {
		t.Errorf("status: %d\n%s", code, out)
	}
	if code, out, _ = e.main("unload"); code != 0 || out != "toa unloaded\n" {
		t.Errorf("unload: %d %q", code, out)
	}
	if code, out, _ = e.main("unload"); code != 0 || out != "no TOA receiver is in place (toa is not loaded, no eBPF receiver is pinned in "+e.EBPF.PinDir()+")\n" {
		t.Errorf("second unload: %d %q", code, out)
	}
}

func TestCLILoadRefusesOtherKernel(t *testing.T) {
	e := newCLIEnv(t)
	bad := agenttest.BuildObject(t, e.Dir, "toa-old.ko", agenttest.RealipFields(agenttest.OtherRelease)...)
	e.Write("module_path: " + bad + "\n")
	code, _, errs := e.main("load", "-config", e.ConfigPath)
	if code != exitConfig {
		t.Errorf("exit %d", code)
	}
	for _, want := range []string{"realip-agent load: refusing to load " + bad, agenttest.OtherRelease, agenttest.KernelRelease,
		"dkms install toa/0.1.0 -k " + agenttest.KernelRelease, "make -C kmod KDIR=/lib/modules/" + agenttest.KernelRelease + "/build"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

func TestCLICheckAndModprobeConf(t *testing.T) {
	e := newCLIEnv(t)
	e.Write("trusted: [198.51.100.0/24, 2001:db8::/32]\nkinds: [200]\n")
	code, out, _ := e.main("check", "-config", e.ConfigPath)
	if code != 0 || !strings.Contains(out, `ok (module_path="`+e.ModulePath+`" trusted="198.51.100.0/24,2001:db8::/32" kinds="200"`) {
		t.Errorf("check: %d %q", code, out)
	}
	code, out, _ = e.main("modprobe-conf", "-config", e.ConfigPath)
	if code != 0 || !strings.HasSuffix(out, "\noptions toa trusted=198.51.100.0/24,2001:db8::/32 kinds=200\n") || strings.Contains(out, "WARNING") {
		t.Errorf("modprobe-conf: %d\n%s", code, out)
	}
	e.Write("trusted: []\n")
	code, out, errs := e.main("check", "-config", e.ConfigPath)
	if code != 0 || !strings.Contains(errs, "warning: trusted is empty") {
		t.Errorf("check empty trust: %d %q %q", code, out, errs)
	}
	_, out, _ = e.main("modprobe-conf", "-config", e.ConfigPath)
	if !strings.Contains(out, "WARNING: no trusted prefixes") || !strings.HasSuffix(out, "\noptions toa kinds=200,253,254\n") {
		t.Errorf("modprobe-conf empty trust:\n%s", out)
	}
	e.Write("kinds: [200, 300]\n")
	code, out, errs = e.main("check", "-config", e.ConfigPath)
	if code != exitConfig || out != "" || !strings.Contains(errs, "kinds[1]: 300 is not a TCP option kind") {
		t.Errorf("check bad: %d %q %q", code, out, errs)
	}
}

func TestCLIUsage(t *testing.T) {
	e := newCLIEnv(t)
	for _, args := range [][]string{nil, {"frobnicate"}, {"run", "extra"}, {"status", "-bogus"}, {"exporter"}} {
		if code, _, _ := e.main(args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, out, _ := e.main("help"); code != 0 || !strings.Contains(out, "modprobe-conf") {
		t.Errorf("help: %d", code)
	}
}

// TestUsageText pins the usage text the command table makes: the table
// is its only source, so a command or flag changed there shows here.
func TestUsageText(t *testing.T) {
	const want = `usage: realip-agent COMMAND [flags]

Runs realip's TOA receiver, the kernel module toa.ko or the eBPF receiver,
keeps its trusted prefixes and option kinds in step with a configuration
file, and serves metrics.

commands:
  run      [-config FILE]        start or adopt the TOA receiver (toa.ko or
                                 eBPF), apply the configuration, run the unwrap
                                 relays, serve metrics; SIGHUP reloads the file,
                                 SIGTERM exits and leaves the receiver in place
  unwrap   [-config FILE]        only the file's unwrap list: take PROXY/SPP
                                 from the edges and connect to local servers
                                 from the client's address (no TOA receiver);
                                 SIGHUP reloads, SIGTERM closes the relays
  load     [-config FILE]        start or adopt the TOA receiver and apply the
                                 configuration
  unload                         remove the TOA receiver in place (unload
                                 toa.ko; detach and unpin the eBPF receiver)
  status   [-json] [-config FILE]
                                 the TOA receiver in place, its configuration,
                                 counters and live entries (exit 3: none)
  doctor   [-json] [-watch DURATION] [-config FILE]
                                 check the TOA chain on this host: receiver,
                                 module, DKMS, trust list, options honoured or
                                 dropped, entries, listeners; say what to do
                                 (exit 1: a problem found)
  check    [-config FILE]        check the configuration file
  modprobe-conf [-config FILE]   print an /etc/modprobe.d/toa.conf line with the
                                 file's trusted prefixes and kinds
  exporter -listen ADDR [-procfs DIR] [-per-cpu]
                                 serve /proc/net/toa_stats metrics only (any
                                 vendor's TOA module; no module handling)

The configuration file defaults to /etc/realip/agent.yaml.
Exit status: 0 done, 1 failed, 2 usage, 3 (status) no receiver in place,
78 bad configuration file, a module file refused (built for another kernel)
or the other receiver in place (run unload first). doctor: 0 no problem
found (warnings allowed), 1 a problem found.
`
	for _, help := range []string{"help", "-h", "-help", "--help"} {
		var out, errb bytes.Buffer
		if code := run([]string{help}, &out, &errb, agent.Options{}); code != exitOK || out.String() != want || errb.Len() > 0 {
			t.Errorf("%s: exit %d, stderr %q, usage:\n%s", help, code, errb.String(), out.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb, agent.Options{}); code != exitUsage || errb.String() != want || out.Len() > 0 {
		t.Errorf("no command: exit %d, stdout %q, stderr:\n%s", code, out.String(), errb.String())
	}
	// Every flag a command defines is in its synopsis.
	for _, c := range commands {
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		if c.flags != nil {
			c.flags(fs, &flagValues{})
		}
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(c.synopsis, "-"+f.Name) {
				t.Errorf("%s: flag -%s is not in the synopsis %q", c.name, f.Name, c.synopsis)
			}
		})
	}
}

func TestCLIRunBadConfigExitsConfig(t *testing.T) {
	e := newCLIEnv(t)
	e.Write("trusted: [198.51.100.0/24]\nkinds: []\n")
	code, _, errs := e.main("run", "-config", e.ConfigPath)
	if code != exitConfig || !strings.Contains(errs, "realip-agent run: config "+e.ConfigPath+", line 3: kinds: must list at least one option kind") {
		t.Errorf("exit %d: %s", code, errs)
	}
	if _, sets, loads, _ := e.Module.State(); sets != 0 || loads != 0 {
		t.Errorf("%d sets %d loads", sets, loads)
	}
	// A missing module file may appear later (DKMS): an ordinary failure.
	e.Write("module_path: /nonexistent/toa.ko\n")
	if code, _, errs := e.main("load", "-config", e.ConfigPath); code != exitError || !strings.Contains(errs, "/nonexistent/toa.ko") {
		t.Errorf("missing module: exit %d: %s", code, errs)
	}
}

func TestExporterCommand(t *testing.T) {
	var errb agenttest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan int, 1)
	go func() {
		done <- runExporter(ctx, "127.0.0.1:0", "../../../exporter/testdata/seed", true, slog.New(slog.NewTextHandler(&errb, nil)), &errb,
			func(a string) { addrc <- a })
	}()
	var addr string
	select {
	case addr = <-addrc:
	case code := <-done:
		t.Fatalf("exporter exited %d: %s", code, errb.String())
	}
	body := agenttest.Scrape(t, "http://"+addr+"/metrics")
	for _, want := range []string{`realip_toa_getname_toa_empty_total{cpu="0"} 12897`, "realip_toa_module_loaded 1",
		"realip_toa_ip6_addresses_in_use 0", "process_cpu_seconds_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, "realip_agent_") || strings.Contains(body, "realip_toa_control_up") {
		t.Error("the exporter command serves agent metrics")
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d: %s", code, errb.String())
	}
	if code := runExporter(context.Background(), "127.0.0.1:0", "/nonexistent-procfs", false, slog.New(slog.NewTextHandler(&errb, nil)), &errb, nil); code != exitError {
		t.Errorf("bad procfs: exit %d", code)
	}
}

// TestCLIEBPF: load, status, a refused switch of receiver and unload with
// the eBPF receiver (agenttest's fake).
func TestCLIEBPF(t *testing.T) {
	e := newCLIEnv(t)
	e.Write("receiver: ebpf\ncgroup: /sys/fs/cgroup/web\ntrusted: [198.51.100.0/24]\n")
	code, out, errs := e.main("load", "-config", e.ConfigPath)
	want := "eBPF TOA receiver: attached to cgroup /sys/fs/cgroup/web, pinned in " + e.EBPF.PinDir() + `; trusted="198.51.100.0/24" kinds="200,253,254"` + "\n"
	if code != 0 || out != want || !strings.Contains(errs, `msg="TOA receiver chosen" receiver=ebpf configured=ebpf why="receiver: ebpf"`) {
		t.Fatalf("load: %d %q %q", code, out, errs)
	}
	if code, out, _ = e.main("load", "-config", e.ConfigPath); code != 0 || !strings.Contains(out, "already attached, to cgroup /sys/fs/cgroup/web") {
		t.Errorf("second load: %d %q", code, out)
	}
	code, out, _ = e.main("status", "-json")
	var st agent.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Receiver != agent.ReceiverEBPF || st.EBPF == nil ||
		st.Config.Trusted[0] != "198.51.100.0/24" || st.Entries != nil {
		t.Errorf("status -json: %d %s", code, out)
	}
	if code, out, _ = e.main("status"); code != 0 || !strings.Contains(out, "receiver:  ebpf (kernel ") {
		t.Errorf("status: %d\n%s", code, out)
	}
	// The module may not join it: exit 78, nothing loaded.
	e.Write("receiver: kmod\ntrusted: [198.51.100.0/24]\n")
	code, _, errs = e.main("load", "-config", e.ConfigPath)
	if code != exitConfig || !strings.Contains(errs, "receiver is kmod but the eBPF receiver is attached") {
		t.Errorf("load kmod over ebpf: %d %s", code, errs)
	}
	if _, _, loads, _ := e.Module.State(); loads != 0 {
		t.Errorf("%d module loads", loads)
	}
	if code, out, _ = e.main("unload"); code != 0 || out != "eBPF TOA receiver detached and unpinned ("+e.EBPF.PinDir()+")\n" {
		t.Errorf("unload: %d %q", code, out)
	}
	if code, _, _ = e.main("status"); code != exitNotLoaded {
		t.Errorf("status after unload: exit %d", code)
	}
	// Now the module can come.
	if code, out, errs = e.main("load", "-config", e.ConfigPath); code != 0 || !strings.Contains(out, "toa 0.1.0: loaded") {
		t.Errorf("load kmod after unload: %d %q %s", code, out, errs)
	}
}
