/*
 * test_keyquota.c — the key quota counters (keyquota.h, SPEC §4.8–4.11) on a fixed clock:
 * strict and graceful boundaries with new-api's numbers (seed-semantics §4.5), exhaustion at
 * exactly the limit, all-or-nothing reservation across the total quota and the policies,
 * settlement by difference (once, in the window admitted, not after the ring forgot it),
 * rollover and auto-resume on the request path, manual reset, the first pause record
 * winning, units, the status views, and two concurrency runs (strict and graceful).
 */
#include "testutil.h"

#include "keyquota.h"
#include "policy.h"
#include "timefmt.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#define NOW 1795341600000LL /* 2026-11-22T10:00:00Z */
#define MIN_MS 60000LL
#define ANCHOR "2026-01-01T00:00:00Z"
/* NOW is the start of a 10-minute window of ANCHOR, and 10 h into its day */
#define TEN_END (NOW + 10 * MIN_MS)
#define DAY_END (NOW + 14 * 60 * MIN_MS) /* 2026-11-23T00:00:00Z */

static int64_t at(const char *s)
{
    int64_t t = 0;
    assert_int_equal(qg_parse_rfc3339(qg_slice_of(s), &t), 0);
    return t;
}

/* A policy anchored at ANCHOR; reject, auto_resume (the config defaults) unless changed. */
static qg_policy_cfg pol(qg_period_kind kind, int64_t minutes, double limit, qg_unit unit, bool strict)
{
    return (qg_policy_cfg){.period = kind, .minutes = minutes, .limit = limit, .unit = unit, .anchor_ms = at(ANCHOR),
                           .strict = strict, .auto_resume = true};
}
static qg_policy_cfg ten_min(double limit, qg_unit unit, bool strict) { return pol(QG_PERIOD_MINUTES, 10, limit, unit, strict); }
static qg_policy_cfg daily(double limit, qg_unit unit, bool strict) { return pol(QG_PERIOD_DAILY, 0, limit, unit, strict); }

/* A cost of n input tokens without a model: 1 request, n tokens, $0. */
static qg_qamount tok(int64_t n)
{
    qg_qamount a;
    qg_quota_cost(NULL, n, 0, &a);
    return a;
}
static qg_qamount mcost(const qg_model_cfg *m, int64_t in, int64_t out)
{
    qg_qamount a;
    qg_quota_cost(m, in, out, &a);
    return a;
}
/* A cost of `weight` requests (and no tokens, no dollars). */
static qg_qamount reqs(int64_t weight)
{
    qg_model_cfg m = {.name = "w", .weight = (double)weight};
    return mcost(&m, 0, 0);
}

static int64_t used(const qg_keyq *k, int i, int64_t now)
{
    qg_kq_status s;
    assert_int_equal(qg_keyq_status(k, i, now, &s), 0);
    return s.used;
}
static bool exhausted(const qg_keyq *k, int i, int64_t now)
{
    qg_kq_status s;
    assert_int_equal(qg_keyq_status(k, i, now, &s), 0);
    return s.exhausted;
}

static void reserve_ok(qg_keyq *k, qg_qamount a, int64_t now, qg_kq_resv *r)
{
    qg_kq_refusal why;
    assert_int_equal(qg_keyq_reserve(k, &a, now, r, &why), QG_KQ_OK);
    assert_true(r->active);
}
/* Reserves and settles at once (actual = estimate). */
static void spend(qg_keyq *k, qg_qamount a, int64_t now)
{
    qg_kq_resv r;
    reserve_ok(k, a, now, &r);
    qg_keyq_settle(k, &r, &a, now);
}
static qg_kq_verdict refuse(qg_keyq *k, qg_qamount a, int64_t now, qg_kq_refusal *why)
{
    qg_kq_resv r;
    qg_kq_verdict v = qg_keyq_reserve(k, &a, now, &r, why);
    assert_int_not_equal(v, QG_KQ_OK);
    assert_false(r.active);
    return v;
}
/* the pause without the reset epoch */
static uint64_t pause_of(qg_keyq *k) { return atomic_load(&k->pause) & ((1ULL << QG_KQ_PAUSE_EPOCH_SHIFT) - 1); }
static uint64_t pause_rec(int policy, int64_t until) { return (uint64_t)until << 5 | (uint64_t)(policy + 1); }
static int64_t total_of(qg_keyq *k) { return atomic_load(&k->sh->total_committed); }

/* ---- boundaries ---- */

/* new-api: graceful at 90 of 100 admits a 60 request, settles to 150, the next is refused */
static void test_graceful_boundary(void **state)
{
    (void)state;
    qg_policy_cfg p = daily(100, QG_UNIT_TOKENS, false);
    qg_keyq *k = qg_keyq_new(&p, 1, -1);
    spend(k, tok(90), NOW);
    assert_int_equal(used(k, 0, NOW), 90);
    qg_kq_resv r;
    reserve_ok(k, tok(60), NOW + 1, &r);
    assert_int_equal(used(k, 0, NOW + 1), 150); /* the estimate is held while in flight */
    qg_qamount a = tok(60);
    assert_true(qg_keyq_settle(k, &r, &a, NOW + 2)); /* it exhausted the policy */
    assert_int_equal(used(k, 0, NOW + 2), 150);
    assert_true(exhausted(k, 0, NOW + 2));
    qg_kq_refusal why;
    assert_int_equal(refuse(k, tok(1), NOW + 3, &why), QG_KQ_POLICY_EXHAUSTED);
    assert_int_equal(why.policy, 0);
    assert_int_equal(why.reset_ms, DAY_END);
    assert_true(why.auto_resume);
    assert_int_equal(used(k, 0, NOW + 3), 150);
    assert_int_equal(pause_of(k), 0); /* on_exhausted: reject never pauses */
    free(k);
}

/* new-api: strict at 90 of 100 refuses an estimate of 60 before the call; usage stays 90 and
 * the policy is not exhausted.  The estimate must fit; the actual may still overshoot. */
static void test_strict_boundary(void **state)
{
    (void)state;
    qg_policy_cfg p = daily(100, QG_UNIT_TOKENS, true);
    qg_keyq *k = qg_keyq_new(&p, 1, -1);
    spend(k, tok(90), NOW);
    qg_kq_refusal why;
    assert_int_equal(refuse(k, tok(60), NOW + 1, &why), QG_KQ_POLICY_EXHAUSTED);
    assert_int_equal(why.policy, 0);
    assert_int_equal(why.reset_ms, DAY_END);
    assert_true(why.auto_resume);
    assert_int_equal(used(k, 0, NOW + 1), 90);
    assert_false(exhausted(k, 0, NOW + 1));
    /* 10 fits exactly; settling 30 is charged in full */
    qg_kq_resv r;
    reserve_ok(k, tok(10), NOW + 2, &r);
    assert_int_equal(used(k, 0, NOW + 2), 100);
    qg_qamount a = tok(30);
    assert_true(qg_keyq_settle(k, &r, &a, NOW + 3));
    assert_int_equal(used(k, 0, NOW + 3), 120);
    assert_int_equal(refuse(k, tok(1), NOW + 4, &why), QG_KQ_POLICY_EXHAUSTED);
    free(k);
}

