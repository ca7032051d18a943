/*
 * test_ledger.c — the SQLite ledger: the writer thread, the query thread and its barrier,
 * the per-filter SQL and its indexes, the overflow backlog, schema migration, and close.
 *
 * The test thread plays two workers (ids 0 and 1): it calls qg_ledger_submit/_retry/_query
 * for both, and owns a qg_loop with one qg_notify per worker whose callback calls
 * qg_ledger_poll, plus a retry timer like serve.c's.  Every test works in its own
 * directory under /tmp, removed by the teardown (also after a failure).
 *
 *  - rows from two workers are written exactly once, each worker's in order;
 *  - a query posted right after submits sees them all (with a 10 s flush interval, so the
 *    barrier must wake the writer), including rows still in another worker's overflow;
 *  - each filter and combinations return the right totals and rows, newest first;
 *  - EXPLAIN QUERY PLAN of the totals and rows statements for every single filter uses
 *    that filter's index and never SCANs the table;
 *  - while the query thread runs heavy queries over a 300k-row file, rows are committed
 *    within the flush interval plus slack (a writer that runs queries itself fails this);
 *  - the backlog counter, qg_ledger_accepting and the rate-limited warning when the ring
 *    is full (writer paused by the test hook), and close then loses nothing;
 *  - a failed COMMIT (the file locked by another connection) is retried with the same rows;
 *  - a version-1 file gets its indexes and user_version 2; a newer version is refused.
 */
#include "testutil.h"
#include "ledger.h"
#include "loop.h"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RING 16384 /* LEDGER_RING in ledger.c */

/* ---- temp directory ---- */

typedef struct {
    char dir[64];
    char path[96];
} tmpdb;

/* Per-test setup/teardown: the teardown also runs after a failed test. */
static int tmpdb_setup(void **state)
{
    tmpdb *t = calloc(1, sizeof *t);
    snprintf(t->dir, sizeof t->dir, "/tmp/qg-ledger-XXXXXX");
    if (!mkdtemp(t->dir)) return -1;
    snprintf(t->path, sizeof t->path, "%s/ledger.db", t->dir);
    *state = t;
    return 0;
}

static int tmpdb_teardown(void **state)
{
    tmpdb *t = *state;
    static const char *const names[] = {"ledger.db", "ledger.db-wal", "ledger.db-shm", "ledger.db-journal", "stderr.txt"};
    char p[128];
    for (size_t i = 0; i < QG_ARRAY_LEN(names); i++) {
        snprintf(p, sizeof p, "%s/%s", t->dir, names[i]);
        unlink(p);
    }
    int rc = rmdir(t->dir);
    free(t);
    return rc;
}

/* ---- raw SQLite access for checks ---- */

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) fail_msg("%s: %s", sql, msg);
}

/* ---- rows ---- */

static const char *const KEYS[] = {"alpha", "beta", "gamma"};
static const char *const ACCOUNTS[] = {"acct-a", "acct-b"};
static const char *const PROVIDERS[] = {"openai", "anthropic", "deepseek", "gemini", "mistral"};
static const char *const MODELS[] = {"gpt-4o", "claude", "r1", "flash", "large", "small", "mini"};

#define TS0 1700000000000LL

/* Row i of a data set: every attribute is a function of i, so tests can compute answers. */
static qg_ledger_row *make_row(int worker, int i)
{
    qg_ledger_row *r = qg_ledger_row_new();
    r->ts_ms = TS0 + (int64_t)i * 1000;
    snprintf(r->request_id, sizeof r->request_id, "w%d-%d", worker, i);
    qg_strlcpy(r->key_name, KEYS[i % 3], sizeof r->key_name);
    qg_strlcpy(r->account, ACCOUNTS[i % 2], sizeof r->account);
    qg_strlcpy(r->provider, PROVIDERS[i % 5], sizeof r->provider);
    qg_strlcpy(r->model, MODELS[i % 7], sizeof r->model);
    qg_strlcpy(r->endpoint, "chat.completions", sizeof r->endpoint);
    qg_strlcpy(r->usage_source, "upstream", sizeof r->usage_source);
    r->status = 200;
    r->prompt_tokens = i;
    r->completion_tokens = 2 * i;
    r->attempts = 1;
    return r;
}

/* ---- the test thread as two workers ---- */

#define NW 2

typedef struct {
    qg_loop *loop;
    qg_ledger *l;
    qg_notify notify[NW];
    qg_timer retry, guard;
    bool timed_out;
    int want, got; /* query results awaited / arrived */
} harness;

typedef struct {
    harness *h;
    int status;
    char *json;
    int64_t posted_ms, done_ms;
    bool done;
} result;

