/*
 * test_jscan.c — the validating JSON span scanner.
 *
 * What the proxy relies on: only top-level members are reported (a "model" inside messages
 * must not route the request), the last duplicate wins, spans are exact (the splice writes
 * around them), and anything that is not one RFC 8259 object is rejected with a reason —
 * including the UTF-8 and number corner cases, and nesting past the limit.  Number
 * spellings the scanner cannot represent (1e400, 20-digit integers) are still valid JSON and
 * come back as spans.  Plus the two value decoders.
 *
 * Inputs are copied into heap buffers of exactly their length, so ASan sees over-reads.
 */
#include "testutil.h"
#include "jscan.h"

static const char *const WANTED[] = {"model", "stream", "stream_options"};
enum { W_MODEL, W_STREAM, W_SO, W_N };

typedef struct {
    int rc;
    const char *why;
    size_t open_off;
    qg_json_span f[W_N];
} scan_result;

static scan_result scan_n(const char *text, size_t n)
{
    char *b = malloc(n ? n : 1);
    if (n) memcpy(b, text, n);
    scan_result r;
    memset(&r, 0x5a, sizeof r); /* found[] must be filled in either way */
    r.why = NULL;
    r.open_off = 777;
    r.rc = qg_jscan_object(b, n, WANTED, W_N, r.f, &r.open_off, &r.why);
    free(b);
    if (r.rc == 0) {
        for (int i = 0; i < W_N; i++) {
            if (r.f[i].type == QG_JSON_NONE) continue;
            assert_true(r.f[i].len > 0 && r.f[i].off + r.f[i].len <= n);
        }
    } else {
        assert_int_equal(r.rc, -1);
        assert_non_null(r.why);
        assert_true(strlen(r.why) > 0);
    }
    return r;
}

static scan_result scan(const char *text) { return scan_n(text, strlen(text)); }

/* The span's text must be exactly `want`. */
static void assert_span(const char *text, qg_json_span s, qg_json_type type, const char *want)
{
    if (s.type != type) fail_msg("span type %d, want %d (\"%s\")", (int)s.type, (int)type, want);
    if (s.len != strlen(want) || memcmp(text + s.off, want, s.len) != 0)
        fail_msg("span \"%.*s\" != \"%s\"", (int)s.len, text + s.off, want);
}

static void assert_absent(qg_json_span s)
{
    assert_int_equal(s.type, QG_JSON_NONE);
}

static void assert_rejects(const char *text, size_t n)
{
    scan_result r = scan_n(text, n);
    if (r.rc != -1) fail_msg("accepted: \"%.*s\"", (int)n, text);
}

#define REJECT(lit) assert_rejects(lit, sizeof(lit) - 1)

/* ---- finding members ---- */

static void test_basic_spans(void **state)
{
    const char *t = "{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{\"include_usage\":false},"
                    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    scan_result r = scan(t);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.open_off, 0);
    assert_span(t, r.f[W_MODEL], QG_JSON_STRING, "\"gpt-4o\"");
    assert_int_equal(r.f[W_MODEL].off, 9);
    assert_span(t, r.f[W_STREAM], QG_JSON_TRUE, "true");
    assert_int_equal(r.f[W_STREAM].off, 27);
    assert_span(t, r.f[W_SO], QG_JSON_OBJECT, "{\"include_usage\":false}");
    assert_int_equal(r.f[W_SO].off, 49);

    /* Absent members are NONE; the others still found. */
    const char *t2 = "{\"messages\":[],\"model\":\"m\"}";
    r = scan(t2);
    assert_int_equal(r.rc, 0);
    assert_span(t2, r.f[W_MODEL], QG_JSON_STRING, "\"m\"");
    assert_absent(r.f[W_STREAM]);
    assert_absent(r.f[W_SO]);

    /* wanted may be empty; open_off may be NULL */
    const char *why = NULL;
    assert_int_equal(qg_jscan_object("{\"a\":1}", 7, NULL, 0, NULL, NULL, &why), 0);
}

