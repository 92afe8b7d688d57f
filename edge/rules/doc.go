// Package rules reads, checks and writes the forwarding rules of realip-edge.
//
// Rules use the line format of the EdgeOne L4 proxy batch import, so a file
// exported from the EdgeOne console can be used as is, and a file written
// by [Set.Export] can be imported there.
//
// # Rules file
//
// One rule per line:
//
//	PROTO:PORTS ORIGIN ORIGINPORT PERSIST IPMODE [TAG]
//
// for example
//
//	tcp:80;443;8000-8010 og:web 8080 on ppv1 web front
//	udp:5000-5009 2001:db8::10 6000-6009 off spp
//
// Fields are separated by one or more spaces or tabs; spaces and tabs at
// the start and end of a line are ignored. Keywords (protocol, "og:", on/off,
// IP passing mode) are case-insensitive, and so are domain and group names.
// A line whose first non-blank character is '#' is a comment; blank lines are
// ignored. A comment cannot follow a rule on the same line: everything after
// IPMODE is the tag, so a '#' there is part of the tag. Lines may end in
// "\n" or "\r\n", and a UTF-8 byte order mark at the start of the file is
// skipped.
//
//   - PROTO is tcp or udp.
//   - PORTS is a ';'-separated list of ports and ranges "a-b" (a <= b), each
//     port in 1..64999, written in decimal without leading zeros. A range
//     "a-a" is the same as the single port a. The reserved ports (TCP 3943,
//     3944, 6088, 36000, 56000; UDP 4789, 4790, 6080, 61708) cannot be used,
//     and a range that covers one is rejected with a message naming every
//     reserved port it covers. Within one file a forwarding port of a
//     protocol may belong to one rule only, and only once within it.
//   - ORIGIN is an IPv4 address, an IPv6 address (no brackets, no zone), a
//     domain name, or "og:NAME" naming a group of the origin-groups file.
//     Unspecified, multicast and broadcast addresses are rejected. A domain
//     name is ASCII letters, digits and hyphens in dot-separated labels of
//     1..63 characters that neither start nor end with a hyphen, at most 253
//     characters, with no trailing dot; its last label must not be all digits
//     (such a name is read as a malformed IPv4 address). A single label, such
//     as "backend", is allowed.
//   - ORIGINPORT is a port in 1..65535 (the 64999 limit and the reserved
//     ports apply to forwarding ports only) or a range "a-b". A single origin
//     port serves every forwarding port of the rule. A range needs PORTS to be
//     exactly one range (not a list, not a single port) with as many ports;
//     forwarding port Lo+i then goes to origin port Lo+i.
//   - PERSIST is on or off (session persistence).
//   - IPMODE is toa or ppv1 (TCP only), ppv2 (TCP and UDP), spp (UDP only),
//     or off.
//   - TAG is optional: the rest of the line after IPMODE, without its leading
//     and trailing spaces and tabs; spaces and tabs inside it are kept as
//     written, and so is its case. It is 1..50 characters, counted as Unicode
//     code points, must be valid UTF-8 and must not hold control characters
//     other than tab.
//
// A file holds at most 2000 rules. (The EdgeOne import dialog mentions five
// fields; the rule tag, which EdgeOne rules also carry, is accepted as an
// optional sixth.)
//
// # Origin-groups file
//
// One group per line, "NAME HOST [HOST...]", with the same separators,
// comment and blank-line rules as the rules file (again no comment after a
// group on the same line). NAME is 1..50 ASCII letters, digits, '.', '_' or
// '-', starting with a letter or digit; names are case-insensitive, so "Web"
// and "web" are the same group. A HOST is an IPv4 address, an IPv6 address or
// a domain name as for ORIGIN; a group cannot hold another group. Defining a
// group twice, or listing a host twice in one group, is an error. Groups that
// no rule uses are fine.
//
// # Errors
//
// Every line is checked and every bad line is reported, as a [LineError]
// "FILE:LINE: message", all collected in an [ErrorList]. A line gets one
// error: the first problem found, checking the fields from left to right and
// the clash with earlier rules last. A clash is reported on the later rule and
// names the line of the earlier one; a rejected rule claims no ports, so it
// causes no further clashes. The 2001st rule line is reported as one too many
// (that is its only error); the lines after it are still checked but not
// kept. A line longer than 1 MiB is reported and skipped. When the groups
// file has errors, [Load] reports those and does not read the rules file.
//
// # Canonical form
//
// [Set.Export] and [Groups.Export] print one rule or group per line, each
// ending in "\n", in the order of the input, without comments or blank
// lines. Fields are separated by one space; keywords, domain names and group
// names are lower case; ports and ranges keep the order given, a range is
// "a-b" and a one-port range is printed as the single port; IP addresses are
// printed by net/netip, so IPv6 is in RFC 5952 form (an IPv4-mapped address
// stays IPv6, "::ffff:192.0.2.1"); a tag follows IPMODE after one space,
// exactly as parsed. Parsing an export and exporting again gives the same
// text.
//
// A [Set] is not modified after [Parse] returns it, so it may be used by
// several goroutines at once.
package rules
