/*
 * test_mailbox.c — the SPSC ring, the worker<->service mailbox, and the loop's timer heap
 * and deferred queue.
 *
 * Ring: FIFO order, full and empty, index wrap-around, and a real two-thread run of a
 * million items through a small ring (so both the full and the empty paths are hit
 * constantly) that checks order and that nothing is lost or duplicated.  Mailbox: a round
 * trip through a service thread, woken through the eventfd and answering through the
 * worker loop's qg_notify.  Timers: deadlines already in the past fire in deadline order
 * whatever the start order; stop (of the root, a middle element, the last), re-arming
 * earlier and later, re-arming from a callback, and a seeded random mix of all three.
 */
#include "testutil.h"
#include "loop.h"
#include "mailbox.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#define ITEM(i) ((void *)(uintptr_t)((i) + 1)) /* never NULL: NULL means "empty" */
#define INDEX(p) ((size_t)(uintptr_t)(p) - 1)

/* ---- ring ---- */

static void test_ring_order_full_empty(void **state)
{
    qg_ring r;
    qg_ring_init(&r, 8);
    assert_null(qg_ring_pop(&r));
    assert_int_equal(qg_ring_size(&r), 0);
    for (size_t i = 0; i < 8; i++) {
        assert_true(qg_ring_push(&r, ITEM(i)));
        assert_int_equal(qg_ring_size(&r), i + 1);
    }
    assert_false(qg_ring_push(&r, ITEM(8))); /* full */
    assert_false(qg_ring_push(&r, ITEM(9)));
    assert_int_equal(qg_ring_size(&r), 8);
    assert_ptr_equal(qg_ring_pop(&r), ITEM(0));
    assert_true(qg_ring_push(&r, ITEM(8))); /* one slot free again */
    assert_false(qg_ring_push(&r, ITEM(9)));
    for (size_t i = 1; i <= 8; i++) assert_ptr_equal(qg_ring_pop(&r), ITEM(i));
    assert_null(qg_ring_pop(&r));
    assert_null(qg_ring_pop(&r));
    assert_int_equal(qg_ring_size(&r), 0);
    qg_ring_free(&r);
    assert_null(r.slots);
}

static void test_ring_wraparound(void **state)
{
    qg_ring r;
    qg_ring_init(&r, 4);
    size_t next_in = 0, next_out = 0;
    /* Mixed bursts: the indices go around the 4 slots thousands of times. */
    for (int round = 0; round < 5000; round++) {
        size_t burst = (size_t)(round % 5);
        for (size_t k = 0; k < burst; k++) {
            bool ok = qg_ring_push(&r, ITEM(next_in));
            assert_int_equal(ok, next_in - next_out < 4);
            if (ok) next_in++;
        }
        assert_int_equal(qg_ring_size(&r), next_in - next_out);
        size_t take = (size_t)((round * 7) % 4);
        for (size_t k = 0; k < take; k++) {
            void *p = qg_ring_pop(&r);
            if (next_out == next_in) {
                assert_null(p);
            } else {
                assert_ptr_equal(p, ITEM(next_out));
                next_out++;
            }
        }
    }
    while (next_out < next_in) assert_ptr_equal(qg_ring_pop(&r), ITEM(next_out++));
    assert_null(qg_ring_pop(&r));
    assert_true(next_in > 4000);
    qg_ring_free(&r);

    /* A ring of one slot. */
    qg_ring one;
    qg_ring_init(&one, 1);
    assert_true(qg_ring_push(&one, ITEM(0)));
    assert_false(qg_ring_push(&one, ITEM(1)));
    assert_ptr_equal(qg_ring_pop(&one), ITEM(0));
    assert_null(qg_ring_pop(&one));
    qg_ring_free(&one);
}

#define SPSC_ITEMS 1000000

typedef struct {
    qg_ring *r;
    size_t n;
    size_t full_spins;
} producer_arg;

static void *producer(void *p)
{
    producer_arg *a = p;
    for (size_t i = 0; i < a->n; i++)
        while (!qg_ring_push(a->r, ITEM(i))) {
            a->full_spins++;
            sched_yield();
        }
    return NULL;
}

