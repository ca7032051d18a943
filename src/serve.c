/*
 * serve.c — `quotagate serve`: start-up, the worker threads, signals and shutdown.
 *
 * Start-up does everything that may block (reading the config, resolving provider hosts,
 * opening the store, loading CA files) before any loop runs.  The main thread then only
 * waits for signals:
 *   SIGTERM/SIGINT  drain: stop accepting, close idle connections, let in-flight requests
 *                   and streams finish for up to limits.drain_timeout, then close the rest;
 *                   flush the ledger; exit 0.  A second signal skips the wait.
 */
#include "gateway.h"

#include "api.h"
#include "cpus.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define DRAIN_POLL_MS 20
#define LEDGER_RETRY_MS 100
#define ACCOUNT_SCAN_MS 5000 /* the background pass over changed accounts (see ledger_timer_cb) */

static void worker_ctl_cb(void *ud);

static void ledger_notify_cb(void *ud)
{
    qg_worker *w = ud;
    qg_ledger_poll(w->gw->ledger, w->id);
}

static void keystore_notify_cb(void *ud)
{
    qg_worker *w = ud;
    qg_keystore_poll(w->gw->keystore, w->id);
}

static void dns_notify_cb(void *ud)
{
    qg_worker *w = ud;
    qg_resolver_poll(w->gw->resolver, w->id);
}

/* Also, on worker 0 every ACCOUNT_SCAN_MS: accounts whose counts or header figures changed since
 * their last save are saved (qg_accounts_save throttles each to once every 10 s), so the
 * store trails the live counts by at most ~15 s even when traffic stops. */
static void ledger_timer_cb(qg_timer *t)
{
    qg_worker *w = t->ud;
    qg_gateway *gw = w->gw;
    qg_ledger_retry(gw->ledger, w->id);
    if (w->id == 0 && ++w->ticks % (ACCOUNT_SCAN_MS / LEDGER_RETRY_MS) == 0) {
        int64_t now = qg_now_ms();
        for (size_t i = 0; i < gw->accounts.n; i++) qg_accounts_save(gw->ledger, 0, &gw->accounts.a[i], now, false);
    }
    qg_timer_start(w->loop, t, LEDGER_RETRY_MS);
}

static void drain_timer_cb(qg_timer *t)
{
    qg_worker *w = t->ud;
    qg_gateway *gw = w->gw;
    bool past_deadline = qg_loop_now(w->loop) >= gw->drain_deadline || atomic_load(&gw->command) == 2;
    if (past_deadline && w->srv.n_conns) {
        qg_warn("worker %d: drain deadline reached; closing %zu connections", w->id, w->srv.n_conns);
        qg_server_close_all(&w->srv);
    }
    if (w->srv.n_conns == 0 && w->n_exchanges == 0) {
        qg_loop_stop(w->loop);
        return;
    }
    qg_timer_start(w->loop, t, DRAIN_POLL_MS);
}

static void worker_ctl_cb(void *ud)
{
    qg_worker *w = ud;
    if (atomic_load(&w->gw->command) == 0) return;
    qg_server_drain(&w->srv);
    if (!qg_timer_active(&w->drain_timer)) drain_timer_cb(&w->drain_timer);
}

static void *worker_main(void *arg)
{
    qg_worker *w = arg;
    if (qg_loop_run(w->loop) < 0) qg_error("worker %d: event loop failed: %s", w->id, strerror(errno));
    return NULL;
}

