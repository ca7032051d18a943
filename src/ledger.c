/*
 * ledger.c — SQLite WAL ledger: a batching writer thread and a query thread.  See ledger.h.
 *
 * Threads and rings (every ring has exactly one producer and one consumer thread):
 *  - mb  (the writer's mailbox): worker w -> to_service[w] -> writer: rows.  The writer
 *    never replies on it.
 *  - qmb (the query thread's mailbox): worker w -> to_service[w] -> query thread: queries;
 *    query thread -> to_worker[w] -> worker w: answered queries, announced through the
 *    worker's qg_notify (qg_ledger_attach).
 *  The writer and the query thread share one mutex/condvar (commit_mu/commit_cv): the
 *  writer broadcasts after each commit; the query thread waits on it.  No event loop ever
 *  takes it.
 *
 * Invariants:
 *  - Only the writer thread touches the read-write sqlite3 handle `db`, and only the query
 *    thread touches the read-only handle `rdb` (both opened SQLITE_OPEN_NOMUTEX; during
 *    open and close only the calling thread does).
 *  - Every submitted row is inserted exactly once: rows move worker -> (overflow ->) ring ->
 *    writer -> transaction -> free.  A failed COMMIT is retried on the next tick with the
 *    same rows (they are only freed after a successful commit), so a transient SQLITE_BUSY
 *    from an outside reader loses nothing.  No row is ever dropped for lack of room: the
 *    overflow list has no hard cap, only a backlog counter that qg_ledger_accepting uses.
 *  - Per worker, `submitted` (written only by the worker, after the row is in the ring or
 *    the overflow list) and `committed` (written only by the writer, after COMMIT) count
 *    that worker's rows in FIFO order, so committed >= n means the worker's first n rows
 *    are in the file.  A query carries every worker's `submitted` at posting time and runs
 *    once every `committed` has caught up (or after LEDGER_QUERY_BARRIER_MS, with a warning).
 *  - On close, overflow lists are re-posted, the query thread answers what was posted and
 *    stops, then the writer drains all rings once more and commits (retrying a failed
 *    commit a few times) after the workers have stopped.
 */
#include "ledger.h"

#include "mailbox.h"
#include "timefmt.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LEDGER_RING 16384
#define LEDGER_QUERY_RING 64        /* queries in flight per worker; past it, 503 */
#define LEDGER_MAX_QUERY_ROWS 1000
#define LEDGER_WARN_EVERY_MS 10000  /* overflow warning, per worker */
#define LEDGER_BARRIER_STEP_MS 50   /* the query thread re-wakes the writer this often */
#define LEDGER_CLOSE_COMMIT_TRIES 20

enum { MSG_ROW = 1, MSG_QUERY = 2 };

typedef struct ledger_msg {
    int kind;
    struct ledger_msg *next; /* overflow / batch lists */
} ledger_msg;

typedef struct {
    ledger_msg m;
    qg_ledger_row row;
} row_msg;

typedef struct {
    ledger_msg m;
    qg_usage_query q;
    qg_ledger_result_cb cb;
    void *ud;
    int status;
    qg_buf result;
    uint64_t snap[]; /* [n_workers]: each worker's `submitted` when the query was posted */
} query_msg;

/* One per worker; the two halves are on separate cache lines (different writers). */
typedef struct {
    /* Written only by the worker's thread. */
    _Alignas(64) _Atomic uint64_t submitted; /* rows handed to qg_ledger_submit */
    _Atomic size_t backlog;                  /* rows in the overflow list */
    ledger_msg *overflow_head, *overflow_tail;
    int64_t last_warn_ms;
    /* Written only by the writer thread. */
    _Alignas(64) _Atomic uint64_t committed; /* this worker's rows in committed transactions */
    uint64_t uncommitted;                    /* taken from the ring, not committed yet */
} ledger_worker;

