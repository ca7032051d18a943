/*
 * test_sse.c — the SSE block splitter.  The core property: however a stream is cut into
 * feeds (whole, byte by byte, random pieces), the same blocks come out with the same raw
 * bytes, and raw blocks + pending reassemble the input exactly.  Plus the line-ending
 * variants (LF, CRLF, CR), a CRLF split across feeds, max_event, multi-line data, comments,
 * zero-copy reporting and callback stops.
 */
#include "testutil.h"
#include "sse.h"

/* ---- collecting events ---- */

typedef struct {
    char *raw, *event, *data;
    size_t raw_n, event_n, data_n;
    bool has_data;
    bool raw_in_input; /* raw pointed into the fed buffer (zero copy) */
} ev_copy;

typedef struct {
    ev_copy *v;
    size_t n, cap;
    const char *feed_p; /* the buffer being fed, for the zero-copy check */
    size_t feed_n;
    int stop_at; /* return 99 from the callback for event number stop_at (1-based); 0 = never */
} ev_list;

static char *dup_bytes(qg_slice s)
{
    char *r = malloc(s.n + 1);
    if (s.n) memcpy(r, s.p, s.n);
    r[s.n] = 0;
    return r;
}

static int collect(void *ud, const qg_sse_event *ev)
{
    ev_list *l = ud;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
    }
    /* event and data slices must lie inside raw or be empty / in scratch; check event here. */
    if (ev->event.n) assert_true(ev->event.p >= ev->raw.p && ev->event.p + ev->event.n <= ev->raw.p + ev->raw.n);
    l->v[l->n++] = (ev_copy){
        .raw = dup_bytes(ev->raw), .raw_n = ev->raw.n,
        .event = dup_bytes(ev->event), .event_n = ev->event.n,
        .data = dup_bytes(ev->data), .data_n = ev->data.n,
        .has_data = ev->has_data,
        .raw_in_input = l->feed_p && ev->raw.p >= l->feed_p && ev->raw.p + ev->raw.n <= l->feed_p + l->feed_n,
    };
    return l->stop_at && (int)l->n == l->stop_at ? 99 : 0;
}

static void ev_list_free(ev_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].raw), free(l->v[i].event), free(l->v[i].data);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ---- feeding in pieces ---- */

static uint64_t rng_state;
static size_t rng_below(size_t n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (size_t)((rng_state >> 33) % n);
}

enum { SPLIT_WHOLE = 0, SPLIT_BYTES = 1, SPLIT_RANDOM = 2 };

typedef struct {
    int rc;           /* first non-OK return of feed/finish */
    char *pending;    /* pending after feeding, before finish */
    size_t pending_n; /* ... and its length */
    size_t held_n;    /* pending length after finish */
} feed_result;

/* Feeds input in the given way (random pieces 1..max_piece bytes), then calls finish. */
static feed_result feed_all(const char *in, size_t n, int how, size_t max_piece, size_t max_event, ev_list *out)
{
    qg_sse_parser p;
    qg_sse_init(&p, max_event);
    feed_result r = {0};
    size_t off = 0;
    while (off < n && r.rc == 0) {
        size_t piece = how == SPLIT_WHOLE ? n : how == SPLIT_BYTES ? 1 : 1 + rng_below(max_piece);
        piece = QG_MIN(piece, n - off);
        /* Copy each piece into its own heap buffer so ASan catches reads outside it. */
        char *chunk = malloc(piece);
        memcpy(chunk, in + off, piece);
        out->feed_p = chunk, out->feed_n = piece;
        r.rc = qg_sse_feed(&p, chunk, piece, collect, out);
        free(chunk);
        out->feed_p = NULL;
        off += piece;
    }
    qg_slice pend = qg_sse_pending(&p);
    r.pending = dup_bytes(pend);
    r.pending_n = pend.n;
    if (r.rc == 0) r.rc = qg_sse_finish(&p, collect, out);
    r.held_n = qg_sse_pending(&p).n;
    qg_sse_free(&p);
    return r;
}

