//go:build linux

package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// maxLoggedOutput caps how much of a process's output a failing test logs.
const maxLoggedOutput = 16 << 10

// Proc is a long-running process started by Host.Start.
type Proc struct {
	// Cmd is the running command; do not call Wait on it, use Done and Err.
	Cmd *exec.Cmd

	name   string
	out    syncBuffer
	copied chan struct{} // closed when output is fully copied
	done   chan struct{} // closed when the process has exited
	err    error
}

// Start starts name with args in the host's namespace, in its own process
// group, with stdout and stderr captured (see Output). The process group is
// killed when t's cleanups run; if t failed, the output is logged then.
func (h *Host) Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{
		Cmd:    h.Command(context.Background(), name, args...),
		name:   h.Name + ": " + strings.Join(append([]string{name}, args...), " "),
		copied: make(chan struct{}),
		done:   make(chan struct{}),
	}
	if err := p.start(); err != nil {
		t.Fatalf("netns: %s: %v", p.name, err)
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// start starts the command with its output going into a pipe that p copies
// into its buffer. An *os.File is used so that Wait does not wait for
// descendants that inherited the pipe; the lab's cleanup kills those.
func (p *Proc) start() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("output pipe: %w", err)
	}
	p.Cmd.Stdout, p.Cmd.Stderr = w, w
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = p.Cmd.Start()
	_ = w.Close()
	if err != nil {
		_ = r.Close()
		return fmt.Errorf("start: %w", err)
	}
	go func() {
		_, _ = io.Copy(&p.out, r)
		_ = r.Close()
		close(p.copied)
	}()
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	return nil
}

// stop kills the process group, waits for the process, and logs its output
// if the test failed.
func (p *Proc) stop(t testing.TB) {
	err := unix.Kill(-p.Cmd.Process.Pid, unix.SIGKILL)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		t.Errorf("netns: %s: kill: %v", p.name, err)
	}
	<-p.done
	if t.Failed() {
		select { // let the last bytes arrive, unless a descendant holds the pipe
		case <-p.copied:
		case <-time.After(time.Second):
		}
		out := p.Output()
		if len(out) > maxLoggedOutput {
			out = "...\n" + out[len(out)-maxLoggedOutput:]
		}
		t.Logf("netns: output of %s (%v):\n%s", p.name, p.err, out)
	}
}

// Output returns everything the process wrote to stdout and stderr so far.
func (p *Proc) Output() string {
	return p.out.String()
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} {
	return p.done
}

// Err returns the process's exit error (nil for status 0) once Done is
// closed, and nil before.
func (p *Proc) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and many readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
