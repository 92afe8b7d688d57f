/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * toa.h - shared definitions of the TOA module: the client address a TCP
 * Option Address carries, the per-socket entries, the configuration and the
 * counters.
 */
#ifndef REALIP_TOA_H
#define REALIP_TOA_H

#include <linux/in6.h>
#include <linux/percpu.h>
#include <linux/rcupdate.h>
#include <linux/skbuff.h>
#include <net/sock.h>

#include "compat.h"

#ifndef TOA_VERSION /* set by Kbuild from TOA_VERSION= (DKMS: the package version) */
#define TOA_VERSION "0.1.0"
#endif

/* An address and port; IPv4 is kept IPv4-mapped, family tells which. */
struct toa_addr {
	struct in6_addr addr;
	__be16 port;
	u8 family; /* AF_INET or AF_INET6 */
};

/* What the module knows about one connection that carried TOA. */
struct toa_entry {
	struct hlist_node node;    /* in the table by socket */
	struct hlist_node by_addr; /* in the table by (net, local, client) */
	const struct sock *sk;
	const struct net *net;  /* sk's namespace: compared, never dereferenced */
	struct toa_addr client; /* from the option */
	struct toa_addr proxy;  /* the packet's source: the edge */
	struct toa_addr local;  /* the packet's destination */
	struct rcu_head rcu;
};

/*
 * Counters, one per CPU. The first eight rows of /proc/net/toa_stats are
 * the traditional ones, in the traditional order; new ones follow.
 */
enum toa_counter {
	TOA_SYN_RECV_SOCK_TOA,
	TOA_SYN_RECV_SOCK_NO_TOA,
	TOA_GETNAME_TOA_OK,
	TOA_GETNAME_TOA_MISMATCH,
	TOA_GETNAME_TOA_BYPASS,
	TOA_GETNAME_TOA_EMPTY,
	TOA_IP6_ADDRESS_ALLOC,
	TOA_IP6_ADDRESS_FREE,
	TOA_SYN_RECV_SOCK_UNTRUSTED,
	TOA_SYN_RECV_SOCK_BAD_OPTION,
	TOA_SYN_RECV_SOCK_FROM_SYN,
	TOA_ALLOC_FAILED,
	TOA_PROBE_MISSED,
	TOA_LISTENERS_TAKEN_OVER,
	TOA_NR_COUNTERS,
};

extern const char *const toa_counter_names[TOA_NR_COUNTERS];

struct toa_stats {
	u64 v[TOA_NR_COUNTERS];
};

DECLARE_PER_CPU(struct toa_stats, toa_stats);

static inline void toa_count(enum toa_counter c)
{
	this_cpu_inc(toa_stats.v[c]);
}

u64 toa_counter_sum(enum toa_counter c);

/* A trusted source prefix. */
struct toa_prefix {
	struct in6_addr addr; /* IPv4 mapped */
	u8 bits;              /* of the 128-bit form */
};

#define TOA_MAX_PREFIXES 256
#define TOA_MAX_CONFIG_STR 8192

/* The configuration, replaced as a whole under RCU. */
struct toa_config {
	struct rcu_head rcu;
	DECLARE_BITMAP(kinds, 256); /* accepted option kinds */
	unsigned int nprefixes;     /* 0: trust every source (legacy) */
	struct toa_prefix prefixes[];
};

/* toa_config.c */
int toa_config_init(const char *trusted, const char *kinds);
void toa_config_exit(void);
struct toa_config *toa_config_parse(const char *trusted, const char *kinds);
int toa_config_swap(struct toa_config *cfg);
const struct toa_config *toa_config_get(void); /* under rcu_read_lock */
bool toa_config_trusts(const struct toa_config *cfg, const struct in6_addr *src);
int toa_config_format_trusted(const struct toa_config *cfg, char *buf, size_t size);
int toa_config_format_kinds(const struct toa_config *cfg, char *buf, size_t size);

/* toa_option.c */
int toa_parse_options(const u8 *opt, int len, const struct toa_config *cfg,
		      struct toa_addr *client);
int toa_parse_skb(const struct sk_buff *skb, const struct toa_config *cfg,
		  struct toa_addr *client);

/* toa_table.c */
int toa_table_init(void);
void toa_table_exit(void);
int toa_table_insert(const struct sock *sk, const struct toa_addr *client,
		     const struct toa_addr *proxy, const struct toa_addr *local);
bool toa_table_lookup(const struct sock *sk, struct toa_addr *client, struct toa_addr *proxy);
bool toa_table_find(const struct net *net, const struct toa_addr *local,
		    const struct toa_addr *client, struct toa_entry *out);
void toa_table_remove(const struct sock *sk);
typedef int (*toa_table_visit_fn)(const struct toa_entry *e, void *arg);
int toa_table_walk(const struct net *net, long *pos, toa_table_visit_fn fn, void *arg);
long toa_table_count(void);

/* toa_hooks.c */
int toa_hooks_init(void);
void toa_hooks_exit(void);
unsigned long toa_hooks_missed(void);

/* toa_getname.c */
bool toa_getname_answer(struct socket *sock, struct sockaddr *uaddr, int peer, int *len);

/* toa_ops.c */
int toa_ops_init(void);
void toa_ops_free(void);
void toa_ops_exit(void);
void toa_ops_listening(struct socket *sock);
void toa_ops_adopt_listener(const struct sock *listener);
int toa_ops_before_ulp(struct sock *sk);
void toa_ops_ulp_failed(struct sock *sk, int i);
void toa_ops_mptcp_accepted(struct socket *sock, struct socket *newsock);
bool toa_ops_have_mptcp(void);
void toa_ops_drop_mptcp(void);

/* toa_proc.c */
int toa_proc_init(void);
void toa_proc_exit(void);

/* toa_netlink.c */
int toa_netlink_init(void);
void toa_netlink_exit(void);

#endif /* REALIP_TOA_H */
