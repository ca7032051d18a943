/*
 * common.h — small shared vocabulary: slices, bounded buffers, clocks, logging.
 *
 * Slices (qg_slice) are (pointer, length) views into someone else's memory; they never
 * own what they point at and are valid only as long as the buffer they view.  Bounded
 * buffers (qg_buf) own their bytes and refuse to grow past `max`: every buffer fed by
 * the network is a qg_buf with a limit, so a hostile peer gets an error, not our RAM.
 */
#ifndef QG_COMMON_H
#define QG_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define QG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define QG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QG_MAX(a, b) ((a) > (b) ? (a) : (b))
#define QG_UNUSED(x) ((void)(x))

/* The value of one hexadecimal digit, or -1. */
static inline int qg_hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

typedef struct {
    const char *p;
    size_t n;
} qg_slice;

#define QG_SLICE_LIT(s) ((qg_slice){(s), sizeof(s) - 1})
static inline qg_slice qg_slice_of(const char *s) { return (qg_slice){s, s ? strlen(s) : 0}; }
/* Comparisons are inline so that, against a literal, strlen folds to a constant and the
 * length test (which rejects most header names) costs one compare. */
static inline bool qg_slices_ieq(qg_slice a, qg_slice b) /* ASCII case-insensitive */
{
    return a.n == b.n && strncasecmp(a.p, b.p, a.n) == 0;
}
static inline bool qg_slice_eq(qg_slice a, const char *lit)
{
    size_t n = strlen(lit);
    return a.n == n && memcmp(a.p, lit, n) == 0;
}
static inline bool qg_slice_ieq(qg_slice a, const char *lit) { return qg_slices_ieq(a, (qg_slice){lit, strlen(lit)}); }
qg_slice qg_slice_trim(qg_slice s);             /* strip spaces and tabs both ends */
/* Copies a slice into a fresh NUL-terminated heap string (caller frees). */
char *qg_slice_dup(qg_slice s);

/* A growable byte buffer with a hard ceiling.  data may be NULL while cap == 0. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
    size_t max; /* 0 means SIZE_MAX: only for buffers we fill ourselves */
} qg_buf;

void qg_buf_init(qg_buf *b, size_t max);
/* Ensures room for `extra` more bytes; returns -1 (and changes nothing) past max. */
int qg_buf_reserve(qg_buf *b, size_t extra);
/* The same for buffers fed by outside input: an allocation failure is QG_BUF_NO_MEMORY
 * (the caller answers with an error) instead of abort(). */
enum { QG_BUF_TOO_LARGE = -1, QG_BUF_NO_MEMORY = -2 };
int qg_buf_try_reserve(qg_buf *b, size_t extra);
int qg_buf_append(qg_buf *b, const void *p, size_t n);
int qg_buf_appendf(qg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (memmove of the rest). */
void qg_buf_consume(qg_buf *b, size_t n);
/* Appends a NUL-terminated string / a decimal integer (no printf on hot paths). */
int qg_buf_puts(qg_buf *b, const char *s);
int qg_buf_put_int(qg_buf *b, int64_t v);
/* Writes v in decimal to out (room for 20 digits; no NUL); returns the length. */
size_t qg_fmt_u64(char *out, uint64_t v);
/* A JSON string literal of s (quotes and backslashes escaped, controls as \u00XX); NULL: null. */
void qg_buf_json_str(qg_buf *b, const char *s);
/* Copies src into dst[cap] (truncating, always NUL-terminated). */
void qg_strlcpy(char *dst, const char *src, size_t cap);
void qg_buf_reset(qg_buf *b); /* len = 0, keeps memory */
void qg_buf_free(qg_buf *b);  /* releases memory, keeps max */

/* Clocks.  Quota and time-format code takes `now` as a parameter instead of calling these. */
int64_t qg_now_ms(void);  /* wall clock, epoch milliseconds */
int64_t qg_mono_ms(void); /* monotonic milliseconds, for timeouts and latencies */
int64_t qg_mono_us(void);

/* Logging to stderr, one line per call.  Never pass secrets: the helpers below mask them. */
enum { QG_LOG_DEBUG, QG_LOG_INFO, QG_LOG_WARN, QG_LOG_ERROR };
extern int qg_log_level;
void qg_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define qg_info(...) qg_log(QG_LOG_INFO, __VA_ARGS__)
#define qg_warn(...) qg_log(QG_LOG_WARN, __VA_ARGS__)
#define qg_error(...) qg_log(QG_LOG_ERROR, __VA_ARGS__)
#define qg_debug(...)                                                                      \
    do {                                                                                   \
        if (qg_log_level <= QG_LOG_DEBUG) qg_log(QG_LOG_DEBUG, __VA_ARGS__);                \
    } while (0)

void *qg_xmalloc(size_t n);  /* aborts only on allocator failure, never on input */
void *qg_xcalloc(size_t n, size_t sz);
void *qg_xrealloc(void *p, size_t n);
char *qg_xstrdup(const char *s);

#endif
