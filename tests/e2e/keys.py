"""keys.py — end-to-end tests of API-key quotas (SPEC §3 429s and x-quota headers, §4.8-4.11,
§6): strict and graceful admission under concurrency, the 429's Retry-After / reset time /
dialect shape, the x-quota-* headers, on_exhausted: disable with and without auto_resume,
max_tokens validation, the total quota in USD, counters across SIGTERM and kill -9, the
ledger agreeing with the counters, and cut streams charged what they consumed.

"No upstream call" is always proved with the simulator's own per-account `requests` counter
(/sim/stats).  Every test has its own simulator and gateway (solo tests in run.py's sense:
they take (binary, sanitized)).  Windows are anchored at test time, so none rolls over
during a test unless the test wants it to.  The manual reset (POST /admin/keys/{id}/reset),
the key views and `quotagate keys` are tested at the end of the file."""

import json
import math
import re
import signal
import socket
import sqlite3
import threading
import time

from harness import KEY as KEY_HARNESS, Client, Env, eq, request, settled, solo_test, sse_events, wait_row

KEYS_TESTS = []

MIN = 60000
HOUR = 3600000
DAY = 86400000


keys_test = solo_test(KEYS_TESTS)


# ---------------------------------------------------------------- helpers

def now_ms():
    return int(time.time() * 1000)


def whole_s(ms):
    """ms rounded up to a whole second (anchors and resets print in whole seconds)."""
    return (ms + 999) // 1000 * 1000


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000.0))


def prov(name, port, models, key, dialect="openai"):
    return """
  - name: %s
    dialect: %s
    base_url: http://127.0.0.1:%d
    models: [%s]
    accounts: [{ name: %s, api_key: %s }]
""" % (name, dialect, port, models, "a-" + name, key)


def policy(period, limit, unit, **kw):
    kw = dict(kw, period=period, limit=limit, unit=unit)
    return "{ " + ", ".join("%s: %s" % (k, json.dumps(v) if isinstance(v, str) and k == "anchor" else
                                       ("true" if v is True else "false" if v is False else v))
                            for k, v in kw.items()) + " }"


def key_entry(name, secret, policies=(), total=None):
    s = "  - { name: %s, key: %s" % (name, secret)
    if policies:
        s += ", policies: [" + ", ".join(policies) + "]"
    if total is not None:
        s += ", total_quota: %s" % total
    return s + " }\n"


def gateway(env, providers, keys, models="", workers=1, **kw):
    """keys: key_entry() lines (appended to the harness's two keys); models: a top-level
    `models:` block."""
    env.cfg = env.config(providers, extra=keys + models, workers=workers, **kw)
    env.start_gateway(env.cfg)


def hdrs(secret, dialect="openai"):
    if dialect == "anthropic":
        return {"x-api-key": secret, "anthropic-version": "2023-06-01"}
    return {"Authorization": "Bearer " + secret}


