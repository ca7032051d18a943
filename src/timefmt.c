/*
 * timefmt.c — time and size values from configuration and provider headers.  See timefmt.h.
 *
 * Why hand-written parsers: providers spell the same "when" in a dozen ways (Go durations,
 * protobuf durations, RFC 3339 with odd fractions and offsets, epoch s/ms, JSON reals with
 * exponents, three HTTP-date forms), and libc helps with none of them portably: strptime
 * knows no fractions or ':' offsets, strtod and the month names depend on the locale, and
 * timegm is not standard C.  So everything here is a small cursor over the bytes plus
 * integer arithmetic:
 *
 *   - Numbers go through one exact decimal scanner (scan_decimal) that returns value * 10^k
 *     as an int64 with an explicit rounding rule, so "57.238747106s" truncates to 57238 ms
 *     exactly and "1.7960832E9" is an exact epoch, with no binary floating point anywhere.
 *   - Dates go through days_from_civil / civil_from_days (proleptic Gregorian calendar), so
 *     no TZ environment or locale can change a result.
 *   - Overflow is an input error (-1), never undefined behaviour: every multiply and add of
 *     outside values is checked.
 *
 * Rounding rules (each pinned by the fixtures or by what the value is used for):
 *   reset values       truncate to the ms (reset-values.tsv says so for fractions)
 *   config durations   round to the nearest ms (timefmt.h)
 *   retry-after(-ms)   round up: a "wait at least" must never become shorter
 *
 * Nothing here reads a clock or allocates; failure never touches the output.
 */
#include "timefmt.h"

#include <stdio.h>

#define NS_PER_MS 1000000
#define MS_PER_S 1000
#define MS_PER_DAY 86400000LL
#define MAX_SIG_DIGITS 19 /* every 19-digit decimal fits in uint64_t */

typedef enum { RND_TRUNC, RND_NEAREST, RND_CEIL } rounding;

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

static const uint64_t pow10_u64[] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
    100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL,
    10000000000000ULL, 100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
    100000000000000000ULL, 1000000000000000000ULL, 10000000000000000000ULL,
};

/* ---- exact decimal numbers ---- */

/* The digits of a decimal as mantissa * 10^exp10, plus whether non-zero digits were dropped
 * beyond MAX_SIG_DIGITS (they only matter for rounding up). */
typedef struct {
    uint64_t mant;
    int64_t exp10;
    bool sticky;
} decimal;

/* Reads `digits [. digits]` (at least one digit in all) into d.  Returns bytes used, 0 if none. */
static size_t scan_mantissa(const char *s, size_t n, decimal *d)
{
    size_t i = 0, ndigits = 0;
    int sig = 0;
    bool frac = false;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '.' && !frac) {
            frac = true;
            continue;
        }
        if (!is_digit(c)) break;
        ndigits++;
        unsigned v = (unsigned)(c - '0');
        if (sig < MAX_SIG_DIGITS) {
            d->mant = d->mant * 10 + v;
            if (d->mant) sig++;
            if (frac) d->exp10--;
        } else {
            if (!frac) d->exp10++;
            if (v) d->sticky = true;
        }
    }
    return ndigits ? i : 0;
}

/* Reads `(e|E) [+-] digits` if present; returns bytes used (0 when there is no complete one). */
static size_t scan_exponent(const char *s, size_t n, int64_t *exp10)
{
    if (n < 2 || (s[0] != 'e' && s[0] != 'E')) return 0;
    size_t i = 1;
    bool neg = false;
    if (s[i] == '+' || s[i] == '-') neg = s[i++] == '-';
    size_t start = i;
    int64_t e = 0;
    for (; i < n && is_digit(s[i]); i++)
        if (e < 100000) e = e * 10 + (s[i] - '0'); /* far beyond any int64 result either way */
    if (i == start) return 0;
    *exp10 = neg ? -e : e;
    return i;
}

