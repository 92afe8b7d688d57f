package loadkit

import (
	"flag"
	"strings"
	"time"
)

// LoadFlags are the flags every load takes: where to send the load, for how
// long, whose CPU time to measure, and the labels of the result line.
type LoadFlags struct {
	Addr  string        // -addr: the relay's address
	Dur   time.Duration // -dur: how long the load runs
	PIDs  string        // -pids: comma-separated PIDs of the relay
	Label string        // -label: the relay's name in the result
	Rep   string        // -rep: the repetition number in the result
}

// Register defines the flags on fs. addrUsage is the help of -addr; relay
// names the thing under load in the help of -pids ("the relay", "the
// unwrapper").
func (f *LoadFlags) Register(fs *flag.FlagSet, addrUsage, relay string) {
	fs.StringVar(&f.Addr, "addr", "", addrUsage)
	fs.DurationVar(&f.Dur, "dur", 3*time.Second, "how long to run")
	fs.StringVar(&f.PIDs, "pids", "", "comma-separated PIDs of "+relay+", to measure its CPU time")
	fs.StringVar(&f.Label, "label", "relay", "relay name printed in the result")
	fs.StringVar(&f.Rep, "rep", "0", "repetition number printed in the result")
}

// Result is the result line of a measurement of this load: relay and rep
// from the flags, the rest from the arguments (see Result's fields).
func (f *LoadFlags) Result(metric string, value float64, unit string, cpu *CPUUsage, ops float64, op string, extra ...string) Result {
	return Result{Relay: f.Label, Rep: f.Rep, Metric: metric, Value: value, Unit: unit,
		CPU: cpu, Ops: ops, Op: op, Extra: extra}
}

// SplitList splits a comma-separated list, dropping the blanks around
// each element and the empty elements.
func SplitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
