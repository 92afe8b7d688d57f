//go:build linux

package agent

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// dkmsEntry is one line of `dkms status toa`.
type dkmsEntry struct {
	Version string
	Kernel  string // empty for "added" (registered, not built)
	Arch    string
	State   string // added, built, installed, installed-weak
	Note    string // what dkms adds after the state: "(WARNING! ...)"
}

// parseDKMSStatus reads the output of `dkms status MODULE`, in the form
// of dkms 3 ("toa/0.1.0, 6.1.0-56-amd64, x86_64: installed",
// "toa/0.1.0: added") and of dkms 2 ("toa, 0.1.0, 6.1.0-56-amd64, x86_64:
// installed"). Lines of other modules are left out; a line of module it
// cannot read is an error.
func parseDKMSStatus(out, module string) ([]dkmsEntry, error) {
	var ents []dkmsEntry
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "Deprecated") {
			continue
		}
		head, state, found := strings.Cut(line, ": ")
		if !found {
			head, state, found = strings.Cut(line, ":")
		}
		fields := strings.Split(head, ", ")
		name, ver, slash := strings.Cut(fields[0], "/")
		if slash {
			fields = append([]string{name, ver}, fields[1:]...)
		}
		if fields[0] != module {
			continue
		}
		if !found || (len(fields) != 2 && len(fields) != 4) {
			return nil, fmt.Errorf("dkms status: cannot read %q", line)
		}
		e := dkmsEntry{Version: fields[1]}
		if len(fields) == 4 {
			e.Kernel, e.Arch = fields[2], fields[3]
		}
		e.State, e.Note, _ = strings.Cut(strings.TrimSpace(state), " ")
		e.Note = strings.TrimSpace(e.Note)
		ents = append(ents, e)
	}
	return ents, nil
}

// dkmsStatus runs `dkms status toa` with the command in opts.
func (d *doctor) dkmsStatus() (string, error) {
	cmd := d.opts.DKMS
	if len(cmd) == 0 {
		cmd = []string{"dkms"}
	}
	path, err := exec.LookPath(cmd[0])
	if err != nil {
		return "", err
	}
	args := append(slices.Clone(cmd[1:]), "status", ModuleName)
	out, err := exec.Command(path, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("%s status %s: %w", cmd[0], ModuleName, err)
	}
	return string(out), nil
}

// checkDKMS: whether DKMS built and installed toa.ko for this kernel,
// when dkms is installed and toa (toa-dkms) is registered with it.
func (d *doctor) checkDKMS() Check {
	out, err := d.dkmsStatus()
	if errors.Is(err, exec.ErrNotFound) {
		return skip("dkms is not installed: not applicable (toa.ko does not come from toa-dkms here)")
	}
	if err != nil {
		return finding(CheckWarn, err.Error(), "run `dkms status toa` by hand")
	}
	ents, err := parseDKMSStatus(out, ModuleName)
	if err != nil {
		return finding(CheckWarn, err.Error(), "run `dkms status toa` by hand")
	}
	if len(ents) == 0 {
		return skip("toa is not registered with DKMS (toa-dkms is not installed): not applicable")
	}
	return d.judgeDKMS(ents)
}

// judgeDKMS judges the entries of `dkms status toa` for the running
// kernel. A module DKMS did not install for it is a problem when no
// receiver is in place, else a warning.
func (d *doctor) judgeDKMS(ents []dkmsEntry) Check {
	rel := d.a.release
	sev := CheckWarn
	if d.st.Receiver == ReceiverNone {
		sev = CheckProblem
	}
	var others []string
	ver := ents[0].Version
	for _, e := range ents {
		switch {
		case e.Kernel != rel:
			if e.Kernel != "" {
				others = append(others, e.Kernel+" ("+e.State+")")
			}
		case strings.HasPrefix(e.State, "installed") && e.Note == "":
			return ok("toa/%s is %s for kernel %s", e.Version, e.State, rel)
		case strings.HasPrefix(e.State, "installed"):
			return finding(CheckWarn, fmt.Sprintf("toa/%s for kernel %s: %s %s", e.Version, rel, e.State, e.Note),
				fmt.Sprintf("`dkms install --force toa/%s -k %s`", e.Version, rel))
		default:
			return finding(sev, fmt.Sprintf("toa/%s is %s for kernel %s but not installed", e.Version, e.State, rel),
				fmt.Sprintf("`dkms install toa/%s -k %s`", e.Version, rel))
		}
	}
	detail := fmt.Sprintf("toa/%s is registered with DKMS but not built for kernel %s", ver, rel)
	if len(others) > 0 {
		detail += "; built for " + strings.Join(others, ", ")
	}
	return finding(sev, detail, fmt.Sprintf("install the kernel's headers (linux-headers-%s) and run `dkms install toa/%s -k %s`, "+
		"whose log says what failed", rel, ver, rel))
}
