//go:build linux

package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// doctorCheck is one question doctor asks: its name (the report's and
// the JSON's) and the function that answers it from what was read.
type doctorCheck struct {
	name string
	run  func(d *doctor) Check
}

// doctorChecks are doctor's checks, in the report's order.
func doctorChecks() []doctorCheck {
	return []doctorCheck{
		{"receiver", (*doctor).checkReceiver},
		{"module", (*doctor).checkModule},
		{"dkms", (*doctor).checkDKMS},
		{"config", (*doctor).checkConfig},
		{"trust", (*doctor).checkTrust},
		{"options", (*doctor).checkOptions},
		{"untrusted", (*doctor).checkUntrusted},
		{"malformed", (*doctor).checkMalformed},
		{"listeners", (*doctor).checkListeners},
		{"family", (*doctor).checkFamily},
		{"entries", (*doctor).checkEntries},
		{"unwrap", (*doctor).checkUnwrap},
	}
}

func ok(format string, args ...any) Check {
	return Check{Status: CheckOK, Detail: fmt.Sprintf(format, args...)}
}

func skip(format string, args ...any) Check {
	return Check{Status: CheckSkip, Detail: fmt.Sprintf(format, args...)}
}

func finding(s CheckStatus, detail, advice string) Check {
	return Check{Status: s, Detail: detail, Advice: advice}
}

// restartAdvice is how an operator puts the receiver back.
const restartAdvice = "start the agent: `systemctl restart realip-agent` " +
	"(`journalctl -u realip-agent` says why it stopped), or `realip-agent load`"

// checkReceiver: which receiver is in place, and whether it works.
func (d *doctor) checkReceiver() Check {
	st := d.st
	if st.Problem != "" {
		return finding(CheckProblem, "toa.ko is loaded and the eBPF receiver is pinned in "+d.a.ebpf.pinDir()+
			", both at once", "run `realip-agent unload` (it removes both), then "+restartAdvice)
	}
	switch st.Receiver {
	case ReceiverKmod:
		return d.kmodReceiver()
	case ReceiverEBPF:
		return d.ebpfReceiver()
	}
	detail := "no TOA receiver is in place (kernel " + st.Kernel + "): toa.ko is not loaded and no eBPF receiver is pinned in " +
		d.a.ebpf.pinDir() + "; servers see the edge's address"
	advice := restartAdvice
	if d.cfgErr == nil {
		if c, err := d.a.choose(d.cfg); err != nil {
			advice += ". It would fail: " + err.Error()
		} else {
			advice += fmt.Sprintf(". It would run %s (%s)", c.recv.kind(), c.why)
		}
	}
	return finding(CheckProblem, detail, advice)
}

func (d *doctor) kmodReceiver() Check {
	m := d.st.Module
	detail := fmt.Sprintf("toa.ko %s (srcversion %s), %s, kernel %s", orDash(m.Version), orDash(m.SrcVersion),
		orDash(m.InitState), d.st.Kernel)
	switch {
	case m.InitState != "live":
		return finding(CheckProblem, detail+": the module is not live",
			"it is being loaded or unloaded; run doctor again in a moment")
	case !d.st.Control.Available:
		return finding(CheckProblem, detail+"; its netlink control does not answer: "+d.st.Control.Error,
			"if it is another vendor's toa, `realip-agent unload` it and "+restartAdvice)
	case d.st.Control.Error != "":
		return finding(CheckWarn, detail+"; partly read: "+d.st.Control.Error, "run doctor as root")
	}
	return ok("%s; netlink control answers", detail)
}

func (d *doctor) ebpfReceiver() Check {
	e := d.st.EBPF
	where := "cgroup " + e.Cgroup
	if e.Cgroup == "" {
		where = fmt.Sprintf("cgroup id %d", e.CgroupID)
	}
	detail := fmt.Sprintf("eBPF receiver, kernel %s, pinned in %s", d.st.Kernel, e.PinDir)
	switch {
	case len(e.Links) == 0:
		return finding(CheckProblem, detail+", but its programs are detached (no link is pinned)",
			"`systemctl restart realip-agent` or `realip-agent load` attaches them again")
	case !d.st.Control.Available:
		return finding(CheckProblem, detail+"; its maps cannot be read: "+d.st.Control.Error, "run doctor as root")
	case d.st.Control.Error != "":
		return finding(CheckWarn, detail+"; partly read: "+d.st.Control.Error, "run doctor as root")
	}
	return ok("%s, attached to %s (%d links)", detail, where, len(e.Links))
}

