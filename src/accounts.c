/*
 * accounts.c — the account table, its persistence glue and its JSON views.  See accounts.h.
 */
#include "accounts.h"

#include "timefmt.h"

#include <stdio.h>
#include <stdlib.h>

#define SAVE_EVERY_MS 10000 /* counting and header updates; state changes are saved at once */

void qg_accounts_build(qg_accounts *t, const qg_config *cfg)
{
    memset(t, 0, sizeof *t);
    t->cfg = cfg;
    for (size_t p = 0; p < cfg->n_providers; p++) t->n += cfg->providers[p].n_accounts;
    t->a = qg_xcalloc(t->n ? t->n : 1, sizeof *t->a);
    t->first = qg_xcalloc(cfg->n_providers ? cfg->n_providers : 1, sizeof *t->first);
    size_t i = 0;
    for (size_t p = 0; p < cfg->n_providers; p++) {
        t->first[p] = i;
        for (size_t k = 0; k < cfg->providers[p].n_accounts; k++)
            qg_qacct_init(&t->a[i++], &cfg->providers[p], &cfg->providers[p].accounts[k]);
    }
}

void qg_accounts_free(qg_accounts *t)
{
    for (size_t i = 0; i < t->n; i++) qg_qacct_free(&t->a[i]);
    free(t->a);
    free(t->first);
    memset(t, 0, sizeof *t);
}

qg_qacct *qg_accounts_at(const qg_accounts *t, int prov, int acct) { return &t->a[t->first[prov] + (size_t)acct]; }

qg_qacct *qg_accounts_find(const qg_accounts *t, qg_slice name, bool *ambiguous)
{
    const char *slash = memchr(name.p, '/', name.n);
    qg_slice prov = {name.p, slash ? (size_t)(slash - name.p) : 0};
    qg_slice acct = slash ? (qg_slice){slash + 1, name.n - prov.n - 1} : name;
    qg_qacct *found = NULL;
    *ambiguous = false;
    for (size_t i = 0; i < t->n; i++) {
        if (!qg_slice_eq(acct, t->a[i].name) || (slash && !qg_slice_eq(prov, t->a[i].provider))) continue;
        if (found) *ambiguous = true;
        found = &t->a[i];
    }
    return *ambiguous ? NULL : found;
}

/* The store's key for an account: "provider/name" (names may repeat across providers). */
static void store_key(const qg_qacct *a, char *out, size_t cap) { snprintf(out, cap, "%s/%s", a->provider, a->name); }

typedef struct {
    qg_accounts *t;
    int64_t now;
    int restored;
} load_ctx;

static void load_one(void *ud, const char *key, const char *text, size_t n)
{
    load_ctx *lc = ud;
    const qg_config *cfg = lc->t->cfg;
    char k[160];
    for (size_t p = 0; p < cfg->n_providers; p++)
        for (size_t i = 0; i < cfg->providers[p].n_accounts; i++) {
            qg_qacct *a = qg_accounts_at(lc->t, (int)p, (int)i);
            store_key(a, k, sizeof k);
            if (strcmp(k, key) != 0) continue;
            if (qg_quota_restore(a, text, n, lc->now) < 0) {
                qg_warn("store: account %s: saved quota state unreadable; starting from the config", key);
                qg_qacct_free(a);
                qg_qacct_init(a, &cfg->providers[p], &cfg->providers[p].accounts[i]);
                return;
            }
            lc->restored++;
            return;
        }
}

int qg_accounts_load(qg_accounts *t, const char *db_path, int64_t now)
{
    char err[300];
    load_ctx lc = {t, now, 0};
    if (qg_ledger_load_states(db_path, load_one, &lc, err, sizeof err) < 0) {
        qg_warn("%s", err);
        return -1;
    }
    return lc.restored;
}

