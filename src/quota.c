/*
 * quota.c — the upstream account quota core.  See quota.h, and docs/quota.md for the
 * rules in prose.
 *
 * A bucket answers three questions from its atomics and `now`, without writing:
 *   eff_used   the use in the window containing now (0 once the window has rolled over)
 *   eff_reset  when room comes back (0: no reset known — credits, a closed first_use window)
 *   its verdict for a request: free, blocked until a reset, or out (spent with no reset)
 * The writers (reserve, settle, headers) first roll the bucket into the current window.
 */
#include "quota.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define ADD(x, v) atomic_fetch_add_explicit(&(x), (v), memory_order_relaxed)
#define DAY_MS 86400000LL
#define HOUR_MS 3600000LL

/* ---- names ---- */

const char *qg_acct_state_name(qg_acct_state s)
{
    static const char *const n[] = {"ready", "cooling", "depleted", "auth_failed", "disabled"};
    return (unsigned)s < QG_ARRAY_LEN(n) ? n[s] : "?";
}

const char *qg_alert_name(qg_alert a)
{
    static const char *const n[] = {"ok", "watch", "topup", "use_or_lose", "exhausted"};
    return (unsigned)a < QG_ARRAY_LEN(n) ? n[a] : "?";
}

const char *qg_quota_source_name(qg_quota_source s)
{
    static const char *const n[] = {"config", "local", "header", "error", "operator"};
    return (unsigned)s < QG_ARRAY_LEN(n) ? n[s] : "?";
}

const char *qg_block_name(qg_block b)
{
    static const char *const n[] = {"none",     "disabled", "auth_failed",  "cooling",
                                    "depleted", "bucket",   "header_limit", "trial_pending"};
    return (unsigned)b < QG_ARRAY_LEN(n) ? n[b] : "?";
}

const char *qg_unit_name(qg_unit u)
{
    static const char *const n[] = {"requests", "tokens", "input_tokens", "output_tokens", "usd", "percent"};
    return (unsigned)u < QG_ARRAY_LEN(n) ? n[u] : "?";
}

/* ---- the packed state word ---- */

static uint64_t pack(qg_acct_state s, int64_t until, bool stated)
{
    return (uint64_t)(until < 0 ? 0 : until) << 4 | (uint64_t)stated << 3 | (uint64_t)s;
}
static qg_acct_state st_state(uint64_t w) { return (qg_acct_state)(w & 7); }
static int64_t st_until(uint64_t w) { return (int64_t)(w >> 4); }
static bool st_stated(uint64_t w) { return (w >> 3) & 1; }

static void bump(qg_qacct *a) { atomic_fetch_add_explicit(&a->version, 1, memory_order_relaxed); }

/* ---- setup ---- */

int64_t qg_quota_amount(qg_unit u, double v)
{
    if (v < 0) return -1;
    double scale = u == QG_UNIT_USD ? 1e6 : u == QG_UNIT_PERCENT ? QG_PERCENT_FULL / 100.0 : 1;
    double x = v * scale;
    return x >= 9e18 ? INT64_MAX / 4 : llround(x);
}

static qg_unit slot_unit(int slot)
{
    switch (slot) {
    case QG_RL_REQUESTS: return QG_UNIT_REQUESTS;
    case QG_RL_INPUT_TOKENS: return QG_UNIT_INPUT_TOKENS;
    case QG_RL_OUTPUT_TOKENS: return QG_UNIT_OUTPUT_TOKENS;
    case QG_RL_WINDOW_SHORT:
    case QG_RL_WINDOW_LONG: return QG_UNIT_PERCENT;
    default: return QG_UNIT_TOKENS;
    }
}

static const char *const slot_bucket_names[QG_RL_N] = {
    "hdr.requests", "hdr.tokens", "hdr.input_tokens", "hdr.output_tokens", "hdr.tokens_long", "hdr.window_short",
    "hdr.window_long"};

static bool sliding(const qg_qbucket *b);

static void bucket_init(qg_qbucket *b, const qg_bucket_cfg *c, bool combine_any)
{
    memset(b, 0, sizeof *b);
    b->name = c->name;
    b->kind = c->kind;
    b->unit = c->unit;
    b->reset = c->reset;
    b->period_ms = c->period_ms;
    b->anchor_ms = c->anchor_ms;
    b->expires_at_ms = c->expires_at_ms;
    b->cfg_limit = qg_quota_amount(c->unit, c->limit);
    b->header_slot = -1;
    b->pool = combine_any && c->kind != QG_BUCKET_RATE;
    ST(b->limit, b->cfg_limit);
    ST(b->source, QG_SRC_CONFIG);
    ST(b->h_limit, -1);
    ST(b->h_remaining, -1);
    if (sliding(b)) {
        b->slice = qg_xcalloc(QG_SLIDING_SLICES, sizeof *b->slice);
        b->slice_no = qg_xcalloc(QG_SLIDING_SLICES, sizeof *b->slice_no);
    }
}

/* Which configured bucket a header slot feeds: a rate bucket of the slot's unit for the
 * token slots (the shorter period for TOKENS, the longer for TOKENS_LONG), a percent
 * window for the utilisation slots (shorter: WINDOW_SHORT).  The request slot always gets
 * its own bucket: providers count calls there, while configured request buckets count
 * model weight. */
static int match_slot(const qg_qacct *a, int slot, size_t n_cfg)
{
    if (slot == QG_RL_REQUESTS) return -1;
    bool pct = slot == QG_RL_WINDOW_SHORT || slot == QG_RL_WINDOW_LONG;
    bool want_long = slot == QG_RL_TOKENS_LONG || slot == QG_RL_WINDOW_LONG;
    qg_unit u = slot_unit(slot);
    int best = -1;
    for (size_t i = 0; i < n_cfg; i++) {
        const qg_qbucket *b = &a->b[i];
        if (b->unit != u || b->header_slot >= 0) continue;
        if (pct ? b->kind != QG_BUCKET_WINDOW : b->kind != QG_BUCKET_RATE) continue;
        if (best < 0 || (want_long ? b->period_ms > a->b[best].period_ms : b->period_ms < a->b[best].period_ms))
            best = (int)i;
    }
    return best;
}

