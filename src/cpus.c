/*
 * cpus.c — usable CPUs for `workers: auto`: affinity mask and cgroup CPU bandwidth limits
 * (see cpus.h).  Parsers are pure; the qg_usable_cpus* functions do blocking reads of
 * small /proc and /sys files and are for start-up only.
 */
#include "cpus.h"
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* ---- small text helpers (all on [p, e) ranges, never past e) ---- */

static bool is_blank(char c) { return c == ' ' || c == '\t'; }
static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static bool range_eq(const char *p, const char *e, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(e - p) == n && memcmp(p, lit, n) == 0;
}

/* A run of decimal digits (at least one, nothing else) that fits in int64. */
static int parse_digits(const char *p, const char *e, int64_t *out)
{
    if (p >= e) return -1;
    int64_t v = 0;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9') return -1;
        int d = *p - '0';
        if (v > (INT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Does the comma-separated list [p, e) contain exactly `item`? */
static bool list_has(const char *p, const char *e, const char *item)
{
    while (p <= e) {
        const char *c = memchr(p, ',', (size_t)(e - p));
        const char *end = c ? c : e;
        if (range_eq(p, end, item)) return true;
        if (!c) break;
        p = c + 1;
    }
    return false;
}

/* Next line of [*p, e): sets [*ls, *le) (without '\n' or a trailing '\r') and advances *p.
 * Returns false at the end. */
static bool next_line(const char **p, const char *e, const char **ls, const char **le)
{
    if (*p >= e) return false;
    const char *nl = memchr(*p, '\n', (size_t)(e - *p));
    *ls = *p;
    *le = nl ? nl : e;
    *p = nl ? nl + 1 : e;
    if (*le > *ls && (*le)[-1] == '\r') (*le)--;
    return true;
}

/* ---- pure parsers ---- */

int qg_parse_cpu_max(const char *text, size_t n, int64_t *quota, int64_t *period)
{
    if (!text) return -1;
    const char *p = text, *e = text + n;
    while (p < e && is_blank(*p)) p++;
    while (e > p && is_space(e[-1])) e--;
    const char *t1 = p;
    while (p < e && !is_space(*p)) p++;
    const char *t1e = p;
    while (p < e && is_blank(*p)) p++;
    if (p < e && is_space(*p)) return -1; /* a newline between the two numbers */
    const char *t2 = p;
    while (p < e && !is_space(*p)) p++;
    const char *t2e = p;
    if (p != e || t1 == t1e) return -1; /* a third token, or nothing */

    int64_t q, per = 100000;
    if (range_eq(t1, t1e, "max")) {
        q = -1;
    } else if (parse_digits(t1, t1e, &q) < 0 || q == 0) {
        return -1;
    }
    if (t2 == t2e) {
        if (q != -1) return -1; /* a number needs its period; "max" alone means the default */
    } else if (parse_digits(t2, t2e, &per) < 0 || per == 0) {
        return -1;
    }
    *quota = q;
    *period = per;
    return 0;
}

/* One integer file of cgroup v1 (optional '-', digits, blanks and a newline around). */
static int parse_int_file(const char *text, size_t n, int64_t *out)
{
    if (!text) return -1;
    const char *p = text, *e = text + n;
    while (p < e && is_space(*p)) p++;
    while (e > p && is_space(e[-1])) e--;
    bool neg = p < e && *p == '-';
    int64_t v;
    if (parse_digits(p + neg, e, &v) < 0) return -1;
    *out = neg ? -v : v;
    return 0;
}

int qg_parse_cfs_quota(const char *quota_text, size_t qn, const char *period_text, size_t pn,
                       int64_t *quota, int64_t *period)
{
    int64_t q, per;
    if (parse_int_file(quota_text, qn, &q) < 0 || parse_int_file(period_text, pn, &per) < 0) return -1;
    if ((q <= 0 && q != -1) || per <= 0) return -1;
    *quota = q;
    *period = per;
    return 0;
}

int qg_cpus_from_quota(int64_t quota, int64_t period)
{
    if (quota < 0 || period <= 0) return INT_MAX;
    int64_t c = quota / period + (quota % period != 0);
    if (c < 1) return 1;
    return c > INT_MAX ? INT_MAX : (int)c;
}

/* A cgroup path as /proc/self/cgroup shows it: absolute, no NUL, no ".." component. */
static int copy_cgroup_path(const char *p, const char *e, char *out, size_t cap)
{
    size_t n = (size_t)(e - p);
    if (n == 0 || *p != '/' || memchr(p, 0, n) || n + 1 > cap) return -1;
    for (const char *c = p; c < e;) {
        const char *s = memchr(c, '/', (size_t)(e - c));
        const char *end = s ? s : e;
        if (range_eq(c, end, "..")) return -1;
        if (!s) break;
        c = s + 1;
    }
    memcpy(out, p, n);
    out[n] = 0;
    return 0;
}

/* Scans the "hierarchy:controllers:path" lines: v2 wants "0::", v1 "cpu" in the list. */
static int parse_cgroup_file(const char *text, size_t n, bool v2, char *out, size_t cap)
{
    if (!text || !out || cap == 0) return -1;
    const char *p = text, *e = text + n, *ls, *le;
    while (next_line(&p, e, &ls, &le)) {
        const char *c1 = memchr(ls, ':', (size_t)(le - ls));
        if (!c1) continue;
        const char *c2 = memchr(c1 + 1, ':', (size_t)(le - c1 - 1));
        if (!c2) continue;
        bool match = v2 ? range_eq(ls, c1, "0") && c2 == c1 + 1 : list_has(c1 + 1, c2, "cpu");
        if (match) return copy_cgroup_path(c2 + 1, le, out, cap);
    }
    return -1;
}

int qg_parse_cgroup_v2_path(const char *proc_self_cgroup, size_t n, char *out, size_t cap)
{
    return parse_cgroup_file(proc_self_cgroup, n, true, out, cap);
}

int qg_parse_cgroup_v1_path(const char *proc_self_cgroup, size_t n, char *out, size_t cap)
{
    return parse_cgroup_file(proc_self_cgroup, n, false, out, cap);
}

/* Decodes a mountinfo field (\ooo octal escapes) into out[cap]; -1 if it does not fit,
 * decodes to a NUL, or is not an absolute path. */
static int unescape_field(const char *p, const char *e, char *out, size_t cap)
{
    size_t o = 0;
    while (p < e) {
        char c = *p++;
        if (c == '\\' && e - p >= 3 && p[0] >= '0' && p[0] <= '3' && p[1] >= '0' && p[1] <= '7' && p[2] >= '0' &&
            p[2] <= '7') {
            c = (char)((p[0] - '0') * 64 + (p[1] - '0') * 8 + (p[2] - '0'));
            p += 3;
        }
        if (c == 0 || o + 1 >= cap) return -1;
        out[o++] = c;
    }
    if (o == 0 || out[0] != '/') return -1;
    out[o] = 0;
    return 0;
}

int qg_parse_mountinfo_cgroup(const char *mountinfo, size_t n, int version, char *root, size_t rcap,
                              char *mnt, size_t mcap)
{
    if (!mountinfo || !root || !mnt || rcap == 0 || mcap == 0 || (version != 1 && version != 2)) return -1;
    const char *p = mountinfo, *e = mountinfo + n, *ls, *le;
    while (next_line(&p, e, &ls, &le)) {
        enum { MAXF = 48 };
        const char *fs[MAXF], *fe[MAXF];
        int nf = 0;
        for (const char *c = ls; c < le && nf < MAXF;) {
            while (c < le && *c == ' ') c++;
            if (c >= le) break;
            fs[nf] = c;
            while (c < le && *c != ' ') c++;
            fe[nf++] = c;
        }
        int sep = -1;
        for (int i = 6; i < nf; i++)
            if (range_eq(fs[i], fe[i], "-")) {
                sep = i;
                break;
            }
        if (sep < 0 || sep + 1 >= nf) continue;
        bool match;
        if (version == 2) {
            match = range_eq(fs[sep + 1], fe[sep + 1], "cgroup2");
        } else {
            match = range_eq(fs[sep + 1], fe[sep + 1], "cgroup") && sep + 3 < nf &&
                    list_has(fs[sep + 3], fe[sep + 3], "cpu");
        }
        if (!match) continue;
        if (unescape_field(fs[3], fe[3], root, rcap) < 0 || unescape_field(fs[4], fe[4], mnt, mcap) < 0) {
            root[0] = mnt[0] = 0;
            return -1;
        }
        return 0;
    }
    return -1;
}

/* ---- files ---- */

/* Reads up to cap-1 bytes of a small file into buf (NUL-terminated).  A file that fills the
 * buffer is cut back to its last complete line.  Returns the length, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r < 0) len = 0;
            break;
        }
        len += (size_t)r;
    }
    if (len + 1 >= cap) { /* maybe truncated: keep whole lines only */
        while (len && buf[len - 1] != '\n') len--;
    }
    close(fd);
    buf[len] = 0;
    return (ssize_t)len;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

typedef struct {
    bool found;
    int version; /* 2: cpu.max, 1: cpu.cfs_quota_us */
    int64_t quota, period;
    char dir[PATH_MAX];
} limit;

/* Is quota/period tighter than the best so far? (128-bit cross products: no overflow) */
static void consider(limit *best, int version, int64_t q, int64_t per, const char *dir)
{
    if (q < 0 || per <= 0) return;
    if (best->found && (unsigned __int128)q * (uint64_t)best->period >= (unsigned __int128)best->quota * (uint64_t)per)
        return;
    best->found = true;
    best->version = version;
    best->quota = q;
    best->period = per;
    qg_strlcpy(best->dir, dir, sizeof best->dir);
}

static void read_limit(limit *best, int version, const char *dir)
{
    char path[PATH_MAX + 32], a[128], b[128];
    int64_t q, per;
    if (version == 2) {
        if (snprintf(path, sizeof path, "%s/cpu.max", dir) >= (int)sizeof path) return;
        ssize_t n = read_small(path, a, sizeof a);
        if (n >= 0 && qg_parse_cpu_max(a, (size_t)n, &q, &per) == 0) consider(best, 2, q, per, dir);
    } else {
        if (snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir) >= (int)sizeof path) return;
        ssize_t qn = read_small(path, a, sizeof a);
        if (qn < 0) return;
        if (snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir) >= (int)sizeof path) return;
        ssize_t pn = read_small(path, b, sizeof b);
        if (pn >= 0 && qg_parse_cfs_quota(a, (size_t)qn, b, (size_t)pn, &q, &per) == 0) consider(best, 1, q, per, dir);
    }
}

