//go:build linux

// Package origin picks the origin address for each TCP connection and each
// new UDP flow of a realip-edge rule.
//
// A [Pool] holds the hosts of one rule: an IP address, a domain name, or
// the hosts of an origin group (expanded by the caller). [Pool.Candidates]
// returns the addresses to try for a client, best first; the forwarder
// tries them in turn and reports what it sees with [Pool.MarkDown] and
// [Pool.MarkUp].
//
// # Addresses
//
// Domain names are resolved for A and AAAA records (network "ip") by
// [Pool.Start], which returns after the first resolution, and again every
// ResolveEvery. Each name is resolved once per round even if several hosts
// name it (repeated hosts are used once). A good answer replaces the name's
// addresses: addresses that left DNS are dropped with their health, new
// ones start healthy. A failed answer, or one without a usable address,
// keeps the last good one and is logged (warning "origin resolve failed");
// a name that has never resolved contributes no address. IPv4-mapped IPv6
// addresses, from DNS or written as hosts, are used as IPv4; unspecified
// and multicast answers are ignored. An address given by several hosts is
// one address with one health.
//
// # Health
//
// With [Check].TCPPort set, every address is checked by a TCP connect to
// that port, all at once, first when Start returns, then every CheckEvery,
// each with CheckTimeout. DownAfter failed checks in a row mark an address
// down, UpAfter good checks in a row mark it up again. A passive failure
// ([Pool.MarkDown]) marks it down at once; it then needs UpAfter good
// checks, or a passive success ([Pool.MarkUp]), which marks it up at once:
// a connection that worked is proof enough. Without an active check (UDP
// rules), only MarkDown and MarkUp change health, and a passive down mark
// is lifted RetryAfter after the last passive failure, so that an origin
// that was unreachable for a moment gets traffic again. Transitions are
// logged at info level as "origin down" and "origin up" with the host,
// the address, the error and what saw it (check, passive, retry).
//
// # Choice
//
// Candidates lists the healthy addresses first and then the unhealthy ones,
// so that a group that is entirely down is still tried rather than
// refused. It is empty only while no host has an address; the forwarder
// then refuses the connection.
//
// With persistence on, each part is ordered by rendezvous (highest random
// weight) hashing: every address gets a weight from the client IP and its
// own IP, and higher weights come first. A client therefore keeps its
// origin while that origin is healthy, moves to its next one while it is
// down, and comes back after; adding or removing an address only moves the
// clients whose first choice it becomes or was. The weight is the murmur3
// 64-bit finalizer of the xor of the FNV-1a 64 hashes of the two addresses
// in their 16-byte form (an IPv4 client and its IPv4-mapped form are the
// same client). It uses no random seed, so the same client reaches the same
// origin across restarts and on every edge with the same hosts; it is
// pinned by a test and must not change.
//
// With persistence off, the healthy addresses take turns at the front
// (round robin over a counter per pool), followed by the rest of them and
// then the unhealthy ones, rotated the same way.
//
// Candidates takes no lock and does no I/O: it reads an immutable snapshot
// of the addresses and their health, published whenever either changes,
// and allocates only its result ([Pool.AppendCandidates] reuses a buffer).
// Checks and resolutions run without holding the pool's lock.
//
// The package is Linux only (build constraint linux), as the edge is.
package origin
