//go:build linux

package loadkit

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPUMeter measures the CPU time of the relay's processes and of this one
// over a run, from Start to Stop.
type CPUMeter struct {
	pids   []int
	relay0 time.Duration
	self0  time.Duration
	wall0  time.Time
}

// NewCPUMeter is a meter of the processes in list, comma-separated PIDs
// (the value of -pids, which the error names); none measures this
// process only.
func NewCPUMeter(list string) (*CPUMeter, error) {
	m := &CPUMeter{}
	for _, f := range SplitList(list) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("-pids: %q is not a PID", f)
		}
		m.pids = append(m.pids, pid)
	}
	return m, nil
}

// Start starts the run.
func (m *CPUMeter) Start() {
	m.relay0, m.self0, m.wall0 = ProcsCPU(m.pids), selfCPU(), time.Now()
}

// Stop ends the run and returns what it cost.
func (m *CPUMeter) Stop() *CPUUsage {
	wall := time.Since(m.wall0).Seconds()
	u := &CPUUsage{Relay: len(m.pids) > 0, RelayCPU: ProcsCPU(m.pids) - m.relay0}
	u.RelayCores = u.RelayCPU.Seconds() / wall
	u.SelfCores = (selfCPU() - m.self0).Seconds() / wall
	return u
}

// Run runs Parallel(n, dur, work) between Start and Stop: it returns the
// time the work took and what it cost.
func (m *CPUMeter) Run(n int, dur time.Duration, work func(i int, stopAt time.Time)) (time.Duration, *CPUUsage) {
	m.Start()
	elapsed := Parallel(n, dur, work)
	return elapsed, m.Stop()
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// ProcsCPU sums the user and system time of the processes (all their
// threads). A process that is gone, or whose stat cannot be read, counts
// nothing.
func ProcsCPU(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		if t, err := ParseStat(b); err == nil {
			total += t
		}
	}
	return total
}

// ParseStat is the user plus system time (utime and stime, fields 14 and
// 15) of the contents of a /proc/PID/stat file. The command name, field 2,
// is in parentheses and may hold blanks and parentheses itself: the
// fields are counted from the last ')'.
func ParseStat(b []byte) (time.Duration, error) {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name in parentheses")
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks [2]int64
	for k, x := range f[11:13] {
		t, err := strconv.ParseInt(x, 10, 64)
		if err != nil || t < 0 {
			return 0, fmt.Errorf("stat: field %d %q is not a tick count", 14+k, x)
		}
		ticks[k] = t
	}
	return time.Duration(ticks[0]+ticks[1]) * clockTick, nil
}

// selfCPU is this process's user plus system time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
