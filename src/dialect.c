/*
 * dialect.c — dialect names and error bodies in each dialect's own shape (SPEC §3).
 */
#include "dialect.h"

#include <stdio.h>

const char *qg_dialect_name(qg_dialect d) { return d == QG_DIALECT_ANTHROPIC ? "anthropic" : "openai"; }

int qg_dialect_parse(qg_slice s, qg_dialect *out)
{
    if (qg_slice_eq(s, "openai")) *out = QG_DIALECT_OPENAI;
    else if (qg_slice_eq(s, "anthropic")) *out = QG_DIALECT_ANTHROPIC;
    else return -1;
    return 0;
}

int qg_json_escape(qg_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (qg_buf_append(out, s + start, i - start) < 0) return -1;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t elen = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            elen = 6;
        }
        if (qg_buf_append(out, esc, elen) < 0) return -1;
        start = i + 1;
    }
    return qg_buf_append(out, s + start, n - start);
}

/* Anthropic's error types for our statuses (docs.anthropic.com "Errors"). */
static const char *anthropic_error_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    case 529: return "overloaded_error";
    default: return "api_error";
    }
}

/* OpenAI's `type` field for our statuses. */
static const char *openai_error_type(int status)
{
    switch (status) {
    case 400: case 404: case 413: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 429: return "rate_limit_error";
    default: return "api_error";
    }
}

int qg_dialect_error_body(qg_buf *out, qg_dialect d, int status, const char *code, const char *message)
{
    int rc = 0;
    if (d == QG_DIALECT_ANTHROPIC) {
        rc |= qg_buf_appendf(out, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"code\":\"%s\",\"message\":\"",
                             anthropic_error_type(status), code);
        rc |= qg_json_escape(out, message, strlen(message));
        rc |= qg_buf_append(out, "\"}}", 3);
    } else {
        rc |= qg_buf_append(out, "{\"error\":{\"message\":\"", 21);
        rc |= qg_json_escape(out, message, strlen(message));
        rc |= qg_buf_appendf(out, "\",\"type\":\"%s\",\"code\":\"%s\",\"param\":null}}", openai_error_type(status), code);
    }
    return rc ? -1 : 0;
}
