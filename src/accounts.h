/*
 * accounts.h — the gateway's table of upstream accounts and their quota state (quota.h),
 * built once from the config and shared by every worker.
 *
 * Ownership: the table owns the qg_qacct array (one per configured account, in config
 * order, provider by provider); names point into the config, which outlives it.  The
 * array never moves after build, so workers keep plain pointers.  Every mutable field is
 * an atomic inside quota.h's structs: see there for what a reader may see.
 *
 * Persistence: qg_accounts_load restores the saved state at start-up (before the workers
 * run); qg_accounts_save hands an account's state to the ledger writer when it changed —
 * at once for state changes and spent buckets, at most once every 10 s for header and
 * counting updates (each account busy at thousands of requests a second would otherwise
 * cost the writer an upsert a second) —
 * and qg_accounts_save_all does so for every changed account at shutdown.
 */
#ifndef QG_ACCOUNTS_H
#define QG_ACCOUNTS_H

#include "config.h"
#include "ledger.h"
#include "quota.h"

typedef struct {
    qg_qacct *a;              /* [n] */
    size_t n;
    size_t *first;            /* [n_providers]: index of each provider's first account */
    const qg_config *cfg;
} qg_accounts;

void qg_accounts_build(qg_accounts *t, const qg_config *cfg);
void qg_accounts_free(qg_accounts *t);
/* The account at (provider index, account index). */
qg_qacct *qg_accounts_at(const qg_accounts *t, int prov, int acct);
/* By "name" (when unique across providers) or "provider/name"; NULL if none.  *ambiguous
 * is set when a bare name matches accounts of several providers. */
qg_qacct *qg_accounts_find(const qg_accounts *t, qg_slice name, bool *ambiguous);
/* Restores saved states; returns how many accounts were restored, -1 if the store could not be read. */
int qg_accounts_load(qg_accounts *t, const char *db_path, int64_t now);
/* Saves a if it changed since its last save: now when `urgent`, else at most once a second. */
void qg_accounts_save(qg_ledger *l, int worker, qg_qacct *a, int64_t now, bool urgent);
void qg_accounts_save_all(const qg_accounts *t, qg_ledger *l, int64_t now);

/* JSON views (docs/api.md): one account, every account, and /api/quotas. */
void qg_accounts_json_one(qg_buf *b, const qg_qacct *a, int64_t now);
void qg_accounts_json(qg_buf *b, const qg_accounts *t, int64_t now);
void qg_quotas_json(qg_buf *b, const qg_accounts *t, int64_t now);

#endif
