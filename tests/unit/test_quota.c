/*
 * test_quota.c — the upstream quota core (quota.c; SPEC §2, §4.1–4.5, §4.7) on a virtual
 * clock: bucket windows, combine all / any, reservation and settlement, header snapshots,
 * error verdicts and the state machine, burn rate, alerts, selection and persistence.
 *
 * Every account here is built by hand from qg_bucket_cfg (or from YAML where the loader's
 * defaults matter); snapshots and error verdicts are filled in by hand too, so these tests
 * depend on ratelimit.h / errclass.h for their structs only.  Expected numbers are worked
 * out in the comments next to them.
 */
#include "testutil.h"

#include <math.h>

#include "config.h"
#include "quota.h"

#define NOW 1795341600000LL /* 2026-11-22T10:00:00Z (10 h into the UTC day) */
#define SEC 1000LL
#define MINUTE 60000LL
#define HOUR 3600000LL
#define DAY 86400000LL
#define ANCHOR_08 1767196800000LL /* 2026-01-01T00:00:00+08:00 = 2025-12-31T16:00:00Z */

#define U_REQ QG_UNIT_REQUESTS
#define U_TOK QG_UNIT_TOKENS
#define U_IN QG_UNIT_INPUT_TOKENS
#define U_OUT QG_UNIT_OUTPUT_TOKENS
#define U_USD QG_UNIT_USD
#define U_PCT QG_UNIT_PERCENT

#define AM(...) ((qg_qamount){.v = {__VA_ARGS__}})
#define ONE AM([U_REQ] = 1)
#define REL(t) ((long long)((t) - NOW)) /* times in messages: ms from NOW */

/* ---- building accounts ---- */

static qg_bucket_cfg bk(const char *name, qg_bucket_kind kind, qg_unit unit, double limit, int64_t period,
                        qg_reset_mode reset, int64_t anchor, int64_t expires)
{
    qg_bucket_cfg c;
    memset(&c, 0, sizeof c);
    c.name = (char *)name;
    c.kind = kind;
    c.unit = unit;
    c.limit = limit;
    c.period_ms = period;
    c.reset = reset;
    c.anchor_ms = anchor;
    c.expires_at_ms = expires;
    return c;
}
#define CREDITS(n, u, lim, exp) bk(n, QG_BUCKET_CREDITS, u, lim, 0, QG_RESET_ANCHORED, 0, exp)
#define ANCHORED(n, u, lim, per, anc) bk(n, QG_BUCKET_WINDOW, u, lim, per, QG_RESET_ANCHORED, anc, 0)
#define FIRST_USE(n, u, lim, per) bk(n, QG_BUCKET_WINDOW, u, lim, per, QG_RESET_FIRST_USE, 0, 0)
#define SLIDING(n, u, lim, per) bk(n, QG_BUCKET_WINDOW, u, lim, per, QG_RESET_SLIDING, 0, 0)
#define RATE(n, u, lim, per) bk(n, QG_BUCKET_RATE, u, lim, per, QG_RESET_SLIDING, 0, 0)

static void mk_full(qg_qacct *a, const char *name, int prio, int weight, bool any, qg_bucket_cfg *b, size_t n)
{
    qg_account_cfg ac;
    memset(&ac, 0, sizeof ac);
    ac.name = (char *)name;
    ac.priority = prio;
    ac.weight = weight;
    ac.combine_any = any;
    ac.buckets = b;
    ac.n_buckets = n;
    qg_qacct_init(a, NULL, &ac);
}
#define MK(a, b, any) mk_full(a, "acct", 0, 1, any, b, QG_ARRAY_LEN(b))
#define MK_EMPTY(a) mk_full(a, "acct", 0, 1, false, NULL, 0)

static size_t bidx(const qg_qacct *a, const char *name)
{
    for (size_t i = 0; i < a->n_b; i++)
        if (strcmp(a->b[i].name, name) == 0) return i;
    fail_msg("no bucket %s", name);
    return 0;
}

static qg_bucket_status status(const qg_qacct *a, const char *name, int64_t now)
{
    qg_bucket_status s;
    qg_quota_bucket_status(a, bidx(a, name), now, &s);
    return s;
}

/* ---- the request path ---- */

static qg_qresv take_at(qg_qacct *a, qg_qamount est, int64_t now, int line)
{
    qg_qresv r;
    int64_t until = -7;
    qg_block why = QG_BLOCK_NONE;
    if (!qg_quota_reserve(a, &est, now, &r, &until, &why))
        fail_msg("line %d: reserve at NOW%+lld refused: %s until NOW%+lld", line, REL(now), qg_block_name(why),
                 REL(until));
    if (r.a != a) fail_msg("line %d: reservation not filled", line);
    return r;
}
#define TAKE(a, est, now) take_at(a, est, now, __LINE__)

static void use_at(qg_qacct *a, qg_qamount amt, int64_t now, int line)
{
    qg_qresv r = take_at(a, amt, now, line);
    qg_quota_settle(&r, &amt, now);
}
#define USE(a, amt, now) use_at(a, amt, now, __LINE__)

/* Both eligible (which changes nothing) and reserve must refuse, for the same reason and
 * until the same moment — except that reserve, not eligible, turns "spent with no reset"
 * into a depletion with a probation end.  check_until false: only that until is in the future. */
static void refused_at(qg_qacct *a, qg_qamount est, int64_t now, qg_block want, int64_t want_until, bool check_until,
                       int line)
{
    int64_t eu = -7, ru = -7;
    qg_block ew = QG_BLOCK_NONE, rw = QG_BLOCK_NONE;
    qg_acct_state before = qg_quota_state(a, now, NULL, NULL);
    if (qg_quota_eligible(a, &est, now, &eu, &ew))
        fail_msg("line %d: eligible at NOW%+lld, want refused (%s)", line, REL(now), qg_block_name(want));
    if (ew != want) fail_msg("line %d: eligible says %s, want %s", line, qg_block_name(ew), qg_block_name(want));
    bool fresh_depletion = want == QG_BLOCK_DEPLETED && before == QG_ACCT_READY;
    if (check_until && !fresh_depletion && eu != want_until)
        fail_msg("line %d: eligible until NOW%+lld, want NOW%+lld", line, REL(eu), REL(want_until));
    qg_qresv r;
    if (qg_quota_reserve(a, &est, now, &r, &ru, &rw)) {
        qg_quota_release(&r);
        fail_msg("line %d: reserve at NOW%+lld admitted, want refused (%s)", line, REL(now), qg_block_name(want));
    }
    if (r.a) fail_msg("line %d: refused reservation left r.a set", line);
    if (rw != want) fail_msg("line %d: reserve says %s, want %s", line, qg_block_name(rw), qg_block_name(want));
    if (check_until ? ru != want_until : ru <= now)
        fail_msg("line %d: reserve until NOW%+lld, want NOW%+lld", line, REL(ru), REL(want_until));
}
#define REFUSED(a, est, now, why, until) refused_at(a, est, now, why, until, true, __LINE__)
#define REFUSED_WHY(a, est, now, why) refused_at(a, est, now, why, 0, false, __LINE__)

static void state_at(const qg_qacct *a, int64_t now, qg_acct_state want, int64_t want_until, bool want_stated, int line)
{
    int64_t until = -7;
    bool stated = !want_stated;
    qg_acct_state s = qg_quota_state(a, now, &until, &stated);
    if (s != want || until != want_until || stated != want_stated)
        fail_msg("line %d: at NOW%+lld state %s until NOW%+lld stated %d, want %s until NOW%+lld stated %d", line,
                 REL(now), qg_acct_state_name(s), REL(until), stated, qg_acct_state_name(want), REL(want_until),
                 want_stated);
}
#define STATE(a, now, s, until, stated) state_at(a, now, s, until, stated, __LINE__)

/* ---- what responses say ---- */

static qg_rl_snapshot snap(void)
{
    qg_rl_snapshot s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < QG_RL_N; i++) s.e[i].limit = s.e[i].remaining = -1;
    s.retry_after_ms = -1;
    return s;
}

static void put(qg_rl_snapshot *s, qg_rl_slot slot, int64_t limit, int64_t remaining, int64_t reset)
{
    s->e[slot].present = true;
    s->e[slot].limit = limit;
    s->e[slot].remaining = remaining;
    s->e[slot].reset_ms = reset;
    s->n_found++;
}

static void failv(qg_qacct *a, qg_errclass cls, int64_t until, bool stated, int64_t now)
{
    qg_error_verdict v;
    memset(&v, 0, sizeof v);
    v.cls = cls;
    v.until_ms = until;
    v.until_stated = stated;
    qg_quota_on_failure(a, &v, now);
}

static void near(double got, double want, const char *what)
{
    if (fabs(got - want) > 1e-9) fail_msg("%s: %.12f, want %.12f", what, got, want);
}

/* ======================================================================== */

static void test_amount(void **state)
{
    (void)state;
    assert_int_equal(qg_quota_amount(QG_UNIT_USD, 1.5), 1500000);
    assert_int_equal(qg_quota_amount(QG_UNIT_USD, 50), 50000000);
    assert_int_equal(qg_quota_amount(QG_UNIT_USD, 0.1), 100000);
    assert_int_equal(qg_quota_amount(QG_UNIT_USD, 0.000001), 1);
    assert_int_equal(qg_quota_amount(QG_UNIT_PERCENT, 42), 420000);
    assert_int_equal(qg_quota_amount(QG_UNIT_PERCENT, 100), QG_PERCENT_FULL);
    assert_int_equal(qg_quota_amount(QG_UNIT_PERCENT, 0.5), 5000);
    assert_int_equal(qg_quota_amount(QG_UNIT_REQUESTS, 40), 40);
    assert_int_equal(qg_quota_amount(QG_UNIT_TOKENS, 1000000), 1000000);
    assert_int_equal(qg_quota_amount(QG_UNIT_INPUT_TOKENS, 7), 7);
    assert_int_equal(qg_quota_amount(QG_UNIT_OUTPUT_TOKENS, 8), 8);
    for (int u = 0; u < QG_UNIT_N; u++) {
        assert_int_equal(qg_quota_amount((qg_unit)u, -1), -1);
        assert_int_equal(qg_quota_amount((qg_unit)u, -0.25), -1);
        assert_int_equal(qg_quota_amount((qg_unit)u, 0), 0);
    }
}

static void test_cost(void **state)
{
    (void)state;
    qg_model_cfg m = {.name = "opus", .weight = 5, .input_usd_per_mtok = 15, .output_usd_per_mtok = 75};
    qg_qamount c;
    /* 1000 in at $15/M = $0.015, 200 out at $75/M = $0.015: 30000 micro-USD */
    qg_quota_cost(&m, 1000, 200, &c);
    assert_int_equal(c.v[U_REQ], 5);
    assert_int_equal(c.v[U_TOK], 1200);
    assert_int_equal(c.v[U_IN], 1000);
    assert_int_equal(c.v[U_OUT], 200);
    assert_int_equal(c.v[U_USD], 30000);
    assert_int_equal(c.v[U_PCT], 0);
    /* no model: one request, no price */
    qg_quota_cost(NULL, 10, 5, &c);
    assert_int_equal(c.v[U_REQ], 1);
    assert_int_equal(c.v[U_TOK], 15);
    assert_int_equal(c.v[U_USD], 0);
    /* negative counts are zero; an unset weight counts 1 */
    qg_quota_cost(&m, -5, -1, &c);
    assert_int_equal(c.v[U_TOK], 0);
    assert_int_equal(c.v[U_USD], 0);
    qg_model_cfg cheap = {.name = "c", .weight = 0, .input_usd_per_mtok = 0.27, .output_usd_per_mtok = 1.1};
    qg_quota_cost(&cheap, 1000000, 1000000, &c); /* $0.27 + $1.10 */
    assert_int_equal(c.v[U_REQ], 1);
    assert_int_equal(c.v[U_USD], 1370000);
}

