/*
 * test_cpus.c — `workers: auto` CPU counting: the cpu.max / cfs_quota parsers, the
 * /proc/self/cgroup and mountinfo parsers (v2, v1, hybrid), the ceil rule, fake cgroup
 * trees in a temp dir (a parent limit tighter than the child's, v1 layouts, mountinfo
 * with a subtree mount), the affinity minimum, and the real qg_usable_cpus() against this
 * process's sched_getaffinity (run under `taskset -c 0` it must say 1).
 */
#include "testutil.h"
#include "cpus.h"

#include <ftw.h>
#include <limits.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#define UNTOUCHED 0x5a5a5a5a5aLL

/* ---- cpu.max ---- */

typedef struct {
    const char *text;
    int rc;
    int64_t quota, period;
    int cpus; /* qg_cpus_from_quota of the result */
} cpu_max_case;

static void test_parse_cpu_max(void **state)
{
    static const cpu_max_case cases[] = {
        {"max 100000\n", 0, -1, 100000, INT_MAX},
        {"max 100000", 0, -1, 100000, INT_MAX},
        {"max", 0, -1, 100000, INT_MAX},
        {"max 100000\n\n", 0, -1, 100000, INT_MAX},
        {"200000 100000\n", 0, 200000, 100000, 2},
        {"200000 100000", 0, 200000, 100000, 2},
        {"50000 100000\n", 0, 50000, 100000, 1},
        {"50000 100000", 0, 50000, 100000, 1},
        {"150000 100000\n", 0, 150000, 100000, 2},
        {"150000 100000", 0, 150000, 100000, 2},
        {"100000 100000\n", 0, 100000, 100000, 1},
        {"100001 100000\n", 0, 100001, 100000, 2},
        {"1000 1000000\n", 0, 1000, 1000000, 1},
        {" 200000\t100000 \r\n", 0, 200000, 100000, 2},
        {"9223372036854775807 100000\n", 0, INT64_MAX, 100000, INT_MAX},
        {"9223372036854775807 9223372036854775807", 0, INT64_MAX, INT64_MAX, 1},
        {"9223372036854775808 100000", -1},
        {"99999999999999999999 100000", -1},
        {"100000 99999999999999999999", -1},
        {"-1 100000", -1},
        {"200000 -100000", -1},
        {"-max 100000", -1},
        {"200000 0", -1},
        {"200000 0\n", -1},
        {"0 100000", -1},
        {"200000", -1},
        {"200000\n", -1},
        {"", -1},
        {"\n", -1},
        {"garbage", -1},
        {"max max", -1},
        {"MAX 100000", -1},
        {"200000 100000 5", -1},
        {"200000\n100000", -1},
        {"2e5 100000", -1},
        {"200000 100000x", -1},
        {"+200000 100000", -1},
        {"0x100 100000", -1},
        {"max 100000\ngarbage", -1},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        const cpu_max_case *c = &cases[i];
        int64_t q = UNTOUCHED, p = UNTOUCHED;
        int rc = qg_parse_cpu_max(c->text, strlen(c->text), &q, &p);
        if (rc != c->rc) fail_msg("case %zu \"%s\": rc %d want %d", i, c->text, rc, c->rc);
        if (rc < 0) {
            assert_int_equal(q, UNTOUCHED);
            assert_int_equal(p, UNTOUCHED);
            continue;
        }
        if (q != c->quota || p != c->period)
            fail_msg("case %zu \"%s\": %lld/%lld want %lld/%lld", i, c->text, (long long)q, (long long)p,
                     (long long)c->quota, (long long)c->period);
        assert_int_equal(qg_cpus_from_quota(q, p), c->cpus);
    }
    /* Lengths are honoured: no reading past n, an embedded NUL is garbage. */
    int64_t q = UNTOUCHED, p = UNTOUCHED;
    assert_int_equal(qg_parse_cpu_max("200000 100000junk", 13, &q, &p), 0);
    assert_int_equal(q, 200000);
    assert_int_equal(p, 100000);
    assert_int_equal(qg_parse_cpu_max("200000\0 100000", 14, &q, &p), -1);
    assert_int_equal(qg_parse_cpu_max(NULL, 0, &q, &p), -1);
}

