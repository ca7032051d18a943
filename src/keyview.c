/*
 * keyview.c — API keys as JSON.  See keyview.h.
 */
#include "keyview.h"

#include "timefmt.h"

#include <stdio.h>
#include <stdlib.h>

/* The anchor as it was given: its wall-clock time in its own UTC offset (daily and weekly
 * windows turn at that time), with anchor_ms the instant. */
static void anchor_json(qg_buf *b, const qg_policy_cfg *p)
{
    char t[48];
    int off = p->anchor_offset_min;
    if (p->anchor_ms <= 0 || qg_format_rfc3339(p->anchor_ms + (int64_t)off * 60000, t, sizeof t) <= 0) {
        qg_buf_json_time(b, "anchor", p->anchor_ms);
        return;
    }
    size_t n = strlen(t);
    if (off && n && t[n - 1] == 'Z')
        snprintf(t + n - 1, sizeof t - (n - 1), "%c%02d:%02d", off < 0 ? '-' : '+', abs(off) / 60, abs(off) % 60);
    qg_buf_appendf(b, ",\"anchor\":\"%s\",\"anchor_ms\":%lld", t, (long long)p->anchor_ms);
}

static void policy_json(qg_buf *b, const qg_keyq *k, int i, int64_t now)
{
    const qg_kq_policy *p = &k->p[i];
    qg_kq_status st;
    bool ok = qg_keyq_status(k, i, now, &st) == 0;
    qg_buf_appendf(b, "{\"period\":\"%s\",\"unit\":\"%s\",\"limit\":%lld,\"boundary\":\"%s\",\"on_exhausted\":\"%s\","
                      "\"auto_resume\":%s",
                   p->label, qg_unit_name(p->cfg.unit), (long long)p->limit, p->cfg.strict ? "strict" : "graceful",
                   p->cfg.on_exhausted_disable ? "disable" : "reject", p->cfg.auto_resume ? "true" : "false");
    anchor_json(b, &p->cfg);
    qg_buf_json_time(b, "window_start", ok ? st.w.start_ms : 0);
    qg_buf_json_time(b, "reset", ok ? st.w.end_ms : 0);
    qg_buf_appendf(b, ",\"used\":%lld,\"remaining\":%lld,\"exhausted\":%s}", (long long)(ok ? st.used : 0),
                   (long long)(ok ? st.remaining : 0), ok && st.exhausted ? "true" : "false");
}

/* The pause as the views show it: the pausing policy's index, or -1. */
static int pause_of(const qg_keyq *k, int64_t now, int64_t *until)
{
    uint64_t sig = qg_keyq_pause_info(k, until, NULL);
    if (*until && *until <= now) return -1; /* a pause past its end ends with the next request */
    return qg_keyq_policy_index(k, sig);
}

static const char *status_of(const qg_keyrec *r, int paused, int64_t now)
{
    if (r->disabled) return "disabled";
    if (qg_keyrec_expired(r, now)) return "expired";
    return paused >= 0 ? "paused" : "active";
}

void qg_key_json(qg_buf *b, const qg_keyrec *r, int64_t now, const char *secret)
{
    const qg_keyq *k = r->kq;
    int64_t until = 0;
    int paused = pause_of(k, now, &until);
    qg_buf_puts(b, "{\"id\":");
    qg_buf_json_str(b, r->ent->id);
    qg_buf_puts(b, ",\"name\":");
    qg_buf_json_str(b, r->name);
    if (secret) {
        qg_buf_puts(b, ",\"key\":");
        qg_buf_json_str(b, secret);
    }
    qg_buf_appendf(b, ",\"source\":\"%s\",\"prefix\":", r->from_config ? "config" : "store");
    if (r->ent->prefix[0]) qg_buf_json_str(b, r->ent->prefix);
    else qg_buf_puts(b, "null");
    qg_buf_appendf(b, ",\"status\":\"%s\",\"disabled\":%s", status_of(r, paused, now), r->disabled ? "true" : "false");
    qg_buf_json_time(b, "expires_at", r->expires_ms);
    qg_buf_json_time(b, "created_at", r->created_ms);
    qg_buf_json_time(b, "updated_at", r->updated_ms);
    qg_buf_puts(b, ",\"paused\":");
    if (paused >= 0) {
        qg_buf_appendf(b, "{\"policy\":\"%s\",\"manual_reset\":%s", k->p[paused].label, until ? "false" : "true");
        qg_buf_json_time(b, "until", until);
        qg_buf_puts(b, "}");
    } else {
        qg_buf_puts(b, "null");
    }
    qg_buf_puts(b, ",\"models\":");
    if (!r->n_models) qg_buf_puts(b, "null");
    for (size_t i = 0; i < r->n_models; i++) {
        qg_buf_puts(b, i ? "," : "[");
        qg_buf_json_str(b, r->models[i]);
        if (i + 1 == r->n_models) qg_buf_puts(b, "]");
    }
    if (k->total_limit >= 0)
        qg_buf_appendf(b, ",\"total_quota\":{\"limit_usd_micro\":%lld,\"used_usd_micro\":%lld}", (long long)k->total_limit,
                       (long long)atomic_load(&k->sh->total_committed));
    else qg_buf_puts(b, ",\"total_quota\":null");
    qg_buf_puts(b, ",\"policies\":[");
    for (int i = 0; i < k->n_p; i++) {
        if (i) qg_buf_puts(b, ",");
        policy_json(b, k, i, now);
    }
    qg_buf_puts(b, "]}");
}

void qg_key_list_json(qg_buf *b, const qg_keydir *d, uint32_t from, int64_t limit, int64_t now)
{
    uint32_t n = qg_keydir_count(d);
    int64_t shown = 0;
    const char *next = NULL, *last = NULL;
    qg_buf_puts(b, "{\"object\":\"list\",\"data\":[");
    for (uint32_t s = from; s < n; s++) {
        const qg_keyrec *r = qg_keyent_rec(qg_keydir_at(d, s));
        if (!r) continue;
        if (shown == limit) { /* more follow: the cursor is the last key shown (it exists) */
            next = last;
            break;
        }
        if (shown++) qg_buf_puts(b, ",");
        qg_key_json(b, r, now, NULL);
        last = r->ent->id;
    }
    qg_buf_puts(b, "],\"next\":");
    if (next) qg_buf_json_str(b, next);
    else qg_buf_puts(b, "null");
    qg_buf_puts(b, "}");
}
