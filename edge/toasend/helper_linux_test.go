//go:build linux

package toasend

// The program sees the sockets of processes in the cgroup it is attached
// to, and a socket belongs to the cgroup of the process that created it.
// So that tests never touch the sockets of anything else on the machine
// (the test process itself may sit in the root cgroup), each test makes a
// fresh cgroup, starts a copy of the test binary directly inside it
// (clone3 with CLONE_INTO_CGROUP, through SysProcAttr.UseCgroupFD), and
// that helper opens a Sender with default options (so the default cgroup
// lookup is tested too) and dials. The test itself runs the servers and
// the packet capture and checks what went over the wire.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/cgroup2/cgrouptest"
)

// helperEnv carries the helper's job (JSON) to the re-executed test binary.
const helperEnv = "REALIP_TOASEND_HELPER"

// cgroupPrefix starts the name of every cgroup the tests make.
const cgroupPrefix = "realip-toasend"

func TestMain(m *testing.M) {
	if job := os.Getenv(helperEnv); job != "" {
		os.Exit(helperMain(job))
	}
	os.Exit(m.Run())
}

// helperJob is what the helper process does.
type helperJob struct {
	// Netns is a network namespace file (/run/netns/NAME) to make the
	// sockets in; empty for the helper's own.
	Netns string
	// KindV4 and KindV6 go to Options.
	KindV4, KindV6 uint8
	// Dials are made one after the other with the first Sender.
	Dials []dialJob
	// Pending makes one blocking connect with a write waiting for it.
	Pending *dialJob
	// Bench, if set, runs a benchmark loop instead of Dials.
	Bench *benchJob
	// Probe runs Available and reports its error, nothing else.
	Probe bool
}

// dialJob is one connection: dial Target, write Payload bytes, half-close,
// read until the server closes.
type dialJob struct {
	Target  string
	Client  string // the TOA client address; "" dials without Control
	Payload int
	MD5Key  string // if set, sign the connection with TCP-MD5
}

// dialResult is what the helper learnt about one dial.
type dialResult struct {
	Local                  string
	CarriedSYN, CarriedACK bool // Sender.Carried after the handshake
}

// benchJob dials and accepts N connections on loopback and times it.
type benchJob struct {
	Mode string // "plain": no Sender; "attached": Sender, no Control; "toa"
	N    int
}

// helperResult is what the helper prints on stdout, as JSON.
type helperResult struct {
	Err       string
	Cgroup    string       // the first Sender's cgroup
	Dials     []dialResult // one per dial, in order
	Stats     Stats        // the first Sender's, after the dials
	Other     Stats        // the second Sender's (which tags no socket)
	BenchNs   int64
	ProbeErr  string
	ProbeIs   []string // sentinel errors the probe error wraps
	SenderErr string
}

