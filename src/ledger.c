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
 *  - ledger_minute is exactly the GROUP BY (minute, key, account, provider, model) of the
 *    committed rows (sums, lowest and highest id): the writer aggregates each batch in memory
 *    while inserting it and upserts one summary row per distinct combination in the same
 *    transaction, rebuilding the aggregation on every attempt, so a failed commit that is
 *    retried counts its rows once.  Absent names are '' in the summary (NULL in the rows).
 *
 * Queries: the SQL names only the filters present, always as bound parameters.  Totals
 * read the whole minutes inside [since, until) from ledger_minute (through an index on
 * (filter column, minute), or its primary key for time alone) and the partial minutes at a
 * ms-precise edge (less than 60 s each) from the rows through ledger_ts.  The same read
 * yields the lowest and highest id of the matches, so the rows (newest `limit` by id) are
 * read by rowid, downward from the highest id and never below the lowest: exact even
 * though ts_ms (the request start) and ids (commit order) need not agree.  For a rare
 * filter (few summary rows against a long id range) only the id ranges of the matching
 * summary rows (and of the edges) are read, merged and newest first.
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
#define MINUTE_MS 60000
/* Rows path: read only the matching summary rows' id ranges when there are at most this
 * many, and they cost less than RANGES_COST_RATIO times the rows a single range would read. */
#define LEDGER_MAX_RANGES 65536
#define RANGES_COST_RATIO 32

enum { MSG_ROW = 1, MSG_QUERY = 2, MSG_STATE = 3, MSG_KEY_RESET = 4 };

typedef struct ledger_msg {
    int kind;
    struct ledger_msg *next; /* overflow / batch lists */
} ledger_msg;

typedef struct {
    ledger_msg m;
    qg_ledger_row row;
} row_msg;

/* An account's quota state (quota.h's text form), upserted into account_state. */
typedef struct {
    ledger_msg m;
    char account[64];
    int64_t ts_ms;
    size_t len;
    char text[];
} state_msg;

/* A key's manual reset: its pause ended at a new epoch, these windows zeroed at new
 * generations. */
typedef struct {
    ledger_msg m;
    char key[64];
    int n;
    uint32_t epoch;
    uint64_t policy[16];
    int64_t window[16];
    uint8_t gen[16];
} key_reset_msg;

/* One distinct (minute, key, account, provider, model) of a batch, summed while the batch
 * is inserted.  The names are the first such row's (alive until the batch is committed). */
typedef struct {
    const qg_ledger_row *r;
    int64_t minute;
    uint32_t hash;
    int64_t requests, prompt, completion, cached, reasoning;
    int64_t min_id, max_id;
} minute_agg;

typedef struct {
    ledger_msg m;
    qg_usage_query q;
    qg_counter_probe *probes;   /* a counter check (qg_ledger_check_counters) instead of q */
    size_t n_probes;
    int skipped;
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
    sqlite3_stmt *insert, *update, *upsert, *state, *key_window, *key_total, *key_pause;
    struct key_agg *kagg;       /* writer-owned: this batch's key counters, [KEY_AGG_MAX] */
    size_t n_kagg;
    minute_agg *agg;            /* writer-owned: this batch's combinations, [agg_cap] */
    size_t agg_cap, n_agg, last_agg;
    uint32_t *slots;            /* open addressing over agg (index + 1; 0 empty), [slots_cap] */
    size_t slots_cap, slots_mask;
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
    _Atomic int rows_path;      /* test hook: 0 by cost, 1 one id range, 2 summary id ranges */
    /* writer -> query thread: "a commit happened" */
    pthread_mutex_t commit_mu;
    pthread_cond_t commit_cv;   /* CLOCK_MONOTONIC */
    /* stats */
    _Atomic int64_t rows_written;
    _Atomic int64_t commits_failed;
    _Atomic int64_t queries_served;
    _Atomic int64_t queries_late;
};

/* Version 1: the table and ledger_ts.  Version 2 added an index per filter column (with
 * ts_ms); each cost the writer about as much per row as the rest of the insert, so version
 * 3 drops them and adds ledger_minute, the per-minute summary (see the header comment),
 * with an index per filter column on it: those cost one entry per combination per minute,
 * not per row.  Every statement is IF NOT EXISTS (cheap at every start of a version-3 file). */
static const char schema_tables[] =
    "CREATE TABLE IF NOT EXISTS ledger ("
    " id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, request_id TEXT, key_name TEXT, provider TEXT,"
    " account TEXT, model TEXT, endpoint TEXT, stream INTEGER, status INTEGER, error TEXT,"
    " prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER, cache_write_tokens INTEGER,"
    " reasoning_tokens INTEGER, usage_source TEXT, attempts INTEGER, ttfb_ms REAL, total_ms REAL);"
    "CREATE INDEX IF NOT EXISTS ledger_ts ON ledger(ts_ms);"
    "CREATE TABLE IF NOT EXISTS ledger_minute ("
    " minute INTEGER NOT NULL, key_name TEXT NOT NULL, account TEXT NOT NULL, provider TEXT NOT NULL,"
    " model TEXT NOT NULL, requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,"
    " completion_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,"
    " min_id INTEGER NOT NULL, max_id INTEGER NOT NULL,"
    " PRIMARY KEY(minute, key_name, account, provider, model));"
    /* key quota counters: what each key's policy windows and total quota settled (keyquota.h) */
    "CREATE TABLE IF NOT EXISTS key_window ("
    " key_name TEXT NOT NULL, policy INTEGER NOT NULL, window INTEGER NOT NULL, used INTEGER NOT NULL,"
    " PRIMARY KEY(key_name, policy, window));"
    "CREATE TABLE IF NOT EXISTS key_total (key_name TEXT PRIMARY KEY, used INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS key_pause (key_name TEXT PRIMARY KEY, policy INTEGER NOT NULL, until_ms INTEGER NOT NULL);"
    /* the quota engine's per-account state (quota.h's text form), the latest per account */
    "CREATE TABLE IF NOT EXISTS account_state ("
    " account TEXT PRIMARY KEY, data TEXT NOT NULL, updated_ms INTEGER NOT NULL);";
static const char schema_summary_indexes[] =
    "CREATE INDEX IF NOT EXISTS ledger_minute_key ON ledger_minute(key_name, minute);"
    "CREATE INDEX IF NOT EXISTS ledger_minute_account ON ledger_minute(account, minute);"
    "CREATE INDEX IF NOT EXISTS ledger_minute_provider ON ledger_minute(provider, minute);"
    "CREATE INDEX IF NOT EXISTS ledger_minute_model ON ledger_minute(model, minute);";

