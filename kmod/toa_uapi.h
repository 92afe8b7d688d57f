/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * toa_uapi.h - the generic netlink interface of toa.ko ("realip_toa",
 * version 1), used by realip-agent. Keep in step with agent/toactl.
 *
 * Commands:
 *   GET_CONFIG   -> TRUSTED, KINDS, VERSION
 *   SET_CONFIG   TRUSTED and/or KINDS (admin only); an attribute left out
 *                keeps its value; a bad value changes nothing (-EINVAL)
 *   GET_STATS    -> STATS (nested STAT {NAME, VALUE} per counter), LIVE
 *   GET_ENTRIES  dump: one message per live entry with LOCAL, PROXY, CLIENT
 *   GET_ENTRY    LOCAL + CLIENT -> LOCAL, PROXY, CLIENT, or -ENOENT
 * Addresses (LOCAL, PROXY, CLIENT) are 18 bytes: the IPv6 address (IPv4
 * mapped) then the port, both in network byte order.
 */
#ifndef REALIP_TOA_UAPI_H
#define REALIP_TOA_UAPI_H

#define TOA_GENL_NAME "realip_toa"
#define TOA_GENL_VERSION 1
#define TOA_ADDR_LEN 18

enum toa_cmd {
	TOA_CMD_UNSPEC,
	TOA_CMD_GET_CONFIG,
	TOA_CMD_SET_CONFIG,
	TOA_CMD_GET_STATS,
	TOA_CMD_GET_ENTRIES,
	TOA_CMD_GET_ENTRY,
	__TOA_CMD_MAX,
};
#define TOA_CMD_MAX (__TOA_CMD_MAX - 1)

enum toa_attr {
	TOA_A_UNSPEC,
	TOA_A_PAD,
	TOA_A_VERSION,    /* string */
	TOA_A_TRUSTED,    /* string: comma-separated prefixes */
	TOA_A_KINDS,      /* string: comma-separated option kinds */
	TOA_A_STATS,      /* nested: TOA_A_STAT... */
	TOA_A_STAT,       /* nested: TOA_A_STAT_NAME, TOA_A_STAT_VALUE */
	TOA_A_STAT_NAME,  /* string */
	TOA_A_STAT_VALUE, /* u64 */
	TOA_A_LIVE,       /* u64: live entries */
	TOA_A_LOCAL,      /* binary, TOA_ADDR_LEN */
	TOA_A_PROXY,      /* binary, TOA_ADDR_LEN */
	TOA_A_CLIENT,     /* binary, TOA_ADDR_LEN */
	__TOA_A_MAX,
};
#define TOA_A_MAX (__TOA_A_MAX - 1)

#endif /* REALIP_TOA_UAPI_H */