static void test_estimate(void **state)
{
    (void)state;
    qg_model_cfg m = {.name = "opus", .weight = 5, .input_usd_per_mtok = 15, .output_usd_per_mtok = 75};
    qg_qamount e;
    static const struct {
        int64_t model_max, max_tokens, want_out;
    } cases[] = {
        {0, 0, QG_DEFAULT_OUTPUT_ESTIMATE},      /* nothing named: the default */
        {0, 200, 200},                           /* the request's max */
        {0, 4096, QG_DEFAULT_OUTPUT_ESTIMATE},   /* min() with the default too */
        {500, 0, 500},                           /* the model's max */
        {500, 200, 200},
        {500, 4096, 500},
        {4096, 0, QG_DEFAULT_OUTPUT_ESTIMATE},
        {4096, 2048, QG_DEFAULT_OUTPUT_ESTIMATE},
        {300, 300, 300},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        m.max_output_tokens = cases[i].model_max;
        qg_quota_estimate(&m, 4000, cases[i].max_tokens, 0, &e);
        if (e.v[U_OUT] != cases[i].want_out)
            fail_msg("case %zu (model max %lld, max_tokens %lld): output %lld, want %lld", i,
                     (long long)cases[i].model_max, (long long)cases[i].max_tokens, (long long)e.v[U_OUT],
                     (long long)cases[i].want_out);
        assert_int_equal(e.v[U_IN], 1000); /* 4000 bytes / 4 */
        assert_int_equal(e.v[U_TOK], 1000 + cases[i].want_out);
        assert_int_equal(e.v[U_REQ], 5);
        assert_int_equal(e.v[U_USD], 1000 * 15 + cases[i].want_out * 75);
    }
    qg_quota_estimate(NULL, 7, 0, 0, &e);
    assert_int_equal(e.v[U_IN], 1);
    assert_int_equal(e.v[U_OUT], QG_DEFAULT_OUTPUT_ESTIMATE);
    assert_int_equal(e.v[U_REQ], 1);
    assert_int_equal(e.v[U_USD], 0);
    qg_quota_estimate(NULL, 3, 10, 0, &e);
    assert_int_equal(e.v[U_IN], 0);
    assert_int_equal(e.v[U_OUT], 10);
    /* limits.default_output_tokens caps what a request names and stands in when it names none */
    qg_quota_estimate(NULL, 3, 0, 200, &e);
    assert_int_equal(e.v[U_OUT], 200);
    qg_quota_estimate(NULL, 3, 5000, 200, &e);
    assert_int_equal(e.v[U_OUT], 200);
    qg_quota_estimate(NULL, 3, 50, 200, &e);
    assert_int_equal(e.v[U_OUT], 50);
}

/* ---- bucket windows ---- */

static void test_anchored_window(void **state)
{
    (void)state;
    /* hourly windows aligned to :15 (the anchor is in the future: alignment still holds):
     * the current one is [NOW-45m, NOW+15m) */
    qg_bucket_cfg b[] = {ANCHORED("hour", U_REQ, 5, HOUR, NOW + 15 * MINUTE),
                         ANCHORED("day08", U_TOK, 1000000, DAY, ANCHOR_08)};
    qg_qacct a;
    MK(&a, b, false);
    for (int i = 0; i < 5; i++) USE(&a, ONE, NOW + i * SEC);
    qg_bucket_status s = status(&a, "hour", NOW + 10 * SEC);
    assert_int_equal(s.limit, 5);
    assert_int_equal(s.used, 5);
    assert_int_equal(s.remaining, 0);
    assert_int_equal(s.reset_ms, NOW + 15 * MINUTE);
    assert_int_equal(s.alert, QG_ALERT_EXHAUSTED);
    assert_int_equal(s.source, QG_SRC_LOCAL);
    REFUSED(&a, ONE, NOW + 10 * SEC, QG_BLOCK_BUCKET, NOW + 15 * MINUTE);
    REFUSED(&a, ONE, NOW + 15 * MINUTE - 1, QG_BLOCK_BUCKET, NOW + 15 * MINUTE);
    /* exactly at the boundary the next window is open, empty, and ends an hour later */
    s = status(&a, "hour", NOW + 15 * MINUTE);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.remaining, 5);
    assert_int_equal(s.reset_ms, NOW + 75 * MINUTE);
    USE(&a, ONE, NOW + 15 * MINUTE);
    assert_int_equal(status(&a, "hour", NOW + 15 * MINUTE).used, 1);
    /* rollover without any write reads 0; the next write zeroes the stored use */
    assert_int_equal(status(&a, "hour", NOW + 75 * MINUTE).used, 0);
    USE(&a, ONE, NOW + 80 * MINUTE);
    USE(&a, ONE, NOW + 81 * MINUTE);
    assert_int_equal(status(&a, "hour", NOW + 81 * MINUTE).used, 2);
    assert_int_equal(a.b[bidx(&a, "hour")].used, 2);
    /* a daily window anchored at 00:00+08:00: windows start 16:00Z, so NOW's ends at 16:00Z */
    s = status(&a, "day08", NOW);
    assert_int_equal(s.reset_ms, NOW + 6 * HOUR);
    s = status(&a, "day08", NOW + 6 * HOUR);
    assert_int_equal(s.reset_ms, NOW + 30 * HOUR);
    qg_qacct_free(&a);
}

static void test_first_use_window(void **state)
{
    (void)state;
    qg_bucket_cfg b[] = {FIRST_USE("5h", U_REQ, 3, 5 * HOUR)};
    qg_qacct a;
    MK(&a, b, false);
    /* closed: full room, no reset */
    qg_bucket_status s = status(&a, "5h", NOW);
    assert_int_equal(s.remaining, 3);
    assert_int_equal(s.reset_ms, 0);
    USE(&a, ONE, NOW); /* opens it: reset = open + period */
    assert_int_equal(a.b[0].mark, NOW);
    s = status(&a, "5h", NOW);
    assert_int_equal(s.used, 1);
    assert_int_equal(s.reset_ms, NOW + 5 * HOUR);
    USE(&a, ONE, NOW + HOUR); /* later requests do not move it */
    USE(&a, ONE, NOW + 2 * HOUR);
    s = status(&a, "5h", NOW + 2 * HOUR);
    assert_int_equal(s.used, 3);
    assert_int_equal(s.reset_ms, NOW + 5 * HOUR);
    REFUSED(&a, ONE, NOW + 3 * HOUR, QG_BLOCK_BUCKET, NOW + 5 * HOUR);
    /* closed at open + period: full room again, and no reset until the next first use */
    s = status(&a, "5h", NOW + 5 * HOUR);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.remaining, 3);
    assert_int_equal(s.reset_ms, 0);
    /* the next window opens at the first reserve after the close, not at the close */
    qg_qresv r = TAKE(&a, ONE, NOW + 6 * HOUR);
    assert_int_equal(a.b[0].mark, NOW + 6 * HOUR);
    assert_int_equal(status(&a, "5h", NOW + 6 * HOUR).reset_ms, NOW + 11 * HOUR);
    qg_quota_settle(&r, &ONE, NOW + 6 * HOUR + SEC);
    assert_int_equal(status(&a, "5h", NOW + 6 * HOUR + SEC).used, 1);
    qg_qacct_free(&a);
}

static void test_sliding_window(void **state)
{
    (void)state;
    /* 12 minutes in 12 slices of one minute (NOW is on a minute) */
    qg_bucket_cfg b[] = {SLIDING("12m", U_REQ, 4, 12 * MINUTE)};
    qg_qacct a;
    MK(&a, b, false);
    USE(&a, ONE, NOW);
    USE(&a, ONE, NOW + 3 * MINUTE);
    USE(&a, ONE, NOW + 5 * MINUTE);
    USE(&a, ONE, NOW + 5 * MINUTE + 30 * SEC);
    qg_bucket_status s = status(&a, "12m", NOW + 6 * MINUTE);
    assert_int_equal(s.used, 4);
    assert_int_equal(s.reset_ms, NOW + 12 * MINUTE); /* when the oldest slice leaves */
    REFUSED(&a, ONE, NOW + 6 * MINUTE, QG_BLOCK_BUCKET, NOW + 12 * MINUTE);
    /* use leaves slice by slice */
    s = status(&a, "12m", NOW + 12 * MINUTE);
    assert_int_equal(s.used, 3);
    assert_int_equal(s.reset_ms, NOW + 15 * MINUTE);
    USE(&a, ONE, NOW + 12 * MINUTE);
    REFUSED(&a, ONE, NOW + 13 * MINUTE, QG_BLOCK_BUCKET, NOW + 15 * MINUTE);
    assert_int_equal(status(&a, "12m", NOW + 15 * MINUTE).used, 3);
    s = status(&a, "12m", NOW + 17 * MINUTE);
    assert_int_equal(s.used, 1);
    assert_int_equal(s.reset_ms, NOW + 24 * MINUTE);
    s = status(&a, "12m", NOW + 24 * MINUTE);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.reset_ms, 0);
    qg_qacct_free(&a);
}

static void test_rate_buckets(void **state)
{
    (void)state;
    /* hand-built: a sliding minute in 5 s slices */
    qg_bucket_cfg b[] = {RATE("rpm", U_REQ, 2, MINUTE)};
    qg_qacct a;
    MK(&a, b, false);
    USE(&a, ONE, NOW);
    USE(&a, ONE, NOW + 20 * SEC);
    REFUSED(&a, ONE, NOW + 30 * SEC, QG_BLOCK_BUCKET, NOW + MINUTE);
    qg_qresv r = TAKE(&a, ONE, NOW + MINUTE);
    qg_quota_release(&r);
    qg_qacct_free(&a);

    /* from YAML: a rate bucket without reset: is sliding, one with reset: anchored is not */
    const char *yaml = "providers:\n"
                       "  - name: p\n"
                       "    dialect: openai\n"
                       "    base_url: http://h\n"
                       "    models: [m]\n"
                       "    accounts:\n"
                       "      - name: a\n"
                       "        api_key: k\n"
                       "        buckets:\n"
                       "          - { name: rpm, kind: rate, unit: requests, limit: 2, period: 1m }\n"
                       "          - { name: itpm, kind: rate, unit: input_tokens, limit: 100, period: 1m,"
                       " reset: anchored }\n";
    qg_config *cfg = NULL;
    qg_buf errs;
    qg_buf_init(&errs, 0);
    if (qg_config_load_string(yaml, strlen(yaml), "t.yaml", &cfg, &errs) != 0)
        fail_msg("config: %.*s", (int)errs.len, errs.data);
    qg_buf_free(&errs);
    const qg_account_cfg *ac = &cfg->providers[0].accounts[0];
    assert_int_equal(ac->buckets[0].reset, QG_RESET_SLIDING);
    assert_int_equal(ac->buckets[1].reset, QG_RESET_ANCHORED);
    qg_qacct_init(&a, &cfg->providers[0], ac);
    assert_string_equal(a.provider, "p");
    USE(&a, ONE, NOW + 10 * SEC);
    USE(&a, ONE, NOW + 40 * SEC);
    /* the NOW+10s slice leaves at NOW+70s, not at the next whole minute */
    REFUSED(&a, ONE, NOW + 50 * SEC, QG_BLOCK_BUCKET, NOW + 70 * SEC);
    r = TAKE(&a, ONE, NOW + 70 * SEC);
    qg_quota_release(&r);
    /* the anchored one resets on the minute */
    USE(&a, AM([U_IN] = 100), NOW + 10 * SEC);
    REFUSED(&a, AM([U_IN] = 1), NOW + 20 * SEC, QG_BLOCK_BUCKET, NOW + MINUTE);
    r = TAKE(&a, AM([U_IN] = 1), NOW + MINUTE);
    qg_quota_release(&r);
    qg_qacct_free(&a);
    qg_config_free(cfg);
}

/* ---- credits ---- */