static void test_every_type(void **state)
{
    const char *t = "{\"model\":-12.5e+3,\"stream\":null,\"stream_options\":[1,{\"a\":[]},\"x\"]}";
    scan_result r = scan(t);
    assert_int_equal(r.rc, 0);
    assert_span(t, r.f[W_MODEL], QG_JSON_NUMBER, "-12.5e+3");
    assert_span(t, r.f[W_STREAM], QG_JSON_NULL, "null");
    assert_span(t, r.f[W_SO], QG_JSON_ARRAY, "[1,{\"a\":[]},\"x\"]");

    t = "{\"stream\":false,\"model\":{},\"stream_options\":[]}";
    r = scan(t);
    assert_int_equal(r.rc, 0);
    assert_span(t, r.f[W_MODEL], QG_JSON_OBJECT, "{}");
    assert_span(t, r.f[W_STREAM], QG_JSON_FALSE, "false");
    assert_span(t, r.f[W_SO], QG_JSON_ARRAY, "[]");

    /* Whitespace inside values is part of the span; around them it is not. */
    t = "{ \"model\" :\t\"a b\" ,\n\"stream_options\" : { \"include_usage\" : true } \r\n}";
    r = scan(t);
    assert_int_equal(r.rc, 0);
    assert_span(t, r.f[W_MODEL], QG_JSON_STRING, "\"a b\"");
    assert_span(t, r.f[W_SO], QG_JSON_OBJECT, "{ \"include_usage\" : true }");
}

static void test_top_level_only(void **state)
{
    const char *t = "{\"messages\":[{\"model\":\"inner\",\"stream\":true}],\"meta\":{\"model\":\"deep\","
                    "\"stream_options\":{}},\"x\":\"\\\"model\\\":\\\"str\\\"\"}";
    scan_result r = scan(t);
    assert_int_equal(r.rc, 0);
    assert_absent(r.f[W_MODEL]);
    assert_absent(r.f[W_STREAM]);
    assert_absent(r.f[W_SO]);

    t = "{\"a\":{\"model\":\"x\"},\"model\":\"top\",\"b\":[{\"model\":\"y\"}]}";
    r = scan(t);
    assert_int_equal(r.rc, 0);
    assert_span(t, r.f[W_MODEL], QG_JSON_STRING, "\"top\"");

    /* Names are compared whole: no prefixes, no case folding. */
    t = "{\"models\":\"a\",\"Model\":\"b\",\"mode\":\"c\",\"stream_option\":1,\"streams\":true}";
    r = scan(t);
    assert_int_equal(r.rc, 0);
    assert_absent(r.f[W_MODEL]);
    assert_absent(r.f[W_STREAM]);
    assert_absent(r.f[W_SO]);
}

/* Parsers disagree on which duplicate wins (most take the last, some the first), so a
 * member the gateway acts on may appear only once; other members may repeat freely. */
static void test_duplicate_wanted_member_rejected(void **state)
{
    const char *t = "{\"model\":\"a\",\"stream\":true,\"model\":\"bb\"}";
    scan_result r = scan(t);
    assert_int_equal(r.rc, -1);
    t = "{\"stream_options\":{\"include_usage\":true},\"stream_options\":null}";
    assert_int_equal(scan(t).rc, -1);
    t = "{\"model\":\"m\",\"mod\\u0065l\":\"x\"}"; /* the same name, once escaped */
    assert_int_equal(scan(t).rc, -1);
    t = "{\"model\":\"a\",\"temperature\":1,\"temperature\":2}";
    r = scan(t);
    assert_int_equal(r.rc, 0);
    assert_span(t, r.f[W_MODEL], QG_JSON_STRING, "\"a\"");
}

/* A member name spelled with escapes is the same name to every JSON parser upstream.  If the
 * scanner compared raw bytes only, {"model":"cheap","mod\u0065l":"expensive"} would be
 * routed (and checked against the key's model list) as "cheap" while the provider serves
 * "expensive".  Either decode names before comparing or reject such bodies. */