void qg_qacct_init(qg_qacct *a, const qg_provider_cfg *p, const qg_account_cfg *ac)
{
    memset(a, 0, sizeof *a);
    a->name = ac->name;
    a->provider = p ? p->name : "";
    a->priority = ac->priority;
    a->weight = ac->weight > 0 ? ac->weight : 1;
    a->combine_any = ac->combine_any;
    a->fail_closed = ac->fail_closed;
    size_t n_cfg = ac->n_buckets;
    a->b = qg_xcalloc(n_cfg + QG_RL_N, sizeof *a->b);
    for (size_t i = 0; i < n_cfg; i++) bucket_init(&a->b[i], &ac->buckets[i], ac->combine_any);
    a->n_b = a->n_cfg = n_cfg;
    for (int s = 0; s < QG_RL_N; s++) {
        int m = match_slot(a, s, n_cfg);
        if (m < 0) { /* an implicit bucket, unknown until the provider's first header */
            qg_bucket_cfg c = {(char *)slot_bucket_names[s], QG_BUCKET_RATE, slot_unit(s), -1, 0, QG_RESET_ANCHORED,
                               0, 0, 0};
            if (slot_unit(s) == QG_UNIT_PERCENT) c.kind = QG_BUCKET_WINDOW;
            m = (int)a->n_b++;
            bucket_init(&a->b[m], &c, false);
            a->b[m].implicit = true;
            ST(a->b[m].source, QG_SRC_HEADER);
        }
        a->b[m].header_slot = s;
        a->slot_bucket[s] = m;
    }
    ST(a->st, pack(QG_ACCT_READY, 0, false));
}

void qg_qacct_free(qg_qacct *a)
{
    for (size_t i = 0; a->b && i < a->n_b; i++) {
        free(a->b[i].slice);
        free(a->b[i].slice_no);
    }
    free(a->b);
    a->b = NULL;
    a->n_b = 0;
}

void qg_quota_cost(const qg_model_cfg *m, int64_t in, int64_t out, qg_qamount *a)
{
    memset(a, 0, sizeof *a);
    in = QG_MAX(in, (int64_t)0);
    out = QG_MAX(out, (int64_t)0);
    a->v[QG_UNIT_REQUESTS] = m && m->weight > 0 ? QG_MAX(llround(m->weight), 1LL) : 1;
    a->v[QG_UNIT_TOKENS] = in + out;
    a->v[QG_UNIT_INPUT_TOKENS] = in;
    a->v[QG_UNIT_OUTPUT_TOKENS] = out;
    /* 1 USD per million tokens is 1 micro-USD per token */
    if (m) a->v[QG_UNIT_USD] = llround((double)in * m->input_usd_per_mtok + (double)out * m->output_usd_per_mtok);
}

void qg_quota_estimate(const qg_model_cfg *m, size_t body_len, int64_t max_tokens, int64_t default_output, qg_qamount *out)
{
    int64_t cap = default_output > 0 ? default_output : QG_DEFAULT_OUTPUT_ESTIMATE;
    if (max_tokens > 0 && max_tokens < cap) cap = max_tokens;
    if (m && m->max_output_tokens > 0 && m->max_output_tokens < cap) cap = m->max_output_tokens;
    qg_quota_cost(m, (int64_t)(body_len / 4), cap, out);
}

/* ---- bucket arithmetic (reads) ---- */

static bool sliding(const qg_qbucket *b)
{
    /* (bucket_init allocates the slices by this rule) */
    return b->kind != QG_BUCKET_CREDITS && b->reset == QG_RESET_SLIDING && b->period_ms >= QG_SLIDING_SLICES;
}
static int64_t slice_len(const qg_qbucket *b) { return b->period_ms / QG_SLIDING_SLICES; }

static int64_t anchored_start(const qg_qbucket *b, int64_t now)
{
    int64_t d = now - b->anchor_ms, k = d / b->period_ms - (d % b->period_ms < 0);
    return b->anchor_ms + k * b->period_ms;
}

/* A reset the provider stated applies while it is in the future. */
static bool stated_live(const qg_qbucket *b, int64_t now)
{
    int64_t r = LD(b->stated_reset);
    return r > now;
}

static int64_t eff_used(const qg_qbucket *b, int64_t now)
{
    if (b->header_slot >= 0 && LD(b->h_at) && !stated_live(b, now) && LD(b->stated_reset)) return 0;
    if (sliding(b)) {
        int64_t cur = now / slice_len(b), sum = 0;
        for (int i = 0; i < QG_SLIDING_SLICES; i++) {
            int64_t no = LD(b->slice_no[i]);
            if (no > cur - QG_SLIDING_SLICES && no <= cur) sum += LD(b->slice[i]);
        }
        return sum;
    }
    if (b->kind == QG_BUCKET_CREDITS || b->period_ms <= 0) return LD(b->used);
    int64_t mark = LD(b->mark);
    if (b->reset == QG_RESET_FIRST_USE) return mark && now < mark + b->period_ms ? LD(b->used) : 0;
    return mark == anchored_start(b, now) ? LD(b->used) : 0;
}

static int64_t eff_reset(const qg_qbucket *b, int64_t now)
{
    if (stated_live(b, now)) return LD(b->stated_reset);
    if (b->kind == QG_BUCKET_CREDITS || b->period_ms <= 0) return 0;
    if (sliding(b)) {
        int64_t cur = now / slice_len(b), oldest = INT64_MAX;
        for (int i = 0; i < QG_SLIDING_SLICES; i++) {
            int64_t no = LD(b->slice_no[i]);
            if (no > cur - QG_SLIDING_SLICES && no <= cur && LD(b->slice[i]) > 0 && no < oldest) oldest = no;
        }
        return oldest == INT64_MAX ? 0 : (oldest + QG_SLIDING_SLICES) * slice_len(b);
    }
    if (b->reset == QG_RESET_FIRST_USE) {
        int64_t mark = LD(b->mark);
        return mark && now < mark + b->period_ms ? mark + b->period_ms : 0;
    }
    return anchored_start(b, now) + b->period_ms;
}

static bool expired(const qg_qbucket *b, int64_t now)
{
    return b->kind == QG_BUCKET_CREDITS && b->expires_at_ms && now >= b->expires_at_ms;
}

