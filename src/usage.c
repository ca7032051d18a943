/*
 * usage.c — token usage from provider responses, normalised per usage.h.
 *
 * Why it looks like this: usage settles what a request really cost (SPEC §4.10), so the
 * numbers must be exact, and the stream path runs once per forwarded SSE event, so it must be
 * cheap.  Hence two halves:
 *
 *   - Field mapping (cJSON).  One function per usage shape: OpenAI Chat Completions (also
 *     embeddings, OpenRouter's cost and cache writes, DeepSeek's cache-hit fallback, Groq's
 *     x_groq.usage), OpenAI Responses (told apart from chat by `input_tokens` instead of
 *     `prompt_tokens`), and Anthropic (whose input_tokens excludes cache reads and writes, so
 *     the normalised input is the sum of all three).  Counts are read by name only, never "every
 *     number in usage" (Groq puts float timings there), and a count that is not a non-negative
 *     number below 2^53 is treated as absent.
 *
 *   - Stream classification (bytes first).  An event is JSON-parsed only if its data has a
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

#include <cjson/cJSON.h>
#include <math.h>

#define MAX_EXACT_COUNT 9007199254740992.0 /* 2^53: above it a double is no longer an exact count */

/* ---- reading counts ---- */

static const cJSON *member(const cJSON *obj, const char *name)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
}

static bool get_count(const cJSON *obj, const char *name, int64_t *out)
{
    const cJSON *v = member(obj, name);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > MAX_EXACT_COUNT) return false;
    *out = (int64_t)v->valuedouble;
    return true;
}

static bool get_nested_count(const cJSON *obj, const char *parent, const char *name, int64_t *out)
{
    return get_count(member(obj, parent), name, out);
}

static void get_cost(const cJSON *usage, qg_usage *u)
{
    const cJSON *v = member(usage, "cost");
    if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) u->cost = v->valuedouble, u->has_cost = true;
}

/* ---- the shapes ---- */

/* Chat Completions / completions / embeddings.  Returns false without prompt or completion. */
static bool chat_usage(const cJSON *us, qg_usage *u)
{
    bool has_prompt = get_count(us, "prompt_tokens", &u->input_tokens);
    bool has_completion = get_count(us, "completion_tokens", &u->output_tokens);
    int64_t total;
    if (has_prompt && !has_completion && get_count(us, "total_tokens", &total) && total >= u->input_tokens)
        u->output_tokens = total - u->input_tokens; /* embeddings: total == prompt, output 0 */
    if (!get_nested_count(us, "prompt_tokens_details", "cached_tokens", &u->cached_tokens))
        get_count(us, "prompt_cache_hit_tokens", &u->cached_tokens); /* DeepSeek */
    get_nested_count(us, "prompt_tokens_details", "cache_write_tokens", &u->cache_write_tokens); /* OpenRouter */
    get_nested_count(us, "completion_tokens_details", "reasoning_tokens", &u->reasoning_tokens);
    get_cost(us, u);
    return has_prompt || has_completion;
}

/* Responses API: input_tokens already includes the cached part. */
static bool responses_usage(const cJSON *us, qg_usage *u)
{
    bool has_in = get_count(us, "input_tokens", &u->input_tokens);
    bool has_out = get_count(us, "output_tokens", &u->output_tokens);
    get_nested_count(us, "input_tokens_details", "cached_tokens", &u->cached_tokens);
    get_nested_count(us, "output_tokens_details", "reasoning_tokens", &u->reasoning_tokens);
    get_cost(us, u);
    return has_in || has_out;
}

static bool openai_usage(const cJSON *us, qg_usage *u)
{
    if (member(us, "prompt_tokens") || member(us, "completion_tokens")) return chat_usage(us, u);
    return responses_usage(us, u);
}

/* cache_creation: {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}, when the flat
 * cache_creation_input_tokens is missing. */
