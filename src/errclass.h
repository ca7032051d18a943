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
 *                      OpenRouter 402 openrouter_key_limit)
 *   overloaded         provider-wide (Anthropic 529 overloaded_error, 503): not the account's fault
 *   transient          retry on the same account after until_ms (OpenRouter in-flight budget)
 *   auth_failed        401 / 403
 *   server_error       other 5xx
 *   client_error       other 4xx: the client's request is at fault; relay it
 *
 * Pure: no clock, no allocation.  Branches on codes and types before message text; the
 * only message substrings matched are the ones providers give no code for ("credit balance
 * is too low", "free-models-per-day", "try again in 813ms").
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
                                or type ("insufficient_quota", "usage_limit_reached", ...) */
} qg_error_verdict;

/* hdr: the snapshot captured from the same response head (NULL: none). */
void qg_classify_error(int status, const qg_rl_snapshot *hdr, const char *body, size_t n, int64_t now_ms,
                       qg_error_verdict *out);
/* "none", "rate_limited", "window_exhausted", ... */
const char *qg_errclass_name(qg_errclass c);

#endif
