package loadkit

import (
	"errors"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var got []string
	cmds := []Command{
		{Name: "origin", Run: func(args []string) error { got = args; return nil }},
		{Name: "tput", Run: func([]string) error { return errors.New("-addr is required") }},
	}
	const usage = "usage: gen origin|tput [flags] (gen CMD -h for the flags)\n"
	for _, tc := range []struct {
		name     string
		args     []string
		status   int
		stderr   string
		wantArgs []string
	}{
		{"no command", nil, 2, usage, nil},
		{"unknown command", []string{"bogus", "-x"}, 2, usage, nil},
		{"ok", []string{"origin", "-echo", "127.0.0.1:1"}, 0, "", []string{"-echo", "127.0.0.1:1"}},
		{"ok without arguments", []string{"origin"}, 0, "", []string{}},
		{"failure", []string{"tput"}, 1, "gen tput: -addr is required\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got = nil
			var stderr strings.Builder
			if s := run("gen", cmds, tc.args, &stderr); s != tc.status {
				t.Errorf("status %d, want %d", s, tc.status)
			}
			if stderr.String() != tc.stderr {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.stderr)
			}
			if strings.Join(got, " ") != strings.Join(tc.wantArgs, " ") || (got == nil) != (tc.wantArgs == nil) {
				t.Errorf("the command got %q, want %q", got, tc.wantArgs)
			}
		})
	}
}
