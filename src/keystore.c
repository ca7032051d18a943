/*
 * keystore.c — stored API keys.  See keystore.h.
 */
#include "keystore.h"

#include "keys.h"
#include "ledger.h"
#include "mailbox.h"
#include "quota.h"
#include "timefmt.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYSTORE_RING 64          /* operations in flight per worker; past it, 503 */
#define KEYSTORE_BUSY_MS 5000     /* waiting for the ledger writer's transaction */

typedef struct {
    qg_keyop op;
    char id[QG_KEY_ID_MAX];
    qg_key_spec spec;
    qg_keystore_cb cb;
    void *ud;
    /* the result, filled by the thread */
    int status;
    const char *code;
    char message[300];
    const qg_keyrec *rec;
    char secret[64];
} keyop_msg;

struct qg_keystore {
    qg_keydir *dir;
    sqlite3 *db;
    qg_mailbox mb;
    pthread_t thread;
    bool started;
    _Atomic bool stop;
    size_t loaded;
};

static qg_unit unit_of(const char *s)
{
    if (s && !strcmp(s, "usd")) return QG_UNIT_USD;
    if (s && !strcmp(s, "requests")) return QG_UNIT_REQUESTS;
    return QG_UNIT_TOKENS;
}

/* ---- loading ---- */

static const char load_sql[] =
    "SELECT k.id,k.name,k.hash,k.prefix,k.status,k.expires_ms,k.total_quota_micro,k.models,k.created_ms,k.updated_ms,"
    "p.idx,p.period_kind,p.minutes,p.limit_amount,p.unit,p.anchor_ms,p.anchor_offset_min,p.boundary,p.on_exhausted,"
    "p.auto_resume FROM api_key k LEFT JOIN api_key_policy p ON p.key_id=k.id ORDER BY k.rowid,p.idx";

static const char *col_text(sqlite3_stmt *st, int i) { return (const char *)sqlite3_column_text(st, i); }

/* "a\nb" -> models (names never hold control bytes: the loader refuses them). */
static void split_models(const char *s, qg_key_cfg *k)
{
    if (!s || !*s) return;
    size_t n = 1;
    for (const char *p = s; *p; p++) n += *p == '\n';
    k->models = qg_xcalloc(n, sizeof *k->models);
    for (const char *p = s;; p++) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *m = qg_xmalloc(len + 1);
        memcpy(m, p, len);
        m[len] = 0;
        k->models[k->n_models++] = m;
        if (!e) break;
        p = e;
    }
}

static void policy_from_row(sqlite3_stmt *st, qg_policy_cfg *p)
{
    *p = (qg_policy_cfg){
        .period = (qg_period_kind)sqlite3_column_int(st, 11),
        .minutes = sqlite3_column_int64(st, 12),
        .unit = unit_of(col_text(st, 14)),
        .anchor_ms = sqlite3_column_int64(st, 15),
        .anchor_offset_min = sqlite3_column_int(st, 16),
    };
    int64_t amount = sqlite3_column_int64(st, 13);
    p->limit = p->unit == QG_UNIT_USD ? (double)amount / 1e6 : (double)amount;
    const char *b = col_text(st, 17), *x = col_text(st, 18);
    p->strict = !b || strcmp(b, "graceful") != 0;
    p->on_exhausted_disable = x && !strcmp(x, "disable");
    p->auto_resume = sqlite3_column_int(st, 19) != 0;
}

typedef struct {
    qg_key_cfg k;
    char id[QG_KEY_ID_MAX], prefix[QG_KEY_PREFIX_LEN + 1];
    uint8_t hash[32];
    bool hash_ok;
    int64_t created, updated;
} loading_key;

static void loading_free(loading_key *lk)
{
    free(lk->k.name);
    for (size_t i = 0; i < lk->k.n_models; i++) free(lk->k.models[i]);
    free(lk->k.models);
    free(lk->k.policies);
    memset(lk, 0, sizeof *lk);
}