static void test_escaped_member_names(void **state)
{
    static const struct {
        const char *text;
        int which;
        const char *want; /* the span a JSON parser would take */
    } cases[] = {
        {"{\"mod\\u0065l\":\"x\"}", W_MODEL, "\"x\""},
        {"{\"model\":\"cheap\",\"mod\\u0065l\":\"expensive\"}", W_MODEL, "\"expensive\""},
        {"{\"model\":\"m\",\"str\\u0065am\":true}", W_STREAM, "true"},
        {"{\"stream\":false,\"\\u0073tream\":true}", W_STREAM, "true"},
        {"{\"model\":\"m\",\"stream_options\\u0000\":1}", W_SO, NULL}, /* a different name: absent */
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        scan_result r = scan(cases[i].text);
        if (r.rc < 0) continue; /* rejecting is a safe answer */
        qg_json_span s = r.f[cases[i].which];
        if (!cases[i].want) {
            if (s.type != QG_JSON_NONE) fail_msg("case %zu: \\u0000 name matched", i);
            continue;
        }
        if (s.type == QG_JSON_NONE || s.len != strlen(cases[i].want) ||
            memcmp(cases[i].text + s.off, cases[i].want, s.len) != 0)
            fail_msg("case %zu: %s: the escaped name was not taken as the member (got \"%.*s\")", i, cases[i].text,
                     (int)s.len, s.type == QG_JSON_NONE ? "" : cases[i].text + s.off);
    }
}

static void test_open_off_and_whitespace(void **state)
{
    const char *t = "  \n\t{ \"model\" : \"m\" } \n\r\t";
    scan_result r = scan(t);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.open_off, 4);
    assert_span(t, r.f[W_MODEL], QG_JSON_STRING, "\"m\"");
    assert_int_equal(r.f[W_MODEL].off, 16);

    r = scan("{}");
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.open_off, 0);
    for (int i = 0; i < W_N; i++) assert_absent(r.f[i]);
    r = scan("\r\n{ \t\n}\n");
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.open_off, 2);
    for (int i = 0; i < W_N; i++) assert_absent(r.f[i]);
}

/* ---- rejections ---- */

static void test_rejects_structure(void **state)
{
    /* not an object */
    REJECT("");
    REJECT("   \n");
    REJECT("[]");
    REJECT("[{\"model\":\"m\"}]");
    REJECT("\"x\"");
    REJECT("1");
    REJECT("null");
    REJECT("}");
    REJECT("\xef\xbb\xbf{}"); /* a BOM is not JSON whitespace */
    REJECT("\f{}");
    /* incomplete */
    REJECT("{");
    REJECT("{\"model\"");
    REJECT("{\"model\":");
    REJECT("{\"model\":\"m\"");
    REJECT("{\"model\":\"m\",");
    REJECT("{\"a\":[1,2}");
    REJECT("{\"a\":[1}]");
    REJECT("{\"a\":{\"b\":1}");
    REJECT("{\"a\":\"unterminated}");
    REJECT("{\"a\":\"ends in a backslash\\");
    /* trailing data */
    REJECT("{} {}");
    REJECT("{}x");
    REJECT("{\"a\":1}]");
    REJECT("{\"a\":1}}");
    REJECT("{},");
    REJECT("{}\x00");
    REJECT("{} \x00");
    /* trailing commas and missing pieces */
    REJECT("{\"a\":1,}");
    REJECT("{,}");
    REJECT("{,\"a\":1}");
    REJECT("{\"a\":1,,\"b\":2}");
    REJECT("{\"a\":[1,]}");
    REJECT("{\"a\":[,1]}");
    REJECT("{\"a\":{\"b\":1,}}");
    REJECT("{\"a\" 1}");
    REJECT("{\"a\":}");
    REJECT("{\"a\"::1}");
    REJECT("{\"a\":1 \"b\":2}");
    REJECT("{a:1}");
    REJECT("{'a':1}");
    REJECT("{\"a\":'x'}");
    REJECT("{1:2}");
    /* literals */
    REJECT("{\"a\":tru}");
    REJECT("{\"a\":True}");
    REJECT("{\"a\":nul}");
    REJECT("{\"a\":falsee}");
    REJECT("{\"a\":nulll}");
    REJECT("{\"a\":undefined}");
    REJECT("{\"a\":NaN}");
    REJECT("{\"a\":Infinity}");
    REJECT("{\"a\":-Infinity}");
    REJECT("{\"a\":tr");
}

