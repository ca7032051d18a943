/*
 * http1.c — HTTP/1.1 head parsing and chunked decoding.  See http1.h for the contract.
 */
#include "http1.h"

#include <stdio.h>
#include <strings.h>

/* RFC 9110 §5.6.2 tchar */
static const uint8_t tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
    ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static bool is_value_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

/* Finds the end of the head (after the empty line).  Returns its length or 0. */
static size_t find_head_end(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) return 0;
        const char *next = nl + 1;
        if (next < end && *next == '\n') return (size_t)(next + 1 - buf);
        if (next + 1 < end && next[0] == '\r' && next[1] == '\n') return (size_t)(next + 2 - buf);
        if (next + 1 >= end) return 0;
        p = next;
    }
    return 0;
}

/* Takes one line [p, eol) out of the head; returns the position after its terminator. */
static const char *next_line(const char *p, const char *end, qg_slice *line)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return NULL;
    const char *e = nl;
    if (e > p && e[-1] == '\r') e--;
    *line = (qg_slice){p, (size_t)(e - p)};
    return nl + 1;
}

static int parse_version(qg_slice v, int *minor)
{
    if (v.n != 8 || memcmp(v.p, "HTTP/1.", 7) != 0) return -1;
    if (v.p[7] != '0' && v.p[7] != '1') return -1;
    *minor = v.p[7] - '0';
    return 0;
}

bool qg_http_list_has(qg_slice list, qg_slice token)
{
    const char *p = list.p, *end = list.p + list.n;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        qg_slice item = qg_slice_trim((qg_slice){p, (size_t)((comma ? comma : end) - p)});
        if (qg_slices_ieq(item, token)) return true;
        p = comma ? comma + 1 : end;
    }
    return false;
}

/* Whether a Connection value names a header (anything but close and keep-alive). */
static bool names_headers(qg_slice list)
{
    const char *p = list.p, *end = list.p + list.n;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        qg_slice item = qg_slice_trim((qg_slice){p, (size_t)((comma ? comma : end) - p)});
        if (item.n && !qg_slice_ieq(item, "close") && !qg_slice_ieq(item, "keep-alive")) return true;
        p = comma ? comma + 1 : end;
    }
    return false;
}

static int parse_content_length(qg_slice v, int64_t *out)
{
    if (v.n == 0 || v.n > 18) return -1;
    int64_t n = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') return -1;
        n = n * 10 + (v.p[i] - '0');
    }
    *out = n;
    return 0;
}

/* Parses header lines and derives framing.  p points after the start line. */
static int parse_headers(const char *p, const char *end, qg_http_msg *m)
{
    bool saw_te = false;
    m->n_headers = 0;
    m->content_length = -1;
    m->chunked = false;
    m->expect_continue = false;
    m->connection_names = false;
    bool conn_close = false, conn_keep = false;
    for (;;) {
        qg_slice line;
        p = next_line(p, end, &line);
        if (!p) return QG_HTTP_ERROR;
        if (line.n == 0) break;
        if (line.p[0] == ' ' || line.p[0] == '\t') return QG_HTTP_ERROR; /* obs-fold */
        size_t i = 0;
        while (i < line.n && tchar[(unsigned char)line.p[i]]) i++;
        if (i == 0 || i >= line.n || line.p[i] != ':') return QG_HTTP_ERROR;
        qg_slice name = {line.p, i};
        qg_slice value = qg_slice_trim((qg_slice){line.p + i + 1, line.n - i - 1});
        for (size_t k = 0; k < value.n; k++)
            if (!is_value_char((unsigned char)value.p[k])) return QG_HTTP_ERROR;
        if (m->n_headers == QG_HTTP_MAX_HEADERS) return QG_HTTP_TOO_MANY;
        m->headers[m->n_headers++] = (qg_header){name, value};

        if (qg_slice_ieq(name, "content-length")) {
            int64_t cl;
            if (parse_content_length(value, &cl) < 0) return QG_HTTP_ERROR;
            if (m->content_length >= 0 && m->content_length != cl) return QG_HTTP_ERROR;
            m->content_length = cl;
        } else if (qg_slice_ieq(name, "transfer-encoding")) {
            /* Only a single, final "chunked" is accepted. */
            if (saw_te || !qg_slice_ieq(value, "chunked")) return QG_HTTP_ERROR;
            saw_te = true;
            m->chunked = true;
        } else if (qg_slice_ieq(name, "connection")) {
            if (qg_http_list_has(value, QG_SLICE_LIT("close"))) conn_close = true;
            if (qg_http_list_has(value, QG_SLICE_LIT("keep-alive"))) conn_keep = true;
            if (names_headers(value)) m->connection_names = true;
        } else if (qg_slice_ieq(name, "expect")) {
            if (qg_slice_ieq(value, "100-continue")) m->expect_continue = true;
        }
    }
    if (m->chunked && m->content_length >= 0) return QG_HTTP_ERROR;
    m->keep_alive = m->minor_version == 1 ? !conn_close : (conn_keep && !conn_close);
    return 0;
}

