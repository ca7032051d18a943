/*
 * fuzz_http_request.c — the request-head parser on arbitrary bytes, with a small and a large
 * head limit.
 *
 * Beyond "no crash": a complete head is no longer than the input or the limit, ends with a
 * line feed, and every slice (method, target, header names and values) lies inside it and
 * holds only the bytes the parser promises (tokens for names, no CR/LF/controls in values);
 * framing is never ambiguous (chunked and a Content-Length together never pass); the head
 * minus its last byte is "incomplete"; and the two limits agree wherever both apply.
 */
#include "http1.h"

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

static bool inside(qg_slice s, const char *b, size_t n)
{
    if (s.n == 0) return true;
    return s.p >= b && s.p <= b + n && s.n <= (size_t)(b + n - s.p);
}

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void check_head(const char *b, size_t size, size_t max_head, int rc, const qg_http_msg *m)
{
    size_t h = (size_t)rc;
    CHECK(m->head_len == h && h <= size && h <= max_head);
    CHECK(b[h - 1] == '\n');
    CHECK(m->minor_version == 0 || m->minor_version == 1);
    CHECK(m->n_headers <= QG_HTTP_MAX_HEADERS);
    CHECK(m->method.n > 0 && inside(m->method, b, h));
    CHECK(m->target.n > 0 && inside(m->target, b, h));
    for (size_t i = 0; i < m->method.n; i++) CHECK(is_tchar((unsigned char)m->method.p[i]));
    for (size_t i = 0; i < m->target.n; i++) CHECK((unsigned char)m->target.p[i] > 0x20 && m->target.p[i] != 0x7f);
    for (size_t i = 0; i < m->n_headers; i++) {
        qg_slice nm = m->headers[i].name, v = m->headers[i].value;
        CHECK(nm.n > 0 && inside(nm, b, h) && inside(v, b, h));
        for (size_t k = 0; k < nm.n; k++) CHECK(is_tchar((unsigned char)nm.p[k]));
        for (size_t k = 0; k < v.n; k++) {
            unsigned char c = (unsigned char)v.p[k];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        CHECK(v.n == 0 || (v.p[0] != ' ' && v.p[0] != '\t' && v.p[v.n - 1] != ' ' && v.p[v.n - 1] != '\t'));
        /* looking the name up finds a header with that name (the first one) */
        char name[64];
        if (nm.n < sizeof name) {
            memcpy(name, nm.p, nm.n);
            name[nm.n] = 0;
            qg_slice found = qg_http_header(m, name);
            CHECK(found.p != NULL && inside(found, b, h));
            size_t first = 0;
            while (first < i && !qg_slice_ieq(m->headers[first].name, name)) first++;
            CHECK(found.p == m->headers[first].value.p && found.n == m->headers[first].value.n);
        }
    }
    CHECK(!(m->chunked && m->content_length >= 0));
    CHECK(m->content_length >= -1);
    CHECK(!(m->chunked && m->minor_version == 0));
    if (m->chunked) CHECK(qg_http_header(m, "transfer-encoding").p != NULL);
    if (m->content_length >= 0) CHECK(qg_http_header(m, "content-length").p != NULL);
    if (m->minor_version == 0 && m->keep_alive) CHECK(qg_http_header(m, "connection").p != NULL);
    if (m->minor_version == 1 && !m->keep_alive) CHECK(qg_http_header(m, "connection").p != NULL);
    if (m->expect_continue) CHECK(qg_http_header(m, "expect").p != NULL);
    /* the key helpers return slices inside the head, trimmed */
    qg_slice bearer = qg_http_bearer(m), k = qg_http_api_key(m);
    if (bearer.p) CHECK(bearer.n && bearer.p[0] != 0x20 && bearer.p[bearer.n - 1] != 0x20);
    if (k.n) CHECK(k.p >= m->headers[0].name.p);
    /* every Connection token is found in its own list */
    qg_slice conn = qg_http_header(m, "connection");
    const char *comma = conn.p ? memchr(conn.p, ',', conn.n) : NULL;
    if (conn.p) {
        qg_slice first = qg_slice_trim((qg_slice){conn.p, comma ? (size_t)(comma - conn.p) : conn.n});
        if (first.n) CHECK(qg_http_list_has(conn, first));
        bool plain = !first.n || qg_slice_ieq(first, "close") || qg_slice_ieq(first, "keep-alive");
        if (!plain) CHECK(m->connection_names && qg_http_connection_names(m, first));
    }
    if (!m->connection_names) CHECK(!qg_http_connection_names(m, QG_SLICE_LIT("x")));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *b = (const char *)data;
    static const size_t limits[] = {64, 65536};
    int rcs[2];
    size_t heads[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        qg_http_msg m;
        memset(&m, k ? 0xff : 0, sizeof m);
        int rc = qg_http_parse_request(b, size, limits[k], &m);
        rcs[k] = rc;
        CHECK(rc > 0 || rc == QG_HTTP_INCOMPLETE || rc == QG_HTTP_ERROR || rc == QG_HTTP_TOO_LARGE ||
              rc == QG_HTTP_TOO_MANY);
        if (rc == QG_HTTP_INCOMPLETE) CHECK(size <= limits[k]);
        if (rc > 0) {
            heads[k] = (size_t)rc;
            check_head(b, size, limits[k], rc, &m);
            /* the same head alone parses the same; one byte less is incomplete */
            qg_http_msg m2;
            CHECK(qg_http_parse_request(b, (size_t)rc, limits[k], &m2) == rc);
            CHECK(m2.n_headers == m.n_headers && m2.content_length == m.content_length && m2.chunked == m.chunked &&
                  m2.keep_alive == m.keep_alive && m2.expect_continue == m.expect_continue);
            CHECK(qg_http_parse_request(b, (size_t)rc - 1, limits[k], &m2) == QG_HTTP_INCOMPLETE);
        }
    }
    /* A head that fits the small limit parses identically with the large one. */
    if (rcs[0] > 0) CHECK(rcs[1] == rcs[0] && heads[1] == heads[0]);
    if (rcs[1] > 0 && heads[1] <= limits[0]) CHECK(rcs[0] == rcs[1]);
    if (rcs[0] == QG_HTTP_ERROR || rcs[0] == QG_HTTP_TOO_MANY) CHECK(rcs[1] == rcs[0]);
    return 0;
}
