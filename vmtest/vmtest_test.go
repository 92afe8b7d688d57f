//go:build linux

package vmtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/realip/realip/internal/testenv"
)

// TestSelftest runs selftest.sh for each kernel alias in REALIP_VMTEST
// (e.g. "6.1 sid", or "all"): fetch, build the hello module, boot it under
// QEMU, load/check/unload it and test a netns + veth pair in the guest.
// It is opt-in because the first run downloads ~100 MiB per kernel (and
// makes a sid chroot); give go test a -timeout of 30m or more for it.
// `make vmtest` runs it on 6.1 in its own step (REALIP_VMTEST=6.1), so
// the harness proves itself in every CI run without a QEMU boot competing
// with the parallel package tests of `go test ./...`.
func TestSelftest(t *testing.T) {
	aliases := strings.Fields(os.Getenv("REALIP_VMTEST"))
	if len(aliases) == 0 {
		t.Skip(`set REALIP_VMTEST="6.1 sid" (or "all") to boot Debian kernels in QEMU; see vmtest/README.md`)
	}
	testenv.RequireRoot(t)
	for _, c := range []string{"qemu-system-x86_64", "busybox", "cpio", "apt-get", "dpkg-deb", "make", "gcc", "pahole", "debootstrap"} {
		testenv.RequireCommand(t, c)
	}
	if len(aliases) == 1 && aliases[0] == "all" {
		aliases = []string{"5.10", "6.1", "6.12", "sid"}
	}
	for _, alias := range aliases {
		t.Run(alias, func(t *testing.T) {
			out, err := exec.Command("./selftest.sh", alias).CombinedOutput()
			t.Logf("selftest.sh %s:\n%s", alias, out)
			if err != nil {
				t.Fatalf("selftest.sh %s: %v", alias, err)
			}
		})
	}
}

// TestBrokeBeforeInit checks how run.sh, sysvm.sh and flake.sh tell kernel
// trouble before init started (nothing of ours had run) from trouble after
// it; both fail a run.
func TestBrokeBeforeInit(t *testing.T) {
	testenv.RequireCommand(t, "bash")
	const early = "[    1.29] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n" +
		"[    1.29] Modules linked in:\n[    1.30] Kernel panic - not syncing: Fatal exception\n"
	const init = "[    3.52] Run /init as init process\n"
	const late = "[    9.10] WARNING: CPU: 1 PID: 77 at hello.c:12 hello_init+0x1/0x2 [hello]\n"
	for _, tc := range []struct {
		name, console string
		before        bool
	}{
		{"clean boot", "[    0.00] Linux version 6.1\n" + init + "REALIP-VMTEST-RESULT x PASS\n", false},
		{"oops before init", "[    0.00] Linux version 6.1\n" + early, true},
		{"oops then init", early + init, true},
		{"warning after init", init + late, false},
		{"no trouble, no init", "[    0.00] Linux version 6.1\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := t.TempDir() + "/console.log"
			if err := os.WriteFile(log, []byte(tc.console), 0o644); err != nil {
				t.Fatal(err)
			}
			err := exec.Command("bash", "-c", `. ./lib.sh && broke_before_init "$1"`, "bash", log).Run()
			if got := err == nil; got != tc.before {
				t.Fatalf("broke_before_init = %v (err %v), want %v", got, err, tc.before)
			}
		})
	}
}

// TestTroubleRE checks lib.sh's TROUBLE_RE, by which run.sh and sysvm.sh
// fail a boot, against console lines of both architectures: arm64 spells
// its stack dump "Call trace:" and its die() header "Internal error:
// Oops: <esr> [#1]", amd64 "Call Trace:" and, before 6.9, a bare
// "general protection fault: 0000 [#1]".
func TestTroubleRE(t *testing.T) {
	testenv.RequireCommand(t, "bash")
	for _, tc := range []struct {
		name, line string
		trouble    bool
	}{
		{"amd64 stack dump", "[    2.41] Call Trace:", true},
		{"arm64 stack dump", "[    1.77] Call trace:", true},
		{"amd64 die header before 6.9", "[    1.29] general protection fault: 0000 [#1] PREEMPT SMP NOPTI", true},
		{"arm64 oops", "[    5.01] Internal error: Oops: 0000000096000004 [#1] PREEMPT SMP", true},
		{"arm64 BUG()", "[    5.01] Internal error: Oops - BUG: 00000000f2000800 [#1] PREEMPT SMP", true},
		{"warning", "[    9.10] WARNING: CPU: 1 PID: 77 at hello.c:12 hello_init+0x1/0x2 [hello]", true},
		{"sleep in atomic", "[    9.10] BUG: sleeping function called from invalid context at mm/slab.h:1", true},
		{"panic", "[    9.20] Kernel panic - not syncing: Fatal exception", true},
		{"arm64 boot banner", "[    0.00] Booting Linux on physical CPU 0x0000000000 [0x000f0510]", false},
		{"arm64 pauth", "[    0.12] CPU features: detected: Address authentication (IMP DEF algorithm)", false},
		{"init", "[    1.60] Run /init as init process", false},
		{"result marker", "REALIP-VMTEST-RESULT 0a1b2c3d4e5f PASS status=0 tainted=12288", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := t.TempDir() + "/console.log"
			if err := os.WriteFile(log, []byte(tc.line+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			err := exec.Command("bash", "-c", `. ./lib.sh && grep -qE "$TROUBLE_RE" "$1"`, "bash", log).Run()
			if got := err == nil; got != tc.trouble {
				t.Fatalf("TROUBLE_RE matches %q: %v (err %v), want %v", tc.line, got, err, tc.trouble)
			}
		})
	}
}
