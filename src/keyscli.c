/*
 * keyscli.c — `quotagate keys`: the running gateway's API keys and their quota policies, and
 * the manual reset.  See keyscli.h and docs/keys-cli.md.
 *
 * list, show and reset are one request each to the gateway the config names (its listen
 * address, with its admin_token), through adminclient.h's blocking client; the JSON that
 * comes back (keyadmin.c's shape) is read into plain structs, then printed.  With --json
 * the body is printed as received.
 */
#include "keyscli.h"

#include "adminclient.h"
#include "config.h"
#include "timefmt.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_RESPONSE (64u << 20)
#define TIME_CAP 48

/* ---- the commands and their help ---- */

enum { SC_LIST, SC_SHOW, SC_RESET, SC_LATER };

typedef struct {
    const char *name;
    int kind;
    const char *args;   /* after the name, in the usage line */
    const char *what;   /* the paragraph under it */
} subcmd;

static const subcmd subcmds[] = {
    {"list", SC_LIST, "[-c FILE] [--json]",
     "Every key of the running gateway (GET /admin/keys): its id, status, and per policy what\n"
     "is used of the limit and when the current window resets; a total quota; a pause.\n"},
    {"show", SC_SHOW, "ID [-c FILE] [--json]",
     "One key with every field (GET /admin/keys/ID).  A key's id is its name.\n"},
    {"reset", SC_RESET, "ID [-c FILE] [--json]",
     "The manual reset (POST /admin/keys/ID/reset): zeroes the key's current policy windows\n"
     "and ends its pause (on_exhausted: disable with auto_resume: false waits for this), in the\n"
     "gateway and in its store; the total quota is not touched.  Prints the key after it.\n"},
    {"create", SC_LATER, "...", NULL},
    {"disable", SC_LATER, "...", NULL},
    {"enable", SC_LATER, "...", NULL},
    {"delete", SC_LATER, "...", NULL},
};

static const char later_text[] =
    "admin-managed keys are not available in this version; keys come from the config (keys:)";

static const char options_text[] =
    "  -c, --config FILE   the YAML configuration (default ./quotagate.yaml): the gateway is\n"
    "                      asked at its listen address, with its admin_token\n"
    "      --json          print the gateway's JSON (its answer as received) instead of text\n"
    "  -h, --help          print this text\n";

static const char keys_usage[] =
    "usage: quotagate keys COMMAND [ID] [-c FILE] [--json]\n"
    "commands:\n"
    "  list        every key: status, and per policy used/limit and when it resets\n"
    "  show ID     one key with every field\n"
    "  reset ID    zero the key's current policy windows and end its pause, then show it\n"
    "  create, disable, enable, delete\n"
    "              not available in this version (they arrive with admin-managed keys);\n"
    "              keys come from the config (keys:)\n"
    "options:\n";

static const char exit_text[] =
    "Asks the running gateway (its admin API); a key's id is its name.  Exit: 0 ok, 1 the\n"
    "gateway not reachable or the request refused (no key with that id, admin token refused,\n"
    "admin API disabled), 2 usage or configuration error.\n";

static void usage_all(FILE *f)
{
    fputs(keys_usage, f);
    fputs(options_text, f);
    fputs("Every command takes --help.\n", f);
    fputs(exit_text, f);
}

static void usage_of(FILE *f, const subcmd *sc)
{
    if (sc->kind == SC_LATER) {
        fprintf(f, "usage: quotagate keys %s %s\n"
                   "Not available in this version: admin-managed keys (create, disable, enable, delete)\n"
                   "arrive with the key store.  Keys come from the config (keys:); `quotagate keys\n"
                   "list|show|reset` work on them now.  Exit: 2.\n",
                sc->name, sc->args);
        return;
    }
    fprintf(f, "usage: quotagate keys %s %s\n%s", sc->name, sc->args, sc->what);
    fputs(options_text, f);
    fputs(exit_text, f);
}

/* After a usage error: the usage line and where the rest is. */
static void usage_hint(const subcmd *sc)
{
    fprintf(stderr, "usage: quotagate keys %s %s  (quotagate keys %s --help)\n", sc->name, sc->args, sc->name);
}