static void assert_same_events(const ev_list *a, const ev_list *b, bool same_raw)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        if (same_raw) {
            assert_int_equal(a->v[i].raw_n, b->v[i].raw_n);
            assert_memory_equal(a->v[i].raw, b->v[i].raw, a->v[i].raw_n);
        }
        assert_int_equal(a->v[i].event_n, b->v[i].event_n);
        assert_memory_equal(a->v[i].event, b->v[i].event, a->v[i].event_n);
        assert_int_equal(a->v[i].data_n, b->v[i].data_n);
        assert_memory_equal(a->v[i].data, b->v[i].data, a->v[i].data_n);
        assert_int_equal(a->v[i].has_data, b->v[i].has_data);
    }
}

/* Raw blocks, in order, followed by the pending bytes, must give back the input. */
static void assert_reassembles(const ev_list *l, const feed_result *r, const char *in, size_t n)
{
    size_t off = 0;
    for (size_t i = 0; i < l->n; i++) {
        assert_true(off + l->v[i].raw_n <= n);
        assert_memory_equal(l->v[i].raw, in + off, l->v[i].raw_n);
        off += l->v[i].raw_n;
    }
    assert_int_equal(off + r->held_n, n);
}

/* Feeds input whole, byte by byte and in 40 random splittings; every way must give the
 * same events as the whole feed.  Returns the whole-feed events in *whole. */
static void check_all_splits(const char *in, size_t n, size_t max_event, ev_list *whole)
{
    feed_result r = feed_all(in, n, SPLIT_WHOLE, 0, max_event, whole);
    assert_int_equal(r.rc, 0);
    assert_reassembles(whole, &r, in, n);
    free(r.pending);
    for (int k = 0; k < 42; k++) {
        ev_list other = {0};
        rng_state = 0x5eed0000u + (uint64_t)k;
        int how = k == 0 ? SPLIT_BYTES : SPLIT_RANDOM;
        feed_result s = feed_all(in, n, how, k < 20 ? 8 : 200, max_event, &other);
        assert_int_equal(s.rc, 0);
        assert_same_events(whole, &other, true);
        assert_reassembles(&other, &s, in, n);
        free(s.pending);
        ev_list_free(&other);
    }
}

/* ---- fixtures ---- */

typedef struct {
    const char *file;
    size_t events;
    size_t data_events; /* blocks with a data field */
    const char *first_event_name;
    const char *last_data;
} sse_fixture;

static const sse_fixture fixtures[] = {
    {"anthropic-stream.sse", 9, 9, "message_start", "{\"type\":\"message_stop\"}"},
    {"anthropic-stream-overloaded.sse", 4, 4, "message_start",
     "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"},
    {"openai-chat-stream-include-usage.sse", 7, 7, "", "[DONE]"},
    {"openai-responses-stream.sse", 10, 10, "response.created", NULL},
    {"openrouter-stream.sse", 7, 5, "", "[DONE]"},
};

static void test_fixtures_all_splits(void **state)
{
    for (size_t f = 0; f < QG_ARRAY_LEN(fixtures); f++) {
        size_t n;
        char *in = tu_fixture(fixtures[f].file, &n);
        ev_list whole = {0};
        check_all_splits(in, n, 0, &whole);
        assert_int_equal(whole.n, fixtures[f].events);
        size_t with_data = 0;
        for (size_t i = 0; i < whole.n; i++) {
            with_data += whole.v[i].has_data;
            assert_true(whole.v[i].raw_in_input); /* fed whole: every block is zero-copy */
        }
        assert_int_equal(with_data, fixtures[f].data_events);
        assert_string_equal(whole.v[0].event, fixtures[f].first_event_name);
        if (fixtures[f].last_data) assert_string_equal(whole.v[whole.n - 1].data, fixtures[f].last_data);
        ev_list_free(&whole);
        free(in);
    }
}

