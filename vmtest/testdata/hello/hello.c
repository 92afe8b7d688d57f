// SPDX-License-Identifier: GPL-2.0
/*
 * hello - the stand-in module that proves the vmtest harness end to end:
 * built like toa.ko, loaded with a parameter, checked and unloaded in a VM.
 * warn=1 makes loading WARN, to prove the harness catches kernel warnings.
 */
#include <linux/bug.h>
#include <linux/init.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

static char *who = "world";
module_param(who, charp, 0444);
MODULE_PARM_DESC(who, "whom to greet (default: world)");

static bool warn;
module_param(warn, bool, 0444);
MODULE_PARM_DESC(warn, "WARN while loading (harness self-test)");

static int __init hello_init(void)
{
	pr_info("realip-vmtest hello: loaded, who=%s\n", who);
	WARN(warn, "realip-vmtest hello: warning on request\n");
	return 0;
}

static void __exit hello_exit(void)
{
	pr_info("realip-vmtest hello: unloaded, who=%s\n", who);
}

module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("realip vmtest stand-in module");
