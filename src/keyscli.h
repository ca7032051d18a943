/*
 * keyscli.h — `quotagate keys list|show ID|reset ID`: the API keys of the running gateway
 * and their quota policies, read from its GET /admin/keys and GET /admin/keys/{id}, and
 * the manual reset (POST /admin/keys/{id}/reset).  create/disable/enable/delete arrive
 * with admin-managed keys (the key store); this version says so.  See docs/keys-cli.md.
 */
#ifndef QG_KEYSCLI_H
#define QG_KEYSCLI_H

/* Entry point for `quotagate keys ARGS` (argv[0] is "keys"); returns the exit code:
 * 0 ok, 1 the gateway could not be read or refused the request (unknown key, admin token
 * refused, admin API disabled), 2 usage or configuration error, or a subcommand this
 * version does not have. */
int qg_keys_main(int argc, char **argv);

#endif
