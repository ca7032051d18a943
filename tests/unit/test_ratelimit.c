/*
 * test_ratelimit.c — header capture against every .http fixture in tests/fixtures/providers,
 * with the buckets, retry-after and status of tests/fixtures/providers/README.md (NOW =
 * 1795341600000).  Each fixture head is parsed with qg_http_parse_response and captured as
 * written, with CRLF line ends, with upper-cased names and with its headers in reverse
 * order; all four must agree.  Small inline cases pin what the fixtures do not cover:
 * precedence between families, retry-after-ms, clamping, decimals, rounding, Codex's "no
 * data" windows, near-miss names and garbage.
 */
#include "testutil.h"
#include "http1.h"
#include "ratelimit.h"

#include <ctype.h>

#define NOW INT64_C(1795341600000)
#define FULL QG_PERCENT_FULL
#define P5H (INT64_C(5) * 3600 * 1000)
#define P7D (INT64_C(7) * 86400 * 1000)
#define MAX_HEAD (64u << 10)

/* ---- expectations ---- */

typedef struct {
    bool present;
    int64_t limit, remaining, reset_ms, period_ms;
} want_entry;

typedef struct {
    const char *file;
    int status;
    want_entry e[QG_RL_N]; /* zero: absent */
    bool has_retry;
    int64_t retry_after_ms;
    bool rejected;
} want_snap;

#define E(l, r, t) {true, (l), (r), (t), 0}
#define EP(l, r, t, p) {true, (l), (r), (t), (p)}
#define RETRY(ms) .has_retry = true, .retry_after_ms = (ms)

static void assert_entry(const qg_rl_snapshot *s, qg_rl_slot slot, want_entry w)
{
    const qg_rl_entry *e = &s->e[slot];
    const char *name = qg_rl_slot_name(slot);
    if (!w.present) {
        w = (want_entry){false, -1, -1, 0, 0};
        if (e->present) fail_msg("%s: unexpectedly present", name);
    } else if (!e->present) {
        fail_msg("%s: absent", name);
    }
    if (e->limit != w.limit) fail_msg("%s: limit %lld, want %lld", name, (long long)e->limit, (long long)w.limit);
    if (e->remaining != w.remaining)
        fail_msg("%s: remaining %lld, want %lld", name, (long long)e->remaining, (long long)w.remaining);
    if (e->reset_ms != w.reset_ms)
        fail_msg("%s: reset %lld, want %lld", name, (long long)e->reset_ms, (long long)w.reset_ms);
    if (e->period_ms != w.period_ms)
        fail_msg("%s: period %lld, want %lld", name, (long long)e->period_ms, (long long)w.period_ms);
}

static void assert_snap(const qg_rl_snapshot *s, const want_snap *w)
{
    int n = 0;
    for (int i = 0; i < QG_RL_N; i++) {
        assert_entry(s, (qg_rl_slot)i, w->e[i]);
        n += w->e[i].present;
    }
    assert_int_equal(s->retry_after_ms, w->has_retry ? w->retry_after_ms : -1);
    assert_int_equal(s->rejected, w->rejected);
    assert_int_equal(s->n_found, n + w->has_retry);
}

static void assert_same_snap(const qg_rl_snapshot *a, const qg_rl_snapshot *b)
{
    for (int i = 0; i < QG_RL_N; i++) {
        const qg_rl_entry *x = &a->e[i], *y = &b->e[i];
        assert_int_equal(x->present, y->present);
        assert_int_equal(x->limit, y->limit);
        assert_int_equal(x->remaining, y->remaining);
        assert_int_equal(x->reset_ms, y->reset_ms);
        assert_int_equal(x->period_ms, y->period_ms);
    }
    assert_int_equal(a->retry_after_ms, b->retry_after_ms);
    assert_int_equal(a->rejected, b->rejected);
    assert_int_equal(a->n_found, b->n_found);
}

/* ---- fixtures ---- */