static void test_rejects_strings(void **state)
{
    /* escapes */
    REJECT("{\"a\":\"\\x\"}");
    REJECT("{\"a\":\"\\'\"}");
    REJECT("{\"a\":\"\\a\"}");
    REJECT("{\"a\":\"\\0\"}");
    REJECT("{\"a\":\"\\U0041\"}");
    REJECT("{\"a\":\"\\u12\"}");
    REJECT("{\"a\":\"\\u12G4\"}");
    REJECT("{\"a\":\"\\u\"}");
    REJECT("{\"a\":\"\\u004\"}");
    REJECT("{\"a\":\"\\\"}");
    REJECT("{\"a\\q\":1}");
    REJECT("{\"a\":\"\\u00");
    /* control characters, raw, in values and names */
    REJECT("{\"a\":\"tab\there\"}");
    REJECT("{\"a\":\"line\nbreak\"}");
    REJECT("{\"a\":\"cr\rx\"}");
    REJECT("{\"a\":\"\x01\"}");
    REJECT("{\"a\":\"\x1f\"}");
    REJECT("{\"a\x02\":1}");
    REJECT("{\"a\":\"nul\x00\"}");
    /* invalid UTF-8: overlong forms */
    REJECT("{\"a\":\"\xc0\x80\"}");
    REJECT("{\"a\":\"\xc1\xbf\"}");
    REJECT("{\"a\":\"\xe0\x80\x80\"}");
    REJECT("{\"a\":\"\xe0\x9f\xbf\"}");
    REJECT("{\"a\":\"\xf0\x80\x80\x80\"}");
    REJECT("{\"a\":\"\xf0\x8f\xbf\xbf\"}");
    /* surrogates */
    REJECT("{\"a\":\"\xed\xa0\x80\"}");
    REJECT("{\"a\":\"\xed\xbf\xbf\"}");
    REJECT("{\"a\":\"\xed\xa0\xbd\xed\xb8\x80\"}"); /* CESU-8 pair */
    /* beyond U+10FFFF and never-valid bytes */
    REJECT("{\"a\":\"\xf4\x90\x80\x80\"}");
    REJECT("{\"a\":\"\xf5\x80\x80\x80\"}");
    REJECT("{\"a\":\"\xf8\x88\x80\x80\x80\"}");
    REJECT("{\"a\":\"\xfe\"}");
    REJECT("{\"a\":\"\xff\"}");
    /* stray continuation bytes, truncated sequences */
    REJECT("{\"a\":\"\x80\"}");
    REJECT("{\"a\":\"\xbf\"}");
    REJECT("{\"a\":\"\xc3\"}");
    REJECT("{\"a\":\"\xe2\x82\"}");
    REJECT("{\"a\":\"\xf0\x9d\x84\"}");
    REJECT("{\"a\":\"\xe2\x82x\"}");
    REJECT("{\"a\":\"\xc3");
    REJECT("{\"a\":\"\xf0\x9d");
    REJECT("{\"\xc3\x28\":1}"); /* in a name too */

    /* ... while valid UTF-8 is fine, at every length and at the edges. */
    static const char *const ok[] = {
        "{\"a\":\"\xc3\xa9\"}",             /* U+00E9 */
        "{\"a\":\"\xc2\x80\"}",             /* U+0080 */
        "{\"a\":\"\xdf\xbf\"}",             /* U+07FF */
        "{\"a\":\"\xe0\xa0\x80\"}",         /* U+0800 */
        "{\"a\":\"\xe2\x82\xac\"}",         /* U+20AC */
        "{\"a\":\"\xed\x9f\xbf\"}",         /* U+D7FF */
        "{\"a\":\"\xee\x80\x80\"}",         /* U+E000 */
        "{\"a\":\"\xef\xbf\xbf\"}",         /* U+FFFF */
        "{\"a\":\"\xf0\x90\x80\x80\"}",     /* U+10000 */
        "{\"a\":\"\xf0\x9d\x84\x9e\"}",     /* U+1D11E */
        "{\"a\":\"\xf4\x8f\xbf\xbf\"}",     /* U+10FFFF */
        "{\"\xe6\xa8\xa1\xe5\x9e\x8b\":\"\x7f\"}", /* a non-ASCII name; DEL is not a control here */
        "{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\uD83D\\uDE00\\uffff\"}",
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(ok); i++) {
        scan_result r = scan(ok[i]);
        if (r.rc != 0) fail_msg("case %zu rejected: %s", i, r.why);
    }
}

