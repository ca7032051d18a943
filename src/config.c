/*
 * config.c — loads and validates the gateway configuration (SPEC §2) from YAML.
 *
 * Why it is built this way:
 *
 *  - The file is parsed twice by libyaml.  A first pass over the event stream rejects what
 *    the document API would happily build: nesting deeper than CFG_MAX_DEPTH, a second
 *    document, syntax errors (with their line).  The second pass loads the document tree,
 *    which we walk with node line numbers at hand for every message.
 *
 *  - The schema is data: every mapping (top level, limits, provider, account, bucket, key,
 *    policy, model) is a table of `field`s — name, type, where the value goes, its bounds.
 *    walk_map() applies a table to a YAML mapping: it rejects unknown fields (suggesting
 *    the nearest known name, because the commonest mistake is a typo), duplicate fields and
 *    missing required ones, and stores every value through one setter per type.  Rules that
 *    tie fields together (a window bucket needs a period) run after the walk.
 *
 *  - Nothing stops at the first problem: every error is appended to `errs` as
 *    "file:line: field.path: message" and the walk goes on, so one `quotagate check` shows
 *    all of them.  Any error means no config at all (all-or-nothing).
 *
 *  - `${VAR}` / `${VAR:-default}` are expanded in every scalar value (not in field names)
 *    before it is interpreted, once, never recursively.  A value that took anything from the
 *    environment is never echoed in a message, and secret fields are never echoed at all.
 *    Client key secrets are hashed at once and the plaintext wiped; the document's own copy
 *    of every scalar is wiped before libyaml frees it.
 *
 *  - Outside input cannot make us misbehave: the file is capped at 4 MiB, nesting at 64
 *    levels, and the work of walking it (aliases can make a small file expand enormously) at
 *    CFG_MAX_VISITS nodes and CFG_MAX_BYTES of scalar text.  Every string we keep is free of
 *    control characters, so none can smuggle a header line or a log line.
 *
 * Ownership: the qg_config owns everything in it.  Arrays are allocated zeroed and their
 * counts set before their items are filled, so qg_config_free works on a config abandoned
 * half-way through loading.
 */
#include "config.h"

#include "keys.h"

#include "timefmt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define CFG_MAX_FILE (4u << 20)        /* bytes of YAML we accept */
#define CFG_MAX_DEPTH 64               /* nested collections */
#define CFG_MAX_NODES 1000000          /* values in the document */
#define CFG_MAX_ANCHORS 256            /* libyaml resolves anchors by linear search */
#define CFG_MAX_ALIASES 4096
#define CFG_MAX_ITEMS 100000u          /* items in one list */
#define CFG_MAX_ERRORS 50              /* messages listed; the rest are counted */
#define CFG_MAX_VISITS 2000000u        /* nodes visited, aliases counted each time */
#define CFG_MAX_BYTES (32u << 20)      /* scalar bytes read, aliases counted each time */
#define CFG_MAX_SCALAR (1u << 20)      /* one value after ${} expansion */
#define CFG_PATH 192                   /* a field path such as providers[0].accounts[1].name */
#define CFG_MAX_NAME 128
#define CFG_MIN_KEY 8                  /* client key secret length */
#define CFG_MAX_KEY 512                /* keys.c refuses longer presented secrets */
#define CFG_MAX_VAR 128                /* environment variable name length */
#define CFG_DAY_MS 86400000LL
#define CFG_MAX_DURATION_MS (7 * CFG_DAY_MS)
#define CFG_MAX_PERIOD_MS (366 * CFG_DAY_MS)
#define CFG_MAX_POLICY_MIN (366LL * 24 * 60)
#define CFG_MAX_SIZE (1ULL << 40)
#define CFG_MAX_AMOUNT 1e15            /* limits, quotas: tokens, requests or USD */

#define CFG_STR_(x) #x
#define CFG_STR(x) CFG_STR_(x)         /* a limit's value inside a message literal */

/* ---- loader state and error reporting ---- */

typedef struct {
    const char *file;
    qg_buf *errs;
    int n_errs;
    yaml_document_t *doc;
    size_t visits, bytes;
    bool over_budget;
    bool literal;          /* no ${ENV} expansion (admin API bodies) */
} ld;

static void vcfg_err(ld *L, bool always, int line, const char *path, const char *fmt, va_list ap)
{
    L->n_errs++;
    if (!L->errs) return;
    if (L->n_errs == CFG_MAX_ERRORS + 1)
        qg_buf_appendf(L->errs, "%s: too many errors; only the first %d are listed\n", L->file, CFG_MAX_ERRORS);
    if (L->n_errs > CFG_MAX_ERRORS && !always) return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    qg_buf_appendf(L->errs, "%s:%d: %s: %s\n", L->file, line, path[0] ? path : "config", msg);
}

