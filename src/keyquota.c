/*
 * keyquota.c — key quota counters.  See keyquota.h.
 */
#include "keyquota.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define TAG_MASK ((1u << QG_KQ_TAG_BITS) - 1)
#define GEN_MASK ((1u << QG_KQ_GEN_BITS) - 1)
#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static uint64_t pack(int64_t index, unsigned gen, int64_t committed)
{
    return ((uint64_t)index & TAG_MASK) << (QG_KQ_GEN_BITS + QG_KQ_AMOUNT_BITS) |
           (uint64_t)(gen & GEN_MASK) << QG_KQ_AMOUNT_BITS | (uint64_t)committed;
}
static uint32_t tag_of(uint64_t w) { return (uint32_t)(w >> (QG_KQ_GEN_BITS + QG_KQ_AMOUNT_BITS)); }
static unsigned gen_of(uint64_t w) { return (unsigned)(w >> QG_KQ_AMOUNT_BITS) & GEN_MASK; }
static int64_t committed_of(uint64_t w) { return (int64_t)(w & (uint64_t)QG_KQ_AMOUNT_MAX); }
static bool same_window(uint64_t w, int64_t index) { return tag_of(w) == ((uint64_t)index & TAG_MASK); }
static _Atomic uint64_t *slot_of(qg_kq_policy *p, int64_t index) { return &p->slot[(uint64_t)index % QG_KQ_SLOTS]; }

static uint64_t pause_word(uint32_t epoch, int policy, int64_t until);
static uint32_t pause_epoch(uint64_t w);

static int64_t clamp_amount(int64_t v) { return v < 0 ? 0 : v > QG_KQ_AMOUNT_MAX ? QG_KQ_AMOUNT_MAX : v; }

qg_keyq *qg_keyq_new(const qg_policy_cfg *policies, size_t n, double total_quota_usd)
{
    return qg_keyq_new_from(NULL, policies, n, total_quota_usd);
}

int qg_keyq_policy_index(const qg_keyq *k, uint64_t sig)
{
    for (int i = 0; sig && k && i < k->n_p; i++)
        if (k->p[i].signature == sig) return i;
    return -1;
}

qg_keyq *qg_keyq_new_from(const qg_keyq *prev, const qg_policy_cfg *policies, size_t n, double total_quota_usd)
{
    n = QG_MIN(n, (size_t)QG_KEY_MAX_POLICIES);
    qg_keyq *k = qg_xcalloc(1, sizeof *k + n * sizeof k->p[0]); /* zeroed slots: every window empty */
    k->n_p = (int)n;
    k->sh = prev ? prev->sh : &k->own_sh;
    k->prev = prev;
    for (int i = 0; i < k->n_p; i++) {
        k->p[i].cfg = policies[i];
        k->p[i].signature = qg_policy_signature(&policies[i]);
        k->p[i].slot = k->p[i].own;
        for (const qg_keyq *v = prev; v; v = v->prev) { /* the newest version that had it */
            int j = qg_keyq_policy_index(v, k->p[i].signature);
            if (j < 0) continue;
            k->p[i].slot = v->p[j].slot;
            break;
        }
        k->p[i].limit = clamp_amount(qg_quota_amount(policies[i].unit, policies[i].limit));
        qg_policy_label(&policies[i], k->p[i].label, sizeof k->p[i].label);
        int nth = 1;
        for (int j = 0; j < i; j++) nth += !strcmp(k->p[j].label, k->p[i].label);
        char h[sizeof k->p[i].header];
        int hl = nth > 1 ? snprintf(h, sizeof h, "x-quota-%s-%d-", k->p[i].label, nth)
                         : snprintf(h, sizeof h, "x-quota-%s-", k->p[i].label);
        memcpy(k->p[i].header, h, sizeof h);
        k->p[i].header_len = (uint8_t)QG_MIN(QG_MAX(hl, 0), (int)sizeof h - 1);
    }
    k->total_limit = total_quota_usd >= 0 ? qg_quota_amount(QG_UNIT_USD, total_quota_usd) : -1;
    if (prev) { /* the reset epoch carries over, and a pause while its policy is still there */
        int64_t until;
        uint32_t epoch;
        int j = qg_keyq_policy_index(k, qg_keyq_pause_info(prev, &until, &epoch));
        atomic_store(&k->pause, pause_word(epoch, j, j >= 0 ? until : 0));
    }
    return k;
}

int64_t qg_keyq_amount(const qg_policy_cfg *p, const qg_qamount *cost)
{
    qg_unit u = p->unit == QG_UNIT_USD || p->unit == QG_UNIT_TOKENS ? p->unit : QG_UNIT_REQUESTS;
    return clamp_amount(cost->v[u]);
}

