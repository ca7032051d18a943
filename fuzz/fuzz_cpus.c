/*
 * fuzz_cpus.c — every pure parser in cpus.h on arbitrary bytes: cpu.max, the v1 cfs pair
 * (the input split at its first '|', else in half), /proc/self/cgroup (v2 and v1 paths,
 * with roomy and tiny output buffers) and mountinfo (both versions).  Invariants: failures
 * leave outputs untouched, accepted limits are positive (or -1 = unlimited), CPU counts are
 * >= 1 and really are ceil(quota / period), and extracted paths are absolute,
 * NUL-terminated, fit their buffer and have no ".." component.
 */
#include "cpus.h"
#include "common.h"

#include <limits.h>

#define CHECK(c)                                                                                \
    do {                                                                                        \
        if (!(c)) __builtin_trap();                                                             \
    } while (0)

#define UNTOUCHED 0x5a5a5a5a5aLL

static void check_cpus(int64_t quota, int64_t period)
{
    int c = qg_cpus_from_quota(quota, period);
    CHECK(c >= 1);
    if (quota < 0 || period <= 0) {
        CHECK(c == INT_MAX);
        return;
    }
    /* c = max(1, ceil(q/p)) clamped to INT_MAX: (c-1)*p < q <= c*p unless clamped or q == 0 */
    __int128 q = quota, p = period;
    if (quota == 0) CHECK(c == 1);
    else if (c < INT_MAX) CHECK((__int128)(c - 1) * p < q && q <= (__int128)c * p);
    else CHECK((__int128)(INT_MAX - 1) * p < q);
}

static void check_limit(int rc, int64_t q, int64_t p)
{
    if (rc < 0) {
        CHECK(q == UNTOUCHED && p == UNTOUCHED);
        return;
    }
    CHECK(rc == 0);
    CHECK(q == -1 || q > 0);
    CHECK(p > 0);
    check_cpus(q, p);
}

static void check_path(int rc, const char *out, size_t cap, const uint8_t *data, size_t size)
{
    if (rc < 0) return;
    CHECK(rc == 0);
    size_t n = strnlen(out, cap);
    CHECK(n >= 1 && n < cap && out[0] == '/');
    CHECK(!strstr(out, "/../") && strcmp(out, "/..") != 0);
    CHECK(n < 3 || strcmp(out + n - 3, "/..") != 0);
    CHECK(memmem(data, size, out, n) != NULL); /* a copy of input bytes, not invented */
}

static void check_mount(int rc, const char *root, size_t rcap, const char *mnt, size_t mcap)
{
    if (rc < 0) return;
    CHECK(rc == 0);
    size_t rn = strnlen(root, rcap), mn = strnlen(mnt, mcap);
    CHECK(rn >= 1 && rn < rcap && root[0] == '/');
    CHECK(mn >= 1 && mn < mcap && mnt[0] == '/');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int64_t q = UNTOUCHED, p = UNTOUCHED;
    check_limit(qg_parse_cpu_max(s, size, &q, &p), q, p);

    const char *bar = memchr(s, '|', size);
    size_t k = bar ? (size_t)(bar - s) : size / 2;
    q = p = UNTOUCHED;
    check_limit(qg_parse_cfs_quota(s, k, s + k + (bar != NULL), size - k - (bar != NULL), &q, &p), q, p);
    q = p = UNTOUCHED;
    check_limit(qg_parse_cfs_quota(s, size, "100000\n", 7, &q, &p), q, p);

    if (size >= 16) {
        int64_t a, b;
        memcpy(&a, data, 8);
        memcpy(&b, data + 8, 8);
        check_cpus(a, b);
        check_cpus(a < 0 ? -(a + 1) : a, b % 1000000 + 1000000); /* realistic periods */
    }

    static const size_t caps[] = {1, 2, 8, 4096};
    for (size_t i = 0; i < QG_ARRAY_LEN(caps); i++) {
        char out[4096];
        check_path(qg_parse_cgroup_v2_path(s, size, out, caps[i]), out, caps[i], data, size);
        check_path(qg_parse_cgroup_v1_path(s, size, out, caps[i]), out, caps[i], data, size);
        char root[4096], mnt[4096];
        for (int v = 0; v <= 3; v++) {
            int rc = qg_parse_mountinfo_cgroup(s, size, v, root, caps[i], mnt, caps[QG_ARRAY_LEN(caps) - 1 - i]);
            if (v != 1 && v != 2) CHECK(rc == -1);
            check_mount(rc, root, caps[i], mnt, caps[QG_ARRAY_LEN(caps) - 1 - i]);
        }
    }
    return 0;
}
