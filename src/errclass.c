/*
 * errclass.c — error classification: status + captured headers + bounded error body ->
 * one class, an end time and a short code.  See errclass.h.
 *
 * Two halves, neither of which allocates:
 *
 *   - Reading the body into `facts`.  The body is scanned with jscan.h: the top-level
 *     object (or, for Gemini's OpenAI-compatible paths, the first object of a top-level
 *     array), then its `error` object, then the few nested members providers put their
 *     codes in (Anthropic error.details, OpenRouter error.metadata, Gemini error.details[]).
 *     jscan validates, so a truncated body (the caller passes at most QG_ERROR_BODY_MAX
 *     bytes) fails as a whole; then a bounded search of the raw bytes recovers the codes as
 *     quoted tokens and the three message tokens, which is all the rules below need.
 *
 *   - Deciding.  Rules on codes and types come first, then the message tokens providers give
 *     no code for, then what the headers say (Anthropic unified "rejected", a percent window
 *     at 0 on a 429), then the status alone.  Every end time passes one filter: a stated time
 *     must lie in [now, now + MAX_AHEAD_MS] or it is ignored (skewed clocks, garbage); an
 *     inferred one (a calendar boundary we compute) is always in the future.
 *
 * Calendar boundaries (next UTC midnight, next Monday, first of next month, next midnight in
 * America/Los_Angeles) are computed here from the proleptic Gregorian calendar and the US
 * DST rule in force since 2007 (applied to every year), without a time-zone database: a
 * quota reset must not depend on the host's tzdata.  They are computed only for instants in
 * years 1970..9999; outside, an inferred end is left unknown.
 */
#include "errclass.h"

#include "jscan.h"
#include "timefmt.h"

#include <stdio.h>

#define SECOND_MS 1000LL
#define HOUR_MS (3600 * SECOND_MS)
#define DAY_MS (24 * HOUR_MS)
#define MAX_AHEAD_MS (400 * DAY_MS)       /* a stated end further away is not believed */
#define MAX_CIVIL_MS 253402300799999LL    /* 9999-12-31T23:59:59.999Z: calendar math bound */
#define TOKEN_MAX 48                      /* == sizeof ((qg_error_verdict *)0)->code */
#define MAX_ITEMS 32                      /* array elements looked at (Gemini details) */
#define HINT_MAX 24                       /* longest "try again in" duration we read */

_Static_assert(TOKEN_MAX == sizeof(((qg_error_verdict *)0)->code), "code size");

/* What the body says, independent of the status. */
typedef struct {
    char type[TOKEN_MAX];          /* error.type */
    char code[TOKEN_MAX];          /* error.code when a string */
    char detail_code[TOKEN_MAX];   /* Anthropic error.details.error_code */
    char status[TOKEN_MAX];        /* Gemini error.status */
    char limit_source[TOKEN_MAX];  /* OpenRouter error.metadata.limit_source */
    char reason[TOKEN_MAX];        /* OpenRouter metadata.reason, Gemini ErrorInfo.reason */
    char limit_reset[TOKEN_MAX];   /* OpenRouter metadata.limit_reset: daily/weekly/monthly */
    int64_t num_code;              /* error.code when a number (OpenRouter, Gemini); -1 none */
    int64_t resets_at;             /* Codex window end, epoch ms; 0 none */
    int64_t retry_delay_at;        /* Gemini RetryInfo.retryDelay, epoch ms; 0 none */
    int64_t rl_reset_at;           /* OpenRouter metadata.headers X-RateLimit-Reset; 0 none */
    int64_t hint_at;               /* message "try again in 813ms", epoch ms; 0 none */
    bool per_day;                  /* a Gemini quotaId names a daily quota */
    bool credit_low;               /* message "credit balance is too low" */
    bool free_day;                 /* message "free-models-per-day" */
} facts;

/* ---- small helpers ---- */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }
static char upper(char c) { return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c; }
static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* Offset of the first c in s[from..to), or to. */
static size_t next_byte(const char *s, size_t from, size_t to, char c)
{
    const char *p = memchr(s + from, c, to - from);
    return p ? (size_t)(p - s) : to;
}