#define SUMMARY_COLS_V3                                                                                \
    "minute,key_name,account,provider,model,requests,prompt_tokens,completion_tokens,cached_tokens," \
    "reasoning_tokens,min_id,max_id"

/* From version 1 or 2: the summary of every existing row, minutes floored as minute_of does
 * (run before schema_summary_indexes: building an index once is faster than one per insert). */
static const char migrate_sql[] =
    "DROP INDEX IF EXISTS ledger_key_ts; DROP INDEX IF EXISTS ledger_account_ts;"
    "DROP INDEX IF EXISTS ledger_provider_ts; DROP INDEX IF EXISTS ledger_model_ts;"
    "DELETE FROM ledger_minute;"
    "INSERT INTO ledger_minute(" SUMMARY_COLS_V3 ") SELECT ts_ms/60000-(ts_ms%60000<0),coalesce(key_name,''),"
    "coalesce(account,''),coalesce(provider,''),coalesce(model,''),count(*),total(prompt_tokens),"
    "total(completion_tokens),total(cached_tokens),total(reasoning_tokens),min(id),max(id)"
    " FROM ledger GROUP BY 1,2,3,4,5;";

/* The writer's statements for one combination of a batch: the plain update when the
 * combination already has its minute's row (every batch but the first in each minute),
 * else the upsert.  Measured under callgrind (SQLite 3.40), updating an existing summary
 * row costs about 12k instructions this way, 17k as an upsert, and 20k as an upsert into a
 * WITHOUT ROWID table (whose update also touches the four filter indexes), hence a rowid
 * table and the update first.  The writer is the file's only writer, so update-then-
 * insert cannot race. */
#define SUMMARY_COLS                                                                                 \
    "minute,key_id,account,provider,model,requests,prompt_tokens,completion_tokens,cached_tokens," \
    "reasoning_tokens,min_id,max_id"

static const char update_sql[] =
    "UPDATE ledger_minute SET requests=requests+?6,prompt_tokens=prompt_tokens+?7,completion_tokens=completion_tokens+?8,"
    "cached_tokens=cached_tokens+?9,reasoning_tokens=reasoning_tokens+?10,min_id=min(min_id,?11),max_id=max(max_id,?12)"
    " WHERE minute=?1 AND key_id=?2 AND account=?3 AND provider=?4 AND model=?5";
static const char upsert_sql[] =
    "INSERT INTO ledger_minute(" SUMMARY_COLS ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT(minute,key_id,account,provider,model) DO UPDATE SET requests=requests+excluded.requests,"
    "prompt_tokens=prompt_tokens+excluded.prompt_tokens,completion_tokens=completion_tokens+excluded.completion_tokens,"
    "cached_tokens=cached_tokens+excluded.cached_tokens,reasoning_tokens=reasoning_tokens+excluded.reasoning_tokens,"
    "min_id=min(min_id,excluded.min_id),max_id=max(max_id,excluded.max_id)";

static const char state_sql[] =
    "INSERT INTO account_state(account,data,updated_ms) VALUES(?1,?2,?3)"
    " ON CONFLICT(account) DO UPDATE SET data=excluded.data,updated_ms=excluded.updated_ms";

/* Rows and manual resets reach the writer in any order (it drains the workers' rings one
 * after the other, and a reset is posted by the worker that served it), so the counters
 * merge by generation (keyquota.h): a newer generation replaces the stored amount (a reset,
 * or a row settled after one whose message is still on its way), the same generation adds,
 * an older one is dropped.  Generations are 6 bits and compared modulo 64 (a row lags a
 * reset by milliseconds, not by 32 resets).  Commutative, so a batch may be summed first. */
#define NEWER_GEN(a, b) "((" a " - " b ") & 63) BETWEEN 1 AND 31"
static const char key_window_sql[] =
    "INSERT INTO key_window(key_id,policy,window,used,gen) VALUES(?1,?2,?3,?4,?5)"
    " ON CONFLICT(key_id,policy,window) DO UPDATE SET"
    " used=CASE WHEN excluded.gen=key_window.gen THEN used+excluded.used ELSE excluded.used END,gen=excluded.gen"
    " WHERE excluded.gen=key_window.gen OR " NEWER_GEN("excluded.gen", "key_window.gen");
static const char key_total_sql[] =
    "INSERT INTO key_total(key_id,used) VALUES(?1,?2) ON CONFLICT(key_id) DO UPDATE SET used=used+excluded.used";

/* The key's pause, by the same rule on the reset epoch (17 bits): a newer epoch replaces
 * (a reset ends the pause: policy 0), and within an epoch a pause only gets stronger (a
 * manual one, until 0, beats any; a later end beats an earlier), since rows of one batch
 * come worker by worker, not in time order.  A pause whose end has passed is ended by the
 * first request after a restart. */
#define NEWER_EPOCH(a, b) "((" a " - " b ") & 131071) BETWEEN 1 AND 65535"
static const char key_pause_sql[] =
    "INSERT INTO key_pause(key_id,policy,until_ms,epoch) VALUES(?1,?2,?3,?4)"
    " ON CONFLICT(key_id) DO UPDATE SET policy=excluded.policy,until_ms=excluded.until_ms,epoch=excluded.epoch"
    " WHERE " NEWER_EPOCH("excluded.epoch", "key_pause.epoch") " OR (excluded.epoch=key_pause.epoch AND"
    " excluded.policy!=0 AND (key_pause.policy=0 OR (key_pause.until_ms!=0 AND"
    " (excluded.until_ms=0 OR excluded.until_ms>key_pause.until_ms))))";

static const char insert_sql[] =
    "INSERT INTO ledger(ts_ms,request_id,key_name,provider,account,model,endpoint,stream,status,error,"
    "prompt_tokens,completion_tokens,cached_tokens,cache_write_tokens,reasoning_tokens,usage_source,attempts,"
    "ttfb_ms,total_ms,key_id) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

static bool present(const char *s) { return s && *s; }

/* The summary's minute of a ts_ms: floor division (also for a negative ts_ms). */
static int64_t minute_of(int64_t ts) { return ts / MINUTE_MS - (ts % MINUTE_MS < 0); }

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
    bind_text(st, 20, r->key_id);
    return sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
}

/* The key counters the rows of a batch settled, merged per (key, policy, window) and per
 * key's total by the rule of key_window_sql, then written in the batch's transaction: a
 * restart restores exactly what the committed rows charged (a request in flight at a crash
 * has no row, so its reservation is not charged after the restart).  A busy key's batch of
 * a hundred rows costs three upserts, not three hundred. */
#define KEY_AGG_MAX 256
#define PAUSE_ENTRY INT64_MIN     /* a key_agg entry that carries the key's pause, not a window */
typedef struct key_agg {
    const char *key;                 /* into a pending message: alive until the batch commits */
    uint64_t policy;                 /* 0: the key's total (or, in a pause entry, not paused) */
    int64_t window, used;            /* a pause entry: PAUSE_ENTRY, the pause's end */
    uint32_t gen;                    /* the window's generation, or the pause's reset epoch */
} key_agg;

