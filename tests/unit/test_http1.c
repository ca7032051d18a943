/*
 * test_http1.c — the HTTP/1.1 head parsers and the chunked decoder.
 *
 * Heads: exact fields for simple requests and responses, both line endings, every prefix of
 * a valid head is "incomplete", the max_head limit before and after the blank line, the
 * header-count limit, and every smuggling-relevant rejection the header promises (CL + TE,
 * differing CLs, TE other than a final chunked, obs-fold, space before the colon, control
 * characters, bad versions and status lines).  Framing: keep-alive, Expect, body kind, hop
 * headers.  Chunked: the same payload however the body is cut (whole, byte by byte, random
 * pieces with a fixed seed), extensions, trailers, rest_off, and each error.
 *
 * Every input is copied into a heap buffer of exactly its length, so ASan reports any read
 * past the end.
 */
#include "testutil.h"
#include "http1.h"

/* ---- helpers ---- */

static char *dup_n(const char *s, size_t n)
{
    char *r = malloc(n ? n : 1);
    if (n) memcpy(r, s, n);
    return r;
}

/* Moves a slice of the copy b onto the same bytes of the original s; it must lie inside. */
static void rebase(qg_slice *sl, const char *b, const char *s, size_t n)
{
    if (!sl->p) return;
    assert_true(sl->p >= b && sl->n <= n && (size_t)(sl->p - b) <= n - sl->n);
    sl->p = s + (sl->p - b);
}

/* Parses s (length n, or strlen when n == (size_t)-1) as a request with a 64 KiB limit. */
static int req_n(const char *s, size_t n, size_t max_head, qg_http_msg *m)
{
    char *b = dup_n(s, n);
    memset(m, 0xa5, sizeof *m); /* stale values must not leak into the result */
    int rc = qg_http_parse_request(b, n, max_head, m);
    /* slices point into b; re-base them onto s so callers can compare after b is freed */
    if (rc > 0) {
        rebase(&m->method, b, s, n), rebase(&m->target, b, s, n);
        for (size_t i = 0; i < m->n_headers; i++) rebase(&m->headers[i].name, b, s, n), rebase(&m->headers[i].value, b, s, n);
    }
    free(b);
    return rc;
}

static int req(const char *s, qg_http_msg *m) { return req_n(s, strlen(s), 65536, m); }

static int resp_n(const char *s, size_t n, size_t max_head, qg_http_msg *m)
{
    char *b = dup_n(s, n);
    memset(m, 0xa5, sizeof *m);
    int rc = qg_http_parse_response(b, n, max_head, m);
    if (rc > 0)
        for (size_t i = 0; i < m->n_headers; i++) rebase(&m->headers[i].name, b, s, n), rebase(&m->headers[i].value, b, s, n);
    free(b);
    return rc;
}

static int resp(const char *s, qg_http_msg *m) { return resp_n(s, strlen(s), 65536, m); }

static void assert_slice(qg_slice s, const char *want)
{
    assert_non_null(s.p);
    if (s.n != strlen(want) || memcmp(s.p, want, s.n) != 0)
        fail_msg("slice \"%.*s\" != \"%s\"", (int)s.n, s.p, want);
}

/* ---- requests ---- */

static void test_simple_get(void **state)
{
    const char *in = "GET /v1/models?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    qg_http_msg m;
    int rc = req(in, &m);
    assert_int_equal(rc, (int)strlen(in));
    assert_int_equal(m.head_len, strlen(in));
    assert_slice(m.method, "GET");
    assert_slice(m.target, "/v1/models?x=1");
    assert_int_equal(m.minor_version, 1);
    assert_int_equal(m.status, 0);
    assert_int_equal(m.n_headers, 2);
    assert_slice(m.headers[0].name, "Host");
    assert_slice(m.headers[0].value, "example.com");
    assert_slice(m.headers[1].name, "Accept");
    assert_slice(m.headers[1].value, "*/*");
    assert_int_equal(m.content_length, -1);
    assert_false(m.chunked);
    assert_true(m.keep_alive);
    assert_false(m.expect_continue);
}

