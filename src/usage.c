/*
 * usage.c — token usage from provider responses, normalised per usage.h.
 *
 * Why it looks like this: usage settles what a request really cost (SPEC §4.10), so the
 * numbers must be exact, and the stream path runs once per forwarded SSE event, so it must be
 * cheap.  Hence two halves, neither of which allocates:
 *
 *   - Field mapping (the span scanner of jscan.h).  One function per usage shape: OpenAI
 *     Chat Completions (also embeddings, OpenRouter's cost and cache writes, DeepSeek's
 *     cache-hit fallback, Groq's x_groq.usage), OpenAI Responses (told apart from chat by
 *     `input_tokens` instead of `prompt_tokens`), and Anthropic (whose input_tokens excludes
 *     cache reads and writes, so the normalised input is the sum of all three).  Counts are
 *     read by name only, never "every number in usage" (Groq puts float timings there), and a
 *     count that is not a non-negative number below 2^53 is treated as absent.
 *
 *   - Stream classification (bytes first).  An event is JSON-scanned only if its data has a
 *     `"usage"` member whose value is an object (`"usage":null`, present on every OpenAI
 *     chunk, does not count) or, for OpenAI chat chunks, an `"error"` object.  Everything
 *     else — deltas, [DONE], message_stop, error event names — is recognised from the event
 *     name (or the leading `{"type":"..."` of data-only streams) and memmem checks.
 *
 * Anthropic stream counts are cumulative: message_start gives input and a token or so of
 * output, each message_delta repeats the fields it knows with their running totals.  A field
 * present in an event replaces the previous value; nothing is ever added up.  The raw
 * Anthropic components are recovered from the normalised ones (uncached = input - cached -
 * cache_write), so qg_usage_stream needs no extra state.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "usage.h"

#include "jscan.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>

#define MAX_EXACT_COUNT (INT64_C(1) << 53) /* above it a double is no longer an exact count */
#define MAX_NUMBER_LEN 63                 /* longer number spellings are not counts we accept */

/* ---- reading members ----
 *
 * A usage object is read with the span scanner: one pass over the object fills the spans of
 * every member the shape may need, and nested detail objects get a pass of their own.  No
 * tree, no allocation: a cJSON tree of the same object cost ~12k instructions per request. */

typedef struct {
    const char *text; /* the whole document the spans point into */
    qg_json_span span;
} jval;

static bool is_object(jval v) { return v.span.type == QG_JSON_OBJECT; }
static bool is_present(jval v) { return v.span.type != QG_JSON_NONE; }

/* Fills out[i] with member names[i] of object v (type NONE when absent).  An object that
 * is not valid JSON, or names a wanted member twice, yields nothing: which duplicate a
 * provider meant is a guess we do not make with money. */
static void members(jval v, const char *const *names, size_t n, jval *out)
{
    qg_json_span spans[16];
    const char *why;
    assert(n <= QG_ARRAY_LEN(spans));
    bool ok = is_object(v) && qg_jscan_object(v.text + v.span.off, v.span.len, names, n, spans, NULL, &why) == 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = (jval){v.text, {QG_JSON_NONE, 0, 0}};
        if (ok && spans[i].type != QG_JSON_NONE)
            out[i].span = (qg_json_span){spans[i].type, v.span.off + spans[i].off, spans[i].len};
    }
}

static jval member(jval v, const char *name)
{
    jval out;
    members(v, &name, 1, &out);
    return out;
}

/* A JSON number as a double (strtod, like any JSON parser); false if not a number. */
static bool number_value(jval v, double *out)
{
    if (v.span.type != QG_JSON_NUMBER || v.span.len > MAX_NUMBER_LEN) return false;
    char buf[MAX_NUMBER_LEN + 1];
    memcpy(buf, v.text + v.span.off, v.span.len);
    buf[v.span.len] = 0;
    *out = strtod(buf, NULL);
    return true;
}

/* A token count: a non-negative number below 2^53 (an integer spelling is read exactly; a
 * fraction or exponent goes through strtod and is truncated).  Anything else is absent. */
static bool count_value(jval v, int64_t *out)
{
    int64_t i;
    if (qg_json_int_value(v.text, v.span, &i) == 0) {
        if (i < 0 || i > MAX_EXACT_COUNT) return false;
        *out = i;
        return true;
    }
    double d;
    if (!number_value(v, &d) || !(d >= 0) || d > (double)MAX_EXACT_COUNT) return false;
    *out = (int64_t)d;
    return true;
}