/* Reports one problem; past CFG_MAX_ERRORS they are only counted. */
static void cfg_err(ld *L, int line, const char *path, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void cfg_err(ld *L, int line, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vcfg_err(L, false, line, path, fmt, ap);
    va_end(ap);
}

/* Reports a problem that explains why the list stops early: never dropped by the cap. */
static void cfg_err_always(ld *L, int line, const char *path, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void cfg_err_always(ld *L, int line, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vcfg_err(L, true, line, path, fmt, ap);
    va_end(ap);
}

static int line_of(const yaml_node_t *n) { return (int)n->start_mark.line + 1; }

static void over_budget(ld *L, int line, const char *path)
{
    if (!L->over_budget)
        cfg_err_always(L, line, path, "the document expands too much (aliases?); giving up on the rest");
    L->over_budget = true;
}

/* Every node access goes through here, so alias bombs hit the budget instead of our time. */
static yaml_node_t *node_get(ld *L, int index, int line, const char *path)
{
    if (L->over_budget) return NULL;
    if (++L->visits > CFG_MAX_VISITS) {
        over_budget(L, line, path);
        return NULL;
    }
    return yaml_document_get_node(L->doc, index);
}

static const char *kind_name(const yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a single value";
}

/* A field name from the document made printable and cut short (out: 49 bytes). */
static void clean_key(char *out, const char *name, size_t len)
{
    size_t k = 0;
    for (; k < len && k < 48; k++) {
        unsigned char ch = (unsigned char)name[k];
        out[k] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    out[k] = 0;
}

/* "parent.name" (or "name" at the top); out must not overlap parent. */
static void path_field(char *out, size_t n, const char *parent, const char *name, size_t len)
{
    char clean[49];
    clean_key(clean, name, len);
    snprintf(out, n, "%s%s%s", parent, parent[0] ? "." : "", clean);
}

static void path_index(char *out, size_t n, const char *parent, size_t i)
{
    snprintf(out, n, "%s[%zu]", parent, i);
}

/* ---- scalars: ${VAR} expansion, null, display ---- */

typedef struct {
    char *s;       /* expanded, NUL-terminated, free of control characters */
    size_t n;
    bool from_env; /* an environment value went into it: never echo it */
} scal;

/* Wipes as well: any value may have been a secret. */
static void scal_free(scal *sc)
{
    if (sc->s) OPENSSL_cleanse(sc->s, sc->n);
    free(sc->s);
    sc->s = NULL;
}

static void wipe_free(char *s)
{
    if (!s) return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

/* The value quoted for a message, or a stand-in when it came from the environment. */
static const char *shown(const scal *sc, char *buf, size_t n)
{
    if (sc->from_env) return "(a value from the environment)";
    if (sc->n > 40) snprintf(buf, n, "`%.40s...`", sc->s);
    else snprintf(buf, n, "`%s`", sc->s);
    return buf;
}

static bool var_char(char c, bool first)
{
    return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (!first && c >= '0' && c <= '9');
}

/* Expands one reference at p ("${...}"); *used = its length.  Appends to b. */
static int expand_ref(ld *L, int line, const char *path, const char *p, size_t n, qg_buf *b, size_t *used, bool *from_env)
{
    const char *close = memchr(p, '}', n);
    if (!close) {
        cfg_err(L, line, path, "unterminated `${` (missing `}`)");
        return -1;
    }
    size_t name_n = 0;
    while (p + 2 + name_n < close && var_char(p[2 + name_n], name_n == 0)) name_n++;
    const char *after = p + 2 + name_n;
    bool has_def = after + 1 < close && after[0] == ':' && after[1] == '-';
    if (name_n == 0 || name_n > CFG_MAX_VAR || (after != close && !has_def)) {
        cfg_err(L, line, path, "bad variable reference (use ${NAME} or ${NAME:-default})");
        return -1;
    }
    qg_slice def = has_def ? (qg_slice){after + 2, (size_t)(close - after - 2)} : (qg_slice){NULL, 0};
    if (def.n >= 2 && memmem(def.p, def.n, "${", 2)) {
        cfg_err(L, line, path, "nested ${...} in a default is not supported");
        return -1;
    }
    char name[CFG_MAX_VAR + 1];
    memcpy(name, p + 2, name_n);
    name[name_n] = 0;
    const char *val = getenv(name);
    int rc;
    if (val && (val[0] || !has_def)) {
        rc = qg_buf_append(b, val, strlen(val));
        *from_env = true;
    } else if (has_def) {
        rc = qg_buf_append(b, def.p, def.n);
    } else {
        cfg_err(L, line, path, "environment variable %s is not set", name);
        return -1;
    }
    if (rc < 0) {
        cfg_err(L, line, path, "value longer than %u bytes after substitution", CFG_MAX_SCALAR);
        return -1;
    }
    *used = (size_t)(close - p) + 1;
    return 0;
}

static int expand_env(ld *L, const yaml_node_t *v, const char *path, scal *out)
{
    const char *in = (const char *)v->data.scalar.value;
    size_t n = v->data.scalar.length;
    if (L->literal) {
        if (n > CFG_MAX_SCALAR) {
            cfg_err(L, line_of(v), path, "value longer than %u bytes", CFG_MAX_SCALAR);
            return -1;
        }
        out->s = qg_xmalloc(n + 1);
        memcpy(out->s, in, n);
        out->s[n] = 0;
        out->n = n;
        return 0;
    }
    qg_buf b;
    qg_buf_init(&b, CFG_MAX_SCALAR + 1);
    for (size_t i = 0; i < n;) {
        const char *ref = memmem(in + i, n - i, "${", 2);
        size_t lit = ref ? (size_t)(ref - (in + i)) : n - i;
        if (qg_buf_append(&b, in + i, lit) < 0) {
            cfg_err(L, line_of(v), path, "value longer than %u bytes", CFG_MAX_SCALAR);
            goto fail;
        }
        i += lit;
        if (!ref) break;
        size_t used = 0;
        if (expand_ref(L, line_of(v), path, ref, n - i, &b, &used, &out->from_env) < 0) goto fail;
        i += used;
    }
    if (qg_buf_append(&b, "", 1) < 0) goto fail;
    out->s = b.data;
    out->n = b.len - 1;
    return 0;
fail:
    if (b.data) OPENSSL_cleanse(b.data, b.len);
    qg_buf_free(&b);
    return -1;
}

/* A YAML null: an empty plain value, ~ or null. */
static bool is_null(const yaml_node_t *v)
{
    if (v->type != YAML_SCALAR_NODE || v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    qg_slice s = {(const char *)v->data.scalar.value, v->data.scalar.length};
    return s.n == 0 || qg_slice_eq(s, "~") || qg_slice_eq(s, "null") || qg_slice_eq(s, "Null") ||
           qg_slice_eq(s, "NULL");
}

/* Reads a scalar value (what = "an integer", ...), expanded and checked for control bytes. */
static int get_scalar(ld *L, yaml_node_t *v, const char *path, const char *what, scal *out)
{
    memset(out, 0, sizeof *out);
    if (v->type != YAML_SCALAR_NODE) {
        cfg_err(L, line_of(v), path, "expected %s, found %s", what, kind_name(v));
        return -1;
    }
    L->bytes += v->data.scalar.length;
    if (L->bytes > CFG_MAX_BYTES) {
        over_budget(L, line_of(v), path);
        return -1;
    }
    if (expand_env(L, v, path, out) < 0) return -1;
    for (size_t i = 0; i < out->n; i++) {
        unsigned char c = (unsigned char)out->s[i];
        if (c < 0x20 || c == 0x7f) {
            cfg_err(L, line_of(v), path, "contains a control character (tab, newline, NUL, ...)");
            scal_free(out);
            return -1;
        }
    }
    return 0;
}

/* ---- plain value parsers ---- */

static int parse_i64(const char *s, int64_t *out)
{
    const char *p = s + (s[0] == '+' || s[0] == '-');
    if (*p < '0' || *p > '9') return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return -1;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno) return -1;
    *out = v;
    return 0;
}

static int parse_num(const char *s, double *out)
{
    bool digit = false;
    for (const char *q = s; *q; q++) {
        if (*q >= '0' && *q <= '9') digit = true;
        else if (!strchr("+-.eE", *q)) return -1; /* no inf, nan or hex */
    }
    if (!digit) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno == ERANGE || v != v) return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < QG_ARRAY_LEN(yes); i++) {
        if (!strcasecmp(s, yes[i])) return *out = true, 0;
        if (!strcasecmp(s, no[i])) return *out = false, 0;
    }
    return -1;
}

static int parse_port(const char *p, size_t n, int *port)
{
    if (n == 0 || n > 5) return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    if (v > 65535) return -1;
    *port = v;
    return 0;
}

static bool two_digits(const char *p) { return p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9'; }

/* The UTC offset (minutes) at the end of an RFC 3339 timestamp that qg_parse_rfc3339
 * accepted: "Z", "+08:00" or "+0800"; 0 for a date alone. */
static int rfc3339_offset_min(const char *s)
{
    qg_slice t = qg_slice_trim(qg_slice_of(s));
    if (t.n <= 10) return 0;
    const char *o = t.p + t.n - (t.p[t.n - 3] == ':' ? 6 : 5);
    const char *m = o[3] == ':' ? o + 4 : o + 3;
    if ((o[0] != '+' && o[0] != '-') || !two_digits(o + 1) || !two_digits(m)) return 0;
    int mins = ((o[1] - '0') * 10 + (o[2] - '0')) * 60 + (m[0] - '0') * 10 + (m[1] - '0');
    return o[0] == '-' ? -mins : mins;
}

/* Why a name (provider, account, bucket, key, model) is unusable, or NULL. */
static const char *name_problem(const scal *sc)
{
    if (sc->n > CFG_MAX_NAME) return "is longer than " CFG_STR(CFG_MAX_NAME) " characters";
    if (strpbrk(sc->s, " /")) return "must not contain spaces or '/'";
    return NULL;
}

/* ---- the schema: fields and the setters that store them ---- */

typedef enum {
    F_STR,     /* char *; optional and empty means absent */
    F_NAME,    /* char *; a name: short, no spaces or '/' */
    F_SECRET,  /* char *; never echoed, no spaces */
    F_INT,     /* int within [min, max] */
    F_I64,     /* int64_t within [min, max] */
    F_NUM,     /* double within [min, max] */
    F_BOOL,    /* bool */
    F_SIZE,    /* uint64_t bytes ("32MiB") within [min, max] */
    F_DUR,     /* int64_t ms ("60s") within [min, max] */
    F_TIME,    /* int64_t epoch ms (RFC 3339) */
    F_ENUM,    /* enum: names[value], NULL for values not allowed here */
    F_FLAG,    /* bool: names[0] false, names[1] true */
    F_STRLIST, /* char ** at off, size_t count at off2; min = fewest items; unique */
    F_FN,      /* fn does it all */
} ftype;

typedef struct field field;
typedef int (*field_fn)(ld *L, yaml_node_t *v, const char *path, void *obj);

struct field {
    const char *name;
    ftype type;
    bool required;
    bool unique;  /* F_STRLIST: no repeated items */
    size_t off, off2;
    double min, max;
    const char *const *names;
    int n_names;
    field_fn fn;
};

#define AT(type, member) .off = offsetof(type, member)
#define NAMES(arr) .names = (arr), .n_names = (int)QG_ARRAY_LEN(arr)
#define FIELD_PTR(obj, f, type) ((type *)(void *)((char *)(obj) + (f)->off))

/* Setters return 0 when stored, 1 when the value means "absent", -1 on error (reported). */
typedef int (*setter)(ld *L, const field *f, yaml_node_t *v, const char *path, void *obj);

static int set_str(ld *L, const field *f, yaml_node_t *v, const char *path, void *obj)
{
    scal sc;
    if (get_scalar(L, v, path, "a string", &sc) < 0) return -1;
    const char *why = NULL;
    if (sc.n == 0 && f->required) why = "must not be empty";
    else if (sc.n == 0) return scal_free(&sc), 1;
    else if (f->type == F_NAME) why = name_problem(&sc);
    else if (f->type == F_SECRET && strchr(sc.s, ' ')) why = "must not contain spaces";
    if (why) {
        cfg_err(L, line_of(v), path, "%s", why);
        scal_free(&sc);
        return -1;
    }
    char **dst = FIELD_PTR(obj, f, char *);
    free(*dst); /* a default */
    *dst = sc.s;
    return 0;
}

static int out_of_range(ld *L, const field *f, yaml_node_t *v, const char *path, const scal *sc)
{
    char buf[64];
    if (f->type == F_SIZE || f->type == F_DUR)
        cfg_err(L, line_of(v), path, "%s is out of range", shown(sc, buf, sizeof buf));
    else
        cfg_err(L, line_of(v), path, "must be between %.15g and %.15g, found %s", f->min, f->max,
                shown(sc, buf, sizeof buf));
    return -1;
}

static int set_int(ld *L, const field *f, yaml_node_t *v, const char *path, void *obj)
{
    scal sc;
    char buf[64];
    int64_t x = 0;
    if (get_scalar(L, v, path, "an integer", &sc) < 0) return -1;
    int rc = -1;
    if (parse_i64(sc.s, &x) < 0) cfg_err(L, line_of(v), path, "expected an integer, found %s", shown(&sc, buf, sizeof buf));
    else if ((double)x < f->min || (double)x > f->max) out_of_range(L, f, v, path, &sc);
    else rc = 0;
    if (rc == 0 && f->type == F_INT) *FIELD_PTR(obj, f, int) = (int)x;
    else if (rc == 0) *FIELD_PTR(obj, f, int64_t) = x;
    scal_free(&sc);
    return rc;
}

static int set_num(ld *L, const field *f, yaml_node_t *v, const char *path, void *obj)
{
    scal sc;
    char buf[64];
    double x = 0;
    if (get_scalar(L, v, path, "a number", &sc) < 0) return -1;
    int rc = -1;
    if (parse_num(sc.s, &x) < 0) cfg_err(L, line_of(v), path, "expected a number, found %s", shown(&sc, buf, sizeof buf));
    else if (x < f->min || x > f->max) out_of_range(L, f, v, path, &sc);
    else rc = 0;
    if (rc == 0) *FIELD_PTR(obj, f, double) = x;
    scal_free(&sc);
    return rc;
}

static int set_bool(ld *L, const field *f, yaml_node_t *v, const char *path, void *obj)
{
    scal sc;
    char buf[64];
    bool x = false;
    if (get_scalar(L, v, path, "true or false", &sc) < 0) return -1;
    int rc = parse_bool(sc.s, &x);
    if (rc < 0) cfg_err(L, line_of(v), path, "expected true or false, found %s", shown(&sc, buf, sizeof buf));
    else *FIELD_PTR(obj, f, bool) = x;
    scal_free(&sc);
    return rc;
}

static int set_size(ld *L, const field *f, yaml_node_t *v, const char *path, void *obj)
{
    scal sc;
    char buf[64];
    uint64_t x = 0;
    if (get_scalar(L, v, path, "a size", &sc) < 0) return -1;
    int rc = -1;
    if (qg_parse_size(qg_slice_of(sc.s), &x) < 0)
        cfg_err(L, line_of(v), path, "bad size %s (e.g. 64KiB, 32MiB, 1GiB)", shown(&sc, buf, sizeof buf));
    else if ((double)x < f->min || (double)x > f->max) out_of_range(L, f, v, path, &sc);
    else rc = 0;
    if (rc == 0) *FIELD_PTR(obj, f, uint64_t) = x;
    scal_free(&sc);
    return rc;
}

static int set_dur(ld *L, const field *f, yaml_node_t *v, const char *path, void *obj)
{
    scal sc;
    char buf[64];
    int64_t x = 0;
    if (get_scalar(L, v, path, "a duration", &sc) < 0) return -1;
    int rc = -1;
    if (qg_parse_duration_ms(qg_slice_of(sc.s), &x) < 0)
        cfg_err(L, line_of(v), path, "bad duration %s (e.g. 250ms, 60s, 5m, 1h30m)", shown(&sc, buf, sizeof buf));
    else if ((double)x < f->min || (double)x > f->max) out_of_range(L, f, v, path, &sc);
    else rc = 0;
    if (rc == 0) *FIELD_PTR(obj, f, int64_t) = x;
    scal_free(&sc);
    return rc;
}

static int set_time(ld *L, const field *f, yaml_node_t *v, const char *path, void *obj)
{
    scal sc;
    char buf[64];
    int64_t x = 0;
    if (get_scalar(L, v, path, "a time", &sc) < 0) return -1;
    int rc = qg_parse_rfc3339(qg_slice_of(sc.s), &x);
    if (rc < 0)
        cfg_err(L, line_of(v), path, "bad time %s (RFC 3339 with an offset, e.g. 2026-12-31T00:00:00Z)",
                shown(&sc, buf, sizeof buf));
    else *FIELD_PTR(obj, f, int64_t) = x;
    scal_free(&sc);
    return rc;
}

/* "a|b|c" from a names table, skipping holes. */
static void join_names(const field *f, char *out, size_t n)
{
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < f->n_names; i++) {
        if (!f->names[i]) continue;
        int w = snprintf(out + len, n - len, "%s%s", len ? "|" : "", f->names[i]);
        if (w < 0 || (size_t)w >= n - len) break;
        len += (size_t)w;
    }
}

static int set_choice(ld *L, const field *f, yaml_node_t *v, const char *path, void *obj)
{
    scal sc;
    char buf[64], allowed[160];
    join_names(f, allowed, sizeof allowed);
    if (get_scalar(L, v, path, allowed, &sc) < 0) return -1;
    int found = -1;
    for (int i = 0; i < f->n_names && found < 0; i++)
        if (f->names[i] && !strcmp(sc.s, f->names[i])) found = i;
    if (found < 0) cfg_err(L, line_of(v), path, "%s is not one of %s", shown(&sc, buf, sizeof buf), allowed);
    else if (f->type == F_FLAG) *FIELD_PTR(obj, f, bool) = found == 1;
    else *FIELD_PTR(obj, f, int) = found; /* the enum's own storage (gcc: int-sized) */
    scal_free(&sc);
    return found < 0 ? -1 : 0;
}

/* A set of byte strings remembering each one's list index: duplicate checks in O(1) each,
 * so a long list cannot make validation quadratic.  Holds at most half its capacity. */
typedef struct {
    const void *p;
    size_t n, idx;
} dup_entry;

typedef struct {
    dup_entry *e;
    size_t mask;
} dupset;

static void dupset_init(dupset *s, size_t items)
{
    size_t cap = 16;
    while (cap < items * 2) cap *= 2;
    s->e = qg_xcalloc(cap, sizeof *s->e);
    s->mask = cap - 1;
}

static void dupset_free(dupset *s)
{
    free(s->e);
    s->e = NULL;
}

/* Adds p[0..n) as item idx (p must outlive the set); returns an earlier equal item's index or -1. */
static long dupset_add(dupset *s, const void *p, size_t n, size_t idx)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ULL;
    for (size_t k = (size_t)h & s->mask;; k = (k + 1) & s->mask) {
        if (!s->e[k].p) {
            s->e[k] = (dup_entry){p, n, idx};
            return -1;
        }
        if (s->e[k].n == n && !memcmp(s->e[k].p, p, n)) return (long)s->e[k].idx;
    }
}

/* Checks that v is a list of at least `min` items; *n = its length. */
static int list_len(ld *L, yaml_node_t *v, const char *path, size_t min, size_t *n)
{
    if (v->type != YAML_SEQUENCE_NODE) {
        cfg_err(L, line_of(v), path, "expected a list, found %s", kind_name(v));
        return -1;
    }
    *n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (*n < min) {
        cfg_err(L, line_of(v), path, "must not be empty");
        return -1;
    }
    if (*n > CFG_MAX_ITEMS) {
        cfg_err(L, line_of(v), path, "has more than %u items", CFG_MAX_ITEMS);
        return -1;
    }
    return 0;
}

static yaml_node_t *list_item(ld *L, yaml_node_t *v, size_t i, const char *path)
{
    return node_get(L, v->data.sequence.items.start[i], line_of(v), path);
}

static int set_strlist(ld *L, const field *f, yaml_node_t *v, const char *path, void *obj)
{
    size_t n;
    if (list_len(L, v, path, (size_t)f->min, &n) < 0) return -1;
    char **items = qg_xcalloc(n, sizeof *items);
    *FIELD_PTR(obj, f, char **) = items;
    *(size_t *)(void *)((char *)obj + f->off2) = n;
    dupset seen;
    dupset_init(&seen, f->unique ? n : 0);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char sub[CFG_PATH];
        path_index(sub, sizeof sub, path, i);
        yaml_node_t *it = list_item(L, v, i, sub);
        scal sc;
        if (!it || get_scalar(L, it, sub, "a string", &sc) < 0) {
            rc = -1;
            continue;
        }
        items[i] = sc.s;
        if (sc.n == 0) cfg_err(L, line_of(it), sub, "must not be empty"), rc = -1;
        else if (f->unique && dupset_add(&seen, sc.s, sc.n, i) >= 0)
            cfg_err(L, line_of(it), sub, "`%.60s` is listed twice", sc.s), rc = -1;
    }
    dupset_free(&seen);
    return rc;
}

