/*
 * retry.h — the retry policy and the error a client gets when every attempt failed.
 *
 * Pure functions over plain values (no sockets, no clocks, no state of their own), so the
 * rules are one table each and are tested as tables (tests/unit/test_retry.c):
 *
 *   qg_after_attempt   an attempt answered (status) or failed (err): relay the answer,
 *                      try the next account, give up, or — when part of the response
 *                      already reached the client — end the client's response as broken.
 *                      A request is never sent again once anything was relayed.
 *   qg_attempts_error  every attempt failed: the status, code and message for the client,
 *                      and Retry-After (the largest any rate-limited attempt asked for).
 *
 * Retryable: 429, 401, 403 and 5xx answers, and every transport failure, while nothing
 * has reached the client and attempts remain.  Other statuses (2xx, 4xx) are the
 * provider's answer and are relayed as they are.
 */
#ifndef QG_RETRY_H
#define QG_RETRY_H

#include "upstream.h"

typedef enum {
    QG_ATTEMPT_RELAY,    /* pass this response to the client */
    QG_ATTEMPT_NEXT,     /* try the next account (if the router has one left) */
    QG_ATTEMPT_GIVE_UP,  /* answer the client with qg_attempts_error */
    QG_ATTEMPT_BROKEN,   /* the relayed response broke: end it visibly, never retry */
} qg_attempt_action;

/* status: the upstream response status, or 0 when the attempt failed with err. */
qg_attempt_action qg_after_attempt(int status, qg_uperr err, bool relayed, int attempts_made, int max_attempts);
bool qg_retryable_status(int status);
/* After an error answer classified by errclass.h: the client's own fault (client_error)
 * is relayed; every other class tries the next account while attempts remain. */
qg_attempt_action qg_after_verdict(int errclass, int attempts_made, int max_attempts);

/* What the failed attempts of one request said, accumulated as they happen. */
typedef struct {
    int last_status;           /* 0 when the last attempt got no response */
    qg_uperr last_err;
    int64_t max_retry_after_ms;/* the largest Retry-After a 429 gave; 0 if none */
} qg_attempt_log;

void qg_attempt_log_add(qg_attempt_log *log, int status, qg_uperr err, int64_t retry_after_ms);

typedef struct {
    int status;
    const char *code;          /* SPEC §3 */
    char message[128];
    int retry_after_s;         /* 0: no Retry-After header */
} qg_client_error;

void qg_attempts_error(const qg_attempt_log *log, qg_client_error *out);

#endif
