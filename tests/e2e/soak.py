#!/usr/bin/env python3
"""soak.py — a randomized fault soak: one simulator whose accounts misbehave at random
(`chaos` mode: 429, 500, cuts, mid-stream error events, stalls, hangs, slow answers,
dropped connections, and keep-alive connections closed after 300 ms idle), the gateway
over them, and 16 client threads that hang up at random points.  Seeded; prints its seed
first, the checks, then "N passed, N failed".

    python3 tests/e2e/soak.py [--bin build/quotagate-asan] [--sanitized] [--seconds 25]
                              [--seed N] [--threads 16] [--sim-bin BIN]

Checks, after the clients stop and the ledger settles:
  (a) the gateway is still running and answers /healthz
  (b) ledger rows == requests the clients fully sent (exactly one row per request)
  (c) request_ids are unique, and every x-quotagate-request-id a client saw is in the ledger
  (d) the provider saw no request the ledger does not account for:
        sum(attempts) - (rows with status 499 or error upstream_timeout)
          <= requests the simulator read <= sum(attempts)
      (rows name only the last account tried, so this is global, over all sim keys)
  (e) every response a client saw has an allowed status (ALLOWED_STATUSES), and every
      request that was not hung up on got a response head and an ended body in time
  (f) after SIGTERM the gateway exits 0 and no log has a sanitizer report
Standard library only; every socket has a timeout and the run is bounded (duration, then
at most ~30 s of joining, settling and shutdown).
"""

import argparse
import collections
import json
import os
import random
import socket
import sqlite3
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ADMIN, KEY, Client, Env, request  # noqa: E402

# What a client may see from the gateway in front of misbehaving providers:
#   200  an answer (possibly a stream that broke after it started: then unterminated)
#   429  reserved for the gateway's own rate limiting (none is configured here)
#   502  every attempt failed (5xx, broken connection, protocol error)
#   503  every account tried answered 429
#   504  no response head in time on any attempt
# 499 is a ledger status only (the client had gone); a client never sees it. A provider's
# own 429/500 must never be relayed: both are retried, then become 503/502.
ALLOWED_STATUSES = {200, 429, 502, 503, 504}

SOCK_TIMEOUT = 8.0        # any single recv/send; the gateway answers within ~3.5 s here
REQUEST_DEADLINE = 12.0   # a whole request, head and body
CHAOS_KEYS = 6
PLANS = [("none", 60), ("after_send", 12), ("after_head", 13), ("after_chunks", 15)]


def weighted(rng, items):
    total = sum(w for _, w in items)
    x = rng.uniform(0, total)
    for v, w in items:
        x -= w
        if x <= 0:
            return v
    return items[-1][0]


