/*
 * adminclient.c — a blocking HTTP/1.1 client for the gateway's admin API, and a reader for
 * its JSON.  See adminclient.h.
 */
#include "adminclient.h"

#include "http1.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define TIMEOUT_MS 3000               /* connect, and each send / receive */
#define TOTAL_MS 10000                /* the whole exchange */
#define MAX_HEAD (64u << 10)

/* ---- the peer ---- */

void qg_admin_peer_of(const qg_config *cfg, qg_admin_peer *p)
{
    const char *h = cfg->listen_host;
    if (!h || !*h || !strcmp(h, "0.0.0.0")) h = "127.0.0.1";
    else if (!strcmp(h, "::")) h = "::1";
    qg_strlcpy(p->host, h, sizeof p->host);
    p->port = cfg->listen_port;
    bool v6 = strchr(p->host, ':') != NULL;
    snprintf(p->where, sizeof p->where, "%s%s%s:%d", v6 ? "[" : "", p->host, v6 ? "]" : "", p->port);
    p->token = cfg->admin_token;
}

/* ---- the exchange ---- */

static int fail_why(char *why, size_t cap, const char *msg)
{
    snprintf(why, cap, "%s", msg);
    return -1;
}

/* Connects fd to ai within TIMEOUT_MS and sets the send/receive timeouts; 0 or an errno. */
static int connect_within(int fd, const struct addrinfo *ai)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return errno;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) return errno;
        struct pollfd p = {fd, POLLOUT, 0};
        int r;
        do r = poll(&p, 1, TIMEOUT_MS);
        while (r < 0 && errno == EINTR);
        if (r <= 0) return r == 0 ? ETIMEDOUT : errno;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return errno;
        if (err) return err;
    }
    if (fcntl(fd, F_SETFL, fl) < 0) return errno;
    struct timeval tv = {TIMEOUT_MS / 1000, (TIMEOUT_MS % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return 0;
}

/* An open connection to host:port, or -1 with the reason in why. */
static int dial(const char *host, int port, char *why, size_t cap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g) return fail_why(why, cap, gai_strerror(g));
    int fd = -1, err = EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        err = connect_within(fd, ai);
        if (err) close(fd), fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) fail_why(why, cap, err == ETIMEDOUT ? "no connection within 3 s" : strerror(err));
    return fd;
}