/* ---- pause ---- */

#define UNTIL_BITS (QG_KQ_PAUSE_EPOCH_SHIFT - 5)
#define EPOCH_MASK ((1u << (64 - QG_KQ_PAUSE_EPOCH_SHIFT)) - 1)
static uint64_t pause_word(uint32_t epoch, int policy, int64_t until)
{
    uint64_t u = (uint64_t)QG_MAX(until, (int64_t)0) & ((1ULL << UNTIL_BITS) - 1);
    return (uint64_t)(epoch & EPOCH_MASK) << QG_KQ_PAUSE_EPOCH_SHIFT | u << 5 | (uint64_t)(policy + 1);
}
static uint32_t pause_epoch(uint64_t w) { return (uint32_t)(w >> QG_KQ_PAUSE_EPOCH_SHIFT); }
static int64_t pause_until(uint64_t w) { return (int64_t)((w >> 5) & ((1ULL << UNTIL_BITS) - 1)); }
static int pause_policy(uint64_t w) { return (int)(w & 31) - 1; }

/* The first exhaustion of an on_exhausted: disable policy pauses the key: until the window's
 * end when it auto-resumes, else until a manual reset (until 0). */
static void pause_for(qg_keyq *k, int i, int64_t window_end)
{
    int64_t until = k->p[i].cfg.auto_resume ? window_end : 0;
    uint64_t w = LD(k->pause);
    while (pause_policy(w) < 0 &&
           !atomic_compare_exchange_weak(&k->pause, &w, pause_word(pause_epoch(w), i, until)))
        ;
}

/* A pause whose time has come ends here, on the request path (no timer needed). */
static bool paused(qg_keyq *k, int64_t now, qg_kq_refusal *why)
{
    uint64_t w = LD(k->pause);
    if (pause_policy(w) < 0) return false;
    int64_t until = pause_until(w);
    if (until && now >= until) {
        atomic_compare_exchange_strong(&k->pause, &w, pause_word(pause_epoch(w), -1, 0));
        return false;
    }
    why->policy = pause_policy(w);
    why->reset_ms = until;
    why->auto_resume = until != 0;
    return true;
}

/* ---- one policy ---- */

/* Takes est in the window containing now and says under which generation (*gen); 0, or -1
 * (refused: *exhausted says whether the window is spent, as opposed to too full for this
 * estimate). */
