/*
 * test_timefmt.c — the time/size parsers against the provider vectors (reset-values.tsv,
 * retry-after.tsv: every row, reported by line number) and against hand-picked edge cases:
 * m vs ms, rounding rules, calendars, offsets, the three HTTP-date forms, overflow, and
 * "failure never touches *out".
 */
#include "testutil.h"
#include "timefmt.h"

#define NOW 1795341600000LL
#define UNTOUCHED 0x5a5a5a5a5aLL

/* ---- TSV vectors ---- */

typedef struct {
    int line;
    qg_slice col[5];
    int ncol;
} tsv_row;

/* Splits the file into rows of tab-separated columns (empty columns kept); skips '#' and
 * empty lines.  Calls fn for each row (line numbers are 1-based file lines) and returns the
 * number of rows. */
static int tsv_each(char *text, void (*fn)(const tsv_row *, int *), int *failures)
{
    int rows = 0, line = 0;
    for (char *l = text; *l; ) {
        char *nl = strchr(l, '\n');
        char *next = nl ? nl + 1 : l + strlen(l);
        if (nl) *nl = 0;
        line++;
        size_t len = strlen(l);
        if (len && l[len - 1] == '\r') l[--len] = 0;
        if (len && l[0] != '#') {
            tsv_row r = {.line = line};
            const char *start = l;
            for (const char *p = l;; p++) {
                if (*p != '\t' && *p != 0) continue;
                if (r.ncol < 5) r.col[r.ncol++] = (qg_slice){start, (size_t)(p - start)};
                if (*p == 0) break;
                start = p + 1;
            }
            rows++;
            fn(&r, failures);
        }
        l = next;
    }
    return rows;
}

static int64_t slice_to_i64(qg_slice s)
{
    char tmp[32];
    assert_true(s.n < sizeof tmp);
    memcpy(tmp, s.p, s.n);
    tmp[s.n] = 0;
    return strtoll(tmp, NULL, 10);
}

static int parse_format_name(qg_slice name, qg_reset_format *f)
{
    static const struct {
        const char *name;
        qg_reset_format f;
    } names[] = {
        {"go_duration", QG_RFMT_GO_DURATION}, {"pb_duration", QG_RFMT_PB_DURATION}, {"seconds", QG_RFMT_SECONDS},
        {"epoch_s", QG_RFMT_EPOCH_S},         {"epoch_s_json_real", QG_RFMT_EPOCH_S}, {"epoch_ms", QG_RFMT_EPOCH_MS},
        {"rfc3339", QG_RFMT_RFC3339},         {"date_only", QG_RFMT_RFC3339},       {"auto_numeric", QG_RFMT_AUTO},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(names); i++)
        if (qg_slice_eq(name, names[i].name)) {
            *f = names[i].f;
            return 0;
        }
    return -1;
}

/* Checks one result against the expected column: a number, or ERROR/IGNORE meaning rc == -1
 * with the output untouched. */
static bool check_expect(const tsv_row *r, const char *what, int rc, int64_t got, qg_slice expect)
{
    bool want_err = qg_slice_eq(expect, "ERROR") || qg_slice_eq(expect, "IGNORE");
    int64_t want = want_err ? 0 : slice_to_i64(expect);
    bool ok = want_err ? (rc == -1 && got == UNTOUCHED) : (rc == 0 && got == want);
    if (!ok)
        print_error("line %d: %s(\"%.*s\") rc=%d got=%lld want %.*s\n", r->line, what, (int)r->col[1].n, r->col[1].p, rc,
                    (long long)got, (int)expect.n, expect.p);
    return ok;
}

static void reset_row(const tsv_row *r, int *failures)
{
    qg_reset_format f;
    if (r->ncol < 4 || parse_format_name(r->col[0], &f) < 0) {
        print_error("line %d: malformed row\n", r->line);
        (*failures)++;
        return;
    }
    int64_t now = slice_to_i64(r->col[2]);
    assert_int_equal(now, NOW);
    int64_t got = UNTOUCHED;
    int rc = qg_parse_reset_as(f, r->col[1], now, &got);
    if (!check_expect(r, "qg_parse_reset_as", rc, got, r->col[3])) (*failures)++;

    /* The unlabelled guess agrees with every row except a bare number given as a Go duration:
     * the guess reads it as seconds, which is exactly why the labelled parser exists. */
    got = UNTOUCHED;
    rc = qg_parse_reset_value(r->col[1], now, &got);
    bool bare_number = r->col[1].n && strspn(r->col[1].p, "0123456789") == r->col[1].n;
    if (f == QG_RFMT_GO_DURATION && bare_number) {
        if (rc != 0 || got != now + slice_to_i64(r->col[1]) * 1000) {
            print_error("line %d: auto guess of bare \"%.*s\" should be seconds\n", r->line, (int)r->col[1].n, r->col[1].p);
            (*failures)++;
        }
    } else if (!check_expect(r, "qg_parse_reset_value", rc, got, r->col[3])) {
        (*failures)++;
    }
}