static void on_notify0(void *ud) { qg_ledger_poll(((harness *)ud)->l, 0); }
static void on_notify1(void *ud) { qg_ledger_poll(((harness *)ud)->l, 1); }

static void on_retry(qg_timer *t)
{
    harness *h = t->ud;
    for (int w = 0; w < NW; w++) qg_ledger_retry(h->l, w);
    qg_timer_start(h->loop, t, 100);
}

static void on_guard(qg_timer *t)
{
    harness *h = t->ud;
    h->timed_out = true;
    qg_loop_stop(h->loop);
}

static void harness_init(harness *h, qg_ledger *l)
{
    memset(h, 0, sizeof *h);
    h->l = l;
    h->loop = qg_loop_new();
    assert_non_null(h->loop);
    assert_int_equal(qg_notify_init(h->loop, &h->notify[0], on_notify0, h), 0);
    assert_int_equal(qg_notify_init(h->loop, &h->notify[1], on_notify1, h), 0);
    for (int w = 0; w < NW; w++) qg_ledger_attach(l, w, &h->notify[w]);
    qg_timer_init(&h->retry, on_retry, h);
    qg_timer_init(&h->guard, on_guard, h);
}

static void harness_free(harness *h)
{
    for (int w = 0; w < NW; w++) qg_notify_close(h->loop, &h->notify[w]);
    qg_loop_free(h->loop);
}

static void on_result(void *ud, int status, const char *json, size_t len)
{
    result *r = ud;
    assert_false(r->done);
    r->status = status;
    r->json = qg_xmalloc(len + 1);
    memcpy(r->json, json, len);
    r->json[len] = 0;
    r->done = true;
    r->done_ms = qg_mono_ms();
    if (++r->h->got == r->h->want) qg_loop_stop(r->h->loop);
}

static qg_usage_query query_of(const char *key, const char *account, const char *provider, const char *model,
                               int64_t since, int64_t until, int limit)
{
    qg_usage_query q = {.since_ms = since, .until_ms = until, .limit = limit};
    q.key_name = key ? qg_xstrdup(key) : NULL;
    q.account = account ? qg_xstrdup(account) : NULL;
    q.provider = provider ? qg_xstrdup(provider) : NULL;
    q.model = model ? qg_xstrdup(model) : NULL;
    return q;
}

static void post(harness *h, int w, qg_usage_query q, result *r)
{
    memset(r, 0, sizeof *r);
    r->h = h;
    r->posted_ms = qg_mono_ms();
    h->want++;
    qg_ledger_query(h->l, w, &q, on_result, r);
}

/* Runs the loop (with the retry timer) until every posted query has its answer. */
static void wait_results(harness *h)
{
    if (h->got < h->want) {
        qg_timer_start(h->loop, &h->retry, 100);
        qg_timer_start(h->loop, &h->guard, 60000);
        assert_int_equal(qg_loop_run(h->loop), 0);
        qg_timer_stop(h->loop, &h->retry);
        qg_timer_stop(h->loop, &h->guard);
    }
    assert_false(h->timed_out);
    assert_int_equal(h->got, h->want);
}

static void ask(harness *h, int w, qg_usage_query q, result *r)
{
    post(h, w, q, r);
    wait_results(h);
    assert_int_equal(r->status, 200);
}

static int64_t json_int(const char *json, const char *name)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", name);
    const char *p = strstr(json, pat);
    if (!p) fail_msg("no %s in %.200s", name, json);
    return strtoll(p + strlen(pat), NULL, 10);
}

/* The request_ids of the returned rows, in order; returns how many. */
static int json_ids(const char *json, char ids[][24], int max)
{
    int n = 0;
    for (const char *p = json; (p = strstr(p, "\"request_id\":\"")) != NULL && n < max; n++) {
        p += strlen("\"request_id\":\"");
        const char *e = strchr(p, '"');
        assert_non_null(e);
        assert_true(e - p < 24);
        memcpy(ids[n], p, (size_t)(e - p));
        ids[n][e - p] = 0;
        p = e;
    }
    return n;
}

static void result_free(result *r)
{
    free(r->json);
    r->json = NULL;
}

static qg_ledger *open_ledger(const char *path, int64_t flush_ms)
{
    char err[256] = "";
    qg_ledger *l = qg_ledger_open(path, flush_ms, NW, err, sizeof err);
    if (!l) fail_msg("open: %s", err);
    return l;
}

static void wait_rows(qg_ledger *l, int64_t n, int64_t timeout_ms)
{
    int64_t deadline = qg_mono_ms() + timeout_ms;
    while (qg_ledger_rows_written(l) < n && qg_mono_ms() < deadline) usleep(1000);
    assert_int_equal(qg_ledger_rows_written(l), n);
}

