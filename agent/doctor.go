//go:build linux

package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/prometheus/procfs"
)

// CheckStatus is the verdict of one doctor check.
type CheckStatus string

// The verdicts, from best to worst. A skipped check could not be made or
// does not apply here (no receiver to read, dkms not installed); it is
// not a problem by itself, the check that stands in its way says so.
const (
	CheckSkip    CheckStatus = "skip"
	CheckOK      CheckStatus = "ok"
	CheckWarn    CheckStatus = "warn"
	CheckProblem CheckStatus = "problem"
)

func (s CheckStatus) rank() int {
	switch s {
	case CheckOK:
		return 1
	case CheckWarn:
		return 2
	case CheckProblem:
		return 3
	}
	return 0
}

// Check is one finding of `realip-agent doctor`: what was looked at, its
// verdict, what was seen, and what to do about it (for warn and problem).
type Check struct {
	Name   string      `json:"name"`
	Status CheckStatus `json:"status"`
	Detail string      `json:"detail"`
	Advice string      `json:"advice,omitempty"`
}

// CounterReading is one receiver counter as doctor read it: its value at
// the end, and with -watch how much it moved in the window.
type CounterReading struct {
	Name  string  `json:"name"`
	Value uint64  `json:"value"`
	Delta *uint64 `json:"delta,omitempty"`
}

// Report is what `realip-agent doctor` found. Its JSON field names are
// stable: scripts may rely on them.
type Report struct {
	Kernel   string       `json:"kernel"`
	Receiver ReceiverKind `json:"receiver"`
	Config   string       `json:"config"`
	// WindowSeconds is the -watch window; 0: one sample, and the counters
	// count since the receiver was loaded or attached.
	WindowSeconds float64 `json:"window_seconds"`
	// Status is the worst verdict of the checks (skip counts as ok).
	Status   CheckStatus      `json:"status"`
	Checks   []Check          `json:"checks"`
	Counters []CounterReading `json:"counters"`
}

// Problems is the number of checks whose verdict is problem: doctor
// exits 1 when there is one.
func (r *Report) Problems() int { return r.count(CheckProblem) }

func (r *Report) count(s CheckStatus) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// Check returns the check called name, nil if there is none.
func (r *Report) Check(name string) *Check {
	for i := range r.Checks {
		if r.Checks[i].Name == name {
			return &r.Checks[i]
		}
	}
	return nil
}

// DoctorOptions configure Doctor.
type DoctorOptions struct {
	// ConfigPath is the agent's configuration file; empty:
	// DefaultConfigPath.
	ConfigPath string
	// ConfigGiven says the operator named the file: a file that cannot be
	// read is then a problem; a missing default file is only a warning.
	ConfigGiven bool
	// Watch is the window over which the counters are compared: doctor
	// reads them, waits Watch, and reads them again. 0: one reading, and
	// the counters are judged as totals since the receiver started.
	Watch time.Duration
	// Wait waits out the window; nil: time.Sleep.
	Wait func(time.Duration)
	// DKMS is the dkms command with any leading options; nil: "dkms"
	// from PATH.
	DKMS []string
}

// doctor is one run of Doctor: what it read, for the checks.
type doctor struct {
	a      *Agent
	opts   DoctorOptions
	path   string
	cfg    Config // the file's, or the defaults when it cannot be read
	cfgErr error
	st     *Status // the last reading
	start  *Status // the first reading, with a window; else nil
	// sockets is the host's count of TCP sockets (/proc/net/sockstat),
	// read between st and liveAfter; -1 when it could not be read.
	sockets   int64
	liveAfter uint64 // entries in use read after sockets
}

// Doctor checks the TOA chain on this host: the receiver in place, the
// module file and DKMS, the configuration file, the trust list, whether
// options arrive and are honoured or dropped, the entries, the listeners,
// and returns one Check per question (see doctorChecks). An error means
// the checks could not be made at all.
func (a *Agent) Doctor(opts DoctorOptions) (*Report, error) {
	d := &doctor{a: a, opts: opts, path: opts.ConfigPath, sockets: -1}
	if d.path == "" {
		d.path = DefaultConfigPath
	}
	d.cfg, d.cfgErr = LoadConfig(d.path)
	if d.cfgErr != nil {
		d.cfg = DefaultConfig()
	}
	if err := d.read(); err != nil {
		return nil, err
	}
	rep := &Report{Kernel: a.release, Receiver: d.st.Receiver, Config: d.path,
		WindowSeconds: opts.Watch.Seconds(), Status: CheckOK, Checks: []Check{}}
	for _, c := range doctorChecks() {
		chk := c.run(d)
		chk.Name = c.name
		rep.Checks = append(rep.Checks, chk)
		if chk.Status.rank() > rep.Status.rank() {
			rep.Status = chk.Status
		}
	}
	rep.Counters = d.readings()
	return rep, nil
}