/* Strings are scanned 8 bytes at a time (a word test, then the lowest marked byte), so every
 * byte value must be judged the same at every position of a word, and with the closing quote
 * or an escape in the same word as other special bytes. */
static void test_string_bytes_every_position(void **state)
{
    char t[64];
    for (int pos = 0; pos < 24; pos++) {
        for (int b = 0; b < 256; b++) {
            /* {"model":"aaa<b>aaa"} with b at offset pos of the value's contents */
            int n = snprintf(t, sizeof t, "{\"model\":\"%.*s", pos, "aaaaaaaaaaaaaaaaaaaaaaaaaaaa");
            t[n++] = (char)b;
            n += snprintf(t + n, sizeof t - (size_t)n, "%.*s\"}", 23 - pos, "aaaaaaaaaaaaaaaaaaaaaaaaaaaa");
            bool plain = b >= 0x20 && b < 0x80 && b != '"' && b != '\\';
            scan_result r = scan_n(t, (size_t)n);
            if (r.rc != (plain ? 0 : -1)) fail_msg("byte 0x%02x at %d: rc %d", b, pos, r.rc);
            if (plain) assert_int_equal(r.f[W_MODEL].len, 26);
        }
    }
    /* The quote ends the string exactly where it stands, whatever follows it in the word. */
    for (int pos = 0; pos < 16; pos++) {
        int n = snprintf(t, sizeof t, "{\"model\":\"%.*s\",\"stream\":\"\xc3\xa9\\n\"}", pos, "bbbbbbbbbbbbbbbb");
        scan_result r = scan_n(t, (size_t)n);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.f[W_MODEL].len, (size_t)pos + 2);
        assert_int_equal(r.f[W_STREAM].len, 6);
    }
    /* A two-byte UTF-8 character split across a word boundary. */
    for (int pos = 0; pos < 16; pos++) {
        int n = snprintf(t, sizeof t, "{\"model\":\"%.*s\xc3\xa9zz\"}", pos, "cccccccccccccccc");
        assert_int_equal(scan_n(t, (size_t)n).rc, 0);
        n = snprintf(t, sizeof t, "{\"model\":\"%.*s\xc3zz\"}", pos, "cccccccccccccccc");
        assert_int_equal(scan_n(t, (size_t)n).rc, -1);
    }
}

static void test_numbers(void **state)
{
    REJECT("{\"a\":01}");
    REJECT("{\"a\":-01}");
    REJECT("{\"a\":00}");
    REJECT("{\"a\":1.}");
    REJECT("{\"a\":1.e5}");
    REJECT("{\"a\":.5}");
    REJECT("{\"a\":-.5}");
    REJECT("{\"a\":-}");
    REJECT("{\"a\":--1}");
    REJECT("{\"a\":+1}");
    REJECT("{\"a\":1e}");
    REJECT("{\"a\":1e+}");
    REJECT("{\"a\":1E-}");
    REJECT("{\"a\":1e5.5}");
    REJECT("{\"a\":0x10}");
    REJECT("{\"a\":1_000}");
    REJECT("{\"a\":[1 2]}");
    REJECT("{\"a\":-");
    REJECT("{\"a\":1");

    static const char *const ok[] = {"0", "-0", "1", "-1", "0.5", "-0.0", "1e400", "-1e-400", "1E+2", "1e05",
                                     "12345678901234567890", "-12345678901234567890123456789",
                                     "0.000000000000000000000000000001", "123.456e-789", "9007199254740993"};
    for (size_t i = 0; i < QG_ARRAY_LEN(ok); i++) {
        char t[128];
        snprintf(t, sizeof t, "{\"model\":%s,\"stream\":[%s]}", ok[i], ok[i]);
        scan_result r = scan(t);
        if (r.rc != 0) fail_msg("%s rejected: %s", ok[i], r.why);
        assert_span(t, r.f[W_MODEL], QG_JSON_NUMBER, ok[i]); /* kept exactly as spelled */
        assert_int_equal(r.f[W_STREAM].type, QG_JSON_ARRAY);
    }
}

