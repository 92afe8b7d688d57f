//go:build linux

// Package evloop is the core of realip's epoll loops (realip-edge's TCP
// and UDP engines in package edge, the agent's unwrap relay of TCP):
// an epoll set that a goroutine waits on through Go's poller, commands
// other goroutines run in the loop (Call, Post) through an eventfd
// wake-up, tokens naming what each event is about, a clock read after
// each wait, and a sweep once a period.
//
// A Loop knows nothing of sockets or connections: its Handler gets the
// ready events (Handler.Events, a batch at a time, in the order epoll
// returned them, the loop's own wake-ups taken out) and the sweeps
// (Handler.Sweep). Everything a Loop and its Handler do runs in the loop's
// goroutine, Run's, except Call and Post.
//
// The package is Linux only (build constraint linux), like its users.
package evloop
