/*
 * keydir.h — every API key the gateway knows, static (config) and admin-managed (store),
 * looked up by secret hash on every request and by id from the admin API.
 *
 * Versions.  A key is an entry (qg_keyent: its id and secret hash, both fixed for life)
 * and a current version (qg_keyrec: name, status, expiry, models, policies, counters),
 * which is immutable once published.  An edit publishes a new version with one atomic
 * store; a delete publishes NULL.  A request takes the version current at its head and
 * holds it until its last byte: minutes for a stream.
 *
 * Reclamation: never, while the process runs.  Entries, versions and counters of edited
 * or deleted keys stay allocated until qg_keydir_free at exit, so a pointer a worker took
 * can never dangle and readers need no epochs, reference counts or locks.  The cost is
 * memory: about 200 bytes plus the policies (~150 bytes each) per key and per edit.  An
 * operator who edits keys millions of times per process lifetime would notice; a restart
 * compacts (only the current versions are loaded).  Chosen over an epoch per worker loop
 * because an exchange can hold a version for as long as a stream runs, which would pin
 * every epoch anyway.
 *
 * Writers.  One thread at a time changes the directory: the main thread while it loads
 * the config and the store, then only the key store's thread (keystore.h).  Readers (the
 * workers) never block: the two hash tables are open addressing over entry pointers,
 * filled with release stores; when one grows, the bigger copy is published with one
 * atomic pointer store and the old one is retired (kept until exit, so a reader still
 * probing it finds what it held: the tables only ever gain entries).  Lookups are O(1) in
 * the number of keys.
 */
#ifndef QG_KEYDIR_H
#define QG_KEYDIR_H

#include "config.h"
#include "keyquota.h"

#include <stdatomic.h>

#define QG_KEY_ID_MAX 64      /* ids: "key_" + 16 hex digits, or a config key's name (< 64) */
#define QG_KEY_PREFIX_LEN 10  /* the secret's first characters, shown in listings */

typedef struct qg_keyent qg_keyent;

typedef struct qg_keyrec {
    const qg_keyent *ent;
    char *name;
    bool from_config;
    bool disabled;                 /* the operator's status; a pause never changes it */
    int64_t expires_ms;            /* 0: never */
    int64_t created_ms, updated_ms;/* 0: unknown (config keys) */
    char **models;                 /* NULL/0: every model */
    size_t n_models;
    double total_quota;            /* USD, < 0: none */
    qg_policy_cfg *policies;
    size_t n_policies;
    qg_keyq *kq;                   /* counters, shared with the key's other versions */
    struct qg_keyrec *retired;     /* writer-owned: the list freed at exit */
} qg_keyrec;

struct qg_keyent {
    char id[QG_KEY_ID_MAX];
    char prefix[QG_KEY_PREFIX_LEN + 1]; /* "" for config keys */
    uint8_t hash[32];              /* SHA-256 of the secret */
    uint32_t seq;                  /* creation order (listings) */
    _Atomic(qg_keyrec *) rec;      /* the current version; NULL once deleted */
};

typedef struct qg_keydir qg_keydir;

qg_keydir *qg_keydir_new(void);
/* At exit, after every worker and the store thread have stopped. */
void qg_keydir_free(qg_keydir *d);

/* ---- readers (any thread) ---- */

/* The current version of the key with this secret; NULL if unknown or deleted. */
const qg_keyrec *qg_keydir_auth(const qg_keydir *d, qg_slice secret);
/* The entry of the key with this secret (deleted ones too); NULL if unknown. */
qg_keyent *qg_keydir_auth_entry(const qg_keydir *d, qg_slice secret);
/* The entry with this id (deleted ones too: check its rec); NULL if none. */
qg_keyent *qg_keydir_by_id(const qg_keydir *d, qg_slice id);
static inline const qg_keyrec *qg_keyent_rec(const qg_keyent *e)
{
    return atomic_load_explicit(&((qg_keyent *)e)->rec, memory_order_acquire);
}
/* Entries in creation order: seq 0 .. qg_keydir_count()-1 (deleted ones included). */
uint32_t qg_keydir_count(const qg_keydir *d);
qg_keyent *qg_keydir_at(const qg_keydir *d, uint32_t seq);
static inline bool qg_keyrec_expired(const qg_keyrec *r, int64_t now) { return r->expires_ms && now >= r->expires_ms; }
/* Why a version may not be used now (SPEC §3: 403 key_disabled), or NULL. */
static inline const char *qg_keyrec_refusal(const qg_keyrec *r, int64_t now)
{
    return r->disabled ? "this API key is disabled" : qg_keyrec_expired(r, now) ? "this API key has expired" : NULL;
}

/* ---- the writer (one thread at a time, see above) ---- */

/* A new version (name and arrays copied; the counters are made, or shared with prev's
 * when prev is given: qg_keyq_new_from).  Not yet published. */
qg_keyrec *qg_keyrec_new(const qg_key_cfg *k, const qg_keyrec *prev);
/* Publishes a new key; -1 if the id or the hash is taken. */
int qg_keydir_add(qg_keydir *d, const char *id, const char *prefix, const uint8_t hash[32], qg_keyrec *rec);
/* Replaces the entry's current version (rec NULL: deletes the key); the old one is retired. */
void qg_keydir_publish(qg_keydir *d, qg_keyent *e, qg_keyrec *rec);
/* A version that was never published (an edit the store refused). */
void qg_keyrec_discard(qg_keyrec *rec);

/* Room for n more keys without growing the tables (the store's load knows its count:
 * growing a million keys' tables one doubling at a time would retire ~32 MB of copies). */
void qg_keydir_reserve(qg_keydir *d, size_t n);
/* Loads the config's static keys (id = name). */
void qg_keydir_add_config(qg_keydir *d, const qg_config *cfg);

#endif
