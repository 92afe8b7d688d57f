//go:build linux

package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/internal/cgroup2/cgrouptest"
	"github.com/realip/realip/internal/testenv"
	"github.com/realip/realip/toarecv"
)

// helperPinDir, when set, makes the test binary run realip-agent with its
// arguments, the eBPF receiver pinned there, instead of the tests.
const helperPinDir = "REALIP_AGENT_CLI_PIN_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperPinDir); dir != "" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, agent.Options{EBPFPinDir: dir}))
	}
	os.Exit(m.Run())
}

// unitCapabilities reads CapabilityBoundingSet= of the packaged unit.
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../../../packaging/systemd/realip-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapabilityBoundingSet="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatal("the unit has no CapabilityBoundingSet=")
	return nil
}

// runWithCaps runs realip-agent (this binary as the helper) as root with
// only caps in its bounding set, as systemd runs the unit, and returns its
// exit status and output.
func runWithCaps(t *testing.T, setpriv, pinDir string, caps []string, args ...string) (int, string) {
	t.Helper()
	set := []string{"-all"}
	for _, c := range caps {
		set = append(set, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, append([]string{"--bounding-set=" + strings.Join(set, ","), "--inh-caps=-all", "--", self}, args...)...)
	cmd.Env = append(os.Environ(), helperPinDir+"="+pinDir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	}
	t.Fatalf("running %s: %v", setpriv, err)
	return 0, ""
}

// TestUnitCapabilitiesEBPF: with exactly the capabilities the packaged
// unit grants, realip-agent attaches the real eBPF receiver and detaches
// it again; without CAP_PERFMON or CAP_BPF it cannot, so neither is there
// for nothing. (The unit's syscall filter and mounts need systemd: the
// packages' VM test runs them.)
func TestUnitCapabilitiesEBPF(t *testing.T) {
	setpriv := testenv.RequireCommand(t, "setpriv")
	caps := unitCapabilities(t)
	cg, _ := cgrouptest.New(t, "realip-agent-cli")
	pinDir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("realip-agent-cli-test-%d-%06x", os.Getpid(), rand.Uint32()&0xffffff))
	t.Cleanup(func() {
		toarecv.Unpin(pinDir)
		os.RemoveAll(pinDir)
	})
	testenv.MountBPFFS(t) // the unit does not let the agent mount it (no CAP_SYS_ADMIN)
	if err := toarecv.Available(toarecv.Options{Cgroup: cg, PinDir: pinDir}); err != nil {
		testenv.SkipOrFail(t, "the eBPF TOA receiver cannot run here: %v", err)
	}
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("receiver: ebpf\ncgroup: "+cg+"\ntrusted: [198.51.100.0/24]\nmetrics_listen: \"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, drop := range []string{"CAP_PERFMON", "CAP_BPF"} {
		var fewer []string
		for _, c := range caps {
			if c != drop {
				fewer = append(fewer, c)
			}
		}
		if len(fewer) == len(caps) {
			t.Fatalf("the unit does not grant %s: %q", drop, caps)
		}
		if code, out := runWithCaps(t, setpriv, pinDir, fewer, "load", "-config", cfg); code == 0 {
			t.Errorf("without %s: load succeeded: %s", drop, out)
		}
	}
	code, out := runWithCaps(t, setpriv, pinDir, caps, "load", "-config", cfg)
	if code != 0 || !strings.Contains(out, "eBPF TOA receiver: attached to cgroup "+cg) {
		t.Fatalf("load with the unit's capabilities %q: exit %d\n%s", caps, code, out)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(pinDir, "link_sockops"), &st); err != nil {
		t.Errorf("not pinned: %v", err)
	}
	if code, out = runWithCaps(t, setpriv, pinDir, caps, "status"); code != 0 || !strings.Contains(out, "receiver:  ebpf") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	if code, out = runWithCaps(t, setpriv, pinDir, caps, "unload"); code != 0 || !strings.Contains(out, "eBPF TOA receiver detached and unpinned") {
		t.Errorf("unload: exit %d\n%s", code, out)
	}
}
