/*
 * test_ledger.c — the SQLite ledger: the writer thread, the query thread and its barrier,
 * the per-minute summary and the SQL over it, the overflow backlog, schema migration, and
 * close.
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
 *  - random rows (names sometimes absent, start times out of id order by up to 3 min) and
 *    hundreds of random filter sets with ms-precise, minute-aligned, one-minute and open
 *    since/until: totals and the page (ids in order) equal a brute-force computation, on
 *    every rows path, and ledger_minute equals the GROUP BY of the rows;
 *  - EXPLAIN QUERY PLAN: totals read ledger_minute through the filter's index (or its
 *    primary key for time alone) and the rows only through ledger_ts for the edges; rows
 *    are read by rowid range; nothing SCANs ledger except the unfiltered newest rows;
 *  - on a 300k-row file (migrated from version 2), timings for one rare key, and while
 *    the query thread runs heavy queries, rows are committed within the flush interval plus
 *    slack (a writer that runs queries itself fails this);
 *  - the backlog counter, qg_ledger_accepting and the rate-limited warning when the ring
 *    is full (writer paused by the test hook), and close then loses nothing;
 *  - a failed transaction is retried with the same rows: the file locked by another
 *    connection (the first insert fails), and a trigger that makes the summary upsert fail
 *    after every row was inserted; the summary still equals the GROUP BY of the rows;
 *  - version-1 and version-2 files are migrated to version 3 (the per-row filter indexes
 *    dropped, the summary filled, a log line with the counts); a newer version is refused.
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

/* ledger_minute must be exactly the GROUP BY of the rows (ts_ms >= 0 in every test). */
#define GROUP_BY_SQL                                                                                              \
    "SELECT ts_ms/60000,coalesce(key_id,''),coalesce(account,''),coalesce(provider,''),coalesce(model,''),"   \
    "count(*),coalesce(sum(prompt_tokens),0),coalesce(sum(completion_tokens),0),coalesce(sum(cached_tokens),0)," \
    "coalesce(sum(reasoning_tokens),0),min(id),max(id) FROM ledger GROUP BY 1,2,3,4,5"
#define SUMMARY_SQL                                                                                         \
    "SELECT minute,key_id,account,provider,model,requests,prompt_tokens,completion_tokens,cached_tokens," \
    "reasoning_tokens,min_id,max_id FROM ledger_minute"

static void assert_summary_exact(sqlite3 *db)
{
    int64_t groups = raw_int(db, "SELECT count(*) FROM (" GROUP_BY_SQL ")");
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger_minute"), groups);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM (" SUMMARY_SQL " EXCEPT " GROUP_BY_SQL ")"), 0);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM (" GROUP_BY_SQL " EXCEPT " SUMMARY_SQL ")"), 0);
    assert_int_equal(raw_int(db, "SELECT coalesce(sum(requests),0) FROM ledger_minute"),
                     raw_int(db, "SELECT count(*) FROM ledger"));
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
    qg_strlcpy(r->key_id, KEYS[i % 3], sizeof r->key_id);
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
    q.key_id = key ? qg_xstrdup(key) : NULL;
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
    assert_summary_exact(db);
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
    assert_summary_exact(db);
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

/* ---- randomized exactness ---- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n) /* xorshift64*, uniform enough for tests; n > 0 */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ULL) >> 32) % n;
}

/* "" is an absent name (NULL in the row, '' in the summary). */
static const char *const RKEYS[] = {"", "k-a", "k-b", "k-c", "k-rare"};
static const char *const RACCTS[] = {"", "acct-1", "acct-2", "acct-3"};
static const char *const RPROVS[] = {"", "prov-1", "prov-2"};
static const char *const RMODELS[] = {"", "m-1", "m-2", "m-3", "m-rare"};

typedef struct {
    int64_t ts, id;
    int key, acct, prov, model;
    int64_t prompt, completion, cached, reasoning;
} rrow;

static int pick_name(uint32_t n) /* index 0 ("") one time in 8, the last (rare) one in 50 */
{
    uint32_t r = rnd(400);
    if (r < 50) return 0;
    if (r < 58) return (int)n - 1;
    return 1 + (int)rnd(n - 2);
}

static const char *filter_of(const char *const *names, size_t n)
{
    uint32_t r = rnd(20);
    if (r < 9) return NULL;          /* no filter */
    if (r == 9) return "";           /* empty: any, as no filter */
    if (r == 10) return "nobody";    /* matches nothing */
    return names[1 + rnd((uint32_t)n - 1)];
}

static bool name_matches(const char *filter, const char *name) { return !filter || !*filter || strcmp(filter, name) == 0; }

static int64_t random_bound(int64_t lo, int64_t hi)
{
    int64_t v = lo + (int64_t)rnd((uint32_t)(hi - lo));
    switch (rnd(4)) {
    case 0: return v - v % 60000;  /* on a minute boundary */
    case 1: return v - v % 60000 + (rnd(2) ? 1 : 59999);
    default: return v;             /* ms-precise */
    }
}

static int by_id_desc(const void *a, const void *b)
{
    const rrow *x = *(const rrow *const *)a, *y = *(const rrow *const *)b;
    return x->id < y->id ? 1 : x->id > y->id ? -1 : 0;
}

