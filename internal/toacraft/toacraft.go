//go:build linux

package toacraft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// struct bpf_sock_ops offsets and constants (include/uapi/linux/bpf.h),
// stable since Linux 5.10.
const (
	sockOpsOp          = 0   // op
	sockOpsCbFlags     = 84  // bpf_sock_ops_cb_flags
	sockOpsSkbTCPFlags = 212 // skb_tcp_flags

	opTCPConnect  = 3  // BPF_SOCK_OPS_TCP_CONNECT_CB
	opHdrOptLen   = 14 // BPF_SOCK_OPS_HDR_OPT_LEN_CB
	opWriteHdrOpt = 15 // BPF_SOCK_OPS_WRITE_HDR_OPT_CB

	writeHdrOptCbFlag = 1 << 6 // BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG
	tcpFlagSYN        = 0x02
)

// The map value: the option (its second byte, the length, says how much is
// reserved and written), then what went out, set by the program.
const (
	craftOptMax     = 40 // all of TCP's option space
	craftWrittenOff = 40
	craftSYNOnlyOff = 41 // set by user space: the SYN carries it, nothing after
	craftValueSize  = 48

	writtenSYN   = 0x01 // a SYN carried the option
	writtenOther = 0x02 // a segment after the SYN did (the handshake ACK first)
)

// Crafter is the loaded and attached program.
type Crafter struct {
	opts *ebpf.Map // socket cookie -> value
	prog *ebpf.Program
	link link.Link
}

// Open loads the program and attaches it to the cgroup v2 folder: it
// serves the sockets of the processes in it and its descendants.
func Open(cgroup string) (*Crafter, error) {
	_ = rlimit.RemoveMemlock() // kernels before 5.11 charge maps to RLIMIT_MEMLOCK
	opts, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "realip_craft", Type: ebpf.LRUHash, KeySize: 8, ValueSize: craftValueSize, MaxEntries: 4096,
	})
	if err != nil {
		return nil, fmt.Errorf("toacraft: map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "realip_craft", Type: ebpf.SockOps, License: "GPL", Instructions: craftProgram(opts.FD()),
	})
	if err != nil {
		opts.Close()
		return nil, fmt.Errorf("toacraft: program: %w", err)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: ebpf.AttachCGroupSockOps, Program: prog})
	if err != nil {
		prog.Close()
		opts.Close()
		return nil, fmt.Errorf("toacraft: attaching to %s: %w", cgroup, err)
	}
	return &Crafter{opts: opts, prog: prog, link: l}, nil
}

// craftProgram is the sockops program; mapFD is the map of options.
func craftProgram(mapFD int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // r6 = ctx
		asm.LoadMem(asm.R7, asm.R6, sockOpsOp, asm.Word),
		asm.JEq.Imm(asm.R7, opTCPConnect, "lookup"),
		asm.JEq.Imm(asm.R7, opHdrOptLen, "lookup"),
		asm.JNE.Imm(asm.R7, opWriteHdrOpt, "out"),
		// r8 = the socket's value, or out
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("lookup"),
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, mapFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.JEq.Imm(asm.R7, opTCPConnect, "connect"),
		// SYN only: a segment without SYN (or none, as when the kernel
		// sizes segments) gets nothing.
		asm.LoadMem(asm.R1, asm.R8, craftSYNOnlyOff, asm.Byte),
		asm.JEq.Imm(asm.R1, 0, "every"),
		asm.LoadMem(asm.R1, asm.R6, sockOpsSkbTCPFlags, asm.Word),
		asm.JSet.Imm(asm.R1, tcpFlagSYN, "every"),
		asm.Ja.Label("out"),
		// r9 = the option's length, its second byte: what is reserved
		asm.LoadMem(asm.R9, asm.R8, 1, asm.Byte).WithSymbol("every"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.JEq.Imm(asm.R7, opWriteHdrOpt, "write"),
		// HDR_OPT_LEN: reserve room
		asm.Mov.Reg(asm.R2, asm.R9),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnReserveHdrOpt.Call(),
		asm.Ja.Label("out"),
		// WRITE_HDR_OPT: store the option (the helper writes as many bytes
		// as its second byte says, out of a buffer the verifier knows to
		// be craftOptMax long), then note what carried it.
		asm.Mov.Reg(asm.R2, asm.R8).WithSymbol("write"),
		asm.Mov.Imm(asm.R3, craftOptMax),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnStoreHdrOpt.Call(),
		asm.JNE.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R6, sockOpsSkbTCPFlags, asm.Word),
		asm.Mov.Imm(asm.R2, writtenOther),
		asm.JSet.Imm(asm.R1, tcpFlagSYN, "syn"),
		asm.Ja.Label("mark"),
		asm.Mov.Imm(asm.R2, writtenSYN).WithSymbol("syn"),
		asm.LoadMem(asm.R1, asm.R8, craftWrittenOff, asm.Byte).WithSymbol("mark"),
		asm.Or.Reg(asm.R1, asm.R2),
		asm.StoreMem(asm.R8, craftWrittenOff, asm.R1, asm.Byte),
		asm.Ja.Label("out"),
		// TCP_CONNECT: ask for the header option callbacks
		asm.LoadMem(asm.R2, asm.R6, sockOpsCbFlags, asm.Word).WithSymbol("connect"),
		asm.Or.Imm(asm.R2, writeHdrOptCbFlag),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnSockOpsCbFlagsSet.Call(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("out"),
		asm.Return(),
	}
}