/* Reads the limit in the cgroup `cg` (as /proc/self/cgroup names it) and in every parent up
 * to the mount point `mnt`, whose root within the hierarchy is `mroot`. */
static void walk_up(limit *best, int version, const char *mnt, const char *mroot, const char *cg)
{
    size_t rl = strlen(mroot);
    while (rl > 1 && mroot[rl - 1] == '/') rl--;
    const char *rel = cg;
    if (rl > 1) { /* the mount shows a subtree: our path must be inside it */
        if (strncmp(cg, mroot, rl) == 0 && (cg[rl] == '/' || cg[rl] == 0))
            rel = cg + rl;
        else
            rel = ""; /* outside what we can see: the mount's root is the nearest we have */
    }
    char dir[PATH_MAX];
    size_t base = strlen(mnt);
    while (base && mnt[base - 1] == '/') base--;
    if (base >= sizeof dir) return;
    memcpy(dir, mnt, base);
    size_t rn = strlen(rel);
    if (base + rn >= sizeof dir) return;
    memcpy(dir + base, rel, rn);
    size_t len = base + rn;
    dir[len] = 0;
    for (;;) {
        while (len > base && dir[len - 1] == '/') dir[--len] = 0;
        read_limit(best, version, dir); /* "" is the root: "/cpu.max" */
        if (len <= base) break;
        char *s = strrchr(dir + base, '/');
        if (!s) break;
        len = (size_t)(s - dir);
        dir[len] = 0;
    }
}

