//go:build linux

// Package cli is realip-agent's command line: its subcommand table, from
// which both the dispatch and the usage text are made, its flags and its
// exit statuses. cmd/realip-agent runs it, and so does vmtest/agent when
// it re-executes itself as the agent; package agent does the work.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/realip/realip/agent"
)

// Exit statuses of realip-agent (documented in its usage text).
const (
	exitOK        = 0
	exitError     = 1
	exitUsage     = 2
	exitNotLoaded = 3 // status: no TOA receiver is in place
	// exitConfig (EX_CONFIG) is a bad configuration file, a module file
	// the agent refuses (built for another kernel, not realip's, unsigned
	// under lockdown), or a receiver the file does not name already in
	// place: retrying cannot help, so the unit has
	// RestartPreventExitStatus=78.
	exitConfig = 78
)

// Main runs realip-agent with args (without the program name) on the
// real kernel and returns its exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	return run(args, stdout, stderr, agent.Options{})
}

// run is Main with agent options (tests point them at fake roots).
func run(args []string, stdout, stderr io.Writer, opts agent.Options) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return exitUsage
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	name, args := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage())
		return exitOK
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "realip-agent: unknown command %q\n\n%s", name, usage())
		return exitUsage
	}
	inv := &invocation{name: name, stdout: stdout, stderr: stderr, opts: opts}
	if !inv.parse(cmd, args) {
		return exitUsage
	}
	return cmd.run(inv)
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// invocation is one run of a command: its name, flag values, output and
// agent options.
type invocation struct {
	name           string
	flags          flagValues
	stdout, stderr io.Writer
	opts           agent.Options
}

// flagValues are the flags of all commands; each command defines some.
type flagValues struct {
	config    string        // -config
	configSet bool          // -config was given
	json      bool          // status, doctor -json
	watch     time.Duration // doctor -watch
	listen    string        // exporter -listen
	procfs    string        // exporter -procfs
	perCPU    bool          // exporter -per-cpu
}

// parse defines cmd's flags and parses args; false: a usage error, told
// on stderr.
func (inv *invocation) parse(cmd *command, args []string) bool {
	fs := flag.NewFlagSet("realip-agent "+inv.name, flag.ContinueOnError)
	fs.SetOutput(inv.stderr)
	fs.Usage = func() { fmt.Fprint(inv.stderr, usage()) }
	if cmd.flags != nil {
		cmd.flags(fs, &inv.flags)
	}
	if err := fs.Parse(args); err != nil {
		return false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(inv.stderr, "realip-agent %s: unexpected arguments %q\n", inv.name, fs.Args())
		return false
	}
	fs.Visit(func(f *flag.Flag) { inv.flags.configSet = inv.flags.configSet || f.Name == "config" })
	return true
}

// fail tells err on stderr and returns its exit status: exitConfig for a
// bad configuration file, a refused module or the other receiver in
// place, else exitError.
func (inv *invocation) fail(err error) int {
	fmt.Fprintf(inv.stderr, "realip-agent %s: %v\n", inv.name, err)
	var ce *agent.ConfigError
	if errors.As(err, &ce) || errors.Is(err, agent.ErrRefused) || errors.Is(err, agent.ErrReceiverConflict) {
		return exitConfig
	}
	return exitError
}

// Layout of the commands in the usage text: the synopsis ("NAME FLAGS")
// at usageIndent, the help lines at helpColumn.
const (
	usageIndent = "  "
	nameWidth   = 8
	helpColumn  = 33
)

// usage is realip-agent's usage text, with a line for each command of
// the table.
func usage() string {
	var b strings.Builder
	b.WriteString(`usage: realip-agent COMMAND [flags]

Runs realip's TOA receiver, the kernel module toa.ko or the eBPF receiver,
keeps its trusted prefixes and option kinds in step with a configuration
file, and serves metrics.

commands:
`)
	for _, c := range commands {
		head := usageIndent + fmt.Sprintf("%-*s %s", nameWidth, c.name, c.synopsis)
		if len(head) >= helpColumn {
			b.WriteString(head + "\n")
			head = ""
		}
		for _, line := range c.help {
			fmt.Fprintf(&b, "%-*s%s\n", helpColumn, head, line)
			head = ""
		}
	}
	b.WriteString(`
The configuration file defaults to ` + agent.DefaultConfigPath + `.
Exit status: 0 done, 1 failed, 2 usage, 3 (status) no receiver in place,
78 bad configuration file, a module file refused (built for another kernel)
or the other receiver in place (run unload first). doctor: 0 no problem
found (warnings allowed), 1 a problem found.
`)
	return b.String()
}
