/*
 * errclass.h — error classification: what an upstream error answer means for the account
 * that gave it (SPEC §4.4), read from the status, the captured headers and the bounded
 * error body (at most QG_ERROR_BODY_MAX bytes; a longer body is classified on its prefix).
 *
 *   rate_limited       429 rate limits, Gemini per-minute RESOURCE_EXHAUSTED: cool the account
 *                      until until_ms (retry-after, a body hint) or by backoff; retry elsewhere
 *   window_exhausted   a subscription or daily window used up (Codex usage_limit_reached,
 *                      Anthropic unified rejected, OpenRouter free-models-per-day, Gemini PerDay):
 *                      depleted until until_ms
 *   credits_exhausted  prepaid credit gone (OpenAI insufficient_quota, Anthropic "credit balance
 *                      is too low", billing_hard_limit_reached, OpenRouter 402 without a key limit)
 *   spend_capped       a spend limit until the period ends (Anthropic enforced_spend_limit_reached,
 *                      OpenRouter 402 openrouter_key_limit, OpenAI *_spend_limit_exceeded)
 *   overloaded         provider-wide (Anthropic 529 overloaded_error, 503, Gemini
 *                      MODEL_CAPACITY_EXHAUSTED): not the account's fault
 *   transient          retry on the same account after until_ms (OpenRouter in-flight budget)
 *   auth_failed        401 / 403, whatever the body says
 *   server_error       other 5xx
 *   client_error       other 4xx: the client's request is at fault; relay it
 *
 * Order: codes and types first, then the only message substrings matched (the ones providers
 * give no code for: "credit balance is too low", "free-models-per-day", "try again in 813ms"),
 * then the headers (Anthropic unified "rejected", or a percent window at 0 remaining, on a
 * 429), then the status alone (503 and 529 are overloaded unless the body says otherwise; a
 * 429 with no recognisable body is rate_limited).  A body that is not valid JSON (typically
 * one cut at QG_ERROR_BODY_MAX) is searched as raw bytes, case-insensitively for the message
 * substrings and for the codes as whole quoted strings; Gemini's nested details are then lost.
 *
 * Where until_ms comes from, first that applies:
 *   rate_limited       retry-after, the message hint, Gemini RetryInfo.retryDelay, the reset of
 *                      a bucket the headers show at 0 remaining (all stated); else 0
 *   window_exhausted   Codex resets_at (epoch s, integer or JSON real), the drained percent
 *                      window's reset, retry-after (stated); OpenRouter's X-RateLimit-Reset
 *                      (stated) or the next UTC midnight (inferred); Gemini PerDay: the next
 *                      midnight America/Los_Angeles (inferred, US DST rule; a retryDelay is only
 *                      a lower bound and wins only if it ends later)
 *   spend_capped       00:00 UTC on the 1st of next month, or for an OpenRouter key whose
 *                      metadata.limit_reset says daily/weekly the next UTC midnight/Monday (inferred)
 *   transient, overloaded, server_error: retry-after, the hint, retryDelay (stated); else 0
 *   credits_exhausted, auth_failed, client_error, none: always 0 (no time ends them)
 *
 * Guarantees (fuzz/fuzz_errclass.c checks them on arbitrary input):
 *   - every byte of *out is written; the same inputs give the same verdict;
 *   - cls is a qg_errclass value; status < 400 gives NONE with until_ms 0 and an empty code;
 *     401 and 403 always give AUTH_FAILED; any other status >= 400 never gives NONE;
 *   - until_ms is 0 (unknown: use the backoff policy) or now_ms <= until_ms <= now_ms + 400
 *     days.  A stated value outside that range (a past resets_at, a retry-after of years) is
 *     ignored and the next source tried; an inferred value is always > now_ms, and is only
 *     computed for now_ms in years 1970..9999; until_stated implies until_ms != 0;
 *   - code is NUL-terminated, at most 47 bytes of printable ASCII without space, '"' or '\\';
 *   - at most min(n, QG_ERROR_BODY_MAX) bytes of body are read, never a NUL terminator; body
 *     may be NULL when n is 0.
 *
 * Pure: no clock, no allocation, no globals.
 */
#ifndef QG_ERRCLASS_H
#define QG_ERRCLASS_H

#include "common.h"
#include "ratelimit.h"

#define QG_ERROR_BODY_MAX (64u << 10)

typedef enum {
    QG_EC_NONE,              /* status < 400 */
    QG_EC_RATE_LIMITED,
    QG_EC_WINDOW_EXHAUSTED,
    QG_EC_CREDITS_EXHAUSTED,
    QG_EC_SPEND_CAPPED,
    QG_EC_OVERLOADED,
    QG_EC_TRANSIENT,
    QG_EC_AUTH_FAILED,
    QG_EC_SERVER_ERROR,
    QG_EC_CLIENT_ERROR,
} qg_errclass;

typedef struct {
    qg_errclass cls;
    int64_t until_ms;        /* absolute epoch ms when the condition ends; 0 unknown */
    bool until_stated;       /* until_ms was stated by the provider for this answer (retry-after,
                                resets_at, a reset header, retryDelay) rather than inferred by us
                                (Gemini's next Pacific midnight, the first of next month) */
    char code[48];           /* a short token for logs and /admin/accounts: the provider's code
                                or type ("insufficient_quota", "usage_limit_reached", ...), most
                                specific first (Anthropic details.error_code, OpenRouter
                                limit_source, error.code, error.type, Gemini status, a numeric
                                code in decimal; "free-models-per-day" for OpenRouter's daily
                                free-model limit); its first printable run only, never message
                                text (messages may echo secrets); "" when there is none */
} qg_error_verdict;

/* hdr: the snapshot captured from the same response head (NULL: none); only retry_after_ms,
 * rejected and each entry's present / remaining / reset_ms are read.  body[0..n) need not be
 * NUL-terminated. */
void qg_classify_error(int status, const qg_rl_snapshot *hdr, const char *body, size_t n, int64_t now_ms,
                       qg_error_verdict *out);
/* "none", "rate_limited", "window_exhausted", ...; "unknown" for a value outside the enum */
const char *qg_errclass_name(qg_errclass c);

#endif
