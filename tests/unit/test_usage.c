/*
 * test_usage.c — usage extraction against the provider fixtures, with the exact numbers from
 * tests/fixtures/providers/README.md.  Stream fixtures run end to end through qg_sse_feed and
 * qg_usage_stream_event (whole and byte by byte) and check the final usage, the flags of each
 * event and the stream state; small inline cases pin the shapes the fixtures do not cover.
 */
#include "testutil.h"
#include "sse.h"
#include "usage.h"

typedef struct {
    int64_t in, out, cached, cache_write, reasoning;
} want_usage;

static void assert_usage(const qg_usage *u, want_usage w)
{
    assert_true(u->found);
    assert_int_equal(u->input_tokens, w.in);
    assert_int_equal(u->output_tokens, w.out);
    assert_int_equal(u->cached_tokens, w.cached);
    assert_int_equal(u->cache_write_tokens, w.cache_write);
    assert_int_equal(u->reasoning_tokens, w.reasoning);
}

static qg_usage from_fixture(const char *file, qg_dialect d)
{
    size_t n;
    char *body = tu_fixture(file, &n);
    qg_usage u;
    assert_int_equal(qg_usage_from_json(d, body, n, &u), 0);
    free(body);
    return u;
}

/* The body of an .http fixture: after the first empty line. */
static qg_usage from_http_fixture(const char *file)
{
    size_t n;
    char *text = tu_fixture(file, &n);
    char *body = strstr(text, "\n\n");
    assert_non_null(body);
    body += 2;
    qg_usage u;
    assert_int_equal(qg_usage_from_json(QG_DIALECT_OPENAI, body, n - (size_t)(body - text), &u), 0);
    free(text);
    return u;
}

static qg_usage from_str(qg_dialect d, const char *json, int want_rc)
{
    qg_usage u;
    memset(&u, 0x55, sizeof u);
    assert_int_equal(qg_usage_from_json(d, json, strlen(json), &u), want_rc);
    if (want_rc < 0) assert_false(u.found);
    return u;
}

/* ---- non-stream ---- */

static void test_openai_chat(void **state)
{
    qg_usage u = from_fixture("openai-chat-usage.json", QG_DIALECT_OPENAI);
    assert_usage(&u, (want_usage){2150, 412, 1920, 0, 256}); /* uncached 230 = 2150 - 1920 */
    assert_false(u.has_cost);
}

static void test_openai_responses(void **state)
{
    qg_usage u = from_fixture("openai-responses-usage.json", QG_DIALECT_OPENAI);
    assert_usage(&u, (want_usage){1830, 690, 1024, 0, 448}); /* uncached 806 */
    assert_int_equal(u.input_tokens + u.output_tokens, 2520);
}

static void test_anthropic_messages(void **state)
{
    qg_usage u = from_fixture("anthropic-messages-usage.json", QG_DIALECT_ANTHROPIC);
    assert_usage(&u, (want_usage){13852, 310, 12000, 1800, 0}); /* 52 + 12000 + 1800 */
    assert_int_equal(u.input_tokens - u.cached_tokens - u.cache_write_tokens, 52);
    assert_false(u.has_cost);
}

static void test_openrouter_chat(void **state)
{
    qg_usage u = from_fixture("openrouter-chat-usage.json", QG_DIALECT_OPENAI);
    assert_usage(&u, (want_usage){13852, 310, 12000, 1800, 0});
    assert_int_equal(u.input_tokens - u.cached_tokens - u.cache_write_tokens, 52);
    assert_true(u.has_cost);
    assert_true(u.cost == 0.015156);
}

static void test_deepseek_chat(void **state)
{
    qg_usage u = from_fixture("deepseek-chat-usage.json", QG_DIALECT_OPENAI);
    assert_usage(&u, (want_usage){1536, 640, 1280, 0, 512}); /* uncached 256 */
    /* Without prompt_tokens_details, prompt_cache_hit_tokens is the fallback. */
    u = from_str(QG_DIALECT_OPENAI,
                 "{\"usage\":{\"prompt_tokens\":1536,\"completion_tokens\":640,\"prompt_cache_hit_tokens\":1280,"
                 "\"prompt_cache_miss_tokens\":256}}",
                 0);
    assert_usage(&u, (want_usage){1536, 640, 1280, 0, 0});
}

