package testenv

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// recorder is a testing.TB that records how a test was stopped instead of
// stopping the real test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

func TestSkipOrFail(t *testing.T) {
	tests := []struct {
		env                  string
		wantSkip, wantStrict bool
	}{
		{env: "", wantSkip: true},
		{env: "0", wantSkip: true},
		{env: "true", wantSkip: true},
		{env: "1", wantStrict: true},
	}
	for _, tc := range tests {
		t.Run("env="+tc.env, func(t *testing.T) {
			t.Setenv(StrictEnv, tc.env)
			if got := Strict(); got != tc.wantStrict {
				t.Fatalf("Strict() = %v, want %v", got, tc.wantStrict)
			}
			r := &recorder{TB: t}
			SkipOrFail(r, "needs %s", "thing")
			got, other := r.skipped, r.failed
			if !tc.wantSkip {
				got, other = r.failed, r.skipped
			}
			if !strings.HasPrefix(got, "needs thing") || other != "" {
				t.Errorf("skipped=%q failed=%q, want reason %q in the right one",
					r.skipped, r.failed, "needs thing")
			}
		})
	}
}

func TestRequireCommand(t *testing.T) {
	tests := []struct {
		name     string
		wantStop bool
	}{
		{name: "sh"},
		{name: "realip-no-such-command", wantStop: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(StrictEnv, "")
			r := &recorder{TB: t}
			path := RequireCommand(r, tc.name)
			if stopped := r.skipped != ""; stopped != tc.wantStop {
				t.Fatalf("stopped = %v (%q), want %v", stopped, r.skipped, tc.wantStop)
			}
			if !tc.wantStop && path == "" {
				t.Errorf("RequireCommand(%q) returned an empty path", tc.name)
			}
		})
	}
}

func TestRequireRoot(t *testing.T) {
	t.Setenv(StrictEnv, "")
	r := &recorder{TB: t}
	RequireRoot(r)
	if stopped, want := r.skipped != "", os.Geteuid() != 0; stopped != want {
		t.Errorf("RequireRoot stopped = %v (%q) as uid %d, want %v", stopped, r.skipped, os.Geteuid(), want)
	}
}
