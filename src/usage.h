/*
 * usage.h — token usage extraction from provider responses, per dialect.
 *
 * Pure functions over response bytes (the span scanner of jscan.h inside; no allocation).  Normalised counts:
 *   input_tokens   the whole prompt, cached parts included (OpenAI prompt_tokens /
 *                  Responses input_tokens; Anthropic input_tokens + cache reads + cache writes)
 *   output_tokens  the whole completion, reasoning included
 *   cached_tokens  prompt tokens read from cache (subset of input_tokens)
 *   cache_write_tokens  prompt tokens written to cache (Anthropic; subset of input_tokens)
 *   reasoning_tokens    subset of output_tokens
 *
 * Streams: a qg_usage_stream accumulates over the events of one response.  Anthropic counts
 * are cumulative (message_start then message_delta repeat and grow them): the last value
 * wins, never a sum.  Only events whose data mentions a "usage" (or error) object are
 * JSON-scanned; the others are classified by cheap byte checks, so the per-event cost stays
 * far below a parse.
 */
#ifndef QG_USAGE_H
#define QG_USAGE_H

#include "common.h"
#include "dialect.h"

typedef struct {
    int64_t input_tokens;
    int64_t output_tokens;
    int64_t cached_tokens;
    int64_t cache_write_tokens;
    int64_t reasoning_tokens;
    double cost;      /* provider-reported cost (OpenRouter `usage.cost`), 0 if absent */
    bool has_cost;
    bool found;       /* a usage object was seen */
} qg_usage;

/* Non-stream JSON body.  Returns 0 and fills *u when a usage object is present, -1 if the
 * body is not JSON or carries no usage (u->found stays false). */
int qg_usage_from_json(qg_dialect d, const char *body, size_t n, qg_usage *u);

/* Flags returned by qg_usage_stream_event. */
enum {
    QG_EV_USAGE = 1 << 0,      /* this event carried usage (now in st->usage) */
    QG_EV_USAGE_ONLY = 1 << 1, /* OpenAI chat/completions chunk with `choices: []` and usage:
                                  the chunk that include_usage adds; drop it when the client
                                  did not ask for usage */
    QG_EV_TERMINAL = 1 << 2,   /* a clean end: `data: [DONE]`, Anthropic message_stop,
                                  Responses response.completed/incomplete/failed */
    QG_EV_ERROR = 1 << 3,      /* an in-stream error event (`event: error`, or data with a
                                  top-level "error" object) */
    QG_EV_DELTA = 1 << 4,      /* a content-carrying event (counts toward the output estimate) */
};

typedef struct {
    qg_dialect dialect;
    qg_usage usage;
    int64_t delta_events; /* content events seen: the output estimate when usage never came */
    int64_t scanned_events; /* events JSON-scanned (usage or error objects): a handful per stream */
    bool terminal;        /* a clean-end marker was seen */
    bool error;           /* an error event was seen */
} qg_usage_stream;

void qg_usage_stream_init(qg_usage_stream *st, qg_dialect d);
/* Classifies one SSE event (name may be empty; data is the joined data payload).
 * Returns a mask of QG_EV_* flags and updates st. */
int qg_usage_stream_event(qg_usage_stream *st, qg_slice event, qg_slice data);

#endif
