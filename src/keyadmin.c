/*
 * keyadmin.c — the operator's view of API keys and their quota (SPEC §5): GET /admin/keys,
 * GET /admin/keys/{id}, POST /admin/keys/{id}/reset.  Keys are the static ones from the
 * config for now (their id is their name); admin-managed keys in the store join the same
 * views.  The JSON is rendered from the live counters (keyquota.h), no store round trip.
 */
#include "api.h"

#include "policy.h"
#include "timefmt.h"

#include <stdio.h>
#include <stdlib.h>



static const char *unit_name(qg_unit u) { return u == QG_UNIT_USD ? "usd" : u == QG_UNIT_REQUESTS ? "requests" : "tokens"; }

static void policy_json(qg_buf *b, const qg_keyq *k, int i, int64_t now)
{
    const qg_kq_policy *p = &k->p[i];
    qg_kq_status st;
    bool ok = qg_keyq_status(k, i, now, &st) == 0;
    qg_buf_appendf(b, "{\"period\":\"%s\",\"unit\":\"%s\",\"limit\":%lld,\"boundary\":\"%s\",\"on_exhausted\":\"%s\","
                      "\"auto_resume\":%s",
                   p->label, unit_name(p->cfg.unit), (long long)p->limit, p->cfg.strict ? "strict" : "graceful",
                   p->cfg.on_exhausted_disable ? "disable" : "reject", p->cfg.auto_resume ? "true" : "false");
    qg_buf_json_time(b, "anchor", p->cfg.anchor_ms);
    qg_buf_json_time(b, "window_start", ok ? st.w.start_ms : 0);
    qg_buf_json_time(b, "reset", ok ? st.w.end_ms : 0);
    qg_buf_appendf(b, ",\"used\":%lld,\"remaining\":%lld,\"exhausted\":%s}", (long long)(ok ? st.used : 0),
                   (long long)(ok ? st.remaining : 0), ok && st.exhausted ? "true" : "false");
}

static void key_json(qg_buf *b, const qg_key_cfg *kc, const qg_keyq *k, int64_t now)
{
    qg_buf_puts(b, "{\"id\":");
    qg_buf_json_str(b, kc->name);
    qg_buf_puts(b, ",\"name\":");
    qg_buf_json_str(b, kc->name);
    int64_t until;
    uint64_t paused = qg_keyq_pause_info(k, &until);
    if (paused && until && until <= now) paused = 0; /* ends with the next request */
    qg_buf_appendf(b, ",\"source\":\"config\",\"status\":\"%s\",\"paused\":", paused ? "paused" : "active");
    if (paused) {
        int pi = 0;
        while (pi < k->n_p && k->p[pi].signature != paused) pi++;
        qg_buf_appendf(b, "{\"policy\":\"%s\",\"manual_reset\":%s", pi < k->n_p ? k->p[pi].label : "?", until ? "false" : "true");
        qg_buf_json_time(b, "until", until);
        qg_buf_puts(b, "}");
    } else {
        qg_buf_puts(b, "null");
    }
    qg_buf_puts(b, ",\"models\":");
    if (!kc->n_models) qg_buf_puts(b, "null");
    for (size_t i = 0; i < kc->n_models; i++) {
        qg_buf_puts(b, i ? "," : "[");
        qg_buf_json_str(b, kc->models[i]);
        if (i + 1 == kc->n_models) qg_buf_puts(b, "]");
    }
    if (k->total_limit >= 0)
        qg_buf_appendf(b, ",\"total_quota\":{\"limit_usd_micro\":%lld,\"used_usd_micro\":%lld}", (long long)k->total_limit,
                       (long long)atomic_load(&((qg_keyq *)k)->total_committed));
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

static int keys_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *r)
{
    if (!qg_admin_authorized(w, c, m)) return QG_HEAD_ANSWERED;
    const qg_config *cfg = w->gw->cfg;
    int64_t now = qg_now_ms();
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < cfg->n_keys; i++) {
        if (i) qg_buf_puts(&b, ",");
        key_json(&b, &cfg->keys[i], w->gw->keyq[i], now);
    }
    qg_buf_puts(&b, "]}");
    respond_buf(c, 200, &b);
    return QG_HEAD_ANSWERED;
}