static void test_random_exactness(void **state)
{
    enum { N = 4000, Q = 300, SPAN_MS = 4 * 3600 * 1000 };
    tmpdb *t = *state;
    rng_state = 0x9e3779b97f4a7c15ULL; /* fixed seed: the same rows and queries every run */
    qg_ledger *l = open_ledger(t->path, 20);
    harness h;
    harness_init(&h, l);
    static rrow rows[N];
    for (int i = 0; i < N; i++) {
        rrow *r = &rows[i];
        /* Submitted in order of finishing; started up to 3 minutes earlier, so ts is not
         * in id order (and some start exactly on, or 1 ms before, a minute boundary). */
        int64_t end = TS0 + (int64_t)i * SPAN_MS / N;
        r->ts = end - (rnd(3) ? (int64_t)rnd(20000) : (int64_t)rnd(180000));
        if (rnd(20) == 0) r->ts -= r->ts % 60000 + (rnd(2) ? 0 : 1);
        r->key = pick_name(QG_ARRAY_LEN(RKEYS));
        r->acct = pick_name(QG_ARRAY_LEN(RACCTS));
        r->prov = pick_name(QG_ARRAY_LEN(RPROVS));
        r->model = pick_name(QG_ARRAY_LEN(RMODELS));
        r->prompt = rnd(5000), r->completion = rnd(2000), r->cached = rnd(3) ? 0 : rnd(1000), r->reasoning = rnd(300);
        qg_ledger_row *lr = qg_ledger_row_new();
        lr->ts_ms = r->ts;
        snprintf(lr->request_id, sizeof lr->request_id, "r-%d", i);
        qg_strlcpy(lr->key_name, RKEYS[r->key], sizeof lr->key_name);
        qg_strlcpy(lr->key_id, RKEYS[r->key], sizeof lr->key_id);
        qg_strlcpy(lr->account, RACCTS[r->acct], sizeof lr->account);
        qg_strlcpy(lr->provider, RPROVS[r->prov], sizeof lr->provider);
        qg_strlcpy(lr->model, RMODELS[r->model], sizeof lr->model);
        lr->prompt_tokens = r->prompt, lr->completion_tokens = r->completion;
        lr->cached_tokens = r->cached, lr->reasoning_tokens = r->reasoning;
        lr->status = 200;
        qg_ledger_submit(l, i % 2, lr); /* two workers: ids interleave them */
        if (i % 97 == 0) usleep(3000);  /* many transactions, minutes split across them */
    }
    wait_rows(l, N, 30000);
    /* The ids the writer gave (commit order across the two workers). */
    sqlite3 *db = raw_open(t->path);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT id,request_id FROM ledger", -1, &st, NULL), SQLITE_OK);
    int seen = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int i = atoi((const char *)sqlite3_column_text(st, 1) + 2);
        assert_true(i >= 0 && i < N && rows[i].id == 0);
        rows[i].id = sqlite3_column_int64(st, 0);
        seen++;
    }
    sqlite3_finalize(st);
    assert_int_equal(seen, N);
    assert_true(raw_int(db, "SELECT count(*) FROM ledger_minute") > 100);
    assert_summary_exact(db);
    sqlite3_close(db);

    static const rrow *match[N];
    int empty_pages = 0, full_pages = 0, inside_minute = 0, both_edges = 0;
    for (int c = 0; c < Q; c++) {
        const char *key = filter_of(RKEYS, QG_ARRAY_LEN(RKEYS)), *acct = filter_of(RACCTS, QG_ARRAY_LEN(RACCTS));
        const char *prov = filter_of(RPROVS, QG_ARRAY_LEN(RPROVS)), *model = filter_of(RMODELS, QG_ARRAY_LEN(RMODELS));
        int64_t since = 0, until = 0, lo = TS0 - 600000, hi = TS0 + SPAN_MS + 600000;
        switch (rnd(6)) {
        case 0: break; /* open both ends */
        case 1: since = random_bound(lo, hi); break;
        case 2: until = random_bound(lo, hi); break;
        case 3: /* inside one minute */
            since = random_bound(lo, hi);
            until = since + 1 + rnd((uint32_t)(60000 - since % 60000));
            inside_minute++;
            break;
        default:
            since = random_bound(lo, hi);
            until = rnd(8) ? since + 1 + rnd(rnd(2) ? 7200000 : 300000) : random_bound(lo, hi); /* sometimes until <= since */
            both_edges++;
        }
        int limit = rnd(4) ? 1 + (int)rnd(40) : 1000;
        /* Brute force over the inserted rows. */
        int64_t n = 0, sums[4] = {0};
        for (int i = 0; i < N; i++) {
            const rrow *r = &rows[i];
            if (!name_matches(key, RKEYS[r->key]) || !name_matches(acct, RACCTS[r->acct]) ||
                !name_matches(prov, RPROVS[r->prov]) || !name_matches(model, RMODELS[r->model]))
                continue;
            if ((since && r->ts < since) || (until && r->ts >= until)) continue;
            match[n++] = r;
            sums[0] += r->prompt, sums[1] += r->completion, sums[2] += r->cached, sums[3] += r->reasoning;
        }
        qsort(match, (size_t)n, sizeof match[0], by_id_desc);
        int want = (int)QG_MIN(n, (int64_t)limit);
        if (want == 0) empty_pages++;
        else if (want == limit) full_pages++;
        for (int path = 0; path < 3; path++) {
            qg_ledger_test_rows_path(l, path);
            result r;
            ask(&h, c % 2, query_of(key, acct, prov, model, since, until, limit), &r);
            static const char *const tok[] = {"prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"};
            if (json_int(r.json, "requests") != n)
                fail_msg("query %d (key=%s account=%s provider=%s model=%s since=%lld until=%lld): %lld requests, want %lld", c,
                         key ? key : "-", acct ? acct : "-", prov ? prov : "-", model ? model : "-", (long long)since,
                         (long long)until, (long long)json_int(r.json, "requests"), (long long)n);
            for (int k = 0; k < 4; k++)
                if (json_int(r.json, tok[k]) != sums[k])
                    fail_msg("query %d: %s %lld, want %lld", c, tok[k], (long long)json_int(r.json, tok[k]), (long long)sums[k]);
            static char ids[1000][24];
            int got = json_ids(r.json, ids, 1000);
            if (got != want) fail_msg("query %d path %d: %d rows, want %d", c, path, got, want);
            for (int k = 0; k < got; k++) {
                char w[24];
                snprintf(w, sizeof w, "r-%d", (int)(match[k] - rows));
                if (strcmp(ids[k], w) != 0) fail_msg("query %d path %d: row %d is %s, want %s", c, path, k, ids[k], w);
            }
            result_free(&r);
        }
    }
    print_message("%d random queries x 3 rows paths: %d empty pages, %d full pages, %d inside one minute, %d with two edges\n",
                  Q, empty_pages, full_pages, inside_minute, both_edges);
    assert_true(empty_pages > 10 && full_pages > 50);
    harness_free(&h);
    qg_ledger_close(l);
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
    if (q->key_id) sqlite3_bind_text(st, 1, q->key_id, -1, SQLITE_STATIC);
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

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