/* used == limit is exhausted (new-api's >= fix), for both boundaries, whatever the estimate */
static void test_exhausted_at_exactly_the_limit(void **state)
{
    (void)state;
    for (int strict = 0; strict <= 1; strict++) {
        qg_policy_cfg p = daily(100, QG_UNIT_TOKENS, strict);
        qg_keyq *k = qg_keyq_new(&p, 1, -1);
        spend(k, tok(60), NOW);
        spend(k, tok(39), NOW);
        assert_false(exhausted(k, 0, NOW)); /* 99: one left */
        qg_kq_refusal why;
        assert_int_equal(qg_keyq_precheck(k, NOW, &why), QG_KQ_OK);
        spend(k, tok(1), NOW);
        qg_kq_status s;
        assert_int_equal(qg_keyq_status(k, 0, NOW, &s), 0);
        assert_int_equal(s.used, 100);
        assert_int_equal(s.remaining, 0);
        assert_true(s.exhausted);
        assert_int_equal(refuse(k, tok(1), NOW + 1, &why), QG_KQ_POLICY_EXHAUSTED);
        assert_int_equal(why.reset_ms, DAY_END);
        assert_int_equal(qg_keyq_precheck(k, NOW + 1, &why), QG_KQ_POLICY_EXHAUSTED);
        assert_int_equal(why.policy, 0);
        assert_int_equal(used(k, 0, NOW + 1), 100);
        free(k);
    }
    /* an exhausted strict policy refuses even an estimate of 0 (a free model on a usd
     * policy): "exhausted" means 429 until the reset, as graceful and the total quota do */
    for (int strict = 0; strict <= 1; strict++) {
        qg_policy_cfg p = daily(0.0001, QG_UNIT_USD, strict); /* 100 micro-USD */
        qg_keyq *k = qg_keyq_new(&p, 1, -1);
        qg_model_cfg priced = {.name = "priced", .weight = 1, .input_usd_per_mtok = 1};
        spend(k, mcost(&priced, 100, 0), NOW);
        assert_true(exhausted(k, 0, NOW));
        qg_kq_refusal why;
        assert_int_equal(refuse(k, tok(5), NOW + 1, &why), QG_KQ_POLICY_EXHAUSTED); /* usd estimate 0 */
        assert_int_equal(why.policy, 0);
        assert_int_equal(why.reset_ms, DAY_END);
        assert_int_equal(used(k, 0, NOW + 1), 100);
        free(k);
    }
}

/* A strict "does not fit" refusal is not an exhaustion: an on_exhausted: disable key is not
 * paused by it.  A graceful key that ran out is. */
static void test_strict_refusal_does_not_pause(void **state)
{
    (void)state;
    qg_policy_cfg p = daily(100, QG_UNIT_TOKENS, true);
    p.on_exhausted_disable = true;
    qg_keyq *k = qg_keyq_new(&p, 1, -1);
    spend(k, tok(90), NOW);
    qg_kq_refusal why;
    assert_int_equal(refuse(k, tok(60), NOW + 1, &why), QG_KQ_POLICY_EXHAUSTED);
    assert_int_equal(why.reset_ms, DAY_END);
    assert_true(why.auto_resume);
    assert_int_equal(pause_of(k), 0);
    spend(k, tok(10), NOW + 2); /* not paused: a fitting request passes, and reaches the limit */
    assert_true(exhausted(k, 0, NOW + 2));
    assert_int_equal(pause_of(k), pause_rec(0, DAY_END)); /* the settlement reaching it pauses */
    assert_int_equal(refuse(k, tok(1), NOW + 3, &why), QG_KQ_PAUSED);
    free(k);

    /* a strict policy refused because it is already spent does pause (new-api fix 6) */
    k = qg_keyq_new(&p, 1, -1);
    qg_kq_resv r;
    reserve_ok(k, tok(100), NOW, &r); /* in flight, fills it */
    assert_int_equal(refuse(k, tok(1), NOW + 1, &why), QG_KQ_POLICY_EXHAUSTED);
    assert_int_equal(why.reset_ms, DAY_END);
    assert_true(why.auto_resume);
    assert_int_equal(pause_of(k), pause_rec(0, DAY_END));
    qg_keyq_release(k, &r);
    free(k);

    /* graceful: 90 + 60 settles to 150, exhausting it; the key pauses until the reset */
    p.strict = false;
    k = qg_keyq_new(&p, 1, -1);
    spend(k, tok(90), NOW);
    reserve_ok(k, tok(60), NOW + 1, &r);
    assert_int_equal(pause_of(k), 0);
    qg_qamount a = tok(60);
    assert_true(qg_keyq_settle(k, &r, &a, NOW + 2));
    assert_int_equal(pause_of(k), pause_rec(0, DAY_END));
    assert_int_equal(refuse(k, tok(1), NOW + 3, &why), QG_KQ_PAUSED);
    assert_int_equal(why.policy, 0);
    assert_int_equal(why.reset_ms, DAY_END);
    assert_true(why.auto_resume);
    assert_int_equal(qg_keyq_precheck(k, NOW + 3, &why), QG_KQ_PAUSED);
    free(k);
}

/* ---- all or nothing ---- */

static void test_all_or_nothing_policies(void **state)
{
    (void)state;
    qg_policy_cfg ps[] = {daily(100, QG_UNIT_REQUESTS, true), ten_min(10000, QG_UNIT_TOKENS, false),
                          pol(QG_PERIOD_WEEKLY, 0, 0.001, QG_UNIT_USD, true)}; /* 1000 micro-USD */
    qg_keyq *k = qg_keyq_new(ps, 3, 5.0);
    qg_model_cfg m = {.name = "m", .weight = 2, .input_usd_per_mtok = 1, .output_usd_per_mtok = 1};
    qg_kq_resv held;
    reserve_ok(k, mcost(&m, 300, 100), NOW, &held); /* 2 requests, 400 tokens, 400 micro-USD */
    int64_t before[3] = {used(k, 0, NOW), used(k, 1, NOW), used(k, 2, NOW)};
    assert_int_equal(before[0], 2);
    assert_int_equal(before[1], 400);
    assert_int_equal(before[2], 400);
    assert_int_equal(total_of(k), 400);
    /* 700 micro-USD does not fit the third policy (400 + 700 > 1000): the first two and the
     * total quota had taken it and must have given it back */
    qg_kq_refusal why;
    assert_int_equal(refuse(k, mcost(&m, 500, 200), NOW + 1, &why), QG_KQ_POLICY_EXHAUSTED);
    assert_int_equal(why.policy, 2);
    for (int i = 0; i < 3; i++) assert_int_equal(used(k, i, NOW + 1), before[i]);
    assert_int_equal(total_of(k), 400);
    free(k);
}

/* A spent middle policy refuses after the first took its share (given back), and the total
 * quota, reserved before any policy, refusing first takes nothing at all. */
