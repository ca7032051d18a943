/*
 * qgload.c — the load generator for bench/run.sh, for the two measurements wrk cannot
 * make: latency at a fixed arrival rate, and many concurrent long streams.
 *
 *   qgload rate    -p PORT -r RATE -d SECONDS [-c CONNS] [-k KEY] [-m MODEL]
 *       Sends RATE requests/s (non-stream) over a pool of keep-alive connections; latency is
 *       measured from each request's *scheduled* time, so a stall is counted against every
 *       request it delays (no coordinated omission).  Prints p50/p90/p99/max in µs.
 *   qgload streams -p PORT -n STREAMS [-k KEY] [-m MODEL] [-s SAMPLE_AFTER_S] [-P PID]
 *       Opens STREAMS streaming requests at once and reads each chunked SSE response to its
 *       end, counting events.  A stream is incomplete if its connection ends before the
 *       chunked terminator.  With -P, samples that process's RSS (KiB) after -s seconds,
 *       while the streams are open.
 *
 * One machine-readable line of results on stdout, with every response's status counted
 * (non2xx=N, statuses=CODE:COUNT,...).  A response with a status outside 200-299 is read to
 * its end like any other, counted, and makes the run fail.  Exit status: 0 only if every
 * request got a complete 2xx response (rate: no errors, no missing answers; streams: no
 * incomplete streams); 1 otherwise.  Single-threaded, plain epoll.
 */
#include "http1.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

typedef struct {
    int fd;
    int state;            /* 0 idle, 1 waiting for a response, 2 done, 3 failed */
    char buf[65536];
    size_t len;
    int64_t sched_us;     /* rate mode: scheduled send time of the outstanding request */
    qg_chunked ch;
    bool in_body;
    uint64_t body_left;
    bool chunked;
    bool until_close;     /* body delimited by the end of the connection */
    bool close_after;     /* the server said Connection: close */
    int status;           /* status of the response being read (0: none yet) */
    long events;
    char last[2];         /* the last two decoded bytes, to count "\n\n" across reads */
} conn;

/* Status counts over the whole run: by code (100-599; 0 holds anything else). */
static long status_count[600];
static long non2xx;

static void count_status(int status)
{
    status_count[status >= 100 && status < 600 ? status : 0]++;
    if (status < 200 || status > 299) non2xx++;
}

/* " non2xx=N statuses=200:1000,502:3" (statuses=- when no response arrived). */
static void print_statuses(void)
{
    printf(" non2xx=%ld statuses=", non2xx);
    bool any = false;
    for (int s = 0; s < 600; s++)
        if (status_count[s]) printf("%s%d:%ld", any ? "," : "", s, status_count[s]), any = true;
    if (!any) putchar('-');
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static size_t make_request(char *out, size_t cap, const char *key, const char *model, bool stream)
{
    char body[256];
    int bl = snprintf(body, sizeof body,
                      "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]%s}", model,
                      stream ? ",\"stream\":true" : ",\"max_tokens\":8");
    return (size_t)snprintf(out, cap,
                            "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n"
                            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                            key, bl, body);
}

static void count_events(conn *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' && c->last[1] == '\n') c->events++;
        c->last[0] = c->last[1];
        c->last[1] = p[i];
    }
}

/* Consumes c->buf; returns 1 when a whole response was read, 0 for more, -1 on error.
 * Any status is read to the end of its body (and counted when complete, by the caller). */
static int parse_some(conn *c)
{
    if (!c->in_body) {
        qg_http_msg m;
        int h = qg_http_parse_response(c->buf, c->len, sizeof c->buf, &m);
        if (h == 0) return 0;
        if (h < 0) return -1;
        qg_body_kind kind = qg_http_response_body_kind(&m, false);
        c->in_body = true;
        c->status = m.status;
        c->chunked = kind == QG_BODY_CHUNKED;
        c->until_close = kind == QG_BODY_UNTIL_CLOSE;
        c->close_after = !m.keep_alive || c->until_close;
        c->body_left = kind == QG_BODY_LENGTH ? (uint64_t)m.content_length : 0;
        qg_chunked_init(&c->ch);
        memmove(c->buf, c->buf + h, c->len - (size_t)h);
        c->len -= (size_t)h;
    }
    if (c->chunked) {
        size_t dlen, rest;
        int r = qg_chunked_decode(&c->ch, c->buf, c->len, &dlen, &rest);
        if (r < 0) return -1;
        count_events(c, c->buf, dlen);
        if (r == QG_CHUNKED_DONE) {
            memmove(c->buf, c->buf + rest, c->len - rest);
            c->len -= rest;
            c->in_body = false;
            return 1;
        }
        c->len = 0;
        return 0;
    }
    if (c->until_close) { /* the body ends at EOF (read_conn) */
        c->len = 0;
        return 0;
    }
    size_t take = (size_t)QG_MIN((uint64_t)c->len, c->body_left);
    c->body_left -= take;
    memmove(c->buf, c->buf + take, c->len - take);
    c->len -= take;
    if (c->body_left == 0) {
        c->in_body = false;
        return 1;
    }
    return 0;
}

