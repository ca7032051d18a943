/*
 * ratelimit.c — header capture: the rate-limit and quota headers of one response head read
 * into a qg_rl_snapshot.  See ratelimit.h.
 *
 * Why it looks like this: it runs on every upstream response, and nearly every header it
 * sees (date, content-type, request ids, ...) is not one of its own.  So a name is first
 * rejected by its length and first byte, then matched piecewise — family prefix, field
 * ("limit" / "remaining" / "reset"), kind suffix — by case-insensitive compares of whole
 * 8- or 4-byte words against constants.  No table is walked, nothing is allocated, and a
 * value is parsed only once its name is known, with the reset format the name implies
 * (OpenAI's "156ms" / "1.156s" by a quick path).  About 1,800 instructions for the
 * 13-header openai-ratelimit-headers.http head (callgrind, -O2).
 *
 * Precedence, all independent of header order except the first rule:
 *   - a slot belongs to the first header family that reads a value into it; headers of
 *     other families naming the same slot in the same response are ignored (a value that
 *     does not parse claims nothing);
 *   - within a family a repeated header replaces the earlier value;
 *   - retry-after-ms wins over retry-after, Codex reset-at over reset-after-seconds.
 */
#include "ratelimit.h"

#include "timefmt.h"

#define MIN_NAME_LEN 11 /* "retry-after", the shortest name read here */
#define MS_PER_MINUTE INT64_C(60000)
#define MAX_WINDOW_MINUTES (INT64_C(1) << 40) /* far beyond any window, far below overflow */
#define PERIOD_5H (INT64_C(5) * 3600 * 1000)
#define PERIOD_7D (INT64_C(7) * 86400 * 1000)
#define MAX_COUNT_DIGITS 18 /* 10^18 - 1 fits an int64 */
#define FIXED_INT_CAP 1000000000 /* integer parts of fractions saturate here: any value above 1 is "all used" */

typedef enum { F_LIMIT, F_REMAINING, F_RESET } rl_field;

/* Header families: the unit of "first one read wins". */
typedef enum {
    FAM_NONE,
    FAM_OPENAI,     /* x-ratelimit-{limit,remaining,reset}-{requests,tokens}: OpenAI, Groq */
    FAM_PLAIN,      /* x-ratelimit-{limit,remaining,reset}: OpenRouter, Together requests */
    FAM_TOKENLIMIT, /* x-tokenlimit-{limit,remaining,reset}: Together tokens */
    FAM_FIREWORKS,  /* x-ratelimit-limit-tokens-{prompt,generated} */
    FAM_ANTHROPIC,  /* anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-* */
    FAM_UNIFIED,    /* anthropic-ratelimit-unified-{5h,7d}-* */
    FAM_CODEX,      /* x-codex-{primary,secondary}-* */
    FAM_MISTRAL,    /* [x-]ratelimitbysize-*, with or without -minute / -month */
} rl_family;

typedef struct {
    qg_rl_snapshot *out;
    int64_t now_ms;
    unsigned char owner[QG_RL_N]; /* the rl_family that claimed each slot */
    bool retry_ms;                /* retry-after-ms was read: retry-after no longer overrides it */
    bool codex_reset_at[2];       /* reset-at was read (primary, secondary): reset-after-seconds yields */
    int64_t codex_period[2];      /* window-minutes in ms, applied at the end: alone it is no data */
} capture;

static const qg_rl_entry blank_entry = {false, -1, -1, 0, 0};

/* ---- name matching ---- */

static inline char lower(char c) { return (unsigned char)(c - 'A') < 26 ? (char)(c + ('a' - 'A')) : c; }
static inline bool is_digit(char c) { return (unsigned char)(c - '0') < 10; }

#define AI inline __attribute__((always_inline))
#define ONES UINT64_C(0x0101010101010101)

/* 0x20 in every byte of the ASCII word w that is a lower-case letter, 0 elsewhere (bytewise,
 * without carries: every byte is < 0x80). */
