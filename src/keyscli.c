/*
 * keyscli.c — `quotagate keys`: the running gateway's API keys and their quota policies,
 * the manual reset, and the admin-managed keys (create, update, disable, enable, delete).
 * See keyscli.h and docs/keys-cli.md.
 *
 * Every subcommand is one request to the gateway the config names (its listen address,
 * with its admin_token), through adminclient.h's blocking client.  create and update send
 * a JSON body built here from the options: strings escaped by qg_buf_json_str, amounts,
 * times and policy specs checked first, so a typo is a usage error before any request.
 * The JSON that comes back (the key object of the admin API) is read into plain structs,
 * then printed.  With --json the body is printed as received.
 */
#include "keyscli.h"

#include "adminclient.h"
#include "keylocal.h"
#include "config.h"
#include "timefmt.h"

#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_RESPONSE (64u << 20)
#define TIME_CAP 48

/* ---- the commands and their help ---- */

enum { SC_LIST, SC_SHOW, SC_RESET, SC_CREATE, SC_UPDATE, SC_DISABLE, SC_ENABLE, SC_DELETE };

typedef struct {
    const char *name;
    int kind;
    const char *args;   /* after the name, in the usage line */
    const char *what;   /* the paragraph under it */
    const char *opts;   /* its own options, before the common ones; NULL: none */
} subcmd;

static const char spec_text[] =
    "SPEC: KEY=VALUE pairs joined by commas; period and limit are required:\n"
    "  period=P                daily, weekly, monthly, 5h, or minutes such as 90m\n"
    "  limit=N                 what one window allows, in the unit (usd: dollars, e.g. 1.50)\n"
    "  unit=U                  tokens (the default), requests or usd\n"
    "  anchor=T                where the windows are aligned: RFC 3339 with an offset, e.g.\n"
    "                          2026-01-01T00:00:00+08:00 (default 1970-01-01T00:00:00Z)\n"
    "  boundary=B              strict (the default): a request is admitted only if its\n"
    "                          estimate fits what is left; graceful: while anything is left\n"
    "  on_exhausted=E          reject (the default): refuse until the reset; disable: pause\n"
    "                          the key\n"
    "  auto_resume=R           true (the default): a paused key resumes at the reset; false:\n"
    "                          it waits for `quotagate keys reset ID`\n"
    "e.g. --policy period=daily,limit=100000 --policy period=5h,limit=50,unit=requests\n"
    "A SPEC that starts with '{' is a JSON policy object, sent as it is:\n"
    "  --policy '{\"period\":\"monthly\",\"limit\":1.5,\"unit\":\"usd\"}'\n";

static const subcmd subcmds[] = {
    {"list", SC_LIST, "[-c FILE] [--json]",
     "Every key of the running gateway (GET /admin/keys): its id, status, source and secret\n"
     "prefix, per policy what is used of the limit and when the current window resets; a\n"
     "total quota; an expiry; a pause.\n",
     NULL},
    {"show", SC_SHOW, "ID [-c FILE] [--json]", "One key with every field (GET /admin/keys/ID).\n", NULL},
    {"reset", SC_RESET, "ID [-c FILE] [--json]",
     "The manual reset (POST /admin/keys/ID/reset): zeroes the key's current policy windows\n"
     "and ends its pause (on_exhausted: disable with auto_resume: false waits for this), in the\n"
     "gateway and in its store; the total quota is not touched.  Works on keys from the config\n"
     "too.  Prints the key after it.\n",
     NULL},
    {"create", SC_CREATE,
     "NAME [--model M]... [--total-quota USD] [--expires-at RFC3339] [--disabled] [--policy SPEC]... "
     "[-c FILE] [--json]",
     "A new admin key (POST /admin/keys) named NAME (1 to 63 characters, no control\n"
     "characters); the gateway gives it an id, key_<hex>.  Prints its id, name and secret\n"
     "(qg-<48 hex>), then the key as `show` prints it.  The secret is shown this once and\n"
     "never again: store it now.  Without --model the key may use any model; without --policy\n"
     "it has no periodic limit.  --json prints the gateway's answer, the secret included\n"
     "(\"key\").\n",
     "      --model M           allow model M (repeat for more; default: any model)\n"
     "      --total-quota USD   a spending limit in dollars over the key's life (never\n"
     "                          resets), e.g. 25 or 0.50\n"
     "      --expires-at T      the key stops working at T: RFC 3339 with an offset, e.g.\n"
     "                          2027-01-01T00:00:00Z or 2027-01-01T08:00:00+08:00\n"
     "      --disabled          create it disabled (`quotagate keys enable ID` turns it on)\n"
     "      --policy SPEC       a periodic quota policy (repeat for more, at most 16): SPEC\n"
     "                          below\n"},
    {"update", SC_UPDATE,
     "ID [--name N] [--model M]... [--no-models] [--total-quota USD|none] [--expires-at T|none] "
     "[--policy SPEC]... [--no-policies] [--status active|disabled] [-c FILE] [--json]",
     "Changes an admin key (PATCH /admin/keys/ID): only the fields given are sent, the others\n"
     "stay as they are.  --policy replaces the key's whole list of policies with the ones\n"
     "given, --model its whole list of models.  Prints the key after.  A key from the config\n"
     "cannot be changed here (409 key_from_config): edit the config file.\n",
     "      --name N            rename the key (its id stays)\n"
     "      --model M           allow only these models (repeat for more)\n"
     "      --no-models         allow any model again (models: null)\n"
     "      --total-quota USD   the spending limit in dollars over the key's life; none\n"
     "                          removes it\n"
     "      --expires-at T      the expiry (RFC 3339 with an offset); none removes it\n"
     "      --policy SPEC       the key's new policies (repeat for more, at most 16): SPEC\n"
     "                          below\n"
     "      --no-policies       remove every policy (policies: [])\n"
     "      --status S          active or disabled (what `keys enable` / `keys disable` do)\n"},
    {"disable", SC_DISABLE, "ID [-c FILE] [--json]",
     "Disables an admin key (POST /admin/keys/ID/disable): its requests are refused with 403\n"
     "key_disabled until `quotagate keys enable ID`.  Prints the key after.  A key from the\n"
     "config cannot be disabled here (409 key_from_config).\n",
     NULL},
    {"enable", SC_ENABLE, "ID [-c FILE] [--json]",
     "Enables a disabled admin key again (POST /admin/keys/ID/enable).  A key that has expired\n"
     "or that a policy paused stays so: its status says which.  Prints the key after.\n",
     NULL},
    {"delete", SC_DELETE, "ID [-c FILE] [--json]",
     "Deletes an admin key (DELETE /admin/keys/ID): its secret is refused from then on (401\n"
     "invalid_api_key).  Prints \"deleted ID\".  A key from the config cannot be deleted here\n"
     "(409 key_from_config): remove it from the config file.\n",
     NULL},
};

