/*
 * keyquota.h — the counters behind an API key's total quota and periodic policies (SPEC
 * §4.8–4.11): all-or-nothing reservation before the call, settlement by the difference
 * after it, exhaustion, pause and resume.  Pure: no clock (`now` is a parameter), no I/O.
 *
 * Counters.  Each policy keeps one atomic word per window in a ring of QG_KQ_SLOTS slots
 * (window index mod QG_KQ_SLOTS): the window's tag (index mod 2^18) in the top 18 bits, its
 * generation (6 bits: 0 for a fresh window, one more at each manual reset) and its
 * `committed` amount (settled use plus the estimates of the requests in flight) in the low
 * 40.  A slot left untouched for exactly a multiple of 2^18 windows of its policy (half a
 * year of 1-minute windows) would read as current: accepted.  Admission is a
 * compare-and-swap on that one word — strict: committed < limit and committed + estimate
 * <= limit; graceful: committed < limit — so no reader ever sees a half-applied change.
 * The first admission of a new window swaps the slot's stale word (a window at least
 * QG_KQ_SLOTS old) for a fresh one.  Settlement adds actual - estimate to the word of the
 * window the reservation was admitted in, however late it arrives, as long as that window
 * is within the last QG_KQ_SLOTS windows (a request outliving four windows of its policy is
 * settled in the ledger only).  The total quota is one 64-bit committed amount.
 *
 * Resets.  A manual reset swaps the current window's word for (same window, next
 * generation, 0) and bumps the key's reset epoch in the pause word.  A settlement checks
 * the generation in the same compare-and-swap that applies it, so it lands wholly before a
 * reset (wiped with the window) or wholly after it (its estimate is gone: its whole use is
 * charged to the fresh count).  The rows and the reset carry the generations and the
 * epoch, and the store merges them by "newer generation wins, same generation adds"
 * (ledger.c): the order in which they reach the writer does not matter.
 *
 * All or nothing: the total quota and every policy are reserved in order; if one refuses,
 * those already taken are given back before the call returns (a concurrent reader may see
 * them for that moment and refuse a request that would have fitted: conservative, never an
 * over-admission).
 *
 * Amounts are integers in the policy's unit (requests, tokens, micro-USD); a policy limit
 * above QG_KQ_AMOUNT_MAX is treated as QG_KQ_AMOUNT_MAX (549,755,813,887 units, e.g. about
 * $550k per window).  The total quota is in micro-USD.
 */
#ifndef QG_KEYQUOTA_H
#define QG_KEYQUOTA_H

#include "config.h"
#include "policy.h"
#include "quota.h"

#include <stdatomic.h>

#define QG_KQ_SLOTS 4
#define QG_KQ_TAG_BITS 18
#define QG_KQ_GEN_BITS 6
#define QG_KQ_AMOUNT_BITS 40
/* The pause word: reset epoch (17 bits) << 47 | until_ms (42 bits) << 5 | policy + 1 (0: none). */
#define QG_KQ_PAUSE_EPOCH_SHIFT 47
#define QG_KQ_AMOUNT_MAX ((1LL << QG_KQ_AMOUNT_BITS) - 1)

typedef struct {
    qg_policy_cfg cfg;               /* a copy: keys change at run time, configs do not */
    int64_t limit;                   /* integer units, at most QG_KQ_AMOUNT_MAX */
    uint64_t signature;              /* qg_policy_signature, for the saved counters */
    char label[24];                  /* qg_policy_label: "daily", "90m", ... */
    char header[48];                 /* "x-quota-daily-", or "x-quota-daily-2-" for a second daily */
    uint8_t header_len;
    /* The window words: own[], or those of the same policy (same signature) in the
     * version of the key's counters this one replaced, so an edit of the key's policies
     * keeps the counts and a request admitted before the edit settles into the words its
     * successor reads. */
    _Atomic uint64_t *slot;
    _Atomic uint64_t own[QG_KQ_SLOTS];
} qg_kq_policy;

/* What every version of one key's counters shares (see qg_keyq_new_from). */
typedef struct {
    _Atomic int64_t total_committed; /* micro-USD */
    _Atomic int32_t inflight;        /* reservations with policies not yet settled or released */
} qg_kq_shared;

typedef struct qg_keyq {
    int n_p;
    int64_t total_limit;             /* micro-USD; -1 none */
    qg_kq_shared *sh;                /* &own_sh, or the first version's */
    const struct qg_keyq *prev;      /* the version this one replaced (never freed: keydir.h) */
    qg_kq_shared own_sh;
    /* The key's reset epoch and its pause after an on_exhausted: disable policy ran out
     * (QG_KQ_PAUSE_EPOCH_SHIFT): policy index + 1 (0 none), until_ms; until 0 means "until
     * a manual reset".  The first exhaustion wins (a second cannot overwrite the record),
     * and the key's own status is never touched. */
    _Atomic uint64_t pause;
    qg_kq_policy p[];                /* [n_p]: a key without policies costs ~32 bytes */
} qg_keyq;

typedef enum {
    QG_KQ_OK,
    QG_KQ_POLICY_EXHAUSTED,          /* 429 key_policy_exhausted */
    QG_KQ_QUOTA_EXHAUSTED,           /* 429 key_quota_exhausted */
    QG_KQ_PAUSED,                    /* 429 key_policy_exhausted: paused by an on_exhausted: disable policy */
} qg_kq_verdict;