static void test_ring_two_threads(void **state)
{
    qg_ring r;
    qg_ring_init(&r, 256);
    producer_arg a = {&r, SPSC_ITEMS, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, producer, &a), 0);
    size_t expect = 0, empty_polls = 0, bad = 0, first_bad = 0;
    void *first_bad_p = NULL;
    while (expect < SPSC_ITEMS) {
        void *p = qg_ring_pop(&r);
        if (!p) {
            empty_polls++;
            if (empty_polls % 64 == 0) sched_yield();
            continue;
        }
        if (p != ITEM(expect) && !bad++) first_bad = expect, first_bad_p = p;
        expect++;
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    if (bad) fail_msg("%zu items out of order; first at %zu: got %zu", bad, first_bad, INDEX(first_bad_p));
    assert_null(qg_ring_pop(&r)); /* nothing extra */
    assert_int_equal(qg_ring_size(&r), 0);
    qg_ring_free(&r);
}

/* ---- mailbox round trip ---- */

#define MB_MSGS 200000

typedef struct {
    qg_mailbox *mb;
    atomic_bool quit;
    size_t served;
} service_arg;

static void *service(void *p)
{
    service_arg *s = p;
    while (!atomic_load(&s->quit)) {
        qg_mailbox_wait(s->mb, 50);
        void *m;
        while ((m = qg_mailbox_take(s->mb, 0)) != NULL) {
            qg_mailbox_reply(s->mb, 0, m);
            s->served++;
        }
    }
    return NULL;
}

typedef struct {
    qg_loop *l;
    qg_mailbox *mb;
    size_t posted, received, bad;
    qg_deferred kick;
    qg_timer guard; /* a lost wake-up stops the test after 30 s instead of hanging it */
    bool timed_out;
} worker_state;

static void on_guard(qg_timer *t)
{
    worker_state *w = t->ud;
    w->timed_out = true;
    qg_loop_stop(w->l);
}

static void post_some(worker_state *w)
{
    while (w->posted < MB_MSGS && qg_mailbox_post(w->mb, 0, ITEM(w->posted), true))
        w->posted++;
}

static void on_reply(void *ud)
{
    worker_state *w = ud;
    void *m;
    while ((m = qg_mailbox_reply_pop(w->mb, 0)) != NULL) {
        if (m != ITEM(w->received)) w->bad++;
        w->received++;
    }
    if (w->received == MB_MSGS) qg_loop_stop(w->l);
    else post_some(w);
}

static void kick(qg_deferred *d)
{
    post_some(d->ud);
}

static void test_mailbox_round_trip(void **state)
{
    qg_mailbox mb;
    assert_int_equal(qg_mailbox_init(&mb, 1, 64), 0);
    qg_loop *l = qg_loop_new();
    assert_non_null(l);
    worker_state w = {.l = l, .mb = &mb};
    qg_notify n;
    assert_int_equal(qg_notify_init(l, &n, on_reply, &w), 0);
    qg_mailbox_attach(&mb, 0, &n);
    service_arg s = {.mb = &mb};
    atomic_init(&s.quit, false);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, service, &s), 0);
    qg_defer(l, &w.kick, kick, &w);
    qg_timer_init(&w.guard, on_guard, &w);
    qg_timer_start(l, &w.guard, 30000);
    assert_int_equal(qg_loop_run(l), 0);
    qg_timer_stop(l, &w.guard);
    atomic_store(&s.quit, true);
    qg_mailbox_wake(&mb);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_false(w.timed_out);
    assert_int_equal(w.received, MB_MSGS);
    assert_int_equal(w.bad, 0);
    assert_int_equal(s.served, MB_MSGS);
    assert_null(qg_mailbox_reply_pop(&mb, 0));
    assert_null(qg_mailbox_take(&mb, 0));
    qg_notify_close(l, &n);
    qg_loop_free(l);
    qg_mailbox_free(&mb);
}