static int set_fn(ld *L, const field *f, yaml_node_t *v, const char *path, void *obj) { return f->fn(L, v, path, obj); }

static const setter setters[] = {
    [F_STR] = set_str,   [F_NAME] = set_str,     [F_SECRET] = set_str,     [F_INT] = set_int,
    [F_I64] = set_int,   [F_NUM] = set_num,      [F_BOOL] = set_bool,      [F_SIZE] = set_size,
    [F_DUR] = set_dur,   [F_TIME] = set_time,    [F_ENUM] = set_choice,    [F_FLAG] = set_choice,
    [F_STRLIST] = set_strlist, [F_FN] = set_fn,
};

/* ---- walking a mapping against a field table ---- */

/* Levenshtein distance, for "did you mean"; SIZE_MAX when either word is long. */
static size_t edit_distance(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b), row[65];
    if (an > 64 || bn > 64) return SIZE_MAX;
    for (size_t j = 0; j <= bn; j++) row[j] = j;
    for (size_t i = 1; i <= an; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= bn; j++) {
            size_t cur = row[j];
            size_t best = QG_MIN(row[j] + 1, row[j - 1] + 1);
            row[j] = QG_MIN(best, prev + (a[i - 1] != b[j - 1]));
            prev = cur;
        }
    }
    return row[bn];
}

static void unknown_field(ld *L, const yaml_node_t *k, const char *path, const field *fs, size_t nf)
{
    const char *key = (const char *)k->data.scalar.value;
    size_t kn = k->data.scalar.length, best = SIZE_MAX;
    if (kn == 2 && !memcmp(key, "<<", 2)) {
        cfg_err(L, line_of(k), path, "YAML merge keys (<<) are not supported; write the fields out (anchors and "
                                     "aliases of whole values work)");
        return;
    }
    const char *guess = NULL;
    for (size_t i = 0; i < nf; i++) {
        size_t d = edit_distance(key, kn, fs[i].name);
        if (d < best) best = d, guess = fs[i].name;
    }
    char shown_key[49];
    clean_key(shown_key, key, kn);
    if (guess && best <= 2 && best < kn) {
        cfg_err(L, line_of(k), path, "unknown field `%s` (did you mean `%s`?)", shown_key, guess);
        return;
    }
    char list[400];
    size_t len = 0;
    list[0] = 0;
    for (size_t i = 0; i < nf && len < sizeof list; i++) {
        int w = snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", fs[i].name);
        if (w > 0) len += (size_t)w;
    }
    cfg_err(L, line_of(k), path, "unknown field `%s` (known: %s)", shown_key, list);
}

