/*
 * test_config.c — the configuration loader (SPEC §2).
 *
 * Most cases are files: tests/unit/configs/good-*.yaml must load, and every bad-*.yaml must
 * fail with the messages its header names, so adding a case costs a file.  Header lines
 * (the leading comment block) understood by the harness:
 *
 *   # expect: TEXT   an error must contain TEXT; a TEXT starting with ':' is prefixed with
 *                    the file's path, so "# expect: :7: providers[0].dialect" pins the line
 *   # absent: TEXT   no error may contain TEXT (secrets must never be echoed)
 *   # env: NAME=VAL  set in the environment while the file loads
 *
 * The C tests below check what a file cannot: the values a good file loads into, the SPEC
 * example, key hashing and secret hygiene, file-level errors and the resource bounds.
 */
#include "testutil.h"

#include <glob.h>
#include <unistd.h>
#include <openssl/sha.h>

#include "config.h"
#include "keys.h"

#define CONFIGS "tests/unit/configs/"
/* Every config needs a provider; snippets that test something else append this one. */
#define PROVIDER "providers: [{ name: p, dialect: openai, base_url: \"http://h\", models: [m]," \
                 " accounts: [{ name: a, api_key: k }] }]\n"
#define EXAMPLE "examples/quotagate.example.yaml"

/* ---- helpers ---- */

static char *buf_str(qg_buf *b)
{
    qg_buf_append(b, "", 1);
    char *s = strdup(b->data);
    qg_buf_free(b);
    return s;
}

static qg_config *load_ok(const char *yaml)
{
    qg_buf errs;
    qg_buf_init(&errs, 0);
    qg_config *c = NULL;
    if (qg_config_load_string(yaml, strlen(yaml), "t.yaml", &c, &errs) != 0)
        fail_msg("expected to load, got:\n%.*s", (int)errs.len, errs.data);
    assert_non_null(c);
    assert_int_equal(errs.len, 0);
    qg_buf_free(&errs);
    return c;
}

/* Loads yaml expecting failure; returns the error text (caller frees). */
static char *load_err(const char *yaml)
{
    qg_buf errs;
    qg_buf_init(&errs, 0);
    qg_config *c = (qg_config *)1;
    assert_int_equal(qg_config_load_string(yaml, strlen(yaml), "t.yaml", &c, &errs), -1);
    assert_null(c);
    assert_true(errs.len > 0);
    return buf_str(&errs);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) fail_msg("expected `%s` in:\n%s", needle, hay);
}

static void assert_lacks(const char *hay, const char *needle)
{
    if (strstr(hay, needle)) fail_msg("did not expect `%s` in:\n%s", needle, hay);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Field by field: the struct has padding. */
static void assert_limits_equal(const qg_limits *a, const qg_limits *b)
{
    assert_int_equal(a->max_body, b->max_body);
    assert_int_equal(a->max_header, b->max_header);
    assert_int_equal(a->max_connections, b->max_connections);
    assert_int_equal(a->client_idle_timeout_ms, b->client_idle_timeout_ms);
    assert_int_equal(a->upstream_connect_timeout_ms, b->upstream_connect_timeout_ms);
    assert_int_equal(a->upstream_first_byte_timeout_ms, b->upstream_first_byte_timeout_ms);
    assert_int_equal(a->stream_idle_timeout_ms, b->stream_idle_timeout_ms);
    assert_int_equal(a->drain_timeout_ms, b->drain_timeout_ms);
    assert_int_equal(a->retry_attempts, b->retry_attempts);
    assert_int_equal(a->ledger_flush_ms, b->ledger_flush_ms);
    assert_int_equal(a->max_sse_event, b->max_sse_event);
}

/* ---- data-driven files ---- */

typedef struct {
    char *expect[32];
    int n_expect;
    char *absent[8];
    int n_absent;
    char *env[8];
    int n_env;
} header;

static char *dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

/* Reads the leading comment block of text; sets the # env: variables. */
static void read_header(const char *text, header *h)
{
    memset(h, 0, sizeof *h);
    for (const char *l = text; *l == '#';) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        if (!strncmp(l, "# expect: ", 10) && h->n_expect < 32) h->expect[h->n_expect++] = dup_n(l + 10, n - 10);
        if (!strncmp(l, "# absent: ", 10) && h->n_absent < 8) h->absent[h->n_absent++] = dup_n(l + 10, n - 10);
        if (!strncmp(l, "# env: ", 7) && h->n_env < 8) {
            char *kv = dup_n(l + 7, n - 7), *eq = strchr(kv, '=');
            assert_non_null(eq);
            *eq = 0;
            setenv(kv, eq + 1, 1);
            h->env[h->n_env++] = kv;
        }
        if (!nl) break;
        l = nl + 1;
    }
}

static void free_header(header *h)
{
    for (int i = 0; i < h->n_expect; i++) free(h->expect[i]);
    for (int i = 0; i < h->n_absent; i++) free(h->absent[i]);
    for (int i = 0; i < h->n_env; i++) unsetenv(h->env[i]), free(h->env[i]);
}