static void test_all_or_nothing_order(void **state)
{
    (void)state;
    qg_policy_cfg ps[] = {daily(100, QG_UNIT_REQUESTS, true), ten_min(500, QG_UNIT_TOKENS, false),
                          pol(QG_PERIOD_WEEKLY, 0, 0.001, QG_UNIT_USD, true)};
    qg_keyq *k = qg_keyq_new(ps, 3, 0.002); /* total 2000 micro-USD */
    qg_model_cfg m = {.name = "m", .weight = 3, .input_usd_per_mtok = 1, .output_usd_per_mtok = 1};
    spend(k, mcost(&m, 400, 100), NOW); /* 3 requests, 500 tokens (graceful: now spent), 500 micro-USD */
    assert_true(exhausted(k, 1, NOW));
    qg_kq_refusal why;
    assert_int_equal(refuse(k, mcost(&m, 1, 0), NOW + 1, &why), QG_KQ_POLICY_EXHAUSTED);
    assert_int_equal(why.policy, 1);
    assert_int_equal(why.reset_ms, TEN_END);
    assert_int_equal(used(k, 0, NOW + 1), 3);
    assert_int_equal(used(k, 1, NOW + 1), 500);
    assert_int_equal(used(k, 2, NOW + 1), 500);
    assert_int_equal(total_of(k), 500);

    /* in the next 10-minute window the tokens policy is empty again */
    int64_t t = NOW + 10 * MIN_MS;
    spend(k, mcost(&m, 100, 0), t); /* 3, 100, 100 */
    assert_int_equal(total_of(k), 600);
    /* 1500 micro-USD: the total (600 + 1500 > 2000) refuses first; nothing is taken */
    int64_t before[3] = {used(k, 0, t), used(k, 1, t), used(k, 2, t)};
    assert_int_equal(refuse(k, mcost(&m, 1500, 0), t + 1, &why), QG_KQ_QUOTA_EXHAUSTED);
    assert_int_equal(why.policy, -1);
    assert_int_equal(why.reset_ms, 0);
    assert_false(why.auto_resume);
    for (int i = 0; i < 3; i++) assert_int_equal(used(k, i, t + 1), before[i]);
    assert_int_equal(before[0], 6);
    assert_int_equal(before[1], 100);
    assert_int_equal(before[2], 600);
    assert_int_equal(total_of(k), 600);
    free(k);
}

/* ---- settlement ---- */

static void test_settle_by_difference(void **state)
{
    (void)state;
    qg_policy_cfg p = daily(1000, QG_UNIT_TOKENS, true);
    qg_keyq *k = qg_keyq_new(&p, 1, -1);
    qg_kq_resv r;
    qg_qamount a;
    /* under the estimate: the rest is given back */
    reserve_ok(k, tok(100), NOW, &r);
    assert_int_equal(used(k, 0, NOW), 100);
    a = tok(30);
    assert_false(qg_keyq_settle(k, &r, &a, NOW));
    assert_false(r.active);
    assert_int_equal(used(k, 0, NOW), 30);
    free(k);

    /* over the estimate: charged in full */
    k = qg_keyq_new(&p, 1, -1);
    reserve_ok(k, tok(100), NOW, &r);
    a = tok(250);
    assert_false(qg_keyq_settle(k, &r, &a, NOW));
    assert_int_equal(used(k, 0, NOW), 250);
    free(k);

    /* release: nothing charged */
    k = qg_keyq_new(&p, 1, -1);
    reserve_ok(k, tok(100), NOW, &r);
    qg_keyq_release(k, &r);
    assert_false(r.active);
    assert_int_equal(used(k, 0, NOW), 0);
    free(k);
}

/* exactly one end per reservation: a second settle, or a release after it, changes nothing */
static void test_settle_only_once(void **state)
{
    (void)state;
    qg_policy_cfg p = daily(1000, QG_UNIT_TOKENS, true);
    qg_keyq *k = qg_keyq_new(&p, 1, 10.0);
    qg_model_cfg m = {.name = "m", .weight = 1, .input_usd_per_mtok = 1};
    qg_kq_resv other, r;
    reserve_ok(k, mcost(&m, 200, 0), NOW, &other); /* someone else's, in flight */
    reserve_ok(k, mcost(&m, 100, 0), NOW, &r);
    qg_qamount a = mcost(&m, 30, 0);
    qg_keyq_settle(k, &r, &a, NOW);
    assert_int_equal(used(k, 0, NOW), 230);
    assert_int_equal(total_of(k), 230);
    qg_kq_resv copy = r;
    assert_false(qg_keyq_settle(k, &r, &a, NOW)); /* no second refund of 70 */
    a = mcost(&m, 0, 0);
    qg_keyq_settle(k, &copy, &a, NOW);
    assert_int_equal(used(k, 0, NOW), 230);
    assert_int_equal(total_of(k), 230);
    qg_keyq_release(k, &r); /* release after settle: nothing */
    assert_int_equal(used(k, 0, NOW), 230);
    assert_int_equal(total_of(k), 230);
    /* settle after release: nothing either */
    qg_keyq_release(k, &other);
    assert_int_equal(used(k, 0, NOW), 30);
    a = mcost(&m, 500, 0);
    assert_false(qg_keyq_settle(k, &other, &a, NOW));
    qg_keyq_release(k, &other);
    assert_int_equal(used(k, 0, NOW), 30);
    assert_int_equal(total_of(k), 30);
    /* a refused reservation is inactive: ending it changes nothing */
    qg_kq_refusal why;
    qg_kq_resv refused;
    assert_int_equal(qg_keyq_reserve(k, (qg_qamount[]){mcost(&m, 5000, 0)}, NOW, &refused, &why), QG_KQ_POLICY_EXHAUSTED);
    qg_keyq_release(k, &refused);
    assert_false(qg_keyq_settle(k, &refused, &a, NOW));
    assert_int_equal(used(k, 0, NOW), 30);
    assert_int_equal(total_of(k), 30);
    free(k);
}

/* a settlement after the reset is charged to the window it was admitted in */
static void test_settle_across_reset(void **state)
{
    (void)state;
    qg_policy_cfg p = ten_min(100, QG_UNIT_TOKENS, false);
    p.on_exhausted_disable = true;
    qg_keyq *k = qg_keyq_new(&p, 1, -1);
    int64_t old_t = NOW + 5 * MIN_MS, new_t = NOW + 11 * MIN_MS;
    qg_kq_resv r_old, r_old2, r_new;
    reserve_ok(k, tok(40), old_t, &r_old);
    reserve_ok(k, tok(10), old_t, &r_old2);
    assert_int_equal(used(k, 0, old_t), 50);
    assert_int_equal(used(k, 0, new_t), 0); /* rolled over */
    qg_qamount a = tok(70);
    qg_keyq_settle(k, &r_old, &a, new_t);
    assert_int_equal(used(k, 0, new_t), 0);  /* the new window is not charged */
    assert_int_equal(used(k, 0, old_t), 80); /* the old one is: 50 - 40 + 70 */
    /* a reservation in the new window is not affected by late settlements */
    reserve_ok(k, tok(20), new_t, &r_new);
    assert_int_equal(used(k, 0, new_t), 20);
    qg_keyq_release(k, &r_old2); /* a late release refunds the old window, not the new */
    assert_int_equal(used(k, 0, new_t), 20);
    assert_int_equal(used(k, 0, old_t), 70);
    /* a late settlement exhausting the old window does not pause the key */
    qg_kq_resv r_old3;
    reserve_ok(k, tok(1), old_t, &r_old3);
    a = tok(500);
    qg_keyq_settle(k, &r_old3, &a, new_t + 1);
    assert_true(exhausted(k, 0, old_t));
    assert_int_equal(pause_of(k), 0);
    assert_int_equal(used(k, 0, new_t + 1), 20);
    qg_keyq_settle(k, &r_new, (qg_qamount[]){tok(25)}, new_t + 2);
    assert_int_equal(used(k, 0, new_t + 2), 25);
    free(k);
}

/* A manual reset and the requests in flight across it: a settlement lands wholly before the
 * reset or wholly after it, and says which generation it was charged to (the store merges by
 * it, ledger.c). */