static void loading_publish(qg_keystore *ks, loading_key *lk)
{
    if (!lk->id[0]) return;
    qg_keyrec *r = qg_keyrec_new(&lk->k, NULL);
    r->created_ms = lk->created, r->updated_ms = lk->updated;
    if (!lk->hash_ok || qg_keydir_add(ks->dir, lk->id, lk->prefix, lk->hash, r) < 0) {
        qg_warn("store: key %s skipped (its id or secret hash is already taken, or its hash is damaged)", lk->id);
        qg_keyrec_discard(r);
    } else {
        ks->loaded++;
    }
    loading_free(lk);
}

static void loading_start(loading_key *lk, sqlite3_stmt *st)
{
    qg_strlcpy(lk->id, col_text(st, 0) ? col_text(st, 0) : "", sizeof lk->id);
    lk->k.name = qg_xstrdup(col_text(st, 1) ? col_text(st, 1) : lk->id);
    lk->hash_ok = sqlite3_column_bytes(st, 2) == 32;
    if (lk->hash_ok) memcpy(lk->hash, sqlite3_column_blob(st, 2), 32);
    qg_strlcpy(lk->prefix, col_text(st, 3) ? col_text(st, 3) : "", sizeof lk->prefix);
    lk->k.disabled = col_text(st, 4) && !strcmp(col_text(st, 4), "disabled");
    lk->k.expires_ms = sqlite3_column_int64(st, 5);
    lk->k.total_quota = sqlite3_column_type(st, 6) == SQLITE_NULL ? -1 : (double)sqlite3_column_int64(st, 6) / 1e6;
    split_models(col_text(st, 7), &lk->k);
    lk->created = sqlite3_column_int64(st, 8);
    lk->updated = sqlite3_column_int64(st, 9);
}

static int load_keys(qg_keystore *ks, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(ks->db, "SELECT count(*) FROM api_key", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) qg_keydir_reserve(ks->dir, (size_t)sqlite3_column_int64(st, 0));
        sqlite3_finalize(st);
    }
    if (sqlite3_prepare_v2(ks->db, load_sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: loading keys: %s", sqlite3_errmsg(ks->db));
        return -1;
    }
    loading_key lk = {0};
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = col_text(st, 0);
        if (!id || strcmp(id, lk.id) != 0) {
            loading_publish(ks, &lk);
            loading_start(&lk, st);
        }
        if (sqlite3_column_type(st, 10) == SQLITE_NULL || lk.k.n_policies >= QG_KEY_MAX_POLICIES) continue;
        lk.k.policies = qg_xrealloc(lk.k.policies, (lk.k.n_policies + 1) * sizeof *lk.k.policies);
        policy_from_row(st, &lk.k.policies[lk.k.n_policies++]);
    }
    loading_publish(ks, &lk);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "store: loading keys: %s", sqlite3_errmsg(ks->db));
        return -1;
    }
    return 0;
}

/* ---- writing ---- */

static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

static char *join_models(const qg_keyrec *r)
{
    if (!r->n_models) return NULL;
    qg_buf b;
    qg_buf_init(&b, 0);
    for (size_t i = 0; i < r->n_models; i++) {
        if (i) qg_buf_puts(&b, "\n");
        qg_buf_puts(&b, r->models[i]);
    }
    qg_buf_append(&b, "", 1);
    return b.data;
}

/* The record's columns: ?1 id, ?2 name, ?3 status, ?4 expires, ?5 total quota, ?6 models, ?7 now. */
static void bind_record(sqlite3_stmt *st, const char *id, const qg_keyrec *r, int64_t now)
{
    char *models = join_models(r);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, r->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, r->disabled ? "disabled" : "active", -1, SQLITE_STATIC);
    if (r->expires_ms) sqlite3_bind_int64(st, 4, r->expires_ms);
    else sqlite3_bind_null(st, 4);
    if (r->total_quota >= 0) sqlite3_bind_int64(st, 5, qg_quota_amount(QG_UNIT_USD, r->total_quota));
    else sqlite3_bind_null(st, 5);
    bind_text_or_null(st, 6, models);
    sqlite3_bind_int64(st, 7, now);
    free(models);
}