// checkModule: the toa.ko the agent would load for this kernel, and
// whether it was built for it.
func (d *doctor) checkModule() Check {
	if d.cfg.ModulePath == "" {
		if _, err := FindModule(d.a.modRoot, d.a.release); err != nil {
			return d.moduleNotFound()
		}
	}
	m, err := d.a.moduleToLoad(d.cfg)
	var ve *VermagicError
	switch {
	case err == nil:
		return d.moduleFound(m)
	case errors.As(err, &ve):
		detail := fmt.Sprintf("%s was built for kernel %s, this kernel is %s: the kernel would refuse it",
			ve.Path, ve.ModuleRelease, ve.KernelRelease)
		advice := fmt.Sprintf("rebuild it for this kernel: `dkms install toa/%s -k %s` (toa-dkms), or "+
			"`make -C kmod KDIR=/lib/modules/%s/build` and point module_path at kmod/toa.ko",
			orDefault(ve.ModuleVersion, "VERSION"), ve.KernelRelease, ve.KernelRelease)
		return finding(d.moduleSeverity(), detail, advice)
	}
	return finding(d.moduleSeverity(), err.Error(), "")
}

// moduleNotFound judges a kernel without a toa.ko of its own: no matter
// while the eBPF receiver runs or could, a problem when toa.ko is what
// the host needs.
func (d *doctor) moduleNotFound() Check {
	rel := d.a.release
	detail := fmt.Sprintf("no toa.ko for kernel %s in %s (updates/dkms, extra, updates, kernel)",
		rel, filepath.Join(d.a.modRoot, rel))
	advice := fmt.Sprintf("install toa-dkms (or `dkms install toa/VERSION -k %s`), or build it "+
		"(`make -C kmod KDIR=/lib/modules/%s/build`) and set module_path", rel, rel)
	switch {
	case d.st.Receiver == ReceiverEBPF:
		return skip("%s; not needed: the eBPF receiver runs", detail)
	case d.st.Receiver == ReceiverKmod:
		return finding(CheckWarn, detail+": the loaded module does not come back after a reboot", advice)
	case d.cfg.Receiver == ReceiverEBPF:
		return skip("%s; not needed: the configuration names the eBPF receiver", detail)
	case d.cfg.Receiver == ReceiverAuto && d.a.ebpf.available(d.cfg) == nil:
		return skip("%s; not needed: the eBPF receiver can run here", detail)
	}
	return finding(CheckProblem, detail, advice)
}

// moduleSeverity is how bad a module file the agent refuses is: a
// warning while the eBPF receiver serves, else a problem (no receiver,
// or toa.ko loaded now but not loadable again).
func (d *doctor) moduleSeverity() CheckStatus {
	if d.st.Receiver == ReceiverEBPF {
		return CheckWarn
	}
	return CheckProblem
}

func (d *doctor) moduleFound(m *ModuleFile) Check {
	detail := fmt.Sprintf("%s: toa %s, built for this kernel (%s)", m.Path, orDash(m.Info.Version), m.Info.Release())
	loaded := d.st.Module
	switch {
	case d.st.Receiver == ReceiverEBPF:
		return ok("%s; not in use: the eBPF receiver runs", detail)
	case loaded.Loaded && loaded.SrcVersion != "" && m.Info.SrcVersion != "" && loaded.SrcVersion != m.Info.SrcVersion:
		return finding(CheckWarn, fmt.Sprintf("%s; the loaded toa.ko is another build (srcversion %s, the file's %s)",
			detail, loaded.SrcVersion, m.Info.SrcVersion),
			"the file is loaded next time; to switch now: `realip-agent unload`, then `systemctl restart realip-agent`")
	}
	return ok("%s", detail)
}

// checkConfig: the configuration file, and whether the receiver holds
// what it says.
func (d *doctor) checkConfig() Check {
	if d.cfgErr != nil {
		if d.configMissing() && !d.opts.ConfigGiven {
			return finding(CheckWarn, "no configuration file at "+d.path+"; doctor judged with the defaults",
				"the realip-agent service reads it; name another with -config")
		}
		return finding(CheckProblem, d.cfgErr.Error(), "correct the file; `realip-agent check -config "+d.path+"` names the line")
	}
	f := d.st.ConfigFile
	what := fmt.Sprintf("receiver %s, trusted %q, kinds %q", d.cfg.Receiver, d.cfg.TrustedString(), d.cfg.KindsString())
	switch {
	case f == nil || d.st.Config == nil:
		return ok("%s is valid (%s); no receiver configuration to compare it with", d.path, what)
	case !f.InSync:
		return finding(CheckProblem, d.path+" is not in force: "+f.Differs,
			"`systemctl reload realip-agent` applies it (a change of receiver or cgroup needs a restart)")
	}
	return ok("%s is in force (%s)", d.path, what)
}