static int worker_init(qg_gateway *gw, qg_worker *w, int id)
{
    const qg_config *cfg = gw->cfg;
    w->gw = gw;
    w->id = id;
    w->loop = qg_loop_new();
    if (!w->loop) return -1;
    qg_buf_init(&w->stage, 0);
    qg_server_limits lim = {.max_header = cfg->limits.max_header, .max_body = cfg->limits.max_body,
                            .idle_timeout_ms = cfg->limits.client_idle_timeout_ms,
                            .header_timeout_ms = cfg->limits.client_header_timeout_ms,
                            .max_connections = cfg->limits.max_connections};
    qg_server_init(&w->srv, w->loop, gw->listen_fd, &qg_api_handler, w, &lim, &gw->conn_count, NULL);
    if (qg_notify_init(w->loop, &w->ctl, worker_ctl_cb, w) < 0 || qg_notify_init(w->loop, &w->ledger_notify, ledger_notify_cb, w) < 0 ||
        qg_notify_init(w->loop, &w->dns_notify, dns_notify_cb, w) < 0 ||
        qg_notify_init(w->loop, &w->keystore_notify, keystore_notify_cb, w) < 0)
        return -1;
    qg_ledger_attach(gw->ledger, id, &w->ledger_notify);
    qg_keystore_attach(gw->keystore, id, &w->keystore_notify);
    qg_resolver_attach(gw->resolver, id, &w->dns_notify);
    qg_upstream_env env = {w->loop, gw->resolver, id, w->scratch, sizeof w->scratch};
    qg_upstream_opts uo = {.connect_ms = cfg->limits.upstream_connect_timeout_ms,
                           .first_byte_ms = cfg->limits.upstream_first_byte_timeout_ms,
                           .idle_ms = cfg->limits.stream_idle_timeout_ms, .pool_idle_ms = QG_POOL_IDLE_MS,
                           .max_idle = QG_POOL_MAX_IDLE, .max_header = QG_UPSTREAM_MAX_HEAD};
    w->ups = qg_xcalloc(cfg->n_providers, sizeof *w->ups);
    for (size_t i = 0; i < cfg->n_providers; i++) w->ups[i] = qg_upstream_new(&env, &cfg->providers[i], gw->tls[i], &uo);
    w->cursors = qg_xcalloc(gw->router.n_cursors + 1, sizeof *w->cursors);
    w->ranks = qg_rank_caches_new(&gw->router);
    for (size_t i = 0; i < gw->router.n_cursors; i++) w->cursors[i] = (uint32_t)id; /* workers start apart */
    qg_timer_init(&w->ledger_timer, ledger_timer_cb, w);
    qg_timer_init(&w->drain_timer, drain_timer_cb, w);
    qg_timer_start(w->loop, &w->ledger_timer, LEDGER_RETRY_MS);
    return 0;
}

static void worker_free(qg_gateway *gw, qg_worker *w)
{
    if (!w->loop) return;
    qg_timer_stop(w->loop, &w->ledger_timer);
    qg_timer_stop(w->loop, &w->drain_timer);
    qg_server_close_all(&w->srv);
    for (size_t i = 0; w->ups && i < gw->cfg->n_providers; i++) qg_upstream_free(w->ups[i]);
    free(w->ups);
    free(w->cursors);
    qg_rank_caches_free(&gw->router, w->ranks);
    qg_buf_free(&w->stage);
    if (w->ctl.io.fd > 0) qg_notify_close(w->loop, &w->ctl);
    if (w->ledger_notify.io.fd > 0) qg_notify_close(w->loop, &w->ledger_notify);
    if (w->dns_notify.io.fd > 0) qg_notify_close(w->loop, &w->dns_notify);
    if (w->keystore_notify.io.fd > 0) qg_notify_close(w->loop, &w->keystore_notify);
    qg_loop_free(w->loop);
}

/* Opens TLS contexts and resolves provider hosts once, before any loop runs. */
static int prepare_providers(qg_gateway *gw)
{
    const qg_config *cfg = gw->cfg;
    gw->tls = qg_xcalloc(cfg->n_providers ? cfg->n_providers : 1, sizeof *gw->tls);
    for (size_t i = 0; i < cfg->n_providers; i++) {
        const qg_provider_cfg *p = &cfg->providers[i];
        if (!p->tls) continue;
        char err[256];
        gw->tls[i] = qg_tls_client_ctx(p->ca_file, err, sizeof err);
        if (!gw->tls[i]) {
            fprintf(stderr, "quotagate: provider %s: %s\n", p->name, err);
            return -1;
        }
    }
    return 0;
}