/* Offset of the first case-insensitive occurrence of needle in hay[0..n), or n.  Candidates
 * are found with memchr for both cases of the first letter, each list advanced on its own,
 * so the search stays linear in n. */
static size_t ci_find(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    if (m == 0 || m > n) return n;
    size_t stop = n - m + 1; /* candidates start before stop */
    char lo = lower(needle[0]), up = upper(lo);
    size_t nl = next_byte(hay, 0, stop, lo), nu = up == lo ? stop : next_byte(hay, 0, stop, up);
    for (;;) {
        size_t i = QG_MIN(nl, nu), k = 1;
        if (i >= stop) return n;
        while (k < m && lower(hay[i + k]) == lower(needle[k])) k++;
        if (k == m) return i;
        if (i == nl) nl = next_byte(hay, i + 1, stop, lo);
        else nu = next_byte(hay, i + 1, stop, up);
    }
}

static bool ci_has(const char *hay, size_t n, const char *needle) { return ci_find(hay, n, needle) < n; }

static bool tok_is(const char *tok, const char *lit) { return strcmp(tok, lit) == 0; }

static bool tok_in(const char *tok, const char *const *list)
{
    for (; *list; list++)
        if (tok[0] && tok_is(tok, *list)) return true;
    return false;
}

/* t is a believable stated end: not in the past, not absurdly far away. */
static bool within(int64_t now, int64_t t)
{
    return t != 0 && t >= now && (uint64_t)t - (uint64_t)now <= (uint64_t)MAX_AHEAD_MS;
}

/* now + delay, or 0 when the delay is negative, too long or would overflow. */
static int64_t after(int64_t now, int64_t delay)
{
    if (delay < 0 || delay > MAX_AHEAD_MS || now > INT64_MAX - delay) return 0;
    return now + delay;
}

/* ---- calendar ---- */

static int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

static void civil_from_days(int64_t z, int64_t *y, int *m)
{
    int d;
    qg_civil_from_days(z, y, m, &d);
}

static int weekday(int64_t days) { return (int)(days + 4 - floor_div(days + 4, 7) * 7); } /* 0 = Sunday */

/* Day number of the nth Sunday of a month. */
static int64_t nth_sunday(int64_t y, int m, int nth)
{
    int64_t first = qg_days_from_civil(y, m, 1);
    return first + (7 - weekday(first)) % 7 + 7 * (nth - 1);
}

static bool civil_ok(int64_t now) { return now >= 0 && now <= MAX_CIVIL_MS - 40 * DAY_MS; }

static int64_t next_utc_midnight(int64_t now) { return (floor_div(now, DAY_MS) + 1) * DAY_MS; }

static int64_t next_utc_monday(int64_t now) /* OpenRouter weeks run Monday to Sunday */
{
    int64_t d = floor_div(now, DAY_MS);
    int delta = (8 - weekday(d)) % 7;
    return (d + (delta ? delta : 7)) * DAY_MS;
}

static int64_t next_utc_month(int64_t now)
{
    int64_t y;
    int m;
    civil_from_days(floor_div(now, DAY_MS), &y, &m);
    return qg_days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) * DAY_MS;
}

/* US rule: PDT (UTC-7) from the second Sunday of March 02:00 PST (10:00 UTC) to the first
 * Sunday of November 02:00 PDT (09:00 UTC), else PST (UTC-8). */
static bool pacific_dst_at(int64_t t)
{
    int64_t y;
    int m;
    civil_from_days(floor_div(t, DAY_MS), &y, &m);
    int64_t start = nth_sunday(y, 3, 2) * DAY_MS + 10 * HOUR_MS;
    int64_t end = nth_sunday(y, 11, 1) * DAY_MS + 9 * HOUR_MS;
    return t >= start && t < end;
}

/* Gemini's daily quotas reset at midnight Pacific.  The switches happen at 02:00 local, so
 * midnight itself is never skipped or doubled: on the March switch day 00:00 is still PST,
 * on the November one still PDT. */
