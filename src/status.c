/*
 * status.c — `quotagate status`: a terminal table of the upstream accounts and their quota
 * buckets (SPEC §1).  See status.h and docs/status.md.
 *
 * One renderer, two sources of the same JSON (the shape of accounts.c's qg_accounts_json):
 *   - the running gateway's GET /admin/accounts, fetched with the small blocking HTTP/1.1
 *     client of adminclient.h on the main thread (this is a CLI, not the event loop);
 *   - with --db, the account table rebuilt from the config, with the state the gateway
 *     saved in its SQLite store restored, rendered to JSON in-process.
 * The JSON is read with adminclient.h's reader (jscan's span scanner for objects, and an
 * array walker); no tree is built.  The parsed accounts are copied into plain structs, then printed.
 */
#include "status.h"

#include "accounts.h"
#include "adminclient.h"
#include "config.h"
#include "timefmt.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_RESPONSE (64u << 20)
#define NAME_CAP 128
#define TIME_CAP 48

/* ---- options ---- */

static const char usage_text[] =
    "usage: quotagate status [-c FILE] [--db [PATH]] [--json]\n"
    "  -c, --config FILE   the YAML configuration (default ./quotagate.yaml)\n"
    "      --db [PATH]     read the state saved in the SQLite store instead of asking the\n"
    "                      running gateway (PATH defaults to the config's store.sqlite)\n"
    "      --json          print the JSON (the GET /admin/accounts shape) instead of the table\n"
    "  -h, --help          print this text\n"
    "Without --db, asks the gateway at the config's listen address (GET /admin/accounts with\n"
    "the config's admin_token).  Exit: 0 ok, 1 gateway or store not readable, 2 usage or config.\n";

typedef struct {
    const char *config;
    const char *db;   /* NULL: ask the gateway; "": the config's store */
    bool json;
} status_opts;

/* Returns -1 to go on, or the exit code (0 for --help, 2 for a usage error). */
static int parse_args(int argc, char **argv, status_opts *o)
{
    static const struct option opts[] = {
        {"config", 1, 0, 'c'}, {"db", 2, 0, 'd'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    *o = (status_opts){"quotagate.yaml", NULL, false};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+:c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': o->config = optarg; break;
        case 'd':
            /* "--db PATH" as well as "--db=PATH"; "--db" alone means the config's store */
            if (!optarg && optind < argc && argv[optind][0] != '-') optarg = argv[optind++];
            o->db = optarg ? optarg : "";
            break;
        case 'j': o->json = true; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default:
            fprintf(stderr, "quotagate status: %s %s\n%s", c == ':' ? "missing value for" : "unknown option",
                    argv[optind - 1], usage_text);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "quotagate status: unexpected argument %s\n%s", argv[optind], usage_text);
        return 2;
    }
    return -1;
}

/* ---- reading the JSON (adminclient.h), two more member kinds ---- */

/* A time member (epoch ms); 0 when null or absent. */
static int64_t jtime(qg_jval v)
{
    int64_t x = qg_jval_int(v);
    return x > 0 ? x : 0;
}

/* A real member; -1 when null or absent. */
static double jreal(qg_jval v)
{
    char tmp[64];
    if (v.type != QG_JSON_NUMBER || v.n >= sizeof tmp) return -1;
    memcpy(tmp, v.p, v.n);
    tmp[v.n] = 0;
    return strtod(tmp, NULL);
}

/* ---- the model ---- */

typedef struct {
    char name[NAME_CAP], kind[16], unit[16], alert[16], source[16];
    int64_t limit, used, remaining;   /* -1 unknown */
    double ratio;                     /* remaining / limit; -1 unknown */
    int64_t reset_ms, expires_ms;     /* 0 none */
} st_bucket;

typedef struct {
    char name[NAME_CAP], provider[NAME_CAP], state[16], blocked_by[24], last_error[32];
    int64_t until_ms;                 /* 0 none */
    int64_t fails;
    bool usable, trial_due;
    st_bucket *b;
    size_t n_b;
} st_account;

