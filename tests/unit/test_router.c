/*
 * test_router.c — the route table, priority tiers and smooth weighted round robin, and the
 * client key table.
 *
 * Configs are built in memory with qg_config_load_string, so every case reads like the YAML
 * a user would write.  Rotation is checked as exact sequences (nginx's smooth WRR gives
 * a a b a c a a for weights 5,1,1), as exact counts over whole cycles, and against the
 * tried list and tier fallback that retries rely on.
 */
#include "testutil.h"
#include "config.h"
#include "keydir.h"
#include "keys.h"

#include <pthread.h>
#include <stdatomic.h>
#include "router.h"

static qg_config *load(const char *yaml)
{
    qg_config *c = NULL;
    qg_buf errs;
    qg_buf_init(&errs, 0);
    int rc = qg_config_load_string(yaml, strlen(yaml), "test.yaml", &c, &errs);
    if (rc < 0) print_error("config rejected:\n%.*s", (int)errs.len, errs.data ? errs.data : "");
    qg_buf_free(&errs);
    if (rc < 0) fail();
    assert_non_null(c);
    return c;
}

static const qg_route *find(const qg_router *r, qg_dialect d, const char *model)
{
    return qg_router_find(r, d, qg_slice_of(model));
}

/* A provider for configs that are about keys (a config needs at least one provider). */
#define ONE_PROVIDER \
    "providers:\n  - { name: p, dialect: openai, base_url: \"http://127.0.0.1:1\", models: [m], " \
    "accounts: [{ name: a, api_key: k }] }\n"

/* Name of the account behind target index t. */
static const char *acct(const qg_route *rt, int t)
{
    assert_true(t >= 0 && (size_t)t < rt->n_targets);
    return rt->targets[t].a->name;
}

/* n picks with no tried list, as account names joined by spaces. */
static void picks(const qg_route *rt, uint32_t *cursors, int n, const int *tried, int n_tried, char *out, size_t cap)
{
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        int t = qg_route_pick(rt, cursors, tried, n_tried);
        if (t < 0) fail_msg("pick %d: no target", i);
        for (int k = 0; k < n_tried; k++) assert_int_not_equal(t, tried[k]);
        if (i) strncat(out, " ", cap - strlen(out) - 1);
        strncat(out, acct(rt, t), cap - strlen(out) - 1);
    }
}

static int target_of(const qg_route *rt, const char *name)
{
    for (size_t i = 0; i < rt->n_targets; i++)
        if (!strcmp(rt->targets[i].a->name, name)) return (int)i;
    fail_msg("no target %s", name);
    return -1;
}

/* head_lines is (pointer, length), not a C string. */
static void assert_head_lines(const qg_target *t, const char *want)
{
    if (t->head_lines_len != strlen(want) || memcmp(t->head_lines, want, t->head_lines_len) != 0)
        fail_msg("head lines \"%.*s\" != \"%s\"", (int)t->head_lines_len, t->head_lines, want);
}

/* ---- routes ---- */

static const char ROUTES_YAML[] =
    "providers:\n"
    "  - name: oa\n"
    "    dialect: openai\n"
    "    base_url: http://127.0.0.1:9100\n"
    "    models: [gpt-a, shared]\n"
    "    accounts:\n"
    "      - { name: a1, api_key: sk-a1 }\n"
    "  - name: an\n"
    "    dialect: anthropic\n"
    "    base_url: https://api.anthropic.example\n"
    "    models: [shared, claude-x]\n"
    "    accounts:\n"
    "      - { name: b1, api_key: sk-b1 }\n"
    "      - { name: b2, api_key: sk-b2 }\n"
    "  - name: oa2\n"
    "    dialect: openai\n"
    "    base_url: https://gw.example.com:8443/v1\n"
    "    models: [shared]\n"
    "    accounts:\n"
    "      - { name: c1, api_key: sk-c1 }\n"
    "  - name: v6\n"
    "    dialect: openai\n"
    "    base_url: http://[::1]:8080/v1\n"
    "    models: [local]\n"
    "    accounts:\n"
    "      - { name: d1, api_key: sk-d1 }\n"
    "  - name: plain\n"
    "    dialect: anthropic\n"
    "    base_url: http://api.plain.example/v1\n"
    "    models: [plain-m]\n"
    "    accounts:\n"
    "      - { name: e1, api_key: sk-e1 }\n";