static void test_simple_post_with_body_following(void **state)
{
    const char *head = "POST /v1/chat/completions HTTP/1.1\r\n"
                       "Host: gw\r\n"
                       "Content-Type: application/json\r\n"
                       "Content-Length: 13\r\n"
                       "\r\n";
    char in[256];
    snprintf(in, sizeof in, "%s{\"model\":\"m\"}GET / HTTP/1.1\r\n\r\n", head);
    qg_http_msg m;
    /* The body and a pipelined request after the head do not change the head length. */
    assert_int_equal(req(in, &m), (int)strlen(head));
    assert_slice(m.method, "POST");
    assert_slice(m.target, "/v1/chat/completions");
    assert_int_equal(m.n_headers, 3);
    assert_int_equal(m.content_length, 13);
    assert_false(m.chunked);
    assert_true(m.keep_alive);

    assert_int_equal(req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &m), 47);
    assert_true(m.chunked);
    assert_int_equal(m.content_length, -1);
    assert_int_equal(req("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", &m), 47);
    assert_true(m.chunked);
    /* Content-Length: 0 and leading zeros are lengths like any other. */
    assert_true(req("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &m) > 0);
    assert_int_equal(m.content_length, 0);
    assert_true(req("POST / HTTP/1.1\r\nContent-Length: 007\r\n\r\n", &m) > 0);
    assert_int_equal(m.content_length, 7);
    assert_true(req("POST / HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\n", &m) > 0);
    assert_int_equal(m.content_length, 999999999999999999LL);
}

static void test_header_slices_and_lookup(void **state)
{
    const char *in = "GET / HTTP/1.1\r\n"
                     "Content-Type:application/json\r\n"
                     "X-Pad: \t  v a l \t\r\n"
                     "X-Empty:\r\n"
                     "x-dup: first\r\n"
                     "X-Dup: second\r\n"
                     "\r\n";
    qg_http_msg m;
    char *b = dup_n(in, strlen(in));
    int rc = qg_http_parse_request(b, strlen(in), 65536, &m);
    assert_int_equal(rc, (int)strlen(in));
    for (size_t i = 0; i < m.n_headers; i++) { /* every slice lies inside the buffer */
        assert_true(m.headers[i].name.p >= b && m.headers[i].name.p + m.headers[i].name.n <= b + rc);
        assert_true(m.headers[i].value.n == 0 ||
                    (m.headers[i].value.p >= b && m.headers[i].value.p + m.headers[i].value.n <= b + rc));
    }
    assert_slice(qg_http_header(&m, "content-type"), "application/json");
    assert_slice(qg_http_header(&m, "CONTENT-TYPE"), "application/json");
    assert_slice(qg_http_header(&m, "Content-Type"), "application/json");
    assert_slice(qg_http_header(&m, "x-pad"), "v a l"); /* OWS trimmed, inner spaces kept */
    qg_slice e = qg_http_header(&m, "X-EMPTY");
    assert_non_null(e.p); /* present but empty */
    assert_int_equal(e.n, 0);
    qg_slice dup = qg_http_header(&m, "X-DUP");
    assert_true(qg_slice_eq(dup, "first") || qg_slice_eq(dup, "second"));
    qg_slice none = qg_http_header(&m, "content-length");
    assert_null(none.p);
    assert_int_equal(none.n, 0);
    assert_null(qg_http_header(&m, "Content-Typ").p);   /* no prefix matches */
    assert_null(qg_http_header(&m, "Content-Type2").p); /* no longer names */
    free(b);
}

static void test_line_endings(void **state)
{
    qg_http_msg m;
    const char *lf = "GET /a HTTP/1.1\nHost: h\nX-A: 1\n\n";
    assert_int_equal(req(lf, &m), (int)strlen(lf));
    assert_slice(m.target, "/a");
    assert_int_equal(m.n_headers, 2);
    assert_slice(m.headers[1].value, "1");

    const char *mixed = "GET /b HTTP/1.1\r\nHost: h\nX-A: 2\r\n\n";
    assert_int_equal(req(mixed, &m), (int)strlen(mixed));
    assert_slice(m.headers[1].value, "2");
    const char *mixed2 = "GET /c HTTP/1.1\nHost: h\n\r\n";
    assert_int_equal(req(mixed2, &m), (int)strlen(mixed2));
    assert_slice(m.headers[0].value, "h");

    /* One empty line before the request line is ignored (RFC 9112 §2.2). */
    const char *lead = "\r\nGET /d HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(req(lead, &m), (int)strlen(lead));
    assert_slice(m.method, "GET");
    assert_slice(m.target, "/d");
    const char *lead_lf = "\nGET /e HTTP/1.1\n\n";
    assert_int_equal(req(lead_lf, &m), (int)strlen(lead_lf));
    assert_slice(m.target, "/e");
    assert_int_equal(m.n_headers, 0);

    const char *r = "HTTP/1.1 200 OK\nContent-Length: 3\n\nabc";
    assert_int_equal(resp(r, &m), (int)strlen(r) - 3);
    assert_int_equal(m.status, 200);
    assert_int_equal(m.content_length, 3);
}

static void assert_all_prefixes_incomplete(const char *in, bool request)
{
    size_t n = strlen(in);
    qg_http_msg m;
    for (size_t k = 0; k < n; k++) {
        int rc = request ? req_n(in, k, 65536, &m) : resp_n(in, k, 65536, &m);
        if (rc != QG_HTTP_INCOMPLETE) fail_msg("prefix of %zu bytes of \"%s\": rc %d", k, in, rc);
    }
    int rc = request ? req_n(in, n, 65536, &m) : resp_n(in, n, 65536, &m);
    assert_int_equal(rc, (int)n);
}

static void test_incomplete_prefixes(void **state)
{
    assert_all_prefixes_incomplete("POST /v1/messages HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n"
                                   "Expect: 100-continue\r\n\r\n", true);
    assert_all_prefixes_incomplete("GET / HTTP/1.0\nHost: x\nConnection: keep-alive\n\n", true);
    assert_all_prefixes_incomplete("\r\nGET / HTTP/1.1\r\n\r\n", true);
    assert_all_prefixes_incomplete("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n", false);
    assert_all_prefixes_incomplete("HTTP/1.1 204 No Content\n\n", false);
}

static void test_max_head(void **state)
{
    const char *in = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"; /* 37 bytes */
    size_t n = strlen(in);
    qg_http_msg m;
    assert_int_equal(req_n(in, n, n, &m), (int)n);                  /* exactly at the limit */
    assert_int_equal(req_n(in, n, n - 1, &m), QG_HTTP_TOO_LARGE);   /* blank line found, head too long */
    assert_int_equal(req_n(in, n, 10, &m), QG_HTTP_TOO_LARGE);
    /* Before the blank line: more than max_head bytes without an end is too large ... */
    assert_int_equal(req_n(in, 20, 19, &m), QG_HTTP_TOO_LARGE);
    assert_int_equal(req_n(in, n - 1, 20, &m), QG_HTTP_TOO_LARGE);
    /* ... but exactly max_head bytes may still be completed. */
    assert_int_equal(req_n(in, 20, 20, &m), QG_HTTP_INCOMPLETE);
    /* A body after a short head does not count against the limit. */
    char big[200];
    snprintf(big, sizeof big, "%s%0150d", in, 0);
    assert_int_equal(req_n(big, strlen(big), n, &m), (int)n);

    const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"; /* head 38 */
    assert_int_equal(resp_n(r, strlen(r), 38, &m), 38);
    assert_int_equal(resp_n(r, strlen(r), 37, &m), QG_HTTP_TOO_LARGE);
    assert_int_equal(resp_n(r, 30, 29, &m), QG_HTTP_TOO_LARGE);
    assert_int_equal(resp_n(r, 30, 30, &m), QG_HTTP_INCOMPLETE);
}

/* A request with n_headers "X-H<i>: <i>" lines. */
static char *many_headers(size_t n_headers, size_t *len)
{
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_buf_puts(&b, "GET / HTTP/1.1\r\n");
    for (size_t i = 0; i < n_headers; i++) qg_buf_appendf(&b, "X-H%zu: %zu\r\n", i, i);
    qg_buf_puts(&b, "\r\n");
    *len = b.len;
    return b.data;
}

static void test_too_many_headers(void **state)
{
    qg_http_msg m;
    size_t n;
    char *ok = many_headers(QG_HTTP_MAX_HEADERS, &n);
    assert_int_equal(QG_HTTP_MAX_HEADERS, 128);
    assert_int_equal(req_n(ok, n, 1 << 20, &m), (int)n);
    assert_int_equal(m.n_headers, 128);
    assert_slice(m.headers[127].name, "X-H127");
    assert_slice(m.headers[127].value, "127");
    free(ok);
    char *bad = many_headers(129, &n);
    assert_int_equal(req_n(bad, n, 1 << 20, &m), QG_HTTP_TOO_MANY);
    free(bad);
    bad = many_headers(1000, &n);
    assert_int_equal(req_n(bad, n, 1 << 20, &m), QG_HTTP_TOO_MANY);
    free(bad);

    /* The same limit for responses. */
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_buf_puts(&b, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 129; i++) qg_buf_appendf(&b, "X-H%d: %d\r\n", i, i);
    qg_buf_puts(&b, "\r\n");
    assert_int_equal(resp_n(b.data, b.len, 1 << 20, &m), QG_HTTP_TOO_MANY);
    qg_buf_free(&b);
}

static void test_request_rejections(void **state)
{
    static const char *const bad[] = {
        /* framing conflicts */
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 0\r\nCONTENT-LENGTH: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        /* Content-Length values */
        "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        /* header syntax */
        "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",             /* obs-fold, space */
        "GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n",            /* obs-fold, tab */
        "GET / HTTP/1.1\r\n Host: a\r\n\r\n",                  /* leading space on the first header */
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",                  /* space before the colon */
        "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",                 /* tab before the colon */
        "GET / HTTP/1.1\r\nHost a\r\n\r\n",                    /* no colon */
        "GET / HTTP/1.1\r\n: a\r\n\r\n",                       /* empty name */
        "GET / HTTP/1.1\r\nX(A): a\r\n\r\n",                   /* non-token name */
        "GET / HTTP/1.1\r\nX-A: a\x01" "b\r\n\r\n",            /* control characters in values */
        "GET / HTTP/1.1\r\nX-A: a\x1f\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\x7f\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",                 /* bare CR in a value */
        "GET / HTTP/1.1\r\nX-A: a\r\r\n\r\n",                  /* bare CR before CRLF */
        "GET / HTTP/1.1\r\nX-A: a\x0b\r\n\r\n",
        "GET / HTTP/1.1\r\n\rX-A: a\r\n\r\n",
        /* version */
        "GET / HTTP/1.2\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.10\r\n\r\n",
        "GET / http/1.1\r\n\r\n",
        "GET / HTTP/1.1 \r\n\r\n",
        "GET / HTTP/1\r\n\r\n",
        "GET / HTTP/1.1x\r\n\r\n",
        "GET /\r\n\r\n",
        /* request line */
        "GET  / HTTP/1.1\r\n\r\n",
        "GET HTTP/1.1\r\n\r\n",
        " / HTTP/1.1\r\n\r\n",
        "G(ET / HTTP/1.1\r\n\r\n",
        "GET /a\x01" "b HTTP/1.1\r\n\r\n",
        "GET /a\x7f HTTP/1.1\r\n\r\n",
        "GET /a\rb HTTP/1.1\r\n\r\n",
        "GET\t/ HTTP/1.1\r\n\r\n",
        "\r\n\r\nGET / HTTP/1.1\r\n\r\n",                     /* only one leading empty line is ignored */
        "GET / HTTP/1.1\r\r\n\r\n",
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(bad); i++) {
        qg_http_msg m;
        int rc = req(bad[i], &m);
        if (rc != QG_HTTP_ERROR) fail_msg("case %zu \"%s\": rc %d, want QG_HTTP_ERROR", i, bad[i], rc);
    }
    /* A NUL inside a value (explicit length). */
    static const char nul[] = "GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n";
    qg_http_msg m;
    assert_int_equal(req_n(nul, sizeof nul - 1, 65536, &m), QG_HTTP_ERROR);
    static const char nul_name[] = "GET / HTTP/1.1\r\nX\0A: a\r\n\r\n";
    assert_int_equal(req_n(nul_name, sizeof nul_name - 1, 65536, &m), QG_HTTP_ERROR);

    /* Two equal Content-Lengths are one length. */
    assert_true(req("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", &m) > 0);
    assert_int_equal(m.content_length, 5);
    assert_int_equal(m.n_headers, 2);
    /* Tabs and obs-text are fine in values. */
    assert_true(req("GET / HTTP/1.1\r\nX-A: a\tb \xc3\xa9\r\n\r\n", &m) > 0);
    assert_slice(m.headers[0].value, "a\tb \xc3\xa9");
}

static void test_response_simple_and_rejections(void **state)
{
    qg_http_msg m;
    const char *in = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 2\r\n\r\n{}";
    assert_int_equal(resp(in, &m), (int)strlen(in) - 2);
    assert_int_equal(m.status, 429);
    assert_int_equal(m.minor_version, 1);
    assert_null(m.method.p);
    assert_null(m.target.p);
    assert_int_equal(m.n_headers, 2);
    assert_slice(qg_http_header(&m, "retry-after"), "7");
    assert_int_equal(m.content_length, 2);
    assert_true(m.keep_alive);

    assert_int_equal(resp("HTTP/1.0 200\r\n\r\n", &m), 16); /* no reason phrase */
    assert_int_equal(m.status, 200);
    assert_int_equal(m.minor_version, 0);
    assert_false(m.keep_alive);
    assert_int_equal(resp("HTTP/1.1 503 \r\n\r\n", &m), 17); /* empty reason phrase */
    assert_int_equal(m.status, 503);
    assert_int_equal(resp("HTTP/1.1 999 Whatever\r\n\r\n", &m), 25);
    assert_int_equal(m.status, 999);
    assert_int_equal(resp("HTTP/1.1 100 Continue\r\n\r\n", &m), 25);
    assert_int_equal(m.status, 100);

    static const char *const bad[] = {
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1 000 Zero\r\n\r\n",
        "HTTP/1.1 abc OK\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "HTTP/1.1-200 OK\r\n\r\n",
        "HTTP/1.1 200-OK\r\n\r\n",
        "HTTP/1.2 200 OK\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "http/1.1 200 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1\r\n\r\n",
        "\r\nHTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: 1\x02\r\n\r\n",
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(bad); i++) {
        int rc = resp(bad[i], &m);
        if (rc != QG_HTTP_ERROR) fail_msg("case %zu \"%s\": rc %d, want QG_HTTP_ERROR", i, bad[i], rc);
    }
}

/* http1.h: "control characters and bare CR are all rejected" — in the status line too. */
static void test_response_reason_phrase_controls(void **state)
{
    static const char *const bad[] = {
        "HTTP/1.1 200 O\x01K\r\n\r\n",
        "HTTP/1.1 200 OK\rX-Injected: 1\r\n\r\n",
        "HTTP/1.1 200 OK\x7f\r\n\r\n",
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(bad); i++) {
        qg_http_msg m;
        int rc = resp(bad[i], &m);
        if (rc != QG_HTTP_ERROR) fail_msg("case %zu: rc %d, want QG_HTTP_ERROR", i, rc);
    }
    qg_http_msg m;
    assert_int_equal(resp("HTTP/1.1 200 OK\t\xc3\xa9 fine\r\n\r\n", &m), 27); /* HTAB and obs-text are allowed */
}

static void test_keep_alive(void **state)
{
    static const struct {
        const char *in;
        bool keep;
    } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nConnection: keep-alive, CLOSE\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nConnection: upgrade\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", true}, /* a token, not a substring */
        {"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nX-Connection: close\r\n\r\n", true},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: foo ,  keep-alive \r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alivex\r\n\r\n", false},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        qg_http_msg m;
        assert_true(req(cases[i].in, &m) > 0);
        if (m.keep_alive != cases[i].keep) fail_msg("case %zu: keep_alive %d", i, m.keep_alive);
    }
    qg_http_msg m;
    assert_true(resp("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", &m) > 0);
    assert_false(m.keep_alive);
    assert_true(resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", &m) > 0);
    assert_true(m.keep_alive);
    assert_true(resp("HTTP/1.1 200 OK\r\n\r\n", &m) > 0);
    assert_true(m.keep_alive);
}

static void test_expect_continue_and_reuse(void **state)
{
    qg_http_msg m;
    assert_true(req("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", &m) > 0);
    assert_true(m.expect_continue);
    assert_true(req("POST / HTTP/1.1\r\nexpect: 100-Continue\r\n\r\n", &m) > 0);
    assert_true(m.expect_continue);
    assert_true(req("POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", &m) > 0);
    assert_false(m.expect_continue);

    /* One message struct parsed twice in a row: nothing carries over. */
    static const char a_in[] = "POST / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n"
                               "Connection: close\r\nX-1: 1\r\n\r\n";
    char *a = dup_n(a_in, sizeof a_in - 1);
    char *b = dup_n("GET / HTTP/1.1\r\n\r\n", 18);
    qg_http_msg r;
    assert_int_equal(qg_http_parse_request(a, sizeof a_in - 1, 65536, &r), (int)sizeof a_in - 1);
    assert_true(r.expect_continue && r.chunked && !r.keep_alive);
    assert_int_equal(r.n_headers, 4);
    assert_int_equal(qg_http_parse_request(b, 18, 65536, &r), 18);
    assert_false(r.expect_continue);
    assert_false(r.chunked);
    assert_true(r.keep_alive);
    assert_int_equal(r.n_headers, 0);
    assert_int_equal(r.content_length, -1);
    free(a);
    free(b);
}

static void test_body_kind(void **state)
{
    static const struct {
        const char *in;
        bool head;
        qg_body_kind want;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", false, QG_BODY_LENGTH},
        {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, QG_BODY_NONE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, QG_BODY_CHUNKED},
        {"HTTP/1.1 200 OK\r\n\r\n", false, QG_BODY_UNTIL_CLOSE},
        {"HTTP/1.0 200 OK\r\n\r\n", false, QG_BODY_UNTIL_CLOSE},
        {"HTTP/1.1 500 Oops\r\n\r\n", false, QG_BODY_UNTIL_CLOSE},
        {"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", false, QG_BODY_NONE},
        {"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", false, QG_BODY_NONE},
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false, QG_BODY_NONE},
        {"HTTP/1.1 100 Continue\r\n\r\n", false, QG_BODY_NONE},
        {"HTTP/1.1 101 Switching Protocols\r\n\r\n", false, QG_BODY_NONE},
        {"HTTP/1.1 199 Misc\r\n\r\n", false, QG_BODY_NONE},
        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true, QG_BODY_NONE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, QG_BODY_NONE},
        {"HTTP/1.1 200 OK\r\n\r\n", true, QG_BODY_NONE},
        {"HTTP/1.1 205 Reset Content\r\nContent-Length: 1\r\n\r\n", false, QG_BODY_LENGTH},
        {"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n", false, QG_BODY_CHUNKED},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        qg_http_msg m;
        assert_true(resp(cases[i].in, &m) > 0);
        qg_body_kind k = qg_http_response_body_kind(&m, cases[i].head);
        if (k != cases[i].want) fail_msg("case %zu: body kind %d, want %d", i, (int)k, (int)cases[i].want);
    }
}

