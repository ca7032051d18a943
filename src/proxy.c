/*
 * proxy.c — the life of one proxied request (a qg_exchange): authenticate, read the model,
 * route, send upstream (retrying on the next account while nothing has reached the
 * client), relay the response — SSE event by event with backpressure — extract usage,
 * and write exactly one ledger row however the request ends.
 *
 * Ends of an exchange (each writes the row, then frees):
 *   finish_ok       the upstream response ended cleanly and was relayed
 *   finish_error    answered with a gateway error before anything was relayed
 *   finish_broken   the upstream broke after the response started: the client gets an
 *                   error event (SSE) and an unterminated body, never a clean end
 *   client_gone     the client disconnected: the upstream transfer is aborted
 * The body the client sent is kept only until the response starts (retries need it).
 */
#include "gateway.h"

#include "dialect.h"
#include "jscan.h"
#include "sse.h"
#include "timefmt.h"
#include "usage.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#define MAX_ATTEMPTS 10
#define USAGE_BODY_CAP (8u << 20) /* non-stream bodies kept for usage extraction */

typedef struct {
    const char *path;
    qg_dialect dialect;
    const char *name;
    bool splice_usage;            /* OpenAI streams that support stream_options.include_usage */
    bool billable;                /* consumes tokens (count_tokens does not) */
} endpoint;

static const endpoint endpoints[] = {
    {"/v1/chat/completions", QG_DIALECT_OPENAI, "chat.completions", true, true},
    {"/v1/completions", QG_DIALECT_OPENAI, "completions", true, true},
    {"/v1/embeddings", QG_DIALECT_OPENAI, "embeddings", false, true},
    {"/v1/responses", QG_DIALECT_OPENAI, "responses", false, true},
    {"/v1/messages", QG_DIALECT_ANTHROPIC, "messages", false, true},
    {"/v1/messages/count_tokens", QG_DIALECT_ANTHROPIC, "messages.count_tokens", false, false},
};

typedef struct {
    int kind;                     /* QG_REQ_PROXY */
    qg_worker *w;
    qg_conn *c;
    qg_upconn *u;
    const endpoint *ep;
    const qg_route *route;
    const qg_target *target;
    const qg_key_cfg *key;
    qg_slice target_uri;          /* into fwd: the client's path and query */
    int tried[MAX_ATTEMPTS];
    int attempts;
    qg_buf body;                  /* the client's body (until the response starts) */
    size_t body_len;              /* its length, kept for estimates after it is freed */
    qg_deferred retry;            /* next attempt, run outside the upstream's callback */
    qg_deferred flush;            /* sends a response head that no body bytes followed */
    qg_buf fwd;                   /* forwarded client headers, then the path */
    qg_buf up_head;               /* this attempt's request head */
    size_t splice_off, splice_del;
    const char *splice_ins;
    size_t path_off;              /* where the path starts inside fwd */
    bool stream;                  /* the client asked for a stream */
    bool strip_usage_chunk;       /* we added include_usage: drop the usage-only chunk */
    bool started;                 /* response head sent to the client */
    bool sse;
    bool usage_overflow;
    int status;                   /* sent to the client (499 if it left) */
    int relayed_status;           /* the provider status relayed to the client, 0 if none */
    int last_up_status;           /* last upstream HTTP status seen on a failed attempt */
    int retry_after_s;
    qg_uperr last_err;
    qg_sse_parser parser;
    qg_usage_stream us;
    qg_buf resp_body;             /* non-stream body copy for usage */
    int64_t t_start_us, t_first_us;
    qg_ledger_row *row;
} qg_exchange;

static void start_attempt(qg_exchange *ex);

/* ---- small helpers ---- */

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

static qg_slice presented_key(const qg_http_msg *m)
{
    qg_slice k = qg_http_header(m, "x-api-key");
    if (k.p && k.n) return k;
    qg_slice a = qg_http_header(m, "authorization");
    if (a.n > 7 && strncasecmp(a.p, "Bearer ", 7) == 0) return qg_slice_trim((qg_slice){a.p + 7, a.n - 7});
    return (qg_slice){NULL, 0};
}

