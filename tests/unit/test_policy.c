/*
 * test_policy.c — key policy windows (policy.h) on fixed instants: every period kind,
 * anchors before and after the moment, month ends and leap years, UTC offsets such as
 * +05:30 and -08:00, the exact reset instant, and the calendar helpers.  Expected values
 * were computed independently (Python's datetime) and are written out.
 */
#include "testutil.h"

#include "policy.h"
#include "timefmt.h"

#define NOW 1795341600000LL /* 2026-11-22T10:00:00Z */

static int64_t at(const char *s)
{
    int64_t t = 0;
    assert_int_equal(qg_parse_rfc3339(qg_slice_of(s), &t), 0);
    return t;
}

/* A policy from its period and an RFC 3339 anchor; the offset is read from the text. */
static qg_policy_cfg pol(qg_period_kind kind, int64_t minutes, const char *anchor)
{
    qg_policy_cfg p = {.period = kind, .minutes = minutes, .anchor_ms = at(anchor)};
    size_t n = strlen(anchor);
    if (n > 6 && (anchor[n - 6] == '+' || anchor[n - 6] == '-')) {
        int off = ((anchor[n - 5] - '0') * 10 + (anchor[n - 4] - '0')) * 60 + (anchor[n - 2] - '0') * 10 + (anchor[n - 1] - '0');
        p.anchor_offset_min = anchor[n - 6] == '-' ? -off : off;
    }
    return p;
}

static void expect(const qg_policy_cfg *p, int64_t t, int64_t index, int64_t start, int64_t end)
{
    qg_window w;
    assert_int_equal(qg_policy_window(p, t, &w), 0);
    assert_int_equal(w.index, index);
    assert_int_equal(w.start_ms, start);
    assert_int_equal(w.end_ms, end);
    qg_window again;
    assert_int_equal(qg_policy_window_at(p, index, &again), 0);
    assert_int_equal(again.start_ms, start);
    assert_int_equal(again.end_ms, end);
}

static void test_fixed_steps(void **state)
{
    (void)state;
    qg_policy_cfg p = pol(QG_PERIOD_MINUTES, 90, "2026-01-01T00:00:00Z");
    expect(&p, NOW, 5206, 1795338000000LL, 1795343400000LL);
    /* the reset instant belongs to the next window; the ms before it to this one */
    expect(&p, 1795343400000LL, 5207, 1795343400000LL, 1795343400000LL + 90 * 60000);
    expect(&p, 1795343400000LL - 1, 5206, 1795338000000LL, 1795343400000LL);
    /* an anchor in the future counts backwards: 5 h windows, NOW exactly on a boundary */
    p = pol(QG_PERIOD_5H, 0, "2027-01-01T00:00:00Z");
    expect(&p, NOW, -190, NOW, NOW + 5 * 3600000LL);
    expect(&p, NOW - 1, -191, NOW - 5 * 3600000LL, NOW);
    /* before 1970 too */
    p = pol(QG_PERIOD_MINUTES, 60, "1969-12-31T23:30:00Z");
    expect(&p, 0, 0, -1800000LL, 1800000LL);
    expect(&p, -1800001LL, -1, -5400000LL, -1800000LL);
}

static void test_daily_weekly_offsets(void **state)
{
    (void)state;
    /* midnight at +08:00 is 16:00Z every day */
    qg_policy_cfg p = pol(QG_PERIOD_DAILY, 0, "2026-01-01T00:00:00+08:00");
    qg_window w;
    assert_int_equal(qg_policy_window(&p, NOW, &w), 0);
    assert_int_equal(w.start_ms, 1795276800000LL); /* 2026-11-21T16:00:00Z */
    assert_int_equal(w.end_ms, 1795363200000LL);   /* 2026-11-22T16:00:00Z */
    /* +05:30: 00:00 local is 18:30Z the day before */
    p = pol(QG_PERIOD_DAILY, 0, "2026-06-01T00:00:00+05:30");
    assert_int_equal(qg_policy_window(&p, NOW, &w), 0);
    assert_int_equal(w.start_ms, at("2026-11-21T18:30:00Z"));
    assert_int_equal(w.end_ms, at("2026-11-22T18:30:00Z"));
    /* Mondays 09:00 at -08:00 (17:00Z): NOW is a Sunday */
    p = pol(QG_PERIOD_WEEKLY, 0, "2026-01-05T09:00:00-08:00");
    expect(&p, NOW, 45, 1794848400000LL, 1795453200000LL);
    /* an anchor in the future works the same way */
    p = pol(QG_PERIOD_WEEKLY, 0, "2027-03-01T09:00:00-08:00");
    assert_int_equal(qg_policy_window(&p, NOW, &w), 0);
    assert_true(w.index < 0);
    assert_int_equal(w.start_ms, 1794848400000LL);
    assert_int_equal(w.end_ms, 1795453200000LL);
}