/* Every line of errs is "path:LINE: field: message". */
static bool well_formed(const char *path, const char *errs)
{
    size_t pl = strlen(path);
    for (const char *l = errs; *l;) {
        const char *nl = strchr(l, '\n');
        if (!nl || strncmp(l, path, pl) || l[pl] != ':') return false;
        const char *p = l + pl + 1;
        if (*p < '0' || *p > '9') return false;
        while (*p >= '0' && *p <= '9') p++;
        if (p[0] != ':' || p[1] != ' ' || !memchr(p + 2, ':', (size_t)(nl - p - 2))) return false;
        l = nl + 1;
    }
    return true;
}

/* Runs one file; returns the number of failed checks (each printed). */
static int run_case(const char *path, bool good)
{
    char *text = tu_read_file(path, NULL);
    header h;
    read_header(text, &h);
    qg_buf errs;
    qg_buf_init(&errs, 0);
    qg_config *c = NULL;
    int rc = qg_config_load(path, &c, &errs);
    char *e = buf_str(&errs);
    int failed = 0;
    if (good && (rc != 0 || h.n_expect)) {
        print_error("%s: expected to load (and to expect nothing), got:\n%s", path, e);
        failed++;
    }
    if (!good && (rc != -1 || c || h.n_expect == 0)) {
        print_error("%s: expected to fail with at least one `# expect:` line (rc=%d)\n", path, rc);
        failed++;
    }
    if (!good && !well_formed(path, e)) {
        print_error("%s: malformed error lines:\n%s", path, e);
        failed++;
    }
    for (int i = 0; i < h.n_expect; i++) {
        char want[512];
        snprintf(want, sizeof want, "%s%s", h.expect[i][0] == ':' ? path : "", h.expect[i]);
        if (!strstr(e, want)) print_error("%s: expected `%s` in:\n%s", path, want, e), failed++;
    }
    for (int i = 0; i < h.n_absent; i++)
        if (strstr(e, h.absent[i])) print_error("%s: `%s` must not appear in:\n%s", path, h.absent[i], e), failed++;
    qg_config_free(c);
    free_header(&h);
    free(e);
    free(text);
    return failed;
}

static void run_files(const char *pattern, bool good)
{
    glob_t g;
    assert_int_equal(glob(pattern, 0, NULL, &g), 0);
    int failed = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) failed += run_case(g.gl_pathv[i], good);
    assert_true(g.gl_pathc >= 10);
    globfree(&g);
    if (failed) fail_msg("%d check(s) failed in %s", failed, pattern);
}

static void test_good_files(void **state) { run_files(CONFIGS "good-*.yaml", true); }
static void test_bad_files(void **state) { run_files(CONFIGS "bad-*.yaml", false); }

/* Loads a good file (with its # env: header) for value checks. */
static qg_config *load_good(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, CONFIGS "%s", name);
    char *text = tu_read_file(path, NULL);
    header h;
    read_header(text, &h);
    qg_buf errs;
    qg_buf_init(&errs, 0);
    qg_config *c = NULL;
    if (qg_config_load(path, &c, &errs) != 0) fail_msg("%s:\n%.*s", path, (int)errs.len, errs.data);
    qg_buf_free(&errs);
    free_header(&h);
    free(text);
    return c;
}

/* ---- the SPEC example ---- */

#define JAN1_2026_PLUS8_MS 1767196800000LL /* 2026-01-01T00:00:00+08:00 */
#define DEC31_2026_MS 1798675200000LL      /* 2026-12-31T00:00:00Z */

static void check_spec_provider(const qg_provider_cfg *p)
{
    assert_string_equal(p->name, "deepseek");
    assert_int_equal(p->dialect, QG_DIALECT_OPENAI);
    assert_string_equal(p->base_url, "https://api.deepseek.com");
    assert_true(p->tls);
    assert_string_equal(p->host, "api.deepseek.com");
    assert_int_equal(p->port, 443);
    assert_string_equal(p->base_path, "");
    assert_null(p->ca_file);
    assert_string_equal(p->probe, "deepseek_balance");
    assert_int_equal(p->n_models, 2);
    assert_string_equal(p->models[0], "deepseek-chat");
    assert_string_equal(p->models[1], "deepseek-reasoner");
    assert_int_equal(p->n_accounts, 1);
    const qg_account_cfg *a = &p->accounts[0];
    assert_string_equal(a->name, "ds-main");
    assert_string_equal(a->api_key, "sk-deepseek-test");
    assert_int_equal(a->priority, 0);
    assert_int_equal(a->weight, 1);
    assert_false(a->combine_any);
    assert_int_equal(a->n_buckets, 2);
    const qg_bucket_cfg *b = &a->buckets[0];
    assert_string_equal(b->name, "credits");
    assert_int_equal(b->kind, QG_BUCKET_CREDITS);
    assert_int_equal(b->unit, QG_UNIT_USD);
    assert_true(b->limit == 50);
    assert_int_equal(b->expires_at_ms, DEC31_2026_MS);
    b = &a->buckets[1];
    assert_string_equal(b->name, "5h");
    assert_int_equal(b->kind, QG_BUCKET_WINDOW);
    assert_int_equal(b->unit, QG_UNIT_REQUESTS);
    assert_true(b->limit == 40);
    assert_int_equal(b->period_ms, 5 * 3600000LL);
    assert_int_equal(b->reset, QG_RESET_FIRST_USE);
}