static qg_slice path_only(qg_slice target)
{
    const char *q = memchr(target.p, '?', target.n);
    return q ? (qg_slice){target.p, (size_t)(q - target.p)} : target;
}

static void copy_field(char *dst, size_t cap, const char *src) { qg_strlcpy(dst, src, cap); }

/* "qg-<worker>-<hex seq>" without printf. */
static void make_request_id(char *out, size_t cap, int worker, uint64_t seq)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[40];
    size_t i = sizeof tmp;
    tmp[--i] = 0;
    do tmp[--i] = hex[seq & 15];
    while (seq >>= 4);
    tmp[--i] = '-';
    do tmp[--i] = (char)('0' + worker % 10);
    while (worker /= 10);
    tmp[--i] = '-', tmp[--i] = 'g', tmp[--i] = 'q';
    qg_strlcpy(out, tmp + i, cap);
}

static double ms_since(int64_t from_us, int64_t to_us) { return from_us && to_us ? (double)(to_us - from_us) / 1000.0 : 0; }

/* ---- ending an exchange ---- */

static void settle_usage(qg_exchange *ex)
{
    qg_ledger_row *r = ex->row;
    qg_usage u = {0};
    if (ex->sse) u = ex->us.usage;
    else if (ex->resp_body.len && !ex->usage_overflow) qg_usage_from_json(ex->ep->dialect, ex->resp_body.data, ex->resp_body.len, &u);
    if (u.found) {
        r->prompt_tokens = u.input_tokens;
        r->completion_tokens = u.output_tokens;
        r->cached_tokens = u.cached_tokens;
        r->cache_write_tokens = u.cache_write_tokens;
        r->reasoning_tokens = u.reasoning_tokens;
        copy_field(r->usage_source, sizeof r->usage_source, "upstream");
    }
    /* A response that was relayed but cut (or never reported usage) is charged what it
     * consumed, never zero: the prompt (reported, else bytes/4) plus the content events
     * already relayed. */
    bool consumed = ex->relayed_status && ex->relayed_status < 300 && ex->ep->billable;
    bool cut = ex->sse && !ex->us.terminal;
    if (consumed && (cut || !u.found)) {
        if (!u.input_tokens) r->prompt_tokens = (int64_t)QG_MAX(ex->body_len, (size_t)4) / 4;
        r->completion_tokens = QG_MAX(r->completion_tokens, ex->us.delta_events);
        copy_field(r->usage_source, sizeof r->usage_source, "estimated");
    }
    if (!r->usage_source[0]) copy_field(r->usage_source, sizeof r->usage_source, "none");
}

static void exchange_free(qg_exchange *ex)
{
    qg_worker *w = ex->w;
    if (ex->row) {
        ex->row->status = ex->status;
        ex->row->attempts = ex->attempts;
        ex->row->total_ms = ms_since(ex->t_start_us, qg_mono_us());
        ex->row->ttfb_ms = ms_since(ex->t_start_us, ex->t_first_us);
        if (ex->target) {
            copy_field(ex->row->provider, sizeof ex->row->provider, ex->target->p->name);
            copy_field(ex->row->account, sizeof ex->row->account, ex->target->a->name);
        }
        settle_usage(ex);
        qg_ledger_submit(w->gw->ledger, w->id, ex->row);
    }
    if (ex->c) ex->c->req_ud = NULL;
    qg_defer_cancel(w->loop, &ex->flush);
    qg_defer_cancel(w->loop, &ex->retry);
    qg_buf_free(&ex->body);
    qg_buf_free(&ex->fwd);
    qg_buf_free(&ex->up_head);
    qg_buf_free(&ex->resp_body);
    qg_sse_free(&ex->parser);
    w->n_exchanges--;
    free(ex);
}

static void set_error(qg_exchange *ex, const char *code) { copy_field(ex->row->error, sizeof ex->row->error, code); }

static void finish_error(qg_exchange *ex, int status, const char *code, const char *msg, int retry_after)
{
    ex->status = status;
    set_error(ex, code);
    qg_respond_error(ex->c, ex->ep->dialect, status, code, msg, retry_after);
    exchange_free(ex);
}