static void test_mailbox_post_full_and_wake(void **state)
{
    qg_mailbox mb;
    assert_int_equal(qg_mailbox_init(&mb, 2, 4), 0);
    for (size_t i = 0; i < 4; i++) assert_true(qg_mailbox_post(&mb, 1, ITEM(i), false));
    assert_false(qg_mailbox_post(&mb, 1, ITEM(4), false)); /* full: the caller keeps the message */
    assert_null(qg_mailbox_take(&mb, 0));                   /* worker 0's ring is separate */
    for (size_t i = 0; i < 4; i++) assert_ptr_equal(qg_mailbox_take(&mb, 1), ITEM(i));
    assert_null(qg_mailbox_take(&mb, 1));
    /* A pending wake-up makes wait return at once (a lost one would block for 10 s). */
    assert_true(qg_mailbox_post(&mb, 0, ITEM(9), true));
    int64_t t0 = qg_mono_ms();
    qg_mailbox_wait(&mb, 10000);
    assert_true(qg_mono_ms() - t0 < 5000);
    assert_ptr_equal(qg_mailbox_take(&mb, 0), ITEM(9));
    /* Replies without an attached notify still arrive. */
    qg_mailbox_reply(&mb, 1, ITEM(7));
    assert_ptr_equal(qg_mailbox_reply_pop(&mb, 1), ITEM(7));
    assert_null(qg_mailbox_reply_pop(&mb, 1));
    qg_mailbox_free(&mb);
}

/* ---- timers ---- */

typedef struct {
    qg_loop *l;
    int order[2048];
    int n;
} fire_log;

typedef struct {
    qg_timer t;
    int id;
    fire_log *log;
    int rearm_left; /* re-arm from the callback this many times */
} ttimer;

static void on_timer(qg_timer *t)
{
    ttimer *tt = t->ud;
    assert_ptr_equal(&tt->t, t);
    assert_false(qg_timer_active(t)); /* unscheduled before its callback runs */
    tt->log->order[tt->log->n++] = tt->id;
    if (tt->rearm_left > 0) {
        tt->rearm_left--;
        qg_timer_start(tt->log->l, t, 0);
        assert_true(qg_timer_active(t));
    }
}

static void on_stop(qg_timer *t)
{
    fire_log *log = t->ud;
    log->order[log->n++] = -1;
    qg_loop_stop(log->l);
}

static uint64_t rng_state;
static size_t rng_below(size_t n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (size_t)((rng_state >> 33) % n);
}

static void shuffle(int *v, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below((size_t)i + 1), t = v[i];
        v[i] = v[j], v[j] = t;
    }
}

/* Runs the loop with a stop timer whose deadline is after every other (all in the past). */
static void run_until_stop(qg_loop *l, fire_log *log, int64_t stop_deadline)
{
    qg_timer stop;
    qg_timer_init(&stop, on_stop, log);
    qg_timer_start_at(l, &stop, stop_deadline);
    assert_int_equal(qg_loop_run(l), 0);
    assert_false(qg_timer_active(&stop));
    assert_true(log->n > 0);
    assert_int_equal(log->order[log->n - 1], -1);
    log->n--; /* drop the stop marker */
}

/* qg_mailbox_serve: one message per worker per pass (a burst from one worker does not go
 * first), and everything posted before the stop is handled before it returns. */
typedef struct {
    int order[16];
    int n;
} served;

static void note_served(void *ctx, int worker, void *msg)
{
    served *s = ctx;
    s->order[s->n++] = worker * 100 + (int)(intptr_t)msg;
}

static void test_mailbox_serve_round_robin(void **state)
{
    qg_mailbox mb;
    assert_int_equal(qg_mailbox_init(&mb, 2, 8), 0);
    for (intptr_t i = 1; i <= 3; i++) assert_true(qg_mailbox_post(&mb, 0, (void *)i, false));
    assert_true(qg_mailbox_post(&mb, 1, (void *)(intptr_t)1, false));
    served s = {.n = 0};
    _Atomic bool stop = true; /* already stopping: serve handles what is there, then returns */
    qg_mailbox_serve(&mb, &stop, note_served, &s);
    assert_int_equal(s.n, 4);
    static const int want[] = {1, 101, 2, 3};
    for (int i = 0; i < 4; i++) assert_int_equal(s.order[i], want[i]);
    qg_mailbox_free(&mb);
}