static void test_cpus_from_quota(void **state)
{
    static const struct {
        int64_t quota, period;
        int want;
    } cases[] = {
        {200000, 100000, 2},
        {50000, 100000, 1},
        {150000, 100000, 2},
        {100000, 100000, 1},
        {100001, 100000, 2},
        {3200000, 100000, 32},
        {1, 100000, 1},
        {0, 100000, 1},
        {-1, 100000, INT_MAX},
        {-12345, 100000, INT_MAX},
        {100000, 0, INT_MAX},
        {100000, -5, INT_MAX},
        {INT64_MAX, 1, INT_MAX},
        {INT64_MAX, INT64_MAX, 1},
        {INT64_MAX - 1, INT64_MAX, 1},
        {(int64_t)INT_MAX * 1000, 1000, INT_MAX},
        {(int64_t)(INT_MAX - 1) * 1000 + 1, 1000, INT_MAX},
        {(int64_t)(INT_MAX - 2) * 1000 + 1, 1000, INT_MAX - 1},
        {(int64_t)INT_MAX * 1000 + 1, 1000, INT_MAX},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        int got = qg_cpus_from_quota(cases[i].quota, cases[i].period);
        if (got != cases[i].want)
            fail_msg("case %zu: %lld/%lld -> %d want %d", i, (long long)cases[i].quota, (long long)cases[i].period,
                     got, cases[i].want);
    }
}

/* ---- cgroup v1 cfs ---- */

static void test_parse_cfs_quota(void **state)
{
    static const struct {
        const char *quota, *period;
        int rc;
        int64_t q, p;
        int cpus;
    } cases[] = {
        {"-1\n", "100000\n", 0, -1, 100000, INT_MAX},
        {"-1", "100000", 0, -1, 100000, INT_MAX},
        {"50000\n", "100000\n", 0, 50000, 100000, 1},
        {"100000\n", "100000\n", 0, 100000, 100000, 1},
        {"150000\n", "100000\n", 0, 150000, 100000, 2},
        {"250000", "100000", 0, 250000, 100000, 3},
        {" 200000 \n", "\t100000\n", 0, 200000, 100000, 2},
        {"9223372036854775807\n", "1\n", 0, INT64_MAX, 1, INT_MAX},
        {"-2\n", "100000\n", -1},
        {"-9223372036854775807", "100000", -1},
        {"0\n", "100000\n", -1},
        {"50000\n", "0\n", -1},
        {"50000\n", "-1\n", -1},
        {"-1\n", "0\n", -1},
        {"abc", "100000", -1},
        {"", "100000", -1},
        {"50000", "", -1},
        {"-", "100000", -1},
        {"--1", "100000", -1},
        {"50000 1", "100000", -1},
        {"99999999999999999999", "100000", -1},
        {"50000", "99999999999999999999", -1},
        {"max", "100000", -1},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        int64_t q = UNTOUCHED, p = UNTOUCHED;
        int rc = qg_parse_cfs_quota(cases[i].quota, strlen(cases[i].quota), cases[i].period, strlen(cases[i].period),
                                    &q, &p);
        if (rc != cases[i].rc) fail_msg("case %zu \"%s\"/\"%s\": rc %d", i, cases[i].quota, cases[i].period, rc);
        if (rc < 0) {
            assert_int_equal(q, UNTOUCHED);
            assert_int_equal(p, UNTOUCHED);
            continue;
        }
        assert_int_equal(q, cases[i].q);
        assert_int_equal(p, cases[i].p);
        assert_int_equal(qg_cpus_from_quota(q, p), cases[i].cpus);
    }
}

/* ---- /proc/self/cgroup ---- */

/* This container's file (cgroup v1 controllers plus an empty unified hierarchy). */
#define HYBRID_CONTAINER                                                                          \
    "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n"                           \
    "4:memory:/process_api/983c8eec58c70fecfbf3bda142316315\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n"

