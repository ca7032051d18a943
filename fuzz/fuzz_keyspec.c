/*
 * fuzz_keyspec.c — an admin API key body (POST/PATCH /admin/keys: qg_key_spec_parse) on
 * arbitrary bytes.  Beyond "no crash, no leak", the contract: all or nothing (a spec and no
 * errors, or -1, a zeroed spec and one "body:..." message, its problems joined by ';'), `present` only names known
 * fields, a parsed spec holds sane values, and ${ENV} is never expanded (an environment
 * secret appears in nothing unless the input spelled it out).
 */
#include <stdlib.h>

#include "config.h"
#include "guarded.h"

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

#define SECRET "fz-keyspec-7c1d"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setenv("QG_FUZZ_SECRET", SECRET, 1);
    return 0;
}

static void check_spec(const qg_key_spec *s)
{
    CHECK((s->present & ~63u) == 0);
    CHECK(!s->k.name || (s->present & QG_KS_NAME));
    CHECK(s->k.n_policies <= QG_KEY_MAX_POLICIES);
    CHECK(s->k.total_quota < 0 || s->k.total_quota <= 1e15);
    for (size_t i = 0; i < s->k.n_models; i++) CHECK(s->k.models[i] && !strstr(s->k.models[i], SECRET));
    CHECK(!s->k.name || !strstr(s->k.name, SECRET));
    for (size_t i = 0; i < s->k.n_policies; i++) CHECK(s->k.policies[i].limit > 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = guarded_copy(data, size);
    bool spelled = memmem(data, size, SECRET, strlen(SECRET)) != NULL;
    qg_buf errs;
    qg_buf_init(&errs, 0);
    qg_key_spec s;
    int rc = qg_key_spec_parse(text, size, &s, &errs);
    if (rc == 0) {
        CHECK(errs.len == 0);
        if (!spelled) check_spec(&s);
        qg_key_spec_free(&s);
    } else {
        CHECK(rc == -1 && s.present == 0 && s.k.name == NULL && s.k.policies == NULL);
        CHECK(errs.len > 5 && !memcmp(errs.data, "body", 4));
        CHECK(errs.data[errs.len - 1] == 0 && !memchr(errs.data, '\n', errs.len)); /* one message */
        if (!spelled) CHECK(!memmem(errs.data, errs.len, SECRET, strlen(SECRET)));
    }
    qg_buf_free(&errs);
    return 0;
}