static void test_http_bodies(void **state)
{
    qg_usage u = from_http_fixture("groq-ratelimit-headers.http");
    assert_usage(&u, (want_usage){612, 154, 0, 0, 0}); /* the float *_time fields are ignored */
    u = from_http_fixture("openai-ratelimit-headers.http");
    assert_usage(&u, (want_usage){11, 2, 0, 0, 0});
}

static void test_other_shapes(void **state)
{
    /* Embeddings: prompt and total only. */
    qg_usage u = from_str(QG_DIALECT_OPENAI,
                          "{\"object\":\"list\",\"data\":[],\"model\":\"text-embedding-3-small\","
                          "\"usage\":{\"prompt_tokens\":8,\"total_tokens\":8}}",
                          0);
    assert_usage(&u, (want_usage){8, 0, 0, 0, 0});
    /* Anthropic cache writes given only as the per-TTL breakdown. */
    u = from_str(QG_DIALECT_ANTHROPIC,
                 "{\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5,"
                 "\"cache_creation\":{\"ephemeral_5m_input_tokens\":3,\"ephemeral_1h_input_tokens\":4},\"output_tokens\":2}}",
                 0);
    assert_usage(&u, (want_usage){22, 2, 5, 7, 0});
    /* Responses shape with a cost (OpenRouter's Responses endpoint). */
    u = from_str(QG_DIALECT_OPENAI, "{\"usage\":{\"input_tokens\":5,\"output_tokens\":1,\"cost\":0.5}}", 0);
    assert_usage(&u, (want_usage){5, 1, 0, 0, 0});
    assert_true(u.has_cost && u.cost == 0.5);
    /* Counts that are not non-negative exact numbers are absent. */
    u = from_str(QG_DIALECT_OPENAI,
                 "{\"usage\":{\"prompt_tokens\":-4,\"completion_tokens\":1e300,\"total_tokens\":\"9\"}}", -1);
    u = from_str(QG_DIALECT_OPENAI, "{\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":\"3\"}}", 0);
    assert_usage(&u, (want_usage){7, 0, 0, 0, 0});

    /* Fraction and exponent spellings of a count are read as numbers (truncated), and member
     * names are compared after decoding escapes, as the provider's own parser would. */
    u = from_str(QG_DIALECT_OPENAI, "{\"usage\":{\"prompt_tokens\":12.0,\"completion_tokens\":1e2}}", 0);
    assert_usage(&u, (want_usage){12, 100, 0, 0, 0});
    u = from_str(QG_DIALECT_OPENAI,
                 "{\"usage\":{\"prompt\\u005ftokens\":4,\"completion_tokens\":2,"
                 "\"prompt_tokens_details\":{\"cached_\\u0074okens\":3}}}",
                 0);
    assert_usage(&u, (want_usage){4, 2, 3, 0, 0});
    /* 2^53 is the largest exact count; one more is absent. */
    u = from_str(QG_DIALECT_OPENAI, "{\"usage\":{\"prompt_tokens\":9007199254740992,\"completion_tokens\":9007199254740993}}", 0);
    assert_usage(&u, (want_usage){9007199254740992LL, 0, 0, 0, 0});
    /* A count given twice is ambiguous: the usage object is not trusted. */
    from_str(QG_DIALECT_OPENAI, "{\"usage\":{\"prompt_tokens\":1,\"prompt_tokens\":9,\"completion_tokens\":1}}", -1);
    /* Valid JSON is required around the usage object too. */
    from_str(QG_DIALECT_OPENAI, "{\"usage\":{\"prompt_tokens\":1},\"x\":tru}", -1);

    from_str(QG_DIALECT_OPENAI, "{\"usage\":null}", -1);
    from_str(QG_DIALECT_OPENAI, "{\"usage\":{}}", -1);
    from_str(QG_DIALECT_OPENAI, "{\"id\":\"x\"}", -1);
    from_str(QG_DIALECT_OPENAI, "[1,2]", -1);
    from_str(QG_DIALECT_OPENAI, "not json", -1);
    from_str(QG_DIALECT_OPENAI, "", -1);
    from_str(QG_DIALECT_OPENAI, "{\"usage\":{\"prompt_tokens\":1", -1);
    /* The wrong dialect finds no counts it knows. */
    from_str(QG_DIALECT_ANTHROPIC, "{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}", -1);
}

/* ---- streams, end to end ---- */