/* ---- tests ---- */

static void test_two_workers_rows_written_once(void **state)
{
    enum { N = 6000 };
    tmpdb *t = *state;
    qg_ledger *l = open_ledger(t->path, 20);
    for (int i = 0; i < N; i++) {
        qg_ledger_submit(l, i % 2, make_row(i % 2, i / 2));
        if (i % 1000 == 0) usleep(5000); /* several transactions */
    }
    qg_ledger_stats_t s;
    qg_ledger_close(l); /* flushes the rest */
    sqlite3 *db = raw_open(t->path);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger"), N);
    assert_int_equal(raw_int(db, "SELECT count(DISTINCT request_id) FROM ledger"), N);
    /* Each worker's rows in submission order (ids grow with i). */
    assert_int_equal(raw_int(db, "SELECT count(*) FROM (SELECT ts_ms, lag(ts_ms) OVER (PARTITION BY"
                                 " substr(request_id,1,2) ORDER BY id) AS prev FROM ledger) WHERE prev >= ts_ms"),
                     0);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), LEDGER_SCHEMA_VERSION);
    sqlite3_close(db);
    /* Reopening appends; the counter is per run. */
    l = open_ledger(t->path, 20);
    qg_ledger_submit(l, 1, make_row(1, N));
    wait_rows(l, 1, 5000);
    qg_ledger_stats(l, &s);
    assert_int_equal(s.rows_written, 1);
    assert_int_equal(s.backlog, 0);
    assert_int_equal(s.commits_failed, 0);
    qg_ledger_close(l);
    db = raw_open(t->path);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger"), N + 1);
    sqlite3_close(db);
}

static void test_query_sees_rows_submitted_before(void **state)
{
    tmpdb *t = *state;
    /* A 10 s flush interval: only the query's barrier can make these rows visible in time. */
    qg_ledger *l = open_ledger(t->path, 10000);
    harness h;
    harness_init(&h, l);
    for (int i = 0; i < 1000; i++) {
        qg_ledger_submit(l, 0, make_row(0, i));
        qg_ledger_submit(l, 1, make_row(1, i));
    }
    result r;
    ask(&h, 1, query_of(NULL, NULL, NULL, NULL, 0, 0, 5), &r);
    assert_int_equal(json_int(r.json, "requests"), 2000);
    assert_true(r.done_ms - r.posted_ms < 1500);
    result_free(&r);
    /* Right after one more row from the other worker. */
    qg_ledger_submit(l, 0, make_row(0, 1000));
    ask(&h, 1, query_of("beta", NULL, NULL, NULL, 0, 0, 1), &r);
    char ids[4][24];
    assert_int_equal(json_ids(r.json, ids, 4), 1);
    assert_string_equal(ids[0], "w0-1000"); /* 1000 % 3 == 1: beta */
    result_free(&r);

    /* Rows still waiting in worker 0's overflow list when worker 1 posts its query: the
     * barrier holds the query until worker 0's retry timer has moved them and the writer
     * has committed them. */
    qg_ledger_test_pause(l, true);
    usleep(100 * 1000); /* past any drain already in progress */
    int base = 2001;
    for (int i = 0; i < RING + 500; i++) qg_ledger_submit(l, 0, make_row(0, 2000 + i));
    assert_int_equal(qg_ledger_backlog(l, 0), 500);
    qg_ledger_test_pause(l, false);
    wait_rows(l, base + RING, 30000); /* the ring's rows; the 500 wait for worker 0's retry */
    assert_int_equal(qg_ledger_backlog(l, 0), 500);
    ask(&h, 1, query_of(NULL, NULL, NULL, NULL, 0, 0, 1), &r);
    assert_int_equal(json_int(r.json, "requests"), base + RING + 500);
    result_free(&r);
    qg_ledger_stats_t s;
    qg_ledger_stats(l, &s);
    assert_int_equal(s.queries_served, 3);
    assert_int_equal(s.queries_late, 0);
    assert_int_equal(s.backlog, 0);
    harness_free(&h);
    qg_ledger_close(l);
}

/* Expected answer computed from the same functions make_row uses. */
typedef struct {
    const char *key, *account, *provider, *model;
    int64_t since, until;
    int limit;
} filt;

static bool matches(const filt *f, int i)
{
    int64_t ts = TS0 + (int64_t)i * 1000;
    return (!f->key || strcmp(f->key, KEYS[i % 3]) == 0) && (!f->account || strcmp(f->account, ACCOUNTS[i % 2]) == 0) &&
           (!f->provider || strcmp(f->provider, PROVIDERS[i % 5]) == 0) && (!f->model || strcmp(f->model, MODELS[i % 7]) == 0) &&
           (!f->since || ts >= f->since) && (!f->until || ts < f->until);
}

