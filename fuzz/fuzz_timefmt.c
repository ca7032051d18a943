/*
 * fuzz_timefmt.c — every parser in timefmt.h on arbitrary bytes, plus round trips: a parsed
 * RFC 3339 or HTTP-date instant formats and re-parses to itself (to the second), a formatted
 * instant (taken from the input's first 8 bytes) parses back, and results respect their
 * documented ranges (delays >= 0, failures leave the output untouched).
 */
#include "timefmt.h"

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

#define NOW 1795341600000LL
#define UNTOUCHED 0x5a5a5a5a5aLL

static int64_t floor_to_second(int64_t ms) { return ms - ((ms % 1000) + 1000) % 1000; }

static void round_trip(int64_t t)
{
    char out[40];
    int64_t back = UNTOUCHED;
    if (qg_format_rfc3339(t, out, sizeof out) > 0) {
        CHECK(qg_parse_rfc3339(qg_slice_of(out), &back) == 0 && back == floor_to_second(t));
        CHECK(qg_format_http_date(t, out, sizeof out) > 0);
        CHECK(qg_parse_http_date(qg_slice_of(out), &back) == 0 && back == floor_to_second(t));
    } else {
        CHECK(qg_format_http_date(t, out, sizeof out) < 0);
    }
}

static void check_untouched(int rc, int64_t v)
{
    if (rc < 0) CHECK(v == UNTOUCHED);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qg_slice s = {(const char *)data, size};
    int64_t v = UNTOUCHED;
    int rc = qg_parse_duration_ms(s, &v);
    check_untouched(rc, v);
    if (rc == 0) CHECK(v >= 0);

    uint64_t sz = 77;
    if (qg_parse_size(s, &sz) < 0) CHECK(sz == 77);

    v = UNTOUCHED;
    if ((rc = qg_parse_rfc3339(s, &v)) == 0) round_trip(v);
    check_untouched(rc, v);
    v = UNTOUCHED;
    if ((rc = qg_parse_http_date(s, &v)) == 0) round_trip(v);
    check_untouched(rc, v);

    int64_t nows[] = {NOW, 0, INT64_MAX - 5, INT64_MIN + 5};
    for (size_t i = 0; i < QG_ARRAY_LEN(nows); i++) {
        v = UNTOUCHED;
        rc = qg_parse_retry_after(s, nows[i], &v);
        check_untouched(rc, v);
        if (rc == 0) CHECK(v >= 0);
        for (int f = QG_RFMT_AUTO; f <= QG_RFMT_RFC3339; f++) {
            v = UNTOUCHED;
            check_untouched(qg_parse_reset_as((qg_reset_format)f, s, nows[i], &v), v);
        }
        v = UNTOUCHED;
        check_untouched(qg_parse_reset_value(s, nows[i], &v), v);
    }
    v = UNTOUCHED;
    rc = qg_parse_retry_after_ms(s, &v);
    check_untouched(rc, v);
    if (rc == 0) CHECK(v >= 0);

    if (size >= 8) {
        int64_t t;
        memcpy(&t, data, 8);
        round_trip(t);
        round_trip(t % 253402300800000LL); /* mostly inside the formattable range */
    }
    return 0;
}
