/*
 * fuzz_errclass.c — error classification on arbitrary bytes as the error body, for a status
 * of every kind, without a header snapshot and with one derived from the input's last bytes,
 * at the fixtures' NOW and at instants taken from the input (the calendar math) and at the
 * int64 extremes.  Besides "no crash", every verdict must keep the guarantees errclass.h
 * lists, and classifying twice gives the same verdict.
 *
 * The input is copied to end exactly at a PROT_NONE guard page, so reading one byte past n
 * faults even where ASan's redzones would not see it.
 */
#include "errclass.h"

#include "guarded.h"
#include <unistd.h>

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

#define NOW 1795341600000LL
#define DAY_MS 86400000LL
#define MAX_AHEAD_MS (400 * DAY_MS)
#define MAX_CIVIL_MS 253402300799999LL /* 9999-12-31T23:59:59.999Z */

static int64_t load64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return (int64_t)v;
}

/* A snapshot from the input's last bytes: flags, retry-after, and per slot a presence bit,
 * a remaining of 0 or more, and a reset around now (past, near, far). */
static void snapshot_from(const uint8_t *data, size_t size, int64_t now, int64_t garbage, qg_rl_snapshot *s)
{
    memset(s, 0, sizeof *s);
    uint8_t b[4 + 3 * QG_RL_N] = {0};
    size_t k = QG_MIN(size, sizeof b);
    memcpy(b, data + size - k, k);
    s->rejected = b[0] & 1;
    s->retry_after_ms = (b[0] & 2) ? -1 : (int64_t)(int16_t)(b[1] << 8 | b[2]) * (b[3] | 1) * 1000;
    for (int i = 0; i < QG_RL_N; i++) {
        const uint8_t *e = b + 4 + 3 * i;
        s->e[i].present = e[0] & 1;
        s->e[i].limit = e[0] & 2 ? QG_PERCENT_FULL : -1;
        s->e[i].remaining = e[0] & 4 ? 0 : e[0] & 8 ? -1 : e[1];
        int64_t off = (int64_t)(int16_t)(e[1] << 8 | e[2]) * (e[0] >> 4 | 1) * 60000;
        /* wraps at the int64 extremes (unsigned sum): any value must be survivable */
        s->e[i].reset_ms = e[0] & 0x80 ? garbage : (int64_t)((uint64_t)now + (uint64_t)off);
        s->n_found += s->e[i].present;
    }
}

static bool until_free(qg_errclass c)
{
    return c == QG_EC_NONE || c == QG_EC_AUTH_FAILED || c == QG_EC_CLIENT_ERROR || c == QG_EC_CREDITS_EXHAUSTED;
}

/* The guarantees of errclass.h. */
static void check(const qg_error_verdict *v, int status, int64_t now)
{
    CHECK((unsigned)v->cls <= QG_EC_CLIENT_ERROR);
    CHECK(strcmp(qg_errclass_name(v->cls), "unknown") != 0);
    CHECK(memchr(v->code, 0, sizeof v->code) != NULL);
    for (const char *p = v->code; *p; p++) CHECK(*p > ' ' && *p < 0x7f && *p != '"' && *p != '\\');
    if (status < 400) CHECK(v->cls == QG_EC_NONE && v->until_ms == 0 && !v->until_stated && !v->code[0]);
    else CHECK(v->cls != QG_EC_NONE);
    if (status == 401 || status == 403) CHECK(v->cls == QG_EC_AUTH_FAILED);
    if (until_free(v->cls)) CHECK(v->until_ms == 0);
    if (v->until_ms == 0) CHECK(!v->until_stated);
    else CHECK(v->until_ms >= now && (uint64_t)v->until_ms - (uint64_t)now <= (uint64_t)MAX_AHEAD_MS);
    if (v->until_ms != 0 && !v->until_stated) CHECK(v->until_ms > now); /* inferred: a future boundary */
}

static void run(int status, const qg_rl_snapshot *h, const char *body, size_t n, int64_t now, bool twice)
{
    qg_error_verdict a, b;
    memset(&a, 0x5a, sizeof a);
    qg_classify_error(status, h, body, n, now, &a);
    check(&a, status, now);
    if (!twice) return;
    memset(&b, 0xa5, sizeof b);
    qg_classify_error(status, h, body, n, now, &b);
    CHECK(memcmp(&a, &b, sizeof a) == 0); /* pure, and out is fully written */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int statuses[] = {200, 399, 400, 401, 402, 403, 404, 429, 500, 503, 529};
    const char *body = guarded_copy(data, size);
    int64_t nows[4] = {NOW, NOW, INT64_MIN + 5, INT64_MAX - 5}, garbage = 0;
    if (size >= 8) {
        garbage = load64(data);
        nows[1] = (int64_t)((uint64_t)garbage % (uint64_t)MAX_CIVIL_MS); /* years 1970..9999 */
        nows[2] = garbage;
    }
    for (size_t t = 0; t < QG_ARRAY_LEN(nows); t++) {
        qg_rl_snapshot s;
        snapshot_from(data, size, nows[t], garbage, &s);
        for (size_t i = 0; i < QG_ARRAY_LEN(statuses); i++) {
            /* other instants: the statuses whose rules do time arithmetic */
            if (t > 0 && statuses[i] != 429 && statuses[i] != 402 && statuses[i] != 503) continue;
            run(statuses[i], NULL, body, size, nows[t], t == 0);
            run(statuses[i], &s, body, size, nows[t], t == 0);
        }
    }
    return 0;
}
