/*
 * api.c — the route table and the server handler over it.  See api.h.
 */
#include "api.h"

#include <stdio.h>

void qg_api_add(qg_api *api, const qg_api_route *r)
{
    if (api->n_routes == QG_API_MAX_ROUTES) {
        qg_error("api: more than %d routes; %s not served", QG_API_MAX_ROUTES, r->path);
        return;
    }
    api->path_len[api->n_routes] = strlen(r->path);
    api->routes[api->n_routes++] = r;
}

qg_slice qg_api_path(qg_slice target)
{
    const char *q = memchr(target.p, '?', target.n);
    return q ? (qg_slice){target.p, (size_t)(q - target.p)} : target;
}

qg_slice qg_api_query(qg_slice target)
{
    qg_slice path = qg_api_path(target);
    return path.n < target.n ? (qg_slice){target.p + path.n + 1, target.n - path.n - 1} : (qg_slice){"", 0};
}

bool qg_api_query_next(qg_slice *rest, qg_slice *name, qg_slice *value)
{
    while (rest->n) {
        const char *amp = memchr(rest->p, '&', rest->n);
        qg_slice pair = {rest->p, amp ? (size_t)(amp - rest->p) : rest->n};
        *rest = amp ? (qg_slice){amp + 1, rest->n - pair.n - 1} : (qg_slice){rest->p + rest->n, 0};
        const char *eq = memchr(pair.p, '=', pair.n);
        if (!eq) continue;
        *name = (qg_slice){pair.p, (size_t)(eq - pair.p)};
        *value = (qg_slice){eq + 1, pair.n - name->n - 1};
        return true;
    }
    return false;
}

qg_api_pending *qg_api_pending_new(qg_conn *c, const qg_api_route *r)
{
    qg_api_pending *a = qg_xcalloc(1, sizeof *a);
    a->req.route = r;
    a->c = c;
    c->req_ud = a;
    return a;
}

void qg_api_pending_json(void *ud, int status, const char *json, size_t len)
{
    qg_api_pending *a = ud;
    if (a->c) {
        a->c->req_ud = NULL;
        qg_respond_json(a->c, status, json, len);
    }
    free(a);
}

void qg_api_pending_close(qg_conn *c)
{
    qg_api_pending *a = c->req_ud;
    a->c = NULL; /* the result still arrives; qg_api_pending_json frees */
}

const qg_api_route *qg_api_find(const qg_api *api, qg_slice path)
{
    for (size_t i = 0; i < api->n_routes; i++)
        if (path.n == api->path_len[i] && memcmp(path.p, api->routes[i]->path, path.n) == 0) return api->routes[i];
    for (size_t i = 0; i < api->n_routes; i++) { /* prefix routes: only when no exact one matched */
        size_t n = api->path_len[i] - 1;
        if (api->routes[i]->path[n] == '*' && path.n > n && memcmp(path.p, api->routes[i]->path, n) == 0)
            return api->routes[i];
    }
    return NULL;
}

/* Percent-decodes a query value into a fresh string; NULL on bad escapes or NUL bytes. */
char *qg_url_decode(qg_slice v, bool plus_is_space)
{
    char *out = qg_xmalloc(v.n + 1);
    size_t o = 0;
    for (size_t i = 0; i < v.n; i++) {
        char ch = v.p[i];
        if (ch == '+' && plus_is_space) ch = ' ';
        else if (ch == '%') {
            if (i + 2 >= v.n) goto bad;
            int hi = qg_hex_digit(v.p[i + 1]), lo = qg_hex_digit(v.p[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) goto bad;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        out[o++] = ch;
    }
    out[o] = 0;
    return out;
bad:
    free(out);
    return NULL;
}

void qg_respond_json(qg_conn *c, int status, const char *json, size_t len)
{
    static const char ct[] = "Content-Type: application/json\r\n";
    qg_conn_respond(c, status, ct, sizeof ct - 1, json, len);
}

void qg_respond_error(qg_conn *c, qg_dialect d, int status, const char *code, const char *message, int retry_after_s)
{
    char hdr[128];
    int hl = snprintf(hdr, sizeof hdr, "Content-Type: application/json\r\n");
    if (retry_after_s > 0) hl += snprintf(hdr + hl, sizeof hdr - (size_t)hl, "Retry-After: %d\r\n", retry_after_s);
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_dialect_error_body(&b, d, status, code, message);
    qg_conn_respond(c, status, hdr, (size_t)hl, b.data, b.len);
    qg_buf_free(&b);
}

/* Paths under the Anthropic API answer in its error shape even when no route matches
 * (e.g. /v1/messages/batches). */
static qg_dialect dialect_of_path(qg_slice path)
{
    return path.n >= 12 && memcmp(path.p, "/v1/messages", 12) == 0 ? QG_DIALECT_ANTHROPIC : QG_DIALECT_OPENAI;
}

static bool method_matches(const qg_api_route *r, qg_slice method)
{
    if (!r->method) return true; /* the handler tells the methods apart */
    return qg_slice_eq(method, r->method) || (qg_slice_eq(method, "HEAD") && strcmp(r->method, "GET") == 0);
}

static int api_on_head(qg_conn *c, const qg_http_msg *m)
{
    qg_worker *w = c->srv->app;
    qg_slice path = qg_api_path(m->target);
    const qg_api_route *r = qg_api_find(w->gw->api, path);
    if (!r) {
        qg_respond_error(c, dialect_of_path(path), 404, "not_found", "no such endpoint", 0);
        return QG_HEAD_ANSWERED;
    }
    if (!method_matches(r, m->method)) {
        char msg[64];
        snprintf(msg, sizeof msg, "use %s for this endpoint", r->method);
        qg_respond_error(c, r->dialect, 405, "method_not_allowed", msg, 0);
        return QG_HEAD_ANSWERED;
    }
    return r->on_head(w, c, m, r);
}

static void api_on_request(qg_conn *c, const qg_http_msg *m, qg_buf *body)
{
    qg_api_req *req = c->req_ud;
    req->route->on_request(c->srv->app, c, m, body);
}

static void api_on_drain(qg_conn *c)
{
    qg_api_req *req = c->req_ud;
    if (req && req->route->on_drain) req->route->on_drain(c);
}

static void api_on_close(qg_conn *c)
{
    qg_api_req *req = c->req_ud;
    if (req && req->route->on_close) req->route->on_close(c);
}

/* The route's own dialect when the path is one; else by the path's prefix. */
static qg_dialect api_error_dialect(qg_conn *c, qg_slice target)
{
    qg_worker *w = c->srv->app;
    qg_slice path = qg_api_path(target);
    const qg_api_route *r = qg_api_find(w->gw->api, path);
    return r ? r->dialect : dialect_of_path(path);
}

const qg_handler qg_api_handler = {
    .on_request = api_on_request,
    .on_drain = api_on_drain,
    .on_close = api_on_close,
    .on_head = api_on_head,
    .error_dialect = api_error_dialect,
};
