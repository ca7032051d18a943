/*
 * test_errclass.c — error classification against the provider fixtures, with the class, end
 * time and code from tests/fixtures/providers/README.md, then the same bodies cut short (the
 * raw-byte fallback), every prefix of every body in an exact-size buffer, and inline cases
 * for the rules, the calendar boundaries (Pacific midnight on both sides of both DST
 * switches) and the bounds on what is believed.
 *
 * Header snapshots are built by hand from each fixture's head, as README says ratelimit.c
 * will capture them, so this test does not depend on qg_rl_capture.
 */
#include "testutil.h"
#include "errclass.h"
#include "http1.h"
#include "timefmt.h"

#define NOW 1795341600000LL /* 2026-11-22T10:00:00Z, Sunday */
#define SECOND 1000LL
#define MINUTE (60 * SECOND)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)
#define NEXT_MONTH 1796083200000LL    /* 2026-12-01T00:00:00Z */
#define NEXT_UTC_DAY 1795392000000LL  /* 2026-11-23T00:00:00Z */

/* ---- snapshots ---- */

static qg_rl_snapshot snap_empty(void)
{
    qg_rl_snapshot s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < QG_RL_N; i++) s.e[i] = (qg_rl_entry){false, -1, -1, 0, 0};
    s.retry_after_ms = -1;
    return s;
}

static void bucket(qg_rl_snapshot *s, qg_rl_slot slot, int64_t limit, int64_t remaining, int64_t reset, int64_t period)
{
    s->e[slot] = (qg_rl_entry){true, limit, remaining, reset, period};
    s->n_found++;
}

static void retry_after(qg_rl_snapshot *s, int64_t ms)
{
    s->retry_after_ms = ms;
    s->n_found++;
}

static void h_none(qg_rl_snapshot *s) { QG_UNUSED(s); }

static void h_openai_rate(qg_rl_snapshot *s)
{
    bucket(s, QG_RL_REQUESTS, 500, 497, NOW + 360, 0);
    bucket(s, QG_RL_TOKENS, 200000, 1500, NOW + 59550, 0);
}

static void h_anthropic_rate(qg_rl_snapshot *s)
{
    retry_after(s, 7 * SECOND);
    bucket(s, QG_RL_REQUESTS, 4000, 3990, NOW + 1000, 0);
    bucket(s, QG_RL_INPUT_TOKENS, 2000000, 0, NOW + 7000, 0);
    bucket(s, QG_RL_OUTPUT_TOKENS, 400000, 400000, NOW, 0);
    bucket(s, QG_RL_TOKENS, 2400000, 0, NOW + 7000, 0);
}

static void h_unified(qg_rl_snapshot *s)
{
    retry_after(s, 12600 * SECOND);
    s->rejected = true;
    bucket(s, QG_RL_WINDOW_SHORT, QG_PERCENT_FULL, 0, 1795354200000LL, 5 * HOUR); /* 1.02 used: clamped */
    bucket(s, QG_RL_WINDOW_LONG, QG_PERCENT_FULL, 390000, 1795770000000LL, 7 * DAY);
}

static void h_codex(qg_rl_snapshot *s)
{
    retry_after(s, 7200 * SECOND);
    bucket(s, QG_RL_WINDOW_SHORT, QG_PERCENT_FULL, 0, 1795348800000LL, 300 * MINUTE);
    bucket(s, QG_RL_WINDOW_LONG, QG_PERCENT_FULL, 590000, 1795687200000LL, 10080 * MINUTE);
}

static void h_or_in_flight(qg_rl_snapshot *s) { retry_after(s, 3 * SECOND); }

static void h_or_free(qg_rl_snapshot *s) { bucket(s, QG_RL_REQUESTS, 50, 0, NEXT_UTC_DAY, 0); }

static void h_groq(qg_rl_snapshot *s)
{
    retry_after(s, 8 * SECOND);
    bucket(s, QG_RL_REQUESTS, 14400, 14369, NOW + 186000, 0);
    bucket(s, QG_RL_TOKENS, 6000, 412, NOW + 55880, 0);
}

/* ---- fixtures ---- */

typedef struct {
    char *text; /* the whole file (freed by fx_free) */
    const char *body;
    size_t n;
    int status;
} fixture;

/* An .http fixture is split with the head parser; a .json one is a body with `status`. */
static fixture fx_load(const char *file, int status)
{
    fixture fx = {0};
    size_t n;
    fx.text = tu_fixture(file, &n);
    fx.status = status;
    fx.body = fx.text;
    fx.n = n;
    if (strstr(file, ".http")) {
        static qg_http_msg m;
        int rc = qg_http_parse_response(fx.text, n, 65536, &m);
        if (rc <= 0) fail_msg("%s: head does not parse (%d)", file, rc);
        fx.status = m.status;
        fx.body = fx.text + m.head_len;
        fx.n = n - m.head_len;
    }
    return fx;
}

