/*
 * dialect.h — the two client/provider API dialects and their error shapes.
 */
#ifndef QG_DIALECT_H
#define QG_DIALECT_H

#include "common.h"

typedef enum { QG_DIALECT_OPENAI = 0, QG_DIALECT_ANTHROPIC = 1 } qg_dialect;

const char *qg_dialect_name(qg_dialect d);
int qg_dialect_parse(qg_slice s, qg_dialect *out);

/* Appends an error body in the dialect's own shape:
 *   OpenAI    {"error":{"message":..,"type":..,"code":..,"param":null}}
 *   Anthropic {"type":"error","error":{"type":..,"message":..}}
 * `code` is the gateway's code (SPEC §3), e.g. "invalid_api_key"; the message is JSON-escaped. */
int qg_dialect_error_body(qg_buf *out, qg_dialect d, int status, const char *code, const char *message);

/* JSON string escaping into out (without surrounding quotes). */
int qg_json_escape(qg_buf *out, const char *s, size_t n);

#endif