class Tally:
    """What the client threads did, merged under a lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0                         # requests fully written
        self.statuses = collections.Counter()  # client-visible statuses
        self.outcomes = collections.Counter()  # how each fully sent request ended, client side
        self.anomalies = []                    # (what, detail): requests with no (timely) answer
        self.ids = []                          # x-quotagate-request-id values seen
        self.connect_failures = 0
        self.send_failures = 0


def build_request(rng):
    """A random request: (bytes, stream, description)."""
    anthropic = rng.random() < 0.4
    stream = rng.random() < 0.6
    pad = "lorem ipsum " * rng.randrange(0, 200)
    n = rng.randrange(1, 13)
    if anthropic:
        path = "/v1/messages"
        body = {"model": "claude-soak", "max_tokens": n, "messages": [{"role": "user", "content": "hi " + pad}]}
        auth = "x-api-key: %s\r\nanthropic-version: 2023-06-01\r\n" % KEY
    else:
        path = weighted(rng, [("/v1/chat/completions", 70), ("/v1/responses", 15), ("/v1/completions", 15)])
        if path == "/v1/chat/completions":
            body = {"model": "gpt-soak", "max_tokens": n, "messages": [{"role": "user", "content": "hi " + pad}]}
            if stream and rng.random() < 0.3:
                body["stream_options"] = {"include_usage": True}
        elif path == "/v1/responses":
            body = {"model": "gpt-soak", "max_output_tokens": n, "input": "hi " + pad}
        else:
            body = {"model": "gpt-soak", "max_tokens": n, "prompt": "hi " + pad}
        auth = "Authorization: Bearer %s\r\n" % KEY
    if stream:
        body["stream"] = True
    data = json.dumps(body).encode()
    head = "POST %s HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n%s" % (path, auth)
    if rng.random() < 0.1:  # a chunked request body, in two chunks
        cut = rng.randrange(1, len(data))
        payload = (b"%x\r\n" % cut + data[:cut] + b"\r\n" + b"%x\r\n" % (len(data) - cut) + data[cut:] +
                   b"\r\n0\r\n\r\n")
        raw = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + payload
    else:
        raw = (head + "Content-Length: %d\r\n\r\n" % len(data)).encode() + data
    return raw, stream, "%s%s" % (path, " stream" if stream else "")


def still_open(c):
    """A kept-alive connection the gateway has not closed (nothing readable on it)."""
    if c.buf:
        return False
    try:
        c.sock.setblocking(False)
        c.sock.recv(1, socket.MSG_PEEK)
        return False  # early bytes or EOF: the gateway is done with this connection
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        try:
            c.sock.settimeout(SOCK_TIMEOUT)
        except OSError:
            pass


def client_thread(idx, port, deadline, seed, tally, gw_alive):
    rng = random.Random(seed * 1000003 + idx)
    conn = None

    def drop():
        nonlocal conn
        if conn is not None:
            conn.close()  # a normal close (FIN), never SO_LINGER 0
            conn = None

    while time.time() < deadline:
        if not gw_alive():
            break
        # Every choice is drawn up front, so a thread's sequence of requests and plans
        # depends on the seed only, not on what the gateway answered.
        raw, stream, what = build_request(rng)
        plan = weighted(rng, PLANS)
        k = rng.randrange(1, 6)
        fresh = rng.random() < 0.35      # a new connection even if one is kept alive
        close_after = rng.random() < 0.1  # close a clean keep-alive connection afterwards
        if conn is not None and (fresh or not still_open(conn)):
            drop()
        if conn is None:
            try:
                conn = Client(port, timeout=SOCK_TIMEOUT)
            except OSError:
                with tally.lock:
                    tally.connect_failures += 1
                time.sleep(0.05)
                continue
        try:
            conn.sock.sendall(raw)
        except OSError:
            with tally.lock:
                tally.send_failures += 1
            drop()
            continue
        with tally.lock:
            tally.sent += 1
        t0 = time.time()
        if plan == "after_send":
            drop()
            with tally.lock:
                tally.outcomes["hung up after send"] += 1
            continue
        try:
            r = conn.read_response(head_only=True)
        except socket.timeout:
            with tally.lock:
                tally.anomalies.append(("no response head within %.0f s" % SOCK_TIMEOUT, what))
            drop()
            continue
        except (EOFError, OSError) as e:
            with tally.lock:
                tally.anomalies.append(("connection closed before a response head (%s)" % type(e).__name__, what))
            drop()
            continue
        with tally.lock:
            tally.statuses[r.status] += 1
            rid = r.headers.get("x-quotagate-request-id")
            if rid:
                tally.ids.append(rid)
        if plan == "after_head":
            drop()
            with tally.lock:
                tally.outcomes["hung up after head"] += 1
            continue
        seen = [0]

        def on_chunk(piece):
            seen[0] += 1
            if time.time() - t0 > REQUEST_DEADLINE:
                raise socket.timeout("request deadline")
            return not (plan == "after_chunks" and seen[0] >= k)
        try:
            r = conn.read_body(r, on_chunk=on_chunk)
        except socket.timeout:
            with tally.lock:
                tally.anomalies.append(("response body did not end within %.0f s" % REQUEST_DEADLINE, what))
            drop()
            continue
        except OSError as e:
            r.complete = False
            with tally.lock:
                tally.outcomes["body read error %s" % type(e).__name__] += 1
        if plan == "after_chunks" and r.headers.get("transfer-encoding") == "chunked" and not r.complete:
            drop()
            with tally.lock:
                tally.outcomes["hung up after %d chunks" % k] += 1
            continue
        with tally.lock:
            tally.outcomes["%d %s" % (r.status, "complete" if r.complete else "unterminated")] += 1
        if not r.complete or r.headers.get("connection", "").lower() == "close" or close_after:
            drop()
    drop()


def ledger_count(env, alive):
    if alive:
        try:
            r = request(env.port, "GET", "/admin/usage?limit=1", headers={"Authorization": "Bearer " + ADMIN})
            if r.status == 200:
                return json.loads(r.body)["totals"]["requests"]
        except (OSError, EOFError, ValueError):
            pass
    con = sqlite3.connect(env.db, timeout=5)
    try:
        return con.execute("select count(*) from ledger").fetchone()[0]
    finally:
        con.close()


def settle(env, expected, alive, limit=15.0):
    """Polls the ledger count until it is stable: 1 s at the expected count, else 5 s."""
    end = time.time() + limit
    last, since = None, time.time()
    while time.time() < end:
        try:
            n = ledger_count(env, alive())
        except sqlite3.Error:
            n = last
        if n != last:
            last, since = n, time.time()
        stable = time.time() - since
        if (n == expected and stable >= 1.0) or stable >= 5.0:
            break
        time.sleep(0.1)
    return last


def log_excerpt(text):
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        if marker in text:
            i = text.index(marker)
            return text[max(0, i - 300):i + 4000]
    return text[-4000:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/quotagate-asan")
    ap.add_argument("--sanitized", action="store_true")
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--sim-bin", default=None, help="run the simulator from another build (default: --bin)")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 2 ** 31)
    print("soak seed=%d" % seed, flush=True)
    rng = random.Random(seed)

    env = Env(a.bin, a.sanitized)
    chaos = ["soak-chaos-%d" % i for i in range(CHAOS_KEYS)]
    sim_args = ["--workers", "2", "--chunks", "12", "--chunk-delay", "3ms", "--idle-close", "300ms",
                "--seed", str(seed)]
    for key in chaos:
        sim_args += ["--account", "%s=chaos,seed=%d" % (key, rng.randrange(1, 2 ** 32))]
    sim_args += ["--account", "soak-ok=ok"]
    env.bin = a.sim_bin or a.bin
    sim = env.start_sim(*sim_args)
    env.bin = a.bin
    half = CHAOS_KEYS // 2

    def accounts(keys):
        return "\n".join("      - { name: %s, api_key: %s }" % (k.replace("soak-", ""), k) for k in keys)
    providers = """
  - name: p-openai
    dialect: openai
    base_url: http://127.0.0.1:%d/v1
    models: [gpt-soak]
    accounts:
