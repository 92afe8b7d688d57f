//go:build linux

// Package agenttest holds fakes for tests of code that drives an agent
// (package agent and cmd/realip-agent), as net/http/httptest does for HTTP:
// a fake toa.ko (Module) that implements agent.Kernel and hands out an
// agent.Control, small real module files compiled with gcc (BuildModule),
// and an Env that puts them together with a configuration file and a
// procfs tree for agent.Options.
//
// The package is Linux only (build constraint linux), as package agent is.
package agenttest
