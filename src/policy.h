/*
 * policy.h — key quota policy windows (SPEC §4.9): which window of a policy contains a
 * moment, and when it resets.  The first piece of the key-policy engine (issue 15); the
 * counters and reservations build on these window numbers.
 *
 * Windows are aligned to the policy's anchor, before and after it (an anchor in the future
 * counts backwards too):
 *   <N>m, 5h         fixed steps of N minutes (5 h) from the anchor
 *   daily, weekly    steps of 24 h / 7 days from the anchor: the anchor's wall-clock time in
 *                    its own UTC offset (offsets are fixed, so every day is 24 h long)
 *   monthly          calendar months from the anchor's day and time in its offset, the day
 *                    clamped to the month's last (an anchor on the 31st resets on Feb 28/29,
 *                    Mar 31, Apr 30, ...); each window starts from the anchor's own day, so a
 *                    short month does not move later windows
 * A window is [start_ms, end_ms); `index` numbers it from the anchor's window (0), negative
 * before it.  A reservation carries the index it was admitted in, so a settlement that
 * arrives after the reset is charged to its own window.
 *
 * Pure: no clock, no allocation.  Times are epoch ms; years 1..9999 are supported (outside
 * that, qg_policy_window returns -1).
 */
#ifndef QG_POLICY_H
#define QG_POLICY_H

#include "config.h"

typedef struct {
    int64_t index;
    int64_t start_ms;
    int64_t end_ms;       /* the next reset */
} qg_window;

/* The window of p containing t.  Returns 0, or -1 if t or the anchor is out of range. */
int qg_policy_window(const qg_policy_cfg *p, int64_t t, qg_window *out);
/* The window with the given index (for a reservation's window after a reset). */
int qg_policy_window_at(const qg_policy_cfg *p, int64_t index, qg_window *out);

/* A policy's identity for its saved counters: its period, step, anchor and unit (not its
 * limit: raising a limit keeps what was used).  FNV-1a, never 0. */
uint64_t qg_policy_signature(const qg_policy_cfg *p);

/* The period as written in config and in x-quota-<period>-* headers: "5h", "daily",
 * "weekly", "monthly", "<N>m".  Returns the length. */
int qg_policy_label(const qg_policy_cfg *p, char *out, size_t n);


#endif
