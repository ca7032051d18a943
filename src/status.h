/*
 * status.h — `quotagate status`: a terminal table of the upstream accounts and their quota
 * buckets (SPEC §1), read from the running gateway's GET /admin/accounts or, with --db,
 * rebuilt from the config and the state saved in the SQLite store.  See docs/status.md.
 */
#ifndef QG_STATUS_H
#define QG_STATUS_H

/* Entry point for `quotagate status ARGS` (argv[0] is "status"); returns the exit code:
 * 0 ok, 1 the gateway or the store could not be read, 2 usage or configuration error. */
int qg_status_main(int argc, char **argv);

#endif