// maxListed bounds the prefixes a check's text lists.
const maxListed = 6

// checkTrust: the trusted prefixes the receiver holds.
func (d *doctor) checkTrust() Check {
	c := d.st.Config
	if c == nil {
		return skip("the receiver's trusted prefixes cannot be read (see receiver)")
	}
	kinds := make([]string, len(c.Kinds))
	for i, k := range c.Kinds {
		kinds[i] = strconv.Itoa(k)
	}
	if len(c.Trusted) == 0 {
		return finding(CheckProblem, "no trusted prefixes: TOA options from every source are honoured, "+
			"so anyone who can reach this host can forge client addresses",
			"list your L4 edges' prefixes under trusted: in "+d.path+", then `systemctl reload realip-agent`")
	}
	list := c.Trusted
	more := ""
	if len(list) > maxListed {
		list, more = list[:maxListed], fmt.Sprintf(" and %d more", len(c.Trusted)-maxListed)
	}
	return ok("%d trusted: %s%s; kinds %s", len(c.Trusted), strings.Join(list, ", "), more, strings.Join(kinds, ", "))
}

// checkOptions: whether connections arrive with options that are
// honoured (syn_recv_sock_toa against the connections without one).
func (d *doctor) checkOptions() Check {
	if !d.counted() {
		return d.noCounters()
	}
	toa, none, untrusted, bad := d.count(cTOA), d.count(cNoTOA), d.count(cUntrusted), d.count(cBad)
	all := toa + none + untrusted + bad + d.count(cAllocFail)
	switch {
	case all == 0:
		advice := "send traffic through the edge and run `realip-agent doctor -watch 30s`"
		if d.st.EBPF != nil && d.st.EBPF.Cgroup != "" {
			advice += "; the eBPF receiver sees the servers of cgroup " + d.st.EBPF.Cgroup + " only"
		}
		return finding(CheckWarn, "no connection reached the receiver "+d.span(), advice)
	case toa > 0:
		return ok("%d of %d connections %s carried a TOA option that was honoured (%d without one)", toa, all, d.span(), none)
	}
	detail := fmt.Sprintf("none of %d connections %s carried a TOA option that was honoured", all, d.span())
	if untrusted+bad > 0 {
		return finding(CheckProblem, detail, "options were dropped: see untrusted and malformed")
	}
	kinds := "the configured kinds"
	if d.st.Config != nil {
		kinds = fmt.Sprint(d.st.Config.Kinds)
	}
	return finding(CheckProblem, detail+": none carried an option of a configured kind",
		"check that the edge sends TOA to this host (its IP mode is toa) with a kind in "+kinds)
}

// checkUntrusted: options ignored because their source is not trusted.
func (d *doctor) checkUntrusted() Check {
	if c := d.st.Config; c != nil && len(c.Trusted) == 0 {
		return skip("every source is trusted, so no option counts as untrusted (see trust)")
	}
	return d.dropped(cUntrusted, "no option from an untrusted source", "from sources outside the trusted prefixes",
		"if they come from your edge, add its prefix to trusted; otherwise someone sends forged options")
}

// checkMalformed: options of a configured kind that are not valid TOA.
func (d *doctor) checkMalformed() Check {
	return d.dropped(cBad, "no malformed option", "malformed (bad length, cut, or an impossible client address)",
		"check the edge's TOA kind: another option of that kind, or a broken sender, writes them")
}

// dropped judges a counter of ignored options: any in the window is a
// problem; with no window a total is a warning (it may be old). none
// names the options when there are none ("no malformed option"), what
// when there are ("malformed").
func (d *doctor) dropped(counter, none, what, advice string) Check {
	if !d.counted() {
		return d.noCounters()
	}
	n := d.count(counter)
	if n == 0 {
		return ok("%s was ignored %s", none, d.span())
	}
	detail := fmt.Sprintf("%s ignored %s (%s); those connections show the edge's address",
		plural(n, "option "+what+" was", "options "+what+" were"), d.span(), counter)
	if d.start == nil {
		return finding(CheckWarn, detail, advice+"; `realip-agent doctor -watch 30s` tells whether it still rises")
	}
	return finding(CheckProblem, detail, advice)
}