/* The request slot counts calls; every other bucket counts its unit (requests: weight). */
static int64_t need_of(const qg_qbucket *b, const qg_qamount *est)
{
    if (b->header_slot == QG_RL_REQUESTS) return est->v[QG_UNIT_REQUESTS] ? 1 : 0;
    return est->v[b->unit];
}

static int64_t reserved_of(const qg_qacct *a, const qg_qbucket *b)
{
    qg_qacct *m = (qg_qacct *)a;
    if (b->header_slot == QG_RL_REQUESTS) return LD(m->inflight);
    return b->unit == QG_UNIT_PERCENT ? 0 : LD(m->reserved[b->unit]);
}

/* An implicit bucket the provider never reported: unknown, so the request path skips it
 * without reading it (one bit test instead of a cache line per header slot). */
static bool idle(const qg_qacct *a, size_t i, unsigned live) { return i >= a->n_cfg && !(live >> (i - a->n_cfg) & 1); }

typedef enum { V_FREE, V_BLOCKED, V_OUT } verdict;

/* `others`: what other requests in flight hold in this bucket's unit.  Whole units
 * (requests, percent) must fit exactly; token and money buckets admit a request while
 * anything is left and it is alone, so one large request is not refused forever by a
 * bucket it would only slightly overshoot (providers behave so too). */
static verdict bucket_verdict(const qg_qbucket *b, int64_t need, int64_t others, int64_t now, int64_t *reset)
{
    int64_t lim = LD(b->limit);
    *reset = 0;
    if (lim < 0) return V_FREE; /* no known limit never blocks, expired or not (SPEC §4.2) */
    if (expired(b, now)) return b->pool || !b->implicit ? V_OUT : V_FREE;
    int64_t used = eff_used(b, now);
    bool full;
    if (b->unit == QG_UNIT_PERCENT) full = used >= lim;
    /* the provider's own remaining (a live header window) is what its next answer checks:
     * a request must fit it, or it is the 429 we steer around */
    else if (b->unit == QG_UNIT_REQUESTS || (b->header_slot >= 0 && stated_live(b, now)))
        full = used + others + need > lim;
    else full = used >= lim || (used + others + need > lim && others > 0);
    if (!full) return V_FREE;
    *reset = eff_reset(b, now);
    if (*reset > now) return V_BLOCKED;
    /* spent with no reset: credits (out until topped up), or a window with no known reset,
     * which never blocks (SPEC §4.2).  Credits only full with what is in flight are not
     * spent: refused for now (until not known), not depleted. */
    if (b->kind != QG_BUCKET_CREDITS) return V_FREE;
    return used >= lim ? V_OUT : V_BLOCKED;
}

typedef struct {
    verdict v;
    int64_t until;
    bool header;   /* a header-fed bucket decided it */
} acct_verdict;

/* combine all: every constraint must be free (blocked until the latest reset among the
 * blocking ones).  combine any: rate buckets and header buckets stay constraints; the
 * configured credits and windows are pools, and the account is blocked only when every
 * pool is (until the earliest pool reset). */
static acct_verdict buckets_verdict(const qg_qacct *a, const qg_qamount *est, bool est_reserved, int64_t now)
{
    acct_verdict r = {V_FREE, 0, false};
    int n_pools = 0, pools_free = 0, pools_out = 0;
    int64_t pool_until = INT64_MAX;
    unsigned live = LD(((qg_qacct *)a)->live);
    for (size_t i = 0; i < a->n_b; i++) {
        const qg_qbucket *b = &a->b[i];
        if (idle(a, i, live)) continue;
        if (LD(((qg_qbucket *)b)->limit) < 0) { /* unknown: free (bucket_verdict), and the usual case of header slots */
            n_pools += b->pool, pools_free += b->pool;
            continue;
        }
        int64_t need = need_of(b, est), others = reserved_of(a, b) - (est_reserved ? need : 0), reset;
        if (others < 0) others = 0;
        verdict v = bucket_verdict(b, need, others, now, &reset);
        if (b->pool) {
            n_pools++;
            if (v == V_FREE) pools_free++;
            else if (v == V_OUT) pools_out++;
            else if (reset < pool_until) pool_until = reset;
            continue;
        }
        if (v == V_BLOCKED && r.v != V_OUT) {
            if (reset > r.until) r.until = reset, r.header = b->header_slot >= 0 && LD(b->h_at);
            r.v = V_BLOCKED;
        } else if (v == V_OUT) {
            r.v = V_OUT;
        }
    }
    if (n_pools && !pools_free && r.v != V_OUT) {
        if (pools_out == n_pools) r.v = V_OUT;
        else if (r.v == V_FREE || pool_until > r.until) r.v = V_BLOCKED, r.until = pool_until, r.header = false;
    }
    return r;
}

/* ---- state ---- */

static int64_t probation_ms(int level)
{
    int64_t p = QG_PROBATION_BASE_MS;
    for (int i = 0; i < level && p < QG_PROBATION_MAX_MS; i++) p *= 2;
    return QG_MIN(p, (int64_t)QG_PROBATION_MAX_MS);
}

static int64_t cool_ms(int fails)
{
    int64_t c = QG_COOL_BASE_MS;
    for (int i = 1; i < fails && c < QG_COOL_MAX_MS; i++) c *= 2;
    return QG_MIN(c, (int64_t)QG_COOL_MAX_MS);
}

qg_acct_state qg_quota_state(const qg_qacct *a, int64_t now, int64_t *until, bool *stated)
{
    uint64_t w = LD(((qg_qacct *)a)->st);
    qg_acct_state s = st_state(w);
    int64_t u = st_until(w);
    bool sd = st_stated(w);
    if ((s == QG_ACCT_COOLING || ((s == QG_ACCT_DEPLETED) && sd)) && u <= now) s = QG_ACCT_READY, u = 0;
    if (until) *until = u;
    if (stated) *stated = sd;
    return s;
}

/* Moves to state s until `until` unless the account is already held longer (a depletion
 * is not shortened by a cooling that follows it) or disabled. */
static void set_state(qg_qacct *a, qg_acct_state s, int64_t until, bool stated, int64_t now)
{
    uint64_t old = LD(a->st), nw = pack(s, until, stated);
    for (;;) {
        qg_acct_state os = st_state(old);
        if (os == QG_ACCT_DISABLED) return;
        bool holding = (os == QG_ACCT_DEPLETED || os == QG_ACCT_AUTH_FAILED) && st_until(old) > until &&
                       st_until(old) > now && s != QG_ACCT_READY;
        if (holding) return;
        if (atomic_compare_exchange_weak_explicit(&a->st, &old, nw, memory_order_relaxed, memory_order_relaxed)) break;
    }
    bump(a);
}