/* The upstream broke after the client saw the response start. */
static void finish_broken(qg_exchange *ex, const char *why)
{
    set_error(ex, "upstream_broken");
    if (ex->sse) {
        qg_buf ev;
        qg_buf_init(&ev, 0);
        char msg[160];
        snprintf(msg, sizeof msg, "the upstream stream broke before it finished (%s)", why);
        qg_buf_append(&ev, ex->ep->dialect == QG_DIALECT_ANTHROPIC ? "event: error\ndata: " : "data: ",
                      ex->ep->dialect == QG_DIALECT_ANTHROPIC ? 19 : 6);
        qg_dialect_error_body(&ev, ex->ep->dialect, 502, "upstream_error", msg);
        qg_buf_append(&ev, "\n\n", 2);
        qg_conn_send(ex->c, ev.data, ev.len);
        qg_buf_free(&ev);
    }
    qg_conn_abort(ex->c); /* unterminated body: never a fabricated clean end */
    exchange_free(ex);
}

/* ---- upstream callbacks ---- */

static bool retryable_status(int st) { return st == 429 || st == 401 || st == 403 || st >= 500; }

static void retry_later_cb(qg_deferred *d);
static void flush_head_cb(qg_deferred *d);

static void try_next_or_fail(qg_exchange *ex)
{
    int max = ex->w->gw->cfg->limits.retry_attempts;
    if (ex->attempts < max && ex->attempts < MAX_ATTEMPTS && qg_route_pick(ex->route, ex->w->cursors, ex->tried, ex->attempts) >= 0) {
        start_attempt(ex);
        return;
    }
    if (ex->last_up_status == 429) {
        finish_error(ex, 503, "no_account_available",
                     "every account tried for this model is rate limited by the provider; retry later", QG_MAX(ex->retry_after_s, 1));
    } else if (ex->last_up_status == 401 || ex->last_up_status == 403) {
        finish_error(ex, 502, "upstream_error", "the provider rejected the gateway's account credentials", 0);
    } else if (ex->last_up_status >= 500) {
        char msg[96];
        snprintf(msg, sizeof msg, "the provider failed on every attempt (last status %d)", ex->last_up_status);
        finish_error(ex, 502, "upstream_error", msg, 0);
    } else if (ex->last_err == QG_UPERR_TIMEOUT || ex->last_err == QG_UPERR_IDLE_TIMEOUT) {
        finish_error(ex, 504, "upstream_timeout", "the provider did not answer in time on any attempt", 0);
    } else {
        char msg[96];
        snprintf(msg, sizeof msg, "could not reach the provider on any attempt (%s)", qg_uperr_name(ex->last_err));
        finish_error(ex, 502, "upstream_error", msg, 0);
    }
}

static void build_response_head(qg_exchange *ex, const qg_http_msg *resp, qg_buf *h)
{
    for (size_t i = 0; i < resp->n_headers; i++) {
        qg_slice n = resp->headers[i].name;
        if (qg_http_is_hop_header(n) || qg_slice_ieq(n, "date") || qg_slice_ieq(n, "server")) continue;
        qg_buf_append(h, n.p, n.n);
        qg_buf_append(h, ": ", 2);
        qg_buf_append(h, resp->headers[i].value.p, resp->headers[i].value.n);
        qg_buf_append(h, "\r\n", 2);
    }
    qg_buf_puts(h, "x-quotagate-request-id: ");
    qg_buf_puts(h, ex->row->request_id);
    qg_buf_puts(h, "\r\n");
}

