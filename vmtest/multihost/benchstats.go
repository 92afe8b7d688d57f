//go:build linux

package main

// -bpf-stats: where the eBPF programs on the origin's cgroup spend their
// time, from the kernel's own accounting (BPF_ENABLE_STATS: run count and
// run time per program, held for the bench's lifetime). A diagnostic, not
// a figure: the accounting itself costs two clock reads per program run,
// which the states without programs do not pay, so a bench with it says
// where the time goes and a bench without it says how much. Its ns/run
// include those reads: the empty programs of the hook state show what they
// come to (about 100 ns per run on the 6.18 development machine).

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

var statsTypes = []ebpf.AttachType{ebpf.AttachCGroupSockOps, ebpf.AttachCgroupInet4GetPeername, ebpf.AttachCgroupInet6GetPeername}

// progStats are the summed stats of the programs on the origin's cgroup,
// by attach type.
type progStats map[ebpf.AttachType]ebpf.ProgramStats

// statsProbe takes snapshots of progStats during one measurement.
type statsProbe struct {
	b     *bencher
	snaps []progStats
	err   error
}

func (b *bencher) enableStats() error {
	if !b.cfg.bpfStats {
		return nil
	}
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("-bpf-stats: BPF_ENABLE_STATS: %w", err)
	}
	b.stats = c
	return nil
}

// probe returns a statsProbe, nil (whose methods do nothing) unless
// -bpf-stats is on and programs are on the origin's cgroup.
func (b *bencher) probe() *statsProbe {
	if !b.cfg.bpfStats || (b.cur != stateEBPF && b.cur != stateHook) {
		return nil
	}
	return &statsProbe{b: b}
}

func (p *statsProbe) mark() {
	if p == nil || p.err != nil {
		return
	}
	s, err := p.b.programStats()
	p.snaps, p.err = append(p.snaps, s), err
}

// report prints, from four marks (before and after the connections, after
// the getpeername() loop on the TOA socket, after the one on the other),
// the runs per connection and ns per run of each program type, and the ns
// per run of getpeername6 on each socket.
func (p *statsProbe) report(round, conns, calls int) error {
	if p == nil {
		return nil
	}
	if p.err != nil || len(p.snaps) != 4 {
		return fmt.Errorf("-bpf-stats: %v (%d snapshots)", p.err, len(p.snaps))
	}
	per := func(from, to int, at ebpf.AttachType) (runs uint64, ns float64) {
		a, z := p.snaps[from][at], p.snaps[to][at]
		runs = z.RunCount - a.RunCount
		if runs > 0 {
			ns = float64(z.Runtime-a.Runtime) / float64(runs)
		}
		return runs, ns
	}
	line := fmt.Sprintf("bench stats %d %-4s:", round, p.b.cur)
	for _, at := range statsTypes {
		runs, ns := per(0, 1, at)
		line += fmt.Sprintf(" %s %.2f runs/conn %.0f ns/run;", at, float64(runs)/float64(conns), ns)
	}
	runsT, nsT := per(1, 2, ebpf.AttachCgroupInet6GetPeername)
	runsP, nsP := per(2, 3, ebpf.AttachCgroupInet6GetPeername)
	fmt.Printf("%s getpeername6 TOA socket %d runs %.0f ns/run, no-TOA socket %d runs %.0f ns/run (of %d calls each)\n",
		line, runsT, nsT, runsP, nsP, calls)
	return nil
}

// programStats sums the stats of the programs attached to the origin's
// cgroup, by type.
func (b *bencher) programStats() (progStats, error) {
	f, err := os.Open(b.cg.origin)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := progStats{}
	for _, at := range statsTypes {
		q, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			return nil, fmt.Errorf("querying %s programs: %w", at, err)
		}
		var sum ebpf.ProgramStats
		for _, ap := range q.Programs {
			prog, err := ebpf.NewProgramFromID(ap.ID)
			if err != nil {
				return nil, fmt.Errorf("program %d: %w", ap.ID, err)
			}
			st, err := prog.Stats()
			prog.Close()
			if err != nil {
				return nil, fmt.Errorf("program %d stats: %w", ap.ID, err)
			}
			sum.RunCount += st.RunCount
			sum.Runtime += st.Runtime
		}
		out[at] = sum
	}
	return out, nil
}