struct qg_ledger {
    int n_workers;
    int64_t flush_ms;
    ledger_worker *w;           /* [n_workers] */
    /* writer */
    sqlite3 *db;
    sqlite3_stmt *insert;
    qg_mailbox mb;
    pthread_t writer;
    bool writer_started;
    _Atomic bool stop;
    _Atomic bool paused;        /* test hook */
    ledger_msg *pending;        /* writer-owned: rows not yet committed */
    ledger_msg *pending_tail;
    size_t n_pending;
    /* query thread */
    sqlite3 *rdb;
    qg_mailbox qmb;
    pthread_t reader;
    bool reader_started;
    _Atomic bool stop_reader;
    /* writer -> query thread: "a commit happened" */
    pthread_mutex_t commit_mu;
    pthread_cond_t commit_cv;   /* CLOCK_MONOTONIC */
    /* stats */
    _Atomic int64_t rows_written;
    _Atomic int64_t commits_failed;
    _Atomic int64_t queries_served;
    _Atomic int64_t queries_late;
};

/* Version 1: the table and ledger_ts.  Version 2 adds an index per filter column, each
 * with ts_ms so a filter plus a time range is one index range.  Every statement is
 * IF NOT EXISTS, so running the whole list migrates any older file. */
static const char schema[] =
    "CREATE TABLE IF NOT EXISTS ledger ("
    " id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, request_id TEXT, key_name TEXT, provider TEXT,"
    " account TEXT, model TEXT, endpoint TEXT, stream INTEGER, status INTEGER, error TEXT,"
    " prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER, cache_write_tokens INTEGER,"
    " reasoning_tokens INTEGER, usage_source TEXT, attempts INTEGER, ttfb_ms REAL, total_ms REAL);"
    "CREATE INDEX IF NOT EXISTS ledger_ts ON ledger(ts_ms);"
    "CREATE INDEX IF NOT EXISTS ledger_key_ts ON ledger(key_name, ts_ms);"
    "CREATE INDEX IF NOT EXISTS ledger_account_ts ON ledger(account, ts_ms);"
    "CREATE INDEX IF NOT EXISTS ledger_provider_ts ON ledger(provider, ts_ms);"
    "CREATE INDEX IF NOT EXISTS ledger_model_ts ON ledger(model, ts_ms);";

static const char insert_sql[] =
    "INSERT INTO ledger(ts_ms,request_id,key_name,provider,account,model,endpoint,stream,status,error,"
    "prompt_tokens,completion_tokens,cached_tokens,cache_write_tokens,reasoning_tokens,usage_source,attempts,"
    "ttfb_ms,total_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

static bool present(const char *s) { return s && *s; }

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (present(s)) sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, i);
}

/* ---- writer thread ---- */

static int insert_row(qg_ledger *l, const qg_ledger_row *r)
{
    sqlite3_stmt *st = l->insert;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, r->ts_ms);
    bind_text(st, 2, r->request_id);
    bind_text(st, 3, r->key_name);
    bind_text(st, 4, r->provider);
    bind_text(st, 5, r->account);
    bind_text(st, 6, r->model);
    bind_text(st, 7, r->endpoint);
    sqlite3_bind_int(st, 8, r->stream);
    sqlite3_bind_int(st, 9, r->status);
    bind_text(st, 10, r->error);
    sqlite3_bind_int64(st, 11, r->prompt_tokens);
    sqlite3_bind_int64(st, 12, r->completion_tokens);
    sqlite3_bind_int64(st, 13, r->cached_tokens);
    sqlite3_bind_int64(st, 14, r->cache_write_tokens);
    sqlite3_bind_int64(st, 15, r->reasoning_tokens);
    bind_text(st, 16, r->usage_source);
    sqlite3_bind_int(st, 17, r->attempts);
    sqlite3_bind_double(st, 18, r->ttfb_ms);
    sqlite3_bind_double(st, 19, r->total_ms);
    return sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
}

