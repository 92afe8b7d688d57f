//go:build linux

package agenttest

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/realip/realip/agent"
)

// Env is the world of one agent under test: a fake module, a fake eBPF
// receiver, a good toa.ko built for KernelRelease, a procfs tree with the
// exporter's seed toa_stats, and a configuration file (written with
// Write).
type Env struct {
	t          testing.TB
	Module     *Module
	EBPF       *EBPF
	Dir        string      // the test's scratch folder
	ConfigPath string      // the configuration file, Dir/agent.yaml
	ModulePath string      // a good toa.ko
	Notify     chan string // the agent's notifications (READY=1, ...); dropped when full
	Logs       *Buffer     // the agent's log
}

// NewEnv returns an Env with its files in temporary folders of t.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	e := &Env{t: t, Module: NewModule(t), EBPF: NewEBPF(t), Dir: t.TempDir(), Notify: make(chan string, 16), Logs: &Buffer{}}
	e.ConfigPath = filepath.Join(e.Dir, "agent.yaml")
	e.ModulePath = BuildModule(t, e.Dir, RealipFields(KernelRelease)...)
	os.MkdirAll(filepath.Join(e.Dir, "proc", "net"), 0o755)
	seed, err := os.ReadFile(filepath.Join(moduleRoot(t), "exporter", "testdata", "seed", "net", "toa_stats"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(e.Dir, "proc", "net", "toa_stats"), seed, 0o644)
	return e
}

// moduleRoot is the folder of the go.mod above the test's working
// directory (the package's folder under go test).
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Options are agent options for the fake module and kernel, logging to
// Logs and notifying on Notify.
func (e *Env) Options() agent.Options {
	return agent.Options{
		Logger:        slog.New(slog.NewTextHandler(e.Logs, nil)),
		SysfsRoot:     e.Module.SysfsRoot(),
		ModulesRoot:   filepath.Join(e.Dir, "lib-modules"),
		KernelRelease: KernelRelease,
		Kernel:        e.Module,
		Dial:          e.Module.Dial,
		EBPF:          e.EBPF,
		Notify: func(s string) {
			select {
			case e.Notify <- s:
			default:
			}
		},
	}
}

// Write writes the configuration file: module_path is the good module
// unless the body sets it, procfs the fixture tree, metrics_listen empty
// (no server).
func (e *Env) Write(body string) {
	e.t.Helper()
	if !strings.Contains(body, "module_path:") {
		body = "module_path: " + e.ModulePath + "\n" + body
	}
	if !strings.Contains(body, "procfs:") {
		body += "procfs: " + filepath.Join(e.Dir, "proc") + "\n"
	}
	if !strings.Contains(body, "metrics_listen:") {
		body += "metrics_listen: \"\"\n"
	}
	if err := os.WriteFile(e.ConfigPath, []byte(body), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// InstallModule puts the good toa.ko where DKMS installs it for
// KernelRelease (ModulesRoot/RELEASE/updates/dkms/toa.ko), signed as
// scripts/sign-file signs modules when signed is true, and returns its
// path. Configurations then need `module_path: ""` to be searched.
func (e *Env) InstallModule(signed bool) string {
	e.t.Helper()
	dir := filepath.Join(e.Dir, "lib-modules", KernelRelease, "updates", "dkms")
	img, err := os.ReadFile(e.ModulePath)
	if err != nil {
		e.t.Fatal(err)
	}
	if signed {
		// A PKCS#7 blob, its descriptor and the marker; the agent only
		// looks at the marker.
		img = append(img, []byte("\x30\x82fake-pkcs7\x00\x00\x02\x00\x00\x00\x00\x00\x00\x0a~Module signature appended~\n")...)
	}
	path := filepath.Join(dir, "toa.ko")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// SetLockdown writes the kernel's lockdown file in the fake sysfs
// (kernel/security/lockdown) with mode in force, as the kernel prints it:
// "none [integrity] confidentiality".
func (e *Env) SetLockdown(mode string) {
	e.t.Helper()
	var words []string
	for _, m := range []string{"none", "integrity", "confidentiality"} {
		if m == mode {
			m = "[" + m + "]"
		}
		words = append(words, m)
	}
	dir := filepath.Join(e.Module.SysfsRoot(), "kernel", "security")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lockdown"), []byte(strings.Join(words, " ")+"\n"), 0o444); err != nil {
		e.t.Fatal(err)
	}
}

// Buffer is a bytes.Buffer safe for concurrent writers, such as an agent's
// logger.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