static void test_credits_expiry_probation_trial(void **state)
{
    (void)state;
    qg_bucket_cfg b[] = {CREDITS("credits", U_USD, 1, NOW + DAY)};
    qg_qacct a;
    MK(&a, b, false);
    qg_qamount est = AM([U_REQ] = 1, [U_USD] = 1000);
    qg_bucket_status s = status(&a, "credits", NOW);
    assert_int_equal(s.limit, 1000000);
    assert_int_equal(s.remaining, 1000000);
    assert_int_equal(s.reset_ms, 0); /* credits never reset */
    assert_int_equal(s.expires_ms, NOW + DAY);
    near(s.days_to_expiry, 1.0, "days_to_expiry");
    USE(&a, AM([U_REQ] = 1, [U_USD] = 400000), NOW);
    s = status(&a, "credits", NOW);
    assert_int_equal(s.used, 400000);
    assert_int_equal(s.remaining, 600000);
    assert_int_equal(s.reset_ms, 0);

    /* expiry makes it 0: reserve fails, the account is depleted for the base probation */
    int64_t t = NOW + DAY;
    s = status(&a, "credits", t);
    assert_int_equal(s.remaining, 0);
    assert_int_equal(s.alert, QG_ALERT_EXHAUSTED);
    STATE(&a, t, QG_ACCT_READY, 0, false);
    REFUSED(&a, est, t, QG_BLOCK_DEPLETED, t + QG_PROBATION_BASE_MS);
    STATE(&a, t, QG_ACCT_DEPLETED, t + QG_PROBATION_BASE_MS, false);
    REFUSED(&a, est, t + MINUTE, QG_BLOCK_DEPLETED, t + QG_PROBATION_BASE_MS); /* no second strike */
    assert_int_equal(a.probation, 1);
    /* after the probation: still depleted, and exactly one trial goes through */
    int64_t p = t + QG_PROBATION_BASE_MS;
    STATE(&a, p, QG_ACCT_DEPLETED, p, false);
    qg_qresv trial = TAKE(&a, est, p);
    assert_true(trial.trial);
    REFUSED_WHY(&a, est, p, QG_BLOCK_TRIAL);
    REFUSED_WHY(&a, est, p + SEC, QG_BLOCK_TRIAL);
    /* the trial succeeds: ready, and the configured balance no longer counts */
    qg_quota_settle(&trial, &est, p + 2 * SEC);
    qg_quota_on_success(&a, p + 2 * SEC);
    STATE(&a, p + 2 * SEC, QG_ACCT_READY, 0, false);
    assert_int_equal(a.probation, 0);
    s = status(&a, "credits", p + 3 * SEC);
    assert_int_equal(s.limit, -1);
    assert_int_equal(s.alert, QG_ALERT_OK);
    qg_qresv r1 = TAKE(&a, est, p + 3 * SEC);
    qg_qresv r2 = TAKE(&a, est, p + 3 * SEC);
    assert_false(r1.trial);
    assert_false(r2.trial);
    qg_quota_release(&r1);
    qg_quota_release(&r2);
    STATE(&a, p + 4 * SEC, QG_ACCT_READY, 0, false);
    qg_qacct_free(&a);
}

static void test_credits_spent(void **state)
{
    (void)state;
    qg_bucket_cfg b[] = {CREDITS("credits", U_USD, 1, 0)};
    qg_qacct a;
    MK(&a, b, false);
    qg_qamount est = AM([U_REQ] = 1, [U_USD] = 1000);
    USE(&a, AM([U_REQ] = 1, [U_USD] = 1000000), NOW);
    assert_int_equal(status(&a, "credits", NOW).alert, QG_ALERT_EXHAUSTED);
    int64_t t = NOW + SEC;
    REFUSED(&a, est, t, QG_BLOCK_DEPLETED, t + QG_PROBATION_BASE_MS);
    /* a failed trial doubles the probation */
    int64_t p = t + QG_PROBATION_BASE_MS;
    qg_qresv trial = TAKE(&a, est, p);
    assert_true(trial.trial);
    qg_quota_release(&trial);
    failv(&a, QG_EC_CREDITS_EXHAUSTED, 0, false, p + SEC);
    STATE(&a, p + SEC, QG_ACCT_DEPLETED, p + SEC + 2 * QG_PROBATION_BASE_MS, false);
    REFUSED(&a, est, p + 2 * SEC, QG_BLOCK_DEPLETED, p + SEC + 2 * QG_PROBATION_BASE_MS);
    /* a trial released without an answer (client gone) frees the trial for the next one */
    int64_t p2 = p + SEC + 2 * QG_PROBATION_BASE_MS;
    trial = TAKE(&a, est, p2);
    assert_true(trial.trial);
    REFUSED_WHY(&a, est, p2, QG_BLOCK_TRIAL);
    qg_quota_release(&trial);
    trial = TAKE(&a, est, p2 + SEC);
    assert_true(trial.trial);
    qg_quota_settle(&trial, &est, p2 + 2 * SEC);
    qg_quota_on_success(&a, p2 + 2 * SEC);
    STATE(&a, p2 + 2 * SEC, QG_ACCT_READY, 0, false);
    assert_int_equal(status(&a, "credits", p2 + 2 * SEC).limit, -1);
    qg_qresv r = TAKE(&a, est, p2 + 3 * SEC);
    qg_quota_release(&r);
    qg_qacct_free(&a);
}

/* Reservations in flight that fill a credit bucket do not spend it: the next request is
 * refused, but the account is not depleted (SPEC §4.2: depleted when used up). */
static void test_credits_in_flight_not_depleted(void **state)
{
    (void)state;
    qg_bucket_cfg b[] = {CREDITS("calls", U_REQ, 3, 0)};
    qg_qacct a;
    MK(&a, b, false);
    qg_qresv r[3];
    for (int i = 0; i < 3; i++) r[i] = TAKE(&a, ONE, NOW);
    REFUSED(&a, ONE, NOW, QG_BLOCK_BUCKET, 0);
    STATE(&a, NOW, QG_ACCT_READY, 0, false);
    assert_int_equal(a.probation, 0);
    qg_quota_release(&r[0]);
    r[0] = TAKE(&a, ONE, NOW + SEC);
    for (int i = 0; i < 3; i++) qg_quota_settle(&r[i], &ONE, NOW + 2 * SEC);
    /* now it is spent: that is a depletion */
    REFUSED(&a, ONE, NOW + 3 * SEC, QG_BLOCK_DEPLETED, NOW + 3 * SEC + QG_PROBATION_BASE_MS);
    qg_qacct_free(&a);

    qg_bucket_cfg c[] = {CREDITS("usd", U_USD, 1, 0)};
    MK(&a, c, false);
    USE(&a, AM([U_REQ] = 1, [U_USD] = 500000), NOW);
    qg_qresv big = TAKE(&a, AM([U_REQ] = 1, [U_USD] = 400000), NOW);
    REFUSED(&a, AM([U_REQ] = 1, [U_USD] = 400000), NOW, QG_BLOCK_BUCKET, 0);
    STATE(&a, NOW, QG_ACCT_READY, 0, false);
    qg_quota_settle(&big, &AM([U_REQ] = 1, [U_USD] = 100000), NOW + SEC);
    qg_qresv r2 = TAKE(&a, AM([U_REQ] = 1, [U_USD] = 400000), NOW + SEC);
    qg_quota_release(&r2);
    qg_qacct_free(&a);
}

/* ---- combine ---- */

static void test_combine_all(void **state)
{
    (void)state;
    qg_bucket_cfg hour = ANCHORED("hour", U_REQ, 1, HOUR, NOW + 10 * MINUTE); /* resets NOW+10m */
    qg_bucket_cfg day = ANCHORED("day", U_TOK, 100, DAY, NOW + 5 * HOUR);     /* resets NOW+5h */
    qg_bucket_cfg unknown = ANCHORED("unknown", U_REQ, -1, HOUR, 0);
    qg_qamount est = AM([U_REQ] = 1, [U_TOK] = 10);
    for (int order = 0; order < 2; order++) {
        qg_bucket_cfg b[3] = {order ? day : hour, order ? hour : day, unknown};
        qg_qacct a;
        MK(&a, b, false);
        /* both exhausted: blocked until the LATEST of their resets */
        USE(&a, AM([U_REQ] = 1, [U_TOK] = 100), NOW);
        REFUSED(&a, est, NOW + SEC, QG_BLOCK_BUCKET, NOW + 5 * HOUR);
        REFUSED(&a, est, NOW + 10 * MINUTE, QG_BLOCK_BUCKET, NOW + 5 * HOUR);
        qg_qresv r = TAKE(&a, est, NOW + 5 * HOUR);
        qg_quota_release(&r);
        qg_qacct_free(&a);
        /* only one exhausted: until its reset */
        MK(&a, b, false);
        USE(&a, AM([U_REQ] = 1, [U_TOK] = 10), NOW);
        REFUSED(&a, est, NOW + SEC, QG_BLOCK_BUCKET, NOW + 10 * MINUTE);
        qg_qacct_free(&a);
    }
    /* an unknown limit never blocks */
    qg_bucket_cfg u[] = {unknown, CREDITS("c", U_USD, -1, 0)};
    qg_qacct a;
    MK(&a, u, false);
    USE(&a, AM([U_REQ] = 1000, [U_USD] = 1000000000), NOW);
    qg_qresv r = TAKE(&a, AM([U_REQ] = 1000, [U_USD] = 1000000000), NOW + SEC);
    qg_quota_release(&r);
    STATE(&a, NOW + SEC, QG_ACCT_READY, 0, false);
    /* a header saying "none left" with a reset in the past, or none, never blocks */
    qg_rl_snapshot s = snap();
    put(&s, QG_RL_REQUESTS, 60, 0, NOW - 5 * SEC);
    put(&s, QG_RL_TOKENS, 1000, 0, 0);
    qg_quota_on_headers(&a, &s, NOW + 2 * SEC);
    r = TAKE(&a, AM([U_REQ] = 1, [U_TOK] = 10), NOW + 2 * SEC);
    qg_quota_release(&r);
    qg_qacct_free(&a);
}

static void test_combine_any(void **state)
{
    (void)state;
    qg_qacct a;
    qg_qamount usd = AM([U_REQ] = 1, [U_USD] = 1000);
    /* base plus bonus credits: one spent is not a depletion; a request draws on one pool */
    qg_bucket_cfg c[] = {CREDITS("base", U_USD, 1, 0), CREDITS("bonus", U_USD, 1, 0)};
    MK(&a, c, true);
    assert_true(a.b[0].pool && a.b[1].pool);
    USE(&a, AM([U_REQ] = 1, [U_USD] = 1000000), NOW);
    assert_int_equal(status(&a, "base", NOW).remaining, 0);
    assert_int_equal(status(&a, "bonus", NOW).remaining, 1000000);
    USE(&a, AM([U_REQ] = 1, [U_USD] = 1000000), NOW + SEC);
    assert_int_equal(status(&a, "bonus", NOW + SEC).remaining, 0);
    /* every pool spent: depleted */
    REFUSED(&a, usd, NOW + 2 * SEC, QG_BLOCK_DEPLETED, NOW + 2 * SEC + QG_PROBATION_BASE_MS);
    qg_qacct_free(&a);

    /* windows as pools: blocked only when every one is used up, until the EARLIEST reset */
    qg_bucket_cfg w[] = {ANCHORED("day", U_REQ, 1, DAY, NOW + 3 * HOUR), ANCHORED("hour", U_REQ, 1, HOUR, NOW + 20 * MINUTE)};
    MK(&a, w, true);
    USE(&a, ONE, NOW);
    USE(&a, ONE, NOW + SEC);
    REFUSED(&a, ONE, NOW + MINUTE, QG_BLOCK_BUCKET, NOW + 20 * MINUTE);
    qg_qresv r = TAKE(&a, ONE, NOW + 20 * MINUTE);
    qg_quota_release(&r);
    qg_qacct_free(&a);

    /* an expired pool next to one with room, or a pool with no known limit: never blocked */
    qg_bucket_cfg e[] = {CREDITS("old", U_USD, 5, NOW - DAY), CREDITS("new", U_USD, 5, 0)};
    MK(&a, e, true);
    r = TAKE(&a, usd, NOW);
    qg_quota_release(&r);
    qg_qacct_free(&a);
    qg_bucket_cfg n[] = {ANCHORED("hour", U_REQ, 1, HOUR, NOW + 20 * MINUTE), CREDITS("unknown", U_USD, -1, 0)};
    MK(&a, n, true);
    USE(&a, ONE, NOW);
    USE(&a, ONE, NOW + SEC);
    r = TAKE(&a, ONE, NOW + 2 * SEC);
    qg_quota_release(&r);
    qg_qacct_free(&a);

    /* rate buckets stay constraints under any: a full minute blocks though a pool has room */
    qg_bucket_cfg rc[] = {RATE("rpm", U_REQ, 1, MINUTE), CREDITS("c", U_USD, 1, 0)};
    MK(&a, rc, true);
    assert_false(a.b[0].pool);
    USE(&a, usd, NOW);
    REFUSED(&a, usd, NOW + SEC, QG_BLOCK_BUCKET, NOW + MINUTE);
    qg_qacct_free(&a);
    /* a constraint and the pools both blocked: usable only when both have room again */
    qg_bucket_cfg rw[] = {RATE("rpm", U_REQ, 1, MINUTE), ANCHORED("hour", U_REQ, 1, HOUR, NOW + 20 * MINUTE)};
    MK(&a, rw, true);
    USE(&a, ONE, NOW);
    REFUSED(&a, ONE, NOW + SEC, QG_BLOCK_BUCKET, NOW + 20 * MINUTE);
    REFUSED(&a, ONE, NOW + MINUTE, QG_BLOCK_BUCKET, NOW + 20 * MINUTE);
    qg_qacct_free(&a);
}

