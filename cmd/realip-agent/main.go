//go:build linux

// Command realip-agent runs realip's TOA receiver, the kernel module toa.ko
// or the eBPF receiver (the configuration's receiver: field), keeps its
// trusted prefixes and option kinds in step with /etc/realip/agent.yaml,
// and serves Prometheus metrics of the receiver's counters.
//
//	realip-agent run [-config FILE]
//	realip-agent load [-config FILE]
//	realip-agent unload
//	realip-agent status [-json] [-config FILE]
//	realip-agent doctor [-json] [-watch DURATION] [-config FILE]
//	realip-agent check [-config FILE]
//	realip-agent modprobe-conf [-config FILE]
//	realip-agent exporter -listen ADDR [-procfs DIR] [-per-cpu]
//
// The command line (subcommands, flags, exit statuses) is package
// github.com/realip/realip/cmd/realip-agent/cli. See package
// github.com/realip/realip/agent for the configuration file and
// packaging/systemd/realip-agent.service for the service.
package main

import (
	"os"

	"github.com/realip/realip/cmd/realip-agent/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
