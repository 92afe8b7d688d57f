package loadkit

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CPUUsage is what a run cost in CPU time (see CPUMeter).
type CPUUsage struct {
	SelfCores  float64       // this process: CPU seconds per wall second
	Relay      bool          // the relay's processes were measured
	RelayCores float64       // the relay's CPU seconds per wall second
	RelayCPU   time.Duration // the relay's CPU time over the run
}

// Result is one measurement of a load, printed as a result line.
type Result struct {
	Relay, Rep, Metric string
	Value              float64
	Unit               string
	// CPU adds gen_cores, and with the relay measured relay_cores; nil
	// adds no CPU field.
	CPU *CPUUsage
	// Ops is the work done in units named Op (MB, conn, req): with the
	// relay measured and Ops > 0 the line has the relay's CPU time per
	// unit, relay_us_per_op, and op.
	Ops   float64
	Op    string
	Extra []string // further key=value fields, as they are
}

// String is the result line, without a newline.
func (r Result) String() string {
	fields := []string{"result",
		"relay=" + r.Relay, "rep=" + r.Rep, "metric=" + r.Metric,
		"value=" + strconv.FormatFloat(r.Value, 'f', 3, 64), "unit=" + r.Unit}
	if c := r.CPU; c != nil {
		fields = append(fields, fmt.Sprintf("gen_cores=%.2f", c.SelfCores))
		if c.Relay {
			fields = append(fields, fmt.Sprintf("relay_cores=%.2f", c.RelayCores))
			if r.Ops > 0 {
				fields = append(fields, fmt.Sprintf("relay_us_per_op=%.3f", float64(c.RelayCPU.Microseconds())/r.Ops), "op="+r.Op)
			}
		}
	}
	fields = append(fields, r.Extra...)
	return strings.Join(fields, " ")
}

// Sample is a result line as a report reads it: one repetition of one
// metric of one relay.
type Sample struct {
	Rep        string
	Value      float64
	USPerOp    float64 // the relay's CPU µs per Op
	Op         string
	RelayCores float64
	GenCores   float64
	HasCPU     bool     // the line has relay_us_per_op
	Notes      []string // errors=N, lost=N, bad=N when N is not 0, in that order
}

// noteKeys are the fields a sample notes when they are not zero.
var noteKeys = []string{"errors", "lost", "bad"}

// ParseResult reads a result line; ok is false for any other line and for
// a result without a numeric value. Fields it does not know are ignored.
func ParseResult(line string) (relay, metric string, s Sample, ok bool) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != "result" {
		return "", "", s, false
	}
	kv := map[string]string{}
	for _, x := range f[1:] {
		if k, v, ok := strings.Cut(x, "="); ok {
			kv[k] = v
		}
	}
	v, err := strconv.ParseFloat(kv["value"], 64)
	if err != nil {
		return "", "", s, false
	}
	s = Sample{Rep: kv["rep"], Value: v, Op: kv["op"]}
	if x, err := strconv.ParseFloat(kv["relay_us_per_op"], 64); err == nil {
		s.USPerOp, s.HasCPU = x, true
	}
	s.RelayCores, _ = strconv.ParseFloat(kv["relay_cores"], 64)
	s.GenCores, _ = strconv.ParseFloat(kv["gen_cores"], 64)
	for _, k := range noteKeys {
		if kv[k] != "" && kv[k] != "0" {
			s.Notes = append(s.Notes, k+"="+kv[k])
		}
	}
	return kv["relay"], kv["metric"], s, true
}

// Results are the result lines of a benchmark, by metric and relay.
type Results struct {
	Relays []string                       // every relay, in the order it first appears
	Data   map[string]map[string][]Sample // metric -> relay -> samples in input order
}

// ReadResults collects the result lines of in, skipping any other line.
func ReadResults(in io.Reader) (*Results, error) {
	r := &Results{Data: map[string]map[string][]Sample{}}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		relay, metric, s, ok := ParseResult(sc.Text())
		if !ok {
			continue
		}
		if r.Data[metric] == nil {
			r.Data[metric] = map[string][]Sample{}
		}
		if !slices.Contains(r.Relays, relay) {
			r.Relays = append(r.Relays, relay)
		}
		r.Data[metric][relay] = append(r.Data[metric][relay], s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading results: %w", err)
	}
	return r, nil
}

// ReadResultsFile is ReadResults of the file at path, or of stdin when
// path is "".
func ReadResultsFile(path string) (*Results, error) {
	if path == "" {
		return ReadResults(os.Stdin)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadResults(f)
}
