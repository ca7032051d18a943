/*
 * jscan.h — a validating JSON scanner that reports where named members of the top-level
 * object sit in the text, without building a tree.
 *
 * Why not a tree parser (cJSON): the gateway must forward request bodies byte for byte (unknown
 * fields, number spellings like 1e400 or 12345678901234567890, key order all preserved)
 * and only splice in `stream_options.include_usage`.  A tree parser would lose the
 * spellings on re-serialisation; a span scanner lets the proxy send the original bytes
 * around a small insertion, with no copy of the body.  usage.c reads usage counts with it
 * too: a dozen members' spans cost a sixth of what building and freeing a tree does.
 *
 * Validation follows RFC 8259 (strings with escapes and UTF-8 byte structure, numbers,
 * literals), with a nesting limit.  Pure; no allocation.
 */
#ifndef QG_JSCAN_H
#define QG_JSCAN_H

#include "common.h"

#define QG_JSCAN_MAX_DEPTH 128

typedef enum { QG_JSON_NONE = 0, QG_JSON_OBJECT, QG_JSON_ARRAY, QG_JSON_STRING, QG_JSON_NUMBER, QG_JSON_TRUE,
               QG_JSON_FALSE, QG_JSON_NULL } qg_json_type;

typedef struct {
    qg_json_type type;  /* NONE when the member is absent */
    size_t off;         /* value's first byte */
    size_t len;         /* value's length in bytes */
} qg_json_span;

/* Validates `text` as one JSON object (surrounding whitespace allowed) and, for each name in
 * wanted[0..n), fills found[i] with the span of that top-level member's value.  Member
 * names are compared after decoding escapes; a wanted member that appears twice is an
 * error (parsers disagree on which duplicate wins).  *open_off receives the offset of the object's '{'.
 * Returns 0, or -1 with a short reason in *why (static string). */
int qg_jscan_object(const char *text, size_t n, const char *const *wanted, size_t n_wanted,
                    qg_json_span *found, size_t *open_off, const char **why);

/* Decodes a JSON string value span (with quotes) into out (NUL-terminated).  Returns the
 * decoded length, or -1 if it does not fit or uses escapes outside ASCII. */
int qg_json_string_value(const char *text, qg_json_span s, char *out, size_t outlen);

/* Parses a JSON number span as int64 (no fraction/exponent); -1 if it is not one. */
int qg_json_int_value(const char *text, qg_json_span s, int64_t *out);

#endif