static void test_reset_and_requests_in_flight(void **state)
{
    (void)state;
    qg_policy_cfg p = ten_min(100, QG_UNIT_TOKENS, false);
    p.on_exhausted_disable = true;
    p.auto_resume = false;
    qg_keyq *k = qg_keyq_new(&p, 1, -1);
    qg_kq_reset done;
    /* a reset of a window nothing used yet: generation 1, epoch 1 */
    qg_keyq_reset(k, NOW, &done);
    assert_int_equal(done.n, 1);
    assert_int_equal(done.gen[0], 1);
    assert_int_equal(done.epoch, 1);
    assert_int_equal(done.policy[0], k->p[0].signature);
    qg_window w;
    assert_int_equal(qg_policy_window(&p, NOW, &w), 0);
    assert_int_equal(done.window[0], w.index);
    /* in flight across a reset: its estimate is wiped, its whole use charged afresh */
    qg_kq_resv r1, r2, r3;
    reserve_ok(k, tok(10), NOW, &r1);
    assert_int_equal(r1.gen[0], 1);
    qg_keyq_reset(k, NOW + 1, &done);
    assert_int_equal(done.gen[0], 2);
    assert_int_equal(done.epoch, 2);
    assert_int_equal(used(k, 0, NOW + 1), 0);
    qg_qamount a = tok(7);
    qg_keyq_settle(k, &r1, &a, NOW + 2);
    assert_int_equal(r1.gen[0], 2); /* charged to the fresh count */
    assert_int_equal(used(k, 0, NOW + 2), 7);
    /* admitted after it: settles by the difference, in that generation */
    reserve_ok(k, tok(20), NOW + 3, &r2);
    assert_int_equal(r2.gen[0], 2);
    a = tok(5);
    qg_keyq_settle(k, &r2, &a, NOW + 4);
    assert_int_equal(r2.gen[0], 2);
    assert_int_equal(used(k, 0, NOW + 4), 12);
    /* released after a reset: nothing to give back (the reset took it) */
    reserve_ok(k, tok(30), NOW + 5, &r3);
    assert_int_equal(used(k, 0, NOW + 5), 42);
    qg_keyq_reset(k, NOW + 6, &done);
    reserve_ok(k, tok(4), NOW + 6, &r2);
    qg_keyq_release(k, &r3);
    assert_int_equal(used(k, 0, NOW + 6), 4);
    qg_keyq_release(k, &r2);
    assert_int_equal(used(k, 0, NOW + 6), 0);
    /* the pause: the reset epoch rides in its word; a pause after a reset is of that epoch */
    spend(k, tok(100), NOW + 7);
    int64_t until;
    uint32_t epoch;
    assert_int_equal(qg_keyq_pause_info(k, &until, &epoch), k->p[0].signature);
    assert_int_equal(until, 0);
    assert_int_equal(epoch, 3);
    qg_keyq_reset(k, NOW + 8, &done);
    assert_int_equal(qg_keyq_pause_info(k, &until, &epoch), 0);
    assert_int_equal(epoch, 4);
    /* an edit keeps the epoch; a restart restores it and the window's generation */
    qg_keyq *v2 = qg_keyq_new_from(k, &p, 1, -1);
    assert_int_equal(qg_keyq_pause_info(v2, &until, &epoch), 0);
    assert_int_equal(epoch, 4);
    qg_keyq *fresh = qg_keyq_new(&p, 1, -1);
    qg_keyq_restore_window(fresh, 0, w.index, 9, 3, NOW);
    qg_keyq_restore_pause(fresh, -1, 0, 4);
    reserve_ok(fresh, tok(1), NOW, &r1);
    assert_int_equal(r1.gen[0], 3);
    assert_int_equal(used(fresh, 0, NOW), 10);
    assert_int_equal(qg_keyq_pause_info(fresh, &until, &epoch), 0);
    assert_int_equal(epoch, 4);
    qg_keyq_reset(fresh, NOW, &done);
    assert_int_equal(done.gen[0], 4);
    assert_int_equal(done.epoch, 5);
    free(fresh), free(v2), free(k);
}

/* Resets racing settlements on other threads: whatever the interleaving, the window holds
 * exactly the uses charged to its final generation (what the store keeps). */
#define RACE_THREADS 3
typedef struct {
    qg_keyq *k;
    _Atomic bool *stop;
    int64_t charged[64]; /* per generation: the uses settled into it */
    int64_t n;
} racer;

static void *settle_loop(void *arg)
{
    racer *x = arg;
    for (int i = 0; !atomic_load(x->stop); i++, x->n++) {
        qg_kq_resv r;
        qg_kq_refusal why;
        qg_qamount est = tok(1 + i % 13), act = tok(i % 7);
        if (qg_keyq_reserve(x->k, &est, NOW, &r, &why) != QG_KQ_OK) fail_msg("refused");
        if (i % 5 == 0) {
            qg_keyq_release(x->k, &r);
            continue;
        }
        qg_keyq_settle(x->k, &r, &act, NOW);
        x->charged[r.gen[0]] += i % 7;
    }
    return NULL;
}

static void test_reset_races_settlements(void **state)
{
    (void)state;
    qg_policy_cfg p = ten_min(1e12, QG_UNIT_TOKENS, false);
    qg_keyq *k = qg_keyq_new(&p, 1, -1);
    static racer xs[RACE_THREADS];
    pthread_t th[RACE_THREADS];
    _Atomic bool stop = false;
    for (int t = 0; t < RACE_THREADS; t++) {
        xs[t] = (racer){.k = k, .stop = &stop};
        assert_int_equal(pthread_create(&th[t], NULL, settle_loop, &xs[t]), 0);
    }
    qg_kq_reset done = {0};
    int resets = 0;
    for (int i = 0; i < 60; i++, resets++) { /* under 64: a generation is not reused */
        usleep(300);
        qg_keyq_reset(k, NOW, &done);
    }
    atomic_store(&stop, true);
    int64_t n = 0;
    for (int t = 0; t < RACE_THREADS; t++) pthread_join(th[t], NULL), n += xs[t].n;
    assert_true(n > 600); /* settlements ran between the resets */
    int64_t want = 0;
    for (int t = 0; t < RACE_THREADS; t++) want += xs[t].charged[done.gen[0]];
    assert_int_equal(used(k, 0, NOW), want);
    assert_int_equal(done.gen[0], resets);
    assert_int_equal(atomic_load(&k->sh->inflight), 0);
    free(k);
}

/* a settlement more than QG_KQ_SLOTS windows late changes nothing */
static void test_settle_too_late(void **state)
{
    (void)state;
    qg_policy_cfg p = ten_min(100, QG_UNIT_TOKENS, true);
    qg_keyq *k = qg_keyq_new(&p, 1, -1);
    qg_kq_resv ra, rb, rc;
    reserve_ok(k, tok(5), NOW, &ra);
    reserve_ok(k, tok(7), NOW, &rb);
    /* QG_KQ_SLOTS windows later the same slot holds a new window */
    int64_t t = NOW + QG_KQ_SLOTS * 10 * MIN_MS;
    assert_int_equal(used(k, 0, t), 0); /* the stale 12 is not this window's */
    reserve_ok(k, tok(3), t, &rc);
    assert_int_equal(used(k, 0, t), 3);
    qg_qamount a = tok(50);
    qg_keyq_settle(k, &ra, &a, t + MIN_MS);
    assert_int_equal(used(k, 0, t + MIN_MS), 3);
    qg_keyq_release(k, &rb); /* would take 7 from the 3 if the window were not checked */
    assert_int_equal(used(k, 0, t + MIN_MS), 3);
    assert_false(ra.active || rb.active);
    /* no reservation meanwhile: the stale slot may take the late settlement, but the window
     * that is current then does not see it */
    qg_kq_resv rd;
    int64_t t2 = t + 10 * MIN_MS;
    reserve_ok(k, tok(5), t2, &rd);
    int64_t t3 = t2 + QG_KQ_SLOTS * 10 * MIN_MS;
    a = tok(60);
    qg_keyq_settle(k, &rd, &a, t3);
    assert_int_equal(used(k, 0, t3), 0);
    qg_kq_resv full;
    reserve_ok(k, tok(100), t3, &full); /* the whole limit fits */
    assert_int_equal(used(k, 0, t3), 100);
    qg_keyq_release(k, &rc);
    qg_keyq_release(k, &full);
    free(k);
}

