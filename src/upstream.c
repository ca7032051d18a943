/*
 * upstream.c — provider connections: resolve, connect, TLS, send, parse, pool.
 * See upstream.h for the contract.
 *
 * Re-entrancy: callbacks run with u->in_cb set; qg_upconn_abort during a callback only
 * marks the connection, and the code that invoked the callback frees it on the way out.
 * on_done and on_error are always the last thing that touches a connection: it is pooled
 * or freed first, then the caller's callback runs with values copied to the stack.
 *
 * A request is sent to the provider at most once (SPEC §3).  A pooled connection stays
 * registered with epoll, so a provider closing it is usually noticed before reuse, and
 * qg_upstream_send also peeks at the socket before taking it (a close that arrived in
 * the same epoll batch has not been dispatched yet).  The one transparent re-send is
 * when writing the request to a reused connection fails: the provider cannot have
 * processed a request it did not receive whole.  It happens on the same qg_upconn (a
 * fresh socket behind the handle the caller holds), at most once.  Any other death —
 * after the request was written, even with no response byte yet — is an ordinary
 * failure for the caller's retry policy: a load balancer cutting a long generation may
 * have let the provider do (and bill) the work.
 *
 * A response that arrives while the request is still being written (an early 400/413)
 * ends the sending: the rest of the iovecs is never written (the caller may free them
 * from on_head on) and the connection is never pooled, since the provider would read
 * the next request as the tail of this body.
 */
#include "upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define UP_MAX_IOV 8

enum { UP_RESOLVING, UP_CONNECTING, UP_HANDSHAKE, UP_SENDING, UP_WAIT_HEAD, UP_BODY, UP_IDLE, UP_DEAD };

struct qg_upconn {
    qg_upstream *up;
    qg_upconn *prev, *next;    /* idle pool or DNS waiters */
    qg_io io;
    qg_sock sock;
    qg_timer timer;
    qg_deferred later;
    int state;
    const qg_upstream_cbs *cbs;
    void *ud;
    struct iovec iov[UP_MAX_IOV];
    struct iovec orig_iov[UP_MAX_IOV];
    int iovcnt, orig_iovcnt;
    qg_buf head;
    qg_body_kind body_kind;
    uint64_t body_left;
    qg_chunked chunked;
    int64_t started;           /* loop ms when the current phase's deadline started */
    int64_t last_activity;
    qg_uperr pending_err;
    bool keep_alive;
    bool reused;
    bool resent;
    bool write_failed;         /* writing the request failed: the provider did not get it whole */
    bool unsent;               /* the response came before the whole request was written */
    bool got_bytes;
    bool paused;
    bool aborted;
    bool registered;
    int in_cb;
};

struct qg_upstream {
    qg_upstream_env env;
    const qg_provider_cfg *p;
    SSL_CTX *tls;
    qg_upstream_opts opts;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int64_t addr_expires;      /* loop ms; 0 = unknown */
    bool numeric_host;
    bool resolving;
    qg_dns_query dns;
    qg_upconn *idle;
    size_t n_idle;
    qg_upconn *waiters;
    size_t n_live;
};

static void conn_io_cb(qg_io *io, uint32_t events);
static void conn_timer_cb(qg_timer *t);
static void conn_connect(qg_upconn *u);
static void conn_send_some(qg_upconn *u);
static void conn_read_some(qg_upconn *u);

const char *qg_uperr_name(qg_uperr e)
{
    static const char *const n[] = {"none", "dns", "connect", "tls", "timeout", "idle_timeout", "broken", "protocol"};
    return (unsigned)e < QG_ARRAY_LEN(n) ? n[e] : "unknown";
}

/* ---- lists ---- */

static void list_push(qg_upconn **head, qg_upconn *u)
{
    u->prev = NULL;
    u->next = *head;
    if (*head) (*head)->prev = u;
    *head = u;
}