/* The nesting depth of `{"a":` + k * "[" + k * "]" + `}` is k + 1 (the object counts). */
static char *nested(size_t k, bool objects, size_t *n)
{
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_buf_puts(&b, "{\"a\":");
    for (size_t i = 0; i < k; i++) qg_buf_puts(&b, objects ? "{\"a\":" : "[");
    qg_buf_puts(&b, "1");
    for (size_t i = 0; i < k; i++) qg_buf_puts(&b, objects ? "}" : "]");
    qg_buf_puts(&b, "}");
    *n = b.len;
    return b.data;
}

static void test_depth(void **state)
{
    for (int objects = 0; objects < 2; objects++) {
        size_t n;
        char *t = nested(QG_JSCAN_MAX_DEPTH - 1, objects, &n); /* depth QG_JSCAN_MAX_DEPTH */
        scan_result r = scan_n(t, n);
        if (r.rc != 0) fail_msg("depth %d rejected: %s", QG_JSCAN_MAX_DEPTH, r.why);
        free(t);
        t = nested(QG_JSCAN_MAX_DEPTH + 1, objects, &n); /* depth QG_JSCAN_MAX_DEPTH + 2 */
        r = scan_n(t, n);
        assert_int_equal(r.rc, -1);
        assert_string_equal(r.why, "nesting too deep");
        free(t);
        /* Far deeper (and unterminated): rejected without exhausting the stack. */
        qg_buf b;
        qg_buf_init(&b, 0);
        qg_buf_puts(&b, "{\"a\":");
        for (int i = 0; i < 200000; i++) qg_buf_puts(&b, objects ? "{\"a\":" : "[");
        r = scan_n(b.data, b.len);
        assert_int_equal(r.rc, -1);
        assert_string_equal(r.why, "nesting too deep");
        qg_buf_free(&b);
    }
    /* The limit is on depth, not on the number of containers. */
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_buf_puts(&b, "{\"a\":[");
    for (int i = 0; i < 10000; i++) qg_buf_puts(&b, i ? ",[[]]" : "[[]]");
    qg_buf_puts(&b, "]}");
    assert_int_equal(scan_n(b.data, b.len).rc, 0);
    qg_buf_free(&b);
}

/* ---- value decoders ---- */

/* Scans {"model":<value>} and returns the model span (the text must stay alive). */
static qg_json_span model_span(const char *text)
{
    scan_result r = scan(text);
    if (r.rc != 0) fail_msg("%s rejected: %s", text, r.why);
    return r.f[W_MODEL];
}