static const char options_text[] =
    "  -c, --config FILE       the YAML configuration (default ./quotagate.yaml): the gateway\n"
    "                          is asked at its listen address, with its admin_token\n"
    "      --json              print the gateway's JSON (its answer as received) instead of\n"
    "                          text\n"
    "      --db[=PATH]         work on the SQLite store (default: the config's) instead of\n"
    "                          asking the gateway: for a gateway that is stopped (a running\n"
    "                          one reads stored keys only at start)\n"
    "  -h, --help              print this text\n";

static const char keys_usage[] =
    "usage: quotagate keys COMMAND [ID|NAME] [OPTIONS] [-c FILE] [--json]\n"
    "commands:\n"
    "  list          every key: status, and per policy used/limit and when it resets\n"
    "  show ID       one key with every field\n"
    "  reset ID      zero the key's current policy windows and end its pause, then show it\n"
    "  create NAME   a new admin key (--model, --total-quota, --expires-at, --disabled,\n"
    "                --policy); prints its secret, shown this once\n"
    "  update ID     change an admin key: only the fields given (--name, --model,\n"
    "                --total-quota, --expires-at, --policy, --status, ...)\n"
    "  disable ID    refuse the key's requests (403 key_disabled) until it is enabled\n"
    "  enable ID     serve a disabled key again\n"
    "  delete ID     delete an admin key\n"
    "options:\n";

static const char exit_text[] =
    "Asks the running gateway (its admin API).  A key's id is key_<hex> for an admin key (made\n"
    "by `keys create`) and its name for a key from the config (keys:); list, show and reset\n"
    "work on both, the others on admin keys only.  Exit: 0 ok, 1 the gateway not reachable or\n"
    "the request refused (its error code and message are printed: no key with that id, a key\n"
    "from the config, a field it refused, admin token refused, admin API disabled), 2 usage\n"
    "or configuration error.\n";

static void usage_all(FILE *f)
{
    fputs(keys_usage, f);
    fputs(options_text, f);
    fputs("Every command takes --help (create and update list their options there).\n", f);
    fputs(exit_text, f);
}

