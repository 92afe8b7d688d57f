/* SPDX-License-Identifier: Apache-2.0 */
/*
 * common.h - shared by the two origin servers of the multi-host TOA suite
 * (vmtest/multihost). Each server answers every connection with one line
 * describing the addresses accept() and getpeername() gave it, then closes
 * it; the same line goes to stdout.
 *
 * An address is written as FAMILY/ADDRPORT: "inet/192.0.2.10:4000",
 * "inet6/[2001:db8::10]:4000" (v4-mapped: "inet6/[::ffff:192.0.2.10]:4000").
 */
#ifndef CSAMPLES_COMMON_H
#define CSAMPLES_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ADDR_TEXT 80

/* fmt_addr writes sa (of length len, as the kernel reported it) to out. */
static void fmt_addr(const struct sockaddr *sa, socklen_t len, char *out, size_t size)
{
	char ip[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(out, size, "inet/%s:%u", ip, ntohs(sin->sin_port));
	} else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		snprintf(out, size, "inet6/[%s]:%u", ip, ntohs(sin6->sin6_port));
	} else {
		snprintf(out, size, "family%u/len%u", sa->sa_family, (unsigned int)len);
	}
}

/* listen_on opens a listening socket of family on port, or exits. */
static int listen_on(int family, int port)
{
	int one = 1, zero = 0, fd;

	fd = socket(family, SOCK_STREAM, 0);
	if (fd < 0) {
		perror("socket");
		exit(1);
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET) {
		struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };

		sin.sin_addr.s_addr = htonl(INADDR_ANY);
		if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
			perror("bind");
			exit(1);
		}
	} else {
		struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(port) };

		/* Dual stack whatever net.ipv6.bindv6only says. */
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
		sin6.sin6_addr = in6addr_any;
		if (bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) < 0) {
			perror("bind");
			exit(1);
		}
	}
	if (listen(fd, 128) < 0) {
		perror("listen");
		exit(1);
	}
	return fd;
}

/* reply sends line to the connection and to stdout, then closes it. */
static void reply(int conn, const char *line)
{
	size_t off = 0, len = strlen(line);

	while (off < len) {
		ssize_t n = write(conn, line + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	fputs(line, stdout);
	close(conn);
}

static int port_arg(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 0;

	if (port <= 0 || port > 65535) {
		fprintf(stderr, "usage: %s PORT\n", argv[0]);
		exit(2);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	return port;
}

#endif