/* A systemd hybrid host. */
#define HYBRID_HOST                                                                               \
    "12:cpu,cpuacct:/user.slice\n11:cpuset:/\n10:memory:/user.slice/user-1000.slice/session-2.scope\n" \
    "1:name=systemd:/user.slice/user-1000.slice/session-2.scope\n0::/user.slice/user-1000.slice/session-2.scope\n"

typedef struct {
    const char *text;
    int v2_rc;
    const char *v2;
    int v1_rc;
    const char *v1;
} cgroup_case;

static void test_parse_cgroup_paths(void **state)
{
    static const cgroup_case cases[] = {
        {"0::/user.slice/x.scope\n", 0, "/user.slice/x.scope", -1, NULL},
        {"0::/user.slice/x.scope", 0, "/user.slice/x.scope", -1, NULL},
        {"0::/\n", 0, "/", -1, NULL},
        {"0::/x\r\n", 0, "/x", -1, NULL},
        {"0::/a:b/c\n", 0, "/a:b/c", -1, NULL},
        {"0::/a/..b/c..\n", 0, "/a/..b/c..", -1, NULL},
        {HYBRID_CONTAINER, 0, "/", 0, "/"},
        {HYBRID_HOST, 0, "/user.slice/user-1000.slice/session-2.scope", 0, "/user.slice"},
        {"4:cpu,cpuacct:/docker/ab\n3:cpuset:/docker/ab\n", -1, NULL, 0, "/docker/ab"},
        {"2:cpuacct,cpu:/x\n", -1, NULL, 0, "/x"},
        {"3:cpuset:/a\n2:cpuacct:/b\n1:cpu:/c\n", -1, NULL, 0, "/c"},
        {"5:cpuset,cpuacct:/x\n1:name=systemd:/y\n", -1, NULL, -1, NULL},
        {"1:name=cpu:/y\n", -1, NULL, -1, NULL},
        {"", -1, NULL, -1, NULL},
        {"\n\n", -1, NULL, -1, NULL},
        {"garbage\n", -1, NULL, -1, NULL},
        {"0::relative\n", -1, NULL, -1, NULL},
        {"0::\n", -1, NULL, -1, NULL},
        {"0::/a/../b\n", -1, NULL, -1, NULL},
        {"0::/..\n1:cpu:/../x\n", -1, NULL, -1, NULL},
        {"0:cpu:/x\n", -1, NULL, 0, "/x"}, /* a non-empty list is not the v2 line */
        {"10::/x\n", -1, NULL, -1, NULL},
        {"00::/x\n", -1, NULL, -1, NULL},
        {"1:cpu\n", -1, NULL, -1, NULL},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        const cgroup_case *c = &cases[i];
        char out[256];
        int rc = qg_parse_cgroup_v2_path(c->text, strlen(c->text), out, sizeof out);
        if (rc != c->v2_rc) fail_msg("case %zu v2: rc %d want %d", i, rc, c->v2_rc);
        if (rc == 0) assert_string_equal(out, c->v2);
        rc = qg_parse_cgroup_v1_path(c->text, strlen(c->text), out, sizeof out);
        if (rc != c->v1_rc) fail_msg("case %zu v1: rc %d want %d", i, rc, c->v1_rc);
        if (rc == 0) assert_string_equal(out, c->v1);
    }
    char small[5];
    assert_int_equal(qg_parse_cgroup_v2_path("0::/abcd\n", 9, small, sizeof small), -1); /* no room for the NUL */
    assert_int_equal(qg_parse_cgroup_v2_path("0::/abc\n", 8, small, sizeof small), 0);
    assert_string_equal(small, "/abc");
    assert_int_equal(qg_parse_cgroup_v2_path("0::/a\0b\n", 8, small, sizeof small), -1);
    assert_int_equal(qg_parse_cgroup_v2_path("0::/abc\n", 8, small, 0), -1);
    assert_int_equal(qg_parse_cgroup_v1_path("1:cpu:/abc", 6, small, sizeof small), -1); /* cut before the path */
}

/* ---- /proc/self/mountinfo ---- */

#define MI_CONTAINER                                                                              \
    "23 1 0:27 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n"         \
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"                         \
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"                        \
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"                \
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"                  \
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"           \
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"

