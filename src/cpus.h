/*
 * cpus.h — how many CPUs this process may really use, for `workers: auto`.
 *
 * Each worker is an event loop that never blocks, so more loops than usable CPUs do not
 * add throughput: the extra loops fight for the same cores (context switches, cold
 * caches, a connection's loop descheduled mid-request).  Pinned to one CPU, one loop per
 * machine core measured 0.76x nginx where one loop gave 0.88x (issue #13).  "Usable" is
 *
 *     min( CPUs in sched_getaffinity()                     -- taskset, a cgroup cpuset,
 *          ceil(quota / period) of the tightest CPU bandwidth limit on the way from the
 *          process's cgroup up to the (visible) root )     -- cgroup v2 cpu.max, or v1
 *                                                             cpu.cfs_quota_us / cpu.cfs_period_us
 *        ), at least 1.
 *
 * A parent's limit applies to all its children, hence the walk up; a limit above the
 * root of our cgroup namespace (or above the mounted subtree) is invisible and ignored.
 * Missing, unreadable or malformed files mean "no limit known", never an error.  The
 * affinity set is sized dynamically, so machines with more than 1024 CPUs count right.
 *
 * Ownership: none.  Nothing here allocates memory the caller frees; outputs go to
 * caller-provided buffers.
 *
 * Blocking: qg_usable_cpus*() open and read small files under /proc and /sys/fs/cgroup
 * with plain blocking read(2).  They are for start-up on the main thread (before any loop
 * runs), never for a loop thread.  The qg_parse_* / qg_cpus_from_quota functions are pure
 * (no I/O, no allocation, no globals) and take text that need not be NUL-terminated.
 */
#ifndef QG_CPUS_H
#define QG_CPUS_H

#include <stddef.h>
#include <stdint.h>

/* Number of event-loop workers `workers: auto` should start (>= 1). */
int qg_usable_cpus(void);

/* The same, and writes a one-line explanation for the start-up log into why[cap] (may be
 * NULL/0), e.g. "2 of 8 CPUs (affinity 8, cgroup cpu.max 200000/100000 at
 * /sys/fs/cgroup/user.slice)" or "8 of 8 CPUs (affinity 8, no cgroup CPU limit)".
 * "of N" is the number of online CPUs. */
int qg_usable_cpus_explain(char *why, size_t cap);

/* CPUs in this thread's sched_getaffinity mask (the process's, when called from the main
 * thread at start-up), or -1 if the call fails. */
int qg_affinity_cpus(void);

/* The file-reading core, with every path a parameter so tests can build a fake tree:
 *   proc_self_cgroup_path  a /proc/self/cgroup file (v2 "0::/path" and/or v1 "N:cpu,...:/path")
 *   mountinfo_path         a /proc/self/mountinfo file used to find the cgroup2 mount and the
 *                          v1 hierarchy holding "cpu" (mount points in it are used as written);
 *                          NULL = do not look, use the defaults below
 *   cgroup_root            where to look when mountinfo names no mount: cgroup v2 at
 *                          <cgroup_root>/<path>/cpu.max, v1 at <cgroup_root>/cpu,cpuacct/<path>
 *                          (or <cgroup_root>/cpu/<path>) cpu.cfs_quota_us and cpu.cfs_period_us
 *   affinity_count         CPUs allowed by affinity (values < 1 are taken as 1)
 * Returns min(affinity_count, cgroup limit), >= 1; why as for qg_usable_cpus_explain, with
 * "of N" = affinity_count. */
int qg_usable_cpus_explain_at(const char *proc_self_cgroup_path, const char *mountinfo_path,
                              const char *cgroup_root, int affinity_count, char *why, size_t cap);
/* qg_usable_cpus_explain_at without mountinfo and without an explanation. */
int qg_usable_cpus_at(const char *proc_self_cgroup_path, const char *cgroup_root, int affinity_count);

/* ---- pure parsers ---- */

/* cgroup v2 cpu.max: "max 100000" (quota = -1: unlimited; "max" alone gives period 100000)
 * or "<quota> <period>" with both > 0, e.g. "200000 100000"; surrounding blanks and a
 * trailing newline are allowed.  Returns 0, or -1 (outputs untouched) on anything else:
 * garbage, negatives, a zero quota or period, numbers that overflow int64. */
int qg_parse_cpu_max(const char *text, size_t n, int64_t *quota, int64_t *period);

/* cgroup v1: the contents of cpu.cfs_quota_us ("-1" = unlimited, else > 0) and
 * cpu.cfs_period_us (> 0).  Returns 0 with *quota = -1 or > 0, or -1 (outputs untouched). */
int qg_parse_cfs_quota(const char *quota_text, size_t qn, const char *period_text, size_t pn,
                       int64_t *quota, int64_t *period);

/* CPUs a bandwidth limit allows: ceil(quota / period), at least 1, at most INT_MAX;
 * quota < 0 (unlimited) or period <= 0 (unknown) give INT_MAX. */
int qg_cpus_from_quota(int64_t quota, int64_t period);

/* /proc/self/cgroup: copies the cgroup v2 path (the "0::/path" line) into out[cap],
 * NUL-terminated, e.g. "/user.slice/x.scope" or "/".  The v1 variant takes the path of the
 * hierarchy whose controller list contains "cpu" (e.g. "4:cpu,cpuacct:/docker/ab"; not
 * "cpuset", not "name=..."). Both return 0, or -1 if there is no such line, the path does
 * not start with '/', has a ".." component or a NUL byte, or does not fit. */
int qg_parse_cgroup_v2_path(const char *proc_self_cgroup, size_t n, char *out, size_t cap);
int qg_parse_cgroup_v1_path(const char *proc_self_cgroup, size_t n, char *out, size_t cap);

/* /proc/self/mountinfo: finds the first cgroup2 mount (version 2) or the first cgroup v1
 * mount whose super options include "cpu" (version 1), and copies its root within the
 * hierarchy (field 4) and its mount point (field 5), octal escapes such as \040 decoded,
 * into root[rcap] and mnt[mcap].  Returns 0, or -1 if there is none or it does not fit. */
int qg_parse_mountinfo_cgroup(const char *mountinfo, size_t n, int version, char *root, size_t rcap,
                              char *mnt, size_t mcap);

#endif