static void test_explain_uses_indexes(void **state)
{
    tmpdb *t = *state;
    qg_ledger *l = open_ledger(t->path, 50);
    for (int i = 0; i < 500; i++) qg_ledger_submit(l, 0, make_row(0, i));
    qg_ledger_close(l);
    sqlite3 *db = raw_open(t->path);
    static const char edge[] = "SEARCH ledger USING INDEX ledger_ts (ts_ms>? AND ts_ms<?)";
    static const char by_rowid[] = "SEARCH ledger USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)";
    struct {
        qg_usage_query q;
        const char *summary; /* how the totals read ledger_minute (autoindex_1: its primary key) */
        int edges;           /* ts ranges of the rows at the since/until edges */
    } cases[] = {
        {{.key_id = "k"}, "SEARCH ledger_minute USING INDEX ledger_minute_key (key_id=?)", 0},
        {{.account = "a"}, "SEARCH ledger_minute USING INDEX ledger_minute_account (account=?)", 0},
        {{.provider = "p"}, "SEARCH ledger_minute USING INDEX ledger_minute_provider (provider=?)", 0},
        {{.model = "m"}, "SEARCH ledger_minute USING INDEX ledger_minute_model (model=?)", 0},
        {{.since_ms = TS0}, "SEARCH ledger_minute USING INDEX sqlite_autoindex_ledger_minute_1 (minute>?)", 1},
        {{.until_ms = TS0}, "SEARCH ledger_minute USING INDEX sqlite_autoindex_ledger_minute_1 (minute<?)", 1},
        {{.since_ms = TS0, .until_ms = TS0 + 5},
         "SEARCH ledger_minute USING INDEX sqlite_autoindex_ledger_minute_1 (minute>? AND minute<?)", 2},
        {{.key_id = "k", .since_ms = TS0}, "SEARCH ledger_minute USING INDEX ledger_minute_key (key_id=? AND minute>?)", 1},
        {{.model = "m", .since_ms = TS0, .until_ms = TS0 + 5},
         "SEARCH ledger_minute USING INDEX ledger_minute_model (model=? AND minute>? AND minute<?)", 2},
        {{.key_id = "k", .account = "a", .provider = "p", .model = "m", .since_ms = TS0, .until_ms = TS0 + 5},
         "SEARCH ledger_minute USING INDEX ledger_minute_", 2},
    };
    for (size_t c = 0; c < QG_ARRAY_LEN(cases); c++) {
        char plan[2048];
        plan_of(db, &cases[c].q, true, plan, sizeof plan);
        /* Totals: the summary through an index, the rows only for the edges, through ledger_ts. */
        if (!strstr(plan, cases[c].summary) || count_of(plan, edge) != cases[c].edges ||
            count_of(plan, "ledger ") != cases[c].edges || strstr(plan, "SCAN") || strstr(plan, "TEMP B-TREE"))
            fail_msg("case %zu: totals plan \"%s\", want %s and %d x %s", c, plan, cases[c].summary, cases[c].edges, edge);
        /* Rows: one rowid range, newest first without a sort. */
        plan_of(db, &cases[c].q, false, plan, sizeof plan);
        if (strcmp(plan, by_rowid) != 0) fail_msg("case %zu: rows plan \"%s\", want %s", c, plan, by_rowid);
    }
    /* No filter at all: the whole (small) summary, and the newest rows by id, no sort. */
    char plan[1024];
    qg_usage_query none = {0};
    plan_of(db, &none, true, plan, sizeof plan);
    assert_string_equal(plan, "SCAN ledger_minute");
    plan_of(db, &none, false, plan, sizeof plan);
    assert_string_equal(plan, "SCAN ledger");
    /* And the SQL never contains a value. */
    qg_usage_query evil = {.key_id = "alpha' OR 1=1 --", .model = "m", .since_ms = 123456789, .until_ms = 987654321};
    for (int totals = 0; totals < 2; totals++) {
        char *sql = qg_ledger_query_sql(&evil, totals);
        assert_null(strstr(sql, "alpha"));
        assert_null(strchr(sql, '\''));
        assert_null(strstr(sql, "123456789"));
        assert_null(strstr(sql, "987654321"));
        free(sql);
    }
    sqlite3_close(db);
}

/* Fills a ledger file with n rows quickly, keys key-0..key-999, ts_ms 10 ms apart: one
 * INSERT ... SELECT without indexes or summary, marked as a version-2 file, so that
 * qg_ledger_open migrates it (ledger_ts and the summary, in one GROUP BY; timed) and close
 * checkpoints the WAL into the file. */
