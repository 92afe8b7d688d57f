//go:build linux

package agenttest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/realip/realip/internal/testenv"
)

// Kernel releases of the tests: Env's agent runs on KernelRelease; a
// module built for OtherRelease is one the agent must refuse.
const (
	KernelRelease = "6.1.0-56-amd64"
	OtherRelease  = "6.1.0-55-amd64"
)

// RealipFields are the .modinfo entries of a realip toa.ko built for rel.
func RealipFields(rel string) []string {
	return []string{
		"version=0.1.0",
		"description=realip TOA: real client addresses from a TCP option",
		"author=realip",
		"license=GPL",
		"parm=trusted:comma-separated source prefixes",
		"parm=kinds:comma-separated TCP option kinds",
		"srcversion=0123456789ABCDEF012345",
		"depends=",
		"name=toa",
		"vermagic=" + rel + " SMP preempt mod_unload modversions ",
	}
}

// BuildObject compiles, with gcc -c, a C file holding each field as a
// string in the .modinfo section (as the kernel's MODULE_INFO does) and
// returns the object file's path, dir/name. No fields: no .modinfo
// section at all. Without gcc the test stops (see testenv.SkipOrFail).
func BuildObject(t testing.TB, dir, name string, fields ...string) string {
	t.Helper()
	gcc := testenv.RequireCommand(t, "gcc")
	var src strings.Builder
	src.WriteString("int toa_dummy_symbol(void) { return 42; }\n")
	for i, f := range fields {
		fmt.Fprintf(&src, "static const char modinfo_%d[] __attribute__((section(\".modinfo\"), used, aligned(1))) = %q;\n", i, f)
	}
	c := filepath.Join(dir, name+".c")
	if err := os.WriteFile(c, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	if b, err := exec.Command(gcc, "-c", "-o", out, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	return out
}

// BuildModule is BuildObject named toa.ko.
func BuildModule(t testing.TB, dir string, fields ...string) string {
	t.Helper()
	return BuildObject(t, dir, "toa.ko", fields...)
}