static void on_up_head(void *ud, const qg_http_msg *resp)
{
    qg_exchange *ex = ud;
    ex->t_first_us = qg_mono_us();
    if (retryable_status(resp->status)) {
        ex->last_up_status = resp->status;
        int64_t delay;
        qg_slice ra = qg_http_header(resp, "retry-after");
        ex->retry_after_s = ra.p && qg_parse_retry_after(ra, qg_now_ms(), &delay) == 0 ? (int)((delay + 999) / 1000) : 0;
        qg_upconn_abort(ex->u);
        ex->u = NULL;
        /* Not from inside the upstream's callback: continue after this loop iteration. */
        qg_defer(ex->w->loop, &ex->retry, retry_later_cb, ex);
        return;
    }
    ex->started = true;
    ex->status = ex->relayed_status = resp->status;
    qg_slice ct = qg_http_header(resp, "content-type");
    ex->sse = ct.n >= 17 && strncasecmp(ct.p, "text/event-stream", 17) == 0;
    qg_buf h;
    qg_buf_init(&h, 0);
    build_response_head(ex, resp, &h);
    int64_t len = -1;
    if (!ex->sse && !resp->chunked && resp->content_length >= 0) len = resp->content_length;
    qg_conn_start(ex->c, resp->status, h.data, h.len, len);
    qg_buf_free(&h);
    if (ex->sse) {
        qg_sse_init(&ex->parser, ex->w->gw->cfg->limits.max_sse_event);
        qg_usage_stream_init(&ex->us, ex->ep->dialect);
    } else if (resp->status < 300) {
        qg_buf_init(&ex->resp_body, USAGE_BODY_CAP);
    }
    /* The body is no longer needed for retries. */
    qg_buf_free(&ex->body);
    qg_buf_free(&ex->fwd);
    qg_buf_free(&ex->up_head);
    /* Usually body bytes follow in this same read and carry the head out in one writev;
     * if none do (a stream's first event is still coming), flush after this iteration. */
    qg_defer(ex->w->loop, &ex->flush, flush_head_cb, ex);
}

static void flush_head_cb(qg_deferred *d)
{
    qg_exchange *ex = d->ud;
    if (ex->c && qg_conn_send(ex->c, NULL, 0) == 1 && ex->u) qg_upconn_pause(ex->u);
}

static void retry_later_cb(qg_deferred *d)
{
    qg_exchange *ex = d->ud;
    if (!ex->c) { /* the client left while we waited */
        exchange_free(ex);
        return;
    }
    try_next_or_fail(ex);
}

typedef struct {
    qg_exchange *ex;
    qg_buf *stage;
} sse_ctx;

static int on_sse_event(void *ud, const qg_sse_event *ev)
{
    sse_ctx *sc = ud;
    qg_exchange *ex = sc->ex;
    int flags = ev->has_data ? qg_usage_stream_event(&ex->us, ev->event, ev->data) : 0;
    if ((flags & QG_EV_USAGE_ONLY) && ex->strip_usage_chunk) return 0;
    return qg_buf_append(sc->stage, ev->raw.p, ev->raw.n) < 0 ? -1 : 0;
}

static void on_up_data(void *ud, char *data, size_t n)
{
    qg_exchange *ex = ud;
    int rc;
    if (ex->sse) {
        qg_buf *stage = &ex->w->stage;
        qg_buf_reset(stage);
        sse_ctx sc = {ex, stage};
        if (qg_sse_feed(&ex->parser, data, n, on_sse_event, &sc) != QG_SSE_OK) {
            qg_upconn_abort(ex->u);
            ex->u = NULL;
            finish_broken(ex, "event larger than max_sse_event");
            return;
        }
        if (!stage->len) return;
        rc = qg_conn_send(ex->c, stage->data, stage->len);
    } else {
        if (ex->resp_body.max && !ex->usage_overflow && qg_buf_append(&ex->resp_body, data, n) < 0) {
            ex->usage_overflow = true;
            qg_buf_free(&ex->resp_body);
        }
        rc = qg_conn_send(ex->c, data, n);
    }
    if (rc == 1) qg_upconn_pause(ex->u);
    /* rc < 0: the client is gone; on_close arrives from the server and aborts us. */
}

static void on_up_done(void *ud)
{
    qg_exchange *ex = ud;
    ex->u = NULL;
    if (ex->sse) {
        qg_buf *stage = &ex->w->stage;
        qg_buf_reset(stage);
        sse_ctx sc = {ex, stage};
        qg_sse_finish(&ex->parser, on_sse_event, &sc); /* a final block held for a possible CRLF */
        /* the body ended inside an event: forward the fragment as is; the client sees the cut */
        qg_slice rest = qg_sse_pending(&ex->parser);
        qg_buf_append(stage, rest.p, rest.n);
        if (stage->len) qg_conn_send(ex->c, stage->data, stage->len);
    }
    qg_conn_end(ex->c);
    exchange_free(ex);
}