typedef struct {
    qg_usage_stream st;
    int flags[64];
    int n;
    int parsed; /* events that were JSON-scanned (the hot-path contract: only those carrying a
                   usage or error object) */
} stream_run;

static int on_event(void *ud, const qg_sse_event *ev)
{
    stream_run *r = ud;
    int64_t before = r->st.scanned_events;
    int f = qg_usage_stream_event(&r->st, ev->event, ev->data);
    r->parsed += r->st.scanned_events != before;
    assert_true(r->n < 64);
    r->flags[r->n++] = f;
    return 0;
}

static int count_flag(const stream_run *r, int flag)
{
    int c = 0;
    for (int i = 0; i < r->n; i++) c += (r->flags[i] & flag) != 0;
    return c;
}

/* Runs a fixture through the SSE parser and the usage stream, whole or byte by byte; both
 * must agree, and the whole-feed run is returned. */
static stream_run run_stream(const char *file, qg_dialect d)
{
    size_t n;
    char *in = tu_fixture(file, &n);
    stream_run runs[2];
    for (int way = 0; way < 2; way++) {
        stream_run *r = &runs[way];
        memset(r, 0, sizeof *r);
        qg_usage_stream_init(&r->st, d);
        qg_sse_parser p;
        qg_sse_init(&p, 64 * 1024);
        if (way == 0) {
            assert_int_equal(qg_sse_feed(&p, in, n, on_event, r), QG_SSE_OK);
        } else {
            for (size_t i = 0; i < n; i++) assert_int_equal(qg_sse_feed(&p, in + i, 1, on_event, r), QG_SSE_OK);
        }
        assert_int_equal(qg_sse_finish(&p, on_event, r), QG_SSE_OK);
        assert_int_equal(qg_sse_pending(&p).n, 0);
        qg_sse_free(&p);
    }
    assert_int_equal(runs[0].n, runs[1].n);
    assert_int_equal(runs[0].parsed, runs[1].parsed);
    assert_memory_equal(runs[0].flags, runs[1].flags, sizeof runs[0].flags);
    assert_memory_equal(&runs[0].st.usage, &runs[1].st.usage, sizeof runs[0].st.usage);
    free(in);
    return runs[0];
}

static void test_stream_openai_chat(void **state)
{
    stream_run r = run_stream("openai-chat-stream-include-usage.sse", QG_DIALECT_OPENAI);
    assert_int_equal(r.n, 7);
    assert_usage(&r.st.usage, (want_usage){24, 7, 0, 0, 0});
    assert_int_equal(count_flag(&r, QG_EV_USAGE_ONLY), 1);
    assert_int_equal(r.flags[5], QG_EV_USAGE | QG_EV_USAGE_ONLY); /* the 6th event, choices: [] */
    assert_int_equal(count_flag(&r, QG_EV_USAGE), 1);
    assert_int_equal(r.flags[6], QG_EV_TERMINAL); /* [DONE] */
    assert_int_equal(count_flag(&r, QG_EV_TERMINAL), 1);
    int deltas[] = {0, QG_EV_DELTA, QG_EV_DELTA, QG_EV_DELTA, 0}; /* "" role chunk and the stop chunk carry no text */
    for (int i = 0; i < 5; i++) assert_int_equal(r.flags[i], deltas[i]);
    assert_int_equal(r.st.delta_events, 3);
    assert_true(r.st.terminal);
    assert_false(r.st.error);
    assert_int_equal(r.parsed, 1); /* only the usage chunk; "usage":null chunks are not parsed */
}

static void test_stream_openai_responses(void **state)
{
    stream_run r = run_stream("openai-responses-stream.sse", QG_DIALECT_OPENAI);
    assert_int_equal(r.n, 10);
    assert_usage(&r.st.usage, (want_usage){57, 5, 0, 0, 0});
    assert_int_equal(r.flags[9], QG_EV_USAGE | QG_EV_TERMINAL); /* response.completed */
    assert_int_equal(count_flag(&r, QG_EV_USAGE), 1);            /* earlier "usage": null is nothing */
    assert_int_equal(count_flag(&r, QG_EV_USAGE_ONLY), 0);
    assert_int_equal(r.flags[4], QG_EV_DELTA);
    assert_int_equal(r.flags[5], QG_EV_DELTA);
    assert_int_equal(r.st.delta_events, 2);
    assert_true(r.st.terminal);
    assert_false(r.st.error);
    assert_int_equal(r.parsed, 1); /* response.completed only */
}