static void test_hop_headers(void **state)
{
    static const char *const hop[] = {"Connection", "connection", "KEEP-ALIVE", "Proxy-Connection",
                                      "Proxy-Authenticate", "proxy-authorization", "TE", "te",
                                      "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length", "host", "HOST"};
    static const char *const end[] = {"Content-Type", "Authorization", "x-api-key", "Accept", "TE2", "T",
                                      "Connectio", "Connections", "X-Connection", "Hosts", "Trailers",
                                      "Content-Encoding", "Retry-After", ""};
    for (size_t i = 0; i < QG_ARRAY_LEN(hop); i++)
        if (!qg_http_is_hop_header(S(hop[i]))) fail_msg("%s should be hop-by-hop", hop[i]);
    for (size_t i = 0; i < QG_ARRAY_LEN(end); i++)
        if (qg_http_is_hop_header(S(end[i]))) fail_msg("%s should be end-to-end", end[i]);
    /* A slice that is a prefix of a longer buffer: only its own bytes count. */
    assert_true(qg_http_is_hop_header((qg_slice){"HostXYZ", 4}));
    assert_false(qg_http_is_hop_header((qg_slice){"TEXT", 3}));
}

static void test_reason(void **state)
{
    assert_string_equal(qg_http_reason(200), "OK");
    assert_string_equal(qg_http_reason(429), "Too Many Requests");
    assert_string_equal(qg_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(qg_http_reason(503), "Service Unavailable");
    assert_string_equal(qg_http_reason(529), "Overloaded");
}

/* ---- chunked ---- */

typedef struct {
    int rc;          /* last return */
    qg_buf payload;  /* decoded bytes, concatenated */
    size_t rest_at;  /* offset in the whole input where the next message begins (DONE only) */
} dec_result;

static uint64_t rng_state;
static size_t rng_below(size_t n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (size_t)((rng_state >> 33) % n);
}

enum { CUT_WHOLE, CUT_BYTES, CUT_RANDOM };

/* Feeds in[0..n) to a fresh decoder in pieces (each in its own heap buffer). */
static dec_result decode_cut(const char *in, size_t n, int how, size_t max_piece)
{
    dec_result r = {QG_CHUNKED_MORE, {0}, 0};
    qg_buf_init(&r.payload, 0);
    qg_chunked c;
    qg_chunked_init(&c);
    size_t off = 0;
    while (off < n) {
        size_t piece = how == CUT_WHOLE ? n : how == CUT_BYTES ? 1 : 1 + rng_below(max_piece);
        piece = QG_MIN(piece, n - off);
        char *b = dup_n(in + off, piece);
        size_t data_len = 12345, rest = 12345;
        r.rc = qg_chunked_decode(&c, b, piece, &data_len, &rest);
        if (r.rc != QG_CHUNKED_ERROR) {
            assert_true(data_len <= piece);
            qg_buf_append(&r.payload, b, data_len);
        }
        if (r.rc == QG_CHUNKED_DONE) {
            assert_true(rest <= piece);
            assert_true(qg_chunked_done(&c));
            /* the bytes after the message are left untouched */
            assert_memory_equal(b + rest, in + off + rest, piece - rest);
            r.rest_at = off + rest;
        } else if (r.rc == QG_CHUNKED_MORE) {
            assert_false(qg_chunked_done(&c));
        }
        free(b);
        if (r.rc != QG_CHUNKED_MORE) break;
        off += piece;
    }
    return r;
}

/* Decodes in every way; all must agree with `want` (NULL: expect an error everywhere). */
static void check_chunked(const char *in, size_t n, const char *want, size_t want_n, size_t want_rest)
{
    for (int k = 0; k < 202; k++) {
        rng_state = 0xc0ffee00u + (uint64_t)k;
        int how = k == 0 ? CUT_WHOLE : k == 1 ? CUT_BYTES : CUT_RANDOM;
        dec_result r = decode_cut(in, n, how, k < 100 ? 4 : 64);
        if (!want) {
            if (r.rc != QG_CHUNKED_ERROR) fail_msg("way %d: rc %d, want QG_CHUNKED_ERROR", k, r.rc);
        } else {
            if (r.rc != QG_CHUNKED_DONE) fail_msg("way %d: rc %d, want QG_CHUNKED_DONE", k, r.rc);
            assert_int_equal(r.payload.len, want_n);
            if (want_n) assert_memory_equal(r.payload.data, want, want_n);
            assert_int_equal(r.rest_at, want_rest);
        }
        qg_buf_free(&r.payload);
    }
}

/* msg: one chunked body; tail: the bytes after it (the next message), which rest_off must find. */
#define CHECK_CHUNKED(msg, tail, want) \
    check_chunked(msg tail, sizeof(msg tail) - 1, want, sizeof(want) - 1, sizeof(msg) - 1)
#define CHECK_CHUNKED_ERROR(in) check_chunked(in, sizeof(in) - 1, NULL, 0, 0)

static void test_chunked_multi(void **state)
{
    static const char in[] = "4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
    CHECK_CHUNKED("4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n", "HTTP/1.1 200 OK\r\n",
                  "Wikipedia in\r\n\r\nchunks.");

    /* In place: the decoded payload is at the start of the same buffer. */
    char *b = dup_n(in, sizeof in - 1);
    qg_chunked c;
    qg_chunked_init(&c);
    assert_false(qg_chunked_done(&c));
    size_t dl = 0, rest = 0;
    assert_int_equal(qg_chunked_decode(&c, b, sizeof in - 1, &dl, &rest), QG_CHUNKED_DONE);
    assert_int_equal(dl, 23);
    assert_memory_equal(b, "Wikipedia in\r\n\r\nchunks.", 23);
    assert_int_equal(rest, 43);
    assert_memory_equal(b + rest, "HTTP/1.1 200 OK\r\n", 17);
    free(b);

    /* A long body with many chunk sizes, generated, against its own plain text. */
    qg_buf body, plain;
    qg_buf_init(&body, 0), qg_buf_init(&plain, 0);
    rng_state = 42;
    for (int i = 0; i < 60; i++) {
        size_t len = 1 + rng_below(i < 50 ? 40 : 3000);
        char hdr[24];
        size_t hl = qg_chunk_header(hdr, len);
        qg_buf_append(&body, hdr, hl);
        for (size_t j = 0; j < len; j++) {
            char ch = (char)('a' + rng_below(26));
            if (rng_below(10) == 0) ch = j % 2 ? '\r' : '\n'; /* CR/LF inside data are just data */
            qg_buf_append(&body, &ch, 1);
            qg_buf_append(&plain, &ch, 1);
        }
        qg_buf_puts(&body, "\r\n");
    }
    qg_buf_puts(&body, "0\r\n\r\n");
    size_t msg_len = body.len;
    qg_buf_puts(&body, "4\r\nnext");
    check_chunked(body.data, body.len, plain.data, plain.len, msg_len);
    qg_buf_free(&body), qg_buf_free(&plain);
}

static void test_chunked_variants(void **state)
{
    /* extensions, with and without values, quoted, BWS before them */
    CHECK_CHUNKED("5;name=value\r\nhello\r\n6;a;b=\"x y\"\r\n world\r\n0;last\r\n\r\n", "", "hello world");
    CHECK_CHUNKED("5 ;x\r\nhello\r\n0\t;y\r\n\r\n", "5\r\n", "hello");
    /* trailers */
    CHECK_CHUNKED("3\r\nabc\r\n0\r\nX-Trailer: v\r\nY: z\r\n\r\n", "REST", "abc");
    CHECK_CHUNKED("0\r\nX-Only: trailer\r\n\r\n", "", "");
    /* LF-only lines */
    CHECK_CHUNKED("5\nhello\n0\nT: 1\n\n", "NEXT", "hello");
    /* hex forms */
    CHECK_CHUNKED("A\r\n0123456789\r\na\r\nabcdefghij\r\n0005\r\nvwxyz\r\n0\r\n\r\n", "",
                  "0123456789abcdefghijvwxyz");
    /* an empty body; the next message starts with the very next byte */
    CHECK_CHUNKED("0\r\n\r\n", "", "");
    CHECK_CHUNKED("000\r\n\r\n", "X", "");
    CHECK_CHUNKED("0\r\n\r\n", "0\r\n\r\n", "");
    /* 15 hex digits are accepted as a size (the body is just not complete yet) */
    char *b = dup_n("fffffffffffffff\r\nab", 19);
    qg_chunked c;
    qg_chunked_init(&c);
    size_t dl = 9, rest = 9;
    assert_int_equal(qg_chunked_decode(&c, b, 19, &dl, &rest), QG_CHUNKED_MORE);
    assert_int_equal(dl, 2);
    assert_memory_equal(b, "ab", 2);
    assert_int_equal(rest, 19);
    free(b);
}

static void test_chunked_line_limits(void **state)
{
    /* A size line of exactly 4096 bytes (before CRLF) is fine; 4097 is too long. */
    for (size_t line = 4095; line <= 4098; line++) {
        qg_buf in;
        qg_buf_init(&in, 0);
        qg_buf_puts(&in, "3;");
        for (size_t i = 2; i < line; i++) qg_buf_puts(&in, "x");
        qg_buf_puts(&in, "\r\nabc\r\n0\r\n\r\n");
        if (line <= 4096) check_chunked(in.data, in.len, "abc", 3, in.len);
        else check_chunked(in.data, in.len, NULL, 0, 0);
        qg_buf_free(&in);
    }
    /* The same for a trailer line. */
    for (size_t line = 4095; line <= 4098; line++) {
        qg_buf in;
        qg_buf_init(&in, 0);
        qg_buf_puts(&in, "0\r\nX:");
        for (size_t i = 2; i < line; i++) qg_buf_puts(&in, "y");
        qg_buf_puts(&in, "\r\n\r\n");
        if (line <= 4096) check_chunked(in.data, in.len, "", 0, in.len);
        else check_chunked(in.data, in.len, NULL, 0, 0);
        qg_buf_free(&in);
    }
    /* A megabyte of extension never gets anywhere. */
    qg_buf in;
    qg_buf_init(&in, 0);
    qg_buf_puts(&in, "1;");
    for (int i = 0; i < 1 << 20; i++) qg_buf_append(&in, "z", 1);
    dec_result r = decode_cut(in.data, in.len, CUT_WHOLE, 0);
    assert_int_equal(r.rc, QG_CHUNKED_ERROR);
    qg_buf_free(&r.payload);
    qg_buf_free(&in);
}

static void test_chunked_errors(void **state)
{
    CHECK_CHUNKED_ERROR("g\r\nabc\r\n0\r\n\r\n");          /* bad hex */
    CHECK_CHUNKED_ERROR("\r\n");                          /* no size */
    CHECK_CHUNKED_ERROR(";ext\r\n");                      /* no size before an extension */
    CHECK_CHUNKED_ERROR("-1\r\n");
    CHECK_CHUNKED_ERROR("0x5\r\nhello\r\n0\r\n\r\n");
    CHECK_CHUNKED_ERROR("5x\r\nhello\r\n0\r\n\r\n");
    CHECK_CHUNKED_ERROR("5\r\nhelloX\r\n0\r\n\r\n");      /* missing CRLF after data */
    CHECK_CHUNKED_ERROR("5\r\nhello\rX\n0\r\n\r\n");      /* CR not followed by LF */
    CHECK_CHUNKED_ERROR("5\r\nhello\r\r\n0\r\n\r\n");
    CHECK_CHUNKED_ERROR("5\rX\nhello\r\n0\r\n\r\n");      /* bare CR after the size */
    CHECK_CHUNKED_ERROR("5;a\x01\r\nhello\r\n0\r\n\r\n"); /* control character in an extension */
    CHECK_CHUNKED_ERROR("5;a\rb\r\nhello\r\n0\r\n\r\n");
    CHECK_CHUNKED_ERROR("0\r\nX: 1\rY\r\n\r\n");          /* bare CR in a trailer */
    CHECK_CHUNKED_ERROR("0\r\n\rX");                      /* CR without LF ending the trailers */
    CHECK_CHUNKED_ERROR("1000000000000000\r\n");          /* 16 digits: over the size limit */
    CHECK_CHUNKED_ERROR("ffffffffffffffffff\r\n");        /* would overflow 64 bits */
    CHECK_CHUNKED_ERROR("10000000000000000000000000000001\r\nx\r\n0\r\n\r\n");
}

static void test_chunk_header(void **state)
{
    char out[24];
    assert_int_equal(qg_chunk_header(out, 0), 3);
    assert_memory_equal(out, "0\r\n", 3);
    assert_int_equal(qg_chunk_header(out, 1), 3);
    assert_memory_equal(out, "1\r\n", 3);
    assert_int_equal(qg_chunk_header(out, 255), 4);
    assert_memory_equal(out, "ff\r\n", 4);
    assert_int_equal(qg_chunk_header(out, 4096), 6);
    assert_memory_equal(out, "1000\r\n", 6);
    assert_int_equal(qg_chunk_header(out, 0xdeadbeef), 10);
    assert_memory_equal(out, "deadbeef\r\n", 10);
    assert_int_equal(qg_chunk_header(out, SIZE_MAX), 18);
    assert_memory_equal(out, "ffffffffffffffff\r\n", 18);

    /* What we frame, we decode. */
    const char *payload = "data: {\"x\":1}\n\n";
    char msg[128];
    size_t hl = qg_chunk_header(msg, strlen(payload));
    memcpy(msg + hl, payload, strlen(payload));
    size_t n = hl + strlen(payload);
    memcpy(msg + n, "\r\n0\r\n\r\n", 7);
    n += 7;
    check_chunked(msg, n, payload, strlen(payload), n);
}

/* Keys and the Connection list: one parser for every caller (proxy, admin, simulator). */
static void test_bearer_and_api_key(void **state)
{
    (void)state;
    static const struct {
        const char *head;
        const char *bearer, *api_key; /* NULL: absent */
    } cases[] = {
        {"Authorization: Bearer abc\r\n", "abc", "abc"},
        {"authorization: bearer   abc  \r\n", "abc", "abc"},
        {"Authorization: Basic abc\r\n", NULL, NULL},
        {"Authorization: Bearer\r\n", NULL, NULL},
        {"x-api-key: k1\r\nAuthorization: Bearer b1\r\n", "b1", "k1"},
        {"x-api-key: \r\nAuthorization: Bearer b1\r\n", "b1", "b1"},
        {"X-Other: 1\r\n", NULL, NULL},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        char req[256];
        snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: x\r\n%s\r\n", cases[i].head);
        qg_http_msg m;
        assert_true(qg_http_parse_request(req, strlen(req), 8192, &m) > 0);
        qg_slice b = qg_http_bearer(&m), k = qg_http_api_key(&m);
        if (cases[i].bearer) assert_true(qg_slice_eq(b, cases[i].bearer));
        else assert_int_equal(b.n, 0);
        if (cases[i].api_key) assert_true(qg_slice_eq(k, cases[i].api_key));
        else assert_int_equal(k.n, 0);
    }
}

static void test_list_has(void **state)
{
    (void)state;
    assert_true(qg_http_list_has(S("close, X-Secret"), S("x-secret")));
    assert_true(qg_http_list_has(S(" keep-alive ,x-a,x-b "), S("X-B")));
    assert_true(qg_http_list_has(S("x-a"), S("x-a")));
    assert_false(qg_http_list_has(S("x-ab"), S("x-a")));
    assert_false(qg_http_list_has(S("x-a"), S("x-ab")));
    assert_false(qg_http_list_has(S(""), S("x-a")));
    assert_false(qg_http_list_has(S(",,"), S("x-a")));
}

static void test_connection_names(void **state)
{
    (void)state;
    static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nX-A: 1\r\n"
                              "Connection: close, X-Hop\r\nX-Hop: 2\r\n\r\n";
    qg_http_msg m;
    assert_true(qg_http_parse_request(req, sizeof req - 1, 8192, &m) > 0);
    assert_true(m.connection_names);
    assert_true(qg_http_connection_names(&m, S("x-hop")));   /* named by the second Connection header */
    assert_false(qg_http_connection_names(&m, S("x-a")));
    assert_false(m.keep_alive);                              /* close wins */
    static const char plain[] = "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n";
    assert_true(qg_http_parse_request(plain, sizeof plain - 1, 8192, &m) > 0);
    assert_false(m.connection_names);                        /* the usual case costs nothing */
    assert_false(qg_http_connection_names(&m, S("close")));
}

/* Buffers fed from outside report a failed allocation instead of aborting. */
static void test_buf_try_reserve(void **state)
{
    (void)state;
    qg_buf b;
    qg_buf_init(&b, 1000);
    assert_int_equal(qg_buf_try_reserve(&b, 600), 0);
    assert_true(b.cap >= 600 && b.cap <= 1000);
    b.len = 600;
    assert_int_equal(qg_buf_try_reserve(&b, 400), 0);
    assert_int_equal(b.cap, 1000);
    assert_int_equal(qg_buf_try_reserve(&b, 401), QG_BUF_TOO_LARGE);
    qg_buf_free(&b);
    qg_buf_init(&b, 0);
    assert_int_equal(qg_buf_try_reserve(&b, SIZE_MAX / 2), QG_BUF_NO_MEMORY); /* realloc fails: no abort */
    assert_null(b.data);
    qg_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_simple_post_with_body_following),
        cmocka_unit_test(test_header_slices_and_lookup),
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_incomplete_prefixes),
        cmocka_unit_test(test_max_head),
        cmocka_unit_test(test_too_many_headers),
        cmocka_unit_test(test_request_rejections),
        cmocka_unit_test(test_response_simple_and_rejections),
        cmocka_unit_test(test_response_reason_phrase_controls),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_expect_continue_and_reuse),
        cmocka_unit_test(test_body_kind),
        cmocka_unit_test(test_hop_headers),
        cmocka_unit_test(test_reason),
        cmocka_unit_test(test_chunked_multi),
        cmocka_unit_test(test_chunked_variants),
        cmocka_unit_test(test_chunked_line_limits),
        cmocka_unit_test(test_chunked_errors),
        cmocka_unit_test(test_chunk_header),
        cmocka_unit_test(test_bearer_and_api_key),
        cmocka_unit_test(test_list_has),
        cmocka_unit_test(test_connection_names),
        cmocka_unit_test(test_buf_try_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
