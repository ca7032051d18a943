/*
 * config.h — the gateway configuration (SPEC §2), loaded from YAML with libyaml.
 *
 * Loading is all-or-nothing: qg_config_load either returns a complete, validated config
 * or collects every problem it found as "file:line: field: message" lines.  `${VAR}` and
 * `${VAR:-default}` in scalar values are replaced from the environment; an unset variable
 * without a default is an error naming the variable (never its value).  Secrets (account
 * api_key, key secrets) are kept only where the gateway needs them: upstream api keys in
 * memory for the Authorization header, client keys only as SHA-256 hashes.
 *
 * Ownership: the qg_config owns every string and array inside it; qg_config_free releases
 * all of it.  A loaded config is immutable and shared read-only by all worker threads.
 */
#ifndef QG_CONFIG_H
#define QG_CONFIG_H

#include "common.h"
#include "dialect.h"

/* --- upstream buckets (SPEC §2/§4): parsed and validated now, enforced by the quota engine --- */
typedef enum { QG_BUCKET_CREDITS, QG_BUCKET_WINDOW, QG_BUCKET_RATE } qg_bucket_kind;
typedef enum {
    QG_UNIT_REQUESTS, QG_UNIT_TOKENS, QG_UNIT_INPUT_TOKENS, QG_UNIT_OUTPUT_TOKENS,
    QG_UNIT_USD, QG_UNIT_PERCENT
} qg_unit;
typedef enum { QG_RESET_ANCHORED, QG_RESET_FIRST_USE, QG_RESET_SLIDING } qg_reset_mode;

typedef struct {
    char *name;
    qg_bucket_kind kind;
    qg_unit unit;
    double limit;          /* < 0: unknown */
    int64_t period_ms;     /* window/rate: the period; 0 for credits */
    qg_reset_mode reset;
    int64_t anchor_ms;     /* anchored windows; 0 if none */
    int64_t expires_at_ms; /* credits; 0 if none */
    int line;
} qg_bucket_cfg;

typedef struct {
    char *name;
    char *api_key;         /* secret: never logged */
    int priority;          /* lower tier first; default 0 */
    int weight;            /* default 1 */
    bool combine_any;      /* combine: any (alternative pools) instead of all */
    bool fail_closed;
    qg_bucket_cfg *buckets;
    size_t n_buckets;
    int line;
} qg_account_cfg;

typedef struct {
    char *name;
    qg_dialect dialect;
    char *base_url;        /* as written */
    /* base_url split up: scheme, host, port and the path prefix without a trailing "/v1" */
    bool tls;
    char *host;
    int port;
    char *base_path;       /* "" or "/something" (never ends with '/') */
    char *ca_file;         /* NULL: system CAs */
    char *probe;           /* NULL: none */
    char **models;
    size_t n_models;
    qg_account_cfg *accounts;
    size_t n_accounts;
    int line;
} qg_provider_cfg;

typedef struct {
    char *name;
    double weight;                 /* default 1 */
    double input_usd_per_mtok;
    double output_usd_per_mtok;
    int64_t max_output_tokens;     /* 0: unknown */
    int line;
} qg_model_cfg;

/* --- downstream key policies (SPEC §4.8): parsed and validated now --- */
typedef enum { QG_PERIOD_5H, QG_PERIOD_DAILY, QG_PERIOD_WEEKLY, QG_PERIOD_MONTHLY, QG_PERIOD_MINUTES } qg_period_kind;
typedef struct {
    qg_period_kind period;
    int64_t minutes;       /* QG_PERIOD_MINUTES: "<N>m" */
    double limit;
    qg_unit unit;          /* requests | tokens | usd */
    int64_t anchor_ms;     /* default: 1970-01-01T00:00:00Z */
    int anchor_offset_min; /* the anchor's UTC offset, for daily/weekly/monthly wall-clock rules */
    bool strict;           /* boundary: strict (default) | graceful */
    bool on_exhausted_disable; /* on_exhausted: reject (default) | disable */
    bool auto_resume;      /* default true */
    int line;
} qg_policy_cfg;

typedef struct {
    char *name;
    uint8_t hash[32];      /* SHA-256 of the secret; the secret itself is not kept */
    char **models;         /* allowed models; NULL/0 = all */
    size_t n_models;
    double total_quota;    /* < 0: none */
    qg_policy_cfg *policies;
    size_t n_policies;
    bool disabled;         /* status: active (default) | disabled */
    int64_t expires_ms;    /* expires_at; 0: never */
    int line;
} qg_key_cfg;