static const subcmd *find_subcmd(const char *name)
{
    for (size_t i = 0; i < QG_ARRAY_LEN(subcmds); i++)
        if (!strcmp(subcmds[i].name, name)) return &subcmds[i];
    return NULL;
}

typedef struct {
    const char *config;
    const char *id;
    bool json;
} keys_opts;

/* Whether id can be sent in the request path as it is: the gateway matches the path
 * segment byte for byte (no %XX decoding), so what cannot go in a request line raw cannot
 * be asked for. */
static const char *id_problem(const char *id)
{
    if (!*id) return "is empty";
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        if (*p == '/') return "contains '/' (key names cannot)";
        if (*p == '?') return "contains '?', which cannot be sent in the request path as is";
        if (*p <= 0x20 || *p == 0x7f) return "contains a space or control character";
    }
    return NULL;
}

/* argv[0] is the subcommand.  Returns -1 to go on, or the exit code. */
static int parse_args(const subcmd *sc, int argc, char **argv, keys_opts *o)
{
    static const struct option opts[] = {
        {"config", 1, 0, 'c'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    *o = (keys_opts){"quotagate.yaml", NULL, false};
    optind = 0; /* a fresh scan (glibc), options and the ID in any order */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': o->config = optarg; break;
        case 'j': o->json = true; break;
        case 'h': usage_of(stdout, sc); return 0;
        default:
            fprintf(stderr, "quotagate keys %s: %s %s\n", sc->name, c == ':' ? "missing value for" : "unknown option",
                    argv[optind - 1]);
            usage_hint(sc);
            return 2;
        }
    }
    int want = sc->kind == SC_LIST ? 0 : 1;
    if (argc - optind < want) {
        fprintf(stderr, "quotagate keys %s: missing ID (`quotagate keys list` shows the ids)\n", sc->name);
        usage_hint(sc);
        return 2;
    }
    if (argc - optind > want) {
        fprintf(stderr, "quotagate keys %s: unexpected argument %s\n", sc->name, argv[optind + want]);
        usage_hint(sc);
        return 2;
    }
    if (want) {
        o->id = argv[optind];
        const char *why = id_problem(o->id);
        if (why) {
            fprintf(stderr, "quotagate keys %s: the id \"%s\" %s\n", sc->name, o->id, why);
            return 2;
        }
    }
    return -1;
}

/* ---- the model ---- */

typedef struct {
    char *period, *unit, *boundary, *on_exhausted, *anchor, *window_start, *reset;
    int64_t limit, used, remaining;              /* -1 unknown */
    int64_t anchor_ms, window_start_ms, reset_ms; /* -1 null */
    bool auto_resume, exhausted;
} kc_policy;

typedef struct {
    char *id, *name, *source, *status;
    bool paused;
    char *pause_policy, *until;
    bool manual_reset;
    int64_t until_ms;                            /* -1 null */
    char **models;                               /* NULL: any model */
    size_t n_models;
    bool has_total;
    int64_t total_limit, total_used;             /* micro-USD */
    kc_policy *p;
    size_t n_p;
} kc_key;

typedef struct {
    kc_key *k;
    size_t n;
} kc_list;

/* A string member as a heap string: "-" when null or absent, "?" when it does not decode. */
static char *dup_str(qg_jval v)
{
    char *s = qg_jval_strdup(v);
    return s ? s : qg_xstrdup(v.type == QG_JSON_STRING ? "?" : "-");
}

static void free_key(kc_key *k)
{
    free(k->id), free(k->name), free(k->source), free(k->status), free(k->pause_policy), free(k->until);
    for (size_t i = 0; i < k->n_models; i++) free(k->models[i]);
    free(k->models);
    for (size_t i = 0; i < k->n_p; i++) {
        kc_policy *p = &k->p[i];
        free(p->period), free(p->unit), free(p->boundary), free(p->on_exhausted), free(p->anchor),
            free(p->window_start), free(p->reset);
    }
    free(k->p);
    memset(k, 0, sizeof *k);
}

static void free_list(kc_list *l)
{
    for (size_t i = 0; i < l->n; i++) free_key(&l->k[i]);
    free(l->k);
    memset(l, 0, sizeof *l);
}

