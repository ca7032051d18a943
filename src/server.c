/*
 * server.c — client connections: accept, read and frame requests, write responses with
 * backpressure, keep-alive, pipelining, idle timeouts and drain.  See server.h.
 *
 * Re-entrancy rule: code called by the handler (qg_conn_send/end/abort) never frees the
 * connection synchronously.  Closing is deferred to the loop's deferred queue, so a
 * handler that is in the middle of processing an upstream read never sees its conn
 * vanish under it; it learns of the failure from the -1 return and from on_close.
 */
#include "server.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define QG_READ_CHUNK 4096
#define QG_OUT_SANITY_MAX (64u << 20) /* a producer ignoring backpressure is a bug: cut it off */
#define QG_ACCEPT_BATCH 64

static void conn_io_cb(qg_io *io, uint32_t events);
static void conn_timer_cb(qg_timer *t);
static void conn_resume_cb(qg_deferred *d);
static void conn_process_input(qg_conn *c);
static void conn_close_now(qg_conn *c);
static void conn_close_later(qg_conn *c);
static int conn_flush(qg_conn *c);
static void conn_finish_response(qg_conn *c);

/* ---- accept ---- */

static void conn_link(qg_server *s, qg_conn *c)
{
    c->next = s->conns;
    c->prev = NULL;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
}

static void conn_unlink(qg_server *s, qg_conn *c)
{
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
}

/* While a connection waits for a head, its timer fires at least every header_timeout, so a
 * head that starts later is still cut off on time without a timer change per request. */
static int64_t head_wait_ms(const qg_server *s)
{
    int64_t h = s->limits.header_timeout_ms;
    return h && h < s->limits.idle_timeout_ms ? h : s->limits.idle_timeout_ms;
}

static void accept_one(qg_server *s, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    qg_conn *c = qg_xcalloc(1, sizeof *c);
    c->srv = s;
    c->sock.fd = fd;
    c->state = QG_CONN_READ_HEAD;
    qg_buf_init(&c->in, s->limits.max_header + QG_READ_CHUNK);
    qg_buf_init(&c->body, 0); /* its limit is set per request */
    qg_buf_init(&c->out, QG_OUT_SANITY_MAX);
    qg_timer_init(&c->timer, conn_timer_cb, c);
    c->last_activity = qg_loop_now(s->loop);
    if (s->tls) {
        if (qg_sock_tls_server(&c->sock, s->tls) < 0) {
            close(fd);
            free(c);
            atomic_fetch_sub(s->conn_count, 1);
            return;
        }
        c->tls_handshaking = true;
    }
    conn_link(s, c);
    if (qg_io_start(s->loop, &c->io, fd, conn_io_cb, c) < 0) {
        conn_close_now(c);
        return;
    }
    qg_timer_start(s->loop, &c->timer, head_wait_ms(s));
}

/* Out of descriptors: the level-triggered listener would wake the loop again at once, so
 * stop watching it for a moment (as nginx and libuv do) and warn once per interval. */
static void accept_pause(qg_server *s, int err)
{
    int64_t now = qg_loop_now(s->loop);
    s->accept_pauses++;
    if (!s->accept_warned || now - s->accept_warned >= QG_ACCEPT_WARN_MS) {
        qg_warn("accept: %s: pausing new connections for %d ms (%llu pauses in the last interval; raise the fd "
                "limit or lower max_connections)",
                strerror(err), QG_ACCEPT_PAUSE_MS, (unsigned long long)s->accept_pauses);
        s->accept_warned = now;
        s->accept_pauses = 0;
    }
    qg_io_stop(s->loop, &s->listen_io);
    s->accept_paused = true;
    qg_timer_start(s->loop, &s->accept_timer, QG_ACCEPT_PAUSE_MS);
}

static void listen_cb(qg_io *io, uint32_t events);

static void accept_resume_cb(qg_timer *t)
{
    qg_server *s = t->ud;
    s->accept_paused = false;
    if (s->listening && qg_io_start_listen(s->loop, &s->listen_io, s->listen_io.fd, listen_cb, s) < 0) {
        qg_error("accept: cannot watch the listening socket again: %s", strerror(errno));
        s->listening = false;
    }
}