static int take(qg_kq_policy *p, int64_t index, int64_t est, bool *exhausted, uint8_t *gen)
{
    _Atomic uint64_t *s = slot_of(p, index);
    uint64_t w = LD(*s);
    for (;;) {
        bool current = same_window(w, index); /* a stale slot is an empty window, generation 0 */
        int64_t c = current ? committed_of(w) : 0;
        unsigned g = current ? gen_of(w) : 0;
        *exhausted = c >= p->limit;
        bool fits = c < p->limit && (!p->cfg.strict || c + est <= p->limit); /* a spent window fits nothing */
        if (!fits) return -1;
        if (atomic_compare_exchange_weak_explicit(s, &w, pack(index, g, clamp_amount(c + est)), memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *gen = (uint8_t)g;
            return 0;
        }
    }
}

/* Ends a reservation's part in window `index`: adds `same` if the window is still in the
 * generation the reservation took (*gen), else (a reset came in between and wiped the
 * estimate) `other`, and sets *gen to the generation charged.  Returns the new committed
 * amount, or -1 when the window has left the ring.  One compare-and-swap on the word that
 * the reset swaps too, so a settlement is wholly before a reset or wholly after it. */
static int64_t adjust(qg_kq_policy *p, int64_t index, uint8_t *gen, int64_t same, int64_t other)
{
    _Atomic uint64_t *s = slot_of(p, index);
    uint64_t w = LD(*s);
    for (;;) {
        if (!same_window(w, index)) return -1;
        unsigned g = gen_of(w);
        int64_t c = clamp_amount(committed_of(w) + (g == *gen ? same : other));
        if (atomic_compare_exchange_weak_explicit(s, &w, pack(index, g, c), memory_order_relaxed, memory_order_relaxed)) {
            *gen = (uint8_t)g;
            return c;
        }
    }
}

static int take_total(qg_keyq *k, int64_t est)
{
    if (k->total_limit < 0) return 0;
    int64_t c = LD(k->sh->total_committed);
    for (;;) {
        if (c + est > k->total_limit || c >= k->total_limit) return -1;
        if (atomic_compare_exchange_weak_explicit(&k->sh->total_committed, &c, c + est, memory_order_relaxed,
                                                  memory_order_relaxed))
            return 0;
    }
}

static void give_back(qg_keyq *k, qg_kq_resv *r, int upto)
{
    for (int i = 0; i < upto; i++) adjust(&k->p[i], r->index[i], &r->gen[i], -r->est[i], 0);
    if (k->total_limit >= 0) atomic_fetch_sub_explicit(&k->sh->total_committed, r->total, memory_order_relaxed);
}

qg_kq_verdict qg_keyq_precheck(qg_keyq *k, int64_t now, qg_kq_refusal *why)
{
    *why = (qg_kq_refusal){-1, 0, false, false};
    if (paused(k, now, why)) return QG_KQ_PAUSED;
    if (k->total_limit >= 0 && LD(k->sh->total_committed) >= k->total_limit) return QG_KQ_QUOTA_EXHAUSTED;
    for (int i = 0; i < k->n_p; i++) {
        qg_kq_status st;
        if (qg_keyq_status(k, i, now, &st) < 0 || !st.exhausted) continue;
        why->policy = i;
        why->reset_ms = st.w.end_ms;
        why->auto_resume = true;
        if (k->p[i].cfg.on_exhausted_disable) {
            pause_for(k, i, st.w.end_ms);
            why->auto_resume = k->p[i].cfg.auto_resume;
            if (!why->auto_resume) why->reset_ms = 0;
        }
        return QG_KQ_POLICY_EXHAUSTED;
    }
    return QG_KQ_OK;
}

qg_kq_verdict qg_keyq_reserve(qg_keyq *k, const qg_qamount *est, int64_t now, qg_kq_resv *r, qg_kq_refusal *why)
{
    memset(r, 0, sizeof *r);
    *why = (qg_kq_refusal){-1, 0, false, false};
    if (paused(k, now, why)) return QG_KQ_PAUSED;
    r->total = est->v[QG_UNIT_USD];
    if (take_total(k, r->total) < 0) {
        r->total = 0;
        return QG_KQ_QUOTA_EXHAUSTED;
    }
    for (int i = 0; i < k->n_p; i++) {
        qg_window w = {0}; /* no window (out of range): refused with no reset known */
        bool exhausted = false;
        r->est[i] = qg_keyq_amount(&k->p[i].cfg, est);
        if (qg_policy_window(&k->p[i].cfg, now, &w) < 0 || take(&k->p[i], w.index, r->est[i], &exhausted, &r->gen[i]) < 0) {
            give_back(k, r, i);
            why->policy = i;
            why->reset_ms = w.end_ms;
            why->auto_resume = true; /* a plain rejection ends with the window */
            why->too_large = k->p[i].cfg.strict && r->est[i] > k->p[i].limit; /* no window will fit it */
            if (exhausted && k->p[i].cfg.on_exhausted_disable) {
                pause_for(k, i, w.end_ms);
                why->auto_resume = k->p[i].cfg.auto_resume;
                if (!why->auto_resume) why->reset_ms = 0;
            }
            memset(r, 0, sizeof *r);
            return QG_KQ_POLICY_EXHAUSTED;
        }
        r->index[i] = w.index;
        r->end_ms[i] = w.end_ms;
    }
    r->active = true;
    if (k->n_p) atomic_fetch_add_explicit(&k->sh->inflight, 1, memory_order_relaxed); /* only policies are probed */
    return QG_KQ_OK;
}

bool qg_keyq_settle(qg_keyq *k, qg_kq_resv *r, const qg_qamount *actual, int64_t now)
{
    if (!r->active) return false;
    r->active = false;
    if (k->n_p) atomic_fetch_sub_explicit(&k->sh->inflight, 1, memory_order_relaxed);
    bool spent = false;
    for (int i = 0; i < k->n_p; i++) {
        int64_t a = actual ? qg_keyq_amount(&k->p[i].cfg, actual) : 0;
        /* after a reset its estimate is gone: the whole use is charged to the fresh count */
        int64_t c = adjust(&k->p[i], r->index[i], &r->gen[i], a - r->est[i], a);
        if (c < 0 || c < k->p[i].limit || !a) continue;
        spent = true;
        qg_window w;
        /* only the window that is current can pause the key: a late settlement of an old
         * window exhausts nothing the key still uses */
        if (k->p[i].cfg.on_exhausted_disable && qg_policy_window(&k->p[i].cfg, now, &w) == 0 && w.index == r->index[i])
            pause_for(k, i, w.end_ms);
    }
    if (k->total_limit >= 0) {
        int64_t a = actual ? actual->v[QG_UNIT_USD] : 0;
        atomic_fetch_add_explicit(&k->sh->total_committed, a - r->total, memory_order_relaxed);
    }
    return spent;
}

void qg_keyq_release(qg_keyq *k, qg_kq_resv *r) { qg_keyq_settle(k, r, NULL, 0); }

void qg_keyq_reset(qg_keyq *k, int64_t now, qg_kq_reset *out)
{
    out->n = 0;
    for (int i = 0; i < k->n_p; i++) {
        qg_window win;
        if (qg_policy_window(&k->p[i].cfg, now, &win) < 0) continue;
        _Atomic uint64_t *s = slot_of(&k->p[i], win.index);
        uint64_t w = LD(*s);
        unsigned g;
        do g = same_window(w, win.index) ? (gen_of(w) + 1) & GEN_MASK : 1; /* 1: above a fresh window's 0 */
        while (!atomic_compare_exchange_weak(s, &w, pack(win.index, g, 0)));
        out->policy[out->n] = k->p[i].signature, out->window[out->n] = win.index, out->gen[out->n++] = (uint8_t)g;
    }
    uint64_t w = LD(k->pause);
    do out->epoch = (pause_epoch(w) + 1) & EPOCH_MASK;
    while (!atomic_compare_exchange_weak(&k->pause, &w, pause_word(out->epoch, -1, 0)));
}

int qg_keyq_status(const qg_keyq *ck, int i, int64_t now, qg_kq_status *out)
{
    qg_keyq *k = (qg_keyq *)ck;
    if (i < 0 || i >= k->n_p || qg_policy_window(&k->p[i].cfg, now, &out->w) < 0) return -1;
    uint64_t w = LD(*slot_of(&k->p[i], out->w.index));
    out->used = same_window(w, out->w.index) ? committed_of(w) : 0;
    out->remaining = QG_MAX(k->p[i].limit - out->used, (int64_t)0);
    out->exhausted = out->used >= k->p[i].limit;
    return 0;
}

int64_t qg_keyq_remaining(const qg_keyq *ck, int i, int64_t index)
{
    qg_keyq *k = (qg_keyq *)ck;
    uint64_t w = LD(*slot_of(&k->p[i], index));
    int64_t used = same_window(w, index) ? committed_of(w) : 0;
    return QG_MAX(k->p[i].limit - used, (int64_t)0);
}

int qg_keyq_tightest(const qg_keyq *k, int64_t now)
{
    int best = -1;
    double best_share = 2;
    for (int i = 0; i < k->n_p; i++) {
        qg_kq_status s;
        if (qg_keyq_status(k, i, now, &s) < 0) continue;
        double share = k->p[i].limit > 0 ? (double)s.remaining / (double)k->p[i].limit : 0;
        if (share < best_share) best_share = share, best = i;
    }
    return best;
}

void qg_keyq_restore_window(qg_keyq *k, int i, int64_t window, int64_t used, unsigned gen, int64_t now)
{
    qg_window w;
    if (i < 0 || i >= k->n_p || qg_policy_window(&k->p[i].cfg, now, &w) < 0) return;
    if (window > w.index || window <= w.index - QG_KQ_SLOTS) return;
    atomic_store_explicit(slot_of(&k->p[i], window), pack(window, gen, clamp_amount(used)), memory_order_relaxed);
}

void qg_keyq_restore_total(qg_keyq *k, int64_t used)
{
    if (k->total_limit >= 0) atomic_store_explicit(&k->sh->total_committed, QG_MAX(used, (int64_t)0), memory_order_relaxed);
}

void qg_keyq_restore_pause(qg_keyq *k, int i, int64_t until_ms, uint32_t epoch)
{
    if (i < 0 || i >= k->n_p) i = -1;
    atomic_store_explicit(&k->pause, pause_word(epoch, i, i >= 0 ? until_ms : 0), memory_order_relaxed);
}

uint64_t qg_keyq_pause_info(const qg_keyq *ck, int64_t *until_ms, uint32_t *epoch)
{
    uint64_t w = LD(((qg_keyq *)ck)->pause);
    int i = pause_policy(w);
    bool on = i >= 0 && i < ck->n_p;
    *until_ms = on ? pause_until(w) : 0;
    if (epoch) *epoch = pause_epoch(w);
    return on ? ck->p[i].signature : 0;
}

int qg_keyq_settled(const qg_keyq *k, int i, int64_t now, int64_t *window, int64_t *used)
{
    qg_kq_status st;
    if (atomic_load_explicit(&((qg_keyq *)k)->sh->inflight, memory_order_relaxed) != 0) return -1;
    if (qg_keyq_status(k, i, now, &st) < 0) return -1;
    *window = st.w.index;
    *used = st.used;
    return 0;
}