static void capture_text(const char *text, size_t n, int want_status, bool reverse, qg_rl_snapshot *out)
{
    qg_http_msg *m = calloc(1, sizeof *m);
    assert_non_null(m);
    assert_true(qg_http_parse_response(text, n, MAX_HEAD, m) > 0);
    assert_int_equal(m->status, want_status);
    if (reverse)
        for (size_t i = 0, j = m->n_headers; i + 1 < j; i++, j--) {
            qg_header t = m->headers[i];
            m->headers[i] = m->headers[j - 1];
            m->headers[j - 1] = t;
        }
    memset(out, 0x55, sizeof *out); /* every field must be written */
    qg_rl_capture(m->headers, m->n_headers, NOW, out);
    free(m);
}

/* The head of an .http fixture (through the empty line), LF or CRLF, names upper-cased or not. */
static char *head_variant(const char *text, bool crlf, bool upper, size_t *n)
{
    const char *end = strstr(text, "\n\n");
    assert_non_null(end);
    size_t len = (size_t)(end - text) + 2;
    char *out = malloc(len * 2 + 1);
    size_t o = 0;
    bool in_name = false, status_line = true;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\n') {
            if (crlf) out[o++] = '\r';
            out[o++] = c;
            in_name = true;
            status_line = false;
            continue;
        }
        if (c == ':') in_name = false;
        out[o++] = upper && in_name && !status_line ? (char)toupper((unsigned char)c) : c;
    }
    out[o] = 0;
    *n = o;
    return out;
}

static void check_fixture(const want_snap *w)
{
    size_t n;
    char *text = tu_fixture(w->file, &n);
    qg_rl_snapshot base, other;
    capture_text(text, n, w->status, false, &base);
    assert_snap(&base, w);

    capture_text(text, n, w->status, true, &other);
    assert_same_snap(&base, &other);
    for (int v = 0; v < 3; v++) {
        size_t hn;
        char *head = head_variant(text, v != 1, v != 0, &hn);
        capture_text(head, hn, w->status, false, &other);
        assert_same_snap(&base, &other);
        free(head);
    }
    free(text);
}

static void test_openai_headers(void **state)
{
    check_fixture(&(want_snap){
        .file = "openai-ratelimit-headers.http", .status = 200,
        .e[QG_RL_REQUESTS] = E(5000, 4987, INT64_C(1795341600156)),     /* 156ms */
        .e[QG_RL_TOKENS] = E(2000000, 1961450, INT64_C(1795341601156)), /* 1.156s */
    });
}

static void test_openai_429_rate_limit(void **state)
{
    check_fixture(&(want_snap){
        .file = "openai-429-rate-limit.http", .status = 429,
        .e[QG_RL_REQUESTS] = E(500, 497, INT64_C(1795341600360)),
        .e[QG_RL_TOKENS] = E(200000, 1500, INT64_C(1795341659550)), /* 59.55s; no retry-after */
    });
}

static void test_groq_headers(void **state)
{
    check_fixture(&(want_snap){
        .file = "groq-ratelimit-headers.http", .status = 200,
        .e[QG_RL_REQUESTS] = E(14400, 14370, INT64_C(1795341779560)), /* 2m59.56s, per day */
        .e[QG_RL_TOKENS] = E(6000, 5234, INT64_C(1795341607660)),     /* 7.66s */
    });
}

static void test_groq_429_tpm(void **state)
{
    check_fixture(&(want_snap){
        .file = "groq-429-tpm.http", .status = 429,
        .e[QG_RL_REQUESTS] = E(14400, 14369, INT64_C(1795341786000)), /* 3m6s */
        .e[QG_RL_TOKENS] = E(6000, 412, INT64_C(1795341655880)),      /* 55.88s */
        RETRY(8000),
    });
}