static void test_spec_example(void **state)
{
    setenv("QUOTAGATE_ADMIN_TOKEN", "admin-test-token", 1);
    setenv("DEEPSEEK_API_KEY", "sk-deepseek-test", 1);
    setenv("CI_BOT_KEY", "ci-bot-secret-0001", 1);
    qg_buf errs;
    qg_buf_init(&errs, 0);
    qg_config *c = NULL;
    if (qg_config_load(EXAMPLE, &c, &errs) != 0) fail_msg("%.*s", (int)errs.len, errs.data);
    assert_string_equal(c->path, EXAMPLE);
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    assert_int_equal(c->workers, 0);
    assert_string_equal(c->admin_token, "admin-test-token");
    assert_string_equal(c->store_sqlite, "./data/quotagate.db");
    qg_limits d;
    qg_limits_defaults(&d);
    assert_limits_equal(&c->limits, &d); /* the example spells out the defaults */
    assert_int_equal(c->n_models, 1);
    const qg_model_cfg *m = qg_config_model(c, S("claude-opus-4"));
    assert_non_null(m);
    assert_true(m->weight == 5 && m->input_usd_per_mtok == 15 && m->output_usd_per_mtok == 75);
    assert_int_equal(m->max_output_tokens, 0);
    assert_int_equal(c->n_providers, 1);
    check_spec_provider(&c->providers[0]);
    assert_int_equal(c->n_keys, 1);
    const qg_key_cfg *k = &c->keys[0];
    assert_string_equal(k->name, "ci-bot");
    uint8_t h[32];
    SHA256((const unsigned char *)"ci-bot-secret-0001", 18, h);
    assert_memory_equal(k->hash, h, 32);
    assert_null(k->models);
    assert_true(k->total_quota < 0);
    assert_int_equal(k->n_policies, 1);
    const qg_policy_cfg *p = &k->policies[0];
    assert_int_equal(p->period, QG_PERIOD_DAILY);
    assert_true(p->limit == 2000000);
    assert_int_equal(p->unit, QG_UNIT_TOKENS);
    assert_int_equal(p->anchor_ms, JAN1_2026_PLUS8_MS);
    assert_int_equal(p->anchor_offset_min, 480);
    assert_true(p->strict && !p->on_exhausted_disable && p->auto_resume);
    qg_config_free(c);
    qg_buf_free(&errs);
    unsetenv("QUOTAGATE_ADMIN_TOKEN");
    unsetenv("DEEPSEEK_API_KEY");
    unsetenv("CI_BOT_KEY");
}

static void test_spec_example_without_env(void **state)
{
    unsetenv("QUOTAGATE_ADMIN_TOKEN");
    unsetenv("DEEPSEEK_API_KEY");
    unsetenv("CI_BOT_KEY");
    qg_buf errs;
    qg_buf_init(&errs, 0);
    qg_config *c = NULL;
    assert_int_equal(qg_config_load(EXAMPLE, &c, &errs), -1);
    char *e = buf_str(&errs);
    /* all three, each at its own line, in one pass */
    assert_contains(e, EXAMPLE ":3: admin_token: environment variable QUOTAGATE_ADMIN_TOKEN is not set");
    assert_contains(e, EXAMPLE ":26: providers[0].accounts[0].api_key: environment variable DEEPSEEK_API_KEY is not set");
    assert_contains(e, EXAMPLE ":34: keys[0].key: environment variable CI_BOT_KEY is not set");
    assert_int_equal(count_lines(e), 3);
    free(e);
}

/* ---- defaults and plain values ---- */

static void test_defaults(void **state)
{
    qg_limits l;
    qg_limits_defaults(&l);
    assert_int_equal(l.max_body, 32 << 20);
    assert_int_equal(l.max_header, 64 << 10);
    assert_int_equal(l.max_connections, 10000);
    assert_int_equal(l.client_idle_timeout_ms, 60000);
    assert_int_equal(l.upstream_connect_timeout_ms, 5000);
    assert_int_equal(l.upstream_first_byte_timeout_ms, 120000);
    assert_int_equal(l.stream_idle_timeout_ms, 300000);
    assert_int_equal(l.drain_timeout_ms, 30000);
    assert_int_equal(l.retry_attempts, 2);
    assert_int_equal(l.ledger_flush_ms, 100);
    assert_int_equal(l.max_sse_event, 1 << 20);

    qg_config *c = load_good("good-minimal.yaml");
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    assert_int_equal(c->workers, 0);
    assert_null(c->admin_token);
    assert_string_equal(c->store_sqlite, "./data/quotagate.db");
    assert_limits_equal(&c->limits, &l);
    assert_int_equal(c->n_models, 0);
    assert_int_equal(c->n_keys, 0);
    const qg_provider_cfg *p = &c->providers[0];
    assert_null(p->ca_file);
    assert_null(p->probe);
    const qg_account_cfg *a = &p->accounts[0];
    assert_int_equal(a->priority, 0);
    assert_int_equal(a->weight, 1);
    assert_false(a->combine_any);
    assert_false(a->fail_closed);
    assert_int_equal(a->n_buckets, 0);
    assert_int_equal(p->line, 3);
    assert_int_equal(a->line, 8);
    qg_config_free(c);
}