static void seed_dns(qg_gateway *gw)
{
    for (size_t i = 0; i < gw->cfg->n_providers; i++) {
        const qg_provider_cfg *p = &gw->cfg->providers[i];
        struct sockaddr_storage ss;
        socklen_t len;
        int rc = qg_resolve_now(p->host, p->port, &ss, &len);
        if (rc != 0) {
            qg_warn("provider %s: cannot resolve %s yet (%s); will retry on first use", p->name, p->host, gai_strerror(rc));
            continue;
        }
        for (int w = 0; w < gw->n_workers; w++) qg_upstream_seed_addr(gw->workers[w].ups[i], &ss, len);
    }
}

static qg_qacct *account_of(void *ud, int prov, int acct) { return qg_accounts_at(ud, prov, acct); }

/* The quota state saved by the last run: a restart knows at once which accounts are spent. */
static void restore_accounts(qg_gateway *gw)
{
    int n = qg_accounts_load(&gw->accounts, gw->cfg->store_sqlite, qg_now_ms());
    if (n > 0) qg_info("store: restored the quota state of %d account(s)", n);
}

static void restore_key_counters(qg_gateway *gw)
{
    char err[300];
    int n = qg_keys_restore_counters(gw->keys, gw->cfg->store_sqlite, qg_now_ms(), err, sizeof err);
    if (n < 0) qg_warn("%s", err);
    else if (n) qg_info("store: restored %d key quota counter(s)", n);
}

static int split_listen(const char *host, int port, char *out, size_t outlen)
{
    return snprintf(out, outlen, "%s%s%s:%d", strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port) > 0 ? 0 : -1;
}