static void usage_of(FILE *f, const subcmd *sc)
{
    fprintf(f, "usage: quotagate keys %s %s\n%s", sc->name, sc->args, sc->what);
    fputs("options:\n", f);
    if (sc->opts) fputs(sc->opts, f);
    fputs(options_text, f);
    if (sc->kind == SC_CREATE || sc->kind == SC_UPDATE) fputs(spec_text, f);
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

/* ---- the arguments ---- */

typedef struct {
    const char *config;
    const char *db;                          /* --db: NULL ask the gateway; "" the config's store */
    const char *id;                          /* the ID; create's NAME */
    bool json;
    const char *name, *total, *expires, *status; /* NULL: not given */
    const char **models, **policies;         /* argv strings, in order */
    size_t n_models, n_policies;
    bool no_models, no_policies;
} keys_opts;

static void free_opts(keys_opts *o)
{
    free(o->models);
    free(o->policies);
    o->models = o->policies = NULL;
}

enum { O_JSON = 256, O_DB, O_NAME, O_MODEL, O_NO_MODELS, O_TOTAL, O_EXPIRES, O_DISABLED, O_POLICY, O_NO_POLICIES,
       O_STATUS };

#define SC_ALL 0xffu
#define SC_BIT(k) (1u << (k))
#define SC_EDIT (SC_BIT(SC_CREATE) | SC_BIT(SC_UPDATE))

static const struct {
    const char *name;
    int has_arg, val;
    unsigned subcmds;   /* which subcommands take it */
} opt_defs[] = {
    {"config", 1, 'c', SC_ALL},          {"json", 0, O_JSON, SC_ALL},
    {"db", 2, O_DB, SC_ALL},
    {"help", 0, 'h', SC_ALL},            {"name", 1, O_NAME, SC_BIT(SC_UPDATE)},
    {"model", 1, O_MODEL, SC_EDIT},      {"no-models", 0, O_NO_MODELS, SC_BIT(SC_UPDATE)},
    {"total-quota", 1, O_TOTAL, SC_EDIT}, {"expires-at", 1, O_EXPIRES, SC_EDIT},
    {"disabled", 0, O_DISABLED, SC_BIT(SC_CREATE)}, {"policy", 1, O_POLICY, SC_EDIT},
    {"no-policies", 0, O_NO_POLICIES, SC_BIT(SC_UPDATE)}, {"status", 1, O_STATUS, SC_BIT(SC_UPDATE)},
};

/* Whether id can be asked for: it goes in the request path percent-encoded (put_id), so
 * only what no key id contains is refused here. */
static const char *id_problem(const char *id)
{
    if (!*id) return "is empty";
    if (strchr(id, '/')) return "contains '/' (no key id does)";
    if (strchr(id, ' ')) return "contains a space (no key id does)";
    return NULL;
}

/* Why a new key name cannot be sent, or NULL (the gateway checks the rest: 1..63 chars). */
static const char *name_problem(const char *name)
{
    if (!*name) return "is empty";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return "contains a control character";
    return NULL;
}

static int usage_error(const subcmd *sc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const subcmd *sc, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "quotagate keys %s: ", sc->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    usage_hint(sc);
    return 2;
}

/* argv[0] is the subcommand.  Returns -1 to go on, or the exit code.  o needs free_opts
 * either way. */
static int parse_args(const subcmd *sc, int argc, char **argv, keys_opts *o)
{
    struct option opts[QG_ARRAY_LEN(opt_defs) + 1];
    size_t n_opts = 0;
    for (size_t i = 0; i < QG_ARRAY_LEN(opt_defs); i++)
        if (opt_defs[i].subcmds & SC_BIT(sc->kind))
            opts[n_opts++] = (struct option){opt_defs[i].name, opt_defs[i].has_arg, NULL, opt_defs[i].val};
    opts[n_opts] = (struct option){0, 0, 0, 0};
    *o = (keys_opts){.config = "quotagate.yaml"};
    o->models = qg_xcalloc((size_t)argc, sizeof *o->models);
    o->policies = qg_xcalloc((size_t)argc, sizeof *o->policies);
    optind = 0; /* a fresh scan (glibc), options and the ID in any order */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': o->config = optarg; break;
        case O_JSON: o->json = true; break;
        case O_DB: o->db = optarg ? optarg : ""; break; /* "--db=PATH"; "--db" alone: the config's store
                                                            (a separate PATH would read as the ID) */
        case 'h': usage_of(stdout, sc); return 0;
        case O_NAME: o->name = optarg; break;
        case O_MODEL: o->models[o->n_models++] = optarg; break;
        case O_NO_MODELS: o->no_models = true; break;
        case O_TOTAL: o->total = optarg; break;
        case O_EXPIRES: o->expires = optarg; break;
        case O_DISABLED: o->status = "disabled"; break;
        case O_POLICY: o->policies[o->n_policies++] = optarg; break;
        case O_NO_POLICIES: o->no_policies = true; break;
        case O_STATUS: o->status = optarg; break;
        default:
            return usage_error(sc, "%s %s", c == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
        }
    }
    int want = sc->kind == SC_LIST ? 0 : 1;
    if (argc - optind < want) {
        if (sc->kind == SC_CREATE) return usage_error(sc, "missing NAME (the new key's name)");
        return usage_error(sc, "missing ID (`quotagate keys list` shows the ids)");
    }
    if (argc - optind > want) return usage_error(sc, "unexpected argument %s", argv[optind + want]);
    if (!want) return -1;
    o->id = argv[optind];
    const char *why = sc->kind == SC_CREATE ? name_problem(o->id) : id_problem(o->id);
    if (why) return usage_error(sc, "the %s \"%s\" %s", sc->kind == SC_CREATE ? "name" : "id", o->id, why);
    if (o->name && (why = name_problem(o->name))) return usage_error(sc, "--name \"%s\" %s", o->name, why);
    for (size_t i = 0; i < o->n_models; i++)
        if (!*o->models[i]) return usage_error(sc, "--model needs a model name");
    if (o->n_models && o->no_models) return usage_error(sc, "--model and --no-models cannot go together");
    if (o->n_policies && o->no_policies) return usage_error(sc, "--policy and --no-policies cannot go together");
    if (sc->kind == SC_UPDATE && o->status && strcmp(o->status, "active") && strcmp(o->status, "disabled"))
        return usage_error(sc, "--status is active or disabled, not \"%s\"", o->status);
    if (sc->kind == SC_UPDATE && !o->name && !o->n_models && !o->no_models && !o->total && !o->expires && !o->status &&
        !o->n_policies && !o->no_policies)
        return usage_error(sc, "nothing to change: give --name, --model, --no-models, --total-quota, --expires-at, "
                               "--policy, --no-policies or --status");
    return -1;
}

/* ---- the request bodies ---- */

/* Why s is not an amount to send as a JSON number, or NULL: it must be one JSON number
 * as written (no '+', no leading '.' or 0, no hex: jscan checks), finite, not negative,
 * and more than 0 unless zero_ok.  It is sent as the user wrote it. */
static const char *amount_problem(const char *s, bool zero_ok)
{
    static const char *const name[] = {"n"};
    char tmp[96];
    size_t n = strlen(s);
    qg_json_span sp;
    const char *why;
    if (!n || n > 64) return "is not a number (write it as 25, 0.5 or 1e6)";
    snprintf(tmp, sizeof tmp, "{\"n\":%s}", s);
    if (qg_jscan_object(tmp, strlen(tmp), name, 1, &sp, NULL, &why) < 0 || sp.type != QG_JSON_NUMBER || sp.len != n)
        return "is not a number (write it as 25, 0.5 or 1e6)";
    double v = strtod(s, NULL);
    if (!isfinite(v)) return "is too large";
    if (s[0] == '-') return "is negative";
    if (!zero_ok && v == 0) return "must be more than 0";
    return NULL;
}