static bool newer_gen(uint32_t a, uint32_t b) { uint32_t d = (a - b) & 63; return d >= 1 && d <= 31; }
static bool newer_epoch(uint32_t a, uint32_t b) { uint32_t d = (a - b) & 131071; return d >= 1 && d <= 65535; }

/* key_pause_sql's rule: does pause entry n replace a? */
static bool pause_replaces(const key_agg *n, const key_agg *a)
{
    if (newer_epoch(n->gen, a->gen)) return true;
    return n->gen == a->gen && n->policy && (!a->policy || (a->used != 0 && (n->used == 0 || n->used > a->used)));
}

static int key_agg_flush(qg_ledger *l)
{
    for (size_t i = 0; i < l->n_kagg; i++) {
        const key_agg *a = &l->kagg[i];
        sqlite3_stmt *st = a->window == PAUSE_ENTRY ? l->key_pause : a->policy ? l->key_window : l->key_total;
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, a->key, -1, SQLITE_STATIC);
        if (a->window == PAUSE_ENTRY) {
            sqlite3_bind_int64(st, 2, (int64_t)a->policy);
            sqlite3_bind_int64(st, 3, a->used);
            sqlite3_bind_int64(st, 4, a->gen);
        } else if (a->policy) {
            sqlite3_bind_int64(st, 2, (int64_t)a->policy);
            sqlite3_bind_int64(st, 3, a->window);
            sqlite3_bind_int64(st, 4, a->used);
            sqlite3_bind_int64(st, 5, a->gen);
        } else {
            sqlite3_bind_int64(st, 2, a->used);
        }
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) return -1;
    }
    l->n_kagg = 0;
    return 0;
}

static int key_agg_add(qg_ledger *l, const key_agg *n)
{
    bool pause = n->window == PAUSE_ENTRY;
    for (size_t i = 0; i < l->n_kagg; i++) {
        key_agg *a = &l->kagg[i];
        if (a->policy != n->policy && !(pause && a->window == PAUSE_ENTRY)) continue;
        if (a->window != n->window || strcmp(a->key, n->key) != 0) continue;
        if (pause) {
            if (pause_replaces(n, a)) *a = *n;
        } else if (a->gen == n->gen) {
            a->used += n->used;
        } else if (newer_gen(n->gen, a->gen)) {
            *a = *n;
        }
        return 0;
    }
    if (l->n_kagg == KEY_AGG_MAX && key_agg_flush(l) < 0) return -1;
    if (!l->kagg) l->kagg = qg_xcalloc(KEY_AGG_MAX, sizeof *l->kagg);
    l->kagg[l->n_kagg++] = *n;
    return 0;
}

static int save_key_counters(qg_ledger *l, const qg_ledger_row *r)
{
    for (int i = 0; i < r->n_key_windows && i < 16; i++) {
        /* nothing to add; a newer generation with 0 would only repeat its reset's message */
        if (!r->key_windows[i].used) continue;
        key_agg a = {r->key_id, r->key_windows[i].policy, r->key_windows[i].window, r->key_windows[i].used,
                     r->key_windows[i].gen};
        if (key_agg_add(l, &a) < 0) return -1;
    }
    /* An unpaused row of a key never reset says nothing; one of a key reset before carries
     * its epoch, so a row that reaches the store before its reset's message (and a crash
     * that loses the message) still ends the older pause. */
    if (r->key_state && (r->key_pause_policy || r->key_epoch)) {
        key_agg a = {r->key_id, r->key_pause_policy, PAUSE_ENTRY, r->key_pause_until, r->key_epoch};
        if (key_agg_add(l, &a) < 0) return -1;
    }
    if (!r->key_total_usd) return 0;
    return key_agg_add(l, &(key_agg){r->key_id, 0, 0, r->key_total_usd, 0});
}

/* A reset: the same merge, as entries whose generation and epoch are newer than any row
 * settled before it (rare: an operator's action). */
static int reset_key(qg_ledger *l, const key_reset_msg *m)
{
    for (int i = 0; i < m->n; i++)
        if (key_agg_add(l, &(key_agg){m->key, m->policy[i], m->window[i], 0, m->gen[i]}) < 0) return -1;
    return key_agg_add(l, &(key_agg){m->key, 0, PAUSE_ENTRY, 0, m->epoch});
}

static int save_state(qg_ledger *l, const state_msg *m)
{
    sqlite3_stmt *st = l->state;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, m->account, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, m->text, (int)m->len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, m->ts_ms);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Starts the aggregation of a batch of n rows (every attempt starts afresh). */
static void agg_begin(qg_ledger *l, size_t n)
{
    if (l->agg_cap < n) {
        l->agg = qg_xrealloc(l->agg, n * sizeof *l->agg);
        l->agg_cap = n;
    }
    size_t want = 16;
    while (want < 2 * n) want <<= 1;
    if (l->slots_cap < want) {
        free(l->slots);
        l->slots = qg_xmalloc(want * sizeof *l->slots);
        l->slots_cap = want;
    }
    memset(l->slots, 0, want * sizeof *l->slots); /* this batch's part only: O(rows) */
    l->slots_mask = want - 1;
    l->n_agg = 0;
}

static bool same_group(const minute_agg *a, const qg_ledger_row *r, int64_t minute)
{
    return a->minute == minute && strcmp(a->r->key_id, r->key_id) == 0 && strcmp(a->r->model, r->model) == 0 &&
           strcmp(a->r->account, r->account) == 0 && strcmp(a->r->provider, r->provider) == 0;
}

static uint32_t fnv(uint32_t h, const char *s)
{
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return (h ^ 0xffu) * 16777619u; /* a separator: ("ab","c") and ("a","bc") differ */
}

static int64_t add_sat(int64_t a, int64_t b)
{
    int64_t s;
    return __builtin_add_overflow(a, b, &s) ? (b > 0 ? INT64_MAX : INT64_MIN) : s;
}

/* Adds a row just inserted as `id`.  Consecutive rows of one combination (the usual case)
 * skip the hash; otherwise one open-addressing probe sequence. */
