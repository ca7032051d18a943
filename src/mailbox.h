/*
 * mailbox.h — how event loops talk to service threads (the ledger writer, the DNS
 * resolver) without ever taking a lock.
 *
 * Each worker owns one single-producer/single-consumer ring towards the service and one
 * back.  A ring is a power-of-two array of pointers with C11 acquire/release indices, so a
 * post is two atomic operations and never waits.  The service sleeps on an eventfd (woken
 * only when a poster asks, e.g. for a query or a DNS lookup; ledger rows are picked up by
 * the service's own flush timer, so they cost no syscall).  Replies wake the worker's loop
 * through its qg_notify.
 *
 * Ownership: a message pointer belongs to whoever holds it; posting hands it over.
 */
#ifndef QG_MAILBOX_H
#define QG_MAILBOX_H

#include "common.h"
#include "loop.h"

#include <stdatomic.h>

typedef struct {
    _Atomic size_t head; /* next slot the consumer reads */
    char pad1[64 - sizeof(size_t)];
    _Atomic size_t tail; /* next slot the producer writes */
    char pad2[64 - sizeof(size_t)];
    size_t mask;
    void **slots;
} qg_ring;

void qg_ring_init(qg_ring *r, size_t capacity_pow2);
void qg_ring_free(qg_ring *r);
bool qg_ring_push(qg_ring *r, void *p); /* false when full */
void *qg_ring_pop(qg_ring *r);          /* NULL when empty */
size_t qg_ring_size(qg_ring *r);

typedef struct {
    int n_workers;
    qg_ring *to_service;  /* [n_workers] */
    qg_ring *to_worker;   /* [n_workers] */
    qg_notify **worker_notify; /* [n_workers], set by qg_mailbox_attach */
    int wake_fd;          /* eventfd the service waits on */
} qg_mailbox;

int qg_mailbox_init(qg_mailbox *mb, int n_workers, size_t ring_capacity);
void qg_mailbox_free(qg_mailbox *mb);
/* Worker side. */
void qg_mailbox_attach(qg_mailbox *mb, int worker, qg_notify *n);
bool qg_mailbox_post(qg_mailbox *mb, int worker, void *msg, bool wake);
void *qg_mailbox_reply_pop(qg_mailbox *mb, int worker);
/* Service side. */
void qg_mailbox_wake(qg_mailbox *mb);
/* Waits up to timeout_ms for a wake-up (returns at once if one is pending). */
void qg_mailbox_wait(qg_mailbox *mb, int timeout_ms);
void *qg_mailbox_take(qg_mailbox *mb, int worker);
/* Hands a reply to a worker and wakes its loop.  Spins politely if the ring is full. */
void qg_mailbox_reply(qg_mailbox *mb, int worker, void *msg);
/* A service thread's loop: until *stop, waits for posts (waking at least every second) and
 * hands each message to handle, one per worker per pass so one worker's burst does not
 * starve the others; once *stop is set, handles what is left, then returns. */
void qg_mailbox_serve(qg_mailbox *mb, _Atomic bool *stop, void (*handle)(void *ctx, int worker, void *msg), void *ctx);

#endif