/* An admin API body for a key (POST/PATCH /admin/keys): the fields given.  `present` has a
 * QG_KS_* bit per field that appeared, null included (null clears models, total_quota and
 * expires_at: in k they read as absent). */
enum { QG_KS_NAME = 1, QG_KS_MODELS = 2, QG_KS_TOTAL = 4, QG_KS_EXPIRES = 8, QG_KS_STATUS = 16, QG_KS_POLICIES = 32 };
typedef struct {
    qg_key_cfg k;
    unsigned present;
} qg_key_spec;
/* Parses a JSON object (read with the config's YAML loader: JSON is its flow subset, so
 * the fields get the same validation as in the config file; no ${ENV} expansion).  On
 * failure returns -1 and appends one NUL-terminated message to errs, the problems
 * ("body:LINE: field: message") joined by ';'. */
int qg_key_spec_parse(const char *text, size_t n, qg_key_spec *out, qg_buf *errs);
void qg_key_spec_free(qg_key_spec *s);
/* The longest key name (ids are at most QG_KEY_ID_MAX - 1 = 63 bytes; a config key's name is its id). */
#define QG_KEY_MAX_NAME 63
/* Whether a config key's name has the shape of an admin key's id ("key_" + 16 hex digits). */
bool qg_key_name_is_id_shaped(const char *name);

/* Output tokens a quota estimate reserves when neither the request nor the model names a
 * smaller maximum (limits.default_output_tokens overrides it). */
#define QG_DEFAULT_OUTPUT_ESTIMATE 1024
/* The most quota policies one key may have (keyquota.h keeps a counter ring for each). */
#define QG_KEY_MAX_POLICIES 16
/* The most accounts one request may be tried on (retry_attempts is validated against it). */
#define QG_MAX_ATTEMPTS 10
/* The most event-loop workers (`workers: N`, and the cap on `auto`). */
#define QG_MAX_WORKERS 256

typedef struct {
    uint64_t max_body;                 /* default 32 MiB */
    uint64_t max_header;               /* default 64 KiB */
    int max_connections;               /* default 10000, per process */
    int64_t client_idle_timeout_ms;    /* default 60 s */
    int64_t client_header_timeout_ms;  /* a whole request head, from its first byte; default 10 s */
    int64_t upstream_connect_timeout_ms;   /* default 5 s */
    int64_t upstream_first_byte_timeout_ms;/* default 120 s */
    int64_t stream_idle_timeout_ms;    /* default 300 s */
    int64_t drain_timeout_ms;          /* default 30 s */
    int retry_attempts;                /* attempts per request incl. the first; default 2, at most QG_MAX_ATTEMPTS */
    int64_t ledger_flush_ms;           /* default 100 ms */
    uint64_t max_sse_event;            /* default 1 MiB */
    int64_t default_output_tokens;     /* the output a quota estimate reserves at most (SPEC §4.10); default 1024 */
} qg_limits;

typedef struct {
    char *path;            /* the file it came from */
    char *listen_host;     /* default 127.0.0.1 */
    int listen_port;       /* default 8080 */
    int workers;           /* 0 = auto (one per core) */
    char *admin_token;     /* NULL: admin endpoints disabled (401) */
    char *store_sqlite;    /* default ./data/quotagate.db */
    qg_limits limits;
    qg_model_cfg *models;
    size_t n_models;
    qg_provider_cfg *providers;
    size_t n_providers;
    qg_key_cfg *keys;
    size_t n_keys;
} qg_config;

/* Loads and validates.  On failure returns -1 and, if errs is non-NULL, appends one line per
 * problem ("file:line: field: message\n") to it.  `name` labels the errors for _string. */
int qg_config_load(const char *path, qg_config **out, qg_buf *errs);
int qg_config_load_string(const char *text, size_t n, const char *name, qg_config **out, qg_buf *errs);
void qg_config_free(qg_config *c);
/* For the commands: loads path, or prints every problem to stderr and returns NULL. */
qg_config *qg_config_load_or_report(const char *path);
void qg_limits_defaults(qg_limits *l);

const qg_model_cfg *qg_config_model(const qg_config *c, qg_slice name);

#endif