static void test_routes_per_dialect_and_model(void **state)
{
    qg_config *cfg = load(ROUTES_YAML);
    qg_router r;
    qg_router_build(&r, cfg);
    assert_int_equal(r.n_routes, 6); /* openai gpt-a, shared, local; anthropic shared, claude-x, plain-m */

    const qg_route *ga = find(&r, QG_DIALECT_OPENAI, "gpt-a");
    const qg_route *os = find(&r, QG_DIALECT_OPENAI, "shared");
    const qg_route *as = find(&r, QG_DIALECT_ANTHROPIC, "shared");
    const qg_route *cx = find(&r, QG_DIALECT_ANTHROPIC, "claude-x");
    assert_non_null(ga), assert_non_null(os), assert_non_null(as), assert_non_null(cx);
    assert_ptr_not_equal(os, as); /* the same model in both dialects: two routes */
    assert_string_equal(os->model, "shared");
    assert_int_equal(os->dialect, QG_DIALECT_OPENAI);
    assert_int_equal(as->dialect, QG_DIALECT_ANTHROPIC);

    /* openai/shared: both openai providers' accounts, in config order; anthropic/shared: an's. */
    assert_int_equal(os->n_targets, 2);
    assert_string_equal(os->targets[0].p->name, "oa");
    assert_string_equal(os->targets[0].a->name, "a1");
    assert_int_equal(os->targets[0].prov, 0);
    assert_int_equal(os->targets[0].acct, 0);
    assert_string_equal(os->targets[1].p->name, "oa2");
    assert_int_equal(os->targets[1].prov, 2);
    assert_int_equal(as->n_targets, 2);
    assert_string_equal(as->targets[0].a->name, "b1");
    assert_string_equal(as->targets[1].a->name, "b2");
    assert_int_equal(as->targets[1].prov, 1);
    assert_int_equal(as->targets[1].acct, 1);
    assert_int_equal(ga->n_targets, 1);

    /* Absent combinations. */
    assert_null(find(&r, QG_DIALECT_ANTHROPIC, "gpt-a"));
    assert_null(find(&r, QG_DIALECT_OPENAI, "claude-x"));
    assert_null(find(&r, QG_DIALECT_OPENAI, "unknown"));
    assert_null(find(&r, QG_DIALECT_OPENAI, "gpt-"));
    assert_null(find(&r, QG_DIALECT_OPENAI, "gpt-ab"));
    assert_null(find(&r, QG_DIALECT_OPENAI, "GPT-A"));
    assert_null(find(&r, QG_DIALECT_OPENAI, ""));
    /* A slice of a longer buffer is matched on its own bytes. */
    assert_ptr_equal(qg_router_find(&r, QG_DIALECT_OPENAI, (qg_slice){"gpt-a\"}", 5}), ga);

    /* Per-target head lines: Host (port only when not the default, v6 in brackets) and the
     * dialect's credential header. */
    assert_head_lines(&ga->targets[0], "Host: 127.0.0.1:9100\r\nAuthorization: Bearer sk-a1\r\n");
    assert_head_lines(&os->targets[1], "Host: gw.example.com:8443\r\nAuthorization: Bearer sk-c1\r\n");
    assert_head_lines(&as->targets[0], "Host: api.anthropic.example\r\nx-api-key: sk-b1\r\n");
    const qg_route *lo = find(&r, QG_DIALECT_OPENAI, "local");
    assert_non_null(lo);
    assert_head_lines(&lo->targets[0], "Host: [::1]:8080\r\nAuthorization: Bearer sk-d1\r\n");
    const qg_route *pm = find(&r, QG_DIALECT_ANTHROPIC, "plain-m");
    assert_non_null(pm);
    assert_head_lines(&pm->targets[0], "Host: api.plain.example\r\nx-api-key: sk-e1\r\n"); /* http: 80 is the default */

    /* Every route has its own cursors: one per tier, no overlaps. */
    size_t total = 0;
    for (size_t i = 0; i < r.n_routes; i++) {
        const qg_route *rt = &r.routes[i];
        assert_int_equal(rt->n_tiers, 1);
        assert_true(rt->cursor_base + rt->n_tiers <= r.n_cursors);
        for (size_t j = 0; j < i; j++)
            assert_true(r.routes[j].cursor_base + r.routes[j].n_tiers <= rt->cursor_base ||
                        rt->cursor_base + rt->n_tiers <= r.routes[j].cursor_base);
        assert_ptr_equal(qg_router_find(&r, rt->dialect, qg_slice_of(rt->model)), rt);
        total += rt->n_tiers;
    }
    assert_int_equal(r.n_cursors, total);

    qg_router_free(&r);
    assert_null(find(&r, QG_DIALECT_OPENAI, "gpt-a")); /* a freed router finds nothing */
    qg_config_free(cfg);
}

