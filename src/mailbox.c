/*
 * mailbox.c — SPSC rings and the worker<->service mailbox.  See mailbox.h.
 */
#include "mailbox.h"

#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

void qg_ring_init(qg_ring *r, size_t cap)
{
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    r->mask = cap - 1;
    r->slots = qg_xcalloc(cap, sizeof *r->slots);
}

void qg_ring_free(qg_ring *r)
{
    free(r->slots);
    r->slots = NULL;
}

bool qg_ring_push(qg_ring *r, void *p)
{
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (t - h > r->mask) return false;
    r->slots[t & r->mask] = p;
    atomic_store_explicit(&r->tail, t + 1, memory_order_release);
    return true;
}

void *qg_ring_pop(qg_ring *r)
{
    size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (h == t) return NULL;
    void *p = r->slots[h & r->mask];
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
    return p;
}

size_t qg_ring_size(qg_ring *r)
{
    return atomic_load_explicit(&r->tail, memory_order_acquire) - atomic_load_explicit(&r->head, memory_order_acquire);
}

int qg_mailbox_init(qg_mailbox *mb, int n_workers, size_t cap)
{
    mb->n_workers = n_workers;
    mb->to_service = qg_xcalloc((size_t)n_workers, sizeof *mb->to_service);
    mb->to_worker = qg_xcalloc((size_t)n_workers, sizeof *mb->to_worker);
    mb->worker_notify = qg_xcalloc((size_t)n_workers, sizeof *mb->worker_notify);
    for (int i = 0; i < n_workers; i++) {
        qg_ring_init(&mb->to_service[i], cap);
        qg_ring_init(&mb->to_worker[i], cap);
    }
    mb->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return mb->wake_fd < 0 ? -1 : 0;
}

void qg_mailbox_free(qg_mailbox *mb)
{
    for (int i = 0; i < mb->n_workers; i++) {
        qg_ring_free(&mb->to_service[i]);
        qg_ring_free(&mb->to_worker[i]);
    }
    free(mb->to_service);
    free(mb->to_worker);
    free(mb->worker_notify);
    if (mb->wake_fd >= 0) close(mb->wake_fd);
}

void qg_mailbox_attach(qg_mailbox *mb, int worker, qg_notify *n) { mb->worker_notify[worker] = n; }

void qg_mailbox_wake(qg_mailbox *mb)
{
    uint64_t one = 1;
    ssize_t r = write(mb->wake_fd, &one, sizeof one);
    QG_UNUSED(r);
}

bool qg_mailbox_post(qg_mailbox *mb, int worker, void *msg, bool wake)
{
    if (!qg_ring_push(&mb->to_service[worker], msg)) return false;
    if (wake) qg_mailbox_wake(mb);
    return true;
}

void *qg_mailbox_reply_pop(qg_mailbox *mb, int worker) { return qg_ring_pop(&mb->to_worker[worker]); }

void qg_mailbox_wait(qg_mailbox *mb, int timeout_ms)
{
    struct pollfd p = {.fd = mb->wake_fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) > 0) {
        uint64_t v;
        ssize_t r = read(mb->wake_fd, &v, sizeof v);
        QG_UNUSED(r);
    }
}

void *qg_mailbox_take(qg_mailbox *mb, int worker) { return qg_ring_pop(&mb->to_service[worker]); }

static void serve_pending(qg_mailbox *mb, void (*handle)(void *ctx, int worker, void *msg), void *ctx)
{
    for (bool any = true; any;) {
        any = false;
        for (int w = 0; w < mb->n_workers; w++) {
            void *m = qg_mailbox_take(mb, w);
            if (!m) continue;
            any = true;
            handle(ctx, w, m);
        }
    }
}

void qg_mailbox_serve(qg_mailbox *mb, _Atomic bool *stop, void (*handle)(void *ctx, int worker, void *msg), void *ctx)
{
    while (!atomic_load(stop)) {
        qg_mailbox_wait(mb, 1000);
        serve_pending(mb, handle, ctx);
    }
    serve_pending(mb, handle, ctx);
}

void qg_mailbox_reply(qg_mailbox *mb, int worker, void *msg)
{
    while (!qg_ring_push(&mb->to_worker[worker], msg)) sched_yield();
    if (mb->worker_notify[worker]) qg_notify_send(mb->worker_notify[worker]);
}
