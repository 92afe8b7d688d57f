// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa_getname.c - the module's answer to getpeername() and accept() on the
 * sockets of listeners it took over (toa_ops.c installs it): the client of
 * the socket's entry (toa_table.c), in the socket's address family, or the
 * kernel's own answer when the module has none to give.
 */
#include <linux/compat.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <linux/net.h>
#include <linux/uaccess.h>
#include <asm/syscall.h>
#include <net/inet_sock.h>
#include <net/tcp.h>

#include "toa.h"

/*
 * user_room returns the size of the caller's address buffer when the
 * running system call is getpeername(), accept() or accept4(), else 0.
 */
static int user_room(void)
{
	struct pt_regs *regs = task_pt_regs(current);
	unsigned long args[6];
	int nr, len = 0;

	if (!regs || (current->flags & PF_KTHREAD) || in_compat_syscall())
		return 0;
	nr = syscall_get_nr(current, regs);
	switch (nr) {
	case __NR_getpeername:
#ifdef __NR_accept
	case __NR_accept:
#endif
	case __NR_accept4:
		break;
	default:
		return 0;
	}
	syscall_get_arguments(current, regs, args);
	if (!args[1] || !args[2])
		return 0;
	if (copy_from_user_nofault(&len, (int __user *)args[2], sizeof(len)))
		return 0;
	return len;
}

static int put_sin(struct sockaddr *uaddr, const struct toa_addr *a)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)uaddr;

	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = a->port;
	sin->sin_addr.s_addr = a->addr.s6_addr32[3];
	return sizeof(*sin);
}

static int put_sin6(struct sockaddr *uaddr, const struct toa_addr *a)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)uaddr;

	memset(sin6, 0, sizeof(*sin6));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = a->port;
	sin6->sin6_addr = a->addr; /* IPv4 clients are already mapped */
	return sizeof(*sin6);
}

/*
 * entry_matches checks that an entry still describes sk: its peer must be
 * proxy, where the option came from. It guards against an entry left by a
 * socket whose destruction was missed (a reset racing the handshake) being
 * read for a new socket at the same address.
 */
static bool entry_matches(const struct sock *sk, const struct toa_addr *proxy)
{
	if (sk->sk_dport != proxy->port)
		return false;
	if (proxy->family == AF_INET)
		return sk->sk_daddr == proxy->addr.s6_addr32[3];
#if IS_ENABLED(CONFIG_IPV6)
	return ipv6_addr_equal(&sk->sk_v6_daddr, &proxy->addr);
#else
	return false;
#endif
}

/*
 * peer_connected is the condition under which the kernel's getname answers
 * a peer query (else it says ENOTCONN, and is left to say so).
 */
static bool peer_connected(const struct sock *sk, int peer)
{
	if (!inet_sk(sk)->inet_dport)
		return false;
	return !(((1 << sk->sk_state) & (TCPF_CLOSE | TCPF_SYN_SENT)) && peer == 1);
}

/*
 * toa_getname_answer is the module's getname on the sockets of listeners it
 * took over (toa_ops.c): a peer query on a connection that carried TOA is
 * answered with the client, and *len is what getname returns. False for
 * every other call, which the kernel's getname answers: the module's answer
 * replaces the kernel's whole, so the kernel's is not computed first.
 */
bool toa_getname_answer(struct socket *sock, struct sockaddr *uaddr, int peer, int *len)
{
	struct toa_addr client, proxy;
	struct sock *sk = sock->sk;

	if (!peer || !sk || !peer_connected(sk, peer)) {
		toa_count(TOA_GETNAME_TOA_BYPASS);
		return false;
	}
	if (!toa_table_lookup(sk, &client, &proxy) || !entry_matches(sk, &proxy)) {
		toa_count(TOA_GETNAME_TOA_EMPTY);
		return false;
	}
	if (sk->sk_family == AF_INET6) {
		*len = put_sin6(uaddr, &client);
	} else if (client.family == AF_INET) {
		*len = put_sin(uaddr, &client);
	} else if (user_room() >= (int)sizeof(struct sockaddr_in6)) {
		/* An IPv6 client on an IPv4 socket, and room for it (NAT64). */
		*len = put_sin6(uaddr, &client);
	} else {
		toa_count(TOA_GETNAME_TOA_MISMATCH);
		return false;
	}
	toa_count(TOA_GETNAME_TOA_OK);
	return true;
}