static int send_all(int fd, const char *p, size_t n, char *why, size_t cap)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return fail_why(why, cap, errno == EAGAIN || errno == EWOULDBLOCK ? "sending timed out" : strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Whether b holds the whole response whose head (head bytes) m describes.  Chunked and
 * until-close bodies end with the connection (the request says Connection: close). */
static bool response_complete(const qg_buf *b, const qg_http_msg *m, int head, bool head_request)
{
    qg_body_kind k = qg_http_response_body_kind(m, head_request);
    if (k == QG_BODY_NONE) return true;
    return k == QG_BODY_LENGTH && b->len - (size_t)head >= (size_t)m->content_length;
}

/* Reads one response into b; returns its head length, or -1 with the reason in why. */
static int read_response(int fd, qg_buf *b, qg_http_msg *m, bool head_request, char *why, size_t cap)
{
    int64_t deadline = qg_mono_ms() + TOTAL_MS;
    int head = 0;
    for (;;) {
        if (qg_buf_try_reserve(b, 16384) < 0) {
            snprintf(why, cap, "the answer is larger than %zu MiB", b->max >> 20);
            return -1;
        }
        ssize_t r = recv(fd, b->data + b->len, b->cap - b->len, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return fail_why(why, cap, errno == EAGAIN || errno == EWOULDBLOCK ? "no answer within 3 s" : strerror(errno));
        b->len += (size_t)r;
        head = qg_http_parse_response(b->data, b->len, MAX_HEAD, m);
        if (head < 0) return fail_why(why, cap, "the answer is not HTTP/1.1");
        if (r == 0 || (head > 0 && response_complete(b, m, head, head_request))) break;
        if (qg_mono_ms() > deadline) return fail_why(why, cap, "the answer took longer than 10 s");
    }
    return head > 0 ? head : fail_why(why, cap, "the connection closed before an answer");
}

/* Leaves only the response body in b (chunked framing decoded); -1 if it was cut short. */
static int take_body(qg_buf *b, qg_body_kind kind, int64_t content_length, size_t head, char *why, size_t cap)
{
    qg_buf_consume(b, head);
    if (kind == QG_BODY_NONE) b->len = 0;
    if (kind == QG_BODY_LENGTH) {
        if (b->len < (size_t)content_length) return fail_why(why, cap, "the answer's body was cut short");
        b->len = (size_t)content_length;
    }
    if (kind == QG_BODY_CHUNKED) {
        qg_chunked ch;
        qg_chunked_init(&ch);
        size_t data_len = 0, rest = 0;
        if (qg_chunked_decode(&ch, b->data, b->len, &data_len, &rest) != QG_CHUNKED_DONE)
            return fail_why(why, cap, "the answer's chunked body is cut short or malformed");
        b->len = data_len;
    }
    return 0;
}

int qg_admin_request(const qg_admin_peer *p, const char *method, const char *path, const char *agent, qg_buf *body,
                     int *status, char *why, size_t cap)
{
    return qg_admin_request_body(p, method, path, agent, NULL, 0, body, status, why, cap);
}

int qg_admin_request_body(const qg_admin_peer *p, const char *method, const char *path, const char *agent,
                          const char *req_body, size_t req_len, qg_buf *body, int *status, char *why, size_t cap)
{
    if (p->port <= 0) return fail_why(why, cap, "the config listens on port 0, chosen at start-up");
    int fd = dial(p->host, p->port, why, cap);
    if (fd < 0) return -1;
    bool head_request = !strcmp(method, "HEAD");
    qg_buf req;
    qg_buf_init(&req, 0);
    qg_buf_appendf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, p->where);
    if (p->token && *p->token) qg_buf_appendf(&req, "Authorization: Bearer %s\r\n", p->token);
    if (req_body)
        qg_buf_appendf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n", req_len);
    else if (!strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH"))
        qg_buf_puts(&req, "Content-Length: 0\r\n");
    qg_buf_appendf(&req, "Accept: application/json\r\nUser-Agent: %s\r\nConnection: close\r\n\r\n", agent);
    if (req_body) qg_buf_append(&req, req_body, req_len); /* one send: head and body together */
    qg_http_msg m;
    int head = send_all(fd, req.data, req.len, why, cap) < 0 ? -1 : read_response(fd, body, &m, head_request, why, cap);
    qg_buf_free(&req);
    close(fd);
    if (head < 0) return -2;
    *status = m.status;
    qg_body_kind kind = qg_http_response_body_kind(&m, head_request);
    return take_body(body, kind, m.content_length, (size_t)head, why, cap) < 0 ? -2 : 0;
}

void qg_admin_error_of(const qg_buf *body, char *code, size_t code_cap, char *msg, size_t msg_cap)
{
    static const char *const e[] = {"error"}, *const members[] = {"code", "message"};
    qg_jval err, m[2];
    if (code) code[0] = 0;
    if (msg) msg[0] = 0;
    if (qg_jval_members(qg_jval_text(body->data, body->len), e, 1, &err, NULL) < 0 ||
        qg_jval_members(err, members, 2, m, NULL) < 0)
        return;
    if (code && m[0].type == QG_JSON_STRING) qg_jval_str(m[0], code, code_cap);
    if (msg && m[1].type == QG_JSON_STRING) qg_jval_str(m[1], msg, msg_cap);
}

void qg_admin_fmt_relative(int64_t t, int64_t now, char *out, size_t cap)
{
    int64_t d = (t > now ? t - now : now - t) / 1000;
    const char *pre = t > now ? "in " : "", *post = t > now ? "" : " ago";
    long long days = d / 86400, h = d / 3600 % 24, m = d / 60 % 60, s = d % 60;
    if (t == now) snprintf(out, cap, "now");
    else if (d == 0) snprintf(out, cap, "%s<1s%s", pre, post);
    else if (days) snprintf(out, cap, "%s%lldd%lldh%s", pre, days, h, post);
    else if (h) snprintf(out, cap, "%s%lldh%lldm%s", pre, h, m, post);
    else if (m) snprintf(out, cap, "%s%lldm%llds%s", pre, m, s, post);
    else snprintf(out, cap, "%s%llds%s", pre, s, post);
}

/* ---- reading the JSON: spans from jscan, plus an array walker ---- */

int qg_jval_members(qg_jval v, const char *const *names, size_t n, qg_jval *out, const char **why)
{
    qg_json_span sp[32];
    const char *w = "not a JSON object";
    if (v.type != QG_JSON_OBJECT || n > QG_ARRAY_LEN(sp) || qg_jscan_object(v.p, v.n, names, n, sp, NULL, &w) < 0) {
        if (why) *why = w;
        return -1;
    }
    for (size_t i = 0; i < n; i++) out[i] = (qg_jval){sp[i].type, v.p + sp[i].off, sp[i].len};
    return 0;
}

static bool json_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static qg_json_type type_at(char c)
{
    switch (c) {
    case '{': return QG_JSON_OBJECT;
    case '[': return QG_JSON_ARRAY;
    case '"': return QG_JSON_STRING;
    case 't': return QG_JSON_TRUE;
    case 'f': return QG_JSON_FALSE;
    case 'n': return QG_JSON_NULL;
    default: return QG_JSON_NUMBER;
    }
}

/* The end of the value that starts at p[i].  The text is valid JSON (jscan checked the
 * document), so this only has to find the end: strings (skipping escaped characters),
 * nested containers by depth, scalars up to the next delimiter. */
static size_t value_end(const char *p, size_t n, size_t i)
{
    int depth = 0;
    bool in_string = false;
    for (; i < n; i++) {
        char c = p[i];
        if (in_string) {
            if (c == '\\') {
                i++; /* the escaped character, which may be a quote */
            } else if (c == '"') {
                in_string = false;
                if (depth == 0) return i + 1;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return i; /* a scalar that ends the array */
            if (--depth == 0) return i + 1;
        } else if (depth == 0 && (c == ',' || json_ws(c))) {
            return i;
        }
    }
    return n;
}

bool qg_jval_next(qg_jval v, size_t *pos, qg_jval *el)
{
    if (v.type != QG_JSON_ARRAY) return false;
    size_t i = *pos ? *pos : 1;
    while (i < v.n && json_ws(v.p[i])) i++;
    if (i < v.n && v.p[i] == ',') i++;
    while (i < v.n && json_ws(v.p[i])) i++;
    if (i >= v.n || v.p[i] == ']') return false;
    size_t end = value_end(v.p, v.n, i);
    *el = (qg_jval){type_at(v.p[i]), v.p + i, end - i};
    *pos = end;
    return true;
}

void qg_jval_str(qg_jval v, char *out, size_t cap)
{
    qg_json_span s = {v.type, 0, v.n};
    if (v.type != QG_JSON_STRING) qg_strlcpy(out, "-", cap);
    else if (qg_json_string_value(v.p, s, out, cap) < 0) qg_strlcpy(out, "?", cap);
}

char *qg_jval_strdup(qg_jval v)
{
    if (v.type != QG_JSON_STRING) return NULL;
    char *out = qg_xmalloc(v.n + 1); /* decoding never lengthens a JSON string */
    qg_json_span s = {v.type, 0, v.n};
    if (qg_json_string_value(v.p, s, out, v.n + 1) < 0) {
        free(out);
        return NULL;
    }
    return out;
}

int64_t qg_jval_int(qg_jval v)
{
    int64_t x;
    qg_json_span s = {v.type, 0, v.n};
    return qg_json_int_value(v.p, s, &x) == 0 ? x : -1;
}
