//go:build linux

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/realip/realip/toactl"
)

// ReceiverNone is Status.Receiver when no TOA receiver is in place.
const ReceiverNone ReceiverKind = "none"

// Status is what `realip-agent status` reports.
type Status struct {
	Kernel string `json:"kernel"`
	// Receiver is the TOA receiver in place: kmod, ebpf, or none.
	Receiver ReceiverKind `json:"receiver"`
	Module   ModuleState  `json:"module"`
	// EBPF is the eBPF receiver's attachment, when it is in place.
	EBPF *EBPFState `json:"ebpf,omitempty"`
	// Control says whether the receiver's configuration could be read:
	// the module's netlink interface, the eBPF receiver's pinned maps.
	Control ControlState `json:"control"`
	// Config is the configuration the receiver holds (nil without control).
	Config *ModuleConfig `json:"config,omitempty"`
	// Counters are the receiver's counters summed over CPUs, in toa.ko's
	// order (the eBPF receiver has the same).
	Counters []Counter `json:"counters,omitempty"`
	// LiveEntries is the number of connections the receiver holds an
	// entry for; Entries lists them, and is null when the receiver cannot
	// list them (the eBPF receiver), EntriesNote saying why.
	LiveEntries uint64  `json:"live_entries"`
	Entries     []Entry `json:"entries"`
	EntriesNote string  `json:"entries_note,omitempty"`
	// Problem is a state the agent refuses to run in: both receivers in
	// place at once.
	Problem string `json:"problem,omitempty"`
	// ConfigFile, when a file was given, says whether the receiver holds
	// what it says.
	ConfigFile *FileState `json:"config_file,omitempty"`
}

// InPlace reports whether a TOA receiver is in place (else
// `realip-agent status` exits 3).
func (st *Status) InPlace() bool { return st.Receiver != ReceiverNone }

// EBPFState is where the eBPF receiver is attached and pinned.
type EBPFState struct {
	PinDir string `json:"pin_dir"`
	// Cgroup is the cgroup v2 folder the programs are attached to; empty
	// when it cannot be found from here (CgroupID is still given).
	Cgroup   string `json:"cgroup,omitempty"`
	CgroupID uint64 `json:"cgroup_id"`
	// Links are the pinned links, one per attached program.
	Links []string `json:"links"`
}

// ControlState says whether the receiver's configuration could be read.
type ControlState struct {
	Available bool   `json:"available"`
	Error     string `json:"error,omitempty"`
}

// ModuleConfig is the configuration held by the receiver.
type ModuleConfig struct {
	Version string   `json:"version"` // the module's; empty for the eBPF receiver
	Trusted []string `json:"trusted"`
	Kinds   []int    `json:"kinds"`
}

func newModuleConfig(version string, trusted []netip.Prefix, kinds []uint8) *ModuleConfig {
	mc := &ModuleConfig{Version: version, Trusted: []string{}, Kinds: []int{}}
	for _, p := range trusted {
		mc.Trusted = append(mc.Trusted, p.String())
	}
	for _, k := range kinds {
		mc.Kinds = append(mc.Kinds, int(k))
	}
	return mc
}

// Counter is one receiver counter.
type Counter struct {
	Name  string `json:"name"`
	Value uint64 `json:"value"`
}

// Entry is one live entry, addresses as netip.AddrPort prints them.
type Entry struct {
	Local  string `json:"local"`
	Proxy  string `json:"proxy"`
	Client string `json:"client"`
}

// FileState compares a configuration file with the receiver in place.
type FileState struct {
	Path     string       `json:"path"`
	InSync   bool         `json:"in_sync"`
	Error    string       `json:"error,omitempty"`
	Receiver ReceiverKind `json:"receiver"`
	Cgroup   string       `json:"cgroup,omitempty"`
	Trusted  string       `json:"trusted"`
	Kinds    string       `json:"kinds"`
	// Differs says what differs from the receiver in place, and what to
	// do; empty when in sync.
	Differs string `json:"differs,omitempty"`
}

