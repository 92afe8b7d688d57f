//go:build linux

// Package agent is realip-agent: it runs one of realip's two TOA receivers,
// the kernel module toa.ko (kmod/) or the eBPF receiver (package toarecv),
// keeps its trusted prefixes and option kinds in step with a YAML
// configuration file, reports its state, and serves Prometheus metrics. It
// is a library: the realip-agent command line (subcommands, flags, exit
// statuses) is cmd/realip-agent and its package cli, and package
// agent/agenttest has fakes (a kernel module, an eBPF receiver, module
// files) for tests of code that drives an agent.
//
// # Choosing the receiver
//
// The configuration's receiver field is kmod, ebpf or auto (the default).
// The agent never runs both: a loaded toa.ko and a pinned eBPF receiver
// at once, or a file naming the one that is not in place, is refused
// (ErrReceiverConflict) with the advice to run `realip-agent unload` first.
// auto decides, in this order, and logs the choice and why:
//   - toa.ko is loaded: kmod (adopted);
//   - the eBPF receiver is pinned: ebpf (adopted);
//   - module_path names a file: kmod (a refusal of that file is the error,
//     not a reason to take the other receiver);
//   - a toa.ko for the running kernel is found and is one the agent loads
//     (realip's, built for this kernel, and signed if the kernel is in
//     lockdown, /sys/kernel/security/lockdown not "[none]", since lockdown
//     refuses unsigned modules): kmod;
//   - the kernel runs the eBPF receiver (toarecv.Available: cgroup v2, a
//     kernel that loads its programs, the right to): ebpf;
//   - else one error giving, for each receiver, what is missing and what
//     to do.
//
// The eBPF receiver serves the processes of the configuration's cgroup
// (default: the root of the cgroup v2 mount, every process). It cannot
// give an IPv6 client to an IPv4 socket (the hook cannot change the
// address family): such calls keep the edge's address and count as
// getname_toa_mismatch, so NAT64 origins want toa.ko.
//
// # Loading the module
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
// # Attaching the eBPF receiver
//
// The eBPF receiver is attached to the cgroup and pinned under bpffs
// (Options.EBPFPinDir, default /sys/fs/bpf/realip/toa), configured from the
// file, and let go of: between calls the agent holds nothing of it, so it
// works without the agent and `realip-agent unload` detaches it at once. A
// pinned receiver is adopted: its maps (entries, counters) are kept and
// the programs of this build replace the pinned ones through their links.
//
// # Running
//
// `realip-agent run` starts or adopts the receiver, applies the
// configuration, serves metrics on metrics_listen and tells systemd it is
// ready (Type=notify). SIGHUP re-reads the file and applies the trusted
// prefixes and kinds without reloading or detaching anything: over
// netlink (toactl.SetConfig) to the module, into the pinned maps of the
// eBPF receiver; a receiver that is gone meanwhile is loaded or attached
// again. A change of receiver, cgroup or metrics_listen is logged and
// applies when the agent restarts (switching receivers needs `realip-agent
// unload` first); a bad file is logged and changes nothing. SIGTERM and
// SIGINT end the agent and leave the receiver in place; `realip-agent
// unload` removes whichever is in place (delete_module; unpinning, which
// detaches the programs).
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
// # Doctor
//
// Agent.Doctor is `realip-agent doctor`: it reads the receiver in place
// (Status), the module file the agent would load, `dkms status toa`, the
// configuration file and /proc/net/sockstat, and answers a fixed list of
// questions (doctorChecks), each a Check with a verdict (ok, warn,
// problem, skip), what was seen and what to do. With a window
// (DoctorOptions.Watch) the counters are read twice and judged on what
// moved; without one, on their totals. Report.WriteText fits 80 columns;
// Report.WriteJSON has stable field names.
//
// # Metrics
//
// The agent's registry has the exporter's toa_stats collector
// (realip_toa_*_total and friends, see package exporter), reading
// /proc/net/toa_stats for the module and the pinned counters of the eBPF
// receiver, which has the same rows: the metrics have the same names and
// labels whichever receiver runs. And:
//
//	realip_agent_config_reloads_total{result}     counter: SIGHUP reloads, success or failure
//	realip_agent_config_last_reload_successful    gauge: 1 when the last load or reload was applied
//	realip_agent_module_loads_total               counter: loads done by this process
//	realip_toa_receiver_info{receiver}            gauge: 1 for the receiver in force, kmod or ebpf
//	realip_toa_control_up                         gauge: the receiver's configuration was read (netlink, pinned maps)
//	realip_toa_trusted_prefixes                   gauge: trusted prefixes in force (0: all trusted)
//	realip_toa_module_info{version,srcversion}    gauge: always 1 while toa.ko is loaded
//
// plus the Go runtime and process collectors.
//
// The package is Linux only (build constraint linux).
package agent
