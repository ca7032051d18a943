/*
 * timefmt.h — pure parsers and formatters for the time and size values that arrive in
 * configuration and in provider headers: Go-style durations ("6m0s", "1m30.5s", "20ms"),
 * sizes ("32MiB"), Retry-After (seconds or HTTP-date), rate-limit reset values in every
 * shape providers use (durations, epoch s/ms, RFC 3339, ...), and RFC 3339 / HTTP-date
 * output.  No function here reads a clock: `now_ms` is always a parameter, so tests pin
 * time exactly (see ../shared/fixtures/providers/reset-values.tsv and retry-after.tsv).
 * All functions return 0 on success and -1 on input they do not accept; they never
 * touch *out on failure.
 */
#ifndef QG_TIMEFMT_H
#define QG_TIMEFMT_H

#include "common.h"

/* "250ms", "60s", "5m", "1h30m", "1m30.5s", "2m59.56s", "1.5h", "7d", "0"; a bare number
 * means seconds.  Result in milliseconds (fractions below 1 ms round to nearest). */
int qg_parse_duration_ms(qg_slice s, int64_t *out_ms);

/* "32MiB", "64KiB", "1GiB", "512KB" (KB/MB/GB are treated as powers of 1000), "1024", "4k"
 * (k/m/g powers of 1024).  Rejects negatives and overflow. */
int qg_parse_size(qg_slice s, uint64_t *out);

/* RFC 3339 / ISO 8601 timestamp ("2026-11-22T10:00:00Z", fractions, "+08:00" offsets,
 * lower-case 't'/'z', a space instead of 'T', and a date alone meaning 00:00 UTC). */
int qg_parse_rfc3339(qg_slice s, int64_t *epoch_ms);

/* IMF-fixdate, RFC 850 and asctime forms of HTTP-date (RFC 9110 §5.6.7). */
int qg_parse_http_date(qg_slice s, int64_t *epoch_ms);

/* Retry-After header value -> delay in ms from now (>= 0; a date in the past gives 0).
 * Accepts integer or decimal seconds and HTTP-date.  Garbage returns -1 (ignore it). */
int qg_parse_retry_after(qg_slice value, int64_t now_ms, int64_t *delay_ms);

/* `retry-after-ms` header value (decimal milliseconds, rounded up) -> delay in ms.  Callers
 * prefer it over `retry-after` when both parse; garbage or negatives return -1. */
int qg_parse_retry_after_ms(qg_slice value, int64_t *delay_ms);

/* A rate-limit reset value in any of the shapes of reset-values.tsv -> absolute epoch ms.
 * Guesses the shape: a date/time, an HTTP-date, a duration with units, or a bare number by
 * size (< 1e9 relative seconds, < 1e12 epoch seconds, else epoch ms). */
int qg_parse_reset_value(qg_slice v, int64_t now_ms, int64_t *epoch_ms);

/* The shapes of reset-values.tsv's first column, for callers that know which one a header
 * uses (the header name tells): "5" is 5 s as SECONDS but an error as a GO_DURATION. */
typedef enum {
    QG_RFMT_AUTO = 0,    /* qg_parse_reset_value's guess */
    QG_RFMT_GO_DURATION, /* "6m0s", "20ms", "1m30.5s": a unit on every number; "0" alone */
    QG_RFMT_PB_DURATION, /* protobuf JSON Duration: "23s", "57.238747106s" */
    QG_RFMT_SECONDS,     /* relative seconds: "21", "7.5" */
    QG_RFMT_EPOCH_S,     /* "1795354200", also JSON reals such as "1.7960832E9" */
    QG_RFMT_EPOCH_MS,    /* "1795392000000" */
    QG_RFMT_RFC3339,     /* RFC 3339, or a date alone (00:00 UTC) */
} qg_reset_format;

/* Like qg_parse_reset_value but with the shape given.  Fractions of a ms are truncated. */
int qg_parse_reset_as(qg_reset_format f, qg_slice v, int64_t now_ms, int64_t *epoch_ms);

/* Formatters write a NUL-terminated string into out (at least 40 bytes) and return its length. */
int qg_format_rfc3339(int64_t epoch_ms, char *out, size_t outlen);  /* 2026-11-22T10:00:00Z */
int qg_format_http_date(int64_t epoch_ms, char *out, size_t outlen); /* Sun, 22 Nov 2026 10:00:00 GMT */

/* Calendar arithmetic (proleptic Gregorian, UTC), shared by the parsers here, policy
 * windows and error classification: days since 1970-01-01 of a civil date, and back. */
int64_t qg_days_from_civil(int64_t y, int m, int d);
void qg_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
int qg_days_in_month(int64_t y, int m);

/* JSON members for an instant: ,"NAME":"<RFC 3339>","NAME_ms":<ms>, or both null when ms <= 0. */
void qg_buf_json_time(qg_buf *b, const char *name, int64_t ms);

#endif