static void cost_value(jval v, qg_usage *u)
{
    double d;
    if (number_value(v, &d) && isfinite(d)) u->cost = d, u->has_cost = true;
}

/* ---- the shapes ---- */

/* Members of an OpenAI-dialect usage object, one scan for both shapes. */
enum { O_PROMPT, O_COMPLETION, O_TOTAL, O_PROMPT_DETAILS, O_CACHE_HIT, O_COMPLETION_DETAILS,
       O_INPUT, O_OUTPUT, O_INPUT_DETAILS, O_OUTPUT_DETAILS, O_COST, O_COUNT };
static const char *const openai_names[O_COUNT] = {
    [O_PROMPT] = "prompt_tokens", [O_COMPLETION] = "completion_tokens", [O_TOTAL] = "total_tokens",
    [O_PROMPT_DETAILS] = "prompt_tokens_details", [O_CACHE_HIT] = "prompt_cache_hit_tokens",
    [O_COMPLETION_DETAILS] = "completion_tokens_details", [O_INPUT] = "input_tokens",
    [O_OUTPUT] = "output_tokens", [O_INPUT_DETAILS] = "input_tokens_details",
    [O_OUTPUT_DETAILS] = "output_tokens_details", [O_COST] = "cost",
};

/* Chat Completions / completions / embeddings.  Returns false without prompt or completion. */
static bool chat_usage(const jval *m, qg_usage *u)
{
    bool has_prompt = count_value(m[O_PROMPT], &u->input_tokens);
    bool has_completion = count_value(m[O_COMPLETION], &u->output_tokens);
    int64_t total;
    if (has_prompt && !has_completion && count_value(m[O_TOTAL], &total) && total >= u->input_tokens)
        u->output_tokens = total - u->input_tokens; /* embeddings: total == prompt, output 0 */
    static const char *const prompt_details[] = {"cached_tokens", "cache_write_tokens"};
    jval pd[2];
    members(m[O_PROMPT_DETAILS], prompt_details, 2, pd);
    if (!count_value(pd[0], &u->cached_tokens)) count_value(m[O_CACHE_HIT], &u->cached_tokens); /* DeepSeek */
    count_value(pd[1], &u->cache_write_tokens); /* OpenRouter */
    count_value(member(m[O_COMPLETION_DETAILS], "reasoning_tokens"), &u->reasoning_tokens);
    cost_value(m[O_COST], u);
    return has_prompt || has_completion;
}

/* Responses API: input_tokens already includes the cached part. */
static bool responses_usage(const jval *m, qg_usage *u)
{
    bool has_in = count_value(m[O_INPUT], &u->input_tokens);
    bool has_out = count_value(m[O_OUTPUT], &u->output_tokens);
    count_value(member(m[O_INPUT_DETAILS], "cached_tokens"), &u->cached_tokens);
    count_value(member(m[O_OUTPUT_DETAILS], "reasoning_tokens"), &u->reasoning_tokens);
    cost_value(m[O_COST], u);
    return has_in || has_out;
}

static bool openai_usage(jval us, qg_usage *u)
{
    jval m[O_COUNT];
    members(us, openai_names, O_COUNT, m);
    if (is_present(m[O_PROMPT]) || is_present(m[O_COMPLETION])) return chat_usage(m, u);
    return responses_usage(m, u);
}

/* cache_creation: {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}, when the flat
 * cache_creation_input_tokens is missing. */
static bool anthropic_cache_creation(jval cc, int64_t *out)
{
    static const char *const names[] = {"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"};
    jval m[2];
    members(cc, names, 2, m);
    int64_t m5 = 0, h1 = 0;
    bool any = count_value(m[0], &m5);
    any |= count_value(m[1], &h1);
    if (any) *out = m5 + h1;
    return any;
}