static bool anthropic_cache_creation(const cJSON *us, int64_t *out)
{
    const cJSON *cc = member(us, "cache_creation");
    int64_t m5 = 0, h1 = 0;
    bool any = get_count(cc, "ephemeral_5m_input_tokens", &m5);
    any |= get_count(cc, "ephemeral_1h_input_tokens", &h1);
    if (any) *out = m5 + h1;
    return any;
}

/* Overrides the fields present in an Anthropic usage object (cumulative: last value wins). */
static bool anthropic_apply(const cJSON *us, qg_usage *u)
{
    int64_t uncached = u->input_tokens - u->cached_tokens - u->cache_write_tokens;
    bool any = get_count(us, "input_tokens", &uncached);
    any |= get_count(us, "cache_read_input_tokens", &u->cached_tokens);
    if (get_count(us, "cache_creation_input_tokens", &u->cache_write_tokens)) any = true;
    else any |= anthropic_cache_creation(us, &u->cache_write_tokens);
    any |= get_count(us, "output_tokens", &u->output_tokens);
    u->input_tokens = uncached + u->cached_tokens + u->cache_write_tokens;
    return any;
}

/* Fills *u from a usage object on top of its current values; false if it held no counts. */
static bool usage_from_object(qg_dialect d, const cJSON *us, qg_usage *u)
{
    if (!cJSON_IsObject(us)) return false;
    qg_usage r = *u;
    bool ok = d == QG_DIALECT_ANTHROPIC ? anthropic_apply(us, &r) : openai_usage(us, &r);
    if (ok) {
        r.found = true;
        *u = r;
    }
    return ok;
}

int qg_usage_from_json(qg_dialect d, const char *body, size_t n, qg_usage *u)
{
    memset(u, 0, sizeof *u);
    /* Build a tree of the usage object only: a whole chat response parsed by cJSON costs
     * ~30k instructions (a malloc per node); the span scanner validates the body without
     * allocating, and the usage object is a dozen nodes. */
    static const char *const wanted[] = {"usage"};
    qg_json_span us;
    const char *why;
    if (qg_jscan_object(body, n, wanted, 1, &us, NULL, &why) < 0 || us.type != QG_JSON_OBJECT) return -1;
    cJSON *obj = cJSON_ParseWithLength(body + us.off, us.len);
    bool ok = usage_from_object(d, obj, u);
    cJSON_Delete(obj);
    return ok ? 0 : -1;
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

static bool is_empty_array(const cJSON *v) { return cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0; }

/* Parses a chat chunk that mentions a usage or error object. */
static int chat_parse(qg_usage_stream *st, qg_slice data)
{
    cJSON *root = cJSON_ParseWithLength(data.p, data.n);
    if (!root) return 0;
    int flags = 0;
    const cJSON *us = member(root, "usage");
    bool top_level = cJSON_IsObject(us);
    if (!top_level) us = member(member(root, "x_groq"), "usage"); /* Groq without include_usage */
    qg_usage r = {0};
    if (usage_from_object(QG_DIALECT_OPENAI, us, &r)) {
        st->usage = r; /* OpenAI-style stream usage is a total, sent once (or cumulatively) */
        flags |= QG_EV_USAGE;
        const cJSON *choices = member(root, "choices");
        if (top_level && (!choices || is_empty_array(choices))) flags |= QG_EV_USAGE_ONLY;
    }
    if (cJSON_IsObject(member(root, "error"))) flags |= QG_EV_ERROR; /* e.g. OpenRouter mid-stream */
    cJSON_Delete(root);
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
    cJSON *root = cJSON_ParseWithLength(data.p, data.n);
    qg_usage r = {0};
    if (usage_from_object(QG_DIALECT_OPENAI, member(member(root, "response"), "usage"), &r)) {
        st->usage = r;
        flags |= QG_EV_USAGE;
    }
    cJSON_Delete(root);
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
    cJSON *root = cJSON_ParseWithLength(data.p, data.n);
    const cJSON *us = start ? member(member(root, "message"), "usage") : member(root, "usage");
    int flags = usage_from_object(QG_DIALECT_ANTHROPIC, us, &st->usage) ? QG_EV_USAGE : 0;
    cJSON_Delete(root);
    return flags;
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
