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
 *
 * Fault modes for hardening tests: drop (read the request, close without a byte), early
 * (answer from the head, discard the body, keep the connection), error_event (an error
 * event mid-stream, then a clean end), stall (half a response, then silence), hang (no
 * answer at all), and chaos (one of the behaviours at random per request, from a seeded
 * per-account PRNG).  A request kept open by stall or hang is freed by on_close when the
 * peer (or shutdown) closes the connection.
 *
 * Quota signals for the gateway's quota engine, in real provider shapes with resets from the
 * real clock: request and token windows (limit=, tokens=) with their headers and 429s, the
 * Anthropic unified headers (unified=1), prepaid credit that runs out (credits=), and error
 * mode's provider answers (kind=, reset=; see kind_builders).
 */
#include "sim.h"

#include "common.h"
#include "http1.h"
#include "jscan.h"
#include "loop.h"
#include "server.h"
#include "sock.h"
#include "timefmt.h"

#include <errno.h>
#include <getopt.h>
#include <sys/socket.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#define SIM_MAX_ACCOUNTS 1024

typedef enum {
    SIM_OK, SIM_429, SIM_500, SIM_INSUFFICIENT, SIM_SLOW, SIM_CUT,
    SIM_DROP, SIM_EARLY, SIM_ERROR_EVENT, SIM_STALL, SIM_HANG, SIM_CHAOS, SIM_ERROR
} sim_mode;
static const char *const sim_mode_names[] = {"ok",   "429",   "500",         "insufficient_quota", "slow", "cut",
                                             "drop", "early", "error_event", "stall",              "hang", "chaos",
                                             "error"};

/* error mode: which provider quota or failure signal it answers with (kind=K). */
typedef enum {
    KIND_RATE_LIMIT, KIND_USAGE_LIMIT, KIND_SPEND_LIMIT, KIND_BILLING, KIND_OR_402, KIND_OR_FREE_DAILY,
    KIND_GEMINI_DAILY, KIND_OVERLOADED, KIND_UNAVAILABLE, KIND_AUTH, KIND_FORBIDDEN
} sim_kind;
static const char *const sim_kind_names[] = {"rate_limit",    "usage_limit",  "spend_limit", "billing",
                                             "or_402",        "or_free_daily", "gemini_daily", "overloaded",
                                             "unavailable",   "auth",          "forbidden"};

/* What chaos picks from, and how often (out of CHAOS_WEIGHT_TOTAL): ok 40%, the rest 7.5% each. */
static const sim_mode chaos_modes[] = {SIM_OK,    SIM_429,  SIM_500,  SIM_CUT, SIM_ERROR_EVENT,
                                       SIM_STALL, SIM_HANG, SIM_SLOW, SIM_DROP};
static const int chaos_weights[] = {16, 3, 3, 3, 3, 3, 3, 3, 3};
#define CHAOS_N 9
#define CHAOS_WEIGHT_TOTAL 40
#define CHAOS_RETRY_AFTER_S 1
#define CHAOS_DELAY_MS 300

/* A fixed window: `limit` per `len_ms`, counted from the first request after the last one ended. */
typedef struct {
    int64_t limit;            /* 0: none */
    int64_t len_ms;
    int64_t start;            /* epoch ms */
    int64_t used;
} sim_window;

typedef struct {
    char key[128];
    sim_mode mode;
    int retry_after_s;        /* 429 mode and window limits */
    int64_t delay_ms;         /* slow mode: delay before the response head */
    sim_window reqs;          /* limit=N/DUR: requests per window */
    sim_window toks;          /* tokens=N/DUR: prompt + completion tokens per window */
    double balance;
    int64_t drop_times;       /* drop and error modes: how many requests get it (then ok) */
    bool times_set;           /* times= given (error mode: else every request) */
    sim_kind kind;            /* error mode: kind=K */
    int64_t reset_ms;         /* error mode: reset=DUR, when the signal's reset falls */
    bool unified;             /* unified=1: Anthropic answers carry the unified (subscription) headers */
    int64_t credits;          /* credits=N: successful requests the prepaid credit lasts; 0: unlimited */
    int early_status;         /* early mode: the status answered from the head */
    bool seed_set;            /* chaos: seed= given (else derived from --seed and the key) */
    bool close_delimited;     /* streams: no chunked coding, the close ends the body */
    bool echo;                /* x-sim-saw: the request's header names */
    bool hop;                 /* responses name a header in Connection (a proxy must drop both) */
    uint64_t seed;
    pthread_mutex_t mu;       /* the windows and the chaos PRNG */
    uint64_t rng;             /* chaos: xorshift64* state */
    _Atomic int64_t drop_left;
    _Atomic int64_t credits_used;
    _Atomic int64_t requests, ok, errors, prompt_tokens, completion_tokens, cached_tokens, cut;
    _Atomic int64_t dropped, early, error_events, stalled, hung;
    _Atomic int64_t chaos_picks[CHAOS_N];
} sim_account;

typedef struct {
    char *listen;
    int workers;
    int chunks;
    int64_t chunk_delay_ms;
    int64_t idle_close_ms;
    int rcvbuf;               /* --rcvbuf: SO_RCVBUF of accepted sockets; 0 = the kernel's */
    uint64_t seed;
    char *tls_cert, *tls_key;
    sim_account *accounts[SIM_MAX_ACCOUNTS];
    _Atomic int n_accounts;
    pthread_mutex_t accounts_mu;
    _Atomic int conn_count;
    _Atomic int64_t seq;
    int64_t start_ms;         /* epoch ms at start-up: the unified 7-day period counts from it */
} sim_state;

typedef struct {
    sim_state *sim;
    qg_loop *loop;
    qg_server srv;
    qg_notify stop;
    pthread_t thread;
} sim_worker;

typedef enum { EP_CHAT, EP_COMPLETIONS, EP_EMBEDDINGS, EP_RESPONSES, EP_MESSAGES, EP_COUNT_TOKENS } sim_endpoint;

/* How a response that started goes wrong (half the chunks, then ...). */
typedef enum { FAULT_NONE, FAULT_CUT, FAULT_ERROR_EVENT, FAULT_STALL } sim_fault;
/* What a settled response counts as. */
typedef enum { OUT_OK, OUT_CUT, OUT_ERROR_EVENT, OUT_TOKENS_ONLY } sim_outcome;

/* The account's windows as one request saw them (quota_admit). */
typedef struct {
    int64_t now;              /* epoch ms of the admission; resets are relative to it */
    int64_t req_used, req_remaining, req_reset_ms;
    int64_t tok_used, tok_remaining, tok_reset_ms;
    int64_t wait_ms;          /* > 0: refused; ms until the refusing window ends */
    bool tok_refused;         /* refused by the token window (else by the request window) */
} sim_quota;

/* One request being answered (kept alive across timers for streams and slow mode, and
 * until the connection closes for stall and hang). */
