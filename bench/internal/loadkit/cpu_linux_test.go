//go:build linux

package loadkit

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// stat is a /proc/PID/stat line with the given command name, utime and
// stime.
func stat(comm string, utime, stime string) string {
	return "4242 (" + comm + ") S 1 4242 4242 0 -1 4194560 1000 0 0 0 " + utime + " " + stime +
		" 0 0 20 0 9 0 123456 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want time.Duration
		ok   bool
	}{
		{"plain", stat("haproxy", "150", "50"), 2 * time.Second, true},
		{"zero", stat("nginx", "0", "0"), 0, true},
		{"blank in the name", stat("nginx: worker", "7", "3"), 100 * time.Millisecond, true},
		{"parentheses in the name", stat("a) S 1 2 3 (b", "1", "2"), 30 * time.Millisecond, true},
		{"no name", "4242 S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 50 0 0", 0, false},
		{"cut short", "4242 (x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150", 0, false},
		{"utime not a number", stat("x", "1a", "5"), 0, false},
		{"stime negative", stat("x", "1", "-5"), 0, false},
		{"empty", "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tc.in))
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("ParseStat = %v, %v; want %v, ok %v", got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestParseStatOfThisProcess(t *testing.T) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseStat(b); err != nil {
		t.Errorf("%v: %q", err, b)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte(stat("haproxy", "150", "50")))
	f.Add([]byte(stat("a) b (c", "1", "2")))
	f.Add([]byte("1 (x)"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseStat(b)
		if err != nil {
			if d != 0 {
				t.Errorf("error %v with %v", err, d)
			}
			return
		}
		if !strings.Contains(string(b), ")") {
			t.Errorf("%q parsed without a command name", b)
		}
	})
}

func TestNewCPUMeter(t *testing.T) {
	for _, tc := range []struct {
		list string
		want []int
		ok   bool
	}{
		{"", nil, true},
		{"1", []int{1}, true},
		{"10,20, 30", []int{10, 20, 30}, true},
		{"1,x", nil, false},
		{"1.5", nil, false},
	} {
		m, err := NewCPUMeter(tc.list)
		if (err == nil) != tc.ok {
			t.Errorf("NewCPUMeter(%q): %v, want ok %v", tc.list, err, tc.ok)
			continue
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "-pids: ") {
				t.Errorf("NewCPUMeter(%q): error %q does not name -pids", tc.list, err)
			}
			continue
		}
		if !slices.Equal(m.pids, tc.want) {
			t.Errorf("NewCPUMeter(%q): pids %v, want %v", tc.list, m.pids, tc.want)
		}
	}
}

// burn spends d of this process's CPU time.
func burn(d time.Duration) {
	start := selfCPU()
	x := 0
	for selfCPU()-start < d {
		for i := range 100000 {
			x += i
		}
	}
	_ = fmt.Sprint(x)
}

func TestProcsCPU(t *testing.T) {
	self := []int{os.Getpid()}
	before := ProcsCPU(self)
	burn(100 * time.Millisecond)
	if after := ProcsCPU(self); after <= before {
		t.Errorf("this process's CPU time went from %v to %v over 100ms of work", before, after)
	}
	if got := ProcsCPU([]int{-1}); got != 0 {
		t.Errorf("no such process: %v", got)
	}
	if got := ProcsCPU(nil); got != 0 {
		t.Errorf("no process: %v", got)
	}
}

func TestCPUMeterRun(t *testing.T) {
	for _, tc := range []struct {
		pids  string
		relay bool
	}{{"", false}, {fmt.Sprint(os.Getpid()), true}} {
		m, err := NewCPUMeter(tc.pids)
		if err != nil {
			t.Fatal(err)
		}
		var runs int
		elapsed, u := m.Run(1, time.Hour, func(int, time.Time) {
			runs++
			burn(50 * time.Millisecond)
		})
		if runs != 1 || elapsed <= 0 {
			t.Errorf("-pids %q: %d runs in %v", tc.pids, runs, elapsed)
		}
		if u.Relay != tc.relay || u.SelfCores <= 0 {
			t.Errorf("-pids %q: %+v", tc.pids, u)
		}
		if tc.relay && u.RelayCPU <= 0 {
			t.Errorf("-pids %q (this process): no relay CPU time in %+v", tc.pids, u)
		}
		if !tc.relay && (u.RelayCPU != 0 || u.RelayCores != 0) {
			t.Errorf("no pids, yet relay CPU time: %+v", u)
		}
	}
}