static const char *time_problem(const char *s)
{
    int64_t ms;
    if (qg_parse_rfc3339(qg_slice_of(s), &ms) < 0)
        return "is not an RFC 3339 time (e.g. 2027-01-01T00:00:00Z or 2027-01-01T08:00:00+08:00)";
    return NULL;
}

/* The next member of an object being written: a comma after the first, then "name": */
static void put_member(qg_buf *b, bool *first, const char *name)
{
    if (!*first) qg_buf_puts(b, ",");
    *first = false;
    qg_buf_json_str(b, name);
    qg_buf_puts(b, ":");
}

enum { S_PERIOD, S_LIMIT, S_UNIT, S_ANCHOR, S_BOUNDARY, S_ON_EXH, S_AUTO, S_N };
static const char *const spec_names[S_N] = {"period", "limit", "unit", "anchor", "boundary", "on_exhausted",
                                            "auto_resume"};
static const char *const spec_choices[S_N] = {[S_UNIT] = "tokens|requests|usd", [S_BOUNDARY] = "strict|graceful",
                                              [S_ON_EXH] = "reject|disable", [S_AUTO] = "true|false"};

/* Whether v is one of the '|'-separated words of choices. */
static bool one_of(const char *v, const char *choices)
{
    size_t n = strlen(v);
    for (const char *c = choices; *c;) {
        size_t w = strcspn(c, "|");
        if (w == n && !memcmp(c, v, n)) return true;
        c += w + (c[w] == '|');
    }
    return false;
}

/* A --policy SPEC as a JSON object appended to b; 0, or -1 with the reason in why. */
static int put_policy(qg_buf *b, const char *spec, char *why, size_t cap)
{
    const char *s = spec;
    while (*s == ' ' || *s == '\t' || *s == '\n') s++;
    if (*s == '{') { /* a JSON object: checked whole, with period and limit, and sent as it is */
        static const char *const need[] = {"period", "limit"};
        qg_json_span sp[2];
        const char *w = "not a JSON object";
        if (qg_jscan_object(spec, strlen(spec), need, 2, sp, NULL, &w) < 0) {
            snprintf(why, cap, "is not a JSON object (%s)", w);
            return -1;
        }
        for (int i = 0; i < 2; i++)
            if (sp[i].type == QG_JSON_NONE) {
                snprintf(why, cap, "has no \"%s\" (period and limit are required)", need[i]);
                return -1;
            }
        qg_buf_puts(b, spec);
        return 0;
    }
    char *val[S_N] = {0};
    int rc = -1;
    for (const char *p = spec;;) {
        const char *end = p + strcspn(p, ",");
        qg_slice item = qg_slice_trim((qg_slice){p, (size_t)(end - p)});
        const char *eq = memchr(item.p, '=', item.n);
        if (!item.n) {
            snprintf(why, cap, "has an empty item (KEY=VALUE,KEY=VALUE)");
            goto out;
        }
        if (!eq) {
            snprintf(why, cap, "has \"%.*s\", not KEY=VALUE", (int)item.n, item.p);
            goto out;
        }
        qg_slice k = qg_slice_trim((qg_slice){item.p, (size_t)(eq - item.p)});
        qg_slice v = qg_slice_trim((qg_slice){eq + 1, (size_t)(item.p + item.n - eq - 1)});
        int i = 0;
        while (i < S_N && !qg_slice_eq(k, spec_names[i])) i++;
        if (i == S_N) {
            snprintf(why, cap, "has an unknown field \"%.*s\" (period, limit, unit, anchor, boundary, on_exhausted, "
                               "auto_resume)", (int)k.n, k.p);
            goto out;
        }
        if (val[i]) {
            snprintf(why, cap, "gives %s twice", spec_names[i]);
            goto out;
        }
        if (!v.n) {
            snprintf(why, cap, "gives %s no value", spec_names[i]);
            goto out;
        }
        val[i] = qg_slice_dup(v);
        if (!*end) break;
        p = end + 1;
    }
    for (int i = 0; i < S_N; i++) {
        const char *problem = NULL;
        if (!val[i]) {
            if (i == S_PERIOD || i == S_LIMIT) {
                snprintf(why, cap, "has no %s (period and limit are required)", spec_names[i]);
                goto out;
            }
            continue;
        }
        if (spec_choices[i] && !one_of(val[i], spec_choices[i])) {
            snprintf(why, cap, "has %s=%s, not one of %s", spec_names[i], val[i], spec_choices[i]);
            goto out;
        }
        if (i == S_LIMIT) problem = amount_problem(val[i], false);
        if (i == S_ANCHOR) problem = time_problem(val[i]);
        if (problem) {
            snprintf(why, cap, "has %s \"%s\", which %s", spec_names[i], val[i], problem);
            goto out;
        }
    }
    bool first = true;
    qg_buf_puts(b, "{");
    for (int i = 0; i < S_N; i++) {
        if (!val[i]) continue;
        put_member(b, &first, spec_names[i]);
        if (i == S_LIMIT || i == S_AUTO) qg_buf_puts(b, val[i]); /* a checked number; true or false */
        else qg_buf_json_str(b, val[i]);
    }
    qg_buf_puts(b, "}");
    rc = 0;
out:
    for (int i = 0; i < S_N; i++) free(val[i]);
    return rc;
}

