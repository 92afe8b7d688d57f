//go:build linux

package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/realip/realip/agent"
)

// A command is a subcommand of realip-agent.
type command struct {
	name     string
	synopsis string   // its flags, as the usage text shows them
	help     []string // lines of the usage text telling what it does
	// flags defines the command's flags on fs, into v; nil: none.
	flags func(fs *flag.FlagSet, v *flagValues)
	// run runs the command once its flags are parsed and returns the
	// exit status.
	run func(inv *invocation) int
}

// commands is realip-agent's command table, in the usage text's order.
var commands = []command{
	{"run", "[-config FILE]", []string{
		"start or adopt the TOA receiver (toa.ko or",
		"eBPF), apply the configuration, run the unwrap",
		"relays, serve metrics; SIGHUP reloads the file,",
		"SIGTERM exits and leaves the receiver in place",
	}, configFlag, runRun},
	{"unwrap", "[-config FILE]", []string{
		"only the file's unwrap list: take PROXY/SPP",
		"from the edges and connect to local servers",
		"from the client's address (no TOA receiver);",
		"SIGHUP reloads, SIGTERM closes the relays",
	}, configFlag, runUnwrap},
	{"load", "[-config FILE]", []string{
		"start or adopt the TOA receiver and apply the",
		"configuration",
	}, configFlag, runLoad},
	{"unload", "", []string{
		"remove the TOA receiver in place (unload",
		"toa.ko; detach and unpin the eBPF receiver)",
	}, nil, runUnload},
	{"status", "[-json] [-config FILE]", []string{
		"the TOA receiver in place, its configuration,",
		"counters and live entries (exit 3: none)",
	}, statusFlags, runStatus},
	{"doctor", "[-json] [-watch DURATION] [-config FILE]", []string{
		"check the TOA chain on this host: receiver,",
		"module, DKMS, trust list, options honoured or",
		"dropped, entries, listeners; say what to do",
		"(exit 1: a problem found)",
	}, doctorFlags, runDoctor},
	{"check", "[-config FILE]", []string{
		"check the configuration file",
	}, configFlag, runCheck},
	{"modprobe-conf", "[-config FILE]", []string{
		"print an /etc/modprobe.d/toa.conf line with the",
		"file's trusted prefixes and kinds",
	}, configFlag, runModprobeConf},
	{"exporter", "-listen ADDR [-procfs DIR] [-per-cpu]", []string{
		"serve /proc/net/toa_stats metrics only (any",
		"vendor's TOA module; no module handling)",
	}, exporterFlags, runExporterCommand},
}

func configFlag(fs *flag.FlagSet, v *flagValues) {
	fs.StringVar(&v.config, "config", agent.DefaultConfigPath, "configuration file (YAML)")
}

func statusFlags(fs *flag.FlagSet, v *flagValues) {
	fs.BoolVar(&v.json, "json", false, "print JSON")
	fs.StringVar(&v.config, "config", "", "also tell whether this configuration file is in force")
}

func runRun(inv *invocation) int { return runServing(inv, (*agent.Agent).Run) }

func runUnwrap(inv *invocation) int { return runServing(inv, (*agent.Agent).RunUnwrap) }

// runServing makes an agent and runs serve (Agent.Run or Agent.RunUnwrap)
// on the configuration file until it returns, handing it SIGHUP, SIGTERM
// and SIGINT.
func runServing(inv *invocation, serve func(*agent.Agent, context.Context, string, <-chan os.Signal) error) int {
	a, err := agent.New(inv.opts)
	if err != nil {
		return inv.fail(err)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := serve(a, context.Background(), inv.flags.config, sigs); err != nil {
		return inv.fail(err)
	}
	return exitOK
}

func runLoad(inv *invocation) int {
	a, err := agent.New(inv.opts)
	if err != nil {
		return inv.fail(err)
	}
	cfg, res, err := a.Start(inv.flags.config)
	if err != nil {
		return inv.fail(err)
	}
	if res.Receiver == agent.ReceiverEBPF {
		what := "attached to cgroup " + res.Cgroup
		if res.Adopted {
			what = "already attached, to cgroup " + res.Cgroup
		}
		fmt.Fprintf(inv.stdout, "eBPF TOA receiver: %s, pinned in %s; trusted=%q kinds=%q\n",
			what, res.PinDir, cfg.TrustedString(), cfg.KindsString())
		return exitOK
	}
	what := "loaded " + res.Path
	if res.Adopted {
		what = "already loaded"
	}
	fmt.Fprintf(inv.stdout, "toa %s: %s; trusted=%q kinds=%q\n", res.Version, what, cfg.TrustedString(), cfg.KindsString())
	return exitOK
}

func runUnload(inv *invocation) int {
	a, err := agent.New(inv.opts)
	if err != nil {
		return inv.fail(err)
	}
	removed, err := a.UnloadReceivers()
	for _, r := range removed {
		if r == agent.ReceiverKmod {
			fmt.Fprintln(inv.stdout, "toa unloaded")
		} else {
			fmt.Fprintf(inv.stdout, "eBPF TOA receiver detached and unpinned (%s)\n", a.EBPFPinDir())
		}
	}
	if err != nil {
		return inv.fail(err)
	}
	if len(removed) == 0 {
		fmt.Fprintf(inv.stdout, "no TOA receiver is in place (toa is not loaded, no eBPF receiver is pinned in %s)\n", a.EBPFPinDir())
	}
	return exitOK
}

func runStatus(inv *invocation) int {
	a, err := agent.New(inv.opts)
	if err != nil {
		return inv.fail(err)
	}
	st, err := a.Status(inv.flags.config)
	if err != nil {
		return inv.fail(err)
	}
	if inv.flags.json {
		err = st.WriteJSON(inv.stdout)
	} else {
		err = st.WriteText(inv.stdout)
	}
	if err != nil {
		return inv.fail(err)
	}
	if !st.InPlace() {
		return exitNotLoaded
	}
	return exitOK
}

func runCheck(inv *invocation) int {
	path := inv.flags.config
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		return inv.fail(err)
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(inv.stderr, "realip-agent check: warning: %s\n", w)
	}
	fmt.Fprintf(inv.stdout, "%s: ok (module_path=%q trusted=%q kinds=%q metrics_listen=%q metrics_per_cpu=%v procfs=%q receiver=%s cgroup=%q)\n",
		path, cfg.ModulePath, cfg.TrustedString(), cfg.KindsString(), cfg.MetricsListen, cfg.MetricsPerCPU, cfg.Procfs,
		cfg.Receiver, cfg.Cgroup)
	return exitOK
}

func runModprobeConf(inv *invocation) int {
	cfg, err := agent.LoadConfig(inv.flags.config)
	if err != nil {
		return inv.fail(err)
	}
	fmt.Fprint(inv.stdout, agent.ModprobeConf(cfg, inv.flags.config))
	return exitOK
}