/* ---- reservation discipline ---- */

static void test_requests_exact(void **state)
{
    (void)state;
    qg_bucket_cfg b[] = {ANCHORED("hour", U_REQ, 3, HOUR, NOW + 30 * MINUTE),
                         ANCHORED("tok", U_TOK, 1000, HOUR, NOW + 30 * MINUTE)};
    qg_qacct a;
    MK(&a, b, false);
    qg_qresv r[4];
    for (int i = 0; i < 3; i++) r[i] = TAKE(&a, ONE, NOW);
    REFUSED(&a, ONE, NOW, QG_BLOCK_BUCKET, NOW + 30 * MINUTE);
    qg_quota_release(&r[0]);
    r[3] = TAKE(&a, ONE, NOW + SEC);
    REFUSED(&a, ONE, NOW + SEC, QG_BLOCK_BUCKET, NOW + 30 * MINUTE);
    assert_int_equal(status(&a, "hour", NOW + SEC).used, 0); /* in flight is not use */
    for (int i = 1; i < 4; i++) qg_quota_settle(&r[i], &ONE, NOW + 2 * SEC);
    assert_int_equal(status(&a, "hour", NOW + 2 * SEC).used, 3);
    assert_int_equal(a.inflight, 0);
    for (int u = 0; u < QG_UNIT_N; u++) assert_int_equal(a.reserved[u], 0);
    qg_qacct_free(&a);

    /* settle adds the actual use, not the estimate */
    MK(&a, b, false);
    qg_qresv t = TAKE(&a, AM([U_TOK] = 800), NOW);
    assert_int_equal(a.reserved[U_TOK], 800);
    qg_quota_settle(&t, &AM([U_TOK] = 100), NOW + SEC);
    assert_int_equal(a.reserved[U_TOK], 0);
    assert_int_equal(status(&a, "tok", NOW + SEC).used, 100);
    t = TAKE(&a, AM([U_TOK] = 800), NOW + 2 * SEC);
    qg_quota_release(&t);
    assert_int_equal(status(&a, "tok", NOW + 2 * SEC).used, 100); /* release adds nothing */
    qg_qacct_free(&a);

    /* model weight multiplies requests: weight 5 against a limit of 10 is two requests */
    qg_model_cfg m = {.name = "opus", .weight = 5};
    qg_qamount c;
    qg_quota_cost(&m, 10, 10, &c);
    qg_bucket_cfg w[] = {ANCHORED("hour", U_REQ, 10, HOUR, NOW + 30 * MINUTE)};
    MK(&a, w, false);
    qg_qresv x = TAKE(&a, c, NOW), y = TAKE(&a, c, NOW);
    REFUSED(&a, c, NOW, QG_BLOCK_BUCKET, NOW + 30 * MINUTE);
    REFUSED(&a, ONE, NOW, QG_BLOCK_BUCKET, NOW + 30 * MINUTE);
    qg_quota_settle(&x, &c, NOW + SEC);
    qg_quota_settle(&y, &c, NOW + SEC);
    assert_int_equal(status(&a, "hour", NOW + SEC).used, 10);
    qg_qacct_free(&a);
    /* ... while the provider's request slot counts calls */
    MK_EMPTY(&a);
    qg_rl_snapshot s = snap();
    put(&s, QG_RL_REQUESTS, 2, 2, NOW + MINUTE);
    qg_quota_on_headers(&a, &s, NOW);
    x = TAKE(&a, c, NOW);
    y = TAKE(&a, c, NOW);
    REFUSED(&a, c, NOW, QG_BLOCK_HEADER, NOW + MINUTE);
    qg_quota_settle(&x, &c, NOW + SEC);
    qg_quota_settle(&y, &c, NOW + SEC);
    assert_int_equal(status(&a, "hdr.requests", NOW + SEC).used, 2);
    qg_qacct_free(&a);
}

static void test_tokens_overshoot(void **state)
{
    (void)state;
    qg_bucket_cfg b[] = {ANCHORED("tok", U_TOK, 1000, HOUR, NOW + 30 * MINUTE)};
    qg_qacct a;
    MK(&a, b, false);
    USE(&a, AM([U_TOK] = 900), NOW);
    /* alone, a request that overshoots is admitted */
    qg_qresv big = TAKE(&a, AM([U_TOK] = 500), NOW + SEC);
    /* a second one that would not fit next to it is refused; one that fits is not */
    REFUSED(&a, AM([U_TOK] = 50), NOW + SEC, QG_BLOCK_BUCKET, NOW + 30 * MINUTE);
    qg_quota_release(&big);
    qg_qresv s1 = TAKE(&a, AM([U_TOK] = 50), NOW + 2 * SEC);
    qg_qresv s2 = TAKE(&a, AM([U_TOK] = 50), NOW + 2 * SEC); /* 900 + 50 + 50 = 1000 fits */
    REFUSED(&a, AM([U_TOK] = 1), NOW + 2 * SEC, QG_BLOCK_BUCKET, NOW + 30 * MINUTE);
    qg_quota_settle(&s1, &AM([U_TOK] = 400), NOW + 3 * SEC);
    qg_quota_settle(&s2, &AM([U_TOK] = 50), NOW + 3 * SEC);
    /* used up (overshot): refused even alone */
    qg_bucket_status st = status(&a, "tok", NOW + 3 * SEC);
    assert_int_equal(st.remaining, 0);
    assert_int_equal(st.alert, QG_ALERT_EXHAUSTED);
    REFUSED(&a, AM([U_TOK] = 1), NOW + 4 * SEC, QG_BLOCK_BUCKET, NOW + 30 * MINUTE);
    qg_qacct_free(&a);
}

/* ---- header snapshots ---- */

static void test_headers_requests(void **state)
{
    (void)state;
    qg_qacct a;
    MK_EMPTY(&a);
    assert_int_equal(a.n_b, QG_RL_N); /* one implicit bucket per slot */
    qg_rl_snapshot s = snap();
    put(&s, QG_RL_REQUESTS, 60, 0, NOW + 20 * SEC);
    qg_quota_on_headers(&a, &s, NOW);
    qg_bucket_status st = status(&a, "hdr.requests", NOW);
    assert_int_equal(st.limit, 60);
    assert_int_equal(st.remaining, 0);
    assert_int_equal(st.reset_ms, NOW + 20 * SEC);
    assert_int_equal(st.source, QG_SRC_HEADER);
    assert_string_equal(st.confidence, "high");
    REFUSED(&a, ONE, NOW, QG_BLOCK_HEADER, NOW + 20 * SEC);
    REFUSED(&a, ONE, NOW + 20 * SEC - 1, QG_BLOCK_HEADER, NOW + 20 * SEC);
    /* at the reset it is free again, without any new header */
    st = status(&a, "hdr.requests", NOW + 20 * SEC);
    assert_int_equal(st.remaining, 60);
    qg_qresv r = TAKE(&a, ONE, NOW + 20 * SEC);
    qg_quota_settle(&r, &ONE, NOW + 21 * SEC);
    assert_int_equal(status(&a, "hdr.requests", NOW + 21 * SEC).used, 1);
    /* one left: one call, not two at once */
    s = snap();
    put(&s, QG_RL_REQUESTS, 60, 1, NOW + 50 * SEC);
    qg_quota_on_headers(&a, &s, NOW + 30 * SEC);
    r = TAKE(&a, ONE, NOW + 30 * SEC);
    REFUSED(&a, ONE, NOW + 30 * SEC, QG_BLOCK_HEADER, NOW + 50 * SEC);
    qg_quota_release(&r);
    qg_qacct_free(&a);
}

static void test_headers_tokens_steer(void **state)
{
    (void)state;
    qg_qacct a;
    MK_EMPTY(&a);
    qg_rl_snapshot s = snap();
    put(&s, QG_RL_TOKENS, 10000, 500, NOW + 30 * SEC);
    qg_quota_on_headers(&a, &s, NOW);
    /* the provider says 500 left: a 2000-token request would be its 429 */
    REFUSED(&a, AM([U_REQ] = 1, [U_TOK] = 2000), NOW, QG_BLOCK_HEADER, NOW + 30 * SEC);
    qg_qresv r = TAKE(&a, AM([U_REQ] = 1, [U_TOK] = 400), NOW);
    REFUSED(&a, AM([U_REQ] = 1, [U_TOK] = 200), NOW, QG_BLOCK_HEADER, NOW + 30 * SEC);
    qg_quota_release(&r);
    /* after the reset the big one goes */
    r = TAKE(&a, AM([U_REQ] = 1, [U_TOK] = 2000), NOW + 30 * SEC);
    qg_quota_release(&r);
    qg_qacct_free(&a);
}

static void test_headers_empty_snapshot(void **state)
{
    (void)state;
    qg_qacct a;
    MK_EMPTY(&a);
    qg_rl_snapshot s = snap();
    s.e[QG_RL_REQUESTS] = (qg_rl_entry){true, 60, 0, NOW + 20 * SEC, 0};
    s.n_found = 0; /* says nothing */
    uint32_t v = a.version;
    qg_quota_on_headers(&a, &s, NOW);
    qg_quota_on_headers(&a, NULL, NOW);
    assert_int_equal(a.version, v);
    const qg_qbucket *b = &a.b[a.slot_bucket[QG_RL_REQUESTS]];
    assert_int_equal(b->h_at, 0);
    assert_int_equal(b->limit, -1);
    assert_int_equal(b->stated_reset, 0);
    qg_qresv r = TAKE(&a, ONE, NOW);
    qg_quota_release(&r);
    /* after a real snapshot, an empty one does not wipe it */
    s.n_found = 1;
    qg_quota_on_headers(&a, &s, NOW);
    qg_rl_snapshot empty = snap();
    qg_quota_on_headers(&a, &empty, NOW + SEC);
    assert_int_equal(b->h_at, NOW);
    assert_int_equal(b->h_remaining, 0);
    REFUSED(&a, ONE, NOW + SEC, QG_BLOCK_HEADER, NOW + 20 * SEC);
    qg_qacct_free(&a);
}

/* on_headers reports the slots it applied; a settlement whose response reported a slot does
 * not count into that slot's bucket again (the provider's figure already includes it). */
static void test_headers_fed_mask(void **state)
{
    (void)state;
    qg_bucket_cfg b[] = {RATE("tpm", U_TOK, 50000, MINUTE), ANCHORED("day", U_TOK, 1000000, DAY, ANCHOR_08)};
    qg_qacct a;
    MK(&a, b, false);
    qg_rl_snapshot s = snap();
    assert_int_equal(qg_quota_on_headers(&a, &s, NOW), 0);
    put(&s, QG_RL_REQUESTS, 60, 59, NOW + MINUTE);
    put(&s, QG_RL_TOKENS, 40000, 39000, NOW + MINUTE);
    qg_qamount est = AM([U_REQ] = 1, [U_TOK] = 1000);
    qg_qresv r = TAKE(&a, est, NOW);
    r.fed = qg_quota_on_headers(&a, &s, NOW + SEC); /* the response head of this request */
    assert_int_equal(r.fed, 1u << QG_RL_REQUESTS | 1u << QG_RL_TOKENS);
    qg_quota_settle(&r, &est, NOW + 2 * SEC);
    assert_int_equal(status(&a, "hdr.requests", NOW + 2 * SEC).remaining, 59);
    assert_int_equal(status(&a, "tpm", NOW + 2 * SEC).remaining, 39000);
    assert_int_equal(status(&a, "day", NOW + 2 * SEC).used, 1000); /* not fed: counted */
    /* one whose response said nothing is counted everywhere */
    r = TAKE(&a, est, NOW + 3 * SEC);
    qg_quota_settle(&r, &est, NOW + 4 * SEC);
    assert_int_equal(status(&a, "hdr.requests", NOW + 4 * SEC).remaining, 58);
    assert_int_equal(status(&a, "tpm", NOW + 4 * SEC).remaining, 38000);
    assert_int_equal(status(&a, "day", NOW + 4 * SEC).used, 2000);
    qg_qacct_free(&a);
}

