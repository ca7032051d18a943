/*
 * keys.h — client key secrets: the SHA-256 every lookup is keyed by (keydir.h holds the
 * keys), and the constant-time comparison for the admin token.
 */
#ifndef QG_KEYS_H
#define QG_KEYS_H

#include "config.h"

/* SHA-256 of a client key secret, as stored in qg_key_cfg.hash. */
void qg_key_hash(const char *secret, size_t n, uint8_t out[32]);

/* Presented secrets longer than this are refused unhashed (config keys are at most 512). */
#define QG_KEY_MAX_SECRET 512
/* Constant-time comparison for the admin token. */
bool qg_secret_equal(qg_slice presented, const char *expected);

#endif