enum { P_PERIOD, P_UNIT, P_LIMIT, P_BOUNDARY, P_ON_EXH, P_AUTO, P_ANCHOR, P_ANCHOR_MS, P_WSTART, P_WSTART_MS, P_RESET,
       P_RESET_MS, P_USED, P_REMAINING, P_EXHAUSTED, P_N };
static const char *const policy_members[P_N] = {
    "period", "unit",       "limit",           "boundary", "on_exhausted", "auto_resume", "anchor",    "anchor_ms",
    "window_start", "window_start_ms", "reset", "reset_ms", "used",         "remaining",   "exhausted"};

static int parse_policy(qg_jval v, kc_policy *p)
{
    qg_jval m[P_N];
    if (qg_jval_members(v, policy_members, P_N, m, NULL) < 0) return -1;
    p->period = dup_str(m[P_PERIOD]);
    p->unit = dup_str(m[P_UNIT]);
    p->boundary = dup_str(m[P_BOUNDARY]);
    p->on_exhausted = dup_str(m[P_ON_EXH]);
    p->anchor = dup_str(m[P_ANCHOR]);
    p->window_start = dup_str(m[P_WSTART]);
    p->reset = dup_str(m[P_RESET]);
    p->limit = qg_jval_int(m[P_LIMIT]);
    p->used = qg_jval_int(m[P_USED]);
    p->remaining = qg_jval_int(m[P_REMAINING]);
    p->anchor_ms = qg_jval_int(m[P_ANCHOR_MS]);
    p->window_start_ms = qg_jval_int(m[P_WSTART_MS]);
    p->reset_ms = qg_jval_int(m[P_RESET_MS]);
    p->auto_resume = m[P_AUTO].type == QG_JSON_TRUE;
    p->exhausted = m[P_EXHAUSTED].type == QG_JSON_TRUE;
    return 0;
}

enum { K_ID, K_NAME, K_SOURCE, K_STATUS, K_PAUSED, K_MODELS, K_TOTAL, K_POLICIES, K_N };
static const char *const key_members[K_N] = {"id",     "name",        "source",  "status",
                                             "paused", "models", "total_quota", "policies"};

static int parse_key(qg_jval v, kc_key *k, const char **why)
{
    static const char *const pause_members[] = {"policy", "manual_reset", "until", "until_ms"};
    static const char *const total_members[] = {"limit_usd_micro", "used_usd_micro"};
    qg_jval m[K_N], pm[4], el;
    memset(k, 0, sizeof *k);
    k->until_ms = -1;
    *why = "a key is not an object";
    if (qg_jval_members(v, key_members, K_N, m, why) < 0) return -1;
    if (m[K_ID].type != QG_JSON_STRING) {
        *why = "a key has no \"id\"";
        return -1;
    }
    k->id = dup_str(m[K_ID]);
    k->name = dup_str(m[K_NAME]);
    k->source = dup_str(m[K_SOURCE]);
    k->status = dup_str(m[K_STATUS]);
    if (m[K_PAUSED].type == QG_JSON_OBJECT) {
        *why = "a key's \"paused\" is not the expected object";
        if (qg_jval_members(m[K_PAUSED], pause_members, 4, pm, NULL) < 0) return -1;
        k->paused = true;
        k->pause_policy = dup_str(pm[0]);
        k->manual_reset = pm[1].type == QG_JSON_TRUE;
        k->until = dup_str(pm[2]);
        k->until_ms = qg_jval_int(pm[3]);
    }
    size_t pos = 0, cap = 0;
    if (m[K_MODELS].type == QG_JSON_ARRAY) {
        k->models = qg_xcalloc(1, sizeof *k->models);
        while (qg_jval_next(m[K_MODELS], &pos, &el)) {
            if (k->n_models == cap) k->models = qg_xrealloc(k->models, (cap = cap ? 2 * cap : 4) * sizeof *k->models);
            k->models[k->n_models++] = dup_str(el);
        }
    }
    if (m[K_TOTAL].type == QG_JSON_OBJECT) {
        *why = "a key's \"total_quota\" is not the expected object";
        if (qg_jval_members(m[K_TOTAL], total_members, 2, pm, NULL) < 0) return -1;
        k->has_total = true;
        k->total_limit = qg_jval_int(pm[0]);
        k->total_used = qg_jval_int(pm[1]);
    }
    pos = cap = 0;
    while (qg_jval_next(m[K_POLICIES], &pos, &el)) {
        if (k->n_p == cap) k->p = qg_xrealloc(k->p, (cap = cap ? 2 * cap : 4) * sizeof *k->p);
        memset(&k->p[k->n_p], 0, sizeof k->p[k->n_p]);
        k->n_p++;
        *why = "a policy is not an object";
        if (parse_policy(el, &k->p[k->n_p - 1]) < 0) return -1;
    }
    return 0;
}