static void test_stream_anthropic(void **state)
{
    stream_run r = run_stream("anthropic-stream.sse", QG_DIALECT_ANTHROPIC);
    assert_int_equal(r.n, 9);
    /* The cumulative trap: 310 output, not 311; input not doubled. */
    assert_usage(&r.st.usage, (want_usage){13852, 310, 12000, 1800, 0});
    int want[] = {QG_EV_USAGE, 0, 0, QG_EV_DELTA, QG_EV_DELTA, QG_EV_DELTA, 0, QG_EV_USAGE, QG_EV_TERMINAL};
    for (int i = 0; i < 9; i++) assert_int_equal(r.flags[i], want[i]);
    assert_int_equal(r.st.delta_events, 3);
    assert_true(r.st.terminal);
    assert_false(r.st.error);
    assert_int_equal(r.parsed, 2); /* message_start and message_delta */
}

static void test_stream_anthropic_overloaded(void **state)
{
    stream_run r = run_stream("anthropic-stream-overloaded.sse", QG_DIALECT_ANTHROPIC);
    assert_int_equal(r.n, 4);
    assert_usage(&r.st.usage, (want_usage){2300, 1, 0, 0, 0}); /* from message_start only */
    assert_int_equal(r.flags[3], QG_EV_ERROR);
    assert_true(r.st.error);
    assert_false(r.st.terminal);
    assert_int_equal(r.st.delta_events, 1); /* output to be settled by estimate */
    assert_int_equal(r.parsed, 1);
}

static void test_stream_openrouter(void **state)
{
    stream_run r = run_stream("openrouter-stream.sse", QG_DIALECT_OPENAI);
    assert_int_equal(r.n, 7);
    assert_int_equal(r.flags[0], 0); /* the comment blocks */
    assert_int_equal(r.flags[1], 0);
    assert_usage(&r.st.usage, (want_usage){19, 3, 0, 0, 0});
    assert_true(r.st.usage.has_cost);
    assert_true(r.st.usage.cost == 0.00000557);
    assert_int_equal(r.flags[5], QG_EV_USAGE | QG_EV_USAGE_ONLY);
    assert_int_equal(count_flag(&r, QG_EV_USAGE_ONLY), 1);
    assert_int_equal(r.st.delta_events, 2); /* "Hi", " there" */
    assert_int_equal(r.flags[6], QG_EV_TERMINAL);
    assert_true(r.st.terminal);
    assert_int_equal(r.parsed, 1);
}

/* ---- stream edge cases ---- */

static int ev(qg_usage_stream *st, const char *name, const char *data)
{
    return qg_usage_stream_event(st, qg_slice_of(name), qg_slice_of(data));
}

static void test_stream_anthropic_cumulative(void **state)
{
    qg_usage_stream st;
    qg_usage_stream_init(&st, QG_DIALECT_ANTHROPIC);
    assert_int_equal(ev(&st, "message_start",
                        "{\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":100,"
                        "\"cache_read_input_tokens\":50,\"cache_creation_input_tokens\":0,\"output_tokens\":1}}}"),
                     QG_EV_USAGE);
    /* Older API: message_delta has only output_tokens; input stays from message_start. */
    assert_int_equal(ev(&st, "message_delta", "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":40}}"),
                     QG_EV_USAGE);
    assert_usage(&st.usage, (want_usage){150, 40, 50, 0, 0});
    /* Several message_deltas: each replaces, none adds. */
    assert_int_equal(ev(&st, "message_delta",
                        "{\"type\":\"message_delta\",\"usage\":{\"input_tokens\":100,\"cache_read_input_tokens\":50,"
                        "\"output_tokens\":90}}"),
                     QG_EV_USAGE);
    assert_usage(&st.usage, (want_usage){150, 90, 50, 0, 0});
    assert_int_equal(ev(&st, "message_delta", "{\"type\":\"message_delta\",\"usage\":null}"), 0);
    assert_int_equal(ev(&st, "", "{\"type\":\"message_stop\"}"), QG_EV_TERMINAL); /* name from data */
    assert_int_equal(ev(&st, "ping", "{\"type\": \"ping\"}"), 0);
    assert_int_equal(ev(&st, "", ""), 0);
    assert_usage(&st.usage, (want_usage){150, 90, 50, 0, 0});
    assert_true(st.terminal);
}