/* Overrides the fields present in an Anthropic usage object (cumulative: last value wins). */
static bool anthropic_apply(jval us, qg_usage *u)
{
    enum { A_INPUT, A_CACHE_READ, A_CACHE_CREATION_TOKENS, A_CACHE_CREATION, A_OUTPUT, A_COUNT };
    static const char *const names[A_COUNT] = {"input_tokens", "cache_read_input_tokens",
                                               "cache_creation_input_tokens", "cache_creation", "output_tokens"};
    jval m[A_COUNT];
    members(us, names, A_COUNT, m);
    int64_t uncached = u->input_tokens - u->cached_tokens - u->cache_write_tokens;
    bool any = count_value(m[A_INPUT], &uncached);
    any |= count_value(m[A_CACHE_READ], &u->cached_tokens);
    if (count_value(m[A_CACHE_CREATION_TOKENS], &u->cache_write_tokens)) any = true;
    else any |= anthropic_cache_creation(m[A_CACHE_CREATION], &u->cache_write_tokens);
    any |= count_value(m[A_OUTPUT], &u->output_tokens);
    u->input_tokens = uncached + u->cached_tokens + u->cache_write_tokens;
    return any;
}

/* Fills *u from a usage object on top of its current values; false if it held no counts. */
static bool usage_from_object(qg_dialect d, jval us, qg_usage *u)
{
    if (!is_object(us)) return false;
    qg_usage r = *u;
    bool ok = d == QG_DIALECT_ANTHROPIC ? anthropic_apply(us, &r) : openai_usage(us, &r);
    if (ok) {
        r.found = true;
        *u = r;
    }
    return ok;
}

/* The whole of text as one value (type OBJECT; members() validates it). */
static jval document(const char *text, size_t n) { return (jval){text, {QG_JSON_OBJECT, 0, n}}; }

int qg_usage_from_json(qg_dialect d, const char *body, size_t n, qg_usage *u)
{
    memset(u, 0, sizeof *u);
    return usage_from_object(d, member(document(body, n), "usage"), u) ? 0 : -1;
}

/* ---- byte checks for the stream path ---- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* Is there a `"key"` followed by ':' and a value starting with `first`?  (first '"' with
 * nonempty: a non-empty string.)  Inside JSON strings quotes are escaped, so `"key"` then ':'
 * in the raw bytes is a member name. */
static bool has_member(qg_slice data, const char *quoted_key, char first, bool nonempty)
{
    size_t kl = strlen(quoted_key);
    const char *p = data.p, *end = data.p + data.n;
    while (p < end && (p = memmem(p, (size_t)(end - p), quoted_key, kl)) != NULL) {
        p += kl;
        const char *q = skip_ws(p, end);
        if (q == end || *q != ':') continue;
        q = skip_ws(q + 1, end);
        if (q == end || *q != first) continue;
        if (!nonempty || (q + 1 < end && q[1] != '"')) return true;
    }
    return false;
}

static bool has_object(qg_slice data, const char *quoted_key) { return has_member(data, quoted_key, '{', false); }

/* A chat chunk that carries generated output: a non-empty text-ish string anywhere. */
static bool has_content(qg_slice data)
{
    static const char *const keys[] = {"\"content\"", "\"text\"", "\"reasoning_content\"",
                                       "\"reasoning\"", "\"arguments\"", "\"refusal\""};
    for (size_t i = 0; i < QG_ARRAY_LEN(keys); i++)
        if (has_member(data, keys[i], '"', true)) return true;
    return false;
}

/* The event name of data-only streams: the value of a leading `{"type":"..."`. */
static qg_slice peek_type(qg_slice data)
{
    const char *p = data.p, *end = data.p + data.n;
    qg_slice none = {data.p, 0};
    p = skip_ws(p, end);
    if (p == end || *p != '{') return none;
    p = skip_ws(p + 1, end);
    if (end - p < 6 || memcmp(p, "\"type\"", 6) != 0) return none;
    p = skip_ws(p + 6, end);
    if (p == end || *p != ':') return none;
    p = skip_ws(p + 1, end);
    if (p == end || *p != '"') return none;
    const char *s = ++p;
    while (p < end && *p != '"' && *p != '\\') p++;
    return p < end && *p == '"' ? (qg_slice){s, (size_t)(p - s)} : none;
}

static bool ends_with(qg_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n >= n && memcmp(s.p + s.n - n, lit, n) == 0;
}

/* ---- stream events ---- */

/* `[]` with nothing but whitespace inside. */
static bool is_empty_array(jval v)
{
    if (v.span.type != QG_JSON_ARRAY) return false;
    for (size_t i = 1; i + 1 < v.span.len; i++)
        if (!strchr(" \t\r\n", v.text[v.span.off + i])) return false;
    return true;
}

/* An event's data, scanned as a JSON object: counted, because the hot-path contract is that
 * only the few events carrying usage or an error object get here. */