static void fx_free(fixture *fx) { free(fx->text); }

typedef struct {
    const char *file;
    int status; /* for .json bodies */
    void (*headers)(qg_rl_snapshot *s); /* NULL: no snapshot at all */
    qg_errclass cls;
    int64_t until;
    bool stated;
    const char *code;
} fixture_case;

static const fixture_case cases[] = {
    {"openai-429-insufficient-quota.http", 0, h_none, QG_EC_CREDITS_EXHAUSTED, 0, false, "insufficient_quota"},
    {"openai-429-rate-limit.http", 0, h_openai_rate, QG_EC_RATE_LIMITED, NOW + 813, true, "rate_limit_exceeded"},
    {"anthropic-429-rate-limit.http", 0, h_anthropic_rate, QG_EC_RATE_LIMITED, NOW + 7000, true, "rate_limit_error"},
    {"anthropic-429-spend-limit.http", 0, h_none, QG_EC_SPEND_CAPPED, NEXT_MONTH, false,
     "enforced_spend_limit_reached"},
    {"anthropic-529-overloaded.http", 0, h_none, QG_EC_OVERLOADED, 0, false, "overloaded_error"},
    {"anthropic-400-credit-balance.http", 0, h_none, QG_EC_CREDITS_EXHAUSTED, 0, false, "invalid_request_error"},
    {"anthropic-unified-429-rejected.http", 0, h_unified, QG_EC_WINDOW_EXHAUSTED, 1795354200000LL, true,
     "rate_limit_error"},
    {"codex-429-usage-limit.http", 0, h_codex, QG_EC_WINDOW_EXHAUSTED, 1795348800000LL, true, "usage_limit_reached"},
    {"openrouter-402-key-limit.http", 0, h_none, QG_EC_SPEND_CAPPED, NEXT_MONTH, false, "openrouter_key_limit"},
    {"openrouter-402-in-flight.http", 0, h_or_in_flight, QG_EC_TRANSIENT, NOW + 3000, true,
     "openrouter_in_flight_budget"},
    {"openrouter-429-free-daily.http", 0, h_or_free, QG_EC_WINDOW_EXHAUSTED, NEXT_UTC_DAY, true, "free-models-per-day"},
    {"groq-429-tpm.http", 0, h_groq, QG_EC_RATE_LIMITED, NOW + 8000, true, "rate_limit_exceeded"},
    {"gemini-429-retryinfo.json", 429, NULL, QG_EC_RATE_LIMITED, 1795341623000LL, true, "RESOURCE_EXHAUSTED"},
    {"gemini-429-daily.json", 429, NULL, QG_EC_WINDOW_EXHAUSTED, 1795420800000LL, false, "RESOURCE_EXHAUSTED"},
};

static qg_error_verdict classify_n(int status, const qg_rl_snapshot *h, const char *body, size_t n, int64_t now)
{
    qg_error_verdict v;
    memset(&v, 0xa5, sizeof v);
    qg_classify_error(status, h, body, n, now, &v);
    return v;
}

static qg_error_verdict classify(int status, const qg_rl_snapshot *h, const char *body, int64_t now)
{
    return classify_n(status, h, body, body ? strlen(body) : 0, now);
}

static void assert_verdict_at(const qg_error_verdict *v, qg_errclass cls, int64_t until, bool stated, const char *code,
                              const char *what, int line)
{
    if (v->cls != cls || v->until_ms != until || v->until_stated != stated || (code && strcmp(v->code, code) != 0))
        fail_msg("line %d, %s: got %s until %lld (%s) code \"%s\"; want %s until %lld (%s) code \"%s\"", line, what,
                 qg_errclass_name(v->cls), (long long)v->until_ms, v->until_stated ? "stated" : "inferred", v->code,
                 qg_errclass_name(cls), (long long)until, stated ? "stated" : "inferred", code ? code : "(any)");
}

#define assert_verdict(v, cls, until, stated, code) assert_verdict_at(&(v), cls, until, stated, code, #v, __LINE__)

static qg_error_verdict classify_case(const fixture_case *c, size_t cut, bool with_headers)
{
    fixture fx = fx_load(c->file, c->status);
    qg_rl_snapshot s = snap_empty();
    if (c->headers) c->headers(&s);
    qg_error_verdict v = classify_n(fx.status, with_headers && c->headers ? &s : NULL, fx.body, fx.n - cut, NOW);
    fx_free(&fx);
    return v;
}

/* The invariants errclass.h promises for every answer. */
static void assert_invariants(const qg_error_verdict *v, int status, int64_t now)
{
    assert_true(v->cls >= QG_EC_NONE && v->cls <= QG_EC_CLIENT_ERROR);
    assert_non_null(memchr(v->code, 0, sizeof v->code));
    for (const char *p = v->code; *p; p++) assert_true(*p > ' ' && *p < 0x7f && *p != '"' && *p != '\\');
    if (v->until_ms == 0) assert_false(v->until_stated);
    else assert_true(v->until_ms >= now && v->until_ms - now <= 400 * DAY);
    if (v->until_ms && !v->until_stated) assert_true(v->until_ms > now);
    if (status < 400) assert_int_equal(v->cls, QG_EC_NONE);
    if (status == 401 || status == 403) assert_int_equal(v->cls, QG_EC_AUTH_FAILED);
}