static int usable_core(const char *proc_self_cgroup_path, const char *mountinfo_path, const char *cgroup_root,
                       int affinity, int of, char *why, size_t cap)
{
    if (affinity < 1) affinity = 1;
    limit best = {0};
    char cgfile[16384], cg[PATH_MAX], root[PATH_MAX], mnt[PATH_MAX];
    char *mi = NULL;
    ssize_t min = -1;
    ssize_t cn = proc_self_cgroup_path ? read_small(proc_self_cgroup_path, cgfile, sizeof cgfile) : -1;
    if (cn > 0 && mountinfo_path) {
        enum { MI_CAP = 1 << 20 };
        mi = malloc(MI_CAP);
        if (mi) min = read_small(mountinfo_path, mi, MI_CAP);
    }
    const char *croot = cgroup_root ? cgroup_root : "/sys/fs/cgroup";

    if (cn > 0 && qg_parse_cgroup_v2_path(cgfile, (size_t)cn, cg, sizeof cg) == 0) {
        if (min > 0 && qg_parse_mountinfo_cgroup(mi, (size_t)min, 2, root, sizeof root, mnt, sizeof mnt) == 0)
            walk_up(&best, 2, mnt, root, cg);
        else
            walk_up(&best, 2, croot, "/", cg);
    }
    if (cn > 0 && qg_parse_cgroup_v1_path(cgfile, (size_t)cn, cg, sizeof cg) == 0) {
        if (min > 0 && qg_parse_mountinfo_cgroup(mi, (size_t)min, 1, root, sizeof root, mnt, sizeof mnt) == 0) {
            walk_up(&best, 1, mnt, root, cg);
        } else {
            static const char *const names[] = {"cpu,cpuacct", "cpuacct,cpu", "cpu"};
            for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
                if (snprintf(mnt, sizeof mnt, "%s/%s", croot, names[i]) >= (int)sizeof mnt) break;
                if (is_dir(mnt)) {
                    walk_up(&best, 1, mnt, "/", cg);
                    break;
                }
            }
        }
    }
    free(mi);

    int quota_cpus = best.found ? qg_cpus_from_quota(best.quota, best.period) : INT_MAX;
    int n = quota_cpus < affinity ? quota_cpus : affinity;
    if (n < 1) n = 1;
    if (why && cap) {
        if (best.found)
            snprintf(why, cap, "%d of %d CPUs (affinity %d, cgroup %s %lld/%lld at %s)", n, of, affinity,
                     best.version == 2 ? "cpu.max" : "cpu.cfs_quota_us", (long long)best.quota,
                     (long long)best.period, best.dir[0] ? best.dir : "/");
        else
            snprintf(why, cap, "%d of %d CPUs (affinity %d, no cgroup CPU limit)", n, of, affinity);
    }
    return n;
}