static int find_field(const field *fs, size_t nf, const yaml_node_t *k)
{
    qg_slice key = {(const char *)k->data.scalar.value, k->data.scalar.length};
    for (size_t i = 0; i < nf; i++)
        if (qg_slice_eq(key, fs[i].name)) return (int)i;
    return -1;
}

/* Stores one field's value; at[i] remembers the value node of a present field, *ok the
 * fields whose value was valid. */
static void walk_pair(ld *L, int line, const yaml_node_pair_t *pr, const char *path, const field *fs, size_t nf,
                      void *obj, yaml_node_t **at, uint64_t *seen, uint64_t *ok)
{
    yaml_node_t *k = node_get(L, pr->key, line, path), *v = node_get(L, pr->value, line, path);
    if (!k || !v) return;
    if (k->type != YAML_SCALAR_NODE) {
        cfg_err(L, line_of(k), path, "field names must be plain words, found %s", kind_name(k));
        return;
    }
    char sub[CFG_PATH];
    path_field(sub, sizeof sub, path, (const char *)k->data.scalar.value, k->data.scalar.length);
    int i = find_field(fs, nf, k);
    if (i < 0) {
        unknown_field(L, k, sub, fs, nf);
        return;
    }
    if (*seen & (1ULL << i)) {
        cfg_err(L, line_of(k), sub, "field given twice");
        return;
    }
    *seen |= 1ULL << i;
    if (is_null(v)) {
        if (fs[i].required) cfg_err(L, line_of(v), sub, "is required");
        return;
    }
    at[i] = v;
    if (setters[fs[i].type](L, &fs[i], v, sub, obj) == 0) *ok |= 1ULL << i;
}

/* Applies a field table to mapping n.  at (nf entries, zeroed) receives the present value
 * nodes; returns the mask of fields stored without error, or -1 when n is not a mapping. */
static int64_t walk_map(ld *L, yaml_node_t *n, const char *path, const field *fs, size_t nf, void *obj,
                        yaml_node_t **at)
{
    if (n->type != YAML_MAPPING_NODE) {
        cfg_err(L, line_of(n), path, "expected a mapping of fields, found %s", kind_name(n));
        return -1;
    }
    uint64_t seen = 0, ok = 0;
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++)
        walk_pair(L, line_of(n), pr, path, fs, nf, obj, at, &seen, &ok);
    for (size_t i = 0; i < nf && !L->over_budget; i++) {
        if (!fs[i].required || (seen & (1ULL << i))) continue;
        char sub[CFG_PATH];
        path_field(sub, sizeof sub, path, fs[i].name, strlen(fs[i].name));
        cfg_err(L, line_of(n), sub, "is required");
    }
    return (int64_t)(ok & INT64_MAX);
}

/* The value node of field `name` in mapping n, for the line of a later message. */
static const yaml_node_t *map_value(ld *L, const yaml_node_t *n, const char *name)
{
    if (n->type != YAML_MAPPING_NODE) return n;
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(L->doc, pr->key);
        if (k && k->type == YAML_SCALAR_NODE && qg_slice_eq((qg_slice){(const char *)k->data.scalar.value,
                                                                        k->data.scalar.length}, name)) {
            yaml_node_t *v = yaml_document_get_node(L->doc, pr->value);
            return v ? v : n;
        }
    }
    return n;
}

/* Reports item i (named `name`, NULL if it has none) when an earlier item of the list had it. */
static void unique_name(ld *L, dupset *names, const yaml_node_t *item, const char *list_path, const char *name,
                        size_t i, const char *what)
{
    long k = name ? dupset_add(names, name, strlen(name), i) : -1;
    if (k < 0) return;
    char sub[CFG_PATH];
    snprintf(sub, sizeof sub, "%s[%zu].name", list_path, i);
    cfg_err(L, line_of(map_value(L, item, "name")), sub, "duplicate %s name `%.60s` (already used by %s[%ld])", what,
            name, list_path, k);
}

/* ---- enumerations as they are spelled in YAML (index = enum value) ---- */

/* set_choice stores enums through an int lvalue. */
_Static_assert(sizeof(qg_dialect) == sizeof(int) && sizeof(qg_bucket_kind) == sizeof(int) &&
                   sizeof(qg_unit) == sizeof(int) && sizeof(qg_reset_mode) == sizeof(int),
               "enums are int-sized");

static const char *const dialect_names[] = {[QG_DIALECT_OPENAI] = "openai", [QG_DIALECT_ANTHROPIC] = "anthropic"};
static const char *const kind_names[] = {[QG_BUCKET_CREDITS] = "credits", [QG_BUCKET_WINDOW] = "window",
                                         [QG_BUCKET_RATE] = "rate"};
static const char *const unit_names[] = {[QG_UNIT_REQUESTS] = "requests",
                                         [QG_UNIT_TOKENS] = "tokens",
                                         [QG_UNIT_INPUT_TOKENS] = "input_tokens",
                                         [QG_UNIT_OUTPUT_TOKENS] = "output_tokens",
                                         [QG_UNIT_USD] = "usd",
                                         [QG_UNIT_PERCENT] = "percent"};
static const char *const policy_unit_names[] = {[QG_UNIT_REQUESTS] = "requests", [QG_UNIT_TOKENS] = "tokens",
                                                [QG_UNIT_USD] = "usd"};
static const char *const reset_names[] = {[QG_RESET_ANCHORED] = "anchored", [QG_RESET_FIRST_USE] = "first_use",
                                          [QG_RESET_SLIDING] = "sliding"};
static const char *const combine_names[] = {"all", "any"};
static const char *const boundary_names[] = {"graceful", "strict"};
static const char *const exhausted_names[] = {"reject", "disable"};

/* ---- buckets ---- */

static int f_bucket_period(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_bucket_cfg *b = obj;
    scal sc;
    char buf[64];
    if (get_scalar(L, v, path, "a period", &sc) < 0) return -1;
    int64_t ms = 0;
    int rc = 0;
    if (!strcmp(sc.s, "daily")) ms = CFG_DAY_MS;
    else if (!strcmp(sc.s, "weekly")) ms = 7 * CFG_DAY_MS;
    else if (qg_parse_duration_ms(qg_slice_of(sc.s), &ms) < 0 || ms <= 0 || ms > CFG_MAX_PERIOD_MS) rc = -1;
    if (rc < 0) cfg_err(L, line_of(v), path, "bad period %s (a duration such as 1m or 5h, or daily, weekly)",
                        shown(&sc, buf, sizeof buf));
    else b->period_ms = ms;
    scal_free(&sc);
    return rc;
}

enum { BF_NAME, BF_KIND, BF_UNIT, BF_LIMIT, BF_PERIOD, BF_RESET, BF_ANCHOR, BF_EXPIRES, BF_N };
static const field bucket_fields[BF_N] = {
    [BF_NAME] = {"name", F_NAME, .required = true, AT(qg_bucket_cfg, name)},
    [BF_KIND] = {"kind", F_ENUM, .required = true, AT(qg_bucket_cfg, kind), NAMES(kind_names)},
    [BF_UNIT] = {"unit", F_ENUM, .required = true, AT(qg_bucket_cfg, unit), NAMES(unit_names)},
    [BF_LIMIT] = {"limit", F_NUM, AT(qg_bucket_cfg, limit), .min = 0, .max = CFG_MAX_AMOUNT},
    [BF_PERIOD] = {"period", F_FN, .fn = f_bucket_period},
    [BF_RESET] = {"reset", F_ENUM, AT(qg_bucket_cfg, reset), NAMES(reset_names)},
    [BF_ANCHOR] = {"anchor", F_TIME, AT(qg_bucket_cfg, anchor_ms)},
    [BF_EXPIRES] = {"expires_at", F_TIME, AT(qg_bucket_cfg, expires_at_ms)},
};

static void not_for(ld *L, yaml_node_t *const *at, int i, const char *path, const char *msg)
{
    if (!at[i]) return;
    char sub[CFG_PATH];
    path_field(sub, sizeof sub, path, bucket_fields[i].name, strlen(bucket_fields[i].name));
    cfg_err(L, line_of(at[i]), sub, "%s", msg);
}

