/*
 * fuzz_ratelimit.c — header capture on arbitrary header blocks.
 *
 * The input is read as lines of "name: value" (lines without a colon are skipped, so a
 * whole response head works as a seed); every name and value is copied into its own heap
 * buffer of exactly its size, so ASan sees any read past one.  The headers are captured at
 * several clocks (ordinary, 0 and near both ends of int64) and the snapshot must respect its
 * documented ranges: remaining and limit >= -1, resets and periods >= 0, absent entries
 * blank, percent windows within [-1, QG_PERCENT_FULL] with limit QG_PERCENT_FULL, n_found
 * equal to the present entries plus one for a retry-after.  Remaining <= limit is not
 * checked: providers do not guarantee it.  The output must be fully written (two captures
 * over different garbage agree), and upper-casing every name must change nothing.  Every
 * value (and the whole input) is also read as an OpenAI reset, whose quick path for "156ms"
 * and "1.156s" must agree with qg_parse_reset_as (Go duration, else seconds).
 */
#include "ratelimit.h"
#include "timefmt.h"

#include <stdlib.h>

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

#define NOW 1795341600000LL
#define MAX_FUZZ_HEADERS 64

static bool is_percent_slot(int s) { return s == QG_RL_WINDOW_SHORT || s == QG_RL_WINDOW_LONG; }

static void check_entry(int s, const qg_rl_entry *e)
{
    if (!e->present) {
        CHECK(e->limit == -1 && e->remaining == -1 && e->reset_ms == 0 && e->period_ms == 0);
        return;
    }
    CHECK(e->limit >= -1 && e->remaining >= -1 && e->reset_ms >= 0 && e->period_ms >= 0);
    CHECK(e->limit >= 0 || e->remaining >= 0 || e->reset_ms > 0);
    if (is_percent_slot(s)) CHECK(e->limit == QG_PERCENT_FULL && e->remaining <= QG_PERCENT_FULL);
    else CHECK(e->period_ms == 0); /* only percent windows state a period */
}

static void check_snapshot(const qg_rl_snapshot *s)
{
    int n = 0;
    for (int i = 0; i < QG_RL_N; i++) {
        check_entry(i, &s->e[i]);
        n += s->e[i].present;
    }
    CHECK(s->retry_after_ms >= -1);
    unsigned char rejected;
    memcpy(&rejected, &s->rejected, 1);
    CHECK(rejected <= 1);
    CHECK(s->n_found == n + (s->retry_after_ms >= 0));
}

static void check_same(const qg_rl_snapshot *a, const qg_rl_snapshot *b)
{
    for (int i = 0; i < QG_RL_N; i++) {
        const qg_rl_entry *x = &a->e[i], *y = &b->e[i];
        CHECK(x->present == y->present && x->limit == y->limit && x->remaining == y->remaining);
        CHECK(x->reset_ms == y->reset_ms && x->period_ms == y->period_ms);
    }
    CHECK(a->retry_after_ms == b->retry_after_ms && a->rejected == b->rejected && a->n_found == b->n_found);
}

/* An OpenAI-style reset header with value v lands exactly where timefmt.h puts it. */
static void check_go_reset(qg_slice v, int64_t now)
{
    qg_header h = {QG_SLICE_LIT("x-ratelimit-reset-tokens"), v};
    qg_rl_snapshot s;
    qg_rl_capture(&h, 1, now, &s);
    int64_t want = 0;
    bool ok = qg_parse_reset_as(QG_RFMT_GO_DURATION, v, now, &want) == 0 ||
              qg_parse_reset_as(QG_RFMT_SECONDS, v, now, &want) == 0;
    const qg_rl_entry *e = &s.e[QG_RL_TOKENS];
    if (ok && want > 0) CHECK(e->present && e->reset_ms == want && s.n_found == 1);
    else CHECK(!e->present && s.n_found == 0);
}

static qg_slice dup_slice(const uint8_t *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (n) memcpy(c, p, n);
    return (qg_slice){c, n};
}

/* Splits data into headers; returns how many (at most MAX_FUZZ_HEADERS). */
static size_t split_headers(const uint8_t *data, size_t size, qg_header *h)
{
    size_t n = 0, i = 0;
    while (i < size && n < MAX_FUZZ_HEADERS) {
        const uint8_t *nl = memchr(data + i, '\n', size - i);
        size_t end = nl ? (size_t)(nl - data) : size, len = end - i;
        if (len && data[end - 1] == '\r') len--;
        const uint8_t *colon = memchr(data + i, ':', len);
        if (colon) {
            size_t nlen = (size_t)(colon - (data + i)), v = nlen + 1;
            while (v < len && data[i + v] == ' ') v++;
            h[n].name = dup_slice(data + i, nlen);
            h[n].value = dup_slice(data + i + v, len - v);
            n++;
        }
        i = end + 1;
    }
    return n;
}

static qg_slice upper_copy(qg_slice s)
{
    char *c = malloc(s.n ? s.n : 1);
    for (size_t i = 0; i < s.n; i++) c[i] = s.p[i] >= 'a' && s.p[i] <= 'z' ? (char)(s.p[i] - 32) : s.p[i];
    return (qg_slice){c, s.n};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qg_header h[MAX_FUZZ_HEADERS], up[MAX_FUZZ_HEADERS];
    size_t n = split_headers(data, size, h);
    for (size_t i = 0; i < n; i++) up[i] = (qg_header){upper_copy(h[i].name), h[i].value};

    int64_t nows[] = {NOW, 0, INT64_MAX - 5, INT64_MIN + 5};
    for (size_t k = 0; k < QG_ARRAY_LEN(nows); k++) {
        qg_rl_snapshot a, b, c;
        memset(&a, 0x00, sizeof a);
        memset(&b, 0xff, sizeof b);
        memset(&c, 0x5a, sizeof c);
        qg_rl_capture(n ? h : NULL, n, nows[k], &a);
        qg_rl_capture(h, n, nows[k], &b);
        qg_rl_capture(up, n, nows[k], &c);
        check_snapshot(&a);
        check_same(&a, &b);
        check_same(&a, &c);
        for (size_t i = 0; i < n; i++) check_go_reset(h[i].value, nows[k]);
    }
    qg_slice whole = dup_slice(data, size);
    check_go_reset(whole, NOW);
    free((void *)whole.p);

    for (size_t i = 0; i < n; i++) {
        free((void *)h[i].name.p);
        free((void *)h[i].value.p);
        free((void *)up[i].name.p);
    }
    return 0;
}