static void agg_add(qg_ledger *l, const qg_ledger_row *r, int64_t id)
{
    int64_t minute = minute_of(r->ts_ms);
    minute_agg *a = l->n_agg ? &l->agg[l->last_agg] : NULL;
    if (!a || !same_group(a, r, minute)) {
        uint32_t h = 2166136261u;
        h = (h ^ (uint32_t)minute) * 16777619u;
        h = (h ^ (uint32_t)((uint64_t)minute >> 32)) * 16777619u;
        h = fnv(fnv(fnv(fnv(h, r->key_id), r->account), r->provider), r->model);
        for (size_t i = h & l->slots_mask;; i = (i + 1) & l->slots_mask) {
            uint32_t s = l->slots[i];
            if (!s) {
                a = &l->agg[l->n_agg++];
                *a = (minute_agg){.r = r, .minute = minute, .hash = h, .min_id = id, .max_id = id};
                l->slots[i] = (uint32_t)l->n_agg;
                break;
            }
            a = &l->agg[s - 1];
            if (a->hash == h && same_group(a, r, minute)) break;
        }
        l->last_agg = (size_t)(a - l->agg);
    }
    a->requests++;
    a->prompt = add_sat(a->prompt, r->prompt_tokens);
    a->completion = add_sat(a->completion, r->completion_tokens);
    a->cached = add_sat(a->cached, r->cached_tokens);
    a->reasoning = add_sat(a->reasoning, r->reasoning_tokens);
    a->min_id = QG_MIN(a->min_id, id);
    a->max_id = QG_MAX(a->max_id, id);
}

static int step_minute(sqlite3_stmt *st, const minute_agg *a)
{
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, a->minute);
    sqlite3_bind_text(st, 2, a->r->key_id, -1, SQLITE_STATIC); /* '' for absent, never NULL */
    sqlite3_bind_text(st, 3, a->r->account, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, a->r->provider, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, a->r->model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, a->requests);
    sqlite3_bind_int64(st, 7, a->prompt);
    sqlite3_bind_int64(st, 8, a->completion);
    sqlite3_bind_int64(st, 9, a->cached);
    sqlite3_bind_int64(st, 10, a->reasoning);
    sqlite3_bind_int64(st, 11, a->min_id);
    sqlite3_bind_int64(st, 12, a->max_id);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* One upsert per distinct combination of the batch, inside its transaction. */
static int upsert_minutes(qg_ledger *l)
{
    for (size_t i = 0; i < l->n_agg; i++) {
        const minute_agg *a = &l->agg[i];
        if (step_minute(l->update, a) < 0) return -1;
        if (sqlite3_changes(l->db) == 0 && step_minute(l->upsert, a) < 0) return -1;
    }
    return 0;
}

/* Commits every pending row, and their summary, in one transaction; keeps them for the
 * next tick on failure. */