/* Rules that tie a bucket's fields together. */
static void check_bucket(ld *L, yaml_node_t *n, const char *path, qg_bucket_cfg *b, yaml_node_t *const *at,
                         int64_t ok)
{
    if ((ok & (1 << BF_UNIT)) && b->unit == QG_UNIT_PERCENT && b->limit > 100)
        not_for(L, at, BF_LIMIT, path, "a percent limit must be at most 100");
    if (!(ok & (1 << BF_KIND))) return;
    if (b->kind == QG_BUCKET_CREDITS) {
        for (int i = BF_PERIOD; i <= BF_ANCHOR; i++) not_for(L, at, i, path, "applies only to window and rate buckets");
    } else {
        not_for(L, at, BF_EXPIRES, path, "applies only to credits buckets");
        if (!at[BF_PERIOD]) {
            char sub[CFG_PATH];
            path_field(sub, sizeof sub, path, "period", 6);
            cfg_err(L, line_of(n), sub, "is required for %s buckets", kind_names[b->kind]);
        }
        /* rate limits refill continuously: sliding unless anchored explicitly or by an anchor */
        if (!at[BF_RESET] && !at[BF_ANCHOR] && b->kind == QG_BUCKET_RATE) b->reset = QG_RESET_SLIDING;
        if ((ok & (1 << BF_RESET)) && b->reset != QG_RESET_ANCHORED)
            not_for(L, at, BF_ANCHOR, path, "applies only to reset: anchored");
    }
}

static void parse_bucket(ld *L, yaml_node_t *n, const char *path, qg_bucket_cfg *b)
{
    b->line = line_of(n);
    b->limit = -1;
    b->reset = QG_RESET_ANCHORED;
    yaml_node_t *at[BF_N] = {0};
    int64_t ok = walk_map(L, n, path, bucket_fields, BF_N, b, at);
    if (ok >= 0) check_bucket(L, n, path, b, at, ok);
}

static int f_buckets(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_account_cfg *a = obj;
    size_t n;
    if (list_len(L, v, path, 0, &n) < 0) return -1;
    a->buckets = qg_xcalloc(n, sizeof *a->buckets);
    a->n_buckets = n;
    dupset names;
    dupset_init(&names, n);
    for (size_t i = 0; i < n; i++) {
        char sub[CFG_PATH];
        path_index(sub, sizeof sub, path, i);
        yaml_node_t *it = list_item(L, v, i, sub);
        if (!it) break;
        parse_bucket(L, it, sub, &a->buckets[i]);
        unique_name(L, &names, it, path, a->buckets[i].name, i, "bucket");
    }
    dupset_free(&names);
    return 0;
}

/* ---- accounts ---- */

static const field account_fields[] = {
    {"name", F_NAME, .required = true, AT(qg_account_cfg, name)},
    {"api_key", F_SECRET, .required = true, AT(qg_account_cfg, api_key)},
    {"priority", F_INT, AT(qg_account_cfg, priority), .min = -1000000, .max = 1000000},
    {"weight", F_INT, AT(qg_account_cfg, weight), .min = 1, .max = 1000000},
    {"combine", F_FLAG, AT(qg_account_cfg, combine_any), NAMES(combine_names)},
    {"fail_closed", F_BOOL, AT(qg_account_cfg, fail_closed)},
    {"buckets", F_FN, .fn = f_buckets},
};

static int f_accounts(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_provider_cfg *p = obj;
    size_t n;
    if (list_len(L, v, path, 1, &n) < 0) return -1;
    p->accounts = qg_xcalloc(n, sizeof *p->accounts);
    p->n_accounts = n;
    dupset names;
    dupset_init(&names, n);
    for (size_t i = 0; i < n; i++) {
        char sub[CFG_PATH];
        path_index(sub, sizeof sub, path, i);
        yaml_node_t *it = list_item(L, v, i, sub);
        if (!it) break;
        qg_account_cfg *a = &p->accounts[i];
        a->line = line_of(it);
        a->weight = 1;
        yaml_node_t *at[QG_ARRAY_LEN(account_fields)] = {0};
        walk_map(L, it, sub, account_fields, QG_ARRAY_LEN(account_fields), a, at);
        unique_name(L, &names, it, path, a->name, i, "account");
    }
    dupset_free(&names);
    return 0;
}

/* ---- providers: base_url, ca_file ---- */

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_';
}

/* Splits "host", "host:port", "[v6]" or "[v6]:port" (s[0..n)).  *host is allocated without
 * brackets (possibly ""); *port is left alone when absent.  Returns NULL or why not. */
static const char *split_hostport(const char *s, size_t n, char **host, int *port)
{
    const char *h = s, *rest;
    size_t hn;
    if (n && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close) return "has an unclosed '[' (IPv6 addresses look like [::1])";
        h = s + 1, hn = (size_t)(close - h), rest = close + 1;
        char tmp[INET6_ADDRSTRLEN + 1];
        struct in6_addr a6;
        if (hn >= sizeof tmp) return "has a bad IPv6 address";
        memcpy(tmp, h, hn);
        tmp[hn] = 0;
        if (inet_pton(AF_INET6, tmp, &a6) != 1) return "has a bad IPv6 address";
    } else {
        const char *colon = memchr(s, ':', n);
        hn = colon ? (size_t)(colon - s) : n, rest = s + hn;
        if (colon && memchr(colon + 1, ':', n - hn - 1)) return "has an IPv6 address without brackets (write [::1]:8080)";
        for (size_t i = 0; i < hn; i++)
            if (!host_char(s[i])) return "has a bad host name";
    }
    size_t rn = (size_t)(s + n - rest);
    if (rn && (rest[0] != ':' || parse_port(rest + 1, rn - 1, port) < 0)) return "has a bad port (1..65535)";
    *host = qg_slice_dup((qg_slice){h, hn});
    return NULL;
}

static const char *split_url(const char *url, qg_provider_cfg *p)
{
    const char *rest;
    if (!strncasecmp(url, "https://", 8)) p->tls = true, p->port = 443, rest = url + 8;
    else if (!strncasecmp(url, "http://", 7)) p->tls = false, p->port = 80, rest = url + 7;
    else return "must start with http:// or https://";
    if (strpbrk(rest, "?#")) return "must not contain a query (?) or fragment (#)";
    if (strchr(rest, ' ')) return "must not contain spaces";
    size_t an = strcspn(rest, "/");
    if (memchr(rest, '@', an)) return "must not contain credentials (user@host); put the key in api_key";
    const char *why = split_hostport(rest, an, &p->host, &p->port);
    if (why) return why;
    if (!p->host[0]) return "has no host";
    if (p->port == 0) return "has a bad port (1..65535)";
    size_t pn = strlen(rest + an);
    while (pn && rest[an + pn - 1] == '/') pn--;
    if (pn >= 3 && !memcmp(rest + an + pn - 3, "/v1", 3)) pn -= 3; /* the client's /v1/... follows */
    while (pn && rest[an + pn - 1] == '/') pn--;
    p->base_path = qg_slice_dup((qg_slice){rest + an, pn});
    return NULL;
}

static int f_base_url(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_provider_cfg *p = obj;
    scal sc;
    if (get_scalar(L, v, path, "a URL", &sc) < 0) return -1;
    p->base_url = sc.s;
    const char *why = sc.n ? split_url(sc.s, p) : "must not be empty";
    if (why) cfg_err(L, line_of(v), path, "%s", why); /* the URL itself is not echoed: it may hold secrets */
    return why ? -1 : 0;
}

