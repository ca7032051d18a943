/*
 * router.c — route table and weighted rotation.  See router.h.
 */
#include "router.h"

#include "timefmt.h"

#include <stdlib.h>

#define MAX_SLOTS_PER_TIER 4096

static uint64_t fnv1a(qg_dialect d, qg_slice s)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)d;
    for (size_t i = 0; i < s.n; i++) h = (h ^ (unsigned char)s.p[i]) * 1099511628211ull;
    return h;
}

static qg_route *route_get(qg_router *r, qg_dialect d, const char *model)
{
    for (size_t i = 0; i < r->n_routes; i++)
        if (r->routes[i].dialect == d && strcmp(r->routes[i].model, model) == 0) return &r->routes[i];
    r->routes = qg_xrealloc(r->routes, (r->n_routes + 1) * sizeof *r->routes);
    qg_route *rt = &r->routes[r->n_routes++];
    memset(rt, 0, sizeof *rt);
    rt->model = qg_xstrdup(model);
    rt->dialect = d;
    return rt;
}

static int cmp_priority(const void *a, const void *b)
{
    const qg_target *x = a, *y = b;
    if (x->a->priority != y->a->priority) return x->a->priority < y->a->priority ? -1 : 1;
    if (x->prov != y->prov) return x->prov - y->prov; /* stable: config order */
    return x->acct - y->acct;
}

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Smooth weighted round robin (nginx's sequence) over targets[lo..hi): appends one full
 * cycle to slots.  Weights are divided by their common divisor; if a cycle would still be
 * longer than MAX_SLOTS_PER_TIER they are scaled down proportionally (each at least 1), so
 * shares stay close to the configured ones at any weight. */
static void tier_slots(qg_route *rt, size_t lo, size_t hi, size_t *n_slots)
{
    size_t n = hi - lo;
    int64_t *w = qg_xcalloc(n, sizeof *w), *current = qg_xcalloc(n, sizeof *current);
    int64_t g = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        w[i] = rt->targets[lo + i].a->weight > 0 ? rt->targets[lo + i].a->weight : 1;
        g = gcd64(g, w[i]);
    }
    for (size_t i = 0; i < n; i++) total += (w[i] /= g);
    if (total > MAX_SLOTS_PER_TIER && (int64_t)n < MAX_SLOTS_PER_TIER) {
        int64_t scaled = 0;
        for (size_t i = 0; i < n; i++) scaled += (w[i] = QG_MAX((int64_t)1, w[i] * MAX_SLOTS_PER_TIER / total));
        total = scaled;
    } else if (total > MAX_SLOTS_PER_TIER) {
        for (size_t i = 0; i < n; i++) w[i] = 1; /* more accounts than slots: plain rotation */
        total = (int64_t)n;
    }
    rt->slots = qg_xrealloc(rt->slots, (*n_slots + (size_t)total) * sizeof *rt->slots);
    for (int64_t step = 0; step < total; step++) {
        size_t best = 0;
        for (size_t i = 0; i < n; i++) {
            current[i] += w[i];
            if (current[i] > current[best]) best = i;
        }
        current[best] -= total;
        rt->slots[(*n_slots)++] = (uint16_t)(lo + best);
    }
    free(w);
    free(current);
}

static void route_finish(qg_route *rt, size_t *cursor_base)
{
    qsort(rt->targets, rt->n_targets, sizeof *rt->targets, cmp_priority);
    size_t n_slots = 0;
    for (size_t lo = 0; lo < rt->n_targets;) {
        size_t hi = lo + 1;
        while (hi < rt->n_targets && rt->targets[hi].a->priority == rt->targets[lo].a->priority) hi++;
        rt->slot_off = qg_xrealloc(rt->slot_off, (rt->n_tiers + 2) * sizeof *rt->slot_off);
        rt->slot_off[rt->n_tiers++] = n_slots;
        tier_slots(rt, lo, hi, &n_slots);
        lo = hi;
    }
    rt->slot_off[rt->n_tiers] = n_slots;
    rt->cursor_base = *cursor_base;
    *cursor_base += rt->n_tiers;
}

/* The request-head lines that depend only on the target: Host and the credential. */
static void target_lines(qg_target *t)
{
    const qg_provider_cfg *p = t->p;
    qg_buf b;
    qg_buf_init(&b, 0);
    bool v6 = strchr(p->host, ':') != NULL;
    qg_buf_puts(&b, "Host: ");
    qg_buf_puts(&b, v6 ? "[" : "");
    qg_buf_puts(&b, p->host);
    qg_buf_puts(&b, v6 ? "]" : "");
    if (p->port != (p->tls ? 443 : 80)) {
        qg_buf_puts(&b, ":");
        qg_buf_put_int(&b, p->port);
    }
    qg_buf_puts(&b, p->dialect == QG_DIALECT_ANTHROPIC ? "\r\nx-api-key: " : "\r\nAuthorization: Bearer ");
    qg_buf_puts(&b, t->a->api_key ? t->a->api_key : "");
    qg_buf_puts(&b, "\r\n");
    t->head_lines = b.data;
    t->head_lines_len = b.len;
}

