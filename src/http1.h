/*
 * http1.h — a strict HTTP/1.1 message-head parser (RFC 9112) for both directions and an
 * incremental, in-place chunked-body decoder.
 *
 * Pure functions over bytes: no I/O, no allocation.  The head parsers are re-entrant in
 * the picohttpparser style: call again with the whole buffer when more bytes arrive; they
 * answer "complete (head length)", "need more", or an error.  Parsed names and values are
 * slices into the caller's buffer and live as long as it does.
 *
 * Strictness (what makes request smuggling and desync impossible here): both
 * Content-Length and Transfer-Encoding, several differing Content-Lengths, a
 * Transfer-Encoding other than a final "chunked", obs-fold, whitespace before the colon,
 * control characters and bare CR are all rejected.  Lines may end in CRLF or LF
 * (RFC 9112 §2.2 lets a recipient accept a lone LF).
 */
#ifndef QG_HTTP1_H
#define QG_HTTP1_H

#include "common.h"

#define QG_HTTP_MAX_HEADERS 128

typedef struct {
    qg_slice name;
    qg_slice value;
} qg_header;

enum {
    QG_HTTP_INCOMPLETE = 0,
    QG_HTTP_ERROR = -1,      /* malformed: 400 (or a broken upstream) */
    QG_HTTP_TOO_LARGE = -2,  /* head longer than the limit: 431 */
    QG_HTTP_TOO_MANY = -3,   /* more than QG_HTTP_MAX_HEADERS headers: 431 */
};

typedef struct {
    /* request line (requests) */
    qg_slice method;
    qg_slice target;
    /* status line (responses) */
    int status;
    /* both */
    int minor_version;       /* 0 or 1 */
    qg_header headers[QG_HTTP_MAX_HEADERS];
    size_t n_headers;
    /* framing, derived from the headers */
    int64_t content_length;  /* -1: absent */
    bool chunked;
    bool keep_alive;         /* HTTP/1.1 default unless "Connection: close"; 1.0 needs keep-alive */
    bool expect_continue;    /* requests: "Expect: 100-continue" */
    bool connection_names;   /* a Connection header names other headers (hop-by-hop for this hop) */
    size_t head_len;
} qg_http_msg;

/* Returns the head length (> 0) when the head is complete, QG_HTTP_INCOMPLETE, or an error.
 * `max_head` bounds the head size. */
int qg_http_parse_request(const char *buf, size_t len, size_t max_head, qg_http_msg *m);
int qg_http_parse_response(const char *buf, size_t len, size_t max_head, qg_http_msg *m);

/* Case-insensitive header lookup; returns an empty slice with p == NULL when absent. */
qg_slice qg_http_header(const qg_http_msg *m, const char *name);

/* The token of "Authorization: Bearer TOKEN" (trimmed), or an empty slice with p == NULL. */
qg_slice qg_http_bearer(const qg_http_msg *m);
/* A client's API key: x-api-key, else the bearer token. */
qg_slice qg_http_api_key(const qg_http_msg *m);
/* Whether a comma-separated header value (e.g. Connection's) lists token, case-insensitively. */
bool qg_http_list_has(qg_slice list, qg_slice token);
/* Whether a Connection header of m names this header (RFC 9110 §7.6.1: do not forward it).
 * Free for the usual message, whose Connection names nothing but close/keep-alive. */
bool qg_http_connection_names(const qg_http_msg *m, qg_slice name);

/* True for headers a proxy must not forward (RFC 9110 §7.6.1) plus framing headers it
 * sets itself: Connection, Keep-Alive, Proxy-Connection, Proxy-Authenticate,
 * Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade,
 * Content-Length, Host. */
bool qg_http_is_hop_header(qg_slice name);

/* Body framing of a response to a request (RFC 9112 §6.3). */
typedef enum { QG_BODY_NONE, QG_BODY_LENGTH, QG_BODY_CHUNKED, QG_BODY_UNTIL_CLOSE } qg_body_kind;
qg_body_kind qg_http_response_body_kind(const qg_http_msg *m, bool head_request);

/* ---- chunked decoding ---- */
typedef struct {
    int state;
    uint64_t chunk_left;  /* bytes of data left in the current chunk */
    size_t line_len;      /* length of the size line / trailer line being read */
} qg_chunked;

enum { QG_CHUNKED_MORE = 0, QG_CHUNKED_DONE = 1, QG_CHUNKED_ERROR = -1 };

void qg_chunked_init(qg_chunked *c);
/* Decodes buf[0..*len) in place.  On return buf[0..*data_len) holds the decoded payload.
 * Returns QG_CHUNKED_MORE (feed more later), QG_CHUNKED_DONE (the last-chunk and trailers
 * were consumed; *rest_off is where the bytes after the message begin — they are left at
 * buf + *rest_off, untouched), or QG_CHUNKED_ERROR.  Chunk-size lines and trailer lines
 * longer than 4 KiB are errors. */
int qg_chunked_decode(qg_chunked *c, char *buf, size_t len, size_t *data_len, size_t *rest_off);

static inline bool qg_chunked_done(const qg_chunked *c) { return c->state == 8; }

/* Writes the framing for one chunk of n bytes ("%zx\r\n") into out (>= 20 bytes); returns length. */
size_t qg_chunk_header(char *out, size_t n);

/* Reason phrase for a status code ("OK", "Too Many Requests", ...). */
const char *qg_http_reason(int status);

#endif