/* The state gate: whether the account's state lets a request through now.  An unstated
 * depletion or auth failure whose probation has ended lets exactly one trial through. */
static bool state_gate(qg_qacct *a, int64_t now, bool claim, bool *trial, int64_t *until, qg_block *why)
{
    uint64_t w = LD(a->st);
    qg_acct_state s = st_state(w);
    int64_t u = st_until(w);
    *trial = false;
    if (s == QG_ACCT_READY) return true;
    if (s == QG_ACCT_DISABLED) {
        *until = 0, *why = QG_BLOCK_DISABLED;
        return false;
    }
    if (u > now) {
        *until = u;
        *why = s == QG_ACCT_COOLING ? QG_BLOCK_COOLING : s == QG_ACCT_AUTH_FAILED ? QG_BLOCK_AUTH : QG_BLOCK_DEPLETED;
        return false;
    }
    if (s == QG_ACCT_COOLING || st_stated(w)) return true; /* it ended at a known time */
    int expect = 0;
    if (!claim) {
        if (LD(a->trial)) goto pending;
        *trial = true;
        return true;
    }
    if (atomic_compare_exchange_strong_explicit(&a->trial, &expect, 1, memory_order_relaxed, memory_order_relaxed)) {
        *trial = true;
        return true;
    }
pending:
    *until = now + 1000;
    *why = QG_BLOCK_TRIAL;
    return false;
}

static void reserve_add(qg_qacct *a, const qg_qamount *est, int sign)
{
    for (int u = 0; u < QG_UNIT_N; u++)
        if (est->v[u]) ADD(a->reserved[u], sign * est->v[u]);
    ADD(a->inflight, sign);
}

static void out_of_credit(qg_qacct *a, int64_t now)
{
    int level = atomic_fetch_add_explicit(&a->probation, 1, memory_order_relaxed);
    set_state(a, QG_ACCT_DEPLETED, now + probation_ms(level), false, now);
}

bool qg_quota_eligible(const qg_qacct *ca, const qg_qamount *est, int64_t now, int64_t *until, qg_block *why)
{
    qg_qacct *a = (qg_qacct *)ca;
    bool trial;
    *until = 0;
    *why = QG_BLOCK_NONE;
    if (!state_gate(a, now, false, &trial, until, why)) return false;
    acct_verdict v = buckets_verdict(a, est, false, now);
    if (v.v == V_FREE || (v.v == V_OUT && trial)) return true;
    *why = v.v == V_OUT ? QG_BLOCK_DEPLETED : v.header ? QG_BLOCK_HEADER : QG_BLOCK_BUCKET;
    *until = v.v == V_OUT ? 0 : v.until;
    return false;
}

static int64_t remaining_of(const qg_qbucket *b, int64_t now);

/* ---- bucket writes ---- */

/* Brings a bucket's counters into the window containing now; the CAS winner zeroes. */
static void roll(qg_qbucket *b, int64_t now)
{
    if (b->header_slot >= 0 && LD(b->h_at)) {
        int64_t r = LD(b->stated_reset);
        if (r && r <= now && atomic_compare_exchange_strong(&b->stated_reset, &r, 0)) {
            ST(b->used, 0);
            if (sliding(b))
                for (int i = 0; i < QG_SLIDING_SLICES; i++) ST(b->slice[i], 0);
        }
    }
    if (sliding(b) || b->kind == QG_BUCKET_CREDITS || b->period_ms <= 0) return;
    int64_t mark = LD(b->mark);
    if (b->reset == QG_RESET_FIRST_USE) {
        if (mark && now >= mark + b->period_ms && atomic_compare_exchange_strong(&b->mark, &mark, 0)) ST(b->used, 0);
        return;
    }
    int64_t start = anchored_start(b, now);
    if (mark != start && atomic_compare_exchange_strong(&b->mark, &mark, start)) ST(b->used, 0);
}

static void bucket_add(qg_qbucket *b, int64_t v, int64_t now)
{
    if (!v) return;
    roll(b, now);
    if (sliding(b)) {
        int64_t no = now / slice_len(b);
        int i = (int)(no % QG_SLIDING_SLICES);
        int64_t old = LD(b->slice_no[i]);
        if (old != no && atomic_compare_exchange_strong(&b->slice_no[i], &old, no)) ST(b->slice[i], 0);
        ADD(b->slice[i], v);
        return;
    }
    ADD(b->used, v);
}

/* A first_use window opens with the first request after the last one closed. */
static void open_windows(qg_qacct *a, int64_t now)
{
    for (size_t i = 0; i < a->n_cfg; i++) {
        qg_qbucket *b = &a->b[i];
        if (b->reset != QG_RESET_FIRST_USE || b->kind != QG_BUCKET_WINDOW || sliding(b)) continue;
        roll(b, now);
        int64_t zero = 0;
        atomic_compare_exchange_strong(&b->mark, &zero, now);
    }
}

bool qg_quota_reserve(qg_qacct *a, const qg_qamount *est, int64_t now, qg_qresv *r, int64_t *until, qg_block *why)
{
    bool trial;
    *until = 0;
    *why = QG_BLOCK_NONE;
    r->a = NULL;
    if (!state_gate(a, now, true, &trial, until, why)) return false;
    reserve_add(a, est, +1);
    acct_verdict v = buckets_verdict(a, est, true, now);
    if (v.v == V_FREE || (v.v == V_OUT && trial)) {
        open_windows(a, now);
        r->a = a;
        r->est = *est;
        r->trial = trial;
        r->fed = 0;
        return true;
    }
    reserve_add(a, est, -1);
    if (trial) ST(a->trial, 0);
    if (v.v == V_OUT) { /* spent with no reset: a bounded depletion, then a trial */
        out_of_credit(a, now);
        *until = st_until(LD(a->st));
        *why = QG_BLOCK_DEPLETED;
    } else {
        *until = v.until;
        *why = v.header ? QG_BLOCK_HEADER : QG_BLOCK_BUCKET;
    }
    return false;
}