typedef struct {
    st_account *a;
    size_t n;
    int64_t now_ms;
} st_table;

enum { B_NAME, B_KIND, B_UNIT, B_LIMIT, B_USED, B_REMAINING, B_RATIO, B_RESET, B_EXPIRES, B_ALERT, B_SOURCE, B_N };
static const char *const bucket_members[B_N] = {"name",  "kind",     "unit",          "limit", "used",  "remaining",
                                                "ratio", "reset_ms", "expires_at_ms", "alert", "source"};

static int parse_bucket(qg_jval v, st_bucket *b)
{
    qg_jval m[B_N];
    if (qg_jval_members(v, bucket_members, B_N, m, NULL) < 0) return -1;
    qg_jval_str(m[B_NAME], b->name, sizeof b->name);
    qg_jval_str(m[B_KIND], b->kind, sizeof b->kind);
    qg_jval_str(m[B_UNIT], b->unit, sizeof b->unit);
    qg_jval_str(m[B_ALERT], b->alert, sizeof b->alert);
    qg_jval_str(m[B_SOURCE], b->source, sizeof b->source);
    b->limit = qg_jval_int(m[B_LIMIT]);
    b->used = qg_jval_int(m[B_USED]);
    b->remaining = qg_jval_int(m[B_REMAINING]);
    b->ratio = jreal(m[B_RATIO]);
    b->reset_ms = jtime(m[B_RESET]);
    b->expires_ms = jtime(m[B_EXPIRES]);
    return 0;
}

enum { A_NAME, A_PROVIDER, A_STATE, A_UNTIL, A_USABLE, A_BLOCKED, A_TRIAL, A_FAILS, A_ERROR, A_BUCKETS, A_N };
static const char *const account_members[A_N] = {"name",      "provider",  "state",
                                                 "until_ms",  "usable",    "blocked_by",
                                                 "trial_due", "consecutive_failures", "last_error", "buckets"};

static int parse_account(qg_jval v, st_account *a)
{
    qg_jval m[A_N], el;
    if (qg_jval_members(v, account_members, A_N, m, NULL) < 0) return -1;
    qg_jval_str(m[A_NAME], a->name, sizeof a->name);
    qg_jval_str(m[A_PROVIDER], a->provider, sizeof a->provider);
    qg_jval_str(m[A_STATE], a->state, sizeof a->state);
    qg_jval_str(m[A_BLOCKED], a->blocked_by, sizeof a->blocked_by);
    qg_jval_str(m[A_ERROR], a->last_error, sizeof a->last_error);
    a->until_ms = jtime(m[A_UNTIL]);
    a->usable = m[A_USABLE].type == QG_JSON_TRUE;
    a->trial_due = m[A_TRIAL].type == QG_JSON_TRUE;
    a->fails = qg_jval_int(m[A_FAILS]);
    size_t pos = 0, cap = 0;
    while (qg_jval_next(m[A_BUCKETS], &pos, &el)) {
        if (a->n_b == cap) a->b = qg_xrealloc(a->b, (cap = cap ? 2 * cap : 4) * sizeof *a->b);
        if (parse_bucket(el, &a->b[a->n_b]) < 0) return -1;
        a->n_b++;
    }
    return 0;
}

static void free_table(st_table *t)
{
    for (size_t i = 0; i < t->n; i++) free(t->a[i].b);
    free(t->a);
    memset(t, 0, sizeof *t);
}

