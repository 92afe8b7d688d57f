//go:build linux

// Command realip-edge is a minimal L4 edge forwarder that speaks the EdgeOne
// L4 proxy rule format and passes the client address to origins with PROXY
// protocol v1/v2 or SPP.
//
//	realip-edge -rules FILE [-origin-groups FILE] [-metrics ADDR] [-listen-ip IP]
//	realip-edge -rules FILE [-origin-groups FILE] -check
//
// -check validates the files and prints the rules in canonical export form
// (which imports again unchanged); errors are printed as FILE:LINE: message
// and exit with status 1. SIGHUP reloads the files atomically; SIGTERM and
// SIGINT stop listening and drain established connections.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/realip/realip/edge"
	"github.com/realip/realip/edge/origin"
	"github.com/realip/realip/edge/rules"
	"github.com/realip/realip/edge/toasend"
	"github.com/realip/realip/exporter"
)

type flags struct {
	rules, groups, metrics, listenIP string
	check, ppv2Every, verbose        bool
	goroutineRelay                   bool
	idle, udpIdle, dial, drain       time.Duration
	checkEvery                       time.Duration
	maxFlows, maxConns               int
	maxFlowsPerIP, maxConnsPerIP     int
	toaKindV4, toaKindV6             uint
	toaCgroup                        string
}