/* ---- the fixtures ---- */

static void test_fixtures(void **state)
{
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        const fixture_case *c = &cases[i];
        qg_error_verdict v = classify_case(c, 0, true);
        assert_verdict_at(&v, c->cls, c->until, c->stated, c->code, c->file, __LINE__);
    }
}

/* What the body alone gives: the header-borne facts are gone, the body-borne ones stay. */
static void test_fixtures_without_headers(void **state)
{
    const fixture_case *c = cases;
    qg_error_verdict v = classify_case(&c[1], 0, false); /* openai rate limit: the hint is in the body */
    assert_verdict(v, QG_EC_RATE_LIMITED, NOW + 813, true, "rate_limit_exceeded");
    v = classify_case(&c[2], 0, false); /* anthropic rate limit: retry-after is gone */
    assert_verdict(v, QG_EC_RATE_LIMITED, 0, false, "rate_limit_error");
    v = classify_case(&c[6], 0, false); /* unified: only the headers say "rejected" */
    assert_verdict(v, QG_EC_RATE_LIMITED, 0, false, "rate_limit_error");
    v = classify_case(&c[7], 0, false); /* codex: resets_at is in the body */
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, 1795348800000LL, true, "usage_limit_reached");
    v = classify_case(&c[9], 0, false); /* in-flight: retry later, when is up to the caller */
    assert_verdict(v, QG_EC_TRANSIENT, 0, false, "openrouter_in_flight_budget");
    v = classify_case(&c[10], 0, false); /* free daily: the body repeats X-RateLimit-Reset */
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, NEXT_UTC_DAY, true, "free-models-per-day");
    v = classify_case(&c[11], 0, false); /* groq: without retry-after the hint "7.88s" is used */
    assert_verdict(v, QG_EC_RATE_LIMITED, NOW + 7880, true, "rate_limit_exceeded");
}

/* Bodies cut before their last bytes are not JSON any more; the raw fallback still finds the
 * codes (as quoted tokens) and the message tokens.  Gemini's class lives in nested
 * details[], which the fallback does not read: a cut Gemini body is a plain 429. */
static void test_fixtures_truncated(void **state)
{
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        const fixture_case *c = &cases[i];
        qg_error_verdict v = classify_case(c, 3, true);
        if (strncmp(c->file, "gemini", 6) == 0) {
            assert_verdict_at(&v, QG_EC_RATE_LIMITED, 0, false, NULL, c->file, __LINE__);
            continue;
        }
        assert_verdict_at(&v, c->cls, c->until, c->stated, NULL, c->file, __LINE__);
    }
}

/* Every prefix of every fixture body, each in a buffer of exactly its length (ASan catches a
 * read past n), with and without headers: the invariants hold throughout. */
static void test_fixture_prefixes(void **state)
{
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        const fixture_case *c = &cases[i];
        fixture fx = fx_load(c->file, c->status);
        qg_rl_snapshot s = snap_empty();
        if (c->headers) c->headers(&s);
        for (size_t len = 0; len <= fx.n; len++) {
            char *b = malloc(len ? len : 1);
            memcpy(b, fx.body, len);
            qg_error_verdict v = classify_n(fx.status, &s, b, len, NOW);
            assert_invariants(&v, fx.status, NOW);
            v = classify_n(fx.status, NULL, b, len, NOW);
            assert_invariants(&v, fx.status, NOW);
            free(b);
        }
        fx_free(&fx);
    }
}

/* ---- rules by status ---- */