static void test_parse_mountinfo(void **state)
{
    static const struct {
        const char *text;
        int version, rc;
        const char *root, *mnt;
    } cases[] = {
        {MI_CONTAINER, 2, 0, "/", "/sys/fs/cgroup/unified"},
        {MI_CONTAINER, 1, 0, "/", "/sys/fs/cgroup/cpu"},
        {"29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
         "rw,nsdelegate,memory_recursiveprot\n",
         2, 0, "/", "/sys/fs/cgroup"},
        {"29 23 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw\n", 1, -1},
        {"1234 1200 0:30 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev master:11 - cgroup cgroup "
         "rw,cpu,cpuacct\n",
         1, 0, "/docker/abc", "/sys/fs/cgroup/cpu,cpuacct"},
        {"5 1 0:30 / /cg ro shared:1 master:2 propagate_from:3 - cgroup cgroup rw,cpuacct,cpu\n", 1, 0, "/", "/cg"},
        {"5 1 0:30 / /cg ro - cgroup cgroup rw,cpuset\n", 1, -1},
        {"5 1 0:30 / /cg ro - cgroup cgroup rw,cpuacct\n", 1, -1},
        {"5 1 0:30 / /cg ro - cgroup cgroup rw,name=cpu\n", 1, -1},
        {"5 1 0:30 / /cg ro - cgroup\n", 1, -1},
        {"5 1 0:30 / /mnt/my\\040cg rw - cgroup2 none rw\n", 2, 0, "/", "/mnt/my cg"},
        {"5 1 0:30 /a\\134b /x rw - cgroup2 none rw\n", 2, 0, "/a\\b", "/x"},
        {"5 1 0:30 / /mnt/\\000 rw - cgroup2 none rw\n", 2, -1},
        {"5 1 0:30 / relative rw - cgroup2 none rw\n", 2, -1},
        {"5 1 0:30 / /x rw cgroup2 none rw\n", 2, -1}, /* no separator */
        {"5 1 0:30 / /x - cgroup2 none rw\n", 2, -1},   /* separator too early */
        {"5 1 0:30 / /x rw -\n", 2, -1},
        {"", 2, -1},
        {"garbage\n", 1, -1},
    };
    for (size_t i = 0; i < QG_ARRAY_LEN(cases); i++) {
        char root[64], mnt[64];
        int rc = qg_parse_mountinfo_cgroup(cases[i].text, strlen(cases[i].text), cases[i].version, root, sizeof root,
                                           mnt, sizeof mnt);
        if (rc != cases[i].rc) fail_msg("case %zu: rc %d want %d", i, rc, cases[i].rc);
        if (rc == 0) {
            assert_string_equal(root, cases[i].root);
            assert_string_equal(mnt, cases[i].mnt);
        }
    }
    char root[8], mnt[8];
    assert_int_equal(qg_parse_mountinfo_cgroup(MI_CONTAINER, strlen(MI_CONTAINER), 2, root, sizeof root, mnt,
                                               sizeof mnt),
                     -1); /* "/sys/fs/cgroup/unified" does not fit */
    assert_int_equal(qg_parse_mountinfo_cgroup(MI_CONTAINER, strlen(MI_CONTAINER), 3, root, sizeof root, mnt,
                                               sizeof mnt),
                     -1);
}

/* ---- fake trees ---- */

static char tmp[256];

static int setup_tmp(void **state)
{
    snprintf(tmp, sizeof tmp, "/tmp/qg-test-cpus-XXXXXX");
    return mkdtemp(tmp) ? 0 : -1;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

static int teardown_tmp(void **state) { return nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* tmp + "/" + rel, in a rotating set of static buffers. */
static const char *at(const char *rel)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmp, rel);
    return b;
}

static void mkdirs(const char *path)
{
    char p[512];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0755);
            *s = '/';
        }
    mkdir(p, 0755);
}

