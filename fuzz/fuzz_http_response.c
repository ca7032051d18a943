/*
 * fuzz_http_response.c — the response-head parser and the chunked decoder on arbitrary bytes.
 *
 * The input is parsed as a response head; the bytes after a complete head (or the whole
 * input when there is none) are then chunk-decoded twice: in one call, and in pieces whose
 * sizes come from the input's own bytes, each piece in its own heap buffer (so ASan sees any
 * read past it).  Both must end the same way (more / done / error) and, unless they fail,
 * give the same payload and, when done, the same place where the next message begins, with
 * the bytes after it untouched.
 */
#include "http1.h"

#include <stdlib.h>

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

static bool inside(qg_slice s, const char *b, size_t n)
{
    if (s.n == 0) return true;
    return s.p >= b && s.p <= b + n && s.n <= (size_t)(b + n - s.p);
}

static void check_head(const char *b, size_t size, int rc, const qg_http_msg *m)
{
    size_t h = (size_t)rc;
    CHECK(h == m->head_len && h <= size && b[h - 1] == '\n');
    CHECK(m->status >= 100 && m->status <= 999);
    CHECK(m->minor_version == 0 || m->minor_version == 1);
    CHECK(m->n_headers <= QG_HTTP_MAX_HEADERS);
    for (size_t i = 0; i < m->n_headers; i++) {
        CHECK(m->headers[i].name.n > 0 && inside(m->headers[i].name, b, h) && inside(m->headers[i].value, b, h));
        for (size_t k = 0; k < m->headers[i].value.n; k++) {
            unsigned char c = (unsigned char)m->headers[i].value.p[k];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
    }
    CHECK(!(m->chunked && m->content_length >= 0));
    qg_body_kind k = qg_http_response_body_kind(m, false);
    CHECK(qg_http_response_body_kind(m, true) == QG_BODY_NONE);
    if (m->status < 200 || m->status == 204 || m->status == 304) CHECK(k == QG_BODY_NONE);
    else if (m->chunked) CHECK(k == QG_BODY_CHUNKED);
    else if (m->content_length > 0) CHECK(k == QG_BODY_LENGTH);
    else if (m->content_length == 0) CHECK(k == QG_BODY_NONE);
    else CHECK(k == QG_BODY_UNTIL_CLOSE);
}

typedef struct {
    int rc;
    qg_buf payload;
    size_t rest_at; /* DONE: offset of the next message in the decoded input */
} decoded;

/* Decodes in[0..n) in pieces: whole when sizes == NULL, else piece k has 1 + sizes[k % ns] % 29 bytes. */
static decoded decode(const char *in, size_t n, const uint8_t *sizes, size_t ns)
{
    decoded d = {QG_CHUNKED_MORE, {0}, 0};
    qg_buf_init(&d.payload, 0);
    qg_chunked c;
    qg_chunked_init(&c);
    size_t off = 0, k = 0;
    while (off < n) {
        size_t piece = sizes && ns ? 1 + (size_t)(sizes[k++ % ns] % 29) : n - off;
        piece = QG_MIN(piece, n - off);
        char *b = malloc(piece);
        memcpy(b, in + off, piece);
        size_t dl = SIZE_MAX, rest = SIZE_MAX;
        d.rc = qg_chunked_decode(&c, b, piece, &dl, &rest);
        CHECK(d.rc == QG_CHUNKED_MORE || d.rc == QG_CHUNKED_DONE || d.rc == QG_CHUNKED_ERROR);
        if (d.rc != QG_CHUNKED_ERROR) {
            CHECK(dl <= piece && rest <= piece && dl <= rest);
            CHECK(qg_buf_append(&d.payload, b, dl) == 0);
        }
        if (d.rc == QG_CHUNKED_MORE) CHECK(rest == piece && !qg_chunked_done(&c));
        if (d.rc == QG_CHUNKED_DONE) {
            CHECK(qg_chunked_done(&c));
            CHECK(rest > 0);
            CHECK(rest == piece || memcmp(b + rest, in + off + rest, piece - rest) == 0); /* untouched */
            d.rest_at = off + rest;
        }
        free(b);
        if (d.rc != QG_CHUNKED_MORE) break;
        off += piece;
    }
    return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *b = (const char *)data;
    qg_http_msg m;
    int rc = qg_http_parse_response(b, size, 65536, &m);
    CHECK(rc > 0 || rc == QG_HTTP_INCOMPLETE || rc == QG_HTTP_ERROR || rc == QG_HTTP_TOO_LARGE || rc == QG_HTTP_TOO_MANY);
    size_t body_off = 0;
    if (rc > 0) {
        check_head(b, size, rc, &m);
        body_off = (size_t)rc;
    }
    const char *body = b + body_off;
    size_t n = size - body_off;

    decoded whole = decode(body, n, NULL, 0);
    decoded split = decode(body, n, data, size);
    CHECK(whole.rc == split.rc);
    if (whole.rc != QG_CHUNKED_ERROR) {
        CHECK(whole.payload.len == split.payload.len);
        CHECK(whole.payload.len == 0 || memcmp(whole.payload.data, split.payload.data, whole.payload.len) == 0);
        CHECK(whole.payload.len <= n);
    }
    if (whole.rc == QG_CHUNKED_DONE) CHECK(whole.rest_at == split.rest_at && whole.rest_at <= n);
    qg_buf_free(&whole.payload);
    qg_buf_free(&split.payload);
    return 0;
}
