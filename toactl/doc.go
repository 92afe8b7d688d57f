// Package toactl talks to realip's TOA kernel module (kmod/, toa.ko) over
// its generic netlink family "realip_toa": read and set the configuration
// (trusted source prefixes, accepted option kinds), read the counters, and
// list or look up the live entries (local, proxy, client) of the
// connections that carried a TOA option.
//
// The wire contract is kmod/toa_uapi.h; the constants here mirror it.
// realip-agent configures the module with it, and package listener uses
// Lookup to report the edge (proxy) address of a connection the module
// rewrote.
package toactl
