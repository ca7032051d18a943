/*
 * testutil.h — shared helpers for the cmocka unit tests: fixture loading and slices.
 * Every unit test binary runs from the repository root (make and scripts/run-tests.sh do so).
 */
#ifndef QG_TESTUTIL_H
#define QG_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common.h"

#define FIXTURES "tests/fixtures/providers/"

/* Reads a whole file (NUL-terminated, length in *n); fails the test if it is missing. */
static inline char *tu_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) fail_msg("short read %s", path);
    buf[len] = 0;
    fclose(f);
    if (n) *n = (size_t)len;
    return buf;
}

static inline char *tu_fixture(const char *name, size_t *n)
{
    char path[512];
    snprintf(path, sizeof path, FIXTURES "%s", name);
    return tu_read_file(path, n);
}

#define S(lit) qg_slice_of(lit)

#endif
