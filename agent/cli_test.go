//go:build linux

package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/realip/realip/internal/testenv"
)

func (e *testEnv) main(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	opts := e.options()
	opts.Logger = slogTo(&errb)
	code = MainWith(args, &out, &errb, opts)
	return code, out.String(), errb.String()
}

func TestCLILoadStatusUnload(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24]\n")

	code, _, _ := e.main("status")
	if code != ExitNotLoaded {
		t.Errorf("status before load: exit %d, want %d", code, ExitNotLoaded)
	}
	code, out, errs := e.main("load", "-config", e.cfg)
	if code != 0 || !strings.Contains(out, "toa 0.1.0: loaded "+e.module+`; trusted="198.51.100.0/24" kinds="200,253,254"`) {
		t.Fatalf("load: %d %q %q", code, out, errs)
	}
	code, out, _ = e.main("load", "-config", e.cfg)
	if code != 0 || !strings.Contains(out, "already loaded") {
		t.Errorf("second load: %d %q", code, out)
	}
	code, out, _ = e.main("status", "-json")
	var st Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Config == nil || st.Config.Trusted[0] != "198.51.100.0/24" {
		t.Errorf("status -json: %d %s", code, out)
	}
	code, out, _ = e.main("status", "-config", e.cfg)
	if code != 0 || !strings.Contains(out, "trusted:      198.51.100.0/24") || !strings.Contains(out, "in force") {
		t.Errorf("status: %d\n%s", code, out)
	}
	if code, out, _ = e.main("unload"); code != 0 || out != "toa unloaded\n" {
		t.Errorf("unload: %d %q", code, out)
	}
	if code, out, _ = e.main("unload"); code != 0 || out != "toa is not loaded\n" {
		t.Errorf("second unload: %d %q", code, out)
	}
}

func TestCLILoadRefusesOtherKernel(t *testing.T) {
	e := newTestEnv(t)
	bad := buildObject(t, e.dir, "toa-old.ko", realipFields(otherRelease)...)
	e.write("module_path: " + bad + "\n")
	code, _, errs := e.main("load", "-config", e.cfg)
	if code != ExitConfig {
		t.Errorf("exit %d", code)
	}
	for _, want := range []string{"realip-agent load: refusing to load " + bad, otherRelease, testRelease,
		"dkms install toa/0.1.0 -k " + testRelease, "make -C kmod KDIR=/lib/modules/" + testRelease + "/build"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

func TestCLICheckAndModprobeConf(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24, 2001:db8::/32]\nkinds: [200]\n")
	code, out, _ := e.main("check", "-config", e.cfg)
	if code != 0 || !strings.Contains(out, `ok (module_path="`+e.module+`" trusted="198.51.100.0/24,2001:db8::/32" kinds="200"`) {
		t.Errorf("check: %d %q", code, out)
	}
	code, out, _ = e.main("modprobe-conf", "-config", e.cfg)
	if code != 0 || !strings.HasSuffix(out, "\noptions toa trusted=198.51.100.0/24,2001:db8::/32 kinds=200\n") || strings.Contains(out, "WARNING") {
		t.Errorf("modprobe-conf: %d\n%s", code, out)
	}
	e.write("trusted: []\n")
	code, out, errs := e.main("check", "-config", e.cfg)
	if code != 0 || !strings.Contains(errs, "warning: trusted is empty") {
		t.Errorf("check empty trust: %d %q %q", code, out, errs)
	}
	_, out, _ = e.main("modprobe-conf", "-config", e.cfg)
	if !strings.Contains(out, "WARNING: no trusted prefixes") || !strings.HasSuffix(out, "\noptions toa kinds=200,253,254\n") {
		t.Errorf("modprobe-conf empty trust:\n%s", out)
	}
	e.write("kinds: [200, 300]\n")
	code, out, errs = e.main("check", "-config", e.cfg)
	if code != ExitConfig || out != "" || !strings.Contains(errs, "kinds[1]: 300 is not a TCP option kind") {
		t.Errorf("check bad: %d %q %q", code, out, errs)
	}
}

func TestCLIUsage(t *testing.T) {
	e := newTestEnv(t)
	for _, args := range [][]string{nil, {"frobnicate"}, {"run", "extra"}, {"status", "-bogus"}, {"exporter"}} {
		if code, _, _ := e.main(args...); code != ExitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, ExitUsage)
		}
	}
	if code, out, _ := e.main("help"); code != 0 || !strings.Contains(out, "modprobe-conf") {
		t.Errorf("help: %d", code)
	}
}