static void list_remove(qg_upconn **head, qg_upconn *u)
{
    if (u->prev) u->prev->next = u->next;
    else if (*head == u) *head = u->next;
    if (u->next) u->next->prev = u->prev;
    u->prev = u->next = NULL;
}

/* ---- lifecycle ---- */

static qg_upconn *conn_new(qg_upstream *up)
{
    qg_upconn *u = qg_xcalloc(1, sizeof *u);
    u->up = up;
    u->sock.fd = -1;
    u->io.fd = -1;
    qg_buf_init(&u->head, up->opts.max_header);
    qg_timer_init(&u->timer, conn_timer_cb, u);
    up->n_live++;
    return u;
}

static void conn_free(qg_upconn *u)
{
    qg_upstream *up = u->up;
    qg_loop *l = up->env.loop;
    if (u->state == UP_IDLE) {
        list_remove(&up->idle, u);
        up->n_idle--;
    } else if (u->state == UP_RESOLVING) {
        list_remove(&up->waiters, u);
    }
    qg_timer_stop(l, &u->timer);
    qg_defer_cancel(l, &u->later);
    if (u->registered) qg_io_stop(l, &u->io);
    qg_sock_close(&u->sock);
    qg_buf_free(&u->head);
    up->n_live--;
    free(u);
}

/* Runs a callback; returns false if the connection was aborted (and is now freed). */
#define RUN_CB(u, call)                                                                          \
    ({                                                                                           \
        (u)->in_cb++;                                                                            \
        call;                                                                                    \
        (u)->in_cb--;                                                                            \
        bool alive_ = !(u)->aborted;                                                             \
        if (!alive_ && !(u)->in_cb) conn_free(u);                                                \
        alive_;                                                                                  \
    })

/* Whether a failure proves the provider never got the request (see the top comment). */
static bool may_resend(const qg_upconn *u)
{
    return u->reused && u->write_failed && !u->got_bytes && !u->resent;
}

/* Sends the request again on a fresh socket behind the same handle, so the caller's
 * pointer stays valid. */
static void conn_restart(qg_upconn *u)
{
    qg_loop *l = u->up->env.loop;
    if (u->registered) qg_io_stop(l, &u->io);
    u->registered = false;
    qg_sock_close(&u->sock);
    qg_defer_cancel(l, &u->later);
    qg_buf_reset(&u->head);
    u->reused = u->write_failed = u->got_bytes = false;
    u->resent = true;
    memcpy(u->iov, u->orig_iov, sizeof u->orig_iov);
    u->iovcnt = u->orig_iovcnt;
    conn_connect(u);
}

static void conn_fail(qg_upconn *u, qg_uperr err)
{
    const qg_upstream_cbs *cbs = u->cbs;
    void *ud = u->ud;
    if (u->in_cb) { /* cannot happen today: failures are detected outside callbacks */
        u->aborted = true;
        return;
    }
    if (may_resend(u)) {
        qg_debug("upstream %s: writing to a pooled connection failed; sending on a fresh one", u->up->p->name);
        conn_restart(u);
        return;
    }
    conn_free(u);
    cbs->on_error(ud, err);
}

static void fail_later_cb(qg_deferred *d)
{
    qg_upconn *u = d->ud;
    conn_fail(u, u->pending_err);
}

static void conn_fail_later(qg_upconn *u, qg_uperr err)
{
    u->pending_err = err;
    u->state = UP_DEAD;
    qg_defer(u->up->env.loop, &u->later, fail_later_cb, u);
}

static void conn_arm(qg_upconn *u, int64_t ms)
{
    u->started = qg_loop_now(u->up->env.loop);
    u->last_activity = u->started;
    qg_timer_start(u->up->env.loop, &u->timer, ms);
}

