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
