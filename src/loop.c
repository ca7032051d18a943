/*
 * loop.c — epoll loop, binary timer heap, deferred queue.  See loop.h for the model.
 *
 * Timers live in a binary min-heap keyed by deadline; each timer knows its heap index so
 * stop and re-arm are O(log n).  Connections with activity-based timeouts (idle, stream
 * idle) do not re-arm on every byte: they record the time of their last activity and,
 * when the timer fires early, re-arm for the remainder.  That keeps the heap off the hot
 * path of a busy stream.
 */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define QG_LOOP_MAX_EVENTS 256

struct qg_loop {
    int epfd;
    bool stopping;
    int64_t now;
    qg_timer **heap; /* 1-based: heap[1] is the earliest */
    size_t heap_len;
    size_t heap_cap;
    qg_deferred *defer_head;
    qg_deferred *defer_tail;
    /* The batch being dispatched: a callback may stop (and free) an io whose event is
     * still ahead in it, so qg_io_stop clears those entries. */
    struct epoll_event *batch;
    int batch_next, batch_len;
};

static int64_t mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

qg_loop *qg_loop_new(void)
{
    qg_loop *l = qg_xcalloc(1, sizeof *l);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        free(l);
        return NULL;
    }
    l->now = mono_now();
    l->heap_cap = 64;
    l->heap = qg_xcalloc(l->heap_cap + 1, sizeof *l->heap);
    return l;
}

void qg_loop_free(qg_loop *l)
{
    if (!l) return;
    close(l->epfd);
    free(l->heap);
    free(l);
}

int64_t qg_loop_now(const qg_loop *l) { return l->now; }
void qg_loop_update_time(qg_loop *l) { l->now = mono_now(); }
void qg_loop_stop(qg_loop *l) { l->stopping = true; }

int qg_io_start(qg_loop *l, qg_io *io, int fd, qg_io_cb cb, void *ud)
{
    io->fd = fd;
    io->cb = cb;
    io->ud = ud;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = io};
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int qg_io_start_listen(qg_loop *l, qg_io *io, int fd, qg_io_cb cb, void *ud)
{
    io->fd = fd;
    io->cb = cb;
    io->ud = ud;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = io};
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

void qg_io_stop(qg_loop *l, qg_io *io)
{
    if (io->fd >= 0) epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    /* Its owner may free it as soon as we return: forget its events not yet dispatched
     * (at most one batch to look through, as libuv does). */
    for (int i = l->batch_next; i < l->batch_len; i++)
        if (l->batch[i].data.ptr == io) l->batch[i].data.ptr = NULL;
}

/* ---- timer heap ---- */

static void heap_set(qg_loop *l, size_t i, qg_timer *t)
{
    l->heap[i] = t;
    t->heap_index = i;
}

static void heap_up(qg_loop *l, size_t i)
{
    qg_timer *t = l->heap[i];
    while (i > 1 && l->heap[i / 2]->deadline > t->deadline) {
        heap_set(l, i, l->heap[i / 2]);
        i /= 2;
    }
    heap_set(l, i, t);
}

static void heap_down(qg_loop *l, size_t i)
{
    qg_timer *t = l->heap[i];
    for (;;) {
        size_t c = i * 2;
        if (c > l->heap_len) break;
        if (c + 1 <= l->heap_len && l->heap[c + 1]->deadline < l->heap[c]->deadline) c++;
        if (l->heap[c]->deadline >= t->deadline) break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, t);
}

void qg_timer_init(qg_timer *t, qg_timer_cb cb, void *ud)
{
    t->deadline = 0;
    t->heap_index = 0;
    t->cb = cb;
    t->ud = ud;
}

void qg_timer_stop(qg_loop *l, qg_timer *t)
{
    size_t i = t->heap_index;
    if (!i) return;
    qg_timer *last = l->heap[l->heap_len--];
    t->heap_index = 0;
    if (i > l->heap_len) return; /* t was the last element */
    heap_set(l, i, last);
    heap_up(l, i);
    heap_down(l, last->heap_index);
}

