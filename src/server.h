/*
 * server.h — the client-facing HTTP/1.1 server, one instance per worker loop.
 *
 * It accepts connections from a shared listening socket, reads a request head (bounded by
 * max_header) and body (bounded by max_body; Content-Length or chunked), answers
 * `Expect: 100-continue`, and hands the complete request to a handler.  Requests on one
 * connection are served strictly in order: pipelined requests wait in the kernel socket
 * buffer and in `in` until the current response has been written.
 *
 * Responses are written through qg_conn_* calls.  Writes go straight to the socket with
 * writev; only the part the kernel would not take is copied into the connection's `out`
 * buffer.  A non-empty `out` means "backed up": the producer (the proxy) must stop
 * reading its upstream until the handler's on_drain runs.  That is the whole backpressure
 * contract, and it bounds `out` to one producer read.
 *
 * Lifetimes: a qg_conn belongs to the server.  While a request is active the handler may
 * hold the conn pointer; the server calls on_close before freeing a conn with an active
 * request (the client went away or an I/O error happened), after which the handler must
 * not touch it.  The request head passed to on_request (and its slices) is valid only
 * during that call; the body buffer may be taken over by the handler (qg_buf move).
 */
#ifndef QG_SERVER_H
#define QG_SERVER_H

#include "common.h"
#include "http1.h"
#include "loop.h"
#include "sock.h"

#include <stdatomic.h>

typedef struct qg_server qg_server;
typedef struct qg_conn qg_conn;

typedef struct {
    /* A complete request.  body->len bytes of body; the handler may move the qg_buf out
     * (then reinitialise *body).  The handler answers now or later via qg_conn_*. */
    void (*on_request)(qg_conn *c, const qg_http_msg *req, qg_buf *body);
    /* The output buffer emptied after a write reported backpressure. */
    void (*on_drain)(qg_conn *c);
    /* The connection is going away while a request is active. */
    void (*on_close)(qg_conn *c);
} qg_handler;

typedef struct {
    size_t max_header;
    size_t max_body;
    int64_t idle_timeout_ms;   /* waiting for a request, or a client that stopped reading */
    int max_connections;       /* shared across workers through `conn_count` */
} qg_server_limits;

struct qg_server {
    qg_loop *loop;
    const qg_handler *handler;
    void *app;                 /* handler's context (a worker) */
    qg_server_limits limits;
    SSL_CTX *tls;              /* non-NULL: serve TLS (the simulator's https mode) */
    qg_io listen_io;
    bool listening;
    bool draining;             /* finish active responses, then close; no new requests */
    _Atomic int *conn_count;   /* process-wide open client connections */
    qg_conn *conns;            /* intrusive list of every open conn */
    size_t n_conns;
    qg_http_msg msg;           /* scratch for parsing (slices valid during on_request) */
    char date[40];             /* cached "Date:" value */
    int64_t date_sec;
};

enum qg_conn_state { QG_CONN_READ_HEAD, QG_CONN_READ_BODY, QG_CONN_ACTIVE, QG_CONN_CLOSING };

struct qg_conn {
    qg_server *srv;
    qg_conn *prev, *next;
    qg_io io;
    qg_sock sock;
    qg_timer timer;
    qg_deferred resume;        /* continue with a pipelined request after a response */
    int64_t last_activity;
    enum qg_conn_state state;
    qg_buf in;                 /* request head + any pipelined bytes (freed when empty) */
    qg_buf body;               /* the current request's body */
    qg_buf out;                /* unflushed response bytes */
    qg_chunked body_chunked;   /* chunked request body decoding */
    int64_t body_expected;     /* Content-Length, or -1 when chunked */
    size_t head_len;           /* of the current request, still at the front of `in` */
    bool keep_alive;
    bool response_chunked;
    bool response_started;
    bool response_done;        /* the handler ended the response (clean or aborted) */
    bool close_after;          /* close once `out` is flushed */
    bool tls_handshaking;
    bool head_request;
    bool req_active;           /* a request was dispatched and its response is not finished */
    bool linger_wanted;        /* we answered without reading the whole request */
    bool lingering;            /* write side shut, discarding input before close */
    void *req_ud;              /* the handler's per-request object */
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
/* Starts a response: content_length >= 0 sends that length; -1 sends chunked. */
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

#endif