static int f_ca_file(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_provider_cfg *p = obj;
    scal sc;
    char buf[64];
    if (get_scalar(L, v, path, "a file name", &sc) < 0) return -1;
    if (sc.n == 0) return scal_free(&sc), 1;
    p->ca_file = sc.s;
    struct stat st;
    if (access(sc.s, R_OK) != 0 || stat(sc.s, &st) != 0) {
        cfg_err(L, line_of(v), path, "cannot read %s: %s", shown(&sc, buf, sizeof buf), strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        cfg_err(L, line_of(v), path, "%s is not a regular file", shown(&sc, buf, sizeof buf));
        return -1;
    }
    return 0;
}

static const field provider_fields[] = {
    {"name", F_NAME, .required = true, AT(qg_provider_cfg, name)},
    {"dialect", F_ENUM, .required = true, AT(qg_provider_cfg, dialect), NAMES(dialect_names)},
    {"base_url", F_FN, .required = true, .fn = f_base_url},
    {"ca_file", F_FN, .fn = f_ca_file},
    {"probe", F_STR, AT(qg_provider_cfg, probe)},
    {"models", F_STRLIST, .required = true, .unique = true, AT(qg_provider_cfg, models),
     .off2 = offsetof(qg_provider_cfg, n_models), .min = 1},
    {"accounts", F_FN, .required = true, .fn = f_accounts},
};

static int f_providers(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_config *c = obj;
    size_t n;
    if (list_len(L, v, path, 1, &n) < 0) return -1; /* a gateway with nothing behind it is a mistake */
    c->providers = qg_xcalloc(n, sizeof *c->providers);
    c->n_providers = n;
    dupset names;
    dupset_init(&names, n);
    for (size_t i = 0; i < n; i++) {
        char sub[CFG_PATH];
        path_index(sub, sizeof sub, path, i);
        yaml_node_t *it = list_item(L, v, i, sub);
        if (!it) break;
        qg_provider_cfg *p = &c->providers[i];
        p->line = line_of(it);
        yaml_node_t *at[QG_ARRAY_LEN(provider_fields)] = {0};
        walk_map(L, it, sub, provider_fields, QG_ARRAY_LEN(provider_fields), p, at);
        unique_name(L, &names, it, path, p->name, i, "provider");
    }
    dupset_free(&names);
    return 0;
}

/* ---- models ---- */

static const field model_fields[] = {
    {"name", F_STR, .required = true, AT(qg_model_cfg, name)},
    {"weight", F_NUM, AT(qg_model_cfg, weight), .min = 0, .max = 1e6},
    {"input_usd_per_mtok", F_NUM, AT(qg_model_cfg, input_usd_per_mtok), .min = 0, .max = 1e6},
    {"output_usd_per_mtok", F_NUM, AT(qg_model_cfg, output_usd_per_mtok), .min = 0, .max = 1e6},
    {"max_output_tokens", F_I64, AT(qg_model_cfg, max_output_tokens), .min = 0, .max = 1e9},
};

static int f_models(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_config *c = obj;
    size_t n;
    if (list_len(L, v, path, 0, &n) < 0) return -1;
    c->models = qg_xcalloc(n, sizeof *c->models);
    c->n_models = n;
    dupset names;
    dupset_init(&names, n);
    for (size_t i = 0; i < n; i++) {
        char sub[CFG_PATH];
        path_index(sub, sizeof sub, path, i);
        yaml_node_t *it = list_item(L, v, i, sub);
        if (!it) break;
        qg_model_cfg *m = &c->models[i];
        m->line = line_of(it);
        m->weight = 1;
        yaml_node_t *at[QG_ARRAY_LEN(model_fields)] = {0};
        walk_map(L, it, sub, model_fields, QG_ARRAY_LEN(model_fields), m, at);
        unique_name(L, &names, it, path, m->name, i, "model");
    }
    dupset_free(&names);
    return 0;
}

/* ---- keys and their policies ---- */

/* "5h", "daily", "weekly", "monthly", "<N>m", and "<N>h" as N*60 minutes. */
static int parse_policy_period(const char *s, qg_policy_cfg *p)
{
    static const struct { const char *name; qg_period_kind kind; } named[] = {
        {"5h", QG_PERIOD_5H}, {"daily", QG_PERIOD_DAILY}, {"weekly", QG_PERIOD_WEEKLY}, {"monthly", QG_PERIOD_MONTHLY}};
    for (size_t i = 0; i < QG_ARRAY_LEN(named); i++)
        if (!strcmp(s, named[i].name)) return p->period = named[i].kind, p->minutes = 0, 0;
    size_t n = strlen(s);
    if (n < 2 || n > 8 || (s[n - 1] != 'm' && s[n - 1] != 'h') || s[0] == '0') return -1;
    int64_t v = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (s[n - 1] == 'h') v *= 60;
    if (v < 1 || v > CFG_MAX_POLICY_MIN) return -1;
    p->period = QG_PERIOD_MINUTES;
    p->minutes = v;
    return 0;
}

static int f_policy_period(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    scal sc;
    char buf[64];
    if (get_scalar(L, v, path, "a period", &sc) < 0) return -1;
    int rc = parse_policy_period(sc.s, obj);
    if (rc < 0)
        cfg_err(L, line_of(v), path, "bad period %s (5h, daily, weekly, monthly, or minutes such as 90m)",
                shown(&sc, buf, sizeof buf));
    scal_free(&sc);
    return rc;
}

static int f_policy_anchor(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_policy_cfg *p = obj;
    scal sc;
    char buf[64];
    int64_t t = 0;
    if (get_scalar(L, v, path, "a time", &sc) < 0) return -1;
    int rc = qg_parse_rfc3339(qg_slice_of(sc.s), &t);
    if (rc < 0) {
        cfg_err(L, line_of(v), path, "bad anchor %s (RFC 3339 with an offset, e.g. 2026-01-01T00:00:00+08:00)",
                shown(&sc, buf, sizeof buf));
    } else {
        p->anchor_ms = t;
        p->anchor_offset_min = rfc3339_offset_min(sc.s);
    }
    scal_free(&sc);
    return rc;
}

enum { PF_PERIOD, PF_LIMIT, PF_UNIT, PF_ANCHOR, PF_BOUNDARY, PF_EXHAUSTED, PF_RESUME, PF_N };
static const field policy_fields[PF_N] = {
    [PF_PERIOD] = {"period", F_FN, .required = true, .fn = f_policy_period},
    [PF_LIMIT] = {"limit", F_NUM, .required = true, AT(qg_policy_cfg, limit), .min = 0, .max = CFG_MAX_AMOUNT},
    [PF_UNIT] = {"unit", F_ENUM, AT(qg_policy_cfg, unit), NAMES(policy_unit_names)},
    [PF_ANCHOR] = {"anchor", F_FN, .fn = f_policy_anchor},
    [PF_BOUNDARY] = {"boundary", F_FLAG, AT(qg_policy_cfg, strict), NAMES(boundary_names)},
    [PF_EXHAUSTED] = {"on_exhausted", F_FLAG, AT(qg_policy_cfg, on_exhausted_disable), NAMES(exhausted_names)},
    [PF_RESUME] = {"auto_resume", F_BOOL, AT(qg_policy_cfg, auto_resume)},
};

static int f_policies(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_key_cfg *k = obj;
    size_t n;
    if (list_len(L, v, path, 0, &n) < 0) return -1;
    if (n > QG_KEY_MAX_POLICIES) {
        cfg_err(L, line_of(v), path, "has %zu policies; a key may have at most %d", n, QG_KEY_MAX_POLICIES);
        return -1;
    }
    k->policies = qg_xcalloc(n, sizeof *k->policies);
    k->n_policies = n;
    for (size_t i = 0; i < n; i++) {
        char sub[CFG_PATH];
        path_index(sub, sizeof sub, path, i);
        yaml_node_t *it = list_item(L, v, i, sub);
        if (!it) break;
        qg_policy_cfg *p = &k->policies[i];
        *p = (qg_policy_cfg){.unit = QG_UNIT_TOKENS, .strict = true, .auto_resume = true, .line = line_of(it)};
        yaml_node_t *at[PF_N] = {0};
        int64_t ok = walk_map(L, it, sub, policy_fields, PF_N, p, at);
        if (ok >= 0 && (ok & (1 << PF_LIMIT)) && p->limit <= 0) {
            char lim[CFG_PATH];
            path_field(lim, sizeof lim, sub, "limit", 5);
            cfg_err(L, line_of(at[PF_LIMIT]), lim, "must be greater than 0");
        }
    }
    return 0;
}

static int f_key_secret(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_key_cfg *k = obj;
    scal sc;
    if (get_scalar(L, v, path, "a string", &sc) < 0) return -1;
    const char *why = NULL;
    if (sc.n < CFG_MIN_KEY) why = "must be at least " CFG_STR(CFG_MIN_KEY) " characters";
    else if (sc.n > CFG_MAX_KEY) why = "must be at most " CFG_STR(CFG_MAX_KEY) " characters";
    else if (strchr(sc.s, ' ')) why = "must not contain spaces";
    else qg_key_hash(sc.s, sc.n, k->hash);
    if (why) cfg_err(L, line_of(v), path, "%s", why);
    scal_free(&sc); /* the secret is wiped here: only the hash stays */
    return why ? -1 : 0;
}

static const char *const key_status_names[] = {"active", "disabled"};

enum { KF_NAME, KF_KEY, KF_MODELS, KF_TOTAL, KF_POLICIES, KF_STATUS, KF_EXPIRES, KF_N };
static const field key_fields[KF_N] = {
    [KF_NAME] = {"name", F_NAME, .required = true, AT(qg_key_cfg, name)},
    [KF_KEY] = {"key", F_FN, .required = true, .fn = f_key_secret},
    [KF_MODELS] = {"models", F_STRLIST, AT(qg_key_cfg, models), .off2 = offsetof(qg_key_cfg, n_models), .min = 1},
    [KF_TOTAL] = {"total_quota", F_NUM, AT(qg_key_cfg, total_quota), .min = 0, .max = CFG_MAX_AMOUNT},
    [KF_POLICIES] = {"policies", F_FN, .fn = f_policies},
    [KF_STATUS] = {"status", F_FLAG, AT(qg_key_cfg, disabled), NAMES(key_status_names)},
    [KF_EXPIRES] = {"expires_at", F_TIME, AT(qg_key_cfg, expires_ms)},
};

/* The admin API's fields (no secret: the gateway makes it; the order is QG_KS_*'s). */
static const field spec_fields[] = {
    {"name", F_NAME, AT(qg_key_cfg, name)},
    {"models", F_STRLIST, AT(qg_key_cfg, models), .off2 = offsetof(qg_key_cfg, n_models), .min = 1},
    {"total_quota", F_NUM, AT(qg_key_cfg, total_quota), .min = 0, .max = CFG_MAX_AMOUNT},
    {"expires_at", F_TIME, AT(qg_key_cfg, expires_ms)},
    {"status", F_FLAG, AT(qg_key_cfg, disabled), NAMES(key_status_names)},
    {"policies", F_FN, .fn = f_policies},
};

bool qg_key_name_is_id_shaped(const char *name)
{
    if (strncmp(name, "key_", 4) != 0 || strlen(name) != 20) return false;
    for (int i = 4; i < 20; i++)
        if (qg_hex_digit(name[i]) < 0) return false;
    return true;
}

static int f_keys(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_config *c = obj;
    size_t n;
    if (list_len(L, v, path, 0, &n) < 0) return -1;
    c->keys = qg_xcalloc(n, sizeof *c->keys);
    c->n_keys = n;
    dupset names, secrets;
    dupset_init(&names, n);
    dupset_init(&secrets, n);
    for (size_t i = 0; i < n; i++) {
        char sub[CFG_PATH];
        path_index(sub, sizeof sub, path, i);
        yaml_node_t *it = list_item(L, v, i, sub);
        if (!it) break;
        qg_key_cfg *k = &c->keys[i];
        k->line = line_of(it);
        k->total_quota = -1;
        yaml_node_t *at[KF_N] = {0};
        int64_t ok = walk_map(L, it, sub, key_fields, KF_N, k, at);
        unique_name(L, &names, it, path, k->name, i, "key");
        if (k->name && strlen(k->name) > QG_KEY_MAX_NAME) {
            char np[CFG_PATH];
            path_field(np, sizeof np, sub, "name", 4);
            cfg_err(L, line_of(at[KF_NAME]), np, "is longer than %d bytes", QG_KEY_MAX_NAME);
        } else if (k->name && qg_key_name_is_id_shaped(k->name)) {
            char np[CFG_PATH];
            path_field(np, sizeof np, sub, "name", 4);
            cfg_err(L, line_of(at[KF_NAME]), np, "has the shape of an admin key's id (key_ and 16 hex digits); choose another");
        }
        long j = ok >= 0 && (ok & (1 << KF_KEY)) ? dupset_add(&secrets, k->hash, sizeof k->hash, i) : -1;
        if (j >= 0) {
            char kp[CFG_PATH];
            path_field(kp, sizeof kp, sub, "key", 3);
            cfg_err(L, line_of(at[KF_KEY]), kp, "the same secret as keys[%ld]; every key needs its own", j);
        }
    }
    dupset_free(&names);
    dupset_free(&secrets);
    return 0;
}

/* ---- top level ---- */

static int f_listen(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_config *c = obj;
    scal sc;
    if (get_scalar(L, v, path, "host:port", &sc) < 0) return -1;
    char *host = NULL;
    int port = -1;
    const char *why = split_hostport(sc.s, sc.n, &host, &port);
    struct in_addr a4;
    if (!why && port < 0) why = "needs a port (host:port, [::1]:8080 or :8080)";
    if (!why && !host[0]) free(host), host = qg_xstrdup("0.0.0.0");
    if (!why && !strcmp(host, "localhost")) free(host), host = qg_xstrdup("127.0.0.1");
    if (!why && !strchr(host, ':') && inet_pton(AF_INET, host, &a4) != 1)
        why = "must use a numeric IP address (or localhost)";
    if (why) {
        char buf[64];
        cfg_err(L, line_of(v), path, "%s %s", shown(&sc, buf, sizeof buf), why);
        free(host);
    } else {
        free(c->listen_host);
        c->listen_host = host;
        c->listen_port = port;
    }
    scal_free(&sc);
    return why ? -1 : 0;
}

static int f_workers(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_config *c = obj;
    scal sc;
    char buf[64];
    int64_t n = 0;
    if (get_scalar(L, v, path, "auto or a number", &sc) < 0) return -1;
    int rc = 0;
    if (!strcmp(sc.s, "auto")) c->workers = 0;
    else if (parse_i64(sc.s, &n) == 0 && n >= 1 && n <= QG_MAX_WORKERS) c->workers = (int)n;
    else rc = -1;
    if (rc < 0) cfg_err(L, line_of(v), path, "must be auto or 1..%d, found %s", QG_MAX_WORKERS, shown(&sc, buf, sizeof buf));
    scal_free(&sc);
    return rc;
}

static const field store_fields[] = {
    {"sqlite", F_STR, AT(qg_config, store_sqlite)},
};

static int f_store(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    yaml_node_t *at[QG_ARRAY_LEN(store_fields)] = {0};
    return walk_map(L, v, path, store_fields, QG_ARRAY_LEN(store_fields), obj, at) < 0 ? -1 : 0;
}

#define DUR(nm, member, lo) {nm, F_DUR, AT(qg_limits, member), .min = (lo), .max = (double)CFG_MAX_DURATION_MS}
#define SIZE(nm, member) {nm, F_SIZE, AT(qg_limits, member), .min = 1, .max = (double)CFG_MAX_SIZE}
static const field limits_fields[] = {
    SIZE("max_body", max_body),
    /* a head's length travels as an int through the parser: keep it well inside */
    {"max_header", F_SIZE, AT(qg_limits, max_header), .min = 1024, .max = (double)(16u << 20)},
    {"max_connections", F_INT, AT(qg_limits, max_connections), .min = 1, .max = 10000000},
    DUR("client_idle_timeout", client_idle_timeout_ms, 1),
    DUR("client_header_timeout", client_header_timeout_ms, 1),
    DUR("upstream_connect_timeout", upstream_connect_timeout_ms, 1),
    DUR("upstream_first_byte_timeout", upstream_first_byte_timeout_ms, 1),
    DUR("stream_idle_timeout", stream_idle_timeout_ms, 1),
    DUR("drain_timeout", drain_timeout_ms, 0),
    {"retry_attempts", F_INT, AT(qg_limits, retry_attempts), .min = 1, .max = QG_MAX_ATTEMPTS},
    DUR("ledger_flush_interval", ledger_flush_ms, 1),
    SIZE("max_sse_event", max_sse_event),
    {"default_output_tokens", F_I64, AT(qg_limits, default_output_tokens), .min = 1, .max = 100000000},
};
#undef DUR
#undef SIZE

static int f_limits(ld *L, yaml_node_t *v, const char *path, void *obj)
{
    qg_config *c = obj;
    yaml_node_t *at[QG_ARRAY_LEN(limits_fields)] = {0};
    return walk_map(L, v, path, limits_fields, QG_ARRAY_LEN(limits_fields), &c->limits, at) < 0 ? -1 : 0;
}

static const field top_fields[] = {
    {"listen", F_FN, .fn = f_listen},
    {"workers", F_FN, .fn = f_workers},
    {"admin_token", F_SECRET, AT(qg_config, admin_token)},
    {"store", F_FN, .fn = f_store},
    {"limits", F_FN, .fn = f_limits},
    {"models", F_FN, .fn = f_models},
    {"providers", F_FN, .required = true, .fn = f_providers},
    {"keys", F_FN, .fn = f_keys},
};

/* ---- libyaml passes ---- */

static int line_at_offset(const char *text, size_t n, size_t off)
{
    int line = 1;
    for (size_t i = 0; i < off && i < n; i++) line += text[i] == '\n';
    return line;
}

/* Whether 1-based line `line` or the one before it contains "${". */
static bool near_line_has_ref(const char *text, size_t n, int line)
{
    int cur = 1;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && text[i] != '\n') continue;
        if ((cur == line || cur == line - 1) && i - start >= 2 && memmem(text + start, i - start, "${", 2)) return true;
        if (++cur > line) break;
        start = i + 1;
    }
    return false;
}