static int parse_table(const char *text, size_t n, st_table *t, const char **why)
{
    static const char *const top[] = {"data", "now_ms"};
    qg_jval m[2], el;
    memset(t, 0, sizeof *t);
    if (qg_jval_members((qg_jval){QG_JSON_OBJECT, text, n}, top, 2, m, why) < 0) return -1;
    if (m[0].type != QG_JSON_ARRAY) {
        *why = "no \"data\" array";
        return -1;
    }
    t->now_ms = jtime(m[1]) ? jtime(m[1]) : qg_now_ms();
    size_t pos = 0, cap = 0;
    while (qg_jval_next(m[0], &pos, &el)) {
        if (t->n == cap) t->a = qg_xrealloc(t->a, (cap = cap ? 2 * cap : 8) * sizeof *t->a);
        memset(&t->a[t->n], 0, sizeof t->a[t->n]);
        t->n++;
        if (parse_account(el, &t->a[t->n - 1]) < 0) {
            *why = "an account or bucket is not an object";
            free_table(t);
            return -1;
        }
    }
    return 0;
}

/* ---- cell formatting ---- */

static const char *fmt_time(int64_t ms, char *out)
{
    if (qg_format_rfc3339(ms, out, TIME_CAP) <= 0) qg_strlcpy(out, "?", TIME_CAP);
    return out;
}

/* An amount in its unit's display form: USD amounts arrive in micro-USD and percent
 * windows in millionths of the window (quota.h), requests and tokens as they are. */
static void fmt_amount(const char *unit, int64_t v, char *out, size_t cap)
{
    if (v < 0) snprintf(out, cap, "?");
    else if (!strcmp(unit, "usd")) snprintf(out, cap, "$%.2f", (double)v / 1e6);
    else if (!strcmp(unit, "percent")) snprintf(out, cap, "%.4g%%", (double)v / 1e4);
    else snprintf(out, cap, "%lld", (long long)v);
}

static void fmt_remaining(const st_bucket *b, char *out, size_t cap)
{
    char r[40], l[40];
    if (b->remaining < 0 && b->limit < 0) {
        snprintf(out, cap, "?");
        return;
    }
    fmt_amount(b->unit, b->remaining, r, sizeof r);
    fmt_amount(b->unit, b->limit, l, sizeof l);
    snprintf(out, cap, "%s/%s", r, l);
}

/* The share left, rounded down: a bucket shows 100% only when it is full. */
static void fmt_ratio(double ratio, char *out, size_t cap)
{
    if (ratio < 0) snprintf(out, cap, "?");
    else if (ratio > 0 && ratio < 0.01) snprintf(out, cap, "<1%%");
    else snprintf(out, cap, "%d%%", (int)(ratio * 100 + 1e-9));
}

enum { C_BUCKET, C_KIND, C_UNIT, C_AMOUNT, C_LEFT, C_RESET, C_AT, C_ALERT, C_SOURCE, C_N };
static const char *const col_title[C_N] = {"BUCKET", "KIND", "UNIT", "REMAINING/LIMIT", "LEFT",
                                           "RESET",  "",     "ALERT", "SOURCE"};
static const bool col_right[C_N] = {[C_AMOUNT] = true, [C_LEFT] = true};
typedef char row_cells[C_N][NAME_CAP];

static void bucket_cells(const st_bucket *b, int64_t now, row_cells c)
{
    snprintf(c[C_BUCKET], NAME_CAP, "%s", b->name);
    snprintf(c[C_KIND], NAME_CAP, "%s", b->kind);
    snprintf(c[C_UNIT], NAME_CAP, "%s", b->unit);
    fmt_remaining(b, c[C_AMOUNT], NAME_CAP);
    fmt_ratio(b->ratio, c[C_LEFT], NAME_CAP);
    int64_t when = b->reset_ms ? b->reset_ms : b->expires_ms;
    char rel[40], at[TIME_CAP];
    if (when) {
        qg_admin_fmt_relative(when, now, rel, sizeof rel);
        snprintf(c[C_RESET], NAME_CAP, "%s%s", b->reset_ms ? "" : "expires ", rel);
        snprintf(c[C_AT], NAME_CAP, "%s", fmt_time(when, at));
    } else {
        snprintf(c[C_RESET], NAME_CAP, "-");
        c[C_AT][0] = 0;
    }
    snprintf(c[C_ALERT], NAME_CAP, "%s", b->alert);
    snprintf(c[C_SOURCE], NAME_CAP, "%s", b->source);
}