typedef struct {
    bool active;
    uint8_t gen[QG_KEY_MAX_POLICIES];/* the generation each window was taken in; after the
                                        settlement, the generation it was charged to */
    int64_t total;                   /* micro-USD reserved on the total quota */
    int64_t est[QG_KEY_MAX_POLICIES];
    int64_t index[QG_KEY_MAX_POLICIES]; /* the window each policy admitted it in */
    int64_t end_ms[QG_KEY_MAX_POLICIES];/* ... and when that window resets */
} qg_kq_resv;

/* Why a reservation was refused: the policy, its reset (0: none known, e.g. manual reset
 * needed), and whether it resumes by itself then. */
typedef struct {
    int policy;                      /* -1: the total quota */
    int64_t reset_ms;
    bool auto_resume;
    bool too_large;                  /* the estimate exceeds the strict policy's whole limit */
} qg_kq_refusal;

/* A key's counters for its policies (at most QG_KEY_MAX_POLICIES are kept) and total quota
 * (< 0: none); free with free(). */
qg_keyq *qg_keyq_new(const qg_policy_cfg *policies, size_t n, double total_quota_usd);
/* The counters of an edited key: a policy with the signature of one of prev's (or of an
 * earlier version's: a policy edited away and back keeps its count, as the store does) shares its
 * window words, the total quota's amount and the in-flight count are shared, prev's reset
 * epoch carries over, and its pause too if its policy is still there.  prev must outlive the new
 * version (counters are never freed while the process runs: keydir.h). */
qg_keyq *qg_keyq_new_from(const qg_keyq *prev, const qg_policy_cfg *policies, size_t n, double total_quota_usd);
/* The settled amount in each policy's current window, or -1 while a reservation of the
 * key is in flight (the committed amounts then include estimates); for quota_counter_drift. */
int qg_keyq_settled(const qg_keyq *k, int i, int64_t now, int64_t *window, int64_t *used);
/* The index of the policy with this signature (qg_policy_signature); -1 if none (or sig 0). */
int qg_keyq_policy_index(const qg_keyq *k, uint64_t sig);
/* The amount of a policy's unit in a cost (requests, tokens or micro-USD). */
int64_t qg_keyq_amount(const qg_policy_cfg *p, const qg_qamount *cost);

/* What can be decided before the body (no estimate needed): a pause, a policy whose
 * current window is exhausted (used >= limit), a spent total quota.  Read-only except that
 * a pause whose time has come ends. */
qg_kq_verdict qg_keyq_precheck(qg_keyq *k, int64_t now, qg_kq_refusal *why);
qg_kq_verdict qg_keyq_reserve(qg_keyq *k, const qg_qamount *est, int64_t now, qg_kq_resv *r, qg_kq_refusal *why);
/* Ends a reservation with the actual cost (settle) or none (release).  Exactly one per
 * reservation; a second call on the same qg_kq_resv does nothing.  Returns true when the
 * settlement exhausted a policy (the caller may log it). */
bool qg_keyq_settle(qg_keyq *k, qg_kq_resv *r, const qg_qamount *actual, int64_t now);
void qg_keyq_release(qg_keyq *k, qg_kq_resv *r);
/* Manual reset (POST /admin/keys/{id}/reset): zeroes every policy's current window and
 * ends a pause.  The total quota is not touched.  *out: what the store must apply. */
typedef struct {
    int n;
    uint64_t policy[QG_KEY_MAX_POLICIES]; /* signature */
    int64_t window[QG_KEY_MAX_POLICIES];  /* the window zeroed ... */
    uint8_t gen[QG_KEY_MAX_POLICIES];     /* ... and its new generation */
    uint32_t epoch;                       /* the key's new reset epoch */
} qg_kq_reset;
void qg_keyq_reset(qg_keyq *k, int64_t now, qg_kq_reset *out);

/* Start-up: counters saved by settled ledger rows, with their generations.  A window
 * outside the ring of the policy's current one is ignored (it can no longer matter). */
void qg_keyq_restore_window(qg_keyq *k, int policy, int64_t window, int64_t used, unsigned gen, int64_t now);
void qg_keyq_restore_total(qg_keyq *k, int64_t used);
/* The saved reset epoch, and the pause of policy index `policy` (-1, or none of the
 * key's: not paused, e.g. a policy edited away). */
void qg_keyq_restore_pause(qg_keyq *k, int policy, int64_t until_ms, uint32_t epoch);
/* The key's pause now: the pausing policy's signature (0: not paused), its end (0: a
 * manual reset) and the reset epoch (may be NULL), for the store. */
uint64_t qg_keyq_pause_info(const qg_keyq *k, int64_t *until_ms, uint32_t *epoch);

/* A policy's current window as the views and x-quota headers show it. */
typedef struct {
    qg_window w;
    int64_t used;                    /* committed in the current window (settled + in flight) */
    int64_t remaining;               /* max(0, limit - used) */
    bool exhausted;                  /* used >= limit */
} qg_kq_status;
int qg_keyq_status(const qg_keyq *k, int i, int64_t now, qg_kq_status *out);
/* What is left of policy i in window `index` (a reservation's: no window arithmetic). */
int64_t qg_keyq_remaining(const qg_keyq *k, int i, int64_t index);
/* The policy with the least remaining share (for x-quota-remaining / -reset); -1 if none. */
int qg_keyq_tightest(const qg_keyq *k, int64_t now);

#endif