/* The JSON body of create (POST /admin/keys) or update (PATCH /admin/keys/ID) from the
 * options: only the fields given.  0, or the exit code (2) after a usage error. */
static int build_body(const subcmd *sc, const keys_opts *o, qg_buf *b)
{
    const char *problem;
    bool first = true;
    qg_buf_puts(b, "{");
    if (sc->kind == SC_CREATE || o->name) {
        put_member(b, &first, "name");
        qg_buf_json_str(b, sc->kind == SC_CREATE ? o->id : o->name);
    }
    if (o->n_models || o->no_models) {
        put_member(b, &first, "models");
        qg_buf_puts(b, o->no_models ? "null" : "[");
        for (size_t i = 0; i < o->n_models; i++) {
            if (i) qg_buf_puts(b, ",");
            qg_buf_json_str(b, o->models[i]);
        }
        if (!o->no_models) qg_buf_puts(b, "]");
    }
    if (o->total) {
        if (strcmp(o->total, "none") && (problem = amount_problem(o->total, true)))
            return usage_error(sc, "--total-quota \"%s\" %s", o->total, problem);
        put_member(b, &first, "total_quota");
        qg_buf_puts(b, strcmp(o->total, "none") ? o->total : "null");
    }
    if (o->expires) {
        bool none = !strcmp(o->expires, "none");
        if (!none && (problem = time_problem(o->expires)))
            return usage_error(sc, "--expires-at \"%s\" %s", o->expires, problem);
        put_member(b, &first, "expires_at");
        qg_buf_json_str(b, none ? NULL : o->expires);
    }
    if (o->status) {
        put_member(b, &first, "status");
        qg_buf_json_str(b, o->status);
    }
    if (o->n_policies || o->no_policies) {
        char why[400];
        put_member(b, &first, "policies");
        qg_buf_puts(b, "[");
        for (size_t i = 0; i < o->n_policies; i++) {
            if (i) qg_buf_puts(b, ",");
            if (put_policy(b, o->policies[i], why, sizeof why) < 0)
                return usage_error(sc, "--policy \"%s\" %s", o->policies[i], why);
        }
        qg_buf_puts(b, "]");
    }
    qg_buf_puts(b, "}");
    return 0;
}

/* The id as a path segment: every byte but letters, digits and - . _ ~ as %XX (the gateway
 * decodes it); "." and ".." wholly, so that nothing takes them for path steps. */
static void put_id(qg_buf *b, const char *id)
{
    static const char hex[] = "0123456789ABCDEF";
    bool dots = !strcmp(id, ".") || !strcmp(id, "..");
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        unsigned char ch = *p;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '_' || ch == '~' || (ch == '.' && !dots)) {
            qg_buf_append(b, p, 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            qg_buf_append(b, e, 3);
        }
    }
}

/* ---- the model ---- */

typedef struct {
    char *period, *unit, *boundary, *on_exhausted, *anchor, *window_start, *reset;
    int64_t limit, used, remaining;              /* -1 unknown */
    int64_t anchor_ms, window_start_ms, reset_ms; /* -1 null */
    bool auto_resume, exhausted;
} kc_policy;

/* An optional time member: absent (not present), null (text NULL), or RFC 3339 text with
 * its epoch ms (-1 when it does not parse). */
typedef struct {
    bool present;
    char *text;
    int64_t ms;
} kc_time;

typedef struct {
    char *id, *name, *source, *status;
    bool has_source;
    bool has_prefix;                             /* prefix: NULL for null (a key from the config) */
    char *prefix;
    bool has_disabled, disabled;
    kc_time expires, created, updated;
    char *secret;                                /* "key": create's answer only; NULL otherwise */
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
    char *next;                                  /* the next page's first id; NULL: no more */
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
    free(k->prefix), free(k->expires.text), free(k->created.text), free(k->updated.text);
    if (k->secret) memset(k->secret, 0, strlen(k->secret));
    free(k->secret);
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
    free(l->next);
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
    /* without the epoch ms members (this gateway's extra), the RFC 3339 text */
    const struct { int member; const char *text; int64_t *ms; } times[] = {
        {P_ANCHOR, p->anchor, &p->anchor_ms}, {P_WSTART, p->window_start, &p->window_start_ms},
        {P_RESET, p->reset, &p->reset_ms}};
    for (size_t i = 0; i < QG_ARRAY_LEN(times); i++) {
        int64_t ms;
        if (*times[i].ms < 0 && m[times[i].member].type == QG_JSON_STRING &&
            qg_parse_rfc3339(qg_slice_of(times[i].text), &ms) == 0)
            *times[i].ms = ms;
    }
    p->auto_resume = m[P_AUTO].type == QG_JSON_TRUE;
    p->exhausted = m[P_EXHAUSTED].type == QG_JSON_TRUE;
    return 0;
}

enum { K_ID, K_NAME, K_SOURCE, K_STATUS, K_PAUSED, K_MODELS, K_TOTAL, K_POLICIES, K_PREFIX, K_DISABLED, K_EXPIRES,
       K_EXPIRES_MS, K_CREATED, K_CREATED_MS, K_UPDATED, K_UPDATED_MS, K_SECRET, K_N };
static const char *const key_members[K_N] = {
    "id",         "name",          "source",     "status",        "paused",     "models",
    "total_quota", "policies",     "prefix",     "disabled",      "expires_at", "expires_at_ms",
    "created_at", "created_at_ms", "updated_at", "updated_at_ms", "key"};

