//go:build linux

// Package vmtest holds the QEMU test bench for the kernel module: shell
// scripts that fetch Debian kernels, build modules against their headers
// and boot them with a busybox initramfs (see README.md), and a Go test
// that runs the bench's selftest when REALIP_VMTEST names kernels.
package vmtest
