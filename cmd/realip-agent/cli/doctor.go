//go:build linux

package cli

import (
	"flag"
	"fmt"
	"time"

	"github.com/realip/realip/agent"
)

func doctorFlags(fs *flag.FlagSet, v *flagValues) {
	fs.BoolVar(&v.json, "json", false, "print JSON")
	fs.DurationVar(&v.watch, "watch", 0, "compare the counters over this window (e.g. 30s); 0: totals since the receiver started")
	fs.StringVar(&v.config, "config", agent.DefaultConfigPath, "configuration file (YAML)")
}

// runDoctor is `realip-agent doctor`: exit 0 when no check found a
// problem (warnings allowed), 1 when one did.
func runDoctor(inv *invocation) int {
	if inv.flags.watch < 0 {
		fmt.Fprintf(inv.stderr, "realip-agent doctor: -watch %v: the window cannot be negative\n", inv.flags.watch)
		return exitUsage
	}
	a, err := agent.New(inv.opts)
	if err != nil {
		return inv.fail(err)
	}
	rep, err := a.Doctor(agent.DoctorOptions{
		ConfigPath:  inv.flags.config,
		ConfigGiven: inv.flags.configSet,
		Watch:       inv.flags.watch,
		Wait: func(d time.Duration) {
			fmt.Fprintf(inv.stderr, "realip-agent doctor: watching the counters for %v\n", d)
			time.Sleep(d)
		},
	})
	if err != nil {
		fmt.Fprintf(inv.stderr, "realip-agent doctor: %v\n", err)
		return exitError
	}
	if inv.flags.json {
		err = rep.WriteJSON(inv.stdout)
	} else {
		err = rep.WriteText(inv.stdout)
	}
	if err != nil {
		return inv.fail(err)
	}
	if rep.Problems() > 0 {
		return exitError
	}
	return exitOK
}