/* Writes tmp/rel (creating its directories). */
static void put(const char *rel, const char *text)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", at(rel));
    char *slash = strrchr(dir, '/');
    *slash = 0;
    mkdirs(dir);
    FILE *f = fopen(at(rel), "w");
    if (!f) fail_msg("cannot create %s", at(rel));
    fputs(text, f);
    fclose(f);
}

static void test_tree_v2_parent_tighter(void **state)
{
    put("proc-cgroup", "0::/a/b/c\n");
    put("sys/a/cpu.max", "100000 100000\n"); /* 1 CPU: applies to everything below */
    put("sys/a/b/cpu.max", "max 100000\n");
    put("sys/a/b/c/cpu.max", "400000 100000\n");
    put("sys/cpu.max", "800000 100000\n");
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 8), 1);
    char why[600], want[600];
    assert_int_equal(qg_usable_cpus_explain_at(at("proc-cgroup"), NULL, at("sys"), 8, why, sizeof why), 1);
    snprintf(want, sizeof want, "1 of 8 CPUs (affinity 8, cgroup cpu.max 100000/100000 at %s)", at("sys/a"));
    assert_string_equal(why, want);

    /* The ratio decides, not the rounded count: 150000/100000 beats 200000/100000. */
    put("sys/a/cpu.max", "200000 100000\n");
    put("sys/a/b/cpu.max", "150000 100000\n");
    assert_int_equal(qg_usable_cpus_explain_at(at("proc-cgroup"), NULL, at("sys"), 8, why, sizeof why), 2);
    snprintf(want, sizeof want, "2 of 8 CPUs (affinity 8, cgroup cpu.max 150000/100000 at %s)", at("sys/a/b"));
    assert_string_equal(why, want);
}

static void test_tree_v2_child_tighter(void **state)
{
    put("proc-cgroup", "0::/a/b/c\n");
    put("sys/a/cpu.max", "400000 100000\n");
    put("sys/a/b/c/cpu.max", "150000 100000"); /* no newline */
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 8), 2);
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 1), 1);
    /* Different periods: 50 ms of every 20 ms = 2.5 -> 3, tighter than the parent's 4. */
    put("sys/a/b/c/cpu.max", "50000 20000\n");
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 8), 3);
}

static void test_tree_v2_no_limit(void **state)
{
    char why[600];
    put("proc-cgroup", "0::/user.slice/x.scope\n");
    put("sys/user.slice/cpu.max", "max 100000\n");
    put("sys/user.slice/x.scope/cpu.max", "max 100000\n");
    assert_int_equal(qg_usable_cpus_explain_at(at("proc-cgroup"), NULL, at("sys"), 8, why, sizeof why), 8);
    assert_string_equal(why, "8 of 8 CPUs (affinity 8, no cgroup CPU limit)");

    /* Malformed or missing files mean "no limit known". */
    put("sys/user.slice/x.scope/cpu.max", "lots\n");
    put("sys/user.slice/cpu.max", "0 100000\n");
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 6), 6);
    assert_int_equal(qg_usable_cpus_at(at("no-such-file"), at("sys"), 6), 6);
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("no-such-dir"), 6), 6);
    assert_int_equal(qg_usable_cpus_at(NULL, at("sys"), 6), 6);
    put("proc-cgroup", "");
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 6), 6);
    put("proc-cgroup", "0::/../../etc\n");
    put("sys/cpu.max", "100000 100000\n");
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 6), 6); /* rejected path: not read */

    /* A cgroup namespace root ("0::/") has its own cpu.max at the mount's top. */
    put("proc-cgroup", "0::/\n");
    put("sys/cpu.max", "300000 100000\n");
    assert_int_equal(qg_usable_cpus_explain_at(at("proc-cgroup"), NULL, at("sys"), 8, why, sizeof why), 3);
    char want[600];
    snprintf(want, sizeof want, "3 of 8 CPUs (affinity 8, cgroup cpu.max 300000/100000 at %s)", at("sys"));
    assert_string_equal(why, want);

    /* A path that does not exist under the root (a host path seen from a container without
     * a cgroup namespace): the walk up still reaches the mount's top. */
    put("proc-cgroup", "0::/system.slice/docker-ab.scope\n");
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 8), 3);
}

