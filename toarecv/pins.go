//go:build linux

package toarecv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// bpffsRoot is where systemd (and realip-agent when systemd did not)
// mounts bpffs.
const bpffsRoot = "/sys/fs/bpf"

// mapPins are the maps pinned by name in the pin folder.
var mapPins = []string{"toa_entries", "toa_settings", "toa_trusted", "toa_stats"}

// ensurePinDir makes the pin folder, mounting bpffs at /sys/fs/bpf first
// when the folder is below it and nothing is mounted there (as systemd
// would have).
func ensurePinDir(dir string) error {
	if isBPFFS(dir) {
		return nil
	}
	if dir == bpffsRoot || strings.HasPrefix(dir, bpffsRoot+"/") {
		if !isBPFFS(bpffsRoot) {
			if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
				return fmt.Errorf("toarecv: %w: mounting bpffs at %s: %v", ErrNoBPFFS, bpffsRoot, err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("toarecv: making the pin folder: %w", err)
	}
	if !isBPFFS(dir) {
		return fmt.Errorf("toarecv: %w: %s is not on bpffs", ErrNoBPFFS, dir)
	}
	return nil
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// pinned reports whether anything of the receiver is pinned in dir.
func pinned(dir string) bool {
	return len(existingPins(dir)) > 0
}

// existingPins returns the receiver's pins that exist in dir.
func existingPins(dir string) map[string]bool {
	have := make(map[string]bool)
	for _, name := range pinNames() {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			have[name] = true
		}
	}
	return have
}

// removeNewPins removes the receiver's pins in dir that are not in
// before: what a failed Open made.
func removeNewPins(dir string, before map[string]bool) error {
	var errs []error
	for name := range existingPins(dir) {
		if !before[name] {
			errs = append(errs, removePin(filepath.Join(dir, name)))
		}
	}
	return errors.Join(errs...)
}

func pinNames() []string {
	names := append([]string(nil), mapPins...)
	for _, a := range attachments {
		names = append(names, a.pin)
	}
	return names
}

// Unpin removes the receiver's pins from dir (empty: DefaultPinDir), which
// detaches its programs once no process holds them. Connections keep
// working; getpeername() shows the edge again. It returns ErrNotPinned
// when nothing was pinned.
func Unpin(dir string) error {
	if dir == "" {
		dir = DefaultPinDir
	}
	if !pinned(dir) {
		return ErrNotPinned
	}
	return withPinLock(dir, func() error { return unpin(dir) })
}

// unpin is Unpin under the pin folder's lock.
func unpin(dir string) error {
	var errs []error
	// Links first: the programs stop before their maps go.
	for _, a := range attachments {
		errs = append(errs, removePin(filepath.Join(dir, a.pin)))
	}
	for _, name := range mapPins {
		errs = append(errs, removePin(filepath.Join(dir, name)))
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("toarecv: removing %s: %w", dir, err))
	}
	return errors.Join(errs...)
}

func removePin(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("toarecv: removing pin %s: %w", path, err)
	}
	return nil
}

// Pinned is a view of a pinned receiver for those that do not manage it:
// status, metrics, and the listener library's lookups. Its methods are
// safe for concurrent use.
type Pinned struct {
	dir string
	t   tables
}

// OpenPinned opens the maps of the receiver pinned in dir (empty:
// DefaultPinDir). It returns an error wrapping ErrNotPinned when there is
// none.
func OpenPinned(dir string) (*Pinned, error) {
	if dir == "" {
		dir = DefaultPinDir
	}
	if !pinned(dir) {
		return nil, fmt.Errorf("toarecv: %w in %s", ErrNotPinned, dir)
	}
	p := &Pinned{dir: dir}
	maps := []**ebpf.Map{&p.t.entries, &p.t.settings, &p.t.trusted, &p.t.stats}
	for i, name := range mapPins {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			p.Close()
			return nil, classify("opening the pinned map "+name, err)
		}
		*maps[i] = m
	}
	n, err := ebpf.PossibleCPU()
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("toarecv: counting CPUs: %w", err)
	}
	p.t.ncpu = n
	return p, nil
}

// Close closes the maps.
func (p *Pinned) Close() error {
	var errs []error
	for _, m := range []*ebpf.Map{p.t.entries, p.t.settings, p.t.trusted, p.t.stats} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}

// Config returns the configuration in force.
func (p *Pinned) Config() (Config, error) { return p.t.config() }

// Counters returns the counters, per possible CPU, in CounterNames order.
func (p *Pinned) Counters() ([]Counter, error) { return p.t.counters() }

// Lookup returns the entry of the TCP socket fd, false when it has none.
func (p *Pinned) Lookup(fd int) (Entry, bool, error) { return p.t.lookup(fd) }

// Attachment tells which of the receiver's links are pinned, and the id
// of the cgroup they attach to (0 when none is).
func (p *Pinned) Attachment() (links []string, cgroupID uint64) {
	for _, a := range attachments {
		l, err := link.LoadPinnedLink(filepath.Join(p.dir, a.pin), nil)
		if err != nil {
			continue
		}
		links = append(links, a.pin)
		if id := linkCgroup(l); id != 0 {
			cgroupID = id
		}
		l.Close()
	}
	return links, cgroupID
}

// withPinLock runs fn holding an exclusive flock on the pin folder, so
// that two processes (a SIGHUP'd agent and `realip-agent load`, say) never
// interleave their changes of the pins or the trusted prefixes: two
// interleaved prefix updates could leave both lists trusted.
func withPinLock(dir string, fn func() error) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("toarecv: locking %s: %w", dir, err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("toarecv: locking %s: %w", dir, err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return fn()
}
