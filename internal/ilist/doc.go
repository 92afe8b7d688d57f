// Package ilist is an intrusive doubly linked list: an item carries its
// own links (a Links field, which its Links method returns), so that adding
// an item, moving it and removing it from anywhere in the list cost no
// allocation and O(1). realip's epoll loops keep their connections in one
// (edge/tcploop_linux.go, agent/unwrap/tcploop.go: every connection, for
// the sweeps and the close), and the unwrap relay its UDP flows in order
// of activity (agent/unwrap/flows.go: the least recently active at the
// back, to evict and expire).
//
// A List is not safe for concurrent use; its users hold their own lock or
// use it from one goroutine. An item is in at most one List at a time.
package ilist
