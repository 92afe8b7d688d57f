// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa_netlink.c - the "realip_toa" generic netlink family: configuration,
 * counters and live entries for realip-agent. See toa_uapi.h.
 */
#include <linux/slab.h>
#include <net/genetlink.h>
#include <net/ipv6.h>

#include "toa.h"
#include "toa_uapi.h"

static struct genl_family toa_family;

static const struct nla_policy toa_policy[TOA_A_MAX + 1] = {
	[TOA_A_TRUSTED] = { .type = NLA_NUL_STRING, .len = TOA_MAX_CONFIG_STR - 1 },
	[TOA_A_KINDS] = { .type = NLA_NUL_STRING, .len = TOA_MAX_CONFIG_STR - 1 },
	[TOA_A_LOCAL] = NLA_POLICY_EXACT_LEN(TOA_ADDR_LEN),
	[TOA_A_CLIENT] = NLA_POLICY_EXACT_LEN(TOA_ADDR_LEN),
};

static int put_addr(struct sk_buff *msg, int attr, const struct toa_addr *a)
{
	u8 buf[TOA_ADDR_LEN];

	memcpy(buf, a->addr.s6_addr, 16);
	memcpy(buf + 16, &a->port, 2);
	return nla_put(msg, attr, sizeof(buf), buf);
}

static void get_addr(const struct nlattr *nla, struct toa_addr *a)
{
	const u8 *p = nla_data(nla);

	memset(a, 0, sizeof(*a));
	memcpy(a->addr.s6_addr, p, 16);
	memcpy(&a->port, p + 16, 2);
	a->family = ipv6_addr_v4mapped(&a->addr) ? AF_INET : AF_INET6;
}

static int put_entry(struct sk_buff *msg, const struct toa_entry *e)
{
	if (put_addr(msg, TOA_A_LOCAL, &e->local) ||
	    put_addr(msg, TOA_A_PROXY, &e->proxy) ||
	    put_addr(msg, TOA_A_CLIENT, &e->client))
		return -EMSGSIZE;
	return 0;
}

/* reply sends the message begun by new_reply. */
static struct sk_buff *new_reply(struct genl_info *info, u8 cmd, void **hdr)
{
	struct sk_buff *msg = genlmsg_new(NLMSG_GOODSIZE, GFP_KERNEL);

	if (!msg)
		return NULL;
	*hdr = genlmsg_put_reply(msg, info, &toa_family, 0, cmd);
	if (!*hdr) {
		nlmsg_free(msg);
		return NULL;
	}
	return msg;
}