static void test_many_routes(void **state)
{
    /* Enough models to make the hash table grow and collide. */
    qg_buf y;
    qg_buf_init(&y, 0);
    qg_buf_puts(&y, "providers:\n");
    for (int d = 0; d < 2; d++) {
        qg_buf_appendf(&y, "  - name: p%d\n    dialect: %s\n    base_url: http://127.0.0.1:9%03d\n    models: [", d,
                       d ? "anthropic" : "openai", d);
        for (int i = 0; i < 300; i++) qg_buf_appendf(&y, "%smodel-%d", i ? ", " : "", i);
        qg_buf_puts(&y, "]\n    accounts:\n      - { name: a, api_key: k }\n");
    }
    qg_buf_append(&y, "", 1);
    qg_config *cfg = load(y.data);
    qg_router r;
    qg_router_build(&r, cfg);
    assert_int_equal(r.n_routes, 600);
    for (int d = 0; d < 2; d++)
        for (int i = 0; i < 300; i++) {
            char name[32];
            snprintf(name, sizeof name, "model-%d", i);
            const qg_route *rt = find(&r, (qg_dialect)d, name);
            assert_non_null(rt);
            assert_string_equal(rt->model, name);
            assert_int_equal(rt->dialect, d);
            assert_string_equal(rt->targets[0].p->name, d ? "p1" : "p0");
        }
    assert_null(find(&r, QG_DIALECT_OPENAI, "model-300"));
    qg_router_free(&r);
    qg_config_free(cfg);
    qg_buf_free(&y);
}

/* ---- tiers ---- */

static const char TIERS_YAML[] =
    "providers:\n"
    "  - name: p\n"
    "    dialect: openai\n"
    "    base_url: http://127.0.0.1:9100\n"
    "    models: [m]\n"
    "    accounts:\n"
    "      - { name: t2, api_key: k, priority: 2 }\n"
    "      - { name: t0a, api_key: k }\n"
    "      - { name: t1, api_key: k, priority: 1 }\n"
    "      - { name: t0b, api_key: k, priority: 0 }\n"
    "      - { name: tneg, api_key: k, priority: -5 }\n"
    "  - name: q\n"
    "    dialect: openai\n"
    "    base_url: http://127.0.0.1:9101\n"
    "    models: [m]\n"
    "    accounts:\n"
    "      - { name: q0, api_key: k, priority: 0 }\n";