static void test_tree_v1(void **state)
{
    char why[600], want[600];
    put("proc-cgroup", "5:cpuset:/docker/ab\n4:cpu,cpuacct:/docker/ab\n1:name=systemd:/docker/ab\n0::/\n");
    put("sys/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    put("sys/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    put("sys/cpu,cpuacct/docker/cpu.cfs_quota_us", "50000\n"); /* the parent: half a CPU */
    put("sys/cpu,cpuacct/docker/cpu.cfs_period_us", "100000\n");
    put("sys/cpu,cpuacct/docker/ab/cpu.cfs_quota_us", "300000\n");
    put("sys/cpu,cpuacct/docker/ab/cpu.cfs_period_us", "100000\n");
    assert_int_equal(qg_usable_cpus_explain_at(at("proc-cgroup"), NULL, at("sys"), 4, why, sizeof why), 1);
    snprintf(want, sizeof want, "1 of 4 CPUs (affinity 4, cgroup cpu.cfs_quota_us 50000/100000 at %s)",
             at("sys/cpu,cpuacct/docker"));
    assert_string_equal(why, want);

    put("sys/cpu,cpuacct/docker/cpu.cfs_quota_us", "-1\n");
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 4), 3);
    put("sys/cpu,cpuacct/docker/ab/cpu.cfs_period_us", "0\n"); /* malformed: no limit known */
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 4), 4);
}

static void test_tree_v1_separate_cpu(void **state)
{
    /* The cpu controller mounted alone at <root>/cpu, as in this container. */
    put("proc-cgroup", HYBRID_CONTAINER);
    put("sys/cpu/cpu.cfs_quota_us", "200000\n");
    put("sys/cpu/cpu.cfs_period_us", "100000\n");
    put("sys/cpuacct/cpu.cfs_quota_us", "100000\n"); /* not the cpu hierarchy: ignored */
    put("sys/cpuacct/cpu.cfs_period_us", "100000\n");
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 8), 2);
}

static void test_tree_mountinfo(void **state)
{
    char mi[2048], why[600], want[600];
    /* v1 cpu mounted with a subtree root, v2 elsewhere; neither under cgroup_root. */
    snprintf(mi, sizeof mi,
             "23 1 0:27 / / rw,relatime - overlay overlay rw\n"
             "32 31 0:29 /docker/ab %s rw,relatime master:3 - cgroup cgroup rw,cpuacct,cpu\n"
             "41 31 0:38 / %s rw,relatime - cgroup2 cgroup2 rw\n",
             at("m/cpu"), at("m/unified"));
    put("mountinfo", mi);
    put("proc-cgroup", "3:cpu,cpuacct:/docker/ab/x\n0::/s\n");
    put("m/cpu/x/cpu.cfs_quota_us", "200000\n");
    put("m/cpu/x/cpu.cfs_period_us", "100000\n");
    put("m/cpu/cpu.cfs_quota_us", "300000\n");
    put("m/cpu/cpu.cfs_period_us", "100000\n");
    put("sys/cpu,cpuacct/docker/ab/x/cpu.cfs_quota_us", "100000\n"); /* the fallback: not used */
    put("sys/cpu,cpuacct/docker/ab/x/cpu.cfs_period_us", "100000\n");
    assert_int_equal(qg_usable_cpus_explain_at(at("proc-cgroup"), at("mountinfo"), at("sys"), 8, why, sizeof why), 2);
    snprintf(want, sizeof want, "2 of 8 CPUs (affinity 8, cgroup cpu.cfs_quota_us 200000/100000 at %s)", at("m/cpu/x"));
    assert_string_equal(why, want);
    /* Without mountinfo the default layout is read instead. */
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 8), 1);

    /* A v2 limit tighter than the v1 one wins (both are applied). */
    put("m/unified/s/cpu.max", "100000 100000\n");
    assert_int_equal(qg_usable_cpus_explain_at(at("proc-cgroup"), at("mountinfo"), at("sys"), 8, why, sizeof why), 1);
    snprintf(want, sizeof want, "1 of 8 CPUs (affinity 8, cgroup cpu.max 100000/100000 at %s)", at("m/unified/s"));
    assert_string_equal(why, want);

    /* Our v1 path outside the mounted subtree: only the mount's top is readable. */
    put("m/unified/s/cpu.max", "max 100000\n");
    put("proc-cgroup", "3:cpu,cpuacct:/elsewhere/x\n");
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 8), 8);
    assert_int_equal(qg_usable_cpus_explain_at(at("proc-cgroup"), at("mountinfo"), at("sys"), 8, NULL, 0), 3);

    /* Unreadable mountinfo falls back to the default layout. */
    put("proc-cgroup", "3:cpu,cpuacct:/docker/ab/x\n0::/s\n");
    assert_int_equal(qg_usable_cpus_explain_at(at("proc-cgroup"), at("no-such-file"), at("sys"), 8, NULL, 0), 1);
}