static void test_limits(void **state)
{
    qg_config *c = load_good("good-limits.yaml");
    const qg_limits *l = &c->limits;
    assert_int_equal(l->max_body, 1 << 20);
    assert_int_equal(l->max_header, 16 << 10);
    assert_int_equal(l->max_connections, 500);
    assert_int_equal(l->client_idle_timeout_ms, 90000);
    assert_int_equal(l->upstream_connect_timeout_ms, 1500);
    assert_int_equal(l->upstream_first_byte_timeout_ms, 120000);
    assert_int_equal(l->stream_idle_timeout_ms, 3600000);
    assert_int_equal(l->drain_timeout_ms, 0);
    assert_int_equal(l->retry_attempts, 3);
    assert_int_equal(l->ledger_flush_ms, 250);
    assert_int_equal(l->max_sse_event, 256 << 10);
    qg_config_free(c);
}

static void test_listen_forms(void **state)
{
    static const struct {
        const char *yaml, *host;
        int port, workers;
    } cases[] = {
        {"listen: \"[::1]:0\"\nworkers: 16\n" PROVIDER, "::1", 0, 16},
        {"listen: :9000\nworkers: auto\n" PROVIDER, "0.0.0.0", 9000, 0},
        {"listen: localhost:81\nworkers: 1\n" PROVIDER, "127.0.0.1", 81, 1},
        {"listen: 10.0.0.1:65535\nworkers: \"256\"\n" PROVIDER, "10.0.0.1", 65535, 256},
        {"listen: \"[::]:8080\"\n" PROVIDER, "::", 8080, 0},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        qg_config *c = load_ok(cases[i].yaml);
        assert_string_equal(c->listen_host, cases[i].host);
        assert_int_equal(c->listen_port, cases[i].port);
        assert_int_equal(c->workers, cases[i].workers);
        qg_config_free(c);
    }
    char *e = load_err("listen: \"[::1]\"\n");
    assert_contains(e, "t.yaml:1: listen: `[::1]` needs a port");
    free(e);
    e = load_err("listen: \"::1:8080\"\n");
    assert_contains(e, "IPv6 address without brackets");
    free(e);
    e = load_err("listen: 127.0.0.1:65536\n");
    assert_contains(e, "bad port");
    free(e);
}

/* ---- ${VAR} substitution ---- */

static void test_env_substitution(void **state)
{
    qg_config *c = load_good("good-env.yaml");
    assert_string_equal(c->listen_host, "10.1.2.3");
    assert_int_equal(c->listen_port, 9443);
    assert_string_equal(c->admin_token, "fallback-admin-token"); /* unset: the default */
    assert_string_equal(c->store_sqlite, "./data/env.db");       /* empty: the default too */
    const qg_provider_cfg *p = &c->providers[0];
    assert_string_equal(p->name, "p-9443");
    assert_string_equal(p->base_url, "https://10.1.2.3:9443/v1");
    assert_true(p->tls);
    assert_string_equal(p->host, "10.1.2.3");
    assert_int_equal(p->port, 9443);
    assert_string_equal(p->base_path, "");
    assert_string_equal(p->accounts[0].api_key, "sk-from-env");
    assert_string_equal(p->accounts[1].api_key, "pre-sk-from-env--post"); /* several, mid-string, empty */
    qg_config_free(c);
}

static void test_env_edge_cases(void **state)
{
    setenv("QG_T_SET", "from-env", 1);
    setenv("QG_T_REF", "${QG_T_SET}", 1);
    unsetenv("QG_T_UNSET");
    qg_config *c = load_ok("admin_token: ${QG_T_SET:-ignored}\n"       /* set beats default */
                           "store: { sqlite: \"$HOME/$x/${QG_T_REF}\" }\n" /* no recursion, bare $ kept */
                           "listen: ${QG_T_UNSET:-127.0.0.2}:${QG_T_UNSET:-81}\n" PROVIDER);
    assert_string_equal(c->admin_token, "from-env");
    assert_string_equal(c->store_sqlite, "$HOME/$x/${QG_T_SET}");
    assert_string_equal(c->listen_host, "127.0.0.2");
    assert_int_equal(c->listen_port, 81);
    qg_config_free(c);
    /* a variable set but empty, without a default, is empty: optional fields become unset */
    setenv("QG_T_EMPTY", "", 1);
    c = load_ok("admin_token: ${QG_T_EMPTY}\n" PROVIDER);
    assert_null(c->admin_token);
    qg_config_free(c);
    /* field names are not substituted */
    char *e = load_err("${QG_T_SET}: 1\n");
    assert_contains(e, "unknown field `${QG_T_SET}`");
    free(e);
    unsetenv("QG_T_SET");
    unsetenv("QG_T_REF");
    unsetenv("QG_T_EMPTY");
}