static void test_headers_percent(void **state)
{
    (void)state;
    qg_qacct a;
    MK_EMPTY(&a);
    qg_rl_snapshot s = snap();
    put(&s, QG_RL_WINDOW_SHORT, QG_PERCENT_FULL, 0, NOW + 2 * HOUR);
    put(&s, QG_RL_WINDOW_LONG, QG_PERCENT_FULL, 420000, NOW + 3 * DAY);
    qg_quota_on_headers(&a, &s, NOW);
    REFUSED(&a, ONE, NOW, QG_BLOCK_HEADER, NOW + 2 * HOUR);
    qg_bucket_status st = status(&a, "hdr.window_long", NOW);
    assert_int_equal(st.ratio_ppm, 420000);
    assert_int_equal(st.reset_ms, NOW + 3 * DAY);
    assert_int_equal(st.burn_per_day, 0);
    qg_qresv r = TAKE(&a, ONE, NOW + 2 * HOUR);
    qg_quota_settle(&r, &ONE, NOW + 2 * HOUR); /* percent windows are not counted locally */
    assert_int_equal(status(&a, "hdr.window_long", NOW + 2 * HOUR).ratio_ppm, 420000);
    /* the long window used up blocks until its own reset */
    s = snap();
    put(&s, QG_RL_WINDOW_SHORT, QG_PERCENT_FULL, 580000, NOW + 7 * HOUR);
    put(&s, QG_RL_WINDOW_LONG, QG_PERCENT_FULL, 0, NOW + 3 * DAY);
    qg_quota_on_headers(&a, &s, NOW + 2 * HOUR + SEC);
    REFUSED(&a, ONE, NOW + 3 * HOUR, QG_BLOCK_HEADER, NOW + 3 * DAY);
    qg_qacct_free(&a);
}

static void test_headers_feed_configured(void **state)
{
    (void)state;
    qg_bucket_cfg b[] = {RATE("tpm", U_TOK, 50000, MINUTE), RATE("tpd", U_TOK, 1000000, DAY),
                         RATE("itpm", U_IN, 20000, MINUTE), ANCHORED("5h", U_PCT, 100, 5 * HOUR, 0)};
    qg_qacct a;
    MK(&a, b, false);
    /* four slots fed by configured buckets, three implicit ones */
    assert_int_equal(a.n_b, 4 + QG_RL_N - 4);
    assert_int_equal(a.slot_bucket[QG_RL_TOKENS], 0);
    assert_int_equal(a.slot_bucket[QG_RL_TOKENS_LONG], 1);
    assert_int_equal(a.slot_bucket[QG_RL_INPUT_TOKENS], 2);
    assert_int_equal(a.slot_bucket[QG_RL_WINDOW_SHORT], 3);
    for (size_t i = 0; i < a.n_b; i++) {
        assert_string_not_equal(a.b[i].name, "hdr.tokens");
        assert_string_not_equal(a.b[i].name, "hdr.window_short");
    }
    USE(&a, AM([U_TOK] = 100), NOW - 5 * SEC);
    qg_rl_snapshot s = snap();
    put(&s, QG_RL_TOKENS, 40000, 1000, NOW + 30 * SEC);
    put(&s, QG_RL_INPUT_TOKENS, 20000, 19000, NOW + 10 * SEC);
    put(&s, QG_RL_WINDOW_SHORT, QG_PERCENT_FULL, 250000, NOW + HOUR);
    qg_quota_on_headers(&a, &s, NOW);
    qg_bucket_status st = status(&a, "tpm", NOW);
    assert_int_equal(st.limit, 40000);     /* the provider's limit replaces the configured one */
    assert_int_equal(st.remaining, 1000);  /* its remaining replaces the local count */
    assert_int_equal(st.reset_ms, NOW + 30 * SEC);
    assert_int_equal(st.source, QG_SRC_HEADER);
    assert_int_equal(a.b[0].h_limit, 40000);
    assert_int_equal(a.b[0].h_remaining, 1000);
    assert_int_equal(a.b[0].h_reset, NOW + 30 * SEC);
    assert_int_equal(status(&a, "itpm", NOW).remaining, 19000);
    st = status(&a, "5h", NOW);
    assert_int_equal(st.ratio_ppm, 250000);
    assert_int_equal(st.source, QG_SRC_HEADER);
    REFUSED(&a, AM([U_TOK] = 2000), NOW, QG_BLOCK_HEADER, NOW + 30 * SEC);
    /* local settlements count on top of the provider's figure ... */
    USE(&a, AM([U_TOK] = 600), NOW + SEC);
    assert_int_equal(status(&a, "tpm", NOW + SEC).remaining, 400);
    /* ... and again after its reset: local counting resumes from zero */
    st = status(&a, "tpm", NOW + 31 * SEC);
    assert_int_equal(st.used, 0);
    USE(&a, AM([U_TOK] = 300), NOW + 31 * SEC);
    assert_int_equal(status(&a, "tpm", NOW + 32 * SEC).used, 300);
    USE(&a, AM([U_TOK] = 200), NOW + 40 * SEC);
    assert_int_equal(status(&a, "tpm", NOW + 41 * SEC).used, 500);
    qg_qacct_free(&a);
}

/* ---- errors and the state machine ---- */

static void test_cooling_schedule(void **state)
{
    (void)state;
    qg_qacct a;
    MK_EMPTY(&a);
    static const int64_t want[] = {2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000, 300000};
    int64_t t = NOW;
    for (size_t i = 0; i < QG_ARRAY_LEN(want); i++) {
        failv(&a, i % 2 ? QG_EC_SERVER_ERROR : QG_EC_RATE_LIMITED, 0, false, t);
        STATE(&a, t, QG_ACCT_COOLING, t + want[i], false);
        REFUSED(&a, ONE, t, QG_BLOCK_COOLING, t + want[i]);
        assert_int_equal(a.fails, (int)i + 1);
        t += want[i];
    }
    STATE(&a, t, QG_ACCT_READY, 0, false);
    qg_quota_on_success(&a, t);
    assert_int_equal(a.fails, 0);
    failv(&a, QG_EC_RATE_LIMITED, 0, false, t);
    STATE(&a, t, QG_ACCT_COOLING, t + QG_COOL_BASE_MS, false);
    qg_qacct_free(&a);

    /* a stated until: cool until exactly then */
    MK_EMPTY(&a);
    failv(&a, QG_EC_RATE_LIMITED, NOW + 37 * SEC, true, NOW);
    STATE(&a, NOW, QG_ACCT_COOLING, NOW + 37 * SEC, true);
    REFUSED(&a, ONE, NOW + 36 * SEC, QG_BLOCK_COOLING, NOW + 37 * SEC);
    /* a late success (a request sent before the 429) does not cut a stated cooling short */
    qg_quota_on_success(&a, NOW + SEC);
    STATE(&a, NOW + SEC, QG_ACCT_COOLING, NOW + 37 * SEC, true);
    STATE(&a, NOW + 37 * SEC, QG_ACCT_READY, 0, true);
    qg_qresv r = TAKE(&a, ONE, NOW + 37 * SEC);
    qg_quota_release(&r);
    failv(&a, QG_EC_SERVER_ERROR, NOW + 50 * SEC, true, NOW + 40 * SEC);
    STATE(&a, NOW + 40 * SEC, QG_ACCT_COOLING, NOW + 50 * SEC, true);
    qg_qacct_free(&a);

    /* overloaded and transient cool briefly and do not count a failure */
    MK_EMPTY(&a);
    failv(&a, QG_EC_RATE_LIMITED, 0, false, NOW);
    failv(&a, QG_EC_RATE_LIMITED, 0, false, NOW + 2 * SEC);
    assert_int_equal(a.fails, 2);
    failv(&a, QG_EC_OVERLOADED, 0, false, NOW + 6 * SEC);
    STATE(&a, NOW + 6 * SEC, QG_ACCT_COOLING, NOW + 6 * SEC + QG_COOL_BRIEF_MS, false);
    failv(&a, QG_EC_TRANSIENT, 0, false, NOW + 8 * SEC);
    STATE(&a, NOW + 8 * SEC, QG_ACCT_COOLING, NOW + 8 * SEC + QG_COOL_BRIEF_MS, false);
    failv(&a, QG_EC_TRANSIENT, NOW + 10 * SEC + 813, true, NOW + 10 * SEC);
    STATE(&a, NOW + 10 * SEC, QG_ACCT_COOLING, NOW + 10 * SEC + 813, true);
    assert_int_equal(a.fails, 2);
    failv(&a, QG_EC_RATE_LIMITED, 0, false, NOW + 11 * SEC); /* the third counted failure: 8 s */
    STATE(&a, NOW + 11 * SEC, QG_ACCT_COOLING, NOW + 19 * SEC, false);
    assert_int_equal(a.last_class, QG_EC_RATE_LIMITED);
    assert_int_equal(a.last_error_at, NOW + 11 * SEC);
    qg_qacct_free(&a);
}

static void test_window_exhausted(void **state)
{
    (void)state;
    qg_qacct a;
    /* stated and trusted: depleted until exactly then, no trial before, none needed after */
    MK_EMPTY(&a);
    failv(&a, QG_EC_WINDOW_EXHAUSTED, NOW + 3 * HOUR, true, NOW);
    STATE(&a, NOW, QG_ACCT_DEPLETED, NOW + 3 * HOUR, true);
    REFUSED(&a, ONE, NOW + 3 * HOUR - 1, QG_BLOCK_DEPLETED, NOW + 3 * HOUR);
    STATE(&a, NOW + 3 * HOUR, QG_ACCT_READY, 0, true);
    qg_qresv r1 = TAKE(&a, ONE, NOW + 3 * HOUR), r2 = TAKE(&a, ONE, NOW + 3 * HOUR);
    assert_false(r1.trial);
    assert_false(r2.trial);
    qg_quota_release(&r1);
    qg_quota_release(&r2);
    assert_int_equal(a.probation, 0);
    /* a cooling never shortens a later depletion */
    failv(&a, QG_EC_WINDOW_EXHAUSTED, NOW + 5 * HOUR, true, NOW + 4 * HOUR);
    failv(&a, QG_EC_RATE_LIMITED, 0, false, NOW + 4 * HOUR + MINUTE);
    failv(&a, QG_EC_RATE_LIMITED, NOW + 4 * HOUR + 2 * MINUTE, true, NOW + 4 * HOUR + MINUTE);
    failv(&a, QG_EC_OVERLOADED, 0, false, NOW + 4 * HOUR + MINUTE);
    STATE(&a, NOW + 4 * HOUR + MINUTE, QG_ACCT_DEPLETED, NOW + 5 * HOUR, true);
    /* a success that arrives during the depletion is an answer from before it */
    qg_quota_on_success(&a, NOW + 4 * HOUR + 2 * MINUTE);
    STATE(&a, NOW + 4 * HOUR + 2 * MINUTE, QG_ACCT_DEPLETED, NOW + 5 * HOUR, true);
    qg_qacct_free(&a);

    /* unstated, or stated but further than QG_TRUSTED_RESET_MAX_MS: bounded probation,
     * doubling per repeat, capped, then one trial */
    for (int variant = 0; variant < 3; variant++) {
        qg_errclass cls = variant == 2 ? QG_EC_AUTH_FAILED : QG_EC_WINDOW_EXHAUSTED;
        qg_acct_state want_state = variant == 2 ? QG_ACCT_AUTH_FAILED : QG_ACCT_DEPLETED;
        qg_block want_why = variant == 2 ? QG_BLOCK_AUTH : QG_BLOCK_DEPLETED;
        MK_EMPTY(&a);
        static const int64_t prob[] = {15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 4 * HOUR, 6 * HOUR, 6 * HOUR};
        int64_t t = NOW;
        for (size_t i = 0; i < QG_ARRAY_LEN(prob); i++) {
            int64_t until = variant == 1 ? t + QG_TRUSTED_RESET_MAX_MS + DAY : 0;
            failv(&a, cls, until, variant == 1, t);
            STATE(&a, t, want_state, t + prob[i], false);
            REFUSED(&a, ONE, t + prob[i] - 1, want_why, t + prob[i]);
            t += prob[i];
            STATE(&a, t, want_state, t, false); /* over, but waiting for the trial */
            qg_qresv trial = TAKE(&a, ONE, t);
            assert_true(trial.trial);
            REFUSED_WHY(&a, ONE, t, QG_BLOCK_TRIAL);
            qg_quota_release(&trial); /* the trial failed: */
        }
        /* a successful trial: ready, probation over, the next failure starts at 15 min */
        qg_qresv trial = TAKE(&a, ONE, t);
        assert_true(trial.trial);
        qg_quota_settle(&trial, &ONE, t + SEC);
        qg_quota_on_success(&a, t + SEC);
        STATE(&a, t + SEC, QG_ACCT_READY, 0, false);
        assert_int_equal(a.probation, 0);
        failv(&a, cls, 0, false, t + 2 * SEC);
        STATE(&a, t + 2 * SEC, want_state, t + 2 * SEC + QG_PROBATION_BASE_MS, false);
        qg_qacct_free(&a);
    }

    /* never past a reset the provider named (even one we do not trust as the whole answer) */
    MK_EMPTY(&a);
    failv(&a, QG_EC_WINDOW_EXHAUSTED, NOW + 5 * MINUTE, false, NOW);
    STATE(&a, NOW, QG_ACCT_DEPLETED, NOW + 5 * MINUTE, false);
    qg_qresv trial = TAKE(&a, ONE, NOW + 5 * MINUTE);
    assert_true(trial.trial);
    qg_quota_release(&trial);
    failv(&a, QG_EC_AUTH_FAILED, NOW + 10 * MINUTE, true, NOW + 6 * MINUTE); /* probation 30 min > 4 min */
    STATE(&a, NOW + 6 * MINUTE, QG_ACCT_AUTH_FAILED, NOW + 10 * MINUTE, false);
    qg_qacct_free(&a);
}