/* ---- the table ---- */

typedef struct {
    int col[C_N];
    int account;   /* provider/name */
    int state;
} widths;

static void measure(const st_table *t, widths *w)
{
    row_cells c;
    memset(w, 0, sizeof *w);
    for (int i = 0; i < C_N; i++) w->col[i] = (int)strlen(col_title[i]);
    for (size_t i = 0; i < t->n; i++) {
        const st_account *a = &t->a[i];
        w->account = QG_MAX(w->account, (int)(strlen(a->provider) + 1 + strlen(a->name)));
        w->state = QG_MAX(w->state, (int)strlen(a->state));
        for (size_t k = 0; k < a->n_b; k++) {
            bucket_cells(&a->b[k], t->now_ms, c);
            for (int j = 0; j < C_N; j++) w->col[j] = QG_MAX(w->col[j], (int)strlen(c[j]));
        }
    }
}

static void print_row(FILE *f, const char *const *c, const widths *w)
{
    fputs("  ", f);
    for (int i = 0; i < C_N; i++) {
        if (i == C_N - 1) fputs(c[i], f);
        else if (col_right[i]) fprintf(f, "%*s  ", w->col[i], c[i]);
        else fprintf(f, "%-*s  ", w->col[i], c[i]);
    }
    fputc('\n', f);
}

/* "until 2026-12-02T02:56:45Z (in 4h59m)", "usable" or "not usable". */
static void account_when(const st_account *a, int64_t now, char *out, size_t cap)
{
    char at[TIME_CAP], rel[40];
    if (a->usable) snprintf(out, cap, "usable");
    else if (!a->until_ms) snprintf(out, cap, "not usable");
    else {
        qg_admin_fmt_relative(a->until_ms, now, rel, sizeof rel);
        snprintf(out, cap, "until %s (%s)", fmt_time(a->until_ms, at), rel);
    }
}

static void print_account(FILE *f, const st_account *a, int64_t now, const widths *w)
{
    char id[2 * NAME_CAP + 2], when[96];
    snprintf(id, sizeof id, "%s/%s", a->provider, a->name);
    account_when(a, now, when, sizeof when);
    fprintf(f, "%-*s  %-*s  %s", w->account, id, w->state, a->state, when);
    if (!a->usable && strcmp(a->blocked_by, "-")) fprintf(f, "  blocked by %s", a->blocked_by);
    if (a->trial_due) fputs("  (trial request due)", f);
    fputc('\n', f);
    if (!a->n_b) fputs("  (no buckets: none configured, no rate-limit headers seen yet)\n", f);
    else print_row(f, col_title, w);
    row_cells c;
    const char *cells[C_N];
    for (int j = 0; j < C_N; j++) cells[j] = c[j];
    for (size_t k = 0; k < a->n_b; k++) {
        bucket_cells(&a->b[k], now, c);
        print_row(f, cells, w);
    }
}

/* "accounts: 2 (depleted 2)": counts of names[] among vals, the rest as "other". */
static void print_counts(FILE *f, const char *label, const char *const *names, size_t n_names, const char *const *vals,
                         size_t n)
{
    fprintf(f, "%s: %zu", label, n);
    const char *sep = " (";
    size_t known = 0;
    for (size_t i = 0; i < n_names; i++) {
        size_t k = 0;
        for (size_t j = 0; j < n; j++) k += !strcmp(vals[j], names[i]);
        if (k) fprintf(f, "%s%s %zu", sep, names[i], k), sep = ", ";
        known += k;
    }
    if (known < n) fprintf(f, "%sother %zu", sep, n - known), sep = ", ";
    fputs(n ? ")" : "", f);
}

