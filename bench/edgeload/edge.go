//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/realip/realip/bench/internal/loadkit"
	"github.com/realip/realip/edge"
)

// runEdge runs package edge the way cmd/realip-edge does (same options,
// metrics registered in a registry that nobody scrapes) and writes a CPU
// profile, and optionally a mutex and a block profile, from start to
// SIGTERM or SIGINT. realip-edge itself has no profiling flag.
func runEdge(args []string) error {
	fs := flag.NewFlagSet("edge", flag.ExitOnError)
	rulesPath := fs.String("rules", "", "rules file, required")
	listenIP := fs.String("listen-ip", "", "address to listen on (default every address)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile here")
	mutexProfile := fs.String("mutexprofile", "", "write a mutex contention profile here")
	blockProfile := fs.String("blockprofile", "", "write a blocking profile here")
	fs.Parse(args)
	if *rulesPath == "" {
		return errors.New("-rules is required")
	}
	opts := edge.Options{RulesPath: *rulesPath, Registerer: prometheus.NewRegistry()}
	if *listenIP != "" {
		ip, err := netip.ParseAddr(*listenIP)
		if err != nil {
			return fmt.Errorf("-listen-ip: %w", err)
		}
		opts.ListenIP = ip
	}
	if *mutexProfile != "" {
		runtime.SetMutexProfileFraction(5)
	}
	if *blockProfile != "" {
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
	}
	srv, err := edge.New(opts)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer f.Close()
	}
	loadkit.WaitForStop()
	pprof.StopCPUProfile()
	for name, path := range map[string]string{"mutex": *mutexProfile, "block": *blockProfile} {
		if path == "" {
			continue
		}
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		pprof.Lookup(name).WriteTo(f, 0)
		f.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	return nil
}