typedef struct {
    sim_worker *w;
    qg_conn *c;
    sim_account *acct;
    sim_endpoint ep;
    qg_timer timer;
    char model[128];
    sim_fault fault;
    bool stream, include_usage, headers_sent, paused, stalled, settled;
    int total, sent;
    int64_t prompt, cached, reasoning, id;
    sim_quota q;              /* this account's windows after admitting the request */
    qg_buf scratch;
    qg_buf head_extra;        /* echo/hop head lines, built while the request head is valid */
} sim_req;

/* ---- accounts ---- */

static sim_account *account_new(const char *key)
{
    sim_account *a = qg_xcalloc(1, sizeof *a);
    snprintf(a->key, sizeof a->key, "%s", key);
    a->retry_after_s = 7;
    a->delay_ms = 2000;
    a->balance = 12.30;
    a->drop_times = 1;
    a->early_status = 413;
    a->reset_ms = 3600000;
    pthread_mutex_init(&a->mu, NULL);
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

static bool parse_int64(const char *v, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return false;
    *out = x;
    return true;
}

/* Index of `name` in `names`, or -1. */
static int name_index(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(names[i], name)) return (int)i;
    return -1;
}

/* tokens=N/DUR: N >= 1 per window of DUR > 0. */
static bool parse_window(char *v, sim_window *w)
{
    char *slash = strchr(v, '/');
    if (!slash) return false;
    *slash = 0;
    return parse_int64(v, 1, INT64_MAX / 4, &w->limit) && qg_parse_duration_ms(qg_slice_of(slash + 1), &w->len_ms) == 0 &&
           w->len_ms > 0;
}

/* The quota-signal options (tokens=, unified=, credits=, kind=, reset=); -1 unknown, -2 bad value. */
static int parse_quota_option(sim_account *a, const char *name, char *v)
{
    int k;
    if (!strcmp(name, "tokens")) return parse_window(v, &a->toks) ? 0 : -2;
    if (!strcmp(name, "unified")) {
        a->unified = !strcmp(v, "1");
        return 0;
    }
    if (!strcmp(name, "credits")) return parse_int64(v, 1, INT64_MAX / 2, &a->credits) ? 0 : -2;
    if (!strcmp(name, "reset"))
        return qg_parse_duration_ms(qg_slice_of(v), &a->reset_ms) == 0 && a->reset_ms > 0 ? 0 : -2;
    if (!strcmp(name, "kind")) {
        if ((k = name_index(sim_kind_names, QG_ARRAY_LEN(sim_kind_names), v)) < 0) return -2;
        a->kind = (sim_kind)k;
        return 0;
    }
    return -1;
}

/* Parses KEY=MODE[,retry_after=N][,delay=DUR][,limit=N/DUR][,balance=X][,times=N][,status=N][,seed=N]
 * [,tokens=N/DUR][,unified=1][,credits=N][,kind=K][,reset=DUR]. */
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
            a->reqs.limit = atoll(v);
            if (qg_parse_duration_ms(qg_slice_of(slash + 1), &a->reqs.len_ms) < 0 || a->reqs.len_ms <= 0) goto out;
        } else if (!strcmp(tok, "times")) {
            if (!parse_int64(v, 0, INT64_MAX / 2, &a->drop_times)) goto out;
            a->times_set = true;
        } else if (!strcmp(tok, "status")) {
            int64_t st;
            if (!parse_int64(v, 400, 599, &st)) goto out;
            a->early_status = (int)st;
        } else if (!strcmp(tok, "framing")) {
            if (strcmp(v, "close") && strcmp(v, "chunked")) goto out;
            a->close_delimited = !strcmp(v, "close");
        } else if (!strcmp(tok, "echo")) {
            a->echo = !strcmp(v, "1");
        } else if (!strcmp(tok, "hop")) {
            a->hop = !strcmp(v, "1");
        } else if (!strcmp(tok, "seed")) {
            char *end;
            a->seed = strtoull(v, &end, 10);
            if (!*v || *end) goto out;
            a->seed_set = true;
        } else if (parse_quota_option(a, tok, v) < 0) goto out;
    }
    atomic_store(&a->drop_left, a->drop_times);
    rc = 0;
out:
    free(copy);
    return rc;
}

/* Starts a new window when the current one has ended; returns the ms left in it. */
static int64_t window_roll(sim_window *w, int64_t now)
{
    if (now - w->start >= w->len_ms) {
        w->start = now;
        w->used = 0;
    }
    return w->start + w->len_ms - now;
}

/* Counts a request of `tokens` against the account's windows (limit=, tokens=): admitted
 * only when neither is used up, else q->wait_ms says how long until the refusing one ends.
 * The token window admits a request while any token is left (it may overshoot). */
static void quota_admit(sim_account *a, int64_t tokens, sim_quota *q)
{
    *q = (sim_quota){.now = qg_now_ms(), .req_remaining = 9999, .req_reset_ms = 1000};
    if (!a->reqs.limit && !a->toks.limit) return;
    pthread_mutex_lock(&a->mu);
    bool req_full = false, tok_full = false;
    if (a->reqs.limit) {
        q->req_reset_ms = window_roll(&a->reqs, q->now);
        req_full = a->reqs.used >= a->reqs.limit;
    }
    if (a->toks.limit) {
        q->tok_reset_ms = window_roll(&a->toks, q->now);
        tok_full = a->toks.used >= a->toks.limit;
    }
    if (req_full || tok_full) {
        q->wait_ms = req_full ? q->req_reset_ms : q->tok_reset_ms;
        q->tok_refused = !req_full;
    } else {
        a->reqs.used += a->reqs.limit ? 1 : 0;
        a->toks.used += a->toks.limit ? tokens : 0;
    }
    if (a->reqs.limit) q->req_remaining = a->reqs.limit - a->reqs.used;
    q->req_used = a->reqs.used;
    q->tok_used = a->toks.used;
    q->tok_remaining = QG_MAX((int64_t)0, a->toks.limit - a->toks.used);
    pthread_mutex_unlock(&a->mu);
}

/* splitmix64: spreads small seeds (1, 2, 3 ...) over the state space. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Seeds every chaos account: its seed= option, else --seed mixed with the key (FNV-1a). */
static void chaos_seed_all(sim_state *s)
{
    int n = atomic_load(&s->n_accounts);
    for (int i = 0; i < n; i++) {
        sim_account *a = s->accounts[i];
        uint64_t seed = a->seed;
        if (!a->seed_set) {
            uint64_t h = 0xcbf29ce484222325ull;
            for (const char *k = a->key; *k; k++) h = (h ^ (unsigned char)*k) * 0x100000001b3ull;
            seed = s->seed ^ h;
        }
        a->rng = mix64(seed);
        if (!a->rng) a->rng = 0x2545f4914f6cdd1dull;
    }
}