/* v: the RFC 3339 member; ms: its epoch ms twin, which this gateway adds (else the text parsed) */
static void parse_time(qg_jval v, qg_jval ms, kc_time *t)
{
    t->present = v.type != QG_JSON_NONE;
    t->text = qg_jval_strdup(v);
    t->ms = t->text ? qg_jval_int(ms) : -1;
    int64_t parsed;
    if (t->text && t->ms < 0 && qg_parse_rfc3339(qg_slice_of(t->text), &parsed) == 0) t->ms = parsed;
}

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
    k->has_source = m[K_SOURCE].type != QG_JSON_NONE;
    k->has_prefix = m[K_PREFIX].type != QG_JSON_NONE;
    k->prefix = qg_jval_strdup(m[K_PREFIX]);
    k->has_disabled = m[K_DISABLED].type == QG_JSON_TRUE || m[K_DISABLED].type == QG_JSON_FALSE;
    k->disabled = m[K_DISABLED].type == QG_JSON_TRUE;
    parse_time(m[K_EXPIRES], m[K_EXPIRES_MS], &k->expires);
    parse_time(m[K_CREATED], m[K_CREATED_MS], &k->created);
    parse_time(m[K_UPDATED], m[K_UPDATED_MS], &k->updated);
    k->secret = qg_jval_strdup(m[K_SECRET]);
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
    static const char *const top[] = {"data", "next"};
    qg_jval tm[2], data, el;
    memset(l, 0, sizeof *l);
    if (qg_jval_members(qg_jval_text(b->data, b->len), top, 2, tm, why) < 0) return -1;
    data = tm[0];
    l->next = qg_jval_strdup(tm[1]);
    if (data.type != QG_JSON_ARRAY) {
        *why = "no \"data\" array";
        free_list(l);
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

/* The key's secret prefix for the list: "-" for null or absent. */
static const char *prefix_of(const kc_key *k) { return k->prefix ? k->prefix : "-"; }

/* The key's leading columns: ID, NAME when some key's name is not its id, STATUS, and
 * SOURCE and PREFIX when the gateway sends them; blank on the key's further lines. */
typedef struct {
    int id, name, status, source, prefix; /* widths; name/source/prefix 0: no such column */
} list_cols;

static void lead(FILE *f, const list_cols *w, const kc_key *k, bool first)
{
    fprintf(f, "%-*s  ", w->id, first ? k->id : "");
    if (w->name) fprintf(f, "%-*s  ", w->name, first ? k->name : "");
    fprintf(f, "%-*s  ", w->status, first ? k->status : "");
    if (w->source) fprintf(f, "%-*s  ", w->source, first ? (k->has_source ? k->source : "-") : "");
    if (w->prefix) fprintf(f, "%-*s  ", w->prefix, first ? prefix_of(k) : "");
}

static void render_list(FILE *f, const kc_list *l, const char *where, int64_t now)
{
    char at[TIME_CAP], amount[128], resets[160], pause[400], rel[40];
    list_cols w = {2, 0, 6, 0, 0}; /* "ID", "STATUS"; "NAME", "SOURCE", "PREFIX" if wanted */
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->k[i].id, l->k[i].name)) w.name = 4;
    int w_period = 5;           /* "total" */
    for (size_t i = 0; i < l->n; i++) {
        const kc_key *k = &l->k[i];
        w.id = QG_MAX(w.id, (int)strlen(k->id));
        w.status = QG_MAX(w.status, (int)strlen(k->status));
        if (w.name) w.name = QG_MAX(w.name, (int)strlen(k->name));
        if (k->has_source) w.source = QG_MAX(QG_MAX(w.source, 6), (int)strlen(k->source));
        if (k->has_prefix) w.prefix = QG_MAX(QG_MAX(w.prefix, 6), (int)strlen(prefix_of(k)));
        for (size_t j = 0; j < k->n_p; j++) w_period = QG_MAX(w_period, (int)strlen(k->p[j].period));
    }
    fprintf(f, "keys of the gateway at %s, %s\n\n", where, fmt_time(now, at));
    if (!l->n) {
        fputs("no keys (`quotagate keys create NAME` makes one)\n", f);
        return;
    }
    fprintf(f, "%-*s  ", w.id, "ID");
    if (w.name) fprintf(f, "%-*s  ", w.name, "NAME");
    fprintf(f, "%-*s  ", w.status, "STATUS");
    if (w.source) fprintf(f, "%-*s  ", w.source, "SOURCE");
    if (w.prefix) fprintf(f, "%-*s  ", w.prefix, "PREFIX");
    fputs("QUOTA\n", f);
    size_t active = 0, paused = 0, disabled = 0, expired = 0;
    for (size_t i = 0; i < l->n; i++) {
        const kc_key *k = &l->k[i];
        active += !strcmp(k->status, "active");
        paused += !strcmp(k->status, "paused");
        disabled += !strcmp(k->status, "disabled");
        expired += !strcmp(k->status, "expired");
        bool first = true;
#define LEAD() (lead(f, &w, k, first), first = false)
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
        if (k->expires.text) {
            LEAD();
            if (k->expires.ms <= 0) {
                fprintf(f, "expires %s\n", k->expires.text);
            } else {
                qg_admin_fmt_relative(k->expires.ms, now, rel, sizeof rel);
                fprintf(f, "%s %s (%s)\n", k->expires.ms > now ? "expires" : "expired", k->expires.text, rel);
            }
        }
#undef LEAD
    }
    fprintf(f, "\nkeys: %zu (active %zu, paused %zu", l->n, active, paused);
    if (disabled) fprintf(f, ", disabled %zu", disabled);
    if (expired) fprintf(f, ", expired %zu", expired);
    fputs(")\n", f);
    if (l->next)
        fprintf(f, "more keys follow: this is the gateway's first page (GET /admin/keys?after=%s for the next)\n",
                l->next);
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