static void test_stream_openai_edges(void **state)
{
    qg_usage_stream st;
    qg_usage_stream_init(&st, QG_DIALECT_OPENAI);
    /* Spacing variants and an escaped "usage" inside content. */
    assert_int_equal(ev(&st, "", "{\"choices\":[{\"delta\":{\"content\" : \"say \\\"usage\\\":{1}\"}}], \"usage\" : null}"),
                     QG_EV_DELTA);
    assert_false(st.usage.found);
    assert_int_equal(ev(&st, "", "{\"choices\":[{\"delta\":{\"content\":\"\"}}]}"), 0);
    assert_int_equal(ev(&st, "", "{\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm\"}}]}"), QG_EV_DELTA);
    assert_int_equal(ev(&st, "", "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{\\\"a\"}}]}}]}"),
                     QG_EV_DELTA);
    assert_int_equal(ev(&st, "", "{\"choices\":[{\"text\":\"legacy\",\"index\":0}]}"), QG_EV_DELTA);
    /* Usage in a chunk that still has choices (continuous usage): USAGE, not USAGE_ONLY. */
    assert_int_equal(ev(&st, "", "{\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}"),
                     QG_EV_USAGE | QG_EV_DELTA);
    assert_usage(&st.usage, (want_usage){3, 1, 0, 0, 0});
    /* Groq without include_usage: x_groq.usage on the last chunk. */
    assert_int_equal(ev(&st, "", "{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],"
                                 "\"x_groq\":{\"id\":\"req\",\"usage\":{\"prompt_tokens\":612,\"completion_tokens\":154}}}"),
                     QG_EV_USAGE);
    assert_usage(&st.usage, (want_usage){612, 154, 0, 0, 0});
    /* OpenRouter mid-stream error chunk. */
    assert_int_equal(ev(&st, "", "{\"id\":\"gen\",\"error\":{\"code\":429,\"message\":\"limit\"},"
                                 "\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}"),
                     QG_EV_ERROR);
    assert_true(st.error);
    assert_int_equal(ev(&st, "", " [DONE] "), QG_EV_TERMINAL);
    assert_int_equal(ev(&st, "", "[DONE]x"), 0);
    assert_int_equal(ev(&st, "", "{broken json \"usage\":{"), 0);
    assert_int_equal(st.delta_events, 5);

    /* Responses: error event, failed with usage, data-only events named by their type. */
    qg_usage_stream_init(&st, QG_DIALECT_OPENAI);
    assert_int_equal(ev(&st, "", "{\"type\":\"response.output_text.delta\",\"delta\":\"x\"}"), QG_EV_DELTA);
    assert_int_equal(ev(&st, "error", "{\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\"}"),
                     QG_EV_ERROR);
    assert_int_equal(ev(&st, "response.failed",
                        "{\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"x\"},"
                        "\"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":4},"
                        "\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":1}}}}"),
                     QG_EV_USAGE | QG_EV_TERMINAL);
    assert_usage(&st.usage, (want_usage){9, 2, 4, 0, 1});
    assert_int_equal(ev(&st, "response.incomplete", "{\"type\":\"response.incomplete\",\"response\":{\"usage\":null}}"),
                     QG_EV_TERMINAL);
    assert_int_equal(ev(&st, "response.created", "{\"response\":{\"usage\":{\"input_tokens\":1}}}"), 0);
    assert_usage(&st.usage, (want_usage){9, 2, 4, 0, 1});
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_chat),
        cmocka_unit_test(test_openai_responses),
        cmocka_unit_test(test_anthropic_messages),
        cmocka_unit_test(test_openrouter_chat),
        cmocka_unit_test(test_deepseek_chat),
        cmocka_unit_test(test_http_bodies),
        cmocka_unit_test(test_other_shapes),
        cmocka_unit_test(test_stream_openai_chat),
        cmocka_unit_test(test_stream_openai_responses),
        cmocka_unit_test(test_stream_anthropic),
        cmocka_unit_test(test_stream_anthropic_overloaded),
        cmocka_unit_test(test_stream_openrouter),
        cmocka_unit_test(test_stream_anthropic_cumulative),
        cmocka_unit_test(test_stream_openai_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