/* The response ended cleanly: pool or close, then tell the caller. */
static void conn_complete(qg_upconn *u, bool reusable)
{
    qg_upstream *up = u->up;
    const qg_upstream_cbs *cbs = u->cbs;
    void *ud = u->ud;
    bool by_close = u->body_kind == QG_BODY_UNTIL_CLOSE;
    qg_buf_free(&u->head);
    if (reusable && u->keep_alive && !u->unsent && up->n_idle < (size_t)up->opts.max_idle) {
        u->state = UP_IDLE;
        u->cbs = NULL;
        u->ud = NULL;
        u->paused = false;
        u->reused = u->got_bytes = u->resent = u->write_failed = false;
        list_push(&up->idle, u);
        up->n_idle++;
        conn_arm(u, up->opts.pool_idle_ms);
    } else {
        conn_free(u);
    }
    cbs->on_done(ud, by_close);
}

/* ---- DNS and connect ---- */

static void dns_done(qg_dns_query *q)
{
    qg_upstream *up = q->ud;
    up->resolving = false;
    if (q->rc == 0) {
        up->addr = q->addr;
        up->addrlen = q->addrlen;
        up->addr_expires = qg_loop_now(up->env.loop) + QG_DNS_TTL_MS;
    } else {
        qg_warn("upstream %s: cannot resolve %s: %s", up->p->name, up->p->host, gai_strerror(q->rc));
    }
    while (up->waiters) {
        qg_upconn *u = up->waiters;
        list_remove(&up->waiters, u);
        u->state = UP_CONNECTING;
        if (q->rc == 0) conn_connect(u);
        else conn_fail_later(u, QG_UPERR_DNS);
    }
}

static bool addr_fresh(qg_upstream *up)
{
    return up->numeric_host || (up->addr_expires && qg_loop_now(up->env.loop) < up->addr_expires);
}

static void conn_connect(qg_upconn *u)
{
    qg_upstream *up = u->up;
    if (!addr_fresh(up)) {
        u->state = UP_RESOLVING;
        list_push(&up->waiters, u);
        if (!u->timer.heap_index) conn_arm(u, up->opts.connect_ms);
        if (!up->resolving) {
            snprintf(up->dns.host, sizeof up->dns.host, "%s", up->p->host);
            up->dns.port = up->p->port;
            up->dns.done = dns_done;
            up->dns.ud = up;
            if (qg_resolver_lookup(up->env.resolver, up->env.worker, &up->dns) == 0) up->resolving = true;
            else {
                list_remove(&up->waiters, u);
                conn_fail_later(u, QG_UPERR_DNS);
            }
        }
        return;
    }
    u->state = UP_CONNECTING;
    conn_arm(u, up->opts.connect_ms);
    int fd = socket(up->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        conn_fail_later(u, QG_UPERR_CONNECT);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    u->sock.fd = fd;
    if (connect(fd, (struct sockaddr *)&up->addr, up->addrlen) < 0 && errno != EINPROGRESS) {
        conn_fail_later(u, QG_UPERR_CONNECT);
        return;
    }
    if (qg_io_start(up->env.loop, &u->io, fd, conn_io_cb, u) < 0) {
        conn_fail_later(u, QG_UPERR_CONNECT);
        return;
    }
    u->registered = true;
}

static void conn_connected(qg_upconn *u)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(u->sock.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
        qg_debug("upstream %s: connect: %s", u->up->p->name, strerror(err ? err : errno));
        conn_fail(u, QG_UPERR_CONNECT);
        return;
    }
    if (u->up->tls) {
        if (qg_sock_tls_client(&u->sock, u->up->tls, u->up->p->host) < 0) {
            conn_fail(u, QG_UPERR_TLS);
            return;
        }
        u->state = UP_HANDSHAKE;
        return;
    }
    u->state = UP_SENDING;
    conn_arm(u, u->up->opts.first_byte_ms);
}

/* ---- sending ---- */