static void test_filters(void **state)
{
    enum { N = 2000 };
    tmpdb *t = *state;
    qg_ledger *l = open_ledger(t->path, 50);
    harness h;
    harness_init(&h, l);
    for (int i = 0; i < N; i++) qg_ledger_submit(l, 0, make_row(0, i)); /* one worker: ids follow i */
    static const filt cases[] = {
        {0},
        {.limit = 7},
        {.key = "beta"},
        {.account = "acct-b", .limit = 1000},
        {.provider = "gemini", .limit = 3},
        {.model = "r1"},
        {.since = TS0 + 1500 * 1000LL},
        {.until = TS0 + 40 * 1000LL},
        {.since = TS0 + 100 * 1000LL, .until = TS0 + 200 * 1000LL, .limit = 1000},
        {.key = "gamma", .since = TS0 + 1000 * 1000LL, .limit = 1000},
        {.key = "alpha", .model = "claude", .until = TS0 + 1000 * 1000LL, .limit = 1000},
        {.key = "alpha", .account = "acct-a", .provider = "openai", .model = "gpt-4o", .limit = 1000},
        {.key = "nobody"},
        {.model = "x'; DROP TABLE ledger; --"}, /* a value, never SQL */
    };
    for (size_t c = 0; c < QG_ARRAY_LEN(cases); c++) {
        const filt *f = &cases[c];
        result r;
        ask(&h, (int)(c % 2), query_of(f->key, f->account, f->provider, f->model, f->since, f->until, f->limit), &r);
        int limit = f->limit ? f->limit : 100;
        int64_t n = 0, prompt = 0, completion = 0;
        for (int i = 0; i < N; i++)
            if (matches(f, i)) n++, prompt += i, completion += 2 * i;
        if (json_int(r.json, "requests") != n) fail_msg("case %zu: %lld requests, want %lld", c, (long long)json_int(r.json, "requests"), (long long)n);
        assert_int_equal(json_int(r.json, "prompt_tokens"), prompt);
        assert_int_equal(json_int(r.json, "completion_tokens"), completion);
        static char ids[1000][24];
        int got = json_ids(r.json, ids, 1000), k = 0;
        for (int i = N - 1; i >= 0 && k < limit; i--) { /* newest first */
            if (!matches(f, i)) continue;
            char want[24];
            snprintf(want, sizeof want, "w0-%d", i);
            if (k >= got || strcmp(ids[k], want) != 0) fail_msg("case %zu: row %d is %s, want %s", c, k, k < got ? ids[k] : "(none)", want);
            k++;
        }
        assert_int_equal(got, k);
        result_free(&r);
    }
    /* An empty filter value means "any", as before. */
    result r;
    ask(&h, 0, query_of("", "", NULL, NULL, 0, 0, 1), &r);
    assert_int_equal(json_int(r.json, "requests"), N);
    result_free(&r);
    harness_free(&h);
    qg_ledger_close(l);
    /* The table is still there after the injection attempt. */
    sqlite3 *db = raw_open(t->path);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger"), N);
    sqlite3_close(db);
}

/* EXPLAIN QUERY PLAN detail lines of one statement, joined with '|'. */
static void plan_of(sqlite3 *db, const qg_usage_query *q, bool totals, char *out, size_t cap)
{
    char *sql = qg_ledger_query_sql(q, totals);
    char eqp[2048];
    snprintf(eqp, sizeof eqp, "EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, eqp, -1, &st, NULL) != SQLITE_OK) fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    /* Bind like the ledger does (the plan does not depend on the values). */
    if (q->key_name) sqlite3_bind_text(st, 1, q->key_name, -1, SQLITE_STATIC);
    if (q->account) sqlite3_bind_text(st, 2, q->account, -1, SQLITE_STATIC);
    if (q->provider) sqlite3_bind_text(st, 3, q->provider, -1, SQLITE_STATIC);
    if (q->model) sqlite3_bind_text(st, 4, q->model, -1, SQLITE_STATIC);
    if (q->since_ms) sqlite3_bind_int64(st, 5, q->since_ms);
    if (q->until_ms) sqlite3_bind_int64(st, 6, q->until_ms);
    if (!totals) sqlite3_bind_int(st, 7, 100);
    out[0] = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s%s", n ? "|" : "", (const char *)sqlite3_column_text(st, 3));
    }
    sqlite3_finalize(st);
    free(sql);
}