static int64_t next_pacific_midnight(int64_t now)
{
    int64_t off = pacific_dst_at(now) ? 7 * HOUR_MS : 8 * HOUR_MS;
    int64_t day = floor_div(now - off, DAY_MS) + 1; /* the local date that starts next */
    int64_t y;
    int m;
    civil_from_days(day, &y, &m);
    bool dst = day > nth_sunday(y, 3, 2) && day <= nth_sunday(y, 11, 1);
    return day * DAY_MS + (dst ? 7 : 8) * HOUR_MS;
}

/* ---- reading JSON ---- */

typedef struct {
    const char *text; /* the whole body the span points into */
    qg_json_span span;
} jv;

/* Fills out[i] with member names[i] of object v; false (all absent) if v is not a valid
 * object or names a wanted member twice. */
static bool members(jv v, const char *const *names, size_t n, jv *out)
{
    qg_json_span spans[8];
    const char *why;
    bool ok = n <= QG_ARRAY_LEN(spans) && v.span.type == QG_JSON_OBJECT &&
              qg_jscan_object(v.text + v.span.off, v.span.len, names, n, spans, NULL, &why) == 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = (jv){v.text, {QG_JSON_NONE, 0, 0}};
        if (ok && spans[i].type != QG_JSON_NONE)
            out[i].span = (qg_json_span){spans[i].type, v.span.off + spans[i].off, spans[i].len};
    }
    return ok;
}

static qg_slice raw(jv v) { return (qg_slice){v.text + v.span.off, v.span.len}; }

/* The bytes between a string's quotes (empty for anything else). */
static qg_slice string_raw(jv v)
{
    if (v.span.type != QG_JSON_STRING || v.span.len < 2) return (qg_slice){v.text, 0};
    return (qg_slice){v.text + v.span.off + 1, v.span.len - 2};
}

/* A short string member, decoded; empty when absent, not a string or too long. */
static void token(jv v, char *out)
{
    if (v.span.type != QG_JSON_STRING || qg_json_string_value(v.text, v.span, out, TOKEN_MAX) < 0) out[0] = 0;
}

/* A number, or the text of a string ("1795392000000"), read in the given reset format. */
static int64_t reset_value(jv v, qg_reset_format f, int64_t now)
{
    qg_slice s = v.span.type == QG_JSON_NUMBER ? raw(v) : string_raw(v);
    int64_t t;
    if (s.n == 0 || (v.span.type != QG_JSON_NUMBER && v.span.type != QG_JSON_STRING)) return 0;
    return qg_parse_reset_as(f, s, now, &t) == 0 ? t : 0;
}

/* Just past the JSON value at i, or end if it does not close before end.  Only brackets and
 * strings are tracked, not validity: the text is inside a span jscan validated, or (the
 * first element of a top-level array) is handed to jscan next. */
static size_t skip_value(const char *s, size_t i, size_t end)
{
    size_t depth = 0;
    bool in_str = false;
    for (; i < end; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') {
                i++; /* the escaped byte */
            } else if (c == '"') {
                in_str = false;
                if (depth == 0) return i + 1;
            }
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return i; /* a scalar ended by its container */
            if (--depth == 0) return i + 1;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            return i;
        }
    }
    return end;
}

static size_t skip_ws_sep(const char *s, size_t i, size_t end)
{
    while (i < end && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == ',')) i++;
    return i;
}

static qg_json_type type_at(char c)
{
    return c == '{' ? QG_JSON_OBJECT : c == '[' ? QG_JSON_ARRAY : c == '"' ? QG_JSON_STRING : QG_JSON_NUMBER;
}

/* Calls fn on each element (at most MAX_ITEMS) of a validated array. */
static void each_item(jv arr, void (*fn)(jv item, int64_t now, facts *f), int64_t now, facts *f)
{
    if (arr.span.type != QG_JSON_ARRAY || arr.span.len < 2) return;
    size_t i = arr.span.off + 1, end = arr.span.off + arr.span.len - 1;
    for (int k = 0; k < MAX_ITEMS; k++) {
        i = skip_ws_sep(arr.text, i, end);
        if (i >= end) return;
        size_t stop = skip_value(arr.text, i, end);
        if (stop <= i) return;
        fn((jv){arr.text, {type_at(arr.text[i]), i, stop - i}}, now, f);
        i = stop;
    }
}