static void test_timers_fire_in_deadline_order(void **state)
{
    enum { N = 300 }; /* beyond the heap's initial capacity */
    qg_loop *l = qg_loop_new();
    fire_log *log = calloc(1, sizeof *log);
    log->l = l;
    ttimer *t = calloc(N, sizeof *t);
    int perm[N];
    for (int i = 0; i < N; i++) perm[i] = i;
    rng_state = 7;
    shuffle(perm, N);
    int64_t base = qg_loop_now(l) - 100000;
    for (int k = 0; k < N; k++) {
        int i = perm[k];
        t[i].id = i, t[i].log = log;
        qg_timer_init(&t[i].t, on_timer, &t[i]);
        assert_false(qg_timer_active(&t[i].t));
        qg_timer_start_at(l, &t[i].t, base + 10 * i); /* deadline order == id order */
        assert_true(qg_timer_active(&t[i].t));
        assert_int_equal(t[i].t.deadline, base + 10 * i);
    }
    run_until_stop(l, log, base + 10 * N);
    assert_int_equal(log->n, N);
    for (int i = 0; i < N; i++) assert_int_equal(log->order[i], i);
    for (int i = 0; i < N; i++) assert_false(qg_timer_active(&t[i].t));
    free(t);
    free(log);
    qg_loop_free(l);
}

static void test_timer_stop_and_rearm(void **state)
{
    enum { N = 9 };
    qg_loop *l = qg_loop_new();
    fire_log *log = calloc(1, sizeof *log);
    log->l = l;
    ttimer t[N];
    int64_t base = qg_loop_now(l) - 1000;
    static const int start_order[N] = {4, 8, 0, 6, 2, 7, 1, 5, 3};
    for (int k = 0; k < N; k++) {
        int i = start_order[k];
        t[i] = (ttimer){.id = i, .log = log};
        qg_timer_init(&t[i].t, on_timer, &t[i]);
        qg_timer_start_at(l, &t[i].t, base + 10 * i);
    }
    qg_timer_stop(l, &t[4].t); /* a middle element */
    qg_timer_stop(l, &t[0].t); /* the root */
    qg_timer_stop(l, &t[8].t); /* the latest */
    assert_false(qg_timer_active(&t[4].t));
    assert_false(qg_timer_active(&t[0].t));
    qg_timer_stop(l, &t[4].t); /* stopping twice is harmless */
    qg_timer_start_at(l, &t[7].t, base + 5);   /* re-armed earlier: now before 1 */
    qg_timer_start_at(l, &t[1].t, base + 65);  /* re-armed later: between 6 and 7's old place */
    qg_timer_start_at(l, &t[0].t, base + 100); /* stopped, then started again: last */
    qg_timer_start_at(l, &t[5].t, base + 50);  /* re-armed to the same deadline */
    run_until_stop(l, log, base + 200);
    static const int want[] = {7, 2, 3, 5, 6, 1, 0};
    assert_int_equal(log->n, (int)QG_ARRAY_LEN(want));
    for (size_t i = 0; i < QG_ARRAY_LEN(want); i++) assert_int_equal(log->order[i], want[i]);
    free(log);
    qg_loop_free(l);
}

