//go:build linux

package main

// `realip-agent doctor` in the scenario: a healthy origin (every check
// ok, exit 0), forged options from the edge's untrusted address in the
// -watch window (untrusted is a problem, with their count: exit 1), the
// text of a report (80 columns), an empty trust list, no module, and a
// module built for another kernel (each the problem it is: exit 1).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/toactl"
)

// exitProblem is doctor's exit status when a check found a problem.
const exitProblem = 1

// doctorWatch is doctor's -watch window in the scenario: time enough for
// a few connections under TCG. The traffic is sent once doctor says it is
// watching, and must be over before the window is (else the check fails
// saying so, rather than judging a window that missed it).
const doctorWatch = "8s"

// doctorRun runs doctor with args; traffic, if not nil, is sent in its
// -watch window. It returns the exit status, stdout and stderr.
func (s *scenario) doctorRun(args []string, traffic func() error) (int, string, string, error) {
	cmd := s.command(append([]string{"doctor"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return 0, "", "", err
	}
	if err := cmd.Start(); err != nil {
		return 0, "", "", err
	}
	watching := make(chan struct{})
	var errb bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			errb.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "watching the counters for") {
				close(watching)
			}
		}
		io.Copy(io.Discard, errPipe)
	}()
	var terr error
	if traffic != nil {
		terr = s.doctorTraffic(watching, read, traffic)
	}
	<-read
	werr := cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		code = ee.ExitCode()
	} else if werr != nil {
		return 0, out.String(), errb.String(), werr
	}
	return code, out.String(), errb.String(), terr
}

// doctorTraffic sends traffic once doctor watches, and fails if doctor
// ended (its stderr closed) before the traffic was over.
func (s *scenario) doctorTraffic(watching, ended <-chan struct{}, traffic func() error) error {
	select {
	case <-watching:
	case <-ended:
		return errors.New("doctor ended without saying it was watching")
	}
	if err := traffic(); err != nil {
		return err
	}
	select {
	case <-ended:
		return fmt.Errorf("doctor's -watch %s window ended before the traffic was over: lengthen doctorWatch", doctorWatch)
	default:
		return nil
	}
}

// doctorJSON runs doctor -json and decodes its report.
func (s *scenario) doctorJSON(args []string, traffic func() error) (int, *agent.Report, error) {
	code, out, errs, err := s.doctorRun(append([]string{"-json"}, args...), traffic)
	if err != nil {
		return code, nil, fmt.Errorf("%w (stderr: %s)", err, errs)
	}
	var rep agent.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		return code, nil, fmt.Errorf("doctor -json: exit %d, %v: %s %s", code, err, out, errs)
	}
	return code, &rep, nil
}

// verdicts checks a report: the checks in want have those verdicts, every
// other is ok, and the exit status is the one promised for them.
func verdicts(code int, rep *agent.Report, want map[string]agent.CheckStatus) error {
	var errs []error
	problems := 0
	for _, c := range rep.Checks {
		w, ok := want[c.Name]
		if !ok {
			w = agent.CheckOK
		}
		if c.Status != w {
			errs = append(errs, fmt.Errorf("%s: %s (%s; %s), want %s", c.Name, c.Status, c.Detail, c.Advice, w))
		}
		if c.Status == agent.CheckProblem {
			problems++
		}
	}
	wantCode := 0
	if problems > 0 {
		wantCode = exitProblem
	}
	if code != wantCode || len(rep.Checks) != 12 {
		errs = append(errs, fmt.Errorf("exit %d with %d problems in %d checks, want exit %d", code, problems, len(rep.Checks), wantCode))
	}
	return errors.Join(errs...)
}

// detailOf is the named check's detail and advice.
func detailOf(rep *agent.Report, name string) string {
	if c := rep.Check(name); c != nil {
		return c.Detail + " | " + c.Advice
	}
	return "<no check " + name + ">"
}

// counterChecks are the checks that read the receiver, skipped when there
// is none.
func counterChecks() []string {
	return []string{"trust", "options", "untrusted", "malformed", "listeners", "family", "entries"}
}

// withSkips is the verdicts of a report in the guest, which has no dkms
// (skipped), with those of extra and skipped (skip).
func withSkips(extra map[string]agent.CheckStatus, skipped ...string) map[string]agent.CheckStatus {
	want := map[string]agent.CheckStatus{"dkms": agent.CheckSkip}
	for _, n := range skipped {
		want[n] = agent.CheckSkip
	}
	for k, v := range extra {
		want[k] = v
	}
	return want
}

// liveEntries is the module's count of live entries (netlink).
func liveEntries() (uint64, error) {
	c, err := toactl.Dial()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_, live, err := c.Stats()
	return live, err
}

// sendTOA opens the connections of cases from the edge, checks each is
// honoured or ignored as it says, closes them and waits until their
// entries are freed, so that the traffic rounds after it count only their
// own.
func (s *scenario) sendTOA(cases []trustCase) error {
	before, err := liveEntries()
	if err != nil {
		return err
	}
	var errs []error
	for _, tc := range cases {
		c, err := s.lab.dial(tc.src, tc.client)
		if err != nil {
			return err
		}
		if ok, what := c.check(tc.want); !ok {
			errs = append(errs, fmt.Errorf("want the option %s: %s", tc.want, what))
		}
		c.close()
	}
	var live uint64
	if !waitFor(10*time.Second, func() bool { live, err = liveEntries(); return err == nil && live == before }) {
		errs = append(errs, fmt.Errorf("%d live entries 10s after close, %d before (%v)", live, before, err))
	}
	return errors.Join(errs...)
}

