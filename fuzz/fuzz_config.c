/*
 * fuzz_config.c — the configuration loader on arbitrary bytes.  Beyond "no crash, no leak"
 * (ASan/LSan), it checks the loader's contract: all-or-nothing (a config and no errors, or
 * no config and at least one error), every error line names the file, a loaded config holds
 * only sane values, and an environment secret never appears in an error message unless the
 * input spelled it out itself.
 */
#include <stdlib.h>

#include "config.h"

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

#define SECRET "fz-secret-9f3b2c"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setenv("QG_FUZZ_SECRET", SECRET, 1);
    setenv("QG_FUZZ_EMPTY", "", 1);
    return 0;
}

static void check_errors(const qg_buf *errs)
{
    CHECK(errs->len > 0 && errs->data[errs->len - 1] == '\n');
    for (size_t i = 0; i < errs->len;) {
        const char *nl = memchr(errs->data + i, '\n', errs->len - i);
        CHECK(nl != NULL);
        CHECK((size_t)(nl - (errs->data + i)) > 9 && !memcmp(errs->data + i, "fuzz.yaml", 9));
        i = (size_t)(nl - errs->data) + 1;
    }
}

static void check_config(const qg_config *c)
{
    CHECK(c->listen_host && c->listen_port >= 0 && c->listen_port <= 65535);
    CHECK(c->workers >= 0 && c->workers <= 256 && c->store_sqlite);
    CHECK(c->limits.retry_attempts >= 1 && c->limits.retry_attempts <= 10 && c->limits.max_body > 0);
    for (size_t i = 0; i < c->n_providers; i++) {
        const qg_provider_cfg *p = &c->providers[i];
        CHECK(p->name && p->host && p->host[0] && p->port > 0 && p->port <= 65535 && p->base_path);
        size_t bl = strlen(p->base_path);
        CHECK(bl == 0 || (p->base_path[0] == '/' && p->base_path[bl - 1] != '/'));
        CHECK(p->n_models > 0 && p->n_accounts > 0);
        for (size_t a = 0; a < p->n_accounts; a++)
            CHECK(p->accounts[a].api_key && p->accounts[a].api_key[0] && p->accounts[a].weight >= 1);
    }
    for (size_t i = 0; i < c->n_keys; i++) {
        CHECK(c->keys[i].name && (c->keys[i].models == NULL) == (c->keys[i].n_models == 0));
        for (size_t j = 0; j < c->keys[i].n_policies; j++) CHECK(c->keys[i].policies[j].limit > 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qg_buf errs;
    qg_buf_init(&errs, 0);
    qg_config *c = (qg_config *)1;
    int rc = qg_config_load_string((const char *)data, size, "fuzz.yaml", &c, &errs);
    if (rc == 0) {
        CHECK(c != NULL && errs.len == 0);
        check_config(c);
    } else {
        CHECK(rc == -1 && c == NULL);
        check_errors(&errs);
        if (!memmem(data, size, SECRET, strlen(SECRET)))
            CHECK(!memmem(errs.data, errs.len, SECRET, strlen(SECRET)));
    }
    qg_config_free(c);
    qg_buf_free(&errs);
    return 0;
}
