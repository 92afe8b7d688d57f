//go:build linux

package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/realip/realip/exporter"
)

// Exit codes of realip-agent.
const (
	ExitOK        = 0
	ExitError     = 1
	ExitUsage     = 2
	ExitNotLoaded = 3 // status: the module is not loaded
	// ExitConfig (EX_CONFIG) is a bad configuration file or a module file
	// the agent refuses (built for another kernel, not realip's): retrying
	// cannot help, so the unit has RestartPreventExitStatus=78.
	ExitConfig = 78
)

const usage = `usage: realip-agent COMMAND [flags]

Loads realip's TOA kernel module (toa.ko), keeps its trusted prefixes and
option kinds in step with a configuration file, and serves metrics.

commands:
  run      [-config FILE]        load or adopt the module, push the configuration,
                                 serve metrics; SIGHUP reloads the file, SIGTERM
                                 exits and leaves the module loaded
  load     [-config FILE]        load or adopt the module and push the configuration
  unload                         remove the module (delete_module)
  status   [-json] [-config FILE]
                                 module state and version, its configuration,
                                 counters and live entries (exit 3: not loaded)
  check    [-config FILE]        check the configuration file
  modprobe-conf [-config FILE]   print an /etc/modprobe.d/toa.conf line with the
                                 file's trusted prefixes and kinds
  exporter -listen ADDR [-procfs DIR] [-per-cpu]
                                 serve /proc/net/toa_stats metrics only (any
                                 vendor's TOA module; no module handling)

The configuration file defaults to ` + DefaultConfigPath + `.
Exit status: 0 done, 1 failed, 2 usage, 3 (status) module not loaded,
78 bad configuration file or a module file refused (built for another kernel).
`

// Main runs realip-agent with args (without the program name) and returns
// its exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	return MainWith(args, stdout, stderr, Options{})
}

// MainWith is Main with agent options (tests point them at fake roots).
func MainWith(args []string, stdout, stderr io.Writer, opts Options) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("realip-agent "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	config := func() *string {
		return fs.String("config", DefaultConfigPath, "configuration file (YAML)")
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "realip-agent %s: %v\n", cmd, err)
		var ce *ConfigError
		if errors.As(err, &ce) || errors.Is(err, ErrRefused) {
			return ExitConfig
		}
		return ExitError
	}
	parse := func() bool {
		if err := fs.Parse(args); err != nil {
			return false
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "realip-agent %s: unexpected arguments %q\n", cmd, fs.Args())
			return false
		}
		return true
	}

	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return ExitOK

	case "run":
		cfgPath := config()
		if !parse() {
			return ExitUsage
		}
		a, err := New(opts)
		if err != nil {
			return fail(err)
		}
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(sigs)
		if err := a.Run(context.Background(), *cfgPath, sigs); err != nil {
			return fail(err)
		}
		return ExitOK

	case "load":
		cfgPath := config()
		if !parse() {
			return ExitUsage
		}
		a, err := New(opts)
		if err != nil {
			return fail(err)
		}
		cfg, res, err := a.Start(*cfgPath)
		if err != nil {
			return fail(err)
		}
		what := "loaded " + res.Path
		if res.Adopted {
			what = "already loaded"
		}
		fmt.Fprintf(stdout, "toa %s: %s; trusted=%q kinds=%q\n", res.Version, what, cfg.TrustedString(), cfg.KindsString())
		return ExitOK

	case "unload":
		if !parse() {
			return ExitUsage
		}
		a, err := New(opts)
		if err != nil {
			return fail(err)
		}
		if err := a.Unload(); err != nil {
			if errors.Is(err, ErrNotLoaded) {
				fmt.Fprintln(stdout, "toa is not loaded")
				return ExitOK
			}
			return fail(err)
		}
		fmt.Fprintln(stdout, "toa unloaded")
		return ExitOK

	case "status":
		asJSON := fs.Bool("json", false, "print JSON")
		cfgPath := fs.String("config", "", "also tell whether this configuration file is in force")
		if !parse() {
			return ExitUsage
		}
		a, err := New(opts)
		if err != nil {
			return fail(err)
		}
		st, err := a.Status(*cfgPath)
		if err != nil {
			return fail(err)
		}
		if *asJSON {
			err = st.WriteJSON(stdout)
		} else {
			err = st.WriteText(stdout)
		}
		if err != nil {
			return fail(err)
		}
		if !st.Module.Loaded {
			return ExitNotLoaded
		}
		return ExitOK

	case "check":
		cfgPath := config()
		if !parse() {
			return ExitUsage
		}
		cfg, err := LoadConfig(*cfgPath)
		if err != nil {
			return fail(err)
		}
		for _, w := range cfg.Warnings() {
			fmt.Fprintf(stderr, "realip-agent check: warning: %s\n", w)
		}
		fmt.Fprintf(stdout, "%s: ok (module_path=%q trusted=%q kinds=%q metrics_listen=%q metrics_per_cpu=%v procfs=%q)\n",
			*cfgPath, cfg.ModulePath, cfg.TrustedString(), cfg.KindsString(), cfg.MetricsListen, cfg.MetricsPerCPU, cfg.Procfs)
		return ExitOK

	case "modprobe-conf":
		cfgPath := config()
		if !parse() {
			return ExitUsage
		}
		cfg, err := LoadConfig(*cfgPath)
		if err != nil {
			return fail(err)
		}
		fmt.Fprint(stdout, ModprobeConf(cfg, *cfgPath))
		return ExitOK

	case "exporter":
		listen := fs.String("listen", "", "host:port to serve /metrics on (required)")
		procfs := fs.String("procfs", DefaultProcfs, "procfs mount point (reads DIR/net/toa_stats)")
		perCPU := fs.Bool("per-cpu", false, "export the counters per CPU (label cpu)")
		if !parse() {
			return ExitUsage
		}
		if *listen == "" {
			fmt.Fprintln(stderr, "realip-agent exporter: -listen is required")
			return ExitUsage
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return runExporter(ctx, *listen, *procfs, *perCPU, opts.Logger, stderr, nil)

	default:
		fmt.Fprintf(stderr, "realip-agent: unknown command %q\n\n%s", cmd, usage)
		return ExitUsage
	}
}

