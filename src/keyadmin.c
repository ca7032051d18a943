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

#include "policy.h"
#include "timefmt.h"

#include <stdio.h>
#include <stdlib.h>

#define LIST_DEFAULT 1000
#define LIST_MAX 1000

static const char *unit_name(qg_unit u) { return u == QG_UNIT_USD ? "usd" : u == QG_UNIT_REQUESTS ? "requests" : "tokens"; }

/* The anchor as it was given: its wall-clock time in its own UTC offset (daily and weekly
 * windows turn at that time), with anchor_ms the instant. */
static void anchor_json(qg_buf *b, const qg_policy_cfg *p)
{
    char t[48];
    int off = p->anchor_offset_min;
    if (p->anchor_ms <= 0 || qg_format_rfc3339(p->anchor_ms + (int64_t)off * 60000, t, sizeof t) <= 0) {
        qg_buf_json_time(b, "anchor", p->anchor_ms);
        return;
    }
    size_t n = strlen(t);
    if (off && n && t[n - 1] == 'Z')
        snprintf(t + n - 1, sizeof t - (n - 1), "%c%02d:%02d", off < 0 ? '-' : '+', abs(off) / 60, abs(off) % 60);
    qg_buf_appendf(b, ",\"anchor\":\"%s\",\"anchor_ms\":%lld", t, (long long)p->anchor_ms);
}

static void policy_json(qg_buf *b, const qg_keyq *k, int i, int64_t now)
{
    const qg_kq_policy *p = &k->p[i];
    qg_kq_status st;
    bool ok = qg_keyq_status(k, i, now, &st) == 0;
    qg_buf_appendf(b, "{\"period\":\"%s\",\"unit\":\"%s\",\"limit\":%lld,\"boundary\":\"%s\",\"on_exhausted\":\"%s\","
                      "\"auto_resume\":%s",
                   p->label, unit_name(p->cfg.unit), (long long)p->limit, p->cfg.strict ? "strict" : "graceful",
                   p->cfg.on_exhausted_disable ? "disable" : "reject", p->cfg.auto_resume ? "true" : "false");
    anchor_json(b, &p->cfg);
    qg_buf_json_time(b, "window_start", ok ? st.w.start_ms : 0);
    qg_buf_json_time(b, "reset", ok ? st.w.end_ms : 0);
    qg_buf_appendf(b, ",\"used\":%lld,\"remaining\":%lld,\"exhausted\":%s}", (long long)(ok ? st.used : 0),
                   (long long)(ok ? st.remaining : 0), ok && st.exhausted ? "true" : "false");
}

/* The pause as the views show it: the pausing policy's index, or -1. */
static int pause_of(const qg_keyq *k, int64_t now, int64_t *until)
{
    uint64_t sig = qg_keyq_pause_info(k, until);
    if (!sig || (*until && *until <= now)) return -1; /* a pause past its end ends with the next request */
    for (int i = 0; i < k->n_p; i++)
        if (k->p[i].signature == sig) return i;
    return -1;
}

static const char *status_of(const qg_keyrec *r, int paused, int64_t now)
{
    if (r->disabled) return "disabled";
    if (qg_keyrec_expired(r, now)) return "expired";
    return paused >= 0 ? "paused" : "active";
}