static int parse_list(const qg_buf *b, kc_list *l, const char **why)
{
    static const char *const top[] = {"data"};
    qg_jval data, el;
    memset(l, 0, sizeof *l);
    if (qg_jval_members(qg_jval_text(b->data, b->len), top, 1, &data, why) < 0) return -1;
    if (data.type != QG_JSON_ARRAY) {
        *why = "no \"data\" array";
        return -1;
    }
    size_t pos = 0, cap = 0;
    while (qg_jval_next(data, &pos, &el)) {
        if (l->n == cap) l->k = qg_xrealloc(l->k, (cap = cap ? 2 * cap : 8) * sizeof *l->k);
        if (parse_key(el, &l->k[l->n++], why) < 0) {
            free_list(l);
            return -1;
        }
    }
    return 0;
}

/* ---- formatting ---- */

static const char *fmt_time(int64_t ms, char *out)
{
    if (ms <= 0 || qg_format_rfc3339(ms, out, TIME_CAP) <= 0) qg_strlcpy(out, "?", TIME_CAP);
    return out;
}

static bool is_usd(const char *unit) { return !strcmp(unit, "usd"); }

/* An amount in its unit's display form: micro-USD as dollars ("12.50", "0.000125": at
 * least two decimals, exact), requests and tokens as they are; "?" when unknown. */
static void fmt_amount(const char *unit, int64_t v, char *out, size_t cap)
{
    if (v < 0) {
        snprintf(out, cap, "?");
        return;
    }
    if (!is_usd(unit)) {
        snprintf(out, cap, "%lld", (long long)v);
        return;
    }
    char frac[8];
    snprintf(frac, sizeof frac, "%06lld", (long long)(v % 1000000));
    int n = 6;
    while (n > 2 && frac[n - 1] == '0') n--;
    snprintf(out, cap, "%lld.%.*s", (long long)(v / 1000000), n, frac);
}

/* "2/10 requests", "0.25/5.00 usd" */
static void fmt_used_limit(const char *unit, int64_t used, int64_t limit, char *out, size_t cap)
{
    char u[40], l[40];
    fmt_amount(unit, used, u, sizeof u);
    fmt_amount(unit, limit, l, sizeof l);
    snprintf(out, cap, "%s/%s %s", u, l, unit);
}

/* "resets in 59m58s (2026-12-02T00:16:00Z)" */
static void fmt_resets(const kc_policy *p, int64_t now, char *out, size_t cap)
{
    char rel[40];
    if (p->reset_ms <= 0) {
        snprintf(out, cap, "no current window");
        return;
    }
    qg_admin_fmt_relative(p->reset_ms, now, rel, sizeof rel);
    snprintf(out, cap, "resets %s (%s)", rel, p->reset);
}

/* "by 60m until a manual reset (quotagate keys reset ID)", "by 1m until T (in 40s)" */
static void fmt_pause(const kc_key *k, int64_t now, char *out, size_t cap)
{
    char rel[40];
    if (k->manual_reset || k->until_ms <= 0) {
        snprintf(out, cap, "by %s until a manual reset (quotagate keys reset %s)", k->pause_policy, k->id);
        return;
    }
    qg_admin_fmt_relative(k->until_ms, now, rel, sizeof rel);
    snprintf(out, cap, "by %s until %s (%s)", k->pause_policy, k->until, rel);
}

/* ---- list ---- */

