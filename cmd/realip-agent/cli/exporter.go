//go:build linux

package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/exporter"
)

func exporterFlags(fs *flag.FlagSet, v *flagValues) {
	fs.StringVar(&v.listen, "listen", "", "host:port to serve /metrics on (required)")
	fs.StringVar(&v.procfs, "procfs", agent.DefaultProcfs, "procfs mount point (reads DIR/net/toa_stats)")
	fs.BoolVar(&v.perCPU, "per-cpu", false, "export the counters per CPU (label cpu)")
}

func runExporterCommand(inv *invocation) int {
	if inv.flags.listen == "" {
		fmt.Fprintln(inv.stderr, "realip-agent exporter: -listen is required")
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return runExporter(ctx, inv.flags.listen, inv.flags.procfs, inv.flags.perCPU, inv.opts.Logger, inv.stderr, nil)
}

// runExporter serves toa_stats metrics until ctx ends; ready, if not nil,
// gets the address once it listens.
func runExporter(ctx context.Context, listen, procfs string, perCPU bool, log *slog.Logger, stderr io.Writer, ready func(addr string)) int {
	c, err := exporter.NewTOACollector(exporter.TOAOptions{ProcRoot: procfs, PerCPU: perCPU, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "realip-agent exporter: %v\n", err)
		return exitError
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := exporter.Listen(listen, reg, log)
	if err != nil {
		fmt.Fprintf(stderr, "realip-agent exporter: %v\n", err)
		return exitError
	}
	log.Info("serving toa_stats metrics", "addr", srv.Addr().String(), "file", c.Path())
	agent.SDNotify("READY=1")
	if ready != nil {
		ready(srv.Addr().String())
	}
	select {
	case <-ctx.Done():
		srv.Shutdown(context.Background())
		return exitOK
	case err := <-srv.Done():
		fmt.Fprintf(stderr, "realip-agent exporter: %v\n", err)
		return exitError
	}
}
