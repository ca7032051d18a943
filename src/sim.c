/*
 * sim.c — the simulated provider.  See sim.h and docs/sim.md.
 *
 * Deterministic by design, so tests can predict every number:
 *   prompt tokens      = max(1, request body bytes / 4)
 *   cached tokens      = prompt / 4 when prompt >= 16, else 0
 *   completion tokens  = the number of content chunks: --chunks, or the request's
 *                        max_tokens / max_output_tokens when smaller
 *   reasoning tokens   = completion / 4 for models whose name contains "reason"
 * Every content chunk carries one word ("w1 ", "w2 ", ...).
 *
 * Accounts are keyed by the upstream API key (Authorization: Bearer or x-api-key).  Keys
 * not named with --account behave as mode `ok`.  Counters are atomics so several worker
 * threads can serve one account; the account table itself is fixed after start-up except
 * for unknown keys, which are added under a mutex (the simulator is a test tool: the
 * gateway's no-lock rule does not apply here, and the lock is uncontended).
 */
#include "sim.h"

#include "common.h"
#include "http1.h"
#include "jscan.h"
#include "loop.h"
#include "server.h"
#include "sock.h"
#include "timefmt.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#define SIM_MAX_ACCOUNTS 1024

typedef enum { SIM_OK, SIM_429, SIM_500, SIM_INSUFFICIENT, SIM_SLOW, SIM_CUT } sim_mode;
static const char *const sim_mode_names[] = {"ok", "429", "500", "insufficient_quota", "slow", "cut"};

typedef struct {
    char key[128];
    sim_mode mode;
    int retry_after_s;        /* 429 mode and window limits */
    int64_t delay_ms;         /* slow mode: delay before the response head */
    int64_t limit_requests;   /* 0: none */
    int64_t window_ms;
    double balance;
    pthread_mutex_t window_mu;
    int64_t window_start;     /* epoch ms */
    int64_t window_used;
    _Atomic int64_t requests, ok, errors, prompt_tokens, completion_tokens, cached_tokens, cut;
} sim_account;

typedef struct {
    char *listen;
    int workers;
    int chunks;
    int64_t chunk_delay_ms;
    char *tls_cert, *tls_key;
    sim_account *accounts[SIM_MAX_ACCOUNTS];
    _Atomic int n_accounts;
    pthread_mutex_t accounts_mu;
    _Atomic int conn_count;
    _Atomic int64_t seq;
} sim_state;

typedef struct {
    sim_state *sim;
    qg_loop *loop;
    qg_server srv;
    qg_notify stop;
    pthread_t thread;
} sim_worker;

typedef enum { EP_CHAT, EP_COMPLETIONS, EP_EMBEDDINGS, EP_RESPONSES, EP_MESSAGES, EP_COUNT_TOKENS } sim_endpoint;

/* One request being answered (kept alive across timers for streams and slow mode). */
typedef struct {
    sim_worker *w;
    qg_conn *c;
    sim_account *acct;
    sim_endpoint ep;
    qg_timer timer;
    char model[128];
    bool stream, include_usage, cut, headers_sent, paused;
    int total, sent;
    int64_t prompt, cached, reasoning, id;
    int64_t rl_remaining, rl_reset_ms; /* this account's window after admitting the request */
    qg_buf scratch;
} sim_req;

/* ---- accounts ---- */

static sim_account *account_new(const char *key)
{
    sim_account *a = qg_xcalloc(1, sizeof *a);
    snprintf(a->key, sizeof a->key, "%s", key);
    a->retry_after_s = 7;
    a->delay_ms = 2000;
    a->balance = 12.30;
    pthread_mutex_init(&a->window_mu, NULL);
    return a;
}

static sim_account *account_find(sim_state *s, qg_slice key, bool create)
{
    int n = atomic_load(&s->n_accounts);
    for (int i = 0; i < n; i++)
        if (qg_slice_eq(key, s->accounts[i]->key)) return s->accounts[i];
    if (!create || key.n >= sizeof s->accounts[0]->key) return NULL;
    pthread_mutex_lock(&s->accounts_mu);
    sim_account *a = NULL;
    n = atomic_load(&s->n_accounts);
    for (int i = 0; i < n && !a; i++)
        if (qg_slice_eq(key, s->accounts[i]->key)) a = s->accounts[i];
    if (!a && n < SIM_MAX_ACCOUNTS) {
        char tmp[128];
        memcpy(tmp, key.p, key.n);
        tmp[key.n] = 0;
        a = account_new(tmp);
        s->accounts[n] = a;
        atomic_store(&s->n_accounts, n + 1);
    }
    pthread_mutex_unlock(&s->accounts_mu);
    return a;
}