func helperMain(jobText string) int {
	var job helperJob
	res := helperResult{}
	err := json.Unmarshal([]byte(jobText), &job)
	if err == nil {
		err = job.run(&res)
	}
	if err != nil {
		res.Err = err.Error()
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func (job *helperJob) run(res *helperResult) error {
	if job.Probe {
		if err := Available(); err != nil {
			res.ProbeErr = err.Error()
			for name, s := range map[string]error{"ErrNotPermitted": ErrNotPermitted, "ErrNoCgroup2": ErrNoCgroup2, "ErrUnsupported": ErrUnsupported} {
				if errors.Is(err, s) {
					res.ProbeIs = append(res.ProbeIs, name)
				}
			}
		}
		return nil
	}
	// Sockets are made on this locked thread, in job.Netns; they stay in
	// that namespace whichever thread uses them later.
	runtime.LockOSThread()
	if job.Netns != "" {
		fd, err := unix.Open(job.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("setns %s: %w", job.Netns, err)
		}
	}
	if job.Bench != nil {
		ns, err := job.Bench.run()
		res.BenchNs = ns
		return err
	}
	s, err := Open(Options{KindV4: job.KindV4, KindV6: job.KindV6})
	if err != nil {
		return err
	}
	defer s.Close()
	res.Cgroup = s.Cgroup()
	// A second, independent instance in the same cgroup: it must leave
	// the first one's sockets alone.
	other, err := Open(Options{KindV4: job.KindV4, KindV6: job.KindV6})
	if err != nil {
		return err
	}
	defer other.Close()

	for _, d := range job.Dials {
		r, err := d.run(s)
		if err != nil {
			return err
		}
		res.Dials = append(res.Dials, r)
	}
	if job.Pending != nil {
		local, err := job.Pending.runPending(s)
		if err != nil {
			return err
		}
		res.Dials = append(res.Dials, dialResult{Local: local})
	}
	if res.Stats, err = s.Stats(); err != nil {
		return err
	}
	if res.Other, err = other.Stats(); err != nil {
		return err
	}
	if err := other.Close(); err != nil {
		return err
	}
	return s.Close()
}

// run dials and exchanges the payload.
func (d dialJob) run(s *Sender) (res dialResult, err error) {
	target, err := netip.ParseAddrPort(d.Target)
	if err != nil {
		return res, err
	}
	var controls []func(network, address string, c syscall.RawConn) error
	if d.Client != "" {
		client, err := netip.ParseAddrPort(d.Client)
		if err != nil {
			return res, err
		}
		controls = append(controls, s.Control(client))
	}
	if d.MD5Key != "" {
		controls = append(controls, md5Control(target.Addr(), d.MD5Key))
	}
	dialer := net.Dialer{
		Timeout: 10 * time.Second,
		Control: func(network, address string, c syscall.RawConn) error {
			for _, f := range controls {
				if err := f(network, address, c); err != nil {
					return err
				}
			}
			return nil
		},
	}
	c, err := dialer.Dial("tcp", d.Target)
	if err != nil {
		return res, fmt.Errorf("dial %s: %w", d.Target, err)
	}
	defer c.Close()
	res.Local = c.LocalAddr().String()
	if res.CarriedSYN, res.CarriedACK, err = s.Carried(c.(*net.TCPConn)); err != nil {
		return res, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(make([]byte, d.Payload)); err != nil {
		return res, fmt.Errorf("write to %s: %w", d.Target, err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return res, err
	}
	if _, err := io.Copy(io.Discard, c); err != nil {
		return res, fmt.Errorf("read from %s: %w", d.Target, err)
	}
	return res, nil
}

// md5Control returns a Control function that signs the connection to or
// from peer with TCP-MD5 (RFC 2385) and key.
func md5Control(peer netip.Addr, key string) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		sig := unix.TCPMD5Sig{Keylen: uint16(len(key))}
		copy(sig.Key[:], key)
		raw := (*[unsafe.Sizeof(sig.Addr)]byte)(unsafe.Pointer(&sig.Addr))
		if a := peer.Unmap(); a.Is4() {
			sig.Addr.Family = unix.AF_INET
			ip := a.As4()
			copy(raw[4:8], ip[:]) // sockaddr_in: family, port, address
		} else {
			sig.Addr.Family = unix.AF_INET6
			ip := a.As16()
			copy(raw[8:24], ip[:]) // sockaddr_in6: family, port, flowinfo, address
		}
		var err error
		cerr := c.Control(func(fd uintptr) {
			err = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
		})
		return errors.Join(cerr, err)
	}
}

// fdConn is a syscall.RawConn for a plain descriptor.
type fdConn int

func (fd fdConn) Control(f func(fd uintptr)) error      { f(uintptr(fd)); return nil }
func (fdConn) Read(func(fd uintptr) (done bool)) error  { return errors.ErrUnsupported }
func (fdConn) Write(func(fd uintptr) (done bool)) error { return errors.ErrUnsupported }

// runPending connects a blocking socket while another thread is already
// blocked writing to it, so the kernel holds back the handshake ACK and
// sends it with the data (sk_write_pending). The helper prints "pending"
// on stderr once the write has had time to block; the test then lets the
// server answer the next SYN.
func (d dialJob) runPending(s *Sender) (local string, err error) {
	target, err := netip.ParseAddrPort(d.Target)
	if err != nil {
		return "", err
	}
	client, err := netip.ParseAddrPort(d.Client)
	if err != nil {
		return "", err
	}
	family, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: int(target.Port()), Addr: target.Addr().As4()})
	if target.Addr().Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(target.Port()), Addr: target.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0) // blocking
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	if err := s.Control(client)("tcp", d.Target, fdConn(fd)); err != nil {
		return "", err
	}
	connected := make(chan error, 1)
	go func() { connected <- unix.Connect(fd, sa) }()
	written := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond) // connect is in SYN-SENT by now
		_, err := unix.Write(fd, make([]byte, d.Payload))
		written <- err
	}()
	time.Sleep(400 * time.Millisecond)
	fmt.Fprintln(os.Stderr, "pending")
	if err := <-connected; err != nil {
		return "", fmt.Errorf("connect %s: %w", d.Target, err)
	}
	if err := <-written; err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return "", fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			break
		}
	}
	la, err := unix.Getsockname(fd)
	if err != nil {
		return "", err
	}
	switch a := la.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String(), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String(), nil
	}
	return "", fmt.Errorf("getsockname: %T", la)
}