static AI uint64_t letter_mask(uint64_t w)
{
    uint64_t ge_a = (w + ONES * (0x80 - 'a')) & ONES * 0x80;
    uint64_t gt_z = (w + ONES * (0x80 - 'z' - 1)) & ONES * 0x80;
    return (ge_a & ~gt_z) >> 2; /* 0x80 -> 0x20 */
}

/* Whether the 8 (or 4) bytes at p equal those of the lower-case literal lit, ignoring ASCII
 * case, in one compare: OR-ing 0x20 into the bytes where lit has a letter folds exactly
 * 'A'..'Z' onto 'a'..'z' there; other bytes compare as they are.  For a literal, its word
 * and mask fold into constants once this is inlined. */
static AI bool ieq8(const char *p, const char *lit)
{
    uint64_t a, b;
    memcpy(&a, p, 8);
    memcpy(&b, lit, 8);
    return (a | letter_mask(b)) == b;
}

static AI bool ieq4(const char *p, const char *lit)
{
    uint32_t a, b;
    memcpy(&a, p, 4);
    memcpy(&b, lit, 4);
    return (a | (uint32_t)letter_mask(b)) == b;
}

/* Whether the len (<= 24) bytes at p are lit, ignoring case: whole words, the last one
 * overlapping the one before when len is not a multiple of its size. */
static AI bool ieq(const char *p, const char *lit, size_t len)
{
    if (len >= 8) {
        if (!ieq8(p, lit)) return false;
        if (len > 16 && !ieq8(p + 8, lit + 8)) return false;
        return len == 8 || ieq8(p + len - 8, lit + len - 8);
    }
    if (len >= 4) return ieq4(p, lit) && ieq4(p + len - 4, lit + len - 4);
    for (size_t i = 0; i < len; i++)
        if (lower(p[i]) != lit[i]) return false;
    return true;
}

/* Consumes the lower-case literal lit (len bytes) from the front of *s, ignoring ASCII case. */
static AI bool eat(qg_slice *s, const char *lit, size_t len)
{
    if (s->n < len || !ieq(s->p, lit, len)) return false;
    s->p += len;
    s->n -= len;
    return true;
}

/* The whole of s is the lower-case literal lit, ignoring ASCII case. */
static AI bool same(qg_slice s, const char *lit, size_t len)
{
    return s.n == len && eat(&s, lit, len);
}

/* sizeof(lit) - 1, refusing at compile time literals longer than eat() compares */
#define LIT_LEN(lit) (sizeof(lit) - 1 + 0 * sizeof(struct { _Static_assert(sizeof(lit) <= 25, "literal too long"); char c; }))
#define EAT(s, lit) eat((s), (lit), LIT_LEN(lit))
#define IS(s, lit) same((s), (lit), LIT_LEN(lit))

/* Consumes "limit", "remaining" or "reset"; -1 when none of them comes next. */
static int eat_field(qg_slice *s)
{
    if (s->n < 5) return -1;
    switch (lower(s->p[0])) {
    case 'l': return EAT(s, "limit") ? F_LIMIT : -1;
    case 'r':
        if (lower(s->p[2]) == 'm') return EAT(s, "remaining") ? F_REMAINING : -1;
        return EAT(s, "reset") ? F_RESET : -1;
    }
    return -1;
}

/* ---- values ---- */

static inline bool is_blank(char c) { return c == ' ' || c == '\t'; }

/* Values from qg_http_parse_response are trimmed already, so the usual cost is two compares;
 * other callers' values may not be. */
static inline qg_slice trim(qg_slice v)
{
    if (v.n && (is_blank(v.p[0]) || is_blank(v.p[v.n - 1]))) v = qg_slice_trim(v);
    return v;
}

/* A count: optional '-', 1 to 18 digits, optionally '.' and digits.  The fraction is dropped
 * ("187.2" -> 187) because some providers send fractional remaining budgets. */