static void test_monthly_month_ends(void **state)
{
    (void)state;
    /* an anchor on the 31st: Feb 28, Mar 31, Apr 30 (2026), and Feb 29 in a leap year */
    qg_policy_cfg p = pol(QG_PERIOD_MONTHLY, 0, "2026-01-31T00:00:00Z");
    expect(&p, at("2026-02-27T23:59:59Z"), 0, 1769817600000LL, 1772236800000LL);
    expect(&p, at("2026-02-28T12:00:00Z"), 1, 1772236800000LL, 1774915200000LL);
    expect(&p, at("2026-04-01T00:00:00Z"), 2, 1774915200000LL, 1777507200000LL);
    expect(&p, at("2028-02-29T01:00:00Z"), 25, 1835395200000LL, 1838073600000LL);
    expect(&p, at("2028-02-28T23:00:00Z"), 24, 1832889600000LL, 1835395200000LL);
    /* a short month does not move later windows: after Feb 28 comes Mar 31, not Mar 28 */
    qg_window w;
    assert_int_equal(qg_policy_window_at(&p, 1, &w), 0);
    assert_int_equal(w.end_ms, at("2026-03-31T00:00:00Z"));
    /* +05:30, 23:30 on the 31st: local month ends, in UTC the evening before */
    p = pol(QG_PERIOD_MONTHLY, 0, "2026-03-31T23:30:00+05:30");
    expect(&p, at("2026-05-01T00:00:00Z"), 1, 1777572000000LL, 1780250400000LL);
    /* -08:00, the 1st at 00:00 local: 08:00Z on the 1st */
    p = pol(QG_PERIOD_MONTHLY, 0, "2026-01-01T00:00:00-08:00");
    assert_int_equal(qg_policy_window(&p, NOW, &w), 0);
    assert_int_equal(w.start_ms, at("2026-11-01T08:00:00Z"));
    assert_int_equal(w.end_ms, at("2026-12-01T08:00:00Z"));
    /* an anchor in the future counts backwards by calendar months */
    p = pol(QG_PERIOD_MONTHLY, 0, "2027-06-15T00:00:00Z");
    expect(&p, NOW, -7, 1794700800000LL, 1797292800000LL);
    /* across a year boundary, and the exact reset instant */
    p = pol(QG_PERIOD_MONTHLY, 0, "2026-01-15T12:00:00Z");
    expect(&p, at("2026-12-31T00:00:00Z"), 11, at("2026-12-15T12:00:00Z"), at("2027-01-15T12:00:00Z"));
    expect(&p, at("2027-01-15T12:00:00Z"), 12, at("2027-01-15T12:00:00Z"), at("2027-02-15T12:00:00Z"));
}

static void test_windows_tile_time(void **state)
{
    (void)state;
    /* for every period, consecutive windows touch and each contains the instants it claims */
    qg_policy_cfg ps[] = {pol(QG_PERIOD_MINUTES, 7, "2026-02-03T04:05:06+02:00"), pol(QG_PERIOD_5H, 0, "2025-12-31T23:00:00Z"),
                          pol(QG_PERIOD_DAILY, 0, "2026-03-29T02:30:00+01:00"), pol(QG_PERIOD_WEEKLY, 0, "2030-01-01T00:00:00-03:30"),
                          pol(QG_PERIOD_MONTHLY, 0, "2024-02-29T06:00:00+09:00"), pol(QG_PERIOD_MONTHLY, 0, "2026-08-31T23:59:59-11:00")};
    for (size_t i = 0; i < QG_ARRAY_LEN(ps); i++) {
        qg_window w, next;
        int64_t t = at("2026-01-01T00:00:00Z");
        for (int k = 0; k < 400; k++) {
            assert_int_equal(qg_policy_window(&ps[i], t, &w), 0);
            assert_true(w.start_ms <= t && t < w.end_ms);
            assert_int_equal(qg_policy_window(&ps[i], w.end_ms, &next), 0);
            assert_int_equal(next.start_ms, w.end_ms);
            assert_int_equal(next.index, w.index + 1);
            t = w.end_ms + (w.end_ms - w.start_ms) / 3;
        }
    }
}

static void test_calendar_and_ranges(void **state)
{
    (void)state;
    /* days <-> civil dates round-trip across leap rules (1600, 1900, 2000, 2100) */
    for (int64_t d = -200000; d <= 200000; d += 7) {
        int64_t y;
        int m, dd;
        qg_civil_from_days(d, &y, &m, &dd);
        assert_true(m >= 1 && m <= 12 && dd >= 1 && dd <= qg_days_in_month(y, m));
        assert_int_equal(qg_days_from_civil(y, m, dd), d);
    }
    assert_int_equal(qg_days_from_civil(1970, 1, 1), 0);
    assert_int_equal(qg_days_from_civil(2000, 3, 1), 11017);
    assert_int_equal(qg_days_in_month(1900, 2), 28);
    assert_int_equal(qg_days_in_month(2000, 2), 29);
    assert_int_equal(qg_days_in_month(2028, 2), 29);
    /* out of range instants are refused, not wrapped */
    qg_policy_cfg p = pol(QG_PERIOD_DAILY, 0, "2026-01-01T00:00:00Z");
    qg_window w;
    assert_int_equal(qg_policy_window(&p, INT64_MAX, &w), -1);
    assert_int_equal(qg_policy_window(&p, INT64_MIN, &w), -1);
    assert_int_equal(qg_policy_window_at(&p, INT64_MAX / 2, &w), -1);
    p = pol(QG_PERIOD_MONTHLY, 0, "2026-01-01T00:00:00Z");
    assert_int_equal(qg_policy_window_at(&p, INT64_MIN / 2, &w), -1);
    p.minutes = 0;
    p.period = QG_PERIOD_MINUTES;
    assert_int_equal(qg_policy_window(&p, NOW, &w), -1); /* no step: refused */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_steps),          cmocka_unit_test(test_daily_weekly_offsets),
        cmocka_unit_test(test_monthly_month_ends),   cmocka_unit_test(test_windows_tile_time),
        cmocka_unit_test(test_calendar_and_ranges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