static int read_conn(conn *c)
{
    for (;;) {
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
        if (r == 0 && c->in_body && c->until_close) { /* EOF ends a close-delimited body */
            c->in_body = false;
            return 1;
        }
        if (r <= 0) return -1;
        c->len += (size_t)r;
        int p;
        while ((p = parse_some(c)) == 1) {
            if (c->state == 1) return 1; /* rate mode: one response per request */
        }
        if (p < 0) return -1;
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int run_rate(int port, int rate, int secs, int nconns, const char *key, const char *model)
{
    char req[1024];
    size_t rl = make_request(req, sizeof req, key, model, false);
    int ep = epoll_create1(0);
    conn *cs = calloc((size_t)nconns, sizeof *cs);
    for (int i = 0; i < nconns; i++) {
        cs[i].fd = dial(port);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    size_t total = (size_t)rate * (size_t)secs;
    int64_t *lat = calloc(total, sizeof *lat);
    size_t sent = 0, done = 0, errors = 0, backlog = 0;
    int64_t start = now_us(), interval = 1000000 / rate;
    while (done + errors < total) {
        int64_t now = now_us();
        /* send every request whose time has come, on an idle connection */
        while (sent < total && start + (int64_t)sent * interval <= now) {
            conn *idle = NULL;
            for (int i = 0; i < nconns && !idle; i++)
                if (cs[i].state == 0) idle = &cs[i];
            if (!idle) {
                backlog++;
                break;
            }
            idle->sched_us = start + (int64_t)sent * interval;
            idle->state = 1;
            if (write(idle->fd, req, rl) != (ssize_t)rl) errors++, idle->state = 0;
            sent++;
        }
        /* sleep exactly until the next scheduled send (µs precision), or an event */
        int64_t next = start + (int64_t)sent * interval - now_us();
        struct timespec ts = {0, next > 0 ? (long)next * 1000 : 0};
        struct pollfd pfd = {.fd = ep, .events = POLLIN};
        if (sent < total && next > 0) ppoll(&pfd, 1, &ts, NULL);
        else if (sent >= total) ppoll(&pfd, 1, &(struct timespec){0, 1000000}, NULL);
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, 0);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            int r = read_conn(c);
            if (r == 1) {
                lat[done++] = now_us() - c->sched_us;
                count_status(c->status);
                c->state = 0;
            }
            if (r < 0 || (r == 1 && c->close_after)) {
                if (r < 0) errors++;
                close(c->fd);
                c->fd = dial(port);
                c->len = 0, c->in_body = false, c->state = 0, c->close_after = false, c->until_close = false;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            }
        }
        if (now - start > (int64_t)(secs + 10) * 1000000) break;
    }
    qsort(lat, done, sizeof *lat, cmp_i64);
#define PCT(p) (done ? lat[(size_t)((double)(done - 1) * (p))] : 0)
    size_t missing = total - QG_MIN(total, done + errors); /* never answered before the deadline */
    printf("mode=rate rate=%d requests=%zu errors=%zu missing=%zu p50_us=%lld p90_us=%lld p99_us=%lld max_us=%lld",
           rate, done, errors, missing, (long long)PCT(0.50), (long long)PCT(0.90), (long long)PCT(0.99),
           (long long)PCT(1.0));
    print_statuses();
    putchar('\n');
    return errors || missing || non2xx ? 1 : 0;
}

static long rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) v = atol(line + 6);
    if (f) fclose(f);
    return v;
}

static int run_streams(int port, int n, const char *key, const char *model, double sample_after, int pid)
{
    char req[1024];
    size_t rl = make_request(req, sizeof req, key, model, true);
    int ep = epoll_create1(0);
    conn *cs = calloc((size_t)n, sizeof *cs);
    long rss_before = pid ? rss_kib(pid) : -1, rss_during = -1;
    int64_t start = now_us();
    for (int i = 0; i < n; i++) {
        cs[i].fd = dial(port);
        cs[i].state = 1; /* waiting for its one response */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
        if (write(cs[i].fd, req, rl) != (ssize_t)rl) cs[i].state = 3;
    }
    int open_ = n, complete = 0, incomplete = 0;
    long events = 0;
    while (open_ > 0) {
        struct epoll_event evs[256];
        int k = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < k; i++) {
            conn *c = evs[i].data.ptr;
            if (c->state >= 2) continue;
            int r = read_conn(c);
            if (r == 0) continue;
            if (c->status) count_status(c->status); /* a head arrived: count it, complete or not */
            if (r < 0) incomplete++; /* the connection ended before the end of the response */
            else complete++;
            c->state = 2;
            events += c->events;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            open_--;
        }
        if (pid && rss_during < 0 && now_us() - start > (int64_t)(sample_after * 1e6)) rss_during = rss_kib(pid);
        if (now_us() - start > 600 * 1000000LL) break;
    }
    incomplete += open_;
    printf("mode=streams streams=%d complete=%d incomplete=%d events=%ld rss_before_kib=%ld rss_during_kib=%ld seconds=%.2f",
           n, complete, incomplete, events, rss_before, rss_during, (double)(now_us() - start) / 1e6);
    print_statuses();
    putchar('\n');
    return incomplete || non2xx ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: qgload rate|streams [-p PORT] [-r RATE] [-d SECS] [-c CONNS] [-n STREAMS] [-k KEY] [-m MODEL] [-s SECS] [-P PID]\n", stderr);
        return 2;
    }
    const char *mode = argv[1], *key = "bench-key-000001", *model = "bench-model";
    int port = 8080, rate = 1000, secs = 10, conns = 64, streams = 1000, pid = 0;
    double sample = 3;
    int o;
    optind = 2;
    while ((o = getopt(argc, argv, "p:r:d:c:n:k:m:s:P:")) != -1) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 'r': rate = atoi(optarg); break;
        case 'd': secs = atoi(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'n': streams = atoi(optarg); break;
        case 'k': key = optarg; break;
        case 'm': model = optarg; break;
        case 's': sample = atof(optarg); break;
        case 'P': pid = atoi(optarg); break;
        default: return 2;
        }
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (!strcmp(mode, "rate")) return run_rate(port, rate, secs, conns, key, model);
    if (!strcmp(mode, "streams")) return run_streams(port, streams, key, model, sample, pid);
    fprintf(stderr, "qgload: unknown mode %s\n", mode);
    return 2;
}