static bool parse_count(qg_slice v, int64_t *out)
{
    v = trim(v);
    size_t i = v.n && v.p[0] == '-';
    size_t start = i, end = v.n - i > MAX_COUNT_DIGITS ? i + MAX_COUNT_DIGITS : v.n;
    int64_t x = 0;
    for (unsigned d; i < end && (d = (unsigned char)v.p[i] - '0') <= 9; i++) x = x * 10 + d;
    if (i == start || (i < v.n && is_digit(v.p[i]))) return false; /* none, or too many */
    if (i < v.n && v.p[i] == '.') {
        size_t frac = ++i;
        while (i < v.n && is_digit(v.p[i])) i++;
        if (i == frac) return false;
    }
    if (i != v.n) return false;
    *out = start ? -x : x;
    return true;
}

/* A non-negative decimal times 10^digits (digits <= 6), rounded half up: "0.42" with 6 digits
 * is 420000.  Integer parts saturate at FIXED_INT_CAP, so huge values stay huge, not wrong. */
static bool parse_fixed(qg_slice v, int digits, int64_t *out)
{
    v = trim(v);
    size_t i = 0;
    int64_t x = 0;
    for (; i < v.n && is_digit(v.p[i]); i++)
        if (x < FIXED_INT_CAP) x = x * 10 + (v.p[i] - '0');
    if (i == 0) return false;
    bool round_up = false;
    int taken = 0;
    if (i < v.n && v.p[i] == '.') {
        size_t frac = ++i;
        for (; i < v.n && is_digit(v.p[i]); i++) {
            if (taken < digits) {
                x = x * 10 + (v.p[i] - '0');
                taken++;
            } else if (i - frac == (size_t)digits) {
                round_up = v.p[i] >= '5';
            }
        }
        if (i == frac) return false;
    }
    if (i != v.n) return false;
    for (; taken < digits; taken++) x *= 10;
    *out = x + round_up;
    return true;
}

/* The two Go-duration shapes OpenAI and Groq send on every response, "156ms" and "1.156s",
 * read without the general grammar (qg_parse_reset_as costs several hundred instructions
 * each).  Anything else — other units, "0", blanks, over 9 integer or fraction digits — is
 * left to qg_parse_reset_as, and whatever this accepts it reads exactly as that does
 * (fractions of a ms truncated); fuzz_ratelimit checks the two agree. */
static bool quick_duration_ms(qg_slice v, int64_t *ms)
{
    size_t i = 0;
    int64_t x = 0;
    for (; i < v.n && is_digit(v.p[i]); i++) {
        if (i == 9) return false;
        x = x * 10 + (v.p[i] - '0');
    }
    if (i == 0) return false;
    if (v.n - i == 2 && v.p[i] == 'm' && v.p[i + 1] == 's') {
        *ms = x;
        return true;
    }
    int64_t frac = 0;
    if (i < v.n && v.p[i] == '.') {
        size_t f = ++i;
        for (; i < v.n && is_digit(v.p[i]); i++) {
            if (i - f == 9) return false;
            if (i - f < 3) frac = frac * 10 + (v.p[i] - '0');
        }
        if (i == f) return false;
        for (size_t k = i - f; k < 3; k++) frac *= 10;
    }
    if (v.n - i != 1 || v.p[i] != 's') return false;
    *ms = x * 1000 + frac;
    return true;
}

/* A reset value as an absolute instant; only instants after 1970 count (0 means unknown). */
static bool parse_reset(const capture *c, qg_slice v, qg_reset_format fmt, int64_t *out)
{
    int64_t t, d;
    bool quick = fmt == QG_RFMT_GO_DURATION && quick_duration_ms(v, &d) && !__builtin_add_overflow(c->now_ms, d, &t);
    /* OpenAI-style resets are Go durations, but a bare number there means seconds */
    if (!quick && qg_parse_reset_as(fmt, v, c->now_ms, &t) < 0 &&
        (fmt != QG_RFMT_GO_DURATION || qg_parse_reset_as(QG_RFMT_SECONDS, v, c->now_ms, &t) < 0))
        return false;
    if (t <= 0) return false;
    *out = t;
    return true;
}

/* Remaining millionths of a percent window with `used` millionths used. */
static int64_t percent_left(int64_t used) { return used >= QG_PERCENT_FULL ? 0 : QG_PERCENT_FULL - used; }