// Status gathers the state of the receiver in place: the module's from
// sysfs and its control interface, the eBPF receiver's from its pins.
// configPath, if not empty, is compared with what the receiver holds.
func (a *Agent) Status(configPath string) (*Status, error) {
	st := &Status{Kernel: a.release, Receiver: ReceiverNone, Entries: []Entry{}}
	var err error
	if st.Module, err = ReadModuleState(a.sysfs); err != nil {
		return nil, err
	}
	ebpfIn, eerr := a.ebpf.present()
	var held *heldConfig
	switch {
	case st.Module.Loaded:
		st.Receiver = ReceiverKmod
		held = a.kmod.status(st)
	case ebpfIn:
		st.Receiver = ReceiverEBPF
		held = a.ebpf.status(st)
	case eerr != nil:
		st.Control.Error = eerr.Error()
	default:
		st.Control.Error = "no TOA receiver is in place: toa.ko is not loaded and no eBPF receiver is pinned in " + a.ebpf.pinDir()
	}
	if st.Module.Loaded && ebpfIn {
		st.Problem = "toa.ko is loaded and the eBPF receiver is pinned in " + a.ebpf.pinDir() +
			", both at once; run `realip-agent unload` (it removes both) and start the agent again"
	}
	if configPath != "" {
		st.ConfigFile = fileState(configPath, st, held)
	}
	return st, nil
}

// fileState compares the file at path with the receiver in place.
func fileState(path string, st *Status, held *heldConfig) *FileState {
	fs := &FileState{Path: path}
	cfg, err := LoadConfig(path)
	if err != nil {
		fs.Error = err.Error()
		return fs
	}
	fs.Receiver, fs.Cgroup = cfg.Receiver, cfg.Cgroup
	fs.Trusted, fs.Kinds = cfg.TrustedString(), cfg.KindsString()
	switch {
	case held == nil:
		fs.Differs = "the receiver's configuration cannot be read"
	case cfg.Receiver != ReceiverAuto && cfg.Receiver != st.Receiver:
		fs.Differs = fmt.Sprintf("the file names receiver %s, %s is in place; switch with `realip-agent unload` and a restart of the agent",
			cfg.Receiver, st.Receiver)
	case st.EBPF != nil && cfg.Cgroup != "" && st.EBPF.Cgroup != "" && cfg.Cgroup != st.EBPF.Cgroup:
		fs.Differs = fmt.Sprintf("the file names cgroup %s, the eBPF receiver is attached to %s; restart the agent to move it",
			cfg.Cgroup, st.EBPF.Cgroup)
	case !held.matches(cfg):
		fs.Differs = fmt.Sprintf("file: trusted=%q kinds=%q; reload the agent", fs.Trusted, fs.Kinds)
	}
	fs.InSync = fs.Differs == ""
	return fs
}

func (a *Agent) statusControl(st *Status) *toactl.Config {
	c, err := a.dialControl()
	if err != nil {
		st.Control.Error = err.Error()
		return nil
	}
	defer c.Close()
	cfg, err := c.Config()
	if err != nil {
		st.Control.Error = err.Error()
		return nil
	}
	st.Control.Available = true
	st.Config = newModuleConfig(cfg.Version, cfg.Trusted, cfg.Kinds)
	var errs []error
	stats, live, err := c.Stats()
	if err != nil {
		errs = append(errs, fmt.Errorf("counters: %w", err))
	}
	for _, s := range stats {
		st.Counters = append(st.Counters, Counter{Name: s.Name, Value: s.Value})
	}
	st.LiveEntries = live
	ents, err := c.Entries()
	switch {
	case errors.Is(err, os.ErrPermission):
		errs = append(errs, errors.New("entries: listing them needs CAP_NET_ADMIN (run as root)"))
	case err != nil:
		errs = append(errs, fmt.Errorf("entries: %w", err))
	}
	for _, e := range ents {
		st.Entries = append(st.Entries, Entry{Local: e.Local.String(), Proxy: e.Proxy.String(), Client: e.Client.String()})
	}
	if err := errors.Join(errs...); err != nil {
		st.Control.Error = err.Error()
	}
	return &cfg
}

// WriteJSON writes st as indented JSON.
func (st *Status) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}

