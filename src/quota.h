/*
 * quota.h — the upstream account quota core (SPEC §2, §4.1–4.5, §4.7): bucket arithmetic,
 * account states, eligibility, reservation and settlement, header snapshots, error
 * verdicts, the selection score, alerts and burn rate.
 *
 * Pure: no sockets, no SQLite, no globals, and no clock — every function that needs the
 * time takes `now` (epoch ms).  The proxy calls these functions with the real clock; the
 * unit tests and a fleet simulator call them with a virtual one.
 *
 * Sharing across workers without a lock: every mutable field of an account is a C11
 * atomic, and each is updated by whichever worker has the news (a response head, a
 * settlement, an error).  What a reader may see:
 *   - state and until are one packed word (qg_qacct.st), so a reader never sees a state
 *     with another state's until;
 *   - reservation is fetch_add, then a check that the reservation fits, then fetch_sub if
 *     it does not: two workers racing for the last unit may both back off (never both win);
 *   - window rollover is a compare-and-swap on the window's start, whose winner zeroes the
 *     window's use; a settlement racing it may land in either window (off by one request,
 *     never lost from the ledger, which is the source of truth);
 *   - a header snapshot is stored field by field: for a moment a reader may pair a new
 *     limit with an old remaining.  The next response corrects it; eligibility errs on
 *     the side of skipping.
 * See docs/quota.md for the rules in prose and docs/architecture.md for who writes what.
 *
 * Amounts are int64 in each unit's smallest integer: requests, tokens, micro-USD, and
 * percent windows in millionths of the window (QG_PERCENT_FULL).
 */
#ifndef QG_QUOTA_H
#define QG_QUOTA_H

#include "config.h"
#include "errclass.h"
#include "ratelimit.h"

#include <stdatomic.h>

#define QG_UNIT_N 6                      /* qg_unit values */
#define QG_SLIDING_SLICES 12             /* a sliding window is counted in period/12 slices */
#define QG_BURN_DAYS 7                   /* burn rate: the last 7 days of settled use */

/* Cooling after failures without a provider-stated end: 2 s doubling per consecutive
 * failure, at most 5 min.  Overloaded and transient answers cool QG_COOL_BRIEF_MS flat. */
#define QG_COOL_BASE_MS 2000
#define QG_COOL_MAX_MS 300000
#define QG_COOL_BRIEF_MS 2000
/* A depletion (or auth failure) with no reset the provider stated lasts 15 min, doubling
 * per repeat up to 6 h; then one trial request decides.  Stated resets further than
 * QG_TRUSTED_RESET_MAX_MS away are treated as unstated. */
#define QG_PROBATION_BASE_MS (15 * 60000)
#define QG_PROBATION_MAX_MS (6 * 3600000)
#define QG_TRUSTED_RESET_MAX_MS (8 * 86400000LL)
/* Alerts (docs/quota.md). */
#define QG_ALERT_WATCH_PPM 250000        /* watch below 25 % left */
#define QG_ALERT_TOPUP_PPM 100000        /* topup below 10 % left ... */
#define QG_ALERT_TOPUP_DAYS 7            /* ... or fewer than 7 days of burn left (credits) */
#define QG_ALERT_LOSE_PPM 100000         /* use_or_lose: >= 10 % of the limit projected lost ... */
#define QG_ALERT_LOSE_MS (7 * 86400000LL)/* ... within 7 days */

typedef enum { QG_ACCT_READY, QG_ACCT_COOLING, QG_ACCT_DEPLETED, QG_ACCT_AUTH_FAILED, QG_ACCT_DISABLED } qg_acct_state;
typedef enum { QG_SRC_CONFIG, QG_SRC_LOCAL, QG_SRC_HEADER, QG_SRC_ERROR, QG_SRC_OPERATOR } qg_quota_source;
typedef enum { QG_ALERT_OK, QG_ALERT_WATCH, QG_ALERT_TOPUP, QG_ALERT_USE_OR_LOSE, QG_ALERT_EXHAUSTED } qg_alert;

