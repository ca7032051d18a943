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
 * The key is checked from the request head (proxy_on_head): an unknown key gets its 401
 * before the body is read.  An exchange created there that never gets its body (the
 * client left, the body was too large) is freed without a ledger row: no request was
 * made.  The body the client sent is kept only until the response starts (retries need
 * it).  Whether to retry, and what the client hears when every attempt failed, is
 * decided by retry.c from plain values.
 */
#include "api.h"

#include "dialect.h"
#include "errclass.h"
#include "jscan.h"
#include "retry.h"
#include "sse.h"
#include "timefmt.h"
#include "usage.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

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
    qg_api_req req;               /* the route: first, see api.h */
    qg_worker *w;
    qg_conn *c;
    qg_upconn *u;
    const endpoint *ep;
    const qg_route *route;
    const qg_target *target;
    const qg_keyrec *key;         /* the key's version at the head: held to the end (keydir.h) */
    int tried[QG_MAX_ATTEMPTS];
    int attempts;
    qg_attempt_log failures;      /* what the failed attempts said */
    qg_attempt_action pending;    /* after a retryable answer: what retry_later_cb does */
    qg_buf body;                  /* the client's body (until the response starts) */
    size_t body_len;              /* its length, kept for estimates after it is freed */
    qg_deferred retry;            /* next attempt, run outside the upstream's callback */
    qg_deferred flush;            /* sends a response head that no body bytes followed */
    qg_buf fwd;                   /* forwarded client headers, then the path */
    qg_buf up_head;               /* this attempt's request head */
    size_t splice_off, splice_del;
    const char *splice_ins;
    size_t path_off;              /* where the path starts inside fwd */
    bool have_body;               /* on_request ran: the request was made */
    bool stream;                  /* the client asked for a stream */
    bool strip_usage_chunk;       /* we added include_usage: drop the usage-only chunk */
    bool started;                 /* response head sent to the client */
    bool sse;
    bool usage_overflow;
    int status;                   /* sent to the client (499 if it left) */
    int relayed_status;           /* the provider status relayed to the client, 0 if none */
    qg_sse_parser parser;
    qg_usage_stream us;
    qg_buf resp_body;             /* non-stream body copy for usage */
    int64_t t_start_us, t_first_us;
    qg_ledger_row *row;
    /* quota */
    const qg_model_cfg *model;    /* prices and weight, NULL if unconfigured */
    qg_qamount est;               /* reserved per attempt */
    qg_qresv resv;                /* this attempt's reservation on its account */
    qg_rl_snapshot snap;          /* this attempt's rate-limit headers */
    bool holding;                 /* an error answer is being read before deciding */
    int held_status;
    int64_t held_len;             /* its Content-Length, -1 if none */
    qg_buf held_head;             /* its head, ready for the client if relayed */
    qg_buf err_body;              /* its body, at most QG_ERROR_BODY_MAX */
    qg_keyq *kq;                  /* the key's quota counters (NULL: none) */
    qg_kq_resv kresv;             /* the request's reservation on them */
} qg_exchange;

static void start_attempt(qg_exchange *ex, int target);

/* ---- small helpers ---- */

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

/* The account's side of the ledger row: what the call consumed, counted into its buckets
 * in place of the estimate.  An attempt that ended in a classified error was released
 * when it failed; one still open here was made (the provider counts it). */
static void settle_account(qg_exchange *ex, const qg_qamount *actual, int64_t now)
{
    if (!ex->resv.a) return;
    qg_qacct *q = ex->resv.a;
    /* a bucket this request used up is saved at once: a restart must know it */
    bool spent = qg_quota_settle(&ex->resv, actual, now);
    qg_accounts_save(ex->w->gw->ledger, ex->w->id, q, now, spent);
}

/* The key's side: a response that reached the client is charged what it consumed (the
 * row's usage, estimated for a cut stream); anything else consumed nothing and releases
 * the whole reservation (SPEC §4.10). */
