package cmddoc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// LintTools are the commands Lint runs.
var LintTools = []string{"groff", "man"}

// Lint formats the page at path twice and returns every warning: with
// groff, all warnings on (groff -ww -z -man -Tutf8), and with man-db the
// way lintian checks pages (man --warnings -E UTF-8 -l -Tutf8 -Z in
// C.UTF-8, 80 columns). A page that is clean for both gives no warnings.
// The error is for a tool that could not run.
func Lint(path string) ([]string, error) {
	var warnings []string
	for _, argv := range [][]string{
		{"groff", "-ww", "-z", "-man", "-Tutf8", path},
		{"man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path},
	} {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANWIDTH=80", "MANROFFSEQ=", "MAN_KEEP_STDERR=1")
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = nil, &stderr
		err := cmd.Run()
		for _, l := range strings.Split(stderr.String(), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				warnings = append(warnings, argv[0]+": "+l)
			}
		}
		if err != nil && stderr.Len() == 0 {
			return warnings, fmt.Errorf("cmddoc: %s: %w", strings.Join(argv, " "), err)
		}
	}
	return warnings, nil
}
