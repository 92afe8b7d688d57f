//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/realip/realip/internal/cgroup2/cgrouptest"
	"github.com/realip/realip/internal/testenv"
	"github.com/realip/realip/toarecv"
)

// hostConns is the load phase's connection count on the host, as in the
// VM suite.
const hostConns = 2000

// TestHostEBPF runs this suite with the eBPF receiver on the machine's own
// kernel, no VM: the same program vmtest/toa.sh boots in QEMU, built the
// same way, with the real realip-edge, whoami and the C servers in network
// namespaces of the host, the receiver attached to a throw-away cgroup the
// origin's programs run in and pinned in a folder of its own. Every check
// of the suite must pass; the test also wants the suite's key checks in
// its output (a suite that stopped early fails here), and nothing of it
// left afterwards: no pins, no cgroups of its own.
func TestHostEBPF(t *testing.T) {
	testenv.RequireRoot(t)
	if err := toarecv.Available(toarecv.Options{}); err != nil {
		testenv.SkipOrFail(t, "the eBPF receiver cannot run here: %v", err)
	}
	bins := buildSuite(t)
	cg, _ := cgrouptest.New(t, "realip-multihost")
	pinDir := filepath.Join("/sys/fs/bpf", filepath.Base(cg))
	t.Cleanup(func() {
		if err := toarecv.Unpin(pinDir); !errors.Is(err, toarecv.ErrNotPinned) {
			t.Errorf("the receiver was still pinned in %s after the suite (unpinned now: %v)", pinDir, err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins["multihost"], "-receiver", "ebpf", "-cgroup", cg, "-pin-dir", pinDir,
		"-conns", fmt.Sprint(hostConns), "-timeout", "4m",
		"-edge", bins["realip-edge"], "-whoami", bins["whoami"], "-c4", bins["toa_server4"], "-c6", bins["toa_server6"])
	out, err := cmd.CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || !strings.Contains(string(out), "multihost: all checks passed") {
		t.Fatalf("multihost -receiver ebpf: %v\n%s", err, out)
	}
	checkKeyRows(t, lines)
	for _, dir := range []string{"edge", "origin", "self"} {
		if _, err := os.Stat(filepath.Join(cg, dir)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the suite's cgroup %s/%s is still there (%v)", cg, dir, err)
		}
	}
	if _, err := os.Stat(pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the pin folder %s is still there (%v)", pinDir, err)
	}
}

// keyRows are checks the suite must have passed, by the start of their
// line: every step of the host requirements.
var keyRows = []string{
	"ok   ebpf receiver: eBPF receiver on cgroup ",
	"ok   ebpf C IPv4 server, IPv4 client: ",
	"ok   ebpf C IPv6 server over IPv4, IPv6 client: ",
	"ok   ebpf C IPv4 server, IPv6 client: ", // the row where the receivers differ
	"ok   ebpf whoami -proto toa over IPv6, IPv4 client: ",
	"ok   ebpf plain Go server over IPv4, IPv6 client (syncookies=2): ",
	"ok   ebpf syncookies: ",
	"ok   ebpf untrusted counted: ",
	"ok   ebpf freed before load: ",
	fmt.Sprintf("ok   ebpf load: %d connections ", hostConns),
	"ok   ebpf load: concurrent getpeername(): ",
	"ok   ebpf load: entries: 0 of ",
	"ok   ebpf stop: ebpf stopped with ",
	"ok   ebpf stop: concurrent getpeername(): ",
	"ok   ebpf stop: gone: no pins in ",
	"ok   ebpf stop: after: getpeername() on the ",
	"ok   ebpf stop: after: a new connection after the stop",
	"ok   ebpf freed: the kernel freed the receiver's ",
	"ok   ebpf edge metrics: ",
}

func checkKeyRows(t *testing.T, lines []string) {
	t.Helper()
	for _, want := range keyRows {
		found := false
		for _, l := range lines {
			found = found || strings.HasPrefix(l, want)
		}
		if !found {
			t.Errorf("no line starting %q in the suite's output:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "ok   ebpf stop: ebpf stopped") || strings.HasPrefix(l, "ok   ebpf freed:") ||
			strings.HasPrefix(l, "ok   ebpf load: ") || strings.HasPrefix(l, "info suite:") {
			t.Log(l)
		}
	}
}

// buildSuite builds what vmtest/toa.sh puts in the guest, the same way
// (static Go programs, the C servers with warnings as errors), into a
// temporary folder.
func buildSuite(t *testing.T) map[string]string {
	t.Helper()
	goTool := testenv.RequireCommand(t, "go")
	gcc := testenv.RequireCommand(t, "gcc")
	dir := t.TempDir()
	bins := map[string]string{}
	for name, pkg := range map[string]string{
		"multihost":   "github.com/realip/realip/vmtest/multihost",
		"realip-edge": "github.com/realip/realip/cmd/realip-edge",
		"whoami":      "github.com/realip/realip/examples/whoami",
	} {
		bins[name] = filepath.Join(dir, name)
		cmd := exec.Command(goTool, "build", "-trimpath", "-o", bins[name], pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	for _, s := range []string{"toa_server4", "toa_server6"} {
		bins[s] = filepath.Join(dir, s)
		src := filepath.Join("..", "testdata", "csamples", s+".c")
		if out, err := exec.Command(gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", bins[s], src).CombinedOutput(); err != nil {
			t.Fatalf("gcc %s: %v\n%s", src, err, out)
		}
	}
	return bins
}