int qg_serve(const char *config_path)
{
    static qg_gateway gw_storage;
    qg_gateway *gw = &gw_storage;
    qg_buf errs;
    qg_buf_init(&errs, 0);
    int rc = 1;
    if (qg_config_load(config_path, &gw->cfg, &errs) < 0) {
        fprintf(stderr, "quotagate: invalid configuration:\n%.*s", (int)errs.len, errs.data ? errs.data : "");
        qg_buf_free(&errs);
        return 2;
    }
    qg_buf_free(&errs);
    const qg_config *cfg = gw->cfg;
    gw->started_ms = qg_now_ms();
    if (cfg->workers > 0) {
        gw->n_workers = cfg->workers;
    } else { /* auto: the CPUs this process may use, not the machine's (cpus.h) */
        char why[600];
        gw->n_workers = QG_MIN(QG_MAX_WORKERS, qg_usable_cpus_explain(why, sizeof why));
        qg_info("workers: auto = %d: %s", gw->n_workers, why);
    }
    gw->keys = qg_keydir_new();
    qg_keydir_add_config(gw->keys, cfg);
    qg_router_build(&gw->router, cfg);
    qg_accounts_build(&gw->accounts, cfg);
    qg_router_bind(&gw->router, account_of, &gw->accounts);
    static qg_api api;
    qg_proxy_register(&api);
    qg_admin_register(&api);
    qg_keyadmin_register(&api);
    gw->api = &api;
    char err[512];
    if (prepare_providers(gw) < 0) goto out;
    gw->ledger = qg_ledger_open(cfg->store_sqlite, cfg->limits.ledger_flush_ms, gw->n_workers, err, sizeof err);
    if (!gw->ledger) {
        fprintf(stderr, "quotagate: %s\n", err);
        goto out;
    }
    gw->keystore = qg_keystore_open(cfg->store_sqlite, gw->keys, gw->n_workers, err, sizeof err);
    if (!gw->keystore) {
        fprintf(stderr, "quotagate: %s\n", err);
        goto out;
    }
    restore_accounts(gw);
    restore_key_counters(gw);
    gw->resolver = qg_resolver_new(gw->n_workers);
    gw->listen_fd = qg_listen_tcp(cfg->listen_host, cfg->listen_port, err, sizeof err);
    if (gw->listen_fd < 0 || !gw->resolver) {
        fprintf(stderr, "quotagate: %s\n", gw->resolver ? err : "cannot start the resolver thread");
        goto out;
    }
    gw->listen_port = qg_local_port(gw->listen_fd);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* workers inherit the mask; only main waits */
    signal(SIGPIPE, SIG_IGN);

    gw->workers = qg_xcalloc((size_t)gw->n_workers, sizeof *gw->workers);
    for (int i = 0; i < gw->n_workers; i++)
        if (worker_init(gw, &gw->workers[i], i) < 0) {
            fprintf(stderr, "quotagate: cannot start worker %d: %s\n", i, strerror(errno));
            goto out;
        }
    seed_dns(gw);
    for (int i = 0; i < gw->n_workers; i++) pthread_create(&gw->workers[i].thread, NULL, worker_main, &gw->workers[i]);
    char where[300];
    split_listen(cfg->listen_host, gw->listen_port, where, sizeof where);
    qg_info("quotagate listening on http://%s (%d workers, %zu providers, %zu models, %zu keys, store %s)", where,
            gw->n_workers, cfg->n_providers, gw->router.n_routes, (size_t)qg_keydir_count(gw->keys), cfg->store_sqlite);

    int sig = 0;
    sigwait(&set, &sig);
    qg_info("signal %d: draining (up to %lld ms)", sig, (long long)cfg->limits.drain_timeout_ms);
    gw->drain_deadline = qg_mono_ms() + cfg->limits.drain_timeout_ms;
    atomic_store(&gw->command, 1);
    for (int i = 0; i < gw->n_workers; i++) qg_notify_send(&gw->workers[i].ctl);
    /* A second signal ends the drain at once. */
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000000};
    for (int running = gw->n_workers; running;) {
        for (int i = 0; i < gw->n_workers; i++)
            if (!gw->workers[i].joined && pthread_tryjoin_np(gw->workers[i].thread, NULL) == 0) {
                gw->workers[i].joined = true;
                running--;
            }
        if (running && sigtimedwait(&set, NULL, &ts) > 0) {
            qg_warn("second signal: closing all connections now");
            atomic_store(&gw->command, 2);
            for (int i = 0; i < gw->n_workers; i++)
                if (!gw->workers[i].joined) qg_notify_send(&gw->workers[i].ctl);
        }
    }
    rc = 0;
out:
    /* The resolver thread may still be answering a lookup whose query lives in an
     * upstream: join it before the upstreams go. */
    qg_resolver_free(gw->resolver);
    for (int i = 0; gw->workers && i < gw->n_workers; i++) worker_free(gw, &gw->workers[i]);
    free(gw->workers);
    qg_keystore_close(gw->keystore);
    if (gw->listen_fd > 0) close(gw->listen_fd);
    if (gw->ledger) {
        qg_accounts_save_all(&gw->accounts, gw->ledger, qg_now_ms()); /* the workers are gone: act for them */
        int64_t before = qg_ledger_rows_written(gw->ledger);
        qg_ledger_close(gw->ledger); /* flushes every row the workers submitted */
        if (rc == 0) qg_info("ledger flushed; stopped cleanly (%lld rows this run)", (long long)before);
    }
    for (size_t i = 0; gw->tls && i < cfg->n_providers; i++)
        if (gw->tls[i]) SSL_CTX_free(gw->tls[i]);
    free(gw->tls);
    qg_keydir_free(gw->keys);
    qg_router_free(&gw->router);
    qg_accounts_free(&gw->accounts);
    qg_config_free(gw->cfg);
    return rc;
}
