/*
 * admin.c — operator endpoints served by the gateway itself: GET /healthz (no auth) and
 * GET /admin/usage (admin token), the ledger with filters; GET /admin/accounts, POST
 * /admin/accounts/{name}/enable|disable and GET /api/quotas, the quota engine's views
 * (accounts.h renders them from the shared account table, no store round trip).  The ledger query runs on the
 * ledger's query thread; this module only parses the query string, hands it over and
 * answers when the result comes back on the worker's loop.  More endpoints join in later
 * issues (keys, accounts, quotas, metrics, dashboard): each is a row in admin_routes,
 * registered into the gateway's route table (api.h) by qg_admin_register.
 */
#include "api.h"
#include "keys.h"

#include "dialect.h"
#include "timefmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

/* A time filter: RFC 3339 or epoch milliseconds. */
static int parse_time(const char *s, int64_t *ms)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s && !*end && v >= 0) {
        *ms = v;
        return 0;
    }
    return qg_parse_rfc3339(qg_slice_of(s), ms);
}

static int parse_usage_query(qg_slice qs, qg_usage_query *q, const char **bad)
{
    memset(q, 0, sizeof *q);
    q->limit = 100;
    qg_slice name, raw;
    while (qg_api_query_next(&qs, &name, &raw)) {
        char *val = qg_url_decode(raw, true);
        if (!val) {
            *bad = "bad percent-encoding in the query";
            return -1;
        }
        char **slot = NULL;
        if (qg_slice_eq(name, "key")) slot = &q->key_id;
        else if (qg_slice_eq(name, "account")) slot = &q->account;
        else if (qg_slice_eq(name, "provider")) slot = &q->provider;
        else if (qg_slice_eq(name, "model")) slot = &q->model;
        if (slot) {
            free(*slot);
            *slot = val;
            continue;
        }
        int rc = 0;
        if (qg_slice_eq(name, "since")) rc = parse_time(val, &q->since_ms);
        else if (qg_slice_eq(name, "until")) rc = parse_time(val, &q->until_ms);
        else if (qg_slice_eq(name, "limit")) {
            q->limit = atoi(val);
            rc = q->limit > 0 ? 0 : -1;
        } else {
            rc = -1;
        }
        free(val);
        if (rc < 0) {
            *bad = "unknown filter or bad value (filters: key, account, provider, model, since, until, limit)";
            return -1;
        }
    }
    return 0;
}

static void free_query(qg_usage_query *q)
{
    free(q->key_id), free(q->account), free(q->provider), free(q->model);
}

static int healthz_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *r)
{
    qg_gateway *gw = w->gw;
    char b[320];
    bool draining = atomic_load(&gw->command) != 0;
    int64_t requests = 0;
    for (int i = 0; i < gw->n_workers; i++) requests += atomic_load_explicit(&gw->workers[i].requests, memory_order_relaxed);
    qg_ledger_stats_t ls;
    qg_ledger_stats(gw->ledger, &ls);
    int n = snprintf(b, sizeof b,
                     "{\"status\":\"%s\",\"workers\":%d,\"connections\":%d,\"requests\":%lld,\"ledger_rows\":%lld,"
                     "\"ledger_backlog\":%zu,\"ledger_commits_failed\":%lld,\"uptime_s\":%lld}",
                     draining ? "draining" : "ok", gw->n_workers, atomic_load(&gw->conn_count), (long long)requests,
                     (long long)ls.rows_written, ls.backlog, (long long)ls.commits_failed,
                     (long long)((qg_now_ms() - gw->started_ms) / 1000));
    qg_respond_json(c, draining ? 503 : 200, b, (size_t)n);
    return QG_HEAD_ANSWERED;
}

bool qg_admin_authorized(qg_worker *w, qg_conn *c, const qg_http_msg *m)
{
    const char *token = w->gw->cfg->admin_token;
    if (!token || !*token) {
        qg_respond_error(c, QG_DIALECT_OPENAI, 403, "admin_disabled", "the admin API is disabled: set admin_token in the config", 0);
        return false;
    }
    if (!qg_secret_equal(qg_http_bearer(m), token)) {
        qg_respond_error(c, QG_DIALECT_OPENAI, 401, "invalid_admin_token", "missing or wrong admin token", 0);
        return false;
    }
    return true;
}