/* The next chaos behaviour of an account: the k-th request to the account gets the k-th
 * pick of its xorshift64* sequence, whatever the thread. */
static sim_mode chaos_pick(sim_account *a)
{
    pthread_mutex_lock(&a->mu);
    if (!a->rng) a->rng = mix64(0); /* an account first seen at run time */
    a->rng ^= a->rng >> 12;
    a->rng ^= a->rng << 25;
    a->rng ^= a->rng >> 27;
    uint64_t x = a->rng * 0x2545f4914f6cdd1dull;
    pthread_mutex_unlock(&a->mu);
    int v = (int)((x >> 32) % CHAOS_WEIGHT_TOTAL), i = 0;
    while (v >= chaos_weights[i]) v -= chaos_weights[i++];
    atomic_fetch_add(&a->chaos_picks[i], 1);
    return chaos_modes[i];
}

/* drop and error modes: true while the account still has requests to treat so (times=N). */
static bool drop_take(sim_account *a)
{
    int64_t left = atomic_load(&a->drop_left);
    while (left > 0)
        if (atomic_compare_exchange_weak(&a->drop_left, &left, left - 1)) return true;
    return false;
}

/* ---- response pieces ---- */

/* One Anthropic bucket: anthropic-ratelimit-NAME-{limit,remaining,reset} (RFC 3339). */
static void anthropic_bucket(qg_buf *h, const char *name, int64_t limit, int64_t remaining, int64_t reset_at_ms)
{
    char ts[48];
    qg_format_rfc3339(reset_at_ms, ts, sizeof ts);
    qg_buf_appendf(h, "anthropic-ratelimit-%s-limit: %lld\r\nanthropic-ratelimit-%s-remaining: %lld\r\n"
                      "anthropic-ratelimit-%s-reset: %s\r\n",
                   name, (long long)limit, name, (long long)remaining, name, ts);
}

/* A Go duration as OpenAI sends resets: "360ms", "1.156s", "59.55s", "6m0s", "1h0m0s". */
static void go_duration(int64_t ms, char *out, size_t n)
{
    if (ms < 1000) {
        snprintf(out, n, "%lldms", (long long)QG_MAX(ms, (int64_t)0));
        return;
    }
    long long h = ms / 3600000, m = ms / 60000 % 60, sec = ms / 1000 % 60, frac = ms % 1000;
    int len = 0;
    if (h) len += snprintf(out + len, n - (size_t)len, "%lldh", h);
    if (h || m) len += snprintf(out + len, n - (size_t)len, "%lldm", m);
    len += snprintf(out + len, n - (size_t)len, "%lld", sec);
    if (frac) {
        char f[8];
        snprintf(f, sizeof f, ".%03lld", frac);
        for (size_t k = strlen(f); f[k - 1] == '0'; k--) f[k - 1] = 0;
        len += snprintf(out + len, n - (size_t)len, "%s", f);
    }
    snprintf(out + len, n - (size_t)len, "s");
}

/* A protobuf JSON Duration (Gemini's retryDelay): "3600s", "57.238s". */
static void pb_duration(int64_t ms, char *out, size_t n)
{
    if (ms % 1000) snprintf(out, n, "%lld.%03llds", (long long)(ms / 1000), (long long)(ms % 1000));
    else snprintf(out, n, "%llds", (long long)(ms / 1000));
}

static int64_t ceil_s(int64_t ms) { return (ms + 999) / 1000; }

/* The end of the period of `len` ms, counted from `start`, that contains `now`. */
static int64_t period_end(int64_t start, int64_t len, int64_t now)
{
    return start + len * ((now - start) / len + 1);
}

/* tokens=: OpenAI x-ratelimit-*-tokens (Go duration) or anthropic-ratelimit-tokens-* (RFC 3339). */
static void token_headers(qg_buf *h, bool anthropic, int64_t limit, int64_t remaining, int64_t now, int64_t reset_ms)
{
    if (anthropic) {
        anthropic_bucket(h, "tokens", limit, remaining, now + reset_ms);
        return;
    }
    char d[48];
    go_duration(reset_ms, d, sizeof d);
    qg_buf_appendf(h, "x-ratelimit-limit-tokens: %lld\r\nx-ratelimit-remaining-tokens: %lld\r\nx-ratelimit-reset-tokens: %s\r\n",
                   (long long)limit, (long long)remaining, d);
}

static void ratelimit_headers(qg_buf *h, bool anthropic, int64_t limit, int64_t remaining, int64_t reset_ms)
{
    if (anthropic) {
        anthropic_bucket(h, "requests", limit, remaining, qg_now_ms() + reset_ms);
    } else {
        qg_buf_appendf(h, "x-ratelimit-limit-requests: %lld\r\nx-ratelimit-remaining-requests: %lld\r\n"
                          "x-ratelimit-reset-requests: %lldms\r\n",
                       (long long)limit, (long long)remaining, (long long)reset_ms);
    }
}

#define FIVE_HOURS_MS (5 * 3600 * 1000LL)
#define SEVEN_DAYS_MS (7 * 86400 * 1000LL)

/* unified=1: the subscription family (anthropic-unified-headers.http).  The 5-hour window is
 * limit=N/DUR's (utilization = used / limit); the 7-day one is fixed at 0.10, allowed, its
 * period counted from start-up.  Resets are epoch seconds. */
static void unified_headers(qg_buf *h, const sim_req *r, bool rejected)
{
    const sim_account *a = r->acct;
    int64_t start = r->w->sim->start_ms, now = r->q.now;
    int64_t reset5 = ceil_s(a->reqs.limit ? now + r->q.req_reset_ms : period_end(start, FIVE_HOURS_MS, now));
    int64_t reset7 = ceil_s(period_end(start, SEVEN_DAYS_MS, now));
    double util = a->reqs.limit ? (double)r->q.req_used / (double)a->reqs.limit : 0.0;
    const char *st = rejected ? "rejected" : "allowed";
    qg_buf_appendf(h, "anthropic-ratelimit-unified-status: %s\r\nanthropic-ratelimit-unified-5h-status: %s\r\n"
                      "anthropic-ratelimit-unified-5h-utilization: %.2f\r\nanthropic-ratelimit-unified-5h-reset: %lld\r\n"
                      "anthropic-ratelimit-unified-7d-status: allowed\r\nanthropic-ratelimit-unified-7d-utilization: 0.10\r\n"
                      "anthropic-ratelimit-unified-7d-reset: %lld\r\n"
                      "anthropic-ratelimit-unified-representative-claim: five_hour\r\n"
                      "anthropic-ratelimit-unified-reset: %lld\r\nanthropic-ratelimit-unified-fallback-percentage: 0.5\r\n"
                      "anthropic-ratelimit-unified-overage-status: rejected\r\n",
                   st, st, util, (long long)reset5, (long long)reset7, (long long)reset5);
}