/* ---- slots ---- */

/* The entry of slot s for family f, claimed (and marked present) if still free; NULL when
 * another family claimed it first.  Call only with a value that parsed. */
static qg_rl_entry *claim(capture *c, qg_rl_slot s, rl_family f)
{
    qg_rl_entry *e = &c->out->e[s];
    if (c->owner[s] == f) return e;
    if (c->owner[s] != FAM_NONE) return NULL;
    c->owner[s] = (unsigned char)f;
    e->present = true;
    if (s >= QG_RL_WINDOW_SHORT) e->limit = QG_PERCENT_FULL; /* a percent window's limit is implied */
    return e;
}

static qg_rl_entry *put_reset(capture *c, qg_rl_slot s, rl_family f, int64_t t)
{
    qg_rl_entry *e = claim(c, s, f);
    if (e) e->reset_ms = t;
    return e;
}

static qg_rl_entry *put_percent_used(capture *c, qg_rl_slot s, rl_family f, int64_t used)
{
    qg_rl_entry *e = claim(c, s, f);
    if (e) e->remaining = percent_left(used);
    return e;
}

/* One limit / remaining / reset header of a counting family; resets are read as fmt. */
static void put_field(capture *c, qg_rl_slot s, rl_family f, int field, qg_slice v, qg_reset_format fmt)
{
    int64_t x;
    if (field == F_RESET) {
        if (parse_reset(c, v, fmt, &x)) put_reset(c, s, f, x);
        return;
    }
    if (!parse_count(v, &x) || (field == F_LIMIT && x < 0)) return; /* a negative limit means nothing */
    qg_rl_entry *e = claim(c, s, f);
    if (!e) return;
    if (field == F_LIMIT) e->limit = x;
    else e->remaining = x < 0 ? 0 : x; /* providers do report overdrafts */
}

/* ---- families ---- */

/* After "x-ratelimit-": OpenAI/Groq per-kind names, OpenRouter/Together plain names (reset
 * as relative seconds or epoch ms, told apart by size) and Fireworks' token limits. */
static void x_ratelimit(capture *c, qg_slice rest, qg_slice v)
{
    int f = eat_field(&rest);
    if (f < 0) return;
    if (rest.n == 0) put_field(c, QG_RL_REQUESTS, FAM_PLAIN, f, v, QG_RFMT_AUTO);
    else if (IS(rest, "-requests")) put_field(c, QG_RL_REQUESTS, FAM_OPENAI, f, v, QG_RFMT_GO_DURATION);
    else if (IS(rest, "-tokens")) put_field(c, QG_RL_TOKENS, FAM_OPENAI, f, v, QG_RFMT_GO_DURATION);
    else if (IS(rest, "-tokens-prompt")) put_field(c, QG_RL_INPUT_TOKENS, FAM_FIREWORKS, f, v, QG_RFMT_AUTO);
    else if (IS(rest, "-tokens-generated")) put_field(c, QG_RL_OUTPUT_TOKENS, FAM_FIREWORKS, f, v, QG_RFMT_AUTO);
}

/* After "x-tokenlimit-" (Together's token window). */
static void x_tokenlimit(capture *c, qg_slice rest, qg_slice v)
{
    int f = eat_field(&rest);
    if (f >= 0 && rest.n == 0) put_field(c, QG_RL_TOKENS, FAM_TOKENLIMIT, f, v, QG_RFMT_AUTO);
}

/* After "ratelimitbysize-" (with or without "x-"): Mistral.  The unsuffixed names and
 * -minute are one window (only the former carries a reset), -month the long one. */
static void mistral(capture *c, qg_slice rest, qg_slice v)
{
    int f = eat_field(&rest);
    if (f < 0) return;
    if (rest.n == 0 || IS(rest, "-minute")) put_field(c, QG_RL_TOKENS, FAM_MISTRAL, f, v, QG_RFMT_SECONDS);
    else if (IS(rest, "-month")) put_field(c, QG_RL_TOKENS_LONG, FAM_MISTRAL, f, v, QG_RFMT_SECONDS);
}

