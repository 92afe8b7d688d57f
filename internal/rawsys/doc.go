//go:build linux

// Package rawsys holds the socket system calls of realip's epoll loops
// (realip-edge's relay, realip-agent's unwrap relay), made as raw system
// calls on non-blocking sockets.
//
// A raw call skips telling the Go scheduler about it. Told, the
// scheduler's monitor thread keeps polling every 20µs for processors
// stuck in system calls, and hands a loop's processor to another thread
// when a call (a close, a connect over loopback, which runs the peer's
// side of the handshake too) takes a little long; that cost about a tenth
// of the edge loops' CPU. These calls never wait, as every socket they
// are given is non-blocking, so nothing is lost by not telling. The
// loops' epoll calls are raw too, in package internal/evloop.
//
// Addresses come back with IPv4 unmapped; a link-local IPv6 peer's zone is
// its interface index, as a number.
//
// The package is Linux only (build constraint linux), like its users.
package rawsys