/* The rate-limit headers of an answer: the request window's (or, with unified=1 on the
 * Anthropic dialect, the unified family), then the token window's when tokens= is set. */
static void quota_headers(qg_buf *h, const sim_req *r, bool rejected)
{
    const sim_account *a = r->acct;
    bool anthropic = r->ep >= EP_MESSAGES;
    if (anthropic && a->unified) unified_headers(h, r, rejected);
    else ratelimit_headers(h, anthropic, a->reqs.limit ? a->reqs.limit : 10000, r->q.req_remaining, r->q.req_reset_ms);
    if (a->toks.limit) token_headers(h, anthropic, a->toks.limit, r->q.tok_remaining, r->q.now, r->q.tok_reset_ms);
}

/* Streams carry the rate-limit headers only for accounts with a quota option (limit=,
 * tokens=, unified=1); plain accounts' streams stay as they always were. */
static bool has_quota(const sim_account *a)
{
    return a->reqs.limit || a->toks.limit || a->unified;
}

static void respond_json(qg_conn *c, int status, const char *extra_headers, size_t elen, const qg_buf *body)
{
    qg_buf h;
    qg_buf_init(&h, 0);
    qg_buf_puts(&h, "Content-Type: application/json\r\n");
    if (extra_headers) qg_buf_append(&h, extra_headers, elen);
    qg_conn_respond(c, status, h.data, h.len, body->data, body->len);
    qg_buf_free(&h);
}

static void error_body(qg_buf *b, bool anthropic, const char *type, const char *code, const char *msg)
{
    if (anthropic)
        qg_buf_appendf(b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"}}", type, msg);
    else
        qg_buf_appendf(b, "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"param\":null,\"code\":\"%s\"}}", msg, type, code);
}

/* An Anthropic error as the API sends it: request_id in the body and the request-id header.
 * `more` (may be NULL) continues the "error" object, e.g. ",\"details\":{...}". */
static void anthropic_error(qg_buf *h, qg_buf *b, const sim_req *r, const char *type, const char *msg, const char *more)
{
    qg_buf_appendf(h, "request-id: req_sim%lld\r\n", (long long)r->id);
    qg_buf_appendf(b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"%s},\"request_id\":\"req_sim%lld\"}",
                   type, msg, more ? more : "", (long long)r->id);
}

/* Sends an error answer (counted in `errors`) and frees h and b.  It keeps the connection
 * and carries a Content-Length, as every answer here does. */
static void send_error(sim_req *r, int status, qg_buf *h, qg_buf *b)
{
    atomic_fetch_add(&r->acct->errors, 1);
    respond_json(r->c, status, h->data, h->len, b);
    qg_buf_free(b);
    qg_buf_free(h);
}

static void respond_error(sim_req *r, int status, const char *type, const char *code, const char *msg, int retry_after)
{
    qg_buf b, h;
    qg_buf_init(&b, 0);
    qg_buf_init(&h, 0);
    error_body(&b, r->ep >= EP_MESSAGES, type, code, msg);
    if (retry_after > 0) qg_buf_appendf(&h, "retry-after: %d\r\n", retry_after);
    send_error(r, status, &h, &b);
}

/* ---- quota signals (limit=, tokens=, unified=, credits=, error mode) ---- */

/* The tokens a request uses against tokens=: prompt + the completion it will be answered with. */
static int64_t req_tokens(const sim_req *r)
{
    return r->prompt + (r->ep == EP_EMBEDDINGS || r->ep == EP_COUNT_TOKENS ? 0 : r->total);
}

/* The 429 of a used-up token window, in the dialect's shape (openai-429-rate-limit.http,
 * anthropic-429-rate-limit.http). */
static void token_429_body(qg_buf *h, qg_buf *b, const sim_req *r)
{
    const sim_account *a = r->acct;
    char msg[512], d[48];
    if (r->ep >= EP_MESSAGES) {
        snprintf(msg, sizeof msg, "This request would exceed the rate limit for your organization of %lld tokens per window "
                                  "(simulated). Reduce the prompt or retry later.",
                 (long long)a->toks.limit);
        anthropic_error(h, b, r, "rate_limit_error", msg, NULL);
        return;
    }
    go_duration(r->q.wait_ms, d, sizeof d);
    snprintf(msg, sizeof msg, "Rate limit reached for %s in organization org-sim on tokens per window (simulated): Limit %lld, "
                              "Used %lld, Requested %lld. Please try again in %s.",
             r->model, (long long)a->toks.limit, (long long)r->q.tok_used, (long long)req_tokens(r), d);
    error_body(b, false, "tokens", "rate_limit_exceeded", msg);
}

/* A window (limit= or tokens=) is used up: 429 with retry-after to its end and the headers
 * showing it at 0; with unified=1 on the Anthropic dialect, anthropic-unified-429-rejected.http. */
static void respond_window_429(sim_req *r)
{
    bool anthropic = r->ep >= EP_MESSAGES, unified = anthropic && r->acct->unified && !r->q.tok_refused;
    qg_buf b, h;
    qg_buf_init(&b, 0);
    qg_buf_init(&h, 0);
    qg_buf_appendf(&h, "retry-after: %lld\r\n", (long long)ceil_s(r->q.wait_ms));
    quota_headers(&h, r, !r->q.tok_refused);
    if (r->q.tok_refused) token_429_body(&h, &b, r);
    else if (unified)
        anthropic_error(&h, &b, r, "rate_limit_error", "This request would exceed your account's rate limit. Try again later (simulated).", NULL);
    else
        error_body(&b, anthropic, anthropic ? "rate_limit_error" : "requests", "rate_limit_exceeded",
                   "Rate limit reached (simulated). Please try again later.");
    send_error(r, 429, &h, &b);
}

/* credits=N: true once N requests succeeded (the prepaid credit never comes back). */
static bool credits_gone(sim_account *a)
{
    return a->credits && atomic_load(&a->credits_used) >= a->credits;
}

/* Credit exhaustion: openai-429-insufficient-quota.http / anthropic-400-credit-balance.http. */
static void respond_credits(sim_req *r)
{
    qg_buf b, h;
    qg_buf_init(&b, 0);
    qg_buf_init(&h, 0);
    if (r->ep >= EP_MESSAGES) {
        anthropic_error(&h, &b, r, "invalid_request_error",
                        "Your credit balance is too low to access the Anthropic API. Buy credits or change your plan "
                        "under Plans & Billing (simulated).", NULL);
        send_error(r, 400, &h, &b);
        return;
    }
    error_body(&b, false, "insufficient_quota", "insufficient_quota",
               "You exceeded your current quota, please check your plan and billing details (simulated: credits used up).");
    send_error(r, 429, &h, &b);
}

