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

typedef struct {
    int prov;                    /* index in cfg->providers */
    int acct;                    /* index in that provider's accounts */
    const qg_provider_cfg *p;
    const qg_account_cfg *a;
    char *head_lines;            /* "Host: ...\r\n" + this account's credential header, built once */
    size_t head_lines_len;
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
/* Picks the next target not in tried[0..n_tried), lowest tier first.  -1 if none is left. */
int qg_route_pick(const qg_route *rt, uint32_t *cursors, const int *tried, int n_tried);

#endif