// run dials and accepts N loopback connections and returns the time taken.
func (b *benchJob) run() (int64, error) {
	var s *Sender
	if b.Mode != "plain" {
		var err error
		if s, err = Open(Options{}); err != nil {
			return 0, err
		}
		defer s.Close()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	const warmup = 100 // connections before the clock starts
	accepted := make(chan error, 1)
	go func() {
		for range warmup + b.N {
			c, err := ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			c.Close()
		}
		accepted <- nil
	}()
	var d net.Dialer
	if b.Mode == "toa" {
		d.Control = s.Control(netip.MustParseAddrPort("203.0.113.7:4242"))
	}
	target := ln.Addr().String()
	var start time.Time
	for i := range warmup + b.N {
		if i == warmup {
			start = time.Now()
		}
		c, err := d.Dial("tcp", target)
		if err != nil {
			return 0, err
		}
		c.Close()
	}
	if err := <-accepted; err != nil {
		return 0, err
	}
	return time.Since(start).Nanoseconds(), nil
}

// testCgroup makes a fresh cgroup v2 for the test, removed at cleanup, and
// returns its path and an open descriptor for it.
func testCgroup(t testing.TB) (string, *os.File) {
	t.Helper()
	return cgrouptest.New(t, cgroupPrefix)
}

// helper is a running helper process.
type helper struct {
	cmd    *exec.Cmd
	stdout strings.Builder
	stderr *bufio.Scanner
	errBuf strings.Builder
	lines  chan string // stderr lines
	wg     sync.WaitGroup
}

// startHelper starts the test binary as a helper doing job, inside the
// cgroup cg (nil: this process's cgroup), with the given credentials (nil:
// ours).
func startHelper(t testing.TB, cg *os.File, cred *syscall.Credential, job helperJob) *helper {
	t.Helper()
	text, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		exe = sharedCopy(t, exe)
	}
	h := &helper{lines: make(chan string, 16)}
	h.cmd = exec.Command(exe, "-test.run=^$")
	h.cmd.Env = append(os.Environ(), helperEnv+"="+string(text))
	h.cmd.Stdout = &h.stdout
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if cg != nil {
		h.cmd.SysProcAttr.UseCgroupFD = true
		h.cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	}
	errPipe, err := h.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("starting the helper: %v", err)
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(h.lines)
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			h.errBuf.WriteString(sc.Text() + "\n")
			select {
			case h.lines <- sc.Text():
			default:
			}
		}
	}()
	t.Cleanup(func() {
		if h.cmd.ProcessState == nil {
			h.cmd.Process.Kill()
			h.wait()
		}
	})
	return h
}

// sharedCopy copies the executable where any user may run it (go test
// keeps it in a folder only its owner may enter).
func sharedCopy(t testing.TB, exe string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "realip-toasend-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, err := os.ReadFile(exe)
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	dst := filepath.Join(dir, filepath.Base(exe))
	if err == nil {
		err = os.WriteFile(dst, data, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// waitLine waits for the helper to print line on stderr.
func (h *helper) waitLine(line string, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				return false
			}
			if l == line {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

func (h *helper) wait() error {
	h.wg.Wait() // stderr fully read before Wait closes the pipe
	return h.cmd.Wait()
}

// result waits for the helper and decodes its result; a helper that
// failed fails the test.
func (h *helper) result(t testing.TB) helperResult {
	t.Helper()
	err := h.wait()
	var res helperResult
	if jerr := json.Unmarshal([]byte(h.stdout.String()), &res); jerr != nil || err != nil {
		t.Fatalf("helper: %v, output %q: %v; stderr:\n%s", err, h.stdout.String(), jerr, h.errBuf.String())
	}
	if res.Err != "" {
		t.Fatalf("helper failed: %s; stderr:\n%s", res.Err, h.errBuf.String())
	}
	return res
}

// runHelper runs a helper to its end and returns its result.
func runHelper(t testing.TB, cg *os.File, job helperJob) helperResult {
	t.Helper()
	return startHelper(t, cg, nil, job).result(t)
}