// Option encodes a TOA option: kind, length (8: IPv4 client, 20: IPv6,
// an IPv4 client then written IPv4-mapped), port, address.
func Option(kind, length uint8, client netip.AddrPort) ([]byte, error) {
	opt := []byte{kind, length, 0, 0}
	binary.BigEndian.PutUint16(opt[2:], client.Port())
	switch a := client.Addr(); {
	case length == 8 && a.Unmap().Is4():
		b := a.Unmap().As4()
		return append(opt, b[:]...), nil
	case length == 20 && a.IsValid():
		b := a.As16()
		return append(opt, b[:]...), nil
	}
	return nil, fmt.Errorf("toacraft: no TOA option of length %d holds %s", length, client)
}

// checkOption refuses what the kernel's helpers cannot write: an option is
// 2 to 40 bytes and its second byte is its length; the experimental kinds
// 253 and 254 need 4 bytes at least (the kernel reads a 2-byte magic).
func checkOption(opt []byte) error {
	if len(opt) < 2 || len(opt) > craftOptMax || int(opt[1]) != len(opt) {
		return fmt.Errorf("toacraft: option % x: 2 to %d bytes, its second byte its length", opt, craftOptMax)
	}
	if (opt[0] == 253 || opt[0] == 254) && len(opt) < 4 {
		return fmt.Errorf("toacraft: option % x: kinds 253 and 254 need 4 bytes at least", opt)
	}
	if opt[0] <= 1 {
		return fmt.Errorf("toacraft: option % x: kinds 0 (end) and 1 (no-op) are no options", opt)
	}
	return nil
}

// Control returns a net.Dialer Control function that makes the socket
// carry opt, byte for byte, on every segment (SYN, handshake ACK, data).
func (c *Crafter) Control(opt []byte) func(network, address string, rc syscall.RawConn) error {
	return c.control(opt, false)
}

// ControlSYN is Control for the SYN alone (retransmissions included): a
// receiver finds the option only if the listener saved the SYN.
func (c *Crafter) ControlSYN(opt []byte) func(network, address string, rc syscall.RawConn) error {
	return c.control(opt, true)
}

func (c *Crafter) control(opt []byte, synOnly bool) func(network, address string, rc syscall.RawConn) error {
	return func(network, address string, rc syscall.RawConn) error {
		if err := checkOption(opt); err != nil {
			return err
		}
		var v [craftValueSize]byte
		copy(v[:], opt)
		if synOnly {
			v[craftSYNOnlyOff] = 1
		}
		var err error
		cerr := rc.Control(func(fd uintptr) {
			var cookie uint64
			if cookie, err = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE); err == nil {
				err = c.opts.Put(cookie, v)
			}
		})
		return errors.Join(cerr, err)
	}
}

// Written reports whether the option went out on the connection's SYN and
// on a later segment, and forgets the socket.
func (c *Crafter) Written(conn syscall.Conn) (syn, later bool, err error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return false, false, err
	}
	var v [craftValueSize]byte
	var lerr error
	cerr := rc.Control(func(fd uintptr) {
		var cookie uint64
		if cookie, lerr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE); lerr == nil {
			if lerr = c.opts.Lookup(cookie, &v); lerr == nil {
				lerr = c.opts.Delete(cookie)
			}
		}
	})
	if err := errors.Join(cerr, lerr); err != nil {
		return false, false, fmt.Errorf("toacraft: reading the socket's entry: %w", err)
	}
	w := v[craftWrittenOff]
	return w&writtenSYN != 0, w&writtenOther != 0, nil
}

// Close detaches and unloads the program.
func (c *Crafter) Close() error {
	return errors.Join(c.link.Close(), c.prog.Close(), c.opts.Close())
}
