/*
 * sse.c — incremental text/event-stream block splitter.  See sse.h for the contract.
 *
 * Why it is shaped like this: the proxy forwards upstream events as they arrive and must see
 * each one whole (to drop the injected usage chunk, to read usage, to notice errors), yet
 * must not copy a streamed body it is only passing through.  So the unit of work is a
 * *block*: the bytes from just after the previous blank line up to and including the next
 * blank line.  Block boundaries are a pure function of the bytes, never of how they were
 * split into feeds: feeding a stream whole, byte by byte or in random pieces yields the same
 * blocks with the same raw bytes (the unit tests and fuzz/fuzz_sse.c check exactly that).
 *
 * Invariants:
 *   - `pending` always holds a prefix of exactly one block (possibly empty).  Every line
 *     terminator inside it ends a non-empty line, except possibly a final CR that ends the
 *     blank line: a *held* block.
 *   - A held block exists because a CR that is the last byte fed might be the first half of
 *     a CRLF.  Deciding "CR alone" there would leave the LF to open the next block as a
 *     spurious blank line; so the decision waits for the next byte (or qg_sse_finish).
 *     Only CR-terminated streams and CRLF splits landing exactly between CR and LF pay.
 *   - The line state at the end of `pending` is recomputed from its last two bytes, so there
 *     is no hidden scan state and each fed byte is scanned once (no rescans of pending).
 *   - Blocks wholly inside a fed buffer are reported as slices into it (no copy); only the
 *     tail of a buffer, or a block completed from pending, is reported from our memory.
 *   - No block longer than max_event is ever buffered or reported: QG_SSE_TOO_LARGE.
 *
 * Field parsing follows the WHATWG rules: `name: value` with one optional space after the
 * colon, a line without a colon is a field with an empty value, `:` starts a comment,
 * `data` lines are joined with '\n', `event` takes the last value, others are ignored.
 */
#include "sse.h"

static bool is_eol(char c) { return c == '\n' || c == '\r'; }

/* Offset of the first CR or LF in s[0..n), or n. */
static size_t find_eol(const char *s, size_t n)
{
    const char *lf = memchr(s, '\n', n);
    size_t lim = lf ? (size_t)(lf - s) : n;
    const char *cr = memchr(s, '\r', lim);
    return cr ? (size_t)(cr - s) : lim;
}

/* Where a scan resumes: at the start of a line or not, and whether an LF now would be the
 * second half of a CRLF rather than a line of its own. */
typedef struct {
    bool line_start;
    bool after_cr;
} line_state;

static const line_state BLOCK_START = {true, false};

/* Returns the length of the block that starts before q (in state st) and ends inside
 * q[0..n), i.e. the offset just past its blank line, or 0 if the end is not in q.  A blank
 * line ended by a CR that is the last byte of q counts as not yet ended (see the top). */
static size_t find_block_end(const char *q, size_t n, line_state st)
{
    size_t i = 0;
    if (st.after_cr && n && q[0] == '\n') i = 1;
    bool line_start = st.line_start;
    while (i < n) {
        if (line_start && is_eol(q[i])) { /* a blank line: the block ends here */
            if (q[i] == '\n') return i + 1;
            if (i + 1 == n) return 0;
            return q[i + 1] == '\n' ? i + 2 : i + 1;
        }
        i += find_eol(q + i, n - i);
        if (i == n) return 0;
        i += (q[i] == '\r' && i + 1 < n && q[i + 1] == '\n') ? 2 : 1;
        line_start = true;
    }
    return 0;
}

/* The line state after the bytes of a non-held pending prefix. */
static line_state state_after(const qg_buf *b)
{
    if (b->len == 0) return BLOCK_START;
    char last = b->data[b->len - 1];
    return (line_state){is_eol(last), last == '\r'};
}

/* True when pending is a complete block waiting only to learn whether its final CR has an LF. */
static bool is_held(const qg_buf *b)
{
    if (b->len == 0 || b->data[b->len - 1] != '\r') return false;
    return b->len == 1 || is_eol(b->data[b->len - 2]);
}

/* ---- one block's fields ---- */

/* Next line of a block: *line gets it without its terminator; returns the offset after. */
static size_t next_line(qg_slice raw, size_t pos, qg_slice *line)
{
    size_t t = find_eol(raw.p + pos, raw.n - pos);
    *line = (qg_slice){raw.p + pos, t};
    pos += t;
    if (pos < raw.n) pos += (raw.p[pos] == '\r' && pos + 1 < raw.n && raw.p[pos + 1] == '\n') ? 2 : 1;
    return pos;
}

/* Adds one data line: the first stays a slice of raw; from the second on they are joined in
 * scratch.  Returns -1 only if scratch refuses (it cannot: joined data is shorter than raw). */