static int write_policies(sqlite3 *db, const char *id, const qg_keyrec *r, bool replace)
{
    sqlite3_stmt *st;
    if (replace) {
        if (sqlite3_prepare_v2(db, "DELETE FROM api_key_policy WHERE key_id=?1", -1, &st, NULL) != SQLITE_OK) return -1;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        if (step_done(st) < 0) return -1;
    }
    for (size_t i = 0; i < r->n_policies; i++) {
        const qg_policy_cfg *p = &r->policies[i];
        char label[24], anchor[40];
        qg_policy_label(p, label, sizeof label);
        qg_format_rfc3339(p->anchor_ms, anchor, sizeof anchor);
        if (sqlite3_prepare_v2(db,
                               "INSERT INTO api_key_policy(key_id,idx,period,period_kind,minutes,limit_amount,unit,anchor,"
                               "anchor_ms,anchor_offset_min,boundary,on_exhausted,auto_resume)"
                               " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                               -1, &st, NULL) != SQLITE_OK)
            return -1;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, (int)i);
        sqlite3_bind_text(st, 3, label, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 4, (int)p->period);
        sqlite3_bind_int64(st, 5, p->minutes);
        sqlite3_bind_int64(st, 6, qg_quota_amount(p->unit, p->limit));
        sqlite3_bind_text(st, 7, qg_unit_name(p->unit), -1, SQLITE_STATIC); /* requests, tokens or usd (config) */
        sqlite3_bind_text(st, 8, anchor, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 9, p->anchor_ms);
        sqlite3_bind_int(st, 10, p->anchor_offset_min);
        sqlite3_bind_text(st, 11, p->strict ? "strict" : "graceful", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 12, p->on_exhausted_disable ? "disable" : "reject", -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 13, p->auto_resume);
        if (step_done(st) < 0) return -1;
    }
    return 0;
}

static int run_id(sqlite3 *db, const char *sql, const char *id)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    return step_done(st);
}

static void fail(keyop_msg *m, int status, const char *code, const char *msg)
{
    m->status = status;
    m->code = code;
    qg_strlcpy(m->message, msg, sizeof m->message);
}