/* value * 10^shift as an int64, rounded; -1 on overflow. */
static int decimal_scale(const decimal *d, int64_t shift, rounding r, int64_t *out)
{
    uint64_t q;
    if (d->mant == 0) {
        q = 0;
        if (d->sticky && r == RND_CEIL) q = 1;
    } else if (shift >= 0) {
        if (shift > MAX_SIG_DIGITS || __builtin_mul_overflow(d->mant, pow10_u64[shift], &q)) return -1;
    } else {
        uint64_t div = -shift > MAX_SIG_DIGITS ? 0 : pow10_u64[-shift];
        uint64_t rem = div ? d->mant % div : d->mant;
        q = div ? d->mant / div : 0;
        bool up = false;
        if (r == RND_CEIL) up = rem != 0 || d->sticky;
        else if (r == RND_NEAREST) up = div && rem >= div - rem;
        q += up;
    }
    if (q > (uint64_t)INT64_MAX) return -1;
    *out = (int64_t)q;
    return 0;
}

/* A whole slice that is a non-negative decimal (with an exponent when allow_exp), scaled by
 * 10^scale and rounded.  No sign, no spaces, nothing after it. */
static int parse_scaled(qg_slice s, int scale, bool allow_exp, rounding r, int64_t *out)
{
    decimal d = {0, 0, false};
    size_t used = scan_mantissa(s.p, s.n, &d);
    if (!used) return -1;
    int64_t e = 0;
    if (allow_exp) used += scan_exponent(s.p + used, s.n - used, &e);
    if (used != s.n) return -1;
    return decimal_scale(&d, d.exp10 + e + scale, r, out);
}

static int64_t ns_to_ms(int64_t ns, rounding r)
{
    int64_t q = ns / NS_PER_MS, rem = ns % NS_PER_MS; /* ns >= 0 here */
    if (r == RND_NEAREST && rem >= NS_PER_MS / 2) q++;
    if (r == RND_CEIL && rem) q++;
    return q;
}

/* ---- durations ---- */

typedef struct {
    const char *name;
    int scale;    /* the number is read as value * 10^scale nanoseconds ... */
    int64_t mult; /* ... times this */
    bool days;    /* only in the lenient (config) grammar */
} dur_unit;

static const dur_unit dur_units[] = {
    {"ns", 0, 1, false},
    {"us", 3, 1, false},
    {"\xc2\xb5s", 3, 1, false}, /* µs, MICRO SIGN */
    {"\xce\xbcs", 3, 1, false}, /* μs, GREEK SMALL LETTER MU */
    {"ms", 6, 1, false},
    {"s", 9, 1, false},
    {"m", 9, 60, false},
    {"h", 9, 3600, false},
    {"d", 9, 86400, true},
};

enum { DUR_BARE_SECONDS = 1, DUR_DAYS = 2 };

static const dur_unit *find_unit(qg_slice u, int flags)
{
    for (size_t i = 0; i < QG_ARRAY_LEN(dur_units); i++) {
        const dur_unit *d = &dur_units[i];
        if (d->days && !(flags & DUR_DAYS)) continue;
        if (qg_slice_eq(u, d->name)) return d;
    }
    return NULL;
}

/* One `<decimal><unit>` component in nanoseconds, added to *total.  Returns bytes used or 0. */
static size_t duration_part(qg_slice s, int flags, int64_t *total)
{
    size_t num = 0;
    while (num < s.n && (is_digit(s.p[num]) || s.p[num] == '.')) num++;
    size_t end = num;
    /* Like Go, the unit is the whole run of non-number bytes, so "mh" is an error, not m+h. */
    while (end < s.n && !is_digit(s.p[end]) && s.p[end] != '.') end++;
    qg_slice number = {s.p, num};
    int64_t v;
    if (end == num) { /* no unit */
        if (!(flags & DUR_BARE_SECONDS) || num != s.n) return 0;
        if (parse_scaled(number, 9, false, RND_TRUNC, &v) < 0) return 0;
    } else {
        const dur_unit *u = find_unit((qg_slice){s.p + num, end - num}, flags);
        if (!u || parse_scaled(number, u->scale, false, RND_TRUNC, &v) < 0) return 0;
        if (__builtin_mul_overflow(v, u->mult, &v)) return 0;
    }
    if (__builtin_add_overflow(*total, v, total)) return 0;
    return end;
}