// WriteText writes st for a person: the receiver, its configuration, its
// counters and a table of the live entries.
func (st *Status) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch st.Receiver {
	case ReceiverKmod:
		st.writeKmod(tw)
	case ReceiverEBPF:
		st.writeEBPF(tw)
	default:
		fmt.Fprintf(tw, "receiver:\tnone (kernel %s): %s\n", st.Kernel, st.Control.Error)
	}
	if st.Problem != "" {
		fmt.Fprintf(tw, "PROBLEM:\t%s\n", st.Problem)
	}
	st.writeConfig(tw)
	if st.Control.Available && st.Control.Error != "" {
		fmt.Fprintf(tw, "errors:\t%s\n", st.Control.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	st.writeCounters(w)
	return st.writeEntries(w)
}

func (st *Status) writeKmod(w io.Writer) {
	m := st.Module
	ref := "?"
	if m.RefCount >= 0 {
		ref = strconv.Itoa(m.RefCount)
	}
	fmt.Fprintf(w, "receiver:\tkmod (toa.ko)\n")
	fmt.Fprintf(w, "module:\ttoa %s, %s, refcount %s (kernel %s)\n", orDash(m.Version), orDash(m.InitState), ref, st.Kernel)
	if m.SrcVersion != "" {
		fmt.Fprintf(w, "srcversion:\t%s\n", m.SrcVersion)
	}
	if m.Taint != "" {
		fmt.Fprintf(w, "taint:\t%s\n", m.Taint)
	}
	if st.Control.Available {
		fmt.Fprintf(w, "control:\tnetlink %s, module version %s\n", toactl.FamilyName, orDash(st.Config.Version))
	} else {
		fmt.Fprintf(w, "control:\tunavailable: %s\n", st.Control.Error)
	}
}

func (st *Status) writeEBPF(w io.Writer) {
	e := st.EBPF
	fmt.Fprintf(w, "receiver:\tebpf (kernel %s)\n", st.Kernel)
	switch {
	case len(e.Links) == 0:
		fmt.Fprintf(w, "cgroup:\tnone: no link is pinned, the programs are detached\n")
	case e.Cgroup != "":
		fmt.Fprintf(w, "cgroup:\t%s (id %d)\n", e.Cgroup, e.CgroupID)
	default:
		fmt.Fprintf(w, "cgroup:\tid %d (its folder is not visible here)\n", e.CgroupID)
	}
	fmt.Fprintf(w, "links:\t%s\n", orDash(strings.Join(e.Links, ", ")))
	if st.Control.Available {
		fmt.Fprintf(w, "control:\tmaps pinned in %s\n", e.PinDir)
	} else {
		fmt.Fprintf(w, "control:\tunavailable (pinned in %s): %s\n", e.PinDir, st.Control.Error)
	}
}

// writeConfig writes the configuration held and the file's state.
func (st *Status) writeConfig(w io.Writer) {
	if c := st.Config; c != nil {
		trusted := strings.Join(c.Trusted, ", ")
		if trusted == "" {
			trusted = "(none: every source is trusted; TOA can be forged by anyone)"
		}
		kinds := make([]string, len(c.Kinds))
		for i, k := range c.Kinds {
			kinds[i] = strconv.Itoa(k)
		}
		fmt.Fprintf(w, "trusted:\t%s\n", trusted)
		fmt.Fprintf(w, "kinds:\t%s\n", strings.Join(kinds, ", "))
	}
	if f := st.ConfigFile; f != nil {
		switch {
		case f.Error != "":
			fmt.Fprintf(w, "config file:\t%s: %s\n", f.Path, f.Error)
		case f.InSync:
			fmt.Fprintf(w, "config file:\t%s: in force\n", f.Path)
		default:
			fmt.Fprintf(w, "config file:\t%s: NOT in force (%s)\n", f.Path, f.Differs)
		}
	}
}

func (st *Status) writeCounters(w io.Writer) {
	if len(st.Counters) == 0 {
		return
	}
	fmt.Fprintln(w, "\ncounters:")
	nw, vw := 0, 0
	for _, c := range st.Counters {
		nw = max(nw, len(c.Name))
		vw = max(vw, len(strconv.FormatUint(c.Value, 10)))
	}
	for _, c := range st.Counters {
		fmt.Fprintf(w, "  %-*s  %*d\n", nw, c.Name, vw, c.Value)
	}
}

func (st *Status) writeEntries(w io.Writer) error {
	if !st.Control.Available {
		return nil
	}
	if st.EntriesNote != "" {
		fmt.Fprintf(w, "\nentries: %d live (not listed: %s)\n", st.LiveEntries, st.EntriesNote)
		return nil
	}
	fmt.Fprintf(w, "\nentries: %d live\n", st.LiveEntries)
	if len(st.Entries) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  LOCAL\tPROXY\tCLIENT")
	for _, e := range st.Entries {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.Local, e.Proxy, e.Client)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