static void test_explain_uses_indexes(void **state)
{
    tmpdb *t = *state;
    qg_ledger *l = open_ledger(t->path, 50);
    for (int i = 0; i < 500; i++) qg_ledger_submit(l, 0, make_row(0, i));
    qg_ledger_close(l);
    sqlite3 *db = raw_open(t->path);
    struct {
        qg_usage_query q;
        const char *index, *search;
    } cases[] = {
        {{.key_name = "k"}, "ledger_key_ts", "(key_name=?)"},
        {{.account = "a"}, "ledger_account_ts", "(account=?)"},
        {{.provider = "p"}, "ledger_provider_ts", "(provider=?)"},
        {{.model = "m"}, "ledger_model_ts", "(model=?)"},
        {{.since_ms = TS0}, "ledger_ts", "(ts_ms>?)"},
        {{.until_ms = TS0}, "ledger_ts", "(ts_ms<?)"},
        {{.since_ms = TS0, .until_ms = TS0 + 5}, "ledger_ts", "(ts_ms>? AND ts_ms<?)"},
        {{.key_name = "k", .since_ms = TS0}, "ledger_key_ts", "(key_name=? AND ts_ms>?)"},
        {{.model = "m", .since_ms = TS0, .until_ms = TS0 + 5}, "ledger_model_ts", "(model=? AND ts_ms>? AND ts_ms<?)"},
    };
    for (size_t c = 0; c < QG_ARRAY_LEN(cases); c++) {
        for (int totals = 0; totals < 2; totals++) {
            char plan[1024], want[128];
            plan_of(db, &cases[c].q, totals, plan, sizeof plan);
            snprintf(want, sizeof want, "INDEX %s %s", cases[c].index, cases[c].search);
            if (!strstr(plan, want) || strstr(plan, "SCAN"))
                fail_msg("case %zu (%s): plan \"%s\" does not search %s", c, totals ? "totals" : "rows", plan, want);
            /* Rows statement: the table itself is only read by id. */
            if (!totals && !strstr(plan, "SEARCH ledger USING INTEGER PRIMARY KEY (rowid=?)"))
                fail_msg("case %zu: rows plan \"%s\"", c, plan);
        }
    }
    /* No filter at all: the newest rows by id, no sort. */
    char plan[1024];
    qg_usage_query none = {0};
    plan_of(db, &none, false, plan, sizeof plan);
    assert_string_equal(plan, "SCAN ledger");
    /* And the SQL never contains a value. */
    qg_usage_query evil = {.key_name = "alpha' OR 1=1 --", .model = "m"};
    for (int totals = 0; totals < 2; totals++) {
        char *sql = qg_ledger_query_sql(&evil, totals);
        assert_null(strstr(sql, "alpha"));
        assert_null(strchr(sql, '\''));
        free(sql);
    }
    sqlite3_close(db);
}

/* Fills a ledger file with n rows quickly, keys key-0..key-999: one INSERT ... SELECT with
 * the indexes dropped, then qg_ledger_open builds them again (every schema statement is
 * IF NOT EXISTS) and close checkpoints the WAL into the file. */
static void fill_big(const char *path, int n)
{
    qg_ledger *l = open_ledger(path, 50); /* creates the schema */
    qg_ledger_close(l);
    sqlite3 *db = raw_open(path);
    char sql[1200];
    snprintf(sql, sizeof sql,
             "PRAGMA cache_size=-131072;"
             "DROP INDEX IF EXISTS ledger_ts; DROP INDEX IF EXISTS ledger_key_ts; DROP INDEX IF EXISTS ledger_account_ts;"
             "DROP INDEX IF EXISTS ledger_provider_ts; DROP INDEX IF EXISTS ledger_model_ts;"
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<%d)"
             " INSERT INTO ledger(ts_ms,request_id,key_name,provider,account,model,endpoint,stream,status,"
             "prompt_tokens,completion_tokens,cached_tokens,cache_write_tokens,reasoning_tokens,usage_source,attempts,"
             "ttfb_ms,total_ms) SELECT %lld+i*10,'big-'||i,'key-'||(i%%1000),'prov-'||(i%%3),'acct-'||(i%%7),"
             "'model-'||(i%%11),'chat.completions',i%%2,200,100,50,10,0,0,'upstream',1,12.5,100.25 FROM c",
             n, TS0);
    raw_exec(db, sql);
    sqlite3_close(db);
    l = open_ledger(path, 50);
    qg_ledger_close(l);
}

/* Times one statement; ?1 is bound to key (or NULL), ?2..?4 to NULL, ?5 and ?6 to 0, ?7 to 100. */
static double time_raw_ms(sqlite3 *db, const char *sql, const char *key, int64_t *first)
{
    int64_t t0 = qg_mono_us();
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int np = sqlite3_bind_parameter_count(st);
    if (np >= 1 && key) sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    for (int i = 5; i <= np && i <= 6; i++) sqlite3_bind_int64(st, i, 0);
    if (np >= 7) sqlite3_bind_int(st, 7, 100);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    *first = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return (double)(qg_mono_us() - t0) / 1000.0;
}