static int add_data(qg_sse_parser *p, qg_sse_event *ev, int *ndata, qg_slice value)
{
    if (*ndata == 0) {
        ev->data = value;
    } else {
        if (*ndata == 1) {
            qg_buf_reset(&p->scratch);
            if (qg_buf_append(&p->scratch, ev->data.p, ev->data.n) < 0) return -1;
        }
        if (qg_buf_append(&p->scratch, "\n", 1) < 0 || qg_buf_append(&p->scratch, value.p, value.n) < 0) return -1;
        ev->data = (qg_slice){p->scratch.data, p->scratch.len};
    }
    (*ndata)++;
    ev->has_data = true;
    return 0;
}

static int parse_fields(qg_sse_parser *p, qg_sse_event *ev)
{
    int ndata = 0;
    size_t pos = 0;
    while (pos < ev->raw.n) {
        qg_slice line;
        bool first = pos == 0;
        pos = next_line(ev->raw, pos, &line);
        if (first && line.n >= 3 && memcmp(line.p, "\xef\xbb\xbf", 3) == 0) line.p += 3, line.n -= 3; /* BOM */
        if (line.n == 0 || line.p[0] == ':') continue; /* the blank line, or a comment */
        const char *colon = memchr(line.p, ':', line.n);
        qg_slice name = {line.p, colon ? (size_t)(colon - line.p) : line.n};
        qg_slice value = {line.p + line.n, 0};
        if (colon) {
            value = (qg_slice){colon + 1, line.n - name.n - 1};
            if (value.n && value.p[0] == ' ') value.p++, value.n--;
        }
        if (qg_slice_eq(name, "data")) {
            if (add_data(p, ev, &ndata, value) < 0) return QG_SSE_TOO_LARGE;
        } else if (qg_slice_eq(name, "event")) {
            ev->event = value;
        }
    }
    return QG_SSE_OK;
}

static int dispatch(qg_sse_parser *p, const char *raw, size_t n, qg_sse_cb cb, void *ud)
{
    if (n > p->max_event) return QG_SSE_TOO_LARGE;
    qg_sse_event ev = {.raw = {raw, n}, .event = {raw, 0}, .data = {raw, 0}, .has_data = false};
    int rc = parse_fields(p, &ev);
    return rc ? rc : cb(ud, &ev);
}

/* ---- feeding ---- */

static int fail(qg_sse_parser *p, int rc)
{
    qg_buf_reset(&p->pending);
    return rc;
}

/* Appends to pending; a block that outgrows max_event is an error, not a truncation. */
static int hold(qg_sse_parser *p, const char *buf, size_t n)
{
    return qg_buf_append(&p->pending, buf, n) < 0 ? fail(p, QG_SSE_TOO_LARGE) : QG_SSE_OK;
}

/* Reports the block completed in pending and empties pending. */
static int dispatch_pending(qg_sse_parser *p, qg_sse_cb cb, void *ud)
{
    int rc = dispatch(p, p->pending.data, p->pending.len, cb, ud);
    qg_buf_reset(&p->pending);
    return rc;
}

/* Completes the block in pending from the front of buf.  Returns bytes of buf used (or
 * all of n when the block is still incomplete), or a negative/callback code via *rc. */
static size_t resume_pending(qg_sse_parser *p, const char *buf, size_t n, qg_sse_cb cb, void *ud, int *rc)
{
    size_t used;
    if (is_held(&p->pending)) {
        used = buf[0] == '\n' ? 1 : 0;
    } else {
        used = find_block_end(buf, n, state_after(&p->pending));
        if (used == 0) {
            *rc = hold(p, buf, n);
            return n;
        }
    }
    *rc = hold(p, buf, used);
    if (*rc == QG_SSE_OK) *rc = dispatch_pending(p, cb, ud);
    return used;
}

int qg_sse_feed(qg_sse_parser *p, const char *buf, size_t n, qg_sse_cb cb, void *ud)
{
    size_t off = 0;
    int rc = QG_SSE_OK;
    if (n == 0) return QG_SSE_OK;
    if (p->pending.len) {
        off = resume_pending(p, buf, n, cb, ud, &rc);
        if (rc) return fail(p, rc);
    }
    while (off < n) {
        size_t len = find_block_end(buf + off, n - off, BLOCK_START);
        if (len == 0) return hold(p, buf + off, n - off);
        rc = dispatch(p, buf + off, len, cb, ud);
        if (rc) return fail(p, rc);
        off += len;
    }
    return QG_SSE_OK;
}

int qg_sse_finish(qg_sse_parser *p, qg_sse_cb cb, void *ud)
{
    if (!is_held(&p->pending)) return QG_SSE_OK;
    int rc = dispatch_pending(p, cb, ud);
    return rc ? fail(p, rc) : QG_SSE_OK;
}

qg_slice qg_sse_pending(const qg_sse_parser *p) { return (qg_slice){p->pending.data, p->pending.len}; }

void qg_sse_init(qg_sse_parser *p, size_t max_event)
{
    p->max_event = max_event ? max_event : QG_SSE_DEFAULT_MAX_EVENT;
    qg_buf_init(&p->pending, p->max_event);
    qg_buf_init(&p->scratch, p->max_event);
}

void qg_sse_free(qg_sse_parser *p)
{
    qg_buf_free(&p->pending);
    qg_buf_free(&p->scratch);
}