static void fill_big(const char *path, int n)
{
    qg_ledger *l = open_ledger(path, 50); /* creates the schema */
    qg_ledger_close(l);
    sqlite3 *db = raw_open(path);
    char sql[1200];
    snprintf(sql, sizeof sql,
             "PRAGMA cache_size=-131072;"
             "DROP INDEX IF EXISTS ledger_ts; DROP TABLE IF EXISTS ledger_minute;"
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<%d)"
             " INSERT INTO ledger(ts_ms,request_id,key_name,key_id,provider,account,model,endpoint,stream,status,"
             "prompt_tokens,completion_tokens,cached_tokens,cache_write_tokens,reasoning_tokens,usage_source,attempts,"
             "ttfb_ms,total_ms) SELECT %lld+i*10,'big-'||i,'key-'||(i%%1000),'key-'||(i%%1000),'prov-'||(i%%3),'acct-'||(i%%7),"
             "'model-'||(i%%11),'chat.completions',i%%2,200,100,50,10,0,0,'upstream',1,12.5,100.25 FROM c;"
             "PRAGMA user_version=2;",
             n, TS0);
    raw_exec(db, sql);
    sqlite3_close(db);
    int64_t t0 = qg_mono_ms();
    l = open_ledger(path, 50);
    print_message("migrated %d rows (version 2 -> 3: ledger_ts and the summary) in %lld ms\n", n,
                  (long long)(qg_mono_ms() - t0));
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

/* Asks one query on every rows path; all answers must be the same.  Prints the times. */
static void time_paths(harness *h, const char *what, const char *key, int64_t since, int64_t until, int64_t want)
{
    static const char *const names[] = {"chosen by cost", "one id range", "summary id ranges"};
    char *first = NULL;
    int64_t ms[3];
    result warm; /* the first read of these pages is not what is measured */
    ask(h, 1, query_of(key, NULL, NULL, NULL, since, until, 100), &warm);
    result_free(&warm);
    for (int path = 0; path < 3; path++) {
        qg_ledger_test_rows_path(h->l, path);
        result r;
        int64_t t0 = qg_mono_us();
        ask(h, 1, query_of(key, NULL, NULL, NULL, since, until, 100), &r);
        ms[path] = qg_mono_us() - t0;
        assert_int_equal(json_int(r.json, "requests"), want);
        if (!first) first = r.json;
        else assert_string_equal(r.json, first), result_free(&r);
    }
    free(first);
    qg_ledger_test_rows_path(h->l, 0);
    print_message("ledger query %s (totals + 100 rows): %.2f ms %s, %.2f ms %s, %.2f ms %s\n", what, ms[0] / 1000.0, names[0],
                  ms[1] / 1000.0, names[1], ms[2] / 1000.0, names[2]);
}

