// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * toa.bpf.c - sockops program that writes a TOA option (the client's
 * address) into the handshake of TCP connections realip-edge opens to an
 * origin.
 *
 * Option: kind(1) len(1) port(2) addr(4|16), big-endian. An IPv4 client
 * gets kind_v4 with len 8, an IPv6 client kind_v6 with len 20.
 *
 * Only sockets that user space tagged are touched: before connect() it
 * stores a struct toa_client for the socket in the toa_clients socket
 * storage map (key: the socket's fd). Every other socket in the cgroup,
 * including sockets another sockops program asked header callbacks for,
 * finds no storage and is left alone.
 *
 *   TCP_CONNECT_CB     tagged socket: ask for the header option callbacks
 *   HDR_OPT_LEN_CB     reserve 8 or 20 bytes on the SYN, on the first
 *                      non-SYN segment (the ACK that completes the
 *                      handshake) and on the first segment with payload
 *   WRITE_HDR_OPT_CB   write it there (SYN retransmissions too), then stop
 *                      the callbacks
 *
 * Why the first data segment too: the receiver reads the option from the
 * segment that completes its handshake, and that is not always the ACK.
 * When the ACK and the first data segment reach the origin on different
 * CPUs (veth, loopback, reordering on the path), the data segment can
 * complete the handshake first; it must carry the option as well. Pure
 * ACKs sent in between (a server that talks first) carry nothing.
 *
 * Needs Linux 5.10+ (BPF TCP header options, skops->sk, socket storage
 * from sockops). Regenerate the Go bindings with `go generate` (doc.go).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define TCPHDR_SYN 0x02

#define TOA_LEN_V4 8
#define TOA_LEN_V6 20

/* toa_client.flags, set by this program (user space stores 0) */
#define TOA_DONE        0x01 /* the first data segment went out (or found no room): no more options */
#define TOA_SYN_WRITTEN 0x02 /* a SYN carried the option */
#define TOA_ACK_WRITTEN 0x04 /* the handshake ACK carried the option */
#define TOA_DATA_WRITTEN 0x08 /* the first data segment carried it */
#define TOA_DATA_NEXT   0x10 /* the segment being written has payload */

/* Per-socket state, filled by user space before connect(). */
struct toa_client {
	__u8 family;   /* 4 or 6: the family of the client address */
	__u8 flags;    /* TOA_* below */
	__u8 port[2];  /* client port, big-endian */
	__u8 addr[16]; /* IPv4 in the first 4 bytes, or IPv6 */
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct toa_client);
} toa_clients SEC(".maps");

/* Counters, indexed by enum toa_stat, one slot per CPU. */
enum toa_stat {
	TOA_STAT_ARMED,    /* tagged sockets that connected */
	TOA_STAT_SYN,      /* SYNs written with the option (retransmits too) */
	TOA_STAT_ACK,      /* handshake ACKs written with the option */
	TOA_STAT_NO_SPACE, /* segments with no room left for the option */
	TOA_STAT_FAILED,   /* store or callback-flag failures */
	TOA_STAT_DATA,     /* first data segments written with the option */
	TOA_STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TOA_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} toa_stats SEC(".maps");

/* Option kinds, rewritten by the loader. */
volatile const __u8 kind_v4 = 200;
volatile const __u8 kind_v6 = 253;

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&toa_stats, &stat);

	if (v)
		*v += 1; /* per-CPU slot: no other writer */
}

/*
 * stop_callbacks turns the header option callbacks off for the socket, so
 * its later segments cost nothing. Other callback flags stay as they are.
 */
static __always_inline void stop_callbacks(struct bpf_sock_ops *skops)
{
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags &
					 ~BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
}

/* write_option stores the option into the outgoing segment. */
static __always_inline long write_option(struct bpf_sock_ops *skops,
					 const struct toa_client *c)
{
	__u8 opt[TOA_LEN_V6];

	opt[2] = c->port[0];
	opt[3] = c->port[1];
	__builtin_memcpy(&opt[4], c->addr, sizeof(c->addr));
	if (c->family == 6) {
		opt[0] = kind_v6;
		opt[1] = TOA_LEN_V6;
		return bpf_store_hdr_opt(skops, opt, TOA_LEN_V6, 0);
	}
	opt[0] = kind_v4;
	opt[1] = TOA_LEN_V4;
	return bpf_store_hdr_opt(skops, opt, TOA_LEN_V4, 0);
}

SEC("sockops")
int toa_sockops(struct bpf_sock_ops *skops)
{
	struct toa_client *c;
	struct bpf_sock *sk;
	__u32 op = skops->op;
	int syn;

	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB &&
	    op != BPF_SOCK_OPS_HDR_OPT_LEN_CB &&
	    op != BPF_SOCK_OPS_WRITE_HDR_OPT_CB)
		return 1;

	sk = skops->sk; /* NULL unless a full socket */
	if (!sk)
		return 1;
	c = bpf_sk_storage_get(&toa_clients, sk, 0, 0);
	if (!c || (c->family != 4 && c->family != 6))
		return 1; /* not ours: leave it alone */

	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		c->flags = 0;
		if (bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						     BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG)) {
			count(TOA_STAT_FAILED);
			break;
		}
		count(TOA_STAT_ARMED);
		break;

	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		/*
		 * Called for each outgoing segment (skb_len is its payload),
		 * and with no segment (skb_tcp_flags 0) when the kernel works
		 * out the current MSS. Reserving there too keeps the first
		 * data segment within the MSS.
		 */
		syn = skops->skb_tcp_flags & TCPHDR_SYN;
		if (!syn && (c->flags & TOA_DONE))
			break;
		if (skops->skb_tcp_flags && !syn && (c->flags & TOA_ACK_WRITTEN) &&
		    !skops->skb_len)
			break; /* a pure ACK after the handshake ACK */
		if (!bpf_reserve_hdr_opt(skops, c->family == 6 ? TOA_LEN_V6 : TOA_LEN_V4, 0)) {
			/* tell WRITE_HDR_OPT_CB what it writes on */
			if (skops->skb_tcp_flags && !syn && skops->skb_len)
				c->flags |= TOA_DATA_NEXT;
			else if (skops->skb_tcp_flags)
				c->flags &= ~TOA_DATA_NEXT;
			break;
		}
		if (!skops->skb_tcp_flags)
			break;
		count(TOA_STAT_NO_SPACE);
		if (syn)
			break; /* a retransmitted SYN may still have room */
		/*
		 * No room on the handshake ACK or the first data segment:
		 * give up rather than put the option on a later segment.
		 */
		c->flags |= TOA_DONE;
		stop_callbacks(skops);
		break;

	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
		syn = skops->skb_tcp_flags & TCPHDR_SYN;
		if (!syn && (c->flags & TOA_DONE))
			break;
		if (write_option(skops, c)) {
			count(TOA_STAT_FAILED);
		} else if (syn) {
			c->flags |= TOA_SYN_WRITTEN;
			count(TOA_STAT_SYN);
		} else {
			if (!(c->flags & TOA_ACK_WRITTEN)) {
				c->flags |= TOA_ACK_WRITTEN;
				count(TOA_STAT_ACK);
			}
			if (c->flags & TOA_DATA_NEXT) {
				c->flags |= TOA_DATA_WRITTEN;
				count(TOA_STAT_DATA);
			}
		}
		if (syn || !(c->flags & TOA_DATA_NEXT))
			break;
		/* The first data segment went out: nothing after it carries it. */
		c->flags |= TOA_DONE;
		stop_callbacks(skops);
		break;
	}
	return 1;
}

char _license[] SEC("license") = "Dual BSD/GPL";
