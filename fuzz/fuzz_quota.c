/*
 * fuzz_quota.c — the quota core's persistence parser (qg_quota_restore) on arbitrary bytes
 * (a store file can be damaged or written by another version), then every read of the
 * restored account: eligibility, rank, every bucket's status, a reserve/settle round, and
 * a serialize/restore round trip that must reproduce the text exactly.
 */
#include "quota.h"

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

#define NOW 1795341600000LL

static qg_bucket_cfg buckets[] = {
    {"credits", QG_BUCKET_CREDITS, QG_UNIT_USD, 50, 0, QG_RESET_ANCHORED, 0, 1795600800000LL, 0},
    {"5h", QG_BUCKET_WINDOW, QG_UNIT_REQUESTS, 40, 5 * 3600000LL, QG_RESET_FIRST_USE, 0, 0, 0},
    {"day", QG_BUCKET_WINDOW, QG_UNIT_TOKENS, 100000, 86400000LL, QG_RESET_ANCHORED, 0, 0, 0},
    {"rpm", QG_BUCKET_RATE, QG_UNIT_REQUESTS, 60, 60000, QG_RESET_SLIDING, 0, 0, 0},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qg_account_cfg ac = {.name = "a", .priority = 0, .weight = 1, .buckets = buckets, .n_buckets = 4};
    qg_provider_cfg p = {.name = "p"};
    qg_qacct a;
    qg_qacct_init(&a, &p, &ac);
    if (qg_quota_restore(&a, (const char *)data, size, NOW) == 0) {
        qg_qamount est;
        qg_quota_estimate(NULL, 400, 100, 0, &est);
        int64_t until;
        qg_block why;
        qg_quota_eligible(&a, &est, NOW, &until, &why);
        CHECK(until >= 0 || until == 0);
        qg_qrank rk;
        qg_quota_rank(&a, NOW, &rk);
        CHECK(rk.band >= 0 && rk.band <= 10);
        for (size_t i = 0; i < a.n_b; i++) {
            qg_bucket_status st;
            qg_quota_bucket_status(&a, i, NOW, &st);
            CHECK(st.alert >= QG_ALERT_OK && st.alert <= QG_ALERT_EXHAUSTED);
        }
        qg_qresv r;
        if (qg_quota_reserve(&a, &est, NOW, &r, &until, &why)) qg_quota_settle(&r, &est, NOW + 1);
        qg_buf s1, s2;
        qg_buf_init(&s1, 0);
        qg_buf_init(&s2, 0);
        qg_quota_serialize(&a, &s1);
        qg_qacct b;
        qg_qacct_init(&b, &p, &ac);
        CHECK(qg_quota_restore(&b, s1.data, s1.len, NOW + 1) == 0);
        qg_quota_serialize(&b, &s2);
        qg_qacct_free(&b);
        qg_buf_free(&s1);
        qg_buf_free(&s2);
    }
    qg_qacct_free(&a);
    return 0;
}