static void render_list(FILE *f, const kc_list *l, const char *where, int64_t now)
{
    char at[TIME_CAP], amount[128], resets[160], pause[400];
    int w_id = 2, w_status = 6, w_period = 5; /* "ID", "STATUS", "total" */
    for (size_t i = 0; i < l->n; i++) {
        w_id = QG_MAX(w_id, (int)strlen(l->k[i].id));
        w_status = QG_MAX(w_status, (int)strlen(l->k[i].status));
        for (size_t j = 0; j < l->k[i].n_p; j++) w_period = QG_MAX(w_period, (int)strlen(l->k[i].p[j].period));
    }
    fprintf(f, "keys of the gateway at %s, %s\n\n", where, fmt_time(now, at));
    if (!l->n) {
        fputs("no keys configured\n", f);
        return;
    }
    fprintf(f, "%-*s  %-*s  QUOTA\n", w_id, "ID", w_status, "STATUS");
    size_t paused = 0;
    for (size_t i = 0; i < l->n; i++) {
        const kc_key *k = &l->k[i];
        paused += !strcmp(k->status, "paused");
        bool first = true;
#define LEAD() (first ? fprintf(f, "%-*s  %-*s  ", w_id, k->id, w_status, k->status) \
                      : fprintf(f, "%-*s  %-*s  ", w_id, "", w_status, ""), first = false)
        for (size_t j = 0; j < k->n_p; j++) {
            const kc_policy *p = &k->p[j];
            fmt_used_limit(p->unit, p->used, p->limit, amount, sizeof amount);
            fmt_resets(p, now, resets, sizeof resets);
            LEAD();
            fprintf(f, "%-*s  %s, %s%s\n", w_period, p->period, amount, resets, p->exhausted ? ", exhausted" : "");
        }
        if (k->has_total) {
            fmt_used_limit("usd", k->total_used, k->total_limit, amount, sizeof amount);
            LEAD();
            fprintf(f, "%-*s  %s, never resets%s\n", w_period, "total", amount,
                    k->total_limit >= 0 && k->total_used >= k->total_limit ? ", exhausted" : "");
        }
        if (!k->n_p && !k->has_total) {
            LEAD();
            fputs("no policies, no total quota\n", f);
        }
        if (k->paused) {
            fmt_pause(k, now, pause, sizeof pause);
            LEAD();
            fprintf(f, "paused %s\n", pause);
        }
#undef LEAD
    }
    fprintf(f, "\nkeys: %zu (active %zu, paused %zu)\n", l->n, l->n - paused, paused);
}

/* ---- show ---- */

