/*
 * fuzz_sse.c — the SSE splitter must give the same blocks however the input is cut.
 *
 * The input is fed twice with a small max_event (derived from the input): whole, and in
 * pieces whose sizes come from the input's own bytes.  Both runs must return the same code
 * and report the same events (raw, event, data, has_data, serialised into a log); when they
 * succeed, the raw blocks followed by the pending bytes must be the input again, before and
 * after qg_sse_finish.  Slices handed to the callback must lie where the header says.
 */
#include "sse.h"

#include <stdlib.h>

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

typedef struct {
    qg_buf log;  /* every event, serialised */
    qg_buf raws; /* raw blocks concatenated */
} run;

static void log_slice(qg_buf *b, qg_slice s)
{
    CHECK(qg_buf_append(b, &s.n, sizeof s.n) == 0);
    CHECK(qg_buf_append(b, s.p, s.n) == 0);
}

static int on_event(void *ud, const qg_sse_event *ev)
{
    run *r = ud;
    const char *rs = ev->raw.p, *re = ev->raw.p + ev->raw.n;
    CHECK(ev->raw.n > 0);
    CHECK(ev->raw.p[ev->raw.n - 1] == '\n' || ev->raw.p[ev->raw.n - 1] == '\r');
    CHECK(ev->event.n == 0 || (ev->event.p >= rs && ev->event.p + ev->event.n <= re));
    CHECK(ev->data.n <= ev->raw.n);
    CHECK(ev->has_data || ev->data.n == 0);
    log_slice(&r->log, ev->raw);
    log_slice(&r->log, ev->event);
    log_slice(&r->log, ev->data);
    char hd = ev->has_data;
    CHECK(qg_buf_append(&r->log, &hd, 1) == 0);
    CHECK(qg_buf_append(&r->raws, ev->raw.p, ev->raw.n) == 0);
    return 0;
}

/* Feeds data in pieces (piece size from the input when split) and returns the first error. */
static int feed(const uint8_t *data, size_t size, size_t max_event, bool split, run *r, qg_buf *pending)
{
    qg_sse_parser p;
    qg_sse_init(&p, max_event);
    int rc = 0;
    size_t off = 0, k = 0;
    while (off < size && rc == 0) {
        size_t piece = split ? 1 + (size_t)(data[k++ % size] % 23) : size;
        piece = QG_MIN(piece, size - off);
        /* A private copy of each piece, so ASan sees any read past it. */
        char *chunk = malloc(piece);
        memcpy(chunk, data + off, piece);
        rc = qg_sse_feed(&p, chunk, piece, on_event, r);
        free(chunk);
        off += piece;
    }
    if (rc == 0) {
        qg_slice before = qg_sse_pending(&p);
        CHECK(r->raws.len + before.n == size);
        rc = qg_sse_finish(&p, on_event, r);
    }
    qg_slice pend = qg_sse_pending(&p);
    CHECK(qg_buf_append(pending, pend.p, pend.n) == 0);
    CHECK(pend.n <= p.max_event);
    qg_sse_free(&p);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t max_event = size ? 8 + data[0] % 120 : 64;
    run whole, parts;
    qg_buf pend_whole, pend_parts;
    qg_buf_init(&whole.log, 0), qg_buf_init(&whole.raws, 0), qg_buf_init(&parts.log, 0), qg_buf_init(&parts.raws, 0);
    qg_buf_init(&pend_whole, 0), qg_buf_init(&pend_parts, 0);

    int rc1 = feed(data, size, max_event, false, &whole, &pend_whole);
    int rc2 = feed(data, size, max_event, true, &parts, &pend_parts);
    CHECK(rc1 == rc2);
    CHECK(rc1 == QG_SSE_OK || rc1 == QG_SSE_TOO_LARGE);
    CHECK(whole.log.len == parts.log.len && (whole.log.len == 0 || memcmp(whole.log.data, parts.log.data, whole.log.len) == 0));
    if (rc1 == QG_SSE_OK) {
        /* raw blocks + pending == input, for both ways of feeding */
        for (int i = 0; i < 2; i++) {
            run *r = i ? &parts : &whole;
            qg_buf *pend = i ? &pend_parts : &pend_whole;
            CHECK(r->raws.len + pend->len == size);
            CHECK(r->raws.len == 0 || memcmp(r->raws.data, data, r->raws.len) == 0);
            CHECK(pend->len == 0 || memcmp(pend->data, data + r->raws.len, pend->len) == 0);
        }
    }
    qg_buf_free(&whole.log), qg_buf_free(&whole.raws), qg_buf_free(&parts.log), qg_buf_free(&parts.raws);
    qg_buf_free(&pend_whole), qg_buf_free(&pend_parts);
    return 0;
}