static void test_priority_tiers(void **state)
{
    qg_config *cfg = load(TIERS_YAML);
    qg_router r;
    qg_router_build(&r, cfg);
    const qg_route *rt = find(&r, QG_DIALECT_OPENAI, "m");
    assert_non_null(rt);
    assert_int_equal(rt->n_targets, 6);
    assert_int_equal(rt->n_tiers, 4);
    /* Targets ordered by priority, then config order (provider, account). */
    static const char *const order[] = {"tneg", "t0a", "t0b", "q0", "t1", "t2"};
    for (size_t i = 0; i < 6; i++) assert_string_equal(rt->targets[i].a->name, order[i]);
    /* Tier slot ranges: 1, 3, 1, 1 slots (all weights 1). */
    static const size_t off[] = {0, 1, 4, 5, 6};
    for (size_t i = 0; i <= 4; i++) assert_int_equal(rt->slot_off[i], off[i]);

    uint32_t *cur = calloc(r.n_cursors, sizeof *cur);
    /* The lowest tier wins while it is untried. */
    for (int i = 0; i < 5; i++) assert_string_equal(acct(rt, qg_route_pick(rt, cur, NULL, 0)), "tneg");
    /* Tried ones are skipped; the next tier rotates. */
    int tried[6] = {target_of(rt, "tneg")};
    char seq[256];
    picks(rt, cur, 6, tried, 1, seq, sizeof seq);
    assert_string_equal(seq, "t0a t0b q0 t0a t0b q0");
    /* Tier 0 exhausted in the order a retry would try it. */
    tried[1] = target_of(rt, "t0a");
    tried[2] = target_of(rt, "q0");
    picks(rt, cur, 2, tried, 3, seq, sizeof seq);
    assert_string_equal(seq, "t0b t0b");
    tried[3] = target_of(rt, "t0b");
    picks(rt, cur, 2, tried, 4, seq, sizeof seq);
    assert_string_equal(seq, "t1 t1");
    tried[4] = target_of(rt, "t1");
    picks(rt, cur, 1, tried, 5, seq, sizeof seq);
    assert_string_equal(seq, "t2");
    tried[5] = target_of(rt, "t2");
    assert_int_equal(qg_route_pick(rt, cur, tried, 6), -1);
    assert_int_equal(qg_route_pick(rt, cur, tried, 6), -1);
    /* A tried list in another order, with duplicates and unrelated indices, means the same. */
    int tried2[] = {5, 99, 4, 3, 3, 2, 1, 0, -1};
    assert_int_equal(qg_route_pick(rt, cur, tried2, (int)QG_ARRAY_LEN(tried2)), -1);
    int tried3[] = {0, 1, 2, 3, 4};
    assert_string_equal(acct(rt, qg_route_pick(rt, cur, tried3, 5)), "t2");
    free(cur);
    qg_router_free(&r);
    qg_config_free(cfg);
}

/* ---- smooth weighted round robin ---- */

static const char *wrr_yaml(char *buf, size_t cap, const int *w, int n, int priority)
{
    int o = snprintf(buf, cap, "providers:\n  - name: p\n    dialect: anthropic\n    base_url: http://127.0.0.1:9100\n"
                               "    models: [m]\n    accounts:\n");
    for (int i = 0; i < n; i++)
        o += snprintf(buf + o, cap - (size_t)o, "      - { name: %c, api_key: k, weight: %d, priority: %d }\n", 'a' + i,
                      w[i], priority);
    assert_true((size_t)o < cap);
    return buf;
}

/* The sequence of n picks for the given weights, from fresh cursors. */
static void wrr_sequence(const int *w, int nw, int n, char *out, size_t cap)
{
    char y[4096];
    qg_config *cfg = load(wrr_yaml(y, sizeof y, w, nw, 0));
    qg_router r;
    qg_router_build(&r, cfg);
    const qg_route *rt = find(&r, QG_DIALECT_ANTHROPIC, "m");
    assert_non_null(rt);
    uint32_t *cur = calloc(r.n_cursors, sizeof *cur);
    picks(rt, cur, n, NULL, 0, out, cap);
    free(cur);
    qg_router_free(&r);
    qg_config_free(cfg);
}

static void test_smooth_wrr_sequences(void **state)
{
    char seq[512];
    wrr_sequence((int[]){5, 1, 1}, 3, 14, seq, sizeof seq);
    assert_string_equal(seq, "a a b a c a a a a b a c a a"); /* nginx's example, twice */
    wrr_sequence((int[]){1, 1, 1}, 3, 7, seq, sizeof seq);
    assert_string_equal(seq, "a b c a b c a");
    wrr_sequence((int[]){2, 1}, 2, 6, seq, sizeof seq);
    assert_string_equal(seq, "a b a a b a");
    wrr_sequence((int[]){1, 2}, 2, 6, seq, sizeof seq);
    assert_string_equal(seq, "b a b b a b");
    wrr_sequence((int[]){4, 2, 1}, 3, 7, seq, sizeof seq);
    assert_string_equal(seq, "a b a c a b a");
    wrr_sequence((int[]){3, 3}, 2, 6, seq, sizeof seq);
    assert_string_equal(seq, "a b a b a b");
    wrr_sequence((int[]){7}, 1, 3, seq, sizeof seq);
    assert_string_equal(seq, "a a a");
}