/* Commits every pending row in one transaction; keeps them for the next tick on failure. */
static void flush_pending(qg_ledger *l)
{
    char why[128];
    if (!l->pending) return;
    if (sqlite3_exec(l->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) goto fail;
    for (ledger_msg *m = l->pending; m; m = m->next)
        if (insert_row(l, &((row_msg *)m)->row) < 0) goto rollback;
    if (sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto rollback;
    sqlite3_reset(l->insert);
    atomic_fetch_add(&l->rows_written, (int64_t)l->n_pending);
    for (int w = 0; w < l->n_workers; w++) {
        ledger_worker *lw = &l->w[w];
        if (!lw->uncommitted) continue;
        uint64_t c = atomic_load_explicit(&lw->committed, memory_order_relaxed);
        atomic_store_explicit(&lw->committed, c + lw->uncommitted, memory_order_release);
        lw->uncommitted = 0;
    }
    pthread_mutex_lock(&l->commit_mu);
    pthread_cond_broadcast(&l->commit_cv);
    pthread_mutex_unlock(&l->commit_mu);
    for (ledger_msg *m = l->pending, *next; m; m = next) {
        next = m->next;
        free(m);
    }
    l->pending = l->pending_tail = NULL;
    l->n_pending = 0;
    return;
rollback:
    qg_strlcpy(why, sqlite3_errmsg(l->db), sizeof why);
    sqlite3_reset(l->insert);
    sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    goto count;
fail:
    qg_strlcpy(why, sqlite3_errmsg(l->db), sizeof why);
count:
    atomic_fetch_add(&l->commits_failed, 1);
    qg_warn("ledger: commit of %zu rows failed (%s); retrying next flush", l->n_pending, why);
}

/* Takes every row from every worker's ring into `pending`, then commits. */
static void drain_and_flush(qg_ledger *l)
{
    for (int w = 0; w < l->n_workers; w++) {
        ledger_msg *m;
        while ((m = qg_mailbox_take(&l->mb, w))) {
            m->next = NULL;
            if (l->pending_tail) l->pending_tail->next = m;
            else l->pending = m;
            l->pending_tail = m;
            l->n_pending++;
            l->w[w].uncommitted++;
        }
    }
    flush_pending(l);
}

static void *writer_main(void *arg)
{
    qg_ledger *l = arg;
    int timeout = l->flush_ms > INT_MAX ? INT_MAX : (int)l->flush_ms;
    while (!atomic_load(&l->stop)) {
        qg_mailbox_wait(&l->mb, timeout);
        if (atomic_load_explicit(&l->paused, memory_order_relaxed) && !atomic_load(&l->stop)) continue;
        drain_and_flush(l);
    }
    drain_and_flush(l);
    for (int i = 0; l->pending && i < LEDGER_CLOSE_COMMIT_TRIES; i++) {
        usleep(100 * 1000);
        flush_pending(l);
    }
    if (l->pending) {
        qg_error("ledger: %zu rows could not be committed at shutdown (%s)", l->n_pending, sqlite3_errmsg(l->db));
        for (ledger_msg *m = l->pending, *next; m; m = next) {
            next = m->next;
            free(m);
        }
        l->pending = l->pending_tail = NULL;
    }
    return NULL;
}

/* ---- queries ---- */

static void append_json_str(qg_buf *b, const unsigned char *s)
{
    if (!s) {
        qg_buf_append(b, "null", 4);
        return;
    }
    qg_buf_append(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') qg_buf_appendf(b, "\\%c", *s);
        else if (*s < 0x20) qg_buf_appendf(b, "\\u%04x", *s);
        else qg_buf_append(b, s, 1);
    }
    qg_buf_append(b, "\"", 1);
}

#define ROW_COLS                                                                                        \
    "ts_ms,request_id,key_name,provider,account,model,endpoint,stream,status,error,prompt_tokens,"      \
    "completion_tokens,cached_tokens,cache_write_tokens,reasoning_tokens,usage_source,attempts,ttfb_ms," \
    "total_ms"

static bool has_column_filter(const qg_usage_query *q)
{
    return present(q->key_name) || present(q->account) || present(q->provider) || present(q->model);
}

/* Only the filters present become conditions (so SQLite can pick an index); values are
 * always bound parameters with fixed numbers, never text in the SQL. */
static void append_where(qg_buf *b, const qg_usage_query *q)
{
    const char *sep = " WHERE ";
    struct {
        bool on;
        const char *cond;
    } c[] = {
        {present(q->key_name), "key_name=?1"}, {present(q->account), "account=?2"},
        {present(q->provider), "provider=?3"}, {present(q->model), "model=?4"},
        {q->since_ms != 0, "ts_ms>=?5"},       {q->until_ms != 0, "ts_ms<?6"},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(c); i++) {
        if (!c[i].on) continue;
        qg_buf_puts(b, sep);
        qg_buf_puts(b, c[i].cond);
        sep = " AND ";
    }
}

char *qg_ledger_query_sql(const qg_usage_query *q, bool totals)
{
    qg_buf b;
    qg_buf_init(&b, 0);
    bool cols = has_column_filter(q), times = q->since_ms != 0 || q->until_ms != 0;
    /* Time filters alone: the planner would rather walk the table in id order; the ts
     * index keeps the cost proportional to the rows in the range. */
    const char *from = !cols && times ? " FROM ledger INDEXED BY ledger_ts" : " FROM ledger";
    if (totals) {
        qg_buf_puts(&b, "SELECT count(*),total(prompt_tokens),total(completion_tokens),total(cached_tokens),"
                        "total(reasoning_tokens)");
        qg_buf_puts(&b, from);
        append_where(&b, q);
    } else if (!cols && !times) {
        qg_buf_puts(&b, "SELECT " ROW_COLS " FROM ledger ORDER BY id DESC LIMIT ?7");
    } else {
        /* Newest first without sorting whole rows: the indexes are (column, ts_ms), so
         * the ids of the matches are sorted from the index alone (a top-N sort), and
         * only the `limit` rows returned are read from the table. */
        qg_buf_puts(&b, "SELECT " ROW_COLS " FROM ledger WHERE id IN (SELECT id");
        qg_buf_puts(&b, from);
        append_where(&b, q);
        qg_buf_puts(&b, " ORDER BY id DESC LIMIT ?7) ORDER BY id DESC");
    }
    qg_buf_append(&b, "", 1);
    return b.data;
}

static void bind_query(sqlite3_stmt *st, const qg_usage_query *q, bool totals)
{
    if (present(q->key_name)) sqlite3_bind_text(st, 1, q->key_name, -1, SQLITE_STATIC);
    if (present(q->account)) sqlite3_bind_text(st, 2, q->account, -1, SQLITE_STATIC);
    if (present(q->provider)) sqlite3_bind_text(st, 3, q->provider, -1, SQLITE_STATIC);
    if (present(q->model)) sqlite3_bind_text(st, 4, q->model, -1, SQLITE_STATIC);
    if (q->since_ms) sqlite3_bind_int64(st, 5, q->since_ms);
    if (q->until_ms) sqlite3_bind_int64(st, 6, q->until_ms);
    if (!totals) sqlite3_bind_int(st, 7, q->limit);
}

static int prepare_query(qg_ledger *l, const qg_usage_query *q, bool totals, sqlite3_stmt **st)
{
    char *sql = qg_ledger_query_sql(q, totals);
    int rc = sqlite3_prepare_v2(l->rdb, sql, -1, st, NULL);
    free(sql);
    if (rc != SQLITE_OK) return -1;
    bind_query(*st, q, totals);
    return 0;
}

/* Runs on the query thread.  Totals and rows are read in one transaction (one snapshot). */
static void run_query(qg_ledger *l, query_msg *qm)
{
    static const char *const cols[] = {"ts_ms", "request_id", "key", "provider", "account", "model", "endpoint",
                                       "stream", "status", "error", "prompt_tokens", "completion_tokens",
                                       "cached_tokens", "cache_write_tokens", "reasoning_tokens", "usage_source",
                                       "attempts", "ttfb_ms", "total_ms"};
    qg_buf *b = &qm->result;
    sqlite3_stmt *st = NULL;
    bool in_txn = false;
    qm->status = 500;
    if (sqlite3_exec(l->rdb, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) goto fail;
    in_txn = true;
    if (prepare_query(l, &qm->q, true, &st) < 0) goto fail;
    if (sqlite3_step(st) != SQLITE_ROW) goto fail;
    qg_buf_appendf(b, "{\"totals\":{\"requests\":%lld,\"prompt_tokens\":%.0f,\"completion_tokens\":%.0f,"
                      "\"cached_tokens\":%.0f,\"reasoning_tokens\":%.0f},\"rows\":[",
                   (long long)sqlite3_column_int64(st, 0), sqlite3_column_double(st, 1), sqlite3_column_double(st, 2),
                   sqlite3_column_double(st, 3), sqlite3_column_double(st, 4));
    sqlite3_finalize(st);
    st = NULL;
    if (prepare_query(l, &qm->q, false, &st) < 0) goto fail;
    int rc, n = 0;
    for (; (rc = sqlite3_step(st)) == SQLITE_ROW; n++) {
        qg_buf_append(b, n ? ",{" : "{", n ? 2 : 1);
        for (int c = 0; c < (int)QG_ARRAY_LEN(cols); c++) {
            qg_buf_appendf(b, "%s\"%s\":", c ? "," : "", cols[c]);
            int t = sqlite3_column_type(st, c);
            if (c == 7) qg_buf_append(b, sqlite3_column_int(st, c) ? "true" : "false", sqlite3_column_int(st, c) ? 4 : 5);
            else if (t == SQLITE_INTEGER) qg_buf_appendf(b, "%lld", (long long)sqlite3_column_int64(st, c));
            else if (t == SQLITE_FLOAT) qg_buf_appendf(b, "%.3f", sqlite3_column_double(st, c));
            else append_json_str(b, sqlite3_column_text(st, c));
        }
        qg_buf_append(b, "}", 1);
    }
    if (rc != SQLITE_DONE) goto fail;
    qg_buf_append(b, "]}", 2);
    sqlite3_finalize(st);
    sqlite3_exec(l->rdb, "COMMIT", NULL, NULL, NULL);
    qm->status = 200;
    return;
fail:
    qg_warn("ledger: query failed: %s", sqlite3_errmsg(l->rdb));
    sqlite3_finalize(st);
    if (in_txn) sqlite3_exec(l->rdb, "ROLLBACK", NULL, NULL, NULL);
    qg_buf_reset(b);
    qg_buf_appendf(b, "{\"error\":{\"message\":\"ledger query failed\",\"type\":\"api_error\",\"code\":\"store_error\"}}");
}

static bool barrier_passed(qg_ledger *l, const query_msg *qm)
{
    for (int w = 0; w < l->n_workers; w++)
        if (atomic_load_explicit(&l->w[w].committed, memory_order_acquire) < qm->snap[w]) return false;
    return true;
}

/* Waits until every row submitted before the query is committed; false past the bound. */
static bool wait_barrier(qg_ledger *l, const query_msg *qm)
{
    if (barrier_passed(l, qm)) return true;
    int64_t deadline = qg_mono_ms() + LEDGER_QUERY_BARRIER_MS;
    bool ok = true;
    pthread_mutex_lock(&l->commit_mu);
    while (!barrier_passed(l, qm)) {
        int64_t now = qg_mono_ms();
        if (now >= deadline) {
            ok = false;
            break;
        }
        /* Ask the writer to flush now rather than at its timer; ask again every step in
         * case the rows were still in a worker's overflow list at the last drain. */
        qg_mailbox_wake(&l->mb);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t step = QG_MIN(deadline - now, (int64_t)LEDGER_BARRIER_STEP_MS);
        ts.tv_nsec += (long)(step % 1000) * 1000000L;
        ts.tv_sec += (time_t)(step / 1000) + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&l->commit_cv, &l->commit_mu, &ts);
    }
    pthread_mutex_unlock(&l->commit_mu);
    return ok;
}

static void answer(qg_ledger *l, int w, query_msg *qm)
{
    if (!wait_barrier(l, qm)) {
        atomic_fetch_add(&l->queries_late, 1);
        qg_warn("ledger: a query waited %d ms for earlier rows to be committed; running it without them",
                LEDGER_QUERY_BARRIER_MS);
    }
    run_query(l, qm);
    atomic_fetch_add(&l->queries_served, 1);
    qg_mailbox_reply(&l->qmb, w, qm);
}

/* One query per worker per pass, so one worker's burst does not starve the others. */
static void serve_queries(qg_ledger *l)
{
    for (bool any = true; any;) {
        any = false;
        for (int w = 0; w < l->n_workers; w++) {
            query_msg *qm = qg_mailbox_take(&l->qmb, w);
            if (!qm) continue;
            any = true;
            answer(l, w, qm);
        }
    }
}

static void *reader_main(void *arg)
{
    qg_ledger *l = arg;
    while (!atomic_load(&l->stop_reader)) {
        qg_mailbox_wait(&l->qmb, 1000);
        serve_queries(l);
    }
    serve_queries(l);
    return NULL;
}

static void query_msg_free(query_msg *m)
{
    qg_buf_free(&m->result);
    free(m->q.key_name), free(m->q.account), free(m->q.provider), free(m->q.model);
    free(m);
}

/* ---- public ---- */

static int mkdir_parent(const char *path)
{
    char *dir = qg_xstrdup(path);
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
            free(dir);
            return -1;
        }
        *p = '/';
    }
    free(dir);
    return 0;
}

