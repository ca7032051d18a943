/*
 * keyadmin.c — the operator's API keys (SPEC §5): GET/POST /admin/keys, GET/PATCH/DELETE
 * /admin/keys/{id}, POST /admin/keys/{id}/reset|enable|disable, and GET /admin/drift.
 *
 * Reads come from the key directory and the live counters (keydir.h, keyquota.h), with no
 * store round trip.  Changes go to the key store's thread (keystore.h), which commits them
 * and publishes the new version before the reply; the connection waits for it on its
 * request object (a client that leaves meanwhile gets nothing, and the change still
 * happens).  Static keys from the config are shown and can be reset, not changed here.
 */
#include "api.h"

#include "keyview.h"
#include "timefmt.h"

#include <stdio.h>
#include <stdlib.h>

#define LIST_DEFAULT 1000
#define LIST_MAX 1000

static void respond_buf(qg_conn *c, int status, qg_buf *b)
{
    qg_respond_json(c, status, b->data, b->len);
    qg_buf_free(b);
}

static void respond_key(qg_conn *c, int status, const qg_keyrec *r, const char *secret)
{
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_key_json(&b, r, qg_now_ms(), secret);
    respond_buf(c, status, &b);
}

static void bad_request(qg_conn *c, const char *msg) { qg_respond_error(c, QG_DIALECT_OPENAI, 400, "invalid_request", msg, 0); }

/* ---- the request object of a change (waits for the key store) ---- */

typedef struct {
    qg_api_req req;
    qg_conn *c;                   /* NULL once the client left */
    qg_keyop op;
    char id[QG_KEY_ID_MAX];
    bool posted;                  /* the store has it: its reply frees this */
} key_req;

static void change_done(void *ud, const qg_keystore_result *res)
{
    key_req *a = ud;
    if (a->c) {
        a->c->req_ud = NULL;
        if (res->code) qg_respond_error(a->c, QG_DIALECT_OPENAI, res->status, res->code, res->message, 0);
        else if (res->rec) respond_key(a->c, res->status, res->rec, res->secret);
        else {
            qg_buf b;
            qg_buf_init(&b, 0);
            qg_buf_puts(&b, "{\"id\":");
            qg_buf_json_str(&b, res->id);
            qg_buf_puts(&b, ",\"deleted\":true}");
            respond_buf(a->c, res->status, &b);
        }
    }
    free(a);
}

static void change_on_close(qg_conn *c)
{
    key_req *a = c->req_ud;
    if (a->posted) a->c = NULL; /* the reply still comes; change_done frees */
    else free(a);
    c->req_ud = NULL;
}

static void post_change(qg_worker *w, key_req *a, qg_key_spec *spec)
{
    a->posted = true;
    qg_keystore_submit(w->gw->keystore, w->id, a->op, qg_slice_of(a->id), spec, change_done, a);
}

static void change_on_request(qg_worker *w, qg_conn *c, const qg_http_msg *m, qg_buf *body)
{
    (void)m;
    key_req *a = c->req_ud;
    qg_key_spec spec;
    qg_buf errs;
    qg_buf_init(&errs, 4096);
    if (qg_key_spec_parse(body->data ? body->data : "", body->len, &spec, &errs) < 0) {
        c->req_ud = NULL;
        free(a);
        bad_request(c, errs.data ? errs.data : "bad body");
        qg_buf_free(&errs);
        return;
    }
    qg_buf_free(&errs);
    post_change(w, a, &spec);
}

static const qg_api_route change_route = {"/admin/keys/*", NULL, QG_DIALECT_OPENAI, NULL, change_on_request, NULL,
                                          change_on_close, NULL};

static key_req *new_change(qg_conn *c, qg_keyop op, qg_slice id)
{
    key_req *a = qg_xcalloc(1, sizeof *a);
    a->req.route = &change_route;
    a->c = c;
    a->op = op;
    if (id.n < sizeof a->id) memcpy(a->id, id.p, id.n);
    c->req_ud = a;
    return a;
}

/* ---- GET /admin/keys, POST /admin/keys ---- */