/* ---- the body's facts ---- */

/* "try again in 813ms" / "7.88s" / "1m30.5s": a number with a unit attached.  A bare number
 * ("in 5 minutes") is not read: its unit is a word we do not guess. */
static int64_t hint_at(qg_slice msg, int64_t now)
{
    static const char lead[] = "try again in ";
    size_t at = ci_find(msg.p, msg.n, lead);
    if (at == msg.n) return 0;
    const char *p = msg.p + at + sizeof lead - 1;
    size_t left = msg.n - at - (sizeof lead - 1), k = 0;
    while (k < left && k < HINT_MAX && (is_digit(p[k]) || is_alpha(p[k]) || p[k] == '.')) k++;
    while (k > 0 && p[k - 1] == '.') k--; /* the sentence's full stop */
    int64_t d;
    if (k == 0 || !is_digit(p[0]) || !is_alpha(p[k - 1]) || qg_parse_duration_ms((qg_slice){p, k}, &d) < 0)
        return 0;
    return after(now, d);
}

static void read_message(qg_slice msg, int64_t now, facts *f)
{
    f->credit_low = ci_has(msg.p, msg.n, "credit balance is too low");
    f->free_day = ci_has(msg.p, msg.n, "free-models-per-day");
    f->hint_at = hint_at(msg, now);
}

static void read_violation(jv v, int64_t now, facts *f)
{
    static const char *const names[] = {"quotaId"};
    jv m[1];
    members(v, names, 1, m);
    qg_slice id = string_raw(m[0]);
    if (ci_has(id.p, id.n, "perday")) f->per_day = true;
}

/* One google.rpc detail: RetryInfo, QuotaFailure or ErrorInfo (told apart by their members). */
static void read_gemini_detail(jv v, int64_t now, facts *f)
{
    static const char *const names[] = {"retryDelay", "violations", "reason"};
    jv m[3];
    if (!members(v, names, 3, m)) return;
    if (!f->retry_delay_at) f->retry_delay_at = reset_value(m[0], QG_RFMT_PB_DURATION, now);
    each_item(m[1], read_violation, now, f);
    if (!f->reason[0]) token(m[2], f->reason);
}

static void read_metadata(jv v, int64_t now, facts *f)
{
    static const char *const names[] = {"limit_source", "reason", "limit_reset", "headers"};
    static const char *const header_names[] = {"X-RateLimit-Reset", "x-ratelimit-reset"};
    jv m[4], h[2];
    if (!members(v, names, 4, m)) return;
    token(m[0], f->limit_source);
    token(m[1], f->reason);
    token(m[2], f->limit_reset);
    members(m[3], header_names, 2, h); /* the 429's rate-limit headers, repeated as strings */
    f->rl_reset_at = reset_value(h[0], QG_RFMT_EPOCH_MS, now);
    if (!f->rl_reset_at) f->rl_reset_at = reset_value(h[1], QG_RFMT_EPOCH_MS, now);
}

static void read_details(jv v, int64_t now, facts *f)
{
    static const char *const names[] = {"error_code"};
    jv m[1];
    if (v.span.type == QG_JSON_ARRAY) {
        each_item(v, read_gemini_detail, now, f);
    } else if (members(v, names, 1, m)) {
        token(m[0], f->detail_code);
    }
}

enum { E_TYPE, E_CODE, E_MESSAGE, E_STATUS, E_DETAILS, E_METADATA, E_RESETS_AT, E_RESETS_IN, E_COUNT };

