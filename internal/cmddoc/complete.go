package cmddoc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// BashCompletion is bash-completion's main script, which loads the
// completions installed in /usr/share/bash-completion/completions.
const BashCompletion = "/usr/share/bash-completion/bash_completion"

// wordBreaks is bash's default COMP_WORDBREAKS without the blanks.
const wordBreaks = `"'><=;|&(:`

// Completion is a command's bash completion script.
type Completion struct {
	Script  string // the script, named after the command it completes
	WorkDir string // working directory of the shell (file names complete here)
}

// Complete completes the end of line, a command line as typed (the
// cursor at its end), and returns the candidates, sorted. bash-completion
// loads the script by the command's name from a folder it searches the way
// it searches the installed ones; COMP_WORDS is line split as bash splits
// it (at blanks, and around the characters of COMP_WORDBREAKS).
func (c Completion) Complete(line string) ([]string, error) {
	words := SplitWords(line)
	if len(words) == 0 {
		return nil, fmt.Errorf("cmddoc: nothing to complete")
	}
	cmd := filepath.Base(c.Script)
	if words[0] != cmd {
		return nil, fmt.Errorf("cmddoc: line %q does not start with %s", line, cmd)
	}
	user, err := os.MkdirTemp("", "cmddoc-completion-")
	if err != nil {
		return nil, fmt.Errorf("cmddoc: %w", err)
	}
	defer os.RemoveAll(user)
	abs, err := filepath.Abs(c.Script)
	if err != nil {
		return nil, fmt.Errorf("cmddoc: %w", err)
	}
	if err := os.Mkdir(filepath.Join(user, "completions"), 0o755); err != nil {
		return nil, fmt.Errorf("cmddoc: %w", err)
	}
	if err := os.Symlink(abs, filepath.Join(user, "completions", cmd)); err != nil {
		return nil, fmt.Errorf("cmddoc: %w", err)
	}
	return runCompletion(c.WorkDir, user, line, words)
}

// driver is the bash program that loads the completion and runs it: $1
// the command, $2 COMP_LINE, the rest COMP_WORDS.
const driver = `
. "` + BashCompletion + `" || exit 3
cmd=$1 line=$2
shift 2
_completion_loader "$cmd"
spec=$(complete -p "$cmd" 2>/dev/null) || { echo "no completion for $cmd after loading" >&2; exit 4; }
[[ $spec =~ -F\ ([^ ]+) ]] || { echo "not a function completion: $spec" >&2; exit 5; }
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
COMP_LINE=$line
COMP_POINT=${#line}
COMP_TYPE=9 COMP_KEY=9
COMPREPLY=()
"${BASH_REMATCH[1]}" "$cmd" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
`

func runCompletion(dir, user, line string, words []string) ([]string, error) {
	args := append([]string{"--norc", "--noprofile", "-c", driver, "cmddoc", words[0], line}, words...)
	cmd := exec.Command("bash", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BASH_COMPLETION_USER_DIR="+user, "LC_ALL=C.UTF-8")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("cmddoc: completing %q: %w: %s", line, err, stderr.String())
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		return nil, fmt.Errorf("cmddoc: completing %q: bash said: %s", line, msg)
	}
	var out []string
	for _, l := range strings.Split(stdout.String(), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out, nil
}

// SplitWords splits a command line into COMP_WORDS as bash does for
// unquoted text: at blanks, and a run of COMP_WORDBREAKS characters is a
// word of its own. A line ending in a blank ends in an empty word.
func SplitWords(line string) []string {
	var words []string
	for _, f := range strings.Fields(line) {
		start := 0
		for i := 0; i <= len(f); i++ {
			if i < len(f) && i > start && isBreak(f[i]) == isBreak(f[i-1]) {
				continue
			}
			if i > start {
				words = append(words, f[start:i])
				start = i
			}
		}
	}
	if line == "" || strings.HasSuffix(line, " ") || strings.HasSuffix(line, "\t") {
		words = append(words, "")
	}
	return words
}

func isBreak(c byte) bool { return strings.IndexByte(wordBreaks, c) >= 0 }