static void test_other_verdicts(void **state)
{
    (void)state;
    qg_qacct a;
    /* client_error changes nothing */
    MK_EMPTY(&a);
    failv(&a, QG_EC_RATE_LIMITED, 0, false, NOW);
    uint32_t v = a.version;
    failv(&a, QG_EC_CLIENT_ERROR, 0, false, NOW + 3 * SEC);
    failv(&a, QG_EC_NONE, 0, false, NOW + 3 * SEC);
    assert_int_equal(a.fails, 1);
    assert_int_equal(a.version, v);
    STATE(&a, NOW + 3 * SEC, QG_ACCT_READY, 0, false);
    qg_qresv r = TAKE(&a, ONE, NOW + 3 * SEC);
    qg_quota_release(&r);
    qg_qacct_free(&a);

    /* credits_exhausted marks the credit buckets used up (not the others) */
    qg_bucket_cfg b[] = {CREDITS("credits", U_USD, 5, 0), CREDITS("bonus", U_USD, -1, 0),
                         ANCHORED("day", U_REQ, 100, DAY, 0)};
    MK(&a, b, false);
    USE(&a, AM([U_REQ] = 1, [U_USD] = 1000000), NOW);
    failv(&a, QG_EC_CREDITS_EXHAUSTED, 0, false, NOW + SEC);
    qg_bucket_status s = status(&a, "credits", NOW + SEC);
    assert_int_equal(s.remaining, 0);
    assert_int_equal(s.source, QG_SRC_ERROR);
    assert_int_equal(s.updated_at, NOW + SEC);
    assert_int_equal(s.alert, QG_ALERT_EXHAUSTED);
    assert_int_equal(status(&a, "bonus", NOW + SEC).limit, -1);
    assert_int_equal(status(&a, "day", NOW + SEC).used, 1);
    STATE(&a, NOW + SEC, QG_ACCT_DEPLETED, NOW + SEC + QG_PROBATION_BASE_MS, false);
    /* enable ends it, and sets the locally exhausted balance aside */
    qg_quota_enable(&a, NOW + 2 * SEC);
    STATE(&a, NOW + 2 * SEC, QG_ACCT_READY, 0, false);
    s = status(&a, "credits", NOW + 2 * SEC);
    assert_int_equal(s.limit, -1);
    assert_int_equal(s.source, QG_SRC_OPERATOR);
    r = TAKE(&a, AM([U_REQ] = 1, [U_USD] = 1000), NOW + 2 * SEC);
    qg_quota_release(&r);
    qg_qacct_free(&a);

    /* enable also sets aside an expired balance and a spent window's local count */
    qg_bucket_cfg ew[] = {CREDITS("old", U_USD, 5, NOW - DAY), ANCHORED("day", U_REQ, 2, DAY, ANCHOR_08)};
    MK(&a, ew, false);
    qg_bucket_cfg ew2[] = {ANCHORED("day", U_REQ, 2, DAY, ANCHOR_08)};
    qg_qacct w;
    MK(&w, ew2, false);
    USE(&w, ONE, NOW);
    USE(&w, ONE, NOW);
    REFUSED(&w, ONE, NOW, QG_BLOCK_BUCKET, NOW + 6 * HOUR);
    qg_quota_enable(&w, NOW + SEC);
    qg_bucket_status ws = status(&w, "day", NOW + SEC);
    assert_int_equal(ws.remaining, 2);
    assert_int_equal(ws.source, QG_SRC_OPERATOR);
    r = TAKE(&w, ONE, NOW + SEC);
    qg_quota_release(&r);
    qg_qacct_free(&w);
    REFUSED(&a, ONE, NOW, QG_BLOCK_DEPLETED, NOW + QG_PROBATION_BASE_MS);
    qg_quota_enable(&a, NOW + SEC);
    assert_int_equal(status(&a, "old", NOW + SEC).limit, -1);
    r = TAKE(&a, ONE, NOW + SEC);
    qg_quota_release(&r);
    qg_qacct_free(&a);

    /* enable ends a cooling, a stated depletion, an auth failure and a pending trial */
    for (int k = 0; k < 4; k++) {
        MK_EMPTY(&a);
        if (k == 0) failv(&a, QG_EC_RATE_LIMITED, NOW + HOUR, true, NOW);
        if (k == 1) failv(&a, QG_EC_WINDOW_EXHAUSTED, NOW + 3 * DAY, true, NOW);
        if (k == 2) failv(&a, QG_EC_AUTH_FAILED, 0, false, NOW);
        qg_qresv t = {0};
        if (k == 3) {
            failv(&a, QG_EC_WINDOW_EXHAUSTED, 0, false, NOW - HOUR);
            t = TAKE(&a, ONE, NOW); /* the trial is out */
            assert_true(t.trial);
        }
        assert_int_not_equal(qg_quota_state(&a, NOW + SEC, NULL, NULL), QG_ACCT_READY);
        qg_quota_enable(&a, NOW + SEC);
        STATE(&a, NOW + SEC, QG_ACCT_READY, 0, false);
        assert_int_equal(a.fails, 0);
        assert_int_equal(a.probation, 0);
        qg_qresv x = TAKE(&a, ONE, NOW + SEC), y = TAKE(&a, ONE, NOW + SEC);
        qg_quota_release(&x);
        qg_quota_release(&y);
        qg_quota_release(&t);
        qg_qacct_free(&a);
    }

    /* disable blocks with until 0; failures do not move it; enable ends it */
    MK_EMPTY(&a);
    qg_quota_disable(&a, NOW);
    STATE(&a, NOW, QG_ACCT_DISABLED, 0, false);
    REFUSED(&a, ONE, NOW, QG_BLOCK_DISABLED, 0);
    failv(&a, QG_EC_WINDOW_EXHAUSTED, NOW + HOUR, true, NOW + SEC);
    failv(&a, QG_EC_RATE_LIMITED, 0, false, NOW + SEC);
    qg_quota_on_success(&a, NOW + SEC);
    STATE(&a, NOW + 2 * HOUR, QG_ACCT_DISABLED, 0, false);
    REFUSED(&a, ONE, NOW + 2 * HOUR, QG_BLOCK_DISABLED, 0);
    qg_quota_enable(&a, NOW + 2 * HOUR);
    r = TAKE(&a, ONE, NOW + 2 * HOUR);
    qg_quota_release(&r);
    qg_qacct_free(&a);
}

static void test_state_reporting(void **state)
{
    (void)state;
    qg_qacct a;
    MK_EMPTY(&a);
    STATE(&a, NOW, QG_ACCT_READY, 0, false);
    failv(&a, QG_EC_SERVER_ERROR, 0, false, NOW);
    STATE(&a, NOW + 1999, QG_ACCT_COOLING, NOW + 2000, false);
    STATE(&a, NOW + 2000, QG_ACCT_READY, 0, false);
    failv(&a, QG_EC_WINDOW_EXHAUSTED, NOW + HOUR, true, NOW + 3 * SEC);
    STATE(&a, NOW + HOUR - 1, QG_ACCT_DEPLETED, NOW + HOUR, true);
    STATE(&a, NOW + HOUR, QG_ACCT_READY, 0, true);
    failv(&a, QG_EC_SPEND_CAPPED, 0, false, NOW + 2 * HOUR);
    STATE(&a, NOW + 2 * HOUR + QG_PROBATION_BASE_MS, QG_ACCT_DEPLETED, NOW + 2 * HOUR + QG_PROBATION_BASE_MS, false);
    STATE(&a, NOW + 9 * HOUR, QG_ACCT_DEPLETED, NOW + 2 * HOUR + QG_PROBATION_BASE_MS, false);
    failv(&a, QG_EC_AUTH_FAILED, 0, false, NOW + 10 * HOUR);
    STATE(&a, NOW + 11 * HOUR, QG_ACCT_AUTH_FAILED, NOW + 10 * HOUR + 2 * QG_PROBATION_BASE_MS, false);
    qg_quota_disable(&a, NOW + 12 * HOUR);
    STATE(&a, NOW + 12 * HOUR, QG_ACCT_DISABLED, 0, false);
    qg_quota_state(&a, NOW, NULL, NULL); /* NULL outputs are allowed */
    assert_string_equal(qg_acct_state_name(QG_ACCT_AUTH_FAILED), "auth_failed");
    assert_string_equal(qg_block_name(QG_BLOCK_HEADER), "header_limit");
    assert_string_equal(qg_block_name(QG_BLOCK_TRIAL), "trial_pending");
    assert_string_equal(qg_alert_name(QG_ALERT_USE_OR_LOSE), "use_or_lose");
    assert_string_equal(qg_quota_source_name(QG_SRC_OPERATOR), "operator");
    assert_string_equal(qg_unit_name(QG_UNIT_PERCENT), "percent");
    qg_qacct_free(&a);
}

/* ---- burn rate ---- */

static void test_burn_rate(void **state)
{
    (void)state;
    qg_qacct a;
    MK_EMPTY(&a);
    USE(&a, AM([U_TOK] = 127), NOW - 6 * DAY);
    USE(&a, AM([U_TOK] = 700), NOW - 2 * DAY);
    USE(&a, AM([U_TOK] = 200), NOW - DAY - 9 * HOUR); /* yesterday 01:00 */
    USE(&a, AM([U_TOK] = 300), NOW - DAY + 13 * HOUR); /* yesterday 23:00 */
    USE(&a, AM([U_TOK] = 1000), NOW - 9 * HOUR);       /* today 01:00 */
    /* today 1000 in 10 h -> 2400/day; weights 64, 32, 16, 8, 4, 2, 1 (sum 127):
     * (2400*64 + 500*32 + 700*16 + 127*1) / 127 = 180927 / 127 = 1424 */
    assert_int_equal(qg_quota_burn_per_day(&a, QG_UNIT_TOKENS, NOW), 1424);
    assert_int_equal(qg_quota_burn_per_day(&a, QG_UNIT_REQUESTS, NOW), 0); /* no requests settled */
    assert_int_equal(qg_quota_burn_per_day(&a, QG_UNIT_USD, NOW), 0);
    /* at 23:00 today: 1000 in 23 h -> 1043 (int of 1043.47):
     * (1043*64 + 500*32 + 700*16 + 127) / 127 = 94079 / 127 = 740 */
    assert_int_equal(qg_quota_burn_per_day(&a, QG_UNIT_TOKENS, NOW + 13 * HOUR), 740);
    /* tomorrow 00:00: today empty, yesterday's 1000 weighs 32, the 6-day-old 127 is 7 days old:
     * (1000*32 + 500*16 + 700*8) / 127 = 45600 / 127 = 359 */
    assert_int_equal(qg_quota_burn_per_day(&a, QG_UNIT_TOKENS, NOW + 14 * HOUR), 359);
    qg_qacct_free(&a);

    /* the first hours of a day count as 6 h: 600 at 01:00 -> 600*24/6 = 2400 -> 2400*64/127 = 1209 */
    MK_EMPTY(&a);
    USE(&a, AM([U_TOK] = 600), NOW - 10 * HOUR + 30 * MINUTE);
    assert_int_equal(qg_quota_burn_per_day(&a, QG_UNIT_TOKENS, NOW - 9 * HOUR), 1209);
    assert_int_equal(qg_quota_burn_per_day(&a, QG_UNIT_TOKENS, NOW - 10 * HOUR + 31 * MINUTE), 1209);
    qg_qacct_free(&a);

    /* days 7 and 8 back are outside the window */
    MK_EMPTY(&a);
    USE(&a, AM([U_TOK] = 100000), NOW - 7 * DAY);
    USE(&a, AM([U_TOK] = 100000), NOW - 8 * DAY);
    assert_int_equal(qg_quota_burn_per_day(&a, QG_UNIT_TOKENS, NOW), 0);
    /* a day reused in the ring starts from zero: NOW-7d and today share a slot */
    USE(&a, AM([U_TOK] = 10), NOW);
    assert_int_equal(qg_quota_burn_per_day(&a, QG_UNIT_TOKENS, NOW), 10 * 24 / 10 * 64 / 127); /* 24*64/127 = 12 */
    qg_qacct_free(&a);
}

