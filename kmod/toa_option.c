// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa_option.c - finding the TOA option among a segment's TCP options.
 *
 * Wire format: kind(1) len(1) port(2) addr(4|16), big-endian. Length 8
 * carries an IPv4 client, length 20 an IPv6 client; the kind must be one of
 * the configured ones (default 200, 253, 254).
 *
 * An option whose client no real TCP peer can have is as bad as a cut one:
 * port 0; an IPv4 client 0.0.0.0, 255.255.255.255 or in 224.0.0.0/4; an
 * IPv6 client ::, or in ff00::/8. An IPv4-mapped IPv6 client
 * (::ffff:a.b.c.d) is judged as the IPv4 client a.b.c.d. Anything else,
 * loopback and private ranges included, is taken as sent. The module-free
 * eBPF receiver must apply the same rule: change both or neither.
 */
#include <linux/in.h>
#include <linux/tcp.h>
#include <net/ipv6.h>
#include <net/tcp.h>

#include "toa.h"

#define TOA_LEN_V4 8
#define TOA_LEN_V6 20

/* client_usable applies the rule above; an IPv4 client is held v4-mapped. */
static bool client_usable(const struct toa_addr *client)
{
	const struct in6_addr *a = &client->addr;
	__be32 v4;

	if (!client->port)
		return false;
	if (ipv6_addr_v4mapped(a)) {
		v4 = a->s6_addr32[3];
		return v4 != htonl(INADDR_ANY) && !ipv4_is_multicast(v4) &&
		       !ipv4_is_lbcast(v4);
	}
	return !ipv6_addr_any(a) && !ipv6_addr_is_multicast(a);
}

/*
 * toa_parse_options walks len bytes of TCP options. It returns 1 and fills
 * client when it finds an accepted TOA option, 0 when there is none, and
 * -EINVAL when an accepted kind has a length that fits no address, carries
 * a client no peer can have (client_usable), or the option list is cut.
 */
int toa_parse_options(const u8 *opt, int len, const struct toa_config *cfg,
		      struct toa_addr *client)
{
	while (len > 0) {
		u8 kind = opt[0], olen;

		if (kind == TCPOPT_EOL)
			return 0;
		if (kind == TCPOPT_NOP) {
			opt++;
			len--;
			continue;
		}
		if (len < 2)
			return -EINVAL;
		olen = opt[1];
		if (olen < 2 || olen > len)
			return -EINVAL;
		if (test_bit(kind, cfg->kinds)) {
			memset(client, 0, sizeof(*client));
			memcpy(&client->port, opt + 2, 2);
			if (olen == TOA_LEN_V4) {
				client->family = AF_INET;
				client->addr.s6_addr16[5] = htons(0xffff);
				memcpy(&client->addr.s6_addr32[3], opt + 4, 4);
			} else if (olen == TOA_LEN_V6) {
				client->family = AF_INET6;
				memcpy(client->addr.s6_addr, opt + 4, 16);
			} else {
				return -EINVAL;
			}
			return client_usable(client) ? 1 : -EINVAL;
		}
		opt += olen;
		len -= olen;
	}
	return 0;
}

/* toa_parse_skb parses the options of the TCP segment in skb. */
int toa_parse_skb(const struct sk_buff *skb, const struct toa_config *cfg,
		  struct toa_addr *client)
{
	const struct tcphdr *th = tcp_hdr(skb);
	int len = th->doff * 4 - (int)sizeof(*th);

	if (len <= 0)
		return 0;
	return toa_parse_options((const u8 *)(th + 1), len, cfg, client);
}