static void test_wrr_counts_and_slots(void **state)
{
    char y[4096];
    static const int w[] = {4, 3, 2, 1, 10};
    qg_config *cfg = load(wrr_yaml(y, sizeof y, w, 5, 3));
    qg_router r;
    qg_router_build(&r, cfg);
    const qg_route *rt = find(&r, QG_DIALECT_ANTHROPIC, "m");
    assert_int_equal(rt->n_tiers, 1);
    assert_int_equal(rt->slot_off[1] - rt->slot_off[0], 20); /* one slot per weight unit */
    uint32_t *cur = calloc(r.n_cursors, sizeof *cur);
    int count[5] = {0};
    int run = 0, prev = -1, max_run = 0;
    for (int i = 0; i < 20 * 50; i++) {
        int t = qg_route_pick(rt, cur, NULL, 0);
        assert_true(t >= 0 && t < 5);
        count[t]++;
        run = t == prev ? run + 1 : 1;
        max_run = QG_MAX(max_run, run);
        prev = t;
    }
    for (int i = 0; i < 5; i++) assert_int_equal(count[target_of(rt, (char[]){(char)('a' + i), 0})], w[i] * 50);
    assert_true(max_run <= 2); /* smooth: the heavy account (half the weight) is never picked 3x running */

    /* Two workers' cursors are independent: each sees the whole sequence. */
    uint32_t *c1 = calloc(r.n_cursors, sizeof *c1), *c2 = calloc(r.n_cursors, sizeof *c2);
    int s1[40], s2[40];
    for (int i = 0; i < 20; i++) s1[i] = qg_route_pick(rt, c1, NULL, 0);
    for (int i = 0; i < 20; i++) s2[i] = qg_route_pick(rt, c2, NULL, 0), s1[20 + i] = qg_route_pick(rt, c1, NULL, 0);
    for (int i = 0; i < 20; i++) s2[20 + i] = qg_route_pick(rt, c2, NULL, 0);
    assert_memory_equal(s1, s2, sizeof s1);
    assert_memory_equal(s1, s1 + 20, 20 * sizeof *s1); /* period = total weight */
    free(c1), free(c2), free(cur);
    qg_router_free(&r);
    qg_config_free(cfg);
}

static void test_wrr_with_tried(void **state)
{
    char y[4096];
    qg_config *cfg = load(wrr_yaml(y, sizeof y, (int[]){5, 1, 1}, 3, 0));
    qg_router r;
    qg_router_build(&r, cfg);
    const qg_route *rt = find(&r, QG_DIALECT_ANTHROPIC, "m");
    uint32_t *cur = calloc(r.n_cursors, sizeof *cur);
    char seq[256];
    int tried_a[] = {target_of(rt, "a")};
    picks(rt, cur, 6, tried_a, 1, seq, sizeof seq);
    assert_string_equal(seq, "b c b c b c");
    int tried_ab[] = {target_of(rt, "b"), target_of(rt, "a")};
    picks(rt, cur, 3, tried_ab, 2, seq, sizeof seq);
    assert_string_equal(seq, "c c c");
    int tried_all[] = {target_of(rt, "c"), target_of(rt, "b"), target_of(rt, "a")};
    assert_int_equal(qg_route_pick(rt, cur, tried_all, 3), -1);
    /* Reset cursors: the full cycle again; tried lists never leave a trace in the rotation. */
    memset(cur, 0, r.n_cursors * sizeof *cur);
    picks(rt, cur, 7, NULL, 0, seq, sizeof seq);
    assert_string_equal(seq, "a a b a c a a");
    free(cur);
    qg_router_free(&r);
    qg_config_free(cfg);
}

