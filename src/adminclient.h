/*
 * adminclient.h — the CLI side of the admin API: a small blocking HTTP/1.1 client that
 * sends one request with the config's admin_token to the running gateway the config names
 * (its listen address), and a reader for the JSON that comes back (jscan's span scanner
 * for objects, plus an array walker; no tree is built).  Used by `quotagate status`
 * (status.c) and `quotagate keys` (keyscli.c).  This runs on the main thread of a CLI
 * command, never in the event loop.
 */
#ifndef QG_ADMINCLIENT_H
#define QG_ADMINCLIENT_H

#include "common.h"
#include "config.h"
#include "jscan.h"

/* Where the gateway of a config answers. */
typedef struct {
    char host[256];      /* to connect to: a wildcard listen address means this host */
    int port;            /* <= 0: unknown (the config listens on port 0) */
    char where[300];     /* "host:port" ("[::1]:8080"), for messages and the Host header */
    const char *token;   /* the config's admin_token; NULL or "" sends none */
} qg_admin_peer;

/* The peer for cfg: its listen address (0.0.0.0 -> 127.0.0.1, :: -> ::1) and admin_token.
 * The peer borrows cfg's token: keep cfg alive while the peer is used. */
void qg_admin_peer_of(const qg_config *cfg, qg_admin_peer *p);

/* One exchange: `METHOD path` (no request body; a POST, PUT or PATCH says Content-Length: 0)
 * with `Authorization: Bearer <token>`, `Connection: close` and User-Agent `agent`.
 * Connecting, and each send and receive after it, time out after 3 s, the whole exchange
 * after 10 s.  body: a qg_buf the caller initialised (its max bounds the answer).
 * Returns 0 with *status the HTTP status and body holding the response body (chunked
 * framing decoded); -1 if no connection was made; -2 if the exchange failed after it.
 * why gets the reason on failure. */
int qg_admin_request(const qg_admin_peer *p, const char *method, const char *path, const char *agent, qg_buf *body,
                     int *status, char *why, size_t cap);
/* The same with a JSON request body: req (req_len bytes) goes after the head, with
 * Content-Type: application/json and its Content-Length.  req NULL: as qg_admin_request. */
int qg_admin_request_body(const qg_admin_peer *p, const char *method, const char *path, const char *agent,
                          const char *req, size_t req_len, qg_buf *body, int *status, char *why, size_t cap);

/* The "code" and "message" of an OpenAI-style error body ({"error":{...}}); "" when absent.
 * Either output may be NULL. */
void qg_admin_error_of(const qg_buf *body, char *code, size_t code_cap, char *msg, size_t msg_cap);

/* "in 4h59m", "in 3d2h", "in 45s", "in <1s", "12m3s ago", "now": t relative to now, in the
 * two largest units, rounded down. */
void qg_admin_fmt_relative(int64_t t, int64_t now, char *out, size_t cap);

/* ---- reading the JSON ---- */

typedef struct {
    qg_json_type type;   /* QG_JSON_NONE: absent */
    const char *p;
    size_t n;
} qg_jval;

/* The whole text as a value to read as an object. */
static inline qg_jval qg_jval_text(const char *p, size_t n) { return (qg_jval){QG_JSON_OBJECT, p ? p : "", n}; }

/* Fills out[i] with the top-level member names[i] of object v (at most 32 names; jscan
 * validates v whole).  0, or -1 with a reason in *why (may be NULL). */
int qg_jval_members(qg_jval v, const char *const *names, size_t n, qg_jval *out, const char **why);
/* The next element of array v after offset *pos (0 to start); false after the last.  v must
 * come from a validated document (qg_jval_members checked it). */
bool qg_jval_next(qg_jval v, size_t *pos, qg_jval *el);
/* A string member into out: "-" when null or absent, "?" when it does not decode or fit. */
void qg_jval_str(qg_jval v, char *out, size_t cap);
/* A string member as a new heap string (caller frees); NULL when it is not a string or
 * does not decode. */
char *qg_jval_strdup(qg_jval v);
/* An integer member; -1 when null, absent or not an integer. */
int64_t qg_jval_int(qg_jval v);

#endif