/* ?limit=N (a positive integer) and ?after=ID; others are ignored.  -1 on a bad value. */
static int list_query(qg_slice qs, int64_t *limit, char *after, size_t cap)
{
    qg_slice name, raw;
    while (qg_api_query_next(&qs, &name, &raw)) {
        bool is_limit = qg_slice_eq(name, "limit");
        if (!is_limit && !qg_slice_eq(name, "after")) continue;
        char *v = qg_url_decode(raw, true), *end = NULL;
        long long x = v && is_limit ? strtoll(v, &end, 10) : 0;
        bool ok = v && (is_limit ? *v && !*end && x >= 1 : strlen(v) < cap);
        if (ok && is_limit) *limit = x;
        else if (ok) qg_strlcpy(after, v, cap);
        free(v);
        if (!ok) return -1;
    }
    return 0;
}

static void list_keys(qg_worker *w, qg_conn *c, const qg_http_msg *m)
{
    int64_t limit = LIST_DEFAULT;
    char after[QG_KEY_ID_MAX] = "";
    if (list_query(qg_api_query(m->target), &limit, after, sizeof after) < 0) {
        bad_request(c, "bad query: limit is a positive integer, after a key id");
        return;
    }
    limit = QG_MIN(limit, (int64_t)LIST_MAX);
    const qg_keydir *d = w->gw->keys;
    uint32_t from = 0;
    if (after[0]) {
        const qg_keyent *e = qg_keydir_by_id(d, qg_slice_of(after));
        if (!e) {
            qg_respond_error(c, QG_DIALECT_OPENAI, 404, "key_not_found", "no key with the id given as after", 0);
            return;
        }
        from = e->seq + 1;
    }
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_key_list_json(&b, d, from, limit, qg_now_ms());
    respond_buf(c, 200, &b);
}

static int keys_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *r)
{
    (void)r;
    if (!qg_admin_authorized(w, c, m)) return QG_HEAD_ANSWERED;
    if (qg_slice_eq(m->method, "GET") || qg_slice_eq(m->method, "HEAD")) {
        list_keys(w, c, m);
        return QG_HEAD_ANSWERED;
    }
    if (!qg_slice_eq(m->method, "POST")) {
        qg_respond_error(c, QG_DIALECT_OPENAI, 405, "method_not_allowed", "use GET or POST", 0);
        return QG_HEAD_ANSWERED;
    }
    new_change(c, QG_KEYOP_CREATE, (qg_slice){"", 0});
    return QG_HEAD_READ_BODY;
}

/* ---- /admin/keys/{id}[/reset|/enable|/disable] ---- */

static bool ends_with(qg_slice s, const char *suffix, qg_slice *rest)
{
    size_t n = strlen(suffix);
    if (s.n <= n || memcmp(s.p + s.n - n, suffix, n) != 0) return false;
    *rest = (qg_slice){s.p, s.n - n};
    return true;
}