/* Writes what is left of the request.  0: all sent, 1: the socket is full, -1: error. */
static int conn_write_iov(qg_upconn *u)
{
    while (u->iovcnt) {
        ssize_t w = qg_sock_writev(&u->sock, u->iov, u->iovcnt);
        if (w == QG_SOCK_AGAIN) return 1;
        if (w < 0) return -1;
        size_t adv = (size_t)w;
        int i = 0;
        while (i < u->iovcnt && adv >= u->iov[i].iov_len) adv -= u->iov[i++].iov_len;
        memmove(u->iov, u->iov + i, sizeof(struct iovec) * (size_t)(u->iovcnt - i));
        u->iovcnt -= i;
        if (u->iovcnt) {
            u->iov[0].iov_base = (char *)u->iov[0].iov_base + adv;
            u->iov[0].iov_len -= adv;
        }
    }
    return 0;
}

static void conn_send_some(qg_upconn *u)
{
    int r = conn_write_iov(u);
    if (r < 0) {
        u->write_failed = true;
        conn_fail(u, QG_UPERR_BROKEN);
        return;
    }
    if (r == 0 && u->state == UP_SENDING) {
        u->state = UP_WAIT_HEAD;
        conn_arm(u, u->up->opts.first_byte_ms);
    }
}

/* ---- receiving ---- */

/* Delivers body bytes.  Returns false if the connection is gone (done, failed, aborted). */
static bool conn_body(qg_upconn *u, char *data, size_t n, bool *complete)
{
    *complete = false;
    switch (u->body_kind) {
    case QG_BODY_NONE:
        *complete = true;
        return true;
    case QG_BODY_LENGTH: {
        size_t take = (size_t)QG_MIN((uint64_t)n, u->body_left);
        if (take < n) u->keep_alive = false; /* bytes past the body: do not trust this conn */
        u->body_left -= take;
        if (take && !RUN_CB(u, u->cbs->on_data(u->ud, data, take))) return false;
        *complete = u->body_left == 0;
        return true;
    }
    case QG_BODY_CHUNKED: {
        size_t dlen, rest;
        int r = qg_chunked_decode(&u->chunked, data, n, &dlen, &rest);
        if (r == QG_CHUNKED_ERROR) {
            conn_fail(u, QG_UPERR_PROTOCOL);
            return false;
        }
        if (r == QG_CHUNKED_DONE && rest < n) u->keep_alive = false;
        if (dlen && !RUN_CB(u, u->cbs->on_data(u->ud, data, dlen))) return false;
        *complete = r == QG_CHUNKED_DONE;
        return true;
    }
    case QG_BODY_UNTIL_CLOSE:
        u->keep_alive = false;
        return n == 0 || RUN_CB(u, u->cbs->on_data(u->ud, data, n));
    }
    return true;
}

/* Parses the head from buf; on success delivers it and the body bytes after it.
 * Returns 1 if the head was handled, 0 if incomplete, -1 if the conn is gone. */
static int conn_head(qg_upconn *u, char *buf, size_t len, bool *complete)
{
    qg_http_msg m;
    size_t off = 0;
    for (;;) {
        int rc = qg_http_parse_response(buf + off, len - off, u->up->opts.max_header, &m);
        if (rc == QG_HTTP_INCOMPLETE) { /* keep the unparsed part for the next read */
            if (buf == u->head.data) {
                memmove(buf, buf + off, len - off);
                u->head.len = len - off;
            } else if (qg_buf_append(&u->head, buf + off, len - off) < 0) {
                conn_fail(u, QG_UPERR_PROTOCOL);
                return -1;
            }
            return 0;
        }
        if (rc < 0) {
            conn_fail(u, QG_UPERR_PROTOCOL);
            return -1;
        }
        if (m.status >= 100 && m.status < 200) { /* 100 Continue, 103 Early Hints: skip */
            off += (size_t)rc;
            continue;
        }
        off += (size_t)rc;
        break;
    }
    if (u->iovcnt) { /* an early answer: never write the rest, never pool */
        u->unsent = true;
        u->iovcnt = 0;
    }
    u->keep_alive = m.keep_alive;
    u->body_kind = qg_http_response_body_kind(&m, false);
    u->body_left = m.content_length > 0 ? (uint64_t)m.content_length : 0;
    qg_chunked_init(&u->chunked);
    u->state = UP_BODY;
    u->last_activity = qg_loop_now(u->up->env.loop);
    qg_timer_start(u->up->env.loop, &u->timer, u->up->opts.idle_ms);
    if (!RUN_CB(u, u->cbs->on_head(u->ud, &m))) return -1;
    if (!conn_body(u, buf + off, len - off, complete)) return -1;
    return 1;
}