int qg_usable_cpus_explain_at(const char *proc_self_cgroup_path, const char *mountinfo_path,
                              const char *cgroup_root, int affinity_count, char *why, size_t cap)
{
    int a = affinity_count < 1 ? 1 : affinity_count;
    return usable_core(proc_self_cgroup_path, mountinfo_path, cgroup_root, a, a, why, cap);
}

int qg_usable_cpus_at(const char *proc_self_cgroup_path, const char *cgroup_root, int affinity_count)
{
    return qg_usable_cpus_explain_at(proc_self_cgroup_path, NULL, cgroup_root, affinity_count, NULL, 0);
}

int qg_affinity_cpus(void)
{
    long conf = sysconf(_SC_NPROCESSORS_CONF);
    int ncpu = 1024;
    while (conf > 0 && ncpu < conf && ncpu < (1 << 20)) ncpu *= 2;
    for (; ncpu <= (1 << 22); ncpu *= 2) { /* the kernel's mask may be wider than CONF says */
        cpu_set_t *set = CPU_ALLOC(ncpu);
        if (!set) return -1;
        size_t sz = CPU_ALLOC_SIZE(ncpu);
        CPU_ZERO_S(sz, set);
        if (sched_getaffinity(0, sz, set) == 0) {
            int c = CPU_COUNT_S(sz, set);
            CPU_FREE(set);
            return c;
        }
        int err = errno;
        CPU_FREE(set);
        if (err != EINVAL) return -1;
    }
    return -1;
}

int qg_usable_cpus_explain(char *why, size_t cap)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int aff = qg_affinity_cpus();
    if (aff < 1) aff = online > 0 ? (online > INT_MAX ? INT_MAX : (int)online) : 1;
    int of = online > aff ? (online > INT_MAX ? INT_MAX : (int)online) : aff;
    return usable_core("/proc/self/cgroup", "/proc/self/mountinfo", "/sys/fs/cgroup", aff, of, why, cap);
}

int qg_usable_cpus(void) { return qg_usable_cpus_explain(NULL, 0); }
