/*
 * keylocal.h — `quotagate keys --db`: the admin API's key operations run in-process on the
 * store file, with the gateway's own code (keystore.c for changes, keyview.c for the JSON),
 * so the answers have exactly the admin API's shapes.  For a gateway that is stopped: a
 * running gateway reads the stored keys only at start, so a change made here reaches it at
 * its next start (and a change made meanwhile through its API is not seen here).
 */
#ifndef QG_KEYLOCAL_H
#define QG_KEYLOCAL_H

#include "config.h"

typedef enum { QG_KL_LIST, QG_KL_SHOW, QG_KL_RESET, QG_KL_CREATE, QG_KL_UPDATE, QG_KL_ENABLE, QG_KL_DISABLE, QG_KL_DELETE } qg_kl_op;

/* Runs one operation (id: the key's, for all but list and create; body: the JSON body of a
 * create or update).  Returns the HTTP status the admin API would give, with its JSON body
 * in out, or -1 with err set when the store cannot be opened. */
int qg_keys_local(const qg_config *cfg, const char *db, qg_kl_op op, const char *id, const char *body, size_t n,
                  qg_buf *out, char *err, size_t errlen);

#endif