/* Parses KEY=MODE[,retry_after=N][,delay=DUR][,limit=N/DUR][,balance=X]. */
static int parse_account_arg(sim_state *s, const char *arg)
{
    char *copy = qg_xstrdup(arg), *save = NULL;
    char *eq = strchr(copy, '=');
    int rc = -1;
    if (!eq) goto out;
    *eq = 0;
    sim_account *a = account_find(s, qg_slice_of(copy), true);
    if (!a) goto out;
    for (char *tok = strtok_r(eq + 1, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *v = strchr(tok, '=');
        if (!v) {
            size_t m = 0;
            while (m < QG_ARRAY_LEN(sim_mode_names) && strcmp(tok, sim_mode_names[m]) != 0) m++;
            if (m == QG_ARRAY_LEN(sim_mode_names)) goto out;
            a->mode = (sim_mode)m;
            continue;
        }
        *v++ = 0;
        if (!strcmp(tok, "retry_after")) a->retry_after_s = atoi(v);
        else if (!strcmp(tok, "delay")) {
            if (qg_parse_duration_ms(qg_slice_of(v), &a->delay_ms) < 0) goto out;
        } else if (!strcmp(tok, "balance")) a->balance = atof(v);
        else if (!strcmp(tok, "limit")) {
            char *slash = strchr(v, '/');
            if (!slash) goto out;
            *slash = 0;
            a->limit_requests = atoll(v);
            if (qg_parse_duration_ms(qg_slice_of(slash + 1), &a->window_ms) < 0 || a->window_ms <= 0) goto out;
        } else goto out;
    }
    rc = 0;
out:
    free(copy);
    return rc;
}

/* Counts a request against the account's window.  Returns ms until the window resets when
 * over the limit, else 0. */
static int64_t window_admit(sim_account *a, int64_t *remaining, int64_t *reset_ms)
{
    *remaining = 9999;
    *reset_ms = 1000;
    if (!a->limit_requests) return 0;
    int64_t now = qg_now_ms(), wait = 0;
    pthread_mutex_lock(&a->window_mu);
    if (now - a->window_start >= a->window_ms) {
        a->window_start = now;
        a->window_used = 0;
    }
    *reset_ms = a->window_start + a->window_ms - now;
    if (a->window_used >= a->limit_requests) wait = *reset_ms;
    else a->window_used++;
    *remaining = a->limit_requests - a->window_used;
    pthread_mutex_unlock(&a->window_mu);
    return wait;
}

/* ---- response pieces ---- */

static void ratelimit_headers(qg_buf *h, bool anthropic, int64_t limit, int64_t remaining, int64_t reset_ms)
{
    if (anthropic) {
        char ts[48];
        qg_format_rfc3339(qg_now_ms() + reset_ms, ts, sizeof ts);
        qg_buf_appendf(h, "anthropic-ratelimit-requests-limit: %lld\r\nanthropic-ratelimit-requests-remaining: %lld\r\n"
                          "anthropic-ratelimit-requests-reset: %s\r\n",
                       (long long)limit, (long long)remaining, ts);
    } else {
        qg_buf_appendf(h, "x-ratelimit-limit-requests: %lld\r\nx-ratelimit-remaining-requests: %lld\r\n"
                          "x-ratelimit-reset-requests: %lldms\r\n",
                       (long long)limit, (long long)remaining, (long long)reset_ms);
    }
}

static void respond_json(qg_conn *c, int status, const char *extra_headers, size_t elen, const qg_buf *body)
{
    char h[1024];
    int n = snprintf(h, sizeof h, "Content-Type: application/json\r\n%.*s", (int)elen, extra_headers ? extra_headers : "");
    qg_conn_respond(c, status, h, (size_t)n, body->data, body->len);
}

static void respond_error(sim_req *r, int status, const char *type, const char *code, const char *msg, int retry_after)
{
    qg_buf b, h;
    qg_buf_init(&b, 0);
    qg_buf_init(&h, 0);
    if (r->ep >= EP_MESSAGES)
        qg_buf_appendf(&b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"}}", type, msg);
    else
        qg_buf_appendf(&b, "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"param\":null,\"code\":\"%s\"}}", msg, type, code);
    if (retry_after > 0) qg_buf_appendf(&h, "retry-after: %d\r\n", retry_after);
    atomic_fetch_add(&r->acct->errors, 1);
    respond_json(r->c, status, h.data, h.len, &b);
    qg_buf_free(&b);
    qg_buf_free(&h);
}

static void usage_json(qg_buf *b, const sim_req *r)
{
    int64_t out = r->sent;
    switch (r->ep) {
    case EP_MESSAGES:
        qg_buf_appendf(b, "{\"input_tokens\":%lld,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":%lld,\"output_tokens\":%lld}",
                       (long long)(r->prompt - r->cached), (long long)r->cached, (long long)out);
        break;
    case EP_RESPONSES:
        qg_buf_appendf(b, "{\"input_tokens\":%lld,\"input_tokens_details\":{\"cached_tokens\":%lld},\"output_tokens\":%lld,"
                          "\"output_tokens_details\":{\"reasoning_tokens\":%lld},\"total_tokens\":%lld}",
                       (long long)r->prompt, (long long)r->cached, (long long)out, (long long)r->reasoning,
                       (long long)(r->prompt + out));
        break;
    case EP_EMBEDDINGS:
        qg_buf_appendf(b, "{\"prompt_tokens\":%lld,\"total_tokens\":%lld}", (long long)r->prompt, (long long)r->prompt);
        break;
    default:
        qg_buf_appendf(b, "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld,"
                          "\"prompt_tokens_details\":{\"cached_tokens\":%lld},\"completion_tokens_details\":{\"reasoning_tokens\":%lld}}",
                       (long long)r->prompt, (long long)out, (long long)(r->prompt + out), (long long)r->cached,
                       (long long)r->reasoning);
    }
}

static void text_words(qg_buf *b, int n)
{
    for (int i = 1; i <= n; i++) qg_buf_appendf(b, "w%d ", i);
}

static void account_settle(sim_req *r)
{
    sim_account *a = r->acct;
    atomic_fetch_add(&a->prompt_tokens, r->prompt);
    atomic_fetch_add(&a->cached_tokens, r->cached);
    atomic_fetch_add(&a->completion_tokens, r->sent);
    if (r->cut) atomic_fetch_add(&a->cut, 1);
    else atomic_fetch_add(&a->ok, 1);
}

static void full_body(qg_buf *b, sim_req *r)
{
    r->sent = r->ep == EP_EMBEDDINGS ? 0 : r->total;
    switch (r->ep) {
    case EP_MESSAGES:
        qg_buf_appendf(b, "{\"id\":\"msg_sim%lld\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"%s\",\"content\":[{\"type\":\"text\",\"text\":\"",
                       (long long)r->id, r->model);
        text_words(b, r->total);
        qg_buf_appendf(b, "\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":");
        break;
    case EP_COUNT_TOKENS:
        r->sent = 0;
        qg_buf_appendf(b, "{\"input_tokens\":%lld}", (long long)r->prompt);
        return;
    case EP_RESPONSES:
        qg_buf_appendf(b, "{\"id\":\"resp_sim%lld\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"%s\",\"output\":[{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"",
                       (long long)r->id, r->model);
        text_words(b, r->total);
        qg_buf_appendf(b, "\"}]}],\"usage\":");
        break;
    case EP_EMBEDDINGS:
        qg_buf_appendf(b, "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.0123,-0.0456,0.0789]}],\"model\":\"%s\",\"usage\":",
                       r->model);
        break;
    case EP_COMPLETIONS:
        qg_buf_appendf(b, "{\"id\":\"cmpl-sim%lld\",\"object\":\"text_completion\",\"model\":\"%s\",\"choices\":[{\"index\":0,\"text\":\"",
                       (long long)r->id, r->model);
        text_words(b, r->total);
        qg_buf_appendf(b, "\",\"finish_reason\":\"stop\"}],\"usage\":");
        break;
    default:
        qg_buf_appendf(b, "{\"id\":\"chatcmpl-sim%lld\",\"object\":\"chat.completion\",\"created\":%lld,\"model\":\"%s\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"",
                       (long long)r->id, (long long)(qg_now_ms() / 1000), r->model);
        text_words(b, r->total);
        qg_buf_appendf(b, "\"},\"finish_reason\":\"stop\"}],\"usage\":");
    }
    usage_json(b, r);
    qg_buf_append(b, "}", 1);
}

/* ---- streaming ---- */

static void stream_event(qg_buf *b, sim_req *r, int i)
{
    switch (r->ep) {
    case EP_MESSAGES:
        qg_buf_appendf(b, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"w%d \"}}\n\n", i);
        break;
    case EP_RESPONSES:
        qg_buf_appendf(b, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":%d,\"item_id\":\"msg_sim\",\"output_index\":0,\"content_index\":0,\"delta\":\"w%d \"}\n\n", i + 1, i);
        break;
    case EP_COMPLETIONS:
        qg_buf_appendf(b, "data: {\"id\":\"cmpl-sim%lld\",\"object\":\"text_completion\",\"model\":\"%s\",\"choices\":[{\"index\":0,\"text\":\"w%d \",\"finish_reason\":null}]%s}\n\n",
                       (long long)r->id, r->model, i, r->include_usage ? ",\"usage\":null" : "");
        break;
    default:
        qg_buf_appendf(b, "data: {\"id\":\"chatcmpl-sim%lld\",\"object\":\"chat.completion.chunk\",\"model\":\"%s\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w%d \"},\"finish_reason\":null}]%s}\n\n",
                       (long long)r->id, r->model, i, r->include_usage ? ",\"usage\":null" : "");
    }
}

static void stream_prologue(qg_buf *b, sim_req *r)
{
    if (r->ep == EP_MESSAGES) {
        qg_buf_appendf(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_sim%lld\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"%s\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":%lld,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":%lld,\"output_tokens\":1}}}\n\n"
                          "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
                          "event: ping\ndata: {\"type\":\"ping\"}\n\n",
                       (long long)r->id, r->model, (long long)(r->prompt - r->cached), (long long)r->cached);
    } else if (r->ep == EP_RESPONSES) {
        qg_buf_appendf(b, "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_sim%lld\",\"status\":\"in_progress\",\"model\":\"%s\",\"usage\":null}}\n\n",
                       (long long)r->id, r->model);
    } else if (r->ep == EP_CHAT) {
        qg_buf_appendf(b, "data: {\"id\":\"chatcmpl-sim%lld\",\"object\":\"chat.completion.chunk\",\"model\":\"%s\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]%s}\n\n",
                       (long long)r->id, r->model, r->include_usage ? ",\"usage\":null" : "");
    }
}

static void stream_epilogue(qg_buf *b, sim_req *r)
{
    switch (r->ep) {
    case EP_MESSAGES:
        qg_buf_appendf(b, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
                          "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":");
        usage_json(b, r);
        qg_buf_appendf(b, "}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        break;
    case EP_RESPONSES:
        qg_buf_appendf(b, "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":%d,\"response\":{\"id\":\"resp_sim%lld\",\"status\":\"completed\",\"model\":\"%s\",\"usage\":",
                       r->total + 1, (long long)r->id, r->model);
        usage_json(b, r);
        qg_buf_appendf(b, "}}\n\n");
        break;
    default: {
        bool chat = r->ep == EP_CHAT;
        qg_buf_appendf(b, "data: {\"id\":\"sim%lld\",\"object\":\"%s\",\"model\":\"%s\",\"choices\":[{\"index\":0,%s,\"finish_reason\":\"stop\"}]%s}\n\n",
                       (long long)r->id, chat ? "chat.completion.chunk" : "text_completion", r->model,
                       chat ? "\"delta\":{}" : "\"text\":\"\"", r->include_usage ? ",\"usage\":null" : "");
        if (r->include_usage) {
            qg_buf_appendf(b, "data: {\"id\":\"sim%lld\",\"object\":\"%s\",\"model\":\"%s\",\"choices\":[],\"usage\":",
                           (long long)r->id, chat ? "chat.completion.chunk" : "text_completion", r->model);
            usage_json(b, r);
            qg_buf_appendf(b, "}\n\n");
        }
        qg_buf_appendf(b, "data: [DONE]\n\n");
    }
    }
}

static void req_free(sim_req *r)
{
    qg_timer_stop(r->w->loop, &r->timer);
    qg_buf_free(&r->scratch);
    if (r->c) r->c->req_ud = NULL;
    free(r);
}

/* Emits chunks until the stream ends, a delay is due, or the client backs up. */
static void stream_pump(sim_req *r)
{
    sim_state *s = r->w->sim;
    qg_buf *b = &r->scratch;
    int cut_at = r->cut ? r->total / 2 : -1;
    while (!r->paused) {
        qg_buf_reset(b);
        if (!r->headers_sent) {
            static const char h[] = "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n";
            qg_conn_start(r->c, 200, h, sizeof h - 1, -1);
            r->headers_sent = true;
            stream_prologue(b, r);
        }
        /* With no delay, everything goes out in one write. */
        do {
            if (r->sent == cut_at) {
                qg_conn_send(r->c, b->data, b->len);
                account_settle(r);
                qg_conn_abort(r->c);
                req_free(r);
                return;
            }
            if (r->sent < r->total) stream_event(b, r, ++r->sent);
            else {
                stream_epilogue(b, r);
                qg_conn_send(r->c, b->data, b->len);
                account_settle(r);
                qg_conn_end(r->c);
                req_free(r);
                return;
            }
        } while (s->chunk_delay_ms == 0 && b->len < 16384);
        int rc = qg_conn_send(r->c, b->data, b->len);
        if (rc < 0) return; /* on_close frees */
        if (rc == 1) {
            r->paused = true;
            return;
        }
        if (s->chunk_delay_ms > 0) {
            qg_timer_start(r->w->loop, &r->timer, s->chunk_delay_ms);
            return;
        }
    }
}

static void respond_full(sim_req *r)
{
    qg_buf b, h;
    qg_buf_init(&b, 0);
    qg_buf_init(&h, 0);
    full_body(&b, r);
    ratelimit_headers(&h, r->ep >= EP_MESSAGES, r->acct->limit_requests ? r->acct->limit_requests : 10000,
                      r->rl_remaining, r->rl_reset_ms);
    if (r->cut) {
        /* promise the whole body, deliver half, then close */
        char ct[1200];
        int n = snprintf(ct, sizeof ct, "Content-Type: application/json\r\n%.*s", (int)h.len, h.data);
        qg_conn_start(r->c, 200, ct, (size_t)n, (int64_t)b.len);
        r->sent = r->total / 2;
        qg_conn_send(r->c, b.data, b.len / 2);
        account_settle(r);
        qg_conn_abort(r->c);
    } else {
        account_settle(r);
        respond_json(r->c, 200, h.data, h.len, &b);
    }
    qg_buf_free(&b);
    qg_buf_free(&h);
    req_free(r);
}

static void req_timer_cb(qg_timer *t)
{
    sim_req *r = t->ud;
    if (r->stream) stream_pump(r);
    else respond_full(r);
}

/* ---- request handling ---- */

static int endpoint_of(qg_slice path, sim_endpoint *ep)
{
    const char *q = memchr(path.p, '?', path.n);
    if (q) path.n = (size_t)(q - path.p);
    static const struct { const char *p; sim_endpoint e; } map[] = {
        {"/v1/chat/completions", EP_CHAT}, {"/v1/completions", EP_COMPLETIONS}, {"/v1/embeddings", EP_EMBEDDINGS},
        {"/v1/responses", EP_RESPONSES}, {"/v1/messages", EP_MESSAGES}, {"/v1/messages/count_tokens", EP_COUNT_TOKENS},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(map); i++)
        if (qg_slice_eq(path, map[i].p)) {
            *ep = map[i].e;
            return 0;
        }
    return -1;
}

static qg_slice request_key(const qg_http_msg *m)
{
    qg_slice k = qg_http_header(m, "x-api-key");
    if (k.p) return k;
    qg_slice a = qg_http_header(m, "authorization");
    if (a.n > 7 && strncasecmp(a.p, "Bearer ", 7) == 0) return qg_slice_trim((qg_slice){a.p + 7, a.n - 7});
    return (qg_slice){NULL, 0};
}

static void serve_stats(sim_worker *w, qg_conn *c)
{
    sim_state *s = w->sim;
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_buf_append(&b, "{\"accounts\":{", 13);
    int n = atomic_load(&s->n_accounts);
    for (int i = 0; i < n; i++) {
        sim_account *a = s->accounts[i];
        qg_buf_appendf(&b, "%s\"%s\":{\"mode\":\"%s\",\"requests\":%lld,\"ok\":%lld,\"errors\":%lld,\"cut\":%lld,"
                           "\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"cached_tokens\":%lld}",
                       i ? "," : "", a->key, sim_mode_names[a->mode], (long long)a->requests, (long long)a->ok,
                       (long long)a->errors, (long long)a->cut, (long long)a->prompt_tokens,
                       (long long)a->completion_tokens, (long long)a->cached_tokens);
    }
    qg_buf_append(&b, "}}", 2);
    respond_json(c, 200, NULL, 0, &b);
    qg_buf_free(&b);
}

static void serve_balance(qg_conn *c, sim_account *a, bool openrouter)
{
    qg_buf b;
    qg_buf_init(&b, 0);
    if (openrouter)
        qg_buf_appendf(&b, "{\"data\":{\"label\":\"sim\",\"limit\":25,\"limit_reset\":\"monthly\",\"limit_remaining\":%.4f,"
                           "\"include_byok_in_limit\":false,\"usage\":%.4f,\"usage_daily\":0,\"usage_weekly\":0,\"usage_monthly\":%.4f,"
                           "\"is_free_tier\":false,\"expires_at\":null,\"free_model_daily_requests\":{\"used\":%lld,\"limit\":1000,\"remaining\":%lld}}}",
                       a->balance, 25 - a->balance, 25 - a->balance, (long long)a->requests, (long long)(1000 - a->requests));
    else
        qg_buf_appendf(&b, "{\"is_available\":%s,\"balance_infos\":[{\"currency\":\"USD\",\"total_balance\":\"%.2f\","
                           "\"granted_balance\":\"0.00\",\"topped_up_balance\":\"%.2f\"}]}",
                       a->balance > 0 ? "true" : "false", a->balance, a->balance);
    respond_json(c, 200, NULL, 0, &b);
    qg_buf_free(&b);
}

static bool parse_body(sim_req *r, const qg_buf *body)
{
    static const char *const wanted[] = {"model", "stream", "max_tokens", "max_output_tokens", "stream_options"};
    qg_json_span f[5];
    const char *why;
    if (qg_jscan_object(body->data ? body->data : "", body->len, wanted, 5, f, NULL, &why) < 0) return false;
    if (qg_json_string_value(body->data, f[0], r->model, sizeof r->model) < 0) snprintf(r->model, sizeof r->model, "sim-model");
    r->stream = f[1].type == QG_JSON_TRUE;
    int64_t max = 0;
    if (qg_json_int_value(body->data, f[2], &max) == 0 || qg_json_int_value(body->data, f[3], &max) == 0)
        if (max > 0 && max < r->total) r->total = (int)max;
    if (f[4].type == QG_JSON_OBJECT) {
        static const char *const iu[] = {"include_usage"};
        qg_json_span u;
        if (qg_jscan_object(body->data + f[4].off, f[4].len, iu, 1, &u, NULL, &why) == 0 && u.type == QG_JSON_TRUE)
            r->include_usage = true;
    }
    return true;
}

static void on_request(qg_conn *c, const qg_http_msg *m, qg_buf *body)
{
    sim_worker *w = c->srv->app;
    sim_state *s = w->sim;
    if (qg_slice_eq(m->target, "/sim/stats")) return serve_stats(w, c);
    if (qg_slice_eq(m->target, "/healthz")) return qg_conn_respond(c, 200, "", 0, "ok\n", 3);
    qg_slice key = request_key(m);
    sim_account *a = key.p ? account_find(s, key, true) : NULL;
    if (qg_slice_eq(m->method, "GET") && (qg_slice_eq(m->target, "/user/balance") || qg_slice_eq(m->target, "/api/v1/key"))) {
        if (!a) return qg_conn_respond(c, 401, "", 0, "{\"error\":\"no key\"}", 17);
        return serve_balance(c, a, m->target.p[1] == 'a');
    }
    sim_req *r = qg_xcalloc(1, sizeof *r);
    r->w = w;
    r->c = c;
    r->acct = a;
    r->total = s->chunks;
    r->id = atomic_fetch_add(&s->seq, 1);
    qg_buf_init(&r->scratch, 0);
    qg_timer_init(&r->timer, req_timer_cb, r);
    c->req_ud = r;
    bool known = endpoint_of(m->target, &r->ep) == 0;
    if (!known || !qg_slice_eq(m->method, "POST")) {
        r->ep = EP_CHAT;
        static const char nf[] = "{\"error\":{\"message\":\"no such endpoint in the simulator\",\"type\":\"invalid_request_error\",\"code\":\"not_found\"}}";
        qg_conn_respond(c, 404, "Content-Type: application/json\r\n", 32, nf, sizeof nf - 1);
        req_free(r);
        return;
    }
    if (!a) {
        qg_conn_respond(c, 401, "Content-Type: application/json\r\n", 32,
                        "{\"error\":{\"message\":\"missing API key\",\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}", 95);
        req_free(r);
        return;
    }
    atomic_fetch_add(&a->requests, 1);
    if (!parse_body(r, body)) {
        respond_error(r, 400, "invalid_request_error", "invalid_request", "body is not a JSON object", 0);
        req_free(r);
        return;
    }
    r->prompt = QG_MAX((int64_t)1, (int64_t)body->len / 4);
    r->cached = r->prompt >= 16 ? r->prompt / 4 : 0;
    r->reasoning = strstr(r->model, "reason") ? r->total / 4 : 0;
    if (r->ep == EP_EMBEDDINGS || r->ep == EP_COUNT_TOKENS) r->stream = false, r->cached = 0;
    bool anthropic = r->ep >= EP_MESSAGES;
    int64_t wait = window_admit(a, &r->rl_remaining, &r->rl_reset_ms);
    if (wait > 0 || a->mode == SIM_429) {
        int ra = wait > 0 ? (int)((wait + 999) / 1000) : a->retry_after_s;
        respond_error(r, 429, anthropic ? "rate_limit_error" : "requests", "rate_limit_exceeded",
                      "Rate limit reached (simulated). Please try again later.", ra);
    } else if (a->mode == SIM_500) {
        respond_error(r, 500, anthropic ? "api_error" : "server_error", "server_error", "The server had an error (simulated).", 0);
    } else if (a->mode == SIM_INSUFFICIENT) {
        if (anthropic)
            respond_error(r, 400, "invalid_request_error", "", "Your credit balance is too low to access the Anthropic API (simulated).", 0);
        else
            respond_error(r, 429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota (simulated).", 0);
    } else {
        r->cut = a->mode == SIM_CUT;
        if (a->mode == SIM_SLOW) {
            qg_timer_start(w->loop, &r->timer, a->delay_ms);
            return;
        }
        if (r->stream) stream_pump(r);
        else respond_full(r);
        return;
    }
    req_free(r);
}

static void on_drain(qg_conn *c)
{
    sim_req *r = c->req_ud;
    if (r && r->paused) {
        r->paused = false;
        stream_pump(r);
    }
}

static void on_close(qg_conn *c)
{
    sim_req *r = c->req_ud;
    if (!r) return;
    r->c = NULL;
    if (r->headers_sent) { /* the client left mid-stream: count what was sent */
        r->cut = true;
        account_settle(r);
    }
    req_free(r);
}

static const qg_handler sim_handler = {on_request, on_drain, on_close};

/* ---- threads and CLI ---- */

static void worker_stop_cb(void *ud)
{
    sim_worker *w = ud;
    qg_server_close_all(&w->srv);
    qg_loop_stop(w->loop);
}

static void *worker_main(void *arg)
{
    sim_worker *w = arg;
    qg_loop_run(w->loop);
    return NULL;
}

static void usage(FILE *f)
{
    fputs("usage: quotagate sim [options]\n"
          "  --listen HOST:PORT     address to serve (default 127.0.0.1:9100)\n"
          "  --workers N            event-loop threads (default 1)\n"
          "  --chunks N             content chunks per response (default 8)\n"
          "  --chunk-delay DUR      delay between streamed chunks (default 0, e.g. 20ms)\n"
          "  --tls-cert FILE --tls-key FILE   serve https with this certificate\n"
          "  --account KEY=MODE[,retry_after=S][,delay=DUR][,limit=N/DUR][,balance=X]\n"
          "                         per-account behaviour; MODE is ok, 429, 500,\n"
          "                         insufficient_quota, slow or cut (repeatable)\n"
          "Endpoints: the OpenAI and Anthropic APIs, GET /user/balance (DeepSeek),\n"
          "GET /api/v1/key (OpenRouter), GET /sim/stats, GET /healthz.  See docs/sim.md.\n",
          f);
}

static int split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon) return -1;
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') s++, hl -= 2;
    if (hl >= hostlen) return -1;
    memcpy(host, s, hl);
    host[hl] = 0;
    if (!hl) snprintf(host, hostlen, "0.0.0.0");
    *port = atoi(colon + 1);
    return *port >= 0 && *port <= 65535 ? 0 : -1;
}

int qg_sim_main(int argc, char **argv)
{
    static sim_state s;
    s.listen = "127.0.0.1:9100";
    s.workers = 1;
    s.chunks = 8;
    pthread_mutex_init(&s.accounts_mu, NULL);
    static const struct option opts[] = {
        {"listen", 1, 0, 'l'}, {"workers", 1, 0, 'w'}, {"chunks", 1, 0, 'n'}, {"chunk-delay", 1, 0, 'd'},
        {"tls-cert", 1, 0, 'c'}, {"tls-key", 1, 0, 'k'}, {"account", 1, 0, 'a'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'l': s.listen = optarg; break;
        case 'w': s.workers = atoi(optarg); break;
        case 'n': s.chunks = atoi(optarg); break;
        case 'd':
            if (qg_parse_duration_ms(qg_slice_of(optarg), &s.chunk_delay_ms) < 0) {
                fprintf(stderr, "quotagate sim: bad --chunk-delay %s\n", optarg);
                return 2;
            }
            break;
        case 'c': s.tls_cert = optarg; break;
        case 'k': s.tls_key = optarg; break;
        case 'a':
            if (parse_account_arg(&s, optarg) < 0) {
                fprintf(stderr, "quotagate sim: bad --account %s\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (s.workers < 1 || s.workers > 64 || s.chunks < 1 || s.chunks > 100000 || !!s.tls_cert != !!s.tls_key) {
        usage(stderr);
        return 2;
    }
    char host[256], err[512];
    int port;
    if (split_hostport(s.listen, host, sizeof host, &port) < 0) {
        fprintf(stderr, "quotagate sim: bad --listen %s\n", s.listen);
        return 2;
    }
    SSL_CTX *tls = NULL;
    if (s.tls_cert && !(tls = qg_tls_server_ctx(s.tls_cert, s.tls_key, err, sizeof err))) {
        fprintf(stderr, "quotagate sim: %s\n", err);
        return 1;
    }
    int lfd = qg_listen_tcp(host, port, err, sizeof err);
    if (lfd < 0) {
        fprintf(stderr, "quotagate sim: %s\n", err);
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    qg_server_limits lim = {.max_header = 64 << 10, .max_body = 64u << 20, .idle_timeout_ms = 120000, .max_connections = 100000};
    sim_worker *ws = qg_xcalloc((size_t)s.workers, sizeof *ws);
    for (int i = 0; i < s.workers; i++) {
        ws[i].sim = &s;
        ws[i].loop = qg_loop_new();
        qg_server_init(&ws[i].srv, ws[i].loop, lfd, &sim_handler, &ws[i], &lim, &s.conn_count, tls);
        qg_notify_init(ws[i].loop, &ws[i].stop, worker_stop_cb, &ws[i]);
        pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
    }
    printf("quotagate sim listening on %s://%s:%d (%d worker%s, %d chunks, delay %lld ms)\n", tls ? "https" : "http",
           host, qg_local_port(lfd), s.workers, s.workers > 1 ? "s" : "", s.chunks, (long long)s.chunk_delay_ms);
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    for (int i = 0; i < s.workers; i++) qg_notify_send(&ws[i].stop);
    for (int i = 0; i < s.workers; i++) {
        pthread_join(ws[i].thread, NULL);
        qg_notify_close(ws[i].loop, &ws[i].stop);
        qg_loop_free(ws[i].loop);
    }
    free(ws);
    close(lfd);
    if (tls) SSL_CTX_free(tls);
    for (int i = 0; i < atomic_load(&s.n_accounts); i++) {
        pthread_mutex_destroy(&s.accounts[i]->window_mu);
        free(s.accounts[i]);
    }
    return 0;
}
