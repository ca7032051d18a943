/*
 * gateway.h — the process and its workers (`quotagate serve`).
 *
 * Threads: N workers (one event loop each, sharing one listening socket), one ledger
 * writer, one DNS resolver, and the main thread, which only waits for signals and
 * orchestrates start-up and shutdown.  See docs/architecture.md.
 *
 * Ownership: the qg_gateway owns the immutable config and router, which every worker
 * reads without locks, the key directory (read without locks, written by the key store's
 * thread), and the account table, whose quota state every worker
 * updates with atomics (quota.h).  Each qg_worker owns its loop, server, upstream pools,
 * rotation cursors and every in-flight request (qg_exchange); nothing a worker owns is
 * touched by another thread.
 */
#ifndef QG_GATEWAY_H
#define QG_GATEWAY_H

#include "accounts.h"
#include "config.h"
#include "keydir.h"
#include "keystore.h"
#include "ledger.h"
#include "loop.h"
#include "resolver.h"
#include "router.h"
#include "server.h"
#include "upstream.h"

#include <pthread.h>
#include <stdatomic.h>

#define QG_SCRATCH_SIZE 16384 /* one upstream read; bounds per-stream output buffering */

typedef struct qg_gateway qg_gateway;
typedef struct qg_api qg_api;   /* api.h: the route table */

typedef struct qg_worker {
    qg_gateway *gw;
    int id;
    qg_loop *loop;
    qg_server srv;
    pthread_t thread;
    bool joined;
    qg_notify ctl;             /* main thread -> worker: drain / stop */
    qg_notify ledger_notify;   /* ledger query replies */
    qg_notify dns_notify;      /* resolver replies */
    qg_notify keystore_notify; /* key store replies (admin key changes) */
    qg_upstream **ups;         /* [n_providers] */
    uint32_t *cursors;         /* router rotation cursors */
    qg_rank_cache *ranks;      /* router score caches, one per route */
    char scratch[QG_SCRATCH_SIZE];
    qg_buf stage;              /* forwarded SSE events of one upstream read */
    qg_timer ledger_timer;     /* retries rows that found the ledger ring full */
    qg_timer drain_timer;
    size_t n_exchanges;        /* in-flight proxied requests */
    _Atomic int64_t requests;  /* requests made (each ends in one ledger row); written by this worker only */
    uint64_t seq;
    uint64_t ticks;            /* ledger timer ticks (periodic account saves) */
} qg_worker;

struct qg_gateway {
    qg_config *cfg;
    qg_keydir *keys;           /* every API key: lock-free lookups, one writer (keydir.h) */
    qg_keystore *keystore;     /* admin-managed keys in the store, and the keydir's writer */
    qg_router router;
    qg_accounts accounts;      /* upstream accounts' quota state, shared (atomics) */
    qg_api *api;
    qg_ledger *ledger;
    qg_resolver *resolver;
    SSL_CTX **tls;             /* [n_providers]; NULL for http providers */
    int listen_fd;
    int listen_port;
    int n_workers;
    qg_worker *workers;
    _Atomic int conn_count;
    _Atomic int command;       /* 0 run, 1 drain, 2 stop now */
    _Atomic int workers_done;
    int64_t started_ms;
    int64_t drain_deadline;    /* monotonic ms */
};

/* `quotagate serve`: returns the exit code. */
int qg_serve(const char *config_path);

#endif