static void key_json(qg_buf *b, const qg_keyrec *r, int64_t now, const char *secret)
{
    const qg_keyq *k = r->kq;
    int64_t until = 0;
    int paused = pause_of(k, now, &until);
    qg_buf_puts(b, "{\"id\":");
    qg_buf_json_str(b, r->ent->id);
    qg_buf_puts(b, ",\"name\":");
    qg_buf_json_str(b, r->name);
    if (secret) {
        qg_buf_puts(b, ",\"key\":");
        qg_buf_json_str(b, secret);
    }
    qg_buf_appendf(b, ",\"source\":\"%s\",\"prefix\":", r->from_config ? "config" : "store");
    if (r->ent->prefix[0]) qg_buf_json_str(b, r->ent->prefix);
    else qg_buf_puts(b, "null");
    qg_buf_appendf(b, ",\"status\":\"%s\",\"disabled\":%s", status_of(r, paused, now), r->disabled ? "true" : "false");
    qg_buf_json_time(b, "expires_at", r->expires_ms);
    qg_buf_json_time(b, "created_at", r->created_ms);
    qg_buf_json_time(b, "updated_at", r->updated_ms);
    qg_buf_puts(b, ",\"paused\":");
    if (paused >= 0) {
        qg_buf_appendf(b, "{\"policy\":\"%s\",\"manual_reset\":%s", k->p[paused].label, until ? "false" : "true");
        qg_buf_json_time(b, "until", until);
        qg_buf_puts(b, "}");
    } else {
        qg_buf_puts(b, "null");
    }
    qg_buf_puts(b, ",\"models\":");
    if (!r->n_models) qg_buf_puts(b, "null");
    for (size_t i = 0; i < r->n_models; i++) {
        qg_buf_puts(b, i ? "," : "[");
        qg_buf_json_str(b, r->models[i]);
        if (i + 1 == r->n_models) qg_buf_puts(b, "]");
    }
    if (k->total_limit >= 0)
        qg_buf_appendf(b, ",\"total_quota\":{\"limit_usd_micro\":%lld,\"used_usd_micro\":%lld}", (long long)k->total_limit,
                       (long long)atomic_load(&k->sh->total_committed));
    else qg_buf_puts(b, ",\"total_quota\":null");
    qg_buf_puts(b, ",\"policies\":[");
    for (int i = 0; i < k->n_p; i++) {
        if (i) qg_buf_puts(b, ",");
        policy_json(b, k, i, now);
    }
    qg_buf_puts(b, "]}");
}

static void respond_buf(qg_conn *c, int status, qg_buf *b)
{
    qg_respond_json(c, status, b->data, b->len);
    qg_buf_free(b);
}

static void respond_key(qg_conn *c, int status, const qg_keyrec *r, const char *secret)
{
    qg_buf b;
    qg_buf_init(&b, 0);
    key_json(&b, r, qg_now_ms(), secret);
    respond_buf(c, status, &b);
}

static void bad_request(qg_conn *c, const char *msg) { qg_respond_error(c, QG_DIALECT_OPENAI, 400, "invalid_request", msg, 0); }

/* ---- the request object of a change (waits for the key store) ---- */

typedef struct {
    qg_api_req req;
    qg_conn *c;                   /* NULL once the client left */
    qg_keyop op;
    char id[QG_KEY_ID_MAX];
    int status_change;            /* enable/disable: 1 active, 2 disabled; 0 from the body */
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
        while (errs.len && errs.data[errs.len - 1] == '\n') errs.len--; /* one message; lines joined by "; " */
        for (size_t i = 0; i < errs.len; i++)
            if (errs.data[i] == '\n') errs.data[i] = ';';
        qg_buf_append(&errs, "", 1);
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

static int query_int(qg_slice qs, const char *name, int64_t *out, char *str, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = qs.p, *end = qs.p + qs.n; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > nl && !memcmp(p, name, nl) && p[nl] == '=') {
            char *v = qg_url_decode((qg_slice){p + nl + 1, (size_t)(e - p) - nl - 1}, true);
            if (!v) return -1;
            int rc = 1;
            if (str) {
                if (strlen(v) >= cap) rc = -1;
                else qg_strlcpy(str, v, cap);
            } else {
                char *end_num;
                long long x = strtoll(v, &end_num, 10);
                if (!*v || *end_num || x < 1) rc = -1;
                else *out = x;
            }
            free(v);
            return rc;
        }
        p = e + 1;
    }
    return 0;
}

