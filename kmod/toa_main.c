// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa.ko - TCP Option Address for realip.
 *
 * An L4 edge (EdgeOne, LVS, DPVS, realip-edge) puts the client's address in
 * a TCP option of the handshake; this module reads it and makes
 * getpeername() and accept() return the client instead of the edge, for
 * every program on the machine. Only options from trusted source prefixes
 * are honoured (module parameter "trusted", changeable at run time through
 * /sys/module/toa/parameters/trusted or generic netlink); an empty list
 * trusts every source, as older TOA modules did, and says so in the log.
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>

#include "toa.h"

#define TOA_DEFAULT_KINDS "200,253,254"

static char toa_trusted_str[TOA_MAX_CONFIG_STR];
static char toa_kinds_str[TOA_MAX_CONFIG_STR] = TOA_DEFAULT_KINDS;
static DEFINE_MUTEX(toa_param_lock);
static bool toa_live; /* the configuration is up: parameter writes apply at once */

/* set_param handles a write of "trusted" (arg true) or "kinds". */
static int set_param(const char *val, bool is_trusted)
{
	char *dst = is_trusted ? toa_trusted_str : toa_kinds_str;
	struct toa_config *cfg;
	size_t len = strcspn(val, "\n");

	if (len >= TOA_MAX_CONFIG_STR)
		return -E2BIG;
	mutex_lock(&toa_param_lock);
	if (toa_live) {
		char *buf = kstrndup(val, len, GFP_KERNEL);

		if (!buf) {
			mutex_unlock(&toa_param_lock);
			return -ENOMEM;
		}
		cfg = is_trusted ? toa_config_parse(buf, toa_kinds_str)
				 : toa_config_parse(toa_trusted_str, buf);
		kfree(buf);
		if (IS_ERR(cfg)) {
			mutex_unlock(&toa_param_lock);
			return PTR_ERR(cfg);
		}
		toa_config_swap(cfg);
	}
	memcpy(dst, val, len);
	dst[len] = '\0';
	mutex_unlock(&toa_param_lock);
	return 0;
}

static int set_trusted(const char *val, const struct kernel_param *kp)
{
	return set_param(val, true);
}

static int set_kinds(const char *val, const struct kernel_param *kp)
{
	return set_param(val, false);
}

/* get_param reports the configuration in force (netlink may have set it). */
static int get_param(char *buffer, bool is_trusted)
{
	int n;

	rcu_read_lock();
	if (!toa_config_get())
		n = scnprintf(buffer, PAGE_SIZE, "%s", is_trusted ? toa_trusted_str : toa_kinds_str);
	else if (is_trusted)
		n = toa_config_format_trusted(toa_config_get(), buffer, PAGE_SIZE - 1);
	else
		n = toa_config_format_kinds(toa_config_get(), buffer, PAGE_SIZE - 1);
	rcu_read_unlock();
	buffer[n++] = '\n';
	return n;
}

static int get_trusted(char *buffer, const struct kernel_param *kp)
{
	return get_param(buffer, true);
}

static int get_kinds(char *buffer, const struct kernel_param *kp)
{
	return get_param(buffer, false);
}

static const struct kernel_param_ops trusted_ops = { .set = set_trusted, .get = get_trusted };
static const struct kernel_param_ops kinds_ops = { .set = set_kinds, .get = get_kinds };

module_param_cb(trusted, &trusted_ops, NULL, 0644);
MODULE_PARM_DESC(trusted, "comma-separated source prefixes whose TOA options are honoured (empty: all)");
module_param_cb(kinds, &kinds_ops, NULL, 0644);
MODULE_PARM_DESC(kinds, "comma-separated TCP option kinds read as TOA (default " TOA_DEFAULT_KINDS ")");

static int __init toa_init(void)
{
	int err;

	mutex_lock(&toa_param_lock);
	err = toa_config_init(toa_trusted_str, toa_kinds_str);
	toa_live = !err;
	mutex_unlock(&toa_param_lock);
	if (err)
		return err;
	err = toa_table_init();
	if (err)
		goto out_config;
	err = toa_proc_init();
	if (err)
		goto out_table;
	err = toa_netlink_init();
	if (err)
		goto out_proc;
	err = toa_hooks_init();
	if (err)
		goto out_netlink;
	pr_info("realip TOA " TOA_VERSION " loaded (kinds %s, trusted \"%s\")\n",
		toa_kinds_str, toa_trusted_str);
	return 0;

out_netlink:
	toa_netlink_exit();
out_proc:
	toa_proc_exit();
out_table:
	toa_table_exit();
out_config:
	mutex_lock(&toa_param_lock);
	toa_live = false;
	mutex_unlock(&toa_param_lock);
	toa_config_exit();
	return err;
}

static void __exit toa_exit(void)
{
	toa_hooks_exit();
	toa_netlink_exit();
	toa_proc_exit();
	toa_table_exit();
	mutex_lock(&toa_param_lock);
	toa_live = false;
	mutex_unlock(&toa_param_lock);
	toa_config_exit();
	pr_info("unloaded, %llu of %llu entries freed\n",
		toa_counter_sum(TOA_IP6_ADDRESS_FREE), toa_counter_sum(TOA_IP6_ADDRESS_ALLOC));
}

module_init(toa_init);
module_exit(toa_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("realip TOA: real client addresses from a TCP option");
MODULE_VERSION(TOA_VERSION);
MODULE_AUTHOR("realip");