static int begin(qg_keystore *ks) { return sqlite3_exec(ks->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1; }

/* Opens the change's transaction and prepares sql with the record's columns bound
 * (bind_record); NULL if the store refused (commit() then says why). */
static sqlite3_stmt *begin_record(qg_keystore *ks, const char *sql, const char *id, const qg_keyrec *r, int64_t now)
{
    sqlite3_stmt *st = NULL;
    if (begin(ks) < 0 || sqlite3_prepare_v2(ks->db, sql, -1, &st, NULL) != SQLITE_OK) return NULL;
    bind_record(st, id, r, now);
    return st;
}

/* Commits, or rolls back and says why in the reply. */
static int commit(qg_keystore *ks, keyop_msg *m, bool ok)
{
    if (ok && sqlite3_exec(ks->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) return 0;
    char why[200];
    snprintf(why, sizeof why, "the store refused the change: %s", sqlite3_errmsg(ks->db));
    sqlite3_exec(ks->db, "ROLLBACK", NULL, NULL, NULL);
    qg_warn("store: key %s: %s", m->id, why);
    fail(m, 503, "store_error", why);
    return -1;
}

static void hex_of(const uint8_t *b, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) out[2 * i] = hx[b[i] >> 4], out[2 * i + 1] = hx[b[i] & 15];
    out[2 * n] = 0;
}

static void op_create(qg_keystore *ks, keyop_msg *m, int64_t now)
{
    if (!(m->spec.present & QG_KS_NAME) || !m->spec.k.name) {
        fail(m, 400, "invalid_request", "body:1: name: is required");
        return;
    }
    uint8_t raw[24], idb[8], hash[32];
    do {
        if (RAND_bytes(idb, sizeof idb) != 1) {
            fail(m, 500, "internal_error", "no random bytes for a key id");
            return;
        }
        memcpy(m->id, "key_", 4);
        hex_of(idb, sizeof idb, m->id + 4);
    } while (qg_keydir_by_id(ks->dir, qg_slice_of(m->id)));
    if (RAND_bytes(raw, sizeof raw) != 1) {
        fail(m, 500, "internal_error", "no random bytes for a key secret");
        return;
    }
    memcpy(m->secret, "qg-", 3);
    hex_of(raw, sizeof raw, m->secret + 3);
    OPENSSL_cleanse(raw, sizeof raw);
    qg_key_hash(m->secret, strlen(m->secret), hash);
    char prefix[QG_KEY_PREFIX_LEN + 1];
    qg_strlcpy(prefix, m->secret, sizeof prefix);
    qg_keyrec *r = qg_keyrec_new(&m->spec.k, NULL);
    r->created_ms = r->updated_ms = now;
    sqlite3_stmt *st = begin_record(ks,
                                    "INSERT INTO api_key(id,name,status,expires_ms,total_quota_micro,models,created_ms,"
                                    "updated_ms,hash,prefix) VALUES(?1,?2,?3,?4,?5,?6,?7,?7,?8,?9)",
                                    m->id, r, now);
    bool ok = st != NULL;
    if (ok) {
        sqlite3_bind_blob(st, 8, hash, sizeof hash, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 9, prefix, -1, SQLITE_TRANSIENT);
        ok = step_done(st) == 0 && write_policies(ks->db, m->id, r, false) == 0;
    }
    if (commit(ks, m, ok) < 0 || qg_keydir_add(ks->dir, m->id, prefix, hash, r) < 0) {
        if (m->status != 503) fail(m, 500, "internal_error", "the key could not be published");
        qg_keyrec_discard(r);
        OPENSSL_cleanse(m->secret, sizeof m->secret);
        return;
    }
    m->status = 201;
    m->rec = r;
    qg_info("admin: key %s (%s) created", m->id, r->name);
}

/* A policy an edit brings in with no counter in memory (none of the key's versions since
 * the start had it) gets what the store holds for it: a policy edited away and back, across
 * a restart, counts on from there, as the store does.  Not published yet: plain restores. */
static void restore_fresh(qg_keystore *ks, const char *id, qg_keyrec *r, int64_t now)
{
    sqlite3_stmt *st = NULL;
    for (int i = 0; i < r->kq->n_p; i++) {
        if (r->kq->p[i].slot != r->kq->p[i].own) continue; /* shared with an earlier version */
        if (!st && sqlite3_prepare_v2(ks->db, "SELECT window,used,gen FROM key_window WHERE key_id=?1 AND policy=?2", -1,
                                      &st, NULL) != SQLITE_OK)
            return;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, (int64_t)r->kq->p[i].signature);
        while (sqlite3_step(st) == SQLITE_ROW)
            qg_keyq_restore_window(r->kq, i, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                                   (unsigned)sqlite3_column_int64(st, 2), now);
    }
    sqlite3_finalize(st);
}

/* The key's fields after a PATCH: the body's where given, else the current version's. */
static void merge(const qg_keyrec *cur, const qg_key_spec *s, qg_key_cfg *out)
{
    unsigned p = s->present;
    out->name = p & QG_KS_NAME && s->k.name ? s->k.name : cur->name;
    out->models = p & QG_KS_MODELS ? s->k.models : cur->models;
    out->n_models = p & QG_KS_MODELS ? s->k.n_models : cur->n_models;
    out->total_quota = p & QG_KS_TOTAL ? s->k.total_quota : cur->total_quota;
    out->expires_ms = p & QG_KS_EXPIRES ? s->k.expires_ms : cur->expires_ms;
    out->disabled = p & QG_KS_STATUS ? s->k.disabled : cur->disabled;
    out->policies = p & QG_KS_POLICIES ? s->k.policies : cur->policies;
    out->n_policies = p & QG_KS_POLICIES ? s->k.n_policies : cur->n_policies;
}

/* The entry an update or delete acts on; NULL after replying 404/409. */
static qg_keyent *target(qg_keystore *ks, keyop_msg *m, const qg_keyrec **cur)
{
    qg_keyent *e = qg_keydir_by_id(ks->dir, qg_slice_of(m->id));
    *cur = e ? qg_keyent_rec(e) : NULL;
    if (!*cur) {
        fail(m, 404, "key_not_found", "no key with that id");
        return NULL;
    }
    if ((*cur)->from_config) {
        fail(m, 409, "key_from_config", "this key is defined in the config file (keys:); change it there");
        return NULL;
    }
    return e;
}