static void listen_cb(qg_io *io, uint32_t events)
{
    qg_server *s = io->ud;
    for (int i = 0; i < QG_ACCEPT_BATCH && s->listening && !s->accept_paused; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) accept_pause(s, errno);
            return;
        }
        if (atomic_fetch_add(s->conn_count, 1) >= s->limits.max_connections) {
            atomic_fetch_sub(s->conn_count, 1);
            close(fd); /* over the limit: refuse at once rather than queue without bound */
            continue;
        }
        accept_one(s, fd);
    }
}

void qg_server_init(qg_server *s, qg_loop *loop, int listen_fd, const qg_handler *h, void *app,
                    const qg_server_limits *limits, _Atomic int *conn_count, SSL_CTX *tls)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->handler = h;
    s->app = app;
    s->limits = *limits;
    s->conn_count = conn_count;
    s->tls = tls;
    s->listen_io.fd = -1;
    qg_timer_init(&s->accept_timer, accept_resume_cb, s);
    if (listen_fd >= 0 && qg_io_start_listen(loop, &s->listen_io, listen_fd, listen_cb, s) == 0) s->listening = true;
}

void qg_server_drain(qg_server *s)
{
    if (s->listening) {
        if (!s->accept_paused) qg_io_stop(s->loop, &s->listen_io);
        qg_timer_stop(s->loop, &s->accept_timer);
        s->listening = s->accept_paused = false;
    }
    s->draining = true;
    for (qg_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != QG_CONN_ACTIVE) conn_close_now(c);
    }
}

void qg_server_close_all(qg_server *s)
{
    qg_timer_stop(s->loop, &s->accept_timer);
    while (s->conns) conn_close_now(s->conns);
}

/* ---- closing ---- */

static void conn_close_now(qg_conn *c)
{
    qg_server *s = c->srv;
    if (c->req_active && !c->response_done && s->handler->on_close) s->handler->on_close(c);
    qg_timer_stop(s->loop, &c->timer);
    qg_defer_cancel(s->loop, &c->resume);
    if (c->io.fd >= 0) qg_io_stop(s->loop, &c->io);
    qg_sock_close(&c->sock);
    qg_buf_free(&c->in);
    qg_buf_free(&c->body);
    qg_buf_free(&c->out);
    explicit_bzero(&c->memo, sizeof c->memo); /* it may hold a secret */
    conn_unlink(s, c);
    atomic_fetch_sub(s->conn_count, 1);
    free(c);
}

/* Lingering close (as nginx does): after an error answer to a request whose body we did
 * not read, closing at once would make the kernel send RST for the unread bytes, and the
 * client could lose our answer.  Instead stop writing, discard input until EOF or a short
 * deadline, then close. */
#define QG_LINGER_MS 2000

static void conn_linger(qg_conn *c)
{
    c->lingering = true;
    shutdown(c->sock.fd, SHUT_WR);
    c->last_activity = qg_loop_now(c->srv->loop);
    qg_timer_start(c->srv->loop, &c->timer, QG_LINGER_MS);
}

static void conn_linger_read(qg_conn *c)
{
    char sink[4096];
    for (;;) {
        ssize_t r = read(c->sock.fd, sink, sizeof sink);
        if (r > 0) continue;
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        conn_close_now(c);
        return;
    }
}

static void conn_close_deferred(qg_deferred *d)
{
    qg_conn *c = d->ud;
    if (c->linger_wanted && !c->sock.ssl && !c->lingering && c->out.len == 0) conn_linger(c);
    else conn_close_now(c);
}

static void conn_close_later(qg_conn *c)
{
    if (c->state == QG_CONN_CLOSING) return;
    c->state = QG_CONN_CLOSING;
    qg_defer(c->srv->loop, &c->resume, conn_close_deferred, c);
}

/* ---- date cache ---- */

