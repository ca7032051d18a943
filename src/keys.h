/*
 * keys.h — client API key lookup by SHA-256 hash.
 *
 * The table holds pointers to qg_key_cfg records (which hold only the hash, never the
 * secret).  Lookup hashes the presented secret and probes an open-addressing table keyed
 * by the hash's first 8 bytes: O(1) in the number of keys.  The table is immutable once
 * built and shared read-only by all workers; admin-managed keys (a later issue) will
 * publish a new table by atomic pointer swap, so lookups stay lock-free.
 */
#ifndef QG_KEYS_H
#define QG_KEYS_H

#include "config.h"

typedef struct {
    const qg_key_cfg **slots;
    size_t mask;
} qg_keytab;

/* SHA-256 of a client key secret, as stored in qg_key_cfg.hash. */
void qg_key_hash(const char *secret, size_t n, uint8_t out[32]);

void qg_keytab_build(qg_keytab *t, const qg_config *cfg);
void qg_keytab_free(qg_keytab *t);
const qg_key_cfg *qg_keytab_find(const qg_keytab *t, const uint8_t hash[32]);
/* Hashes the presented secret and looks it up; NULL if unknown. */
const qg_key_cfg *qg_keytab_auth(const qg_keytab *t, qg_slice secret);
/* Constant-time comparison for the admin token. */
bool qg_secret_equal(qg_slice presented, const char *expected);

#endif