static void conn_read_some(qg_upconn *u)
{
    qg_upstream *up = u->up;
    while (!u->paused) {
        ssize_t r = qg_sock_read(&u->sock, up->env.scratch, up->env.scratch_len);
        if (r == QG_SOCK_AGAIN) return;
        if (r <= 0) {
            if (r == 0 && u->state == UP_BODY && u->body_kind == QG_BODY_UNTIL_CLOSE) {
                conn_complete(u, false);
                return;
            }
            conn_fail(u, QG_UPERR_BROKEN);
            return;
        }
        u->got_bytes = true;
        u->last_activity = qg_loop_now(up->env.loop);
        bool complete = false;
        if (u->state == UP_BODY) {
            if (!conn_body(u, up->env.scratch, (size_t)r, &complete)) return;
        } else {
            char *buf = up->env.scratch;
            size_t len = (size_t)r;
            if (u->head.len) {
                if (qg_buf_append(&u->head, buf, len) < 0) {
                    conn_fail(u, QG_UPERR_PROTOCOL);
                    return;
                }
                buf = u->head.data;
                len = u->head.len;
            }
            int h = conn_head(u, buf, len, &complete);
            if (h < 0) return;
            if (h == 1) qg_buf_free(&u->head);
        }
        if (complete) {
            conn_complete(u, true);
            return;
        }
    }
}

static void resume_cb(qg_deferred *d) { conn_read_some(d->ud); }

/* ---- events ---- */

static void conn_io_cb(qg_io *io, uint32_t events)
{
    qg_upconn *u = io->ud;
    switch (u->state) {
    case UP_CONNECTING:
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        conn_connected(u);
        if (u->state != UP_HANDSHAKE && u->state != UP_SENDING) return;
        /* fallthrough */
    case UP_HANDSHAKE:
        if (u->state == UP_HANDSHAKE) {
            int r = qg_sock_handshake(&u->sock);
            if (r == QG_SOCK_AGAIN) return;
            if (r < 0) {
                qg_warn("upstream %s: TLS handshake with %s failed (certificate or protocol)", u->up->p->name, u->up->p->host);
                conn_fail(u, QG_UPERR_TLS);
                return;
            }
            u->state = UP_SENDING;
            conn_arm(u, u->up->opts.first_byte_ms);
        }
        /* fallthrough */
    case UP_SENDING:
        conn_send_some(u);
        if (u->state != UP_WAIT_HEAD && u->state != UP_SENDING) return;
        /* fallthrough */
    case UP_WAIT_HEAD:
    case UP_BODY:
        if (!u->paused) conn_read_some(u);
        return;
    case UP_IDLE:
        /* A pooled connection must be silent: data or a close means it is done for. */
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) conn_free(u);
        return;
    default:
        return;
    }
}

static void conn_timer_cb(qg_timer *t)
{
    qg_upconn *u = t->ud;
    qg_upstream *up = u->up;
    int64_t now = qg_loop_now(up->env.loop);
    switch (u->state) {
    case UP_IDLE:
        conn_free(u);
        return;
    case UP_BODY:
        if (u->paused) { /* the client is slow, not the provider */
            u->last_activity = now;
            qg_timer_start(up->env.loop, t, up->opts.idle_ms);
            return;
        }
        if (now - u->last_activity < up->opts.idle_ms) {
            qg_timer_start_at(up->env.loop, t, u->last_activity + up->opts.idle_ms);
            return;
        }
        conn_fail(u, QG_UPERR_IDLE_TIMEOUT);
        return;
    case UP_DEAD:
        return;
    default:
        u->resent = true; /* a timeout is never resent silently */
        conn_fail(u, QG_UPERR_TIMEOUT);
    }
}