static void settle_key(qg_exchange *ex, const qg_qamount *actual, int64_t now)
{
    if (!ex->kq || !ex->kresv.active) return;
    if (ex->relayed_status < 200 || ex->relayed_status >= 300) {
        qg_keyq_release(ex->kq, &ex->kresv);
        return;
    }
    qg_ledger_row *r = ex->row; /* the counters ride with the row: one transaction */
    qg_keyq_settle(ex->kq, &ex->kresv, actual, now);
    for (int i = 0; i < ex->kq->n_p; i++)
        r->key_windows[i].policy = ex->kq->p[i].signature, r->key_windows[i].window = ex->kresv.index[i],
        r->key_windows[i].used = qg_keyq_amount(&ex->kq->p[i].cfg, actual), r->key_windows[i].gen = ex->kresv.gen[i];
    r->n_key_windows = ex->kq->n_p;
    if (ex->kq->total_limit >= 0) r->key_total_usd = actual->v[QG_UNIT_USD];
}

static void exchange_free(qg_exchange *ex)
{
    qg_worker *w = ex->w;
    if (ex->row && !ex->have_body) { /* no request was made (see the top comment) */
        qg_ledger_row_free(ex->row);
        ex->row = NULL;
    }
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
        /* what the call consumed, once, for the account's buckets and the key's policies */
        qg_qamount actual;
        qg_quota_cost(ex->model, ex->row->prompt_tokens, ex->row->completion_tokens, &actual);
        int64_t now = qg_now_ms();
        settle_account(ex, &actual, now);
        settle_key(ex, &actual, now);
        if (ex->kq && ex->kq->n_p) { /* the key's pause as of this row, saved with it */
            ex->row->key_state = true;
            ex->row->key_pause_policy = qg_keyq_pause_info(ex->kq, &ex->row->key_pause_until, &ex->row->key_epoch);
        }
        qg_ledger_submit(w->gw->ledger, w->id, ex->row);
    }
    qg_quota_release(&ex->resv); /* no row: no request was made */
    if (ex->kq) qg_keyq_release(ex->kq, &ex->kresv);
    if (ex->c) ex->c->req_ud = NULL;
    qg_defer_cancel(w->loop, &ex->flush);
    qg_defer_cancel(w->loop, &ex->retry);
    qg_buf_free(&ex->body);
    qg_buf_free(&ex->fwd);
    qg_buf_free(&ex->up_head);
    qg_buf_free(&ex->resp_body);
    qg_buf_free(&ex->held_head);
    qg_buf_free(&ex->err_body);
    qg_sse_free(&ex->parser);
    w->n_exchanges--;
    free(ex);
}