static void test_env_secret_never_echoed(void **state)
{
    setenv("QG_T_SECRET", "hunter2-topsecret", 1);
    char *e = load_err("workers: ${QG_T_SECRET}\n"
                       "listen: ${QG_T_SECRET}\n"
                       "limits: { max_body: \"${QG_T_SECRET}\", client_idle_timeout: \"x${QG_T_SECRET}\" }\n"
                       "providers:\n"
                       "  - name: p\n"
                       "    dialect: ${QG_T_SECRET}\n"
                       "    base_url: https://${QG_T_SECRET}@h\n"
                       "    models: [m]\n"
                       "    accounts: [{ name: a, api_key: \"${QG_T_SECRET} x\" }]\n"
                       "keys: [{ name: k, key: \"${QG_T_SECRET} y\" }]\n");
    assert_lacks(e, "hunter2");
    assert_contains(e, "t.yaml:1: workers: must be auto or 1..256, found (a value from the environment)");
    assert_contains(e, "t.yaml:6: providers[0].dialect: (a value from the environment) is not one of");
    assert_int_equal(count_lines(e), 8);
    free(e);
    unsetenv("QG_T_SECRET");
}

/* ---- providers ---- */

static void test_base_url_split(void **state)
{
    static const struct {
        const char *name, *host, *path;
        bool tls;
        int port;
    } want[] = {
        {"http-plain", "api.example.com", "", false, 80},   {"https-plain", "api.example.com", "", true, 443},
        {"http-port", "127.0.0.1", "", false, 9100},        {"https-port", "gw.example.com", "", true, 8443},
        {"v6", "::1", "", false, 8080},                     {"v6-default", "2001:db8::1", "", true, 443},
        {"prefix", "example.com", "/openai", true, 443},    {"prefix-slash", "example.com", "/api", true, 443},
        {"not-v1", "example.com", "/v1beta", true, 443},    {"deep", "example.com", "/a/b", true, 443},
    };
    qg_config *c = load_good("good-urls.yaml");
    assert_int_equal(c->n_providers, QG_ARRAY_LEN(want));
    for (size_t i = 0; i < QG_ARRAY_LEN(want); i++) {
        const qg_provider_cfg *p = &c->providers[i];
        assert_string_equal(p->name, want[i].name);
        assert_string_equal(p->host, want[i].host);
        assert_string_equal(p->base_path, want[i].path);
        assert_int_equal(p->tls, want[i].tls);
        assert_int_equal(p->port, want[i].port);
    }
    assert_string_equal(c->providers[3].base_url, "HTTPS://gw.example.com:8443/v1/"); /* kept as written */
    assert_int_equal(c->providers[3].dialect, QG_DIALECT_ANTHROPIC);
    qg_config_free(c);
}

static void test_provider_extras(void **state)
{
    qg_config *c = load_good("good-ca-file.yaml");
    assert_string_equal(c->providers[0].ca_file, "tests/unit/configs/ca-placeholder.pem");
    qg_config_free(c);

    c = load_good("good-nulls.yaml");
    assert_null(c->admin_token);
    assert_string_equal(c->store_sqlite, "./data/quotagate.db");
    assert_null(c->providers[0].ca_file);
    assert_null(c->providers[0].probe);
    assert_int_equal(c->providers[0].accounts[0].n_buckets, 0);
    assert_false(c->providers[0].accounts[0].fail_closed);
    assert_int_equal(c->n_keys, 0);
    qg_config_free(c);

    c = load_good("good-anchors.yaml");
    assert_int_equal(c->n_providers, 2);
    assert_string_equal(c->providers[1].base_url, "http://127.0.0.1:9100");
    assert_int_equal(c->providers[1].n_models, 2);
    assert_string_equal(c->providers[1].models[1], "m2");
    assert_int_equal(c->providers[1].accounts[0].n_buckets, 1);
    assert_true(c->providers[1].accounts[0].buckets[0].name != c->providers[0].accounts[0].buckets[0].name);
    qg_config_free(c);
}

static void test_models(void **state)
{
    qg_config *c = load_good("good-model-not-listed.yaml");
    const qg_model_cfg *m = qg_config_model(c, S("priced"));
    assert_non_null(m);
    assert_true(m->weight == 2 && m->input_usd_per_mtok == 1.25 && m->output_usd_per_mtok == 10);
    assert_int_equal(m->max_output_tokens, 8192);
    assert_int_equal(m->line, 3);
    m = qg_config_model(c, S("free"));
    assert_non_null(m);
    assert_true(m->weight == 1 && m->input_usd_per_mtok == 0);
    assert_null(qg_config_model(c, S("unlisted")));
    assert_null(qg_config_model(c, (qg_slice){"priced", 5}));
    assert_string_equal(c->providers[0].models[1], "unlisted");
    qg_config_free(c);
}

