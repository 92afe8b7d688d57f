// SPDX-License-Identifier: Apache-2.0
/*
 * toa_server4 PORT - an IPv4 TCP server as in the TOA chapter of EdgeOne's
 * documentation: it listens with a sockaddr_in but hands accept() and
 * getpeername() a sockaddr_in6-sized buffer, so that with toa.ko an IPv6
 * client behind a NAT64 edge comes back as AF_INET6 and an IPv4 client as
 * AF_INET. It also asks getpeername() with a buffer that only fits a
 * sockaddr_in ("peer4"): there an IPv6 client cannot be returned and the
 * edge's address is left.
 *
 * Per connection it writes
 *   accept=ADDR peer=ADDR peer4=ADDR
 * (see common.h for ADDR) to the client and to stdout, then closes.
 */
#include "common.h"

int main(int argc, char **argv)
{
	int port = port_arg(argc, argv);
	int lfd = listen_on(AF_INET, port);

	printf("toa_server4: listening on 0.0.0.0:%d\n", port);
	for (;;) {
		struct sockaddr_in6 client, peer;
		struct sockaddr_in peer4;
		socklen_t clen = sizeof(client), plen = sizeof(peer), p4len = sizeof(peer4);
		char a[ADDR_TEXT], p[ADDR_TEXT], p4[ADDR_TEXT], line[3 * ADDR_TEXT + 32];
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
		memset(&peer, 0, sizeof(peer));
		if (getpeername(conn, (struct sockaddr *)&peer, &plen) < 0)
			snprintf(p, sizeof(p), "error/%d", errno);
		else
			fmt_addr((struct sockaddr *)&peer, plen, p, sizeof(p));
		memset(&peer4, 0, sizeof(peer4));
		if (getpeername(conn, (struct sockaddr *)&peer4, &p4len) < 0)
			snprintf(p4, sizeof(p4), "error/%d", errno);
		else
			fmt_addr((struct sockaddr *)&peer4, p4len < sizeof(peer4) ? p4len : sizeof(peer4),
				 p4, sizeof(p4));
		snprintf(line, sizeof(line), "accept=%s peer=%s peer4=%s\n", a, p, p4);
		reply(conn, line);
	}
}