static void test_reset_values_tsv(void **state)
{
    char *text = tu_fixture("reset-values.tsv", NULL);
    int failures = 0;
    int rows = tsv_each(text, reset_row, &failures);
    free(text);
    assert_int_equal(rows, 38); /* README: 38 reset strings */
    assert_int_equal(failures, 0);
}

static void retry_row(const tsv_row *r, int *failures)
{
    if (r->ncol < 4) {
        print_error("line %d: malformed row\n", r->line);
        (*failures)++;
        return;
    }
    int64_t got = UNTOUCHED;
    int rc;
    const char *what;
    if (qg_slice_eq(r->col[0], "retry-after")) {
        rc = qg_parse_retry_after(r->col[1], slice_to_i64(r->col[2]), &got);
        what = "qg_parse_retry_after";
    } else if (qg_slice_eq(r->col[0], "retry-after-ms")) {
        rc = qg_parse_retry_after_ms(r->col[1], &got);
        what = "qg_parse_retry_after_ms";
    } else {
        print_error("line %d: unknown header\n", r->line);
        (*failures)++;
        return;
    }
    if (!check_expect(r, what, rc, got, r->col[3])) (*failures)++;
}

static void test_retry_after_tsv(void **state)
{
    char *text = tu_fixture("retry-after.tsv", NULL);
    int failures = 0;
    int rows = tsv_each(text, retry_row, &failures);
    free(text);
    assert_int_equal(rows, 13);
    assert_int_equal(failures, 0);
}

/* ---- durations and sizes ---- */

static int64_t dur(const char *s)
{
    int64_t v = UNTOUCHED;
    if (qg_parse_duration_ms(S(s), &v) < 0) {
        assert_int_equal(v, UNTOUCHED);
        return -1;
    }
    return v;
}

static void test_duration_config(void **state)
{
    assert_int_equal(dur("250ms"), 250);
    assert_int_equal(dur("60s"), 60000);
    assert_int_equal(dur("5m"), 300000);
    assert_int_equal(dur("1h30m"), 5400000);
    assert_int_equal(dur("1m30.5s"), 90500);
    assert_int_equal(dur("2m59.56s"), 179560);
    assert_int_equal(dur("1.5h"), 5400000);
    assert_int_equal(dur("7d"), 604800000);
    assert_int_equal(dur("0"), 0);
    assert_int_equal(dur("30"), 30000);  /* bare number: seconds */
    assert_int_equal(dur("1.5"), 1500);
    assert_int_equal(dur(" 20ms "), 20); /* m vs ms */
    assert_int_equal(dur("20m"), 1200000);
    assert_int_equal(dur("1500us"), 2);  /* 1.5 ms rounds to nearest */
    assert_int_equal(dur("1499us"), 1);
    assert_int_equal(dur("1.0005s"), 1001);
    assert_int_equal(dur("2\xc2\xb5s"), 0); /* µs */
    assert_int_equal(dur("999999ns"), 1);
    assert_int_equal(dur(".5s"), 500);
    assert_int_equal(dur(""), -1);
    assert_int_equal(dur("-1s"), -1);
    assert_int_equal(dur("+1s"), -1);
    assert_int_equal(dur("1m30"), -1); /* a bare number only as the whole value */
    assert_int_equal(dur("1x"), -1);
    assert_int_equal(dur("1mh"), -1);
    assert_int_equal(dur("s"), -1);
    assert_int_equal(dur("1..5s"), -1);
    assert_int_equal(dur("1 h"), -1);
    assert_int_equal(dur("106752d"), -1);              /* > int64 ns */
    assert_int_equal(dur("99999999999999999999h"), -1); /* overflow */
}

