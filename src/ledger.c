/*
 * ledger.c — SQLite WAL ledger with a batching writer thread.  See ledger.h.
 *
 * Invariants:
 *  - Only the writer thread touches the sqlite3 handle (opened in SQLITE_OPEN_NOMUTEX mode).
 *  - Every submitted row is inserted exactly once: rows move worker -> ring -> writer ->
 *    transaction -> free.  A failed COMMIT is retried on the next tick with the same rows
 *    (they are only freed after a successful commit), so a transient SQLITE_BUSY from an
 *    outside reader loses nothing.
 *  - On close, the writer drains all rings once more after the workers have stopped.
 */
#include "ledger.h"

#include "mailbox.h"
#include "timefmt.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define LEDGER_RING 16384
#define LEDGER_MAX_QUERY_ROWS 1000

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
} query_msg;

struct qg_ledger {
    sqlite3 *db;
    sqlite3_stmt *insert;
    qg_mailbox mb;
    pthread_t thread;
    int64_t flush_ms;
    _Atomic bool stop;
    _Atomic int64_t rows_written;
    ledger_msg **overflow_head; /* per worker, worker-owned */
    ledger_msg **overflow_tail;
    ledger_msg *pending;        /* writer-owned: rows not yet committed */
    ledger_msg *pending_tail;
    size_t n_pending;
};

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS ledger ("
    " id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, request_id TEXT, key_name TEXT, provider TEXT,"
    " account TEXT, model TEXT, endpoint TEXT, stream INTEGER, status INTEGER, error TEXT,"
    " prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER, cache_write_tokens INTEGER,"
    " reasoning_tokens INTEGER, usage_source TEXT, attempts INTEGER, ttfb_ms REAL, total_ms REAL);"
    "CREATE INDEX IF NOT EXISTS ledger_ts ON ledger(ts_ms);"
    "PRAGMA user_version=1;";

static const char insert_sql[] =
    "INSERT INTO ledger(ts_ms,request_id,key_name,provider,account,model,endpoint,stream,status,error,"
    "prompt_tokens,completion_tokens,cached_tokens,cache_write_tokens,reasoning_tokens,usage_source,attempts,"
    "ttfb_ms,total_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

/* ---- writer thread ---- */

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s && *s) sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, i);
}

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
    if (!l->pending) return;
    if (sqlite3_exec(l->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) goto fail;
    for (ledger_msg *m = l->pending; m; m = m->next)
        if (insert_row(l, &((row_msg *)m)->row) < 0) goto rollback;
    if (sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto rollback;
    atomic_fetch_add(&l->rows_written, (int64_t)l->n_pending);
    for (ledger_msg *m = l->pending, *next; m; m = next) {
        next = m->next;
        free(m);
    }
    l->pending = l->pending_tail = NULL;
    l->n_pending = 0;
    return;
rollback:
    sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
fail:
    qg_warn("ledger: commit of %zu rows failed (%s); retrying next flush", l->n_pending, sqlite3_errmsg(l->db));
}

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

#define QUERY_WHERE                                                                                     \
    " WHERE (?1 IS NULL OR key_name=?1) AND (?2 IS NULL OR account=?2) AND (?3 IS NULL OR provider=?3)" \
    " AND (?4 IS NULL OR model=?4) AND (?5 = 0 OR ts_ms >= ?5) AND (?6 = 0 OR ts_ms < ?6)"

static void bind_query(sqlite3_stmt *st, const qg_usage_query *q)
{
    bind_text(st, 1, q->key_name);
    bind_text(st, 2, q->account);
    bind_text(st, 3, q->provider);
    bind_text(st, 4, q->model);
    sqlite3_bind_int64(st, 5, q->since_ms);
    sqlite3_bind_int64(st, 6, q->until_ms);
}

static void run_query(qg_ledger *l, query_msg *qm)
{
    static const char rows_sql[] =
        "SELECT ts_ms,request_id,key_name,provider,account,model,endpoint,stream,status,error,prompt_tokens,"
        "completion_tokens,cached_tokens,cache_write_tokens,reasoning_tokens,usage_source,attempts,ttfb_ms,total_ms"
        " FROM ledger" QUERY_WHERE " ORDER BY id DESC LIMIT ?7";
    static const char totals_sql[] =
        "SELECT count(*),total(prompt_tokens),total(completion_tokens),total(cached_tokens),total(reasoning_tokens)"
        " FROM ledger" QUERY_WHERE;
    static const char *const cols[] = {"ts_ms", "request_id", "key", "provider", "account", "model", "endpoint",
                                       "stream", "status", "error", "prompt_tokens", "completion_tokens",
                                       "cached_tokens", "cache_write_tokens", "reasoning_tokens", "usage_source",
                                       "attempts", "ttfb_ms", "total_ms"};
    qg_buf *b = &qm->result;
    sqlite3_stmt *st = NULL;
    qm->status = 500;
    if (sqlite3_prepare_v2(l->db, totals_sql, -1, &st, NULL) != SQLITE_OK) goto fail;
    bind_query(st, &qm->q);
    if (sqlite3_step(st) != SQLITE_ROW) goto fail;
    qg_buf_appendf(b, "{\"totals\":{\"requests\":%lld,\"prompt_tokens\":%.0f,\"completion_tokens\":%.0f,"
                      "\"cached_tokens\":%.0f,\"reasoning_tokens\":%.0f},\"rows\":[",
                   (long long)sqlite3_column_int64(st, 0), sqlite3_column_double(st, 1), sqlite3_column_double(st, 2),
                   sqlite3_column_double(st, 3), sqlite3_column_double(st, 4));
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(l->db, rows_sql, -1, &st, NULL) != SQLITE_OK) goto fail;
    bind_query(st, &qm->q);
    sqlite3_bind_int(st, 7, qm->q.limit);
    for (int n = 0; sqlite3_step(st) == SQLITE_ROW; n++) {
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
    qg_buf_append(b, "]}", 2);
    sqlite3_finalize(st);
    qm->status = 200;
    return;
fail:
    qg_warn("ledger: query failed: %s", sqlite3_errmsg(l->db));
    sqlite3_finalize(st);
    qg_buf_reset(b);
    qg_buf_appendf(b, "{\"error\":{\"message\":\"ledger query failed\",\"type\":\"api_error\",\"code\":\"store_error\"}}");
}

/* Takes every message from every worker; rows join `pending`, queries are answered after the flush. */
static void drain_and_flush(qg_ledger *l)
{
    int qworkers[256];
    query_msg *qlist[256];
    int nq = 0;
    for (int w = 0; w < l->mb.n_workers; w++) {
        ledger_msg *m;
        while ((m = qg_mailbox_take(&l->mb, w))) {
            if (m->kind == MSG_ROW) {
                m->next = NULL;
                if (l->pending_tail) l->pending_tail->next = m;
                else l->pending = m;
                l->pending_tail = m;
                l->n_pending++;
            } else if (nq < (int)QG_ARRAY_LEN(qlist)) {
                qlist[nq] = (query_msg *)m;
                qworkers[nq++] = w;
            } else {
                ((query_msg *)m)->status = 503;
                qg_buf_appendf(&((query_msg *)m)->result, "{\"error\":{\"message\":\"too many concurrent queries\",\"type\":\"api_error\",\"code\":\"busy\"}}");
                qg_mailbox_reply(&l->mb, w, m);
            }
        }
    }
    flush_pending(l);
    for (int i = 0; i < nq; i++) {
        run_query(l, qlist[i]);
        qg_mailbox_reply(&l->mb, qworkers[i], qlist[i]);
    }
}

static void *writer_main(void *arg)
{
    qg_ledger *l = arg;
    while (!atomic_load(&l->stop)) {
        qg_mailbox_wait(&l->mb, (int)l->flush_ms);
        drain_and_flush(l);
    }
    drain_and_flush(l);
    return NULL;
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

qg_ledger *qg_ledger_open(const char *path, int64_t flush_ms, int n_workers, char *err, size_t errlen)
{
    qg_ledger *l = qg_xcalloc(1, sizeof *l);
    l->flush_ms = flush_ms > 0 ? flush_ms : 100;
    if (mkdir_parent(path) < 0) {
        snprintf(err, errlen, "store: cannot create the directory for %s: %s", path, strerror(errno));
        goto fail;
    }
    if (sqlite3_open_v2(path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: cannot open %s: %s", path, l->db ? sqlite3_errmsg(l->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(l->db, 2000);
    char *msg = NULL;
    if (sqlite3_exec(l->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "store: %s: %s", path, msg ? msg : "schema error");
        sqlite3_free(msg);
        goto fail;
    }
    if (sqlite3_prepare_v2(l->db, insert_sql, -1, &l->insert, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: %s", sqlite3_errmsg(l->db));
        goto fail;
    }
    if (qg_mailbox_init(&l->mb, n_workers, LEDGER_RING) < 0) {
        snprintf(err, errlen, "store: eventfd: %s", strerror(errno));
        goto fail;
    }
    l->overflow_head = qg_xcalloc((size_t)n_workers, sizeof *l->overflow_head);
    l->overflow_tail = qg_xcalloc((size_t)n_workers, sizeof *l->overflow_tail);
    if (pthread_create(&l->thread, NULL, writer_main, l) != 0) {
        snprintf(err, errlen, "store: cannot start the writer thread");
        goto fail;
    }
    return l;
fail:
    if (l->insert) sqlite3_finalize(l->insert);
    if (l->db) sqlite3_close(l->db);
    free(l->overflow_head);
    free(l->overflow_tail);
    free(l);
    return NULL;
}

void qg_ledger_attach(qg_ledger *l, int worker, qg_notify *n) { qg_mailbox_attach(&l->mb, worker, n); }

static void overflow_push(qg_ledger *l, int w, ledger_msg *m)
{
    m->next = NULL;
    if (l->overflow_tail[w]) l->overflow_tail[w]->next = m;
    else l->overflow_head[w] = m;
    l->overflow_tail[w] = m;
}

size_t qg_ledger_retry(qg_ledger *l, int w)
{
    size_t left = 0;
    while (l->overflow_head[w]) {
        ledger_msg *m = l->overflow_head[w];
        if (!qg_mailbox_post(&l->mb, w, m, true)) break;
        l->overflow_head[w] = m->next;
        if (!l->overflow_head[w]) l->overflow_tail[w] = NULL;
    }
    for (ledger_msg *m = l->overflow_head[w]; m; m = m->next) left++;
    return left;
}

void qg_ledger_submit(qg_ledger *l, int w, qg_ledger_row *row)
{
    row_msg *m = (row_msg *)((char *)row - offsetof(row_msg, row));
    m->m.kind = MSG_ROW;
    /* Keep order: while older rows wait in overflow, newer ones queue behind them. */
    if (l->overflow_head[w] || !qg_mailbox_post(&l->mb, w, &m->m, false)) {
        overflow_push(l, w, &m->m);
        qg_mailbox_wake(&l->mb);
        return;
    }
    /* Past half full, do not wait for the timer. */
    if (qg_ring_size(&l->mb.to_service[w]) > LEDGER_RING / 2) qg_mailbox_wake(&l->mb);
}

void qg_ledger_query(qg_ledger *l, int w, qg_usage_query *q, qg_ledger_result_cb cb, void *ud)
{
    query_msg *m = qg_xcalloc(1, sizeof *m);
    m->m.kind = MSG_QUERY;
    m->q = *q;
    if (m->q.limit <= 0) m->q.limit = 100;
    if (m->q.limit > LEDGER_MAX_QUERY_ROWS) m->q.limit = LEDGER_MAX_QUERY_ROWS;
    m->cb = cb;
    m->ud = ud;
    qg_buf_init(&m->result, 0);
    if (!qg_mailbox_post(&l->mb, w, &m->m, true)) {
        static const char busy[] = "{\"error\":{\"message\":\"ledger busy\",\"type\":\"api_error\",\"code\":\"busy\"}}";
        cb(ud, 503, busy, sizeof busy - 1);
        free(m->q.key_name), free(m->q.account), free(m->q.provider), free(m->q.model);
        free(m);
    }
}

void qg_ledger_poll(qg_ledger *l, int w)
{
    query_msg *m;
    while ((m = qg_mailbox_reply_pop(&l->mb, w))) {
        m->cb(m->ud, m->status, m->result.data, m->result.len);
        qg_buf_free(&m->result);
        free(m->q.key_name), free(m->q.account), free(m->q.provider), free(m->q.model);
        free(m);
    }
}

int64_t qg_ledger_rows_written(qg_ledger *l) { return atomic_load(&l->rows_written); }

void qg_ledger_close(qg_ledger *l)
{
    if (!l) return;
    /* Rows stuck in overflow lists (the ring was full at shutdown) still get written. */
    for (int w = 0; w < l->mb.n_workers; w++)
        while (qg_ledger_retry(l, w)) qg_mailbox_wake(&l->mb), sched_yield();
    atomic_store(&l->stop, true);
    qg_mailbox_wake(&l->mb);
    pthread_join(l->thread, NULL);
    sqlite3_finalize(l->insert);
    sqlite3_exec(l->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    sqlite3_close(l->db);
    qg_mailbox_free(&l->mb);
    free(l->overflow_head);
    free(l->overflow_tail);
    free(l);
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