/* An optional time field: "T (ms ms), in REL" / "T (ms ms), REL ago", "none" for null;
 * nothing when the gateway does not send it. */
static void time_field(FILE *f, const char *name, const kc_time *t, int64_t now)
{
    char rel[40];
    if (!t->present) return;
    if (!t->text) field(f, 2, name, "none");
    else if (t->ms <= 0) field(f, 2, name, "%s", t->text);
    else {
        qg_admin_fmt_relative(t->ms, now, rel, sizeof rel);
        field(f, 2, name, "%s (%lld ms), %s", t->text, (long long)t->ms, rel);
    }
}

static void render_key(FILE *f, const kc_key *k, int64_t now)
{
    char buf[512], tf[160], rel[40];
    field(f, 2, "id", "%s", k->id);
    field(f, 2, "name", "%s", k->name);
    field(f, 2, "source", "%s", k->source);
    if (k->has_prefix) field(f, 2, "prefix", "%s", k->prefix ? k->prefix : "none");
    field(f, 2, "status", "%s", k->status);
    if (k->has_disabled) field(f, 2, "disabled", "%s", k->disabled ? "true" : "false");
    time_field(f, "expires_at", &k->expires, now);
    time_field(f, "created_at", &k->created, now);
    time_field(f, "updated_at", &k->updated, now);
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

/* Control characters of a server's text as '?', so a message cannot drive the terminal. */
static void printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

/* Explains a refused request: the gateway's error as `quotagate keys: CODE: MESSAGE`, then,
 * where there is more to say here, what it means.  Returns the exit code (1). */
static int refused(const char *sub, const qg_config *cfg, const char *where, const char *method, const char *path,
                   const char *id, int status, const qg_buf *body)
{
    char code[64], msg[512];
    qg_admin_error_of(body, code, sizeof code, msg, sizeof msg);
    printable(code), printable(msg);
    if (*code) fprintf(stderr, "quotagate keys: %s: %s\n", code, *msg ? msg : "(no message)");
    if (status == 404 && !strcmp(code, "key_not_found"))
        fprintf(stderr, "quotagate keys %s: no key with that id: %s (the gateway at %s has none; "
                        "`quotagate keys list` shows the ids)\n", sub, id, where);
    else if (status == 409 && !strcmp(code, "key_from_config"))
        ; /* the gateway's message says it all: edit the config */
    else if (status == 404 || status == 405)
        fprintf(stderr, "quotagate keys %s: the gateway at %s does not take %s %s (HTTP %d); is it an older version?\n",
                sub, where, method, path, status);
    else if (status == 401 && (!cfg->admin_token || !*cfg->admin_token))
        fprintf(stderr, "quotagate keys %s: the gateway at %s wants an admin token, and %s sets no admin_token "
                        "(HTTP 401)\n", sub, where, cfg->path);
    else if (status == 401)
        fprintf(stderr, "quotagate keys %s: the gateway at %s refused the admin_token of %s (HTTP 401); "
                        "is it running with another config?\n", sub, where, cfg->path);
    else if (status == 403 && (!*code || !strcmp(code, "admin_disabled")))
        fprintf(stderr, "quotagate keys %s: the admin API of the gateway at %s is disabled (HTTP 403): "
                        "its config sets no admin_token\n", sub, where);
    else if (!*code)
        fprintf(stderr, "quotagate keys %s: the gateway at %s answered %s %s with HTTP %d%s%s\n", sub, where, method,
                path, status, *msg ? ": " : "", msg);
    return 1;
}

/* One request (req: its JSON body, or NULL); 0 with a 2xx answer's body in body, or the
 * exit code (message printed). */
static int ask(const char *sub, const qg_config *cfg, const char *method, const char *path, const qg_buf *req,
               const char *id, qg_buf *body, char *where, size_t where_cap)
{
    qg_admin_peer peer;
    qg_admin_peer_of(cfg, &peer);
    qg_strlcpy(where, peer.where, where_cap);
    char why[256];
    int status = 0;
    int rc = qg_admin_request_body(&peer, method, path, "quotagate-keys", req ? req->data : NULL, req ? req->len : 0,
                                   body, &status, why, sizeof why);
    if (rc == -1) {
        fprintf(stderr, "quotagate keys %s: cannot reach the gateway at %s (%s); is it running with %s?\n", sub,
                peer.where, why, cfg->path);
        return 1;
    }
    if (rc == -2) {
        fprintf(stderr, "quotagate keys %s: no complete answer from the gateway at %s (%s)\n", sub, peer.where, why);
        return 1;
    }
    return status >= 200 && status < 300 ? 0 : refused(sub, cfg, peer.where, method, path, id, status, body);
}

/* --db: the same operation on the store file, answered in the admin API's shapes. */
static int from_store(const subcmd *sc, const keys_opts *o, const qg_config *cfg, const qg_buf *req, qg_buf *body,
                      char *where, size_t where_cap)
{
    static const qg_kl_op op_of[] = {[SC_LIST] = QG_KL_LIST,     [SC_SHOW] = QG_KL_SHOW,     [SC_RESET] = QG_KL_RESET,
                                     [SC_CREATE] = QG_KL_CREATE, [SC_UPDATE] = QG_KL_UPDATE, [SC_DISABLE] = QG_KL_DISABLE,
                                     [SC_ENABLE] = QG_KL_ENABLE, [SC_DELETE] = QG_KL_DELETE};
    const char *db = *o->db ? o->db : cfg->store_sqlite;
    snprintf(where, where_cap, "store %s", db);
    char err[600];
    int status = qg_keys_local(cfg, db, op_of[sc->kind], o->id, req ? req->data : NULL, req ? req->len : 0, body, err,
                               sizeof err);
    if (status < 0) {
        fprintf(stderr, "quotagate keys %s: %s\n", sc->name, err);
        return 1;
    }
    return status >= 200 && status < 300 ? 0 : refused(sc->name, cfg, where, "", "", o->id, status, body);
}

static int print_raw(const qg_buf *b)
{
    fwrite(b->data ? b->data : "", 1, b->len, stdout);
    fputc('\n', stdout);
    return 0;
}

/* What is printed above the key after each command that changes it. */
static void headline(const subcmd *sc, const kc_key *k)
{
    switch (sc->kind) {
    case SC_RESET: printf("key %s reset: its current windows are zeroed and any pause has ended\n\n", k->id); break;
    case SC_CREATE:
        printf("created key %s, name %s\n", k->id, k->name);
        printf("key: %s  (shown once: store it now)\n\n", k->secret);
        break;
    case SC_UPDATE: printf("key %s updated\n\n", k->id); break;
    case SC_DISABLE:
        printf("key %s disabled: its requests are refused (403 key_disabled) until `quotagate keys enable %s`\n\n",
               k->id, k->id);
        break;
    case SC_ENABLE:
        if (!strcmp(k->status, "active")) printf("key %s enabled\n\n", k->id);
        else printf("key %s enabled, but its status is %s\n\n", k->id, k->status);
        break;
    default: break;
    }
}

static int run(const subcmd *sc, const keys_opts *o, const qg_config *cfg, const qg_buf *req)
{
    static const char *const method_of[] = {[SC_LIST] = "GET",     [SC_SHOW] = "GET",     [SC_RESET] = "POST",
                                            [SC_CREATE] = "POST",  [SC_UPDATE] = "PATCH", [SC_DISABLE] = "POST",
                                            [SC_ENABLE] = "POST",  [SC_DELETE] = "DELETE"};
    static const char *const suffix_of[] = {[SC_RESET] = "/reset", [SC_DISABLE] = "/disable", [SC_ENABLE] = "/enable",
                                            [SC_DELETE] = NULL};
    char where[300], at[TIME_CAP];
    qg_buf path;
    qg_buf_init(&path, 0);
    qg_buf_puts(&path, "/admin/keys");
    if (sc->kind != SC_LIST && sc->kind != SC_CREATE) {
        qg_buf_puts(&path, "/");
        put_id(&path, o->id);
        if (suffix_of[sc->kind]) qg_buf_puts(&path, suffix_of[sc->kind]);
    }
    qg_buf_append(&path, "", 1); /* NUL-terminated */
    qg_buf body;
    qg_buf_init(&body, MAX_RESPONSE);
    int rc = o->db ? from_store(sc, o, cfg, req, &body, where, sizeof where)
                   : ask(sc->name, cfg, method_of[sc->kind], path.data, req, o->id, &body, where, sizeof where);
    int64_t now = qg_now_ms(); /* after the answer: what it says happened is not "in <1s" */
    if (rc == 0 && o->json) {
        rc = print_raw(&body);
    } else if (rc == 0 && sc->kind == SC_DELETE) {
        printf("deleted %s\n", o->id);
    } else if (rc == 0) {
        const char *why = NULL;
        kc_list l = {0};
        kc_key k = {0};
        int parsed = sc->kind == SC_LIST ? parse_list(&body, &l, &why) : parse_key(qg_jval_text(body.data, body.len), &k, &why);
        if (parsed == 0 && sc->kind == SC_CREATE && !k.secret) {
            parsed = -1;
            why = "no \"key\": the secret";
        }
        if (parsed < 0) {
            if (sc->kind != SC_LIST) free_key(&k);
            fprintf(stderr, "quotagate keys %s: the gateway at %s answered with JSON of another shape (%s); "
                            "--json prints it\n", sc->name, where, why);
            rc = 1;
        } else if (sc->kind == SC_LIST) {
            render_list(stdout, &l, where, now);
            free_list(&l);
        } else {
            headline(sc, &k);
            printf("key %s of the gateway at %s, %s\n\n", k.id, where, fmt_time(now, at));
            render_key(stdout, &k, now);
            free_key(&k);
        }
    }
    if (body.data) memset(body.data, 0, body.len); /* create's answer holds the secret */
    qg_buf_free(&body);
    qg_buf_free(&path);
    return rc;
}

/* ---- the command ---- */

static const char command_list[] = "list, show, reset, create, update, disable, enable or delete";

int qg_keys_main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "quotagate keys: missing command: %s (quotagate keys --help)\n", command_list);
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
        fprintf(stderr, "quotagate keys: unknown command %s: %s (quotagate keys --help)\n", name, command_list);
        return 2;
    }
    keys_opts o;
    qg_buf req;
    qg_buf_init(&req, 0);
    int rc = parse_args(sc, argc - 1, argv + 1, &o);
    if (rc < 0 && (sc->kind == SC_CREATE || sc->kind == SC_UPDATE)) rc = build_body(sc, &o, &req) ? 2 : -1;
    if (rc < 0) {
        qg_config *cfg = qg_config_load_or_report(o.config);
        if (!cfg) rc = 2;
        else {
            rc = run(sc, &o, cfg, req.len ? &req : NULL);
            qg_config_free(cfg);
        }
    }
    qg_buf_free(&req);
    free_opts(&o);
    return rc;
}
