// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa_table.c - the entries of the connections that carried TOA, keyed by
 * their socket, and a second time by (namespace, local address, client) for
 * the netlink GET_ENTRY of a user-space server that only knows those.
 * Readers (getname, the destroy hook, netlink) look up under RCU; writers
 * take the socket's bucket lock, then the address bucket's lock. An entry
 * lives from the handshake until the socket is destroyed, or until the
 * module is unloaded.
 *
 * The two tables' locks are two lock classes for lockdep: with one class
 * (both initialised by the same spin_lock_init), taking an address bucket's
 * lock under a socket bucket's looked like taking a lock it already held,
 * and a lockdep kernel reported "possible recursive locking" at the first
 * insert and switched itself off (the sanitizer kernel of vmtest/toa.sh,
 * alias debug, caught it). The order is always socket bucket, then address
 * bucket, never the other way; with two classes lockdep checks exactly that.
 */
#include <linux/hash.h>
#include <linux/jhash.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <net/ipv6.h>
#include <net/net_namespace.h>
#include <net/sock.h>

#include "toa.h"

#define TOA_HASH_BITS 12
#define TOA_BUCKETS (1U << TOA_HASH_BITS)

struct toa_bucket {
	spinlock_t lock;
	struct hlist_head head;
};

static struct toa_bucket *toa_buckets;      /* by socket */
static struct toa_bucket *toa_addr_buckets; /* by (net, local, client) */
static struct lock_class_key toa_bucket_key, toa_addr_bucket_key;
static atomic_long_t toa_entries = ATOMIC_LONG_INIT(0);

static struct toa_bucket *bucket_of(const struct sock *sk)
{
	return &toa_buckets[hash_ptr(sk, TOA_HASH_BITS)];
}

static struct toa_bucket *addr_bucket_of(const struct net *net, const struct toa_addr *local,
					 const struct toa_addr *client)
{
	u32 h = jhash2(local->addr.s6_addr32, 4, (__force u32)local->port);

	h = jhash2(client->addr.s6_addr32, 4, h ^ (__force u32)client->port);
	return &toa_addr_buckets[hash_32(h ^ hash_ptr(net, 32), TOA_HASH_BITS)];
}

static bool same_addr(const struct toa_addr *a, const struct toa_addr *b)
{
	return a->port == b->port && ipv6_addr_equal(&a->addr, &b->addr);
}

/* buckets_alloc makes a table whose locks are of the lock class key. */
static struct toa_bucket *buckets_alloc(struct lock_class_key *key, const char *name)
{
	struct toa_bucket *b;
	unsigned int i;

	b = kvcalloc(TOA_BUCKETS, sizeof(*b), GFP_KERNEL);
	if (!b)
		return NULL;
	for (i = 0; i < TOA_BUCKETS; i++) {
		spin_lock_init(&b[i].lock);
		lockdep_set_class_and_name(&b[i].lock, key, name);
		INIT_HLIST_HEAD(&b[i].head);
	}
	return b;
}

int toa_table_init(void)
{
	toa_buckets = buckets_alloc(&toa_bucket_key, "toa_bucket");
	toa_addr_buckets = buckets_alloc(&toa_addr_bucket_key, "toa_addr_bucket");
	if (!toa_buckets || !toa_addr_buckets) {
		kvfree(toa_buckets);
		kvfree(toa_addr_buckets);
		return -ENOMEM;
	}
	return 0;
}

static void free_entry(struct rcu_head *head)
{
	kfree(container_of(head, struct toa_entry, rcu));
}

/* drop_entry unlinks e; the caller holds its socket bucket's lock. */
static void drop_entry(struct toa_entry *e)
{
	struct toa_bucket *ab = addr_bucket_of(e->net, &e->local, &e->client);

	hlist_del_rcu(&e->node);
	spin_lock(&ab->lock);
	hlist_del_rcu(&e->by_addr);
	spin_unlock(&ab->lock);
	atomic_long_dec(&toa_entries);
	toa_count(TOA_IP6_ADDRESS_FREE);
	call_rcu(&e->rcu, free_entry);
}

/* toa_table_exit frees every entry; the hooks are gone by then. */
void toa_table_exit(void)
{
	struct hlist_node *tmp;
	struct toa_entry *e;
	unsigned int i;

	for (i = 0; i < TOA_BUCKETS; i++) {
		spin_lock_bh(&toa_buckets[i].lock);
		hlist_for_each_entry_safe(e, tmp, &toa_buckets[i].head, node)
			drop_entry(e);
		spin_unlock_bh(&toa_buckets[i].lock);
	}
	rcu_barrier(); /* every free_entry callback has run */
	kvfree(toa_buckets);
	kvfree(toa_addr_buckets);
}