// runExporter serves toa_stats metrics until ctx ends; ready, if not nil,
// gets the address once it listens.
func runExporter(ctx context.Context, listen, procfs string, perCPU bool, log *slog.Logger, stderr io.Writer, ready func(addr string)) int {
	c, err := exporter.NewTOACollector(exporter.TOAOptions{ProcRoot: procfs, PerCPU: perCPU, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "realip-agent exporter: %v\n", err)
		return ExitError
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := exporter.Listen(listen, reg, log)
	if err != nil {
		fmt.Fprintf(stderr, "realip-agent exporter: %v\n", err)
		return ExitError
	}
	log.Info("serving toa_stats metrics", "addr", srv.Addr().String(), "file", c.Path())
	sdNotify("READY=1")
	if ready != nil {
		ready(srv.Addr().String())
	}
	select {
	case <-ctx.Done():
		srv.Shutdown(context.Background())
		return ExitOK
	case err := <-srv.Done():
		fmt.Fprintf(stderr, "realip-agent exporter: %v\n", err)
		return ExitError
	}
}

// ModprobeConf renders /etc/modprobe.d/toa.conf for cfg: the options the
// module gets when it is loaded without the agent (at boot through
// /etc/modules-load.d/toa.conf, or by modprobe).
func ModprobeConf(cfg Config, from string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `realip-agent modprobe-conf` from %s.\n", from)
	b.WriteString("# Options of toa.ko when it is loaded without the agent (at boot through\n")
	b.WriteString("# /etc/modules-load.d/toa.conf, or by modprobe); the agent sets the same\n")
	b.WriteString("# values over netlink when it runs.\n")
	if len(cfg.Trusted) == 0 {
		b.WriteString("# WARNING: no trusted prefixes: TOA options from every source are honoured.\n")
	}
	fmt.Fprintf(&b, "options toa %s\n", cfg.ModuleParams())
	return b.String()
}