/* Go-style duration in ns.  Always accepts "0"; a unit-less number only with DUR_BARE_SECONDS
 * and only as the whole string; no signs. */
static int parse_duration_ns(qg_slice s, int flags, int64_t *out_ns)
{
    s = qg_slice_trim(s);
    if (s.n == 0) return -1;
    if (qg_slice_eq(s, "0")) {
        *out_ns = 0;
        return 0;
    }
    int64_t total = 0;
    size_t i = 0;
    while (i < s.n) {
        size_t used = duration_part((qg_slice){s.p + i, s.n - i}, i == 0 ? flags : flags & ~DUR_BARE_SECONDS, &total);
        if (!used) return -1;
        i += used;
    }
    *out_ns = total;
    return 0;
}

int qg_parse_duration_ms(qg_slice s, int64_t *out_ms)
{
    int64_t ns;
    if (parse_duration_ns(s, DUR_BARE_SECONDS | DUR_DAYS, &ns) < 0) return -1;
    *out_ms = ns_to_ms(ns, RND_NEAREST);
    return 0;
}

/* ---- sizes ---- */

typedef struct {
    const char *suffix;
    uint64_t mult;
} size_unit;

static const size_unit size_units[] = {
    {"", 1},
    {"b", 1},
    {"k", 1ULL << 10},
    {"ki", 1ULL << 10},
    {"kib", 1ULL << 10},
    {"kb", 1000ULL},
    {"m", 1ULL << 20},
    {"mi", 1ULL << 20},
    {"mib", 1ULL << 20},
    {"mb", 1000000ULL},
    {"g", 1ULL << 30},
    {"gi", 1ULL << 30},
    {"gib", 1ULL << 30},
    {"gb", 1000000000ULL},
    {"t", 1ULL << 40},
    {"ti", 1ULL << 40},
    {"tib", 1ULL << 40},
    {"tb", 1000000000000ULL},
};

int qg_parse_size(qg_slice s, uint64_t *out)
{
    s = qg_slice_trim(s);
    size_t i = 0;
    uint64_t v = 0;
    for (; i < s.n && is_digit(s.p[i]); i++)
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(s.p[i] - '0'), &v)) return -1;
    if (i == 0) return -1;
    qg_slice suffix = qg_slice_trim((qg_slice){s.p + i, s.n - i});
    for (size_t k = 0; k < QG_ARRAY_LEN(size_units); k++) {
        if (!qg_slice_ieq(suffix, size_units[k].suffix)) continue;
        uint64_t r;
        if (__builtin_mul_overflow(v, size_units[k].mult, &r)) return -1;
        *out = r;
        return 0;
    }
    return -1;
}

/* ---- calendar ---- */

static int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

static bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int64_t y, int m)
{
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date.  Counting years from March makes the
 * leap day the last day of the "year", so each month's offset is a linear formula. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    if (m <= 2) y--;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;                        /* [0, 399] */
    int64_t mp = m > 2 ? m - 3 : m + 9;                 /* March = 0 */
    int64_t doy = (153 * mp + 2) / 5 + d - 1;           /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; /* [0, 146096] */
    return era * 146097 + doe - 719468;                 /* 719468 = days from 0000-03-01 to 1970-01-01 */
}

typedef struct {
    int64_t year;
    int month, day, hour, min, sec, wday; /* wday 0 = Sunday */
} civil;