/* ---- rollover ---- */

static void test_rollover_on_request_path(void **state)
{
    (void)state;
    qg_policy_cfg p = ten_min(3, QG_UNIT_REQUESTS, true);
    qg_keyq *k = qg_keyq_new(&p, 1, -1);
    for (int i = 0; i < 3; i++) spend(k, reqs(1), NOW + i);
    qg_kq_refusal why;
    assert_int_equal(refuse(k, reqs(1), TEN_END - 1, &why), QG_KQ_POLICY_EXHAUSTED);
    assert_int_equal(why.reset_ms, TEN_END);
    /* the reset instant belongs to the next window: admitted, no timer ran */
    spend(k, reqs(1), TEN_END);
    assert_int_equal(used(k, 0, TEN_END), 1);
    assert_int_equal(used(k, 0, TEN_END - 1), 3);
    /* QG_KQ_SLOTS windows on, window k's slot (still holding 3) is recycled */
    qg_window w0, w4;
    assert_int_equal(qg_policy_window(&p, NOW, &w0), 0);
    int64_t t = NOW + QG_KQ_SLOTS * 10 * MIN_MS;
    assert_int_equal(qg_policy_window(&p, t, &w4), 0);
    assert_int_equal(w4.index, w0.index + QG_KQ_SLOTS);
    uint64_t stale = atomic_load(&k->p[0].slot[(uint64_t)w0.index % QG_KQ_SLOTS]);
    assert_int_equal(stale & QG_KQ_AMOUNT_MAX, 3);
    assert_int_equal(used(k, 0, t), 0);
    for (int i = 0; i < 3; i++) spend(k, reqs(1), t + i);
    assert_int_equal(refuse(k, reqs(1), t + 3, &why), QG_KQ_POLICY_EXHAUSTED);
    uint64_t fresh = atomic_load(&k->p[0].slot[(uint64_t)w4.index % QG_KQ_SLOTS]);
    assert_int_equal(fresh >> (QG_KQ_GEN_BITS + QG_KQ_AMOUNT_BITS), (uint64_t)w4.index & ((1u << QG_KQ_TAG_BITS) - 1));
    assert_int_equal(fresh & QG_KQ_AMOUNT_MAX, 3);
    free(k);
}

/* ---- pause ---- */

static void test_pause_auto_resume(void **state)
{
    (void)state;
    qg_policy_cfg p = ten_min(2, QG_UNIT_REQUESTS, true);
    p.on_exhausted_disable = true;
    qg_keyq *k = qg_keyq_new(&p, 1, -1);
    qg_kq_resv r1, r2;
    reserve_ok(k, reqs(1), NOW, &r1);
    reserve_ok(k, reqs(1), NOW, &r2);
    qg_kq_refusal why;
    /* the refusal that finds it spent pauses the key */
    assert_int_equal(refuse(k, reqs(1), NOW + MIN_MS, &why), QG_KQ_POLICY_EXHAUSTED);
    assert_int_equal(why.policy, 0);
    assert_int_equal(why.reset_ms, TEN_END);
    assert_true(why.auto_resume);
    assert_int_equal(pause_of(k), pause_rec(0, TEN_END));
    assert_int_equal(refuse(k, reqs(1), NOW + 2 * MIN_MS, &why), QG_KQ_PAUSED);
    assert_int_equal(why.policy, 0);
    assert_int_equal(why.reset_ms, TEN_END);
    assert_true(why.auto_resume);
    qg_keyq_release(k, &r1); /* room again, but the key stays paused until the reset */
    assert_int_equal(refuse(k, reqs(1), NOW + 3 * MIN_MS, &why), QG_KQ_PAUSED);
    qg_keyq_settle(k, &r2, (qg_qamount[]){reqs(1)}, NOW + 3 * MIN_MS);
    assert_int_equal(refuse(k, reqs(1), TEN_END - 1, &why), QG_KQ_PAUSED);
    assert_int_equal(qg_keyq_precheck(k, TEN_END - 1, &why), QG_KQ_PAUSED);
    /* at the reset instant it resumes by itself, and the new window is empty */
    assert_int_equal(used(k, 0, TEN_END), 0);
    spend(k, reqs(1), TEN_END);
    assert_int_equal(pause_of(k), 0);
    assert_int_equal(used(k, 0, TEN_END), 1);
    assert_int_equal(used(k, 0, TEN_END - 1), 1); /* the old window keeps what was settled */
    free(k);

    /* precheck alone (no request reserved yet) also ends a pause whose time has come */
    k = qg_keyq_new(&p, 1, -1);
    spend(k, reqs(2), NOW);
    assert_int_equal(pause_of(k), pause_rec(0, TEN_END));
    assert_int_equal(qg_keyq_precheck(k, TEN_END, &why), QG_KQ_OK);
    assert_int_equal(pause_of(k), 0);
    free(k);
}

static void test_pause_manual_reset(void **state)
{
    (void)state;
    qg_policy_cfg ps[] = {ten_min(2, QG_UNIT_REQUESTS, true), daily(100, QG_UNIT_REQUESTS, true)};
    ps[0].on_exhausted_disable = true;
    ps[0].auto_resume = false;
    qg_model_cfg m = {.name = "m", .weight = 1, .input_usd_per_mtok = 1};
    qg_keyq *k = qg_keyq_new(ps, 2, 1.0);
    spend(k, mcost(&m, 10, 0), NOW);
    spend(k, mcost(&m, 10, 0), NOW); /* settling the second reaches the limit: paused */
    assert_int_equal(pause_of(k), pause_rec(0, 0));
    qg_kq_refusal why;
    assert_int_equal(refuse(k, reqs(1), NOW + 2, &why), QG_KQ_PAUSED);
    assert_int_equal(why.policy, 0);
    assert_int_equal(why.reset_ms, 0);
    assert_false(why.auto_resume);
    /* the window rolls (twice): still paused, still no reset known */
    int64_t t = NOW + 25 * MIN_MS;
    assert_int_equal(used(k, 0, t), 0);
    assert_int_equal(refuse(k, reqs(1), t, &why), QG_KQ_PAUSED);
    assert_int_equal(why.reset_ms, 0);
    assert_false(why.auto_resume);
    assert_int_equal(qg_keyq_precheck(k, t, &why), QG_KQ_PAUSED);
    /* manual reset: current windows zeroed, the pause ends, the total quota is kept */
    assert_int_equal(used(k, 1, t), 2);
    assert_int_equal(total_of(k), 20);
    qg_kq_reset done;
    qg_keyq_reset(k, t, &done);
    assert_int_equal(pause_of(k), 0);
    assert_int_equal(used(k, 1, t), 0);
    assert_int_equal(total_of(k), 20);
    spend(k, reqs(1), t);
    spend(k, reqs(1), t);
    assert_int_equal(pause_of(k), pause_rec(0, 0)); /* spent again, paused again */
    assert_int_equal(refuse(k, reqs(1), t + 1, &why), QG_KQ_PAUSED);
    assert_int_equal(used(k, 0, t + 1), 2);
    qg_keyq_reset(k, t + 2, &done); /* the current window of the paused policy itself */
    assert_int_equal(used(k, 0, t + 2), 0);
    assert_int_equal(used(k, 1, t + 2), 0);
    assert_int_equal(pause_of(k), 0);
    spend(k, reqs(1), t + 3);
    assert_int_equal(used(k, 0, t + 3), 1);
    free(k);
}