static void test_status_classes(void **state)
{
    const char *quota = "{\"error\":{\"type\":\"insufficient_quota\",\"code\":\"insufficient_quota\"}}";
    int none[] = {0, 100, 200, 204, 302, 399};
    for (size_t i = 0; i < QG_ARRAY_LEN(none); i++) {
        qg_error_verdict v = classify(none[i], NULL, quota, NOW);
        assert_verdict(v, QG_EC_NONE, 0, false, "");
    }
    qg_rl_snapshot s = snap_empty();
    retry_after(&s, 5 * SECOND);
    qg_error_verdict v = classify(401, &s, "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\"}}", NOW);
    assert_verdict(v, QG_EC_AUTH_FAILED, 0, false, "authentication_error");
    v = classify(403, NULL, quota, NOW); /* auth wins over any body */
    assert_verdict(v, QG_EC_AUTH_FAILED, 0, false, "insufficient_quota");
    v = classify(401, NULL, NULL, NOW);
    assert_verdict(v, QG_EC_AUTH_FAILED, 0, false, "");

    v = classify(400, NULL,
                 "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"max_tokens: "
                 "must be at most 8192\"}}",
                 NOW);
    assert_verdict(v, QG_EC_CLIENT_ERROR, 0, false, "invalid_request_error");
    v = classify(404, &s, "{\"error\":{\"message\":\"The model does not exist\",\"type\":\"invalid_request_error\","
                          "\"code\":\"model_not_found\"}}", NOW);
    assert_verdict(v, QG_EC_CLIENT_ERROR, 0, false, "model_not_found");
    v = classify(413, NULL, "{\"type\":\"error\",\"error\":{\"type\":\"request_too_large\"}}", NOW);
    assert_verdict(v, QG_EC_CLIENT_ERROR, 0, false, "request_too_large");

    v = classify(500, NULL, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal\"}}", NOW);
    assert_verdict(v, QG_EC_SERVER_ERROR, 0, false, "api_error");
    v = classify(502, &s, "<html><body>Bad Gateway</body></html>", NOW);
    assert_verdict(v, QG_EC_SERVER_ERROR, NOW + 5000, true, "");
    v = classify(503, &s, "", NOW);
    assert_verdict(v, QG_EC_OVERLOADED, NOW + 5000, true, "");
    v = classify(529, NULL, NULL, NOW);
    assert_verdict(v, QG_EC_OVERLOADED, 0, false, "");
    v = classify(503, NULL, quota, NOW); /* the body says otherwise */
    assert_verdict(v, QG_EC_CREDITS_EXHAUSTED, 0, false, "insufficient_quota");
    v = classify(500, NULL, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}", NOW);
    assert_verdict(v, QG_EC_OVERLOADED, 0, false, "overloaded_error");

    /* A 429 with nothing recognisable: rate limited, until retry-after if any. */
    v = classify(429, NULL, NULL, NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, 0, false, "");
    v = classify(429, &s, "Too Many Requests", NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, NOW + 5000, true, "");
    v = classify(429, &s, "{\"error\":{\"message\":\"slow down\",\"code\":\"rate_limit_exceeded\"}}", NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, NOW + 5000, true, "rate_limit_exceeded");
    /* Without retry-after or a hint, the reset of a bucket the headers show at 0. */
    qg_rl_snapshot b = snap_empty();
    bucket(&b, QG_RL_REQUESTS, 100, 3, NOW + 50000, 0);
    bucket(&b, QG_RL_TOKENS, 1000, 0, NOW + 20000, 0);
    v = classify(429, &b, NULL, NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, NOW + 20000, true, "");

    /* 402: credits, unless OpenRouter names another limit. */
    v = classify(402, NULL, "{\"error\":{\"code\":402,\"message\":\"Insufficient credits. Add more.\"}}", NOW);
    assert_verdict(v, QG_EC_CREDITS_EXHAUSTED, 0, false, "402");
    v = classify(402, NULL, "{\"error\":{\"message\":\"Insufficient Balance\",\"type\":\"unknown_error\"}}", NOW);
    assert_verdict(v, QG_EC_CREDITS_EXHAUSTED, 0, false, "unknown_error");
    v = classify(402, NULL, "{\"error\":{\"code\":402,\"message\":\"x\",\"metadata\":{\"limit_source\":"
                            "\"openrouter_credits\",\"reason\":\"weight_exceeds_budget\"}}}", NOW);
    assert_verdict(v, QG_EC_CREDITS_EXHAUSTED, 0, false, "openrouter_credits");
}

/* ---- rules by code ---- */

static void test_openai_codes(void **state)
{
    qg_error_verdict v = classify(429, NULL, "{\"error\":{\"message\":\"You exceeded your current quota\",\"type\":"
                                             "\"insufficient_quota\",\"code\":\"billing_hard_limit_reached\"}}", NOW);
    assert_verdict(v, QG_EC_CREDITS_EXHAUSTED, 0, false, "billing_hard_limit_reached");
    v = classify(400, NULL, "{\"error\":{\"type\":\"invalid_request_error\",\"code\":\"billing_hard_limit_reached\"}}",
                 NOW);
    assert_verdict(v, QG_EC_CREDITS_EXHAUSTED, 0, false, "billing_hard_limit_reached");
    v = classify(429, NULL, "{\"error\":{\"type\":\"insufficient_quota\",\"code\":\"something_new\"}}", NOW);
    assert_verdict(v, QG_EC_CREDITS_EXHAUSTED, 0, false, "something_new");
    v = classify(429, NULL, "{\"error\":{\"type\":\"insufficient_quota\",\"code\":\"project_spend_limit_exceeded\"}}",
                 NOW);
    assert_verdict(v, QG_EC_SPEND_CAPPED, NEXT_MONTH, false, "project_spend_limit_exceeded");
    /* Codes are read, not the message: a rate limit that talks about quota stays a rate limit. */
    v = classify(429, NULL, "{\"error\":{\"message\":\"insufficient_quota? no: credit balance fine\",\"type\":"
                            "\"requests\",\"code\":\"rate_limit_exceeded\"}}", NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, 0, false, "rate_limit_exceeded");
}