static bool read_error(jv err, int64_t now, facts *f)
{
    static const char *const names[E_COUNT] = {
        [E_TYPE] = "type", [E_CODE] = "code", [E_MESSAGE] = "message", [E_STATUS] = "status",
        [E_DETAILS] = "details", [E_METADATA] = "metadata", [E_RESETS_AT] = "resets_at",
        [E_RESETS_IN] = "resets_in_seconds",
    };
    jv m[E_COUNT];
    if (!members(err, names, E_COUNT, m)) return false;
    token(m[E_TYPE], f->type);
    token(m[E_CODE], f->code);
    if (qg_json_int_value(err.text, m[E_CODE].span, &f->num_code) < 0) f->num_code = -1;
    token(m[E_STATUS], f->status);
    read_message(string_raw(m[E_MESSAGE]), now, f);
    read_details(m[E_DETAILS], now, f);
    read_metadata(m[E_METADATA], now, f);
    f->resets_at = reset_value(m[E_RESETS_AT], QG_RFMT_EPOCH_S, now); /* integer or JSON real */
    if (!f->resets_at) f->resets_at = reset_value(m[E_RESETS_IN], QG_RFMT_SECONDS, now);
    return true;
}

/* The body's object: itself, or the first element of a top-level array (Gemini). */
static bool root_object(const char *body, size_t n, jv *out)
{
    size_t i = skip_ws_sep(body, 0, n);
    if (i < n && body[i] == '[') {
        i = skip_ws_sep(body, i + 1, n);
        if (i >= n || body[i] != '{') return false;
        *out = (jv){body, {QG_JSON_OBJECT, i, skip_value(body, i, n) - i}}; /* jscan validates it */
        return true;
    }
    *out = (jv){body, {QG_JSON_OBJECT, 0, n}};
    return i < n && body[i] == '{';
}

/* error is an object everywhere we know; a flat body ({"code":...,"message":...}) is read
 * as the error itself. */
static bool read_json(const char *body, size_t n, int64_t now, facts *f)
{
    static const char *const names[] = {"error"};
    jv root, top[1];
    if (!root_object(body, n, &root) || !members(root, names, 1, top)) return false;
    return read_error(top[0].span.type == QG_JSON_OBJECT ? top[0] : root, now, f);
}

/* The raw fallback's codes and the facts member each fills. */
#define RAW_CODE(tok, member) {tok, sizeof tok - 1, offsetof(facts, member)}
static const struct {
    const char *tok;
    size_t len;
    size_t field; /* offsetof the facts member */
} raw_codes[] = {
    RAW_CODE("usage_limit_reached", type),
    RAW_CODE("overloaded_error", type),
    RAW_CODE("enforced_spend_limit_reached", detail_code),
    RAW_CODE("insufficient_quota", code),
    RAW_CODE("billing_hard_limit_reached", code),
    RAW_CODE("billing_not_active", code),
    RAW_CODE("openrouter_key_limit", limit_source),
    RAW_CODE("openrouter_in_flight_budget", limit_source),
    RAW_CODE("openrouter_credits", limit_source),
};

static void raw_code(const char *tok, size_t len, facts *f)
{
    for (size_t i = 0; i < QG_ARRAY_LEN(raw_codes); i++) {
        char *field = (char *)f + raw_codes[i].field;
        if (raw_codes[i].len == len && !field[0] && memcmp(raw_codes[i].tok, tok, len) == 0)
            qg_strlcpy(field, raw_codes[i].tok, TOKEN_MAX);
    }
}

/* A body that is not valid JSON (mostly: cut at QG_ERROR_BODY_MAX): the codes the rules
 * branch on, found as whole quoted strings (a member name or value; a quote escaped with a
 * backslash, as inside a message, does not open one), and the message tokens anywhere.  One
 * pass: each quote looks ahead at most TOKEN_MAX bytes. */
static void read_raw(const char *body, size_t n, int64_t now, facts *f)
{
    const char *end = body + n;
    for (const char *q = memchr(body, '"', n); q; q = memchr(q + 1, '"', (size_t)(end - q - 1))) {
        if (q > body && q[-1] == '\\') continue;
        size_t left = (size_t)(end - q - 1), k = 0;
        while (k < left && k < TOKEN_MAX && q[1 + k] != '"') k++;
        if (k < left && k < TOKEN_MAX) raw_code(q + 1, k, f);
    }
    read_message((qg_slice){body, n}, now, f);
}

