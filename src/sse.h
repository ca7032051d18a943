/*
 * sse.h — an incremental text/event-stream splitter (WHATWG HTML §9.2 framing).
 *
 * The proxy feeds it the decoded upstream body as it arrives, in pieces of any size, and
 * gets one callback per complete event block (the lines up to and including the blank
 * line that ends it).  Each callback sees the block's raw bytes, so the proxy can forward
 * it verbatim or drop it, plus the parsed `event:` name and the `data:` payload.
 *
 * Memory: a block that lies wholly inside the fed buffer is reported as slices into that
 * buffer (no copy).  Only an incomplete tail is copied into the parser's own bounded
 * buffer, so steady-state memory is one partial event.  A block larger than `max_event`
 * is an error (QG_SSE_TOO_LARGE): the stream is broken, never silently truncated.
 * Line endings may be LF, CRLF or CR.  Multiple `data:` lines are joined with '\n' into a
 * scratch buffer owned by the parser.  Slices passed to the callback are valid only
 * during the callback.
 */
#ifndef QG_SSE_H
#define QG_SSE_H

#include "common.h"

typedef struct {
    qg_slice raw;    /* the whole block including its terminating blank line */
    qg_slice event;  /* value of the last `event:` field, or empty */
    qg_slice data;   /* data lines joined by '\n', without the trailing newline */
    bool has_data;   /* at least one `data:` field was present */
} qg_sse_event;

/* Return 0 to continue, non-zero to stop parsing (qg_sse_feed then returns that value). */
typedef int (*qg_sse_cb)(void *ud, const qg_sse_event *ev);

enum { QG_SSE_OK = 0, QG_SSE_TOO_LARGE = -2 };

typedef struct {
    qg_buf pending; /* incomplete block carried over between feeds */
    qg_buf scratch; /* joined multi-line data */
    size_t max_event;
} qg_sse_parser;

#define QG_SSE_DEFAULT_MAX_EVENT (1u << 20) /* used when qg_sse_init gets max_event 0 */

void qg_sse_init(qg_sse_parser *p, size_t max_event);
void qg_sse_free(qg_sse_parser *p);
/* Feeds bytes; calls cb for each completed block, in order.  Returns QG_SSE_OK,
 * QG_SSE_TOO_LARGE, or the callback's non-zero return value.  After either, the rest of buf
 * and any pending bytes are dropped: the caller ends the stream. */
int qg_sse_feed(qg_sse_parser *p, const char *buf, size_t n, qg_sse_cb cb, void *ud);
/* The stream ended.  A block whose blank line ends in a CR as the very last byte fed is held
 * back (the next byte might be the LF of a CRLF); this delivers it.  Returns like qg_sse_feed.
 * Only CR-terminated streams, or a CRLF stream cut between its last CR and LF, need it. */
int qg_sse_finish(qg_sse_parser *p, qg_sse_cb cb, void *ud);
/* Bytes of an unterminated final block still held (the stream ended mid-event).  Call
 * qg_sse_finish first at end of stream; after it, anything left here is a truncated event. */
qg_slice qg_sse_pending(const qg_sse_parser *p);

#endif