static void test_openrouter_limit_reset(void **state)
{
    const char *fmt = "{\"error\":{\"code\":402,\"message\":\"m\",\"metadata\":{\"limit_source\":"
                      "\"openrouter_key_limit\",\"limit_reset\":\"%s\"}}}";
    char body[256];
    int64_t thursday = NOW - 3 * DAY; /* 2026-11-19T10:00:00Z */
    snprintf(body, sizeof body, fmt, "daily");
    qg_error_verdict v = classify(402, NULL, body, thursday);
    assert_verdict(v, QG_EC_SPEND_CAPPED, NEXT_UTC_DAY - 3 * DAY, false, "openrouter_key_limit");
    snprintf(body, sizeof body, fmt, "weekly");
    v = classify(402, NULL, body, thursday);
    assert_verdict(v, QG_EC_SPEND_CAPPED, NEXT_UTC_DAY, false, "openrouter_key_limit"); /* Monday 23 Nov */
    v = classify(402, NULL, body, NEXT_UTC_DAY);                                        /* on Monday 00:00 */
    assert_verdict(v, QG_EC_SPEND_CAPPED, NEXT_UTC_DAY + 7 * DAY, false, "openrouter_key_limit");
    snprintf(body, sizeof body, fmt, "monthly");
    v = classify(402, NULL, body, thursday);
    assert_verdict(v, QG_EC_SPEND_CAPPED, NEXT_MONTH, false, "openrouter_key_limit");
}