/* After "x-codex-".  Only primary and secondary have slots; other limit families
 * (x-codex-<name>-primary-*) and the credits headers are not read. */
static void codex(capture *c, qg_slice rest, qg_slice v)
{
    int w;
    if (EAT(&rest, "primary-")) w = 0;
    else if (EAT(&rest, "secondary-")) w = 1;
    else return;
    qg_rl_slot s = w ? QG_RL_WINDOW_LONG : QG_RL_WINDOW_SHORT;
    int64_t x;
    if (IS(rest, "used-percent")) {
        if (parse_fixed(v, 4, &x)) put_percent_used(c, s, FAM_CODEX, x); /* percent * 10^4 = millionths */
    } else if (IS(rest, "window-minutes")) {
        if (parse_count(v, &x) && x >= 0 && x <= MAX_WINDOW_MINUTES) c->codex_period[w] = x * MS_PER_MINUTE;
    } else if (IS(rest, "reset-at")) {
        if (parse_reset(c, v, QG_RFMT_EPOCH_S, &x) && put_reset(c, s, FAM_CODEX, x)) c->codex_reset_at[w] = true;
    } else if (IS(rest, "reset-after-seconds")) {
        if (!c->codex_reset_at[w] && parse_reset(c, v, QG_RFMT_SECONDS, &x)) put_reset(c, s, FAM_CODEX, x);
    }
}

static void x_header(capture *c, qg_slice rest, qg_slice v) /* after "x-"; rest.n >= 9 */
{
    switch (lower(rest.p[0])) {
    case 'r':
        if (!EAT(&rest, "ratelimit")) return;
        if (EAT(&rest, "-")) x_ratelimit(c, rest, v);
        else if (EAT(&rest, "bysize-")) mistral(c, rest, v);
        return;
    case 't':
        if (EAT(&rest, "tokenlimit-")) x_tokenlimit(c, rest, v);
        return;
    case 'c':
        if (EAT(&rest, "codex-")) codex(c, rest, v);
        return;
    }
}

static void unified_status(capture *c, qg_slice v)
{
    if (qg_slice_ieq(trim(v), "rejected")) c->out->rejected = true;
}

/* After "anthropic-ratelimit-unified-".  Resets are epoch seconds in practice; the automatic
 * shape also takes RFC 3339.  The overall reset, representative-claim, fallback-percentage and
 * overage-* (overage is not a window) are not read. */
static void unified(capture *c, qg_slice rest, qg_slice v)
{
    qg_rl_slot s;
    int64_t period;
    if (EAT(&rest, "5h-")) {
        s = QG_RL_WINDOW_SHORT;
        period = PERIOD_5H;
    } else if (EAT(&rest, "7d-")) {
        s = QG_RL_WINDOW_LONG;
        period = PERIOD_7D;
    } else {
        if (IS(rest, "status")) unified_status(c, v);
        return;
    }
    qg_rl_entry *e = NULL;
    int64_t x;
    if (IS(rest, "utilization")) {
        if (parse_fixed(v, 6, &x)) e = put_percent_used(c, s, FAM_UNIFIED, x); /* a fraction: 0.42 */
    } else if (IS(rest, "reset")) {
        if (parse_reset(c, v, QG_RFMT_AUTO, &x)) e = put_reset(c, s, FAM_UNIFIED, x);
    } else if (IS(rest, "status")) {
        unified_status(c, v);
    }
    if (e) e->period_ms = period;
}