static const char *server_date(qg_server *s)
{
    time_t now = time(NULL);
    if (now != s->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s->date, sizeof s->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        s->date_sec = now;
    }
    return s->date;
}

/* ---- writing ---- */

/* Writes iov to the socket after whatever already waits in `out`; copies the unwritten
 * rest into `out`.  Returns 0 (all written), 1 (backed up) or -1 (connection gone). */
static int conn_write(qg_conn *c, struct iovec *in, int n)
{
    if (c->state == QG_CONN_CLOSING) return -1;
    /* What already waits in `out` (a response head, or a backed-up rest) leaves first, in
     * the same writev as the new bytes: one syscall per response in the common case. */
    struct iovec iov[8];
    int k = 0;
    size_t queued = c->out.len;
    if (queued) iov[k++] = (struct iovec){c->out.data, queued};
    for (int i = 0; i < n && k < (int)QG_ARRAY_LEN(iov); i++) iov[k++] = in[i];
    struct iovec *v = iov;
    size_t written = 0;
    while (k && !c->tls_handshaking) {
        ssize_t w = qg_sock_writev(&c->sock, v, k);
        if (w == QG_SOCK_AGAIN) break;
        if (w < 0) goto gone;
        written += (size_t)w;
        size_t adv = (size_t)w;
        while (k && adv >= v[0].iov_len) adv -= v[0].iov_len, v++, k--;
        if (k) v[0].iov_base = (char *)v[0].iov_base + adv, v[0].iov_len -= adv;
    }
    if (written) c->last_activity = qg_loop_now(c->srv->loop);
    /* Keep only the unwritten tail: first what is left of `out`, then of the new bytes. */
    size_t out_left = written >= queued ? 0 : queued - written;
    qg_buf_consume(&c->out, queued - out_left);
    for (int i = 0; i < k; i++) {
        if (out_left && v[i].iov_base >= (void *)c->out.data && v[i].iov_base < (void *)(c->out.data + c->out.cap))
            continue; /* the rest of `out` is already in place */
        if (qg_buf_append(&c->out, v[i].iov_base, v[i].iov_len) < 0) goto gone;
    }
    return c->out.len ? 1 : 0;
gone:
    conn_close_later(c);
    return -1;
}

/* Flushes `out`.  Returns 0 when empty, 1 when bytes remain, -1 on a dead connection. */
static int conn_flush(qg_conn *c)
{
    while (c->out.len) {
        struct iovec iov = {c->out.data, c->out.len};
        ssize_t w = qg_sock_writev(&c->sock, &iov, 1);
        if (w == QG_SOCK_AGAIN) return 1;
        if (w < 0) {
            conn_close_later(c);
            return -1;
        }
        qg_buf_consume(&c->out, (size_t)w);
        c->last_activity = qg_loop_now(c->srv->loop);
    }
    if (c->out.cap > 65536) qg_buf_free(&c->out); /* do not keep a big buffer on an idle conn */
    return 0;
}

bool qg_conn_backed_up(const qg_conn *c) { return c->out.len != 0; }