typedef struct {
    /* from the config (or the header slot it stands for); fixed after init */
    const char *name;
    qg_bucket_kind kind;
    qg_unit unit;
    qg_reset_mode reset;
    int64_t period_ms, anchor_ms, expires_at_ms;
    int64_t cfg_limit;               /* -1 unknown */
    int header_slot;                 /* the qg_rl_slot that feeds it, -1 none */
    bool implicit;                   /* made for a header slot no configured bucket matched */
    bool pool;                       /* combine: any treats it as an alternative pool */
    /* mutable, shared */
    _Atomic int64_t limit;           /* -1 unknown */
    _Atomic int64_t used;            /* this window's use (windows), spent (credits) */
    _Atomic int64_t mark;            /* anchored: the window start `used` belongs to; first_use: open window's start (0 none) */
    _Atomic int64_t stated_reset;    /* a reset the provider stated (headers); 0 none */
    _Atomic int64_t *slice;          /* sliding buckets only: [QG_SLIDING_SLICES] use per slice */
    _Atomic int64_t *slice_no;       /* ... and which slice number each holds; NULL otherwise */
    _Atomic int source;              /* qg_quota_source of the latest knowledge */
    _Atomic int64_t updated_at;
    /* the latest header values for this bucket, raw (views) */
    _Atomic int64_t h_limit, h_remaining, h_reset, h_at;
} qg_qbucket;

typedef struct { int64_t v[QG_UNIT_N]; } qg_qamount;

typedef struct qg_qacct {
    const char *name;
    const char *provider;
    int priority, weight;
    bool combine_any, fail_closed;
    qg_qbucket *b;                   /* [n_b]: the configured ones [0, n_cfg), then implicit header buckets */
    size_t n_b, n_cfg;
    int slot_bucket[QG_RL_N];        /* bucket index per header slot */
    _Atomic unsigned live;           /* implicit buckets the provider has reported (bit i - n_cfg):
                                        the request path skips the others without touching them */
    /* mutable, shared */
    _Atomic uint64_t st;             /* until_ms << 4 | stated << 3 | state (see quota.c) */
    _Atomic int fails;               /* consecutive failed attempts */
    _Atomic int probation;           /* unstated depletions in a row */
    _Atomic int trial;               /* 1 while the one trial request is out */
    _Atomic int last_class;          /* qg_errclass of the last error verdict */
    _Atomic int64_t last_error_at;
    _Atomic int64_t reserved[QG_UNIT_N];/* estimates of the requests in flight, per unit */
    _Atomic int64_t inflight;        /* requests in flight (the provider's request window counts calls) */
    _Atomic int64_t day_no[QG_BURN_DAYS];
    _Atomic int64_t day_used[QG_BURN_DAYS][QG_UNIT_N];
    _Atomic int64_t skip_logged_at;  /* rate-limits "skipped" log lines */
    _Atomic int64_t saved_at;        /* persistence throttle */
    _Atomic uint32_t version;        /* bumped on every change worth saving */
    _Atomic uint32_t saved_version;  /* the version last handed to the store */
} qg_qacct;

/* Why an account cannot take a request now. */
typedef enum {
    QG_BLOCK_NONE, QG_BLOCK_DISABLED, QG_BLOCK_AUTH, QG_BLOCK_COOLING, QG_BLOCK_DEPLETED, QG_BLOCK_BUCKET,
    QG_BLOCK_HEADER, QG_BLOCK_TRIAL
} qg_block;

typedef struct {
    qg_qacct *a;                     /* NULL: nothing reserved */
    qg_qamount est;
    bool trial;                      /* this request is the account's trial */
    unsigned fed;                    /* header slots its response reported (1 << slot): the
                                        provider's count already includes it, so settling
                                        does not count it into those buckets again */
} qg_qresv;

/* ---- setup ---- */
void qg_qacct_init(qg_qacct *a, const qg_provider_cfg *p, const qg_account_cfg *ac);
void qg_qacct_free(qg_qacct *a);
int64_t qg_quota_amount(qg_unit u, double cfg_value);   /* config number -> integer amount */

/* What a request costs per unit: requests = the model's weight, tokens, micro-USD at the
 * model's prices (m may be NULL). */
void qg_quota_cost(const qg_model_cfg *m, int64_t input_tokens, int64_t output_tokens, qg_qamount *out);
/* The estimate reserved before the call: the prompt (bytes / 4) plus
 * min(max_tokens if given, the model's max_output_tokens if set, default_output: limits.
 * default_output_tokens, or QG_DEFAULT_OUTPUT_ESTIMATE when <= 0). */
