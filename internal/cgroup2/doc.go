//go:build linux

// Package cgroup2 finds cgroup v2 folders: the mount point of the unified
// hierarchy, the folder of the calling process, and whether a path is a
// cgroup v2 folder at all. realip's eBPF programs (the edge's TOA sender and
// the agent's TOA receiver) attach to such folders.
//
// Errors for a machine without cgroup v2 wrap ErrNoCgroup2, so callers can
// turn them into their own, more specific, advice.
package cgroup2