/* a second policy exhausting while the key is paused does not replace the pause record */
static void test_pause_first_record_wins(void **state)
{
    (void)state;
    qg_policy_cfg ps[] = {ten_min(2, QG_UNIT_REQUESTS, true), daily(3, QG_UNIT_REQUESTS, true)};
    ps[0].on_exhausted_disable = true;
    ps[1].on_exhausted_disable = true;
    ps[1].auto_resume = false;
    qg_keyq *k = qg_keyq_new(ps, 2, -1);
    qg_kq_resv r1, r2;
    reserve_ok(k, reqs(1), NOW, &r1);
    reserve_ok(k, reqs(1), NOW, &r2);
    assert_true(qg_keyq_settle(k, &r1, (qg_qamount[]){reqs(1)}, NOW + 1)); /* policy 0 at 2 of 2 */
    assert_int_equal(pause_of(k), pause_rec(0, TEN_END));
    assert_true(qg_keyq_settle(k, &r2, (qg_qamount[]){reqs(2)}, NOW + 2)); /* policy 1 at 3 of 3 */
    assert_true(exhausted(k, 1, NOW + 2));
    assert_int_equal(pause_of(k), pause_rec(0, TEN_END)); /* the first record stays */
    qg_kq_refusal why;
    assert_int_equal(refuse(k, reqs(1), NOW + 3, &why), QG_KQ_PAUSED);
    assert_int_equal(why.policy, 0);
    assert_int_equal(why.reset_ms, TEN_END);
    assert_true(why.auto_resume);
    /* when that pause ends the daily policy is still spent, and now it pauses the key */
    assert_int_equal(refuse(k, reqs(1), TEN_END, &why), QG_KQ_POLICY_EXHAUSTED);
    assert_int_equal(why.policy, 1);
    assert_int_equal(why.reset_ms, 0);
    assert_false(why.auto_resume);
    assert_int_equal(pause_of(k), pause_rec(1, 0));
    assert_int_equal(refuse(k, reqs(1), DAY_END, &why), QG_KQ_PAUSED); /* manual reset only */
    assert_int_equal(why.policy, 1);
    free(k);
}

/* ---- total quota and units ---- */

static void test_total_quota_usd(void **state)
{
    (void)state;
    qg_keyq *k = qg_keyq_new(NULL, 0, 1.0);
    assert_int_equal(k->total_limit, 1000000);
    qg_model_cfg m = {.name = "m", .weight = 1, .input_usd_per_mtok = 1, .output_usd_per_mtok = 4};
    qg_kq_resv r1, r2;
    reserve_ok(k, mcost(&m, 100000, 200000), NOW, &r1); /* $0.90 */
    assert_int_equal(r1.total, 900000);
    assert_int_equal(total_of(k), 900000);
    qg_kq_refusal why;
    assert_int_equal(refuse(k, mcost(&m, 100000, 200000), NOW, &why), QG_KQ_QUOTA_EXHAUSTED);
    assert_int_equal(why.policy, -1);
    assert_int_equal(why.reset_ms, 0);
    assert_false(why.auto_resume);
    assert_int_equal(total_of(k), 900000);
    qg_keyq_settle(k, &r1, (qg_qamount[]){mcost(&m, 10000, 20000)}, NOW); /* actual $0.09 */
    assert_int_equal(total_of(k), 90000);
    reserve_ok(k, mcost(&m, 100000, 200000), NOW, &r2);
    assert_int_equal(total_of(k), 990000);
    assert_int_equal(refuse(k, mcost(&m, 10000, 2000), NOW, &why), QG_KQ_QUOTA_EXHAUSTED); /* 18000 > 10000 left */
    assert_int_equal(qg_keyq_precheck(k, NOW, &why), QG_KQ_OK);
    qg_keyq_settle(k, &r2, (qg_qamount[]){mcost(&m, 110000, 200000)}, NOW); /* 910000: exactly $1 */
    assert_int_equal(total_of(k), 1000000);
    assert_int_equal(refuse(k, tok(10), NOW, &why), QG_KQ_QUOTA_EXHAUSTED); /* spent: even $0 is refused */
    assert_int_equal(qg_keyq_precheck(k, NOW, &why), QG_KQ_QUOTA_EXHAUSTED);
    assert_int_equal(why.policy, -1);
    free(k);

    /* no total quota: anything goes */
    k = qg_keyq_new(NULL, 0, -1);
    assert_int_equal(k->total_limit, -1);
    qg_kq_resv r;
    reserve_ok(k, mcost(&m, 1000000000, 1000000000), NOW, &r);
    qg_keyq_release(k, &r);
    free(k);
}

static void test_units(void **state)
{
    (void)state;
    qg_policy_cfg ps[] = {daily(10, QG_UNIT_REQUESTS, true), daily(5000, QG_UNIT_TOKENS, true), daily(0.01, QG_UNIT_USD, true)};
    qg_model_cfg m = {.name = "m", .weight = 3, .input_usd_per_mtok = 2, .output_usd_per_mtok = 10};
    qg_qamount c = mcost(&m, 1000, 500);
    assert_int_equal(qg_keyq_amount(&ps[0], &c), 3);    /* the model's weight */
    assert_int_equal(qg_keyq_amount(&ps[1], &c), 1500); /* in + out */
    assert_int_equal(qg_keyq_amount(&ps[2], &c), 7000); /* 1000 * 2 + 500 * 10 micro-USD */
    qg_keyq *k = qg_keyq_new(ps, 3, -1);
    assert_int_equal(k->p[0].limit, 10);
    assert_int_equal(k->p[1].limit, 5000);
    assert_int_equal(k->p[2].limit, 10000); /* $0.01 */
    qg_kq_resv r;
    reserve_ok(k, c, NOW, &r);
    assert_int_equal(r.est[0], 3);
    assert_int_equal(r.est[1], 1500);
    assert_int_equal(r.est[2], 7000);
    assert_int_equal(used(k, 0, NOW), 3);
    assert_int_equal(used(k, 1, NOW), 1500);
    assert_int_equal(used(k, 2, NOW), 7000);
    qg_keyq_settle(k, &r, (qg_qamount[]){mcost(&m, 200, 100)}, NOW);
    assert_int_equal(used(k, 0, NOW), 3);
    assert_int_equal(used(k, 1, NOW), 300);
    assert_int_equal(used(k, 2, NOW), 1400);
    /* a model without a weight counts 1 request; no model costs $0 */
    qg_model_cfg unweighted = {.name = "u"};
    c = mcost(&unweighted, 10, 10);
    assert_int_equal(qg_keyq_amount(&ps[0], &c), 1);
    c = tok(42);
    assert_int_equal(qg_keyq_amount(&ps[0], &c), 1);
    assert_int_equal(qg_keyq_amount(&ps[1], &c), 42);
    assert_int_equal(qg_keyq_amount(&ps[2], &c), 0);
    /* weight 3 each: 3 + 3 + 3 = 9 fits 10, a fourth does not */
    spend(k, mcost(&m, 1, 0), NOW);
    spend(k, mcost(&m, 1, 0), NOW);
    qg_kq_refusal why;
    assert_int_equal(refuse(k, mcost(&m, 1, 0), NOW, &why), QG_KQ_POLICY_EXHAUSTED);
    assert_int_equal(why.policy, 0);
    spend(k, tok(1), NOW); /* 1 request still fits */
    assert_int_equal(used(k, 0, NOW), 10);
    free(k);
}

/* ---- views ---- */