// TestPromtool runs `promtool check metrics` on the agent's exposition
// (its own metrics, the toa_stats collector, Go and process metrics).
func TestPromtool(t *testing.T) {
	promtool := testenv.RequireCommand(t, "promtool")
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24]\n")
	if _, _, err := e.agent.Start(e.cfg); err != nil {
		t.Fatal(err)
	}
	e.agent.Reload(e.cfg)
	if err := e.agent.swapTOACollector(e.agent.Config()); err != nil {
		t.Fatal(err)
	}
	mfs, err := e.agent.Registry().Gather()
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
	for _, want := range []string{"realip_toa_syn_recv_sock_toa_total", "realip_agent_config_reloads_total", "realip_toa_control_up"} {
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

// TestPackagedFiles checks the files under packaging/ that the agent's
// behaviour depends on.
func TestPackagedFiles(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join("..", "packaging", p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	unit := read("systemd/realip-agent.service")
	for _, want := range []string{
		"ExecStart=/usr/bin/realip-agent run -config /etc/realip/agent.yaml",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"Type=notify",
		"CapabilityBoundingSet=CAP_SYS_MODULE CAP_NET_ADMIN",
		"ProtectSystem=strict",
		"NoNewPrivileges=yes",
		"SystemCallFilter=@system-service @module",
		"RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
	} {
		if !strings.Contains(unit, want+"\n") {
			t.Errorf("unit lacks %q", want)
		}
	}
	// Directives that would stop finit_module or the netlink push.
	for _, bad := range []string{"ProtectKernelModules=yes", "PrivateNetwork=yes", "PrivateUsers=yes", "DynamicUser=yes"} {
		if strings.Contains(unit, "\n"+bad) {
			t.Errorf("unit has %q, which breaks loading or configuring the module", bad)
		}
	}
	if got := strings.TrimSpace(lastLine(read("config/modules-load.d/toa.conf"))); got != "toa" {
		t.Errorf("modules-load.d entry %q", got)
	}
	if got := lastLine(read("config/modprobe.d/toa.conf")); !strings.HasPrefix(got, "options toa ") {
		t.Errorf("modprobe.d: %q", got)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestCLIRunBadConfigExitsConfig(t *testing.T) {
	e := newTestEnv(t)
	e.write("trusted: [198.51.100.0/24]\nkinds: []\n")
	code, _, errs := e.main("run", "-config", e.cfg)
	if code != ExitConfig || !strings.Contains(errs, "realip-agent run: config "+e.cfg+", line 3: kinds: must list at least one option kind") {
		t.Errorf("exit %d: %s", code, errs)
	}
	if _, sets, loads, _ := e.mod.state(); sets != 0 || loads != 0 {
		t.Errorf("%d sets %d loads", sets, loads)
	}
	// A missing module file may appear later (DKMS): an ordinary failure.
	e.write("module_path: /nonexistent/toa.ko\n")
	if code, _, errs := e.main("load", "-config", e.cfg); code != ExitError || !strings.Contains(errs, "/nonexistent/toa.ko") {
		t.Errorf("missing module: exit %d: %s", code, errs)
	}
}

func TestExporterCommand(t *testing.T) {
	var errb syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan int, 1)
	go func() {
		done <- runExporter(ctx, "127.0.0.1:0", "../exporter/testdata/seed", true, slogTo(&errb), &errb,
			func(a string) { addrc <- a })
	}()
	var addr string
	select {
	case addr = <-addrc:
	case code := <-done:
		t.Fatalf("exporter exited %d: %s", code, errb.String())
	}
	body := scrape(t, "http://"+addr+"/metrics")
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
	if code := runExporter(context.Background(), "127.0.0.1:0", "/nonexistent-procfs", false, slogTo(&errb), &errb, nil); code != ExitError {
		t.Errorf("bad procfs: exit %d", code)
	}
}
