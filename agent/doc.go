//go:build linux

// Package agent is realip-agent: it loads realip's TOA kernel module
// (toa.ko, kmod/), keeps its trusted prefixes and option kinds in step with
// a YAML configuration file, reports its state, and serves Prometheus
// metrics. It is a library: the realip-agent command line (subcommands,
// flags, exit statuses) is cmd/realip-agent and its package cli, and
// package agent/agenttest has fakes (a kernel module, module files) for
// tests of code that drives an agent.
//
// # Loading
//
// The module file is the configuration's module_path, or the first toa.ko
// (also .ko.xz, .ko.zst, .ko.gz) found for the running kernel in
// /lib/modules/$(uname -r)/updates/dkms (where Debian's DKMS installs it),
// extra, updates, then anywhere under kernel/ — depmod's order. Before
// loading, the agent reads the file's ELF .modinfo section (decompressing
// xz, zstd and gzip modules in memory) and refuses, without touching the
// kernel:
//   - a module whose vermagic names another kernel release than uname -r
//     (*VermagicError: the message names both releases and gives the
//     `dkms install toa/VERSION -k RELEASE` and
//     `make -C kmod KDIR=/lib/modules/RELEASE/build` commands);
//   - a file that is not a kernel module of this machine's architecture;
//   - a module that is not realip's toa.ko (another vendor's module has no
//     control interface to configure; `realip-agent exporter` serves its
//     metrics).
//
// An uncompressed module is loaded with finit_module(2). A compressed one
// also goes through finit_module, with MODULE_INIT_COMPRESSED_FILE, when
// the kernel decompresses that format itself (it names it in
// /sys/module/compression; Debian's 6.12 and newer kernels do, for xz);
// otherwise the agent hands the image it decompressed to init_module(2).
// The trusted prefixes and kinds are passed as module parameters
// ("trusted=... kinds=..."), so the module never runs with a wider trust
// than the file's, and then set again over netlink and read back.
//
// If /sys/module/toa exists the agent adopts the loaded module and only
// pushes the configuration.
//
// # Running
//
// `realip-agent run` loads or adopts the module, pushes the configuration,
// serves metrics on metrics_listen and tells systemd it is ready
// (Type=notify). SIGHUP re-reads the file and pushes the changes over
// netlink (toactl.SetConfig) without reloading the module; a bad file is
// logged and changes nothing. SIGTERM and SIGINT end the agent and leave
// the module loaded; `realip-agent unload` removes it (delete_module).
//
// # After a reboot without the agent
//
// packaging/config/modules-load.d/toa.conf makes systemd-modules-load
// load toa.ko at boot, and modprobe applies the options in
// /etc/modprobe.d/toa.conf. The agent's file stays the source of truth:
// `realip-agent modprobe-conf > /etc/modprobe.d/toa.conf` writes its
// trusted prefixes and kinds there, so that a module loaded at boot (or by
// hand with modprobe) trusts the same edges before the agent starts, or
// without it. The agent never writes /etc itself (its unit makes the file
// system read-only).
//
// # Metrics
//
// The agent's registry has the exporter's toa_stats collector
// (realip_toa_*_total and friends, see package exporter), and:
//
//	realip_agent_config_reloads_total{result}     counter: SIGHUP reloads, success or failure
//	realip_agent_config_last_reload_successful    gauge: 1 when the last load or reload was applied
//	realip_agent_module_loads_total               counter: loads done by this process
//	realip_toa_control_up                         gauge: the module's netlink interface answered
//	realip_toa_trusted_prefixes                   gauge: trusted prefixes in force (0: all trusted)
//	realip_toa_module_info{version,srcversion}    gauge: always 1 while loaded
//
// plus the Go runtime and process collectors.
//
// The package is Linux only (build constraint linux).
package agent
