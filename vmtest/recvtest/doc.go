//go:build linux

// Package recvtest starts, asks and stops the TOA receiver that the vmtest
// suites (vmtest/toacheck, vmtest/multihost) run their cases against:
// realip's toa.ko (KindKmod) or the eBPF receiver of package toarecv
// (KindEBPF). Both suites run one table of cases for either receiver.
// Where only the mechanism differs (loading a module or attaching
// programs, module parameters or maps, a netlink lookup or one by socket,
// unloading or unpinning), it is hidden behind Receiver; where the result
// differs, the suite's table has an explicit row with each receiver's
// expected result.
//
// Stopping is checked in two steps: Gone once the receiver is stopped
// (kmod: no module, no /proc/net/toa_stats, no netlink family; ebpf: no
// pins, none of its programs on the cgroup, the programs freed by the
// kernel; the detach completes after an RCU grace period, so Gone waits
// for it, bounded), Freed once nothing holds its memory any more (kmod: the
// module's unload line counts every entry freed; ebpf: the kernel freed
// its maps, and with them the socket storage of connections still open,
// which happens when the last process holding a map, such as a listener
// that looks entries up, closes it).
package recvtest
