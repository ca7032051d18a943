/*
 * loop.h — one event loop per worker thread: edge-triggered epoll, a timer heap and
 * deferred callbacks.
 *
 * Why not libevent: its bufferevent/evhttp layers cost 2–4 epoll_ctl per request (see
 * docs/architecture.md).  Here every socket is registered once with
 * EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET and never modified: owners read and write until
 * EAGAIN and remember whether they still have work, so a keep-alive request costs no
 * epoll_ctl at all.
 *
 * Ownership: the loop never owns qg_io or qg_timer objects; they are embedded in their
 * owners (a connection), which must stop timers and remove fds before freeing.  qg_io_stop
 * also drops the io's events still pending in the batch being dispatched, so an owner may
 * be freed from inside any callback, its own or another's.  Nothing
 * here is thread-safe: a loop and everything registered on it belong to one thread.
 * Other threads talk to a loop only through a qg_notify (an eventfd).
 */
#ifndef QG_LOOP_H
#define QG_LOOP_H

#include "common.h"
#include <sys/epoll.h>

typedef struct qg_loop qg_loop;
typedef struct qg_io qg_io;
typedef struct qg_timer qg_timer;
typedef struct qg_deferred qg_deferred;

typedef void (*qg_io_cb)(qg_io *io, uint32_t events);
typedef void (*qg_timer_cb)(qg_timer *t);
typedef void (*qg_deferred_cb)(qg_deferred *d);

struct qg_io {
    int fd;
    qg_io_cb cb;
    void *ud;
};

struct qg_timer {
    int64_t deadline;   /* loop-monotonic ms */
    size_t heap_index;  /* 0 = not scheduled; else 1-based position in the heap */
    qg_timer_cb cb;
    void *ud;
};

struct qg_deferred {
    qg_deferred *next;
    qg_deferred_cb cb;
    void *ud;
    bool queued;
};

qg_loop *qg_loop_new(void);
void qg_loop_free(qg_loop *l);
/* Runs until qg_loop_stop; returns 0, or -1 on an epoll failure. */
int qg_loop_run(qg_loop *l);
void qg_loop_stop(qg_loop *l);
/* Monotonic ms, refreshed once per loop iteration (cheap; use for deadlines). */
int64_t qg_loop_now(const qg_loop *l);
void qg_loop_update_time(qg_loop *l);

/* Registers fd edge-triggered for IN|OUT|RDHUP.  Returns 0 or -1 (errno set). */
int qg_io_start(qg_loop *l, qg_io *io, int fd, qg_io_cb cb, void *ud);
/* Registers a listening fd shared between loops: level-triggered EPOLLIN|EPOLLEXCLUSIVE,
 * so one connection wakes one worker. */
int qg_io_start_listen(qg_loop *l, qg_io *io, int fd, qg_io_cb cb, void *ud);
/* Removes the fd from the loop (does not close it). */
void qg_io_stop(qg_loop *l, qg_io *io);

void qg_timer_init(qg_timer *t, qg_timer_cb cb, void *ud);
/* (Re)arms the timer `delay_ms` from the loop's current time. */
void qg_timer_start(qg_loop *l, qg_timer *t, int64_t delay_ms);
void qg_timer_start_at(qg_loop *l, qg_timer *t, int64_t deadline);
void qg_timer_stop(qg_loop *l, qg_timer *t);
static inline bool qg_timer_active(const qg_timer *t) { return t->heap_index != 0; }

/* Runs cb once after the current batch of I/O events (never re-entrantly). */
void qg_defer(qg_loop *l, qg_deferred *d, qg_deferred_cb cb, void *ud);
void qg_defer_cancel(qg_loop *l, qg_deferred *d);

/* A cross-thread wake-up: any thread calls qg_notify_send; the loop thread's cb runs. */
typedef struct {
    qg_io io;
    void (*cb)(void *ud);
    void *ud;
} qg_notify;
int qg_notify_init(qg_loop *l, qg_notify *n, void (*cb)(void *ud), void *ud);
void qg_notify_send(qg_notify *n);
void qg_notify_close(qg_loop *l, qg_notify *n);

#endif