/* error mode: one builder per kind.  Each fills the head lines and the body, returns the
 * status; `now` is the answer's epoch ms and `reset` (reset=DUR) puts the signal's reset at
 * now + reset where the provider's answer has one. */
typedef int (*kind_builder)(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset);

/* openai-429-rate-limit.http / anthropic-429-rate-limit.http: a token limit hit, no retry-after. */
static int kind_rate_limit(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset)
{
    const sim_account *a = r->acct;
    int64_t reqs = a->reqs.limit ? a->reqs.limit : 10000;
    char d[48], msg[512];
    ratelimit_headers(h, r->ep >= EP_MESSAGES, reqs, r->q.req_remaining, r->q.req_reset_ms);
    if (r->ep >= EP_MESSAGES) {
        int64_t toks = a->toks.limit ? a->toks.limit : 2000000;
        anthropic_bucket(h, "input-tokens", toks, 0, now + reset);
        anthropic_bucket(h, "output-tokens", toks / 5, toks / 5, now);
        anthropic_bucket(h, "tokens", toks + toks / 5, 0, now + reset);
        snprintf(msg, sizeof msg, "This request would exceed the rate limit for your organization of %lld input tokens "
                                  "per minute (simulated). Reduce the prompt or retry later.", (long long)toks);
        anthropic_error(h, b, r, "rate_limit_error", msg, NULL);
        return 429;
    }
    int64_t toks = a->toks.limit ? a->toks.limit : 200000;
    token_headers(h, false, toks, 0, now, reset);
    go_duration(reset, d, sizeof d);
    snprintf(msg, sizeof msg, "Rate limit reached for %s in organization org-sim on tokens per min (TPM) (simulated): "
                              "Limit %lld, Used %lld, Requested %lld. Please try again in %s.",
             r->model, (long long)toks, (long long)toks, (long long)req_tokens(r), d);
    error_body(b, false, "tokens", "rate_limit_exceeded", msg);
    return 429;
}

/* codex-429-usage-limit.http: the ChatGPT plan's 5-hour window is used up.  Counted from the
 * Date header's second: retry-after = resets_in_seconds = reset, Date + retry-after = resets_at. */
static int kind_usage_limit(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset)
{
    int64_t in = ceil_s(reset), at = now / 1000 + in;
    int64_t week = ceil_s(QG_MAX(now + reset, period_end(r->w->sim->start_ms, SEVEN_DAYS_MS, now)));
    qg_buf_appendf(h, "retry-after: %lld\r\nx-codex-primary-used-percent: 100.0\r\nx-codex-primary-window-minutes: 300\r\n"
                      "x-codex-primary-reset-at: %lld\r\nx-codex-secondary-used-percent: 41.0\r\n"
                      "x-codex-secondary-window-minutes: 10080\r\nx-codex-secondary-reset-at: %lld\r\n",
                   (long long)in, (long long)at, (long long)week);
    qg_buf_appendf(b, "{\"error\":{\"type\":\"usage_limit_reached\",\"message\":\"You have reached the usage limit of your "
                      "plan for this window (simulated).\",\"plan_type\":\"plus\",\"resets_at\":%lld,\"resets_in_seconds\":%lld}}",
                   (long long)at, (long long)in);
    return 429;
}

/* anthropic-429-spend-limit.http: the tier's monthly spend cap, no retry-after. */
static int kind_spend_limit(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset)
{
    (void)now, (void)reset;
    anthropic_error(h, b, r, "rate_limit_error",
                    "Your organization has reached the monthly spend limit of its usage tier (simulated). Access resumes "
                    "at the start of next month or when you move to a higher tier.",
                    ",\"details\":{\"error_code\":\"enforced_spend_limit_reached\"}");
    return 429;
}

/* OpenAI's billing hard limit: insufficient_quota's shape with code billing_hard_limit_reached. */
static int kind_billing(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset)
{
    (void)r, (void)h, (void)now, (void)reset;
    error_body(b, false, "insufficient_quota", "billing_hard_limit_reached",
               "Billing hard limit has been reached (simulated). Check your plan and billing details.");
    return 429;
}

/* openrouter-402-key-limit.http: the key's credit limit for the period. */
static int kind_or_402(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset)
{
    (void)r, (void)h, (void)now, (void)reset;
    qg_buf_puts(b, "{\"error\":{\"code\":402,\"message\":\"This API key has used its credit limit for the current period "
                   "(simulated).\",\"metadata\":{\"limit_source\":\"openrouter_key_limit\",\"remedy_hint\":\"Raise the key's "
                   "credit limit or wait for its limit_reset.\"}}}");
    return 402;
}

/* openrouter-429-free-daily.http: the free-model daily allowance; X-RateLimit-Reset in epoch ms. */
static int kind_or_free_daily(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset)
{
    (void)r;
    long long at = (long long)(now + reset);
    qg_buf_appendf(h, "X-RateLimit-Limit: 50\r\nX-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: %lld\r\n", at);
    qg_buf_appendf(b, "{\"error\":{\"message\":\"Rate limit exceeded: free-models-per-day (simulated). Buy at least 10 "
                      "credits to raise the daily free-model allowance to 1000 requests.\",\"code\":429,\"metadata\":"
                      "{\"headers\":{\"X-RateLimit-Limit\":\"50\",\"X-RateLimit-Remaining\":\"0\",\"X-RateLimit-Reset\":"
                      "\"%lld\"},\"provider_name\":null}},\"user_id\":\"user_sim\"}",
                   at);
    return 429;
}

/* gemini-429-daily.json: a per-day quota; retryDelay (and the message's hint) = reset. */
static int kind_gemini_daily(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset)
{
    (void)r, (void)h, (void)now;
    char d[48];
    pb_duration(reset, d, sizeof d);
    qg_buf_appendf(b, "{\"error\":{\"code\":429,\"message\":\"Quota exceeded for your current plan (simulated).\\n* Quota "
                      "exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: "
                      "250, model: gemini-2.5-flash\\nPlease retry in %s.\",\"status\":\"RESOURCE_EXHAUSTED\",\"details\":"
                      "[{\"@type\":\"type.googleapis.com/google.rpc.QuotaFailure\",\"violations\":[{\"quotaMetric\":"
                      "\"generativelanguage.googleapis.com/generate_content_free_tier_requests\",\"quotaId\":"
                      "\"GenerateRequestsPerDayPerProjectPerModel-FreeTier\",\"quotaDimensions\":{\"model\":"
                      "\"gemini-2.5-flash\",\"location\":\"global\"},\"quotaValue\":\"250\"}]},{\"@type\":"
                      "\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"%s\"}]}}",
                   d, d);
    return 429;
}

/* anthropic-529-overloaded.http: provider-wide overload. */
static int kind_overloaded(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset)
{
    (void)now, (void)reset;
    anthropic_error(h, b, r, "overloaded_error", "Overloaded", NULL);
    return 529;
}

