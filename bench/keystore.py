#!/usr/bin/env python3
"""bench/keystore.py — a key store with N admin keys for bench/run.sh's phase F.

usage: bench/keystore.py TEMPLATE OUT N SECRET

TEMPLATE is a store the gateway made itself (schema and all) holding exactly one admin key,
created through the admin API with the benchmark's three policies (run.sh does that). OUT
gets a copy of it in which that key is the benchmark key, id key_0000000000000000 and secret
SECRET (so the load tool's Authorization header is the same as in the other phases), and
N - 1 filler keys after it:

  id      key_%016x of i (i = 1 .. N-1)
  secret  qg-bench-%d of i (never used by a request; the hash is SHA-256 of it, as the
          gateway stores it), prefix its first 10 characters
  name    filler-%d, status active, created_ms = updated_ms = the generation time
  policy  even i only: one row, daily, 100,000 tokens, strict, reject (so half the fillers
          load a policy and its counters; odd i have none)

All rows go in one transaction (executemany). Everything but the two timestamps is the same
from run to run. The ledger tables stay empty (the template's ledger is). Written to
OUT.tmp and renamed, so an interrupted run never leaves a half-made OUT.
"""
import hashlib
import os
import sqlite3
import sys
import time

BENCH_ID = "key_%016x" % 0


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__.split("\n\n")[1])
    template, out, n, secret = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if n < 1:
        sys.exit("keystore.py: N must be at least 1")
    tmp = out + ".tmp"
    for p in (tmp, tmp + "-wal", tmp + "-shm"):
        if os.path.exists(p):
            os.unlink(p)
    src = sqlite3.connect("file:%s?mode=ro" % template, uri=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    src.backup(db)  # the template's WAL included, if the gateway left one
    src.close()
    keys = db.execute("SELECT id FROM api_key").fetchall()
    if len(keys) != 1:
        sys.exit("keystore.py: %s holds %d keys, expected the one benchmark key" % (template, len(keys)))
    if db.execute("SELECT count(*) FROM api_key_policy WHERE key_id=?", keys[0]).fetchone()[0] != 3:
        sys.exit("keystore.py: the template's key does not have three policies")
    if db.execute("SELECT count(*) FROM ledger").fetchone()[0] != 0:
        sys.exit("keystore.py: the template's ledger is not empty")
    now = int(time.time() * 1000)
    t0 = time.monotonic()
    db.execute("PRAGMA journal_mode=DELETE")  # one file to cache; the gateway turns WAL back on
    db.execute("BEGIN")
    db.execute("UPDATE api_key_policy SET key_id=? WHERE key_id=?", (BENCH_ID, keys[0][0]))
    db.execute("UPDATE api_key SET id=?, hash=?, prefix=?, created_ms=?, updated_ms=? WHERE id=?",
               (BENCH_ID, hashlib.sha256(secret.encode()).digest(), secret[:10], now, now, keys[0][0]))

    def key_rows():
        for i in range(1, n):
            s = "qg-bench-%d" % i
            yield ("key_%016x" % i, "filler-%d" % i, hashlib.sha256(s.encode()).digest(), s[:10], "active", now, now)

    def policy_rows():
        for i in range(2, n, 2):
            yield ("key_%016x" % i, 0, "daily", 1, 0, 100000, "tokens", "1970-01-01T00:00:00Z", 0, 0, "strict", "reject", 1)

    db.executemany("INSERT INTO api_key(id,name,hash,prefix,status,expires_ms,total_quota_micro,models,created_ms,updated_ms)"
                   " VALUES(?,?,?,?,?,NULL,NULL,NULL,?,?)", key_rows())
    db.executemany("INSERT INTO api_key_policy(key_id,idx,period,period_kind,minutes,limit_amount,unit,anchor,anchor_ms,"
                   "anchor_offset_min,boundary,on_exhausted,auto_resume) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)", policy_rows())
    db.execute("COMMIT")
    got = db.execute("SELECT count(*) FROM api_key").fetchone()[0]
    pol = db.execute("SELECT count(*) FROM api_key_policy").fetchone()[0]
    db.close()
    if got != n:
        sys.exit("keystore.py: wrote %d keys, expected %d" % (got, n))
    os.replace(tmp, out)
    print("keystore.py: %s: %d keys (%d policy rows), %.1f MB, %.1f s" %
          (out, got, pol, os.path.getsize(out) / 1e6, time.monotonic() - t0))


if __name__ == "__main__":
    main()
