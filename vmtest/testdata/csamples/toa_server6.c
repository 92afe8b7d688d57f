// SPDX-License-Identifier: Apache-2.0
/*
 * toa_server6 PORT - an IPv6 TCP server as in the TOA chapter of EdgeOne's
 * documentation: it listens on [::] (IPv4 too) with sockaddr_in6 buffers
 * everywhere, so with toa.ko an IPv4 client comes back v4-mapped
 * (::ffff:a.b.c.d), which it also unmaps by hand into a sockaddr_in the way
 * the documentation shows ("v4").
 *
 * Per connection it writes
 *   accept=ADDR peer=ADDR v4=ADDR|-
 * (see common.h for ADDR) to the client and to stdout, then closes.
 */
#include "common.h"

int main(int argc, char **argv)
{
	int port = port_arg(argc, argv);
	int lfd = listen_on(AF_INET6, port);

	printf("toa_server6: listening on [::]:%d\n", port);
	for (;;) {
		struct sockaddr_in6 client, peer;
		socklen_t clen = sizeof(client), plen = sizeof(peer);
		char a[ADDR_TEXT], p[ADDR_TEXT], v4[ADDR_TEXT] = "-", line[3 * ADDR_TEXT + 32];
		int conn;

		memset(&client, 0, sizeof(client));
		conn = accept(lfd, (struct sockaddr *)&client, &clen);
		if (conn < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("accept");
			return 1;
		}
		fmt_addr((struct sockaddr *)&client, clen, a, sizeof(a));
		if (client.sin6_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&client.sin6_addr)) {
			struct sockaddr_in sin;

			memset(&sin, 0, sizeof(sin));
			sin.sin_family = AF_INET;
			sin.sin_port = client.sin6_port;
			memcpy(&sin.sin_addr, &client.sin6_addr.s6_addr[12], sizeof(sin.sin_addr));
			fmt_addr((struct sockaddr *)&sin, sizeof(sin), v4, sizeof(v4));
		}
		memset(&peer, 0, sizeof(peer));
		if (getpeername(conn, (struct sockaddr *)&peer, &plen) < 0)
			snprintf(p, sizeof(p), "error/%d", errno);
		else
			fmt_addr((struct sockaddr *)&peer, plen, p, sizeof(p));
		snprintf(line, sizeof(line), "accept=%s peer=%s v4=%s\n", a, p, v4);
		reply(conn, line);
	}
}