/* ---- public ---- */

qg_upstream *qg_upstream_new(const qg_upstream_env *env, const qg_provider_cfg *p, SSL_CTX *tls, const qg_upstream_opts *opts)
{
    qg_upstream *up = qg_xcalloc(1, sizeof *up);
    up->env = *env;
    up->p = p;
    up->tls = tls;
    up->opts = *opts;
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, p->host, &a4) == 1 || inet_pton(AF_INET6, p->host, &a6) == 1) {
        up->numeric_host = qg_resolve_now(p->host, p->port, &up->addr, &up->addrlen) == 0;
    }
    return up;
}

void qg_upstream_free(qg_upstream *up)
{
    if (!up) return;
    while (up->idle) conn_free(up->idle);
    while (up->waiters) conn_free(up->waiters);
    if (up->n_live) qg_warn("upstream %s: %zu connections still live at shutdown", up->p->name, up->n_live);
    free(up);
}

size_t qg_upstream_idle_count(const qg_upstream *up) { return up->n_idle; }


void qg_upstream_seed_addr(qg_upstream *up, const struct sockaddr_storage *addr, socklen_t len)
{
    up->addr = *addr;
    up->addrlen = len;
    up->addr_expires = qg_loop_now(up->env.loop) + QG_DNS_TTL_MS;
}

/* A pooled socket is usable if it is silent: no EOF, no error, no stray bytes. */
static bool idle_conn_alive(qg_upconn *u)
{
    char b;
    if (u->sock.ssl && SSL_pending(u->sock.ssl)) return false;
    return recv(u->sock.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* The most recently pooled live connection, or NULL. */
static qg_upconn *take_idle(qg_upstream *up)
{
    while (up->idle) {
        qg_upconn *u = up->idle;
        list_remove(&up->idle, u);
        up->n_idle--;
        qg_timer_stop(up->env.loop, &u->timer);
        if (idle_conn_alive(u)) return u;
        u->state = UP_DEAD;
        conn_free(u);
    }
    return NULL;
}

qg_upconn *qg_upstream_send(qg_upstream *up, const struct iovec *req, int n, const qg_upstream_cbs *cbs, void *ud)
{
    if (n > UP_MAX_IOV) return NULL;
    qg_upconn *u = take_idle(up);
    if (u) {
        u->reused = true;
        u->unsent = false;
    } else {
        u = conn_new(up);
    }
    u->cbs = cbs;
    u->ud = ud;
    memcpy(u->orig_iov, req, sizeof *req * (size_t)n);
    memcpy(u->iov, req, sizeof *req * (size_t)n);
    u->orig_iovcnt = u->iovcnt = n;
    if (u->reused) {
        u->state = UP_SENDING;
        conn_arm(u, up->opts.first_byte_ms);
        /* Write now (no callback can run from here: failures are deferred). */
        int r = conn_write_iov(u);
        if (r < 0) {
            u->write_failed = true;
            conn_fail_later(u, QG_UPERR_BROKEN);
        } else if (r == 0) {
            u->state = UP_WAIT_HEAD;
        }
        return u;
    }
    conn_connect(u);
    return u;
}

void qg_upconn_pause(qg_upconn *u) { u->paused = true; }

void qg_upconn_resume(qg_upconn *u)
{
    if (!u->paused) return;
    u->paused = false;
    u->last_activity = qg_loop_now(u->up->env.loop);
    /* Edge-triggered: data may already wait in the socket, so read without an event. */
    qg_defer(u->up->env.loop, &u->later, resume_cb, u);
}

void qg_upconn_abort(qg_upconn *u)
{
    if (u->in_cb) {
        u->aborted = true;
        return;
    }
    if (u->state == UP_IDLE) return; /* already handed back; nothing to cancel */
    conn_free(u);
}
