/*
 * fuzz_usage.c — usage extraction on arbitrary bytes: as a JSON body in both dialects, as one
 * stream event (name = first line, data = the rest, and as data alone), and as a whole SSE
 * stream through qg_sse_feed.  Besides "no crash, no leak", counts must stay non-negative and
 * the normalised invariants hold (Anthropic input includes its cache reads and writes).
 *
 * The input is copied to end exactly at a PROT_NONE guard page, so reading one byte too far
 * faults even in code built without ASan (strtod in libc reads number spellings).
 */
#include "sse.h"
#include "usage.h"

#include "guarded.h"
#include <unistd.h>


#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

static void check_usage(const qg_usage *u, qg_dialect d)
{
    CHECK(u->input_tokens >= 0 && u->output_tokens >= 0 && u->cached_tokens >= 0);
    CHECK(u->cache_write_tokens >= 0 && u->reasoning_tokens >= 0);
    if (d == QG_DIALECT_ANTHROPIC) CHECK(u->input_tokens >= u->cached_tokens + u->cache_write_tokens);
}

static void check_stream(const qg_usage_stream *st, int flags)
{
    if (flags & QG_EV_USAGE_ONLY) CHECK(flags & QG_EV_USAGE);
    if (flags & QG_EV_USAGE) CHECK(st->usage.found);
    if (flags & QG_EV_TERMINAL) CHECK(st->terminal);
    if (flags & QG_EV_ERROR) CHECK(st->error);
    CHECK(st->delta_events >= 0);
    check_usage(&st->usage, st->dialect);
}

static int on_event(void *ud, const qg_sse_event *ev)
{
    qg_usage_stream *st = ud;
    check_stream(st, qg_usage_stream_event(st, ev->event, ev->data));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = guarded_copy(data, size);
    for (int d = 0; d < 2; d++) {
        qg_dialect dialect = d ? QG_DIALECT_ANTHROPIC : QG_DIALECT_OPENAI;
        qg_usage u;
        int rc = qg_usage_from_json(dialect, s, size, &u);
        CHECK(rc == 0 ? u.found : !u.found);
        if (rc == 0) check_usage(&u, dialect);

        qg_usage_stream st;
        qg_usage_stream_init(&st, dialect);
        check_stream(&st, qg_usage_stream_event(&st, (qg_slice){s, 0}, (qg_slice){s, size}));
        const char *nl = memchr(s, '\n', size);
        if (nl) {
            qg_slice name = {s, (size_t)(nl - s)}, rest = {nl + 1, size - name.n - 1};
            check_stream(&st, qg_usage_stream_event(&st, name, rest));
        }

        qg_usage_stream_init(&st, dialect);
        qg_sse_parser p;
        qg_sse_init(&p, 4096);
        if (qg_sse_feed(&p, s, size, on_event, &st) == QG_SSE_OK) qg_sse_finish(&p, on_event, &st);
        qg_sse_free(&p);
    }
    return 0;
}