/* ---- alerts and status ---- */

static void test_alerts(void **state)
{
    (void)state;
    qg_qacct a;
    qg_bucket_status s;

    /* use_or_lose: $50 expiring in 2 days, $1 used yesterday (burn 1e6*32/127 = 251968/day):
     * at risk 49e6 - 2*251968 = 48496064 >= 10 % of the limit */
    qg_bucket_cfg c1[] = {CREDITS("c", U_USD, 50, NOW + 2 * DAY)};
    MK(&a, c1, false);
    USE(&a, AM([U_USD] = 1000000), NOW - DAY);
    s = status(&a, "c", NOW);
    assert_int_equal(s.limit, 50000000);
    assert_int_equal(s.used, 1000000);
    assert_int_equal(s.remaining, 49000000);
    assert_int_equal(s.ratio_ppm, 980000);
    assert_int_equal(s.burn_per_day, 251968);
    assert_int_equal(s.at_risk, 48496064);
    assert_int_equal(s.expires_ms, NOW + 2 * DAY);
    assert_int_equal(s.reset_ms, 0);
    near(s.days_to_expiry, 2.0, "days_to_expiry");
    near(s.days_left, 49000000.0 / 251968.0, "days_left");
    assert_int_equal(s.alert, QG_ALERT_USE_OR_LOSE);
    /* the same, expiring in 8 days: the loss is outside the 7-day horizon */
    qg_qacct_free(&a);
    c1[0].expires_at_ms = NOW + 8 * DAY;
    MK(&a, c1, false);
    USE(&a, AM([U_USD] = 1000000), NOW - DAY);
    s = status(&a, "c", NOW);
    assert_int_equal(s.at_risk, 49000000 - 251968 * 8);
    assert_int_equal(s.alert, QG_ALERT_OK);
    qg_qacct_free(&a);

    /* expiring in 2 days but the burn will use it: $10, $7 yesterday (burn 1763779/day),
     * room 3e6 < 2 days of burn: nothing at risk; < 7 days of burn left: topup */
    qg_bucket_cfg c2[] = {CREDITS("c", U_USD, 10, NOW + 2 * DAY)};
    MK(&a, c2, false);
    USE(&a, AM([U_USD] = 7000000), NOW - DAY);
    s = status(&a, "c", NOW);
    assert_int_equal(s.burn_per_day, 1763779);
    assert_int_equal(s.at_risk, 0);
    assert_int_equal(s.alert, QG_ALERT_TOPUP);
    qg_qacct_free(&a);

    /* topup by ratio (below 10 %), no burn */
    qg_bucket_cfg c3[] = {CREDITS("c", U_USD, 10, 0)};
    MK(&a, c3, false);
    USE(&a, AM([U_USD] = 9500000), NOW - 10 * DAY);
    s = status(&a, "c", NOW);
    assert_int_equal(s.ratio_ppm, 50000);
    assert_int_equal(s.burn_per_day, 0);
    near(s.days_left, -1, "days_left");
    near(s.days_to_expiry, -1, "days_to_expiry");
    assert_int_equal(s.alert, QG_ALERT_TOPUP);
    qg_qacct_free(&a);

    /* topup by days: $100, $40 yesterday: burn 10078740/day, 60e6 left = 5.95 days */
    qg_bucket_cfg c4[] = {CREDITS("c", U_USD, 100, 0)};
    MK(&a, c4, false);
    USE(&a, AM([U_USD] = 40000000), NOW - DAY);
    s = status(&a, "c", NOW);
    assert_int_equal(s.burn_per_day, 10078740);
    assert_int_equal(s.ratio_ppm, 600000);
    near(s.days_left, 60000000.0 / 10078740.0, "days_left");
    assert_int_equal(s.alert, QG_ALERT_TOPUP);
    qg_qacct_free(&a);

    /* watch: below 25 % */
    MK(&a, c3, false);
    USE(&a, AM([U_USD] = 8000000), NOW - 10 * DAY);
    s = status(&a, "c", NOW);
    assert_int_equal(s.ratio_ppm, 200000);
    assert_int_equal(s.alert, QG_ALERT_WATCH);
    qg_qacct_free(&a);
    /* ok: 90 % left, no burn */
    MK(&a, c3, false);
    USE(&a, AM([U_USD] = 1000000), NOW - 10 * DAY);
    s = status(&a, "c", NOW);
    assert_int_equal(s.ratio_ppm, 900000);
    assert_int_equal(s.at_risk, 0);
    assert_int_equal(s.alert, QG_ALERT_OK);
    qg_qacct_free(&a);

    /* windows: a daily window (reset in 6 h) with 20 % left and a burn that will use it: watch.
     * today 80 requests at 09:00 -> 80*24/10 = 192 -> 192*64/127 = 96/day; 6 h of that is 24 > 20 */
    qg_bucket_cfg w[] = {ANCHORED("day", U_REQ, 100, DAY, ANCHOR_08)};
    MK(&a, w, false);
    USE(&a, AM([U_REQ] = 80), NOW - HOUR);
    s = status(&a, "day", NOW);
    assert_int_equal(s.burn_per_day, 96);
    assert_int_equal(s.at_risk, 0);
    assert_int_equal(s.reset_ms, NOW + 6 * HOUR);
    assert_int_equal(s.alert, QG_ALERT_WATCH);
    qg_qacct_free(&a);
    /* the same with 10 used: burn 24*64/127 = 12/day, 3 of it by the reset: 87 lost -> use_or_lose */
    MK(&a, w, false);
    USE(&a, AM([U_REQ] = 10), NOW - HOUR);
    s = status(&a, "day", NOW);
    assert_int_equal(s.burn_per_day, 12);
    assert_int_equal(s.at_risk, 87);
    assert_int_equal(s.alert, QG_ALERT_USE_OR_LOSE);
    /* exhausted */
    USE(&a, AM([U_REQ] = 90), NOW - HOUR);
    s = status(&a, "day", NOW);
    assert_int_equal(s.remaining, 0);
    assert_int_equal(s.ratio_ppm, 0);
    assert_int_equal(s.alert, QG_ALERT_EXHAUSTED);
    qg_qacct_free(&a);

    /* rate limits lose nothing; unknown limits are ok with unknown figures */
    qg_bucket_cfg r[] = {RATE("tpm", U_TOK, 1000, MINUTE), CREDITS("bonus", U_USD, -1, 0)};
    MK(&a, r, false);
    s = status(&a, "tpm", NOW);
    assert_int_equal(s.at_risk, 0);
    assert_int_equal(s.alert, QG_ALERT_OK);
    s = status(&a, "bonus", NOW);
    assert_int_equal(s.limit, -1);
    assert_int_equal(s.remaining, -1);
    assert_int_equal(s.ratio_ppm, -1);
    assert_int_equal(s.alert, QG_ALERT_OK);
    assert_string_equal(s.confidence, "low");
    qg_qacct_free(&a);
}

/* ---- selection ---- */

static void order_of(qg_qacct *const *v, size_t n, int64_t now, const size_t *want, int line)
{
    size_t got[8];
    qg_quota_order(v, n, now, got);
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            char g[64] = "", w[64] = "";
            for (size_t j = 0; j < n; j++) {
                snprintf(g + strlen(g), sizeof g - strlen(g), "%zu ", got[j]);
                snprintf(w + strlen(w), sizeof w - strlen(w), "%zu ", want[j]);
            }
            fail_msg("line %d: order %s, want %s", line, g, w);
        }
}
#define ORDER(v, now, ...)                                                                                             \
    do {                                                                                                               \
        const size_t want_[] = {__VA_ARGS__};                                                                          \
        order_of(v, QG_ARRAY_LEN(want_), now, want_, __LINE__);                                                        \
    } while (0)

static qg_qrank rank(const qg_qacct *a, int64_t now)
{
    qg_qrank r;
    qg_quota_rank(a, now, &r);
    return r;
}

static void test_selection(void **state)
{
    (void)state;
    qg_qacct x, y, z;
    qg_qacct *v[3] = {&x, &y, &z};

    /* priority first */
    qg_bucket_cfg plain[] = {CREDITS("c", U_USD, 50, 0)};
    mk_full(&x, "x", 1, 1, false, plain, 1);
    mk_full(&y, "y", 0, 1, false, plain, 1);
    mk_full(&z, "z", 1, 1, false, plain, 1);
    ORDER(v, NOW, 1, 0, 2);
    /* ties keep config order; weight breaks them */
    y.priority = 1;
    ORDER(v, NOW, 0, 1, 2);
    y.weight = 3;
    ORDER(v, NOW, 1, 0, 2);
    qg_qacct_free(&x), qg_qacct_free(&y), qg_qacct_free(&z);

    /* expiring credits with more than the burn will use rank ahead of non-expiring ones */
    qg_bucket_cfg exp3[] = {CREDITS("c", U_USD, 50, NOW + 3 * DAY)};
    MK(&x, plain, false);
    MK(&y, exp3, false);
    assert_int_equal(rank(&x, NOW).pressure, 0);
    assert_int_equal(rank(&x, NOW).band, 10);
    /* all 50 at risk in 72 h: 1e6 ppm * 1 h / 72 h = 13888 */
    assert_int_equal(rank(&y, NOW).pressure, 13888);
    ORDER(v, NOW, 1, 0);
    qg_qacct_free(&y);
    /* ... but not when the burn will use them before they expire ($10, $7 yesterday, 2 days) */
    qg_bucket_cfg exp2[] = {CREDITS("c", U_USD, 10, NOW + 2 * DAY)};
    MK(&y, exp2, false);
    USE(&y, AM([U_USD] = 7000000), NOW - DAY);
    assert_int_equal(rank(&y, NOW).pressure, 0);
    assert_int_equal(rank(&y, NOW).band, 3);
    v[0] = &y, v[1] = &x;
    ORDER(v, NOW, 1, 0);
    v[0] = &x, v[1] = &y;
    qg_qacct_free(&x), qg_qacct_free(&y);

    /* a window about to reset with room left ranks ahead of one far from its reset */
    qg_bucket_cfg far[] = {ANCHORED("day", U_REQ, 100, DAY, NOW + 20 * HOUR)};
    qg_bucket_cfg soon[] = {ANCHORED("day", U_REQ, 100, DAY, NOW + HOUR)};
    MK(&x, far, false);
    MK(&y, soon, false);
    assert_int_equal(rank(&x, NOW).pressure, 1000000 / 20);
    assert_int_equal(rank(&y, NOW).pressure, 1000000);
    ORDER(v, NOW, 1, 0);
    /* ... with room left: used up, it has nothing to lose */
    USE(&y, AM([U_REQ] = 100), NOW - MINUTE);
    assert_int_equal(rank(&y, NOW).pressure, 0);
    assert_int_equal(rank(&y, NOW).band, 0);
    ORDER(v, NOW, 0, 1);
    qg_qacct_free(&x), qg_qacct_free(&y);

    /* combine all cap: x's credits expire sooner (1 day, pressure 1e6/24 = 41666) than y's
     * (2 days, 20833), but x's nearly spent weekly window (2 of 100 left, reset in 5 days)
     * caps what x could spend of them at 2 %: 20000/24 = 833 */
    qg_bucket_cfg capped[] = {CREDITS("c", U_USD, 50, NOW + DAY), ANCHORED("week", U_REQ, 100, 7 * DAY, NOW + 5 * DAY)};
    qg_bucket_cfg free1[] = {CREDITS("c", U_USD, 50, NOW + DAY)};
    qg_bucket_cfg free2[] = {CREDITS("c", U_USD, 50, NOW + 2 * DAY)};
    MK(&x, capped, false);
    USE(&x, AM([U_REQ] = 98), NOW - HOUR);
    MK(&y, free2, false);
    MK(&z, free1, false);
    assert_int_equal(rank(&x, NOW).pressure, 20000 * HOUR / DAY);
    assert_int_equal(rank(&y, NOW).pressure, 1000000 * HOUR / (2 * DAY));
    assert_int_equal(rank(&z, NOW).pressure, 1000000 * HOUR / DAY);
    ORDER(v, NOW, 2, 1, 0);
    qg_qacct *xy[2] = {&x, &y};
    ORDER(xy, NOW, 1, 0);
    qg_qacct_free(&x);
    /* under combine any the window is an alternative, not a cap */
    MK(&x, capped, true);
    USE(&x, AM([U_REQ] = 98), NOW - HOUR);
    assert_int_equal(rank(&x, NOW).pressure, 1000000 * HOUR / DAY);
    ORDER(xy, NOW, 0, 1);
    qg_qacct_free(&x), qg_qacct_free(&y), qg_qacct_free(&z);

    /* then more remaining; within a band, weight */
    qg_bucket_cfg c10[] = {CREDITS("c", U_USD, 10, 0)};
    MK(&x, c10, false);
    MK(&y, c10, false);
    mk_full(&z, "z", 0, 1, false, c10, 1);
    USE(&x, AM([U_USD] = 7000000), NOW - 10 * DAY); /* 30 % */
    USE(&y, AM([U_USD] = 2000000), NOW - 10 * DAY); /* 80 % */
    USE(&z, AM([U_USD] = 1500000), NOW - 10 * DAY); /* 85 %: same band as y */
    assert_int_equal(rank(&x, NOW).band, 3);
    assert_int_equal(rank(&y, NOW).band, 8);
    assert_int_equal(rank(&z, NOW).band, 8);
    ORDER(v, NOW, 1, 2, 0);
    z.weight = 2;
    ORDER(v, NOW, 2, 1, 0);
    qg_qacct_free(&x), qg_qacct_free(&y), qg_qacct_free(&z);
}