/* Weights are proportions whatever their scale: 3000:2000 must split 3:2, as 3:2 does. */
static void test_large_weights_keep_proportions(void **state)
{
    static const int sets[][2] = {{3, 2}, {300, 200}, {3000, 2000}, {600000, 400000}};
    for (size_t s = 0; s < QG_ARRAY_LEN(sets); s++) {
        char y[4096];
        qg_config *cfg = load(wrr_yaml(y, sizeof y, sets[s], 2, 0));
        qg_router r;
        qg_router_build(&r, cfg);
        const qg_route *rt = find(&r, QG_DIALECT_ANTHROPIC, "m");
        uint32_t *cur = calloc(r.n_cursors, sizeof *cur);
        int a = 0;
        for (int i = 0; i < 5000; i++) a += !strcmp(acct(rt, qg_route_pick(rt, cur, NULL, 0)), "a");
        free(cur);
        qg_router_free(&r);
        qg_config_free(cfg);
        if (a < 2950 || a > 3050)
            fail_msg("weights %d:%d: a picked %d of 5000 times, want ~3000", sets[s][0], sets[s][1], a);
    }
}

/* ---- keys ---- */

static const qg_keyrec *auth(const qg_keydir *d, const char *s) { return qg_keydir_auth(d, qg_slice_of(s)); }

static void test_keydir(void **state)
{
    qg_config *cfg = load(ONE_PROVIDER "keys:\n"
                          "  - { name: k1, key: sk-client-0001 }\n"
                          "  - { name: k2, key: sk-client-0002, models: [m] }\n"
                          "  - { name: k3, key: SK-CLIENT-0001, status: disabled, expires_at: 2030-01-01T00:00:00Z }\n");
    qg_keydir *d = qg_keydir_new();
    qg_keydir_add_config(d, cfg);
    assert_int_equal(qg_keydir_count(d), 3);
    assert_string_equal(auth(d, "sk-client-0001")->name, "k1");
    assert_string_equal(auth(d, "sk-client-0002")->name, "k2");
    assert_string_equal(auth(d, "SK-CLIENT-0001")->name, "k3"); /* case matters */
    assert_true(auth(d, "SK-CLIENT-0001")->disabled);
    assert_int_equal(auth(d, "SK-CLIENT-0001")->expires_ms, 1893456000000LL);
    assert_true(auth(d, "sk-client-0001")->from_config);
    assert_string_equal(auth(d, "sk-client-0002")->ent->id, "k2"); /* a config key's id is its name */
    assert_int_equal(auth(d, "sk-client-0002")->n_models, 1);
    assert_null(auth(d, "sk-client-0003"));
    assert_null(auth(d, "sk-client-000"));
    assert_null(auth(d, "sk-client-00011"));
    assert_null(auth(d, "sk-client-0001 "));
    assert_null(auth(d, ""));
    assert_null(qg_keydir_auth(d, (qg_slice){NULL, 0}));
    /* Only the slice's bytes count. */
    assert_string_equal(qg_keydir_auth(d, (qg_slice){"sk-client-0002\r\nX: y", 14})->name, "k2");
    /* Over-long presented secrets are refused without hashing. */
    char big[600];
    memset(big, 'k', sizeof big);
    assert_null(qg_keydir_auth(d, (qg_slice){big, sizeof big}));
    /* by id */
    qg_keyent *e = qg_keydir_by_id(d, S("k2"));
    assert_non_null(e);
    assert_ptr_equal(qg_keyent_rec(e), auth(d, "sk-client-0002"));
    assert_null(qg_keydir_by_id(d, S("k4")));
    /* an edit publishes a new version sharing the counters; the old one stays readable */
    const qg_keyrec *old = qg_keyent_rec(e);
    qg_key_cfg edited = {.name = "k2-renamed", .total_quota = -1, .disabled = true};
    qg_keyrec *nv = qg_keyrec_new(&edited, old);
    qg_keydir_publish(d, e, nv);
    assert_string_equal(auth(d, "sk-client-0002")->name, "k2-renamed");
    assert_true(auth(d, "sk-client-0002")->disabled);
    assert_string_equal(old->name, "k2");       /* still valid for whoever holds it */
    assert_ptr_equal(nv->kq->sh, old->kq->sh);  /* one set of counters across versions */
    /* same id or same hash: refused */
    uint8_t h[32];
    qg_key_hash("sk-client-0001", 14, h);
    qg_key_cfg fresh = {.name = "x", .total_quota = -1};
    qg_keyrec *r = qg_keyrec_new(&fresh, NULL);
    assert_int_equal(qg_keydir_add(d, "key_0000000000000001", "qg-", h, r), -1);
    h[0] ^= 1;
    assert_int_equal(qg_keydir_add(d, "k1", "qg-", h, r), -1);
    assert_int_equal(qg_keydir_add(d, "key_0000000000000001", "qg-abc", h, r), 0);
    assert_string_equal(qg_keydir_by_id(d, S("key_0000000000000001"))->prefix, "qg-abc");
    /* delete: the secret stops working, the entry stays (deleted) */
    qg_keydir_publish(d, qg_keydir_by_id(d, S("k1")), NULL);
    assert_null(auth(d, "sk-client-0001"));
    assert_non_null(qg_keydir_by_id(d, S("k1")));
    assert_null(qg_keyent_rec(qg_keydir_by_id(d, S("k1"))));
    assert_int_equal(qg_keydir_count(d), 4);
    qg_keydir_free(d);
    qg_config_free(cfg);

    /* No keys at all: every secret is unknown. */
    d = qg_keydir_new();
    assert_null(auth(d, "sk-client-0001"));
    assert_null(qg_keydir_by_id(d, S("k1")));
    qg_keydir_free(d);
}

