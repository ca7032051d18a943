/*
 * router.h — which accounts may serve a (dialect, model), and in what order.
 *
 * Built once from the config: for every model a provider of a dialect lists, a route with
 * all (provider, account) targets, grouped into priority tiers (lower first).  Inside a
 * tier, accounts rotate by smooth weighted round robin (the sequence nginx uses for
 * upstream weights), precomputed into a slot list, so picking is a cursor step.
 *
 * The route table is immutable and shared; the rotation cursors live per worker (an array
 * of n_cursors uint32_t), so picking needs no atomics.  The quota engine (a later issue)
 * filters targets by account state inside qg_route_pick; the shape stays O(1) per pick in
 * the usual case of a ready first choice.
 */
#ifndef QG_ROUTER_H
#define QG_ROUTER_H

#include "config.h"
#include "quota.h"

typedef struct {
    int prov;                    /* index in cfg->providers */
    int acct;                    /* index in that provider's accounts */
    const qg_provider_cfg *p;
    const qg_account_cfg *a;
    char *head_lines;            /* "Host: ...\r\n" + this account's credential header, built once */
    size_t head_lines_len;
    qg_qacct *q;                 /* its quota state (accounts.h); NULL until qg_router_bind */
} qg_target;

typedef struct {
    char *model;
    qg_dialect dialect;
    qg_target *targets;
    size_t n_targets;
    size_t n_tiers;
    size_t *slot_off;            /* [n_tiers + 1] ranges into slots */
    uint16_t *slots;             /* target indices in weighted rotation order */
    size_t cursor_base;          /* this route's first cursor in a worker's cursor array */
    size_t index;                /* position in the router's routes (a worker's rank caches) */
} qg_route;

typedef struct {
    qg_route *routes;
    size_t n_routes;
    size_t *table;               /* open addressing: route index + 1, 0 = empty */
    size_t mask;
    size_t n_cursors;
} qg_router;

void qg_router_build(qg_router *r, const qg_config *cfg);
void qg_router_free(qg_router *r);
const qg_route *qg_router_find(const qg_router *r, qg_dialect d, qg_slice model);
/* Picks the next target not in tried[0..n_tried), lowest tier first, by rotation alone
 * (no quota state).  -1 if none is left. */
int qg_route_pick(const qg_route *rt, uint32_t *cursors, const int *tried, int n_tried);

/* Points every target at its account's quota state: accts(ud, prov, acct). */
void qg_router_bind(qg_router *r, qg_qacct *(*accts)(void *ud, int prov, int acct), void *ud);

/* ---- quota-aware choice (SPEC §4.5) ----
 * Inside a tier: accounts whose capacity would be lost first (qg_quota_rank's pressure,
 * best first), then those in the highest remaining band by the weighted rotation, then
 * the rest by rotation.  Each candidate is reserved with qg_quota_reserve, which refuses
 * a depleted, cooling or spent one without any upstream call; the first that takes the
 * reservation wins.  The scores are cached per worker and route and recomputed at most
 * every QG_RANK_REFRESH_MS, so a pick costs O(1) when the first candidate is usable;
 * eligibility itself is always checked live. */
#define QG_RANK_REFRESH_MS 1000
#define QG_SKIP_LOG_MS 60000         /* a skipped account is logged at most once a minute */

typedef struct {
    int64_t built_at;            /* 0: never */
    uint8_t *band;               /* [n_targets] remaining band 0..10 */
    uint16_t *urgent;            /* [n_targets] targets with pressure > 0, best first */
    size_t n_urgent;
    uint8_t *tier_best;          /* [n_tiers] the highest band in each tier */
    uint16_t *tier;              /* [n_targets] each target's tier */
} qg_rank_cache;

typedef struct {
    const int *tried;            /* targets this request already tried */
    int n_tried;
    const qg_qamount *est;       /* the request's estimate */
    int64_t now;
    /* out, when qg_route_choose returns -1 */
    int64_t until;               /* the earliest moment a skipped account becomes usable; 0 none known */
    int skipped;                 /* accounts refused for their quota state */
} qg_pick;

/* A worker's caches, one per route (freed with qg_rank_caches_free). */
qg_rank_cache *qg_rank_caches_new(const qg_router *r);
void qg_rank_caches_free(const qg_router *r, qg_rank_cache *c);
/* The earliest moment any of the route's accounts (tried or not) may take est: 0 if one
 * may now or none will at a known time. */
int64_t qg_route_usable_at(const qg_route *rt, const qg_qamount *est, int64_t now);
/* Returns the chosen target with its reservation in *resv, or -1 (see pk->until). */
int qg_route_choose(const qg_route *rt, uint32_t *cursors, qg_rank_cache *caches, qg_pick *pk, qg_qresv *resv);

#endif