/* ---- persistence ---- */

static void same_account(const qg_qacct *a, const qg_qacct *b, bool same_stated)
{
    assert_int_equal(a->st, b->st);
    assert_int_equal(a->fails, b->fails);
    assert_int_equal(a->probation, b->probation);
    assert_int_equal(a->last_class, b->last_class);
    assert_int_equal(a->last_error_at, b->last_error_at);
    assert_int_equal(a->n_b, b->n_b);
    for (size_t i = 0; i < a->n_b; i++) {
        const qg_qbucket *x = &a->b[i], *y = &b->b[i];
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->limit, y->limit);
        assert_int_equal(x->used, y->used);
        assert_int_equal(x->mark, y->mark);
        if (same_stated) assert_int_equal(x->stated_reset, y->stated_reset);
        assert_int_equal(x->source, y->source);
        assert_int_equal(x->updated_at, y->updated_at);
        assert_int_equal(x->h_limit, y->h_limit);
        assert_int_equal(x->h_remaining, y->h_remaining);
        assert_int_equal(x->h_reset, y->h_reset);
        assert_int_equal(x->h_at, y->h_at);
        assert_true(!x->slice == !y->slice);
        for (int s = 0; x->slice && s < QG_SLIDING_SLICES; s++) {
            assert_int_equal(x->slice[s], y->slice[s]);
            if (x->slice[s]) assert_int_equal(x->slice_no[s], y->slice_no[s]);
        }
    }
    for (int d = 0; d < QG_BURN_DAYS; d++) {
        assert_int_equal(a->day_no[d], b->day_no[d]);
        for (int u = 0; u < QG_UNIT_N; u++) assert_int_equal(a->day_used[d][u], b->day_used[d][u]);
    }
}

static void same_status(const qg_qacct *a, const qg_qacct *b, int64_t now)
{
    for (size_t i = 0; i < a->n_b; i++) {
        qg_bucket_status x, y;
        qg_quota_bucket_status(a, i, now, &x);
        qg_quota_bucket_status(b, i, now, &y);
        if (x.limit != y.limit || x.used != y.used || x.remaining != y.remaining || x.reset_ms != y.reset_ms ||
            x.burn_per_day != y.burn_per_day || x.at_risk != y.at_risk || x.alert != y.alert || x.source != y.source)
            fail_msg("bucket %s at NOW%+lld: original limit %lld used %lld reset NOW%+lld alert %s, restored limit %lld "
                     "used %lld reset NOW%+lld alert %s",
                     a->b[i].name, REL(now), (long long)x.limit, (long long)x.used, REL(x.reset_ms),
                     qg_alert_name(x.alert), (long long)y.limit, (long long)y.used, REL(y.reset_ms),
                     qg_alert_name(y.alert));
    }
}

static void test_persistence(void **state)
{
    (void)state;
    qg_bucket_cfg b[] = {CREDITS("credits", U_USD, 50, NOW + 30 * DAY), FIRST_USE("5h", U_REQ, 40, 5 * HOUR),
                         RATE("tpm", U_TOK, 50000, MINUTE), ANCHORED("day", U_TOK, 1000000, DAY, ANCHOR_08)};
    qg_qacct a, r;
    MK(&a, b, false);
    USE(&a, AM([U_REQ] = 1, [U_TOK] = 1000, [U_USD] = 20000), NOW - 2 * DAY);
    USE(&a, AM([U_REQ] = 1, [U_TOK] = 2000, [U_USD] = 30000), NOW - DAY);
    USE(&a, AM([U_REQ] = 2, [U_TOK] = 500, [U_USD] = 5000), NOW - 30 * SEC);
    USE(&a, AM([U_REQ] = 1, [U_TOK] = 100, [U_USD] = 1000), NOW - 20 * SEC);
    qg_rl_snapshot s = snap();
    put(&s, QG_RL_REQUESTS, 60, 10, NOW + 20 * SEC);
    put(&s, QG_RL_WINDOW_LONG, QG_PERCENT_FULL, 400000, NOW + 4 * DAY);
    qg_quota_on_headers(&a, &s, NOW - 10 * SEC);
    failv(&a, QG_EC_RATE_LIMITED, 0, false, NOW - 5 * SEC);
    failv(&a, QG_EC_RATE_LIMITED, 0, false, NOW - 3 * SEC);
    failv(&a, QG_EC_WINDOW_EXHAUSTED, 0, false, NOW);
    STATE(&a, NOW, QG_ACCT_DEPLETED, NOW + QG_PROBATION_BASE_MS, false);
    assert_int_equal(a.fails, 2);
    assert_int_equal(a.probation, 1);

    qg_buf t1, t2;
    qg_buf_init(&t1, 0);
    qg_buf_init(&t2, 0);
    qg_quota_serialize(&a, &t1);
    MK(&r, b, false);
    assert_int_equal(qg_quota_restore(&r, t1.data, t1.len, NOW), 0);
    same_account(&a, &r, true);
    same_status(&a, &r, NOW);
    same_status(&a, &r, NOW + MINUTE);
    STATE(&r, NOW, QG_ACCT_DEPLETED, NOW + QG_PROBATION_BASE_MS, false);
    for (int u = 0; u < QG_UNIT_N; u++)
        assert_int_equal(qg_quota_burn_per_day(&a, (qg_unit)u, NOW), qg_quota_burn_per_day(&r, (qg_unit)u, NOW));
    assert_true(qg_quota_burn_per_day(&r, QG_UNIT_TOKENS, NOW) > 0);
    qg_quota_serialize(&r, &t2);
    assert_int_equal(t1.len, t2.len);
    assert_memory_equal(t1.data, t2.data, t1.len);
    /* the restored account behaves the same: probation, then one trial */
    REFUSED(&r, ONE, NOW + MINUTE, QG_BLOCK_DEPLETED, NOW + QG_PROBATION_BASE_MS);
    qg_qresv tr = TAKE(&r, ONE, NOW + QG_PROBATION_BASE_MS);
    assert_true(tr.trial);
    qg_quota_release(&tr);
    qg_qacct_free(&r);

    /* restored after the requests header's reset has passed: that reset no longer applies, and
     * the use it covered is over, exactly as in the account that never restarted */
    MK(&r, b, false);
    assert_int_equal(qg_quota_restore(&r, t1.data, t1.len, NOW + 25 * SEC), 0);
    same_account(&a, &r, false);
    same_status(&a, &r, NOW + 25 * SEC);
    qg_bucket_status st = status(&r, "hdr.requests", NOW + 25 * SEC);
    assert_int_not_equal(st.reset_ms, NOW + 20 * SEC);
    assert_int_equal(st.remaining, 60);
    assert_int_equal(status(&r, "hdr.window_long", NOW + 25 * SEC).reset_ms, NOW + 4 * DAY);
    qg_qacct_free(&r);

    /* garbage: -1 and the account is untouched and usable */
    static const char *const bad[] = {"", "garbage", "qg1 1 2", "qg1 7 0 0 0 0\n", "qg2 0 0 0 0 0\n",
                                      "\nqg1 0 0 0 0 0\n", "b credits 1 2 3 4 5 6 7 8 9 10\n"};
    for (size_t i = 0; i < QG_ARRAY_LEN(bad); i++) {
        MK(&r, b, false);
        uint32_t v = r.version;
        if (qg_quota_restore(&r, bad[i], strlen(bad[i]), NOW) != -1) fail_msg("bad[%zu] restored", i);
        assert_int_equal(r.version, v);
        STATE(&r, NOW, QG_ACCT_READY, 0, false);
        assert_int_equal(status(&r, "credits", NOW).used, 0);
        USE(&r, ONE, NOW);
        qg_qacct_free(&r);
    }
    /* garbage lines after a good first line are skipped; unknown buckets are ignored */
    const char *mixed = "qg1 0 3 0 0 0\nb nosuch 1 2 3 4 0 0 -1 -1 0 0\nxx yy\nb credits 50000000 7 0 0 1 5 -1 -1 0 0\n"
                        "s tpm 99 1 1\nd 9 1 1 1 1 1 1 1\n";
    MK(&r, b, false);
    assert_int_equal(qg_quota_restore(&r, mixed, strlen(mixed), NOW), 0);
    assert_int_equal(r.fails, 3);
    assert_int_equal(status(&r, "credits", NOW).used, 7);
    USE(&r, ONE, NOW);
    qg_qacct_free(&r);

    qg_buf_free(&t1);
    qg_buf_free(&t2);
    qg_qacct_free(&a);
}

/* Bucket names may be up to 128 characters (docs/configuration.md). */
static void test_persistence_long_names(void **state)
{
    (void)state;
    char name[129];
    memset(name, 'n', 128);
    name[128] = 0;
    qg_bucket_cfg b[] = {ANCHORED(name, U_REQ, 100, DAY, ANCHOR_08)};
    qg_qacct a, r;
    MK(&a, b, false);
    USE(&a, AM([U_REQ] = 42), NOW);
    qg_buf t;
    qg_buf_init(&t, 0);
    qg_quota_serialize(&a, &t);
    MK(&r, b, false);
    assert_int_equal(qg_quota_restore(&r, t.data, t.len, NOW), 0);
    assert_int_equal(status(&r, name, NOW).used, 42);
    same_account(&a, &r, true);
    qg_buf_free(&t);
    qg_qacct_free(&a);
    qg_qacct_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amount),
        cmocka_unit_test(test_cost),
        cmocka_unit_test(test_estimate),
        cmocka_unit_test(test_anchored_window),
        cmocka_unit_test(test_first_use_window),
        cmocka_unit_test(test_sliding_window),
        cmocka_unit_test(test_rate_buckets),
        cmocka_unit_test(test_credits_expiry_probation_trial),
        cmocka_unit_test(test_credits_spent),
        cmocka_unit_test(test_credits_in_flight_not_depleted),
        cmocka_unit_test(test_combine_all),
        cmocka_unit_test(test_combine_any),
        cmocka_unit_test(test_requests_exact),
        cmocka_unit_test(test_tokens_overshoot),
        cmocka_unit_test(test_headers_requests),
        cmocka_unit_test(test_headers_tokens_steer),
        cmocka_unit_test(test_headers_empty_snapshot),
        cmocka_unit_test(test_headers_fed_mask),
        cmocka_unit_test(test_headers_percent),
        cmocka_unit_test(test_headers_feed_configured),
        cmocka_unit_test(test_cooling_schedule),
        cmocka_unit_test(test_window_exhausted),
        cmocka_unit_test(test_other_verdicts),
        cmocka_unit_test(test_state_reporting),
        cmocka_unit_test(test_burn_rate),
        cmocka_unit_test(test_alerts),
        cmocka_unit_test(test_selection),
        cmocka_unit_test(test_persistence),
        cmocka_unit_test(test_persistence_long_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