static int usage_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *r)
{
    if (!qg_admin_authorized(w, c, m)) return QG_HEAD_ANSWERED;
    qg_slice qs = qg_api_query(m->target);
    qg_usage_query uq;
    const char *bad = NULL;
    if (parse_usage_query(qs, &uq, &bad) < 0) {
        free_query(&uq);
        qg_respond_error(c, QG_DIALECT_OPENAI, 400, "invalid_request", bad, 0);
        return QG_HEAD_ANSWERED;
    }
    qg_ledger_query(w->gw->ledger, w->id, &uq, qg_api_pending_json, qg_api_pending_new(c, r));
    return QG_HEAD_ANSWERED;
}

static void respond_buf(qg_conn *c, int status, qg_buf *b)
{
    qg_respond_json(c, status, b->data, b->len);
    qg_buf_free(b);
}

static int accounts_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *r)
{
    if (!qg_admin_authorized(w, c, m)) return QG_HEAD_ANSWERED;
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_accounts_json(&b, &w->gw->accounts, qg_now_ms());
    respond_buf(c, 200, &b);
    return QG_HEAD_ANSWERED;
}

static int quotas_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *r)
{
    if (!qg_admin_authorized(w, c, m)) return QG_HEAD_ANSWERED;
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_quotas_json(&b, &w->gw->accounts, qg_now_ms());
    respond_buf(c, 200, &b);
    return QG_HEAD_ANSWERED;
}

/* POST /admin/accounts/{name}/enable|disable, name = "account" or "provider/account". */
static int account_action_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *r)
{
    if (!qg_admin_authorized(w, c, m)) return QG_HEAD_ANSWERED;
    static const char prefix[] = "/admin/accounts/";
    qg_slice path = qg_api_path(m->target);
    qg_slice rest = {path.p + sizeof prefix - 1, path.n - (sizeof prefix - 1)};
    const char *slash = rest.n ? memrchr(rest.p, '/', rest.n) : NULL;
    qg_slice action = slash ? (qg_slice){slash + 1, (size_t)(rest.p + rest.n - slash - 1)} : (qg_slice){"", 0};
    bool enable = qg_slice_eq(action, "enable"), disable = qg_slice_eq(action, "disable");
    if (!slash || (!enable && !disable)) {
        qg_respond_error(c, QG_DIALECT_OPENAI, 404, "not_found", "use POST /admin/accounts/{name}/enable or /disable", 0);
        return QG_HEAD_ANSWERED;
    }
    qg_slice name = {rest.p, (size_t)(slash - rest.p)};
    char *decoded = qg_url_decode(name, false);
    bool ambiguous = false;
    qg_qacct *a = decoded ? qg_accounts_find(&w->gw->accounts, qg_slice_of(decoded), &ambiguous) : NULL;
    free(decoded);
    if (!a) {
        qg_respond_error(c, QG_DIALECT_OPENAI, ambiguous ? 409 : 404, ambiguous ? "ambiguous_account" : "account_not_found",
                         ambiguous ? "several providers have an account of that name: use provider/name"
                                   : "no configured account of that name",
                         0);
        return QG_HEAD_ANSWERED;
    }
    int64_t now = qg_now_ms();
    if (enable) qg_quota_enable(a, now);
    else qg_quota_disable(a, now);
    qg_accounts_save(w->gw->ledger, w->id, a, now, true);
    qg_info("admin: account %s/%s %s", a->provider, a->name, enable ? "enabled" : "disabled");
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_accounts_json_one(&b, a, now);
    respond_buf(c, 200, &b);
    return QG_HEAD_ANSWERED;
}

static const qg_api_route admin_routes[] = {
    {"/healthz", "GET", QG_DIALECT_OPENAI, healthz_on_head, NULL, NULL, NULL, NULL},
    {"/admin/usage", "GET", QG_DIALECT_OPENAI, usage_on_head, NULL, NULL, qg_api_pending_close, NULL},
    {"/admin/accounts", "GET", QG_DIALECT_OPENAI, accounts_on_head, NULL, NULL, NULL, NULL},
    {"/admin/accounts/*", "POST", QG_DIALECT_OPENAI, account_action_on_head, NULL, NULL, NULL, NULL},
    {"/api/quotas", "GET", QG_DIALECT_OPENAI, quotas_on_head, NULL, NULL, NULL, NULL},
};

void qg_admin_register(qg_api *api)
{
    for (size_t i = 0; i < QG_ARRAY_LEN(admin_routes); i++) qg_api_add(api, &admin_routes[i]);
}