static void field(FILE *f, int indent, const char *name, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void field(FILE *f, int indent, const char *name, const char *fmt, ...)
{
    va_list ap;
    fprintf(f, "%*s%-14s", indent, "", name);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
}

/* "2", or for usd "250000 (0.25 usd)" */
static void fmt_raw_amount(const char *unit, int64_t v, char *out, size_t cap)
{
    char a[40];
    if (v < 0) snprintf(out, cap, "?");
    else if (!is_usd(unit)) snprintf(out, cap, "%lld", (long long)v);
    else {
        fmt_amount(unit, v, a, sizeof a);
        snprintf(out, cap, "%lld micro-USD (%s usd)", (long long)v, a);
    }
}

/* "2026-12-02T00:16:00Z (1796169360000)", or "none" for null */
static void fmt_time_field(const char *text, int64_t ms, char *out, size_t cap)
{
    if (ms <= 0) snprintf(out, cap, "none");
    else snprintf(out, cap, "%s (%lld ms)", text, (long long)ms);
}

static void render_key(FILE *f, const kc_key *k, int64_t now)
{
    char buf[512], tf[160], rel[40];
    field(f, 2, "id", "%s", k->id);
    field(f, 2, "name", "%s", k->name);
    field(f, 2, "source", "%s", k->source);
    field(f, 2, "status", "%s", k->status);
    if (!k->paused) {
        field(f, 2, "paused", "no");
    } else {
        fmt_pause(k, now, buf, sizeof buf);
        field(f, 2, "paused", "yes, %s", buf);
        field(f, 4, "policy", "%s", k->pause_policy);
        field(f, 4, "manual_reset", "%s", k->manual_reset ? "true" : "false");
        fmt_time_field(k->until, k->until_ms, tf, sizeof tf);
        field(f, 4, "until", "%s", tf);
    }
    if (!k->models) {
        field(f, 2, "models", "any");
    } else {
        size_t n = 0;
        buf[0] = 0;
        for (size_t i = 0; i < k->n_models && n < sizeof buf; i++)
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", i ? ", " : "", k->models[i]);
        field(f, 2, "models", "%s", k->n_models ? buf : "none");
    }
    if (!k->has_total) {
        field(f, 2, "total_quota", "none");
    } else {
        char u[40], l[40];
        fmt_amount("usd", k->total_used, u, sizeof u);
        fmt_amount("usd", k->total_limit, l, sizeof l);
        field(f, 2, "total_quota", "%s of %s usd used, never resets%s", u, l,
              k->total_limit >= 0 && k->total_used >= k->total_limit ? " (exhausted)" : "");
        fmt_raw_amount("usd", k->total_limit, buf, sizeof buf);
        field(f, 4, "limit", "%s", buf);
        fmt_raw_amount("usd", k->total_used, buf, sizeof buf);
        field(f, 4, "used", "%s", buf);
    }
    field(f, 2, "policies", "%zu", k->n_p);
    for (size_t i = 0; i < k->n_p; i++) {
        const kc_policy *p = &k->p[i];
        fmt_used_limit(p->unit, p->used, p->limit, buf, sizeof buf);
        fprintf(f, "\n  policy %zu: %s  %s%s\n", i + 1, p->period, buf, p->exhausted ? ", exhausted" : "");
        field(f, 4, "period", "%s", p->period);
        field(f, 4, "unit", "%s", p->unit);
        fmt_raw_amount(p->unit, p->limit, buf, sizeof buf);
        field(f, 4, "limit", "%s", buf);
        fmt_raw_amount(p->unit, p->used, buf, sizeof buf);
        field(f, 4, "used", "%s", buf);
        fmt_raw_amount(p->unit, p->remaining, buf, sizeof buf);
        field(f, 4, "remaining", "%s", buf);
        field(f, 4, "exhausted", "%s", p->exhausted ? "true" : "false");
        field(f, 4, "boundary", "%s", p->boundary);
        field(f, 4, "on_exhausted", "%s", p->on_exhausted);
        field(f, 4, "auto_resume", "%s", p->auto_resume ? "true" : "false");
        fmt_time_field(p->anchor, p->anchor_ms, tf, sizeof tf);
        field(f, 4, "anchor", "%s", p->anchor_ms > 0 ? tf : "none (the period's default alignment)");
        fmt_time_field(p->window_start, p->window_start_ms, tf, sizeof tf);
        field(f, 4, "window_start", "%s", tf);
        fmt_time_field(p->reset, p->reset_ms, tf, sizeof tf);
        if (p->reset_ms > 0) qg_admin_fmt_relative(p->reset_ms, now, rel, sizeof rel);
        field(f, 4, "reset", "%s%s%s", tf, p->reset_ms > 0 ? ", " : "", p->reset_ms > 0 ? rel : "");
    }
}

/* ---- talking to the gateway ---- */

/* Explains a failed or refused request; returns the exit code (1). */
static int refused(const char *sub, const qg_config *cfg, const char *where, const char *method, const char *path,
                   const char *id, int status, const qg_buf *body)
{
    char code[64], msg[256];
    qg_admin_error_of(body, code, sizeof code, msg, sizeof msg);
    if (status == 404 && !strcmp(code, "key_not_found"))
        fprintf(stderr, "quotagate keys %s: no key with that id: %s (the gateway at %s has none; "
                        "`quotagate keys list` shows the ids)\n", sub, id, where);
    else if (status == 404)
        fprintf(stderr, "quotagate keys %s: the gateway at %s has no %s endpoint (HTTP 404%s%s); is it an older version?\n",
                sub, where, path, *msg ? ": " : "", msg);
    else if (status == 401 && (!cfg->admin_token || !*cfg->admin_token))
        fprintf(stderr, "quotagate keys %s: the gateway at %s wants an admin token, and %s sets no admin_token "
                        "(HTTP 401)\n", sub, where, cfg->path);
    else if (status == 401)
        fprintf(stderr, "quotagate keys %s: the gateway at %s refused the admin_token of %s (HTTP 401); "
                        "is it running with another config?\n", sub, where, cfg->path);
    else if (status == 403)
        fprintf(stderr, "quotagate keys %s: the admin API of the gateway at %s is disabled (HTTP 403): "
                        "its config sets no admin_token\n", sub, where);
    else
        fprintf(stderr, "quotagate keys %s: the gateway at %s answered %s %s with HTTP %d%s%s\n", sub, where, method,
                path, status, *msg ? ": " : "", msg);
    return 1;
}

/* One request; 0 with the 200 answer's body in body, or the exit code (message printed). */
static int ask(const char *sub, const qg_config *cfg, const char *method, const char *path, const char *id,
               qg_buf *body, char *where, size_t where_cap)
{
    qg_admin_peer peer;
    qg_admin_peer_of(cfg, &peer);
    qg_strlcpy(where, peer.where, where_cap);
    char why[256];
    int status = 0;
    int rc = qg_admin_request(&peer, method, path, "quotagate-keys", body, &status, why, sizeof why);
    if (rc == -1) {
        fprintf(stderr, "quotagate keys %s: cannot reach the gateway at %s (%s); is it running with %s?\n", sub,
                peer.where, why, cfg->path);
        return 1;
    }
    if (rc == -2) {
        fprintf(stderr, "quotagate keys %s: no complete answer from the gateway at %s (%s)\n", sub, peer.where, why);
        return 1;
    }
    return status == 200 ? 0 : refused(sub, cfg, peer.where, method, path, id, status, body);
}

static int print_raw(const qg_buf *b)
{
    fwrite(b->data ? b->data : "", 1, b->len, stdout);
    fputc('\n', stdout);
    return 0;
}

static int run(const subcmd *sc, const keys_opts *o, const qg_config *cfg)
{
    char path[600], where[300], at[TIME_CAP];
    const char *method = sc->kind == SC_RESET ? "POST" : "GET";
    if (sc->kind == SC_LIST) snprintf(path, sizeof path, "/admin/keys");
    else snprintf(path, sizeof path, "/admin/keys/%s%s", o->id, sc->kind == SC_RESET ? "/reset" : "");
    qg_buf body;
    qg_buf_init(&body, MAX_RESPONSE);
    int64_t now = qg_now_ms();
    int rc = ask(sc->name, cfg, method, path, o->id, &body, where, sizeof where);
    if (rc == 0 && o->json) rc = print_raw(&body);
    else if (rc == 0) {
        const char *why = NULL;
        kc_list l = {0};
        kc_key k = {0};
        int parsed = sc->kind == SC_LIST ? parse_list(&body, &l, &why) : parse_key(qg_jval_text(body.data, body.len), &k, &why);
        if (parsed < 0) {
            if (sc->kind != SC_LIST) free_key(&k);
            fprintf(stderr, "quotagate keys %s: the gateway at %s answered with JSON of another shape (%s); "
                            "--json prints it\n", sc->name, where, why);
            rc = 1;
        } else if (sc->kind == SC_LIST) {
            render_list(stdout, &l, where, now);
            free_list(&l);
        } else {
            if (sc->kind == SC_RESET)
                printf("key %s reset: its current windows are zeroed and any pause has ended\n\n", k.id);
            printf("key %s of the gateway at %s, %s\n\n", k.id, where, fmt_time(now, at));
            render_key(stdout, &k, now);
            free_key(&k);
        }
    }
    qg_buf_free(&body);
    return rc;
}

/* ---- the command ---- */

int qg_keys_main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("quotagate keys: missing command: list, show ID or reset ID (quotagate keys --help)\n", stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        const subcmd *sc = argc > 2 && strcmp(name, "help") == 0 ? find_subcmd(argv[2]) : NULL;
        if (sc) usage_of(stdout, sc);
        else usage_all(stdout);
        return 0;
    }
    const subcmd *sc = find_subcmd(name);
    if (!sc) {
        fprintf(stderr, "quotagate keys: unknown command %s: list, show ID or reset ID (quotagate keys --help)\n", name);
        return 2;
    }
    if (sc->kind == SC_LATER) {
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
                usage_of(stdout, sc);
                return 0;
            }
        fprintf(stderr, "quotagate keys %s: %s\n", sc->name, later_text);
        return 2;
    }
    keys_opts o;
    int rc = parse_args(sc, argc - 1, argv + 1, &o);
    if (rc >= 0) return rc;
    qg_config *cfg = qg_config_load_or_report(o.config);
    if (!cfg) return 2;
    rc = run(sc, &o, cfg);
    qg_config_free(cfg);
    return rc;
}