static void test_month_boundaries(void **state)
{
    const char *spend = "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"m\","
                        "\"details\":{\"error_code\":\"enforced_spend_limit_reached\"}}}";
    static const struct {
        const char *now, *want;
    } t[] = {
        {"2026-12-15T12:00:00Z", "2027-01-01T00:00:00Z"},
        {"2026-12-31T23:59:59.999Z", "2027-01-01T00:00:00Z"},
        {"2027-01-31T00:00:00Z", "2027-02-01T00:00:00Z"},
        {"2028-02-29T12:00:00Z", "2028-03-01T00:00:00Z"},
        {"2026-11-30T23:59:59Z", "2026-12-01T00:00:00Z"},
        {"2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(t); i++) {
        int64_t now, want;
        assert_int_equal(qg_parse_rfc3339(S(t[i].now), &now), 0);
        assert_int_equal(qg_parse_rfc3339(S(t[i].want), &want), 0);
        qg_error_verdict v = classify(429, NULL, spend, now);
        assert_verdict_at(&v, QG_EC_SPEND_CAPPED, want, false, "enforced_spend_limit_reached", t[i].now, __LINE__);
    }
}

static void test_codex_shapes(void **state)
{
    /* resets_at as a JSON real, as some clients and proxies re-serialise it */
    qg_error_verdict v =
        classify(429, NULL, "{\"error\":{\"type\":\"usage_limit_reached\",\"resets_at\":1.7953488E9}}", NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, 1795348800000LL, true, "usage_limit_reached");
    v = classify(429, NULL, "{\"error\":{\"type\":\"usage_limit_reached\",\"resets_in_seconds\":7200}}", NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, NOW + 7200 * SECOND, true, "usage_limit_reached");
    /* A resets_at in the past (or absurdly far) is not believed: the headers' window reset is used. */
    qg_rl_snapshot s = snap_empty();
    h_codex(&s);
    v = classify(429, &s, "{\"error\":{\"type\":\"usage_limit_reached\",\"resets_at\":1795000000}}", NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, 1795348800000LL, true, "usage_limit_reached");
    v = classify(429, &s, "{\"error\":{\"type\":\"usage_limit_reached\",\"resets_at\":4102444800}}", NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, 1795348800000LL, true, "usage_limit_reached");
    v = classify(429, NULL, "{\"error\":{\"type\":\"usage_limit_reached\"}}", NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, 0, false, "usage_limit_reached");
}

static void test_gemini_shapes(void **state)
{
    const char *daily_array = "[{\"error\":{\"code\":429,\"message\":\"m\",\"status\":\"RESOURCE_EXHAUSTED\","
                              "\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.QuotaFailure\","
                              "\"violations\":[{\"quotaId\":"
                              "\"GenerateRequestsPerDayPerProjectPerModel-FreeTier\"}]}]}}]";
    qg_error_verdict v = classify(429, NULL, daily_array, NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, 1795420800000LL, false, "RESOURCE_EXHAUSTED");
    v = classify(429, NULL, "  [ {\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":"
                            "\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"9.5s\"}]}} ]\n", NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, NOW + 9500, true, "RESOURCE_EXHAUSTED");
    /* A second violation names the daily quota: the day decides. */
    v = classify(429, NULL, "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"violations\":["
                            "{\"quotaId\":\"GenerateRequestsPerMinutePerProjectPerModel\"},{\"quotaId\":"
                            "\"GenerateContentInputTokensPerModelPerDay\"}]},{\"retryDelay\":\"2s\"}]}}", NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, 1795420800000LL, false, "RESOURCE_EXHAUSTED");
    /* A retryDelay past midnight is stated and later: it wins. */
    v = classify(429, NULL, "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"violations\":["
                            "{\"quotaId\":\"PerDay\"}]},{\"retryDelay\":\"90000s\"}]}}", NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, NOW + 90000 * SECOND, true, "RESOURCE_EXHAUSTED");
    /* No details at all ("Resource has been exhausted"): a rate limit with no end. */
    v = classify(429, NULL, "{\"error\":{\"code\":429,\"message\":\"Resource has been exhausted (e.g. check quota).\","
                            "\"status\":\"RESOURCE_EXHAUSTED\"}}", NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, 0, false, "RESOURCE_EXHAUSTED");
    /* Vertex: capacity, not the account's quota. */
    v = classify(429, NULL,
                 "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":"
                 "\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":\"MODEL_CAPACITY_EXHAUSTED\"}]}}",
                 NOW);
    assert_verdict(v, QG_EC_OVERLOADED, 0, false, "RESOURCE_EXHAUSTED");
    v = classify(503, NULL,
                 "{\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}", NOW);
    assert_verdict(v, QG_EC_OVERLOADED, 0, false, "UNAVAILABLE");
}

/* Next midnight in America/Los_Angeles on both sides of both 2026 and 2027 DST switches
 * (2026: 8 March, 1 November; 2027: 14 March, 7 November). */
static void test_pacific_midnight(void **state)
{
    const char *daily = "{\"error\":{\"code\":429,\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"violations\":"
                        "[{\"quotaId\":\"GenerateRequestsPerDayPerProjectPerModel-FreeTier\"}]}]}}";
    static const struct {
        const char *now, *want;
    } t[] = {
        {"2026-03-07T12:00:00Z", "2026-03-08T08:00:00Z"}, /* PST; the switch day starts in PST */
        {"2026-03-08T07:59:59Z", "2026-03-08T08:00:00Z"}, /* 23:59:59 PST on the 7th */
        {"2026-03-08T08:00:00Z", "2026-03-09T07:00:00Z"}, /* midnight itself: the next one */
        {"2026-03-08T09:59:59Z", "2026-03-09T07:00:00Z"}, /* 01:59:59 PST, just before the switch */
        {"2026-03-08T10:00:00Z", "2026-03-09T07:00:00Z"}, /* 03:00 PDT, just after */
        {"2026-03-09T06:59:59Z", "2026-03-09T07:00:00Z"}, /* 23:59:59 PDT on the 8th */
        {"2026-10-31T12:00:00Z", "2026-11-01T07:00:00Z"}, /* PDT; the switch day starts in PDT */
        {"2026-11-01T06:59:59Z", "2026-11-01T07:00:00Z"},
        {"2026-11-01T08:30:00Z", "2026-11-02T08:00:00Z"}, /* 01:30 PDT, first time round */
        {"2026-11-01T08:59:59Z", "2026-11-02T08:00:00Z"},
        {"2026-11-01T09:00:00Z", "2026-11-02T08:00:00Z"}, /* 01:00 PST, second time round */
        {"2026-11-01T09:30:00Z", "2026-11-02T08:00:00Z"},
        {"2026-11-02T07:59:59Z", "2026-11-02T08:00:00Z"}, /* 23:59:59 PST on the 1st */
        {"2026-11-22T10:00:00Z", "2026-11-23T08:00:00Z"}, /* the fixtures' NOW */
        {"2026-12-31T23:00:00Z", "2027-01-01T08:00:00Z"}, /* 15:00 PST on New Year's Eve */
        {"2027-01-01T07:59:59Z", "2027-01-01T08:00:00Z"},
        {"2027-03-13T12:00:00Z", "2027-03-14T08:00:00Z"},
        {"2027-03-14T12:00:00Z", "2027-03-15T07:00:00Z"},
        {"2027-11-06T12:00:00Z", "2027-11-07T07:00:00Z"},
        {"2027-11-07T12:00:00Z", "2027-11-08T08:00:00Z"},
        {"2028-02-29T12:00:00Z", "2028-03-01T08:00:00Z"}, /* leap day */
        {"2026-07-04T06:59:59.999Z", "2026-07-04T07:00:00Z"},
        {"2026-07-04T07:00:00.001Z", "2026-07-05T07:00:00Z"},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(t); i++) {
        int64_t now, want;
        assert_int_equal(qg_parse_rfc3339(S(t[i].now), &now), 0);
        assert_int_equal(qg_parse_rfc3339(S(t[i].want), &want), 0);
        qg_error_verdict v = classify(429, NULL, daily, now);
        assert_verdict_at(&v, QG_EC_WINDOW_EXHAUSTED, want, false, "RESOURCE_EXHAUSTED", t[i].now, __LINE__);
    }
}

/* ---- message tokens and the fallback ---- */

static void test_hints(void **state)
{
    static const struct {
        const char *msg;
        int64_t until;
    } t[] = {
        {"Please try again in 813ms.", NOW + 813},
        {"Please Try Again In 1m30.5s. Visit the docs.", NOW + 90500},
        {"try again in 6m0s", NOW + 360000},
        {"Please try again in 5 minutes.", 0}, /* no unit attached: not guessed */
        {"try again in 20s.Visit", 0},          /* not a duration */
        {"try again in 9999d", 0},              /* beyond what is believed */
        {"try again in ", 0},
        {"try again", 0},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(t); i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"error\":{\"message\":\"%s\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}", t[i].msg);
        qg_error_verdict v = classify(429, NULL, body, NOW);
        assert_verdict_at(&v, QG_EC_RATE_LIMITED, t[i].until, t[i].until != 0, "rate_limit_exceeded", t[i].msg,
                          __LINE__);
    }
}