static void flush_pending(qg_ledger *l)
{
    char why[128];
    if (!l->pending) return;
    if (sqlite3_exec(l->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) goto fail;
    agg_begin(l, l->n_pending);
    l->n_kagg = 0;
    int64_t rows = 0;
    for (ledger_msg *m = l->pending; m; m = m->next) {
        if (m->kind == MSG_STATE) {
            if (save_state(l, (state_msg *)m) < 0) goto rollback;
            continue;
        }
        if (m->kind == MSG_KEY_RESET) {
            if (reset_key(l, (key_reset_msg *)m) < 0) goto rollback;
            continue;
        }
        const qg_ledger_row *r = &((row_msg *)m)->row;
        if (insert_row(l, r) < 0 || save_key_counters(l, r) < 0) goto rollback;
        agg_add(l, r, sqlite3_last_insert_rowid(l->db));
        rows++;
    }
    if (upsert_minutes(l) < 0 || key_agg_flush(l) < 0) goto rollback;
    if (sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto rollback;
    sqlite3_reset(l->insert);
    atomic_fetch_add(&l->rows_written, rows);
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


#define ROW_COLS                                                                                        \
    "ts_ms,request_id,key_id,key_name,provider,account,model,endpoint,stream,status,error,prompt_tokens,"      \
    "completion_tokens,cached_tokens,cache_write_tokens,reasoning_tokens,usage_source,attempts,ttfb_ms," \
    "total_ms"

static bool has_column_filter(const qg_usage_query *q)
{
    return present(q->key_id) || present(q->account) || present(q->provider) || present(q->model);
}

static bool has_time_filter(const qg_usage_query *q) { return q->since_ms != 0 || q->until_ms != 0; }

/* A WHERE clause of the conditions that are on. */
typedef struct {
    qg_buf *b;
    const char *sep;
} where_b;

static void cond(where_b *w, bool on, const char *c)
{
    if (!on) return;
    qg_buf_puts(w->b, w->sep);
    qg_buf_puts(w->b, c);
    w->sep = " AND ";
}

/* Only the filters present become conditions (so SQLite can pick an index); values are
 * always bound parameters with fixed numbers, never text in the SQL.  The same names
 * work on ledger and ledger_minute. */
static void column_conds(where_b *w, const qg_usage_query *q)
{
    cond(w, present(q->key_id), "key_id=?1");
    cond(w, present(q->account), "account=?2");
    cond(w, present(q->provider), "provider=?3");
    cond(w, present(q->model), "model=?4");
}

/* The summary rows of the whole minutes inside [since, until) that match the filters. */
static void summary_where(qg_buf *b, const qg_usage_query *q)
{
    where_b w = {b, " WHERE "};
    column_conds(&w, q);
    cond(&w, q->since_ms != 0, "minute>=?8");
    cond(&w, q->until_ms != 0, "minute<=?9");
}

#define SUM_TOKENS "total(prompt_tokens),total(completion_tokens),total(cached_tokens),total(reasoning_tokens)"

/* The matching rows of one edge through ledger_ts: less than a minute of ts_ms (or, when
 * no whole minute lies inside [since, until), that whole range of less than two minutes). */
static void edge_part(qg_buf *b, const qg_usage_query *q, const char *range, int part)
{
    qg_buf_puts(b, " UNION ALL SELECT count(*)," SUM_TOKENS ",min(id),max(id),count(*)>0,");
    qg_buf_put_int(b, part);
    qg_buf_puts(b, " FROM ledger INDEXED BY ledger_ts");
    where_b w = {b, " WHERE "};
    column_conds(&w, q);
    cond(&w, true, range);
}

char *qg_ledger_query_sql(const qg_usage_query *q, bool totals)
{
    qg_buf b;
    qg_buf_init(&b, 0);
    if (totals) {
        /* Part 0: the whole minutes, from the summary; parts 1 and 2: the partial minutes at
         * the since and the until edge, from the rows. */
        qg_buf_puts(&b, "SELECT coalesce(sum(requests),0)," SUM_TOKENS ",min(min_id),max(max_id),count(*),0"
                        " FROM ledger_minute");
        summary_where(&b, q);
        if (q->since_ms) edge_part(&b, q, "ts_ms>=?10 AND ts_ms<=?11", 1);
        if (q->until_ms) edge_part(&b, q, "ts_ms>=?12 AND ts_ms<=?13", 2);
    } else if (!has_column_filter(q) && !has_time_filter(q)) {
        qg_buf_puts(&b, "SELECT " ROW_COLS " FROM ledger ORDER BY id DESC LIMIT ?7");
    } else {
        /* Newest first by rowid inside an id range that holds every match (the totals give
         * the lowest and highest id), so the walk stops after `limit` matches or at the
         * lowest.  NOT INDEXED keeps the planner off ledger_ts (which would need a sort of
         * every match); a rowid range is still used. */
        qg_buf_puts(&b, "SELECT " ROW_COLS " FROM ledger NOT INDEXED WHERE id>=?14 AND id<=?15");
        where_b w = {&b, " AND "};
        column_conds(&w, q);
        cond(&w, q->since_ms != 0, "ts_ms>=?5");
        cond(&w, q->until_ms != 0, "ts_ms<?6");
        qg_buf_puts(&b, " ORDER BY id DESC LIMIT ?7");
    }
    qg_buf_append(&b, "", 1);
    return b.data;
}

/* The id range of each matching summary row (for a rare filter's rows). */
static char *ranges_sql(const qg_usage_query *q)
{
    qg_buf b;
    qg_buf_init(&b, 0);
    qg_buf_puts(&b, "SELECT min_id,max_id FROM ledger_minute");
    summary_where(&b, q);
    qg_buf_append(&b, "", 1);
    return b.data;
}

__extension__ typedef __int128 i128;

/* [since, until) cut at minute boundaries: whole minutes [m_first, m_last] (from the
 * summary) and the ts_ms ranges [left_lo, left_hi] at the since edge and [right_lo,
 * right_hi] at the until edge (from the rows), all inclusive; an empty range is (1, 0).
 * With no whole minute (both ends inside less than two minutes), the since edge is the
 * whole range.  Open ends have no edge. */
typedef struct {
    int64_t m_first, m_last;
    int64_t left_lo, left_hi;
    int64_t right_lo, right_hi;
} time_split;

/* [a, b] within int64 (no ts_ms lies outside it), or (1, 0) if empty. */
static void set_range(int64_t *lo, int64_t *hi, i128 a, i128 b)
{
    if (a < INT64_MIN) a = INT64_MIN;
    if (b > INT64_MAX) b = INT64_MAX;
    if (a > b) a = 1, b = 0;
    *lo = (int64_t)a;
    *hi = (int64_t)b;
}

static void split_time(const qg_usage_query *q, time_split *s)
{
    bool since = q->since_ms != 0, until = q->until_ms != 0;
    int64_t first = since ? minute_of(q->since_ms) + (q->since_ms % MINUTE_MS != 0) : INT64_MIN;
    int64_t last = until ? minute_of(q->until_ms) - 1 : INT64_MAX;
    bool whole = first <= last;
    set_range(&s->m_first, &s->m_last, first, last);
    if (since)
        set_range(&s->left_lo, &s->left_hi, q->since_ms, whole ? (i128)first * MINUTE_MS - 1 : (i128)q->until_ms - 1);
    if (until) {
        if (whole) set_range(&s->right_lo, &s->right_hi, (i128)(last + 1) * MINUTE_MS, (i128)q->until_ms - 1);
        else s->right_lo = 1, s->right_hi = 0;
    }
}

/* Binds ?1..?6 and ?8..?13; a number the statement does not have is ignored. */
static void bind_filters(sqlite3_stmt *st, const qg_usage_query *q, const time_split *sp)
{
    if (present(q->key_id)) sqlite3_bind_text(st, 1, q->key_id, -1, SQLITE_STATIC);
    if (present(q->account)) sqlite3_bind_text(st, 2, q->account, -1, SQLITE_STATIC);
    if (present(q->provider)) sqlite3_bind_text(st, 3, q->provider, -1, SQLITE_STATIC);
    if (present(q->model)) sqlite3_bind_text(st, 4, q->model, -1, SQLITE_STATIC);
    if (q->since_ms) {
        sqlite3_bind_int64(st, 5, q->since_ms);
        sqlite3_bind_int64(st, 8, sp->m_first);
        sqlite3_bind_int64(st, 10, sp->left_lo);
        sqlite3_bind_int64(st, 11, sp->left_hi);
    }
    if (q->until_ms) {
        sqlite3_bind_int64(st, 6, q->until_ms);
        sqlite3_bind_int64(st, 9, sp->m_last);
        sqlite3_bind_int64(st, 12, sp->right_lo);
        sqlite3_bind_int64(st, 13, sp->right_hi);
    }
}

static int prepare_sql(qg_ledger *l, char *sql, const qg_usage_query *q, const time_split *sp, sqlite3_stmt **st)
{
    int rc = sqlite3_prepare_v2(l->rdb, sql, -1, st, NULL);
    free(sql);
    if (rc != SQLITE_OK) return -1;
    bind_filters(*st, q, sp);
    return 0;
}

/* Appends the rows a rows statement returns; *n counts the rows of the whole answer. */
static int append_rows(qg_buf *b, sqlite3_stmt *st, int *n)
{
    static const char *const cols[] = {"ts_ms", "request_id", "key", "key_name", "provider", "account", "model", "endpoint",
                                       "stream", "status", "error", "prompt_tokens", "completion_tokens",
                                       "cached_tokens", "cache_write_tokens", "reasoning_tokens", "usage_source",
                                       "attempts", "ttfb_ms", "total_ms"};
    int rc;
    for (; (rc = sqlite3_step(st)) == SQLITE_ROW; (*n)++) {
        qg_buf_append(b, *n ? ",{" : "{", *n ? 2 : 1);
        for (int c = 0; c < (int)QG_ARRAY_LEN(cols); c++) {
            qg_buf_appendf(b, "%s\"%s\":", c ? "," : "", cols[c]);
            int t = sqlite3_column_type(st, c);
            if (c == 8) qg_buf_append(b, sqlite3_column_int(st, c) ? "true" : "false", sqlite3_column_int(st, c) ? 4 : 5);
            else if (t == SQLITE_INTEGER) qg_buf_appendf(b, "%lld", (long long)sqlite3_column_int64(st, c));
            else if (t == SQLITE_FLOAT) qg_buf_appendf(b, "%.3f", sqlite3_column_double(st, c));
            else qg_buf_json_str(b, (const char *)sqlite3_column_text(st, c));
        }
        qg_buf_append(b, "}", 1);
    }
    return rc == SQLITE_DONE ? 0 : -1;
}

/* One part of the totals statement. */
typedef struct {
    int64_t requests, min_id, max_id, groups;
    double tokens[4];
} totals_part;

typedef struct {
    int64_t lo, hi;
} id_range;

static int by_hi_desc(const void *a, const void *b)
{
    const id_range *x = a, *y = b;
    return x->hi < y->hi ? 1 : x->hi > y->hi ? -1 : 0;
}

/* The rows of a rare filter: the id ranges of its summary rows and edges, merged where they
 * overlap or touch, newest first, each read newest first until `limit` rows are out.  The
 * merged ranges are disjoint and visited in falling id order, so the rows come out in id
 * order without a sort and without duplicates; every match lies in one of them. */
static int rows_by_ranges(qg_ledger *l, const qg_usage_query *q, const time_split *sp, const totals_part *part,
                          qg_buf *b, int *n)
{
    sqlite3_stmt *st = NULL;
    size_t cap = (size_t)QG_MAX(part[0].groups, 0) + 2, nr = 0;
    id_range *r = qg_xmalloc(cap * sizeof *r);
    int rc = -1;
    if (prepare_sql(l, ranges_sql(q), q, sp, &st) < 0) goto out;
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        if (nr + 2 >= cap) r = qg_xrealloc(r, (cap *= 2) * sizeof *r); /* same snapshot: only if counted wrong */
        r[nr++] = (id_range){sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1)};
    }
    if (src != SQLITE_DONE) goto out;
    sqlite3_finalize(st);
    st = NULL;
    for (int k = 1; k <= 2; k++)
        if (part[k].requests > 0) r[nr++] = (id_range){part[k].min_id, part[k].max_id};
    qsort(r, nr, sizeof *r, by_hi_desc);
    if (prepare_sql(l, qg_ledger_query_sql(q, false), q, sp, &st) < 0) goto out;
    for (size_t i = 0; i < nr && *n < q->limit;) {
        int64_t lo = r[i].lo, hi = r[i].hi;
        for (i++; i < nr && (lo == INT64_MIN || r[i].hi >= lo - 1); i++) lo = QG_MIN(lo, r[i].lo);
        sqlite3_reset(st);
        sqlite3_bind_int(st, 7, q->limit - *n);
        sqlite3_bind_int64(st, 14, lo);
        sqlite3_bind_int64(st, 15, hi);
        if (append_rows(b, st, n) < 0) goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    free(r);
    return rc;
}

/* Runs on the query thread.  Totals and rows are read in one transaction (one snapshot). */
static void run_query(qg_ledger *l, query_msg *qm)
{
    const qg_usage_query *q = &qm->q;
    qg_buf *b = &qm->result;
    sqlite3_stmt *st = NULL;
    bool in_txn = false;
    time_split sp = {0};
    qm->status = 500;
    if (has_time_filter(q)) split_time(q, &sp);
    if (sqlite3_exec(l->rdb, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) goto fail;
    in_txn = true;

    totals_part part[3] = {{0}};
    int64_t requests = 0, lo = INT64_MAX, hi = INT64_MIN;
    double tokens[4] = {0};
    if (prepare_sql(l, qg_ledger_query_sql(q, true), q, &sp, &st) < 0) goto fail;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int k = sqlite3_column_int(st, 8);
        if (k < 0 || k > 2) goto fail;
        totals_part *p = &part[k];
        p->requests = sqlite3_column_int64(st, 0);
        for (int t = 0; t < 4; t++) tokens[t] += p->tokens[t] = sqlite3_column_double(st, 1 + t);
        p->groups = sqlite3_column_int64(st, 7);
        requests += p->requests;
        if (p->requests > 0 && sqlite3_column_type(st, 5) != SQLITE_NULL) {
            p->min_id = sqlite3_column_int64(st, 5);
            p->max_id = sqlite3_column_int64(st, 6);
            lo = QG_MIN(lo, p->min_id);
            hi = QG_MAX(hi, p->max_id);
        }
    }
    if (rc != SQLITE_DONE) goto fail;
    sqlite3_finalize(st);
    st = NULL;
    qg_buf_appendf(b, "{\"totals\":{\"requests\":%lld,\"prompt_tokens\":%.0f,\"completion_tokens\":%.0f,"
                      "\"cached_tokens\":%.0f,\"reasoning_tokens\":%.0f},\"rows\":[",
                   (long long)requests, tokens[0], tokens[1], tokens[2], tokens[3]);

    int n = 0;
    if (!has_column_filter(q) && !has_time_filter(q)) {
        if (prepare_sql(l, qg_ledger_query_sql(q, false), q, &sp, &st) < 0) goto fail;
        sqlite3_bind_int(st, 7, q->limit);
        if (append_rows(b, st, &n) < 0) goto fail;
    } else if (requests > 0 && lo <= hi) {
        /* One range reads about span * limit / matches rows (span, if all fit in a page);
         * the summary's ranges cost a seek each but skip the rows of other combinations. */
        int path = atomic_load_explicit(&l->rows_path, memory_order_relaxed);
        int64_t ranges = part[0].groups + (part[1].requests > 0) + (part[2].requests > 0);
        double span = (double)hi - (double)lo + 1;
        double one = requests > q->limit ? span * q->limit / (double)requests : span;
        bool by_ranges = path == 2 ||
                         (path == 0 && ranges <= LEDGER_MAX_RANGES && (double)ranges * RANGES_COST_RATIO < one);
        if (by_ranges) {
            if (rows_by_ranges(l, q, &sp, part, b, &n) < 0) goto fail;
        } else {
            if (prepare_sql(l, qg_ledger_query_sql(q, false), q, &sp, &st) < 0) goto fail;
            sqlite3_bind_int(st, 7, q->limit);
            sqlite3_bind_int64(st, 14, lo);
            sqlite3_bind_int64(st, 15, hi);
            if (append_rows(b, st, &n) < 0) goto fail;
        }
    }
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

/* quota_counter_drift: each probe's in-memory amount against the store's counter for the
 * same (key, policy, window), which the writer keeps from the committed rows. */
static void run_check(qg_ledger *l, query_msg *qm)
{
    sqlite3_stmt *st;
    int64_t drift = 0, drifted = 0;
    if (sqlite3_prepare_v2(l->rdb, "SELECT used FROM key_window WHERE key_id=?1 AND policy=?2 AND window=?3", -1, &st,
                           NULL) != SQLITE_OK) {
        qm->status = 500;
        qg_buf_appendf(&qm->result, "{\"error\":{\"message\":\"store: %s\",\"type\":\"api_error\",\"code\":\"store_error\"}}",
                       sqlite3_errmsg(l->rdb));
        return;
    }
    for (size_t i = 0; i < qm->n_probes; i++) {
        const qg_counter_probe *p = &qm->probes[i];
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, p->key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (int64_t)p->policy);
        sqlite3_bind_int64(st, 3, p->window);
        int64_t stored = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
        int64_t d = stored > p->used ? stored - p->used : p->used - stored;
        drift += d;
        drifted += d != 0;
        if (d) qg_warn("quota_counter_drift: key %s policy %llx window %lld: counter %lld, store %lld", p->key,
                       (unsigned long long)p->policy, (long long)p->window, (long long)p->used, (long long)stored);
    }
    sqlite3_finalize(st);
    qm->status = 200;
    qg_buf_appendf(&qm->result, "{\"quota_counter_drift\":%lld,\"windows_checked\":%zu,\"windows_drifted\":%lld,"
                                "\"keys_in_flight\":%d}",
                   (long long)drift, qm->n_probes, (long long)drifted, qm->skipped);
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

static void answer(void *ctx, int w, void *msg)
{
    qg_ledger *l = ctx;
    query_msg *qm = msg;
    if (!wait_barrier(l, qm)) {
        atomic_fetch_add(&l->queries_late, 1);
        qg_warn("ledger: a query waited %d ms for earlier rows to be committed; running it without them",
                LEDGER_QUERY_BARRIER_MS);
    }
    if (qm->probes) run_check(l, qm);
    else run_query(l, qm);
    atomic_fetch_add(&l->queries_served, 1);
    qg_mailbox_reply(&l->qmb, w, qm);
}

static void *reader_main(void *arg)
{
    qg_ledger *l = arg;
    qg_mailbox_serve(&l->qmb, &l->stop_reader, answer, l);
    return NULL;
}

static void query_msg_free(query_msg *m)
{
    qg_buf_free(&m->result);
    free(m->probes);
    free(m->q.key_id), free(m->q.account), free(m->q.provider), free(m->q.model);
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

/* Version 4: keys have stable ids (admin-managed keys in the store).  Rows gain key_id (a
 * version-3 row's is its key's name: static keys' ids are their names), the summary and the
 * key counters name keys by id, and the key tables api_key / api_key_policy appear
 * (keystore.c).  Amounts are integers: limit_amount and total_quota_micro in the unit
 * (micro-USD for usd). */
static const char schema_v4_keys[] =
    "CREATE TABLE IF NOT EXISTS api_key ("
    " id TEXT PRIMARY KEY, name TEXT NOT NULL, hash BLOB NOT NULL UNIQUE, prefix TEXT NOT NULL,"
    " status TEXT NOT NULL, expires_ms INTEGER, total_quota_micro INTEGER, models TEXT,"
    " created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS api_key_policy ("
    " key_id TEXT NOT NULL, idx INTEGER NOT NULL, period TEXT NOT NULL, period_kind INTEGER NOT NULL,"
    " minutes INTEGER NOT NULL, limit_amount INTEGER NOT NULL, unit TEXT NOT NULL, anchor TEXT NOT NULL,"
    " anchor_ms INTEGER NOT NULL, anchor_offset_min INTEGER NOT NULL, boundary TEXT NOT NULL,"
    " on_exhausted TEXT NOT NULL, auto_resume INTEGER NOT NULL, PRIMARY KEY(key_id, idx));";

static int64_t count_of(sqlite3 *db, const char *sql);

static bool has_column(sqlite3 *db, const char *table, const char *column)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pragma_table_info('%s') WHERE name='%s'", table, column);
    return count_of(db, sql) > 0;
}

/* Version 3 -> 4, column by column (each step only where it is still to do). */
static int migrate_v4(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    static const char *const renamed[] = {"ledger_minute", "key_window", "key_total", "key_pause"};
    char sql[200];
    if (!has_column(db, "ledger", "key_id") && exec_sql(db, "ALTER TABLE ledger ADD COLUMN key_id TEXT", path, err, errlen) < 0)
        return -1;
    if (exec_sql(db, "UPDATE ledger SET key_id=key_name WHERE key_id IS NULL", path, err, errlen) < 0) return -1;
    for (size_t i = 0; i < QG_ARRAY_LEN(renamed); i++) {
        if (!has_column(db, renamed[i], "key_name")) continue;
        snprintf(sql, sizeof sql, "ALTER TABLE %s RENAME COLUMN key_name TO key_id", renamed[i]);
        if (exec_sql(db, sql, path, err, errlen) < 0) return -1;
    }
    return exec_sql(db, schema_v4_keys, path, err, errlen);
}

/* Version 4 -> 5: key_window gains the window's generation and key_pause the key's reset
 * epoch (manual resets; the merge rule at key_window_sql).  Existing counters are of
 * generation 0, epoch 0, as a key never reset. */
static int migrate_v5(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    if (!has_column(db, "key_window", "gen") &&
        exec_sql(db, "ALTER TABLE key_window ADD COLUMN gen INTEGER NOT NULL DEFAULT 0", path, err, errlen) < 0)
        return -1;
    if (!has_column(db, "key_pause", "epoch") &&
        exec_sql(db, "ALTER TABLE key_pause ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0", path, err, errlen) < 0)
        return -1;
    return 0;
}

static int64_t count_of(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t n = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* Creates or migrates the schema to LEDGER_SCHEMA_VERSION, one step per version in one
 * transaction: a new file runs every step (cheap on empty tables).  From version 1 or 2,
 * the per-row filter indexes are dropped and ledger_minute filled from the existing rows
 * with one GROUP BY; from 3, the key id columns and key tables are added (start-up; on a
 * large file this takes a while, and says so in the log); from 4, the key counters'
 * generation and epoch columns. */
static int setup_schema(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    if (exec_sql(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", path, err, errlen) < 0) return -1;
    int version = (int)count_of(db, "PRAGMA user_version");
    if (version < 0) {
        snprintf(err, errlen, "store: %s: %s", path, sqlite3_errmsg(db));
        return -1;
    }
    if (version > LEDGER_SCHEMA_VERSION) {
        snprintf(err, errlen, "store: %s has schema version %d; this build knows versions up to %d", path, version,
                 LEDGER_SCHEMA_VERSION);
        return -1;
    }
    if (version == LEDGER_SCHEMA_VERSION) return 0;
    int64_t t0 = qg_mono_ms();
    if (exec_sql(db, "BEGIN", path, err, errlen) < 0) return -1;
    /* version 3's tables (IF NOT EXISTS: a version-3 file may lack the key counters) */
    if (exec_sql(db, schema_tables, path, err, errlen) < 0) goto rollback;
    if (version < 3 && exec_sql(db, migrate_sql, path, err, errlen) < 0) goto rollback;
    if (exec_sql(db, schema_summary_indexes, path, err, errlen) < 0) goto rollback;
    if (migrate_v4(db, path, err, errlen) < 0 || migrate_v5(db, path, err, errlen) < 0) goto rollback;
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version=%d", LEDGER_SCHEMA_VERSION);
    if (exec_sql(db, sql, path, err, errlen) < 0) goto rollback;
    int64_t rows = count_of(db, "SELECT count(*) FROM ledger");
    if (exec_sql(db, "COMMIT", path, err, errlen) < 0) goto rollback;
    if (version > 0 || rows > 0)
        qg_info("store: %s: migrated the schema from version %d to %d (%lld ledger rows) in %lld ms", path, version,
                LEDGER_SCHEMA_VERSION, (long long)rows, (long long)(qg_mono_ms() - t0));
    return 0;
rollback:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static void ledger_free(qg_ledger *l)
{
    if (l->insert) sqlite3_finalize(l->insert);
    if (l->update) sqlite3_finalize(l->update);
    if (l->upsert) sqlite3_finalize(l->upsert);
    if (l->state) sqlite3_finalize(l->state);
    if (l->key_window) sqlite3_finalize(l->key_window);
    if (l->key_total) sqlite3_finalize(l->key_total);
    if (l->key_pause) sqlite3_finalize(l->key_pause);
    free(l->agg);
    free(l->slots);
    free(l->kagg);
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
    if (sqlite3_prepare_v2(l->db, insert_sql, -1, &l->insert, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, update_sql, -1, &l->update, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, upsert_sql, -1, &l->upsert, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, state_sql, -1, &l->state, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, key_window_sql, -1, &l->key_window, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, key_total_sql, -1, &l->key_total, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db, key_pause_sql, -1, &l->key_pause, NULL) != SQLITE_OK) {
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

static void post_msg(qg_ledger *l, int w, ledger_msg *m)
{
    ledger_worker *lw = &l->w[w];
    /* Keep order: while older rows wait in overflow, newer ones queue behind them. */
    if (lw->overflow_head || !qg_mailbox_post(&l->mb, w, m, false)) {
        m->next = NULL;
        if (lw->overflow_tail) lw->overflow_tail->next = m;
        else lw->overflow_head = m;
        lw->overflow_tail = m;
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

void qg_ledger_submit(qg_ledger *l, int w, qg_ledger_row *row)
{
    row_msg *m = (row_msg *)((char *)row - offsetof(row_msg, row));
    m->m.kind = MSG_ROW;
    post_msg(l, w, &m->m);
}

void qg_ledger_save_state(qg_ledger *l, int w, const char *account, const char *text, size_t n, int64_t now_ms)
{
    state_msg *m = qg_xmalloc(sizeof *m + n + 1);
    memset(m, 0, sizeof *m);
    m->m.kind = MSG_STATE;
    qg_strlcpy(m->account, account, sizeof m->account);
    m->ts_ms = now_ms;
    m->len = n;
    memcpy(m->text, text, n);
    m->text[n] = 0;
    post_msg(l, w, &m->m);
}

void qg_ledger_reset_key(qg_ledger *l, int w, const char *key, const uint64_t *policies, const int64_t *windows,
                         const uint8_t *gens, int n, uint32_t epoch)
{
    key_reset_msg *m = qg_xcalloc(1, sizeof *m);
    m->m.kind = MSG_KEY_RESET;
    qg_strlcpy(m->key, key, sizeof m->key);
    m->n = QG_MIN(n, 16);
    m->epoch = epoch;
    for (int i = 0; i < m->n; i++) m->policy[i] = policies[i], m->window[i] = windows[i], m->gen[i] = gens[i];
    post_msg(l, w, &m->m);
}

int qg_ledger_load_key_counters(const char *path, qg_key_counter_cb cb, void *ud, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int n = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT key_id,policy,window,used,gen,0 FROM key_window"
                           " UNION ALL SELECT key_id,0,0,used,0,1 FROM key_total"
                           " UNION ALL SELECT key_id,policy,until_ms,-1,epoch,0 FROM key_pause",
                           -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        if (!k) continue;
        cb(ud, k, (uint64_t)sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
           (unsigned)sqlite3_column_int64(st, 4), sqlite3_column_int(st, 5) != 0);
        n++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

int qg_ledger_load_states(const char *path, qg_state_cb cb, void *ud, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int n = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT account,data FROM account_state", -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "store: %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *a = (const char *)sqlite3_column_text(st, 0), *d = (const char *)sqlite3_column_text(st, 1);
        if (a && d) cb(ud, a, d, (size_t)sqlite3_column_bytes(st, 1)), n++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void post_query(qg_ledger *l, int w, query_msg *m);

void qg_ledger_check_counters(qg_ledger *l, int w, qg_counter_probe *probes, size_t n, int skipped,
                              qg_ledger_result_cb cb, void *ud)
{
    query_msg *m = qg_xcalloc(1, sizeof *m + (size_t)l->n_workers * sizeof m->snap[0]);
    m->probes = probes ? probes : qg_xcalloc(1, sizeof *probes);
    m->n_probes = n;
    m->skipped = skipped;
    m->cb = cb;
    m->ud = ud;
    post_query(l, w, m);
}

void qg_ledger_query(qg_ledger *l, int w, qg_usage_query *q, qg_ledger_result_cb cb, void *ud)
{
    query_msg *m = qg_xcalloc(1, sizeof *m + (size_t)l->n_workers * sizeof m->snap[0]);
    m->q = *q;
    if (m->q.limit <= 0) m->q.limit = 100;
    if (m->q.limit > LEDGER_MAX_QUERY_ROWS) m->q.limit = LEDGER_MAX_QUERY_ROWS;
    m->cb = cb;
    m->ud = ud;
    post_query(l, w, m);
}

static void post_query(qg_ledger *l, int w, query_msg *m)
{
    /* This worker's own overflowed rows go to the ring first, so the barrier passes at the
     * writer's next drain instead of after this worker's retry timer. */
    if (l->w[w].overflow_head) qg_ledger_retry(l, w);
    m->m.kind = MSG_QUERY;
    qg_buf_init(&m->result, 0);
    for (int v = 0; v < l->n_workers; v++) m->snap[v] = atomic_load_explicit(&l->w[v].submitted, memory_order_acquire);
    if (!qg_mailbox_post(&l->qmb, w, &m->m, true)) {
        static const char busy[] = "{\"error\":{\"message\":\"ledger busy\",\"type\":\"api_error\",\"code\":\"busy\"}}";
        m->cb(m->ud, 503, busy, sizeof busy - 1);
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

void qg_ledger_test_rows_path(qg_ledger *l, int path) { atomic_store(&l->rows_path, path); }

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
    sqlite3_finalize(l->update);
    sqlite3_finalize(l->upsert);
    sqlite3_finalize(l->state);
    sqlite3_finalize(l->key_window);
    sqlite3_finalize(l->key_total);
    sqlite3_finalize(l->key_pause);
    l->update = l->upsert = l->state = l->key_window = l->key_total = l->key_pause = NULL;
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
