/*
 * retry.c — the retry policy and the all-attempts-failed error.  See retry.h.
 */
#include "retry.h"

#include "errclass.h"

#include <stdio.h>

bool qg_retryable_status(int st) { return st == 429 || st == 401 || st == 403 || st >= 500; }

qg_attempt_action qg_after_attempt(int status, qg_uperr err, bool relayed, int attempts_made, int max_attempts)
{
    if (relayed) return status ? QG_ATTEMPT_RELAY : QG_ATTEMPT_BROKEN;
    if (status && !qg_retryable_status(status)) return QG_ATTEMPT_RELAY;
    QG_UNUSED(err); /* every transport failure before relaying is retryable */
    return attempts_made < max_attempts && attempts_made < QG_MAX_ATTEMPTS ? QG_ATTEMPT_NEXT : QG_ATTEMPT_GIVE_UP;
}

qg_attempt_action qg_after_verdict(int cls, int attempts_made, int max_attempts)
{
    if (cls == QG_EC_NONE || cls == QG_EC_CLIENT_ERROR) return QG_ATTEMPT_RELAY;
    return attempts_made < max_attempts && attempts_made < QG_MAX_ATTEMPTS ? QG_ATTEMPT_NEXT : QG_ATTEMPT_GIVE_UP;
}

void qg_attempt_log_add(qg_attempt_log *log, int status, qg_uperr err, int64_t retry_after_ms)
{
    log->last_status = status;
    log->last_err = status ? QG_UPERR_NONE : err;
    if (status == 429 && retry_after_ms > log->max_retry_after_ms) log->max_retry_after_ms = retry_after_ms;
}

static void set(qg_client_error *e, int status, const char *code, const char *msg)
{
    e->status = status;
    e->code = code;
    snprintf(e->message, sizeof e->message, "%s", msg);
}

void qg_attempts_error(const qg_attempt_log *log, qg_client_error *out)
{
    out->retry_after_s = 0;
    int st = log->last_status;
    if (st == 429) {
        set(out, 503, "no_account_available", "every account tried for this model is rate limited by the provider; retry later");
        int64_t s = (log->max_retry_after_ms + 999) / 1000;
        out->retry_after_s = (int)QG_MIN(QG_MAX(s, (int64_t)1), (int64_t)86400);
    } else if (st == 401 || st == 403) {
        set(out, 502, "upstream_error", "the provider rejected the gateway's account credentials");
    } else if (st >= 500) {
        out->status = 502;
        out->code = "upstream_error";
        snprintf(out->message, sizeof out->message, "the provider failed on every attempt (last status %d)", st);
    } else if (log->last_err == QG_UPERR_TIMEOUT || log->last_err == QG_UPERR_IDLE_TIMEOUT) {
        set(out, 504, "upstream_timeout", "the provider did not answer in time on any attempt");
    } else {
        out->status = 502;
        out->code = "upstream_error";
        snprintf(out->message, sizeof out->message, "could not reach the provider on any attempt (%s)",
                 qg_uperr_name(log->last_err));
    }
}