/* ---- buckets and policies ---- */

static void check_bucket(const qg_bucket_cfg *b, const char *name, qg_bucket_kind kind, qg_unit unit, double limit,
                         int64_t period_ms, qg_reset_mode reset)
{
    assert_string_equal(b->name, name);
    assert_int_equal(b->kind, kind);
    assert_int_equal(b->unit, unit);
    assert_true(b->limit == limit);
    assert_int_equal(b->period_ms, period_ms);
    assert_int_equal(b->reset, reset);
}

static void test_buckets(void **state)
{
    qg_config *c = load_good("good-buckets.yaml");
    const qg_account_cfg *a = &c->providers[0].accounts[0];
    assert_int_equal(a->priority, 2);
    assert_int_equal(a->weight, 3);
    assert_true(a->combine_any);
    assert_true(a->fail_closed);
    assert_int_equal(a->n_buckets, 8);
    const qg_bucket_cfg *b = a->buckets;
    check_bucket(&b[0], "credits", QG_BUCKET_CREDITS, QG_UNIT_USD, 50, 0, QG_RESET_ANCHORED);
    assert_int_equal(b[0].expires_at_ms, DEC31_2026_MS);
    check_bucket(&b[1], "bonus", QG_BUCKET_CREDITS, QG_UNIT_USD, -1, 0, QG_RESET_ANCHORED); /* limit unknown */
    assert_int_equal(b[1].expires_at_ms, 0);
    check_bucket(&b[2], "5h", QG_BUCKET_WINDOW, QG_UNIT_REQUESTS, 40, 5 * 3600000LL, QG_RESET_FIRST_USE);
    check_bucket(&b[3], "day", QG_BUCKET_WINDOW, QG_UNIT_TOKENS, 1000000, 86400000LL, QG_RESET_ANCHORED);
    assert_int_equal(b[3].anchor_ms, JAN1_2026_PLUS8_MS);
    check_bucket(&b[4], "week", QG_BUCKET_WINDOW, QG_UNIT_PERCENT, 100, 7 * 86400000LL, QG_RESET_SLIDING);
    check_bucket(&b[5], "rpm", QG_BUCKET_RATE, QG_UNIT_REQUESTS, 60, 60000, QG_RESET_SLIDING); /* rate default */
    check_bucket(&b[6], "itpm", QG_BUCKET_RATE, QG_UNIT_INPUT_TOKENS, 40000, 60000, QG_RESET_ANCHORED);
    check_bucket(&b[7], "otpm", QG_BUCKET_RATE, QG_UNIT_OUTPUT_TOKENS, 8000, 60000, QG_RESET_SLIDING);
    assert_int_equal(b[0].line, 15);
    qg_config_free(c);
}

static void check_policy(const qg_policy_cfg *p, qg_period_kind period, int64_t minutes, double limit, qg_unit unit,
                         bool strict, bool disable, bool resume)
{
    assert_int_equal(p->period, period);
    assert_int_equal(p->minutes, minutes);
    assert_true(p->limit == limit);
    assert_int_equal(p->unit, unit);
    assert_int_equal(p->strict, strict);
    assert_int_equal(p->on_exhausted_disable, disable);
    assert_int_equal(p->auto_resume, resume);
}

static void test_policies(void **state)
{
    qg_config *c = load_good("good-policies.yaml");
    const qg_key_cfg *k = &c->keys[0];
    assert_int_equal(k->n_models, 2);
    assert_string_equal(k->models[1], "m2");
    assert_true(k->total_quota == 5000000);
    assert_int_equal(k->n_policies, 7);
    const qg_policy_cfg *p = k->policies;
    check_policy(&p[0], QG_PERIOD_5H, 0, 100, QG_UNIT_REQUESTS, true, false, true);
    assert_int_equal(p[0].anchor_ms, 0);
    assert_int_equal(p[0].anchor_offset_min, 0);
    check_policy(&p[1], QG_PERIOD_DAILY, 0, 2000000, QG_UNIT_TOKENS, true, false, true);
    assert_int_equal(p[1].anchor_ms, JAN1_2026_PLUS8_MS);
    assert_int_equal(p[1].anchor_offset_min, 480);
    check_policy(&p[2], QG_PERIOD_WEEKLY, 0, 10, QG_UNIT_USD, false, false, true);
    assert_int_equal(p[2].anchor_ms, 1767625200000LL); /* 2026-01-05T15:00:00Z */
    assert_int_equal(p[2].anchor_offset_min, -330);
    check_policy(&p[3], QG_PERIOD_MONTHLY, 0, 3.5, QG_UNIT_USD, true, true, false);
    assert_int_equal(p[3].anchor_ms, 1769817600000LL); /* 2026-01-31T00:00:00Z */
    assert_int_equal(p[3].anchor_offset_min, 0);
    check_policy(&p[4], QG_PERIOD_MINUTES, 90, 1000, QG_UNIT_TOKENS, true, false, true);
    check_policy(&p[5], QG_PERIOD_MINUTES, 120, 1000, QG_UNIT_TOKENS, true, false, true);
    check_policy(&p[6], QG_PERIOD_MINUTES, 1, 1, QG_UNIT_REQUESTS, true, false, true);
    assert_int_equal(p[4].line, 13);
    qg_config_free(c);

    /* an offset written without a colon */
    c = load_ok("keys: [{ name: k, key: sk-client-0001, policies: [{ period: daily, limit: 1,"
                " anchor: \"2026-01-01T05:30:00+0530\" }] }]\n" PROVIDER);
    assert_int_equal(c->keys[0].policies[0].anchor_offset_min, 330);
    assert_int_equal(c->keys[0].policies[0].anchor_ms, 1767225600000LL);
    qg_config_free(c);
}