static void on_up_error(void *ud, qg_uperr err)
{
    qg_exchange *ex = ud;
    ex->u = NULL;
    ex->last_err = err;
    if (ex->started) {
        finish_broken(ex, qg_uperr_name(err));
        return;
    }
    ex->last_up_status = 0;
    try_next_or_fail(ex);
}

static const qg_upstream_cbs upstream_cbs = {on_up_head, on_up_data, on_up_done, on_up_error};

/* ---- request construction ---- */

static void start_attempt(qg_exchange *ex)
{
    int t = qg_route_pick(ex->route, ex->w->cursors, ex->tried, ex->attempts);
    ex->tried[ex->attempts++] = t;
    ex->target = &ex->route->targets[t];
    const qg_provider_cfg *p = ex->target->p;
    qg_buf *h = &ex->up_head;
    qg_buf_reset(h);
    qg_slice path = {ex->fwd.data + ex->path_off, ex->fwd.len - ex->path_off};
    qg_buf_puts(h, "POST ");
    qg_buf_puts(h, p->base_path);
    qg_buf_append(h, path.p, path.n);
    qg_buf_puts(h, " HTTP/1.1\r\n");
    qg_buf_append(h, ex->target->head_lines, ex->target->head_lines_len);
    size_t ins_len = ex->splice_ins ? strlen(ex->splice_ins) : 0;
    qg_buf_puts(h, "Content-Length: ");
    qg_buf_put_int(h, (int64_t)(ex->body.len - ex->splice_del + ins_len));
    qg_buf_puts(h, "\r\n");
    qg_buf_append(h, ex->fwd.data, ex->path_off);
    qg_buf_append(h, "\r\n", 2);
    struct iovec iov[4];
    int n = 0;
    iov[n++] = (struct iovec){h->data, h->len};
    if (ex->splice_ins) {
        iov[n++] = (struct iovec){ex->body.data, ex->splice_off};
        iov[n++] = (struct iovec){(void *)ex->splice_ins, ins_len};
        iov[n++] = (struct iovec){ex->body.data + ex->splice_off + ex->splice_del,
                                  ex->body.len - ex->splice_off - ex->splice_del};
    } else {
        iov[n++] = (struct iovec){ex->body.data, ex->body.len};
    }
    ex->u = qg_upstream_send(ex->w->ups[ex->target->prov], iov, n, &upstream_cbs, ex);
}

/* Copies the client headers worth forwarding, then the request target (path + query). */
static void build_forward_headers(qg_exchange *ex, const qg_http_msg *m)
{
    static const qg_slice drop[] = {QG_SLICE_LIT("authorization"), QG_SLICE_LIT("x-api-key"), QG_SLICE_LIT("expect"),
                                    QG_SLICE_LIT("accept-encoding"), QG_SLICE_LIT("openai-organization"),
                                    QG_SLICE_LIT("openai-project"), QG_SLICE_LIT("cookie")};
    qg_buf *f = &ex->fwd;
    for (size_t i = 0; i < m->n_headers; i++) {
        qg_slice n = m->headers[i].name;
        bool skip = qg_http_is_hop_header(n);
        for (size_t k = 0; !skip && k < QG_ARRAY_LEN(drop); k++) skip = qg_slices_ieq(n, drop[k]);
        if (skip) continue;
        qg_buf_append(f, n.p, n.n);
        qg_buf_append(f, ": ", 2);
        qg_buf_append(f, m->headers[i].value.p, m->headers[i].value.n);
        qg_buf_append(f, "\r\n", 2);
    }
    ex->path_off = f->len;
    qg_buf_append(f, m->target.p, m->target.n);
}

/* Decides the include_usage splice for an OpenAI stream (see jscan.h for why a splice).
 * Returns -1 when stream_options is ambiguous (include_usage twice). */
