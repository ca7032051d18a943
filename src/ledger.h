/*
 * ledger.h — the usage ledger (SPEC §6): one row per request, written to SQLite (WAL) by a
 * dedicated writer thread in batched transactions, never by an event loop.
 *
 * Workers fill a qg_ledger_row and hand it over with qg_ledger_submit (a lock-free ring
 * push and one atomic store; no syscall).  The writer wakes every flush interval (default
 * 100 ms), drains every worker's ring and commits all rows in one transaction.  After
 * kill -9, at most the rows of the last interval are missing, and WAL keeps the file
 * consistent.  A row that finds its worker's ring full waits in that worker's overflow
 * list (re-posted by qg_ledger_retry); no row is ever dropped.  qg_ledger_backlog tells
 * how many wait, and qg_ledger_accepting turns false once that passes LEDGER_MAX_BACKLOG,
 * so the proxy can refuse new requests (503) instead of growing without bound.
 *
 * Queries (GET /admin/usage) run on a separate query thread with its own read-only
 * connection (WAL lets it read while the writer commits), so a slow query never delays a
 * commit.  A query still sees every row submitted, by any worker, before it was posted:
 * it carries a snapshot of every worker's submitted-row count, and the query thread asks
 * the writer to flush at once and waits (at most LEDGER_QUERY_BARRIER_MS, then runs
 * anyway and logs a warning) until each worker's committed count has reached it.
 * Results come back to the worker's loop through the query thread's own mailbox and the
 * notify given to qg_ledger_attach.
 *
 * Besides the rows, the file keeps a per-minute summary (table ledger_minute, schema
 * version 3): one row per (minute of ts_ms, key, account, provider, model) with the
 * request and token sums and the lowest and highest ledger id among its rows.  The writer
 * updates it once per distinct combination per batch, in the same transaction as the
 * rows, so it is always exactly the sum of the committed rows; the rows themselves carry
 * only the ts_ms index, so a row costs the writer no per-filter index maintenance.
 * Totals read whole minutes from the summary and the partial minutes at a ms-precise
 * since/until edge from the rows; the returned rows are read by id range, newest first,
 * between the lowest and highest id of the matches (or only the id ranges of the matching
 * summary rows, for a rare filter), so both stay exact.
 */
#ifndef QG_LEDGER_H
#define QG_LEDGER_H

#include "common.h"
#include "loop.h"

typedef struct qg_ledger qg_ledger;

/* Rows one worker may have waiting in its overflow list before qg_ledger_accepting says no. */
#define LEDGER_MAX_BACKLOG 65536
/* How long a query waits for the rows submitted before it to be committed. */
#define LEDGER_QUERY_BARRIER_MS 2000
/* The schema version this build writes (PRAGMA user_version); older files are migrated. */
#define LEDGER_SCHEMA_VERSION 5

typedef struct {
    int64_t ts_ms;             /* request start, epoch ms */
    char request_id[24];
    char key_id[64];           /* stable: what the counters and the summary name the key by */
    char key_name[64];         /* its name when the request was made */
    char provider[64];
    char account[64];
    char model[128];
    char endpoint[32];         /* e.g. chat.completions, messages */
    bool stream;
    int status;                /* HTTP status sent to the client (499: client went away) */
    char error[40];            /* gateway error code, or "" */
    int64_t prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens;
    char usage_source[12];     /* upstream | estimated | none */
    int attempts;
    double ttfb_ms, total_ms;
    /* The key quota this request settled (keyquota.h), saved in the same transaction as
     * the row: per policy, its signature, the window and generation it was charged to and
     * the amount. */
    int n_key_windows;
    struct {
        uint64_t policy;           /* qg_policy_signature */
        int64_t window;
        int64_t used;
        unsigned gen;              /* the window's generation (keyquota.h: one per manual reset) */
    } key_windows[16];
    int64_t key_total_usd;         /* micro-USD charged to the key's total quota */
    bool key_state;                /* the key has policies: save its pause as of this row */
    uint64_t key_pause_policy;     /* the pausing policy's signature, 0: not paused */
    int64_t key_pause_until;       /* 0: until a manual reset */
    uint32_t key_epoch;            /* the key's reset epoch the pause was read in */
} qg_ledger_row;

typedef struct {
    char *key_id, *account, *provider, *model; /* NULL: any; key_id: a key's id */
    int64_t since_ms, until_ms;                  /* 0: open */
    int limit;                                   /* rows to return (totals cover all matches) */
} qg_usage_query;

typedef struct {
    int64_t rows_written;   /* rows committed since start */
    size_t backlog;         /* rows waiting in overflow lists, all workers (approximate) */
    int64_t commits_failed; /* failed transactions (their rows were retried) */
    int64_t queries_served; /* queries answered by the query thread */
    int64_t queries_late;   /* of those, run after the barrier bound without every earlier row */
} qg_ledger_stats_t;

/* Called on the worker's loop with the JSON result (owned by the callee for the call). */
typedef void (*qg_ledger_result_cb)(void *ud, int status, const char *json, size_t len);

/* Opens (creating the directory, file and schema if needed, migrating an older schema),
 * then starts the writer and the query thread. */
qg_ledger *qg_ledger_open(const char *path, int64_t flush_ms, int n_workers, char *err, size_t errlen);
/* Registers a worker's loop notify for query replies; its callback calls qg_ledger_poll. */
void qg_ledger_attach(qg_ledger *l, int worker, qg_notify *n);
/* Rows must come from qg_ledger_row_new (zeroed); a row not submitted is freed with _free. */
qg_ledger_row *qg_ledger_row_new(void);
void qg_ledger_row_free(qg_ledger_row *row);
/* Worker side: takes ownership of a heap row.  Never blocks; if the ring is full the row
 * waits in the worker's overflow list until qg_ledger_retry. */