static int key_index(const qg_config *cfg, qg_slice id)
{
    for (size_t i = 0; i < cfg->n_keys; i++)
        if (qg_slice_eq(id, cfg->keys[i].name)) return (int)i;
    return -1;
}

/* The manual reset: the current windows zeroed and any pause ended, in memory now and in
 * the store through the writer. */
static void reset_key(qg_worker *w, int i, int64_t now)
{
    qg_keyq *k = w->gw->keyq[i];
    qg_keyq_reset(k, now);
    uint64_t sig[QG_KEY_MAX_POLICIES];
    int64_t win[QG_KEY_MAX_POLICIES];
    int n = 0;
    for (int p = 0; p < k->n_p; p++) {
        qg_kq_status st;
        if (qg_keyq_status(k, p, now, &st) < 0) continue;
        sig[n] = k->p[p].signature, win[n++] = st.w.index;
    }
    qg_ledger_reset_key(w->gw->ledger, w->id, w->gw->cfg->keys[i].name, sig, win, n);
    qg_info("admin: key %s reset (current windows zeroed, pause ended)", w->gw->cfg->keys[i].name);
}

/* GET /admin/keys/{id}, POST /admin/keys/{id}/reset */
static int key_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *r)
{
    if (!qg_admin_authorized(w, c, m)) return QG_HEAD_ANSWERED;
    static const char prefix[] = "/admin/keys/";
    qg_slice path = qg_api_path(m->target);
    qg_slice rest = {path.p + sizeof prefix - 1, path.n - (sizeof prefix - 1)};
    bool is_reset = rest.n > 6 && memcmp(rest.p + rest.n - 6, "/reset", 6) == 0;
    qg_slice id = is_reset ? (qg_slice){rest.p, rest.n - 6} : rest;
    bool get = qg_slice_eq(m->method, "GET") || qg_slice_eq(m->method, "HEAD");
    if (!id.n || memchr(id.p, '/', id.n)) {
        qg_respond_error(c, QG_DIALECT_OPENAI, 404, "not_found", "use GET /admin/keys/{id} or POST /admin/keys/{id}/reset", 0);
        return QG_HEAD_ANSWERED;
    }
    if (is_reset ? !qg_slice_eq(m->method, "POST") : !get) {
        qg_respond_error(c, QG_DIALECT_OPENAI, 405, "method_not_allowed", is_reset ? "use POST for a reset" : "use GET", 0);
        return QG_HEAD_ANSWERED;
    }
    char *decoded = qg_url_decode(id, false); /* ids are names: any byte but space and '/' */
    int i = decoded ? key_index(w->gw->cfg, qg_slice_of(decoded)) : -1;
    free(decoded);
    if (i < 0) {
        qg_respond_error(c, QG_DIALECT_OPENAI, 404, "key_not_found", "no key with that id", 0);
        return QG_HEAD_ANSWERED;
    }
    int64_t now = qg_now_ms();
    if (is_reset) reset_key(w, i, now);
    qg_buf b;
    qg_buf_init(&b, 0);
    key_json(&b, &w->gw->cfg->keys[i], w->gw->keyq[i], now);
    respond_buf(c, 200, &b);
    return QG_HEAD_ANSWERED;
}

static const qg_api_route key_routes[] = {
    {"/admin/keys", "GET", QG_DIALECT_OPENAI, keys_on_head, NULL, NULL, NULL, NULL},
    {"/admin/keys/*", NULL, QG_DIALECT_OPENAI, key_on_head, NULL, NULL, NULL, NULL},
};

void qg_keyadmin_register(qg_api *api)
{
    for (size_t i = 0; i < QG_ARRAY_LEN(key_routes); i++) qg_api_add(api, &key_routes[i]);
}
