/*
 * keys.c — key secret hashing and comparison.  See keys.h.
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

bool qg_secret_equal(qg_slice presented, const char *expected)
{
    size_t n = strlen(expected);
    if (presented.n != n || n == 0) return false;
    return CRYPTO_memcmp(presented.p, expected, n) == 0;
}