static void test_heavy_query_does_not_delay_commits(void **state)
{
    enum { N = 300000, Q = 12, FLUSH = 50, SLACK = 400 };
    tmpdb *t = *state;
    int64_t t0 = qg_mono_ms();
    fill_big(t->path, N);
    print_message("filled %d rows in %lld ms\n", N, (long long)(qg_mono_ms() - t0));

    /* Query speed on N rows for a selective filter (one key in 1000): the old SQL
     * (`?1 IS NULL OR ...`, which no index can serve) against the ledger's totals now. */
    sqlite3 *db = raw_open(t->path);
    static const char old_where[] =
        " WHERE (?1 IS NULL OR key_id=?1) AND (?2 IS NULL OR account=?2) AND (?3 IS NULL OR provider=?3)"
        " AND (?4 IS NULL OR model=?4) AND (?5 = 0 OR ts_ms >= ?5) AND (?6 = 0 OR ts_ms < ?6)";
    char old_sql[512];
    snprintf(old_sql, sizeof old_sql, "SELECT count(*),total(prompt_tokens),total(completion_tokens) FROM ledger%s", old_where);
    qg_usage_query kq = {.key_id = "key-7"}, aq = {0};
    char *new_sql = qg_ledger_query_sql(&kq, true), *all_sql = qg_ledger_query_sql(&aq, true);
    int64_t c_old, c_new, c_all;
    double old_ms = time_raw_ms(db, old_sql, "key-7", &c_old);
    double new_ms = time_raw_ms(db, new_sql, "key-7", &c_new);
    double all_ms = time_raw_ms(db, all_sql, NULL, &c_all);
    snprintf(old_sql, sizeof old_sql, "SELECT id FROM ledger%s ORDER BY id DESC LIMIT 1 OFFSET 99", old_where);
    int64_t id_old;
    double old_rows_ms = time_raw_ms(db, old_sql, "key-7", &id_old);
    int64_t groups = raw_int(db, "SELECT count(*) FROM ledger_minute");
    free(new_sql), free(all_sql);
    sqlite3_close(db);
    assert_int_equal(c_old, N / 1000);
    assert_int_equal(c_new, N / 1000);
    assert_int_equal(c_all, N);
    print_message("totals for one key over %d rows: %.1f ms without index use, %.2f ms from ledger_minute (%lld summary"
                  " rows); unfiltered totals %.1f ms; rows (100 newest) for one key, old SQL: %.1f ms\n",
                  N, old_ms, new_ms, (long long)groups, all_ms, old_rows_ms);
    assert_true(new_ms < old_ms);

    qg_ledger *l = open_ledger(t->path, FLUSH);
    harness h;
    harness_init(&h, l);
    /* The same selective query through the ledger, on each rows path; and with ms-precise
     * bounds (two partial minutes read from the rows). */
    time_paths(&h, "key=key-7", "key-7", 0, 0, N / 1000);
    int64_t since = TS0 + 123457, until = TS0 + 2345687, in_range = 0;
    for (int i = 1; i <= N; i++)
        if (i % 1000 == 7 && TS0 + i * 10LL >= since && TS0 + i * 10LL < until) in_range++;
    time_paths(&h, "key=key-7 with ms-precise since/until", "key-7", since, until, in_range);
    time_paths(&h, "key=key-7, last 10 minutes", "key-7", TS0 + N * 10LL - 600000 + 1, 0, 60);
    time_paths(&h, "unfiltered, ms-precise since/until", NULL, since, until, (until - since) / 10);

    /* Keep the query thread busy with unfiltered totals over every row... */
    qg_ledger_stats_t s;
    qg_ledger_stats(l, &s);
    int64_t served0 = s.queries_served;
    static result r[Q];
    for (int i = 0; i < Q; i++) post(&h, 1, query_of(NULL, NULL, NULL, NULL, 0, 0, 1000), &r[i]);
    int64_t start = qg_mono_ms();
    /* ...and meanwhile submit rows as worker 0 and time how long each takes to commit. */
    int64_t max_lat = 0, sum_lat = 0;
    int n = 0;
    for (;;) {
        qg_ledger_stats(l, &s);
        if (s.queries_served - served0 >= Q - 1 || qg_mono_ms() - start > 20000) break;
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
    int served_during = (int)(s.queries_served - served0);
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
    assert_summary_exact(db); /* the migration's GROUP BY, then the writer's upserts */
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
    /* The file locked: the first insert of each attempt fails. */
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
    db = raw_open(t->path);
    assert_summary_exact(db);

    /* Now fail later in the transaction: every row of the batch is inserted, then the
     * summary upsert fails (a trigger), the whole transaction rolls back, and the retry
     * rebuilds the aggregation instead of adding the rows twice. */
    qg_ledger_stats(l, &s);
    int64_t failed_before = s.commits_failed, requests_before = raw_int(db, "SELECT sum(requests) FROM ledger_minute");
    raw_exec(db, "CREATE TRIGGER qg_test_fail_i BEFORE INSERT ON ledger_minute BEGIN SELECT RAISE(ABORT, 'injected'); END;"
                 "CREATE TRIGGER qg_test_fail_u BEFORE UPDATE ON ledger_minute BEGIN SELECT RAISE(ABORT, 'injected'); END;");
    for (int i = 301; i < 600; i++) qg_ledger_submit(l, i % 2, make_row(i % 2, i));
    deadline = qg_mono_ms() + 10000;
    do {
        usleep(20000);
        qg_ledger_stats(l, &s);
    } while (s.commits_failed < failed_before + 3 && qg_mono_ms() < deadline);
    assert_true(s.commits_failed >= failed_before + 3); /* three attempts with all rows inserted */
    assert_int_equal(s.rows_written, 301);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger"), 301);
    assert_int_equal(raw_int(db, "SELECT sum(requests) FROM ledger_minute"), requests_before);
    raw_exec(db, "DROP TRIGGER qg_test_fail_i; DROP TRIGGER qg_test_fail_u;");
    wait_rows(l, 600, 10000);
    ask(&h, 1, query_of("beta", NULL, NULL, NULL, 0, 0, 1), &r);
    assert_int_equal(json_int(r.json, "requests"), 200); /* i % 3 == 1 for i < 600 */
    result_free(&r);
    harness_free(&h);
    qg_ledger_close(l);
    assert_int_equal(raw_int(db, "SELECT count(DISTINCT request_id) FROM ledger"), 600);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger"), 600);
    assert_int_equal(raw_int(db, "SELECT sum(requests) FROM ledger_minute"), 600);
    assert_summary_exact(db);
    sqlite3_close(db);
}

/* write_old_file's key beta, as a migrated file must still answer it. */
static void ask_beta(harness *h, result *r)
{
    ask(h, 0, query_of("beta", NULL, NULL, NULL, 0, 0, 10), r);
    assert_int_equal(json_int(r->json, "requests"), 3);
    assert_int_equal(json_int(r->json, "prompt_tokens"), 110);
}

/* A file as an older build left it: version 1 (the table and ledger_ts) or 2 (plus an
 * index per filter column): six rows in four combinations of two minutes, absent names
 * among them (minute 28333334 starts at 1700000040000). */
static void write_old_file(const char *path, int version)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    raw_exec(db, "PRAGMA journal_mode=WAL;"
                 "CREATE TABLE ledger (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, request_id TEXT, key_name TEXT,"
                 " provider TEXT, account TEXT, model TEXT, endpoint TEXT, stream INTEGER, status INTEGER, error TEXT,"
                 " prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER, cache_write_tokens INTEGER,"
                 " reasoning_tokens INTEGER, usage_source TEXT, attempts INTEGER, ttfb_ms REAL, total_ms REAL);"
                 "CREATE INDEX ledger_ts ON ledger(ts_ms);"
                 "INSERT INTO ledger(ts_ms,request_id,key_name) VALUES(1,'old-1','alpha'),(2,'old-2','beta');"
                 "INSERT INTO ledger(ts_ms,request_id,key_name,account,provider,model,prompt_tokens,completion_tokens,"
                 "cached_tokens,reasoning_tokens) VALUES"
                 "(1700000045000,'old-3','beta','acct-a','openai','gpt-4o',10,20,5,1),"
                 "(1700000059999,'old-4','beta','acct-a','openai','gpt-4o',100,200,50,10),"
                 "(1700000060000,'old-5',NULL,'acct-b',NULL,'gpt-4o',1000,2000,0,0),"
                 "(1700000050000,'old-6',NULL,'acct-b',NULL,'gpt-4o',7,7,7,7);");
    if (version == 2)
        raw_exec(db, "CREATE INDEX ledger_key_ts ON ledger(key_name, ts_ms);"
                     "CREATE INDEX ledger_account_ts ON ledger(account, ts_ms);"
                     "CREATE INDEX ledger_provider_ts ON ledger(provider, ts_ms);"
                     "CREATE INDEX ledger_model_ts ON ledger(model, ts_ms);");
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version=%d;", version);
    raw_exec(db, sql);
    sqlite3_close(db);
}