/* ---- keys: hashing and secret hygiene ---- */

typedef void (*str_fn)(const char *s, void *arg);

/* Calls fn on every string the config holds. */
static void each_string(const qg_config *c, str_fn fn, void *arg)
{
    const char *top[] = {c->path, c->listen_host, c->admin_token, c->store_sqlite};
    for (size_t i = 0; i < QG_ARRAY_LEN(top); i++) fn(top[i], arg);
    for (size_t i = 0; i < c->n_models; i++) fn(c->models[i].name, arg);
    for (size_t i = 0; i < c->n_providers; i++) {
        const qg_provider_cfg *p = &c->providers[i];
        const char *ps[] = {p->name, p->base_url, p->host, p->base_path, p->ca_file, p->probe};
        for (size_t j = 0; j < QG_ARRAY_LEN(ps); j++) fn(ps[j], arg);
        for (size_t j = 0; j < p->n_models; j++) fn(p->models[j], arg);
        for (size_t j = 0; j < p->n_accounts; j++) {
            fn(p->accounts[j].name, arg);
            fn(p->accounts[j].api_key, arg);
            for (size_t b = 0; b < p->accounts[j].n_buckets; b++) fn(p->accounts[j].buckets[b].name, arg);
        }
    }
    for (size_t i = 0; i < c->n_keys; i++) {
        fn(c->keys[i].name, arg);
        for (size_t j = 0; j < c->keys[i].n_models; j++) fn(c->keys[i].models[j], arg);
    }
}

static void no_secret(const char *s, void *arg)
{
    if (s && strstr(s, (const char *)arg)) fail_msg("the key secret is kept in `%s`", s);
}

static void test_key_hashing(void **state)
{
    const char *secret = "sk-qg-live-Zr8Kq2mV7xN4";
    setenv("QG_T_KEY", secret, 1);
    qg_config *c = load_ok("admin_token: admin-token-1\n"
                           "providers: [{ name: p, dialect: openai, base_url: \"http://h\", models: [m],"
                           " accounts: [{ name: a, api_key: sk-upstream-1 }] }]\n"
                           "keys:\n"
                           "  - { name: literal, key: sk-qg-live-Zr8Kq2mV7xN4-lit }\n"
                           "  - { name: from-env, key: \"${QG_T_KEY}\", models: [m] }\n");
    uint8_t want[32], got[32];
    SHA256((const unsigned char *)secret, strlen(secret), want);
    assert_memory_equal(c->keys[1].hash, want, 32);
    qg_key_hash(secret, strlen(secret), got);
    assert_memory_equal(got, want, 32);
    SHA256((const unsigned char *)"sk-qg-live-Zr8Kq2mV7xN4-lit", 27, want);
    assert_memory_equal(c->keys[0].hash, want, 32);
    each_string(c, no_secret, (void *)secret); /* also covers the literal one (a prefix match) */
    assert_string_equal(c->providers[0].accounts[0].api_key, "sk-upstream-1"); /* needed upstream */
    qg_config_free(c);
    unsetenv("QG_T_KEY");

    /* the well-known vector */
    qg_key_hash("abc", 3, got);
    static const uint8_t abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                    0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                    0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    assert_memory_equal(got, abc, 32);
}

/* ---- file-level errors and bounds ---- */

static void test_file_errors(void **state)
{
    qg_buf errs;
    qg_buf_init(&errs, 0);
    qg_config *c = (qg_config *)1;
    assert_int_equal(qg_config_load(CONFIGS "no-such-file.yaml", &c, &errs), -1);
    assert_null(c);
    char *e = buf_str(&errs);
    assert_string_equal(e, CONFIGS "no-such-file.yaml: cannot read the configuration: No such file or directory\n");
    free(e);

    qg_buf_init(&errs, 0);
    assert_int_equal(qg_config_load(CONFIGS, &c, &errs), -1);
    e = buf_str(&errs);
    assert_contains(e, "Is a directory");
    free(e);

    /* larger than 4 MiB, as a file and as a string */
    char path[] = "/tmp/qg-config-big-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = (4u << 20) + 1;
    char *big = malloc(n);
    memset(big, '#', n);
    assert_int_equal(write(fd, big, n), (ssize_t)n);
    close(fd);
    qg_buf_init(&errs, 0);
    assert_int_equal(qg_config_load(path, &c, &errs), -1);
    e = buf_str(&errs);
    assert_contains(e, "larger than 4 MiB");
    free(e);
    unlink(path);
    qg_buf_init(&errs, 0);
    assert_int_equal(qg_config_load_string(big, n, NULL, &c, &errs), -1);
    e = buf_str(&errs);
    assert_contains(e, "<config>:1: config: the configuration is larger than");
    free(e);
    free(big);

    /* a NUL byte is a YAML reader error, with a line */
    qg_buf_init(&errs, 0);
    assert_int_equal(qg_config_load_string("listen: :80\nworkers: 2\0\n", 24, "nul.yaml", &c, &errs), -1);
    e = buf_str(&errs);
    assert_contains(e, "nul.yaml:2: yaml: control characters are not allowed");
    free(e);
    qg_config_free(NULL);
}