int qg_http_parse_request(const char *buf, size_t len, size_t max_head, qg_http_msg *m)
{
    size_t head = find_head_end(buf, len);
    if (!head) return len > max_head ? QG_HTTP_TOO_LARGE : QG_HTTP_INCOMPLETE;
    if (head > max_head) return QG_HTTP_TOO_LARGE;
    const char *p = buf, *end = buf + head;
    /* RFC 9112 §2.2: ignore at least one empty line before the request line */
    if (p < end && *p == '\n') p++;
    else if (p + 1 < end && p[0] == '\r' && p[1] == '\n') p += 2;
    qg_slice line;
    p = next_line(p, end, &line);
    if (!p) return QG_HTTP_ERROR;
    const char *sp1 = memchr(line.p, ' ', line.n);
    if (!sp1) return QG_HTTP_ERROR;
    m->method = (qg_slice){line.p, (size_t)(sp1 - line.p)};
    for (size_t i = 0; i < m->method.n; i++)
        if (!tchar[(unsigned char)m->method.p[i]]) return QG_HTTP_ERROR;
    const char *rest = sp1 + 1, *lend = line.p + line.n;
    const char *sp2 = memchr(rest, ' ', (size_t)(lend - rest));
    if (!sp2 || m->method.n == 0) return QG_HTTP_ERROR;
    m->target = (qg_slice){rest, (size_t)(sp2 - rest)};
    if (m->target.n == 0) return QG_HTTP_ERROR;
    for (size_t i = 0; i < m->target.n; i++) {
        unsigned char c = (unsigned char)m->target.p[i];
        if (c <= 0x20 || c == 0x7f) return QG_HTTP_ERROR;
    }
    if (parse_version((qg_slice){sp2 + 1, (size_t)(lend - sp2 - 1)}, &m->minor_version) < 0)
        return QG_HTTP_ERROR;
    m->status = 0;
    int rc = parse_headers(p, end, m);
    if (rc < 0) return rc;
    if (m->minor_version == 0 && m->chunked) return QG_HTTP_ERROR;
    m->head_len = head;
    return (int)head;
}

int qg_http_parse_response(const char *buf, size_t len, size_t max_head, qg_http_msg *m)
{
    size_t head = find_head_end(buf, len);
    if (!head) return len > max_head ? QG_HTTP_TOO_LARGE : QG_HTTP_INCOMPLETE;
    if (head > max_head) return QG_HTTP_TOO_LARGE;
    const char *end = buf + head;
    qg_slice line;
    const char *p = next_line(buf, end, &line);
    if (!p || line.n < 12) return QG_HTTP_ERROR;
    if (parse_version((qg_slice){line.p, 8}, &m->minor_version) < 0 || line.p[8] != ' ') return QG_HTTP_ERROR;
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (line.p[i] < '0' || line.p[i] > '9') return QG_HTTP_ERROR;
        st = st * 10 + (line.p[i] - '0');
    }
    if (st < 100 || (line.n > 12 && line.p[12] != ' ')) return QG_HTTP_ERROR;
    for (size_t i = 13; i < line.n; i++) /* reason-phrase: HTAB, SP, VCHAR, obs-text */
        if (!is_value_char((unsigned char)line.p[i])) return QG_HTTP_ERROR;
    m->status = st;
    m->method = m->target = (qg_slice){NULL, 0};
    int rc = parse_headers(p, end, m);
    if (rc < 0) return rc;
    m->head_len = head;
    return (int)head;
}

qg_slice qg_http_header(const qg_http_msg *m, const char *name)
{
    for (size_t i = 0; i < m->n_headers; i++)
        if (qg_slice_ieq(m->headers[i].name, name)) return m->headers[i].value;
    return (qg_slice){NULL, 0};
}

qg_slice qg_http_bearer(const qg_http_msg *m)
{
    qg_slice a = qg_http_header(m, "authorization");
    if (a.n > 7 && strncasecmp(a.p, "Bearer ", 7) == 0) return qg_slice_trim((qg_slice){a.p + 7, a.n - 7});
    return (qg_slice){NULL, 0};
}

bool qg_http_connection_names(const qg_http_msg *m, qg_slice name)
{
    if (!m->connection_names) return false;
    for (size_t i = 0; i < m->n_headers; i++)
        if (qg_slice_ieq(m->headers[i].name, "connection") && qg_http_list_has(m->headers[i].value, name)) return true;
    return false;
}

qg_slice qg_http_api_key(const qg_http_msg *m)
{
    qg_slice k = qg_http_header(m, "x-api-key");
    return k.p && k.n ? k : qg_http_bearer(m);
}