/* The writer grows both tables many times while a reader looks keys up: every key the
 * reader saw published is found on every later lookup (ASan/TSan-friendly: no locks). */
typedef struct {
    qg_keydir *d;
    _Atomic int published;
    _Atomic bool done;
    int misses;
} grow_state;

static void key_secret(int i, char *s, size_t n) { snprintf(s, n, "qg-test-secret-%08d", i); }

static void *grow_reader(void *arg)
{
    grow_state *g = arg;
    unsigned x = 1;
    while (!atomic_load(&g->done)) {
        int n = atomic_load(&g->published);
        if (!n) continue;
        x = x * 1103515245 + 12345;
        int i = (int)(x % (unsigned)n);
        char s[40], id[40];
        key_secret(i, s, sizeof s);
        snprintf(id, sizeof id, "key_%016x", i);
        const qg_keyrec *r = qg_keydir_auth(g->d, qg_slice_of(s));
        if (!r || strcmp(r->ent->id, id) != 0 || !qg_keydir_by_id(g->d, qg_slice_of(id))) g->misses++;
    }
    return NULL;
}

static void test_keydir_grows_under_readers(void **state)
{
    enum { N = 20000 };
    grow_state g = {.d = qg_keydir_new()};
    pthread_t th;
    pthread_create(&th, NULL, grow_reader, &g);
    for (int i = 0; i < N; i++) {
        char s[40], id[40];
        key_secret(i, s, sizeof s);
        snprintf(id, sizeof id, "key_%016x", i);
        uint8_t h[32];
        qg_key_hash(s, strlen(s), h);
        qg_key_cfg k = {.name = id, .total_quota = -1};
        assert_int_equal(qg_keydir_add(g.d, id, "qg-test", h, qg_keyrec_new(&k, NULL)), 0);
        atomic_store(&g.published, i + 1);
    }
    atomic_store(&g.done, true);
    pthread_join(th, NULL);
    assert_int_equal(g.misses, 0);
    assert_int_equal(qg_keydir_count(g.d), N);
    for (uint32_t i = 0; i < N; i += 997) assert_int_equal(qg_keydir_at(g.d, i)->seq, i);
    qg_keydir_free(g.d);
}

static int spec(const char *body, qg_key_spec *s, qg_buf *e) { return qg_key_spec_parse(body, strlen(body), s, e); }