static void test_heavy_query_does_not_delay_commits(void **state)
{
    enum { N = 300000, Q = 12, FLUSH = 50, SLACK = 400 };
    tmpdb *t = *state;
    int64_t t0 = qg_mono_ms();
    fill_big(t->path, N);
    print_message("filled %d rows in %lld ms\n", N, (long long)(qg_mono_ms() - t0));

    /* Query speed on N rows: the old SQL (`?1 IS NULL OR ...`, which no index can serve)
     * against what the ledger runs now, for a selective filter (one key in 1000). */
    sqlite3 *db = raw_open(t->path);
    static const char old_where[] =
        " WHERE (?1 IS NULL OR key_name=?1) AND (?2 IS NULL OR account=?2) AND (?3 IS NULL OR provider=?3)"
        " AND (?4 IS NULL OR model=?4) AND (?5 = 0 OR ts_ms >= ?5) AND (?6 = 0 OR ts_ms < ?6)";
    char old_sql[512];
    snprintf(old_sql, sizeof old_sql, "SELECT count(*),total(prompt_tokens),total(completion_tokens) FROM ledger%s", old_where);
    qg_usage_query kq = {.key_name = "key-7"}, aq = {0};
    char *new_sql = qg_ledger_query_sql(&kq, true), *all_sql = qg_ledger_query_sql(&aq, true);
    int64_t c_old, c_new, c_all;
    double old_ms = time_raw_ms(db, old_sql, "key-7", &c_old);
    double new_ms = time_raw_ms(db, new_sql, "key-7", &c_new);
    double all_ms = time_raw_ms(db, all_sql, NULL, &c_all);
    snprintf(old_sql, sizeof old_sql, "SELECT id FROM ledger%s ORDER BY id DESC LIMIT 1 OFFSET 99", old_where);
    char *new_rows = qg_ledger_query_sql(&kq, false);
    int64_t id_old, id_new;
    double old_rows_ms = time_raw_ms(db, old_sql, "key-7", &id_old);
    double new_rows_ms = time_raw_ms(db, new_rows, "key-7", &id_new);
    free(new_sql), free(all_sql), free(new_rows);
    sqlite3_close(db);
    assert_int_equal(c_old, N / 1000);
    assert_int_equal(c_new, N / 1000);
    assert_int_equal(c_all, N);
    print_message("rows (100 newest) for one key over %d rows: %.1f ms old SQL, %.1f ms now\n", N, old_rows_ms, new_rows_ms);
    print_message("totals for one key over %d rows: %.1f ms without index use, %.1f ms with ledger_key_ts;"
                  " unfiltered totals %.1f ms\n",
                  N, old_ms, new_ms, all_ms);
    assert_true(new_ms < old_ms);

    qg_ledger *l = open_ledger(t->path, FLUSH);
    harness h;
    harness_init(&h, l);
    /* The same selective query through the ledger. */
    result one;
    ask(&h, 1, query_of("key-7", NULL, NULL, NULL, 0, 0, 100), &one);
    assert_int_equal(json_int(one.json, "requests"), N / 1000);
    print_message("ledger query key=key-7 (totals + 100 rows): %lld ms\n", (long long)(one.done_ms - one.posted_ms));
    result_free(&one);

    /* Keep the query thread busy with unfiltered totals over every row... */
    static result r[Q];
    for (int i = 0; i < Q; i++) post(&h, 1, query_of(NULL, NULL, NULL, NULL, 0, 0, 1000), &r[i]);
    int64_t start = qg_mono_ms();
    /* ...and meanwhile submit rows as worker 0 and time how long each takes to commit. */
    int64_t max_lat = 0, sum_lat = 0;
    int n = 0;
    qg_ledger_stats_t s;
    for (;;) {
        qg_ledger_stats(l, &s);
        if (s.queries_served >= Q - 1 || qg_mono_ms() - start > 20000) break;
        int64_t before = qg_ledger_rows_written(l), ts = qg_mono_ms();
        qg_ledger_submit(l, 0, make_row(0, n));
        while (qg_ledger_rows_written(l) == before && qg_mono_ms() - ts < 10000) usleep(500);
        int64_t lat = qg_mono_ms() - ts;
        max_lat = QG_MAX(max_lat, lat);
        sum_lat += lat;
        n++;
        usleep(10000);
    }
    int64_t busy = qg_mono_ms() - start;
    qg_ledger_stats(l, &s);
    int served_during = (int)s.queries_served - 1;
    wait_results(&h);
    int64_t qsum = 0;
    for (int i = 0; i < Q; i++) {
        assert_int_equal(r[i].status, 200);
        int64_t seen = json_int(r[i].json, "requests"); /* at least every row submitted before it */
        assert_true(seen >= N && seen <= N + n);
        qsum += r[i].done_ms - (i ? r[i - 1].done_ms : r[i].posted_ms);
        result_free(&r[i]);
    }
    print_message("%d rows committed while the query thread ran %d unfiltered queries over %d rows for %lld ms"
                  " (%.0f ms each): commit latency max %lld ms, mean %.1f ms (flush interval %d ms)\n",
                  n, Q, N, (long long)busy, (double)qsum / Q, (long long)max_lat, n ? (double)sum_lat / n : 0.0, FLUSH);
    assert_true(max_lat <= FLUSH + SLACK);
    assert_true(n >= 10);           /* the reader was busy long enough to measure */
    assert_true(served_during < Q); /* and still busy when the last row was measured */
    harness_free(&h);
    qg_ledger_close(l);
    db = raw_open(t->path);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger"), N + n);
    sqlite3_close(db);
}