static void test_anthropic_headers(void **state)
{
    check_fixture(&(want_snap){
        .file = "anthropic-ratelimit-headers.http", .status = 200,
        .e[QG_RL_REQUESTS] = E(4000, 3999, INT64_C(1795341601000)),
        .e[QG_RL_INPUT_TOKENS] = E(2000000, 1986000, INT64_C(1795341601000)),
        .e[QG_RL_OUTPUT_TOKENS] = E(400000, 400000, NOW), /* reset 10:00:00Z is NOW itself */
        .e[QG_RL_TOKENS] = E(2400000, 2386000, INT64_C(1795341601000)),
    });
}

static void test_anthropic_429_rate_limit(void **state)
{
    check_fixture(&(want_snap){
        .file = "anthropic-429-rate-limit.http", .status = 429,
        .e[QG_RL_REQUESTS] = E(4000, 3990, INT64_C(1795341601000)),
        .e[QG_RL_INPUT_TOKENS] = E(2000000, 0, INT64_C(1795341607000)),
        .e[QG_RL_OUTPUT_TOKENS] = E(400000, 400000, NOW),
        .e[QG_RL_TOKENS] = E(2400000, 0, INT64_C(1795341607000)),
        RETRY(7000), /* agrees with the input-tokens reset */
    });
}

static void test_anthropic_unified(void **state)
{
    /* overage-status "rejected" is not a window: the snapshot is not rejected */
    check_fixture(&(want_snap){
        .file = "anthropic-unified-headers.http", .status = 200,
        .e[QG_RL_WINDOW_SHORT] = EP(FULL, 580000, INT64_C(1795354200000), P5H), /* 0.42 used */
        .e[QG_RL_WINDOW_LONG] = EP(FULL, 820000, INT64_C(1795770000000), P7D),  /* 0.18 used */
    });
}

static void test_anthropic_unified_rejected(void **state)
{
    check_fixture(&(want_snap){
        .file = "anthropic-unified-429-rejected.http", .status = 429,
        .e[QG_RL_WINDOW_SHORT] = EP(FULL, 0, INT64_C(1795354200000), P5H), /* 1.02 used: clamped */
        .e[QG_RL_WINDOW_LONG] = EP(FULL, 390000, INT64_C(1795770000000), P7D),
        RETRY(12600000), /* agrees with 5h-reset */
        .rejected = true,
    });
}

static void test_codex_headers(void **state)
{
    /* x-codex-other-* and x-codex-spare-* have no slot; credits are not rate limits */
    check_fixture(&(want_snap){
        .file = "codex-ratelimit-headers.http", .status = 200,
        .e[QG_RL_WINDOW_SHORT] = EP(FULL, 630000, INT64_C(1795348800000), 300 * 60000),
        .e[QG_RL_WINDOW_LONG] = EP(FULL, 880000, INT64_C(1795687200000), 10080 * 60000),
    });
}

static void test_codex_429(void **state)
{
    check_fixture(&(want_snap){
        .file = "codex-429-usage-limit.http", .status = 429,
        .e[QG_RL_WINDOW_SHORT] = EP(FULL, 0, INT64_C(1795348800000), 300 * 60000), /* 100.0 % */
        .e[QG_RL_WINDOW_LONG] = EP(FULL, 590000, INT64_C(1795687200000), 10080 * 60000), /* 41.0 % */
        RETRY(7200000),
    });
}

static void test_openrouter_free_daily(void **state)
{
    check_fixture(&(want_snap){
        .file = "openrouter-429-free-daily.http", .status = 429,
        .e[QG_RL_REQUESTS] = E(50, 0, INT64_C(1795392000000)), /* reset is epoch ms */
    });
}

static void test_openrouter_402(void **state)
{
    check_fixture(&(want_snap){.file = "openrouter-402-in-flight.http", .status = 402, RETRY(3000)});
    check_fixture(&(want_snap){.file = "openrouter-402-key-limit.http", .status = 402});
}

static void test_mistral_headers(void **state)
{
    check_fixture(&(want_snap){
        .file = "mistral-ratelimit-headers.http", .status = 200,
        .e[QG_RL_TOKENS] = E(500000, 498658, INT64_C(1795341621000)), /* reset 21 = seconds */
        .e[QG_RL_TOKENS_LONG] = E(1000000000, 987654321, 0),          /* reset unknown */
    });
}

