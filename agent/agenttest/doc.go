//go:build linux

// Package agenttest holds fakes for tests of code that drives an agent
// (package agent and cmd/realip-agent), as net/http/httptest does for HTTP:
// a fake toa.ko (Module) that implements agent.Kernel and hands out an
// agent.Control, a fake eBPF receiver (EBPF) that implements agent.EBPF,
// small real module files compiled with gcc (BuildModule), and an Env that
// puts them together with a configuration file, a procfs tree and the
// kernel's lockdown state for agent.Options. Tests that need the real
// eBPF receiver give agent.Options no EBPF and a pin folder of their own.
//
// The package is Linux only (build constraint linux), as package agent is.
package agenttest