static void test_timer_rearm_from_callback(void **state)
{
    qg_loop *l = qg_loop_new();
    fire_log *log = calloc(1, sizeof *log);
    log->l = l;
    ttimer a = {.id = 1, .log = log, .rearm_left = 3}, b = {.id = 2, .log = log};
    qg_timer_init(&a.t, on_timer, &a);
    qg_timer_init(&b.t, on_timer, &b);
    int64_t now = qg_loop_now(l);
    qg_timer_start_at(l, &a.t, now - 50);
    qg_timer_start_at(l, &b.t, now - 40);
    /* a fires, re-arms itself for "now" (after b's past deadline) three times. */
    qg_timer stop;
    qg_timer_init(&stop, on_stop, log);
    qg_timer_start(l, &stop, 30); /* in the future: the loop must wait for it */
    int64_t t0 = qg_mono_ms();
    assert_int_equal(qg_loop_run(l), 0);
    assert_true(qg_mono_ms() - t0 >= 25);
    static const int want[] = {1, 2, 1, 1, 1, -1};
    assert_int_equal(log->n, (int)QG_ARRAY_LEN(want));
    for (size_t i = 0; i < QG_ARRAY_LEN(want); i++) assert_int_equal(log->order[i], want[i]);
    assert_false(qg_timer_active(&a.t));
    assert_true(qg_loop_now(l) >= now + 30);
    free(log);
    qg_loop_free(l);
}

static void test_timer_random_ops(void **state)
{
    enum { N = 500 };
    for (uint64_t seed = 1; seed <= 20; seed++) {
        rng_state = seed;
        qg_loop *l = qg_loop_new();
        fire_log *log = calloc(1, sizeof *log);
        log->l = l;
        ttimer *t = calloc(N, sizeof *t);
        int64_t *deadline = calloc(N, sizeof *deadline); /* INT64_MIN: not armed */
        int64_t base = qg_loop_now(l) - 10000000;
        for (int i = 0; i < N; i++) {
            t[i] = (ttimer){.id = i, .log = log};
            qg_timer_init(&t[i].t, on_timer, &t[i]);
            deadline[i] = INT64_MIN;
        }
        for (int op = 0; op < 4000; op++) {
            int i = (int)rng_below(N);
            if (rng_below(3) == 0) {
                qg_timer_stop(l, &t[i].t);
                deadline[i] = INT64_MIN;
            } else {
                deadline[i] = base + (int64_t)rng_below(9000) * 1000 + i; /* unique per timer */
                qg_timer_start_at(l, &t[i].t, deadline[i]);
            }
            assert_int_equal(qg_timer_active(&t[i].t), deadline[i] != INT64_MIN);
        }
        int expect[N], n = 0;
        for (int i = 0; i < N; i++)
            if (deadline[i] != INT64_MIN) expect[n++] = i;
        /* expected order: by deadline (insertion sort; small) */
        for (int a = 1; a < n; a++)
            for (int b = a; b > 0 && deadline[expect[b - 1]] > deadline[expect[b]]; b--) {
                int x = expect[b];
                expect[b] = expect[b - 1], expect[b - 1] = x;
            }
        run_until_stop(l, log, base + 9000 * 1000 + N);
        assert_int_equal(log->n, n);
        for (int k = 0; k < n; k++)
            if (log->order[k] != expect[k]) fail_msg("seed %d: fire %d was timer %d, want %d", (int)seed, k, log->order[k], expect[k]);
        free(deadline);
        free(t);
        free(log);
        qg_loop_free(l);
    }
}

/* ---- deferred ---- */

typedef struct {
    qg_deferred d;
    int id;
    fire_log *log;
    void *chain; /* a tdefer to queue from the callback */
} tdefer;

static void on_defer(qg_deferred *d)
{
    tdefer *td = d->ud;
    assert_false(d->queued);
    td->log->order[td->log->n++] = td->id;
    if (td->chain) {
        tdefer *next = td->chain;
        qg_defer(td->log->l, &next->d, on_defer, next);
    }
}