static void test_together_headers(void **state)
{
    check_fixture(&(want_snap){
        .file = "together-ratelimit-headers.http", .status = 200,
        .e[QG_RL_REQUESTS] = E(100, 99, INT64_C(1795341601000)), /* reset 1 = seconds */
        .e[QG_RL_TOKENS] = E(200000, 199388, 0),
    });
}

static void test_fireworks_headers(void **state)
{
    check_fixture(&(want_snap){
        .file = "fireworks-ratelimit-headers.http", .status = 200,
        .e[QG_RL_INPUT_TOKENS] = E(3600000, -1, 0),
        .e[QG_RL_OUTPUT_TOKENS] = E(36000, -1, 0),
    });
}

/* Fixtures without rate-limit headers say nothing. */
static void test_fixtures_without_headers(void **state)
{
    check_fixture(&(want_snap){.file = "openai-429-insufficient-quota.http", .status = 429});
    check_fixture(&(want_snap){.file = "anthropic-429-spend-limit.http", .status = 429});
    check_fixture(&(want_snap){.file = "anthropic-529-overloaded.http", .status = 529});
    check_fixture(&(want_snap){.file = "anthropic-400-credit-balance.http", .status = 400});
}

/* ---- inline cases ---- */

/* "name: value" lines -> headers (the value after ": ") -> snapshot. */
static qg_rl_snapshot cap_lines(const char *const *lines, size_t n)
{
    qg_header h[32];
    assert_true(n <= QG_ARRAY_LEN(h));
    for (size_t i = 0; i < n; i++) {
        const char *colon = strchr(lines[i], ':');
        assert_non_null(colon);
        const char *v = colon + 1;
        while (*v == ' ') v++;
        h[i] = (qg_header){{lines[i], (size_t)(colon - lines[i])}, qg_slice_of(v)};
    }
    qg_rl_snapshot s;
    memset(&s, 0xa5, sizeof s);
    qg_rl_capture(h, n, NOW, &s);
    return s;
}
#define CAP(...) cap_lines((const char *const[]){__VA_ARGS__}, sizeof((const char *const[]){__VA_ARGS__}) / sizeof(char *))

static void test_empty(void **state)
{
    qg_rl_snapshot s;
    memset(&s, 0x5a, sizeof s);
    qg_rl_capture(NULL, 0, NOW, &s);
    assert_snap(&s, &(want_snap){0});
    s = CAP("date: Sun, 22 Nov 2026 10:00:00 GMT", "content-type: application/json", "x-request-id: abc");
    assert_snap(&s, &(want_snap){0});
}

static void test_retry_after(void **state)
{
    qg_rl_snapshot s = CAP("retry-after: 30");
    assert_snap(&s, &(want_snap){RETRY(30000)});
    s = CAP("Retry-After: 1.5");
    assert_snap(&s, &(want_snap){RETRY(1500)});
    s = CAP("retry-after: Sun, 22 Nov 2026 10:00:30 GMT");
    assert_snap(&s, &(want_snap){RETRY(30000)});
    s = CAP("retry-after: Sun, 22 Nov 2026 09:59:00 GMT"); /* past: retry now */
    assert_snap(&s, &(want_snap){RETRY(0)});
    s = CAP("retry-after: 0");
    assert_snap(&s, &(want_snap){RETRY(0)});
    s = CAP("retry-after: -5");
    assert_snap(&s, &(want_snap){0});
    s = CAP("retry-after: soon", "retry-after:");
    assert_snap(&s, &(want_snap){0});
    /* retry-after-ms wins in either order; garbage in it falls through to retry-after */
    s = CAP("retry-after: 30", "retry-after-ms: 1500");
    assert_snap(&s, &(want_snap){RETRY(1500)});
    s = CAP("RETRY-AFTER-MS: 1500", "retry-after: 30");
    assert_snap(&s, &(want_snap){RETRY(1500)});
    s = CAP("retry-after-ms: abc", "retry-after: 30");
    assert_snap(&s, &(want_snap){RETRY(30000)});
    s = CAP("retry-after-ms: 2.2");
    assert_snap(&s, &(want_snap){RETRY(3)}); /* rounded up */
    s = CAP("retry-afterx: 3", "retry-after-m: 3", "retry-after-mss: 3", "retry_after: 3");
    assert_snap(&s, &(want_snap){0});
}

