/*
 * keyscli.h — `quotagate keys`: the API keys of the running gateway through its admin API.
 * list, show ID and reset ID work on every key (GET /admin/keys, GET /admin/keys/{id},
 * POST /admin/keys/{id}/reset); create NAME, update ID, disable ID, enable ID and delete ID
 * manage the admin keys of the key store (POST /admin/keys, PATCH /admin/keys/{id},
 * POST /admin/keys/{id}/disable|enable, DELETE /admin/keys/{id}).  An admin key's id is
 * key_<hex>; a key from the config has its name as id.  See docs/keys-cli.md.
 */
#ifndef QG_KEYSCLI_H
#define QG_KEYSCLI_H

/* Entry point for `quotagate keys ARGS` (argv[0] is "keys"); returns the exit code:
 * 0 ok, 1 the gateway could not be reached or refused the request (unknown key, a key from
 * the config, a field refused, admin token refused, admin API disabled; its error code and
 * message are printed), 2 usage or configuration error. */
int qg_keys_main(int argc, char **argv);

#endif