void qg_router_build(qg_router *r, const qg_config *cfg)
{
    memset(r, 0, sizeof *r);
    for (size_t pi = 0; pi < cfg->n_providers; pi++) {
        const qg_provider_cfg *p = &cfg->providers[pi];
        for (size_t mi = 0; mi < p->n_models; mi++) {
            qg_route *rt = route_get(r, p->dialect, p->models[mi]);
            for (size_t ai = 0; ai < p->n_accounts && rt->n_targets < 65535; ai++) {
                rt->targets = qg_xrealloc(rt->targets, (rt->n_targets + 1) * sizeof *rt->targets);
                qg_target *t = &rt->targets[rt->n_targets++];
                *t = (qg_target){(int)pi, (int)ai, p, &p->accounts[ai], NULL, 0, NULL};
                target_lines(t);
            }
        }
    }
    size_t cap = 16;
    while (cap < r->n_routes * 2) cap *= 2;
    r->table = qg_xcalloc(cap, sizeof *r->table);
    r->mask = cap - 1;
    for (size_t i = 0; i < r->n_routes; i++) {
        r->routes[i].index = i;
        route_finish(&r->routes[i], &r->n_cursors);
        size_t s = fnv1a(r->routes[i].dialect, qg_slice_of(r->routes[i].model)) & r->mask;
        while (r->table[s]) s = (s + 1) & r->mask;
        r->table[s] = i + 1;
    }
}

void qg_router_free(qg_router *r)
{
    for (size_t i = 0; i < r->n_routes; i++) {
        for (size_t t = 0; t < r->routes[i].n_targets; t++) free(r->routes[i].targets[t].head_lines);
        free(r->routes[i].model);
        free(r->routes[i].targets);
        free(r->routes[i].slot_off);
        free(r->routes[i].slots);
    }
    free(r->routes);
    free(r->table);
    memset(r, 0, sizeof *r);
}

const qg_route *qg_router_find(const qg_router *r, qg_dialect d, qg_slice model)
{
    if (!r->table) return NULL;
    for (size_t s = fnv1a(d, model) & r->mask; r->table[s]; s = (s + 1) & r->mask) {
        const qg_route *rt = &r->routes[r->table[s] - 1];
        if (rt->dialect == d && qg_slice_eq(model, rt->model)) return rt;
    }
    return NULL;
}

static bool was_tried(int t, const int *tried, int n)
{
    for (int i = 0; i < n; i++)
        if (tried[i] == t) return true;
    return false;
}

int qg_route_pick(const qg_route *rt, uint32_t *cursors, const int *tried, int n_tried)
{
    for (size_t tier = 0; tier < rt->n_tiers; tier++) {
        size_t lo = rt->slot_off[tier], n = rt->slot_off[tier + 1] - lo;
        uint32_t *cur = &cursors[rt->cursor_base + tier];
        for (size_t k = 0; k < n; k++) {
            size_t slot = (*cur + k) % n;
            int t = rt->slots[lo + slot];
            if (was_tried(t, tried, n_tried)) continue;
            *cur = (uint32_t)((slot + 1) % n);
            return t;
        }
    }
    return -1;
}

void qg_router_bind(qg_router *r, qg_qacct *(*accts)(void *ud, int prov, int acct), void *ud)
{
    for (size_t i = 0; i < r->n_routes; i++)
        for (size_t t = 0; t < r->routes[i].n_targets; t++) {
            qg_target *tg = &r->routes[i].targets[t];
            tg->q = accts(ud, tg->prov, tg->acct);
        }
}

/* ---- quota-aware choice ---- */

qg_rank_cache *qg_rank_caches_new(const qg_router *r) { return qg_xcalloc(r->n_routes ? r->n_routes : 1, sizeof(qg_rank_cache)); }

void qg_rank_caches_free(const qg_router *r, qg_rank_cache *c)
{
    for (size_t i = 0; c && i < r->n_routes; i++) {
        free(c[i].band);
        free(c[i].urgent);
        free(c[i].tier_best);
        free(c[i].tier);
    }
    free(c);
}

static size_t tier_of(const qg_route *rt, int t)
{
    size_t tier = 0;
    while (tier + 1 < rt->n_tiers && rt->targets[t].a->priority != rt->targets[rt->slots[rt->slot_off[tier]]].a->priority)
        tier++;
    return tier;
}