void qg_accounts_save(qg_ledger *l, int worker, qg_qacct *a, int64_t now, bool urgent)
{
    uint32_t v = atomic_load_explicit(&a->version, memory_order_relaxed);
    uint32_t saved = atomic_load_explicit(&a->saved_version, memory_order_relaxed);
    if (v == saved) return;
    int64_t at = atomic_load_explicit(&a->saved_at, memory_order_relaxed);
    if (!urgent && now - at < SAVE_EVERY_MS) return;
    /* one saver per change: the worker that moves saved_version */
    if (!atomic_compare_exchange_strong(&a->saved_version, &saved, v)) return;
    atomic_store_explicit(&a->saved_at, now, memory_order_relaxed);
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_quota_serialize(a, &b);
    char k[160];
    store_key(a, k, sizeof k);
    qg_ledger_save_state(l, worker, k, b.data, b.len, now);
    qg_buf_free(&b);
}

void qg_accounts_save_all(const qg_accounts *t, qg_ledger *l, int64_t now)
{
    for (size_t i = 0; i < t->n; i++) qg_accounts_save(l, 0, &t->a[i], now, true);
}

/* ---- JSON views ---- */


static void json_num(qg_buf *b, const char *name, int64_t v)
{
    if (v < 0) qg_buf_appendf(b, ",\"%s\":null", name);
    else qg_buf_appendf(b, ",\"%s\":%lld", name, (long long)v);
}

static void json_real(qg_buf *b, const char *name, double v)
{
    if (v < 0) qg_buf_appendf(b, ",\"%s\":null", name);
    else qg_buf_appendf(b, ",\"%s\":%.3f", name, v);
}


static const char *kind_name(qg_bucket_kind k) { return k == QG_BUCKET_CREDITS ? "credits" : k == QG_BUCKET_WINDOW ? "window" : "rate"; }

/* A bucket worth showing: configured, or fed by the provider at least once. */
static bool shown(const qg_qbucket *b) { return !b->implicit || atomic_load_explicit(&((qg_qbucket *)b)->h_at, memory_order_relaxed); }

static void bucket_json(qg_buf *b, const qg_qacct *a, size_t i, int64_t now, qg_alert *alert)
{
    const qg_qbucket *bk = &a->b[i];
    qg_bucket_status s;
    qg_quota_bucket_status(a, i, now, &s);
    *alert = s.alert;
    qg_buf_puts(b, "{\"name\":");
    qg_buf_json_str(b, bk->name);
    qg_buf_appendf(b, ",\"kind\":\"%s\",\"unit\":\"%s\"", kind_name(bk->kind), qg_unit_name(bk->unit));
    json_num(b, "limit", s.limit);
    json_num(b, "used", s.used);
    json_num(b, "remaining", s.remaining);
    json_real(b, "ratio", s.ratio_ppm < 0 ? -1 : (double)s.ratio_ppm / 1e6);
    qg_buf_json_time(b, "reset", s.reset_ms);
    qg_buf_json_time(b, "expires_at", s.expires_ms);
    json_num(b, "burn_per_day", s.burn_per_day);
    json_num(b, "at_risk", s.at_risk);
    json_real(b, "projected_days_left", s.days_left);
    json_real(b, "days_until_expiry", s.days_to_expiry);
    qg_buf_appendf(b, ",\"alert\":\"%s\",\"source\":\"%s\",\"confidence\":\"%s\"", qg_alert_name(s.alert),
                   qg_quota_source_name(s.source), s.confidence);
    qg_buf_json_time(b, "updated_at", s.updated_at);
    int64_t hat = atomic_load_explicit(&((qg_qbucket *)bk)->h_at, memory_order_relaxed);
    if (bk->header_slot >= 0 && hat) {
        qg_buf_appendf(b, ",\"header\":{\"slot\":\"%s\"", qg_rl_slot_name((qg_rl_slot)bk->header_slot));
        json_num(b, "limit", atomic_load(&((qg_qbucket *)bk)->h_limit));
        json_num(b, "remaining", atomic_load(&((qg_qbucket *)bk)->h_remaining));
        qg_buf_json_time(b, "reset", atomic_load(&((qg_qbucket *)bk)->h_reset));
        qg_buf_json_time(b, "at", hat);
        qg_buf_puts(b, "}");
    } else {
        qg_buf_puts(b, ",\"header\":null");
    }
    qg_buf_puts(b, "}");
}

