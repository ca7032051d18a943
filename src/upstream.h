/*
 * upstream.h — the HTTP/1.1 client towards providers, on the worker's loop, with a
 * keep-alive connection pool per (worker, provider).
 *
 * A qg_upstream is one provider's address, TLS context and idle-connection pool, owned
 * by one worker.  qg_upstream_send takes a pooled connection (or resolves, connects and
 * handshakes a new one), writes the request, parses the response head and delivers the
 * decoded body (chunked/length/until-close) to the caller's callbacks as it arrives.  A
 * connection whose response ended cleanly goes back to the pool; anything else closes it.
 *
 * Callbacks never run from inside qg_upstream_send, and a callback may call
 * qg_upconn_abort on its own connection (the upstream finishes unwinding safely).  The
 * returned handle stays valid until on_done or on_error has been called, or the caller
 * aborts it — also across the one transparent re-send (see upstream.c), which reuses
 * it.  The request iovecs must stay valid until on_head or on_error.  Body data handed to on_data
 * lives in a per-worker scratch buffer and is valid only during the call.
 *
 * Timeouts: connect (DNS + TCP + TLS), first byte (request sent -> response head), idle
 * (between body reads; suspended while the caller has paused reading for backpressure).
 */
#ifndef QG_UPSTREAM_H
#define QG_UPSTREAM_H

#include "common.h"
#include "config.h"
#include "http1.h"
#include "loop.h"
#include "resolver.h"
#include "sock.h"

#include <sys/uio.h>

typedef struct qg_upstream qg_upstream;
typedef struct qg_upconn qg_upconn;

typedef enum {
    QG_UPERR_NONE = 0,
    QG_UPERR_DNS,
    QG_UPERR_CONNECT,
    QG_UPERR_TLS,
    QG_UPERR_TIMEOUT,          /* connect or first byte */
    QG_UPERR_IDLE_TIMEOUT,     /* the body stalled */
    QG_UPERR_BROKEN,           /* connection closed or reset mid-response */
    QG_UPERR_PROTOCOL,         /* unparseable response */
} qg_uperr;

const char *qg_uperr_name(qg_uperr e);

typedef struct {
    void (*on_head)(void *ud, const qg_http_msg *resp);
    void (*on_data)(void *ud, char *data, size_t n);
    /* The body ended: by its framing (length, chunked), or by_close for a body delimited by
     * the connection's close — which a cut would look like too. */
    void (*on_done)(void *ud, bool by_close);
    void (*on_error)(void *ud, qg_uperr err);
} qg_upstream_cbs;

/* Pooled connections idle longer than this are closed.  Below the shortest common
 * provider keep-alive timeout (uvicorn/vLLM and Node servers: 5 s; nginx 75 s; AWS ALB
 * 60 s), so the provider practically never closes a connection just as it is reused. */
#define QG_POOL_IDLE_MS 4000
#define QG_POOL_MAX_IDLE 256           /* pooled connections per provider per worker */
#define QG_UPSTREAM_MAX_HEAD (64u << 10) /* a provider's response head */
#define QG_DNS_TTL_MS 60000            /* how long a resolved provider address is used */

typedef struct {
    int64_t connect_ms;
    int64_t first_byte_ms;
    int64_t idle_ms;
    int64_t pool_idle_ms;      /* close pooled connections unused this long */
    int max_idle;              /* pooled connections kept per provider per worker */
    size_t max_header;
} qg_upstream_opts;

typedef struct {
    qg_loop *loop;
    qg_resolver *resolver;
    int worker;
    char *scratch;             /* per-worker read buffer shared by all upstream reads */
    size_t scratch_len;
} qg_upstream_env;

qg_upstream *qg_upstream_new(const qg_upstream_env *env, const qg_provider_cfg *p, SSL_CTX *tls,
                             const qg_upstream_opts *opts);
/* Closes pooled connections.  Active connections must have been aborted before. */
void qg_upstream_free(qg_upstream *up);
size_t qg_upstream_idle_count(const qg_upstream *up);

/* Seeds the address cache (start-up resolution, done off the loop). */
void qg_upstream_seed_addr(qg_upstream *up, const struct sockaddr_storage *addr, socklen_t len);

qg_upconn *qg_upstream_send(qg_upstream *up, const struct iovec *req, int n, const qg_upstream_cbs *cbs, void *ud);
void qg_upconn_pause(qg_upconn *u);
void qg_upconn_resume(qg_upconn *u);
/* Cancels: no callback runs after this; the connection is closed (never pooled). */
void qg_upconn_abort(qg_upconn *u);

#endif