static void yaml_problem(ld *L, const yaml_parser_t *P, const char *text, size_t n)
{
    if (P->error == YAML_MEMORY_ERROR) {
        cfg_err(L, 1, "yaml", "out of memory");
        return;
    }
    int line = P->error == YAML_READER_ERROR ? line_at_offset(text, n, P->problem_offset)
                                             : (int)P->problem_mark.line + 1;
    const char *problem = P->problem ? P->problem : "cannot parse";
    /* The usual way to get here: an unquoted ${VAR} inside [ ] or { }, where braces are syntax. */
    const char *hint = P->error != YAML_READER_ERROR && near_line_has_ref(text, n, line)
                           ? "; inside [ ] or { } put values with ${...} in quotes"
                           : "";
    if (P->context && P->error != YAML_READER_ERROR)
        cfg_err(L, line, "yaml", "%s (%s at line %d)%s", problem, P->context, (int)P->context_mark.line + 1, hint);
    else
        cfg_err(L, line, "yaml", "%s%s", problem, hint);
}

/* The event pass: syntax errors, nesting depth, a single document. */
static int check_structure(ld *L, const char *text, size_t n)
{
    yaml_parser_t P;
    if (!yaml_parser_initialize(&P)) {
        cfg_err(L, 1, "yaml", "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&P, (const unsigned char *)text, n);
    int depth = 0, docs = 0;
    unsigned nodes = 0, anchors = 0, aliases = 0;
    const char *why = NULL;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&P, &ev)) {
            yaml_problem(L, &P, text, n);
            yaml_parser_delete(&P);
            return -1;
        }
        yaml_event_type_t t = ev.type;
        int line = (int)ev.start_mark.line + 1;
        bool anchored = (t == YAML_SCALAR_EVENT && ev.data.scalar.anchor) ||
                        (t == YAML_SEQUENCE_START_EVENT && ev.data.sequence_start.anchor) ||
                        (t == YAML_MAPPING_START_EVENT && ev.data.mapping_start.anchor);
        yaml_event_delete(&ev);
        bool opens = t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT;
        if (t == YAML_STREAM_END_EVENT) break;
        if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) why = "only one YAML document is allowed (found a second one)";
        else if (opens && ++depth > CFG_MAX_DEPTH) why = "nested deeper than " CFG_STR(CFG_MAX_DEPTH) " levels";
        else if ((opens || t == YAML_SCALAR_EVENT) && ++nodes > CFG_MAX_NODES) why = "more than " CFG_STR(CFG_MAX_NODES) " values";
        else if (anchored && ++anchors > CFG_MAX_ANCHORS) why = "more than " CFG_STR(CFG_MAX_ANCHORS) " anchors (&name)";
        else if (t == YAML_ALIAS_EVENT && ++aliases > CFG_MAX_ALIASES) why = "more than " CFG_STR(CFG_MAX_ALIASES) " aliases (*name)";
        if (t == YAML_SEQUENCE_END_EVENT || t == YAML_MAPPING_END_EVENT) depth--;
        if (why) {
            cfg_err(L, line, "yaml", "%s", why);
            break;
        }
    }
    yaml_parser_delete(&P);
    return why ? -1 : 0;
}