static void test_openrouter_comment_blocks(void **state)
{
    size_t n;
    char *in = tu_fixture("openrouter-stream.sse", &n);
    ev_list l = {0};
    feed_result r = feed_all(in, n, SPLIT_WHOLE, 0, 0, &l);
    assert_int_equal(r.rc, 0);
    assert_int_equal(l.n, 7);
    for (int i = 0; i < 2; i++) { /* comment-only blocks are still reported, for forwarding */
        assert_string_equal(l.v[i].raw, ": OPENROUTER PROCESSING\n\n");
        assert_false(l.v[i].has_data);
        assert_int_equal(l.v[i].data_n, 0);
        assert_int_equal(l.v[i].event_n, 0);
    }
    assert_true(l.v[2].has_data);
    assert_true(strncmp(l.v[2].data, "{\"id\":\"gen-", 11) == 0);
    free(r.pending);
    ev_list_free(&l);
    free(in);
}

/* Rewrites every LF as `eol`. */
static char *convert_eol(const char *in, size_t n, const char *eol, size_t *out_n)
{
    size_t el = strlen(eol), k = 0;
    char *out = malloc(n * el + 1);
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\n') memcpy(out + k, eol, el), k += el;
        else out[k++] = in[i];
    }
    out[k] = 0;
    *out_n = k;
    return out;
}

static void test_line_ending_variants(void **state)
{
    for (size_t f = 0; f < QG_ARRAY_LEN(fixtures); f++) {
        size_t n;
        char *in = tu_fixture(fixtures[f].file, &n);
        ev_list lf = {0};
        feed_result r = feed_all(in, n, SPLIT_WHOLE, 0, 0, &lf);
        free(r.pending);
        for (int v = 0; v < 2; v++) {
            size_t vn;
            char *var = convert_eol(in, n, v == 0 ? "\r\n" : "\r", &vn);
            ev_list ve = {0};
            check_all_splits(var, vn, 0, &ve);
            assert_same_events(&lf, &ve, false);

            /* Fed whole, a CRLF stream delivers everything at once; a CR stream holds its
             * last block until finish (its final CR might have been half of a CRLF). */
            ev_list before = {0};
            qg_sse_parser p;
            qg_sse_init(&p, 0);
            assert_int_equal(qg_sse_feed(&p, var, vn, collect, &before), 0);
            assert_int_equal(before.n, v == 0 ? lf.n : lf.n - 1);
            assert_int_equal(qg_sse_pending(&p).n, v == 0 ? 0 : ve.v[ve.n - 1].raw_n);
            assert_int_equal(qg_sse_finish(&p, collect, &before), 0);
            assert_int_equal(before.n, lf.n);
            assert_int_equal(qg_sse_pending(&p).n, 0);
            qg_sse_free(&p);
            ev_list_free(&before);
            ev_list_free(&ve);
            free(var);
        }
        ev_list_free(&lf);
        free(in);
    }
}

/* ---- targeted cases ---- */

static void feed_str(qg_sse_parser *p, const char *s, ev_list *l, int want_rc)
{
    assert_int_equal(qg_sse_feed(p, s, strlen(s), collect, l), want_rc);
}