/* part / whole in millionths, without overflow for any amounts (limits reach 1e15 and
 * micro-USD scales them by 1e6). */
static int64_t ppm_of(int64_t part, int64_t whole)
{
    if (whole <= 0) return -1;
    __int128 r = (__int128)part * 1000000 / whole;
    return r > INT64_MAX ? INT64_MAX : r < INT64_MIN ? INT64_MIN : (int64_t)r;
}

static int64_t day_of(int64_t now) { return now / DAY_MS - (now % DAY_MS < 0); }

static void burn_add(qg_qacct *a, const qg_qamount *v, int64_t now)
{
    int64_t d = day_of(now);
    int i = (int)(((d % QG_BURN_DAYS) + QG_BURN_DAYS) % QG_BURN_DAYS);
    int64_t old = LD(a->day_no[i]);
    if (old != d && atomic_compare_exchange_strong(&a->day_no[i], &old, d))
        for (int u = 0; u < QG_UNIT_N; u++) ST(a->day_used[i][u], 0);
    for (int u = 0; u < QG_UNIT_N; u++)
        if (v->v[u]) ADD(a->day_used[i][u], v->v[u]);
}

/* combine any: the pool a settlement draws on — the first (in config order) it is charged
 * in that still has room for it, else the first it is charged in; -1 none. */
static int draw_pool(const qg_qacct *a, const qg_qamount *actual, int64_t now)
{
    int first = -1;
    for (size_t i = 0; i < a->n_cfg; i++) {
        const qg_qbucket *b = &a->b[i];
        int64_t v = need_of(b, actual), reset;
        if (!b->pool || !v || b->unit == QG_UNIT_PERCENT) continue;
        if (bucket_verdict(b, v, 0, now, &reset) == V_FREE) return (int)i;
        if (first < 0) first = (int)i;
    }
    return first;
}

bool qg_quota_settle(qg_qresv *r, const qg_qamount *actual, int64_t now)
{
    qg_qacct *a = r->a;
    bool spent = false;
    if (!a) return false;
    reserve_add(a, &r->est, -1);
    int pool = a->combine_any ? draw_pool(a, actual, now) : -1;
    unsigned live = LD(a->live);
    for (size_t i = 0; i < a->n_b; i++) {
        if (idle(a, i, live)) continue;
        qg_qbucket *b = &a->b[i];
        int64_t v = need_of(b, actual);
        if (b->unit == QG_UNIT_PERCENT || !v || (b->header_slot >= 0 && (r->fed >> b->header_slot & 1))) continue;
        if (b->pool && (int)i != pool) continue; /* combine any: one pool pays */
        int64_t lim = LD(b->limit);
        if (b->implicit && lim < 0) continue; /* a header slot the provider never reported */
        bucket_add(b, v, now);
        spent |= lim >= 0 && remaining_of(b, now) <= 0;
        if (!b->implicit && LD(b->source) == QG_SRC_CONFIG) ST(b->source, QG_SRC_LOCAL);
        ST(b->updated_at, now);
    }
    burn_add(a, actual, now);
    if (r->trial) ST(a->trial, 0);
    bump(a);
    r->a = NULL;
    return spent;
}

void qg_quota_release(qg_qresv *r)
{
    if (!r->a) return;
    reserve_add(r->a, &r->est, -1);
    if (r->trial) ST(r->a->trial, 0);
    r->a = NULL;
}

/* ---- what responses say ---- */

unsigned qg_quota_on_headers(qg_qacct *a, const qg_rl_snapshot *s, int64_t now)
{
    unsigned fed = 0;
    if (!s || !s->n_found) return 0;
    bool changed = false;
    for (int slot = 0; slot < QG_RL_N; slot++) {
        const qg_rl_entry *e = &s->e[slot];
        if (!e->present) continue;
        fed |= 1u << slot;
        qg_qbucket *b = &a->b[a->slot_bucket[slot]];
        ST(b->h_limit, e->limit);
        ST(b->h_remaining, e->remaining);
        ST(b->h_reset, e->reset_ms);
        ST(b->h_at, now);
        if (b->implicit && !(LD(a->live) >> (a->slot_bucket[slot] - a->n_cfg) & 1))
            atomic_fetch_or_explicit(&a->live, 1u << (a->slot_bucket[slot] - a->n_cfg), memory_order_relaxed);
        int64_t lim = e->limit >= 0 ? e->limit : LD(b->limit);
        if (e->limit >= 0 && LD(b->limit) != e->limit) ST(b->limit, e->limit), changed = true;
        if (e->remaining >= 0 && lim >= 0) {
            int64_t used = QG_MAX(lim - e->remaining, (int64_t)0);
            if (sliding(b)) {
                for (int i = 0; i < QG_SLIDING_SLICES; i++) ST(b->slice[i], 0);
                int64_t no = now / slice_len(b);
                ST(b->slice_no[no % QG_SLIDING_SLICES], no);
                ST(b->slice[no % QG_SLIDING_SLICES], used);
            } else {
                roll(b, now);
                ST(b->used, used);
            }
            changed |= e->remaining == 0;
        }
        ST(b->stated_reset, e->reset_ms > now ? e->reset_ms : 0);
        ST(b->source, QG_SRC_HEADER);
        ST(b->updated_at, now);
    }
    if (changed) bump(a);
    return fed;
}

static bool trusted(const qg_error_verdict *v, int64_t now)
{
    return v->until_stated && v->until_ms > now && v->until_ms - now <= QG_TRUSTED_RESET_MAX_MS;
}

static void deplete(qg_qacct *a, qg_acct_state s, const qg_error_verdict *v, int64_t now)
{
    if (s == QG_ACCT_DEPLETED && trusted(v, now)) {
        set_state(a, s, v->until_ms, true, now);
        return;
    }
    /* No reset we can trust: a bounded depletion (never past a reset the provider did
     * name), then one trial request decides. */
    int level = atomic_fetch_add_explicit(&a->probation, 1, memory_order_relaxed);
    int64_t until = now + probation_ms(level);
    if (v->until_ms > now && v->until_ms < until) until = v->until_ms;
    set_state(a, s, until, false, now);
}

