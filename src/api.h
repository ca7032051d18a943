/*
 * api.h — the gateway's HTTP surface: one route table, filled at start-up by each
 * endpoint module (proxy.c: the provider APIs; admin.c: /healthz and the /admin API), and the
 * server handler that dispatches to it, plus the response helpers every module uses.
 *
 * Dispatch happens on the request head (SPEC §3: whatever the head decides is answered
 * before the body is read): an unknown path is a 404 and a wrong method a 405, in the
 * error shape of the route's dialect, and the route's own on_head may answer at once
 * (unknown key) or ask for the body, which then arrives in on_request.
 *
 * Ownership: routes are static descriptions owned by their modules; the table holds
 * pointers and is immutable once serving starts.  A module's per-request object, hung
 * on qg_conn.req_ud, starts with a qg_api_req so that backpressure and close events
 * reach the module that owns it.
 */
#ifndef QG_API_H
#define QG_API_H

#include "gateway.h"

typedef struct qg_api_route qg_api_route;

struct qg_api_route {
    const char *path;          /* exact path (no query), or a prefix ending in an asterisk (/admin/accounts/ then any rest) */
    const char *method;        /* "GET" also accepts HEAD; NULL: any (the handler checks) */
    qg_dialect dialect;        /* the error shape on this path */
    /* From the head: answer (now, or later holding the conn through req_ud) and return
     * QG_HEAD_ANSWERED, or hang the module's request object on c->req_ud and return
     * QG_HEAD_READ_BODY to get on_request with the body (on_close if it never comes). */
    int (*on_head)(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *r);
    void (*on_request)(qg_worker *w, qg_conn *c, const qg_http_msg *m, qg_buf *body);
    void (*on_drain)(qg_conn *c);
    void (*on_close)(qg_conn *c);
    const void *data;          /* the module's own description of the endpoint */
};

/* The first member of every per-request object on qg_conn.req_ud. */
typedef struct {
    const qg_api_route *route;
} qg_api_req;

#define QG_API_MAX_ROUTES 64

struct qg_api {
    const qg_api_route *routes[QG_API_MAX_ROUTES];
    size_t path_len[QG_API_MAX_ROUTES]; /* strlen of each route's path: most lookups stop at a length */
    size_t n_routes;
};

void qg_api_add(qg_api *api, const qg_api_route *r);
/* The route for a path, ignoring the method; NULL if none. */
const qg_api_route *qg_api_find(const qg_api *api, qg_slice path);
/* The path of a request target (without the query). */
qg_slice qg_api_path(qg_slice target);
/* Its query (after '?'; empty if none). */
qg_slice qg_api_query(qg_slice target);
/* The next name=value pair of a query (*rest advances; the value still percent-encoded);
 * false at its end.  Pairs without '=' are skipped. */
bool qg_api_query_next(qg_slice *rest, qg_slice *name, qg_slice *value);

/* A request answered later with JSON from a service thread (a ledger query): its object on
 * c->req_ud.  The route's on_close must be qg_api_pending_close; qg_api_pending_json is the
 * reply callback (a qg_ledger_result_cb): it answers if the client is still there, then
 * frees the object. */
typedef struct {
    qg_api_req req;
    qg_conn *c;                /* NULL once the client left */
} qg_api_pending;
qg_api_pending *qg_api_pending_new(qg_conn *c, const qg_api_route *r);
void qg_api_pending_json(void *ud, int status, const char *json, size_t len);
void qg_api_pending_close(qg_conn *c);

/* The registrations (each module's routes). */
void qg_proxy_register(qg_api *api);
void qg_admin_register(qg_api *api);
void qg_keyadmin_register(qg_api *api);
/* Percent-decodes into a fresh string ('+' is a space in query strings only); NULL on bad
 * escapes or NUL bytes. */
char *qg_url_decode(qg_slice v, bool plus_is_space);
/* The admin token check shared by the operator endpoints: answers 401/403 itself. */
bool qg_admin_authorized(qg_worker *w, qg_conn *c, const qg_http_msg *m);

/* Writes an error response in the dialect's shape (and Retry-After when retry_after_s > 0). */
void qg_respond_error(qg_conn *c, qg_dialect d, int status, const char *code, const char *message, int retry_after_s);
void qg_respond_json(qg_conn *c, int status, const char *json, size_t len);

extern const qg_handler qg_api_handler;

#endif