static void test_split_crlf(void **state)
{
    qg_sse_parser p;
    ev_list l = {0};
    qg_sse_init(&p, 0);
    feed_str(&p, "data: a\r\n\r", &l, 0); /* the blank line's CR ends the feed */
    assert_int_equal(l.n, 0);              /* held: it might be CRLF */
    feed_str(&p, "\ndata: b\r\n\r\n", &l, 0);
    assert_int_equal(l.n, 2); /* and not three: the LF is not a blank line of its own */
    assert_string_equal(l.v[0].raw, "data: a\r\n\r\n");
    assert_string_equal(l.v[0].data, "a");
    assert_string_equal(l.v[1].raw, "data: b\r\n\r\n");

    /* CR at the end of a non-blank line, LF in the next feed. */
    feed_str(&p, "data: c\r", &l, 0);
    feed_str(&p, "\n", &l, 0);
    feed_str(&p, "\r", &l, 0);
    feed_str(&p, "\n", &l, 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.v[2].raw, "data: c\r\n\r\n");
    assert_int_equal(qg_sse_pending(&p).n, 0);

    /* A held CR followed by something other than LF: it was a CR line ending after all. */
    feed_str(&p, "data: d\r\r", &l, 0);
    assert_int_equal(l.n, 3);
    feed_str(&p, "data: e\r\r\n", &l, 0);
    assert_int_equal(l.n, 5);
    assert_string_equal(l.v[3].raw, "data: d\r\r");
    assert_string_equal(l.v[4].raw, "data: e\r\r\n");
    assert_string_equal(l.v[4].data, "e");
    assert_int_equal(qg_sse_finish(&p, collect, &l), 0);
    assert_int_equal(l.n, 5);
    qg_sse_free(&p);
    ev_list_free(&l);
}

static void test_too_large(void **state)
{
    const char *in = "data: ok\n\ndata: 0123456789012345678901234567890123456789\n\ndata: late\n\n";
    size_t n = strlen(in);
    for (int how = 0; how < 3; how++) {
        ev_list l = {0};
        rng_state = 7;
        feed_result r = feed_all(in, n, how, 5, 32, &l);
        assert_int_equal(r.rc, QG_SSE_TOO_LARGE);
        assert_int_equal(l.n, 1); /* the block before it was delivered; nothing after */
        assert_string_equal(l.v[0].data, "ok");
        assert_int_equal(r.held_n, 0);
        free(r.pending);
        ev_list_free(&l);
    }
    /* An unterminated tail over the limit fails as soon as it is known, whole or split. */
    const char *tail = "data: 0123456789012345678901234567890123456789";
    for (int how = 0; how < 3; how++) {
        ev_list l = {0};
        feed_result r = feed_all(tail, strlen(tail), how, 5, 32, &l);
        assert_int_equal(r.rc, QG_SSE_TOO_LARGE);
        assert_int_equal(l.n, 0);
        free(r.pending);
        ev_list_free(&l);
    }
    /* Exactly max_event bytes is fine. */
    const char *exact = "data: 012345678901234567890123\n\n"; /* 32 bytes */
    assert_int_equal(strlen(exact), 32);
    for (int how = 0; how < 3; how++) {
        ev_list l = {0};
        feed_result r = feed_all(exact, 32, how, 5, 32, &l);
        assert_int_equal(r.rc, 0);
        assert_int_equal(l.n, 1);
        free(r.pending);
        ev_list_free(&l);
    }
}

static void test_multiline_data_and_fields(void **state)
{
    const char *in = "event: first\n"
                     "data: a\n"
                     ": a comment between data lines\n"
                     "data:b\n"
                     "data\n"
                     "data:  c\n"
                     "id: 7\n"
                     "retry: 100\n"
                     "event: second\n"
                     "\n";
    ev_list whole = {0};
    check_all_splits(in, strlen(in), 0, &whole);
    assert_int_equal(whole.n, 1);
    assert_string_equal(whole.v[0].event, "second"); /* the last event: wins */
    assert_string_equal(whole.v[0].data, "a\nb\n\n c"); /* one space stripped, not two */
    assert_true(whole.v[0].has_data);
    assert_string_equal(whole.v[0].raw, in);
    ev_list_free(&whole);

    /* Empty data and names with odd bytes. */
    const char *in2 = "data:\n\nevent:\ndata: x\n\nDATA: y\n\n\xef\xbb\xbf" "data: bom\n\n";
    check_all_splits(in2, strlen(in2), 0, &whole);
    assert_int_equal(whole.n, 4);
    assert_true(whole.v[0].has_data);
    assert_int_equal(whole.v[0].data_n, 0);
    assert_int_equal(whole.v[1].event_n, 0);
    assert_string_equal(whole.v[1].data, "x");
    assert_false(whole.v[2].has_data); /* field names are case-sensitive */
    assert_string_equal(whole.v[3].data, "bom");
    ev_list_free(&whole);
}