static void test_fallback(void **state)
{
    /* Cut inside the message: the codes before the cut are found. */
    qg_error_verdict v =
        classify(429, NULL, "{\"error\":{\"code\":\"insufficient_quota\",\"message\":\"You have ex", NOW);
    assert_verdict(v, QG_EC_CREDITS_EXHAUSTED, 0, false, "insufficient_quota");
    v = classify(400, NULL, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"Your "
                            "Credit Balance Is Too Low to acc", NOW);
    assert_verdict(v, QG_EC_CREDITS_EXHAUSTED, 0, false, "");
    /* A token quoted inside a message (escaped quotes) is not a code. */
    v = classify(429, NULL, "{\"error\":{\"message\":\"not \\\"insufficient_quota\\\" at all", NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, 0, false, "");
    /* Nor is an unquoted mention. */
    v = classify(529, NULL, "{\"error\":{\"message\":\"usage_limit_reached overloaded_error", NOW);
    assert_verdict(v, QG_EC_OVERLOADED, 0, false, "");
    /* Plain text: only the message tokens count. */
    v = classify(429, NULL, "Rate limit exceeded: free-models-per-day", NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, NEXT_UTC_DAY, false, "free-models-per-day");
    /* Valid JSON with a member twice is ambiguous: it is read as raw bytes. */
    v = classify(429, NULL, "{\"error\":{\"type\":\"usage_limit_reached\",\"type\":\"tokens\"}}", NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, 0, false, "usage_limit_reached");
}

/* The caller passes at most QG_ERROR_BODY_MAX bytes; anything past it is not looked at. */
static void test_body_limit(void **state)
{
    size_t n = QG_ERROR_BODY_MAX + 4096;
    char *body = malloc(n + 1);
    const char *head = "{\"error\":{\"type\":\"tokens\",\"message\":\"";
    const char *tail = "\",\"code\":\"insufficient_quota\"}}";
    memset(body, 'x', n);
    memcpy(body, head, strlen(head));
    memcpy(body + n - strlen(tail), tail, strlen(tail));
    body[n] = 0;
    qg_error_verdict v = classify_n(429, NULL, body, n, NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, 0, false, ""); /* the code lies past the limit */
    size_t small = 1000;
    memcpy(body + small - strlen(tail), tail, strlen(tail));
    v = classify_n(429, NULL, body, small, NOW);
    assert_verdict(v, QG_EC_CREDITS_EXHAUSTED, 0, false, "insufficient_quota");
    free(body);
}

/* ---- headers ---- */

static void test_window_headers(void **state)
{
    qg_rl_snapshot s = snap_empty();
    s.rejected = true;
    qg_error_verdict v = classify(429, &s, NULL, NOW); /* rejected, no window, no retry-after */
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, 0, false, "");
    retry_after(&s, 3600 * SECOND);
    v = classify(429, &s, NULL, NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, NOW + HOUR, true, "");
    /* Both windows drained: usable again only when the later one resets. */
    bucket(&s, QG_RL_WINDOW_SHORT, QG_PERCENT_FULL, 0, NOW + 2 * HOUR, 5 * HOUR);
    bucket(&s, QG_RL_WINDOW_LONG, QG_PERCENT_FULL, 0, NOW + 3 * DAY, 7 * DAY);
    v = classify(429, &s, NULL, NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, NOW + 3 * DAY, true, "");

    /* A percent window at 0 without "rejected" (Codex headers, no body). */
    qg_rl_snapshot c = snap_empty();
    h_codex(&c);
    v = classify(429, &c, "", NOW);
    assert_verdict(v, QG_EC_WINDOW_EXHAUSTED, 1795348800000LL, true, "");
    v = classify(503, &c, "", NOW); /* only a 429 says the account hit it */
    assert_verdict(v, QG_EC_OVERLOADED, NOW + 7200 * SECOND, true, "");
    /* A window whose reset is past is not drained now. */
    c.e[QG_RL_WINDOW_SHORT].reset_ms = NOW - 1;
    c.retry_after_ms = -1;
    v = classify(429, &c, "", NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, 0, false, "");
}