/* Scalars may hold secrets: wipe libyaml's copies before it frees them. */
static void wipe_document(yaml_document_t *doc)
{
    for (yaml_node_t *n = doc->nodes.start; n && n < doc->nodes.top; n++)
        if (n->type == YAML_SCALAR_NODE && n->data.scalar.value)
            OPENSSL_cleanse(n->data.scalar.value, n->data.scalar.length);
}

static void walk_document(ld *L, const char *text, size_t n, qg_config *c)
{
    yaml_parser_t P;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&P)) {
        cfg_err(L, 1, "yaml", "out of memory");
        return;
    }
    yaml_parser_set_input_string(&P, (const unsigned char *)text, n);
    if (!yaml_parser_load(&P, &doc)) {
        yaml_problem(L, &P, text, n);
        yaml_parser_delete(&P);
        return;
    }
    L->doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || is_null(root)) cfg_err(L, 1, "config", "the configuration is empty");
    else {
        yaml_node_t *at[QG_ARRAY_LEN(top_fields)] = {0};
        walk_map(L, root, "", top_fields, QG_ARRAY_LEN(top_fields), c, at);
    }
    L->doc = NULL;
    wipe_document(&doc);
    yaml_document_delete(&doc);
    yaml_parser_delete(&P);
}

/* ---- public API ---- */

void qg_limits_defaults(qg_limits *l)
{
    *l = (qg_limits){
        .max_body = 32ULL << 20,
        .max_header = 64ULL << 10,
        .max_connections = 10000,
        .client_idle_timeout_ms = 60000,
        .client_header_timeout_ms = 10000,
        .upstream_connect_timeout_ms = 5000,
        .upstream_first_byte_timeout_ms = 120000,
        .stream_idle_timeout_ms = 300000,
        .drain_timeout_ms = 30000,
        .retry_attempts = 2,
        .ledger_flush_ms = 100,
        .max_sse_event = 1ULL << 20,
        .default_output_tokens = QG_DEFAULT_OUTPUT_ESTIMATE,
    };
}

int qg_config_load_string(const char *text, size_t n, const char *name, qg_config **out, qg_buf *errs)
{
    *out = NULL;
    ld L = {.file = name ? name : "<config>", .errs = errs};
    qg_config *c = qg_xcalloc(1, sizeof *c);
    c->path = qg_xstrdup(L.file);
    c->listen_host = qg_xstrdup("127.0.0.1");
    c->listen_port = 8080;
    c->store_sqlite = qg_xstrdup("./data/quotagate.db");
    qg_limits_defaults(&c->limits);
    if (n > CFG_MAX_FILE) cfg_err(&L, 1, "config", "the configuration is larger than %u bytes", CFG_MAX_FILE);
    else if (check_structure(&L, text, n) == 0) walk_document(&L, text, n, c);
    if (L.n_errs) {
        qg_config_free(c);
        return -1;
    }
    *out = c;
    return 0;
}

static void free_strings(char **v, size_t n);

/* The loader's "...\n...\n" as one message for an API error: "...; ...", NUL-terminated. */
static void one_line(qg_buf *errs)
{
    while (errs->len && errs->data[errs->len - 1] == '\n') errs->len--;
    for (size_t i = 0; i < errs->len; i++)
        if (errs->data[i] == '\n') errs->data[i] = ';';
    qg_buf_append(errs, "", 1);
}

void qg_key_spec_free(qg_key_spec *s)
{
    free(s->k.name);
    free_strings(s->k.models, s->k.n_models);
    free(s->k.policies);
    memset(s, 0, sizeof *s);
}

/* Which of spec_fields the body's mapping names (null values included). */
static unsigned spec_present(ld *L, const yaml_node_t *root)
{
    unsigned present = 0;
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(L->doc, pr->key);
        int i = k && k->type == YAML_SCALAR_NODE ? find_field(spec_fields, QG_ARRAY_LEN(spec_fields), k) : -1;
        if (i >= 0) present |= 1u << i;
    }
    return present;
}

static int parse_spec(const char *text, size_t n, qg_key_spec *out, qg_buf *errs)
{
    memset(out, 0, sizeof *out);
    out->k.total_quota = -1;
    ld L = {.file = "body", .errs = errs, .literal = true};
    size_t lead = 0;
    while (lead < n && (text[lead] == ' ' || text[lead] == '\t' || text[lead] == '\r' || text[lead] == '\n')) lead++;
    if (lead == n || text[lead] != '{') {
        cfg_err(&L, 1, "body", "expected a JSON object");
        return -1;
    }
    if (check_structure(&L, text, n) < 0) return -1;
    yaml_parser_t P;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&P)) return cfg_err(&L, 1, "body", "out of memory"), -1;
    yaml_parser_set_input_string(&P, (const unsigned char *)text, n);
    if (!yaml_parser_load(&P, &doc)) {
        yaml_problem(&L, &P, text, n);
        yaml_parser_delete(&P);
        return -1;
    }
    L.doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    yaml_node_t *at[QG_ARRAY_LEN(spec_fields)] = {0};
    if (root && walk_map(&L, root, "", spec_fields, QG_ARRAY_LEN(spec_fields), &out->k, at) >= 0)
        out->present = spec_present(&L, root);
    if (out->k.name && strlen(out->k.name) > QG_KEY_MAX_NAME)
        cfg_err(&L, line_of(at[0]), "name", "is longer than %d bytes", QG_KEY_MAX_NAME);
    L.doc = NULL;
    yaml_document_delete(&doc);
    yaml_parser_delete(&P);
    if (L.n_errs) {
        qg_key_spec_free(out);
        return -1;
    }
    return 0;
}

int qg_key_spec_parse(const char *text, size_t n, qg_key_spec *out, qg_buf *errs)
{
    if (parse_spec(text, n, out, errs) == 0) return 0;
    one_line(errs);
    return -1;
}

/* Reads the whole file into b (whose max is CFG_MAX_FILE + 1); returns NULL or why not. */
static const char *read_config_file(const char *path, qg_buf *b)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return strerror(errno);
    const char *why = NULL;
    while (!why && qg_buf_reserve(b, QG_MIN((size_t)65536, b->max - b->len)) == 0 && b->len < b->max) {
        ssize_t r = read(fd, b->data + b->len, b->cap - b->len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) why = strerror(errno);
        if (r <= 0) break;
        b->len += (size_t)r;
    }
    close(fd);
    if (!why && b->len > CFG_MAX_FILE) why = "larger than 4 MiB (the limit for a configuration file)";
    return why;
}

int qg_config_load(const char *path, qg_config **out, qg_buf *errs)
{
    *out = NULL;
    qg_buf text;
    qg_buf_init(&text, CFG_MAX_FILE + 1);
    const char *why = read_config_file(path, &text);
    int rc = -1;
    if (why) {
        if (errs) qg_buf_appendf(errs, "%s: cannot read the configuration: %s\n", path, why);
    } else {
        rc = qg_config_load_string(text.data ? text.data : "", text.len, path, out, errs);
    }
    if (text.data) OPENSSL_cleanse(text.data, text.len);
    qg_buf_free(&text);
    return rc;
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

static void free_provider(qg_provider_cfg *p)
{
    free(p->name);
    free(p->base_url);
    free(p->host);
    free(p->base_path);
    free(p->ca_file);
    free(p->probe);
    free_strings(p->models, p->n_models);
    for (size_t i = 0; p->accounts && i < p->n_accounts; i++) {
        qg_account_cfg *a = &p->accounts[i];
        free(a->name);
        wipe_free(a->api_key);
        for (size_t j = 0; a->buckets && j < a->n_buckets; j++) free(a->buckets[j].name);
        free(a->buckets);
    }
    free(p->accounts);
}

void qg_config_free(qg_config *c)
{
    if (!c) return;
    free(c->path);
    free(c->listen_host);
    wipe_free(c->admin_token);
    free(c->store_sqlite);
    for (size_t i = 0; c->models && i < c->n_models; i++) free(c->models[i].name);
    free(c->models);
    for (size_t i = 0; c->providers && i < c->n_providers; i++) free_provider(&c->providers[i]);
    free(c->providers);
    for (size_t i = 0; c->keys && i < c->n_keys; i++) {
        free(c->keys[i].name);
        free_strings(c->keys[i].models, c->keys[i].n_models);
        free(c->keys[i].policies);
    }
    free(c->keys);
    free(c);
}

const qg_model_cfg *qg_config_model(const qg_config *c, qg_slice name)
{
    for (size_t i = 0; c && i < c->n_models; i++)
        if (c->models[i].name && qg_slice_eq(name, c->models[i].name)) return &c->models[i];
    return NULL;
}

qg_config *qg_config_load_or_report(const char *path)
{
    qg_config *cfg = NULL;
    qg_buf errs;
    qg_buf_init(&errs, 0);
    if (qg_config_load(path, &cfg, &errs) < 0) {
        fprintf(stderr, "%.*s", (int)errs.len, errs.data ? errs.data : "");
        cfg = NULL;
    }
    qg_buf_free(&errs);
    return cfg;
}