static int plan_usage_splice(qg_exchange *ex, size_t open_off, qg_json_span so)
{
    const char *b = ex->body.data;
    if (so.type == QG_JSON_NONE) {
        ex->splice_off = open_off + 1;
        ex->splice_ins = "\"stream_options\":{\"include_usage\":true},";
    } else if (so.type != QG_JSON_OBJECT) {
        ex->splice_off = so.off;
        ex->splice_del = so.len;
        ex->splice_ins = "{\"include_usage\":true}";
    } else {
        static const char *const iu[] = {"include_usage"};
        qg_json_span u;
        size_t inner_open;
        const char *why;
        if (qg_jscan_object(b + so.off, so.len, iu, 1, &u, &inner_open, &why) < 0) return -1;
        if (u.type == QG_JSON_TRUE) return 0; /* the client asked for usage itself */
        if (u.type != QG_JSON_NONE) {
            ex->splice_off = so.off + u.off;
            ex->splice_del = u.len;
            ex->splice_ins = "true";
        } else {
            bool empty = so.len == 2 || memchr(b + so.off + 1, '"', so.len - 2) == NULL;
            ex->splice_off = so.off + inner_open + 1;
            ex->splice_ins = empty ? "\"include_usage\":true" : "\"include_usage\":true,";
        }
    }
    ex->strip_usage_chunk = true;
    return 0;
}

static bool model_allowed(const qg_key_cfg *k, const char *model)
{
    if (!k->n_models) return true;
    for (size_t i = 0; i < k->n_models; i++)
        if (strcmp(k->models[i], model) == 0) return true;
    return false;
}

static void proxy_request(qg_worker *w, qg_conn *c, const qg_http_msg *m, qg_buf *body, const endpoint *ep)
{
    qg_gateway *gw = w->gw;
    qg_exchange *ex = qg_xcalloc(1, sizeof *ex);
    ex->kind = QG_REQ_PROXY;
    ex->w = w;
    ex->c = c;
    ex->ep = ep;
    ex->t_start_us = qg_mono_us();
    ex->row = qg_ledger_row_new();
    ex->row->ts_ms = qg_now_ms();
    make_request_id(ex->row->request_id, sizeof ex->row->request_id, w->id, ++w->seq);
    copy_field(ex->row->endpoint, sizeof ex->row->endpoint, ep->name);
    qg_buf_init(&ex->fwd, 0);
    qg_buf_init(&ex->up_head, 0);
    qg_buf_init(&ex->resp_body, 0);
    ex->body = *body; /* take the body over from the connection */
    ex->body_len = body->len;
    qg_buf_init(body, 0);
    w->n_exchanges++;
    c->req_ud = ex;

    ex->key = qg_keytab_auth(&gw->keys, presented_key(m));
    if (!ex->key) {
        finish_error(ex, 401, "invalid_api_key", "missing or unknown API key", 0);
        return;
    }
    copy_field(ex->row->key_name, sizeof ex->row->key_name, ex->key->name);

    static const char *const wanted[] = {"model", "stream", "stream_options"};
    qg_json_span f[3];
    size_t open_off = 0;
    const char *why = "empty body";
    if (!ex->body.len || qg_jscan_object(ex->body.data, ex->body.len, wanted, 3, f, &open_off, &why) < 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is not valid JSON: %s", why);
        finish_error(ex, 400, "invalid_request", msg, 0);
        return;
    }
    char model[128];
    if (qg_json_string_value(ex->body.data, f[0], model, sizeof model) <= 0) {
        finish_error(ex, 400, "invalid_request", "the request body has no \"model\" string", 0);
        return;
    }
    copy_field(ex->row->model, sizeof ex->row->model, model);
    ex->stream = f[1].type == QG_JSON_TRUE;
    ex->row->stream = ex->stream;
    ex->route = qg_router_find(&gw->router, ep->dialect, qg_slice_of(model));
    if (!ex->route) {
        const qg_route *other = qg_router_find(&gw->router, !ep->dialect, qg_slice_of(model));
        char msg[256];
        if (other) {
            snprintf(msg, sizeof msg, "model %s is served in the %s dialect only; call its endpoint instead", model,
                     qg_dialect_name(!ep->dialect));
            finish_error(ex, 400, "invalid_request", msg, 0);
        } else {
            snprintf(msg, sizeof msg, "no provider serves the model %s", model);
            finish_error(ex, 404, "model_not_found", msg, 0);
        }
        return;
    }
    if (!model_allowed(ex->key, model)) {
        finish_error(ex, 403, "model_not_allowed", "this API key may not use that model", 0);
        return;
    }
    if (ep->splice_usage && ex->stream && plan_usage_splice(ex, open_off, f[2]) < 0) {
        finish_error(ex, 400, "invalid_request", "stream_options.include_usage appears twice", 0);
        return;
    }
    build_forward_headers(ex, m);
    start_attempt(ex);
}

