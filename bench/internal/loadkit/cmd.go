package loadkit

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// Command is a subcommand of a load generator: its name and what runs it
// with the arguments that follow the name.
type Command struct {
	Name string
	Run  func(args []string) error
}

// Main runs the subcommand of prog named by os.Args[1] with the arguments
// after it and exits: 0 when it returns nil, 1 (with "prog NAME: error" on
// stderr) when it fails, 2 (with the usage line) when no command is named
// or the name is unknown. The usage line lists the commands in the order
// given.
func Main(prog string, cmds []Command) {
	os.Exit(run(prog, cmds, os.Args[1:], os.Stderr))
}

// run is Main with the arguments after the program's name and stderr
// given; it returns the exit status.
func run(prog string, cmds []Command, args []string, stderr io.Writer) int {
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.Name
	}
	usage := fmt.Sprintf("usage: %s %s [flags] (%s CMD -h for the flags)", prog, strings.Join(names, "|"), prog)
	if len(args) < 1 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	for _, c := range cmds {
		if c.Name != args[0] {
			continue
		}
		if err := c.Run(args[1:]); err != nil {
			fmt.Fprintf(stderr, "%s %s: %v\n", prog, args[0], err)
			return 1
		}
		return 0
	}
	fmt.Fprintln(stderr, usage)
	return 2
}