static void test_schema_migration(void **state)
{
    tmpdb *t = *state;
    char dbfiles[3][128];
    snprintf(dbfiles[0], sizeof dbfiles[0], "%s", t->path);
    snprintf(dbfiles[1], sizeof dbfiles[1], "%s-wal", t->path);
    snprintf(dbfiles[2], sizeof dbfiles[2], "%s-shm", t->path);
    for (int version = 1; version <= 2; version++) {
        for (int i = 0; i < 3; i++) unlink(dbfiles[i]);
        write_old_file(t->path, version);
        int saved;
        char errpath[128];
        capture_stderr_begin(&saved, errpath, sizeof errpath, t->dir);
        char err[256] = "";
        qg_ledger *l = qg_ledger_open(t->path, 50, NW, err, sizeof err);
        char *text = capture_stderr_end(saved, errpath);
        if (!l) fail_msg("open: %s", err);
        char want[160];
        snprintf(want, sizeof want, "migrated the schema from version %d to %d (6 ledger rows)", version,
                 LEDGER_SCHEMA_VERSION);
        if (!strstr(text, want))
            fail_msg("version %d: log \"%s\"", version, text);
        free(text);
        harness h;
        harness_init(&h, l);
        result r;
        ask_beta(&h, &r);
        char ids[4][24];
        assert_int_equal(json_ids(r.json, ids, 4), 3);
        assert_string_equal(ids[0], "old-4");
        assert_string_equal(ids[2], "old-2");
        result_free(&r);
        /* ms-precise bounds inside less than two minutes: old-3, old-4, old-6 (not old-5). */
        ask(&h, 1, query_of(NULL, NULL, NULL, "gpt-4o", 1700000000000LL, 1700000060000LL, 10), &r);
        assert_int_equal(json_int(r.json, "requests"), 3);
        assert_int_equal(json_int(r.json, "completion_tokens"), 227);
        result_free(&r);
        /* A new row in a migrated minute and combination: the upsert adds to it. */
        qg_ledger_row *row = qg_ledger_row_new();
        row->ts_ms = 1700000045000LL;
        qg_strlcpy(row->request_id, "new-1", sizeof row->request_id);
        qg_strlcpy(row->key_name, "beta", sizeof row->key_name);
        qg_strlcpy(row->key_id, "beta", sizeof row->key_id);
        qg_strlcpy(row->account, "acct-a", sizeof row->account);
        qg_strlcpy(row->provider, "openai", sizeof row->provider);
        qg_strlcpy(row->model, "gpt-4o", sizeof row->model);
        row->prompt_tokens = 1000;
        qg_ledger_submit(l, 0, row);
        ask(&h, 1, query_of("beta", "acct-a", NULL, NULL, 0, 0, 10), &r);
        assert_int_equal(json_int(r.json, "requests"), 3);
        assert_int_equal(json_int(r.json, "prompt_tokens"), 1110);
        result_free(&r);
        harness_free(&h);
        qg_ledger_close(l);
        sqlite3 *db = raw_open(t->path);
        assert_int_equal(raw_int(db, "PRAGMA user_version"), LEDGER_SCHEMA_VERSION);
        assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger WHERE key_id IS NOT key_name"), 0);
        assert_int_equal(raw_int(db, "SELECT count(*) FROM api_key"), 0);
        assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type='index' AND name IN "
                                     "('ledger_key_ts','ledger_account_ts','ledger_provider_ts','ledger_model_ts')"),
                         0);
        assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type='index' AND tbl_name='ledger'"), 1);
        assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_master WHERE type='index' AND name='ledger_ts'"), 1);
        assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger"), 7);
        assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger_minute"), 4);
        assert_int_equal(raw_int(db, "SELECT requests FROM ledger_minute WHERE key_id='' AND provider=''"), 2);
        assert_int_equal(raw_int(db, "SELECT requests FROM ledger_minute WHERE key_id='beta' AND account='acct-a'"), 3);
        assert_summary_exact(db);
        sqlite3_close(db);
    }
    /* Reopening a current file migrates nothing. */
    int saved;
    char errpath[128];
    capture_stderr_begin(&saved, errpath, sizeof errpath, t->dir);
    char err[256] = "";
    qg_ledger *l = qg_ledger_open(t->path, 50, NW, err, sizeof err);
    qg_ledger_close(l);
    char *text = capture_stderr_end(saved, errpath);
    assert_non_null(l);
    assert_null(strstr(text, "migrated"));
    free(text);
    /* A file from a newer build is refused, not written. */
    sqlite3 *db = raw_open(t->path);
    raw_exec(db, "PRAGMA user_version=99");
    sqlite3_close(db);
    assert_null(qg_ledger_open(t->path, 50, NW, err, sizeof err));
    assert_non_null(strstr(err, "schema version 99"));
}

static void count_counter(void *ud, const char *key, uint64_t policy, int64_t window, int64_t used, unsigned gen,
                          bool total)
{
    int64_t *seen = ud;
    if (!strcmp(key, "beta") && policy == 7 && window == 100 && used == 42 && gen == 0 && !total) seen[0]++;
    if (!strcmp(key, "beta") && total && used == 5000) seen[1]++;
}

