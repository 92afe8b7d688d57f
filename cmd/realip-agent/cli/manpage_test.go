//go:build linux

package cli

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/realip/realip/internal/cmddoc"
)

// helpCommand is the usage command run handles before the table.
const helpCommand = "help"

// commandFlags returns the flag set cmd parses, as the invocation defines
// it.
func commandFlags(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var v flagValues
	if c.flags != nil {
		c.flags(fs, &v)
	}
	return fs
}

// exitStatuses are the exit statuses the usage text promises: the
// constants, and every number its "Exit status:" paragraph names.
func exitStatuses(t *testing.T) []string {
	t.Helper()
	set := map[int]bool{exitOK: true, exitError: true, exitUsage: true, exitNotLoaded: true, exitConfig: true}
	_, para, ok := strings.Cut(usage(), "Exit status:")
	if !ok {
		t.Fatal("usage text has no \"Exit status:\" paragraph")
	}
	for _, m := range regexp.MustCompile(`(?:^|[\s,:])(\d+)\s`).FindAllStringSubmatch(para, -1) {
		n, _ := strconv.Atoi(m[1])
		set[n] = true
	}
	var out []int
	for n := range set {
		out = append(out, n)
	}
	slices.Sort(out)
	s := make([]string, len(out))
	for i, n := range out {
		s[i] = strconv.Itoa(n)
	}
	return s
}

// TestManPage: realip-agent(8) documents exactly the command table: a
// SYNOPSIS line per command that is the table's synopsis, an .SS under
// COMMANDS per command whose tagged paragraphs are its flags (a value
// flag as "-name VALUE", its default written out), and the exit statuses.
func TestManPage(t *testing.T) {
	p, err := cmddoc.ReadMan("realip-agent.8")
	if err != nil {
		t.Fatal(err)
	}
	var synopsis, names []string
	for _, c := range commands {
		synopsis = append(synopsis, strings.TrimSpace("realip-agent "+c.name+" "+c.synopsis))
		names = append(names, c.name)
	}
	synopsis = append(synopsis, "realip-agent "+helpCommand)
	names = append(names, helpCommand)
	if got, err := p.Lines("SYNOPSIS"); err != nil || !slices.Equal(got, synopsis) {
		t.Errorf("realip-agent.8 SYNOPSIS:\n  %q (%v)\nthe command table says:\n  %q", got, err, synopsis)
	}
	if got, err := p.Subheadings("COMMANDS"); err != nil || !slices.Equal(got, names) {
		t.Errorf("realip-agent.8 COMMANDS has .SS %q (%v); the commands are %q", got, err, names)
	}
	for i := range commands {
		c := &commands[i]
		items, err := p.Items(c.name)
		if err != nil {
			t.Errorf("command %s: %v", c.name, err)
			continue
		}
		for _, problem := range cmddoc.CheckFlags(commandFlags(c), items) {
			t.Errorf("realip-agent.8, .SS %s: %s", c.name, problem)
		}
	}
	items, err := p.Items("EXIT STATUS")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.Key())
	}
	if want := exitStatuses(t); !slices.Equal(got, want) {
		t.Errorf("realip-agent.8 EXIT STATUS lists %q; the code and usage text have %q", got, want)
	}
}

// completionEnv is the completion script run in a folder with files of
// several kinds.
func completionEnv(t *testing.T) cmddoc.Completion {
	t.Helper()
	cmddoc.RequireBashCompletion(t)
	script, err := cmddoc.CompletionFor("realip-agent")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	for _, f := range []string{"agent.yaml", "old.yml", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(work, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(work, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	return cmddoc.Completion{Script: script, WorkDir: work}
}

// valueCompletions are what the value of each value flag completes to in
// completionEnv's folder: YAML files and folders, folders, or nothing.
// A new value flag must be added here.
var valueCompletions = map[string][]string{
	"config": {"agent.yaml", "conf.d", "old.yml"},
	"procfs": {"conf.d"},
	"listen": nil,
	"watch":  nil,
}

// TestCompletion completes realip-agent through packaging/completion's
// script in a real bash with bash-completion: the commands, each
// command's flags (and whether each takes a value), and the files a
// value flag takes.
func TestCompletion(t *testing.T) {
	c := completionEnv(t)
	var names []string
	for _, cmd := range commands {
		names = append(names, cmd.name)
	}
	names = append(names, helpCommand)
	slices.Sort(names)
	if got, err := c.Complete("realip-agent "); err != nil || !slices.Equal(got, names) {
		t.Errorf("realip-agent <TAB>: %q (%v), want the commands %q", got, err, names)
	}
	if got, err := c.Complete("realip-agent st"); err != nil || !slices.Equal(got, []string{"status"}) {
		t.Errorf("realip-agent st<TAB>: %q (%v)", got, err)
	}
	for i := range commands {
		cmd := &commands[i]
		fs := commandFlags(cmd)
		problems, err := c.CheckFlagCompletion("realip-agent "+cmd.name+" ", fs)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("realip-agent %s: %s", cmd.name, p)
		}
		checkValueCompletion(t, c, cmd.name, fs)
	}
	for _, line := range []string{"realip-agent nosuch -", "realip-agent help -", "realip-agent unload -"} {
		if got, err := c.Complete(line); err != nil || len(got) != 0 {
			t.Errorf("%q: %q (%v), want nothing", line, got, err)
		}
	}
}

// checkValueCompletion completes the value of every value flag of the
// command, as "-flag " and "-flag=".
func checkValueCompletion(t *testing.T, c cmddoc.Completion, name string, fs *flag.FlagSet) {
	t.Helper()
	fs.VisitAll(func(f *flag.Flag) {
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			return
		}
		want, ok := valueCompletions[f.Name]
		if !ok {
			t.Errorf("realip-agent %s -%s: a value flag the test does not know; add it to valueCompletions", name, f.Name)
			return
		}
		for _, line := range []string{"realip-agent " + name + " -" + f.Name + " ", "realip-agent " + name + " -" + f.Name + "="} {
			got, err := c.Complete(line)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%q completes to %q, want %q", line, got, want)
			}
		}
	})
}