static void print_summary(FILE *f, const st_table *t)
{
    static const char *const states[] = {"ready", "cooling", "depleted", "auth_failed", "disabled"};
    static const char *const alerts[] = {"ok", "watch", "topup", "use_or_lose", "exhausted"};
    size_t n_b = 0, k = 0;
    for (size_t i = 0; i < t->n; i++) n_b += t->a[i].n_b;
    const char **vals = qg_xcalloc(QG_MAX(t->n, n_b) + 1, sizeof *vals);
    for (size_t i = 0; i < t->n; i++) vals[i] = t->a[i].state;
    print_counts(f, "accounts", states, QG_ARRAY_LEN(states), vals, t->n);
    for (size_t i = 0; i < t->n; i++)
        for (size_t j = 0; j < t->a[i].n_b; j++) vals[k++] = t->a[i].b[j].alert;
    fputs("   ", f);
    print_counts(f, "buckets", alerts, QG_ARRAY_LEN(alerts), vals, n_b);
    fputc('\n', f);
    free(vals);
}

/* The spent bucket that blocks a, preferring the one whose reset is the account's until. */
static const st_bucket *spent_bucket(const st_account *a)
{
    const st_bucket *best = NULL;
    for (size_t i = 0; i < a->n_b; i++) {
        const st_bucket *b = &a->b[i];
        if (b->remaining != 0 && strcmp(b->alert, "exhausted")) continue;
        if (!best || (b->reset_ms && b->reset_ms == a->until_ms)) best = b;
    }
    return best;
}

/* Why a is not usable, in parentheses after its state: the spent bucket, the failures, ... */
static void print_reason(FILE *f, const st_account *a)
{
    const st_bucket *b = spent_bucket(a);
    bool quota = !strcmp(a->blocked_by, "bucket") || !strcmp(a->blocked_by, "header_limit") ||
                 !strcmp(a->blocked_by, "depleted");
    char used[40], lim[40];
    if (quota && b) {
        fmt_amount(b->unit, b->used >= 0 ? b->used : b->remaining, used, sizeof used);
        fmt_amount(b->unit, b->limit, lim, sizeof lim);
        fprintf(f, " (bucket %s %s %s/%s%s)", b->name, b->used >= 0 ? "used" : "remaining", used, lim,
                !strcmp(b->source, "header") ? ", per the provider's headers" : "");
    } else if (!strcmp(a->blocked_by, "disabled")) {
        fputs(" (disabled by the operator)", f);
    } else if (!strcmp(a->blocked_by, "trial_pending")) {
        fputs(" (its one trial request is in flight)", f);
    } else if (a->fails > 0 || strcmp(a->last_error, "-")) {
        fprintf(f, " (%lld consecutive failures, last error %s)", (long long)QG_MAX(a->fails, 0), a->last_error);
    }
}

static void print_unusable(FILE *f, const st_table *t)
{
    char at[TIME_CAP];
    for (size_t i = 0; i < t->n; i++) {
        const st_account *a = &t->a[i];
        if (a->usable) continue;
        fprintf(f, "  %s/%s: %s", a->provider, a->name, a->state);
        if (a->until_ms) fprintf(f, " until %s", fmt_time(a->until_ms, at));
        print_reason(f, a);
        fputc('\n', f);
    }
}

static void render(FILE *f, const st_table *t, const char *source)
{
    char now[TIME_CAP];
    widths w;
    measure(t, &w);
    fprintf(f, "%s, %s\n\n", source, fmt_time(t->now_ms, now));
    if (!t->n) fputs("no upstream accounts configured\n\n", f);
    for (size_t i = 0; i < t->n; i++) {
        print_account(f, &t->a[i], t->now_ms, &w);
        fputc('\n', f);
    }
    print_summary(f, t);
    size_t unusable = 0;
    for (size_t i = 0; i < t->n; i++) unusable += !t->a[i].usable;
    if (unusable) fputs("not usable now:\n", f);
    print_unusable(f, t);
}

/* ---- the two sources ---- */

