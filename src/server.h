/*
 * server.h — the client-facing HTTP/1.1 server, one instance per worker loop.
 *
 * It accepts connections from a shared listening socket, reads a request head (bounded by
 * max_header and, from its first byte, by header_timeout), offers it to the handler's
 * on_head (which may answer at once: unknown key, path or method — the body is then never
 * buffered), then reads the body (bounded by max_body; Content-Length or chunked; the
 * buffer grows as bytes arrive), answers `Expect: 100-continue` only then, and hands the
 * complete request to on_request.  Requests on one
 * connection are served strictly in order: pipelined requests wait in the kernel socket
 * buffer and in `in` until the current response has been written.
 *
 * Responses are written through qg_conn_* calls.  Writes go straight to the socket with
 * writev; only the part the kernel would not take is copied into the connection's `out`
 * buffer.  A non-empty `out` means "backed up": the producer (the proxy) must stop
 * reading its upstream until the handler's on_drain runs.  That is the whole backpressure
 * contract, and it bounds `out` to one producer read.
 *
 * Errors the server answers itself (400, 408, 413, 431, 503) use the error shape of the
 * dialect the handler's error_dialect names for the request target.  Out of file
 * descriptors, accepting pauses for QG_ACCEPT_PAUSE_MS instead of spinning.  HTTP/1.0
 * clients get streamed responses delimited by the connection's close, never chunked.
 *
 * Lifetimes: a qg_conn belongs to the server.  While a request is active (from on_head
 * asking for the body, or from on_request) the handler may hold the conn pointer; the
 * server calls on_close before freeing a conn with an active request, or before answering
 * an error itself for one (the client went away, an I/O error, a body over max_body),
 * after which the handler must not touch it.  The request head passed to on_request (and its slices) is valid only
 * during that call; the body buffer may be taken over by the handler (qg_buf move).
 */
#ifndef QG_SERVER_H
#define QG_SERVER_H

#include "common.h"
#include "dialect.h"
#include "http1.h"
#include "loop.h"
#include "sock.h"

#include <stdatomic.h>

typedef struct qg_server qg_server;
typedef struct qg_conn qg_conn;

/* What on_head decided. */
enum { QG_HEAD_READ_BODY = 0, QG_HEAD_ANSWERED = 1 };
#define QG_DISCARD_MAX (64u << 10)

typedef struct {
    /* A complete request.  body->len bytes of body; the handler may move the qg_buf out
     * (then reinitialise *body).  The handler answers now or later via qg_conn_*. */
    void (*on_request)(qg_conn *c, const qg_http_msg *req, qg_buf *body);
    /* The output buffer emptied after a write reported backpressure. */
    void (*on_drain)(qg_conn *c);
    /* The connection is going away while a request is active. */
    void (*on_close)(qg_conn *c);
    /* Optional.  The request head is complete and its body not read yet (no 100 Continue
     * sent).  Return QG_HEAD_READ_BODY to read the body and get on_request, or answer now
     * (qg_conn_respond; or later, holding the conn through req_ud) and return
     * QG_HEAD_ANSWERED: the body is then never buffered.  After
     * such an early answer a small Content-Length body (<= QG_DISCARD_MAX) is read and
     * discarded so the connection stays usable; a larger or chunked one closes the
     * connection (lingering), unless the handler called qg_conn_discard_body first.  The
     * head and its slices are valid only during the call. */
    int (*on_head)(qg_conn *c, const qg_http_msg *req);
    /* Optional: the dialect whose error shape fits a request target (default OpenAI's). */
    qg_dialect (*error_dialect)(qg_conn *c, qg_slice target);
} qg_handler;

typedef struct {
    size_t max_header;
    size_t max_body;
    int64_t idle_timeout_ms;   /* waiting for a request, or a client that stopped reading */
    int64_t header_timeout_ms; /* a whole request head, from its first byte (0: none) */
    int max_connections;       /* shared across workers through `conn_count` */
} qg_server_limits;

/* How long accepting pauses when the process is out of file descriptors. */
#define QG_ACCEPT_PAUSE_MS 100
/* At most one warning about it per interval. */
#define QG_ACCEPT_WARN_MS 10000

struct qg_server {
    qg_loop *loop;
    const qg_handler *handler;
    void *app;                 /* handler's context (a worker) */
    qg_server_limits limits;
    SSL_CTX *tls;              /* non-NULL: serve TLS (the simulator's https mode) */
    qg_io listen_io;
    bool listening;
    bool accept_paused;        /* out of descriptors: listen_io is off until accept_timer */
    qg_timer accept_timer;
    int64_t accept_warned;     /* loop ms of the last out-of-descriptors warning */
    uint64_t accept_pauses;    /* pauses since that warning */
    bool draining;             /* finish active responses, then close; no new requests */
    _Atomic int *conn_count;   /* process-wide open client connections */
    qg_conn *conns;            /* intrusive list of every open conn */
    size_t n_conns;
    qg_http_msg msg;           /* scratch for parsing (slices valid during on_request) */
    char date[40];             /* cached "Date:" value */
    int64_t date_sec;
};