static uint64_t size(const char *s)
{
    uint64_t v = 77;
    if (qg_parse_size(S(s), &v) < 0) {
        assert_int_equal(v, 77);
        return UINT64_MAX;
    }
    return v;
}

static void test_size(void **state)
{
    assert_int_equal(size("32MiB"), 32u << 20);
    assert_int_equal(size("64KiB"), 64u << 10);
    assert_int_equal(size("1GiB"), 1u << 30);
    assert_int_equal(size("512KB"), 512000);
    assert_int_equal(size("1024"), 1024);
    assert_int_equal(size("4k"), 4096);
    assert_int_equal(size("4K"), 4096);
    assert_int_equal(size("2m"), 2u << 20);
    assert_int_equal(size("3MB"), 3000000);
    assert_int_equal(size("1 GB"), 1000000000);
    assert_int_equal(size("0"), 0);
    assert_int_equal(size("-1"), UINT64_MAX);
    assert_int_equal(size(""), UINT64_MAX);
    assert_int_equal(size("MiB"), UINT64_MAX);
    assert_int_equal(size("12XB"), UINT64_MAX);
    assert_int_equal(size("1.5MiB"), UINT64_MAX);
    assert_int_equal(size("18446744073709551615"), UINT64_MAX);
    assert_int_equal(size("18446744073709551616"), UINT64_MAX); /* overflow */
    assert_int_equal(size("17179869184GiB"), UINT64_MAX);       /* 2^64 */
}

/* ---- dates ---- */

static int64_t rfc(const char *s)
{
    int64_t v = UNTOUCHED;
    if (qg_parse_rfc3339(S(s), &v) < 0) {
        assert_int_equal(v, UNTOUCHED);
        return -1;
    }
    return v;
}

