package cmddoc

import (
	"os"
	"testing"

	"github.com/realip/realip/internal/testenv"
)

// RequireBashCompletion stops the test (see package testenv: a skip, or a
// failure under REALIP_STRICT=1) unless bash and bash-completion are
// installed (scripts/deps.sh bash-completion).
func RequireBashCompletion(t testing.TB) {
	t.Helper()
	testenv.RequireCommand(t, "bash")
	if _, err := os.Stat(BashCompletion); err != nil {
		testenv.SkipOrFail(t, "test needs bash-completion (%v; scripts/deps.sh bash-completion)", err)
	}
}

// RequireLintTools stops the test (see package testenv) unless the
// commands Lint runs are installed (scripts/deps.sh groff-base man-db).
func RequireLintTools(t testing.TB) {
	t.Helper()
	for _, tool := range LintTools {
		testenv.RequireCommand(t, tool)
	}
}
