/*
 * resolver.h — DNS that never blocks an event loop: one resolver thread runs
 * getaddrinfo(3) (so /etc/hosts, nsswitch and resolv.conf behave exactly as for every
 * other program on the host) and answers workers through the mailbox.
 *
 * Why a thread and not c-ares: upstreams are a handful of provider hosts whose addresses
 * are cached per worker for 60 s, so lookups are rare and never on a request's hot path
 * once warm; a thread gives the system resolver's full behaviour at no per-request cost.
 */
#ifndef QG_RESOLVER_H
#define QG_RESOLVER_H

#include "common.h"
#include "loop.h"

#include <sys/socket.h>

typedef struct qg_resolver qg_resolver;

typedef struct qg_dns_query {
    char host[256];
    int port;
    int rc;                          /* 0 ok, else an EAI_* code */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    void (*done)(struct qg_dns_query *q); /* runs on the asking worker's loop */
    void *ud;
} qg_dns_query;

qg_resolver *qg_resolver_new(int n_workers);
void qg_resolver_attach(qg_resolver *r, int worker, qg_notify *n);
/* Queues a lookup (q is owned by the caller until done runs).  Returns -1 if the queue is full. */
int qg_resolver_lookup(qg_resolver *r, int worker, qg_dns_query *q);
/* Call from the worker's notify callback: runs `done` for finished lookups. */
void qg_resolver_poll(qg_resolver *r, int worker);
void qg_resolver_free(qg_resolver *r);

/* Synchronous lookup for start-up and for numeric hosts (never call on a loop with a name). */
int qg_resolve_now(const char *host, int port, struct sockaddr_storage *addr, socklen_t *len);

#endif