static void test_comments_and_blank_lines(void **state)
{
    const char *in = "\n: keepalive\n\n\r\n: a\r: b\r\r";
    ev_list l = {0};
    check_all_splits(in, strlen(in), 0, &l);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.v[0].raw, "\n"); /* a stray blank line is a block of its own */
    assert_string_equal(l.v[1].raw, ": keepalive\n\n");
    assert_string_equal(l.v[2].raw, "\r\n");
    assert_string_equal(l.v[3].raw, ": a\r: b\r\r");
    for (size_t i = 0; i < l.n; i++) {
        assert_false(l.v[i].has_data);
        assert_int_equal(l.v[i].event_n, 0);
    }
    ev_list_free(&l);
}

static void test_zero_copy_and_pending(void **state)
{
    qg_sse_parser p;
    ev_list l = {0};
    qg_sse_init(&p, 0);
    const char *buf = "data: one\n\ndata: tw";
    l.feed_p = buf, l.feed_n = strlen(buf);
    feed_str(&p, buf, &l, 0);
    assert_int_equal(l.n, 1);
    assert_true(l.v[0].raw_in_input);
    qg_slice pend = qg_sse_pending(&p);
    assert_int_equal(pend.n, 8);
    assert_memory_equal(pend.p, "data: tw", 8);
    const char *buf2 = "o\n\ndata: three\n\n";
    l.feed_p = buf2, l.feed_n = strlen(buf2);
    feed_str(&p, buf2, &l, 0);
    assert_int_equal(l.n, 3);
    assert_false(l.v[1].raw_in_input); /* completed from pending: our copy */
    assert_string_equal(l.v[1].raw, "data: two\n\n");
    assert_true(l.v[2].raw_in_input);
    assert_int_equal(qg_sse_pending(&p).n, 0);

    /* A truncated final event stays pending after finish. */
    feed_str(&p, "data: cut", &l, 0);
    assert_int_equal(qg_sse_finish(&p, collect, &l), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(qg_sse_pending(&p).n, 9);
    feed_str(&p, "", &l, 0); /* an empty feed changes nothing */
    assert_int_equal(qg_sse_pending(&p).n, 9);
    qg_sse_free(&p);
    ev_list_free(&l);
}

static void test_callback_stop(void **state)
{
    qg_sse_parser p;
    ev_list l = {.stop_at = 2};
    qg_sse_init(&p, 0);
    feed_str(&p, "data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4", &l, 99);
    assert_int_equal(l.n, 2);
    assert_int_equal(qg_sse_pending(&p).n, 0);
    qg_sse_free(&p);
    ev_list_free(&l);

    /* Stop on a block completed from pending. */
    ev_list l2 = {.stop_at = 1};
    qg_sse_init(&p, 0);
    feed_str(&p, "data: 1\n", &l2, 0);
    feed_str(&p, "\ndata: 2\n\n", &l2, 99);
    assert_int_equal(l2.n, 1);
    assert_int_equal(qg_sse_pending(&p).n, 0);
    qg_sse_free(&p);
    ev_list_free(&l2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_all_splits), cmocka_unit_test(test_openrouter_comment_blocks),
        cmocka_unit_test(test_line_ending_variants), cmocka_unit_test(test_split_crlf),
        cmocka_unit_test(test_too_large),           cmocka_unit_test(test_multiline_data_and_fields),
        cmocka_unit_test(test_comments_and_blank_lines), cmocka_unit_test(test_zero_copy_and_pending),
        cmocka_unit_test(test_callback_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