static void list_keys(qg_worker *w, qg_conn *c, const qg_http_msg *m)
{
    qg_slice t = m->target, path = qg_api_path(t);
    qg_slice qs = path.n < t.n ? (qg_slice){t.p + path.n + 1, t.n - path.n - 1} : (qg_slice){"", 0};
    int64_t limit = LIST_DEFAULT;
    char after[QG_KEY_ID_MAX] = "";
    if (query_int(qs, "limit", &limit, NULL, 0) < 0 || query_int(qs, "after", NULL, after, sizeof after) < 0) {
        bad_request(c, "bad query: limit is a positive integer, after a key id");
        return;
    }
    limit = QG_MIN(limit, (int64_t)LIST_MAX);
    const qg_keydir *d = w->gw->keys;
    uint32_t from = 0, n = qg_keydir_count(d);
    if (after[0]) {
        const qg_keyent *e = qg_keydir_by_id(d, qg_slice_of(after));
        if (!e) {
            qg_respond_error(c, QG_DIALECT_OPENAI, 404, "key_not_found", "no key with the id given as after", 0);
            return;
        }
        from = e->seq + 1;
    }
    int64_t now = qg_now_ms(), shown = 0;
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    const char *next = NULL;
    for (uint32_t s = from; s < n; s++) {
        const qg_keyent *e = qg_keydir_at(d, s);
        const qg_keyrec *r = qg_keyent_rec(e);
        if (!r) continue;
        if (shown == limit) {
            next = qg_keydir_at(d, s - 1)->id; /* more follow: continue after the last one shown */
            break;
        }
        if (shown++) qg_buf_puts(&b, ",");
        key_json(&b, r, now, NULL);
    }
    qg_buf_puts(&b, "],\"next\":");
    if (next) {
        /* the last key shown is the cursor, even if keys between it and s were deleted */
        qg_buf_json_str(&b, next);
    } else {
        qg_buf_puts(&b, "null");
    }
    qg_buf_puts(&b, "}");
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

/* The manual reset: the current windows zeroed and any pause ended, in memory now and in
 * the store through the writer. */
static void reset_key(qg_worker *w, const qg_keyrec *r, int64_t now)
{
    qg_keyq *k = r->kq;
    qg_keyq_reset(k, now);
    uint64_t sig[QG_KEY_MAX_POLICIES];
    int64_t win[QG_KEY_MAX_POLICIES];
    int n = 0;
    for (int p = 0; p < k->n_p; p++) {
        qg_kq_status st;
        if (qg_keyq_status(k, p, now, &st) < 0) continue;
        sig[n] = k->p[p].signature, win[n++] = st.w.index;
    }
    qg_ledger_reset_key(w->gw->ledger, w->id, r->ent->id, sig, win, n);
    qg_info("admin: key %s (%s) reset (current windows zeroed, pause ended)", r->ent->id, r->name);
}

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
        if (action == A_RESET) reset_key(w, r, qg_now_ms());
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

static void drift_done(void *ud, int status, const char *json, size_t len)
{
    key_req *a = ud;
    if (a->c) {
        a->c->req_ud = NULL;
        qg_respond_json(a->c, status, json, len);
    }
    free(a);
}

/* Every key's policy windows, settled amounts as the counters hold them; keys with a
 * request in flight are skipped (their counters hold estimates). */
static int drift_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *route)
{
    (void)route;
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
    key_req *a = new_change(c, QG_KEYOP_UPDATE, (qg_slice){"", 0});
    a->posted = true;
    qg_ledger_check_counters(w->gw->ledger, w->id, probes, n, skipped, drift_done, a);
    return QG_HEAD_ANSWERED;
}

static const qg_api_route key_routes[] = {
    {"/admin/keys", NULL, QG_DIALECT_OPENAI, keys_on_head, change_on_request, NULL, change_on_close, NULL},
    {"/admin/keys/*", NULL, QG_DIALECT_OPENAI, key_on_head, change_on_request, NULL, change_on_close, NULL},
    {"/admin/drift", "GET", QG_DIALECT_OPENAI, drift_on_head, NULL, NULL, change_on_close, NULL},
};

void qg_keyadmin_register(qg_api *api)
{
    for (size_t i = 0; i < QG_ARRAY_LEN(key_routes); i++) qg_api_add(api, &key_routes[i]);
}