def dialect_of(path):
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def body(model, max_tokens=None, stream=False, pad=0, **extra):
    """The exact bytes sent (so the estimate, len/4 + output, is known)."""
    b = {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
    if max_tokens is not None:
        b["max_tokens"] = max_tokens
    if stream:
        b["stream"] = True
    if pad:
        b["padding"] = "x" * pad
    b.update(extra)
    return json.dumps(b).encode()


def body_of_tokens(model, prompt_tokens, max_tokens):
    """A compact chat body (no messages: the simulator does not need them) whose bytes / 4
    is exactly prompt_tokens."""
    for pad in range(0, 4 * prompt_tokens + 8):
        d = json.dumps({"model": model, "max_tokens": max_tokens, "p": "x" * pad}, separators=(",", ":")).encode()
        if len(d) // 4 == prompt_tokens:
            return d
    raise AssertionError("cannot build a body of %d prompt tokens" % prompt_tokens)


def estimate(data, max_tokens=None, model_max=None):
    """SPEC §4.10 as proxy.c computes it: body bytes / 4 + min(max_tokens, the model's
    max_output_tokens, 1024)."""
    cap = 1024
    if max_tokens and max_tokens < cap:
        cap = max_tokens
    if model_max and model_max < cap:
        cap = model_max
    return len(data) // 4 + cap


def post(env, secret, path, data, **kw):
    return request(env.port, "POST", path, data, hdrs(secret, dialect_of(path)), **kw)


def jbody(r):
    try:
        return json.loads(r.body)
    except ValueError:
        raise AssertionError("not JSON (status %d): %r" % (r.status, r.body[:300]))


def err_code(r):
    return jbody(r)["error"].get("code")


def sim_req(env, key):
    return env.sim_stats(env.sim).get(key, {}).get("requests", 0)


def near(value, expected, tol, what):
    if value is None or abs(value - expected) > tol:
        raise AssertionError("%s: expected %r ± %r, got %r" % (what, expected, tol, value))


def retry_after(r):
    v = r.headers.get("retry-after")
    return int(v) if v is not None else None


def head_only(env, secret, path="/v1/chat/completions", length=2000):
    """Sends a request head that announces a body and never sends it: only an answer
    decided from the head can come back (within 3 s)."""
    c = Client(env.port, timeout=3)
    try:
        c.send("POST", path, None, dict(hdrs(secret, dialect_of(path)), **{"Content-Type": "application/json",
                                                                           "Content-Length": str(length)}))
        try:
            return c.read_response()
        except socket.timeout:
            raise AssertionError("no answer to a head whose body never came: the refusal was not decided from the head")
    finally:
        c.close()


def send_head(c, path, data, headers):
    """Sends a request's head only (announcing len(data) bytes); the body follows with
    c.sock.sendall(data).  Heads first, bodies later: every request passes the head's
    precheck while nothing is reserved yet, so admission is decided by the reservations
    racing each other (keyquota.c's CAS), not by the precheck."""
    c.send("POST", path, None, dict(headers, **{"Content-Type": "application/json", "Content-Length": str(len(data))}))


def ledger_tokens(env, key):
    """(rows, prompt + completion tokens) of the key's ledger rows, from the SQLite file."""
    con = sqlite3.connect(env.db)
    try:
        n, t = con.execute("select count(*), coalesce(sum(prompt_tokens + completion_tokens), 0) from ledger"
                           " where key_id = ?", (key,)).fetchone()
        return n, t
    finally:
        con.close()


def store_window_used(env, key):
    """What the key_window table holds for the key (summed over its windows: each test key
    here has one policy whose window does not roll)."""
    con = sqlite3.connect(env.db)
    try:
        return con.execute("select coalesce(sum(used), 0) from key_window where key_id = ?", (key,)).fetchone()[0]
    finally:
        con.close()


def store_total_used(env, key):
    con = sqlite3.connect(env.db)
    try:
        row = con.execute("select used from key_total where key_id = ?", (key,)).fetchone()
        return row[0] if row else 0
    finally:
        con.close()


def key_rows(env, key):
    """The key's ledger rows, newest first, read from the SQLite file once every request
    made has its row committed (the file is the ledger; /admin/usage is checked against it
    in test_keys_ledger_matches_counters)."""
    settled(env)
    return [r for r in reversed(env.ledger_rows()) if r["key_name"] == key]


def last_key_row(env, key):
    rows = key_rows(env, key)
    assert rows, "no ledger row for key %s" % key
    return rows[0]


def check_logs(env):
    """A restart truncates gw.log: look for sanitizer reports before it does."""
    text = env.gw_log()
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        if marker in text:
            raise AssertionError("%s in gw.log:\n%s" % (marker, text[text.index(marker) - 200:][:3000]))


def restart(env, sig=signal.SIGTERM):
    if sig == signal.SIGTERM:
        eq(env.gw.stop(), 0, "SIGTERM exit code")
    else:
        env.gw.p.send_signal(sig)
        env.gw.p.wait()
    check_logs(env)
    env.start_gateway(env.cfg)


def connection_per_worker(env, model, rounds=30):
    """{"0": Client, "1": Client}: keep-alive connections whose worker is known
    (x-quotagate-request-id: qg-<worker>-<seq>).  The workers race for each accept and one
    may win most of a sequential series (under ASan and load, all of 300); a burst of
    connections opened at once is accepted by both."""
    by_worker = {}
    for _ in range(rounds):
        burst = [Client(env.port) for _ in range(16)]
        for c in burst:
            r = c.request("POST", "/v1/chat/completions", body(model, max_tokens=1), hdrs(KEY_HARNESS))
            eq(r.status, 200, "a request of the unlimited key")
            wk = r.headers["x-quotagate-request-id"].split("-")[1]
            if wk in by_worker:
                c.close()
            else:
                by_worker[wk] = c
        if len(by_worker) == 2:
            return by_worker
        time.sleep(0.05)
    raise AssertionError("could not get a connection on each worker: %r" % sorted(by_worker))


def check_key_429(r, dialect, code, what):
    """429 in the endpoint's dialect (SPEC §3) with `code`; returns (message, body)."""
    eq(r.status, 429, what + ": status (body %r)" % r.body[:300])
    j = jbody(r)
    if dialect == "anthropic":
        eq(j.get("type"), "error", what + ": Anthropic shape {type: error, error: {...}}")
        eq(j["error"].get("type"), "rate_limit_error", what + ": Anthropic error type")
    else:
        assert "type" not in j and {"message", "type", "code", "param"} <= set(j["error"]), what + ": OpenAI shape %r" % j
    eq(j["error"].get("code"), code, what + ": code")
    msg = j["error"].get("message")
    assert isinstance(msg, str) and msg, what + ": message %r" % msg
    return msg, j


# ---------------------------------------------------------------- 1. strict, 200 concurrent requests

@keys_test
def test_keys_strict_concurrent_admits_exactly_the_limit(env):
    """A strict key {60m, 10 requests}: 200 requests from 50 keep-alive connections (4 each),
    all at once, against a provider that takes 1 s to answer, on a two-worker gateway: exactly
    10 are served (200) and 190 get 429 key_policy_exhausted, most of them while the 10 are
    still in flight (a reservation counts from admission, not from settlement); the simulator
    saw exactly 10 requests.  The first 50 heads are all in before any body is sent, so
    those 50 pass the head's precheck and race through the reservation itself."""
    env.sim = env.start_sim("--account", "k1-up=slow,delay=1s")
    end = whole_s(now_ms()) + 30 * MIN  # windows count backwards from a future anchor: it ends there
    gateway(env, prov("p1", env.sim, "m-conc", "k1-up"),
            key_entry("conc", "conc-key-0001", [policy("60m", 10, "requests", anchor=rfc3339(end))]), workers=2)
    data = body("m-conc", max_tokens=2)
    results, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(50)

    def client():
        try:
            c = Client(env.port, timeout=30)
            send_head(c, "/v1/chat/completions", data, hdrs("conc-key-0001"))
            barrier.wait(15)   # every first head is in: their bodies race to reserve
            time.sleep(0.2)
            c.sock.sendall(data)
            for i in range(4):
                r = c.read_response() if i == 0 else c.request("POST", "/v1/chat/completions", data, hdrs("conc-key-0001"))
                code = err_code(r) if r.status != 200 else None
                with lock:
                    results.append((time.time(), r.status, code, retry_after(r)))
                if r.headers.get("connection", "").lower() == "close":
                    c.close()
                    c = Client(env.port, timeout=30)
            c.close()
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, "client errors: %r" % errors[:5]
    eq(len(results), 200, "responses")
    by = {}
    for _, st, code, _ in results:
        by[(st, code)] = by.get((st, code), 0) + 1
    eq(by, {(200, None): 10, (429, "key_policy_exhausted"): 190}, "statuses and codes")
    eq(sim_req(env, "k1-up"), 10, "the simulator saw exactly the 10 admitted requests")
    first_ok = min(t for t, st, _, _ in results if st == 200)
    early = sum(1 for t, st, _, _ in results if st == 429 and t < first_ok)
    assert early >= 40, "only %d refusals arrived while the 10 admitted requests were in flight: no overlap" % early
    left = (end - now_ms()) / 1000.0
    bad = [ra for _, st, _, ra in results if st == 429 and (ra is None or abs(ra - left) > 3)]
    assert not bad, "Retry-After of the 429s should be the window's end (~%ds): %r" % (left, bad[:5])


# ---------------------------------------------------------------- 2. graceful overshoot bound

@keys_test
def test_keys_graceful_overshoot_bounded_then_refused_from_head(env):
    """A graceful {60m, tokens, limit N} key, 20 concurrent requests (the provider takes
    300 ms).  Each request's estimate E = len/4 + 8 equals its actual use (the simulator
    reports the same prompt and 8 completion tokens), and graceful admits while committed
    < N where committed already holds the estimate of every request in flight (one CAS per
    admission, keyquota.c take()).  So however many are in flight, the admissions are
    serialised and exactly ceil(N/E) are admitted: used = ceil(N/E)·E < N + E — the
    overshoot is less than ONE estimate, far inside the in-flight bound
    N + in_flight·E.  The 20 heads are all in before any body, so every request passes the
    precheck and the reservations alone decide.  Once exhausted, a request is refused from
    its head."""
    env.sim = env.start_sim("--account", "k2-up=slow,delay=300ms")
    data = body("m-grace", max_tokens=8)
    e = estimate(data, 8)
    limit = 3 * e + e // 2
    end = whole_s(now_ms()) + 30 * MIN
    gateway(env, prov("p2", env.sim, "m-grace", "k2-up"),
            key_entry("grace", "grace-key-0001", [policy("60m", limit, "tokens", boundary="graceful", anchor=rfc3339(end))]),
            workers=2)
    statuses, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def client():
        try:
            c = Client(env.port, timeout=30)
            send_head(c, "/v1/chat/completions", data, hdrs("grace-key-0001"))
            barrier.wait(15)   # all 20 heads passed the precheck: the reservations decide
            time.sleep(0.2)
            c.sock.sendall(data)
            r = c.read_response()
            c.close()
            with lock:
                statuses.append((r.status, err_code(r) if r.status != 200 else None))
        except Exception as ex:  # noqa: BLE001
            with lock:
                errors.append(repr(ex))

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    admitted = sum(1 for s, _ in statuses if s == 200)
    others = sorted(set(statuses) - {(200, None)})
    eq(others, [(429, "key_policy_exhausted")], "every other request refused by the policy")
    expect_n = math.ceil(limit / e)
    eq(admitted, expect_n, "admitted (limit %d, estimate %d per request: graceful admits while committed < limit)" % (limit, e))
    eq(sim_req(env, "k2-up"), admitted, "the simulator saw only the admitted requests")
    rows = [r for r in key_rows(env, "grace") if r["status"] == 200]
    eq({(r["prompt_tokens"], r["completion_tokens"]) for r in rows}, {(len(data) // 4, 8)},
       "actual use = the estimate (the premise of the bound)")
    used = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    assert limit <= used < limit + e, "used %d: graceful must overshoot by less than one estimate (%d) past %d" % (used, e, limit)
    assert used <= limit + 20 * e, "used %d beyond even the in-flight bound" % used
    eq(store_window_used(env, "grace"), used, "key_window holds what the rows charged")
    # exhausted: the next request is refused from its head (its body is never sent)
    r = head_only(env, "grace-key-0001")
    msg, _ = check_key_429(r, "openai", "key_policy_exhausted", "exhausted graceful key, head only")
    near(retry_after(r), (end - now_ms()) / 1000.0, 2, "Retry-After")
    eq(sim_req(env, "k2-up"), admitted, "no upstream call after exhaustion")


# ---------------------------------------------------------------- 3. the 429's details

@keys_test
def test_keys_429_retry_after_reset_time_no_amounts_both_dialects(env):
    """key_policy_exhausted in both dialects, from the head (window exhausted) and from the
    body (the estimate does not fit a strict policy): Retry-After = seconds to the window's
    end (±2 s), the message carries the reset time in RFC 3339 and no amount (once the
    reset time and the period name are taken out, no digit is left: neither the limit nor
    what is used or left)."""
    env.sim = env.start_sim()
    end = whole_s(now_ms()) + 1234 * 1000  # within the 60 min period: the current window ends at the anchor
    anchor = rfc3339(end)
    gateway(env, prov("p3", env.sim, "m3", "k3-up") + prov("p3a", env.sim, "c3", "k3-upa", dialect="anthropic"),
            key_entry("req1", "req1-key-0001", [policy("60m", 1, "requests", anchor=anchor)]) +
            key_entry("tok", "tok-key-00001", [policy("60m", 97, "tokens", anchor=anchor)]))
    oa = body("m3", max_tokens=2)
    an = body("c3", max_tokens=2)
    eq(post(env, "req1-key-0001", "/v1/chat/completions", oa).status, 200, "the one request the key may make")
    eq(post(env, "tok-key-00001", "/v1/chat/completions", body("m3", max_tokens=2)).status, 200, "tok: a small request")
    used = last_key_row(env, "tok")["prompt_tokens"] + last_key_row(env, "tok")["completion_tokens"]
    # a request whose estimate fits the limit but not what is left (it would fit the next window)
    fit_later = 97 - len(body("m3", max_tokens=1)) // 4
    assert estimate(body("m3", max_tokens=fit_later), fit_later) <= 97 < used + estimate(body("m3", max_tokens=fit_later), fit_later)
    cases = [
        (post(env, "req1-key-0001", "/v1/chat/completions", oa), "openai", "exhausted, OpenAI"),
        (post(env, "req1-key-0001", "/v1/messages", an), "anthropic", "exhausted, Anthropic"),
        (head_only(env, "req1-key-0001", "/v1/messages"), "anthropic", "exhausted, Anthropic, head only"),
        (post(env, "tok-key-00001", "/v1/chat/completions", body("m3", max_tokens=fit_later)), "openai",
         "estimate does not fit what is left, OpenAI"),
        (post(env, "tok-key-00001", "/v1/messages", body("c3", max_tokens=fit_later)), "anthropic",
         "estimate does not fit what is left, Anthropic"),
    ]
    for r, dialect, what in cases:
        msg, _ = check_key_429(r, dialect, "key_policy_exhausted", what)
        near(retry_after(r), (end - now_ms()) / 1000.0, 2, what + ": Retry-After = seconds to the window's end")
        assert anchor in msg, "%s: the message should give the reset time %s: %r" % (what, anchor, msg)
        rest = msg.replace(anchor, "").replace("60m", "")
        assert not re.search(r"\d", rest), "%s: the message must not carry amounts: %r" % (what, msg)
    # an estimate larger than the whole limit can never fit: refused all the same, no amounts either
    for path, model, dialect in (("/v1/chat/completions", "m3", "openai"), ("/v1/messages", "c3", "anthropic")):
        r = post(env, "tok-key-00001", path, body(model, max_tokens=500))
        msg, _ = check_key_429(r, dialect, "key_policy_exhausted", "estimate over the whole limit, " + dialect)
        assert not re.search(r"\d", msg.replace(anchor, "").replace("60m", "")), "no amounts: %r" % msg
    eq(sim_req(env, "k3-up"), 2, "only the admitted requests reached the provider")
    eq(sim_req(env, "k3-upa"), 0, "no Anthropic request reached the provider")
    # the refusal of a request that does not fit leaves room for one that does
    r = post(env, "tok-key-00001", "/v1/chat/completions", body("m3", max_tokens=2))
    eq(r.status, 200, "a request that fits the strict tokens policy after a refused one")


# ---------------------------------------------------------------- 4. x-quota headers

def monthly_end(t):
    """The end of the monthly window containing t for the anchor 2026-01-31T10:00:00+08:00:
    each month's 31st (or last day) at 10:00 +08:00."""
    import calendar
    off = 8 * HOUR
    lt = time.gmtime((t + off) / 1000.0)
    y, m = lt.tm_year, lt.tm_mon

    def start(y, m):
        d = min(31, calendar.monthrange(y, m)[1])
        return calendar.timegm((y, m, d, 10, 0, 0)) * 1000 - off

    if start(y, m) > t:  # before this month's start: the window began last month
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return start(y, m)


def daily_end(anchor_ms, t):
    k = (t - anchor_ms) // DAY
    return anchor_ms + (k + 1) * DAY


@keys_test
def test_keys_x_quota_headers(env):
    """Policies {2m, 5 requests}, {daily, tokens, anchor 2026-01-01T00:00:00+05:30} and a
    second daily one (anchor 00:00Z, hence the -2 suffix).  Every 2xx (plain, stream, Anthropic)
    carries x-quota-2m-*, x-quota-daily-*, x-quota-daily-2-* and x-quota-remaining / -reset
    equal to the pair of the policy with the least remaining share; each remaining is the
    limit minus what earlier requests settled minus this request's own reservation
    (the head goes out while it is in flight); the +05:30 daily window resets at 18:30Z.
    Another key shows the 5h, weekly, monthly and 90m labels and their windows' ends."""
    env.sim = env.start_sim()
    t0 = now_ms()
    end2 = whole_s(t0) + 100 * 1000  # the 2 m window ends at its (future) anchor
    small = body("m4", max_tokens=8)
    e_small = estimate(small, 8)
    l_daily = 10 * e_small + 1  # +1: no tie between the shares (the tie rule is not specified)
    l_daily2 = 100000
    a1 = "2026-01-01T00:00:00+05:30"
    a1_ms = 1767205800000  # 2025-12-31T18:30:00Z
    a2_ms = 1767225600000  # 2026-01-01T00:00:00Z
    gateway(env, prov("p4", env.sim, "m4", "k4-up") + prov("p4a", env.sim, "c4", "k4-upa", dialect="anthropic"),
            key_entry("hdr", "hdr-key-00001", [policy("2m", 5, "requests", anchor=rfc3339(end2)),
                                               policy("daily", l_daily, "tokens", anchor=a1),
                                               policy("daily", l_daily2, "tokens", anchor="2026-01-01T00:00:00Z")]) +
            key_entry("per", "per-key-00001", [policy("5h", 1000, "requests"),
                                               policy("weekly", 1000, "requests", anchor="2026-01-05T09:00:00+08:00"),
                                               policy("monthly", 1000, "requests", anchor="2026-01-31T10:00:00+08:00"),
                                               policy("90m", 1000, "requests")]))
    big = body("m4", max_tokens=8, pad=4 * 3 * e_small)  # about 4 small requests' worth
    chat_p, msg_p = "/v1/chat/completions", "/v1/messages"
    seq = [(chat_p, big, False), (chat_p, small, False), (chat_p, body("m4", max_tokens=8, stream=True), True),
           (msg_p, body("c4", max_tokens=8), False), (chat_p, small, False)]
    limits = [5, l_daily, l_daily2]
    settled_use = [0, 0, 0]
    tights = set()
    for i, (path, data, stream) in enumerate(seq):
        t = now_ms()
        r = post(env, "hdr-key-00001", path, data)
        t2 = now_ms()
        eq((r.status, r.complete), (200, True), "request %d (%s)" % (i + 1, path))
        h = r.headers
        e = estimate(data, 8)
        rem = [limits[0] - settled_use[0] - 1, limits[1] - settled_use[1] - e, limits[2] - settled_use[2] - e]
        what = "request %d (%s, stream=%s)" % (i + 1, path, stream)
        for name in ("2m", "daily", "daily-2"):
            for part in ("remaining", "reset"):
                assert "x-quota-%s-%s" % (name, part) in h, "%s: no x-quota-%s-%s in %r" % (what, name, part, sorted(h))
        eq(int(h["x-quota-2m-remaining"]), rem[0], what + ": x-quota-2m-remaining")
        eq(h["x-quota-2m-reset"], rfc3339(end2), what + ": x-quota-2m-reset")
        eq(int(h["x-quota-daily-remaining"]), rem[1], what + ": x-quota-daily-remaining (limit - settled - own estimate)")
        assert h["x-quota-daily-reset"] in (rfc3339(daily_end(a1_ms, t)), rfc3339(daily_end(a1_ms, t2))), \
            "%s: x-quota-daily-reset %r" % (what, h["x-quota-daily-reset"])
        assert h["x-quota-daily-reset"].endswith("T18:30:00Z"), what + ": the +05:30 midnight is 18:30Z: %r" % h["x-quota-daily-reset"]
        eq(int(h["x-quota-daily-2-remaining"]), rem[2], what + ": x-quota-daily-2-remaining")
        assert h["x-quota-daily-2-reset"] in (rfc3339(daily_end(a2_ms, t)), rfc3339(daily_end(a2_ms, t2))), \
            "%s: x-quota-daily-2-reset %r" % (what, h["x-quota-daily-2-reset"])
        shares = [rem[k] / limits[k] for k in range(3)]
        tight = min(range(3), key=lambda k: shares[k])
        tights.add(tight)
        name = ["2m", "daily", "daily-2"][tight]
        eq((h.get("x-quota-remaining"), h.get("x-quota-reset")), (h["x-quota-%s-remaining" % name], h["x-quota-%s-reset" % name]),
           what + ": x-quota-remaining / -reset = the tightest policy's (%s; shares %r)" % (name, shares))
        row = last_key_row(env, "hdr")
        actual = row["prompt_tokens"] + row["completion_tokens"]
        if not stream:
            eq(actual, e, what + ": actual = estimate for a plain request")
        settled_use = [settled_use[0] + 1, settled_use[1] + actual, settled_use[2] + actual]
    eq(tights, {0, 1}, "the tightest policy changed during the run (daily first, then 2m)")
    eq(settled_use[0], 5, "five requests")
    r = post(env, "hdr-key-00001", "/v1/chat/completions", small)
    check_key_429(r, "openai", "key_policy_exhausted", "the sixth request in the 2 m window")
    near(retry_after(r), (end2 - now_ms()) / 1000.0, 2, "Retry-After to the 2 m window's end")
    # the other labels and window alignments (SPEC §4.9): 5h and 90m from the epoch, weekly
    # from its anchor, monthly on the anchor's day (31st: clamped to the month's last) and
    # time in its offset
    t = now_ms()
    r = post(env, "per-key-00001", "/v1/chat/completions", small)
    t2 = now_ms()
    eq(r.status, 200, "per: status")
    week_a = 1767574800000  # 2026-01-05T01:00:00Z
    expect = {"5h": lambda x: (x // (5 * HOUR) + 1) * 5 * HOUR, "90m": lambda x: (x // (90 * MIN) + 1) * 90 * MIN,
              "weekly": lambda x: week_a + ((x - week_a) // (7 * DAY) + 1) * 7 * DAY, "monthly": monthly_end}
    for name, fn in expect.items():
        eq(r.headers.get("x-quota-%s-remaining" % name), "999", "per: x-quota-%s-remaining" % name)
        assert r.headers.get("x-quota-%s-reset" % name) in (rfc3339(fn(t)), rfc3339(fn(t2))), \
            "per: x-quota-%s-reset %r, expected %s" % (name, r.headers.get("x-quota-%s-reset" % name), rfc3339(fn(t)))


# ---------------------------------------------------------------- 5. on_exhausted: disable

@keys_test
def test_keys_disable_auto_resume_and_manual(env):
    """Two keys with {1m, 2 requests, on_exhausted: disable} (auto_resume true / false) and a
    roomy daily tokens policy; the 1 m window ends at its anchor, set ~6 s from now.  After
    two requests each key is paused: even a tiny request (which the daily policy would
    take) is refused, auto_resume with Retry-After = seconds to the window's end (<= 60),
    manual without Retry-After and with "manual reset" in the message.  After the rollover
    the auto_resume key serves again by itself; the other stays refused."""
    env.sim = env.start_sim()
    t0 = now_ms()
    end = whole_s(t0) + 6000
    daily = policy("daily", 1000000, "tokens")
    gateway(env, prov("p5", env.sim, "m5a", "k5-auto") + prov("p5m", env.sim, "m5m", "k5-man"),
            key_entry("auto", "auto-key-0001", [policy("1m", 2, "requests", on_exhausted="disable", auto_resume=True,
                                                       anchor=rfc3339(end)), daily]) +
            key_entry("man", "man-key-00001", [policy("1m", 2, "requests", on_exhausted="disable", auto_resume=False,
                                                      anchor=rfc3339(end)), daily]))
    for key, model in (("auto-key-0001", "m5a"), ("man-key-00001", "m5m")):
        for i in range(2):
            r = post(env, key, "/v1/chat/completions", body(model, max_tokens=2))
            eq(r.status, 200, "%s: request %d of 2" % (key, i + 1))
    assert now_ms() < end - 1500, "too slow to test before the rollover"
    for path, model in (("/v1/chat/completions", "m5a"), ("/v1/chat/completions", "m5a")):
        r = post(env, "auto-key-0001", path, body(model, max_tokens=1))
        msg, _ = check_key_429(r, "openai", "key_policy_exhausted", "auto: paused")
        ra = retry_after(r)
        assert ra is not None and ra <= 60, "auto: Retry-After %r should be <= 60" % ra
        near(ra, (end - now_ms()) / 1000.0, 2, "auto: Retry-After = seconds to the 1 m window's end")
        assert rfc3339(end) in msg, "auto: reset time in the message: %r" % msg
    r = head_only(env, "auto-key-0001")
    check_key_429(r, "openai", "key_policy_exhausted", "auto: paused, head only")
    r = post(env, "man-key-00001", "/v1/chat/completions", body("m5m", max_tokens=1))
    msg, _ = check_key_429(r, "openai", "key_policy_exhausted", "manual: paused")
    eq(retry_after(r), None, "manual: no Retry-After (it never resumes by itself)")
    assert "manual reset" in msg, "manual: the message says a manual reset is needed: %r" % msg
    eq((sim_req(env, "k5-auto"), sim_req(env, "k5-man")), (2, 2), "no upstream call while paused")
    time.sleep(max(0, end + 1000 - now_ms()) / 1000.0)
    r = post(env, "auto-key-0001", "/v1/chat/completions", body("m5a", max_tokens=2))
    eq(r.status, 200, "auto: serves again after the window rolled over (%r)" % r.body[:200])
    eq(int(r.headers.get("x-quota-1m-remaining", "-1")), 1, "auto: the new window's remaining")
    eq(r.headers.get("x-quota-1m-reset"), rfc3339(end + MIN), "auto: the new window's reset")
    eq(sim_req(env, "k5-auto"), 3, "auto: its request reached the provider")
    r = post(env, "man-key-00001", "/v1/chat/completions", body("m5m", max_tokens=2))
    msg, _ = check_key_429(r, "openai", "key_policy_exhausted", "manual: still paused after the rollover")
    eq(retry_after(r), None, "manual: still no Retry-After")
    assert "manual reset" in msg, "manual: %r" % msg
    eq(sim_req(env, "k5-man"), 2, "manual: no upstream call after the rollover")


@keys_test
def test_keys_manual_pause_survives_restart(env):
    """A key paused by {on_exhausted: disable, auto_resume: false} resumes "only by manual
    reset" (SPEC §4.11), and state survives a restart (SPEC §6): after its window rolled
    over (so its counter no longer shows the exhaustion), a SIGTERM restart must not resume
    it.  Two keys on a two-worker gateway: `manr` (1 request, then refusals), and `manx`
    (2 requests) whose first request is served by worker 1 and whose second — the one that
    pauses it — by worker 0, right after, and nothing after that: the store must not let the
    first request's (older, unpaused) row win over the second's."""
    env.sim = env.start_sim()
    end = whole_s(now_ms()) + 5000
    pol = lambda n: [policy("1m", n, "requests", on_exhausted="disable", auto_resume=False, anchor=rfc3339(end))]
    gateway(env, prov("p5r", env.sim, "m5r", "k5r-up") + prov("p5x", env.sim, "m5x", "k5x-up"),
            key_entry("manr", "manr-key-0001", pol(1)) + key_entry("manx", "manx-key-0001", pol(2)), workers=2)
    by_worker = connection_per_worker(env, "m5x")
    c0, c1 = by_worker["0"], by_worker["1"]
    r = c1.request("POST", "/v1/chat/completions", body("m5x", max_tokens=2), hdrs("manx-key-0001"))
    eq((r.status, r.headers["x-quotagate-request-id"].split("-")[1]), (200, "1"), "manx: first request, on worker 1")
    r = c0.request("POST", "/v1/chat/completions", body("m5x", max_tokens=2), hdrs("manx-key-0001"))
    eq((r.status, r.headers["x-quotagate-request-id"].split("-")[1]), (200, "0"), "manx: second request, on worker 0")
    c0.close()
    c1.close()
    eq(post(env, "manr-key-0001", "/v1/chat/completions", body("m5r", max_tokens=2)).status, 200, "manr: the one request")
    check_key_429(post(env, "manr-key-0001", "/v1/chat/completions", body("m5r", max_tokens=2)), "openai",
                  "key_policy_exhausted", "manr: paused")
    assert now_ms() < end, "too slow: the window rolled over already"
    time.sleep(max(0, end + 1000 - now_ms()) / 1000.0)
    check_key_429(post(env, "manr-key-0001", "/v1/chat/completions", body("m5r", max_tokens=2)), "openai",
                  "key_policy_exhausted", "manr: still paused after the rollover")
    settled(env)
    restart(env)
    for key, up, n in (("manr-key-0001", "k5r-up", 1), ("manx-key-0001", "k5x-up", 2)):
        model = "m5r" if up == "k5r-up" else "m5x"
        before = sim_req(env, up)
        r = post(env, key, "/v1/chat/completions", body(model, max_tokens=2))
        eq(r.status, 429, "%s: after a SIGTERM restart the manually paused key must stay paused (got %d: %r)"
           % (key, r.status, r.body[:120]))
        check_key_429(r, "openai", "key_policy_exhausted", "%s: after the restart" % key)
        msg = jbody(r)["error"]["message"]
        assert "manual reset" in msg, "%s: %r" % (key, msg)
        eq(sim_req(env, up), before, "%s: no upstream call after the restart" % key)


# ---------------------------------------------------------------- 6. max_tokens validation

@keys_test
def test_keys_max_tokens_validation(env):
    """max_tokens / max_completion_tokens / max_output_tokens that are not a non-negative
    integer (-1, "8", 1e999999, 1.5, true) are 400 invalid_request in the endpoint's dialect with
    no upstream call and no charge; null is absent: accepted, with the default output
    estimate (1024) reserved."""
    env.sim = env.start_sim()
    limit = 1000000
    gateway(env, prov("p6", env.sim, "m6", "k6-up") + prov("p6a", env.sim, "c6", "k6-upa", dialect="anthropic"),
            key_entry("val", "val-key-00001", [policy("daily", limit, "tokens")]))
    raw = lambda model, field, lit: ('{"model":"%s","messages":[{"role":"user","content":"hi"}],"%s":%s}'
                                     % (model, field, lit)).encode()
    bad = []
    for lit in ("-1", '"8"', "1e999999", "1.5", "true"):
        bad.append(("/v1/chat/completions", raw("m6", "max_tokens", lit)))
        bad.append(("/v1/chat/completions", raw("m6", "max_completion_tokens", lit)))
        bad.append(("/v1/responses", ('{"model":"m6","input":"hi","max_output_tokens":%s}' % lit).encode()))
        bad.append(("/v1/messages", raw("c6", "max_tokens", lit)))
    for path, data in bad:
        r = post(env, "val-key-00001", path, data)
        what = "%s %s" % (path, data.decode())
        eq(r.status, 400, what + ": status (%r)" % r.body[:200])
        j = jbody(r)
        eq(j["error"].get("code"), "invalid_request", what + ": code")
        if dialect_of(path) == "anthropic":
            eq((j.get("type"), j["error"].get("type")), ("error", "invalid_request_error"), what + ": Anthropic shape")
    eq((sim_req(env, "k6-up"), sim_req(env, "k6-upa")), (0, 0), "the simulator saw none of the invalid requests")
    used = 0
    for path, data in (("/v1/chat/completions", raw("m6", "max_tokens", "null")),
                       ("/v1/responses", b'{"model":"m6","input":"hi","max_output_tokens":null}'),
                       ("/v1/messages", raw("c6", "max_tokens", "null"))):
        r = post(env, "val-key-00001", path, data)
        what = "%s with null" % path
        if path == "/v1/messages":  # the gateway passes it on; what the provider says of it is its own affair
            eq(sim_req(env, "k6-upa"), 1, what + ": accepted by the gateway (reached the provider; status %d)" % r.status)
            continue
        eq(r.status, 200, what + ": accepted (%r)" % r.body[:200])
        eq(int(r.headers["x-quota-daily-remaining"]), limit - used - (len(data) // 4 + 1024),
           what + ": null means no max: the default 1024 output tokens are reserved")
        row = last_key_row(env, "val")
        used += row["prompt_tokens"] + row["completion_tokens"]
    eq(sim_req(env, "k6-up"), 2, "the null requests reached the provider")


# ---------------------------------------------------------------- 7. total quota

@keys_test
def test_keys_total_quota_usd(env):
    """A model priced at $1,000,000 per million tokens in and out ($1 a token) and a key with
    total_quota: 50 (USD, reserved strictly: the estimate must fit).  20 + 20 tokens are
    admitted, another 20 does not fit (429 key_quota_exhausted, no Retry-After: a total
    quota never resets, no amounts in the message), 10 fits exactly; then the quota is spent
    and the next request is refused from its head (both dialects), also after a restart.
    key_total holds 50,000,000 micro-USD."""
    env.sim = env.start_sim()
    models = "models:\n  - { name: m7, input_usd_per_mtok: 1000000, output_usd_per_mtok: 1000000 }\n"
    gateway(env, prov("p7", env.sim, "m7", "k7-up"), key_entry("usd", "usd-key-00001", total=50), models=models)
    b20 = body_of_tokens("m7", 18, 2)   # 18 prompt + 2 completion = $20
    b10 = body_of_tokens("m7", 9, 1)    # 9 prompt + 1 completion = $10
    for i in range(2):
        r = post(env, "usd-key-00001", "/v1/chat/completions", b20)
        eq(r.status, 200, "$20 request %d" % (i + 1))
        row = last_key_row(env, "usd")
        eq((row["prompt_tokens"], row["completion_tokens"]), (18, 2), "the request used 20 tokens")
    r = post(env, "usd-key-00001", "/v1/chat/completions", b20)
    msg, _ = check_key_429(r, "openai", "key_quota_exhausted", "$40 used, $20 more does not fit in $50")
    eq(retry_after(r), None, "no Retry-After for a total quota")
    assert not re.search(r"\d", msg), "no amounts in the message: %r" % msg
    eq(sim_req(env, "k7-up"), 2, "the refused request made no upstream call")
    r = post(env, "usd-key-00001", "/v1/chat/completions", b10)
    eq(r.status, 200, "$10 fits exactly (%r)" % r.body[:200])
    r = head_only(env, "usd-key-00001")
    check_key_429(r, "openai", "key_quota_exhausted", "spent: refused from the head")
    r = post(env, "usd-key-00001", "/v1/messages", body("m7", max_tokens=1))
    check_key_429(r, "anthropic", "key_quota_exhausted", "spent: the Anthropic endpoint too")
    eq(sim_req(env, "k7-up"), 3, "three upstream calls in all")
    settled(env)
    eq(store_total_used(env, "usd"), 50 * 1000000, "key_total (micro-USD)")
    restart(env)
    check_key_429(post(env, "usd-key-00001", "/v1/chat/completions", b10), "openai", "key_quota_exhausted",
                  "still spent after a SIGTERM restart")
    eq(sim_req(env, "k7-up"), 3, "no upstream call after the restart")


# ---------------------------------------------------------------- 8. restarts keep counters

@keys_test
def test_keys_counters_survive_sigterm_and_kill9(env):
    """A strict {60m, 10 requests} key: 6 requests, a SIGTERM restart on the same store, then
    exactly 4 more are admitted; another such key: 6 requests, kill -9 300 ms after the last
    response (the ledger writer flushes every 100 ms), then again exactly 4 more.  The
    simulator saw exactly 10 for each."""
    env.sim = env.start_sim()
    end = whole_s(now_ms()) + 30 * MIN
    pol = [policy("60m", 10, "requests", anchor=rfc3339(end))]
    gateway(env, prov("p8a", env.sim, "m8a", "k8-a") + prov("p8b", env.sim, "m8b", "k8-b"),
            key_entry("ra", "ra-key-000001", pol) + key_entry("rb", "rb-key-000001", pol))

    def burst(secret, model, n):
        return [post(env, secret, "/v1/chat/completions", body(model, max_tokens=2)) for _ in range(n)]

    for r in burst("ra-key-000001", "m8a", 6):
        eq(r.status, 200, "ra: before the restart")
    settled(env)
    restart(env, signal.SIGTERM)
    rs = burst("ra-key-000001", "m8a", 8)
    eq([r.status for r in rs], [200] * 4 + [429] * 4, "ra: after SIGTERM exactly 4 more (6 of 10 were used)")
    eq(int(rs[0].headers["x-quota-60m-remaining"]), 3, "ra: remaining after the restart counts the 6 (and itself)")
    eq(err_code(rs[-1]), "key_policy_exhausted", "ra: refused by the policy")
    eq(sim_req(env, "k8-a"), 10, "ra: the simulator saw exactly 10")

    for r in burst("rb-key-000001", "m8b", 6):
        eq(r.status, 200, "rb: before kill -9")
    settled(env)
    time.sleep(0.3)
    restart(env, signal.SIGKILL)
    rs = burst("rb-key-000001", "m8b", 8)
    eq([r.status for r in rs], [200] * 4 + [429] * 4, "rb: after kill -9 exactly 4 more")
    eq(sim_req(env, "k8-b"), 10, "rb: the simulator saw exactly 10")
    eq(post(env, "ra-key-000001", "/v1/chat/completions", body("m8a", max_tokens=2)).status, 429, "ra: still spent after kill -9")
    eq(sim_req(env, "k8-a"), 10, "ra: no further upstream call")


# ---------------------------------------------------------------- 9. ledger = counters

@keys_test
def test_keys_ledger_matches_counters(env):
    """A strict daily tokens key through every kind of exchange: chat (plain, stream, stream
    asking for usage), responses (plain, stream), embeddings, messages (plain, stream), a
    provider that fails (502: released), a client that leaves mid-stream (499: charged what
    was relayed).  The last response's x-quota-daily-remaining R shows the limit minus the
    earlier settlements minus its own reservation E, so the ledger's token sum S for the key
    must be exactly limit - R - E + (the last request's actual use).  After SIGTERM the
    key_window table holds S too, and after the restart the next request sees remaining
    limit - S - its estimate."""
    env.sim = env.start_sim("--chunk-delay", "30ms", "--account", "k9-bad=500")
    limit = 5000000
    gateway(env, prov("p9", env.sim, "m9, e9", "k9-up") + prov("p9a", env.sim, "c9", "k9-upa", dialect="anthropic") +
            prov("p9b", env.sim, "m9-bad", "k9-bad"),
            key_entry("led", "led-key-00001", [policy("daily", limit, "tokens")]))
    K = "led-key-00001"
    calls = [
        ("/v1/chat/completions", body("m9", max_tokens=5)),
        ("/v1/chat/completions", body("m9", stream=True)),
        ("/v1/chat/completions", body("m9", max_tokens=3, stream=True, stream_options={"include_usage": True})),
        ("/v1/responses", json.dumps({"model": "m9", "input": "hello", "max_output_tokens": 4}).encode()),
        ("/v1/responses", json.dumps({"model": "m9", "input": "hello", "stream": True}).encode()),
        ("/v1/embeddings", json.dumps({"model": "e9", "input": "hello there"}).encode()),
        ("/v1/messages", body("c9", max_tokens=6)),
        ("/v1/messages", body("c9", max_tokens=7, stream=True)),
    ]
    for path, data in calls:
        r = post(env, K, path, data)
        eq((r.status, r.complete), (200, True), "%s %s" % (path, data[:80]))
    r = post(env, K, "/v1/chat/completions", body("m9-bad", max_tokens=2))
    assert r.status >= 500, "the failing provider: %d" % r.status
    # a client that leaves after the first events of a stream
    c = Client(env.port)
    seen = []
    c.send("POST", "/v1/chat/completions", body("m9", stream=True), dict(hdrs(K), **{"Content-Type": "application/json"}))
    c.read_response(on_chunk=lambda p: seen.append(p) or len(seen) < 2)
    c.close()
    wait_row(env, lambda row: row["status"] == 499 and row["key"] == "led", "the 499 row")
    last = body("m9", max_tokens=2)
    r = post(env, K, "/v1/chat/completions", last)
    eq(r.status, 200, "the last request")
    rem = int(r.headers["x-quota-daily-remaining"])
    row = last_key_row(env, "led")
    actual_last = row["prompt_tokens"] + row["completion_tokens"]
    rows = key_rows(env, "led")
    eq(len(rows), len(calls) + 3, "one row per request")
    api = env.usage("?key=led&limit=100")["rows"]
    eq([x["request_id"] for x in api], [x["request_id"] for x in rows], "/admin/usage?key= lists the file's rows, newest first")
    s = sum(x["prompt_tokens"] + x["completion_tokens"] for x in rows)
    totals = env.usage("?key=led")["totals"]
    eq(totals["prompt_tokens"] + totals["completion_tokens"], s, "/admin/usage totals = the rows' sum")
    r499 = [x for x in rows if x["status"] == 499][0]
    assert r499["completion_tokens"] >= 1 and r499["prompt_tokens"] > 0, "the 499 is charged what it consumed: %r" % r499
    failed = [x for x in rows if x["status"] >= 500][0]
    eq(failed["prompt_tokens"] + failed["completion_tokens"], 0, "the failed call consumed nothing")
    eq(s, limit - rem - estimate(last, 2) + actual_last,
       "ledger sum = limit - last remaining - last estimate + last actual (remaining %d, estimate %d, actual %d)"
       % (rem, estimate(last, 2), actual_last))
    eq(store_window_used(env, "led"), s, "key_window (live) = the ledger's sum")
    restart(env, signal.SIGTERM)
    eq(ledger_tokens(env, "led")[1], s, "ledger file after the restart")
    eq(store_window_used(env, "led"), s, "key_window after shutdown = the ledger's sum")
    nxt = body("m9", max_tokens=3)
    r = post(env, K, "/v1/chat/completions", nxt)
    eq(r.status, 200, "after the restart")
    eq(int(r.headers["x-quota-daily-remaining"]), limit - s - estimate(nxt, 3), "restored counter = the ledger's sum")


# ---------------------------------------------------------------- 10. cut streams

@keys_test
def test_keys_cut_stream_charged_what_it_consumed(env):
    """A stream the provider cuts midway (sim `cut`: half of the 8 chunks, then a close) is
    charged the prompt estimate (bytes/4) plus the content events it relayed — never zero —
    on the key's counter exactly as on its ledger row; OpenAI and Anthropic."""
    env.sim = env.start_sim("--account", "k10-cut=cut", "--account", "k10-cuta=cut")
    limit = 1000000
    gateway(env, prov("p10", env.sim, "m10", "k10-ok") + prov("p10c", env.sim, "m10-cut", "k10-cut") +
            prov("p10a", env.sim, "c10-cut", "k10-cuta", dialect="anthropic"),
            key_entry("cut", "cut-key-00001", [policy("daily", limit, "tokens")]))
    K = "cut-key-00001"
    probe = body("m10", max_tokens=2)

    def send_probe(what):
        r = post(env, K, "/v1/chat/completions", probe)
        eq(r.status, 200, what)
        rem = int(r.headers["x-quota-daily-remaining"])
        row = last_key_row(env, "cut")
        return rem, row["prompt_tokens"] + row["completion_tokens"]

    rem, actual = send_probe("first probe")
    eq(rem, limit - estimate(probe, 2), "first probe: remaining")
    used = actual
    for path, data, dialect in (("/v1/chat/completions", body("m10-cut", stream=True), "openai"),
                                ("/v1/messages", body("c10-cut", max_tokens=64, stream=True), "anthropic")):
        r = post(env, K, path, data)
        eq(r.status, 200, "%s: the stream started" % dialect)
        assert not r.complete, "%s: the cut stream must not end cleanly" % dialect
        evs = sse_events(r.body)
        if dialect == "openai":
            content = 0
            for _, d in evs:
                if d.startswith("{"):
                    ch = json.loads(d).get("choices") or [{}]
                    content += bool(ch[0].get("delta", {}).get("content"))
        else:
            content = sum(1 for e, _ in evs if e == "content_block_delta")
        eq(content, 4, "%s: half of the 8 chunks were relayed" % dialect)
        row = last_key_row(env, "cut")
        eq(row["usage_source"], "estimated", "%s: estimated usage" % dialect)
        eq(row["prompt_tokens"], len(data) // 4, "%s: prompt = the request's bytes / 4" % dialect)
        eq(row["completion_tokens"], content, "%s: completion = the content events relayed" % dialect)
        charged = row["prompt_tokens"] + row["completion_tokens"]
        rem, actual = send_probe("probe after the %s cut" % dialect)
        eq(limit - used - estimate(probe, 2) - rem, charged, "%s: the key's counter grew by exactly the row's charge" % dialect)
        used += charged + actual
    eq(store_window_used(env, "cut"), ledger_tokens(env, "cut")[1], "key_window = the ledger's sum")


# ---------------------------------------------------------------- 11. manual reset (admin API and CLI)

import subprocess  # noqa: E402

from harness import ADMIN, free_port  # noqa: E402

ADMIN_HDRS = {"Authorization": "Bearer " + ADMIN}


def admin(env, method, path, headers=ADMIN_HDRS):
    return request(env.port, method, path, b"" if method == "POST" else None, headers)


def admin_key(env, name):
    r = admin(env, "GET", "/admin/keys/" + name)
    eq(r.status, 200, "GET /admin/keys/%s (%r)" % (name, r.body[:200]))
    return jbody(r)


def store_paused(env, key):
    con = sqlite3.connect(env.db)
    try:
        # a reset leaves a row with policy 0 (no pause) that holds the key's reset epoch
        return con.execute("select count(*) from key_pause where key_id = ? and policy != 0", (key,)).fetchone()[0]
    finally:
        con.close()


@keys_test
def test_keys_manual_reset_resumes_and_survives_restart(env):
    """A key with {60m, 2 requests, on_exhausted: disable, auto_resume: false}: two requests,
    then 429 with the manual-reset message (no Retry-After) and no upstream call.  POST
    /admin/keys/{name}/reset answers the key with its window zeroed and no pause; the next
    request is served and x-quota-60m-remaining shows the fresh window (2 - itself = 1).
    The store was updated too: key_window holds that one request, key_pause nothing, and
    after a SIGTERM restart the key shows used 1 (not the old 2 + 1) and active, serves one
    more request (remaining 0) and only then is paused again."""
    env.sim = env.start_sim()
    end = whole_s(now_ms()) + 30 * MIN  # the window ends at its (future) anchor: no rollover in the test
    gateway(env, prov("p11", env.sim, "m11", "k11-up"),
            key_entry("mreset", "mreset-key-01", [policy("60m", 2, "requests", on_exhausted="disable",
                                                          auto_resume=False, anchor=rfc3339(end))]))
    K = "mreset-key-01"
    for i in range(2):
        eq(post(env, K, "/v1/chat/completions", body("m11", max_tokens=2)).status, 200, "request %d of 2" % (i + 1))
    r = post(env, K, "/v1/chat/completions", body("m11", max_tokens=2))
    msg, _ = check_key_429(r, "openai", "key_policy_exhausted", "exhausted: paused until a manual reset")
    assert "manual reset" in msg, "the message says a manual reset is needed: %r" % msg
    eq(retry_after(r), None, "no Retry-After for a manual pause")
    eq(sim_req(env, "k11-up"), 2, "no upstream call while paused")
    k = admin_key(env, "mreset")
    eq((k["status"], k["paused"]["manual_reset"], k["paused"]["policy"]), ("paused", True, "60m"), "paused in the admin view")
    settled(env)
    eq(store_paused(env, "mreset"), 1, "the pause is in the store before the reset")

    r = admin(env, "POST", "/admin/keys/mreset/reset")
    eq(r.status, 200, "POST reset (%r)" % r.body[:200])
    k = jbody(r)
    eq((k["id"], k["name"], k["status"], k["paused"]), ("mreset", "mreset", "active", None), "the key after the reset")
    p = k["policies"][0]
    eq((p["used"], p["remaining"], p["exhausted"], p["reset"]), (0, 2, False, rfc3339(end)), "its window zeroed")

    r = post(env, K, "/v1/chat/completions", body("m11", max_tokens=2))
    eq(r.status, 200, "served after the reset (%r)" % r.body[:200])
    eq(int(r.headers["x-quota-60m-remaining"]), 1, "x-quota-60m-remaining: the fresh window less this request")
    eq(r.headers.get("x-quota-60m-reset"), rfc3339(end), "the same window (not a rollover)")
    eq(sim_req(env, "k11-up"), 3, "the request reached the provider")
    settled(env)
    eq(store_window_used(env, "mreset"), 1, "key_window: zeroed by the reset, then the one request")
    eq(store_paused(env, "mreset"), 0, "key_pause: the reset ended the pause")

    restart(env)
    k = admin_key(env, "mreset")
    eq((k["status"], k["policies"][0]["used"]), ("active", 1), "after a SIGTERM restart: the reset is kept")
    r = post(env, K, "/v1/chat/completions", body("m11", max_tokens=2))
    eq(r.status, 200, "after the restart: one more request fits (%r)" % r.body[:200])
    eq(int(r.headers["x-quota-60m-remaining"]), 0, "after the restart: remaining counts the post-reset request")
    r = post(env, K, "/v1/chat/completions", body("m11", max_tokens=2))
    msg, _ = check_key_429(r, "openai", "key_policy_exhausted", "exhausted again after the restart")
    assert "manual reset" in msg, msg
    eq(sim_req(env, "k11-up"), 4, "upstream calls: 2 + 1 + 1")


@keys_test
def test_keys_admin_views_match_headers(env):
    """GET /admin/keys lists every key of the config (id = name, source config, status,
    models, total quota, policies) with used / remaining / reset agreeing with the x-quota
    headers of the last response; GET /admin/keys/{id} is the same key.  Requests: used and
    remaining exactly as the header said (its own reservation is its actual use).  Tokens:
    used = the ledger's sum, and the header's remaining = limit - the earlier requests' use -
    the last one's estimate.  401 without the token (or with a wrong one, also for a reset),
    404 for an unknown id (GET and reset), 405 for GET on /reset (which resets nothing)."""
    env.sim = env.start_sim()
    end = whole_s(now_ms()) + 30 * MIN
    models = "models:\n  - { name: m12, input_usd_per_mtok: 1000000, output_usd_per_mtok: 1000000 }\n"
    gateway(env, prov("p12", env.sim, "m12", "k12-up"),
            key_entry("la", "la-key-000001", [policy("60m", 10, "requests", anchor=rfc3339(end))]) +
            key_entry("lb", "lb-key-000001", [policy("daily", 1000000, "tokens")], total=500), models=models)
    last = {}
    for secret, name, n in (("la-key-000001", "la", 3), ("lb-key-000001", "lb", 2)):
        for _ in range(n):
            data = body("m12", max_tokens=3)
            r = post(env, secret, "/v1/chat/completions", data)
            eq(r.status, 200, "%s: a request (%r)" % (name, r.body[:200]))
            last[name] = (r, data)
    settled(env)
    r = admin(env, "GET", "/admin/keys")
    eq(r.status, 200, "GET /admin/keys")
    j = jbody(r)
    eq(j.get("object"), "list", "a list")
    keys = {k["id"]: k for k in j["data"]}
    eq([k["id"] for k in j["data"]], ["e2e", "other", "la", "lb"], "every key of the config, in config order")
    for k in j["data"]:
        eq((k["name"], k["source"], k["status"], k["paused"]), (k["id"], "config", "active", None), k["id"] + ": basics")
    eq(keys["other"]["models"], ["gpt-test"], "other: its models")
    eq((keys["e2e"]["models"], keys["e2e"]["policies"], keys["e2e"]["total_quota"]), (None, [], None), "e2e: unlimited")

    hr, _ = last["la"]
    pa = keys["la"]["policies"][0]
    eq((pa["period"], pa["unit"], pa["limit"], pa["boundary"], pa["on_exhausted"], pa["auto_resume"]),
       ("60m", "requests", 10, "strict", "reject", True), "la: the policy as configured")
    eq((pa["used"], pa["remaining"]), (3, int(hr.headers["x-quota-60m-remaining"])), "la: used 3, remaining = the header's")
    eq(pa["remaining"], 7, "la: remaining")
    eq(pa["reset"], hr.headers["x-quota-60m-reset"], "la: reset = x-quota-60m-reset")
    eq((pa["reset_ms"], pa["anchor"], pa["anchor_ms"]), (end, rfc3339(end), end), "la: reset_ms and anchor")
    eq(pa["window_start_ms"], end - HOUR, "la: the window started an hour before its end")

    hr, data = last["lb"]
    pb = keys["lb"]["policies"][0]
    rows = key_rows(env, "lb")
    used = sum(x["prompt_tokens"] + x["completion_tokens"] for x in rows)
    actual_last = rows[0]["prompt_tokens"] + rows[0]["completion_tokens"]
    eq((pb["used"], pb["remaining"]), (used, 1000000 - used), "lb: used = the ledger's tokens")
    eq(int(hr.headers["x-quota-daily-remaining"]), 1000000 - (used - actual_last) - estimate(data, 3),
       "lb: the last header's remaining = limit - earlier use - its own estimate")
    eq(pb["reset"], hr.headers["x-quota-daily-reset"], "lb: reset = x-quota-daily-reset")
    eq(keys["lb"]["total_quota"], {"limit_usd_micro": 500 * 1000000, "used_usd_micro": used * 1000000},
       "lb: the total quota in micro-USD ($1 a token)")

    for name in ("la", "lb", "e2e"):
        eq(admin_key(env, name), keys[name], "GET /admin/keys/%s = its entry in the list" % name)

    wrong = {"Authorization": "Bearer not-the-admin-token"}
    for method, path in (("GET", "/admin/keys"), ("GET", "/admin/keys/la"), ("POST", "/admin/keys/la/reset")):
        for h, what in (({}, "no token"), (wrong, "a wrong token")):
            r = admin(env, method, path, h)
            eq(r.status, 401, "%s %s with %s" % (method, path, what))
            eq(err_code(r), "invalid_admin_token", "%s %s with %s: code" % (method, path, what))
    for method, path in (("GET", "/admin/keys/nope"), ("POST", "/admin/keys/nope/reset")):
        r = admin(env, method, path)
        eq((r.status, err_code(r)), (404, "key_not_found"), "%s %s" % (method, path))
    r = admin(env, "GET", "/admin/keys/la/reset")
    eq(r.status, 405, "GET on /reset")
    eq(admin_key(env, "la")["policies"][0]["used"], 3, "the GET on /reset reset nothing")
    r = admin(env, "POST", "/admin/keys/la")
    eq(r.status, 405, "POST on a key (only /reset takes a POST)")


def cli(env, *args):
    """Runs `quotagate ARGS` (the test's binary); fails on a sanitizer report."""
    r = subprocess.run([env.bin] + list(args), capture_output=True, text=True, timeout=30)
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in r.stderr, "%s in `quotagate %s`:\n%s" % (marker, " ".join(args), r.stderr[-3000:])
    return r


@keys_test
def test_keys_cli_list_show_reset(env):
    """`quotagate keys list|show|reset -c CONFIG` against the test's gateway: list prints the
    key (its name, paused, 2/2 requests); show prints every field; reset ends the pause (the
    next request is served); --json is the admin API's JSON; `show nope` exits 1 with "no
    key with that id"; an unreachable gateway and a refused token exit 1; create exits 2
    with the not-available message; usage errors exit 2; `quotagate status` (the same HTTP
    client) still works."""
    env.sim = env.start_sim()
    end = whole_s(now_ms()) + 30 * MIN
    gateway(env, prov("p13", env.sim, "m13", "k13-up"),
            key_entry("clikey", "clikey-key-01", [policy("60m", 2, "requests", on_exhausted="disable",
                                                          auto_resume=False, anchor=rfc3339(end))]))
    K = "clikey-key-01"
    for _ in range(2):
        eq(post(env, K, "/v1/chat/completions", body("m13", max_tokens=2)).status, 200, "a request")
    check_key_429(post(env, K, "/v1/chat/completions", body("m13", max_tokens=2)), "openai", "key_policy_exhausted",
                  "paused")

    r = cli(env, "keys", "list", "-c", env.cfg)
    eq(r.returncode, 0, "keys list exit code (stderr %r)" % r.stderr)
    line = [x for x in r.stdout.splitlines() if x.startswith("clikey ")]
    assert line, "keys list names the key:\n" + r.stdout
    assert "paused" in line[0] and "2/2 requests" in line[0] and rfc3339(end) in line[0], line[0]
    assert "until a manual reset" in r.stdout, r.stdout
    assert re.search(r"^e2e\s+active", r.stdout, re.M), r.stdout

    r = cli(env, "keys", "list", "--json", "-c", env.cfg)
    eq(r.returncode, 0, "keys list --json")
    eq(json.loads(r.stdout), jbody(admin(env, "GET", "/admin/keys")), "--json prints the admin API's JSON")

    r = cli(env, "keys", "show", "clikey", "-c", env.cfg)
    eq(r.returncode, 0, "keys show exit code (stderr %r)" % r.stderr)
    for field in ("id", "name", "source", "status", "paused", "models", "total_quota", "policies", "period", "unit",
                  "limit", "used", "remaining", "exhausted", "boundary", "on_exhausted", "auto_resume", "anchor",
                  "window_start", "reset", "manual_reset", "until"):
        assert re.search(r"^\s+%s\s" % field, r.stdout, re.M), "keys show prints %s:\n%s" % (field, r.stdout)
    assert re.search(r"^\s+id\s+clikey$", r.stdout, re.M), r.stdout

    r = cli(env, "keys", "reset", "clikey", "-c", env.cfg)
    eq(r.returncode, 0, "keys reset exit code (stderr %r)" % r.stderr)
    assert "clikey" in r.stdout and re.search(r"^\s+status\s+active$", r.stdout, re.M), r.stdout
    assert re.search(r"^\s+used\s+0$", r.stdout, re.M), r.stdout
    r = post(env, K, "/v1/chat/completions", body("m13", max_tokens=2))
    eq(r.status, 200, "served after `keys reset`")
    eq(int(r.headers["x-quota-60m-remaining"]), 1, "the fresh window")

    r = cli(env, "keys", "show", "nope", "-c", env.cfg)
    eq(r.returncode, 1, "keys show nope")
    assert "no key with that id" in r.stderr, r.stderr
    r = cli(env, "keys", "reset", "nope", "-c", env.cfg)
    eq(r.returncode, 1, "keys reset nope")

    text = open(env.cfg).read()
    down = env.write_config(text.replace("listen: 127.0.0.1:%d" % env.port, "listen: 127.0.0.1:%d" % free_port()),
                            "down.yaml")
    r = cli(env, "keys", "list", "-c", down)
    eq(r.returncode, 1, "keys list with no gateway listening")
    assert "cannot reach the gateway" in r.stderr, r.stderr
    wrong = env.write_config(text.replace("admin_token: " + ADMIN, "admin_token: not-the-token"), "wrong.yaml")
    r = cli(env, "keys", "show", "clikey", "-c", wrong)
    eq(r.returncode, 1, "keys show with a refused token")
    assert "refused the admin_token" in r.stderr and "401" in r.stderr, r.stderr

    for args in (("keys",), ("keys", "show", "-c", env.cfg), ("keys", "list", "extra", "-c", env.cfg),
                 ("keys", "frob"), ("keys", "list", "--bogus")):
        eq(cli(env, *args).returncode, 2, "usage error: %r" % (args,))
    for args in (("keys", "--help"), ("keys", "list", "--help"), ("keys", "show", "--help"),
                 ("keys", "reset", "-h"), ("keys", "create", "--help")):
        r = cli(env, *args)
        eq(r.returncode, 0, "%r" % (args,))
        assert r.stdout.startswith("usage: quotagate keys"), r.stdout
    r = cli(env, "status", "-c", env.cfg)
    eq(r.returncode, 0, "quotagate status through the shared client (stderr %r)" % r.stderr)
    assert "p13/a-p13" in r.stdout, r.stdout


@keys_test
def test_keys_reset_after_a_request_on_another_worker(env):
    """Two workers.  The request that exhausts and pauses a key is served by worker 1, and the
    reset comes right after on worker 0; the ledger writer drains worker 0's ring before
    worker 1's, so the row may reach the store after the reset, and its settlement may land
    in memory before or after the reset.  A first fix ordered them by a timestamp taken
    beside the settlement: CI caught a settlement landing after the reset with its stamp
    before it (live 1, stored 0).  Rows and resets now merge by window generation, and the
    store after a restart shows exactly what the live view showed after the reset (3
    rounds; the orders themselves: test_ledger.c test_key_counters_merge_in_any_order)."""
    env.sim = env.start_sim()
    end = whole_s(now_ms()) + 30 * MIN
    gateway(env, prov("p12", env.sim, "m12", "k12-up"),
            key_entry("race", "race-key-0001", [policy("60m", 2, "requests", on_exhausted="disable",
                                                        auto_resume=False, anchor=rfc3339(end))]), workers=2)
    data = body("m12", max_tokens=2)
    for rnd in range(3):
        by = connection_per_worker(env, "m12")
        c0, c1 = by["0"], by["1"]
        if rnd == 0:
            eq(c1.request("POST", "/v1/chat/completions", data, hdrs("race-key-0001")).status, 200, "first request")
            time.sleep(0.3)  # its row is committed: only the second races the reset
        r = c1.request("POST", "/v1/chat/completions", data, hdrs("race-key-0001"))
        eq(r.status, 200, "round %d: the request that exhausts the key (worker 1)" % rnd)
        r = c0.request("POST", "/admin/keys/race/reset", None, dict(ADMIN_HDRS, **{"Content-Length": "0"}))
        eq(r.status, 200, "round %d: the reset (worker 0)" % rnd)
        c0.close()
        c1.close()
        settled(env)  # the exhausting request's settlement may still be running on worker 1
        live = admin_key(env, "race")
        restart(env)
        stored = admin_key(env, "race")
        eq((stored["status"], stored["policies"][0]["used"]), (live["status"], live["policies"][0]["used"]),
           "round %d: after the restart the key is as the reset left it" % rnd)
        eq(live["status"], "active", "round %d: the reset resumed the key" % rnd)
        if rnd < 2:  # the next round exhausts it again from used 0: one request first
            eq(post(env, "race-key-0001", "/v1/chat/completions", data).status, 200, "round %d: refill" % rnd)
            time.sleep(0.3)


@keys_test
def test_keys_stream_in_flight_across_a_reset(env):
    """A stream S admitted before a manual reset and finished after it is charged its whole
    use in the fresh window, live and in the store alike.  While S runs, requests A and B
    finish on worker 1 (B fills {60m, 3 requests, on_exhausted: disable, auto_resume: false}
    and pauses the key), then worker 0 serves the reset.  Afterwards the windows hold S alone
    (A and B are gone, and so is B's pause), /admin/drift is 0, and a restart shows the
    same."""
    env.sim = env.start_sim("--chunk-delay", "150ms")
    end = whole_s(now_ms()) + 30 * MIN
    gateway(env, prov("p15", env.sim, "m15", "k15-up"),
            key_entry("fly", "fly-key-00001", [policy("60m", 100000, "tokens", anchor=rfc3339(end)),
                                               policy("60m", 3, "requests", on_exhausted="disable",
                                                      auto_resume=False, anchor=rfc3339(end))]), workers=2)
    K = "fly-key-00001"
    by = connection_per_worker(env, "m15")
    c0, c1 = by["0"], by["1"]
    s = Client(env.port)
    s.send("POST", "/v1/chat/completions", body("m15", max_tokens=12, stream=True),
           dict(hdrs(K), **{"Content-Type": "application/json"}))
    during = []

    def on_chunk(p):
        if not during:  # S has begun: A and B, then the reset
            for what in ("A", "B"):
                during.append((what, c1.request("POST", "/v1/chat/completions", body("m15", max_tokens=2),
                                                hdrs(K)).status))
            # B's settlement (which pauses the key) follows its last byte (not settled():
            # S has no row yet)
            t_end = time.time() + 5
            while admin_key(env, "fly")["status"] != "paused" and time.time() < t_end:
                time.sleep(0.02)
            during.append(("paused", admin_key(env, "fly")["status"]))
            r = c0.request("POST", "/admin/keys/fly/reset", None, dict(ADMIN_HDRS, **{"Content-Length": "0"}))
            during.append(("reset", r.status))
        return True
    r = s.read_response(on_chunk=on_chunk)
    eq((r.status, r.complete), (200, True), "the stream")
    eq(during, [("A", 200), ("B", 200), ("paused", "paused"), ("reset", 200)], "while it ran")
    s.close()
    c0.close()
    c1.close()
    settled(env)
    row = last_key_row(env, "fly")
    assert row["completion_tokens"] >= 1 and row["stream"], row
    use = row["prompt_tokens"] + row["completion_tokens"]
    live = admin_key(env, "fly")
    eq(([p["used"] for p in live["policies"]], live["status"]), ([use, 1], "active"),
       "live: S's whole use in the fresh windows, not paused")
    r = admin(env, "GET", "/admin/drift")
    eq((r.status, jbody(r)["quota_counter_drift"]), (200, 0), "the store's counters equal memory's")
    eq(store_paused(env, "fly"), 0, "no pause in the store")
    restart(env)
    stored = admin_key(env, "fly")
    eq(([p["used"] for p in stored["policies"]], stored["status"]), ([use, 1], "active"), "after a restart: the same")


@keys_test
def test_keys_cli_db_on_a_stopped_gateway(env):
    """`quotagate keys ... --db` works on the store file with the gateway stopped, through
    the gateway's own key store code: a key created there (secret printed once) is served
    after the gateway starts, with its policy; list/show/disable/update/delete --db answer
    in the admin API's shapes (--json equals what the gateway then shows); a static key
    cannot be changed (exit 1, key_from_config) but can be reset; an unreadable store
    exits 1."""
    env.sim = env.start_sim()
    gateway(env, prov("p14", env.sim, "m14", "k14-up"), key_entry("st14", "st14-key-0001",
                                                                  [policy("60m", 5, "requests")]))
    eq(env.gw.stop(), 0, "SIGTERM exit code")
    r = cli(env, "keys", "create", "offline", "--policy", "period=60m,limit=2,unit=requests", "--json", "-c", env.cfg,
            "--db")
    eq(r.returncode, 0, "keys create --db (stderr %r)" % r.stderr)
    made = json.loads(r.stdout)
    secret, kid = made["key"], made["id"]
    assert secret.startswith("qg-") and kid.startswith("key_"), made
    r = cli(env, "keys", "list", "--json", "-c", env.cfg, "--db=" + env.db)
    eq(r.returncode, 0, "keys list --db=PATH")
    eq([k["id"] for k in json.loads(r.stdout)["data"]][-2:], ["st14", kid], "the config's keys, then the new one")
    assert secret not in r.stdout, "the secret is shown once"
    eq(cli(env, "keys", "update", "st14", "--name", "x", "-c", env.cfg, "--db").returncode, 1, "a config key is read-only")
    eq(cli(env, "keys", "reset", "st14", "-c", env.cfg, "--db").returncode, 0, "a config key can be reset")
    eq(cli(env, "keys", "show", "nope", "-c", env.cfg, "--db").returncode, 1, "unknown id")
    eq(cli(env, "keys", "list", "-c", env.cfg, "--db=/nonexistent/x.db").returncode, 1, "unreadable store")

    env.start_gateway(env.cfg)
    for i in range(2):
        r = post(env, secret, "/v1/chat/completions", body("m14", max_tokens=2))
        eq(r.status, 200, "the key made offline is served (%r)" % r.body[:200])
        eq(int(r.headers["x-quota-60m-remaining"]), 1 - i, "with its policy")
    check_key_429(post(env, secret, "/v1/chat/completions", body("m14", max_tokens=2)), "openai",
                  "key_policy_exhausted", "its policy is enforced")
    settled(env)
    online = admin_key(env, kid)
    eq(online["policies"][0]["used"], 2, "the gateway's view")
    eq(env.gw.stop(), 0, "SIGTERM exit code")
    r = cli(env, "keys", "show", kid, "--json", "-c", env.cfg, "--db")
    eq(r.returncode, 0, "keys show --db")
    eq(json.loads(r.stdout)["policies"][0]["used"], 2, "--db restores the counters as the gateway does")
    eq(cli(env, "keys", "disable", kid, "-c", env.cfg, "--db").returncode, 0, "keys disable --db")
    env.start_gateway(env.cfg)
    r = post(env, secret, "/v1/chat/completions", body("m14", max_tokens=2))
    eq((r.status, err_code(r)), (403, "key_disabled"), "disabled offline: refused after the start")
    eq(env.gw.stop(), 0, "SIGTERM exit code")
    r = cli(env, "keys", "delete", kid, "-c", env.cfg, "--db")
    eq((r.returncode, r.stdout.strip()), (0, "deleted " + kid), "keys delete --db")
    env.start_gateway(env.cfg)
    eq(post(env, secret, "/v1/chat/completions", body("m14", max_tokens=2)).status, 401, "deleted offline: unknown")