/* beta's window (policy 7, window 100: 42 at generation 0) and total (5000) are there once each. */
static void assert_beta_counters(const char *path)
{
    int64_t seen[2] = {0, 0};
    char err[256];
    assert_true(qg_ledger_load_key_counters(path, count_counter, seen, err, sizeof err) >= 2);
    assert_int_equal(seen[0], 1);
    assert_int_equal(seen[1], 1);
}

/* A version-3 file (issue 14's build: keys named by name everywhere) keeps its rows, its
 * summary and its key counters under the key ids (= the static keys' names). */
static void test_schema_v3_to_v4(void **state)
{
    tmpdb *t = *state;
    write_old_file(t->path, 1);
    sqlite3 *db = raw_open(t->path);
    raw_exec(db, "CREATE TABLE ledger_minute (minute INTEGER NOT NULL, key_name TEXT NOT NULL, account TEXT NOT NULL,"
                 " provider TEXT NOT NULL, model TEXT NOT NULL, requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,"
                 " completion_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,"
                 " min_id INTEGER NOT NULL, max_id INTEGER NOT NULL, PRIMARY KEY(minute, key_name, account, provider, model));"
                 "INSERT INTO ledger_minute SELECT ts_ms/60000-(ts_ms%60000<0),coalesce(key_name,''),coalesce(account,''),"
                 "coalesce(provider,''),coalesce(model,''),count(*),total(prompt_tokens),total(completion_tokens),"
                 "total(cached_tokens),total(reasoning_tokens),min(id),max(id) FROM ledger GROUP BY 1,2,3,4,5;"
                 "CREATE INDEX ledger_minute_key ON ledger_minute(key_name, minute);"
                 "CREATE TABLE key_window (key_name TEXT NOT NULL, policy INTEGER NOT NULL, window INTEGER NOT NULL,"
                 " used INTEGER NOT NULL, PRIMARY KEY(key_name, policy, window));"
                 "CREATE TABLE key_total (key_name TEXT PRIMARY KEY, used INTEGER NOT NULL);"
                 "CREATE TABLE key_pause (key_name TEXT PRIMARY KEY, policy INTEGER NOT NULL, until_ms INTEGER NOT NULL);"
                 "INSERT INTO key_window VALUES('beta',7,100,42); INSERT INTO key_total VALUES('beta',5000);"
                 "PRAGMA user_version=3;");
    sqlite3_close(db);
    char err[256] = "";
    qg_ledger *l = qg_ledger_open(t->path, 50, NW, err, sizeof err);
    if (!l) fail_msg("open: %s", err);
    harness h;
    harness_init(&h, l);
    result r;
    ask_beta(&h, &r);
    result_free(&r);
    harness_free(&h);
    qg_ledger_close(l);
    assert_beta_counters(t->path);
    db = raw_open(t->path);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), LEDGER_SCHEMA_VERSION);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger WHERE key_id IS NOT key_name"), 0);
    assert_summary_exact(db);
    sqlite3_close(db);
}

/* A version-4 file (key counters without generations) gets them as generation 0, epoch 0,
 * and keeps its counters and pause. */
static void test_schema_v4_to_v5(void **state)
{
    tmpdb *t = *state;
    qg_ledger_close(open_ledger(t->path, 10));
    sqlite3 *db = raw_open(t->path);
    raw_exec(db, "ALTER TABLE key_window DROP COLUMN gen; ALTER TABLE key_pause DROP COLUMN epoch;"
                 "INSERT INTO key_window VALUES('beta',7,100,42); INSERT INTO key_total VALUES('beta',5000);"
                 "INSERT INTO key_pause VALUES('beta',7,0); PRAGMA user_version=4;");
    sqlite3_close(db);
    qg_ledger_close(open_ledger(t->path, 10));
    assert_beta_counters(t->path);
    db = raw_open(t->path);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), LEDGER_SCHEMA_VERSION);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM key_pause WHERE key_id='beta' AND policy=7 AND epoch=0"), 1);
    sqlite3_close(db);
}

/* ---- key counters: rows and resets in any order ---- */

#define SIG 7     /* a policy signature */
#define WIN 100   /* its window */

/* A row of key "kr" charging `used` to window WIN at generation gen, with the key's pause
 * as read after its settlement (policy 0: none) in reset epoch `epoch`. */
static qg_ledger_row *key_row(int i, int64_t used, unsigned gen, uint64_t pause_policy, uint32_t epoch)
{
    qg_ledger_row *r = make_row(0, i);
    qg_strlcpy(r->key_id, "kr", sizeof r->key_id);
    r->n_key_windows = 1;
    r->key_windows[0].policy = SIG, r->key_windows[0].window = WIN, r->key_windows[0].used = used;
    r->key_windows[0].gen = gen;
    r->key_state = true;
    r->key_pause_policy = pause_policy;
    r->key_epoch = epoch;
    return r;
}

static void reset_kr(qg_ledger *l, int w, unsigned gen, uint32_t epoch)
{
    const uint64_t sig = SIG;
    const int64_t win = WIN;
    const uint8_t g = (uint8_t)gen;
    qg_ledger_reset_key(l, w, "kr", &sig, &win, &g, 1, epoch);
}

typedef struct {
    int64_t used;      /* -1: no window row */
    unsigned gen;
    uint64_t pause;    /* the pausing policy, 0 none */
    unsigned epoch;
} kr_state;

static void kr_counter(void *ud, const char *key, uint64_t policy, int64_t window, int64_t used, unsigned gen,
                       bool total)
{
    kr_state *s = ud;
    if (strcmp(key, "kr") != 0 || total) return;
    if (used == -1) s->pause = policy, s->epoch = gen;
    else if (policy == SIG && window == WIN) s->used = used, s->gen = gen;
}