static void test_rfc3339(void **state)
{
    assert_int_equal(rfc("2026-11-22T10:00:00Z"), NOW);
    assert_int_equal(rfc("2026-11-22 10:00:00Z"), NOW);
    assert_int_equal(rfc("2026-11-22T10:00:00.999999999Z"), NOW + 999);
    assert_int_equal(rfc("2026-11-22T10:00:00.5Z"), NOW + 500);
    assert_int_equal(rfc("2026-11-22T05:00:00-05:00"), NOW);
    assert_int_equal(rfc("2026-11-22T15:30:00+0530"), NOW);
    assert_int_equal(rfc("2026-11-22T10:00Z"), NOW);
    assert_int_equal(rfc("2026-11-22"), NOW - 10 * 3600000LL);
    assert_int_equal(rfc("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(rfc("1969-12-31T23:59:59Z"), -1000);
    assert_int_equal(rfc("2000-03-01T00:00:00Z"), 951868800000LL);
    assert_int_equal(rfc("2024-02-29T00:00:00Z"), 1709164800000LL);
    assert_int_equal(rfc("2100-03-01T00:00:00Z"), 4107542400000LL);
    assert_int_equal(rfc("2026-02-29T00:00:00Z"), -1);
    assert_int_equal(rfc("2100-02-29T00:00:00Z"), -1);
    assert_int_equal(rfc("2026-13-01T00:00:00Z"), -1);
    assert_int_equal(rfc("2026-00-01T00:00:00Z"), -1);
    assert_int_equal(rfc("2026-11-31T00:00:00Z"), -1);
    assert_int_equal(rfc("2026-11-22T24:00:00Z"), -1);
    assert_int_equal(rfc("2026-11-22T10:60:00Z"), -1);
    assert_int_equal(rfc("2026-11-22T10:00:00.Z"), -1);
    assert_int_equal(rfc("2026-11-22T10:00:00+25:00"), -1);
    assert_int_equal(rfc("2026-11-22T10:00:00Zjunk"), -1);
    assert_int_equal(rfc("2026-11-22X10:00:00Z"), -1);
    assert_int_equal(rfc("26-11-22T10:00:00Z"), -1);
    assert_int_equal(rfc(""), -1);
}

static int64_t http(const char *s)
{
    int64_t v = UNTOUCHED;
    if (qg_parse_http_date(S(s), &v) < 0) {
        assert_int_equal(v, UNTOUCHED);
        return -1;
    }
    return v;
}

static void test_http_date(void **state)
{
    assert_int_equal(http("Sun, 22 Nov 2026 10:00:00 GMT"), NOW);
    assert_int_equal(http("Sunday, 22-Nov-26 10:00:00 GMT"), NOW);
    assert_int_equal(http("Sun Nov 22 10:00:00 2026"), NOW);
    assert_int_equal(http("Mon Nov  2 10:00:00 2026"), NOW - 20 * 86400000LL);
    assert_int_equal(http("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    assert_int_equal(http("Thursday, 01-Jan-70 00:00:00 GMT"), 0); /* 70 pivots to 1970 */
    assert_int_equal(http("Sun, 22 Nov 2026 10:00:00"), -1);
    assert_int_equal(http("Sun, 22 Foo 2026 10:00:00 GMT"), -1);
    assert_int_equal(http("Sun, 31 Nov 2026 10:00:00 GMT"), -1);
    assert_int_equal(http("Sun, 22 Nov 2026 10:00 GMT"), -1);
    assert_int_equal(http("22 Nov 2026 10:00:00 GMT"), -1);
    assert_int_equal(http("Sun, 22 Nov 2026 10:00:00 GMT x"), -1);
}

static void test_retry_after_extra(void **state)
{
    int64_t v = UNTOUCHED;
    assert_int_equal(qg_parse_retry_after(S("0.0001"), NOW, &v), 0);
    assert_int_equal(v, 1); /* rounds up: never retry early */
    assert_int_equal(qg_parse_retry_after(S(" 7 "), NOW, &v), 0);
    assert_int_equal(v, 7000);
    v = UNTOUCHED;
    assert_int_equal(qg_parse_retry_after(S("99999999999999999999"), NOW, &v), -1);
    assert_int_equal(qg_parse_retry_after(S("1e3"), NOW, &v), -1);
    assert_int_equal(qg_parse_retry_after(S("5s"), NOW, &v), -1);
    assert_int_equal(v, UNTOUCHED);
    assert_int_equal(qg_parse_retry_after_ms(S("1500.2"), &v), 0);
    assert_int_equal(v, 1501);
    v = UNTOUCHED;
    assert_int_equal(qg_parse_retry_after_ms(S("-1"), &v), -1);
    assert_int_equal(qg_parse_retry_after_ms(S(""), &v), -1);
    assert_int_equal(v, UNTOUCHED);
}

static void test_reset_extra(void **state)
{
    int64_t v = UNTOUCHED;
    /* The heuristic's boundaries: 1e9 and 1e12. */
    assert_int_equal(qg_parse_reset_value(S("999999999"), NOW, &v), 0);
    assert_int_equal(v, NOW + 999999999000LL);
    assert_int_equal(qg_parse_reset_value(S("1000000000"), NOW, &v), 0);
    assert_int_equal(v, 1000000000000LL);
    assert_int_equal(qg_parse_reset_value(S("999999999999"), NOW, &v), 0);
    assert_int_equal(v, 999999999999000LL);
    assert_int_equal(qg_parse_reset_value(S("1000000000000"), NOW, &v), 0);
    assert_int_equal(v, 1000000000000LL);
    assert_int_equal(qg_parse_reset_value(S("Sun, 22 Nov 2026 10:00:30 GMT"), NOW, &v), 0);
    assert_int_equal(v, NOW + 30000);
    assert_int_equal(qg_parse_reset_value(S("1d"), NOW, &v), 0);
    assert_int_equal(v, NOW + 86400000);
    assert_int_equal(qg_parse_reset_as(QG_RFMT_GO_DURATION, S("0"), NOW, &v), 0);
    assert_int_equal(v, NOW);
    assert_int_equal(qg_parse_reset_as(QG_RFMT_GO_DURATION, S("1.9999ms"), NOW, &v), 0);
    assert_int_equal(v, NOW + 1); /* truncated */
    assert_int_equal(qg_parse_reset_as(QG_RFMT_EPOCH_MS, S("1.795392E12"), NOW, &v), 0);
    assert_int_equal(v, 1795392000000LL);
    v = UNTOUCHED;
    assert_int_equal(qg_parse_reset_as(QG_RFMT_GO_DURATION, S("1d"), NOW, &v), -1); /* not Go */
    assert_int_equal(qg_parse_reset_as(QG_RFMT_PB_DURATION, S("1m"), NOW, &v), -1);
    assert_int_equal(qg_parse_reset_as(QG_RFMT_PB_DURATION, S("-3s"), NOW, &v), -1);
    assert_int_equal(qg_parse_reset_as(QG_RFMT_EPOCH_S, S("1e99"), NOW, &v), -1);
    assert_int_equal(qg_parse_reset_as(QG_RFMT_EPOCH_S, S("-1"), NOW, &v), -1);
    assert_int_equal(qg_parse_reset_as(QG_RFMT_SECONDS, S("9223372036854775807"), NOW, &v), -1);
    assert_int_equal(qg_parse_reset_value(S("-30"), NOW, &v), -1);
    assert_int_equal(qg_parse_reset_value(S("1e"), NOW, &v), -1);
    assert_int_equal(v, UNTOUCHED);
}

static void test_format(void **state)
{
    char out[40];
    assert_int_equal(qg_format_rfc3339(NOW, out, sizeof out), 20);
    assert_string_equal(out, "2026-11-22T10:00:00Z");
    assert_int_equal(qg_format_http_date(NOW, out, sizeof out), 29);
    assert_string_equal(out, "Sun, 22 Nov 2026 10:00:00 GMT");
    assert_int_equal(qg_format_rfc3339(-1, out, sizeof out), 20); /* floors, not truncates */
    assert_string_equal(out, "1969-12-31T23:59:59Z");
    assert_int_equal(qg_format_http_date(-1, out, sizeof out), 29);
    assert_string_equal(out, "Wed, 31 Dec 1969 23:59:59 GMT");
    assert_int_equal(qg_format_rfc3339(1709164800999LL, out, sizeof out), 20);
    assert_string_equal(out, "2024-02-29T00:00:00Z");
    assert_int_equal(qg_format_http_date(1709164800999LL, out, sizeof out), 29);
    assert_string_equal(out, "Thu, 29 Feb 2024 00:00:00 GMT");
    assert_int_equal(qg_format_rfc3339(253402300799999LL, out, sizeof out), 20);
    assert_string_equal(out, "9999-12-31T23:59:59Z");
    assert_int_equal(qg_format_rfc3339(253402300800000LL, out, sizeof out), -1);
    assert_int_equal(qg_format_rfc3339(INT64_MIN, out, sizeof out), -1);
    assert_int_equal(qg_format_rfc3339(NOW, out, 20), -1); /* no room for the NUL */
    assert_int_equal(qg_format_http_date(NOW, out, 10), -1);

    /* The per-thread cache of recent results: more distinct instants than it holds, in turn
     * and repeated, each formatted as if fresh (-1 s and 0 s included: no empty-slot match). */
    static const int64_t recent[] = {-1000, 0, 1000, NOW, NOW + 3600000, NOW + 86400000, -1, 999};
    static const char *const want[] = {"1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "1970-01-01T00:00:01Z",
                                       NULL, NULL, NULL, "1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z"};
    char first[8][24];
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 8; i++) {
            int j = round == 1 ? 7 - i : i;
            assert_int_equal(qg_format_rfc3339(recent[j], out, sizeof out), 20);
            if (round == 0) memcpy(first[j], out, sizeof first[j]);
            assert_string_equal(out, first[j]);
            if (want[j]) assert_string_equal(out, want[j]);
        }

    /* Round trips over a spread of instants, 400-year cycle included. */
    for (int64_t t = -62167219200000LL; t < 253402300799999LL; t += 7919 * 86400000LL + 3601001) {
        int64_t back = 0, floor_s = t - ((t % 1000) + 1000) % 1000;
        assert_true(qg_format_rfc3339(t, out, sizeof out) > 0);
        assert_int_equal(qg_parse_rfc3339(qg_slice_of(out), &back), 0);
        assert_int_equal(back, floor_s);
        assert_true(qg_format_http_date(t, out, sizeof out) > 0);
        assert_int_equal(qg_parse_http_date(qg_slice_of(out), &back), 0);
        assert_int_equal(back, floor_s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reset_values_tsv), cmocka_unit_test(test_retry_after_tsv),
        cmocka_unit_test(test_duration_config),  cmocka_unit_test(test_size),
        cmocka_unit_test(test_rfc3339),          cmocka_unit_test(test_http_date),
        cmocka_unit_test(test_retry_after_extra), cmocka_unit_test(test_reset_extra),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
