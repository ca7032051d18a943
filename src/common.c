/*
 * common.c — slices, bounded buffers, clocks and the logger.  See common.h.
 */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

int qg_log_level = QG_LOG_INFO;

qg_slice qg_slice_trim(qg_slice s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t')) s.p++, s.n--;
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t')) s.n--;
    return s;
}

char *qg_slice_dup(qg_slice s)
{
    char *r = qg_xmalloc(s.n + 1);
    if (s.n) memcpy(r, s.p, s.n);
    r[s.n] = 0;
    return r;
}

void qg_buf_init(qg_buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

/* The capacity to grow to for `extra` more bytes: doubling, never past max.  0: none needed;
 * SIZE_MAX: past max. */
static size_t grow_to(const qg_buf *b, size_t extra)
{
    size_t max = b->max ? b->max : SIZE_MAX;
    if (extra > max - b->len) return SIZE_MAX;
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    return cap > max ? max : cap;
}

int qg_buf_reserve(qg_buf *b, size_t extra)
{
    size_t cap = grow_to(b, extra);
    if (cap == SIZE_MAX) return -1;
    if (cap) {
        b->data = qg_xrealloc(b->data, cap);
        b->cap = cap;
    }
    return 0;
}

int qg_buf_try_reserve(qg_buf *b, size_t extra)
{
    size_t cap = grow_to(b, extra);
    if (cap == SIZE_MAX) return QG_BUF_TOO_LARGE;
    if (cap) {
        char *p = realloc(b->data, cap);
        if (!p) return QG_BUF_NO_MEMORY;
        b->data = p;
        b->cap = cap;
    }
    return 0;
}

int qg_buf_append(qg_buf *b, const void *p, size_t n)
{
    if (n == 0) return 0;
    if (qg_buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int qg_buf_appendf(qg_buf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof small) return qg_buf_append(b, small, (size_t)n);
    if (qg_buf_reserve(b, (size_t)n + 1) < 0) return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int qg_buf_puts(qg_buf *b, const char *s) { return qg_buf_append(b, s, strlen(s)); }

size_t qg_fmt_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;
    do tmp[--i] = (char)('0' + v % 10);
    while (v /= 10);
    memcpy(out, tmp + i, sizeof tmp - i);
    return sizeof tmp - i;
}

int qg_buf_put_int(qg_buf *b, int64_t v)
{
    char tmp[21];
    size_t n = v < 0 ? 1 : 0;
    tmp[0] = '-';
    n += qg_fmt_u64(tmp + n, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
    return qg_buf_append(b, tmp, n);
}

void qg_buf_json_str(qg_buf *b, const char *s)
{
    if (!s) {
        qg_buf_append(b, "null", 4);
        return;
    }
    qg_buf_append(b, "\"", 1);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') qg_buf_appendf(b, "\\%c", ch);
        else if (ch < 0x20) qg_buf_appendf(b, "\\u%04x", ch);
        else qg_buf_append(b, s, 1);
    }
    qg_buf_append(b, "\"", 1);
}

void qg_strlcpy(char *dst, const char *src, size_t cap)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;
    if (n) memcpy(dst, src, n);
    dst[n] = 0;
}

void qg_buf_consume(qg_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void qg_buf_reset(qg_buf *b) { b->len = 0; }

void qg_buf_free(qg_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int64_t qg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t qg_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t qg_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void qg_log(int level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < qg_log_level) return;
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int off = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    off += snprintf(line + off, sizeof line - (size_t)off, ".%03ldZ %s ", ts.tv_nsec / 1000000,
                    names[level & 3]);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + off, sizeof line - (size_t)off - 1, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    size_t len = (size_t)off + QG_MIN((size_t)n, sizeof line - (size_t)off - 2);
    line[len++] = '\n';
    /* One write(2) per line so lines from several threads never interleave. */
    fwrite(line, 1, len, stderr);
}

void *qg_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("quotagate: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *qg_xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) {
        fputs("quotagate: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *qg_xrealloc(void *p, size_t n)
{
    void *r = realloc(p, n ? n : 1);
    if (!r) {
        fputs("quotagate: out of memory\n", stderr);
        abort();
    }
    return r;
}

char *qg_xstrdup(const char *s) { return qg_slice_dup(qg_slice_of(s)); }
