/*
 * keylocal.c — key operations on the store file.  See keylocal.h.
 */
#include "keylocal.h"

#include "dialect.h"
#include "keystore.h"
#include "keyview.h"
#include "ledger.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    bool done;
    int status;
    qg_buf *out;
} local_wait;

static void change_done(void *ud, const qg_keystore_result *res)
{
    local_wait *lw = ud;
    lw->done = true;
    lw->status = res->status;
    if (res->code) qg_dialect_error_body(lw->out, QG_DIALECT_OPENAI, res->status, res->code, res->message);
    else if (res->rec) qg_key_json(lw->out, res->rec, qg_now_ms(), res->secret);
    else {
        qg_buf_puts(lw->out, "{\"id\":");
        qg_buf_json_str(lw->out, res->id);
        qg_buf_puts(lw->out, ",\"deleted\":true}");
    }
}

/* Posts a change to the key store's thread as worker 0 and waits for its reply. */
static int change(qg_keystore *ks, qg_keyop op, const char *id, qg_key_spec *spec, qg_buf *out)
{
    local_wait lw = {false, 0, out};
    qg_keystore_submit(ks, 0, op, qg_slice_of(id ? id : ""), spec, change_done, &lw);
    while (!lw.done) {
        qg_keystore_poll(ks, 0);
        if (!lw.done) usleep(1000);
    }
    return lw.status;
}

static int refusal(qg_buf *out, int status, const char *code, const char *msg)
{
    qg_dialect_error_body(out, QG_DIALECT_OPENAI, status, code, msg);
    return status;
}

static int run_op(qg_ledger *l, qg_keydir *dir, qg_keystore *ks, qg_kl_op op, const char *id, const char *body, size_t n,
                  qg_buf *out)
{
    int64_t now = qg_now_ms();
    if (op == QG_KL_LIST) {
        qg_key_list_json(out, dir, 0, INT64_MAX, now);
        return 200;
    }
    qg_key_spec spec = {.k.total_quota = -1};
    if (op == QG_KL_CREATE || op == QG_KL_UPDATE) {
        qg_buf errs;
        qg_buf_init(&errs, 4096);
        if (qg_key_spec_parse(body ? body : "", n, &spec, &errs) < 0) {
            int st = refusal(out, 400, "invalid_request", errs.data ? errs.data : "bad body");
            qg_buf_free(&errs);
            return st;
        }
        qg_buf_free(&errs);
        return change(ks, op == QG_KL_CREATE ? QG_KEYOP_CREATE : QG_KEYOP_UPDATE, id, &spec, out);
    }
    qg_keyent *e = qg_keydir_by_id(dir, qg_slice_of(id));
    const qg_keyrec *r = e ? qg_keyent_rec(e) : NULL;
    if (!r) return refusal(out, 404, "key_not_found", "no key with that id");
    switch (op) {
    case QG_KL_SHOW: qg_key_json(out, r, now, NULL); return 200;
    case QG_KL_RESET:
        qg_keys_reset(l, 0, r, now); /* the ledger writer commits it at close */
        qg_key_json(out, r, now, NULL);
        return 200;
    case QG_KL_DELETE: return change(ks, QG_KEYOP_DELETE, id, NULL, out);
    default: /* enable, disable */
        spec.present = QG_KS_STATUS;
        spec.k.disabled = op == QG_KL_DISABLE;
        return change(ks, QG_KEYOP_UPDATE, id, &spec, out);
    }
}

int qg_keys_local(const qg_config *cfg, const char *db, qg_kl_op op, const char *id, const char *body, size_t n,
                  qg_buf *out, char *err, size_t errlen)
{
    if (op != QG_KL_CREATE && access(db, R_OK) != 0) {
        snprintf(err, errlen, "cannot read the store %s (%s)", db, strerror(errno));
        return -1;
    }
    /* the ledger first: it creates or migrates the schema, and its writer saves a reset */
    qg_ledger *l = qg_ledger_open(db, cfg->limits.ledger_flush_ms, 1, err, errlen);
    if (!l) return -1;
    qg_keydir *dir = qg_keydir_new();
    qg_keydir_add_config(dir, cfg);
    qg_keystore *ks = qg_keystore_open(db, dir, 1, err, errlen);
    int status = -1;
    if (ks && qg_keys_restore_counters(dir, db, qg_now_ms(), err, errlen) >= 0)
        status = run_op(l, dir, ks, op, id, body, n, out);
    qg_keystore_close(ks);
    qg_ledger_close(l);
    qg_keydir_free(dir);
    return status;
}