void qg_timer_start_at(qg_loop *l, qg_timer *t, int64_t deadline)
{
    if (t->heap_index) {
        int64_t old = t->deadline;
        t->deadline = deadline;
        if (deadline < old) heap_up(l, t->heap_index);
        else heap_down(l, t->heap_index);
        return;
    }
    if (l->heap_len == l->heap_cap) {
        l->heap_cap *= 2;
        l->heap = qg_xrealloc(l->heap, (l->heap_cap + 1) * sizeof *l->heap);
    }
    t->deadline = deadline;
    l->heap[++l->heap_len] = t;
    t->heap_index = l->heap_len;
    heap_up(l, l->heap_len);
}

void qg_timer_start(qg_loop *l, qg_timer *t, int64_t delay_ms)
{
    qg_timer_start_at(l, t, l->now + (delay_ms < 0 ? 0 : delay_ms));
}

static void run_timers(qg_loop *l)
{
    while (l->heap_len && l->heap[1]->deadline <= l->now) {
        qg_timer *t = l->heap[1];
        qg_timer_stop(l, t);
        t->cb(t);
    }
}

/* ---- deferred ---- */

void qg_defer(qg_loop *l, qg_deferred *d, qg_deferred_cb cb, void *ud)
{
    d->cb = cb;
    d->ud = ud;
    if (d->queued) return;
    d->queued = true;
    d->next = NULL;
    if (l->defer_tail) l->defer_tail->next = d;
    else l->defer_head = d;
    l->defer_tail = d;
}

void qg_defer_cancel(qg_loop *l, qg_deferred *d)
{
    if (!d->queued) return;
    qg_deferred **pp = &l->defer_head, *prev = NULL;
    while (*pp && *pp != d) prev = *pp, pp = &(*pp)->next;
    if (*pp) {
        *pp = d->next;
        if (l->defer_tail == d) l->defer_tail = prev;
    }
    d->queued = false;
}

static void run_deferred(qg_loop *l)
{
    /* Callbacks may queue more; those run in the same pass, in order. */
    while (l->defer_head) {
        qg_deferred *d = l->defer_head;
        l->defer_head = d->next;
        if (!l->defer_head) l->defer_tail = NULL;
        d->queued = false;
        d->cb(d);
    }
}

int qg_loop_run(qg_loop *l)
{
    struct epoll_event events[QG_LOOP_MAX_EVENTS];
    l->stopping = false;
    while (!l->stopping) {
        int timeout = -1;
        if (l->defer_head) timeout = 0;
        else if (l->heap_len) {
            int64_t d = l->heap[1]->deadline - l->now;
            timeout = d < 0 ? 0 : (int)QG_MIN(d, 60000);
        }
        int n = epoll_wait(l->epfd, events, QG_LOOP_MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        l->now = mono_now();
        l->batch = events;
        l->batch_len = n;
        for (int i = 0; i < n; i++) {
            qg_io *io = events[i].data.ptr;
            l->batch_next = i + 1;
            if (io) io->cb(io, events[i].events); /* NULL: stopped by an earlier callback */
        }
        l->batch_len = l->batch_next = 0;
        run_deferred(l);
        run_timers(l);
        run_deferred(l);
    }
    return 0;
}

/* ---- cross-thread notify ---- */

static void notify_io_cb(qg_io *io, uint32_t events)
{
    qg_notify *n = io->ud;
    uint64_t v;
    /* The eventfd is also writable (EPOLLOUT edges); only a counted wake-up calls back. */
    if (!(events & EPOLLIN) || read(io->fd, &v, sizeof v) != sizeof v) return;
    n->cb(n->ud);
}

int qg_notify_init(qg_loop *l, qg_notify *n, void (*cb)(void *ud), void *ud)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return -1;
    n->cb = cb;
    n->ud = ud;
    if (qg_io_start(l, &n->io, fd, notify_io_cb, n) < 0) {
        close(fd);
        return -1;
    }
    return 0;
}

void qg_notify_send(qg_notify *n)
{
    uint64_t one = 1;
    ssize_t r = write(n->io.fd, &one, sizeof one);
    QG_UNUSED(r); /* EAGAIN means the counter is already non-zero: the wake-up is pending */
}

void qg_notify_close(qg_loop *l, qg_notify *n)
{
    qg_io_stop(l, &n->io);
    close(n->io.fd);
    n->io.fd = -1;
}