static jval event_document(qg_usage_stream *st, qg_slice data)
{
    st->scanned_events++;
    return document(data.p, data.n);
}

/* Scans a chat chunk that mentions a usage or error object. */
static int chat_parse(qg_usage_stream *st, qg_slice data)
{
    enum { C_USAGE, C_GROQ, C_CHOICES, C_ERROR, C_COUNT };
    static const char *const names[C_COUNT] = {"usage", "x_groq", "choices", "error"};
    jval m[C_COUNT];
    members(event_document(st, data), names, C_COUNT, m);
    int flags = 0;
    jval us = m[C_USAGE];
    bool top_level = is_object(us);
    if (!top_level) us = member(m[C_GROQ], "usage"); /* Groq without include_usage */
    qg_usage r = {0};
    if (usage_from_object(QG_DIALECT_OPENAI, us, &r)) {
        st->usage = r; /* OpenAI-style stream usage is a total, sent once (or cumulatively) */
        flags |= QG_EV_USAGE;
        if (top_level && (!is_present(m[C_CHOICES]) || is_empty_array(m[C_CHOICES]))) flags |= QG_EV_USAGE_ONLY;
    }
    if (is_object(m[C_ERROR])) flags |= QG_EV_ERROR; /* e.g. OpenRouter mid-stream */
    return flags;
}

static int chat_event(qg_usage_stream *st, qg_slice data)
{
    if (qg_slice_eq(qg_slice_trim(data), "[DONE]")) return QG_EV_TERMINAL;
    int flags = 0;
    if (has_object(data, "\"usage\"") || has_object(data, "\"error\"")) flags |= chat_parse(st, data);
    if (has_content(data)) flags |= QG_EV_DELTA;
    return flags;
}

/* Responses API events, by name: *.delta carry output; completed/incomplete/failed end the
 * stream with the final usage at response.usage. */
static int responses_event(qg_usage_stream *st, qg_slice name, qg_slice data)
{
    if (ends_with(name, ".delta")) return QG_EV_DELTA;
    if (!qg_slice_eq(name, "response.completed") && !qg_slice_eq(name, "response.incomplete") &&
        !qg_slice_eq(name, "response.failed"))
        return 0;
    int flags = QG_EV_TERMINAL;
    if (!has_object(data, "\"usage\"")) return flags;
    qg_usage r = {0};
    if (usage_from_object(QG_DIALECT_OPENAI, member(member(event_document(st, data), "response"), "usage"), &r)) {
        st->usage = r;
        flags |= QG_EV_USAGE;
    }
    return flags;
}

static int openai_event(qg_usage_stream *st, qg_slice name, qg_slice data)
{
    if (qg_slice_eq(name, "error")) return QG_EV_ERROR;
    if (name.n > 9 && memcmp(name.p, "response.", 9) == 0) return responses_event(st, name, data);
    return chat_event(st, data);
}

static int anthropic_event(qg_usage_stream *st, qg_slice name, qg_slice data)
{
    if (qg_slice_eq(name, "content_block_delta")) return QG_EV_DELTA;
    if (qg_slice_eq(name, "message_stop")) return QG_EV_TERMINAL;
    if (qg_slice_eq(name, "error")) return QG_EV_ERROR;
    bool start = qg_slice_eq(name, "message_start");
    if ((!start && !qg_slice_eq(name, "message_delta")) || !has_object(data, "\"usage\"")) return 0;
    jval root = event_document(st, data);
    jval us = start ? member(member(root, "message"), "usage") : member(root, "usage");
    return usage_from_object(QG_DIALECT_ANTHROPIC, us, &st->usage) ? QG_EV_USAGE : 0;
}

void qg_usage_stream_init(qg_usage_stream *st, qg_dialect d)
{
    memset(st, 0, sizeof *st);
    st->dialect = d;
}

int qg_usage_stream_event(qg_usage_stream *st, qg_slice event, qg_slice data)
{
    if (data.n == 0 && event.n == 0) return 0; /* a comment-only block */
    qg_slice name = event.n ? event : peek_type(data);
    int flags = st->dialect == QG_DIALECT_ANTHROPIC ? anthropic_event(st, name, data) : openai_event(st, name, data);
    if (flags & QG_EV_TERMINAL) st->terminal = true;
    if (flags & QG_EV_ERROR) st->error = true;
    if (flags & QG_EV_DELTA) st->delta_events++;
    return flags;
}