static void facts_init(facts *f)
{
    memset(f, 0, sizeof *f);
    f->num_code = -1;
}

static void read_body(const char *body, size_t n, int64_t now, facts *f)
{
    facts_init(f);
    if (!body || n == 0 || read_json(body, n, now, f)) return;
    facts_init(f); /* drop what a partly valid body left */
    read_raw(body, n, now, f);
}

/* ---- deciding ---- */

/* Takes t as the stated end if it is believable (see within). */
static bool take(qg_error_verdict *out, int64_t now, int64_t t)
{
    if (!within(now, t)) return false;
    out->until_ms = t;
    out->until_stated = true;
    return true;
}

/* The first believable stated end among t[0..n). */
static bool take_first(qg_error_verdict *out, int64_t now, const int64_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (take(out, now, t[i])) return true;
    return false;
}

/* An end we computed (a calendar boundary), always in the future; 0 leaves it unknown. */
static void infer(qg_error_verdict *out, int64_t now, int64_t t)
{
    if (t == 0 || t <= now) return;
    out->until_ms = t;
    out->until_stated = false;
}

static int64_t retry_after_at(const qg_rl_snapshot *h, int64_t now) { return h ? after(now, h->retry_after_ms) : 0; }

/* The latest reset among buckets in slots [lo, hi] that the headers show at 0 remaining:
 * all of them must refill before the account can be used. */
static int64_t exhausted_reset(const qg_rl_snapshot *h, int64_t now, int lo, int hi)
{
    int64_t t = 0;
    for (int s = lo; h && s <= hi; s++) {
        const qg_rl_entry *e = &h->e[s];
        if (e->present && e->remaining == 0 && within(now, e->reset_ms) && e->reset_ms > t) t = e->reset_ms;
    }
    return t;
}

/* A delay stated for this answer: retry-after, then the message hint, then Gemini's RetryInfo. */
static bool stated_delay(const qg_rl_snapshot *h, const facts *f, int64_t now, qg_error_verdict *out)
{
    const int64_t t[] = {retry_after_at(h, now), f->hint_at, f->retry_delay_at};
    return take_first(out, now, t, QG_ARRAY_LEN(t));
}

static int64_t spend_period_end(const facts *f, int64_t now)
{
    if (!civil_ok(now)) return 0;
    if (tok_is(f->limit_reset, "daily")) return next_utc_midnight(now);
    if (tok_is(f->limit_reset, "weekly")) return next_utc_monday(now);
    return next_utc_month(now); /* "monthly", or not said: the usual period */
}

static const char *const credit_codes[] = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active",
                                           NULL};
/* OpenAI's caps an owner set: lifted when the month's budget period ends (or the cap moves). */
static const char *const spend_codes[] = {"organization_spend_limit_exceeded", "project_spend_limit_exceeded",
                                          "organization_usage_limit_exceeded", NULL};

/* Codex: the plan's window is used up until resets_at. */
static bool rule_usage_limit(const qg_rl_snapshot *h, const facts *f, int64_t now, qg_error_verdict *out)
{
    if (!tok_is(f->type, "usage_limit_reached")) return false;
    out->cls = QG_EC_WINDOW_EXHAUSTED;
    const int64_t t[] = {f->resets_at, exhausted_reset(h, now, QG_RL_WINDOW_SHORT, QG_RL_WINDOW_LONG),
                         retry_after_at(h, now)};
    take_first(out, now, t, QG_ARRAY_LEN(t));
    return true;
}

static bool rule_spend(const qg_rl_snapshot *h, const facts *f, int64_t now, qg_error_verdict *out)
{
    bool key_limit = tok_is(f->limit_source, "openrouter_key_limit");
    if (!key_limit && !tok_is(f->detail_code, "enforced_spend_limit_reached") && !tok_in(f->code, spend_codes))
        return false;
    out->cls = QG_EC_SPEND_CAPPED;
    /* Anthropic: access resumes 00:00 UTC on the 1st; an OpenRouter key at its limit_reset. */
    infer(out, now, key_limit ? spend_period_end(f, now) : civil_ok(now) ? next_utc_month(now) : 0);
    return true;
}