/* An admin body: the config's validation, null clears, no ${ENV}, JSON objects only. */
static void test_key_spec_parse(void **state)
{
    qg_key_spec s;
    qg_buf e;
    qg_buf_init(&e, 0);
    assert_int_equal(spec("{\"name\":\"ci\",\"models\":[\"m\"],\"total_quota\":12.5,"
                          "\"expires_at\":\"2030-01-01T00:00:00Z\",\"status\":\"disabled\","
                          "\"policies\":[{\"period\":\"90m\",\"limit\":10,\"unit\":\"requests\"}]}",
                          &s, &e),
                     0);
    assert_string_equal(s.k.name, "ci");
    assert_int_equal(s.k.n_models, 1);
    assert_true(s.k.total_quota == 12.5);
    assert_true(s.k.disabled);
    assert_int_equal(s.k.expires_ms, 1893456000000LL);
    assert_int_equal(s.k.n_policies, 1);
    assert_int_equal(s.k.policies[0].minutes, 90);
    assert_int_equal(s.present, QG_KS_NAME | QG_KS_MODELS | QG_KS_TOTAL | QG_KS_EXPIRES | QG_KS_STATUS | QG_KS_POLICIES);
    qg_key_spec_free(&s);
    /* null: present, cleared */
    assert_int_equal(spec("{\"total_quota\":null,\"models\":null}", &s, &e), 0);
    assert_int_equal(s.present, QG_KS_TOTAL | QG_KS_MODELS);
    assert_true(s.k.total_quota < 0);
    assert_int_equal(s.k.n_models, 0);
    qg_key_spec_free(&s);
    /* ${ENV} stays literal */
    setenv("QG_SPEC_SECRET", "leaked", 1);
    assert_int_equal(spec("{\"models\":[\"${QG_SPEC_SECRET}\"]}", &s, &e), 0);
    assert_string_equal(s.k.models[0], "${QG_SPEC_SECRET}");
    qg_key_spec_free(&s);
    /* refusals name the field */
    static const struct { const char *body, *want; } bad[] = {
        {"name: x", "expected a JSON object"},
        {"[1]", "expected a JSON object"},
        {"{\"nam\":\"x\"}", "nam"},
        {"{\"key\":\"sk-secret-123\"}", "key"},
        {"{\"policies\":[{\"period\":\"fortnight\",\"limit\":1}]}", "policies[0].period"},
        {"{\"policies\":[{\"period\":\"daily\"}]}", "policies[0].limit"},
        {"{\"status\":\"paused\"}", "status"},
        {"{\"total_quota\":-1}", "total_quota"},
        {"{\"expires_at\":\"tomorrow\"}", "expires_at"},
        {"{\"name\":\"a b\"}", "name"},
        {"{\"name\":", "body"},
    };
    /* several problems: one message, joined by ';' (an API error has one line) */
    e.len = 0;
    assert_int_equal(spec("{\"status\":\"paused\",\"total_quota\":-1}", &s, &e), -1);
    assert_non_null(strchr(e.data, ';'));
    assert_null(strchr(e.data, '\n'));
    assert_int_equal(e.data[e.len - 1], 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e.len = 0;
        if (qg_key_spec_parse(bad[i].body, strlen(bad[i].body), &s, &e) != -1) fail_msg("accepted %s", bad[i].body);
        qg_buf_append(&e, "", 1);
        if (!strstr(e.data, bad[i].want)) fail_msg("%s: message \"%s\" lacks %s", bad[i].body, e.data, bad[i].want);
        qg_key_spec_free(&s);
    }
    qg_buf_free(&e);
}

static void test_secret_equal(void **state)
{
    assert_true(qg_secret_equal(S("admin-token-123"), "admin-token-123"));
    assert_false(qg_secret_equal(S("admin-token-124"), "admin-token-123"));
    assert_false(qg_secret_equal(S("Admin-token-123"), "admin-token-123"));
    assert_false(qg_secret_equal(S("admin-token-12"), "admin-token-123"));
    assert_false(qg_secret_equal(S("admin-token-1234"), "admin-token-123"));
    assert_false(qg_secret_equal(S(""), "admin-token-123"));
    assert_false(qg_secret_equal(S(""), "")); /* an empty expected token never matches */
    assert_false(qg_secret_equal((qg_slice){NULL, 0}, ""));
    assert_true(qg_secret_equal((qg_slice){"tokX", 3}, "tok"));
    assert_false(qg_secret_equal((qg_slice){"tok", 3}, "tokX"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_per_dialect_and_model),
        cmocka_unit_test(test_many_routes),
        cmocka_unit_test(test_priority_tiers),
        cmocka_unit_test(test_smooth_wrr_sequences),
        cmocka_unit_test(test_wrr_counts_and_slots),
        cmocka_unit_test(test_wrr_with_tried),
        cmocka_unit_test(test_large_weights_keep_proportions),
        cmocka_unit_test(test_keydir),
        cmocka_unit_test(test_keydir_grows_under_readers),
        cmocka_unit_test(test_key_spec_parse),
        cmocka_unit_test(test_secret_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