/* READ_HEAD -> [on_head] -> READ_BODY -> [on_request] -> ACTIVE -> READ_HEAD (keep-alive)
 * An early answer from on_head goes ACTIVE with the body unread; after the response the
 * body is discarded (DISCARD_BODY) or the connection closes. */
enum qg_conn_state { QG_CONN_READ_HEAD, QG_CONN_READ_BODY, QG_CONN_ACTIVE, QG_CONN_DISCARD_BODY, QG_CONN_CLOSING };

#define QG_CONN_MEMO 96

struct qg_conn {
    qg_server *srv;
    qg_conn *prev, *next;
    qg_io io;
    qg_sock sock;
    qg_timer timer;
    qg_deferred resume;        /* continue with a pipelined request after a response */
    int64_t last_activity;
    int64_t head_started;      /* loop ms of the current head's first byte; 0 = none yet */
    enum qg_conn_state state;
    qg_buf in;                 /* request head + any pipelined bytes (freed when empty) */
    qg_buf body;               /* the current request's body */
    qg_buf out;                /* unflushed response bytes */
    qg_chunked body_chunked;   /* chunked request body decoding */
    int64_t body_expected;     /* Content-Length, or -1 when chunked */
    size_t head_len;           /* of the current request, still at the front of `in` */
    uint64_t discard_left;     /* unread body bytes to drop after an early answer */
    bool keep_alive;
    bool http10;               /* the request was HTTP/1.0: no chunked responses */
    bool discard_forced;       /* qg_conn_discard_body: keep the conn whatever the size */
    bool in_head_cb;           /* inside on_head: an answer is finished by begin_request */
    bool response_chunked;
    bool response_started;
    bool response_done;        /* the handler ended the response (clean or aborted) */
    bool close_after;          /* close once `out` is flushed */
    bool tls_handshaking;
    bool head_request;
    bool req_active;           /* the handler holds this request (from on_head or on_request) */
    bool linger_wanted;        /* we answered without reading the whole request */
    bool lingering;            /* write side shut, discarding input before close */
    void *req_ud;              /* the handler's per-request object */
    /* The handler's memo across the connection's requests (proxy.c: the API key the last
     * request presented, so a keep-alive client is not hashed again); wiped at close. */
    struct {
        const void *ptr;
        uint8_t len;
        char bytes[QG_CONN_MEMO];
    } memo;
};

/* Sets up a server on `loop` sharing the listening socket `listen_fd`. */
void qg_server_init(qg_server *s, qg_loop *loop, int listen_fd, const qg_handler *h, void *app,
                    const qg_server_limits *limits, _Atomic int *conn_count, SSL_CTX *tls);
/* Stops accepting, closes idle connections, and lets active ones finish (drain). */
void qg_server_drain(qg_server *s);
/* Closes every connection now (active handlers get on_close). */
void qg_server_close_all(qg_server *s);

/* Response API.  `headers` is zero or more preformatted "Name: value\r\n" lines. */
/* A whole response at once (Content-Length set from len). */
void qg_conn_respond(qg_conn *c, int status, const char *headers, size_t hlen, const char *body, size_t len);
/* Starts a response: content_length >= 0 sends that length; -1 sends chunked (or, to an
 * HTTP/1.0 client, until close); QG_UNTIL_CLOSE ends the body by closing the connection. */
#define QG_UNTIL_CLOSE (-2)
void qg_conn_start(qg_conn *c, int status, const char *headers, size_t hlen, int64_t content_length);
/* Sends body bytes.  Returns 0 when all went to the kernel, 1 when some wait in `out`
 * (stop producing until on_drain), -1 when the connection is gone. */
int qg_conn_send(qg_conn *c, const char *p, size_t n);
/* Ends the response cleanly (the last chunk for chunked responses). */
void qg_conn_end(qg_conn *c);
/* Ends the response without a clean end: flush what is queued, then close.  The client
 * sees an unterminated body. */
void qg_conn_abort(qg_conn *c);
bool qg_conn_backed_up(const qg_conn *c);
/* From on_head, before answering early: keep the connection by reading and discarding the
 * unread Content-Length body, whatever its size (the simulator's keep-alive early answer). */
void qg_conn_discard_body(qg_conn *c);

#endif