static bool rule_in_flight(const qg_rl_snapshot *h, const facts *f, int64_t now, qg_error_verdict *out)
{
    if (!tok_is(f->limit_source, "openrouter_in_flight_budget") && !tok_is(f->reason, "in_flight_budget_exhausted"))
        return false;
    out->cls = QG_EC_TRANSIENT;
    stated_delay(h, f, now, out);
    return true;
}

static bool rule_credit_codes(const qg_rl_snapshot *h, const facts *f, int64_t now, qg_error_verdict *out)
{
    if (!tok_in(f->code, credit_codes) && !tok_is(f->type, "insufficient_quota") &&
        !tok_is(f->limit_source, "openrouter_credits"))
        return false;
    out->cls = QG_EC_CREDITS_EXHAUSTED;
    return true;
}

static bool rule_overloaded(const qg_rl_snapshot *h, const facts *f, int64_t now, qg_error_verdict *out)
{
    if (!tok_is(f->type, "overloaded_error") && !tok_is(f->reason, "MODEL_CAPACITY_EXHAUSTED")) return false;
    out->cls = QG_EC_OVERLOADED;
    stated_delay(h, f, now, out);
    return true;
}

/* Gemini RESOURCE_EXHAUSTED: a per-day quota is used up until midnight Pacific (retryDelay
 * is then only the soonest a retry might be accepted, and it will not be); anything else is
 * a short rate limit with retryDelay as its end. */
static bool rule_gemini(const qg_rl_snapshot *h, const facts *f, int64_t now, qg_error_verdict *out)
{
    if (!tok_is(f->status, "RESOURCE_EXHAUSTED") && !f->per_day) return false;
    if (!f->per_day) {
        out->cls = QG_EC_RATE_LIMITED;
        stated_delay(h, f, now, out);
        return true;
    }
    out->cls = QG_EC_WINDOW_EXHAUSTED;
    int64_t midnight = civil_ok(now) ? next_pacific_midnight(now) : 0;
    if (f->retry_delay_at <= midnight || !take(out, now, f->retry_delay_at)) infer(out, now, midnight);
    return true;
}

static bool rule_credit_message(const qg_rl_snapshot *h, const facts *f, int64_t now, qg_error_verdict *out)
{
    if (!f->credit_low) return false; /* Anthropic: a 400 invalid_request_error, no code */
    out->cls = QG_EC_CREDITS_EXHAUSTED;
    return true;
}

/* OpenRouter free models, daily allowance: X-RateLimit-Reset (body copy or header) is the
 * next UTC midnight, which is also what we infer without it. */
static bool rule_free_day(const qg_rl_snapshot *h, const facts *f, int64_t now, qg_error_verdict *out)
{
    if (!f->free_day) return false;
    out->cls = QG_EC_WINDOW_EXHAUSTED;
    const int64_t t[] = {f->rl_reset_at, exhausted_reset(h, now, 0, QG_RL_N - 1)};
    if (!take_first(out, now, t, QG_ARRAY_LEN(t))) infer(out, now, civil_ok(now) ? next_utc_midnight(now) : 0);
    return true;
}

/* A 429 whose headers show a subscription window drained: Anthropic unified "rejected", or
 * a percent window (unified 5h/7d, Codex primary/secondary) at 0 remaining. */
static bool rule_window_headers(int status, const qg_rl_snapshot *h, int64_t now, qg_error_verdict *out)
{
    int64_t reset = exhausted_reset(h, now, QG_RL_WINDOW_SHORT, QG_RL_WINDOW_LONG);
    if (status != 429 || !h || (!h->rejected && !reset)) return false;
    out->cls = QG_EC_WINDOW_EXHAUSTED;
    const int64_t t[] = {reset, retry_after_at(h, now)};
    take_first(out, now, t, QG_ARRAY_LEN(t));
    return true;
}