static void test_status_and_tightest(void **state)
{
    (void)state;
    qg_policy_cfg ps[] = {daily(10, QG_UNIT_REQUESTS, true), ten_min(1000, QG_UNIT_TOKENS, true),
                          pol(QG_PERIOD_WEEKLY, 0, 1.0, QG_UNIT_USD, true)};
    qg_keyq *k = qg_keyq_new(ps, 3, -1);
    assert_int_equal(qg_keyq_tightest(k, NOW), 0); /* all full: the first */
    qg_model_cfg m = {.name = "m", .weight = 2, .input_usd_per_mtok = 100};
    qg_qamount c = mcost(&m, 400, 0); /* 2 requests (80 % left), 400 tokens (60 %), 40000 micro-USD (96 %) */
    spend(k, c, NOW);
    assert_int_equal(qg_keyq_tightest(k, NOW), 1);
    spend(k, c, NOW); /* 60 %, 20 %, 92 % */
    assert_int_equal(qg_keyq_tightest(k, NOW), 1);
    qg_kq_status s;
    assert_int_equal(qg_keyq_status(k, 1, NOW, &s), 0);
    qg_window w;
    assert_int_equal(qg_policy_window(&ps[1], NOW, &w), 0);
    assert_int_equal(s.w.index, w.index);
    assert_int_equal(s.w.start_ms, NOW);
    assert_int_equal(s.w.end_ms, TEN_END);
    assert_int_equal(s.used, 800);
    assert_int_equal(s.remaining, 200);
    assert_false(s.exhausted);
    assert_int_equal(qg_keyq_status(k, 0, NOW, &s), 0);
    assert_int_equal(s.w.start_ms, NOW - 10 * 60 * MIN_MS);
    assert_int_equal(s.w.end_ms, DAY_END);
    assert_int_equal(s.used, 4);
    assert_int_equal(s.remaining, 6);
    /* the 10-minute window resets: the requests policy (60 % left) is the tightest now */
    assert_int_equal(qg_keyq_tightest(k, TEN_END), 0);
    assert_int_equal(qg_keyq_status(k, 1, TEN_END, &s), 0);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.remaining, 1000);
    assert_int_equal(s.w.start_ms, TEN_END);
    /* the usd policy spent past its limit: remaining is 0, not negative */
    qg_keyq_settle(k, (qg_kq_resv[]){{0}}, &c, NOW); /* inactive: nothing */
    qg_kq_resv r;
    reserve_ok(k, tok(1), TEN_END, &r);
    qg_keyq_settle(k, &r, (qg_qamount[]){mcost(&m, 20000, 0)}, TEN_END); /* $2 */
    assert_int_equal(qg_keyq_status(k, 2, TEN_END, &s), 0);
    assert_int_equal(s.used, 2080000);
    assert_int_equal(s.remaining, 0);
    assert_true(s.exhausted);
    assert_int_equal(qg_keyq_status(k, 1, TEN_END, &s), 0);
    assert_int_equal(s.used, 20000); /* tokens: 0 % left as well */
    assert_int_equal(used(k, 0, TEN_END), 6);
    assert_int_equal(qg_keyq_tightest(k, TEN_END), 1); /* a tie at 0 % keeps the first */
    /* out of range */
    assert_int_equal(qg_keyq_status(k, 3, NOW, &s), -1);
    assert_int_equal(qg_keyq_status(k, -1, NOW, &s), -1);
    free(k);
    k = qg_keyq_new(NULL, 0, -1);
    assert_int_equal(qg_keyq_tightest(k, NOW), -1);
    assert_int_equal(qg_keyq_status(k, 0, NOW, &s), -1);
    free(k);
}

/* a policy whose window cannot be computed refuses, with no reset known */
static void test_policy_without_window(void **state)
{
    (void)state;
    qg_policy_cfg ps[] = {daily(100, QG_UNIT_REQUESTS, true), ten_min(100, QG_UNIT_REQUESTS, true)};
    ps[1].minutes = 0;
    qg_keyq *k = qg_keyq_new(ps, 2, -1);
    qg_kq_refusal why;
    assert_int_equal(refuse(k, reqs(1), NOW, &why), QG_KQ_POLICY_EXHAUSTED);
    assert_int_equal(why.policy, 1);
    assert_int_equal(why.reset_ms, 0);
    assert_int_equal(used(k, 0, NOW), 0); /* the first gave its share back */
    free(k);
}

/* ---- concurrency ---- */

#define THREADS 8
#define PER_THREAD 50

typedef struct {
    qg_keyq *k;
    qg_qamount est;
    pthread_barrier_t *reserved, *go;
    bool settle;              /* settle with actual = estimate, else release */
    int ok;
    qg_kq_resv r[PER_THREAD];
} worker;

static void *reserve_hold_end(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        qg_kq_refusal why;
        if (qg_keyq_reserve(w->k, &w->est, NOW + i, &w->r[i], &why) == QG_KQ_OK) w->ok++;
        if (i % 8 == 0) sched_yield();
    }
    /* hold every reservation until all threads finished reserving */
    pthread_barrier_wait(w->reserved);
    pthread_barrier_wait(w->go);
    for (int i = 0; i < PER_THREAD; i++) {
        if (w->settle)
            qg_keyq_settle(w->k, &w->r[i], &w->est, NOW + PER_THREAD);
        else
            qg_keyq_release(w->k, &w->r[i]);
    }
    return NULL;
}

/* Runs THREADS workers; returns the successes and fills held[i] with policy i's committed
 * amount (held[n_p]: the total quota's) while everything admitted was still held. */
static int run_threads(qg_keyq *k, const qg_qamount *ests, bool settle, int64_t *held)
{
    pthread_barrier_t reserved, go;
    pthread_barrier_init(&reserved, NULL, THREADS + 1);
    pthread_barrier_init(&go, NULL, THREADS + 1);
    static worker ws[THREADS];
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        ws[t] = (worker){.k = k, .est = ests[t], .reserved = &reserved, .go = &go, .settle = settle};
        assert_int_equal(pthread_create(&th[t], NULL, reserve_hold_end, &ws[t]), 0);
    }
    pthread_barrier_wait(&reserved);
    for (int i = 0; i < k->n_p; i++) held[i] = used(k, i, NOW + PER_THREAD);
    held[k->n_p] = total_of(k);
    pthread_barrier_wait(&go);
    int ok = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        ok += ws[t].ok;
    }
    pthread_barrier_destroy(&reserved);
    pthread_barrier_destroy(&go);
    return ok;
}

/* Strict: admission is one CAS on committed + est <= limit, so with est 1 exactly `limit`
 * reservations are admitted however the threads interleave.  A graceful tokens policy in
 * front of it sees the refused ones taken and given back: it ends where it started. */
static void test_concurrent_strict(void **state)
{
    (void)state;
    qg_policy_cfg ps[] = {daily(1e9, QG_UNIT_TOKENS, false), ten_min(10, QG_UNIT_REQUESTS, true)};
    qg_keyq *k = qg_keyq_new(ps, 2, 1000.0);
    qg_model_cfg m = {.name = "m", .weight = 1, .input_usd_per_mtok = 1};
    qg_qamount ests[THREADS];
    for (int t = 0; t < THREADS; t++) ests[t] = mcost(&m, 7, 0); /* 1 request, 7 tokens, 7 micro-USD */
    int64_t held[3];
    int ok = run_threads(k, ests, false, held);
    assert_int_equal(ok, 10);
    assert_int_equal(held[1], 10);
    assert_int_equal(held[0], 70); /* the refused gave their tokens back */
    assert_int_equal(held[2], 70);
    assert_int_equal(used(k, 1, NOW), 0); /* all released */
    assert_int_equal(used(k, 0, NOW), 0);
    assert_int_equal(total_of(k), 0);
    free(k);
}