static civil civil_from_ms(int64_t ms)
{
    civil c;
    int64_t days = floor_div(ms, MS_PER_DAY);
    int64_t sod = (ms - days * MS_PER_DAY) / MS_PER_S;
    c.hour = (int)(sod / 3600), c.min = (int)(sod / 60 % 60), c.sec = (int)(sod % 60);
    c.wday = (int)((days % 7 + 11) % 7); /* 1970-01-01 was a Thursday (4) */
    int64_t z = days + 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    c.day = (int)(doy - (153 * mp + 2) / 5 + 1);
    c.month = (int)(mp < 10 ? mp + 3 : mp - 9);
    c.year = yoe + era * 400 + (c.month <= 2);
    return c;
}

/* Validates the fields and turns them into epoch ms (before subtracting any UTC offset). */
static int civil_to_ms(int64_t y, int mo, int d, int h, int mi, int s, int ms, int64_t *out)
{
    if (y < 0 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return -1;
    if (h > 23 || mi > 59 || s > 60) return -1; /* 60: a leap second, counted as the next one */
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
    *out = secs * MS_PER_S + ms;
    return 0;
}

/* ---- a byte cursor for the date grammars ---- */

typedef struct {
    const char *p;
    size_t n, i;
} cursor;

static bool cur_eof(const cursor *c) { return c->i >= c->n; }

static bool cur_take(cursor *c, char ch)
{
    if (cur_eof(c) || c->p[c->i] != ch) return false;
    c->i++;
    return true;
}

/* Reads between min and max digits. */
static bool cur_int(cursor *c, int min, int max, int *out)
{
    int v = 0, k = 0;
    while (k < max && !cur_eof(c) && is_digit(c->p[c->i])) v = v * 10 + (c->p[c->i++] - '0'), k++;
    *out = v;
    return k >= min;
}

static bool cur_spaces(cursor *c)
{
    size_t start = c->i;
    while (!cur_eof(c) && c->p[c->i] == ' ') c->i++;
    return c->i > start;
}

/* Case-insensitive match of one of names[]; returns its index or -1.  Longer names must come
 * before their prefixes in the table ("Sunday" before "Sun"). */
static int cur_name(cursor *c, const char *const *names, int count)
{
    for (int k = 0; k < count; k++) {
        size_t len = strlen(names[k]), j = 0;
        if (c->n - c->i < len) continue;
        while (j < len && lower(c->p[c->i + j]) == lower(names[k][j])) j++;
        if (j == len) {
            c->i += len;
            return k;
        }
    }
    return -1;
}

static const char *const month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const day_names[] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                        "Saturday", "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};

/* ---- RFC 3339 ---- */

/* `.digits` after the seconds: the first three digits are the ms, the rest are truncated. */
static bool rfc3339_fraction(cursor *c, int *ms)
{
    *ms = 0;
    if (!cur_take(c, '.')) return true;
    int k = 0;
    while (!cur_eof(c) && is_digit(c->p[c->i])) {
        if (k < 3) *ms = *ms * 10 + (c->p[c->i] - '0');
        k++, c->i++;
    }
    for (int pad = k; pad < 3; pad++) *ms *= 10;
    return k > 0;
}

/* `Z`, `z`, `+hh:mm`, `-hh:mm` or `+hhmm`; offset in minutes east of UTC. */
static bool rfc3339_offset(cursor *c, int *minutes)
{
    if (cur_take(c, 'Z') || cur_take(c, 'z')) {
        *minutes = 0;
        return true;
    }
    int sign = cur_take(c, '+') ? 1 : cur_take(c, '-') ? -1 : 0;
    int oh, om;
    if (!sign || !cur_int(c, 2, 2, &oh)) return false;
    cur_take(c, ':');
    if (!cur_int(c, 2, 2, &om) || oh > 23 || om > 59) return false;
    *minutes = sign * (oh * 60 + om);
    return true;
}

int qg_parse_rfc3339(qg_slice s, int64_t *epoch_ms)
{
    s = qg_slice_trim(s);
    cursor c = {s.p, s.n, 0};
    int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0, off = 0;
    if (!cur_int(&c, 4, 4, &y) || !cur_take(&c, '-') || !cur_int(&c, 2, 2, &mo) || !cur_take(&c, '-') ||
        !cur_int(&c, 2, 2, &d))
        return -1;
    if (!cur_eof(&c)) { /* a date alone means 00:00 UTC */
        if (!cur_take(&c, 'T') && !cur_take(&c, 't') && !cur_take(&c, ' ')) return -1;
        if (!cur_int(&c, 2, 2, &h) || !cur_take(&c, ':') || !cur_int(&c, 2, 2, &mi)) return -1;
        if (cur_take(&c, ':') && (!cur_int(&c, 2, 2, &sec) || !rfc3339_fraction(&c, &ms))) return -1;
        /* No offset is ambiguous (local time of whom?): reject rather than guess UTC. */
        if (!rfc3339_offset(&c, &off) || !cur_eof(&c)) return -1;
    }
    int64_t t;
    if (civil_to_ms(y, mo, d, h, mi, sec, ms, &t) < 0) return -1;
    *epoch_ms = t - (int64_t)off * 60000;
    return 0;
}

/* ---- HTTP-date (RFC 9110 §5.6.7) ---- */

static bool http_time(cursor *c, int *h, int *mi, int *s)
{
    return cur_int(c, 2, 2, h) && cur_take(c, ':') && cur_int(c, 2, 2, mi) && cur_take(c, ':') && cur_int(c, 2, 2, s);
}

static bool http_gmt(cursor *c)
{
    static const char *const zones[] = {"GMT", "UTC"};
    return cur_name(c, zones, 2) >= 0;
}

/* After "Sun, 22": IMF-fixdate ` Nov 2026 10:00:30 GMT` or RFC 850 `-Nov-26 10:00:30 GMT`. */
static bool http_after_day(cursor *c, int *y, int *mo, int *h, int *mi, int *s)
{
    if (cur_take(c, '-')) { /* RFC 850: two-digit year, pivot at 70 (no clock here) */
        if ((*mo = cur_name(c, month_names, 12)) < 0 || !cur_take(c, '-') || !cur_int(c, 2, 2, y)) return false;
        *y += *y < 70 ? 2000 : 1900;
    } else if (!cur_spaces(c) || (*mo = cur_name(c, month_names, 12)) < 0 || !cur_spaces(c) ||
               !cur_int(c, 4, 4, y)) {
        return false;
    }
    return cur_spaces(c) && http_time(c, h, mi, s) && cur_spaces(c) && http_gmt(c);
}

int qg_parse_http_date(qg_slice s, int64_t *epoch_ms)
{
    s = qg_slice_trim(s);
    cursor c = {s.p, s.n, 0};
    int y = 0, mo = -1, d = 0, h = 0, mi = 0, sec = 0;
    if (cur_name(&c, day_names, (int)QG_ARRAY_LEN(day_names)) < 0) return -1;
    bool ok;
    if (cur_take(&c, ',')) { /* IMF-fixdate or RFC 850 */
        ok = cur_spaces(&c) && cur_int(&c, 1, 2, &d) && http_after_day(&c, &y, &mo, &h, &mi, &sec);
    } else { /* asctime: "Sun Nov 22 10:00:30 2026", day may be space-padded */
        ok = cur_spaces(&c) && (mo = cur_name(&c, month_names, 12)) >= 0 && cur_spaces(&c) &&
             cur_int(&c, 1, 2, &d) && cur_spaces(&c) && http_time(&c, &h, &mi, &sec) && cur_spaces(&c) &&
             cur_int(&c, 4, 4, &y);
    }
    if (!ok || !cur_eof(&c)) return -1;
    return civil_to_ms(y, mo + 1, d, h, mi, sec, 0, epoch_ms);
}

/* ---- Retry-After ---- */

int qg_parse_retry_after(qg_slice value, int64_t now_ms, int64_t *delay_ms)
{
    value = qg_slice_trim(value);
    if (value.n == 0) return -1;
    int64_t v;
    if (is_digit(value.p[0]) || value.p[0] == '.') {
        if (parse_scaled(value, 3, false, RND_CEIL, &v) < 0) return -1;
        *delay_ms = v;
        return 0;
    }
    int64_t at;
    if (qg_parse_http_date(value, &at) < 0 || __builtin_sub_overflow(at, now_ms, &v)) return -1;
    *delay_ms = v > 0 ? v : 0;
    return 0;
}

int qg_parse_retry_after_ms(qg_slice value, int64_t *delay_ms)
{
    return parse_scaled(qg_slice_trim(value), 0, false, RND_CEIL, delay_ms);
}

/* ---- reset values ---- */

static int relative(int64_t now_ms, int64_t delta_ms, int64_t *epoch_ms)
{
    int64_t t;
    if (__builtin_add_overflow(now_ms, delta_ms, &t)) return -1;
    *epoch_ms = t;
    return 0;
}

/* "23s", "57.238747106s": decimal seconds with a mandatory `s`. */
static int parse_pb_duration_ms(qg_slice s, int64_t *ms)
{
    if (s.n < 2 || s.p[s.n - 1] != 's') return -1;
    return parse_scaled((qg_slice){s.p, s.n - 1}, 3, false, RND_TRUNC, ms);
}

/* A bare number by its size: relative seconds, epoch seconds or epoch ms. */
static int reset_numeric(qg_slice s, int64_t now_ms, int64_t *epoch_ms)
{
    int64_t v; /* the number * 1000 */
    if (parse_scaled(s, 3, true, RND_TRUNC, &v) < 0) return -1;
    if (v < 1000000000LL * MS_PER_S) return relative(now_ms, v, epoch_ms);
    if (v < 1000000000000LL * MS_PER_S) {
        *epoch_ms = v;
        return 0;
    }
    *epoch_ms = v / MS_PER_S;
    return 0;
}

/* Shape of an unlabelled value: a date, an HTTP-date, a bare number or a duration. */
static int reset_auto(qg_slice s, int64_t now_ms, int64_t *epoch_ms)
{
    int64_t v;
    if (s.n == 0) return -1;
    if (s.n >= 5 && is_digit(s.p[0]) && is_digit(s.p[3]) && s.p[4] == '-') return qg_parse_rfc3339(s, epoch_ms);
    if (!is_digit(s.p[0]) && s.p[0] != '.') return qg_parse_http_date(s, epoch_ms);
    if (reset_numeric(s, now_ms, epoch_ms) == 0) return 0;
    if (parse_duration_ns(s, DUR_DAYS, &v) < 0) return -1;
    return relative(now_ms, ns_to_ms(v, RND_TRUNC), epoch_ms);
}

int qg_parse_reset_as(qg_reset_format f, qg_slice v, int64_t now_ms, int64_t *epoch_ms)
{
    v = qg_slice_trim(v);
    int64_t x;
    switch (f) {
    case QG_RFMT_AUTO: return reset_auto(v, now_ms, epoch_ms);
    case QG_RFMT_GO_DURATION:
        if (parse_duration_ns(v, 0, &x) < 0) return -1;
        return relative(now_ms, ns_to_ms(x, RND_TRUNC), epoch_ms);
    case QG_RFMT_PB_DURATION:
        if (parse_pb_duration_ms(v, &x) < 0) return -1;
        return relative(now_ms, x, epoch_ms);
    case QG_RFMT_SECONDS:
        if (parse_scaled(v, 3, true, RND_TRUNC, &x) < 0) return -1;
        return relative(now_ms, x, epoch_ms);
    case QG_RFMT_EPOCH_S:
    case QG_RFMT_EPOCH_MS:
        if (parse_scaled(v, f == QG_RFMT_EPOCH_S ? 3 : 0, true, RND_TRUNC, &x) < 0) return -1;
        *epoch_ms = x;
        return 0;
    case QG_RFMT_RFC3339: return qg_parse_rfc3339(v, epoch_ms);
    }
    return -1;
}

int qg_parse_reset_value(qg_slice v, int64_t now_ms, int64_t *epoch_ms)
{
    return qg_parse_reset_as(QG_RFMT_AUTO, v, now_ms, epoch_ms);
}

/* ---- formatters ---- */

#define MIN_FORMAT_MS (-62167219200000LL) /* 0000-01-01T00:00:00Z */
#define MAX_FORMAT_MS (253402300799999LL) /* 9999-12-31T23:59:59.999Z */

static int finish_format(int n, size_t outlen)
{
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

/* The x-quota-*-reset headers format the same few window ends on every response: each
 * thread keeps the last FORMAT_CACHE it formatted, replaced in turn (a hit is a few
 * compares and a 21-byte copy; a key has at most 16 policies, most one to three). */
#define FORMAT_CACHE 4
static __thread struct {
    int64_t s;         /* epoch seconds */
    bool set;
    char text[24];
} format_cache[FORMAT_CACHE];
static __thread unsigned format_next;

int qg_format_rfc3339(int64_t epoch_ms, char *out, size_t outlen)
{
    if (!outlen) return -1;
    out[0] = 0;
    if (epoch_ms < MIN_FORMAT_MS || epoch_ms > MAX_FORMAT_MS) return -1;
    if (outlen < 21) return -1;
    int64_t secs = epoch_ms / 1000 - (epoch_ms % 1000 < 0); /* whole seconds are printed */
    for (int i = 0; i < FORMAT_CACHE; i++)
        if (format_cache[i].set && format_cache[i].s == secs) {
            memcpy(out, format_cache[i].text, 21);
            return 20;
        }
    typeof(&format_cache[0]) fc = &format_cache[format_next++ % FORMAT_CACHE];
    civil c = civil_from_ms(epoch_ms);
    /* by hand, not snprintf: x-quota-*-reset headers format several per response */
    int v[] = {(int)c.year / 100, (int)c.year % 100, c.month, c.day, c.hour, c.min, c.sec};
    static const char sep[] = "\0\0--T::"; /* before each pair: YY YY-MM-DDTHH:MM:SS */
    char *p = out;
    for (int i = 0; i < 7; i++) {
        if (sep[i]) *p++ = sep[i];
        *p++ = (char)('0' + v[i] / 10);
        *p++ = (char)('0' + v[i] % 10);
    }
    *p++ = 'Z';
    *p = 0;
    fc->s = secs, fc->set = true;
    memcpy(fc->text, out, 21);
    return (int)(p - out);
}

int qg_format_http_date(int64_t epoch_ms, char *out, size_t outlen)
{
    if (!outlen) return -1;
    out[0] = 0;
    if (epoch_ms < MIN_FORMAT_MS || epoch_ms > MAX_FORMAT_MS) return -1;
    civil c = civil_from_ms(epoch_ms);
    int n = snprintf(out, outlen, "%s, %02d %s %04d %02d:%02d:%02d GMT", day_names[7 + c.wday], c.day,
                     month_names[c.month - 1], (int)c.year, c.hour, c.min, c.sec);
    return finish_format(n, outlen);
}

void qg_buf_json_time(qg_buf *b, const char *name, int64_t ms)
{
    char t[48];
    if (ms > 0 && qg_format_rfc3339(ms, t, sizeof t) > 0) qg_buf_appendf(b, ",\"%s\":\"%s\",\"%s_ms\":%lld", name, t, name, (long long)ms);
    else qg_buf_appendf(b, ",\"%s\":null,\"%s_ms\":null", name, name);
}

int64_t qg_days_from_civil(int64_t y, int m, int d) { return days_from_civil(y, m, d); }

void qg_civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
    civil c = civil_from_ms(days * MS_PER_DAY);
    *y = c.year, *m = c.month, *d = c.day;
}

int qg_days_in_month(int64_t y, int m) { return days_in_month(y, m); }