static void rule_status(int status, const qg_rl_snapshot *h, const facts *f, int64_t now, qg_error_verdict *out)
{
    if (status == 429) {
        out->cls = QG_EC_RATE_LIMITED;
        if (!stated_delay(h, f, now, out)) take(out, now, exhausted_reset(h, now, 0, QG_RL_N - 1));
    } else if (status == 402) {
        out->cls = QG_EC_CREDITS_EXHAUSTED; /* OpenRouter without limit_source, DeepSeek */
    } else if (status == 503 || status == 529) {
        out->cls = QG_EC_OVERLOADED;
        stated_delay(h, f, now, out);
    } else if (status >= 500) {
        out->cls = QG_EC_SERVER_ERROR;
        stated_delay(h, f, now, out);
    } else {
        out->cls = QG_EC_CLIENT_ERROR;
    }
}

typedef bool (*body_rule)(const qg_rl_snapshot *h, const facts *f, int64_t now, qg_error_verdict *out);

/* Codes and types first, then the message tokens, in this order. */
static const body_rule body_rules[] = {
    rule_usage_limit, rule_spend,  rule_in_flight,      rule_credit_codes,
    rule_overloaded,  rule_gemini, rule_credit_message, rule_free_day,
};

/* ---- the code token ---- */

/* Copies the printable run of tok (no space, quote or backslash) into out->code. */
static bool set_code(qg_error_verdict *out, const char *tok)
{
    size_t k = 0;
    for (; k + 1 < TOKEN_MAX && tok[k] > ' ' && tok[k] < 0x7f && tok[k] != '"' && tok[k] != '\\'; k++)
        out->code[k] = tok[k];
    out->code[k] = 0;
    return k > 0;
}

/* The most specific token the provider gave; never message text, which may echo secrets. */
static void pick_code(const facts *f, qg_error_verdict *out)
{
    if (out->cls == QG_EC_WINDOW_EXHAUSTED && f->free_day && !f->type[0] && !f->code[0] &&
        set_code(out, "free-models-per-day")) /* OpenRouter's own name for that limit */
        return;
    const char *const cands[] = {f->detail_code, f->limit_source, f->code, f->type, f->status};
    for (size_t i = 0; i < QG_ARRAY_LEN(cands); i++)
        if (set_code(out, cands[i])) return;
    if (f->num_code > 0 && f->num_code < 100000) snprintf(out->code, sizeof out->code, "%d", (int)f->num_code);
}

/* ---- entry points ---- */

void qg_classify_error(int status, const qg_rl_snapshot *hdr, const char *body, size_t n, int64_t now_ms,
                       qg_error_verdict *out)
{
    memset(out, 0, sizeof *out);
    out->cls = QG_EC_NONE;
    if (status < 400) return;
    facts f;
    read_body(body, QG_MIN(n, (size_t)QG_ERROR_BODY_MAX), now_ms, &f);
    if (status == 401 || status == 403) {
        out->cls = QG_EC_AUTH_FAILED;
    } else {
        bool done = false;
        for (size_t i = 0; !done && i < QG_ARRAY_LEN(body_rules); i++) done = body_rules[i](hdr, &f, now_ms, out);
        if (!done && !rule_window_headers(status, hdr, now_ms, out)) rule_status(status, hdr, &f, now_ms, out);
    }
    pick_code(&f, out);
}

const char *qg_errclass_name(qg_errclass c)
{
    static const char *const names[] = {
        [QG_EC_NONE] = "none",
        [QG_EC_RATE_LIMITED] = "rate_limited",
        [QG_EC_WINDOW_EXHAUSTED] = "window_exhausted",
        [QG_EC_CREDITS_EXHAUSTED] = "credits_exhausted",
        [QG_EC_SPEND_CAPPED] = "spend_capped",
        [QG_EC_OVERLOADED] = "overloaded",
        [QG_EC_TRANSIENT] = "transient",
        [QG_EC_AUTH_FAILED] = "auth_failed",
        [QG_EC_SERVER_ERROR] = "server_error",
        [QG_EC_CLIENT_ERROR] = "client_error",
    };
    return (unsigned)c < QG_ARRAY_LEN(names) ? names[c] : "unknown";
}
