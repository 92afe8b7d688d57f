// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa_option.c - finding the TOA option among a segment's TCP options.
 *
 * Wire format: kind(1) len(1) port(2) addr(4|16), big-endian. Length 8
 * carries an IPv4 client, length 20 an IPv6 client; the kind must be one of
 * the configured ones (default 200, 253, 254).
 */
#include <linux/tcp.h>
#include <net/tcp.h>

#include "toa.h"

#define TOA_LEN_V4 8
#define TOA_LEN_V6 20

/*
 * toa_parse_options walks len bytes of TCP options. It returns 1 and fills
 * client when it finds an accepted TOA option, 0 when there is none, and
 * -EINVAL when an accepted kind has a length that fits no address or the
 * option list is cut.
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
				return 1;
			}
			if (olen == TOA_LEN_V6) {
				client->family = AF_INET6;
				memcpy(client->addr.s6_addr, opt + 4, 16);
				return 1;
			}
			return -EINVAL;
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
