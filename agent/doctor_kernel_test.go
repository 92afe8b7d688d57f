//go:build linux

package agent_test

// doctor against the real eBPF receiver on this machine's kernel (the
// world of ebpf_kernel_test.go: a pin folder and a cgroup of the test's
// own, an edge namespace sending real TOA options from a trusted and an
// untrusted address). The -watch window is the time the test's traffic
// takes: Wait sends it.

import (
	"fmt"
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/realip/realip/agent"
)

// doctorKernel runs Doctor on k's file, sending traffic in the window
// when there is one.
func doctorKernel(t *testing.T, k *kernelEBPF, a *agent.Agent, traffic func()) *agent.Report {
	t.Helper()
	opts := agent.DoctorOptions{ConfigPath: k.ConfigPath, ConfigGiven: true, DKMS: []string{noDKMS}}
	if traffic != nil {
		opts.Watch = time.Minute
		opts.Wait = func(time.Duration) { traffic() }
	}
	rep, err := a.Doctor(opts)
	if err != nil {
		t.Fatal(err)
	}
	checkReportText(t, rep)
	return rep
}

// writeDoctorConfig: the eBPF receiver on the test's cgroup, the host's
// real procfs (sockstat), no module file named.
func (k *kernelEBPF) writeDoctorConfig(trusted string) {
	k.Write(fmt.Sprintf("receiver: ebpf\ncgroup: %s\ntrusted: [%s]\nkinds: [200]\nprocfs: /proc\nmodule_path: \"\"\n", k.cgroup, trusted))
}

// doctorAgent is an agent on the real eBPF receiver and the running
// kernel's release, with the fake module never loaded and module folders
// of the test's own (empty: no toa.ko for this kernel).
func (k *kernelEBPF) doctorAgent(t *testing.T) *agent.Agent {
	t.Helper()
	opts := k.Options()
	opts.EBPF, opts.EBPFPinDir, opts.KernelRelease = nil, k.pinDir, ""
	return newAgent(t, opts)
}

// TestKernelDoctor: a healthy origin (every check ok), forged options
// from an untrusted host in the window (a problem, with their count), an
// empty trust list (a problem: the forged options are honoured), no
// receiver (a problem), each with the verdicts the exit status follows.
func TestKernelDoctor(t *testing.T) {
	k := newKernelEBPF(t)
	k.writeDoctorConfig(labEdge.String() + "/32")
	a := k.doctorAgent(t)
	release, err := agent.KernelRelease()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Start(k.ConfigPath); err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddrPort("192.0.2.7:4000")
	trusted := func(n int) {
		for range n {
			k.expectClient(t, "trusted edge", labEdge, client, true)
		}
	}
	forged := func(n int) {
		for range n {
			k.expectClient(t, "forged from an untrusted host", labRogue, client, false)
		}
	}

	healthy := map[string]agent.CheckStatus{"dkms": agent.CheckSkip, "module": agent.CheckSkip}
	rep := doctorKernel(t, k, a, func() { trusted(2) })
	expect(t, rep, healthy)
	says(t, rep, "module", "no toa.ko for kernel "+release, "not needed: the eBPF receiver runs")
	says(t, rep, "receiver", "eBPF receiver, kernel "+release, "pinned in "+k.pinDir, "attached to cgroup "+k.cgroup, "(3 links)")
	says(t, rep, "options", "2 of 2 connections in the last 1m0s carried a TOA option that was honoured")
	says(t, rep, "listeners", "the processes of cgroup "+k.cgroup)
	says(t, rep, "entries", "TCP sockets on the host")

	rep = doctorKernel(t, k, a, func() { trusted(1); forged(3) })
	expect(t, rep, with(healthy, "untrusted", agent.CheckProblem))
	says(t, rep, "untrusted", "3 options from sources outside the trusted prefixes were ignored in the last 1m0s", "forged")
	says(t, rep, "options", "1 of 4 connections")
	// Without a window the total since the receiver started is a warning.
	rep = doctorKernel(t, k, a, nil)
	expect(t, rep, with(healthy, "untrusted", agent.CheckWarn))
	says(t, rep, "untrusted", "3 options", "since the receiver started")

	doctorKernelEmptyAndGone(t, k, a, healthy)
}

// doctorKernelEmptyAndGone: the receiver with an empty trust list (a
// forged option is honoured; trust is a problem), then unloaded (receiver
// is a problem).
func doctorKernelEmptyAndGone(t *testing.T, k *kernelEBPF, a *agent.Agent, healthy map[string]agent.CheckStatus) {
	t.Helper()
	client := netip.MustParseAddrPort("192.0.2.7:4000")
	k.writeDoctorConfig("")
	if _, _, err := a.Start(k.ConfigPath); err != nil {
		t.Fatal(err)
	}
	k.expectClient(t, "forged, every source trusted", labRogue, client, true)
	rep := doctorKernel(t, k, a, nil)
	expect(t, rep, with(with(healthy, "trust", agent.CheckProblem), "untrusted", agent.CheckSkip))
	says(t, rep, "trust", "no trusted prefixes", "anyone who can reach this host can forge client addresses")

	if _, err := a.UnloadReceivers(); err != nil {
		t.Fatal(err)
	}
	rep = doctorKernel(t, k, a, nil)
	want := with(healthy, "receiver", agent.CheckProblem)
	for _, n := range []string{"trust", "options", "untrusted", "malformed", "listeners", "family", "entries"} {
		want[n] = agent.CheckSkip
	}
	expect(t, rep, want)
	says(t, rep, "receiver", "no TOA receiver is in place", "It would run ebpf (receiver: ebpf)")
	if rep.Receiver != agent.ReceiverNone || rep.Problems() != 1 {
		t.Errorf("no receiver: %s, %d problems", rep.Receiver, rep.Problems())
	}
}

// with is want with the verdict of check set to s.
func with(want map[string]agent.CheckStatus, check string, s agent.CheckStatus) map[string]agent.CheckStatus {
	out := maps.Clone(want)
	out[check] = s
	return out
}