void qg_quota_estimate(const qg_model_cfg *m, size_t body_len, int64_t max_tokens, int64_t default_output, qg_qamount *out);

/* ---- the request path ---- */
/* Reserves est on the account if it may take the request now.  Returns true (r filled), or
 * false with *until = the earliest moment it may (0: not known, e.g. disabled). */
bool qg_quota_reserve(qg_qacct *a, const qg_qamount *est, int64_t now, qg_qresv *r, int64_t *until, qg_block *why);
/* Ends a reservation: with the actual use (settle) or none (release).  Exactly one per reserve. */
bool qg_quota_settle(qg_qresv *r, const qg_qamount *actual, int64_t now); /* true: it used a bucket up */
void qg_quota_release(qg_qresv *r);
/* May the account take est now?  Same rules as reserve, nothing changed. */
bool qg_quota_eligible(const qg_qacct *a, const qg_qamount *est, int64_t now, int64_t *until, qg_block *why);

/* ---- what responses say ---- */
/* Applies a header snapshot (a snapshot with n_found == 0 changes nothing); returns the
 * slots it applied as a mask (1 << slot), for qg_qresv.fed. */
unsigned qg_quota_on_headers(qg_qacct *a, const qg_rl_snapshot *s, int64_t now);
/* A failed attempt: an error verdict, or a transport failure (v->cls = QG_EC_SERVER_ERROR). */
void qg_quota_on_failure(qg_qacct *a, const qg_error_verdict *v, int64_t now);
/* An attempt the provider served: consecutive failures and probation end. */
void qg_quota_on_success(qg_qacct *a, int64_t now);
/* Operator: enable ends any cooling, depletion or auth failure (and local credit
 * exhaustion: the bucket's configured limit is set aside until restart); disable pauses. */
void qg_quota_enable(qg_qacct *a, int64_t now);
void qg_quota_disable(qg_qacct *a, int64_t now);

/* ---- views and selection ---- */
qg_acct_state qg_quota_state(const qg_qacct *a, int64_t now, int64_t *until, bool *stated);
typedef struct {
    int64_t limit, used, remaining;  /* -1 unknown */
    int64_t ratio_ppm;               /* remaining / limit in millionths, -1 unknown */
    int64_t reset_ms;                /* 0 none known */
    int64_t expires_ms;              /* credits: 0 none */
    int64_t burn_per_day;            /* units per day */
    int64_t at_risk;                 /* projected to be lost at the reset / expiry */
    double days_left, days_to_expiry;/* -1 unknown */
    qg_alert alert;
    qg_quota_source source;
    const char *confidence;          /* high | medium | low */
    int64_t updated_at;
} qg_bucket_status;
void qg_quota_bucket_status(const qg_qacct *a, size_t i, int64_t now, qg_bucket_status *out);
int64_t qg_quota_burn_per_day(const qg_qacct *a, qg_unit u, int64_t now);

/* The selection score inside a priority tier (SPEC §4.5): accounts with capacity that will
 * be lost first (pressure: the share of a bucket projected lost, per hour left before
 * the loss), then the most remaining (in tenths: band 0..10), then weight rotation. */
typedef struct {
    int64_t pressure;                /* 0: nothing would be lost */
    int band;                        /* remaining in tenths; 10: full or unknown */
} qg_qrank;
void qg_quota_rank(const qg_qacct *a, int64_t now, qg_qrank *out);
/* Orders candidate accounts by score (best first), stable for equal scores.  The policy the
 * router applies, as one function over plain state (a fleet simulator compares it). */
void qg_quota_order(qg_qacct *const *accts, size_t n, int64_t now, size_t *order);

const char *qg_acct_state_name(qg_acct_state s);
const char *qg_alert_name(qg_alert a);
const char *qg_quota_source_name(qg_quota_source s);
const char *qg_block_name(qg_block b);
const char *qg_unit_name(qg_unit u);

/* Persistence: the account's mutable state as one line of text, and back (pure). */
void qg_quota_serialize(const qg_qacct *a, qg_buf *out);
int qg_quota_restore(qg_qacct *a, const char *text, size_t n, int64_t now);

#endif
