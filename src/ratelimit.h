/*
 * ratelimit.h — header capture: the rate-limit and quota headers a provider sends on every
 * response (any status), read into one fixed-size snapshot.
 *
 * Families read (names case-insensitive; see the .http files in tests/fixtures/providers/):
 *   OpenAI, Groq             x-ratelimit-{limit,remaining,reset}-{requests,tokens}
 *                            (reset as Go durations "6m0s", "1m30.5s", "20ms", or bare seconds)
 *   OpenRouter, Together     x-ratelimit-{limit,remaining,reset} -> requests (reset: OpenRouter
 *                            epoch ms, Together relative seconds, told apart by magnitude);
 *                            Together tokens x-tokenlimit-{limit,remaining,reset}
 *   Anthropic API            anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
 *                            {limit,remaining,reset} (reset RFC 3339)
 *   Anthropic unified        anthropic-ratelimit-unified-{5h,7d}-{utilization,reset,status},
 *                            anthropic-ratelimit-unified-status (utilisation is a fraction 0..1+,
 *                            reset epoch seconds or RFC 3339); overage-status is not a window
 *   Codex                    x-codex-{primary,secondary}-{used-percent,window-minutes,reset-at,
 *                            reset-after-seconds} (used 0 of a 0-minute window, no reset: absent)
 *   Mistral                  [x-]ratelimitbysize-{limit,remaining,reset} and
 *                            x-ratelimitbysize-{limit,remaining,reset}-minute -> tokens,
 *                            ...-month -> tokens_long (reset seconds)
 *   Fireworks                x-ratelimit-{limit,remaining,reset}-tokens-{prompt,generated}
 *                            (Fireworks sends the limits only)
 *   any                      retry-after (seconds or HTTP-date), retry-after-ms (preferred)
 *
 * When two families name the same slot in one response, the first one read (in header order)
 * wins and the other is ignored; Codex reset-at wins over reset-after-seconds.
 *
 * Pure: no clock (now_ms is a parameter), no allocation, one pass over the headers.  It runs
 * on every upstream response head, so it is cheap: names are dispatched on their first
 * bytes and values parsed only for names it knows.  Unknown or unparseable values are
 * skipped, never an error; a snapshot with n_found == 0 says nothing and must not replace
 * an earlier one.
 */
#ifndef QG_RATELIMIT_H
#define QG_RATELIMIT_H

#include "common.h"
#include "http1.h"

typedef enum {
    QG_RL_REQUESTS,       /* requests in the provider's request window (RPM, or Groq's per day) */
    QG_RL_TOKENS,         /* tokens (OpenAI/Groq/Together tokens, Anthropic tokens, Mistral per minute) */
    QG_RL_INPUT_TOKENS,   /* Anthropic input-tokens, Fireworks prompt tokens */
    QG_RL_OUTPUT_TOKENS,  /* Anthropic output-tokens, Fireworks generated tokens */
    QG_RL_TOKENS_LONG,    /* a second, longer token window (Mistral per month) */
    QG_RL_WINDOW_SHORT,   /* a utilisation window in percent: Anthropic unified 5h, Codex primary */
    QG_RL_WINDOW_LONG,    /* a utilisation window in percent: Anthropic unified 7d, Codex secondary */
    QG_RL_N
} qg_rl_slot;

/* Percent windows are expressed as limit QG_PERCENT_FULL and remaining QG_PERCENT_FULL - used,
 * i.e. in millionths of the window (42 % used -> remaining 580000). */
#define QG_PERCENT_FULL 1000000

typedef struct {
    bool present;         /* at least one of limit / remaining / reset was read */
    int64_t limit;        /* -1 unknown */
    int64_t remaining;    /* -1 unknown; never negative */
    int64_t reset_ms;     /* absolute epoch ms; 0 unknown */
    int64_t period_ms;    /* the window's length when the headers say it (unified 5h, Codex minutes); 0 unknown */
} qg_rl_entry;

typedef struct {
    qg_rl_entry e[QG_RL_N];
    int64_t retry_after_ms;  /* delay from now (retry-after-ms preferred over retry-after); -1 none */
    bool rejected;           /* Anthropic unified status (overall, 5h or 7d) says "rejected" */
    int n_found;             /* entries present, plus 1 if retry_after_ms >= 0 */
} qg_rl_snapshot;

void qg_rl_capture(const qg_header *h, size_t n, int64_t now_ms, qg_rl_snapshot *out);
/* "requests", "tokens", "input_tokens", "output_tokens", "tokens_long", "window_short", "window_long" */
const char *qg_rl_slot_name(qg_rl_slot s);

#endif