static int key_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *route)
{
    (void)route;
    if (!qg_admin_authorized(w, c, m)) return QG_HEAD_ANSWERED;
    static const char prefix[] = "/admin/keys/";
    qg_slice path = qg_api_path(m->target);
    qg_slice rest = {path.p + sizeof prefix - 1, path.n - (sizeof prefix - 1)}, id = rest;
    enum { A_KEY, A_RESET, A_ENABLE, A_DISABLE } action = A_KEY;
    if (ends_with(rest, "/reset", &id)) action = A_RESET;
    else if (ends_with(rest, "/enable", &id)) action = A_ENABLE;
    else if (ends_with(rest, "/disable", &id)) action = A_DISABLE;
    if (!id.n || memchr(id.p, '/', id.n)) {
        qg_respond_error(c, QG_DIALECT_OPENAI, 404, "not_found",
                         "use /admin/keys/{id}, or POST /admin/keys/{id}/reset|enable|disable", 0);
        return QG_HEAD_ANSWERED;
    }
    qg_slice method = m->method;
    bool get = qg_slice_eq(method, "GET") || qg_slice_eq(method, "HEAD");
    bool allowed = action != A_KEY ? qg_slice_eq(method, "POST")
                                   : get || qg_slice_eq(method, "PATCH") || qg_slice_eq(method, "DELETE");
    if (!allowed) {
        qg_respond_error(c, QG_DIALECT_OPENAI, 405, "method_not_allowed",
                         action != A_KEY ? "use POST" : "use GET, PATCH or DELETE", 0);
        return QG_HEAD_ANSWERED;
    }
    char *decoded = qg_url_decode(id, false); /* config keys' ids are their names: any byte but space and '/' */
    qg_keyent *e = decoded ? qg_keydir_by_id(w->gw->keys, qg_slice_of(decoded)) : NULL;
    free(decoded);
    const qg_keyrec *r = e ? qg_keyent_rec(e) : NULL;
    if (!r) {
        qg_respond_error(c, QG_DIALECT_OPENAI, 404, "key_not_found", "no key with that id", 0);
        return QG_HEAD_ANSWERED;
    }
    if (get || action == A_RESET) {
        if (action == A_RESET) qg_keys_reset(w->gw->ledger, w->id, r, qg_now_ms());
        respond_key(c, 200, r, NULL);
        return QG_HEAD_ANSWERED;
    }
    qg_slice eid = qg_slice_of(e->id);
    if (qg_slice_eq(method, "PATCH")) {
        new_change(c, QG_KEYOP_UPDATE, eid);
        return QG_HEAD_READ_BODY;
    }
    key_req *a = new_change(c, action == A_KEY ? QG_KEYOP_DELETE : QG_KEYOP_UPDATE, eid);
    qg_key_spec spec = {.k.total_quota = -1};
    if (action != A_KEY) spec.present = QG_KS_STATUS, spec.k.disabled = action == A_DISABLE;
    post_change(w, a, action == A_KEY ? NULL : &spec);
    return QG_HEAD_ANSWERED;
}

/* ---- GET /admin/drift ---- */

/* Every key's policy windows, settled amounts as the counters hold them; keys with a
 * request in flight are skipped (their counters hold estimates). */
static int drift_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *route)
{
    if (!qg_admin_authorized(w, c, m)) return QG_HEAD_ANSWERED;
    const qg_keydir *d = w->gw->keys;
    size_t n = 0, cap = 0;
    qg_counter_probe *probes = NULL;
    int skipped = 0;
    int64_t now = qg_now_ms();
    for (uint32_t s = 0, count = qg_keydir_count(d); s < count; s++) {
        const qg_keyent *e = qg_keydir_at(d, s);
        const qg_keyrec *r = qg_keyent_rec(e);
        if (!r || !r->kq->n_p) continue;
        for (int i = 0; i < r->kq->n_p; i++) {
            int64_t window, used;
            if (qg_keyq_settled(r->kq, i, now, &window, &used) < 0) {
                skipped += i == 0;
                break;
            }
            if (n == cap) probes = qg_xrealloc(probes, (cap = cap ? 2 * cap : 64) * sizeof *probes);
            probes[n] = (qg_counter_probe){.policy = r->kq->p[i].signature, .window = window, .used = used};
            qg_strlcpy(probes[n++].key, e->id, sizeof probes[0].key);
        }
    }
    qg_ledger_check_counters(w->gw->ledger, w->id, probes, n, skipped, qg_api_pending_json, qg_api_pending_new(c, route));
    return QG_HEAD_ANSWERED;
}

static const qg_api_route key_routes[] = {
    {"/admin/keys", NULL, QG_DIALECT_OPENAI, keys_on_head, change_on_request, NULL, change_on_close, NULL},
    {"/admin/keys/*", NULL, QG_DIALECT_OPENAI, key_on_head, change_on_request, NULL, change_on_close, NULL},
    {"/admin/drift", "GET", QG_DIALECT_OPENAI, drift_on_head, NULL, NULL, qg_api_pending_close, NULL},
};

void qg_keyadmin_register(qg_api *api)
{
    for (size_t i = 0; i < QG_ARRAY_LEN(key_routes); i++) qg_api_add(api, &key_routes[i]);
}
