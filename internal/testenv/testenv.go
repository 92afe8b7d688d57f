// Package testenv decides what a test does when the machine cannot run it.
//
// By default a test whose requirements are missing (root, a command, kernel
// support) is skipped with a clear reason. With REALIP_STRICT=1 in the
// environment, as CI sets it, the same test fails instead, so a broken CI
// machine cannot turn the whole suite into silent skips.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// StrictEnv is the environment variable that turns skips into failures
// when set to "1".
const StrictEnv = "REALIP_STRICT"

// Strict reports whether REALIP_STRICT=1 is set.
func Strict() bool {
	return os.Getenv(StrictEnv) == "1"
}

// SkipOrFail skips the test with the formatted reason, or fails it with the
// same reason in strict mode. Either way the test stops here.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	reason := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (failing instead of skipping because %s=1)", reason, StrictEnv)
		return
	}
	t.Skipf("%s (set %s=1 to make this a failure)", reason, StrictEnv)
}

// RequireRoot stops the test (see SkipOrFail) unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		SkipOrFail(t, "test needs root, running as uid %d", uid)
	}
}

// RequireCommand stops the test (see SkipOrFail) unless name is found in
// PATH, and returns its path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(t, "test needs command %q: %v", name, err)
	}
	return path
}