static void test_nesting_bound(void **state)
{
    /* 63 levels under the root mapping are fine for the parser (and then an unknown field) */
    char ok[256] = "x: ";
    memset(ok + 3, '[', 63);
    memset(ok + 66, ']', 63);
    char *e = load_err(ok);
    assert_contains(e, "t.yaml:1: x: unknown field `x`");
    assert_lacks(e, "nested deeper");
    free(e);
    /* 100000 levels: refused at the 65th, quickly and without recursion */
    size_t n = 200000;
    char *deep = malloc(n + 1);
    memset(deep, '[', n / 2);
    memset(deep + n / 2, ']', n / 2);
    deep[n] = 0;
    e = load_err(deep);
    assert_contains(e, "t.yaml:1: yaml: nested deeper than 64 levels");
    assert_int_equal(count_lines(e), 1);
    free(e);
    free(deep);
}

/* buckets: [*b x k] in accounts: [*a x k] in providers: [*p x k]: k^3 buckets from 3k aliases */
static void test_alias_bomb(void **state)
{
    qg_buf y;
    qg_buf_init(&y, 0);
    int k = 1000;
    qg_buf_appendf(&y, "x0: &b { name: b, kind: rate, unit: requests, period: 1m }\nx1: &bl [");
    for (int i = 0; i < k; i++) qg_buf_appendf(&y, "%s*b", i ? "," : "");
    qg_buf_appendf(&y, "]\nx2: &a { name: a, api_key: k, buckets: *bl }\nx3: &al [");
    for (int i = 0; i < k; i++) qg_buf_appendf(&y, "%s*a", i ? "," : "");
    qg_buf_appendf(&y, "]\nx4: &p { name: p, dialect: openai, base_url: \"http://h\", models: [m], accounts: *al }\n"
                       "providers: [");
    for (int i = 0; i < k; i++) qg_buf_appendf(&y, "%s*p", i ? "," : "");
    qg_buf_appendf(&y, "]\n");
    qg_buf_append(&y, "", 1);
    int64_t t0 = qg_mono_ms();
    char *e = load_err(y.data);
    assert_contains(e, "the document expands too much");
    assert_contains(e, "too many errors; only the first 50 are listed");
    assert_true(qg_mono_ms() - t0 < 20000);
    free(e);
    qg_buf_free(&y);

    /* and too many aliases are refused before libyaml's loader sees them */
    qg_buf_init(&y, 0);
    qg_buf_appendf(&y, "x: &s v\ny: [");
    for (int i = 0; i < 5000; i++) qg_buf_appendf(&y, "%s*s", i ? "," : "");
    qg_buf_appendf(&y, "]\n");
    qg_buf_append(&y, "", 1);
    e = load_err(y.data);
    assert_contains(e, "t.yaml:2: yaml: more than 4096 aliases");
    free(e);
    qg_buf_free(&y);
}

static void test_error_cap_and_order(void **state)
{
    qg_buf y;
    qg_buf_init(&y, 0);
    qg_buf_appendf(&y, "providers:\n");
    for (int i = 0; i < 200; i++) qg_buf_appendf(&y, "  - { name: p%d, dialect: x }\n", i);
    qg_buf_append(&y, "", 1);
    char *e = load_err(y.data);
    assert_int_equal(count_lines(e), 51);
    assert_contains(e, "t.yaml:2: providers[0].dialect: `x` is not one of openai|anthropic\n");
    assert_contains(e, "t.yaml: too many errors; only the first 50 are listed\n");
    free(e);
    qg_buf_free(&y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_files),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_spec_example),
        cmocka_unit_test(test_spec_example_without_env),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_listen_forms),
        cmocka_unit_test(test_env_substitution),
        cmocka_unit_test(test_env_edge_cases),
        cmocka_unit_test(test_env_secret_never_echoed),
        cmocka_unit_test(test_base_url_split),
        cmocka_unit_test(test_provider_extras),
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_policies),
        cmocka_unit_test(test_key_hashing),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_nesting_bound),
        cmocka_unit_test(test_alias_bomb),
        cmocka_unit_test(test_error_cap_and_order),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
