//go:build linux

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuMeter measures the CPU time of the unwrapper's processes and of this
// one over a run.
type cpuMeter struct {
	pids       []int
	relay0     time.Duration
	self0      time.Duration
	wall0      time.Time
	relayCores float64 // CPU seconds per wall second
	selfCores  float64
	relayCPU   time.Duration
}

func newCPUMeter(list string) (*cpuMeter, error) {
	m := &cpuMeter{}
	for _, f := range splitList(list) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("-pids: %q is not a PID", f)
		}
		m.pids = append(m.pids, pid)
	}
	return m, nil
}

func (m *cpuMeter) start() {
	m.relay0, m.self0, m.wall0 = procsCPU(m.pids), selfCPU(), time.Now()
}

func (m *cpuMeter) stop() {
	wall := time.Since(m.wall0).Seconds()
	m.relayCPU = procsCPU(m.pids) - m.relay0
	m.relayCores = m.relayCPU.Seconds() / wall
	m.selfCores = (selfCPU() - m.self0).Seconds() / wall
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procsCPU sums user and system time of the processes (all their threads).
func procsCPU(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * clockTick
	}
	return total
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