static void build_head(qg_conn *c, qg_buf *h, int status, const char *headers, size_t hlen, int64_t content_length)
{
    qg_server *s = c->srv;
    if (s->draining) c->close_after = true;
    qg_buf_puts(h, "HTTP/1.1 ");
    qg_buf_put_int(h, status);
    qg_buf_puts(h, " ");
    qg_buf_puts(h, qg_http_reason(status));
    qg_buf_puts(h, "\r\nDate: ");
    qg_buf_puts(h, server_date(s));
    qg_buf_puts(h, "\r\n");
    if (content_length >= 0) {
        qg_buf_puts(h, "Content-Length: ");
        qg_buf_put_int(h, content_length);
        qg_buf_puts(h, "\r\n");
    }
    else if (c->http10 || content_length == QG_UNTIL_CLOSE) {
        c->close_after = true; /* RFC 9112 §6.1: no chunked to 1.0; the close ends the body */
    } else if (c->keep_alive || !c->close_after) {
        c->response_chunked = true;
        qg_buf_append(h, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (c->close_after || !c->keep_alive) qg_buf_append(h, "Connection: close\r\n", 19);
    qg_buf_append(h, headers, hlen);
    qg_buf_append(h, "\r\n", 2);
}

void qg_conn_start(qg_conn *c, int status, const char *headers, size_t hlen, int64_t content_length)
{
    c->response_started = true;
    c->response_chunked = false;
    /* The head waits in `out` so that it leaves with the first body bytes in one write. */
    build_head(c, &c->out, status, headers, hlen, content_length);
}

int qg_conn_send(qg_conn *c, const char *p, size_t n)
{
    if (c->head_request) n = 0;
    if (n == 0) return c->out.len ? conn_flush(c) : (c->state == QG_CONN_CLOSING ? -1 : 0);
    char ch[24];
    struct iovec iov[3];
    int k = 0;
    if (c->response_chunked) iov[k++] = (struct iovec){ch, qg_chunk_header(ch, n)};
    iov[k++] = (struct iovec){(void *)p, n};
    if (c->response_chunked) iov[k++] = (struct iovec){"\r\n", 2};
    return conn_write(c, iov, k);
}

void qg_conn_respond(qg_conn *c, int status, const char *headers, size_t hlen, const char *body, size_t len)
{
    qg_conn_start(c, status, headers, hlen, (int64_t)len);
    qg_conn_send(c, body, len);
    qg_conn_end(c);
}

void qg_conn_end(qg_conn *c)
{
    if (c->response_done) return;
    c->response_done = true;
    if (c->response_chunked && !c->head_request) {
        struct iovec iov = {"0\r\n\r\n", 5};
        conn_write(c, &iov, 1);
    }
    if (c->state == QG_CONN_CLOSING || c->in_head_cb) return; /* begin_request finishes it */
    if (c->out.len == 0) conn_finish_response(c);
}

void qg_conn_abort(qg_conn *c)
{
    c->response_done = true;
    c->close_after = true;
    c->keep_alive = false;
    if (c->state == QG_CONN_CLOSING || c->in_head_cb) return;
    if (c->out.len == 0) conn_close_later(c);
    /* else: closed by conn_finish_response once `out` drains */
}

static void conn_finish_response(qg_conn *c)
{
    qg_server *s = c->srv;
    if (c->close_after || !c->keep_alive || s->draining) {
        conn_close_later(c);
        return;
    }
    c->state = c->discard_left ? QG_CONN_DISCARD_BODY : QG_CONN_READ_HEAD;
    c->req_ud = NULL;
    c->req_active = false;
    c->response_started = c->response_done = c->response_chunked = false;
    c->head_request = c->discard_forced = false;
    c->head_started = 0;
    c->last_activity = qg_loop_now(s->loop);
    qg_timer_start(s->loop, &c->timer, head_wait_ms(s));
    /* Pipelined bytes (or data that arrived while we were busy) are handled after this
     * loop iteration, never recursively from inside the handler. */
    qg_defer(s->loop, &c->resume, conn_resume_cb, c);
}

/* ---- reading requests ---- */

void qg_conn_discard_body(qg_conn *c)
{
    if (c->body_expected < 0) return; /* chunked: only closing gets rid of it */
    c->discard_forced = true;
    c->close_after = c->linger_wanted = false;
}

/* The request target of what `in` holds, for the error shape, even if the head is not
 * complete or not valid: the second word of the request line. */
static qg_slice target_guess(const qg_conn *c)
{
    const char *p = c->in.data, *end = p + QG_MIN(c->in.len, (size_t)8192);
    const char *sp = p ? memchr(p, ' ', (size_t)(end - p)) : NULL;
    if (!sp) return (qg_slice){"", 0};
    const char *t = sp + 1, *e = t;
    while (e < end && *e != ' ' && *e != '\r' && *e != '\n') e++;
    return (qg_slice){t, (size_t)(e - t)};
}

/* Answers an error the server decided itself, in the dialect of the target, and closes
 * after it (lingering, as the rest of the request is not read). */
static void respond_error_close(qg_conn *c, int status, const char *code, const char *msg)
{
    qg_server *s = c->srv;
    if (c->req_active && !c->response_done && s->handler->on_close) s->handler->on_close(c); /* held since on_head */
    c->req_ud = NULL;
    c->state = QG_CONN_ACTIVE;
    c->req_active = true;
    c->close_after = true;
    c->linger_wanted = true;
    c->discard_left = 0;
    qg_dialect d = s->handler->error_dialect ? s->handler->error_dialect(c, target_guess(c)) : QG_DIALECT_OPENAI;
    qg_buf body;
    qg_buf_init(&body, 0);
    qg_dialect_error_body(&body, d, status, code, msg);
    static const char ct[] = "Content-Type: application/json\r\n";
    qg_conn_respond(c, status, ct, sizeof ct - 1, body.data, body.len);
    qg_buf_free(&body);
}

static void respond_too_large(qg_conn *c)
{
    respond_error_close(c, 413, "request_too_large", "the request body exceeds the configured max_body");
}

static void respond_no_memory(qg_conn *c)
{
    respond_error_close(c, 503, "server_busy", "the gateway is out of memory; retry later");
}

static void dispatch(qg_conn *c)
{
    qg_server *s = c->srv;
    qg_http_msg *m = &s->msg;
    int rc = qg_http_parse_request(c->in.data, c->in.len, s->limits.max_header, m);
    if (rc <= 0) { /* cannot happen: the head parsed before */
        respond_error_close(c, 400, "invalid_request", "malformed HTTP request");
        return;
    }
    c->state = QG_CONN_ACTIVE;
    c->req_active = true;
    qg_timer_stop(s->loop, &c->timer);
    s->handler->on_request(c, m, &c->body);
    /* The head is done with; keep only pipelined bytes. */
    if (c->state != QG_CONN_CLOSING) {
        qg_buf_consume(&c->in, c->head_len);
        if (c->in.len == 0) qg_buf_free(&c->in);
    }
    qg_buf_free(&c->body);
    if (c->state == QG_CONN_ACTIVE && !c->response_done) {
        /* Waiting on the handler: watch a client that stops reading our output. */
        c->last_activity = qg_loop_now(s->loop);
        qg_timer_start(s->loop, &c->timer, s->limits.idle_timeout_ms);
    }
}

/* Body bytes of the current request that are not in `in` yet. */
static uint64_t body_unread(const qg_conn *c, const qg_http_msg *m)
{
    uint64_t len = m->content_length > 0 ? (uint64_t)m->content_length : 0;
    return len - QG_MIN((uint64_t)(c->in.len - m->head_len), len);
}

/* Moves the Content-Length body bytes that arrived with the head out of `in` (into `dst`,
 * or nowhere), keeping pipelined bytes after the head where dispatch expects them.
 * Returns -1 when dst cannot grow (out of memory). */
static int take_body_bytes(qg_conn *c, const qg_http_msg *m, qg_buf *dst)
{
    size_t extra = c->in.len - m->head_len;
    size_t take = (size_t)QG_MIN((uint64_t)extra, m->content_length > 0 ? (uint64_t)m->content_length : 0);
    if (dst && take) {
        if (qg_buf_try_reserve(dst, take) < 0) return -1;
        qg_buf_append(dst, c->in.data + m->head_len, take);
    }
    memmove(c->in.data + m->head_len, c->in.data + m->head_len + take, extra - take);
    c->in.len -= take;
    return 0;
}

/* The handler answered from the head: drop the body bytes that came with it; the rest is
 * read and discarded, or (chunked, or large and not forced) the connection closes, which
 * close_after already says since before on_head so the answer carries Connection: close. */
static void skip_unread_body(qg_conn *c, const qg_http_msg *m)
{
    if (m->chunked) return;
    uint64_t unread = body_unread(c, m);
    take_body_bytes(c, m, NULL);
    if (!c->close_after) c->discard_left = unread;
}

/* The head is complete: offer it to the handler, then decide how to read the body.
 * Returns 0 to go on reading, -1 when the request was answered without its body. */
static int begin_request(qg_conn *c, const qg_http_msg *m)
{
    qg_server *s = c->srv;
    c->head_len = m->head_len;
    c->keep_alive = m->keep_alive;
    c->http10 = m->minor_version == 0;
    c->close_after = c->linger_wanted = false;
    c->discard_left = 0;
    c->head_request = qg_slice_eq(m->method, "HEAD");
    c->body_expected = m->chunked ? -1 : m->content_length > 0 ? m->content_length : 0;
    if (m->content_length > 0 && (uint64_t)m->content_length > s->limits.max_body) {
        respond_too_large(c);
        return -1;
    }
    if (s->handler->on_head) {
        c->state = QG_CONN_ACTIVE; /* the timer stays armed: it only watches a client that stops reading */
        c->req_active = true;
        /* If answered now, how the unread body goes (qg_conn_discard_body may change it). */
        c->close_after = c->linger_wanted = m->chunked || body_unread(c, m) > QG_DISCARD_MAX;
        c->in_head_cb = true;
        int decision = s->handler->on_head(c, m);
        c->in_head_cb = false;
        if (decision == QG_HEAD_ANSWERED) {
            if (c->state == QG_CONN_CLOSING) return -1;
            skip_unread_body(c, m);
            qg_buf_consume(&c->in, c->head_len);
            if (c->in.len == 0) qg_buf_free(&c->in);
            /* answered at once: finish now that the body plan is known */
            if (c->response_done && c->out.len == 0) conn_finish_response(c);
            return -1;
        }
        if (c->state == QG_CONN_CLOSING) return -1;
        c->close_after = c->linger_wanted = c->discard_forced = false;
    }
    qg_buf_free(&c->body);
    if (m->chunked) {
        /* Decoded in place, so the raw buffer holds the decoded body plus at most one read
         * of framing: that read's room is above max_body, never taken from it. */
        c->body.max = s->limits.max_body + QG_READ_CHUNK * 4;
        qg_chunked_init(&c->body_chunked);
    } else {
        /* The buffer grows as bytes arrive: a declared length reserves nothing. */
        c->body.max = (size_t)c->body_expected;
        if (take_body_bytes(c, m, &c->body) < 0) {
            respond_no_memory(c);
            return -1;
        }
    }
    if (m->expect_continue && !c->http10 && c->body.len < (size_t)QG_MAX(c->body_expected, 1)) {
        struct iovec iov = {"HTTP/1.1 100 Continue\r\n\r\n", 25};
        if (conn_write(c, &iov, 1) < 0) return -1;
    }
    c->state = QG_CONN_READ_BODY;
    c->last_activity = qg_loop_now(s->loop); /* the idle timeout runs from the head */
    return 0;
}

/* Decodes newly arrived chunked-body bytes at body[decoded..].  Returns 1 when the body is
 * complete, 0 for more, -1 on error (already answered). */
static int chunked_progress(qg_conn *c, size_t decoded_before)
{
    size_t data_len, rest_off;
    char *raw = c->body.data + decoded_before;
    size_t raw_len = c->body.len - decoded_before;
    int r = qg_chunked_decode(&c->body_chunked, raw, raw_len, &data_len, &rest_off);
    if (r == QG_CHUNKED_ERROR) {
        respond_error_close(c, 400, "invalid_request", "malformed chunked request body");
        return -1;
    }
    if (decoded_before + data_len > c->srv->limits.max_body) {
        respond_too_large(c);
        return -1;
    }
    if (r == QG_CHUNKED_DONE && rest_off < raw_len) /* pipelined bytes go back after the head */
        qg_buf_append(&c->in, raw + rest_off, raw_len - rest_off);
    c->body.len = decoded_before + data_len;
    return r == QG_CHUNKED_DONE;
}

/* Reads and drops the body of a request answered from its head. */
static int conn_discard(qg_conn *c, bool *eof)
{
    char sink[QG_READ_CHUNK * 4];
    while (c->discard_left) {
        ssize_t r = qg_sock_read(&c->sock, sink, (size_t)QG_MIN(c->discard_left, (uint64_t)sizeof sink));
        if (r == QG_SOCK_AGAIN) return 0;
        if (r <= 0) {
            *eof = true;
            return 0;
        }
        c->discard_left -= (uint64_t)r;
        c->last_activity = qg_loop_now(c->srv->loop);
    }
    c->state = QG_CONN_READ_HEAD;
    return 0;
}

/* The head deadline runs from the head's first byte, whatever the pace after it (the timer
 * already fires at least that often while a head is awaited: head_wait_ms). */
static void head_started(qg_conn *c) { c->head_started = qg_loop_now(c->srv->loop); }

/* Reads what the socket has into `in` or `body`.  Returns 0 normally, -1 if the conn closed. */
static int conn_read(qg_conn *c, bool *eof)
{
    qg_server *s = c->srv;
    *eof = false;
    if (c->state == QG_CONN_DISCARD_BODY) return conn_discard(c, eof);
    for (;;) {
        qg_buf *b;
        size_t want;
        if (c->state == QG_CONN_READ_BODY) {
            b = &c->body;
            want = c->body_expected >= 0 ? (size_t)c->body_expected - c->body.len : QG_READ_CHUNK * 4;
            if (want == 0) return 0;
        } else {
            b = &c->in;
            want = QG_READ_CHUNK;
        }
        size_t decoded_before = b->len;
        int rr = qg_buf_try_reserve(b, QG_MIN(want, QG_READ_CHUNK * 16));
        if (rr == QG_BUF_NO_MEMORY) {
            respond_no_memory(c);
            return -1;
        }
        if (rr < 0) {
            if (b == &c->in) respond_error_close(c, 431, "request_too_large", "the request head exceeds the configured max_header");
            else respond_too_large(c);
            return -1;
        }
        size_t room = QG_MIN(b->cap - b->len, want);
        ssize_t r = qg_sock_read(&c->sock, b->data + b->len, room);
        if (r == QG_SOCK_AGAIN) return 0;
        if (r <= 0) {
            *eof = true;
            return 0;
        }
        if (b == &c->in && b->len == 0 && !c->head_started) head_started(c);
        b->len += (size_t)r;
        c->last_activity = qg_loop_now(s->loop);
        if (c->state == QG_CONN_READ_BODY && c->body_expected < 0) {
            int done = chunked_progress(c, decoded_before);
            if (done < 0) return -1;
            if (done) return 0;
        }
        if (c->state == QG_CONN_READ_HEAD) return 0; /* let the caller parse; it loops back */
    }
}

/* A complete head is at the front of `in`.  Returns 1 to keep processing, 0 to stop. */
static int head_complete(qg_conn *c)
{
    if (begin_request(c, &c->srv->msg) < 0) return 0;
    if (c->body_expected < 0 && c->in.len > c->head_len) {
        /* chunked body bytes that arrived with the head */
        qg_buf_append(&c->body, c->in.data + c->head_len, c->in.len - c->head_len);
        c->in.len = c->head_len;
        int done = chunked_progress(c, 0);
        if (done < 0) return 0;
        if (done) {
            dispatch(c);
            return 0;
        }
    }
    return 1;
}

/* Parses and dispatches as many complete requests as `in` holds, reading more as needed. */
static void conn_process_input(qg_conn *c)
{
    qg_server *s = c->srv;
    for (;;) {
        if (c->state == QG_CONN_READ_HEAD) {
            if (c->in.len) {
                if (!c->head_started) head_started(c); /* pipelined bytes: the head began already */
                int rc = qg_http_parse_request(c->in.data, c->in.len, s->limits.max_header, &s->msg);
                if (rc == QG_HTTP_TOO_LARGE || rc == QG_HTTP_TOO_MANY) {
                    respond_error_close(c, 431, "request_too_large", "the request head is too large");
                    return;
                }
                if (rc == QG_HTTP_ERROR) {
                    respond_error_close(c, 400, "invalid_request", "malformed HTTP request");
                    return;
                }
                if (rc > 0) {
                    if (!head_complete(c)) return;
                    continue;
                }
            }
        } else if (c->state == QG_CONN_READ_BODY) {
            if (c->body_expected >= 0 && c->body.len == (size_t)c->body_expected) {
                dispatch(c);
                return; /* one request at a time: the rest waits for the response */
            }
            if (c->body_expected < 0 && qg_chunked_done(&c->body_chunked)) {
                dispatch(c);
                return;
            }
        } else if (c->state == QG_CONN_DISCARD_BODY) {
            if (!c->discard_left) {
                c->state = QG_CONN_READ_HEAD;
                continue;
            }
        } else {
            return;
        }
        bool eof;
        size_t before_in = c->in.len, before_body = c->body.len;
        uint64_t before_discard = c->discard_left;
        int chunk_state_before = c->body_chunked.state;
        if (conn_read(c, &eof) < 0) return;
        if (eof) {
            conn_close_now(c);
            return;
        }
        if (c->in.len == before_in && c->body.len == before_body && c->body_chunked.state == chunk_state_before &&
            c->discard_left == before_discard)
            return; /* EAGAIN: wait for the next edge */
    }
}

static void conn_resume_cb(qg_deferred *d)
{
    qg_conn *c = d->ud;
    if (c->state == QG_CONN_READ_HEAD || c->state == QG_CONN_DISCARD_BODY) conn_process_input(c);
}

/* ---- events and timers ---- */

static void conn_io_cb(qg_io *io, uint32_t events)
{
    qg_conn *c = io->ud;
    if (c->lingering) {
        conn_linger_read(c);
        return;
    }
    if (c->state == QG_CONN_CLOSING) return;
    if (c->tls_handshaking) {
        int r = qg_sock_handshake(&c->sock);
        if (r == QG_SOCK_AGAIN) return;
        if (r < 0) {
            conn_close_now(c);
            return;
        }
        c->tls_handshaking = false;
    }
    if (c->out.len) {
        int r = conn_flush(c);
        if (r < 0) return;
        if (r == 0) {
            if (c->response_done) {
                conn_finish_response(c);
                return;
            }
            if (c->state == QG_CONN_ACTIVE && c->srv->handler->on_drain) c->srv->handler->on_drain(c);
            if (c->state == QG_CONN_CLOSING) return;
        }
    }
    if (c->state == QG_CONN_ACTIVE) {
        /* Do not read pipelined input now; only notice a client that went away. */
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) conn_close_now(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) conn_process_input(c);
}

static void conn_timer_cb(qg_timer *t)
{
    qg_conn *c = t->ud;
    qg_server *s = c->srv;
    if (c->lingering) {
        conn_close_now(c);
        return;
    }
    int64_t now = qg_loop_now(s->loop);
    int64_t idle = s->limits.idle_timeout_ms;
    int64_t due = c->last_activity + idle;
    bool waiting_on_client = c->state != QG_CONN_ACTIVE || c->out.len;
    if (!waiting_on_client) {
        qg_timer_start(s->loop, t, idle); /* the handler's own timeouts govern */
        return;
    }
    if (c->state == QG_CONN_READ_HEAD && s->limits.header_timeout_ms) {
        int64_t head_due = (c->head_started ? c->head_started : now) + s->limits.header_timeout_ms;
        if (c->head_started && now >= head_due) {
            qg_debug("client sent no complete request head in %lld ms: closing", (long long)s->limits.header_timeout_ms);
            respond_error_close(c, 408, "request_timeout", "the request head did not arrive in time");
            return;
        }
        due = QG_MIN(due, head_due);
    }
    if (now < due) {
        qg_timer_start_at(s->loop, t, due);
        return;
    }
    qg_debug("client connection idle for %lld ms: closing", (long long)idle);
    conn_close_now(c);
}