static void anthropic(capture *c, qg_slice rest, qg_slice v) /* after "anthropic-ratelimit-"; rest.n >= 1 */
{
    qg_rl_slot s;
    switch (lower(rest.p[0])) {
    case 'u':
        if (EAT(&rest, "unified-")) unified(c, rest, v);
        return;
    case 'r':
        if (!EAT(&rest, "requests-")) return;
        s = QG_RL_REQUESTS;
        break;
    case 't':
        if (!EAT(&rest, "tokens-")) return;
        s = QG_RL_TOKENS;
        break;
    case 'i':
        if (!EAT(&rest, "input-tokens-")) return;
        s = QG_RL_INPUT_TOKENS;
        break;
    case 'o':
        if (!EAT(&rest, "output-tokens-")) return;
        s = QG_RL_OUTPUT_TOKENS;
        break;
    default: return;
    }
    int f = eat_field(&rest);
    if (f >= 0 && rest.n == 0) put_field(c, s, FAM_ANTHROPIC, f, v, QG_RFMT_RFC3339);
}

static void retry_after(capture *c, qg_slice v, bool in_ms)
{
    int64_t d;
    if (in_ms) {
        if (qg_parse_retry_after_ms(v, &d) < 0) return;
        c->retry_ms = true;
    } else if (c->retry_ms || qg_parse_retry_after(v, c->now_ms, &d) < 0) {
        return;
    }
    c->out->retry_after_ms = d;
}

static void r_header(capture *c, qg_slice name, qg_slice v) /* name.n >= MIN_NAME_LEN */
{
    if (lower(name.p[1]) == 'e') {
        if (!EAT(&name, "retry-after")) return;
        if (name.n == 0) retry_after(c, v, false);
        else if (IS(name, "-ms")) retry_after(c, v, true);
    } else if (EAT(&name, "ratelimitbysize-")) {
        mistral(c, name, v);
    }
}

static void one_header(capture *c, qg_slice name, qg_slice v)
{
    if (name.n < MIN_NAME_LEN) return;
    switch (name.p[0] | 0x20) { /* exact for letters: only 'X' and 'x' give 'x' */
    case 'x':
        if (name.p[1] == '-') x_header(c, (qg_slice){name.p + 2, name.n - 2}, v);
        return;
    case 'a':
        if (EAT(&name, "anthropic-ratelimit-") && name.n) anthropic(c, name, v);
        return;
    case 'r':
        r_header(c, name, v);
        return;
    }
}

/* Applies what only the whole head tells: Codex periods and Codex's "no data" windows. */
static void finish_codex(capture *c)
{
    for (int w = 0; w < 2; w++) {
        qg_rl_slot s = w ? QG_RL_WINDOW_LONG : QG_RL_WINDOW_SHORT;
        if (c->owner[s] != FAM_CODEX) continue;
        qg_rl_entry *e = &c->out->e[s];
        e->period_ms = c->codex_period[w];
        /* used 0 of a 0-minute window with no reset is an unused limit slot, not "0 % used" */
        if (e->period_ms == 0 && e->reset_ms == 0 && (e->remaining == QG_PERCENT_FULL || e->remaining < 0)) {
            *e = blank_entry;
            c->owner[s] = FAM_NONE;
        }
    }
}

void qg_rl_capture(const qg_header *h, size_t n, int64_t now_ms, qg_rl_snapshot *out)
{
    for (int i = 0; i < QG_RL_N; i++) out->e[i] = blank_entry;
    out->retry_after_ms = -1;
    out->rejected = false;
    out->n_found = 0;
    capture c = {.out = out, .now_ms = now_ms};
    for (size_t i = 0; i < n; i++) one_header(&c, h[i].name, h[i].value);
    finish_codex(&c);
    for (int i = 0; i < QG_RL_N; i++) out->n_found += out->e[i].present;
    out->n_found += out->retry_after_ms >= 0;
}

const char *qg_rl_slot_name(qg_rl_slot s)
{
    static const char *const names[QG_RL_N] = {
        [QG_RL_REQUESTS] = "requests",         [QG_RL_TOKENS] = "tokens",
        [QG_RL_INPUT_TOKENS] = "input_tokens", [QG_RL_OUTPUT_TOKENS] = "output_tokens",
        [QG_RL_TOKENS_LONG] = "tokens_long",   [QG_RL_WINDOW_SHORT] = "window_short",
        [QG_RL_WINDOW_LONG] = "window_long",
    };
    return (unsigned)s < QG_RL_N ? names[s] : "unknown";
}