static void rank_refresh(const qg_route *rt, qg_rank_cache *c, int64_t now)
{
    size_t n = rt->n_targets;
    if (!c->band) {
        c->band = qg_xcalloc(n, 1);
        c->urgent = qg_xcalloc(n, sizeof *c->urgent);
        c->tier_best = qg_xcalloc(rt->n_tiers, 1);
        c->tier = qg_xcalloc(n, sizeof *c->tier);
        for (size_t t = 0; t < n; t++) c->tier[t] = (uint16_t)tier_of(rt, (int)t);
    }
    int64_t *pressure = qg_xcalloc(n, sizeof *pressure);
    memset(c->tier_best, 0, rt->n_tiers);
    c->n_urgent = 0;
    for (size_t t = 0; t < n; t++) {
        qg_qrank rk = {0, 10};
        if (rt->targets[t].q) qg_quota_rank(rt->targets[t].q, now, &rk);
        c->band[t] = (uint8_t)rk.band;
        pressure[t] = rk.pressure;
        size_t tier = c->tier[t];
        if (c->band[t] > c->tier_best[tier]) c->tier_best[tier] = c->band[t];
        if (rk.pressure <= 0) continue;
        size_t j = c->n_urgent++; /* insertion by pressure, best first; targets are in tier order */
        while (j > 0 && pressure[c->urgent[j - 1]] < rk.pressure && c->tier[c->urgent[j - 1]] == tier) {
            c->urgent[j] = c->urgent[j - 1];
            j--;
        }
        c->urgent[j] = (uint16_t)t;
    }
    free(pressure);
    c->built_at = now;
}

static void log_skip(const qg_target *t, qg_block why, int64_t until, int64_t now)
{
    qg_qacct *q = t->q;
    int64_t last = atomic_load_explicit(&q->skip_logged_at, memory_order_relaxed);
    if (now - last < QG_SKIP_LOG_MS || !atomic_compare_exchange_strong(&q->skip_logged_at, &last, now)) return;
    char when[48] = "unknown";
    if (until > 0) qg_format_rfc3339(until, when, sizeof when);
    qg_info("account %s/%s skipped: %s until %s", t->p->name, t->a->name, qg_block_name(why), when);
}

/* Tries to reserve target t; on refusal folds its until into the pick. */
static bool try_target(const qg_route *rt, int t, qg_pick *pk, qg_qresv *resv)
{
    const qg_target *tg = &rt->targets[t];
    if (was_tried(t, pk->tried, pk->n_tried)) return false;
    if (!tg->q) {
        resv->a = NULL;
        return true;
    }
    int64_t until;
    qg_block why;
    if (qg_quota_reserve(tg->q, pk->est, pk->now, resv, &until, &why)) return true;
    pk->skipped++;
    if (until > 0 && (pk->until == 0 || until < pk->until)) pk->until = until;
    log_skip(tg, why, until, pk->now);
    return false;
}

int qg_route_choose(const qg_route *rt, uint32_t *cursors, qg_rank_cache *caches, qg_pick *pk, qg_qresv *resv)
{
    qg_rank_cache *c = &caches[rt->index];
    if (!c->built_at || pk->now - c->built_at >= QG_RANK_REFRESH_MS || pk->now < c->built_at) rank_refresh(rt, c, pk->now);
    pk->until = 0;
    pk->skipped = 0;
    size_t u = 0;
    for (size_t tier = 0; tier < rt->n_tiers; tier++) {
        /* 1. capacity that would be lost, most pressing first */
        for (; u < c->n_urgent && c->tier[c->urgent[u]] == tier; u++)
            if (try_target(rt, c->urgent[u], pk, resv)) return c->urgent[u];
        /* 2. the highest band by weighted rotation, 3. any other band */
        size_t lo = rt->slot_off[tier], n = rt->slot_off[tier + 1] - lo;
        uint32_t *cur = &cursors[rt->cursor_base + tier];
        for (int pass = 0; pass < 2; pass++)
            for (size_t k = 0; k < n; k++) {
                size_t slot = (*cur + k) % n;
                int t = rt->slots[lo + slot];
                bool best = c->band[t] >= c->tier_best[tier];
                if (best != (pass == 0)) continue;
                if (!try_target(rt, t, pk, resv)) continue;
                *cur = (uint32_t)((slot + 1) % n);
                return t;
            }
    }
    return -1;
}

int64_t qg_route_usable_at(const qg_route *rt, const qg_qamount *est, int64_t now)
{
    int64_t best = 0;
    for (size_t t = 0; t < rt->n_targets; t++) {
        int64_t until;
        qg_block why;
        if (!rt->targets[t].q || qg_quota_eligible(rt->targets[t].q, est, now, &until, &why)) return 0;
        if (until > now && (!best || until < best)) best = until;
    }
    return best;
}
