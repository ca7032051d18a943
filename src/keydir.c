/*
 * keydir.c — the key directory.  See keydir.h.
 */
#include "keydir.h"

#include "keys.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

/* Entries live in chunks that never move, so a reader can hold one while the writer adds
 * more; CHUNK_COUNT chunks of CHUNK_SIZE cap the directory at 64M keys. */
#define CHUNK_BITS 12
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define CHUNK_COUNT 16384u

/* Open addressing over entry pointers; at most half full. */
typedef struct ktab {
    size_t mask;
    struct ktab *retired;
    _Atomic(qg_keyent *) slot[];
} ktab;

struct qg_keydir {
    _Atomic(ktab *) by_hash, by_id;
    _Atomic uint32_t count;
    size_t n_hash, n_id;                        /* writer: filled slots */
    _Atomic(qg_keyent *) chunk[CHUNK_COUNT];
    ktab *retired_tabs;                         /* writer */
    qg_keyrec *retired;                         /* writer */
};

static uint64_t hash_key(const uint8_t h[32])
{
    uint64_t v;
    memcpy(&v, h, sizeof v); /* SHA-256 output: already uniform */
    return v;
}

static uint64_t id_key(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static ktab *ktab_new(size_t cap)
{
    ktab *t = qg_xcalloc(1, sizeof *t + cap * sizeof t->slot[0]);
    t->mask = cap - 1;
    return t;
}

static uint64_t entry_key(const qg_keyent *e, bool by_hash)
{
    return by_hash ? hash_key(e->hash) : id_key(e->id, strlen(e->id));
}

static void ktab_put(ktab *t, qg_keyent *e, uint64_t k)
{
    for (size_t i = k & t->mask;; i = (i + 1) & t->mask) {
        if (atomic_load_explicit(&t->slot[i], memory_order_relaxed)) continue;
        atomic_store_explicit(&t->slot[i], e, memory_order_release);
        return;
    }
}

/* Publishes a copy of the table with room for `want` entries at most half full. */
static ktab *tab_grow(qg_keydir *d, _Atomic(ktab *) *where, size_t want, bool by_hash)
{
    ktab *t = atomic_load_explicit(where, memory_order_relaxed);
    size_t cap = t ? t->mask + 1 : 1024;
    while (cap < 2 * want) cap *= 2;
    if (t && cap == t->mask + 1) return t;
    ktab *big = ktab_new(cap);
    for (size_t i = 0; t && i <= t->mask; i++) {
        qg_keyent *o = atomic_load_explicit(&t->slot[i], memory_order_relaxed);
        if (o) ktab_put(big, o, entry_key(o, by_hash));
    }
    atomic_store_explicit(where, big, memory_order_release);
    if (t) t->retired = d->retired_tabs, d->retired_tabs = t;
    return big;
}

/* Inserts e, first publishing a table twice the size when this one would pass half full. */
static void tab_insert(qg_keydir *d, _Atomic(ktab *) *where, size_t *filled, qg_keyent *e, bool by_hash)
{
    ktab *t = atomic_load_explicit(where, memory_order_relaxed);
    if (!t || (*filled + 1) * 2 > t->mask + 1) t = tab_grow(d, where, *filled + 1, by_hash);
    ktab_put(t, e, entry_key(e, by_hash));
    (*filled)++;
}

qg_keydir *qg_keydir_new(void) { return qg_xcalloc(1, sizeof(qg_keydir)); }

void qg_keydir_reserve(qg_keydir *d, size_t n)
{
    size_t want = atomic_load_explicit(&d->count, memory_order_relaxed) + n;
    tab_grow(d, &d->by_hash, want, true);
    tab_grow(d, &d->by_id, want, false);
}

static void rec_free(qg_keyrec *r)
{
    free(r->name);
    for (size_t i = 0; i < r->n_models; i++) free(r->models[i]);
    free(r->models);
    free(r->policies);
    free(r->kq);
    free(r);
}

void qg_keydir_free(qg_keydir *d)
{
    if (!d) return;
    uint32_t n = atomic_load(&d->count);
    for (uint32_t s = 0; s < n; s++) {
        qg_keyrec *r = atomic_load(&qg_keydir_at(d, s)->rec);
        if (r) rec_free(r);
    }
    for (qg_keyrec *r = d->retired, *next; r; r = next) next = r->retired, rec_free(r);
    for (ktab *t = d->retired_tabs, *next; t; t = next) next = t->retired, free(t);
    free(atomic_load(&d->by_hash));
    free(atomic_load(&d->by_id));
    for (uint32_t c = 0; c < CHUNK_COUNT; c++) free(atomic_load(&d->chunk[c]));
    free(d);
}

/* ---- readers ---- */

const qg_keyrec *qg_keydir_auth(const qg_keydir *d, qg_slice secret)
{
    qg_keyent *e = qg_keydir_auth_entry(d, secret);
    return e ? qg_keyent_rec(e) : NULL;
}

qg_keyent *qg_keydir_auth_entry(const qg_keydir *d, qg_slice secret)
{
    if (!secret.n || secret.n > QG_KEY_MAX_SECRET) return NULL;
    uint8_t h[32];
    qg_key_hash(secret.p, secret.n, h);
    ktab *t = atomic_load_explicit(&((qg_keydir *)d)->by_hash, memory_order_acquire);
    if (!t) return NULL;
    for (size_t i = hash_key(h) & t->mask;; i = (i + 1) & t->mask) {
        qg_keyent *e = atomic_load_explicit(&t->slot[i], memory_order_acquire);
        if (!e) return NULL;
        if (CRYPTO_memcmp(e->hash, h, sizeof h) == 0) return e;
    }
}

qg_keyent *qg_keydir_by_id(const qg_keydir *d, qg_slice id)
{
    ktab *t = atomic_load_explicit(&((qg_keydir *)d)->by_id, memory_order_acquire);
    if (!t || !id.n || id.n >= QG_KEY_ID_MAX) return NULL;
    for (size_t i = id_key(id.p, id.n) & t->mask;; i = (i + 1) & t->mask) {
        qg_keyent *e = atomic_load_explicit(&t->slot[i], memory_order_acquire);
        if (!e) return NULL;
        if (qg_slice_eq(id, e->id)) return e;
    }
}

uint32_t qg_keydir_count(const qg_keydir *d) { return atomic_load_explicit(&((qg_keydir *)d)->count, memory_order_acquire); }

qg_keyent *qg_keydir_at(const qg_keydir *d, uint32_t seq)
{
    qg_keyent *c = atomic_load_explicit(&((qg_keydir *)d)->chunk[seq >> CHUNK_BITS], memory_order_acquire);
    return &c[seq & (CHUNK_SIZE - 1)];
}

/* ---- the writer ---- */

static char **copy_strs(char *const *v, size_t n)
{
    if (!n) return NULL;
    char **out = qg_xcalloc(n, sizeof *out);
    for (size_t i = 0; i < n; i++) out[i] = qg_xstrdup(v[i]);
    return out;
}

qg_keyrec *qg_keyrec_new(const qg_key_cfg *k, const qg_keyrec *prev)
{
    qg_keyrec *r = qg_xcalloc(1, sizeof *r);
    r->name = qg_xstrdup(k->name);
    r->disabled = k->disabled;
    r->expires_ms = k->expires_ms;
    r->models = copy_strs(k->models, k->n_models);
    r->n_models = r->models ? k->n_models : 0;
    r->total_quota = k->total_quota;
    if (k->n_policies) {
        r->policies = qg_xcalloc(k->n_policies, sizeof *r->policies);
        memcpy(r->policies, k->policies, k->n_policies * sizeof *r->policies);
    }
    r->n_policies = k->n_policies;
    r->kq = qg_keyq_new_from(prev ? prev->kq : NULL, r->policies, r->n_policies, r->total_quota);
    if (prev) r->ent = prev->ent, r->from_config = prev->from_config, r->created_ms = prev->created_ms;
    return r;
}

void qg_keyrec_discard(qg_keyrec *rec)
{
    if (rec) rec_free(rec);
}

int qg_keydir_add(qg_keydir *d, const char *id, const char *prefix, const uint8_t hash[32], qg_keyrec *rec)
{
    size_t idn = strlen(id);
    uint32_t seq = atomic_load_explicit(&d->count, memory_order_relaxed);
    ktab *ht = atomic_load_explicit(&d->by_hash, memory_order_relaxed);
    bool hash_taken = false;
    for (size_t i = ht ? hash_key(hash) & ht->mask : 0; ht; i = (i + 1) & ht->mask) {
        qg_keyent *o = atomic_load_explicit(&ht->slot[i], memory_order_relaxed);
        if (!o) break;
        if (memcmp(o->hash, hash, 32) == 0) hash_taken = true;
    }
    if (hash_taken || idn == 0 || idn >= QG_KEY_ID_MAX || qg_keydir_by_id(d, qg_slice_of(id)) ||
        seq >= CHUNK_COUNT * CHUNK_SIZE)
        return -1;
    qg_keyent *chunk = atomic_load_explicit(&d->chunk[seq >> CHUNK_BITS], memory_order_relaxed);
    if (!chunk) {
        chunk = qg_xcalloc(CHUNK_SIZE, sizeof *chunk);
        atomic_store_explicit(&d->chunk[seq >> CHUNK_BITS], chunk, memory_order_release);
    }
    qg_keyent *e = &chunk[seq & (CHUNK_SIZE - 1)];
    memcpy(e->id, id, idn + 1);
    qg_strlcpy(e->prefix, prefix ? prefix : "", sizeof e->prefix);
    memcpy(e->hash, hash, 32);
    e->seq = seq;
    rec->ent = e;
    atomic_store_explicit(&e->rec, rec, memory_order_release);
    tab_insert(d, &d->by_hash, &d->n_hash, e, true);
    tab_insert(d, &d->by_id, &d->n_id, e, false);
    atomic_store_explicit(&d->count, seq + 1, memory_order_release);
    return 0;
}

void qg_keydir_publish(qg_keydir *d, qg_keyent *e, qg_keyrec *rec)
{
    if (rec) rec->ent = e;
    qg_keyrec *old = atomic_exchange_explicit(&e->rec, rec, memory_order_acq_rel);
    if (old) old->retired = d->retired, d->retired = old;
}

void qg_keydir_add_config(qg_keydir *d, const qg_config *cfg)
{
    for (size_t i = 0; i < cfg->n_keys; i++) {
        qg_keyrec *r = qg_keyrec_new(&cfg->keys[i], NULL);
        r->from_config = true;
        if (qg_keydir_add(d, cfg->keys[i].name, "", cfg->keys[i].hash, r) < 0) qg_keyrec_discard(r); /* config validated: unique */
    }
}
