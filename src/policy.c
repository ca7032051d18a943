/*
 * policy.c — key quota policy windows.  See policy.h.
 */
#include "policy.h"

#include "timefmt.h"

#include <stdio.h>

#define MINUTE_MS 60000LL
#define DAY_MS 86400000LL
/* 0001-01-01 and 9999-12-31 as days since the epoch */
#define MIN_DAY (-719162LL)
#define MAX_DAY 2932896LL

static int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

static bool in_range(int64_t t) { return t >= MIN_DAY * DAY_MS && t < (MAX_DAY + 1) * DAY_MS; }

static int64_t step_ms(const qg_policy_cfg *p)
{
    switch (p->period) {
    case QG_PERIOD_5H: return 300 * MINUTE_MS;
    case QG_PERIOD_DAILY: return DAY_MS;
    case QG_PERIOD_WEEKLY: return 7 * DAY_MS;
    case QG_PERIOD_MINUTES: return p->minutes > 0 ? p->minutes * MINUTE_MS : 0;
    default: return 0;
    }
}

/* The anchor as a local civil date-time in its own offset. */
typedef struct {
    int64_t y;
    int m, d;
    int64_t ms_of_day;
    int64_t offset_ms;
} civil;

static civil anchor_civil(const qg_policy_cfg *p)
{
    civil c;
    c.offset_ms = (int64_t)p->anchor_offset_min * MINUTE_MS;
    int64_t local = p->anchor_ms + c.offset_ms;
    int64_t day = floor_div(local, DAY_MS);
    c.ms_of_day = local - day * DAY_MS;
    qg_civil_from_days(day, &c.y, &c.m, &c.d);
    return c;
}

/* The start of monthly window k: k months after the anchor's month, on the anchor's day
 * (clamped to the month's last), at its time of day, in its offset. */
static int64_t month_start(const civil *a, int64_t k)
{
    int64_t months = a->y * 12 + (a->m - 1) + k;
    int64_t y = floor_div(months, 12);
    int m = (int)(months - y * 12) + 1;
    int d = a->d;
    int last = qg_days_in_month(y, m);
    if (d > last) d = last;
    return qg_days_from_civil(y, m, d) * DAY_MS + a->ms_of_day - a->offset_ms;
}

static int monthly_window(const qg_policy_cfg *p, int64_t t, qg_window *out)
{
    civil a = anchor_civil(p);
    int64_t local = t + a.offset_ms, ty;
    int tm, td;
    qg_civil_from_days(floor_div(local, DAY_MS), &ty, &tm, &td);
    int64_t k = (ty - a.y) * 12 + (tm - a.m);
    /* the civil month difference is right or one too many (before the anchor's day/time) */
    while (month_start(&a, k) > t) k--;
    while (month_start(&a, k + 1) <= t) k++;
    out->index = k;
    out->start_ms = month_start(&a, k);
    out->end_ms = month_start(&a, k + 1);
    return 0;
}

/* Calendar months cost several civil conversions (~1,000 instructions) and every request
 * of a key with a monthly policy asks two or three times: each thread remembers the last
 * month it computed per anchor (a month is the same for every instant inside it). */
#define MONTH_CACHE 4
static __thread struct {
    int64_t anchor_ms;
    int offset_min;
    qg_window w;
} month_cache[MONTH_CACHE];

static int cached_monthly_window(const qg_policy_cfg *p, int64_t t, qg_window *out)
{
    unsigned slot = (unsigned)((uint64_t)p->anchor_ms ^ (uint64_t)(p->anchor_offset_min * 7919)) % MONTH_CACHE;
    typeof(&month_cache[0]) c = &month_cache[slot];
    if (c->w.end_ms && c->anchor_ms == p->anchor_ms && c->offset_min == p->anchor_offset_min && t >= c->w.start_ms &&
        t < c->w.end_ms) {
        *out = c->w;
        return 0;
    }
    int rc = monthly_window(p, t, out);
    if (rc == 0) c->anchor_ms = p->anchor_ms, c->offset_min = p->anchor_offset_min, c->w = *out;
    return rc;
}

int qg_policy_window(const qg_policy_cfg *p, int64_t t, qg_window *out)
{
    if (!in_range(t) || !in_range(p->anchor_ms)) return -1;
    if (p->period == QG_PERIOD_MONTHLY) return cached_monthly_window(p, t, out);
    int64_t step = step_ms(p);
    if (step <= 0) return -1;
    int64_t k = floor_div(t - p->anchor_ms, step);
    out->index = k;
    out->start_ms = p->anchor_ms + k * step;
    out->end_ms = out->start_ms + step;
    return 0;
}

int qg_policy_window_at(const qg_policy_cfg *p, int64_t index, qg_window *out)
{
    if (!in_range(p->anchor_ms)) return -1;
    if (p->period == QG_PERIOD_MONTHLY) {
        if (index < -12 * 10000 || index > 12 * 10000) return -1;
        civil a = anchor_civil(p);
        out->index = index;
        out->start_ms = month_start(&a, index);
        out->end_ms = month_start(&a, index + 1);
        return in_range(out->start_ms) && in_range(out->end_ms) ? 0 : -1;
    }
    int64_t step = step_ms(p);
    if (step <= 0 || index < -(MAX_DAY * DAY_MS) / step || index > (MAX_DAY * DAY_MS) / step) return -1;
    out->index = index;
    out->start_ms = p->anchor_ms + index * step;
    out->end_ms = out->start_ms + step;
    return in_range(out->start_ms) && in_range(out->end_ms) ? 0 : -1;
}

int qg_policy_label(const qg_policy_cfg *p, char *out, size_t n)
{
    static const char *const named[] = {[QG_PERIOD_5H] = "5h", [QG_PERIOD_DAILY] = "daily",
                                        [QG_PERIOD_WEEKLY] = "weekly", [QG_PERIOD_MONTHLY] = "monthly"};
    char tmp[24];
    size_t len = 0;
    if (p->period != QG_PERIOD_MINUTES) {
        qg_strlcpy(tmp, named[p->period], sizeof tmp);
        len = strlen(tmp);
    } else { /* "<N>m" */
        len = qg_fmt_u64(tmp, p->minutes > 0 ? (uint64_t)p->minutes : 0);
        tmp[len++] = 'm';
        tmp[len] = 0;
    }
    if (len >= n) return -1;
    memcpy(out, tmp, len + 1);
    return (int)len;
}

uint64_t qg_policy_signature(const qg_policy_cfg *p)
{
    int64_t parts[] = {p->period, p->minutes, p->anchor_ms, p->anchor_offset_min, p->unit};
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < QG_ARRAY_LEN(parts); i++)
        for (int b = 0; b < 8; b++) h = (h ^ (uint8_t)((uint64_t)parts[i] >> (8 * b))) * 1099511628211ull;
    return (h >> 1) | 1; /* positive as an SQLite integer, and never 0 */
}