/* The dialect's error shape: Anthropic's (with request_id) or OpenAI's. */
static void dialect_error(sim_req *r, qg_buf *h, qg_buf *b, const char *atype, const char *otype, const char *code,
                          const char *msg)
{
    if (r->ep >= EP_MESSAGES) anthropic_error(h, b, r, atype, msg, NULL);
    else error_body(b, false, otype, code, msg);
}

static int kind_unavailable(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset)
{
    (void)now, (void)reset;
    dialect_error(r, h, b, "api_error", "server_error", "service_unavailable",
                  "The service is temporarily unavailable (simulated). Please retry.");
    return 503;
}

static int kind_auth(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset)
{
    (void)now, (void)reset;
    if (r->ep >= EP_MESSAGES) anthropic_error(h, b, r, "authentication_error", "invalid x-api-key (simulated)", NULL);
    else error_body(b, false, "invalid_request_error", "invalid_api_key", "Incorrect API key provided (simulated).");
    return 401;
}

static int kind_forbidden(sim_req *r, qg_buf *h, qg_buf *b, int64_t now, int64_t reset)
{
    (void)now, (void)reset;
    dialect_error(r, h, b, "permission_error", "permission_error", "permission_denied",
                  "Your API key does not have permission to use the specified resource (simulated).");
    return 403;
}

static const kind_builder kind_builders[] = {
    [KIND_RATE_LIMIT] = kind_rate_limit,       [KIND_USAGE_LIMIT] = kind_usage_limit, [KIND_SPEND_LIMIT] = kind_spend_limit,
    [KIND_BILLING] = kind_billing,             [KIND_OR_402] = kind_or_402,           [KIND_OR_FREE_DAILY] = kind_or_free_daily,
    [KIND_GEMINI_DAILY] = kind_gemini_daily,   [KIND_OVERLOADED] = kind_overloaded,   [KIND_UNAVAILABLE] = kind_unavailable,
    [KIND_AUTH] = kind_auth,                   [KIND_FORBIDDEN] = kind_forbidden,
};