func main() {
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "realip-edge:", err)
		os.Exit(2)
	}
	if f.check {
		os.Exit(check(f, os.Stdout, os.Stderr))
	}
	if err := run(f); err != nil {
		fmt.Fprintln(os.Stderr, "realip-edge:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*flags, error) {
	f := &flags{}
	fs := newFlagSet(f)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if f.rules == "" {
		return nil, errors.New("-rules is required")
	}
	if f.maxFlowsPerIP == 0 || f.maxConnsPerIP == 0 {
		return nil, errors.New("-max-udp-flows-per-ip and -max-tcp-conns-per-ip are 1 or more, or -1 for no bound")
	}
	if f.toaKindV4 > 255 || f.toaKindV6 > 255 {
		return nil, errors.New("-toa-kind-v4 and -toa-kind-v6 are TCP option kinds, 2..255")
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return f, nil
}

// newFlagSet defines realip-edge's flags into f. Its manual page
// (packaging/man/realip-edge.8) and bash completion
// (packaging/completion/realip-edge) are tested against it.
func newFlagSet(f *flags) *flag.FlagSet {
	fs := flag.NewFlagSet("realip-edge", flag.ContinueOnError)
	fs.StringVar(&f.rules, "rules", "", "rules file (EdgeOne batch-import format), required")
	fs.StringVar(&f.groups, "origin-groups", "", "origin-groups file: NAME HOST [HOST...] per line")
	fs.StringVar(&f.metrics, "metrics", "", "address to serve Prometheus /metrics on")
	fs.StringVar(&f.listenIP, "listen-ip", "", "address to listen on (default: every address, IPv4 and IPv6)")
	fs.BoolVar(&f.check, "check", false, "validate the files, print the canonical rules and exit")
	fs.BoolVar(&f.ppv2Every, "udp-ppv2-every-datagram", false, "send the PROXY v2 header on every UDP datagram, not only the first of a flow")
	fs.BoolVar(&f.verbose, "v", false, "debug logging")
	fs.BoolVar(&f.goroutineRelay, "goroutine-relay", false, "relay with goroutines (two per TCP connection, one per UDP port and per flow) instead of the epoll loops (Linux), for comparison")
	fs.DurationVar(&f.idle, "tcp-idle", edge.DefaultIdleTimeout, "close TCP connections idle this long in both directions")
	fs.DurationVar(&f.udpIdle, "udp-idle", edge.DefaultUDPIdle, "expire UDP flows idle this long")
	fs.DurationVar(&f.dial, "dial-timeout", edge.DefaultDialTimeout, "TCP connect timeout to an origin")
	fs.DurationVar(&f.drain, "drain-timeout", 30*time.Second, "how long SIGTERM waits for connections to finish")
	fs.DurationVar(&f.checkEvery, "check-every", origin.DefaultCheckEvery, "period of the TCP health checks of origins (the first runs at start)")
	fs.IntVar(&f.maxFlows, "max-udp-flows", edge.DefaultMaxUDPFlows, "bound on live UDP flows; at the bound a new client's flow replaces the least recently used flow of the address holding the most (counted as flow_evicted)")
	fs.IntVar(&f.maxConns, "max-tcp-conns", edge.DefaultMaxTCPConns, "bound on TCP connections relayed at once (more are closed and counted as conn_limit); lowered to what the open-file limit holds (2 descriptors each), logged")
	fs.IntVar(&f.maxFlowsPerIP, "max-udp-flows-per-ip", edge.DefaultMaxUDPFlowsPerIP, "bound on live UDP flows of one client address, all ports together (more are dropped and counted as per_ip_limit); -1: none")
	fs.IntVar(&f.maxConnsPerIP, "max-tcp-conns-per-ip", edge.DefaultMaxTCPConnsPerIP, "bound on TCP connections of one client address relayed at once (more are reset and counted as per_ip_limit); -1: none")
	fs.UintVar(&f.toaKindV4, "toa-kind-v4", 200, "TCP option kind of the TOA for IPv4 clients")
	fs.UintVar(&f.toaKindV6, "toa-kind-v6", 253, "TCP option kind of the TOA for IPv6 clients")
	fs.StringVar(&f.toaCgroup, "toa-cgroup", "", "cgroup v2 to attach the TOA sender to (default: this process's own)")
	return fs
}

// check implements -check: exit status 0 with the canonical rules on out,
// or 1 with every error on errOut.
func check(f *flags, out, errOut io.Writer) int {
	set, err := rules.Load(f.rules, f.groups)
	if err != nil {
		fmt.Fprintln(errOut, err)
		return 1
	}
	if err := set.Export(out); err != nil {
		fmt.Fprintln(errOut, err)
		return 1
	}
	return 0
}

func run(f *flags) error {
	level := slog.LevelInfo
	if f.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	opts := edge.Options{
		RulesPath: f.rules, GroupsPath: f.groups,
		DialTimeout: f.dial, IdleTimeout: f.idle, UDPIdle: f.udpIdle, MaxUDPFlows: f.maxFlows, MaxTCPConns: f.maxConns,
		MaxUDPFlowsPerIP: f.maxFlowsPerIP, MaxTCPConnsPerIP: f.maxConnsPerIP,
		GoroutineRelay:    f.goroutineRelay,
		PPv2EveryDatagram: f.ppv2Every, Logger: log,
		TOA:    toasend.Options{CgroupPath: f.toaCgroup, KindV4: uint8(f.toaKindV4), KindV6: uint8(f.toaKindV6)},
		Origin: origin.Options{CheckEvery: f.checkEvery},
	}
	if f.listenIP != "" {
		ip, err := netip.ParseAddr(f.listenIP)
		if err != nil {
			return fmt.Errorf("-listen-ip: %w", err)
		}
		opts.ListenIP = ip
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts.Registerer = reg
	srv, err := edge.New(opts)
	if err != nil {
		return err
	}
	// Before Start logs that the rules are applied: a SIGHUP or SIGTERM
	// sent from then on must reach waitSignals, not kill the process.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	if err := srv.Start(); err != nil {
		return err
	}
	if f.metrics != "" {
		m, err := exporter.Listen(f.metrics, reg, log)
		if err != nil {
			srv.Shutdown(context.Background())
			return fmt.Errorf("-metrics: %w", err)
		}
		log.Info("metrics", "addr", m.Addr().String())
		go func() {
			if err := <-m.Done(); err != nil {
				log.Error("metrics server stopped", "err", err)
			}
		}()
	}
	return waitSignals(sig, srv, f.drain, log)
}

func waitSignals(sig <-chan os.Signal, srv *edge.Server, drain time.Duration, log *slog.Logger) error {
	for s := range sig {
		if s == syscall.SIGHUP {
			if err := srv.Reload(); err != nil {
				log.Error("reload refused, rules unchanged", "err", err)
			}
			continue
		}
		log.Info("draining", "signal", s.String(), "timeout", drain)
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		err := srv.Shutdown(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			// Stopping was asked for and done: cut connections are no failure.
			log.Warn("drain timeout reached, remaining connections cut", "timeout", drain)
			return nil
		}
		return err
	}
	return nil
}
