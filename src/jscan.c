/*
 * jscan.c — validating span scanner for JSON.  See jscan.h for why it exists.
 *
 * The scanner is recursive descent with an explicit depth bound; each value function
 * returns the offset just past the value or -1.  Only the top-level object's members are
 * matched against the wanted names; nested values are validated and skipped.
 */
#include "jscan.h"

typedef struct {
    const char *s;
    size_t n;
    const char *why;
} scan;

static long fail(scan *sc, const char *why)
{
    if (!sc->why) sc->why = why;
    return -1;
}

static size_t skip_ws(const scan *sc, size_t i)
{
    while (i < sc->n && (sc->s[i] == ' ' || sc->s[i] == '\t' || sc->s[i] == '\n' || sc->s[i] == '\r')) i++;
    return i;
}

/* UTF-8 sequence length at i, or 0 if ill-formed (overlongs and surrogates rejected). */
static size_t utf8_len(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned int cp;
    if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07;
    else return 0;
    if (left < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((p[k] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[k] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

static int hex4(const char *p)
{
    for (int k = 0; k < 4; k++) {
        if (qg_hex_digit(p[k]) < 0) return -1;
    }
    return 0;
}

/* 1 for bytes that need a closer look inside a string: '"', '\\', controls, non-ASCII. */
static const uint8_t str_special[256] = {
    [0 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 1,
};

/* The bytes of x (8 bytes loaded little-endian) that need a closer look, as str_special:
 * their top bits set in the result.  Word-at-a-time tests: (v - 0x01..) & ~v & 0x80.. marks
 * the zero bytes of v, and with 0x20.. in place of 0x01.. the bytes below 0x20.  A borrow
 * can mark a byte above a true hit too, never below one, so the lowest mark is exact. */
static uint64_t word_special(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
    uint64_t control = (x - ones * 0x20) & ~x;
    uint64_t has_quote = (quote - ones) & ~quote, has_backslash = (backslash - ones) & ~backslash;
    return (control | has_quote | has_backslash | x) & highs;
}

/* The first byte at or after i that str_special marks, or n. */
static size_t next_special(const scan *sc, size_t i)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; i + 8 <= sc->n; i += 8) {
        uint64_t w;
        memcpy(&w, sc->s + i, 8);
        uint64_t m = word_special(w);
        if (m) return i + (size_t)(__builtin_ctzll(m) >> 3);
    }
#endif
    while (i < sc->n && !str_special[(unsigned char)sc->s[i]]) i++;
    return i;
}

static long scan_string(scan *sc, size_t i)
{
    i++; /* opening quote */
    while (i < sc->n) {
        i = next_special(sc, i); /* plain ASCII runs are most of every body */
        if (i >= sc->n) break;
        unsigned char c = (unsigned char)sc->s[i];
        if (c == '"') return (long)(i + 1);
        if (c == '\\') {
            if (i + 1 >= sc->n) break;
            char e = sc->s[i + 1];
            if (e == 'u') {
                if (i + 6 > sc->n || hex4(sc->s + i + 2) < 0) return fail(sc, "bad \\u escape");
                i += 6;
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
                i += 2;
            } else {
                return fail(sc, "bad escape");
            }
            continue;
        }
        if (c < 0x20) return fail(sc, "control character in string");
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t l = utf8_len((const unsigned char *)sc->s + i, sc->n - i);
        if (!l) return fail(sc, "invalid UTF-8");
        i += l;
    }
    return fail(sc, "unterminated string");
}

static long scan_number(scan *sc, size_t i)
{
    size_t start = i;
    if (i < sc->n && sc->s[i] == '-') i++;
    if (i >= sc->n) return fail(sc, "bad number");
    if (sc->s[i] == '0') i++;
    else if (sc->s[i] >= '1' && sc->s[i] <= '9')
        while (i < sc->n && sc->s[i] >= '0' && sc->s[i] <= '9') i++;
    else return fail(sc, "bad number");
    if (i < sc->n && sc->s[i] == '.') {
        i++;
        size_t d = i;
        while (i < sc->n && sc->s[i] >= '0' && sc->s[i] <= '9') i++;
        if (i == d) return fail(sc, "bad number");
    }
    if (i < sc->n && (sc->s[i] == 'e' || sc->s[i] == 'E')) {
        i++;
        if (i < sc->n && (sc->s[i] == '+' || sc->s[i] == '-')) i++;
        size_t d = i;
        while (i < sc->n && sc->s[i] >= '0' && sc->s[i] <= '9') i++;
        if (i == d) return fail(sc, "bad number");
    }
    return i > start ? (long)i : fail(sc, "bad number");
}

static long scan_literal(scan *sc, size_t i, const char *lit)
{
    size_t l = strlen(lit);
    if (sc->n - i < l || memcmp(sc->s + i, lit, l) != 0) return fail(sc, "unexpected token");
    return (long)(i + l);
}

static long scan_value(scan *sc, size_t i, int depth, qg_json_type *type);

static long scan_container(scan *sc, size_t i, int depth, bool object)
{
    if (depth > QG_JSCAN_MAX_DEPTH) return fail(sc, "nesting too deep");
    char close = object ? '}' : ']';
    i = skip_ws(sc, i + 1);
    if (i < sc->n && sc->s[i] == close) return (long)(i + 1);
    for (;;) {
        if (object) {
            if (i >= sc->n || sc->s[i] != '"') return fail(sc, "expected member name");
            long k = scan_string(sc, i);
            if (k < 0) return -1;
            i = skip_ws(sc, (size_t)k);
            if (i >= sc->n || sc->s[i] != ':') return fail(sc, "expected ':'");
            i = skip_ws(sc, i + 1);
        }
        qg_json_type t;
        long v = scan_value(sc, i, depth + 1, &t);
        if (v < 0) return -1;
        i = skip_ws(sc, (size_t)v);
        if (i >= sc->n) return fail(sc, "unterminated container");
        if (sc->s[i] == close) return (long)(i + 1);
        if (sc->s[i] != ',') return fail(sc, "expected ',' or end of container");
        i = skip_ws(sc, i + 1);
    }
}

static long scan_value(scan *sc, size_t i, int depth, qg_json_type *type)
{
    if (i >= sc->n) return fail(sc, "unexpected end");
    switch (sc->s[i]) {
    case '{': *type = QG_JSON_OBJECT; return scan_container(sc, i, depth, true);
    case '[': *type = QG_JSON_ARRAY; return scan_container(sc, i, depth, false);
    case '"': *type = QG_JSON_STRING; return scan_string(sc, i);
    case 't': *type = QG_JSON_TRUE; return scan_literal(sc, i, "true");
    case 'f': *type = QG_JSON_FALSE; return scan_literal(sc, i, "false");
    case 'n': *type = QG_JSON_NULL; return scan_literal(sc, i, "null");
    default: *type = QG_JSON_NUMBER; return scan_number(sc, i);
    }
}

/* Compares a member name (raw, between its quotes) to a plain ASCII name.  Escapes are
 * decoded first: the provider's parser reads "mod\u0065l" as "model", so must we, or a
 * client could route and be checked on one model while the provider serves another. */
static bool key_is(const char *raw, size_t len, bool escaped, const char *name)
{
    /* raw holds no NUL (controls are invalid in JSON strings), so strncmp stops at name's */
    if (!escaped) /* the first two bytes first: most names differ there ("messages", "max_tokens") */
        return len ? name[0] == raw[0] && (len == 1 || name[1] == raw[1]) && strncmp(name, raw, len) == 0 && name[len] == 0
                   : !name[0];
    char dec[64];
    qg_json_span s = {QG_JSON_STRING, 0, len + 2};
    char quoted[66];
    if (len + 2 > sizeof quoted) return false;
    quoted[0] = '"';
    memcpy(quoted + 1, raw, len);
    quoted[len + 1] = '"';
    return qg_json_string_value(quoted, s, dec, sizeof dec) >= 0 && strcmp(dec, name) == 0;
}

int qg_jscan_object(const char *text, size_t n, const char *const *wanted, size_t n_wanted,
                    qg_json_span *found, size_t *open_off, const char **why)
{
    scan sc = {text, n, NULL};
    for (size_t w = 0; w < n_wanted; w++) found[w] = (qg_json_span){QG_JSON_NONE, 0, 0};
    size_t i = skip_ws(&sc, 0);
    if (i >= n || text[i] != '{') {
        *why = "body is not a JSON object";
        return -1;
    }
    if (open_off) *open_off = i;
    i = skip_ws(&sc, i + 1);
    if (i < n && text[i] == '}') {
        i = skip_ws(&sc, i + 1);
        goto trailing;
    }
    for (;;) {
        if (i >= n || text[i] != '"') {
            fail(&sc, "expected member name");
            goto bad;
        }
        long k = scan_string(&sc, i);
        if (k < 0) goto bad;
        const char *key = text + i + 1;
        size_t klen = (size_t)k - i - 2;
        i = skip_ws(&sc, (size_t)k);
        if (i >= n || text[i] != ':') {
            fail(&sc, "expected ':'");
            goto bad;
        }
        i = skip_ws(&sc, i + 1);
        qg_json_type t;
        long v = scan_value(&sc, i, 2, &t); /* the top-level object is depth 1 */
        if (v < 0) goto bad;
        bool escaped = n_wanted && memchr(key, '\\', klen);
        for (size_t w = 0; w < n_wanted; w++) {
            if (!key_is(key, klen, escaped, wanted[w])) continue;
            /* Parsers disagree on which duplicate wins; refuse to guess for a member we act on. */
            if (found[w].type != QG_JSON_NONE) {
                *why = "a member the gateway reads (model, stream, stream_options, max_tokens) appears twice";
                return -1;
            }
            found[w] = (qg_json_span){t, i, (size_t)v - i};
            break; /* wanted names are distinct: no other can match */
        }
        i = skip_ws(&sc, (size_t)v);
        if (i < n && text[i] == '}') {
            i = skip_ws(&sc, i + 1);
            break;
        }
        if (i >= n || text[i] != ',') {
            fail(&sc, "expected ',' or '}'");
            goto bad;
        }
        i = skip_ws(&sc, i + 1);
    }
trailing:
    if (i != n) {
        *why = "trailing data after the JSON object";
        return -1;
    }
    return 0;
bad:
    *why = sc.why ? sc.why : "invalid JSON";
    return -1;
}

int qg_json_string_value(const char *text, qg_json_span s, char *out, size_t outlen)
{
    if (s.type != QG_JSON_STRING || s.len < 2 || outlen == 0) return -1;
    const char *p = text + s.off + 1, *end = text + s.off + s.len - 1;
    size_t o = 0;
    while (p < end) {
        char c = *p++;
        if (c == '\\') {
            char e = *p++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                unsigned v = 0;
                for (int k = 0; k < 4; k++) {
                    char h = p[k];
                    v = v * 16 + (unsigned)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
                }
                if (v == 0 || v > 0x7f) return -1;
                c = (char)v;
                p += 4;
                break;
            }
            default: c = e;
            }
        }
        if (o + 1 >= outlen) return -1;
        out[o++] = c;
    }
    out[o] = 0;
    return (int)o;
}

int qg_json_int_value(const char *text, qg_json_span s, int64_t *out)
{
    if (s.type != QG_JSON_NUMBER || s.len == 0 || s.len > 20) return -1;
    const char *p = text + s.off;
    size_t i = 0;
    bool neg = false;
    if (p[0] == '-') neg = true, i = 1;
    if (i == s.len) return -1;
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < s.len; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (lim - d) / 10) return -1; /* overflow */
        v = v * 10 + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}