/* The request exists from here on and will end in exactly one ledger row. */
static void count_request(qg_exchange *ex)
{
    ex->have_body = true;
    int64_t n = atomic_load_explicit(&ex->w->requests, memory_order_relaxed);
    atomic_store_explicit(&ex->w->requests, n + 1, memory_order_relaxed); /* one writer: no RMW needed */
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

static void retry_later_cb(qg_deferred *d);
static void flush_head_cb(qg_deferred *d);
static void no_account(qg_exchange *ex, const qg_pick *pk);

/* After a failed attempt: the next account, or the client's error. */
static void continue_or_fail(qg_exchange *ex, qg_attempt_action act)
{
    qg_pick pk = {ex->tried, ex->attempts, &ex->est, qg_now_ms(), 0, 0};
    int t = act == QG_ATTEMPT_NEXT ? qg_route_choose(ex->route, ex->w->cursors, ex->w->ranks, &pk, &ex->resv) : -1;
    if (t >= 0) {
        start_attempt(ex, t);
        return;
    }
    if (ex->failures.last_status == 429 || (pk.skipped && !ex->attempts)) {
        /* quota, not failure: tell the client when the first account is usable again */
        if (ex->attempts) pk.until = qg_route_usable_at(ex->route, &ex->est, pk.now);
        if (pk.until > pk.now || !ex->attempts) {
            no_account(ex, &pk);
            return;
        }
    }
    qg_client_error e;
    qg_attempts_error(&ex->failures, &e);
    finish_error(ex, e.status, e.code, e.message, e.retry_after_s);
}

/* Every account left for the model is spent, cooling or disabled: 503 with Retry-After =
 * when the first becomes usable (SPEC §3), and no upstream call. */
static void no_account(qg_exchange *ex, const qg_pick *pk)
{
    char msg[320], when[48] = "";
    int retry = 0;
    if (pk->until > pk->now) {
        retry = (int)QG_MIN((pk->until - pk->now + 999) / 1000, (int64_t)86400 * 31);
        qg_format_rfc3339(pk->until, when, sizeof when);
        snprintf(msg, sizeof msg, "every account that serves %s is depleted, cooling down or disabled; the first becomes usable at %s",
                 ex->row->model, when);
    } else {
        snprintf(msg, sizeof msg, "every account that serves %s is depleted, cooling down or disabled", ex->row->model);
    }
    finish_error(ex, 503, "no_account_available", msg, retry);
}

/* The key's quota refused the request (SPEC §3): 429 with the reset time in the message and
 * Retry-After when it resumes by itself; never the amounts. */
static void key_refused(qg_exchange *ex, qg_kq_verdict v, const qg_kq_refusal *why)
{
    char msg[200], when[48] = "", label[24] = "";
    int64_t now = qg_now_ms();
    int retry = 0;
    if (why->reset_ms > now) {
        qg_format_rfc3339(why->reset_ms, when, sizeof when);
        if (why->auto_resume) retry = (int)QG_MIN((why->reset_ms - now + 999) / 1000, (int64_t)86400 * 31);
    }
    if (v == QG_KQ_QUOTA_EXHAUSTED) {
        finish_error(ex, 429, "key_quota_exhausted", "this API key's total quota is spent", 0);
        return;
    }
    if (why->policy >= 0) qg_strlcpy(label, ex->kq->p[why->policy].label, sizeof label);
    if (why->too_large) {
        snprintf(msg, sizeof msg, "this request's estimate is larger than this API key's whole %s quota; "
                                  "lower max_tokens (or max_output_tokens) or shorten the prompt", label);
        finish_error(ex, 429, "key_policy_exhausted", msg, 0);
        return;
    }
    if (!why->auto_resume || !when[0])
        snprintf(msg, sizeof msg, "this API key's %s quota is exhausted; it resumes only after a manual reset", label);
    else
        snprintf(msg, sizeof msg, "this API key's %s quota is exhausted until %s", label, when);
    finish_error(ex, 429, "key_policy_exhausted", msg, retry);
}

/* x-quota-remaining / -reset for the tightest policy, and a pair per policy (a second
 * policy of the same period gets a -2 suffix, and so on), from the request's own
 * reservation (its windows are known: no calendar arithmetic per response), written into
 * a stack buffer and appended once. */
/* At most (QG_KEY_MAX_POLICIES + 1) pairs of at most 47 + 11 + 20 + 2 + 47 + 7 + 20 + 2 bytes. */
#define QUOTA_PAIR_MAX 160

/* Writes "<prefix>remaining: N" and "<prefix>reset: TIME" (RFC 3339 in whole seconds, UTC:
 * 20 bytes) at p, which has room (quota_headers sizes it); returns the end.  prefix is
 * "x-quota-" or a policy's. */
static char *quota_header(char *p, const char *prefix, size_t prefix_len, int64_t left, const char *when)
{
    memcpy(p, prefix, prefix_len), p += prefix_len;
    memcpy(p, "remaining: ", 11), p += 11;
    p += qg_fmt_u64(p, left < 0 ? 0 : (uint64_t)left);
    memcpy(p, "\r\n", 2), p += 2;
    memcpy(p, prefix, prefix_len), p += prefix_len;
    memcpy(p, "reset: ", 7), p += 7;
    memcpy(p, when, 20), p += 20;
    memcpy(p, "\r\n", 2), p += 2;
    return p;
}

static void quota_headers(qg_exchange *ex, qg_buf *h)
{
    qg_keyq *k = ex->kq;
    if (!k || !k->n_p || !ex->kresv.active) return;
    char buf[(QG_KEY_MAX_POLICIES + 1) * QUOTA_PAIR_MAX], *end = buf;
    double tight_share = 2;
    int64_t tight_left = 0;
    char when[48], tight_when[48] = "";
    for (int i = 0; i < k->n_p; i++) {
        int64_t left = qg_keyq_remaining(k, i, ex->kresv.index[i]);
        if (qg_format_rfc3339(ex->kresv.end_ms[i], when, sizeof when) != 20) continue; /* no window (out of range) */
        end = quota_header(end, k->p[i].header, k->p[i].header_len, left, when);
        double share = k->p[i].limit > 0 ? (double)left / (double)k->p[i].limit : 0;
        if (share < tight_share) { /* the tightest: least remaining share (as qg_keyq_tightest) */
            tight_share = share, tight_left = left;
            memcpy(tight_when, when, sizeof when);
        }
    }
    if (tight_when[0]) end = quota_header(end, "x-quota-", 8, tight_left, tight_when);
    qg_buf_append(h, buf, (size_t)(end - buf));
}

/* RFC 9110 §7.6.1: hop-by-hop headers, and any the Connection header names, stay here. */
static bool hop_header(const qg_http_msg *m, qg_slice name)
{
    return qg_http_is_hop_header(name) || qg_http_connection_names(m, name);
}

static void build_response_head(qg_exchange *ex, const qg_http_msg *resp, qg_buf *h)
{
    for (size_t i = 0; i < resp->n_headers; i++) {
        qg_slice n = resp->headers[i].name;
        if (hop_header(resp, n) || qg_slice_ieq(n, "date") || qg_slice_ieq(n, "server")) continue;
        qg_buf_append(h, n.p, n.n);
        qg_buf_append(h, ": ", 2);
        qg_buf_append(h, resp->headers[i].value.p, resp->headers[i].value.n);
        qg_buf_append(h, "\r\n", 2);
    }
    qg_buf_puts(h, "x-quotagate-request-id: ");
    qg_buf_puts(h, ex->row->request_id);
    qg_buf_puts(h, "\r\n");
}

/* The response starts reaching the client: its head now, the body as it comes. */
static void begin_relay(qg_exchange *ex, int status, const qg_buf *head, int64_t len, bool sse)
{
    ex->started = true;
    ex->status = ex->relayed_status = status;
    ex->sse = sse;
    qg_conn_start(ex->c, status, head->data, head->len, len);
    if (ex->sse) {
        qg_sse_init(&ex->parser, ex->w->gw->cfg->limits.max_sse_event);
        qg_usage_stream_init(&ex->us, ex->ep->dialect);
    } else if (status < 300) {
        qg_buf_init(&ex->resp_body, USAGE_BODY_CAP);
    }
    /* The body is no longer needed for retries. */
    qg_buf_free(&ex->body);
    qg_buf_free(&ex->fwd);
    qg_buf_free(&ex->up_head);
}

/* The attempt failed with verdict v: the account learns why, the reservation ends, and
 * the request moves on (after this loop iteration, not inside the upstream's callback). */
static void attempt_failed(qg_exchange *ex, int status, qg_uperr err, const qg_error_verdict *v, qg_attempt_action act)
{
    int64_t now = qg_now_ms();
    qg_qacct *q = ex->target->q;
    if (q) {
        qg_quota_on_failure(q, v, now);
        qg_accounts_save(ex->w->gw->ledger, ex->w->id, q, now, true);
    }
    qg_quota_release(&ex->resv);
    /* a quota answer of any status reads to the client like a 429 from every account */
    bool quota = v->cls == QG_EC_RATE_LIMITED || v->cls == QG_EC_WINDOW_EXHAUSTED || v->cls == QG_EC_CREDITS_EXHAUSTED ||
                 v->cls == QG_EC_SPEND_CAPPED;
    qg_attempt_log_add(&ex->failures, quota ? 429 : status, err, v->until_ms > now ? v->until_ms - now : 0);
    ex->pending = act;
    qg_defer(ex->w->loop, &ex->retry, retry_later_cb, ex);
}

/* A held error answer is complete (or too long to hold): classify it, then relay it or
 * move on.  Returns true when the exchange continues with a relay. */
static bool decide_held(qg_exchange *ex, bool complete)
{
    qg_error_verdict v;
    qg_classify_error(ex->held_status, &ex->snap, ex->err_body.data, ex->err_body.len, qg_now_ms(), &v);
    qg_attempt_action act = qg_after_verdict(v.cls, ex->attempts, ex->w->gw->cfg->limits.retry_attempts);
    ex->holding = false;
    if (act == QG_ATTEMPT_RELAY) {
        begin_relay(ex, ex->held_status, &ex->held_head, ex->held_len, false);
        if (ex->err_body.len) qg_conn_send(ex->c, ex->err_body.data, ex->err_body.len);
        qg_buf_free(&ex->err_body);
        if (complete) {
            qg_conn_end(ex->c);
            exchange_free(ex);
            return false;
        }
        return true;
    }
    if (!complete && ex->u) qg_upconn_abort(ex->u);
    ex->u = NULL;
    qg_buf_free(&ex->err_body);
    attempt_failed(ex, ex->held_status, QG_UPERR_NONE, &v, act);
    return false;
}

/* An error status: read its body (bounded) before deciding, so the classification can
 * use it and a complete answer leaves the connection pooled. */
static void hold_error(qg_exchange *ex, const qg_http_msg *resp)
{
    ex->holding = true;
    ex->held_status = resp->status;
    ex->held_len = !resp->chunked && resp->content_length >= 0 ? resp->content_length : -1;
    qg_buf_reset(&ex->held_head);
    build_response_head(ex, resp, &ex->held_head);
    qg_buf_free(&ex->err_body); /* an earlier attempt's */
    qg_buf_init(&ex->err_body, QG_ERROR_BODY_MAX);
}

static bool snapshot_spent(const qg_rl_snapshot *s)
{
    for (int i = 0; i < QG_RL_N; i++)
        if (s->e[i].present && s->e[i].remaining == 0) return true;
    return false;
}

static void on_up_head(void *ud, const qg_http_msg *resp)
{
    qg_exchange *ex = ud;
    ex->t_first_us = qg_mono_us();
    int64_t now = qg_now_ms();
    qg_qacct *q = ex->target->q;
    qg_rl_capture(resp->headers, resp->n_headers, now, &ex->snap);
    if (q) {
        ex->resv.fed = qg_quota_on_headers(q, &ex->snap, now);
        if (snapshot_spent(&ex->snap)) /* the provider says a window is used up: a restart must know */
            qg_accounts_save(ex->w->gw->ledger, ex->w->id, q, now, true);
    }
    if (resp->status >= 400) {
        hold_error(ex, resp);
        return;
    }
    if (q) qg_quota_on_success(q, now);
    qg_slice ct = qg_http_header(resp, "content-type");
    bool sse = ct.n >= 17 && strncasecmp(ct.p, "text/event-stream", 17) == 0;
    qg_buf h;
    qg_buf_init(&h, 0);
    build_response_head(ex, resp, &h);
    if (resp->status < 300) quota_headers(ex, &h);
    int64_t len = -1;
    if (!sse && !resp->chunked && resp->content_length >= 0) len = resp->content_length;
    begin_relay(ex, resp->status, &h, len, sse);
    qg_buf_free(&h);
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
    continue_or_fail(ex, ex->pending);
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
    if (ex->holding) {
        if (qg_buf_append(&ex->err_body, data, n) == 0) return;
        size_t room = ex->err_body.max - ex->err_body.len; /* keep the prefix for classification */
        qg_buf_append(&ex->err_body, data, room);
        if (!decide_held(ex, false)) return;
        data += room, n -= room; /* relayed: the rest goes on as usual */
    }
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

static void on_up_done(void *ud, bool by_close)
{
    qg_exchange *ex = ud;
    ex->u = NULL;
    if (ex->holding) {
        decide_held(ex, true);
        return;
    }
    if (ex->sse && by_close && !ex->us.terminal) { /* a close is no end for an unfinished stream */
        finish_broken(ex, "the provider closed the connection before the stream ended");
        return;
    }
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
    qg_attempt_action act = qg_after_attempt(0, err, ex->started, ex->attempts, ex->w->gw->cfg->limits.retry_attempts);
    if (act == QG_ATTEMPT_BROKEN) {
        finish_broken(ex, qg_uperr_name(err));
        return;
    }
    if (ex->holding) { /* the error answer broke off: classify what arrived */
        ex->holding = false;
        qg_error_verdict v;
        qg_classify_error(ex->held_status, &ex->snap, ex->err_body.data, ex->err_body.len, qg_now_ms(), &v);
        attempt_failed(ex, ex->held_status, QG_UPERR_NONE, &v, qg_after_verdict(v.cls, ex->attempts,
                                                                                 ex->w->gw->cfg->limits.retry_attempts));
        return;
    }
    /* no answer at all: cool the account as for a server error (backoff), move on */
    qg_error_verdict v = {QG_EC_SERVER_ERROR, 0, false, ""};
    int64_t now = qg_now_ms();
    if (ex->target->q) qg_quota_on_failure(ex->target->q, &v, now);
    qg_quota_release(&ex->resv);
    qg_attempt_log_add(&ex->failures, 0, err, 0);
    continue_or_fail(ex, act);
}

static const qg_upstream_cbs upstream_cbs = {on_up_head, on_up_data, on_up_done, on_up_error};

/* ---- request construction ---- */

static void start_attempt(qg_exchange *ex, int t)
{
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
        bool skip = hop_header(m, n);
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

/* The key a request presents.  A keep-alive client sends the same secret on every request
 * of its connection: the connection remembers it and its entry, so only a new secret costs
 * a SHA-256 (~3,700 instructions); the version is read afresh each time (an edit or a
 * delete applies at once).  The compare is constant-time like the hash lookup's. */
static const qg_keyrec *key_of(qg_gateway *gw, qg_conn *c, qg_slice secret)
{
    if (secret.n && secret.n == c->memo.len && CRYPTO_memcmp(secret.p, c->memo.bytes, secret.n) == 0)
        return c->memo.ptr ? qg_keyent_rec(c->memo.ptr) : NULL;
    qg_keyent *e = qg_keydir_auth_entry(gw->keys, secret);
    if (e && secret.n <= sizeof c->memo.bytes) {
        memcpy(c->memo.bytes, secret.p, secret.n);
        c->memo.len = (uint8_t)secret.n;
        c->memo.ptr = e;
    }
    return e ? qg_keyent_rec(e) : NULL;
}

static bool model_allowed(const qg_keyrec *k, const char *model)
{
    if (!k->n_models) return true;
    for (size_t i = 0; i < k->n_models; i++)
        if (strcmp(k->models[i], model) == 0) return true;
    return false;
}

/* From the head: the key decides before a byte of the body is read. */
static int proxy_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *route)
{
    qg_gateway *gw = w->gw;
    const endpoint *ep = route->data;
    if (!qg_ledger_accepting(gw->ledger, w->id)) {
        /* The store is backed up (disk stalled): a request made now could not be recorded,
         * so none is made, and the refusal adds no row to the backlog either. */
        qg_respond_error(c, ep->dialect, 503, "store_busy", "the usage ledger is backed up; retry shortly", 1);
        return QG_HEAD_ANSWERED;
    }
    qg_exchange *ex = qg_xcalloc(1, sizeof *ex);
    ex->req.route = route;
    ex->w = w;
    ex->c = c;
    ex->ep = ep;
    ex->t_start_us = qg_mono_us();
    ex->row = qg_ledger_row_new();
    ex->row->ts_ms = qg_now_ms();
    make_request_id(ex->row->request_id, sizeof ex->row->request_id, w->id, ++w->seq);
    copy_field(ex->row->endpoint, sizeof ex->row->endpoint, ep->name);
    qg_buf_init(&ex->body, 0);
    qg_buf_init(&ex->fwd, 0);
    qg_buf_init(&ex->up_head, 0);
    qg_buf_init(&ex->resp_body, 0);
    qg_buf_init(&ex->held_head, 0);
    qg_buf_init(&ex->err_body, 0);
    w->n_exchanges++;
    c->req_ud = ex;
    ex->key = key_of(gw, c, qg_http_api_key(m));
    if (!ex->key) {
        count_request(ex); /* answered: the refusal is a row like any other */
        finish_error(ex, 401, "invalid_api_key", "missing or unknown API key", 0);
        return QG_HEAD_ANSWERED;
    }
    copy_field(ex->row->key_id, sizeof ex->row->key_id, ex->key->ent->id);
    copy_field(ex->row->key_name, sizeof ex->row->key_name, ex->key->name);
    const char *unusable = qg_keyrec_refusal(ex->key, ex->row->ts_ms);
    if (unusable) {
        count_request(ex);
        finish_error(ex, 403, "key_disabled", unusable, 0);
        return QG_HEAD_ANSWERED;
    }
    ex->kq = ex->key->kq;
    qg_kq_refusal why;
    qg_kq_verdict v = qg_keyq_precheck(ex->kq, qg_now_ms(), &why);
    if (v != QG_KQ_OK) { /* decided from the head: the body is not read */
        count_request(ex);
        key_refused(ex, v, &why);
        return QG_HEAD_ANSWERED;
    }
    return QG_HEAD_READ_BODY;
}

static void proxy_on_request(qg_worker *w, qg_conn *c, const qg_http_msg *m, qg_buf *body)
{
    qg_gateway *gw = w->gw;
    qg_exchange *ex = c->req_ud;
    const endpoint *ep = ex->ep;
    count_request(ex);
    ex->body = *body; /* take the body over from the connection */
    ex->body_len = body->len;
    qg_buf_init(body, 0);
    char why_buf[96];

    static const char *const wanted[] = {"model", "stream", "stream_options", "max_tokens", "max_output_tokens",
                                         "max_completion_tokens"};
    qg_json_span f[QG_ARRAY_LEN(wanted)];
    size_t open_off = 0;
    const char *why = "empty body";
    if (!ex->body.len || qg_jscan_object(ex->body.data, ex->body.len, wanted, QG_ARRAY_LEN(wanted), f, &open_off, &why) < 0) {
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
    int64_t max_tokens = 0;
    for (int i = 3; i < 6; i++) {
        int64_t v;
        if (f[i].type == QG_JSON_NONE || f[i].type == QG_JSON_NULL) continue;
        if (f[i].type != QG_JSON_NUMBER || qg_json_int_value(ex->body.data, f[i], &v) < 0 || v < 0) {
            snprintf(why_buf, sizeof why_buf, "%s must be a non-negative integer", wanted[i]);
            finish_error(ex, 400, "invalid_request", why_buf, 0);
            return;
        }
        if (!max_tokens) max_tokens = v;
    }
    ex->model = qg_config_model(gw->cfg, qg_slice_of(model));
    qg_quota_estimate(ex->model, ex->body.len, max_tokens, ex->w->gw->cfg->limits.default_output_tokens, &ex->est);
    qg_kq_refusal kwhy;
    qg_kq_verdict kv = qg_keyq_reserve(ex->kq, &ex->est, qg_now_ms(), &ex->kresv, &kwhy);
    if (kv != QG_KQ_OK) {
        key_refused(ex, kv, &kwhy);
        return;
    }
    build_forward_headers(ex, m);
    continue_or_fail(ex, QG_ATTEMPT_NEXT);
}

static void proxy_on_drain(qg_conn *c)
{
    qg_exchange *ex = c->req_ud;
    if (ex->u) qg_upconn_resume(ex->u);
}

static void proxy_on_close(qg_conn *c)
{
    qg_exchange *ex = c->req_ud;
    ex->c = NULL;
    ex->status = 499; /* nginx's "client closed request" */
    set_error(ex, "client_closed");
    if (ex->u) {
        qg_upconn_abort(ex->u);
        ex->u = NULL;
    }
    /* A retry waiting in the deferred queue frees it in retry_later_cb. */
    if (!ex->retry.queued) exchange_free(ex);
}

/* ---- GET /v1/models ---- */

static int models_on_head(qg_worker *w, qg_conn *c, const qg_http_msg *m, const qg_api_route *route)
{
    qg_gateway *gw = w->gw;
    bool anthropic = qg_http_header(m, "anthropic-version").p != NULL;
    qg_dialect d = anthropic ? QG_DIALECT_ANTHROPIC : QG_DIALECT_OPENAI;
    const qg_keyrec *key = key_of(gw, c, qg_http_api_key(m));
    if (!key) {
        qg_respond_error(c, d, 401, "invalid_api_key", "missing or unknown API key", 0);
        return QG_HEAD_ANSWERED;
    }
    const char *unusable = qg_keyrec_refusal(key, qg_now_ms());
    if (unusable) {
        qg_respond_error(c, d, 403, "key_disabled", unusable, 0);
        return QG_HEAD_ANSWERED;
    }
    /* the models this key may use */
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_buf_append(&b, anthropic ? "{\"data\":[" : "{\"object\":\"list\",\"data\":[", anthropic ? 9 : 25);
    const qg_router *r = &gw->router;
    const char *first = NULL, *last = NULL;
    for (size_t i = 0; i < r->n_routes; i++) {
        const qg_route *rt = &r->routes[i];
        if (!model_allowed(key, rt->model)) continue;
        const char *sep = first ? "," : "";
        if (!first) first = rt->model;
        last = rt->model;
        if (anthropic)
            qg_buf_appendf(&b, "%s{\"type\":\"model\",\"id\":\"%s\",\"display_name\":\"%s\",\"created_at\":\"1970-01-01T00:00:00Z\"}",
                           sep, rt->model, rt->model);
        else
            qg_buf_appendf(&b, "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":0,\"owned_by\":\"%s\"}", sep,
                           rt->model, rt->targets[0].p->name);
    }
    if (anthropic)
        qg_buf_appendf(&b, "],\"has_more\":false,\"first_id\":%s%s%s,\"last_id\":%s%s%s}", first ? "\"" : "",
                       first ? first : "null", first ? "\"" : "", last ? "\"" : "", last ? last : "null", last ? "\"" : "");
    else qg_buf_append(&b, "]}", 2);
    qg_respond_json(c, 200, b.data, b.len);
    qg_buf_free(&b);
    return QG_HEAD_ANSWERED;
}

/* ---- registration ---- */

static qg_api_route proxy_routes[QG_ARRAY_LEN(endpoints)];
static const qg_api_route models_route = {"/v1/models", "GET", QG_DIALECT_OPENAI, models_on_head, NULL, NULL, NULL, NULL};

void qg_proxy_register(qg_api *api)
{
    for (size_t i = 0; i < QG_ARRAY_LEN(endpoints); i++) {
        proxy_routes[i] = (qg_api_route){endpoints[i].path, "POST", endpoints[i].dialect, proxy_on_head, proxy_on_request,
                                         proxy_on_drain, proxy_on_close, &endpoints[i]};
        qg_api_add(api, &proxy_routes[i]);
    }
    qg_api_add(api, &models_route);
}