static void test_string_value(void **state)
{
    char out[64];
    const char *t = "{\"model\":\"claude-opus-4\"}";
    assert_int_equal(qg_json_string_value(t, model_span(t), out, sizeof out), 13);
    assert_string_equal(out, "claude-opus-4");

    t = "{\"model\":\"a\\\"b\\\\c\\/d\\n\\t\\r\\b\\f.\"}";
    assert_int_equal(qg_json_string_value(t, model_span(t), out, sizeof out), 13);
    assert_memory_equal(out, "a\"b\\c/d\n\t\r\b\f.", 14);

    t = "{\"model\":\"\\u0041\\u007a\\u007A-\\u0030\"}";
    assert_int_equal(qg_json_string_value(t, model_span(t), out, sizeof out), 5);
    assert_string_equal(out, "Azz-0");

    t = "{\"model\":\"\"}";
    out[0] = 'x';
    assert_int_equal(qg_json_string_value(t, model_span(t), out, 1), 0);
    assert_string_equal(out, "");

    /* Raw UTF-8 passes through as bytes. */
    t = "{\"model\":\"caf\xc3\xa9\"}";
    assert_int_equal(qg_json_string_value(t, model_span(t), out, sizeof out), 5);
    assert_string_equal(out, "caf\xc3\xa9");

    /* Escapes outside ASCII (and NUL) are refused. */
    static const char *const non_ascii[] = {"{\"model\":\"\\u00e9\"}", "{\"model\":\"\\u0080\"}",
                                            "{\"model\":\"\\uD83D\\uDE00\"}", "{\"model\":\"x\\u0000y\"}",
                                            "{\"model\":\"\\uFFFF\"}"};
    for (size_t i = 0; i < QG_ARRAY_LEN(non_ascii); i++)
        assert_int_equal(qg_json_string_value(non_ascii[i], model_span(non_ascii[i]), out, sizeof out), -1);

    /* Too long: the NUL needs a byte too. */
    t = "{\"model\":\"hello\"}";
    assert_int_equal(qg_json_string_value(t, model_span(t), out, 5), -1);
    assert_int_equal(qg_json_string_value(t, model_span(t), out, 6), 5);
    assert_string_equal(out, "hello");
    t = "{\"model\":\"\\u0041\\u0042\"}"; /* decoded length counts, not the escaped one */
    assert_int_equal(qg_json_string_value(t, model_span(t), out, 3), 2);
    assert_string_equal(out, "AB");
    assert_int_equal(qg_json_string_value(t, model_span(t), out, 2), -1);

    /* Not a string. */
    t = "{\"model\":123}";
    assert_int_equal(qg_json_string_value(t, model_span(t), out, sizeof out), -1);
    t = "{\"model\":[\"x\"]}";
    assert_int_equal(qg_json_string_value(t, model_span(t), out, sizeof out), -1);
    qg_json_span none = {QG_JSON_NONE, 0, 0};
    assert_int_equal(qg_json_string_value("", none, out, sizeof out), -1);
}

static int64_t int_of(const char *num, int *rc)
{
    char t[96];
    snprintf(t, sizeof t, "{\"model\":%s}", num);
    int64_t v = 0x5a5a;
    *rc = qg_json_int_value(t, model_span(t), &v);
    if (*rc < 0) assert_int_equal(v, 0x5a5a); /* untouched on failure */
    return v;
}

static void test_int_value(void **state)
{
    int rc;
    assert_int_equal(int_of("0", &rc), 0);
    assert_int_equal(rc, 0);
    assert_int_equal(int_of("-0", &rc), 0);
    assert_int_equal(rc, 0);
    assert_int_equal(int_of("42", &rc), 42);
    assert_int_equal(rc, 0);
    assert_int_equal(int_of("-42", &rc), -42);
    assert_int_equal(rc, 0);
    assert_int_equal(int_of("4096", &rc), 4096);
    assert_int_equal(rc, 0);
    assert_int_equal(int_of("123456789012345678", &rc), 123456789012345678LL);
    assert_int_equal(rc, 0);
    assert_int_equal(int_of("-12345678901234567", &rc), -12345678901234567LL);
    assert_int_equal(rc, 0);
    static const char *const bad[] = {"1.5", "1.0", "1e3", "1E2", "-1e-1", "12345678901234567890",
                                      "-99999999999999999999", "1e400"};
    for (size_t i = 0; i < QG_ARRAY_LEN(bad); i++) {
        int_of(bad[i], &rc);
        if (rc != -1) fail_msg("%s parsed as an int64", bad[i]);
    }
    int64_t v = 7;
    const char *t = "{\"model\":\"12\"}";
    assert_int_equal(qg_json_int_value(t, model_span(t), &v), -1);
    t = "{\"model\":true}";
    assert_int_equal(qg_json_int_value(t, model_span(t), &v), -1);
    assert_int_equal(v, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_spans),
        cmocka_unit_test(test_every_type),
        cmocka_unit_test(test_top_level_only),
        cmocka_unit_test(test_duplicate_wanted_member_rejected),
        cmocka_unit_test(test_escaped_member_names),
        cmocka_unit_test(test_open_off_and_whitespace),
        cmocka_unit_test(test_rejects_structure),
        cmocka_unit_test(test_rejects_strings),
        cmocka_unit_test(test_string_bytes_every_position),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_string_value),
        cmocka_unit_test(test_int_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