static void spend_credits(qg_qacct *a, int64_t now)
{
    for (size_t i = 0; i < a->n_b; i++) {
        qg_qbucket *b = &a->b[i];
        int64_t lim = LD(b->limit);
        if (b->kind != QG_BUCKET_CREDITS || lim < 0) continue;
        ST(b->used, lim);
        ST(b->source, QG_SRC_ERROR);
        ST(b->updated_at, now);
    }
}

void qg_quota_on_failure(qg_qacct *a, const qg_error_verdict *v, int64_t now)
{
    ST(a->last_class, (int)v->cls);
    ST(a->last_error_at, now);
    int fails;
    switch (v->cls) {
    case QG_EC_RATE_LIMITED:
    case QG_EC_SERVER_ERROR:
        fails = atomic_fetch_add_explicit(&a->fails, 1, memory_order_relaxed) + 1;
        if (v->until_ms > now) set_state(a, QG_ACCT_COOLING, v->until_ms, v->until_stated, now);
        else set_state(a, QG_ACCT_COOLING, now + cool_ms(fails), false, now);
        break;
    case QG_EC_OVERLOADED: /* provider-wide: a brief pause, not a strike against the account */
        set_state(a, QG_ACCT_COOLING, now + QG_COOL_BRIEF_MS, false, now);
        break;
    case QG_EC_TRANSIENT:
        set_state(a, QG_ACCT_COOLING, v->until_ms > now ? v->until_ms : now + QG_COOL_BRIEF_MS, v->until_ms > now, now);
        break;
    case QG_EC_CREDITS_EXHAUSTED:
        spend_credits(a, now);
        /* fallthrough */
    case QG_EC_WINDOW_EXHAUSTED:
    case QG_EC_SPEND_CAPPED:
        deplete(a, QG_ACCT_DEPLETED, v, now);
        break;
    case QG_EC_AUTH_FAILED:
        deplete(a, QG_ACCT_AUTH_FAILED, v, now);
        break;
    default:
        break;
    }
}

void qg_quota_on_success(qg_qacct *a, int64_t now)
{
    if (LD(a->fails)) ST(a->fails, 0);
    uint64_t w = LD(a->st);
    qg_acct_state s = st_state(w);
    if (s == QG_ACCT_READY || s == QG_ACCT_DISABLED) {
        if (LD(a->probation)) ST(a->probation, 0);
        return;
    }
    /* an answer from before the depletion, or a stated cooling (retry-after) */
    if (st_until(w) > now && (s != QG_ACCT_COOLING || st_stated(w))) return;
    /* A trial (or a late answer) succeeded: the provider serves again.  Credits our local
     * count called spent are evidently not: stop counting against the configured balance. */
    for (size_t i = 0; i < a->n_b; i++) {
        qg_qbucket *b = &a->b[i];
        if (b->kind == QG_BUCKET_CREDITS && LD(b->limit) >= 0 && (LD(b->used) >= LD(b->limit) || expired(b, now))) {
            ST(b->limit, -1);
            ST(b->source, QG_SRC_LOCAL);
        }
    }
    ST(a->probation, 0);
    set_state(a, QG_ACCT_READY, 0, false, now);
}

void qg_quota_enable(qg_qacct *a, int64_t now)
{
    ST(a->st, pack(QG_ACCT_READY, 0, false));
    ST(a->fails, 0);
    ST(a->probation, 0);
    ST(a->trial, 0);
    /* "It has room": what said otherwise is set aside — a spent credit balance until
     * restart, a spent window's count until the provider's next figure. */
    for (size_t i = 0; i < a->n_b; i++) {
        qg_qbucket *b = &a->b[i];
        if (LD(b->limit) < 0 || remaining_of(b, now) > 0) continue;
        if (b->kind == QG_BUCKET_CREDITS) {
            ST(b->limit, -1);
        } else {
            ST(b->used, 0);
            ST(b->stated_reset, 0);
            for (int k = 0; b->slice && k < QG_SLIDING_SLICES; k++) ST(b->slice[k], 0);
        }
        ST(b->source, QG_SRC_OPERATOR);
        ST(b->updated_at, now);
    }
    bump(a);
}

void qg_quota_disable(qg_qacct *a, int64_t now)
{
    QG_UNUSED(now);
    ST(a->st, pack(QG_ACCT_DISABLED, 0, false));
    bump(a);
}

/* ---- burn rate, status, selection ---- */

/* Settled use per day over the last QG_BURN_DAYS days, weighted 64, 32, ... 1 from today
 * back; today's partial day is scaled to a whole one (counting at least 6 h elapsed, so
 * the first minutes of a day do not extrapolate wildly). */
int64_t qg_quota_burn_per_day(const qg_qacct *ca, qg_unit u, int64_t now)
{
    qg_qacct *a = (qg_qacct *)ca;
    int64_t today = day_of(now), sum = 0;
    for (int age = 0; age < QG_BURN_DAYS; age++) {
        int64_t d = today - age;
        int i = (int)(((d % QG_BURN_DAYS) + QG_BURN_DAYS) % QG_BURN_DAYS);
        if (LD(a->day_no[i]) != d) continue;
        int64_t v = LD(a->day_used[i][u]);
        if (age == 0) {
            int64_t elapsed = QG_MAX(now - today * DAY_MS, 6 * HOUR_MS);
            v = (int64_t)((double)v * (double)DAY_MS / (double)elapsed);
        }
        sum = v > (INT64_MAX - sum) / 64 ? INT64_MAX : sum + v * (64 >> age); /* saturates */
    }
    return sum / 127;
}

/* When a bucket's unused room is lost: credits at expiry, windows at their reset. */
static int64_t loss_at(const qg_qbucket *b, int64_t now)
{
    if (b->kind == QG_BUCKET_CREDITS) return b->expires_at_ms > now ? b->expires_at_ms : 0;
    if (b->kind == QG_BUCKET_WINDOW) return eff_reset(b, now);
    return 0; /* rate limits refill continuously: nothing to lose */
}

static int64_t remaining_of(const qg_qbucket *b, int64_t now)
{
    int64_t lim = LD(b->limit);
    if (lim < 0) return -1;
    if (expired(b, now)) return 0;
    return QG_MAX(lim - eff_used(b, now), (int64_t)0);
}

