//go:build linux

package main

// The crafter puts exact TOA option bytes on the wire, for options that
// realip-edge's sender (edge/toasend) never writes: it encodes a client
// from its own family (an IPv4-mapped client goes out as IPv4, length 8),
// while the module must also be shown a length-20 option holding
// ::ffff:a.b.c.d, and kinds and lengths paired as a sender chooses.
//
// It is a small sockops program, assembled here (no compiler, no generated
// files): a socket is crafted when user space stored bytes for its cookie
// (SO_COOKIE, bpf_get_socket_cookie) before connect(). On
// TCP_CONNECT_CB the program asks for the header option callbacks; from
// then on every segment of the connection (SYN, handshake ACK, data)
// reserves room for the option and carries it, so the module finds it on
// whichever segment completes the handshake. Every other socket finds no
// entry and is left alone.

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
// written: 20, else 8), then what went out, set by the program.
const (
	craftOptMax     = 20
	craftWrittenOff = 20
	craftValueSize  = 24

	writtenSYN   = 0x01 // a SYN carried the option
	writtenOther = 0x02 // a segment after the SYN did (the handshake ACK first)
)

// crafter is the loaded and attached program.
type crafter struct {
	opts *ebpf.Map // socket cookie -> value
	prog *ebpf.Program
	link link.Link
}

// openCrafter loads the program and attaches it to the cgroup v2 folder.
func openCrafter(cgroup string) (*crafter, error) {
	_ = rlimit.RemoveMemlock() // kernels before 5.11 charge maps to RLIMIT_MEMLOCK
	opts, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "toacheck_craft", Type: ebpf.Hash, KeySize: 8, ValueSize: craftValueSize, MaxEntries: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("crafter map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "toacheck_craft", Type: ebpf.SockOps, License: "GPL", Instructions: craftProgram(opts.FD()),
	})
	if err != nil {
		opts.Close()
		return nil, fmt.Errorf("crafter program: %w", err)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: ebpf.AttachCGroupSockOps, Program: prog})
	if err != nil {
		prog.Close()
		opts.Close()
		return nil, fmt.Errorf("attaching the crafter to %s: %w", cgroup, err)
	}
	return &crafter{opts: opts, prog: prog, link: l}, nil
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
		// r9 = the option's length as the helpers take it: 20 or 8
		asm.LoadMem(asm.R9, asm.R8, 1, asm.Byte),
		asm.JEq.Imm(asm.R9, craftOptMax, "sized"),
		asm.Mov.Imm(asm.R9, 8),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("sized"),
		asm.JEq.Imm(asm.R7, opWriteHdrOpt, "write"),
		// HDR_OPT_LEN: reserve room
		asm.Mov.Reg(asm.R2, asm.R9),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnReserveHdrOpt.Call(),
		asm.Ja.Label("out"),
		// WRITE_HDR_OPT: store the option, then note what carried it. The
		// helper wants a size the verifier knows: 8 or 20, by branch.
		asm.Mov.Reg(asm.R2, asm.R8).WithSymbol("write"),
		asm.Mov.Imm(asm.R3, 8),
		asm.JNE.Imm(asm.R9, craftOptMax, "store"),
		asm.Mov.Imm(asm.R3, craftOptMax),
		asm.Mov.Imm(asm.R4, 0).WithSymbol("store"),
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

// toaOption encodes a TOA option: kind, length (8: IPv4 client, 20: IPv6,
// an IPv4 client then written IPv4-mapped), port, address.
func toaOption(kind, length uint8, client netip.AddrPort) ([]byte, error) {
	opt := []byte{kind, length, 0, 0}
	binary.BigEndian.PutUint16(opt[2:], client.Port())
	switch a := client.Addr(); {
	case length == 8 && a.Unmap().Is4():
		b := a.Unmap().As4()
		return append(opt, b[:]...), nil
	case length == craftOptMax && a.IsValid():
		b := a.As16()
		return append(opt, b[:]...), nil
	}
	return nil, fmt.Errorf("no TOA option of length %d holds %s", length, client)
}

// Control returns a net.Dialer Control function that makes the socket
// carry opt (as toaOption makes it) on every segment.
func (c *crafter) Control(opt []byte) func(network, address string, rc syscall.RawConn) error {
	return func(network, address string, rc syscall.RawConn) error {
		if (len(opt) != 8 && len(opt) != craftOptMax) || int(opt[1]) != len(opt) {
			return fmt.Errorf("crafter: option % x: length must be 8 or 20 and match its second byte", opt)
		}
		var v [craftValueSize]byte
		copy(v[:], opt)
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
func (c *crafter) Written(conn syscall.Conn) (syn, later bool, err error) {
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
		return false, false, fmt.Errorf("crafter: reading the socket's entry: %w", err)
	}
	w := v[craftWrittenOff]
	return w&writtenSYN != 0, w&writtenOther != 0, nil
}

// Close detaches and unloads the program.
func (c *crafter) Close() error {
	return errors.Join(c.link.Close(), c.prog.Close(), c.opts.Close())
}