/* error mode: the account's kind=K answer (counted in `errors`, connection kept). */
static void respond_kind(sim_req *r)
{
    qg_buf b, h;
    qg_buf_init(&b, 0);
    qg_buf_init(&h, 0);
    int status = kind_builders[r->acct->kind](r, &h, &b, qg_now_ms(), r->acct->reset_ms);
    send_error(r, status, &h, &b);
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

/* Adds what a response that started consumed, once, and counts how it ended. */
static void account_settle(sim_req *r, sim_outcome how)
{
    sim_account *a = r->acct;
    if (r->settled) return;
    r->settled = true;
    atomic_fetch_add(&a->prompt_tokens, r->prompt);
    atomic_fetch_add(&a->cached_tokens, r->cached);
    atomic_fetch_add(&a->completion_tokens, r->sent);
    switch (how) {
    case OUT_OK:
        atomic_fetch_add(&a->ok, 1);
        if (a->credits) atomic_fetch_add(&a->credits_used, 1);
        break;
    case OUT_CUT: atomic_fetch_add(&a->cut, 1); break;
    case OUT_ERROR_EVENT: atomic_fetch_add(&a->error_events, 1); break;
    case OUT_TOKENS_ONLY: break;
    }
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
    qg_buf_free(&r->head_extra);
    if (r->c) r->c->req_ud = NULL;
    free(r);
}

/* The error event a provider sends mid-stream, in the endpoint's shape. */
static void stream_error_event(qg_buf *b, const sim_req *r)
{
    static const char msg[] = "Overloaded (simulated mid-stream error).";
    if (r->ep == EP_MESSAGES)
        qg_buf_appendf(b, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"%s\"}}\n\n", msg);
    else if (r->ep == EP_RESPONSES)
        qg_buf_appendf(b, "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"%s\",\"param\":null,\"sequence_number\":%d}\n\n",
                       msg, r->sent + 1);
    else
        qg_buf_appendf(b, "data: {\"error\":{\"message\":\"%s\",\"type\":\"server_error\",\"param\":null,\"code\":\"server_error\"}}\n\n", msg);
}

/* Emits chunks until the stream ends, a delay is due, or the client backs up.  A faulty
 * stream (cut, error_event, stall) sends half the chunks, then goes wrong. */
static void stream_pump(sim_req *r)
{
    sim_state *s = r->w->sim;
    qg_buf *b = &r->scratch;
    int fault_at = r->fault != FAULT_NONE ? r->total / 2 : -1;
    while (!r->paused && !r->stalled) {
        qg_buf_reset(b);
        if (!r->headers_sent) {
            qg_buf h;
            qg_buf_init(&h, 0);
            qg_buf_puts(&h, "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n");
            if (has_quota(r->acct)) quota_headers(&h, r, false);
            qg_buf_append(&h, r->head_extra.data, r->head_extra.len);
            qg_conn_start(r->c, 200, h.data, h.len, r->acct->close_delimited ? QG_UNTIL_CLOSE : -1);
            qg_buf_free(&h);
            r->headers_sent = true;
            stream_prologue(b, r);
        }
        /* With no delay, everything goes out in one write. */
        do {
            if (r->sent == fault_at) {
                switch (r->fault) {
                case FAULT_CUT:
                    qg_conn_send(r->c, b->data, b->len);
                    account_settle(r, OUT_CUT);
                    qg_conn_abort(r->c);
                    req_free(r);
                    return;
                case FAULT_ERROR_EVENT:
                    stream_error_event(b, r);
                    qg_conn_send(r->c, b->data, b->len);
                    account_settle(r, OUT_ERROR_EVENT);
                    qg_conn_end(r->c);
                    req_free(r);
                    return;
                default: /* FAULT_STALL: send what we have, then nothing, ever */
                    r->stalled = true;
                    atomic_fetch_add(&r->acct->stalled, 1);
                    if (b->len && qg_conn_send(r->c, b->data, b->len) < 0) return; /* on_close frees */
                    if (!b->len) qg_conn_send(r->c, NULL, 0); /* flush the head */
                    return;
                }
            }
            if (r->sent < r->total) stream_event(b, r, ++r->sent);
            else {
                stream_epilogue(b, r);
                qg_conn_send(r->c, b->data, b->len);
                account_settle(r, OUT_OK);
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
    quota_headers(&h, r, false);
    qg_buf_append(&h, r->head_extra.data, r->head_extra.len);
    if (r->fault == FAULT_CUT || r->fault == FAULT_STALL) {
        /* promise the whole body, deliver half, then close (cut) or go silent (stall) */
        qg_buf ct;
        qg_buf_init(&ct, 0);
        qg_buf_puts(&ct, "Content-Type: application/json\r\n");
        qg_buf_append(&ct, h.data, h.len);
        qg_conn_start(r->c, 200, ct.data, ct.len, (int64_t)b.len);
        qg_buf_free(&ct);
        r->headers_sent = true;
        r->sent = r->total / 2;
        if (r->fault == FAULT_STALL) {
            r->stalled = true;
            atomic_fetch_add(&r->acct->stalled, 1);
            qg_conn_send(r->c, b.data, b.len / 2); /* on failure on_close frees r */
            qg_buf_free(&b);
            qg_buf_free(&h);
            return; /* r lives until the connection closes (on_close settles it) */
        }
        qg_conn_send(r->c, b.data, b.len / 2);
        account_settle(r, OUT_CUT);
        qg_conn_abort(r->c);
    } else {
        account_settle(r, OUT_OK);
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

/* Head lines the account's options add to every answer: echo (the request's header names,
 * so tests see what a proxy forwarded) and hop (a header named by Connection). */
static void extra_head_lines(qg_buf *b, const sim_account *a, const qg_http_msg *m)
{
    if (a->echo) {
        qg_buf_puts(b, "x-sim-saw: ");
        for (size_t i = 0; i < m->n_headers; i++) {
            if (i) qg_buf_puts(b, ",");
            for (size_t k = 0; k < m->headers[i].name.n; k++) {
                char ch = (char)(m->headers[i].name.p[k] | 0x20);
                qg_buf_append(b, &ch, 1);
            }
        }
        qg_buf_puts(b, "\r\n");
    }
    if (a->hop) qg_buf_puts(b, "Connection: x-sim-hop\r\nX-Sim-Hop: for-the-next-hop-only\r\n");
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
                           "\"dropped\":%lld,\"early\":%lld,\"error_events\":%lld,\"stalled\":%lld,\"hung\":%lld,"
                           "\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"cached_tokens\":%lld",
                       i ? "," : "", a->key, sim_mode_names[a->mode], (long long)a->requests, (long long)a->ok,
                       (long long)a->errors, (long long)a->cut, (long long)a->dropped, (long long)a->early,
                       (long long)a->error_events, (long long)a->stalled, (long long)a->hung, (long long)a->prompt_tokens,
                       (long long)a->completion_tokens, (long long)a->cached_tokens);
        if (a->mode == SIM_CHAOS) {
            qg_buf_puts(&b, ",\"chaos\":{");
            for (int k = 0; k < CHAOS_N; k++)
                qg_buf_appendf(&b, "%s\"%s\":%lld", k ? "," : "", sim_mode_names[chaos_modes[k]], (long long)a->chaos_picks[k]);
            qg_buf_puts(&b, "}");
        }
        qg_buf_puts(&b, "}");
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

/* Behaviours that answer with content (and so use tokens= tokens): all but the error answers and hang. */
static bool answers_normally(sim_mode beh, bool stream)
{
    return beh == SIM_OK || beh == SIM_SLOW || beh == SIM_CUT || beh == SIM_STALL || (beh == SIM_ERROR_EVENT && stream);
}

static void on_request(qg_conn *c, const qg_http_msg *m, qg_buf *body)
{
    sim_worker *w = c->srv->app;
    sim_state *s = w->sim;
    if (qg_slice_eq(m->target, "/sim/stats")) return serve_stats(w, c);
    if (qg_slice_eq(m->target, "/healthz")) return qg_conn_respond(c, 200, "", 0, "ok\n", 3);
    qg_slice key = qg_http_api_key(m);
    sim_account *a = key.n ? account_find(s, key, true) : NULL;
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
    qg_buf_init(&r->head_extra, 0);
    if (a) extra_head_lines(&r->head_extra, a, m);
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
    /* This request's behaviour: the account's mode, or for chaos the next pick. */
    sim_mode beh = a->mode;
    int retry_after = a->retry_after_s;
    int64_t delay = a->delay_ms;
    if (beh == SIM_CHAOS) {
        beh = chaos_pick(a);
        retry_after = CHAOS_RETRY_AFTER_S;
        delay = CHAOS_DELAY_MS;
    } else if (beh == SIM_DROP && !drop_take(a)) {
        beh = SIM_OK;
    } else if (beh == SIM_EARLY) {
        beh = SIM_OK; /* only a server without on_head gets here: answer normally */
    } else if (beh == SIM_ERROR && a->times_set && !drop_take(a)) {
        beh = SIM_OK; /* error mode with times=N: the first N requests only */
    }
    if (beh == SIM_DROP) { /* the whole request was read: close without a byte */
        atomic_fetch_add(&a->dropped, 1);
        req_free(r);
        qg_conn_abort(c);
        return;
    }
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
    if (credits_gone(a)) {
        respond_credits(r);
        req_free(r);
        return;
    }
    quota_admit(a, answers_normally(beh, r->stream) ? req_tokens(r) : 0, &r->q);
    if (r->q.wait_ms > 0) {
        respond_window_429(r);
    } else if (beh == SIM_429) {
        respond_error(r, 429, anthropic ? "rate_limit_error" : "requests", "rate_limit_exceeded",
                      "Rate limit reached (simulated). Please try again later.", retry_after);
    } else if (beh == SIM_ERROR) {
        respond_kind(r);
    } else if (beh == SIM_500 || (beh == SIM_ERROR_EVENT && !r->stream)) {
        respond_error(r, 500, anthropic ? "api_error" : "server_error", "server_error", "The server had an error (simulated).", 0);
    } else if (beh == SIM_INSUFFICIENT) {
        if (anthropic)
            respond_error(r, 400, "invalid_request_error", "", "Your credit balance is too low to access the Anthropic API (simulated).", 0);
        else
            respond_error(r, 429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota (simulated).", 0);
    } else if (beh == SIM_HANG) { /* never answer; on_close frees r */
        atomic_fetch_add(&a->hung, 1);
        return;
    } else {
        r->fault = beh == SIM_CUT ? FAULT_CUT : beh == SIM_ERROR_EVENT ? FAULT_ERROR_EVENT : beh == SIM_STALL ? FAULT_STALL : FAULT_NONE;
        if (beh == SIM_SLOW) {
            qg_timer_start(w->loop, &r->timer, delay);
            return;
        }
        if (r->stream) stream_pump(r);
        else respond_full(r);
        return;
    }
    req_free(r);
}

/* early mode: answer from the head, before the body, and keep the connection (the server
 * reads and discards the body).  Every other request reads its body as usual. */
static int on_head(qg_conn *c, const qg_http_msg *m)
{
    sim_worker *w = c->srv->app;
    sim_endpoint ep;
    if (!qg_slice_eq(m->method, "POST") || endpoint_of(m->target, &ep) < 0) return QG_HEAD_READ_BODY;
    qg_slice key = qg_http_api_key(m);
    sim_account *a = key.p ? account_find(w->sim, key, false) : NULL;
    if (!a || a->mode != SIM_EARLY) return QG_HEAD_READ_BODY;
    atomic_fetch_add(&a->requests, 1);
    atomic_fetch_add(&a->early, 1);
    int st = a->early_status;
    bool anthropic = ep >= EP_MESSAGES;
    const char *type, *code, *msg;
    if (st == 413) {
        type = anthropic ? "request_too_large" : "invalid_request_error";
        code = "request_too_large";
        msg = "Request exceeds the maximum allowed size (simulated early answer).";
    } else if (st == 429) {
        type = anthropic ? "rate_limit_error" : "requests";
        code = "rate_limit_exceeded";
        msg = "Rate limit reached (simulated early answer).";
    } else if (st >= 500) {
        type = anthropic ? "api_error" : "server_error";
        code = "server_error";
        msg = "The server had an error (simulated early answer).";
    } else {
        type = "invalid_request_error";
        code = "invalid_request";
        msg = "The request was rejected (simulated early answer).";
    }
    qg_buf b;
    qg_buf_init(&b, 0);
    error_body(&b, anthropic, type, code, msg);
    qg_conn_discard_body(c);
    respond_json(c, st, NULL, 0, &b);
    qg_buf_free(&b);
    return QG_HEAD_ANSWERED;
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
    /* the peer left mid-response: count what was sent (a stall already counted itself) */
    if (r->headers_sent) account_settle(r, r->stalled ? OUT_TOKENS_ONLY : OUT_CUT);
    req_free(r);
}

static const qg_handler sim_handler = {on_request, on_drain, on_close, on_head};

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
          "  --idle-close DUR       close keep-alive connections idle this long between\n"
          "                         requests (default 120s)\n"
          "  --seed N               seed for chaos accounts without seed= (default 1)\n"
          "  --rcvbuf SIZE          receive buffer of accepted connections (a slow reader\n"
          "                         of large bodies; default: the kernel's)\n"
          "  --tls-cert FILE --tls-key FILE   serve https with this certificate\n"
          "  --account KEY=MODE[,OPTION=VALUE]...   per-account behaviour (repeatable)\n"
          "     modes: ok, 429, 500, insufficient_quota, slow, cut,\n"
          "            drop (read the request, close without answering; times=N, default 1,\n"
          "                  then ok),\n"
          "            early (answer status=N, default 413, from the head; discard the body;\n"
          "                   keep the connection),\n"
          "            error_event (streams: half the chunks, an error event, a clean end;\n"
          "                         non-stream: 500),\n"
          "            stall (half the response, then silence on an open connection),\n"
          "            hang (read the request, never answer),\n"
          "            chaos (per request one of ok 40%, 429, 500, cut, error_event,\n"
          "                   stall, hang, slow, drop; seed=N),\n"
          "            error (a provider quota/failure answer, kind=K: rate_limit,\n"
          "                   usage_limit, spend_limit, billing, or_402, or_free_daily,\n"
          "                   gemini_daily, overloaded, unavailable, auth, forbidden;\n"
          "                   every request, or the first times=N, then ok)\n"
          "     options: retry_after=S (429), delay=DUR (slow), limit=N/DUR, balance=X,\n"
          "              times=N (drop, error), status=N (early), seed=N (chaos),\n"
          "              framing=close (streams end by closing, no chunked), echo=1\n"
          "              (x-sim-saw: the request's header names), hop=1 (answers carry\n"
          "              Connection: x-sim-hop and X-Sim-Hop),\n"
          "              tokens=N/DUR (token limit per window; 429 past it), unified=1\n"
          "              (Anthropic: unified 5h/7d headers from limit=), credits=N\n"
          "              (N successful requests, then credit exhaustion), kind=K and\n"
          "              reset=DUR (error; the signal's reset, default 1h)\n"
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
    s.idle_close_ms = 120000;
    s.seed = 1;
    s.start_ms = qg_now_ms();
    pthread_mutex_init(&s.accounts_mu, NULL);
    static const struct option opts[] = {
        {"listen", 1, 0, 'l'}, {"workers", 1, 0, 'w'}, {"chunks", 1, 0, 'n'}, {"chunk-delay", 1, 0, 'd'},
        {"tls-cert", 1, 0, 'c'}, {"tls-key", 1, 0, 'k'}, {"account", 1, 0, 'a'}, {"idle-close", 1, 0, 'i'},
        {"seed", 1, 0, 's'}, {"rcvbuf", 1, 0, 'r'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
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
        case 'r': {
            uint64_t v;
            if (qg_parse_size(qg_slice_of(optarg), &v) < 0 || v < 1024 || v > (64u << 20)) {
                fprintf(stderr, "quotagate sim: bad --rcvbuf %s (1KiB..64MiB)\n", optarg);
                return 2;
            }
            s.rcvbuf = (int)v;
            break;
        }
        case 'i':
            if (qg_parse_duration_ms(qg_slice_of(optarg), &s.idle_close_ms) < 0 || s.idle_close_ms <= 0) {
                fprintf(stderr, "quotagate sim: bad --idle-close %s\n", optarg);
                return 2;
            }
            break;
        case 's': {
            char *end;
            s.seed = strtoull(optarg, &end, 10);
            if (!*optarg || *end) {
                fprintf(stderr, "quotagate sim: bad --seed %s\n", optarg);
                return 2;
            }
            break;
        }
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
    chaos_seed_all(&s);
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
    /* Accepted sockets inherit it: a small window makes a sender wait on the simulator (a
     * provider reading a large body slowly), so an early answer arrives mid-write. */
    if (s.rcvbuf && setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &s.rcvbuf, sizeof s.rcvbuf) < 0)
        fprintf(stderr, "quotagate sim: SO_RCVBUF: %s\n", strerror(errno));
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    qg_server_limits lim = {.max_header = 64 << 10, .max_body = 64u << 20, .idle_timeout_ms = s.idle_close_ms, .max_connections = 100000};
    sim_worker *ws = qg_xcalloc((size_t)s.workers, sizeof *ws);
    for (int i = 0; i < s.workers; i++) {
        ws[i].sim = &s;
        ws[i].loop = qg_loop_new();
        qg_server_init(&ws[i].srv, ws[i].loop, lfd, &sim_handler, &ws[i], &lim, &s.conn_count, tls);
        qg_notify_init(ws[i].loop, &ws[i].stop, worker_stop_cb, &ws[i]);
        pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
    }
    printf("quotagate sim listening on %s://%s:%d (%d worker%s, %d chunks, delay %lld ms, idle close %lld ms)\n",
           tls ? "https" : "http", host, qg_local_port(lfd), s.workers, s.workers > 1 ? "s" : "", s.chunks,
           (long long)s.chunk_delay_ms, (long long)s.idle_close_ms);
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
        pthread_mutex_destroy(&s.accounts[i]->mu);
        free(s.accounts[i]);
    }
    return 0;
}