/* Explains a refused or failed admin request; returns the exit code. */
static int admin_refused(const qg_config *cfg, const char *where, int status, const qg_buf *body)
{
    char msg[256];
    if (status == 401 && (!cfg->admin_token || !*cfg->admin_token))
        fprintf(stderr, "quotagate status: the gateway at %s wants an admin token, and %s sets no admin_token (HTTP 401); "
                        "set it, or read the store with --db\n", where, cfg->path);
    else if (status == 401)
        fprintf(stderr, "quotagate status: the gateway at %s refused the admin_token of %s (HTTP 401); "
                        "is it running with another config?  Or read the store with --db\n", where, cfg->path);
    else if (status == 403)
        fprintf(stderr, "quotagate status: the admin API of the gateway at %s is disabled (HTTP 403): "
                        "its config sets no admin_token; set one, or read the store with --db\n", where);
    else {
        qg_admin_error_of(body, NULL, 0, msg, sizeof msg);
        fprintf(stderr, "quotagate status: the gateway at %s answered GET /admin/accounts with HTTP %d%s%s\n", where,
                status, *msg ? ": " : "", msg);
    }
    return 1;
}

static int from_gateway(const qg_config *cfg, qg_buf *json, char *label, size_t cap)
{
    qg_admin_peer peer;
    qg_admin_peer_of(cfg, &peer);
    const char *where = peer.where;
    char why[256];
    int status = 0;
    int rc = qg_admin_request(&peer, "GET", "/admin/accounts", "quotagate-status", json, &status, why, sizeof why);
    if (rc == -1)
        fprintf(stderr, "quotagate status: cannot reach the gateway at %s (%s); start it, or read the store with --db\n",
                where, why);
    if (rc == -2)
        fprintf(stderr, "quotagate status: no complete answer from the gateway at %s (%s); read the store with --db\n",
                where, why);
    if (rc < 0) return 1;
    if (status != 200) return admin_refused(cfg, where, status, json);
    snprintf(label, cap, "accounts of the gateway at %s", where);
    return 0;
}

static int from_store(const qg_config *cfg, const char *path, qg_buf *json, char *label, size_t cap)
{
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "quotagate status: cannot read the store %s (%s)\n", path, strerror(errno));
        return 1;
    }
    qg_accounts t;
    qg_accounts_build(&t, cfg);
    int64_t now = qg_now_ms();
    size_t n = t.n;
    int restored = qg_accounts_load(&t, path, now);
    if (restored >= 0) qg_accounts_json(json, &t, now);
    qg_accounts_free(&t);
    if (restored < 0) {
        fprintf(stderr, "quotagate status: cannot read the saved account state in %s\n", path);
        return 1;
    }
    snprintf(label, cap, "accounts as saved in the store %s (%d of %zu with saved state)", path, restored, n);
    return 0;
}

/* ---- the command ---- */

static int show(const qg_buf *json, bool raw, const char *label)
{
    if (raw) {
        fwrite(json->data ? json->data : "", 1, json->len, stdout);
        fputc('\n', stdout);
        return 0;
    }
    st_table t;
    const char *why = NULL;
    if (parse_table(json->data ? json->data : "", json->len, &t, &why) < 0) {
        fprintf(stderr, "quotagate status: the account list is not the expected JSON (%s)\n", why);
        return 1;
    }
    render(stdout, &t, label);
    free_table(&t);
    return 0;
}

int qg_status_main(int argc, char **argv)
{
    status_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    qg_config *cfg = qg_config_load_or_report(o.config);
    if (!cfg) return 2;
    qg_buf json;
    qg_buf_init(&json, MAX_RESPONSE);
    char label[600];
    if (o.db) rc = from_store(cfg, *o.db ? o.db : cfg->store_sqlite, &json, label, sizeof label);
    else rc = from_gateway(cfg, &json, label, sizeof label);
    if (rc == 0) rc = show(&json, o.json, label);
    qg_buf_free(&json);
    qg_config_free(cfg);
    return rc;
}