static int exec_sql(sqlite3 *db, const char *sql, const char *path, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    snprintf(err, errlen, "store: %s: %s", path, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

/* Creates or migrates the schema to LEDGER_SCHEMA_VERSION (start-up; may take a while on a
 * large version-1 file, which gets its indexes built here). */
static int setup_schema(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    if (exec_sql(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", path, err, errlen) < 0) return -1;
    sqlite3_stmt *st;
    int version = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: %s: %s", path, sqlite3_errmsg(db));
        return -1;
    }
    if (sqlite3_step(st) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > LEDGER_SCHEMA_VERSION) {
        snprintf(err, errlen, "store: %s has schema version %d; this build knows versions up to %d", path, version,
                 LEDGER_SCHEMA_VERSION);
        return -1;
    }
    if (version == LEDGER_SCHEMA_VERSION) return exec_sql(db, schema, path, err, errlen); /* IF NOT EXISTS: cheap */
    if (version > 0) qg_info("store: %s: migrating the ledger schema from version %d to %d (adding indexes)", path, version,
                             LEDGER_SCHEMA_VERSION);
    char sql[sizeof schema + 64];
    snprintf(sql, sizeof sql, "BEGIN;%sPRAGMA user_version=%d;COMMIT;", schema, LEDGER_SCHEMA_VERSION);
    if (exec_sql(db, sql, path, err, errlen) < 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static void ledger_free(qg_ledger *l)
{
    if (l->insert) sqlite3_finalize(l->insert);
    if (l->rdb) sqlite3_close(l->rdb);
    if (l->db) sqlite3_close(l->db);
    if (l->mb.to_service) qg_mailbox_free(&l->mb);
    if (l->qmb.to_service) qg_mailbox_free(&l->qmb);
    pthread_mutex_destroy(&l->commit_mu);
    pthread_cond_destroy(&l->commit_cv);
    free(l->w);
    free(l);
}

qg_ledger *qg_ledger_open(const char *path, int64_t flush_ms, int n_workers, char *err, size_t errlen)
{
    qg_ledger *l = qg_xcalloc(1, sizeof *l);
    l->n_workers = n_workers;
    l->flush_ms = flush_ms > 0 ? flush_ms : 100;
    l->mb.wake_fd = l->qmb.wake_fd = -1;
    size_t wsize = ((size_t)n_workers * sizeof *l->w + 63) / 64 * 64;
    l->w = aligned_alloc(64, wsize ? wsize : 64);
    if (!l->w) abort();
    memset(l->w, 0, wsize);
    for (int w = 0; w < n_workers; w++) l->w[w].last_warn_ms = INT64_MIN / 2;
    pthread_mutex_init(&l->commit_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->commit_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (mkdir_parent(path) < 0) {
        snprintf(err, errlen, "store: cannot create the directory for %s: %s", path, strerror(errno));
        goto fail;
    }
    if (sqlite3_open_v2(path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: cannot open %s: %s", path, l->db ? sqlite3_errmsg(l->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(l->db, 2000);
    if (setup_schema(l->db, path, err, errlen) < 0) goto fail;
    if (sqlite3_prepare_v2(l->db, insert_sql, -1, &l->insert, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: %s", sqlite3_errmsg(l->db));
        goto fail;
    }
    /* The query thread's own connection: read-only, and WAL lets it read a consistent
     * snapshot while the writer commits. */
    if (sqlite3_open_v2(path, &l->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: cannot open %s for reading: %s", path, l->rdb ? sqlite3_errmsg(l->rdb) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(l->rdb, 2000);
    if (qg_mailbox_init(&l->mb, n_workers, LEDGER_RING) < 0 || qg_mailbox_init(&l->qmb, n_workers, LEDGER_QUERY_RING) < 0) {
        snprintf(err, errlen, "store: eventfd: %s", strerror(errno));
        goto fail;
    }
    if (pthread_create(&l->writer, NULL, writer_main, l) != 0) {
        snprintf(err, errlen, "store: cannot start the writer thread");
        goto fail;
    }
    l->writer_started = true;
    if (pthread_create(&l->reader, NULL, reader_main, l) != 0) {
        snprintf(err, errlen, "store: cannot start the query thread");
        goto fail;
    }
    l->reader_started = true;
    return l;
fail:
    if (l->writer_started) {
        atomic_store(&l->stop, true);
        qg_mailbox_wake(&l->mb);
        pthread_join(l->writer, NULL);
    }
    ledger_free(l);
    return NULL;
}

void qg_ledger_attach(qg_ledger *l, int worker, qg_notify *n) { qg_mailbox_attach(&l->qmb, worker, n); }

/* Worker side.  Rate-limited: at most once per LEDGER_WARN_EVERY_MS per worker. */
static void overflow_warn(qg_ledger *l, int w, size_t backlog)
{
    ledger_worker *lw = &l->w[w];
    int64_t now = qg_mono_ms();
    if (now - lw->last_warn_ms < LEDGER_WARN_EVERY_MS) return;
    lw->last_warn_ms = now;
    qg_warn("ledger: worker %d: %zu row(s) wait in overflow for the writer (its ring of %d is full)%s", w, backlog, LEDGER_RING,
            backlog >= LEDGER_MAX_BACKLOG ? "; refusing new requests until it drains" : "");
}

static void count_submitted(ledger_worker *lw)
{
    uint64_t s = atomic_load_explicit(&lw->submitted, memory_order_relaxed);
    atomic_store_explicit(&lw->submitted, s + 1, memory_order_release);
}

size_t qg_ledger_retry(qg_ledger *l, int w)
{
    ledger_worker *lw = &l->w[w];
    size_t left = atomic_load_explicit(&lw->backlog, memory_order_relaxed), moved = 0;
    while (lw->overflow_head) {
        ledger_msg *m = lw->overflow_head, *next = m->next; /* once posted, m is the writer's */
        if (!qg_mailbox_post(&l->mb, w, m, false)) break;
        lw->overflow_head = next;
        if (!next) lw->overflow_tail = NULL;
        moved++;
    }
    left -= moved;
    atomic_store_explicit(&lw->backlog, left, memory_order_relaxed);
    if (moved) qg_mailbox_wake(&l->mb);
    if (left) overflow_warn(l, w, left);
    return left;
}

size_t qg_ledger_backlog(qg_ledger *l, int w) { return atomic_load_explicit(&l->w[w].backlog, memory_order_relaxed); }

bool qg_ledger_accepting(qg_ledger *l, int w) { return qg_ledger_backlog(l, w) < LEDGER_MAX_BACKLOG; }

void qg_ledger_submit(qg_ledger *l, int w, qg_ledger_row *row)
{
    ledger_worker *lw = &l->w[w];
    row_msg *m = (row_msg *)((char *)row - offsetof(row_msg, row));
    m->m.kind = MSG_ROW;
    /* Keep order: while older rows wait in overflow, newer ones queue behind them. */
    if (lw->overflow_head || !qg_mailbox_post(&l->mb, w, &m->m, false)) {
        m->m.next = NULL;
        if (lw->overflow_tail) lw->overflow_tail->next = &m->m;
        else lw->overflow_head = &m->m;
        lw->overflow_tail = &m->m;
        size_t backlog = atomic_load_explicit(&lw->backlog, memory_order_relaxed) + 1;
        atomic_store_explicit(&lw->backlog, backlog, memory_order_relaxed);
        count_submitted(lw);
        if (backlog == 1) qg_mailbox_wake(&l->mb); /* the writer is behind: no need to wake it per row */
        overflow_warn(l, w, backlog);
        return;
    }
    count_submitted(lw);
    /* Past half full, do not wait for the timer. */
    if (qg_ring_size(&l->mb.to_service[w]) > LEDGER_RING / 2) qg_mailbox_wake(&l->mb);
}

void qg_ledger_query(qg_ledger *l, int w, qg_usage_query *q, qg_ledger_result_cb cb, void *ud)
{
    /* This worker's own overflowed rows go to the ring first, so the barrier passes at the
     * writer's next drain instead of after this worker's retry timer. */
    if (l->w[w].overflow_head) qg_ledger_retry(l, w);
    query_msg *m = qg_xcalloc(1, sizeof *m + (size_t)l->n_workers * sizeof m->snap[0]);
    m->m.kind = MSG_QUERY;
    m->q = *q;
    if (m->q.limit <= 0) m->q.limit = 100;
    if (m->q.limit > LEDGER_MAX_QUERY_ROWS) m->q.limit = LEDGER_MAX_QUERY_ROWS;
    m->cb = cb;
    m->ud = ud;
    qg_buf_init(&m->result, 0);
    for (int v = 0; v < l->n_workers; v++) m->snap[v] = atomic_load_explicit(&l->w[v].submitted, memory_order_acquire);
    if (!qg_mailbox_post(&l->qmb, w, &m->m, true)) {
        static const char busy[] = "{\"error\":{\"message\":\"ledger busy\",\"type\":\"api_error\",\"code\":\"busy\"}}";
        cb(ud, 503, busy, sizeof busy - 1);
        query_msg_free(m);
    }
}

void qg_ledger_poll(qg_ledger *l, int w)
{
    query_msg *m;
    while ((m = qg_mailbox_reply_pop(&l->qmb, w))) {
        m->cb(m->ud, m->status, m->result.data, m->result.len);
        query_msg_free(m);
    }
}

int64_t qg_ledger_rows_written(qg_ledger *l) { return atomic_load(&l->rows_written); }

void qg_ledger_stats(qg_ledger *l, qg_ledger_stats_t *out)
{
    out->rows_written = atomic_load_explicit(&l->rows_written, memory_order_relaxed);
    out->backlog = 0;
    for (int w = 0; w < l->n_workers; w++) out->backlog += atomic_load_explicit(&l->w[w].backlog, memory_order_relaxed);
    out->commits_failed = atomic_load_explicit(&l->commits_failed, memory_order_relaxed);
    out->queries_served = atomic_load_explicit(&l->queries_served, memory_order_relaxed);
    out->queries_late = atomic_load_explicit(&l->queries_late, memory_order_relaxed);
}

void qg_ledger_test_pause(qg_ledger *l, bool paused)
{
    atomic_store(&l->paused, paused);
    if (!paused) qg_mailbox_wake(&l->mb);
}

void qg_ledger_close(qg_ledger *l)
{
    if (!l) return;
    atomic_store(&l->paused, false);
    /* Rows stuck in overflow lists (the ring was full at shutdown) still get written. */
    for (int w = 0; w < l->n_workers; w++)
        while (qg_ledger_retry(l, w)) qg_mailbox_wake(&l->mb), sched_yield();
    /* The query thread first: its barrier waits need the writer. */
    atomic_store(&l->stop_reader, true);
    qg_mailbox_wake(&l->qmb);
    pthread_join(l->reader, NULL);
    atomic_store(&l->stop, true);
    qg_mailbox_wake(&l->mb);
    pthread_join(l->writer, NULL);
    /* Answers nobody will poll any more (the workers' loops are gone). */
    for (int w = 0; w < l->n_workers; w++) {
        query_msg *m;
        while ((m = qg_mailbox_reply_pop(&l->qmb, w))) query_msg_free(m);
        while ((m = qg_mailbox_take(&l->qmb, w))) query_msg_free(m);
    }
    sqlite3_close(l->rdb);
    l->rdb = NULL;
    sqlite3_finalize(l->insert);
    l->insert = NULL;
    sqlite3_exec(l->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    ledger_free(l);
}

/* Rows are allocated with their message header so submit needs no second allocation. */
qg_ledger_row *qg_ledger_row_new(void)
{
    row_msg *m = qg_xcalloc(1, sizeof *m);
    return &m->row;
}

void qg_ledger_row_free(qg_ledger_row *row)
{
    if (row) free((char *)row - offsetof(row_msg, row));
}
