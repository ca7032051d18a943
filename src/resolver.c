/*
 * resolver.c — the resolver thread.  See resolver.h.
 */
#include "resolver.h"

#include "mailbox.h"

#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

struct qg_resolver {
    qg_mailbox mb;
    pthread_t thread;
    _Atomic bool stop;
};

int qg_resolve_now(const char *host, int port, struct sockaddr_storage *addr, socklen_t *len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0) return rc;
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void *resolver_main(void *arg)
{
    qg_resolver *r = arg;
    while (!atomic_load(&r->stop)) {
        qg_mailbox_wait(&r->mb, 1000);
        for (int w = 0; w < r->mb.n_workers; w++) {
            qg_dns_query *q;
            while ((q = qg_mailbox_take(&r->mb, w))) {
                q->rc = qg_resolve_now(q->host, q->port, &q->addr, &q->addrlen);
                qg_mailbox_reply(&r->mb, w, q);
            }
        }
    }
    return NULL;
}

qg_resolver *qg_resolver_new(int n_workers)
{
    qg_resolver *r = qg_xcalloc(1, sizeof *r);
    if (qg_mailbox_init(&r->mb, n_workers, 1024) < 0 || pthread_create(&r->thread, NULL, resolver_main, r) != 0) {
        qg_mailbox_free(&r->mb);
        free(r);
        return NULL;
    }
    return r;
}

void qg_resolver_attach(qg_resolver *r, int worker, qg_notify *n) { qg_mailbox_attach(&r->mb, worker, n); }

int qg_resolver_lookup(qg_resolver *r, int worker, qg_dns_query *q)
{
    return qg_mailbox_post(&r->mb, worker, q, true) ? 0 : -1;
}

void qg_resolver_poll(qg_resolver *r, int worker)
{
    qg_dns_query *q;
    while ((q = qg_mailbox_reply_pop(&r->mb, worker))) q->done(q);
}

void qg_resolver_free(qg_resolver *r)
{
    if (!r) return;
    atomic_store(&r->stop, true);
    qg_mailbox_wake(&r->mb);
    pthread_join(r->thread, NULL);
    qg_mailbox_free(&r->mb);
    free(r);
}
