//go:build linux

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/realip/realip/toactl"
)

// Status is what `realip-agent status` reports.
type Status struct {
	Kernel  string       `json:"kernel"`
	Module  ModuleState  `json:"module"`
	Control ControlState `json:"control"`
	// Config is the configuration the module holds (nil without control).
	Config *ModuleConfig `json:"config,omitempty"`
	// Counters are the module's counters summed over CPUs, in its order.
	Counters []Counter `json:"counters,omitempty"`
	// LiveEntries is the number of connections the module holds an entry
	// for; Entries lists them.
	LiveEntries uint64  `json:"live_entries"`
	Entries     []Entry `json:"entries"`
	// ConfigFile, when a file was given, says whether the module holds
	// what it says.
	ConfigFile *FileState `json:"config_file,omitempty"`
}

// ControlState says whether the netlink control interface answered.
type ControlState struct {
	Available bool   `json:"available"`
	Error     string `json:"error,omitempty"`
}

// ModuleConfig is the configuration held by the module.
type ModuleConfig struct {
	Version string   `json:"version"`
	Trusted []string `json:"trusted"`
	Kinds   []int    `json:"kinds"`
}

// Counter is one module counter.
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

// FileState compares a configuration file with the module.
type FileState struct {
	Path    string `json:"path"`
	InSync  bool   `json:"in_sync"`
	Error   string `json:"error,omitempty"`
	Trusted string `json:"trusted"`
	Kinds   string `json:"kinds"`
}

// Status gathers the module's state from sysfs and its control interface.
// configPath, if not empty, is compared with what the module holds.
func (a *Agent) Status(configPath string) (*Status, error) {
	st := &Status{Kernel: a.release, Entries: []Entry{}}
	var err error
	if st.Module, err = ReadModuleState(a.sysfs); err != nil {
		return nil, err
	}
	var held *toactl.Config
	if st.Module.Loaded {
		held = a.statusControl(st)
	} else {
		st.Control.Error = ErrNotLoaded.Error()
	}
	if configPath != "" {
		fs := &FileState{Path: configPath}
		cfg, err := LoadConfig(configPath)
		if err != nil {
			fs.Error = err.Error()
		} else {
			fs.Trusted, fs.Kinds = cfg.TrustedString(), cfg.KindsString()
			fs.InSync = held != nil && sameConfig(*held, cfg)
		}
		st.ConfigFile = fs
	}
	return st, nil
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
	mc := &ModuleConfig{Version: cfg.Version, Trusted: []string{}, Kinds: []int{}}
	for _, p := range cfg.Trusted {
		mc.Trusted = append(mc.Trusted, p.String())
	}
	for _, k := range cfg.Kinds {
		mc.Kinds = append(mc.Kinds, int(k))
	}
	st.Config = mc
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

// WriteText writes st for a person: the module, its configuration, its
// counters and a table of the live entries.
func (st *Status) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	m := st.Module
	if !m.Loaded {
		fmt.Fprintf(tw, "module:\tnot loaded (kernel %s)\n", st.Kernel)
	} else {
		ref := "?"
		if m.RefCount >= 0 {
			ref = strconv.Itoa(m.RefCount)
		}
		fmt.Fprintf(tw, "module:\ttoa %s, %s, refcount %s (kernel %s)\n", orDash(m.Version), orDash(m.InitState), ref, st.Kernel)
		if m.SrcVersion != "" {
			fmt.Fprintf(tw, "srcversion:\t%s\n", m.SrcVersion)
		}
		if m.Taint != "" {
			fmt.Fprintf(tw, "taint:\t%s\n", m.Taint)
		}
	}
	if st.Control.Available {
		fmt.Fprintf(tw, "control:\tnetlink %s, module version %s\n", toactl.FamilyName, orDash(st.Config.Version))
	} else {
		fmt.Fprintf(tw, "control:\tunavailable: %s\n", st.Control.Error)
	}
	if c := st.Config; c != nil {
		trusted := strings.Join(c.Trusted, ", ")
		if trusted == "" {
			trusted = "(none: every source is trusted; TOA can be forged by anyone)"
		}
		kinds := make([]string, len(c.Kinds))
		for i, k := range c.Kinds {
			kinds[i] = strconv.Itoa(k)
		}
		fmt.Fprintf(tw, "trusted:\t%s\n", trusted)
		fmt.Fprintf(tw, "kinds:\t%s\n", strings.Join(kinds, ", "))
	}
	if f := st.ConfigFile; f != nil {
		switch {
		case f.Error != "":
			fmt.Fprintf(tw, "config file:\t%s: %s\n", f.Path, f.Error)
		case f.InSync:
			fmt.Fprintf(tw, "config file:\t%s: in force\n", f.Path)
		default:
			fmt.Fprintf(tw, "config file:\t%s: NOT in force (file: trusted=%q kinds=%q; reload the agent)\n", f.Path, f.Trusted, f.Kinds)
		}
	}
	if st.Control.Available && st.Control.Error != "" {
		fmt.Fprintf(tw, "errors:\t%s\n", st.Control.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Counters) > 0 {
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
	if st.Control.Available {
		fmt.Fprintf(w, "\nentries: %d live\n", st.LiveEntries)
		if len(st.Entries) > 0 {
			tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  LOCAL\tPROXY\tCLIENT")
			for _, e := range st.Entries {
				fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.Local, e.Proxy, e.Client)
			}
			return tw.Flush()
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