static int finish_reply(struct sk_buff *msg, void *hdr, struct genl_info *info, int err)
{
	if (err) {
		nlmsg_free(msg);
		return err;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
}

static int toa_get_config(struct sk_buff *skb, struct genl_info *info)
{
	char *trusted, *kinds;
	struct sk_buff *msg;
	void *hdr;
	int err = -ENOMEM;

	trusted = kmalloc(TOA_MAX_CONFIG_STR, GFP_KERNEL);
	kinds = kmalloc(TOA_MAX_CONFIG_STR, GFP_KERNEL);
	msg = new_reply(info, TOA_CMD_GET_CONFIG, &hdr);
	if (trusted && kinds && msg) {
		rcu_read_lock();
		toa_config_format_trusted(toa_config_get(), trusted, TOA_MAX_CONFIG_STR);
		toa_config_format_kinds(toa_config_get(), kinds, TOA_MAX_CONFIG_STR);
		rcu_read_unlock();
		err = 0;
		if (nla_put_string(msg, TOA_A_VERSION, TOA_VERSION) ||
		    nla_put_string(msg, TOA_A_TRUSTED, trusted) ||
		    nla_put_string(msg, TOA_A_KINDS, kinds))
			err = -EMSGSIZE;
		err = finish_reply(msg, hdr, info, err);
		msg = NULL;
	}
	if (msg)
		nlmsg_free(msg);
	kfree(trusted);
	kfree(kinds);
	return err;
}

static int toa_set_config(struct sk_buff *skb, struct genl_info *info)
{
	char *trusted, *kinds;
	struct toa_config *cfg;
	int err = -ENOMEM;

	trusted = kmalloc(TOA_MAX_CONFIG_STR, GFP_KERNEL);
	kinds = kmalloc(TOA_MAX_CONFIG_STR, GFP_KERNEL);
	if (!trusted || !kinds)
		goto out;
	rcu_read_lock();
	toa_config_format_trusted(toa_config_get(), trusted, TOA_MAX_CONFIG_STR);
	toa_config_format_kinds(toa_config_get(), kinds, TOA_MAX_CONFIG_STR);
	rcu_read_unlock();
	if (info->attrs[TOA_A_TRUSTED])
		toa_nla_strscpy(trusted, info->attrs[TOA_A_TRUSTED], TOA_MAX_CONFIG_STR);
	if (info->attrs[TOA_A_KINDS])
		toa_nla_strscpy(kinds, info->attrs[TOA_A_KINDS], TOA_MAX_CONFIG_STR);
	cfg = toa_config_parse(trusted, kinds);
	if (IS_ERR(cfg)) {
		err = PTR_ERR(cfg);
		GENL_SET_ERR_MSG(info, "toa: bad trusted prefixes or kinds");
		goto out;
	}
	err = toa_config_swap(cfg);
	pr_info("configuration set: trusted=\"%s\" kinds=\"%s\"\n", trusted, kinds);
out:
	kfree(trusted);
	kfree(kinds);
	return err;
}

static int put_stats(struct sk_buff *msg)
{
	struct nlattr *stats, *stat;
	int i;

	stats = nla_nest_start(msg, TOA_A_STATS);
	if (!stats)
		return -EMSGSIZE;
	for (i = 0; i < TOA_NR_COUNTERS; i++) {
		stat = nla_nest_start(msg, TOA_A_STAT);
		if (!stat ||
		    nla_put_string(msg, TOA_A_STAT_NAME, toa_counter_names[i]) ||
		    nla_put_u64_64bit(msg, TOA_A_STAT_VALUE, toa_counter_sum(i), TOA_A_PAD))
			return -EMSGSIZE;
		nla_nest_end(msg, stat);
	}
	nla_nest_end(msg, stats);
	return nla_put_u64_64bit(msg, TOA_A_LIVE, toa_table_count(), TOA_A_PAD);
}

static int toa_get_stats(struct sk_buff *skb, struct genl_info *info)
{
	struct sk_buff *msg;
	void *hdr;

	msg = new_reply(info, TOA_CMD_GET_STATS, &hdr);
	if (!msg)
		return -ENOMEM;
	return finish_reply(msg, hdr, info, put_stats(msg));
}

struct dump_ctx {
	struct sk_buff *msg;
	struct netlink_callback *cb;
};

static int dump_one(const struct toa_entry *e, void *arg)
{
	struct dump_ctx *ctx = arg;
	void *hdr;

	hdr = genlmsg_put(ctx->msg, NETLINK_CB(ctx->cb->skb).portid, ctx->cb->nlh->nlmsg_seq,
			  &toa_family, NLM_F_MULTI, TOA_CMD_GET_ENTRIES);
	if (!hdr)
		return -EMSGSIZE;
	if (put_entry(ctx->msg, e)) {
		genlmsg_cancel(ctx->msg, hdr);
		return -EMSGSIZE;
	}
	genlmsg_end(ctx->msg, hdr);
	return 0;
}

static int toa_dump_entries(struct sk_buff *msg, struct netlink_callback *cb)
{
	struct dump_ctx ctx = { .msg = msg, .cb = cb };
	long pos = cb->args[0];

	toa_table_walk(sock_net(cb->skb->sk), &pos, dump_one, &ctx);
	cb->args[0] = pos;
	return msg->len;
}

static int toa_get_entry(struct sk_buff *skb, struct genl_info *info)
{
	struct toa_addr local, client;
	struct toa_entry *found;
	struct sk_buff *msg;
	void *hdr;
	int err;

	if (!info->attrs[TOA_A_LOCAL] || !info->attrs[TOA_A_CLIENT]) {
		GENL_SET_ERR_MSG(info, "toa: GET_ENTRY needs LOCAL and CLIENT");
		return -EINVAL;
	}
	found = kzalloc(sizeof(*found), GFP_KERNEL);
	if (!found)
		return -ENOMEM;
	get_addr(info->attrs[TOA_A_LOCAL], &local);
	get_addr(info->attrs[TOA_A_CLIENT], &client);
	err = -ENOENT;
	if (toa_table_find(genl_info_net(info), &local, &client, found)) {
		err = -ENOMEM;
		msg = new_reply(info, TOA_CMD_GET_ENTRY, &hdr);
		if (msg)
			err = finish_reply(msg, hdr, info, put_entry(msg, found));
	}
	kfree(found);
	return err;
}

/*
 * GET_ENTRY answers a server about a connection it names by its local
 * address and client, in the caller's namespace only; the dump of every
 * entry (all clients of all servers) needs CAP_NET_ADMIN, as SET_CONFIG.
 */
static const struct genl_small_ops toa_genl_ops[] = {
	{ .cmd = TOA_CMD_GET_CONFIG, .doit = toa_get_config },
	{ .cmd = TOA_CMD_SET_CONFIG, .doit = toa_set_config, .flags = GENL_ADMIN_PERM },
	{ .cmd = TOA_CMD_GET_STATS, .doit = toa_get_stats },
	{ .cmd = TOA_CMD_GET_ENTRIES, .dumpit = toa_dump_entries, .flags = GENL_ADMIN_PERM },
	{ .cmd = TOA_CMD_GET_ENTRY, .doit = toa_get_entry },
};

static struct genl_family toa_family = {
	.name = TOA_GENL_NAME,
	.version = TOA_GENL_VERSION,
	.maxattr = TOA_A_MAX,
	.policy = toa_policy,
	.netnsok = true,
	.module = THIS_MODULE,
	.small_ops = toa_genl_ops,
	.n_small_ops = ARRAY_SIZE(toa_genl_ops),
};

int toa_netlink_init(void)
{
	return genl_register_family(&toa_family);
}

void toa_netlink_exit(void)
{
	genl_unregister_family(&toa_family);
}