static kr_state kr_stored(const char *path)
{
    kr_state s = {-1, 0, 0, 0};
    char err[256];
    assert_true(qg_ledger_load_key_counters(path, kr_counter, &s, err, sizeof err) >= 0);
    return s;
}

/* Submits the messages of a scenario with the writer paused, so that one batch takes
 * worker 0's ring, then worker 1's: "w0" items are written before "w1" items. */
typedef struct {
    int worker;
    qg_ledger_row *row; /* or a reset: */
    unsigned gen, epoch;
} kr_msg;

static kr_state kr_run(const char *path, const kr_msg *msgs, int n)
{
    unlink(path);
    qg_ledger *l = open_ledger(path, 10);
    qg_ledger_test_pause(l, true);
    for (int i = 0; i < n; i++) {
        if (msgs[i].row) qg_ledger_submit(l, msgs[i].worker, msgs[i].row);
        else reset_kr(l, msgs[i].worker, msgs[i].gen, msgs[i].epoch);
    }
    qg_ledger_test_pause(l, false);
    qg_ledger_close(l);
    return kr_stored(path);
}

/* The writer drains the workers' rings one after the other and a reset travels on the ring
 * of the worker that served it, so a row and a reset reach the store in either order.  The
 * counters merge by generation (newer replaces, same adds, older is dropped) and the pause
 * by reset epoch; every order gives what memory holds.  (The build before this rule
 * ordered rows by a timestamp taken apart from the settlement and lost a use settled after
 * a reset, or kept one settled before it: CI's test_keys_reset_after_a_request_on_another_worker.) */
static void test_key_counters_merge_in_any_order(void **state)
{
    tmpdb *t = *state;
    kr_state s;
    /* a row settled before the reset (gen 0) reaches the writer after it: dropped */
    s = kr_run(t->path, (kr_msg[]){{1, key_row(1, 5, 0, SIG, 0), 0, 0}, {0, NULL, 1, 1}}, 2);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.gen, 1);
    assert_int_equal(s.pause, 0); /* its pause (read before the reset) is not brought back */
    assert_int_equal(s.epoch, 1);
    /* ... and before it: zeroed by it */
    s = kr_run(t->path, (kr_msg[]){{0, key_row(1, 5, 0, SIG, 0), 0, 0}, {1, NULL, 1, 1}}, 2);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.pause, 0);
    /* a row settled after the reset (gen 1: in flight across it, charged in full to the
     * fresh count) reaches the writer after the reset, or before it: kept either way */
    s = kr_run(t->path, (kr_msg[]){{1, key_row(1, 7, 1, 0, 1), 0, 0}, {0, NULL, 1, 1}}, 2);
    assert_int_equal(s.used, 7);
    assert_int_equal(s.gen, 1);
    s = kr_run(t->path, (kr_msg[]){{0, key_row(1, 7, 1, SIG, 1), 0, 0}, {1, NULL, 1, 1}}, 2);
    assert_int_equal(s.used, 7);
    assert_int_equal(s.pause, SIG); /* a pause after the reset stays */
    assert_int_equal(s.epoch, 1);
    /* all of it in one batch: rows of three generations, two resets, both workers */
    s = kr_run(t->path,
               (kr_msg[]){{0, key_row(1, 2, 0, 0, 0), 0, 0},
                          {1, key_row(2, 3, 1, 0, 1), 0, 0},
                          {0, NULL, 1, 1},
                          {1, key_row(3, 4, 2, 0, 2), 0, 0},
                          {1, key_row(4, 1, 0, SIG, 0), 0, 0},
                          {0, key_row(5, 6, 1, 0, 1), 0, 0},
                          {0, NULL, 2, 2},
                          {0, key_row(6, 5, 2, 0, 2), 0, 0}},
               8);
    assert_int_equal(s.used, 9); /* generation 2's: 4 + 5 */
    assert_int_equal(s.gen, 2);
    assert_int_equal(s.pause, 0);
    assert_int_equal(s.epoch, 2);
    /* across batches (each committed before the next is sent): the same */
    unlink(t->path);
    qg_ledger *l = open_ledger(t->path, 10);
    qg_ledger_submit(l, 1, key_row(1, 7, 1, 0, 1)); /* after the reset, written before it */
    wait_rows(l, 1, 5000);
    reset_kr(l, 0, 1, 1);
    qg_ledger_submit(l, 1, key_row(2, 5, 0, SIG, 0)); /* before the reset, written after it */
    wait_rows(l, 2, 5000);
    qg_ledger_close(l);
    s = kr_stored(t->path);
    assert_int_equal(s.used, 7);
    assert_int_equal(s.pause, 0);
    assert_int_equal(s.epoch, 1);
    /* generations wrap at 64: 63 -> 0 is newer */
    s = kr_run(t->path, (kr_msg[]){{0, key_row(1, 3, 63, 0, 5), 0, 0}, {1, key_row(2, 4, 0, 0, 6), 0, 0}}, 2);
    assert_int_equal(s.used, 4);
    assert_int_equal(s.gen, 0);
}

int main(void)

{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_workers_rows_written_once, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_query_sees_rows_submitted_before, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_filters, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_random_exactness, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_explain_uses_indexes, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_heavy_query_does_not_delay_commits, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_backlog_and_accepting, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_failed_commit_retried, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_schema_migration, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_schema_v3_to_v4, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_schema_v4_to_v5, tmpdb_setup, tmpdb_teardown),
        cmocka_unit_test_setup_teardown(test_key_counters_merge_in_any_order, tmpdb_setup, tmpdb_teardown),
    };
    if (getenv("QG_TEST_FILTER")) cmocka_set_test_filter(getenv("QG_TEST_FILTER")); /* e.g. test_filters */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
