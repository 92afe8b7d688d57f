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
// "general protection fault: 0000 [#1]"; and against the reports of the
// sanitizer kernel's checkers (KASAN, KFENCE, lockdep, kmemleak, debug
// objects, DEBUG_LIST, UBSAN, the hung task and RCU stall detectors) and
// what it prints when all is well.
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
		// the sanitizer kernel (debug-kernel.sh): its reports (DEBUG_TROUBLE_RE)...
		{"KASAN", "[   42.17] BUG: KASAN: use-after-free in toa_getname+0x1a/0x80 [toa]", true},
		{"KFENCE", "[   42.17] BUG: KFENCE: out-of-bounds read in toa_table_lookup+0x2c/0x90 [toa]", true},
		{"lockdep circular", "[   42.17] WARNING: possible circular locking dependency detected", true},
		{"lockdep circular, bare", "[   42.17] possible circular locking dependency detected", true},
		{"lockdep recursive", "[   42.17] possible recursive locking detected", true},
		{"lockdep irq state", "[   42.17] inconsistent lock state", true},
		{"lockdep irq inversion", "[   42.17] possible irq lock inversion dependency detected", true},
		{"lockdep unlock", "[   42.17] bad unlock balance detected!", true},
		{"lockdep off: non-static key", "[   42.17] INFO: trying to register non-static key.", true},
		{"lockdep off", "[   42.17] turning off the locking correctness validator.", true},
		{"RCU lockdep", "[   42.17] suspicious RCU usage", true},
		{"sleep in atomic, bare", "[   42.17] sleeping function called from invalid context at kernel/locking/mutex.c:580", true},
		{"scheduling while atomic", "[   42.17] BUG: scheduling while atomic: multihost/210/0x00000002", true},
		{"UBSAN", "[   42.17] UBSAN: array-index-out-of-bounds in kmod/toa_option.c:57:9", true},
		{"kmemleak scan", "[   60.02] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)", true},
		{"kmemleak report", "unreferenced object 0xffff888012345678 (size 64):", true},
		{"kmemleak gave up", "[    0.91] kmemleak: Kernel memory leak detector disabled", true},
		{"kmemleak pool", "[    0.91] kmemleak: Memory pool empty, consider increasing CONFIG_DEBUG_KMEMLEAK_MEM_POOL_SIZE", true},
		{"debug objects", "[   42.17] ODEBUG: free active (active state 0) object: ffff888003a1c0e8 object type: timer_list hint: toa_gc+0x0/0x10 [toa]", true},
		{"debug objects gave up", "[   42.17] ODEBUG: Out of memory. ODEBUG disabled", true},
		{"list debug", "[   42.17] list_add corruption. prev->next should be next (ffff888003a1c0e8), but was 0000000000000000.", true},
		{"list debug del", "[   42.17] list_del corruption, ffff888003a1c0e8->next is LIST_POISON1 (dead000000000100)", true},
		{"hung task", "[  300.12] INFO: task rmmod:123 blocked for more than 120 seconds.", true},
		{"RCU stall", "[   50.00] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", true},
		{"RCU self stall", "[   50.00] rcu: INFO: rcu_preempt self-detected stall on CPU", true},
		{"soft lockup", "[   50.00] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [multihost:210]", true},
		// ...and what it prints when all is well
		{"KASAN on", "[    0.00] kasan: KernelAddressSanitizer initialized (generic)", false},
		{"kmemleak on", "[    0.31] kmemleak: Kernel memory leak detector initialized (mem pool available: 15890)", false},
		{"kfence on", "[    0.29] kfence: initialized - using 2097152 bytes for 255 objects at 0x(____ptrval____)-0x(____ptrval____)", false},
		{"lockdep on", "[    0.00] Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar", false},
		{"lockdep limits", "[    0.00] ... MAX_LOCKDEP_CHAINS:      65536", false},
		{"sanitize-end lockdep", "sanitizers: lockdep still on (debug_locks 1), 1623 lock classes, 9876 dependency chains", false},
		{"sanitize-end kmemleak", "sanitizers: kmemleak scanned twice after the unload: nothing reported", false},
		{"sanitize-end kfence", "sanitizers: kfence guarded 4211 allocations, 0 bugs", false},
		{"toa.ko unloaded", "[  120.40] toa: unloaded, 2107 of 2107 entries freed", false},
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