// doctorWatched: doctor -watch while the edge sends TOA, first from its
// trusted address only (a healthy origin: every check ok, exit 0), then
// with forged options from its untrusted one (untrusted: a problem with
// their count, exit 1); then the text of a report without a window.
func (s *scenario) doctorWatched() {
	if s.lab == nil {
		fail("doctor-healthy", "no lab")
		return
	}
	args := []string{"-watch", doctorWatch, "-config", s.cfgA}
	code, rep, err := s.doctorJSON(args, func() error {
		return s.sendTOA([]trustCase{
			{src: edgeA, client: netip.MustParseAddrPort("192.0.2.21:2100"), want: honoured},
			{src: edgeV6, client: netip.MustParseAddrPort("192.0.2.22:2200"), want: honoured},
		})
	})
	if err == nil {
		err = verdicts(code, rep, withSkips(nil))
	}
	if err == nil && rep.Status != agent.CheckOK {
		err = fmt.Errorf("report status %s", rep.Status)
	}
	check("doctor-healthy", err, "exit 0, every check ok (dkms: not installed): %s", detailOf(rep, "options"))

	code, rep, err = s.doctorJSON(args, func() error {
		return s.sendTOA([]trustCase{
			{src: edgeA, client: netip.MustParseAddrPort("192.0.2.23:2300"), want: honoured},
			{src: edgeB, client: netip.MustParseAddrPort("192.0.2.66:6670"), want: untrusted},
			{src: edgeB, client: netip.MustParseAddrPort("192.0.2.66:6671"), want: untrusted},
		})
	})
	if err == nil {
		err = verdicts(code, rep, withSkips(map[string]agent.CheckStatus{"untrusted": agent.CheckProblem}))
	}
	if err == nil {
		err = missing(detailOf(rep, "untrusted"), "2 options from sources outside the trusted prefixes were ignored in the last "+doctorWatch)
	}
	check("doctor-forged", err, "exit 1, untrusted: %s", detailOf(rep, "untrusted"))
	s.doctorText()
}

// doctorText: the text report without a window (the forged options are
// a warning now: exit 0), every line within 80 columns.
func (s *scenario) doctorText() {
	code, out, errs, err := s.doctorRun([]string{"-config", s.cfgA}, nil)
	if err == nil {
		err = missing(out, "ok      receiver   toa.ko ", "warn    untrusted  ", "\n0 problems, 1 warning, 10 ok, 1 skipped\n")
	}
	for i, line := range strings.Split(out, "\n") {
		if n := utf8.RuneCountInString(line); n > agent.TextWidth {
			err = errors.Join(err, fmt.Errorf("line %d is %d columns: %q", i+1, n, line))
		}
	}
	if err == nil && code != 0 {
		err = fmt.Errorf("exit %d: %s", code, errs)
	}
	check("doctor-text", err, "exit 0, no line over %d columns:\n%s", agent.TextWidth, indent(out))
}

// doctorEmptyTrust: the module adopted by `load` with an empty trust list:
// trust is a problem (exit 1), untrusted does not apply.
func (s *scenario) doctorEmptyTrust() {
	cfgE := s.cfgA + ".empty.yaml"
	writeConfig(cfgE, *modulePath, nil, "200, 253, 254", "")
	if code, out, errs := s.agentCmd("load", "-config", cfgE); code != 0 {
		fail("doctor-empty-trust", "load: exit %d %s %s", code, out, errs)
		return
	}
	code, rep, err := s.doctorJSON([]string{"-config", cfgE}, nil)
	if err == nil {
		err = verdicts(code, rep, withSkips(map[string]agent.CheckStatus{"trust": agent.CheckProblem, "untrusted": agent.CheckSkip}))
	}
	if err == nil {
		err = missing(detailOf(rep, "trust"), "no trusted prefixes", "anyone who can reach this host can forge client addresses")
	}
	check("doctor-empty-trust", err, "exit 1, trust: %s", detailOf(rep, "trust"))
}

// doctorNoModule: toa.ko unloaded: receiver is a problem (exit 1), the
// counter checks do not apply, the module file is fine.
func (s *scenario) doctorNoModule(cfg string) {
	code, rep, err := s.doctorJSON([]string{"-config", cfg}, nil)
	if err == nil {
		err = verdicts(code, rep, withSkips(map[string]agent.CheckStatus{"receiver": agent.CheckProblem}, counterChecks()...))
	}
	if err == nil {
		err = missing(detailOf(rep, "receiver"), "no TOA receiver is in place", "It would run kmod")
	}
	check("doctor-no-module", err, "exit 1, receiver: %s", detailOf(rep, "receiver"))
}

// doctorOtherKernel: module_path names a module built for another kernel
// and none is loaded: module and receiver are problems (exit 1), module's
// naming both kernels and the rebuild.
func (s *scenario) doctorOtherKernel(cfg, badKo, fake string) {
	code, rep, err := s.doctorJSON([]string{"-config", cfg}, nil)
	if err == nil {
		err = verdicts(code, rep, withSkips(map[string]agent.CheckStatus{"receiver": agent.CheckProblem, "module": agent.CheckProblem}, counterChecks()...))
	}
	if err == nil {
		err = missing(detailOf(rep, "module"), badKo+" was built for kernel "+fake+", this kernel is "+s.release,
			"dkms install toa/"+s.mod.Info.Version+" -k "+s.release)
	}
	check("doctor-other-kernel", err, "exit 1, module: %s", detailOf(rep, "module"))
}