static void test_values(void **state)
{
    /* negatives clamp to 0 (remaining) or are unknown (limit); decimals keep the integer part */
    qg_rl_snapshot s = CAP("x-ratelimit-limit-requests: -10", "x-ratelimit-remaining-requests: -3",
                           "x-ratelimit-limit-tokens: 187.2", "x-ratelimit-remaining-tokens: 99.999");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(-1, 0, 0), .e[QG_RL_TOKENS] = E(187, 99, 0)});
    /* garbage leaves the field unknown; an entry with only garbage is absent */
    s = CAP("x-ratelimit-limit-requests: lots", "x-ratelimit-remaining-requests: 5x",
            "x-ratelimit-reset-requests: never", "x-ratelimit-limit-tokens: 1e3", "x-ratelimit-remaining-tokens: .5",
            "x-ratelimit-reset-tokens: 5 s", "anthropic-ratelimit-requests-limit: ",
            "anthropic-ratelimit-tokens-limit: 99999999999999999999", "anthropic-ratelimit-tokens-reset: 5s");
    assert_snap(&s, &(want_snap){0});
    s = CAP("x-ratelimit-limit-requests: lots", "x-ratelimit-remaining-requests: 12");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(-1, 12, 0)});
    /* 18 digits are accepted, 19 are not */
    s = CAP("x-ratelimit-limit-tokens: 999999999999999999", "x-ratelimit-limit-requests: 1000000000000000000");
    assert_snap(&s, &(want_snap){.e[QG_RL_TOKENS] = E(INT64_C(999999999999999999), -1, 0)});
    /* OpenAI-style resets: Go durations, or a bare number of seconds */
    s = CAP("x-ratelimit-reset-requests: 5", "x-ratelimit-reset-tokens: 6m0s");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(-1, -1, NOW + 5000),
                                 .e[QG_RL_TOKENS] = E(-1, -1, NOW + 360000)});
    s = CAP("x-ratelimit-reset-tokens: 20ms", "x-ratelimit-reset-requests: 1m30.5s");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(-1, -1, NOW + 90500),
                                 .e[QG_RL_TOKENS] = E(-1, -1, NOW + 20)});
    /* the quick path ("156ms", "1.156s") and the general grammar agree at their border */
    static const struct {
        const char *v;
        int64_t ms; /* -1: not a reset */
    } go[] = {
        {"1.1239s", 1123},    {"1.0001s", 1000},   {"0.5s", 500},        {"59.550s", 59550},
        {"1.s", 1000},        {".5s", 500},        {"1.5ms", 1},         {"0", 0},
        {"1h", 3600000},      {"999999999ms", 999999999}, {"999999999s", INT64_C(999999999000)},
        {"1234567890s", INT64_C(1234567890000)}, {"1.1234567891s", 1123}, {"5MS", -1},
        {"5 ms", -1},         {"ms", -1},          {"s", -1},            {"1.5.5s", -1},
        {"-5ms", -1},         {"5sms", -1},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(go); i++) {
        char line[64];
        snprintf(line, sizeof line, "x-ratelimit-reset-tokens: %s", go[i].v);
        s = CAP(line);
        if (go[i].ms < 0) assert_snap(&s, &(want_snap){0});
        else assert_snap(&s, &(want_snap){.e[QG_RL_TOKENS] = E(-1, -1, NOW + go[i].ms)});
    }
    /* a repeated header replaces the earlier value; surrounding blanks are tolerated */
    s = CAP("x-ratelimit-limit-requests: 10", "x-ratelimit-limit-requests: \t20 ");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(20, -1, 0)});
    /* resets before 1970 are unknown */
    s = CAP("anthropic-ratelimit-requests-reset: 1969-12-31T00:00:00Z");
    assert_snap(&s, &(want_snap){0});
}