static void test_affinity_minimum(void **state)
{
    char why[600];
    put("proc-cgroup", "0::/a\n");
    put("sys/a/cpu.max", "800000 100000\n");
    assert_int_equal(qg_usable_cpus_explain_at(at("proc-cgroup"), NULL, at("sys"), 3, why, sizeof why), 3);
    const char *head = "3 of 3 CPUs (affinity 3, cgroup cpu.max 800000/100000 at ";
    assert_true(strncmp(why, head, strlen(head)) == 0);
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 8), 8);
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 1), 1);
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), 0), 1);
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), -5), 1);
    assert_int_equal(qg_usable_cpus_at(at("no-such-file"), at("sys"), 0), 1);
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), INT_MAX), 8);
    put("sys/a/cpu.max", "max 100000\n");
    assert_int_equal(qg_usable_cpus_at(at("proc-cgroup"), at("sys"), INT_MAX), INT_MAX);
    /* A tiny explanation buffer truncates, still NUL-terminated. */
    char tiny[6];
    assert_int_equal(qg_usable_cpus_explain_at(at("proc-cgroup"), NULL, at("sys"), 12, tiny, sizeof tiny), 12);
    assert_string_equal(tiny, "12 of");
}

/* ---- the real thing ---- */

/* This process's affinity count, counted here independently of cpus.c. */
static int own_affinity_count(void)
{
    for (int n = 1024; n <= (1 << 22); n *= 2) {
        cpu_set_t *set = CPU_ALLOC(n);
        size_t sz = CPU_ALLOC_SIZE(n);
        CPU_ZERO_S(sz, set);
        int rc = sched_getaffinity(0, sz, set);
        int c = rc == 0 ? CPU_COUNT_S(sz, set) : -1;
        CPU_FREE(set);
        if (rc == 0) return c;
    }
    return -1;
}

static void test_real(void **state)
{
    int aff = own_affinity_count();
    assert_true(aff >= 1);
    assert_int_equal(qg_affinity_cpus(), aff);
    int n = qg_usable_cpus();
    assert_true(n >= 1);
    assert_true(n <= aff); /* never more loops than CPUs we may run on */
    if (aff == 1) assert_int_equal(n, 1); /* e.g. under `taskset -c 0` */
    char why[600], head[64];
    assert_int_equal(qg_usable_cpus_explain(why, sizeof why), n);
    snprintf(head, sizeof head, "%d of ", n);
    assert_true(strncmp(why, head, strlen(head)) == 0);
    snprintf(head, sizeof head, "(affinity %d, ", aff);
    assert_non_null(strstr(why, head));
    assert_int_equal(qg_usable_cpus_explain(NULL, 0), n);
    print_message("usable: %s\n", why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_cpu_max),
        cmocka_unit_test(test_cpus_from_quota),
        cmocka_unit_test(test_parse_cfs_quota),
        cmocka_unit_test(test_parse_cgroup_paths),
        cmocka_unit_test(test_parse_mountinfo),
        cmocka_unit_test_setup_teardown(test_tree_v2_parent_tighter, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_tree_v2_child_tighter, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_tree_v2_no_limit, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_tree_v1, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_tree_v1_separate_cpu, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_tree_mountinfo, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_affinity_minimum, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_real),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