static int64_t at_risk(const qg_qacct *a, const qg_qbucket *b, int64_t now, int64_t *ttl)
{
    int64_t lim = LD(b->limit), t = loss_at(b, now), room = remaining_of(b, now);
    *ttl = t > now ? t - now : 0;
    if (lim <= 0 || room <= 0 || !*ttl) return 0;
    double burn = (double)qg_quota_burn_per_day(a, b->unit, now);
    int64_t risk = room - (int64_t)(burn * (double)*ttl / (double)DAY_MS);
    return QG_MAX(risk, (int64_t)0);
}

void qg_quota_bucket_status(const qg_qacct *a, size_t i, int64_t now, qg_bucket_status *o)
{
    const qg_qbucket *b = &a->b[i];
    memset(o, 0, sizeof *o);
    o->limit = LD(((qg_qbucket *)b)->limit);
    o->remaining = remaining_of(b, now);
    o->used = o->limit >= 0 ? o->limit - o->remaining : eff_used(b, now);
    o->ratio_ppm = o->limit > 0 ? ppm_of(o->remaining, o->limit) : -1;
    o->reset_ms = eff_reset(b, now);
    o->expires_ms = b->kind == QG_BUCKET_CREDITS ? b->expires_at_ms : 0;
    o->burn_per_day = b->unit == QG_UNIT_PERCENT ? 0 : qg_quota_burn_per_day(a, b->unit, now);
    int64_t ttl;
    o->at_risk = at_risk(a, b, now, &ttl);
    o->days_left = o->remaining >= 0 && o->burn_per_day > 0 ? (double)o->remaining / (double)o->burn_per_day : -1;
    o->days_to_expiry = o->expires_ms ? (double)(o->expires_ms - now) / (double)DAY_MS : -1;
    o->source = (qg_quota_source)LD(((qg_qbucket *)b)->source);
    o->updated_at = LD(((qg_qbucket *)b)->updated_at);
    int64_t age = now - o->updated_at;
    o->confidence = o->source == QG_SRC_HEADER || o->source == QG_SRC_ERROR ? (age < 600000 ? "high" : "medium")
                    : o->source == QG_SRC_LOCAL || o->source == QG_SRC_OPERATOR ? "medium"
                                                                                : "low";
    o->alert = QG_ALERT_OK;
    if (o->limit < 0) return;
    if (o->remaining <= 0) o->alert = QG_ALERT_EXHAUSTED;
    else if (ppm_of(o->at_risk, o->limit) >= QG_ALERT_LOSE_PPM && ttl <= QG_ALERT_LOSE_MS)
        o->alert = QG_ALERT_USE_OR_LOSE;
    else if (b->kind == QG_BUCKET_CREDITS &&
             (o->ratio_ppm < QG_ALERT_TOPUP_PPM || (o->days_left >= 0 && o->days_left < QG_ALERT_TOPUP_DAYS)))
        o->alert = QG_ALERT_TOPUP;
    else if (o->ratio_ppm < QG_ALERT_WATCH_PPM || (b->kind == QG_BUCKET_CREDITS && o->days_left >= 0 && o->days_left < 14))
        o->alert = QG_ALERT_WATCH;
}

/* Pressure of one bucket: the share of it projected lost, per hour left before the loss;
 * under combine all capped by the tightest other bucket that outlives it (room the
 * account cannot spend anyway is not at risk). */
static int64_t bucket_pressure(const qg_qacct *a, size_t i, int64_t now)
{
    const qg_qbucket *b = &a->b[i];
    int64_t ttl, risk = at_risk(a, b, now, &ttl), lim = LD(((qg_qbucket *)b)->limit);
    if (!risk) return 0;
    int64_t ppm = ppm_of(risk, lim);
    if (!a->combine_any) {
        for (size_t j = 0; j < a->n_b; j++) {
            const qg_qbucket *c = &a->b[j];
            int64_t cl = LD(((qg_qbucket *)c)->limit), lt = loss_at(c, now);
            if (j == i || cl <= 0 || c->kind == QG_BUCKET_RATE || (lt && lt <= now + ttl)) continue;
            ppm = QG_MIN(ppm, ppm_of(remaining_of(c, now), cl));
        }
    }
    return ppm * HOUR_MS / QG_MAX(ttl, (int64_t)60000);
}

void qg_quota_rank(const qg_qacct *a, int64_t now, qg_qrank *out)
{
    int64_t lo = 1000000, hi = -1, pressure = 0;
    unsigned live = LD(((qg_qacct *)a)->live);
    for (size_t i = 0; i < a->n_b; i++) {
        if (idle(a, i, live)) continue;
        const qg_qbucket *b = &a->b[i];
        int64_t lim = LD(((qg_qbucket *)b)->limit);
        if (lim <= 0) continue;
        int64_t ratio = ppm_of(remaining_of(b, now), lim);
        if (b->pool) hi = QG_MAX(hi, ratio);
        else lo = QG_MIN(lo, ratio);
        pressure = QG_MAX(pressure, bucket_pressure(a, i, now));
    }
    if (hi >= 0) lo = QG_MIN(lo, hi);
    out->pressure = pressure;
    out->band = (int)(lo / 100000);
}

void qg_quota_order(qg_qacct *const *accts, size_t n, int64_t now, size_t *order)
{
    qg_qrank *r = qg_xcalloc(n ? n : 1, sizeof *r);
    for (size_t i = 0; i < n; i++) {
        qg_quota_rank(accts[i], now, &r[i]);
        order[i] = i;
    }
    /* insertion sort: stable, and n is one tier's accounts */
    for (size_t i = 1; i < n; i++) {
        size_t x = order[i], j = i;
        for (; j > 0; j--) {
            const qg_qrank *p = &r[order[j - 1]], *q = &r[x];
            int pa = accts[order[j - 1]]->priority, qa = accts[x]->priority;
            bool before = qa < pa || (qa == pa && (q->pressure > p->pressure ||
                                                    (q->pressure == p->pressure && (q->band > p->band ||
                                                     (q->band == p->band && accts[x]->weight > accts[order[j - 1]]->weight)))));
            if (!before) break;
            order[j] = order[j - 1];
        }
        order[j] = x;
    }
    free(r);
}

/* ---- persistence (pure text) ---- */

/* One line: a tag, an optional name, integers.  No printf: a gateway with thousands of
 * busy accounts serializes each of them about once a second. */