/* ---- GET /v1/models ---- */

static void list_models(qg_worker *w, qg_conn *c, const qg_http_msg *m)
{
    qg_gateway *gw = w->gw;
    bool anthropic = qg_http_header(m, "anthropic-version").p != NULL;
    if (!qg_keytab_auth(&gw->keys, presented_key(m))) {
        qg_respond_error(c, anthropic ? QG_DIALECT_ANTHROPIC : QG_DIALECT_OPENAI, 401, "invalid_api_key",
                         "missing or unknown API key", 0);
        return;
    }
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_buf_append(&b, anthropic ? "{\"data\":[" : "{\"object\":\"list\",\"data\":[", anthropic ? 9 : 25);
    const qg_router *r = &gw->router;
    for (size_t i = 0; i < r->n_routes; i++) {
        const qg_route *rt = &r->routes[i];
        if (anthropic)
            qg_buf_appendf(&b, "%s{\"type\":\"model\",\"id\":\"%s\",\"display_name\":\"%s\",\"created_at\":\"1970-01-01T00:00:00Z\"}",
                           i ? "," : "", rt->model, rt->model);
        else
            qg_buf_appendf(&b, "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":0,\"owned_by\":\"%s\"}", i ? "," : "",
                           rt->model, rt->targets[0].p->name);
    }
    if (anthropic)
        qg_buf_appendf(&b, "],\"has_more\":false,\"first_id\":%s%s%s,\"last_id\":%s%s%s}", r->n_routes ? "\"" : "",
                       r->n_routes ? r->routes[0].model : "null", r->n_routes ? "\"" : "", r->n_routes ? "\"" : "",
                       r->n_routes ? r->routes[r->n_routes - 1].model : "null", r->n_routes ? "\"" : "");
    else qg_buf_append(&b, "]}", 2);
    qg_respond_json(c, 200, b.data, b.len);
    qg_buf_free(&b);
}

/* ---- server handler ---- */

static void on_request(qg_conn *c, const qg_http_msg *m, qg_buf *body)
{
    qg_worker *w = c->srv->app;
    qg_slice path = path_only(m->target);
    bool post = qg_slice_eq(m->method, "POST");
    for (size_t i = 0; i < QG_ARRAY_LEN(endpoints); i++) {
        if (!qg_slice_eq(path, endpoints[i].path)) continue;
        if (!post) {
            qg_respond_error(c, endpoints[i].dialect, 405, "method_not_allowed", "use POST for this endpoint", 0);
            return;
        }
        proxy_request(w, c, m, body, &endpoints[i]);
        return;
    }
    if (qg_slice_eq(path, "/v1/models") && (qg_slice_eq(m->method, "GET") || qg_slice_eq(m->method, "HEAD"))) {
        list_models(w, c, m);
        return;
    }
    if (qg_admin_route(w, c, m)) return;
    qg_respond_error(c, QG_DIALECT_OPENAI, 404, "not_found", "no such endpoint", 0);
}

static void on_drain(qg_conn *c)
{
    qg_exchange *ex = c->req_ud;
    if (ex && ex->kind == QG_REQ_PROXY && ex->u) qg_upconn_resume(ex->u);
}

static void on_close(qg_conn *c)
{
    int *kind = c->req_ud;
    if (!kind) return;
    if (*kind == QG_REQ_ADMIN) {
        qg_admin_on_close(c);
        return;
    }
    qg_exchange *ex = (qg_exchange *)kind;
    ex->c = NULL;
    ex->status = 499; /* nginx's "client closed request" */
    set_error(ex, "client_closed");
    if (ex->u) {
        qg_upconn_abort(ex->u);
        ex->u = NULL;
        exchange_free(ex);
    }
    /* else a retry is pending in the deferred queue; retry_later_cb frees it */
}

const qg_handler qg_gateway_handler = {on_request, on_drain, on_close};
