/*
 * test_retry.c — the retry policy and the all-attempts-failed error (retry.c), as tables:
 * (status, transport error, relayed?, attempts made, max) -> action, and a sequence of
 * failed attempts -> the client's status, code and Retry-After.
 */
#include "testutil.h"
#include "retry.h"

static void test_after_attempt_table(void **state)
{
    (void)state;
    static const struct {
        int status;
        qg_uperr err;
        bool relayed;
        int made, max;
        qg_attempt_action want;
    } cases[] = {
        /* answers that are the provider's word: relayed, whatever the attempt */
        {200, QG_UPERR_NONE, false, 1, 2, QG_ATTEMPT_RELAY},
        {201, QG_UPERR_NONE, false, 2, 2, QG_ATTEMPT_RELAY},
        {400, QG_UPERR_NONE, false, 1, 2, QG_ATTEMPT_RELAY},
        {404, QG_UPERR_NONE, false, 1, 2, QG_ATTEMPT_RELAY},
        {413, QG_UPERR_NONE, false, 1, 2, QG_ATTEMPT_RELAY},
        {422, QG_UPERR_NONE, false, 1, 3, QG_ATTEMPT_RELAY},
        /* retryable answers: the next account while attempts remain */
        {429, QG_UPERR_NONE, false, 1, 2, QG_ATTEMPT_NEXT},
        {401, QG_UPERR_NONE, false, 1, 2, QG_ATTEMPT_NEXT},
        {403, QG_UPERR_NONE, false, 1, 2, QG_ATTEMPT_NEXT},
        {500, QG_UPERR_NONE, false, 1, 2, QG_ATTEMPT_NEXT},
        {503, QG_UPERR_NONE, false, 2, 3, QG_ATTEMPT_NEXT},
        {529, QG_UPERR_NONE, false, 1, 2, QG_ATTEMPT_NEXT},
        {429, QG_UPERR_NONE, false, 2, 2, QG_ATTEMPT_GIVE_UP},
        {500, QG_UPERR_NONE, false, 1, 1, QG_ATTEMPT_GIVE_UP},
        /* QG_MAX_ATTEMPTS caps whatever max says */
        {500, QG_UPERR_NONE, false, QG_MAX_ATTEMPTS, QG_MAX_ATTEMPTS + 5, QG_ATTEMPT_GIVE_UP},
        /* transport failures before anything was relayed */
        {0, QG_UPERR_CONNECT, false, 1, 2, QG_ATTEMPT_NEXT},
        {0, QG_UPERR_BROKEN, false, 1, 2, QG_ATTEMPT_NEXT},   /* died after the write: an attempt */
        {0, QG_UPERR_TIMEOUT, false, 1, 2, QG_ATTEMPT_NEXT},
        {0, QG_UPERR_DNS, false, 2, 2, QG_ATTEMPT_GIVE_UP},
        {0, QG_UPERR_TIMEOUT, false, 3, 3, QG_ATTEMPT_GIVE_UP},
        /* once the response reached the client, never another attempt */
        {0, QG_UPERR_BROKEN, true, 1, 5, QG_ATTEMPT_BROKEN},
        {0, QG_UPERR_IDLE_TIMEOUT, true, 1, 5, QG_ATTEMPT_BROKEN},
        {0, QG_UPERR_PROTOCOL, true, 1, 1, QG_ATTEMPT_BROKEN},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        qg_attempt_action got = qg_after_attempt(cases[i].status, cases[i].err, cases[i].relayed, cases[i].made, cases[i].max);
        if (got != cases[i].want) fail_msg("case %zu (status %d err %s): action %d, want %d", i, cases[i].status,
                                           qg_uperr_name(cases[i].err), got, cases[i].want);
    }
}

typedef struct {
    int status;
    qg_uperr err;
    int64_t retry_after_ms;
} attempt;

static void run_log(const attempt *a, size_t n, qg_client_error *e)
{
    qg_attempt_log log = {0};
    for (size_t i = 0; i < n; i++) qg_attempt_log_add(&log, a[i].status, a[i].err, a[i].retry_after_ms);
    qg_attempts_error(&log, e);
}

static void test_attempts_error_table(void **state)
{
    (void)state;
    static const struct {
        attempt a[3];
        size_t n;
        int status;
        const char *code;
        int retry_after;
    } cases[] = {
        /* every account rate limited: 503 with the LARGEST hint, not the last */
        {{{429, 0, 3000}, {429, 0, 5000}}, 2, 503, "no_account_available", 5},
        {{{429, 0, 5000}, {429, 0, 3000}}, 2, 503, "no_account_available", 5},
        {{{429, 0, 1500}}, 1, 503, "no_account_available", 2}, /* rounded up */
        {{{429, 0, 0}, {429, 0, 0}}, 2, 503, "no_account_available", 1}, /* no hint: 1 s */
        {{{500, 0, 0}, {429, 0, 7000}}, 2, 503, "no_account_available", 7},
        {{{429, 0, 9000}, {500, 0, 0}}, 2, 502, "upstream_error", 0},
        {{{401, 0, 0}}, 1, 502, "upstream_error", 0},
        {{{403, 0, 0}, {401, 0, 0}}, 2, 502, "upstream_error", 0},
        {{{502, 0, 0}}, 1, 502, "upstream_error", 0},
        {{{0, QG_UPERR_TIMEOUT, 0}}, 1, 504, "upstream_timeout", 0},
        {{{500, 0, 0}, {0, QG_UPERR_IDLE_TIMEOUT, 0}}, 2, 504, "upstream_timeout", 0},
        {{{0, QG_UPERR_TIMEOUT, 0}, {0, QG_UPERR_CONNECT, 0}}, 2, 502, "upstream_error", 0},
        {{{0, QG_UPERR_BROKEN, 0}}, 1, 502, "upstream_error", 0},
        {{{0, QG_UPERR_DNS, 0}}, 1, 502, "upstream_error", 0},
        /* an absurd hint is capped at a day */
        {{{429, 0, INT64_MAX / 2}}, 1, 503, "no_account_available", 86400},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        qg_client_error e;
        run_log(cases[i].a, cases[i].n, &e);
        if (e.status != cases[i].status || strcmp(e.code, cases[i].code) != 0 || e.retry_after_s != cases[i].retry_after)
            fail_msg("case %zu: %d %s retry-after %d, want %d %s %d", i, e.status, e.code, e.retry_after_s,
                     cases[i].status, cases[i].code, cases[i].retry_after);
        assert_true(strlen(e.message) > 0);
    }
}

static void test_messages_name_the_failure(void **state)
{
    (void)state;
    qg_client_error e;
    run_log((attempt[]){{503, 0, 0}}, 1, &e);
    assert_non_null(strstr(e.message, "503"));
    run_log((attempt[]){{0, QG_UPERR_CONNECT, 0}}, 1, &e);
    assert_non_null(strstr(e.message, "connect"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_after_attempt_table),
        cmocka_unit_test(test_attempts_error_table),
        cmocka_unit_test(test_messages_name_the_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
