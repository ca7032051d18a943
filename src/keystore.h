/*
 * keystore.h — admin-managed API keys in the store (SPEC §4.8, §5): tables api_key and
 * api_key_policy in the ledger's SQLite file (schema version 4, ledger.c creates them).
 *
 * At start qg_keystore_open loads every stored key into the key directory (keydir.h), then
 * runs one thread, the directory's only writer from then on.  Workers post create, update
 * and delete operations to it through a mailbox (never touching the disk on a loop); the
 * thread writes a key's record and its policies in one transaction, and only after the
 * commit publishes the new version in the directory and replies, so a client told "201"
 * has a key that survives kill -9, and a refused commit leaves nothing visible.  One thread
 * applying operations in order also orders concurrent edits of one key.
 *
 * The secret of a new key is 24 random bytes from OpenSSL, shown once as "qg-" + 48 hex
 * digits; only its SHA-256 is stored.  Ids are "key_" + 16 random hex digits.
 */
#ifndef QG_KEYSTORE_H
#define QG_KEYSTORE_H

#include "config.h"
#include "keydir.h"
#include "ledger.h"
#include "loop.h"

typedef struct qg_keystore qg_keystore;

typedef enum { QG_KEYOP_CREATE, QG_KEYOP_UPDATE, QG_KEYOP_DELETE } qg_keyop;

typedef struct {
    int status;                  /* HTTP status: 200, 201, or an error's */
    const char *code;            /* error code (NULL on success) */
    const char *message;
    const qg_keyrec *rec;        /* the key after a create or update (NULL after a delete) */
    const char *secret;          /* create: the new secret (wiped after the callback) */
    const char *id;
} qg_keystore_result;

/* Called on the posting worker's loop, from qg_keystore_poll. */
typedef void (*qg_keystore_cb)(void *ud, const qg_keystore_result *res);

/* Loads the stored keys into dir and starts the thread; NULL with err set on failure. */
qg_keystore *qg_keystore_open(const char *path, qg_keydir *dir, int n_workers, char *err, size_t errlen);
void qg_keystore_attach(qg_keystore *ks, int worker, qg_notify *n);
/* Worker side.  Takes ownership of spec (NULL for a delete).  cb always runs, later. */
void qg_keystore_submit(qg_keystore *ks, int worker, qg_keyop op, qg_slice id, qg_key_spec *spec, qg_keystore_cb cb,
                        void *ud);
/* Worker side: call from the notify callback. */
void qg_keystore_poll(qg_keystore *ks, int worker);
/* After the workers stopped (their connections closed): finishes the posted operations,
 * runs their callbacks (which find their clients gone and free their state) and stops the
 * thread. */
void qg_keystore_close(qg_keystore *ks);
/* Start-up: the counters saved with the ledger rows (key_window, key_total, key_pause),
 * restored into the keys of dir by id.  Returns how many matched a key, or -1 with err. */
int qg_keys_restore_counters(qg_keydir *dir, const char *path, int64_t now, char *err, size_t errlen);
/* The manual reset (SPEC §4.11): r's current windows zeroed and any pause ended, in memory
 * now and in the store through the ledger writer, in order with the rows. */
void qg_keys_reset(qg_ledger *l, int worker, const qg_keyrec *r, int64_t now);
/* Keys loaded from the store at open. */
size_t qg_keystore_loaded(const qg_keystore *ks);

#endif