static void op_update(qg_keystore *ks, keyop_msg *m, int64_t now)
{
    const qg_keyrec *cur;
    qg_keyent *e = target(ks, m, &cur);
    if (!e) return;
    if (m->spec.present & QG_KS_NAME && !m->spec.k.name) {
        fail(m, 400, "invalid_request", "body:1: name: may not be null");
        return;
    }
    qg_key_cfg k = {0};
    merge(cur, &m->spec, &k);
    qg_keyrec *r = qg_keyrec_new(&k, cur);
    r->updated_ms = now;
    restore_fresh(ks, m->id, r, now);
    sqlite3_stmt *st = begin_record(ks,
                                    "UPDATE api_key SET name=?2,status=?3,expires_ms=?4,total_quota_micro=?5,models=?6,"
                                    "updated_ms=?7 WHERE id=?1",
                                    m->id, r, now);
    bool ok = st != NULL;
    if (ok) {
        ok = step_done(st) == 0 && (!(m->spec.present & QG_KS_POLICIES) || write_policies(ks->db, m->id, r, true) == 0);
    }
    if (commit(ks, m, ok) < 0) {
        qg_keyrec_discard(r);
        return;
    }
    qg_keydir_publish(ks->dir, e, r);
    m->status = 200;
    m->rec = r;
    qg_info("admin: key %s (%s) updated%s", m->id, r->name, r->disabled != cur->disabled ? (r->disabled ? ": disabled" : ": enabled") : "");
}

static void op_delete(qg_keystore *ks, keyop_msg *m)
{
    const qg_keyrec *cur;
    qg_keyent *e = target(ks, m, &cur);
    if (!e) return;
    static const char *const sql[] = {
        "DELETE FROM api_key WHERE id=?1", "DELETE FROM api_key_policy WHERE key_id=?1",
        "DELETE FROM key_window WHERE key_id=?1", "DELETE FROM key_total WHERE key_id=?1",
        "DELETE FROM key_pause WHERE key_id=?1"};
    bool ok = begin(ks) == 0;
    for (size_t i = 0; ok && i < QG_ARRAY_LEN(sql); i++) ok = run_id(ks->db, sql[i], m->id) == 0;
    if (commit(ks, m, ok) < 0) return;
    qg_info("admin: key %s (%s) deleted", m->id, cur->name);
    qg_keydir_publish(ks->dir, e, NULL);
    m->status = 200;
}

static void apply(qg_keystore *ks, keyop_msg *m)
{
    int64_t now = qg_now_ms();
    if (m->op == QG_KEYOP_CREATE) op_create(ks, m, now);
    else if (m->op == QG_KEYOP_UPDATE) op_update(ks, m, now);
    else op_delete(ks, m);
    qg_key_spec_free(&m->spec);
}

static void serve_op(void *ctx, int worker, void *msg)
{
    qg_keystore *ks = ctx;
    apply(ks, msg);
    qg_mailbox_reply(&ks->mb, worker, msg);
}

static void *keystore_main(void *arg)
{
    qg_keystore *ks = arg;
    qg_mailbox_serve(&ks->mb, &ks->stop, serve_op, ks);
    return NULL;
}

/* ---- counters ---- */

typedef struct {
    qg_keydir *dir;
    int64_t now;
    int n;
} counter_load;

/* A saved counter: the key of that id (O(1)), its policy of that signature.  Counters of
 * keys deleted since, or of policies edited away, match nothing (a pause of a policy edited
 * away restores the reset epoch alone). */
static void load_counter(void *ud, const char *key, uint64_t policy, int64_t window, int64_t used, unsigned gen,
                         bool total)
{
    counter_load *cl = ud;
    qg_keyent *e = qg_keydir_by_id(cl->dir, qg_slice_of(key));
    const qg_keyrec *r = e ? qg_keyent_rec(e) : NULL;
    if (!r) return;
    qg_keyq *k = r->kq;
    int p = qg_keyq_policy_index(k, policy);
    if (total) qg_keyq_restore_total(k, used);
    else if (used == -1) qg_keyq_restore_pause(k, p, window, gen); /* window: the pause's end */
    else qg_keyq_restore_window(k, p, window, used, gen, cl->now);
    cl->n++;
}