static void test_names(void **state)
{
    qg_rl_snapshot s = CAP("X-RateLimit-Limit-Requests: 7", "ANTHROPIC-RATELIMIT-TOKENS-REMAINING: 8",
                           "x-TokenLimit-Limit: 9");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(7, -1, 0), .e[QG_RL_TOKENS] = E(-1, 8, 0)});
    s = CAP("x-tokenlimit-limit: 9", "x-tokenlimit-reset: 2");
    assert_snap(&s, &(want_snap){.e[QG_RL_TOKENS] = E(9, -1, NOW + 2000)});
    /* near misses */
    s = CAP("x-ratelimit-limit-requestsx: 1", "x-ratelimit-limi: 1", "x-ratelimit-limits: 1",
            "x-ratelimit-limit-request: 1", "x-ratelimitlimit-requests: 1", "y-ratelimit-limit-requests: 1",
            "xxratelimit-limit-requests: 1", "x-ratelimit-used-requests: 1", "anthropic-ratelimit-requests: 1",
            "anthropic-ratelimit-requests-limitx: 1", "anthropic-ratelimit-unified-5h-used: 0.5",
            "anthropic-ratelimit-unified-5d-utilization: 0.5", "anthropic-ratelimit-unified-status-5h: rejected",
            "anthropic-ratelimit-unified-overage-status: rejected", "x-codex-primary-used: 5",
            "x-codex-other-primary-used-percent: 5.0", "x-codex-tertiary-used-percent: 5",
            "ratelimitbysize-query-cost: 1342", "x-ratelimitbysize-limit-week: 5", "x-ratelimit-limit-tokens-cached: 5",
            "x-ratelimit-limit-prompt-tokens: 5", "x-ratelimit-remaining-tokens-prompt-x: 5");
    assert_snap(&s, &(want_snap){0});
}

static void test_precedence(void **state)
{
    /* the first family read wins a slot, whatever its fields */
    qg_rl_snapshot s = CAP("x-ratelimit-limit-requests: 10", "x-ratelimit-limit: 50", "x-ratelimit-remaining: 0",
                           "x-ratelimit-remaining-requests: 9");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(10, 9, 0)});
    s = CAP("x-ratelimit-limit: 50", "x-ratelimit-limit-requests: 10", "x-ratelimit-remaining: 0",
            "x-ratelimit-remaining-requests: 9");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(50, 0, 0)});
    /* a value that does not parse claims nothing */
    s = CAP("anthropic-ratelimit-tokens-limit: many", "x-ratelimit-limit-tokens: 6000", "anthropic-ratelimit-tokens-remaining: 1");
    assert_snap(&s, &(want_snap){.e[QG_RL_TOKENS] = E(6000, -1, 0)});
    /* unified vs Codex for the percent windows */
    s = CAP("x-codex-primary-used-percent: 50", "anthropic-ratelimit-unified-5h-utilization: 0.1",
            "anthropic-ratelimit-unified-7d-utilization: 0.25", "x-codex-secondary-used-percent: 75");
    assert_snap(&s, &(want_snap){.e[QG_RL_WINDOW_SHORT] = E(FULL, 500000, 0),
                                 .e[QG_RL_WINDOW_LONG] = EP(FULL, 750000, 0, P7D)});
    /* Mistral's unsuffixed and -minute names are one window: the reset merges in */
    s = CAP("x-ratelimitbysize-limit-minute: 500", "ratelimitbysize-reset: 21", "x-ratelimitbysize-remaining: 400");
    assert_snap(&s, &(want_snap){.e[QG_RL_TOKENS] = E(500, 400, NOW + 21000)});
    /* Fireworks and Anthropic on the input/output slots */
    s = CAP("anthropic-ratelimit-input-tokens-limit: 1", "x-ratelimit-limit-tokens-prompt: 2",
            "x-ratelimit-limit-tokens-generated: 3", "anthropic-ratelimit-output-tokens-limit: 4");
    assert_snap(&s, &(want_snap){.e[QG_RL_INPUT_TOKENS] = E(1, -1, 0), .e[QG_RL_OUTPUT_TOKENS] = E(3, -1, 0)});
}