/* Sends stderr to a file until capture_stderr_end, which returns what was written. */
static void capture_stderr_begin(int *saved, char *path, size_t cap, const char *dir)
{
    snprintf(path, cap, "%s/stderr.txt", dir);
    fflush(stderr);
    *saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    dup2(fd, 2);
    close(fd);
}

static char *capture_stderr_end(int saved, const char *path)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char *text = tu_read_file(path, NULL);
    unlink(path);
    return text;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

static void test_backlog_and_accepting(void **state)
{
    tmpdb *t = *state;
    qg_ledger *l = open_ledger(t->path, 50);
    qg_ledger_test_pause(l, true); /* the writer takes nothing: the ring fills */
    usleep(100 * 1000);            /* past any drain already in progress */
    int i = 0;
    for (; i < RING; i++) qg_ledger_submit(l, 0, make_row(0, i));
    assert_int_equal(qg_ledger_backlog(l, 0), 0);
    assert_true(qg_ledger_accepting(l, 0));

    /* No assertion while stderr is redirected: a failure would leave it so. */
    int saved;
    char errpath[128];
    capture_stderr_begin(&saved, errpath, sizeof errpath, t->dir);
    qg_ledger_submit(l, 0, make_row(0, i++));
    size_t first = qg_ledger_backlog(l, 0);
    for (; i < RING + LEDGER_MAX_BACKLOG - 1; i++) qg_ledger_submit(l, 0, make_row(0, i));
    size_t below = qg_ledger_backlog(l, 0);
    bool accepting_below = qg_ledger_accepting(l, 0);
    qg_ledger_submit(l, 0, make_row(0, i++));
    /* Retrying while the ring is full moves nothing (and does not warn again). */
    size_t after_retry = qg_ledger_retry(l, 0);
    char *text = capture_stderr_end(saved, errpath);
    assert_int_equal(first, 1);
    assert_int_equal(below, LEDGER_MAX_BACKLOG - 1);
    assert_true(accepting_below);
    assert_int_equal(after_retry, LEDGER_MAX_BACKLOG);
    assert_int_equal(qg_ledger_backlog(l, 0), LEDGER_MAX_BACKLOG);
    assert_false(qg_ledger_accepting(l, 0));
    /* 65536 rows overflowed and retry ran: one warning (10 s rate limit), with the count. */
    assert_int_equal(count_of(text, "wait in overflow for the writer"), 1);
    assert_non_null(strstr(text, "worker 0: 1 row(s) wait"));
    free(text);
    /* Per worker: worker 1 is unaffected. */
    for (int k = 0; k < 10; k++) qg_ledger_submit(l, 1, make_row(1, k));
    assert_int_equal(qg_ledger_backlog(l, 1), 0);
    assert_true(qg_ledger_accepting(l, 1));
    qg_ledger_stats_t s;
    qg_ledger_stats(l, &s);
    assert_int_equal(s.backlog, LEDGER_MAX_BACKLOG);
    assert_int_equal(s.rows_written, 0);

    /* The writer resumes: retry (the worker's timer) empties the backlog, nothing lost. */
    qg_ledger_test_pause(l, false);
    int64_t deadline = qg_mono_ms() + 30000;
    while (qg_ledger_retry(l, 0) && qg_mono_ms() < deadline) usleep(2000);
    assert_int_equal(qg_ledger_backlog(l, 0), 0);
    assert_true(qg_ledger_accepting(l, 0));
    int total = i + 10;
    wait_rows(l, total, 30000);

    /* Again, and this time close straight away: close re-posts the overflow and drains. */
    qg_ledger_test_pause(l, true);
    usleep(100 * 1000);
    int j = 0;
    for (; j < RING + 1000; j++) qg_ledger_submit(l, 1, make_row(1, 10 + j));
    assert_int_equal(qg_ledger_backlog(l, 1), 1000);
    qg_ledger_close(l);
    sqlite3 *db = raw_open(t->path);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger"), total + j);
    assert_int_equal(raw_int(db, "SELECT count(DISTINCT request_id) FROM ledger"), total + j);
    sqlite3_close(db);
}