int qg_keys_restore_counters(qg_keydir *dir, const char *path, int64_t now, char *err, size_t errlen)
{
    counter_load cl = {dir, now, 0};
    return qg_ledger_load_key_counters(path, load_counter, &cl, err, errlen) < 0 ? -1 : cl.n;
}

void qg_keys_reset(qg_ledger *l, int worker, const qg_keyrec *r, int64_t now)
{
    qg_kq_reset done;
    qg_keyq_reset(r->kq, now, &done);
    qg_ledger_reset_key(l, worker, r->ent->id, done.policy, done.window, done.gen, done.n, done.epoch);
    qg_info("key %s (%s) reset (current windows zeroed, pause ended)", r->ent->id, r->name);
}

/* ---- public ---- */

qg_keystore *qg_keystore_open(const char *path, qg_keydir *dir, int n_workers, char *err, size_t errlen)
{
    qg_keystore *ks = qg_xcalloc(1, sizeof *ks);
    ks->dir = dir;
    if (sqlite3_open_v2(path, &ks->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: %s: %s", path, ks->db ? sqlite3_errmsg(ks->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(ks->db, KEYSTORE_BUSY_MS);
    if (load_keys(ks, err, errlen) < 0) goto fail;
    if (qg_mailbox_init(&ks->mb, n_workers, KEYSTORE_RING) < 0) {
        snprintf(err, errlen, "store: no eventfd for the key store");
        goto fail;
    }
    if (pthread_create(&ks->thread, NULL, keystore_main, ks) != 0) {
        snprintf(err, errlen, "store: cannot start the key store thread");
        qg_mailbox_free(&ks->mb);
        goto fail;
    }
    ks->started = true;
    return ks;
fail:
    sqlite3_close(ks->db);
    free(ks);
    return NULL;
}

size_t qg_keystore_loaded(const qg_keystore *ks) { return ks->loaded; }

void qg_keystore_attach(qg_keystore *ks, int worker, qg_notify *n) { qg_mailbox_attach(&ks->mb, worker, n); }

void qg_keystore_submit(qg_keystore *ks, int worker, qg_keyop op, qg_slice id, qg_key_spec *spec, qg_keystore_cb cb,
                        void *ud)
{
    keyop_msg *m = qg_xcalloc(1, sizeof *m);
    m->op = op;
    if (id.n < sizeof m->id) memcpy(m->id, id.p, id.n);
    if (spec) m->spec = *spec, memset(spec, 0, sizeof *spec);
    m->cb = cb;
    m->ud = ud;
    if (!qg_mailbox_post(&ks->mb, worker, m, true)) {
        qg_keystore_result res = {503, "store_busy", "too many key changes in flight; retry", NULL, NULL, m->id};
        cb(ud, &res);
        qg_key_spec_free(&m->spec);
        free(m);
    }
}

static void msg_free(keyop_msg *m)
{
    OPENSSL_cleanse(m->secret, sizeof m->secret);
    qg_key_spec_free(&m->spec);
    free(m);
}

void qg_keystore_poll(qg_keystore *ks, int worker)
{
    keyop_msg *m;
    while ((m = qg_mailbox_reply_pop(&ks->mb, worker))) {
        qg_keystore_result res = {m->status, m->code, m->message, m->rec, m->secret[0] ? m->secret : NULL, m->id};
        m->cb(m->ud, &res);
        msg_free(m);
    }
}

void qg_keystore_close(qg_keystore *ks)
{
    if (!ks) return;
    if (ks->started) {
        atomic_store(&ks->stop, true);
        qg_mailbox_wake(&ks->mb);
        pthread_join(ks->thread, NULL);
        for (int w = 0; w < ks->mb.n_workers; w++) qg_keystore_poll(ks, w); /* their clients are gone: callbacks free */
        qg_mailbox_free(&ks->mb);
    }
    sqlite3_close(ks->db);
    free(ks);
}