void qg_ledger_submit(qg_ledger *l, int worker, qg_ledger_row *row);
/* Worker side: saves an account's quota state (quota.h's text form) through the writer,
 * in order with the rows (an upsert into table account_state, the latest per account). */
void qg_ledger_save_state(qg_ledger *l, int worker, const char *account, const char *text, size_t n, int64_t now_ms);
/* Start-up (before the workers run; opens its own read-only connection): calls cb for every
 * saved account state.  Returns how many, or -1 with err set. */
typedef void (*qg_state_cb)(void *ud, const char *account, const char *text, size_t n);
int qg_ledger_load_states(const char *path, qg_state_cb cb, void *ud, char *err, size_t errlen);
/* Worker side: a manual reset of a key (POST /admin/keys/{id}/reset): its saved pause
 * ends at reset epoch `epoch` and the given policy windows' counters are 0 at their new
 * generations.  Rows and resets merge by generation (newer wins, same adds), so they may
 * reach the store in any order. */
void qg_ledger_reset_key(qg_ledger *l, int worker, const char *key, const uint64_t *policies, const int64_t *windows,
                         const uint8_t *gens, int n, uint32_t epoch);
/* Start-up: calls cb for every saved key counter: per (key, policy signature, window) the
 * amount settled and its generation, and per key the total (policy 0, window 0, in
 * micro-USD; `total` true). */
typedef void (*qg_key_counter_cb)(void *ud, const char *key, uint64_t policy, int64_t window, int64_t used, unsigned gen,
                                  bool total);
/* ... and for every key with a saved reset epoch: the same callback with used = -1, gen =
 * the epoch, policy = the pausing policy's signature (0: not paused) and window = the
 * pause's end (0: a manual reset). */
int qg_ledger_load_key_counters(const char *path, qg_key_counter_cb cb, void *ud, char *err, size_t errlen);
/* Worker side: re-posts overflowed rows (call from a timer); returns how many still wait.
 * While rows wait, logs a warning with the count at most once per 10 s per worker. */
size_t qg_ledger_retry(qg_ledger *l, int worker);
/* Worker side: rows waiting in this worker's overflow list. */
size_t qg_ledger_backlog(qg_ledger *l, int worker);
/* Worker side: false while this worker's backlog is at or past LEDGER_MAX_BACKLOG (the
 * caller should refuse new work with 503; rows already submitted are all kept). */
bool qg_ledger_accepting(qg_ledger *l, int worker);
/* Worker side: runs a query; cb runs later on this worker's loop.  Takes ownership of q's strings. */
void qg_ledger_query(qg_ledger *l, int worker, qg_usage_query *q, qg_ledger_result_cb cb, void *ud);
/* quota_counter_drift (SPEC §6): in-memory counters against the store's.  One probe per
 * (key, policy, current window) with the settled amount in memory; on the query thread,
 * after every row submitted before the call is committed, each is compared with table
 * key_window.  The JSON result has quota_counter_drift (the sum of the differences),
 * windows_checked, windows_drifted and keys_in_flight (= skipped, echoed).  Takes probes. */
typedef struct {
    char key[64];
    uint64_t policy;
    int64_t window;
    int64_t used;
} qg_counter_probe;
void qg_ledger_check_counters(qg_ledger *l, int worker, qg_counter_probe *probes, size_t n, int skipped,
                              qg_ledger_result_cb cb, void *ud);
/* Worker side: call from the worker's notify callback to deliver finished queries. */
void qg_ledger_poll(qg_ledger *l, int worker);
/* After the workers have stopped: re-posts every overflow list (the caller acts for the
 * workers), answers the queries already posted (replies nobody polls are freed without
 * their callback), flushes everything submitted, stops both threads, closes the database. */
void qg_ledger_close(qg_ledger *l);
/* Rows written since start (for /healthz and tests). */
int64_t qg_ledger_rows_written(qg_ledger *l);
/* Counters for /healthz; any thread (relaxed reads). */
void qg_ledger_stats(qg_ledger *l, qg_ledger_stats_t *out);

/* For tests and EXPLAIN QUERY PLAN: the SQL a query runs (malloc'd), the totals statement
 * or the rows statement.  Parameters: ?1 key, ?2 account, ?3 provider, ?4 model, ?5 since,
 * ?6 until, ?7 limit, ?8..?9 the whole minutes inside [since, until) (inclusive), ?10..?11
 * and ?12..?13 the ts_ms ranges (inclusive) of the partial minutes at the since and the
 * until edge, ?14..?15 the id range of the rows statement; only those of the filters
 * present appear.  The totals statement returns one row per part (summary, since edge,
 * until edge): requests, the four token totals, lowest id, highest id, summary rows, part. */
char *qg_ledger_query_sql(const qg_usage_query *q, bool totals);
/* Test hook: while paused the writer takes nothing from the rings (so they fill up).
 * Costs one relaxed load per writer wake-up; close unpauses. */
void qg_ledger_test_pause(qg_ledger *l, bool paused);
/* Test hook: how the query thread reads the rows of a filtered query: 0 chooses by cost,
 * 1 always one id range (lowest..highest id of the matches), 2 always the id ranges of
 * the matching summary rows.  All three return the same rows. */
void qg_ledger_test_rows_path(qg_ledger *l, int path);

#endif