static void test_deferred(void **state)
{
    qg_loop *l = qg_loop_new();
    fire_log *log = calloc(1, sizeof *log);
    log->l = l;
    tdefer d[5];
    for (int i = 0; i < 5; i++) d[i] = (tdefer){.id = i, .log = log};
    d[1].chain = &d[4]; /* queued by 1's callback: runs in the same pass, after 3 */
    for (int i = 0; i < 4; i++) qg_defer(l, &d[i].d, on_defer, &d[i]);
    qg_defer(l, &d[0].d, on_defer, &d[0]); /* already queued: not twice */
    qg_defer_cancel(l, &d[2].d);           /* a middle one */
    assert_false(d[2].d.queued);
    qg_defer_cancel(l, &d[2].d);
    qg_timer stop;
    qg_timer_init(&stop, on_stop, log);
    qg_timer_start_at(l, &stop, qg_loop_now(l) - 1);
    assert_int_equal(qg_loop_run(l), 0);
    static const int want[] = {0, 1, 3, 4, -1};
    assert_int_equal(log->n, (int)QG_ARRAY_LEN(want));
    for (size_t i = 0; i < QG_ARRAY_LEN(want); i++) assert_int_equal(log->order[i], want[i]);

    /* Cancelling the tail, then queueing again, keeps the queue intact. */
    log->n = 0;
    qg_defer(l, &d[0].d, on_defer, &d[0]);
    qg_defer(l, &d[3].d, on_defer, &d[3]);
    qg_defer_cancel(l, &d[3].d);
    qg_defer(l, &d[2].d, on_defer, &d[2]);
    d[1].chain = NULL;
    qg_defer(l, &d[1].d, on_defer, &d[1]);
    qg_timer_start_at(l, &stop, qg_loop_now(l) - 1);
    assert_int_equal(qg_loop_run(l), 0);
    static const int want2[] = {0, 2, 1, -1};
    assert_int_equal(log->n, (int)QG_ARRAY_LEN(want2));
    for (size_t i = 0; i < QG_ARRAY_LEN(want2); i++) assert_int_equal(log->order[i], want2[i]);
    free(log);
    qg_loop_free(l);
}

/* ---- io: an owner freed by another's callback in the same batch ---- */

typedef struct {
    qg_loop *loop;
    qg_io io[2];
    int calls[2];
    bool stopped[2];
} io_pair;

static void peer_stopping_cb(qg_io *io, uint32_t events)
{
    io_pair *p = io->ud;
    int self = io == &p->io[0] ? 0 : 1, other = 1 - self;
    /* A stopped io is never called again, even with its event already in the batch. */
    assert_false(p->stopped[self]);
    p->calls[self]++;
    if (!p->stopped[other]) {
        qg_io_stop(p->loop, &p->io[other]); /* as a proxy freeing its upstream on client close */
        p->stopped[other] = true;
        memset(&p->io[other], 0x5a, sizeof p->io[other]); /* what a free would leave */
    }
    qg_loop_stop(p->loop);
}

/* Both fds are ready in one epoll batch; the first callback stops the second io.  Before
 * qg_io_stop cleared pending events, the loop then called through the dead io (a
 * use-after-free seen under load when wrk closed 32 connections at once). */
static void test_io_stopped_within_batch(void **state)
{
    for (int round = 0; round < 20; round++) {
        io_pair p = {.loop = qg_loop_new()};
        int fds[2][2];
        for (int k = 0; k < 2; k++) {
            assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds[k]), 0);
            assert_int_equal(write(fds[k][1], "x", 1), 1);
        }
        for (int k = 0; k < 2; k++) assert_int_equal(qg_io_start(p.loop, &p.io[k], fds[k][0], peer_stopping_cb, &p), 0);
        assert_int_equal(qg_loop_run(p.loop), 0);
        assert_int_equal(p.calls[0] + p.calls[1], 1);
        for (int k = 0; k < 2; k++) close(fds[k][0]), close(fds[k][1]);
        qg_loop_free(p.loop);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_order_full_empty),
        cmocka_unit_test(test_ring_wraparound),
        cmocka_unit_test(test_ring_two_threads),
        cmocka_unit_test(test_mailbox_round_trip),
        cmocka_unit_test(test_mailbox_post_full_and_wake),
        cmocka_unit_test(test_mailbox_serve_round_robin),
        cmocka_unit_test(test_timers_fire_in_deadline_order),
        cmocka_unit_test(test_timer_stop_and_rearm),
        cmocka_unit_test(test_timer_rearm_from_callback),
        cmocka_unit_test(test_timer_random_ops),
        cmocka_unit_test(test_deferred),
        cmocka_unit_test(test_io_stopped_within_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