static void test_failed_commit_retried(void **state)
{
    tmpdb *t = *state;
    qg_ledger *l = open_ledger(t->path, 20);
    harness h;
    harness_init(&h, l);
    sqlite3 *db = raw_open(t->path);
    sqlite3_busy_timeout(db, 0);
    raw_exec(db, "BEGIN IMMEDIATE"); /* holds the write lock past the writer's 2 s busy timeout */
    for (int i = 0; i < 300; i++) qg_ledger_submit(l, i % 2, make_row(i % 2, i));
    qg_ledger_stats_t s;
    int64_t deadline = qg_mono_ms() + 10000;
    do {
        usleep(20000);
        qg_ledger_stats(l, &s);
    } while (s.commits_failed == 0 && qg_mono_ms() < deadline);
    assert_true(s.commits_failed >= 1);
    assert_int_equal(s.rows_written, 0);
    raw_exec(db, "ROLLBACK");
    sqlite3_close(db);
    /* The same rows go in on a later tick, once, and a query sees them all. */
    wait_rows(l, 300, 10000);
    qg_ledger_submit(l, 0, make_row(0, 300));
    result r;
    ask(&h, 0, query_of(NULL, NULL, NULL, NULL, 0, 0, 1), &r);
    assert_int_equal(json_int(r.json, "requests"), 301);
    result_free(&r);
    harness_free(&h);
    qg_ledger_close(l);
    db = raw_open(t->path);
    assert_int_equal(raw_int(db, "SELECT count(DISTINCT request_id) FROM ledger"), 301);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger"), 301);
    sqlite3_close(db);
}

static void test_schema_migration(void **state)
{
    tmpdb *t = *state;
    /* A file as version 1 wrote it. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(t->path, &db), SQLITE_OK);
    raw_exec(db, "PRAGMA journal_mode=WAL;"
                 "CREATE TABLE ledger (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, request_id TEXT, key_name TEXT,"
                 " provider TEXT, account TEXT, model TEXT, endpoint TEXT, stream INTEGER, status INTEGER, error TEXT,"
                 " prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER, cache_write_tokens INTEGER,"
                 " reasoning_tokens INTEGER, usage_source TEXT, attempts INTEGER, ttfb_ms REAL, total_ms REAL);"
                 "CREATE INDEX ledger_ts ON ledger(ts_ms);"
                 "INSERT INTO ledger(ts_ms,request_id,key_name) VALUES(1,'old-1','alpha'),(2,'old-2','beta');"
                 "PRAGMA user_version=1;");
    sqlite3_close(db);
    qg_ledger *l = open_ledger(t->path, 50);
    harness h;
    harness_init(&h, l);
    result r;
    ask(&h, 0, query_of("beta", NULL, NULL, NULL, 0, 0, 10), &r);
    assert_int_equal(json_int(r.json, "requests"), 1);
    assert_non_null(strstr(r.json, "\"request_id\":\"old-2\""));
    result_free(&r);
    harness_free(&h);
    qg_ledger_close(l);
    db = raw_open(t->path);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), 2);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type='index' AND name IN "
                                 "('ledger_ts','ledger_key_ts','ledger_account_ts','ledger_provider_ts','ledger_model_ts')"),
                     5);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger"), 2);
    /* A file from a newer build is refused, not written. */
    raw_exec(db, "PRAGMA user_version=99");
    sqlite3_close(db);
    char err[256] = "";
    assert_null(qg_ledger_open(t->path, 50, NW, err, sizeof err));
    assert_non_null(strstr(err, "schema version 99"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_workers_rows_written_once, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_query_sees_rows_submitted_before, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_filters, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_explain_uses_indexes, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_heavy_query_does_not_delay_commits, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_backlog_and_accepting, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_failed_commit_retried, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_schema_migration, tmpdb_setup, tmpdb_teardown),
    };
    if (getenv("QG_TEST_FILTER")) cmocka_set_test_filter(getenv("QG_TEST_FILTER")); /* e.g. test_filters */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
