/*
 * ledger.h — the usage ledger (SPEC §6): one row per request, written to SQLite (WAL) by a
 * dedicated writer thread in batched transactions, never by an event loop.
 *
 * Workers fill a qg_ledger_row and hand it over with qg_ledger_submit (a lock-free ring
 * push; no syscall).  The writer wakes every flush interval (default 100 ms), drains every
 * worker's ring and commits all rows in one transaction.  After kill -9, at most the rows
 * of the last interval are missing, and WAL keeps the file consistent.
 *
 * Queries (GET /admin/usage) also run on the writer thread, after it has flushed, so a
 * reader always sees every row submitted before its query.  Results come back to the
 * worker's loop through the mailbox.
 */
#ifndef QG_LEDGER_H
#define QG_LEDGER_H

#include "common.h"
#include "loop.h"

typedef struct qg_ledger qg_ledger;

typedef struct {
    int64_t ts_ms;             /* request start, epoch ms */
    char request_id[24];
    char key_name[64];
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
} qg_ledger_row;

typedef struct {
    char *key_name, *account, *provider, *model; /* NULL: any */
    int64_t since_ms, until_ms;                  /* 0: open */
    int limit;                                   /* rows to return (totals cover all matches) */
} qg_usage_query;

/* Called on the worker's loop with the JSON result (owned by the callee for the call). */
typedef void (*qg_ledger_result_cb)(void *ud, int status, const char *json, size_t len);

/* Opens (creating the directory, file and schema if needed) and starts the writer. */
qg_ledger *qg_ledger_open(const char *path, int64_t flush_ms, int n_workers, char *err, size_t errlen);
/* Registers a worker's loop notify for query replies. */
void qg_ledger_attach(qg_ledger *l, int worker, qg_notify *n);
/* Rows must come from qg_ledger_row_new (zeroed); a row not submitted is freed with _free. */
qg_ledger_row *qg_ledger_row_new(void);
void qg_ledger_row_free(qg_ledger_row *row);
/* Worker side: takes ownership of a heap row.  Never blocks; if the ring is full the row
 * waits in the worker's overflow list until qg_ledger_retry. */
void qg_ledger_submit(qg_ledger *l, int worker, qg_ledger_row *row);
/* Worker side: re-posts overflowed rows (call from a timer); returns how many still wait. */
size_t qg_ledger_retry(qg_ledger *l, int worker);
/* Worker side: runs a query; cb runs later on this worker's loop.  Takes ownership of q's strings. */
void qg_ledger_query(qg_ledger *l, int worker, qg_usage_query *q, qg_ledger_result_cb cb, void *ud);
/* Worker side: call from the worker's notify callback to deliver finished queries. */
void qg_ledger_poll(qg_ledger *l, int worker);
/* Flushes everything submitted so far, stops the writer and closes the database. */
void qg_ledger_close(qg_ledger *l);
/* Rows written since start (for /healthz and tests). */
int64_t qg_ledger_rows_written(qg_ledger *l);

#endif