// plural is "N one" or "N many".
func plural(n uint64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.FormatUint(n, 10) + " " + many
}

// checkListeners: whether the servers' accept() and getpeername() reach
// the receiver for the connections it honoured.
func (d *doctor) checkListeners() Check {
	if !d.counted() {
		return d.noCounters()
	}
	toa, asked := d.count(cTOA), d.count(cOK)+d.count(cEmpty)+d.count(cMismatch)
	lost := toa > 0 && asked == 0
	if d.st.Receiver == ReceiverEBPF {
		scope := "every process"
		if e := d.st.EBPF; e != nil && e.Cgroup != "" {
			scope = "the processes of cgroup " + e.Cgroup
		}
		if lost {
			return finding(CheckWarn, fmt.Sprintf("%d connections %s carried an honoured option, but no accept() or getpeername() asked for the client", toa, d.span()),
				"servers that want the client must take it from accept() or getpeername()")
		}
		return ok("nothing to take over: the eBPF hooks serve %s; accept()/getpeername() answered %d times %s", scope, d.count(cOK), d.span())
	}
	taken := d.total(cTakenOver)
	if lost {
		return finding(CheckProblem, fmt.Sprintf("%d connections %s carried an honoured option, but no accept() or getpeername() reached toa.ko: "+
			"their listener was not taken over (%d listeners taken over since load)", toa, d.span(), taken),
			"restart the server: a listener made after toa.ko is loaded is taken over at listen() "+
				"(an old one at its first TOA handshake, unless an accept() was already waiting on it)")
	}
	return ok("%d listeners taken over since load; accept()/getpeername() answered %d times %s", taken, d.count(cOK), d.span())
}

// checkFamily: IPv6 clients of IPv4 sockets, which keep the edge's
// address.
func (d *doctor) checkFamily() Check {
	if !d.counted() {
		return d.noCounters()
	}
	n := d.count(cMismatch)
	if n == 0 {
		return ok("no IPv6 client was lost on an IPv4 socket %s", d.span())
	}
	advice := "listen on [::] (an IPv6 socket takes both families), or pass accept()/getpeername() room for a sockaddr_in6"
	if d.st.Receiver == ReceiverEBPF {
		advice = "listen on [::], or use toa.ko (receiver: kmod): the eBPF hook cannot change an address's family"
	}
	detail := fmt.Sprintf("%s %s for an IPv6 client on an IPv4 socket got the edge's address (%s)",
		plural(n, "accept()/getpeername() call", "accept()/getpeername() calls"), d.span(), cMismatch)
	if d.start == nil {
		return finding(CheckWarn, detail, advice)
	}
	return finding(CheckProblem, detail, advice)
}

// checkEntries: the balance of entries allocated and freed, against the
// TCP sockets that can hold them.
func (d *doctor) checkEntries() Check {
	if !d.counted() {
		return d.noCounters()
	}
	alloc, free := d.total(cAlloc), d.total(cFree)
	if free > alloc {
		return finding(CheckProblem, fmt.Sprintf("%s (%d) is ahead of %s (%d): the receiver's counters disagree", cFree, free, cAlloc, alloc),
			"report it with the output of `realip-agent status -json`")
	}
	live := alloc - free
	if d.sockets >= 0 && min(live, d.liveAfter) > uint64(d.sockets) {
		return finding(CheckProblem, fmt.Sprintf("%d entries in use, more than the %d TCP sockets on the host (/proc/net/sockstat): entries leak",
			min(live, d.liveAfter), d.sockets),
			"`realip-agent unload` and a restart of the agent free them; report it with `realip-agent status -json`")
	}
	detail := fmt.Sprintf("%d in use (%s %d, %s %d)", live, cAlloc, alloc, cFree, free)
	if d.sockets >= 0 {
		detail += fmt.Sprintf(", %d TCP sockets on the host", d.sockets)
	}
	if n := d.count(cAllocFail); n > 0 {
		s := CheckWarn
		if d.start != nil {
			s = CheckProblem
		}
		return finding(s, fmt.Sprintf("%s; %d connections %s got no entry (%s: out of memory) and show the edge's address",
			detail, n, d.span(), cAllocFail), "the host is short of memory")
	}
	return ok("%s", detail)
}

// noCounters is the verdict of a check that needs the receiver's
// counters when they could not be read.
func (d *doctor) noCounters() Check {
	if d.st.Receiver == ReceiverNone {
		return skip("no receiver, no counters (see receiver)")
	}
	return skip("the receiver's counters could not be read (see receiver)")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