// read takes the readings: the receiver's state (twice, Watch apart, with
// a window), then the host's TCP sockets and the entries in use again.
func (d *doctor) read() error {
	statusPath := d.path
	if d.cfgErr != nil {
		statusPath = ""
	}
	st, err := d.a.Status(statusPath)
	if err != nil {
		return fmt.Errorf("reading the receiver's state: %w", err)
	}
	d.st = st
	if d.opts.Watch > 0 {
		wait := d.opts.Wait
		if wait == nil {
			wait = time.Sleep
		}
		wait(d.opts.Watch)
		d.start = st
		if d.st, err = d.a.Status(statusPath); err != nil {
			return fmt.Errorf("reading the receiver's state after %v: %w", d.opts.Watch, err)
		}
	}
	if n, err := tcpSockets(d.cfg.Procfs); err == nil {
		d.sockets = n
	}
	if after, err := d.a.Status(""); err == nil {
		d.liveAfter = entriesInUse(after)
	}
	return nil
}

// tcpSockets is the number of TCP sockets allocated on the host, the
// "alloc" of /proc/net/sockstat's TCP line (all namespaces, IPv4 and
// IPv6 alike).
func tcpSockets(procRoot string) (int64, error) {
	p, err := procfs.NewFS(procRoot)
	if err != nil {
		return 0, err
	}
	ss, err := p.NetSockstat()
	if err != nil {
		return 0, err
	}
	for _, pr := range ss.Protocols {
		if pr.Protocol == "TCP" && pr.Alloc != nil {
			return int64(*pr.Alloc), nil
		}
	}
	return 0, errors.New("no TCP alloc in sockstat")
}

// configMissing reports whether the file could not be read because it
// does not exist.
func (d *doctor) configMissing() bool {
	_, err := os.Stat(d.path)
	return errors.Is(err, fs.ErrNotExist)
}

// Names of the receiver counters doctor judges (toa.ko's rows; the eBPF
// receiver has the same).
const (
	cTOA       = "syn_recv_sock_toa"
	cNoTOA     = "syn_recv_sock_no_toa"
	cUntrusted = "syn_recv_sock_untrusted"
	cBad       = "syn_recv_sock_bad_option"
	cAllocFail = "alloc_failed"
	cAlloc     = "ip6_address_alloc"
	cFree      = "ip6_address_free"
	cOK        = "getname_toa_ok"
	cEmpty     = "getname_toa_empty"
	cMismatch  = "getname_toa_mismatch"
	cTakenOver = "listeners_taken_over"
)

func counterValue(st *Status, name string) (uint64, bool) {
	if st == nil {
		return 0, false
	}
	for _, c := range st.Counters {
		if c.Name == name {
			return c.Value, true
		}
	}
	return 0, false
}

// total is a counter's value at the last reading.
func (d *doctor) total(name string) uint64 {
	v, _ := counterValue(d.st, name)
	return v
}

// count is what doctor judges of a counter: how much it moved in the
// window, or with no window its total. A counter that went down was
// reset (the receiver was loaded again meanwhile): its new value counts.
func (d *doctor) count(name string) uint64 {
	end, _ := counterValue(d.st, name)
	if d.start == nil {
		return end
	}
	begin, ok := counterValue(d.start, name)
	if !ok || begin > end {
		return end
	}
	return end - begin
}

// counted reports whether the receiver's counters were read (at both
// ends of the window).
func (d *doctor) counted() bool {
	if len(d.st.Counters) == 0 {
		return false
	}
	return d.start == nil || len(d.start.Counters) > 0
}

// span says what the counts cover, for the checks' texts.
func (d *doctor) span() string {
	if d.start == nil {
		return "since the receiver started"
	}
	return "in the last " + d.opts.Watch.String()
}

// readings are the counters of the last reading, with their moves.
func (d *doctor) readings() []CounterReading {
	out := []CounterReading{}
	for _, c := range d.st.Counters {
		r := CounterReading{Name: c.Name, Value: c.Value}
		if d.start != nil && len(d.start.Counters) > 0 {
			delta := d.count(c.Name)
			r.Delta = &delta
		}
		out = append(out, r)
	}
	return out
}

// entriesInUse is ip6_address_alloc minus ip6_address_free (0 when free
// is ahead).
func entriesInUse(st *Status) uint64 {
	alloc, _ := counterValue(st, cAlloc)
	free, _ := counterValue(st, cFree)
	if free > alloc {
		return 0
	}
	return alloc - free
}