static void test_unified(void **state)
{
    /* utilisation rounds to the nearest millionth, clamps at 0 and FULL */
    qg_rl_snapshot s = CAP("anthropic-ratelimit-unified-5h-utilization: 0.4200004",
                           "anthropic-ratelimit-unified-7d-utilization: 0.0000005");
    assert_snap(&s, &(want_snap){.e[QG_RL_WINDOW_SHORT] = EP(FULL, 580000, 0, P5H),
                                 .e[QG_RL_WINDOW_LONG] = EP(FULL, 999999, 0, P7D)});
    s = CAP("anthropic-ratelimit-unified-5h-utilization: 0", "anthropic-ratelimit-unified-7d-utilization: 12345678901234567890");
    assert_snap(&s, &(want_snap){.e[QG_RL_WINDOW_SHORT] = EP(FULL, FULL, 0, P5H),
                                 .e[QG_RL_WINDOW_LONG] = EP(FULL, 0, 0, P7D)});
    s = CAP("anthropic-ratelimit-unified-5h-utilization: -0.1", "anthropic-ratelimit-unified-7d-utilization: 0.5x",
            "anthropic-ratelimit-unified-5h-reset: soon");
    assert_snap(&s, &(want_snap){0});
    /* a reset alone is a present window; RFC 3339 resets are accepted too */
    s = CAP("anthropic-ratelimit-unified-7d-reset: 2026-11-27T10:00:00Z");
    assert_snap(&s, &(want_snap){.e[QG_RL_WINDOW_LONG] = EP(FULL, -1, INT64_C(1795773600000), P7D)});
    /* any of the three statuses rejects, case-insensitively; a status alone fills no window */
    s = CAP("anthropic-ratelimit-unified-7d-status: Rejected");
    assert_snap(&s, &(want_snap){.rejected = true});
    s = CAP("anthropic-ratelimit-unified-5h-status: rejected", "anthropic-ratelimit-unified-status: allowed");
    assert_snap(&s, &(want_snap){.rejected = true});
    s = CAP("anthropic-ratelimit-unified-status: rejected");
    assert_snap(&s, &(want_snap){.rejected = true});
    s = CAP("anthropic-ratelimit-unified-status: allowed_warning", "anthropic-ratelimit-unified-5h-status: rejectedx");
    assert_snap(&s, &(want_snap){0});
}