bool qg_http_is_hop_header(qg_slice n)
{
    /* Dispatch on length: most forwarded headers match no length here and cost one switch. */
    switch (n.n) {
    case 2: return qg_slice_ieq(n, "te");
    case 4: return qg_slice_ieq(n, "host");
    case 7: return qg_slice_ieq(n, "trailer") || qg_slice_ieq(n, "upgrade");
    case 10: return qg_slice_ieq(n, "connection") || qg_slice_ieq(n, "keep-alive");
    case 14: return qg_slice_ieq(n, "content-length");
    case 16: return qg_slice_ieq(n, "proxy-connection");
    case 17: return qg_slice_ieq(n, "transfer-encoding");
    case 18: return qg_slice_ieq(n, "proxy-authenticate");
    case 19: return qg_slice_ieq(n, "proxy-authorization");
    default: return false;
    }
}

qg_body_kind qg_http_response_body_kind(const qg_http_msg *m, bool head_request)
{
    if (head_request || (m->status >= 100 && m->status < 200) || m->status == 204 || m->status == 304)
        return QG_BODY_NONE;
    if (m->chunked) return QG_BODY_CHUNKED;
    if (m->content_length >= 0) return m->content_length ? QG_BODY_LENGTH : QG_BODY_NONE;
    return QG_BODY_UNTIL_CLOSE;
}

/* ---- chunked ---- */

enum { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_TRAILER_LF, CH_DONE };
_Static_assert(CH_DONE == 8, "qg_chunked_done in http1.h relies on CH_DONE == 8");
#define QG_CHUNK_LINE_MAX 4096

void qg_chunked_init(qg_chunked *c)
{
    c->state = CH_SIZE;
    c->chunk_left = 0;
    c->line_len = 0;
}

int qg_chunked_decode(qg_chunked *c, char *buf, size_t len, size_t *data_len, size_t *rest_off)
{
    size_t in = 0, out = 0;
    while (in < len) {
        char ch = buf[in];
        switch (c->state) {
        case CH_SIZE: {
            int h = qg_hex_digit(ch);
            if (h >= 0) {
                if (c->line_len >= 15) return QG_CHUNKED_ERROR; /* > 2^60 */
                c->chunk_left = c->chunk_left * 16 + (uint64_t)h;
                c->line_len++;
                in++;
                break;
            }
            if (c->line_len == 0) return QG_CHUNKED_ERROR;
            if (ch == ';' || ch == ' ' || ch == '\t') c->state = CH_EXT;
            else if (ch == '\r') c->state = CH_SIZE_LF;
            else if (ch == '\n') goto size_done;
            else return QG_CHUNKED_ERROR;
            in++;
            break;
        }
        case CH_EXT:
            if (++c->line_len > QG_CHUNK_LINE_MAX) return QG_CHUNKED_ERROR;
            if (ch == '\r') c->state = CH_SIZE_LF;
            else if (ch == '\n') goto size_done;
            else if (ch != '\t' && (unsigned char)ch < 0x20) return QG_CHUNKED_ERROR;
            in++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n') return QG_CHUNKED_ERROR;
        size_done:
            in++;
            c->line_len = 0;
            c->state = c->chunk_left ? CH_DATA : CH_TRAILER;
            break;
        case CH_DATA: {
            size_t take = (size_t)QG_MIN((uint64_t)(len - in), c->chunk_left);
            if (out != in) memmove(buf + out, buf + in, take);
            out += take;
            in += take;
            c->chunk_left -= take;
            if (!c->chunk_left) c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (ch == '\r') c->state = CH_DATA_LF;
            else if (ch == '\n') c->state = CH_SIZE;
            else return QG_CHUNKED_ERROR;
            in++;
            break;
        case CH_DATA_LF:
            if (ch != '\n') return QG_CHUNKED_ERROR;
            c->state = CH_SIZE;
            in++;
            break;
        case CH_TRAILER:
            /* trailer section: lines until an empty one; content ignored */
            if (ch == '\r') {
                c->state = CH_TRAILER_LF;
            } else if (ch == '\n') {
                if (c->line_len == 0) goto done;
                c->line_len = 0;
            } else if (++c->line_len > QG_CHUNK_LINE_MAX) {
                return QG_CHUNKED_ERROR;
            }
            in++;
            break;
        case CH_TRAILER_LF:
            if (ch != '\n') return QG_CHUNKED_ERROR;
            if (c->line_len == 0) goto done;
            c->line_len = 0;
            c->state = CH_TRAILER;
            in++;
            break;
        default:
            return QG_CHUNKED_ERROR;
        }
    }
    *data_len = out;
    *rest_off = len;
    return QG_CHUNKED_MORE;
done:
    c->state = CH_DONE;
    *data_len = out;
    *rest_off = in + 1;
    return QG_CHUNKED_DONE;
}

size_t qg_chunk_header(char *out, size_t n) { return (size_t)sprintf(out, "%zx\r\n", n); }

const char *qg_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 529: return "Overloaded";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}