static void test_bounds(void **state)
{
    qg_rl_snapshot s = snap_empty();
    retry_after(&s, 401 * DAY); /* more than 400 days is not believed */
    qg_error_verdict v = classify(429, &s, NULL, NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, 0, false, "");
    s.retry_after_ms = INT64_MAX;
    v = classify(429, &s, NULL, NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, 0, false, "");
    v = classify(429, &s, NULL, INT64_MAX - 5);
    assert_verdict(v, QG_EC_RATE_LIMITED, 0, false, "");
    s.retry_after_ms = 0; /* "now" is a stated end */
    v = classify(429, &s, NULL, NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, NOW, true, "");
    s.retry_after_ms = 400 * DAY;
    v = classify(429, &s, NULL, NOW);
    assert_verdict(v, QG_EC_RATE_LIMITED, NOW + 400 * DAY, true, "");
    /* Calendar boundaries are not computed for instants outside years 1970..9999. */
    const char *spend = "{\"error\":{\"type\":\"x\",\"details\":{\"error_code\":\"enforced_spend_limit_reached\"}}}";
    v = classify(429, NULL, spend, -1);
    assert_verdict(v, QG_EC_SPEND_CAPPED, 0, false, "enforced_spend_limit_reached");
    v = classify(429, NULL, spend, INT64_MAX);
    assert_verdict(v, QG_EC_SPEND_CAPPED, 0, false, "enforced_spend_limit_reached");
}

/* ---- the code token ---- */

static void test_code_token(void **state)
{
    /* Only the printable run of a token, bounded; never the message. */
    qg_error_verdict v =
        classify(400, NULL, "{\"error\":{\"code\":\"bad code\\nhere\",\"message\":\"sk-secret-123\"}}", NOW);
    assert_verdict(v, QG_EC_CLIENT_ERROR, 0, false, "bad");
    v = classify(400, NULL, "{\"error\":{\"message\":\"key sk-secret-123 is wrong\"}}", NOW);
    assert_verdict(v, QG_EC_CLIENT_ERROR, 0, false, "");
    v = classify(400, NULL, "{\"error\":{\"code\":\"\\u00e9t\\u00e9\",\"type\":\"invalid_request_error\"}}", NOW);
    assert_verdict(v, QG_EC_CLIENT_ERROR, 0, false, "invalid_request_error"); /* non-ASCII: skipped */
    v = classify(400, NULL, "{\"error\":{\"code\":\" \",\"type\":\"t\\\"q\"}}", NOW);
    assert_verdict(v, QG_EC_CLIENT_ERROR, 0, false, "t");
    char body[256];
    snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"type\":\"fallback_type\"}}",
             "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstu"); /* 47 bytes: fits */
    v = classify(400, NULL, body, NOW);
    assert_verdict(v, QG_EC_CLIENT_ERROR, 0, false, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstu");
    snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"type\":\"fallback_type\"}}",
             "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuv"); /* 48 bytes: too long, not cut */
    v = classify(400, NULL, body, NOW);
    assert_verdict(v, QG_EC_CLIENT_ERROR, 0, false, "fallback_type");
    /* A flat error object (no "error" member) is read as the error. */
    v = classify(400, NULL, "{\"code\":\"context_length_exceeded\",\"message\":\"too long\"}", NOW);
    assert_verdict(v, QG_EC_CLIENT_ERROR, 0, false, "context_length_exceeded");
}

static void test_names(void **state)
{
    static const char *const want[] = {"none", "rate_limited", "window_exhausted", "credits_exhausted", "spend_capped",
                                       "overloaded", "transient", "auth_failed", "server_error", "client_error"};
    for (int c = QG_EC_NONE; c <= QG_EC_CLIENT_ERROR; c++)
        assert_string_equal(qg_errclass_name((qg_errclass)c), want[c]);
    assert_string_equal(qg_errclass_name((qg_errclass)99), "unknown");
    assert_string_equal(qg_errclass_name((qg_errclass)-1), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_fixtures_without_headers),
        cmocka_unit_test(test_fixtures_truncated),
        cmocka_unit_test(test_fixture_prefixes),
        cmocka_unit_test(test_status_classes),
        cmocka_unit_test(test_openai_codes),
        cmocka_unit_test(test_openrouter_limit_reset),
        cmocka_unit_test(test_month_boundaries),
        cmocka_unit_test(test_codex_shapes),
        cmocka_unit_test(test_gemini_shapes),
        cmocka_unit_test(test_pacific_midnight),
        cmocka_unit_test(test_hints),
        cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_window_headers),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_code_token),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