static void test_codex(void **state)
{
    /* "no data": used 0 of a 0-minute window without a reset, or nothing but a window length */
    qg_rl_snapshot s = CAP("x-codex-primary-used-percent: 0", "x-codex-primary-window-minutes: 0",
                           "x-codex-secondary-window-minutes: 10080");
    assert_snap(&s, &(want_snap){0});
    s = CAP("x-codex-primary-used-percent: 0.0");
    assert_snap(&s, &(want_snap){0});
    /* ... but 0 % of a real window is data */
    s = CAP("x-codex-primary-used-percent: 0", "x-codex-primary-window-minutes: 300");
    assert_snap(&s, &(want_snap){.e[QG_RL_WINDOW_SHORT] = EP(FULL, FULL, 0, 300 * 60000)});
    /* reset-after-seconds alone, and reset-at winning in either order */
    s = CAP("x-codex-primary-reset-after-seconds: 7200", "x-codex-primary-used-percent: 37.5");
    assert_snap(&s, &(want_snap){.e[QG_RL_WINDOW_SHORT] = E(FULL, 625000, NOW + 7200000)});
    s = CAP("x-codex-primary-reset-after-seconds: 60", "x-codex-primary-reset-at: 1795348800");
    assert_snap(&s, &(want_snap){.e[QG_RL_WINDOW_SHORT] = E(FULL, -1, INT64_C(1795348800000))});
    s = CAP("x-codex-primary-reset-at: 1795348800", "x-codex-primary-reset-after-seconds: 60");
    assert_snap(&s, &(want_snap){.e[QG_RL_WINDOW_SHORT] = E(FULL, -1, INT64_C(1795348800000))});
    /* over 100 % clamps to 0; percent fractions round */
    s = CAP("x-codex-secondary-used-percent: 104.5", "x-codex-primary-used-percent: 12.34565");
    assert_snap(&s, &(want_snap){.e[QG_RL_WINDOW_SHORT] = E(FULL, 876543, 0), .e[QG_RL_WINDOW_LONG] = E(FULL, 0, 0)});
    /* bad window lengths are ignored */
    s = CAP("x-codex-primary-used-percent: 10", "x-codex-primary-window-minutes: -5",
            "x-codex-secondary-used-percent: 10", "x-codex-secondary-window-minutes: 99999999999999999");
    assert_snap(&s, &(want_snap){.e[QG_RL_WINDOW_SHORT] = E(FULL, 900000, 0), .e[QG_RL_WINDOW_LONG] = E(FULL, 900000, 0)});
}

static void test_reset_shapes(void **state)
{
    /* the plain family tells relative seconds, epoch seconds and epoch ms apart by size */
    qg_rl_snapshot s = CAP("x-ratelimit-reset: 60");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(-1, -1, NOW + 60000)});
    s = CAP("X-RateLimit-Reset: 1795392000");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(-1, -1, INT64_C(1795392000000))});
    s = CAP("X-RateLimit-Reset: 1795392000000");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(-1, -1, INT64_C(1795392000000))});
    /* Mistral month, seconds */
    s = CAP("x-ratelimitbysize-reset-month: 3600", "x-ratelimitbysize-limit-month: 10");
    assert_snap(&s, &(want_snap){.e[QG_RL_TOKENS_LONG] = E(10, -1, NOW + 3600000)});
    /* Anthropic resets are RFC 3339 only */
    s = CAP("anthropic-ratelimit-requests-reset: 2026-11-22T10:00:01.5+00:00", "anthropic-ratelimit-tokens-reset: 60");
    assert_snap(&s, &(want_snap){.e[QG_RL_REQUESTS] = E(-1, -1, INT64_C(1795341601500))});
}

static void test_slot_names(void **state)
{
    const char *want[QG_RL_N] = {"requests",    "tokens",       "input_tokens", "output_tokens",
                                 "tokens_long", "window_short", "window_long"};
    for (int i = 0; i < QG_RL_N; i++) assert_string_equal(qg_rl_slot_name((qg_rl_slot)i), want[i]);
    assert_string_equal(qg_rl_slot_name(QG_RL_N), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_headers),
        cmocka_unit_test(test_openai_429_rate_limit),
        cmocka_unit_test(test_groq_headers),
        cmocka_unit_test(test_groq_429_tpm),
        cmocka_unit_test(test_anthropic_headers),
        cmocka_unit_test(test_anthropic_429_rate_limit),
        cmocka_unit_test(test_anthropic_unified),
        cmocka_unit_test(test_anthropic_unified_rejected),
        cmocka_unit_test(test_codex_headers),
        cmocka_unit_test(test_codex_429),
        cmocka_unit_test(test_openrouter_free_daily),
        cmocka_unit_test(test_openrouter_402),
        cmocka_unit_test(test_mistral_headers),
        cmocka_unit_test(test_together_headers),
        cmocka_unit_test(test_fireworks_headers),
        cmocka_unit_test(test_fixtures_without_headers),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_unified),
        cmocka_unit_test(test_codex),
        cmocka_unit_test(test_reset_shapes),
        cmocka_unit_test(test_slot_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
