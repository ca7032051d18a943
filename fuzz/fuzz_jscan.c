/*
 * fuzz_jscan.c — the JSON span scanner on arbitrary bytes.
 *
 * When a body is accepted: the '{' is where open_off says, every found span lies inside the
 * input and starts and ends with the bytes its type demands, a found object re-scans on its
 * own (the proxy scans stream_options that way), string and integer decoders agree with the
 * spans, and the same text surrounded by whitespace is accepted with every offset shifted.
 * When it is rejected, there is a reason.  Either way the answer never depends on what lies
 * after the input (ASan sees reads past it: libFuzzer's buffer is exactly `size` bytes).
 */
#include "jscan.h"

#include <stdlib.h>

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

static const char *const wanted[] = {"model", "stream", "stream_options"};

static void check_span(const char *t, size_t n, qg_json_span s)
{
    if (s.type == QG_JSON_NONE) return;
    CHECK(s.len > 0 && s.off < n && s.len <= n - s.off);
    const char *p = t + s.off;
    char first = p[0], last = p[s.len - 1];
    switch (s.type) {
    case QG_JSON_OBJECT: CHECK(first == '{' && last == '}'); break;
    case QG_JSON_ARRAY: CHECK(first == '[' && last == ']'); break;
    case QG_JSON_STRING: CHECK(s.len >= 2 && first == '"' && last == '"'); break;
    case QG_JSON_TRUE: CHECK(s.len == 4 && memcmp(p, "true", 4) == 0); break;
    case QG_JSON_FALSE: CHECK(s.len == 5 && memcmp(p, "false", 5) == 0); break;
    case QG_JSON_NULL: CHECK(s.len == 4 && memcmp(p, "null", 4) == 0); break;
    case QG_JSON_NUMBER: CHECK((first == '-' || (first >= '0' && first <= '9')) && last >= '0' && last <= '9'); break;
    default: CHECK(0);
    }
    if (s.type == QG_JSON_OBJECT) {
        /* a found object is itself a valid object (copied, so over-reads show) */
        char *copy = malloc(s.len);
        memcpy(copy, p, s.len);
        qg_json_span inner[3];
        size_t open = 99;
        const char *why = NULL;
        /* nested objects may repeat a name the top level refuses to see twice */
        int rc = qg_jscan_object(copy, s.len, wanted, 3, inner, &open, &why);
        CHECK(rc == 0 || (why && strstr(why, "appears twice")));
        if (rc == 0) {
            CHECK(open == 0);
            for (int i = 0; i < 3; i++) check_span(copy, s.len, inner[i]);
        }
        free(copy);
    }
    if (s.type == QG_JSON_STRING) {
        char out[64];
        int r = qg_json_string_value(t, s, out, sizeof out);
        CHECK(r >= -1 && r < (int)sizeof out);
        if (r >= 0) CHECK(strlen(out) == (size_t)r && (size_t)r <= s.len - 2);
    }
    if (s.type == QG_JSON_NUMBER) {
        int64_t v = 0;
        if (qg_json_int_value(t, s, &v) == 0) {
            char buf[32];
            CHECK(s.len < sizeof buf);
            memcpy(buf, p, s.len);
            buf[s.len] = 0;
            CHECK(strtoll(buf, NULL, 10) == v);
            CHECK(!memchr(p, '.', s.len) && !memchr(p, 'e', s.len) && !memchr(p, 'E', s.len));
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *t = (const char *)data;
    qg_json_span f[3];
    size_t open = 12345;
    const char *why = NULL;
    int rc = qg_jscan_object(t, size, wanted, 3, f, &open, &why);
    CHECK(rc == 0 || rc == -1);
    if (rc < 0) {
        CHECK(why != NULL && why[0] != 0);
        return 0;
    }
    CHECK(open < size && t[open] == '{');
    for (size_t i = 0; i < open; i++) CHECK(t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r');
    for (int i = 0; i < 3; i++) check_span(t, size, f[i]);

    /* Surrounding whitespace changes nothing but the offsets. */
    char *w = malloc(size + 4);
    memcpy(w, " \n", 2);
    memcpy(w + 2, t, size);
    memcpy(w + 2 + size, "\t\r", 2);
    qg_json_span g[3];
    size_t open2 = 0;
    CHECK(qg_jscan_object(w, size + 4, wanted, 3, g, &open2, &why) == 0);
    CHECK(open2 == open + 2);
    for (int i = 0; i < 3; i++) {
        CHECK(g[i].type == f[i].type);
        if (f[i].type != QG_JSON_NONE) CHECK(g[i].off == f[i].off + 2 && g[i].len == f[i].len);
    }
    free(w);
    /* A truncated document is never accepted (the last non-space byte is its '}'). */
    size_t end = size;
    while (end > 0 && (t[end - 1] == ' ' || t[end - 1] == '\t' || t[end - 1] == '\n' || t[end - 1] == '\r')) end--;
    CHECK(end > 0 && t[end - 1] == '}');
    CHECK(qg_jscan_object(t, end - 1, wanted, 3, g, NULL, &why) == -1);
    return 0;
}