/* Graceful.  What the code guarantees: take() admits only when the committed amount c it read
 * is < limit, and the same CAS that checks it stores c + est, so no two admissions can both
 * act on the same c (the naive fetch_add-then-check bound of limit + threads - 1 does not
 * apply).  Hence, in CAS order, every admission but the last started below the limit: the
 * committed amount ends in [limit, limit - 1 + max est] once the attempts (400 here) exceed
 * the limit, and settling with actual = estimate leaves it unchanged.  With est 1 that is
 * exactly `limit` successes; with estimates 1..8 the total is at most limit + 7. */
static void test_concurrent_graceful(void **state)
{
    (void)state;
    qg_policy_cfg p = ten_min(10, QG_UNIT_REQUESTS, false);
    qg_keyq *k = qg_keyq_new(&p, 1, -1);
    qg_qamount ests[THREADS];
    for (int t = 0; t < THREADS; t++) ests[t] = reqs(1);
    int64_t held[2];
    int ok = run_threads(k, ests, true, held);
    assert_true(ok >= 10);
    assert_true(ok <= 10 + THREADS - 1);
    assert_int_equal(ok, 10); /* the tighter bound the single CAS gives */
    assert_int_equal(held[0], 10);
    assert_int_equal(used(k, 0, NOW), 10);
    free(k);

    k = qg_keyq_new(&p, 1, -1);
    int64_t max_est = 0;
    for (int t = 0; t < THREADS; t++) {
        ests[t] = reqs(t + 1);
        max_est = QG_MAX(max_est, (int64_t)(t + 1));
    }
    ok = run_threads(k, ests, true, held);
    assert_true(ok >= 2); /* at most 8 per admission below 10: at least two admissions */
    assert_true(held[0] >= 10);
    assert_true(held[0] <= 10 - 1 + max_est);
    assert_int_equal(used(k, 0, NOW), held[0]); /* settled at the estimate: unchanged */
    free(k);
}
/* ---- edits: a new version of the key's counters (keydir.h) ---- */

/* Unchanged policies (same signature) keep their counts across an edit of the key; a
 * request admitted under the old version settles into the words the new one reads; a
 * changed policy starts afresh; the total quota and a pause carry over. */
static void test_edit_shares_counters(void **state)
{
    qg_policy_cfg p1[] = {ten_min(10, QG_UNIT_REQUESTS, true), daily(1000, QG_UNIT_TOKENS, true)};
    p1[1].on_exhausted_disable = true;
    qg_keyq *v1 = qg_keyq_new(p1, 2, 5.0);
    spend(v1, tok(100), NOW);
    qg_kq_resv inflight;
    reserve_ok(v1, tok(200), NOW, &inflight); /* admitted under v1, settles after the edit */
    assert_int_equal(used(v1, 0, NOW), 2);
    /* the edit: the 10-minute policy's limit raised (same counters), the daily one's unit changed */
    qg_policy_cfg p2[] = {ten_min(20, QG_UNIT_REQUESTS, true), daily(1000, QG_UNIT_REQUESTS, true)};
    qg_keyq *v2 = qg_keyq_new_from(v1, p2, 2, 5.0);
    assert_int_equal(used(v2, 0, NOW), 2);  /* kept */
    assert_int_equal(used(v2, 1, NOW), 0);  /* another policy: afresh */
    assert_int_equal(v2->p[0].limit, 20);
    qg_qamount actual = tok(50);
    qg_keyq_settle(v1, &inflight, &actual, NOW);
    assert_int_equal(used(v2, 0, NOW), 2);  /* 1 request either way */
    spend(v2, tok(10), NOW);
    assert_int_equal(used(v1, 0, NOW), 3);  /* one set of words */
    assert_int_equal(atomic_load(&v2->sh->inflight), 0);
    /* edited away and back: the tokens policy of v1 returns with v1's count */
    qg_keyq *v2b = qg_keyq_new_from(v2, p1, 2, 5.0);
    assert_int_equal(used(v2b, 1, NOW), 150); /* 100, and the request in flight at the edit: 50 */
    assert_int_equal(used(v2b, 1, NOW), used(v1, 1, NOW));
    free(v2b);
    /* a pause carries over while its policy is there */
    qg_policy_cfg p3[] = {daily(100, QG_UNIT_TOKENS, true)};
    p3[0].on_exhausted_disable = true;
    qg_keyq *v3 = qg_keyq_new(p3, 1, -1);
    spend(v3, tok(100), NOW);
    assert_int_not_equal(pause_of(v3), 0);
    qg_policy_cfg p4[] = {ten_min(5, QG_UNIT_REQUESTS, true), p3[0]};
    qg_keyq *v4 = qg_keyq_new_from(v3, p4, 2, -1);
    assert_int_equal(pause_of(v4), pause_rec(1, DAY_END)); /* under its new index */
    qg_kq_refusal why;
    assert_int_equal(refuse(v4, tok(1), NOW, &why), QG_KQ_PAUSED);
    qg_keyq *v5 = qg_keyq_new_from(v4, p4, 1, -1); /* the pausing policy removed: the pause ends */
    assert_int_equal(pause_of(v5), 0);
    free(v5), free(v4), free(v3), free(v2), free(v1);
}

/* The drift probe: settled amounts only, and nothing while a reservation is in flight. */
static void test_settled_probe(void **state)
{
    qg_policy_cfg p[] = {daily(1000, QG_UNIT_TOKENS, true)};
    qg_keyq *k = qg_keyq_new(p, 1, -1);
    spend(k, tok(30), NOW);
    int64_t w, u;
    assert_int_equal(qg_keyq_settled(k, 0, NOW, &w, &u), 0);
    assert_int_equal(u, 30);
    qg_kq_resv r;
    reserve_ok(k, tok(500), NOW, &r);
    assert_int_equal(qg_keyq_settled(k, 0, NOW, &w, &u), -1);
    qg_keyq_release(k, &r);
    qg_keyq_release(k, &r); /* a second end does nothing, and does not go negative */
    assert_int_equal(atomic_load(&k->sh->inflight), 0);
    assert_int_equal(qg_keyq_settled(k, 0, NOW, &w, &u), 0);
    assert_int_equal(u, 30);
    free(k);
}

int main(void)

{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_graceful_boundary),
        cmocka_unit_test(test_strict_boundary),
        cmocka_unit_test(test_exhausted_at_exactly_the_limit),
        cmocka_unit_test(test_strict_refusal_does_not_pause),
        cmocka_unit_test(test_all_or_nothing_policies),
        cmocka_unit_test(test_all_or_nothing_order),
        cmocka_unit_test(test_settle_by_difference),
        cmocka_unit_test(test_settle_only_once),
        cmocka_unit_test(test_settle_across_reset),
        cmocka_unit_test(test_reset_and_requests_in_flight),
        cmocka_unit_test(test_reset_races_settlements),
        cmocka_unit_test(test_settle_too_late),
        cmocka_unit_test(test_rollover_on_request_path),
        cmocka_unit_test(test_pause_auto_resume),
        cmocka_unit_test(test_pause_manual_reset),
        cmocka_unit_test(test_pause_first_record_wins),
        cmocka_unit_test(test_total_quota_usd),
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_status_and_tightest),
        cmocka_unit_test(test_policy_without_window),
        cmocka_unit_test(test_concurrent_strict),
        cmocka_unit_test(test_concurrent_graceful),
        cmocka_unit_test(test_edit_shares_counters),
        cmocka_unit_test(test_settled_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