static void put_line(qg_buf *out, const char *tag, const char *name, const int64_t *v, int n)
{
    qg_buf_puts(out, tag);
    if (name) {
        qg_buf_append(out, " ", 1);
        qg_buf_puts(out, name);
    }
    for (int i = 0; i < n; i++) {
        qg_buf_append(out, " ", 1);
        qg_buf_put_int(out, v[i]);
    }
    qg_buf_append(out, "\n", 1);
}

void qg_quota_serialize(const qg_qacct *ca, qg_buf *out)
{
    qg_qacct *a = (qg_qacct *)ca;
    int64_t head[] = {(int64_t)LD(a->st), LD(a->fails), LD(a->probation), LD(a->last_class), LD(a->last_error_at)};
    put_line(out, "qg1", NULL, head, 5);
    unsigned live = LD(a->live);
    for (size_t i = 0; i < a->n_b; i++) {
        if (idle(a, i, live)) continue; /* nothing to say until the provider reports it */
        qg_qbucket *b = &a->b[i];
        int64_t v[] = {LD(b->limit),      LD(b->used),  LD(b->mark),        LD(b->stated_reset), LD(b->source),
                       LD(b->updated_at), LD(b->h_limit), LD(b->h_remaining), LD(b->h_reset),      LD(b->h_at)};
        put_line(out, "b", b->name, v, 10);
        for (int k = 0; b->slice && k < QG_SLIDING_SLICES; k++) {
            if (!LD(b->slice[k])) continue;
            int64_t sv[] = {k, LD(b->slice_no[k]), LD(b->slice[k])};
            put_line(out, "s", b->name, sv, 3);
        }
    }
    for (int d = 0; d < QG_BURN_DAYS; d++) {
        if (!LD(a->day_no[d])) continue;
        int64_t dv[2 + QG_UNIT_N] = {d, LD(a->day_no[d])};
        for (int u = 0; u < QG_UNIT_N; u++) dv[2 + u] = LD(a->day_used[d][u]);
        put_line(out, "d", NULL, dv, 2 + QG_UNIT_N);
    }
}

/* Saved text is outside input (a damaged file, another version): amounts and times are
 * clamped to ranges the arithmetic above cannot overflow with. */
#define RESTORE_MAX (1LL << 53)
static int64_t amount(int64_t v) { return v < -1 ? -1 : QG_MIN(v, RESTORE_MAX); }
static int64_t when(int64_t v) { return v < 0 ? 0 : QG_MIN(v, RESTORE_MAX / 1024); }

static qg_qbucket *bucket_named(qg_qacct *a, const char *name)
{
    for (size_t i = 0; i < a->n_b; i++)
        if (strcmp(a->b[i].name, name) == 0) return &a->b[i];
    return NULL;
}

static void restore_line(qg_qacct *a, const char *line, int64_t now)
{
    char name[160]; /* bucket names: at most 128 characters */
    int64_t v[10];
    int src, idx;
    if (sscanf(line, "b %159s %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %d %" SCNd64 " %" SCNd64 " %" SCNd64
                     " %" SCNd64 " %" SCNd64,
               name, &v[0], &v[1], &v[2], &v[3], &src, &v[4], &v[5], &v[6], &v[7], &v[8]) == 11) {
        qg_qbucket *b = bucket_named(a, name);
        if (!b) return; /* a bucket no longer configured */
        /* a configured limit wins over a saved one unless the saved one came from the provider */
        if (src == QG_SRC_HEADER || b->cfg_limit < 0) ST(b->limit, amount(v[0]));
        ST(b->used, QG_MAX(amount(v[1]), (int64_t)0));
        ST(b->mark, when(v[2]));
        /* kept even when past: eff_used/roll then end the use it covered, as they would have */
        ST(b->stated_reset, when(v[3]));
        ST(b->source, src >= QG_SRC_CONFIG && src <= QG_SRC_OPERATOR ? src : QG_SRC_LOCAL);
        ST(b->updated_at, when(v[4]));
        ST(b->h_limit, amount(v[5]));
        ST(b->h_remaining, amount(v[6]));
        ST(b->h_reset, when(v[7]));
        ST(b->h_at, when(v[8]));
        if (b->implicit && LD(b->h_at))
            atomic_fetch_or_explicit(&a->live, 1u << (size_t)(b - a->b - (ptrdiff_t)a->n_cfg), memory_order_relaxed);
    } else if (sscanf(line, "s %159s %d %" SCNd64 " %" SCNd64, name, &idx, &v[0], &v[1]) == 4) {
        qg_qbucket *b = bucket_named(a, name);
        if (!b || !b->slice || idx < 0 || idx >= QG_SLIDING_SLICES) return;
        ST(b->slice_no[idx], when(v[0]));
        ST(b->slice[idx], QG_MAX(amount(v[1]), (int64_t)0));
    } else if (sscanf(line, "d %d %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64,
                      &idx, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]) == 8) {
        if (idx < 0 || idx >= QG_BURN_DAYS) return;
        ST(a->day_no[idx], when(v[0]));
        for (int u = 0; u < QG_UNIT_N; u++) ST(a->day_used[idx][u], QG_MAX(amount(v[1 + u]), (int64_t)0));
    }
}

int qg_quota_restore(qg_qacct *a, const char *text, size_t n, int64_t now)
{
    uint64_t st;
    int fails, prob, cls;
    int64_t err_at;
    char line[512];
    size_t off = 0;
    bool first = true;
    while (off < n) {
        size_t e = off;
        while (e < n && text[e] != '\n') e++;
        size_t len = QG_MIN(e - off, sizeof line - 1);
        memcpy(line, text + off, len);
        line[len] = 0;
        off = e + 1;
        if (first) {
            if (sscanf(line, "qg1 %" SCNu64 " %d %d %d %" SCNd64, &st, &fails, &prob, &cls, &err_at) != 5) return -1;
            if (st_state(st) > QG_ACCT_DISABLED) return -1;
            if (st_until(st) > RESTORE_MAX) return -1;
            ST(a->st, st);
            ST(a->fails, fails);
            ST(a->probation, prob);
            ST(a->last_class, cls);
            ST(a->last_error_at, err_at);
            first = false;
            continue;
        }
        restore_line(a, line, now);
    }
    return first ? -1 : 0;
}