%s
  - name: p-anthropic
    dialect: anthropic
    base_url: http://127.0.0.1:%d
    models: [claude-soak]
    accounts:
%s
""" % (sim, accounts(chaos[:half] + ["soak-ok"]), sim, accounts(chaos[half:] + ["soak-ok"]))
    limits = {"upstream_first_byte_timeout": "1s", "stream_idle_timeout": "1s", "retry_attempts": "3",
              "client_idle_timeout": "5s"}
    results = []  # (name, ok, detail)

    def check(name, ok, detail=""):
        results.append((name, bool(ok), detail))
        print("%s %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail else ""), flush=True)

    tally = Tally()
    gw_log = ""
    sanitizer_elsewhere = None
    try:
        env.start_gateway(env.config(providers, workers=2, limits=limits))
        gw_alive = lambda: env.gw.p.poll() is None  # noqa: E731
        t_start = time.time()
        deadline = t_start + a.seconds
        threads = [threading.Thread(target=client_thread, args=(i, env.port, deadline, seed, tally, gw_alive), daemon=True)
                   for i in range(a.threads)]
        for t in threads:
            t.start()
        join_by = deadline + REQUEST_DEADLINE + 2
        for t in threads:
            t.join(max(0.0, join_by - time.time()))
        stuck = sum(1 for t in threads if t.is_alive())
        with tally.lock:  # a thread still running is not counted any further
            sent = tally.sent
        print("soak ran %.1f s: %d requests fully sent, statuses %s, %d threads stuck" %
              (time.time() - t_start, sent, dict(sorted(tally.statuses.items())), stuck), flush=True)
        print("client outcomes: %s" % dict(sorted(tally.outcomes.items())), flush=True)

        n_rows = settle(env, sent, gw_alive)
        alive = gw_alive()
        health = None
        if alive:
            try:
                health = request(env.port, "GET", "/healthz").status
            except (OSError, EOFError):
                pass
        check("(a) gateway running and healthy", alive and health == 200,
              "" if alive and health == 200 else ("exited with %r" % env.gw.p.returncode if not alive else "healthz %r" % health))

        rows = env.ledger_rows()
        check("(b) one ledger row per request fully sent", len(rows) == sent and not stuck,
              "%d rows, %d requests fully sent%s (settled count %r)" %
              (len(rows), sent, ", %d client threads stuck" % stuck if stuck else "", n_rows))

        ids = [r["request_id"] for r in rows]
        dup = [i for i, n in collections.Counter(ids).items() if n > 1]
        missing = sorted(set(tally.ids) - set(ids))
        check("(c) request_ids unique and every id a client saw is in the ledger", not dup and not missing and None not in ids,
              "%d duplicated (e.g. %s), %d seen by clients but not in the ledger (e.g. %s)" %
              (len(dup), dup[:3], len(missing), missing[:3]))

        stats = env.sim_stats(sim)
        sim_requests = sum(v["requests"] for k, v in stats.items() if k in chaos or k == "soak-ok")
        attempts = sum(r["attempts"] or 0 for r in rows)
        slack = sum(1 for r in rows if r["status"] == 499 or r["error"] == "upstream_timeout")
        picks = collections.Counter()
        for k in chaos:
            picks.update(stats.get(k, {}).get("chaos", {}))
        detail = ("simulator read %d requests; ledger: %d attempts over %d rows, %d rows 499/upstream_timeout; "
                  "need %d <= %d <= %d; chaos picks %s" %
                  (sim_requests, attempts, len(rows), slack, attempts - slack, sim_requests, attempts, dict(picks)))
        check("(d) provider requests accounted for by ledger attempts",
              attempts - slack <= sim_requests <= attempts, detail)
        row_status = collections.Counter(r["status"] for r in rows)
        row_err = collections.Counter(r["error"] for r in rows)
        print("ledger statuses %s, errors %s" % (dict(sorted(row_status.items())), dict(row_err)), flush=True)

        bad = {s: n for s, n in tally.statuses.items() if s not in ALLOWED_STATUSES}
        anomalies = collections.Counter(w for w, _ in tally.anomalies)
        check("(e) client-visible statuses in %s, every request answered" % sorted(ALLOWED_STATUSES),
              not bad and not anomalies,
              "observed %s; disallowed %s; unanswered %s%s" %
              (dict(sorted(tally.statuses.items())), bad, dict(anomalies),
               (" e.g. " + "; ".join("%s: %s" % x for x in tally.anomalies[:3])) if tally.anomalies else ""))
    except Exception:  # noqa: BLE001 - a broken run is a failed check, with the log below
        check("soak run", False, traceback.format_exc())
    finally:
        try:
            if env.gw:  # drain_timeout is 10 s and nothing is in flight: 12 s is plenty
                env.gw.stop(timeout=12)
        finally:
            gw_log = env.gw_log()
        try:
            rc = env.close()
            check("(f) SIGTERM: exit 0, no sanitizer report", rc == 0, "exit code %r" % rc if rc != 0 else "")
        except AssertionError as e:  # harness: "<marker> in <log>:\n<excerpt>"
            first = str(e).split("\n", 1)[0]
            check("(f) SIGTERM: exit 0, no sanitizer report", False, first)
            if not first.endswith(" gw.log:"):
                sanitizer_elsewhere = str(e)[:6000]
    failed = sum(1 for _, ok, _ in results if not ok)
    if failed:
        print("soak FAILED with seed=%d (rerun: python3 tests/e2e/soak.py --bin %s%s%s --seconds %g --threads %d --seed %d)" %
              (seed, a.bin, " --sim-bin " + a.sim_bin if a.sim_bin else "", " --sanitized" if a.sanitized else "",
               a.seconds, a.threads, seed))
        print("gateway log (%s/gw.log):\n%s" % (env.dir, log_excerpt(gw_log)))
        if sanitizer_elsewhere:
            print(sanitizer_elsewhere)
    print("%d passed, %d failed" % (len(results) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