static void account_json(qg_buf *b, const qg_qacct *a, int64_t now, int *alerts)
{
    int64_t until = 0, busy_until = 0;
    bool stated = false;
    qg_acct_state st = qg_quota_state(a, now, &until, &stated);
    qg_qamount one;
    qg_quota_cost(NULL, 1, 1, &one);
    qg_block why;
    bool usable = qg_quota_eligible(a, &one, now, &busy_until, &why);
    const char *shown_state = qg_acct_state_name(st);
    if (st == QG_ACCT_READY && !usable && (why == QG_BLOCK_BUCKET || why == QG_BLOCK_HEADER || why == QG_BLOCK_DEPLETED))
        shown_state = "depleted"; /* a spent bucket: depleted until its reset (SPEC §4.2) */
    qg_buf_puts(b, "{\"name\":");
    qg_buf_json_str(b, a->name);
    qg_buf_puts(b, ",\"provider\":");
    qg_buf_json_str(b, a->provider);
    qg_buf_appendf(b, ",\"state\":\"%s\"", shown_state);
    qg_buf_json_time(b, "until", st == QG_ACCT_READY ? (usable ? 0 : busy_until) : until);
    qg_buf_appendf(b, ",\"reset_stated\":%s,\"trial_due\":%s,\"usable\":%s,\"blocked_by\":", stated ? "true" : "false",
                   st != QG_ACCT_READY && st != QG_ACCT_DISABLED && until <= now ? "true" : "false",
                   usable ? "true" : "false");
    if (usable) qg_buf_puts(b, "null");
    else qg_buf_appendf(b, "\"%s\"", qg_block_name(why));
    qg_buf_json_time(b, "usable_at", usable ? now : busy_until);
    int cls = atomic_load(&((qg_qacct *)a)->last_class);
    qg_buf_appendf(b, ",\"priority\":%d,\"weight\":%d,\"combine\":\"%s\",\"consecutive_failures\":%d,\"in_flight\":%lld,"
                      "\"last_error\":%s%s%s",
                   a->priority, a->weight, a->combine_any ? "any" : "all", atomic_load(&((qg_qacct *)a)->fails),
                   (long long)atomic_load(&((qg_qacct *)a)->inflight), cls ? "\"" : "",
                   cls ? qg_errclass_name((qg_errclass)cls) : "null", cls ? "\"" : "");
    qg_buf_json_time(b, "last_error_at", atomic_load(&((qg_qacct *)a)->last_error_at));
    qg_buf_puts(b, ",\"buckets\":[");
    bool first = true;
    for (size_t i = 0; i < a->n_b; i++) {
        if (!shown(&a->b[i])) continue;
        if (!first) qg_buf_puts(b, ",");
        first = false;
        qg_alert al;
        bucket_json(b, a, i, now, &al);
        if (alerts) alerts[al]++;
    }
    qg_buf_puts(b, "]}");
}

void qg_accounts_json_one(qg_buf *b, const qg_qacct *a, int64_t now) { account_json(b, a, now, NULL); }

void qg_accounts_json(qg_buf *b, const qg_accounts *t, int64_t now)
{
    qg_buf_puts(b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < t->n; i++) {
        if (i) qg_buf_puts(b, ",");
        account_json(b, &t->a[i], now, NULL);
    }
    qg_buf_puts(b, "]");
    qg_buf_json_time(b, "now", now);
    qg_buf_puts(b, "}");
}

void qg_quotas_json(qg_buf *b, const qg_accounts *t, int64_t now)
{
    int alerts[QG_ALERT_EXHAUSTED + 1] = {0};
    qg_buf_puts(b, "{\"accounts\":[");
    for (size_t i = 0; i < t->n; i++) {
        if (i) qg_buf_puts(b, ",");
        account_json(b, &t->a[i], now, alerts);
    }
    qg_buf_puts(b, "],\"alerts\":{");
    for (int a = 0; a <= QG_ALERT_EXHAUSTED; a++) qg_buf_appendf(b, "%s\"%s\":%d", a ? "," : "", qg_alert_name((qg_alert)a), alerts[a]);
    qg_buf_appendf(b, "},\"has_use_or_lose\":%s,\"has_exhausted\":%s", alerts[QG_ALERT_USE_OR_LOSE] ? "true" : "false",
                   alerts[QG_ALERT_EXHAUSTED] ? "true" : "false");
    qg_buf_json_time(b, "now", now);
    qg_buf_puts(b, "}");
}
