/*
 * keys.c — hashed key table.  See keys.h.
 */
#include "keys.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdlib.h>

/* OpenSSL 3's one-shot SHA256() looks the algorithm up by name on every call (~5k
 * instructions); fetching it once makes a per-request key hash about a third of that. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static void sha256_fetch(void) { sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

void qg_key_hash(const char *secret, size_t n, uint8_t out[32])
{
    pthread_once(&sha256_once, sha256_fetch);
    if (!sha256_md || !EVP_Digest(secret, n, out, NULL, sha256_md, NULL))
        SHA256((const unsigned char *)secret, n, out);
}

static uint64_t slot_hash(const uint8_t h[32])
{
    uint64_t v;
    memcpy(&v, h, sizeof v); /* SHA-256 output is already uniformly distributed */
    return v;
}

void qg_keytab_build(qg_keytab *t, const qg_config *cfg)
{
    size_t cap = 16;
    while (cap < cfg->n_keys * 2) cap *= 2;
    t->slots = qg_xcalloc(cap, sizeof *t->slots);
    t->mask = cap - 1;
    for (size_t i = 0; i < cfg->n_keys; i++) {
        size_t s = slot_hash(cfg->keys[i].hash) & t->mask;
        while (t->slots[s]) s = (s + 1) & t->mask;
        t->slots[s] = &cfg->keys[i];
    }
}

void qg_keytab_free(qg_keytab *t)
{
    free(t->slots);
    t->slots = NULL;
}

const qg_key_cfg *qg_keytab_find(const qg_keytab *t, const uint8_t hash[32])
{
    for (size_t s = slot_hash(hash) & t->mask; t->slots[s]; s = (s + 1) & t->mask)
        if (CRYPTO_memcmp(t->slots[s]->hash, hash, 32) == 0) return t->slots[s];
    return NULL;
}

const qg_key_cfg *qg_keytab_auth(const qg_keytab *t, qg_slice secret)
{
    if (secret.n == 0 || secret.n > 512) return NULL;
    uint8_t h[32];
    qg_key_hash(secret.p, secret.n, h);
    return qg_keytab_find(t, h);
}

bool qg_secret_equal(qg_slice presented, const char *expected)
{
    size_t n = strlen(expected);
    if (presented.n != n || n == 0) return false;
    return CRYPTO_memcmp(presented.p, expected, n) == 0;
}