/*
 * toa_table_insert stores the addresses of sk, replacing an entry a socket
 * at the same address left behind. Called from softirq (the handshake).
 */
int toa_table_insert(const struct sock *sk, const struct toa_addr *client,
		     const struct toa_addr *proxy, const struct toa_addr *local)
{
	struct toa_bucket *b = bucket_of(sk), *ab;
	struct toa_entry *e, *old;
	unsigned long flags;

	e = kmalloc(sizeof(*e), GFP_ATOMIC);
	if (!e) {
		toa_count(TOA_ALLOC_FAILED);
		return -ENOMEM;
	}
	e->sk = sk;
	e->net = sock_net(sk);
	e->client = *client;
	e->proxy = *proxy;
	e->local = *local;
	toa_count(TOA_IP6_ADDRESS_ALLOC);
	spin_lock_irqsave(&b->lock, flags);
	hlist_for_each_entry(old, &b->head, node) {
		if (old->sk == sk) {
			drop_entry(old);
			break;
		}
	}
	hlist_add_head_rcu(&e->node, &b->head);
	ab = addr_bucket_of(e->net, &e->local, &e->client);
	spin_lock(&ab->lock);
	hlist_add_head_rcu(&e->by_addr, &ab->head);
	spin_unlock(&ab->lock);
	atomic_long_inc(&toa_entries);
	spin_unlock_irqrestore(&b->lock, flags);
	return 0;
}

/* toa_table_lookup copies the client and proxy of sk's entry, if it has one. */
bool toa_table_lookup(const struct sock *sk, struct toa_addr *client, struct toa_addr *proxy)
{
	struct toa_entry *e;
	bool found = false;

	if (!atomic_long_read(&toa_entries))
		return false;
	rcu_read_lock();
	hlist_for_each_entry_rcu(e, &bucket_of(sk)->head, node) {
		if (e->sk == sk) {
			*client = e->client;
			*proxy = e->proxy;
			found = true;
			break;
		}
	}
	rcu_read_unlock();
	return found;
}

/*
 * toa_table_find copies into out the entry of the connection in net whose
 * local address is local and whose client (as getpeername() reports it) is
 * client.
 */
bool toa_table_find(const struct net *net, const struct toa_addr *local,
		    const struct toa_addr *client, struct toa_entry *out)
{
	struct toa_entry *e;
	bool found = false;

	if (!atomic_long_read(&toa_entries))
		return false;
	rcu_read_lock();
	hlist_for_each_entry_rcu(e, &addr_bucket_of(net, local, client)->head, by_addr) {
		if (e->net == net && same_addr(&e->local, local) && same_addr(&e->client, client)) {
			*out = *e;
			found = true;
			break;
		}
	}
	rcu_read_unlock();
	return found;
}

/* toa_table_remove forgets sk; called for every TCP socket destroyed. */
void toa_table_remove(const struct sock *sk)
{
	struct toa_bucket *b;
	struct toa_entry *e;
	unsigned long flags;

	if (!atomic_long_read(&toa_entries))
		return;
	b = bucket_of(sk);
	spin_lock_irqsave(&b->lock, flags);
	hlist_for_each_entry(e, &b->head, node) {
		if (e->sk == sk) {
			drop_entry(e);
			break;
		}
	}
	spin_unlock_irqrestore(&b->lock, flags);
}

long toa_table_count(void)
{
	return atomic_long_read(&toa_entries);
}

/*
 * toa_table_walk calls fn for the entries of net from position *pos on (a
 * running index over all buckets) until fn returns non-zero, which it
 * returns with *pos at the entry that stopped it; 0 when every entry was
 * visited. Used by the netlink dump, which resumes where its last message
 * filled up.
 */
int toa_table_walk(const struct net *net, long *pos, toa_table_visit_fn fn, void *arg)
{
	struct toa_entry *e;
	long idx = 0;
	unsigned int i;
	int ret = 0;

	rcu_read_lock();
	for (i = 0; i < TOA_BUCKETS && !ret; i++) {
		hlist_for_each_entry_rcu(e, &toa_buckets[i].head, node) {
			if (e->net != net)
				continue;
			if (idx++ < *pos)
				continue;
			ret = fn(e, arg);
			if (ret) {
				*pos = idx - 1;
				break;
			}
		}
	}
	rcu_read_unlock();
	if (!ret)
		*pos = idx;
	return ret;
}
